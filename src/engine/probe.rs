//! One check's schedule and verdict, pure: when it is due, what one probe
//! result does to its verdict, and when it is due again. The single check
//! scheduler of every goal (recover, gate, daemon); the runner only executes
//! the probes it is told to.
//!
//! Cadences:
//! - [`Cadence::Fast`] while a service is starting (after a start or a
//!   restart, and while its stage is gated): a failed probe is retried after
//!   a short pause: [`FIRST_RETRY_PAUSE_MS`] for the first
//!   [`FAST_WINDOW_MS`] (a service that becomes ready then is seen within
//!   one pause plus one probe: the stage transition waits for no longer),
//!   then doubling up to [`MAX_RETRY_PAUSE_MS`] (a slow starter is not
//!   hammered for minutes); a passed one at once until `success_threshold`
//!   successes in a row; failures do not count (the service's start deadline
//!   decides).
//! - [`Cadence::Steady`] once healthy: every `interval`; `failing` after
//!   `failure_threshold` failures in a row, `passing` after
//!   `success_threshold` successes in a row (Kubernetes-like); failures
//!   inside `start_period` after the service became healthy do not count.
//! - [`Cadence::Recheck`] for a held service whose upstream is healthy
//!   again: probe at once, the first result decides.
//!
//! A result that says "waiting for an operator" (the check's
//! `operator_wait` rule matched, e.g. HTTP 503 from a sealed vault) is
//! neither a success nor a failure: it resets both counts, leaves the
//! verdict undecided, and the next probe follows within
//! [`WAIT_POLL_MS`] (so an unseal is noticed quickly in any cadence).

use crate::config::Check;

/// First pause after a failed probe while starting.
pub const FIRST_RETRY_PAUSE_MS: u64 = 25;
/// Longest pause between two probes of a failing check while starting.
pub const MAX_RETRY_PAUSE_MS: u64 = 100;
/// How long after entering the fast cadence the pause stays at
/// [`FIRST_RETRY_PAUSE_MS`] before it starts doubling (issue 15: stage
/// transitions; a stand-in that needs 0.4-2.6 s is seen within 25 ms).
pub const FAST_WINDOW_MS: u64 = 5_000;
/// Longest pause between two probes of a check that answered "waiting for
/// an operator".
pub const WAIT_POLL_MS: u64 = 1_000;
/// Shortest steady interval (a zero interval would spin).
const MIN_INTERVAL_MS: u64 = 100;

/// How a check is scheduled and judged (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cadence {
    /// Starting: fast retries, failures do not count.
    Fast,
    /// Healthy: every interval, thresholds apply.
    Steady,
    /// Held no more: the first result decides.
    Recheck,
}

/// The settings of one check the schedule needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckSpec {
    /// Check name.
    pub name: String,
    /// Steady interval (ms).
    pub interval_ms: u64,
    /// Failures in a row that make it failing.
    pub failure_threshold: u32,
    /// Successes in a row that make it passing.
    pub success_threshold: u32,
    /// Failures this long after becoming steady do not count (ms).
    pub start_period_ms: u64,
    /// What an operator must do when the check answers "waiting for an
    /// operator" (`None`: the check has no `operator_wait` rule).
    pub remedy: Option<String>,
    /// Where in the interval its steady probes fall (ms, below
    /// `interval_ms`): steady probes are due on the grid `phase_ms + k ×
    /// interval_ms`, so checks keep their places and do not drift into
    /// bursts ([`CheckSpec::spread`]).
    pub phase_ms: u64,
}

impl CheckSpec {
    /// From a configured check.
    pub fn of(c: &Check) -> CheckSpec {
        CheckSpec {
            name: c.name.clone(),
            interval_ms: ms(c.interval).max(MIN_INTERVAL_MS),
            failure_threshold: c.failure_threshold.max(1),
            success_threshold: c.success_threshold.max(1),
            start_period_ms: ms(c.start_period),
            remedy: c.operator_wait.as_ref().map(|w| w.remedy.clone()),
            phase_ms: 0,
        }
    }

    /// The same check with its steady probes placed by `seed` (the service
    /// and check names): a stable place in the interval, the same in every
    /// run, different for different checks. Probes due at one interval
    /// after each result drift by their durations, and two that meet in
    /// one wake-up stay together: over an hour in the bench the 16 checks
    /// of 12 services went from 4.6 separate bursts per 5 s cycle to 2.6–4.0
    /// (up to 10 probes within 50 ms); on their grid they stay at 12
    /// (issue 15 item 4). Prometheus spreads its scrapes the same way.
    pub fn spread(mut self, seed: &str) -> CheckSpec {
        // FNV-1a: stable across builds and runs (std's hasher is not promised to be).
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in seed.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.phase_ms = h % self.interval_ms.max(1);
        self
    }

