//! An external (check-only) service as a stage member and as an upstream:
//! the service of another node (issue 13, part 4). Its stage is gated on its
//! checks, later stages start only once it is healthy, nothing is ever
//! started, restarted or stopped for it, and a dependent failing while it is
//! down is held, not restarted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeSet, VecDeque};

use super::history::PersistedState;
use super::model::{Goal, Life, StagePhase, World};
use super::step::{next_deadline, step, Effect, Event};
use crate::drive::UnitState;

/// A small driver: jobs succeed, probes pass unless the service is `bad`.
struct Node {
    w: World,
    now: u64,
    queue: VecDeque<Effect>,
    log: Vec<(u64, Effect)>,
    bad: BTreeSet<String>,
    activations: u64,
}

impl Node {
    fn new() -> Node {
        let cfg = crate::plan::tests::sample_with_external_stage();
        let plan = crate::plan::build(&cfg).unwrap();
        Node {
            w: World::new(&cfg, &plan, Goal::Daemon, &PersistedState::default()),
            now: 1_000,
            queue: VecDeque::new(),
            log: Vec::new(),
            bad: BTreeSet::new(),
            activations: 0,
        }
    }

    fn id(&self, name: &str) -> usize {
        self.w.find(name).unwrap()
    }

    fn ev(&mut self, e: Event) {
        let fx = step(&mut self.w, e, self.now);
        self.log.extend(fx.iter().map(|f| (self.now, f.clone())));
        self.queue.extend(fx);
    }

    fn drain(&mut self) {
        let mut guard = 0;
        while let Some(fx) = self.queue.pop_front() {
            guard += 1;
            assert!(guard < 10_000, "effects do not settle");
            match fx {
                Effect::Preflight { stage, token, .. } => self.ev(Event::PreflightDone {
                    stage,
                    token,
                    problems: Vec::new(),
                }),
                Effect::Start { svc, token, .. } | Effect::Restart { svc, token, .. } => {
                    self.activations += 1;
                    let state = UnitState {
                        load_state: "loaded".into(),
                        active_state: "active".into(),
                        sub_state: "running".into(),
                        result: "success".into(),
                        inactive_exit_usec: self.activations,
                        ..UnitState::default()
                    };
                    self.ev(Event::JobDone {
                        svc,
                        token,
                        result: Ok(("done".into(), state)),
                    });
                }
                Effect::Probe { svc, check, token } => {
                    let ok = !self.bad.contains(&self.w.services[svc].info.name);
                    self.ev(Event::ProbeDone {
                        svc,
                        check,
                        token,
                        ok,
                        waiting: false,
                        detail: if ok { "ok".into() } else { "refused".into() },
                    });
                }
                _ => {}
            }
        }
    }

    fn run_for(&mut self, ms: u64) {
        let end = self.now + ms;
        while self.now < end {
            let next = next_deadline(&self.w).unwrap_or(end);
            self.now = next.clamp(self.now, end);
            self.ev(Event::Tick);
            self.drain();
        }
    }

    /// When the first effect matching `f` was issued.
    fn first(&self, f: impl Fn(&Effect) -> bool) -> Option<u64> {
        self.log.iter().find(|(_, e)| f(e)).map(|(t, _)| *t)
    }

    fn restarts_or_starts_of(&self, svc: usize) -> usize {
        self.log
            .iter()
            .filter(|(_, e)| {
                matches!(e, Effect::Start { svc: s, .. } | Effect::Restart { svc: s, .. } if *s == svc)
            })
            .count()
    }
}

