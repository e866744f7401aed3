//! Router daemons in a lab: one `wuosd` per router, inside its namespace and cgroup, kept running
//! by a per-lab supervisor process (`wuos lab supervise LAB`).
//!
//! ```text
//!  wuos lab up ──spawn──▶ supervisor ──spawn──▶ wuos lab exec LAB r1 -- wuosd --config r1.toml
//!                         (restarts a daemon      (joins r1's cgroup, enters its namespace,
//!                          that exits, backoff)    then becomes wuosd)
//! ```
//! Files: `LAB_DIR/daemons/NODE.toml` (configs), `LAB_DIR/sock/NODE.sock` (admin sockets),
//! `LAB_DIR/data/NODE/` (stores), `LAB_DIR/logs/NODE.log` (daemon logs).

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use wuos_model::units::format_duration;

use crate::env::LabEnv;
use crate::error::LabError;
use crate::names;
use crate::state::LabState;

/// The port of the augmented SD-WAN protocol on every router.
pub const PROTOCOL_PORT: u16 = 7470;
/// The Prometheus port, on every router's loopback address.
pub const METRICS_PORT: u16 = 9470;

/// Daemon settings chosen at `lab up`.
#[derive(Clone, Debug)]
pub struct DaemonOptions {
    pub telemetry_interval: Duration,
    pub hop_limit: u32,
    /// Let routers host domains (needs the VNF catalog).
    pub domains: bool,
    /// Frozen, pre-created service domains per router.
    pub pool: u32,
    /// Keep core 0 and a quarter of a router's memory for routing (off: services share all).
    pub routing_reservation: bool,
    /// Site values of catalog parameters for every router, per service (e.g. the PABX's static
    /// users), written as `[domains.params.SERVICE]`.
    pub service_params: std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>,
    /// Attach the XDP classifier on routers (not hosts) with domains: service demand in adverts.
    pub xdp: bool,
}

impl Default for DaemonOptions {
    fn default() -> Self {
        Self {
            telemetry_interval: Duration::from_secs(1),
            hop_limit: 2,
            domains: true,
            pool: 0,
            routing_reservation: true,
            service_params: Default::default(),
            xdp: false,
        }
    }
}

/// Domain links of router `i`: a /26 of 10.253.0.0/16 (16 domains; 1024 routers).
pub fn domain_subnet(i: usize) -> Option<String> {
    (i < 1024).then(|| {
        let base = u32::from(std::net::Ipv4Addr::new(10, 253, 0, 0)) + 64 * i as u32;
        format!("{}/26", std::net::Ipv4Addr::from(base))
    })
}

