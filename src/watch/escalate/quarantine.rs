//! The quarantine remedy: moves each listed file into
//! `<volume host dir>/quarantine/<UTC timestamp>/<path relative to the
//! volume>` of the service volume that contains it. A move is one
//! `renameat2(RENAME_NOREPLACE)`: nothing is ever deleted, overwritten or
//! copied; a path on another filesystem (EXDEV) or an existing target is an
//! error for that path. Every path is validated before anything moves.
//!
//! What is below a volume's host directory belongs to the container, which
//! may have made any of it a symbolic link. So the volume directory is
//! opened once (its path is root's configuration), and everything below it
//! is walked one component at a time with `O_NOFOLLOW` relative to that
//! descriptor (as `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` would):
//! the listed file's directories, `quarantine/`, the timestamp directory and
//! the directories made below it. A symbolic link on the way is an error
//! for that path, never followed; the listed file itself is moved as what it
//! is (a symbolic link is moved, not its target). The rename is
//! `renameat2` on the two directory descriptors.

use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::fcntl::{renameat2, AtFlags, RenameFlags};
use nix::sys::stat::{fstatat, Mode};

use crate::safe_fs::{self, WalkError};

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
    // Per volume: its open directory, and this call's timestamp directory
    // (path and descriptor), made on the first move into it.
    let mut volumes_open: Vec<OpenVolume> = Vec::new();
    let dir_mode = Mode::from_bits_truncate(0o755);
    for (path, vol, rel) in plan {
        let (Some(name), Some(rel_parent)) = (rel.file_name(), rel.parent()) else {
            return Err(partial(&path, "no file name".into(), &report));
        };
        let idx = match volumes_open.iter().position(|v| v.path == vol) {
            Some(i) => i,
            None => {
                let fd = safe_fs::open_dir(&vol).map_err(|e| {
                    partial(
                        &path,
                        format!("cannot open the volume directory {}: {e}", vol.display()),
                        &report,
                    )
                })?;
                volumes_open.push(OpenVolume {
                    path: vol.clone(),
                    fd,
                    stamp: None,
                });
                volumes_open.len() - 1
            }
        };
        let Some(OpenVolume { fd: vol_fd, .. }) = volumes_open.get(idx) else {
            return Err(partial(&path, "internal: volume lost".into(), &report));
        };
        // The listed file's directory, below the volume, no link followed.
        let from_dir = match safe_fs::open_beneath(vol_fd, &vol, rel_parent, None) {
            Ok(fd) => fd,
            Err(e) if e.is_not_found() => {
                report.missing.push(path);
                continue;
            }
            Err(e) => return Err(partial(&path, walk_reason(&e), &report)),
        };
        match fstatat(&from_dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(_) => {}
            Err(Errno::ENOENT) => {
                report.missing.push(path);
                continue;
            }
            Err(e) => return Err(partial(&path, format!("cannot stat: {e}"), &report)),
        }
        let stamp_dir = match volumes_open.get_mut(idx) {
            Some(OpenVolume {
                fd: vol_fd,
                stamp: slot @ None,
                ..
            }) => {
                let claimed =
                    claim_dir(vol_fd, &vol, &stamp).map_err(|e| partial(&path, e, &report))?;
                &*slot.insert(claimed)
            }
            Some(OpenVolume {
                stamp: Some(claimed),
                ..
            }) => &*claimed,
            None => return Err(partial(&path, "internal: volume lost".into(), &report)),
        };
        let (stamp_path, stamp_fd) = stamp_dir;
        let target = stamp_path.join(&rel);
        let to_dir = safe_fs::open_beneath(stamp_fd, stamp_path, rel_parent, Some(dir_mode))
            .map_err(|e| {
                partial(
                    &path,
                    format!("cannot create its directory: {}", walk_reason(&e)),
                    &report,
                )
            })?;
        match renameat2(
            &from_dir,
            name,
            &to_dir,
            name,
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

/// A volume directory, open, and this call's timestamp directory in it
/// (path and descriptor) once made.
struct OpenVolume {
    path: PathBuf,
    fd: OwnedFd,
    stamp: Option<(PathBuf, OwnedFd)>,
}

/// Why a walk below a volume stopped, for the error.
fn walk_reason(e: &WalkError) -> String {
    match e {
        WalkError::Symlink(p) => format!(
            "{} is a symbolic link, which is not followed below a volume (the container controls what is there): nothing is moved through it",
            p.display()
        ),
        other => other.to_string(),
    }
}

/// Creates `<vol>/quarantine/<stamp>` (or `<stamp>-2`, `-3`, ... when taken),
/// so every quarantine gets a directory of its own; `quarantine` is not
/// followed if it is a symbolic link. Returns its path and descriptor.
fn claim_dir(vol_fd: &OwnedFd, vol: &Path, stamp: &str) -> Result<(PathBuf, OwnedFd), String> {
    let mode = Mode::from_bits_truncate(0o755);
    let base = vol.join(QUARANTINE_DIR);
    let qfd =
        safe_fs::open_beneath(vol_fd, vol, Path::new(QUARANTINE_DIR), Some(mode)).map_err(|e| {
            match e {
                WalkError::Symlink(_) => walk_reason(&e),
                other => format!("cannot create {}: {other}", base.display()),
            }
        })?;
    for n in 1..1000 {
        let name = if n == 1 {
            stamp.to_owned()
        } else {
            format!("{stamp}-{n}")
        };
        let dir = base.join(&name);
        match nix::sys::stat::mkdirat(&qfd, name.as_str(), mode) {
            Ok(()) => {}
            Err(Errno::EEXIST) => continue,
            Err(e) => return Err(format!("cannot create {}: {e}", dir.display())),
        }
        let fd = safe_fs::open_dir_at(&qfd, OsStr::new(&name))
            .map_err(|e| format!("cannot open {}: {e}", dir.display()))?;
        return Ok((dir, fd));
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
