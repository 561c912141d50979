//! Transient units: run a command OUTSIDE this process's own sandbox, as a
//! oneshot service of the manager a [`Systemd`] is connected to, and get its
//! exit status and output back.
//!
//! Why: the daemon runs under a hardened unit (`RestrictNamespaces=yes`,
//! `ProtectSystem=strict`, a system call filter, no capabilities), where
//! podman cannot work (rootless podman cannot create its user namespace;
//! root's storage is read-only). A command started as a transient unit is a
//! child of the service manager, not of the daemon: it runs with the
//! manager's defaults (the platform user's own manager for rootless, the
//! system manager as root for rootful), none of the daemon's restrictions.
//!
//! How ([`Systemd::run_transient`]):
//! - `Manager.StartTransientUnit(NAME, "fail", properties, [])` of a
//!   `Type=oneshot` service: `ExecStart` (`a(sasb)`), `Environment`, optional
//!   `User`, `CollectMode=inactive-or-failed` (nothing is left behind, not
//!   even a failed unit), `AddRef=yes` (the unit stays loaded until we have
//!   read its exit status and call `Manager.UnrefUnit`, or our connection
//!   closes), `TimeoutStartUSec` (systemd itself stops a command that hangs)
//!   and a short `TimeoutStopUSec`;
//! - stdout and stderr: the write end of a pipe, passed over D-Bus as
//!   `StandardOutputFileDescriptor`/`StandardErrorFileDescriptor` (stdin
//!   likewise as `StandardInputFileDescriptor` when given). The read end is
//!   read while the unit runs, keeping at most `output_limit` bytes (the rest
//!   is read and counted, so the command never blocks on a full pipe);
//! - the unit's start job is matched through the connection's `JobRemoved`
//!   table (the same as [`Systemd::start`]), then `ExecMainCode`,
//!   `ExecMainStatus` and `Result` are read from the unit's
//!   `org.freedesktop.systemd1.Service` properties;
//! - `$` in arguments is passed as `$$` (systemd would expand `$VAR`), and
//!   a unit name taken already (`UnitExists`) is retried with the next name.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt};
use tracing::Instrument;
use zbus::{OwnedObjectPath, OwnedVariant, Variant};

use super::error::{connection_lost, job_hint, journal_cmd, map_zbus};
use super::jobs::{Finished, Lookup};
use super::state::SERVICE_IFACE;
use super::{DriveError, JobOp, Systemd};

/// Default bound on the output kept from a transient command: 1 MiB.
pub const DEFAULT_OUTPUT_LIMIT: usize = 1 << 20;

/// How long systemd waits after SIGTERM before SIGKILL when the command
/// times out (`TimeoutStopUSec`).
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Slack for our own wait beyond systemd's timeouts (systemd's
/// `TimeoutStartUSec` normally ends a command that hangs; this only guards
/// against a lost signal).
const BACKSTOP_SLACK: Duration = Duration::from_secs(10);

/// How long to wait for the end of the output once the unit has finished
/// (the pipe closes when systemd releases the unit).
const DRAIN_GRACE: Duration = Duration::from_secs(5);

/// Attempts at a free unit name (`UnitExists` is retried with the next one).
const NAME_ATTEMPTS: u32 = 3;

/// `ExecMainCode`: the process exited (`CLD_EXITED`).
const CLD_EXITED: i32 = 1;
/// `ExecMainCode`: killed by a signal (`CLD_KILLED`).
const CLD_KILLED: i32 = 2;
/// `ExecMainCode`: killed by a signal, core dumped (`CLD_DUMPED`).
const CLD_DUMPED: i32 = 3;

static SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// What to run as a transient unit ([`Systemd::run_transient`]).
///
/// ```
/// use std::time::Duration;
/// use mcrecover::drive::TransientSpec;
/// let spec = TransientSpec::new(["/usr/bin/podman", "image", "exists", "mcns:v1"])
///     .env("XDG_RUNTIME_DIR", "/run/user/850")
///     .timeout(Duration::from_secs(60))
///     .name_prefix("mcrecover-podman");
/// assert_eq!(spec.argv[0], "/usr/bin/podman");
/// ```
#[derive(Debug)]
pub struct TransientSpec {
    /// The command: `argv[0]` is the program, an absolute path (systemd
    /// searches a bare name in its own default `PATH`, not ours); the rest
    /// are its arguments, passed verbatim.
    pub argv: Vec<String>,
    /// Environment variables for the command (`Environment=`), on top of
    /// the manager's own.
    pub env: Vec<(String, String)>,
    /// `User=`: run as this user. Only for the system manager (a user
    /// manager runs everything as its user; leave it `None` there).
    pub user: Option<String>,
    /// The command's stdin (`StandardInputFileDescriptor`), e.g. an open
    /// archive for `podman load`; `None`: `/dev/null`. The descriptor is
    /// duplicated for systemd; the caller keeps its own.
    pub stdin: Option<OwnedFd>,
    /// Limit for the whole run (`TimeoutStartUSec`): when it passes, systemd
    /// stops the command (SIGTERM, SIGKILL 5 s later) and the call returns
    /// [`TransientError::Timeout`].
    pub timeout: Duration,
    /// At most this many bytes of stdout+stderr are kept; more is read
    /// and counted in [`TransientOutput::truncated`].
    pub output_limit: usize,
    /// Unit name prefix: units are named `PREFIX-PID-N.service`. Only
    /// `[A-Za-z0-9_.:-]`.
    pub name_prefix: String,
    /// `Description=` of the unit (default: the command line).
    pub description: Option<String>,
    /// Which end of a long output is kept (default: the head).
    pub keep: Keep,
    /// `DynamicUser=yes`: run as a fresh uid allocated for the run (system
    /// manager only, with `user` unset).
    pub dynamic_user: bool,
    /// The unit's sandbox (system manager only; default: none).
    pub sandbox: Sandbox,
    /// `TimeoutStopUSec`: after SIGTERM to the unit's processes (when it
    /// times out, is abandoned, or leaves processes behind), SIGKILL this
    /// much later (default 5 s).
    pub stop_timeout: Duration,
}

/// Which part of an output longer than [`TransientSpec::output_limit`] is
/// kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Keep {
    /// The first bytes (for output that is parsed, e.g. JSON).
    #[default]
    Head,
    /// The last bytes (for output whose end says why a command failed).
    Tail,
}

/// The sandbox of a transient unit of the system manager.
///
/// A command the daemon runs on behalf of the configuration (an exec check,
/// the escalation hook) must not inherit what the daemon itself may do
/// (write access to `/etc/systemd/system`, its state and configuration):
/// [`Sandbox::Contained`] gives it a read-only OS, hides the given paths,
/// and forbids gaining privileges. podman's own commands (image checks and
/// loads) need the manager's defaults: [`Sandbox::None`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Sandbox {
    /// The manager's defaults.
    #[default]
    None,
    /// `ProtectSystem=full` (`/usr`, `/boot`, `/etc` read-only),
    /// `ProtectHome=read-only`, `PrivateTmp=yes`, `NoNewPrivileges=yes`,
    /// `RestrictSUIDSGID=yes`, `ProtectKernelModules=yes`,
    /// `ProtectKernelLogs=yes`, `ProtectClock=yes`, `LockPersonality=yes`,
    /// and `InaccessiblePaths=` for each of `hide` (missing ones ignored).
    Contained {
        /// Paths the command must not see (the daemon's state and
        /// configuration).
        hide: Vec<String>,
    },
}

