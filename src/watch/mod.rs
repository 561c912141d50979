//! Step 5 of the flow: the daemon (`mcrecover daemon`). After the boot
//! recovery it watches every managed unit (D-Bus signals) and every check (on
//! its own schedule), restarts what breaks with exponential backoff, holds
//! dependents of a failing upstream, escalates what keeps breaking (diagnosis,
//! `crit` journal entry, hook, webhook, optional quarantine remedy) and serves
//! its status and controls on D-Bus (`net.metacircular.Recovery1`).
//!
//! Layout: [`types`] (the status model shared by the engine, the API and the
//! CLI), `policy` (backoff and escalation arithmetic), `state` (persisted
//! per-service history), `health` (check scheduling), `engine` (the loop),
//! [`escalate`] (one file per action), [`api`] (D-Bus server and client),
//! `notify` (sd_notify).

pub mod api;
pub mod engine;
pub mod escalate;
pub mod health;
pub mod install;
pub mod notify;
pub mod policy;
pub mod state;
pub mod status;
pub mod types;

pub use engine::{run, DaemonOptions, WatchError, RESTART_MESSAGE_ID};
pub use install::{install, InstallError};

pub use types::{ApiCommand, ApiReply, CommandSender, ServiceState, ServiceStatus, Snapshot};
