//! `kind = "dns"`: ask one server one question (UDP or TCP) with the hickory
//! client, then check the response code and the expectation (any answer, a
//! given address, or an address inside a CIDR).

use std::net::IpAddr;
use std::time::Duration;

use hickory_net::client::{Client, ClientHandle};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::tcp::TcpClientStream;
use hickory_net::udp::UdpClientStream;
use hickory_net::NetError;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{DNSClass, Name, Record, RecordType as HRecordType};

use super::{fmt_duration, io_reason, Failed, Progress};
use crate::config::{DnsCheck, DnsExpect, DnsTransport, RecordType};

/// Query `check.server` and evaluate the answer.
pub(super) async fn probe(
    check: &DnsCheck,
    timeout: Duration,
    progress: &Progress,
) -> Result<String, Failed> {
    let rtype = record_type(check.record);
    let question = format!("{} {rtype}", check.query);
    let server = check.server;
    let transport = match check.transport {
        DnsTransport::Udp => "udp",
        DnsTransport::Tcp => "tcp",
    };

    let mut name = Name::from_ascii(&check.query)
        .map_err(|e| Failed(format!("DNS: `{}` is not a valid name: {e}", check.query)))?;
    name.set_fqdn(true);

    let provider = TokioRuntimeProvider::new();
    let mut client = match check.transport {
        DnsTransport::Udp => {
            let stream = UdpClientStream::builder(server, provider)
                .with_timeout(Some(timeout))
                .build();
            let (client, background) = Client::<TokioRuntimeProvider>::from_sender(stream);
            tokio::spawn(background);
            client
        }
        DnsTransport::Tcp => {
            progress.waiting_for(format!("TCP connect to DNS server {server}"));
            let (connect, handle) = TcpClientStream::new(server, None, Some(timeout), provider);
            let stream = connect.await.map_err(|e| {
                Failed(format!(
                    "DNS over TCP to {server}: {}",
                    net_reason(&e, timeout)
                ))
            })?;
            let (client, background) =
                Client::<TokioRuntimeProvider>::with_timeout(stream, handle, timeout);
            tokio::spawn(background);
            client
        }
    };

    let waiting = format!("DNS answer from {server} ({transport}) for {question}");
    progress.waiting_for(waiting.clone());
    let response = client
        .query(name, DNSClass::IN, rtype)
        .await
        .map_err(|e| match e {
            // hickory's own timer (same length) may fire before ours: same words.
            NetError::Timeout => Failed(format!(
                "timed out after {} waiting for {waiting}",
                fmt_duration(timeout)
            )),
            e => Failed(format!(
                "DNS query to {server} ({transport}) for {question} failed: {}",
                net_reason(&e, timeout)
            )),
        })?;

    let rcode = response.metadata.response_code;
    if rcode != ResponseCode::NoError {
        return Err(Failed(format!(
            "DNS {} from {server} for {question}",
            rcode_name(rcode)
        )));
    }
    evaluate(
        &check.expect,
        &response.answers,
        rtype,
        &format!("from {server} for {question}"),
    )
    .map_err(Failed)
}

