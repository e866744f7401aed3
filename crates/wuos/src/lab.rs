//! `wuos lab …`: thin wrappers over `wuos_lab`.

use std::io::IsTerminal;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::AtomicBool;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use nix::sys::signal::{SigSet, Signal};
use wuos_lab::link::LinkChange;
use wuos_lab::progress::{Progress, Silent};
use wuos_lab::{LabEnv, down, exec, impair, status, up};
use wuos_model::units::{format_bytes, format_duration, format_rate, parse_duration, parse_percent, parse_rate};

use std::collections::BTreeMap;

use crate::topo::{self, BadInput};

/// `SERVICE.KEY=VALUE` parameters, by service.
fn parse_params(params: &[String]) -> Result<BTreeMap<String, BTreeMap<String, String>>, String> {
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for p in params {
        let (name, value) = p
            .split_once('=')
            .ok_or_else(|| format!("--param {p:?}: expected SERVICE.KEY=VALUE"))?;
        let (service, key) = name
            .split_once('.')
            .filter(|(s, k)| !s.is_empty() && !k.is_empty())
            .ok_or_else(|| format!("--param {p:?}: expected SERVICE.KEY=VALUE (e.g. pabx.static_users=…)"))?;
        out.entry(service.to_string())
            .or_default()
            .insert(key.to_string(), value.to_string());
    }
    Ok(out)
}