/// `v` as a TOML basic string.
fn toml_string(v: &str) -> String {
    let mut s = String::from("\"");
    for c in v.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            c if c.is_control() => s.push_str(&format!("\\u{:04x}", c as u32)),
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

pub fn config_path(env: &LabEnv, lab: &str, node: &str) -> PathBuf {
    env.lab_dir(lab).join("daemons").join(format!("{node}.toml"))
}

pub fn socket_path(env: &LabEnv, lab: &str, node: &str) -> PathBuf {
    env.lab_dir(lab).join("sock").join(format!("{node}.sock"))
}

/// Writes one wuosd configuration per router: its neighbors are the far ends of its links.
pub fn write_configs(env: &LabEnv, st: &LabState, opts: &DaemonOptions) -> Result<(), LabError> {
    let dir = env.lab_dir(&st.name).join("daemons");
    fs::create_dir_all(&dir).map_err(|source| LabError::Io {
        what: format!("cannot create {}", dir.display()),
        source,
    })?;
    let t = &st.topology;
    for (i, node) in t.nodes.iter().enumerate() {
        let mut text = format!(
            "# Written by `wuos lab up` for router {node} of lab {lab}.\n\
             router_id = \"{node}\"\nrole = \"{role}\"\nlisten = \"0.0.0.0:{PROTOCOL_PORT}\"\n\
             control_address = \"{lo}:{PROTOCOL_PORT}\"\n\
             admin_socket = \"{sock}\"\nmetrics_listen = \"{lo}:{METRICS_PORT}\"\n\
             telemetry_interval = \"{interval}\"\nhop_limit = {hops}\ndata_dir = \"{data}\"\n\n\
             [resources]\nsource = \"cgroup\"\ncgroup = \"{cg}\"\ncgroup_root = \"{root}\"\n",
            node = node.name,
            lab = st.name,
            role = node.role,
            sock = socket_path(env, &st.name, &node.name).display(),
            lo = st.plan.loopbacks[i],
            interval = format_duration(opts.telemetry_interval),
            hops = opts.hop_limit,
            data = env.lab_dir(&st.name).join("data").join(&node.name).display(),
            cg = names::node_cgroup(&st.name, &node.name),
            root = env.cgroup_root.display(),
        );
        if let (true, Some(catalog), Some(subnet)) = (opts.domains, &env.catalog_dir, domain_subnet(i)) {
            // Routing keeps a quarter of a router's memory when the router has a limit.
            let mut reserve = node
                .memory
                .filter(|_| opts.routing_reservation)
                .map(|m| format!("routing_memory = \"{}\"\n", wuos_model::units::format_bytes(m / 4)))
                .unwrap_or_default();
            // Core 0 is the routing domain's and services are pinned to the others, when the
            // router has the CPU for it (a whole core for routing plus some for services).
            let host_cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
            if opts.routing_reservation && host_cpus >= 2.0 && node.cpus.unwrap_or(host_cpus) >= 1.5 {
                reserve.push_str("routing_cores = [0]\n");
            }
            text.push_str(&format!(
                "\n[domains]\ncatalog = \"{catalog}\"\nrun_dir = \"{run}\"\nrouter_netns = \"{netns}\"\n\
                 cgroup = \"{cg}\"\nnetns_prefix = \"{prefix}\"\nsubnet = \"{subnet}\"\npool = {pool}\n{reserve}",
                catalog = catalog.display(),
                run = env.lab_dir(&st.name).join("domains").join(&node.name).display(),
                netns = env.netns_dir.join(names::node_netns(&st.name, &node.name)).display(),
                cg = names::node_cgroup(&st.name, &node.name),
                prefix = names::node_netns(&st.name, &node.name),
                pool = opts.pool,
            ));
            if opts.xdp && node.role != wuos_model::Role::Host {
                text.push_str("\n[datapath]\nxdp = true\n");
            }
            for (service, params) in &opts.service_params {
                text.push_str(&format!("\n[domains.params.{service}]\n"));
                for (k, v) in params {
                    text.push_str(&format!("{k} = {}\n", toml_string(v)));
                }
            }
        }
        // Fog routers orchestrate, falling back to the (first) data-centre router.
        if node.role == wuos_model::Role::Fog
            && let Some(dc) = t.nodes.iter().find(|n| n.role == wuos_model::Role::Dc)
        {
            text.push_str(&format!("\n[orchestrator]\ndatacenter = \"{}\"\n", dc.name));
        }
        for (li, l) in t.links.iter().enumerate() {
            let la = &st.plan.links[li];
            let (peer, peer_addr, local_if) = if l.a == node.name {
                (&l.b, la.b, &la.a_ifname)
            } else if l.b == node.name {
                (&l.a, la.a, &la.b_ifname)
            } else {
                continue;
            };
            text.push_str(&format!(
                "\n[[neighbor]]\nid = \"{peer}\"\naddress = \"{peer_addr}:{PROTOCOL_PORT}\"\ninterface = \"{local_if}\"\n"
            ));
        }
        let path = dir.join(format!("{}.toml", node.name));
        fs::write(&path, text).map_err(|source| LabError::Io {
            what: format!("cannot write {}", path.display()),
            source,
        })?;
    }
    Ok(())
}

/// Starts the lab's supervisor as a detached process and returns its pid.
pub fn spawn_supervisor(env: &LabEnv, lab: &str) -> Result<u32, LabError> {
    let log = crate::spawn::log_file(env, lab, "supervisor")?;
    let mut cmd = Command::new(&env.relay_exe);
    cmd.args(["lab", "supervise", lab]).env("WUOSD_EXE", &env.wuosd_exe);
    Ok(crate::spawn::spawn_logged(cmd, log, true, "the daemon supervisor")?.id())
}

/// Waits until every router's daemon answers on its admin socket path (the socket exists), or
/// `timeout` passes; returns the routers still missing.
pub fn wait_for_sockets(env: &LabEnv, st: &LabState, timeout: Duration) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let missing: Vec<String> = st
            .topology
            .nodes
            .iter()
            .filter(|n| !socket_path(env, &st.name, &n.name).exists())
            .map(|n| n.name.clone())
            .collect();
        if missing.is_empty() || Instant::now() >= deadline {
            return missing;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

struct Supervised {
    node: String,
    child: Option<Child>,
    restarts: u32,
    next_start: Instant,
}

/// The supervisor's loop (`wuos lab supervise LAB`): starts every router's daemon, restarts one
/// that exits (1 s, 2 s, 4 s … up to 30 s apart), and stops them all when `stop` turns true or the
/// lab's state disappears.
pub fn supervise(env: &LabEnv, lab: &str, stop: &AtomicBool) -> Result<(), LabError> {
    let st = LabState::load(env, lab)?;
    if !env.wuosd_exe.exists() {
        return Err(LabError::Daemons(format!(
            "wuosd not found at {} (build it, or set WUOSD_EXE)",
            env.wuosd_exe.display()
        )));
    }
    let mut procs: Vec<Supervised> = st
        .topology
        .nodes
        .iter()
        .map(|n| Supervised {
            node: n.name.clone(),
            child: None,
            restarts: 0,
            next_start: Instant::now(),
        })
        .collect();
    eprintln!("supervising {} daemons of lab {lab}", procs.len());
    while !stop.load(Ordering::Relaxed) && LabState::exists(env, lab) {
        for p in &mut procs {
            let exited = p.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                p.restarts += 1;
                // 1, 2, 4, 8, 16 s, then 30 s apart.
                let backoff =
                    Duration::from_secs(1 << p.restarts.min(5).saturating_sub(1)).min(Duration::from_secs(30));
                eprintln!(
                    "daemon of {} exited ({status}); restart #{} in {backoff:?}",
                    p.node, p.restarts
                );
                p.child = None;
                p.next_start = Instant::now() + backoff;
            }
            if p.child.is_none() && Instant::now() >= p.next_start {
                let log = crate::spawn::log_file(env, lab, &p.node)?;
                let mut cmd = Command::new(&env.relay_exe);
                cmd.args(["lab", "exec", lab, &p.node, "--"])
                    .arg(&env.wuosd_exe)
                    .arg("--config")
                    .arg(config_path(env, lab, &p.node));
                let child = crate::spawn::spawn_logged(cmd, log, false, &format!("the daemon of {}", p.node));
                match child {
                    Ok(c) => p.child = Some(c),
                    Err(e) => {
                        eprintln!("cannot start the daemon of {}: {e}", p.node);
                        p.next_start = Instant::now() + Duration::from_secs(5);
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("stopping the daemons of lab {lab}");
    for p in &mut procs {
        if let Some(c) = &p.child {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    for p in &mut procs {
        if let Some(c) = &mut p.child {
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
    Ok(())
}
