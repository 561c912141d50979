//! The daemon's D-Bus API, `net.metacircular.Recovery1` (docs/daemon.md):
//! the server side the daemon runs, and the client side `mcrecover status`,
//! `ack`, `restart`, `reload` use. Mutating methods are refused unless the
//! caller is root or the platform user (also enforced by the bus policy in
//! `units/dbus/`).
//!
//! Server: one object at [`OBJECT_PATH`] with `Status()`, `GetService(s)`,
//! `Recover()`, `Restart(s)`, `Ack(s)`, `Adopt(s)`, `Drill(ss)`, `AbortDrill()`,
//! `Reload()`, the properties `Phase` and
//! `StatusLine`, and the signal `ServiceStateChanged(s, s, s, s)`, emitted by
//! a task that watches the engine's snapshots. The caller of a mutating
//! method is identified by the bus (`GetConnectionCredentials` of the
//! message's sender), never by anything the caller says.

use std::collections::HashMap;

use tokio::sync::{oneshot, watch};
use zbus::message::Header;
use zbus::names::BusName;
use zbus::object_server::SignalEmitter;
use zbus::Connection;

use super::types::{ApiCommand, CommandSender, Snapshot};

/// Well-known bus name.
pub const BUS_NAME: &str = "net.metacircular.Recovery1";
/// Object path.
pub const OBJECT_PATH: &str = "/net/metacircular/Recovery1";
/// Interface name.
pub const INTERFACE: &str = "net.metacircular.Recovery1";
/// D-Bus name of the error returned to callers that may not use a mutating method.
pub const ACCESS_DENIED: &str = "net.metacircular.Recovery1.Error.AccessDenied";
/// Prefix of every error name the API returns.
const ERROR_PREFIX: &str = "net.metacircular.Recovery1.Error.";

/// Which bus the API is served on / looked up on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiBus {
    /// The system bus (default).
    System,
    /// The caller's session bus.
    Session,
    /// An explicit address.
    Address(String),
    /// Not served.
    None,
}

impl ApiBus {
    /// Parses `system`, `session`, `none`, or a D-Bus address.
    pub fn parse(s: &str) -> ApiBus {
        match s {
            "system" => ApiBus::System,
            "session" => ApiBus::Session,
            "none" => ApiBus::None,
            other => ApiBus::Address(other.to_owned()),
        }
    }
}

/// Who may call the mutating methods besides root.
#[derive(Debug, Clone, Copy, Default)]
pub struct Authz {
    /// The platform user's uid.
    pub uid: Option<u32>,
    /// The platform user's group.
    pub gid: Option<u32>,
}

impl Authz {
    /// Whether a caller with `uid` and supplementary/primary `groups` may mutate.
    pub fn allows(&self, uid: u32, groups: &[u32]) -> bool {
        uid == 0 || Some(uid) == self.uid || self.gid.is_some_and(|g| groups.contains(&g))
    }
}

/// Errors of the API, server or client side.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Nobody owns the bus name.
    #[error("the mcrecover daemon is not running (nobody owns {BUS_NAME} on the bus)")]
    NotRunning,
    /// The daemon refused the caller.
    #[error("access denied: {0}")]
    AccessDenied(String),
    /// The daemon refused the request (unknown service, ...).
    #[error("{0}")]
    Refused(String),
    /// The bus itself failed.
    #[error("D-Bus: {0}")]
    Bus(String),
    /// The daemon could not own the API name: another process has it, or
    /// the bus policy does not allow this uid to own it. The daemon stops
    /// then (a second daemon must not drive the platform, and a squatter
    /// must not stand in for the API unnoticed).
    #[error("{0}")]
    NameUnavailable(String),
}

/// The errors the server returns on the bus (`net.metacircular.Recovery1.Error.*`).
#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "net.metacircular.Recovery1.Error")]
enum ServerError {
    /// A bus-level failure.
    #[zbus(error)]
    ZBus(zbus::Error),
    /// The caller may not use this method.
    AccessDenied(String),
    /// The engine refused the request.
    Refused(String),
    /// No such service.
    UnknownService(String),
    /// The engine could not be reached.
    Failed(String),
}

/// The served object.
struct Recovery {
    snapshot: watch::Receiver<Snapshot>,
    commands: CommandSender,
    authz: Authz,
}