#[derive(Subcommand)]
pub enum LabCmd {
    /// Bring up a lab from a topology file or a generator (line:N, ring:N, star:N, grid:MxN,
    /// torus:MxN, tree:FANOUTxDEPTH, random:N[:ba:M|:waxman:A:B]).
    Up {
        topology: String,
        #[arg(long)]
        name: Option<String>,
        /// Seed for random generators.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Threads creating namespaces.
        #[arg(long)]
        workers: Option<usize>,
        /// Do not start a wuosd in every router.
        #[arg(long)]
        no_daemons: bool,
        /// The daemons' telemetry interval.
        #[arg(long, default_value = "1s")]
        telemetry_interval: String,
        /// The daemons' hello interval: a neighbor that sends nothing else sends a keepalive
        /// this often, and is lost after three without a word (default: the telemetry interval;
        /// ten of them, at most 30 s, while echo watches the links).
        #[arg(long)]
        hello_interval: Option<String>,
        /// How long a neighbor may leave ICMP echo unanswered (and send no frame) before it is
        /// lost: its kernel answers, its daemon is not woken; `0s`: off, hellos alone watch the
        /// links (default: three telemetry intervals when the interval is 1 s or more, else off).
        #[arg(long)]
        link_dead_interval: Option<String>,
        /// The daemons sample together, at the multiples of the interval on the host's clock
        /// (default: each one interval after its own start).
        #[arg(long)]
        aligned_samples: bool,
        /// How routers carry their links: framed (protocol 2.4) or grpc (as 2.3 did; for
        /// comparisons).
        #[arg(long, default_value = "framed", value_parser = |s: &str| s.parse::<wuos_model::daemon::LinkTransport>())]
        link_transport: wuos_model::daemon::LinkTransport,
        /// How far telemetry adverts flood, in hops.
        #[arg(long, default_value_t = 2)]
        hop_limit: u32,
        /// Routers host no domains (services).
        #[arg(long)]
        no_domains: bool,
        /// Frozen, pre-created service domains kept ready in every router.
        #[arg(long, default_value_t = 0)]
        pool: u32,
        /// Do not reserve a core and memory for routing: services share the whole router.
        #[arg(long)]
        no_routing_reservation: bool,
        /// Attach the XDP classifier on every router: per-service counters, demand in adverts.
        #[arg(long)]
        xdp: bool,
        /// Daemons talk over plain TCP: no CA, no certificates (mutual TLS is the default).
        #[arg(long)]
        no_tls: bool,
        /// How often the edges probe each SD-WAN path of a steered class (STAMP).
        #[arg(long, default_value = "100ms")]
        probe_interval: String,
        /// A site value of a catalog parameter for every router, SERVICE.KEY=VALUE (repeatable),
        /// e.g. --param 'pabx.static_users=2000=10.254.0.5:5060'.
        #[arg(long = "param", value_name = "SERVICE.KEY=VALUE")]
        params: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Remove a lab and everything it made (idempotent; works after a crash).
    Down {
        name: Option<String>,
        /// Remove every lab.
        #[arg(long, conflicts_with = "name")]
        all: bool,
    },
    /// List labs.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Nodes, addresses, interfaces and links of a lab.
    Status {
        name: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Run a command inside a router's namespace and cgroup: `wuos lab exec [LAB] NODE -- CMD…`.
    Exec {
        #[arg(num_args = 1..=2, value_names = ["LAB", "NODE"])]
        target: Vec<String>,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Draw a lab or a topology (roles drawn distinctly).
    Graph {
        /// A lab name, a topology file or a generator (default: the one lab that is up).
        target: Option<String>,
        #[arg(long, value_parser = ["dot", "svg"], default_value = "dot")]
        format: String,
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Change links of a running lab.
    #[command(subcommand)]
    Link(LinkCmd),
    /// Change every link of a WAN underlay of a running lab (`sdwan:` labs, `underlay = "…"`).
    #[command(subcommand)]
    Underlay(UnderlayCmd),
    /// Internal: the user-space delay/jitter/loss relay of one link.
    #[command(hide = true)]
    Relay(RelayArgs),
    /// Internal: keeps the router daemons of a lab running.
    #[command(hide = true)]
    Supervise { lab: String },
}

#[derive(Subcommand)]
pub enum LinkCmd {
    /// `wuos lab link set A B [--rate R] [--delay D] [--jitter J] [--loss P] [--mtu M] [--down|--up]`
    Set {
        a: String,
        b: String,
        #[arg(long)]
        lab: Option<String>,
        #[command(flatten)]
        change: ChangeArgs,
    },
}

#[derive(Subcommand)]
pub enum UnderlayCmd {
    /// `wuos lab underlay set NAME [--rate R] [--delay D] [--jitter J] [--loss P] [--mtu M] [--down|--up]`:
    /// the same change on every link of the underlay (each link gets it: a path crossing k of
    /// them gets k times the delay).
    Set {
        name: String,
        #[arg(long)]
        lab: Option<String>,
        #[command(flatten)]
        change: ChangeArgs,
    },
}

/// A change to links, as `link set` and `underlay set` take it.
#[derive(Args)]
pub struct ChangeArgs {
    /// e.g. 10mbit; 0 removes the limit.
    #[arg(long)]
    rate: Option<String>,
    /// One-way, e.g. 20ms; 0 removes it.
    #[arg(long)]
    delay: Option<String>,
    #[arg(long)]
    jitter: Option<String>,
    /// e.g. 1%.
    #[arg(long)]
    loss: Option<String>,
    #[arg(long)]
    mtu: Option<u32>,
    #[arg(long, conflicts_with = "up")]
    down: bool,
    #[arg(long)]
    up: bool,
}

impl ChangeArgs {
    fn parse(&self) -> Result<LinkChange> {
        let change = LinkChange {
            rate_bps: self
                .rate
                .as_deref()
                .map(|r| if r == "0" { Ok(0) } else { parse_rate(r) })
                .transpose()
                .map_err(bad)?,
            delay: self.delay.as_deref().map(parse_duration).transpose().map_err(bad)?,
            jitter: self.jitter.as_deref().map(parse_duration).transpose().map_err(bad)?,
            loss_pct: self.loss.as_deref().map(parse_percent).transpose().map_err(bad)?,
            mtu: self.mtu,
            up: if self.down {
                Some(false)
            } else if self.up {
                Some(true)
            } else {
                None
            },
        };
        if change == LinkChange::default() {
            return Err(bad(
                "nothing to change: give --rate, --delay, --jitter, --loss, --mtu, --down or --up",
            ));
        }
        Ok(change)
    }
}

#[derive(Args)]
pub struct RelayArgs {
    #[arg(long)]
    lab: String,
    #[arg(long)]
    link: usize,
    #[arg(long)]
    netns: PathBuf,
    #[arg(long)]
    a: String,
    #[arg(long)]
    b: String,
    #[arg(long, default_value = "0")]
    delay: String,
    #[arg(long, default_value = "0")]
    jitter: String,
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// On SIGHUP, the relay takes its impairment from this file (JSON) without a restart.
    #[arg(long)]
    params: Option<PathBuf>,
}

/// An indicatif bar on a terminal, nothing otherwise.
pub struct Bar(Option<ProgressBar>);

impl Bar {
    pub fn new() -> Self {
        if std::io::stderr().is_terminal() {
            let pb = ProgressBar::new(0);
            pb.set_style(
                ProgressStyle::with_template("{prefix:>16} [{bar:30}] {pos}/{len} {elapsed}")
                    .expect("static template")
                    .progress_chars("=> "),
            );
            Self(Some(pb))
        } else {
            Self(None)
        }
    }
    pub fn finish(&self) {
        if let Some(pb) = &self.0 {
            pb.finish_and_clear();
        }
    }
}

impl Progress for Bar {
    fn stage(&self, name: &str, total: u64) {
        if let Some(pb) = &self.0 {
            pb.set_prefix(name.to_string());
            pb.set_length(total);
            pb.set_position(0);
        }
    }
    fn advance(&self, n: u64) {
        if let Some(pb) = &self.0 {
            pb.inc(n);
        }
    }
}

fn bad(e: impl std::fmt::Display) -> anyhow::Error {
    BadInput(e.to_string()).into()
}

pub fn run(cmd: LabCmd) -> Result<()> {
    let env = LabEnv::system();
    match cmd {
        LabCmd::Up {
            topology,
            name,
            seed,
            workers,
            no_daemons,
            telemetry_interval,
            hello_interval,
            link_dead_interval,
            aligned_samples,
            link_transport,
            hop_limit,
            no_domains,
            pool,
            no_routing_reservation,
            xdp,
            no_tls,
            probe_interval,
            params,
            json,
        } => {
            let service_params = parse_params(&params).map_err(bad)?;
            let t = topo::load(&topology, seed)?;
            let name = topo::lab_name(name.as_deref(), &t);
            let interval = parse_duration(&telemetry_interval).map_err(bad)?;
            let sdwan_paths = wuos_model::daemon::SdwanPathsConfig {
                probe_interval: parse_duration(&probe_interval).map_err(bad)?,
                ..Default::default()
            };
            if let Err((_, problem, fix)) = sdwan_paths.check() {
                return Err(bad(format!("--probe-interval {problem}: {fix}")));
            }
            if !(1..=8).contains(&hop_limit) {
                return Err(bad(format!("--hop-limit {hop_limit}: use 1 to 8")));
            }
            let link_dead_interval = link_dead_interval
                .as_deref()
                .map(parse_duration)
                .transpose()
                .map_err(bad)?;
            if let Some(d) = link_dead_interval {
                wuos_model::daemon::check_link_dead_interval(d, link_transport)
                    .map_err(|(problem, fix)| bad(format!("--link-dead-interval {problem}: {fix}")))?;
            }
            let opts = up::UpOptions {
                name,
                workers: workers.unwrap_or_else(up::default_workers),
                daemons: (!no_daemons).then_some(wuos_lab::daemons::DaemonOptions {
                    telemetry_interval: interval,
                    hello_interval: hello_interval.as_deref().map(parse_duration).transpose().map_err(bad)?,
                    link_dead_interval,
                    sample_phase: if aligned_samples {
                        wuos_model::daemon::SamplePhase::Aligned
                    } else {
                        wuos_model::daemon::SamplePhase::Free
                    },
                    hop_limit,
                    domains: !no_domains,
                    pool,
                    routing_reservation: !no_routing_reservation,
                    xdp,
                    tls: !no_tls,
                    service_params,
                    sdwan_paths,
                    link_transport,
                }),
            };
            let bar = Bar::new();
            let r = up::up(&env, t, &opts, &bar);
            bar.finish();
            let r = r?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!(
                    "lab {} is up: {} routers, {} links ({} shaped, {} with delay/jitter/loss), {} routes, {} daemons, cgroup {} — {:.0} ms",
                    r.name,
                    r.nodes,
                    r.links,
                    r.shaped_links,
                    r.impaired_links,
                    r.routes,
                    r.daemons,
                    r.cgroup_version,
                    r.total_ms
                );
                let stages: Vec<String> = r.stages_ms.iter().map(|(s, ms)| format!("{s} {ms:.0} ms")).collect();
                println!("  {}", stages.join(", "));
                for h in &r.host_raised {
                    println!(
                        "  raised {} from {} to {} (the host's one ARP table holds every link end's peer)",
                        h.key, h.from, h.to
                    );
                }
                println!(
                    "  next: wuos lab status {0} | wuos lab exec {0} NODE -- CMD | wuos lab down {0}",
                    r.name
                );
            }
        }
        LabCmd::Down { name, all } => {
            let names: Vec<String> = if all {
                status::list(&env).into_iter().map(|l| l.name).collect()
            } else {
                match name {
                    Some(n) => vec![n],
                    None => vec![status::resolve(&env, None)?],
                }
            };
            for n in names {
                let r = down::down(&env, &n, &Silent)?;
                if r.found_anything() {
                    println!(
                        "lab {} is down: {} namespaces, {} processes removed{} — {:.0} ms",
                        r.name,
                        r.namespaces,
                        r.processes,
                        if r.cgroups_removed { ", cgroups removed" } else { "" },
                        r.total_ms
                    );
                } else {
                    println!("lab {n} is not up; nothing to remove");
                }
            }
        }
        LabCmd::List { json } => {
            let labs = status::list(&env);
            if json {
                println!("{}", serde_json::to_string_pretty(&labs)?);
            } else if labs.is_empty() {
                println!("no labs");
            } else {
                println!("{:<18} {:<9} {:>6} {:>6}", "LAB", "PHASE", "NODES", "LINKS");
                for l in labs {
                    println!(
                        "{:<18} {:<9} {:>6} {:>6}",
                        l.name,
                        format!("{:?}", l.phase).to_lowercase(),
                        l.nodes,
                        l.links
                    );
                }
            }
        }
        LabCmd::Status { name, json } => {
            let lab = status::resolve(&env, name.as_deref())?;
            let st = status::status(&env, &lab)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&st)?);
            } else {
                print_status(&st);
            }
        }
        LabCmd::Exec { target, command } => {
            let (lab, node) = match target.as_slice() {
                [node] => (status::resolve(&env, None)?, node.clone()),
                [lab, node] => (status::resolve(&env, Some(lab))?, node.clone()),
                _ => bail!("give NODE or LAB NODE before --"),
            };
            exec::enter(&env, &lab, &node)?;
            // A parent that waits for signals in a thread (the supervisor) blocks them, and exec
            // keeps the mask: give the command the ordinary one.
            let mut signals = SigSet::empty();
            signals.add(Signal::SIGTERM);
            signals.add(Signal::SIGINT);
            signals.thread_unblock()?;
            let err = Command::new(&command[0]).args(&command[1..]).exec();
            return Err(err).with_context(|| format!("cannot run {:?} in {lab}/{node}", command[0]));
        }
        LabCmd::Graph { target, format, output } => {
            let (t, plan) = match target {
                Some(x) if !wuos_lab::state::LabState::exists(&env, &x) => (topo::load(&x, 1)?, None),
                other => {
                    let lab = status::resolve(&env, other.as_deref())?;
                    let st = wuos_lab::state::LabState::load(&env, &lab)?;
                    (st.topology, Some(st.plan))
                }
            };
            let dot = wuos_model::dot::to_dot(&t, plan.as_ref());
            let bytes = if format == "svg" {
                render_svg(&dot)?
            } else {
                dot.into_bytes()
            };
            match output {
                Some(p) => std::fs::write(&p, bytes).with_context(|| format!("cannot write {}", p.display()))?,
                None => std::io::Write::write_all(&mut std::io::stdout(), &bytes)?,
            }
        }
        LabCmd::Link(LinkCmd::Set { a, b, lab, change }) => {
            let lab = status::resolve(&env, lab.as_deref())?;
            let rt = wuos_lab::link::set(&env, &lab, &a, &b, &change.parse()?)?;
            println!("link {a} - {b} in lab {lab}: {}", describe_link(rt.up, &rt.params));
        }
        LabCmd::Underlay(UnderlayCmd::Set { name, lab, change }) => {
            let lab = status::resolve(&env, lab.as_deref())?;
            let changed = wuos_lab::link::set_underlay(&env, &lab, &name, &change.parse()?)?;
            let state = wuos_lab::state::LabState::load(&env, &lab)?;
            println!("underlay {name} in lab {lab}: {} links", changed.len());
            for (i, rt) in changed {
                let l = &state.topology.links[i];
                println!("  {} - {}: {}", l.a, l.b, describe_link(rt.up, &rt.params));
            }
        }
        LabCmd::Supervise { lab } => {
            let stop = stop_on_signals()?;
            wuos_lab::daemons::supervise(&env, &lab, stop)?;
        }
        LabCmd::Relay(r) => {
            // Signals first: a SIGHUP (a new impairment) must never find the relay unprepared.
            let tuning: &'static impair::Tuning = Box::leak(Box::default());
            let params = r.params.clone();
            let stop = stop_on_signals_or_hup(move || {
                let Some(path) = &params else { return };
                let read = std::fs::read(path)
                    .map_err(|e| e.to_string())
                    .and_then(|b| serde_json::from_slice::<impair::Impairment>(&b).map_err(|e| e.to_string()))
                    .and_then(|imp| {
                        let text = format!("delay {:?} jitter {:?} loss {}%", imp.delay, imp.jitter, imp.loss_pct);
                        tuning.set(imp).map(|()| text).map_err(|e| e.to_string())
                    });
                match read {
                    Ok(text) => eprintln!("relay retuned: {text}"),
                    Err(e) => eprintln!("relay: cannot take {}: {e}", path.display()),
                }
            })?;
            let imp = impair::Impairment {
                delay: parse_duration(&r.delay).map_err(bad)?,
                jitter: parse_duration(&r.jitter).map_err(bad)?,
                loss_pct: r.loss,
                seed: r.seed,
            };
            eprintln!(
                "relay for link {} of lab {}: {} <-> {} delay {} jitter {} loss {}%",
                r.link, r.lab, r.a, r.b, r.delay, r.jitter, r.loss
            );
            let spec = impair::RelaySpec {
                netns: r.netns,
                if_a: r.a,
                if_b: r.b,
                impairment: imp,
            };
            let stats = impair::run_tunable_relay(&spec, stop, tuning)?;
            eprintln!("relay stopped: {}", serde_json::to_string(&stats)?);
        }
    }
    Ok(())
}

