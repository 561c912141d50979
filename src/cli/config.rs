//! `check-config`, `plan`, `render` and `config-keys`: the configuration
//! and what it turns into, without systemd.

use std::path::Path;

use anyhow::Context;

use mcrecover::config::{self, Config, Severity};
use mcrecover::{plan, render};

use super::common::{backend_name, resolve_backend, summary, sys, Exit, EXIT_CONFIG};
use super::{BackendArg, PlanFormat};

/// `config-keys`: every key the loader accepts.
pub(super) fn keys() -> Result<u8, Exit> {
    for key in config::known_keys() {
        println!("{key}");
    }
    Ok(0)
}

/// `check-config`: a one-line summary of the valid configuration, or all of
/// it as JSON; findings about the files it names on stderr, each at the key
/// that names the file. Exit 2 for an invalid configuration, a named file
/// that is wrong, or (with `strict`) one that is missing or unreadable here.
pub(super) fn check(path: &Path, json: bool, strict: bool) -> Result<u8, Exit> {
    let loaded = config::load_with_files(path)
        .map_err(|e| Exit(EXIT_CONFIG, anyhow::Error::msg(e.to_string())))?;
    let cfg = &loaded.config;
    let problems = loaded.inspect_files();
    for p in &problems {
        eprintln!("{p}");
    }
    let errors = problems
        .iter()
        .filter(|p| p.severity == Severity::Error)
        .count();
    let home = home_warning(cfg, path);
    if let Some(w) = &home {
        eprintln!("{w}");
    }
    let warnings = problems.len() - errors + usize::from(home.is_some());
    if errors > 0 || (strict && warnings > 0) {
        let what = if errors > 0 {
            format!("{errors} named file(s) cannot be used")
        } else {
            format!("{warnings} warning(s) (--strict)")
        };
        return Err(Exit(
            EXIT_CONFIG,
            anyhow::anyhow!("{}: {what}", path.display()),
        ));
    }
    if json {
        println!("{}", serde_json::to_string_pretty(cfg).map_err(sys)?);
    } else {
        let containers = cfg.services.values().filter(|s| !s.is_external()).count();
        let checks: usize = cfg.services.values().map(|s| s.checks.len()).sum();
        let note = match warnings {
            0 => String::new(),
            1 => ", 1 warning".to_string(),
            n => format!(", {n} warnings"),
        };
        println!(
            "{}: ok ({} stages, {containers} containers, {} external, {checks} checks{note})",
            path.display(),
            cfg.stages.len(),
            cfg.services.len() - containers
        );
    }
    Ok(0)
}

/// Where the shipped `mcrecover@.service` lets the rootless daemon write
/// (`ProtectSystem=strict`, `ReadWritePaths=-/srv`, `ProtectHome=tmpfs` with
/// `/home` bound back).
const WRITABLE_HOMES: [&str; 2] = ["/srv", "/home"];

/// A rootless platform user's home the shipped unit cannot write (it renders
/// units below it): the warning, at the `home` key.
fn home_warning(cfg: &Config, path: &Path) -> Option<String> {
    if cfg.platform.mode != config::Mode::Rootless {
        return None;
    }
    let user = cfg.platform.user.as_ref()?;
    if WRITABLE_HOMES.iter().any(|d| user.home.starts_with(d)) {
        return None;
    }
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let at = text
        .lines()
        .enumerate()
        .find_map(|(i, l)| {
            let col = l.len() - l.trim_start().len();
            let key = l.trim_start();
            (key.starts_with("home") && key[4..].trim_start().starts_with('='))
                .then(|| format!("{}:{}:{}", path.display(), i + 1, col + 1))
        })
        .unwrap_or_else(|| path.display().to_string());
    Some(format!(
        "{at}: warning: platform.home = {:?}: the shipped mcrecover@.service (ProtectSystem=strict, \
         ProtectHome=tmpfs) lets the daemon write only below /srv and /home, and it renders \
         the platform's units below this home\n  help: move the home below /srv or /home, or \
         give the daemon's unit a drop-in: `systemctl edit mcrecover@{}.service` with \
         `[Service]` `ReadWritePaths={}`",
        user.home.display(),
        user.uid,
        user.home.display()
    ))
}

/// `plan`: the plan as text, JSON or Graphviz.
pub(super) fn plan(cfg: &Config, format: PlanFormat) -> Result<u8, Exit> {
    let plan = plan::build(cfg).map_err(|e| Exit(EXIT_CONFIG, e.into()))?;
    let out = match format {
        PlanFormat::Text => plan.to_text(),
        PlanFormat::Json => plan.to_json().map_err(sys)? + "\n",
        PlanFormat::Dot => plan.to_dot(),
    };
    print!("{out}");
    Ok(0)
}

/// `render`: the unit files into one directory.
pub(super) fn render(cfg: &Config, out: &Path, backend: Option<BackendArg>) -> Result<u8, Exit> {
    let backend = resolve_backend(cfg, backend);
    let plan = plan::build(cfg).map_err(|e| Exit(EXIT_CONFIG, e.into()))?;
    let rendered = render::render(cfg, &plan, backend).map_err(|e| Exit(EXIT_CONFIG, e.into()))?;
    let report = render::write(&rendered, out, out, false)
        .with_context(|| format!("writing units to {}", out.display()))
        .map_err(sys)?;
    eprintln!("{} backend: {}", backend_name(backend), summary(&report));
    Ok(0)
}
