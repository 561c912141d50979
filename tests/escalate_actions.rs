//! The escalation actions against real things: the exec hook is a real
//! process (environment, stdin JSON, time limit killing its process group),
//! the webhook a real local HTTPS server (rcgen certificate), the quarantine
//! real files (checksums before/after, nothing lost, never overwritten), and
//! the journal entry a real journald: inside a testbed sandbox (real systemd)
//! this test binary is run again as a child that sends the entries, and
//! `journalctl MESSAGE_ID=... -o json` reads them back.
//!
//! The journal part needs root and the packages of `scripts/install-deps`;
//! with MCRECOVER_REQUIRE_E2E=1 a missing prerequisite fails instead of skipping.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod check_support;

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;

use check_support::Pki;
use mcrecover::check::ExecVia;
use mcrecover::config::{
    Container, Network, Remedy, RestartPolicy, Service, VolumeMount, WatchPolicy,
};
use mcrecover::diagnose::diagnose;
use mcrecover::watch::escalate::{self, journal, Action, Event};
use mcrecover_testbed::{e2e_gate, Sandbox, SandboxOptions};

fn event() -> Event {
    Event {
        kind: escalate::EventKind::Escalated,
        id: "mcr-1795572900000".into(),
        platform: "metacircular".into(),
        service: "mcr".into(),
        unit: "mcr.service".into(),
        stage: Some("core".into()),
        restarts: 5,
        window: Duration::from_secs(600),
        reason: "unit failed (exit-code)".into(),
        diagnoses: diagnose("Error: attempt to write a readonly database (8)"),
        remedy: String::new(),
        at: UNIX_EPOCH + Duration::from_secs(1_795_572_900),
    }
}

fn policy() -> WatchPolicy {
    WatchPolicy::default()
}

// ---------------------------------------------------------------- hook

#[tokio::test]
async fn hook_gets_the_variables_and_the_event_on_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().display().to_string();
    let script = format!(
        "env | grep ^MCRECOVER_ > {out}/env; cat > {out}/stdin.json; \
         echo first >&2; echo 'the last line' >&2; exit 0"
    );
    let mut p = policy();
    p.hook = vec!["/bin/sh".into(), "-c".into(), script];
    let ev = event();
    let results = escalate::escalate(&ev, &p, &ExecVia::Child).await;
    eprintln!("{results:#?}");
    assert_eq!(results.len(), 2, "journal + hook");
    let hook = results.iter().find(|r| r.action == Action::Hook).unwrap();
    assert!(hook.ok, "{hook:?}");
    assert!(hook.detail.contains("the last line"), "{hook:?}");

    let env: HashMap<String, String> = std::fs::read_to_string(dir.path().join("env"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let want = [
        ("MCRECOVER_EVENT", "escalated"),
        ("MCRECOVER_EVENT_ID", "mcr-1795572900000"),
        ("MCRECOVER_PLATFORM", "metacircular"),
        ("MCRECOVER_SERVICE", "mcr"),
        ("MCRECOVER_UNIT", "mcr.service"),
        ("MCRECOVER_STAGE", "core"),
        ("MCRECOVER_RESTARTS", "5"),
        ("MCRECOVER_WINDOW_S", "600"),
        ("MCRECOVER_REASON", "unit failed (exit-code)"),
        ("MCRECOVER_DIAGNOSIS", "fchmod-readonly-db"),
    ];
    for (k, v) in want {
        assert_eq!(env.get(k).map(String::as_str), Some(v), "{k} in {env:?}");
    }
    assert!(
        env.get("MCRECOVER_REMEDY")
            .is_some_and(|r| r.contains("NEVER delete")),
        "{env:?}"
    );

    let stdin: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("stdin.json")).unwrap()).unwrap();
    assert_eq!(stdin, serde_json::to_value(&ev).unwrap());
    assert_eq!(stdin["service"], "mcr");
    assert_eq!(stdin["diagnoses"][0]["id"], "fchmod-readonly-db");
    assert_eq!(stdin["at"], "2026-11-25T02:15:00Z");
    assert_eq!(stdin["window"], 600.0);
}

