//! End-to-end tests on the testbed's second base, Debian trixie (issue 14): systemd 257, podman
//! 5.4 with crun and pasta, and podman's NATIVE quadlet generator (no fetched generator, no
//! cidfile drop-in), booted from the root filesystem `scripts/build-trixie-rootfs` builds (see
//! `testbed/README.md`). This is the stack a current NixOS host runs; the rest of the suite runs
//! on the host base (Debian 12: systemd 252, podman 4.3).
//!
//! - rootful quadlet recovery of `examples/metacircular.toml` (all healthy, stages in order);
//! - rootless quadlet recovery as `mcp` from `/etc/containers/systemd/users/850` (written by
//!   root) and from `~/.config/containers/systemd` (written by `mcp`);
//! - the daemon (SHIPPED unit, quadlet backend) against a killed container, an HTTP 500 and a
//!   crash loop (the faults of tests/daemon_e2e.rs).
//!
//! The root filesystem comes from `MCRECOVER_TRIXIE_ROOTFS` (or the newest complete tree under
//! `/var/tmp/mcrecover-trixie-*`). When it is missing, each test is skipped with the command to
//! build it, and FAILS under MCRECOVER_REQUIRE_E2E=1.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod daemon_support;
mod recover_support;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use daemon_support::{
    daemon_config, field, https_500_config, https_500_restarts_only_after_the_threshold, now_usec,
    recovery_problems, service, state_of, usec, Platform, EXAMPLE, RESTART_ID,
};
use mcrecover_testbed::{e2e_gate, Base, ImageSet, Sandbox, SandboxOptions};
use recover_support::{assert_stage_order, prop};
use serde_json::Value;

const UID: u32 = 850;
const ESCALATE_AFTER: u32 = 3;

/// The trixie base, or `None` after [`e2e_gate`] decided to skip (it panics under
/// MCRECOVER_REQUIRE_E2E=1 when the root filesystem or another prerequisite is missing).
fn trixie(test: &str, extra: &[String]) -> Option<Base> {
    let mut needs = extra.to_vec();
    if let Some(why) = mcrecover_testbed::trixie_missing() {
        needs.push(why);
    }
    if !e2e_gate(test, &needs) {
        return None;
    }
    Some(Base::trixie().unwrap())
}

fn ok<T>(sb: &Sandbox, r: Result<T, mcrecover_testbed::TestbedError>) -> T {
    r.unwrap_or_else(|e| panic!("{e}\njournal:\n{}", sb.journal_tail(400)))
}

fn install_binary(sb: &Sandbox) {
    ok(
        sb,
        sb.install_bin(Path::new(env!("CARGO_BIN_EXE_mcrecover")), "mcrecover"),
    );
}

/// A trixie sandbox for the example platform, rootful or with `mcp`, this build's mcrecover at
/// /usr/bin/mcrecover. Images are loaded by the caller (rootless needs the user manager first).
fn platform(name: &str, rootless: bool) -> Option<Sandbox> {
    let base = trixie(name, &[])?;
    let mut opts = SandboxOptions::metacircular_on(name, base);
    if !rootless {
        opts.rootless_user = None;
    }
    let sb = Sandbox::boot(opts).unwrap();
    install_binary(&sb);
    Some(sb)
}

/// Runs mcrecover inside the sandbox, as root or as `uid`.
fn mcrecover(sb: &Sandbox, uid: Option<u32>, args: &[&str]) -> Output {
    let mut argv = vec!["/usr/bin/mcrecover"];
    argv.extend_from_slice(args);
    let out = match uid {
        Some(uid) => sb.run_as(uid, &argv),
        None => sb.run(&argv),
    };
    eprintln!(
        "$ {}mcrecover {}\n-> {:?}\n--- stderr ---\n{}",
        uid.map(|u| format!("(uid {u}) ")).unwrap_or_default(),
        args.join(" "),
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn report(sb: &Sandbox, out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON report ({e}): {}\njournal:\n{}",
            String::from_utf8_lossy(&out.stdout),
            sb.journal_tail(300)
        )
    })
}

