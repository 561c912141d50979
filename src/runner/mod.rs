//! The effect runner: the I/O edge of the reconciliation engine. It owns the
//! [`World`], feeds it events ([`Runner::next`] waits for the next one: a
//! unit change over D-Bus, a probe or job result, a due deadline) and
//! carries out the effects that touch systemd, podman and the network
//! (preflight, start, restart, gate units, probes), each in its own task
//! whose result comes back as an event. What it does not carry out itself
//! (escalation actions, persistence, replies, notes) it returns to its
//! caller: `mcrecover recover`, `mcrecover gate` or the daemon shell.
//! Every note is also logged here, with structured fields.

mod log;
pub mod owner;
mod preflight;
mod scope;
pub mod verdict;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::check::{ExecVia, UnitExec};
use crate::config::{Config, Mode};
use crate::drive::{
    BusTarget, JobMode, ManagerEvent, ManagerWatch, Systemd, UnitChange, UnitWatch,
};
use crate::engine::history::PersistedState;
use crate::engine::{next_deadline, step, Effect, Event, Goal, Life, StageId, SvcId, World};
use crate::images::PodmanRunner;
use crate::plan::Plan;

pub use log::RESTART_MESSAGE_ID;

/// Called after every probe with the service, the check's index and how
/// long the probe took (its timeout when it was abandoned): the daemon's
/// metrics ([`crate::metrics`]). Runs in the probe's task: must be cheap.
pub type ProbeTimer = Arc<dyn Fn(SvcId, usize, Duration) + Send + Sync>;

/// Upper bound for one restart job (stop + start) before it is given up.
const RESTART_TIMEOUT: Duration = Duration::from_secs(300);
/// Extra time a probe gets beyond its own timeout before it is abandoned.
const PROBE_SLACK: Duration = Duration::from_secs(2);
/// Reconnect delays after the bus is lost.
const RECONNECT_FIRST: Duration = Duration::from_millis(200);
const RECONNECT_MAX: Duration = Duration::from_secs(5);
/// Upper bound for subscribing to every unit.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(15);

/// The engine's clock: milliseconds that advance with the monotonic clock
/// and start at the wall-clock time of the run's start, so they compare
/// with persisted timestamps but never jump.
#[derive(Debug, Clone, Copy)]
struct Clock {
    t0: Instant,
    base: u64,
}

impl Clock {
    fn new() -> Clock {
        Clock {
            t0: Instant::now(),
            base: crate::watch::state::now_ms(SystemTime::now()),
        }
    }