    /// The first point of its steady grid at or after `t`.
    fn on_grid(&self, t: u64) -> u64 {
        let i = self.interval_ms.max(1);
        let p = self.phase_ms % i;
        if t <= p {
            p
        } else {
            p.saturating_add((t - p).div_ceil(i).saturating_mul(i))
        }
    }

    /// When a steady probe is due after one that ended at `at`: the first
    /// grid point at least half an interval later (a probe that took
    /// longer than half an interval skips a point instead of running
    /// back to back).
    fn steady_after(&self, at: u64) -> u64 {
        self.on_grid(at.saturating_add(self.interval_ms / 2))
    }
}

/// Milliseconds of a duration, saturating.
pub fn ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The latest probe result of a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastProbe {
    /// Whether it passed.
    pub ok: bool,
    /// It did not pass because the service waits for an operator.
    pub waiting: bool,
    /// What it saw.
    pub detail: String,
    /// When the result came (engine ms).
    pub at: u64,
}

/// One check of one service: schedule and verdict.
#[derive(Debug, Clone)]
pub struct CheckRun {
    /// Its settings.
    pub spec: CheckSpec,
    /// How it is scheduled now.
    pub cadence: Cadence,
    /// The verdict: `None` until decided.
    pub passing: Option<bool>,
    /// The latest result.
    pub last: Option<LastProbe>,
    /// Token of the probe in flight.
    pub in_flight: Option<u64>,
    /// When the next probe is due; `None`: stopped (or one in flight).
    pub due: Option<u64>,
    /// Probes finished since the last reset.
    pub attempts: u32,
    successes: u32,
    failures: u32,
    pause: u64,
    /// When the fast cadence began (its pause doubles after [`FAST_WINDOW_MS`]).
    fast_since: u64,
    grace_until: u64,
}

impl CheckRun {
    /// A stopped check.
    pub fn new(spec: CheckSpec) -> CheckRun {
        CheckRun {
            spec,
            cadence: Cadence::Fast,
            passing: None,
            last: None,
            in_flight: None,
            due: None,
            attempts: 0,
            successes: 0,
            failures: 0,
            pause: FIRST_RETRY_PAUSE_MS,
            fast_since: 0,
            grace_until: 0,
        }
    }

    /// Start afresh in `cadence` at `now`: verdict and counters forgotten, a
    /// probe in flight disowned (its result will be stale), due at once.
    pub fn reset(&mut self, cadence: Cadence, now: u64) {
        let spec = self.spec.clone();
        *self = CheckRun::new(spec);
        self.cadence = cadence;
        self.due = Some(now);
        self.fast_since = now;
    }

    /// Keep the verdict, change the cadence: steady from `now` (next probe
    /// one interval after the last, failures inside the start period do not
    /// count), or a recheck at once.
    pub fn set_cadence(&mut self, cadence: Cadence, now: u64) {
        if self.cadence == cadence {
            return;
        }
        self.cadence = cadence;
        match cadence {
            Cadence::Steady => {
                self.grace_until = now.saturating_add(self.spec.start_period_ms);
                self.failures = 0;
                if self.in_flight.is_none() {
                    let last = self.last.as_ref().map_or(now, |l| l.at);
                    // Its first grid point after the last probe: never more
                    // than an interval later (a fault just after the start
                    // is seen as soon as with any later probe).
                    self.due = Some(self.spec.on_grid(last.saturating_add(1).max(now)));
                }
            }
            Cadence::Recheck => {
                self.passing = None;
                self.successes = 0;
                self.failures = 0;
                self.in_flight = None;
                self.due = Some(now);
            }
            Cadence::Fast => {
                self.pause = FIRST_RETRY_PAUSE_MS;
                self.fast_since = now;
                if self.in_flight.is_none() {
                    self.due = Some(now);
                }
            }
        }
    }

    /// Stop: no probe is due; a probe in flight is disowned.
    pub fn stop(&mut self) {
        self.due = None;
        self.in_flight = None;
    }

    /// Whether it is running (due or in flight).
    pub fn running(&self) -> bool {
        self.due.is_some() || self.in_flight.is_some()
    }

    /// If due at `now`, mark a probe with `token` in flight and return true.
    pub fn take_due(&mut self, now: u64, token: u64) -> bool {
        match self.due {
            Some(t) if t <= now && self.in_flight.is_none() => {
                self.due = None;
                self.in_flight = Some(token);
                true
            }
            _ => false,
        }
    }

