//! The webhook action: one HTTPS POST of the event JSON
//! (`content-type: application/json`) to `[watch] webhook`, trusting
//! `webhook_ca_file` or the built-in web roots (the TLS setup of the checks,
//! `crate::check::tls`), within `webhook_timeout`. Any 2xx answer is success.

use std::path::Path;
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

/// POSTs `ev` to `url`. Never fails: the result says what happened.
pub async fn post(
    url: &Url,
    ca_file: Option<&Path>,
    timeout: Duration,
    ev: &Event,
) -> ActionResult {
    let (ok, detail) = match tokio::time::timeout(timeout, post_inner(url, ca_file, ev)).await {
        Ok(Ok(status)) if (200..300).contains(&status) => {
            (true, format!("HTTP {status} from {url}"))
        }
        Ok(Ok(status)) => (false, format!("HTTP {status} from {url}")),
        Ok(Err(why)) => (false, why),
        Err(_) => (
            false,
            format!("no answer from {url} within {}s", timeout.as_secs_f64()),
        ),
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

async fn post_inner(url: &Url, ca_file: Option<&Path>, ev: &Event) -> Result<u16, String> {
    if url.scheme() != "https" {
        return Err(format!("webhook {url}: only https URLs are supported"));
    }
    let host = url
        .host_str()
        .ok_or_else(|| format!("webhook {url} has no host"))?;
    let port = url
        .port_or_known_default()
        .ok_or_else(|| format!("webhook {url} has no port"))?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addr = tokio::net::lookup_host((bare, port))
        .await
        .map_err(|e| format!("webhook: cannot resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("webhook: {host} resolves to no address"))?;
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("webhook: cannot connect to {addr}: {e}"))?;
    let opts = TlsOptions {
        ca_file: ca_file.map(Path::to_path_buf),
        insecure: false,
        server_name: None,
    };
    let config = tls::client_config(&opts, &[b"http/1.1"])
        .await
        .map_err(|e| e.to_string())?;
    let target = url.to_string();
    let stream = tls::handshake(config, host, tcp, &target)
        .await
        .map_err(|e| e.to_string())?;

    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("webhook: HTTP handshake with {url} failed: {e}"))?;
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
        .map_err(|e| format!("webhook: POST to {url} failed: {e}"));
    conn.abort();
    result
}
