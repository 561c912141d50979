//! End-to-end tests of `mcrecover::drive` against a REAL systemd: each test
//! boots its own throwaway systemd with the workspace's testbed
//! (`mcrecover_testbed::Sandbox`), talks to it over its system bus, and tears
//! it down on drop (also on panic).
//!
//! Missing prerequisites (root, systemd, dbus, util-linux, ...; see
//! `mcrecover_testbed::e2e_gate`): the tests FAIL when
//! `MCRECOVER_REQUIRE_E2E=1`, else they skip with a message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use mcrecover::drive::{BusTarget, DriveError, Systemd, UnitChange, UnitWatch};
use mcrecover_testbed::{e2e_gate, RootlessUser, Sandbox, SandboxOptions};

/// Runs blocking `f` (the testbed's methods block) off the async runtime;
/// a panic in it is the test's panic.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("blocking task: {e}"),
    }
}

/// A testbed sandbox shared with blocking tasks.
struct Sb(Arc<Sandbox>);

impl Sb {
    /// Boots a sandbox for `test`, or `None` (after `e2e_gate` printed why)
    /// when this machine cannot run one and MCRECOVER_REQUIRE_E2E is unset.
    async fn boot(test: &str, rootless_user: Option<RootlessUser>) -> Option<Sb> {
        let name = test.to_owned();
        blocking(move || {
            if !e2e_gate(&name, &[]) {
                return None;
            }
            let opts = SandboxOptions {
                name: name.clone(),
                rootless_user,
                ..SandboxOptions::default()
            };
            let sb = Sandbox::boot(opts).unwrap_or_else(|e| panic!("{name}: boot sandbox: {e}"));
            Some(Sb(Arc::new(sb)))
        })
        .await
    }

    /// Runs `f` on the sandbox in a blocking task.
    async fn with<T: Send + 'static>(&self, f: impl FnOnce(&Sandbox) -> T + Send + 'static) -> T {
        let sb = Arc::clone(&self.0);
        blocking(move || f(&sb)).await
    }

    /// Connects to the sandbox's systemd over its system bus (booted: up).
    async fn connect(&self) -> Systemd {
        let bus = BusTarget::Address(self.0.bus_address());
        Systemd::connect(&bus)
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.0.bus_address()))
    }

    /// Writes a unit file into the sandbox's /run/systemd/system.
    async fn write_unit(&self, name: &str, text: &str) {
        let (path, text) = (format!("/run/systemd/system/{name}"), text.to_owned());
        self.with(move |sb| sb.write_file(&path, text.as_bytes()))
            .await
            .expect("write unit");
    }

    /// Runs `argv` as root inside the sandbox; it must succeed.
    async fn run_ok(&self, argv: &[&str]) -> String {
        let argv: Vec<String> = argv.iter().map(|s| (*s).to_owned()).collect();
        self.with(move |sb| {
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            sb.run_ok(&argv).unwrap_or_else(|e| panic!("{e}"))
        })
        .await
    }

    /// Sends `signal` to `pid` (a pid of the sandbox's pid namespace).
    async fn kill(&self, signal: &str, pid: u32) {
        self.run_ok(&["kill", "-s", signal, &pid.to_string()]).await;
    }

    /// Tears the sandbox down (SIGKILL of its PID 1) off the runtime.
    async fn teardown(self) {
        let Sb(sb) = self;
        blocking(move || drop(sb)).await;
    }
}

const SLEEP_UNIT: &str = "[Service]\nExecStart=/bin/sleep infinity\n";

