//! The daemon shell: the reconciliation engine run with the daemon goal
//! ([`crate::engine::Goal::Daemon`]: ramp the platform up stage by stage,
//! then keep it healthy, never done), plus what only a long-running service
//! needs: the persisted history (`state.json`), the D-Bus API, sd_notify
//! (`READY=1`, `STATUS=`, watchdog), configuration reload (`SIGHUP`,
//! `Reload()`), and the escalation actions (diagnosis, journal, hook,
//! webhook, remedy) and blocking alerts the engine asks for. One task owns
//! the runner; everything else reaches it as events.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, error, info, warn};

use super::api::{self, ApiBus, Authz};
use super::escalate::{self, Event as EscalationEvent, EventKind};
use super::install::{self, InstallError};
use super::notify::{self, Notifier};
use super::state::{now_ms, resolve_state_dir, StateError, StateStore};
use super::types::{ApiCommand, ApiReply, HealthStatus, ServiceState, ServiceStatus, Snapshot};
use crate::config::{self, Config};
use crate::drive::{BusTarget, DriveError, Systemd};
use crate::engine::history::PersistedState;
use crate::engine::{Effect, Event, Goal, Life, StagePhase, World};
use crate::plan::{self, PlanError};
use crate::render::Backend;
use crate::runner::Runner;

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
    /// The D-Bus API could not be served (its name is taken or not ours).
    #[error(transparent)]
    Api(#[from] api::ApiError),
}

/// The kernel's boot id (tells a reboot from a daemon restart).
fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// How often the daemon compares the running containers' images with the
/// configured ones (one `podman ps` and `podman images` in a transient unit).
const DRIFT_INTERVAL: Duration = Duration::from_secs(60);

/// MESSAGE_ID of the journal entry for drift the daemon noticed.
pub const DRIFT_MESSAGE_ID: &str = "7a5842798f8142929ad33b7ae5ff38fb";

/// Drift between what is configured and what runs, logged once per change
/// (`mcrecover drift` shows all of it on demand, docs/drift.md).
#[derive(Default)]
struct DriftWatch {
    tracker: std::sync::Arc<tokio::sync::Mutex<crate::drift::DriftTracker>>,
}

impl DriftWatch {
    /// One look in the background (skipped while the previous one runs).
    fn look(&self, runner: &Runner) {
        let Some(sd) = runner.systemd().cloned() else {
            return;
        };
        let Ok(mut tracker) = std::sync::Arc::clone(&self.tracker).try_lock_owned() else {
            return;
        };
        let cfg = runner.config().clone();
        let owned = owned_containers(runner);
        let tx = runner.sender();
        tokio::spawn(async move {
            let runner = crate::images::PodmanRunner::Transient(sd);
            match crate::drift::running_vs_configured(&cfg, &runner).await {
                Ok(now) => {
                    for change in tracker.update(&now) {
                        log_drift(&change);
                    }
                }
                Err(e) => debug!(error = %e, "drift: podman could not be asked"),
            }
            look_for_foreign(&cfg, &runner, &owned, &tx).await;
        });
    }
}

/// Per service with a unit and a container: (id, name, container name,
/// unit), for the periodic ownership look.
fn owned_containers(runner: &Runner) -> Vec<(usize, String, String, String)> {
    let cfg = runner.config();
    runner
        .world()
        .services
        .iter()
        .enumerate()
        .filter_map(|(id, s)| {
            let unit = s.info.unit.clone()?;
            let c = cfg.services.get(&s.info.name)?.container.as_ref()?;
            Some((id, s.info.name.clone(), c.name.clone(), unit))
        })
        .collect()
}

/// The periodic ownership look (with the drift look, every
/// [`DRIFT_INTERVAL`]): one `podman ps --all`; every configured container
/// name held by a container its unit did not start is told to the engine
/// ([`Event::Foreign`] without a token), which leaves it alone. The check
/// before each start and restart (in the runner) is what keeps a restart
/// from replacing such a container; this look finds the ones started
/// while no job ran (e.g. while a service was escalated or backing off).
async fn look_for_foreign(
    cfg: &Config,
    runner: &crate::images::PodmanRunner,
    owned: &[(usize, String, String, String)],
    tx: &mpsc::UnboundedSender<Event>,
) {
    let services: Vec<(String, String, String)> = owned
        .iter()
        .map(|(_, n, c, u)| (n.clone(), c.clone(), u.clone()))
        .collect();
    match crate::runner::owner::scan(cfg, runner, &services).await {
        Ok(found) => {
            for (name, c) in found {
                if let Some((svc, ..)) = owned.iter().find(|(_, n, ..)| *n == name) {
                    let _ = tx.send(Event::Foreign {
                        svc: *svc,
                        token: None,
                        detail: c.detail(),
                    });
                }
            }
        }
        Err(e) => debug!(error = %e, "ownership look: podman could not be asked"),
    }
}

