//! Recovery drills (`mcrecover drill`): on a healthy platform, stop one
//! stage's or one service's units (containers only; volumes are never
//! touched), let the engine recover them by its ordinary rules (a stage is
//! ramped again: preflight, start, gate; a service is started), and measure
//! the recovery time of each service and of the stage against the
//! configured `rto`. While a drill runs nothing in its scope is escalated
//! (a drill never pages anyone and never quarantines), and dependents that
//! fail meanwhile are held by the stopped services, not restarted.
//!
//! Transitions are methods of [`World`] called from [`super::step`]; the
//! result is an [`Effect::DrillDone`] for the daemon to record.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::model::{Goal, Job, JobKind, Life, StageId, StagePhase, SvcId, World};
use super::step::Effect;

/// Time a drill allows for its stop jobs, on top of the stage's timeout.
const STOP_ALLOWANCE_MS: u64 = 60_000;

/// What a drill covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrillScope {
    /// Every member of a stage.
    Stage(StageId),
    /// One service.
    Service(SvcId),
}

/// Where a drill is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrillPhase {
    /// Its stop jobs run.
    Stopping,
    /// Everything in scope is stopped; the engine recovers it.
    Recovering,
}

/// A drill in progress.
#[derive(Debug, Clone)]
pub struct Drill {
    /// `drill-<scope>-<ms>`.
    pub id: String,
    /// What it covers.
    pub scope: DrillScope,
    /// The services it stops (those with a unit), plan order.
    pub services: Vec<SvcId>,
    /// Where it is.
    pub phase: DrillPhase,
    /// When it began (engine ms).
    pub began_at: u64,
    /// When every stop job was done (engine ms): the outage begins.
    pub stopped_at: Option<u64>,
    /// When it gives up (engine ms).
    pub deadline: u64,
    /// When each service was healthy again (engine ms).
    pub healthy: BTreeMap<SvcId, u64>,
}

/// How a drill ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DrillOutcome {
    /// Everything back within its targets.
    Passed,
    /// Everything back, but a target was exceeded.
    Exceeded,
    /// Not everything back by the deadline.
    TimedOut,
    /// An operator aborted it.
    Aborted,
}

impl DrillOutcome {
    /// The name used in the journal, the JSON and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            DrillOutcome::Passed => "passed",
            DrillOutcome::Exceeded => "exceeded",
            DrillOutcome::TimedOut => "timed-out",
            DrillOutcome::Aborted => "aborted",
        }
    }
}

/// One service's figures in a drill.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRto {
    /// Service name.
    pub name: String,
    /// Stopped to healthy again (ms); `None`: not healthy again.
    pub rto_ms: Option<u64>,
    /// Its configured `rto` (ms).
    pub target_ms: Option<u64>,
    /// Over its target (or not back at all).
    pub exceeded: bool,
}

/// The result of a drill.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrillResult {
    /// Drill id.
    pub id: String,
    /// `stage` or `service`.
    pub scope_kind: String,
    /// The stage's or service's name.
    pub scope: String,
    /// How it ended.
    pub outcome: DrillOutcome,
    /// Start of the drill to every unit stopped (ms).
    pub stop_ms: Option<u64>,
    /// Every unit stopped to every service healthy (ms): the scope's RTO.
    pub rto_ms: Option<u64>,
    /// The stage's configured `rto` (stage drills; ms).
    pub target_ms: Option<u64>,
    /// Per service, plan order.
    pub services: Vec<ServiceRto>,
}

impl World {
    /// Whether a drill covers `svc` (no escalation for it meanwhile).
    pub(super) fn drilled(&self, svc: SvcId) -> bool {
        self.drill
            .as_ref()
            .is_some_and(|d| d.services.contains(&svc))
    }

    /// The scope's name: `(kind, name)`.
    fn scope_name(&self, scope: DrillScope) -> (&'static str, String) {
        match scope {
            DrillScope::Stage(i) => (
                "stage",
                self.stages
                    .get(i)
                    .map(|s| s.info.name.clone())
                    .unwrap_or_default(),
            ),
            DrillScope::Service(s) => (
                "service",
                self.services
                    .get(s)
                    .map(|s| s.info.name.clone())
                    .unwrap_or_default(),
            ),
        }
    }

