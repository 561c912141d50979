//! Errors of the systemd driver, with messages an operator can act on, and the
//! mapping from D-Bus errors (zbus) to them.

use std::fmt;

/// A job operation the driver asks systemd for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobOp {
    /// `Manager.StartUnit(unit, "replace")`.
    Start,
    /// `Manager.StopUnit(unit, "replace")`.
    Stop,
    /// `Manager.RestartUnit(unit, "replace")`.
    Restart,
}

impl JobOp {
    /// The verb used in messages ("start", "stop", "restart").
    pub fn verb(self) -> &'static str {
        match self {
            JobOp::Start => "start",
            JobOp::Stop => "stop",
            JobOp::Restart => "restart",
        }
    }

    /// The `org.freedesktop.systemd1.Manager` method that queues this job.
    pub fn method(self) -> &'static str {
        match self {
            JobOp::Start => "StartUnit",
            JobOp::Stop => "StopUnit",
            JobOp::Restart => "RestartUnit",
        }
    }
}

impl fmt::Display for JobOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.verb())
    }
}

/// Everything that can go wrong while driving systemd.
///
/// Every message names the unit or bus address concerned and says what to
/// look at next.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DriveError {
    /// The bus could not be reached, the connection was lost, or no systemd
    /// manager answers on it.
    #[error("cannot reach systemd over D-Bus at {address}: {detail}; {hint}")]
    BusUnreachable {
        /// The D-Bus address that was used.
        address: String,
        /// What failed (from the transport or the bus).
        detail: String,
        /// What to check.
        hint: String,
    },
    /// The bus or systemd (polkit) refused the call.
    #[error(
        "permission denied: {action}: {detail}; run as root for the system manager, or as the \
         owning user against the user bus (`systemctl --user`), or grant it through polkit"
    )]
    PermissionDenied {
        /// The refused action, e.g. `StartUnit mcns.service` or `Reload`.
        action: String,
        /// The bus's own error text.
        detail: String,
    },
    /// No unit file of this name exists (`LoadState=not-found`, or
    /// `org.freedesktop.systemd1.NoSuchUnit`).
    #[error(
        "unit {unit} not found; is its unit file (or quadlet .container) installed where this \
         manager looks, and was `systemctl daemon-reload` run since?"
    )]
    UnitNotFound {
        /// The unit name.
        unit: String,
    },
    /// The unit is masked.
    #[error("unit {unit} is masked; unmask it with `systemctl unmask {unit}` if it should run")]
    UnitMasked {
        /// The unit name.
        unit: String,
    },
    /// The unit file exists but systemd could not load it (`LoadState=error`
    /// or `bad-setting`).
    #[error(
        "unit {unit} could not be loaded: {detail}; check it with `systemd-analyze verify` and \
         `{journal}`, fix it, then daemon-reload"
    )]
    UnitBroken {
        /// The unit name.
        unit: String,
        /// systemd's explanation.
        detail: String,
        /// The journalctl command that shows the unit's log.
        journal: String,
    },
    /// The job finished with a result other than `done`/`skipped`, or the
    /// job was `done` but the unit is `failed` right after.
    #[error("unit {unit} failed to {op} (result: {result}); {hint}")]
    JobFailed {
        /// The unit name.
        unit: String,
        /// The operation whose job failed.
        op: JobOp,
        /// The job result: `failed`, `timeout`, `dependency`, `canceled`,
        /// `invalid`, ... (or `failed` for a unit that failed after `done`).
        result: String,
        /// What to look at next (journalctl command, dependency listing, ...).
        hint: String,
    },
    /// The unit name is not valid for systemd.
    #[error("invalid unit name {unit:?}: {detail}")]
    InvalidUnitName {
        /// The name as given.
        unit: String,
        /// systemd's explanation.
        detail: String,
    },
    /// systemd refused the request for a reason of its own (for example
    /// `RefuseManualStart=yes`, a destructive transaction, shutdown in
    /// progress).
    #[error("systemd refused {action}: {detail} ({name})")]
    Refused {
        /// The refused action, e.g. `StartUnit mcns.service`.
        action: String,
        /// The D-Bus error name, e.g. `org.freedesktop.systemd1.OnlyByDependency`.
        name: String,
        /// systemd's explanation.
        detail: String,
    },
    /// Any other D-Bus failure (unexpected reply types and the like).
    #[error("D-Bus call {action} failed: {detail}")]
    Bus {
        /// The action, e.g. `GetAll org.freedesktop.systemd1.Unit mcns.service`.
        action: String,
        /// The zbus error text.
        detail: String,
    },
}

/// Where a D-Bus error happened: used to turn it into a [`DriveError`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ctx<'a> {
    /// The bus address (for `BusUnreachable`).
    pub(crate) address: &'a str,
    /// The D-Bus method, e.g. `StartUnit`.
    pub(crate) method: &'a str,
    /// The unit concerned, if any.
    pub(crate) unit: Option<&'a str>,
    /// Whether this is the user manager (changes the journalctl hint).
    pub(crate) user: bool,
}

