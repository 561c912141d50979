//! Step 4 of the flow: the health-gated recovery engine. Stage by stage it
//! starts the stage's units in parallel over D-Bus, waits for their jobs, then
//! gates on the stage's checks ([`gate::wait_healthy`]) until all pass or the
//! stage times out; `block` stops later stages, `continue` goes on. The same
//! engine backs `mcrecover recover` and (later) the daemon's boot recovery.

pub mod gate;
mod progress;
mod report;

pub use progress::Progress;
pub use report::{Outcome, Report, ServiceReport, ServiceStatus, StageReport, StageStatus};

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::config::{Config, FailurePolicy};
use crate::drive::{JobMode, Systemd};
use crate::plan::Plan;
use gate::GateEvent;

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
    /// A unit's start job finished.
    UnitStarted {
        /// Service name.
        service: String,
        /// Unit name.
        unit: String,
        /// Job result (`done`, `failed`, ...) and the unit's ActiveState afterwards, or the error.
        result: Result<(String, String), String>,
    },
    /// A check attempt finished.
    Check(gate::CheckState),
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

/// Options of [`recover_with`]; the default is what `mcrecover recover` does.
#[derive(Debug, Clone, Default)]
pub struct RecoverOptions {
    /// Services not to start, with the reason (the daemon: services that are
    /// escalated). They are left out of their stage's gate (the stage's
    /// verdict is about the others), reported as
    /// [`ServiceStatus::Skipped`], and the stage's gate unit is not started
    /// (it `Wants=` them and would start them).
    pub skip: BTreeMap<String, String>,
}

/// Run the whole recovery: every stage of `plan`, in order, against systemd `sd`.
/// Units must already be installed (see `render::write` and `Systemd::reload`).
pub async fn recover(
    cfg: &Config,
    plan: &Plan,
    sd: &Systemd,
    on_event: impl FnMut(&RecoverEvent),
) -> Report {
    recover_with(cfg, plan, sd, &RecoverOptions::default(), on_event).await
}