impl TransientSpec {
    /// A spec for `argv` with the defaults: no extra environment, no user,
    /// stdin `/dev/null`, 5 min timeout, 1 MiB output, prefix `mcrecover-run`.
    pub fn new<I, S>(argv: I) -> TransientSpec
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        TransientSpec {
            argv: argv.into_iter().map(Into::into).collect(),
            env: Vec::new(),
            user: None,
            stdin: None,
            timeout: Duration::from_secs(300),
            output_limit: DEFAULT_OUTPUT_LIMIT,
            name_prefix: "mcrecover-run".to_owned(),
            description: None,
            keep: Keep::Head,
            dynamic_user: false,
            sandbox: Sandbox::None,
            stop_timeout: STOP_TIMEOUT,
        }
    }

    /// Keeps the given end of a long output.
    #[must_use]
    pub fn keep(mut self, keep: Keep) -> TransientSpec {
        self.keep = keep;
        self
    }

    /// Runs as a uid allocated for the run (`DynamicUser=yes`).
    #[must_use]
    pub fn dynamic_user(mut self) -> TransientSpec {
        self.dynamic_user = true;
        self
    }

    /// Sets the unit's sandbox.
    #[must_use]
    pub fn sandbox(mut self, sandbox: Sandbox) -> TransientSpec {
        self.sandbox = sandbox;
        self
    }

    /// Sets how long SIGTERM may take before SIGKILL.
    #[must_use]
    pub fn stop_timeout(mut self, timeout: Duration) -> TransientSpec {
        self.stop_timeout = timeout;
        self
    }

    /// Adds an environment variable.
    #[must_use]
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> TransientSpec {
        self.env.push((name.into(), value.into()));
        self
    }

    /// Sets `User=` (system manager only).
    #[must_use]
    pub fn user(mut self, user: impl Into<String>) -> TransientSpec {
        self.user = Some(user.into());
        self
    }

    /// Sets the command's stdin.
    #[must_use]
    pub fn stdin(mut self, fd: impl Into<OwnedFd>) -> TransientSpec {
        self.stdin = Some(fd.into());
        self
    }

    /// Sets the limit for the whole run.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> TransientSpec {
        self.timeout = timeout;
        self
    }

    /// Sets the output bound in bytes.
    #[must_use]
    pub fn output_limit(mut self, bytes: usize) -> TransientSpec {
        self.output_limit = bytes;
        self
    }

    /// Sets the unit name prefix.
    #[must_use]
    pub fn name_prefix(mut self, prefix: impl Into<String>) -> TransientSpec {
        self.name_prefix = prefix.into();
        self
    }

    /// Sets the unit's description.
    #[must_use]
    pub fn description(mut self, text: impl Into<String>) -> TransientSpec {
        self.description = Some(text.into());
        self
    }

    /// The command line, for messages.
    pub fn command_line(&self) -> String {
        self.argv.join(" ")
    }

    fn validate(&self) -> Result<(), TransientError> {
        let Some(program) = self.argv.first() else {
            return Err(TransientError::Invalid("empty command".to_owned()));
        };
        if program.is_empty() {
            return Err(TransientError::Invalid("empty program name".to_owned()));
        }
        let prefix_ok = !self.name_prefix.is_empty()
            && self.name_prefix.len() <= 64
            && self
                .name_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'));
        if !prefix_ok {
            return Err(TransientError::Invalid(format!(
                "unit name prefix {:?}: 1-64 characters of [A-Za-z0-9_.:-]",
                self.name_prefix
            )));
        }
        if let Some((k, _)) = self
            .env
            .iter()
            .find(|(k, _)| k.is_empty() || k.contains('=') || k.contains('\0'))
        {
            return Err(TransientError::Invalid(format!(
                "environment variable name {k:?}"
            )));
        }
        let nul = self.argv.iter().any(|a| a.contains('\0'))
            || self.env.iter().any(|(_, v)| v.contains('\0'));
        if nul {
            return Err(TransientError::Invalid(
                "NUL byte in an argument or environment value".to_owned(),
            ));
        }
        Ok(())
    }
}

/// How the command of a transient unit ended (`ExecMainCode`/`ExecMainStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "how", content = "value")]
pub enum TransientExit {
    /// It exited with this status. 200-243 are systemd's own failures to
    /// set the process up (e.g. 203: the program could not be executed);
    /// the unit's journal says which.
    Exited(i32),
    /// A signal ended it (`core_dumped`: it dumped core).
    Signaled {
        /// The signal number.
        signal: i32,
        /// Whether it dumped core.
        core_dumped: bool,
    },
    /// systemd reports no main process exit (it never started).
    NotRun,
}

impl std::fmt::Display for TransientExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TransientExit::Exited(code) if (200..=243).contains(code) => write!(
                f,
                "exit status {code} (systemd could not set the process up)"
            ),
            TransientExit::Exited(code) => write!(f, "exit status {code}"),
            TransientExit::Signaled {
                signal,
                core_dumped,
            } => {
                let name = nix::sys::signal::Signal::try_from(*signal)
                    .map_or_else(|_| signal.to_string(), |s| s.as_str().to_owned());
                let core = if *core_dumped { ", core dumped" } else { "" };
                write!(f, "killed by {name}{core}")
            }
            TransientExit::NotRun => f.write_str("never ran"),
        }
    }
}

/// What a transient unit's command did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TransientOutput {
    /// The unit's name (gone by now: `CollectMode=inactive-or-failed`).
    pub unit: String,
    /// How the command ended.
    pub exit: TransientExit,
    /// The service's `Result`: `success`, `exit-code`, `signal`, `core-dump`,
    /// `timeout`, `resources`, ...
    pub result: String,
    /// stdout and stderr, interleaved as written, at most the spec's
    /// `output_limit` bytes.
    pub output: Vec<u8>,
    /// Bytes of output read beyond the limit and dropped (0: complete).
    pub truncated: u64,
    /// Whether the output is known complete: false when the pipe did not
    /// close within a few seconds of the unit's end (e.g. a left-over
    /// process of the command still holds it).
    pub complete: bool,
    /// From the start request to the end of the output.
    pub elapsed: Duration,
}

