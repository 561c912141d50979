//! The engine's world: every service's lifecycle ([`Life`]) and every
//! stage's ([`StagePhase`]) as enums, plus what was observed (unit states,
//! check results) and the persisted history. Built from the configuration
//! and the plan; changed only by [`super::step`].

use std::collections::BTreeMap;

use super::history::{PersistedState, ServiceRecord};
use super::probe::{ms, CheckRun, CheckSpec};
use crate::config::{
    Config, FailurePolicy, ForeignPolicy, RestartOwner, RestartPolicy, ServiceGate, WatchPolicy,
};
use crate::drive::UnitState;
use crate::plan::Plan;

/// Index of a service in [`World::services`].
pub type SvcId = usize;
/// Index of a stage in [`World::stages`].
pub type StageId = usize;

/// What the engine is run for. The rules are the same; the goal decides
/// which stages are wanted, whether the engine acts, and when it is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Goal {
    /// `mcrecover recover`: ramp every stage up, act (start, restart),
    /// done once every stage is healthy, failed or blocked.
    Recover,
    /// `mcrecover daemon`: ramp up, act, never done; failed and blocked
    /// stages are retried until they heal.
    Daemon,
    /// `mcrecover gate --stage`: one stage, observe only (systemd started
    /// it); done once it is healthy or its timeout passed.
    Gate(StageId),
}

impl Goal {
    /// Whether the engine starts and restarts units in this goal.
    pub fn acts(self) -> bool {
        !matches!(self, Goal::Gate(_))
    }
}

/// A service's lifecycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Life {
    /// Not wanted (yet): its stage has not been started.
    Idle,
    /// Escalated before its stage started: not started, left out of the
    /// stage's verdict (until `ack`).
    Skipped,
    /// Started or restarted; healthy once its unit is up and every check
    /// passed; failing once its unit goes down or at `deadline`.
    Starting {
        /// When it counts as failing if not healthy by then (engine ms).
        deadline: u64,
    },
    /// Unit up, every check passing.
    Healthy {
        /// Since when (engine ms).
        since: u64,
    },
    /// Down or a check failing.
    Failing {
        /// When it is restarted; `None`: not ours to restart (external,
        /// `restart = "no"`, systemd owns restarts, or the gate goal).
        restart_at: Option<u64>,
    },
    /// A restart job is running.
    Restarting,
    /// Failing while an upstream fails: no restart until it is healthy.
    Held {
        /// The root-most troubled upstream.
        by: SvcId,
    },
    /// Its upstream is healthy again: the first check results decide.
    Rechecking,
    /// Restarted too often: no more restarts until `ack` or healthy.
    Escalated,
    /// A check answered "waiting for an operator" (e.g. a sealed vault):
    /// never restarted or escalated for it; healthy once the checks pass.
    Waiting {
        /// When the episode began (engine ms).
        since: u64,
        /// The reminder went out.
        reminded: bool,
    },
    /// Its container runs, but its unit did not start it (another
    /// controller deployed it): checked and reported, never stopped,
    /// replaced or restarted, until adopted.
    Foreign {
        /// Its unit's `InactiveExitTimestamp` when it was found foreign: a
        /// later start of the unit (an operator's `systemctl start`) hands
        /// the service back.
        unit_exit_usec: u64,
    },
}

impl Life {
    /// The name used in status, D-Bus and the journal.
    pub fn name(&self) -> &'static str {
        match self {
            Life::Idle => "pending",
            Life::Skipped | Life::Escalated => "escalated",
            Life::Starting { .. } => "starting",
            Life::Healthy { .. } => "healthy",
            Life::Failing { .. } | Life::Restarting | Life::Rechecking => "unhealthy",
            Life::Held { .. } => "held",
            Life::Waiting { .. } => "waiting",
            Life::Foreign { .. } => "external",
        }
    }
}

/// A start or restart job in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    /// `StartUnit` (the ramp).
    Start,
    /// `RestartUnit` (the restart policy).
    Restart,
    /// `StopUnit` (a drill).
    Stop,
}

/// A job the engine waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Job {
    /// Token the result must carry.
    pub token: u64,
    /// What it is.
    pub kind: JobKind,
}

/// What the configuration says of a service, as the engine needs it.
#[derive(Debug, Clone)]
pub struct SvcInfo {
    /// Service name.
    pub name: String,
    /// Its stage.
    pub stage: Option<StageId>,
    /// Its unit (`None`: external, only checked).
    pub unit: Option<String>,
    /// The engine may restart it (has a unit, `restart` is not `no`).
    pub restartable: bool,
    /// Every upstream (transitively); iterated root-most first.
    pub upstreams: super::policy::SvcSet,
    /// `gate = "running"`: its stage may proceed while it waits for an
    /// operator (else only once it is healthy).
    pub proceed_while_waiting: bool,
    /// Its recovery time objective (ms; drills).
    pub rto_ms: Option<u64>,
}

