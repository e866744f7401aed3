//! `wuos lab exec`: run a command as part of a router — inside its network namespace *and* its
//! cgroup, so what it uses counts against that router's CPU quota and memory limit.

use wuos_southbound::cgroup::{CgroupFs, Limits, Version};
use wuos_southbound::netns;

use crate::env::LabEnv;
use crate::error::LabError;
use crate::names;
use crate::state::LabState;

/// Moves the calling process into router `node`'s cgroup (on cgroup v2 its `system` leaf, see
/// [`names::node_system_cgroup`]) and its calling thread into the router's
/// namespace. Call it from a single-threaded process right before `exec`.
pub fn enter(env: &LabEnv, lab: &str, node: &str) -> Result<(), LabError> {
    let st = LabState::load(env, lab)?;
    if st.topology.node_index(node).is_none() {
        return Err(LabError::NoSuchNode {
            lab: lab.to_string(),
            node: node.to_string(),
            known: st.topology.nodes.iter().map(|n| n.name.clone()).collect(),
        });
    }
    let cg = CgroupFs::detect(&env.cgroup_root)?;
    let home = match cg.version() {
        Version::V1 => names::node_cgroup(lab, node),
        // v2: a leaf under the router's cgroup, so that its domains can be controlled children.
        Version::V2 => {
            let leaf = names::node_system_cgroup(lab, node);
            cg.create(&leaf, &Limits::default())?;
            leaf
        }
    };
    cg.join(&home, std::process::id())?;
    netns::enter(&env.netns_dir, &names::node_netns(lab, node))?;
    Ok(())
}
