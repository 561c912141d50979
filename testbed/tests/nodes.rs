//! Two sandboxes as two nodes of one platform (issue 13, part 4): rift with its production
//! addresses, svc with its own, one CA, joined by `Sandbox::link`. A container published by
//! rootful podman on svc's address answers rift; the host reaches neither. Needs root and the
//! packages of scripts/install-deps; with MCRECOVER_REQUIRE_E2E=1 a missing prerequisite fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::{images, ok, wait_http, IMAGE};

use mcrecover_testbed::{e2e_gate, Sandbox, SandboxOptions, TestCa, RIFT_ADDRESSES, SVC_ADDRESS};

#[test]
fn two_linked_nodes_reach_each_others_addresses() {
    if !e2e_gate("two_linked_nodes_reach_each_others_addresses", &[]) {
        return;
    }
    let ca = TestCa::generate().unwrap();
    let svc_opts = SandboxOptions {
        name: "node-svc".into(),
        hostname: "svc".into(),
        addresses: vec![SVC_ADDRESS.into()],
        ca: Some(ca.clone()),
        ..SandboxOptions::default()
    };
    // Both boot at once, as two machines would.
    let svc = std::thread::spawn(move || Sandbox::boot(svc_opts).unwrap());
    let rift = Sandbox::boot(SandboxOptions {
        name: "node-rift".into(),
        ca: Some(ca.clone()),
        ..SandboxOptions::default()
    })
    .unwrap();
    let svc = svc.join().unwrap();
    assert_eq!(rift.addresses(), RIFT_ADDRESSES);
    assert_eq!(svc.addresses(), [SVC_ADDRESS]);
    assert_eq!(rift.ca().cert_pem, ca.cert_pem);
    assert_eq!(svc.ca().cert_pem, ca.cert_pem);
    let lo = ok(
        &svc,
        svc.run_ok(&["ip", "-o", "-4", "addr", "show", "dev", "lo"]),
    );
    assert!(lo.contains(SVC_ADDRESS), "{lo}");
    assert!(!lo.contains(RIFT_ADDRESSES[0]), "{lo}");
    assert_eq!(ok(&svc, svc.run_ok(&["hostname"])).trim(), "svc");

    // Before the link, rift has no route to svc.
    let before = rift.run(&["ip", "route", "get", SVC_ADDRESS]);
    assert!(!before.status.success(), "rift routes to svc unlinked");
    ok(&rift, rift.link(&svc));
    let route = ok(&rift, rift.run_ok(&["ip", "route", "get", SVC_ADDRESS]));
    assert!(
        route.contains("dev tb-svc") && route.contains(&format!("src {}", RIFT_ADDRESSES[0])),
        "{route}"
    );
    let back = ok(&svc, svc.run_ok(&["ip", "route", "get", RIFT_ADDRESSES[1]]));
    assert!(
        back.contains("dev tb-rift") && back.contains(&format!("src {SVC_ADDRESS}")),
        "{back}"
    );

    // A rootful container on svc, published on svc's address only, answers rift.
    ok(&svc, svc.load_images(&images(), None));
    let publish = format!("{SVC_ADDRESS}:8080:8080");
    ok(
        &svc,
        svc.run_ok(&[
            "podman", "run", "-d", "--name", "web", "-p", &publish, IMAGE,
        ]),
    );
    wait_http(&rift, None, &format!("http://{SVC_ADDRESS}:8080/"));
    // The host has no such route (a sandbox's network is its own).
    let host = std::process::Command::new("ip")
        .args(["route", "get", SVC_ADDRESS])
        .output()
        .unwrap();
    let host_route = String::from_utf8_lossy(&host.stdout);
    assert!(!host_route.contains("tb-"), "{host_route}");
}

/// The production shape: rootless podman (user mcp, its own manager) on svc publishes on svc's
/// address; rift reaches it over the link.
#[test]
fn a_rootless_container_on_svc_answers_rift() {
    if !e2e_gate("a_rootless_container_on_svc_answers_rift", &[]) {
        return;
    }
    let user = mcrecover_testbed::RootlessUser::mcp();
    let uid = user.uid;
    let svc_opts = SandboxOptions {
        name: "node-svc-rootless".into(),
        hostname: "svc".into(),
        addresses: vec![SVC_ADDRESS.into()],
        rootless_user: Some(user),
        ..SandboxOptions::default()
    };
    let svc = std::thread::spawn(move || Sandbox::boot(svc_opts).unwrap());
    let rift = Sandbox::boot(SandboxOptions {
        name: "node-rift-rootless".into(),
        ..SandboxOptions::default()
    })
    .unwrap();
    let svc = svc.join().unwrap();
    ok(&rift, svc.link(&rift));
    ok(&svc, svc.start_user_manager(uid));
    ok(&svc, svc.load_images(&images(), Some(uid)));
    let unit = format!(
        "[Service]\nExecStart=/usr/bin/podman run --rm --name tb-web -p {SVC_ADDRESS}:48443:8080 {IMAGE}\n"
    );
    ok(
        &svc,
        svc.write_file("/run/systemd/user/tb-web.service", unit.as_bytes()),
    );
    ok(
        &svc,
        svc.run_as_ok(uid, &["systemctl", "--user", "daemon-reload"]),
    );
    ok(
        &svc,
        svc.run_as_ok(uid, &["systemctl", "--user", "start", "tb-web.service"]),
    );
    ok(
        &svc,
        svc.wait_user_active(uid, "tb-web.service", support::WAIT),
    );
    wait_http(&rift, None, &format!("http://{SVC_ADDRESS}:48443/"));
}
