//! `wuos bench overlays`: the seed's Fig. 5, 7 and 8 — creating 1 to 1,000 SD-WAN overlays
//! between two edges over two underlays (`sdwan:2:2`), on one edge: the time, the CPU time and
//! the memory it takes — with wuos's executor (rtnetlink, `wuos_southbound::overlays`) and,
//! side by side in the same run, the same ops carried out by pyroute2 (the netlink library
//! EveryWAN's edge uses; `scripts/overlays_pyroute2.py`). Each overlay is a full mesh of the two
//! sites over both underlays: per edge two VXLAN devices with their inner addresses, two peers
//! (FDB + neighbour entries), two routes in the overlay's table and three rules.
//!
//! Then the seed's Fig. 6 ([`crate::overlays_e2e`], unless `--no-e2e`): on a lab with its
//! daemons, from one NBI request creating the N overlays to every tunnel carrying traffic both
//! ways, and the edge daemon's memory for them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde::Serialize;
use wuos_lab::progress::Silent;
use wuos_lab::{LabEnv, down, up};
use wuos_model::generate::{Generator, generate};
use wuos_model::plan::address_plan;
use wuos_sdwan::{Action, Desired, EdgeConfig, Inventory, Op, OverlaySpec, diff};
use wuos_southbound::overlays::{NetlinkOverlays, apply_all};

use crate::BenchOptions;
use crate::host::{Machine, meminfo_bytes};
use crate::report::{Clock, begin, print_clocks, write_json};
use crate::stats::{Summary, at_resolution};
use crate::table::Table;

const LAB: &str = "benchsdw";
const SPEC: &str = "sdwan:2:2";
/// wuos's own executor, as the table names it (pyroute2 is the other).
const WUOS: &str = "wuos (rtnetlink)";

#[derive(Clone, Debug)]
pub struct Options {
    pub out: PathBuf,
    pub runs: usize,
    /// Overlay counts.
    pub counts: Vec<usize>,
    /// Also run pyroute2 (installed from PyPI if missing).
    pub peer: bool,
    /// Also measure end to end through the NBI and the daemons.
    pub e2e: bool,
}

impl BenchOptions for Options {
    const NAME: &'static str = "overlays";

    fn full(out: PathBuf) -> Self {
        Self {
            out,
            runs: 3,
            counts: vec![1, 10, 100, 250, 500, 1000],
            peer: true,
            e2e: true,
        }
    }

    fn quick(out: PathBuf) -> Self {
        Self {
            out,
            runs: 1,
            counts: vec![1, 10],
            peer: true,
            e2e: true,
        }
    }

    fn runs_mut(&mut self) -> &mut usize {
        &mut self.runs
    }
}

/// One creation (or deletion) on e1.
#[derive(Clone, Debug, Serialize)]
pub struct Run {
    pub seconds: f64,
    pub cpu_seconds: f64,
    /// MemAvailable before minus after (the kernel's and the executor's memory for the overlays).
    pub host_bytes: i64,
    /// The executor's resident memory afterwards.
    pub rss_bytes: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub overlays: usize,
    pub ops: usize,
    pub executor: String,
    pub create_ms: Summary,
    pub create_cpu_ms: Summary,
    pub delete_ms: Summary,
    pub host_mib: Summary,
    pub rss_mib: Summary,
    pub runs: Vec<(Run, Run)>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub machine: Machine,
    pub rows: Vec<Row>,
    pub traffic_checked: Vec<String>,
    /// End to end through the NBI (absent with `--no-e2e`).
    pub e2e: Option<crate::overlays_e2e::E2e>,
    pub clocks: Vec<Clock>,
}

