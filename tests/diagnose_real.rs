//! `diagnose()` against REAL error output: a sandbox (real systemd, real
//! podman, rootful and rootless `mcp`) produces the failures the runbook
//! lists, and the diagnosis of podman's stderr and of the unit's journal must
//! name them: a bind IP that is not on any interface, a port already held
//! (by a foreign listener and by a first container), and a missing image with
//! `--pull=never`.
//!
//! Needs root and the packages of `scripts/install-deps`; with
//! MCRECOVER_REQUIRE_E2E=1 a missing prerequisite fails instead of skipping.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::time::Duration;

use mcrecover::diagnose::diagnose;
use mcrecover_testbed::{e2e_gate, ImageSet, ImageSpec, Sandbox, SandboxOptions};

const IMAGE: &str = "localhost/diag-httpd:1";
const UID: u32 = 850;

fn boot(name: &str) -> Option<Sandbox> {
    if !e2e_gate(name, &[]) {
        return None;
    }
    let mut opts = SandboxOptions::metacircular(name);
    opts.quadlet_generator = None;
    let sb = Sandbox::boot(opts).unwrap();
    let images = ImageSet::busybox(vec![ImageSpec::busybox_httpd(IMAGE, 8080)]);
    sb.load_images(&images, None).unwrap();
    sb.start_user_manager(UID).unwrap();
    sb.load_images(&images, Some(UID)).unwrap();
    Some(sb)
}

/// Runs `podman ARGS` as root (`None`) or as `mcp`; returns (exit code, stderr).
fn podman(sb: &Sandbox, uid: Option<u32>, args: &[&str]) -> (Option<i32>, String) {
    let mut argv = vec!["podman"];
    argv.extend_from_slice(args);
    let out = match uid {
        Some(uid) => sb.run_as(uid, &argv),
        None => sb.run(&argv),
    };
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!(
        "$ {} (uid {uid:?})\n-> {:?}\n{err}",
        argv.join(" "),
        out.status.code()
    );
    (out.status.code(), err)
}

fn ids(text: &str) -> Vec<&'static str> {
    diagnose(text).into_iter().map(|d| d.id).collect()
}

fn assert_diagnosed(text: &str, id: &str) {
    let found = ids(text);
    assert!(
        found.contains(&id),
        "expected {id} in {found:?} for:\n{text}"
    );
}

#[test]
fn real_podman_and_journal_errors_are_diagnosed() {
    let Some(sb) = boot("diagnose_real") else {
        return;
    };

    for uid in [None, Some(UID)] {
        // A bind IP that no interface has.
        let (code, err) = podman(
            &sb,
            uid,
            &[
                "run",
                "-d",
                "--name",
                "ghost-ip",
                "-p",
                "10.99.99.99:8080:8080",
                IMAGE,
            ],
        );
        assert_ne!(code, Some(0));
        assert_diagnosed(&err, "bind-ip-missing");
        podman(&sb, uid, &["rm", "-f", "ghost-ip"]);

        // A missing image with pull=never.
        let (code, err) = podman(&sb, uid, &["run", "--rm", "--pull=never", "nosuch:1"]);
        assert_ne!(code, Some(0));
        assert_eq!(ids(&err), ["image-missing"], "{err}");
        let d = &diagnose(&err)[0];
        assert!(d.matched_line.contains("nosuch:1"), "{d:?}");
    }

    // The same port twice: a first container holds 127.0.0.1:18080, a second
    // one on the same ip:port fails (rootful and rootless).
    for (uid, port) in [(None, "18080"), (Some(UID), "18090")] {
        let bind = format!("127.0.0.1:{port}:8080");
        let (code, _) = podman(
            &sb,
            uid,
            &["run", "-d", "--name", "first", "-p", &bind, IMAGE],
        );
        assert_eq!(code, Some(0));
        let (code, err) = podman(
            &sb,
            uid,
            &["run", "-d", "--name", "second", "-p", &bind, IMAGE],
        );
        assert_ne!(code, Some(0));
        assert_diagnosed(&err, "address-in-use");
        podman(&sb, uid, &["rm", "-f", "-t", "0", "first", "second"]);
    }

    // A foreign (non-podman) listener on the port; the container runs as a
    // systemd unit, so its journal is what an operator (and the daemon) reads.
    sb.run_ok(&[
        "systemd-run",
        "--unit=foreign-listener",
        "/bin/busybox",
        "httpd",
        "-f",
        "-p",
        "127.0.0.1:28080",
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
                &format!("grep -qi ':{:04X} ' /proc/net/tcp", 28080u16),
            ])
            .status
            .success())
    })
    .unwrap();
    let out = sb.run(&[
        "systemd-run",
        "--wait",
        "--unit=busy-port",
        "/usr/bin/podman",
        "run",
        "--rm",
        "--name",
        "busy-port",
        "-p",
        "127.0.0.1:28080:8080",
        IMAGE,
    ]);
    assert!(!out.status.success());
    let journal = sb.journal("busy-port.service");
    eprintln!("busy-port journal:\n{journal}");
    assert_diagnosed(&journal, "address-in-use");

    let out = sb.run(&[
        "systemd-run",
        "--wait",
        "--unit=no-image",
        "/usr/bin/podman",
        "run",
        "--rm",
        "--pull=never",
        "mcr.svc.mcp.metacircular.net:8443/mcq:v9.9.9",
    ]);
    assert!(!out.status.success());
    let journal = sb.journal("no-image.service");
    eprintln!("no-image journal:\n{journal}");
    assert_diagnosed(&journal, "image-missing");
}
