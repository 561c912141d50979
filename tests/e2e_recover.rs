//! End-to-end recovery of `examples/metacircular.toml` in a REAL systemd
//! (PID 1 of its own namespaces, see `testbed/`), with REAL podman running
//! stand-in containers tagged with the example's exact image names, on the
//! production addresses (192.168.88.181, 100.95.252.120) of the sandbox's own
//! network namespace. `mcrecover` runs inside the sandbox (as root, or as
//! `mcp` against its user manager) exactly as an operator would run it.
//!
//! Needs root and the packages of `scripts/install-deps` (and the quadlet
//! binary for the quadlet test); with MCRECOVER_REQUIRE_E2E=1 a missing
//! prerequisite fails instead of skipping.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

mod recover_support;

use mcrecover_testbed::{e2e_gate, ImageSet, RootlessUser, Sandbox, SandboxOptions};
use recover_support::{assert_stage_order, prop, prop_u64, STAGES};
use serde_json::Value;

const EXAMPLE: &str = include_str!("../examples/metacircular.toml");
const UID: u32 = 850;

/// Boots a sandbox for the example platform: rootless (`mcp`) or rootful,
/// stand-in images loaded into the right storage, and this build's
/// `mcrecover` at `/usr/bin/mcrecover` inside (what the gate units run).
fn platform(name: &str, rootless: bool, quadlet: bool) -> Option<Sandbox> {
    let quadlet_bin = mcrecover_testbed::quadlet_binary();
    let mut needs = Vec::new();
    if quadlet && quadlet_bin.is_none() {
        needs.push("the quadlet binary (scripts/fetch-quadlet)".to_string());
    }
    if !e2e_gate(name, &needs) {
        return None;
    }
    let mut opts = SandboxOptions::metacircular(name);
    if !rootless {
        opts.rootless_user = None;
    }
    if !quadlet {
        opts.quadlet_generator = None;
    }
    let sb = Sandbox::boot(opts).unwrap();
    install_binary(&sb);
    let images = ImageSet::metacircular().unwrap();
    if rootless {
        ok(&sb, sb.start_user_manager(UID));
        ok(&sb, sb.load_images(&images, Some(UID)));
    } else {
        ok(&sb, sb.load_images(&images, None));
    }
    Some(sb)
}

/// Puts this build's mcrecover at /usr/bin/mcrecover inside the sandbox
/// (where the generated gate units run it).
fn install_binary(sb: &Sandbox) {
    ok(
        sb,
        sb.install_bin(
            std::path::Path::new(env!("CARGO_BIN_EXE_mcrecover")),
            "mcrecover",
        ),
    );
}

fn ok<T>(sb: &Sandbox, r: Result<T, mcrecover_testbed::TestbedError>) -> T {
    r.unwrap_or_else(|e| panic!("{e}\njournal:\n{}", sb.journal_all()))
}

/// A rootful variant of the example (same services, stages, checks), written
/// inside the sandbox; `edit` may change it further.
fn rootful_config(sb: &Sandbox, edit: impl FnOnce(String) -> String) -> String {
    let text = EXAMPLE.replacen("mode = \"rootless\"", "mode = \"rootful\"", 1);
    assert_ne!(
        text, EXAMPLE,
        "the example no longer says mode = \"rootless\""
    );
    let path = "/srv/mcrecover-test.toml";
    ok(sb, sb.write_file(path, edit(text).as_bytes()));
    path.to_string()
}

