//! `wuos bench isolation`: is routing unaffected by the router's services? Measured the way QuaSAR
//! (seeds/003) measured partitioning: forwarding latency and throughput through one router while
//! its service domains run CPU and memory stress, with the routing reservation on and off, beside
//! the idle figure, in one run.
//!
//! Lab: h1 — r2 — h3; r2 (fog, 2 cores, 4 GiB) hosts the services. The router's packet processing
//! runs on core 0 here: the traffic endpoints are pinned there (`taskset -c 0`), so the kernel
//! forwards their packets on core 0 — what IRQ affinity does for a NIC on a real router. With the
//! reservation, core 0 is the routing domain's and services are pinned to the other core; without
//! it, services may run anywhere.

use std::path::Path;
use std::time::Duration;

use crate::bench::pct;
use anyhow::{Context, Result, bail};
use serde::Serialize;
use wuos_lab::daemons::{DaemonOptions, socket_path};
use wuos_lab::probe::parse_ping;
use wuos_lab::progress::Silent;
use wuos_lab::{LabEnv, down, status, up};

use crate::lab::exec_output;

const TOPOLOGY: &str = "[[node]]\nname = \"h1\"\nrole = \"host\"\n\
    [[node]]\nname = \"r2\"\nrole = \"fog\"\ncpus = 2.0\nmemory = \"4GiB\"\n\
    [[node]]\nname = \"h3\"\nrole = \"host\"\n\
    [[link]]\na = \"h1\"\nb = \"r2\"\n[[link]]\na = \"r2\"\nb = \"h3\"\n";

#[derive(Serialize, Clone)]
struct Case {
    case: String,
    /// Stress domains asked for, and how many admission let in.
    stress_requested: usize,
    stress_domains: usize,
    ping_samples: usize,
    p50_us: f64,
    p99_us: f64,
    throughput_gbps: f64,
}

#[derive(Serialize)]
struct Report {
    machine: String,
    method: String,
    idle_p50_us: f64,
    idle_p99_us: f64,
    idle_gbps: f64,
    reserved_p50_us: f64,
    reserved_p99_us: f64,
    reserved_gbps: f64,
    unreserved_p50_us: f64,
    unreserved_p99_us: f64,
    unreserved_gbps: f64,
    reserved_p99_over_idle_pct: f64,
    unreserved_p99_over_idle_pct: f64,
    /// Medians over the runs.
    cases: Vec<Case>,
    /// Every run, for the spread.
    runs: Vec<Case>,
}

