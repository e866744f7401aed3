//! `wuos lab up`: from a topology to a running lab.
//!
//! ```text
//!  save state (names of everything to be made)      ── so `down` can undo a killed `up`
//!  cgroups: one per router (CPU quota, memory limit)
//!  namespaces: W worker threads, each unshare → sysctls → netlink socket inside
//!  veths: one RTNM_NEWLINK per link from the host socket, both ends born in their namespaces, up
//!  addresses, then routes: pipelined netlink requests, at most 256 in flight per namespace
//!  shaped / impaired links: tc batches, relays
//!  save state (phase up)
//! ```

use std::fs::File;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use futures::{StreamExt, TryStreamExt, stream};
use serde::Serialize;
use wuos_model::plan::{address_plan, route_plan};
use wuos_model::{Role, Topology};
use wuos_southbound::cgroup::{CgroupFs, Limits};
use wuos_southbound::netlink::{Netlink, RouteSpec};
use wuos_southbound::netns;

use crate::env::LabEnv;
use crate::error::LabError;
use crate::link::{self, ends};
use crate::names;
use crate::progress::{Progress, Silent};
use crate::session::Session;
use crate::state::{self, LabState, LinkRuntime, Phase};

/// Netlink requests in flight per socket; bounded so replies never overflow the socket buffer.
const IN_FLIGHT: usize = 256;

#[derive(Clone, Debug)]
pub struct UpOptions {
    pub name: String,
    /// Threads creating namespaces (default: twice the cores).
    pub workers: usize,
    /// Run a `wuosd` in every router (None: `--no-daemons`).
    pub daemons: Option<crate::daemons::DaemonOptions>,
}

#[derive(Clone, Debug, Serialize)]
pub struct UpReport {
    pub name: String,
    pub nodes: usize,
    pub links: usize,
    pub routes: usize,
    pub shaped_links: usize,
    pub impaired_links: usize,
    pub cgroup_version: String,
    /// Routers whose daemon runs (0 with `--no-daemons`).
    pub daemons: usize,
    /// Wall time of each stage, in order, in milliseconds.
    pub stages_ms: Vec<(String, f64)>,
    pub total_ms: f64,
}

pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get() * 2)
}

/// Brings a lab up. On any failure everything made so far is removed again and the error says so;
/// other labs are never touched.
pub fn up(env: &LabEnv, topo: Topology, opts: &UpOptions, progress: &dyn Progress) -> Result<UpReport, LabError> {
    names::check_lab_name(&opts.name).map_err(LabError::BadName)?;
    if !nix::unistd::geteuid().is_root() {
        return Err(LabError::NotRoot);
    }
    topo.validate().map_err(|e| LabError::Topology(e.to_string()))?;
    let _lock = crate::state::LabLock::take(env, &opts.name)?;
    if LabState::exists(env, &opts.name) || !netns::list(&env.netns_dir, &names::netns_prefix(&opts.name)).is_empty() {
        return Err(LabError::Exists(opts.name.clone()));
    }
    let plan = address_plan(&topo).map_err(|e| LabError::Topology(e.to_string()))?;
    let links = topo
        .links
        .iter()
        .map(|l| LinkRuntime {
            up: true,
            params: l.params.clone(),
            relay_pid: None,
            spliced: false,
        })
        .collect();
    let mut state = LabState {
        name: opts.name.clone(),
        phase: Phase::Creating,
        created_unix_ms: state::now_ms(),
        topology: topo,
        plan,
        links,
        supervisor_pid: None,
    };
    if opts.daemons.is_some() && !env.wuosd_exe.exists() {
        return Err(LabError::Daemons(format!(
            "wuosd not found at {}: build it (cargo build -p wuosd), set WUOSD_EXE, or use --no-daemons",
            env.wuosd_exe.display()
        )));
    }
    state.save(env)?;
    match build(env, &mut state, opts, progress).and_then(|r| start_daemons(env, &mut state, opts, r)) {
        Ok(report) => {
            state.phase = Phase::Up;
            state.save(env)?;
            Ok(report)
        }
        Err(cause) => {
            // Keep the logs of what failed: the rollback removes the lab's directory.
            let logs = LabState::log_dir(env, &opts.name);
            let kept = env.state_dir.join("failed").join(&opts.name);
            let _ = std::fs::remove_dir_all(&kept);
            let saved = logs.exists()
                && std::fs::create_dir_all(&kept).is_ok()
                && std::fs::rename(&logs, kept.join("logs")).is_ok();
            let _ = crate::down::down_locked(env, &opts.name, &Silent);
            Err(LabError::RolledBack {
                cause: Box::new(cause),
                logs: saved.then(|| kept.join("logs")),
            })
        }
    }
}

