//! `kind = "tcp"`: a TCP connect.

use std::ops::Range;

use serde::Deserialize;

use super::socket_addr;
use super::{required, KindSpec};
use crate::config::error::{ConfigError, Ctx};
use crate::config::model::CheckKind;
use crate::config::model::TcpCheck;
use crate::config::raw::OptStr;
use crate::config::raw::S;

/// `kind = "tcp"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTcp {
    address: OptStr,
}

impl KindSpec for RawTcp {
    fn build(
        self,
        ctx: &Ctx<'_>,
        kind: &S<String>,
        span: &Range<usize>,
    ) -> Result<CheckKind, ConfigError> {
        let address = required(
            &self.address,
            ctx,
            span,
            kind,
            "address",
            "\"127.0.0.1:8080\"",
        )?;
        Ok(CheckKind::Tcp(TcpCheck {
            address: socket_addr(ctx, address, "address")?,
        }))
    }
}
