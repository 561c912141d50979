//! `mcrecover status`: the daemon's [`Snapshot`] as a table, and the status
//! computed directly (unit states over D-Bus plus one round of checks) when
//! no daemon answers.

use std::fmt::Write as _;

use crate::check;
use crate::config::Config;
use crate::drive::Systemd;
use crate::plan::Plan;

use super::types::{HealthStatus, ServiceState, ServiceStatus, Snapshot};

/// The snapshot as a human table (one line per service, then a summary).
pub fn to_text(s: &Snapshot) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}", s.status_line);
    let _ = writeln!(
        out,
        "{:<16} {:<12} {:<10} {:<18} {:>8}  HEALTH",
        "SERVICE", "STAGE", "STATE", "UNIT STATE", "RESTARTS"
    );
    for svc in &s.services {
        let health = match (svc.health.ok, svc.health.age_s) {
            (None, _) => "not checked yet".to_string(),
            (Some(ok), age) => {
                let word = if ok { "ok" } else { "FAIL" };
                let age = age.map_or(String::new(), |a| format!(" ({:.0}s ago)", a));
                if svc.health.reason.is_empty() {
                    format!("{word}{age}")
                } else {
                    format!("{word}{age}: {}", svc.health.reason)
                }
            }
        };
        let mut state = svc.state.as_str().to_string();
        if let Some(up) = &svc.held_by {
            state = format!("{state}({up})");
        }
        let _ = writeln!(
            out,
            "{:<16} {:<12} {:<10} {:<18} {:>8}  {health}",
            svc.name,
            svc.stage.as_deref().unwrap_or("-"),
            state,
            svc.unit_state,
            svc.restarts,
        );
        if let Some(why) = &svc.escalation {
            let _ = writeln!(out, "{:<16} escalated: {why}", "");
        }
        if let Some(owner) = &svc.owner {
            let _ = writeln!(
                out,
                "{:<16} run by another controller, left alone: {owner}; `mcrecover adopt {}` hands it back",
                "", svc.name
            );
        }
        if let Some(remedy) = svc.remedy.as_deref().filter(|r| !r.is_empty()) {
            let _ = writeln!(out, "{:<16} waits for an operator: {remedy}", "");
        }
        if let Some(t) = svc.next_restart_in_s {
            let _ = writeln!(out, "{:<16} next restart in {t:.1}s", "");
        }
    }
    if let Some(path) = &s.timeline {
        let _ = writeln!(out, "last boot recovery: {path}");
    }
    out
}

/// True when every service is `healthy`.
pub fn all_healthy(s: &Snapshot) -> bool {
    s.services.iter().all(|x| x.state == ServiceState::Healthy)
}

/// The status without a daemon: each unit's state read from systemd (when
/// `sd` is given) and every check probed once. Restart counts are unknown
/// (0); states are `healthy` or `unhealthy` only.
pub async fn direct(cfg: &Config, plan: &Plan, sd: Option<&Systemd>) -> Snapshot {
    let mut services = Vec::new();
    for name in &plan.order {
        let Some(svc) = cfg.services.get(name) else {
            continue;
        };
        let planned = plan.services.get(name);
        let unit = planned.and_then(|p| p.unit.clone());
        let stage = planned
            .and_then(|p| p.stage)
            .and_then(|i| plan.stages.get(i))
            .map(|s| s.name.clone());
        let (unit_state, unit_ok) = match (&unit, sd) {
            (Some(u), Some(sd)) => match sd.unit_state(u).await {
                Ok(st) => (
                    format!("{}/{}", st.active_state, st.sub_state),
                    st.is_active(),
                ),
                Err(e) => (format!("unknown ({e})"), false),
            },
            (Some(_), None) => ("unknown".to_string(), true),
            (None, _) => ("external".to_string(), true),
        };
        let outcomes = futures_util::future::join_all(svc.checks.iter().map(check::probe)).await;
        let failing = svc.checks.iter().zip(&outcomes).find(|(_, o)| !o.ok);
        let checks_ok = failing.is_none();
        let health = HealthStatus {
            ok: Some(checks_ok),
            reason: match failing {
                Some((_, o)) => o.detail.clone(),
                None => format!("{} checks passing", svc.checks.len()),
            },
            check: failing.map(|(c, _)| c.name.clone()),
            age_s: Some(0.0),
        };
        let waiting = svc
            .checks
            .iter()
            .zip(&outcomes)
            .find(|(_, o)| o.waiting)
            .and_then(|(c, _)| c.operator_wait.as_ref())
            .map(|w| w.remedy.clone());
        let state = if checks_ok && unit_ok {
            ServiceState::Healthy
        } else if waiting.is_some() && unit_ok {
            ServiceState::Waiting
        } else {
            ServiceState::Unhealthy
        };
        services.push(ServiceStatus {
            name: name.clone(),
            stage,
            unit,
            unit_state,
            health,
            restarts: 0,
            total_restarts: 0,
            state,
            held_by: None,
            next_restart_in_s: None,
            escalation: None,
            remedy: waiting,
            owner: None,
        });
    }
    let healthy = services
        .iter()
        .filter(|s| s.state == ServiceState::Healthy)
        .count();
    Snapshot {
        pid: 0,
        config: cfg.source.display().to_string(),
        phase: "no-daemon".to_string(),
        status_line: format!(
            "daemon not running; computed directly: {healthy}/{} services healthy",
            services.len()
        ),
        services,
        timeline: None,
        drill: None,
        last_drill: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str, state: ServiceState) -> ServiceStatus {
        ServiceStatus {
            name: name.into(),
            stage: Some("core".into()),
            unit: Some(format!("{name}.service")),
            unit_state: "inactive/dead".into(),
            health: HealthStatus::default(),
            restarts: 0,
            total_restarts: 0,
            state,
            held_by: None,
            next_restart_in_s: None,
            escalation: None,
            remedy: None,
            owner: None,
        }
    }

    #[test]
    fn external_and_waiting_services_say_who_and_what_to_do() {
        let mut mcq = svc("mcq", ServiceState::External);
        mcq.owner = Some("container 0123456789ab (image r/mcq:v2, running)".into());
        let mut vault = svc("metacrypt", ServiceState::Waiting);
        vault.remedy = Some("unseal it at https://metacrypt:18080".into());
        let text = to_text(&Snapshot {
            services: vec![mcq, vault],
            ..Snapshot::default()
        });
        assert!(
            text.contains("mcq              core         external"),
            "{text}"
        );
        assert!(
            text.contains("run by another controller, left alone: container 0123456789ab (image r/mcq:v2, running); `mcrecover adopt mcq` hands it back"),
            "{text}"
        );
        assert!(
            text.contains("waits for an operator: unseal it at https://metacrypt:18080"),
            "{text}"
        );
    }
}
