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
use hickory_proto::op::{DnsResponse, DEFAULT_RETRY_FLOOR};
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
        .map_err(|e| Failed::from(format!("DNS: `{}` is not a valid name: {e}", check.query)))?;
    name.set_fqdn(true);

    let waiting = format!("DNS answer from {server} ({transport}) for {question}");
    let timed_out = || {
        Failed::from(format!(
            "timed out after {} waiting for {waiting}",
            fmt_duration(timeout)
        ))
    };
    let response = match check.transport {
        DnsTransport::Udp => {
            progress.waiting_for(waiting.clone());
            udp_query(server, name, rtype, timeout).await
        }
        DnsTransport::Tcp => {
            progress.waiting_for(format!("TCP connect to DNS server {server}"));
            let provider = TokioRuntimeProvider::new();
            let (connect, handle) = TcpClientStream::new(server, None, Some(timeout), provider);
            let stream = connect.await.map_err(|e| {
                Failed::from(format!(
                    "DNS over TCP to {server}: {}",
                    net_reason(&e, timeout)
                ))
            })?;
            let (mut client, background) =
                Client::<TokioRuntimeProvider>::with_timeout(stream, handle, timeout);
            tokio::spawn(background);
            progress.waiting_for(waiting.clone());
            client.query(name, DNSClass::IN, rtype).await
        }
    }
    .map_err(|e| match e {
        // hickory's own timer (same length) may fire before ours: same words.
        NetError::Timeout => timed_out(),
        e => Failed::from(format!(
            "DNS query to {server} ({transport}) for {question} failed: {}",
            net_reason(&e, timeout)
        )),
    })?;

    let rcode = response.metadata.response_code;
    if rcode != ResponseCode::NoError {
        return Err(Failed::from(format!(
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
    .map_err(Failed::from)
}

/// Ask over UDP with hickory's own retransmission, as stub resolvers do: a
/// query without an answer is sent again from a fresh socket every
/// `DEFAULT_RETRY_FLOOR` (333 ms) until `timeout`, the first answer wins. A
/// packet lost on the way, or sent before the server bound its socket (which
/// on a forwarded port neither answers nor errors), then costs a third of a
/// second, not the whole timeout (hickory's default stops after 3 sends). An
/// error that is an answer in itself (ICMP port unreachable) ends it at once.
async fn udp_query(
    server: std::net::SocketAddr,
    name: Name,
    rtype: HRecordType,
    timeout: Duration,
) -> Result<DnsResponse, NetError> {
    let sends = timeout
        .as_millis()
        .div_ceil(DEFAULT_RETRY_FLOOR.as_millis());
    let stream = UdpClientStream::builder(server, TokioRuntimeProvider::new())
        .with_timeout(Some(timeout))
        .with_max_retries(u8::try_from(sends).unwrap_or(u8::MAX).max(1))
        .build();
    let (mut client, background) = Client::<TokioRuntimeProvider>::from_sender(stream);
    let background = tokio::spawn(background);
    let answer = client.query(name, DNSClass::IN, rtype).await;
    background.abort();
    answer
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

    /// A UDP "server" on localhost that drops the first `drop` queries and
    /// answers the next with an empty NOERROR response; returns its address
    /// and a counter of queries received.
    async fn lossy_server(
        drop: usize,
    ) -> (
        std::net::SocketAddr,
        std::sync::Arc<std::sync::atomic::AtomicUsize>,
    ) {
        use std::sync::atomic::Ordering;
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = seen.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            loop {
                let (n, from) = sock.recv_from(&mut buf).await.unwrap();
                if counter.fetch_add(1, Ordering::SeqCst) < drop {
                    continue;
                }
                // The query turned into its own answer: QR set, no records.
                let mut reply = buf[..n].to_vec();
                reply[2] |= 0x80;
                sock.send_to(&reply, from).await.unwrap();
            }
        });
        (addr, seen)
    }

    #[tokio::test]
    async fn udp_query_is_sent_again_when_the_first_gets_no_answer() {
        let (addr, seen) = lossy_server(1).await;
        let name = Name::from_ascii("x.example.").unwrap();
        let started = std::time::Instant::now();
        let response = udp_query(addr, name, HRecordType::A, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(response.metadata.response_code, ResponseCode::NoError);
        assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 2);
        // Answered by the retransmission, long before the timeout.
        assert!(started.elapsed() < Duration::from_secs(4));
    }

    #[tokio::test]
    async fn udp_query_without_answers_retransmits_then_times_out() {
        let (addr, seen) = lossy_server(usize::MAX).await;
        let name = Name::from_ascii("x.example.").unwrap();
        let err = udp_query(addr, name, HRecordType::A, Duration::from_millis(2000))
            .await
            .unwrap_err();
        assert!(matches!(err, NetError::Timeout), "{err:?}");
        // Sent every 333 ms until the timeout (hickory's default: 3 sends).
        assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 6);
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
