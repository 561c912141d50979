//! `install`, and the install step `recover` runs first.

use mcrecover::config::Config;

use super::common::{
    backend_name, connect, refuse_root_for_rootless, resolve_backend, runtime, summary, sys, Exit,
    EXIT_CONFIG,
};
use super::SystemArgs;

/// `install [--dry-run]`.
pub(super) fn run(cfg: &Config, s: &SystemArgs, dry_run: bool) -> Result<u8, Exit> {
    runtime()?.block_on(async {
        let changed = install(cfg, s, dry_run).await?;
        if !dry_run && changed {
            eprintln!("systemd reloaded");
        }
        Ok(0)
    })
}

/// Render into the manager's directories; reload if anything changed.
/// Returns whether anything changed.
pub(super) async fn install(cfg: &Config, s: &SystemArgs, dry_run: bool) -> Result<bool, Exit> {
    use mcrecover::watch::install::{render_and_write, InstallError};
    if !dry_run {
        refuse_root_for_rootless(cfg, s)?;
    }
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
