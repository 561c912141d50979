//! The engine's transitions: [`step`] takes one [`Event`] at `now` and
//! returns the [`Effect`]s to carry out; one method per transition. After
//! every event the world is reconciled: each service in plan order
//! (upstreams first), then the stages (verdicts, the ramp), twice, so that
//! what one pass decides is acted on at once.
//!
//! The one rule of every goal and phase: a wanted service whose unit goes
//! down (or whose checks fail) is restarted under the one restart policy
//! (at once the first time, then with backoff; escalated after
//! `escalate_after` restarts within the window), unless an upstream is
//! failing (then it is held) or it is escalated. A stage's deadline only
//! decides when the stage counts as failed; it never silences a restart.
//!
//! Two states are never restarted: `waiting` (a check answered "waiting
//! for an operator", e.g. a sealed vault: a restart would only re-seal it;
//! one notice and one hook per episode, one reminder) and `external` (its
//! container was started by another controller: checked and reported,
//! never stopped or replaced, until adopted or its unit is started again).

use super::model::{
    unit_is_down, Goal, Job, JobKind, Life, StageId, StagePhase, Svc, SvcId, World,
};
use super::policy::{backoff_delay, should_escalate};
use super::probe::{ms, Cadence};
use crate::drive::UnitState;

/// Something that happened, as the engine sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Start the run (the ramp; the gate's stage).
    Begin,
    /// Time passed (a deadline the engine asked for is due).
    Tick,
    /// A unit's state changed (D-Bus), or its current state was read.
    Unit {
        /// The service.
        svc: SvcId,
        /// Its unit's state.
        state: UnitState,
    },
    /// A start or restart job finished.
    JobDone {
        /// The service.
        svc: SvcId,
        /// The job's token.
        token: u64,
        /// `(job result, unit state after it)`, or why it failed.
        result: Result<(String, UnitState), String>,
    },
    /// A probe finished.
    ProbeDone {
        /// The service.
        svc: SvcId,
        /// Index of the check.
        check: usize,
        /// The probe's token.
        token: u64,
        /// Whether it passed.
        ok: bool,
        /// It did not pass because the service waits for an operator.
        waiting: bool,
        /// What it saw.
        detail: String,
    },
    /// A container of the service's name runs that its unit did not start
    /// (found before a start or restart, which was then not carried out, or
    /// by watching podman).
    Foreign {
        /// The service.
        svc: SvcId,
        /// The start or restart job withheld because of it.
        token: Option<u64>,
        /// What runs (container id, image, who started it).
        detail: String,
    },
    /// The service's container died while its unit still runs: its
    /// transient scope (`libpod-<id>.scope`) was unloaded. Acted on only
    /// with `[watch] foreign = "take-over"` (nothing to defer to), before
    /// podman's cleanup and the unit's stop (issue 15).
    ContainerDied {
        /// The service.
        svc: SvcId,
        /// What was seen.
        detail: String,
    },
    /// An operator hands an external service back to its unit.
    Adopt(SvcId),
    /// An operator starts a recovery drill.
    DrillStart(super::drill::DrillScope),
    /// An operator aborts the drill in progress.
    DrillAbort,
    /// A stage's preflight finished.
    PreflightDone {
        /// The stage.
        stage: StageId,
        /// The preflight's token.
        token: u64,
        /// Per service, what keeps it from starting (empty: go).
        problems: Vec<(SvcId, String)>,
    },
    /// systemd became reachable (true) or was lost (false).
    Bus(bool),
    /// An operator re-armed an escalated service.
    Ack(SvcId),
    /// An operator asked for a restart now.
    RestartNow(SvcId),
    /// An operator asked to retry now what waits (failed stages, backoff).
    RetryNow,
    /// The escalation actions of `event_id` ran; `remedy` says whether the
    /// configured remedy applies to the diagnosis.
    EscalationDone {
        /// The service.
        svc: SvcId,
        /// The escalation event.
        event_id: String,
        /// The remedy applies and was not tried for this event yet.
        remedy: bool,
    },
    /// The remedy of `event_id` ran.
    RemedyDone {
        /// The service.
        svc: SvcId,
        /// The escalation event.
        event_id: String,
        /// Whether it worked (then one more restart is issued).
        ok: bool,
    },
}

/// Something to carry out, or to tell.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Images and host checks of `services` (those whose unit is not
    /// running); answer with [`Event::PreflightDone`].
    Preflight {
        /// The stage.
        stage: StageId,
        /// Token to answer with.
        token: u64,
        /// Its services with a unit.
        services: Vec<SvcId>,
    },
    /// `StartUnit`; answer with [`Event::JobDone`].
    Start {
        /// The service.
        svc: SvcId,
        /// Token to answer with.
        token: u64,
        /// Start with dependencies ignored.
        ignore_deps: bool,
        /// Replace a container of its name that another controller started
        /// (else answer with [`Event::Foreign`] instead of starting).
        replace: bool,
    },
    /// `ResetFailedUnit` (when `reset_failed`) then `RestartUnit`; answer
    /// with [`Event::JobDone`].
    Restart {
        /// The service.
        svc: SvcId,
        /// Token to answer with.
        token: u64,
        /// The unit is failed: reset it first.
        reset_failed: bool,
        /// Replace a container of its name that another controller started
        /// (else answer with [`Event::Foreign`] instead of restarting).
        replace: bool,
    },
    /// `StopUnit` with dependencies ignored (a drill: its dependents stay
    /// up); answer with [`Event::JobDone`].
    Stop {
        /// The service.
        svc: SvcId,
        /// Token to answer with.
        token: u64,
    },
    /// A drill ended: record its result (journal, state directory, status).
    DrillDone(super::drill::DrillResult),
    /// Start the stage's gate unit (marks the stage passed in systemd).
    StartGate(StageId),
    /// Probe one check; answer with [`Event::ProbeDone`].
    Probe {
        /// The service.
        svc: SvcId,
        /// Index of the check.
        check: usize,
        /// Token to answer with.
        token: u64,
    },
    /// Run the escalation actions (diagnosis, journal, hook, webhook);
    /// answer with [`Event::EscalationDone`].
    Escalate {
        /// The service.
        svc: SvcId,
        /// The event id (actions run once per id).
        event_id: String,
        /// Restarts within the window.
        restarts: u32,
        /// The last failure.
        reason: String,
    },
    /// A service waits for an operator: tell it (journal notice with the
    /// remedy; hook and webhook unless `reminder`). Once per waiting
    /// episode, plus one reminder.
    OperatorWait {
        /// The service.
        svc: SvcId,
        /// The episode's id (`<service>-wait-<ms>`).
        event_id: String,
        /// The check that answered.
        check: String,
        /// What the operator must do (the check's `remedy`).
        remedy: String,
        /// What the check saw.
        detail: String,
        /// This is the reminder (the episode is still going on).
        reminder: bool,
        /// How long it has waited so far (ms).
        waited_ms: u64,
    },
    /// Run the configured remedy; answer with [`Event::RemedyDone`].
    Remedy {
        /// The service.
        svc: SvcId,
        /// The escalation event.
        event_id: String,
    },
    /// A `block` stage failed and keeps later stages from starting: alert
    /// (once per blocking episode).
    AlertBlocked {
        /// The failed stage.
        stage: StageId,
        /// Its services that are not healthy, with why.
        failing: Vec<(SvcId, String)>,
    },
    /// Save the history ([`World::history`]).
    Persist,
    /// Something worth telling (log, progress, status).
    Note(Note),
    /// The answer to an operator's request.
    Reply(Result<String, String>),
}