impl TransientOutput {
    /// The exit status, if the command exited (rather than being killed).
    pub fn code(&self) -> Option<i32> {
        match self.exit {
            TransientExit::Exited(code) => Some(code),
            _ => None,
        }
    }

    /// Whether the command exited with status 0.
    pub fn success(&self) -> bool {
        self.code() == Some(0)
    }

    /// The output as text (lossy UTF-8, trimmed), saying so when it was
    /// truncated or may be incomplete.
    pub fn text(&self) -> String {
        let mut text = String::from_utf8_lossy(&self.output).trim().to_owned();
        if self.truncated > 0 {
            text.push_str(&format!(
                " [output truncated: {} more bytes not kept]",
                self.truncated
            ));
        }
        if !self.complete {
            text.push_str(" [output may be incomplete: the pipe did not close]");
        }
        text
    }
}

/// Why a transient unit could not be run or waited for. In every case the
/// command's own verdict is unknown.
#[derive(Debug, thiserror::Error)]
pub enum TransientError {
    /// systemd refused the unit or the bus failed (permission denied,
    /// invalid property, connection lost, a start job that failed for
    /// another reason than the command's exit).
    #[error(transparent)]
    Drive(#[from] DriveError),
    /// The pipe for the command's output could not be made.
    #[error("cannot make the output pipe for a transient unit ({command}): {source}")]
    Pipe {
        /// The command line.
        command: String,
        /// The error.
        source: std::io::Error,
    },
    /// The command did not finish within the spec's timeout; systemd
    /// stopped it.
    #[error(
        "transient unit {unit} ({command}) did not finish within {} s and was stopped; see `{journal}`{}",
        after.as_secs(),
        if output.is_empty() { String::new() } else { format!("; its output: {output}") }
    )]
    Timeout {
        /// The unit.
        unit: String,
        /// The command line.
        command: String,
        /// The timeout.
        after: Duration,
        /// The journalctl command for the unit's log.
        journal: String,
        /// The output up to then (its last 4 KiB, lossy UTF-8).
        output: String,
    },
    /// The spec is not valid (empty command, bad prefix, NUL bytes).
    #[error("invalid transient unit request: {0}")]
    Invalid(String),
}

/// Output kept up to a limit; what comes beyond is counted.
#[derive(Debug, Default)]
struct Sink {
    buf: Vec<u8>,
    limit: usize,
    dropped: u64,
    keep: Keep,
}

impl Sink {
    fn new(limit: usize) -> Sink {
        Sink {
            buf: Vec::new(),
            limit,
            dropped: 0,
            keep: Keep::Head,
        }
    }

    fn tail(limit: usize) -> Sink {
        Sink {
            keep: Keep::Tail,
            ..Sink::new(limit)
        }
    }

    fn push(&mut self, data: &[u8]) {
        if self.keep == Keep::Tail {
            self.buf.extend_from_slice(data);
            let cut = self.buf.len().saturating_sub(self.limit);
            self.buf.drain(..cut);
            self.dropped += cut as u64;
            return;
        }
        let room = self.limit.saturating_sub(self.buf.len());
        let keep = room.min(data.len());
        self.buf.extend_from_slice(&data[..keep]);
        self.dropped += (data.len() - keep) as u64;
    }
}

/// Reads `reader` to its end, keeping at most `limit` bytes; returns them
/// and the number of bytes read beyond the limit (read and dropped, so a
/// writer never blocks on us).
pub(crate) async fn read_bounded<R: AsyncRead + Unpin>(
    mut reader: R,
    limit: usize,
) -> std::io::Result<(Vec<u8>, u64)> {
    let mut sink = Sink::new(limit);
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        let n = reader.read(&mut chunk).await?;
        if n == 0 {
            return Ok((sink.buf, sink.dropped));
        }
        sink.push(&chunk[..n]);
    }
}

/// The pipe's read end while the unit runs.
struct OutputPipe {
    rx: tokio::net::unix::pipe::Receiver,
    sink: Sink,
    open: bool,
    chunk: Vec<u8>,
}

impl OutputPipe {
    /// Reads one chunk (cancel safe); on EOF or an error the pipe counts as
    /// closed and this never returns again (pending forever).
    async fn read_some(&mut self) {
        if !self.open {
            return std::future::pending().await;
        }
        match self.rx.read(&mut self.chunk).await {
            Ok(0) => self.open = false,
            Ok(n) => self.sink.push(&self.chunk[..n]),
            Err(e) => {
                tracing::warn!(error = %e, "reading a transient unit's output");
                self.open = false;
            }
        }
    }

