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

use std::net::{Ipv4Addr, SocketAddr};

use wuos_model::Role;
use wuos_model::daemon::{
    DaemonConfig, DatapathConfig, DomainsConfig, METRICS_PORT, NBI_PORT, NeighborConfig, OrchestratorConfig,
    PROTOCOL_PORT, ResourcesConfig, SdwanControllerConfig, Source, TlsConfig,
};
use wuos_model::ids::{RouterId, ServiceId};

use crate::env::LabEnv;
use crate::error::LabError;
use crate::names;
use crate::state::LabState;

/// Memory the control domain (wuosd) of a lab router keeps from its services.
pub const CONTROL_MEMORY: u64 = 32 << 20;

/// Daemon settings chosen at `lab up`.
#[derive(Clone, Debug)]
pub struct DaemonOptions {
    pub telemetry_interval: Duration,
    /// The hello interval (keepalives at most this far apart; lost after 3 of them); `None`: the
    /// daemon's default (`hello_interval` in wuosd.toml).
    pub hello_interval: Option<Duration>,
    /// How long a neighbor may leave ICMP echo unanswered before it is lost (`link_dead_interval`; `0s`:
    /// off); `None`: the daemon's default.
    pub link_dead_interval: Option<Duration>,
    /// When the daemons sample (free-running, or together at multiples of the interval).
    pub sample_phase: wuos_model::daemon::SamplePhase,
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
    /// Mutual TLS between the routers: a CA and one certificate per router, issued at `lab up`
    /// into `LAB_DIR/pki`.
    pub tls: bool,
    /// Every router's path monitoring and steering (`[sdwan_paths]`).
    pub sdwan_paths: wuos_model::daemon::SdwanPathsConfig,
    /// How the routers carry their links (`link_transport`; gRPC for comparisons).
    pub link_transport: wuos_model::daemon::LinkTransport,
}