/// Something worth telling.
#[derive(Debug, Clone, PartialEq)]
pub enum Note {
    /// A stage begins (preflight, then its units start).
    StageStarted(StageId),
    /// A stage's preflight found problems.
    PreflightFailed {
        /// The service.
        svc: SvcId,
        /// The problem.
        error: String,
    },
    /// A unit's start job finished (`Ok((job result, ActiveState))`).
    UnitStarted {
        /// The service.
        svc: SvcId,
        /// The result.
        result: Result<(String, String), String>,
    },
    /// A check's probe finished while its service was starting.
    Probe {
        /// The service.
        svc: SvcId,
        /// Index of the check.
        check: usize,
    },
    /// A service changed state.
    ServiceState {
        /// The service.
        svc: SvcId,
        /// Old state name.
        old: &'static str,
        /// New state name.
        new: &'static str,
    },
    /// A restart was issued.
    RestartIssued {
        /// The service.
        svc: SvcId,
        /// Restarts within the escalation window, this one included.
        restarts: u32,
        /// From the failure being seen to the restart (ms).
        reaction_ms: u64,
        /// What triggered it.
        trigger: &'static str,
    },
    /// A restart or start job failed.
    JobFailed {
        /// The service.
        svc: SvcId,
        /// Why.
        error: String,
    },
    /// A stage became healthy or failed.
    StageDone {
        /// The stage.
        stage: StageId,
        /// Healthy (true) or failed.
        healthy: bool,
    },
    /// A stage waits for a failed `block` stage.
    Blocked {
        /// The waiting stage.
        stage: StageId,
        /// The failed stage.
        by: StageId,
    },
    /// Every stage was healthy (the ramp is done).
    RampDone,
    /// A service was healthy long enough: its backoff is reset.
    BackoffReset(SvcId),
    /// A container another controller started was found for a service.
    Foreign {
        /// The service.
        svc: SvcId,
        /// What runs.
        detail: String,
        /// It is taken over (`[watch] foreign = "take-over"`), else left alone.
        taken_over: bool,
    },
    /// A daemon restarted on the same boot found a service's unit still
    /// running the instance the previous daemon saw healthy: it is judged
    /// as healthy (steady checks), not as starting.
    Resumed(SvcId),
    /// A service that waited for an operator is healthy again.
    WaitOver {
        /// The service.
        svc: SvcId,
        /// How long it waited (ms), if the wait was seen in this run.
        waited_ms: Option<u64>,
    },
    /// An escalated service is re-armed (acknowledged, or healthy again).
    Rearmed {
        /// The service.
        svc: SvcId,
        /// Acknowledged by an operator (else healthy again).
        ack: bool,
    },
}

/// Apply `event` at `now` (engine milliseconds; monotonic) to `world`.
pub fn step(world: &mut World, event: Event, now: u64) -> Vec<Effect> {
    let mut fx = Vec::new();
    world.on_event(event, now, &mut fx);
    world.reconcile(now, &mut fx);
    fx
}

/// The earliest time the engine wants a [`Event::Tick`].
pub fn next_deadline(world: &World) -> Option<u64> {
    let mut t: Option<u64> = None;
    let mut at = |x: u64| t = Some(t.map_or(x, |t| t.min(x)));
    for s in &world.services {
        for c in &s.checks {
            if let (Some(d), None) = (c.due, c.in_flight) {
                at(d);
            }
        }
        match s.life {
            Life::Starting { deadline } => at(deadline),
            Life::Failing {
                restart_at: Some(r),
            } if world.bus_up => at(r),
            Life::Waiting {
                since,
                reminded: false,
            } if world.goal.acts() => at(since.saturating_add(ms(world.policy.wait_reminder))),
            Life::Healthy { since }
                if world.goal == Goal::Daemon
                    && (s.history.backoff_level > 0 || !s.history.restarts.is_empty()) =>
            {
                at(since.saturating_add(ms(world.policy.backoff_reset)));
            }
            _ => {}
        }
    }
    if let Some(d) = &world.drill {
        at(d.deadline);
    }
    for st in &world.stages {
        match st.phase {
            StagePhase::Gating { deadline } => at(deadline),
            StagePhase::Failed { retry_at: Some(r) } => at(r),
            _ => {}
        }
    }
    t
}

impl World {
    fn on_event(&mut self, event: Event, now: u64, fx: &mut Vec<Effect>) {
        match event {
            Event::Begin => self.begin(now, fx),
            Event::Tick => {}
            Event::Unit { svc, state } => self.on_unit(svc, state),
            Event::JobDone { svc, token, result } => self.on_job_done(svc, token, result, now, fx),
            Event::ProbeDone {
                svc,
                check,
                token,
                ok,
                waiting,
                detail,
            } => self.on_probe(svc, check, token, (ok, waiting), detail, now, fx),
            Event::Foreign { svc, token, detail } => self.on_foreign(svc, token, &detail, now, fx),
            Event::ContainerDied { svc, detail } => self.on_container_died(svc, detail, now, fx),
            Event::Adopt(svc) => self.on_adopt(svc, now, fx),
            Event::DrillStart(scope) => self.drill_start(scope, now, fx),
            Event::DrillAbort => self.drill_abort(now, fx),
            Event::PreflightDone {
                stage,
                token,
                problems,
            } => self.on_preflight(stage, token, problems, now, fx),
            Event::Bus(up) => self.bus_up = up && self.goal.acts(),
            Event::Ack(svc) => self.on_ack(svc, now, fx),
            Event::RestartNow(svc) => self.on_restart_now(svc, now, fx),
            Event::RetryNow => self.on_retry_now(now, fx),
            Event::EscalationDone {
                svc,
                event_id,
                remedy,
            } => self.on_escalation_done(svc, &event_id, remedy, fx),
            Event::RemedyDone { svc, event_id, ok } => {
                self.on_remedy_done(svc, &event_id, ok, now, fx);
            }
        }
    }

