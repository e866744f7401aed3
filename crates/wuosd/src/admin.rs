//! The local administration API (`Admin`) on a Unix socket, thin: each call goes to the component
//! that owns the answer, and its own types become protobuf here, and only here. Its client is
//! `wuos_proto::admin::AdminClient`.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::Server;
use tonic::{Request, Response, Status};
use wuos_model::lifecycle::State;
use wuos_proto::pb;
use wuos_proto::pb::admin_server::{Admin, AdminServer};
use wuos_proto::status::to_status;

use crate::datapath::DatapathHandle;
use crate::domains::component::{DomainsHandle, Verb};
use crate::domains::{DomainView, DomainsReport, ReservedDomain};
use crate::metrics::Metrics;
use crate::orchestration::{DecisionRecord, OrchestrationHandle, PolicyView};
use crate::protocol::ProtocolHandle;

/// What the admin API answers from.
#[derive(Clone)]
pub struct AdminSvc {
    pub router_id: String,
    pub protocol: ProtocolHandle,
    pub domains: Option<DomainsHandle>,
    pub orchestration: Option<OrchestrationHandle>,
    pub datapath: Option<DatapathHandle>,
    pub metrics: Arc<Metrics>,
    pub paths: Option<crate::sdwan::paths::PathsHandle>,
}

/// A domain's state as the API spells it: `running`, `failed: REASON`, ….
pub fn state_text(s: &State) -> String {
    match s {
        State::Failed {
            reason,
            gave_up_after: Some(n),
        } => format!("failed: {reason}; gave up after {n} restarts"),
        State::Failed { reason, .. } => format!("failed: {reason}"),
        s => s.as_str().to_string(),
    }
}

impl From<&DomainView> for pb::DomainInfo {
    fn from(d: &DomainView) -> Self {
        pb::DomainInfo {
            name: d.name.clone(),
            kind: d.kind.as_str().to_string(),
            service: d.service.clone().unwrap_or_default(),
            state: state_text(&d.state),
            pid: d.pid,
            address: d.address.map(|a| a.to_string()).unwrap_or_default(),
            cpus: d.cpus.unwrap_or(0.0),
            memory_limit: d.memory_limit.unwrap_or(0),
            memory_bytes: d.memory_bytes,
            cpu_pct: d.cpu_pct,
            restarts: d.restarts,
            start_ms: d.start_ms,
            from_pool: d.from_pool,
            health: d.health.as_ref().map(|h| h.0.as_str().to_string()).unwrap_or_default(),
            health_detail: d.health.as_ref().map(|h| h.1.clone()).unwrap_or_default(),
            holds: String::new(),
            cores: String::new(),
        }
    }
}

impl From<&ReservedDomain> for pb::DomainInfo {
    fn from(d: &ReservedDomain) -> Self {
        pb::DomainInfo {
            name: d.kind.as_str().to_string(),
            kind: d.kind.as_str().to_string(),
            state: "running".into(),
            pid: d.pid,
            cpus: d.cores.len() as f64,
            memory_limit: d.memory.unwrap_or(0),
            memory_bytes: d.memory_bytes,
            cpu_pct: d.cpu_pct,
            holds: d.holds.clone(),
            cores: wuos_model::domain::format_cpuset(&d.cores),
            ..Default::default()
        }
    }
}

impl From<&DomainsReport> for pb::DomainList {
    fn from(r: &DomainsReport) -> Self {
        pb::DomainList {
            domains: r.domains.iter().map(pb::DomainInfo::from).collect(),
            reserved: r.reserved.iter().map(pb::DomainInfo::from).collect(),
            free_cpus: r.free_cpus,
            free_memory: r.free_memory,
            pool_idle: r.pool_idle,
        }
    }
}

impl From<DecisionRecord> for pb::DecisionRecord {
    fn from(d: DecisionRecord) -> Self {
        pb::DecisionRecord {
            at_unix_ms: d.at_unix_ms,
            service: d.service,
            kind: d.kind,
            from: d.from,
            to: d.to,
            rule: d.rule,
            reason: d.reason,
            switched_unix_ms: d.switched_unix_ms.unwrap_or(0),
        }
    }
}

impl From<PolicyView> for pb::PolicyReply {
    fn from(p: PolicyView) -> Self {
        pb::PolicyReply {
            text: p.text,
            services: p.services,
        }
    }
}

impl AdminSvc {
    fn domains(&self) -> Result<&DomainsHandle, Status> {
        self.domains.as_ref().ok_or_else(|| {
            Status::not_found(format!(
                "{} runs no domains (no [domains] section in its wuosd config)",
                self.router_id
            ))
        })
    }

    fn orchestration(&self) -> Result<&OrchestrationHandle, Status> {
        self.orchestration.as_ref().ok_or_else(|| {
            Status::not_found(format!(
                "{} runs no orchestrator (no [orchestrator] in its config; fog routers of a lab have one)",
                self.router_id
            ))
        })
    }

    async fn verb(&self, verb: Verb, req: Request<pb::DomainRef>) -> Result<Response<pb::DomainInfo>, Status> {
        let d = self
            .domains()?
            .apply(verb, &req.into_inner().name)
            .await
            .map_err(|e| to_status(&e))?;
        Ok(Response::new((&d).into()))
    }
}

