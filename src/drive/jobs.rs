//! Matching `JobRemoved` signals to the jobs this process queued.
//!
//! One dispatcher task per connection drains the `JobRemoved` stream (a
//! stream that is not drained stalls the whole zbus connection) into a
//! [`JobTable`]. A caller that queued a job looks its path up: either the
//! signal already came (it can arrive before the method reply) and is in the
//! table's memory of recent jobs, or the caller registers a waiter.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// How long a finished job is remembered for a caller whose method reply
/// came after the signal. A caller looks its job up right after its own
/// reply (milliseconds later), so this is ample; jobs nobody waits for
/// (dependencies, other clients, the daemon's periodic queries: about 14 a
/// minute on an idle platform) age out instead of piling up. A daemon that
/// kept them up to [`RECENT_CAP`] grew by about 24 KiB in its first 24
/// minutes (heaptrack, docs/performance.md item 4).
const RECENT_TTL: Duration = Duration::from_secs(60);

/// At most this many finished jobs are remembered however young (a burst:
/// a large platform's start), bounding memory, not correctness.
const RECENT_CAP: usize = 4096;

/// A `JobRemoved` signal's payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Finished {
    /// Numeric job id.
    pub(crate) id: u32,
    /// The unit the job was for.
    pub(crate) unit: String,
    /// `done`, `canceled`, `timeout`, `failed`, `dependency`, `skipped`, ...
    pub(crate) result: String,
}

/// What a caller gets when it looks up its job.
pub(crate) enum Lookup {
    /// The job already finished.
    Ready(Finished),
    /// Not yet: await this.
    Wait(oneshot::Receiver<Finished>),
    /// The signal stream ended (connection closed).
    Closed,
}

#[derive(Default)]
struct Inner {
    waiters: HashMap<String, Vec<oneshot::Sender<Finished>>>,
    recent: HashMap<String, Finished>,
    /// The paths in `recent`, oldest first, with when each finished.
    order: VecDeque<(Instant, String)>,
    closed: bool,
}

/// Finished jobs and the callers waiting for them, keyed by job object path.
#[derive(Default)]
pub(crate) struct JobTable {
    inner: Mutex<Inner>,
}

