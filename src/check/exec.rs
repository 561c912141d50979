//! `kind = "exec"`: run a command on the host; exit status 0 is healthy.
//!
//! Two ways to run it ([`ExecVia`]):
//! - [`ExecVia::Unit`] (the daemon, `recover`, `gate`, `verify`: whatever
//!   reaches the platform's service manager): as a transient unit of that manager
//!   ([`crate::drive::Systemd::run_transient`]), so the command inherits
//!   nothing of the daemon's own privileges and every process it starts,
//!   also one that calls `setsid`, is in the unit's cgroup and killed when
//!   the command exits or times out. Under the system manager it runs as
//!   `user`, else as the platform user, else as a uid allocated for the run
//!   (`DynamicUser=yes`), with a sandbox ([`crate::drive::Sandbox::Contained`]:
//!   read-only `/usr` and `/etc`, no new privileges, the daemon's state and
//!   configuration hidden). Under a user manager it runs as that user.
//! - [`ExecVia::Child`] (`status` without a daemon, or when the manager
//!   cannot be reached): a child process in its own process group with stdin closed,
//!   SIGKILLed as a group when the probe is dropped; with `user` set (root
//!   only) through `runuser -u <user> --`.

use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::{Pid, User};
use tokio::process::Command;

use super::{fmt_duration, io_reason, Failed, Progress};
use crate::config::{ExecCheck, OperatorWait};
use crate::drive::{Keep, Sandbox, Systemd, TransientError, TransientExit, TransientSpec};

/// Where exec checks (and the escalation hook) run; see the module docs.
#[derive(Debug, Clone, Default)]
pub enum ExecVia {
    /// A child process of this one.
    #[default]
    Child,
    /// A transient unit of a service manager.
    Unit(UnitExec),
}

/// How commands run as transient units ([`ExecVia::Unit`]).
#[derive(Debug, Clone)]
pub struct UnitExec {
    /// The manager.
    pub sd: Systemd,
    /// Whether it is the system manager (rootful): then `User=` and the
    /// sandbox apply. A user manager runs everything as its user.
    pub system: bool,
    /// The user a command without its own `user` runs as under the system
    /// manager (the platform user); `None`: a uid allocated for the run.
    pub default_user: Option<String>,
    /// Paths a command must not see (the daemon's state and configuration).
    pub hide: Vec<String>,
}

impl UnitExec {
    /// The transient unit for `argv` run as `user` (or the default).
    pub fn spec(
        &self,
        argv: &[String],
        user: Option<&str>,
        timeout: Duration,
    ) -> Result<TransientSpec, String> {
        let mut spec = TransientSpec::new(argv.iter().cloned())
            .timeout(timeout)
            .stop_timeout(Duration::from_millis(500))
            .keep(Keep::Tail);
        if !self.system {
            return match (user, &self.default_user) {
                (Some(u), Some(own)) if u != own => Err(format!(
                    "cannot run as user `{u}`: in rootless mode commands run as the platform user `{own}`"
                )),
                _ => Ok(spec),
            };
        }
        spec = spec.sandbox(Sandbox::Contained {
            hide: self.hide.clone(),
        });
        Ok(match user.or(self.default_user.as_deref()) {
            Some(u) => spec.user(u),
            None => spec.dynamic_user(),
        })
    }
}

/// Run the command and judge its exit status.
/// An exit code listed in `wait.exit_codes` means "waiting for an operator".
pub(super) async fn probe(
    check: &ExecCheck,
    wait: Option<&OperatorWait>,
    via: &ExecVia,
    timeout: Duration,
    progress: &Progress,
) -> Result<String, Failed> {
    let result = match via {
        ExecVia::Child => probe_child(check, progress).await,
        ExecVia::Unit(unit) => probe_unit(check, unit, timeout, progress).await,
    };
    result.map_err(|(reason, code)| match (wait, code) {
        (Some(w), Some(c)) if w.exit_codes.contains(&c) => Failed::waiting(&reason, &w.remedy),
        _ => Failed::from(reason),
    })
}

/// A failure: the reason, and the exit code when the command exited.
type ExecFailed = (String, Option<i32>);

/// A failure without an exit code.
fn no_code(f: Failed) -> ExecFailed {
    (f.reason, None)
}