    fn now(&self) -> u64 {
        self.base
            .saturating_add(u64::try_from(self.t0.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    fn instant(&self, t: u64) -> Instant {
        self.t0 + Duration::from_millis(t.saturating_sub(self.base))
    }
}

/// A live subscription to one manager.
struct Subscription {
    sd: Systemd,
    units: Option<UnitWatch>,
    mgr: Option<ManagerWatch>,
}

/// Runs the engine against one systemd manager (or none: the gate goal).
pub struct Runner {
    cfg: Arc<Config>,
    plan: Arc<Plan>,
    world: World,
    clock: Clock,
    target: Option<BusTarget>,
    sub: Option<Subscription>,
    tx: mpsc::UnboundedSender<Event>,
    rx: mpsc::UnboundedReceiver<Event>,
    conn_tx: mpsc::UnboundedSender<Subscription>,
    conn_rx: mpsc::UnboundedReceiver<Subscription>,
    reconnecting: bool,
    /// The next stage's preflight, run ahead while a stage is gated.
    ahead: Option<(StageId, tokio::sync::oneshot::Receiver<bool>)>,
    /// See [`Runner::hide_from_commands`].
    hide: Vec<String>,
    /// See [`Runner::set_exec_via`].
    exec: Option<ExecVia>,
    /// See [`Runner::time_probes`].
    probe_timer: Option<ProbeTimer>,
    /// Unit states held back while the ownership look after their unit
    /// went down runs (see [`Runner::look_before_death`]), per service.
    held: std::collections::BTreeMap<SvcId, Vec<crate::drive::UnitState>>,
    /// Results of those looks: the service and the foreign container's
    /// detail, if one holds the name.
    owner_tx: mpsc::UnboundedSender<(SvcId, Option<String>)>,
    owner_rx: mpsc::UnboundedReceiver<(SvcId, Option<String>)>,
    /// Held services whose look waits for the unit to be fully down (it
    /// was seen `deactivating` after its process died: its stop commands
    /// still run, and a deploy's `--replace` may not have created its
    /// container yet).
    deferred: std::collections::BTreeSet<SvcId>,
    /// Gate unit start jobs in flight: `recover` waits for them before it
    /// returns (the last stage's gate, and so `metacircular.target`, is
    /// active when it exits).
    gates: Vec<tokio::task::JoinHandle<()>>,
    /// When an ownership look last began that found a service's name free:
    /// the look after its unit went down, or the next stage's repeated look
    /// ([`Runner::look_ahead`]). A restart or start issued within
    /// [`LOOK_FRESH`] of it does not look again (the same answer, 50–180 ms
    /// later on the path to the container's start; issue 15).
    looked_free: std::collections::BTreeMap<SvcId, Instant>,
    /// The next stage's ownership look, repeated while the stage before it
    /// is gated (see [`Runner::look_ahead`]).
    look_ahead: Option<LookAhead>,
    /// Results of those looks: when the look began, and the services whose
    /// container name it found free.
    ahead_tx: mpsc::UnboundedSender<AheadLook>,
    ahead_rx: mpsc::UnboundedReceiver<AheadLook>,
    /// When a look ahead last found every dependency of a service's unit
    /// settled but the previous stage's gate: its start may skip them
    /// (`ignore-dependencies`) within [`LOOK_FRESH`].
    deps_settled: std::collections::BTreeMap<SvcId, Instant>,
    /// Per service, its unit's main process (conmon) and the container it
    /// monitors: whose scope going away is the container's death (only
    /// with `[watch] foreign = "take-over"`; see [`scope`]).
    containers: std::collections::BTreeMap<SvcId, (u32, String)>,
}

/// One round of [`Runner::look_ahead`].
#[derive(Debug)]
struct AheadLook {
    /// When the round began.
    at: Instant,
    /// Services whose container name was free.
    free: Vec<SvcId>,
    /// Services whose unit's dependencies were settled (see
    /// [`Systemd::unsettled_dependencies`]) but for the previous stage's
    /// gate unit, which the engine has seen pass.
    settled: Vec<SvcId>,
    /// A round of [`Runner::look_ahead`] (the next one is due
    /// [`LOOK_REFRESH`] after it began), not a stage's own look.
    ahead: bool,
}

/// The repeated ownership look for a stage about to start.
#[derive(Debug)]
struct LookAhead {
    stage: StageId,
    /// When the next look is due (`None` while one runs).
    next_at: Option<Instant>,
    /// No look after this: a stage gated this long does not need its
    /// successor's looks ready (each start then looks itself).
    until: Instant,
}

/// How often the next stage's ownership look is repeated while the stage
/// before it is gated: a look is at most this old, plus its own duration,
/// when the stage's units start, within [`LOOK_FRESH`].
const LOOK_REFRESH: Duration = Duration::from_millis(500);

/// How long the next stage's looks are repeated at most.
const LOOK_AHEAD_FOR: Duration = Duration::from_secs(120);

/// How long an ownership look that found a service's container name free
/// stands in for the look before its start or restart job: the look after
/// its unit went down (for the restart), or the next stage's repeated look
/// (for the start).
const LOOK_FRESH: Duration = Duration::from_secs(1);

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("goal", &self.world.goal)
            .field("connected", &self.sub.is_some())
            .finish_non_exhaustive()
    }
}

impl Runner {
    /// A runner for `goal`. With a manager (`sd`, reached at `target` for
    /// reconnects) it watches the units and acts; without one it only
    /// probes (the gate goal). Call [`Runner::subscribe`] before the first
    /// event when there is a manager.
    pub fn new(
        cfg: Config,
        plan: Plan,
        goal: Goal,
        history: &PersistedState,
        sd: Option<Systemd>,
        target: Option<BusTarget>,
    ) -> Runner {
        let mut world = World::new(&cfg, &plan, goal, history);
        world.bus_up = sd.is_some() && goal.acts();
        let (tx, rx) = mpsc::unbounded_channel();
        let (conn_tx, conn_rx) = mpsc::unbounded_channel();
        let (owner_tx, owner_rx) = mpsc::unbounded_channel();
        let (ahead_tx, ahead_rx) = mpsc::unbounded_channel();
        Runner {
            cfg: Arc::new(cfg),
            plan: Arc::new(plan),
            world,
            clock: Clock::new(),
            target,
            sub: sd.map(|sd| Subscription {
                sd,
                units: None,
                mgr: None,
            }),
            tx,
            rx,
            conn_tx,
            conn_rx,
            reconnecting: false,
            ahead: None,
            hide: Vec::new(),
            exec: None,
            probe_timer: None,
            held: std::collections::BTreeMap::new(),
            owner_tx,
            owner_rx,
            deferred: std::collections::BTreeSet::new(),
            gates: Vec::new(),
            looked_free: std::collections::BTreeMap::new(),
            look_ahead: None,
            ahead_tx,
            ahead_rx,
            deps_settled: std::collections::BTreeMap::new(),
            containers: std::collections::BTreeMap::new(),
        }
    }

    /// Paths that exec checks and the hook must not see when they run in
    /// transient units of the system manager (the daemon's state directory
    /// and configuration file).
    pub fn hide_from_commands(&mut self, paths: Vec<String>) {
        self.hide = paths;
    }

    /// Tell `timer` how long every probe took (the daemon's metrics).
    pub fn time_probes(&mut self, timer: ProbeTimer) {
        self.probe_timer = Some(timer);
    }

    /// Where exec checks run when this runner drives no manager (the gate
    /// goal): see [`Runner::exec_via`].
    pub fn set_exec_via(&mut self, via: ExecVia) {
        self.exec = Some(via);
    }