#[tokio::test]
async fn hook_failure_is_reported_with_status_and_stderr() {
    let mut p = policy();
    p.hook = vec![
        "/bin/sh".into(),
        "-c".into(),
        "echo 'pager unreachable' >&2; exit 3".into(),
    ];
    let results = escalate::escalate(&event(), &p, &ExecVia::Child).await;
    let hook = results.iter().find(|r| r.action == Action::Hook).unwrap();
    assert!(!hook.ok, "{hook:?}");
    assert!(hook.detail.contains('3'), "{hook:?}");
    assert!(hook.detail.contains("pager unreachable"), "{hook:?}");

    p.hook = vec!["/nonexistent/hook".into()];
    let results = escalate::escalate(&event(), &p, &ExecVia::Child).await;
    let hook = results.iter().find(|r| r.action == Action::Hook).unwrap();
    assert!(!hook.ok && hook.detail.contains("cannot run"), "{hook:?}");
}

fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // State is the field after the parenthesised command.
            let state = stat.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z') && !state.starts_with('X')
        }
        Err(_) => false,
    }
}

#[tokio::test]
async fn hook_timeout_kills_its_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("bg.pid");
    let script = format!(
        "sleep 60 & echo $! > {}; echo started >&2; sleep 60",
        pidfile.display()
    );
    let mut p = policy();
    p.hook = vec!["/bin/sh".into(), "-c".into(), script];
    p.hook_timeout = Duration::from_millis(1500);
    let t0 = Instant::now();
    let results = escalate::escalate(&event(), &p, &ExecVia::Child).await;
    let took = t0.elapsed();
    let hook = results.iter().find(|r| r.action == Action::Hook).unwrap();
    eprintln!("{hook:?} after {took:?}");
    assert!(!hook.ok, "{hook:?}");
    assert!(hook.detail.contains("timed out"), "{hook:?}");
    assert!(took < Duration::from_secs(6), "took {took:?}");

    // The background grandchild was in the hook's process group: killed too.
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    while alive(pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!alive(pid), "grandchild {pid} survived the hook timeout");
}

// ---------------------------------------------------------------- webhook

