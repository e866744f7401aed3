//! `wuos status ROUTER` and `wuos top [LAB]`: what the router daemons see, through their local
//! admin sockets; `wuos hog`: a memory/CPU load for tests and demos.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use wuos_lab::{LabEnv, daemons, status};
use wuos_model::units::{parse_bytes, parse_duration};
use wuos_proto::pb;

use crate::topo::BadInput;

#[derive(Args)]
pub struct StatusArgs {
    /// The router (in the one lab that is up, or the one given with --lab).
    router: Option<String>,
    #[command(flatten)]
    daemon: crate::target::DaemonArgs,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct TopArgs {
    lab: Option<String>,
    /// Refresh period.
    #[arg(long, default_value = "1s")]
    interval: String,
    /// Print one table and exit.
    #[arg(long)]
    once: bool,
}

#[derive(Args)]
pub struct HogArgs {
    /// Memory to allocate and keep touched, e.g. 200MiB.
    #[arg(long, default_value = "0")]
    memory: String,
    /// Busy-loop CPU threads.
    #[arg(long, default_value_t = 0)]
    cpus: usize,
    /// How long to hold the load.
    #[arg(long, default_value = "10s")]
    duration: String,
}

#[derive(Args)]
pub struct EchoArgs {
    /// UDP port to answer on.
    #[arg(long, default_value_t = 7)]
    port: u16,
    /// Address to bind.
    #[arg(long, default_value = "0.0.0.0")]
    bind: String,
}

/// Sends every UDP datagram back to where it came from, until killed.
pub fn echo(a: EchoArgs) -> Result<()> {
    let sock = std::net::UdpSocket::bind((a.bind.as_str(), a.port))
        .with_context(|| format!("cannot bind udp {}:{}", a.bind, a.port))?;
    eprintln!("echo: answering on udp {}", sock.local_addr()?);
    let mut buf = [0u8; 65536];
    loop {
        let (n, from) = sock.recv_from(&mut buf)?;
        sock.send_to(&buf[..n], from)?;
    }
}

/// Bytes for people: three significant figures in B, KiB, MiB or GiB.
pub fn human(b: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b}B")
    } else {
        format!("{v:.1}{}", units[i])
    }
}

fn pct(v: f64) -> String {
    format!("{v:5.1}%")
}

pub fn status(a: StatusArgs) -> Result<()> {
    let daemon = a.daemon.resolve(a.router.as_deref())?;
    let reply =
        crate::target::runtime()?.block_on(async { Ok::<_, anyhow::Error>(daemon.client().await?.status().await?) })?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&reply)?);
        return Ok(());
    }
    println!(
        "router {} ({}), boot {}, up {:.1} s",
        reply.router_id,
        reply.role().name(),
        reply.boot_id,
        reply.uptime_ms as f64 / 1e3
    );
    if let Some(own) = &reply.own {
        if let Some(r) = &own.resources {
            println!(
                "  own: cpu {} of {:.2} cores, memory {} ({} of {}), disk r/w {}/s {}/s, advert #{}",
                pct(r.cpu_used_pct),
                r.cpu_capacity_cores,
                pct(r.mem_used_pct),
                human(r.mem_used_bytes),
                human(r.mem_total_bytes),
                human(r.disk_read_bytes_per_s),
                human(r.disk_write_bytes_per_s),
                own.sequence
            );
        }
        for l in &own.links {
            println!(
                "  link {:<6} -> {:<10} rx {:>10}/s tx {:>10}/s",
                l.interface,
                l.neighbor,
                human(l.rx_bytes_per_s),
                human(l.tx_bytes_per_s)
            );
        }
    }
    println!("  neighbors:");
    for n in &reply.neighbors {
        println!(
            "    {:<12} {:<5} {:<22} rtt {:>8} last heard {} ms ago",
            n.id,
            n.state,
            n.address,
            n.rtt_ms.map_or("-".into(), |r| format!("{r:.2} ms")),
            n.last_heard_ms
        );
    }
    println!("  neighborhood view:");
    println!("    ROUTER       HOPS      AGE     CPU     MEM   MEM USED   LATENCY VIA");
    let mut view = reply.view.clone();
    view.sort_by(|a, b| a.hops.cmp(&b.hops).then_with(|| origin(a).cmp(origin(b))));
    for v in &view {
        let r = v
            .advert
            .as_ref()
            .and_then(|a| a.resources.as_ref())
            .cloned()
            .unwrap_or_default();
        println!(
            "    {:<12} {:>4} {:>6}ms {} {} {:>10} {:>7.2}ms {}{}",
            origin(v),
            v.hops,
            v.age_ms,
            pct(r.cpu_used_pct),
            pct(r.mem_used_pct),
            human(r.mem_used_bytes),
            v.latency_ms,
            v.learned_from,
            if v.stale { "  STALE" } else { "" }
        );
    }
    Ok(())
}

