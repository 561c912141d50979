//! The metrics of a real engine run of the sample platform: values, names,
//! and `promtool check metrics` (Debian's `prometheus` package) on the text.

use std::collections::VecDeque;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::Metrics;
use crate::drive::UnitState;
use crate::engine::history::PersistedState;
use crate::engine::{next_deadline, step, Effect, Event, Goal, World};
use crate::watch::daemon::snapshot;

fn active(n: u64) -> UnitState {
    UnitState {
        load_state: "loaded".into(),
        active_state: "active".into(),
        sub_state: "running".into(),
        result: "success".into(),
        inactive_exit_usec: n,
        ..UnitState::default()
    }
}

static ACTIVATIONS: AtomicU64 = AtomicU64::new(0);

/// Answers every effect like a healthy host until nothing is left.
fn drain(w: &mut World, now: u64, mut queue: VecDeque<Effect>, all: &mut Vec<Effect>) {
    let mut n = 0;
    while let Some(e) = queue.pop_front() {
        n += 1;
        assert!(n < 10_000, "effects do not settle");
        let ev = match e {
            Effect::Preflight { stage, token, .. } => Event::PreflightDone {
                stage,
                token,
                problems: vec![],
            },
            Effect::Start { svc, token, .. } | Effect::Restart { svc, token, .. } => {
                Event::JobDone {
                    svc,
                    token,
                    result: Ok((
                        "done".into(),
                        active(ACTIVATIONS.fetch_add(1, Ordering::Relaxed) + 100),
                    )),
                }
            }
            Effect::Probe { svc, check, token } => Event::ProbeDone {
                svc,
                check,
                token,
                ok: true,
                waiting: false,
                detail: "ok".into(),
            },
            other => {
                all.push(other);
                continue;
            }
        };
        queue.extend(step(w, ev, now));
    }
}

/// The sample platform recovered, `app` killed once and restarted.
fn run() -> (World, u64, Vec<Effect>) {
    let cfg = crate::plan::tests::sample();
    let plan = crate::plan::build(&cfg).unwrap_or_else(|e| panic!("{e}"));
    let mut w = World::new(&cfg, &plan, Goal::Daemon, &PersistedState::default());
    w.bus_up = true;
    let mut now = 1_000;
    let mut all = Vec::new();
    let fx = step(&mut w, Event::Begin, now).into();
    drain(&mut w, now, fx, &mut all);
    for _ in 0..200 {
        now = next_deadline(&w).unwrap_or(now + 100).clamp(now, now + 100);
        let fx = step(&mut w, Event::Tick, now).into();
        drain(&mut w, now, fx, &mut all);
    }
    let app = w.find("app").unwrap_or_else(|| panic!("no app"));
    let exit = w.services[app]
        .unit
        .as_ref()
        .map_or(0, |u| u.inactive_exit_usec);
    let failed = UnitState {
        active_state: "failed".into(),
        sub_state: "failed".into(),
        result: "signal".into(),
        ..active(exit)
    };
    let fx = step(
        &mut w,
        Event::Unit {
            svc: app,
            state: failed,
        },
        now,
    )
    .into();
    drain(&mut w, now, fx, &mut all);
    for _ in 0..200 {
        now = next_deadline(&w).unwrap_or(now + 100).clamp(now, now + 100);
        let fx = step(&mut w, Event::Tick, now).into();
        drain(&mut w, now, fx, &mut all);
    }
    (w, now, all)
}

/// The sample of `series` in `text` has the value `value`.
fn expect_sample(text: &str, series: &str, value: &str) {
    let l = sample_line(text, series);
    assert!(l.ends_with(&format!(" {value}")), "{l}");
}

fn sample_line<'a>(text: &'a str, prefix: &str) -> &'a str {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line {prefix} in\n{text}"))
}

#[test]
fn a_recovered_platform_and_a_restart() {
    let (w, now, _) = run();
    let snap = snapshot(&w, now, std::path::Path::new("/etc/x.toml"));
    let app = snap
        .services
        .iter()
        .find(|s| s.name == "app")
        .unwrap_or_else(|| panic!("{snap:?}"));
    assert_eq!(app.total_restarts, 1, "{snap:?}");
    let m = Metrics::new();
    m.update(&w, &snap);
    let app_id = w.find("app").unwrap_or_default();
    m.effects(
        &w,
        &[Effect::Escalate {
            svc: app_id,
            event_id: "app-1".into(),
            restarts: 5,
            reason: "x".into(),
        }],
    );
    let timer = m.probe_timer(&w);
    timer(app_id, 0, Duration::from_millis(30));
    timer(app_id, 0, Duration::from_millis(3));
    let text = m.encode().unwrap_or_else(|e| panic!("{e}"));
    let stage = app.stage.clone().unwrap_or_default();
    expect_sample(
        &text,
        &format!("mcrecover_service_restarts_total{{service=\"app\",stage=\"{stage}\"}}"),
        "1",
    );
    expect_sample(
        &text,
        &format!("mcrecover_service_state{{service=\"app\",stage=\"{stage}\",state=\"healthy\"}}"),
        "1",
    );
    expect_sample(
        &text,
        &format!(
            "mcrecover_service_state{{service=\"app\",stage=\"{stage}\",state=\"unhealthy\"}}"
        ),
        "0",
    );
    expect_sample(
        &text,
        &format!("mcrecover_service_escalations_total{{service=\"app\",stage=\"{stage}\"}}"),
        "1",
    );
    let check = &w.services[app_id].checks[0].spec.name;
    expect_sample(
        &text,
        &format!("mcrecover_check_duration_seconds_count{{service=\"app\",check=\"{check}\"}}"),
        "2",
    );
    expect_sample(&text, &format!(
            "mcrecover_check_duration_seconds_bucket{{service=\"app\",check=\"{check}\",le=\"0.005\"}}"
        ), "1");
    expect_sample(
        &text,
        &format!("mcrecover_check_last_duration_seconds{{service=\"app\",check=\"{check}\"}}"),
        "0.003",
    );
    expect_sample(
        &text,
        &format!("mcrecover_check_last_success{{service=\"app\",check=\"{check}\"}}"),
        "1",
    );
    for st in &w.stages {
        let l = sample_line(
            &text,
            &format!(
                "mcrecover_stage_last_recovery_duration_seconds{{stage=\"{}\"}}",
                st.info.name
            ),
        );
        let v: f64 = l.rsplit(' ').next().unwrap_or("").parse().unwrap_or(-1.0);
        assert!(v >= 0.0, "{l}");
        assert!(text.contains(&format!(
            "mcrecover_stage_blocked{{stage=\"{}\"}} 0\n",
            st.info.name
        )));
    }
    assert!(text.contains(&format!(
        "mcrecover_build_info{{version=\"{}\"}} 1\n",
        env!("CARGO_PKG_VERSION")
    )));
    assert!(text.contains("mcrecover_up 1\n"));
    assert!(text.contains("mcrecover_recovering 0\n"));
    assert!(text.contains("# TYPE mcrecover_service_restarts_total counter\n"));
    assert!(text.contains("# TYPE mcrecover_check_duration_seconds histogram\n"));
}

