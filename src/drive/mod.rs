//! drive: the systemd driver. Talks to a service manager (system or user)
//! over D-Bus with zbus: daemon-reload, start/stop/restart units and wait for
//! their jobs, read unit state, and watch units change.
//!
//! Rules it follows (summed up in `docs/architecture.md`, `drive`):
//! - `Manager.Subscribe()` is called on connect, or systemd sends no signals.
//! - The `JobRemoved` match is registered on connect, before any job is
//!   queued; a job's signal may arrive before the reply that names the job,
//!   so finished jobs are remembered (module `jobs`).
//! - A job `done` does not mean running: the unit state is re-read after
//!   every job.
//! - Unit state is read through `LoadUnit` (`GetUnit` fails for units that
//!   are not loaded).
//! - Every signal stream is drained continuously by a task: an undrained
//!   zbus stream stalls the whole connection.
//!
//! One [`Systemd`] (cheap to clone) shares one connection and one
//! `JobRemoved` stream between any number of concurrent operations.

mod deps;
mod error;
mod jobs;
mod state;
pub(crate) mod transient;

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::Instrument;
use zbus::message::Sequence;
use zbus::proxy::CacheProperties;
use zbus::{Connection, OwnedObjectPath, OwnedVariant};
use zbus_systemd::systemd1::ManagerProxy;

pub use error::{DriveError, JobMode, JobOp};
pub use state::UnitState;
pub use transient::{
    Keep, Sandbox, TransientError, TransientExit, TransientOutput, TransientSpec,
    DEFAULT_OUTPUT_LIMIT,
};

use error::{connection_lost, job_hint, map_zbus, Ctx};
use jobs::{Finished, JobTable, Lookup};
use state::{apply_unit_props, Field, FIELDS, SERVICE_IFACE, UNIT_IFACE};

/// The well-known bus name of a systemd manager (system or user).
const SYSTEMD_DEST: &str = "org.freedesktop.systemd1";
const PROPERTIES_IFACE: &str = "org.freedesktop.DBus.Properties";
/// How many units [`Systemd::watch`] sets up at once.
const WATCH_SETUP_AT_ONCE: usize = 16;
/// Default system bus socket (what `Builder::system` falls back to).
const DEFAULT_SYSTEM_BUS: &str = "unix:path=/var/run/dbus/system_bus_socket";

/// Which bus (and so which service manager) to talk to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusTarget {
    /// The system bus (`$DBUS_SYSTEM_BUS_ADDRESS` or
    /// `/var/run/dbus/system_bus_socket`): the system manager.
    System,
    /// The session/user bus of the current uid (`$DBUS_SESSION_BUS_ADDRESS`
    /// or `/run/user/UID/bus`): that user's manager (`systemctl --user`).
    User,
    /// An explicit D-Bus address, e.g.
    /// `unix:path=/proc/PID/root/run/dbus/system_bus_socket` (a system manager).
    Address(String),
}

impl BusTarget {
    /// The D-Bus address this target resolves to now.
    pub fn address(&self) -> String {
        match self {
            BusTarget::System => std::env::var("DBUS_SYSTEM_BUS_ADDRESS")
                .ok()
                .filter(|a| !a.is_empty())
                .unwrap_or_else(|| DEFAULT_SYSTEM_BUS.to_owned()),
            BusTarget::User => std::env::var("DBUS_SESSION_BUS_ADDRESS")
                .ok()
                .filter(|a| !a.is_empty())
                .unwrap_or_else(|| {
                    format!(
                        "unix:path=/run/user/{}/bus",
                        nix::unistd::geteuid().as_raw()
                    )
                }),
            BusTarget::Address(a) => a.clone(),
        }
    }
}

/// The outcome of one job (start, stop, restart) that systemd completed.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct JobOutcome {
    /// The unit name.
    pub unit: String,
    /// The job's object path, e.g. `/org/freedesktop/systemd1/job/123`.
    pub job: String,
    /// The `JobRemoved` result. Operations return `Err(JobFailed)` for
    /// `failed`, `timeout`, `dependency`, `canceled`, ...; so an `Ok` outcome
    /// holds `done` or `skipped`.
    pub result: String,
    /// The unit's state, re-read after the job finished. `done` does not mean
    /// running: check `state.active_state` (a oneshot without
    /// `RemainAfterExit=` is `inactive`, a starting unit may be `activating`).
    pub state: UnitState,
}

