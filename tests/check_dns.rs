//! DNS checks against a real hickory-server on 127.0.0.1 (UDP and TCP on the
//! same port), answering like the stand-in: `*.svc.mcp.metacircular.net` ->
//! 100.95.252.120, other A -> 93.184.216.34, `servfail.test` -> SERVFAIL,
//! `empty.test` -> NOERROR without answers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod check_support;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Metadata, ResponseCode};
use hickory_server::proto::rr::rdata::A;
use hickory_server::proto::rr::{LowerName, Name, RData, Record, RecordType as HType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use hickory_server::Server;
use mcrecover::check::probe;
use mcrecover::config::{CheckKind, DnsCheck, DnsExpect, DnsTransport, RecordType};

use check_support::{check, closed_port};

const T: Duration = Duration::from_secs(5);

struct StandIn;

#[async_trait::async_trait]
impl RequestHandler for StandIn {
    async fn handle_request<R: ResponseHandler, TT: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let builder = MessageResponseBuilder::from_message_request(request);
        let info = request.request_info().unwrap();
        let name: Name = info.query.name().into();
        let svc = LowerName::from(Name::from_ascii("svc.mcp.metacircular.net.").unwrap());
        let lower = LowerName::from(name.clone());
        let mut metadata = Metadata::response_from_request(&request.metadata);
        let answers: Vec<Record> =
            if lower == LowerName::from(Name::from_ascii("servfail.test.").unwrap()) {
                let response = builder.error_msg(&request.metadata, ResponseCode::ServFail);
                return response_handle.send_response(response).await.unwrap();
            } else if lower == LowerName::from(Name::from_ascii("empty.test.").unwrap())
                || info.query.query_type() != HType::A
            {
                Vec::new()
            } else if svc.zone_of(&lower) {
                vec![Record::from_rdata(
                    name,
                    60,
                    RData::A(A(Ipv4Addr::new(100, 95, 252, 120))),
                )]
            } else {
                vec![Record::from_rdata(
                    name,
                    60,
                    RData::A(A(Ipv4Addr::new(93, 184, 216, 34))),
                )]
            };
        metadata.authoritative = true;
        let response = builder.build(metadata, answers.iter(), [], [], []);
        response_handle.send_response(response).await.unwrap()
    }
}

/// Start the server on one port for UDP and TCP; returns the address.
async fn start() -> SocketAddr {
    // The UDP port of the same number may be taken: try a few TCP ports.
    for _ in 0..20 {
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let Ok(udp) = tokio::net::UdpSocket::bind(addr).await else {
            continue;
        };
        let mut server = Server::new(StandIn);
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(5), 4096);
        tokio::spawn(async move {
            let _ = server.block_until_done().await;
        });
        return addr;
    }
    panic!("no free TCP+UDP port pair on 127.0.0.1");
}

fn dns(server: SocketAddr, query: &str, transport: DnsTransport, expect: DnsExpect) -> CheckKind {
    CheckKind::Dns(DnsCheck {
        server,
        query: query.to_owned(),
        record: RecordType::A,
        transport,
        expect,
    })
}

#[tokio::test]
async fn udp_any_answer() {
    let addr = start().await;
    let out = probe(&check(
        dns(addr, "google.com", DnsTransport::Udp, DnsExpect::AnyAnswer),
        T,
    ))
    .await;
    assert!(out.ok, "{out}");
    assert_eq!(out.detail, "A 93.184.216.34");
}

#[tokio::test]
async fn tcp_in_cidr() {
    let addr = start().await;
    let net = "100.64.0.0/10".parse().unwrap();
    let q = "mcq.svc.mcp.metacircular.net";
    let out = probe(&check(
        dns(addr, q, DnsTransport::Tcp, DnsExpect::InCidr(net)),
        T,
    ))
    .await;
    assert!(out.ok, "{out}");
    assert_eq!(out.detail, "A 100.95.252.120");

    // A name outside the zone gets the public answer: not in the CIDR.
    let out = probe(&check(
        dns(
            addr,
            "example.com",
            DnsTransport::Tcp,
            DnsExpect::InCidr(net),
        ),
        T,
    ))
    .await;
    assert!(!out.ok);
    assert_eq!(
        out.detail,
        format!(
            "DNS: no answer in 100.64.0.0/10 from {addr} for example.com A (got 93.184.216.34)"
        )
    );
}

#[tokio::test]
async fn exact_address() {
    let addr = start().await;
    let want = "100.95.252.120".parse().unwrap();
    let q = "mcr.svc.mcp.metacircular.net.";
    let out = probe(&check(
        dns(addr, q, DnsTransport::Udp, DnsExpect::Address(want)),
        T,
    ))
    .await;
    assert!(out.ok, "{out}");
    let out = probe(&check(
        dns(
            addr,
            "google.com",
            DnsTransport::Udp,
            DnsExpect::Address(want),
        ),
        T,
    ))
    .await;
    assert!(!out.ok);
}

#[tokio::test]
async fn servfail_over_udp_and_tcp() {
    let addr = start().await;
    for transport in [DnsTransport::Udp, DnsTransport::Tcp] {
        let out = probe(&check(
            dns(addr, "servfail.test", transport, DnsExpect::AnyAnswer),
            T,
        ))
        .await;
        assert!(!out.ok);
        assert_eq!(
            out.detail,
            format!("DNS SERVFAIL from {addr} for servfail.test A")
        );
    }
}

#[tokio::test]
async fn empty_answer_fails_any_answer() {
    let addr = start().await;
    let out = probe(&check(
        dns(addr, "empty.test", DnsTransport::Udp, DnsExpect::AnyAnswer),
        T,
    ))
    .await;
    assert!(!out.ok);
    assert_eq!(
        out.detail,
        format!("DNS: empty answer from {addr} for empty.test A")
    );
}

#[tokio::test]
async fn tcp_refused_and_silent_udp_server() {
    let addr = closed_port();
    let out = probe(&check(
        dns(addr, "google.com", DnsTransport::Tcp, DnsExpect::AnyAnswer),
        T,
    ))
    .await;
    assert!(!out.ok);
    assert_eq!(
        out.detail,
        format!("DNS over TCP to {addr}: connection refused")
    );

    // A UDP socket that never answers: the probe times out.
    let silent = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let out = probe(&check(
        dns(addr, "google.com", DnsTransport::Udp, DnsExpect::AnyAnswer),
        Duration::from_millis(300),
    ))
    .await;
    assert!(!out.ok);
    assert_eq!(
        out.detail,
        format!("timed out after 300ms waiting for DNS answer from {addr} (udp) for google.com A")
    );
    drop(silent);
}
