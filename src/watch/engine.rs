//! The daemon's event loop. One task owns all state and reacts to: unit
//! changes (D-Bus `PropertiesChanged`, no polling), check results (one task
//! per check, see [`super::health`]), restart timers (backoff), restart and
//! escalation results, boot-recovery progress, API commands, `SIGHUP`
//! (reload), `SIGTERM`/`SIGINT` (exit) and the watchdog tick. After every
//! event each service is re-evaluated in plan order with
//! [`policy::decide`], and the status snapshot (API, `STATUS=`) is updated.
//!
//! States (docs/daemon/engine.md): `starting` (not failing, not yet
//! healthy), `healthy`, `unhealthy` (failing; a restart is scheduled or
//! running, or it cannot be restarted), `held` (failing while an upstream
//! fails: no restart; re-checked once the upstream is healthy), `escalated`
//! (too many restarts: no more until `ack` or healthy again).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use super::api::{self, ApiBus, Authz};
use super::escalate::{self, ActionResult, Event};
use super::health::{CheckReport, HealthSet, Mode};
use super::install::{self, InstallError};
use super::notify::{self, Notifier};
use super::policy::{self, Decision, Facts};
use super::state::{now_ms, resolve_state_dir, Escalation, PersistedState, StateError, StateStore};
use super::types::{ApiCommand, ApiReply, HealthStatus, ServiceState, ServiceStatus, Snapshot};
use crate::config::{self, Config, RestartOwner, RestartPolicy};
use crate::diagnose::Diagnosis;
use crate::drive::{
    BusTarget, DriveError, JobOutcome, ManagerEvent, ManagerWatch, Systemd, UnitChange, UnitState,
    UnitWatch,
};
use crate::plan::{self, Plan, PlanError};
use crate::recover::{self, RecoverEvent};
use crate::render::Backend;

/// `MESSAGE_ID` of the journal entry logged for every restart issued.
pub const RESTART_MESSAGE_ID: &str = "5e8a0b3c2d1f4e6a9b7c8d0e1f2a3b4c";
/// Upper bound for one restart job (stop + start) before it is given up.
const RESTART_TIMEOUT: Duration = Duration::from_secs(300);
/// Reconnect delays after the bus is lost.
const RECONNECT_FIRST: Duration = Duration::from_millis(200);
const RECONNECT_MAX: Duration = Duration::from_secs(5);
/// Upper bound for subscribing to every unit (the loop waits for it).
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(15);

/// How the daemon is started (`mcrecover daemon` flags).
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// Configuration file.
    pub config_path: PathBuf,
    /// The systemd manager to drive.
    pub bus: BusTarget,
    /// Backend override (default: the config's, `auto` resolved by doctor).
    pub backend: Option<Backend>,
    /// Quadlet directory override.
    pub quadlet_dir: Option<PathBuf>,
    /// Unit directory override.
    pub unit_dir: Option<PathBuf>,
    /// Install (render + write + reload if changed) at start and on reload.
    pub install: bool,
    /// State directory override.
    pub state_dir: Option<PathBuf>,
    /// Where the D-Bus API is served.
    pub api_bus: ApiBus,
}

