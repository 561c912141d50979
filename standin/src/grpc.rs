//! gRPC health (`grpc.health.v1.Health`, tonic-health's generated service): SERVING for ""
//! and for any service name; fault `500` -> NOT_SERVING; fault `hang` -> the call never
//! completes. Served by tonic over connections the accept loop hands it (plain or TLS).

use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};
use tokio_stream::{Stream, StreamExt};
use tonic::transport::server::Connected;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

use crate::fault::{self, Fault};
use crate::log;

/// The serving status for the current fault.
pub(crate) fn status_for(fault: &Fault) -> ServingStatus {
    if matches!(fault, Fault::Error500 | Fault::Sealed) {
        ServingStatus::NotServing
    } else {
        ServingStatus::Serving
    }
}

struct StandinHealth {
    faults: watch::Receiver<Fault>,
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

fn reply(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse {
        status: status as i32,
    }
}

#[tonic::async_trait]
impl Health for StandinHealth {
    async fn check(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        if fault::is_hang(&self.faults) {
            fault::hang_released(&self.faults).await;
            return Err(Status::unavailable("standin: call hung by fault"));
        }
        let status = status_for(&self.faults.borrow());
        Ok(Response::new(reply(status)))
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let mut faults = self.faults.clone();
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            let mut last = None;
            loop {
                let fault = faults.borrow_and_update().clone();
                if fault != Fault::Hang {
                    let status = status_for(&fault);
                    if last != Some(status) {
                        if tx.send(Ok(reply(status))).await.is_err() {
                            return;
                        }
                        last = Some(status);
                    }
                }
                tokio::select! {
                    changed = faults.changed() => if changed.is_err() { return },
                    () = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

/// Starts a tonic server for one listener and returns the sender the accept loop pushes
/// connections into.
pub(crate) fn start<IO>(faults: watch::Receiver<Fault>, port: u16) -> mpsc::Sender<IO>
where
    IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
{
    let (tx, rx) = mpsc::channel::<IO>(64);
    let incoming = tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok::<IO, std::io::Error>);
    let svc = HealthServer::new(StandinHealth { faults });
    tokio::spawn(async move {
        if let Err(e) = tonic::transport::Server::builder()
            .serve_with_incoming(svc, incoming)
            .await
        {
            log::event(
                "error",
                &format!("kind=grpc port={port} server_stopped={e}"),
            );
        }
    });
    tx
}
