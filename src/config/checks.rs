//! Health checks as written (`[[services.<name>.checks]]`). Each check table
//! is split into the common keys (kind, name, schedule) and the kind's own
//! keys, which are deserialized from the spanned document into one raw
//! struct per kind (so unknown keys and wrong types keep exact spans).
//!
//! Adding a kind: one `Raw*` struct implementing [`KindSpec`], one
//! [`CheckKind`] variant, one row in [`KIND_TABLE`].

use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use url::Url;

use super::error::{ConfigError, Ctx};
use super::fields::{
    abs_path, argv, choice, did_you_mean, duration, is_unit_safe, no_control, nonzero_duration,
    one_of, text, threshold,
};
use super::load::toml_error;
use super::model::{
    Check, CheckKind, DnsCheck, DnsExpect, DnsTransport, ExecCheck, GrpcCheck, HttpCheck,
    RecordType, StatusExpect, TcpCheck, TlsOptions,
};
use super::net::{parse_dns_server, parse_socket_addr};
use super::raw::{OptList, OptStr, RawSchedule, S};

/// Keys every check may have, whatever its kind.
const COMMON_KEYS: &[&str] = &[
    "kind",
    "name",
    "interval",
    "timeout",
    "failure_threshold",
    "success_threshold",
    "start_period",
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
trait KindSpec: DeserializeOwned {
    /// Validate. `kind` is the `kind` value as written; `span` the check table.
    fn build(
        self,
        ctx: &Ctx<'_>,
        kind: &S<String>,
        span: &Range<usize>,
    ) -> Result<CheckKind, ConfigError>;
}

/// Builds a [`CheckKind`] from a kind's own keys.
type Builder =
    for<'a, 'i> fn(&Ctx<'a>, &S<String>, S<DeValue<'i>>) -> Result<CheckKind, ConfigError>;

/// Returns the keys a kind accepts.
type FieldList = fn() -> &'static [&'static str];

/// The dispatch table: kind name as written, builder, and the keys it accepts.
const KIND_TABLE: &[(&str, Builder, FieldList)] = &[
    ("dns", build_as::<RawDns>, fields_of::<RawDns>),
    ("http", build_as::<RawHttp>, fields_of::<RawHttp>),
    ("https", build_as::<RawHttp>, fields_of::<RawHttp>),
    ("tcp", build_as::<RawTcp>, fields_of::<RawTcp>),
    ("grpc", build_as::<RawGrpc>, fields_of::<RawGrpc>),
    ("exec", build_as::<RawExec>, fields_of::<RawExec>),
];

/// Names of all kinds, in table order.
fn kind_names() -> impl Iterator<Item = &'static str> + Clone {
    KIND_TABLE.iter().map(|(name, _, _)| *name)
}

/// The field names `K` deserializes (read from its derived `Deserialize`).
fn fields_of<K: DeserializeOwned>() -> &'static [&'static str] {
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
    raw.build(ctx, kind, &span)
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

/// A required key that is missing from the check table at `span`.
fn missing(
    ctx: &Ctx<'_>,
    span: &Range<usize>,
    kind: &S<String>,
    key: &str,
    example: &str,
) -> ConfigError {
    ctx.err(
        span.clone(),
        format!("{} check is missing `{key}`", kind.get_ref()),
        format!("add e.g. `{key} = {example}`"),
    )
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
    for (key, value) in table {
        match key.get_ref().as_ref() {
            "kind" => kind = Some(de_string(ctx, value, "kind")?),
            "name" => name = Some(de_string(ctx, value, "name")?),
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
        },
        name_span,
    ))
}

/// Shared TLS keys.
fn tls_options(
    ctx: &Ctx<'_>,
    ca_file: Option<&S<String>>,
    insecure: Option<&S<bool>>,
    server_name: Option<&S<String>>,
) -> Result<TlsOptions, ConfigError> {
    let ca_file: Option<PathBuf> = ca_file.map(|v| abs_path(ctx, v, "ca_file")).transpose()?;
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

fn socket_addr(
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

/// `kind = "dns"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDns {
    server: OptStr,
    query: OptStr,
    record: OptStr,
    transport: OptStr,
    expect_address: OptStr,
    expect_cidr: OptStr,
}

impl KindSpec for RawDns {
    fn build(
        self,
        ctx: &Ctx<'_>,
        kind: &S<String>,
        span: &Range<usize>,
    ) -> Result<CheckKind, ConfigError> {
        let server = self
            .server
            .as_ref()
            .ok_or_else(|| missing(ctx, span, kind, "server", "\"192.168.88.181\""))?;
        let server = parse_dns_server(server.get_ref()).map_err(|msg| {
            ctx.err(
                server.span(),
                format!("invalid server: {msg}"),
                "write the DNS server as \"ip\" or \"ip:port\", e.g. \"192.168.88.181\" or \"[::1]:5353\"",
            )
        })?;
        let query = self
            .query
            .as_ref()
            .ok_or_else(|| missing(ctx, span, kind, "query", "\"example.com\""))?;
        let query_text = text(ctx, query, "query")?;
        if !query_text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '*'))
        {
            return Err(ctx.err(
                query.span(),
                format!("query `{query_text}` is not a DNS name"),
                "write a name such as \"mcq.svc.mcp.metacircular.net\"",
            ));
        }
        let record = match &self.record {
            None => RecordType::A,
            Some(v) => choice(
                ctx,
                v,
                "record",
                &[
                    ("A", RecordType::A),
                    ("AAAA", RecordType::Aaaa),
                    ("CNAME", RecordType::Cname),
                    ("TXT", RecordType::Txt),
                    ("MX", RecordType::Mx),
                    ("NS", RecordType::Ns),
                    ("SOA", RecordType::Soa),
                    ("SRV", RecordType::Srv),
                    ("PTR", RecordType::Ptr),
                ],
            )?,
        };
        let transport = match &self.transport {
            None => DnsTransport::Udp,
            Some(v) => choice(
                ctx,
                v,
                "transport",
                &[("udp", DnsTransport::Udp), ("tcp", DnsTransport::Tcp)],
            )?,
        };
        let expect = match (&self.expect_address, &self.expect_cidr) {
            (Some(_), Some(cidr)) => {
                return Err(ctx.err(
                    cidr.span(),
                    "`expect_address` and `expect_cidr` cannot be used together",
                    "keep one: an exact address or a network the answer must fall in",
                ))
            }
            (Some(addr), None) => {
                let ip: std::net::IpAddr = addr.get_ref().parse().map_err(|_| {
                    ctx.err(
                        addr.span(),
                        format!("expect_address `{}` is not an IP address", addr.get_ref()),
                        "write an IPv4 or IPv6 address, e.g. \"100.95.252.120\"",
                    )
                })?;
                check_family(ctx, addr, record, ip.is_ipv4())?;
                DnsExpect::Address(ip)
            }
            (None, Some(cidr)) => {
                let net: IpNet = cidr.get_ref().parse().map_err(|_| {
                    ctx.err(
                        cidr.span(),
                        format!(
                            "expect_cidr `{}` is not a network in CIDR notation",
                            cidr.get_ref()
                        ),
                        "write address/prefix-length, e.g. \"100.64.0.0/10\"",
                    )
                })?;
                check_family(ctx, cidr, record, matches!(net, IpNet::V4(_)))?;
                DnsExpect::InCidr(net)
            }
            (None, None) => DnsExpect::AnyAnswer,
        };
        Ok(CheckKind::Dns(DnsCheck {
            server,
            query: query_text,
            record,
            transport,
            expect,
        }))
    }
}

