//! Turns toml's own errors (syntax, unknown keys, wrong types, duplicate
//! keys) into located [`ConfigError`]s with a help text.

use super::error::{ConfigError, Ctx};
use super::fields::did_you_mean;

/// Convert a toml error (syntax or deserialization) into a [`ConfigError`].
/// `extra_keys` are keys also valid in the table, for suggestions.
pub(crate) fn toml_error(ctx: &Ctx<'_>, err: &toml::de::Error, extra_keys: &[&str]) -> ConfigError {
    let span = err.span().unwrap_or(0..0);
    let msg = err.message().trim_end();
    if let Some(rest) = msg.strip_prefix("unknown field `") {
        let (field, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let mut valid: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
        valid.extend(extra_keys.iter().copied());
        valid.sort_unstable();
        valid.dedup();
        return ctx.err(
            span,
            format!("unknown key `{field}`"),
            format!(
                "{}valid keys here: {}",
                did_you_mean(field, valid.iter().copied()),
                valid.join(", ")
            ),
        );
    }
    if msg == "duplicate key" {
        return duplicate_key(ctx, span);
    }
    if let Some(rest) = msg.strip_prefix("missing field `") {
        let field = rest.split('`').next().unwrap_or(rest);
        return ctx.err(
            span,
            format!("missing required key `{field}`"),
            format!("add `{field} = ...` to this table"),
        );
    }
    if msg.starts_with("invalid type:") || msg.starts_with("invalid value:") {
        let key = key_before(ctx, span.start);
        let help = if msg.ends_with("expected a string")
            && matches!(
                key,
                Some(
                    "interval"
                        | "timeout"
                        | "start_period"
                        | "backoff_initial"
                        | "backoff_max"
                        | "backoff_reset"
                        | "escalate_window"
                        | "hook_timeout"
                        | "webhook_timeout"
                )
            ) {
            format!(
                "durations are quoted strings with a unit, e.g. {} = \"2s\"",
                key.unwrap_or_default()
            )
        } else if msg.ends_with("expected a string") {
            "quote the value, e.g. \"...\"".to_string()
        } else if msg.ends_with("expected u32") {
            "write a non-negative whole number without quotes".to_string()
        } else if msg.ends_with("expected a boolean") {
            "write true or false without quotes".to_string()
        } else if msg.ends_with("expected a sequence") {
            "write an array, e.g. [\"a\", \"b\"]".to_string()
        } else if msg.ends_with("expected a map") || msg.contains("expected struct") {
            "write a table, e.g. { key = \"value\" } or a [section]".to_string()
        } else {
            "see docs/config.md for the expected type".to_string()
        };
        // serde names the raw struct (`expected struct RawWatch`): say "a table".
        let msg = match msg.find("expected struct ") {
            Some(i) => format!("{}expected a table", &msg[..i]),
            None => msg.to_string(),
        };
        return ctx.err(span, msg, help);
    }
    ctx.err(
        span,
        msg.to_string(),
        "fix the TOML syntax (see https://toml.io/en/v1.0.0)",
    )
}

/// The `key` of a `key = value` line whose value starts at `offset`, if any.
fn key_before<'s>(ctx: &Ctx<'s>, offset: usize) -> Option<&'s str> {
    let before = ctx.src.get(..offset)?;
    let line = &before[before.rfind('\n').map_or(0, |i| i + 1)..];
    let (key, _) = line.rsplit_once('=')?;
    let key = key.trim().rsplit(['{', ',', '.']).next()?.trim();
    (!key.is_empty()).then_some(key)
}

/// Reword toml's bare "duplicate key" using the line it points at and the
/// table header above it.
fn duplicate_key(ctx: &Ctx<'_>, span: std::ops::Range<usize>) -> ConfigError {
    let key = ctx
        .src
        .get(span.clone())
        .unwrap_or("")
        .trim_matches(['"', '\'']);
    let before = ctx.src.get(..span.start).unwrap_or("");
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = ctx
        .src
        .get(line_start..)
        .unwrap_or("")
        .lines()
        .next()
        .unwrap_or("")
        .trim_start();
    // The header of the table the key is in: the last `[...]` line before it.
    let header = before[..line_start]
        .lines()
        .rev()
        .map(str::trim_start)
        .find(|l| l.starts_with('['))
        .and_then(|l| l.split(']').next())
        .map(|l| l.trim_start_matches('['));
    let is_service = if line.starts_with('[') {
        let path = line.trim_start_matches('[').split(']').next().unwrap_or("");
        path.strip_prefix("services.")
            .is_some_and(|rest| rest.trim_matches('"') == key)
    } else {
        header == Some("services")
    };
    if is_service {
        return ctx.err(
            span,
            format!("service `{key}` is defined twice"),
            "each service may be defined once; rename one of them or merge the two tables",
        );
    }
    if line.starts_with('[') && !line.starts_with("[[") {
        let path = line
            .trim_start_matches('[')
            .split(']')
            .next()
            .unwrap_or(key);
        return ctx.err(
            span,
            format!("table [{path}] is defined twice"),
            "merge the two tables into one",
        );
    }
    let place = header.map_or_else(String::new, |h| format!(" in [{h}]"));
    ctx.err(
        span,
        format!("duplicate key `{key}`{place}"),
        "a key may appear only once per table; remove or rename one of them",
    )
}
