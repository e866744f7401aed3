//! The Neighbor gRPC service: thin — it validates through the state machine and maps refusals to
//! `invalid_argument` with the reason, counted by reason.

use std::sync::Arc;
use std::time::Duration;

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
            .map(|n| n.address.ip());
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
/// by [`wuos_proto::session::Session`]; intents are applied in order by the
/// [`crate::controller::Controller`] and each is answered with an `Ack` (an instance once it is
/// healthy) or an `IntentError` (code `failed`) that says why.
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
            let session = Arc::new(std::sync::Mutex::new(wuos_proto::session::Session::new(
                shared.cfg.router_id.clone(),
            )));
            // Stamps and sends a reply (from this task or from a health waiter).
            let reply = {
                let (session, tx, shared) = (session.clone(), tx.clone(), shared.clone());
                move |body: Body| {
                    let env = session.lock().unwrap_or_else(|p| p.into_inner()).envelope(body);
                    shared.metrics.bytes("sent", env.encoded_len());
                    let tx = tx.clone();
                    async move { tx.send(Ok(env)).await.is_ok() }
                }
            };
            while let Ok(Some(env)) = inbound.message().await {
                shared.metrics.bytes("received", env.encoded_len());
                let checked = session.lock().unwrap_or_else(|p| p.into_inner()).receive(&env).cloned();
                let replies = match checked {
                    Ok(Body::Intents(batch)) => {
                        apply_batch(&shared, batch, reply.clone()).await;
                        Vec::new()
                    }
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

/// How long an instance may take to become healthy before its intent is answered with an error.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Applies a batch in order and answers each intent through `reply` (instances once healthy).
async fn apply_batch<F, Fut>(shared: &Arc<Shared>, batch: pb::IntentBatch, reply: F)
where
    F: Fn(pb::session_envelope::Body) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    use crate::controller::{Applied, await_healthy};
    use pb::session_envelope::Body;
    let error = |intent_id: u64, message: String| {
        Body::Error(pb::IntentError {
            intent_id,
            code: "failed".into(),
            message,
        })
    };
    for intent in batch.intents {
        let id = intent.id;
        let Some(nl) = shared.netlink.as_ref() else {
            reply(error(id, format!("{} has no netlink socket", shared.cfg.router_id))).await;
            continue;
        };
        match shared.controller.apply(shared, nl, &intent).await {
            Ok(Applied::Now) => {
                reply(Body::Ack(pb::Ack { intent_ids: vec![id] })).await;
            }
            Ok(Applied::WhenHealthy(name)) => {
                let (shared, reply) = (shared.clone(), reply.clone());
                tokio::spawn(async move {
                    let body = match await_healthy(&shared, &name, READY_TIMEOUT).await {
                        Ok(()) => Body::Ack(pb::Ack { intent_ids: vec![id] }),
                        Err(e) => error(id, e),
                    };
                    reply(body).await;
                });
            }
            Err(e) => {
                warn!(intent = id, error = %e, "intent not applied");
                reply(error(id, e)).await;
            }
        }
    }
}