/// [`recover`] with [`RecoverOptions`].
pub async fn recover_with(
    cfg: &Config,
    plan: &Plan,
    sd: &Systemd,
    opts: &RecoverOptions,
    mut on_event: impl FnMut(&RecoverEvent),
) -> Report {
    let t0 = Instant::now();
    let mut report = Report::new(plan);
    let total = plan.stages.len();
    let mut blocked_by: Option<String> = None;
    let mut earlier_failed = false;
    // The stage's preflight found nothing to do while the previous stage
    // was being gated (see `preflight_ahead`).
    let mut clear_ahead = false;

    for (index, stage) in plan.stages.iter().enumerate() {
        if let Some(blocker) = &blocked_by {
            report.mark_blocked(&stage.name, blocker);
            continue;
        }
        let stage_start = Instant::now();
        let started_at = stage_start - t0;
        info!(stage = %stage.name, index, "stage starting");
        on_event(&RecoverEvent::StageStarted {
            stage: stage.name.clone(),
            index,
            total,
            services: stage.services.clone(),
        });

        // Before any unit starts: images into podman storage (cold start) and
        // the host checks of `doctor` for this stage. A problem fails the stage
        // at once with the same message `doctor` gives, reported like a start
        // error on each affected service, instead of podman failing obscurely.
        // Services whose unit is already active (a daemon restarted in the
        // middle, a second `recover`) need no preflight: their ports are
        // theirs and their images are in use.
        // It may have found nothing to do already, while the previous stage
        // was gated (`preflight_ahead`).
        let mut idle = Vec::new();
        if std::mem::take(&mut clear_ahead) {
            debug!(stage = %stage.name, "preflight clear already (checked while the previous stage was gated)");
        } else {
            for svc in &stage.services {
                let active = match unit_of(plan, svc) {
                    Some(unit) => sd.unit_state(unit).await.is_ok_and(|st| st.is_active()),
                    None => false,
                };
                if !active {
                    idle.push(svc.clone());
                }
            }
        }
        let problems = preflight(cfg, &stage.name, &idle).await;
        if !problems.is_empty() {
            for (svc, msg) in &problems {
                warn!(service = %svc, stage = %stage.name, error = %msg, "preflight failed");
                report.set_unit(svc, None, None, Some(msg.clone()));
                on_event(&RecoverEvent::UnitStarted {
                    service: svc.clone(),
                    unit: unit_of(plan, svc).unwrap_or_default().to_string(),
                    result: Err(msg.clone()),
                });
            }
            let none = gate::GateResult {
                healthy_after: stage.services.iter().map(|s| (s.clone(), None)).collect(),
                checks: Vec::new(),
            };
            let elapsed = stage_start.elapsed();
            report.record_stage(
                &stage.name,
                StageStatus::Failed,
                (started_at, elapsed, elapsed),
                &none,
            );
            earlier_failed = true;
            if stage.policy == FailurePolicy::Block {
                blocked_by = Some(stage.name.clone());
            }
            on_event(&RecoverEvent::StageDone {
                stage: stage.name.clone(),
                status: StageStatus::Failed,
                elapsed,
            });
            continue;
        }

        // Start every unit of the stage in parallel. After a failed `continue`
        // stage, start with dependencies ignored: the failed gate must not make
        // this stage wait out the earlier stage's timeout a second time.
        let mode = if earlier_failed {
            JobMode::IgnoreDependencies
        } else {
            JobMode::Replace
        };
        let (gated, skipped) = split_skipped(&stage.services, &opts.skip);
        for (svc, why) in &skipped {
            warn!(service = %svc, stage = %stage.name, reason = %why, "service skipped; not started");
            report.mark_skipped(svc, why);
        }
        let units: Vec<(String, String)> = gated
            .iter()
            .filter_map(|s| unit_of(plan, s).map(|u| (s.clone(), u.to_string())))
            .collect();
        let starts = futures_util::future::join_all(units.iter().map(|(svc, unit)| {
            let sd = sd.clone();
            async move { (svc.clone(), unit.clone(), sd.start_mode(unit, mode).await) }
        }))
        .await;
        for (svc, unit, res) in starts {
            let result = match res {
                Ok(job) => {
                    info!(service = %svc, unit = %unit, result = %job.result, active_state = %job.state.active_state, "unit start job finished");
                    report.set_unit(
                        &svc,
                        Some(job.result.clone()),
                        Some(job.state.active_state.clone()),
                        None,
                    );
                    Ok((job.result, job.state.active_state))
                }
                Err(e) => {
                    warn!(service = %svc, unit = %unit, error = %e, "unit failed to start");
                    report.set_unit(&svc, None, None, Some(e.to_string()));
                    Err(e.to_string())
                }
            };
            on_event(&RecoverEvent::UnitStarted {
                service: svc,
                unit,
                result,
            });
        }

        // Gate on the stage's checks until healthy or timeout.
        let deadline = stage_start + stage.timeout;
        let gate_offset = stage_start.elapsed();
        let gate = gate::wait_healthy(cfg, &gated, deadline, |ev| match ev {
            GateEvent::Attempt(st) => on_event(&RecoverEvent::Check(st)),
            GateEvent::ServiceHealthy { service, .. } => {
                let at = t0.elapsed();
                info!(service = %service, stage = %stage.name, healthy_after_s = at.as_secs_f64(), "service healthy");
                on_event(&RecoverEvent::ServiceHealthy { service, at });
            }
        });
        // Meanwhile, the next stage's preflight, so that it can start its
        // units as soon as this stage is healthy.
        let next: &[String] = plan
            .stages
            .get(index + 1)
            .map_or(&[], |s| s.services.as_slice());
        let (result, ahead) = tokio::join!(gate, preflight_ahead(cfg, next));
        clear_ahead = ahead;

        let elapsed = stage_start.elapsed();
        let healthy = result.all_healthy();
        let status = if healthy {
            StageStatus::Healthy
        } else {
            StageStatus::Failed
        };
        report.record_stage(
            &stage.name,
            status,
            (started_at, gate_offset, elapsed),
            &result,
        );

        if healthy && !skipped.is_empty() {
            // The gate unit wants (and checks) the skipped services too.
            info!(stage = %stage.name, unit = %stage.gate, skipped = skipped.len(), "gate unit not started: services were skipped");
        } else if healthy {
            // Mark the stage as passed in systemd too: the gate unit runs the
            // same checks once more, which pass at once.
            if let Err(e) = sd.start(&stage.gate).await {
                warn!(stage = %stage.name, unit = %stage.gate, error = %e, "gate unit did not pass after the stage was healthy");
            }
        } else {
            for reason in result.failing_reasons() {
                warn!(stage = %stage.name, reason = %reason, "stage check failing");
            }
            let user = cfg.platform.mode == crate::config::Mode::Rootless;
            for (svc, unit, start_error) in report.unhealthy_units(&stage.name) {
                let found = crate::diagnose::diagnose_unit(&unit, user, &start_error).await;
                for d in &found {
                    warn!(service = %svc, unit = %unit, diagnosis = d.id, remedy = %d.remedy, "known failure");
                }
                report.set_diagnoses(&svc, found);
            }
            earlier_failed = true;
            if stage.policy == FailurePolicy::Block {
                blocked_by = Some(stage.name.clone());
            }
        }
        on_event(&RecoverEvent::StageDone {
            stage: stage.name.clone(),
            status,
            elapsed,
        });
    }
    report.finish(t0.elapsed());
    report
}

