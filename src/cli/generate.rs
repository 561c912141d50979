//! `generate man|completions`, from the clap definitions in `cli/mod.rs`
//! (needs no configuration).

use anyhow::Context;
use clap::CommandFactory;

use super::common::{sys, Exit};
use super::{Cli, GenerateCmd};

/// Write the man pages, or the completion script of one shell.
pub(super) fn run(what: &GenerateCmd) -> Result<u8, Exit> {
    let cmd = Cli::command();
    match what {
        GenerateCmd::Man { out } => {
            std::fs::create_dir_all(out)
                .with_context(|| format!("creating {}", out.display()))
                .map_err(sys)?;
            clap_mangen::generate_to(cmd, out)
                .with_context(|| format!("writing man pages into {}", out.display()))
                .map_err(sys)?;
            eprintln!("man pages written to {}", out.display());
        }
        GenerateCmd::Completions { shell, out } => {
            let mut cmd = cmd;
            match out {
                Some(dir) => {
                    std::fs::create_dir_all(dir)
                        .with_context(|| format!("creating {}", dir.display()))
                        .map_err(sys)?;
                    let path = clap_complete::generate_to(*shell, &mut cmd, "mcrecover", dir)
                        .with_context(|| format!("writing completions into {}", dir.display()))
                        .map_err(sys)?;
                    eprintln!("{}", path.display());
                }
                None => {
                    clap_complete::generate(*shell, &mut cmd, "mcrecover", &mut std::io::stdout())
                }
            }
        }
    }
    Ok(0)
}
