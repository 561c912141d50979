//! `testbed`: boots and drives mcrecover testbed sandboxes from scripts (the demo).
//!
//! `testbed up --state DIR` boots one, prints its JSON info and returns, leaving it running;
//! `testbed exec --state DIR [--uid N] -- CMD...` runs a command inside; `testbed down --state DIR`
//! tears it down. Two nodes: `testbed up --state A` (rift), `testbed up --state B --node svc
//! --ca-from A`, then `testbed link --state A --to B`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mcrecover_testbed::{
    Base, ImageSet, RootlessUser, Sandbox, SandboxOptions, TestbedError, MCIAS_SERVICE, SVC_ADDRESS,
};

#[derive(Parser)]
#[command(
    name = "testbed",
    about = "Throwaway real systemd + podman sandboxes for mcrecover"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Boot a sandbox, print its info as JSON, and return leaving it running.
    Up {
        /// A path to make a symlink to the sandbox's state directory (replacing a symlink, file or
        /// empty directory there); later commands take the same path.
        #[arg(long)]
        state: PathBuf,
        /// Shape: `metacircular` (rootless mcp, all /srv dirs, quadlet if found) or `bare`.
        #[arg(long, default_value = "metacircular")]
        profile: String,
        /// Root filesystem: `host` (this machine's) or `trixie` (Debian trixie: systemd 257,
        /// podman 5.4, native quadlet; built by scripts/build-trixie-rootfs, found via
        /// MCRECOVER_TRIXIE_ROOTFS or /var/tmp/mcrecover-trixie-*).
        #[arg(long, default_value = "host")]
        base: String,
        /// Load the example's stand-in images into the rootless user's storage (metacircular).
        #[arg(long)]
        images: bool,
        /// Also start the rootless user's manager (user@UID.service).
        #[arg(long)]
        user_manager: bool,
        /// Keep the command in the foreground until SIGINT/SIGTERM, then tear down.
        #[arg(long)]
        foreground: bool,
        /// Host executables to make available as /usr/bin/<file name> inside (repeatable).
        #[arg(long = "bin")]
        bins: Vec<PathBuf>,
        /// Which node of the platform: `rift` (hostname rift, its two addresses, the example's
        /// /srv dirs and images) or `svc` (hostname svc, 100.95.252.121, MCIAS's /srv dir and
        /// image; examples/two-nodes/svc.toml).
        #[arg(long, default_value = "rift")]
        node: String,
        /// Use the test CA of the sandbox at this `up --state` path (nodes of one platform
        /// share one CA) instead of a fresh one.
        #[arg(long)]
        ca_from: Option<PathBuf>,
    },
    /// Join two sandboxes by a network (a veth pair, routes to each other's addresses).
    Link {
        /// The path given to `up --state` of one node.
        #[arg(long)]
        state: PathBuf,
        /// The path given to `up --state` of the other.
        #[arg(long)]
        to: PathBuf,
    },
    /// Run a command inside a sandbox (as root, or as --uid).
    Exec {
        /// The path given to `up --state`.
        #[arg(long)]
        state: PathBuf,
        /// Run as this uid (with its XDG_RUNTIME_DIR and user bus).
        #[arg(long)]
        uid: Option<u32>,
        /// The command.
        #[arg(last = true, required = true)]
        argv: Vec<String>,
    },
    /// Copy a host file into the sandbox (mode 0644), e.g. a configuration
    /// (the checkout may be invisible inside, e.g. below /tmp).
    Cp {
        /// The path given to `up --state`.
        #[arg(long)]
        state: PathBuf,
        /// Host file.
        from: PathBuf,
        /// Path inside the sandbox.
        to: String,
    },
    /// Print a sandbox's info as JSON.
    Info {
        /// The path given to `up --state`.
        #[arg(long)]
        state: PathBuf,
    },
    /// Tear a sandbox down.
    Down {
        /// The path given to `up --state`.
        #[arg(long)]
        state: PathBuf,
    },
    /// Kill sandboxes left by test processes that died.
    Reap,
}

fn json(info: &mcrecover_testbed::SandboxInfo) -> Result<String, TestbedError> {
    serde_json::to_string_pretty(info).map_err(|source| TestbedError::State {
        path: info.state_dir.clone(),
        source,
    })
}

fn real_state(state: &std::path::Path) -> PathBuf {
    std::fs::canonicalize(state).unwrap_or_else(|_| state.to_path_buf())
}