/// Figures of the last ramp, for the recovery report.
#[derive(Debug, Clone, Default)]
pub struct SvcReport {
    /// Start job result.
    pub job_result: Option<String>,
    /// ActiveState after the start job.
    pub active_state: Option<String>,
    /// Why it could not be started (preflight or start job).
    pub start_error: Option<String>,
    /// When it first became healthy after its stage began (engine ms).
    pub healthy_at: Option<u64>,
    /// Restarts issued during this run.
    pub restarts: u32,
    /// Its unit's last death seen during this run.
    pub died: Option<String>,
    /// Why it was not started.
    pub skipped: Option<String>,
}

/// One service at run time.
#[derive(Debug, Clone)]
pub struct Svc {
    /// What the configuration says.
    pub info: SvcInfo,
    /// Its lifecycle.
    pub life: Life,
    /// Its unit's latest state.
    pub unit: Option<UnitState>,
    /// Its checks.
    pub checks: Vec<CheckRun>,
    /// A start or restart job in flight.
    pub job: Option<Job>,
    /// Persisted history (restarts, backoff, escalation).
    pub history: ServiceRecord,
    /// Why it is failing (empty when not).
    pub reason: String,
    /// Failed since it was last healthy (makes dependents wait).
    pub troubled: bool,
    /// When the current failure was first seen (for the reaction time).
    pub failing_since: Option<u64>,
    /// Figures for the recovery report.
    pub report: SvcReport,
    /// Its container died while its unit still runs (the runner saw the
    /// container's scope go, [`super::Event::ContainerDied`]): the unit
    /// counts as down until a job of the engine's or the unit's own death
    /// catches up.
    pub container_dead: bool,
}

/// A unit is down, or on its way down after a failure: a service whose
/// main process died is `deactivating` (running `ExecStop=`/`ExecStopPost=`)
/// with a `Result` other than `success` before it is `failed`.
pub fn unit_is_down(s: &UnitState) -> bool {
    matches!(s.active_state.as_str(), "failed" | "inactive")
        || s.is_not_found()
        || (s.active_state == "deactivating" && !s.result.is_empty() && s.result != "success")
}

impl Svc {
    /// Its unit is known to be down.
    pub fn unit_down(&self) -> bool {
        self.info.unit.is_some()
            && (self.container_dead || self.unit.as_ref().is_some_and(unit_is_down))
    }

    /// Its unit is not known to be anything but up (external services and
    /// unknown states count as up; the checks decide).
    pub fn unit_up(&self) -> bool {
        self.info.unit.is_none()
            || (!self.container_dead
                && self
                    .unit
                    .as_ref()
                    .is_none_or(|u| u.is_active() || u.active_state == "reloading"))
    }

    /// Its current escalation is the event `event_id`.
    pub fn escalated_by(&self, event_id: &str) -> bool {
        self.history
            .escalated
            .as_ref()
            .is_some_and(|e| e.event_id == event_id)
    }

    /// Something was observed to judge it by: a unit state or a check.
    pub fn observed(&self) -> bool {
        self.unit.is_some() || !self.checks.is_empty()
    }

    /// The check whose latest probe answered "waiting for an operator"
    /// (and that has not passed since).
    pub fn waiting_check(&self) -> Option<&CheckRun> {
        self.checks
            .iter()
            .find(|c| c.passing != Some(true) && c.last.as_ref().is_some_and(|l| l.waiting))
    }

    /// Every check passing (vacuously true without checks).
    pub fn checks_passing(&self) -> bool {
        self.checks.iter().all(|c| c.passing == Some(true))
    }

    /// The first check whose verdict is failing.
    pub fn failing_check(&self) -> Option<&CheckRun> {
        self.checks.iter().find(|c| c.passing == Some(false))
    }

    /// Why the unit is down, for reasons and reports.
    pub fn unit_reason(&self) -> String {
        let st = self.unit.as_ref();
        let result = st
            .filter(|s| !s.result.is_empty() && s.result != "success")
            .map_or(String::new(), |s| format!(" (result {})", s.result));
        format!(
            "unit {} is {}/{}{result}",
            self.info.unit.as_deref().unwrap_or(&self.info.name),
            st.map_or("", |s| s.active_state.as_str()),
            st.map_or("", |s| s.sub_state.as_str())
        )
    }

