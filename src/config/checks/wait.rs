//! `operator_wait = { ... }` of a check: the answers that mean "the service
//! runs and waits for an operator" (a sealed vault answering 503, a gRPC
//! server `NOT_SERVING` until unlocked, a probe script's exit code) rather
//! than "broken". Which conditions a check may use depends on its kind.

use std::ops::Range;

use serde::Deserialize;
use toml::de::{DeValue, ValueDeserializer};

use crate::config::error::{ConfigError, Ctx};
use crate::config::fields::text;
use crate::config::model::OperatorWait;
use crate::config::raw::{OptList, OptStr, S};
use crate::config::tomlerr::toml_error;

/// `operator_wait` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWait {
    status: Option<S<Vec<S<i64>>>>,
    body_contains: OptStr,
    json_true: OptStr,
    grpc_status: OptList,
    exit_codes: Option<S<Vec<S<i64>>>>,
    remedy: OptStr,
}

/// Health statuses and call codes a gRPC `operator_wait` may name.
const GRPC_NAMES: &[&str] = &[
    "NOT_SERVING",
    "SERVICE_UNKNOWN",
    "UNKNOWN",
    "UNAVAILABLE",
    "FAILED_PRECONDITION",
    "PERMISSION_DENIED",
    "UNAUTHENTICATED",
    "RESOURCE_EXHAUSTED",
    "ABORTED",
];

const EXAMPLE: &str = "operator_wait = { status = [503], remedy = \"unseal it at https://...\" }";

/// Parse `operator_wait` of a check of kind `kind` (as written).
pub(super) fn load_wait(
    ctx: &Ctx<'_>,
    kind: &str,
    value: S<DeValue<'_>>,
) -> Result<OperatorWait, ConfigError> {
    let span = value.span();
    if !matches!(value.get_ref(), DeValue::Table(_)) {
        return Err(ctx.err(
            span,
            "`operator_wait` must be a table",
            format!("write it as an inline table, e.g. {EXAMPLE}"),
        ));
    }
    let raw = RawWait::deserialize(ValueDeserializer::from(value))
        .map_err(|e| toml_error(ctx, &e, &[]))?;
    let allowed: &[&str] = match kind {
        "http" | "https" => &["status", "body_contains", "json_true"],
        "grpc" => &["grpc_status"],
        "exec" => &["exit_codes"],
        other => {
            return Err(ctx.err(
                span,
                format!("`operator_wait` is not available for {other} checks"),
                "a DNS or TCP answer cannot say that a service waits for an operator; use it on an http(s), grpc or exec check, or remove it",
            ))
        }
    };
    let given: [(&str, Option<Range<usize>>); 5] = [
        ("status", raw.status.as_ref().map(S::span)),
        ("body_contains", raw.body_contains.as_ref().map(S::span)),
        ("json_true", raw.json_true.as_ref().map(S::span)),
        ("grpc_status", raw.grpc_status.as_ref().map(S::span)),
        ("exit_codes", raw.exit_codes.as_ref().map(S::span)),
    ];
    for (key, at) in &given {
        if let (Some(at), false) = (at, allowed.contains(key)) {
            return Err(ctx.err(
                at.clone(),
                format!("`operator_wait.{key}` does not apply to {kind} checks"),
                format!(
                    "a {kind} check's operator_wait may use {}",
                    allowed.join(", ")
                ),
            ));
        }
    }
    if given.iter().all(|(_, at)| at.is_none()) {
        return Err(ctx.err(
            span,
            "`operator_wait` has no condition",
            format!(
                "say which answer means \"waiting for an operator\" with {}",
                allowed.join(", ")
            ),
        ));
    }
    let remedy = match &raw.remedy {
        Some(v) => text(ctx, v, "remedy")?,
        None => {
            return Err(ctx.err(
                span,
                "`operator_wait` has no `remedy`",
                "say what the operator must do, e.g. remedy = \"unseal Metacrypt at https://metacrypt.svc.mcp.metacircular.net:18080\"",
            ))
        }
    };
    let mut wait = OperatorWait {
        remedy,
        ..OperatorWait::default()
    };
    if let Some(list) = &raw.status {
        for code in list.get_ref() {
            match u16::try_from(*code.get_ref()) {
                Ok(c) if (100..=599).contains(&c) => wait.status.push(c),
                _ => {
                    return Err(ctx.err(
                        code.span(),
                        format!("`{}` is not an HTTP status", code.get_ref()),
                        "write HTTP statuses between 100 and 599, e.g. status = [503]",
                    ))
                }
            }
        }
    }
    wait.body_contains = raw
        .body_contains
        .as_ref()
        .map(|v| text(ctx, v, "body_contains"))
        .transpose()?;
    wait.json_true = raw
        .json_true
        .as_ref()
        .map(|v| text(ctx, v, "json_true"))
        .transpose()?;
    if let Some(list) = &raw.grpc_status {
        for name in list.get_ref() {
            let upper = name.get_ref().to_ascii_uppercase();
            if !GRPC_NAMES.contains(&upper.as_str()) {
                return Err(ctx.err(
                    name.span(),
                    format!(
                        "`{}` is not a gRPC health status or call code",
                        name.get_ref()
                    ),
                    format!("use one of {}", GRPC_NAMES.join(", ")),
                ));
            }
            wait.grpc_status.push(upper);
        }
    }
    if let Some(list) = &raw.exit_codes {
        for code in list.get_ref() {
            match i32::try_from(*code.get_ref()) {
                Ok(c) if (1..=255).contains(&c) => wait.exit_codes.push(c),
                _ => return Err(ctx.err(
                    code.span(),
                    format!("`{}` is not a failing exit code", code.get_ref()),
                    "write exit codes between 1 and 255 (0 means healthy), e.g. exit_codes = [3]",
                )),
            }
        }
    }
    Ok(wait)
}