/// A local HTTPS server answering every POST with `status` and forwarding
/// (content-type, body) to the returned channel.
async fn webhook_server(
    pki: &Pki,
    status: StatusCode,
) -> (u16, mpsc::UnboundedReceiver<(String, Vec<u8>)>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = TlsAcceptor::from(pki.server_config(&[b"http/1.1"]));
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = service_fn(move |req: Request<Incoming>| {
                    let tx = tx.clone();
                    async move {
                        let ct = req
                            .headers()
                            .get(hyper::header::CONTENT_TYPE)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_owned();
                        let method = req.method().clone();
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let _ = tx.send((format!("{method} {ct}"), body.to_vec()));
                        Ok::<_, Infallible>(
                            Response::builder()
                                .status(status)
                                .body(Full::new(Bytes::from_static(b"thanks")))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (port, rx)
}

#[tokio::test]
async fn webhook_receives_the_event_json() {
    let pki = Pki::new();
    let (port, mut rx) = webhook_server(&pki, StatusCode::NO_CONTENT).await;
    let mut p = policy();
    p.webhook = Some(
        format!("https://localhost:{port}/hooks/mcrecover")
            .parse()
            .unwrap(),
    );
    p.webhook_ca_file = Some(pki.ca_file.clone());
    let ev = event();
    let results = escalate::escalate(&ev, &p, &ExecVia::Child).await;
    eprintln!("{results:#?}");
    let wh = results
        .iter()
        .find(|r| r.action == Action::Webhook)
        .unwrap();
    assert!(wh.ok, "{wh:?}");
    assert!(wh.detail.contains("204"), "{wh:?}");
    let (what, body) = rx.recv().await.unwrap();
    assert_eq!(what, "POST application/json");
    let got: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(got, serde_json::to_value(&ev).unwrap());
}

#[tokio::test]
async fn webhook_500_untrusted_and_unreachable_count_as_failed() {
    let pki = Pki::new();
    let (port, mut rx) = webhook_server(&pki, StatusCode::INTERNAL_SERVER_ERROR).await;
    let mut p = policy();
    p.webhook = Some(format!("https://127.0.0.1:{port}/").parse().unwrap());
    p.webhook_ca_file = Some(pki.ca_file.clone());
    let results = escalate::escalate(&event(), &p, &ExecVia::Child).await;
    let wh = results
        .iter()
        .find(|r| r.action == Action::Webhook)
        .unwrap();
    assert!(!wh.ok, "{wh:?}");
    assert!(wh.detail.contains("500"), "{wh:?}");
    assert!(rx.recv().await.is_some(), "the POST arrived all the same");

    // A server whose certificate the configured CA did not sign.
    p.webhook_ca_file = Some(pki.other_ca_file.clone());
    let results = escalate::escalate(&event(), &p, &ExecVia::Child).await;
    let wh = results
        .iter()
        .find(|r| r.action == Action::Webhook)
        .unwrap();
    assert!(!wh.ok && wh.detail.contains("TLS"), "{wh:?}");

    // Nothing listening; and a server that never answers hits the time limit.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    p.webhook = Some(format!("https://{closed}/").parse().unwrap());
    let results = escalate::escalate(&event(), &p, &ExecVia::Child).await;
    let wh = results
        .iter()
        .find(|r| r.action == Action::Webhook)
        .unwrap();
    assert!(!wh.ok, "{wh:?}");

    let hang = check_support::hanging_tcp_server().await;
    p.webhook = Some(format!("https://{hang}/").parse().unwrap());
    p.webhook_timeout = Duration::from_millis(800);
    let t0 = Instant::now();
    let results = escalate::escalate(&event(), &p, &ExecVia::Child).await;
    let wh = results
        .iter()
        .find(|r| r.action == Action::Webhook)
        .unwrap();
    assert!(!wh.ok && wh.detail.contains("within"), "{wh:?}");
    assert!(t0.elapsed() < Duration::from_secs(5));
}

// ---------------------------------------------------------------- quarantine

fn service(volumes: &[&Path]) -> Service {
    Service {
        name: "mcr".into(),
        description: None,
        container: Some(Container {
            image: "localhost/mcr:1".into(),
            name: "mcr".into(),
            network: Network::Host,
            ports: Vec::new(),
            volumes: volumes
                .iter()
                .map(|v| VolumeMount {
                    host: v.display().to_string(),
                    container: "/data".into(),
                    options: None,
                    raw: format!("{}:/data", v.display()),
                })
                .collect(),
            user: None,
            command: Vec::new(),
            env: BTreeMap::new(),
            restart: RestartPolicy::Always,
            podman_args: Vec::new(),
        }),
        checks: Vec::new(),
        after: Vec::new(),
        requires: Vec::new(),
        remedy: None,
        gate: mcrecover::config::ServiceGate::Healthy,
        rto: None,
    }
}

fn sha256(path: &Path) -> String {
    let data = std::fs::read(path).unwrap();
    ring::digest::digest(&ring::digest::SHA256, &data)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Every regular file below `dir` with its checksum, keyed by file name.
fn inventory(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.clone(), sha256(&p)));
            }
        }
    }
    out.sort();
    out
}

fn checksums(inv: &[(PathBuf, String)]) -> Vec<String> {
    let mut v: Vec<String> = inv.iter().map(|(_, s)| s.clone()).collect();
    v.sort();
    v
}

