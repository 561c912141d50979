//! `mcrecover doctor` in REAL sandboxes (own systemd, network and hostname;
//! see `testbed/`), run inside them as an operator would:
//! - the example platform's shape (host `rift`, both production addresses,
//!   rootless `mcp` with its manager and cached images): the host checks pass,
//!   and a port held by one of OUR containers (rootlessport) is fine;
//! - a host named `orion`, a config binding an address the sandbox lacks and a
//!   Tailnet address that is down, a foreign listener on a configured port and
//!   a missing prerequisite unit: each fails with the right remedy, the holder
//!   is named, and the exit code is 1.
//!
//! Needs root and the packages of `scripts/install-deps`; with
//! MCRECOVER_REQUIRE_E2E=1 a missing prerequisite fails instead of skipping.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::path::Path;
use std::time::Duration;

use mcrecover_testbed::{e2e_gate, ImageSet, Sandbox, SandboxOptions};
use serde_json::Value;

const EXAMPLE: &str = include_str!("../examples/metacircular.toml");
const UID: u32 = 850;

fn boot(opts: SandboxOptions) -> Sandbox {
    let sb = Sandbox::boot(opts).unwrap();
    sb.install_bin(Path::new(env!("CARGO_BIN_EXE_mcrecover")), "mcrecover")
        .unwrap();
    sb
}

/// `mcrecover doctor --json --config CONFIG` inside the sandbox as root.
fn doctor(sb: &Sandbox, config: &str) -> (Option<i32>, Value) {
    let out = sb.run(&["/usr/bin/mcrecover", "doctor", "--json", "--config", config]);
    let text = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{e}: {text}\n{}", String::from_utf8_lossy(&out.stderr)));
    let table = sb.run(&["/usr/bin/mcrecover", "doctor", "--config", config]);
    eprintln!("{}", String::from_utf8_lossy(&table.stdout));
    (out.status.code(), report)
}

fn finding<'a>(report: &'a Value, check: &str) -> &'a Value {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == check)
        .unwrap_or_else(|| panic!("no finding `{check}` in {report:#}"))
}

fn status(report: &Value, check: &str) -> String {
    finding(report, check)["status"]
        .as_str()
        .unwrap()
        .to_string()
}

fn text(report: &Value, check: &str, field: &str) -> String {
    finding(report, check)[field]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn example_platform_on_rift_passes_host_checks() {
    let name = "doctor_rift";
    if !e2e_gate(name, &[]) {
        return;
    }
    let sb = boot(SandboxOptions::metacircular(name));
    sb.start_user_manager(UID).unwrap();
    sb.load_images(&ImageSet::metacircular().unwrap(), Some(UID))
        .unwrap();
    // One of our containers already publishes mcat's port (as podman does
    // after a partial recovery): rootlessport holds it, which is fine.
    sb.run_as_ok(
        UID,
        &[
            "podman",
            "run",
            "-d",
            "--name",
            "mcat",
            "-p",
            "127.0.0.1:48116:8443",
            "--entrypoint",
            "/bin/busybox",
            "mcr.svc.mcp.metacircular.net:8443/mcat:v1.2.0",
            "httpd",
            "-f",
            "-p",
            "8443",
            "-h",
            "/",
        ],
    )
    .unwrap();

    let example = sb.install_example().unwrap();
    let (_, r) = doctor(&sb, &example);
    for check in [
        "hostname",
        "user mcp",
        "subuid mcp",
        "subgid mcp",
        "bind addresses",
        "ports",
        "podman",
        "backend",
        "images",
        "unprivileged ports",
    ] {
        assert_eq!(status(&r, check), "ok", "{check}: {r:#}");
    }
    assert!(text(&r, "hostname", "explanation").contains("this machine is rift"));
    assert_ne!(status(&r, "user manager mcp"), "fail", "{r:#}");
    let bound = text(&r, "bind addresses", "explanation");
    assert!(
        bound.contains("192.168.88.181") && bound.contains("100.95.252.120"),
        "{bound}"
    );
    assert_eq!(
        text(&r, "images", "explanation"),
        "12 of 12 present in mcp's rootless storage"
    );
    let ours = "port 127.0.0.1:48116/tcp (mcat)";
    assert_eq!(status(&r, ours), "ok", "{r:#}");
    assert!(
        text(&r, ours, "explanation").contains("podman's port forwarding"),
        "{r:#}"
    );
    let fails: Vec<&Value> = r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["status"] == "fail")
        .collect();
    assert!(fails.is_empty(), "unexpected failures: {fails:#?}");

    // Archive the images (`mcrecover images save`), then lose one from the
    // storage: recover will load it from the archive, so only a warning.
    sb.run_ok(&["install", "-d", "-o", "850", "-g", "850", "/srv/mcp/images"])
        .unwrap();
    let config = sb.install_example().unwrap();
    let config = config.as_str();
    sb.run_as_ok(
        UID,
        &["/usr/bin/mcrecover", "images", "save", "--config", config],
    )
    .unwrap();
    sb.run_as_ok(
        UID,
        &[
            "podman",
            "rmi",
            "mcr.svc.mcp.metacircular.net:8443/mcdoc:v0.1.0",
        ],
    )
    .unwrap();
    let (code, r) = doctor(&sb, config);
    assert_eq!(code, Some(0), "{r:#}");
    assert_eq!(status(&r, "image mcdoc:v0.1.0"), "warn", "{r:#}");
    let why = text(&r, "image mcdoc:v0.1.0", "explanation");
    assert!(
        why.contains("archived in /srv/mcp/images/")
            && why.contains("`mcrecover recover` loads it"),
        "{why}"
    );
    assert_eq!(
        text(&r, "images", "explanation"),
        "11 of 12 present in mcp's rootless storage"
    );
}

