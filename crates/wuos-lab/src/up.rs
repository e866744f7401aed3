//! `wuos lab up`: from a topology to a running lab.
//!
//! ```text
//!  save state (names of everything to be made)      ── so `down` can undo a killed `up`
//!  plan::lab: the lab as stages of ops (cgroups, namespaces, veths, addresses, routes,
//!             link emulation, relays, offloads)
//!  execute:   the plan through the southbound traits (see `execute`); a failure undoes it
//!  pki:       a CA and one certificate per router (unless the daemons run without mTLS)
//!  daemons:   configs, the supervisor, wait for every admin socket
//!  save state (phase up)
//! ```
//! A failure anywhere rolls the lab back: the executor undoes what it made, then `down` sweeps
//! whatever is left (daemons, state).

use std::time::Instant;

use serde::Serialize;
use wuos_model::Topology;
use wuos_model::plan::address_plan;
use wuos_southbound::netns;

use crate::env::LabEnv;
use crate::error::LabError;
use crate::execute::Executor;
use crate::names;
use crate::plan::{self, Input, LinkConfig, Op};
use crate::progress::{Progress, Silent};
use crate::session::Session;
use crate::state::{self, LabState, LinkRuntime, Phase};

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
    /// Host limits raised for this lab (see [`crate::host`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub host_raised: Vec<crate::host::Raised>,
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
    let t = &state.topology;
    let routes = plan::static_routes(t, &state.plan);
    let links: Vec<LinkConfig> = state.links.iter().map(LinkConfig::from).collect();
    let plan = plan::lab(&Input {
        lab: &state.name,
        topology: t,
        addresses: &state.plan,
        routes: &routes,
        links: &links,
        offloads_off: opts.daemons.as_ref().is_some_and(|d| d.xdp),
    });
    // Every link end resolves its peer in the host's one ARP table.
    let host_raised = crate::host::make_neighbour_room(&env.proc_root, 2 * t.links.len())
        .map_err(|e| LabError::Host(e.to_string()))?;
    let session = Session::new(env, &state.name)?;
    let mut exec = Executor::new(session.host(), opts.workers);
    let timings = exec.run(&plan, progress)?;
    for (i, l) in state.links.iter_mut().enumerate() {
        l.spliced = l.params.needs_impairment();
        l.relay_pid = exec.relay_pids().get(&i).copied();
    }
    let t = &state.topology;
    Ok(UpReport {
        name: state.name.clone(),
        nodes: t.nodes.len(),
        links: t.links.len(),
        routes: plan.ops().filter(|o| matches!(o, Op::ReplaceRoute { .. })).count(),
        shaped_links: t.links.iter().filter(|l| l.params.rate_bps.is_some()).count(),
        impaired_links: t.links.iter().filter(|l| l.params.needs_impairment()).count(),
        cgroup_version: format!("{:?}", session.cgroups.version()).to_lowercase(),
        daemons: 0,
        stages_ms: timings.stages_ms,
        total_ms: t0.elapsed().as_secs_f64() * 1e3,
        host_raised,
    })
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
    if d.tls {
        let t0 = Instant::now();
        crate::daemons::issue_pki(env, state)?;
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        report.stages_ms.push(("pki".into(), ms));
        report.total_ms += ms;
    }
    let t0 = Instant::now();
    crate::daemons::write_configs(env, state, d)?;
    state.supervisor_pid = Some(crate::daemons::spawn_supervisor(env, &state.name)?);
    state.save(env)?;
    let timeout = std::time::Duration::from_millis(10_000 + 100 * state.topology.nodes.len() as u64);
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
