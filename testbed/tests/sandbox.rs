//! End-to-end proof of the testbed: real systemd sandboxes, rootful podman under a system unit,
//! the real quadlet generator, and rootless podman under `user@850`. Needs root and the packages
//! of scripts/install-deps; with MCRECOVER_REQUIRE_E2E=1 a missing prerequisite fails the test.
//! The four tests run in parallel, each in its own sandbox, on the same addresses and ports.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use support::{images, members, ok, still_running, wait_http, IMAGE, WAIT};

use mcrecover_testbed::{e2e_gate, quadlet_binary, RootlessUser, Sandbox, SandboxOptions};

#[test]
fn boots_real_systemd_and_tears_down_completely() {
    if !e2e_gate("boots_real_systemd_and_tears_down_completely", &[]) {
        return;
    }
    let sb = Sandbox::boot(SandboxOptions {
        name: "boot".into(),
        srv_dirs: vec!["mcns".into(), "mcr/web".into()],
        ..SandboxOptions::default()
    })
    .unwrap();

    // The system bus answers from the host, and systemd reports itself running.
    let out = std::process::Command::new("busctl")
        .arg(format!("--address={}", sb.bus_address()))
        .args([
            "get-property",
            "org.freedesktop.systemd1",
            "/org/freedesktop/systemd1",
            "org.freedesktop.systemd1.Manager",
            "SystemState",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "s \"running\"");

    // Its own hostname, addresses and unprivileged low ports; its own /srv with the CA.
    assert_eq!(sb.run_ok(&["hostname"]).unwrap().trim(), "rift");
    let addrs = sb
        .run_ok(&["ip", "-4", "addr", "show", "dev", "lo"])
        .unwrap();
    assert!(
        addrs.contains("192.168.88.181/32") && addrs.contains("100.95.252.120/32"),
        "{addrs}"
    );
    let port = sb
        .run_ok(&["sysctl", "-n", "net.ipv4.ip_unprivileged_port_start"])
        .unwrap();
    assert_eq!(port.trim(), "0");
    let ca = sb.run_ok(&["cat", "/srv/mcp/ca.pem"]).unwrap();
    assert_eq!(ca, sb.ca().cert_pem);
    let key = sb.run_ok(&["cat", "/srv/mcr/web/.standin/ca.key"]).unwrap();
    assert_eq!(key, sb.ca().key_pem);
    assert!(!std::path::Path::new("/srv/mcr/web/.standin").exists());

    let procs = members(&sb.info().pid_namespace);
    let state = sb.state_dir().to_path_buf();
    assert!(procs.len() > 2, "{procs:?}"); // systemd, journald, dbus at least
    drop(sb);
    assert_eq!(still_running(&procs), Vec::<u32>::new());
    assert!(!state.exists());
}

#[test]
fn rootful_podman_unit_publishes_a_port() {
    if !e2e_gate("rootful_podman_unit_publishes_a_port", &[]) {
        return;
    }
    let sb = Sandbox::boot(SandboxOptions {
        name: "rootful".into(),
        ..SandboxOptions::default()
    })
    .unwrap();
    sb.load_images(&images(), None).unwrap();
    sb.write_file(
        "/run/systemd/system/tb-web.service",
        format!(
            "[Service]\nExecStart=/usr/bin/podman run --rm --name tb-web -p 127.0.0.1:18080:8080 {IMAGE}\n"
        )
        .as_bytes(),
    )
    .unwrap();
    sb.run_ok(&["systemctl", "daemon-reload"]).unwrap();
    sb.run_ok(&["systemctl", "start", "tb-web.service"])
        .unwrap();
    sb.wait_active("tb-web.service", WAIT).unwrap();
    wait_http(&sb, None, "http://127.0.0.1:18080/");
}

#[test]
fn quadlet_container_becomes_a_running_service() {
    let quadlet = quadlet_binary();
    let missing = match &quadlet {
        Some(_) => vec![],
        None => {
            vec!["no quadlet binary (run scripts/fetch-quadlet or set MCRECOVER_QUADLET)".into()]
        }
    };
    if !e2e_gate("quadlet_container_becomes_a_running_service", &missing) {
        return;
    }
    let sb = Sandbox::boot(SandboxOptions {
        name: "quadlet".into(),
        quadlet_generator: quadlet,
        ..SandboxOptions::default()
    })
    .unwrap();
    sb.load_images(&images(), None).unwrap();
    sb.write_file(
        "/run/containers/systemd/tb-quadlet.container",
        format!(
            "[Container]\nImage={IMAGE}\nContainerName=tb-quadlet\nPublishPort=127.0.0.1:28080:8080\n"
        )
        .as_bytes(),
    )
    .unwrap();
    sb.run_ok(&["systemctl", "daemon-reload"]).unwrap();
    let unit = sb
        .run_ok(&["systemctl", "cat", "tb-quadlet.service"])
        .unwrap();
    assert!(unit.contains("podman-system-generator"), "{unit}");
    ok(
        &sb,
        sb.run_ok(&["systemctl", "start", "tb-quadlet.service"]),
    );
    sb.wait_active("tb-quadlet.service", WAIT).unwrap();
    wait_http(&sb, None, "http://127.0.0.1:28080/");
}

#[test]
fn rootless_user_manager_runs_a_container_as_850() {
    if !e2e_gate("rootless_user_manager_runs_a_container_as_850", &[]) {
        return;
    }
    let user = RootlessUser::mcp();
    let uid = user.uid;
    let sb = Sandbox::boot(SandboxOptions {
        name: "rootless".into(),
        rootless_user: Some(user),
        srv_dirs: vec!["mcq".into()],
        ..SandboxOptions::default()
    })
    .unwrap();
    sb.start_user_manager(uid).unwrap();
    sb.load_images(&images(), Some(uid)).unwrap();
    sb.write_file(
        "/run/systemd/user/tb-rootless.service",
        format!(
            "[Service]\nExecStart=/usr/bin/podman run --rm --name tb-rootless -p 100.95.252.120:48080:8080 -v /srv/mcq:/srv/mcq {IMAGE}\n"
        )
        .as_bytes(),
    )
    .unwrap();
    sb.run_as_ok(uid, &["systemctl", "--user", "daemon-reload"])
        .unwrap();
    sb.run_as_ok(
        uid,
        &["systemctl", "--user", "start", "tb-rootless.service"],
    )
    .unwrap();
    sb.wait_user_active(uid, "tb-rootless.service", WAIT)
        .unwrap();
    wait_http(&sb, Some(uid), "http://100.95.252.120:48080/");

    // The container sees its volume, and the CA key there is readable by the platform user.
    let key = sb
        .run_as_ok(
            uid,
            &[
                "podman",
                "exec",
                "tb-rootless",
                "cat",
                "/srv/mcq/.standin/ca.key",
            ],
        )
        .unwrap();
    assert_eq!(key, sb.ca().key_pem);
    // The user can read its containers' logs (journald log driver).
    ok(&sb, sb.run_as_ok(uid, &["podman", "logs", "tb-rootless"]));
    // Its processes run as uid 850 on the host (rootless), not as root.
    let owners = sb
        .run_as_ok(uid, &["podman", "top", "tb-rootless", "huser"])
        .unwrap();
    assert!(
        owners.lines().skip(1).all(|l| l.trim() == "850"),
        "{owners}"
    );
}

#[test]
fn rootless_quadlet_container_runs_under_user_manager() {
    let quadlet = quadlet_binary();
    let missing = match &quadlet {
        Some(_) => vec![],
        None => {
            vec!["no quadlet binary (run scripts/fetch-quadlet or set MCRECOVER_QUADLET)".into()]
        }
    };
    if !e2e_gate(
        "rootless_quadlet_container_runs_under_user_manager",
        &missing,
    ) {
        return;
    }
    let user = RootlessUser::mcp();
    let uid = user.uid;
    let sb = Sandbox::boot(SandboxOptions {
        name: "rootless-quadlet".into(),
        rootless_user: Some(user),
        quadlet_generator: quadlet,
        srv_dirs: vec!["mcq".into()],
        ..SandboxOptions::default()
    })
    .unwrap();
    ok(&sb, sb.start_user_manager(uid));
    ok(&sb, sb.load_images(&images(), Some(uid)));
    sb.write_file(
        &format!("/etc/containers/systemd/users/{uid}/tb-uq.container"),
        format!(
            "[Container]\nImage={IMAGE}\nContainerName=tb-uq\nPublishPort=100.95.252.120:48080:8080\nVolume=/srv/mcq:/srv/mcq\n"
        )
        .as_bytes(),
    )
    .unwrap();
    ok(
        &sb,
        sb.run_as_ok(uid, &["systemctl", "--user", "daemon-reload"]),
    );
    ok(
        &sb,
        sb.run_as_ok(uid, &["systemctl", "--user", "start", "tb-uq.service"]),
    );
    ok(&sb, sb.wait_user_active(uid, "tb-uq.service", WAIT));
    wait_http(&sb, Some(uid), "http://100.95.252.120:48080/");
    // Stop/start again: the harness's cidfile drop-in applies to user units too.
    ok(
        &sb,
        sb.run_as_ok(uid, &["systemctl", "--user", "restart", "tb-uq.service"]),
    );
    ok(&sb, sb.wait_user_active(uid, "tb-uq.service", WAIT));
}

#[test]
fn metacircular_images_load_into_rootless_storage() {
    if !e2e_gate("metacircular_images_load_into_rootless_storage", &[]) {
        return;
    }
    let set = mcrecover_testbed::ImageSet::metacircular().unwrap();
    let user = RootlessUser::mcp();
    let uid = user.uid;
    let sb = Sandbox::boot(SandboxOptions {
        name: "metacircular-images".into(),
        rootless_user: Some(user),
        srv_dirs: mcrecover_testbed::metacircular_srv_dirs(),
        ..SandboxOptions::default()
    })
    .unwrap();
    ok(&sb, sb.start_user_manager(uid));
    ok(&sb, sb.load_images(&set, Some(uid)));
    let listed = ok(
        &sb,
        sb.run_as_ok(
            uid,
            &["podman", "images", "--format", "{{.Repository}}:{{.Tag}}"],
        ),
    );
    for svc in mcrecover_testbed::METACIRCULAR_SERVICES {
        assert!(
            listed.contains(&svc.reference()),
            "{} missing:\n{listed}",
            svc.reference()
        );
    }
    let mcq = mcrecover_testbed::metacircular_service("mcq").unwrap();
    let config = ok(
        &sb,
        sb.run_as_ok(
            uid,
            &[
                "podman",
                "image",
                "inspect",
                "--format",
                "{{json .Config}}",
                &mcq.reference(),
            ],
        ),
    );
    assert!(config.contains("STANDIN_DIR=/srv/mcq"), "{config}");
    assert!(config.contains("STANDIN_LISTEN=https:8080"), "{config}");
    assert!(config.contains("\"/standin\""), "{config}");
    // The stand-in and its shared libraries are in the image: the dynamic loader can resolve it.
    let out = sb.run_as(
        uid,
        &[
            "podman",
            "run",
            "--rm",
            "--entrypoint",
            "/bin/busybox",
            &mcq.reference(),
            "test",
            "-x",
            "/standin",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_panicking_test_still_tears_its_sandbox_down() {
    if !e2e_gate("a_panicking_test_still_tears_its_sandbox_down", &[]) {
        return;
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let joined = std::thread::spawn(move || {
        let sb = Sandbox::boot(SandboxOptions {
            name: "panic".into(),
            ..SandboxOptions::default()
        })
        .unwrap();
        tx.send((
            members(&sb.info().pid_namespace),
            sb.state_dir().to_path_buf(),
        ))
        .unwrap();
        panic!("deliberate panic with a live sandbox");
    })
    .join();
    assert!(joined.is_err());
    let (procs, state) = rx.recv().unwrap();
    assert!(!procs.is_empty());
    assert_eq!(still_running(&procs), Vec::<u32>::new());
    assert!(!state.exists());
}

#[test]
fn sandboxes_of_dead_owners_are_reaped() {
    if !e2e_gate("sandboxes_of_dead_owners_are_reaped", &[]) {
        return;
    }
    let sb = Sandbox::boot(SandboxOptions {
        name: "reap".into(),
        ..SandboxOptions::default()
    })
    .unwrap();
    let procs = members(&sb.info().pid_namespace);
    let mut info = sb.detach().unwrap();
    // Pretend its owner was a test process that has since died (PID 0 never matches).
    info.owner = Some((0, 0));
    let state_file = info.state_dir.join("state.json");
    std::fs::write(&state_file, serde_json::to_string(&info).unwrap()).unwrap();
    // (Another test's boot may reap it first: check the outcome, not the count.)
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
