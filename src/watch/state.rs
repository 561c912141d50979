//! The daemon's persisted per-service history (`<state_dir>/state.json`):
//! restart timestamps within the escalation window, backoff level, the
//! current escalation, which escalation events already had their actions
//! run and their remedy tried, and the total restart count. Written
//! atomically (temporary file, fsync, rename, fsync of the directory) after
//! every change, loaded at start, so a daemon restart neither resets counts
//! nor repeats the actions of an event.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// File name inside the state directory.
pub const STATE_FILE: &str = "state.json";
/// Default state directory when nothing else says.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/mcrecover";
/// How many handled event ids are remembered per service.
const EVENTS_KEPT: usize = 32;

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

/// The current escalation of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Escalation {
    /// Event id (`<service>-<unix ms>`).
    pub event_id: String,
    /// Why it was escalated.
    pub reason: String,
    /// When (unix ms).
    pub at_ms: u64,
}

/// The persisted history of one service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServiceRecord {
    /// Wall-clock times (unix ms) of the restarts issued within the window.
    pub restarts: Vec<u64>,
    /// Backoff level: restarts since the last reset.
    pub backoff_level: u32,
    /// Current escalation, until ack or healthy.
    pub escalated: Option<Escalation>,
    /// Event ids whose escalation actions were started (never run twice).
    pub actions_done: Vec<String>,
    /// Event id for which the remedy was tried.
    pub remedy_tried: Option<String>,
    /// Restarts issued since the daemon first saw the service.
    pub total_restarts: u64,
}

impl ServiceRecord {
    /// Drop restart timestamps older than `window` before `now_ms`.
    pub fn prune(&mut self, now_ms: u64, window: Duration) {
        let from = now_ms.saturating_sub(duration_ms(window));
        self.restarts.retain(|&t| t >= from);
    }

    /// Restarts within `window` before `now_ms`.
    pub fn restarts_in_window(&self, now_ms: u64, window: Duration) -> u32 {
        let from = now_ms.saturating_sub(duration_ms(window));
        let n = self.restarts.iter().filter(|&&t| t >= from).count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// Record a restart issued at `now_ms`: timestamp, backoff level, total.
    pub fn record_restart(&mut self, now_ms: u64, window: Duration) {
        self.prune(now_ms, window);
        self.restarts.push(now_ms);
        self.backoff_level = self.backoff_level.saturating_add(1);
        self.total_restarts += 1;
    }

    /// Forget the restart history and backoff (healthy long enough, or ack).
    pub fn reset_backoff(&mut self) {
        self.restarts.clear();
        self.backoff_level = 0;
    }

    /// Remember that the actions of `event_id` were started.
    pub fn mark_actions_done(&mut self, event_id: &str) {
        if !self.actions_done.iter().any(|e| e == event_id) {
            self.actions_done.push(event_id.to_owned());
        }
        let excess = self.actions_done.len().saturating_sub(EVENTS_KEPT);
        self.actions_done.drain(..excess);
    }

    /// Whether the actions of `event_id` were already started.
    pub fn actions_done_for(&self, event_id: &str) -> bool {
        self.actions_done.iter().any(|e| e == event_id)
    }
}

/// The whole persisted state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PersistedState {
    /// Format version (1).
    pub version: u32,
    /// Per service name.
    pub services: BTreeMap<String, ServiceRecord>,
}

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

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn window_and_backoff() {
        let w = Duration::from_secs(600);
        let mut r = ServiceRecord::default();
        r.record_restart(1_000_000, w);
        r.record_restart(1_100_000, w);
        r.record_restart(1_700_000, w);
        assert_eq!(r.backoff_level, 3);
        assert_eq!(r.total_restarts, 3);
        // 1_000_000 fell out of the window at the third restart.
        assert_eq!(r.restarts, vec![1_100_000, 1_700_000]);
        assert_eq!(r.restarts_in_window(1_700_000, w), 2);
        assert_eq!(r.restarts_in_window(1_800_001, w), 1);
        r.reset_backoff();
        assert_eq!(r.backoff_level, 0);
        assert_eq!(r.restarts_in_window(1_700_000, w), 0);
        assert_eq!(r.total_restarts, 3);
    }

    #[test]
    fn events_remembered_and_bounded() {
        let mut r = ServiceRecord::default();
        r.mark_actions_done("a-1");
        r.mark_actions_done("a-1");
        assert_eq!(r.actions_done.len(), 1);
        assert!(r.actions_done_for("a-1"));
        for i in 0..100 {
            r.mark_actions_done(&format!("a-{i}"));
        }
        assert_eq!(r.actions_done.len(), EVENTS_KEPT);
        assert!(r.actions_done_for("a-99"));
    }

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