/// [`stop_on_signals`], and SIGHUP calls `on_hup` (a relay re-reading its impairment).
fn stop_on_signals_or_hup(on_hup: impl Fn() + Send + 'static) -> Result<&'static AtomicBool> {
    static STOP: AtomicBool = AtomicBool::new(false);
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGHUP);
    signals.thread_block()?;
    std::thread::spawn(move || {
        while let Ok(sig) = signals.wait() {
            if sig == Signal::SIGHUP {
                on_hup();
            } else {
                STOP.store(true, std::sync::atomic::Ordering::Relaxed);
                return;
            }
        }
    });
    Ok(&STOP)
}

/// SIGTERM/SIGINT set the returned flag instead of killing the process, so long-running internal
/// processes (relays, the supervisor) stop cleanly: the signals are blocked in every thread and
/// one thread waits for them.
fn stop_on_signals() -> Result<&'static AtomicBool> {
    static STOP: AtomicBool = AtomicBool::new(false);
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    signals.thread_block()?;
    std::thread::spawn(move || {
        if signals.wait().is_ok() {
            STOP.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    });
    Ok(&STOP)
}

fn render_svg(dot: &str) -> Result<Vec<u8>> {
    use std::io::Write;
    let mut child = Command::new("dot")
        .arg("-Tsvg")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("cannot run graphviz `dot` (apt-get install graphviz)")?;
    child.stdin.take().context("dot stdin")?.write_all(dot.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("graphviz dot failed");
    }
    Ok(out.stdout)
}

