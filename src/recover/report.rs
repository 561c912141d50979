//! The recovery report: per stage and per service timings, the critical path,
//! the overall outcome and its exit code; printable as text or JSON.

use std::fmt::Write as _;

use serde::Serialize;

use crate::engine::{Life, StagePhase, World};

/// Overall result of a recovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Every stage became healthy.
    AllHealthy,
    /// Some stage failed, but no `block` stage stopped the others.
    SomeFailed,
    /// A `block` stage failed and later stages were not started.
    Blocked,
}

impl Outcome {
    /// Process exit code: 0 all healthy, 1 some failed, 3 blocked.
    pub fn exit_code(self) -> u8 {
        match self {
            Outcome::AllHealthy => 0,
            Outcome::SomeFailed => 1,
            Outcome::Blocked => 3,
        }
    }
}

/// Result of one stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StageStatus {
    /// Not reached yet.
    Pending,
    /// All services healthy within the timeout.
    Healthy,
    /// Timed out with failing checks.
    Failed,
    /// Not started because an earlier `block` stage failed.
    Blocked,
}

/// Result of one service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceStatus {
    /// Not reached yet.
    Pending,
    /// All checks passed.
    Healthy,
    /// Started (or external) but its checks did not pass in time.
    Unhealthy,
    /// Not started because an earlier `block` stage failed.
    Blocked,
    /// Not started on purpose (see `RecoverOptions::skip`) and left out of
    /// its stage's gate.
    Skipped,
    /// Its container was started by another controller: left alone (not
    /// started, stopped or replaced), only checked; see `owner`.
    External,
    /// Runs and waits for an operator (a check answered `operator_wait`).
    Waiting,
}

/// Per-stage figures.
#[derive(Debug, Clone, Serialize)]
pub struct StageReport {
    /// Stage name.
    pub name: String,
    /// Result.
    pub status: StageStatus,
    /// Seconds from recovery start to stage start.
    pub started_at_s: f64,
    /// Seconds the stage took.
    pub elapsed_s: f64,
    /// The stage whose failure blocked this one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocked_by: Option<String>,
}

/// Per-service figures.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceReport {
    /// Service name.
    pub name: String,
    /// Stage name.
    pub stage: String,
    /// Unit name (absent for external services).
    pub unit: Option<String>,
    /// Result.
    pub status: ServiceStatus,
    /// Start job result (`done`, `failed`, ...).
    pub job_result: Option<String>,
    /// ActiveState after the start job.
    pub active_state: Option<String>,
    /// Error starting the unit, if any.
    pub start_error: Option<String>,
    /// Seconds from its stage's start to healthy.
    pub time_to_healthy_s: Option<f64>,
    /// Reasons of the checks that did not pass.
    pub failing: Vec<String>,
    /// Known failure signatures found in the unit's journal (only for
    /// services that did not become healthy).
    pub diagnoses: Vec<crate::diagnose::Diagnosis>,
    /// Why it was not started (status `skipped`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// Restarts the engine issued during the run (a unit that died or
    /// failed its checks is restarted under the restart policy).
    pub restarts: u32,
    /// The unit's last death seen during the run (`unit X is failed/failed
    /// (result signal)`), if it died.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub died: Option<String>,
    /// What runs instead of its unit's container (status `external`):
    /// container ID, image, who started it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// What the operator must do (status `waiting`: the check's `remedy`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remedy: Option<String>,
}

/// One step of the critical path: the slowest service of a stage.
#[derive(Debug, Clone, Serialize)]
pub struct CriticalStep {
    /// Stage name.
    pub stage: String,
    /// The service that became healthy last.
    pub service: String,
    /// Its time to healthy, seconds from stage start.
    pub time_to_healthy_s: f64,
}

/// The whole recovery report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Overall result.
    pub outcome: Outcome,
    /// Exit code that goes with it.
    pub exit_code: u8,
    /// Seconds from start to end.
    pub total_s: f64,
    /// Stages in order.
    pub stages: Vec<StageReport>,
    /// Services in stage order.
    pub services: Vec<ServiceReport>,
    /// Slowest service of each healthy stage.
    pub critical_path: Vec<CriticalStep>,
}

