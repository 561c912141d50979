//! Health probes: run one configured [`Check`](crate::config::Check) once and
//! say whether it passed, with a short detail a person can act on.
//!
//! One file per kind (`dns`, `http`, `tcp`, `grpc`, `exec`) plus `tls` (the
//! shared rustls client setup). Adding a kind is one new file and one arm in
//! [`probe`]. Scheduling (intervals, thresholds, start periods) is not done
//! here: callers run [`probe`] as often as they like.

mod dns;
mod exec;
mod grpc;
mod http;
mod tcp;
pub mod tls;

pub use exec::{ExecVia, UnitExec};

use std::fmt;
use std::io;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::config::{Check, CheckKind};

/// The result of one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Whether the check passed.
    pub ok: bool,
    /// It did not pass because the service waits for an operator (the
    /// check's `operator_wait` rule matched).
    pub waiting: bool,
    /// On success a short summary ("HTTP 200", "A 100.95.252.120", "SERVING",
    /// "connected", "exit 0"); on failure the reason, naming the target.
    pub detail: String,
    /// How long the probe took.
    pub elapsed: Duration,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.ok {
            "ok"
        } else if self.waiting {
            "WAIT"
        } else {
            "FAIL"
        };
        write!(
            f,
            "{verdict}: {} ({} ms)",
            self.detail,
            self.elapsed.as_millis()
        )
    }
}

/// A probe that did not pass: the human-readable reason, and whether the
/// answer matched the check's `operator_wait` rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub(crate) struct Failed {
    /// Why, naming the target.
    pub(crate) reason: String,
    /// The service waits for an operator (not broken).
    pub(crate) waiting: bool,
}

impl Failed {
    /// The answer means "waiting for an operator"; `remedy` is appended.
    pub(crate) fn waiting(reason: &str, remedy: &str) -> Self {
        Failed {
            reason: format!("{reason}: waiting for an operator ({remedy})"),
            waiting: true,
        }
    }
}

impl From<String> for Failed {
    fn from(reason: String) -> Self {
        Failed {
            reason,
            waiting: false,
        }
    }
}

/// What a probe is currently waiting for, so a timeout can say so.
#[derive(Debug, Default)]
pub(crate) struct Progress(Mutex<String>);

impl Progress {
    /// Record that the probe now waits for `what`.
    pub(crate) fn waiting_for(&self, what: impl Into<String>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = what.into();
    }

