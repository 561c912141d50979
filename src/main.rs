//! The `mcrecover` command line: parses flags, loads the configuration and
//! runs one step of the flow (config -> plan -> render -> drive -> check ->
//! watch), or talks to the running daemon over D-Bus (status, ack, ...).
//! Errors get context here (anyhow); the library's errors are typed.
//!
//! Exit codes: 0 success, 1 some check/service failed, 2 configuration or
//! usage error, 3 recovery blocked by a `block` stage, 4 system error (D-Bus,
//! I/O, permissions).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use mcrecover::config::{self, Config, Mode};
use mcrecover::drive::{BusTarget, Systemd};
use mcrecover::recover::{self, Progress};
use mcrecover::watch::api::{self, ApiBus, ApiError};
use mcrecover::watch::{status as wstatus, ApiCommand};
use mcrecover::{check, doctor, images, import, plan, render};

/// Exit code for a configuration or usage error.
const EXIT_CONFIG: u8 = 2;
/// Exit code for a system error (D-Bus, I/O, permissions).
const EXIT_SYSTEM: u8 = 4;

#[derive(Parser, Debug)]
#[command(
    name = "mcrecover",
    version,
    about = "Bring a podman platform back from zero, in dependency order, health-gated"
)]
struct Cli {
    /// Configuration file.
    #[arg(long, short = 'c', global = true, env = "MCRECOVER_CONFIG", default_value = config::DEFAULT_PATH)]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Validate the configuration and exit (0 valid, 2 invalid).
    CheckConfig {
        /// Print a JSON summary of the validated configuration.
        #[arg(long)]
        json: bool,
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

/// An error with the exit code it should produce.
#[derive(Debug)]
struct Exit(u8, anyhow::Error);

fn main() -> ExitCode {
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
            eprintln!("mcrecover: error: {err:#}");
            ExitCode::from(code)
        }
    }
}

fn init_tracing(default_level: &str) {
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_env("MCRECOVER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let journald = if std::env::var_os("JOURNAL_STREAM").is_some() {
        // Fields land unprefixed (SERVICE=, UNIT=, STAGE=, CHECK=) so
        // `journalctl SERVICE=mcns` works.
        tracing_journald::layer().ok().map(|l| {
            l.with_field_prefix(None)
                .with_syslog_identifier("mcrecover".into())
        })
    } else {
        None
    };
    let fmt = journald.is_none().then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_target(false)
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(journald)
        .with(fmt)
        .init();
}

fn load(path: &Path) -> Result<Config, Exit> {
    config::load(path).map_err(|e| Exit(EXIT_CONFIG, anyhow::Error::msg(e.to_string())))
}

fn sys<E: Into<anyhow::Error>>(e: E) -> Exit {
    Exit(EXIT_SYSTEM, e.into())
}