    /// Apply the result of probe `token` (`waiting`: not passed because the
    /// service waits for an operator); false (and nothing changed) when it
    /// is not the probe in flight (stale).
    pub fn on_result(
        &mut self,
        token: u64,
        ok: bool,
        waiting: bool,
        detail: String,
        now: u64,
    ) -> bool {
        if self.in_flight != Some(token) {
            return false;
        }
        self.in_flight = None;
        self.attempts = self.attempts.saturating_add(1);
        let waiting = waiting && !ok;
        self.last = Some(LastProbe {
            ok,
            waiting,
            detail,
            at: now,
        });
        let interval = self.spec.interval_ms;
        if waiting {
            self.successes = 0;
            self.failures = 0;
            self.passing = None;
            if self.cadence == Cadence::Recheck {
                self.cadence = Cadence::Steady;
            }
            self.due = Some(now.saturating_add(interval.min(WAIT_POLL_MS)));
            return true;
        }
        match self.cadence {
            Cadence::Fast => {
                if ok {
                    self.failures = 0;
                    self.successes = self.successes.saturating_add(1);
                    self.pause = FIRST_RETRY_PAUSE_MS;
                    if self.successes >= self.spec.success_threshold {
                        self.passing = Some(true);
                        self.due = Some(now.saturating_add(interval));
                    } else {
                        self.due = Some(now);
                    }
                } else {
                    self.successes = 0;
                    if self.passing == Some(true) {
                        // Passed once while the service is still starting:
                        // the next result is judged again.
                        self.passing = None;
                    }
                    self.due = Some(now.saturating_add(self.pause));
                    if now.saturating_sub(self.fast_since) >= FAST_WINDOW_MS {
                        self.pause = (self.pause * 2).min(MAX_RETRY_PAUSE_MS);
                    }
                }
            }
            Cadence::Steady => {
                if ok {
                    self.failures = 0;
                    self.successes = self.successes.saturating_add(1);
                    if self.successes >= self.spec.success_threshold {
                        self.passing = Some(true);
                    }
                } else if now < self.grace_until {
                    self.successes = 0;
                } else {
                    self.successes = 0;
                    self.failures = self.failures.saturating_add(1);
                    if self.failures >= self.spec.failure_threshold {
                        self.passing = Some(false);
                    }
                }
                self.due = Some(self.spec.steady_after(now));
            }
            Cadence::Recheck => {
                self.passing = Some(ok);
                if ok {
                    self.successes = 1;
                } else {
                    self.failures = 1;
                }
                self.cadence = Cadence::Steady;
                self.due = Some(self.spec.steady_after(now));
            }
        }
        true
    }

