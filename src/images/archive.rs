//! The on-disk image archive: one docker-archive tar per image, named after
//! the reference, plus `index.json` (reference -> file, sha256, size,
//! saved_at), written atomically. See docs/images.md.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::dir::{ArchiveDir, ArchiveOpen, Trust};
use super::ImagesError;

/// Name of the index file in an archive directory.
pub const INDEX_FILE: &str = "index.json";

/// One archived image, as recorded in `index.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexEntry {
    /// Archive file name, relative to the archive directory (no `/`).
    pub file: String,
    /// Lower-case hex SHA-256 of the whole file.
    pub sha256: String,
    /// File size in bytes.
    pub size: u64,
    /// When it was saved, RFC 3339 UTC (`2026-11-25T18:00:00Z`).
    pub saved_at: String,
}

/// `index.json`: image reference -> entry (sorted, so the file is stable).
pub type Index = BTreeMap<String, IndexEntry>;

/// Reads `dir/index.json`; a missing directory or file is an empty index.
/// `index.json` must be a regular file (a symbolic link is not followed).
pub fn read_index(dir: &Path) -> Result<Index, ImagesError> {
    match ArchiveDir::open(dir)? {
        Some(d) => d.read_index(),
        None => Ok(Index::new()),
    }
}

/// Parses the contents of `index.json` (at `path`, for messages).
pub(crate) fn parse_index(path: &Path, bytes: &[u8]) -> Result<Index, ImagesError> {
    let index: Index = serde_json::from_slice(bytes).map_err(|source| ImagesError::Index {
        path: path.to_path_buf(),
        source,
    })?;
    if let Some((image, e)) = index.iter().find(|(_, e)| !plain_file_name(&e.file)) {
        return Err(ImagesError::BadEntry {
            path: path.to_path_buf(),
            image: image.clone(),
            file: e.file.clone(),
        });
    }
    Ok(index)
}

/// Writes `dir/index.json` atomically (a new temporary file relative to
/// the directory's descriptor, fsync, rename, fsync of the directory).
pub fn write_index(dir: &Path, index: &Index) -> Result<(), ImagesError> {
    match ArchiveDir::open(dir)? {
        Some(d) => d.write_index(index),
        None => Err(ImagesError::Io {
            path: dir.to_path_buf(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        }),
    }
}

/// A file name without directory parts (what `index.json` may name).
fn plain_file_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('/') && !name.contains('\0')
}

/// The archive file name of one image: the last path component of the
/// reference (`name:tag` or `name@digest`), every character outside
/// `[A-Za-z0-9._-]` replaced by `_`, plus `.tar`.
/// `mcr.svc.mcp.metacircular.net:8443/mcns:v1.2.0` -> `mcns_v1.2.0.tar`.
pub fn archive_file_name(reference: &str) -> String {
    let last = reference.rsplit('/').next().unwrap_or(reference);
    format!("{}.tar", sanitize(last))
}

/// File names for a set of references: [`archive_file_name`], except that
/// references whose short names collide all use the whole reference
/// sanitized (`mcr.svc.mcp.metacircular.net_8443_mcns_v1.2.0.tar`).
pub fn archive_file_names<'a>(
    references: impl IntoIterator<Item = &'a str>,
) -> BTreeMap<String, String> {
    let refs: BTreeSet<&str> = references.into_iter().collect();
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    for r in &refs {
        *count.entry(archive_file_name(r)).or_default() += 1;
    }
    refs.iter()
        .map(|r| {
            let short = archive_file_name(r);
            let name = if count.get(&short).copied().unwrap_or(0) > 1 {
                format!("{}.tar", sanitize(r))
            } else {
                short
            };
            ((*r).to_string(), name)
        })
        .collect()
}

fn sanitize(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with('.') || out.is_empty() {
        out.insert(0, '_');
    }
    out
}

/// SHA-256 (lower-case hex) and size of everything readable from `r`.
pub(crate) fn sha256_of(mut r: impl Read) -> std::io::Result<(String, u64)> {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
        size += n as u64;
    }
    let hex = hex_digest(ctx);
    Ok((hex, size))
}