fn run(cli: Cli) -> Result<u8, Exit> {
    // import-mcp produces a configuration: it must not need one.
    if let Command::ImportMcp(args) = &cli.command {
        return import_mcp(args);
    }
    if let Command::Generate { what } = &cli.command {
        return generate(what);
    }
    if let Command::ConfigKeys = &cli.command {
        for key in config::known_keys() {
            println!("{key}");
        }
        return Ok(0);
    }
    // The daemon's clients need no configuration when the daemon answers
    // (it has its own); they use it when present (service names, status
    // without a daemon).
    match &cli.command {
        Command::Status { json, api, sys: s } => {
            return runtime()?.block_on(status(&cli.config, api, s, *json));
        }
        Command::Ack { service, api } => {
            return control(&cli.config, api, &ApiCommand::Ack(service.clone()));
        }
        Command::Restart { service, api } => {
            return control(&cli.config, api, &ApiCommand::Restart(service.clone()));
        }
        Command::Reload { api } => return control(&cli.config, api, &ApiCommand::Reload),
        _ => {}
    }
    let cfg = load(&cli.config)?;
    match cli.command {
        Command::CheckConfig { json } => {
            if json {
                println!("{}", serde_json::to_string_pretty(&cfg).map_err(sys)?);
            } else {
                let containers = cfg.services.values().filter(|s| !s.is_external()).count();
                let checks: usize = cfg.services.values().map(|s| s.checks.len()).sum();
                println!(
                    "{}: ok ({} stages, {containers} containers, {} external, {checks} checks)",
                    cli.config.display(),
                    cfg.stages.len(),
                    cfg.services.len() - containers
                );
            }
            Ok(0)
        }
        Command::Plan { format } => {
            let plan = plan::build(&cfg).map_err(|e| Exit(EXIT_CONFIG, e.into()))?;
            let out = match format {
                PlanFormat::Text => plan.to_text(),
                PlanFormat::Json => plan.to_json().map_err(sys)? + "\n",
                PlanFormat::Dot => plan.to_dot(),
            };
            print!("{out}");
            Ok(0)
        }
        Command::Render { out, backend } => {
            let backend = resolve_backend(&cfg, backend);
            let plan = plan::build(&cfg).map_err(|e| Exit(EXIT_CONFIG, e.into()))?;
            let rendered =
                render::render(&cfg, &plan, backend).map_err(|e| Exit(EXIT_CONFIG, e.into()))?;
            let report = render::write(&rendered, &out, &out, false)
                .with_context(|| format!("writing units to {}", out.display()))
                .map_err(sys)?;
            eprintln!("{} backend: {}", backend_name(backend), summary(&report));
            Ok(0)
        }
        Command::Install { dry_run, sys: s } => runtime()?.block_on(async {
            let changed = install(&cfg, &s, dry_run).await?;
            if !dry_run && changed {
                eprintln!("systemd reloaded");
            }
            Ok(0)
        }),
        Command::Recover {
            json,
            no_install,
            quiet,
            sys: s,
        } => runtime()?.block_on(async {
            if !no_install {
                install(&cfg, &s, false).await?;
            }
            let plan = plan::build(&cfg).map_err(|e| Exit(EXIT_CONFIG, e.into()))?;
            let sd = connect(&cfg, &s).await?;
            let mut progress = Progress::new(quiet || json);
            let report = recover::recover(&cfg, &plan, &sd, |ev| progress.event(ev)).await;
            if json {
                println!("{}", serde_json::to_string_pretty(&report).map_err(sys)?);
            } else {
                eprint!("{}", report.to_text());
            }
            Ok(report.exit_code)
        }),
        Command::Gate { stage } => runtime()?.block_on(async {
            let plan = plan::build(&cfg).map_err(|e| Exit(EXIT_CONFIG, e.into()))?;
            let Some(index) = plan.stages.iter().position(|s| s.name == stage) else {
                let names: Vec<&str> = cfg.stages.iter().map(|s| s.name.as_str()).collect();
                return Err(Exit(
                    EXIT_CONFIG,
                    anyhow::anyhow!("no stage `{stage}` (stages: {})", names.join(", ")),
                ));
            };
            let timeout = cfg.stages.get(index).map_or(0, |s| s.timeout.as_secs());
            let members = plan.stages.get(index).map_or(0, |s| s.services.len());
            let result = recover::gate(&cfg, &plan, index).await;
            if result.healthy {
                eprintln!("stage {stage}: all {members} services healthy");
                Ok(0)
            } else {
                eprintln!("stage {stage}: not healthy after {timeout}s:");
                for r in result.failing {
                    eprintln!("  {r}");
                }
                Ok(1)
            }
        }),
        Command::Verify { json } => runtime()?.block_on(verify(&cfg, json)),
        Command::Images { cmd } => runtime()?.block_on(async {
            match cmd {
                ImagesCmd::Save { dir } => {
                    let dir = images::archive_dir(&cfg, dir.as_deref()).map_err(sys)?;
                    let report = images::save(&cfg, &dir).await.map_err(sys)?;
                    print!("{}", report.to_text());
                    Ok(report.exit_code())
                }
                ImagesCmd::Status { json } => {
                    let report = images::status(&cfg).await.map_err(sys)?;
                    if json {
                        println!("{}", serde_json::to_string_pretty(&report).map_err(sys)?);
                    } else {
                        print!("{}", report.to_text());
                    }
                    Ok(report.exit_code())
                }
            }
        }),
        Command::Doctor { json } => runtime()?.block_on(async {
            let report = doctor::run(&cfg, &doctor::DoctorOptions::default()).await;
            if json {
                println!("{}", serde_json::to_string_pretty(&report).map_err(sys)?);
            } else {
                print!("{}", report.to_text());
            }
            Ok(report.exit_code())
        }),
        Command::ImportMcp(args) => import_mcp(&args),
        Command::Generate { what } => generate(&what),
        Command::ConfigKeys => Ok(0),
        Command::Status { .. }
        | Command::Ack { .. }
        | Command::Restart { .. }
        | Command::Reload { .. } => Ok(0), // handled above
        Command::Daemon {
            no_install,
            state_dir,
            api,
            sys: s,
        } => runtime()?.block_on(async {
            let opts = mcrecover::watch::DaemonOptions {
                config_path: cli.config.clone(),
                bus: bus_target(&cfg, &s),
                backend: s.backend.map(|b| resolve_backend(&cfg, Some(b))),
                quadlet_dir: s.quadlet_dir.clone(),
                unit_dir: s.unit_dir.clone(),
                install: !no_install,
                state_dir,
                api_bus: api.bus(),
            };
            mcrecover::watch::run(opts).await.map_err(sys)?;
            Ok(0)
        }),
    }
}

