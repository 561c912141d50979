//! The core's rules, tested without I/O: scenario tests and property tests
//! over random event sequences. A small driver answers the effects the way
//! systemd, podman and the probes would, as the test says.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeSet, VecDeque};

use proptest::prelude::*;

use super::history::PersistedState;
use super::model::{unit_is_down, Goal, Life, StagePhase, World};
use super::step::{next_deadline, step, Effect, Event, Note};
use crate::config::FailurePolicy;
use crate::drive::UnitState;

fn state(active: &str, sub: &str, result: &str, exit_usec: u64) -> UnitState {
    UnitState {
        load_state: "loaded".into(),
        active_state: active.into(),
        sub_state: sub.into(),
        result: result.into(),
        inactive_exit_usec: exit_usec,
        ..UnitState::default()
    }
}

/// Drives a world: answers effects like a healthy host unless told otherwise.
struct Driver {
    w: World,
    now: u64,
    queue: VecDeque<Effect>,
    log: Vec<Effect>,
    /// Services whose probes fail.
    bad: BTreeSet<String>,
    /// Services whose start/restart jobs fail.
    broken: BTreeSet<String>,
    /// Preflight problems for these services.
    preflight_bad: BTreeSet<String>,
    /// Services whose probes answer "waiting for an operator".
    sealed: BTreeSet<String>,
    /// Services whose container another controller runs: a start or
    /// restart without `replace` is answered with `Event::Foreign`.
    foreign: BTreeSet<String>,
    /// The running instance (`InactiveExitTimestamp`) of each unit.
    instances: std::collections::BTreeMap<String, u64>,
    /// Start jobs find the units running (a daemon restarted): they answer
    /// with the running instance.
    resume: bool,
    activations: u64,
}

impl Driver {
    fn new(goal: Goal) -> Driver {
        Driver::with(goal, |_| {})
    }

    fn with(goal: Goal, edit: impl FnOnce(&mut crate::config::Config)) -> Driver {
        let mut cfg = crate::plan::tests::sample();
        edit(&mut cfg);
        let plan = crate::plan::build(&cfg).unwrap();
        let w = World::new(&cfg, &plan, goal, &PersistedState::default());
        Driver {
            w,
            now: 1_000,
            queue: VecDeque::new(),
            log: Vec::new(),
            bad: BTreeSet::new(),
            broken: BTreeSet::new(),
            preflight_bad: BTreeSet::new(),
            sealed: BTreeSet::new(),
            foreign: BTreeSet::new(),
            instances: std::collections::BTreeMap::new(),
            resume: false,
            activations: 0,
        }
    }

    fn id(&self, name: &str) -> usize {
        self.w.find(name).unwrap()
    }

    fn ev(&mut self, e: Event) {
        let fx = step(&mut self.w, e, self.now);
        self.log.extend(fx.iter().cloned());
        self.queue.extend(fx);
    }

    /// Answer every queued effect (and what the answers cause), without
    /// letting time pass.
    fn drain(&mut self) {
        let mut guard = 0;
        while let Some(fx) = self.queue.pop_front() {
            guard += 1;
            assert!(guard < 10_000, "effects do not settle");
            match fx {
                Effect::Preflight {
                    stage,
                    token,
                    services,
                } => {
                    let problems = services
                        .into_iter()
                        .filter(|&s| self.preflight_bad.contains(&self.w.services[s].info.name))
                        .map(|s| (s, "preflight port: taken".to_string()))
                        .collect();
                    self.ev(Event::PreflightDone {
                        stage,
                        token,
                        problems,
                    });
                }
                Effect::Start {
                    svc,
                    token,
                    replace,
                    ..
                }
                | Effect::Restart {
                    svc,
                    token,
                    replace,
                    ..
                } => {
                    let name = self.w.services[svc].info.name.clone();
                    if self.foreign.contains(&name) && !replace {
                        self.ev(Event::Foreign {
                            svc,
                            token: Some(token),
                            detail: format!("container {name} (id 0123abcd, image {name}:v2)"),
                        });
                        continue;
                    }
                    if self.foreign.contains(&name) {
                        // Replaced: the unit's container runs again.
                        self.foreign.remove(&name);
                    }
                    let running = self
                        .instances
                        .get(&name)
                        .copied()
                        .filter(|_| self.resume && matches!(fx, Effect::Start { .. }));
                    let result = if let Some(instance) = running {
                        Ok((
                            "done".to_string(),
                            state("active", "running", "success", instance),
                        ))
                    } else if self.broken.contains(&name) {
                        Err("job failed".to_string())
                    } else {
                        self.activations += 1;
                        self.instances.insert(name.clone(), self.activations);
                        Ok((
                            "done".to_string(),
                            state("active", "running", "success", self.activations),
                        ))
                    };
                    self.ev(Event::JobDone { svc, token, result });
                }
                Effect::Stop { svc, token } => {
                    let exit = self.w.services[svc]
                        .unit
                        .as_ref()
                        .map_or(0, |u| u.inactive_exit_usec);
                    self.ev(Event::JobDone {
                        svc,
                        token,
                        result: Ok((
                            "done".to_string(),
                            state("inactive", "dead", "success", exit),
                        )),
                    });
                }
                Effect::Probe { svc, check, token } => {
                    let name = &self.w.services[svc].info.name;
                    let waiting = self.sealed.contains(name);
                    let ok = !self.bad.contains(name) && !waiting;
                    self.ev(Event::ProbeDone {
                        svc,
                        check,
                        token,
                        ok,
                        waiting,
                        detail: if ok { "ok".into() } else { "refused".into() },
                    });
                }
                _ => {}
            }
        }
    }

