//! Step 4 of the flow, for an operator at a shell: `mcrecover recover` and
//! `mcrecover gate` run the reconciliation engine ([`crate::engine`], carried
//! out by [`crate::runner`]) until it settles, with live progress
//! ([`Progress`]) and a report ([`Report`]). `recover` ramps every stage up
//! (preflight, start in parallel, gate on the checks; a unit that dies or a
//! failed start is restarted under the restart policy while the stage is
//! gated); `gate` only watches one stage's checks, as the gate units run
//! it. The daemon runs the same engine with another goal.

mod progress;
mod report;
pub mod timeline;

pub use progress::Progress;
pub use report::{
    CriticalStep, Outcome, Report, ServiceReport, ServiceStatus, StageReport, StageStatus,
};
pub use timeline::{to_svg, Timeline};

use crate::check::ExecVia;
use std::time::Duration;

use tracing::warn;

use crate::check::Outcome as ProbeOutcome;
use crate::config::{Config, Mode};
use crate::drive::{BusTarget, Systemd};
use crate::engine::history::PersistedState;
use crate::engine::{Effect, Goal, Life, Note, StagePhase, World};
use crate::plan::Plan;
use crate::runner::Runner;

/// The latest result of one check while a service starts.
#[derive(Debug, Clone)]
pub struct CheckState {
    /// Service the check belongs to.
    pub service: String,
    /// Check name.
    pub check: String,
    /// Latest outcome, `None` before the first attempt finished.
    pub last: Option<ProbeOutcome>,
    /// Consecutive successes so far.
    pub successes: u32,
    /// Successes needed.
    pub needed: u32,
    /// Attempts made.
    pub attempts: u32,
}

/// Something that happened during recovery, for progress display.
#[derive(Debug, Clone)]
pub enum RecoverEvent {
    /// A stage begins: its units are being started.
    StageStarted {
        /// Stage name.
        stage: String,
        /// 0-based index.
        index: usize,
        /// Number of stages.
        total: usize,
        /// Services of the stage.
        services: Vec<String>,
    },
    /// A unit's start job finished (or its preflight failed).
    UnitStarted {
        /// Service name.
        service: String,
        /// Unit name.
        unit: String,
        /// Job result (`done`, `failed`, ...) and the unit's ActiveState afterwards, or the error.
        result: Result<(String, String), String>,
    },
    /// A check attempt finished.
    Check(CheckState),
    /// A service passed all its checks.
    ServiceHealthy {
        /// Service name.
        service: String,
        /// Time since recovery began.
        at: Duration,
    },
    /// A stage finished.
    StageDone {
        /// Stage name.
        stage: String,
        /// Result.
        status: StageStatus,
        /// Time the stage took.
        elapsed: Duration,
    },
}

/// Run the whole recovery against systemd `sd` until it settles (every
/// stage healthy, failed or blocked). Units must already be installed
/// (see `render::write` and `Systemd::reload`).
pub async fn recover(
    cfg: &Config,
    plan: &Plan,
    sd: &Systemd,
    on_event: impl FnMut(&RecoverEvent),
) -> Report {
    recover_with_timeline(cfg, plan, sd, on_event).await.0
}

/// [`recover`], also recording the run's [`Timeline`] (for
/// `recover --timeline`, drawn by [`to_svg`]).
pub async fn recover_with_timeline(
    cfg: &Config,
    plan: &Plan,
    sd: &Systemd,
    mut on_event: impl FnMut(&RecoverEvent),
) -> (Report, Timeline) {
    let mut runner = Runner::new(
        cfg.clone(),
        plan.clone(),
        Goal::Recover,
        &PersistedState::default(),
        Some(sd.clone()),
        // A lost bus is reconnected to, as in the daemon (nothing is
        // started while it is gone).
        Some(BusTarget::Address(sd.address().to_owned())),
    );
    runner.subscribe().await;
    let mut timeline = Timeline::of_world(runner.world());
    // The engine's clock is not handed to the callback; this one starts
    // with the run (its Begin event), within a millisecond of it.
    let t0 = std::time::Instant::now();
    let mut owners: Vec<(String, String)> = Vec::new();
    runner
        .run_until_settled(|w, e| {
            if let Effect::Note(Note::Foreign { svc, detail, .. }) = e {
                if let Some(s) = w.services.get(*svc) {
                    owners.push((s.info.name.clone(), detail.clone()));
                }
            }
            let at_ms = u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX);
            timeline.record(w, e, at_ms);
            if let Some(ev) = progress_event(w, e) {
                on_event(&ev);
            }
            if let Effect::Escalate { svc, reason, .. } = e {
                warn!(service = w.services[*svc].info.name.as_str(), reason = %reason,
                    "restarted too often; not restarted again by this run");
            }
        })
        .await;
    let mut report = Report::from_world(runner.world(), runner.now());
    for (svc, detail) in owners {
        report.set_owner(&svc, detail);
    }
    let user = cfg.platform.mode == Mode::Rootless;
    for (svc, unit, start_error) in report.unhealthy_units() {
        let found = crate::diagnose::diagnose_unit(&unit, user, &start_error).await;
        for d in &found {
            warn!(service = %svc, unit = %unit, diagnosis = d.id, remedy = %d.remedy, "known failure");
        }
        report.set_diagnoses(&svc, found);
    }
    timeline.finish(&report);
    (report, timeline)
}