/// `status`: the daemon's snapshot, or the directly computed one (which
/// needs the configuration).
async fn status(config: &Path, api: &ApiArgs, s: &SystemArgs, json: bool) -> Result<u8, Exit> {
    let snap = match api::fetch_status(&api.bus()).await {
        Ok(snap) => snap,
        Err(err) => {
            if matches!(err, ApiError::NotRunning) {
                eprintln!("mcrecover: the daemon is not running; computing the status directly");
            } else {
                eprintln!(
                    "mcrecover: warning: daemon unreachable: {err}; computing the status directly"
                );
            }
            let cfg = &load(config)?;
            let plan = plan::build(cfg).map_err(|e| Exit(EXIT_CONFIG, e.into()))?;
            let sd = match connect(cfg, s).await {
                Ok(sd) => Some(sd),
                Err(Exit(_, e)) => {
                    eprintln!("mcrecover: warning: unit states unknown: {e:#}");
                    None
                }
            };
            let snap = wstatus::direct(cfg, &plan, sd.as_ref()).await;
            if sd.is_none() && !json {
                print!("{}", wstatus::to_text(&snap));
                return Ok(EXIT_SYSTEM);
            }
            snap
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&snap).map_err(sys)?);
    } else {
        print!("{}", wstatus::to_text(&snap));
    }
    Ok(u8::from(!wstatus::all_healthy(&snap)))
}

/// `ack`, `restart`, `reload`: one call to the daemon. Service names are
/// checked against the configuration when it can be read (the daemon
/// checks them anyway).
fn control(config: &Path, api: &ApiArgs, cmd: &ApiCommand) -> Result<u8, Exit> {
    let cfg = config::load(config).ok();
    if let (ApiCommand::Ack(name) | ApiCommand::Restart(name), Some(cfg)) = (cmd, &cfg) {
        if !cfg.services.contains_key(name) {
            let names: Vec<&str> = cfg.services.keys().map(String::as_str).collect();
            return Err(Exit(
                EXIT_CONFIG,
                anyhow::anyhow!("no service `{name}` (services: {})", names.join(", ")),
            ));
        }
    }
    runtime()?.block_on(async {
        match api::call(&api.bus(), cmd).await {
            Ok(msg) => {
                println!("{msg}");
                Ok(0)
            }
            Err(ApiError::Refused(msg)) => Err(Exit(1, anyhow::anyhow!("{msg}"))),
            Err(e @ ApiError::AccessDenied(_)) => Err(Exit(
                EXIT_SYSTEM,
                anyhow::Error::new(e)
                    .context("only root and the platform user's group may change the daemon"),
            )),
            Err(e) => Err(sys(e)),
        }
    })
}