fn assert_all_healthy(rep: &Value) {
    assert_eq!(rep["outcome"], "all_healthy", "report: {rep:#}");
    let services = rep["services"].as_array().unwrap();
    assert_eq!(services.len(), 12, "12 containers in 4 stages");
    for s in services {
        assert_eq!(s["status"], "healthy", "{s:#}");
    }
    for st in rep["stages"].as_array().unwrap() {
        assert_eq!(st["status"], "healthy", "{st:#}");
    }
}

/// The stack really is trixie's: systemd 257, podman 5.4, the native generator, no harness shim.
fn assert_trixie_stack(sb: &Sandbox) {
    let systemd = ok(sb, sb.run_ok(&["systemctl", "--version"]));
    assert!(systemd.starts_with("systemd 257 "), "{systemd}");
    let podman = ok(sb, sb.run_ok(&["podman", "--version"]));
    assert!(podman.contains(" 5.4."), "{podman}");
    assert!(sb
        .host_path("/usr/lib/systemd/system-generators/podman-system-generator")
        .exists());
    for harness_only in [
        "/run/systemd/system-generators/podman-system-generator",
        "/run/systemd/system/service.d/10-cidfile.conf",
        "/run/systemd/user/service.d/10-cidfile.conf",
    ] {
        assert!(
            !sb.host_path(harness_only).exists(),
            "{harness_only} exists on the trixie base"
        );
    }
}

// (a) ---------------------------------------------------------------------------------------------

#[test]
fn trixie_rootful_quadlet_recovers_all_stages_in_order() {
    let Some(sb) = platform("trixie-rootful-quadlet", false) else {
        return;
    };
    assert_trixie_stack(&sb);
    ok(
        &sb,
        sb.load_images(&ImageSet::metacircular().unwrap(), None),
    );
    let text = EXAMPLE.replacen("mode = \"rootless\"", "mode = \"rootful\"", 1);
    assert_ne!(
        text, EXAMPLE,
        "the example no longer says mode = \"rootless\""
    );
    let cfg = "/srv/mcrecover-test.toml";
    ok(&sb, sb.write_file(cfg, text.as_bytes()));
    let out = mcrecover(
        &sb,
        None,
        &[
            "recover",
            "--json",
            "--config",
            cfg,
            "--backend",
            "quadlet",
            "--unit-dir",
            "/run/systemd/system",
        ],
    );
    let rep = report(&sb, &out);
    assert_eq!(out.status.code(), Some(0), "{rep:#}");
    assert_all_healthy(&rep);
    // Units of the native generator, from the .container files mcrecover wrote.
    assert_eq!(
        prop(&sb, None, "mcns.service", "SourcePath"),
        "/etc/containers/systemd/mcns.container"
    );
    assert_eq!(
        prop(&sb, None, "mcns.service", "FragmentPath"),
        "/run/systemd/generator/mcns.service"
    );
    assert_eq!(prop(&sb, None, "mcns.service", "Type"), "notify");
    assert_stage_order(&sb, None, &rep);
    // A second round (stop everything, recover again) works without any cidfile shim: podman 5
    // removes %t/%N.cid itself.
    for s in rep["services"].as_array().unwrap() {
        let unit = format!("{}.service", s["name"].as_str().unwrap());
        ok(&sb, sb.run_ok(&["systemctl", "stop", &unit]).map(|_| ()));
    }
    let out = mcrecover(
        &sb,
        None,
        &[
            "recover",
            "--json",
            "--config",
            cfg,
            "--backend",
            "quadlet",
            "--unit-dir",
            "/run/systemd/system",
        ],
    );
    let rep = report(&sb, &out);
    assert_eq!(out.status.code(), Some(0), "second recovery: {rep:#}");
    assert_all_healthy(&rep);
}

// (b) ---------------------------------------------------------------------------------------------