    /// Where exec checks and the hook run: as transient units of the
    /// manager this runner drives; without one, as [`Runner::set_exec_via`]
    /// said, else as children.
    pub fn exec_via(&self) -> ExecVia {
        if let Some(via) = &self.exec {
            return via.clone();
        }
        match self.sd() {
            Some(sd) => ExecVia::Unit(UnitExec {
                sd,
                system: self.cfg.platform.mode == Mode::Rootful,
                default_user: self.cfg.platform.user.as_ref().map(|u| u.name.clone()),
                hide: self.hide.clone(),
            }),
            None => ExecVia::Child,
        }
    }

    /// The engine's world (read only: it changes through events).
    pub fn world(&self) -> &World {
        &self.world
    }

    /// Where results of work done outside the runner go (they come back
    /// from [`Runner::next`]).
    pub fn sender(&self) -> mpsc::UnboundedSender<Event> {
        self.tx.clone()
    }

    /// The configuration it runs.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The plan it runs.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The engine's current time.
    pub fn now(&self) -> u64 {
        self.clock.now()
    }

    /// The manager connection, if any.
    pub fn systemd(&self) -> Option<&Systemd> {
        self.sub.as_ref().map(|s| &s.sd)
    }

    /// Subscribe to every unit's changes (the watch first yields each
    /// unit's current state) and to the manager's bus name. On failure the
    /// runner reconnects in the background.
    pub async fn subscribe(&mut self) {
        let Some(sd) = self.sub.as_ref().map(|s| s.sd.clone()) else {
            return;
        };
        let units = self.units();
        match subscribe(sd, units).await {
            Ok(sub) => self.sub = Some(sub),
            Err(e) => {
                warn!(error = %e, "subscribing to unit changes failed; reconnecting");
                self.bus_lost("subscribe failed");
            }
        }
    }

    fn units(&self) -> Vec<String> {
        self.world
            .services
            .iter()
            .filter_map(|s| s.info.unit.clone())
            .collect()
    }

    /// Wait for the next event: a result of a task, a unit change, a lost
    /// or regained manager, or the engine's next deadline (`Tick`).
    /// Cancel-safe (every branch is a channel or a timer).
    pub async fn next(&mut self) -> Event {
        loop {
            let deadline = next_deadline(&self.world).map(|t| self.clock.instant(t));
            let (units, mgr) = match &mut self.sub {
                Some(s) => (s.units.as_mut(), s.mgr.as_mut()),
                None => (None, None),
            };
            tokio::select! {
                biased;
                Some(ev) = self.rx.recv() => return ev,
                Some((svc, foreign)) = self.owner_rx.recv() => {
                    // The look is done: what it found first, then the
                    // unit's states in the order they came.
                    if let Some(detail) = foreign {
                        self.looked_free.remove(&svc);
                        let _ = self.tx.send(Event::Foreign { svc, token: None, detail });
                    } else {
                        self.looked_free.insert(svc, Instant::now());
                    }
                    for state in self.held.remove(&svc).unwrap_or_default() {
                        let _ = self.tx.send(Event::Unit { svc, state });
                    }
                }
                Some(round) = self.ahead_rx.recv() => self.apply_look(round),
                () = sleep_until_opt(self.look_ahead.as_ref().and_then(|la| la.next_at)) => {
                    self.look_ahead_now();
                }
                Some(sub) = self.conn_rx.recv() => {
                    info!(address = %sub.sd.address(), "reconnected to systemd");
                    self.sub = Some(sub);
                    self.reconnecting = false;
                    return Event::Bus(true);
                }
                change = next_change(units) => match change {
                    Some(c) => {
                        if let Some(svc) = self.world.by_unit(&c.unit) {
                            self.note_container(svc, &c.state);
                            if let Some(held) = self.held.get_mut(&svc) {
                                let fully_down = unit_gone(&c.state);
                                let up = !crate::engine::model::unit_is_down(&c.state);
                                held.push(c.state);
                                if self.deferred.contains(&svc) && (fully_down || up) {
                                    self.deferred.remove(&svc);
                                    if fully_down {
                                        self.spawn_look(svc);
                                    } else if let Some(held) = self.held.remove(&svc) {
                                        // Up again before the look: nothing to look for.
                                        for state in held {
                                            let _ = self.tx.send(Event::Unit { svc, state });
                                        }
                                    }
                                }
                            } else if self.look_before_death(svc, &c.state) {
                                self.held.insert(svc, vec![c.state]);
                            } else {
                                return Event::Unit { svc, state: c.state };
                            }
                        }
                    }
                    None => {
                        self.bus_lost("unit watch ended");
                        return Event::Bus(false);
                    }
                },
                mev = next_manager(mgr) => match mev {
                    Some(ManagerEvent::OwnerChanged(Some(owner))) => {
                        self.bus_lost(&format!("systemd re-connected to the bus as {owner}"));
                        return Event::Bus(false);
                    }
                    Some(ManagerEvent::OwnerChanged(None)) => {}
                    Some(ManagerEvent::UnitRemoved(unit)) => {
                        if let Some(ev) = self.container_gone(&unit) {
                            return ev;
                        }
                    }
                    None => {
                        self.bus_lost("manager watch ended");
                        return Event::Bus(false);
                    }
                },
                () = sleep_until_opt(deadline) => return Event::Tick,
            }
        }
    }

