//! DNS answers (hickory-server): A for names under `svc.mcp.metacircular.net.` ->
//! 100.95.252.120, any other A -> 93.184.216.34, every other type -> empty NOERROR.
//! Fault `500` -> SERVFAIL; fault `hang` -> no answer at all.

use std::net::Ipv4Addr;
use std::str::FromStr;
use std::time::Duration;

use hickory_proto::op::{Edns, Header, Metadata, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use hickory_server::Server;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;

use crate::fault::{self, Fault};
use crate::log;

/// Address for names under the platform's service zone.
pub(crate) const SERVICE_ADDR: Ipv4Addr = Ipv4Addr::new(100, 95, 252, 120);
/// Address for every other name.
pub(crate) const OTHER_ADDR: Ipv4Addr = Ipv4Addr::new(93, 184, 216, 34);
/// The platform's service zone.
pub(crate) const SERVICE_ZONE: &str = "svc.mcp.metacircular.net.";
const TTL: u32 = 60;

/// The address an A query for `name` is answered with.
pub(crate) fn address_for(zone: &LowerName, name: &LowerName) -> Ipv4Addr {
    if zone.zone_of(name) && zone != name {
        SERVICE_ADDR
    } else {
        OTHER_ADDR
    }
}

struct Handler {
    faults: watch::Receiver<Fault>,
    zone: LowerName,
}

fn response_edns(request: &Request) -> Option<Edns> {
    request.edns.as_ref().map(|req| {
        let mut e = Edns::new();
        e.set_max_payload(req.max_payload().max(512));
        e.set_version(0);
        e
    })
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let mut unsent = Metadata::response_from_request(&request.metadata);
        unsent.response_code = ResponseCode::ServFail;
        let unsent = ResponseInfo::from(Header {
            metadata: unsent,
            counts: Default::default(),
        });
        if fault::is_hang(&self.faults) {
            fault::hang_released(&self.faults).await;
            return unsent;
        }
        let edns = response_edns(request);
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(e) = edns.as_ref() {
            builder.edns(e);
        }
        let info = match request.request_info() {
            Ok(info) => info,
            Err(_) => {
                let msg = builder.error_msg(&request.metadata, ResponseCode::FormErr);
                return response_handle.send_response(msg).await.unwrap_or(unsent);
            }
        };
        if fault::is_500(&self.faults) {
            let msg = builder.error_msg(&request.metadata, ResponseCode::ServFail);
            return response_handle.send_response(msg).await.unwrap_or(unsent);
        }
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.authoritative = true;
        metadata.recursion_available = true;
        metadata.response_code = ResponseCode::NoError;
        let query = info.query;
        let answers: Vec<Record> = match query.query_type() {
            RecordType::A => {
                let addr = address_for(&self.zone, query.name());
                vec![Record::from_rdata(
                    query.original().name().clone(),
                    TTL,
                    RData::A(A(addr)),
                )]
            }
            _ => Vec::new(),
        };
        let msg = builder.build(metadata, answers.iter(), [], [], []);
        response_handle.send_response(msg).await.unwrap_or(unsent)
    }
}

/// Serves DNS on an already bound UDP socket and TCP listener (same port) until the process ends.
pub(crate) async fn serve(
    udp: UdpSocket,
    tcp: TcpListener,
    faults: watch::Receiver<Fault>,
    port: u16,
) {
    let zone = match Name::from_str(SERVICE_ZONE) {
        Ok(n) => LowerName::from(n),
        Err(e) => {
            log::event("error", &format!("kind=dns port={port} error={e:?}"));
            return;
        }
    };
    let mut server = Server::new(Handler { faults, zone });
    server.register_socket(udp);
    server.register_listener(tcp, Duration::from_secs(10), 64);
    if let Err(e) = server.block_until_done().await {
        log::event("error", &format!("kind=dns port={port} server_stopped={e}"));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn lower(s: &str) -> LowerName {
        LowerName::from(Name::from_str(s).unwrap())
    }

    #[test]
    fn service_zone_gets_platform_address() {
        let zone = lower(SERVICE_ZONE);
        assert_eq!(
            address_for(&zone, &lower("mcq.svc.mcp.metacircular.net.")),
            SERVICE_ADDR
        );
        assert_eq!(
            address_for(&zone, &lower("A.B.SVC.mcp.metacircular.net.")),
            SERVICE_ADDR
        );
        assert_eq!(
            address_for(&zone, &lower("svc.mcp.metacircular.net.")),
            OTHER_ADDR
        );
        assert_eq!(address_for(&zone, &lower("google.com.")), OTHER_ADDR);
        assert_eq!(
            address_for(&zone, &lower("mcias.metacircular.net.")),
            OTHER_ADDR
        );
    }
}
