//! `images save|status`: image archives for a cold start.

use mcrecover::config::Config;
use mcrecover::images;

use super::common::{runtime, sys, Exit};
use super::ImagesCmd;

/// `images save [DIR]`, `images status [--json]`: exit with the report's code.
pub(super) fn run(cfg: &Config, cmd: ImagesCmd) -> Result<u8, Exit> {
    runtime()?.block_on(async {
        match cmd {
            ImagesCmd::Save { dir } => {
                let dir = images::archive_dir(cfg, dir.as_deref()).map_err(sys)?;
                let report = images::save(cfg, &dir).await.map_err(sys)?;
                print!("{}", report.to_text());
                Ok(report.exit_code())
            }
            ImagesCmd::Status { json } => {
                let report = images::status(cfg).await.map_err(sys)?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&report).map_err(sys)?);
                } else {
                    print!("{}", report.to_text());
                }
                Ok(report.exit_code())
            }
        }
    })
}