    /// Apply `event` now: step the engine, carry out the I/O effects, log
    /// the notes; return the effects left to the caller (escalation,
    /// remedy, alert, persist, note, reply).
    pub fn handle(&mut self, event: Event) -> Vec<Effect> {
        let now = self.clock.now();
        if let Event::PreflightDone {
            stage, problems, ..
        } = &event
        {
            // The stage's own look, sent before this event: its starts come
            // in this step.
            while let Ok(round) = self.ahead_rx.try_recv() {
                self.apply_look(round);
            }
            if problems.is_empty() {
                // This stage's units start now: look at the next stage's
                // images and host checks while this one is gated.
                self.preflight_ahead(stage + 1);
            }
        }
        let fx = step(&mut self.world, event, now);
        let mut rest = Vec::new();
        // Gate units start after the jobs of this step: a next stage's
        // start job pulls its gate in itself (`Requires=`), so systemd takes
        // that job first instead of one StartUnit call later (issue 15: a
        // StartUnit round trip is 15–35 ms in the sandbox).
        let mut gates = Vec::new();
        for e in fx {
            match e {
                Effect::Preflight {
                    stage,
                    token,
                    services,
                } => self.preflight(stage, token, services),
                Effect::Start {
                    svc,
                    token,
                    ignore_deps,
                    replace,
                } => self.start(svc, token, ignore_deps, replace),
                Effect::Restart {
                    svc,
                    token,
                    reset_failed,
                    replace,
                } => self.restart(svc, token, reset_failed, replace),
                Effect::StartGate(stage) => {
                    // The verdict before any job of this step can pull the
                    // gate unit in.
                    self.write_verdict(stage);
                    gates.push(stage);
                }
                Effect::Stop { svc, token } => self.stop(svc, token),
                Effect::Probe { svc, check, token } => self.probe(svc, check, token),
                Effect::Note(note) => {
                    log::note(&self.world, &note, now);
                    rest.push(Effect::Note(note));
                }
                other => rest.push(other),
            }
        }
        for stage in gates {
            self.gates.retain(|g| !g.is_finished());
            if let Some(g) = self.start_gate(stage) {
                self.gates.push(g);
            }
        }
        rest
    }

    /// Run until the goal is reached (recover, gate), passing every effect
    /// left to the caller to `on_effect`. The daemon never settles: it
    /// drives [`Runner::next`] and [`Runner::handle`] itself.
    pub async fn run_until_settled(&mut self, mut on_effect: impl FnMut(&World, &Effect)) {
        for e in self.handle(Event::Begin) {
            on_effect(&self.world, &e);
        }
        while !self.world.settled() {
            let ev = self.next().await;
            for e in self.handle(ev) {
                on_effect(&self.world, &e);
            }
        }
        for gate in std::mem::take(&mut self.gates) {
            let _ = gate.await;
        }
    }

    fn sd(&self) -> Option<Systemd> {
        self.sub.as_ref().map(|s| s.sd.clone())
    }

    fn unit_of(&self, svc: SvcId) -> Option<String> {
        self.world
            .services
            .get(svc)
            .and_then(|s| s.info.unit.clone())
    }

    /// While a stage is gated, the next stage's preflight in the background
    /// ([`preflight::ahead`]): when it finds nothing to do, that stage's
    /// own preflight is skipped and its units start as soon as it is
    /// wanted. Anything else (an image to load or pull, a port taken,
    /// podman not answering) is left to the full preflight then.
    fn preflight_ahead(&mut self, stage: StageId) {
        let Some(st) = self.world.stages.get(stage) else {
            return;
        };
        let names: Vec<String> = st
            .info
            .members
            .iter()
            .filter_map(|&m| self.world.services.get(m))
            .filter(|s| s.info.unit.is_some())
            .map(|s| s.info.name.clone())
            .collect();
        self.look_ahead(stage);
        let cfg = Arc::clone(&self.cfg);
        let podman = self.podman_runner();
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.ahead = Some((stage, rx));
        tokio::spawn(async move {
            let _ = tx.send(preflight::ahead(&cfg, &podman, &names).await);
        });
    }

    /// While the stage before `stage` is gated, the ownership look for
    /// `stage`'s services (one `podman ps --all` for all of them), repeated
    /// every [`LOOK_REFRESH`]: when the stage begins, each start whose
    /// container name a look began to find free less than [`LOOK_FRESH`]
    /// before runs without a look of its own, which would sit between the
    /// stage ready and its units' start (issue 15: 50–180 ms of each
    /// transition). Only when the runner acts and a service has a container
    /// its unit may replace.
    fn look_ahead(&mut self, stage: StageId) {
        self.look_ahead = None;
        if !self.world.goal.acts() || self.world.stages.get(stage).is_none() {
            return;
        }
        let now = Instant::now();
        self.look_ahead = Some(LookAhead {
            stage,
            next_at: Some(now),
            until: now + LOOK_AHEAD_FOR,
        });
    }

    /// What an ownership look found: the services whose names were free
    /// stand for their next start within [`LOOK_FRESH`] of its beginning.
    fn apply_look(&mut self, round: AheadLook) {
        for svc in round.free {
            self.looked_free.insert(svc, round.at);
        }
        for svc in round.settled {
            self.deps_settled.insert(svc, round.at);
        }
        if let Some(la) = self.look_ahead.as_mut().filter(|_| round.ahead) {
            la.next_at = Some(round.at + LOOK_REFRESH);
        }
    }

