//! Items 2 and 3, written against the daemon contract (docs/daemon.md, team
//! brief): `mcrecover daemon` runs as a transient Type=notify service in a
//! rootful sandbox, owning restarts (`[watch] restart_owner = "mcrecover"`, so
//! units get Restart=no), watching the example platform (12 stand-ins).
//!
//! Reaction (2): (a) SIGKILL of a container's main process (host PID, signal
//! sent by the harness) → the daemon's restart journal entry
//! (MESSAGE_ID=5e8a0b3c2d1f4e6a9b7c8d0e1f2a3b4c, SERVICE=); split into
//! systemd's part (kill → the unit's last journal line before the restart, i.e.
//! ExecStopPost done) and the daemon's part; its own REACTION_MS is recorded
//! too. (b) The stand-in's `fault` file set to `500` → the restart entry;
//! expected ≈ failure_threshold × interval (3 × 1 s here).
//!
//! Footprint (3): the daemon's cgroup (RSS = Σ VmRSS of its processes, CPU =
//! cpu.stat usage_usec) over 60 s (15 s with --quick), 12 services, 5 s
//! interval; then monit (Debian package) with equivalent checks in the same
//! sandbox over the same window.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use mcrecover_testbed::{metacircular_service, Sandbox};
use serde_json::{json, Value};

use crate::report::{fmt_num, summarize, Row};
use crate::sandbox::{self, now_ms, run_ok, UNIT_DIR};
use crate::Ctx;

/// The restart journal entry's MESSAGE_ID (contract).
pub(crate) const RESTART_MESSAGE_ID: &str = "5e8a0b3c2d1f4e6a9b7c8d0e1f2a3b4c";
const DAEMON_UNIT: &str = "mcbench-daemon.service";
const MONIT_UNIT: &str = "mcbench-monit.service";

/// `[watch]` of the bench configurations; `MCBENCH_WATCH` (TOML lines) replaces it,
/// e.g. `MCBENCH_WATCH='backoff_initial = "50ms"'`.
fn watch_table() -> String {
    let extra = std::env::var("MCBENCH_WATCH").unwrap_or_else(|_| {
        // Trials restart services repeatedly: never escalate, and let the
        // backoff level fall back to 0 between trials (healthy for 3 s).
        "escalate_after = 1000\nbackoff_reset = \"3s\"".into()
    });
    format!(
        "\n[watch]\nrestart_owner = \"mcrecover\"\nstate_dir = \"/run/mcbench-state\"\n{extra}\n"
    )
}

/// The example, rootful, without the external mcias entry (not reachable in a
/// sandbox), with check interval `interval`, plus the bench `[watch]`.
fn daemon_config(sb: &Sandbox, interval: &str) -> Result<String> {
    let text = std::fs::read_to_string(
        mcrecover_testbed::workspace_root().join("examples/metacircular.toml"),
    )?;
    let mut text = text.replacen("mode = \"rootless\"", "mode = \"rootful\"", 1);
    text = text.replacen(
        "interval = \"10s\"",
        &format!("interval = \"{interval}\""),
        1,
    );
    if let Some(i) = text.find("[services.mcias]") {
        text.truncate(i);
    }
    text = without_table(&text, "[watch]");
    text.push_str(&watch_table());
    let path = "/srv/bench-daemon.toml";
    sb.write_file(path, text.as_bytes())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(path.into())
}

