//! Step 5 of the flow: the daemon shell (`mcrecover daemon`). It runs the
//! reconciliation engine ([`crate::engine`], carried out by
//! [`crate::runner`]) with the daemon goal: ramp the platform up stage by
//! stage at boot, then keep it healthy (restart with backoff, hold
//! dependents of a failing upstream, escalate what keeps breaking), and adds
//! what a long-running service needs: persisted history, the D-Bus API
//! (`net.metacircular.Recovery1`), sd_notify, reload, and the escalation
//! actions.
//!
//! Layout: [`daemon`] (the loop and the shell), [`types`] (the status model
//! shared by the daemon, the API and the CLI), [`state`] (the state file),
//! [`escalate`] (one file per action), [`api`] (D-Bus server and client),
//! [`notify`] (sd_notify), [`status`] (`mcrecover status`), [`install`].

pub mod api;
pub mod daemon;
pub mod escalate;
pub mod install;
pub mod notify;
pub mod state;
pub mod status;
pub mod types;

pub use crate::runner::RESTART_MESSAGE_ID;
pub use daemon::{run, DaemonOptions, WatchError};
pub use install::{install, InstallError};

pub use types::{ApiCommand, ApiReply, CommandSender, ServiceState, ServiceStatus, Snapshot};