/// Why the daemon could not start (or had to stop).
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The configuration is invalid.
    #[error("configuration {path}: {detail}")]
    Config {
        /// The file.
        path: PathBuf,
        /// The validation errors.
        detail: String,
    },
    /// The plan could not be built.
    #[error("plan: {0}")]
    Plan(#[from] PlanError),
    /// Installing the units failed.
    #[error(transparent)]
    Install(#[from] InstallError),
    /// systemd could not be reached.
    #[error(transparent)]
    Bus(#[from] DriveError),
    /// The state file could not be read or written.
    #[error(transparent)]
    State(#[from] StateError),
    /// Signal handlers could not be installed.
    #[error("installing signal handlers: {0}")]
    Signal(std::io::Error),
}

/// Run the daemon until `SIGTERM`/`SIGINT`: install (unless disabled),
/// connect, start watching, serve the API, send `READY=1`, run the boot
/// recovery in the background, then keep the platform healthy.
pub async fn run(opts: DaemonOptions) -> Result<(), WatchError> {
    let cfg = load_config(&opts.config_path)?;
    let plan = plan::build(&cfg)?;
    let env_dir = std::env::var("STATE_DIRECTORY").ok();
    let dir = resolve_state_dir(
        opts.state_dir.as_deref(),
        cfg.watch.state_dir.as_deref(),
        env_dir.as_deref(),
    );
    let store = StateStore::new(dir);
    let persisted = store.load()?;
    info!(path = %store.path().display(), services = persisted.services.len(), "state loaded");

    let sd = Systemd::connect(&opts.bus).await?;
    if opts.install {
        do_install(&opts, &cfg, &sd).await?;
    }

    let mut sigterm = signal(SignalKind::terminate()).map_err(WatchError::Signal)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(WatchError::Signal)?;
    let mut sighup = signal(SignalKind::hangup()).map_err(WatchError::Signal)?;

    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
    let (health_tx, mut health_rx) = mpsc::unbounded_channel();
    let (cmd_tx, mut cmd_rx) = mpsc::channel(16);
    let (snap_tx, snap_rx) = watch::channel(Snapshot::default());

    let mut engine = Engine::new(opts, cfg, plan, store, persisted, ev_tx, health_tx, snap_tx);
    engine.connected(sd).await;
    engine.spawn_all_checks(Mode::Normal);

    let authz = engine.authz();
    let _api = match api::serve(&engine.opts.api_bus, snap_rx, cmd_tx, authz).await {
        Ok(server) => Some(server),
        Err(e) => {
            warn!(error = %e, "D-Bus API not served; continuing without it");
            None
        }
    };

    engine.start_recovery();
    engine.evaluate_all();
    engine.publish();
    let line = engine.status_line();
    engine.notifier.ready(&line);
    info!(status = %line, "watching");

    let mut watchdog = notify::watchdog_interval().map(tokio::time::interval);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        let timer = engine.next_timer();
        tokio::select! {
            change = next_change(&mut engine.watch) => match change {
                Some(c) => engine.on_unit(c),
                None => engine.bus_lost("unit watch ended"),
            },
            mev = next_manager(&mut engine.mgr) => match mev {
                Some(ManagerEvent::OwnerChanged(Some(owner))) => {
                    engine.bus_lost(&format!("systemd re-connected to the bus as {owner}"));
                }
                Some(ManagerEvent::OwnerChanged(None)) => {}
                None => engine.bus_lost("manager watch ended"),
            },
            Some(report) = health_rx.recv() => engine.on_check(report),
            Some(ev) = ev_rx.recv() => engine.on_event(ev).await,
            Some((cmd, reply)) = cmd_rx.recv() => engine.on_command(cmd, reply).await,
            () = sleep_until_opt(timer) => engine.on_timers(),
            _ = tick.tick() => engine.housekeeping(),
            _ = tick_opt(&mut watchdog) => engine.notifier.watchdog(),
            _ = sighup.recv() => {
                info!("SIGHUP: reloading configuration");
                let r = engine.reload().await;
                if let Err(e) = r {
                    warn!(error = %e, "reload refused; keeping the running configuration");
                }
            }
            _ = sigterm.recv() => { info!("SIGTERM: stopping"); break; }
            _ = sigint.recv() => { info!("SIGINT: stopping"); break; }
        }
        engine.evaluate_all();
        engine.publish();
    }
    engine.notifier.stopping();
    engine.shutdown();
    Ok(())
}

fn load_config(path: &std::path::Path) -> Result<Config, WatchError> {
    config::load(path).map_err(|e| WatchError::Config {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })
}

fn backend_of(opts: &DaemonOptions, cfg: &Config) -> Backend {
    opts.backend
        .unwrap_or_else(|| crate::doctor::detect_backend(cfg).0)
}

async fn do_install(
    opts: &DaemonOptions,
    cfg: &Config,
    sd: &Systemd,
) -> Result<crate::render::WriteReport, InstallError> {
    let qdir = opts
        .quadlet_dir
        .clone()
        .unwrap_or_else(|| cfg.platform.quadlet_dir.clone());
    let udir = opts
        .unit_dir
        .clone()
        .unwrap_or_else(|| cfg.platform.unit_dir.clone());
    let report = install::install(cfg, backend_of(opts, cfg), &qdir, &udir, sd).await?;
    info!(
        created = report.created.len(),
        changed = report.changed.len(),
        unchanged = report.unchanged.len(),
        "units installed"
    );
    Ok(report)
}

async fn next_change(w: &mut Option<UnitWatch>) -> Option<UnitChange> {
    match w {
        Some(w) => w.next().await,
        None => std::future::pending().await,
    }
}

async fn next_manager(w: &mut Option<ManagerWatch>) -> Option<ManagerEvent> {
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

async fn tick_opt(i: &mut Option<tokio::time::Interval>) {
    match i {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Internal events sent to the loop by the tasks it spawns.
#[derive(Debug)]
enum Ev {
    Recover(RecoverEvent),
    RecoverDone(Box<recover::Report>),
    RestartDone {
        service: String,
        generation: u64,
        result: Result<JobOutcome, String>,
    },
    Diagnosed {
        service: String,
        event_id: String,
        diagnoses: Vec<Diagnosis>,
        results: Vec<ActionResult>,
    },
    RemedyDone {
        service: String,
        event_id: String,
        result: Result<String, String>,
    },
    Connected(Systemd),
}

/// The latest result of one check.
#[derive(Debug, Clone)]
struct CheckView {
    passing: Option<bool>,
    ok: bool,
    detail: String,
    at: Instant,
}

/// The unit is down, or on its way down after a failure: a service whose
/// main process died is `deactivating` (running `ExecStop=`/`ExecStopPost=`,
/// for a podman unit `podman stop` and `podman rm`, ~0.5 s) with a `Result`
/// other than `success` before it is `failed`; a restart issued then is
/// queued by systemd behind the stop.
fn unit_is_down(s: &UnitState) -> bool {
    matches!(s.active_state.as_str(), "failed" | "inactive")
        || s.is_not_found()
        || (s.active_state == "deactivating" && !s.result.is_empty() && s.result != "success")
}

/// Runtime state of one service.
#[derive(Debug)]
struct Svc {
    stage: Option<usize>,
    unit: Option<String>,
    restartable: bool,
    unit_state: Option<UnitState>,
    checks: BTreeMap<String, CheckView>,
    generation: u64,
    state: ServiceState,
    held_by: Option<String>,
    armed: bool,
    /// The `block` stage whose failure kept the last recovery from starting
    /// this service's stage: not armed until a recovery starts it.
    blocked_by: Option<String>,
    /// Failing since it was last healthy (blocks dependents).
    troubled: bool,
    restart_at: Option<Instant>,
    restart_task: Option<(u64, JoinHandle<()>)>,
    failing_since: Option<Instant>,
    reason: String,
    healthy_since: Option<Instant>,
}

impl Svc {
    fn new(cfg: &Config, plan: &Plan, name: &str) -> Svc {
        let ps = plan.services.get(name);
        let svc = cfg.services.get(name);
        let restartable = svc
            .and_then(|s| s.container.as_ref())
            .is_some_and(|c| c.restart != RestartPolicy::No);
        Svc {
            stage: ps.and_then(|p| p.stage),
            unit: ps.and_then(|p| p.unit.clone()),
            restartable,
            unit_state: None,
            checks: BTreeMap::new(),
            generation: 0,
            state: ServiceState::Starting,
            held_by: None,
            // External services are only checked: nothing to wait for.
            armed: ps.is_some_and(|p| p.unit.is_none()),
            blocked_by: None,
            troubled: false,
            restart_at: None,
            restart_task: None,
            failing_since: None,
            reason: String::new(),
            healthy_since: None,
        }
    }

    /// Armed afresh (its stage was just recovered): only what is observed
    /// from now on counts. Verdicts, failure times and a scheduled restart
    /// from before are dropped (the caller starts fresh check tasks, whose
    /// new generation discards any probe still in flight); a persisted
    /// escalation stays.
    fn rearm(&mut self, escalated: Option<&Escalation>) {
        self.armed = true;
        self.blocked_by = None;
        self.checks.clear();
        self.failing_since = None;
        self.restart_at = None;
        self.held_by = None;
        match escalated {
            Some(e) => {
                self.troubled = true;
                self.reason.clone_from(&e.reason);
            }
            None => {
                self.troubled = false;
                self.reason.clear();
            }
        }
    }

    /// Its stage is being (re)started by a recovery: the daemon does not
    /// act on it until the recovery is done with the stage.
    fn disarm(&mut self) {
        self.armed = false;
        self.restart_at = None;
        self.held_by = None;
    }

    fn unit_down(&self) -> bool {
        self.unit_state.as_ref().is_some_and(unit_is_down)
    }

    fn unit_up(&self) -> bool {
        self.unit.is_none() || self.unit_state.as_ref().is_some_and(UnitState::is_active)
    }

    fn checks_failing(&self) -> Option<&String> {
        self.checks
            .iter()
            .find(|(_, v)| v.passing == Some(false))
            .map(|(k, _)| k)
    }

    fn checks_passing(&self, expected: usize) -> bool {
        self.checks.len() >= expected && self.checks.values().all(|v| v.passing == Some(true))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    Recovering {
        index: usize,
        total: usize,
        stage: String,
    },
    Watching,
}

struct Engine {
    opts: DaemonOptions,
    cfg: Config,
    plan: Plan,
    ups: BTreeMap<String, Vec<String>>,
    svcs: BTreeMap<String, Svc>,
    persisted: PersistedState,
    store: StateStore,
    sd: Option<Systemd>,
    watch: Option<UnitWatch>,
    mgr: Option<ManagerWatch>,
    reconnecting: Option<JoinHandle<()>>,
    health: HealthSet,
    ev_tx: mpsc::UnboundedSender<Ev>,
    phase: Phase,
    recovery: Option<JoinHandle<()>>,
    recovery_healthy: BTreeSet<String>,
    snap_tx: watch::Sender<Snapshot>,
    notifier: Notifier,
    user: bool,
}

impl Engine {
    #[allow(clippy::too_many_arguments)]
    fn new(
        opts: DaemonOptions,
        cfg: Config,
        plan: Plan,
        store: StateStore,
        persisted: PersistedState,
        ev_tx: mpsc::UnboundedSender<Ev>,
        health_tx: mpsc::UnboundedSender<CheckReport>,
        snap_tx: watch::Sender<Snapshot>,
    ) -> Engine {
        let svcs = plan
            .order
            .iter()
            .map(|n| (n.clone(), Svc::new(&cfg, &plan, n)))
            .collect();
        let user = cfg.platform.mode == config::Mode::Rootless;
        let mut e = Engine {
            opts,
            ups: policy::upstreams(&plan),
            cfg,
            plan,
            svcs,
            persisted,
            store,
            sd: None,
            watch: None,
            mgr: None,
            reconnecting: None,
            health: HealthSet::new(health_tx),
            ev_tx,
            phase: Phase::Watching,
            recovery: None,
            recovery_healthy: BTreeSet::new(),
            snap_tx,
            notifier: Notifier::new(),
            user,
        };
        // Escalations survive a daemon restart: those services stay escalated.
        for (name, svc) in &mut e.svcs {
            if let Some(esc) = e
                .persisted
                .services
                .get(name)
                .and_then(|r| r.escalated.as_ref())
            {
                svc.reason.clone_from(&esc.reason);
                svc.troubled = true;
            }
        }
        e
    }

    fn authz(&self) -> Authz {
        let user = self.cfg.platform.user.as_ref();
        Authz {
            uid: user.map(|u| u.uid),
            gid: user.map(|u| u.gid),
        }
    }

    fn policy(&self) -> &config::WatchPolicy {
        &self.cfg.watch
    }

    fn units(&self) -> Vec<String> {
        self.svcs.values().filter_map(|s| s.unit.clone()).collect()
    }

    fn stage_name(&self, idx: Option<usize>) -> Option<String> {
        idx.and_then(|i| self.plan.stages.get(i))
            .map(|s| s.name.clone())
    }

    fn save_state(&self) {
        if let Err(e) = self.store.save(&self.persisted) {
            error!(error = %e, "persisting the daemon state failed");
        }
    }

    // ----- bus -------------------------------------------------------------

    /// A (re)connected manager: subscribe to the units and the manager's
    /// bus name; the watch yields every unit's current state first.
    async fn connected(&mut self, sd: Systemd) {
        let units = self.units();
        let watch = if units.is_empty() {
            Ok(None)
        } else {
            match tokio::time::timeout(SUBSCRIBE_TIMEOUT, sd.watch(&units)).await {
                Ok(r) => r.map(Some).map_err(|e| e.to_string()),
                Err(_) => Err(format!("no answer within {}s", SUBSCRIBE_TIMEOUT.as_secs())),
            }
        };
        match watch {
            Ok(w) => {
                self.watch = w;
                self.mgr = match sd.watch_manager().await {
                    Ok(m) => Some(m),
                    Err(e) => {
                        warn!(error = %e, "cannot follow systemd's bus name; daemon-reexec may go unnoticed");
                        None
                    }
                };
                self.sd = Some(sd);
                info!(units = units.len(), "watching units");
            }
            Err(e) => {
                warn!(error = %e, "subscribing to unit changes failed; reconnecting");
                self.bus_lost("subscribe failed");
            }
        }
    }

    /// The connection or the manager went away: forget it, give up running
    /// restart jobs (re-evaluated from fresh state later), and reconnect with
    /// backoff in the background.
    fn bus_lost(&mut self, why: &str) {
        if self.reconnecting.is_some() {
            return;
        }
        warn!(reason = why, "lost systemd; reconnecting");
        self.watch = None;
        self.mgr = None;
        self.sd = None;
        let mut aborted = Vec::new();
        for (name, svc) in &mut self.svcs {
            if let Some((_, h)) = svc.restart_task.take() {
                h.abort();
                aborted.push(name.clone());
            }
        }
        // Their checks were paused for the restart: run them again.
        for name in aborted {
            self.spawn_checks(&name, Mode::AfterStart);
        }
        let target = self.opts.bus.clone();
        let tx = self.ev_tx.clone();
        self.reconnecting = Some(tokio::spawn(async move {
            let mut delay = RECONNECT_FIRST;
            // Let a re-executing manager settle before the first attempt.
            tokio::time::sleep(delay).await;
            loop {
                match Systemd::connect(&target).await {
                    Ok(sd) => {
                        let _ = tx.send(Ev::Connected(sd));
                        return;
                    }
                    Err(e) => {
                        warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "reconnect failed");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(RECONNECT_MAX);
                    }
                }
            }
        }));
    }

    fn on_unit(&mut self, c: UnitChange) {
        let Some((name, svc)) = self
            .svcs
            .iter_mut()
            .find(|(_, s)| s.unit.as_deref() == Some(c.unit.as_str()))
        else {
            return;
        };
        if let Some(old) = &svc.unit_state {
            // A state older than the one a finished job re-read: skip.
            if c.state.inactive_exit_usec < old.inactive_exit_usec {
                debug!(service = %name, unit = %c.unit, "stale unit state ignored");
                return;
            }
        }
        debug!(service = %name, unit = %c.unit, active_state = %c.state.active_state,
            sub_state = %c.state.sub_state, "unit state");
        svc.unit_state = Some(c.state);
    }

    // ----- checks ----------------------------------------------------------

    fn spawn_all_checks(&mut self, mode: Mode) {
        let names: Vec<String> = self.svcs.keys().cloned().collect();
        for n in names {
            self.spawn_checks(&n, mode);
        }
    }

    fn spawn_checks(&mut self, name: &str, mode: Mode) {
        let Some(cfg_svc) = self.cfg.services.get(name) else {
            return;
        };
        let generation = self.health.spawn(cfg_svc, mode);
        if let Some(svc) = self.svcs.get_mut(name) {
            svc.generation = generation;
            svc.checks.clear();
        }
    }

    fn on_check(&mut self, r: CheckReport) {
        // A report of replaced (or stopped) check tasks, e.g. a probe that
        // was in flight when the service was armed or restarted: stale.
        if !self.health.is_current(&r) {
            return;
        }
        let Some(svc) = self.svcs.get_mut(&r.service) else {
            return;
        };
        if r.generation != svc.generation {
            return;
        }
        let prev = svc.checks.get(&r.check).and_then(|v| v.passing);
        if prev != r.passing {
            let verdict = match r.passing {
                Some(true) => "passing",
                Some(false) => "failing",
                None => "unknown",
            };
            info!(service = %r.service, check = %r.check, verdict,
                detail = %r.outcome.detail, "check verdict changed");
        }
        svc.checks.insert(
            r.check,
            CheckView {
                passing: r.passing,
                ok: r.outcome.ok,
                detail: r.outcome.detail,
                at: Instant::now(),
            },
        );
    }

    // ----- evaluation ------------------------------------------------------

    /// Whether `name` counts as a failing upstream: failing since it was
    /// last healthy, in a failing state, or its latest probe of any check
    /// failed (even below the failure threshold: a dependent whose checks
    /// fail because of it must not win the race and be restarted first).
    fn is_troubled(&self, name: &str) -> bool {
        self.svcs.get(name).is_some_and(|s| {
            s.troubled
                || s.checks.values().any(|v| !v.ok)
                || matches!(
                    s.state,
                    ServiceState::Unhealthy | ServiceState::Held | ServiceState::Escalated
                )
        })
    }

    /// (failing, why) of one service, from its unit and checks.
    fn failing(&self, name: &str, svc: &Svc) -> (bool, String) {
        if svc.restart_task.is_some() {
            // Being restarted: still failing until the job is done.
            return (true, svc.reason.clone());
        }
        if self.cfg.watch.restart_owner == RestartOwner::Mcrecover && svc.unit_down() {
            let st = svc.unit_state.as_ref();
            let result = st
                .filter(|s| !s.result.is_empty() && s.result != "success")
                .map_or(String::new(), |s| format!(" (result {})", s.result));
            return (
                true,
                format!(
                    "unit {} is {}/{}{result}",
                    svc.unit.as_deref().unwrap_or(name),
                    st.map_or("", |s| s.active_state.as_str()),
                    st.map_or("", |s| s.sub_state.as_str())
                ),
            );
        }
        if let Some(check) = svc.checks_failing() {
            let detail = svc.checks.get(check).map_or("", |v| v.detail.as_str());
            return (true, format!("check {check} failing: {detail}"));
        }
        (false, String::new())
    }

    fn facts(&self, name: &str) -> Option<(Facts, String)> {
        let svc = self.svcs.get(name)?;
        let expected = self.cfg.services.get(name).map_or(0, |s| s.checks.len());
        let (failing, why) = self.failing(name, svc);
        let rec = self.persisted.services.get(name);
        let now = now_ms(SystemTime::now());
        let empty = Vec::new();
        let ups = self.ups.get(name).unwrap_or(&empty);
        Some((
            Facts {
                healthy: svc.restart_task.is_none()
                    && svc.unit_up()
                    && svc.checks_passing(expected),
                failing,
                failing_upstream: policy::failing_upstream(ups, |u| self.is_troubled(u)),
                escalated: rec.is_some_and(|r| r.escalated.is_some()),
                restartable: svc.restartable && svc.unit.is_some(),
                restart_pending: svc.restart_at.is_some() || svc.restart_task.is_some(),
                restarts_in_window: rec.map_or(0, |r| {
                    r.restarts_in_window(now, self.cfg.watch.escalate_window)
                }),
                backoff_level: rec.map_or(0, |r| r.backoff_level),
            },
            why,
        ))
    }

    /// Re-evaluate every service in plan order (upstreams first).
    fn evaluate_all(&mut self) {
        let order = self.plan.order.clone();
        for name in &order {
            self.evaluate(name);
        }
    }

    fn evaluate(&mut self, name: &str) {
        let Some((facts, why)) = self.facts(name) else {
            return;
        };
        // Leaving `held` because the upstream is fine again: re-check now
        // (first result decides), then restart only if still failing.
        let was_held = self
            .svcs
            .get(name)
            .is_some_and(|s| s.state == ServiceState::Held);
        if was_held && facts.failing_upstream.is_none() {
            info!(service = %name, "upstream healthy again; re-checking held service");
            self.spawn_checks(name, Mode::Recheck);
            if let Some(svc) = self.svcs.get_mut(name) {
                svc.held_by = None;
                svc.state = ServiceState::Starting;
            }
            let Some((facts, why)) = self.facts(name) else {
                return;
            };
            return self.apply(name, &facts, why);
        }
        self.apply(name, &facts, why);
    }

    fn apply(&mut self, name: &str, facts: &Facts, why: String) {
        let decision = policy::decide(self.policy(), facts);
        let stage = self.stage_name(self.svcs.get(name).and_then(|s| s.stage));
        let Some(svc) = self.svcs.get_mut(name) else {
            return;
        };
        if facts.failing && svc.armed {
            svc.troubled = true;
            if svc.failing_since.is_none() {
                svc.failing_since = Some(Instant::now());
            }
            svc.reason = why;
            svc.healthy_since = None;
        }
        let old = svc.state;
        let armed = svc.armed;
        let (new, held_by) = match &decision {
            Decision::Healthy => (ServiceState::Healthy, None),
            Decision::Starting => {
                // Keep an escalated service escalated while it is not healthy.
                if facts.escalated {
                    (ServiceState::Escalated, None)
                } else {
                    (ServiceState::Starting, None)
                }
            }
            Decision::Held(up) => (ServiceState::Held, Some(up.clone())),
            Decision::Escalated | Decision::Escalate => (ServiceState::Escalated, None),
            Decision::Unhealthy | Decision::Restart(_) => (ServiceState::Unhealthy, None),
        };
        // Before its stage was recovered a service is only starting: the
        // recovery engine is bringing it up, the daemon does not act yet.
        // An escalation (persisted) is shown as such all along.
        let new = match new {
            ServiceState::Healthy => new,
            _ if armed => new,
            _ if facts.escalated => ServiceState::Escalated,
            _ => ServiceState::Starting,
        };
        let held_by = if armed { held_by } else { None };
        if matches!(
            decision,
            Decision::Held(_) | Decision::Healthy | Decision::Starting | Decision::Escalated
        ) {
            // Not failing any more (or not ours to restart now): no restart.
            svc.restart_at = None;
        }
        svc.held_by = held_by;
        svc.state = new;
        if old != new {
            let reason = match new {
                ServiceState::Healthy | ServiceState::Starting => "",
                _ => svc.reason.as_str(),
            };
            info!(service = %name, stage = stage.as_deref().unwrap_or(""), old = old.as_str(),
                new = new.as_str(), reason, held_by = svc.held_by.as_deref().unwrap_or(""),
                "service state changed");
        }
        match decision {
            Decision::Healthy => {
                if old != ServiceState::Healthy {
                    svc.healthy_since = Some(Instant::now());
                    svc.troubled = false;
                    svc.failing_since = None;
                    svc.reason.clear();
                }
                if facts.escalated {
                    if let Some(rec) = self.persisted.services.get_mut(name) {
                        if let Some(esc) = rec.escalated.take() {
                            info!(service = %name, event_id = %esc.event_id, "healthy again: escalation re-armed");
                        }
                    }
                    self.save_state();
                }
            }
            Decision::Restart(delay) if armed => {
                let at = Instant::now() + delay;
                svc.restart_at = Some(at);
                info!(service = %name, delay_ms = delay.as_millis() as u64,
                    backoff_level = facts.backoff_level, reason = %svc.reason, "restart scheduled");
            }
            Decision::Escalate if armed => self.escalate(name, facts.restarts_in_window),
            _ => {}
        }
    }

    fn next_timer(&self) -> Option<Instant> {
        self.svcs.values().filter_map(|s| s.restart_at).min()
    }

    fn on_timers(&mut self) {
        let now = Instant::now();
        let due: Vec<String> = self
            .svcs
            .iter()
            .filter(|(_, s)| s.armed && s.restart_at.is_some_and(|t| t <= now))
            .map(|(n, _)| n.clone())
            .collect();
        for name in due {
            if let Some(svc) = self.svcs.get_mut(&name) {
                svc.restart_at = None;
            }
            // Still failing and not held by now? Re-decide before acting.
            let Some((facts, _)) = self.facts(&name) else {
                continue;
            };
            if facts.failing && facts.failing_upstream.is_none() && !facts.escalated {
                self.issue_restart(&name, "backoff elapsed");
            }
        }
    }

    /// Every second: backoff reset for services healthy long enough.
    fn housekeeping(&mut self) {
        let reset_after = self.cfg.watch.backoff_reset;
        let mut changed = false;
        for (name, svc) in &self.svcs {
            let Some(since) = svc.healthy_since else {
                continue;
            };
            if svc.state != ServiceState::Healthy
                || !policy::should_reset(&self.cfg.watch, since.elapsed())
            {
                continue;
            }
            if let Some(rec) = self.persisted.services.get_mut(name) {
                if rec.backoff_level > 0 || !rec.restarts.is_empty() {
                    info!(service = %name, healthy_for_s = reset_after.as_secs(), "healthy long enough: backoff reset");
                    rec.reset_backoff();
                    changed = true;
                }
            }
        }
        if changed {
            self.save_state();
        }
    }

    // ----- restarts --------------------------------------------------------

    /// Issue `RestartUnit` now (after `ResetFailedUnit` when failed), with
    /// its bookkeeping: persisted count and timestamp, journal entry with the
    /// reaction time, checks stopped until the job is done.
    fn issue_restart(&mut self, name: &str, trigger: &str) {
        let Some(sd) = self.sd.clone() else {
            // No bus right now: try again once reconnected.
            if let Some(svc) = self.svcs.get_mut(name) {
                svc.restart_at = Some(Instant::now() + Duration::from_secs(1));
            }
            return;
        };
        let window = self.cfg.watch.escalate_window;
        let stage = self.stage_name(self.svcs.get(name).and_then(|s| s.stage));
        let Some(svc) = self.svcs.get_mut(name) else {
            return;
        };
        let Some(unit) = svc.unit.clone() else {
            return;
        };
        let now = SystemTime::now();
        let rec = self.persisted.services.entry(name.to_owned()).or_default();
        rec.record_restart(now_ms(now), window);
        let restarts = rec.restarts_in_window(now_ms(now), window);
        let total = rec.total_restarts;
        let reaction_ms = svc
            .failing_since
            .map_or(0, |t| t.elapsed().as_millis() as u64);
        info!(
            message_id = RESTART_MESSAGE_ID,
            service = %name,
            unit = %unit,
            stage = stage.as_deref().unwrap_or(""),
            restarts,
            window_s = window.as_secs(),
            total_restarts = total,
            reason = %svc.reason,
            trigger,
            reaction_ms,
            "restart issued"
        );
        let failed = svc.unit_state.as_ref().is_some_and(UnitState::is_failed);
        let generation = svc.generation.wrapping_add(1_000_000);
        let tx = self.ev_tx.clone();
        let service = name.to_owned();
        let handle = tokio::spawn(async move {
            if failed {
                if let Err(e) = sd.reset_failed(&unit).await {
                    debug!(unit = %unit, error = %e, "reset-failed before restart");
                }
            }
            let result = match tokio::time::timeout(RESTART_TIMEOUT, sd.restart(&unit)).await {
                Ok(Ok(o)) => Ok(o),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!(
                    "restart job did not finish within {}s",
                    RESTART_TIMEOUT.as_secs()
                )),
            };
            let _ = tx.send(Ev::RestartDone {
                service,
                generation,
                result,
            });
        });
        svc.restart_at = None;
        svc.restart_task = Some((generation, handle));
        svc.state = ServiceState::Unhealthy;
        self.health.stop(name);
        if let Some(svc) = self.svcs.get_mut(name) {
            svc.checks.clear();
            svc.generation = 0;
        }
        self.save_state();
    }

    fn restart_done(&mut self, name: &str, generation: u64, result: Result<JobOutcome, String>) {
        let Some(svc) = self.svcs.get_mut(name) else {
            return;
        };
        if svc.restart_task.as_ref().map(|(g, _)| *g) != Some(generation) {
            return;
        }
        svc.restart_task = None;
        match result {
            Ok(o) => {
                info!(service = %name, unit = %o.unit, result = %o.result,
                    active_state = %o.state.active_state, "restart finished");
                svc.unit_state = Some(o.state);
                // A new failure after this restart is timed from its own start.
                svc.failing_since = None;
            }
            Err(e) => {
                warn!(service = %name, error = %e, "restart failed");
                svc.reason = e;
                svc.failing_since = Some(Instant::now());
            }
        }
        self.spawn_checks(name, Mode::AfterStart);
    }

    // ----- escalation ------------------------------------------------------

    fn escalate(&mut self, name: &str, restarts: u32) {
        let stage = self.stage_name(self.svcs.get(name).and_then(|s| s.stage));
        let Some(svc) = self.svcs.get_mut(name) else {
            return;
        };
        svc.restart_at = None;
        let at = SystemTime::now();
        let event_id = format!("{name}-{}", now_ms(at));
        let reason = svc.reason.clone();
        let unit = svc.unit.clone();
        let rec = self.persisted.services.entry(name.to_owned()).or_default();
        rec.escalated = Some(Escalation {
            event_id: event_id.clone(),
            reason: reason.clone(),
            at_ms: now_ms(at),
        });
        // At most once per event id, also across a daemon restart.
        rec.mark_actions_done(&event_id);
        self.save_state();
        warn!(service = %name, event_id = %event_id, restarts, reason = %reason, "escalating");
        let policy = self.cfg.watch.clone();
        let ev = Event {
            id: event_id.clone(),
            platform: self.cfg.platform.name.clone(),
            service: name.to_owned(),
            unit: unit.clone().unwrap_or_default(),
            stage,
            restarts,
            window: policy.escalate_window,
            reason,
            diagnoses: Vec::new(),
            at,
        };
        let user = self.user;
        let tx = self.ev_tx.clone();
        tokio::spawn(async move {
            let mut ev = ev;
            if let Some(unit) = &unit {
                ev.diagnoses = crate::diagnose::diagnose_unit(unit, user, &ev.reason).await;
            }
            let results = escalate::escalate(&ev, &policy).await;
            let _ = tx.send(Ev::Diagnosed {
                service: ev.service.clone(),
                event_id: ev.id.clone(),
                diagnoses: ev.diagnoses,
                results,
            });
        });
    }

    fn diagnosed(
        &mut self,
        name: &str,
        event_id: &str,
        diagnoses: &[Diagnosis],
        results: &[ActionResult],
    ) {
        let ids: Vec<&str> = diagnoses.iter().map(|d| d.id).collect();
        for r in results {
            info!(service = %name, event_id, action = ?r.action, ok = r.ok, detail = %r.detail, "escalation action");
        }
        info!(service = %name, event_id, diagnosis = %ids.join(","), "escalation actions done");
        let Some(remedy) = self.cfg.services.get(name).and_then(|s| s.remedy.clone()) else {
            return;
        };
        let rec = self.persisted.services.entry(name.to_owned()).or_default();
        let current = rec
            .escalated
            .as_ref()
            .is_some_and(|e| e.event_id == event_id);
        if !current || rec.remedy_tried.as_deref() == Some(event_id) {
            return;
        }
        if !escalate::remedy_applies(&remedy, diagnoses) {
            info!(service = %name, event_id, "remedy configured but not applicable to this diagnosis");
            return;
        }
        rec.remedy_tried = Some(event_id.to_owned());
        self.save_state();
        let Some(svc_cfg) = self.cfg.services.get(name).cloned() else {
            return;
        };
        let tx = self.ev_tx.clone();
        let service = name.to_owned();
        let event_id = event_id.to_owned();
        warn!(service = %service, event_id = %event_id, "trying the configured remedy (quarantine)");
        tokio::spawn(async move {
            let at = SystemTime::now();
            let result = tokio::task::spawn_blocking(move || {
                escalate::quarantine(&svc_cfg, &remedy, at)
                    .map(|r| {
                        format!(
                            "moved {} file(s), {} missing",
                            r.moved.len(),
                            r.missing.len()
                        )
                    })
                    .map_err(|e| e.to_string())
            })
            .await
            .unwrap_or_else(|e| Err(format!("quarantine task: {e}")));
            let _ = tx.send(Ev::RemedyDone {
                service,
                event_id,
                result,
            });
        });
    }

    fn remedy_done(&mut self, name: &str, event_id: &str, result: Result<String, String>) {
        match result {
            Ok(detail) => {
                warn!(service = %name, event_id, detail = %detail, "remedy done; one more restart");
                self.issue_restart(name, "remedy");
            }
            Err(e) => error!(service = %name, event_id, error = %e, "remedy failed; no restart"),
        }
    }

    // ----- recovery --------------------------------------------------------

    fn start_recovery(&mut self) -> bool {
        if self.recovery.as_ref().is_some_and(|h| !h.is_finished()) {
            return false;
        }
        let Some(sd) = self.sd.clone() else {
            warn!("no systemd connection: recovery not started");
            return false;
        };
        let cfg = self.cfg.clone();
        let plan = self.plan.clone();
        let tx = self.ev_tx.clone();
        self.recovery_healthy.clear();
        self.phase = Phase::Recovering {
            index: 0,
            total: plan.stages.len(),
            stage: plan
                .stages
                .first()
                .map(|s| s.name.clone())
                .unwrap_or_default(),
        };
        // Escalated services stay down until acknowledged: the recovery
        // does not start them (nor wait for them).
        let opts = recover::RecoverOptions {
            skip: escalated_skips(&self.plan, &self.persisted),
        };
        for (name, why) in &opts.skip {
            let stage = self.stage_name(self.svcs.get(name).and_then(|s| s.stage));
            warn!(service = %name, stage = stage.as_deref().unwrap_or(""), reason = %why,
                "service escalated; not started (mcrecover ack {name} to re-arm)");
        }
        info!(
            stages = plan.stages.len(),
            skipped = opts.skip.len(),
            "recovery starting"
        );
        self.recovery = Some(tokio::spawn(async move {
            let report = recover::recover_with(&cfg, &plan, &sd, &opts, |ev| {
                let _ = tx.send(Ev::Recover(ev.clone()));
            })
            .await;
            let _ = tx.send(Ev::RecoverDone(Box::new(report)));
        }));
        true
    }

    fn on_recover(&mut self, ev: RecoverEvent) {
        match ev {
            RecoverEvent::StageStarted {
                stage,
                index,
                total,
                ..
            } => {
                // The recovery (re)starts this stage's units: the daemon
                // keeps its hands off them until the stage is done.
                // Escalated services stay as they are: the recovery skips them.
                let idx = self.plan.stages.iter().position(|s| s.name == stage);
                let members: Vec<String> = self
                    .svcs
                    .iter()
                    .filter(|(_, s)| s.armed && s.unit.is_some() && idx.is_some() && s.stage == idx)
                    .map(|(n, _)| n.clone())
                    .filter(|n| !self.is_escalated(n))
                    .collect();
                for name in members {
                    if let Some(svc) = self.svcs.get_mut(&name) {
                        debug!(service = %name, stage = %stage, "recovery starts the stage; not acting on the service until it is done");
                        svc.disarm();
                    }
                }
                self.phase = Phase::Recovering {
                    index,
                    total,
                    stage,
                };
            }
            RecoverEvent::ServiceHealthy { service, .. } => {
                self.recovery_healthy.insert(service);
            }
            RecoverEvent::StageDone { stage, status, .. } => {
                info!(stage = %stage, status = ?status, "recovery stage done; watching its services");
                let idx = self.plan.stages.iter().position(|s| s.name == stage);
                let members: Vec<String> = self
                    .svcs
                    .iter()
                    .filter(|(_, s)| idx.is_some() && s.stage == idx && !s.armed)
                    .map(|(n, _)| n.clone())
                    .collect();
                for name in members {
                    self.arm(&name);
                }
            }
            RecoverEvent::UnitStarted { .. } | RecoverEvent::Check(_) => {}
        }
    }

    fn is_escalated(&self, name: &str) -> bool {
        self.persisted
            .services
            .get(name)
            .is_some_and(|r| r.escalated.is_some())
    }

    /// Arm `name` afresh: fresh check tasks (a new generation: a probe
    /// still in flight cannot deliver a stale failure), counters, verdicts
    /// and failure times reset, so only failures observed from now on
    /// count.
    fn arm(&mut self, name: &str) {
        let esc = self
            .persisted
            .services
            .get(name)
            .and_then(|r| r.escalated.clone());
        let Some(svc) = self.svcs.get_mut(name) else {
            return;
        };
        svc.rearm(esc.as_ref());
        // While a restart job runs the checks are paused; they start again
        // (with the start period) when it is done.
        if svc.restart_task.is_none() {
            self.spawn_checks(name, Mode::Normal);
        }
    }

    fn recover_done(&mut self, report: &recover::Report) {
        let skipped = report
            .services
            .iter()
            .filter(|s| s.status == recover::ServiceStatus::Skipped)
            .count();
        info!(outcome = ?report.outcome, skipped, "recovery finished; watching");
        self.phase = Phase::Watching;
        let blocked = blocked_stages(&self.plan, &report.stages);
        let unarmed: Vec<String> = self
            .svcs
            .iter()
            .filter(|(_, s)| !s.armed)
            .map(|(n, _)| n.clone())
            .collect();
        let mut not_started: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for name in unarmed {
            let stage = self.svcs.get(&name).and_then(|s| s.stage);
            match stage.and_then(|i| blocked.get(&i)) {
                // Its stage was never started: neither started nor
                // restarted by the daemon (that would bypass the stage
                // order and `on_failure = "block"`).
                Some(blocker) => {
                    if let Some(svc) = self.svcs.get_mut(&name) {
                        svc.blocked_by = Some(blocker.clone());
                        svc.restart_at = None;
                    }
                    not_started.entry(blocker.clone()).or_default().push(name);
                }
                None => self.arm(&name),
            }
        }
        for (blocker, names) in not_started {
            warn!(blocked_by = %blocker, services = %names.join(","),
                "recovery blocked: these services were not started and are not watched until a recovery starts them (D-Bus Recover() or mcrecover reload)");
        }
    }

    // ----- events and commands ---------------------------------------------

    async fn on_event(&mut self, ev: Ev) {
        match ev {
            Ev::Recover(r) => self.on_recover(r),
            Ev::RecoverDone(r) => self.recover_done(&r),
            Ev::RestartDone {
                service,
                generation,
                result,
            } => self.restart_done(&service, generation, result),
            Ev::Diagnosed {
                service,
                event_id,
                diagnoses,
                results,
            } => self.diagnosed(&service, &event_id, &diagnoses, &results),
            Ev::RemedyDone {
                service,
                event_id,
                result,
            } => self.remedy_done(&service, &event_id, result),
            Ev::Connected(sd) => {
                self.reconnecting = None;
                info!(address = %sd.address(), "reconnected to systemd");
                self.connected(sd).await;
            }
        }
    }

    async fn on_command(&mut self, cmd: ApiCommand, reply: oneshot::Sender<ApiReply>) {
        info!(command = ?cmd, "API command");
        let answer = match cmd {
            ApiCommand::Recover => {
                if self.start_recovery() {
                    Ok("recovery started".to_owned())
                } else {
                    Err("a recovery is already running (or systemd is unreachable)".to_owned())
                }
            }
            ApiCommand::Restart(name) => self.cmd_restart(&name),
            ApiCommand::Ack(name) => self.cmd_ack(&name),
            ApiCommand::Reload => self.reload().await,
        };
        let _ = reply.send(answer);
    }

    fn cmd_restart(&mut self, name: &str) -> ApiReply {
        let Some(svc) = self.svcs.get(name) else {
            return Err(format!("no service `{name}`"));
        };
        if svc.unit.is_none() {
            return Err(format!(
                "{name} is external: it is checked, never restarted"
            ));
        }
        if svc.restart_task.is_some() {
            return Err(format!("a restart of {name} is already running"));
        }
        if self.sd.is_none() {
            return Err("systemd is unreachable right now".to_owned());
        }
        let rec = self.persisted.services.entry(name.to_owned()).or_default();
        rec.backoff_level = 0;
        if let Some(svc) = self.svcs.get_mut(name) {
            if svc.failing_since.is_none() {
                svc.failing_since = Some(Instant::now());
            }
            if svc.reason.is_empty() {
                "restart requested".clone_into(&mut svc.reason);
            }
        }
        self.issue_restart(name, "api");
        Ok(format!("restart of {name} issued"))
    }

    fn cmd_ack(&mut self, name: &str) -> ApiReply {
        if !self.svcs.contains_key(name) {
            return Err(format!("no service `{name}`"));
        }
        let rec = self.persisted.services.entry(name.to_owned()).or_default();
        let Some(esc) = rec.escalated.take() else {
            return Ok(format!("{name} is not escalated; nothing to do"));
        };
        rec.reset_backoff();
        self.save_state();
        if let Some(svc) = self.svcs.get_mut(name) {
            // Reaction times after an ack count from the ack.
            svc.failing_since = None;
        }
        info!(service = %name, event_id = %esc.event_id, "acknowledged: escalation re-armed");
        Ok(format!(
            "{name} re-armed (event {}); restarts resume with the initial backoff",
            esc.event_id
        ))
    }

    /// Reload the configuration: validate first, keep the running one on
    /// error; re-install (only changed files are written, systemd reloaded
    /// only then); restart check tasks whose checks changed; re-subscribe
    /// when the set of units changed.
    async fn reload(&mut self) -> ApiReply {
        self.notifier.reloading();
        let new = load_config(&self.opts.config_path).map_err(|e| e.to_string())?;
        let plan = plan::build(&new).map_err(|e| e.to_string())?;
        let mut installed = String::new();
        if self.opts.install {
            let Some(sd) = self.sd.clone() else {
                return Err("systemd is unreachable; reload not done".to_owned());
            };
            let r = do_install(&self.opts, &new, &sd)
                .await
                .map_err(|e| e.to_string())?;
            installed = format!(
                "; units: {} created, {} changed, {} unchanged",
                r.created.len(),
                r.changed.len(),
                r.unchanged.len()
            );
        }
        let old_units = self.units();
        // The last recovery was blocked: recover again with the new
        // configuration (it starts, and arms, what it can).
        let recover_again = self.svcs.values().any(|s| s.blocked_by.is_some());
        let old_cfg = std::mem::replace(&mut self.cfg, new);
        self.plan = plan;
        self.ups = policy::upstreams(&self.plan);
        let mut svcs = BTreeMap::new();
        let mut respawn = Vec::new();
        for name in self.plan.order.clone() {
            let fresh = Svc::new(&self.cfg, &self.plan, &name);
            let svc = match self.svcs.remove(&name) {
                Some(mut old) => {
                    old.stage = fresh.stage;
                    old.restartable = fresh.restartable;
                    if old.unit != fresh.unit {
                        old.unit = fresh.unit;
                        old.unit_state = None;
                    }
                    let same_checks =
                        match (old_cfg.services.get(&name), self.cfg.services.get(&name)) {
                            (Some(a), Some(b)) => {
                                serde_json::to_string(&a.checks).ok()
                                    == serde_json::to_string(&b.checks).ok()
                            }
                            _ => false,
                        };
                    if !same_checks {
                        respawn.push(name.clone());
                    }
                    old
                }
                None => {
                    respawn.push(name.clone());
                    let mut f = fresh;
                    // Armed at once (the daemon starts it), unless the
                    // recovery started below does.
                    f.armed = f.armed || !recover_again;
                    f
                }
            };
            svcs.insert(name, svc);
        }
        for (gone, svc) in std::mem::take(&mut self.svcs) {
            self.health.stop(&gone);
            if let Some((_, h)) = svc.restart_task {
                h.abort();
            }
        }
        self.svcs = svcs;
        for name in &respawn {
            if self
                .svcs
                .get(name)
                .is_some_and(|s| s.restart_task.is_none())
            {
                self.spawn_checks(name, Mode::Normal);
            }
        }
        if self.units() != old_units {
            if let Some(sd) = self.sd.clone() {
                self.connected(sd).await;
            }
        }
        let recovering = if recover_again && self.start_recovery() {
            "; recovery started (the last one was blocked)"
        } else {
            ""
        };
        let msg = format!(
            "configuration reloaded: {} services, {} with new checks{installed}{recovering}",
            self.svcs.len(),
            respawn.len()
        );
        info!("{msg}");
        Ok(msg)
    }

    // ----- status ----------------------------------------------------------

    fn status_line(&self) -> String {
        match &self.phase {
            Phase::Recovering {
                index,
                total,
                stage,
            } => {
                let members = self
                    .plan
                    .stages
                    .get(*index)
                    .map_or(&[][..], |s| s.services.as_slice());
                let healthy = members
                    .iter()
                    .filter(|m| self.recovery_healthy.contains(*m))
                    .count();
                format!(
                    "recovering: stage {}/{} {stage}: {healthy}/{} healthy",
                    index + 1,
                    total,
                    members.len()
                )
            }
            Phase::Watching => {
                let count = |st: ServiceState| self.svcs.values().filter(|s| s.state == st).count();
                let mut line = format!(
                    "watching {} services: {} healthy",
                    self.svcs.len(),
                    count(ServiceState::Healthy)
                );
                for st in [
                    ServiceState::Starting,
                    ServiceState::Unhealthy,
                    ServiceState::Held,
                    ServiceState::Escalated,
                ] {
                    let n = count(st);
                    if n > 0 {
                        line.push_str(&format!(", {n} {}", st.as_str()));
                    }
                }
                let blocked: Vec<&Svc> = self
                    .svcs
                    .values()
                    .filter(|s| s.blocked_by.is_some())
                    .collect();
                if let Some(by) = blocked.first().and_then(|s| s.blocked_by.as_deref()) {
                    line.push_str(&format!(
                        " (recovery blocked by stage {by}: {} not started)",
                        blocked.len()
                    ));
                }
                if self.sd.is_none() {
                    line.push_str(" (systemd unreachable, reconnecting)");
                }
                line
            }
        }
    }

    fn snapshot(&self) -> Snapshot {
        let now = now_ms(SystemTime::now());
        let window = self.cfg.watch.escalate_window;
        let services = self
            .plan
            .order
            .iter()
            .filter_map(|name| {
                let svc = self.svcs.get(name)?;
                let rec = self.persisted.services.get(name);
                let failing = svc.checks.iter().find(|(_, v)| !v.ok);
                let latest = svc.checks.values().map(|v| v.at).max();
                let reason = match failing {
                    Some((_, v)) => v.detail.clone(),
                    None => svc
                        .checks
                        .iter()
                        .map(|(k, v)| format!("{k}: {}", v.detail))
                        .collect::<Vec<_>>()
                        .join("; "),
                };
                let reason = match &svc.blocked_by {
                    Some(by) if svc.state != ServiceState::Healthy => blocked_reason(by, &reason),
                    _ => reason,
                };
                let health = HealthStatus {
                    ok: if svc.checks.is_empty() {
                        None
                    } else {
                        Some(svc.checks.values().all(|v| v.ok))
                    },
                    reason,
                    check: failing.map(|(k, _)| k.clone()),
                    age_s: latest.map(|t| t.elapsed().as_secs_f64()),
                };
                Some(ServiceStatus {
                    name: name.clone(),
                    stage: self.stage_name(svc.stage),
                    unit: svc.unit.clone(),
                    unit_state: svc.unit_state.as_ref().map_or_else(
                        || {
                            if svc.unit.is_some() {
                                "unknown".to_owned()
                            } else {
                                "-".to_owned()
                            }
                        },
                        |s| format!("{}/{}", s.active_state, s.sub_state),
                    ),
                    health,
                    restarts: rec.map_or(0, |r| r.restarts_in_window(now, window)),
                    total_restarts: rec.map_or(0, |r| r.total_restarts),
                    state: svc.state,
                    held_by: svc.held_by.clone(),
                    next_restart_in_s: svc
                        .restart_at
                        .map(|t| t.saturating_duration_since(Instant::now()).as_secs_f64()),
                    escalation: rec
                        .and_then(|r| r.escalated.as_ref())
                        .map(|e| format!("{} ({})", e.reason, e.event_id)),
                })
            })
            .collect();
        Snapshot {
            pid: std::process::id(),
            config: self.opts.config_path.display().to_string(),
            phase: match self.phase {
                Phase::Recovering { .. } => "recovering".to_owned(),
                Phase::Watching => "watching".to_owned(),
            },
            status_line: self.status_line(),
            services,
        }
    }

    fn publish(&mut self) {
        let snap = self.snapshot();
        self.notifier.status(&snap.status_line);
        self.snap_tx.send_if_modified(|cur| {
            // Ages change every time; publish when anything else changed, or
            // at most once a second for the ages.
            let changed = strip_ages(cur) != strip_ages(&snap);
            *cur = snap;
            changed
        });
    }

    fn shutdown(&mut self) {
        self.health.stop_all();
        if let Some(h) = self.recovery.take() {
            h.abort();
        }
        if let Some(h) = self.reconnecting.take() {
            h.abort();
        }
        for svc in self.svcs.values_mut() {
            if let Some((_, h)) = svc.restart_task.take() {
                h.abort();
            }
        }
        self.save_state();
    }
}

/// The health reason of a service whose stage the recovery did not start.
fn blocked_reason(by: &str, checks: &str) -> String {
    let mut r = format!("blocked by stage {by}: not started by the recovery");
    if !checks.is_empty() {
        r.push_str("; ");
        r.push_str(checks);
    }
    r
}

/// The stages (index in `plan`) the recovery did not start because a
/// `block` stage failed, with that stage's name.
fn blocked_stages(plan: &Plan, stages: &[recover::StageReport]) -> BTreeMap<usize, String> {
    stages
        .iter()
        .filter(|st| st.status == recover::StageStatus::Blocked)
        .filter_map(|st| {
            let idx = plan.stages.iter().position(|p| p.name == st.name)?;
            let blocker = st.blocked_by.clone().unwrap_or_else(|| st.name.clone());
            Some((idx, blocker))
        })
        .collect()
}

/// The services a recovery must not start: those persisted as escalated
/// (they stay down until `mcrecover ack` or healthy again), with the
/// escalation as the reason.
fn escalated_skips(plan: &Plan, persisted: &PersistedState) -> BTreeMap<String, String> {
    plan.services
        .iter()
        .filter(|(_, ps)| ps.unit.is_some())
        .filter_map(|(name, _)| {
            let esc = persisted.services.get(name)?.escalated.as_ref()?;
            Some((
                name.clone(),
                format!("escalated ({}): {}", esc.event_id, esc.reason),
            ))
        })
        .collect()
}

fn strip_ages(s: &Snapshot) -> Snapshot {
    let mut s = s.clone();
    for svc in &mut s.services {
        svc.health.age_s = None;
        svc.next_restart_in_s = svc.next_restart_in_s.map(|_| 0.0);
    }
    s
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::recover::{StageReport, StageStatus};

    fn engine(persisted: PersistedState, dir: &std::path::Path) -> Engine {
        let cfg = crate::plan::tests::sample();
        let plan = plan::build(&cfg).unwrap();
        let (ev_tx, _) = mpsc::unbounded_channel();
        let (health_tx, _) = mpsc::unbounded_channel();
        let (snap_tx, _) = watch::channel(Snapshot::default());
        let opts = DaemonOptions {
            config_path: PathBuf::from("/etc/mcrecover/mcrecover.toml"),
            bus: BusTarget::System,
            backend: None,
            quadlet_dir: None,
            unit_dir: None,
            install: false,
            state_dir: None,
            api_bus: ApiBus::None,
        };
        let store = StateStore::new(dir.to_path_buf());
        Engine::new(opts, cfg, plan, store, persisted, ev_tx, health_tx, snap_tx)
    }

    fn stage_report(name: &str, status: StageStatus, blocked_by: Option<&str>) -> StageReport {
        StageReport {
            name: name.into(),
            status,
            started_at_s: 0.0,
            elapsed_s: 0.0,
            blocked_by: blocked_by.map(str::to_owned),
        }
    }

    /// foundation failed (block): core and services were never started.
    fn blocked_at_foundation() -> Vec<StageReport> {
        vec![
            stage_report("foundation", StageStatus::Failed, None),
            stage_report("core", StageStatus::Blocked, Some("foundation")),
            stage_report("services", StageStatus::Blocked, Some("foundation")),
        ]
    }

    fn report(stages: Vec<StageReport>) -> recover::Report {
        recover::Report {
            outcome: recover::Outcome::Blocked,
            exit_code: 3,
            total_s: 0.0,
            stages,
            services: Vec::new(),
            critical_path: Vec::new(),
        }
    }

    fn unit_state(active: &str, sub: &str) -> UnitState {
        UnitState {
            load_state: "loaded".into(),
            active_state: active.into(),
            sub_state: sub.into(),
            ..UnitState::default()
        }
    }

    fn escalated(reason: &str) -> Escalation {
        Escalation {
            event_id: "dns-1".into(),
            reason: reason.into(),
            at_ms: 1,
        }
    }

    #[test]
    fn blocked_stages_name_their_blocker() {
        let cfg = crate::plan::tests::sample();
        let plan = plan::build(&cfg).unwrap();
        let b = blocked_stages(&plan, &blocked_at_foundation());
        assert_eq!(
            b.into_iter().collect::<Vec<_>>(),
            vec![(1, "foundation".to_owned()), (2, "foundation".to_owned())]
        );
        let all_ran = vec![
            stage_report("foundation", StageStatus::Healthy, None),
            stage_report("core", StageStatus::Failed, None),
            stage_report("services", StageStatus::Healthy, None),
        ];
        assert!(blocked_stages(&plan, &all_ran).is_empty());
    }

    #[test]
    fn escalated_services_with_a_unit_are_skipped() {
        let cfg = crate::plan::tests::sample();
        let plan = plan::build(&cfg).unwrap();
        let mut st = PersistedState::default();
        st.services.entry("dns".into()).or_default().escalated = Some(escalated("crash loop"));
        // External: never started anyway.
        st.services.entry("idp".into()).or_default().escalated = Some(escalated("down"));
        // Restarted before, not escalated.
        st.services.entry("app".into()).or_default().total_restarts = 3;
        let skip = escalated_skips(&plan, &st);
        assert_eq!(skip.keys().collect::<Vec<_>>(), vec!["dns"]);
        assert!(skip["dns"].contains("crash loop"), "{skip:?}");
        assert!(escalated_skips(&plan, &PersistedState::default()).is_empty());
    }

    #[test]
    fn rearming_forgets_what_was_seen_before() {
        let cfg = crate::plan::tests::sample();
        let plan = plan::build(&cfg).unwrap();
        let mut svc = Svc::new(&cfg, &plan, "proxy");
        let long_ago = Instant::now();
        svc.checks.insert(
            "tcp".into(),
            CheckView {
                passing: Some(false),
                ok: false,
                detail: "connection refused".into(),
                at: long_ago,
            },
        );
        svc.failing_since = Some(long_ago);
        svc.restart_at = Some(long_ago);
        svc.troubled = true;
        svc.reason = "check tcp failing: connection refused".into();
        svc.blocked_by = Some("foundation".into());
        svc.rearm(None);
        assert!(svc.armed);
        assert!(svc.checks.is_empty());
        assert_eq!(svc.checks_failing(), None);
        assert_eq!(svc.failing_since, None);
        assert_eq!(svc.restart_at, None);
        assert!(!svc.troubled);
        assert!(svc.reason.is_empty());
        assert_eq!(svc.blocked_by, None);
        // An escalation survives the re-arming.
        svc.rearm(Some(&escalated("crash loop")));
        assert!(svc.troubled);
        assert_eq!(svc.reason, "crash loop");
    }

    /// F3: after a recovery blocked at foundation, the never-started
    /// services of later stages stay unarmed: the watch loop neither starts
    /// nor restarts them; the failed stage's service is armed and handled.
    #[tokio::test]
    async fn blocked_recovery_arms_only_what_it_started() {
        let dir = tempfile::tempdir().unwrap();
        let mut e = engine(PersistedState::default(), dir.path());
        for name in ["dns", "proxy", "reg", "app", "web"] {
            e.on_unit(UnitChange {
                unit: format!("{name}.service"),
                state: unit_state("inactive", "dead"),
            });
        }
        e.phase = Phase::Recovering {
            index: 0,
            total: 3,
            stage: "foundation".into(),
        };
        e.on_recover(RecoverEvent::StageDone {
            stage: "foundation".into(),
            status: StageStatus::Failed,
            elapsed: Duration::ZERO,
        });
        e.recover_done(&report(blocked_at_foundation()));
        e.evaluate_all();
        let dns = &e.svcs["dns"];
        assert!(dns.armed);
        assert_eq!(dns.state, ServiceState::Unhealthy);
        assert!(dns.restart_at.is_some(), "the failed stage is handled");
        for name in ["proxy", "reg", "app", "web"] {
            let s = &e.svcs[name];
            assert!(!s.armed, "{name} armed");
            assert_eq!(s.state, ServiceState::Starting, "{name}");
            assert_eq!(s.restart_at, None, "{name} restart scheduled");
            assert_eq!(s.blocked_by.as_deref(), Some("foundation"));
        }
        // The external service is checked all along.
        assert!(e.svcs["idp"].armed);
        let snap = e.snapshot();
        assert!(
            snap.status_line
                .contains("recovery blocked by stage foundation: 4 not started"),
            "{}",
            snap.status_line
        );
        let web = snap.services.iter().find(|s| s.name == "web").unwrap();
        assert!(
            web.health.reason.starts_with("blocked by stage foundation"),
            "{web:?}"
        );
        // A timer that is somehow due never restarts an unarmed service.
        e.svcs.get_mut("web").unwrap().restart_at = Some(Instant::now());
        e.on_timers();
        assert!(e.svcs["web"].restart_task.is_none());

        // A later recovery that gets through arms them, afresh.
        e.on_recover(RecoverEvent::StageStarted {
            stage: "core".into(),
            index: 1,
            total: 3,
            services: vec!["proxy".into(), "reg".into()],
        });
        e.on_recover(RecoverEvent::StageDone {
            stage: "core".into(),
            status: StageStatus::Healthy,
            elapsed: Duration::ZERO,
        });
        assert!(e.svcs["proxy"].armed && e.svcs["reg"].armed);
        assert_eq!(e.svcs["proxy"].blocked_by, None);
        assert!(!e.svcs["web"].armed);
        e.shutdown();
    }

    /// F4: a stage (re)started by a recovery is not acted on while the
    /// recovery runs, and is armed afresh: failures seen before do not
    /// count (no restart right after the stage is healthy).
    #[tokio::test]
    async fn a_recovered_stage_is_armed_afresh() {
        let dir = tempfile::tempdir().unwrap();
        let mut e = engine(PersistedState::default(), dir.path());
        let old = Instant::now();
        {
            let reg = e.svcs.get_mut("reg").unwrap();
            reg.armed = true;
            reg.unit_state = Some(unit_state("active", "running"));
            reg.checks.insert(
                "tcp".into(),
                CheckView {
                    passing: Some(false),
                    ok: false,
                    detail: "connection refused".into(),
                    at: old,
                },
            );
        }
        e.evaluate_all();
        assert!(e.svcs["reg"].failing_since.is_some());
        e.on_recover(RecoverEvent::StageStarted {
            stage: "core".into(),
            index: 1,
            total: 3,
            services: vec!["proxy".into(), "reg".into()],
        });
        let reg = &e.svcs["reg"];
        assert!(!reg.armed);
        assert_eq!(reg.restart_at, None);
        e.evaluate_all();
        assert_eq!(e.svcs["reg"].restart_at, None, "acted on during recovery");
        e.on_recover(RecoverEvent::StageDone {
            stage: "core".into(),
            status: StageStatus::Healthy,
            elapsed: Duration::ZERO,
        });
        let reg = &e.svcs["reg"];
        assert!(reg.armed);
        assert!(reg.checks.is_empty());
        assert_eq!(reg.failing_since, None);
        assert_ne!(e.health.generation("reg"), None);
        assert_eq!(e.health.generation("reg"), Some(reg.generation));
        e.evaluate_all();
        let reg = &e.svcs["reg"];
        assert_eq!(reg.state, ServiceState::Starting);
        assert_eq!(reg.restart_at, None);
        e.shutdown();
    }

    /// F5: an escalated service stays escalated (also before its stage is
    /// recovered) and is not disarmed by a recovery that skips it.
    #[tokio::test]
    async fn escalated_service_stays_escalated_through_recovery() {
        let dir = tempfile::tempdir().unwrap();
        let mut st = PersistedState::default();
        st.services.entry("app".into()).or_default().escalated = Some(escalated("crash loop"));
        let mut e = engine(st, dir.path());
        e.on_unit(UnitChange {
            unit: "app.service".into(),
            state: unit_state("failed", "failed"),
        });
        e.evaluate_all();
        assert_eq!(e.svcs["app"].state, ServiceState::Escalated);
        assert!(!e.svcs["app"].armed);
        e.on_recover(RecoverEvent::StageDone {
            stage: "services".into(),
            status: StageStatus::Healthy,
            elapsed: Duration::ZERO,
        });
        assert!(e.svcs["app"].armed);
        e.on_recover(RecoverEvent::StageStarted {
            stage: "services".into(),
            index: 2,
            total: 3,
            services: vec!["web".into(), "app".into()],
        });
        assert!(e.svcs["app"].armed, "skipped by the recovery: stays armed");
        e.evaluate_all();
        let app = &e.svcs["app"];
        assert_eq!(app.state, ServiceState::Escalated);
        assert_eq!(app.restart_at, None);
        assert!(app.restart_task.is_none());
        e.shutdown();
    }
}

#[cfg(test)]
mod unit_down_tests {
    use super::*;

    fn state(active: &str, sub: &str, result: &str) -> UnitState {
        UnitState {
            load_state: "loaded".into(),
            active_state: active.into(),
            sub_state: sub.into(),
            result: result.into(),
            ..UnitState::default()
        }
    }

    #[test]
    fn a_unit_stopping_after_its_main_process_died_is_down() {
        assert!(unit_is_down(&state("deactivating", "stop", "exit-code")));
        assert!(unit_is_down(&state("deactivating", "stop-post", "signal")));
        assert!(unit_is_down(&state("failed", "failed", "exit-code")));
        assert!(unit_is_down(&state("inactive", "dead", "success")));
    }

    #[test]
    fn a_unit_stopping_cleanly_or_running_is_not_down() {
        assert!(!unit_is_down(&state("deactivating", "stop", "success")));
        assert!(!unit_is_down(&state("deactivating", "stop", "")));
        assert!(!unit_is_down(&state("active", "running", "success")));
        assert!(!unit_is_down(&state("activating", "start", "success")));
    }
}
