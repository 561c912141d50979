//! `doctor`: can this machine run the platform.

use mcrecover::config::Config;
use mcrecover::doctor;

use super::common::{runtime, sys, Exit};

/// `doctor [--json]`: exits with the report's code (1 on any failure).
pub(super) fn run(cfg: &Config, json: bool) -> Result<u8, Exit> {
    runtime()?.block_on(async {
        let report = doctor::run(cfg, &doctor::DoctorOptions::default()).await;
        if json {
            println!("{}", serde_json::to_string_pretty(&report).map_err(sys)?);
        } else {
            print!("{}", report.to_text());
        }
        Ok(report.exit_code())
    })
}
