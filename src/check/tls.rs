//! Shared TLS client setup for HTTPS and gRPC checks: builds a rustls
//! [`ClientConfig`] from [`TlsOptions`] (a PEM CA bundle, the built-in web
//! roots, or an explicit `insecure` verifier that accepts any certificate),
//! dials the handshake, and turns handshake failures into sentences a person
//! can act on ("TLS: certificate not valid for <name>: <why>").
//!
//! Probes do not build a configuration each time: [`probe_config`] keeps one
//! per (trust, ALPN, dialled address, server name), so the CA bundle is not
//! re-read and re-parsed per probe and the configuration's session store lets
//! the next probe of the same server resume its TLS session (no certificate
//! chain to verify again). Two bounds keep that honest:
//! - a CA file is looked at (one `stat`) on every probe and re-read when its
//!   size, mtime, ctime or inode changed, so an edited or replaced bundle is
//!   used from the next probe on (with fresh sessions: nothing resumes across
//!   a trust change); a file that cannot be read fails the probe as before;
//! - a configuration, and so its sessions, lives at most
//!   [`FULL_HANDSHAKE_EVERY`]: a server whose certificate goes bad while it
//!   keeps resuming sessions is caught by the next full handshake.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::config::TlsOptions;

/// Why a TLS client configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The CA bundle could not be read.
    #[error("TLS: cannot read CA file {}: {reason}", path.display())]
    CaRead {
        /// The CA bundle path.
        path: PathBuf,
        /// The I/O error, in words.
        reason: String,
    },
    /// The CA bundle holds no usable certificate.
    #[error("TLS: CA file {} contains no usable PEM certificate{}", path.display(), reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default())]
    CaEmpty {
        /// The CA bundle path.
        path: PathBuf,
        /// Parse problem, if any.
        reason: Option<String>,
    },
    /// The server name is neither a DNS name nor an IP address.
    #[error("TLS: `{0}` is not a valid server name")]
    BadServerName(String),
    /// The handshake failed; the text names the server and says why
    /// (e.g. "TLS: certificate not valid for <name>: ...").
    #[error("{0}")]
    Handshake(String),
    /// rustls refused the configuration (no usable protocol versions).
    #[error("TLS: cannot build client configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The crypto provider every check uses (ring), built once.
fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// The built-in web roots as a root store, built once.
fn web_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            Arc::new(RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            })
        })
        .clone()
}

/// How long a probe configuration (and the TLS sessions it stores) is
/// reused before the next probe builds a fresh one and so makes a full
/// handshake, verifying the server's certificate chain again. Resumed
/// sessions are not re-verified: this bounds how late a certificate that
/// went bad on a server that keeps resuming sessions is reported.
pub const FULL_HANDSHAKE_EVERY: Duration = Duration::from_secs(60);

/// At most this many probe configurations are kept (one per server a check
/// talks to); beyond it the expired ones, then all, are dropped.
const MAX_PROBE_CONFIGS: usize = 4096;

/// What identifies a CA file's content without reading it: device, inode,
/// size, mtime and ctime (nanoseconds). Replaced (rename), rewritten or
/// truncated files all change it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileStamp {
    fn of(path: &Path) -> Option<FileStamp> {
        // One stat of a local file: done inline (a blocking-pool hop would
        // cost more than the call).
        let m = std::fs::metadata(path).ok()?;
        Some(FileStamp {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }
}

/// Where a configuration's trust comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Trust {
    Insecure,
    WebRoots,
    CaFile(PathBuf),
}

impl Trust {
    fn of(opts: &TlsOptions) -> Trust {
        match (&opts.ca_file, opts.insecure) {
            (_, true) => Trust::Insecure,
            (Some(path), false) => Trust::CaFile(path.clone()),
            (None, false) => Trust::WebRoots,
        }
    }
}

/// A parsed CA file and the stamp of what was parsed.
type ParsedCaFile = (FileStamp, Arc<RootCertStore>);

