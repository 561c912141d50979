//! The persisted per-service history the engine decides with: restart
//! timestamps within the escalation window, backoff level, the current
//! escalation, which escalation events already had their actions run and
//! their remedy tried, and the total restart count. Pure data; the daemon
//! shell stores it (`watch::state::StateStore`). What survives a daemon
//! restart or a reboot is decided here ([`PersistedState::restore`]).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How many handled event ids are remembered per service.
const EVENTS_KEPT: usize = 32;

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
    /// Id of the current "waiting for an operator" episode (its notice and
    /// hook went out), until the service is healthy.
    pub waiting: Option<String>,
    /// Its unit's `InactiveExitTimestamp` (µs) when it was last seen
    /// healthy: a daemon restarted on the same boot that finds the unit
    /// still running that same instance judges it as healthy (steady
    /// checks, thresholds) instead of as starting (which would give a sick
    /// service its stage's whole timeout). Dropped on a reboot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthy_instance: Option<u64>,
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
    /// The kernel's boot id when the state was last saved (tells a daemon
    /// restart from a reboot; see [`PersistedState::restore`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
}

impl PersistedState {
    /// What of a loaded state survives into a new daemon run at `now_ms`
    /// (boot `boot_id`), decided once at start:
    /// - escalations, handled event ids, tried remedies and totals always
    ///   survive (an operator must still `ack`; actions never run twice);
    /// - restart timestamps survive while inside the escalation window (a
    ///   crash loop across daemon restarts or reboots still escalates);
    /// - the backoff level is a delay earned by recent restarts, not a
    ///   count: it becomes the number of restarts within `backoff_reset`
    ///   before now (no more than it was), and 0 after a reboot, whose
    ///   fresh start is itself the pause the backoff was for.
    pub fn restore(
        &mut self,
        now_ms: u64,
        boot_id: Option<&str>,
        policy: &crate::config::WatchPolicy,
    ) {
        let same_boot = match (self.boot_id.as_deref(), boot_id) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        };
        let recent_from = now_ms.saturating_sub(duration_ms(policy.backoff_reset));
        for rec in self.services.values_mut() {
            rec.prune(now_ms, policy.escalate_window);
            if !same_boot {
                rec.healthy_instance = None;
            }
            rec.backoff_level = if same_boot {
                let recent = rec.restarts.iter().filter(|&&t| t >= recent_from).count();
                rec.backoff_level
                    .min(u32::try_from(recent).unwrap_or(u32::MAX))
            } else {
                0
            };
        }
        self.boot_id = boot_id.map(str::to_owned);
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::config::WatchPolicy;

    #[test]
    fn restore_keeps_escalations_and_the_window_but_not_old_delays() {
        let policy = WatchPolicy {
            backoff_reset: Duration::from_secs(60),
            ..WatchPolicy::default()
        };
        let w = policy.escalate_window;
        let mut st = PersistedState {
            boot_id: Some("boot-a".into()),
            ..PersistedState::default()
        };
        let rec = st.services.entry("mcq".into()).or_default();
        for t in [1_000_000, 1_010_000, 1_020_000] {
            rec.record_restart(t, w);
        }
        rec.escalated = Some(Escalation {
            event_id: "mcq-1".into(),
            reason: "crash loop".into(),
            at_ms: 1_020_000,
        });
        // A daemon restart 6 minutes later, same boot: the delay earned
        // before is gone (no restart within backoff_reset), the window and
        // the escalation stay.
        let mut same = st.clone();
        same.restore(1_020_000 + 360_000, Some("boot-a"), &policy);
        let r = &same.services["mcq"];
        assert_eq!(r.backoff_level, 0);
        assert_eq!(r.restarts.len(), 3);
        assert!(r.escalated.is_some());
        // Right after: the level is the recent restarts.
        let mut soon = st.clone();
        soon.restore(1_020_000 + 5_000, Some("boot-a"), &policy);
        assert_eq!(soon.services["mcq"].backoff_level, 3);
        // A reboot: no earned delay at all, history kept.
        let mut reboot = st.clone();
        reboot.restore(1_020_000 + 5_000, Some("boot-b"), &policy);
        assert_eq!(reboot.services["mcq"].backoff_level, 0);
        assert_eq!(reboot.services["mcq"].restarts.len(), 3);
        assert_eq!(reboot.boot_id.as_deref(), Some("boot-b"));
        // Past the escalation window: the timestamps are pruned.
        let mut late = st;
        late.restore(1_020_000 + 700_000, Some("boot-a"), &policy);
        assert!(late.services["mcq"].restarts.is_empty());
        assert!(late.services["mcq"].escalated.is_some());
    }

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
}