fn measure(lab: &str, name: &str, requested: usize, stress: usize, pings: u32) -> Result<Case> {
    let env = LabEnv::system();
    let st = status::status(&env, lab)?;
    let h3 = st
        .nodes
        .iter()
        .find(|n| n.name == "h3")
        .context("h3")?
        .loopback
        .to_string();
    // Latency: pings from core 0, every 2 ms.
    let out = exec_output(
        lab,
        "h1",
        &[
            "taskset",
            "-c",
            "0",
            "ping",
            "-i",
            "0.002",
            "-c",
            &pings.to_string(),
            "-W",
            "1",
            &h3,
        ],
        Duration::from_secs(u64::from(pings) / 200 + 15),
    )?;
    let mut rtts: Vec<f64> = parse_ping(&String::from_utf8_lossy(&out.stdout))
        .rtts_ms
        .into_iter()
        .map(|ms| ms * 1e3)
        .collect();
    if rtts.len() < (pings as usize) * 9 / 10 {
        bail!("{name}: only {} of {pings} pings answered", rtts.len());
    }
    // Throughput: iperf3 with both ends on core 0.
    let exe = std::env::current_exe()?;
    let mut srv = std::process::Command::new(&exe)
        .args([
            "lab", "exec", lab, "h3", "--", "taskset", "-c", "0", "iperf3", "-s", "-1",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(400));
    let out = exec_output(
        lab,
        "h1",
        &["taskset", "-c", "0", "iperf3", "-c", &h3, "-t", "3", "-J"],
        Duration::from_secs(15),
    )?;
    let _ = srv.wait();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("iperf3 -J")?;
    let gbps = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .context("iperf3 throughput")?
        / 1e9;
    Ok(Case {
        case: name.into(),
        stress_requested: requested,
        stress_domains: stress,
        ping_samples: rtts.len(),
        p50_us: pct(&mut rtts, 0.5),
        p99_us: pct(&mut rtts, 0.99),
        throughput_gbps: gbps,
    })
}

fn one_case(name: &str, reservation: bool, stress: usize, pings: u32) -> Result<Case> {
    let env = LabEnv::system();
    let lab = "benchiso";
    let _ = down::down(&env, lab, &Silent);
    let t = wuos_model::file::parse(TOPOLOGY, "bench")?;
    up::up(
        &env,
        t,
        &up::UpOptions {
            name: lab.into(),
            workers: 2,
            daemons: Some(DaemonOptions {
                routing_reservation: reservation,
                ..Default::default()
            }),
        },
        &Silent,
    )?;
    let r = (|| -> Result<Case> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let sock = socket_path(&env, lab, "r2");
        let mut admitted = 0;
        for i in 0..stress {
            // Each: two busy threads (capped at the catalog's 0.5 cores) and 160 MiB kept touched.
            let params = [("memory", "160MiB"), ("cpus", "2"), ("duration", "120s")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let r = rt.block_on(async {
                wuos_proto::admin::AdminClient::connect(sock.clone())
                    .await?
                    .start_service("stress", &format!("load{i}"), params)
                    .await
                    .map_err(anyhow::Error::from)
            });
            match r {
                Ok(_) => admitted += 1,
                // Admission refusing what would eat into the routing core is the protection.
                Err(e)
                    if e.downcast_ref::<wuos_proto::admin::AdminError>()
                        .is_some_and(|a| wuos_model::Classify::class(a) == wuos_model::ErrorClass::BadInput) => {}
                Err(e) => return Err(e.context("start stress")),
            }
        }
        std::thread::sleep(Duration::from_secs(1));
        measure(lab, name, stress, admitted, pings)
    })();
    down::down(&env, lab, &Silent)?;
    r
}

/// The per-field median of several runs of one case.
fn median_case(runs: &[Case]) -> Case {
    let med = |f: fn(&Case) -> f64| pct(&mut runs.iter().map(f).collect::<Vec<_>>(), 0.5);
    Case {
        case: runs[0].case.clone(),
        stress_requested: runs[0].stress_requested,
        stress_domains: runs[0].stress_domains,
        ping_samples: runs.iter().map(|c| c.ping_samples).sum(),
        p50_us: med(|c| c.p50_us),
        p99_us: med(|c| c.p99_us),
        throughput_gbps: med(|c| c.throughput_gbps),
    }
}

pub fn run(out: &Path, pings: u32, runs: usize) -> Result<()> {
    if runs == 0 {
        bail!("--runs must be at least 1");
    }
    // The same load asked for in both cases: two cores' worth of stress.
    let stress = 4;
    // Cases interleaved run by run, so slow drifts of the machine hit all three alike.
    let (mut idle, mut reserved, mut unreserved) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..runs {
        eprintln!("run {}/{runs}: idle, reserved, unreserved", r + 1);
        idle.push(one_case("idle", true, 0, pings)?);
        reserved.push(one_case("reserved", true, stress, pings)?);
        unreserved.push(one_case("unreserved", false, stress, pings)?);
    }
    let per_run: Vec<Case> = idle.iter().chain(&reserved).chain(&unreserved).cloned().collect();
    let (idle, reserved, unreserved) = (median_case(&idle), median_case(&reserved), median_case(&unreserved));
    let over = |c: &Case| (c.p99_us / idle.p99_us - 1.0) * 100.0;
    let report = Report {
        machine: crate::bench::machine(),
        method: format!(
            "h1 -> r2 -> h3, endpoints pinned to core 0; {stress} stress domains asked for on r2 (2 busy threads and 160 MiB each, 0.5-core quota), admitted as the reservation allows; {pings} pings at 2 ms; iperf3 3 s"
        ),
        idle_p50_us: idle.p50_us,
        idle_p99_us: idle.p99_us,
        idle_gbps: idle.throughput_gbps,
        reserved_p50_us: reserved.p50_us,
        reserved_p99_us: reserved.p99_us,
        reserved_gbps: reserved.throughput_gbps,
        unreserved_p50_us: unreserved.p50_us,
        unreserved_p99_us: unreserved.p99_us,
        unreserved_gbps: unreserved.throughput_gbps,
        reserved_p99_over_idle_pct: over(&reserved),
        unreserved_p99_over_idle_pct: over(&unreserved),
        cases: vec![idle.clone(), reserved.clone(), unreserved.clone()],
        runs: per_run,
    };
    println!("wuos bench isolation — {}", report.machine);
    println!("{}", report.method);
    println!(
        "{:<12} {:>9} {:>10} {:>10} {:>12} {:>14}",
        "case", "services", "p50 us", "p99 us", "Gbit/s", "p99 vs idle"
    );
    for c in &report.cases {
        println!(
            "{:<12} {:>9} {:>10.1} {:>10.1} {:>12.2} {:>13.1}%",
            c.case,
            format!("{}/{}", c.stress_domains, c.stress_requested),
            c.p50_us,
            c.p99_us,
            c.throughput_gbps,
            over(c)
        );
    }
    println!("medians of {runs} interleaved runs; target: with the reservation, p99 at most 10% above idle");
    let spread = |name: &str| {
        let v: Vec<String> = report
            .runs
            .iter()
            .filter(|c| c.case == name)
            .map(|c| format!("{:.0}", c.p99_us))
            .collect();
        v.join(", ")
    };
    println!(
        "p99 per run (us): idle {}; reserved {}; unreserved {}",
        spread("idle"),
        spread("reserved"),
        spread("unreserved")
    );
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(out, serde_json::to_string_pretty(&report)?)?;
    println!("wrote {}", out.display());
    Ok(())
}