    /// Let time pass to the next deadline (at most `max` ms), then drain.
    fn tick(&mut self, max: u64) {
        let next = next_deadline(&self.w).unwrap_or(self.now + max);
        self.now = next.clamp(self.now, self.now + max);
        self.ev(Event::Tick);
        self.drain();
    }

    fn run_for(&mut self, ms: u64) {
        let end = self.now + ms;
        while self.now < end {
            self.tick(end - self.now);
        }
    }

    fn life(&self, name: &str) -> Life {
        self.w.services[self.id(name)].life.clone()
    }

    fn phase(&self, stage: usize) -> StagePhase {
        self.w.stages[stage].phase.clone()
    }

    fn kill(&mut self, name: &str) {
        let svc = self.id(name);
        let exit = self.w.services[svc]
            .unit
            .as_ref()
            .map_or(0, |u| u.inactive_exit_usec);
        self.ev(Event::Unit {
            svc,
            state: state("failed", "failed", "signal", exit),
        });
        self.drain();
    }

    fn restarts_of(&self, name: &str) -> usize {
        let svc = self.id(name);
        self.log
            .iter()
            .filter(|e| matches!(e, Effect::Restart { svc: s, .. } if *s == svc))
            .count()
    }

    fn starts_of(&self, name: &str) -> usize {
        let svc = self.id(name);
        self.log
            .iter()
            .filter(|e| matches!(e, Effect::Start { svc: s, .. } if *s == svc))
            .count()
    }
}

fn healthy(l: &Life) -> bool {
    matches!(l, Life::Healthy { .. })
}

#[test]
fn recover_ramps_stage_by_stage_and_settles() {
    let mut d = Driver::new(Goal::Recover);
    d.ev(Event::Begin);
    d.drain();
    d.run_for(5_000);
    assert!(d.w.settled());
    for st in &d.w.stages {
        assert_eq!(st.phase, StagePhase::Healthy, "{}", st.info.name);
    }
    // dns started before proxy, proxy before web.
    let pos = |n: &str| {
        let id = d.id(n);
        d.log
            .iter()
            .position(|e| matches!(e, Effect::Start { svc, .. } if *svc == id))
            .unwrap()
    };
    assert!(pos("dns") < pos("proxy"));
    assert!(pos("proxy") < pos("web"));
    assert_eq!(d.restarts_of("dns"), 0);
    assert!(d
        .log
        .iter()
        .any(|e| matches!(e, Effect::Note(Note::RampDone))));
    // Every healthy stage's gate unit is started.
    let gates = d
        .log
        .iter()
        .filter(|e| matches!(e, Effect::StartGate(_)))
        .count();
    assert_eq!(gates, 3);
}

#[test]
fn a_starting_service_is_probed_only_once_its_start_job_is_done() {
    let mut d = Driver::new(Goal::Recover);
    d.ev(Event::Begin);
    let Some(Effect::Preflight { stage, token, .. }) = d
        .queue
        .iter()
        .find(|e| matches!(e, Effect::Preflight { .. }))
        .cloned()
    else {
        panic!("no preflight: {:?}", d.queue)
    };
    d.queue.clear();
    d.ev(Event::PreflightDone {
        stage,
        token,
        problems: vec![],
    });
    let dns = d.id("dns");
    assert!(
        d.queue
            .iter()
            .any(|e| matches!(e, Effect::Start { svc, .. } if *svc == dns)),
        "{:?}",
        d.queue
    );
    assert!(
        !d.queue
            .iter()
            .any(|e| matches!(e, Effect::Probe { svc, .. } if *svc == dns)),
        "probed while its start job runs: {:?}",
        d.queue
    );
    // The job is done (the unit is active): probed at once, healthy.
    d.drain();
    assert!(d
        .log
        .iter()
        .any(|e| matches!(e, Effect::Probe { svc, .. } if *svc == dns)));
    assert!(healthy(&d.life("dns")));
}

#[test]
fn a_unit_dying_while_its_stage_is_gated_is_restarted_at_once() {
    let mut d = Driver::new(Goal::Recover);
    d.bad.insert("proxy".into());
    d.ev(Event::Begin);
    d.drain();
    d.run_for(500);
    assert!(matches!(d.phase(1), StagePhase::Gating { .. }));
    // proxy's container dies while core is gated.
    d.kill("proxy");
    assert_eq!(d.restarts_of("proxy"), 1, "restart issued in the same step");
    d.bad.clear();
    d.run_for(3_000);
    assert_eq!(d.phase(1), StagePhase::Healthy);
    assert_eq!(d.phase(2), StagePhase::Healthy);
    assert!(d.w.settled());
    let proxy = &d.w.services[d.id("proxy")];
    assert_eq!(proxy.report.restarts, 1);
    assert!(proxy.report.died.as_deref().unwrap().contains("failed"));
}

