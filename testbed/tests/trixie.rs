//! The testbed's trixie base ([`Base::Trixie`]): everything the host base offers, on Debian
//! trixie's systemd 257 and podman 5.4 (root filesystem from `scripts/build-trixie-rootfs`, found
//! via MCRECOVER_TRIXIE_ROOTFS). Skipped with the command that builds it when the root filesystem
//! is missing; a failure under MCRECOVER_REQUIRE_E2E=1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use support::{images, members, ok, still_running, wait_http, IMAGE, WAIT};

use mcrecover_testbed::{e2e_gate, Base, RootlessUser, Sandbox, SandboxOptions};

fn trixie(test: &str) -> Option<Base> {
    let missing: Vec<String> = mcrecover_testbed::trixie_missing().into_iter().collect();
    if !e2e_gate(test, &missing) {
        return None;
    }
    Some(Base::trixie().unwrap())
}

#[test]
fn trixie_boots_with_the_host_bases_features_and_tears_down() {
    let Some(base) = trixie("trixie_boots_with_the_host_bases_features_and_tears_down") else {
        return;
    };
    let Base::Trixie(rootfs) = base.clone() else {
        unreachable!()
    };
    let passwd_before = std::fs::read(rootfs.join("etc/passwd")).unwrap();
    let sb = Sandbox::boot(SandboxOptions {
        name: "trixie-boot".into(),
        base,
        srv_dirs: vec!["mcns".into(), "mcr/web".into()],
        ..SandboxOptions::default()
    })
    .unwrap();
    assert_eq!(sb.info().base.name(), "trixie");
    // The system bus answers from the host; systemd 257 reports itself running (not degraded).
    let out = std::process::Command::new("busctl")
        .arg(format!("--address={}", sb.bus_address()))
        .args([
            "get-property",
            "org.freedesktop.systemd1",
            "/org/freedesktop/systemd1",
            "org.freedesktop.systemd1.Manager",
            "Version",
        ])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("s \"257"),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        ok(&sb, sb.run_ok(&["systemctl", "is-system-running"])).trim(),
        "running"
    );
    // Hostname, production addresses, low ports, /srv with the CA: as on the host base.
    assert_eq!(ok(&sb, sb.run_ok(&["hostname"])).trim(), "rift");
    let addrs = ok(&sb, sb.run_ok(&["ip", "-4", "addr", "show", "dev", "lo"]));
    assert!(
        addrs.contains("192.168.88.181/32") && addrs.contains("100.95.252.120/32"),
        "{addrs}"
    );
    let port = ok(
        &sb,
        sb.run_ok(&["sysctl", "-n", "net.ipv4.ip_unprivileged_port_start"]),
    );
    assert_eq!(port.trim(), "0");
    assert_eq!(
        ok(&sb, sb.run_ok(&["cat", "/srv/mcp/ca.pem"])),
        sb.ca().cert_pem
    );
    assert_eq!(
        ok(&sb, sb.run_ok(&["cat", "/srv/mcr/web/.standin/ca.key"])),
        sb.ca().key_pem
    );
    // The platform user exists inside (rootful hooks run as it), only in the sandbox's /etc.
    let id = ok(&sb, sb.run_ok(&["id", "mcp"]));
    assert!(id.contains("uid=850(mcp)"), "{id}");
    // Rootful storage on the host's disk, not on the overlay root.
    let fs = ok(
        &sb,
        sb.run_ok(&[
            "stat",
            "-f",
            "-c",
            "%T",
            &sb.state_dir().join("storage").to_string_lossy(),
        ]),
    );
    assert_ne!(fs.trim(), "overlayfs");
    // A rootful podman unit publishes a port (crun, netavark).
    ok(&sb, sb.load_images(&images(), None));
    ok(
        &sb,
        sb.write_file(
            "/run/systemd/system/tb-web.service",
            format!("[Service]\nExecStart=/usr/bin/podman run --rm --name tb-web -p 192.168.88.181:28080:8080 {IMAGE}\n")
                .as_bytes(),
        ),
    );
    ok(&sb, sb.run_ok(&["systemctl", "daemon-reload"]));
    ok(&sb, sb.run_ok(&["systemctl", "start", "tb-web.service"]));
    ok(&sb, sb.wait_active("tb-web.service", WAIT));
    wait_http(&sb, None, "http://192.168.88.181:28080/");

    let procs = members(&sb.info().pid_namespace);
    let state = sb.state_dir().to_path_buf();
    assert!(procs.len() > 2, "{procs:?}");
    drop(sb);
    assert_eq!(still_running(&procs), Vec::<u32>::new());
    assert!(!state.exists());
    // The shared root filesystem was not written.
    assert_eq!(
        std::fs::read(rootfs.join("etc/passwd")).unwrap(),
        passwd_before
    );
    assert!(!rootfs.join("oldroot").exists());
}