/// One state change of a watched unit.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct UnitChange {
    /// The unit name, as given to [`Systemd::watch`].
    pub unit: String,
    /// Its state after the change.
    pub state: UnitState,
}

/// A connection to one systemd manager. Clones share the connection.
#[derive(Clone)]
pub struct Systemd {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Connection,
    manager: ManagerProxy<'static>,
    address: String,
    user: bool,
    jobs: Arc<JobTable>,
    dispatcher: JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.dispatcher.abort();
    }
}

impl std::fmt::Debug for Systemd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Systemd")
            .field("address", &self.inner.address)
            .field("user", &self.inner.user)
            .finish_non_exhaustive()
    }
}

impl Systemd {
    /// Connect to the manager on `target`, register the `JobRemoved` match
    /// and call `Manager.Subscribe()`.
    ///
    /// Errors: `BusUnreachable` (with the address) when the socket cannot be
    /// opened or no manager owns `org.freedesktop.systemd1` there;
    /// `PermissionDenied` when the bus refuses us.
    pub async fn connect(target: &BusTarget) -> Result<Systemd, DriveError> {
        let address = target.address();
        let user = matches!(target, BusTarget::User);
        let ctx = Ctx {
            address: &address,
            method: "connect",
            unit: None,
            user,
        };
        let conn = zbus::connection::Builder::address(address.as_str())
            .build()
            .await
            .map_err(|e| map_zbus(e, ctx))?;
        let manager = ManagerProxy::builder(&conn)
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(|e| map_zbus(e, ctx))?;
        // The match first, then Subscribe: no JobRemoved can be missed.
        let mut removed = manager.receive_job_removed().await.map_err(|e| {
            map_zbus(
                e,
                Ctx {
                    method: "AddMatch JobRemoved",
                    ..ctx
                },
            )
        })?;
        manager.subscribe().await.map_err(|e| {
            map_zbus(
                e,
                Ctx {
                    method: "Subscribe",
                    ..ctx
                },
            )
        })?;

        let jobs = Arc::new(JobTable::default());
        let table = Arc::clone(&jobs);
        let bus = address.clone();
        let dispatcher = tokio::spawn(async move {
            while let Some(signal) = removed.next().await {
                match signal.args() {
                    Ok(args) => {
                        tracing::debug!(
                            unit = %args.unit,
                            job = %args.job.as_str(),
                            result = %args.result,
                            "JobRemoved"
                        );
                        table.finish(
                            args.job.as_str(),
                            Finished {
                                id: args.id,
                                unit: args.unit.clone(),
                                result: args.result.clone(),
                            },
                            std::time::Instant::now(),
                        );
                    }
                    Err(e) => tracing::warn!(error = %e, "undecodable JobRemoved signal"),
                }
            }
            tracing::warn!(address = %bus, "JobRemoved stream ended (connection closed)");
            table.close();
        });
        tracing::debug!(address = %address, user, "connected to systemd");
        Ok(Systemd {
            inner: Arc::new(Inner {
                conn,
                manager,
                address,
                user,
                jobs,
                dispatcher,
            }),
        })
    }

    /// The D-Bus address this connection uses.
    pub fn address(&self) -> &str {
        &self.inner.address
    }