fn log_drift(change: &crate::drift::DriftChange) {
    use crate::drift::DriftChange;
    match change {
        DriftChange::Drifted(d) => warn!(
            message_id = DRIFT_MESSAGE_ID,
            service = %d.service,
            configured = %d.configured,
            running = %d.running.image,
            running_id = %d.running.id,
            "{} runs {} (image {}), not the configured {}: deployed outside mcrecover? \
             `mcrecover drift` says what to do",
            d.service,
            d.running.image,
            d.running.id.get(..12).unwrap_or(&d.running.id),
            d.configured
        ),
        DriftChange::Resolved { service } => info!(
            message_id = DRIFT_MESSAGE_ID,
            service = %service,
            "{service} runs its configured image again (or no longer runs)"
        ),
    }
}

/// The picture of the last boot recovery, in the state directory.
pub const TIMELINE_FILE: &str = "last-boot-timeline.svg";

/// How long a reload may take to read, validate and plan the configuration.
const RELOAD_READ_LIMIT: Duration = Duration::from_secs(60);

/// What exec checks and the hook must not see (they run in transient units
/// of the system manager, not in the daemon's own sandbox): the state
/// directory and the configuration file (it may hold a webhook token).
fn hidden_paths(store: &StateStore, config: &Path) -> Vec<String> {
    let mut paths = Vec::new();
    if let Some(dir) = store.path().parent() {
        paths.push(dir.display().to_string());
    }
    paths.push(config.display().to_string());
    paths
}

/// Run the daemon until `SIGTERM`/`SIGINT`: install (unless disabled),
/// connect, subscribe, serve the API, send `READY=1`, then run the engine
/// (the boot recovery is its ramp; it goes on watching).
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
    let mut persisted = store.load()?;
    let sd = Systemd::connect(&opts.bus).await?;
    // The kernel's boot id; hidden by the shipped unit's `ProcSubset=pid`:
    // then the start of the manager the daemon drives (constant until a
    // reboot, or until a user manager restarts, with its units).
    let boot = match boot_id() {
        Some(id) => Some(id),
        None => sd
            .manager_started_usec()
            .await
            .ok()
            .filter(|&t| t > 0)
            .map(|t| format!("manager-{t}")),
    };
    persisted.restore(now_ms(SystemTime::now()), boot.as_deref(), &cfg.watch);
    info!(path = %store.path().display(), services = persisted.services.len(),
        boot = boot.as_deref().unwrap_or(""), "state loaded");

    if opts.install {
        do_install(&opts, &cfg, &sd).await?;
    }

    let mut sigterm = signal(SignalKind::terminate()).map_err(WatchError::Signal)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(WatchError::Signal)?;
    let mut sighup = signal(SignalKind::hangup()).map_err(WatchError::Signal)?;
    let (cmd_tx, mut cmd_rx) = mpsc::channel(16);
    let (snap_tx, snap_rx) = watch::channel(Snapshot::default());

    let mut runner = Runner::new(
        cfg.clone(),
        plan,
        Goal::Daemon,
        &persisted,
        Some(sd),
        Some(opts.bus.clone()),
    );
    runner.hide_from_commands(hidden_paths(&store, &opts.config_path));
    runner.subscribe().await;
    let metrics = crate::metrics::Exporter::start(&cfg.metrics).await;
    if let Some(m) = &metrics {
        runner.time_probes(m.metrics().probe_timer(runner.world()));
    }
    let authz = authz(&cfg);
    let mut shell = Shell {
        opts,
        store,
        boot,
        snap_tx,
        notifier: Notifier::new(),
        user: cfg.platform.mode == config::Mode::Rootless,
        reply: None,
        timeline: Some(crate::recover::Timeline::of_world(runner.world())),
        timeline_file: None,
        metrics,
        owners: std::collections::BTreeMap::new(),
        drill_timeline: None,
        last_drill: None,
    };
    // The API name is ours or the daemon stops, loudly: another daemon
    // driving the same platform, or a process standing in for the API, is
    // worse than a daemon that systemd restarts until the name is free.
    let _api = match api::serve(&shell.opts.api_bus, snap_rx, cmd_tx, authz).await {
        Ok(server) => server,
        Err(e) => {
            error!(error = %e, "D-Bus API not served; stopping");
            shell.notifier.status(&format!("failed: {e}"));
            return Err(WatchError::Api(e));
        }
    };
    info!(
        stages = runner.world().stages.len(),
        services = runner.world().services.len(),
        "recovery starting"
    );
    let fx = runner.handle(Event::Begin);
    shell.carry_out(&runner, fx);
    shell.publish(&runner);
    let line = status_line(runner.world());
    shell.notifier.ready(&line);
    info!(status = %line, "watching");

    let mut watchdog = notify::watchdog_interval().map(tokio::time::interval);
    let drift = DriftWatch::default();
    let mut drift_tick = tokio::time::interval(DRIFT_INTERVAL);
    drift_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = drift_tick.tick() => drift.look(&runner),
            ev = runner.next() => {
                let fx = runner.handle(ev);
                shell.carry_out(&runner, fx);
            }
            Some((cmd, reply)) = cmd_rx.recv() => {
                info!(command = ?cmd, "API command");
                match cmd {
                    ApiCommand::Reload => {
                        let answer = shell.reload(&mut runner).await;
                        if answer.is_ok() {
                            // The configured images may have changed.
                            drift.look(&runner);
                        }
                        let _ = reply.send(answer);
                    }
                    other => match to_event(runner.world(), &other) {
                        Ok(ev) => {
                            shell.reply = Some(reply);
                            let fx = runner.handle(ev);
                            shell.carry_out(&runner, fx);
                            if let Some(r) = shell.reply.take() {
                                let _ = r.send(Ok("done".to_owned()));
                            }
                        }
                        Err(e) => {
                            let _ = reply.send(Err(e));
                        }
                    },
                }
            }
            _ = tick_opt(&mut watchdog) => shell.notifier.watchdog(),
            _ = sighup.recv() => {
                info!("SIGHUP: reloading configuration");
                match shell.reload(&mut runner).await {
                    Ok(_) => drift.look(&runner),
                    Err(e) => warn!(error = %e, "reload refused; keeping the running configuration"),
                }
            }
            _ = sigterm.recv() => { info!("SIGTERM: stopping"); break; }
            _ = sigint.recv() => { info!("SIGINT: stopping"); break; }
        }
        shell.publish(&runner);
    }
    shell.notifier.stopping();
    shell.persist(runner.world());
    if let Some(m) = shell.metrics.take() {
        m.shutdown();
    }
    Ok(())
}