    /// Why its checks are not passing: the first failing check, else the
    /// latest failed probe.
    pub fn check_reason(&self) -> String {
        let c = self
            .failing_check()
            .or_else(|| {
                self.checks
                    .iter()
                    .find(|c| c.last.as_ref().is_some_and(|l| !l.ok))
            })
            .or_else(|| self.checks.iter().find(|c| c.passing != Some(true)));
        match c {
            Some(c) => match &c.last {
                Some(l) => format!("check {} failing: {}", c.spec.name, l.detail),
                None => format!("check {}: no result yet", c.spec.name),
            },
            None => String::new(),
        }
    }
}

/// A stage's lifecycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StagePhase {
    /// Not wanted yet: an earlier stage is still on its way.
    Pending,
    /// An earlier `block` stage failed; wanted again once it heals.
    Blocked {
        /// The failed stage.
        by: StageId,
    },
    /// Images and host checks before its units start.
    Preflight {
        /// Token the result must carry.
        token: u64,
    },
    /// Units started; waiting for every member to be healthy.
    Gating {
        /// When the stage counts as failed.
        deadline: u64,
    },
    /// Every member was healthy (later stages are wanted).
    Healthy,
    /// Not healthy by its deadline, or its preflight failed.
    Failed {
        /// When its preflight is tried again (daemon; a failed preflight
        /// left its units unstarted).
        retry_at: Option<u64>,
    },
}

impl StagePhase {
    /// The name used in status and reports.
    pub fn name(&self) -> &'static str {
        match self {
            StagePhase::Pending => "pending",
            StagePhase::Blocked { .. } => "blocked",
            StagePhase::Preflight { .. } => "preflight",
            StagePhase::Gating { .. } => "gating",
            StagePhase::Healthy => "healthy",
            StagePhase::Failed { .. } => "failed",
        }
    }
}

/// What the configuration says of a stage.
#[derive(Debug, Clone)]
pub struct StageInfo {
    /// Stage name.
    pub name: String,
    /// Its services.
    pub members: Vec<SvcId>,
    /// `on_failure = "block"`.
    pub block: bool,
    /// Its timeout (ms).
    pub timeout_ms: u64,
    /// Its gate unit.
    pub gate_unit: String,
    /// Its recovery time objective (ms; drills).
    pub rto_ms: Option<u64>,
}

/// One stage at run time.
#[derive(Debug, Clone)]
pub struct Stage {
    /// What the configuration says.
    pub info: StageInfo,
    /// Its lifecycle.
    pub phase: StagePhase,
    /// When it was first started (engine ms).
    pub started_at: Option<u64>,
    /// When the current attempt began (engine ms).
    pub attempt_at: u64,
    /// When it last became healthy or failed (engine ms).
    pub ended_at: Option<u64>,
    /// Preflight attempts.
    pub attempts: u32,
    /// Start its units with dependencies ignored (an earlier stage failed).
    pub ignore_deps: bool,
    /// The blocked alert of the current blocking episode went out.
    pub alerted: bool,
    /// It failed and has not been healthy since.
    pub failing: bool,
}

/// The whole state the engine decides on.
#[derive(Debug, Clone)]
pub struct World {
    /// What it is run for.
    pub goal: Goal,
    /// Restart policy.
    pub policy: WatchPolicy,
    /// Platform name.
    pub platform: String,
    /// Services, indexed by [`SvcId`].
    pub services: Vec<Svc>,
    /// Services in plan order (upstreams first).
    pub order: Vec<SvcId>,
    /// Stages, in order.
    pub stages: Vec<Stage>,
    /// systemd is reachable.
    pub bus_up: bool,
    /// When the run began (engine ms).
    pub began_at: u64,
    /// The ramp has been started.
    pub begun: bool,
    /// Every stage reached healthy once (the "recovery finished" note went out).
    pub ramp_done: bool,
    /// A recovery drill in progress.
    pub drill: Option<super::drill::Drill>,
    pub(super) next_token: u64,
}