impl Report {
    /// The report of a settled recovery run: per stage and per service
    /// what the engine's world says, timed from the run's start.
    pub fn from_world(w: &World, now: u64) -> Report {
        let rel = |t: u64| t.saturating_sub(w.began_at) as f64 / 1000.0;
        let mut stages = Vec::new();
        let mut services = Vec::new();
        let mut critical_path = Vec::new();
        for st in &w.stages {
            let status = match st.phase {
                StagePhase::Healthy => StageStatus::Healthy,
                StagePhase::Failed { .. } => StageStatus::Failed,
                StagePhase::Blocked { .. } => StageStatus::Blocked,
                _ => StageStatus::Pending,
            };
            let blocked_by = match st.phase {
                StagePhase::Blocked { by } => w.stages.get(by).map(|b| b.info.name.clone()),
                _ => None,
            };
            let start = st.started_at.unwrap_or(now);
            stages.push(StageReport {
                name: st.info.name.clone(),
                status,
                started_at_s: st.started_at.map_or(0.0, rel),
                elapsed_s: st
                    .ended_at
                    .map_or(0.0, |e| e.saturating_sub(st.attempt_at) as f64 / 1000.0),
                blocked_by,
            });
            let mut slowest: Option<(String, f64)> = None;
            for &m in &st.info.members {
                let s = &w.services[m];
                let healthy = matches!(s.life, Life::Healthy { .. });
                let svc_status = match (&s.life, status) {
                    (Life::Skipped, _) => ServiceStatus::Skipped,
                    (_, StageStatus::Blocked) => ServiceStatus::Blocked,
                    (Life::Healthy { .. }, _) => ServiceStatus::Healthy,
                    (Life::Foreign { .. }, _) => ServiceStatus::External,
                    (Life::Waiting { .. }, _) => ServiceStatus::Waiting,
                    (_, StageStatus::Pending) => ServiceStatus::Pending,
                    _ => ServiceStatus::Unhealthy,
                };
                let tth = s
                    .report
                    .healthy_at
                    .filter(|_| healthy)
                    .map(|t| t.saturating_sub(start) as f64 / 1000.0);
                if let Some(t) = tth {
                    if slowest.as_ref().is_none_or(|(_, d)| t > *d) {
                        slowest = Some((s.info.name.clone(), t));
                    }
                }
                let mut failing = Vec::new();
                if svc_status != ServiceStatus::Healthy
                    && !matches!(
                        svc_status,
                        ServiceStatus::Pending | ServiceStatus::Blocked | ServiceStatus::Skipped
                    )
                {
                    if svc_status == ServiceStatus::Unhealthy && s.unit_down() {
                        failing.push(format!("{}/unit: {}", s.info.name, s.unit_reason()));
                    }
                    for c in s.checks.iter().filter(|c| c.passing != Some(true)) {
                        let why = c.last.as_ref().map_or_else(
                            || "no attempt finished before the deadline".to_owned(),
                            |l| l.detail.clone(),
                        );
                        failing.push(format!("{}/{}: {why}", s.info.name, c.spec.name));
                    }
                }
                services.push(ServiceReport {
                    name: s.info.name.clone(),
                    stage: st.info.name.clone(),
                    unit: s.info.unit.clone(),
                    status: svc_status,
                    job_result: s.report.job_result.clone(),
                    active_state: s.report.active_state.clone(),
                    start_error: s.report.start_error.clone(),
                    time_to_healthy_s: tth,
                    failing,
                    diagnoses: Vec::new(),
                    skipped: s.report.skipped.clone(),
                    restarts: s.report.restarts,
                    died: s.report.died.clone(),
                    owner: matches!(s.life, Life::Foreign { .. }).then(|| s.reason.clone()),
                    remedy: if matches!(s.life, Life::Waiting { .. }) {
                        s.waiting_check().and_then(|c| c.spec.remedy.clone())
                    } else {
                        None
                    },
                });
            }
            if status == StageStatus::Healthy {
                if let Some((service, t)) = slowest {
                    critical_path.push(CriticalStep {
                        stage: st.info.name.clone(),
                        service,
                        time_to_healthy_s: t,
                    });
                }
            }
        }
        let outcome = if stages.iter().any(|s| s.status == StageStatus::Blocked) {
            Outcome::Blocked
        } else if stages
            .iter()
            .any(|s| matches!(s.status, StageStatus::Failed | StageStatus::Pending))
        {
            Outcome::SomeFailed
        } else {
            Outcome::AllHealthy
        };
        Report {
            outcome,
            exit_code: outcome.exit_code(),
            total_s: rel(now),
            stages,
            services,
            critical_path,
        }
    }

    /// Services that did not become healthy and have a unit, with their
    /// start error (text for the diagnosis).
    pub(super) fn unhealthy_units(&self) -> Vec<(String, String, String)> {
        self.services
            .iter()
            .filter(|s| s.status == ServiceStatus::Unhealthy)
            .filter_map(|s| {
                let unit = s.unit.clone()?;
                Some((
                    s.name.clone(),
                    unit,
                    s.start_error.clone().unwrap_or_default(),
                ))
            })
            .collect()
    }

