//! The escalation action that always runs: a `crit` (priority 2) journal
//! entry with a stable `MESSAGE_ID` and structured fields, sent over the
//! journald native protocol (`libsystemd`). Also the `notice` entry the engine
//! writes whenever it issues a restart. Without journald (no socket) both fall
//! back to a tracing line; neither ever fails the caller.

use std::path::Path;
use std::time::Duration;

use libsystemd::logging::{journal_send, Priority};

use super::{Action, ActionResult, Event};

/// `MESSAGE_ID` of the escalation entry (priority `crit`).
pub const ESCALATED_MESSAGE_ID: &str = "9d2f1c4e7b3a4f0e8c6d5b2a1f0e9c87";
/// `MESSAGE_ID` of the entry of a blocking episode (priority `crit`): a
/// `block` stage failed and later stages wait for it.
pub const BLOCKED_MESSAGE_ID: &str = "3b7e2c9a4d1f4b8e9a0c6d2e5f1a7b30";
/// `MESSAGE_ID` of the entry of a service that waits for an operator
/// (priority `notice`; the reminder `warning`).
pub const WAITING_MESSAGE_ID: &str = "c41d7a2e9f0b4e3a8d6c1b5f2e7a9d04";
/// `MESSAGE_ID` of the restart-issued entry (priority `notice`).
pub const RESTART_MESSAGE_ID: &str = "5e8a0b3c2d1f4e6a9b7c8d0e1f2a3b4c";
/// `SYSLOG_IDENTIFIER` of both entries.
pub const SYSLOG_IDENTIFIER: &str = "mcrecover";
/// Where journald listens for native-protocol datagrams.
const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// Whether journald's native socket exists on this machine.
pub fn journald_present() -> bool {
    Path::new(JOURNAL_SOCKET).exists()
}

/// The structured fields of the escalation entry for `ev` (without
/// `PRIORITY`/`MESSAGE`).
pub fn escalated_fields(ev: &Event) -> Vec<(&'static str, String)> {
    let id = match ev.kind {
        super::EventKind::Escalated => ESCALATED_MESSAGE_ID,
        super::EventKind::Blocked => BLOCKED_MESSAGE_ID,
        super::EventKind::OperatorWait | super::EventKind::WaitReminder => WAITING_MESSAGE_ID,
    };
    let mut fields = vec![
        ("EVENT", ev.kind.as_str().to_owned()),
        ("MESSAGE_ID", id.to_owned()),
        ("SYSLOG_IDENTIFIER", SYSLOG_IDENTIFIER.to_owned()),
        ("SERVICE", ev.service.clone()),
        ("UNIT", ev.unit.clone()),
        ("STAGE", ev.stage.clone().unwrap_or_default()),
        ("RESTARTS", ev.restarts.to_string()),
        ("WINDOW_S", ev.window.as_secs().to_string()),
        ("REASON", ev.reason.clone()),
        ("DIAGNOSIS", super::diagnosis_ids(&ev.diagnoses)),
        ("EVENT_ID", ev.id.clone()),
        ("PLATFORM", ev.platform.clone()),
    ];
    if !ev.remedy.is_empty() {
        fields.push(("REMEDY", ev.remedy.clone()));
    }
    fields
}

/// The human message of the escalation entry.
fn escalated_message(ev: &Event) -> String {
    match ev.kind {
        super::EventKind::OperatorWait => {
            return format!(
                "{} waits for an operator (not restarted): {}; to do: {}",
                ev.service, ev.reason, ev.remedy
            )
        }
        super::EventKind::WaitReminder => {
            return format!(
                "{} still waits for an operator after {}s (not restarted): {}; to do: {}",
                ev.service,
                ev.window.as_secs(),
                ev.reason,
                ev.remedy
            )
        }
        _ => {}
    }
    if ev.kind == super::EventKind::Blocked {
        return format!(
            "stage {} failed and blocks the stages after it (retried; they start once it is healthy): {}",
            ev.stage.as_deref().unwrap_or("?"),
            ev.reason
        );
    }
    let diag = super::diagnosis_ids(&ev.diagnoses);
    let diag = if diag.is_empty() {
        "no known failure signature".to_owned()
    } else {
        format!("diagnosis: {diag}")
    };
    format!(
        "{} ({}) escalated after {} restarts within {}s: {}; {diag}",
        ev.service,
        ev.unit,
        ev.restarts,
        ev.window.as_secs(),
        ev.reason
    )
}

/// Writes the `crit` escalation entry for `ev`. Never fails: without
/// journald, or when sending fails, the entry becomes a tracing `error!` line
/// and the result says so.
pub fn escalated(ev: &Event) -> ActionResult {
    let message = escalated_message(ev);
    let fields = escalated_fields(ev);
    let (priority, name) = match ev.kind {
        super::EventKind::OperatorWait => (Priority::Notice, "notice"),
        super::EventKind::WaitReminder => (Priority::Warning, "warning"),
        _ => (Priority::Critical, "crit"),
    };
    let detail = match send(priority, &message, &fields) {
        Ok(()) => {
            let id = fields.get(1).map_or("", |(_, v)| v.as_str());
            return ActionResult {
                action: Action::Journal,
                ok: true,
                detail: format!("{name} journal entry MESSAGE_ID={id}"),
            };
        }
        Err(why) => why,
    };
    tracing::error!(
        service = %ev.service,
        unit = %ev.unit,
        stage = ev.stage.as_deref().unwrap_or(""),
        restarts = ev.restarts,
        event_id = %ev.id,
        message_id = ESCALATED_MESSAGE_ID,
        "{message}"
    );
    ActionResult {
        action: Action::Journal,
        ok: false,
        detail: format!("{detail}; logged as an error line instead"),
    }
}