impl World {
    /// A world for `goal` from the configuration, the plan and the persisted
    /// history (services not in it start with none).
    pub fn new(cfg: &Config, plan: &Plan, goal: Goal, history: &PersistedState) -> World {
        let ids: BTreeMap<&str, SvcId> = plan
            .order
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i))
            .collect();
        let mut ups = super::policy::upstream_sets(plan);
        let stage_of: BTreeMap<&str, StageId> = plan
            .stages
            .iter()
            .enumerate()
            .flat_map(|(i, st)| st.services.iter().map(move |s| (s.as_str(), i)))
            .collect();
        let services = plan
            .order
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let ps = plan.services.get(name);
                let svc = cfg.services.get(name);
                let restartable = svc
                    .and_then(|s| s.container.as_ref())
                    .is_some_and(|c| c.restart != RestartPolicy::No);
                let checks = svc
                    .map(|s| {
                        s.checks
                            .iter()
                            .map(|c| {
                                CheckRun::new(
                                    CheckSpec::of(c).spread(&format!("{name}/{}", c.name)),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let upstreams = ups.get_mut(i).map(std::mem::take).unwrap_or_default();
                Svc {
                    info: SvcInfo {
                        name: name.clone(),
                        stage: stage_of.get(name.as_str()).copied(),
                        unit: ps.and_then(|p| p.unit.clone()),
                        restartable,
                        upstreams,
                        proceed_while_waiting: svc.is_some_and(|s| s.gate == ServiceGate::Running),
                        rto_ms: svc.and_then(|s| s.rto).map(ms),
                    },
                    life: Life::Idle,
                    unit: None,
                    checks,
                    job: None,
                    history: history.services.get(name).cloned().unwrap_or_default(),
                    reason: String::new(),
                    troubled: false,
                    failing_since: None,
                    container_dead: false,
                    report: SvcReport::default(),
                }
            })
            .collect();
        let stages = plan
            .stages
            .iter()
            .zip(&cfg.stages)
            .map(|(ps, cs)| Stage {
                info: StageInfo {
                    name: ps.name.clone(),
                    members: ps
                        .services
                        .iter()
                        .filter_map(|s| ids.get(s.as_str()).copied())
                        .collect(),
                    block: cs.on_failure == FailurePolicy::Block,
                    timeout_ms: ms(cs.timeout),
                    gate_unit: ps.gate.clone(),
                    rto_ms: cs.rto.map(ms),
                },
                phase: StagePhase::Pending,
                started_at: None,
                attempt_at: 0,
                ended_at: None,
                attempts: 0,
                ignore_deps: false,
                alerted: false,
                failing: false,
            })
            .collect();
        World {
            goal,
            policy: cfg.watch.clone(),
            platform: cfg.platform.name.clone(),
            services,
            order: (0..plan.order.len()).collect(),
            stages,
            bus_up: goal.acts(),
            began_at: 0,
            begun: false,
            ramp_done: false,
            drill: None,
            next_token: 1,
        }
    }

    /// The service called `name`.
    pub fn find(&self, name: &str) -> Option<SvcId> {
        self.services.iter().position(|s| s.info.name == name)
    }

    /// The service whose unit is `unit`.
    pub fn by_unit(&self, unit: &str) -> Option<SvcId> {
        self.services
            .iter()
            .position(|s| s.info.unit.as_deref() == Some(unit))
    }

    /// The persisted history of every service.
    pub fn history(&self) -> PersistedState {
        PersistedState {
            version: 1,
            services: self
                .services
                .iter()
                .filter(|s| s.history != ServiceRecord::default())
                .map(|s| (s.info.name.clone(), s.history.clone()))
                .collect(),
            boot_id: None,
        }
    }

    /// A container another controller started is taken over (replaced by
    /// the unit's) instead of left alone.
    pub fn takes_over(&self) -> bool {
        self.policy.foreign == ForeignPolicy::TakeOver
    }

    /// The engine restarts units whose unit went down (not systemd).
    pub fn owns_restarts(&self) -> bool {
        self.policy.restart_owner == RestartOwner::Mcrecover
    }

    /// The stage name of a service.
    pub fn stage_name(&self, svc: SvcId) -> Option<&str> {
        self.services
            .get(svc)
            .and_then(|s| s.info.stage)
            .and_then(|i| self.stages.get(i))
            .map(|s| s.info.name.as_str())
    }

    /// Whether the goal is reached: recover, every stage healthy, failed or
    /// blocked; gate, its stage healthy or failed; the daemon never.
    pub fn settled(&self) -> bool {
        let done = |p: &StagePhase| {
            matches!(
                p,
                StagePhase::Healthy | StagePhase::Failed { .. } | StagePhase::Blocked { .. }
            )
        };
        match self.goal {
            Goal::Daemon => false,
            Goal::Recover => self.begun && self.stages.iter().all(|s| done(&s.phase)),
            Goal::Gate(i) => self
                .stages
                .get(i)
                .is_none_or(|s| matches!(s.phase, StagePhase::Healthy | StagePhase::Failed { .. })),
        }
    }

    pub(super) fn token(&mut self) -> u64 {
        self.next_token += 1;
        self.next_token
    }
}
