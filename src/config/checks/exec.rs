//! `kind = "exec"`: a command run on the host.

use serde::Deserialize;

use super::{KindCtx, KindSpec};
use crate::config::error::ConfigError;
use crate::config::fields::{argv, is_name_part, text};
use crate::config::files::FileKind;
use crate::config::model::CheckKind;
use crate::config::model::ExecCheck;
use crate::config::raw::{OptList, OptStr};

/// `kind = "exec"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawExec {
    argv: OptList,
    user: OptStr,
}

impl KindSpec for RawExec {
    fn build(self, k: &KindCtx<'_, '_>) -> Result<CheckKind, ConfigError> {
        let ctx = k.ctx;
        let list = k.required(&self.argv, "argv", "[\"/usr/bin/true\"]")?;
        let example =
            "give the command to run, e.g. argv = [\"/usr/local/bin/probe\", \"--quick\"]";
        let Some(program) = list.get_ref().first() else {
            return Err(ctx.err(list.span(), "argv is empty", example));
        };
        if program.get_ref().is_empty() {
            return Err(ctx.err(
                program.span(),
                "the program (argv[0]) is empty",
                "argv[0] is the program to run (an absolute path, or a name looked up in PATH), e.g. argv = [\"/usr/local/bin/probe\", \"--quick\"]",
            ));
        }
        let argv = argv(ctx, list.get_ref(), "argv")?;
        if program.get_ref().starts_with('/') {
            ctx.refer(
                program.span(),
                "argv[0]",
                std::path::Path::new(program.get_ref()),
                FileKind::Program,
            );
        }
        let user = self
            .user
            .as_ref()
            .map(|v| {
                let user = text(ctx, v, "user")?;
                if is_name_part(&user) {
                    Ok(user)
                } else {
                    Err(ctx.err(
                        v.span(),
                        format!("invalid user `{user}`"),
                        "write a login name, e.g. user = \"postgres\"",
                    ))
                }
            })
            .transpose()?;
        Ok(CheckKind::Exec(ExecCheck { argv, user }))
    }
}
