//! HTTP/1.1 answers (hyper): `/v1/health` -> 200 `{"status":"ok"}`, `/v2/` -> 200 `{}`,
//! anything else -> 404; fault `500` -> 500 for every path; sealed -> 503
//! `{"status":"sealed","sealed":true}` for every path; fault `hang` -> the request is
//! never answered (the connection is dropped once the fault is lifted).

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use crate::fault::{self, Fault};

/// Returned instead of a response when a hung request is released: hyper then closes the
/// connection without writing anything.
#[derive(Debug)]
struct HungUp;

impl std::fmt::Display for HungUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("request hung by fault, connection dropped")
    }
}

impl std::error::Error for HungUp {}

/// The status and JSON body for a path when no fault is active.
pub(crate) fn route(path: &str) -> (StatusCode, &'static str) {
    match path {
        "/v1/health" => (StatusCode::OK, "{\"status\":\"ok\"}"),
        "/v2/" => (StatusCode::OK, "{}"),
        _ => (StatusCode::NOT_FOUND, "{\"error\":\"not found\"}"),
    }
}

async fn answer(
    req: Request<Incoming>,
    faults: watch::Receiver<Fault>,
) -> Result<Response<Full<Bytes>>, HungUp> {
    if fault::is_hang(&faults) {
        fault::hang_released(&faults).await;
        return Err(HungUp);
    }
    let (status, body) = if fault::is_500(&faults) {
        (StatusCode::INTERNAL_SERVER_ERROR, "{\"status\":\"fault\"}")
    } else if fault::is_sealed(&faults) {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "{\"status\":\"sealed\",\"sealed\":true}",
        )
    } else {
        route(req.uri().path())
    };
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(resp)
}

/// Serves HTTP/1.1 on one accepted connection (plain or TLS) until the peer closes it.
/// Connection errors are not logged (no per-request log lines).
pub(crate) async fn serve<IO>(io: IO, faults: watch::Receiver<Fault>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req| answer(req, faults.clone()));
    // The timer lets hyper enforce its header read timeout on stalled clients.
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .serve_connection(TokioIo::new(io), svc)
        .await;
}