/// An address expectation must match the record type's family.
fn check_family(
    ctx: &Ctx<'_>,
    value: &S<String>,
    record: RecordType,
    v4: bool,
) -> Result<(), ConfigError> {
    let wanted = match record {
        RecordType::A => Some(true),
        RecordType::Aaaa => Some(false),
        _ => None,
    };
    match wanted {
        Some(w) if w == v4 => Ok(()),
        Some(_) => Err(ctx.err(
            value.span(),
            format!(
                "`{}` is an IPv{} value but the record type is {}",
                value.get_ref(),
                if v4 { 4 } else { 6 },
                if v4 { "AAAA" } else { "A" }
            ),
            "use record = \"A\" for IPv4 answers and \"AAAA\" for IPv6 answers",
        )),
        None => Err(ctx.err(
            value.span(),
            "address expectations need record = \"A\" or \"AAAA\"",
            "drop the expectation (any answer passes) or query an A/AAAA record",
        )),
    }
}

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
struct RawHttp {
    url: OptStr,
    status: Option<S<RawStatus>>,
    body_contains: OptStr,
    ca_file: OptStr,
    insecure: Option<S<bool>>,
    server_name: OptStr,
    connect_to: OptStr,
}

impl KindSpec for RawHttp {
    fn build(
        self,
        ctx: &Ctx<'_>,
        kind: &S<String>,
        span: &Range<usize>,
    ) -> Result<CheckKind, ConfigError> {
        let url_value = self
            .url
            .as_ref()
            .ok_or_else(|| missing(ctx, span, kind, "url", "\"https://host:443/v1/health\""))?;
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
        if kind.get_ref() == "https" && !https {
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

/// `kind = "tcp"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTcp {
    address: OptStr,
}

impl KindSpec for RawTcp {
    fn build(
        self,
        ctx: &Ctx<'_>,
        kind: &S<String>,
        span: &Range<usize>,
    ) -> Result<CheckKind, ConfigError> {
        let address = self
            .address
            .as_ref()
            .ok_or_else(|| missing(ctx, span, kind, "address", "\"127.0.0.1:8080\""))?;
        Ok(CheckKind::Tcp(TcpCheck {
            address: socket_addr(ctx, address, "address")?,
        }))
    }
}

/// `kind = "grpc"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGrpc {
    address: OptStr,
    service: OptStr,
    tls: Option<S<bool>>,
    ca_file: OptStr,
    insecure: Option<S<bool>>,
    server_name: OptStr,
}

impl KindSpec for RawGrpc {
    fn build(
        self,
        ctx: &Ctx<'_>,
        kind: &S<String>,
        span: &Range<usize>,
    ) -> Result<CheckKind, ConfigError> {
        let address = self
            .address
            .as_ref()
            .ok_or_else(|| missing(ctx, span, kind, "address", "\"127.0.0.1:9555\""))?;
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

/// `kind = "exec"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExec {
    argv: OptList,
    user: OptStr,
}

impl KindSpec for RawExec {
    fn build(
        self,
        ctx: &Ctx<'_>,
        kind: &S<String>,
        span: &Range<usize>,
    ) -> Result<CheckKind, ConfigError> {
        let list = self
            .argv
            .as_ref()
            .ok_or_else(|| missing(ctx, span, kind, "argv", "[\"/usr/bin/true\"]"))?;
        if list.get_ref().is_empty() || list.get_ref()[0].get_ref().is_empty() {
            return Err(ctx.err(
                list.span(),
                "argv is empty",
                "give the command to run, e.g. argv = [\"/usr/local/bin/probe\", \"--quick\"]",
            ));
        }
        let argv = argv(ctx, list.get_ref(), "argv")?;
        let user = self
            .user
            .as_ref()
            .map(|v| text(ctx, v, "user"))
            .transpose()?;
        Ok(CheckKind::Exec(ExecCheck { argv, user }))
    }
}