    // ----- events --------------------------------------------------------

    fn begin(&mut self, now: u64, fx: &mut Vec<Effect>) {
        if self.begun {
            return;
        }
        self.begun = true;
        self.began_at = now;
        if let Goal::Gate(i) = self.goal {
            // systemd started the stage: only its verdict is ours.
            for st in 0..self.stages.len() {
                if st != i {
                    self.stages[st].phase = StagePhase::Healthy;
                }
            }
            self.start_members(i, now, fx);
            return;
        }
        // Services in no stage (external ones not listed in a stage) are wanted
        // from the start.
        for svc in 0..self.services.len() {
            if self.services[svc].info.stage.is_none() {
                self.start_one(svc, now, false, fx);
            }
        }
    }

    fn on_unit(&mut self, svc: SvcId, state: UnitState) {
        let Some(s) = self.services.get_mut(svc) else {
            return;
        };
        // A state older than one already seen (e.g. a job's re-read): skip.
        if s.unit
            .as_ref()
            .is_some_and(|old| state.inactive_exit_usec < old.inactive_exit_usec)
        {
            return;
        }
        // The unit's own death (or a new instance) catches up with its
        // container's.
        if unit_is_down(&state)
            || s.unit
                .as_ref()
                .is_some_and(|old| state.inactive_exit_usec > old.inactive_exit_usec)
        {
            s.container_dead = false;
        }
        s.unit = Some(state);
    }

    /// The container of `svc` died; its unit has not noticed yet. With
    /// `take-over` the engine acts now, as on the unit's death: the restart
    /// job is queued behind systemd's stop of the unit. Otherwise the
    /// unit's own death is waited for (its stop commands run after a
    /// deploy's podman, and the ownership look sees the deployed container
    /// only then).
    fn on_container_died(&mut self, svc: SvcId, detail: String, now: u64, fx: &mut Vec<Effect>) {
        if !self.goal.acts() || !self.takes_over() || !self.owns_restarts() {
            return;
        }
        let Some(s) = self.services.get_mut(svc) else {
            return;
        };
        let watched = matches!(
            s.life,
            Life::Starting { .. } | Life::Healthy { .. } | Life::Rechecking | Life::Waiting { .. }
        );
        if !watched || s.job.is_some() || !s.unit_up() || s.info.unit.is_none() {
            return;
        }
        s.container_dead = true;
        s.report.died = Some(detail.clone());
        self.fail(svc, detail, now, fx);
    }

