//! Check scheduling for the daemon: every check of every service runs in its
//! own task on its own schedule (interval, timeout, failure and success
//! thresholds, start period) and reports each attempt to the engine over a
//! channel. A probe is bounded by its timeout (plus slack), so a hanging
//! check never blocks anything: the engine never awaits a probe.
//!
//! Thresholds (Kubernetes-like): a check is `failing` after
//! `failure_threshold` consecutive failures and `passing` after
//! `success_threshold` consecutive successes; before either it is unknown.
//! After a (re)start ([`Mode::AfterStart`]) failures inside `start_period`
//! do not count. A re-check ([`Mode::Recheck`], used for held dependents once
//! their upstream is healthy) probes at once and lets the first result decide.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::check::{self, Outcome};
use crate::config::{Check, Service};

/// Extra time a probe gets beyond its own timeout before it is abandoned.
const PROBE_SLACK: Duration = Duration::from_secs(2);

/// How a service's checks (re)start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Steady state: first probe at once, thresholds apply.
    Normal,
    /// Right after a (re)start: failures inside `start_period` do not count.
    AfterStart,
    /// Re-check: probe at once; the first result decides.
    Recheck,
}

/// One attempt of one check.
#[derive(Debug, Clone)]
pub struct CheckReport {
    /// Service name.
    pub service: String,
    /// Check name.
    pub check: String,
    /// Generation of the service's check tasks (stale reports are ignored).
    pub generation: u64,
    /// The attempt's outcome.
    pub outcome: Outcome,
    /// The check's verdict after this attempt (None: not decided yet).
    pub passing: Option<bool>,
    /// Consecutive failures that counted.
    pub failures: u32,
}

/// The running check tasks of every service.
#[derive(Debug)]
pub struct HealthSet {
    tx: mpsc::UnboundedSender<CheckReport>,
    tasks: HashMap<String, (u64, Vec<JoinHandle<()>>)>,
    next_gen: u64,
}

impl HealthSet {
    /// An empty set reporting to `tx`.
    pub fn new(tx: mpsc::UnboundedSender<CheckReport>) -> HealthSet {
        HealthSet {
            tx,
            tasks: HashMap::new(),
            next_gen: 1,
        }
    }

    /// (Re)start the check tasks of `svc` in `mode`, replacing any running
    /// ones. Returns the new generation.
    pub fn spawn(&mut self, svc: &Service, mode: Mode) -> u64 {
        self.stop(&svc.name);
        let generation = self.next_gen;
        self.next_gen += 1;
        let handles = svc
            .checks
            .iter()
            .map(|c| {
                tokio::spawn(run_check(
                    svc.name.clone(),
                    c.clone(),
                    generation,
                    mode,
                    self.tx.clone(),
                ))
            })
            .collect();
        self.tasks.insert(svc.name.clone(), (generation, handles));
        generation
    }

    /// Stop the check tasks of `service`.
    pub fn stop(&mut self, service: &str) {
        if let Some((_, handles)) = self.tasks.remove(service) {
            for h in handles {
                h.abort();
            }
        }
    }

    /// Stop every task.
    pub fn stop_all(&mut self) {
        let names: Vec<String> = self.tasks.keys().cloned().collect();
        for n in names {
            self.stop(&n);
        }
    }

    /// Whether `report` comes from the service's current check tasks. Every
    /// (re)start of a service's checks gets a new generation, so a probe
    /// that was in flight when its task was replaced or stopped (e.g. when
    /// the service was armed) never delivers a stale result.
    pub fn is_current(&self, report: &CheckReport) -> bool {
        self.generation(&report.service) == Some(report.generation)
    }

    /// The current generation of `service`'s tasks.
    pub fn generation(&self, service: &str) -> Option<u64> {
        self.tasks.get(service).map(|(g, _)| *g)
    }
}

impl Drop for HealthSet {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// The threshold state machine of one check, pure.
#[derive(Debug, Clone)]
pub struct Verdict {
    failures: u32,
    successes: u32,
    passing: Option<bool>,
}

impl Verdict {
    /// Unknown, no attempts yet.
    pub fn new() -> Verdict {
        Verdict {
            failures: 0,
            successes: 0,
            passing: None,
        }
    }

    /// Apply one attempt; `grace` (inside the start period) makes a failure
    /// not count; `decide_now` lets this result decide regardless of the
    /// thresholds. Returns the verdict after it.
    pub fn apply(&mut self, c: &Check, ok: bool, grace: bool, decide_now: bool) -> Option<bool> {
        if ok {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            if decide_now || self.successes >= c.success_threshold.max(1) {
                self.passing = Some(true);
            }
        } else if !grace {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            if decide_now || self.failures >= c.failure_threshold.max(1) {
                self.passing = Some(false);
            }
        } else {
            self.successes = 0;
        }
        self.passing
    }

