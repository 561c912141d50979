//! The daemon's persisted per-service history (`<state_dir>/state.json`):
//! restart timestamps within the escalation window, backoff level, the
//! current escalation, which escalation events already had their actions
//! run and their remedy tried, and the total restart count. Written
//! atomically (temporary file, fsync, rename, fsync of the directory) after
//! every change, loaded at start, so a daemon restart neither resets counts
//! nor repeats the actions of an event.
//!
//! The directory is opened once and everything in it is done relative to
//! that descriptor: the temporary file is created with `O_EXCL | O_NOFOLLOW`
//! (a name planted there, e.g. a symbolic link, is never written through:
//! another name is taken), renamed with `renameat`, and the directory
//! descriptor is fsynced. `state.json` is read only if it is a regular file
//! (not a symbolic link, FIFO or device; at most [`MAX_STATE_BYTES`]).

use std::ffi::OsStr;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use nix::sys::stat::Mode;

use crate::safe_fs::{self, OpenError};

/// File name inside the state directory.
pub const STATE_FILE: &str = "state.json";
/// Default state directory when nothing else says.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/mcrecover";
/// A `state.json` larger than this is not read (treated as unreadable).
pub const MAX_STATE_BYTES: u64 = 64 << 20;

/// Errors reading or writing the state file.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// I/O on the state file or directory.
    #[error("state file {path}: {source}")]
    Io {
        /// The path concerned.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Could not encode the state.
    #[error("encoding state: {0}")]
    Encode(#[from] serde_json::Error),
}

pub use crate::engine::history::{Escalation, PersistedState, ServiceRecord};

/// Where the state lives; loads and saves it.
#[derive(Debug, Clone)]
pub struct StateStore {
    dir: PathBuf,
}

impl StateStore {
    /// A store in `dir` (created on first save).
    pub fn new(dir: PathBuf) -> StateStore {
        StateStore { dir }
    }

    /// The state file's path.
    pub fn path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    /// Load the state; a missing file is an empty state. An unreadable
    /// (corrupt) file is moved aside to `state.json.corrupt-<unix ms>` (never
    /// deleted) and an empty state returned, with a warning; so is a
    /// `state.json` that is not a regular file (a symbolic link, a FIFO) or
    /// is larger than [`MAX_STATE_BYTES`]: it is neither followed nor read.
    pub fn load(&self) -> Result<PersistedState, StateError> {
        let path = self.path();
        let empty = || PersistedState {
            version: 1,
            ..PersistedState::default()
        };
        let dir = match safe_fs::open_dir(&self.dir) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(empty()),
            Err(source) => {
                return Err(StateError::Io {
                    path: self.dir.clone(),
                    source,
                })
            }
        };
        let read = safe_fs::open_regular_at(&dir, OsStr::new(STATE_FILE))
            .and_then(|(f, _)| safe_fs::read_bounded(f, MAX_STATE_BYTES));
        let problem = match read {
            Ok(bytes) => match serde_json::from_slice::<PersistedState>(&bytes) {
                Ok(s) => return Ok(s),
                Err(e) => e.to_string(),
            },
            Err(e) if e.is_not_found() => return Ok(empty()),
            Err(OpenError::Io(source)) => return Err(StateError::Io { path, source }),
            Err(e) => e.to_string(),
        };
        let aside = format!("{STATE_FILE}.corrupt-{}", now_ms(SystemTime::now()));
        tracing::warn!(path = %path.display(), moved_to = %self.dir.join(&aside).display(), error = %problem,
            "state file unreadable; moved aside, starting with an empty history");
        safe_fs::rename_at(&dir, OsStr::new(STATE_FILE), OsStr::new(&aside)).map_err(|source| {
            StateError::Io {
                path: path.clone(),
                source,
            }
        })?;
        Ok(empty())
    }

    /// Save atomically: write a new temporary file in the directory
    /// (`O_EXCL | O_NOFOLLOW`, relative to the directory's descriptor),
    /// fsync, rename over `state.json` (`renameat`), fsync the directory.
    pub fn save(&self, state: &PersistedState) -> Result<(), StateError> {
        let mut json = serde_json::to_vec_pretty(state)?;
        json.push(b'\n');
        self.write_atomic(STATE_FILE, &json, 0o600).map(|_| ())
    }

    /// Writes `bytes` as `name` in the state directory the way
    /// [`StateStore::save`] writes `state.json`, with `mode`; returns its
    /// path.
    pub fn write_atomic(&self, name: &str, bytes: &[u8], mode: u32) -> Result<PathBuf, StateError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StateError::Io { path, source }
        };
        std::fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        let dir = safe_fs::open_dir(&self.dir).map_err(io(&self.dir))?;
        let target = self.dir.join(name);
        let base = format!(".{name}.{}.tmp", std::process::id());
        let (mut f, tmp) = safe_fs::create_temp_at(&dir, &base, Mode::from_bits_truncate(mode))
            .map_err(io(&self.dir.join(&base)))?;
        let result = (|| -> std::io::Result<()> {
            f.write_all(bytes)?;
            f.sync_all()?;
            // create_temp_at's mode is filtered by the umask: set it exactly.
            nix::sys::stat::fchmod(&f, Mode::from_bits_truncate(mode))?;
            safe_fs::rename_at(&dir, &tmp, OsStr::new(name))?;
            safe_fs::sync(&dir)
        })();
        drop(f);
        if result.is_err() {
            // Our own temporary file (created above with O_EXCL), by its
            // name in the directory we hold open.
            let _ = safe_fs::unlink_at(&dir, &tmp);
        }
        result.map_err(io(&target))?;
        Ok(target)
    }
}

