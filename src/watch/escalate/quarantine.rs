//! The quarantine remedy: moves each listed file into
//! `<volume host dir>/quarantine/<UTC timestamp>/<path relative to the
//! volume>` of the service volume that contains it. A move is one
//! `renameat2(RENAME_NOREPLACE)`: nothing is ever deleted, overwritten or
//! copied; a path on another filesystem (EXDEV) or an existing target is an
//! error for that path. Every path is validated before anything moves.

use std::io;
use std::path::{Component, Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};

use super::{QuarantineError, QuarantineReport};
use crate::config::{Remedy, Service};

/// Name of the directory inside a volume that holds quarantined files.
pub const QUARANTINE_DIR: &str = "quarantine";

/// `(year, month, day, hour, minute, second)` of `at` in UTC.
fn utc_parts(at: SystemTime) -> (i64, u32, u32, u64, u64, u64) {
    let secs = at
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    (y, m, d, rem / 3600, (rem % 3600) / 60, rem % 60)
}

/// `20261125T021500Z` for `at` (UTC).
pub fn timestamp(at: SystemTime) -> String {
    let (y, mo, d, h, mi, s) = utc_parts(at);
    format!("{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}Z")
}

/// `2026-11-25T02:15:00Z` for `at` (UTC, whole seconds).
pub fn rfc3339(at: SystemTime) -> String {
    let (y, mo, d, h, mi, s) = utc_parts(at);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian
/// calendar (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    (
        y,
        u32::try_from(m).unwrap_or(1),
        u32::try_from(d).unwrap_or(1),
    )
}

/// The absolute host directories of `svc`'s bind mounts (named volumes skipped).
fn volume_dirs(svc: &Service) -> Vec<PathBuf> {
    svc.container
        .iter()
        .flat_map(|c| c.volumes.iter())
        .map(|v| PathBuf::from(&v.host))
        .filter(|p| p.is_absolute())
        .collect()
}

/// Whether `p` is absolute and has no `.`/`..` components.
fn is_plain_absolute(p: &Path) -> bool {
    p.is_absolute()
        && p.components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
}

/// The volume (longest match) containing `path`, and `path` relative to it.
fn locate(path: &Path, volumes: &[PathBuf]) -> Option<(PathBuf, PathBuf)> {
    volumes
        .iter()
        .filter_map(|v| {
            let rel = path.strip_prefix(v).ok()?;
            (!rel.as_os_str().is_empty()).then(|| (v.clone(), rel.to_path_buf()))
        })
        .max_by_key(|(v, _)| v.components().count())
}