#[zbus::interface(name = "net.metacircular.Recovery1")]
impl Recovery {
    /// The whole status as JSON (a `Snapshot`).
    async fn status(&self) -> Result<String, ServerError> {
        let snap = self.snapshot.borrow().clone();
        serde_json::to_string(&snap).map_err(|e| ServerError::Failed(e.to_string()))
    }

    /// One service's status as JSON (a `ServiceStatus`).
    async fn get_service(&self, name: &str) -> Result<String, ServerError> {
        let svc = self
            .snapshot
            .borrow()
            .services
            .iter()
            .find(|s| s.name == name)
            .cloned();
        let svc = svc.ok_or_else(|| ServerError::UnknownService(format!("no service `{name}`")))?;
        serde_json::to_string(&svc).map_err(|e| ServerError::Failed(e.to_string()))
    }

    /// Runs the recovery engine again.
    async fn recover(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, ServerError> {
        self.authorize(&hdr, conn, "Recover").await?;
        self.forward(ApiCommand::Recover).await
    }

    /// Restarts one service now.
    async fn restart(
        &self,
        service: String,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, ServerError> {
        self.authorize(&hdr, conn, "Restart").await?;
        self.forward(ApiCommand::Restart(service)).await
    }

    /// Re-arms an escalated service.
    async fn ack(
        &self,
        service: String,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, ServerError> {
        self.authorize(&hdr, conn, "Ack").await?;
        self.forward(ApiCommand::Ack(service)).await
    }

    /// Starts a recovery drill of a stage (`kind` = "stage") or a service
    /// (`kind` = "service"): refused unless everything in scope is healthy;
    /// answers with the drill's id at once (its progress and result are in
    /// `Status()`).
    async fn drill(
        &self,
        kind: String,
        name: String,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, ServerError> {
        self.authorize(&hdr, conn, "Drill").await?;
        self.forward(ApiCommand::Drill { kind, name }).await
    }

    /// Aborts the drill in progress (what it stopped is recovered at once).
    async fn abort_drill(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, ServerError> {
        self.authorize(&hdr, conn, "AbortDrill").await?;
        self.forward(ApiCommand::AbortDrill).await
    }

    /// Hands a service whose container another controller started back to
    /// its unit (the unit is restarted and replaces that container).
    async fn adopt(
        &self,
        service: String,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, ServerError> {
        self.authorize(&hdr, conn, "Adopt").await?;
        self.forward(ApiCommand::Adopt(service)).await
    }

    /// Reloads the configuration.
    async fn reload(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, ServerError> {
        self.authorize(&hdr, conn, "Reload").await?;
        self.forward(ApiCommand::Reload).await
    }

    /// `recovering` or `watching`.
    #[zbus(property)]
    async fn phase(&self) -> String {
        self.snapshot.borrow().phase.clone()
    }

    /// The human progress line.
    #[zbus(property)]
    async fn status_line(&self) -> String {
        self.snapshot.borrow().status_line.clone()
    }

    /// A service's daemon state changed (`old`/`new` are state names).
    #[zbus(signal)]
    async fn service_state_changed(
        emitter: &SignalEmitter<'_>,
        service: &str,
        old: &str,
        new: &str,
        reason: &str,
    ) -> zbus::Result<()>;
}

impl Recovery {
    /// Refuses the call unless the sender is root, the platform uid, or in its group.
    async fn authorize(
        &self,
        hdr: &Header<'_>,
        conn: &Connection,
        method: &str,
    ) -> Result<(), ServerError> {
        let sender = hdr
            .sender()
            .ok_or_else(|| ServerError::AccessDenied("the call has no sender".into()))?;
        let dbus = zbus::fdo::DBusProxy::new(conn)
            .await
            .map_err(|e| ServerError::Failed(format!("cannot ask the bus who is calling: {e}")))?;
        let creds = dbus
            .get_connection_credentials(BusName::Unique(sender.clone()))
            .await
            .map_err(|e| ServerError::Failed(format!("cannot ask the bus who is calling: {e}")))?;
        let uid = match creds.unix_user_id() {
            Some(uid) => uid,
            None => dbus
                .get_connection_unix_user(BusName::Unique(sender.clone()))
                .await
                .map_err(|e| ServerError::AccessDenied(format!("caller uid unknown: {e}")))?,
        };
        let groups: Vec<u32> = match creds.unix_group_ids() {
            Some(g) => g.clone(),
            None => groups_of(uid),
        };
        if self.authz.allows(uid, &groups) {
            tracing::info!(caller = %sender, uid, method, "API call allowed");
            return Ok(());
        }
        tracing::warn!(caller = %sender, uid, method, "API call refused");
        let who = match (self.authz.uid, self.authz.gid) {
            (Some(u), Some(g)) => format!("root, uid {u} and group {g}"),
            (Some(u), None) => format!("root and uid {u}"),
            (None, Some(g)) => format!("root and group {g}"),
            (None, None) => "root".to_owned(),
        };
        Err(ServerError::AccessDenied(format!(
            "uid {uid} may not call {method}: only {who} may"
        )))
    }

    /// Sends `cmd` to the engine and waits for its answer.
    async fn forward(&self, cmd: ApiCommand) -> Result<String, ServerError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send((cmd, tx))
            .await
            .map_err(|_| ServerError::Failed("the engine is not running".into()))?;
        match rx.await {
            Ok(Ok(msg)) => Ok(msg),
            Ok(Err(why)) => Err(ServerError::Refused(why)),
            Err(_) => Err(ServerError::Failed("the engine dropped the request".into())),
        }
    }
}

/// The primary and supplementary groups of `uid` from the user database
/// (used only when the bus does not report `UnixGroupIDs`).
fn groups_of(uid: u32) -> Vec<u32> {
    let Ok(Some(user)) = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) else {
        return Vec::new();
    };
    let Ok(name) = std::ffi::CString::new(user.name.clone()) else {
        return vec![user.gid.as_raw()];
    };
    match nix::unistd::getgrouplist(&name, user.gid) {
        Ok(groups) => groups.into_iter().map(|g| g.as_raw()).collect(),
        Err(_) => vec![user.gid.as_raw()],
    }
}

/// Aborts the signal task when the server goes away.
#[derive(Debug)]
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A running API server; dropping it releases the name.
#[derive(Debug)]
pub struct ApiServer {
    _task: Option<AbortOnDrop>,
    _conn: Option<zbus::Connection>,
}

fn builder(bus: &ApiBus) -> Option<zbus::connection::Builder<'static>> {
    match bus {
        ApiBus::System => Some(zbus::connection::Builder::system()),
        ApiBus::Session => Some(zbus::connection::Builder::session()),
        ApiBus::Address(a) => Some(zbus::connection::Builder::address(a.as_str())),
        ApiBus::None => None,
    }
}

/// Serves the API on `bus` until the returned server is dropped.
pub async fn serve(
    bus: &ApiBus,
    snapshot: watch::Receiver<Snapshot>,
    commands: CommandSender,
    authz: Authz,
) -> Result<ApiServer, ApiError> {
    let Some(b) = builder(bus) else {
        return Ok(ApiServer {
            _task: None,
            _conn: None,
        });
    };
    let iface = Recovery {
        snapshot: snapshot.clone(),
        commands,
        authz,
    };
    let conn =
        b.serve_at(OBJECT_PATH, iface).build().await.map_err(|e| {
            ApiError::Bus(format!("cannot serve {BUS_NAME} on the {bus:?} bus: {e}"))
        })?;
    own_name(&conn, bus).await?;
    let iface_ref = conn
        .object_server()
        .interface::<_, Recovery>(OBJECT_PATH)
        .await
        .map_err(|e| ApiError::Bus(e.to_string()))?;
    let task = tokio::spawn(emit_changes(snapshot, iface_ref));
    tracing::info!(bus = ?bus, name = BUS_NAME, "D-Bus API served");
    Ok(ApiServer {
        _task: Some(AbortOnDrop(task.abort_handle())),
        _conn: Some(conn),
    })
}

/// Owns [`BUS_NAME`] for good: no queueing, and no replacement by a later
/// request (zbus's default would allow it). Fails with who has the name, or
/// with the policy's refusal and what to install.
async fn own_name(conn: &zbus::Connection, bus: &ApiBus) -> Result<(), ApiError> {
    use zbus::fdo::{RequestNameFlags, RequestNameReply};
    let uid = nix::unistd::geteuid();
    let reply = conn
        .request_name_with_flags(BUS_NAME, RequestNameFlags::DO_NOT_QUEUE)
        .await;
    match reply {
        Ok(RequestNameReply::PrimaryOwner | RequestNameReply::AlreadyOwner) => Ok(()),
        Ok(RequestNameReply::Exists | RequestNameReply::InQueue) | Err(zbus::Error::NameTaken) => {
            Err(ApiError::NameUnavailable(format!(
                "cannot own {BUS_NAME} on the {bus:?} bus: {} has it. Another mcrecover daemon \
                 runs (only one may drive the platform), or a process squats the name: stop it, \
                 then restart this daemon",
                owner(conn).await
            )))
        }
        Err(zbus::Error::MethodError(name, detail, _))
            if name.as_str() == "org.freedesktop.DBus.Error.AccessDenied" =>
        {
            Err(ApiError::NameUnavailable(format!(
                "the bus policy does not let uid {uid} own {BUS_NAME} on the {bus:?} bus ({}): \
                 install units/dbus/net.metacircular.Recovery1.conf (root) or, for a rootless \
                 daemon, units/dbus/net.metacircular.Recovery1-rootless.conf (its user) into \
                 /etc/dbus-1/system.d/ and reload dbus",
                detail.unwrap_or_default()
            )))
        }
        Err(e) => Err(ApiError::Bus(format!(
            "cannot own {BUS_NAME} on the {bus:?} bus: {e}"
        ))),
    }
}

/// Who owns [`BUS_NAME`]: its unique name, uid and pid, as far as the bus
/// tells.
async fn owner(conn: &zbus::Connection) -> String {
    let Ok(dbus) = zbus::fdo::DBusProxy::new(conn).await else {
        return "another connection".to_owned();
    };
    let Ok(name) = zbus::names::BusName::try_from(BUS_NAME) else {
        return "another connection".to_owned();
    };
    let Ok(unique) = dbus.get_name_owner(name).await else {
        return "another connection".to_owned();
    };
    let who = zbus::names::BusName::from(unique.clone().into_inner());
    let uid = dbus.get_connection_unix_user(who.clone()).await.ok();
    let pid = dbus.get_connection_unix_process_id(who).await.ok();
    let mut text = format!("connection {}", unique.as_str());
    if let Some(uid) = uid {
        text.push_str(&format!(" (uid {uid}"));
        if let Some(pid) = pid {
            text.push_str(&format!(", pid {pid}"));
        }
        text.push(')');
    }
    text
}

/// Why a service is in its state, in one line (signal `reason`).
fn reason_of(s: &super::types::ServiceStatus) -> String {
    if let Some(e) = &s.escalation {
        if s.state == super::types::ServiceState::Escalated {
            return e.clone();
        }
    }
    if let Some(up) = &s.held_by {
        if s.state == super::types::ServiceState::Held {
            return format!("held for {up}");
        }
    }
    s.health.reason.clone()
}

/// Emits `ServiceStateChanged` for every state change between snapshots, and
/// `PropertiesChanged` for `Phase`/`StatusLine`.
async fn emit_changes(
    mut snapshot: watch::Receiver<Snapshot>,
    iface: zbus::object_server::InterfaceRef<Recovery>,
) {
    let (mut states, mut phase, mut line) = {
        let s = snapshot.borrow_and_update();
        let states: HashMap<String, super::types::ServiceState> = s
            .services
            .iter()
            .map(|x| (x.name.clone(), x.state))
            .collect();
        (states, s.phase.clone(), s.status_line.clone())
    };
    while snapshot.changed().await.is_ok() {
        let snap = snapshot.borrow_and_update().clone();
        let emitter = iface.signal_emitter();
        for s in &snap.services {
            let old = states.insert(s.name.clone(), s.state);
            if let Some(old) = old.filter(|o| *o != s.state) {
                let reason = reason_of(s);
                if let Err(e) = Recovery::service_state_changed(
                    emitter,
                    &s.name,
                    old.as_str(),
                    s.state.as_str(),
                    &reason,
                )
                .await
                {
                    tracing::warn!(service = %s.name, "cannot emit ServiceStateChanged: {e}");
                }
            }
        }
        if snap.phase != phase || snap.status_line != line {
            let r = iface.get().await;
            if snap.phase != phase {
                let _ = r.phase_changed(emitter).await;
            }
            if snap.status_line != line {
                let _ = r.status_line_changed(emitter).await;
            }
            phase = snap.phase;
            line = snap.status_line;
        }
    }
}

/// Maps a client-side zbus error.
fn client_error(e: zbus::Error) -> ApiError {
    match e {
        zbus::Error::MethodError(name, detail, _) => {
            let detail = detail.unwrap_or_default();
            match name.as_str() {
                "org.freedesktop.DBus.Error.ServiceUnknown"
                | "org.freedesktop.DBus.Error.NameHasNoOwner" => ApiError::NotRunning,
                ACCESS_DENIED | "org.freedesktop.DBus.Error.AccessDenied" => {
                    ApiError::AccessDenied(detail)
                }
                n if n.starts_with(ERROR_PREFIX) => ApiError::Refused(detail),
                n => ApiError::Bus(format!("{n}: {detail}")),
            }
        }
        zbus::Error::FDO(fdo) => match *fdo {
            zbus::fdo::Error::ServiceUnknown(_) | zbus::fdo::Error::NameHasNoOwner(_) => {
                ApiError::NotRunning
            }
            zbus::fdo::Error::AccessDenied(d) => ApiError::AccessDenied(d),
            other => ApiError::Bus(other.to_string()),
        },
        other => ApiError::Bus(other.to_string()),
    }
}

async fn connect(bus: &ApiBus) -> Result<Connection, ApiError> {
    let b = builder(bus).ok_or_else(|| ApiError::Bus("no bus selected (--api-bus none)".into()))?;
    b.build()
        .await
        .map_err(|e| ApiError::Bus(format!("cannot connect to the {bus:?} bus: {e}")))
}

async fn call_string<B>(conn: &Connection, method: &str, body: &B) -> Result<String, ApiError>
where
    B: serde::Serialize + zbus::zvariant::DynamicType,
{
    let reply = conn
        .call_method(Some(BUS_NAME), OBJECT_PATH, Some(INTERFACE), method, body)
        .await
        .map_err(client_error)?;
    reply
        .body()
        .deserialize::<String>()
        .map_err(|e| ApiError::Bus(format!("{method}: unexpected reply: {e}")))
}

/// `Status()` of the running daemon.
pub async fn fetch_status(bus: &ApiBus) -> Result<Snapshot, ApiError> {
    let conn = connect(bus).await?;
    let json = call_string(&conn, "Status", &()).await?;
    serde_json::from_str(&json).map_err(|e| ApiError::Bus(format!("Status: bad JSON: {e}")))
}

/// Calls the method for `cmd` on the running daemon; its message on success.
pub async fn call(bus: &ApiBus, cmd: &ApiCommand) -> Result<String, ApiError> {
    let conn = connect(bus).await?;
    match cmd {
        ApiCommand::Recover => call_string(&conn, "Recover", &()).await,
        ApiCommand::Reload => call_string(&conn, "Reload", &()).await,
        ApiCommand::Restart(s) => call_string(&conn, "Restart", &(s.as_str(),)).await,
        ApiCommand::Ack(s) => call_string(&conn, "Ack", &(s.as_str(),)).await,
        ApiCommand::Adopt(s) => call_string(&conn, "Adopt", &(s.as_str(),)).await,
        ApiCommand::Drill { kind, name } => {
            call_string(&conn, "Drill", &(kind.as_str(), name.as_str())).await
        }
        ApiCommand::AbortDrill => call_string(&conn, "AbortDrill", &()).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authz_allows_root_platform_uid_and_group() {
        let a = Authz {
            uid: Some(850),
            gid: Some(850),
        };
        assert!(a.allows(0, &[]));
        assert!(a.allows(850, &[]));
        assert!(a.allows(1000, &[100, 850]));
        assert!(!a.allows(65534, &[65534]));
        assert!(!Authz::default().allows(850, &[850]));
    }

    #[test]
    fn api_bus_parses() {
        assert_eq!(ApiBus::parse("system"), ApiBus::System);
        assert_eq!(ApiBus::parse("none"), ApiBus::None);
        assert_eq!(
            ApiBus::parse("unix:path=/x"),
            ApiBus::Address("unix:path=/x".into())
        );
    }
}