fn clocks() -> Vec<Clock> {
    vec![
        Clock::new(
            "create ms",
            "before the first op of e1's ops for N overlays (wuos: in the executor thread; pyroute2: in the script, after its imports and the JSON load)",
            "after the kernel acknowledged the last op",
            "e2's ops (done after, untimed), starting the executor (runtime, netlink socket; pyroute2: the Python interpreter)",
            "std::time::Instant / time.perf_counter, 1 µs; quoted to 0.1 ms",
        ),
        Clock::new(
            "delete ms",
            "before the first op of the ops that take e1 from N overlays back to none",
            "after the kernel acknowledged the last op",
            "the same as create ms",
            "the same as create ms",
        ),
        Clock::new(
            "create CPU ms",
            "the same span",
            "the same span",
            "kernel work done outside the executor's thread or process (softirqs, kworkers)",
            "getrusage user + system (wuos: RUSAGE_THREAD; pyroute2: RUSAGE_SELF), microsecond fields; quoted to 1 ms",
        ),
        Clock::new(
            "host MiB",
            "MemAvailable before e1's ops",
            "MemAvailable after them",
            "nothing: it includes whatever else the machine did meanwhile (quiet machine assumed)",
            "/proc/meminfo, 1 kB",
        ),
    ]
}

pub fn run(o: &Options) -> Result<()> {
    let (env, mut machine) = begin(o.runs)?;
    if o.peer {
        ensure_pyroute2()?;
    }
    let t = generate(&SPEC.parse::<Generator>()?, 1);
    let inv = Inventory::from_topology(&t, &address_plan(&t)?)?;
    let _ = down::down(&env, LAB, &Silent);
    up::up(
        &env,
        t,
        &up::UpOptions {
            name: LAB.into(),
            workers: 2,
            daemons: None,
        },
        &Silent,
    )?;
    let result = measure(&env, o, &inv);
    down::down(&env, LAB, &Silent)?;
    let (rows, traffic_checked) = result?;
    let e2e = if o.e2e {
        Some(crate::overlays_e2e::run(&env, &o.counts, o.runs)?)
    } else {
        None
    };
    machine.finish();
    let mut clocks = clocks();
    if e2e.is_some() {
        clocks.extend(crate::overlays_e2e::clocks());
    }
    let report = Report {
        machine,
        rows,
        traffic_checked,
        e2e,
        clocks,
    };
    print(&report);
    write_json(&o.out, &report)?;
    plot(&o.out, &report)
}

/// Creation time, CPU time and host memory against the number of overlays, one curve per
/// executor: `OUT-create.{png,svg}` and `OUT-memory.{png,svg}` beside the JSON.
fn plot(out: &Path, report: &Report) -> Result<()> {
    let rows = &report.rows;
    let series = |f: &dyn Fn(&Row) -> f64, what: &str| -> Vec<(String, Vec<(f64, f64)>)> {
        let mut names: Vec<&str> = rows.iter().map(|r| r.executor.as_str()).collect();
        names.dedup();
        names.sort();
        names.dedup();
        names
            .into_iter()
            .map(|e| {
                let pts = rows
                    .iter()
                    .filter(|r| r.executor == e)
                    .map(|r| (r.overlays as f64, f(r)))
                    .collect();
                (format!("{e}, {what}"), pts)
            })
            .collect()
    };
    let mut create = series(&|r| r.create_ms.median, "wall");
    create.extend(series(&|r| r.create_cpu_ms.median, "CPU"));
    if let Some(e) = &report.e2e {
        create.push((
            "wuos, end to end (NBI request to traffic on every tunnel)".into(),
            e.rows.iter().map(|r| (r.overlays as f64, r.e2e_ms.median)).collect(),
        ));
    }
    let stem = |suffix: &str| {
        out.with_file_name(format!(
            "{}-{suffix}",
            out.file_stem().unwrap_or_default().to_string_lossy()
        ))
    };
    let (png, _) = crate::plot::curves(
        &stem("create"),
        &crate::plot::Curves {
            title: "wuos bench overlays: creating N overlays on one edge (medians)",
            x_desc: "overlays (each: 2 VXLAN tunnels, 2 peers, 1 route, 3 rules)",
            y_desc: "ms",
            series: create,
        },
    )?;
    println!("wrote {png} (and .svg)");
    let (png, _) = crate::plot::curves(
        &stem("memory"),
        &crate::plot::Curves {
            title: "wuos bench overlays: host MemAvailable drop; edge daemon RSS growth (medians)",
            x_desc: "overlays",
            y_desc: "MiB",
            series: {
                let mut m = series(&|r| r.host_mib.median, "host");
                if let Some(e) = &report.e2e {
                    m.push((
                        "wuos edge daemon (e1), RSS growth".into(),
                        e.rows
                            .iter()
                            .map(|r| (r.overlays as f64, r.edge_rss_growth_mib.median))
                            .collect(),
                    ));
                }
                m
            },
        },
    )?;
    println!("wrote {png} (and .svg)");
    Ok(())
}

