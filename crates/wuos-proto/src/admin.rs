//! The client of wuosd's administration API (`Admin` in `admin.proto`), for the `wuos` command,
//! benchmarks and tools: against any wuosd, a lab router's (by its Unix socket) or a real one's
//! (by its socket path, or by the `admin_listen` address it was given).
//!
//! Every call returns the reply message or an [`AdminError`] that carries the daemon's error
//! class, so a caller maps failures to outcomes (exit codes, HTTP statuses) in one place.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};
use wuos_model::{Classify, ErrorClass, RemoteError};

use crate::pb;
use crate::pb::admin_client::AdminClient as Raw;
use crate::{CONNECT_TIMEOUT, MAX_MESSAGE_BYTES};

/// Where a wuosd's administration API listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A Unix socket (`admin_socket`; a lab router's is `LAB_DIR/sock/NODE.sock`).
    Socket(PathBuf),
    /// `HOST:PORT` (`admin_listen`).
    Address(String),
}

impl From<&std::path::Path> for Target {
    fn from(p: &std::path::Path) -> Self {
        Target::Socket(p.to_path_buf())
    }
}

impl From<PathBuf> for Target {
    fn from(p: PathBuf) -> Self {
        Target::Socket(p)
    }
}

impl From<&Target> for Target {
    fn from(t: &Target) -> Self {
        t.clone()
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Socket(p) => write!(f, "{}", p.display()),
            Target::Address(a) => f.write_str(a),
        }
    }
}

/// A failed administration call.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// No daemon answers there.
    #[error("no wuosd answers on {target}: {source}")]
    Connect {
        target: Target,
        #[source]
        source: tonic::transport::Error,
    },
    /// The daemon refused or failed the request; its class and message.
    #[error("{0}")]
    Remote(#[from] RemoteError),
}

impl Classify for AdminError {
    fn class(&self) -> ErrorClass {
        match self {
            AdminError::Connect { .. } => ErrorClass::Unavailable,
            AdminError::Remote(r) => r.class,
        }
    }
}

/// A connected client.
#[derive(Clone, Debug)]
pub struct AdminClient {
    raw: Raw<Channel>,
}

fn remote(s: tonic::Status) -> AdminError {
    AdminError::Remote(crate::status::from_status(&s))
}

impl AdminClient {
    /// Connects (within [`crate::CONNECT_TIMEOUT`]).
    pub async fn connect(target: impl Into<Target>) -> Result<Self, AdminError> {
        let target = &target.into();
        let fail = |source| AdminError::Connect {
            target: target.clone(),
            source,
        };
        let channel = match target {
            Target::Socket(path) => {
                let path = path.clone();
                Endpoint::from_static("http://wuosd.local")
                    .connect_timeout(CONNECT_TIMEOUT)
                    .connect_with_connector(tower::service_fn(move |_: Uri| {
                        let path = path.clone();
                        async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
                    }))
                    .await
                    .map_err(fail)?
            }
            Target::Address(a) => Endpoint::from_shared(format!("http://{a}"))
                .map_err(fail)?
                .connect_timeout(CONNECT_TIMEOUT)
                .connect()
                .await
                .map_err(fail)?,
        };
        Ok(Self {
            raw: Raw::new(channel).max_decoding_message_size(16 * MAX_MESSAGE_BYTES),
        })
    }

    /// The router's own telemetry, neighbors, view and counters.
    pub async fn status(&mut self) -> Result<pb::StatusReply, AdminError> {
        self.status_with(pb::StatusRequest::default()).await
    }

    /// [`AdminClient::status`] without the view (for polling many daemons).
    pub async fn status_without_view(&mut self) -> Result<pb::StatusReply, AdminError> {
        self.status_with(pb::StatusRequest { omit_view: true }).await
    }

    async fn status_with(&mut self, req: pb::StatusRequest) -> Result<pb::StatusReply, AdminError> {
        Ok(self.raw.status(req).await.map_err(remote)?.into_inner())
    }

    /// Its domains (routing, control, services) and what is left for services.
    pub async fn list_domains(&mut self) -> Result<pb::DomainList, AdminError> {
        Ok(self
            .raw
            .list_domains(pb::ListDomainsRequest {})
            .await
            .map_err(remote)?
            .into_inner())
    }

    /// Starts an instance of catalog service `service` (`name` empty: `SERVICE-N`).
    pub async fn start_service(
        &mut self,
        service: &str,
        name: &str,
        params: BTreeMap<String, String>,
    ) -> Result<pb::DomainInfo, AdminError> {
        let req = pb::StartServiceRequest {
            service: service.into(),
            name: name.into(),
            params: params.into_iter().collect(),
        };
        Ok(self.raw.start_service(req).await.map_err(remote)?.into_inner())
    }

    /// Applies `verb` (stop, pause, resume, destroy) to domain `name`.
    pub async fn domain(&mut self, verb: DomainVerb, name: &str) -> Result<pb::DomainInfo, AdminError> {
        let r = pb::DomainRef { name: name.into() };
        let reply = match verb {
            DomainVerb::Stop => self.raw.stop_domain(r).await,
            DomainVerb::Pause => self.raw.pause_domain(r).await,
            DomainVerb::Resume => self.raw.resume_domain(r).await,
            DomainVerb::Destroy => self.raw.destroy_domain(r).await,
        };
        Ok(reply.map_err(remote)?.into_inner())
    }

    /// Replaces the orchestrator's policy (`source` names it in errors).
    pub async fn apply_policy(&mut self, text: &str, source: &str) -> Result<pb::PolicyReply, AdminError> {
        let req = pb::ApplyPolicyRequest {
            text: text.into(),
            source: source.into(),
        };
        Ok(self.raw.apply_policy(req).await.map_err(remote)?.into_inner())
    }

    /// The policy in force.
    pub async fn policy(&mut self) -> Result<pb::PolicyReply, AdminError> {
        Ok(self
            .raw
            .get_policy(pb::GetPolicyRequest {})
            .await
            .map_err(remote)?
            .into_inner())
    }

    /// The orchestrator's decision log, oldest first, and where each service is served.
    /// The edge's SD-WAN paths report (JSON: paths with figures, steering, decisions).
    pub async fn sdwan_paths(&mut self) -> Result<String, AdminError> {
        Ok(self
            .raw
            .sdwan_paths(pb::SdwanPathsRequest {})
            .await
            .map_err(remote)?
            .into_inner()
            .report_json)
    }

    pub async fn decisions(&mut self) -> Result<pb::DecisionList, AdminError> {
        Ok(self
            .raw
            .decisions(pb::DecisionsRequest {})
            .await
            .map_err(remote)?
            .into_inner())
    }
}

/// What [`AdminClient::domain`] does to a domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DomainVerb {
    Stop,
    Pause,
    Resume,
    Destroy,
}

/// Connects to `target` and asks for its status: the one-shot form of [`AdminClient::status`].
pub async fn status(target: impl Into<Target>) -> Result<pb::StatusReply, AdminError> {
    AdminClient::connect(target).await?.status().await
}