#[test]
fn trixie_rootless_user_runs_a_container_and_a_native_quadlet() {
    let Some(base) = trixie("trixie_rootless_user_runs_a_container_and_a_native_quadlet") else {
        return;
    };
    let user = RootlessUser::mcp();
    let uid = user.uid;
    let sb = Sandbox::boot(SandboxOptions {
        name: "trixie-rootless".into(),
        base,
        rootless_user: Some(user),
        srv_dirs: vec!["mcq".into()],
        ..SandboxOptions::default()
    })
    .unwrap();
    ok(&sb, sb.start_user_manager(uid));
    ok(&sb, sb.load_images(&images(), Some(uid)));
    // A .container in mcp's ~/.config/containers/systemd, read by the native user generator.
    ok(
        &sb,
        sb.write_file(
            "/srv/mcp/.config/containers/systemd/tb-rootless.container",
            format!("[Container]\nImage={IMAGE}\nContainerName=tb-rootless\nPublishPort=100.95.252.120:48080:8080\nVolume=/srv/mcq:/srv/mcq\n").as_bytes(),
        ),
    );
    for dir in [
        "/srv/mcp/.config/containers/systemd",
        "/srv/mcp/.config/containers/systemd/tb-rootless.container",
    ] {
        ok(&sb, sb.chown(dir, uid));
    }
    ok(
        &sb,
        sb.run_as_ok(uid, &["systemctl", "--user", "daemon-reload"]),
    );
    ok(
        &sb,
        sb.run_as_ok(
            uid,
            &["systemctl", "--user", "start", "tb-rootless.service"],
        ),
    );
    ok(&sb, sb.wait_user_active(uid, "tb-rootless.service", WAIT));
    wait_http(&sb, Some(uid), "http://100.95.252.120:48080/");
    let key = ok(
        &sb,
        sb.run_as_ok(
            uid,
            &[
                "podman",
                "exec",
                "tb-rootless",
                "cat",
                "/srv/mcq/.standin/ca.key",
            ],
        ),
    );
    assert_eq!(key, sb.ca().key_pem);
    ok(&sb, sb.run_as_ok(uid, &["podman", "logs", "tb-rootless"]));
    let owners = ok(
        &sb,
        sb.run_as_ok(uid, &["podman", "top", "tb-rootless", "huser"]),
    );
    assert!(
        owners.lines().skip(1).all(|l| l.trim() == "850"),
        "{owners}"
    );
}

#[test]
fn trixie_sandboxes_of_dead_owners_are_reaped() {
    let Some(base) = trixie("trixie_sandboxes_of_dead_owners_are_reaped") else {
        return;
    };
    let sb = Sandbox::boot(SandboxOptions {
        name: "trixie-reap".into(),
        base,
        ..SandboxOptions::default()
    })
    .unwrap();
    let procs = members(&sb.info().pid_namespace);
    let mut info = sb.detach().unwrap();
    info.owner = Some((0, 0));
    let state_file = info.state_dir.join("state.json");
    std::fs::write(&state_file, serde_json::to_string(&info).unwrap()).unwrap();
    mcrecover_testbed::reap_stale();
    for _ in 0..100 {
        if !info.state_dir.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(still_running(&procs), Vec::<u32>::new());
    assert!(!info.state_dir.exists());
}