/// Runs mcrecover inside the sandbox, as root or as the platform user.
fn mcrecover(sb: &Sandbox, uid: Option<u32>, args: &[&str]) -> Output {
    let mut argv = vec!["/usr/bin/mcrecover"];
    argv.extend_from_slice(args);
    let out = match uid {
        Some(uid) => sb.run_as(uid, &argv),
        None => sb.run(&argv),
    };
    eprintln!(
        "$ mcrecover {}\n-> {:?}\n--- stderr ---\n{}",
        args.join(" "),
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `mcrecover recover --json` inside the sandbox: exit code and JSON report.
/// Rootful runs put units in /run/systemd/system (the sandbox's own, not the
/// host's /etc/systemd/system). On a non-zero exit the journal is printed.
fn recover(sb: &Sandbox, uid: Option<u32>, config: &str, backend: &str) -> (Option<i32>, Value) {
    let mut args = vec![
        "recover",
        "--json",
        "--config",
        config,
        "--backend",
        backend,
    ];
    if uid.is_none() {
        args.extend(["--unit-dir", "/run/systemd/system"]);
    }
    let out = mcrecover(sb, uid, &args);
    if out.status.code() != Some(0) {
        eprintln!("journal:\n{}", sb.journal_all());
    }
    (out.status.code(), report(&out))
}

/// `mcrecover install [extra...]` of a rootful config inside the sandbox,
/// service backend, units in /run/systemd/system.
fn install(sb: &Sandbox, config: &str, extra: &[&str]) -> Output {
    let mut args = vec!["install"];
    args.extend_from_slice(extra);
    args.extend([
        "--config",
        config,
        "--backend",
        "service",
        "--unit-dir",
        "/run/systemd/system",
    ]);
    mcrecover(sb, None, &args)
}

fn report(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON report ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn assert_all_healthy(rep: &Value) {
    assert_eq!(rep["outcome"], "all_healthy", "report: {rep:#}");
    let services = rep["services"].as_array().unwrap();
    assert_eq!(services.len(), 12, "12 containers in 4 stages");
    for s in services {
        assert_eq!(s["status"], "healthy", "{s:#}");
        assert!(s["time_to_healthy_s"].is_number(), "{s:#}");
    }
    for st in rep["stages"].as_array().unwrap() {
        assert_eq!(st["status"], "healthy", "{st:#}");
    }
    assert_eq!(rep["critical_path"].as_array().unwrap().len(), 4);
}

/// Whether every stage's gate unit passed on the engine's verdict (`true`:
/// "not probed again", src/runner/verdict.rs) or by probing (`false`).
fn assert_gates_used_verdict(sb: &Sandbox, verdict: bool) {
    for stage in STAGES {
        let unit = format!("metacircular-{stage}-gate.service");
        let mut text = String::new();
        let res = sb.wait_until(
            &format!("{unit}'s verdict line in the journal"),
            Duration::from_secs(10),
            || {
                // The gate command's own line (`stage NAME: all N services
                // healthy ...`), from the system or the user manager.
                let tag = format!("stage {stage}: all ");
                text = sb
                    .journal_args(&["-t", "mcrecover"])
                    .lines()
                    .filter(|l| l.contains(&tag))
                    .collect::<Vec<_>>()
                    .join("\n");
                Ok(!text.is_empty())
            },
        );
        ok(sb, res);
        assert_eq!(
            text.contains("not probed again"),
            verdict,
            "{unit} (verdict expected: {verdict}):\n{text}"
        );
    }
}

#[test]
fn rootful_quadlet_recovers_all_stages_in_order() {
    let Some(sb) = platform("e2e-rootful-quadlet", false, true) else {
        return;
    };
    let cfg = rootful_config(&sb, |t| t);
    let (code, rep) = recover(&sb, None, &cfg, "quadlet");
    assert_eq!(code, Some(0));
    assert_all_healthy(&rep);
    // The units really came from the quadlet generator.
    assert_eq!(
        prop(&sb, None, "mcns.service", "SourcePath"),
        "/etc/containers/systemd/mcns.container"
    );
    assert_stage_order(&sb, None, &rep);
    // The gate units took recover's verdict (/run/mcrecover) instead of
    // probing the stages again.
    assert_gates_used_verdict(&sb, true);
}

#[test]
fn rootless_service_backend_recovers_as_mcp() {
    let Some(sb) = platform("e2e-rootless-service", true, false) else {
        return;
    };
    let config = ok(&sb, sb.install_example());
    let (code, rep) = recover(&sb, Some(UID), &config, "service");
    assert_eq!(code, Some(0));
    assert_all_healthy(&rep);
    // Containers run in mcp's rootless storage, under mcp's manager.
    let ps = ok(
        &sb,
        sb.run_as_ok(UID, &["podman", "ps", "--format", "{{.Names}}"]),
    );
    for name in ["mcns", "mc-proxy", "mcr-api", "mcp-master", "sgardd"] {
        assert!(
            ps.lines().any(|l| l == name),
            "{name} not in mcp's podman ps:\n{ps}"
        );
    }
    let home = RootlessUser::mcp().home;
    let unit_file = prop(&sb, Some(UID), "mcns.service", "FragmentPath");
    assert_eq!(
        PathBuf::from(unit_file),
        home.join(".config/systemd/user/mcns.service")
    );
    assert_stage_order(&sb, Some(UID), &rep);
    // ... through $XDG_RUNTIME_DIR/mcrecover for the user manager's gates.
    assert_gates_used_verdict(&sb, true);
}

#[test]
fn systemctl_start_target_alone_recovers_in_stage_order() {
    let Some(sb) = platform("e2e-target-alone", false, false) else {
        return;
    };
    let cfg = rootful_config(&sb, |t| t);
    let out = install(&sb, &cfg, &[]);
    assert_eq!(out.status.code(), Some(0));
    // No mcrecover driving: systemd alone, through the gate units.
    ok(
        &sb,
        sb.run_ok(&["systemctl", "start", "--no-block", "metacircular.target"])
            .map(|_| ()),
    );
    let last_gate = "metacircular-services-gate.service";
    let res = sb.wait_until(
        "the last stage's gate to pass",
        Duration::from_secs(180),
        || {
            let state = prop(&sb, None, last_gate, "ActiveState");
            if state == "failed" {
                return Err(mcrecover_testbed::TestbedError::Sandbox(format!(
                    "{last_gate} failed"
                )));
            }
            Ok(state == "active")
        },
    );
    ok(&sb, res);
    // Every container active, every stage gate passed, in order.
    let mut rep = serde_json::json!({ "services": [] });
    let cfg_text = std::fs::read_to_string(sb.host_path(&cfg)).unwrap();
    let parsed = mcrecover::config::parse(&cfg_text, std::path::Path::new(&cfg)).unwrap();
    for st in &parsed.stages {
        for s in &st.services {
            rep["services"]
                .as_array_mut()
                .unwrap()
                .push(serde_json::json!({ "name": s, "stage": st.name }));
            assert_eq!(
                prop(&sb, None, &format!("{s}.service"), "ActiveState"),
                "active",
                "{s}"
            );
        }
    }
    assert_stage_order(&sb, None, &rep);
    // Nobody handed the gates a verdict: they probed.
    assert_gates_used_verdict(&sb, false);
    for stage in STAGES {
        let out = mcrecover(&sb, None, &["gate", "--config", &cfg, "--stage", stage]);
        assert_eq!(out.status.code(), Some(0), "stage {stage} healthy");
    }
}

/// Shortens the foundation stage's timeout and sets its failure policy.
fn foundation(text: &str, policy: &str) -> String {
    let old =
        "name = \"foundation\"\nservices = [\"mcns\"]\ntimeout = \"120s\"\non_failure = \"block\"";
    assert!(text.contains(old), "the example's foundation stage changed");
    text.replacen(
        old,
        &format!("name = \"foundation\"\nservices = [\"mcns\"]\ntimeout = \"6s\"\non_failure = \"{policy}\""),
        1,
    )
}

#[test]
fn never_healthy_stage_blocks_or_continues() {
    let Some(sb) = platform("e2e-never-healthy", false, false) else {
        return;
    };
    // MCNS answers SERVFAIL / HTTP 500 from the start.
    ok(&sb, sb.write_file("/srv/mcns/fault", b"500"));

    // block: later stages never start; exit 3; the report names the check and why.
    let cfg = rootful_config(&sb, |t| foundation(&t, "block"));
    let (code, rep) = recover(&sb, None, &cfg, "service");
    assert_eq!(code, Some(3), "{rep:#}");
    assert_eq!(rep["outcome"], "blocked");
    assert_eq!(rep["stages"][0]["status"], "failed");
    for i in 1..4 {
        assert_eq!(rep["stages"][i]["status"], "blocked", "{rep:#}");
        assert_eq!(rep["stages"][i]["blocked_by"], "foundation");
    }
    let mcns = rep["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "mcns")
        .unwrap();
    let failing: Vec<&str> = mcns["failing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        failing
            .iter()
            .any(|r| r.starts_with("mcns/dns: ") && r.contains("SERVFAIL from 192.168.88.181:53")),
        "{failing:?}"
    );
    assert!(
        failing
            .iter()
            .any(|r| r.starts_with("mcns/https: ") && r.contains("HTTP 500")),
        "{failing:?}"
    );
    for svc in ["mc-proxy", "mcr-api", "mcp-master", "mcq"] {
        let unit = format!("{svc}.service");
        assert_eq!(
            prop_u64(&sb, None, &unit, "InactiveExitTimestampMonotonic"),
            0,
            "{unit} was started"
        );
    }

    // continue: later stages start anyway and become healthy; exit 1.
    let cfg = rootful_config(&sb, |t| foundation(&t, "continue"));
    let (code, rep) = recover(&sb, None, &cfg, "service");
    assert_eq!(code, Some(1), "{rep:#}");
    assert_eq!(rep["outcome"], "some_failed");
    assert_eq!(rep["stages"][0]["status"], "failed");
    for i in 1..4 {
        assert_eq!(rep["stages"][i]["status"], "healthy", "{rep:#}");
    }
    assert_eq!(prop(&sb, None, "mcq.service", "ActiveState"), "active");
}

#[test]
fn second_install_writes_nothing_and_does_not_reload() {
    if !e2e_gate("second_install_writes_nothing_and_does_not_reload", &[]) {
        return;
    }
    let sb = Sandbox::boot(SandboxOptions {
        name: "e2e-install-twice".into(),
        ..SandboxOptions::default()
    })
    .unwrap();
    install_binary(&sb);
    let cfg = rootful_config(&sb, |t| t);
    let reloads = || {
        sb.journal_all()
            .lines()
            .filter(|l| l.contains("systemd[1]: Reloading"))
            .count()
    };

    let before = reloads();
    let first = install(&sb, &cfg, &[]);
    assert_eq!(first.status.code(), Some(0));
    let err = String::from_utf8_lossy(&first.stderr).to_string();
    assert!(err.contains("21 created, 0 changed, 0 unchanged"), "{err}");
    assert!(err.contains("systemd reloaded"), "{err}");
    let after_first = sb
        .wait_until(
            "the reload to reach the journal",
            Duration::from_secs(10),
            || Ok(reloads() > before),
        )
        .map(|()| reloads());
    let after_first = ok(&sb, after_first);
    let stamp = |name: &str| {
        std::fs::metadata(sb.host_path(&format!("/run/systemd/system/{name}")))
            .unwrap()
            .modified()
            .unwrap()
    };
    let mtime = stamp("mcns.service");

    let second = install(&sb, &cfg, &[]);
    assert_eq!(second.status.code(), Some(0));
    let err = String::from_utf8_lossy(&second.stderr).to_string();
    assert!(err.contains("0 created, 0 changed, 21 unchanged"), "{err}");
    assert!(!err.contains("systemd reloaded"), "{err}");
    assert_eq!(
        stamp("mcns.service"),
        mtime,
        "an unchanged file was rewritten"
    );
    // The journal shows no further daemon-reload.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(reloads(), after_first, "a second reload happened");

    // --dry-run reports without writing.
    let dry = install(&sb, &cfg, &["--dry-run"]);
    assert_eq!(dry.status.code(), Some(0));
}

#[test]
fn preflight_stops_a_stage_whose_port_a_foreign_process_holds() {
    let Some(sb) = platform("e2e-preflight", false, false) else {
        return;
    };
    // Something else listens on mcr-api's published port before recovery.
    ok(
        &sb,
        sb.run_ok(&[
            "systemd-run",
            "--unit=foreign-listener",
            "/bin/busybox",
            "nc",
            "-l",
            "-p",
            "28443",
        ])
        .map(|_| ()),
    );
    ok(
        &sb,
        sb.wait_active("foreign-listener.service", Duration::from_secs(10)),
    );
    let cfg = rootful_config(&sb, |t| t);
    let (code, rep) = recover(&sb, None, &cfg, "service");
    assert_eq!(code, Some(3), "{rep:#}");
    assert_eq!(rep["stages"][0]["status"], "healthy", "{rep:#}");
    assert_eq!(rep["stages"][1]["status"], "failed", "{rep:#}");
    let mcr = rep["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "mcr-api")
        .unwrap();
    let err = mcr["start_error"].as_str().unwrap();
    assert!(err.contains("28443") && err.contains("busybox"), "{err}");
    // Nothing of the stage was started: no obscure podman failure.
    assert_eq!(
        prop_u64(
            &sb,
            None,
            "mcr-api.service",
            "InactiveExitTimestampMonotonic"
        ),
        0
    );

    // What preflight cannot see (a port published through podman_args that
    // another process holds) fails in podman; the report carries the
    // diagnosis found in the unit's journal, with its remedy.
    ok(
        &sb,
        sb.run_ok(&["systemctl", "stop", "foreign-listener.service"])
            .map(|_| ()),
    );
    let listen = [
        "systemd-run",
        "--unit=foreign-9999",
        "/bin/busybox",
        "nc",
        "-l",
        "-p",
        "9999",
    ];
    ok(&sb, sb.run_ok(&listen).map(|_| ()));
    ok(
        &sb,
        sb.wait_active("foreign-9999.service", Duration::from_secs(10)),
    );
    let cfg = rootful_config(&sb, |t| {
        let t = t.replacen(
            "[services.mcdoc]\n",
            "[services.mcdoc]\npodman_args = [\"--publish=127.0.0.1:9999:8080\"]\n",
            1,
        );
        // The last stage (services, `continue`) gives up after 5 s.
        let last = t.rfind("timeout = \"120s\"").unwrap();
        format!(
            "{}timeout = \"5s\"{}",
            &t[..last],
            &t[last + "timeout = \"120s\"".len()..]
        )
    });
    let (code, rep) = recover(&sb, None, &cfg, "service");
    assert_eq!(code, Some(1), "{rep:#}");
    let mcdoc = rep["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "mcdoc")
        .unwrap();
    assert_eq!(mcdoc["status"], "unhealthy", "{mcdoc:#}");
    let ids: Vec<&str> = mcdoc["diagnoses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"address-in-use"), "{mcdoc:#}");
}