impl Default for DaemonOptions {
    fn default() -> Self {
        Self {
            telemetry_interval: Duration::from_secs(1),
            hello_interval: None,
            link_dead_interval: None,
            sample_phase: Default::default(),
            hop_limit: 2,
            domains: true,
            pool: 0,
            routing_reservation: true,
            service_params: Default::default(),
            xdp: false,
            tls: true,
            sdwan_paths: Default::default(),
            link_transport: Default::default(),
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

pub fn config_path(env: &LabEnv, lab: &str, node: &str) -> PathBuf {
    env.lab_dir(lab).join("daemons").join(format!("{node}.toml"))
}

pub fn socket_path(env: &LabEnv, lab: &str, node: &str) -> PathBuf {
    env.lab_dir(lab).join("sock").join(format!("{node}.sock"))
}

/// The wuosd configuration of router `i`: its neighbors are the far ends of its links.
pub fn config(env: &LabEnv, st: &LabState, opts: &DaemonOptions, i: usize) -> Result<DaemonConfig, LabError> {
    let t = &st.topology;
    let node = &t.nodes[i];
    let id = |name: &str| RouterId::new(name).map_err(|e| LabError::Topology(e.to_string()));
    let lo = st.plan.loopbacks[i];
    let cgroup = names::node_cgroup(&st.name, &node.name);
    let domains = match (opts.domains, &env.catalog_dir, domain_subnet(i)) {
        (true, Some(catalog), Some(subnet)) => {
            // Routing keeps a quarter of a router's memory when the router has a limit; the control
            // domain (wuosd) keeps 32 MiB of it when it has at least 128 MiB.
            let routing_memory = node.memory.filter(|_| opts.routing_reservation).map(|m| m / 4);
            let control_memory = node
                .memory
                .filter(|&m| opts.routing_reservation && m >= CONTROL_MEMORY * 4)
                .map(|_| CONTROL_MEMORY);
            // Core 0 is the routing domain's and services are pinned to the others, when the
            // router has the CPU for it (a whole core for routing plus some for services).
            let host_cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
            let routing_cores = if opts.routing_reservation && host_cpus >= 2.0 && node.cpus.unwrap_or(host_cpus) >= 1.5
            {
                vec![0]
            } else {
                Vec::new()
            };
            let mut params = std::collections::BTreeMap::new();
            for (service, p) in &opts.service_params {
                let service = ServiceId::new(service.as_str()).map_err(|e| LabError::Daemons(e.to_string()))?;
                params.insert(service, p.clone());
            }
            Some(DomainsConfig {
                catalog: catalog.clone(),
                run_dir: env.lab_dir(&st.name).join("domains").join(&node.name),
                router_netns: Some(env.netns_dir.join(names::node_netns(&st.name, &node.name))),
                netns_dir: env.netns_dir.clone(),
                cgroup: cgroup.clone(),
                netns_prefix: names::node_netns(&st.name, &node.name),
                subnet: subnet
                    .parse()
                    .map_err(|e| LabError::Daemons(format!("domain subnet {subnet}: {e}")))?,
                routing_cores,
                routing_memory,
                control_domain: opts.routing_reservation,
                control_memory,
                pool: opts.pool,
                init_exe: None,
                params,
            })
        }
        _ => None,
    };
    // Fog routers orchestrate, falling back to the (first) data-centre router.
    let orchestrator = match t.nodes.iter().find(|n| n.role == Role::Dc) {
        Some(dc) if node.role == Role::Fog => Some(OrchestratorConfig::new(id(&dc.name)?)),
        _ => None,
    };
    let mut neighbors = Vec::new();
    for (li, l) in t.links.iter().enumerate() {
        let la = &st.plan.links[li];
        let (peer, peer_addr, local_if) = if l.a == node.name {
            (&l.b, la.b, &la.a_ifname)
        } else if l.b == node.name {
            (&l.a, la.a, &la.b_ifname)
        } else {
            continue;
        };
        neighbors.push(NeighborConfig {
            id: id(peer)?,
            address: SocketAddr::from((peer_addr, PROTOCOL_PORT)),
            interface: local_if.clone(),
        });
    }
    let router = id(&node.name)?;
    Ok(DaemonConfig {
        router_id: router.clone(),
        role: node.role,
        listen: SocketAddr::from((Ipv4Addr::UNSPECIFIED, PROTOCOL_PORT)),
        control_address: Some(SocketAddr::from((lo, PROTOCOL_PORT))),
        admin_socket: socket_path(env, &st.name, &node.name),
        admin_listen: None,
        metrics_listen: Some(SocketAddr::from((lo, METRICS_PORT))),
        telemetry_interval: opts.telemetry_interval,
        sample_phase: opts.sample_phase,
        hello_interval: opts.hello_interval,
        link_dead_interval: opts.link_dead_interval,
        dead_multiplier: 3,
        hop_limit: hop_limit(t, opts.hop_limit),
        stale_after_intervals: 3,
        quiet_intervals: wuos_model::daemon::DEFAULT_QUIET_INTERVALS,
        link_transport: opts.link_transport,
        announce: Default::default(),
        data_dir: env.lab_dir(&st.name).join("data").join(&node.name),
        resources: ResourcesConfig {
            source: Source::Cgroup,
            cgroup: Some(cgroup),
            cgroup_root: env.cgroup_root.clone(),
            ..ResourcesConfig::default()
        },
        neighbors,
        datapath: DatapathConfig {
            xdp: opts.xdp && domains.is_some() && node.role != Role::Host,
        },
        domains,
        tls: opts.tls.then(|| {
            let files = wuos_pki::TlsFiles::in_pki_dir(&pki_dir(env, &st.name), &router);
            TlsConfig {
                ca: files.ca,
                cert: files.cert,
                key: files.key,
                crl: files.crl,
            }
        }),
        orchestrator,
        sdwan_controller: (sdwan_controller(t) == Some(i)).then(|| {
            let dir = sdwan_dir(env, &st.name);
            SdwanControllerConfig {
                inventory: dir.join("inventory.json"),
                nbi_listen: SocketAddr::from((lo, NBI_PORT)),
                token_file: dir.join("token"),
            }
        }),
        sdwan_paths: opts.sdwan_paths.clone(),
    })
}

/// The flooding radius of a lab's routers: the lab's, but with an SD-WAN controller at least the
/// hop distance of the farthest SD-WAN site from it (at most 8), so the controller's status hears
/// every edge's tunnels and paths (in `sdwan:S:U` the dc is 2 hops from e1 and 3 from the other
/// edges). Every router gets the same radius: a receiver counts an advert's hops from its own.
pub fn hop_limit(t: &wuos_model::topology::Topology, lab: u32) -> u32 {
    let Some(c) = sdwan_controller(t) else { return lab };
    let ends = t.link_ends();
    // Breadth first from the controller.
    let mut dist = vec![u32::MAX; t.nodes.len()];
    let mut queue = std::collections::VecDeque::from([c]);
    dist[c] = 0;
    while let Some(n) = queue.pop_front() {
        for (a, b) in ends.iter().flatten().copied() {
            let next = if a == n {
                b
            } else if b == n {
                a
            } else {
                continue;
            };
            if dist[next] == u32::MAX {
                dist[next] = dist[n] + 1;
                queue.push_back(next);
            }
        }
    }
    let site = |i: usize| {
        let node = &t.nodes[i];
        node.role == Role::Edge
            && node.underlay.is_none()
            && ends
                .iter()
                .enumerate()
                .any(|(l, e)| e.is_some_and(|(a, b)| a == i || b == i) && t.link_underlay(l).is_some())
    };
    let farthest = (0..t.nodes.len())
        .filter(|&i| site(i) && dist[i] != u32::MAX)
        .map(|i| dist[i])
        .max()
        .unwrap_or(0);
    lab.max(farthest.min(8))
}

/// The SD-WAN controller of a topology with underlays (a link or router labelled `underlay`):
/// its first data-centre router, else its first fog router; none without underlays.
pub fn sdwan_controller(t: &wuos_model::topology::Topology) -> Option<usize> {
    let hybrid = t.nodes.iter().any(|n| n.underlay.is_some()) || t.links.iter().any(|l| l.underlay.is_some());
    if !hybrid {
        return None;
    }
    t.nodes
        .iter()
        .position(|n| n.role == Role::Dc)
        .or_else(|| t.nodes.iter().position(|n| n.role == Role::Fog))
}

/// The lab's SD-WAN files: `inventory.json` (the sites, for the controller) and `token` (the
/// NBI's bearer token, `wuos sdwan token`).
pub fn sdwan_dir(env: &LabEnv, lab: &str) -> PathBuf {
    env.lab_dir(lab).join("sdwan")
}

/// Writes the SD-WAN inventory (each site reached at its loopback) and a new NBI token, when
/// the lab has an SD-WAN controller.
pub fn write_sdwan(env: &LabEnv, st: &LabState) -> Result<(), LabError> {
    if sdwan_controller(&st.topology).is_none() {
        return Ok(());
    }
    let bad = |e: String| LabError::Daemons(format!("the SD-WAN inventory: {e}"));
    let mut inv = wuos_sdwan::Inventory::from_topology(&st.topology, &st.plan).map_err(|e| bad(e.to_string()))?;
    for (name, site) in inv.sites.iter_mut() {
        let i = st
            .topology
            .node_index(name)
            .ok_or_else(|| bad(format!("no router {name}")))?;
        site.control = Some(SocketAddr::from((st.plan.loopbacks[i], PROTOCOL_PORT)));
    }
    let dir = sdwan_dir(env, &st.name);
    let io = |what: String| move |source| LabError::Io { what, source };
    fs::create_dir_all(&dir).map_err(io(format!("cannot create {}", dir.display())))?;
    let text = serde_json::to_string_pretty(&inv).map_err(|e| bad(e.to_string()))?;
    let path = dir.join("inventory.json");
    fs::write(&path, text).map_err(io(format!("cannot write {}", path.display())))?;
    let mut raw = [0u8; 32];
    std::io::Read::read_exact(
        &mut fs::File::open("/dev/urandom").map_err(io("cannot open /dev/urandom".into()))?,
        &mut raw,
    )
    .map_err(io("cannot read /dev/urandom".into()))?;
    let token: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    let path = dir.join("token");
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .map_err(io(format!("cannot write {}", path.display())))?;
        std::io::Write::write_all(&mut f, format!("{token}\n").as_bytes())
            .map_err(io(format!("cannot write {}", path.display())))?;
    }
    Ok(())
}

/// The lab's PKI: its CA, one certificate per router, the CRL (`wuos pki … --dir` works on it).
pub fn pki_dir(env: &LabEnv, lab: &str) -> PathBuf {
    env.lab_dir(lab).join("pki")
}

/// Creates the lab's CA and issues every router its certificate: its id and role, and the
/// `orchestrator` capability where it runs one (fog routers of a lab with a data centre), and the
/// `controller` capability on the SD-WAN controller.
/// Returns how many certificates were issued.
pub fn issue_pki(env: &LabEnv, st: &LabState) -> Result<usize, LabError> {
    let err = |e: wuos_pki::PkiError| LabError::Daemons(format!("cannot issue the lab's certificates: {e}"));
    let dir = pki_dir(env, &st.name);
    let pki = wuos_pki::Pki::init(
        &dir,
        &wuos_pki::InitOptions {
            force: true,
            ..Default::default()
        },
    )
    .map_err(err)?;
    let has_dc = st.topology.nodes.iter().any(|n| n.role == Role::Dc);
    let controller = sdwan_controller(&st.topology);
    let requests = st
        .topology
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let mut capabilities = std::collections::BTreeSet::new();
            if has_dc && n.role == Role::Fog {
                capabilities.insert(wuos_pki::Capability::Orchestrator);
            }
            if controller == Some(i) {
                capabilities.insert(wuos_pki::Capability::Controller);
            }
            Ok(wuos_pki::IssueRequest {
                router: RouterId::new(n.name.as_str()).map_err(|e| LabError::Topology(e.to_string()))?,
                role: n.role,
                capabilities,
                validity: wuos_pki::Validity::days(365),
            })
        })
        .collect::<Result<Vec<_>, LabError>>()?;
    pki.issue_many(&requests).map_err(err)?;
    Ok(requests.len())
}

