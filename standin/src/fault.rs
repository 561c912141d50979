//! File-driven faults: `$STANDIN_DIR/fault` is polled every 100 ms and its state is published on
//! a `watch` channel that every protocol handler reads; faults apply live, without a restart.
//!
//! Sealed mode (a Metacrypt/Vault stand-in): when the stand-in starts sealed (the file
//! `$STANDIN_DIR/sealed` exists, or `STANDIN_SEALED=1`), it publishes [`Fault::Sealed`] until
//! the file `$STANDIN_DIR/unseal` appears (an operator unsealing it). The seal lives in the
//! process: a stale `unseal` file is removed at start, so every restart seals it again.

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::watch;

use crate::log;

/// How often the fault file is polled.
pub(crate) const POLL: Duration = Duration::from_millis(100);

/// The fault currently in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fault {
    /// No fault file (or an empty one): behave.
    Healthy,
    /// `500`: HTTP 500, gRPC NOT_SERVING, DNS SERVFAIL.
    Error500,
    /// `hang`: accept connections and queries, never answer.
    Hang,
    /// `exit`: exit with status 1 at once.
    Exit,
    /// Started sealed and not unsealed yet: HTTP 503 `{"sealed":true}`, gRPC NOT_SERVING.
    Sealed,
    /// Anything else: logged once and treated as healthy.
    Unknown(String),
}

impl Fault {
    /// Parses the fault file's contents (`None` = file absent).
    pub(crate) fn parse(contents: Option<&str>) -> Self {
        match contents.map(|c| c.trim().to_ascii_lowercase()) {
            None => Self::Healthy,
            Some(c) => match c.as_str() {
                "" | "none" | "ok" => Self::Healthy,
                "500" => Self::Error500,
                "hang" => Self::Hang,
                "exit" => Self::Exit,
                _ => Self::Unknown(c),
            },
        }
    }

    fn describe(&self) -> String {
        match self {
            Self::Healthy => "fault=none".to_owned(),
            Self::Error500 => "fault=500".to_owned(),
            Self::Hang => "fault=hang".to_owned(),
            Self::Exit => "fault=exit".to_owned(),
            Self::Sealed => "fault=sealed".to_owned(),
            Self::Unknown(c) => format!("fault=unknown value={c:?} treated_as=none"),
        }
    }
}

/// Reads the fault file once.
pub(crate) fn read(path: &std::path::Path) -> Fault {
    Fault::parse(std::fs::read_to_string(path).ok().as_deref())
}

/// Applies a newly observed fault: logs it, exits on `exit`.
fn apply(fault: &Fault) {
    log::event("fault", &fault.describe());
    if *fault == Fault::Exit {
        log::event("exit", "code=1 reason=fault");
        std::process::exit(1);
    }
}

/// Reads the fault file now (exiting at once on `exit`) and returns the channel plus the
/// poller to spawn.
///
/// `unseal`: the file whose appearance unseals a stand-in that started sealed (`None`: not
/// sealed).
pub(crate) fn start(
    path: PathBuf,
    unseal: Option<PathBuf>,
) -> (
    watch::Receiver<Fault>,
    impl std::future::Future<Output = ()>,
) {
    if let Some(u) = &unseal {
        // Sealed again after every start: an unseal of the previous run does not count.
        let _ = std::fs::remove_file(u);
    }
    let mut sealed = unseal.is_some();
    let effective = move |sealed: bool, file: Fault| match file {
        Fault::Healthy | Fault::Unknown(_) if sealed => Fault::Sealed,
        f => f,
    };
    let first = effective(sealed, read(&path));
    if first != Fault::Healthy {
        apply(&first);
    }
    let (tx, rx) = watch::channel(first);
    let poller = async move {
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if sealed && unseal.as_ref().is_some_and(|u| u.exists()) {
                sealed = false;
                log::event("unsealed", "by=unseal-file");
            }
            let now = effective(sealed, read(&path));
            if *tx.borrow() != now {
                // Publish first, then log: once the line is out, every handler sees the fault.
                tx.send_replace(now.clone());
                apply(&now);
            }
        }
    };
    (rx, poller)
}

/// Whether the current fault is `hang`.
pub(crate) fn is_hang(rx: &watch::Receiver<Fault>) -> bool {
    *rx.borrow() == Fault::Hang
}

/// Whether the stand-in is sealed.
pub(crate) fn is_sealed(rx: &watch::Receiver<Fault>) -> bool {
    *rx.borrow() == Fault::Sealed
}

/// Whether the current fault is `500`.
pub(crate) fn is_500(rx: &watch::Receiver<Fault>) -> bool {
    *rx.borrow() == Fault::Error500
}

/// Waits until the fault is no longer `hang` (used to release parked connections without
/// answering them).
pub(crate) async fn hang_released(rx: &watch::Receiver<Fault>) {
    let mut rx = rx.clone();
    let _ = rx.wait_for(|f| *f != Fault::Hang).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fault_file() {
        assert_eq!(Fault::parse(None), Fault::Healthy);
        assert_eq!(Fault::parse(Some("")), Fault::Healthy);
        assert_eq!(Fault::parse(Some("500\n")), Fault::Error500);
        assert_eq!(Fault::parse(Some(" HANG ")), Fault::Hang);
        assert_eq!(Fault::parse(Some("exit")), Fault::Exit);
        assert_eq!(Fault::parse(Some("boom")), Fault::Unknown("boom".into()));
    }
}
