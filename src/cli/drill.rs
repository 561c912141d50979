//! `drill`: a recovery drill on the running platform, carried out by the
//! daemon (its engine stops the scope's units and recovers them by its
//! ordinary rules; docs/daemon.md#recovery-drills). This client starts it,
//! shows its progress from the daemon's status and prints the result; with
//! `--dry-run` it prints, from the configuration alone, what would be
//! stopped and in which order.
//!
//! Exit codes: 0 passed (every service back within its `rto`), 1 a target
//! exceeded, not back in time, or aborted, 2 configuration or usage error,
//! 3 refused (something in scope is not healthy, another drill runs), 4 the
//! daemon could not be reached.

use std::path::Path;
use std::time::Duration;

use anyhow::anyhow;
use mcrecover::config::Config;
use mcrecover::engine::{DrillOutcome, DrillResult};
use mcrecover::plan;
use mcrecover::watch::api::{self, ApiError};
use mcrecover::watch::ApiCommand;

use super::common::{load, runtime, sys, Exit, EXIT_CONFIG, EXIT_SYSTEM};
use super::ApiArgs;

/// Exit code of a refused drill.
const EXIT_REFUSED: u8 = 3;
/// How often the progress is read from the daemon.
const POLL: Duration = Duration::from_millis(250);

/// What a drill covers, as given on the command line.
pub(super) enum Scope {
    /// `--stage NAME`.
    Stage(String),
    /// `--service NAME`.
    Service(String),
}

impl Scope {
    fn kind(&self) -> &'static str {
        match self {
            Scope::Stage(_) => "stage",
            Scope::Service(_) => "service",
        }
    }

    fn name(&self) -> &str {
        match self {
            Scope::Stage(n) | Scope::Service(n) => n,
        }
    }
}

/// `drill --abort`.
pub(super) fn abort(api: &ApiArgs) -> Result<u8, Exit> {
    runtime()?.block_on(async {
        match api::call(&api.bus(), &ApiCommand::AbortDrill).await {
            Ok(msg) => {
                println!("{msg}");
                Ok(0)
            }
            Err(ApiError::Refused(msg)) => Err(Exit(1, anyhow!("{msg}"))),
            Err(e) => Err(sys(e)),
        }
    })
}

/// `drill --stage NAME | --service NAME [--dry-run] [--json]`.
pub(super) fn run(
    config: &Path,
    api: &ApiArgs,
    scope: &Scope,
    dry_run: bool,
    json: bool,
) -> Result<u8, Exit> {
    if dry_run {
        let cfg = load(config)?;
        return dry(&cfg, scope, json);
    }
    runtime()?.block_on(drill(api, scope, json))
}

/// The services a drill of `scope` stops (plan order), and its stage.
fn scope_services(cfg: &Config, scope: &Scope) -> Result<(Vec<String>, String), Exit> {
    let plan = plan::build(cfg).map_err(|e| Exit(EXIT_CONFIG, e.into()))?;
    let has_unit = |name: &String| plan.services.get(name).is_some_and(|p| p.unit.is_some());
    match scope {
        Scope::Stage(name) => {
            let Some(st) = plan.stages.iter().find(|s| &s.name == name) else {
                let names: Vec<&str> = plan.stages.iter().map(|s| s.name.as_str()).collect();
                return Err(Exit(
                    EXIT_CONFIG,
                    anyhow!("no stage `{name}` (stages: {})", names.join(", ")),
                ));
            };
            let members: Vec<String> = plan
                .order
                .iter()
                .filter(|s| st.services.contains(s) && has_unit(s))
                .cloned()
                .collect();
            Ok((members, name.clone()))
        }
        Scope::Service(name) => {
            if !cfg.services.contains_key(name) {
                let names: Vec<&str> = cfg.services.keys().map(String::as_str).collect();
                return Err(Exit(
                    EXIT_CONFIG,
                    anyhow!("no service `{name}` (services: {})", names.join(", ")),
                ));
            }
            if !has_unit(name) {
                return Err(Exit(
                    EXIT_CONFIG,
                    anyhow!("`{name}` is external: it has no unit to stop (drill its own node)"),
                ));
            }
            let stage = plan
                .services
                .get(name)
                .and_then(|p| p.stage)
                .and_then(|i| plan.stages.get(i))
                .map(|s| s.name.clone())
                .unwrap_or_default();
            Ok((vec![name.clone()], stage))
        }
    }
}