impl Ctx<'_> {
    fn action(&self) -> String {
        match self.unit {
            Some(unit) => format!("{} {unit}", self.method),
            None => self.method.to_owned(),
        }
    }

    fn unit_name(&self) -> String {
        self.unit.unwrap_or("").to_owned()
    }
}

/// The journalctl command that shows `unit`'s log.
pub(crate) fn journal_cmd(unit: &str, user: bool) -> String {
    if user {
        format!("journalctl --user -u {unit}")
    } else {
        format!("journalctl -u {unit}")
    }
}

/// The hint for a failed job of `op` on `unit` with `result`.
pub(crate) fn job_hint(unit: &str, op: JobOp, result: &str, user: bool) -> String {
    let journal = journal_cmd(unit, user);
    let ctl = if user {
        "systemctl --user"
    } else {
        "systemctl"
    };
    match result {
        "timeout" => {
            format!("the {op} job timed out (TimeoutStartSec=/TimeoutStopSec=); see `{journal}`")
        }
        "dependency" => format!(
            "a unit it requires failed; see `{ctl} list-dependencies {unit}` and `{ctl} --failed`"
        ),
        "canceled" => format!(
            "the job was canceled by a conflicting job or request; see `{ctl} list-jobs` and \
             `{journal}`"
        ),
        "invalid" | "unsupported" => {
            format!("systemd cannot {op} this kind of unit; see `{ctl} status {unit}`")
        }
        "assert" => format!("an Assert*= condition failed; see `{ctl} status {unit}`"),
        _ => format!("see `{journal}`"),
    }
}

const HINT_BUS: &str = "is the service manager (and dbus) running there, and may this user open \
                        that socket? For the user bus, is `user@UID.service` running (lingering)?";

/// Turn a zbus error into a [`DriveError`], given where it happened.
pub(crate) fn map_zbus(err: zbus::Error, ctx: Ctx<'_>) -> DriveError {
    match err {
        zbus::Error::FDO(fdo) => map_fdo(*fdo, ctx),
        zbus::Error::MethodError(name, detail, _) => {
            map_method_error(name.as_str(), detail.unwrap_or_default(), ctx)
        }
        zbus::Error::InputOutput(io) => unreachable_err(ctx, io.to_string()),
        zbus::Error::Connection(io, _) => unreachable_err(ctx, io.to_string()),
        e @ (zbus::Error::Handshake(_) | zbus::Error::Address(_)) => {
            unreachable_err(ctx, e.to_string())
        }
        other => DriveError::Bus {
            action: ctx.action(),
            detail: other.to_string(),
        },
    }
}

/// Map an `fdo::Error` (the `org.freedesktop.DBus.Error.*` names).
pub(crate) fn map_fdo(err: zbus::fdo::Error, ctx: Ctx<'_>) -> DriveError {
    use zbus::fdo::Error as F;
    match err {
        F::AccessDenied(d) | F::InteractiveAuthorizationRequired(d) | F::AuthFailed(d) => {
            DriveError::PermissionDenied {
                action: ctx.action(),
                detail: d,
            }
        }
        F::ServiceUnknown(d) | F::NameHasNoOwner(d) => unreachable_err(
            ctx,
            format!("no systemd manager (org.freedesktop.systemd1) on this bus: {d}"),
        ),
        F::SpawnChildExited(d) | F::SpawnFailed(d) | F::SpawnExecFailed(d) => unreachable_err(
            ctx,
            format!("no systemd manager (org.freedesktop.systemd1) on this bus: {d}"),
        ),
        F::NoReply(d) | F::Disconnected(d) | F::Timeout(d) | F::TimedOut(d) | F::IOError(d) => {
            unreachable_err(ctx, d)
        }
        F::InvalidArgs(d) if ctx.unit.is_some() => DriveError::InvalidUnitName {
            unit: ctx.unit_name(),
            detail: d,
        },
        F::ZBus(z) => map_zbus(z, ctx),
        other => DriveError::Bus {
            action: ctx.action(),
            detail: other.to_string(),
        },
    }
}

/// Map a method error by name (`org.freedesktop.systemd1.*` and others not
/// known to zbus's `fdo::Error`).
pub(crate) fn map_method_error(name: &str, detail: String, ctx: Ctx<'_>) -> DriveError {
    match name {
        "org.freedesktop.systemd1.NoSuchUnit" => DriveError::UnitNotFound {
            unit: ctx.unit_name(),
        },
        "org.freedesktop.systemd1.UnitMasked" => DriveError::UnitMasked {
            unit: ctx.unit_name(),
        },
        "org.freedesktop.systemd1.LoadFailed" | "org.freedesktop.systemd1.BadUnitSetting" => {
            let unit = ctx.unit_name();
            DriveError::UnitBroken {
                journal: journal_cmd(&unit, ctx.user),
                unit,
                detail,
            }
        }
        "org.freedesktop.DBus.Error.AccessDenied"
        | "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired" => {
            DriveError::PermissionDenied {
                action: ctx.action(),
                detail,
            }
        }
        _ => DriveError::Refused {
            action: ctx.action(),
            name: name.to_owned(),
            detail,
        },
    }
}