/// Writes the `notice` entry "restart issued" (MESSAGE_ID
/// [`RESTART_MESSAGE_ID`]) with `SERVICE`, `UNIT`, `STAGE`, `REASON`,
/// `REACTION_MS` (time from detecting the failure to issuing the restart, when
/// known) and `DELAY_S` (the backoff delay waited). Falls back to a tracing
/// `info!` line without journald; never fails.
pub fn restart_issued(
    service: &str,
    unit: &str,
    stage: Option<&str>,
    reason: &str,
    reaction_ms: Option<u64>,
    delay: Duration,
) {
    let reaction = reaction_ms.map(|ms| ms.to_string()).unwrap_or_default();
    let delay_s = format!("{:.3}", delay.as_secs_f64());
    let message = match reaction_ms {
        Some(ms) => format!(
            "restart of {service} ({unit}) issued {ms} ms after the failure (backoff {delay_s}s): {reason}"
        ),
        None => format!("restart of {service} ({unit}) issued (backoff {delay_s}s): {reason}"),
    };
    let fields = vec![
        ("MESSAGE_ID", RESTART_MESSAGE_ID.to_owned()),
        ("SYSLOG_IDENTIFIER", SYSLOG_IDENTIFIER.to_owned()),
        ("SERVICE", service.to_owned()),
        ("UNIT", unit.to_owned()),
        ("STAGE", stage.unwrap_or_default().to_owned()),
        ("REASON", reason.to_owned()),
        ("REACTION_MS", reaction),
        ("DELAY_S", delay_s),
    ];
    if let Err(why) = send(Priority::Notice, &message, &fields) {
        tracing::info!(
            service,
            unit,
            stage = stage.unwrap_or(""),
            reaction_ms,
            message_id = RESTART_MESSAGE_ID,
            journal = %why,
            "{message}"
        );
    }
}

/// `MESSAGE_ID` of the entry written when a recovery drill ends (priority
/// `notice` when it passed, `warning` otherwise).
pub const DRILL_MESSAGE_ID: &str = "6f0e3d1c8b2a4c5d9e7f1a2b3c4d5e6f";

/// Writes the entry of a finished drill: `DRILL_ID`, `SCOPE` (`stage core`),
/// `OUTCOME`, `RTO_MS`, `TARGET_MS`, `STOP_MS` and `SERVICES`
/// (`name=rto_ms/target_ms` per service). Falls back to a tracing line
/// without journald; never fails.
pub fn drill_done(r: &crate::engine::DrillResult) {
    use crate::engine::DrillOutcome;
    let opt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
    let services = r
        .services
        .iter()
        .map(|s| format!("{}={}/{}", s.name, opt(s.rto_ms), opt(s.target_ms)))
        .collect::<Vec<_>>()
        .join(" ");
    let rto = r
        .rto_ms
        .map_or("not recovered".to_owned(), |ms| format!("{ms} ms"));
    let message = format!(
        "drill of {} {}: {} (RTO {rto}{})",
        r.scope_kind,
        r.scope,
        r.outcome.as_str(),
        r.target_ms
            .map(|t| format!(", target {t} ms"))
            .unwrap_or_default()
    );
    let fields = vec![
        ("MESSAGE_ID", DRILL_MESSAGE_ID.to_owned()),
        ("SYSLOG_IDENTIFIER", SYSLOG_IDENTIFIER.to_owned()),
        ("DRILL_ID", r.id.clone()),
        ("SCOPE", format!("{} {}", r.scope_kind, r.scope)),
        ("OUTCOME", r.outcome.as_str().to_owned()),
        ("RTO_MS", opt(r.rto_ms)),
        ("TARGET_MS", opt(r.target_ms)),
        ("STOP_MS", opt(r.stop_ms)),
        ("SERVICES", services),
    ];
    let priority = if r.outcome == DrillOutcome::Passed {
        Priority::Notice
    } else {
        Priority::Warning
    };
    if let Err(why) = send(priority, &message, &fields) {
        tracing::warn!(drill_id = %r.id, outcome = r.outcome.as_str(), message_id = DRILL_MESSAGE_ID,
            journal = %why, "{message}");
    }
}

/// One native-protocol datagram; `Err` says why it was not sent.
fn send(
    priority: Priority,
    message: &str,
    fields: &[(&'static str, String)],
) -> Result<(), String> {
    if !journald_present() {
        return Err(format!("journald is not running (no {JOURNAL_SOCKET})"));
    }
    journal_send(
        priority,
        message,
        fields.iter().map(|(k, v)| (*k, v.as_str())),
    )
    .map_err(|e| format!("cannot write to the journal: {e}"))
}
