//! `daemon`: the long-running service (the shell is `mcrecover::watch`).

use std::path::{Path, PathBuf};

use mcrecover::config::Config;
use mcrecover::watch;

use super::common::{bus_target, resolve_backend, runtime, sys, Exit};
use super::{ApiArgs, SystemArgs};

/// Boot recovery, then watch until stopped; 0 on a clean stop.
pub(super) fn run(
    config_path: &Path,
    cfg: &Config,
    api: &ApiArgs,
    s: &SystemArgs,
    no_install: bool,
    state_dir: Option<PathBuf>,
) -> Result<u8, Exit> {
    runtime()?.block_on(async {
        let opts = watch::DaemonOptions {
            config_path: config_path.to_path_buf(),
            bus: bus_target(cfg, s),
            backend: s.backend.map(|b| resolve_backend(cfg, Some(b))),
            quadlet_dir: s.quadlet_dir.clone(),
            unit_dir: s.unit_dir.clone(),
            install: !no_install,
            state_dir,
            api_bus: api.bus(),
        };
        watch::run(opts).await.map_err(sys)?;
        Ok(0)
    })
}