#[test]
fn a_unit_dying_during_an_earlier_stage_is_restarted_and_the_ramp_goes_on() {
    let mut d = Driver::new(Goal::Daemon);
    d.bad.insert("proxy".into());
    d.ev(Event::Begin);
    d.drain();
    d.run_for(500);
    // dns (stage 1, healthy) dies while core is gated.
    d.kill("dns");
    assert_eq!(d.restarts_of("dns"), 1);
    d.bad.clear();
    d.run_for(5_000);
    assert!(d.w.stages.iter().all(|s| s.phase == StagePhase::Healthy));
    assert!(healthy(&d.life("dns")));
}

#[test]
fn a_blocked_platform_resumes_by_itself_when_the_blocker_heals() {
    let mut d = Driver::with(Goal::Daemon, |c| {
        c.stages[0].timeout = std::time::Duration::from_secs(6);
    });
    d.bad.insert("dns".into());
    d.ev(Event::Begin);
    d.drain();
    d.run_for(7_000);
    assert!(matches!(d.phase(0), StagePhase::Failed { .. }));
    assert_eq!(d.phase(1), StagePhase::Blocked { by: 0 });
    assert_eq!(d.phase(2), StagePhase::Blocked { by: 0 });
    assert_eq!(d.starts_of("proxy"), 0, "a blocked stage is not started");
    let alerts = d
        .log
        .iter()
        .filter(|e| matches!(e, Effect::AlertBlocked { stage: 0, .. }))
        .count();
    assert_eq!(alerts, 1, "one alert per blocking episode");
    // The blocker is retried (restarted under the policy).
    d.run_for(5_000);
    assert!(d.restarts_of("dns") >= 1);
    // It heals: the ramp goes on without an operator.
    d.bad.clear();
    d.run_for(60_000);
    assert!(d.w.stages.iter().all(|s| s.phase == StagePhase::Healthy));
    assert!(healthy(&d.life("web")));
    assert_eq!(
        d.log
            .iter()
            .filter(|e| matches!(e, Effect::AlertBlocked { .. }))
            .count(),
        1
    );
}

#[test]
fn recover_settles_blocked_when_a_block_stage_fails() {
    let mut d = Driver::with(Goal::Recover, |c| {
        c.stages[0].timeout = std::time::Duration::from_secs(6);
    });
    d.bad.insert("dns".into());
    d.ev(Event::Begin);
    d.drain();
    d.run_for(10_000);
    assert!(d.w.settled());
    assert!(matches!(d.phase(0), StagePhase::Failed { .. }));
    assert_eq!(d.phase(1), StagePhase::Blocked { by: 0 });
    assert_eq!(d.starts_of("proxy"), 0);
}

#[test]
fn a_continue_stage_failing_lets_later_stages_start() {
    let mut d = Driver::with(Goal::Recover, |c| {
        c.stages[0].timeout = std::time::Duration::from_secs(6);
        c.stages[0].on_failure = FailurePolicy::Continue;
    });
    d.bad.insert("dns".into());
    d.ev(Event::Begin);
    d.drain();
    d.run_for(20_000);
    assert!(d.w.settled());
    assert!(matches!(d.phase(0), StagePhase::Failed { .. }));
    assert_eq!(d.phase(1), StagePhase::Healthy);
    assert_eq!(d.phase(2), StagePhase::Healthy);
    let ignore = d.log.iter().any(
        |e| matches!(e, Effect::Start { svc, ignore_deps: true, .. } if *svc == d.id("proxy")),
    );
    assert!(
        ignore,
        "started with dependencies ignored after a failed stage"
    );
}

#[test]
fn a_failed_preflight_fails_the_stage_and_the_daemon_retries_it() {
    let mut d = Driver::new(Goal::Daemon);
    d.preflight_bad.insert("reg".into());
    d.ev(Event::Begin);
    d.drain();
    d.run_for(500);
    assert!(matches!(
        d.phase(1),
        StagePhase::Failed { retry_at: Some(_) }
    ));
    assert_eq!(d.starts_of("reg"), 0);
    assert_eq!(d.phase(2), StagePhase::Blocked { by: 1 });
    d.preflight_bad.clear();
    d.run_for(5_000);
    assert_eq!(d.phase(1), StagePhase::Healthy);
    assert_eq!(d.phase(2), StagePhase::Healthy);
}

#[test]
fn the_gate_goal_only_observes() {
    let mut d = Driver::new(Goal::Gate(1));
    d.ev(Event::Begin);
    d.drain();
    d.run_for(1_000);
    assert_eq!(d.phase(1), StagePhase::Healthy);
    assert!(d.w.settled());
    assert!(!d.log.iter().any(|e| matches!(
        e,
        Effect::Start { .. }
            | Effect::Restart { .. }
            | Effect::StartGate(_)
            | Effect::Preflight { .. }
    )));
    let mut d = Driver::new(Goal::Gate(1));
    d.bad.insert("reg".into());
    d.ev(Event::Begin);
    d.drain();
    d.run_for(130_000);
    assert!(matches!(d.phase(1), StagePhase::Failed { .. }));
    assert!(d.w.settled());
    assert_eq!(d.restarts_of("reg"), 0);
}

