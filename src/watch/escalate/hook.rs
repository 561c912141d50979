//! The exec hook action: runs the configured argv (`[watch] hook`) with the
//! event in `MCRECOVER_*` environment variables and as JSON on stdin, within
//! `hook_timeout`. The result is the exit status and the last line of its
//! output.
//!
//! Where it runs is [`ExecVia`]'s choice, as for exec checks: the daemon
//! runs it as a transient unit of its manager (under the system manager as
//! the platform user, or a uid allocated for the run, in a sandbox: it
//! inherits none of the daemon's privileges, and every process it leaves
//! behind is killed when it exits or times out); otherwise it is a child in
//! its own process group (killed as a group on timeout).

use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use super::{Action, ActionResult, Event};
use crate::check::ExecVia;
use crate::drive::{TransientError, TransientExit};

/// At most this much of the hook's stderr is kept (the tail).
const STDERR_LIMIT: usize = 16 * 1024;

/// The environment the hook gets for `ev` (besides the daemon's own).
pub fn environment(ev: &Event) -> Vec<(&'static str, String)> {
    // No value may carry a NUL (the hook would not even start) or terminal
    // control sequences: reasons quote servers and commands.
    let env = vec![
        ("MCRECOVER_EVENT", ev.kind.as_str().to_owned()),
        ("MCRECOVER_EVENT_ID", ev.id.clone()),
        ("MCRECOVER_PLATFORM", ev.platform.clone()),
        ("MCRECOVER_SERVICE", ev.service.clone()),
        ("MCRECOVER_UNIT", ev.unit.clone()),
        ("MCRECOVER_STAGE", ev.stage.clone().unwrap_or_default()),
        ("MCRECOVER_RESTARTS", ev.restarts.to_string()),
        ("MCRECOVER_WINDOW_S", ev.window.as_secs().to_string()),
        ("MCRECOVER_REASON", ev.reason.clone()),
        ("MCRECOVER_DIAGNOSIS", super::diagnosis_ids(&ev.diagnoses)),
        (
            "MCRECOVER_REMEDY",
            if ev.remedy.is_empty() {
                ev.diagnoses
                    .first()
                    .map(|d| d.remedy.clone())
                    .unwrap_or_default()
            } else {
                ev.remedy.clone()
            },
        ),
    ];
    env.into_iter()
        .map(|(k, v)| (k, crate::check::sanitize(&v)))
        .collect()
}

/// Runs `argv` for `ev` within `timeout`, as `via` says. Never fails: the
/// result says what happened.
pub async fn run(argv: &[String], timeout: Duration, ev: &Event, via: &ExecVia) -> ActionResult {
    let outcome = match via {
        ExecVia::Child => run_child(argv, timeout, ev).await,
        ExecVia::Unit(unit) => run_unit(argv, timeout, ev, unit).await,
    };
    let (ok, detail) = match outcome {
        Ok(d) => d,
        Err(why) => (false, why),
    };
    if ok {
        tracing::info!(service = %ev.service, event_id = %ev.id, "escalation hook: {detail}");
    } else {
        tracing::warn!(service = %ev.service, event_id = %ev.id, "escalation hook: {detail}");
    }
    ActionResult {
        action: Action::Hook,
        ok,
        detail,
    }
}

/// [`ExecVia::Unit`]: a transient unit; the event JSON on stdin through a
/// memory file (`memfd`: nothing on disk, no pipe to keep fed).
async fn run_unit(
    argv: &[String],
    timeout: Duration,
    ev: &Event,
    unit: &crate::check::UnitExec,
) -> Result<(bool, String), String> {
    let program = argv
        .first()
        .ok_or_else(|| "no hook configured".to_owned())?;
    let json = serde_json::to_vec(ev).map_err(|e| format!("cannot encode the event: {e}"))?;
    let stdin = event_file(&json).map_err(|e| format!("cannot pass the event on stdin: {e}"))?;
    let mut spec = unit
        .spec(argv, None, timeout)?
        .stdin(stdin)
        .output_limit(STDERR_LIMIT)
        .name_prefix("mcrecover-hook")
        .description(format!("mcrecover escalation hook for {}", ev.service));
    for (k, v) in environment(ev) {
        spec = spec.env(k, v);
    }
    let out = match unit.sd.run_transient(&spec).await {
        Ok(out) => out,
        Err(TransientError::Timeout { unit, .. }) => {
            return Ok((
                false,
                format!(
                    "{program} timed out after {}s; its unit {unit} was stopped (every process in it killed)",
                    timeout.as_secs_f64()
                ),
            ))
        }
        Err(e) => return Err(format!("cannot run {program}: {e}")),
    };
    let last = last_line(&out.output);
    let suffix = if last.is_empty() {
        String::new()
    } else {
        format!("; output: {}", crate::check::sanitize(&last))
    };
    Ok(match out.exit {
        TransientExit::Exited(0) => (true, format!("{program} exited with status 0{suffix}")),
        other => (
            false,
            format!("{program} failed: {other} (unit {}){suffix}", out.unit),
        ),
    })
}