fn measure(env: &LabEnv, o: &Options, inv: &Inventory) -> Result<(Vec<Row>, Vec<String>)> {
    let mut rows = Vec::new();
    let mut checked = Vec::new();
    for &n in &o.counts {
        let want = desired(n, inv)?;
        let e1 = EdgeConfig::realise(&want, inv, "e1");
        let e2 = EdgeConfig::realise(&want, inv, "e2");
        let create = diff(&EdgeConfig::default(), &e1);
        let delete = diff(&e1, &EdgeConfig::default());
        let mut executors = vec![WUOS];
        if o.peer {
            executors.push("pyroute2");
        }
        for executor in executors {
            eprintln!("{n} overlays, {executor}: {} runs", o.runs);
            let mut runs = Vec::new();
            for r in 0..o.runs {
                let c = timed(env, executor, &create)?;
                if r == 0 && executor == WUOS {
                    // Both edges, then a ping over the first and the last overlay, both ways.
                    wuos_apply(env, "e2", &diff(&EdgeConfig::default(), &e2))?;
                    let ids: Vec<usize> = if n == 1 { vec![1] } else { vec![1, n] };
                    for id in ids {
                        for u in ["inet", "mpls"] {
                            let seg = wuos_sdwan::edge::segment(id as u16, inv.underlay(u)?);
                            let far = wuos_sdwan::edge::inner_addr(seg, inv.sites["e2"].index);
                            ping(env, "e1", &far.to_string())
                                .with_context(|| format!("overlay {id} over {u} carries no ping"))?;
                            checked.push(format!("{n} overlays: e1 -> e2 over o{id} on {u}"));
                        }
                    }
                    wuos_apply(env, "e2", &diff(&e2, &EdgeConfig::default()))?;
                }
                let d = timed(env, executor, &delete)?;
                runs.push((c, d));
            }
            rows.push(row(n, create.len(), executor, runs)?);
        }
    }
    Ok((rows, checked))
}

/// `n` full-mesh overlays `o1`..`oN` of e1 and e2 over every underlay.
fn desired(n: usize, inv: &Inventory) -> Result<Desired> {
    let mut d = Desired::default();
    for i in 1..=n {
        d.apply(
            Action::CreateOverlay(OverlaySpec {
                name: format!("o{i}"),
                sites: ["e1", "e2"]
                    .iter()
                    .map(|s| (s.to_string(), Default::default()))
                    .collect(),
                ..Default::default()
            }),
            inv,
        )?;
    }
    Ok(d)
}

fn timed(env: &LabEnv, executor: &str, ops: &[Op]) -> Result<Run> {
    let before = mem_available(env);
    let mut run = if executor == "pyroute2" {
        pyroute2(env, ops)?
    } else {
        wuos_run(env, ops)?
    };
    run.host_bytes = before as i64 - mem_available(env) as i64;
    Ok(run)
}

fn mem_available(env: &LabEnv) -> u64 {
    let text = std::fs::read_to_string(env.proc_root.join("meminfo")).unwrap_or_default();
    meminfo_bytes(&text, "MemAvailable").unwrap_or(0)
}