#[test]
fn a_crash_loop_escalates_once_and_ack_rearms() {
    let mut d = Driver::new(Goal::Daemon);
    d.ev(Event::Begin);
    d.drain();
    d.run_for(2_000);
    assert!(healthy(&d.life("app")));
    d.broken.insert("app".into());
    d.kill("app");
    d.run_for(120_000);
    assert_eq!(d.life("app"), Life::Escalated);
    let escalations = d
        .log
        .iter()
        .filter(|e| matches!(e, Effect::Escalate { .. }))
        .count();
    assert_eq!(escalations, 1);
    assert_eq!(d.restarts_of("app"), 5, "escalate_after restarts, no more");
    d.run_for(600_000);
    assert_eq!(d.restarts_of("app"), 5);
    d.broken.clear();
    d.ev(Event::Ack(d.id("app")));
    d.drain();
    d.run_for(3_000);
    assert!(healthy(&d.life("app")));
    assert_eq!(d.restarts_of("app"), 6);
}

#[test]
fn dependents_of_a_failing_upstream_are_held_not_restarted() {
    let mut d = Driver::new(Goal::Daemon);
    d.ev(Event::Begin);
    d.drain();
    d.run_for(2_000);
    assert!(d.w.stages.iter().all(|s| s.phase == StagePhase::Healthy));
    // dns and proxy's checks fail (proxy's because of dns).
    d.bad.insert("dns".into());
    d.bad.insert("proxy".into());
    d.run_for(40_000);
    assert!(d.restarts_of("dns") >= 1);
    assert!(matches!(d.life("proxy"), Life::Held { .. }));
    assert_eq!(d.restarts_of("proxy"), 0);
    d.bad.clear();
    d.run_for(40_000);
    assert!(healthy(&d.life("dns")));
    assert!(healthy(&d.life("proxy")));
    assert_eq!(d.restarts_of("proxy"), 0, "re-checked, not restarted");
}

#[test]
fn an_escalated_service_is_not_started_by_a_new_run() {
    let cfg = crate::plan::tests::sample();
    let plan = crate::plan::build(&cfg).unwrap();
    let mut hist = PersistedState::default();
    hist.services.entry("app".into()).or_default().escalated = Some(super::history::Escalation {
        event_id: "app-1".into(),
        reason: "crash loop".into(),
        at_ms: 1,
    });
    let mut d = Driver::new(Goal::Daemon);
    d.w = World::new(&cfg, &plan, Goal::Daemon, &hist);
    d.ev(Event::Begin);
    d.drain();
    d.run_for(5_000);
    assert_eq!(d.life("app"), Life::Skipped);
    assert_eq!(d.starts_of("app"), 0);
    assert_eq!(d.phase(2), StagePhase::Healthy, "verdict about the others");
    assert!(!d.log.iter().any(|e| matches!(e, Effect::StartGate(2))));
    let mut d = Driver::new(Goal::Daemon);
    let mut hist = PersistedState::default();
    hist.services.entry("proxy".into()).or_default().escalated = Some(super::history::Escalation {
        event_id: "proxy-1".into(),
        reason: "crash loop".into(),
        at_ms: 1,
    });
    d.w = World::new(&cfg, &plan, Goal::Daemon, &hist);
    d.ev(Event::Begin);
    d.drain();
    d.run_for(5_000);
    // core's gate was not started (it wants the escalated proxy): the next
    // stage's units are started with dependencies ignored, so they do not
    // pull it (and proxy) in.
    assert!(!d.log.iter().any(|e| matches!(e, Effect::StartGate(1))));
    let web = d.id("web");
    assert!(d
        .log
        .iter()
        .any(|e| matches!(e, Effect::Start { svc, ignore_deps: true, .. } if *svc == web)));
}

/// One random thing that can happen to the platform.
#[derive(Debug, Clone)]
enum Fault {
    Kill(usize),
    Break(usize),
    Heal(usize),
    JobsFail(usize),
    JobsWork(usize),
    Wait(u64),
}

fn fault() -> impl Strategy<Value = Fault> {
    prop_oneof![
        (0usize..6).prop_map(Fault::Kill),
        (0usize..6).prop_map(Fault::Break),
        (0usize..6).prop_map(Fault::Heal),
        (0usize..6).prop_map(Fault::JobsFail),
        (0usize..6).prop_map(Fault::JobsWork),
        (1u64..30_000).prop_map(Fault::Wait),
    ]
}