    /// Reads until EOF or until `grace` passes; returns whether EOF came.
    async fn drain(&mut self, grace: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + grace;
        while self.open {
            if tokio::time::timeout_at(deadline, self.read_some())
                .await
                .is_err()
            {
                return false;
            }
        }
        true
    }

    /// The output so far, for an error message: its last 4 KiB at most.
    fn tail(&self) -> String {
        const TAIL: usize = 4096;
        let text = String::from_utf8_lossy(&self.sink.buf);
        let text = text.trim();
        if text.len() <= TAIL {
            return text.to_owned();
        }
        let mut start = text.len() - TAIL;
        while !text.is_char_boundary(start) {
            start += 1;
        }
        format!("[...] {}", &text[start..])
    }
}

/// Releases our reference (`AddRef`) on a transient unit: at once through
/// [`UnitRef::release`], or from `Drop` in a spawned task when the call was
/// abandoned (its future dropped), so a cancelled run leaves nothing behind.
struct UnitRef {
    sd: Systemd,
    unit: String,
    released: bool,
}

impl UnitRef {
    async fn release(&mut self) {
        self.released = true;
        unref(&self.sd, &self.unit).await;
    }
}

impl Drop for UnitRef {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let (sd, unit) = (self.sd.clone(), std::mem::take(&mut self.unit));
            rt.spawn(async move {
                // Abandoned while running: stop it first (best effort).
                if let Err(e) = sd.inner.manager.stop_unit(unit.clone(), "replace".into()).await {
                    tracing::debug!(unit = %unit, error = %e, "stopping an abandoned transient unit");
                }
                unref(&sd, &unit).await;
            });
        }
    }
}

async fn unref(sd: &Systemd, unit: &str) {
    if let Err(e) = sd.inner.manager.unref_unit(unit.to_owned()).await {
        // Gone already, or the connection closed (which drops the reference too).
        tracing::debug!(unit = %unit, error = %e, "UnrefUnit");
    }
}

/// `$` is expanded by systemd in `ExecStart=` arguments; `$$` is a literal `$`.
fn escape_dollars(arg: &str) -> String {
    arg.replace('$', "$$")
}

fn variant<'a>(v: impl Into<Variant<'a>>) -> Result<OwnedVariant, zbus::Error> {
    OwnedVariant::try_from(v.into())
}

/// The `StartTransientUnit` properties for `spec`, with `out` as stdout and stderr.
fn properties(
    spec: &TransientSpec,
    out: &OwnedFd,
) -> Result<Vec<(String, OwnedVariant)>, zbus::Error> {
    let program = spec.argv.first().cloned().unwrap_or_default();
    let args: Vec<String> = spec.argv.iter().map(|a| escape_dollars(a)).collect();
    let exec: Vec<(String, Vec<String>, bool)> = vec![(program, args, false)];
    let env: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let description = spec
        .description
        .clone()
        .unwrap_or_else(|| format!("mcrecover: {}", spec.command_line()));
    let usec = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    let mut props = vec![
        ("Description".to_owned(), variant(description)?),
        ("Type".to_owned(), variant("oneshot")?),
        ("CollectMode".to_owned(), variant("inactive-or-failed")?),
        ("AddRef".to_owned(), variant(true)?),
        ("TimeoutStartUSec".to_owned(), variant(usec(spec.timeout))?),
        (
            "TimeoutStopUSec".to_owned(),
            variant(usec(spec.stop_timeout))?,
        ),
        // Every process of the command, also one that left its session
        // (`setsid`), is in the unit's cgroup and killed when it stops.
        ("KillMode".to_owned(), variant("control-group")?),
        ("ExecStart".to_owned(), variant(exec)?),
        (
            "StandardOutputFileDescriptor".to_owned(),
            variant(zbus::Fd::from(out.as_fd()))?,
        ),
        (
            "StandardErrorFileDescriptor".to_owned(),
            variant(zbus::Fd::from(out.as_fd()))?,
        ),
    ];
    if !env.is_empty() {
        props.push(("Environment".to_owned(), variant(env)?));
    }
    if let Some(user) = &spec.user {
        props.push(("User".to_owned(), variant(user.as_str())?));
    }
    if spec.dynamic_user {
        props.push(("DynamicUser".to_owned(), variant(true)?));
    }
    if let Sandbox::Contained { hide } = &spec.sandbox {
        props.push(("ProtectSystem".to_owned(), variant("full")?));
        props.push(("ProtectHome".to_owned(), variant("read-only")?));
        for flag in [
            "PrivateTmp",
            "NoNewPrivileges",
            "RestrictSUIDSGID",
            "ProtectKernelModules",
            "ProtectKernelLogs",
            "ProtectClock",
            "LockPersonality",
        ] {
            props.push((flag.to_owned(), variant(true)?));
        }
        if !hide.is_empty() {
            // `-`: a path that does not exist is no error.
            let paths: Vec<String> = hide.iter().map(|p| format!("-{p}")).collect();
            props.push(("InaccessiblePaths".to_owned(), variant(paths)?));
        }
    }
    if let Some(stdin) = &spec.stdin {
        props.push((
            "StandardInputFileDescriptor".to_owned(),
            variant(zbus::Fd::from(stdin.as_fd()))?,
        ));
    }
    Ok(props)
}

