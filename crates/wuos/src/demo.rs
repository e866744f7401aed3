//! `wuos demo`: brings up the sample lab, shows reachability and link delay, prints a summary and
//! tears the lab down. (The VoIP/PABX scenario replaces it as the main demo in a later issue.)

use std::time::Duration;

use anyhow::{Result, bail};
use clap::Args;
use wuos_lab::probe::parse_ping;
use wuos_lab::progress::Silent;
use wuos_lab::{LabEnv, down, status, up};

use crate::lab::{Bar, exec_output};

const DEMO_TOPOLOGY: &str = include_str!("../../../examples/demo.toml");

#[derive(Args)]
pub struct DemoArgs {
    #[command(subcommand)]
    scenario: Option<Scenario>,
    /// Leave the lab up at the end.
    #[arg(long)]
    keep: bool,
}

#[derive(clap::Subcommand)]
enum Scenario {
    /// The VoIP scenario: a PABX moved by the fog router's orchestrator between the data centre
    /// and the fog router while calls go on; timeline, call-setup times, plot.
    Voip(crate::demo_voip::VoipArgs),
}

pub fn run(args: DemoArgs) -> Result<()> {
    if let Some(Scenario::Voip(a)) = args.scenario {
        return crate::demo_voip::run(a);
    }
    let env = LabEnv::system();
    let topo = wuos_model::file::parse(DEMO_TOPOLOGY, "examples/demo.toml")?;
    let name = "demo".to_string();
    if wuos_lab::state::LabState::exists(&env, &name) {
        println!("removing the demo lab left from an earlier run");
        down::down(&env, &name, &Silent)?;
    }
    println!("== 1. bring up the sample lab (examples/demo.toml)");
    let bar = Bar::new();
    let r = up::up(
        &env,
        topo,
        &up::UpOptions {
            name: name.clone(),
            workers: up::default_workers(),
            daemons: Some(wuos_lab::daemons::DaemonOptions {
                telemetry_interval: Duration::from_millis(500),
                hop_limit: 2,
                ..Default::default()
            }),
        },
        &bar,
    );
    bar.finish();
    let r = r?;
    println!(
        "   {} routers, {} links, {} routes in {:.0} ms (cgroup {})",
        r.nodes, r.links, r.routes, r.total_ms, r.cgroup_version
    );
    let result = show(&env, &name);
    if args.keep {
        println!("== the lab stays up: wuos lab status {name}; wuos lab down {name}");
    } else {
        println!("== 5. tear down");
        let d = down::down(&env, &name, &Silent)?;
        println!(
            "   removed {} namespaces and {} processes in {:.0} ms",
            d.namespaces, d.processes, d.total_ms
        );
    }
    result
}

fn show(env: &LabEnv, lab: &str) -> Result<()> {
    let st = status::status(env, lab)?;
    println!("== 2. reachability: ping from h1 to every router's loopback");
    let mut ok = 0;
    for n in &st.nodes {
        let out = exec_output(
            lab,
            "h1",
            &["ping", "-q", "-c", "3", "-i", "0.2", "-W", "1", &n.loopback.to_string()],
            Duration::from_secs(5),
        )?;
        let p = parse_ping(&String::from_utf8_lossy(&out.stdout));
        let (rx, avg) = (p.received, p.avg_ms);
        let mark = if rx > 0 { "ok" } else { "UNREACHABLE" };
        ok += usize::from(rx > 0);
        println!(
            "   h1 -> {:<6} {:<15} {:>2}/3 replies  rtt {:>8}  {mark}",
            n.name,
            n.loopback.to_string(),
            rx,
            avg.map_or("-".into(), |a| format!("{a:.2} ms"))
        );
    }
    println!("== 3. link delay: fog1 <-> dc1 is configured with 15 ms each way");
    let dc = st
        .nodes
        .iter()
        .find(|n| n.name == "dc1")
        .map(|n| n.loopback.to_string())
        .unwrap_or_default();
    let out = exec_output(
        lab,
        "fog1",
        &["ping", "-q", "-c", "10", "-i", "0.1", &dc],
        Duration::from_secs(5),
    )?;
    let wan = parse_ping(&String::from_utf8_lossy(&out.stdout)).avg_ms;
    let wan = wan.unwrap_or(f64::NAN);
    println!("   fog1 -> dc1 RTT {wan:.2} ms (expected 30 ms plus a little)");
    println!("== 4. telemetry: fog1's daemon's view of its neighborhood (augmented SD-WAN protocol, 2 hops)");
    let sock = wuos_lab::daemons::socket_path(env, lab, "fog1");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let deadline = std::time::Instant::now() + Duration::from_secs(8);
    // fog1 reaches every router within 2 hops: edge1, dc1, edge2 (1 hop), h1, h2 (2 hops).
    let mut view = loop {
        let r = rt.block_on(wuos_proto::admin::status(sock.clone()))?;
        if r.view.len() >= 5 || std::time::Instant::now() > deadline {
            break r.view;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    view.sort_by_key(|v| (v.hops, v.advert.as_ref().map(|a| a.origin.clone())));
    for v in &view {
        let a = v.advert.clone().unwrap_or_default();
        let r = a.resources.unwrap_or_default();
        println!(
            "   {:<6} {} hop{}  cpu {:5.1}% of {:.2} cores  memory {:5.1}% ({})  sample {:.1} ms old on arrival",
            a.origin,
            v.hops,
            if v.hops == 1 { " " } else { "s" },
            r.cpu_used_pct,
            r.cpu_capacity_cores,
            r.mem_used_pct,
            crate::router::human(r.mem_used_bytes),
            v.latency_ms
        );
    }
    println!(
        "== summary: {ok}/{} routers reachable from h1; WAN RTT {wan:.2} ms; fog1 sees {} routers within 2 hops",
        st.nodes.len(),
        view.len()
    );
    if view.len() < 5 {
        bail!("fog1 saw only {} of the 5 routers within 2 hops", view.len());
    }
    if ok != st.nodes.len() {
        bail!("only {ok} of {} routers were reachable", st.nodes.len());
    }
    if !(30.0..40.0).contains(&wan) {
        bail!("the WAN round trip was {wan:.2} ms, outside 30-40 ms");
    }
    Ok(())
}
