//! `kind = "http"` / `"https"`: a GET with status, body and TLS expectations.

use serde::Deserialize;

use super::{KindCtx, KindSpec};
use crate::config::error::ConfigError;
use crate::config::model::CheckKind;
use crate::config::raw::S;
use url::Url;

use super::{socket_addr, tls_options};
use crate::config::fields::{no_control, text};
use crate::config::model::{HttpCheck, StatusExpect};
use crate::config::raw::OptStr;

/// `status = "any"` or `status = [200, 204]`.
#[derive(Debug)]
enum RawStatus {
    Word(String),
    Codes(Vec<S<i64>>),
}

impl<'de> Deserialize<'de> for RawStatus {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RawStatus;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("\"any\" or an array of HTTP status codes")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawStatus, E> {
                Ok(RawStatus::Word(v.to_string()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<RawStatus, A::Error> {
                let mut codes = Vec::new();
                while let Some(code) = seq.next_element::<S<i64>>()? {
                    codes.push(code);
                }
                Ok(RawStatus::Codes(codes))
            }
        }
        d.deserialize_any(V)
    }
}

/// `kind = "http"` / `kind = "https"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHttp {
    url: OptStr,
    status: Option<S<RawStatus>>,
    body_contains: OptStr,
    ca_file: OptStr,
    insecure: Option<S<bool>>,
    server_name: OptStr,
    connect_to: OptStr,
}

impl KindSpec for RawHttp {
    fn build(self, k: &KindCtx<'_, '_>) -> Result<CheckKind, ConfigError> {
        let ctx = k.ctx;
        let url_value = k.required(&self.url, "url", "\"https://host:443/v1/health\"")?;
        no_control(ctx, url_value, "url")?;
        let url = Url::parse(url_value.get_ref()).map_err(|e| {
            ctx.err(
                url_value.span(),
                format!("invalid url `{}`: {e}", url_value.get_ref()),
                "write a full URL, e.g. \"https://mcq.svc.mcp.metacircular.net:48080/v1/health\"",
            )
        })?;
        let https = match url.scheme() {
            "https" => true,
            "http" => false,
            other => {
                return Err(ctx.err(
                    url_value.span(),
                    format!("unsupported URL scheme `{other}`"),
                    "use an http:// or https:// URL",
                ))
            }
        };
        if url.host().is_none() {
            return Err(ctx.err(
                url_value.span(),
                "the URL has no host",
                "write a URL such as \"https://host:port/path\"",
            ));
        }
        if k.kind.get_ref() == "https" && !https {
            return Err(ctx.err(
                url_value.span(),
                "an `https` check needs an https:// URL",
                "change the URL to https://..., or use kind = \"http\" for plain HTTP",
            ));
        }
        if !https {
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
                    format!("`{key}` only applies to https:// URLs"),
                    "remove it, or use an https:// URL",
                ));
            }
        }
        let tls = tls_options(
            ctx,
            self.ca_file.as_ref(),
            self.insecure.as_ref(),
            self.server_name.as_ref(),
        )?;
        let status =
            match &self.status {
                None => StatusExpect::Success,
                Some(v) => match v.get_ref() {
                    RawStatus::Word(w) if w == "any" => StatusExpect::Any,
                    RawStatus::Word(w) => {
                        return Err(ctx.err(
                            v.span(),
                            format!("invalid status `{w}`"),
                            "write status = \"any\" or a list of codes such as [200, 204]",
                        ))
                    }
                    RawStatus::Codes(codes) if codes.is_empty() => return Err(ctx.err(
                        v.span(),
                        "status list is empty",
                        "list at least one code, e.g. [200], or remove `status` to accept 200-399",
                    )),
                    RawStatus::Codes(codes) => codes
                        .iter()
                        .map(|c| match u16::try_from(*c.get_ref()) {
                            Ok(code) if (100..=599).contains(&code) => Ok(code),
                            _ => Err(ctx.err(
                                c.span(),
                                format!("{} is not an HTTP status code", c.get_ref()),
                                "status codes are between 100 and 599",
                            )),
                        })
                        .collect::<Result<Vec<u16>, ConfigError>>()
                        .map(StatusExpect::Codes)?,
                },
            };
        let body_contains = self
            .body_contains
            .as_ref()
            .map(|v| text(ctx, v, "body_contains"))
            .transpose()?;
        let connect_to = self
            .connect_to
            .as_ref()
            .map(|v| socket_addr(ctx, v, "connect_to"))
            .transpose()?;
        Ok(CheckKind::Http(HttpCheck {
            url,
            status,
            body_contains,
            tls,
            connect_to,
        }))
    }
}