    /// Why a drill of `scope` may not start now, if it may not.
    fn drill_refusal(&self, scope: DrillScope) -> Option<String> {
        if self.goal != Goal::Daemon {
            return Some("drills run in the daemon".into());
        }
        if let Some(d) = &self.drill {
            return Some(format!(
                "drill {} is running; wait for it or abort it",
                d.id
            ));
        }
        if !self.bus_up {
            return Some("systemd is unreachable right now".into());
        }
        if let Some(st) = self.stages.iter().find(|s| s.phase != StagePhase::Healthy) {
            return Some(format!(
                "the platform is not healthy: stage {} is {}",
                st.info.name,
                st.phase.name()
            ));
        }
        let members: Vec<SvcId> = match scope {
            DrillScope::Stage(i) => self.stages.get(i)?.info.members.clone(),
            DrillScope::Service(s) => vec![s],
        };
        let unhealthy: Vec<String> = members
            .iter()
            .filter_map(|&m| self.services.get(m))
            .filter(|s| !matches!(s.life, Life::Healthy { .. }) || s.job.is_some())
            .map(|s| format!("{} is {}", s.info.name, s.life.name()))
            .collect();
        if !unhealthy.is_empty() {
            return Some(format!(
                "everything in scope must be healthy first: {}",
                unhealthy.join(", ")
            ));
        }
        if members
            .iter()
            .all(|&m| self.services.get(m).is_none_or(|s| s.info.unit.is_none()))
        {
            return Some("nothing in scope has a unit to stop (external only)".into());
        }
        None
    }

    /// Begin a drill of `scope`: stop its units, dependents first.
    pub(super) fn drill_start(&mut self, scope: DrillScope, now: u64, fx: &mut Vec<Effect>) {
        let valid = match scope {
            DrillScope::Stage(i) => i < self.stages.len(),
            DrillScope::Service(s) => s < self.services.len(),
        };
        if !valid {
            fx.push(Effect::Reply(Err("no such stage or service".into())));
            return;
        }
        if let Some(why) = self.drill_refusal(scope) {
            fx.push(Effect::Reply(Err(format!("drill refused: {why}"))));
            return;
        }
        let (kind, name) = self.scope_name(scope);
        let (members, timeout) = match scope {
            DrillScope::Stage(i) => (
                self.stages[i].info.members.clone(),
                self.stages[i].info.timeout_ms,
            ),
            DrillScope::Service(s) => (vec![s], self.timeout_for(s)),
        };
        let mut services: Vec<SvcId> = self
            .order
            .iter()
            .copied()
            .filter(|s| members.contains(s) && self.services[*s].info.unit.is_some())
            .collect();
        let id = format!("drill-{name}-{now}");
        self.drill = Some(Drill {
            id: id.clone(),
            scope,
            services: services.clone(),
            phase: DrillPhase::Stopping,
            began_at: now,
            stopped_at: None,
            deadline: now
                .saturating_add(STOP_ALLOWANCE_MS)
                .saturating_add(timeout),
            healthy: BTreeMap::new(),
        });
        // Dependents first, as a shutdown would.
        services.reverse();
        for &svc in &services {
            let token = self.token();
            let s = &mut self.services[svc];
            s.job = Some(Job {
                token,
                kind: JobKind::Stop,
            });
            for c in &mut s.checks {
                c.stop();
            }
            // Its dependents that fail meanwhile are held by it.
            s.troubled = true;
            // The report (and timeline) figures are this drill's.
            s.report = super::model::SvcReport::default();
            "stopped by a drill".clone_into(&mut s.reason);
            s.failing_since = None;
            self.set_life(svc, Life::Idle, fx);
            fx.push(Effect::Stop { svc, token });
        }
        fx.push(Effect::Reply(Ok(format!(
            "drill {id} started: stopping {} unit(s) of {kind} {name}",
            services.len()
        ))));
    }

    /// A stop job of a drill finished.
    pub(super) fn drill_stopped(&mut self, now: u64, fx: &mut Vec<Effect>) {
        let all_stopped = self.drill.as_ref().is_some_and(|d| {
            d.phase == DrillPhase::Stopping
                && d.services
                    .iter()
                    .all(|&s| self.services[s].job.is_none_or(|j| j.kind != JobKind::Stop))
        });
        if !all_stopped {
            return;
        }
        let Some(d) = self.drill.as_mut() else {
            return;
        };
        d.phase = DrillPhase::Recovering;
        d.stopped_at = Some(now);
        let scope = d.scope;
        self.recover_scope(scope, now, fx);
    }

