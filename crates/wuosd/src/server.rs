//! The protocol's gRPC services, thin: `Neighbor` hands hellos and floods to the protocol task
//! and maps refusals to `invalid_argument` with the reason, counted by reason; `Control` runs one
//! task per session that checks envelopes, converts intents ([`crate::wire`]) and hands them to
//! the controller task, and sends its answers back as `Ack` or `IntentError`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use prost::Message;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};
use tracing::warn;
use wuos_proto::MAX_MESSAGE_BYTES;
use wuos_proto::pb;
use wuos_proto::pb::neighbor_server::{Neighbor, NeighborServer};
use wuos_proto::pb::session_envelope::Body;
use wuos_proto::session::Session;

use crate::controller::ControllerHandle;
use crate::metrics::Metrics;
use crate::protocol::ProtocolHandle;

/// Counts every reply that carries a non-OK gRPC status, by code — including what tonic refuses
/// before a handler runs (undecodable protobuf, a message over the transport limit) — and logs it.
pub fn count_errors(
    metrics: Arc<Metrics>,
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

pub struct NeighborSvc {
    protocol: ProtocolHandle,
    metrics: Arc<Metrics>,
    /// Each configured neighbor's address: a message naming it must come from there.
    neighbors: HashMap<String, IpAddr>,
}

impl std::fmt::Debug for NeighborSvc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NeighborSvc")
    }
}

/// The service, with a decoding limit above the protocol's, so that an oversized message reaches
/// the handler and is refused *and counted* there (a larger one is refused by tonic itself).
pub fn neighbor_service(
    protocol: ProtocolHandle,
    metrics: Arc<Metrics>,
    neighbors: HashMap<String, IpAddr>,
) -> NeighborServer<NeighborSvc> {
    NeighborServer::new(NeighborSvc {
        protocol,
        metrics,
        neighbors,
    })
    .max_decoding_message_size(4 * MAX_MESSAGE_BYTES)
}

impl NeighborSvc {
    /// Refuses a message: counted under `label`, logged with the full reason.
    fn refuse(&self, what: &str, label: &str, reason: String) -> Status {
        self.metrics.reject(label);
        warn!(message = what, %reason, "refused a protocol message");
        Status::invalid_argument(reason)
    }

    /// A message naming a configured neighbor must come from that neighbor's address; anyone can
    /// write any sender id into a header.
    fn check_peer(&self, what: &str, sender: Option<&str>, peer: Option<std::net::SocketAddr>) -> Result<(), Status> {
        let (Some(sender), Some(peer)) = (sender, peer) else {
            return Ok(());
        };
        match self.neighbors.get(sender) {
            Some(ip) if *ip != peer.ip() => Err(self.refuse(
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
        self.metrics.bytes("received", len);
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

fn stopping() -> Status {
    Status::unavailable("the router is stopping")
}

#[tonic::async_trait]
impl Neighbor for NeighborSvc {
    async fn hello(&self, req: Request<pb::Hello>) -> Result<Response<pb::HelloReply>, Status> {
        let peer = req.remote_addr();
        let hello = req.into_inner();
        self.check_size("hello", hello.encoded_len())?;
        self.check_peer("hello", hello.header.as_ref().map(|h| h.sender.as_str()), peer)?;
        match self.protocol.hello(hello).await.map_err(|_| stopping())? {
            Ok(reply) => Ok(Response::new(reply)),
            Err(e) => Err(self.refuse("hello", e.reason(), e.to_string())),
        }
    }

    async fn flood(&self, req: Request<pb::FloodRequest>) -> Result<Response<pb::FloodReply>, Status> {
        let peer = req.remote_addr();
        let flood = req.into_inner();
        self.check_size("flood", flood.encoded_len())?;
        self.check_peer("flood", flood.header.as_ref().map(|h| h.sender.as_str()), peer)?;
        match self.protocol.flood(flood).await.map_err(|_| stopping())? {
            Ok(reply) => Ok(Response::new(reply)),
            Err(e) => Err(self.refuse("flood", e.reason(), e.to_string())),
        }
    }
}

/// The Control service: controller ↔ orchestrator sessions.
pub struct ControlSvc {
    me: String,
    controller: ControllerHandle,
    metrics: Arc<Metrics>,
}

pub fn control_service(
    me: String,
    controller: ControllerHandle,
    metrics: Arc<Metrics>,
) -> pb::control_server::ControlServer<ControlSvc> {
    pb::control_server::ControlServer::new(ControlSvc {
        me,
        controller,
        metrics,
    })
    .max_decoding_message_size(4 * MAX_MESSAGE_BYTES)
}

#[tonic::async_trait]
impl pb::control_server::Control for ControlSvc {
    type SessionStream = tokio_stream::wrappers::ReceiverStream<Result<pb::SessionEnvelope, Status>>;

    async fn session(
        &self,
        req: Request<tonic::Streaming<pb::SessionEnvelope>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(64);
        let (controller, metrics, me) = (self.controller.clone(), self.metrics.clone(), self.me.clone());
        tokio::spawn(session(me, controller, metrics, inbound, tx));
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }
}

/// One session: envelopes in are checked, their intents handed to the controller (a bad intent
/// is answered at once, saying why); the controller's answers go out as `Ack` / `IntentError`.
async fn session(
    me: String,
    controller: ControllerHandle,
    metrics: Arc<Metrics>,
    mut inbound: tonic::Streaming<pb::SessionEnvelope>,
    tx: mpsc::Sender<Result<pb::SessionEnvelope, Status>>,
) {
    let mut s = Session::new(me);
    let (id, mut answers) = controller.open().await;
    let error = |intent_id: u64, code: &str, message: String| {
        Body::Error(pb::IntentError {
            intent_id,
            code: code.into(),
            message,
        })
    };
    loop {
        let out: Vec<Body> = tokio::select! {
            m = inbound.message() => match m {
                Ok(Some(env)) => {
                    metrics.bytes("received", env.encoded_len());
                    match s.receive(&env).cloned() {
                        Ok(Body::Intents(batch)) => {
                            let mut ok = Vec::new();
                            let mut refused = Vec::new();
                            for i in &batch.intents {
                                match crate::wire::from_pb(i) {
                                    Ok(intent) => ok.push((i.id, intent)),
                                    Err(e) => refused.push(error(i.id, "failed", e.to_string())),
                                }
                            }
                            controller.submit(id, ok).await;
                            refused
                        }
                        Ok(Body::Ack(_)) => Vec::new(),
                        Ok(Body::Error(e)) => {
                            warn!(intent = e.intent_id, code = %e.code, message = %e.message, "peer reported an error");
                            Vec::new()
                        }
                        Err(reply) => {
                            // Already stamped by the session: sent as it is.
                            metrics.reject("session");
                            warn!(?reply.body, "refused a session envelope");
                            if tx.send(Ok(reply)).await.is_err() {
                                break;
                            }
                            Vec::new()
                        }
                    }
                }
                Ok(None) | Err(_) => break,
            },
            Some(a) = answers.recv() => vec![match a.outcome {
                Ok(()) => Body::Ack(pb::Ack { intent_ids: vec![a.intent_id] }),
                Err(e) => error(a.intent_id, "failed", e),
            }],
        };
        for body in out {
            let env = s.envelope(body);
            metrics.bytes("sent", env.encoded_len());
            if tx.send(Ok(env)).await.is_err() {
                controller.close(id).await;
                return;
            }
        }
    }
    controller.close(id).await;
}
