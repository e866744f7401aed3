//! `wuos bench telemetry`: how fast and how cheaply the augmented SD-WAN protocol carries
//! telemetry. Prints a table and writes JSON.
//!
//! - Propagation: a line:5 lab at 10 Hz; r1's view of r3 (2 hops) is read every 20 ms for the
//!   window, and each new advert's latency (receive time at r1 minus the sample time at r3, one
//!   host clock) is recorded.
//! - Cost: a grid:10x10 lab at 1 Hz, then at 10 Hz; after a warm-up, every wuosd's CPU time over
//!   the window (from /proc/PID/stat) and its RSS, and every router's protocol bytes/s.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::bench::pct;
use anyhow::{Context, Result};
use serde::Serialize;
use wuos_lab::daemons::{DaemonOptions, socket_path};
use wuos_lab::progress::Silent;
use wuos_lab::{LabEnv, down, up};
use wuos_model::generate::{Generator, generate};

#[derive(Serialize)]
struct Propagation {
    interval_ms: u64,
    samples: usize,
    median_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    target_ms: f64,
}

#[derive(Serialize)]
struct Cost {
    topology: String,
    interval_ms: u64,
    daemons: usize,
    cpu_pct_of_core_median: f64,
    cpu_pct_of_core_max: f64,
    rss_mb_median: f64,
    rss_mb_max: f64,
    protocol_bytes_per_s_median: f64,
    protocol_bytes_per_s_max: f64,
}

#[derive(Serialize)]
struct Report {
    machine: String,
    propagation: Propagation,
    cost: Vec<Cost>,
}

fn rt() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

fn lab_up(env: &LabEnv, name: &str, g: Generator, interval: Duration) -> Result<()> {
    let _ = down::down(env, name, &Silent);
    up::up(
        env,
        generate(&g, 1),
        &up::UpOptions {
            name: name.into(),
            workers: up::default_workers(),
            daemons: Some(DaemonOptions {
                telemetry_interval: interval,
                hop_limit: 2,
                ..Default::default()
            }),
        },
        &Silent,
    )?;
    Ok(())
}

fn propagation(env: &LabEnv, seconds: u64) -> Result<Propagation> {
    let name = "benchtel";
    let interval = Duration::from_millis(100);
    lab_up(env, name, Generator::Line(5), interval)?;
    let res = (|| -> Result<Propagation> {
        let rt = rt()?;
        let sock = socket_path(env, name, "r1");
        // Wait until r3 is in r1's view.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let st = rt.block_on(wuos_proto::admin::status(sock.clone()))?;
            if st
                .view
                .iter()
                .any(|v| v.advert.as_ref().is_some_and(|a| a.origin == "r3"))
            {
                break;
            }
            if Instant::now() > deadline {
                anyhow::bail!("r3 never reached r1's view");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut seen: HashMap<(u64, u64), f64> = HashMap::new();
        let end = Instant::now() + Duration::from_secs(seconds);
        while Instant::now() < end {
            let st = rt.block_on(wuos_proto::admin::status(sock.clone()))?;
            for v in &st.view {
                if let Some(a) = v.advert.as_ref().filter(|a| a.origin == "r3" && v.hops == 2) {
                    seen.entry((a.boot_id, a.sequence)).or_insert(v.latency_ms);
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut lat: Vec<f64> = seen.into_values().collect();
        Ok(Propagation {
            interval_ms: 100,
            samples: lat.len(),
            median_ms: pct(&mut lat, 0.5),
            p99_ms: pct(&mut lat, 0.99),
            max_ms: pct(&mut lat, 1.0),
            target_ms: 100.0 + 20.0,
        })
    })();
    down::down(env, name, &Silent)?;
    res
}

/// (utime + stime in clock ticks, RSS bytes) of a process.
fn proc_usage(pid: i32) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse::<u64>()
        .ok()?;
    Some((ticks, rss_kb * 1024))
}

fn wuosd_pids(lab: &str) -> Vec<i32> {
    let marker = format!("/labs/{lab}/daemons/");
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "wuosd")
                && std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&marker))
        })
        .collect()
}

fn bytes_total(rt: &tokio::runtime::Runtime, sock: &Path) -> Option<u64> {
    let st = rt.block_on(wuos_proto::admin::status(sock)).ok()?;
    Some(
        st.counters
            .iter()
            .filter(|c| c.name == "bytes_sent" || c.name == "bytes_received")
            .map(|c| c.value)
            .sum(),
    )
}