/// The root store of `trust` (none for `insecure`), with the CA file's
/// stamp: parsed CA files are kept per path and re-read when the stamp
/// changed.
async fn trust_roots(
    trust: &Trust,
) -> Result<(Option<Arc<RootCertStore>>, Option<FileStamp>), TlsError> {
    static CA_FILES: OnceLock<Mutex<HashMap<PathBuf, ParsedCaFile>>> = OnceLock::new();
    let path = match trust {
        Trust::Insecure => return Ok((None, None)),
        Trust::WebRoots => return Ok((Some(web_roots()), None)),
        Trust::CaFile(path) => path,
    };
    let cache = CA_FILES.get_or_init(Mutex::default);
    // Stamp before reading: a change during the read shows at the next probe.
    let Some(stamp) = FileStamp::of(path) else {
        // Cannot stat: reading fails too, with the usual wording.
        cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(path);
        return roots_from_file(path)
            .await
            .map(|r| (Some(Arc::new(r)), None));
    };
    if let Some((s, roots)) = cache
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(path)
    {
        if *s == stamp {
            return Ok((Some(roots.clone()), Some(stamp)));
        }
    }
    let roots = match roots_from_file(path).await {
        Ok(roots) => Arc::new(roots),
        Err(e) => {
            cache
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(path);
            return Err(e);
        }
    };
    cache
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(path.clone(), (stamp, roots.clone()));
    Ok((Some(roots), Some(stamp)))
}

/// A configuration for `trust` offering `alpn`, with `resumption`.
fn build_config(
    roots: Option<Arc<RootCertStore>>,
    alpn: &[&[u8]],
    resumption: Option<rustls::client::Resumption>,
) -> Result<ClientConfig, TlsError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let mut config = match roots {
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCert {
                algorithms: provider.signature_verification_algorithms,
            }))
            .with_no_client_auth(),
        Some(roots) => builder.with_root_certificates(roots).with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    if let Some(resumption) = resumption {
        config.resumption = resumption;
    }
    Ok(config)
}

/// Which probe configuration: one per server a check talks to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ProbeKey {
    trust: Trust,
    alpn: Vec<Vec<u8>>,
    peer: SocketAddr,
    name: String,
}

/// A kept probe configuration.
struct Kept {
    config: Arc<ClientConfig>,
    /// The CA file's stamp when it was built (None: no CA file).
    stamp: Option<FileStamp>,
    built: Instant,
}

/// The client configuration a probe of the server at `peer`, spoken to as
/// `name`, uses: built once and reused (see the module documentation), so
/// the next probe of that server resumes the TLS session. Errors are not
/// kept: a CA file that cannot be read or parsed is tried again next time.
pub async fn probe_config(
    opts: &TlsOptions,
    alpn: &[&[u8]],
    peer: SocketAddr,
    name: &str,
) -> Result<Arc<ClientConfig>, TlsError> {
    static KEPT: OnceLock<Mutex<HashMap<ProbeKey, Kept>>> = OnceLock::new();
    let kept = KEPT.get_or_init(Mutex::default);
    let trust = Trust::of(opts);
    let (roots, stamp) = trust_roots(&trust).await?;
    let key = ProbeKey {
        trust,
        alpn: alpn.iter().map(|p| p.to_vec()).collect(),
        peer,
        name: name.to_owned(),
    };
    let now = Instant::now();
    if let Some(k) = kept
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&key)
    {
        if k.stamp == stamp && now.duration_since(k.built) < FULL_HANDSHAKE_EVERY {
            return Ok(k.config.clone());
        }
    }
    // One server name per configuration: a tiny session store.
    let resumption = rustls::client::Resumption::in_memory_sessions(2);
    let config = Arc::new(build_config(roots, alpn, Some(resumption))?);
    let mut map = kept.lock().unwrap_or_else(PoisonError::into_inner);
    if map.len() >= MAX_PROBE_CONFIGS && !map.contains_key(&key) {
        map.retain(|_, k| now.duration_since(k.built) < FULL_HANDSHAKE_EVERY);
        if map.len() >= MAX_PROBE_CONFIGS {
            map.clear();
        }
    }
    map.insert(
        key,
        Kept {
            config: config.clone(),
            stamp,
            built: now,
        },
    );
    Ok(config)
}

/// Build a rustls client configuration for `opts`, offering `alpn` protocols
/// (e.g. `[b"h2"]` for gRPC, `[b"http/1.1"]` for HTTPS).
///
/// Trust comes from `opts.ca_file` (PEM bundle) if set, else from the
/// built-in web roots; `opts.insecure` skips verification entirely.
/// A fresh configuration (its own session store) each call; probes use
/// [`probe_config`].
pub async fn client_config(
    opts: &TlsOptions,
    alpn: &[&[u8]],
) -> Result<Arc<ClientConfig>, TlsError> {
    let (roots, _) = trust_roots(&Trust::of(opts)).await?;
    Ok(Arc::new(build_config(roots, alpn, None)?))
}