impl Systemd {
    /// Runs `spec` as a transient `Type=oneshot` service of this manager
    /// (module docs: how), waits for it to finish and returns its exit
    /// status and bounded output. The unit is gone afterwards
    /// (`CollectMode=inactive-or-failed`, our `AddRef` released), also when
    /// the command failed, and also when the returned future is dropped.
    ///
    /// A command that ran and failed is an `Ok` with its [`TransientExit`];
    /// `Err` means the command's verdict is unknown: systemd refused the unit
    /// ([`TransientError::Drive`]: e.g. `PermissionDenied` as an unprivileged
    /// user on the system manager), the bus was lost, or the timeout passed.
    pub async fn run_transient(
        &self,
        spec: &TransientSpec,
    ) -> Result<TransientOutput, TransientError> {
        spec.validate()?;
        let span = tracing::debug_span!(
            "transient",
            command = %spec.command_line(),
            unit = tracing::field::Empty
        );
        self.run_transient_inner(spec).instrument(span).await
    }

    async fn run_transient_inner(
        &self,
        spec: &TransientSpec,
    ) -> Result<TransientOutput, TransientError> {
        let command = spec.command_line();
        let t0 = Instant::now();
        let pipe_err = |e: std::io::Error| TransientError::Pipe {
            command: command.clone(),
            source: e,
        };
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| pipe_err(std::io::Error::from(e)))?;
        let mut pipe = OutputPipe {
            rx: tokio::net::unix::pipe::Receiver::from_owned_fd(read).map_err(pipe_err)?,
            sink: match spec.keep {
                Keep::Head => Sink::new(spec.output_limit),
                Keep::Tail => Sink::tail(spec.output_limit),
            },
            open: true,
            chunk: vec![0u8; 16 * 1024],
        };
        let (unit, job) = self.start_transient(spec, &write).await?;
        // Our copy of the write end must go, or the pipe never reaches EOF.
        drop(write);
        let mut unit_ref = UnitRef {
            sd: self.clone(),
            unit: unit.clone(),
            released: false,
        };
        tracing::Span::current().record("unit", unit.as_str());
        tracing::debug!(unit = %unit, job = %job, "transient unit started");

