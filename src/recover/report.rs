//! The recovery report: per stage and per service timings, the critical path,
//! the overall outcome and its exit code; printable as text or JSON.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use super::gate::GateResult;
use crate::plan::Plan;

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
    pub(super) fn new(plan: &Plan) -> Report {
        let mut stages = Vec::new();
        let mut services = Vec::new();
        for st in &plan.stages {
            stages.push(StageReport {
                name: st.name.clone(),
                status: StageStatus::Pending,
                started_at_s: 0.0,
                elapsed_s: 0.0,
                blocked_by: None,
            });
            for svc in &st.services {
                services.push(ServiceReport {
                    name: svc.clone(),
                    stage: st.name.clone(),
                    unit: super::unit_of(plan, svc).map(str::to_string),
                    status: ServiceStatus::Pending,
                    job_result: None,
                    active_state: None,
                    start_error: None,
                    time_to_healthy_s: None,
                    failing: Vec::new(),
                    diagnoses: Vec::new(),
                    skipped: None,
                });
            }
        }
        Report {
            outcome: Outcome::AllHealthy,
            exit_code: 0,
            total_s: 0.0,
            stages,
            services,
            critical_path: Vec::new(),
        }
    }

    fn service_mut(&mut self, name: &str) -> Option<&mut ServiceReport> {
        self.services.iter_mut().find(|s| s.name == name)
    }

    pub(super) fn set_unit(
        &mut self,
        svc: &str,
        job: Option<String>,
        active: Option<String>,
        err: Option<String>,
    ) {
        if let Some(s) = self.service_mut(svc) {
            s.job_result = job;
            s.active_state = active;
            s.start_error = err;
        }
    }

    /// Services of `stage` that did not become healthy and have a unit, with
    /// their start error (text for the diagnosis).
    pub(super) fn unhealthy_units(&self, stage: &str) -> Vec<(String, String, String)> {
        self.services
            .iter()
            .filter(|s| s.stage == stage && s.status == ServiceStatus::Unhealthy)
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

    pub(super) fn set_diagnoses(&mut self, svc: &str, d: Vec<crate::diagnose::Diagnosis>) {
        if let Some(s) = self.service_mut(svc) {
            s.diagnoses = d;
        }
    }

    pub(super) fn mark_skipped(&mut self, svc: &str, why: &str) {
        if let Some(s) = self.service_mut(svc) {
            s.status = ServiceStatus::Skipped;
            s.skipped = Some(why.to_string());
        }
    }

    pub(super) fn mark_blocked(&mut self, stage: &str, blocker: &str) {
        if let Some(st) = self.stages.iter_mut().find(|s| s.name == stage) {
            st.status = StageStatus::Blocked;
            st.blocked_by = Some(blocker.to_string());
        }
        for s in self.services.iter_mut().filter(|s| s.stage == stage) {
            s.status = ServiceStatus::Blocked;
        }
    }

    pub(super) fn record_stage(
        &mut self,
        stage: &str,
        status: StageStatus,
        (started_at, gate_offset, elapsed): (Duration, Duration, Duration),
        result: &GateResult,
    ) {
        // Gate times count from the end of the start jobs; report from stage start.
        let since_stage = |d: &Option<Duration>| d.map(|d| gate_offset + d);
        if let Some(st) = self.stages.iter_mut().find(|s| s.name == stage) {
            st.status = status;
            st.started_at_s = started_at.as_secs_f64();
            st.elapsed_s = elapsed.as_secs_f64();
        }
        let reasons = result.failing_reasons();
        for (svc, after) in &result.healthy_after {
            if let Some(s) = self.service_mut(svc) {
                s.time_to_healthy_s = since_stage(after).map(|d| d.as_secs_f64());
                s.status = if after.is_some() {
                    ServiceStatus::Healthy
                } else {
                    ServiceStatus::Unhealthy
                };
                let prefix = format!("{svc}/");
                s.failing = reasons
                    .iter()
                    .filter(|r| r.starts_with(&prefix))
                    .cloned()
                    .collect();
            }
        }
        if status == StageStatus::Healthy {
            let slowest = result
                .healthy_after
                .iter()
                .filter_map(|(n, d)| since_stage(d).map(|d| (n, d)))
                .max_by_key(|(_, d)| *d);
            if let Some((svc, d)) = slowest {
                self.critical_path.push(CriticalStep {
                    stage: stage.to_string(),
                    service: svc.clone(),
                    time_to_healthy_s: d.as_secs_f64(),
                });
            }
        }
    }

    pub(super) fn finish(&mut self, total: Duration) {
        self.total_s = total.as_secs_f64();
        self.outcome = if self.stages.iter().any(|s| s.status == StageStatus::Blocked) {
            Outcome::Blocked
        } else if self.stages.iter().any(|s| s.status == StageStatus::Failed) {
            Outcome::SomeFailed
        } else {
            Outcome::AllHealthy
        };
        self.exit_code = self.outcome.exit_code();
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
                };
                let _ = writeln!(out, "    {:<16} {:<10} {:>8}", s.name, state, t);
                if let Some(why) = &s.skipped {
                    let _ = writeln!(out, "      not started: {why}");
                }
                if let Some(e) = &s.start_error {
                    let _ = writeln!(out, "      start: {e}");
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
        let verdict = match self.outcome {
            Outcome::AllHealthy => "all services healthy",
            Outcome::SomeFailed => "some services failed (exit 1)",
            Outcome::Blocked => "recovery blocked (exit 3)",
        };
        let _ = writeln!(out, "  result: {verdict}");
        out
    }
}