#[test]
fn wrong_host_missing_addresses_foreign_port_and_prerequisite_fail() {
    let name = "doctor_orion";
    if !e2e_gate(name, &[]) {
        return;
    }
    let mut opts = SandboxOptions::metacircular(name);
    opts.hostname = "orion".into();
    opts.quadlet_generator = None;
    let sb = boot(opts);

    let edit = |text: &str, from: &str, to: &str| {
        assert!(text.contains(from), "example no longer has {from}");
        text.replacen(from, to, 1)
    };
    let mut cfg = edit(
        EXAMPLE,
        "\"127.0.0.1:38080:8080\"",
        "\"10.99.99.99:38080:8080\"",
    );
    cfg = edit(
        &cfg,
        "\"100.95.252.120:58080:8080\"",
        "\"100.64.7.7:58080:8080\"",
    );
    cfg = edit(
        &cfg,
        "backend = \"auto\"",
        "prerequisites = [\"dbus.service\", \"mcp-agent.service\"]\nbackend = \"auto\"",
    );
    sb.write_file("/srv/doctor.toml", cfg.as_bytes()).unwrap();

    // A foreign process holds mcr-api's port.
    sb.run_ok(&[
        "systemd-run",
        "--unit=foreign-listener",
        "/bin/busybox",
        "httpd",
        "-f",
        "-p",
        "127.0.0.1:28443",
        "-h",
        "/tmp",
    ])
    .unwrap();
    sb.wait_active("foreign-listener.service", Duration::from_secs(30))
        .unwrap();
    sb.wait_until("the foreign listener", Duration::from_secs(30), || {
        Ok(sb
            .run(&[
                "sh",
                "-c",
                &format!("grep -qi ':{:04X} ' /proc/net/tcp", 28443u16),
            ])
            .status
            .success())
    })
    .unwrap();

    let (code, r) = doctor(&sb, "/srv/doctor.toml");
    assert_eq!(code, Some(1), "{r:#}");

    assert_eq!(status(&r, "hostname"), "fail");
    assert_eq!(
        text(&r, "hostname", "explanation"),
        "this machine is orion, the config is for rift"
    );

    assert_eq!(status(&r, "bind-ip 10.99.99.99"), "fail");
    assert!(text(&r, "bind-ip 10.99.99.99", "explanation").contains("needed by mcdoc"));
    assert!(text(&r, "bind-ip 10.99.99.99", "remedy").contains("bring up the interface"));

    assert_eq!(status(&r, "bind-ip 100.64.7.7"), "fail");
    assert!(text(&r, "bind-ip 100.64.7.7", "explanation").contains("Tailscale is down"));
    assert!(text(&r, "bind-ip 100.64.7.7", "remedy").contains("tailscale up"));

    let port = "port 127.0.0.1:28443/tcp (mcr-api)";
    assert_eq!(status(&r, port), "fail", "{r:#}");
    let why = text(&r, port, "explanation");
    assert!(
        why.contains("held by busybox (pid ") && why.contains("httpd -f -p 127.0.0.1:28443"),
        "{why}"
    );

    assert_eq!(status(&r, "unit dbus.service"), "ok");
    assert_eq!(status(&r, "unit mcp-agent.service"), "fail");
    assert!(text(&r, "unit mcp-agent.service", "explanation").contains("not installed"));

    // Nothing was loaded into mcp's storage here: one finding for all twelve.
    assert_eq!(status(&r, "images missing"), "fail");
    assert!(text(&r, "images missing", "explanation")
        .starts_with("12 of 12 images are not in mcp's rootless storage: kls:v0.2.0, "));
    assert!(text(&r, "images missing", "remedy")
        .contains("podman save IMAGE | ssh mcp@rift podman load"));

    // No user manager was started here.
    assert_eq!(status(&r, "user manager mcp"), "fail");
    assert!(text(&r, "user manager mcp", "remedy").contains("loginctl enable-linger mcp"));
}