/// Read a PEM CA bundle into a root store.
async fn roots_from_file(path: &Path) -> Result<RootCertStore, TlsError> {
    let pem = tokio::fs::read(path).await.map_err(|e| TlsError::CaRead {
        path: path.to_path_buf(),
        reason: super::io_reason(&e),
    })?;
    let mut reader = pem.as_slice();
    let mut roots = RootCertStore::empty();
    let mut problem = None;
    for cert in rustls_pemfile::certs(&mut reader) {
        match cert {
            Ok(cert) => {
                if let Err(e) = roots.add(cert) {
                    problem = Some(e.to_string());
                }
            }
            Err(e) => problem = Some(e.to_string()),
        }
    }
    if roots.is_empty() {
        return Err(TlsError::CaEmpty {
            path: path.to_path_buf(),
            reason: problem,
        });
    }
    Ok(roots)
}

/// Parse `name` (DNS name or IP address) as a TLS server name.
pub fn server_name(name: &str) -> Result<ServerName<'static>, TlsError> {
    // URL hosts for IPv6 come bracketed; rustls wants the bare address.
    let bare = name.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(bare.to_owned()).map_err(|_| TlsError::BadServerName(name.to_owned()))
}

/// Run the TLS handshake over `tcp` for `name`; on failure return a
/// human-readable reason naming `name` and `target` (what was dialled).
pub async fn handshake(
    config: Arc<ClientConfig>,
    name: &str,
    tcp: TcpStream,
    target: &str,
) -> Result<TlsStream<TcpStream>, TlsError> {
    let server = server_name(name)?;
    TlsConnector::from(config)
        .connect(server, tcp)
        .await
        .map_err(|e| TlsError::Handshake(describe_handshake_error(&e, name, target)))
}

/// Turn a handshake I/O error into a sentence naming the server.
pub fn describe_handshake_error(err: &io::Error, name: &str, target: &str) -> String {
    let rustls_err = err
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match rustls_err {
        Some(rustls::Error::InvalidCertificate(cert)) => describe_cert_error(cert, name, target),
        Some(other) => format!("TLS handshake with {target} (as {name}) failed: {other}"),
        None => format!(
            "TLS handshake with {target} (as {name}) failed: {}",
            super::io_reason(err)
        ),
    }
}

/// Wording for certificate verification failures.
fn describe_cert_error(err: &CertificateError, name: &str, target: &str) -> String {
    match err {
        CertificateError::NotValidForNameContext { presented, .. } => {
            let names: Vec<String> = presented.iter().map(|n| bare_san(n)).collect();
            let why = if names.is_empty() {
                "it names no subjectAltName at all".to_owned()
            } else {
                format!("it is only valid for {}", names.join(", "))
            };
            format!("TLS: certificate not valid for {name}: {why} (from {target})")
        }
        CertificateError::NotValidForName => {
            format!("TLS: certificate not valid for {name}: {err} (from {target})")
        }
        CertificateError::UnknownIssuer => format!(
            "TLS: certificate of {name} from {target} is not trusted: issuer unknown (wrong or missing ca_file?)"
        ),
        _ => format!("TLS: certificate of {name} from {target} rejected: {err}"),
    }
}

/// `DnsName("x")` / `IpAddress(1.2.3.4)` (webpki's rendering) -> `x` / `1.2.3.4`.
fn bare_san(name: &str) -> String {
    let inner = name
        .strip_prefix("DnsName(\"")
        .and_then(|n| n.strip_suffix("\")"))
        .or_else(|| {
            name.strip_prefix("IpAddress(")
                .and_then(|n| n.strip_suffix(')'))
        });
    inner.unwrap_or(name).to_owned()
}

/// The explicit `insecure = true` verifier: accepts any certificate but still
/// checks handshake signatures, so the session keys are at least bound to the
/// certificate presented.
#[derive(Debug)]
struct AcceptAnyCert {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn san_names_are_unwrapped() {
        assert_eq!(bare_san(r#"DnsName("*.svc.example")"#), "*.svc.example");
        assert_eq!(bare_san("IpAddress(127.0.0.1)"), "127.0.0.1");
        assert_eq!(bare_san("other"), "other");
    }

    #[test]
    fn server_names_accept_dns_and_ip() {
        assert!(server_name("mcr.svc.mcp.metacircular.net").is_ok());
        assert!(server_name("127.0.0.1").is_ok());
        assert!(server_name("[::1]").is_ok());
        assert!(server_name("not a name").is_err());
    }

    #[tokio::test]
    async fn missing_ca_file_names_the_path() {
        let opts = TlsOptions {
            ca_file: Some(PathBuf::from("/nonexistent/ca.pem")),
            insecure: false,
            server_name: None,
        };
        let err = client_config(&opts, &[])
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    }

    #[tokio::test]
    async fn non_pem_ca_file_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let opts = TlsOptions {
            ca_file: Some(path),
            insecure: false,
            server_name: None,
        };
        let err = client_config(&opts, &[])
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("no usable PEM certificate"), "{err}");
    }
}
