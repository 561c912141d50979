//! End-to-end tests of the one reconciliation engine (issue 11), in a REAL
//! sandboxed systemd with real podman and the stand-in containers of the
//! example platform (rootful, service backend):
//! 1. a container killed while its own stage is gated is restarted at once,
//!    by the daemon and by `mcrecover recover`; the stage becomes healthy
//!    and the later stages start;
//! 2. a container of an earlier, healthy stage killed while a later stage is
//!    gated is restarted too;
//! 3. a failed `block` stage blocks the ones after it, alerts once, and the
//!    ramp resumes by itself once it heals (no `Recover()`);
//! 4. a daemon whose sandbox hides podman's image store (the shipped unit's
//!    `PrivateTmp=` did exactly that for storage under /var/tmp) still
//!    brings the platform up.
//!
//! Figures (restart latency) are printed, and asserted only loosely: they
//! are measured by `scripts/bench`, not here.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mcrecover_testbed::{e2e_gate, workspace_root, ImageSet, Sandbox, SandboxOptions};
use serde_json::Value;

const EXAMPLE: &str = include_str!("../examples/metacircular.toml");
const DAEMON: &str = "mcrecover.service";
const CONFIG: &str = "/srv/engine-test.toml";
/// Restart issued (priority 5).
const RESTART_ID: &str = "5e8a0b3c2d1f4e6a9b7c8d0e1f2a3b4c";
/// A blocking episode (priority 2).
const BLOCKED_ID: &str = "3b7e2c9a4d1f4b8e9a0c6d2e5f1a7b30";

fn ok<T>(sb: &Sandbox, r: Result<T, mcrecover_testbed::TestbedError>) -> T {
    r.unwrap_or_else(|e| panic!("{e}\njournal (tail):\n{}", sb.journal_tail(300)))
}

/// The rootful example without MCIAS (unreachable from a sandbox), 1 s
/// checks, short backoffs, with `edit` applied.
fn config_text(edit: impl FnOnce(String) -> String) -> String {
    let text = EXAMPLE.replacen("mode = \"rootless\"", "mode = \"rootful\"", 1);
    let text = text.replacen(
        "interval = \"10s\"\ntimeout = \"2s\"",
        "interval = \"1s\"\ntimeout = \"2s\"",
        1,
    );
    let cut = text
        .find("# MCIAS runs on svc")
        .expect("the example's mcias section moved");
    let mut text = text[..cut].to_string();
    if let Some(start) = text.find("\n[watch]\n") {
        let body = start + "\n[watch]\n".len();
        let end = text[body..].find("\n[").map_or(text.len(), |i| body + i);
        text = format!("{}{}", &text[..start], &text[end..]);
    }
    let text = edit(text);
    format!(
        "{text}\n[watch]\nbackoff_initial = \"500ms\"\nbackoff_max = \"4s\"\n\
         escalate_after = 8\nescalate_window = \"5m\"\n"
    )
}

/// Sets the timeout and failure policy of stage `name`.
fn stage(text: &str, name: &str, timeout: &str, policy: &str) -> String {
    let anchor = format!("name = \"{name}\"\n");
    let at = text.find(&anchor).expect("stage not found") + anchor.len();
    let rest = &text[at..];
    let t0 = rest.find("timeout = \"").unwrap();
    let t1 = t0 + rest[t0..].find('\n').unwrap();
    let p0 = rest.find("on_failure = \"").unwrap();
    let p1 = p0 + rest[p0..].find('\n').unwrap();
    let mut rest = rest.to_string();
    rest.replace_range(p0..p1, &format!("on_failure = \"{policy}\""));
    rest.replace_range(t0..t1, &format!("timeout = \"{timeout}\""));
    format!("{}{rest}", &text[..at])
}

fn boot(name: &str) -> Option<Sandbox> {
    let unit = workspace_root().join("units/mcrecover.service");
    if !e2e_gate(name, &[]) {
        return None;
    }
    let mut opts = SandboxOptions::metacircular(name);
    opts.rootless_user = None;
    opts.quadlet_generator = None;
    let sb = Sandbox::boot(opts).unwrap();
    ok(
        &sb,
        sb.install_bin(Path::new(env!("CARGO_BIN_EXE_mcrecover")), "mcrecover"),
    );
    ok(
        &sb,
        sb.load_images(&ImageSet::metacircular().unwrap(), None),
    );
    ok(&sb, sb.private_var_lib(&["mcrecover"]));
    ok(
        &sb,
        sb.copy_in(&unit, "/run/systemd/system/mcrecover.service", 0o644, None),
    );
    ok(
        &sb,
        sb.install_dbus_policy(
            &workspace_root().join("units/dbus/net.metacircular.Recovery1.conf"),
        ),
    );
    Some(sb)
}

