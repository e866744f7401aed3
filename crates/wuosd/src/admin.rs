//! The local administration API (Status) on a Unix socket, and its client for `wuos status` and
//! `wuos top`. A Unix socket lives in the filesystem, which every network namespace shares, so the
//! CLI on the host reaches a lab router's daemon without any route into the lab.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use hyper_util::rt::TokioIo;
use tokio::net::{UnixListener, UnixStream};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::{Endpoint, Server, Uri};
use tonic::{Request, Response, Status};
use wuos_proto::pb;
use wuos_proto::pb::admin_client::AdminClient;
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
            Status::failed_precondition(format!(
                "{} runs no orchestrator (no [orchestrator] in its config; fog routers of a lab have one)",
                self.0.cfg.router_id
            ))
        })
    }

    async fn with_domains<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut crate::domains::Domains) -> Result<T, crate::domains::DomainsError> + Send + 'static,
    ) -> Result<Response<T>, Status> {
        use crate::domains::DomainsError as E;
        let shared = self.0.clone();
        let r = tokio::task::spawn_blocking(move || {
            let Some(domains) = &shared.domains else {
                return Err(Status::failed_precondition(
                    "this router runs no domains (no [domains] section in its wuosd config)",
                ));
            };
            let mut d = domains.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut d).map_err(|e| match e {
                E::UnknownService(..) | E::UnknownDomain(_) => Status::not_found(e.to_string()),
                E::Refused(_) | E::Exists(_) | E::SubnetFull(_) => Status::failed_precondition(e.to_string()),
                E::Catalog(_) => Status::invalid_argument(e.to_string()),
                E::Backend(_) | E::Store(_) => Status::internal(e.to_string()),
            })
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

/// Asks the daemon behind `socket` for its status.
pub async fn status(socket: &Path) -> Result<pb::StatusReply> {
    Ok(client(socket)
        .await?
        .status(pb::StatusRequest {})
        .await
        .map_err(|s| anyhow::anyhow!("wuosd status: {}", s.message()))?
        .into_inner())
}

/// A StatusReply as JSON (prost messages do not derive serde), for `wuos status --json` and tools.
pub fn status_json(r: &pb::StatusReply) -> serde_json::Value {
    use serde_json::json;
    let pressure = |p: &Option<pb::Pressure>| {
        p.as_ref()
            .map(|p| json!({"some_avg10": p.some_avg10, "full_avg10": p.full_avg10}))
    };
    let advert = |a: &pb::TelemetryAdvert| {
        let r = a.resources.unwrap_or_default();
        json!({
            "origin": a.origin,
            "boot_id": a.boot_id,
            "sequence": a.sequence,
            "timestamp_unix_ns": a.timestamp_unix_ns,
            "hop_limit": a.hop_limit,
            "interval_ms": a.interval_ms,
            "role": role_name(a.role()),
            "resources": {
                "cpu_used_pct": r.cpu_used_pct,
                "cpu_capacity_cores": r.cpu_capacity_cores,
                "mem_used_pct": r.mem_used_pct,
                "mem_used_bytes": r.mem_used_bytes,
                "mem_total_bytes": r.mem_total_bytes,
                "disk_read_bytes_per_s": r.disk_read_bytes_per_s,
                "disk_write_bytes_per_s": r.disk_write_bytes_per_s,
                "free_cpu_cores": r.free_cpu_cores,
                "free_mem_bytes": r.free_mem_bytes,
                "cpu_pressure": pressure(&r.cpu_pressure),
                "mem_pressure": pressure(&r.mem_pressure),
                "io_pressure": pressure(&r.io_pressure),
            },
            "services": a.services.iter().map(|s| json!({
                "service": s.service, "state": s.state, "name": s.name, "cpu_pct": s.cpu_pct,
                "memory_bytes": s.memory_bytes, "memory_limit": s.memory_limit, "health": s.health,
            })).collect::<Vec<_>>(),
            "control_address": a.control_address,
            "demand": a.demand.iter().map(|d| json!({
                "service": d.service, "flows_per_s": d.flows_per_s, "packets": d.packets,
            })).collect::<Vec<_>>(),
            "links": a.links.iter().map(|l| json!({
                "interface": l.interface, "neighbor": l.neighbor,
                "rx_bytes_per_s": l.rx_bytes_per_s, "tx_bytes_per_s": l.tx_bytes_per_s,
                "rx_packets_per_s": l.rx_packets_per_s, "tx_packets_per_s": l.tx_packets_per_s,
                "rtt_ms": l.rtt_ms, "up": l.up,
            })).collect::<Vec<_>>(),
        })
    };
    json!({
        "router_id": r.router_id,
        "role": role_name(r.role()),
        "boot_id": r.boot_id,
        "uptime_ms": r.uptime_ms,
        "own": r.own.as_ref().map(advert),
        "view": r.view.iter().map(|v| json!({
            "origin": v.advert.as_ref().map(|a| a.origin.clone()),
            "hops": v.hops,
            "age_ms": v.age_ms,
            "learned_from": v.learned_from,
            "stale": v.stale,
            "latency_ms": v.latency_ms,
            "advert": v.advert.as_ref().map(advert),
        })).collect::<Vec<_>>(),
        "neighbors": r.neighbors.iter().map(|n| json!({
            "id": n.id, "address": n.address, "interface": n.interface,
            "state": n.state, "rtt_ms": n.rtt_ms, "last_heard_ms": n.last_heard_ms,
        })).collect::<Vec<_>>(),
        "counters": r.counters.iter().map(|c| (c.name.clone(), json!(c.value))).collect::<serde_json::Map<_, _>>(),
        "datapath": r.datapath.iter().map(|d| json!({
            "service": d.service, "packets": d.packets, "flows": d.flows, "redirect_to": d.redirect_to,
        })).collect::<Vec<_>>(),
    })
}

/// The lowercase name of a role, as topologies spell it.
pub fn role_name(r: pb::Role) -> &'static str {
    match r {
        pb::Role::Unspecified => "unspecified",
        pb::Role::Edge => "edge",
        pb::Role::Fog => "fog",
        pb::Role::Dc => "dc",
        pb::Role::Host => "host",
    }
}

/// Connects to the daemon behind `socket` (for the domain RPCs).
pub async fn client(socket: &Path) -> Result<AdminClient<tonic::transport::Channel>> {
    let path = socket.to_owned();
    let channel = Endpoint::try_from("http://wuosd.local")?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
        .with_context(|| format!("no wuosd answers on {}", socket.display()))?;
    Ok(AdminClient::new(channel))
}
