//! The platform target tells the truth (issue 11): in a REAL systemd (PID 1
//! of its own namespaces, see `testbed/`) with REAL podman and stand-in
//! containers, `systemctl start metacircular.target` alone, without mcrecover
//! driving it (rootful, service backend, units from `mcrecover install`):
//!
//! (a) fails (non-zero, job result `dependency`) when the `block` stage 1
//!     never becomes healthy, and the later gates fail their start jobs
//!     without probing anything: no unit of a later stage is ever started;
//! (b) succeeds, every gate active, once the fault is gone
//!     (`systemctl reset-failed`, start again);
//! (c) still succeeds when only the last stage (`continue`) fails: a
//!     `continue` failure does not propagate to the platform target.
//!
//! Needs root and the packages of `scripts/install-deps`; with
//! MCRECOVER_REQUIRE_E2E=1 a missing prerequisite fails instead of skipping.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::process::Output;
use std::time::{Duration, Instant};

use mcrecover_testbed::{e2e_gate, ImageSet, Sandbox, SandboxOptions, TestbedError};

const EXAMPLE: &str = include_str!("../examples/metacircular.toml");
const STAGES: [&str; 4] = ["foundation", "core", "management", "services"];
/// The foundation stage's (shortened) timeout: how long its gate probes.
const FOUNDATION_TIMEOUT: Duration = Duration::from_secs(8);
/// The services stage's (shortened) timeout, for part (c).
const SERVICES_TIMEOUT: Duration = Duration::from_secs(20);
const CONFIG: &str = "/srv/mcrecover-test.toml";
const TOP: &str = "metacircular.target";

fn ok<T>(sb: &Sandbox, r: Result<T, TestbedError>) -> T {
    r.unwrap_or_else(|e| panic!("{e}\njournal:\n{}", sb.journal_tail(300)))
}

fn gate(stage: &str) -> String {
    format!("metacircular-{stage}-gate.service")
}

