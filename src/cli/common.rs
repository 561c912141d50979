//! What the commands share: the error with its exit code, logging, the
//! tokio runtime, the backend and the connection to systemd.

use std::path::{Path, PathBuf};

use mcrecover::config::{self, Config, Mode};
use mcrecover::drive::{BusTarget, Systemd};
use mcrecover::{doctor, render};

use super::{BackendArg, SystemArgs};

/// Exit code for a configuration or usage error.
pub(super) const EXIT_CONFIG: u8 = 2;
/// Exit code for a system error (D-Bus, I/O, permissions).
pub(super) const EXIT_SYSTEM: u8 = 4;

/// An error with the exit code it should produce.
#[derive(Debug)]
pub(super) struct Exit(pub(super) u8, pub(super) anyhow::Error);

pub(super) fn init_tracing(default_level: &str) {
    use tracing_subscriber::prelude::*;
    let filter = log_filter(
        std::env::var("MCRECOVER_LOG").ok().as_deref(),
        default_level,
    );
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
            .with_ansi(colour_on_stderr())
            .with_target(false)
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(journald)
        .with(fmt)
        .init();
}

/// The filter of `MCRECOVER_LOG` (`debug`, `mcrecover=debug,zbus=warn`: a
/// default level and levels per target; no span or field filters, which
/// would link a regex engine into the daemon), else of `default_level`.
fn log_filter(env: Option<&str>, default_level: &str) -> tracing_subscriber::filter::Targets {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    env.filter(|v| !v.trim().is_empty())
        .and_then(|v| v.parse::<Targets>().ok())
        .or_else(|| default_level.parse().ok())
        .unwrap_or_else(|| Targets::new().with_default(LevelFilter::INFO))
}

/// Colour (ANSI escape sequences) on stderr only for a terminal that can
/// show it: not into a file or pipe (`recover -q 2>file`), not with
/// `NO_COLOR` set (<https://no-color.org>) or `TERM=dumb`.
pub(super) fn colour_on_stderr() -> bool {
    use std::io::IsTerminal as _;
    colour_allowed(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
        std::env::var_os("TERM").as_deref(),
    )
}

fn colour_allowed(
    terminal: bool,
    no_color: Option<&std::ffi::OsStr>,
    term: Option<&std::ffi::OsStr>,
) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty()) && term.is_none_or(|t| t != "dumb")
}

/// `err` and its causes on one line, `: `-separated, each cause only when
/// its text is not already part of the line: errors that embed their
/// source's message (`"installing units into ...: {source}"`) would
/// otherwise print the same reason two or three times.
pub(super) fn error_chain(err: &anyhow::Error) -> String {
    let mut out = err.to_string();
    for cause in err.chain().skip(1) {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
    }
    out
}

pub(super) fn load(path: &Path) -> Result<Config, Exit> {
    config::load(path).map_err(|e| Exit(EXIT_CONFIG, anyhow::Error::msg(e.to_string())))
}

pub(super) fn sys<E: Into<anyhow::Error>>(e: E) -> Exit {
    Exit(EXIT_SYSTEM, e.into())
}

/// The runtime of every command: two worker threads whatever the host's
/// core count (the work is waiting on systemd, podman and sockets; each
/// further thread only adds stacks and malloc arenas to the daemon's RSS),
/// and at most 16 threads for blocking work (file moves of a quarantine,
/// journal reads), so the shipped units' `TasksMax=` holds with room.
pub(super) fn runtime() -> Result<tokio::runtime::Runtime, Exit> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(16)
        .enable_all()
        .build()
        .map_err(sys)
}

pub(super) fn backend_name(b: render::Backend) -> &'static str {
    match b {
        render::Backend::Quadlet => "quadlet",
        render::Backend::Service => "service",
    }
}

/// Resolve the backend: the flag, else the config (`auto` is resolved by
/// [`doctor::detect_backend`]: quadlet when podman >= 4.4 and a quadlet
/// generator is installed, else plain service units).
pub(super) fn resolve_backend(cfg: &Config, flag: Option<BackendArg>) -> render::Backend {
    match flag {
        Some(BackendArg::Quadlet) => render::Backend::Quadlet,
        Some(BackendArg::Service) => render::Backend::Service,
        None => doctor::detect_backend(cfg).0,
    }
}

