//! `wuos lab down`: removes every namespace, interface, cgroup and process a lab made. Idempotent,
//! and it needs no complete state: names are derived from the lab name, so a lab whose `up` was
//! killed half way (or whose state file is gone) is found by its namespace prefix, its cgroup and
//! its relays' command lines.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde::Serialize;
use wuos_southbound::cgroups::{Cgroups, HostCgroups};
use wuos_southbound::{netns, process};

use crate::env::LabEnv;
use crate::error::LabError;
use crate::names;
use crate::progress::Progress;
use crate::state::{self, LabState};

#[derive(Clone, Debug, Default, Serialize)]
pub struct DownReport {
    pub name: String,
    pub namespaces: usize,
    pub processes: usize,
    pub cgroups_removed: bool,
    pub had_state: bool,
    pub total_ms: f64,
}

impl DownReport {
    /// Whether there was anything to remove at all.
    pub fn found_anything(&self) -> bool {
        self.had_state || self.namespaces > 0 || self.processes > 0 || self.cgroups_removed
    }
}

pub fn down(env: &LabEnv, lab: &str, progress: &dyn Progress) -> Result<DownReport, LabError> {
    names::check_lab_name(lab).map_err(LabError::BadName)?;
    let lock = state::LabLock::take(env, lab)?;
    let report = down_locked(env, lab, progress)?;
    lock.remove_file();
    Ok(report)
}

/// [`down`] for a caller that already holds the lab's lock (a failed `up` rolling back).
pub(crate) fn down_locked(env: &LabEnv, lab: &str, progress: &dyn Progress) -> Result<DownReport, LabError> {
    let t0 = Instant::now();
    let st = LabState::load(env, lab).ok();
    let mut report = DownReport {
        name: lab.to_string(),
        had_state: st.is_some() || env.lab_dir(lab).exists(),
        ..Default::default()
    };

    // Every namespace of the lab: the ones the state names and any found by prefix.
    let mut spaces: Vec<String> = netns::list(&env.netns_dir, &names::netns_prefix(lab));
    if let Some(st) = &st {
        for n in &st.topology.nodes {
            spaces.push(names::node_netns(lab, &n.name));
        }
    }
    spaces.sort();
    spaces.dedup();

    let inodes: HashSet<u64> = spaces
        .iter()
        .filter_map(|n| netns::open(&env.netns_dir, n).ok())
        .filter_map(|f| netns::inode(&f).ok())
        .collect();
    // What runs in the lab's namespaces now (the daemons): the supervisor stops them, and the
    // report counts them with it.
    let mut inside: HashSet<i32> = if inodes.is_empty() {
        HashSet::new()
    } else {
        process::pids_in_netns(&env.proc_root, &inodes).into_iter().collect()
    };

    // The daemon supervisor first: it stops its daemons with SIGTERM, so they shut down cleanly.
    let mut sup: Vec<i32> = st.iter().filter_map(|s| s.supervisor_pid.map(|p| p as i32)).collect();
    sup.extend(process::pids_with_cmdline(&env.proc_root, &["supervise", lab]));
    sup.retain(|&p| process::cmdline_has(&env.proc_root, p, &["supervise", lab]));
    sup.sort_unstable();
    sup.dedup();
    let stopped = process::terminate(&env.proc_root, &sup, Duration::from_secs(4));

    // Processes: relays (by pid and by command line) and anything running inside a lab namespace.
    let mut pids: Vec<i32> = st
        .iter()
        .flat_map(|s| s.links.iter().filter_map(|l| l.relay_pid.map(|p| p as i32)))
        .filter(|&p| process::cmdline_has(&env.proc_root, p, &["relay", lab]))
        .collect();
    pids.extend(process::pids_with_cmdline(&env.proc_root, &["relay", "--lab", lab]));
    if !inodes.is_empty() {
        pids.extend(process::pids_in_netns(&env.proc_root, &inodes));
    }
    pids.sort_unstable();
    pids.dedup();
    process::terminate(&env.proc_root, &pids, Duration::from_millis(500));
    // The supervisor, the daemons it stopped, the relays and whatever else ran inside, each once.
    inside.extend(pids);
    report.processes = stopped + inside.len();

    progress.stage("namespaces", spaces.len() as u64);
    for name in &spaces {
        if netns::delete(&env.netns_dir, name)? {
            report.namespaces += 1;
        }
        progress.advance(1);
    }

    if let Ok(cg) = HostCgroups::detect(&env.cgroup_root, &env.proc_root) {
        let rel = names::lab_cgroup(lab);
        if cg.exists(&rel) {
            cg.destroy(&rel)?;
            report.cgroups_removed = true;
        }
    }
    state::remove(env, lab).map_err(|source| {
        LabError::State(crate::state::StateError::Write {
            path: env.lab_dir(lab),
            source,
        })
    })?;
    report.total_ms = t0.elapsed().as_secs_f64() * 1e3;
    Ok(report)
}
