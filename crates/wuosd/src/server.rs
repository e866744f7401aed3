//! The protocol's gRPC services, thin: `Neighbor.Link` checks who opened the link (its first
//! frame's sender: a configured neighbor, from that neighbor's address) and hands the link to the
//! protocol task; the 1.x calls (`Hello`, `Flood`) are refused with the reason, counted; `Control` runs one
//! task per session that checks envelopes, converts intents ([`crate::wire`]) and hands them to
//! the controller task, and sends its answers back as `Ack` or `IntentError`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use prost::Message;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};
use tracing::warn;
use wuos_proto::MAX_MESSAGE_BYTES;
use wuos_proto::pb;
use wuos_proto::pb::neighbor_server::{Neighbor, NeighborServer};
use wuos_proto::pb::session_envelope::Body;
use wuos_proto::session::Session;

use wuos_model::RouterId;

use crate::controller::{Answer, ControllerHandle};
use crate::metrics::Metrics;
use crate::protocol::ProtocolHandle;
use crate::sdwan::edge::EdgeHandle;

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
    /// Mutual TLS: every call comes with the peer's verified certificate, whose router id must
    /// be the one the link's first frame claims.
    tls: bool,
    /// Whether framed links are taken (`link_transport`); otherwise every connection goes to
    /// gRPC, as in 2.3.
    framed: bool,
}

impl std::fmt::Debug for NeighborSvc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NeighborSvc")
    }
}

/// The service, with a decoding limit above the protocol's, so that an oversized message reaches
/// the handler and is refused *and counted* there (a larger one is refused by tonic itself).
pub fn neighbor_service(svc: Arc<NeighborSvc>) -> NeighborServer<NeighborSvc> {
    NeighborServer::from_arc(svc).max_decoding_message_size(4 * MAX_MESSAGE_BYTES)
}

impl NeighborSvc {
    pub fn new(
        protocol: ProtocolHandle,
        metrics: Arc<Metrics>,
        neighbors: HashMap<String, IpAddr>,
        tls: bool,
        transport: wuos_model::daemon::LinkTransport,
    ) -> NeighborSvc {
        NeighborSvc {
            protocol,
            metrics,
            neighbors,
            tls,
            framed: transport == wuos_model::daemon::LinkTransport::Framed,
        }
    }
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

/// How long the opener of a link has to send its first frame.
pub(crate) const FIRST_FRAME_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

type FrameStream = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::Frame, Status>> + Send>>;

impl NeighborSvc {
    /// A 1.x call: refused, saying which version this router speaks.
    fn refuse_v1(&self, what: &str, header: Option<&pb::Header>) -> Status {
        let e = match wuos_proto::validate::check_header(header) {
            Err(e) => e,
            // A 2.x header on a 1.x call.
            Ok(_) => {
                self.metrics.reject("unary_call");
                return Status::failed_precondition(format!(
                    "{what}: protocol 2.x routers exchange frames on Neighbor.Link"
                ));
            }
        };
        self.metrics.reject(e.reason());
        warn!(message = what, reason = %e, "refused a protocol 1.x call");
        Status::failed_precondition(e.to_string())
    }
}

#[tonic::async_trait]
impl Neighbor for NeighborSvc {
    async fn hello(&self, req: Request<pb::Hello>) -> Result<Response<pb::HelloReply>, Status> {
        let hello = req.into_inner();
        self.check_size("hello", hello.encoded_len())?;
        Err(self.refuse_v1("hello", hello.header.as_ref()))
    }

    async fn flood(&self, req: Request<pb::FloodRequest>) -> Result<Response<pb::FloodReply>, Status> {
        let flood = req.into_inner();
        self.check_size("flood", flood.encoded_len())?;
        Err(self.refuse_v1("flood", flood.header.as_ref()))
    }

    type LinkStream = FrameStream;

    async fn link(&self, req: Request<tonic::Streaming<pb::Frame>>) -> Result<Response<Self::LinkStream>, Status> {
        let tls_peer = req.extensions().get::<wuos_pki::PeerInfo>().cloned();
        let peer = req.remote_addr().or(tls_peer.as_ref().map(|p| p.addr));
        let mut inbound = req.into_inner();
        let first = match tokio::time::timeout(FIRST_FRAME_TIMEOUT, inbound.message()).await {
            Ok(Ok(Some(f))) => f,
            Ok(Ok(None)) => return Err(Status::cancelled("the link closed before its first frame")),
            Ok(Err(s)) => return Err(s),
            Err(_) => return Err(self.first_frame_timeout()),
        };
        let len = first.encoded_len();
        let sender = self.admit(&first, len, peer, tls_peer.as_ref())?;
        let (id, rx) = self.protocol.open_link(&sender).await.map_err(|_| stopping())?;
        self.protocol.frame(&sender, id, first).await.map_err(|_| stopping())?;
        self.metrics.link_opened("grpc");
        tokio::spawn(crate::protocol::read_link(
            self.protocol.clone(),
            self.metrics.clone(),
            sender,
            id,
            inbound,
        ));
        let out = tokio_stream::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(rx), Ok);
        Ok(Response::new(Box::pin(out)))
    }
}

