//! The local administration API (Admin) on a Unix socket; its client is
//! `wuos_proto::admin::AdminClient`. A Unix socket lives in the filesystem, which every network namespace shares, so the
//! CLI on the host reaches a lab router's daemon without any route into the lab.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::Server;
use tonic::{Request, Response, Status};
use wuos_proto::pb;
use wuos_proto::pb::admin_server::{Admin, AdminServer};

use crate::daemon::{Shared, unix_ns};

struct AdminSvc(Arc<Shared>);

#[tonic::async_trait]
impl Admin for AdminSvc {
    async fn status(&self, _: Request<pb::StatusRequest>) -> Result<Response<pb::StatusReply>, Status> {
        let now = self.0.now_ms();
        let mut reply = self.0.lock().status(now, unix_ns());
        if let Some(dp) = &self.0.datapath {
            reply.datapath = dp
                .summary()
                .into_iter()
                .map(|(service, packets, flows, to)| pb::DataPathService {
                    service,
                    packets,
                    flows,
                    redirect_to: to.unwrap_or_default(),
                })
                .collect();
        }
        let m = &self.0.metrics;
        for (name, v) in [("bytes_sent", &m.bytes_sent), ("bytes_received", &m.bytes_received)] {
            reply.counters.push(pb::Counter {
                name: name.into(),
                value: v.load(std::sync::atomic::Ordering::Relaxed),
            });
        }
        Ok(Response::new(reply))
    }

    async fn list_domains(&self, _: Request<pb::ListDomainsRequest>) -> Result<Response<pb::DomainList>, Status> {
        self.with_domains(|d| Ok(d.list())).await
    }

    async fn start_service(&self, req: Request<pb::StartServiceRequest>) -> Result<Response<pb::DomainInfo>, Status> {
        let r = req.into_inner();
        let params = r.params.into_iter().collect();
        self.with_domains(move |d| d.start_service(&r.service, &r.name, &params))
            .await
    }

    async fn stop_domain(&self, req: Request<pb::DomainRef>) -> Result<Response<pb::DomainInfo>, Status> {
        let name = req.into_inner().name;
        self.with_domains(move |d| d.stop(&name)).await
    }

    async fn apply_policy(&self, req: Request<pb::ApplyPolicyRequest>) -> Result<Response<pb::PolicyReply>, Status> {
        let o = self.orchestration()?;
        let r = req.into_inner();
        let source = if r.source.is_empty() { "policy".into() } else { r.source };
        o.apply_policy(r.text, source)
            .await
            .map(Response::new)
            .map_err(Status::invalid_argument)
    }

    async fn get_policy(&self, _: Request<pb::GetPolicyRequest>) -> Result<Response<pb::PolicyReply>, Status> {
        Ok(Response::new(self.orchestration()?.policy()))
    }

    async fn decisions(&self, _: Request<pb::DecisionsRequest>) -> Result<Response<pb::DecisionList>, Status> {
        Ok(Response::new(self.orchestration()?.decisions()))
    }

    async fn pause_domain(&self, req: Request<pb::DomainRef>) -> Result<Response<pb::DomainInfo>, Status> {
        let name = req.into_inner().name;
        self.with_domains(move |d| d.pause(&name)).await
    }

    async fn resume_domain(&self, req: Request<pb::DomainRef>) -> Result<Response<pb::DomainInfo>, Status> {
        let name = req.into_inner().name;
        self.with_domains(move |d| d.resume(&name)).await
    }

    async fn destroy_domain(&self, req: Request<pb::DomainRef>) -> Result<Response<pb::DomainInfo>, Status> {
        let name = req.into_inner().name;
        self.with_domains(move |d| d.destroy(&name)).await
    }
}

impl AdminSvc {
    /// Runs a domain operation on a blocking thread (namespaces, cgroups and process spawning are
    /// synchronous) and maps its error to a gRPC status that says what went wrong.
    fn orchestration(&self) -> Result<&Arc<crate::orchestration::Orchestration>, Status> {
        self.0.orchestration.get().ok_or_else(|| {
            Status::not_found(format!(
                "{} runs no orchestrator (no [orchestrator] in its config; fog routers of a lab have one)",
                self.0.cfg.router_id
            ))
        })
    }

    async fn with_domains<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut crate::domains::Domains) -> Result<T, crate::domains::DomainsError> + Send + 'static,
    ) -> Result<Response<T>, Status> {
        let shared = self.0.clone();
        let r = tokio::task::spawn_blocking(move || {
            let Some(domains) = &shared.domains else {
                return Err(Status::not_found(
                    "this router runs no domains (no [domains] section in its wuosd config)",
                ));
            };
            let mut d = domains.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut d).map_err(|e| wuos_proto::status::to_status(&e))
        })
        .await
        .map_err(|e| Status::internal(format!("domain operation panicked: {e}")))?;
        r.map(Response::new)
    }
}

/// Binds `path` (replacing a stale socket) and serves until `stop` turns true.
pub fn serve(
    shared: Arc<Shared>,
    path: &Path,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).with_context(|| format!("cannot bind admin socket {}", path.display()))?;
    let incoming = UnixListenerStream::new(listener);
    Ok(tokio::spawn(async move {
        let _ = Server::builder()
            .add_service(AdminServer::new(AdminSvc(shared)))
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = stop.changed().await;
            })
            .await;
    }))
}