/// `generate man|completions`.
fn generate(what: &GenerateCmd) -> Result<u8, Exit> {
    use clap::CommandFactory;
    let cmd = Cli::command();
    match what {
        GenerateCmd::Man { out } => {
            std::fs::create_dir_all(out)
                .with_context(|| format!("creating {}", out.display()))
                .map_err(sys)?;
            clap_mangen::generate_to(cmd, out)
                .with_context(|| format!("writing man pages into {}", out.display()))
                .map_err(sys)?;
            eprintln!("man pages written to {}", out.display());
        }
        GenerateCmd::Completions { shell, out } => {
            let mut cmd = cmd;
            match out {
                Some(dir) => {
                    std::fs::create_dir_all(dir)
                        .with_context(|| format!("creating {}", dir.display()))
                        .map_err(sys)?;
                    let path = clap_complete::generate_to(*shell, &mut cmd, "mcrecover", dir)
                        .with_context(|| format!("writing completions into {}", dir.display()))
                        .map_err(sys)?;
                    eprintln!("{}", path.display());
                }
                None => {
                    clap_complete::generate(*shell, &mut cmd, "mcrecover", &mut std::io::stdout())
                }
            }
        }
    }
    Ok(0)
}

/// `import-mcp`: convert, print the warnings, write the validated text.
fn import_mcp(args: &ImportMcpArgs) -> Result<u8, Exit> {
    let imported = import::import_paths(
        &args.dirs,
        args.merge.as_deref(),
        args.node.as_deref(),
        args.out.as_deref(),
    )
    .map_err(|e| Exit(EXIT_CONFIG, e.into()))?;
    for w in &imported.warnings {
        eprintln!("mcrecover: warning: {w}");
    }
    match &args.out {
        Some(path) => {
            std::fs::write(path, &imported.text)
                .with_context(|| format!("writing {}", path.display()))
                .map_err(sys)?;
            eprintln!(
                "{}: {} containers imported, {} warnings",
                path.display(),
                imported.converted.len(),
                imported.warnings.len()
            );
        }
        None => print!("{}", imported.text),
    }
    Ok(0)
}

/// The runtime of every command: two worker threads whatever the host's
/// core count (the work is waiting on systemd, podman and sockets; each
/// further thread only adds stacks and malloc arenas to the daemon's RSS).
fn runtime() -> Result<tokio::runtime::Runtime, Exit> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(sys)
}

fn backend_name(b: render::Backend) -> &'static str {
    match b {
        render::Backend::Quadlet => "quadlet",
        render::Backend::Service => "service",
    }
}

/// Resolve the backend: the flag, else the config (`auto` is resolved by
/// [`doctor::detect_backend`]: quadlet when podman >= 4.4 and a quadlet
/// generator is installed, else plain service units).
fn resolve_backend(cfg: &Config, flag: Option<BackendArg>) -> render::Backend {
    match flag {
        Some(BackendArg::Quadlet) => render::Backend::Quadlet,
        Some(BackendArg::Service) => render::Backend::Service,
        None => doctor::detect_backend(cfg).0,
    }
}

fn bus_target(cfg: &Config, s: &SystemArgs) -> BusTarget {
    match (&s.bus_address, cfg.platform.mode) {
        (Some(addr), _) => BusTarget::Address(addr.clone()),
        (None, Mode::Rootful) => BusTarget::System,
        (None, Mode::Rootless) => BusTarget::User,
    }
}

async fn connect(cfg: &Config, s: &SystemArgs) -> Result<Systemd, Exit> {
    let target = bus_target(cfg, s);
    if cfg.platform.mode == Mode::Rootless
        && s.bus_address.is_none()
        && nix::unistd::geteuid().is_root()
    {
        let user = cfg
            .platform
            .user
            .as_ref()
            .map_or("the platform user".to_string(), |u| u.name.clone());
        return Err(Exit(
            EXIT_SYSTEM,
            anyhow::anyhow!(
                "rootless platform: run this as {user} (e.g. `runuser -u {user} -- mcrecover ...`), \
                 or pass --bus-address for that user's manager"
            ),
        ));
    }
    Systemd::connect(&target).await.map_err(sys)
}

