//! `kind = "dns"`: a query against a given server.

use serde::Deserialize;

use super::{KindCtx, KindSpec};
use crate::config::error::{ConfigError, Ctx};
use crate::config::model::CheckKind;
use crate::config::raw::S;
use ipnet::IpNet;

use crate::config::fields::{choice, text};
use crate::config::model::{DnsCheck, DnsExpect, DnsTransport, RecordType};
use crate::config::net::parse_dns_server;
use crate::config::raw::OptStr;

/// `kind = "dns"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDns {
    server: OptStr,
    query: OptStr,
    record: OptStr,
    transport: OptStr,
    expect_address: OptStr,
    expect_cidr: OptStr,
}

impl KindSpec for RawDns {
    fn build(self, k: &KindCtx<'_, '_>) -> Result<CheckKind, ConfigError> {
        let ctx = k.ctx;
        let server = k.required(&self.server, "server", "\"192.168.88.181\"")?;
        let server = parse_dns_server(server.get_ref()).map_err(|msg| {
            ctx.err(
                server.span(),
                format!("invalid server: {msg}"),
                "write the DNS server as \"ip\" or \"ip:port\", e.g. \"192.168.88.181\" or \"[::1]:5353\"",
            )
        })?;
        let query = k.required(&self.query, "query", "\"example.com\"")?;
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
