//! `wuos demo` without a scenario: brings up the sample lab (`examples/demo.toml`), shows
//! reachability, link delay and a router's view of its neighborhood, prints a summary and tears
//! the lab down. The main demo is the VoIP scenario ([`crate::voip`]).

use std::time::Duration;

use anyhow::{Result, bail};
use wuos_lab::probe::parse_ping;
use wuos_lab::progress::{Progress, Silent};
use wuos_lab::{LabEnv, down, status, up};

use crate::node::Node;

const DEMO_TOPOLOGY: &str = include_str!("../../../examples/demo.toml");

/// Runs the sample-lab demo; `progress` shows the bring-up, `up_done` is called when it is over;
/// `keep` leaves the lab up.
pub fn run(keep: bool, progress: &dyn Progress, up_done: impl FnOnce()) -> Result<()> {
    let env = LabEnv::system();
    let topo = wuos_model::file::parse(DEMO_TOPOLOGY, "examples/demo.toml")?;
    let name = "demo".to_string();
    if wuos_lab::state::LabState::exists(&env, &name) {
        println!("removing the demo lab left from an earlier run");
        down::down(&env, &name, &Silent)?;
    }
    println!("== 1. bring up the sample lab (examples/demo.toml)");
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
        progress,
    );
    up_done();
    let r = r?;
    println!(
        "   {} routers, {} links, {} routes in {:.0} ms (cgroup {})",
        r.nodes, r.links, r.routes, r.total_ms, r.cgroup_version
    );
    let result = show(&env, &name);
    if keep {
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
        let out = Node::new(env, lab, "h1").ping(
            &[],
            &["-q", "-c", "3", "-i", "0.2", "-W", "1"],
            &n.loopback.to_string(),
            Duration::from_secs(5),
        )?;
        let p = parse_ping(&out);
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
    let out = Node::new(env, lab, "fog1").ping(&[], &["-q", "-c", "10", "-i", "0.1"], &dc, Duration::from_secs(5))?;
    let wan = parse_ping(&out).avg_ms;
    let wan = wan.unwrap_or(f64::NAN);
    println!("   fog1 -> dc1 RTT {wan:.2} ms (expected 30 ms plus a little)");
    println!("== 4. telemetry: fog1's daemon's view of its neighborhood (augmented SD-WAN protocol, 2 hops)");
    let sock = wuos_lab::daemons::socket_path(env, lab, "fog1");
    let rt = crate::node::runtime()?;
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
            "   {:<6} {} hop{}  cpu {:5.1}% of {:.2} cores  memory {:5.1}% ({:.1} MiB)  sample {:.1} ms old on arrival",
            a.origin,
            v.hops,
            if v.hops == 1 { " " } else { "s" },
            r.cpu_used_pct,
            r.cpu_capacity_cores,
            r.mem_used_pct,
            r.mem_used_bytes as f64 / f64::from(1 << 20),
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