/// [`ExecVia::Unit`]: a transient unit, its output's tail kept.
async fn probe_unit(
    check: &ExecCheck,
    unit: &UnitExec,
    timeout: Duration,
    progress: &Progress,
) -> Result<String, ExecFailed> {
    let shown = show_argv(&check.argv);
    if check.argv.first().is_none_or(String::is_empty) {
        return Err(("exec: the program (argv[0]) is empty".to_owned(), None));
    }
    let argv = absolute_argv(&check.argv).map_err(no_code)?;
    let spec = unit
        .spec(&argv, check.user.as_deref(), timeout)
        .map_err(|e| (format!("exec `{shown}`: {e}"), None))?
        .output_limit(OUTPUT_KEPT)
        .name_prefix("mcrecover-check")
        .description(format!("mcrecover exec check: {shown}"));
    progress.waiting_for(format!("exec `{shown}` (transient unit)"));
    let out = match unit.sd.run_transient(&spec).await {
        Ok(out) => out,
        Err(TransientError::Timeout { .. }) => {
            return Err((timeout_detail(check, timeout), None));
        }
        Err(e) => return Err((format!("exec `{shown}` could not run: {e}"), None)),
    };
    if out.success() {
        return Ok("exit 0".to_owned());
    }
    let code = match out.exit {
        TransientExit::Exited(code) if !(200..=243).contains(&code) => Some(code),
        _ => None,
    };
    let how = match out.exit {
        TransientExit::Exited(code) if (200..=243).contains(&code) => format!(
            "could not be started by systemd (exit {code}; see `journalctl -u {}`)",
            out.unit
        ),
        TransientExit::Exited(code) => format!("exited {code}"),
        TransientExit::Signaled { signal, .. } => format!("killed by signal {signal}"),
        TransientExit::NotRun => format!("did not run ({})", out.result),
    };
    Err((
        match last_line(&out.output) {
            Some(line) => format!("exec `{shown}` {how}: {line}"),
            None => format!("exec `{shown}` {how} (no output)"),
        },
        code,
    ))
}

/// `argv` with its program resolved in `PATH` (systemd does not search
/// ours): a bare name found nowhere is a failure naming it.
fn absolute_argv(argv: &[String]) -> Result<Vec<String>, Failed> {
    let mut out = argv.to_vec();
    let Some(program) = out.first_mut() else {
        return Err(Failed::from(
            "exec: the program (argv[0]) is empty".to_owned(),
        ));
    };
    if program.contains('/') {
        return Ok(out);
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    let found = std::env::split_paths(&path)
        .map(|dir| dir.join(program.as_str()))
        .find(|p| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .ok_or_else(|| Failed::from(format!("exec: `{program}` is not in PATH")))?;
    *program = found.to_string_lossy().into_owned();
    Ok(out)
}

/// [`ExecVia::Child`]: a child process in its own process group.
async fn probe_child(check: &ExecCheck, progress: &Progress) -> Result<String, ExecFailed> {
    let shown = show_argv(&check.argv);
    let Some((program, args)) = check.argv.split_first() else {
        return Err(("exec: empty command".to_owned(), None));
    };
    let mut command = match &check.user {
        Some(user) if needs_user_switch(user).map_err(no_code)? => {
            let mut c = Command::new("runuser");
            c.arg("-u").arg(user).arg("--").arg(program).args(args);
            c
        }
        _ => {
            let mut c = Command::new(program);
            c.args(args);
            c
        }
    };
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);

    progress.waiting_for(format!("exec `{shown}`"));
    let mut child = command.spawn().map_err(|e| {
        (
            format!("exec `{shown}` could not start: {}", io_reason(&e)),
            None,
        )
    })?;
    let mut group = KillGroupOnDrop(child.id().and_then(|id| i32::try_from(id).ok()));
    // Output the check does not control the size of: at most OUTPUT_KEPT
    // bytes of each stream are kept (the tail), the rest is read and dropped.
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let (out, err, status) = tokio::join!(
        read_tail(stdout, OUTPUT_KEPT),
        read_tail(stderr, OUTPUT_KEPT),
        child.wait()
    );
    let status = status.map_err(|e| {
        (
            format!("exec `{shown}`: waiting failed: {}", io_reason(&e)),
            None,
        )
    })?;
    // The leader has exited and been reaped: do not signal its group id again.
    group.0 = None;

    if status.success() {
        return Ok("exit 0".to_owned());
    }
    let last = last_line(&err).or_else(|| last_line(&out));
    let how = match (status.code(), signal_of(&status)) {
        (Some(code), _) => format!("exited {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        (None, None) => format!("ended with {status}"),
    };
    Err((
        match last {
            Some(line) => format!("exec `{shown}` {how}: {line}"),
            None => format!("exec `{shown}` {how} (no output)"),
        },
        status.code(),
    ))
}

/// The failure detail when the probe's timeout kills the command.
pub(super) fn timeout_detail(check: &ExecCheck, timeout: Duration) -> String {
    format!(
        "exec `{}` killed after timeout {}",
        show_argv(&check.argv),
        fmt_duration(timeout)
    )
}

/// Whether running as `user` needs `runuser`; fails when it does but we are
/// not root.
fn needs_user_switch(user: &str) -> Result<bool, Failed> {
    let current = nix::unistd::geteuid();
    let target = User::from_name(user)
        .map_err(|e| Failed::from(format!("exec: cannot look up user `{user}`: {e}")))?
        .ok_or_else(|| Failed::from(format!("exec: user `{user}` does not exist")))?;
    if target.uid == current {
        Ok(false)
    } else if current.is_root() {
        Ok(true)
    } else {
        Err(Failed::from(format!(
            "exec: cannot run as user `{user}`: mcrecover is not running as root"
        )))
    }
}

/// SIGKILLs a process group when dropped (unless disarmed with `None`).
struct KillGroupOnDrop(Option<i32>);

impl Drop for KillGroupOnDrop {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        }
    }
}