    fn ctx<'a>(&'a self, method: &'a str, unit: Option<&'a str>) -> Ctx<'a> {
        Ctx {
            address: &self.inner.address,
            method,
            unit,
            user: self.inner.user,
        }
    }

    /// `Manager.Reload`: daemon-reload, re-running generators (quadlet).
    /// Returns once systemd has finished reloading.
    pub async fn reload(&self) -> Result<(), DriveError> {
        tracing::info!(address = %self.inner.address, "daemon-reload");
        self.inner
            .manager
            .reload()
            .await
            .map_err(|e| map_zbus(e, self.ctx("Reload", None)))
    }

    /// `StartUnit(unit, "replace")`, wait for that job's `JobRemoved`, then
    /// re-read the unit's state.
    ///
    /// Errors: `UnitNotFound`, `UnitMasked`, `UnitBroken`, `PermissionDenied`;
    /// `JobFailed` for a job result other than `done`/`skipped`, and for a
    /// job `done` after which the unit is already `failed` (its main process
    /// died at once). No timeout of its own: systemd's `TimeoutStartSec=`
    /// ends the job (result `timeout`); wrap the call in
    /// `tokio::time::timeout` for a shorter bound (dropping it is safe).
    ///
    /// Concurrent calls on different units are fine (they share the
    /// connection). Concurrent jobs on the SAME unit merge or replace each
    /// other in systemd, and each caller's re-read state may show the other
    /// job's effect (e.g. `inactive` in the middle of a restart).
    pub async fn start(&self, unit: &str) -> Result<JobOutcome, DriveError> {
        self.run_job(JobOp::Start, unit, JobMode::Replace).await
    }

    /// [`Systemd::start`] with an explicit job mode (e.g.
    /// [`JobMode::IgnoreDependencies`] to start a unit although a required
    /// unit failed).
    pub async fn start_mode(&self, unit: &str, mode: JobMode) -> Result<JobOutcome, DriveError> {
        self.run_job(JobOp::Start, unit, mode).await
    }

    /// `StopUnit(unit, "replace")`, wait for the job, re-read the state.
    pub async fn stop(&self, unit: &str) -> Result<JobOutcome, DriveError> {
        self.run_job(JobOp::Stop, unit, JobMode::Replace).await
    }

    /// [`Systemd::stop`] with an explicit job mode
    /// ([`JobMode::IgnoreDependencies`]: units that require it are not
    /// stopped with it).
    pub async fn stop_mode(&self, unit: &str, mode: JobMode) -> Result<JobOutcome, DriveError> {
        self.run_job(JobOp::Stop, unit, mode).await
    }

    /// `RestartUnit(unit, "replace")`, wait for the job, re-read the state.
    /// Same errors as [`Systemd::start`].
    pub async fn restart(&self, unit: &str) -> Result<JobOutcome, DriveError> {
        self.run_job(JobOp::Restart, unit, JobMode::Replace).await
    }

    /// The manager's `UserspaceTimestamp` (µs): when this manager started.
    /// Constant for its lifetime: a daemon that cannot read the kernel's
    /// boot id (`ProcSubset=pid`) tells a restart of its own from a reboot
    /// (or a restarted user manager, whose units restarted too) by it.
    pub async fn manager_started_usec(&self) -> Result<u64, DriveError> {
        self.inner
            .manager
            .userspace_timestamp()
            .await
            .map_err(|e| DriveError::Bus {
                action: "UserspaceTimestamp".to_owned(),
                detail: e.to_string(),
            })
    }

    /// `ResetFailedUnit(unit)`: clear `failed` and the start-rate limit
    /// counter (needed after `start-limit-hit`).
    pub async fn reset_failed(&self, unit: &str) -> Result<(), DriveError> {
        self.inner
            .manager
            .reset_failed_unit(unit.to_owned())
            .await
            .map_err(|e| map_zbus(e, self.ctx("ResetFailedUnit", Some(unit))))
    }

    /// The unit's current state (`LoadUnit`, then its properties).
    ///
    /// Errors: `UnitNotFound` when no unit file of this name exists.
    pub async fn unit_state(&self, unit: &str) -> Result<UnitState, DriveError> {
        let state = self.read_state(unit).await?;
        if state.is_not_found() {
            return Err(DriveError::UnitNotFound {
                unit: unit.to_owned(),
            });
        }
        Ok(state)
    }

    /// Watch `units`: the returned [`UnitWatch`] yields each unit's current
    /// state first, then one [`UnitChange`] per observed change (from the
    /// units' `PropertiesChanged` signals), in order per unit. Across units
    /// there is no order: the units are set up concurrently, so the first
    /// states come as each setup finishes, not in the order given. Units that do
    /// not exist (yet) are watched too (`load_state` `not-found`).
    pub async fn watch(&self, units: &[String]) -> Result<UnitWatch, DriveError> {
        let (tx, rx) = mpsc::unbounded_channel();
        // Built first so that an error below aborts the tasks already spawned.
        let mut watch = UnitWatch {
            rx,
            tasks: Vec::with_capacity(units.len() + 1),
        };
        // LoadState is not signalled (systemd marks it constant): re-read
        // every watched unit after each daemon-reload.
        let mut reloading = self
            .inner
            .manager
            .receive_reloading()
            .await
            .map_err(|e| map_zbus(e, self.ctx("AddMatch Reloading", None)))?;
        let (reloaded_tx, reloaded_rx) = tokio::sync::watch::channel(0u64);
        watch.tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while let Some(signal) = reloading.next().await {
                if matches!(signal.args(), Ok(a) if !a.active) {
                    n += 1;
                    tracing::debug!(reloads = n, "daemon-reload finished");
                    if reloaded_tx.send(n).is_err() {
                        break;
                    }
                }
            }
        }));
        // Each unit's setup (LoadUnit, AddMatch, the first read: three or
        // four round trips) runs concurrently with up to
        // [`WATCH_SETUP_AT_ONCE`] others': done one after the other they
        // were 117 ms of a recovery's start for 12 units in the bench (issue
        // 15 item 3). Bounded: the system bus allows a connection 128
        // pending calls. Each unit's watch task starts as soon as its own
        // setup is done: an unread subscription would fill its queue and
        // stall the connection for every other reply.
        let set_up = units.iter().cloned().map(|unit| {
            let sd = self.clone();
            let tx = tx.clone();
            let reloaded = reloaded_rx.clone();
            async move { sd.watch_one(unit, tx, reloaded).await }
        });
        let started: Vec<_> = futures_util::stream::iter(set_up)
            .buffered(WATCH_SETUP_AT_ONCE)
            .collect()
            .await;
        let mut first_error = None;
        for r in started {
            match r {
                Ok(task) => watch.tasks.push(task),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        // On an error, dropping `watch` stops the tasks already started.
        match first_error {
            Some(e) => Err(e),
            None => Ok(watch),
        }
    }

    /// One unit's part of [`Systemd::watch`]: subscribe to its changes,
    /// read and send its state, start its watch task.
    async fn watch_one(
        &self,
        unit: String,
        tx: mpsc::UnboundedSender<UnitChange>,
        reloaded: tokio::sync::watch::Receiver<u64>,
    ) -> Result<JoinHandle<()>, DriveError> {
        let path = self.load_unit(&unit).await?;
        let ctx = self.ctx("AddMatch PropertiesChanged", Some(&unit));
        let props = zbus::fdo::PropertiesProxy::builder(&self.inner.conn)
            .destination(SYSTEMD_DEST)
            .path(path.clone())
            .build()
            .await
            .map_err(|e| map_zbus(e, ctx))?;
        // Subscribe before the first read, so no change falls in between.
        let stream = props
            .receive_properties_changed()
            .await
            .map_err(|e| map_zbus(e, ctx))?;
        let service = is_service(&unit);
        let (state, seqs) = self.read_state_at(&unit, &path, service).await?;
        let _ = tx.send(UnitChange {
            unit: unit.clone(),
            state: state.clone(),
        });
        let span = tracing::debug_span!("watch", unit = %unit);
        let task = WatchTask {
            reader: self.clone_weakly(),
            unit,
            path,
            service,
            tx,
            reloaded,
        };
        Ok(tokio::spawn(task.run(stream, state, seqs).instrument(span)))
    }

    /// A handle for watch tasks: shares the connection but not the job
    /// dispatcher's lifetime (a watch must not keep a dropped `Systemd`'s
    /// dispatcher alive, nor need it).
    fn clone_weakly(&self) -> StateReader {
        StateReader {
            conn: self.inner.conn.clone(),
            address: self.inner.address.clone(),
            user: self.inner.user,
        }
    }

    async fn load_unit(&self, unit: &str) -> Result<OwnedObjectPath, DriveError> {
        self.inner
            .manager
            .load_unit(unit.to_owned())
            .await
            .map_err(|e| map_zbus(e, self.ctx("LoadUnit", Some(unit))))
    }

    /// `LoadUnit` + properties, without turning `not-found` into an error.
    async fn read_state(&self, unit: &str) -> Result<UnitState, DriveError> {
        let path = self.load_unit(unit).await?;
        let (state, _) = self.read_state_at(unit, &path, is_service(unit)).await?;
        Ok(state)
    }

    async fn read_state_at(
        &self,
        unit: &str,
        path: &OwnedObjectPath,
        service: bool,
    ) -> Result<(UnitState, [Sequence; FIELDS]), DriveError> {
        self.clone_weakly().read_state_at(unit, path, service).await
    }

    async fn run_job(
        &self,
        op: JobOp,
        unit: &str,
        mode: JobMode,
    ) -> Result<JobOutcome, DriveError> {
        let span = tracing::info_span!("job", unit = %unit, op = %op, job = tracing::field::Empty);
        self.run_job_inner(op, unit, mode).instrument(span).await
    }

    async fn run_job_inner(
        &self,
        op: JobOp,
        unit: &str,
        mode: JobMode,
    ) -> Result<JobOutcome, DriveError> {
        // When the job was issued: if a failed start did not make the unit
        // leave inactive after that (its `InactiveExitTimestamp`), systemd
        // never tried (start rate limit). No read before the job: those two
        // or three round trips were 20-40 ms on the way to every start and
        // restart on a busy manager (issue 15).
        let issued_usec = match op {
            JobOp::Stop => None,
            _ => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .ok()
                .and_then(|d| u64::try_from(d.as_micros()).ok()),
        };
        let manager = &self.inner.manager;
        let mode = mode.as_str().to_owned();
        let name = unit.to_owned();
        let reply = match op {
            JobOp::Start => manager.start_unit(name, mode).await,
            JobOp::Stop => manager.stop_unit(name, mode).await,
            JobOp::Restart => manager.restart_unit(name, mode).await,
        };
        let job = reply
            .map_err(|e| map_zbus(e, self.ctx(op.method(), Some(unit))))?
            .as_str()
            .to_owned();
        tracing::Span::current().record("job", job.as_str());
        tracing::debug!(unit = %unit, job = %job, "job queued");
        let finished = match self.inner.jobs.lookup(&job) {
            Lookup::Ready(f) => f,
            Lookup::Wait(rx) => rx.await.map_err(|_| connection_lost(&self.inner.address))?,
            Lookup::Closed => return Err(connection_lost(&self.inner.address)),
        };
        let state = self.read_state(unit).await?;
        tracing::info!(
            unit = %unit,
            job = %job,
            job_id = finished.id,
            result = %finished.result,
            active_state = %state.active_state,
            sub_state = %state.sub_state,
            "job finished"
        );
        let failed = match finished.result.as_str() {
            "done" | "skipped" => op != JobOp::Stop && state.is_failed(),
            _ => true,
        };
        if failed {
            let result = if state.is_failed() && finished.result == "done" {
                "failed".to_owned()
            } else {
                finished.result.clone()
            };
            let never_tried = issued_usec.is_some_and(|t| state.inactive_exit_usec < t);
            let mut hint = self.failure_hint(unit, op, &result, never_tried).await;
            if finished.result == "done" {
                hint = format!("the job completed but the unit failed right after; {hint}");
            }
            return Err(DriveError::JobFailed {
                unit: unit.to_owned(),
                op,
                result,
                hint,
            });
        }
        Ok(JobOutcome {
            unit: unit.to_owned(),
            job,
            result: finished.result,
            state,
        })
    }
}

