//! `kind = "exec"`: run a command on the host; exit status 0 is healthy.
//!
//! The command runs in its own process group with stdin closed; if the probe
//! is dropped (its timeout elapsed) the whole group is SIGKILLed, so a stuck
//! `sh -c` cannot leave grandchildren behind. With `user` set (root only) the
//! command runs through `runuser -u <user> --`.

use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::{Pid, User};
use tokio::process::Command;

use super::{fmt_duration, io_reason, Failed, Progress};
use crate::config::ExecCheck;

/// Run the command and judge its exit status.
pub(super) async fn probe(check: &ExecCheck, progress: &Progress) -> Result<String, Failed> {
    let shown = show_argv(&check.argv);
    let Some((program, args)) = check.argv.split_first() else {
        return Err(Failed("exec: empty command".to_owned()));
    };
    let mut command = match &check.user {
        Some(user) if needs_user_switch(user)? => {
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
    let mut child = command
        .spawn()
        .map_err(|e| Failed(format!("exec `{shown}` could not start: {}", io_reason(&e))))?;
    let mut group = KillGroupOnDrop(child.id().and_then(|id| i32::try_from(id).ok()));
    // Output the check does not control the size of: at most OUTPUT_KEPT
    // bytes of each stream are kept (the tail), the rest is read and dropped.
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let (out, err, status) = tokio::join!(
        read_tail(stdout, OUTPUT_KEPT),
        read_tail(stderr, OUTPUT_KEPT),
        child.wait()
    );
    let status =
        status.map_err(|e| Failed(format!("exec `{shown}`: waiting failed: {}", io_reason(&e))))?;
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
    Err(Failed(match last {
        Some(line) => format!("exec `{shown}` {how}: {line}"),
        None => format!("exec `{shown}` {how} (no output)"),
    }))
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
        .map_err(|e| Failed(format!("exec: cannot look up user `{user}`: {e}")))?
        .ok_or_else(|| Failed(format!("exec: user `{user}` does not exist")))?;
    if target.uid == current {
        Ok(false)
    } else if current.is_root() {
        Ok(true)
    } else {
        Err(Failed(format!(
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
    fn argv_display_quotes_spaces() {
        let argv = vec!["sh".to_owned(), "-c".to_owned(), "exit 1".to_owned()];
        assert_eq!(show_argv(&argv), "sh -c 'exit 1'");
    }
}