/// Writes one wuosd configuration per router (`LAB_DIR/daemons/NODE.toml`), and the SD-WAN
/// controller's files when the lab has one.
pub fn write_configs(env: &LabEnv, st: &LabState, opts: &DaemonOptions) -> Result<(), LabError> {
    write_sdwan(env, st)?;
    let dir = env.lab_dir(&st.name).join("daemons");
    fs::create_dir_all(&dir).map_err(|source| LabError::Io {
        what: format!("cannot create {}", dir.display()),
        source,
    })?;
    for (i, node) in st.topology.nodes.iter().enumerate() {
        let cfg = config(env, st, opts, i)?;
        let text = cfg.to_toml().map_err(|e| LabError::Daemons(e.to_string()))?;
        let text = format!(
            "# Written by `wuos lab up` for router {} of lab {}.\n{text}",
            node.name, st.name
        );
        let path = config_path(env, &st.name, &node.name);
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

/// The lab's NBI bearer token (written at `lab up` for labs with an SD-WAN controller).
pub fn sdwan_token(env: &LabEnv, lab: &str) -> Result<String, LabError> {
    let path = sdwan_dir(env, lab).join("token");
    match fs::read_to_string(&path) {
        Ok(t) => Ok(t.trim().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(LabError::NoSdwanController { lab: lab.into() }),
        Err(source) => Err(LabError::Io {
            what: format!("cannot read the NBI token {}", path.display()),
            source,
        }),
    }
}

/// A connection to the lab's SD-WAN NBI — opened inside the controller router's namespace, as
/// the NBI listens on that router's loopback — with its address and the lab's token.
pub fn nbi_stream(env: &LabEnv, st: &LabState) -> Result<(std::net::TcpStream, SocketAddr, String), LabError> {
    let Some(i) = sdwan_controller(&st.topology) else {
        return Err(LabError::NoSdwanController { lab: st.name.clone() });
    };
    let node = &st.topology.nodes[i].name;
    let addr = SocketAddr::from((st.plan.loopbacks[i], NBI_PORT));
    let token = sdwan_token(env, &st.name)?;
    let ns = wuos_southbound::netns::open(&env.netns_dir, &names::node_netns(&st.name, node))
        .map_err(|e| LabError::Daemons(format!("router {node}'s namespace: {e}")))?;
    let stream = wuos_southbound::netns::run_in(&ns, || {
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
    })
    .map_err(|e| LabError::Daemons(format!("router {node}'s namespace: {e}")))?
    .map_err(|source| LabError::Io {
        what: format!("cannot reach the SD-WAN NBI of {node} at {addr} (is its wuosd running?)"),
        source,
    })?;
    Ok((stream, addr, token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdwan_labs_flood_as_far_as_their_farthest_site_from_the_controller() {
        let t = |g: &str| wuos_model::generate::generate(&g.parse().unwrap(), 1);
        // e1 hangs off mpls1/inet1 like the dc (2 hops); e2 and e3 off routers 2 and 3 (3 hops).
        assert_eq!(hop_limit(&t("sdwan:3:2"), 2), 3);
        assert_eq!(hop_limit(&t("sdwan:3:2"), 5), 5, "never below the lab's");
        assert_eq!(hop_limit(&t("sdwan:2:1"), 2), 3);
        assert_eq!(hop_limit(&t("line:5"), 2), 2, "no SD-WAN, no change");
    }

    fn state() -> LabState {
        let topo = wuos_model::file::parse(
            "[[node]]\nname = \"fog\"\nrole = \"fog\"\nmemory = \"512MiB\"\n\
             [[node]]\nname = \"dc\"\nrole = \"dc\"\n\
             [[node]]\nname = \"e1\"\nrole = \"edge\"\n\
             [[link]]\na = \"fog\"\nb = \"dc\"\n[[link]]\na = \"fog\"\nb = \"e1\"\n",
            "t.toml",
        )
        .unwrap();
        let plan = wuos_model::plan::address_plan(&topo).unwrap();
        LabState {
            name: "t".into(),
            phase: crate::state::Phase::Up,
            created_unix_ms: 0,
            links: Vec::new(),
            topology: topo,
            plan,
            supervisor_pid: None,
        }
    }

    fn env() -> LabEnv {
        LabEnv {
            state_dir: "/tmp/wuos-test-state".into(),
            netns_dir: "/run/netns".into(),
            cgroup_root: "/sys/fs/cgroup".into(),
            proc_root: "/proc".into(),
            relay_exe: "/bin/wuos".into(),
            wuosd_exe: "/bin/wuosd".into(),
            catalog_dir: Some("/cat".into()),
        }
    }

    #[test]
    fn every_router_gets_a_config_the_daemon_accepts_with_its_links_as_neighbors() {
        let st = state();
        let opts = DaemonOptions {
            xdp: true,
            service_params: [(
                "pabx".to_string(),
                [("static_users".to_string(), "2000=\"x\"".to_string())].into(),
            )]
            .into(),
            ..DaemonOptions::default()
        };
        for (i, node) in st.topology.nodes.iter().enumerate() {
            let cfg = config(&env(), &st, &opts, i).unwrap();
            let text = cfg.to_toml().unwrap();
            let path = std::path::Path::new("x.toml");
            let back = DaemonConfig::parse(&text, path).unwrap_or_else(|e| panic!("{e}\n{text}"));
            back.validate(path).unwrap_or_else(|e| panic!("{e}\n{text}"));
            assert_eq!(back, cfg, "{text}");
            assert_eq!(cfg.router_id, node.name.as_str());
            assert_eq!(cfg.admin_socket, socket_path(&env(), "t", &node.name));
            let neighbors: Vec<&str> = cfg.neighbors.iter().map(|n| n.id.as_str()).collect();
            let expected: &[&str] = match node.name.as_str() {
                "fog" => &["dc", "e1"],
                _ => &["fog"],
            };
            assert_eq!(neighbors, expected);
            assert_eq!(
                cfg.orchestrator.is_some(),
                node.role == Role::Fog,
                "fog routers orchestrate"
            );
            assert!(cfg.datapath.xdp, "xdp on routers with domains");
        }
        let fog = config(&env(), &st, &opts, 0).unwrap();
        let d = fog.domains.unwrap();
        assert_eq!(
            d.routing_memory,
            Some(128 << 20),
            "a quarter of 512 MiB is kept for routing"
        );
        assert_eq!(fog.orchestrator.unwrap().datacenter, "dc");
    }

    #[test]
    fn a_lab_with_underlays_makes_its_dc_the_sdwan_controller() {
        assert_eq!(sdwan_controller(&state().topology), None, "no underlays, no controller");
        let topo = wuos_model::generate::generate(&"sdwan:2:2".parse().unwrap(), 1);
        let plan = wuos_model::plan::address_plan(&topo).unwrap();
        let st = LabState {
            topology: topo,
            plan,
            ..state()
        };
        let dc = sdwan_controller(&st.topology).unwrap();
        assert_eq!(st.topology.nodes[dc].name, "dc");
        for i in 0..st.topology.nodes.len() {
            let cfg = config(&env(), &st, &DaemonOptions::default(), i).unwrap();
            match &cfg.sdwan_controller {
                Some(sc) => {
                    assert_eq!(i, dc);
                    assert_eq!(sc.nbi_listen, SocketAddr::from((st.plan.loopbacks[dc], NBI_PORT)));
                    assert_eq!(sc.token_file, sdwan_dir(&env(), "t").join("token"));
                    let text = cfg.to_toml().unwrap();
                    assert!(text.contains("[sdwan_controller]"), "{text}");
                }
                None => assert_ne!(i, dc),
            }
        }
    }
}