impl Systemd {
    /// The hint for a failed job; for a unit that hit its start rate
    /// limit (`never_tried`: the failed job did not even make it leave
    /// `inactive`/`failed`, or the service says `start-limit-hit`), says how
    /// to clear it.
    async fn failure_hint(&self, unit: &str, op: JobOp, result: &str, never_tried: bool) -> String {
        let user = self.inner.user;
        let hint = job_hint(unit, op, result, user);
        if result != "failed" {
            return hint;
        }
        let reason = if never_tried || !is_service(unit) {
            None
        } else {
            match self.load_unit(unit).await {
                Ok(path) => self
                    .clone_weakly()
                    .get_string(&path, SERVICE_IFACE, "Result", unit)
                    .await
                    .ok(),
                Err(_) => None,
            }
        };
        tracing::debug!(unit = %unit, reason = ?reason, never_tried, "failed job");
        if never_tried || reason.as_deref() == Some("start-limit-hit") {
            let ctl = if user {
                "systemctl --user"
            } else {
                "systemctl"
            };
            format!(
                "systemd did not run it: most likely its start rate limit \
                 (StartLimitBurst=/StartLimitIntervalSec=) was hit; clear that with \
                 `{ctl} reset-failed {unit}`, then start it again; {hint}"
            )
        } else {
            hint
        }
    }
}