/// The state directory: the explicit override, else the config's
/// `[watch] state_dir`, else the first entry of `$STATE_DIRECTORY` (set by
/// systemd's `StateDirectory=`), else [`DEFAULT_STATE_DIR`].
pub fn resolve_state_dir(
    explicit: Option<&Path>,
    configured: Option<&Path>,
    state_directory_env: Option<&str>,
) -> PathBuf {
    if let Some(p) = explicit.or(configured) {
        return p.to_path_buf();
    }
    state_directory_env
        .and_then(|v| v.split(':').find(|s| !s.is_empty()))
        .map_or_else(|| PathBuf::from(DEFAULT_STATE_DIR), PathBuf::from)
}

/// Unix milliseconds of `t` (0 before the epoch).
pub fn now_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn save_load_round_trip_and_corrupt_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = StateStore::new(dir.path().join("sub"));
        let empty = store.load().expect("load missing");
        assert!(empty.services.is_empty());
        let mut st = PersistedState {
            version: 1,
            ..PersistedState::default()
        };
        let rec = st.services.entry("mcns".into()).or_default();
        rec.record_restart(5, Duration::from_secs(600));
        rec.escalated = Some(Escalation {
            event_id: "mcns-5".into(),
            reason: "unit failed".into(),
            at_ms: 5,
        });
        rec.mark_actions_done("mcns-5");
        store.save(&st).expect("save");
        assert_eq!(store.load().expect("load"), st);
        // No temporary file left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path().join("sub"))
            .expect("readdir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(STATE_FILE)]);
        std::fs::write(store.path(), b"{not json").expect("corrupt");
        assert!(store.load().expect("load corrupt").services.is_empty());
        let aside = std::fs::read_dir(dir.path().join("sub"))
            .expect("readdir")
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().contains("corrupt"))
            })
            .count();
        assert_eq!(aside, 1);
    }

    /// Issue 12 item 7: a symbolic link planted where the temporary file
    /// goes is not written through (the old code truncated and rewrote its
    /// target), and `state.json` itself is never followed or waited on.
    #[test]
    fn temporary_file_and_state_file_are_never_followed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"root's file").expect("victim");
        let store = StateStore::new(dir.path().join("state"));
        std::fs::create_dir(dir.path().join("state")).expect("mkdir");
        let planted = dir
            .path()
            .join("state")
            .join(format!(".{STATE_FILE}.{}.tmp", std::process::id()));
        std::os::unix::fs::symlink(&victim, &planted).expect("symlink");
        let st = PersistedState {
            version: 1,
            ..PersistedState::default()
        };
        store.save(&st).expect("save");
        assert_eq!(std::fs::read(&victim).expect("read"), b"root's file");
        assert!(planted.is_symlink(), "the planted link is left alone");
        let meta = std::fs::symlink_metadata(store.path()).expect("state.json");
        assert!(meta.is_file());
        assert_eq!(store.load().expect("load"), st);

        // state.json a symbolic link to /dev/zero, then a FIFO: moved
        // aside at once, an empty history (no 4 GB read, no hang).
        for make in [
            (|p: &Path| std::os::unix::fs::symlink("/dev/zero", p).expect("link")) as fn(&Path),
            |p: &Path| {
                nix::unistd::mkfifo(p, Mode::from_bits_truncate(0o600)).expect("fifo");
            },
        ] {
            let _ = std::fs::remove_file(store.path());
            make(&store.path());
            let (tx, rx) = std::sync::mpsc::channel();
            let s2 = store.clone();
            std::thread::spawn(move || {
                let _ = tx.send(s2.load().map(|s| s.services.len()));
            });
            let loaded = rx
                .recv_timeout(Duration::from_secs(10))
                .expect("load returned within 10 s");
            assert_eq!(loaded.expect("load"), 0);
            assert!(!store.path().exists() && !store.path().is_symlink());
        }
        assert_eq!(std::fs::read(&victim).expect("read"), b"root's file");
    }

    #[test]
    fn state_dir_resolution() {
        let p = |s: &str| PathBuf::from(s);
        assert_eq!(
            resolve_state_dir(Some(&p("/x")), Some(&p("/y")), Some("/z")),
            p("/x")
        );
        assert_eq!(resolve_state_dir(None, Some(&p("/y")), Some("/z")), p("/y"));
        assert_eq!(
            resolve_state_dir(None, None, Some("/var/lib/mcrecover/850:/other")),
            p("/var/lib/mcrecover/850")
        );
        assert_eq!(
            resolve_state_dir(None, None, Some("")),
            p(DEFAULT_STATE_DIR)
        );
        assert_eq!(resolve_state_dir(None, None, None), p(DEFAULT_STATE_DIR));
    }
}
