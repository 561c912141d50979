//! The D-Bus API against a real bus: a testbed sandbox's own dbus-daemon
//! (its system bus) with the shipped policy file `units/dbus/` installed.
//! This process serves the API on that bus (as root, through the sandbox's
//! bus address) with a stand-in engine on the command channel; callers run
//! inside the sandbox as root, as `mcp` (uid/gid 850) and as `nobody`.
//!
//! Checks: `Status()` JSON round trip (client `fetch_status` and a plain
//! `dbus-send`), mutating calls accepted from root and group `mcp` and
//! forwarded to the engine, refused for `nobody` (by the bus policy) and, when
//! the daemon's own check does not allow the caller, refused by the daemon
//! with `net.metacircular.Recovery1.Error.AccessDenied`; engine refusals come
//! back as `ApiError::Refused`; the `ServiceStateChanged` signal and the
//! `Phase` property; `NotRunning` without a daemon.
//!
//! Needs root and the packages of `scripts/install-deps`; with
//! MCRECOVER_REQUIRE_E2E=1 a missing prerequisite fails instead of skipping.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};

use mcrecover::watch::api::{
    call, fetch_status, serve, ApiBus, ApiError, Authz, ACCESS_DENIED, BUS_NAME, INTERFACE,
    OBJECT_PATH,
};
use mcrecover::watch::types::{HealthStatus, ServiceState, ServiceStatus, Snapshot};
use mcrecover::watch::ApiCommand;
use mcrecover_testbed::{e2e_gate, Sandbox, SandboxOptions};

const MCP: u32 = 850;
const NOBODY: u32 = 65534;

#[zbus::proxy(
    interface = "net.metacircular.Recovery1",
    default_service = "net.metacircular.Recovery1",
    default_path = "/net/metacircular/Recovery1"
)]
trait Recovery1 {
    #[zbus(signal)]
    fn service_state_changed(
        &self,
        service: String,
        old: String,
        new: String,
        reason: String,
    ) -> zbus::Result<()>;

    #[zbus(property)]
    fn phase(&self) -> zbus::Result<String>;

    #[zbus(property)]
    fn status_line(&self) -> zbus::Result<String>;
}

fn snapshot(state: ServiceState, reason: &str) -> Snapshot {
    Snapshot {
        pid: 4242,
        config: "/etc/mcrecover/mcrecover.toml".into(),
        phase: "watching".into(),
        status_line: "stage 2/2 core: 1/1 healthy".into(),
        services: vec![ServiceStatus {
            name: "mcr".into(),
            stage: Some("core".into()),
            unit: Some("mcr.service".into()),
            unit_state: "active/running".into(),
            health: HealthStatus {
                ok: Some(state == ServiceState::Healthy),
                reason: reason.into(),
                check: Some("http".into()),
                age_s: Some(1.5),
            },
            restarts: 1,
            total_restarts: 7,
            state,
            held_by: None,
            next_restart_in_s: None,
            escalation: None,
            remedy: None,
            owner: None,
        }],
        timeline: None,
        drill: None,
        last_drill: None,
    }
}