/// Starts the shipped daemon unit (no block) with `config` and `extra`
/// drop-in lines.
fn start_daemon(sb: &Sandbox, config: &str, extra: &str) {
    ok(sb, sb.write_file(CONFIG, config.as_bytes()));
    let dropin = format!(
        "[Service]\nExecStart=\nExecStart=/usr/bin/mcrecover daemon --config {CONFIG} \
         --backend service --unit-dir /run/systemd/system\n\
         ReadWritePaths=/run/systemd/system\n{extra}"
    );
    ok(
        sb,
        sb.write_file(
            "/run/systemd/system/mcrecover.service.d/50-testbed.conf",
            dropin.as_bytes(),
        ),
    );
    ok(sb, sb.run_ok(&["systemctl", "daemon-reload"]).map(|_| ()));
    let out = sb.run(&["systemctl", "start", "--no-block", DAEMON]);
    assert!(out.status.success(), "{out:?}");
}

fn prop(sb: &Sandbox, unit: &str, name: &str) -> String {
    let out = sb.run(&["systemctl", "show", "-P", name, unit]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn status(sb: &Sandbox) -> Option<Value> {
    let out = sb.run(&["/usr/bin/mcrecover", "--config", CONFIG, "status", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    (v.get("phase").is_some() && v["services"].is_array()).then_some(v)
}

fn state_of(st: &Value, name: &str) -> String {
    st["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .map(|s| s["state"].as_str().unwrap_or("").to_string())
        .unwrap_or_default()
}

fn all_healthy(st: &Value) -> bool {
    st["services"]
        .as_array()
        .is_some_and(|a| a.iter().all(|s| s["state"] == "healthy"))
}

fn wait(sb: &Sandbox, what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {secs} s waiting for {what}; status: {:#}\njournal:\n{}",
            status(sb).unwrap_or(Value::Null),
            sb.journal_tail(200)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn now_usec() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros()
}

fn usec(e: &Value) -> u128 {
    e["__REALTIME_TIMESTAMP"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// The daemon's restart entries for `unit` since `since` (µs).
fn restarts_of(sb: &Sandbox, unit: &str, since: u128) -> Vec<Value> {
    sb.journal_json(&[&format!("MESSAGE_ID={RESTART_ID}")])
        .into_iter()
        .filter(|e| e["UNIT"] == unit && usec(e) >= since)
        .collect()
}

/// Kills `svc`'s container's main process with SIGKILL; returns when (µs).
fn kill_container(sb: &Sandbox, svc: &str) -> u128 {
    let pid = ok(
        sb,
        sb.run_ok(&["podman", "inspect", "--format", "{{.State.Pid}}", svc]),
    );
    let pid = pid.trim().to_string();
    assert!(
        pid.parse::<u32>().is_ok_and(|p| p > 0),
        "{svc}: pid {pid:?}"
    );
    let at = now_usec();
    ok(sb, sb.run_ok(&["kill", "-KILL", &pid]).map(|_| ()));
    eprintln!("killed {svc}'s main process {pid}");
    at
}

/// The unit's new run began (InactiveExitTimestamp moved past `before`).
fn restarted(sb: &Sandbox, unit: &str, before: &str) -> bool {
    let now = prop(sb, unit, "InactiveExitTimestampMonotonic");
    now != before && now != "0" && prop(sb, unit, "ActiveState") == "active"
}

/// `mcp-master` (stage management) binds nothing for `ms`: its stage is
/// gated that long.
fn slow_master(sb: &Sandbox, ms: u64) {
    ok(
        sb,
        sb.write_file("/srv/mcp-master/ready-delay-ms", ms.to_string().as_bytes()),
    );
}

#[test]
fn daemon_restarts_containers_killed_while_a_stage_is_gated() {
    let Some(sb) = boot("engine-kill-gated-daemon") else {
        return;
    };
    slow_master(&sb, 8_000);
    start_daemon(&sb, &config_text(|t| t), "");
    // Stage management is gated: mcp-master's container runs, binds nothing.
    wait(&sb, "mcp-master running, its stage gated", 120, || {
        prop(&sb, "mcp-master.service", "ActiveState") == "active"
            && status(&sb).is_some_and(|st| state_of(&st, "mcp-master") == "starting")
    });
    assert_eq!(
        prop(&sb, "mcq.service", "InactiveExitTimestampMonotonic"),
        "0",
        "stage services started before management was healthy"
    );
    // 1: its own stage's service dies while gated.
    let before = prop(&sb, "mcp-master.service", "InactiveExitTimestampMonotonic");
    let killed = kill_container(&sb, "mcp-master");
    wait(&sb, "the daemon's restart of mcp-master", 30, || {
        !restarts_of(&sb, "mcp-master.service", killed).is_empty()
    });
    let e = restarts_of(&sb, "mcp-master.service", killed)[0].clone();
    eprintln!(
        "mcp-master: kill -> restart issued {} ms (REACTION_MS {})",
        (usec(&e) - killed) / 1000,
        e["REACTION_MS"]
    );
    assert!(
        usec(&e) - killed < 10_000_000,
        "restart issued {} ms after the kill (the old engine waited for the stage timeout)",
        (usec(&e) - killed) / 1000
    );
    wait(&sb, "mcp-master's new run", 30, || {
        restarted(&sb, "mcp-master.service", &before)
    });
    // 2: an earlier, healthy stage's service dies while management is gated.
    let mcns_before = prop(&sb, "mcns.service", "InactiveExitTimestampMonotonic");
    let killed_mcns = kill_container(&sb, "mcns");
    wait(&sb, "the daemon's restart of mcns", 30, || {
        !restarts_of(&sb, "mcns.service", killed_mcns).is_empty()
    });
    wait(&sb, "mcns's new run", 30, || {
        restarted(&sb, "mcns.service", &mcns_before)
    });
    // The stage becomes healthy and the later stages start.
    wait(&sb, "all healthy", 120, || {
        status(&sb).is_some_and(|s| all_healthy(&s))
    });
    assert_eq!(prop(&sb, "mcq.service", "ActiveState"), "active");
    let st = status(&sb).unwrap();
    assert_eq!(st["phase"], "watching", "{st:#}");
}

#[test]
fn recover_restarts_a_container_killed_while_its_stage_is_gated() {
    let Some(sb) = boot("engine-kill-gated-recover") else {
        return;
    };
    slow_master(&sb, 8_000);
    let config = config_text(|t| stage(&t, "management", "60s", "block"));
    ok(&sb, sb.write_file(CONFIG, config.as_bytes()));
    let child = sb
        .command_root(&[
            "/usr/bin/mcrecover",
            "recover",
            "--config",
            CONFIG,
            "--backend",
            "service",
            "--unit-dir",
            "/run/systemd/system",
            "--json",
            "--quiet",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait(
        &sb,
        "mcp-master running while its stage is gated",
        120,
        || prop(&sb, "mcp-master.service", "ActiveState") == "active",
    );
    let before = prop(&sb, "mcp-master.service", "InactiveExitTimestampMonotonic");
    let killed = kill_container(&sb, "mcp-master");
    wait(&sb, "mcp-master restarted by recover", 30, || {
        restarted(&sb, "mcp-master.service", &before)
    });
    // When systemd began the new run (its "Starting" line), from the kill.
    let started = sb
        .journal_json(&["-u", "mcp-master.service"])
        .into_iter()
        .filter(|e| usec(e) >= killed)
        .find(|e| {
            e["MESSAGE"]
                .as_str()
                .is_some_and(|m| m.starts_with("Starting"))
        })
        .map_or(0, |e| usec(&e));
    eprintln!(
        "mcp-master: kill -> restart's new run starting {} ms (systemd's journal)",
        started.saturating_sub(killed) / 1000
    );
    let out = child.wait_with_output().unwrap();
    let rep: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON report ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(out.status.code(), Some(0), "{rep:#}");
    assert_eq!(rep["outcome"], "all_healthy", "{rep:#}");
    let master = rep["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "mcp-master")
        .unwrap();
    assert!(master["restarts"].as_u64() >= Some(1), "{master:#}");
    assert!(
        master["died"]
            .as_str()
            .is_some_and(|d| d.contains("mcp-master.service")),
        "the report names the unit's death: {master:#}"
    );
    for st in rep["stages"].as_array().unwrap() {
        assert_eq!(st["status"], "healthy", "{st:#}");
    }
}

#[test]
fn a_blocked_platform_resumes_by_itself_when_the_blocker_heals() {
    let Some(sb) = boot("engine-blocked-resumes") else {
        return;
    };
    // MCNS answers SERVFAIL / HTTP 500 from the start; its stage gives up
    // after 5 s and blocks the others.
    ok(&sb, sb.write_file("/srv/mcns/fault", b"500"));
    let config = config_text(|t| stage(&t, "foundation", "5s", "block"));
    start_daemon(&sb, &config, "");
    wait(&sb, "later stages blocked by foundation", 90, || {
        status(&sb).is_some_and(|st| state_of(&st, "mc-proxy") == "blocked")
    });
    wait(&sb, "the blocking alert", 30, || {
        !sb.journal_json(&[&format!("MESSAGE_ID={BLOCKED_ID}")])
            .is_empty()
    });
    let st = status(&sb).unwrap();
    assert!(
        st["status_line"]
            .as_str()
            .is_some_and(|l| l.contains("stage foundation failed")),
        "{st:#}"
    );
    assert_eq!(
        prop(&sb, "mc-proxy.service", "InactiveExitTimestampMonotonic"),
        "0"
    );
    // Healed: the ramp goes on without anyone calling Recover().
    let healed = now_usec();
    ok(&sb, sb.remove("/srv/mcns/fault"));
    wait(&sb, "the core stage started", 180, || {
        prop(&sb, "mc-proxy.service", "InactiveExitTimestampMonotonic") != "0"
    });
    let resumed = now_usec();
    wait(&sb, "the whole platform healthy", 180, || {
        status(&sb).is_some_and(|s| all_healthy(&s))
    });
    eprintln!(
        "blocker healed -> next stage started {:.2} s, -> all healthy {:.2} s",
        (resumed - healed) as f64 / 1e6,
        (now_usec() - healed) as f64 / 1e6
    );
    let alerts = sb.journal_json(&[&format!("MESSAGE_ID={BLOCKED_ID}")]);
    assert_eq!(
        alerts.len(),
        1,
        "one alert per blocking episode: {alerts:#?}"
    );
    assert_eq!(alerts[0]["PRIORITY"], "2", "{:#}", alerts[0]);
    let api_recover = sb
        .journal_json(&["-u", DAEMON])
        .into_iter()
        .filter(|e| {
            e["MESSAGE"]
                .as_str()
                .is_some_and(|m| m.contains("API command"))
        })
        .count();
    assert_eq!(api_recover, 0, "no operator action was needed");
}

#[test]
fn a_daemon_that_cannot_see_the_image_store_still_brings_the_platform_up() {
    let Some(sb) = boot("engine-hidden-storage") else {
        return;
    };
    // Inside the daemon's sandbox podman's image store is an empty
    // directory: podman there would say every image is missing.
    let graphroot: PathBuf = sb.state_dir().join("storage");
    assert!(graphroot.is_dir(), "{}", graphroot.display());
    start_daemon(
        &sb,
        &config_text(|t| t),
        &format!("TemporaryFileSystem={}\n", graphroot.display()),
    );
    wait(&sb, "the whole platform healthy", 240, || {
        status(&sb).is_some_and(|s| all_healthy(&s))
    });
    let failed: Vec<Value> = sb
        .journal_json(&["-u", DAEMON, "MESSAGE=preflight failed"])
        .into_iter()
        .collect();
    assert!(failed.is_empty(), "a wrong 'missing' verdict: {failed:#?}");
}

#[test]
fn test_configurations_are_valid() {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in [
        ("plain", config_text(|t| t)),
        (
            "management",
            config_text(|t| stage(&t, "management", "60s", "block")),
        ),
        (
            "foundation",
            config_text(|t| stage(&t, "foundation", "5s", "block")),
        ),
    ] {
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, &text).unwrap();
        if let Err(e) = mcrecover::config::load(&path) {
            panic!("{name}: {e}\n{text}");
        }
    }
}