pub(super) fn bus_target(cfg: &Config, s: &SystemArgs) -> BusTarget {
    match (&s.bus_address, cfg.platform.mode) {
        (Some(addr), _) => BusTarget::Address(addr.clone()),
        (None, Mode::Rootful) => BusTarget::System,
        (None, Mode::Rootless) => BusTarget::User,
    }
}

pub(super) async fn connect(cfg: &Config, s: &SystemArgs) -> Result<Systemd, Exit> {
    refuse_root_for_rootless(cfg, s)?;
    Systemd::connect(&bus_target(cfg, s)).await.map_err(sys)
}

/// A rootless platform's manager is the platform user's: root cannot reach
/// it without `--bus-address`, and files root wrote into that user's
/// directories would belong to root. Refused before anything is written.
pub(super) fn refuse_root_for_rootless(cfg: &Config, s: &SystemArgs) -> Result<(), Exit> {
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
    Ok(())
}

/// One line describing a write report, listing what changed.
pub(super) fn summary(r: &render::WriteReport) -> String {
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

/// Exec checks run as transient units of the platform's manager, as the
/// daemon runs them (contained, leftovers killed); as children only when
/// the manager cannot be reached.
pub(super) async fn exec_via(cfg: &Config) -> mcrecover::check::ExecVia {
    let has_exec = cfg
        .services
        .values()
        .any(|s| s.checks.iter().any(|c| c.kind.kind_name() == "exec"));
    if !has_exec {
        return mcrecover::check::ExecVia::Child;
    }
    let system = cfg.platform.mode == mcrecover::config::Mode::Rootful;
    let target = if system {
        mcrecover::drive::BusTarget::System
    } else {
        mcrecover::drive::BusTarget::User
    };
    match mcrecover::drive::Systemd::connect(&target).await {
        Ok(sd) => mcrecover::check::ExecVia::Unit(mcrecover::check::UnitExec {
            sd,
            system,
            default_user: cfg.platform.user.as_ref().map(|u| u.name.clone()),
            hide: Vec::new(),
        }),
        Err(e) => {
            tracing::warn!(error = %e, "exec checks run as child processes: the service manager is unreachable");
            mcrecover::check::ExecVia::Child
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn mcrecover_log_sets_levels_per_target() {
        use tracing::Level;
        let f = log_filter(Some("mcrecover=debug,zbus=warn"), "info");
        assert!(f.would_enable("mcrecover::watch", &Level::DEBUG));
        assert!(!f.would_enable("zbus::conn", &Level::INFO));
        // Unset, empty or unparsable: the command's default.
        for env in [None, Some(""), Some("mcrecover=loud")] {
            let f = log_filter(env, "warn");
            assert!(f.would_enable("mcrecover", &Level::WARN), "{env:?}");
            assert!(!f.would_enable("mcrecover", &Level::INFO), "{env:?}");
        }
        assert!(log_filter(Some("debug"), "warn").would_enable("hyper", &Level::DEBUG));
    }

    #[test]
    fn colour_only_on_a_terminal_that_wants_it() {
        assert!(colour_allowed(true, None, Some(OsStr::new("xterm"))));
        assert!(colour_allowed(true, Some(OsStr::new("")), None));
        assert!(!colour_allowed(false, None, Some(OsStr::new("xterm"))));
        assert!(!colour_allowed(true, Some(OsStr::new("1")), None));
        assert!(!colour_allowed(true, None, Some(OsStr::new("dumb"))));
    }

    #[derive(Debug, thiserror::Error)]
    #[error("installing units: {source}")]
    struct Outer {
        source: std::io::Error,
    }

    #[test]
    fn a_reason_is_printed_once() {
        let inner = std::io::Error::other("no space left");
        let err = anyhow::Error::from(Outer { source: inner }).context("install");
        assert_eq!(
            error_chain(&err),
            "install: installing units: no space left"
        );
        let plain = anyhow::anyhow!("a").context("b");
        assert_eq!(error_chain(&plain), "b: a");
    }
}
