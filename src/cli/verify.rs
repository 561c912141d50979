//! `verify`: every check once, the runbook's verification checklist.

use mcrecover::check;
use mcrecover::config::Config;

use super::common::{exec_via, runtime, sys, Exit};

/// `verify [--json]`: 0 when every check passed, 1 otherwise.
pub(super) fn run(cfg: &Config, json: bool) -> Result<u8, Exit> {
    runtime()?.block_on(verify(cfg, json))
}

async fn verify(cfg: &Config, json: bool) -> Result<u8, Exit> {
    let mut all = Vec::new();
    for svc in cfg.services.values() {
        for c in &svc.checks {
            all.push((svc.name.clone(), c.clone()));
        }
    }
    // Exec checks as the daemon runs them (a transient unit of the
    // platform's manager, as the platform user by default), so that verify
    // and the daemon agree.
    let via = exec_via(cfg).await;
    let outcomes =
        futures_util::future::join_all(all.iter().map(|(_, c)| check::probe_with(c, &via))).await;
    let failed = outcomes.iter().filter(|o| !o.ok).count();
    if json {
        let rows: Vec<serde_json::Value> = all
            .iter()
            .zip(&outcomes)
            .map(|((svc, c), o)| {
                serde_json::json!({
                    "service": svc, "check": c.name, "kind": c.kind.kind_name(),
                    "ok": o.ok, "detail": o.detail, "elapsed_s": o.elapsed.as_secs_f64(),
                })
            })
            .collect();
        let doc = serde_json::json!({ "ok": failed == 0, "failed": failed, "checks": rows });
        println!("{}", serde_json::to_string_pretty(&doc).map_err(sys)?);
    } else {
        println!(
            "{:<16} {:<14} {:<6} {:>8}  DETAIL",
            "SERVICE", "CHECK", "RESULT", "TIME"
        );
        for ((svc, c), o) in all.iter().zip(&outcomes) {
            let res = if o.ok { "ok" } else { "FAIL" };
            println!(
                "{svc:<16} {:<14} {res:<6} {:>7.0}ms  {}",
                c.name,
                o.elapsed.as_secs_f64() * 1000.0,
                o.detail
            );
        }
        println!("{} of {} checks passed", all.len() - failed, all.len());
    }
    Ok(u8::from(failed > 0))
}