/// Reads unit properties on a connection (used by `Systemd` and watch tasks).
struct StateReader {
    conn: Connection,
    address: String,
    user: bool,
}

impl StateReader {
    /// Call `org.freedesktop.DBus.Properties.<method>` on the unit at `path`.
    async fn call<B>(
        &self,
        path: &OwnedObjectPath,
        method: &'static str,
        body: &B,
        unit: &str,
    ) -> Result<zbus::Message, DriveError>
    where
        B: serde::Serialize + zbus::DynamicType,
    {
        self.conn
            .call_method(
                Some(SYSTEMD_DEST),
                path,
                Some(PROPERTIES_IFACE),
                method,
                body,
            )
            .await
            .map_err(|e| {
                map_zbus(
                    e,
                    Ctx {
                        address: &self.address,
                        method,
                        unit: Some(unit),
                        user: self.user,
                    },
                )
            })
    }

    /// `Properties.Get` of a string property.
    async fn get_string(
        &self,
        path: &OwnedObjectPath,
        iface: &str,
        name: &str,
        unit: &str,
    ) -> Result<String, DriveError> {
        let msg = self.call(path, "Get", &(iface, name), unit).await?;
        let value: OwnedVariant = msg
            .body()
            .deserialize()
            .map_err(|e| self.decode_err(unit, name, &e))?;
        String::try_from(value).map_err(|e| self.decode_err(unit, name, &e))
    }

