//! `kind = "grpc"`: a `grpc.health.v1.Health/Check` call through a tonic
//! channel, plaintext (h2c) or over TLS from our shared [`super::tls`] setup.
//!
//! We dial (and, for TLS, handshake) ourselves first so connection and
//! certificate problems get precise wording, then hand the ready stream to
//! tonic through a one-shot connector.

use std::future::{ready, Ready};
use std::io;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tonic::codegen::http::Uri;
use tonic::codegen::Service;
use tonic::transport::Endpoint;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use super::{connect_tcp, error_chain, tls, Failed, Progress};
use crate::config::{GrpcCheck, OperatorWait};

/// Call Health/Check on `check.address` and map the serving status.
/// A health status or call code named in `wait.grpc_status` means
/// "waiting for an operator".
pub(super) async fn probe(
    check: &GrpcCheck,
    wait: Option<&OperatorWait>,
    progress: &Progress,
) -> Result<String, Failed> {
    let result = dial(check, progress).await;
    match (result, wait) {
        (Err(Answer::Status(name, why)), Some(w)) if w.grpc_status.contains(&name) => {
            Err(Failed::waiting(&why, &w.remedy))
        }
        (Ok(s), _) => Ok(s),
        (Err(Answer::Status(_, why)), _) => Err(Failed::from(why)),
        (Err(Answer::Failed(f)), _) => Err(f),
    }
}

/// A failed call: a health status or call code (its proto name and the
/// reason), or a connection problem.
enum Answer {
    Status(String, String),
    Failed(Failed),
}

impl From<Failed> for Answer {
    fn from(f: Failed) -> Self {
        Answer::Failed(f)
    }
}

async fn dial(check: &GrpcCheck, progress: &Progress) -> Result<String, Answer> {
    let addr = check.address;
    let tcp = connect_tcp(addr, progress).await?;
    match &check.tls {
        None => call(tcp, check, &addr.ip().to_string(), progress).await,
        Some(opts) => {
            let ip = addr.ip().to_string();
            let name = opts.server_name.as_deref().unwrap_or(&ip);
            let config = tls::probe_config(opts, &[b"h2"], addr, name)
                .await
                .map_err(|e| Failed::from(e.to_string()))?;
            let target = addr.to_string();
            progress.waiting_for(format!("TLS handshake with {target}"));
            let stream = tls::handshake(config, name, tcp, &target)
                .await
                .map_err(|e| Failed::from(e.to_string()))?;
            call(stream, check, name, progress).await
        }
    }
}

/// Run the RPC over an already-connected stream.
async fn call<S>(
    io: S,
    check: &GrpcCheck,
    authority_host: &str,
    progress: &Progress,
) -> Result<String, Answer>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let addr = check.address;
    let for_service = if check.service.is_empty() {
        String::new()
    } else {
        format!(" for service `{}`", check.service)
    };
    // The URI only supplies :authority and :scheme; the stream is already dialled.
    let host = if authority_host.contains(':') {
        format!("[{authority_host}]")
    } else {
        authority_host.to_owned()
    };
    let endpoint = Endpoint::from_shared(format!("http://{host}:{}", addr.port()))
        .map_err(|e| Failed::from(format!("gRPC: bad endpoint for {addr}: {e}")))?;

    progress.waiting_for(format!("HTTP/2 handshake with {addr}"));
    let channel = endpoint
        .connect_with_connector(OneShot::new(io))
        .await
        .map_err(|e| {
            Failed::from(format!(
                "gRPC connection to {addr} failed: {}",
                error_chain(&e)
            ))
        })?;

    progress.waiting_for(format!("gRPC health answer from {addr}{for_service}"));
    let mut client = HealthClient::new(channel);
    let response = client
        .check(HealthCheckRequest {
            service: check.service.clone(),
        })
        .await;
    match response {
        Ok(response) => match response.into_inner().status() {
            ServingStatus::Serving => Ok("SERVING".to_owned()),
            other => Err(Answer::Status(
                other.as_str_name().to_owned(),
                format!(
                    "gRPC health {} from {addr}{for_service}",
                    other.as_str_name()
                ),
            )),
        },
        Err(status) => Err(Answer::Status(
            code_name(status.code()),
            match status.code() {
                Code::NotFound => {
                    format!("gRPC health: service `{}` unknown to {addr}", check.service)
                }
                Code::Unimplemented => {
                    format!("gRPC: {addr} does not implement grpc.health.v1.Health/Check")
                }
                code => {
                    let mut parts = vec![format!("{code:?}")];
                    if !status.message().is_empty() {
                        parts.push(status.message().to_owned());
                    }
                    if let Some(source) = std::error::Error::source(&status) {
                        parts.push(error_chain(source));
                    }
                    let mut why = dedupe(&parts);
                    if check.tls.is_none() && status.message().contains("transport error") {
                        why.push_str(" (plaintext: does the server expect TLS?)");
                    }
                    format!("gRPC health Check to {addr}{for_service} failed: {why}")
                }
            },
        )),
    }
}

/// The proto name of a call code (`Unavailable` -> `UNAVAILABLE`).
fn code_name(code: Code) -> String {
    let mut out = String::new();
    for (i, c) in format!("{code:?}").chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// Join ": "-separated pieces, dropping pieces already said.
fn dedupe(parts: &[String]) -> String {
    let mut seen: Vec<&str> = Vec::new();
    for piece in parts.iter().flat_map(|p| p.split(": ")) {
        if !seen.contains(&piece) {
            seen.push(piece);
        }
    }
    seen.join(": ")
}

/// A connector that yields one pre-established stream, then refuses.
struct OneShot<S>(Arc<Mutex<Option<S>>>);

impl<S> OneShot<S> {
    fn new(io: S) -> Self {
        OneShot(Arc::new(Mutex::new(Some(io))))
    }
}

impl<S> Service<Uri> for OneShot<S> {
    type Response = TokioIo<S>;
    type Error = io::Error;
    type Future = Ready<Result<TokioIo<S>, io::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let io = self.0.lock().unwrap_or_else(PoisonError::into_inner).take();
        ready(io.map(TokioIo::new).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotConnected,
                "connection lost (not redialled within one probe)",
            )
        }))
    }
}
