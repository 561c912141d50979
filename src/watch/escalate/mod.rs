//! Escalation: what the daemon does once a service has been restarted too
//! often. Every action is one file and one [`Action`] variant: the `crit`
//! journal entry (`journal`), the exec hook (`hook`), the HTTPS webhook
//! (`webhook`); the optional remedy (`quarantine`) moves files aside, never
//! deletes them.

pub mod hook;
pub mod journal;
pub mod quarantine;
pub mod webhook;

use crate::check::ExecVia;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::config::{Remedy, Service, WatchPolicy};
use crate::diagnose::Diagnosis;

/// What an [`Event`] is about.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// A service was restarted too often.
    #[default]
    Escalated,
    /// A `block` stage failed: later stages wait for it (once per blocking
    /// episode; the stage is retried and the ramp resumes by itself).
    Blocked,
    /// A service waits for an operator (e.g. a sealed vault): never
    /// restarted for it; once per waiting episode.
    #[serde(rename = "operator-wait")]
    OperatorWait,
    /// The same episode still goes on after `[watch] wait_reminder`.
    #[serde(rename = "operator-wait-reminder")]
    WaitReminder,
}

impl EventKind {
    /// The name used in `MCRECOVER_EVENT` and the JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Escalated => "escalated",
            EventKind::Blocked => "blocked",
            EventKind::OperatorWait => "operator-wait",
            EventKind::WaitReminder => "operator-wait-reminder",
        }
    }
}

/// One escalation (or blocking episode), as the actions see it.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// What happened.
    pub kind: EventKind,
    /// Unique id of this escalation (`<service>-<unix ms>`); actions are not repeated for an id.
    pub id: String,
    /// Platform name.
    pub platform: String,
    /// Service name.
    pub service: String,
    /// Its unit.
    pub unit: String,
    /// Its stage.
    pub stage: Option<String>,
    /// Restarts within the window that led here.
    pub restarts: u32,
    /// The escalation window.
    #[serde(serialize_with = "secs")]
    pub window: Duration,
    /// The last failure reason (unit state or check detail).
    pub reason: String,
    /// Known failure signatures found in the unit's journal.
    pub diagnoses: Vec<Diagnosis>,
    /// What the operator must do (operator-wait events: the check's
    /// `remedy`; else empty).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub remedy: String,
    /// When it was escalated (JSON: `"2026-11-25T02:15:00Z"`).
    #[serde(serialize_with = "utc")]
    pub at: SystemTime,
}

fn utc<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&quarantine::rfc3339(*t))
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// The escalation actions, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// `crit` journal entry with the stable MESSAGE_ID.
    Journal,
    /// The configured exec hook.
    Hook,
    /// The configured webhook POST.
    Webhook,
}

/// What one action did.
#[derive(Debug, Clone, Serialize)]
pub struct ActionResult {
    /// Which action.
    pub action: Action,
    /// Whether it succeeded.
    pub ok: bool,
    /// What happened (exit status, HTTP status, error).
    pub detail: String,
}

/// Runs every configured action for `ev` (journal always; hook and webhook
/// when configured). Never fails: each action's failure is in its result.
/// The hook runs as `via` says ([`hook`]).
pub async fn escalate(ev: &Event, policy: &WatchPolicy, via: &ExecVia) -> Vec<ActionResult> {
    let mut results = vec![journal::escalated(ev)];
    if !policy.hook.is_empty() {
        results.push(hook::run(&policy.hook, policy.hook_timeout, ev, via).await);
    }
    if let Some(url) = &policy.webhook {
        results.push(
            webhook::post(
                url,
                policy.webhook_ca_file.as_deref(),
                policy.webhook_timeout,
                ev,
            )
            .await,
        );
    }
    results
}

/// The diagnosis ids of `diagnoses`, comma-separated (journal `DIAGNOSIS=`,
/// hook `MCRECOVER_DIAGNOSIS`).
pub fn diagnosis_ids(diagnoses: &[Diagnosis]) -> String {
    diagnoses.iter().map(|d| d.id).collect::<Vec<_>>().join(",")
}

/// Whether `remedy` applies to these diagnoses (its `on` list empty, or one matched).
pub fn remedy_applies(remedy: &Remedy, diagnoses: &[Diagnosis]) -> bool {
    remedy.on.is_empty()
        || diagnoses
            .iter()
            .any(|d| remedy.on.iter().any(|id| id == d.id))
}

/// What a quarantine did.
#[derive(Debug, Clone, Serialize)]
pub struct QuarantineReport {
    /// `(from, to)` for every file moved.
    pub moved: Vec<(PathBuf, PathBuf)>,
    /// Listed paths that did not exist.
    pub missing: Vec<PathBuf>,
}

/// A quarantine that could not be done (nothing is deleted either way).
#[derive(Debug, thiserror::Error)]
#[error("quarantine of {path}: {reason}")]
pub struct QuarantineError {
    /// The path concerned.
    pub path: PathBuf,
    /// What went wrong.
    pub reason: String,
}

/// Moves the remedy's files into `<volume>/quarantine/<timestamp>/` of the
/// service volume that contains each. Never deletes.
pub fn quarantine(
    svc: &Service,
    remedy: &Remedy,
    at: SystemTime,
) -> Result<QuarantineReport, QuarantineError> {
    quarantine::quarantine(svc, remedy, at)
}
