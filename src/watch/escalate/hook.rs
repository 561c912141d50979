//! The exec hook action: runs the configured argv (`[watch] hook`) in its own
//! process group with the event in `MCRECOVER_*` environment variables and as
//! JSON on stdin, within `hook_timeout` (on timeout the whole process group is
//! killed). The result is the exit status and the last stderr line.

use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use super::{Action, ActionResult, Event};

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
            ev.diagnoses
                .first()
                .map(|d| d.remedy.clone())
                .unwrap_or_default(),
        ),
    ];
    env.into_iter()
        .map(|(k, v)| (k, crate::check::sanitize(&v)))
        .collect()
}

/// Runs `argv` for `ev` within `timeout`. Never fails: the result says what
/// happened.
pub async fn run(argv: &[String], timeout: Duration, ev: &Event) -> ActionResult {
    let (ok, detail) = match run_inner(argv, timeout, ev).await {
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

async fn run_inner(
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
mod tests {
    use super::*;

    #[test]
    fn last_line_skips_blank_lines() {
        assert_eq!(last_line(b"a\nb \n\n"), "b");
        assert_eq!(last_line(b""), "");
    }
}
