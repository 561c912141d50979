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
    let warnings = problems.len() - errors;
    if errors > 0 || (strict && warnings > 0) {
        let what = if errors > 0 {
            format!("{errors} named file(s) cannot be used")
        } else {
            format!("{warnings} named file(s) missing or unreadable here (--strict)")
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