    /// What runs instead of `svc`'s unit's container (the detail found
    /// when it was left alone), for a service the report shows `external`.
    pub(super) fn set_owner(&mut self, svc: &str, detail: String) {
        if let Some(s) = self
            .services
            .iter_mut()
            .find(|s| s.name == svc && s.status == ServiceStatus::External)
        {
            s.owner = Some(detail);
        }
    }

    pub(super) fn set_diagnoses(&mut self, svc: &str, d: Vec<crate::diagnose::Diagnosis>) {
        if let Some(s) = self.services.iter_mut().find(|s| s.name == svc) {
            s.diagnoses = d;
        }
    }

    /// A human summary: per stage and per service time to healthy, failures
    /// with their reasons, and the critical path.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "\nRecovery summary ({:.2}s total):", self.total_s);
        for st in &self.stages {
            let status = match st.status {
                StageStatus::Healthy => "healthy".to_string(),
                StageStatus::Failed => "FAILED".to_string(),
                StageStatus::Blocked => {
                    format!("BLOCKED by {}", st.blocked_by.as_deref().unwrap_or("?"))
                }
                StageStatus::Pending => "not reached".to_string(),
            };
            let _ = writeln!(
                out,
                "  stage {:<12} {:<22} {:>7.2}s",
                st.name, status, st.elapsed_s
            );
            for s in self.services.iter().filter(|s| s.stage == st.name) {
                let t = s
                    .time_to_healthy_s
                    .map_or_else(|| "-".to_string(), |t| format!("{t:.2}s"));
                let state = match s.status {
                    ServiceStatus::Healthy => "healthy",
                    ServiceStatus::Unhealthy => "UNHEALTHY",
                    ServiceStatus::Blocked => "blocked",
                    ServiceStatus::Pending => "pending",
                    ServiceStatus::Skipped => "skipped",
                    ServiceStatus::External => "external",
                    ServiceStatus::Waiting => "waiting",
                };
                let _ = writeln!(out, "    {:<16} {:<10} {:>8}", s.name, state, t);
                if let Some(o) = &s.owner {
                    let _ = writeln!(
                        out,
                        "      left alone: {o} (`mcrecover adopt {}` hands it to its unit)",
                        s.name
                    );
                }
                if let Some(r) = &s.remedy {
                    let _ = writeln!(out, "      waiting for an operator: {r}");
                }
                if let Some(why) = &s.skipped {
                    let _ = writeln!(out, "      not started: {why}");
                }
                if let Some(e) = &s.start_error {
                    let _ = writeln!(out, "      start: {e}");
                }
                if let Some(d) = &s.died {
                    let _ = writeln!(out, "      died: {d}");
                }
                if s.restarts > 0 {
                    let _ = writeln!(out, "      restarted {} time(s)", s.restarts);
                }
                for r in &s.failing {
                    let _ = writeln!(out, "      check {r}");
                }
                for d in &s.diagnoses {
                    let _ = writeln!(out, "      diagnosis [{}]: {}", d.id, d.summary);
                    let _ = writeln!(out, "        remedy: {}", d.remedy);
                }
            }
        }
        if !self.critical_path.is_empty() {
            let sum: f64 = self.critical_path.iter().map(|c| c.time_to_healthy_s).sum();
            let path: Vec<String> = self
                .critical_path
                .iter()
                .map(|c| format!("{} ({:.2}s)", c.service, c.time_to_healthy_s))
                .collect();
            let _ = writeln!(out, "  critical path: {} = {sum:.2}s", path.join(" -> "));
        }
        let waiting: Vec<&str> = self
            .services
            .iter()
            .filter(|s| s.status == ServiceStatus::Waiting)
            .map(|s| s.name.as_str())
            .collect();
        let verdict = match self.outcome {
            // A stage may proceed while a member waits for an operator
            // (`gate = "running"`): say so instead of "all healthy".
            Outcome::AllHealthy if !waiting.is_empty() => format!(
                "every stage up; waiting for an operator: {} (see its remedy above)",
                waiting.join(", ")
            ),
            Outcome::AllHealthy => "all services healthy".to_owned(),
            Outcome::SomeFailed => "some services failed (exit 1)".to_owned(),
            Outcome::Blocked => "recovery blocked (exit 3)".to_owned(),
        };
        let _ = writeln!(out, "  result: {verdict}");
        out
    }
}