/// An API command as an engine event.
fn to_event(w: &World, cmd: &ApiCommand) -> Result<Event, String> {
    let find = |name: &str| w.find(name).ok_or_else(|| format!("no service `{name}`"));
    Ok(match cmd {
        ApiCommand::Recover => Event::RetryNow,
        ApiCommand::Restart(name) => Event::RestartNow(find(name)?),
        ApiCommand::Ack(name) => Event::Ack(find(name)?),
        ApiCommand::Adopt(name) => Event::Adopt(find(name)?),
        ApiCommand::Drill { kind, name } => match kind.as_str() {
            "stage" => Event::DrillStart(crate::engine::DrillScope::Stage(
                w.stages
                    .iter()
                    .position(|s| &s.info.name == name)
                    .ok_or_else(|| format!("no stage `{name}`"))?,
            )),
            "service" => Event::DrillStart(crate::engine::DrillScope::Service(find(name)?)),
            other => {
                return Err(format!(
                    "a drill covers a `stage` or a `service`, not `{other}`"
                ))
            }
        },
        ApiCommand::AbortDrill => Event::DrillAbort,
        ApiCommand::Reload => Event::Tick,
    })
}

fn authz(cfg: &Config) -> Authz {
    let user = cfg.platform.user.as_ref();
    Authz {
        uid: user.map(|u| u.uid),
        gid: user.map(|u| u.gid),
    }
}

fn load_config(path: &std::path::Path) -> Result<Config, WatchError> {
    config::load(path).map_err(|e| WatchError::Config {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })
}

async fn do_install(
    opts: &DaemonOptions,
    cfg: &Config,
    sd: &Systemd,
) -> Result<crate::render::WriteReport, InstallError> {
    let backend = opts
        .backend
        .unwrap_or_else(|| crate::doctor::detect_backend(cfg).0);
    let qdir = opts
        .quadlet_dir
        .clone()
        .unwrap_or_else(|| cfg.platform.quadlet_dir.clone());
    let udir = opts
        .unit_dir
        .clone()
        .unwrap_or_else(|| cfg.platform.unit_dir.clone());
    let report = install::install(cfg, backend, &qdir, &udir, sd).await?;
    info!(
        created = report.created.len(),
        changed = report.changed.len(),
        unchanged = report.unchanged.len(),
        "units installed"
    );
    Ok(report)
}

