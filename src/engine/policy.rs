//! The restart policy's arithmetic, pure: backoff delays, the escalation
//! threshold (monit-like "N restarts within a window"), the backoff reset
//! after a healthy period, and each service's upstreams (for the
//! dependency-aware hold).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::config::WatchPolicy;
use crate::plan::Plan;

/// Restart delay for a service at backoff `level` (number of restarts since
/// the last reset): none for the first restart (a service that broke after
/// being fine is restarted at once), then `backoff_initial * 2^(level - 1)`,
/// capped at `backoff_max`: 0, 1 s, 2 s, 4 s, ... with the defaults.
pub fn backoff_delay(policy: &WatchPolicy, level: u32) -> Duration {
    let Some(doublings) = level.checked_sub(1) else {
        return Duration::ZERO;
    };
    let factor = 2u32.checked_pow(doublings.min(31)).unwrap_or(u32::MAX);
    policy
        .backoff_initial
        .checked_mul(factor)
        .unwrap_or(policy.backoff_max)
        .min(policy.backoff_max)
}

/// Whether `restarts_in_window` restarts within the window reach the
/// escalation threshold (`escalate_after`; 0 never escalates).
pub fn should_escalate(policy: &WatchPolicy, restarts_in_window: u32) -> bool {
    policy.escalate_after > 0 && restarts_in_window >= policy.escalate_after
}

/// Whether a service healthy for `healthy_for` has earned a reset of its
/// backoff level and restart history.
pub fn should_reset(policy: &WatchPolicy, healthy_for: Duration) -> bool {
    healthy_for >= policy.backoff_reset
}

/// Per service, every upstream (transitively: earlier stages through the
/// stage edges, plus `after`/`requires` edges), listed in plan order, so the
/// first failing one is the root-most. An external service (no unit: another
/// node's) has none: it is never restarted, so there is nothing to hold, and
/// when it fails it is reported as down, not as held by a service of this
/// node. It is an upstream of others like any service.
pub fn upstreams(plan: &Plan) -> BTreeMap<String, Vec<String>> {
    let pos: BTreeMap<&str, usize> = plan
        .order
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    let mut out = BTreeMap::new();
    for (name, svc) in &plan.services {
        if svc.unit.is_none() {
            out.insert(name.clone(), Vec::new());
            continue;
        }
        let mut seen: BTreeSet<&str> = BTreeSet::new();
        let mut todo: Vec<&str> = vec![name.as_str()];
        // Services of every earlier stage, also through empty stages.
        if let Some(idx) = plan.services.get(name).and_then(|s| s.stage) {
            for st in plan.stages.iter().take(idx) {
                for s in &st.services {
                    if seen.insert(s.as_str()) {
                        todo.push(s.as_str());
                    }
                }
            }
        }
        while let Some(n) = todo.pop() {
            if let Some(svc) = plan.services.get(n) {
                for up in plan.direct_upstreams(svc) {
                    if seen.insert(up) {
                        todo.push(up);
                    }
                }
            }
        }
        seen.remove(name.as_str());
        let mut list: Vec<String> = seen.into_iter().map(str::to_owned).collect();
        list.sort_by_key(|n| pos.get(n.as_str()).copied().unwrap_or(usize::MAX));
        out.insert(name.clone(), list);
    }
    out
}

/// The first (root-most) of `upstreams` for which `failing` is true.
pub fn failing_upstream(upstreams: &[String], failing: impl Fn(&str) -> bool) -> Option<String> {
    upstreams.iter().find(|u| failing(u)).cloned()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn policy() -> WatchPolicy {
        WatchPolicy::default()
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let p = policy();
        assert_eq!(backoff_delay(&p, 0), Duration::ZERO);
        assert_eq!(backoff_delay(&p, 1), Duration::from_secs(1));
        assert_eq!(backoff_delay(&p, 2), Duration::from_secs(2));
        assert_eq!(backoff_delay(&p, 4), Duration::from_secs(8));
        assert_eq!(backoff_delay(&p, 9), Duration::from_secs(256));
        assert_eq!(backoff_delay(&p, 10), Duration::from_secs(300));
        assert_eq!(backoff_delay(&p, 40), Duration::from_secs(300));
        assert_eq!(backoff_delay(&p, u32::MAX), Duration::from_secs(300));
    }

    #[test]
    fn escalation_threshold() {
        let mut p = policy();
        assert!(!should_escalate(&p, 4));
        assert!(should_escalate(&p, 5));
        assert!(should_escalate(&p, 6));
        p.escalate_after = 0;
        assert!(!should_escalate(&p, 100));
        assert!(!should_reset(&policy(), Duration::from_secs(599)));
        assert!(should_reset(&policy(), Duration::from_secs(600)));
    }

    #[test]
    fn upstreams_are_transitive_and_root_first() {
        let cfg = crate::plan::tests::sample();
        let plan = crate::plan::build(&cfg).unwrap();
        let ups = upstreams(&plan);
        assert!(ups["dns"].is_empty());
        assert!(ups["idp"].is_empty());
        assert_eq!(ups["proxy"], vec!["dns"]);
        assert_eq!(ups["reg"], vec!["dns", "proxy"]);
        // web: earlier stages, plus `requires = app` (same stage).
        assert_eq!(ups["web"], vec!["dns", "proxy", "reg", "app"]);
        assert_eq!(ups["app"], vec!["dns", "proxy", "reg"]);
        // The root-most failing upstream is reported.
        assert_eq!(
            failing_upstream(&ups["web"], |u| u == "reg" || u == "dns"),
            Some("dns".into())
        );
    }

    #[test]
    fn root_most_failing_upstream() {
        let ups = vec!["mcns".to_string(), "mcr".to_string(), "mcias".to_string()];
        assert_eq!(
            failing_upstream(&ups, |u| u == "mcr" || u == "mcias"),
            Some("mcr".into())
        );
        assert_eq!(failing_upstream(&ups, |_| false), None);
    }
}