/// Images (loaded or pulled as needed, see [`crate::images`]) and the stage's
/// host checks ([`crate::doctor::preflight_stage`]): per service, what stops it
/// from starting. Empty when the stage may start.
async fn preflight(cfg: &Config, stage: &str, services: &[String]) -> Vec<(String, String)> {
    if services.is_empty() {
        return Vec::new();
    }
    match crate::images::ensure_images(cfg, services).await {
        Ok(_) => {}
        // podman itself could not answer (e.g. inside the daemon's hardened
        // unit, where its storage is read-only): not a verdict on the images.
        // Start anyway; a missing image then fails the unit, and the
        // diagnosis names it.
        Err(
            e @ (crate::images::ImagesError::Podman { .. }
            | crate::images::ImagesError::Spawn { .. }),
        ) => {
            warn!(stage = %stage, error = %e, "cannot check images with podman here; starting anyway");
        }
        Err(e) => return e.by_service(services).into_iter().collect(),
    }
    let failures: Vec<String> = crate::doctor::preflight_services(cfg, services)
        .await
        .into_iter()
        .filter(|f| f.status == crate::doctor::Status::Fail)
        .map(|f| match f.remedy {
            Some(r) => format!("preflight {}: {} -> {r}", f.check, f.explanation),
            None => format!("preflight {}: {}", f.check, f.explanation),
        })
        .collect();
    if failures.is_empty() {
        return Vec::new();
    }
    let msg = failures.join("; ");
    services.iter().map(|s| (s.clone(), msg.clone())).collect()
}

/// The part of [`preflight`] that does not depend on earlier stages, run for
/// the next stage while this one is gated: true when every image is present
/// and no host check fails, so the next stage needs no preflight of its own.
/// Anything else (an image to load or pull, a port taken, podman not
/// answering) is left to the full preflight when the stage begins.
async fn preflight_ahead(cfg: &Config, services: &[String]) -> bool {
    if services.is_empty() {
        return false;
    }
    matches!(crate::images::all_present(cfg, services).await, Ok(true))
        && crate::doctor::preflight_services(cfg, services)
            .await
            .iter()
            .all(|f| f.status != crate::doctor::Status::Fail)
}

/// `services` split into those to start and gate, and the skipped ones
/// (with the reason), both in order.
fn split_skipped(
    services: &[String],
    skip: &BTreeMap<String, String>,
) -> (Vec<String>, Vec<(String, String)>) {
    let mut gated = Vec::new();
    let mut skipped = Vec::new();
    for s in services {
        match skip.get(s) {
            Some(why) => skipped.push((s.clone(), why.clone())),
            None => gated.push(s.clone()),
        }
    }
    (gated, skipped)
}

/// The unit of `service` in `plan` (None for external services).
fn unit_of<'a>(plan: &'a Plan, service: &str) -> Option<&'a str> {
    plan.services.get(service).and_then(|s| s.unit.as_deref())
}