    fn decode_err(&self, unit: &str, what: &str, e: &zbus::Error) -> DriveError {
        DriveError::Bus {
            action: format!("{what} {unit}"),
            detail: e.to_string(),
        }
    }

    /// Read the state of the unit at `path`, with the receive position of
    /// the reply each field came from (to order it against signals).
    async fn read_state_at(
        &self,
        unit: &str,
        path: &OwnedObjectPath,
        service: bool,
    ) -> Result<(UnitState, [Sequence; FIELDS]), DriveError> {
        let all = self.call(path, "GetAll", &(UNIT_IFACE,), unit);
        let (all, pid, restarts, result) = if service {
            let pid = self.call(path, "Get", &(SERVICE_IFACE, "MainPID"), unit);
            let restarts = self.call(path, "Get", &(SERVICE_IFACE, "NRestarts"), unit);
            let result = self.call(path, "Get", &(SERVICE_IFACE, "Result"), unit);
            let (a, p, r, res) = tokio::try_join!(all, pid, restarts, result)?;
            (a, Some(p), Some(r), Some(res))
        } else {
            (all.await?, None, None, None)
        };
        let mut state = UnitState::default();
        let mut seqs = [Sequence::default(); FIELDS];
        let props: HashMap<String, OwnedVariant> = all
            .body()
            .deserialize()
            .map_err(|e| self.decode_err(unit, "GetAll org.freedesktop.systemd1.Unit", &e))?;
        let bad = apply_unit_props(&mut state, &props);
        if !bad.is_empty() {
            return Err(DriveError::Bus {
                action: format!("GetAll org.freedesktop.systemd1.Unit {unit}"),
                detail: format!("missing or mistyped properties: {}", bad.join(", ")),
            });
        }
        for f in [
            Field::LoadState,
            Field::ActiveState,
            Field::SubState,
            Field::ActiveEnter,
            Field::InactiveExit,
        ] {
            seqs[f as usize] = all.recv_position();
        }
        for (msg, field, name) in [
            (pid, Field::MainPid, "MainPID"),
            (restarts, Field::NRestarts, "NRestarts"),
            (result, Field::Result, "Result"),
        ] {
            let Some(msg) = msg else { continue };
            let value: OwnedVariant = msg
                .body()
                .deserialize()
                .map_err(|e| self.decode_err(unit, name, &e))?;
            let value =
                zbus::Variant::try_from(&value).map_err(|e| self.decode_err(unit, name, &e))?;
            if !field.set(&mut state, &value) {
                return Err(DriveError::Bus {
                    action: format!("Get {SERVICE_IFACE} {name} {unit}"),
                    detail: "unexpected value type".to_owned(),
                });
            }
            seqs[field as usize] = msg.recv_position();
        }
        Ok((state, seqs))
    }
}