/// Check `answers` against `expect`; Ok is the success detail, Err the
/// reason, with `context` ("from <server> for <question>") worked in.
fn evaluate(
    expect: &DnsExpect,
    answers: &[Record],
    rtype: HRecordType,
    context: &str,
) -> Result<String, String> {
    let addresses: Vec<IpAddr> = answers.iter().filter_map(|r| r.data.ip_addr()).collect();
    let got = || {
        if answers.is_empty() {
            "got nothing".to_owned()
        } else {
            format!(
                "got {}",
                answers
                    .iter()
                    .map(|r| r.data.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    };
    match expect {
        DnsExpect::AnyAnswer => answers
            .iter()
            .find(|r| r.record_type() == rtype)
            .or_else(|| answers.first())
            .map(describe)
            .ok_or_else(|| format!("DNS: empty answer {context}")),
        DnsExpect::Address(want) => {
            if addresses.contains(want) {
                Ok(format!("{rtype} {want}"))
            } else {
                Err(format!("DNS: no answer {want} {context} ({})", got()))
            }
        }
        DnsExpect::InCidr(net) => match addresses.iter().find(|a| net.contains(*a)) {
            Some(addr) => Ok(format!("{rtype} {addr}")),
            None => Err(format!("DNS: no answer in {net} {context} ({})", got())),
        },
    }
}

/// A hickory network error in words.
fn net_reason(err: &NetError, timeout: Duration) -> String {
    match err {
        NetError::Io(io) => io_reason(io),
        NetError::Timeout => format!("timed out after {}", fmt_duration(timeout)),
        other => other.to_string(),
    }
}

/// "A 100.95.252.120".
fn describe(record: &Record) -> String {
    format!("{} {}", record.record_type(), record.data)
}

/// The conventional mnemonic for a response code (SERVFAIL, NXDOMAIN, ...).
fn rcode_name(code: ResponseCode) -> String {
    match code {
        ResponseCode::NoError => "NOERROR".to_owned(),
        ResponseCode::FormErr => "FORMERR".to_owned(),
        ResponseCode::ServFail => "SERVFAIL".to_owned(),
        ResponseCode::NXDomain => "NXDOMAIN".to_owned(),
        ResponseCode::NotImp => "NOTIMP".to_owned(),
        ResponseCode::Refused => "REFUSED".to_owned(),
        other => format!("{other:?}").to_uppercase(),
    }
}

/// Map the config's record type onto hickory's.
fn record_type(r: RecordType) -> HRecordType {
    match r {
        RecordType::A => HRecordType::A,
        RecordType::Aaaa => HRecordType::AAAA,
        RecordType::Cname => HRecordType::CNAME,
        RecordType::Txt => HRecordType::TXT,
        RecordType::Mx => HRecordType::MX,
        RecordType::Ns => HRecordType::NS,
        RecordType::Soa => HRecordType::SOA,
        RecordType::Srv => HRecordType::SRV,
        RecordType::Ptr => HRecordType::PTR,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::RData;
    use std::net::Ipv4Addr;

    fn a(ip: [u8; 4]) -> Record {
        Record::from_rdata(
            Name::from_ascii("x.example.").unwrap(),
            60,
            RData::A(A(Ipv4Addr::from(ip))),
        )
    }

    #[test]
    fn cidr_expectation_names_what_came_back() {
        let net = "100.64.0.0/10".parse().unwrap();
        let err = evaluate(
            &DnsExpect::InCidr(net),
            &[a([93, 184, 216, 34])],
            HRecordType::A,
            "from S for Q",
        )
        .unwrap_err();
        assert_eq!(
            err,
            "DNS: no answer in 100.64.0.0/10 from S for Q (got 93.184.216.34)"
        );
        let ok = evaluate(
            &DnsExpect::InCidr(net),
            &[a([100, 95, 252, 120])],
            HRecordType::A,
            "from S for Q",
        )
        .unwrap();
        assert_eq!(ok, "A 100.95.252.120");
    }

    #[test]
    fn any_answer_needs_a_record() {
        assert_eq!(
            evaluate(&DnsExpect::AnyAnswer, &[], HRecordType::A, "from S for Q").unwrap_err(),
            "DNS: empty answer from S for Q"
        );
        assert_eq!(
            evaluate(
                &DnsExpect::AnyAnswer,
                &[a([1, 2, 3, 4])],
                HRecordType::A,
                "from S for Q"
            )
            .unwrap(),
            "A 1.2.3.4"
        );
    }

    #[test]
    fn address_expectation() {
        let want = IpAddr::from([1, 2, 3, 4]);
        assert!(evaluate(
            &DnsExpect::Address(want),
            &[a([1, 2, 3, 4])],
            HRecordType::A,
            "from S for Q"
        )
        .is_ok());
        let err = evaluate(
            &DnsExpect::Address(want),
            &[],
            HRecordType::A,
            "from S for Q",
        )
        .unwrap_err();
        assert_eq!(err, "DNS: no answer 1.2.3.4 from S for Q (got nothing)");
    }
}
