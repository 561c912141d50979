//! `drift`: per service, the image configured, the one running, the one in
//! the image archive and the one in the MCP definitions; exit 1 on any
//! difference (docs/drift.md).

use std::path::{Path, PathBuf};

use mcrecover::config::Config;
use mcrecover::drift::{self, DriftError};
use mcrecover::images::PodmanRunner;

use super::common::{runtime, sys, Exit, EXIT_CONFIG};

/// `drift [--json] [--mcp-dir DIR]...`: 0 no drift, 1 drift, 2 the
/// configuration or the MCP definitions are invalid, 4 podman or the
/// archive could not be read.
pub(super) fn run(cfg: &Config, path: &Path, mcp_dirs: &[PathBuf], json: bool) -> Result<u8, Exit> {
    let report = runtime()?
        .block_on(drift::report(cfg, path, &PodmanRunner::Direct, mcp_dirs))
        .map_err(|e| match e {
            DriftError::Import(_) => Exit(EXIT_CONFIG, e.into()),
            other => sys(other),
        })?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report).map_err(sys)?);
    } else {
        print!("{}", report.to_text());
    }
    Ok(report.exit_code())
}