    /// One look of [`Runner::look_ahead`]; the result comes back on
    /// `ahead_rx`.
    fn look_ahead_now(&mut self) {
        let Some(la) = self.look_ahead.as_mut() else {
            return;
        };
        let now = Instant::now();
        if now >= la.until {
            self.look_ahead = None;
            return;
        }
        la.next_at = None;
        let stage = la.stage;
        let Some(st) = self.world.stages.get(stage) else {
            self.look_ahead = None;
            return;
        };
        let members: Vec<(SvcId, OwnerCheck)> = st
            .info
            .members
            .iter()
            .filter_map(|&m| Some((m, self.owner_check(m, false)?)))
            .collect();
        if members.is_empty() {
            self.look_ahead = None;
            return;
        }
        // Units whose start may skip its dependencies: no `after`/`requires`
        // of their own (the engine starts a stage's units together; systemd
        // orders them), only the previous stage's gate left unsettled.
        let gate: Vec<String> = stage
            .checked_sub(1)
            .and_then(|p| self.world.stages.get(p))
            .map(|p| vec![p.info.gate_unit.clone()])
            .unwrap_or_default();
        let plan = Arc::clone(&self.plan);
        let sd = self.sd();
        let tx = self.ahead_tx.clone();
        tokio::spawn(async move {
            let free = look_free(&members).await;
            let mut settled = Vec::new();
            if let Some(sd) = sd.filter(|_| !gate.is_empty()) {
                for (m, c) in &members {
                    let own_edges = plan
                        .services
                        .get(&c.service)
                        .is_none_or(|p| !p.edges.is_empty());
                    if own_edges || !free.contains(m) {
                        continue;
                    }
                    match sd.unsettled_dependencies(&c.unit, &gate).await {
                        Ok(left) if left.is_empty() => settled.push(*m),
                        Ok(left) => {
                            debug!(unit = %c.unit, unsettled = ?left, "look ahead: dependencies not settled; its start waits for them")
                        }
                        Err(e) => {
                            debug!(unit = %c.unit, error = %e, "look ahead: dependencies not read")
                        }
                    }
                }
            }
            let _ = tx.send(AheadLook {
                at: now,
                free,
                settled,
                ahead: true,
            });
        });
    }

    /// How podman is run: outside the daemon's hardened unit, as transient
    /// units of its manager; directly for an operator's command.
    fn podman_runner(&self) -> PodmanRunner {
        match (self.sd(), self.world.goal) {
            (Some(sd), Goal::Daemon) => PodmanRunner::Transient(sd),
            _ => PodmanRunner::Direct,
        }
    }

    fn preflight(&mut self, stage: StageId, token: u64, services: Vec<SvcId>) {
        // The stage begins: its looks so far stand for its starts.
        if self.look_ahead.as_ref().is_some_and(|la| la.stage == stage) {
            self.look_ahead = None;
        }
        // Found clear ahead (and finished): nothing to do now.
        if let Some((s, mut rx)) = self.ahead.take() {
            if s == stage && matches!(rx.try_recv(), Ok(true)) {
                debug!(
                    stage = stage,
                    "preflight clear already (checked while the previous stage was gated)"
                );
                let _ = self.tx.send(Event::PreflightDone {
                    stage,
                    token,
                    problems: Vec::new(),
                });
                return;
            }
        }
        let cfg = Arc::clone(&self.cfg);
        let sd = self.sd();
        let tx = self.tx.clone();
        let stage_name = self
            .world
            .stages
            .get(stage)
            .map(|s| s.info.name.clone())
            .unwrap_or_default();
        let members: Vec<(SvcId, String, Option<String>)> = services
            .into_iter()
            .filter_map(|id| {
                let s = self.world.services.get(id)?;
                Some((id, s.info.name.clone(), s.info.unit.clone()))
            })
            .collect();
        let podman = self.podman_runner();
        // The stage's ownership look (one `podman ps --all` for all its
        // services) runs alongside the preflight instead of before each
        // start after it (issue 15 item 3: 86 ms of the first stage's
        // start in the bench); its result is applied before the engine
        // hears the preflight is done (see [`Runner::handle`]).
        // Services whose unit already runs are not started (and need no
        // preflight either): no look for them, none at all when every unit
        // runs (a daemon restarted in the middle).
        let looks: Vec<(SvcId, OwnerCheck)> = members
            .iter()
            .filter(|(m, _, _)| {
                !self
                    .world
                    .services
                    .get(*m)
                    .and_then(|s| s.unit.as_ref())
                    .is_some_and(|u| u.is_active())
            })
            .filter_map(|(m, _, _)| Some((*m, self.owner_check(*m, false)?)))
            .collect();
        let ahead_tx = self.ahead_tx.clone();
        tokio::spawn(async move {
            let at = Instant::now();
            let (problems, free) = tokio::join!(
                preflight::run(&cfg, sd.as_ref(), &podman, &stage_name, &members),
                look_free(&looks)
            );
            let _ = ahead_tx.send(AheadLook {
                at,
                free,
                settled: Vec::new(),
                ahead: false,
            });
            let _ = tx.send(Event::PreflightDone {
                stage,
                token,
                problems,
            });
        });
    }

