//! `kind = "http"`: one GET over a hyper HTTP/1.1 client connection on a
//! stream we dial ourselves, so `connect_to` behaves like curl `--resolve`:
//! dial `connect_to` but speak to the URL host (SNI, certificate name and
//! `Host:` header), unless `tls.server_name` overrides that name.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::header::{HeaderValue, HOST, USER_AGENT};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use url::{Host, Url};

use super::{connect_tcp, error_chain, tls, AbortOnDrop, Failed, Progress};
use crate::config::{HttpCheck, OperatorWait, TlsOptions};

/// At most this much of the body is read when looking for `body_contains`.
const BODY_LIMIT: usize = 64 * 1024;

/// GET `check.url` and evaluate status and body (and `wait`: the answers
/// that mean "waiting for an operator").
pub(super) async fn probe(
    check: &HttpCheck,
    wait: Option<&OperatorWait>,
    progress: &Progress,
) -> Result<String, Failed> {
    let url = &check.url;
    let https = match url.scheme() {
        "https" => true,
        "http" => false,
        other => {
            return Err(Failed::from(format!(
                "HTTP: unsupported URL scheme `{other}` in {url}"
            )))
        }
    };
    let host = url
        .host()
        .ok_or_else(|| Failed::from(format!("HTTP: URL {url} has no host")))?;
    let port = url
        .port_or_known_default()
        .ok_or_else(|| Failed::from(format!("HTTP: URL {url} has no port")))?;
    let addr = match check.connect_to {
        Some(addr) => addr,
        None => resolve(&host, port, progress).await?,
    };
    // The name we speak to: server_name override, else the URL host.
    let url_host = url.host_str().unwrap_or_default();
    let name = check.tls.server_name.as_deref().unwrap_or(url_host);
    let host_header = match url.port() {
        Some(p) => format!("{name}:{p}"),
        None => name.to_owned(),
    };

    let tcp = connect_tcp(addr, progress).await?;
    let target = describe_target(url, check.connect_to);
    if https {
        let stream = tls_connect(&check.tls, name, addr, tcp, &target, progress).await?;
        exchange(stream, check, wait, &host_header, &target, progress).await
    } else {
        exchange(tcp, check, wait, &host_header, &target, progress).await
    }
}

/// "https://x/v1/health" or "https://x/v1/health (via 127.0.0.1:443)".
fn describe_target(url: &Url, connect_to: Option<SocketAddr>) -> String {
    match connect_to {
        Some(addr) => format!("{url} (via {addr})"),
        None => url.to_string(),
    }
}

/// Resolve the URL host to the first address.
async fn resolve(host: &Host<&str>, port: u16, progress: &Progress) -> Result<SocketAddr, Failed> {
    match host {
        Host::Ipv4(ip) => Ok(SocketAddr::from((*ip, port))),
        Host::Ipv6(ip) => Ok(SocketAddr::from((*ip, port))),
        Host::Domain(name) => {
            progress.waiting_for(format!("resolving {name}"));
            let mut addrs = tokio::net::lookup_host((*name, port)).await.map_err(|e| {
                Failed::from(format!(
                    "HTTP: cannot resolve {name}: {}",
                    super::io_reason(&e)
                ))
            })?;
            addrs
                .next()
                .ok_or_else(|| Failed::from(format!("HTTP: {name} resolves to no address")))
        }
    }
}

/// TLS handshake offering HTTP/1.1 (resuming the last session with the
/// server at `addr` when it allows).
async fn tls_connect(
    opts: &TlsOptions,
    name: &str,
    addr: SocketAddr,
    tcp: tokio::net::TcpStream,
    target: &str,
    progress: &Progress,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, Failed> {
    let config = tls::probe_config(opts, &[b"http/1.1"], addr, name)
        .await
        .map_err(|e| Failed::from(e.to_string()))?;
    progress.waiting_for(format!("TLS handshake with {target}"));
    tls::handshake(config, name, tcp, target)
        .await
        .map_err(|e| Failed::from(e.to_string()))
}

/// Send the GET over `io` and check the response.
async fn exchange<S>(
    io: S,
    check: &HttpCheck,
    wait: Option<&OperatorWait>,
    host_header: &str,
    target: &str,
    progress: &Progress,
) -> Result<String, Failed>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let url = &check.url;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| {
            Failed::from(format!(
                "HTTP handshake with {target} failed: {}",
                error_chain(&e)
            ))
        })?;
    // The connection task dies with this probe (also when it times out).
    let _conn = AbortOnDrop(tokio::spawn(connection).abort_handle());

    let path = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    };
    let host = HeaderValue::from_str(host_header)
        .map_err(|_| Failed::from(format!("HTTP: `{host_header}` is not a valid Host header")))?;
    let request = Request::builder()
        .method(Method::GET)
        .uri(path)
        .header(HOST, host)
        .header(USER_AGENT, concat!("mcrecover/", env!("CARGO_PKG_VERSION")))
        .body(Empty::<Bytes>::new())
        .map_err(|e| Failed::from(format!("HTTP: cannot build request for {url}: {e}")))?;

    progress.waiting_for(format!("HTTP response from {target}"));
    let response = sender.send_request(request).await.map_err(|e| {
        Failed::from(format!(
            "HTTP request to {target} failed: {}",
            error_chain(&e)
        ))
    })?;
    let status = response.status().as_u16();
    if let Some(w) = wait.filter(|w| w.status.is_empty() || w.status.contains(&status)) {
        let waiting = || Failed::waiting(&format!("HTTP {status} from {target}"), &w.remedy);
        if w.body_contains.is_none() && w.json_true.is_none() {
            return Err(waiting());
        }
        progress.waiting_for(format!("body of {target}"));
        let body = read_body(response.into_body(), target, None).await?;
        if wait_body_matches(w, &body) {
            return Err(waiting());
        }
        return judge(check, status, &body, target);
    }
    if !check.status.accepts(status) {
        return Err(Failed::from(format!("HTTP {status} from {target}")));
    }
    let Some(needle) = &check.body_contains else {
        return Ok(format!("HTTP {status}"));
    };
    progress.waiting_for(format!("body of {target}"));
    let body = read_body(response.into_body(), target, Some(needle.as_bytes())).await?;
    judge(check, status, &body, target)
}