#[test]
fn quarantine_moves_files_and_loses_nothing() {
    let root = tempfile::tempdir().unwrap();
    let vol = root.path().join("srv/mcr");
    let other = root.path().join("srv/mcr-web");
    std::fs::create_dir_all(vol.join("db")).unwrap();
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(vol.join("db/mcr.db"), b"SQLite format 3\0 tags and blobs").unwrap();
    std::fs::write(vol.join("db/mcr.db-wal"), vec![7u8; 100_000]).unwrap();
    std::fs::write(vol.join("config.toml"), b"keep me").unwrap();
    std::fs::write(other.join("index.html"), b"web").unwrap();
    let before = inventory(root.path());

    let svc = service(&[&vol, &other]);
    let remedy = Remedy {
        quarantine: vec![
            vol.join("db/mcr.db"),
            vol.join("db/mcr.db-wal"),
            vol.join("db/mcr.db-shm"),
        ],
        on: vec!["fchmod-readonly-db".into()],
    };
    assert!(escalate::remedy_applies(&remedy, &event().diagnoses));
    let at = UNIX_EPOCH + Duration::from_secs(1_795_572_900);
    let report = escalate::quarantine(&svc, &remedy, at).unwrap();
    eprintln!("{report:#?}");
    let qdir = vol.join("quarantine/20261125T021500Z");
    assert_eq!(
        report.moved,
        vec![
            (vol.join("db/mcr.db"), qdir.join("db/mcr.db")),
            (vol.join("db/mcr.db-wal"), qdir.join("db/mcr.db-wal")),
        ]
    );
    assert_eq!(report.missing, vec![vol.join("db/mcr.db-shm")]);
    assert!(!vol.join("db/mcr.db").exists());
    assert!(vol.join("config.toml").exists());

    // Nothing lost: the same set of checksums, and each moved file unchanged.
    let after = inventory(root.path());
    assert_eq!(checksums(&before), checksums(&after));
    for (from, to) in &report.moved {
        let was = before.iter().find(|(p, _)| p == from).unwrap();
        assert_eq!(was.1, sha256(to), "{}", to.display());
    }

    // The service makes a fresh database; a second quarantine at the same
    // second gets a directory of its own and overwrites nothing.
    std::fs::write(vol.join("db/mcr.db"), b"fresh database").unwrap();
    let before2 = inventory(root.path());
    let report2 = escalate::quarantine(&svc, &remedy, at).unwrap();
    assert_eq!(report2.moved.len(), 1);
    let to2 = &report2.moved[0].1;
    assert!(!to2.starts_with(&qdir), "{}", to2.display());
    assert!(to2.starts_with(vol.join("quarantine")));
    assert_eq!(checksums(&before2), checksums(&inventory(root.path())));
    assert_eq!(
        std::fs::read(qdir.join("db/mcr.db")).unwrap(),
        b"SQLite format 3\0 tags and blobs"
    );

    // A later one gets its own timestamp.
    std::fs::write(vol.join("db/mcr.db"), b"third").unwrap();
    let later = at + Duration::from_secs(3600);
    let report3 = escalate::quarantine(&svc, &remedy, later).unwrap();
    assert_eq!(
        report3.moved[0].1,
        vol.join("quarantine/20261125T031500Z/db/mcr.db")
    );
}

#[test]
fn quarantine_refuses_paths_outside_volumes_before_moving_anything() {
    let root = tempfile::tempdir().unwrap();
    let vol = root.path().join("vol");
    std::fs::create_dir_all(&vol).unwrap();
    std::fs::write(vol.join("a.db"), b"a").unwrap();
    std::fs::write(root.path().join("outside.db"), b"o").unwrap();
    let svc = service(&[&vol]);
    for bad in [
        root.path().join("outside.db"),
        vol.join("../outside.db"),
        PathBuf::from("relative.db"),
        vol.clone(),
        vol.join("quarantine/x"),
    ] {
        let remedy = Remedy {
            quarantine: vec![vol.join("a.db"), bad.clone()],
            on: Vec::new(),
        };
        let err = escalate::quarantine(&svc, &remedy, SystemTime::now()).unwrap_err();
        eprintln!("{err}");
        assert_eq!(err.path, bad);
        assert!(
            vol.join("a.db").exists(),
            "nothing moved for {}",
            bad.display()
        );
    }
    assert!(root.path().join("outside.db").exists());
    assert!(!vol.join("quarantine").exists());
}

