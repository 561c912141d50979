//! End-to-end tests of "waiting for an operator" (issue 13, part 1): the
//! example platform's Metacrypt stand-in starts sealed (its API answers 503
//! `{"sealed":true}` after every start, like Metacrypt and Vault) under the
//! SHIPPED daemon unit in a real systemd with real podman. The example's
//! check says 503 + `sealed` means "waiting for an operator", so the daemon
//! must not restart it (a restart would only seal it again): state
//! `waiting` with the remedy in status, one `notice` journal entry, the hook
//! once, the ramp proceeding (`gate = "running"`) or holding (`gate`
//! removed) as configured, and healthy without a restart once unsealed.
//!
//! Needs root and the packages of `scripts/install-deps`; with
//! MCRECOVER_REQUIRE_E2E=1 a missing prerequisite fails instead of skipping.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod daemon_support;

use std::time::{Duration, Instant};

use daemon_support::*;
use serde_json::Value;

/// The operator-wait journal entry (priority notice; reminder warning).
const WAITING_ID: &str = "c41d7a2e9f0b4e3a8d6c1b5f2e7a9d04";
const METACRYPT: &str = "metacrypt-api";
const UNIT: &str = "metacrypt-api.service";

fn seal(sb: &mcrecover_testbed::Sandbox) {
    ok(sb, sb.write_file("/srv/metacrypt/sealed", b""));
    // An unseal left from an earlier run must not count (the stand-in
    // removes it at start, like Metacrypt forgets its key).
    ok(sb, sb.write_file("/srv/metacrypt/unseal", b""));
}

fn waiting_entries(p: &Platform) -> Vec<Value> {
    p.entries(WAITING_ID)
        .into_iter()
        .filter(|e| field(e, "SERVICE") == METACRYPT)
        .collect()
}

fn others_healthy(st: &Value) -> bool {
    st["services"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["name"] != METACRYPT)
        .all(|s| s["state"] == "healthy")
}

/// `InactiveExitTimestampMonotonic` of the unit: changes on every (re)start.
fn started_at(p: &Platform) -> String {
    p.prop(UNIT, "InactiveExitTimestampMonotonic")
}

#[test]
fn a_sealed_metacrypt_waits_is_never_restarted_and_the_ramp_proceeds() {
    let config = daemon_config(3, |t| {
        assert!(
            t.contains("gate = \"running\""),
            "the example no longer lets the core stage proceed while Metacrypt waits"
        );
        t
    });
    let Some(p) = Platform::boot_with("opwait-run", &config, false, seal) else {
        return;
    };
    let st = p.wait_status(
        "metacrypt-api waiting and every other service healthy",
        240,
        |st| state_of(st, METACRYPT) == "waiting" && others_healthy(st),
    );
    let svc = service(&st, METACRYPT);
    assert!(
        svc["remedy"]
            .as_str()
            .unwrap_or("")
            .contains("unseal Metacrypt"),
        "status names the remedy: {svc:#}"
    );
    assert!(
        svc["health"]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("waiting for an operator"),
        "{svc:#}"
    );
    let first_start = started_at(&p);

    // 60 s of waiting: no restart, no stop, no escalation, one notice.
    let since = Instant::now();
    while since.elapsed() < Duration::from_secs(60) {
        let st = p.status().expect("the daemon answers");
        assert_eq!(state_of(&st, METACRYPT), "waiting", "{st:#}");
        std::thread::sleep(Duration::from_secs(2));
    }
    assert!(p.restarts_of(UNIT).is_empty(), "{:#?}", p.restarts_of(UNIT));
    assert!(p.escalations_of(UNIT).is_empty());
    assert_eq!(started_at(&p), first_start, "the unit was not restarted");
    let notices = waiting_entries(&p);
    assert_eq!(notices.len(), 1, "one notice per episode: {notices:#?}");
    let n = &notices[0];
    assert_eq!(field(n, "PRIORITY"), "5", "{n:#}");
    assert_eq!(field(n, "EVENT"), "operator-wait", "{n:#}");
    assert!(field(n, "REMEDY").contains("unseal Metacrypt"), "{n:#}");
    let runs: Vec<String> = p
        .hook_runs()
        .into_iter()
        .filter(|r| r.starts_with("metacrypt-api-wait-"))
        .collect();
    assert_eq!(runs.len(), 1, "the hook ran once: {:?}", p.hook_runs());
    let env =
        std::fs::read_to_string(p.sb.host_path(&format!("{HOOK_DIR}/{}.env", runs[0]))).unwrap();
    assert!(env.contains("MCRECOVER_EVENT=operator-wait\n"), "{env}");
    assert!(env.contains("MCRECOVER_REMEDY=unseal Metacrypt"), "{env}");

    // The operator unseals it: healthy, without a restart.
    ok(&p.sb, p.sb.write_file("/srv/metacrypt/unseal", b""));
    p.wait_status("metacrypt-api healthy after the unseal", 30, |st| {
        state_of(st, METACRYPT) == "healthy" && all_healthy(st)
    });
    assert!(p.restarts_of(UNIT).is_empty());
    assert_eq!(started_at(&p), first_start);
    assert_eq!(waiting_entries(&p).len(), 1);
    assert!(
        !p.hook_runs()
            .iter()
            .any(|r| r != &runs[0] && r.starts_with("metacrypt")),
        "{:?}",
        p.hook_runs()
    );
}

#[test]
fn without_gate_running_the_ramp_holds_until_the_unseal() {
    let config = daemon_config(3, |t| {
        let line = "gate = \"running\"\n";
        assert!(t.contains(line));
        t.replacen(line, "", 1)
    });
    let Some(p) = Platform::boot_with("opwait-hold", &config, false, seal) else {
        return;
    };
    p.wait_status("metacrypt-api waiting", 240, |st| {
        state_of(st, METACRYPT) == "waiting"
    });
    // The core stage holds: the next stage's MCP master does not start.
    std::thread::sleep(Duration::from_secs(15));
    let st = p.status().unwrap();
    assert_eq!(state_of(&st, "mcp-master"), "pending", "{st:#}");
    assert_eq!(state_of(&st, METACRYPT), "waiting", "{st:#}");
    assert!(p.restarts_of(UNIT).is_empty());
    ok(&p.sb, p.sb.write_file("/srv/metacrypt/unseal", b""));
    p.wait_status(
        "the whole platform healthy after the unseal",
        180,
        all_healthy,
    );
    assert!(p.restarts_of(UNIT).is_empty());
    assert_eq!(waiting_entries(&p).len(), 1);
}
