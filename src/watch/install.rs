//! Installing the units: render the configuration, write what changed into
//! the manager's directories, and daemon-reload systemd only when something
//! was created or changed. Shared by `mcrecover install`, `recover` and the
//! daemon (at start and on reload, so a reload re-installs only what changed).

use std::path::Path;

use crate::config::Config;
use crate::drive::{DriveError, Systemd};
use crate::plan::{self, PlanError};
use crate::render::{self, Backend, RenderError, WriteReport};

/// Why installing failed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// The plan could not be built.
    #[error("plan: {0}")]
    Plan(#[from] PlanError),
    /// Rendering or writing the unit files failed.
    #[error("installing units into {quadlet_dir} and {unit_dir}: {source}")]
    Render {
        /// Quadlet directory.
        quadlet_dir: String,
        /// Unit directory.
        unit_dir: String,
        /// The render/write error.
        source: Box<RenderError>,
    },
    /// daemon-reload failed.
    #[error("daemon-reload after installing units: {0}")]
    Reload(#[from] DriveError),
    /// The blocking task that renders and writes failed (panicked or was
    /// cancelled).
    #[error("rendering units: {0}")]
    Task(String),
}

/// Render and write (or with `dry_run`, only compare); no systemd involved.
pub fn render_and_write(
    cfg: &Config,
    backend: Backend,
    quadlet_dir: &Path,
    unit_dir: &Path,
    dry_run: bool,
) -> Result<WriteReport, InstallError> {
    let wrap = |source| InstallError::Render {
        quadlet_dir: quadlet_dir.display().to_string(),
        unit_dir: unit_dir.display().to_string(),
        source: Box::new(source),
    };
    let plan = plan::build(cfg)?;
    let rendered = render::render(cfg, &plan, backend).map_err(wrap)?;
    render::write(&rendered, quadlet_dir, unit_dir, dry_run).map_err(wrap)
}

/// Render, write what changed, and daemon-reload `sd` if anything was
/// created or changed. Returns what was written.
pub async fn install(
    cfg: &Config,
    backend: Backend,
    quadlet_dir: &Path,
    unit_dir: &Path,
    sd: &Systemd,
) -> Result<WriteReport, InstallError> {
    // Rendering and writing (fsyncs included) block: off the async threads,
    // so the daemon's loop keeps its watchdog pings.
    let (cfg2, quadlet, units) = (cfg.clone(), quadlet_dir.to_owned(), unit_dir.to_owned());
    let report = tokio::task::spawn_blocking(move || {
        render_and_write(&cfg2, backend, &quadlet, &units, false)
    })
    .await
    .map_err(|e| InstallError::Task(e.to_string()))??;
    if report.modified() {
        tracing::info!(
            created = report.created.len(),
            changed = report.changed.len(),
            "unit files changed; reloading systemd"
        );
        sd.reload().await?;
    }
    Ok(report)
}
