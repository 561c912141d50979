//! Health checks as written (`[[services.<name>.checks]]`). Each check table
//! is split into the common keys (kind, name, schedule) and the kind's own
//! keys, which are deserialized from the spanned document into one raw
//! struct per kind (so unknown keys and wrong types keep exact spans).
//!
//! Adding a kind: one module with a `Raw*` struct implementing [`KindSpec`],
//! one [`CheckKind`] variant, one row in [`KIND_TABLE`].

mod dns;
mod exec;
mod grpc;
mod http;
mod tcp;
mod wait;

use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use crate::config::error::{ConfigError, Ctx};
use crate::config::fields::{
    abs_path, did_you_mean, duration, is_unit_safe, nonzero_duration, one_of, text, threshold,
};
use crate::config::files::FileKind;
use crate::config::model::{Check, CheckKind, TlsOptions};
use crate::config::net::parse_socket_addr;
use crate::config::raw::{RawSchedule, S};
use crate::config::tomlerr::toml_error;

/// Keys every check may have, whatever its kind.
const COMMON_KEYS: &[&str] = &[
    "kind",
    "name",
    "interval",
    "timeout",
    "failure_threshold",
    "success_threshold",
    "start_period",
    "operator_wait",
];

/// A resolved check schedule (defaults applied).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Schedule {
    pub(crate) interval: Duration,
    pub(crate) timeout: Duration,
    pub(crate) failure_threshold: u32,
    pub(crate) success_threshold: u32,
    pub(crate) start_period: Duration,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(2),
            failure_threshold: 3,
            success_threshold: 1,
            start_period: Duration::ZERO,
        }
    }
}

impl Schedule {
    /// Apply the keys given in `raw` on top of `self`.
    pub(crate) fn overlay(self, ctx: &Ctx<'_>, raw: &RawSchedule) -> Result<Schedule, ConfigError> {
        let mut s = self;
        if let Some(v) = &raw.interval {
            s.interval = nonzero_duration(ctx, v, "interval")?;
        }
        if let Some(v) = &raw.timeout {
            s.timeout = nonzero_duration(ctx, v, "timeout")?;
        }
        if let Some(v) = &raw.failure_threshold {
            s.failure_threshold = threshold(ctx, v, "failure_threshold")?;
        }
        if let Some(v) = &raw.success_threshold {
            s.success_threshold = threshold(ctx, v, "success_threshold")?;
        }
        if let Some(v) = &raw.start_period {
            s.start_period = duration(ctx, v, "start_period")?;
        }
        Ok(s)
    }
}

/// A kind's own keys as written, and how to validate them into a [`CheckKind`].
pub(super) trait KindSpec: DeserializeOwned {
    /// Validate, with the check's context (`kind` as written, the table's span).
    fn build(self, k: &KindCtx<'_, '_>) -> Result<CheckKind, ConfigError>;
}

/// What a kind's [`KindSpec::build`] knows about the check being built.
pub(super) struct KindCtx<'c, 'a> {
    /// Error construction with locations.
    pub(super) ctx: &'c Ctx<'a>,
    /// The `kind` value as written.
    pub(super) kind: &'c S<String>,
    /// The check table.
    pub(super) span: Range<usize>,
}

impl KindCtx<'_, '_> {
    /// A mandatory key of this kind, or an error at the check table naming it
    /// with an `example` value.
    pub(super) fn required<'v, T>(
        &self,
        value: &'v Option<T>,
        key: &str,
        example: &str,
    ) -> Result<&'v T, ConfigError> {
        value.as_ref().ok_or_else(|| {
            self.ctx.err(
                self.span.clone(),
                format!("{} check is missing `{key}`", self.kind.get_ref()),
                format!("add e.g. `{key} = {example}`"),
            )
        })
    }
}

/// Builds a [`CheckKind`] from a kind's own keys.
type Builder =
    for<'a, 'i> fn(&Ctx<'a>, &S<String>, S<DeValue<'i>>) -> Result<CheckKind, ConfigError>;

/// Returns the keys a kind accepts.
type FieldList = fn() -> &'static [&'static str];

/// The dispatch table: kind name as written, builder, and the keys it accepts.
const KIND_TABLE: &[(&str, Builder, FieldList)] = &[
    ("dns", build_as::<dns::RawDns>, fields_of::<dns::RawDns>),
    (
        "http",
        build_as::<http::RawHttp>,
        fields_of::<http::RawHttp>,
    ),
    (
        "https",
        build_as::<http::RawHttp>,
        fields_of::<http::RawHttp>,
    ),
    ("tcp", build_as::<tcp::RawTcp>, fields_of::<tcp::RawTcp>),
    (
        "grpc",
        build_as::<grpc::RawGrpc>,
        fields_of::<grpc::RawGrpc>,
    ),
    (
        "exec",
        build_as::<exec::RawExec>,
        fields_of::<exec::RawExec>,
    ),
];

