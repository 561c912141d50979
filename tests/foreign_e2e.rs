//! "Never fight another controller" end to end (issue 13, part 2): the
//! daemon runs as the SHIPPED `units/mcrecover.service` in a REAL systemd
//! (testbed sandbox) with real podman and the example platform's stand-in
//! containers (rootful, service backend; see tests/daemon_support). After
//! its boot recovery, a deploy outside the unit, the way `mcp deploy` does
//! it (`podman run -d --replace --restart unless-stopped --name mcq <the
//! stand-in under another tag>`, in the platform's storage):
//!
//! - the deployed container is not killed within 60 s (same container ID),
//!   mcq's unit is not restarted (no restart MESSAGE_ID for it, restart
//!   counters unchanged), status says `external` with the owner (container
//!   ID, image, started outside any unit, restart policy);
//! - its failing health (the stand-in's fault file: HTTP 500) is reported,
//!   still not acted on; `mcrecover restart mcq` is refused;
//! - `mcrecover drift` exits 1 while it runs;
//! - `mcrecover adopt mcq` hands it back: the unit's container (labelled
//!   `PODMAN_SYSTEMD_UNIT=mcq.service`, the configured image) replaces it,
//!   status healthy.
//!
//! The same on the trixie base (podman 5.4, systemd 257) with the quadlet
//! backend. Then `MCRECOVER_FOREIGN_ROUNDS` (default 3) more rounds of adopt + deploy
//! measure the race between the deploy's `--replace` and the daemon's
//! restart of the unit it ended: each round must end with the deployed
//! container running and the service `external` (the ownership check before
//! the restart saw the new container), never with a rollback.
//!
//! Needs root and the packages of `scripts/install-deps`; with
//! MCRECOVER_REQUIRE_E2E=1 a missing prerequisite fails instead of skipping.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod daemon_support;

use std::path::Path;
use std::time::{Duration, Instant};

use daemon_support::*;
use serde_json::Value;

const REG: &str = "mcr.svc.mcp.metacircular.net:8443";
const UNIT: &str = "mcq.service";

/// `podman ARGS` in the sandbox (root's storage: the rootful platform's).
fn podman(p: &Platform, args: &[&str]) -> String {
    let mut argv = vec!["podman"];
    argv.extend_from_slice(args);
    ok(&p.sb, p.sb.run_ok(&argv)).trim().to_string()
}

/// mcq's container: (full ID, image, PODMAN_SYSTEMD_UNIT label), if any.
fn mcq_container(p: &Platform) -> Option<(String, String, String)> {
    let out = p.sb.run(&[
        "podman",
        "ps",
        "--filter",
        "name=^mcq$",
        "--no-trunc",
        "--format",
        "{{.ID}}|{{.Image}}|{{index .Labels \"PODMAN_SYSTEMD_UNIT\"}}",
    ]);
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let mut f = text.lines().next()?.split('|');
    Some((
        f.next()?.to_string(),
        f.next()?.to_string(),
        f.next().unwrap_or("").to_string(),
    ))
}

/// The deploy of `mcp deploy`: mcq's ports, volume and command, another
/// tag, `--replace`, its own restart policy; outside any unit.
fn deploy(p: &Platform, image: &str) -> (String, Instant) {
    let cfg = mcrecover::config::parse(
        &std::fs::read_to_string(p.sb.host_path(CONFIG)).unwrap(),
        Path::new(CONFIG),
    )
    .unwrap();
    let c = cfg.services["mcq"].container.clone().unwrap();
    let mut argv: Vec<String> = [
        "podman",
        "run",
        "-d",
        "--replace",
        "--restart",
        "unless-stopped",
        "--name",
        "mcq",
    ]
    .map(String::from)
    .to_vec();
    for port in &c.ports {
        argv.extend(["--publish".into(), port.raw.clone()]);
    }
    for v in &c.volumes {
        argv.extend(["--volume".into(), v.raw.clone()]);
    }
    argv.push(image.into());
    argv.extend(c.command.iter().cloned());
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let at = Instant::now();
    // `--replace` prints the name of what it removed first, then the new ID.
    let out = ok(&p.sb, p.sb.run_ok(&argv));
    let id = out.lines().last().unwrap_or("").trim().to_string();
    eprintln!("deployed {image} outside the unit: container {id}");
    (id, at)
}

/// mcq's restart entries (MESSAGE_ID of a restart) since `since_usec`.
fn restarts_since(p: &Platform, since_usec: u128) -> Vec<Value> {
    p.restarts_of(UNIT)
        .into_iter()
        .filter(|e| usec(e) >= since_usec)
        .collect()
}