fn build(env: &LabEnv, state: &mut LabState, opts: &UpOptions, progress: &dyn Progress) -> Result<UpReport, LabError> {
    let t0 = Instant::now();
    let mut stages: Vec<(String, f64)> = Vec::new();
    let mut lap = {
        let mut last = Instant::now();
        move |name: &str, stages: &mut Vec<(String, f64)>| {
            stages.push((name.to_string(), last.elapsed().as_secs_f64() * 1e3));
            last = Instant::now();
        }
    };
    let lab = state.name.clone();
    let topo = state.topology.clone();
    let n = topo.nodes.len();

    let cg = CgroupFs::detect(&env.cgroup_root)?;
    progress.stage("cgroups", n as u64);
    for node in &topo.nodes {
        let limits = Limits {
            cpus: node.cpus,
            memory: node.memory,
        };
        cg.create(&names::node_cgroup(&lab, &node.name), &limits)?;
        progress.advance(1);
    }
    lap("cgroups", &mut stages);

    let mut s = Session::new(env)?;
    progress.stage("namespaces", n as u64);
    let specs: Vec<(String, bool)> = topo
        .nodes
        .iter()
        .map(|nd| (names::node_netns(&lab, &nd.name), nd.role != Role::Host))
        .collect();
    let made = create_namespaces(env, s.rt.handle(), &specs, opts.workers.max(1), progress);
    for (name, r) in specs.iter().map(|(n, _)| n).zip(made) {
        s.ns.insert(name.clone(), r?);
    }
    lap("namespaces", &mut stages);

    // Loopbacks, then veths, then link addresses.
    progress.stage("links", topo.links.len() as u64);
    let loopbacks = state.plan.loopbacks.clone();
    s.rt.block_on(async {
        stream::iter(topo.nodes.iter().enumerate())
            .map(|(i, nd)| {
                let nl = s.nl(&names::node_netns(&lab, &nd.name)).clone();
                let lo = loopbacks[i];
                async move {
                    nl.set_up(1, true).await?;
                    nl.add_address(1, lo, 32).await
                }
            })
            .buffer_unordered(IN_FLIGHT)
            .try_collect::<Vec<()>>()
            .await
    })?;
    let all_ends: Vec<_> = (0..topo.links.len()).map(|i| ends(state, i)).collect();
    {
        let s = &s;
        let futs = all_ends.iter().enumerate().map(|(i, e)| {
            let mtu = topo.links[i].params.mtu;
            let lab = lab.as_str();
            async move {
                let mk = |k: usize| wuos_southbound::netlink::VethEnd {
                    netns: std::os::fd::AsFd::as_fd(&s.ns[&e.ns[k]].0),
                    name: &e.eth[k],
                    index: names::eth_index(e.num[k]),
                    mac: names::mac(lab, i, k as u8, 0),
                };
                let r = s.root.add_veth(mk(0), mk(1), mtu).await;
                progress.advance(1);
                r
            }
        });
        s.rt.block_on(stream::iter(futs).buffer_unordered(IN_FLIGHT).try_collect::<Vec<()>>())?;
    }
    lap("veths", &mut stages);
    let addr_jobs: Vec<_> = all_ends
        .iter()
        .enumerate()
        .flat_map(|(i, e)| {
            let la = &state.plan.links[i];
            let addrs = [la.a, la.b];
            let s = &s;
            (0..2).map(move |k| {
                (
                    s.nl(&e.ns[k]).clone(),
                    names::eth_index(e.num[k]),
                    addrs[k],
                    la.prefix_len,
                )
            })
        })
        .collect();
    s.rt.block_on(async {
        stream::iter(addr_jobs)
            .map(|(nl, idx, addr, len)| async move {
                nl.add_address(idx, addr, len).await?;
                nl.set_up(idx, true).await
            })
            .buffer_unordered(IN_FLIGHT)
            .try_collect::<Vec<()>>()
            .await
    })?;
    lap("addresses", &mut stages); // and links up

    let all: Vec<usize> = (0..n).collect();
    progress.stage("routes", n as u64);
    let routes = install_routes_with(&mut s, state, &all, progress)?;
    lap("routes", &mut stages);

    let mut shaped = 0;
    let mut impaired = 0;
    let todo: Vec<usize> = (0..topo.links.len())
        .filter(|&i| topo.links[i].params.rate_bps.is_some() || topo.links[i].params.needs_impairment())
        .collect();
    if !todo.is_empty() {
        progress.stage("link emulation", todo.len() as u64);
        for i in todo {
            let params = topo.links[i].params.clone();
            let none = LinkRuntime {
                up: true,
                params: wuos_model::LinkParams {
                    mtu: params.mtu,
                    ..Default::default()
                },
                relay_pid: None,
                spliced: false,
            };
            let rt = link::apply(&mut s, state, i, &none, &params)?;
            shaped += usize::from(params.rate_bps.is_some());
            impaired += usize::from(rt.spliced);
            state.links[i] = rt;
            // Relay pids are recorded as they start, so a crash right after leaves them findable.
            state.save(env)?;
            progress.advance(1);
        }
        lap("link emulation", &mut stages);
    }

    Ok(UpReport {
        name: lab,
        nodes: n,
        links: topo.links.len(),
        routes,
        shaped_links: shaped,
        impaired_links: impaired,
        cgroup_version: format!("{:?}", cg.version()).to_lowercase(),
        daemons: 0,
        stages_ms: stages,
        total_ms: t0.elapsed().as_secs_f64() * 1e3,
    })
}