fn cost(env: &LabEnv, interval: Duration, seconds: u64) -> Result<Cost> {
    let name = "benchcost";
    let g = Generator::Grid(10, 10);
    let t = generate(&g, 1);
    lab_up(env, name, g, interval)?;
    let res = (|| -> Result<Cost> {
        std::thread::sleep(Duration::from_secs(5)); // warm-up: neighbors up, views full
        let rt = rt()?;
        let pids = wuosd_pids(name);
        let socks: Vec<_> = t.nodes.iter().map(|n| socket_path(env, name, &n.name)).collect();
        // Bytes: each router's counter with its own timestamps (polling 100 sockets takes time).
        let bytes_before: Vec<Option<(Instant, u64)>> = socks
            .iter()
            .map(|s| Some((Instant::now(), bytes_total(&rt, s)?)))
            .collect();
        // CPU: one window, timed around the two reads of /proc.
        let t0 = Instant::now();
        let before: HashMap<i32, (u64, u64)> = pids.iter().filter_map(|&p| Some((p, proc_usage(p)?))).collect();
        std::thread::sleep(Duration::from_secs(seconds));
        let after: HashMap<i32, (u64, u64)> = pids.iter().filter_map(|&p| Some((p, proc_usage(p)?))).collect();
        let elapsed = t0.elapsed().as_secs_f64();
        let ticks_per_s = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .unwrap_or(100) as f64;
        let (mut cpu, mut rss) = (Vec::new(), Vec::new());
        for (pid, &(t_before, _)) in &before {
            if let Some(&(t_after, r)) = after.get(pid) {
                cpu.push((t_after - t_before) as f64 / ticks_per_s / elapsed * 100.0);
                rss.push(r as f64 / 1e6);
            }
        }
        let mut bps: Vec<f64> = socks
            .iter()
            .zip(&bytes_before)
            .filter_map(|(s, b)| {
                let (t, b) = (*b)?;
                let now = bytes_total(&rt, s)?;
                Some((now - b) as f64 / t.elapsed().as_secs_f64())
            })
            .collect();
        if cpu.is_empty() {
            anyhow::bail!("no wuosd processes found for lab {name}");
        }
        Ok(Cost {
            topology: "grid:10x10".into(),
            interval_ms: interval.as_millis() as u64,
            daemons: cpu.len(),
            cpu_pct_of_core_median: pct(&mut cpu, 0.5),
            cpu_pct_of_core_max: pct(&mut cpu, 1.0),
            rss_mb_median: pct(&mut rss, 0.5),
            rss_mb_max: pct(&mut rss, 1.0),
            protocol_bytes_per_s_median: pct(&mut bps, 0.5),
            protocol_bytes_per_s_max: pct(&mut bps, 1.0),
        })
    })();
    down::down(env, name, &Silent)?;
    res
}

pub fn run(out: &Path, seconds: u64) -> Result<()> {
    let env = LabEnv::system();
    eprintln!("propagation: line:5 at 10 Hz, {seconds} s");
    let propagation = propagation(&env, seconds)?;
    let mut costs = Vec::new();
    for ms in [1000, 100] {
        eprintln!("cost: grid:10x10 at {} Hz, {seconds} s", 1000 / ms);
        costs.push(cost(&env, Duration::from_millis(ms), seconds)?);
    }
    let report = Report {
        machine: crate::bench::machine(),
        propagation,
        cost: costs,
    };
    let p = &report.propagation;
    println!("wuos bench telemetry — {}", report.machine);
    println!(
        "propagation 2 hops at {} ms interval: median {:.2} ms, p99 {:.2} ms, max {:.2} ms over {} adverts (target: <= {:.0} ms)",
        p.interval_ms, p.median_ms, p.p99_ms, p.max_ms, p.samples, p.target_ms
    );
    println!(
        "{:<11} {:>9} {:>8} {:>11} {:>11} {:>9} {:>9} {:>12} {:>12}",
        "topology", "interval", "daemons", "cpu% med", "cpu% max", "RSS med", "RSS max", "bytes/s med", "bytes/s max"
    );
    for c in &report.cost {
        println!(
            "{:<11} {:>7}ms {:>8} {:>11.2} {:>11.2} {:>7.1}MB {:>7.1}MB {:>12.0} {:>12.0}",
            c.topology,
            c.interval_ms,
            c.daemons,
            c.cpu_pct_of_core_median,
            c.cpu_pct_of_core_max,
            c.rss_mb_median,
            c.rss_mb_max,
            c.protocol_bytes_per_s_median,
            c.protocol_bytes_per_s_max
        );
    }
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(out, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("cannot write {}", out.display()))?;
    println!("wrote {}", out.display());
    Ok(())
}
