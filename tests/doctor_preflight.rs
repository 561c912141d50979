//! `doctor::preflight_stage` on this machine (real interfaces, real sockets,
//! real podman storage): only the named stage's services are looked at; a
//! bind IP no interface has, a port held by a foreign process (this test,
//! named by pid) and an image missing from podman's storage each fail with
//! the right remedy; a stage whose needs are met yields no failure.
//!
//! Needs root and podman (`scripts/install-deps`); with
//! MCRECOVER_REQUIRE_E2E=1 a missing prerequisite fails instead of skipping.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::net::TcpListener;

use mcrecover::doctor::{preflight_stage, Finding, Status};
use mcrecover_testbed::e2e_gate;

fn config(held: u16, free: u16) -> String {
    format!(
        r#"
[platform]
name = "pf"
mode = "rootful"

[[stages]]
name = "one"
services = ["a", "b"]

[[stages]]
name = "two"
services = ["c"]

[services.a]
image = "localhost/mcrecover-preflight-nosuch:1"
ports = ["10.99.99.99:8080:80"]

[services.b]
image = "localhost/mcrecover-preflight-nosuch:1"
ports = ["127.0.0.1:{held}:80"]

[services.c]
image = "localhost/mcrecover-preflight-other:1"
ports = ["127.0.0.1:{free}:80"]
"#
    )
}

fn get<'a>(f: &'a [Finding], check: &str) -> &'a Finding {
    f.iter()
        .find(|x| x.check == check)
        .unwrap_or_else(|| panic!("no `{check}` in {f:#?}"))
}

#[tokio::test]
async fn preflight_names_missing_ip_foreign_holder_and_missing_image() {
    if !e2e_gate("doctor_preflight", &[]) {
        return;
    }
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let held_port = held.local_addr().unwrap().port();
    let free_port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pf.toml");
    std::fs::write(&path, config(held_port, free_port)).unwrap();
    let cfg = mcrecover::config::load(&path).unwrap();

    let one = preflight_stage(&cfg, "one", true).await;
    eprintln!("{one:#?}");
    let ip = get(&one, "bind-ip 10.99.99.99");
    assert_eq!(ip.status, Status::Fail);
    assert!(ip.explanation.contains("needed by a"), "{ip:?}");

    let port = get(&one, &format!("port 127.0.0.1:{held_port}/tcp (b)"));
    assert_eq!(port.status, Status::Fail);
    let me = format!("(pid {}, ", std::process::id());
    assert!(port.explanation.contains(&me), "{port:?}");

    let img = get(&one, "image localhost/mcrecover-preflight-nosuch:1");
    assert_eq!(img.status, Status::Fail);
    assert!(img.explanation.contains("used by a, b"), "{img:?}");
    assert!(
        img.remedy.as_deref().unwrap().contains("podman load"),
        "{img:?}"
    );
    assert!(!one.iter().any(|f| f.explanation.contains("(used by c)")));

    // Stage two's port is free; only its (missing) image fails.
    let two = preflight_stage(&cfg, "two", true).await;
    eprintln!("{two:#?}");
    assert_eq!(get(&two, "ports").status, Status::Ok);
    let fails: Vec<&str> = two
        .iter()
        .filter(|f| f.status == Status::Fail)
        .map(|f| f.check.as_str())
        .collect();
    assert_eq!(fails, ["image localhost/mcrecover-preflight-other:1"]);

    let none = preflight_stage(&cfg, "nosuch", true).await;
    assert_eq!(none.len(), 1);
    assert_eq!(none[0].status, Status::Fail);
    drop(held);
}
