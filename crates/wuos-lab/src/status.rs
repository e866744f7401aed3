//! `wuos lab list`, `wuos lab status`: what a lab is made of, from its state and the host.

use std::net::Ipv4Addr;

use serde::Serialize;
use wuos_model::{LinkParams, Role};
use wuos_southbound::cgroup::CgroupFs;

use crate::env::LabEnv;
use crate::error::LabError;
use crate::names;
use crate::state::{LabState, Phase};

#[derive(Clone, Debug, Serialize)]
pub struct Interface {
    pub name: String,
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub peer_node: String,
    pub peer_address: Ipv4Addr,
    pub up: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct NodeStatus {
    pub name: String,
    pub role: Role,
    pub loopback: Ipv4Addr,
    pub netns: String,
    pub cgroup: String,
    /// Limits as the kernel holds them (None: unlimited).
    pub cpus: Option<f64>,
    pub memory: Option<u64>,
    pub present: bool,
    pub interfaces: Vec<Interface>,
}

#[derive(Clone, Debug, Serialize)]
pub struct LinkStatus {
    pub a: String,
    pub b: String,
    pub a_if: String,
    pub b_if: String,
    pub up: bool,
    #[serde(flatten)]
    pub params: LinkParams,
    /// Delay, jitter or loss are applied by a user-space relay.
    pub relay_pid: Option<u32>,
}

#[derive(Clone, Debug, Serialize)]
pub struct LabStatus {
    pub name: String,
    pub phase: Phase,
    pub created_unix_ms: u64,
    pub nodes: Vec<NodeStatus>,
    pub links: Vec<LinkStatus>,
}

/// Resolves an optional lab name: the one lab that is up when none is given.
pub fn resolve(env: &LabEnv, lab: Option<&str>) -> Result<String, LabError> {
    let labs = LabState::list(env);
    match lab {
        Some(l) if labs.iter().any(|x| x == l) => Ok(l.to_string()),
        Some(l) => Err(LabError::NoSuchLab {
            name: l.to_string(),
            known: labs,
        }),
        None => match labs.len() {
            0 => Err(LabError::NoLabs),
            1 => Ok(labs[0].clone()),
            _ => Err(LabError::Ambiguous(labs)),
        },
    }
}

pub fn status(env: &LabEnv, lab: &str) -> Result<LabStatus, LabError> {
    let st = LabState::load(env, lab)?;
    let cg = CgroupFs::detect(&env.cgroup_root).ok();
    let t = &st.topology;
    let mut nodes: Vec<NodeStatus> = t
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let cgroup = names::node_cgroup(lab, &n.name);
            let limits = cg.as_ref().map(|c| c.limits(&cgroup)).unwrap_or_default();
            let netns = names::node_netns(lab, &n.name);
            NodeStatus {
                name: n.name.clone(),
                role: n.role,
                loopback: st.plan.loopbacks[i],
                present: env.netns_dir.join(&netns).exists(),
                netns,
                cgroup,
                cpus: limits.cpus,
                memory: limits.memory,
                interfaces: Vec::new(),
            }
        })
        .collect();
    let mut links = Vec::new();
    for (i, l) in t.links.iter().enumerate() {
        let la = &st.plan.links[i];
        let rt = &st.links[i];
        let (a, b) = (t.node_index(&l.a).unwrap_or(0), t.node_index(&l.b).unwrap_or(0));
        nodes[a].interfaces.push(Interface {
            name: la.a_ifname.clone(),
            address: la.a,
            prefix_len: la.prefix_len,
            peer_node: l.b.clone(),
            peer_address: la.b,
            up: rt.up,
        });
        nodes[b].interfaces.push(Interface {
            name: la.b_ifname.clone(),
            address: la.b,
            prefix_len: la.prefix_len,
            peer_node: l.a.clone(),
            peer_address: la.a,
            up: rt.up,
        });
        links.push(LinkStatus {
            a: l.a.clone(),
            b: l.b.clone(),
            a_if: la.a_ifname.clone(),
            b_if: la.b_ifname.clone(),
            up: rt.up,
            params: rt.params.clone(),
            relay_pid: rt.relay_pid,
        });
    }
    Ok(LabStatus {
        name: st.name.clone(),
        phase: st.phase,
        created_unix_ms: st.created_unix_ms,
        nodes,
        links,
    })
}

/// One line per lab for `wuos lab list`.
#[derive(Clone, Debug, Serialize)]
pub struct LabSummary {
    pub name: String,
    pub phase: Phase,
    pub nodes: usize,
    pub links: usize,
    pub created_unix_ms: u64,
}

pub fn list(env: &LabEnv) -> Vec<LabSummary> {
    LabState::list(env)
        .into_iter()
        .filter_map(|n| LabState::load(env, &n).ok())
        .map(|s| LabSummary {
            name: s.name,
            phase: s.phase,
            nodes: s.topology.nodes.len(),
            links: s.topology.links.len(),
            created_unix_ms: s.created_unix_ms,
        })
        .collect()
}