async fn tick_opt(i: &mut Option<tokio::time::Interval>) {
    match i {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// What the daemon keeps besides the runner.
struct Shell {
    opts: DaemonOptions,
    store: StateStore,
    boot: Option<String>,
    snap_tx: watch::Sender<Snapshot>,
    notifier: Notifier,
    user: bool,
    reply: Option<oneshot::Sender<ApiReply>>,
    /// The boot recovery's timeline while it runs.
    timeline: Option<crate::recover::Timeline>,
    /// Where the boot recovery's timeline was written.
    timeline_file: Option<String>,
    /// The Prometheus outputs (`[metrics]`), when configured.
    metrics: Option<crate::metrics::Exporter>,
    /// Per service, the last container of another controller found for it
    /// (what status shows as `owner` while it is `external`).
    owners: std::collections::BTreeMap<String, String>,
    /// The timeline of the drill in progress.
    drill_timeline: Option<crate::recover::Timeline>,
    /// The last drill's result.
    last_drill: Option<crate::engine::DrillResult>,
}

impl Shell {
    /// Carry out the effects the runner left: persistence, replies,
    /// escalation actions, remedies, blocking alerts.
    fn carry_out(&mut self, runner: &Runner, fx: Vec<Effect>) {
        let w = runner.world();
        self.record_timeline(runner, &fx);
        self.record_drill(runner, &fx);
        if let Some(m) = &self.metrics {
            m.metrics().effects(w, &fx);
        }
        let mut persist = false;
        for e in fx {
            match e {
                Effect::Persist => persist = true,
                Effect::Note(crate::engine::Note::Foreign { svc, detail, .. }) => {
                    if let Some(s) = w.services.get(svc) {
                        self.owners.insert(s.info.name.clone(), detail);
                    }
                }
                Effect::Reply(r) => {
                    if let Some(tx) = self.reply.take() {
                        let _ = tx.send(r);
                    }
                }
                Effect::Escalate {
                    svc,
                    event_id,
                    restarts,
                    reason,
                } => self.escalate(runner, svc, event_id, restarts, reason),
                Effect::Remedy { svc, event_id } => self.remedy(runner, svc, event_id),
                Effect::DrillDone(r) => self.drill_done(runner, r),
                Effect::AlertBlocked { stage, failing } => {
                    self.alert_blocked(runner, stage, &failing);
                }
                Effect::OperatorWait {
                    svc,
                    event_id,
                    check,
                    remedy,
                    detail,
                    reminder,
                    waited_ms,
                } => {
                    let w = runner.world();
                    let kind = if reminder {
                        EventKind::WaitReminder
                    } else {
                        EventKind::OperatorWait
                    };
                    let mut ev = Self::event(w, kind, svc, event_id, 0, detail);
                    ev.remedy = remedy;
                    ev.window = std::time::Duration::from_millis(waited_ms);
                    info!(service = %ev.service, check = %check, event_id = %ev.id, event = kind.as_str(),
                        "service waits for an operator: not restarted");
                    let policy = w.policy.clone();
                    let via = runner.exec_via();
                    tokio::spawn(async move {
                        for r in escalate::escalate(&ev, &policy, &via).await {
                            info!(service = %ev.service, event_id = %ev.id, action = ?r.action, ok = r.ok,
                                detail = %r.detail, "operator-wait action");
                        }
                    });
                }
                _ => {}
            }
        }
        if persist {
            self.persist(w);
        }
    }

    /// The boot recovery's timeline: every effect recorded until the ramp
    /// is done, then the picture written to the state directory
    /// (`last-boot-timeline.svg`, shown in `status`). Reload ramps are not
    /// recorded.
    fn record_timeline(&mut self, runner: &Runner, fx: &[Effect]) {
        let Some(t) = self.timeline.as_mut() else {
            return;
        };
        let w = runner.world();
        let now = runner.now();
        let at = now.saturating_sub(w.began_at);
        let mut done = false;
        for e in fx {
            t.record(w, e, at);
            done |= matches!(e, Effect::Note(crate::engine::Note::RampDone));
        }
        if !done {
            return;
        }
        let Some(mut t) = self.timeline.take() else {
            return;
        };
        t.finish(&crate::recover::Report::from_world(w, now));
        let svg = crate::recover::to_svg(&t);
        match self
            .store
            .write_atomic(TIMELINE_FILE, svg.as_bytes(), 0o644)
        {
            Ok(path) => {
                info!(path = %path.display(), "boot recovery timeline written");
                self.timeline_file = Some(path.display().to_string());
            }
            Err(e) => warn!(error = %e, "boot recovery timeline not written"),
        }
    }

    /// A drill's timeline: every effect from its start (its stops) to its
    /// end, relative to its start.
    fn record_drill(&mut self, runner: &Runner, fx: &[Effect]) {
        let w = runner.world();
        if let (Some(d), None) = (&w.drill, &self.drill_timeline) {
            let mut t = crate::recover::Timeline::of_world(w);
            t.origin = Some(d.began_at);
            self.drill_timeline = Some(t);
        }
        let Some(t) = self.drill_timeline.as_mut() else {
            return;
        };
        let origin = t.origin.unwrap_or(w.began_at);
        let at = runner.now().saturating_sub(origin);
        for e in fx {
            t.record(w, e, at);
        }
    }

    /// A drill ended: journal entry, `last-drill.json` and
    /// `drill-<id>.json`, its timeline (`last-drill-timeline.svg`), status.
    fn drill_done(&mut self, runner: &Runner, r: crate::engine::DrillResult) {
        escalate::journal::drill_done(&r);
        info!(drill_id = %r.id, outcome = r.outcome.as_str(), rto_ms = r.rto_ms, "drill finished");
        match serde_json::to_vec_pretty(&r) {
            Ok(json) => {
                for name in ["last-drill.json".to_owned(), format!("{}.json", r.id)] {
                    if let Err(e) = self.store.write_atomic(&name, &json, 0o644) {
                        warn!(file = %name, error = %e, "drill result not written");
                    }
                }
            }
            Err(e) => warn!(error = %e, "drill result not serialized"),
        }
        if let Some(mut t) = self.drill_timeline.take() {
            let w = runner.world();
            let mut report = crate::recover::Report::from_world(w, runner.now());
            report.total_s =
                (runner.now().saturating_sub(t.origin.unwrap_or(w.began_at))) as f64 / 1000.0;
            t.finish(&report);
            let svg = crate::recover::to_svg(&t);
            if let Err(e) =
                self.store
                    .write_atomic("last-drill-timeline.svg", svg.as_bytes(), 0o644)
            {
                warn!(error = %e, "drill timeline not written");
            }
        }
        self.last_drill = Some(r);
    }

    fn persist(&self, w: &World) {
        let mut st: PersistedState = w.history();
        st.boot_id.clone_from(&self.boot);
        if let Err(e) = self.store.save(&st) {
            error!(error = %e, "persisting the daemon state failed");
        }
    }

    fn event(
        w: &World,
        kind: EventKind,
        svc: usize,
        id: String,
        restarts: u32,
        reason: String,
    ) -> EscalationEvent {
        let s = &w.services[svc];
        EscalationEvent {
            kind,
            id,
            platform: w.platform.clone(),
            service: s.info.name.clone(),
            unit: s.info.unit.clone().unwrap_or_default(),
            stage: w.stage_name(svc).map(str::to_owned),
            restarts,
            window: w.policy.escalate_window,
            reason,
            diagnoses: Vec::new(),
            remedy: String::new(),
            at: SystemTime::now(),
        }
    }

    fn escalate(
        &self,
        runner: &Runner,
        svc: usize,
        event_id: String,
        restarts: u32,
        reason: String,
    ) {
        let w = runner.world();
        warn!(service = w.services[svc].info.name.as_str(), event_id = %event_id, restarts,
            reason = %reason, "escalating");
        let ev = Self::event(w, EventKind::Escalated, svc, event_id, restarts, reason);
        let policy = w.policy.clone();
        let remedy = runner
            .config()
            .services
            .get(&ev.service)
            .and_then(|s| s.remedy.clone());
        let user = self.user;
        let tx = runner_sender(runner);
        let via = runner.exec_via();
        tokio::spawn(async move {
            let mut ev = ev;
            if !ev.unit.is_empty() {
                ev.diagnoses = crate::diagnose::diagnose_unit(&ev.unit, user, &ev.reason).await;
            }
            let results = escalate::escalate(&ev, &policy, &via).await;
            for r in &results {
                info!(service = %ev.service, event_id = %ev.id, action = ?r.action, ok = r.ok,
                    detail = %r.detail, "escalation action");
            }
            let ids: Vec<&str> = ev.diagnoses.iter().map(|d| d.id).collect();
            info!(service = %ev.service, event_id = %ev.id, diagnosis = %ids.join(","), "escalation actions done");
            let applies = remedy
                .as_ref()
                .is_some_and(|r| escalate::remedy_applies(r, &ev.diagnoses));
            if remedy.is_some() && !applies {
                info!(service = %ev.service, event_id = %ev.id, "remedy configured but not applicable to this diagnosis");
            }
            let _ = tx.send(Event::EscalationDone {
                svc,
                event_id: ev.id,
                remedy: applies,
            });
        });
    }

    fn remedy(&self, runner: &Runner, svc: usize, event_id: String) {
        let w = runner.world();
        let name = w.services[svc].info.name.clone();
        let Some(svc_cfg) = runner.config().services.get(&name).cloned() else {
            return;
        };
        let Some(remedy) = svc_cfg.remedy.clone() else {
            return;
        };
        warn!(service = %name, event_id = %event_id, "trying the configured remedy (quarantine)");
        let tx = runner_sender(runner);
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
            let ok = match &result {
                Ok(detail) => {
                    warn!(service = %name, event_id = %event_id, detail = %detail, "remedy done; one more restart");
                    true
                }
                Err(e) => {
                    error!(service = %name, event_id = %event_id, error = %e, "remedy failed; no restart");
                    false
                }
            };
            let _ = tx.send(Event::RemedyDone { svc, event_id, ok });
        });
    }

    fn alert_blocked(&self, runner: &Runner, stage: usize, failing: &[(usize, String)]) {
        let w = runner.world();
        let Some(st) = w.stages.get(stage) else {
            return;
        };
        let Some(&(first, _)) = failing.first() else {
            return;
        };
        let reason = failing
            .iter()
            .map(|(s, why)| format!("{}: {why}", w.services[*s].info.name))
            .collect::<Vec<_>>()
            .join("; ");
        let id = format!("blocked-{}-{}", st.info.name, runner.now());
        error!(stage = %st.info.name, event_id = %id, reason = %reason,
            "stage failed; the stages after it wait (retried, resumed once healthy)");
        let ev = Self::event(w, EventKind::Blocked, first, id, 0, reason);
        let policy = w.policy.clone();
        let via = runner.exec_via();
        tokio::spawn(async move {
            for r in escalate::escalate(&ev, &policy, &via).await {
                info!(event_id = %ev.id, action = ?r.action, ok = r.ok, detail = %r.detail, "blocking alert action");
            }
        });
    }

    /// Reads, validates and plans the configuration on a blocking thread,
    /// pinging the watchdog meanwhile (a large configuration must never
    /// make the daemon miss a ping); gives up after [`RELOAD_READ_LIMIT`]
    /// (a configuration on a hung mount must not keep the daemon
    /// "alive" forever).
    async fn parse_off_loop(&self) -> Result<(Config, plan::Plan), String> {
        let path = self.opts.config_path.clone();
        let task = tokio::task::spawn_blocking(move || {
            let new = load_config(&path).map_err(|e| e.to_string())?;
            let plan = plan::build(&new).map_err(|e| e.to_string())?;
            Ok::<_, String>((new, plan))
        });
        let limited = tokio::time::timeout(RELOAD_READ_LIMIT, task);
        match self.pinging(limited).await {
            Ok(r) => r.map_err(|e| format!("reading the configuration: {e}"))?,
            Err(_) => Err(format!(
                "reading the configuration took longer than {} s; the running one stays",
                RELOAD_READ_LIMIT.as_secs()
            )),
        }
    }

    /// Awaits `work` while sending `WATCHDOG=1` every second.
    async fn pinging<F: std::future::Future>(&self, work: F) -> F::Output {
        tokio::pin!(work);
        let mut ping = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                r = &mut work => return r,
                _ = ping.tick() => self.notifier.watchdog(),
            }
        }
    }

    /// Reload the configuration: validate first, keep the running one on
    /// error; re-install (only changed files are written, systemd reloaded
    /// only then); then a fresh engine with the same history ramps the
    /// platform up again (running units are left as they are: their start
    /// jobs are no-ops, their checks pass at once).
    async fn reload(&mut self, runner: &mut Runner) -> ApiReply {
        let answer = self.reload_config(runner).await;
        if let Some(m) = &self.metrics {
            m.metrics().reloaded(answer.is_ok());
        }
        answer
    }

    /// [`Shell::reload`] itself.
    async fn reload_config(&mut self, runner: &mut Runner) -> ApiReply {
        self.notifier.reloading();
        let (new, plan) = self.parse_off_loop().await?;
        let Some(sd) = runner.systemd().cloned() else {
            return Err("systemd is unreachable; reload not done".to_owned());
        };
        let mut installed = String::new();
        if self.opts.install {
            let r = self
                .pinging(do_install(&self.opts, &new, &sd))
                .await
                .map_err(|e| e.to_string())?;
            installed = format!(
                "; units: {} created, {} changed, {} unchanged",
                r.created.len(),
                r.changed.len(),
                r.unchanged.len()
            );
        }
        let history = runner.world().history();
        let services = plan.order.len();
        let mut fresh = Runner::new(
            new,
            plan,
            Goal::Daemon,
            &history,
            Some(sd),
            Some(self.opts.bus.clone()),
        );
        fresh.hide_from_commands(hidden_paths(&self.store, &self.opts.config_path));
        fresh.subscribe().await;
        self.follow_metrics(&mut fresh).await;
        *runner = fresh;
        let fx = runner.handle(Event::Begin);
        self.carry_out(runner, fx);
        let msg = format!("configuration reloaded: {services} services{installed}");
        info!("{msg}");
        Ok(msg)
    }

    /// The reloaded `[metrics]`: outputs started, changed or stopped; the
    /// fresh runner's probes timed.
    async fn follow_metrics(&mut self, fresh: &mut Runner) {
        let cfg = &fresh.config().metrics;
        match self.metrics.as_mut() {
            Some(m) => m.configure(cfg).await,
            None => self.metrics = crate::metrics::Exporter::start(cfg).await,
        }
        if let Some(m) = &self.metrics {
            fresh.time_probes(m.metrics().probe_timer(fresh.world()));
        }
    }

    fn publish(&mut self, runner: &Runner) {
        let mut snap = snapshot(runner.world(), runner.now(), &self.opts.config_path);
        snap.timeline.clone_from(&self.timeline_file);
        snap.last_drill.clone_from(&self.last_drill);
        for s in &mut snap.services {
            if s.state == ServiceState::External {
                if let Some(o) = self.owners.get(&s.name) {
                    s.owner = Some(o.clone());
                }
            }
        }
        if let Some(m) = &self.metrics {
            m.metrics().update(runner.world(), &snap);
        }
        self.notifier.status(&snap.status_line);
        self.snap_tx.send_if_modified(|cur| {
            // Ages change every time; publish when anything else changed.
            let changed = strip_ages(cur) != strip_ages(&snap);
            *cur = snap;
            changed
        });
    }
}

