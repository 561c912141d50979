//! The node_exporter textfile-collector output: the metrics written to a
//! `*.prom` file, atomically (a hidden temporary file in the same directory,
//! mode 0644 so that node_exporter's user can read it, renamed over the
//! file), when they changed and at most once per `textfile_interval`.

use std::ffi::OsStr;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::stat::Mode;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::{Metrics, MetricsError};
use crate::safe_fs;

/// Mode of the file: node_exporter runs as another user.
const MODE: u32 = 0o644;

/// Writes the metrics to `path` now (blocking; a few KiB).
pub fn write(metrics: &Metrics, path: &Path) -> Result<(), MetricsError> {
    let text = metrics.encode()?;
    write_atomic(path, text.as_bytes()).map_err(|source| MetricsError::Write {
        path: path.to_path_buf(),
        source,
    })
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let invalid = || std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file path");
    let name = path.file_name().ok_or_else(invalid)?;
    let dir_path = path.parent().ok_or_else(invalid)?;
    let dir = safe_fs::open_dir(dir_path)?;
    let base = format!(".{}.{}.tmp", name.to_string_lossy(), std::process::id());
    let (mut f, tmp) = safe_fs::create_temp_at(&dir, &base, Mode::from_bits_truncate(MODE))?;
    let result = (|| -> std::io::Result<()> {
        f.write_all(bytes)?;
        // The daemon's UMask=0077 filtered the creation mode: set it exactly.
        nix::sys::stat::fchmod(&f, Mode::from_bits_truncate(MODE))?;
        safe_fs::rename_at(&dir, &tmp, OsStr::new(name))
    })();
    drop(f);
    if result.is_err() {
        // Our own temporary file (created with O_EXCL), by its name in the
        // directory we hold open.
        let _ = safe_fs::unlink_at(&dir, &tmp);
    }
    result
}

/// The writer task: writes at once, then after each change, never twice
/// within `interval`. A failing write is logged once per distinct error
/// and tried again at the next change.
pub async fn run(metrics: Metrics, path: PathBuf, interval: Duration) {
    let mut last_error: Option<String> = None;
    loop {
        let started = Instant::now();
        let (m, p) = (metrics.clone(), path.clone());
        let result = tokio::task::spawn_blocking(move || write(&m, &p))
            .await
            .unwrap_or_else(|e| {
                Err(MetricsError::Write {
                    path: path.clone(),
                    source: std::io::Error::other(e.to_string()),
                })
            });
        match result {
            Ok(()) => {
                if last_error.take().is_some() {
                    warn!(path = %path.display(), "metrics textfile written again");
                }
                debug!(path = %path.display(), "metrics textfile written");
            }
            Err(e) => {
                let text = e.to_string();
                if last_error.as_deref() != Some(&text) {
                    warn!(error = %text, "metrics textfile not written");
                    last_error = Some(text);
                }
            }
        }
        tokio::time::sleep_until(started + interval).await;
        metrics.wait_changed().await;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn writes_atomically_readable_by_others() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mcrecover.prom");
        let m = Metrics::new();
        write(&m, &path).unwrap();
        write(&m, &path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("mcrecover_up 1\n"), "{text}");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
        // No temporary file left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("mcrecover.prom")]);
    }

    #[test]
    fn a_missing_directory_is_an_error() {
        let m = Metrics::new();
        let e = write(&m, Path::new("/nonexistent-dir-mcrecover/x.prom")).unwrap_err();
        assert!(
            e.to_string().contains("/nonexistent-dir-mcrecover/x.prom"),
            "{e}"
        );
    }
}