/// Wait (bounded, as a failure guard only) for a change matching `pred`.
async fn next_matching(
    watch: &mut UnitWatch,
    what: &str,
    pred: impl Fn(&UnitChange) -> bool,
) -> UnitChange {
    let mut seen = Vec::new();
    let found = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(change) = watch.next().await {
            seen.push(format!(
                "{} {}/{} pid={} restarts={}",
                change.unit,
                change.state.active_state,
                change.state.sub_state,
                change.state.main_pid,
                change.state.n_restarts
            ));
            if pred(&change) {
                return Some(change);
            }
        }
        None
    })
    .await;
    match found {
        Ok(Some(change)) => change,
        Ok(None) => panic!("watch ended before {what}; saw {seen:?}"),
        Err(_) => panic!("no change for {what}; saw {seen:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_against_real_systemd() {
    let Some(sb) = Sb::boot("lifecycle_against_real_systemd", None).await else {
        return;
    };
    let sd = sb.connect().await;

    sb.write_unit("mcr-sleep.service", SLEEP_UNIT).await;
    sb.write_unit(
        "mcr-oneshot.service",
        "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/true\n",
    )
    .await;
    sb.write_unit(
        "mcr-fails.service",
        "[Service]\nType=oneshot\nExecStart=/bin/false\n",
    )
    .await;
    sb.write_unit(
        "mcr-noexec.service",
        "[Service]\nType=exec\nExecStart=/nonexistent/mcrecover/binary\n",
    )
    .await;
    sb.write_unit(
        "mcr-dep.service",
        "[Unit]\nRequires=mcr-fails.service\nAfter=mcr-fails.service\n[Service]\nExecStart=/bin/sleep infinity\n",
    ).await;
    sb.write_unit(
        "mcr-limited.service",
        "[Unit]\nStartLimitBurst=2\nStartLimitIntervalSec=1h\n[Service]\nType=oneshot\nExecStart=/bin/false\n",
    ).await;
    sb.run_ok(&[
        "ln",
        "-s",
        "/dev/null",
        "/run/systemd/system/mcr-masked.service",
    ])
    .await;
    sd.reload().await.expect("daemon-reload");

    // Start a simple unit: active, with a main pid.
    let started = sd.start("mcr-sleep.service").await.expect("start sleep");
    assert_eq!(started.unit, "mcr-sleep.service");
    assert_eq!(started.result, "done");
    assert!(
        started.job.starts_with("/org/freedesktop/systemd1/job/"),
        "{}",
        started.job
    );
    assert_eq!(started.state.load_state, "loaded");
    assert_eq!(started.state.active_state, "active");
    assert_eq!(started.state.sub_state, "running");
    assert!(started.state.main_pid > 0);
    assert!(started.state.active_enter_usec > 0);
    assert!(started.state.inactive_exit_usec > 0);
    let read = sd
        .unit_state("mcr-sleep.service")
        .await
        .expect("unit_state");
    assert_eq!(read, started.state);

    // Starting an active unit again is a no-op job.
    let again = sd.start("mcr-sleep.service").await.expect("start again");
    assert_eq!(again.result, "done");
    assert_eq!(again.state.main_pid, started.state.main_pid);

    // Restart: a new process.
    let restarted = sd.restart("mcr-sleep.service").await.expect("restart");
    assert_eq!(restarted.state.active_state, "active");
    assert_ne!(restarted.state.main_pid, started.state.main_pid);
    assert!(restarted.state.main_pid > 0);

    // Stop: inactive, no main pid.
    let stopped = sd.stop("mcr-sleep.service").await.expect("stop");
    assert_eq!(stopped.result, "done");
    assert_eq!(stopped.state.active_state, "inactive");
    assert_eq!(stopped.state.main_pid, 0);

    // A oneshot with RemainAfterExit: active/exited.
    let oneshot = sd
        .start("mcr-oneshot.service")
        .await
        .expect("start oneshot");
    assert_eq!(oneshot.state.active_state, "active");
    assert_eq!(oneshot.state.sub_state, "exited");

    // A failing ExecStart: JobFailed with the result and a journalctl hint.
    match sd.start("mcr-fails.service").await {
        Err(e @ DriveError::JobFailed { .. }) => {
            let DriveError::JobFailed {
                unit, result, hint, ..
            } = &e
            else {
                unreachable!()
            };
            assert_eq!(unit, "mcr-fails.service");
            assert_eq!(result, "failed");
            assert!(hint.contains("journalctl -u mcr-fails.service"), "{hint}");
            assert_eq!(
                e.to_string(),
                "unit mcr-fails.service failed to start (result: failed); \
                 see `journalctl -u mcr-fails.service`"
            );
        }
        other => panic!("expected JobFailed, got {other:?}"),
    }
    let failed = sd.unit_state("mcr-fails.service").await.expect("state");
    assert_eq!(failed.active_state, "failed");

    // A missing executable (Type=exec waits for the exec).
    match sd.start("mcr-noexec.service").await {
        Err(DriveError::JobFailed { result, hint, .. }) => {
            assert_eq!(result, "failed");
            assert!(!hint.contains("reset-failed"), "{hint}");
        }
        other => panic!("expected JobFailed, got {other:?}"),
    }

    // A unit whose requirement fails: result dependency.
    match sd.start("mcr-dep.service").await {
        Err(DriveError::JobFailed {
            unit, result, hint, ..
        }) => {
            assert_eq!(unit, "mcr-dep.service");
            assert_eq!(result, "dependency");
            assert!(hint.contains("list-dependencies mcr-dep.service"), "{hint}");
        }
        other => panic!("expected JobFailed(dependency), got {other:?}"),
    }

    // Not found: on start and on state reads.
    match sd.start("mcr-does-not-exist.service").await {
        Err(DriveError::UnitNotFound { unit }) => assert_eq!(unit, "mcr-does-not-exist.service"),
        other => panic!("expected UnitNotFound, got {other:?}"),
    }
    match sd.unit_state("mcr-does-not-exist.service").await {
        Err(DriveError::UnitNotFound { unit }) => assert_eq!(unit, "mcr-does-not-exist.service"),
        other => panic!("expected UnitNotFound, got {other:?}"),
    }
    match sd.restart("mcr-does-not-exist.service").await {
        Err(DriveError::UnitNotFound { .. }) => {}
        other => panic!("expected UnitNotFound, got {other:?}"),
    }

    match sd.stop("mcr-does-not-exist.service").await {
        Err(DriveError::UnitNotFound { .. }) => {}
        other => panic!("expected UnitNotFound, got {other:?}"),
    }

    // Masked.
    match sd.start("mcr-masked.service").await {
        Err(DriveError::UnitMasked { unit }) => assert_eq!(unit, "mcr-masked.service"),
        other => panic!("expected UnitMasked, got {other:?}"),
    }

    // Not a unit name at all.
    match sd.start("not a unit").await {
        Err(DriveError::InvalidUnitName { unit, .. }) => assert_eq!(unit, "not a unit"),
        other => panic!("expected InvalidUnitName, got {other:?}"),
    }

    // The start rate limit: the third start within the interval is refused,
    // and the hint says how to clear it; reset_failed does.
    for _ in 0..2 {
        match sd.start("mcr-limited.service").await {
            Err(DriveError::JobFailed { hint, .. }) => {
                assert!(!hint.contains("reset-failed"), "{hint}")
            }
            other => panic!("expected JobFailed, got {other:?}"),
        }
    }
    match sd.start("mcr-limited.service").await {
        Err(DriveError::JobFailed { result, hint, .. }) => {
            assert_eq!(result, "failed");
            assert!(
                hint.contains("systemctl reset-failed mcr-limited.service"),
                "{hint}"
            );
        }
        other => panic!("expected JobFailed(start-limit-hit), got {other:?}"),
    }
    sd.reset_failed("mcr-limited.service")
        .await
        .expect("reset-failed");
    match sd.start("mcr-limited.service").await {
        Err(DriveError::JobFailed { hint, .. }) => {
            assert!(!hint.contains("reset-failed"), "{hint}")
        }
        other => panic!("expected JobFailed, got {other:?}"),
    }

    // reset_failed clears the failed state.
    sd.reset_failed("mcr-fails.service")
        .await
        .expect("reset-failed");
    let reset = sd.unit_state("mcr-fails.service").await.expect("state");
    assert_eq!(reset.active_state, "inactive");
    sb.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_starts_share_one_connection() {
    let Some(sb) = Sb::boot("parallel_starts_share_one_connection", None).await else {
        return;
    };
    let sd = sb.connect().await;
    let units: Vec<String> = (1..=4).map(|i| format!("mcr-par{i}.service")).collect();
    for u in &units {
        // Many restarts below: no start rate limit.
        sb.write_unit(u, &format!("[Unit]\nStartLimitIntervalSec=0\n{SLEEP_UNIT}"))
            .await;
    }
    sd.reload().await.expect("daemon-reload");

    let (a, b, c, d) = tokio::join!(
        sd.start(&units[0]),
        sd.start(&units[1]),
        sd.start(&units[2]),
        sd.start(&units[3]),
    );
    let outcomes = [a, b, c, d].map(|r| r.expect("parallel start"));
    let mut pids = Vec::new();
    let mut jobs = Vec::new();
    for (o, u) in outcomes.iter().zip(&units) {
        assert_eq!(&o.unit, u);
        assert_eq!(o.result, "done");
        assert_eq!(o.state.active_state, "active", "{u}");
        assert!(o.state.main_pid > 0);
        pids.push(o.state.main_pid);
        jobs.push(o.job.clone());
    }
    pids.sort_unstable();
    pids.dedup();
    assert_eq!(pids.len(), 4, "four distinct processes");
    jobs.sort();
    jobs.dedup();
    assert_eq!(jobs.len(), 4, "four distinct jobs");

    // Rounds of concurrent jobs, one per unit, mixing restarts with starts of
    // active units (jobs that finish at once): every caller gets its own
    // job's outcome. (Concurrent jobs on the SAME unit are not compared
    // here: each caller's re-read state would show the other's job.)
    for round in 0..6 {
        let jobs = (0..4).map(|i| {
            let (sd, u) = (&sd, &units[i]);
            async move {
                if (i + round) % 2 == 0 {
                    sd.restart(u).await
                } else {
                    sd.start(u).await
                }
            }
        });
        let mut seen = std::collections::HashSet::new();
        for (i, r) in futures_util::future::join_all(jobs)
            .await
            .into_iter()
            .enumerate()
        {
            let o = r.unwrap_or_else(|e| panic!("round {round} job {i}: {e}"));
            assert_eq!(o.unit, units[i]);
            assert_eq!(o.result, "done");
            assert!(o.state.is_active(), "round {round}: {o:?}");
            seen.insert(o.job);
        }
        assert_eq!(seen.len(), 4, "round {round}: distinct jobs {seen:?}");
    }

    // Clones share the connection; spawned tasks work too. Two restarts of the
    // same unit at once plus stops of the others.
    let mut handles = Vec::new();
    for u in units.iter().skip(1) {
        let sd = sd.clone();
        let u = u.clone();
        handles.push(tokio::spawn(async move { sd.stop(&u).await }));
    }
    let (r1, r2) = tokio::join!(sd.restart(&units[0]), sd.restart(&units[0]));
    for r in [r1, r2] {
        let o = r.expect("concurrent restart");
        assert_eq!(o.unit, units[0]);
    }
    assert!(sd.unit_state(&units[0]).await.expect("state").is_active());
    for h in handles {
        let o = h.await.expect("join").expect("parallel stop");
        assert_eq!(o.state.active_state, "inactive");
    }
    sb.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_reports_kills_and_restarts() {
    let Some(sb) = Sb::boot("watch_reports_kills_and_restarts", None).await else {
        return;
    };
    let sd = sb.connect().await;
    sb.write_unit("mcr-w-kill.service", SLEEP_UNIT).await;
    sb.write_unit("mcr-w-term.service", SLEEP_UNIT).await;
    sb.write_unit(
        "mcr-w-restart.service",
        "[Service]\nExecStart=/bin/sleep infinity\nRestart=on-failure\nRestartSec=200ms\n",
    )
    .await;
    sb.write_unit("mcr-w-stop.service", SLEEP_UNIT).await;
    sd.reload().await.expect("daemon-reload");
    let units: Vec<String> = [
        "mcr-w-kill.service",
        "mcr-w-term.service",
        "mcr-w-restart.service",
        "mcr-w-stop.service",
    ]
    .map(String::from)
    .to_vec();
    let mut pids = Vec::new();
    for u in &units {
        pids.push(sd.start(u).await.expect("start").state.main_pid);
    }

    let later = "mcr-w-later.service".to_owned();
    let mut watched = units.clone();
    watched.push(later.clone());
    let mut watch = sd.watch(&watched).await.expect("watch");
    // First, each unit's current state, one change per unit. The setups run
    // concurrently, so these come in the order the setups finish, not the
    // order given.
    let mut initial = std::collections::BTreeMap::new();
    while initial.len() < watched.len() {
        let c = next_matching(&mut watch, "the initial states", |_| true).await;
        assert!(watched.contains(&c.unit), "unexpected unit {}", c.unit);
        let dup = initial.insert(c.unit.clone(), c.state);
        assert!(dup.is_none(), "a second initial state for {}", c.unit);
    }
    for u in &units {
        assert_eq!(initial[u].active_state, "active", "{u}");
    }
    assert_eq!(initial[&later].load_state, "not-found");
    assert_eq!(initial[&later].active_state, "inactive");

    // SIGKILL: failed (Restart=no).
    sb.kill("KILL", pids[0]).await;
    let c = next_matching(&mut watch, "mcr-w-kill failed", |c| {
        c.unit == "mcr-w-kill.service" && c.state.active_state == "failed"
    })
    .await;
    assert_eq!(c.state.main_pid, 0);

    // SIGTERM is a clean exit for a service: inactive.
    sb.kill("TERM", pids[1]).await;
    next_matching(&mut watch, "mcr-w-term inactive", |c| {
        c.unit == "mcr-w-term.service" && c.state.active_state == "inactive"
    })
    .await;

    // Restart=on-failure: systemd restarts it, NRestarts counts it.
    sb.kill("KILL", pids[2]).await;
    let c = next_matching(&mut watch, "mcr-w-restart back up", |c| {
        c.unit == "mcr-w-restart.service"
            && c.state.active_state == "active"
            && c.state.n_restarts == 1
    })
    .await;
    assert!(c.state.main_pid > 0);
    assert_ne!(c.state.main_pid, pids[2]);

    // A stop through the driver shows up too.
    sd.stop("mcr-w-stop.service").await.expect("stop");
    next_matching(&mut watch, "mcr-w-stop inactive", |c| {
        c.unit == "mcr-w-stop.service" && c.state.active_state == "inactive"
    })
    .await;

    // Its unit file removed + daemon-reload: the watch sees not-found (systemd
    // does not signal LoadState; the driver re-reads after each reload).
    sb.with(|sb| sb.remove("/run/systemd/system/mcr-w-stop.service"))
        .await
        .expect("remove unit file");
    sd.reload().await.expect("daemon-reload");
    next_matching(&mut watch, "mcr-w-stop not-found", |c| {
        c.unit == "mcr-w-stop.service" && c.state.load_state == "not-found"
    })
    .await;

    // A unit that did not exist when the watch began: installed, reloaded,
    // started.
    sb.write_unit(&later, SLEEP_UNIT).await;
    sd.reload().await.expect("daemon-reload");
    sd.start(&later).await.expect("start later unit");
    let c = next_matching(&mut watch, "later unit active", |c| {
        c.unit == later && c.state.active_state == "active"
    })
    .await;
    assert_eq!(c.state.load_state, "loaded");
    assert!(c.state.main_pid > 0);

    // When systemd goes away (SIGKILL of the sandbox's PID 1) the watch ends
    // and jobs report the bus.
    let pid1 = nix::unistd::Pid::from_raw(i32::try_from(sb.0.pid()).expect("pid"));
    nix::sys::signal::kill(pid1, nix::sys::signal::Signal::SIGKILL).expect("kill systemd");
    let ended = tokio::time::timeout(Duration::from_secs(60), async {
        while watch.next().await.is_some() {}
    })
    .await;
    assert!(ended.is_ok(), "watch did not end after the bus went away");
    match sd.start("mcr-w-kill.service").await {
        Err(DriveError::BusUnreachable { address, .. }) => {
            assert!(
                address.ends_with("/run/dbus/system_bus_socket"),
                "{address}"
            )
        }
        other => panic!("expected BusUnreachable, got {other:?}"),
    }
    sb.teardown().await;
}

/// Set by `user_manager_over_user_bus` for the copy of this test binary it
/// runs as uid 850 inside the sandbox.
const CHILD_ENV: &str = "MCRECOVER_DRIVE_E2E_CHILD";

/// The production shape is rootless: the platform user's own manager on its
/// user bus. Root cannot use a user bus, so this runs the part below
/// (`as_mcp_in_sandbox`) as uid 850 inside the sandbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_manager_over_user_bus() {
    // The testbed creates the platform user (mcp, 850) on the host and its
    // home /srv/mcp inside the sandbox.
    let Some(sb) = Sb::boot("user_manager_over_user_bus", Some(RootlessUser::mcp())).await else {
        return;
    };
    let sd = sb.connect().await;
    let user = sd.start("user@850.service").await.expect("start user@850");
    assert_eq!(user.state.active_state, "active");

    let dir = "/run/user/850/systemd/user";
    let (fails, sleep) = (
        format!("{dir}/mcr-user-fails.service"),
        format!("{dir}/mcr-user.service"),
    );
    sb.with(move |sb| {
        sb.write_file(&sleep, SLEEP_UNIT.as_bytes())?;
        sb.write_file(&fails, b"[Service]\nType=oneshot\nExecStart=/bin/false\n")
    })
    .await
    .expect("write user units");

    // This test binary, run again inside as uid 850 (copied in: the checkout
    // may be invisible inside the sandbox, e.g. below /tmp).
    let host_exe = std::env::current_exe().expect("current exe");
    let exe = "/run/drive-e2e-test".to_owned();
    let inside = exe.clone();
    sb.with(move |sb| sb.copy_in(&host_exe, &inside, 0o755, None))
        .await
        .expect("copy the test binary in");
    let child = format!("{CHILD_ENV}=user");
    // Without DBUS_SESSION_BUS_ADDRESS (run_as sets it): BusTarget::User must
    // find the user bus by uid.
    let out = sb
        .with(move |sb| {
            sb.run_as(
                850,
                &[
                    "env",
                    "-u",
                    "DBUS_SESSION_BUS_ADDRESS",
                    &child,
                    "RUST_BACKTRACE=1",
                    &exe,
                    "--exact",
                    "as_mcp_in_sandbox",
                    "--nocapture",
                    "--test-threads=1",
                ],
            )
        })
        .await;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "uid-850 part failed:\n{text}");
    assert!(
        text.contains("USER-BUS-CHECKS-PASSED"),
        "uid-850 part did not run:\n{text}"
    );
    sb.teardown().await;
}

/// Does nothing unless run by `user_manager_over_user_bus` (as uid 850 in a
/// sandbox, with `MCRECOVER_DRIVE_E2E_CHILD=user`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_mcp_in_sandbox() {
    if std::env::var(CHILD_ENV).as_deref() != Ok("user") {
        return;
    }
    // BusTarget::User: no DBUS_SESSION_BUS_ADDRESS here, so /run/user/850/bus.
    assert_eq!(BusTarget::User.address(), "unix:path=/run/user/850/bus");
    let sd = Systemd::connect(&BusTarget::User)
        .await
        .expect("connect user bus");
    sd.reload().await.expect("user daemon-reload");
    let o = sd.start("mcr-user.service").await.expect("start user unit");
    assert_eq!(o.state.active_state, "active");
    assert!(o.state.main_pid > 0);
    let mut watch = sd
        .watch(&["mcr-user.service".to_owned()])
        .await
        .expect("watch");
    let first = watch.next().await.expect("initial state");
    assert!(first.state.is_active());
    let o = sd.stop("mcr-user.service").await.expect("stop user unit");
    assert_eq!(o.state.active_state, "inactive");
    next_matching(&mut watch, "user unit inactive", |c| {
        c.state.active_state == "inactive"
    })
    .await;
    match sd.start("mcr-user-fails.service").await {
        Err(DriveError::JobFailed { result, hint, .. }) => {
            assert_eq!(result, "failed");
            assert!(
                hint.contains("journalctl --user -u mcr-user-fails.service"),
                "{hint}"
            );
        }
        other => panic!("expected JobFailed, got {other:?}"),
    }

    // The system manager refuses an unprivileged caller (no polkit here).
    let system = BusTarget::Address("unix:path=/run/dbus/system_bus_socket".into());
    let sys = Systemd::connect(&system)
        .await
        .expect("connect system bus as uid 850");
    match sys.start("user@850.service").await {
        Err(DriveError::PermissionDenied { action, .. }) => {
            assert_eq!(action, "StartUnit user@850.service")
        }
        other => panic!("expected PermissionDenied, got {other:?}"),
    }
    // Reading state needs no privilege.
    assert!(sys
        .unit_state("user@850.service")
        .await
        .expect("state")
        .is_active());
    println!("USER-BUS-CHECKS-PASSED");
}

