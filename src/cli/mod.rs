//! The command line's surface and dispatch: the clap definitions of every
//! command and flag (their doc comments are the help texts, the man pages
//! and the completions of `mcrecover generate`), and `run`, which hands
//! each command to its file in this directory.
//!
//! Exit codes: 0 success, 1 some check/service failed, 2 configuration or
//! usage error, 3 recovery blocked by a `block` stage, 4 system error (D-Bus,
//! I/O, permissions).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use mcrecover::watch::api::ApiBus;
use mcrecover::watch::ApiCommand;

mod common;
mod config;
mod daemon;
mod doctor;
mod drift;
mod drill;
mod gate;
mod generate;
mod images;
mod import;
mod install;
mod recover;
mod status;
mod verify;

use common::{init_tracing, load, Exit};

#[derive(Parser, Debug)]
#[command(
    name = "mcrecover",
    version,
    about = "Bring a podman platform back from zero, in dependency order, health-gated"
)]
struct Cli {
    /// Configuration file.
    #[arg(long, short = 'c', global = true, env = "MCRECOVER_CONFIG", default_value = mcrecover::config::DEFAULT_PATH)]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Validate the configuration and exit (0 valid, 2 invalid). Also looks at
    /// the files it names (CA bundles, programs): one that exists but is
    /// wrong is an error; a missing or unreadable one is a warning (the
    /// configuration may be checked on another machine, e.g. a NixOS build).
    CheckConfig {
        /// Print a JSON summary of the validated configuration.
        #[arg(long)]
        json: bool,
        /// Treat warnings about named files (missing, unreadable) as errors:
        /// for the machine that runs the platform.
        #[arg(long)]
        strict: bool,
    },
    /// Show stages, services, units, edges and checks.
    Plan {
        /// Output format.
        #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
        format: PlanFormat,
    },
    /// Render unit files into a directory (no systemd involved).
    Render {
        /// Output directory (quadlet files and units go side by side).
        #[arg(long)]
        out: PathBuf,
        /// Override the configured backend.
        #[arg(long, value_enum)]
        backend: Option<BackendArg>,
    },
    /// Render into the manager's unit directories and reload systemd if anything changed.
    Install {
        /// Show what would change without writing or reloading.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        sys: SystemArgs,
    },
    /// Start the platform stage by stage, gating each stage on its health checks.
    Recover {
        /// Print the final report as JSON on stdout.
        #[arg(long)]
        json: bool,
        /// Do not install (render + reload) before starting.
        #[arg(long)]
        no_install: bool,
        /// No live progress on stderr.
        #[arg(long, short)]
        quiet: bool,
        /// After the run, write its timeline as an SVG picture to FILE (one row per service
        /// by stage: start, running, healthy, gates, restarts, deaths, critical path).
        #[arg(long, value_name = "FILE")]
        timeline: Option<PathBuf>,
        #[command(flatten)]
        sys: SystemArgs,
    },
    /// Wait until a stage's checks pass (what the gate units run).
    Gate {
        /// Stage name.
        #[arg(long)]
        stage: String,
    },
    /// Run every check once (the runbook's verification checklist).
    Verify {
        /// Print results as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check that this machine can run the platform (host, user, addresses, ports, images,
    /// podman, disk); exit 1 on any failure.
    Doctor {
        /// Print the findings as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Per service, the image configured, running (tag and ID), archived and in the MCP
    /// definitions; the differences with what to do. Exit 0 no drift, 1 drift.
    Drift {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// A directory of MCP service definitions (or one file) to compare with; repeatable.
        #[arg(long = "mcp-dir", value_name = "DIR")]
        mcp_dirs: Vec<PathBuf>,
    },
    /// Image archives for a cold start (docs/images.md).
    Images {
        #[command(subcommand)]
        cmd: ImagesCmd,
    },
    /// Convert MCP service definitions (~/.config/mcp/services/*.toml) into a configuration.
    ImportMcp(ImportMcpArgs),
    /// The daemon's view of every service (stage, unit state, health, restarts, state);
    /// computed directly when no daemon runs. Exit 0 all healthy, 1 otherwise.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArgs,
        #[command(flatten)]
        sys: SystemArgs,
    },
    /// Re-arm an escalated service: the daemon restarts it again when it fails.
    Ack {
        /// Service name.
        service: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Hand a service whose container another controller started (state `external`)
    /// back to its unit: the unit is restarted and its container replaces the other one.
    Adopt {
        /// Service name.
        service: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// A recovery drill on the running platform (through the daemon): stop a stage's or a
    /// service's containers (never data), recover them, measure the RTO against the configured
    /// `rto`. Exit 0 passed, 1 a target exceeded / not back / aborted, 3 refused.
    #[command(group(clap::ArgGroup::new("scope").args(["stage", "service", "abort"]).required(true)))]
    Drill {
        /// Drill this stage.
        #[arg(long, value_name = "NAME")]
        stage: Option<String>,
        /// Drill this service.
        #[arg(long, value_name = "NAME")]
        service: Option<String>,
        /// Print what would be stopped and in which order; stop nothing.
        #[arg(long, conflicts_with = "abort")]
        dry_run: bool,
        /// Abort the drill in progress (what it stopped is recovered at once).
        #[arg(long)]
        abort: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Ask the daemon to restart a service now.
    Restart {
        /// Service name.
        service: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Ask the daemon to reload its configuration (kept as is when invalid).
    Reload {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Run the daemon: boot recovery, then watch, restart with backoff, escalate.
    Daemon {
        /// Do not install (render + reload) at start and on reload.
        #[arg(long)]
        no_install: bool,
        /// State directory (default: [watch] state_dir, $STATE_DIRECTORY, /var/lib/mcrecover).
        #[arg(long)]
        state_dir: Option<PathBuf>,
        #[command(flatten)]
        api: ApiArgs,
        #[command(flatten)]
        sys: SystemArgs,
    },
    /// Print every configuration key the loader accepts, one dotted path per line
    /// (`*` = any name); no configuration needed.
    ConfigKeys,
    /// Generate the man pages or shell completions (no configuration needed).
    Generate {
        #[command(subcommand)]
        what: GenerateCmd,
    },
}

#[derive(Subcommand, Debug)]
enum GenerateCmd {
    /// Man pages: mcrecover.1 and one mcrecover-COMMAND.1 per command.
    Man {
        /// Output directory (created if missing).
        #[arg(long)]
        out: PathBuf,
    },
    /// Completion script for SHELL (bash, zsh, fish, elvish, powershell).
    Completions {
        /// Target shell.
        shell: clap_complete::Shell,
        /// Output directory (default: print to stdout).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(clap::Args, Debug, Clone)]
struct ApiArgs {
    /// The daemon's D-Bus API: `system` (default), `session`, a D-Bus address, or `none`
    /// (the daemon serves no API; clients find no daemon).
    #[arg(long, env = "MCRECOVER_API_BUS", default_value = "system")]
    api_bus: String,
}

impl ApiArgs {
    fn bus(&self) -> ApiBus {
        ApiBus::parse(&self.api_bus)
    }
}

#[derive(Subcommand, Debug)]
enum ImagesCmd {
    /// Export every configured image into DIR (default: image_archive) with index.json.
    Save {
        /// Archive directory (default: platform.image_archive).
        dir: Option<PathBuf>,
    },
    /// Per image: present in podman storage or missing; archived (checksum ok?) or not.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args, Debug, Clone)]
struct ImportMcpArgs {
    /// Directories of MCP service definitions (their *.toml files), or single files.
    #[arg(required = true, value_name = "DIR")]
    dirs: Vec<PathBuf>,
    /// Merge into this configuration (keeps its platform, check defaults, stages and checks).
    #[arg(long, value_name = "CONFIG")]
    merge: Option<PathBuf>,
    /// Import the services of this node (default: the merged config's platform.node, else rift).
    #[arg(long)]
    node: Option<String>,
    /// Write the configuration here instead of stdout.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

#[derive(clap::Args, Debug, Clone)]
struct SystemArgs {
    /// D-Bus address of the systemd manager to drive (default: the system bus in
    /// rootful mode, the platform user's bus in rootless mode).
    #[arg(long, env = "MCRECOVER_BUS_ADDRESS")]
    bus_address: Option<String>,
    /// Override the configured backend.
    #[arg(long, value_enum)]
    backend: Option<BackendArg>,
    /// Write `.container` files here instead of the configured quadlet directory.
    #[arg(long)]
    quadlet_dir: Option<PathBuf>,
    /// Write units here instead of the configured unit directory.
    #[arg(long)]
    unit_dir: Option<PathBuf>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum PlanFormat {
    Text,
    Json,
    Dot,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum BackendArg {
    Quadlet,
    Service,
}

/// Parse the command line, run the command, map its error to an exit code.
pub(crate) fn main() -> ExitCode {
    let cli = Cli::parse();
    // The daemon logs what it does (restarts, escalations) at info; the
    // one-shot commands only warnings. MCRECOVER_LOG overrides both.
    init_tracing(if matches!(cli.command, Command::Daemon { .. }) {
        "info"
    } else {
        "warn"
    });
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(Exit(code, err)) => {
            eprintln!("mcrecover: error: {}", common::error_chain(&err));
            ExitCode::from(code)
        }
    }
}

fn run(cli: Cli) -> Result<u8, Exit> {
    let path = &cli.config;
    match cli.command {
        // import-mcp produces a configuration: it must not need one; neither
        // do generate and config-keys, which describe the command line and
        // the loader.
        Command::ImportMcp(args) => import::run(&args),
        Command::Generate { what } => generate::run(&what),
        Command::ConfigKeys => config::keys(),
        // The daemon's clients need no configuration when the daemon answers
        // (it has its own); they use it when present (service names, status
        // without a daemon).
        Command::Status { json, api, sys } => status::status(path, &api, &sys, json),
        Command::Ack { service, api } => status::control(path, &api, &ApiCommand::Ack(service)),
        Command::Adopt { service, api } => status::control(path, &api, &ApiCommand::Adopt(service)),
        Command::Restart { service, api } => {
            status::control(path, &api, &ApiCommand::Restart(service))
        }
        Command::Reload { api } => status::control(path, &api, &ApiCommand::Reload),
        Command::Drill {
            stage,
            service,
            dry_run,
            abort,
            json,
            api,
        } => match (stage, service) {
            _ if abort => drill::abort(&api),
            (Some(n), _) => drill::run(path, &api, &drill::Scope::Stage(n), dry_run, json),
            (None, Some(n)) => drill::run(path, &api, &drill::Scope::Service(n), dry_run, json),
            (None, None) => Err(Exit(
                common::EXIT_CONFIG,
                anyhow::anyhow!("say what to drill: --stage NAME or --service NAME"),
            )),
        },
        // Every other command runs on a valid configuration.
        Command::CheckConfig { json, strict } => config::check(path, json, strict),
        Command::Plan { format } => config::plan(&load(path)?, format),
        Command::Render { out, backend } => config::render(&load(path)?, &out, backend),
        Command::Install { dry_run, sys } => install::run(&load(path)?, &sys, dry_run),
        Command::Recover {
            json,
            no_install,
            quiet,
            timeline,
            sys,
        } => recover::run(
            &load(path)?,
            &sys,
            json,
            no_install,
            quiet,
            timeline.as_deref(),
        ),
        Command::Gate { stage } => gate::run(&load(path)?, &stage),
        Command::Verify { json } => verify::run(&load(path)?, json),
        Command::Images { cmd } => images::run(&load(path)?, cmd),
        Command::Doctor { json } => doctor::run(&load(path)?, json),
        Command::Drift { json, mcp_dirs } => drift::run(&load(path)?, path, &mcp_dirs, json),
        Command::Daemon {
            no_install,
            state_dir,
            api,
            sys,
        } => daemon::run(path, &load(path)?, &api, &sys, no_install, state_dir),
    }
}