/// Names of all kinds, in table order.
fn kind_names() -> impl Iterator<Item = &'static str> + Clone {
    KIND_TABLE.iter().map(|(name, _, _)| *name)
}

/// Every key a check table may have, whatever its kind (for `config-keys`).
pub(crate) fn all_check_keys() -> std::collections::BTreeSet<&'static str> {
    let mut keys: std::collections::BTreeSet<&'static str> = COMMON_KEYS.iter().copied().collect();
    for (_, _, fields) in KIND_TABLE {
        keys.extend(fields().iter().copied());
    }
    keys
}

/// The field names `K` deserializes (read from its derived `Deserialize`).
pub(crate) fn fields_of<K: DeserializeOwned>() -> &'static [&'static str] {
    let mut fields: &'static [&'static str] = &[];
    let _ = K::deserialize(FieldNames(&mut fields));
    fields
}

/// A deserializer that only records the field list of the struct asked for.
struct FieldNames<'a>(&'a mut &'static [&'static str]);

impl<'de> serde::Deserializer<'de> for FieldNames<'_> {
    type Error = serde::de::value::Error;

    fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(serde::de::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: serde::de::Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = fields;
        Err(serde::de::Error::custom("fields recorded"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

/// Deserialize `table` as `K` and validate it.
fn build_as<K: KindSpec>(
    ctx: &Ctx<'_>,
    kind: &S<String>,
    table: S<DeValue<'_>>,
) -> Result<CheckKind, ConfigError> {
    let span = table.span();
    let raw = K::deserialize(ValueDeserializer::from(table)).map_err(|e| {
        let mut err = toml_error(ctx, &e, COMMON_KEYS);
        let unknown = e
            .message()
            .strip_prefix("unknown field `")
            .and_then(|r| r.split('`').next());
        if let Some(key) = unknown {
            let owners: Vec<&str> = KIND_TABLE
                .iter()
                .filter(|(_, _, fields)| fields().contains(&key))
                .map(|(name, _, _)| *name)
                .collect();
            if !owners.is_empty() {
                err.help = Some(format!(
                    "`{key}` is a key of {} checks, but this check has kind = \"{}\"; {}",
                    one_of(&owners),
                    kind.get_ref(),
                    err.help.unwrap_or_default()
                ));
            }
        }
        err
    })?;
    raw.build(&KindCtx { ctx, kind, span })
}

/// Dispatch on the kind name.
fn build_kind(
    ctx: &Ctx<'_>,
    kind: &S<String>,
    table: S<DeValue<'_>>,
) -> Result<CheckKind, ConfigError> {
    match KIND_TABLE
        .iter()
        .find(|(name, _, _)| *name == kind.get_ref())
    {
        Some((_, build, _)) => build(ctx, kind, table),
        None => {
            let names: Vec<&str> = kind_names().collect();
            Err(ctx.err(
                kind.span(),
                format!("unknown check kind `{}`", kind.get_ref()),
                format!(
                    "{}kind must be {}",
                    did_you_mean(kind.get_ref(), kind_names()),
                    one_of(&names)
                ),
            ))
        }
    }
}

/// Read a string value out of the spanned document (for `kind` and `name`).
fn de_string(ctx: &Ctx<'_>, value: S<DeValue<'_>>, key: &str) -> Result<S<String>, ConfigError> {
    let span = value.span();
    match value.into_inner() {
        DeValue::String(s) => Ok(S::new(span, s.into_owned())),
        other => Err(ctx.err(
            span,
            format!(
                "invalid type: {} for `{key}`, expected a string",
                other.type_str()
            ),
            format!("quote the value, e.g. {key} = \"...\""),
        )),
    }
}

/// Parse the `checks` value of one service into model checks.
pub(crate) fn load_checks(
    ctx: &Ctx<'_>,
    service: &str,
    checks: S<DeValue<'_>>,
    defaults: Schedule,
) -> Result<Vec<Check>, ConfigError> {
    let span = checks.span();
    let DeValue::Array(items) = checks.into_inner() else {
        return Err(ctx.err(
            span,
            format!("`checks` of service `{service}` must be an array of tables"),
            format!("write each check as a [[services.{service}.checks]] table"),
        ));
    };
    let mut out: Vec<(Check, Range<usize>)> = Vec::new();
    let mut kind_counts: Vec<(String, usize)> = Vec::new();
    for item in items {
        let span = item.span();
        let DeValue::Table(table) = item.into_inner() else {
            return Err(ctx.err(
                span,
                "a check must be a table",
                format!("write each check as a [[services.{service}.checks]] table"),
            ));
        };
        let (check, name_span) =
            load_check(ctx, service, table, &span, defaults, &mut kind_counts)?;
        if let Some((_, first)) = out.iter().find(|(c, _)| c.name == check.name) {
            return Err(ctx.err(
                name_span,
                format!("service `{service}` has two checks named `{}`", check.name),
                format!(
                    "the other one is at line {}; give this one a different `name`",
                    ctx.line_of(first.start)
                ),
            ));
        }
        out.push((check, name_span));
    }
    Ok(out.into_iter().map(|(c, _)| c).collect())
}

/// One check table.
fn load_check(
    ctx: &Ctx<'_>,
    service: &str,
    table: DeTable<'_>,
    span: &Range<usize>,
    defaults: Schedule,
    kind_counts: &mut Vec<(String, usize)>,
) -> Result<(Check, Range<usize>), ConfigError> {
    let mut common = DeTable::new();
    let mut own = DeTable::new();
    let mut kind = None;
    let mut name = None;
    let mut wait = None;
    for (key, value) in table {
        match key.get_ref().as_ref() {
            "kind" => kind = Some(de_string(ctx, value, "kind")?),
            "name" => name = Some(de_string(ctx, value, "name")?),
            "operator_wait" => wait = Some(value),
            k if COMMON_KEYS.contains(&k) => {
                common.insert(key, value);
            }
            _ => {
                own.insert(key, value);
            }
        }
    }
    let Some(kind) = kind else {
        return Err(ctx.err(
            span.clone(),
            format!("a check of service `{service}` has no `kind`"),
            format!(
                "add `kind = ...`, one of {}",
                one_of(&kind_names().collect::<Vec<_>>())
            ),
        ));
    };
    let schedule = RawSchedule::deserialize(ValueDeserializer::from(S::new(
        span.clone(),
        DeValue::Table(common),
    )))
    .map_err(|e| toml_error(ctx, &e, &[]))?;
    let kind_value = build_kind(ctx, &kind, S::new(span.clone(), DeValue::Table(own)))?;
    let operator_wait = wait
        .map(|w| wait::load_wait(ctx, kind.get_ref(), w))
        .transpose()?;
    let schedule = defaults.overlay(ctx, &schedule)?;

    let written = kind.get_ref().clone();
    let count = match kind_counts.iter_mut().find(|(k, _)| *k == written) {
        Some((_, n)) => {
            *n += 1;
            *n
        }
        None => {
            kind_counts.push((written.clone(), 1));
            1
        }
    };
    let (name, name_span) = match name {
        Some(n) => {
            let value = text(ctx, &n, "check name")?;
            if !is_unit_safe(&value, true) {
                return Err(ctx.err(
                    n.span(),
                    format!("invalid check name `{value}`"),
                    "use letters, digits, `_`, `.` and `-`, starting with a letter or digit",
                ));
            }
            (value, n.span())
        }
        None if count == 1 => (written, kind.span()),
        None => (format!("{written}-{count}"), kind.span()),
    };
    Ok((
        Check {
            name,
            kind: kind_value,
            interval: schedule.interval,
            timeout: schedule.timeout,
            failure_threshold: schedule.failure_threshold,
            success_threshold: schedule.success_threshold,
            start_period: schedule.start_period,
            operator_wait,
        },
        name_span,
    ))
}

/// Shared TLS keys.
pub(super) fn tls_options(
    ctx: &Ctx<'_>,
    ca_file: Option<&S<String>>,
    insecure: Option<&S<bool>>,
    server_name: Option<&S<String>>,
) -> Result<TlsOptions, ConfigError> {
    let ca_file: Option<PathBuf> = ca_file
        .map(|v| {
            let path = abs_path(ctx, v, "ca_file")?;
            ctx.refer(v.span(), "ca_file", &path, FileKind::CaBundle);
            Ok(path)
        })
        .transpose()?;
    let insecure_on = insecure.is_some_and(|v| *v.get_ref());
    if let (Some(_), Some(flag)) = (&ca_file, insecure) {
        if *flag.get_ref() {
            return Err(ctx.err(
                flag.span(),
                "`insecure = true` and `ca_file` cannot be used together",
                "keep `ca_file` to verify against your CA (recommended), or drop it to skip verification",
            ));
        }
    }
    let server_name = server_name
        .map(|v| {
            let name = text(ctx, v, "server_name")?;
            rustls_pki_types::ServerName::try_from(name.as_str()).map_err(|_| {
                ctx.err(
                    v.span(),
                    format!("server_name `{name}` is not a valid DNS name or IP address"),
                    "write the host name the certificate is issued for, e.g. \"mcr.svc.mcp.metacircular.net\"",
                )
            })?;
            Ok(name)
        })
        .transpose()?;
    Ok(TlsOptions {
        ca_file,
        insecure: insecure_on,
        server_name,
    })
}

pub(super) fn socket_addr(
    ctx: &Ctx<'_>,
    value: &S<String>,
    key: &str,
) -> Result<std::net::SocketAddr, ConfigError> {
    parse_socket_addr(value.get_ref()).map_err(|msg| {
        ctx.err(
            value.span(),
            format!("invalid {key}: {msg}"),
            format!("write {key} as \"ip:port\", e.g. \"127.0.0.1:443\" or \"[::1]:443\""),
        )
    })
}
