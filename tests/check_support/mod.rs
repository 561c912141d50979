//! Shared helpers for the health-check tests: building `Check`s and a real
//! test PKI (CA + leaf from rcgen) written to a temporary directory.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mcrecover::config::{Check, CheckKind};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::ServerConfig;

/// A check of `kind` with the given per-attempt timeout.
pub fn check(kind: CheckKind, timeout: Duration) -> Check {
    Check {
        name: kind.kind_name().to_owned(),
        kind,
        interval: Duration::from_secs(10),
        timeout,
        failure_threshold: 3,
        success_threshold: 1,
        start_period: Duration::ZERO,
        operator_wait: None,
    }
}

/// A test CA and a leaf for `*.svc.mcp.metacircular.net`, `localhost` and
/// 127.0.0.1, like the stand-ins use. `ca_file` is the CA's PEM on disk.
pub struct Pki {
    _dir: tempfile::TempDir,
    /// PEM file holding the CA certificate.
    pub ca_file: PathBuf,
    /// PEM file holding an unrelated CA (for "untrusted" tests).
    pub other_ca_file: PathBuf,
    /// Leaf certificate, PEM.
    pub leaf_pem: String,
    /// Leaf key, PKCS#8 PEM.
    pub key_pem: String,
    leaf_der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

fn ca(name: &str) -> (CertificateParams, KeyPair, String) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    (params, key, cert.pem())
}

impl Pki {
    /// Generate a fresh PKI.
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let (ca_params, ca_key, ca_pem) = ca("mcrecover test CA");
        let (_, _, other_pem) = ca("some other CA");
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![
            "*.svc.mcp.metacircular.net".to_owned(),
            "*.metacircular.net".to_owned(),
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
        ])
        .unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "stand-in");
        let leaf = params.signed_by(&leaf_key, &issuer).unwrap();

        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, &ca_pem).unwrap();
        let other_ca_file = dir.path().join("other-ca.pem");
        std::fs::write(&other_ca_file, &other_pem).unwrap();
        Pki {
            ca_file,
            other_ca_file,
            leaf_pem: leaf.pem(),
            key_pem: leaf_key.serialize_pem(),
            leaf_der: leaf.der().clone(),
            key_der: leaf_key.serialize_der(),
            _dir: dir,
        }
    }

    /// A rustls server configuration presenting the leaf, offering `alpn`.
    pub fn server_config(&self, alpn: &[&[u8]]) -> Arc<ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()));
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![self.leaf_der.clone()], key)
            .unwrap();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}

/// A TCP listener that accepts connections and never answers (held open
/// until the test ends). Returns its address.
pub async fn hanging_tcp_server() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    addr
}

/// An address on 127.0.0.1 where nothing listens (bound, then released).
pub fn closed_port() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}