// ---------------------------------------------------------------- journal

const CHILD_ENV: &str = "MCRECOVER_ESCALATE_JOURNAL_CHILD";

/// Not a test of its own: the body the journal test runs inside the sandbox
/// (this binary, started again there with CHILD_ENV set).
#[test]
fn journal_child() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    assert!(journal::journald_present(), "no journald socket inside");
    let r = journal::escalated(&event());
    assert!(r.ok, "{r:?}");
    journal::restart_issued(
        "mcr",
        "mcr.service",
        Some("core"),
        "unit failed",
        Some(420),
        Duration::from_millis(1500),
    );
}

#[test]
fn journal_fallback_without_journald_never_fails() {
    if journal::journald_present() {
        return;
    }
    let r = journal::escalated(&event());
    assert!(!r.ok);
    assert!(r.detail.contains("journald is not running"), "{r:?}");
    journal::restart_issued("mcr", "mcr.service", None, "x", None, Duration::ZERO);
}

fn journal_entries(sb: &Sandbox, id: &str) -> Vec<serde_json::Value> {
    let out = sb.run(&[
        "journalctl",
        "--no-pager",
        &format!("MESSAGE_ID={id}"),
        "-o",
        "json",
    ]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn journal_entries_reach_a_real_journald() {
    if !e2e_gate("escalate_journal", &[]) {
        return;
    }
    let mut opts = SandboxOptions::metacircular("escalate_journal");
    opts.quadlet_generator = None;
    opts.rootless_user = None;
    opts.srv_dirs = Vec::new();
    let sb = Sandbox::boot(opts).unwrap();
    let exe = std::env::current_exe().unwrap();
    sb.install_bin(&exe, "mcrecover-escalate-test").unwrap();
    let out = sb.run(&[
        "env",
        &format!("{CHILD_ENV}=1"),
        "/usr/bin/mcrecover-escalate-test",
        "journal_child",
        "--exact",
        "--nocapture",
        "--test-threads=1",
    ]);
    eprintln!(
        "child: {:?}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success());

    let mut entries = Vec::new();
    sb.wait_until(
        "the crit entry in the journal",
        Duration::from_secs(20),
        || {
            entries = journal_entries(&sb, journal::ESCALATED_MESSAGE_ID);
            Ok(!entries.is_empty())
        },
    )
    .unwrap();
    let e = &entries[0];
    eprintln!("{e:#}");
    for (k, v) in [
        ("PRIORITY", "2"),
        ("SYSLOG_IDENTIFIER", "mcrecover"),
        ("SERVICE", "mcr"),
        ("UNIT", "mcr.service"),
        ("STAGE", "core"),
        ("RESTARTS", "5"),
        ("WINDOW_S", "600"),
        ("REASON", "unit failed (exit-code)"),
        ("DIAGNOSIS", "fchmod-readonly-db"),
        ("EVENT_ID", "mcr-1795572900000"),
    ] {
        assert_eq!(e[k].as_str(), Some(v), "{k}");
    }
    assert!(e["MESSAGE"].as_str().unwrap().contains("escalated"));

    let mut notices = Vec::new();
    sb.wait_until(
        "the restart notice in the journal",
        Duration::from_secs(20),
        || {
            notices = journal_entries(&sb, journal::RESTART_MESSAGE_ID);
            Ok(!notices.is_empty())
        },
    )
    .unwrap();
    let n = &notices[0];
    eprintln!("{n:#}");
    for (k, v) in [
        ("PRIORITY", "5"),
        ("SYSLOG_IDENTIFIER", "mcrecover"),
        ("SERVICE", "mcr"),
        ("UNIT", "mcr.service"),
        ("STAGE", "core"),
        ("REACTION_MS", "420"),
        ("DELAY_S", "1.500"),
    ] {
        assert_eq!(n[k].as_str(), Some(v), "{k}");
    }
}
