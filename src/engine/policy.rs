//! The restart policy's arithmetic, pure: backoff delays, the escalation
//! threshold (monit-like "N restarts within a window"), the backoff reset
//! after a healthy period, and each service's upstreams (for the
//! dependency-aware hold).

use std::collections::BTreeMap;
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

/// A set of services by id (their position in plan order), one bit each:
/// iterating it yields ids in plan order, so the first match is the
/// root-most. For n services a set takes n/8 bytes (1000 services: 125
/// bytes), where a list of every transitive upstream grew with the square
/// of a stage's size (issue 15: 475 236 entries for 1000 services in 20
/// stages).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SvcSet {
    bits: Vec<u64>,
}

impl SvcSet {
    fn with_len(n: usize) -> SvcSet {
        SvcSet {
            bits: vec![0; n.div_ceil(64)],
        }
    }

    fn insert(&mut self, id: usize) {
        if let Some(w) = self.bits.get_mut(id / 64) {
            *w |= 1 << (id % 64);
        }
    }

    fn remove(&mut self, id: usize) {
        if let Some(w) = self.bits.get_mut(id / 64) {
            *w &= !(1 << (id % 64));
        }
    }

    fn union_with(&mut self, other: &SvcSet) {
        for (a, b) in self.bits.iter_mut().zip(&other.bits) {
            *a |= b;
        }
    }

    /// Whether `id` is in the set.
    pub fn contains(&self, id: usize) -> bool {
        self.bits
            .get(id / 64)
            .is_some_and(|w| w & (1 << (id % 64)) != 0)
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.bits.iter().all(|&w| w == 0)
    }

    /// The ids in the set, ascending (plan order).
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.bits.iter().enumerate().flat_map(|(i, &w)| {
            let mut rest = w;
            std::iter::from_fn(move || {
                if rest == 0 {
                    return None;
                }
                let bit = rest.trailing_zeros() as usize;
                rest &= rest - 1;
                Some(i * 64 + bit)
            })
        })
    }
}

/// Per service (indexed by its position in `plan.order`), every upstream
/// (transitively: every member of every earlier stage, also through empty
/// stages, plus `after`/`requires` edges). An external service (no unit:
/// another node's) has none: it is never restarted, so there is nothing to
/// hold, and when it fails it is reported as down, not as held by a service
/// of this node. It is an upstream of others like any service.
///
/// One depth-first pass over the services plus one node per stage ("every
/// stage before k"), each set the union of its dependencies' sets: linear in
/// services + edges, times n/64 per union.
pub fn upstream_sets(plan: &Plan) -> Vec<SvcSet> {
    let n = plan.order.len();
    let pos: BTreeMap<&str, usize> = plan
        .order
        .iter()
        .enumerate()
        .map(|(i, name)| (name.as_str(), i))
        .collect();
    let svc_at = |i: usize| plan.order.get(i).and_then(|name| plan.services.get(name));
    // Nodes 0..n: the services; n + k: every member of the stages before k
    // (with their upstreams). A dependency is (node, whether the node itself
    // is a member: true for a service, false for a stage node).
    let deps = |v: usize| -> Vec<(usize, bool)> {
        if v < n {
            let Some(svc) = svc_at(v) else {
                return Vec::new();
            };
            let mut d: Vec<(usize, bool)> = svc
                .edges
                .iter()
                .filter_map(|e| pos.get(e.upstream.as_str()).map(|&u| (u, true)))
                .collect();
            if let Some(k) = svc.stage.filter(|&k| k > 0) {
                d.push((n + k, false));
            }
            d
        } else {
            let k = v - n;
            let mut d: Vec<(usize, bool)> = Vec::new();
            if let Some(prev) = k.checked_sub(1) {
                if prev > 0 {
                    d.push((n + prev, false));
                }
                if let Some(st) = plan.stages.get(prev) {
                    d.extend(
                        st.services
                            .iter()
                            .filter_map(|m| pos.get(m.as_str()).map(|&u| (u, true))),
                    );
                }
            }
            d
        }
    };
    let total = n + plan.stages.len();
    let mut sets: Vec<SvcSet> = vec![SvcSet::with_len(n); total];
    // 0: not visited, 1: on the stack, 2: done. A cycle (refused by
    // validation) only leaves a set short.
    let mut state = vec![0u8; total];
    for root in 0..n {
        let mut stack = vec![(root, false)];
        while let Some((v, expanded)) = stack.pop() {
            if expanded {
                let mut set = SvcSet::with_len(n);
                for (d, member) in deps(v) {
                    if state.get(d) == Some(&2) {
                        if let Some(ds) = sets.get(d) {
                            set.union_with(ds);
                        }
                    }
                    if member {
                        set.insert(d);
                    }
                }
                if let Some(slot) = sets.get_mut(v) {
                    *slot = set;
                }
                state[v] = 2;
                continue;
            }
            if state.get(v) != Some(&0) {
                continue;
            }
            state[v] = 1;
            stack.push((v, true));
            for (d, _) in deps(v) {
                if state.get(d) == Some(&0) {
                    stack.push((d, false));
                }
            }
        }
    }
    sets.truncate(n);
    for (i, set) in sets.iter_mut().enumerate() {
        set.remove(i);
        if svc_at(i).is_none_or(|s| s.unit.is_none()) {
            *set = SvcSet::with_len(n);
        }
    }
    sets
}

/// [`upstream_sets`] by name, each list in plan order (root-most first).
pub fn upstreams(plan: &Plan) -> BTreeMap<String, Vec<String>> {
    upstream_sets(plan)
        .iter()
        .zip(&plan.order)
        .map(|(set, name)| {
            let list = set
                .iter()
                .filter_map(|i| plan.order.get(i).cloned())
                .collect();
            (name.clone(), list)
        })
        .collect()
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