    /// Consecutive failures that counted.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

impl Default for Verdict {
    fn default() -> Self {
        Verdict::new()
    }
}

async fn run_check(
    service: String,
    c: Check,
    generation: u64,
    mode: Mode,
    tx: mpsc::UnboundedSender<CheckReport>,
) {
    let started = Instant::now();
    let mut verdict = Verdict::new();
    let mut first = true;
    loop {
        let outcome = match tokio::time::timeout(c.timeout + PROBE_SLACK, check::probe(&c)).await {
            Ok(o) => o,
            Err(_) => Outcome {
                ok: false,
                detail: format!(
                    "check `{}` did not finish within {}",
                    c.name,
                    check::fmt_duration(c.timeout + PROBE_SLACK)
                ),
                elapsed: c.timeout + PROBE_SLACK,
            },
        };
        let grace = mode == Mode::AfterStart && started.elapsed() < c.start_period;
        let decide_now = mode == Mode::Recheck && first;
        first = false;
        let passing = verdict.apply(&c, outcome.ok, grace, decide_now);
        let report = CheckReport {
            service: service.clone(),
            check: c.name.clone(),
            generation,
            outcome,
            passing,
            failures: verdict.failures(),
        };
        if tx.send(report).is_err() {
            return;
        }
        tokio::time::sleep(c.interval.max(Duration::from_millis(100))).await;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::config::{CheckKind, TcpCheck};

    fn check(failure_threshold: u32, success_threshold: u32) -> Check {
        Check {
            name: "tcp".into(),
            kind: CheckKind::Tcp(TcpCheck {
                address: "127.0.0.1:1".parse().expect("addr"),
            }),
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(2),
            failure_threshold,
            success_threshold,
            start_period: Duration::ZERO,
        }
    }

    #[test]
    fn thresholds() {
        let c = check(3, 2);
        let mut v = Verdict::new();
        assert_eq!(v.apply(&c, false, false, false), None);
        assert_eq!(v.apply(&c, false, false, false), None);
        assert_eq!(v.apply(&c, false, false, false), Some(false));
        assert_eq!(v.apply(&c, true, false, false), Some(false));
        assert_eq!(v.apply(&c, true, false, false), Some(true));
        assert_eq!(v.apply(&c, false, false, false), Some(true));
        // A success in between resets the failure count.
        assert_eq!(v.apply(&c, true, false, false), Some(true));
        assert_eq!(v.apply(&c, false, false, false), Some(true));
        assert_eq!(v.apply(&c, false, false, false), Some(true));
        assert_eq!(v.apply(&c, false, false, false), Some(false));
    }

    #[test]
    fn grace_and_recheck() {
        let c = check(1, 1);
        let mut v = Verdict::new();
        assert_eq!(v.apply(&c, false, true, false), None);
        assert_eq!(v.failures(), 0);
        assert_eq!(v.apply(&c, false, false, false), Some(false));
        let c = check(3, 3);
        let mut v = Verdict::new();
        assert_eq!(v.apply(&c, false, false, true), Some(false));
        let mut v = Verdict::new();
        assert_eq!(v.apply(&c, true, false, true), Some(true));
    }

    #[tokio::test]
    async fn tasks_report_and_stop() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut set = HealthSet::new(tx);
        let svc = Service {
            name: "x".into(),
            description: None,
            container: None,
            checks: vec![check(1, 1)],
            after: Vec::new(),
            requires: Vec::new(),
            remedy: None,
        };
        let g = set.spawn(&svc, Mode::Normal);
        let r = rx.recv().await.expect("a report");
        assert_eq!(r.generation, g);
        assert_eq!(r.passing, Some(false));
        assert!(set.is_current(&r));
        let g2 = set.spawn(&svc, Mode::Recheck);
        assert!(g2 > g);
        assert_eq!(set.generation("x"), Some(g2));
        // A result of the replaced tasks (in flight when they were
        // replaced) is stale; the new tasks' results are current.
        assert!(!set.is_current(&r));
        let fresh = loop {
            let r = rx.recv().await.expect("a report");
            if r.generation == g2 {
                break r;
            }
            assert!(!set.is_current(&r));
        };
        assert!(set.is_current(&fresh));
        set.stop_all();
        assert_eq!(set.generation("x"), None);
        assert!(!set.is_current(&fresh));
    }
}