/// Rootless quadlet recovery as mcp; `quadlet_dir` None = the config's default,
/// `/etc/containers/systemd/users/850` (made writable for mcp in this sandbox: `mcrecover install`
/// run by root cannot reload mcp's manager), else the given directory of mcp's own.
fn rootless_quadlet(name: &str, quadlet_dir: Option<&str>) {
    let Some(sb) = platform(name, true) else {
        return;
    };
    assert_trixie_stack(&sb);
    let config = ok(&sb, sb.install_example());
    let mut args = vec!["--config", config.as_str(), "--backend", "quadlet"];
    if let Some(dir) = quadlet_dir {
        args.extend(["--quadlet-dir", dir]);
    }
    let source_dir = quadlet_dir.unwrap_or("/etc/containers/systemd/users/850");
    if quadlet_dir.is_none() {
        ok(&sb, sb.chown(source_dir, UID));
    }
    ok(&sb, sb.start_user_manager(UID));
    ok(
        &sb,
        sb.load_images(&ImageSet::metacircular().unwrap(), Some(UID)),
    );
    let mut recover = vec!["recover", "--json"];
    recover.extend_from_slice(&args);
    let out = mcrecover(&sb, Some(UID), &recover);
    let rep = report(&sb, &out);
    assert_eq!(out.status.code(), Some(0), "{rep:#}");
    assert_all_healthy(&rep);
    assert_eq!(
        prop(&sb, Some(UID), "mcns.service", "SourcePath"),
        format!("{source_dir}/mcns.container")
    );
    assert_eq!(prop(&sb, Some(UID), "mcns.service", "Type"), "notify");
    // Quadlet >= 5.3 makes rootless units wait for the system's network-online.target (see
    // docs/units.md); the trixie base reaches that target at boot.
    let wait = "podman-user-wait-network-online.service";
    assert!(
        prop(&sb, Some(UID), "mcns.service", "Wants").contains(wait),
        "mcns.service does not want {wait}"
    );
    assert_eq!(prop(&sb, Some(UID), wait, "ActiveState"), "active");
    let ps = ok(
        &sb,
        sb.run_as_ok(UID, &["podman", "ps", "--format", "{{.Names}}"]),
    );
    for svc in ["mcns", "mc-proxy", "mcr-api", "mcp-master", "sgardd"] {
        assert!(
            ps.lines().any(|l| l == svc),
            "{svc} not in mcp's podman ps:\n{ps}"
        );
    }
    assert_stage_order(&sb, Some(UID), &rep);
}

#[test]
fn trixie_rootless_quadlet_from_etc_users_dir_recovers_as_mcp() {
    rootless_quadlet("trixie-rootless-etc", None);
}

#[test]
fn trixie_rootless_quadlet_from_home_config_recovers_as_mcp() {
    rootless_quadlet(
        "trixie-rootless-home",
        Some("/srv/mcp/.config/containers/systemd"),
    );
}

// (c) ---------------------------------------------------------------------------------------------

/// The daemon as the SHIPPED unit with its D-Bus policy, managing the example platform through
/// the QUADLET backend (.container files in /etc/containers/systemd, gate units and target in
/// /run/systemd/system), on the trixie base; waits until it watches a healthy platform.
/// (tests/daemon_support's `Platform::boot` does the same on the host base with the service
/// backend.)
fn daemon_platform(name: &str, config: &str) -> Option<Platform> {
    let base = trixie(name, &[])?;
    let p = Platform::boot_on(
        SandboxOptions::metacircular_on(name, base),
        "quadlet",
        config,
        true,
        |_| {},
    );
    // The containers are the native generator's units.
    assert_eq!(
        p.prop("mcq.service", "SourcePath"),
        "/etc/containers/systemd/mcq.container"
    );
    Some(p)
}

fn restarts_since(p: &Platform, unit: &str, since: u128) -> Vec<Value> {
    p.restarts_of(unit)
        .into_iter()
        .filter(|e| usec(e) >= since)
        .collect()
}