fn run(cli: Cli) -> Result<ExitCode, TestbedError> {
    match cli.cmd {
        Cmd::Up {
            state,
            profile,
            base,
            images,
            user_manager,
            foreground,
            bins,
            node,
            ca_from,
        } => {
            let base = Base::from_name(&base)?;
            let mut opts = match profile.as_str() {
                "metacircular" => SandboxOptions::metacircular_on("testbed-up", base),
                "bare" => SandboxOptions {
                    name: "testbed-up".into(),
                    base,
                    ..SandboxOptions::default()
                },
                other => return Err(TestbedError::Sandbox(format!("unknown profile {other:?}"))),
            };
            let image_set = match node.as_str() {
                "rift" => ImageSet::metacircular,
                "svc" => {
                    opts.hostname = "svc".into();
                    opts.addresses = vec![SVC_ADDRESS.into()];
                    if profile == "metacircular" {
                        opts.srv_dirs = vec![MCIAS_SERVICE.srv_dir().into()];
                    }
                    || -> Result<ImageSet, TestbedError> {
                        Ok(ImageSet::standins(
                            &[MCIAS_SERVICE],
                            mcrecover_testbed::standin_binary()?,
                        ))
                    }
                }
                other => {
                    return Err(TestbedError::Sandbox(format!(
                        "unknown node {other:?} (rift or svc)"
                    )))
                }
            };
            if let Some(from) = &ca_from {
                let other = Sandbox::attach(&real_state(from))?;
                let ca = other.ca().clone();
                other.detach()?;
                if ca.key_pem.is_empty() {
                    return Err(TestbedError::Sandbox(format!(
                        "--ca-from {}: that sandbox's CA key is not known",
                        from.display()
                    )));
                }
                opts.ca = Some(ca);
            }
            let uid = opts.rootless_user.as_ref().map(|u: &RootlessUser| u.uid);
            let sb = Sandbox::boot(opts)?;
            if user_manager || images {
                if let Some(uid) = uid {
                    sb.start_user_manager(uid)?;
                }
            }
            if images {
                sb.load_images(&image_set()?, uid)?;
            }
            for bin in &bins {
                let name = bin.file_name().map(|n| n.to_string_lossy().into_owned());
                let name = name.ok_or_else(|| {
                    TestbedError::Sandbox(format!("--bin {}: not a file", bin.display()))
                })?;
                sb.install_bin(bin, &name)?;
            }
            // PATH becomes a symlink to the state dir; an existing symlink/file or EMPTY dir goes.
            if std::fs::remove_file(&state).is_err() {
                let _ = std::fs::remove_dir(&state);
            }
            std::os::unix::fs::symlink(sb.state_dir(), &state)
                .map_err(|e| TestbedError::io("symlink", &state, e))?;
            if foreground {
                println!("{}", json(sb.info())?);
                wait_for_signal();
                drop(sb);
                let _ = std::fs::remove_file(&state);
            } else {
                let info = sb.detach()?;
                println!("{}", json(&info)?);
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Exec { state, uid, argv } => {
            let sb = Sandbox::attach(&real_state(&state))?;
            let args: Vec<&str> = argv.iter().map(String::as_str).collect();
            // Live: the command's stdio is ours (the demo shows recovery progress as it happens).
            let mut cmd = match uid {
                Some(uid) => sb.command_as(uid, &args),
                None => sb.command_root(&args),
            };
            let status = cmd.status();
            sb.detach()?;
            let code = match status {
                Ok(st) => st.code().unwrap_or(1),
                Err(e) => {
                    eprintln!("testbed: cannot run nsenter: {e}");
                    127
                }
            };
            Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
        }
        Cmd::Link { state, to } => {
            let a = Sandbox::attach(&real_state(&state))?;
            // (Dropping an attached handle tears its sandbox down: detach `a` on every path.)
            let b = match Sandbox::attach(&real_state(&to)) {
                Ok(b) => b,
                Err(e) => {
                    a.detach()?;
                    return Err(e);
                }
            };
            let res = a.link(&b);
            a.detach()?;
            b.detach()?;
            res.map(|()| ExitCode::SUCCESS)
        }
        Cmd::Cp { state, from, to } => {
            let sb = Sandbox::attach(&real_state(&state))?;
            let res = sb.copy_in(&from, &to, 0o644, None);
            sb.detach()?;
            res.map(|()| ExitCode::SUCCESS)
        }
        Cmd::Info { state } => {
            let sb = Sandbox::attach(&real_state(&state))?;
            println!("{}", json(sb.info())?);
            sb.detach()?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Down { state } => {
            let sb = Sandbox::attach(&real_state(&state))?;
            drop(sb);
            let _ = std::fs::remove_file(&state);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Reap => {
            println!("reaped {}", mcrecover_testbed::reap_stale());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn wait_for_signal() {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    if set.thread_block().is_ok() {
        let _ = set.wait();
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("testbed: {e}");
            ExitCode::FAILURE
        }
    }
}
