//! sd_notify for the daemon (`Type=notify`): `READY=1` once it is watching,
//! `STATUS=` with live progress, `WATCHDOG=1` at half of `WATCHDOG_USEC`,
//! `STOPPING=1` on exit. Every call is a no-op when `NOTIFY_SOCKET` is unset;
//! a failed send is logged once at debug level and otherwise ignored.

use std::time::Duration;

use sd_notify::NotifyState;

/// Sends notifications, remembering the last status to avoid repeats.
#[derive(Debug, Default)]
pub struct Notifier {
    last_status: String,
}

impl Notifier {
    /// A notifier.
    pub fn new() -> Notifier {
        Notifier::default()
    }

    fn send(states: &[NotifyState<'_>]) {
        if let Err(e) = sd_notify::notify(states) {
            tracing::debug!(error = %e, "sd_notify failed");
        }
    }

    /// `READY=1` plus the current status.
    pub fn ready(&mut self, status: &str) {
        self.last_status = status.to_owned();
        Self::send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// `STATUS=<status>` when it differs from the last one sent.
    pub fn status(&mut self, status: &str) {
        if self.last_status != status {
            status.clone_into(&mut self.last_status);
            Self::send(&[NotifyState::Status(status)]);
        }
    }

    /// `WATCHDOG=1`.
    pub fn watchdog(&self) {
        Self::send(&[NotifyState::Watchdog]);
    }

    /// `RELOADING=1`-free reload notice: only a status line (a `Type=notify`
    /// service without `Type=notify-reload` needs nothing more).
    pub fn reloading(&mut self) {
        self.status("reloading configuration");
    }

    /// `STOPPING=1`.
    pub fn stopping(&self) {
        Self::send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    }
}

/// The interval at which to send `WATCHDOG=1`: half of `WATCHDOG_USEC`, or
/// `None` when the watchdog is not enabled for this process.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled()
        .filter(|d| !d.is_zero())
        .map(|d| d / 2)
}