        // Wait for the start job (a oneshot's start job ends with its
        // command), reading the output meanwhile.
        let backstop = spec.timeout + spec.stop_timeout + BACKSTOP_SLACK;
        let finished = {
            let wait = self.wait_job(&job);
            tokio::pin!(wait);
            let deadline = tokio::time::sleep(backstop);
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    f = &mut wait => break Some(f),
                    () = &mut deadline => break None,
                    () = pipe.read_some() => {}
                }
            }
        };
        let timeout = |pipe: &OutputPipe| TransientError::Timeout {
            unit: unit.clone(),
            command: command.clone(),
            after: spec.timeout,
            journal: journal_cmd(&unit, self.inner.user),
            output: pipe.tail(),
        };
        let finished = match finished {
            Some(f) => f?,
            None => {
                tracing::warn!(unit = %unit, timeout_s = spec.timeout.as_secs(), "transient unit did not finish; killing it");
                let kill = self.inner.manager.kill_unit(
                    unit.clone(),
                    "all".into(),
                    nix::sys::signal::Signal::SIGKILL as i32,
                );
                if let Err(e) = kill.await {
                    tracing::debug!(unit = %unit, error = %e, "KillUnit");
                }
                unit_ref.release().await;
                return Err(timeout(&pipe));
            }
        };
        match finished.result.as_str() {
            // done: it exited 0; failed: it exited otherwise, was killed
            // (also by systemd's start timeout), or could not be run.
            "done" | "failed" => {}
            "timeout" => {
                unit_ref.release().await;
                pipe.drain(DRAIN_GRACE).await;
                return Err(timeout(&pipe));
            }
            other => {
                let user = self.inner.user;
                let err = DriveError::JobFailed {
                    unit: unit.clone(),
                    op: JobOp::Start,
                    result: other.to_owned(),
                    hint: job_hint(&unit, JobOp::Start, other, user),
                };
                unit_ref.release().await;
                return Err(err.into());
            }
        }
        let status = self.exec_main_status(&unit).await;
        unit_ref.release().await;
        let (exit, result) = status?;
        let complete = pipe.drain(DRAIN_GRACE).await;
        if result == "timeout" {
            return Err(timeout(&pipe));
        }
        let out = TransientOutput {
            unit,
            exit,
            result,
            output: std::mem::take(&mut pipe.sink.buf),
            truncated: pipe.sink.dropped,
            complete,
            elapsed: t0.elapsed(),
        };
        tracing::debug!(
            unit = %out.unit,
            exit = %out.exit,
            result = %out.result,
            output_bytes = out.output.len(),
            truncated = out.truncated,
            complete = out.complete,
            elapsed_ms = u64::try_from(out.elapsed.as_millis()).unwrap_or(u64::MAX),
            "transient unit finished"
        );
        Ok(out)
    }

    /// `StartTransientUnit` under a fresh name (`PREFIX-PID-N.service`),
    /// retrying the next name when one is taken. Returns (unit, job path).
    async fn start_transient(
        &self,
        spec: &TransientSpec,
        out: &OwnedFd,
    ) -> Result<(String, String), TransientError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let unit = format!(
                "{}-{}-{}.service",
                spec.name_prefix,
                std::process::id(),
                SEQUENCE.fetch_add(1, Ordering::Relaxed)
            );
            let ctx = self.ctx("StartTransientUnit", Some(&unit));
            let props = properties(spec, out).map_err(|e| map_zbus(e, ctx))?;
            let reply = self
                .inner
                .manager
                .start_transient_unit(unit.clone(), "fail".into(), props, Vec::new())
                .await;
            match reply {
                Ok(job) => return Ok((unit, job.as_str().to_owned())),
                Err(e) => match map_zbus(e, ctx) {
                    DriveError::Refused { name, .. }
                        if name == "org.freedesktop.systemd1.UnitExists"
                            && attempt < NAME_ATTEMPTS =>
                    {
                        tracing::debug!(unit = %unit, "transient unit name taken; trying the next");
                    }
                    other => return Err(other.into()),
                },
            }
        }
    }

    /// Waits for the `JobRemoved` of `job` (same table as [`Systemd::start`]).
    async fn wait_job(&self, job: &str) -> Result<Finished, DriveError> {
        match self.inner.jobs.lookup(job) {
            Lookup::Ready(f) => Ok(f),
            Lookup::Wait(rx) => rx.await.map_err(|_| connection_lost(&self.inner.address)),
            Lookup::Closed => Err(connection_lost(&self.inner.address)),
        }
    }

    /// `ExecMainCode`, `ExecMainStatus` and `Result` of the (still
    /// referenced) service `unit`.
    async fn exec_main_status(&self, unit: &str) -> Result<(TransientExit, String), DriveError> {
        let path: OwnedObjectPath = self.load_unit(unit).await?;
        let reader = self.clone_weakly();
        let msg = reader
            .call(&path, "GetAll", &(SERVICE_IFACE,), unit)
            .await?;
        let props: std::collections::HashMap<String, OwnedVariant> = msg
            .body()
            .deserialize()
            .map_err(|e| reader.decode_err(unit, "GetAll org.freedesktop.systemd1.Service", &e))?;
        let int = |name: &str| -> Result<i32, DriveError> {
            props
                .get(name)
                .and_then(|v| v.try_clone().ok())
                .and_then(|v| i32::try_from(v).ok())
                .ok_or_else(|| DriveError::Bus {
                    action: format!("Get {SERVICE_IFACE} {name} {unit}"),
                    detail: "missing or not an int32".to_owned(),
                })
        };
        let (code, status) = (int("ExecMainCode")?, int("ExecMainStatus")?);
        let result = props
            .get("Result")
            .and_then(|v| v.try_clone().ok())
            .and_then(|v| String::try_from(v).ok())
            .unwrap_or_default();
        let exit = match code {
            CLD_EXITED => TransientExit::Exited(status),
            CLD_KILLED => TransientExit::Signaled {
                signal: status,
                core_dumped: false,
            },
            CLD_DUMPED => TransientExit::Signaled {
                signal: status,
                core_dumped: true,
            },
            _ => TransientExit::NotRun,
        };
        Ok((exit, result))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sink_keeps_the_limit_and_counts_the_rest() {
        let mut s = Sink::new(5);
        s.push(b"abc");
        s.push(b"defg");
        s.push(b"hi");
        assert_eq!(s.buf, b"abcde");
        assert_eq!(s.dropped, 4);
    }

    #[test]
    fn a_tail_sink_keeps_the_end() {
        let mut s = Sink::tail(5);
        s.push(b"abc");
        s.push(b"defg");
        s.push(b"hi");
        assert_eq!(s.buf, b"efghi");
        assert_eq!(s.dropped, 4);
    }

    #[tokio::test]
    async fn read_bounded_reads_to_the_end() {
        let data = vec![7u8; 100_000];
        let (kept, dropped) = read_bounded(&data[..], 1000).await.unwrap();
        assert_eq!(kept.len(), 1000);
        assert_eq!(dropped, 99_000);
    }

    #[test]
    fn dollars_are_literal() {
        assert_eq!(escape_dollars("a$HOME$$"), "a$$HOME$$$$");
        assert_eq!(escape_dollars("plain"), "plain");
    }

    #[test]
    fn specs_are_validated() {
        assert!(TransientSpec::new(Vec::<String>::new()).validate().is_err());
        assert!(TransientSpec::new(["/bin/true"]).validate().is_ok());
        assert!(TransientSpec::new(["/bin/true"])
            .name_prefix("bad/prefix")
            .validate()
            .is_err());
        assert!(TransientSpec::new(["/bin/true"])
            .env("A=B", "c")
            .validate()
            .is_err());
        assert!(TransientSpec::new(["/bin/echo", "a\0b"])
            .validate()
            .is_err());
    }

    #[test]
    fn properties_have_the_dbus_types_systemd_wants() {
        let (_r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let spec = TransientSpec::new(["/usr/bin/podman", "image", "exists", "x$y"])
            .env("HOME", "/srv/mcp")
            .user("mcp");
        let props = properties(&spec, &w).unwrap();
        assert!(!props.iter().any(|(n, _)| n == "ProtectSystem"));
        let sig = |name: &str| {
            props
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.value_signature().to_string())
                .unwrap_or_else(|| panic!("no {name}"))
        };
        assert_eq!(sig("ExecStart"), "a(sasb)");
        assert_eq!(sig("Environment"), "as");
        assert_eq!(sig("StandardOutputFileDescriptor"), "h");
        assert_eq!(sig("StandardErrorFileDescriptor"), "h");
        assert_eq!(sig("TimeoutStartUSec"), "t");
        assert_eq!(sig("AddRef"), "b");
        assert_eq!(sig("User"), "s");
        assert_eq!(sig("CollectMode"), "s");
        let exec = props.iter().find(|(n, _)| n == "ExecStart").unwrap();
        let shown = format!("{:?}", exec.1);
        assert!(shown.contains("x$$y"), "{shown}");
    }

    #[test]
    fn a_contained_unit_gets_its_sandbox() {
        let (_r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let spec = TransientSpec::new(["/bin/true"])
            .dynamic_user()
            .sandbox(Sandbox::Contained {
                hide: vec!["/var/lib/mcrecover".to_owned()],
            });
        let props = properties(&spec, &w).unwrap();
        let get = |name: &str| {
            props
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| format!("{v:?}"))
                .unwrap_or_else(|| panic!("no {name}"))
        };
        assert!(get("ProtectSystem").contains("full"));
        assert!(get("ProtectHome").contains("read-only"));
        assert!(get("NoNewPrivileges").contains("true"));
        assert!(get("DynamicUser").contains("true"));
        assert!(get("KillMode").contains("control-group"));
        assert!(get("InaccessiblePaths").contains("-/var/lib/mcrecover"));
    }

    #[test]
    fn exits_read_well() {
        assert_eq!(TransientExit::Exited(1).to_string(), "exit status 1");
        assert!(TransientExit::Exited(203)
            .to_string()
            .contains("systemd could not set the process up"));
        assert_eq!(
            TransientExit::Signaled {
                signal: 9,
                core_dumped: false
            }
            .to_string(),
            "killed by SIGKILL"
        );
    }
}