    /// The manager and the unit a job of `svc` goes to; without either the
    /// job fails at once (its result comes back as an event).
    fn job_target(&self, svc: SvcId, token: u64) -> Option<(Systemd, String)> {
        let target = self.sd().zip(self.unit_of(svc));
        if target.is_none() {
            let _ = self.tx.send(Event::JobDone {
                svc,
                token,
                result: Err("systemd is unreachable".into()),
            });
        }
        target
    }

    /// What the ownership check before a job of `svc` needs: `None` when
    /// the job replaces whatever runs (`replace`: adopt, `[watch] foreign =
    /// "take-over"`) or the service has no container.
    fn owner_check(&self, svc: SvcId, replace: bool) -> Option<OwnerCheck> {
        if replace {
            return None;
        }
        let s = self.world.services.get(svc)?;
        let unit = s.info.unit.clone()?;
        let container = self.cfg.services.get(&s.info.name)?.container.as_ref()?;
        Some(OwnerCheck {
            cfg: Arc::clone(&self.cfg),
            podman: self.podman_runner(),
            service: s.info.name.clone(),
            container: container.name.clone(),
            unit,
        })
    }

    /// A unit of ours just went down while the engine owns it (no job of
    /// ours in flight): before the engine hears of it (and restarts it,
    /// counting and logging a restart), one ownership look (the same query
    /// as before a job, about 50 ms): when another controller's
    /// container now holds the name (`mcp deploy`'s `podman run --replace`
    /// ended the unit's container, and so the unit), the engine hears that
    /// first and leaves the service alone: no restart is issued, counted or
    /// logged. The unit's states are held back meanwhile and delivered in
    /// order after the look. A unit seen `deactivating` after its process
    /// died is looked at once it is fully down (`inactive`/`failed`): its
    /// stop commands run podman too, after the deploy's, so by then the
    /// deployed container exists (the restart could not start earlier
    /// anyway: systemd runs it after the stop). Returns whether its states
    /// are held.
    fn look_before_death(&mut self, svc: SvcId, state: &crate::drive::UnitState) -> bool {
        if !self.world.goal.acts() || !crate::engine::model::unit_is_down(state) {
            return false;
        }
        let Some(s) = self.world.services.get(svc) else {
            return false;
        };
        let up_before = s
            .unit
            .as_ref()
            .is_some_and(|u| !crate::engine::model::unit_is_down(u));
        let watched = !matches!(
            s.life,
            Life::Idle | Life::Skipped | Life::Foreign { .. } | Life::Restarting
        );
        if !up_before || !watched || s.job.is_some() {
            return false;
        }
        if self.owner_check(svc, false).is_none() {
            return false;
        }
        if unit_gone(state) {
            self.spawn_look(svc);
        } else {
            self.deferred.insert(svc);
        }
        true
    }

    /// The look of [`Runner::look_before_death`]; its result comes back on
    /// `owner_rx`.
    fn spawn_look(&self, svc: SvcId) {
        let check = self.owner_check(svc, false);
        let tx = self.owner_tx.clone();
        tokio::spawn(async move {
            let found = owner_holds(check).await;
            let _ = tx.send((svc, found));
        });
    }

    fn start(&mut self, svc: SvcId, token: u64, ignore_deps: bool, replace: bool) {
        let tx = self.tx.clone();
        let Some((sd, unit)) = self.job_target(svc, token) else {
            return;
        };
        // The look ahead found the unit's dependencies settled but the
        // previous stage's gate, which the engine has just seen pass (its
        // gate unit is started next): the start need not wait for the gate
        // job, nor build a transaction over the whole dependency tree.
        let settled = self
            .deps_settled
            .remove(&svc)
            .is_some_and(|at| at.elapsed() < LOOK_FRESH);
        let mode = if ignore_deps || settled {
            JobMode::IgnoreDependencies
        } else {
            JobMode::Replace
        };
        if settled && !ignore_deps {
            debug!(unit = %unit, "dependencies settled ahead: starting without waiting for the gate unit");
        }
        let check = if self.looked_free_just_now(svc) {
            debug!(unit = %unit, "ownership looked at just now (ahead of the stage): starting without another look");
            None
        } else {
            self.owner_check(svc, replace)
        };
        tokio::spawn(async move {
            if withheld(check, &tx, svc, token).await {
                return;
            }
            let result = sd
                .start_mode(&unit, mode)
                .await
                .map(|o| (o.result, o.state))
                .map_err(|e| e.to_string());
            let _ = tx.send(Event::JobDone { svc, token, result });
        });
    }

    fn restart(&mut self, svc: SvcId, token: u64, reset_failed: bool, replace: bool) {
        let tx = self.tx.clone();
        let Some((sd, unit)) = self.job_target(svc, token) else {
            return;
        };
        // The look after its unit went down just found the name free: that
        // look ran once the unit's stop had finished (a deploy's container
        // exists by then), so it answers for this restart too.
        let check = if self.looked_free_just_now(svc) {
            debug!(unit = %unit, "ownership looked at just now: restarting without another look");
            None
        } else {
            self.owner_check(svc, replace)
        };
        tokio::spawn(async move {
            if withheld(check, &tx, svc, token).await {
                return;
            }
            if reset_failed {
                if let Err(e) = sd.reset_failed(&unit).await {
                    debug!(unit = %unit, error = %e, "reset-failed before restart");
                }
            }
            let result = bounded_job("restart", sd.restart(&unit)).await;
            let _ = tx.send(Event::JobDone { svc, token, result });
        });
    }

