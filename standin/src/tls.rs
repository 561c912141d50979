//! TLS material: an in-memory leaf certificate for the platform's names, signed by the CA in
//! `$STANDIN_DIR/.standin/ca.pem` + `ca.key` (or by a self-signed in-memory CA when both are
//! absent), and the rustls server configurations for HTTPS (ALPN http/1.1) and gRPC (ALPN h2).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::ServerConfig;

use crate::log;

/// DNS names the leaf certificate is valid for.
pub(crate) const LEAF_DNS_NAMES: [&str; 3] = [
    "*.svc.mcp.metacircular.net",
    "*.metacircular.net",
    "localhost",
];

/// Server configurations sharing one leaf certificate.
pub(crate) struct Tls {
    /// For `https` listeners (ALPN `http/1.1`).
    pub https: Arc<ServerConfig>,
    /// For `grpcs` listeners (ALPN `h2`).
    pub grpcs: Arc<ServerConfig>,
}

/// A CA able to sign the leaf, with its certificate in DER.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    der: CertificateDer<'static>,
}

fn load_ca(state_dir: &Path, name: &str) -> anyhow::Result<Ca> {
    let cert_path = state_dir.join("ca.pem");
    let key_path = state_dir.join("ca.key");
    let cert = std::fs::read_to_string(&cert_path).ok();
    let key = std::fs::read_to_string(&key_path).ok();
    match (cert, key) {
        (Some(cert), Some(key)) => {
            let key = KeyPair::from_pem(&key)
                .with_context(|| format!("{}: not a PKCS#8 PEM private key", key_path.display()))?;
            let der = CertificateDer::from_pem_slice(cert.as_bytes())
                .with_context(|| format!("{}: no PEM certificate", cert_path.display()))?;
            let issuer = Issuer::from_ca_cert_pem(&cert, key)
                .with_context(|| format!("{}: unusable CA certificate", cert_path.display()))?;
            log::event(
                "tls-ca",
                &format!("source=file path={}", cert_path.display()),
            );
            Ok(Ca { issuer, der })
        }
        (None, None) => {
            let mut params = CertificateParams::default();
            params
                .distinguished_name
                .push(DnType::CommonName, format!("standin {name} in-memory CA"));
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            let key = KeyPair::generate()?;
            let cert = params.self_signed(&key)?;
            let written = state_dir.join("generated-ca.pem");
            let note = match std::fs::write(&written, cert.pem()) {
                Ok(()) => format!("written={}", written.display()),
                Err(e) => format!("write_error={e:?}"),
            };
            log::event(
                "tls-ca",
                &format!(
                    "source=generated reason=no-ca-files dir={} {note}",
                    state_dir.display()
                ),
            );
            Ok(Ca {
                der: cert.der().clone(),
                issuer: Issuer::new(params, key),
            })
        }
        (Some(_), None) => bail!(
            "{} exists but {} is missing",
            cert_path.display(),
            key_path.display()
        ),
        (None, Some(_)) => bail!(
            "{} exists but {} is missing",
            key_path.display(),
            cert_path.display()
        ),
    }
}

/// Builds the TLS configurations (`name` goes into the certificates' common names), or fails
/// with a message saying which file is wrong.
pub(crate) fn build(state_dir: &Path, name: &str) -> anyhow::Result<Tls> {
    let ca = load_ca(state_dir, name)?;
    let mut params = CertificateParams::new(
        LEAF_DNS_NAMES
            .iter()
            .map(|s| (*s).to_owned())
            .collect::<Vec<_>>(),
    )?;
    params
        .subject_alt_names
        .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    params
        .subject_alt_names
        .push(SanType::IpAddress(IpAddr::V6(Ipv6Addr::LOCALHOST)));
    params
        .distinguished_name
        .push(DnType::CommonName, format!("standin {name}"));
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let leaf_key = KeyPair::generate()?;
    let leaf = params.signed_by(&leaf_key, &ca.issuer)?;
    let chain = vec![leaf.der().clone(), ca.der];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));

    let config = |alpn: &[u8]| -> anyhow::Result<Arc<ServerConfig>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut c = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain.clone(), key.clone_key())?;
        c.alpn_protocols = vec![alpn.to_vec()];
        Ok(Arc::new(c))
    };
    Ok(Tls {
        https: config(b"http/1.1")?,
        grpcs: config(b"h2")?,
    })
}
