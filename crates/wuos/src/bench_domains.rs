//! `wuos bench domains`: how fast a service domain starts — created from scratch, and taken from
//! the idle pool — and what a domain costs in memory, through the real path (admin RPC →
//! wuosd → container backend) on a lab router. Prints a table and writes JSON.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::bench::pct;
use anyhow::{Context, Result, bail};
use serde::Serialize;
use wuos_lab::daemons::{DaemonOptions, socket_path};
use wuos_lab::progress::Silent;
use wuos_lab::{LabEnv, down, up};
use wuos_model::file;

#[derive(Serialize)]
struct Report {
    machine: String,
    runs: usize,
    container_start_median_ms: f64,
    container_start_p90_ms: f64,
    pool_start_median_ms: f64,
    pool_start_p90_ms: f64,
    vm_start_median_ms: Option<f64>,
    vm_start_p90_ms: Option<f64>,
    vm_runs: usize,
    /// Memory charged to a running vm domain's cgroup (QEMU and the guest RAM it touched).
    vm_memory_bytes: Option<u64>,
    vm_note: String,
    /// Memory charged to each idle domain's own cgroup (its parked init and kernel memory the
    /// cgroup accounts), mean over the domains.
    overhead_bytes_per_domain: u64,
    /// Host-wide MemAvailable drop per domain (namespace, veth, cgroups, process); None when the
    /// machine's own fluctuation hid it.
    host_bytes_per_domain: Option<u64>,
    overhead_domains: usize,
}

/// Sum of the memory charged to the cgroups under `rel` whose names start with `prefix` (v1
/// memory.usage_in_bytes, v2 memory.current), counting each leaf once.
fn charged(rel: &str, prefix: &str) -> (u64, usize) {
    let (root, file) = if Path::new("/sys/fs/cgroup/memory").exists() {
        ("/sys/fs/cgroup/memory", "memory.usage_in_bytes")
    } else {
        ("/sys/fs/cgroup", "memory.current")
    };
    let dir = Path::new(root).join(rel);
    let mut sum = 0;
    let mut n = 0;
    for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        if !e.file_name().to_string_lossy().starts_with(prefix) {
            continue;
        }
        let value = std::fs::read_to_string(e.path().join(file))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok());
        if let Some(v) = value {
            sum += v;
            n += 1;
        }
    }
    (sum, n)
}

const TOPOLOGY: &str = "[[node]]\nname = \"r1\"\nrole = \"fog\"\nmemory = \"8GiB\"\n[[node]]\nname = \"r2\"\nrole = \"edge\"\n[[link]]\na = \"r1\"\nb = \"r2\"\n";

fn lab(env: &LabEnv, name: &str, pool: u32) -> Result<()> {
    let _ = down::down(env, name, &Silent);
    let t = file::parse(TOPOLOGY, "bench")?;
    up::up(
        env,
        t,
        &up::UpOptions {
            name: name.into(),
            workers: 2,
            daemons: Some(DaemonOptions {
                pool,
                ..Default::default()
            }),
        },
        &Silent,
    )?;
    Ok(())
}

fn mem_available() -> u64 {
    let s = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

/// Starts and destroys `runs` stress services; returns their start times (ms, as the daemon saw
/// them) and whether each came from the pool.
fn cycle(sock: &Path, runs: usize, settle: Duration) -> Result<Vec<(f64, bool)>> {
    let params = [("memory", "4MiB"), ("cpus", "0"), ("duration", "600s")];
    cycle_service(sock, "stress", &params, runs, settle, |_| {})
}

/// Starts and destroys `runs` instances of `service`, calling `running` with each instance's
/// name while it runs.
fn cycle_service(
    sock: &Path,
    service: &str,
    params: &[(&str, &str)],
    runs: usize,
    settle: Duration,
    mut running: impl FnMut(&str),
) -> Result<Vec<(f64, bool)>> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let mut c = wuos_proto::admin::AdminClient::connect(sock).await?;
        let mut out = Vec::new();
        for i in 0..runs {
            tokio::time::sleep(settle).await; // let the pool refill
            let params = params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            let d = c
                .start_service(service, &format!("b{i}"), params)
                .await
                .context("start")?;
            out.push((d.start_ms, d.from_pool));
            running(&d.name);
            c.domain(wuos_proto::admin::DomainVerb::Destroy, &d.name)
                .await
                .context("destroy")?;
        }
        Ok(out)
    })
}

