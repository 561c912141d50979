//! `recover`: install, then start the platform stage by stage, health-gated.

use mcrecover::config::Config;
use mcrecover::plan;
use mcrecover::recover::{self, Progress};

use super::common::{connect, runtime, sys, Exit, EXIT_CONFIG};
use super::install::install;
use super::SystemArgs;

/// `recover [--json] [--no-install] [--quiet]`: exits with the report's code.
pub(super) fn run(
    cfg: &Config,
    s: &SystemArgs,
    json: bool,
    no_install: bool,
    quiet: bool,
) -> Result<u8, Exit> {
    runtime()?.block_on(async {
        if !no_install {
            install(cfg, s, false).await?;
        }
        let plan = plan::build(cfg).map_err(|e| Exit(EXIT_CONFIG, e.into()))?;
        let sd = connect(cfg, s).await?;
        let mut progress = Progress::new(quiet || json);
        let report = recover::recover(cfg, &plan, &sd, |ev| progress.event(ev)).await;
        if json {
            println!("{}", serde_json::to_string_pretty(&report).map_err(sys)?);
        } else {
            eprint!("{}", report.to_text());
        }
        Ok(report.exit_code)
    })
}