/// Render into the manager's directories; reload if anything changed.
/// Returns whether anything changed.
async fn install(cfg: &Config, s: &SystemArgs, dry_run: bool) -> Result<bool, Exit> {
    use mcrecover::watch::install::{render_and_write, InstallError};
    let backend = resolve_backend(cfg, s.backend);
    let qdir = s
        .quadlet_dir
        .clone()
        .unwrap_or_else(|| cfg.platform.quadlet_dir.clone());
    let udir = s
        .unit_dir
        .clone()
        .unwrap_or_else(|| cfg.platform.unit_dir.clone());
    let report = render_and_write(cfg, backend, &qdir, &udir, dry_run).map_err(|e| match e {
        InstallError::Plan(_) => Exit(EXIT_CONFIG, e.into()),
        InstallError::Render { ref source, .. } if source.is_config() => {
            Exit(EXIT_CONFIG, e.into())
        }
        _ => sys(e),
    })?;
    let prefix = if dry_run { "would change" } else { "installed" };
    eprintln!(
        "{} backend, {prefix}: {}",
        backend_name(backend),
        summary(&report)
    );
    if dry_run || !report.modified() {
        return Ok(report.modified());
    }
    let sd = connect(cfg, s).await?;
    sd.reload().await.map_err(sys)?;
    Ok(true)
}

async fn verify(cfg: &Config, json: bool) -> Result<u8, Exit> {
    let mut all = Vec::new();
    for svc in cfg.services.values() {
        for c in &svc.checks {
            all.push((svc.name.clone(), c.clone()));
        }
    }
    let outcomes = futures_util::future::join_all(all.iter().map(|(_, c)| check::probe(c))).await;
    let failed = outcomes.iter().filter(|o| !o.ok).count();
    if json {
        let rows: Vec<serde_json::Value> = all
            .iter()
            .zip(&outcomes)
            .map(|((svc, c), o)| {
                serde_json::json!({
                    "service": svc, "check": c.name, "kind": c.kind.kind_name(),
                    "ok": o.ok, "detail": o.detail, "elapsed_s": o.elapsed.as_secs_f64(),
                })
            })
            .collect();
        let doc = serde_json::json!({ "ok": failed == 0, "failed": failed, "checks": rows });
        println!("{}", serde_json::to_string_pretty(&doc).map_err(sys)?);
    } else {
        println!(
            "{:<16} {:<14} {:<6} {:>8}  DETAIL",
            "SERVICE", "CHECK", "RESULT", "TIME"
        );
        for ((svc, c), o) in all.iter().zip(&outcomes) {
            let res = if o.ok { "ok" } else { "FAIL" };
            println!(
                "{svc:<16} {:<14} {res:<6} {:>7.0}ms  {}",
                c.name,
                o.elapsed.as_secs_f64() * 1000.0,
                o.detail
            );
        }
        println!("{} of {} checks passed", all.len() - failed, all.len());
    }
    Ok(u8::from(failed > 0))
}

/// One line describing a write report, listing what changed.
fn summary(r: &render::WriteReport) -> String {
    let names = |v: &[PathBuf]| {
        v.iter()
            .filter_map(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut s = format!(
        "{} created, {} changed, {} unchanged",
        r.created.len(),
        r.changed.len(),
        r.unchanged.len()
    );
    if !r.created.is_empty() {
        s += &format!("\n  created: {}", names(&r.created));
    }
    if !r.changed.is_empty() {
        s += &format!("\n  changed: {}", names(&r.changed));
    }
    if !r.stale.is_empty() {
        s += &format!(
            "\n  stale (ours, no longer rendered; not removed): {}",
            names(&r.stale)
        );
    }
    s
}