/// `text` without the TOML table `header` (its header line up to the next table header).
fn without_table(text: &str, header: &str) -> String {
    let mut out = String::new();
    let mut skipping = false;
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with('[') {
            skipping = t.starts_with(header);
        }
        if !skipping {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Platform up (install + recover), then the daemon as a transient notify service.
fn platform_with_daemon(ctx: &Ctx, name: &str, interval: &str) -> Result<(Sandbox, String)> {
    let sb = sandbox::platform(name, ctx)?;
    let config = daemon_config(&sb, interval)?;
    sandbox::install(&sb, &config)?;
    let argv = sandbox::recover_argv(&config);
    sandbox::check(&argv, &sb.run(&argv))?;
    start_daemon(&sb, &config)?;
    Ok((sb, config))
}

/// The shipped unit, whose `Environment=` settings the bench's daemon gets too.
const SHIPPED_UNIT: &str = include_str!("../../units/mcrecover.service");

/// The daemon's environment: the shipped unit's `Environment=` lines, then
/// `MCBENCH_DAEMON_ENV`: space-separated `NAME=VALUE` pairs (e.g.
/// `MALLOC_ARENA_MAX=8`, which wins over the unit's), to measure a setting.
fn daemon_env() -> Vec<String> {
    SHIPPED_UNIT
        .lines()
        .filter(|l| l.starts_with("Environment="))
        .map(str::to_owned)
        .chain(
            std::env::var("MCBENCH_DAEMON_ENV")
                .unwrap_or_default()
                .split_whitespace()
                .map(|kv| format!("Environment={kv}")),
        )
        .collect()
}

fn start_daemon(sb: &Sandbox, config: &str) -> Result<()> {
    let env = daemon_env();
    // MCBENCH_DAEMON_WRAP: a command the daemon runs under (e.g.
    // `heaptrack -o /srv/heap`); its notifications then come from a child.
    let wrap = std::env::var("MCBENCH_DAEMON_WRAP").unwrap_or_default();
    let mut argv = vec![
        "systemd-run",
        "--unit",
        DAEMON_UNIT,
        "-p",
        "Type=notify",
        "-p",
        if wrap.trim().is_empty() {
            "NotifyAccess=main"
        } else {
            "NotifyAccess=all"
        },
        "-p",
        "TimeoutStartSec=180",
    ];
    for e in &env {
        argv.extend(["-p", e.as_str()]);
    }
    argv.extend(wrap.split_whitespace());
    argv.extend([
        "/usr/bin/mcrecover",
        "daemon",
        "--config",
        config,
        "--backend",
        "service",
        "--unit-dir",
        UNIT_DIR,
        "--state-dir",
        "/run/mcbench-state",
        "--api-bus",
        "none",
    ]);
    let out = sb.run(&argv);
    if !out.status.success() {
        let j = journal_tail(sb, DAEMON_UNIT, 40);
        bail!(
            "the daemon did not start (needs `mcrecover daemon`, branch wt-b): {}\n{j}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Host PID of the container's main process (the stand-in).
fn container_host_pid(sb: &Sandbox, name: &str) -> Result<u32> {
    let inner: u32 = run_ok(sb, &["podman", "inspect", "-f", "{{.State.Pid}}", name])?
        .trim()
        .parse()
        .context("podman inspect pid")?;
    host_pid(sb, inner).with_context(|| format!("container {name}"))
}

/// Host PID of the sandbox's process `inner` (PID in the sandbox's namespace):
/// the process whose NSpid has `inner` second and that lives in the sandbox's cgroup tree.
fn host_pid(sb: &Sandbox, inner: u32) -> Result<u32> {
    let cg = sb.info().cgroup.trim_matches('/').to_string();
    for e in std::fs::read_dir("/proc")?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        let Some(ns) = status.lines().find(|l| l.starts_with("NSpid:")) else {
            continue;
        };
        let f: Vec<&str> = ns.split_whitespace().skip(1).collect();
        if f.len() >= 2 && f[1] == inner.to_string() {
            let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
            if cgroup.contains(&cg) {
                return Ok(pid);
            }
        }
    }
    bail!("no host process for sandbox pid {inner}")
}

/// Journal entries (JSON) inside the sandbox matching `matches`, since `since_ms` (unix ms).
fn journal(sb: &Sandbox, matches: &[&str], since_ms: f64) -> Vec<Value> {
    let since = format!("@{}", (since_ms / 1000.0).floor() as u64);
    let mut argv = vec!["journalctl", "--no-pager", "-o", "json", "--since", &since];
    argv.extend_from_slice(matches);
    let out = sb.run(&argv);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| entry_ms(v) >= since_ms)
        .collect()
}

fn entry_ms(v: &Value) -> f64 {
    v["__REALTIME_TIMESTAMP"]
        .as_str()
        .and_then(|s| s.parse::<f64>().ok())
        .map(|us| us / 1000.0)
        .unwrap_or(0.0)
}

/// Waits for the daemon's restart entry for `service` after `since_ms`.
fn wait_restart(sb: &Sandbox, service: &str, since_ms: f64, timeout: Duration) -> Result<Value> {
    let t = Instant::now();
    let m = format!("MESSAGE_ID={RESTART_MESSAGE_ID}");
    let s = format!("SERVICE={service}");
    loop {
        if let Some(e) = journal(sb, &[&m, &s], since_ms)
            .into_iter()
            .min_by(|a, b| entry_ms(a).total_cmp(&entry_ms(b)))
        {
            return Ok(e);
        }
        if t.elapsed() > timeout {
            bail!("no restart journal entry (MESSAGE_ID={RESTART_MESSAGE_ID}, SERVICE={service}) within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The last `n` journal lines of `unit` inside the sandbox (microsecond
/// timestamps), for a report; empty if journalctl fails.
fn journal_tail(sb: &Sandbox, unit: &str, n: u32) -> String {
    let n = n.to_string();
    let out = sb.run(&[
        "journalctl",
        "--no-pager",
        "-o",
        "short-precise",
        "-n",
        &n,
        "-u",
        unit,
    ]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits until the daemon's `STATUS=` says it is watching with every service
/// healthy (`watching N services: N healthy`): its boot recovery (or the ramp
/// after a reload) is over. Before that a killed container of a stage the
/// ramp has not reached yet is started by the ramp, not restarted.
fn wait_watching(sb: &Sandbox, timeout: Duration) -> Result<()> {
    let t = Instant::now();
    loop {
        let status = run_ok(
            sb,
            &[
                "systemctl",
                "show",
                "-p",
                "StatusText",
                "--value",
                DAEMON_UNIT,
            ],
        )
        .unwrap_or_default();
        let status = status.trim();
        let all_healthy = status
            .strip_prefix("watching ")
            .and_then(|r| r.split_once(" services: "))
            .and_then(|(n, rest)| rest.strip_suffix(" healthy").map(|h| n == h))
            .unwrap_or(false);
        if all_healthy {
            return Ok(());
        }
        if t.elapsed() > timeout {
            bail!("{DAEMON_UNIT} not watching with every service healthy within {timeout:?}: {status:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until the stand-in of `service` wrote a `ready` newer than `since_ms`.
fn wait_ready(sb: &Sandbox, service: &str, since_ms: f64, timeout: Duration) -> Result<()> {
    let dir = metacircular_service(service)
        .map(|x| x.standin_dir)
        .context("service")?;
    let p = sb.host_path(&format!("{dir}/.standin/ready"));
    let t = Instant::now();
    loop {
        let ready = std::fs::read_to_string(&p)
            .ok()
            .and_then(|s| s.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        if ready > since_ms {
            return Ok(());
        }
        if t.elapsed() > timeout {
            bail!("{service} not ready again within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until `unit`'s journal has a line containing `text`.
fn wait_journal(sb: &Sandbox, unit: &str, text: &str, timeout: Duration) -> Result<()> {
    let t0 = std::time::Instant::now();
    loop {
        let out = sb.run(&["journalctl", "-u", unit, "--no-pager", "-o", "cat"]);
        if String::from_utf8_lossy(&out.stdout).contains(text) {
            return Ok(());
        }
        if t0.elapsed() > timeout {
            bail!("{unit}: no \"{text}\" in its journal within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Who restarts a killed container in [`kill_trials`].
#[derive(Debug, Clone, Copy)]
enum Restarter {
    /// The daemon: its restart journal entry.
    Daemon,
    /// monit (`exec "systemctl restart UNIT"`): its `exec` log line.
    Monit,
}

/// Waits for monit's `'SERVICE' exec: ...` line (syslog → journal) after
/// `since_ms`.
fn wait_monit_exec(sb: &Sandbox, service: &str, since_ms: f64, timeout: Duration) -> Result<Value> {
    let t = Instant::now();
    let mark = format!("'{service}' exec");
    loop {
        if let Some(e) = journal(sb, &["SYSLOG_IDENTIFIER=monit"], since_ms)
            .into_iter()
            .filter(|e| e["MESSAGE"].as_str().is_some_and(|m| m.contains(&mark)))
            .min_by(|a, b| entry_ms(a).total_cmp(&entry_ms(b)))
        {
            return Ok(e);
        }
        if t.elapsed() > timeout {
            bail!("no monit line containing {mark:?} within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// monit's path inside the sandbox's root, if it is installed there (the
/// host base shares the host's; the trixie base has its own root).
fn monit_in(sb: &Sandbox) -> Option<&'static str> {
    ["/usr/bin/monit", "/usr/sbin/monit"]
        .into_iter()
        .find(|p| sb.run(&["test", "-x", p]).status.success())
}

/// Writes monit's control file `path` (0600, as monit wants) and starts
/// `monit -I` on it as the transient unit [`MONIT_UNIT`], once monit
/// accepted its syntax.
fn start_monit(sb: &Sandbox, monit: &str, path: &str, rc: &str) -> Result<()> {
    sb.write_file(path, rc.as_bytes())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    run_ok(sb, &["chmod", "0600", path])?;
    let syntax = sb.run(&[monit, "-t", "-c", path]);
    if !syntax.status.success() {
        bail!(
            "monitrc rejected: {}{}",
            String::from_utf8_lossy(&syntax.stdout),
            String::from_utf8_lossy(&syntax.stderr)
        );
    }
    run_ok(
        sb,
        &["systemd-run", "--unit", MONIT_UNIT, monit, "-I", "-c", path],
    )?;
    Ok(())
}

/// monit for the reaction comparison: a 1 s cycle (its shortest), one TCP
/// port test per victim, `exec "systemctl restart UNIT"` when it fails.
fn monitrc_reaction() -> String {
    let mut s = String::from("set daemon 1\nset logfile syslog\nset idfile /run/mcbench-monit-r.id\nset statefile /run/mcbench-monit-r.state\n\n");
    for (svc, port) in [
        ("mcq", 48080),
        ("mcdoc", 38080),
        ("mcat", 48116),
        ("kls", 58080),
        ("sgardd", 19473),
        ("mcr-web", 28080),
        ("metacrypt-web", 18080),
    ] {
        s += &format!(
            "check host {svc} with address 127.0.0.1\n  if failed port {port} type tcp then exec \"/bin/systemctl restart {svc}.service\"\n\n"
        );
    }
    s
}

/// The figures of kill trials (item 2 (a)).
#[derive(Default)]
struct Kills {
    total: Vec<f64>,
    systemd_part: Vec<f64>,
    daemon_part: Vec<f64>,
    own: Vec<f64>,
    to_died: Vec<f64>,
    to_main_exit: Vec<f64>,
    after_main_exit: Vec<f64>,
    to_next_start: Vec<f64>,
    to_running: Vec<f64>,
    /// Restart entry → podman's `died` event (positive: the restart came first).
    before_died: Vec<f64>,
    raw: Vec<Value>,
}

/// The victims of the kill trials, in turn.
const VICTIMS: [&str; 7] = [
    "mcq",
    "mcdoc",
    "mcat",
    "kls",
    "sgardd",
    "mcr-web",
    "metacrypt-web",
];

/// `trials` SIGKILLs of a stand-in's process, each until its service is
/// ready again (plus 3.5 s).
fn kill_trials(sb: &Sandbox, trials: usize, label: &str, by: Restarter) -> Result<Kills> {
    let mut k = Kills::default();
    for i in 0..trials {
        let svc = VICTIMS[i % VICTIMS.len()];
        // A spread start (0-999 ms, fixed sequence): a polling restarter
        // (monit's 1 s cycle) must not meet each kill at the same phase
        // (the trials are paced by the service's own return).
        std::thread::sleep(Duration::from_millis((i as u64 * 618 + 309) % 1000));
        let pid = container_host_pid(sb, svc)?;
        let t_kill = now_ms();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .context("kill")?;
        let entry = match by {
            Restarter::Daemon => wait_restart(sb, svc, t_kill, Duration::from_secs(30)),
            Restarter::Monit => wait_monit_exec(sb, svc, t_kill, Duration::from_secs(30)),
        };
        let entry = entry.map_err(|e| {
            // What the restarter and the unit said meanwhile, for the report.
            let unit = match by {
                Restarter::Daemon => DAEMON_UNIT,
                Restarter::Monit => MONIT_UNIT,
            };
            e.context(format!(
                "kill {i} of {svc}{label}\n{unit}:\n{}\n{svc}.service:\n{}",
                journal_tail(sb, unit, 40),
                journal_tail(sb, &format!("{svc}.service"), 40)
            ))
        })?;
        let t_restart = entry_ms(&entry);
        // systemd's last word on the unit before the restart (e.g. "Failed with result" after ExecStopPost).
        let unit = format!("UNIT={svc}.service");
        let sd_done = journal(sb, &["_PID=1", &unit], t_kill)
            .iter()
            .map(entry_ms)
            .filter(|&t| t <= t_restart)
            .fold(f64::NAN, f64::max);
        // Where the time goes: podman seeing the container die (its `died`
        // event), conmon exiting (systemd: "Main process exited"), then
        // systemd + the daemon up to the restart entry.
        let main_exit = journal(sb, &["_PID=1", &unit], t_kill)
            .iter()
            .filter(|e| {
                e["MESSAGE"]
                    .as_str()
                    .is_some_and(|m| m.contains("Main process exited"))
            })
            .map(entry_ms)
            .fold(f64::NAN, f64::min);
        let died = journal(
            sb,
            &["PODMAN_EVENT=died", &format!("PODMAN_NAME={svc}")],
            t_kill,
        )
        .iter()
        .map(entry_ms)
        .fold(f64::NAN, f64::min);
        if died.is_finite() {
            k.to_died.push(died - t_kill);
            k.before_died.push(died - t_restart);
            if main_exit.is_finite() {
                k.to_main_exit.push(main_exit - died);
            }
        }
        if main_exit.is_finite() {
            k.after_main_exit.push(t_restart - main_exit);
        }
        let r = t_restart - t_kill;
        k.total.push(r);
        if sd_done.is_finite() {
            k.systemd_part.push(sd_done - t_kill);
            k.daemon_part.push(t_restart - sd_done);
        }
        if let Some(x) = entry["REACTION_MS"]
            .as_str()
            .and_then(|s| s.parse::<f64>().ok())
        {
            k.own.push(x);
        }
        eprintln!("mcbench: reaction{label} kill {i} {svc}: restart entry after {r:.0} ms (systemd done at {:.0} ms)", sd_done - t_kill);
        k.raw.push(json!({"kind": "kill", "service": svc, "kill_ms": t_kill, "restart_ms": t_restart, "systemd_done_ms": sd_done, "podman_died_ms": died, "main_exited_ms": main_exit, "entry": entry}));
        wait_ready(sb, svc, t_kill, Duration::from_secs(60))?;
        // The way back: the unit's next instance (systemd runs ExecStart)
        // and the stand-in's new process.
        let next_start =
            sandbox::unit_times_rt(sb, &[format!("{svc}.service")], "InactiveExitTimestamp")
                .into_values()
                .next()
                .flatten()
                .unwrap_or(f64::NAN);
        if next_start.is_finite() && next_start >= t_restart - 1.0 {
            k.to_next_start.push(next_start - t_restart);
        }
        let dir = metacircular_service(svc)
            .map(|x| x.standin_dir)
            .context("service")?;
        if let Some(started) =
            std::fs::read_to_string(sb.host_path(&format!("{dir}/.standin/started")))
                .ok()
                .and_then(|s| s.trim().parse::<f64>().ok())
                .filter(|&t| t > t_kill)
        {
            k.to_running.push(started - t_kill);
        }
        std::thread::sleep(Duration::from_millis(3500));
    }
    Ok(k)
}

/// Item 2.
pub(crate) fn reaction(ctx: &mut Ctx) -> Result<Vec<Row>> {
    let trials = ctx.trials.unwrap_or(if ctx.quick { 4 } else { 20 });
    let (sb, config) = platform_with_daemon(ctx, "bench-reaction", "1s")?;
    wait_watching(&sb, Duration::from_secs(60))?;
    std::thread::sleep(Duration::from_secs(2));
    let Kills {
        total,
        systemd_part,
        daemon_part,
        own,
        to_died,
        to_main_exit,
        after_main_exit,
        to_next_start,
        to_running,
        mut raw,
        ..
    } = kill_trials(&sb, trials, "", Restarter::Daemon)?;
    // (b) failing check: HTTP 500 from mcq, threshold 3 × interval 1 s.
    let thr_int_ms = 3.0 * 1000.0;
    let mut fail_lat = Vec::new();
    let fault = sb.host_path("/srv/mcq/fault");
    for i in 0..trials.min(if ctx.quick { 2 } else { 20 }) {
        let t_fault = now_ms();
        std::fs::write(&fault, "500")?;
        let entry = wait_restart(&sb, "mcq", t_fault, Duration::from_secs(30));
        let _ = std::fs::remove_file(&fault);
        let entry = entry?;
        let l = entry_ms(&entry) - t_fault;
        eprintln!("mcbench: reaction fault {i} mcq: restart entry after {l:.0} ms");
        fail_lat.push(l);
        raw.push(json!({"kind": "check", "service": "mcq", "fault_ms": t_fault, "entry": entry}));
        wait_ready(&sb, "mcq", t_fault, Duration::from_secs(60))?;
        std::thread::sleep(Duration::from_millis(3500));
    }
    // (c) the same kills with `[watch] foreign = "take-over"`: the daemon
    // acts on the container's scope going away, not on the unit's death
    // (the `[watch]` table is the configuration's last: a line appended is
    // in it), after a reload.
    let mut text = std::fs::read_to_string(sb.host_path(&config))?;
    text.push_str("foreign = \"take-over\"\n");
    sb.write_file(&config, text.as_bytes())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    run_ok(&sb, &["systemctl", "kill", "-s", "HUP", DAEMON_UNIT])?;
    wait_journal(
        &sb,
        DAEMON_UNIT,
        "configuration reloaded",
        Duration::from_secs(30),
    )?;
    wait_watching(&sb, Duration::from_secs(60))?;
    std::thread::sleep(Duration::from_secs(2));
    let taken = kill_trials(&sb, trials, " take-over", Restarter::Daemon)?;
    raw.extend(taken.raw.iter().cloned());
    // (d) monit restarting the same units on the same kills (the daemon
    // stopped): issue 15 item 7.
    run_ok(&sb, &["systemctl", "stop", DAEMON_UNIT])?;
    let monit_kills = match monit_in(&sb) {
        Some(monit) => match start_monit(&sb, monit, "/srv/mcbench-monitrc-r", &monitrc_reaction()) {
            Ok(()) => {
                std::thread::sleep(Duration::from_secs(4));
                let k = kill_trials(&sb, trials, " monit", Restarter::Monit);
                let _ = sb.run(&["systemctl", "stop", MONIT_UNIT]);
                Ok(k?)
            }
            Err(e) => Err(e.to_string()),
        },
        None => Err("monit is not installed in the sandbox's root (apt-get install -y monit; the trixie base has none)".to_owned()),
    };
    if let Ok(k) = &monit_kills {
        raw.extend(k.raw.iter().cloned());
    }
    ctx.raw.insert("reaction".into(), Value::Array(raw));
    let max_of = |v: &[f64]| v.iter().cloned().fold(f64::NAN, f64::max);
    let tt = summarize(&taken.total);
    let t = summarize(&total);
    let f = summarize(&fail_lat);
    Ok(vec![
        Row::new("reaction", "container killed → restart issued (journal entry)", "≤ 100 ms (issue 15)")
            .summary(t, "ms")
            .pass(t.map(|t| t.median <= 100.0).unwrap_or(false))
            .ratio(format!("max {} ms", fmt_num(max_of(&total))))
            .note(format!("SIGKILL of the stand-in (host PID) by the harness → __REALTIME_TIMESTAMP of MESSAGE_ID={RESTART_MESSAGE_ID}; victims rotate over {};{}", VICTIMS.join(","), watch_table().replace('\n', " "))),
        Row::new("reaction", "  kill → podman's `died` event", "")
            .summary(summarize(&to_died), "ms"),
        Row::new("reaction", "  `died` → systemd: main process (conmon) exited", "")
            .summary(summarize(&to_main_exit), "ms"),
        Row::new("reaction", "  main process exited → restart entry (systemd + daemon)", "")
            .summary(summarize(&after_main_exit), "ms"),
        Row::new("reaction", "  kill → systemd's last unit line before the restart", "")
            .summary(summarize(&systemd_part), "ms"),
        Row::new("reaction", "  that line → restart entry", "")
            .summary(summarize(&daemon_part), "ms"),
        Row::new("reaction", "  daemon's own REACTION_MS field", "")
            .summary(summarize(&own), "ms"),
        Row::new("reaction", "  restart entry → the unit's next instance starts (InactiveExitTimestamp)", "")
            .summary(summarize(&to_next_start), "ms")
            .note("the restart job (the ownership look is skipped when the look after the death found the name free < 1 s before), systemd's stop of the old instance"),
        Row::new("reaction", "  kill → the stand-in runs again (its .standin/started)", "")
            .summary(summarize(&to_running), "ms"),
        Row::new("reaction", "container killed → restart issued, `[watch] foreign = \"take-over\"`", "≤ 100 ms (issue 15)")
            .summary(tt, "ms")
            .pass(tt.map(|t| t.median <= 100.0).unwrap_or(false))
            .ratio(format!("max {} ms", fmt_num(max_of(&taken.total))))
            .note("the same kills after a reload with foreign = \"take-over\" in [watch]: the daemon acts when the container's libpod-<id>.scope is unloaded (UnitRemoved), before podman's cleanup and conmon's exit; the restart job queues behind systemd's stop of the unit"),
        Row::new("reaction", "    take-over: kill → podman's `died` event", "")
            .summary(summarize(&taken.to_died), "ms"),
        Row::new("reaction", "    take-over: restart entry before podman's `died` event by", "")
            .summary(summarize(&taken.before_died), "ms")
            .note("`died` − restart entry, per trial"),
        Row::new("reaction", "    take-over: kill → the stand-in runs again", "")
            .summary(summarize(&taken.to_running), "ms"),
        match &monit_kills {
            Ok(k) => {
                let m = summarize(&k.total);
                let ratio = match (m, t, tt) {
                    (Some(m), Some(t), Some(tt)) if t.median > 0.0 && tt.median > 0.0 => format!(
                        "{}× the daemon's, {}× take-over's",
                        fmt_num(m.median / t.median),
                        fmt_num(m.median / tt.median)
                    ),
                    _ => String::new(),
                };
                Row::new("reaction", "monit: container killed → restart exec'd", "")
                    .summary(m, "ms")
                    .ratio(ratio)
                    .note("the same kills, the daemon stopped: Debian's monit -I, set daemon 1 (its shortest cycle), one `port N type tcp` test per victim, `then exec \"/bin/systemctl restart UNIT\"`; to its `'SERVICE' exec` log line (syslog → journal)")
            }
            Err(why) => Row::skipped("reaction", "monit: container killed → restart exec'd", "", why),
        },
        Row::new("reaction", "check failing (HTTP 500) → restart issued", "≤ threshold × interval + 100 ms = 3100 ms")
            .summary(f, "ms")
            .pass(f.map(|f| f.max <= thr_int_ms + 100.0).unwrap_or(false))
            .ratio(format!("max {} ms", fmt_num(max_of(&fail_lat))))
            .note("mcq's https check, interval 1 s, failure_threshold 3; from writing the stand-in's fault file (it polls it every 100 ms) to the restart entry; pass = max within target"),
    ])
}

/// Σ VmRSS (KiB) of the processes in host cgroup dir `cg`, and its usage_usec.
fn cgroup_sample(cg: &std::path::Path) -> (u64, u64) {
    let mut rss = 0;
    if let Ok(procs) = std::fs::read_to_string(cg.join("cgroup.procs")) {
        for p in procs.lines() {
            if let Ok(st) = std::fs::read_to_string(format!("/proc/{p}/status")) {
                rss += st
                    .lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|k| k.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    let usage = std::fs::read_to_string(cg.join("cpu.stat"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("usage_usec"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|x| x.parse().ok())
        })
        .unwrap_or(0);
    (rss, usage)
}

/// The host cgroup directory of `unit` in the sandbox: the v2 line of
/// /proc/<host pid of its MainPID>/cgroup.
fn unit_cgroup(sb: &Sandbox, unit: &str) -> Result<PathBuf> {
    let main: u32 =
        String::from_utf8_lossy(&sb.run(&["systemctl", "show", "-P", "MainPID", unit]).stdout)
            .trim()
            .parse()
            .unwrap_or(0);
    if main == 0 {
        bail!("{unit} has no main process");
    }
    let pid = host_pid(sb, main)?;
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    let rel = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .context("no cgroup v2 line")?;
    // Hybrid hosts mount the v2 hierarchy at /sys/fs/cgroup/unified.
    let base = if std::path::Path::new("/sys/fs/cgroup/unified/cgroup.procs").exists() {
        "/sys/fs/cgroup/unified"
    } else {
        "/sys/fs/cgroup"
    };
    Ok(PathBuf::from(base).join(rel.trim().trim_start_matches('/')))
}

/// What a process's RSS is made of (KiB), from /proc/PID/smaps: the pages of
/// its own executable's mappings, of other files (libraries, locale), and
/// anonymous ones (heap, stacks, relocated data); the three add up to Rss.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct RssSplit {
    binary: u64,
    other_files: u64,
    anonymous: u64,
}

impl std::ops::AddAssign for RssSplit {
    fn add_assign(&mut self, o: Self) {
        self.binary += o.binary;
        self.other_files += o.other_files;
        self.anonymous += o.anonymous;
    }
}

/// [`RssSplit`] of an smaps text; `exe_inode` identifies the executable's
/// mappings (paths are not comparable across the sandbox's mount namespace).
fn rss_split(smaps: &str, exe_inode: Option<u64>) -> RssSplit {
    let mut split = RssSplit::default();
    // (is the executable, has a file, Rss, Anonymous) of the current mapping.
    let mut cur: Option<(bool, bool, u64, u64)> = None;
    let mut flush = |cur: &mut Option<(bool, bool, u64, u64)>| {
        if let Some((exe, file, rss, anon)) = cur.take() {
            split.anonymous += anon;
            let f = rss.saturating_sub(anon);
            if exe {
                split.binary += f;
            } else if file {
                split.other_files += f;
            } else {
                // Non-file mappings ([heap], [stack], anon) whose pages are
                // not counted as Anonymous (e.g. the vdso): anonymous here.
                split.anonymous += f;
            }
        }
    };
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or("");
        let kib = || {
            line.split_whitespace()
                .nth(1)
                .and_then(|k| k.parse::<u64>().ok())
                .unwrap_or(0)
        };
        if first == "Rss:" {
            if let Some(c) = cur.as_mut() {
                c.2 = kib();
            }
        } else if first == "Anonymous:" {
            if let Some(c) = cur.as_mut() {
                c.3 = kib();
            }
        } else if first.contains('-') && !first.ends_with(':') {
            // A mapping header: start-end perms offset dev inode [path].
            flush(&mut cur);
            let inode = words
                .nth(3)
                .and_then(|i| i.parse::<u64>().ok())
                .unwrap_or(0);
            let exe = inode != 0 && Some(inode) == exe_inode;
            cur = Some((exe, inode != 0, 0, 0));
        }
    }
    flush(&mut cur);
    split
}

/// One process's mappings: start address → (size KiB, what, anonymous KiB).
type AnonMaps = BTreeMap<u64, (u64, String, u64)>;
/// Per process id: (thread count, [`AnonMaps`]).
type AnonPicture = BTreeMap<String, (u64, AnonMaps)>;

/// Anonymous KiB per mapping of one smaps text, keyed by the mapping's start
/// address: (size KiB, what it is: a path, `[heap]`, or empty, anonymous KiB).
fn anon_maps(smaps: &str) -> AnonMaps {
    let mut maps = AnonMaps::new();
    let mut cur: Option<u64> = None;
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or("");
        if first == "Size:" || first == "Anonymous:" {
            let kib = words
                .next()
                .and_then(|k| k.parse::<u64>().ok())
                .unwrap_or(0);
            if let Some(e) = cur.and_then(|a| maps.get_mut(&a)) {
                if first == "Size:" {
                    e.0 = kib;
                } else {
                    e.2 = kib;
                }
            }
        } else if first.contains('-') && !first.ends_with(':') {
            let start = first
                .split('-')
                .next()
                .and_then(|a| u64::from_str_radix(a, 16).ok());
            let name = words.nth(4).unwrap_or("").to_owned();
            cur = start;
            if let Some(a) = start {
                maps.insert(a, (0, name, 0));
            }
        }
    }
    maps
}

/// The anonymous-memory picture of `cg`'s processes: per process, its thread
/// count and anonymous KiB per mapping.
fn cgroup_anon(cg: &std::path::Path) -> AnonPicture {
    let mut out = BTreeMap::new();
    let procs = std::fs::read_to_string(cg.join("cgroup.procs")).unwrap_or_default();
    for p in procs.lines() {
        let threads = std::fs::read_to_string(format!("/proc/{p}/status"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("Threads:"))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .unwrap_or(0);
        let maps = std::fs::read_to_string(format!("/proc/{p}/smaps"))
            .map(|t| anon_maps(&t))
            .unwrap_or_default();
        out.insert(p.to_owned(), (threads, maps));
    }
    out
}

/// Logs which mappings' anonymous pages changed between two [`cgroup_anon`]
/// pictures (the heap, an allocator arena, a thread stack...).
fn log_anon_diff(unit: &str, first: &AnonPicture, last: &AnonPicture) {
    for (pid, (threads, maps)) in last {
        let Some((t0, maps0)) = first.get(pid) else {
            eprintln!("mcbench: {unit} pid {pid}: not there at the window's start");
            continue;
        };
        eprintln!("mcbench: {unit} pid {pid}: threads {t0} → {threads}; anonymous mappings that changed (start, size KiB, what, KiB then → now):");
        let mut keys: Vec<&u64> = maps.keys().chain(maps0.keys()).collect();
        keys.sort();
        keys.dedup();
        for a in keys {
            let (s0, n0, k0) = maps0.get(a).cloned().unwrap_or((0, String::new(), 0));
            let (s1, n1, k1) = maps.get(a).cloned().unwrap_or((0, String::new(), 0));
            if k0 != k1 || s0 != s1 {
                let what = if n1.is_empty() { n0 } else { n1 };
                eprintln!("mcbench:   {a:x} size {s0} → {s1} {what}: {k0} → {k1} KiB");
            }
        }
    }
}

/// Σ [`RssSplit`] of the processes in host cgroup dir `cg`.
fn cgroup_split(cg: &std::path::Path) -> RssSplit {
    use std::os::unix::fs::MetadataExt;
    let mut total = RssSplit::default();
    let procs = std::fs::read_to_string(cg.join("cgroup.procs")).unwrap_or_default();
    for p in procs.lines() {
        if let Ok(text) = std::fs::read_to_string(format!("/proc/{p}/smaps")) {
            let ino = std::fs::metadata(format!("/proc/{p}/exe"))
                .ok()
                .map(|m| m.ino());
            total += rss_split(&text, ino);
        }
    }
    total
}

/// What [`measure`] saw.
struct Measured {
    /// RSS samples, MiB.
    rss: Vec<f64>,
    /// CPU % of a core over the window.
    cpu: f64,
    /// The split at the start and at the end of the window.
    first: RssSplit,
    last: RssSplit,
}

/// Samples `unit`'s cgroup every second for `secs`; the RSS split once a
/// minute too (logged), so a long window shows how the anonymous part grows.
fn measure(sb: &Sandbox, unit: &str, secs: u64) -> Result<Measured> {
    let cg = unit_cgroup(sb, unit)?;
    if !cg.join("cgroup.procs").exists() {
        let status = String::from_utf8_lossy(
            &sb.run(&["systemctl", "status", "--no-pager", "-n", "0", unit])
                .stdout,
        )
        .into_owned();
        let log = journal_tail(sb, unit, 15);
        bail!(
            "no cgroup {} for {unit} (not running?)\n{status}\n{log}",
            cg.display()
        );
    }
    let (_, u0) = cgroup_sample(&cg);
    let first = cgroup_split(&cg);
    let anon0 = cgroup_anon(&cg);
    let t = Instant::now();
    let mut rss = Vec::new();
    while t.elapsed().as_secs() < secs {
        std::thread::sleep(Duration::from_secs(1));
        rss.push(cgroup_sample(&cg).0 as f64 / 1024.0);
        if secs > 120 && rss.len() % 60 == 0 {
            let s = cgroup_split(&cg);
            eprintln!(
                "mcbench: {unit} at {} s: binary {} KiB, other files {} KiB, anonymous {} KiB",
                rss.len(),
                s.binary,
                s.other_files,
                s.anonymous
            );
        }
    }
    let (_, u1) = cgroup_sample(&cg);
    let last = cgroup_split(&cg);
    log_anon_diff(unit, &anon0, &cgroup_anon(&cg));
    let cpu = 100.0 * (u1.saturating_sub(u0)) as f64 / 1e6 / t.elapsed().as_secs_f64();
    // What the RSS is made of (anonymous = heap and stacks; the rest is
    // file-backed, mostly the mapped binary and libraries), for the log.
    let procs = std::fs::read_to_string(cg.join("cgroup.procs")).unwrap_or_default();
    for p in procs.lines() {
        if let Ok(text) = std::fs::read_to_string(format!("/proc/{p}/smaps_rollup")) {
            let field = |name: &str| {
                text.lines()
                    .find(|l| l.starts_with(name))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .unwrap_or("?")
                    .to_owned()
            };
            let comm = std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
            eprintln!(
                "mcbench: {unit} pid {p} ({}): Rss {} KiB, Anonymous {} KiB, Shared_Clean {} KiB, Private_Clean {} KiB",
                comm.trim(),
                field("Rss:"),
                field("Anonymous:"),
                field("Shared_Clean:"),
                field("Private_Clean:")
            );
        }
    }
    eprintln!(
        "mcbench: {unit}: binary {} KiB, other files {} KiB, anonymous {} KiB (start of the window: {} / {} / {})",
        last.binary, last.other_files, last.anonymous, first.binary, first.other_files, first.anonymous
    );
    Ok(Measured {
        rss,
        cpu,
        first,
        last,
    })
}

/// A monitrc with checks equivalent to the example's (5 s cycle).
fn monitrc() -> String {
    let mut s = String::from("set daemon 5\nset logfile syslog\nset idfile /run/mcbench-monit.id\nset statefile /run/mcbench-monit.state\n\n");
    let host = |name: &str, addr: &str, tests: &[String]| {
        let mut t = format!("check host {name} with address {addr}\n");
        for x in tests {
            t.push_str(&format!("  if failed {x} then alert\n"));
        }
        t.push('\n');
        t
    };
    let https = |port: u16, path: &str| format!("port {port} protocol https request \"{path}\"");
    let tcp = |port: u16| format!("port {port} type tcp");
    // monit's DNS protocol test asks a fixed query the stand-in answers with no records
    // (a failure): plain udp/tcp port tests instead.
    s += &host(
        "mcns",
        "192.168.88.181",
        &["port 53 type udp".into(), "port 53 type tcp".into()],
    );
    s += &host("mcns-api", "127.0.0.1", &[https(38443, "/v1/health")]);
    s += &host(
        "mc-proxy",
        "127.0.0.1",
        &[format!("{} status = 404", https(443, "/"))],
    );
    s += &host("mcr-api", "127.0.0.1", &[https(28443, "/v2/"), tcp(29443)]);
    s += &host("mcr-web", "127.0.0.1", &[tcp(28080)]);
    s += &host(
        "metacrypt-api",
        "127.0.0.1",
        &[https(18443, "/v1/health"), tcp(19443)],
    );
    s += &host("metacrypt-web", "127.0.0.1", &[tcp(18080)]);
    s += &host("mcp-master", "127.0.0.1", &["port 9555 type tcpssl".into()]);
    s += &host(
        "mcq",
        "127.0.0.1",
        &[format!(
            "{} content = \"status\"",
            https(48080, "/v1/health")
        )],
    );
    s += &host("mcdoc", "127.0.0.1", &[tcp(38080)]);
    s += &host("mcat", "127.0.0.1", &[tcp(48116)]);
    s += &host("kls", "127.0.0.1", &[tcp(58080)]);
    s += &host("sgardd", "127.0.0.1", &[tcp(19473)]);
    s
}

/// Item 3.
pub(crate) fn footprint(ctx: &mut Ctx) -> Result<Vec<Row>> {
    let secs = if ctx.quick { 15 } else { 60 };
    // The daemon's window: MCBENCH_SOAK_SECS (e.g. 3600) for a soak, whose
    // anonymous-RSS growth is the figure to watch; monit keeps `secs`.
    let d_secs = std::env::var("MCBENCH_SOAK_SECS")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(secs);
    let (sb, _config) = platform_with_daemon(ctx, "bench-footprint", "5s")?;
    wait_watching(&sb, Duration::from_secs(60))?;
    std::thread::sleep(Duration::from_secs(5));
    let dm = measure(&sb, DAEMON_UNIT, d_secs)?;
    let (d_rss, d_cpu) = (&dm.rss, dm.cpu);
    let _ = sb.run(&["systemctl", "stop", DAEMON_UNIT]);
    // monit, same endpoints, same window.
    let monit = monit_in(&sb);
    let mut monit_res: Result<Measured> = Err(anyhow::anyhow!(
        "monit not installed (apt-get install -y monit)"
    ));
    if let Some(monit) = monit {
        match start_monit(&sb, monit, "/srv/mcbench-monitrc", &monitrc()) {
            Err(e) => monit_res = Err(e),
            Ok(()) => {
                std::thread::sleep(Duration::from_secs(5));
                monit_res = measure(&sb, MONIT_UNIT, secs);
                let log = journal_tail(&sb, MONIT_UNIT, 20);
                ctx.raw.insert("monit-log".into(), json!(log));
            }
        }
    }
    let d = summarize(d_rss);
    let d_max = d_rss.iter().cloned().fold(0.0, f64::max);
    let mut rows = vec![
        Row::new("footprint", "daemon RSS (12 services, 5 s interval)", "≤ 15 MiB")
            .summary(d, "MiB")
            .pass(d_max <= 15.0 && d.is_some())
            .note(format!("Σ VmRSS of the daemon unit's cgroup processes, sampled every 1 s for {d_secs} s (max {} MiB); rootful sandbox, mcrecover daemon as a transient Type=notify service, restart_owner = mcrecover", fmt_num(d_max))),
        {
            let mut r = Row::new("footprint", "  of which the mapped binary", "");
            r.measured = format!("{} MiB", fmt_num(dm.last.binary as f64 / 1024.0));
            r.spread = "end of the window".into();
            r.note = format!(
                "/proc/PID/smaps at the end of the window: file-backed Rss of the executable's mappings; other files (libraries) {} MiB",
                fmt_num(dm.last.other_files as f64 / 1024.0)
            );
            r
        },
        {
            let mut r = Row::new("footprint", "  of which anonymous (heap, stacks)", "");
            r.measured = format!("{} MiB", fmt_num(dm.last.anonymous as f64 / 1024.0));
            r.spread = "end of the window".into();
            r.note = "/proc/PID/smaps Anonymous (+ the Rss of mappings without a file)".into();
            r
        },
        {
            let growth = dm.last.anonymous as f64 - dm.first.anonymous as f64;
            let mut r = Row::new("footprint", "daemon anonymous RSS growth over the window", "");
            r.measured = format!("{} KiB", fmt_num(growth));
            r.spread = format!("{d_secs} s window");
            r.note = format!(
                "anonymous {} → {} KiB from the window's start to its end (MCBENCH_SOAK_SECS sets the window, e.g. 3600)",
                dm.first.anonymous, dm.last.anonymous
            );
            r
        },
        {
            let mut r = Row::new("footprint", "daemon CPU", "≤ 0.5 % of a core");
            r.measured = format!("{} %", fmt_num(d_cpu));
            r.spread = format!("{d_secs} s window");
            r.note = "cgroup cpu.stat usage_usec delta / wall".into();
            r.pass(d_cpu <= 0.5)
        },
    ];
    match monit_res {
        Ok(Measured {
            rss: m_rss,
            cpu: m_cpu,
            ..
        }) => {
            let m = summarize(&m_rss);
            let ratio = match (d, m) {
                (Some(d), Some(m)) if m.median > 0.0 => d.median / m.median,
                _ => f64::NAN,
            };
            rows.push(Row::new("footprint", "monit RSS (same endpoints, 5 s cycle)", "").summary(m, "MiB").note("Debian monit -I with a generated monitrc: host checks (udp+tcp port 53, https GET + path (+ status/content), tcp, tcpssl for gRPC-TLS); no certificate verification; monit log in --raw"));
            rows.push({
                let mut r = Row::new("footprint", "monit CPU", "");
                r.measured = format!("{} %", fmt_num(m_cpu));
                r.spread = format!("{secs} s window");
                r
            });
            rows.push({
                let mut r = Row::new("footprint", "daemon RSS ÷ monit RSS", "≤ 1× (issue 15)");
                r.measured = format!("{}×", fmt_num(ratio));
                r.pass(ratio <= 1.0)
            });
        }
        Err(e) => rows.push(Row::skipped(
            "footprint",
            "monit RSS / CPU",
            "",
            &format!("{e:#}"),
        )),
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_daemon_runs_with_the_shipped_units_environment() {
        assert!(super::daemon_env()
            .iter()
            .any(|e| e == "Environment=MALLOC_ARENA_MAX=1"));
    }

    #[test]
    fn splits_rss_by_mapping() {
        let smaps = "\
55d0c0000000-55d0c0100000 r--p 00000000 00:2f 4242 /usr/bin/mcrecover
Size:               1024 kB
Rss:                 800 kB
Anonymous:             0 kB
55d0c0100000-55d0c0200000 rw-p 00100000 00:2f 4242 /usr/bin/mcrecover
Rss:                  40 kB
Anonymous:            30 kB
55d0c1000000-55d0c1100000 rw-p 00000000 00:00 0 [heap]
Rss:                 500 kB
Anonymous:           500 kB
7f0000000000-7f0000100000 r-xp 00000000 fe:01 77 /usr/lib/x86_64-linux-gnu/libc.so.6
Rss:                 900 kB
Anonymous:             0 kB
7ffc00000000-7ffc00002000 r-xp 00000000 00:00 0 [vdso]
Rss:                   4 kB
Anonymous:             0 kB
";
        let maps = super::anon_maps(smaps);
        assert_eq!(maps.len(), 5);
        assert_eq!(
            maps.get(&0x55d0c1000000),
            Some(&(0, "[heap]".to_owned(), 500))
        );
        assert_eq!(
            maps.get(&0x55d0c0000000),
            Some(&(1024, "/usr/bin/mcrecover".to_owned(), 0))
        );
        let s = super::rss_split(smaps, Some(4242));
        assert_eq!(
            s,
            super::RssSplit {
                binary: 810,
                other_files: 900,
                anonymous: 534
            }
        );
    }

    #[test]
    fn drops_one_table() {
        let t = "[platform]\na = 1\n\n[watch]\nb = 2\n# c\n[[stages]]\nd = 3\n";
        assert_eq!(
            super::without_table(t, "[watch]"),
            "[platform]\na = 1\n\n[[stages]]\nd = 3\n"
        );
    }
}