fn unreachable_err(ctx: Ctx<'_>, detail: String) -> DriveError {
    DriveError::BusUnreachable {
        address: ctx.address.to_owned(),
        detail,
        hint: HINT_BUS.to_owned(),
    }
}

/// The error for a connection that closed under a running operation.
pub(crate) fn connection_lost(address: &str) -> DriveError {
    DriveError::BusUnreachable {
        address: address.to_owned(),
        detail: "the connection closed while waiting for a job".to_owned(),
        hint: HINT_BUS.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(unit: Option<&str>) -> Ctx<'_> {
        Ctx {
            address: "unix:path=/run/dbus/system_bus_socket",
            method: "StartUnit",
            unit,
            user: false,
        }
    }

    #[test]
    fn access_denied_is_permission_denied() {
        let e = map_zbus(
            zbus::Error::FDO(Box::new(zbus::fdo::Error::AccessDenied("nope".into()))),
            ctx(Some("mcns.service")),
        );
        assert_eq!(
            e,
            DriveError::PermissionDenied {
                action: "StartUnit mcns.service".into(),
                detail: "nope".into()
            }
        );
        let e = map_zbus(
            zbus::Error::FDO(Box::new(
                zbus::fdo::Error::InteractiveAuthorizationRequired("auth".into()),
            )),
            ctx(Some("mcns.service")),
        );
        assert!(matches!(e, DriveError::PermissionDenied { .. }), "{e:?}");
    }

    #[test]
    fn systemd_error_names_map() {
        let e = map_method_error(
            "org.freedesktop.systemd1.NoSuchUnit",
            "Unit x.service not found.".into(),
            ctx(Some("x.service")),
        );
        assert_eq!(
            e,
            DriveError::UnitNotFound {
                unit: "x.service".into()
            }
        );
        assert!(e.to_string().contains("daemon-reload"));
        let e = map_method_error(
            "org.freedesktop.systemd1.UnitMasked",
            String::new(),
            ctx(Some("x.service")),
        );
        assert!(e.to_string().contains("systemctl unmask x.service"));
        let e = map_method_error(
            "org.freedesktop.systemd1.LoadFailed",
            "bad".into(),
            ctx(Some("x.service")),
        );
        assert!(e.to_string().contains("journalctl -u x.service"), "{e}");
        let e = map_method_error(
            "org.freedesktop.systemd1.OnlyByDependency",
            "Operation refused".into(),
            ctx(Some("x.service")),
        );
        assert!(matches!(e, DriveError::Refused { .. }));
        assert!(e.to_string().contains("OnlyByDependency"));
    }

    #[test]
    fn transport_errors_name_the_address() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = map_zbus(zbus::Error::InputOutput(io.into()), ctx(None));
        assert!(matches!(e, DriveError::BusUnreachable { .. }));
        assert!(
            e.to_string()
                .contains("unix:path=/run/dbus/system_bus_socket"),
            "{e}"
        );
        let e = map_zbus(
            zbus::Error::FDO(Box::new(zbus::fdo::Error::ServiceUnknown("gone".into()))),
            ctx(None),
        );
        assert!(matches!(e, DriveError::BusUnreachable { .. }));
    }

    #[test]
    fn job_failed_message_is_actionable() {
        let e = DriveError::JobFailed {
            unit: "mcns.service".into(),
            op: JobOp::Start,
            result: "failed".into(),
            hint: job_hint("mcns.service", JobOp::Start, "failed", false),
        };
        assert_eq!(
            e.to_string(),
            "unit mcns.service failed to start (result: failed); see `journalctl -u mcns.service`"
        );
        assert!(job_hint("a.service", JobOp::Start, "failed", true).contains("--user"));
        assert!(job_hint("a.service", JobOp::Start, "dependency", false).contains("--failed"));
    }
}

/// The job mode passed to `StartUnit` (see systemd's `org.freedesktop.systemd1(5)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobMode {
    /// `replace`: the normal mode; dependencies are pulled in and ordered.
    Replace,
    /// `ignore-dependencies`: start the unit alone, ignoring its requirement
    /// and ordering dependencies (used after a failed `continue` stage).
    IgnoreDependencies,
}

impl JobMode {
    /// The mode string systemd expects.
    pub fn as_str(self) -> &'static str {
        match self {
            JobMode::Replace => "replace",
            JobMode::IgnoreDependencies => "ignore-dependencies",
        }
    }
}