/// The signal that ended a process, if any.
fn signal_of(status: &std::process::ExitStatus) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt;
    status.signal()
}

/// How much of each output stream of an exec check is kept (its tail).
const OUTPUT_KEPT: usize = 16 * 1024;

/// Read `r` to its end, keeping at most the last `limit` bytes (reads
/// everything, so the child never blocks on a full pipe).
async fn read_tail<R: tokio::io::AsyncRead + Unpin>(r: Option<R>, limit: usize) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let Some(mut r) = r else {
        return Vec::new();
    };
    let mut kept: std::collections::VecDeque<u8> = std::collections::VecDeque::new();
    let mut buf = vec![0u8; 8192];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                kept.extend(&buf[..n]);
                let excess = kept.len().saturating_sub(limit);
                kept.drain(..excess);
            }
        }
    }
    kept.into()
}

/// The last non-empty line of some output, trimmed, bounded and cleaned
/// of control characters.
fn last_line(bytes: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    let line = text
        .lines()
        .rev()
        .map(|l| super::sanitize(l).trim().to_owned())
        .find(|l| !l.is_empty())?;
    const MAX: usize = 300;
    if line.chars().count() > MAX {
        Some(format!("{}...", line.chars().take(MAX).collect::<String>()))
    } else {
        Some(line)
    }
}

/// The argv as a person would type it (arguments with spaces quoted).
fn show_argv(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if a.is_empty() || a.contains(char::is_whitespace) {
                format!("'{a}'")
            } else {
                a.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn last_line_skips_trailing_blank_lines() {
        assert_eq!(last_line(b"one\ntwo\n\n").as_deref(), Some("two"));
        assert_eq!(last_line(b"\n \n"), None);
    }

    #[tokio::test]
    async fn output_is_read_to_the_end_but_only_its_tail_kept() {
        use tokio::io::AsyncReadExt;
        // 64 MiB of output: all read (the writer is never blocked), 16 KiB kept.
        let big = tokio::io::repeat(b'x').take(64 << 20);
        let kept = read_tail(Some(big), OUTPUT_KEPT).await;
        assert_eq!(kept.len(), OUTPUT_KEPT);
        let small = &b"one\ntwo\n"[..];
        assert_eq!(read_tail(Some(small), OUTPUT_KEPT).await, b"one\ntwo\n");
    }

    #[test]
    fn last_line_has_no_control_characters() {
        assert_eq!(
            last_line(b"ok\n\x1b[31mred\x00alert\x07\n").as_deref(),
            Some("redalert")
        );
    }

    #[test]
    fn bare_programs_are_found_in_path() {
        let argv = absolute_argv(&["sh".to_owned(), "-c".to_owned()]).unwrap();
        assert!(
            argv[0].ends_with("/sh") && argv[0].starts_with('/'),
            "{argv:?}"
        );
        assert_eq!(argv[1], "-c");
        let err = absolute_argv(&["no-such-program-xyz".to_owned()]).unwrap_err();
        assert!(err.reason.contains("not in PATH"), "{err}");
    }

    #[test]
    fn argv_display_quotes_spaces() {
        let argv = vec!["sh".to_owned(), "-c".to_owned(), "exit 1".to_owned()];
        assert_eq!(show_argv(&argv), "sh -c 'exit 1'");
    }
}