/// `dbus-send --system --print-reply` of `method` inside the sandbox as `uid` (None: root).
fn dbus_send(sb: &Sandbox, uid: Option<u32>, method: &str, arg: Option<&str>) -> Output {
    let member = format!("{INTERFACE}.{method}");
    let dest = format!("--dest={BUS_NAME}");
    let arg = arg.map(|a| format!("string:{a}"));
    let mut argv = vec![
        "dbus-send",
        "--system",
        "--print-reply",
        &dest,
        OBJECT_PATH,
        &member,
    ];
    if let Some(a) = &arg {
        argv.push(a);
    }
    let out = match uid {
        Some(uid) => sb.run_as(uid, &argv),
        None => sb.run(&argv),
    };
    eprintln!(
        "$ (uid {uid:?}) {}\n-> {:?}\n{}{}",
        argv.join(" "),
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

type Seen = mpsc::UnboundedReceiver<ApiCommand>;

/// A stand-in engine: records every command; refuses `Restart("nope")`.
fn engine() -> (mcrecover::watch::CommandSender, Seen) {
    let (tx, mut rx) = mpsc::channel::<(ApiCommand, tokio::sync::oneshot::Sender<_>)>(8);
    let (seen_tx, seen_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some((cmd, reply)) = rx.recv().await {
            let _ = seen_tx.send(cmd.clone());
            let answer = match &cmd {
                ApiCommand::Restart(s) if s == "nope" => Err(format!("unknown service `{s}`")),
                other => Ok(format!("engine got {other:?}")),
            };
            let _ = reply.send(answer);
        }
    });
    (tx, seen_rx)
}

async fn wait_not_running(bus: &ApiBus) {
    for _ in 0..100 {
        if matches!(fetch_status(bus).await, Err(ApiError::NotRunning)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the name was not released");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_on_a_real_system_bus_with_the_shipped_policy() {
    if !e2e_gate("api_dbus", &[]) {
        return;
    }
    let mut opts = SandboxOptions::metacircular("api_dbus");
    opts.quadlet_generator = None;
    opts.srv_dirs = Vec::new();
    let sb = Sandbox::boot(opts).unwrap();
    let policy =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("units/dbus/net.metacircular.Recovery1.conf");
    sb.install_dbus_policy(&policy).unwrap();
    let bus = ApiBus::Address(sb.bus_address());

    // No daemon yet.
    let r = fetch_status(&bus).await;
    assert!(matches!(r, Err(ApiError::NotRunning)), "{r:?}");
    let r = call(&bus, &ApiCommand::Reload).await;
    assert!(matches!(r, Err(ApiError::NotRunning)), "{r:?}");

    // ---- Daemon allowing root and group mcp.
    let snap = snapshot(ServiceState::Healthy, "HTTP 200");
    let (snap_tx, snap_rx) = watch::channel(snap.clone());
    let (commands, mut seen) = engine();
    let authz = Authz {
        uid: None,
        gid: Some(MCP),
    };
    let server = serve(&bus, snap_rx, commands, authz).await.unwrap();

    // Status round trip: the client and a plain dbus-send from an unprivileged uid.
    assert_eq!(fetch_status(&bus).await.unwrap(), snap);
    let out = dbus_send(&sb, Some(NOBODY), "Status", None);
    assert!(out.status.success());
    assert!(
        text(&out).contains(r#"\"total_restarts\":7"#)
            || text(&out).contains(r#""total_restarts":7"#)
    );
    let out = dbus_send(&sb, Some(NOBODY), "GetService", Some("mcr"));
    assert!(out.status.success(), "{}", text(&out));
    let out = dbus_send(&sb, Some(NOBODY), "GetService", Some("ghost"));
    assert!(text(&out).contains("net.metacircular.Recovery1.Error.UnknownService"));

    // Mutating calls: the client (root, from the host) reaches the engine.
    let r = call(&bus, &ApiCommand::Ack("mcr".into())).await.unwrap();
    assert_eq!(r, r#"engine got Ack("mcr")"#);
    assert_eq!(seen.recv().await.unwrap(), ApiCommand::Ack("mcr".into()));
    let r = call(&bus, &ApiCommand::Restart("nope".into())).await;
    assert!(
        matches!(&r, Err(ApiError::Refused(m)) if m.contains("unknown service")),
        "{r:?}"
    );
    assert_eq!(
        seen.recv().await.unwrap(),
        ApiCommand::Restart("nope".into())
    );
    assert!(call(&bus, &ApiCommand::Recover).await.is_ok());
    assert_eq!(seen.recv().await.unwrap(), ApiCommand::Recover);

    // Root inside the sandbox: accepted.
    let out = dbus_send(&sb, None, "Ack", Some("x"));
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains(r#"engine got Ack(\"x\")"#) || text(&out).contains(r#"Ack("x")"#));
    assert_eq!(seen.recv().await.unwrap(), ApiCommand::Ack("x".into()));

    // nobody: refused (the bus policy stops it), the engine sees nothing.
    let out = dbus_send(&sb, Some(NOBODY), "Ack", Some("x"));
    assert!(!out.status.success());
    assert!(text(&out).contains("AccessDenied"), "{}", text(&out));
    let out = dbus_send(&sb, Some(NOBODY), "Reload", None);
    assert!(!out.status.success());
    assert!(text(&out).contains("AccessDenied"), "{}", text(&out));

    // mcp (group mcp): allowed by the policy and by the daemon.
    let out = dbus_send(&sb, Some(MCP), "Ack", Some("y"));
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(seen.recv().await.unwrap(), ApiCommand::Ack("y".into()));
    assert!(seen.try_recv().is_err(), "nothing else reached the engine");

    // Signal and properties.
    let conn = zbus::connection::Builder::address(sb.bus_address().as_str())
        .build()
        .await
        .unwrap();
    let proxy = Recovery1Proxy::new(&conn).await.unwrap();
    assert_eq!(proxy.phase().await.unwrap(), "watching");
    assert_eq!(proxy.status_line().await.unwrap(), snap.status_line);
    let mut changes = proxy.receive_service_state_changed().await.unwrap();
    snap_tx
        .send(snapshot(
            ServiceState::Unhealthy,
            "HTTP 500 from https://mcr/v2/",
        ))
        .unwrap();
    let sig = tokio::time::timeout(Duration::from_secs(10), changes.next())
        .await
        .expect("ServiceStateChanged within 10 s")
        .unwrap();
    let args = sig.args().unwrap();
    eprintln!(
        "signal: {} {} -> {} ({})",
        args.service, args.old, args.new, args.reason
    );
    assert_eq!(
        (args.service.as_str(), args.old.as_str(), args.new.as_str()),
        ("mcr", "healthy", "unhealthy")
    );
    assert_eq!(args.reason, "HTTP 500 from https://mcr/v2/");

    drop(server);
    wait_not_running(&bus).await;

    // ---- Daemon allowing root only: mcp passes the bus policy, the daemon refuses.
    let (_snap_tx, snap_rx) = watch::channel(snap.clone());
    let (commands, mut seen) = engine();
    let server = serve(&bus, snap_rx, commands, Authz::default())
        .await
        .unwrap();
    let out = dbus_send(&sb, Some(MCP), "Restart", Some("mcr"));
    assert!(!out.status.success());
    assert!(text(&out).contains(ACCESS_DENIED), "{}", text(&out));
    let out = dbus_send(&sb, None, "Restart", Some("mcr"));
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        seen.recv().await.unwrap(),
        ApiCommand::Restart("mcr".into())
    );
    assert!(seen.try_recv().is_err());
    drop(server);
    wait_not_running(&bus).await;
}

/// Where the copy of this test binary goes inside the sandbox.
const CHILD_EXE: &str = "/run/api-dbus-test";
/// Set for the copy of this binary that tries to own the name.
const CHILD_ENV: &str = "MCRECOVER_API_OWN_CHILD";

/// Issue 12, item 10: with the shipped policy only root may own the API
/// name (the platform user cannot take it before a rootful daemon starts);
/// the rootless policy lets the platform user own it; a daemon that cannot
/// own the name fails with who has it, and `mcrecover daemon` stops (exit
/// non-zero) instead of running without its API beside another daemon.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_daemons_uid_may_own_the_name() {
    if !e2e_gate("api_dbus_owner", &[]) {
        return;
    }
    let mut opts = SandboxOptions::metacircular("api_dbus_owner");
    opts.quadlet_generator = None;
    opts.srv_dirs = Vec::new();
    let sb = Sandbox::boot(opts).unwrap();
    let units = Path::new(env!("CARGO_MANIFEST_DIR")).join("units/dbus");
    sb.install_dbus_policy(&units.join("net.metacircular.Recovery1.conf"))
        .unwrap();
    sb.copy_in(&std::env::current_exe().unwrap(), CHILD_EXE, 0o755, None)
        .unwrap();
    let own_as_mcp = |sb: &Sandbox| {
        let out = sb.run_as(
            MCP,
            &[
                "env",
                &format!("{CHILD_ENV}=1"),
                CHILD_EXE,
                "--exact",
                "own_name_child",
                "--nocapture",
                "--test-threads=1",
            ],
        );
        let t = text(&out);
        eprintln!("child as mcp: {t}");
        t
    };
    // The shipped policy: mcp may not own it.
    let t = own_as_mcp(&sb);
    assert!(
        t.contains("OWN: denied") && t.contains("AccessDenied"),
        "{t}"
    );

    // Root may; a second owner is refused with who has it.
    let bus = ApiBus::Address(sb.bus_address());
    let (_snap_tx, snap_rx) = watch::channel(snapshot(ServiceState::Healthy, "HTTP 200"));
    let (commands, _seen) = engine();
    let server = serve(&bus, snap_rx.clone(), commands.clone(), Authz::default())
        .await
        .unwrap();
    let err = match serve(&bus, snap_rx, commands, Authz::default()).await {
        Ok(_) => panic!("a second owner of {BUS_NAME} was accepted"),
        Err(e) => e,
    };
    let msg = err.to_string();
    eprintln!("second owner: {msg}");
    assert!(matches!(err, ApiError::NameUnavailable(_)), "{err:?}");
    assert!(msg.contains("uid 0") && msg.contains("pid "), "{msg}");

    // The daemon itself: stops, non-zero, saying why, before starting anything.
    sb.install_bin(Path::new(env!("CARGO_BIN_EXE_mcrecover")), "mcrecover")
        .unwrap();
    let example = include_str!("../examples/metacircular.toml").replacen(
        "mode = \"rootless\"",
        "mode = \"rootful\"",
        1,
    );
    sb.write_file("/srv/owner-test.toml", example.as_bytes())
        .unwrap();
    let out = sb.run(&[
        "timeout",
        "60",
        "/usr/bin/mcrecover",
        "daemon",
        "--config",
        "/srv/owner-test.toml",
        "--no-install",
        "--state-dir",
        "/srv/owner-test-state",
    ]);
    let t = text(&out);
    eprintln!("daemon beside another owner: {:?}\n{t}", out.status.code());
    assert!(
        !out.status.success() && out.status.code() != Some(124),
        "{t}"
    );
    assert!(t.contains("cannot own net.metacircular.Recovery1"), "{t}");
    let units = sb.run(&[
        "systemctl",
        "list-units",
        "--all",
        "--plain",
        "--no-legend",
        "mcns.service",
    ]);
    assert!(
        !String::from_utf8_lossy(&units.stdout).contains("active"),
        "the daemon started units: {}",
        text(&units)
    );
    drop(server);
    wait_not_running(&bus).await;

    // The rootless policy (rootless deployments only) lets mcp own it.
    sb.install_dbus_policy(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("units/dbus/net.metacircular.Recovery1-rootless.conf"),
    )
    .unwrap();
    let t = own_as_mcp(&sb);
    assert!(t.contains("OWN: ok"), "{t}");
}

/// Run as uid 850 inside the sandbox by
/// [`only_the_daemons_uid_may_own_the_name`]: tries to own the API name on
/// the system bus and says how it went. Does nothing otherwise.
#[tokio::test]
async fn own_name_child() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let conn = zbus::Connection::system().await.unwrap();
    match conn
        .request_name_with_flags(BUS_NAME, zbus::fdo::RequestNameFlags::DO_NOT_QUEUE)
        .await
    {
        Ok(reply) => println!("OWN: ok {reply:?}"),
        Err(e) => println!("OWN: denied {e}"),
    }
}