fn runner_sender(runner: &Runner) -> mpsc::UnboundedSender<Event> {
    runner.sender()
}

/// The state shown for a service.
fn state_of(w: &World, svc: usize) -> ServiceState {
    let s = &w.services[svc];
    match s.life {
        Life::Idle => match s
            .info
            .stage
            .and_then(|i| w.stages.get(i))
            .map(|st| &st.phase)
        {
            Some(StagePhase::Blocked { .. }) => ServiceState::Blocked,
            // Its own stage's preflight failed: it is the problem.
            Some(StagePhase::Failed { .. }) => ServiceState::Unhealthy,
            _ => ServiceState::Pending,
        },
        Life::Skipped | Life::Escalated => ServiceState::Escalated,
        Life::Starting { .. } => ServiceState::Starting,
        Life::Healthy { .. } => ServiceState::Healthy,
        Life::Failing { .. } | Life::Restarting | Life::Rechecking => ServiceState::Unhealthy,
        Life::Held { .. } => ServiceState::Held,
        Life::Waiting { .. } => ServiceState::Waiting,
        Life::Foreign { .. } => ServiceState::External,
    }
}

/// Whether the ramp is still on its way (a stage pending, in preflight or gated).
fn ramping(w: &World) -> Option<usize> {
    w.stages.iter().position(|s| {
        matches!(
            s.phase,
            StagePhase::Pending | StagePhase::Preflight { .. } | StagePhase::Gating { .. }
        )
    })
}