/// The lower-case hex of a finished SHA-256.
pub(super) fn hex_digest(ctx: ring::digest::Context) -> String {
    ctx.finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// SHA-256 and size of the regular file at `path` (its last component is
/// not followed).
pub fn sha256_file(path: &Path) -> Result<(String, u64), ImagesError> {
    crate::safe_fs::open_regular(path)
        .map_err(|e| match e {
            crate::safe_fs::OpenError::Io(e) => e,
            other => std::io::Error::other(other.to_string()),
        })
        .and_then(|(f, _)| sha256_of(f))
        .map_err(|source| ImagesError::Io {
            path: path.to_path_buf(),
            source,
        })
}

/// The state of one image's archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ArchiveState {
    /// No archive directory is configured.
    NoArchiveDir,
    /// `index.json` has no entry for the image.
    NotArchived,
    /// The index names a file that does not exist.
    FileMissing {
        /// The missing file.
        path: PathBuf,
    },
    /// The file's SHA-256 differs from the index.
    ChecksumMismatch {
        /// The archive file.
        path: PathBuf,
        /// SHA-256 recorded in `index.json`.
        expected: String,
        /// SHA-256 of the file now.
        actual: String,
    },
    /// The file is not loaded: not a regular file, or someone else than a
    /// trusted owner could change it (`reason`).
    Refused {
        /// The archive file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The file is there and its checksum matches.
    Ok {
        /// The archive file.
        path: PathBuf,
        /// Its size in bytes.
        size: u64,
        /// When it was saved.
        saved_at: String,
    },
}

/// Checks `image`'s archive in `dir` against `index` (reads and hashes the
/// file), as this process would load it: a regular file owned by root or
/// this process's user, writable by no one else.
pub fn verify(dir: &Path, index: &Index, image: &str) -> Result<ArchiveState, ImagesError> {
    let Some(d) = ArchiveDir::open(dir)? else {
        return Ok(match index.get(image) {
            None => ArchiveState::NotArchived,
            Some(e) => ArchiveState::FileMissing {
                path: dir.join(&e.file),
            },
        });
    };
    verify_in(
        &d,
        index,
        image,
        &Trust::new(None, "this user's podman storage".into()),
    )
}

/// [`verify`] in an open directory, with the owners `trust` allows.
pub(crate) fn verify_in(
    dir: &ArchiveDir,
    index: &Index,
    image: &str,
    trust: &Trust,
) -> Result<ArchiveState, ImagesError> {
    let Some(entry) = index.get(image) else {
        return Ok(ArchiveState::NotArchived);
    };
    let path = dir.path().join(&entry.file);
    let file = match dir.open_archive(&entry.file, trust) {
        Ok(f) => f,
        Err(ArchiveOpen::Missing) => return Ok(ArchiveState::FileMissing { path }),
        Err(ArchiveOpen::Refused(reason)) => return Ok(ArchiveState::Refused { path, reason }),
        Err(ArchiveOpen::Io(source)) => return Err(ImagesError::Io { path, source }),
    };
    let (actual, size) = sha256_of(file).map_err(|source| ImagesError::Io {
        path: path.clone(),
        source,
    })?;
    Ok(if actual == entry.sha256 {
        ArchiveState::Ok {
            path,
            size,
            saved_at: entry.saved_at.clone(),
        }
    } else {
        ArchiveState::ChecksumMismatch {
            path,
            expected: entry.sha256.clone(),
            actual,
        }
    })
}

/// Now as RFC 3339 UTC, seconds precision.
pub(crate) fn now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    rfc3339(secs)
}

/// Unix seconds as RFC 3339 UTC (proleptic Gregorian, days-from-civil inverse).
fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_short_sanitized_and_deterministic() {
        assert_eq!(
            archive_file_name("mcr.svc.mcp.metacircular.net:8443/mcns:v1.2.0"),
            "mcns_v1.2.0.tar"
        );
        assert_eq!(archive_file_name("busybox"), "busybox.tar");
        assert_eq!(
            archive_file_name("r.example/a@sha256:ab12"),
            "a_sha256_ab12.tar"
        );
        assert_eq!(archive_file_name("r/.hidden:1"), "_.hidden_1.tar");
        let names =
            archive_file_names(["a.example/x:1", "b.example:5000/team/x:1", "a.example/y:2"]);
        assert_eq!(names["a.example/y:2"], "y_2.tar");
        assert_eq!(names["a.example/x:1"], "a.example_x_1.tar");
        assert_eq!(
            names["b.example:5000/team/x:1"],
            "b.example_5000_team_x_1.tar"
        );
    }

    #[test]
    fn sha256_matches_known_vector() {
        let (hex, size) = sha256_of(&b"abc"[..]).unwrap();
        assert_eq!(
            hex,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(size, 3);
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_600_861), "2026-11-25T10:01:01Z");
    }

    #[test]
    fn index_round_trip_and_verify() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a_1.tar"), b"abc").unwrap();
        let mut index = Index::new();
        index.insert(
            "r.example/a:1".into(),
            IndexEntry {
                file: "a_1.tar".into(),
                sha256: sha256_file(&dir.path().join("a_1.tar")).unwrap().0,
                size: 3,
                saved_at: now_rfc3339(),
            },
        );
        write_index(dir.path(), &index).unwrap();
        let back = read_index(dir.path()).unwrap();
        assert_eq!(back, index);
        assert!(matches!(
            verify(dir.path(), &back, "r.example/a:1").unwrap(),
            ArchiveState::Ok { size: 3, .. }
        ));
        std::fs::write(dir.path().join("a_1.tar"), b"abd").unwrap();
        assert!(matches!(
            verify(dir.path(), &back, "r.example/a:1").unwrap(),
            ArchiveState::ChecksumMismatch { .. }
        ));
        assert_eq!(
            verify(dir.path(), &back, "r.example/b:1").unwrap(),
            ArchiveState::NotArchived
        );
        // An index naming a path outside the directory is refused.
        std::fs::write(
            dir.path().join(INDEX_FILE),
            r#"{"x": {"file": "../etc/passwd", "sha256": "", "size": 0, "saved_at": ""}}"#,
        )
        .unwrap();
        assert!(matches!(
            read_index(dir.path()),
            Err(ImagesError::BadEntry { .. })
        ));
    }
}
