//! `recover`: install, then start the platform stage by stage, health-gated.

use std::io::Write as _;
use std::path::Path;

use anyhow::Context as _;
use mcrecover::config::Config;
use mcrecover::plan;
use mcrecover::recover::{self, Progress};

use super::common::{connect, runtime, sys, Exit, EXIT_CONFIG};
use super::install::install;
use super::SystemArgs;

/// `recover [--json] [--no-install] [--quiet] [--timeline FILE]`: exits
/// with the report's code (or a system error when the timeline cannot be
/// written).
pub(super) fn run(
    cfg: &Config,
    s: &SystemArgs,
    json: bool,
    no_install: bool,
    quiet: bool,
    timeline: Option<&Path>,
) -> Result<u8, Exit> {
    runtime()?.block_on(async {
        if !no_install {
            install(cfg, s, false).await?;
        }
        let plan = plan::build(cfg).map_err(|e| Exit(EXIT_CONFIG, e.into()))?;
        let sd = connect(cfg, s).await?;
        let mut progress = Progress::new(quiet || json);
        let (report, tl) =
            recover::recover_with_timeline(cfg, &plan, &sd, |ev| progress.event(ev)).await;
        if json {
            println!("{}", serde_json::to_string_pretty(&report).map_err(sys)?);
        } else {
            eprint!("{}", report.to_text());
        }
        if let Some(path) = timeline {
            write_atomic(path, recover::to_svg(&tl).as_bytes()).map_err(sys)?;
            eprintln!("timeline written to {}", path.display());
        }
        Ok(report.exit_code)
    })
}

/// Write `data` to `path` through a new temporary file in the same
/// directory, renamed over `path` (a reader sees the old file or the whole
/// new one).
fn write_atomic(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    let name = path
        .file_name()
        .with_context(|| format!("{} names no file", path.display()))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| -> anyhow::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(data)
            .and_then(|()| f.sync_all())
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
