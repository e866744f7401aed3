//! `wuos bench domains`: how fast a service domain starts — created on demand, taken from the
//! idle pool, booted as a microVM — through the real path (admin RPC → wuosd → backend) on a lab
//! router, and what an idle domain costs in memory.
//!
//! A start is timed twice: **as the caller sees it** (client-side wall time around the
//! StartService RPC, on a connection opened beforehand), and as the daemon reports it
//! (`start_ms`: from the RPC's arrival until the service's command runs). The difference is what
//! the daemon does on the caller's path besides starting the domain (the RPC itself, admission,
//! persisting, anything it does before it replies).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use wuos_lab::daemons::{DaemonOptions, socket_path};
use wuos_lab::progress::Silent;
use wuos_lab::{LabEnv, down, up};
use wuos_model::file;

use crate::BenchOptions;
use crate::host::{Machine, mem_available};
use crate::node::runtime;
use crate::report::{Clock, begin, print_clocks, write_json};
use crate::stats::{Summary, at_resolution};
use crate::table::Table;

const LAB: &str = "benchdom";
const TOPOLOGY: &str = "[[node]]\nname = \"r1\"\nrole = \"fog\"\nmemory = \"8GiB\"\n[[node]]\nname = \"r2\"\nrole = \"edge\"\n[[link]]\na = \"r1\"\nb = \"r2\"\n";
/// Idle domains parked for the memory figure (a lab router's /26 holds 16 domain links).
const PARKED: usize = 14;

#[derive(Clone, Debug)]
pub struct Options {
    pub out: PathBuf,
    pub runs: usize,
    /// MicroVM starts (each boots a kernel: seconds under TCG); 0 skips them.
    pub vm_runs: usize,
}

impl BenchOptions for Options {
    const NAME: &'static str = "domains";

    fn full(out: PathBuf) -> Self {
        Self {
            out,
            runs: 20,
            vm_runs: 5,
        }
    }

    fn quick(out: PathBuf) -> Self {
        Self {
            out,
            runs: 3,
            vm_runs: 1,
        }
    }

    fn runs_mut(&mut self) -> &mut usize {
        &mut self.runs
    }
}

/// One start: client-side wall time, the daemon's own `start_ms`, whether it came from the pool.
#[derive(Clone, Copy, Debug, Serialize)]
struct Start {
    caller_ms: f64,
    daemon_ms: f64,
    from_pool: bool,
}

#[derive(Serialize)]
struct Case {
    case: String,
    starts: usize,
    /// Client-side wall time around the StartService RPC.
    caller_ms: Summary,
    /// The daemon's `start_ms`.
    daemon_ms: Summary,
    every_start: Vec<Start>,
}

#[derive(Serialize)]
struct Report {
    machine: Machine,
    cases: Vec<Case>,
    pool_starts_not_from_pool: usize,
    /// Memory charged to a running vm domain's cgroup (QEMU and the guest RAM it touched).
    vm_memory_bytes: Option<u64>,
    vm_note: String,
    /// Memory charged to each idle domain's own cgroup, mean over the parked domains.
    overhead_bytes_per_domain: u64,
    /// Host-wide MemAvailable drop per domain; `None` when the machine's own fluctuation hid it.
    host_bytes_per_domain: Option<u64>,
    overhead_domains: usize,
    clocks: Vec<Clock>,
}