#[test]
fn trixie_daemon_restarts_a_killed_container() {
    let Some(p) = daemon_platform("trixie-daemon-kill", &daemon_config(ESCALATE_AFTER, |t| t))
    else {
        return;
    };
    let unit = "mcq.service";
    assert_eq!(p.prop(unit, "Restart"), "no", "the daemon owns restarts");
    let invocation = p.prop(unit, "InvocationID");
    let before = service(&p.status().unwrap(), "mcq")["total_restarts"]
        .as_u64()
        .unwrap();
    let killed_at = now_usec();
    p.kill_container("mcq");
    p.wait("the daemon's restart entry for mcq", 60, || {
        !restarts_since(&p, unit, killed_at).is_empty()
    });
    p.wait_status("mcq healthy again", 60, |st| {
        state_of(st, "mcq") == "healthy"
            && service(st, "mcq")["total_restarts"].as_u64() == Some(before + 1)
    });
    let entries = restarts_since(&p, unit, killed_at);
    assert_eq!(entries.len(), 1, "{entries:#?}");
    assert_eq!(field(&entries[0], "SERVICE"), "mcq");
    assert_eq!(p.prop(unit, "NRestarts"), "0");
    assert_ne!(p.prop(unit, "InvocationID"), invocation);
    assert_eq!(p.prop(unit, "ActiveState"), "active");
    let problems = recovery_problems(&p.sb);
    assert!(problems.is_empty(), "{problems:#?}");
    let at_boot: Vec<String> = p
        .entries(RESTART_ID)
        .iter()
        .filter(|e| usec(e) < killed_at)
        .map(|e| format!("{}: {}", field(e, "UNIT"), field(e, "REASON")))
        .collect();
    assert!(
        at_boot.is_empty(),
        "restarts during the boot recovery: {at_boot:#?}"
    );
}

#[test]
fn trixie_daemon_restarts_after_https_500_threshold() {
    let cfg = https_500_config(ESCALATE_AFTER, 2, 3);
    let Some(p) = daemon_platform("trixie-daemon-500", &cfg) else {
        return;
    };
    https_500_restarts_only_after_the_threshold(&p, 2, 3);
}

#[test]
fn trixie_daemon_escalates_a_crash_loop_and_ack_rearms() {
    let Some(p) = daemon_platform("trixie-daemon-crash", &daemon_config(ESCALATE_AFTER, |t| t))
    else {
        return;
    };
    let unit = "mcq.service";
    p.fault("/srv/mcq", "exit");
    p.wait_status("mcq escalated", 120, |st| {
        state_of(st, "mcq") == "escalated"
    });
    p.wait("the escalation entry", 30, || {
        !p.escalations_of(unit).is_empty()
    });
    let esc = p.escalations_of(unit);
    assert_eq!(esc.len(), 1, "{esc:#?}");
    let e = &esc[0];
    assert_eq!(field(e, "RESTARTS"), ESCALATE_AFTER.to_string());
    let event_id = field(e, "EVENT_ID");
    let restarts = p.restarts_of(unit);
    assert_eq!(restarts.len(), ESCALATE_AFTER as usize, "{restarts:#?}");
    assert!(restarts.iter().all(|r| usec(r) <= usec(e)));
    p.wait("the hook to run", 30, || {
        p.hook_runs() == [event_id.clone()]
    });
    // No restart afterwards: well past backoff_max, nothing changed.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(p.restarts_of(unit).len(), ESCALATE_AFTER as usize);
    assert_eq!(state_of(&p.status().unwrap(), "mcq"), "escalated");
    p.clear_fault("/srv/mcq");
    let out = p.mcrecover(None, &["ack", "mcq"]);
    assert_eq!(out.status.code(), Some(0));
    p.wait_status("mcq healthy after ack", 90, |st| {
        state_of(st, "mcq") == "healthy"
    });
    assert_eq!(p.prop(unit, "ActiveState"), "active");
    assert_eq!(p.escalations_of(unit).len(), 1);
}

#[test]
fn trixie_test_configurations_are_valid() {
    for text in [
        daemon_config(ESCALATE_AFTER, |t| t),
        https_500_config(ESCALATE_AFTER, 2, 3),
    ] {
        let path = Path::new("/srv/daemon-test.toml");
        mcrecover::config::parse(&text, path).unwrap();
    }
}