    /// Let the engine recover what a drill stopped: the stage is ramped
    /// again (preflight, start, gate), a service is started.
    fn recover_scope(&mut self, scope: DrillScope, now: u64, fx: &mut Vec<Effect>) {
        match scope {
            DrillScope::Stage(i) => {
                if let Some(st) = self.stages.get_mut(i) {
                    st.phase = StagePhase::Pending;
                }
            }
            DrillScope::Service(svc) => {
                if self.services[svc].life == Life::Idle {
                    self.start_one(svc, now, false, fx);
                }
            }
        }
    }

    /// `svc` became healthy: a drill that covers it notes when.
    pub(super) fn drill_healthy(&mut self, svc: SvcId, now: u64) {
        if let Some(d) = self.drill.as_mut() {
            if d.phase == DrillPhase::Recovering && d.services.contains(&svc) {
                d.healthy.entry(svc).or_insert(now);
            }
        }
    }

    /// After every event: a drill whose services are all healthy again, or
    /// whose deadline passed, is done.
    pub(super) fn drill_progress(&mut self, now: u64, fx: &mut Vec<Effect>) {
        let Some(d) = &self.drill else {
            return;
        };
        let back = d.phase == DrillPhase::Recovering
            && d.services.iter().all(|s| d.healthy.contains_key(s));
        if back {
            self.drill_finish(None, now, fx);
        } else if now >= d.deadline {
            self.drill_finish(Some(DrillOutcome::TimedOut), now, fx);
        }
    }

    /// An operator aborts the drill: what it stopped is recovered at once.
    pub(super) fn drill_abort(&mut self, now: u64, fx: &mut Vec<Effect>) {
        let Some(d) = &self.drill else {
            fx.push(Effect::Reply(Err("no drill is running".into())));
            return;
        };
        let (id, scope) = (d.id.clone(), d.scope);
        self.drill_finish(Some(DrillOutcome::Aborted), now, fx);
        self.recover_scope(scope, now, fx);
        fx.push(Effect::Reply(Ok(format!(
            "drill {id} aborted; what it stopped is being recovered"
        ))));
    }

    fn drill_finish(&mut self, forced: Option<DrillOutcome>, now: u64, fx: &mut Vec<Effect>) {
        let Some(d) = self.drill.take() else {
            return;
        };
        let from = d.stopped_at.unwrap_or(now);
        let services: Vec<ServiceRto> = d
            .services
            .iter()
            .map(|&s| {
                let svc = &self.services[s];
                let rto_ms = d.healthy.get(&s).map(|&t| t.saturating_sub(from));
                let target_ms = svc.info.rto_ms;
                ServiceRto {
                    name: svc.info.name.clone(),
                    rto_ms,
                    target_ms,
                    exceeded: match (rto_ms, target_ms) {
                        (Some(r), Some(t)) => r > t,
                        (None, _) => true,
                        (Some(_), None) => false,
                    },
                }
            })
            .collect();
        let all_back = services.iter().all(|s| s.rto_ms.is_some());
        let rto_ms = all_back
            .then(|| services.iter().filter_map(|s| s.rto_ms).max())
            .flatten();
        let target_ms = match d.scope {
            DrillScope::Stage(i) => self.stages.get(i).and_then(|s| s.info.rto_ms),
            DrillScope::Service(_) => None,
        };
        let stage_over = matches!((rto_ms, target_ms), (Some(r), Some(t)) if r > t);
        let outcome = forced.unwrap_or(if stage_over || services.iter().any(|s| s.exceeded) {
            DrillOutcome::Exceeded
        } else {
            DrillOutcome::Passed
        });
        let (kind, name) = self.scope_name(d.scope);
        fx.push(Effect::DrillDone(DrillResult {
            id: d.id,
            scope_kind: kind.to_owned(),
            scope: name,
            outcome,
            stop_ms: d.stopped_at.map(|t| t.saturating_sub(d.began_at)),
            rto_ms,
            target_ms,
            services,
        }));
    }

    /// The start timeout of `svc` (its stage's).
    fn timeout_for(&self, svc: SvcId) -> u64 {
        self.services
            .get(svc)
            .and_then(|s| s.info.stage)
            .and_then(|i| self.stages.get(i))
            .map_or(120_000, |st| st.info.timeout_ms)
    }
}
