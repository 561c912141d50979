//! Every [`Note`] of the engine as a log line with structured fields
//! (`SERVICE=`, `UNIT=`, `STAGE=`, ... in the journal). The messages and
//! fields are an interface: operators and tests search the journal for
//! them (`MESSAGE_ID` of a restart, "recovery finished; watching",
//! "preflight failed").

use tracing::{info, warn};

use crate::engine::{Note, World};

/// `MESSAGE_ID` of the journal entry logged for every restart issued.
pub const RESTART_MESSAGE_ID: &str = "5e8a0b3c2d1f4e6a9b7c8d0e1f2a3b4c";

/// Log `note` (taken at engine time `now`).
pub(super) fn note(w: &World, note: &Note, now: u64) {
    let name = |svc: usize| w.services.get(svc).map_or("", |s| s.info.name.as_str());
    let unit = |svc: usize| {
        w.services
            .get(svc)
            .and_then(|s| s.info.unit.as_deref())
            .unwrap_or("")
    };
    let stage_of = |svc: usize| w.stage_name(svc).unwrap_or("");
    let stage = |i: usize| w.stages.get(i).map_or("", |s| s.info.name.as_str());
    match note {
        Note::StageStarted(i) => {
            info!(
                stage = stage(*i),
                index = *i,
                attempt = w.stages[*i].attempts,
                "stage starting"
            );
        }
        Note::PreflightFailed { svc, error } => {
            warn!(service = name(*svc), stage = stage_of(*svc), error = %error, "preflight failed");
        }
        Note::UnitStarted { svc, result } => match result {
            Ok((job, active)) => {
                info!(service = name(*svc), unit = unit(*svc), result = %job, active_state = %active,
                    "unit start job finished");
            }
            Err(e) => {
                warn!(service = name(*svc), unit = unit(*svc), error = %e, "unit failed to start");
            }
        },
        Note::Probe { .. } => {}
        Note::ServiceState { svc, old, new } => {
            let s = &w.services[*svc];
            let held_by = match s.life {
                crate::engine::Life::Held { by } => name(by),
                _ => "",
            };
            let reason = if *new == "healthy" || *new == "starting" {
                ""
            } else {
                s.reason.as_str()
            };
            info!(
                service = name(*svc),
                stage = stage_of(*svc),
                old,
                new,
                reason,
                held_by,
                "service state changed"
            );
        }
        Note::RestartIssued {
            svc,
            restarts,
            reaction_ms,
            trigger,
        } => {
            let s = &w.services[*svc];
            info!(
                message_id = RESTART_MESSAGE_ID,
                service = name(*svc),
                unit = unit(*svc),
                stage = stage_of(*svc),
                restarts = *restarts,
                window_s = w.policy.escalate_window.as_secs(),
                total_restarts = s.history.total_restarts,
                reason = %s.reason,
                trigger = *trigger,
                reaction_ms = *reaction_ms,
                "restart issued"
            );
        }
        Note::JobFailed { svc, error } => {
            warn!(service = name(*svc), unit = unit(*svc), error = %error, "restart failed");
        }
        Note::StageDone { stage: i, healthy } => {
            let st = &w.stages[*i];
            let elapsed_s = st
                .ended_at
                .map_or(0.0, |e| e.saturating_sub(st.attempt_at) as f64 / 1000.0);
            if *healthy {
                info!(stage = stage(*i), elapsed_s, "stage healthy");
            } else {
                let failing: Vec<String> = st
                    .info
                    .members
                    .iter()
                    .filter(|&&m| {
                        !matches!(w.services[m].life, crate::engine::Life::Healthy { .. })
                    })
                    .map(|&m| format!("{}: {}", name(m), w.services[m].reason))
                    .collect();
                warn!(stage = stage(*i), elapsed_s, failing = %failing.join("; "), "stage failed");
            }
        }
        Note::Blocked { stage: i, by } => {
            warn!(stage = stage(*i), blocked_by = stage(*by),
                "stage waits: an earlier `block` stage failed (it is retried; the ramp goes on once it is healthy)");
        }
        Note::RampDone => {
            let total_s = now.saturating_sub(w.began_at) as f64 / 1000.0;
            info!(
                outcome = "AllHealthy",
                total_s, "recovery finished; watching"
            );
        }
        Note::BackoffReset(svc) => {
            info!(service = name(*svc), "healthy long enough: backoff reset");
        }
        Note::Foreign {
            svc,
            detail,
            taken_over,
        } => {
            if *taken_over {
                warn!(service = name(*svc), unit = unit(*svc), owner = %detail,
                    "a container of this service was started by another controller; taking it over ([watch] foreign = \"take-over\")");
            } else {
                warn!(service = name(*svc), unit = unit(*svc), owner = %detail,
                    "a container of this service was started by another controller; leaving it alone (checked, never stopped or replaced; `mcrecover adopt` hands it back)");
            }
        }
        Note::Resumed(svc) => {
            info!(
                service = name(*svc),
                unit = unit(*svc),
                "unit still runs the instance seen healthy before the daemon restarted: judged as healthy (steady checks)"
            );
        }
        Note::WaitOver { svc, waited_ms } => {
            info!(
                service = name(*svc),
                waited_s = waited_ms.map_or(0.0, |m| m as f64 / 1000.0),
                "no longer waiting for an operator: healthy"
            );
        }
        Note::Rearmed { svc, ack } => {
            let by = if *ack {
                "acknowledged"
            } else {
                "healthy again"
            };
            info!(service = name(*svc), by, "escalation re-armed");
        }
    }
}
