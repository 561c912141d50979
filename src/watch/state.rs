//! The daemon's persisted per-service history (`<state_dir>/state.json`):
//! restart timestamps within the escalation window, backoff level, the
//! current escalation, which escalation events already had their actions
//! run and their remedy tried, and the total restart count. Written
//! atomically (temporary file, fsync, rename, fsync of the directory) after
//! every change, loaded at start, so a daemon restart neither resets counts
//! nor repeats the actions of an event.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// File name inside the state directory.
pub const STATE_FILE: &str = "state.json";
/// Default state directory when nothing else says.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/mcrecover";

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
    /// deleted) and an empty state returned, with a warning.
    pub fn load(&self) -> Result<PersistedState, StateError> {
        let path = self.path();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(PersistedState {
                    version: 1,
                    ..PersistedState::default()
                })
            }
            Err(source) => return Err(StateError::Io { path, source }),
        };
        match serde_json::from_slice::<PersistedState>(&bytes) {
            Ok(s) => Ok(s),
            Err(e) => {
                let aside = self.dir.join(format!(
                    "{STATE_FILE}.corrupt-{}",
                    now_ms(SystemTime::now())
                ));
                tracing::warn!(path = %path.display(), moved_to = %aside.display(), error = %e,
                    "state file unreadable; moved aside, starting with an empty history");
                std::fs::rename(&path, &aside).map_err(|source| StateError::Io {
                    path: path.clone(),
                    source,
                })?;
                Ok(PersistedState {
                    version: 1,
                    ..PersistedState::default()
                })
            }
        }
    }

    /// Save atomically: write a temporary file in the same directory,
    /// fsync, rename over `state.json`, fsync the directory.
    pub fn save(&self, state: &PersistedState) -> Result<(), StateError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StateError::Io { path, source }
        };
        std::fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        let json = serde_json::to_vec_pretty(state)?;
        let target = self.path();
        let tmp = self
            .dir
            .join(format!(".{STATE_FILE}.{}.tmp", std::process::id()));
        let result = (|| -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&json)?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            drop(f);
            std::fs::rename(&tmp, &target)?;
            std::fs::File::open(&self.dir)?.sync_all()
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.map_err(io(&target))
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