/// The one-line status (sd_notify `STATUS=`, `status` header).
pub fn status_line(w: &World) -> String {
    if let Some(i) = ramping(w) {
        let st = &w.stages[i];
        let healthy = st
            .info
            .members
            .iter()
            .filter(|&&m| matches!(w.services[m].life, Life::Healthy { .. }))
            .count();
        return format!(
            "recovering: stage {}/{} {}: {healthy}/{} healthy",
            i + 1,
            w.stages.len(),
            st.info.name,
            st.info.members.len()
        );
    }
    let states: Vec<ServiceState> = (0..w.services.len()).map(|i| state_of(w, i)).collect();
    let count = |st: ServiceState| states.iter().filter(|s| **s == st).count();
    let mut line = format!(
        "watching {} services: {} healthy",
        w.services.len(),
        count(ServiceState::Healthy)
    );
    for st in [
        ServiceState::Starting,
        ServiceState::Unhealthy,
        ServiceState::Held,
        ServiceState::Escalated,
        ServiceState::Waiting,
        ServiceState::External,
        ServiceState::Blocked,
        ServiceState::Pending,
    ] {
        let n = count(st);
        if n > 0 {
            line.push_str(&format!(", {n} {}", st.as_str()));
        }
    }
    if let Some(by) = w.stages.iter().find_map(|s| match s.phase {
        StagePhase::Blocked { by } => w.stages.get(by),
        _ => None,
    }) {
        line.push_str(&format!(
            " (stage {} failed: later stages wait for it)",
            by.info.name
        ));
    }
    if !w.bus_up {
        line.push_str(" (systemd unreachable, reconnecting)");
    }
    line
}