    /// Follows which container `svc`'s unit runs (its main process is
    /// conmon), when the engine acts on a container's own death.
    fn note_container(&mut self, svc: SvcId, state: &crate::drive::UnitState) {
        let take_over = self.cfg.watch.foreign == crate::config::ForeignPolicy::TakeOver;
        if !take_over || !self.world.goal.acts() {
            return;
        }
        if !state.is_active() || state.main_pid == 0 {
            if crate::engine::model::unit_is_down(state) {
                self.containers.remove(&svc);
            }
            return;
        }
        if self
            .containers
            .get(&svc)
            .is_some_and(|(pid, _)| *pid == state.main_pid)
        {
            return;
        }
        let container = self
            .world
            .services
            .get(svc)
            .and_then(|s| self.cfg.services.get(&s.info.name))
            .and_then(|c| c.container.as_ref())
            .map(|c| c.name.clone());
        match container.and_then(|c| scope::conmon_container(state.main_pid, &c)) {
            Some(id) => {
                debug!(service = svc, main_pid = state.main_pid, container = %id, "watching the container's scope");
                self.containers.insert(svc, (state.main_pid, id));
            }
            None => {
                self.containers.remove(&svc);
            }
        }
    }

    /// A unit was unloaded: when it is the scope of a service's container,
    /// that container died ([`Event::ContainerDied`]).
    fn container_gone(&mut self, unit: &str) -> Option<Event> {
        let id = scope::scope_container(unit)?;
        let svc = self
            .containers
            .iter()
            .find(|(_, (_, c))| c == id)
            .map(|(svc, _)| *svc)?;
        self.containers.remove(&svc);
        let short = id.get(..12).unwrap_or(id);
        Some(Event::ContainerDied {
            svc,
            detail: format!("its container {short} died (its scope {unit} is gone)"),
        })
    }

    /// Whether a look found `svc`'s container name free less than
    /// [`LOOK_FRESH`] ago (used up: one job per look).
    fn looked_free_just_now(&mut self, svc: SvcId) -> bool {
        self.looked_free
            .remove(&svc)
            .is_some_and(|at| at.elapsed() < LOOK_FRESH)
    }

    /// A drill's stop: its dependents stay up (dependencies ignored).
    fn stop(&self, svc: SvcId, token: u64) {
        let tx = self.tx.clone();
        let Some((sd, unit)) = self.job_target(svc, token) else {
            return;
        };
        tokio::spawn(async move {
            let job = sd.stop_mode(&unit, JobMode::IgnoreDependencies);
            let result = bounded_job("stop", job).await;
            let _ = tx.send(Event::JobDone { svc, token, result });
        });
    }

    /// The engine has just seen `stage` healthy: tell its gate unit, so
    /// that it does not probe it all once more (docs/recovery.md).
    fn write_verdict(&self, stage: StageId) {
        let Some(st) = self.world.stages.get(stage) else {
            return;
        };
        let name = &st.info.name;
        match verdict::write(&self.cfg, name) {
            Ok(path) => {
                debug!(stage = %name, path = %path.display(), "stage verdict written for its gate")
            }
            Err(e) => {
                debug!(stage = %name, error = %e, "no stage verdict for its gate (it probes)")
            }
        }
    }

    fn start_gate(&self, stage: StageId) -> Option<tokio::task::JoinHandle<()>> {
        let sd = self.sd()?;
        let st = self.world.stages.get(stage)?;
        let (name, gate) = (st.info.name.clone(), st.info.gate_unit.clone());
        Some(tokio::spawn(async move {
            if let Err(e) = sd.start(&gate).await {
                warn!(stage = %name, unit = %gate, error = %e, "gate unit did not pass after the stage was healthy");
            }
        }))
    }

    fn probe(&self, svc: SvcId, check: usize, token: u64) {
        let Some(spec) = self
            .world
            .services
            .get(svc)
            .and_then(|s| self.cfg.services.get(&s.info.name))
            .and_then(|s| s.checks.get(check))
            .cloned()
        else {
            return;
        };
        let tx = self.tx.clone();
        let via = self.exec_via();
        let timer = self.probe_timer.clone();
        tokio::spawn(async move {
            let limit = spec.timeout + PROBE_SLACK;
            let probe = crate::check::probe_with(&spec, &via);
            let (ok, waiting, detail, elapsed) = match tokio::time::timeout(limit, probe).await {
                Ok(o) => (o.ok, o.waiting, o.detail, o.elapsed),
                Err(_) => (
                    false,
                    false,
                    format!(
                        "check `{}` did not finish within {}",
                        spec.name,
                        crate::check::fmt_duration(limit)
                    ),
                    limit,
                ),
            };
            if let Some(t) = &timer {
                t(svc, check, elapsed);
            }
            let _ = tx.send(Event::ProbeDone {
                svc,
                check,
                token,
                ok,
                waiting,
                detail,
            });
        });
    }

