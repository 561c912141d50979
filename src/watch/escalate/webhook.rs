//! The webhook action: one HTTPS POST of the event JSON
//! (`content-type: application/json`) to `[watch] webhook`, within
//! `webhook_timeout`. Any 2xx answer is success.
//!
//! Trust: `webhook_ca_file` when set; else the system's trust store
//! (`$SSL_CERT_FILE` if set, else the first of [`SYSTEM_CA_BUNDLES`] that
//! holds certificates: Debian's and NixOS's
//! `/etc/ssl/certs/ca-certificates.crt`, NixOS's and Fedora's
//! `/etc/ssl/certs/ca-bundle.crt`, ...); only when there is none, the web
//! roots built into mcrecover (`webpki-roots`).
//!
//! The URL often carries a credential (user info, a token in the path or
//! the query). It is never logged or reported: results and log lines show
//! [`redact`]`(url)`, `scheme://host[:port]/…`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE, HOST, USER_AGENT};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use url::Url;

use super::{Action, ActionResult, Event};
use crate::check::tls;
use crate::config::TlsOptions;

/// Where the system's trust store is looked for, in this order, after
/// `$SSL_CERT_FILE`: the first of these files that holds a certificate is
/// used.
pub const SYSTEM_CA_BUNDLES: &[&str] = &[
    // Debian, Ubuntu, NixOS, Arch
    "/etc/ssl/certs/ca-certificates.crt",
    // NixOS, Fedora, openSUSE
    "/etc/ssl/certs/ca-bundle.crt",
    // RHEL, CentOS
    "/etc/pki/tls/certs/ca-bundle.crt",
    // Alpine, macOS-style
    "/etc/ssl/cert.pem",
];

/// A system CA bundle larger than this is not read.
const MAX_BUNDLE_BYTES: u64 = 16 << 20;

/// `scheme://host[:port]/…` (or `scheme://host[:port]/` when the URL has no
/// path beyond `/`, no query and no fragment): the webhook URL without its
/// user info, path, query and fragment, which may hold a credential.
pub fn redact(url: &Url) -> String {
    let host = url.host_str().unwrap_or("?");
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    let bare = url.path() == "/" && url.query().is_none() && url.fragment().is_none();
    format!(
        "{}://{host}{port}/{}",
        url.scheme(),
        if bare { "" } else { "…" }
    )
}

/// What the TLS connection trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Trust {
    /// `webhook_ca_file`.
    CaFile(PathBuf),
    /// The system trust store, read from this file.
    System(PathBuf),
    /// No system trust store found: the bundled web roots.
    Bundled,
}

impl std::fmt::Display for Trust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Trust::CaFile(p) => write!(f, "webhook_ca_file {}", p.display()),
            Trust::System(p) => write!(f, "the system trust store {}", p.display()),
            Trust::Bundled => write!(
                f,
                "the web roots built into mcrecover (no system trust store found)"
            ),
        }
    }
}

/// The system's trust store: `$SSL_CERT_FILE`, else the first of
/// [`SYSTEM_CA_BUNDLES`] holding at least one certificate.
async fn system_roots() -> Option<(PathBuf, rustls::RootCertStore)> {
    let env = std::env::var_os("SSL_CERT_FILE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    for path in env
        .into_iter()
        .chain(SYSTEM_CA_BUNDLES.iter().map(PathBuf::from))
    {
        let Ok(meta) = tokio::fs::metadata(&path).await else {
            continue;
        };
        if !meta.is_file() || meta.len() > MAX_BUNDLE_BYTES {
            continue;
        }
        let Ok(pem) = tokio::fs::read(&path).await else {
            continue;
        };
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut pem.as_slice()).flatten() {
            let _ = roots.add(cert);
        }
        if !roots.is_empty() {
            return Some((path, roots));
        }
    }
    None
}

/// The TLS client configuration: `webhook_ca_file`, else the system trust
/// store, else the bundled roots.
async fn client_config(
    ca_file: Option<&Path>,
) -> Result<(Arc<rustls::ClientConfig>, Trust), String> {
    let alpn: &[&[u8]] = &[b"http/1.1"];
    if let Some(path) = ca_file {
        let opts = TlsOptions {
            ca_file: Some(path.to_path_buf()),
            insecure: false,
            server_name: None,
        };
        let config = tls::client_config(&opts, alpn)
            .await
            .map_err(|e| e.to_string())?;
        return Ok((config, Trust::CaFile(path.to_path_buf())));
    }
    match system_roots().await {
        Some((path, roots)) => {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("TLS: cannot build client configuration: {e}"))?
                .with_root_certificates(roots)
                .with_no_client_auth();
            config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            Ok((Arc::new(config), Trust::System(path)))
        }
        None => {
            tracing::warn!(
                "escalation webhook: no system trust store found ({}): trusting the web roots built into mcrecover",
                SYSTEM_CA_BUNDLES.join(", ")
            );
            let opts = TlsOptions {
                ca_file: None,
                insecure: false,
                server_name: None,
            };
            let config = tls::client_config(&opts, alpn)
                .await
                .map_err(|e| e.to_string())?;
            Ok((config, Trust::Bundled))
        }
    }
}