pub fn describe_link(up: bool, p: &wuos_model::LinkParams) -> String {
    let mut parts = vec![if up { "up".to_string() } else { "DOWN".to_string() }];
    if let Some(r) = p.rate_bps {
        parts.push(format!("rate {}", format_rate(r)));
    }
    if let Some(d) = p.delay {
        parts.push(format!("delay {}", format_duration(d)));
    }
    if let Some(j) = p.jitter {
        parts.push(format!("jitter {}", format_duration(j)));
    }
    if let Some(l) = p.loss_pct {
        parts.push(format!("loss {l}%"));
    }
    if let Some(m) = p.mtu {
        parts.push(format!("mtu {m}"));
    }
    parts.join(", ")
}

fn print_status(st: &status::LabStatus) {
    println!(
        "lab {} ({:?}), {} nodes, {} links",
        st.name,
        st.phase,
        st.nodes.len(),
        st.links.len()
    );
    println!(
        "{:<14} {:<5} {:<15} {:<6} {:<9} INTERFACES",
        "NODE", "ROLE", "LOOPBACK", "CPUS", "MEMORY"
    );
    for n in &st.nodes {
        let ifs: Vec<String> = n
            .interfaces
            .iter()
            .map(|i| format!("{}={}/{}→{}", i.name, i.address, i.prefix_len, i.peer_node))
            .collect();
        println!(
            "{:<14} {:<5} {:<15} {:<6} {:<9} {}{}",
            n.name,
            n.role.to_string(),
            n.loopback.to_string(),
            n.cpus.map_or("-".into(), |c| format!("{c:.2}")),
            n.memory.map_or("-".into(), format_bytes),
            ifs.join(" "),
            if n.present { "" } else { "  [namespace missing]" }
        );
    }
    println!("{:<14} {:<14} LINK", "A", "B");
    for l in &st.links {
        println!(
            "{:<14} {:<14} {}",
            format!("{}:{}", l.a, l.a_if),
            format!("{}:{}", l.b, l.b_if),
            describe_link(l.up, &l.params)
        );
    }
}