/// A unit's property (`systemctl show -P`).
fn prop(sb: &Sandbox, unit: &str, name: &str) -> String {
    let out = sb.run(&["systemctl", "show", "-P", name, unit]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A unit's property as an integer (0 when unset).
fn prop_u64(sb: &Sandbox, unit: &str, name: &str) -> u64 {
    prop(sb, unit, name).parse().unwrap_or(0)
}

/// Replaces the example stage `name`'s block (members, `timeout = "120s"`,
/// `on_failure`) by the same with `timeout`.
fn stage_timeout(text: &str, name: &str, members: &str, policy: &str, timeout: Duration) -> String {
    let block = |t: &str| {
        format!("name = \"{name}\"\nservices = [{members}]\ntimeout = \"{t}\"\non_failure = \"{policy}\"")
    };
    let old = block("120s");
    assert!(text.contains(&old), "the example's {name} stage changed");
    text.replacen(&old, &block(&format!("{}s", timeout.as_secs())), 1)
}

/// The example, rootful, with the foundation (`block`) and services
/// (`continue`) stages shortened.
fn config_text() -> String {
    let text = EXAMPLE.replacen("mode = \"rootless\"", "mode = \"rootful\"", 1);
    assert_ne!(
        text, EXAMPLE,
        "the example no longer says mode = \"rootless\""
    );
    let text = stage_timeout(&text, "foundation", "\"mcns\"", "block", FOUNDATION_TIMEOUT);
    stage_timeout(
        &text,
        "services",
        "\"mcq\", \"mcdoc\", \"mcat\", \"kls\", \"sgardd\"",
        "continue",
        SERVICES_TIMEOUT,
    )
}

/// `systemctl start metacircular.target` (bounded by `timeout`, so a hang
/// fails the test instead of blocking it), with its duration.
fn start_top(sb: &Sandbox) -> (Output, Duration) {
    let t0 = Instant::now();
    let out = sb.run(&["timeout", "600", "systemctl", "start", TOP]);
    let took = t0.elapsed();
    eprintln!(
        "$ systemctl start {TOP}\n-> {:?} after {:.1}s\n{}",
        out.status.code(),
        took.as_secs_f64(),
        String::from_utf8_lossy(&out.stderr)
    );
    (out, took)
}

/// Every stage's member services, from the config as written.
fn members(sb: &Sandbox) -> Vec<(String, Vec<String>)> {
    let text = std::fs::read_to_string(sb.host_path(CONFIG)).unwrap();
    let cfg = mcrecover::config::parse(&text, std::path::Path::new(CONFIG)).unwrap();
    cfg.stages
        .iter()
        .map(|st| (st.name.clone(), st.services.clone()))
        .collect()
}

/// Whether the journal records a start job of `unit` that ended with `result`.
fn job_result_logged(sb: &Sandbox, unit: &str, result: &str) -> bool {
    let unit_match = format!("UNIT={unit}");
    let result_match = format!("JOB_RESULT={result}");
    !sb.journal_json(&[unit_match.as_str(), result_match.as_str()])
        .is_empty()
}

#[test]
fn platform_target_fails_while_a_block_stage_fails_and_passes_once_it_heals() {
    let name = "e2e-target-truth";
    if !e2e_gate(name, &[]) {
        return;
    }
    let mut opts = SandboxOptions::metacircular(name);
    opts.rootless_user = None;
    opts.quadlet_generator = None;
    let sb = Sandbox::boot(opts).unwrap();
    ok(
        &sb,
        sb.install_bin(
            std::path::Path::new(env!("CARGO_BIN_EXE_mcrecover")),
            "mcrecover",
        ),
    );
    ok(
        &sb,
        sb.load_images(&ImageSet::metacircular().unwrap(), None),
    );
    ok(&sb, sb.write_file(CONFIG, config_text().as_bytes()));
    let install = sb.run(&[
        "/usr/bin/mcrecover",
        "install",
        "--config",
        CONFIG,
        "--backend",
        "service",
        "--unit-dir",
        "/run/systemd/system",
    ]);
    assert_eq!(
        install.status.code(),
        Some(0),
        "install: {}",
        String::from_utf8_lossy(&install.stderr)
    );
    let stages = members(&sb);
    assert_eq!(
        stages.iter().map(|(s, _)| s.as_str()).collect::<Vec<_>>(),
        STAGES
    );

    // (a) MCNS answers SERVFAIL / HTTP 500: the foundation gate fails after
    // its timeout, and with it the platform target.
    ok(&sb, sb.write_file("/srv/mcns/fault", b"500"));
    let (out, took) = start_top(&sb);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "systemctl start {TOP} succeeded although stage foundation never became healthy"
    );
    assert!(
        stderr.contains("A dependency job for metacircular.target failed"),
        "job result of {TOP} is not `dependency`: {stderr}"
    );
    assert!(
        took < FOUNDATION_TIMEOUT + Duration::from_secs(30),
        "returned after {took:?}: something waited beyond the foundation gate"
    );
    let g = gate("foundation");
    assert_eq!(prop(&sb, &g, "ActiveState"), "failed", "{g}");
    assert_eq!(prop(&sb, &g, "Result"), "exit-code", "{g}");
    assert_ne!(prop(&sb, TOP, "ActiveState"), "active");
    assert_ne!(
        prop(&sb, "metacircular-foundation.target", "ActiveState"),
        "active"
    );
    // The later gates never ran `mcrecover gate` (never left `inactive`):
    // their start jobs failed with `dependency` at once.
    for stage in &STAGES[1..] {
        let g = gate(stage);
        assert_eq!(prop(&sb, &g, "ActiveState"), "inactive", "{g}");
        assert_eq!(
            prop_u64(&sb, &g, "InactiveExitTimestampMonotonic"),
            0,
            "{g} was started"
        );
        assert_eq!(
            prop_u64(&sb, &g, "ExecMainStartTimestampMonotonic"),
            0,
            "{g} ran its checks"
        );
    }
    assert!(
        job_result_logged(&sb, &gate("core"), "dependency"),
        "no `dependency` job result of {} in the journal",
        gate("core")
    );
    // No unit of a later stage was started.
    for (stage, services) in &stages[1..] {
        for svc in services {
            let unit = format!("{svc}.service");
            assert_eq!(
                prop_u64(&sb, &unit, "InactiveExitTimestampMonotonic"),
                0,
                "{unit} (stage {stage}) was started"
            );
        }
    }

    // (b) Healed: the same command succeeds, every gate passes, in order.
    ok(&sb, sb.remove("/srv/mcns/fault"));
    ok(&sb, sb.run_ok(&["systemctl", "reset-failed"]).map(|_| ()));
    let (out, _) = start_top(&sb);
    if !out.status.success() {
        eprintln!("journal:\n{}", sb.journal_tail(300));
    }
    assert_eq!(
        out.status.code(),
        Some(0),
        "systemctl start {TOP} after healing"
    );
    assert_eq!(prop(&sb, TOP, "ActiveState"), "active");
    for stage in STAGES {
        let g = gate(stage);
        assert_eq!(prop(&sb, &g, "ActiveState"), "active", "{g}");
        assert_eq!(
            prop(&sb, &format!("metacircular-{stage}.target"), "ActiveState"),
            "active"
        );
    }
    for pair in stages.windows(2) {
        let passed = prop_u64(&sb, &gate(&pair[0].0), "ActiveEnterTimestampMonotonic");
        for svc in &pair[1].1 {
            let unit = format!("{svc}.service");
            assert_eq!(prop(&sb, &unit, "ActiveState"), "active", "{unit}");
            let started = prop_u64(&sb, &unit, "InactiveExitTimestampMonotonic");
            assert!(
                started >= passed,
                "{unit} started at {started} before {} passed at {passed}",
                gate(&pair[0].0)
            );
        }
    }

    // (c) Only the last stage (`continue`) fails: the platform target still
    // starts; the failure shows on that stage's gate and target alone.
    ok(&sb, sb.write_file("/srv/mcq/fault", b"500"));
    // The stand-in polls its fault file every 100 ms: wait until it serves
    // the fault, or the gate could still pass on a last healthy answer.
    let faulted = sb.wait_until("mcq to answer HTTP 500", Duration::from_secs(10), || {
        let out = sb.run(&[
            "curl",
            "-sk",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "https://127.0.0.1:48080/v1/health",
        ]);
        Ok(String::from_utf8_lossy(&out.stdout).trim() == "500")
    });
    ok(&sb, faulted);
    let last = gate("services");
    let ran_before = prop_u64(&sb, &last, "ExecMainStartTimestampMonotonic");
    ok(&sb, sb.run_ok(&["systemctl", "stop", &last]).map(|_| ()));
    let (out, _) = start_top(&sb);
    assert_eq!(
        out.status.code(),
        Some(0),
        "a failed `continue` stage failed {TOP}"
    );
    assert_eq!(prop(&sb, &last, "ActiveState"), "failed");
    assert_eq!(
        prop(&sb, &last, "Result"),
        "exit-code",
        "{last} did not fail its checks"
    );
    assert!(
        prop_u64(&sb, &last, "ExecMainStartTimestampMonotonic") > ran_before,
        "{last} did not run again"
    );
    assert_ne!(
        prop(&sb, "metacircular-services.target", "ActiveState"),
        "active"
    );
    assert_eq!(prop(&sb, TOP, "ActiveState"), "active");
    for stage in &STAGES[..3] {
        assert_eq!(prop(&sb, &gate(stage), "ActiveState"), "active", "{stage}");
    }
}