/// POSTs `ev` to `url`. Never fails: the result says what happened. The
/// result and the log name the URL only as [`redact`] does.
pub async fn post(
    url: &Url,
    ca_file: Option<&Path>,
    timeout: Duration,
    ev: &Event,
) -> ActionResult {
    let shown = redact(url);
    let url_text = url.as_str();
    let (ok, detail) =
        match tokio::time::timeout(timeout, post_inner(url, &shown, ca_file, ev)).await {
            Ok(Ok(status)) if (200..300).contains(&status) => {
                (true, format!("HTTP {status} from {shown}"))
            }
            Ok(Ok(status)) => (false, format!("HTTP {status} from {shown}")),
            Ok(Err(why)) => (false, why),
            Err(_) => (
                false,
                format!("no answer from {shown} within {}s", timeout.as_secs_f64()),
            ),
        };
    // Belt and braces: an error text that quoted the URL (or a part of it
    // longer than the host) loses it.
    let detail = if url_text.len() > shown.len() && detail.contains(url_text) {
        detail.replace(url_text, &shown)
    } else {
        detail
    };
    if ok {
        tracing::info!(service = %ev.service, event_id = %ev.id, "escalation webhook: {detail}");
    } else {
        tracing::warn!(service = %ev.service, event_id = %ev.id, "escalation webhook: {detail}");
    }
    ActionResult {
        action: Action::Webhook,
        ok,
        detail,
    }
}

async fn post_inner(
    url: &Url,
    shown: &str,
    ca_file: Option<&Path>,
    ev: &Event,
) -> Result<u16, String> {
    if url.scheme() != "https" {
        return Err(format!("webhook {shown}: only https URLs are supported"));
    }
    let host = url
        .host_str()
        .ok_or_else(|| format!("webhook {shown} has no host"))?;
    let port = url
        .port_or_known_default()
        .ok_or_else(|| format!("webhook {shown} has no port"))?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addr = tokio::net::lookup_host((bare, port))
        .await
        .map_err(|e| format!("webhook: cannot resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("webhook: {host} resolves to no address"))?;
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("webhook: cannot connect to {addr}: {e}"))?;
    let (config, trust) = client_config(ca_file).await?;
    let stream = tls::handshake(config, host, tcp, shown)
        .await
        .map_err(|e| format!("{e} (trusting {trust})"))?;

    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("webhook: HTTP handshake with {shown} failed: {e}"))?;
    let conn = tokio::spawn(connection);
    let body = serde_json::to_vec(ev).map_err(|e| format!("cannot encode the event: {e}"))?;
    let host_header = match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    };
    let path = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    };
    let request = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(
            HOST,
            HeaderValue::from_str(&host_header).map_err(|e| format!("webhook: Host: {e}"))?,
        )
        .header(CONTENT_TYPE, "application/json")
        .header(USER_AGENT, concat!("mcrecover/", env!("CARGO_PKG_VERSION")))
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("webhook: cannot build the request: {e}"))?;
    let result = sender
        .send_request(request)
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| format!("webhook: POST to {shown} failed: {e}"));
    conn.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(u: &str) -> String {
        redact(&Url::parse(u).unwrap_or_else(|e| panic!("{u}: {e}")))
    }

    #[test]
    fn credentials_paths_and_queries_are_not_shown() {
        assert_eq!(
            r("https://user:secret@alerts.example:8443/hooks/T0KEN?token=abc#x"),
            "https://alerts.example:8443/…"
        );
        assert_eq!(
            r("https://alerts.example/services/T000/B000/XXXX"),
            "https://alerts.example/…"
        );
        assert_eq!(r("https://alerts.example/?k=v"), "https://alerts.example/…");
        assert_eq!(r("https://alerts.example"), "https://alerts.example/");
        assert_eq!(r("https://[::1]:9/a"), "https://[::1]:9/…");
        assert_eq!(r("https://token@10.0.0.1/"), "https://10.0.0.1/");
    }
}