/// At most [`BODY_LIMIT`] bytes of `body`; no more once they contain
/// `until` (a health endpoint that streams must not keep the probe waiting
/// for its end).
async fn read_body(
    mut body: hyper::body::Incoming,
    target: &str,
    until: Option<&[u8]>,
) -> Result<Vec<u8>, Failed> {
    let mut buf: Vec<u8> = Vec::new();
    while buf.len() < BODY_LIMIT && !until.is_some_and(|n| contains(&buf, n)) {
        let Some(frame) = body.frame().await else {
            break;
        };
        let frame = frame.map_err(|e| {
            Failed::from(format!(
                "HTTP: reading body of {target} failed: {}",
                error_chain(&e)
            ))
        })?;
        if let Ok(data) = frame.into_data() {
            buf.extend_from_slice(&data);
        }
    }
    buf.truncate(BODY_LIMIT);
    Ok(buf)
}

/// Status and (already read) body against the check's expectations.
fn judge(check: &HttpCheck, status: u16, body: &[u8], target: &str) -> Result<String, Failed> {
    if !check.status.accepts(status) {
        return Err(Failed::from(format!("HTTP {status} from {target}")));
    }
    match &check.body_contains {
        Some(needle) if !contains(body, needle.as_bytes()) => Err(Failed::from(format!(
            "body of {target} does not contain `{needle}` (HTTP {status}, {} bytes read)",
            body.len()
        ))),
        _ => Ok(format!("HTTP {status}")),
    }
}

/// Whether a body matches the body conditions of an `operator_wait` rule
/// (`body_contains`; `json_true`: a top-level field, or a JSON pointer
/// starting with `/`, whose value is `true`).
fn wait_body_matches(w: &OperatorWait, body: &[u8]) -> bool {
    let text_ok = w
        .body_contains
        .as_ref()
        .is_none_or(|n| contains(body, n.as_bytes()));
    let json_ok = w.json_true.as_ref().is_none_or(|field| {
        serde_json::from_slice::<serde_json::Value>(body).is_ok_and(|v| {
            let found = if field.starts_with('/') {
                v.pointer(field)
            } else {
                v.get(field)
            };
            found == Some(&serde_json::Value::Bool(true))
        })
    });
    text_ok && json_ok
}

/// Whether `haystack` contains `needle` as a byte substring.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substring_search() {
        assert!(contains(br#"{"status":"ok"}"#, br#""status":"ok""#));
        assert!(!contains(b"{}", br#""status":"ok""#));
        assert!(contains(b"", b""));
    }

    #[test]
    fn wait_body_conditions() {
        let w = OperatorWait {
            json_true: Some("sealed".into()),
            ..OperatorWait::default()
        };
        assert!(wait_body_matches(&w, br#"{"sealed": true, "x": 1}"#));
        assert!(!wait_body_matches(&w, br#"{"sealed": false}"#));
        assert!(!wait_body_matches(&w, b"sealed: true"));
        let w = OperatorWait {
            json_true: Some("/health/sealed".into()),
            body_contains: Some("metacrypt".into()),
            ..OperatorWait::default()
        };
        assert!(wait_body_matches(
            &w,
            br#"{"name":"metacrypt","health":{"sealed":true}}"#
        ));
        assert!(!wait_body_matches(
            &w,
            br#"{"name":"other","health":{"sealed":true}}"#
        ));
    }
}