/// `--dry-run`: what would be stopped, in which order, and how it comes back.
fn dry(cfg: &Config, scope: &Scope, json: bool) -> Result<u8, Exit> {
    let (services, stage) = scope_services(cfg, scope)?;
    let mut stop = services.clone();
    stop.reverse();
    let targets: Vec<(String, Option<f64>)> = services
        .iter()
        .map(|s| {
            (
                s.clone(),
                cfg.services
                    .get(s)
                    .and_then(|c| c.rto)
                    .map(|d| d.as_secs_f64()),
            )
        })
        .collect();
    let stage_rto = match scope {
        Scope::Stage(n) => cfg
            .stages
            .iter()
            .find(|s| &s.name == n)
            .and_then(|s| s.rto)
            .map(|d| d.as_secs_f64()),
        Scope::Service(_) => None,
    };
    if json {
        let v = serde_json::json!({
            "scope_kind": scope.kind(),
            "scope": scope.name(),
            "stop_order": stop,
            "recovery": if matches!(scope, Scope::Stage(_)) {
                format!("stage {stage} is ramped again: preflight, start in plan order, gate")
            } else {
                format!("{} is started again", scope.name())
            },
            "rto_s": stage_rto,
            "services": targets.iter().map(|(n, t)| serde_json::json!({"name": n, "rto_s": t})).collect::<Vec<_>>(),
        });
        println!("{v:#}");
        return Ok(0);
    }
    println!(
        "A drill of {} {} would (nothing is stopped now):",
        scope.kind(),
        scope.name()
    );
    println!("  1. check that the platform and everything in scope is healthy (else refuse)");
    println!("  2. stop, dependents first, containers only (volumes and /srv are never touched):");
    for (i, s) in stop.iter().enumerate() {
        println!("       {}. {s}", i + 1);
    }
    match scope {
        Scope::Stage(_) => println!(
            "  3. recover stage {stage} the way a boot does: preflight, start in plan order ({}), gate",
            services.join(", ")
        ),
        Scope::Service(n) => println!("  3. start {n} again"),
    }
    println!("  4. measure each service's time from stopped to healthy against its rto:");
    for (n, t) in &targets {
        match t {
            Some(t) => println!("       {n}: target {t}s"),
            None => println!("       {n}: no target (measured only)"),
        }
    }
    if let Some(t) = stage_rto {
        println!("     and the stage's: target {t}s");
    }
    Ok(0)
}

/// Start the drill in the daemon, follow it, print its result.
async fn drill(api: &ApiArgs, scope: &Scope, json: bool) -> Result<u8, Exit> {
    let bus = api.bus();
    let cmd = ApiCommand::Drill {
        kind: scope.kind().to_owned(),
        name: scope.name().to_owned(),
    };
    let msg = match api::call(&bus, &cmd).await {
        Ok(msg) => msg,
        Err(ApiError::Refused(msg)) => return Err(Exit(EXIT_REFUSED, anyhow!("{msg}"))),
        Err(e @ ApiError::AccessDenied(_)) => {
            return Err(Exit(
                EXIT_SYSTEM,
                anyhow::Error::new(e)
                    .context("only root and the platform user's group may start a drill"),
            ))
        }
        Err(e) => return Err(sys(e)),
    };
    eprintln!("{msg}");
    let id = msg
        .split_whitespace()
        .nth(1)
        .map(str::to_owned)
        .unwrap_or_default();
    let mut last = String::new();
    let result = loop {
        tokio::time::sleep(POLL).await;
        let snap = api::fetch_status(&bus).await.map_err(sys)?;
        if let Some(d) = &snap.drill {
            let line = format!(
                "{}: {}/{} healthy again",
                d.phase,
                d.healthy.len(),
                d.services.len()
            );
            if line != last {
                eprintln!("  {:>6.1}s {line}", d.elapsed_s);
                last = line;
            }
            continue;
        }
        match snap.last_drill {
            Some(r) if r.id == id => break r,
            _ => {
                return Err(Exit(
                    EXIT_SYSTEM,
                    anyhow!("the daemon no longer reports drill {id} (restarted?)"),
                ))
            }
        }
    };
    print_result(&result, json);
    Ok(u8::from(result.outcome != DrillOutcome::Passed))
}

fn print_result(r: &DrillResult, json: bool) {
    if json {
        if let Ok(text) = serde_json::to_string_pretty(r) {
            println!("{text}");
        }
        return;
    }
    let ms = |v: Option<u64>| v.map_or("-".to_owned(), |v| format!("{:.3}s", v as f64 / 1000.0));
    println!(
        "drill {} of {} {}: {}",
        r.id,
        r.scope_kind,
        r.scope,
        r.outcome.as_str()
    );
    println!("  stopped in {}", ms(r.stop_ms));
    println!("  {:<20} {:>10} {:>10}", "service", "RTO", "target");
    for s in &r.services {
        let flag = if s.exceeded { "  EXCEEDED" } else { "" };
        println!(
            "  {:<20} {:>10} {:>10}{flag}",
            s.name,
            ms(s.rto_ms),
            ms(s.target_ms)
        );
    }
    println!(
        "  {:<20} {:>10} {:>10}",
        format!("{} {}", r.scope_kind, r.scope),
        ms(r.rto_ms),
        ms(r.target_ms)
    );
}