/// Turns TX checksum offload off on every link end of the lab (`ethtool -K IF tx off`): an XDP
/// redirect (the daemons' classifier steering a service to a local instance) drops a frame's
/// partial-checksum state, so the checksums must be complete when frames are sent.
fn tx_checksum_off(env: &LabEnv, state: &LabState) -> Result<(), LabError> {
    let t = &state.topology;
    for (li, l) in t.links.iter().enumerate() {
        let la = &state.plan.links[li];
        for (node, ifname) in [(&l.a, &la.a_ifname), (&l.b, &la.b_ifname)] {
            let ns = wuos_southbound::netns::open(&env.netns_dir, &names::node_netns(&state.name, node))?;
            let out = wuos_southbound::netns::run_in(&ns, || {
                std::process::Command::new("ethtool")
                    .args(["-K", ifname, "tx", "off"])
                    .output()
            })?;
            match out {
                Ok(o) if o.status.success() => {}
                Ok(o) => {
                    return Err(LabError::Daemons(format!(
                        "ethtool -K {ifname} tx off in {node}: {}",
                        String::from_utf8_lossy(&o.stderr).trim()
                    )));
                }
                Err(e) => {
                    return Err(LabError::Daemons(format!(
                        "cannot run ethtool (apt-get install ethtool) for {ifname} in {node}: {e}"
                    )));
                }
            }
        }
    }
    Ok(())
}

/// Writes the daemons' configs, starts the supervisor and waits until every daemon listens.
fn start_daemons(
    env: &LabEnv,
    state: &mut LabState,
    opts: &UpOptions,
    mut report: UpReport,
) -> Result<UpReport, LabError> {
    let Some(d) = &opts.daemons else {
        return Ok(report);
    };
    let t0 = Instant::now();
    if d.xdp {
        tx_checksum_off(env, state)?;
    }
    crate::daemons::write_configs(env, state, d)?;
    state.supervisor_pid = Some(crate::daemons::spawn_supervisor(env, &state.name)?);
    state.save(env)?;
    let timeout = std::time::Duration::from_millis(10_000 + 50 * state.topology.nodes.len() as u64);
    let missing = crate::daemons::wait_for_sockets(env, state, timeout);
    if !missing.is_empty() {
        return Err(LabError::Daemons(format!(
            "the daemons of {} did not start within {timeout:?}",
            missing.join(", ")
        )));
    }
    report.daemons = state.topology.nodes.len();
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    report.stages_ms.push(("daemons".into(), ms));
    report.total_ms += ms;
    Ok(report)
}