    /// The connection or the manager went away: forget it and reconnect
    /// with backoff in the background (jobs in flight fail by themselves).
    fn bus_lost(&mut self, why: &str) {
        self.sub = None;
        if self.reconnecting {
            return;
        }
        let Some(target) = self.target.clone() else {
            return;
        };
        warn!(reason = why, "lost systemd; reconnecting");
        self.reconnecting = true;
        let units = self.units();
        let tx = self.conn_tx.clone();
        tokio::spawn(async move {
            let mut delay = RECONNECT_FIRST;
            // Let a re-executing manager settle before the first attempt.
            tokio::time::sleep(delay).await;
            loop {
                let attempt = match Systemd::connect(&target).await {
                    Ok(sd) => subscribe(sd, units.clone()).await,
                    Err(e) => Err(e.to_string()),
                };
                match attempt {
                    Ok(sub) => {
                        let _ = tx.send(sub);
                        return;
                    }
                    Err(e) => {
                        warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "reconnect failed");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(RECONNECT_MAX);
                    }
                }
            }
        });
    }
}

/// A restart or stop job given at most [`RESTART_TIMEOUT`], as the engine's
/// job result: `(job result, unit state after it)` or why it failed.
async fn bounded_job(
    what: &str,
    job: impl std::future::Future<Output = Result<crate::drive::JobOutcome, crate::drive::DriveError>>,
) -> Result<(String, crate::drive::UnitState), String> {
    match tokio::time::timeout(RESTART_TIMEOUT, job).await {
        Ok(Ok(o)) => Ok((o.result, o.state)),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "{what} job did not finish within {}s",
            RESTART_TIMEOUT.as_secs()
        )),
    }
}

/// The unit is fully down (`inactive`, `failed`, gone): its stop commands
/// have run.
fn unit_gone(s: &crate::drive::UnitState) -> bool {
    matches!(s.active_state.as_str(), "inactive" | "failed") || s.is_not_found()
}

/// Runs `check` before the job `token` of `svc`: when another controller's
/// container holds the name, tells the engine ([`Event::Foreign`]) and
/// returns true (the job must not run).
async fn withheld(
    check: Option<OwnerCheck>,
    tx: &mpsc::UnboundedSender<Event>,
    svc: SvcId,
    token: u64,
) -> bool {
    let Some(detail) = owner_holds(check).await else {
        return false;
    };
    let _ = tx.send(Event::Foreign {
        svc,
        token: Some(token),
        detail,
    });
    true
}

/// The ownership check before a start or restart job ([`owner`]).
struct OwnerCheck {
    cfg: Arc<Config>,
    podman: PodmanRunner,
    service: String,
    container: String,
    unit: String,
}

/// Runs `check` (if any): the foreign container's detail when another
/// controller's container holds the name (the job must not run); `None`
/// when the job may run, also when podman could not tell.
async fn owner_holds(check: Option<OwnerCheck>) -> Option<String> {
    let c = check?;
    owner::check_before_job(&c.cfg, &c.podman, &c.service, &c.container, &c.unit).await
}

/// One ownership look for `looks` (one `podman ps --all`): the services
/// whose container name is free or their unit's own; none when podman
/// could not be asked (each start then looks itself).
async fn look_free(looks: &[(SvcId, OwnerCheck)]) -> Vec<SvcId> {
    let Some((_, first)) = looks.first() else {
        return Vec::new();
    };
    let services: Vec<(String, String, String)> = looks
        .iter()
        .map(|(_, c)| (c.service.clone(), c.container.clone(), c.unit.clone()))
        .collect();
    match owner::scan(&first.cfg, &first.podman, &services).await {
        Ok(found) => looks
            .iter()
            .filter(|(_, c)| !found.iter().any(|(n, _)| *n == c.service))
            .map(|(m, _)| *m)
            .collect(),
        Err(e) => {
            debug!(error = %e, "ownership look: podman could not be asked");
            Vec::new()
        }
    }
}

async fn subscribe(sd: Systemd, units: Vec<String>) -> Result<Subscription, String> {
    let watch = if units.is_empty() {
        None
    } else {
        match tokio::time::timeout(SUBSCRIBE_TIMEOUT, sd.watch(&units)).await {
            Ok(r) => Some(r.map_err(|e| e.to_string())?),
            Err(_) => return Err(format!("no answer within {}s", SUBSCRIBE_TIMEOUT.as_secs())),
        }
    };
    let mgr = match sd.watch_manager().await {
        Ok(m) => Some(m),
        Err(e) => {
            warn!(error = %e, "cannot follow systemd's bus name; daemon-reexec may go unnoticed");
            None
        }
    };
    info!(units = units.len(), "watching units");
    Ok(Subscription {
        sd,
        units: watch,
        mgr,
    })
}

async fn next_change(w: Option<&mut UnitWatch>) -> Option<UnitChange> {
    match w {
        Some(w) => w.next().await,
        None => std::future::pending().await,
    }
}

async fn next_manager(w: Option<&mut ManagerWatch>) -> Option<ManagerEvent> {
    match w {
        Some(w) => w.next().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
