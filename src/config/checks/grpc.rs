//! `kind = "grpc"`: a `grpc.health.v1` Check call, plaintext or TLS.

use serde::Deserialize;

use super::{socket_addr, tls_options};
use super::{KindCtx, KindSpec};
use crate::config::error::ConfigError;
use crate::config::fields::no_control;
use crate::config::model::CheckKind;
use crate::config::model::GrpcCheck;
use crate::config::raw::OptStr;
use crate::config::raw::S;

/// `kind = "grpc"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGrpc {
    address: OptStr,
    service: OptStr,
    tls: Option<S<bool>>,
    ca_file: OptStr,
    insecure: Option<S<bool>>,
    server_name: OptStr,
}

impl KindSpec for RawGrpc {
    fn build(self, k: &KindCtx<'_, '_>) -> Result<CheckKind, ConfigError> {
        let ctx = k.ctx;
        let address = k.required(&self.address, "address", "\"127.0.0.1:9555\"")?;
        let address = socket_addr(ctx, address, "address")?;
        let service = match &self.service {
            None => String::new(),
            Some(v) => {
                no_control(ctx, v, "service")?;
                v.get_ref().clone()
            }
        };
        let tls_on = self.tls.as_ref().is_some_and(|v| *v.get_ref());
        let tls = if tls_on {
            Some(tls_options(
                ctx,
                self.ca_file.as_ref(),
                self.insecure.as_ref(),
                self.server_name.as_ref(),
            )?)
        } else {
            let tls_key = [
                ("ca_file", self.ca_file.as_ref().map(S::span)),
                ("insecure", self.insecure.as_ref().map(S::span)),
                ("server_name", self.server_name.as_ref().map(S::span)),
            ]
            .into_iter()
            .find_map(|(k, s)| s.map(|s| (k, s)));
            if let Some((key, key_span)) = tls_key {
                return Err(ctx.err(
                    key_span,
                    format!("`{key}` needs `tls = true`"),
                    "add `tls = true` (the server speaks TLS) or remove the key",
                ));
            }
            None
        };
        Ok(CheckKind::Grpc(GrpcCheck {
            address,
            service,
            tls,
        }))
    }
}
