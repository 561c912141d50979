//! End-to-end tests of recovery drills (issue 16, part 3): `mcrecover
//! drill` against the daemon running as the SHIPPED unit in a real systemd
//! with real podman and the example's stand-in containers. A drill of stage
//! `core` stops its five containers (dependents first, nothing else), the
//! daemon's engine ramps the stage again, and the RTO per service and for
//! the stage is measured and recorded (journal, `last-drill.json`, status,
//! the timeline picture); a service over its `rto` makes the drill exit 1;
//! a drill is refused while something in scope is unhealthy; an aborted
//! drill recovers what it stopped.
//!
//! Needs root and the packages of `scripts/install-deps`; with
//! MCRECOVER_REQUIRE_E2E=1 a missing prerequisite fails instead of skipping.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod daemon_support;

use std::time::Duration;

use daemon_support::*;
use serde_json::Value;

/// The drill entry (notice when passed, warning otherwise).
const DRILL_ID: &str = "6f0e3d1c8b2a4c5d9e7f1a2b3c4d5e6f";
const CORE: [&str; 5] = [
    "mc-proxy",
    "mcr-api",
    "mcr-web",
    "metacrypt-api",
    "metacrypt-web",
];

fn json(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn inactive_exit(p: &Platform, svc: &str) -> String {
    p.prop(&format!("{svc}.service"), "InactiveExitTimestampMonotonic")
}

#[test]
fn drills_measure_the_rto_report_targets_refuse_and_abort() {
    // mcdoc's target cannot be met: its drill must say so.
    let config = daemon_config(3, |t| {
        let anchor = "[services.mcdoc]\n";
        assert!(t.contains(anchor));
        t.replacen(anchor, "[services.mcdoc]\nrto = \"1ms\"\n", 1)
    });
    let Some(p) = Platform::boot("drill", &config, true) else {
        return;
    };
    // Dry run: the order, nothing stopped.
    let before: Vec<String> = CORE.iter().map(|s| inactive_exit(&p, s)).collect();
    let out = p.mcrecover(None, &["drill", "--stage", "core", "--dry-run", "--json"]);
    assert!(out.status.success());
    let plan = json(&out);
    assert_eq!(
        plan["stop_order"],
        serde_json::json!([
            "metacrypt-web",
            "metacrypt-api",
            "mcr-web",
            "mcr-api",
            "mc-proxy"
        ]),
        "{plan:#}"
    );
    let after: Vec<String> = CORE.iter().map(|s| inactive_exit(&p, s)).collect();
    assert_eq!(before, after, "a dry run stops nothing");
    let later = p.prop("mcp-master.service", "InactiveExitTimestampMonotonic");

    // The drill of stage core: stopped, back, measured; exit 0 (target 60 s).
    let out = p.mcrecover(None, &["drill", "--stage", "core", "--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("recovering:"), "progress shown: {stderr}");
    let r = json(&out);
    assert_eq!(r["outcome"], "passed", "{r:#}");
    assert_eq!(r["scope"], "core");
    assert_eq!(r["target_ms"], 60_000);
    let rto = r["rto_ms"].as_u64().unwrap();
    assert!(rto > 0 && rto < 60_000, "{r:#}");
    let names: Vec<&str> = r["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, CORE);
    for s in r["services"].as_array().unwrap() {
        assert!(s["rto_ms"].as_u64().is_some_and(|v| v <= rto), "{s:#}");
    }
    let after: Vec<String> = CORE.iter().map(|s| inactive_exit(&p, s)).collect();
    for (i, s) in CORE.iter().enumerate() {
        assert_ne!(before[i], after[i], "{s} was stopped and started again");
    }
    // Nothing outside the scope was stopped or restarted.
    assert_eq!(
        p.prop("mcp-master.service", "InactiveExitTimestampMonotonic"),
        later
    );
    for s in ["mcp-master", "mcq", "mcdoc", "mcat", "kls", "sgardd"] {
        assert!(p.restarts_of(&format!("{s}.service")).is_empty(), "{s}");
    }
    assert!(p.escalations_of("mc-proxy.service").is_empty());
    // Recorded: journal, the state directory, status, the picture.
    let entries = p.entries(DRILL_ID);
    assert_eq!(entries.len(), 1, "{entries:#?}");
    assert_eq!(field(&entries[0], "OUTCOME"), "passed");
    assert_eq!(field(&entries[0], "SCOPE"), "stage core");
    assert_eq!(field(&entries[0], "PRIORITY"), "5");
    let stored: Value = serde_json::from_slice(
        &std::fs::read(p.sb.host_path("/var/lib/mcrecover/last-drill.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(stored, r);
    let svg = std::fs::read_to_string(p.sb.host_path("/var/lib/mcrecover/last-drill-timeline.svg"))
        .unwrap();
    assert!(svg.contains("<svg") && svg.contains("mcr-api"));
    let st = p.status().unwrap();
    assert_eq!(st["last_drill"]["id"], r["id"]);
    assert!(all_healthy(&st), "{st:#}");

    // A target exceeded: exit 1, reported as such.
    let out = p.mcrecover(None, &["drill", "--service", "mcdoc"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("exceeded") && text.contains("EXCEEDED"),
        "{text}"
    );
    let last = p.entries(DRILL_ID);
    assert_eq!(field(last.last().unwrap(), "OUTCOME"), "exceeded");
    assert_eq!(field(last.last().unwrap(), "PRIORITY"), "4");

    // Refused while something in scope is unhealthy.
    p.fault("/srv/mcq", "500");
    p.wait_status("mcq unhealthy", 60, |st| state_of(st, "mcq") != "healthy");
    let out = p.mcrecover(None, &["drill", "--stage", "services"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("must be healthy first"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    p.clear_fault("/srv/mcq");
    p.wait_status("healthy again", 120, all_healthy);

    // Aborted: what it stopped comes back; the drill says so (exit 1).
    // metacrypt-web comes back slowly this time (20 s before it listens),
    // so the drill is surely still running when the abort comes.
    ok(
        &p.sb,
        p.sb.write_file("/srv/metacrypt/web/ready-delay-ms", b"20000"),
    );
    let run = "/usr/bin/mcrecover --config /srv/daemon-test.toml drill --stage core --json \
               > /srv/drill-abort.json 2>/srv/drill-abort.err; echo $? > /srv/drill-abort.rc";
    // Detached from this call's pipes, or `run` would wait for it.
    let _ =
        p.sb.run(&["sh", "-c", &format!("({run}) </dev/null >/dev/null 2>&1 &")]);
    p.wait_status("a drill in progress", 30, |st| st.get("drill").is_some());
    let out = p.mcrecover(None, &["drill", "--abort"]);
    assert!(out.status.success());
    p.wait("the aborted drill's client to finish", 60, || {
        p.sb.host_path("/srv/drill-abort.rc").exists()
    });
    std::thread::sleep(Duration::from_millis(200));
    let rc = std::fs::read_to_string(p.sb.host_path("/srv/drill-abort.rc")).unwrap();
    assert_eq!(rc.trim(), "1");
    let aborted: Value =
        serde_json::from_slice(&std::fs::read(p.sb.host_path("/srv/drill-abort.json")).unwrap())
            .unwrap();
    assert_eq!(aborted["outcome"], "aborted");
    ok(&p.sb, p.sb.remove("/srv/metacrypt/web/ready-delay-ms"));
    p.wait_status("everything healthy after the abort", 120, all_healthy);
    assert!(p.escalations_of("mc-proxy.service").is_empty());
}