/// The event in a memory file, positioned at its start.
fn event_file(json: &[u8]) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::io::{Seek, Write};
    let fd =
        nix::sys::memfd::memfd_create(c"mcrecover-event", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
            .map_err(std::io::Error::from)?;
    let mut file = std::fs::File::from(fd);
    file.write_all(json)?;
    file.rewind()?;
    Ok(file.into())
}

/// [`ExecVia::Child`]: a child process in its own process group.
async fn run_child(
    argv: &[String],
    timeout: Duration,
    ev: &Event,
) -> Result<(bool, String), String> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| "no hook configured".to_owned())?;
    let json = serde_json::to_vec(ev).map_err(|e| format!("cannot encode the event: {e}"))?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .envs(environment(ev))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    let pgid = child.id().and_then(|id| i32::try_from(id).ok());

    // stdin: the event, then EOF. A hook that never reads it must not block us.
    let stdin = child.stdin.take();
    let writer = tokio::spawn(async move {
        if let Some(mut stdin) = stdin {
            let _ = stdin.write_all(&json).await;
            let _ = stdin.shutdown().await;
        }
    });
    let stderr = child.stderr.take();
    let reader = tokio::spawn(async move {
        let mut tail: Vec<u8> = Vec::new();
        if let Some(mut stderr) = stderr {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > STDERR_LIMIT {
                    let cut = tail.len() - STDERR_LIMIT;
                    tail.drain(..cut);
                }
            }
        }
        tail
    });

    let outcome = tokio::time::timeout(timeout, child.wait()).await;
    let status = match outcome {
        Ok(Ok(status)) => Some(status),
        Ok(Err(e)) => {
            kill_group(pgid);
            writer.abort();
            reader.abort();
            return Err(format!("waiting for {program} failed: {e}"));
        }
        Err(_) => None,
    };
    if status.is_none() {
        kill_group(pgid);
        let _ = child.wait().await;
    }
    writer.abort();
    // Grandchildren holding stderr open were killed with the group (on timeout);
    // after a normal exit a lingering one must not hold us either.
    let tail = match tokio::time::timeout(Duration::from_secs(1), reader).await {
        Ok(Ok(tail)) => tail,
        _ => Vec::new(),
    };
    let last = last_line(&tail);
    let suffix = if last.is_empty() {
        String::new()
    } else {
        format!("; stderr: {last}")
    };
    Ok(match status {
        None => (
            false,
            format!(
                "{program} timed out after {}s; its process group was killed{suffix}",
                timeout.as_secs_f64()
            ),
        ),
        Some(st) if st.success() => (true, format!("{program} exited with status 0{suffix}")),
        Some(st) => (false, format!("{program} failed: {st}{suffix}")),
    })
}

/// SIGKILL to the hook's process group (its pgid is its pid).
fn kill_group(pgid: Option<i32>) {
    if let Some(pgid) = pgid {
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    }
}

/// The last non-empty line of `bytes`, trimmed.
fn last_line(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or_default()
        .to_owned()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_event_file_reads_from_its_start() {
        use std::io::Read;
        let fd = event_file(b"{\"a\":1}").unwrap();
        let mut text = String::new();
        std::fs::File::from(fd).read_to_string(&mut text).unwrap();
        assert_eq!(text, "{\"a\":1}");
    }

    #[test]
    fn last_line_skips_blank_lines() {
        assert_eq!(last_line(b"a\nb \n\n"), "b");
        assert_eq!(last_line(b""), "");
    }
}
