//! `mcrecover drift` end to end, in a REAL sandbox (systemd + rootless podman
//! as `mcp`, uid 850, the example platform's stand-in images): after a
//! recovery and `mcrecover images save`, no drift (exit 0); then a
//! deploy-like `podman run -d --replace --name mcq <another tag>` outside the
//! unit (as `mcp deploy` does), with the MCP definition moved to that tag:
//! drift shows running != configured and MCP != configured, exit 1, the JSON
//! names the service and both images; then an archive index whose entry for
//! kls is an older tag: shown as stale. The daemon's entry point,
//! `drift::running_vs_configured`, is run through transient units of the
//! sandbox's manager (`PodmanRunner::Transient`), as the daemon runs podman.
//!
//! Needs root and the packages of `scripts/install-deps`; with
//! MCRECOVER_REQUIRE_E2E=1 a missing prerequisite fails instead of skipping.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use mcrecover::drift::{running_vs_configured, DriftChange, DriftTracker};
use mcrecover::drive::{BusTarget, Systemd};
use mcrecover::images::PodmanRunner;
use mcrecover_testbed::{e2e_gate, ImageSet, Sandbox, SandboxOptions, TestbedError};
use serde_json::Value;

const EXAMPLE: &str = include_str!("../examples/metacircular.toml");
const UID: u32 = 850;
const REG: &str = "mcr.svc.mcp.metacircular.net:8443";
const ARCHIVE: &str = "/srv/mcp/images";
const MCP_DIR: &str = "/srv/mcp-definitions";

fn ok<T>(sb: &Sandbox, r: Result<T, TestbedError>) -> T {
    r.unwrap_or_else(|e| panic!("{e}\njournal:\n{}", sb.journal_all()))
}

/// `mcrecover --config EXAMPLE ARGS` inside the sandbox, as root (`None`) or `uid`.
fn mcrecover(sb: &Sandbox, uid: Option<u32>, args: &[&str]) -> Output {
    let cfg = sb.install_example().unwrap();
    let mut argv = vec!["/usr/bin/mcrecover", "--config", &cfg];
    argv.extend_from_slice(args);
    let out = match uid {
        Some(uid) => sb.run_as(uid, &argv),
        None => sb.run(&argv),
    };
    eprintln!(
        "$ mcrecover {}\n-> {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        args.join(" "),
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

fn service<'a>(rep: &'a Value, name: &str) -> &'a Value {
    rep["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service"] == name)
        .unwrap_or_else(|| panic!("{name} not in {rep:#}"))
}