/// The daemon's status snapshot of `w` at engine time `now`.
pub fn snapshot(w: &World, now: u64, config: &std::path::Path) -> Snapshot {
    let window = w.policy.escalate_window;
    let services = w
        .order
        .iter()
        .map(|&i| {
            let s = &w.services[i];
            let state = state_of(w, i);
            let failing = s
                .checks
                .iter()
                .find(|c| c.last.as_ref().is_some_and(|l| !l.ok));
            let latest = s
                .checks
                .iter()
                .filter_map(|c| c.last.as_ref())
                .map(|l| l.at)
                .max();
            let mut reason = match failing {
                Some(c) => c
                    .last
                    .as_ref()
                    .map(|l| l.detail.clone())
                    .unwrap_or_default(),
                None => s
                    .checks
                    .iter()
                    .filter_map(|c| {
                        c.last
                            .as_ref()
                            .map(|l| format!("{}: {}", c.spec.name, l.detail))
                    })
                    .collect::<Vec<_>>()
                    .join("; "),
            };
            if state == ServiceState::Blocked {
                let by = s
                    .info
                    .stage
                    .and_then(|st| match w.stages[st].phase {
                        StagePhase::Blocked { by } => w.stages.get(by),
                        _ => w.stages.get(st),
                    })
                    .map_or("?", |b| b.info.name.as_str());
                reason = format!("blocked by stage {by}: not started yet");
            } else if matches!(state, ServiceState::Unhealthy | ServiceState::Escalated)
                && s.unit_down()
            {
                reason = s.unit_reason();
            } else if !s.reason.is_empty()
                && (state == ServiceState::Waiting
                    || state == ServiceState::Unhealthy && reason.is_empty())
            {
                reason.clone_from(&s.reason);
            }
            let any = s.checks.iter().any(|c| c.last.is_some());
            let health = HealthStatus {
                ok: any.then(|| {
                    s.checks
                        .iter()
                        .all(|c| c.last.as_ref().is_none_or(|l| l.ok))
                }),
                reason,
                check: failing.map(|c| c.spec.name.clone()),
                age_s: latest.map(|t| now.saturating_sub(t) as f64 / 1000.0),
            };
            ServiceStatus {
                name: s.info.name.clone(),
                stage: w.stage_name(i).map(str::to_owned),
                unit: s.info.unit.clone(),
                unit_state: s.unit.as_ref().map_or_else(
                    || {
                        if s.info.unit.is_some() {
                            "unknown".to_owned()
                        } else {
                            "-".to_owned()
                        }
                    },
                    |u| format!("{}/{}", u.active_state, u.sub_state),
                ),
                health,
                restarts: s.history.restarts_in_window(now, window),
                total_restarts: s.history.total_restarts,
                state,
                held_by: match s.life {
                    Life::Held { by } => Some(w.services[by].info.name.clone()),
                    _ => None,
                },
                next_restart_in_s: match s.life {
                    Life::Failing {
                        restart_at: Some(t),
                    } => Some(t.saturating_sub(now) as f64 / 1000.0),
                    _ => None,
                },
                escalation: s
                    .history
                    .escalated
                    .as_ref()
                    .map(|e| format!("{} ({})", e.reason, e.event_id)),
                remedy: match s.life {
                    Life::Waiting { .. } => s
                        .waiting_check()
                        .and_then(|c| c.spec.remedy.clone())
                        .or_else(|| Some(String::new())),
                    _ => None,
                },
                owner: match s.life {
                    Life::Foreign { .. } => Some(s.reason.clone()),
                    _ => None,
                },
            }
        })
        .collect();
    Snapshot {
        pid: std::process::id(),
        config: config.display().to_string(),
        phase: if ramping(w).is_some() {
            "recovering".to_owned()
        } else {
            "watching".to_owned()
        },
        status_line: status_line(w),
        services,
        timeline: None,
        drill: w.drill.as_ref().map(|d| crate::watch::types::DrillStatus {
            id: d.id.clone(),
            phase: match d.phase {
                crate::engine::drill::DrillPhase::Stopping => "stopping",
                crate::engine::drill::DrillPhase::Recovering => "recovering",
            }
            .to_owned(),
            services: d
                .services
                .iter()
                .map(|&s| w.services[s].info.name.clone())
                .collect(),
            healthy: d
                .healthy
                .keys()
                .map(|&s| w.services[s].info.name.clone())
                .collect(),
            elapsed_s: now.saturating_sub(d.began_at) as f64 / 1000.0,
        }),
        last_drill: None,
    }
}