impl NeighborSvc {
    fn first_frame_timeout(&self) -> Status {
        self.refuse(
            "link",
            "first_frame_timeout",
            format!("no first frame within {FIRST_FRAME_TIMEOUT:?}"),
        )
    }

    /// Checks a link's first frame (`len` bytes), from `peer`: under mutual TLS a link must come
    /// with a certificate naming the sender; the sender must be a configured neighbor, at its
    /// configured address. The sender, or the refusal (counted).
    fn admit(
        &self,
        first: &pb::Frame,
        len: usize,
        peer: Option<std::net::SocketAddr>,
        tls_peer: Option<&wuos_pki::PeerInfo>,
    ) -> Result<String, Status> {
        if self.tls && tls_peer.is_none() {
            return Err(self.refuse(
                "link",
                "tls_required",
                "this router takes links over mutual TLS only".into(),
            ));
        }
        self.check_size("frame", len)?;
        let header = wuos_proto::validate::check_frame_head(first)
            .map_err(|e| self.refuse("link", e.reason(), e.to_string()))?;
        let sender = header.sender.clone();
        if !self.neighbors.contains_key(&sender) {
            let e = wuos_proto::ValidateError::UnknownNeighbor { sender };
            return Err(self.refuse("link", e.reason(), e.to_string()));
        }
        self.check_peer("link", Some(&sender), peer)?;
        if let Some(p) = tls_peer
            && let Err(r) = p.identity.check_claim(&sender)
        {
            return Err(self.refuse("link", &format!("tls_{}", r.reason.label()), r.detail));
        }
        Ok(sender)
    }

    /// A framed link (`crate::link`) whose opener sent the magic: answers it, checks the first
    /// frame as [`Self::link`] does (a refusal goes back as the close record's reason), and runs
    /// the link.
    pub async fn serve_framed(&self, mut io: impl crate::link::Io, peer: Peer) {
        use tokio::io::AsyncWriteExt;
        if io.write_all(&crate::link::MAGIC).await.is_err() || io.flush().await.is_err() {
            return;
        }
        let mut buf = Vec::new();
        let first = match tokio::time::timeout(FIRST_FRAME_TIMEOUT, crate::link::read_record(&mut io, &mut buf)).await {
            Ok(Ok(Some(crate::link::Record::Frame(f, len)))) => Ok((f, len)),
            Ok(Ok(None | Some(crate::link::Record::Close(_)))) => return,
            // A bad record is refused under its own label; a broken stream has no one to tell.
            Ok(Err(e)) => match e.label() {
                Some(label) => Err(self.refuse("frame", label, e.to_string())),
                None => return,
            },
            Err(_) => Err(self.first_frame_timeout()),
        };
        let admitted = first.and_then(|(f, len)| {
            let sender = self.admit(&f, len, Some(peer.addr), peer.tls.as_ref())?;
            Ok((f, sender))
        });
        let (first, sender) = match admitted {
            Ok(a) => a,
            Err(status) => return crate::link::refuse(io, status.message()).await,
        };
        let opened = match self.protocol.open_link(&sender).await {
            Ok((id, rx)) if self.protocol.frame(&sender, id, first).await.is_ok() => (id, rx),
            _ => return crate::link::refuse(io, "the router is stopping").await,
        };
        let (id, rx) = opened;
        self.metrics.link_opened("framed");
        crate::protocol::run_framed(io, self.protocol.clone(), self.metrics.clone(), sender, id, rx).await;
    }
}

/// Who opened an accepted connection.
#[derive(Clone, Debug)]
pub struct Peer {
    pub addr: std::net::SocketAddr,
    /// Under mutual TLS, the verified certificate.
    pub tls: Option<wuos_pki::PeerInfo>,
}