    /// Failures in a row that counted.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Successes in a row.
    pub fn successes(&self) -> u32 {
        self.successes
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn spec(f: u32, s: u32) -> CheckSpec {
        CheckSpec {
            name: "c".into(),
            interval_ms: 10_000,
            failure_threshold: f,
            success_threshold: s,
            start_period_ms: 0,
            remedy: None,
            phase_ms: 0,
        }
    }

    fn probe(c: &mut CheckRun, now: u64, ok: bool) {
        let token = now + 1_000_000;
        c.due = Some(now);
        assert!(c.take_due(now, token));
        assert!(c.on_result(token, ok, false, String::new(), now));
    }

    #[test]
    fn steady_thresholds() {
        let mut c = CheckRun::new(spec(3, 2));
        c.reset(Cadence::Steady, 0);
        probe(&mut c, 1, false);
        probe(&mut c, 2, false);
        assert_eq!(c.passing, None);
        probe(&mut c, 3, false);
        assert_eq!(c.passing, Some(false));
        probe(&mut c, 4, true);
        assert_eq!(c.passing, Some(false));
        probe(&mut c, 5, true);
        assert_eq!(c.passing, Some(true));
        // A success in between resets the failure count.
        probe(&mut c, 6, false);
        probe(&mut c, 7, true);
        probe(&mut c, 8, false);
        probe(&mut c, 9, false);
        assert_eq!(c.passing, Some(true));
        probe(&mut c, 10, false);
        assert_eq!(c.passing, Some(false));
        assert_eq!(c.due, Some(10_000), "the next point of its grid");
    }

    #[test]
    fn steady_probes_keep_their_place_in_the_interval() {
        let mut c = CheckRun::new(spec(3, 1).spread("mcq/https"));
        let phase = c.spec.phase_ms;
        assert!(phase < 10_000);
        assert_eq!(phase, spec(3, 1).spread("mcq/https").phase_ms, "stable");
        assert_ne!(phase, spec(3, 1).spread("mcq/tcp").phase_ms);
        c.reset(Cadence::Fast, 0);
        probe(&mut c, 1234, true);
        c.set_cadence(Cadence::Steady, 1234);
        let first = c.due.unwrap();
        assert_eq!(first % 10_000, phase);
        assert!(
            (1235..=1234 + 10_000).contains(&first),
            "within an interval"
        );
        // Whatever each probe takes, the next one is due on the grid.
        let mut now = first;
        for took in [0, 3, 2_000, 4_999, 1, 7_000, 0] {
            let token = now + 1;
            assert!(c.take_due(now, token));
            assert!(c.on_result(token, true, false, String::new(), now + took));
            let due = c.due.unwrap();
            assert_eq!(due % 10_000, phase);
            assert!(due >= now + took + 5_000, "at least half an interval after");
            assert!(due <= now + took + 15_000);
            now = due;
        }
    }

    #[test]
    fn fast_retries_and_does_not_count_failures() {
        let mut c = CheckRun::new(spec(1, 2));
        c.reset(Cadence::Fast, 0);
        assert!(c.take_due(0, 7));
        assert!(!c.take_due(0, 8), "one probe at a time");
        assert!(c.on_result(7, false, false, "refused".into(), 5));
        assert_eq!(c.passing, None, "failures do not count while starting");
        assert_eq!(c.due, Some(5 + FIRST_RETRY_PAUSE_MS));
        // The pause stays short for the fast window...
        probe(&mut c, 40, false);
        assert_eq!(c.due, Some(40 + FIRST_RETRY_PAUSE_MS));
        probe(&mut c, FAST_WINDOW_MS - 1, false);
        assert_eq!(c.due, Some(FAST_WINDOW_MS - 1 + FIRST_RETRY_PAUSE_MS));
        // ...then doubles up to the longest pause.
        probe(&mut c, FAST_WINDOW_MS, false);
        assert_eq!(c.due, Some(FAST_WINDOW_MS + FIRST_RETRY_PAUSE_MS));
        probe(&mut c, FAST_WINDOW_MS + 100, false);
        assert_eq!(c.due, Some(FAST_WINDOW_MS + 100 + 2 * FIRST_RETRY_PAUSE_MS));
        probe(&mut c, FAST_WINDOW_MS + 200, false);
        probe(&mut c, FAST_WINDOW_MS + 300, false);
        assert_eq!(c.due, Some(FAST_WINDOW_MS + 300 + MAX_RETRY_PAUSE_MS));
        probe(&mut c, FAST_WINDOW_MS + 400, true);
        assert_eq!(
            c.due,
            Some(FAST_WINDOW_MS + 400),
            "a success is retried at once"
        );
        probe(&mut c, FAST_WINDOW_MS + 401, true);
        assert_eq!(c.passing, Some(true));
    }

    #[test]
    fn stale_results_are_ignored() {
        let mut c = CheckRun::new(spec(1, 1));
        c.reset(Cadence::Steady, 0);
        assert!(c.take_due(0, 1));
        c.reset(Cadence::Fast, 10);
        assert!(!c.on_result(1, false, false, String::new(), 11));
        assert_eq!(c.passing, None);
        assert_eq!(c.attempts, 0);
    }

    #[test]
    fn recheck_decides_on_the_first_result_and_grace_applies_when_steady() {
        let mut c = CheckRun::new(spec(3, 3));
        c.reset(Cadence::Steady, 0);
        c.set_cadence(Cadence::Recheck, 0);
        probe(&mut c, 1, false);
        assert_eq!(c.passing, Some(false));
        assert_eq!(c.cadence, Cadence::Steady);
        let mut c = CheckRun::new(CheckSpec {
            start_period_ms: 1000,
            ..spec(1, 1)
        });
        c.reset(Cadence::Fast, 0);
        c.set_cadence(Cadence::Steady, 0);
        probe(&mut c, 500, false);
        assert_eq!(c.passing, None, "inside the start period");
        probe(&mut c, 1500, false);
        assert_eq!(c.passing, Some(false));
    }

    #[test]
    fn waiting_answers_neither_pass_nor_fail_and_poll_within_a_second() {
        let mut c = CheckRun::new(spec(1, 1));
        c.reset(Cadence::Steady, 0);
        for now in [1, 2, 3] {
            assert!(c.take_due(now, now));
            assert!(c.on_result(now, false, true, "HTTP 503 sealed".into(), now));
            assert_eq!(c.passing, None, "a waiting answer is not a failure");
            assert_eq!(c.failures(), 0);
            assert_eq!(c.due, Some(now + WAIT_POLL_MS));
            c.due = Some(now + 1);
        }
        probe(&mut c, 10, true);
        assert_eq!(c.passing, Some(true));
        assert!(!c.last.as_ref().is_some_and(|l| l.waiting));
    }
}
