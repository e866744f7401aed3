//! `wuos service list|start|stop|pause|resume|destroy --router R`: services (domains) on a lab
//! router, through its daemon's admin socket.

use anyhow::Result;
use clap::{Args, Subcommand};
use serde_json::json;
use wuos_lab::{LabEnv, daemons, status};
use wuos_proto::pb;

use crate::router::human;

#[derive(Args)]
pub struct ServiceArgs {
    #[command(subcommand)]
    cmd: ServiceCmd,
    /// The router.
    #[arg(long, global = true)]
    router: Option<String>,
    #[arg(long, global = true)]
    lab: Option<String>,
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
enum ServiceCmd {
    /// Domains on the router, with what is left for services.
    List,
    /// Start an instance of a catalog service (pabx, stress, echo, …).
    Start {
        service: String,
        /// Instance name (default SERVICE-N).
        #[arg(long)]
        name: Option<String>,
        /// Template parameters, KEY=VALUE.
        #[arg(long = "param", value_parser = parse_kv)]
        params: Vec<(String, String)>,
    },
    Stop {
        name: String,
    },
    Pause {
        name: String,
    },
    Resume {
        name: String,
    },
    Destroy {
        name: String,
    },
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?}: use KEY=VALUE"))
}

pub fn domain_json(d: &pb::DomainInfo) -> serde_json::Value {
    json!({
        "name": d.name, "kind": d.kind, "service": d.service, "state": d.state, "pid": d.pid,
        "address": d.address, "cpus": d.cpus, "cpu_pct": d.cpu_pct, "memory_limit": d.memory_limit,
        "memory_bytes": d.memory_bytes, "restarts": d.restarts, "start_ms": d.start_ms,
        "from_pool": d.from_pool, "health": d.health, "health_detail": d.health_detail,
    })
}

fn print_one(d: &pb::DomainInfo, json_out: bool) -> Result<()> {
    if json_out {
        println!("{}", serde_json::to_string_pretty(&domain_json(d))?);
    } else {
        println!(
            "{} ({} {}): {}{}{}",
            d.name,
            d.kind,
            d.service,
            d.state,
            if d.pid > 0 {
                format!(", pid {}", d.pid)
            } else {
                String::new()
            },
            if d.start_ms > 0.0 {
                format!(
                    ", started in {:.1} ms{}",
                    d.start_ms,
                    if d.from_pool { " from the idle pool" } else { "" }
                )
            } else {
                String::new()
            }
        );
    }
    Ok(())
}

pub fn run(a: ServiceArgs) -> Result<()> {
    let env = LabEnv::system();
    let lab = status::resolve(&env, a.lab.as_deref())?;
    let router = a
        .router
        .ok_or_else(|| crate::topo::BadInput("give the router with --router R".into()))?;
    let sock = daemons::socket_path(&env, &lab, &router);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let mut c = wuosd::admin::client(&sock).await?;
        let refused = |s: tonic::Status| -> anyhow::Error {
            match s.code() {
                tonic::Code::NotFound => crate::topo::NotFound(s.message().to_string()).into(),
                tonic::Code::FailedPrecondition | tonic::Code::InvalidArgument => {
                    crate::topo::BadInput(s.message().to_string()).into()
                }
                _ => anyhow::anyhow!("{}", s.message()),
            }
        };
        let one = match a.cmd {
            ServiceCmd::List => {
                let l = c
                    .list_domains(pb::ListDomainsRequest {})
                    .await
                    .map_err(refused)?
                    .into_inner();
                if a.json {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&json!({
                            "router": router,
                            "domains": l.domains.iter().map(domain_json).collect::<Vec<_>>(),
                            "free_cpus": l.free_cpus, "free_memory": l.free_memory, "pool_idle": l.pool_idle,
                        }))?
                    );
                } else {
                    println!(
                        "router {router}: {:.2} cores and {} free for services, {} idle in the pool",
                        l.free_cpus,
                        human(l.free_memory),
                        l.pool_idle
                    );
                    println!(
                        "{:<16} {:<8} {:<8} {:<10} {:<10} {:>7} {:>6} {:>10} {:<15}",
                        "NAME", "KIND", "SERVICE", "STATE", "HEALTH", "PID", "CPUS", "MEMORY", "ADDRESS"
                    );
                    for d in &l.domains {
                        println!(
                            "{:<16} {:<8} {:<8} {:<10} {:<10} {:>7} {:>6.2} {:>10} {:<15}",
                            d.name,
                            d.kind,
                            d.service,
                            d.state,
                            if d.health.is_empty() { "-" } else { &d.health },
                            d.pid,
                            d.cpus,
                            human(d.memory_bytes),
                            d.address
                        );
                    }
                }
                return Ok(());
            }
            ServiceCmd::Start { service, name, params } => c
                .start_service(pb::StartServiceRequest {
                    service,
                    name: name.unwrap_or_default(),
                    params: params.into_iter().collect(),
                })
                .await
                .map_err(refused)?,
            ServiceCmd::Stop { name } => c.stop_domain(pb::DomainRef { name }).await.map_err(refused)?,
            ServiceCmd::Pause { name } => c.pause_domain(pb::DomainRef { name }).await.map_err(refused)?,
            ServiceCmd::Resume { name } => c.resume_domain(pb::DomainRef { name }).await.map_err(refused)?,
            ServiceCmd::Destroy { name } => c.destroy_domain(pb::DomainRef { name }).await.map_err(refused)?,
        };
        print_one(&one.into_inner(), a.json)
    })
}
