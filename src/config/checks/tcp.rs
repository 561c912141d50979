//! `kind = "tcp"`: a TCP connect.

use serde::Deserialize;

use super::socket_addr;
use super::{KindCtx, KindSpec};
use crate::config::error::ConfigError;
use crate::config::model::CheckKind;
use crate::config::model::TcpCheck;
use crate::config::raw::OptStr;

/// `kind = "tcp"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTcp {
    address: OptStr,
}

impl KindSpec for RawTcp {
    fn build(self, k: &KindCtx<'_, '_>) -> Result<CheckKind, ConfigError> {
        let ctx = k.ctx;
        let address = k.required(&self.address, "address", "\"127.0.0.1:8080\"")?;
        Ok(CheckKind::Tcp(TcpCheck {
            address: socket_addr(ctx, address, "address")?,
        }))
    }
}