/// Runs `ops` in `node`'s namespace with wuos's executor; the time and CPU of the ops alone.
fn wuos_run(env: &LabEnv, ops: &[Op]) -> Result<Run> {
    in_node(env, "e1", || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let overlays = NetlinkOverlays::connect_here(rt.handle())?;
        let cpu0 = thread_cpu();
        let t0 = Instant::now();
        let failed = rt.block_on(apply_all(&overlays, ops));
        let seconds = t0.elapsed().as_secs_f64();
        let cpu_seconds = thread_cpu() - cpu0;
        if let Some((i, e)) = failed.first() {
            bail!(
                "{} of {} ops failed; the first: {}: {e}",
                failed.len(),
                ops.len(),
                ops[*i]
            );
        }
        Ok(Run {
            seconds,
            cpu_seconds,
            host_bytes: 0,
            rss_bytes: rss(),
        })
    })
}

fn wuos_apply(env: &LabEnv, node: &str, ops: &[Op]) -> Result<()> {
    in_node(env, node, || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let overlays = NetlinkOverlays::connect_here(rt.handle())?;
        match rt.block_on(apply_all(&overlays, ops)).first() {
            Some((i, e)) => bail!("{node}: {}: {e}", ops[*i]),
            None => Ok(()),
        }
    })
}

fn in_node<R: Send>(env: &LabEnv, node: &str, f: impl FnOnce() -> Result<R> + Send) -> Result<R> {
    in_lab_node(env, LAB, node, f)?
}

/// Runs `f` on a thread inside router `node` of lab `lab`.
pub(crate) fn in_lab_node<R: Send>(env: &LabEnv, lab: &str, node: &str, f: impl FnOnce() -> R + Send) -> Result<R> {
    let ns = wuos_southbound::netns::open(&env.netns_dir, &wuos_lab::names::node_netns(lab, node))?;
    Ok(wuos_southbound::netns::run_in(&ns, f)?)
}

/// This thread's user + system CPU seconds.
pub(crate) fn thread_cpu() -> f64 {
    let r = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_THREAD);
    r.map(|u| {
        let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
        t(u.user_time()) + t(u.system_time())
    })
    .unwrap_or(0.0)
}

fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    meminfo_bytes(&status, "VmRSS").unwrap_or(0)
}

fn pyroute2(env: &LabEnv, ops: &[Op]) -> Result<Run> {
    let file = std::env::temp_dir().join(format!("wuos-bench-overlays-{}.json", std::process::id()));
    std::fs::write(&file, serde_json::to_vec(ops)?)?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/overlays_pyroute2.py");
    let out = in_netns(env, "e1")
        .arg("python3")
        .arg(&script)
        .arg(&file)
        .output()
        .context("cannot run python3 under ip netns exec")?;
    let _ = std::fs::remove_file(&file);
    if !out.status.success() {
        bail!("pyroute2: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    #[derive(serde::Deserialize)]
    struct Out {
        seconds: f64,
        cpu_seconds: f64,
        rss_bytes: u64,
    }
    let o: Out = serde_json::from_slice(&out.stdout).context("pyroute2's output")?;
    Ok(Run {
        seconds: o.seconds,
        cpu_seconds: o.cpu_seconds,
        host_bytes: 0,
        rss_bytes: o.rss_bytes,
    })
}

fn ping(env: &LabEnv, node: &str, to: &str) -> Result<()> {
    let out = in_netns(env, node).args(["ping", "-c", "1", "-W", "1", to]).output()?;
    if !out.status.success() {
        bail!("ping {to} from {node} failed");
    }
    Ok(())
}

/// A command to run in `node`'s network namespace (`nsenter --net`).
fn in_netns(env: &LabEnv, node: &str) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!(
        "--net={}",
        env.netns_dir.join(wuos_lab::names::node_netns(LAB, node)).display()
    ));
    c
}

fn ensure_pyroute2() -> Result<()> {
    let have = Command::new("python3")
        .args(["-c", "import pyroute2"])
        .status()?
        .success();
    if !have {
        eprintln!("installing pyroute2 from PyPI (python3 -m pip install pyroute2)");
        let pip = |extra: &[&str]| -> Result<bool> {
            Ok(Command::new("python3")
                .args(["-m", "pip", "install", "-q", "pyroute2"])
                .args(extra)
                .status()?
                .success())
        };
        // Debian's own python3 refuses pip installs into it (PEP 668) unless told.
        if !pip(&[])? && !pip(&["--break-system-packages"])? {
            bail!(
                "cannot install pyroute2 (python3 -m pip install pyroute2; Debian: apt-get install python3-pip first); \
                 run with --no-peer to skip it"
            );
        }
    }
    Ok(())
}

