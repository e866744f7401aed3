//! `wuos service list|start|stop|pause|resume|destroy --router R`: services (domains) on a lab
//! router (or any daemon, `--socket`/`--address`), through its admin API.

use anyhow::Result;
use clap::{Args, Subcommand};
use wuos_proto::admin::DomainVerb;
use wuos_proto::pb;

use crate::router::human;

#[derive(Args)]
pub struct ServiceArgs {
    #[command(subcommand)]
    cmd: ServiceCmd,
    /// The router.
    #[arg(long, global = true)]
    router: Option<String>,
    #[command(flatten)]
    daemon: crate::target::DaemonArgs,
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

fn print_one(d: &pb::DomainInfo, json_out: bool) -> Result<()> {
    if json_out {
        println!("{}", serde_json::to_string_pretty(d)?);
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
    let daemon = a.daemon.resolve(a.router.as_deref())?;
    let router = daemon.name.clone();
    crate::target::runtime()?.block_on(async {
        let mut c = daemon.client().await?;
        let one = match a.cmd {
            ServiceCmd::List => {
                let l = c.list_domains().await?;
                if a.json {
                    let mut v = serde_json::to_value(&l)?;
                    v["router"] = router.into();
                    println!("{}", serde_json::to_string_pretty(&v)?);
                } else {
                    println!(
                        "router {router}: {:.2} cores and {} free for services, {} idle in the pool",
                        l.free_cpus,
                        human(l.free_memory),
                        l.pool_idle
                    );
                    for d in &l.reserved {
                        println!(
                            "{} domain: {}, {} kept from services{} — holds {}{}",
                            d.kind,
                            if d.cores.is_empty() {
                                "shares the cores".to_string()
                            } else {
                                format!("cores {}", d.cores)
                            },
                            if d.memory_limit > 0 {
                                human(d.memory_limit)
                            } else {
                                "no memory".into()
                            },
                            if d.memory_bytes > 0 {
                                format!(", uses {}", human(d.memory_bytes))
                            } else {
                                String::new()
                            },
                            d.holds,
                            if d.pid > 0 {
                                format!(" (pid {})", d.pid)
                            } else {
                                String::new()
                            },
                        );
                    }
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
            ServiceCmd::Start { service, name, params } => {
                c.start_service(&service, name.as_deref().unwrap_or(""), params.into_iter().collect())
                    .await?
            }
            ServiceCmd::Stop { name } => c.domain(DomainVerb::Stop, &name).await?,
            ServiceCmd::Pause { name } => c.domain(DomainVerb::Pause, &name).await?,
            ServiceCmd::Resume { name } => c.domain(DomainVerb::Resume, &name).await?,
            ServiceCmd::Destroy { name } => c.domain(DomainVerb::Destroy, &name).await?,
        };
        print_one(&one, a.json)
    })
}
