//! The on-disk image archive: one docker-archive tar per image, named after
//! the reference, plus `index.json` (reference -> file, sha256, size,
//! saved_at), written atomically. See docs/images.md.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

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

/// Reads `dir/index.json`; a missing file is an empty index.
pub fn read_index(dir: &Path) -> Result<Index, ImagesError> {
    let path = dir.join(INDEX_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Index::new()),
        Err(source) => return Err(ImagesError::Io { path, source }),
    };
    let index: Index = serde_json::from_str(&text).map_err(|source| ImagesError::Index {
        path: path.clone(),
        source,
    })?;
    if let Some((image, e)) = index.iter().find(|(_, e)| !plain_file_name(&e.file)) {
        return Err(ImagesError::BadEntry {
            path,
            image: image.clone(),
            file: e.file.clone(),
        });
    }
    Ok(index)
}

/// Writes `dir/index.json` atomically (temporary file, fsync, rename, fsync of the directory).
pub fn write_index(dir: &Path, index: &Index) -> Result<(), ImagesError> {
    let path = dir.join(INDEX_FILE);
    let tmp = dir.join(format!(".{INDEX_FILE}.tmp{}", std::process::id()));
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| ImagesError::Io { path: p, source }
    };
    let mut text = serde_json::to_string_pretty(index).map_err(|source| ImagesError::Index {
        path: path.clone(),
        source,
    })?;
    text.push('\n');
    let mut f = File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(text.as_bytes()).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    drop(f);
    set_mode_0644(&tmp)?;
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    sync_dir(dir)
}

/// fsync of a directory (makes renames in it durable).
pub(crate) fn sync_dir(dir: &Path) -> Result<(), ImagesError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| ImagesError::Io {
            path: dir.to_path_buf(),
            source,
        })
}

/// Makes an archive file world-readable (the platform user reads what root saved).
pub(crate) fn set_mode_0644(path: &Path) -> Result<(), ImagesError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).map_err(|source| {
        ImagesError::Io {
            path: path.to_path_buf(),
            source,
        }
    })
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
    let hex = ctx
        .finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok((hex, size))
}

/// SHA-256 and size of the file at `path`.
pub fn sha256_file(path: &Path) -> Result<(String, u64), ImagesError> {
    File::open(path)
        .and_then(sha256_of)
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

/// Checks `image`'s archive in `dir` against `index` (reads and hashes the file).
pub fn verify(dir: &Path, index: &Index, image: &str) -> Result<ArchiveState, ImagesError> {
    let Some(entry) = index.get(image) else {
        return Ok(ArchiveState::NotArchived);
    };
    let path = dir.join(&entry.file);
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(ArchiveState::FileMissing { path })
        }
        Err(source) => return Err(ImagesError::Io { path, source }),
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