/// Follows one watched unit: applies its `PropertiesChanged` signals that
/// are newer than what it already knows, and sends each new state.
struct WatchTask {
    reader: StateReader,
    unit: String,
    path: OwnedObjectPath,
    service: bool,
    tx: mpsc::UnboundedSender<UnitChange>,
    /// Bumped after each daemon-reload.
    reloaded: tokio::sync::watch::Receiver<u64>,
}

impl WatchTask {
    async fn run(
        mut self,
        mut stream: zbus::fdo::PropertiesChangedStream,
        mut state: UnitState,
        mut seqs: [Sequence; FIELDS],
    ) {
        let mut last = state.clone();
        let mut reloads_open = true;
        loop {
            let reread = tokio::select! {
                signal = stream.next() => {
                    let Some(signal) = signal else { break };
                    apply_signal(&signal, &mut state, &mut seqs)
                }
                r = self.reloaded.changed(), if reloads_open => {
                    reloads_open = r.is_ok();
                    reloads_open
                }
            };
            if reread {
                match self
                    .reader
                    .read_state_at(&self.unit, &self.path, self.service)
                    .await
                {
                    Ok((s, q)) => (state, seqs) = (s, q),
                    Err(e) => tracing::warn!(error = %e, "re-reading unit state"),
                }
            }
            if state != last {
                tracing::debug!(
                    active_state = %state.active_state,
                    sub_state = %state.sub_state,
                    main_pid = state.main_pid,
                    n_restarts = state.n_restarts,
                    "unit changed"
                );
                last = state.clone();
                let change = UnitChange {
                    unit: self.unit.clone(),
                    state: state.clone(),
                };
                if self.tx.send(change).is_err() {
                    break;
                }
            }
        }
    }
}

/// Apply a `PropertiesChanged` signal to `state`, skipping values older than
/// the reply each field was last read from. Returns whether the unit must be
/// re-read (invalidated or mistyped values, or a unit that was not loaded:
/// its `LoadState` is not signalled).
fn apply_signal(
    signal: &zbus::fdo::PropertiesChanged,
    state: &mut UnitState,
    seqs: &mut [Sequence; FIELDS],
) -> bool {
    let seq = signal.message().recv_position();
    let args = match signal.args() {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(error = %e, "undecodable PropertiesChanged");
            return false;
        }
    };
    let iface = args.interface_name.as_str();
    let mut reread = iface == UNIT_IFACE && state.load_state != "loaded";
    for (name, value) in &args.changed_properties {
        let Some(field) = Field::of(iface, name) else {
            continue;
        };
        let slot = &mut seqs[field as usize];
        if seq > *slot {
            if field.set(state, value) {
                *slot = seq;
            } else {
                reread = true;
            }
        }
    }
    reread
        || args
            .invalidated_properties
            .iter()
            .any(|name| Field::of(iface, name).is_some())
}

fn is_service(unit: &str) -> bool {
    unit.ends_with(".service")
}

/// A change of the systemd manager itself, seen by [`Systemd::watch_manager`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ManagerEvent {
    /// The owner of `org.freedesktop.systemd1` changed: the manager was
    /// re-executed (`daemon-reexec`) or restarted. `Some` is the new owner,
    /// `None` when the name was released. Subscriptions and watches made on
    /// the old owner must be renewed once a new owner appears.
    OwnerChanged(Option<String>),
    /// A unit was unloaded (`UnitRemoved`; systemd sends it to subscribed
    /// clients when an inactive unit nobody references is garbage
    /// collected): e.g. a container's transient `libpod-<id>.scope` right
    /// after the container's last process died.
    UnitRemoved(String),
}