/// Sum of the memory charged to the cgroups under `rel` whose names start with `prefix` (v1
/// memory.usage_in_bytes, v2 memory.current), and how many were counted.
fn charged(cgroup_root: &Path, rel: &str, prefix: &str) -> (u64, usize) {
    let v1 = cgroup_root.join("memory");
    let (root, file) = if v1.exists() {
        (v1, "memory.usage_in_bytes")
    } else {
        (cgroup_root.to_path_buf(), "memory.current")
    };
    let mut sum = 0;
    let mut n = 0;
    for e in std::fs::read_dir(root.join(rel)).into_iter().flatten().flatten() {
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

fn lab(env: &LabEnv, pool: u32) -> Result<()> {
    let _ = down::down(env, LAB, &Silent);
    let opts = up::UpOptions {
        name: LAB.into(),
        workers: 2,
        daemons: Some(DaemonOptions {
            pool,
            ..Default::default()
        }),
    };
    up::up(env, file::parse(TOPOLOGY, "bench")?, &opts, &Silent)?;
    Ok(())
}

/// Starts and destroys `runs` instances of `service`, `settle` apart (the pool refills
/// meanwhile), calling `running` with each instance's name while it runs.
fn cycle(
    sock: &Path,
    service: &str,
    params: &[(&str, &str)],
    runs: usize,
    settle: Duration,
    mut running: impl FnMut(&str),
) -> Result<Vec<Start>> {
    let rt = runtime()?;
    rt.block_on(async {
        let mut c = wuos_proto::admin::AdminClient::connect(sock).await?;
        let mut out = Vec::new();
        for i in 0..runs {
            tokio::time::sleep(settle).await;
            let params = params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            let name = format!("b{i}");
            let t0 = Instant::now();
            let d = c.start_service(service, &name, params).await.context("start")?;
            let caller = t0.elapsed();
            out.push(Start {
                caller_ms: caller.as_secs_f64() * 1e3,
                daemon_ms: d.start_ms,
                from_pool: d.from_pool,
            });
            running(&d.name);
            c.domain(wuos_proto::admin::DomainVerb::Destroy, &d.name)
                .await
                .context("destroy")?;
        }
        Ok(out)
    })
}

const STRESS: [(&str, &str); 3] = [("memory", "4MiB"), ("cpus", "0"), ("duration", "600s")];

/// Brings the lab up with `pool` idle domains, runs `f` against r1's daemon, takes it down.
fn with_lab<T>(env: &LabEnv, pool: u32, f: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
    lab(env, pool)?;
    let r = f(&socket_path(env, LAB, "r1"));
    down::down(env, LAB, &Silent)?;
    r
}

fn case(name: &str, starts: Vec<Start>) -> Result<Case> {
    let caller: Vec<f64> = starts.iter().map(|s| s.caller_ms).collect();
    let daemon: Vec<f64> = starts.iter().map(|s| s.daemon_ms).collect();
    Ok(Case {
        case: name.into(),
        starts: starts.len(),
        caller_ms: Summary::of(&caller).with_context(|| format!("{name}: no start"))?,
        daemon_ms: Summary::of(&daemon).with_context(|| format!("{name}: no start"))?,
        every_start: starts,
    })
}

/// Memory charged per parked domain, and the host-wide MemAvailable drop per domain.
fn idle_memory(env: &LabEnv) -> Result<(u64, Option<u64>, usize)> {
    let without = with_lab(env, 0, |_| {
        std::thread::sleep(Duration::from_secs(1));
        Ok(mem_available(&env.proc_root))
    })?;
    std::thread::sleep(Duration::from_secs(1));
    let (with, sum, counted) = with_lab(env, PARKED as u32, |sock| {
        let rt = runtime()?;
        let t0 = Instant::now();
        loop {
            let l = rt.block_on(async {
                wuos_proto::admin::AdminClient::connect(sock)
                    .await?
                    .list_domains()
                    .await
                    .context("list")
            })?;
            if l.pool_idle as usize >= PARKED || t0.elapsed() > Duration::from_secs(30) {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        std::thread::sleep(Duration::from_secs(1));
        let with = mem_available(&env.proc_root);
        let (sum, counted) = charged(&env.cgroup_root, &format!("wuos/{LAB}/r1/services"), "pool-");
        Ok((with, sum, counted))
    })?;
    if counted == 0 {
        bail!("no idle domains were found to measure");
    }
    let host = without
        .zip(with)
        .and_then(|(a, b)| a.checked_sub(b))
        .map(|d| d / counted as u64)
        .filter(|&d| d > 0);
    Ok((sum / counted as u64, host, counted))
}

fn clocks() -> Vec<Clock> {
    vec![
        Clock::new(
            "caller",
            "the client calls StartService (connection to the daemon's admin socket already open)",
            "the reply (DomainInfo) has arrived at the client",
            "connecting; the destroy after it; the pause between starts that lets the pool refill",
            "std::time::Instant in the client (ns); quoted to 0.01 ms",
        ),
        Clock::new(
            "daemon",
            "the StartService RPC arrives in wuosd",
            "the service's command runs (domain-init has exec'd it; for a microVM, the guest init started it)",
            "whatever the daemon does before the arrival is read or after start_ms is taken (reply, persistence after it)",
            "wuosd's own monotonic clock (ns), reported as DomainInfo.start_ms; quoted to 0.01 ms",
        ),
    ]
}

/// Runs `wuos bench domains`.
pub fn run(o: &Options) -> Result<()> {
    let (env, mut machine) = begin(o.runs)?;
    let runs = o.runs;
    eprintln!("containers created on demand ({runs} runs)");
    let fresh = with_lab(&env, 0, |sock| {
        cycle(sock, "stress", &STRESS, runs, Duration::from_millis(50), |_| {})
    })?;
    eprintln!("containers from the idle pool ({runs} runs)");
    let pooled = with_lab(&env, 2, |sock| {
        cycle(sock, "stress", &STRESS, runs, Duration::from_millis(300), |_| {})
    })?;
    let not_from_pool = pooled.iter().filter(|s| !s.from_pool).count();
    if not_from_pool > runs / 2 {
        bail!("only {} of {runs} starts came from the pool", runs - not_from_pool);
    }
    let pooled: Vec<Start> = pooled.into_iter().filter(|s| s.from_pool).collect();

    eprintln!("memory overhead ({PARKED} idle domains)");
    let (overhead, host, counted) = idle_memory(&env)?;

    let accel_note = wuos_southbound::domain::VmBackend::new().accel_note();
    let mut cases = vec![
        case("container, created on demand", fresh)?,
        case("container, from the idle pool", pooled)?,
    ];
    let mut vm_mem = Vec::new();
    if o.vm_runs > 0 {
        eprintln!(
            "microVMs booted on demand ({} runs){}",
            o.vm_runs,
            accel_note.as_deref().map_or(String::new(), |n| format!(": {n}"))
        );
        let rel = format!("wuos/{LAB}/r1/services");
        let vms = with_lab(&env, 0, |sock| {
            cycle(sock, "echo-vm", &[], o.vm_runs, Duration::from_millis(50), |dom| {
                std::thread::sleep(Duration::from_millis(500));
                let (bytes, n) = charged(&env.cgroup_root, &rel, dom);
                if n == 1 {
                    vm_mem.push(bytes);
                }
            })
        })?;
        cases.push(case("microVM (echo-vm)", vms)?);
    }
    machine.finish();
    let report = Report {
        machine,
        cases,
        pool_starts_not_from_pool: not_from_pool,
        vm_memory_bytes: (!vm_mem.is_empty()).then(|| vm_mem.iter().sum::<u64>() / vm_mem.len() as u64),
        vm_note: format!(
            "a microVM's start ends when the guest runs the command (QEMU microVM, host kernel, wuos guest init){}",
            accel_note.map_or(String::new(), |n| format!("; {n}"))
        ),
        overhead_bytes_per_domain: overhead,
        host_bytes_per_domain: host,
        overhead_domains: counted,
        clocks: clocks(),
    };
    print(&report);
    write_json(&o.out, &report)
}

fn print(r: &Report) {
    println!("wuos bench domains — {}", r.machine);
    let q = |v: f64| at_resolution(v, 0.01);
    let mut t = Table::new([
        "start",
        "runs",
        "caller median ms",
        "caller p90 ms",
        "daemon median ms",
        "daemon p90 ms",
        "caller − daemon (medians) ms",
    ]);
    for c in &r.cases {
        t.row([
            c.case.clone(),
            c.starts.to_string(),
            q(c.caller_ms.median),
            q(c.caller_ms.p90),
            q(c.daemon_ms.median),
            q(c.daemon_ms.p90),
            q(c.caller_ms.median - c.daemon_ms.median),
        ]);
    }
    print!("{t}");
    if r.pool_starts_not_from_pool > 0 {
        println!(
            "{} pool start(s) found the pool empty and were left out of the pool row",
            r.pool_starts_not_from_pool
        );
    }
    println!("{}", r.vm_note);
    if let Some(m) = r.vm_memory_bytes {
        println!("memory of a running microVM: {} MiB charged to its cgroup", m >> 20);
    }
    println!(
        "memory per idle domain: {} KiB charged to its cgroup; host MemAvailable drop {} ({} parked domains)",
        r.overhead_bytes_per_domain / 1024,
        r.host_bytes_per_domain
            .map_or("hidden by the machine's fluctuation".into(), |h| format!(
                "{} KiB",
                h / 1024
            )),
        r.overhead_domains
    );
    print_clocks(&r.clocks);
}