fn err(path: &Path, reason: impl Into<String>) -> QuarantineError {
    QuarantineError {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Moves the remedy's files (see the module doc). All paths are checked
/// first (absolute, inside a volume of `svc`, not already in quarantine);
/// then each existing one is moved. On an error after some moves the error
/// names what was already moved.
pub fn quarantine(
    svc: &Service,
    remedy: &Remedy,
    at: SystemTime,
) -> Result<QuarantineReport, QuarantineError> {
    let volumes = volume_dirs(svc);
    let mut plan: Vec<(PathBuf, PathBuf, PathBuf)> = Vec::new();
    for path in &remedy.quarantine {
        if !is_plain_absolute(path) {
            return Err(err(path, "not an absolute path without `.`/`..`"));
        }
        let (vol, rel) = locate(path, &volumes).ok_or_else(|| {
            err(
                path,
                format!(
                    "not inside any volume host directory of service {} ({})",
                    svc.name,
                    volumes
                        .iter()
                        .map(|v| v.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })?;
        if rel.starts_with(QUARANTINE_DIR) {
            return Err(err(
                path,
                "already inside the volume's quarantine directory",
            ));
        }
        plan.push((path.clone(), vol, rel));
    }

    let stamp = timestamp(at);
    let mut report = QuarantineReport {
        moved: Vec::new(),
        missing: Vec::new(),
    };
    // One timestamp directory per volume for this call.
    let mut dirs: Vec<(PathBuf, PathBuf)> = Vec::new();
    for (path, vol, rel) in plan {
        match std::fs::symlink_metadata(&path) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                report.missing.push(path);
                continue;
            }
            Err(e) => return Err(partial(&path, format!("cannot stat: {e}"), &report)),
        }
        let dir = match dirs.iter().find(|(v, _)| *v == vol) {
            Some((_, d)) => d.clone(),
            None => {
                let d = claim_dir(&vol, &stamp).map_err(|e| partial(&path, e, &report))?;
                dirs.push((vol.clone(), d.clone()));
                d
            }
        };
        let target = dir.join(&rel);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| {
                partial(
                    &path,
                    format!("cannot create {}: {e}", parent.display()),
                    &report,
                )
            })?;
        }
        match renameat2(
            AT_FDCWD,
            &path,
            AT_FDCWD,
            &target,
            RenameFlags::RENAME_NOREPLACE,
        ) {
            Ok(()) => {
                tracing::warn!(
                    service = %svc.name,
                    from = %path.display(),
                    to = %target.display(),
                    "quarantined"
                );
                report.moved.push((path, target));
            }
            Err(Errno::EXDEV) => {
                return Err(partial(
                    &path,
                    format!(
                        "{} is on another filesystem than {} (not copied, nothing deleted)",
                        path.display(),
                        target.display()
                    ),
                    &report,
                ))
            }
            Err(Errno::EEXIST) => {
                return Err(partial(
                    &path,
                    format!("{} already exists (never overwritten)", target.display()),
                    &report,
                ))
            }
            Err(e) => {
                return Err(partial(
                    &path,
                    format!("cannot move to {}: {e}", target.display()),
                    &report,
                ))
            }
        }
    }
    Ok(report)
}

/// Creates `<vol>/quarantine/<stamp>` (or `<stamp>-2`, `-3`, ... when taken),
/// so every quarantine gets a directory of its own.
fn claim_dir(vol: &Path, stamp: &str) -> Result<PathBuf, String> {
    let base = vol.join(QUARANTINE_DIR);
    std::fs::create_dir_all(&base).map_err(|e| format!("cannot create {}: {e}", base.display()))?;
    for n in 1..1000 {
        let name = if n == 1 {
            stamp.to_owned()
        } else {
            format!("{stamp}-{n}")
        };
        let dir = base.join(name);
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(format!("cannot create {}: {e}", dir.display())),
        }
    }
    Err(format!(
        "no free quarantine directory for {stamp} in {}",
        base.display()
    ))
}

/// An error that also names the files already moved.
fn partial(path: &Path, reason: String, report: &QuarantineReport) -> QuarantineError {
    if report.moved.is_empty() {
        return err(path, reason);
    }
    let moved: Vec<String> = report
        .moved
        .iter()
        .map(|(f, t)| format!("{} -> {}", f.display(), t.display()))
        .collect();
    err(
        path,
        format!("{reason} (already moved: {})", moved.join(", ")),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_utc_basic_format() {
        assert_eq!(timestamp(UNIX_EPOCH), "19700101T000000Z");
        // 2026-11-25T02:15:00Z
        let at = UNIX_EPOCH + Duration::from_secs(1_795_572_900);
        assert_eq!(timestamp(at), "20261125T021500Z");
        assert_eq!(rfc3339(at), "2026-11-25T02:15:00Z");
        // 2024-02-29T23:59:59Z (leap day)
        let at = UNIX_EPOCH + Duration::from_secs(1_709_251_199);
        assert_eq!(timestamp(at), "20240229T235959Z");
    }

    #[test]
    fn locate_prefers_the_longest_volume() {
        let vols = vec![PathBuf::from("/srv/a"), PathBuf::from("/srv/a/db")];
        let (v, rel) = locate(Path::new("/srv/a/db/x.db"), &vols).unwrap();
        assert_eq!(v, Path::new("/srv/a/db"));
        assert_eq!(rel, Path::new("x.db"));
        assert!(locate(Path::new("/srv/a"), &vols).is_none());
        assert!(locate(Path::new("/srv/ab/x"), &vols).is_none());
    }

    #[test]
    fn dotdot_is_refused() {
        assert!(!is_plain_absolute(Path::new("/srv/a/../etc/passwd")));
        assert!(!is_plain_absolute(Path::new("srv/a")));
        assert!(is_plain_absolute(Path::new("/srv/a/b")));
    }
}
