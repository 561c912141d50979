//! `status`, `ack`, `adopt`, `restart`, `reload`: the daemon's API clients. They
//! need no configuration when the daemon answers (it has its own) and use
//! it when present (service names, status without a daemon).

use std::path::Path;

use mcrecover::config;
use mcrecover::plan;
use mcrecover::watch::api::{self, ApiError};
use mcrecover::watch::{status as wstatus, ApiCommand};

use super::common::{connect, load, runtime, sys, Exit, EXIT_CONFIG, EXIT_SYSTEM};
use super::{ApiArgs, SystemArgs};

/// `status [--json]`: 0 all healthy, 1 otherwise, 4 when computed directly
/// without unit states.
pub(super) fn status(config: &Path, api: &ApiArgs, s: &SystemArgs, json: bool) -> Result<u8, Exit> {
    runtime()?.block_on(status_async(config, api, s, json))
}

/// The daemon's snapshot, or the directly computed one (which needs the
/// configuration).
async fn status_async(
    config: &Path,
    api: &ApiArgs,
    s: &SystemArgs,
    json: bool,
) -> Result<u8, Exit> {
    let snap = match api::fetch_status(&api.bus()).await {
        Ok(snap) => snap,
        Err(err) => {
            if matches!(err, ApiError::NotRunning) {
                eprintln!("mcrecover: the daemon is not running; computing the status directly");
            } else {
                eprintln!(
                    "mcrecover: warning: daemon unreachable: {err}; computing the status directly"
                );
            }
            let cfg = &load(config)?;
            let plan = plan::build(cfg).map_err(|e| Exit(EXIT_CONFIG, e.into()))?;
            let sd = match connect(cfg, s).await {
                Ok(sd) => Some(sd),
                Err(Exit(_, e)) => {
                    eprintln!("mcrecover: warning: unit states unknown: {e:#}");
                    None
                }
            };
            let snap = wstatus::direct(cfg, &plan, sd.as_ref()).await;
            if sd.is_none() && !json {
                print!("{}", wstatus::to_text(&snap));
                return Ok(EXIT_SYSTEM);
            }
            snap
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&snap).map_err(sys)?);
    } else {
        print!("{}", wstatus::to_text(&snap));
    }
    Ok(u8::from(!wstatus::all_healthy(&snap)))
}

/// `ack`, `adopt`, `restart`, `reload`: one call to the daemon. Service names are
/// checked against the configuration when it can be read (the daemon
/// checks them anyway).
pub(super) fn control(config: &Path, api: &ApiArgs, cmd: &ApiCommand) -> Result<u8, Exit> {
    let cfg = config::load(config).ok();
    if let (
        ApiCommand::Ack(name) | ApiCommand::Adopt(name) | ApiCommand::Restart(name),
        Some(cfg),
    ) = (cmd, &cfg)
    {
        if !cfg.services.contains_key(name) {
            let names: Vec<&str> = cfg.services.keys().map(String::as_str).collect();
            return Err(Exit(
                EXIT_CONFIG,
                anyhow::anyhow!("no service `{name}` (services: {})", names.join(", ")),
            ));
        }
    }
    runtime()?.block_on(async {
        match api::call(&api.bus(), cmd).await {
            Ok(msg) => {
                println!("{msg}");
                Ok(0)
            }
            Err(ApiError::Refused(msg)) => Err(Exit(1, anyhow::anyhow!("{msg}"))),
            Err(e @ ApiError::AccessDenied(_)) => Err(Exit(
                EXIT_SYSTEM,
                anyhow::Error::new(e)
                    .context("only root and the platform user's group may change the daemon"),
            )),
            Err(e) => Err(sys(e)),
        }
    })
}
