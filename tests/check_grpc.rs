//! gRPC health checks against a real tonic-health server on 127.0.0.1,
//! plaintext (h2c) and TLS (leaf from an rcgen CA).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod check_support;

use std::net::SocketAddr;
use std::time::Duration;

use mcrecover::check::probe;
use mcrecover::config::{CheckKind, GrpcCheck, TlsOptions};
use tonic::codegen::tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tonic_health::ServingStatus;

use check_support::{check, closed_port, hanging_tcp_server, Pki};

const T: Duration = Duration::from_secs(5);

/// Start a health server: "" SERVING, "mcp-master" SERVING, "broken"
/// NOT_SERVING. With `pki`, it speaks TLS.
async fn start(pki: Option<&Pki>) -> SocketAddr {
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("mcp-master", ServingStatus::Serving)
        .await;
    reporter
        .set_service_status("broken", ServingStatus::NotServing)
        .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut builder = Server::builder();
    if let Some(pki) = pki {
        let identity = Identity::from_pem(&pki.leaf_pem, &pki.key_pem);
        builder = builder
            .tls_config(ServerTlsConfig::new().identity(identity))
            .unwrap();
    }
    let router = builder.add_service(service);
    tokio::spawn(async move {
        // Keep the reporter alive as long as the server.
        let _reporter = reporter;
        router
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await
    });
    addr
}

fn grpc(addr: SocketAddr, service: &str, tls: Option<TlsOptions>) -> CheckKind {
    CheckKind::Grpc(GrpcCheck {
        address: addr,
        service: service.to_owned(),
        tls,
    })
}

fn trusting(pki: &Pki, server_name: &str) -> TlsOptions {
    TlsOptions {
        ca_file: Some(pki.ca_file.clone()),
        insecure: false,
        server_name: Some(server_name.to_owned()),
    }
}

#[tokio::test]
async fn plaintext_serving_and_not_serving() {
    let addr = start(None).await;
    let out = probe(&check(grpc(addr, "", None), T)).await;
    assert!(out.ok, "{out}");
    assert_eq!(out.detail, "SERVING");

    let out = probe(&check(grpc(addr, "mcp-master", None), T)).await;
    assert!(out.ok, "{out}");

    let out = probe(&check(grpc(addr, "broken", None), T)).await;
    assert!(!out.ok);
    assert_eq!(
        out.detail,
        format!("gRPC health NOT_SERVING from {addr} for service `broken`")
    );

    let out = probe(&check(grpc(addr, "nope", None), T)).await;
    assert!(!out.ok);
    assert_eq!(
        out.detail,
        format!("gRPC health: service `nope` unknown to {addr}")
    );
}

#[tokio::test]
async fn tls_serving_and_not_serving() {
    let pki = Pki::new();
    let addr = start(Some(&pki)).await;
    let name = "mcp-master.svc.mcp.metacircular.net";
    let out = probe(&check(grpc(addr, "", Some(trusting(&pki, name))), T)).await;
    assert!(out.ok, "{out}");
    assert_eq!(out.detail, "SERVING");

    let out = probe(&check(grpc(addr, "broken", Some(trusting(&pki, name))), T)).await;
    assert!(!out.ok);
    assert_eq!(
        out.detail,
        format!("gRPC health NOT_SERVING from {addr} for service `broken`")
    );

    // No server_name: verify against the IP (in the leaf's SANs).
    let mut opts = trusting(&pki, name);
    opts.server_name = None;
    let out = probe(&check(grpc(addr, "", Some(opts)), T)).await;
    assert!(out.ok, "{out}");
}

#[tokio::test]
async fn tls_wrong_name_untrusted_and_insecure() {
    let pki = Pki::new();
    let addr = start(Some(&pki)).await;

    let out = probe(&check(
        grpc(addr, "", Some(trusting(&pki, "grpc.example.org"))),
        T,
    ))
    .await;
    assert!(!out.ok);
    assert!(
        out.detail
            .starts_with("TLS: certificate not valid for grpc.example.org: "),
        "{}",
        out.detail
    );

    let mut opts = trusting(&pki, "mcp-master.svc.mcp.metacircular.net");
    opts.ca_file = Some(pki.other_ca_file.clone());
    let out = probe(&check(grpc(addr, "", Some(opts)), T)).await;
    assert!(!out.ok);
    assert!(out.detail.contains("not trusted"), "{}", out.detail);

    let opts = TlsOptions {
        ca_file: None,
        insecure: true,
        server_name: None,
    };
    let out = probe(&check(grpc(addr, "", Some(opts)), T)).await;
    assert!(out.ok, "{out}");
}

#[tokio::test]
async fn plaintext_client_against_tls_server_fails() {
    let pki = Pki::new();
    let addr = start(Some(&pki)).await;
    let out = probe(&check(grpc(addr, "", None), T)).await;
    assert!(!out.ok, "{out}");
    assert!(out.detail.contains(&addr.to_string()), "{}", out.detail);
}

#[tokio::test]
async fn refused_and_hanging() {
    let addr = closed_port();
    let out = probe(&check(grpc(addr, "", None), T)).await;
    assert!(!out.ok);
    assert_eq!(
        out.detail,
        format!("TCP connect to {addr}: connection refused")
    );

    let addr = hanging_tcp_server().await;
    let out = probe(&check(grpc(addr, "", None), Duration::from_millis(300))).await;
    assert!(!out.ok);
    assert!(
        out.detail.starts_with("timed out after 300ms waiting for "),
        "{}",
        out.detail
    );
}
