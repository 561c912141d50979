//! Matching `JobRemoved` signals to the jobs this process queued.
//!
//! One dispatcher task per connection drains the `JobRemoved` stream (a
//! stream that is not drained stalls the whole zbus connection) into a
//! [`JobTable`]. A caller that queued a job looks its path up: either the
//! signal already came (it can arrive before the method reply) and is in the
//! table's memory of recent jobs, or the caller registers a waiter.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};

use tokio::sync::oneshot;

/// How many finished jobs are remembered for callers whose reply was slower
/// than the signal. Jobs nobody waits for (dependencies, other clients) also
/// land here, so this bounds memory, not correctness: a caller looks its job
/// up right after its own method reply.
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
    order: VecDeque<String>,
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

    /// Record a `JobRemoved` for `path`, waking its waiters.
    pub(crate) fn finish(&self, path: &str, finished: Finished) {
        let mut inner = self.lock();
        if let Some(waiters) = inner.waiters.remove(path) {
            for w in waiters {
                // A waiter whose caller gave up (dropped future) is fine to skip.
                let _ = w.send(finished.clone());
            }
        }
        if inner.recent.insert(path.to_owned(), finished).is_none() {
            inner.order.push_back(path.to_owned());
        }
        while inner.order.len() > RECENT_CAP {
            if let Some(old) = inner.order.pop_front() {
                inner.recent.remove(&old);
            }
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
        t.finish("/job/1", fin(1));
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
        t.finish("/job/3", fin(3));
        t.finish("/job/2", fin(2));
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
        for i in 0..(RECENT_CAP as u32 + 10) {
            t.finish(&format!("/job/{i}"), fin(i));
        }
        assert!(t.lock().recent.len() <= RECENT_CAP);
        assert!(matches!(t.lookup("/job/0"), Lookup::Wait(_)));
    }
}