#[test]
fn the_next_stage_starts_only_once_the_external_member_is_healthy() {
    let mut n = Node::new();
    let (idp, proxy) = (n.id("idp"), n.id("proxy"));
    assert_eq!(n.w.services[idp].info.stage, Some(1));
    assert_eq!(n.w.services[idp].info.unit, None);
    n.bad.insert("idp".into());
    n.ev(Event::Begin);
    n.drain();
    n.run_for(60_000);
    // Foundation is up; identity gates on idp, which is not healthy yet.
    assert_eq!(n.w.stages[0].phase, StagePhase::Healthy);
    assert!(matches!(n.w.stages[1].phase, StagePhase::Gating { .. }));
    assert!(matches!(n.w.services[idp].life, Life::Starting { .. }));
    assert_eq!(n.w.stages[2].phase, StagePhase::Pending);
    assert_eq!(
        n.first(|e| matches!(e, Effect::Start { svc, .. } if *svc == proxy)),
        None
    );
    // Its stage times out (120 s): failed, later stages wait; still no job
    // of any kind for idp.
    n.run_for(120_000);
    assert!(matches!(n.w.stages[1].phase, StagePhase::Failed { .. }));
    assert!(matches!(
        n.w.services[idp].life,
        Life::Failing { restart_at: None }
    ));
    assert!(matches!(n.w.stages[2].phase, StagePhase::Blocked { by: 1 }));
    // The other node brings it up: identity heals, the ramp goes on.
    n.bad.clear();
    let healed_at = n.now;
    n.run_for(60_000);
    assert!(matches!(n.w.services[idp].life, Life::Healthy { .. }));
    assert!(n.w.stages.iter().all(|s| s.phase == StagePhase::Healthy));
    let proxy_started = n
        .first(|e| matches!(e, Effect::Start { svc, .. } if *svc == proxy))
        .unwrap();
    assert!(proxy_started >= healed_at);
    assert_eq!(n.restarts_or_starts_of(idp), 0);
    // The identity stage's gate unit is started like any other (it runs
    // idp's checks once more).
    assert!(n.first(|e| *e == Effect::StartGate(1)).is_some());
}

#[test]
fn a_dependent_failing_while_the_external_upstream_is_down_is_held() {
    let mut n = Node::new();
    let (idp, app, dns) = (n.id("idp"), n.id("app"), n.id("dns"));
    n.ev(Event::Begin);
    n.drain();
    n.run_for(60_000);
    assert!(n.w.stages.iter().all(|s| s.phase == StagePhase::Healthy));
    let restarts_before = n
        .log
        .iter()
        .filter(|(_, e)| matches!(e, Effect::Restart { .. }))
        .count();
    assert_eq!(restarts_before, 0);

    // idp goes down on its node; app (requires idp) fails with it.
    n.bad.insert("idp".into());
    n.bad.insert("app".into());
    n.run_for(120_000);
    assert!(matches!(
        n.w.services[idp].life,
        Life::Failing { restart_at: None }
    ));
    assert_eq!(n.w.services[app].life, Life::Held { by: idp });
    // Stage identity is no longer healthy only in its members' lifecycles;
    // the ramp is done and nothing was restarted, nothing started for idp.
    assert!(n
        .log
        .iter()
        .all(|(_, e)| !matches!(e, Effect::Restart { .. })));
    assert_eq!(n.restarts_or_starts_of(idp), 0);
    assert!(matches!(n.w.services[dns].life, Life::Healthy { .. }));
    // A restart asked for by an operator is refused for idp.
    n.ev(Event::RestartNow(idp));
    assert!(n
        .queue
        .iter()
        .any(|e| matches!(e, Effect::Reply(Err(m)) if m.contains("external"))));
    n.drain();

    // idp is back: app is re-checked and healthy without a restart.
    n.bad.clear();
    n.run_for(60_000);
    assert!(matches!(n.w.services[idp].life, Life::Healthy { .. }));
    assert!(matches!(n.w.services[app].life, Life::Healthy { .. }));
    assert!(n
        .log
        .iter()
        .all(|(_, e)| !matches!(e, Effect::Restart { .. })));
    assert_eq!(n.w.services[app].history.total_restarts, 0);
}

#[test]
fn a_failing_external_member_is_reported_down_never_held() {
    let mut n = Node::new();
    let (idp, app, dns) = (n.id("idp"), n.id("app"), n.id("dns"));
    assert!(n.w.services[idp].info.upstreams.is_empty());
    assert!(n.w.services[app].info.upstreams.contains(idp));
    n.ev(Event::Begin);
    n.drain();
    n.run_for(60_000);
    assert!(n.w.stages.iter().all(|s| s.phase == StagePhase::Healthy));
    // This node's DNS fails while the other node's idp is down too: idp is
    // down (not held by dns: nothing here would restart it anyway), app is
    // held by the root-most troubled upstream.
    n.bad.insert("dns".into());
    n.bad.insert("idp".into());
    n.bad.insert("app".into());
    n.run_for(45_000);
    assert!(
        matches!(n.w.services[idp].life, Life::Failing { restart_at: None }),
        "{:?}",
        n.w.services[idp].life
    );
    assert!(
        matches!(n.w.services[app].life, Life::Held { by } if by == dns),
        "{:?}",
        n.w.services[app].life
    );
    assert!(n
        .log
        .iter()
        .all(|(_, e)| !matches!(e, Effect::Restart { svc, .. } if *svc == idp || *svc == app)));
}