/// The sysctls of a lab namespace, written on the thread that lives in it.
pub(crate) fn configure_sysctls(proc_sys: &Path, forwarding: bool) {
    let set = |k: &str, v: &str| {
        let _ = netns::sysctl(proc_sys, k, v);
    };
    set("net/ipv4/ip_forward", if forwarding { "1" } else { "0" });
    // Replies start at TTL 64; long lines and big random graphs need more.
    set("net/ipv4/ip_default_ttl", "255");
    set("net/ipv4/icmp_ratelimit", "0");
    set("net/ipv4/conf/all/rp_filter", "0");
    set("net/ipv4/conf/default/rp_filter", "0");
    // IPv4 only: no link-local addresses, DAD or MLD on every veth.
    set("net/ipv6/conf/all/disable_ipv6", "1");
    set("net/ipv6/conf/default/disable_ipv6", "1");
}

/// Creates namespaces on `workers` threads; each gets its sysctls and a netlink socket.
fn create_namespaces(
    env: &LabEnv,
    rt: &tokio::runtime::Handle,
    specs: &[(String, bool)],
    workers: usize,
    progress: &dyn Progress,
) -> Vec<Result<(File, Netlink), LabError>> {
    let next = AtomicUsize::new(0);
    type Made = Result<(File, Netlink), LabError>;
    let out: Mutex<Vec<Option<Made>>> = Mutex::new((0..specs.len()).map(|_| None).collect());
    let proc_sys = env.proc_root.join("sys");
    std::thread::scope(|sc| {
        for _ in 0..workers.min(specs.len().max(1)) {
            sc.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((name, fwd)) = specs.get(i) else { break };
                    let r = netns::create(&env.netns_dir, name, || {
                        configure_sysctls(&proc_sys, *fwd);
                        Netlink::connect_here(rt)
                    })
                    .map_err(LabError::from)
                    .and_then(|(f, nl)| Ok((f, nl?)));
                    out.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(r);
                    progress.advance(1);
                }
            });
        }
    });
    out.into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .map(|r| r.expect("every namespace was attempted"))
        .collect()
}

/// (Re)installs the routes of `nodes` from the route plan over the links that are up.
pub(crate) fn install_routes(s: &mut Session<'_>, state: &LabState, nodes: &[usize]) -> Result<usize, LabError> {
    for &i in nodes {
        s.attach(&names::node_netns(&state.name, &state.topology.nodes[i].name))?;
    }
    install_routes_with(s, state, nodes, &Silent)
}

fn install_routes_with(
    s: &mut Session<'_>,
    state: &LabState,
    nodes: &[usize],
    progress: &dyn Progress,
) -> Result<usize, LabError> {
    let up = |i: usize| state.links[i].up;
    let plan = route_plan(&state.topology, &state.plan, &up);
    let mut total = 0;
    let s = &*s;
    let per_node = nodes.iter().map(|&i| {
        let nd = &state.topology.nodes[i];
        let nl = s.nl(&names::node_netns(&state.name, &nd.name)).clone();
        let src = state.plan.loopbacks[i];
        let specs: Vec<RouteSpec> = plan[i]
            .iter()
            .map(|r| {
                let e = ends(state, r.link);
                let k = usize::from(e.node[0] != i);
                RouteSpec {
                    dst: r.dst,
                    prefix_len: r.prefix_len,
                    gateway: r.gateway,
                    oif: names::eth_index(e.num[k]),
                    src: Some(src),
                }
            })
            .collect();
        total += specs.len();
        async move {
            stream::iter(specs)
                .map(|r| {
                    let nl = nl.clone();
                    async move { nl.replace_route(&r).await }
                })
                .buffer_unordered(IN_FLIGHT)
                .try_collect::<Vec<()>>()
                .await?;
            progress.advance(1);
            Ok::<(), LabError>(())
        }
    });
    let futs: Vec<_> = per_node.collect();
    s.rt.block_on(async { stream::iter(futs).buffer_unordered(64).try_collect::<Vec<()>>().await })?;
    Ok(total)
}
