//! Health gating: run a set of services' checks at a fast cadence until every
//! service is healthy or a deadline passes. Shared by `recover` (which also
//! starts the units) and `gate` (which only waits, as the gate units run it).

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::check::{self, Outcome};
use crate::config::{Check, Config};

/// Longest pause between two attempts of a failing check while gating.
pub const MAX_RETRY_PAUSE: Duration = Duration::from_millis(100);
/// First pause after a failed attempt; doubles up to [`MAX_RETRY_PAUSE`].
pub const FIRST_RETRY_PAUSE: Duration = Duration::from_millis(25);

/// The latest result of one check while gating.
#[derive(Debug, Clone)]
pub struct CheckState {
    /// Service the check belongs to.
    pub service: String,
    /// Check name.
    pub check: String,
    /// Latest outcome, `None` before the first attempt finished.
    pub last: Option<Outcome>,
    /// Consecutive successes so far.
    pub successes: u32,
    /// Successes needed.
    pub needed: u32,
    /// Attempts made.
    pub attempts: u32,
}

impl CheckState {
    /// Whether this check has passed (enough consecutive successes).
    pub fn passed(&self) -> bool {
        self.successes >= self.needed
    }
}

/// Events emitted while gating, in order.
#[derive(Debug, Clone)]
pub enum GateEvent {
    /// A check finished an attempt.
    Attempt(CheckState),
    /// Every check of `service` has passed.
    ServiceHealthy {
        /// Service name.
        service: String,
        /// Time since gating began.
        after: Duration,
    },
}

/// Result of gating a set of services.
#[derive(Debug, Clone)]
pub struct GateResult {
    /// Per service: time from gating start to healthy, or `None` if it never got there.
    pub healthy_after: BTreeMap<String, Option<Duration>>,
    /// Final state of every check.
    pub checks: Vec<CheckState>,
}

impl GateResult {
    /// True when every service became healthy.
    pub fn all_healthy(&self) -> bool {
        self.healthy_after.values().all(Option::is_some)
    }

    /// Human-readable reasons of the checks that did not pass.
    pub fn failing_reasons(&self) -> Vec<String> {
        self.checks
            .iter()
            .filter(|c| !c.passed())
            .map(|c| {
                let why = c
                    .last
                    .as_ref()
                    .map_or("no attempt finished before the deadline".to_string(), |o| {
                        o.detail.clone()
                    });
                format!("{}/{}: {}", c.service, c.check, why)
            })
            .collect()
    }
}

/// Run the checks of `services` until all pass or `deadline`, calling `on_event`
/// for every attempt and every service that becomes healthy. Checks run
/// concurrently; a failing check is retried after a short pause that starts at
/// [`FIRST_RETRY_PAUSE`] and doubles up to [`MAX_RETRY_PAUSE`]. A service
/// without checks is healthy at once.
pub async fn wait_healthy(
    cfg: &Config,
    services: &[String],
    deadline: Instant,
    mut on_event: impl FnMut(GateEvent),
) -> GateResult {
    let start = Instant::now();
    let mut states: Vec<CheckState> = Vec::new();
    let mut specs: Vec<Check> = Vec::new();
    let mut healthy_after: BTreeMap<String, Option<Duration>> = BTreeMap::new();
    for name in services {
        let checks = cfg
            .services
            .get(name)
            .map(|s| s.checks.as_slice())
            .unwrap_or_default();
        healthy_after.insert(
            name.clone(),
            if checks.is_empty() {
                Some(Duration::ZERO)
            } else {
                None
            },
        );
        if checks.is_empty() {
            on_event(GateEvent::ServiceHealthy {
                service: name.clone(),
                after: Duration::ZERO,
            });
        }
        for c in checks {
            states.push(CheckState {
                service: name.clone(),
                check: c.name.clone(),
                last: None,
                successes: 0,
                needed: c.success_threshold.max(1),
                attempts: 0,
            });
            specs.push(c.clone());
        }
    }

    let mut tasks: JoinSet<(usize, Outcome)> = JoinSet::new();
    for (i, spec) in specs.iter().enumerate() {
        spawn_attempt(&mut tasks, i, spec.clone(), Duration::ZERO);
    }
    let mut pauses: Vec<Duration> = vec![FIRST_RETRY_PAUSE; specs.len()];

    while !tasks.is_empty() {
        let joined = tokio::select! {
            j = tasks.join_next() => j,
            () = tokio::time::sleep_until(deadline) => break,
        };
        let Some(Ok((i, outcome))) = joined else {
            continue;
        };
        let st = &mut states[i];
        st.attempts += 1;
        if outcome.ok {
            st.successes += 1;
            pauses[i] = FIRST_RETRY_PAUSE;
        } else {
            st.successes = 0;
        }
        st.last = Some(outcome);
        on_event(GateEvent::Attempt(st.clone()));
        if st.passed() {
            let svc = st.service.clone();
            let done = states
                .iter()
                .filter(|c| c.service == svc)
                .all(CheckState::passed);
            if done && healthy_after.get(&svc).is_some_and(Option::is_none) {
                let after = start.elapsed();
                healthy_after.insert(svc.clone(), Some(after));
                on_event(GateEvent::ServiceHealthy {
                    service: svc,
                    after,
                });
            }
            continue;
        }
        let ok = states[i].last.as_ref().is_some_and(|o| o.ok);
        let pause = if ok { Duration::ZERO } else { pauses[i] };
        if !ok {
            pauses[i] = (pauses[i] * 2).min(MAX_RETRY_PAUSE);
        }
        if Instant::now() + pause < deadline {
            spawn_attempt(&mut tasks, i, specs[i].clone(), pause);
        }
    }
    tasks.abort_all();
    GateResult {
        healthy_after,
        checks: states,
    }
}

fn spawn_attempt(tasks: &mut JoinSet<(usize, Outcome)>, i: usize, spec: Check, pause: Duration) {
    tasks.spawn(async move {
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
        (i, check::probe(&spec).await)
    });
}