/// One accepted connection on the protocol port: a framed link (served here) or anything else
/// (handed to the gRPC server through `grpc`). A connection that says nothing for
/// [`FIRST_FRAME_TIMEOUT`] is dropped.
pub async fn demux<S>(mut io: S, peer: Peer, svc: Arc<NeighborSvc>, grpc: mpsc::Sender<crate::link::Prefixed<S>>)
where
    S: crate::link::Io,
{
    let mut head = [0u8; 8];
    match tokio::time::timeout(FIRST_FRAME_TIMEOUT, io.read_exact(&mut head)).await {
        Ok(Ok(_)) if head == crate::link::MAGIC && svc.framed => svc.serve_framed(io, peer).await,
        Ok(Ok(_)) => {
            let _ = grpc.send(crate::link::Prefixed::new(head.to_vec(), io)).await;
        }
        Ok(Err(e)) => tracing::debug!(addr = %peer.addr, error = %e, "a connection closed before saying anything"),
        Err(_) => tracing::debug!(addr = %peer.addr, "a connection said nothing; dropped"),
    }
}

/// Accepts plain TCP connections on the protocol port until the gRPC server stops.
pub async fn accept_tcp(
    listener: tokio::net::TcpListener,
    svc: Arc<NeighborSvc>,
    grpc: mpsc::Sender<crate::link::Prefixed<tokio::net::TcpStream>>,
) {
    loop {
        let (tcp, addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(_) => {
                    // Out of file descriptors and the like: pause, then go on.
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = grpc.closed() => return,
        };
        let _ = tcp.set_nodelay(true);
        tokio::spawn(demux(tcp, Peer { addr, tls: None }, svc.clone(), grpc.clone()));
    }
}

/// Takes the verified TLS connections of the protocol port until the gRPC server stops.
pub async fn accept_tls(
    mut incoming: wuos_pki::Incoming,
    svc: Arc<NeighborSvc>,
    grpc: mpsc::Sender<crate::link::Prefixed<wuos_pki::TlsConnection>>,
) {
    loop {
        let conn = tokio::select! {
            c = tokio_stream::StreamExt::next(&mut incoming) => match c {
                Some(Ok(c)) => c,
                _ => return,
            },
            () = grpc.closed() => return,
        };
        let peer = Peer {
            addr: conn.peer().addr,
            tls: Some(conn.peer().clone()),
        };
        tokio::spawn(demux(conn, peer, svc.clone(), grpc.clone()));
    }
}

/// The gRPC server's side of the demultiplexer: the connections that were not framed links.
pub fn grpc_incoming<S>(
    rx: mpsc::Receiver<crate::link::Prefixed<S>>,
) -> impl tokio_stream::Stream<Item = Result<crate::link::Prefixed<S>, std::io::Error>> {
    tokio_stream::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(rx), Ok)
}

/// Whether the holder of certificate `id`, claiming to be `sender`, may send intents that need
/// capability `cap` (service intents: `orchestrator`; SD-WAN pieces: `controller`): it must be
/// who it claims, and its certificate must carry the capability. The refusal's counter label and
/// message otherwise.
fn may_send_intents(id: &wuos_pki::Identity, sender: &str, cap: wuos_pki::Capability) -> Result<(), (String, String)> {
    if let Err(r) = id.check_claim(sender) {
        return Err((format!("tls_{}", r.reason.label()), r.detail));
    }
    if !id.may(cap) {
        let what = match cap {
            wuos_pki::Capability::Orchestrator => "service intents",
            wuos_pki::Capability::Controller => "SD-WAN intents",
        };
        return Err((
            "capability".into(),
            format!(
                "{}'s certificate (role {}) does not carry the {} capability: it may not send {what}",
                id.router,
                id.role,
                cap.as_str()
            ),
        ));
    }
    Ok(())
}

/// The Control service: controller ↔ orchestrator sessions.
pub struct ControlSvc {
    me: String,
    controller: ControllerHandle,
    edge: EdgeHandle,
    metrics: Arc<Metrics>,
    /// Mutual TLS: a session's intents are taken only from a certificate that may send them.
    tls: bool,
}