/// The result of `mcrecover gate`.
#[derive(Debug, Clone)]
pub struct GateResult {
    /// Every service of the stage became healthy in time.
    pub healthy: bool,
    /// Reasons of the checks that did not pass (`service/check: detail`).
    pub failing: Vec<String>,
}

/// Watch stage `stage`'s checks until all pass or its timeout (what the
/// gate units run). Starts nothing. Exec checks run as `exec` says (the
/// gate command passes transient units of its manager when it reaches it,
/// as the daemon runs them).
pub async fn gate(cfg: &Config, plan: &Plan, stage: usize, exec: ExecVia) -> GateResult {
    let mut runner = Runner::new(
        cfg.clone(),
        plan.clone(),
        Goal::Gate(stage),
        &PersistedState::default(),
        None,
        None,
    );
    runner.set_exec_via(exec);
    runner.run_until_settled(|_, _| {}).await;
    let w = runner.world();
    let healthy = w
        .stages
        .get(stage)
        .is_some_and(|s| s.phase == StagePhase::Healthy);
    let report = Report::from_world(w, runner.now());
    let failing = report
        .services
        .iter()
        .filter(|s| {
            w.stages
                .get(stage)
                .is_some_and(|st| st.info.name == s.stage)
        })
        .flat_map(|s| s.failing.clone())
        .collect();
    GateResult { healthy, failing }
}

/// The progress event of an effect, if it is one.
fn progress_event(w: &World, e: &Effect) -> Option<RecoverEvent> {
    let Effect::Note(note) = e else {
        return None;
    };
    let svc_name = |i: usize| w.services[i].info.name.clone();
    let unit = |i: usize| w.services[i].info.unit.clone().unwrap_or_default();
    Some(match note {
        Note::StageStarted(i) => {
            let st = &w.stages[*i];
            RecoverEvent::StageStarted {
                stage: st.info.name.clone(),
                index: *i,
                total: w.stages.len(),
                services: st.info.members.iter().map(|&m| svc_name(m)).collect(),
            }
        }
        Note::UnitStarted { svc, result } => RecoverEvent::UnitStarted {
            service: svc_name(*svc),
            unit: unit(*svc),
            result: result.clone(),
        },
        Note::PreflightFailed { svc, error } => RecoverEvent::UnitStarted {
            service: svc_name(*svc),
            unit: unit(*svc),
            result: Err(error.clone()),
        },
        Note::Probe { svc, check } => {
            let c = &w.services[*svc].checks[*check];
            RecoverEvent::Check(CheckState {
                service: svc_name(*svc),
                check: c.spec.name.clone(),
                last: c.last.as_ref().map(|l| ProbeOutcome {
                    ok: l.ok,
                    waiting: l.waiting,
                    detail: l.detail.clone(),
                    elapsed: Duration::ZERO,
                }),
                successes: c.successes(),
                needed: c.spec.success_threshold,
                attempts: c.attempts,
            })
        }
        Note::ServiceState { svc, new, .. } if *new == "healthy" => {
            let s = &w.services[*svc];
            if !matches!(s.life, Life::Healthy { .. }) {
                return None;
            }
            let at = s.report.healthy_at.unwrap_or(w.began_at);
            RecoverEvent::ServiceHealthy {
                service: svc_name(*svc),
                at: Duration::from_millis(at.saturating_sub(w.began_at)),
            }
        }
        Note::StageDone { stage, healthy } => {
            let st = &w.stages[*stage];
            RecoverEvent::StageDone {
                stage: st.info.name.clone(),
                status: if *healthy {
                    StageStatus::Healthy
                } else {
                    StageStatus::Failed
                },
                elapsed: Duration::from_millis(
                    st.ended_at
                        .unwrap_or(st.attempt_at)
                        .saturating_sub(st.attempt_at),
                ),
            }
        }
        _ => return None,
    })
}