#[tonic::async_trait]
impl Admin for AdminSvc {
    async fn status(&self, req: Request<pb::StatusRequest>) -> Result<Response<pb::StatusReply>, Status> {
        let mut reply = self
            .protocol
            .status(!req.into_inner().omit_view)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        if let Some(dp) = &self.datapath {
            reply.datapath = dp.summary().await;
        }
        let m = &self.metrics;
        for (name, v) in [("bytes_sent", &m.bytes_sent), ("bytes_received", &m.bytes_received)] {
            reply.counters.push(pb::Counter {
                name: name.into(),
                value: v.get(),
            });
        }
        Ok(Response::new(reply))
    }

    async fn list_domains(&self, _: Request<pb::ListDomainsRequest>) -> Result<Response<pb::DomainList>, Status> {
        let r = self.domains()?.report().await.map_err(|e| to_status(&e))?;
        Ok(Response::new((&r).into()))
    }

    async fn start_service(&self, req: Request<pb::StartServiceRequest>) -> Result<Response<pb::DomainInfo>, Status> {
        let r = req.into_inner();
        let d = self
            .domains()?
            .start_service(&r.service, &r.name, r.params.into_iter().collect())
            .await
            .map_err(|e| to_status(&e))?;
        Ok(Response::new((&d).into()))
    }

    async fn stop_domain(&self, req: Request<pb::DomainRef>) -> Result<Response<pb::DomainInfo>, Status> {
        self.verb(Verb::Stop, req).await
    }

    async fn pause_domain(&self, req: Request<pb::DomainRef>) -> Result<Response<pb::DomainInfo>, Status> {
        self.verb(Verb::Pause, req).await
    }

    async fn resume_domain(&self, req: Request<pb::DomainRef>) -> Result<Response<pb::DomainInfo>, Status> {
        self.verb(Verb::Resume, req).await
    }

    async fn destroy_domain(&self, req: Request<pb::DomainRef>) -> Result<Response<pb::DomainInfo>, Status> {
        self.verb(Verb::Destroy, req).await
    }

    async fn apply_policy(&self, req: Request<pb::ApplyPolicyRequest>) -> Result<Response<pb::PolicyReply>, Status> {
        let o = self.orchestration()?;
        let r = req.into_inner();
        let source = if r.source.is_empty() { "policy".into() } else { r.source };
        let p = o.apply_policy(r.text, source).await.map_err(|e| to_status(&e))?;
        Ok(Response::new(p.into()))
    }

    async fn get_policy(&self, _: Request<pb::GetPolicyRequest>) -> Result<Response<pb::PolicyReply>, Status> {
        let p = self.orchestration()?.policy().await.map_err(|e| to_status(&e))?;
        Ok(Response::new(p.into()))
    }

    async fn sdwan_paths(&self, _: Request<pb::SdwanPathsRequest>) -> Result<Response<pb::SdwanPathsReply>, Status> {
        let paths = self.paths.as_ref().ok_or_else(|| {
            Status::unavailable(format!(
                "{} does not monitor SD-WAN paths (its STAMP sender has no socket)",
                self.router_id
            ))
        })?;
        let report = paths.report().borrow().clone();
        let report_json = serde_json::to_string(&*report).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(pb::SdwanPathsReply { report_json }))
    }

    async fn decisions(&self, _: Request<pb::DecisionsRequest>) -> Result<Response<pb::DecisionList>, Status> {
        let l = self.orchestration()?.decisions().await.map_err(|e| to_status(&e))?;
        Ok(Response::new(pb::DecisionList {
            decisions: l.decisions.into_iter().map(pb::DecisionRecord::from).collect(),
            serving: l.serving.into_iter().collect(),
        }))
    }
}

/// Serves on TCP `addr` as well (`admin_listen`) until `stop` turns true.
pub async fn serve_tcp(
    svc: AdminSvc,
    addr: std::net::SocketAddr,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot bind admin_listen {addr}"))?;
    Ok(spawn_server(
        svc,
        tokio_stream::wrappers::TcpListenerStream::new(listener),
        stop,
    ))
}

/// Binds `path` (replacing a stale socket) and serves until `stop` turns true.
pub fn serve(
    svc: AdminSvc,
    path: &Path,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).with_context(|| format!("cannot bind admin socket {}", path.display()))?;
    Ok(spawn_server(svc, UnixListenerStream::new(listener), stop))
}

/// Serves the admin API on the connections `incoming` yields until `stop` turns true.
fn spawn_server<S, IO>(
    svc: AdminSvc,
    incoming: S,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()>
where
    S: tokio_stream::Stream<Item = std::io::Result<IO>> + Send + 'static,
    IO: tonic::transport::server::Connected + tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    IO::ConnectInfo: Clone + Send + Sync + 'static,
{
    tokio::spawn(async move {
        let _ = Server::builder()
            .add_service(AdminServer::new(svc))
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = stop.changed().await;
            })
            .await;
    })
}

#[cfg(test)]
mod tests {
    use wuos_model::lifecycle::Failure;

    use super::*;

    #[test]
    fn states_are_spelled_as_the_api_documents() {
        assert_eq!(state_text(&State::Running), "running");
        assert_eq!(
            state_text(&State::Failed {
                reason: Failure::Exited { code: 3 },
                gave_up_after: Some(2)
            }),
            "failed: exited with code 3; gave up after 2 restarts"
        );
    }
}