fn origin(v: &pb::ViewEntry) -> &str {
    v.advert.as_ref().map_or("", |a| a.origin.as_str())
}

pub fn top(a: TopArgs) -> Result<()> {
    let env = LabEnv::system();
    let lab = status::resolve(&env, a.lab.as_deref())?;
    let every = parse_duration(&a.interval).map_err(|e| BadInput(e.to_string()))?;
    let st = wuos_lab::state::LabState::load(&env, &lab)?;
    let rt = crate::target::runtime()?;
    loop {
        let t0 = Instant::now();
        let mut out = String::new();
        if !a.once {
            out.push_str("\x1b[H\x1b[2J");
        }
        out.push_str(&format!(
            "wuos top — lab {lab}, {} routers, every {:?} (ctrl-c to quit)\n{:<12} {:<5} {:>7} {:>6} {:>7} {:>10} {:>10} {:>10} {:>6} {:>5}\n",
            st.topology.nodes.len(),
            every,
            "ROUTER", "ROLE", "CPU", "CORES", "MEM", "MEM USED", "RX/s", "TX/s", "NBRS", "VIEW"
        ));
        for n in &st.topology.nodes {
            let sock = daemons::socket_path(&env, &lab, &n.name);
            match rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(1), wuos_proto::admin::status(sock.clone())).await
            }) {
                Ok(Ok(r)) => {
                    let own = r.own.unwrap_or_default();
                    let res = own.resources.unwrap_or_default();
                    let rx: u64 = own.links.iter().map(|l| l.rx_bytes_per_s).sum();
                    let tx: u64 = own.links.iter().map(|l| l.tx_bytes_per_s).sum();
                    let up = r.neighbors.iter().filter(|n| n.state == "up").count();
                    out.push_str(&format!(
                        "{:<12} {:<5} {:>7} {:>6.2} {:>7} {:>10} {:>10} {:>10} {:>6} {:>5}\n",
                        n.name,
                        n.role.to_string(),
                        pct(res.cpu_used_pct),
                        res.cpu_capacity_cores,
                        pct(res.mem_used_pct),
                        human(res.mem_used_bytes),
                        human(rx),
                        human(tx),
                        format!("{up}/{}", r.neighbors.len()),
                        r.view.len()
                    ));
                }
                _ => out.push_str(&format!(
                    "{:<12} {:<5} (no daemon answers)\n",
                    n.name,
                    n.role.to_string()
                )),
            }
        }
        print!("{out}");
        std::io::stdout().flush()?;
        if a.once {
            return Ok(());
        }
        std::thread::sleep(every.saturating_sub(t0.elapsed()));
    }
}

/// Holds `--memory` bytes (every page touched, so it is really resident) and spins `--cpus`
/// threads for `--duration`.
pub fn hog(a: HogArgs) -> Result<()> {
    let bytes = if a.memory == "0" {
        0
    } else {
        parse_bytes(&a.memory).map_err(|e| BadInput(e.to_string()))?
    };
    let duration = parse_duration(&a.duration).map_err(|e| BadInput(e.to_string()))?;
    let mut v: Vec<u8> = Vec::new();
    v.try_reserve_exact(bytes as usize)
        .context("cannot allocate the memory")?;
    v.resize(bytes as usize, 1);
    let deadline = Instant::now() + duration;
    let spinners: Vec<_> = (0..a.cpus)
        .map(|_| {
            std::thread::spawn(move || {
                let mut x = 0u64;
                while Instant::now() < deadline {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            })
        })
        .collect();
    eprintln!(
        "hog: holding {} and {} busy threads for {:?}",
        human(bytes),
        a.cpus,
        duration
    );
    while Instant::now() < deadline {
        // Touch a byte per page now and then so the memory stays resident.
        for i in (0..v.len()).step_by(4096) {
            v[i] = v[i].wrapping_add(1);
        }
        std::thread::sleep(Duration::from_millis(200).min(deadline.saturating_duration_since(Instant::now())));
    }
    for s in spinners {
        let _ = s.join();
    }
    std::hint::black_box(&v);
    Ok(())
}