pub fn control_service(
    me: String,
    controller: ControllerHandle,
    edge: EdgeHandle,
    metrics: Arc<Metrics>,
    tls: bool,
) -> pb::control_server::ControlServer<ControlSvc> {
    pb::control_server::ControlServer::new(ControlSvc {
        me,
        controller,
        edge,
        metrics,
        tls,
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
        let identity = req.extensions().get::<wuos_pki::PeerInfo>().map(|p| p.identity.clone());
        if self.tls && identity.is_none() {
            self.metrics.reject("tls_required");
            return Err(Status::unauthenticated(
                "this router takes sessions over mutual TLS only",
            ));
        }
        let inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(64);
        let (controller, metrics, me) = (self.controller.clone(), self.metrics.clone(), self.me.clone());
        let edge = self.edge.clone();
        tokio::spawn(session(me, controller, edge, metrics, identity, inbound, tx));
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }
}

/// One session: envelopes in are checked, their intents handed to the controller and their
/// SD-WAN pieces to the edge component (a bad intent is answered at once, saying why); the
/// answers go out as `Ack` / `IntentError`.
async fn session(
    me: String,
    controller: ControllerHandle,
    edge: EdgeHandle,
    metrics: Arc<Metrics>,
    identity: Option<wuos_pki::Identity>,
    mut inbound: tonic::Streaming<pb::SessionEnvelope>,
    tx: mpsc::Sender<Result<pb::SessionEnvelope, Status>>,
) {
    let mut s = Session::new(me);
    let (id, mut answers) = controller.open().await;
    let (edge_answers, mut piece_answers) = mpsc::channel(256);
    let error = |intent_id: u64, code: &str, message: String| {
        Body::Error(pb::IntentError {
            intent_id,
            code: code.into(),
            message,
        })
    };
    let answer = |a: Answer| match a.outcome {
        Ok(()) => Body::Ack(pb::Ack {
            intent_ids: vec![a.intent_id],
        }),
        Err(e) => error(a.intent_id, "failed", e),
    };
    loop {
        let out: Vec<Body> = tokio::select! {
            m = inbound.message() => match m {
                Ok(Some(env)) => {
                    metrics.bytes("received", env.encoded_len());
                    match s.receive(&env).cloned() {
                        Ok(Body::Intents(batch)) => {
                            let mut ok = Vec::new();
                            let mut pieces = Vec::new();
                            let mut refused = Vec::new();
                            let sender = env.header.as_ref().map(|h| h.sender.as_str()).unwrap_or_default();
                            let may = |cap| identity.as_ref().and_then(|id| may_send_intents(id, sender, cap).err());
                            let forbidden = may(wuos_pki::Capability::Orchestrator);
                            let no_pieces = may(wuos_pki::Capability::Controller);
                            for i in &batch.intents {
                                if let Some(pb::intent::Kind::SdwanPiece(p)) = &i.kind {
                                    if let Some((label, why)) = &no_pieces {
                                        metrics.reject(label);
                                        refused.push(error(i.id, "forbidden", why.clone()));
                                        continue;
                                    }
                                    match crate::sdwan::edge::Piece::from_pb(i.id, p) {
                                        Ok(piece) => pieces.push(piece),
                                        Err(e) => refused.push(error(i.id, "failed", e)),
                                    }
                                    continue;
                                }
                                if let Some((label, why)) = &forbidden {
                                    metrics.reject(label);
                                    refused.push(error(i.id, "forbidden", why.clone()));
                                    continue;
                                }
                                match crate::wire::from_pb(i) {
                                    Ok(intent) => ok.push((i.id, intent)),
                                    Err(e) => refused.push(error(i.id, "failed", e.to_string())),
                                }
                            }
                            if let Some((_, why)) = forbidden.iter().chain(&no_pieces).next()
                                && !refused.is_empty()
                            {
                                warn!(%why, "refused a session's intents");
                            }
                            if !pieces.is_empty() {
                                edge.submit(pieces, edge_answers.clone()).await;
                            }
                            // Under mutual TLS the certificate says who sent it; otherwise the
                            // header does (unauthenticated).
                            let from = identity.as_ref().map(|i| i.router.clone()).or_else(|| RouterId::new(sender).ok());
                            match from {
                                Some(_) if ok.is_empty() => {}
                                Some(from) => controller.submit(id, from, ok).await,
                                None => refused.extend(ok.iter().map(|(i, _)| {
                                    error(*i, "failed", format!("the session's sender {sender:?} is not a router id"))
                                })),
                            }
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
            Some(a) = answers.recv() => vec![answer(a)],
            Some(a) = piece_answers.recv() => {
                // The pieces of a batch are answered together: one Ack for all that succeeded.
                let mut acked = Vec::new();
                let mut out = Vec::new();
                let mut next = Some(a);
                while let Some(a) = next {
                    match a.outcome {
                        Ok(()) => acked.push(a.intent_id),
                        Err(_) => out.push(answer(a)),
                    }
                    next = piece_answers.try_recv().ok();
                    if acked.len() >= 256 {
                        out.push(Body::Ack(pb::Ack { intent_ids: std::mem::take(&mut acked) }));
                    }
                }
                if !acked.is_empty() {
                    out.push(Body::Ack(pb::Ack { intent_ids: acked }));
                }
                out
            }
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