#[test]
fn a_reload_keeps_counters_and_a_restored_counter_never_goes_down() {
    let (w, now, _) = run();
    let snap = snapshot(&w, now, std::path::Path::new("/etc/x.toml"));
    let m = Metrics::new();
    m.update(&w, &snap);
    let app = w.find("app").unwrap_or_default();
    m.effects(
        &w,
        &[Effect::OperatorWait {
            svc: app,
            event_id: "e".into(),
            check: "c".into(),
            remedy: String::new(),
            detail: String::new(),
            reminder: false,
            waited_ms: 0,
        }],
    );
    // The reminder is not another episode.
    m.effects(
        &w,
        &[Effect::OperatorWait {
            svc: app,
            event_id: "e".into(),
            check: "c".into(),
            remedy: String::new(),
            detail: String::new(),
            reminder: true,
            waited_ms: 1,
        }],
    );
    m.reloaded(true);
    // A fresh engine of the same configuration without history.
    let cfg = crate::plan::tests::sample();
    let plan = crate::plan::build(&cfg).unwrap_or_else(|e| panic!("{e}"));
    let fresh = World::new(&cfg, &plan, Goal::Daemon, &PersistedState::default());
    let snap = snapshot(&fresh, now, std::path::Path::new("/etc/x.toml"));
    m.update(&fresh, &snap);
    let text = m.encode().unwrap_or_else(|e| panic!("{e}"));
    expect_sample(
        &text,
        "mcrecover_service_restarts_total{service=\"app\"",
        "1",
    );
    expect_sample(
        &text,
        "mcrecover_service_operator_waits_total{service=\"app\"",
        "1",
    );
    // Recovery figures of the boot recovery stay.
    assert!(text.contains("mcrecover_stage_last_recovery_duration_seconds{"));
    assert!(text.contains("mcrecover_config_last_reload_successful 1\n"));
}

/// `promtool check metrics` on `text`: exit 0 and nothing said (a lint
/// warning is printed and makes it exit non-zero). `None`: no promtool.
pub(crate) fn promtool(text: &str) -> Option<String> {
    use std::io::Write as _;
    let mut child = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(_) => return None,
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(text.as_bytes());
    }
    let out = child.wait_with_output().ok()?;
    Some(format!(
        "exit {:?}\n{}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

#[test]
fn promtool_finds_nothing_to_complain_about() {
    let (w, now, _) = run();
    let snap = snapshot(&w, now, std::path::Path::new("/etc/x.toml"));
    let m = Metrics::new();
    m.update(&w, &snap);
    let timer = m.probe_timer(&w);
    timer(0, 0, Duration::from_millis(12));
    // A drill's result (the drill metrics).
    let drill = crate::engine::DrillResult {
        id: "drill-core-1".into(),
        scope_kind: "stage".into(),
        scope: "core".into(),
        outcome: crate::engine::DrillOutcome::Exceeded,
        stop_ms: Some(400),
        rto_ms: Some(2_500),
        target_ms: Some(2_000),
        services: vec![crate::engine::ServiceRto {
            name: "proxy".into(),
            rto_ms: Some(2_500),
            target_ms: Some(2_000),
            exceeded: true,
        }],
    };
    m.effects(&w, &[Effect::DrillDone(drill)]);
    let text = m.encode().unwrap_or_else(|e| panic!("{e}"));
    assert!(
        text.contains("mcrecover_drills_total{outcome=\"exceeded\"} 1")
            && text.contains(
                "mcrecover_drill_last_rto_seconds{scope_kind=\"stage\",scope=\"core\"} 2.5"
            )
            && text.contains("mcrecover_drill_last_passed{scope_kind=\"stage\",scope=\"core\"} 0")
            && text.contains("mcrecover_drill_service_rto_seconds{service=\"proxy\"} 2.5")
            && text.contains("mcrecover_drill_in_progress 0"),
        "{text}"
    );
    match promtool(&text) {
        Some(said) => assert_eq!(said, "exit Some(0)\n", "promtool on\n{text}"),
        None => {
            assert!(
                std::env::var("MCRECOVER_REQUIRE_E2E").as_deref() != Ok("1"),
                "promtool is missing and MCRECOVER_REQUIRE_E2E=1 (apt-get install prometheus)"
            );
            eprintln!("skipped: promtool is missing (apt-get install prometheus)");
        }
    }
}