    fn current(&self) -> String {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Run `check` once, an exec check as a child process ([`ExecVia::Child`]).
/// Never panics (failures become `ok = false`) and never takes longer than
/// `check.timeout` plus scheduling slack: on timeout the in-flight work is
/// dropped (an exec check's process group is killed).
pub async fn probe(check: &Check) -> Outcome {
    probe_with(check, &ExecVia::Child).await
}

/// [`probe`], an exec check run as `via` says (the daemon, `recover` and
/// `gate`: in a transient unit of their manager).
pub async fn probe_with(check: &Check, via: &ExecVia) -> Outcome {
    let start = Instant::now();
    let progress = Progress::default();
    progress.waiting_for(format!("{} check `{}`", check.kind.kind_name(), check.name));
    let timeout = check.timeout;
    let wait = check.operator_wait.as_ref();
    let work = async {
        match &check.kind {
            CheckKind::Dns(c) => dns::probe(c, timeout, &progress).await,
            CheckKind::Http(c) => http::probe(c, wait, &progress).await,
            CheckKind::Tcp(c) => tcp::probe(c, &progress).await,
            CheckKind::Grpc(c) => grpc::probe(c, wait, &progress).await,
            CheckKind::Exec(c) => exec::probe(c, wait, via, timeout, &progress).await,
        }
    };
    let result = match tokio::time::timeout(timeout, work).await {
        Ok(result) => result,
        Err(_) => Err(Failed::from(match &check.kind {
            CheckKind::Exec(c) => exec::timeout_detail(c, timeout),
            _ => format!(
                "timed out after {} waiting for {}",
                fmt_duration(timeout),
                progress.current()
            ),
        })),
    };
    let outcome = match result {
        Ok(detail) => Outcome {
            ok: true,
            waiting: false,
            detail: sanitize(&detail),
            elapsed: start.elapsed(),
        },
        Err(Failed { reason, waiting }) => Outcome {
            ok: false,
            waiting,
            detail: sanitize(&reason),
            elapsed: start.elapsed(),
        },
    };
    tracing::debug!(
        check = %check.name,
        kind = check.kind.kind_name(),
        ok = outcome.ok,
        waiting = outcome.waiting,
        detail = %outcome.detail,
        elapsed_ms = outcome.elapsed.as_millis() as u64,
        "probe finished"
    );
    outcome
}

/// `text` without what must not reach a terminal, the journal, D-Bus or an
/// environment variable: ANSI escape sequences (CSI `ESC [ ... final`, OSC
/// `ESC ] ... BEL|ESC \\`, other `ESC x`), NULs and every other control
/// character except tab (newlines become spaces). Check details come from
/// servers and commands the daemon does not control.
pub fn sanitize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => match chars.next() {
                Some('[') => {
                    // CSI: parameters and intermediates, then a final byte @..~.
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                Some(']') => {
                    // OSC: up to BEL or ESC \.
                    while let Some(c) = chars.next() {
                        if c == '\u{7}' {
                            break;
                        }
                        if c == '\u{1b}' {
                            chars.next();
                            break;
                        }
                    }
                }
                _ => {}
            },
            '\n' | '\r' => out.push(' '),
            '\t' => out.push('\t'),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// Format a duration the way people write timeouts: `2s`, `1.5s`, `250ms`.
pub fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms >= 1000 && ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else if ms >= 1000 {
        format!("{}s", d.as_secs_f64())
    } else {
        format!("{ms}ms")
    }
}

/// An I/O error in words: "connection refused" rather than
/// "Connection refused (os error 111)".
pub(crate) fn io_reason(err: &io::Error) -> String {
    let text = err.to_string();
    let text = match text.find(" (os error ") {
        Some(pos) => text[..pos].to_owned(),
        None => text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => format!("{:?}", err.kind()),
    }
}

/// Dial `addr` over TCP, naming the address and the reason on failure.
pub(crate) async fn connect_tcp(
    addr: std::net::SocketAddr,
    progress: &Progress,
) -> Result<tokio::net::TcpStream, Failed> {
    progress.waiting_for(format!("TCP connect to {addr}"));
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| Failed::from(format!("TCP connect to {addr}: {}", io_reason(&e))))?;
    // Small requests: do not wait for Nagle.
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// An error and its sources, joined with ": " (hyper and tonic errors keep
/// the useful part in the source chain).
pub(crate) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(inner) = source {
        let part = match inner.downcast_ref::<io::Error>() {
            Some(io_err) => io_reason(io_err),
            None => inner.to_string(),
        };
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = inner.source();
    }
    text
}

/// Aborts a spawned task when dropped, so helper tasks (connection drivers)
/// never outlive the probe that started them.
#[derive(Debug)]
pub(crate) struct AbortOnDrop(pub(crate) tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod sanitize_tests {
    use super::sanitize;

    #[test]
    fn escapes_nuls_and_controls_are_removed() {
        assert_eq!(sanitize("a\u{1b}[31;1mred\u{1b}[0m b"), "ared b");
        assert_eq!(sanitize("t\u{1b}]0;title\u{7}x"), "tx");
        assert_eq!(sanitize("nul\0byte\u{8}\u{7f}"), "nulbyte");
        assert_eq!(sanitize("two\nlines\r\tok"), "two lines \tok");
        assert_eq!(sanitize("HTTP 500: é"), "HTTP 500: é");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(fmt_duration(Duration::from_secs(2)), "2s");
        assert_eq!(fmt_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(fmt_duration(Duration::from_millis(250)), "250ms");
    }

    #[test]
    fn io_errors_lose_the_os_error_suffix() {
        let err = io::Error::from_raw_os_error(111);
        assert_eq!(io_reason(&err), "connection refused");
        let err = io::Error::other("Boom");
        assert_eq!(io_reason(&err), "boom");
    }
}