/// `unsettled_dependencies`: a `Requires=` unit not active and an `After=`
/// unit with a job are reported, `except` leaves a unit out, an inactive
/// `After=`-only unit without a job is no obstacle, and once the required
/// unit runs nothing is left; a start in `ignore-dependencies` mode then
/// runs the unit without pulling anything in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsettled_dependencies_name_what_a_start_would_wait_for() {
    use mcrecover::drive::JobMode;
    let Some(sb) = Sb::boot("unsettled_dependencies", None).await else {
        return;
    };
    let sd = sb.connect().await;
    sb.write_unit("mcr-dep-req.service", SLEEP_UNIT).await;
    sb.write_unit("mcr-dep-gate.service", SLEEP_UNIT).await;
    sb.write_unit("mcr-dep-order.service", SLEEP_UNIT).await;
    sb.write_unit(
        "mcr-dep-app.service",
        &format!(
            "[Unit]\nRequires=mcr-dep-req.service mcr-dep-gate.service\n\
             After=mcr-dep-req.service mcr-dep-gate.service mcr-dep-order.service\n{SLEEP_UNIT}"
        ),
    )
    .await;
    sd.reload().await.expect("daemon-reload");
    let gate = vec!["mcr-dep-gate.service".to_owned()];

    let left = sd
        .unsettled_dependencies("mcr-dep-app.service", &gate)
        .await
        .expect("read dependencies");
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(
        left[0].starts_with("mcr-dep-req.service (inactive"),
        "{left:?}"
    );
    let all = sd
        .unsettled_dependencies("mcr-dep-app.service", &[])
        .await
        .expect("read dependencies");
    assert!(
        all.iter().any(|d| d.starts_with("mcr-dep-gate.service")),
        "{all:?}"
    );
    assert!(
        !all.iter().any(|d| d.starts_with("mcr-dep-order.service")),
        "{all:?}"
    );

    sd.start("mcr-dep-req.service").await.expect("start req");
    let left = sd
        .unsettled_dependencies("mcr-dep-app.service", &gate)
        .await
        .expect("read dependencies");
    assert!(left.is_empty(), "{left:?}");

    let o = sd
        .start_mode("mcr-dep-app.service", JobMode::IgnoreDependencies)
        .await
        .expect("start ignoring dependencies");
    assert_eq!(o.state.active_state, "active");
    let gate_state = sd
        .unit_state("mcr-dep-gate.service")
        .await
        .expect("gate state");
    assert_eq!(gate_state.active_state, "inactive", "not pulled in");
    sb.teardown().await;
}