/// A stream of [`ManagerEvent`]s. `next()` is `None` once the connection
/// closed. Dropping it stops watching.
#[derive(Debug)]
pub struct ManagerWatch {
    rx: mpsc::UnboundedReceiver<ManagerEvent>,
    task: JoinHandle<()>,
}

impl ManagerWatch {
    /// The next event; `None` once the connection has closed.
    pub async fn next(&mut self) -> Option<ManagerEvent> {
        self.rx.recv().await
    }
}

impl Drop for ManagerWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Systemd {
    /// Watch the manager's bus name (`NameOwnerChanged` of
    /// `org.freedesktop.systemd1` from the bus daemon): after a
    /// `daemon-reexec` the manager reconnects to the bus under a new unique
    /// name, and a client should subscribe again and re-read unit states.
    /// Also every unit the manager unloads (`UnitRemoved`, sent to this
    /// subscribed connection). Fails on a direct (bus-less) connection to a
    /// manager.
    pub async fn watch_manager(&self) -> Result<ManagerWatch, DriveError> {
        let ctx = self.ctx("AddMatch NameOwnerChanged", None);
        let dbus = zbus::fdo::DBusProxy::new(&self.inner.conn)
            .await
            .map_err(|e| map_zbus(e, ctx))?;
        let mut owners = dbus
            .receive_name_owner_changed_with_args(&[(0, SYSTEMD_DEST)])
            .await
            .map_err(|e| map_zbus(e, ctx))?;
        let mut removed = self
            .inner
            .manager
            .receive_unit_removed()
            .await
            .map_err(|e| map_zbus(e, self.ctx("AddMatch UnitRemoved", None)))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    signal = owners.next() => {
                        let Some(signal) = signal else { break };
                        let Ok(args) = signal.args() else { continue };
                        let owner = args.new_owner().as_ref().map(|n| n.to_string());
                        tracing::info!(new_owner = ?owner, "systemd manager changed its bus name owner");
                        ManagerEvent::OwnerChanged(owner)
                    }
                    signal = removed.next() => {
                        let Some(signal) = signal else { break };
                        let Ok(args) = signal.args() else { continue };
                        ManagerEvent::UnitRemoved(args.id().clone())
                    }
                };
                if tx.send(event).is_err() {
                    break;
                }
            }
        });
        Ok(ManagerWatch { rx, task })
    }

    /// Whether the underlying D-Bus connection is closed.
    pub fn is_closed(&self) -> bool {
        self.inner.conn.is_closed()
    }
}

/// A stream of [`UnitChange`]s for the units given to [`Systemd::watch`].
/// Dropping it stops watching.
#[derive(Debug)]
pub struct UnitWatch {
    rx: mpsc::UnboundedReceiver<UnitChange>,
    tasks: Vec<JoinHandle<()>>,
}

impl UnitWatch {
    /// The next change; `None` once the connection has closed and every
    /// change before that was delivered.
    pub async fn next(&mut self) -> Option<UnitChange> {
        self.rx.recv().await
    }
}

impl Drop for UnitWatch {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            BusTarget::Address("unix:path=/x".into()).address(),
            "unix:path=/x"
        );
        // System and User read the environment; both must yield a unix path.
        assert!(BusTarget::System.address().contains('='));
        assert!(BusTarget::User.address().contains('='));
    }

    #[tokio::test]
    async fn unreachable_bus_names_its_address() {
        let target = BusTarget::Address("unix:path=/nonexistent/mcrecover-test/bus".into());
        let err = Systemd::connect(&target).await.err();
        match err {
            Some(DriveError::BusUnreachable { address, .. }) => {
                assert_eq!(address, "unix:path=/nonexistent/mcrecover-test/bus")
            }
            other => panic!("expected BusUnreachable, got {other:?}"),
        }
    }
}