fn adopt_and_wait_healthy(p: &Platform, configured: &str) {
    let out = p.mcrecover(None, &["adopt", "mcq"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let msg = String::from_utf8_lossy(&out.stdout);
    assert!(msg.contains("mcq adopted"), "{msg}");
    p.wait_status("mcq healthy after adopt", 90, |st| {
        state_of(st, "mcq") == "healthy"
    });
    let (_, image, label) = mcq_container(p).expect("mcq runs after adopt");
    assert_eq!(image, configured, "the unit runs the configured image");
    assert_eq!(label, UNIT, "the unit's container carries its label");
    assert_eq!(p.prop(UNIT, "ActiveState"), "active");
}

/// Host base (podman 4.3, systemd 252), service backend.
#[test]
fn another_controllers_container_is_left_alone_then_adopted() {
    let Some(p) = Platform::boot("foreign-e2e", &daemon_config(3, |t| t), true) else {
        return;
    };
    left_alone_then_adopted(&p);
}

/// Trixie base (podman 5.4, systemd 257), quadlet backend (its units stop
/// the container by `--cidfile`).
#[test]
fn trixie_quadlet_another_controllers_container_is_left_alone_then_adopted() {
    let name = "trixie-foreign-e2e";
    let mut needs = Vec::new();
    if let Some(why) = mcrecover_testbed::trixie_missing() {
        needs.push(why);
    }
    if !mcrecover_testbed::e2e_gate(name, &needs) {
        return;
    }
    let base = mcrecover_testbed::Base::trixie().unwrap();
    let p = Platform::boot_on(
        mcrecover_testbed::SandboxOptions::metacircular_on(name, base),
        "quadlet",
        &daemon_config(3, |t| t),
        true,
        |_| {},
    );
    assert_eq!(
        p.prop(UNIT, "SourcePath"),
        "/etc/containers/systemd/mcq.container"
    );
    left_alone_then_adopted(&p);
}

fn left_alone_then_adopted(p: &Platform) {
    let configured = format!("{REG}/mcq:v0.4.2");
    let next = format!("{REG}/mcq:v0.4.3");
    podman(p, &["tag", &configured, &next]);
    let (_, _, label) = mcq_container(p).expect("mcq runs");
    assert_eq!(label, UNIT, "podman labels the unit's container");
    let before = service(&p.status().unwrap(), "mcq")["total_restarts"].clone();
    let t0 = now_usec();

    // (1) The deploy: left alone, external, with the owner.
    let (id, deployed_at) = deploy(p, &next);
    let st = p.wait_status("mcq external", 30, |st| state_of(st, "mcq") == "external");
    eprintln!(
        "mcq external {} ms after the deploy returned",
        deployed_at.elapsed().as_millis()
    );
    let mcq = service(&st, "mcq");
    let owner = mcq["owner"].as_str().unwrap_or_default();
    assert!(owner.contains(&id[..12]), "{mcq:#}");
    assert!(owner.contains(&next), "{mcq:#}");
    assert!(
        owner.contains("started outside any systemd unit"),
        "{mcq:#}"
    );
    assert!(owner.contains("restart policy unless-stopped"), "{mcq:#}");
    let text = String::from_utf8_lossy(&p.mcrecover(None, &["status"]).stdout).into_owned();
    assert!(
        text.contains("`mcrecover adopt mcq` hands it back") && text.contains(&id[..12]),
        "{text}"
    );
    // The journal says so too (the engine's note).
    let noted = p
        .sb
        .journal_json(&["-u", DAEMON, "SERVICE=mcq"])
        .iter()
        .any(|e| field(e, "MESSAGE").contains("started by another controller; leaving it alone"));
    assert!(noted, "{}", daemon_journal(&p.sb));

    // doctor names the second controller at boot (the deploy's restart
    // policy) and the fix.
    let out = p.mcrecover(None, &["doctor", "--json"]);
    let rep: Value = serde_json::from_slice(&out.stdout).unwrap();
    let f = rep["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == "restart policy mcq")
        .unwrap_or_else(|| panic!("no restart policy finding: {rep:#}"));
    assert_eq!(f["status"], "warn", "{f:#}");
    let why = f["explanation"].as_str().unwrap();
    assert!(
        why.contains("unless-stopped") && why.contains("mcq.service"),
        "{f:#}"
    );
    let fix = f["remedy"].as_str().unwrap();
    assert!(
        fix.contains("podman update --restart=no mcq")
            && fix.contains("systemctl disable podman-restart.service"),
        "{f:#}"
    );

    // (2) Its failing health is reported, not acted on.
    p.fault("/srv/mcq", "500");
    let st = p.wait_status("mcq's HTTP 500 reported", 30, |st| {
        let h = &service(st, "mcq")["health"];
        h["ok"] == false && h["reason"].as_str().is_some_and(|r| r.contains("500"))
    });
    assert_eq!(state_of(&st, "mcq"), "external", "{st:#}");
    assert!(
        service(&st, "mcq")["health"]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("500"),
        "{st:#}"
    );
    let out = p.mcrecover(None, &["restart", "mcq"]);
    assert_eq!(out.status.code(), Some(1), "a restart request is refused");
    assert!(String::from_utf8_lossy(&out.stderr).contains("mcrecover adopt mcq"));
    // Drift: the running image is not the configured one.
    let out = p.mcrecover(None, &["drift"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("mcq:v0.4.3"));

    // Not killed within 60 s of the deploy; no restart, no escalation.
    let left = Duration::from_secs(60).saturating_sub(deployed_at.elapsed());
    std::thread::sleep(left);
    let (now_id, image, label) = mcq_container(p).expect("the deployed mcq still runs");
    assert_eq!(now_id, id, "the deployed container was replaced");
    assert_eq!(image, next);
    assert_eq!(label, "");
    assert!(
        restarts_since(p, t0).is_empty(),
        "{:#?}",
        restarts_since(p, t0)
    );
    let st = p.status().unwrap();
    assert_eq!(state_of(&st, "mcq"), "external", "{st:#}");
    assert_eq!(service(&st, "mcq")["total_restarts"], before, "{st:#}");
    assert!(p.escalations_of(UNIT).is_empty());
    for other in st["services"].as_array().unwrap() {
        if other["name"] != "mcq" {
            assert_eq!(other["state"], "healthy", "{other:#}");
        }
    }

    // (3) Adopt: the unit owns it again.
    p.clear_fault("/srv/mcq");
    adopt_and_wait_healthy(p, &configured);
    assert!(
        podman(
            p,
            &[
                "ps",
                "-a",
                "--filter",
                &format!("id={id}"),
                "--format",
                "{{.ID}}"
            ]
        )
        .is_empty(),
        "the other controller's container was replaced"
    );
    // The unit's container has no restart policy: nothing to warn about.
    let out = p.mcrecover(None, &["doctor", "--json"]);
    let rep: Value = serde_json::from_slice(&out.stdout).unwrap();
    let checks: Vec<(&str, &str)> = rep["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["check"].as_str().unwrap(), f["status"].as_str().unwrap()))
        .filter(|(c, _)| c.starts_with("restart polic"))
        .collect();
    assert_eq!(checks, [("restart policies", "ok")], "{rep:#}");

    // (4) The race, measured: deploy again while the unit runs, a few times.
    let rounds: u32 = std::env::var("MCRECOVER_FOREIGN_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let mut won = 0;
    for round in 1..=rounds {
        let (id, at) = deploy(p, &next);
        let mut took = None;
        while at.elapsed() < Duration::from_secs(30) {
            if p.status()
                .is_some_and(|st| state_of(&st, "mcq") == "external")
            {
                took = Some(at.elapsed().as_millis());
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        // Give a losing restart time to show (it would replace the container).
        std::thread::sleep(Duration::from_secs(3));
        let now = mcq_container(p).map(|c| c.0);
        let kept = now.as_deref() == Some(id.as_str());
        eprintln!(
            "RACE round {round}: external after {took:?} ms; deployed container kept: {kept}"
        );
        won += u32::from(kept && took.is_some());
        adopt_and_wait_healthy(p, &configured);
    }
    eprintln!("RACE: the ownership check won {won} of {rounds} rounds");
    assert_eq!(
        won, rounds,
        "a deploy was rolled back by the unit's restart"
    );
    assert!(
        recovery_problems(&p.sb).is_empty(),
        "{:?}",
        recovery_problems(&p.sb)
    );

    // (5) An ordinary death is still restarted at once (the look before the
    // engine hears of it finds the name free).
    let killed_at = now_usec();
    p.kill_container("mcdoc");
    p.wait("mcdoc's restart", 60, || {
        p.restarts_of("mcdoc.service")
            .iter()
            .any(|e| usec(e) >= killed_at)
    });
    let e = p
        .restarts_of("mcdoc.service")
        .into_iter()
        .find(|e| usec(e) >= killed_at)
        .unwrap();
    eprintln!(
        "ordinary kill: restart issued {} ms after the kill",
        (usec(&e) - killed_at) / 1000
    );
    p.wait_status("mcdoc healthy again", 60, |st| {
        state_of(st, "mcdoc") == "healthy"
    });

    // The cost of a look (CHECK_MS, one podman query in a transient unit;
    // with a foreign container also its restart policy).
    let mut free = Vec::new();
    let mut held = Vec::new();
    for e in p.sb.journal_json(&["-u", DAEMON]) {
        let msg = field(&e, "MESSAGE");
        let Ok(ms) = field(&e, "CHECK_MS").parse::<u64>() else {
            continue;
        };
        if msg.starts_with("ownership check: the name is free") {
            free.push(ms);
        } else if msg.starts_with("ownership check: another controller") {
            held.push(ms);
        }
    }
    free.sort_unstable();
    held.sort_unstable();
    eprintln!("CHECK_MS name free ({}): {free:?}", free.len());
    eprintln!("CHECK_MS foreign found ({}): {held:?}", held.len());
    assert!(!free.is_empty() && !held.is_empty());
}