/// The invariants that must hold after every step.
fn check_invariants(d: &Driver) -> Result<(), TestCaseError> {
    let w = &d.w;
    for s in &w.services {
        let wanted = !matches!(s.life, Life::Idle | Life::Skipped);
        let down = s.job.is_none() && s.unit.as_ref().is_some_and(unit_is_down);
        if wanted && down && s.info.restartable {
            let ok = matches!(
                s.life,
                Life::Failing {
                    restart_at: Some(_)
                } | Life::Restarting
                    | Life::Held { .. }
                    | Life::Escalated
            );
            prop_assert!(
                ok,
                "{} is wanted and down but nothing is pending: {:?}",
                s.info.name,
                s.life
            );
        }
        let in_window = s
            .history
            .restarts_in_window(d.now, w.policy.escalate_window);
        prop_assert!(
            in_window <= w.policy.escalate_after + 1,
            "{}: {in_window} restarts in the window",
            s.info.name
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn every_wanted_down_unit_gets_a_restart_and_restarts_stay_bounded(
        faults in proptest::collection::vec(fault(), 1..40)
    ) {
        let mut d = Driver::new(Goal::Daemon);
        let names: Vec<String> = ["dns", "proxy", "reg", "app", "web", "idp"]
            .iter().map(|s| s.to_string()).collect();
        d.ev(Event::Begin);
        d.drain();
        d.run_for(2_000);
        let mut stage_healthy_seen = 0usize;
        for f in faults {
            match f {
                Fault::Kill(i) => { if names[i] != "idp" { d.kill(&names[i]); } }
                Fault::Break(i) => { d.bad.insert(names[i].clone()); }
                Fault::Heal(i) => { d.bad.remove(&names[i]); }
                Fault::JobsFail(i) => { d.broken.insert(names[i].clone()); }
                Fault::JobsWork(i) => { d.broken.remove(&names[i]); }
                Fault::Wait(ms) => d.run_for(ms),
            }
            check_invariants(&d)?;
            // A stage never becomes healthy while a member is down.
            for e in &d.log[stage_healthy_seen..] {
                if let Effect::Note(Note::StageDone { stage, healthy: true }) = e {
                    for &m in &d.w.stages[*stage].info.members {
                        let s = &d.w.services[m];
                        prop_assert!(s.life == Life::Skipped || !s.unit_down(),
                            "stage {} healthy with {} down", stage, s.info.name);
                    }
                }
            }
            stage_healthy_seen = d.log.len();
        }
        // With every fault gone, everything converges (escalated ones aside,
        // which wait for an operator).
        d.bad.clear();
        d.broken.clear();
        d.run_for(900_000);
        for s in &d.w.services {
            let held_by_escalated = match s.life {
                Life::Held { by } => d.w.services[by].life == Life::Escalated,
                _ => false,
            };
            prop_assert!(
                healthy(&s.life) || s.life == Life::Escalated || held_by_escalated,
                "{} did not converge: {:?}", s.info.name, s.life
            );
        }
    }
}

// ----- waiting for an operator, and another controller's containers -----

fn wait_effects(d: &Driver, name: &str) -> Vec<(bool, String)> {
    let id = d.id(name);
    d.log
        .iter()
        .filter_map(|e| match e {
            Effect::OperatorWait {
                svc,
                reminder,
                event_id,
                ..
            } if *svc == id => Some((*reminder, event_id.clone())),
            _ => None,
        })
        .collect()
}

fn with_gate(
    name: &'static str,
    gate: crate::config::ServiceGate,
) -> impl FnOnce(&mut crate::config::Config) {
    move |cfg| {
        let s = cfg.services.get_mut(name).unwrap();
        s.gate = gate;
        for c in &mut s.checks {
            c.operator_wait = Some(crate::config::OperatorWait {
                status: vec![503],
                remedy: "unseal it".into(),
                ..Default::default()
            });
        }
    }
}

#[test]
fn a_sealed_service_waits_is_never_restarted_and_holds_its_stage() {
    let mut d = Driver::with(
        Goal::Daemon,
        with_gate("proxy", crate::config::ServiceGate::Healthy),
    );
    d.sealed.insert("proxy".into());
    d.ev(Event::Begin);
    d.drain();
    d.run_for(60_000);
    assert!(
        matches!(d.life("proxy"), Life::Waiting { .. }),
        "{:?}",
        d.life("proxy")
    );
    assert_eq!(d.restarts_of("proxy"), 0);
    let waits = wait_effects(&d, "proxy");
    assert_eq!(waits.len(), 1, "one notice per episode: {waits:?}");
    assert!(!waits[0].0);
    assert!(
        matches!(d.phase(1), StagePhase::Gating { .. }),
        "{:?}",
        d.phase(1)
    );
    assert_eq!(d.starts_of("web"), 0, "the next stage waits for it");
    // Its container dies while sealed: restarted like any other, and the
    // episode goes on (no second notice).
    d.kill("proxy");
    d.run_for(5_000);
    assert_eq!(d.restarts_of("proxy"), 1);
    assert!(matches!(d.life("proxy"), Life::Waiting { .. }));
    assert_eq!(wait_effects(&d, "proxy").len(), 1);
    // Unsealed: healthy without a restart; the ramp goes on.
    d.sealed.clear();
    d.run_for(3_000);
    assert!(healthy(&d.life("proxy")), "{:?}", d.life("proxy"));
    assert_eq!(d.restarts_of("proxy"), 1);
    assert!(d
        .log
        .iter()
        .any(|e| matches!(e, Effect::Note(Note::WaitOver { .. }))));
    assert!(d.w.services[d.id("proxy")].history.waiting.is_none());
    d.run_for(5_000);
    assert_eq!(d.phase(1), StagePhase::Healthy);
    assert!(d.starts_of("web") > 0);
}

#[test]
fn gate_running_lets_the_stage_proceed_and_dependents_are_held() {
    let mut d = Driver::with(
        Goal::Daemon,
        with_gate("proxy", crate::config::ServiceGate::Running),
    );
    d.sealed.insert("proxy".into());
    d.ev(Event::Begin);
    d.drain();
    d.run_for(10_000);
    assert!(matches!(d.life("proxy"), Life::Waiting { .. }));
    assert_eq!(
        d.phase(1),
        StagePhase::Healthy,
        "core proceeds while proxy waits"
    );
    assert!(d.starts_of("web") > 0);
    d.run_for(10_000);
    let text = crate::recover::Report::from_world(&d.w, d.now).to_text();
    assert!(
        text.contains("waiting for an operator: unseal it")
            && text.contains("result: every stage up; waiting for an operator: proxy"),
        "{text}"
    );
    // reg (after proxy) fails meanwhile: held, not restarted.
    d.bad.insert("reg".into());
    d.run_for(60_000);
    assert!(
        matches!(d.life("reg"), Life::Held { .. }),
        "{:?}",
        d.life("reg")
    );
    assert_eq!(d.restarts_of("reg"), 0);
    assert_eq!(d.restarts_of("proxy"), 0);
    d.sealed.clear();
    d.bad.clear();
    d.run_for(15_000);
    assert!(healthy(&d.life("proxy")));
    assert!(healthy(&d.life("reg")), "{:?}", d.life("reg"));
    assert_eq!(d.restarts_of("reg"), 0);
}

#[test]
fn one_reminder_after_the_configured_time() {
    let mut d = Driver::with(Goal::Daemon, |cfg| {
        with_gate("proxy", crate::config::ServiceGate::Running)(cfg);
        cfg.watch.wait_reminder = std::time::Duration::from_secs(30);
    });
    d.sealed.insert("proxy".into());
    d.ev(Event::Begin);
    d.drain();
    d.run_for(120_000);
    let waits = wait_effects(&d, "proxy");
    assert_eq!(waits.len(), 2, "{waits:?}");
    assert!(!waits[0].0 && waits[1].0, "the notice, then one reminder");
    assert_eq!(waits[0].1, waits[1].1, "one episode");
}

#[test]
fn another_controllers_container_is_left_alone_until_adopted() {
    let mut d = Driver::new(Goal::Daemon);
    d.ev(Event::Begin);
    d.drain();
    d.run_for(10_000);
    assert!(healthy(&d.life("app")));
    // A deploy outside the unit: the unit's container is replaced.
    d.foreign.insert("app".into());
    d.kill("app");
    d.run_for(2_000);
    assert!(
        matches!(d.life("app"), Life::Foreign { .. }),
        "{:?}",
        d.life("app")
    );
    let restarts = d.restarts_of("app");
    // Its checks fail: reported, never acted on.
    d.bad.insert("app".into());
    d.run_for(60_000);
    assert_eq!(
        d.restarts_of("app"),
        restarts,
        "no restart of a foreign container"
    );
    assert!(matches!(d.life("app"), Life::Foreign { .. }));
    // A restart request is refused.
    let app = d.id("app");
    d.ev(Event::RestartNow(app));
    assert!(d
        .log
        .iter()
        .any(|e| matches!(e, Effect::Reply(Err(m)) if m.contains("adopt"))));
    // Adopt: one restart that replaces it.
    d.bad.clear();
    d.ev(Event::Adopt(app));
    d.drain();
    assert!(d
        .log
        .iter()
        .any(|e| matches!(e, Effect::Restart { svc, replace: true, .. } if *svc == app)));
    d.run_for(5_000);
    assert!(healthy(&d.life("app")), "{:?}", d.life("app"));
}

#[test]
fn take_over_replaces_another_controllers_container() {
    let mut d = Driver::with(Goal::Daemon, |cfg| {
        cfg.watch.foreign = crate::config::ForeignPolicy::TakeOver;
    });
    d.foreign.insert("app".into());
    d.ev(Event::Begin);
    d.drain();
    d.run_for(10_000);
    assert!(healthy(&d.life("app")), "{:?}", d.life("app"));
    let app = d.id("app");
    assert!(d
        .log
        .iter()
        .any(|e| matches!(e, Effect::Start { svc, replace: true, .. } if *svc == app)));
}

#[test]
fn a_foreign_container_found_at_recovery_counts_for_its_stage_when_healthy() {
    let mut d = Driver::new(Goal::Recover);
    d.foreign.insert("proxy".into());
    d.ev(Event::Begin);
    d.drain();
    d.run_for(10_000);
    assert!(matches!(d.life("proxy"), Life::Foreign { .. }));
    assert_eq!(d.phase(1), StagePhase::Healthy);
    assert!(d.w.settled());
    assert_eq!(d.restarts_of("proxy"), 0);
}

// ----- drills -------------------------------------------------------------

fn drill_results(d: &Driver) -> Vec<crate::engine::DrillResult> {
    d.log
        .iter()
        .filter_map(|e| match e {
            Effect::DrillDone(r) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

fn healthy_daemon() -> Driver {
    let mut d = Driver::new(Goal::Daemon);
    d.ev(Event::Begin);
    d.drain();
    d.run_for(10_000);
    assert!(d.w.stages.iter().all(|s| s.phase == StagePhase::Healthy));
    d
}

#[test]
fn a_stage_drill_stops_dependents_first_recovers_the_stage_and_measures_the_rto() {
    use crate::engine::{DrillOutcome, DrillScope};
    let mut d = healthy_daemon();
    let (proxy, reg) = (d.id("proxy"), d.id("reg"));
    d.w.services[reg].info.rto_ms = Some(100);
    let before = d.log.len();
    // reg is slow to come back: 500 ms of failing probes.
    d.bad.insert("reg".into());
    d.ev(Event::DrillStart(DrillScope::Stage(1)));
    d.drain();
    let stops: Vec<usize> = d.log[before..]
        .iter()
        .filter_map(|e| match e {
            Effect::Stop { svc, .. } => Some(*svc),
            _ => None,
        })
        .collect();
    assert_eq!(stops, [reg, proxy], "dependents first");
    assert!(d.w.drill.is_some());
    // web's checks fail meanwhile (its upstreams are down): held, never restarted.
    d.bad.insert("web".into());
    d.run_for(500);
    d.bad.clear();
    d.run_for(5_000);
    let r = drill_results(&d);
    assert_eq!(r.len(), 1, "{r:?}");
    let r = &r[0];
    assert_eq!(r.scope, "core");
    assert_eq!(r.outcome, DrillOutcome::Exceeded, "{r:?}");
    let reg_rto = r.services.iter().find(|s| s.name == "reg").unwrap();
    assert!(reg_rto.rto_ms.unwrap() >= 500 && reg_rto.exceeded, "{r:?}");
    assert!(r.rto_ms.unwrap() >= 500);
    assert_eq!(d.restarts_of("web"), 0);
    assert_eq!(
        d.restarts_of("reg"),
        0,
        "the drill recovers by starting, not restarting"
    );
    assert!(d.w.drill.is_none());
    assert!(healthy(&d.life("web")) && healthy(&d.life("reg")));
    assert_eq!(d.phase(1), StagePhase::Healthy);
}

#[test]
fn a_drill_is_refused_unless_its_scope_is_healthy() {
    use crate::engine::DrillScope;
    let mut d = healthy_daemon();
    let app = d.id("app");
    d.broken.insert("app".into());
    d.kill("app");
    d.run_for(100);
    d.ev(Event::DrillStart(DrillScope::Service(app)));
    assert!(
        d.log
            .iter()
            .any(|e| matches!(e, Effect::Reply(Err(m)) if m.contains("drill refused"))),
        "{:?}",
        d.log.last()
    );
    assert!(d.w.drill.is_none());
    let mut r = Driver::new(Goal::Recover);
    r.ev(Event::Begin);
    r.drain();
    r.ev(Event::DrillStart(DrillScope::Stage(0)));
    assert!(r
        .log
        .iter()
        .any(|e| matches!(e, Effect::Reply(Err(m)) if m.contains("daemon"))));
}

#[test]
fn a_drill_never_escalates_and_times_out() {
    use crate::engine::{DrillOutcome, DrillScope};
    let mut d = Driver::with(Goal::Daemon, |cfg| cfg.watch.escalate_after = 1);
    d.ev(Event::Begin);
    d.drain();
    d.run_for(10_000);
    let app = d.id("app");
    d.broken.insert("app".into());
    d.ev(Event::DrillStart(DrillScope::Service(app)));
    d.drain();
    // Until its deadline (60 s for the stops + the stage's 120 s).
    d.run_for(175_000);
    assert!(!d.log.iter().any(|e| matches!(e, Effect::Escalate { .. })));
    assert!(d.restarts_of("app") > 1, "restarted with backoff meanwhile");
    d.run_for(10_000);
    let r = drill_results(&d);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].outcome, DrillOutcome::TimedOut);
    // After the drill the ordinary rules apply again.
    d.run_for(400_000);
    assert!(d.log.iter().any(|e| matches!(e, Effect::Escalate { .. })));
}

#[test]
fn an_aborted_drill_recovers_what_it_stopped() {
    use crate::engine::{DrillOutcome, DrillScope};
    let mut d = healthy_daemon();
    d.ev(Event::DrillStart(DrillScope::Stage(1)));
    d.ev(Event::DrillAbort);
    d.drain();
    d.run_for(5_000);
    let r = drill_results(&d);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].outcome, DrillOutcome::Aborted);
    assert!(healthy(&d.life("proxy")) && healthy(&d.life("reg")));
    assert_eq!(d.phase(1), StagePhase::Healthy);
}

#[test]
fn a_restarted_daemon_judges_the_instance_it_saw_healthy_with_steady_checks() {
    let mut d = Driver::new(Goal::Daemon);
    d.ev(Event::Begin);
    d.drain();
    d.run_for(10_000);
    assert!(healthy(&d.life("app")));
    let app = d.id("app");
    assert!(d.w.services[app].history.healthy_instance.is_some());
    // The daemon restarts (same boot): a new world from the persisted
    // history; the units still run; app's checks now fail.
    let hist = d.w.history();
    let cfg = crate::plan::tests::sample();
    let plan = crate::plan::build(&cfg).unwrap();
    d.w = World::new(&cfg, &plan, Goal::Daemon, &hist);
    d.log.clear();
    d.resume = true;
    d.bad.insert("app".into());
    d.ev(Event::Begin);
    d.drain();
    assert!(d
        .log
        .iter()
        .any(|e| matches!(e, Effect::Note(Note::Resumed(s)) if *s == app)));
    // Judged by the steady thresholds (3 failures 10 s apart), not given
    // its stage's 120 s timeout.
    d.run_for(35_000);
    assert!(d.restarts_of("app") >= 1, "{:?}", d.life("app"));
    // A unit restarted meanwhile (another instance) starts as usual.
    let mut fresh = Driver::new(Goal::Daemon);
    fresh.w = World::new(&cfg, &plan, Goal::Daemon, &hist);
    fresh.bad.insert("app".into());
    fresh.activations = 1_000;
    fresh.ev(Event::Begin);
    fresh.drain();
    fresh.run_for(35_000);
    assert!(
        matches!(fresh.life("app"), Life::Starting { .. }),
        "{:?}",
        fresh.life("app")
    );
    assert_eq!(fresh.restarts_of("app"), 0);
}

#[test]
fn a_restart_withheld_for_another_controllers_container_does_not_count() {
    let mut d = Driver::new(Goal::Daemon);
    d.ev(Event::Begin);
    d.drain();
    d.run_for(10_000);
    let app = d.id("app");
    let before = d.w.services[app].history.clone();
    // Its checks fail (another controller's container answers badly): the
    // restart finds that container and is withheld.
    d.foreign.insert("app".into());
    d.bad.insert("app".into());
    d.run_for(60_000);
    assert!(
        matches!(d.life("app"), Life::Foreign { .. }),
        "{:?}",
        d.life("app")
    );
    let after = &d.w.services[app].history;
    assert_eq!(after.total_restarts, before.total_restarts);
    assert_eq!(after.restarts, before.restarts);
    assert_eq!(after.backoff_level, before.backoff_level);
}

// ----- a container's own death (issue 15) ----------------------------------

/// A daemon's world from the sample configuration edited by `edit`,
/// ramped up (10 s).
fn ramped(edit: impl FnOnce(&mut crate::config::Config)) -> Driver {
    let mut d = Driver::with(Goal::Daemon, edit);
    d.ev(Event::Begin);
    d.drain();
    d.run_for(10_000);
    d
}

/// [`ramped`] with `[watch] foreign = "take-over"`.
fn taken_over() -> Driver {
    ramped(|cfg| cfg.watch.foreign = crate::config::ForeignPolicy::TakeOver)
}

#[test]
fn with_take_over_a_container_death_restarts_before_the_unit_goes_down() {
    let mut d = taken_over();
    assert!(healthy(&d.life("proxy")), "{:?}", d.life("proxy"));
    let proxy = d.id("proxy");
    let exit = d.w.services[proxy]
        .unit
        .as_ref()
        .unwrap()
        .inactive_exit_usec;
    d.ev(Event::ContainerDied {
        svc: proxy,
        detail: "its container 0123456789ab died (its scope libpod-x.scope is gone)".into(),
    });
    // The restart is issued in the same step, replacing (take-over), while
    // the unit itself is still active.
    assert!(d.log.iter().any(|e| matches!(
        e,
        Effect::Restart { svc, replace: true, .. } if *svc == proxy
    )));
    assert_eq!(d.restarts_of("proxy"), 1);
    assert!(d.w.services[proxy].unit.as_ref().unwrap().is_active());
    // The unit's own death arrives while the restart job runs: no second
    // restart.
    d.ev(Event::Unit {
        svc: proxy,
        state: state("deactivating", "stop-post", "exit-code", exit),
    });
    d.ev(Event::Unit {
        svc: proxy,
        state: state("failed", "failed", "exit-code", exit),
    });
    d.drain();
    d.run_for(5_000);
    assert_eq!(d.restarts_of("proxy"), 1);
    assert!(healthy(&d.life("proxy")), "{:?}", d.life("proxy"));
    let r = &d.w.services[proxy].report;
    assert!(r.died.as_deref().unwrap().contains("scope"), "{:?}", r.died);
    assert!(!d.w.services[proxy].container_dead);
}

#[test]
fn without_take_over_a_container_death_waits_for_the_unit() {
    let mut d = ramped(|_| {});
    let proxy = d.id("proxy");
    d.ev(Event::ContainerDied {
        svc: proxy,
        detail: "its container died".into(),
    });
    d.drain();
    assert_eq!(d.restarts_of("proxy"), 0);
    assert!(healthy(&d.life("proxy")));
    // The unit's own death is what acts (after the ownership look).
    d.kill("proxy");
    assert_eq!(d.restarts_of("proxy"), 1);
}

#[test]
fn a_container_death_during_a_restart_job_or_while_held_is_not_a_second_restart() {
    let mut d = taken_over();
    let proxy = d.id("proxy");
    d.ev(Event::ContainerDied {
        svc: proxy,
        detail: "died".into(),
    });
    // The same death told twice (before the job's answer): one restart.
    d.ev(Event::ContainerDied {
        svc: proxy,
        detail: "died".into(),
    });
    d.drain();
    assert_eq!(d.restarts_of("proxy"), 1);
    d.run_for(5_000);
    // An upstream in trouble (its unit died; restarted, not yet healthy):
    // the dependent's container death holds it.
    d.bad.insert("dns".into());
    d.kill("dns");
    let reg = d.id("reg");
    d.ev(Event::ContainerDied {
        svc: reg,
        detail: "died".into(),
    });
    d.drain();
    assert!(
        matches!(d.life("reg"), Life::Held { .. }),
        "{:?}",
        d.life("reg")
    );
    assert_eq!(d.restarts_of("reg"), 0);
}