    fn on_job_done(
        &mut self,
        svc: SvcId,
        token: u64,
        result: Result<(String, UnitState), String>,
        now: u64,
        fx: &mut Vec<Effect>,
    ) {
        let timeout = self.timeout_of(svc);
        let Some(s) = self.services.get_mut(svc) else {
            return;
        };
        let Some(job) = s.job.filter(|j| j.token == token) else {
            return;
        };
        s.job = None;
        if job.kind == JobKind::Stop {
            if let Ok((_, state)) = result {
                s.unit = Some(state);
            }
            self.drill_stopped(now, fx);
            return;
        }
        match result {
            Ok((job_result, state)) => {
                if job.kind == JobKind::Start {
                    fx.push(Effect::Note(Note::UnitStarted {
                        svc,
                        result: Ok((job_result.clone(), state.active_state.clone())),
                    }));
                    s.report.job_result = Some(job_result);
                    s.report.active_state = Some(state.active_state.clone());
                    s.report.start_error = None;
                }
                // The instance the previous daemon (this boot) saw healthy,
                // still running: judged as healthy, not as starting.
                let known = job.kind == JobKind::Start
                    && matches!(s.life, Life::Starting { .. })
                    && state.is_active()
                    && state.inactive_exit_usec > 0
                    && s.history.healthy_instance == Some(state.inactive_exit_usec);
                if s.unit
                    .as_ref()
                    .is_none_or(|old| state.inactive_exit_usec >= old.inactive_exit_usec)
                {
                    s.unit = Some(state);
                }
                if known {
                    fx.push(Effect::Note(Note::Resumed(svc)));
                    self.healthy(svc, now, fx);
                    // Judged at once, with the steady thresholds.
                    for c in &mut self.services[svc].checks {
                        if c.in_flight.is_none() {
                            c.due = Some(now);
                        }
                    }
                    return;
                }
                if job.kind == JobKind::Restart && s.life == Life::Restarting {
                    // A new failure after this restart is timed from its own start.
                    s.failing_since = None;
                    s.life = Life::Starting {
                        deadline: now.saturating_add(timeout),
                    };
                    for c in &mut s.checks {
                        c.reset(Cadence::Fast, now);
                    }
                }
            }
            Err(error) => {
                if job.kind == JobKind::Start {
                    fx.push(Effect::Note(Note::UnitStarted {
                        svc,
                        result: Err(error.clone()),
                    }));
                    s.report.start_error = Some(error.clone());
                } else {
                    fx.push(Effect::Note(Note::JobFailed {
                        svc,
                        error: error.clone(),
                    }));
                }
                self.fail(svc, error, now, fx);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_probe(
        &mut self,
        svc: SvcId,
        check: usize,
        token: u64,
        (ok, waiting): (bool, bool),
        detail: String,
        now: u64,
        fx: &mut Vec<Effect>,
    ) {
        let Some(s) = self.services.get_mut(svc) else {
            return;
        };
        let starting = matches!(s.life, Life::Starting { .. });
        if let Some(c) = s.checks.get_mut(check) {
            if c.on_result(token, ok, waiting, detail, now) && starting {
                fx.push(Effect::Note(Note::Probe { svc, check }));
            }
        }
    }

    fn on_preflight(
        &mut self,
        stage: StageId,
        token: u64,
        problems: Vec<(SvcId, String)>,
        now: u64,
        fx: &mut Vec<Effect>,
    ) {
        let Some(st) = self.stages.get(stage) else {
            return;
        };
        if st.phase != (StagePhase::Preflight { token }) {
            return;
        }
        if problems.is_empty() {
            self.start_members(stage, now, fx);
            return;
        }
        for (svc, error) in problems {
            if let Some(s) = self.services.get_mut(svc) {
                s.report.start_error = Some(error.clone());
                s.reason.clone_from(&error);
                fx.push(Effect::Note(Note::PreflightFailed { svc, error }));
            }
        }
        let attempts = self.stages[stage].attempts;
        let retry_at = (self.goal == Goal::Daemon)
            .then(|| now.saturating_add(ms(backoff_delay(&self.policy, attempts.max(1)))));
        self.stage_failed(stage, retry_at, now, fx);
    }

    fn on_ack(&mut self, svc: SvcId, now: u64, fx: &mut Vec<Effect>) {
        let Some(s) = self.services.get_mut(svc) else {
            fx.push(Effect::Reply(Err("no such service".into())));
            return;
        };
        let Some(esc) = s.history.escalated.take() else {
            let name = s.info.name.clone();
            fx.push(Effect::Reply(Ok(format!(
                "{name} is not escalated; nothing to do"
            ))));
            return;
        };
        s.history.reset_backoff();
        // Reaction times after an ack count from the ack.
        s.failing_since = None;
        let name = s.info.name.clone();
        fx.push(Effect::Persist);
        fx.push(Effect::Note(Note::Rearmed { svc, ack: true }));
        fx.push(Effect::Reply(Ok(format!(
            "{name} re-armed (event {}); restarts resume with the initial backoff",
            esc.event_id
        ))));
        match s.life {
            Life::Skipped => {
                let stage = s.info.stage;
                // Its stage has started: start it now.
                if stage.is_some_and(|i| self.stage_started(i)) {
                    self.services[svc].report.skipped = None;
                    self.start_one(svc, now, false, fx);
                } else {
                    self.services[svc].life = Life::Idle;
                }
            }
            Life::Escalated => {
                let reason = if s.unit_down() {
                    s.unit_reason()
                } else {
                    s.check_reason()
                };
                s.life = Life::Failing { restart_at: None };
                self.fail(svc, reason, now, fx);
            }
            _ => {}
        }
    }

    fn on_restart_now(&mut self, svc: SvcId, now: u64, fx: &mut Vec<Effect>) {
        let acts = self.goal.acts();
        let bus = self.bus_up;
        let Some(s) = self.services.get_mut(svc) else {
            fx.push(Effect::Reply(Err("no such service".into())));
            return;
        };
        let name = s.info.name.clone();
        let refuse = if s.info.unit.is_none() {
            Some(format!(
                "{name} is external: it is checked, never restarted"
            ))
        } else if matches!(s.life, Life::Foreign { .. }) {
            Some(format!(
                "{name}'s container was started by another controller: it is left alone; `mcrecover adopt {name}` hands it back to its unit"
            ))
        } else if s.job.is_some() {
            Some(format!("a restart of {name} is already running"))
        } else if !acts || !bus {
            Some("systemd is unreachable right now".to_owned())
        } else {
            None
        };
        if let Some(why) = refuse {
            fx.push(Effect::Reply(Err(why)));
            return;
        }
        s.history.backoff_level = 0;
        if s.failing_since.is_none() {
            s.failing_since = Some(now);
        }
        if s.reason.is_empty() {
            "restart requested".clone_into(&mut s.reason);
        }
        s.troubled = true;
        let replace = self.takes_over();
        self.issue_restart(svc, now, "api", replace, fx);
        fx.push(Effect::Reply(Ok(format!("restart of {name} issued"))));
    }

    fn on_retry_now(&mut self, now: u64, fx: &mut Vec<Effect>) {
        let mut n = 0;
        for st in &mut self.stages {
            if let StagePhase::Failed { retry_at: Some(r) } = &mut st.phase {
                *r = now;
                n += 1;
            }
        }
        for s in &mut self.services {
            if let Life::Failing {
                restart_at: Some(r),
            } = &mut s.life
            {
                *r = now;
                n += 1;
            }
        }
        fx.push(Effect::Reply(Ok(format!(
            "retrying now: {n} stage preflight(s) and restart(s) that were waiting"
        ))));
    }

    fn on_escalation_done(
        &mut self,
        svc: SvcId,
        event_id: &str,
        remedy: bool,
        fx: &mut Vec<Effect>,
    ) {
        let Some(s) = self.services.get_mut(svc) else {
            return;
        };
        let current = s.escalated_by(event_id);
        if !remedy || !current || s.history.remedy_tried.as_deref() == Some(event_id) {
            return;
        }
        s.history.remedy_tried = Some(event_id.to_owned());
        fx.push(Effect::Persist);
        fx.push(Effect::Remedy {
            svc,
            event_id: event_id.to_owned(),
        });
    }

    fn on_remedy_done(
        &mut self,
        svc: SvcId,
        event_id: &str,
        ok: bool,
        now: u64,
        fx: &mut Vec<Effect>,
    ) {
        let Some(s) = self.services.get(svc) else {
            return;
        };
        if ok && s.escalated_by(event_id) && s.job.is_none() && self.goal.acts() {
            let replace = self.takes_over();
            self.issue_restart(svc, now, "remedy", replace, fx);
        }
    }

    fn on_foreign(
        &mut self,
        svc: SvcId,
        token: Option<u64>,
        detail: &str,
        now: u64,
        fx: &mut Vec<Effect>,
    ) {
        let takes_over = self.takes_over();
        let bus = self.bus_up;
        if !self.goal.acts() {
            return;
        }
        let Some(s) = self.services.get_mut(svc) else {
            return;
        };
        match (token, s.job) {
            (Some(t), Some(job)) if job.token == t => {
                s.job = None;
                if job.kind == JobKind::Restart {
                    // The restart was not carried out: it does not count
                    // (backoff, escalation window, totals).
                    s.history.restarts.pop();
                    s.history.backoff_level = s.history.backoff_level.saturating_sub(1);
                    s.history.total_restarts = s.history.total_restarts.saturating_sub(1);
                    s.report.restarts = s.report.restarts.saturating_sub(1);
                    fx.push(Effect::Persist);
                }
            }
            // Another job is in flight: it decides.
            (_, Some(_)) => return,
            _ => {}
        }
        if matches!(s.life, Life::Foreign { .. }) {
            return;
        }
        fx.push(Effect::Note(Note::Foreign {
            svc,
            detail: detail.to_owned(),
            taken_over: takes_over,
        }));
        if takes_over {
            if bus {
                self.issue_restart(svc, now, "take over", true, fx);
            } else {
                let r = format!("another controller's container runs: {detail}");
                self.fail(svc, r, now, fx);
            }
            return;
        }
        let exit = s.unit.as_ref().map_or(0, |u| u.inactive_exit_usec);
        s.failing_since = None;
        s.reason = format!("started by another controller: {detail}");
        for c in &mut s.checks {
            if c.running() {
                c.set_cadence(Cadence::Steady, now);
            } else {
                c.reset(Cadence::Steady, now);
            }
        }
        self.set_life(
            svc,
            Life::Foreign {
                unit_exit_usec: exit,
            },
            fx,
        );
    }

    fn on_adopt(&mut self, svc: SvcId, now: u64, fx: &mut Vec<Effect>) {
        let acts = self.goal.acts();
        let bus = self.bus_up;
        let Some(s) = self.services.get_mut(svc) else {
            fx.push(Effect::Reply(Err("no such service".into())));
            return;
        };
        let name = s.info.name.clone();
        if !matches!(s.life, Life::Foreign { .. }) {
            fx.push(Effect::Reply(Ok(format!(
                "{name} is not run by another controller; nothing to do"
            ))));
            return;
        }
        if !acts || !bus {
            fx.push(Effect::Reply(Err(
                "systemd is unreachable right now".to_owned()
            )));
            return;
        }
        s.history.backoff_level = 0;
        s.failing_since = Some(now);
        "adopted: its unit replaces the other controller's container".clone_into(&mut s.reason);
        self.issue_restart(svc, now, "adopt", true, fx);
        fx.push(Effect::Reply(Ok(format!(
            "{name} adopted: its unit is restarted and replaces the other controller's container"
        ))));
    }

    // ----- reconcile -----------------------------------------------------

    fn reconcile(&mut self, now: u64, fx: &mut Vec<Effect>) {
        for _ in 0..2 {
            for i in 0..self.order.len() {
                let svc = self.order[i];
                self.evaluate(svc, now, fx);
            }
            self.evaluate_stages(now, fx);
        }
        self.drill_progress(now, fx);
        self.schedule_probes(now, fx);
    }

    /// The root-most upstream of `svc` that is in trouble.
    fn troubled_upstream(&self, svc: SvcId) -> Option<SvcId> {
        if !self.goal.acts() {
            return None;
        }
        let s = self.services.get(svc)?;
        s.info
            .upstreams
            .iter()
            .find(|&u| self.services.get(u).is_some_and(is_troubled))
    }

    fn evaluate(&mut self, svc: SvcId, now: u64, fx: &mut Vec<Effect>) {
        let up = self.troubled_upstream(svc);
        let owns = self.owns_restarts();
        let bus = self.bus_up;
        let reset_ms = ms(self.policy.backoff_reset);
        let daemon = self.goal == Goal::Daemon;
        let Some(s) = self.services.get_mut(svc) else {
            return;
        };
        let acts = self.goal.acts();
        let reminder_ms = ms(self.policy.wait_reminder);
        let down = s.job.is_none() && s.unit_down() && (owns || !acts);
        let up_and_passing = s.job.is_none() && s.unit_up() && s.checks_passing();
        let waiting = s.job.is_none() && s.unit_up() && s.waiting_check().is_some();
        match s.life.clone() {
            Life::Idle | Life::Skipped | Life::Restarting => {}
            Life::Starting { deadline } => {
                if down {
                    let r = s.unit_reason();
                    s.report.died = Some(r.clone());
                    self.fail(svc, r, now, fx);
                } else if up_and_passing {
                    self.healthy(svc, now, fx);
                } else if waiting {
                    self.wait(svc, now, fx);
                } else if now >= deadline {
                    let r = if s.unit_up() {
                        s.check_reason()
                    } else {
                        s.unit_reason()
                    };
                    let r = if r.is_empty() {
                        "not healthy within its stage's timeout".to_owned()
                    } else {
                        r
                    };
                    self.fail(svc, r, now, fx);
                }
            }
            Life::Rechecking => {
                if down {
                    let r = s.unit_reason();
                    self.fail(svc, r, now, fx);
                } else if up_and_passing {
                    self.healthy(svc, now, fx);
                } else if waiting {
                    self.wait(svc, now, fx);
                } else if s.failing_check().is_some() {
                    let r = s.check_reason();
                    self.fail(svc, r, now, fx);
                }
            }
            Life::Healthy { since } => {
                if down {
                    let r = s.unit_reason();
                    s.report.died = Some(r.clone());
                    self.fail(svc, r, now, fx);
                } else if waiting {
                    self.wait(svc, now, fx);
                } else if s.failing_check().is_some() {
                    let r = s.check_reason();
                    self.fail(svc, r, now, fx);
                } else if daemon
                    && now.saturating_sub(since) >= reset_ms
                    && (s.history.backoff_level > 0 || !s.history.restarts.is_empty())
                {
                    s.history.reset_backoff();
                    fx.push(Effect::Persist);
                    fx.push(Effect::Note(Note::BackoffReset(svc)));
                }
            }
            Life::Failing { restart_at } => {
                if up_and_passing && s.observed() {
                    self.healthy(svc, now, fx);
                } else if waiting {
                    self.wait(svc, now, fx);
                } else if let Some(by) = up {
                    self.set_life(svc, Life::Held { by }, fx);
                } else if restart_at.is_some_and(|t| t <= now) && bus {
                    let replace = self.takes_over();
                    self.issue_restart(svc, now, "backoff elapsed", replace, fx);
                }
            }
            Life::Held { by } => {
                if up_and_passing && s.observed() && up.is_none() {
                    self.healthy(svc, now, fx);
                } else if waiting {
                    self.wait(svc, now, fx);
                } else if let Some(u) = up {
                    if u != by {
                        s.life = Life::Held { by: u };
                    }
                } else if down {
                    // Upstream healthy again; its own unit is down.
                    let r = s.unit_reason();
                    s.life = Life::Failing { restart_at: None };
                    self.fail(svc, r, now, fx);
                } else {
                    for c in &mut s.checks {
                        c.set_cadence(Cadence::Recheck, now);
                    }
                    self.set_life(svc, Life::Rechecking, fx);
                }
            }
            Life::Escalated => {
                if up_and_passing && s.observed() {
                    self.healthy(svc, now, fx);
                }
            }
            Life::Waiting { since, reminded } => {
                if down {
                    // Its container died: restarted like any other (it will
                    // wait again, in the same episode).
                    let r = s.unit_reason();
                    s.report.died = Some(r.clone());
                    self.fail(svc, r, now, fx);
                } else if up_and_passing {
                    self.healthy(svc, now, fx);
                } else if !waiting && s.failing_check().is_some() {
                    let r = s.check_reason();
                    self.fail(svc, r, now, fx);
                } else if !reminded && acts && now.saturating_sub(since) >= reminder_ms {
                    s.life = Life::Waiting {
                        since,
                        reminded: true,
                    };
                    if let Some(fx1) = wait_effect(s, svc, true, now.saturating_sub(since)) {
                        fx.push(fx1);
                    }
                }
            }
            Life::Foreign { unit_exit_usec } => {
                let restarted = s.job.is_none()
                    && s.unit
                        .as_ref()
                        .is_some_and(|u| u.is_active() && u.inactive_exit_usec > unit_exit_usec);
                if restarted {
                    // Its unit was started again (an operator's
                    // `systemctl start`): the unit's container replaced the
                    // other one; the service is ours again.
                    let timeout = self.timeout_of(svc);
                    let s = &mut self.services[svc];
                    for c in &mut s.checks {
                        c.reset(Cadence::Fast, now);
                    }
                    s.reason.clear();
                    self.set_life(
                        svc,
                        Life::Starting {
                            deadline: now.saturating_add(timeout),
                        },
                        fx,
                    );
                } else if s.failing_check().is_some() {
                    s.reason = format!("started by another controller; {}", s.check_reason());
                }
            }
        }
    }

    /// `svc` answered "waiting for an operator": no restart, no escalation;
    /// the operator is told once per episode (the episode id is persisted, so
    /// a daemon restart does not tell again).
    fn wait(&mut self, svc: SvcId, now: u64, fx: &mut Vec<Effect>) {
        let acts = self.goal.acts();
        let Some(s) = self.services.get_mut(svc) else {
            return;
        };
        s.failing_since = None;
        s.reason = match s.waiting_check().and_then(|c| c.last.as_ref()) {
            Some(l) => format!("waiting for an operator: {}", l.detail),
            None => "waiting for an operator".to_owned(),
        };
        for c in &mut s.checks {
            c.set_cadence(Cadence::Steady, now);
            if let (Some(l), None) = (&c.last, c.in_flight) {
                if l.waiting {
                    let poll = c.spec.interval_ms.min(super::probe::WAIT_POLL_MS);
                    c.due = Some(l.at.saturating_add(poll).max(now));
                }
            }
        }
        if s.history.waiting.is_none() {
            s.history.waiting = Some(format!("{}-wait-{now}", s.info.name));
            fx.push(Effect::Persist);
            if acts {
                if let Some(e) = wait_effect(s, svc, false, 0) {
                    fx.push(e);
                }
            }
        }
        self.set_life(
            svc,
            Life::Waiting {
                since: now,
                reminded: false,
            },
            fx,
        );
    }

    pub(super) fn set_life(&mut self, svc: SvcId, life: Life, fx: &mut Vec<Effect>) {
        let Some(s) = self.services.get_mut(svc) else {
            return;
        };
        let old = s.life.name();
        let new = life.name();
        s.life = life;
        if old != new {
            fx.push(Effect::Note(Note::ServiceState { svc, old, new }));
        }
    }

    fn healthy(&mut self, svc: SvcId, now: u64, fx: &mut Vec<Effect>) {
        let Some(s) = self.services.get_mut(svc) else {
            return;
        };
        s.troubled = false;
        s.failing_since = None;
        s.reason.clear();
        let instance = s
            .unit
            .as_ref()
            .filter(|u| u.inactive_exit_usec > 0)
            .map(|u| u.inactive_exit_usec);
        if instance.is_some() && s.history.healthy_instance != instance {
            s.history.healthy_instance = instance;
            fx.push(Effect::Persist);
        }
        if s.report.healthy_at.is_none() {
            s.report.healthy_at = Some(now);
        }
        for c in &mut s.checks {
            c.set_cadence(Cadence::Steady, now);
        }
        if s.history.escalated.take().is_some() {
            fx.push(Effect::Persist);
            fx.push(Effect::Note(Note::Rearmed { svc, ack: false }));
        }
        if s.history.waiting.take().is_some() {
            let waited_ms = match s.life {
                Life::Waiting { since, .. } => Some(now.saturating_sub(since)),
                _ => None,
            };
            fx.push(Effect::Persist);
            fx.push(Effect::Note(Note::WaitOver { svc, waited_ms }));
        }
        self.set_life(svc, Life::Healthy { since: now }, fx);
        self.drill_healthy(svc, now);
    }

    /// `svc` is failing for `reason`: decide between held, escalated, not
    /// ours to restart, escalate now, and a restart after the backoff.
    fn fail(&mut self, svc: SvcId, reason: String, now: u64, fx: &mut Vec<Effect>) {
        let up = self.troubled_upstream(svc);
        let acts = self.goal.acts();
        let owns = self.owns_restarts();
        let drilled = self.drilled(svc);
        let policy = self.policy.clone();
        let Some(s) = self.services.get_mut(svc) else {
            return;
        };
        s.reason = reason;
        s.troubled = true;
        if s.failing_since.is_none() {
            s.failing_since = Some(now);
        }
        let down = s.unit_down();
        let life = if !acts {
            Life::Failing { restart_at: None }
        } else if s.history.escalated.is_some() {
            Life::Escalated
        } else if let Some(by) = up {
            Life::Held { by }
        } else if !s.info.restartable || s.info.unit.is_none() || (down && !owns) {
            Life::Failing { restart_at: None }
        } else if !drilled
            && should_escalate(
                &policy,
                s.history.restarts_in_window(now, policy.escalate_window),
            )
        {
            self.escalate(svc, now, fx);
            return;
        } else {
            let delay = ms(backoff_delay(&policy, s.history.backoff_level));
            Life::Failing {
                restart_at: Some(now.saturating_add(delay)),
            }
        };
        self.set_life(svc, life, fx);
    }

    fn escalate(&mut self, svc: SvcId, now: u64, fx: &mut Vec<Effect>) {
        let window = self.policy.escalate_window;
        let Some(s) = self.services.get_mut(svc) else {
            return;
        };
        let event_id = format!("{}-{now}", s.info.name);
        let restarts = s.history.restarts_in_window(now, window);
        s.history.escalated = Some(super::history::Escalation {
            event_id: event_id.clone(),
            reason: s.reason.clone(),
            at_ms: now,
        });
        // At most once per event id, also across a daemon restart.
        s.history.mark_actions_done(&event_id);
        let reason = s.reason.clone();
        fx.push(Effect::Persist);
        fx.push(Effect::Escalate {
            svc,
            event_id,
            restarts,
            reason,
        });
        self.set_life(svc, Life::Escalated, fx);
    }

    fn issue_restart(
        &mut self,
        svc: SvcId,
        now: u64,
        trigger: &'static str,
        replace: bool,
        fx: &mut Vec<Effect>,
    ) {
        let window = self.policy.escalate_window;
        let token = self.token();
        let Some(s) = self.services.get_mut(svc) else {
            return;
        };
        s.history.record_restart(now, window);
        s.container_dead = false;
        s.report.restarts = s.report.restarts.saturating_add(1);
        let restarts = s.history.restarts_in_window(now, window);
        let reaction_ms = s.failing_since.map_or(0, |t| now.saturating_sub(t));
        let reset_failed = s.unit.as_ref().is_some_and(UnitState::is_failed);
        s.job = Some(Job {
            token,
            kind: JobKind::Restart,
        });
        for c in &mut s.checks {
            c.stop();
        }
        fx.push(Effect::Note(Note::RestartIssued {
            svc,
            restarts,
            reaction_ms,
            trigger,
        }));
        fx.push(Effect::Restart {
            svc,
            token,
            reset_failed,
            replace,
        });
        fx.push(Effect::Persist);
        self.set_life(svc, Life::Restarting, fx);
    }

    fn schedule_probes(&mut self, now: u64, fx: &mut Vec<Effect>) {
        for svc in 0..self.services.len() {
            let probing = matches!(
                self.services[svc].life,
                Life::Starting { .. }
                    | Life::Healthy { .. }
                    | Life::Failing { .. }
                    | Life::Held { .. }
                    | Life::Rechecking
                    | Life::Escalated
                    | Life::Waiting { .. }
                    | Life::Foreign { .. }
            );
            if !probing {
                continue;
            }
            // A container whose start (or restart) job still runs is not
            // running yet: probing it is pointless, and under rootful podman
            // 5 a TCP probe in the moment between podman reserving the host
            // port and its DNAT rule would be accepted by conmon's
            // reservation socket and pass before the service listens (seen
            // in the trixie testbed). Due probes go out once the job is done.
            if matches!(self.services[svc].life, Life::Starting { .. })
                && self.services[svc].job.is_some()
            {
                continue;
            }
            for check in 0..self.services[svc].checks.len() {
                let token = self.next_token + 1;
                if self.services[svc].checks[check].take_due(now, token) {
                    self.next_token = token;
                    fx.push(Effect::Probe { svc, check, token });
                }
            }
        }
    }

    // ----- stages --------------------------------------------------------

    /// The timeout of `svc`'s stage (how long a start may take).
    fn timeout_of(&self, svc: SvcId) -> u64 {
        self.services
            .get(svc)
            .and_then(|s| s.info.stage)
            .and_then(|i| self.stages.get(i))
            .map_or(120_000, |st| st.info.timeout_ms)
    }

    /// Whether stage `stage`'s units have been started (its members are
    /// wanted).
    fn stage_started(&self, stage: StageId) -> bool {
        self.stages.get(stage).is_some_and(|st| match st.phase {
            StagePhase::Gating { .. } | StagePhase::Healthy => true,
            StagePhase::Failed { .. } => st
                .info
                .members
                .iter()
                .any(|&m| self.services[m].life != Life::Idle),
            _ => false,
        })
    }

    /// May stage `i` begin? `Ok(ignore_deps)`, `Err(Some(by))` blocked by a
    /// failed `block` stage, `Err(None)` an earlier stage is on its way.
    fn may_begin(&self, i: StageId) -> Result<bool, Option<StageId>> {
        let mut ignore = false;
        for (j, st) in self.stages.iter().enumerate().take(i) {
            match st.phase {
                // Its gate unit was not started (it wants the skipped,
                // escalated services): later units must not pull it in
                // through their `Requires=`.
                StagePhase::Healthy
                    if st
                        .info
                        .members
                        .iter()
                        .any(|&m| self.services[m].life == Life::Skipped) =>
                {
                    ignore = true;
                }
                StagePhase::Healthy => {}
                StagePhase::Failed { .. } if st.info.block => return Err(Some(j)),
                StagePhase::Failed { .. } => ignore = true,
                StagePhase::Blocked { by } => return Err(Some(by)),
                _ => return Err(None),
            }
        }
        Ok(ignore)
    }

    fn evaluate_stages(&mut self, now: u64, fx: &mut Vec<Effect>) {
        if !self.begun {
            return;
        }
        for i in 0..self.stages.len() {
            match self.stages[i].phase.clone() {
                StagePhase::Pending | StagePhase::Blocked { .. } => {
                    if matches!(self.goal, Goal::Gate(_)) {
                        continue;
                    }
                    match self.may_begin(i) {
                        Ok(ignore) => self.begin_stage(i, ignore, now, fx),
                        Err(Some(by)) => self.block_stage(i, by, fx),
                        Err(None) => {}
                    }
                }
                StagePhase::Preflight { .. } => {}
                StagePhase::Gating { deadline } => {
                    if self.members_healthy(i) {
                        self.stage_healthy(i, now, fx);
                    } else if now >= deadline {
                        self.stage_failed(i, None, now, fx);
                    }
                }
                StagePhase::Failed { retry_at } => {
                    let started = self.stages[i]
                        .info
                        .members
                        .iter()
                        .all(|&m| self.services[m].life != Life::Idle);
                    if started && self.members_healthy(i) {
                        self.stage_healthy(i, now, fx);
                    } else if retry_at.is_some_and(|r| r <= now) && self.bus_up {
                        let ignore = self.stages[i].ignore_deps;
                        self.begin_stage(i, ignore, now, fx);
                    }
                }
                StagePhase::Healthy => {}
            }
        }
        if !self.ramp_done
            && !matches!(self.goal, Goal::Gate(_))
            && self.stages.iter().all(|s| s.phase == StagePhase::Healthy)
        {
            self.ramp_done = true;
            fx.push(Effect::Note(Note::RampDone));
        }
    }

    /// Every member that is not skipped is healthy (and its unit up), or
    /// waits for an operator with `gate = "running"`, or runs under another
    /// controller with its checks passing.
    fn members_healthy(&self, stage: StageId) -> bool {
        self.stages[stage].info.members.iter().all(|&m| {
            let s = &self.services[m];
            match s.life {
                Life::Skipped => true,
                Life::Healthy { .. } => !s.unit_down(),
                Life::Waiting { .. } => s.info.proceed_while_waiting && !s.unit_down(),
                Life::Foreign { .. } => s.observed() && s.checks_passing(),
                _ => false,
            }
        })
    }

    fn begin_stage(&mut self, i: StageId, ignore_deps: bool, now: u64, fx: &mut Vec<Effect>) {
        if !self.bus_up && self.goal.acts() {
            // Begun once systemd is back.
            return;
        }
        let token = self.token();
        let st = &mut self.stages[i];
        let was_blocked = matches!(st.phase, StagePhase::Blocked { .. });
        st.phase = StagePhase::Preflight { token };
        st.attempts = st.attempts.saturating_add(1);
        st.attempt_at = now;
        st.ignore_deps = ignore_deps;
        if st.started_at.is_none() {
            st.started_at = Some(now);
        }
        let members = st.info.members.clone();
        if was_blocked || st.attempts == 1 {
            fx.push(Effect::Note(Note::StageStarted(i)));
        }
        let services: Vec<SvcId> = members
            .into_iter()
            .filter(|&m| {
                let s = &self.services[m];
                s.info.unit.is_some() && s.history.escalated.is_none()
            })
            .collect();
        fx.push(Effect::Preflight {
            stage: i,
            token,
            services,
        });
    }

    /// The stage's units start: every member is wanted from now on.
    fn start_members(&mut self, i: StageId, now: u64, fx: &mut Vec<Effect>) {
        let acts = self.goal.acts();
        let st = &mut self.stages[i];
        if st.started_at.is_none() {
            st.started_at = Some(now);
            st.attempt_at = now;
        }
        let deadline = st.attempt_at.saturating_add(st.info.timeout_ms);
        let ignore = st.ignore_deps;
        st.phase = StagePhase::Gating { deadline };
        for m in st.info.members.clone() {
            let s = &mut self.services[m];
            match s.life {
                Life::Idle | Life::Skipped => {}
                // Already wanted (a retried stage): its own lifecycle goes on.
                _ => continue,
            }
            if let Some(esc) = s.history.escalated.as_ref().filter(|_| acts) {
                if s.life != Life::Skipped {
                    s.report.skipped =
                        Some(format!("escalated ({}): {}", esc.event_id, esc.reason));
                    s.life = Life::Skipped;
                    s.troubled = true;
                    s.reason.clone_from(&esc.reason);
                }
                continue;
            }
            self.start_one(m, now, ignore, fx);
            if let Life::Starting { deadline: d } = &mut self.services[m].life {
                *d = deadline.max(now);
            }
        }
    }

    pub(super) fn start_one(
        &mut self,
        svc: SvcId,
        now: u64,
        ignore_deps: bool,
        fx: &mut Vec<Effect>,
    ) {
        let timeout = self.timeout_of(svc);
        let acts = self.goal.acts();
        let replace = self.takes_over();
        let token = self.token();
        let s = &mut self.services[svc];
        for c in &mut s.checks {
            c.reset(Cadence::Fast, now);
        }
        if s.info.unit.is_some() && acts {
            s.job = Some(Job {
                token,
                kind: JobKind::Start,
            });
            fx.push(Effect::Start {
                svc,
                token,
                ignore_deps,
                replace,
            });
        }
        self.set_life(
            svc,
            Life::Starting {
                deadline: now.saturating_add(timeout),
            },
            fx,
        );
    }

    fn stage_healthy(&mut self, i: StageId, now: u64, fx: &mut Vec<Effect>) {
        let skipped = self.stages[i]
            .info
            .members
            .iter()
            .any(|&m| self.services[m].life == Life::Skipped);
        let st = &mut self.stages[i];
        st.phase = StagePhase::Healthy;
        st.ended_at = Some(now);
        st.alerted = false;
        st.failing = false;
        fx.push(Effect::Note(Note::StageDone {
            stage: i,
            healthy: true,
        }));
        // Mark the stage passed in systemd too (its gate runs the same checks
        // once more); not when services were skipped (it wants them).
        if self.goal.acts() && !skipped {
            fx.push(Effect::StartGate(i));
        }
    }

    fn stage_failed(&mut self, i: StageId, retry_at: Option<u64>, now: u64, fx: &mut Vec<Effect>) {
        let st = &mut self.stages[i];
        // Told once per failure, not at every preflight retry.
        let first = !matches!(st.phase, StagePhase::Failed { .. }) && !st.failing;
        st.failing = true;
        st.phase = StagePhase::Failed { retry_at };
        st.ended_at = Some(now);
        if first {
            fx.push(Effect::Note(Note::StageDone {
                stage: i,
                healthy: false,
            }));
        }
    }

    fn block_stage(&mut self, i: StageId, by: StageId, fx: &mut Vec<Effect>) {
        if self.stages[i].phase == (StagePhase::Blocked { by }) {
            return;
        }
        self.stages[i].phase = StagePhase::Blocked { by };
        fx.push(Effect::Note(Note::Blocked { stage: i, by }));
        if self.goal == Goal::Daemon && !self.stages[by].alerted {
            self.stages[by].alerted = true;
            let failing = self.stages[by]
                .info
                .members
                .iter()
                .filter(|&&m| !matches!(self.services[m].life, Life::Healthy { .. }))
                .map(|&m| (m, self.services[m].reason.clone()))
                .collect();
            fx.push(Effect::AlertBlocked { stage: by, failing });
        }
    }
}

/// Whether a service counts as a failing upstream: failed since it was
/// last healthy, in a failing state, waiting for an operator, or its latest
/// probe of a check failed (even below the threshold: a dependent whose
/// checks fail because of it must not win the race and be restarted first).
fn is_troubled(s: &Svc) -> bool {
    s.troubled
        || matches!(
            s.life,
            Life::Failing { .. }
                | Life::Restarting
                | Life::Held { .. }
                | Life::Escalated
                | Life::Skipped
                | Life::Rechecking
                | Life::Waiting { .. }
        )
        || matches!(s.life, Life::Healthy { .. } | Life::Foreign { .. })
            && s.checks
                .iter()
                .any(|c| c.last.as_ref().is_some_and(|l| !l.ok))
}

/// The [`Effect::OperatorWait`] of `s` (from its waiting check).
fn wait_effect(s: &Svc, svc: SvcId, reminder: bool, waited_ms: u64) -> Option<Effect> {
    let c = s.waiting_check()?;
    Some(Effect::OperatorWait {
        svc,
        event_id: s.history.waiting.clone().unwrap_or_default(),
        check: c.spec.name.clone(),
        remedy: c.spec.remedy.clone().unwrap_or_default(),
        detail: c
            .last
            .as_ref()
            .map(|l| l.detail.clone())
            .unwrap_or_default(),
        reminder,
        waited_ms,
    })
}
