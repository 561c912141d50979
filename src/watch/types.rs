//! The daemon's status model, shared by the engine (which produces it), the
//! D-Bus API (which serves it) and `mcrecover status` (which prints it).

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

/// What the daemon thinks of one service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceState {
    /// Not wanted yet: its stage has not been started.
    Pending,
    /// Not started: an earlier `block` stage failed (started once it heals).
    Blocked,
    /// Started (or restarted) and inside its start period, or not yet checked.
    Starting,
    /// Unit active and all checks passing.
    Healthy,
    /// Unit failed/inactive or a check failing; a restart is pending or running.
    Unhealthy,
    /// Failing, but an upstream is failing too: no restart until it is healthy.
    Held,
    /// Too many restarts: no more restarts until `ack` or until healthy again.
    Escalated,
    /// Runs and waits for an operator (a check answered `operator_wait`,
    /// e.g. sealed): never restarted for it; `remedy` says what to do.
    Waiting,
    /// Its container was started by another controller: checked and
    /// reported, never stopped or replaced, until `mcrecover adopt`.
    External,
}

impl ServiceState {
    /// The lowercase name used in JSON, D-Bus and the journal.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceState::Pending => "pending",
            ServiceState::Blocked => "blocked",
            ServiceState::Starting => "starting",
            ServiceState::Healthy => "healthy",
            ServiceState::Unhealthy => "unhealthy",
            ServiceState::Held => "held",
            ServiceState::Escalated => "escalated",
            ServiceState::Waiting => "waiting",
            ServiceState::External => "external",
        }
    }
}

/// Last health result of a service.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HealthStatus {
    /// All checks passing (None: not checked yet).
    pub ok: Option<bool>,
    /// The failing check's reason, or a summary when passing.
    pub reason: String,
    /// Name of the check the reason is about.
    pub check: Option<String>,
    /// Seconds since the result (at snapshot time).
    pub age_s: Option<f64>,
}

/// One service in a [`Snapshot`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceStatus {
    /// Service name.
    pub name: String,
    /// Stage name.
    pub stage: Option<String>,
    /// systemd unit.
    pub unit: Option<String>,
    /// `ActiveState/SubState` as last seen.
    pub unit_state: String,
    /// Last health result.
    pub health: HealthStatus,
    /// Restarts issued within the escalation window.
    pub restarts: u32,
    /// Restarts issued since the daemon first saw the service (persisted).
    pub total_restarts: u64,
    /// The daemon's state.
    pub state: ServiceState,
    /// Upstream this service is held for (state `held`).
    pub held_by: Option<String>,
    /// Seconds until the next restart, if one is scheduled.
    pub next_restart_in_s: Option<f64>,
    /// Why it was escalated (state `escalated`).
    pub escalation: Option<String>,
    /// What the operator must do (state `waiting`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remedy: Option<String>,
    /// What runs instead of its unit's container (state `external`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// The daemon's whole status (`Status()` on D-Bus, `mcrecover status --json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Daemon PID.
    pub pid: u32,
    /// Configuration file in use.
    pub config: String,
    /// `recovering` (a stage is on its way up) or `watching`.
    pub phase: String,
    /// Human progress line (also the sd_notify STATUS=).
    pub status_line: String,
    /// Per service, in plan order.
    pub services: Vec<ServiceStatus>,
    /// The picture of the daemon's last boot recovery (SVG in its state
    /// directory), once that recovery finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<String>,
    /// The recovery drill in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drill: Option<DrillStatus>,
    /// The last drill's result (also `last-drill.json` in the state directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_drill: Option<crate::engine::DrillResult>,
}

/// A recovery drill in progress, as status shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillStatus {
    /// Drill id.
    pub id: String,
    /// `stopping` or `recovering`.
    pub phase: String,
    /// Its services, with those healthy again.
    pub services: Vec<String>,
    /// Those healthy again.
    pub healthy: Vec<String>,
    /// Seconds since it began.
    pub elapsed_s: f64,
}

/// A control request from the D-Bus API to the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiCommand {
    /// Run the recovery engine again (all stages).
    Recover,
    /// Restart one service now (resets its backoff delay, counts as a restart).
    Restart(String),
    /// Re-arm an escalated service.
    Ack(String),
    /// Hand a service whose container another controller started back to
    /// its unit (the unit's container replaces it).
    Adopt(String),
    /// Start a recovery drill of a stage or a service.
    Drill {
        /// `stage` or `service`.
        kind: String,
        /// Its name.
        name: String,
    },
    /// Abort the drill in progress.
    AbortDrill,
    /// Reload the configuration file (validate first; keep the old one on error).
    Reload,
}

/// The engine's answer: a human message, or an error message.
pub type ApiReply = Result<String, String>;

/// Where the API sends commands.
pub type CommandSender = mpsc::Sender<(ApiCommand, oneshot::Sender<ApiReply>)>;
