//! How the orchestrator's intents reach controllers ([`crate::orchestration::Delivery`]): this
//! router's own controller through an in-process session, every other router's over a `Control`
//! session (a gRPC stream of envelopes) to the address it advertises. Answers come back as
//! [`Reply`]s.
//!
//! ```text
//!  orchestration ──deliver(router, intent)──▶ Links ──▶ local: ControllerHandle session (in-process)
//!                                                  └──▶ remote: Control stream to router's address
//!  replies ◀── Reply{router, id, outcome} ◀── answers (local forwarder, one reader task per stream)
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use prost::Message;
use tokio::sync::mpsc;
use tracing::{info, warn};
use wuos_controller::Intent;
use wuos_model::RouterId;
use wuos_proto::pb;
use wuos_proto::pb::session_envelope::Body;
use wuos_proto::session::Session;

use crate::controller::ControllerHandle;
use crate::metrics::Metrics;
use crate::orchestration::{Delivery, Reply};
use crate::protocol::{AnyConnector, Connector};

/// Turns the answers of this router's own in-process session into [`Reply`]s from `me`.
pub fn forward_answers(
    me: RouterId,
    mut answers: mpsc::Receiver<crate::controller::Answer>,
    replies: mpsc::Sender<Reply>,
) {
    tokio::spawn(async move {
        while let Some(a) = answers.recv().await {
            let r = Reply {
                router: me.clone(),
                intent_id: a.intent_id,
                outcome: a.outcome,
            };
            if replies.send(r).await.is_err() {
                return;
            }
        }
    });
}

/// A session to a remote controller: its outgoing half.
struct Link {
    session: Session,
    tx: mpsc::Sender<pb::SessionEnvelope>,
}

/// The daemon's delivery.
pub struct Links {
    me: RouterId,
    /// This router's controller and the in-process session to it (none for the SD-WAN
    /// controller's links, which reach every edge over `Control`).
    local: Option<(ControllerHandle, u64)>,
    remote: HashMap<RouterId, Link>,
    replies: mpsc::Sender<Reply>,
    session_id: u64,
    metrics: Arc<Metrics>,
    /// Plain TCP or mutual TLS (then the controller must present its router's certificate).
    connector: AnyConnector,
}

impl Links {
    /// Opens the in-process session to this router's controller; `session_id` numbers the remote
    /// sessions (the boot id: a restarted orchestrator's sessions are new ones).
    pub async fn new(
        me: RouterId,
        local: ControllerHandle,
        replies: mpsc::Sender<Reply>,
        session_id: u64,
        metrics: Arc<Metrics>,
        connector: AnyConnector,
    ) -> Self {
        let (local_session, answers) = local.open().await;
        forward_answers(me.clone(), answers, replies.clone());
        let mut links = Links::remote_only(me, replies, session_id, metrics, connector);
        links.local = Some((local, local_session));
        links
    }

    /// Links to other routers' controllers only: every router, this one included, is reached
    /// over a `Control` session.
    pub fn remote_only(
        me: RouterId,
        replies: mpsc::Sender<Reply>,
        session_id: u64,
        metrics: Arc<Metrics>,
        connector: AnyConnector,
    ) -> Self {
        Links {
            me,
            local: None,
            remote: HashMap::new(),
            replies,
            session_id: session_id.max(1),
            metrics,
            connector,
        }
    }

    /// Sends `intents` in one batch to `router`'s controller at `address` (a session opened
    /// on first use, and again after its stream ended).
    pub async fn send(
        &mut self,
        router: &RouterId,
        address: Option<SocketAddr>,
        intents: Vec<pb::Intent>,
    ) -> Result<(), String> {
        // A session whose stream ended (the controller restarted) is opened again.
        if self.remote.get(router).is_some_and(|l| l.tx.is_closed()) {
            self.remote.remove(router);
        }
        if !self.remote.contains_key(router) {
            let link = self.connect(router, address).await?;
            self.remote.insert(router.clone(), link);
        }
        let link = self.remote.get_mut(router).expect("inserted above");
        let env = link.session.envelope(Body::Intents(pb::IntentBatch { intents }));
        self.metrics.bytes("sent", env.encoded_len());
        if link.tx.send(env).await.is_err() {
            self.remote.remove(router);
            return Err(format!("the session to {router} closed"));
        }
        Ok(())
    }

    async fn connect(&self, router: &RouterId, address: Option<SocketAddr>) -> Result<Link, String> {
        let address = address.ok_or_else(|| format!("{router} is not in the view (no control address)"))?;
        let channel = self
            .connector
            .channel(router.as_str(), &address.to_string(), wuos_proto::CONNECT_TIMEOUT)
            .await
            .map_err(|e| format!("{router}'s controller: {e}"))?;
        let mut client = pb::control_client::ControlClient::new(channel);
        let (tx, rx) = mpsc::channel::<pb::SessionEnvelope>(64);
        let mut inbound = client
            .session(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .map_err(|e| format!("{router} refused the session: {}", e.message()))?
            .into_inner();
        // The reading half checks what comes back with a session of its own (it only reads).
        let mut reader = Session::opened(self.me.to_string(), self.session_id);
        let (replies, name, metrics) = (self.replies.clone(), router.clone(), self.metrics.clone());
        tokio::spawn(async move {
            while let Ok(Some(env)) = inbound.message().await {
                metrics.bytes("received", env.encoded_len());
                let answers = match reader.receive(&env) {
                    Ok(Body::Ack(a)) => a.intent_ids.iter().map(|&id| (id, Ok(()))).collect(),
                    Ok(Body::Error(e)) => vec![(e.intent_id, Err(format!("{}: {}", e.code, e.message)))],
                    Ok(Body::Intents(_)) => Vec::new(),
                    Err(e) => {
                        warn!(router = %name, body = ?e.body, "bad envelope from a controller");
                        Vec::new()
                    }
                };
                for (intent_id, outcome) in answers {
                    let r = Reply {
                        router: name.clone(),
                        intent_id,
                        outcome,
                    };
                    if replies.send(r).await.is_err() {
                        return;
                    }
                }
            }
            info!(router = %name, "session to the controller ended");
        });
        info!(%router, %address, "session to the controller opened");
        Ok(Link {
            session: Session::opened(self.me.to_string(), self.session_id),
            tx,
        })
    }
}

impl Delivery for Links {
    async fn deliver(
        &mut self,
        router: &RouterId,
        address: Option<SocketAddr>,
        id: u64,
        intent: Intent,
    ) -> Result<(), String> {
        if *router == self.me
            && let Some((local, session)) = &self.local
        {
            local.submit(*session, self.me.clone(), vec![(id, intent)]).await;
            return Ok(());
        }
        let intents = vec![crate::wire::to_pb(id, &intent, router)];
        self.send(router, address, intents).await
    }
}