impl JobTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Record a `JobRemoved` for `path` that arrived at `now`, waking its
    /// waiters; forgets the jobs that finished more than [`RECENT_TTL`]
    /// before `now` (and the oldest beyond [`RECENT_CAP`]).
    pub(crate) fn finish(&self, path: &str, finished: Finished, now: Instant) {
        let mut inner = self.lock();
        if let Some(waiters) = inner.waiters.remove(path) {
            for w in waiters {
                // A waiter whose caller gave up (dropped future) is fine to skip.
                let _ = w.send(finished.clone());
            }
        }
        if inner.recent.insert(path.to_owned(), finished).is_none() {
            inner.order.push_back((now, path.to_owned()));
        }
        while let Some((at, _)) = inner.order.front() {
            let expired = now.saturating_duration_since(*at) > RECENT_TTL;
            if !expired && inner.order.len() <= RECENT_CAP {
                break;
            }
            if let Some((_, old)) = inner.order.pop_front() {
                inner.recent.remove(&old);
            }
        }
        // After a burst, give the room back (the maps never shrink by themselves).
        if inner.recent.capacity() > 64 && inner.recent.capacity() > 4 * inner.recent.len() {
            inner.recent.shrink_to_fit();
            inner.order.shrink_to_fit();
        }
    }

    /// Look up the job at `path`, registering a waiter if it is still running.
    pub(crate) fn lookup(&self, path: &str) -> Lookup {
        let mut inner = self.lock();
        if let Some(f) = inner.recent.get(path) {
            return Lookup::Ready(f.clone());
        }
        if inner.closed {
            return Lookup::Closed;
        }
        let (tx, rx) = oneshot::channel();
        inner.waiters.entry(path.to_owned()).or_default().push(tx);
        Lookup::Wait(rx)
    }

    /// The stream ended: fail all waiters (their receivers see a closed channel).
    pub(crate) fn close(&self) {
        let mut inner = self.lock();
        inner.closed = true;
        inner.waiters.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fin(id: u32) -> Finished {
        Finished {
            id,
            unit: "a.service".into(),
            result: "done".into(),
        }
    }

    #[tokio::test]
    async fn signal_before_lookup_is_kept() {
        let t = JobTable::default();
        t.finish("/job/1", fin(1), Instant::now());
        assert!(matches!(t.lookup("/job/1"), Lookup::Ready(f) if f.id == 1));
        // A second caller merged into the same job sees it too.
        assert!(matches!(t.lookup("/job/1"), Lookup::Ready(_)));
    }

    #[tokio::test]
    async fn lookup_before_signal_waits() {
        let t = JobTable::default();
        let Lookup::Wait(rx1) = t.lookup("/job/2") else {
            panic!("expected a waiter")
        };
        let Lookup::Wait(rx2) = t.lookup("/job/2") else {
            panic!("expected a waiter")
        };
        t.finish("/job/3", fin(3), Instant::now());
        t.finish("/job/2", fin(2), Instant::now());
        assert_eq!(rx1.await.map(|f| f.id).ok(), Some(2));
        assert_eq!(rx2.await.map(|f| f.id).ok(), Some(2));
    }

    #[tokio::test]
    async fn close_fails_waiters_and_later_lookups() {
        let t = JobTable::default();
        let Lookup::Wait(rx) = t.lookup("/job/4") else {
            panic!("expected a waiter")
        };
        t.close();
        assert!(rx.await.is_err());
        assert!(matches!(t.lookup("/job/5"), Lookup::Closed));
    }

    #[test]
    fn memory_is_bounded() {
        let t = JobTable::default();
        let now = Instant::now();
        for i in 0..(RECENT_CAP as u32 + 10) {
            t.finish(&format!("/job/{i}"), fin(i), now);
        }
        assert!(t.lock().recent.len() <= RECENT_CAP);
        assert!(matches!(t.lookup("/job/0"), Lookup::Wait(_)));
    }

    #[test]
    fn finished_jobs_age_out_and_the_room_is_given_back() {
        let t = JobTable::default();
        let t0 = Instant::now();
        // A burst, all at once: every job is remembered.
        for i in 0..1000u32 {
            t.finish(&format!("/job/{i}"), fin(i), t0);
        }
        assert_eq!(t.lock().recent.len(), 1000);
        assert!(matches!(t.lookup("/job/999"), Lookup::Ready(_)));
        // Within the time to live the burst is still there.
        t.finish("/job/1000", fin(1000), t0 + RECENT_TTL);
        assert_eq!(t.lock().recent.len(), 1001);
        // One job past it, the burst is forgotten and its room released.
        let later = t0 + RECENT_TTL + Duration::from_millis(1);
        t.finish("/job/1001", fin(1001), later);
        let inner = t.lock();
        assert_eq!(inner.recent.len(), 2);
        assert_eq!(inner.order.len(), 2);
        assert!(
            inner.recent.capacity() < 100,
            "capacity {}",
            inner.recent.capacity()
        );
        drop(inner);
        assert!(matches!(t.lookup("/job/1001"), Lookup::Ready(f) if f.id == 1001));
        assert!(matches!(t.lookup("/job/1"), Lookup::Wait(_)));
    }

    #[test]
    fn a_steady_trickle_stays_small() {
        // 14 jobs a minute for 6 hours (the idle daemon's periodic queries).
        let t = JobTable::default();
        let t0 = Instant::now();
        for i in 0..(14 * 60 * 6u32) {
            let at = t0 + Duration::from_millis(u64::from(i) * 60_000 / 14);
            t.finish(&format!("/job/{i}"), fin(i), at);
        }
        assert!(t.lock().recent.len() <= 16, "{}", t.lock().recent.len());
    }
}