fn strip_ages(s: &Snapshot) -> Snapshot {
    let mut s = s.clone();
    if let Some(d) = &mut s.drill {
        d.elapsed_s = 0.0;
    }
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
    use crate::engine::{step, Event as Ev};
    use std::time::Duration;

    #[test]
    fn status_names_blocked_services_and_the_blocker() {
        let mut cfg = crate::plan::tests::sample();
        cfg.stages[0].timeout = Duration::from_secs(1);
        let plan = crate::plan::build(&cfg).unwrap();
        let mut w = World::new(&cfg, &plan, Goal::Daemon, &PersistedState::default());
        w.bus_up = true;
        let mut now = 10;
        let mut queue = step(&mut w, Ev::Begin, now);
        // Preflight clear, dns started but never healthy.
        while let Some(e) = queue.pop() {
            if let Effect::Preflight { stage, token, .. } = e {
                queue.extend(step(
                    &mut w,
                    Ev::PreflightDone {
                        stage,
                        token,
                        problems: vec![],
                    },
                    now,
                ));
            }
        }
        now += 2_000;
        step(&mut w, Ev::Tick, now);
        let snap = snapshot(&w, now, std::path::Path::new("/etc/x.toml"));
        let web = snap.services.iter().find(|s| s.name == "web").unwrap();
        assert_eq!(web.state, ServiceState::Blocked);
        assert!(
            web.health.reason.contains("blocked by stage foundation"),
            "{web:?}"
        );
        assert!(
            snap.status_line.contains("stage foundation failed"),
            "{}",
            snap.status_line
        );
        assert_eq!(snap.phase, "watching");
    }
}
