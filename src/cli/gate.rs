//! `gate --stage NAME`: what the generated gate units run.

use mcrecover::config::Config;
use mcrecover::{plan, recover};

use super::common::{exec_via, runtime, Exit, EXIT_CONFIG};

/// Wait until the stage's checks pass: 0 healthy, 1 not within its timeout.
pub(super) fn run(cfg: &Config, stage: &str) -> Result<u8, Exit> {
    runtime()?.block_on(async {
        let plan = plan::build(cfg).map_err(|e| Exit(EXIT_CONFIG, e.into()))?;
        let Some(index) = plan.stages.iter().position(|s| s.name == stage) else {
            let names: Vec<&str> = cfg.stages.iter().map(|s| s.name.as_str()).collect();
            return Err(Exit(
                EXIT_CONFIG,
                anyhow::anyhow!("no stage `{stage}` (stages: {})", names.join(", ")),
            ));
        };
        let timeout = cfg.stages.get(index).map_or(0, |s| s.timeout.as_secs());
        let members = plan.stages.get(index).map_or(0, |s| s.services.len());
        if let Some(age) = mcrecover::runner::verdict::take(cfg, stage) {
            eprintln!(
                "stage {stage}: all {members} services healthy (seen by mcrecover {} ms ago; not probed again)",
                age.as_millis()
            );
            return Ok(0);
        }
        let result = recover::gate(cfg, &plan, index, exec_via(cfg).await).await;
        if result.healthy {
            eprintln!("stage {stage}: all {members} services healthy");
            Ok(0)
        } else {
            eprintln!("stage {stage}: not healthy after {timeout}s:");
            for r in result.failing {
                eprintln!("  {r}");
            }
            Ok(1)
        }
    })
}