fn row(n: usize, ops: usize, executor: &str, runs: Vec<(Run, Run)>) -> Result<Row> {
    let s = |f: &dyn Fn(&(Run, Run)) -> f64| Summary::of(&runs.iter().map(f).collect::<Vec<_>>()).context("no run");
    Ok(Row {
        overlays: n,
        ops,
        executor: executor.into(),
        create_ms: s(&|r| r.0.seconds * 1e3)?,
        create_cpu_ms: s(&|r| r.0.cpu_seconds * 1e3)?,
        delete_ms: s(&|r| r.1.seconds * 1e3)?,
        host_mib: s(&|r| r.0.host_bytes as f64 / (1 << 20) as f64)?,
        rss_mib: s(&|r| r.0.rss_bytes as f64 / (1 << 20) as f64)?,
        runs,
    })
}

fn print(r: &Report) {
    println!("wuos bench overlays — {}", r.machine);
    let mut t = Table::new([
        "overlays",
        "ops on e1",
        "executor",
        "create ms (median)",
        "create CPU ms",
        "delete ms",
        "host MiB",
        "executor RSS MiB",
        "create: pyroute2 / wuos",
    ]);
    for row in &r.rows {
        let wuos = r.rows.iter().find(|w| w.overlays == row.overlays && w.executor == WUOS);
        let ratio = match wuos {
            Some(w) if row.executor == "pyroute2" && w.create_ms.median > 0.0 => {
                format!("{:.1}×", row.create_ms.median / w.create_ms.median)
            }
            _ => String::new(),
        };
        t.row([
            row.overlays.to_string(),
            row.ops.to_string(),
            row.executor.clone(),
            at_resolution(row.create_ms.median, 0.1),
            at_resolution(row.create_cpu_ms.median, 1.0),
            at_resolution(row.delete_ms.median, 0.1),
            at_resolution(row.host_mib.median, 0.1),
            at_resolution(row.rss_mib.median, 0.1),
            ratio,
        ]);
    }
    print!("{t}");
    println!("traffic checked: {}", r.traffic_checked.join("; "));
    if let Some(e) = &r.e2e {
        println!(
            "end to end through the NBI (sdwan:2:2 with daemons, mutual TLS): daemon RSS before the first overlay: e1 {:.1} MiB, dc {:.1} MiB",
            e.edge_rss_base_mib, e.controller_rss_base_mib
        );
        let mut t = Table::new([
            "overlays",
            "tunnels",
            "e2e ms (median)",
            "e2e max",
            "edges synced ms",
            "delete synced ms",
            "e1 RSS growth MiB",
            "dc RSS growth MiB",
            "prober CPU ms",
        ]);
        for row in &e.rows {
            t.row([
                row.overlays.to_string(),
                row.tunnels.to_string(),
                at_resolution(row.e2e_ms.median, 1.0),
                at_resolution(row.e2e_ms.max, 1.0),
                at_resolution(row.synced_ms.median, 1.0),
                at_resolution(row.delete_ms.median, 1.0),
                at_resolution(row.edge_rss_growth_mib.median, 0.1),
                at_resolution(row.controller_rss_growth_mib.median, 0.1),
                at_resolution(row.prober_cpu_ms.median, 1.0),
            ]);
        }
        print!("{t}");
        if let (Some(g), Some(last)) = (e.edge_rss_growth_after_check_mib, e.rows.last()) {
            println!(
                "e1 RSS growth with {} overlays after its first kernel check (30 s): {g:.1} MiB",
                last.overlays
            );
        }
        println!("targets: 1,000 overlays end to end ≤ 2,000 ms; edge daemon RSS growth ≤ 10 MB per 1,000 overlays");
    }
    print_clocks(&r.clocks);
}