pub fn run(out: &Path, runs: usize) -> Result<()> {
    if runs == 0 {
        bail!("--runs must be at least 1");
    }
    let env = LabEnv::system();
    let name = "benchdom";
    eprintln!("containers created on demand ({runs} runs)");
    lab(&env, name, 0)?;
    let sock = socket_path(&env, name, "r1");
    let fresh = cycle(&sock, runs, Duration::from_millis(50));
    down::down(&env, name, &Silent)?;
    let mut fresh: Vec<f64> = fresh?.into_iter().map(|(ms, _)| ms).collect();

    eprintln!("containers from the idle pool ({runs} runs)");
    lab(&env, name, 2)?;
    let pooled = cycle(&sock, runs, Duration::from_millis(300));
    down::down(&env, name, &Silent)?;
    let pooled = pooled?;
    let from_pool = pooled.iter().filter(|(_, p)| *p).count();
    if from_pool < runs / 2 {
        bail!("only {from_pool} of {runs} starts came from the pool");
    }
    let mut pooled: Vec<f64> = pooled.into_iter().filter(|(_, p)| *p).map(|(ms, _)| ms).collect();

    // Overhead: the same lab with 14 parked (pre-created, frozen) domains and with none (a lab
    // router's /26 holds 16 domain links).
    let n = 14usize;
    eprintln!("memory overhead ({n} idle domains)");
    lab(&env, name, 0)?;
    std::thread::sleep(Duration::from_secs(1));
    let without = mem_available();
    down::down(&env, name, &Silent)?;
    std::thread::sleep(Duration::from_secs(1));
    lab(&env, name, n as u32)?;
    let t0 = Instant::now();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    loop {
        let l = rt.block_on(async {
            wuos_proto::admin::AdminClient::connect(sock.clone())
                .await?
                .list_domains()
                .await
                .context("list")
        })?;
        if l.pool_idle as usize >= n || t0.elapsed() > Duration::from_secs(30) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(1));
    let with = mem_available();
    let (sum, counted) = charged(&format!("wuos/{name}/r1/services"), "pool-");
    down::down(&env, name, &Silent)?;
    if counted == 0 {
        bail!("no idle domains were found to measure");
    }
    let overhead = sum / counted as u64;
    let host = without.checked_sub(with).map(|d| d / counted as u64).filter(|&d| d > 0);

    // MicroVMs: fewer runs, each boots a kernel (seconds under TCG).
    let vm_runs = runs.min(5);
    let accel_note = wuos_southbound::domain::VmBackend::new().accel_note();
    eprintln!(
        "microVMs booted on demand ({vm_runs} runs){}",
        accel_note.as_deref().map_or(String::new(), |n| format!(": {n}"))
    );
    lab(&env, name, 0)?;
    let mut vm_mem = Vec::new();
    let vms = cycle_service(&sock, "echo-vm", &[], vm_runs, Duration::from_millis(50), |dom| {
        std::thread::sleep(Duration::from_millis(500));
        let (bytes, n) = charged(&format!("wuos/{name}/r1/services"), dom);
        if n == 1 {
            vm_mem.push(bytes);
        }
    });
    down::down(&env, name, &Silent)?;
    let mut vms: Vec<f64> = vms?.into_iter().map(|(ms, _)| ms).collect();
    let vm_memory = (!vm_mem.is_empty()).then(|| vm_mem.iter().sum::<u64>() / vm_mem.len() as u64);

    let report = Report {
        machine: crate::bench::machine(),
        runs,
        container_start_median_ms: pct(&mut fresh, 0.5),
        container_start_p90_ms: pct(&mut fresh, 0.9),
        pool_start_median_ms: pct(&mut pooled, 0.5),
        pool_start_p90_ms: pct(&mut pooled, 0.9),
        vm_start_median_ms: Some(pct(&mut vms, 0.5)),
        vm_start_p90_ms: Some(pct(&mut vms, 0.9)),
        vm_runs,
        vm_memory_bytes: vm_memory,
        vm_note: format!(
            "start = RPC received → the guest runs the command (QEMU microVM, host kernel, wuos guest init){}",
            accel_note.map_or(String::new(), |n| format!("; {n}"))
        ),
        overhead_bytes_per_domain: overhead,
        host_bytes_per_domain: host,
        overhead_domains: counted,
    };
    println!(
        "wuos bench domains — {} — {runs} runs, start = RPC received → command running",
        report.machine
    );
    println!("{:<28} {:>10} {:>10} {:>8}", "", "median ms", "p90 ms", "target");
    println!(
        "{:<28} {:>10.2} {:>10.2} {:>8}",
        "container, created on demand", report.container_start_median_ms, report.container_start_p90_ms, "30"
    );
    println!(
        "{:<28} {:>10.2} {:>10.2} {:>8}",
        "container, from the pool", report.pool_start_median_ms, report.pool_start_p90_ms, "3"
    );
    println!(
        "{:<28} {:>10.0} {:>10.0} {:>8}",
        "microVM (echo-vm)",
        report.vm_start_median_ms.unwrap_or(f64::NAN),
        report.vm_start_p90_ms.unwrap_or(f64::NAN),
        "report"
    );
    if let Some(m) = report.vm_memory_bytes {
        println!("memory of a running microVM: {} MiB charged to its cgroup", m >> 20);
    }
    println!(
        "memory per idle domain: {} KiB charged to its cgroup; host MemAvailable drop {} ({counted} parked domains)",
        overhead / 1024,
        host.map_or("hidden by the machine's fluctuation".into(), |h| format!(
            "{} KiB",
            h / 1024
        ))
    );
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(out, serde_json::to_string_pretty(&report)?)?;
    println!("wrote {}", out.display());
    Ok(())
}