fn kinds(svc: &Value) -> Vec<String> {
    svc["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["kind"].as_str().unwrap().to_string())
        .collect()
}

/// An MCP service definition of mcq on rift with `image`.
fn mcq_definition(sb: &Sandbox, image: &str) {
    let def = format!(
        "name = \"mcq\"\nnode = \"rift\"\n\n[[components]]\nname = \"mcq\"\nimage = \"{image}\"\n\
         volumes = [\"/srv/mcq:/srv/mcq\"]\ncmd = [\"server\", \"--config\", \"/srv/mcq/mcq.toml\"]\n"
    );
    ok(
        sb,
        sb.write_file(&format!("{MCP_DIR}/mcq.toml"), def.as_bytes()),
    );
}

/// `mcq.service`'s ActiveState in mcp's manager.
fn unit_state(sb: &Sandbox) -> String {
    let out = sb.run_as(
        UID,
        &[
            "systemctl",
            "--user",
            "show",
            "-P",
            "ActiveState",
            "mcq.service",
        ],
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The image of the running container `mcq` in mcp's storage (empty: none).
fn running_mcq(sb: &Sandbox) -> String {
    let out = sb.run_as(
        UID,
        &[
            "podman",
            "ps",
            "--filter",
            "name=^mcq$",
            "--format",
            "{{.Image}}",
        ],
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn drift_after_a_deploy_outside_the_unit() {
    if !e2e_gate("drift_after_a_deploy_outside_the_unit", &[]) {
        return;
    }
    let images = ImageSet::metacircular().unwrap();
    let mut opts = SandboxOptions::metacircular("drift-e2e");
    opts.quadlet_generator = None;
    let sb = Sandbox::boot(opts).unwrap();
    ok(
        &sb,
        sb.install_bin(Path::new(env!("CARGO_BIN_EXE_mcrecover")), "mcrecover"),
    );
    ok(&sb, sb.start_user_manager(UID));
    ok(&sb, sb.load_images(&images, Some(UID)));

    // Recovery, then the cold-start archive (run as root: podman as mcp).
    let out = mcrecover(
        &sb,
        Some(UID),
        &["recover", "--json", "--quiet", "--backend", "service"],
    );
    assert_eq!(out.status.code(), Some(0), "journal:\n{}", sb.journal_all());
    let out = mcrecover(&sb, None, &["images", "save"]);
    assert_eq!(out.status.code(), Some(0));
    let mcq = format!("{REG}/mcq:v0.4.2");
    mcq_definition(&sb, &mcq);

    // (1) No drift: as root (podman through runuser as mcp), text.
    let out = mcrecover(&sb, None, &["drift", "--mcp-dir", MCP_DIR]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("storage: mcp's podman storage"), "{text}");
    assert!(text.trim_end().ends_with("no drift"), "{text}");
    // As mcp, JSON: every service runs its configured image, archived.
    let out = mcrecover(&sb, Some(UID), &["drift", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let rep = json(&out);
    assert_eq!(rep["drift"], false);
    let services = rep["services"].as_array().unwrap();
    assert_eq!(services.len(), 12, "external mcias is skipped: {rep:#}");
    for s in services {
        assert_eq!(s["running"]["state"], "running", "{s:#}");
        assert_eq!(s["running"]["image"], s["configured"], "{s:#}");
        assert_eq!(s["running"]["id"], s["configured_id"], "{s:#}");
        assert!(s["running"]["digest"]
            .as_str()
            .is_some_and(|d| d.starts_with("sha256:")));
        assert_eq!(s["archive"]["state"], "archived", "{s:#}");
        assert_eq!(s["mcp"], Value::Null);
    }

    // (2) A deploy outside the unit: another tag of the same stand-in image,
    // and the MCP definition says that tag.
    let next = format!("{REG}/mcq:v0.4.3");
    ok(&sb, sb.run_as_ok(UID, &["podman", "tag", &mcq, &next]));
    mcq_definition(&sb, &next);
    let deploy = [
        "podman",
        "run",
        "-d",
        "--replace",
        "--name",
        "mcq",
        "--volume",
        "/srv/mcq:/srv/mcq",
        &next,
        "server",
        "--config",
        "/srv/mcq/mcq.toml",
    ];
    ok(&sb, sb.run_as_ok(UID, &deploy));
    // The replaced container was the unit's main process: the unit stops.
    // Its ExecStop/ExecStopPost act only on a container labelled with the
    // unit (issue 13, part 2), so the deployed one stays; should an older
    // unit file have removed it anyway, deploy again once the unit settled.
    ok(
        &sb,
        sb.wait_until("mcq.service to stop", Duration::from_secs(60), || {
            Ok(matches!(unit_state(&sb).as_str(), "inactive" | "failed"))
        }),
    );
    if running_mcq(&sb) != next {
        ok(&sb, sb.run_as_ok(UID, &deploy));
    }
    assert_eq!(running_mcq(&sb), next);

    let out = mcrecover(&sb, Some(UID), &["drift", "--json", "--mcp-dir", MCP_DIR]);
    assert_eq!(out.status.code(), Some(1));
    let rep = json(&out);
    assert_eq!(rep["drift"], true);
    let s = service(&rep, "mcq");
    assert_eq!(s["configured"], mcq.as_str());
    assert_eq!(s["running"]["image"], next.as_str());
    assert_eq!(s["running"]["state"], "running");
    // Same content under another tag: the IDs agree, the references do not.
    assert_eq!(s["running"]["id"], s["configured_id"]);
    assert_eq!(s["mcp"]["image"], next.as_str());
    assert_eq!(kinds(s), ["running_differs", "mcp_differs"], "{s:#}");
    let d = &s["differences"][0];
    assert!(
        d["detail"].as_str().unwrap().contains(&next)
            && d["detail"].as_str().unwrap().contains(&mcq),
        "{d:#}"
    );
    assert!(d["remedy"]
        .as_str()
        .unwrap()
        .contains("deployed outside mcrecover"));
    assert!(s["differences"][1]["remedy"]
        .as_str()
        .unwrap()
        .contains("mcrecover import-mcp --merge /srv/metacircular.toml /srv/mcp-definitions"));
    for other in rep["services"].as_array().unwrap() {
        if other["service"] != "mcq" {
            assert_eq!(kinds(other), Vec::<String>::new(), "{other:#}");
            assert_eq!(other["mcp"]["state"], "absent");
        }
    }
    // What the daemon would call: the same facts through transient units of
    // the sandbox's system manager (`User=mcp`), each change once.
    let cfg = mcrecover::config::parse(EXAMPLE, Path::new(Sandbox::EXAMPLE_INSIDE)).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let drifting = rt.block_on(async {
        let sd = Systemd::connect(&BusTarget::Address(sb.bus_address()))
            .await
            .unwrap();
        running_vs_configured(&cfg, &PodmanRunner::Transient(sd))
            .await
            .unwrap()
    });
    assert_eq!(drifting.len(), 1, "{drifting:#?}");
    assert_eq!(drifting[0].service, "mcq");
    assert_eq!(drifting[0].configured, mcq);
    assert_eq!(drifting[0].running.image, next);
    let mut tracker = DriftTracker::default();
    assert_eq!(
        tracker.update(&drifting),
        vec![DriftChange::Drifted(drifting[0].clone())]
    );
    assert!(tracker.update(&drifting).is_empty());

    // The text, as root.
    let out = mcrecover(&sb, None, &["drift"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("mcq:v0.4.3"), "{text}");
    assert!(
        text.contains("the running container was deployed outside mcrecover"),
        "{text}"
    );
    assert!(text.contains("1 difference in 1 service"), "{text}");

    // (3) The archive's entry for kls is an older tag (saved before an upgrade).
    let index_path = sb.host_path(&format!("{ARCHIVE}/index.json"));
    let mut index: serde_json::Map<String, Value> =
        serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    let kls = index.remove(&format!("{REG}/kls:v0.2.0")).unwrap();
    index.insert(format!("{REG}/kls:v0.1.9"), kls);
    std::fs::write(&index_path, serde_json::to_vec_pretty(&index).unwrap()).unwrap();
    let out = mcrecover(&sb, Some(UID), &["drift", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let rep = json(&out);
    let s = service(&rep, "kls");
    assert_eq!(kinds(s), ["archive_stale"], "{s:#}");
    assert_eq!(s["archive"]["state"], "not_archived");
    assert_eq!(
        s["archive"]["other"][0]["image"],
        format!("{REG}/kls:v0.1.9")
    );
    assert!(s["differences"][0]["remedy"]
        .as_str()
        .unwrap()
        .contains("mcrecover images save"));
    let out = mcrecover(&sb, None, &["drift"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("OLD: kls:v0.1.9"), "{text}");
    assert!(text.contains("2 differences in 2 services"), "{text}");
}

/// Exit codes without a sandbox: 2 for an invalid configuration and for an
/// invalid MCP definition (read before podman is asked anything).
#[test]
fn invalid_inputs_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[platform]\nname = \"p\"\nmode = \"sideways\"\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mcrecover"))
        .args(["--config", bad.to_str().unwrap(), "drift"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");

    let defs = dir.path().join("defs");
    std::fs::create_dir(&defs).unwrap();
    std::fs::write(defs.join("mcq.toml"), "name = \"mcq\"\n[[components]\n").unwrap();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/metacircular.toml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mcrecover"))
        .args([
            "--config",
            example,
            "drift",
            "--mcp-dir",
            defs.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("mcq.toml: not valid TOML"), "{err}");
}
