//! The Neighbor gRPC service: thin — it validates through the state machine and maps refusals to
//! `invalid_argument` with the reason, counted by reason.

use std::sync::Arc;

use prost::Message;
use tonic::{Request, Response, Status};
use tracing::warn;
use wuos_proto::MAX_MESSAGE_BYTES;
use wuos_proto::pb;
use wuos_proto::pb::neighbor_server::{Neighbor, NeighborServer};

use crate::daemon::Shared;

pub struct NeighborSvc(Arc<Shared>);

impl std::fmt::Debug for NeighborSvc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NeighborSvc")
    }
}

/// Counts every reply that carries a non-OK gRPC status, by code — including what tonic refuses
/// before a handler runs (undecodable protobuf, a message over the transport limit) — and logs it.
pub fn count_errors(
    metrics: std::sync::Arc<crate::metrics::Metrics>,
) -> impl Fn(tonic::codegen::http::Response<tonic::body::Body>) -> tonic::codegen::http::Response<tonic::body::Body> + Clone
{
    move |resp| {
        let code = resp.headers().get("grpc-status").and_then(|v| v.to_str().ok());
        if let Some(code) = code.filter(|&c| c != "0") {
            let message = resp
                .headers()
                .get("grpc-message")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            tracing::debug!(code, message, "rpc refused");
            metrics.rpc_error(code);
        }
        resp
    }
}

/// The service, with a decoding limit above the protocol's, so that an oversized message reaches
/// the handler and is refused *and counted* there (a larger one is refused by tonic itself).
pub fn neighbor_service(shared: Arc<Shared>) -> NeighborServer<NeighborSvc> {
    NeighborServer::new(NeighborSvc(shared)).max_decoding_message_size(4 * MAX_MESSAGE_BYTES)
}

impl NeighborSvc {
    /// Refuses a message: counted under `label`, logged with the full reason.
    fn refuse(&self, what: &str, label: &str, reason: String) -> Status {
        self.0.metrics.reject(label);
        warn!(message = what, %reason, "refused a protocol message");
        Status::invalid_argument(reason)
    }

    /// A message naming a configured neighbor must come from that neighbor's address; anyone can
    /// write any sender id into a header.
    fn check_peer(&self, what: &str, sender: Option<&str>, peer: Option<std::net::SocketAddr>) -> Result<(), Status> {
        let (Some(sender), Some(peer)) = (sender, peer) else {
            return Ok(());
        };
        let expected = self
            .0
            .cfg
            .neighbors
            .iter()
            .find(|n| n.id == sender)
            .and_then(|n| n.address.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()));
        match expected {
            Some(ip) if ip != peer.ip() => Err(self.refuse(
                what,
                "sender_address",
                format!(
                    "sender address mismatch: {sender} is configured at {ip}, this came from {}",
                    peer.ip()
                ),
            )),
            _ => Ok(()),
        }
    }

    fn check_size(&self, what: &str, len: usize) -> Result<(), Status> {
        self.0.metrics.bytes("received", len);
        if len > MAX_MESSAGE_BYTES {
            return Err(self.refuse(
                what,
                "too_large",
                format!("oversized: {len} bytes, the limit is {MAX_MESSAGE_BYTES}"),
            ));
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl Neighbor for NeighborSvc {
    async fn hello(&self, req: Request<pb::Hello>) -> Result<Response<pb::HelloReply>, Status> {
        let peer = req.remote_addr();
        let hello = req.into_inner();
        self.check_size("hello", hello.encoded_len())?;
        self.check_peer("hello", hello.header.as_ref().map(|h| h.sender.as_str()), peer)?;
        let now = self.0.now_ms();
        let r = self.0.lock().on_hello(now, &hello);
        match r {
            Ok((reply, actions)) => {
                self.0.apply(actions);
                self.0.metrics.bytes("sent", reply.encoded_len());
                Ok(Response::new(reply))
            }
            Err(e) => Err(self.refuse("hello", e.reason(), e.to_string())),
        }
    }

    async fn flood(&self, req: Request<pb::FloodRequest>) -> Result<Response<pb::FloodReply>, Status> {
        let peer = req.remote_addr();
        let flood = req.into_inner();
        self.check_size("flood", flood.encoded_len())?;
        self.check_peer("flood", flood.header.as_ref().map(|h| h.sender.as_str()), peer)?;
        let now = self.0.now_ms();
        let r = self.0.lock().on_flood(now, &flood);
        match r {
            Ok((reply, actions)) => {
                self.0.apply(actions);
                Ok(Response::new(reply))
            }
            Err(e) => Err(self.refuse("flood", e.reason(), e.to_string())),
        }
    }
}

/// The Control service: controller ↔ orchestrator sessions. Envelopes are checked and numbered
/// by [`wuos_proto::session::Session`]; intents are answered `unimplemented` until the controller
/// applies them (orchestration work).
pub struct ControlSvc(Arc<Shared>);

pub fn control_service(shared: Arc<Shared>) -> pb::control_server::ControlServer<ControlSvc> {
    pb::control_server::ControlServer::new(ControlSvc(shared)).max_decoding_message_size(4 * MAX_MESSAGE_BYTES)
}

#[tonic::async_trait]
impl pb::control_server::Control for ControlSvc {
    type SessionStream = tokio_stream::wrappers::ReceiverStream<Result<pb::SessionEnvelope, Status>>;

    async fn session(
        &self,
        req: Request<tonic::Streaming<pb::SessionEnvelope>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        use pb::session_envelope::Body;
        let mut inbound = req.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let shared = self.0.clone();
        tokio::spawn(async move {
            let mut session = wuos_proto::session::Session::new(shared.cfg.router_id.clone());
            while let Ok(Some(env)) = inbound.message().await {
                shared.metrics.bytes("received", env.encoded_len());
                let replies = match session.receive(&env) {
                    Ok(Body::Intents(batch)) => session.unsupported(batch),
                    Ok(Body::Ack(_)) => Vec::new(),
                    Ok(Body::Error(e)) => {
                        warn!(intent = e.intent_id, code = %e.code, message = %e.message, "peer reported an error");
                        Vec::new()
                    }
                    Err(reply) => {
                        shared.metrics.reject("session");
                        warn!(?reply.body, "refused a session envelope");
                        vec![reply]
                    }
                };
                for r in replies {
                    shared.metrics.bytes("sent", r.encoded_len());
                    if tx.send(Ok(r)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }
}
