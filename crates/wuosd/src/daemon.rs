//! The running daemon: tasks around the protocol state machine.
//!
//! ```text
//!  sampler ──(every telemetry interval: Monitor::sample)──▶ Input::Sample ──┐
//!  ticker ───(every hello interval / 4)─────────────────▶ Input::Tick ─────┤
//!  Neighbor gRPC server ──▶ on_hello / on_flood ────────────────────────────┼──▶ Instance (one Mutex)
//!  peer workers ──▶ Input::HelloAnswered / HelloFailed ─────────────────────┘        │ Actions
//!        ▲                                                                            ▼
//!        └──── one queue per neighbor ◀──── SendHello / SendFlood ◀──────────── apply()
//!  Admin gRPC (Unix socket) ──▶ Instance::status        metrics HTTP ──▶ Metrics::render
//! ```
//! The state machine is synchronous and never awaits; tasks only turn I/O into inputs and actions
//! into I/O, so the protocol logic is tested without sockets (wuos-proto's golden tests).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use prost::Message;
use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint, Server};
use tracing::{debug, info, warn};
use wuos_proto::pb;
use wuos_proto::pb::neighbor_client::NeighborClient;
use wuos_proto::{Action, Input, Instance, InstanceConfig, MAX_MESSAGE_BYTES, NeighborConfig};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::monitor::{Monitor, Sample, Source};
use crate::store::Store;

/// What the tasks share.
pub struct Shared {
    pub cfg: Config,
    pub instance: Mutex<Instance>,
    pub metrics: Arc<Metrics>,
    /// The hypervisor layer, when the config has `[domains]`.
    pub domains: Option<Mutex<crate::domains::Domains>>,
    last_services: Mutex<Vec<pb::ServiceInstance>>,
    started: Instant,
    peers: HashMap<String, mpsc::Sender<Outgoing>>,
    /// Applies orchestrators' intents.
    pub controller: crate::controller::Controller,
    /// The orchestrator (fog routers with `[orchestrator]`), set once at start.
    pub orchestration: std::sync::OnceLock<Arc<crate::orchestration::Orchestration>>,
    /// The embedded store.
    pub store: Arc<Store>,
    /// The XDP classifier (`[datapath] xdp`).
    pub datapath: Option<crate::datapath::DataPath>,
    boot_id: u64,
    /// Netlink in this router's namespace (the controller's routes); `None` if it could not open.
    pub netlink: Option<wuos_southbound::netlink::Netlink>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("router", &self.cfg.router_id).finish()
    }
}

enum Outgoing {
    Hello(pb::Hello),
    Flood(pb::FloodRequest),
}

/// Monotonic milliseconds since the daemon started: the state machine's clock.
pub fn now_ms(started: Instant) -> u64 {
    started.elapsed().as_millis() as u64
}

pub fn unix_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

impl Shared {
    pub fn now_ms(&self) -> u64 {
        now_ms(self.started)
    }

    /// This daemon's boot id.
    pub fn boot_id(&self) -> u64 {
        self.boot_id
    }

    /// The protocol state as the admin API reports it.
    pub fn status(&self) -> pb::StatusReply {
        self.lock().status(self.now_ms(), unix_ns())
    }

    /// Where router `id`'s controller listens, as its adverts say (ours: our listen address).
    pub fn control_address_of(&self, id: &str) -> Option<String> {
        if id == self.cfg.router_id {
            return self.cfg.advertised_control_address().map(|a| a.to_string());
        }
        let inst = self.instance.lock().unwrap_or_else(|p| p.into_inner());
        inst.view()
            .get(id)
            .map(|e| e.advert.control_address.clone())
            .filter(|a| !a.is_empty())
    }

    /// Feeds one input to the state machine and carries out what it asks for.
    pub fn input(&self, input: Input) {
        let actions = self.lock().process(input);
        self.apply(actions);
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, Instance> {
        self.instance.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Carries out actions: queues messages to neighbors, logs state changes.
    pub fn apply(&self, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::SendHello { neighbor, hello } => self.send(&neighbor, Outgoing::Hello(hello)),
                Action::SendFlood { neighbor, request } => self.send(&neighbor, Outgoing::Flood(request)),
                Action::NeighborUp { neighbor } => info!(%neighbor, "neighbor up"),
                Action::NeighborDown { neighbor, reason } => warn!(%neighbor, %reason, "neighbor down"),
                Action::ViewAdded { origin } => debug!(%origin, "view: added"),
                Action::ViewWithdrawn { origin, reason } => info!(%origin, %reason, "view: withdrawn"),
            }
        }
    }

    /// The services this router hosts, for its adverts.
    /// (If a domain operation holds the domains just now, the last list is advertised again
    /// rather than blocking the sampler or advertising none.)
    fn services(&self) -> Vec<pb::ServiceInstance> {
        let Some(d) = &self.domains else { return Vec::new() };
        let mut last = self.last_services.lock().unwrap_or_else(|p| p.into_inner());
        if let Ok(d) = d.try_lock() {
            *last = d
                .list()
                .domains
                .into_iter()
                .filter(|i| !i.service.is_empty())
                .map(|i| pb::ServiceInstance {
                    service: i.service,
                    // Adverts carry names of at most 64 bytes; a failure reason can be longer.
                    state: clip(&i.state, wuos_proto::validate::MAX_NAME_LEN),
                    name: i.name,
                    cpu_pct: i.cpu_pct,
                    memory_bytes: i.memory_bytes,
                    memory_limit: i.memory_limit,
                    health: i.health,
                })
                .collect();
        }
        last.clone()
    }

    fn send(&self, neighbor: &str, msg: Outgoing) {
        match self.peers.get(neighbor) {
            Some(q) => {
                if q.try_send(msg).is_err() {
                    self.metrics.reject("send queue full");
                }
            }
            None => warn!(%neighbor, "state machine addressed an unconfigured neighbor"),
        }
    }

    /// Copies the state machine's counters into the Prometheus gauges; called per scrape.
    pub fn mirror_counters(&self) {
        let inst = self.lock();
        self.metrics
            .neighbors_up
            .set(inst.neighbors().filter(|n| n.is_up()).count() as i64);
        self.metrics.view_entries.set(inst.view().iter().count() as i64);
        for (name, value) in inst.counters().values() {
            self.metrics
                .protocol_events
                .get_or_create(&crate::metrics::NameLabel { name: name.to_string() })
                .set(value as i64);
        }
    }
}

/// Sends queued messages to one neighbor, in order, one at a time.
async fn peer_worker(shared: Arc<Shared>, id: String, address: String, mut rx: mpsc::Receiver<Outgoing>) {
    let timeout = shared
        .cfg
        .hello_interval()
        .clamp(Duration::from_millis(50), Duration::from_secs(2));
    let channel: Channel = match Endpoint::from_shared(format!("http://{address}")) {
        Ok(e) => e
            .connect_timeout(timeout)
            .timeout(timeout)
            .tcp_nodelay(true)
            .connect_lazy(),
        Err(e) => {
            warn!(neighbor = %id, %address, error = %e, "bad neighbor address");
            return;
        }
    };
    let mut client = NeighborClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES);
    while let Some(msg) = rx.recv().await {
        match msg {
            Outgoing::Hello(h) => {
                shared.metrics.bytes("sent", h.encoded_len());
                let t0 = Instant::now();
                let r = client.hello(h).await;
                let rtt_ms = t0.elapsed().as_secs_f64() * 1e3;
                let now_ms = shared.now_ms();
                match r {
                    Ok(reply) => {
                        let reply = reply.into_inner();
                        shared.metrics.bytes("received", reply.encoded_len());
                        shared.input(Input::HelloAnswered {
                            now_ms,
                            neighbor: id.clone(),
                            reply,
                            rtt_ms,
                        });
                    }
                    Err(status) => {
                        debug!(neighbor = %id, error = %status.message(), "hello failed");
                        shared.input(Input::HelloFailed {
                            now_ms,
                            neighbor: id.clone(),
                        });
                    }
                }
            }
            Outgoing::Flood(f) => {
                shared.metrics.bytes("sent", f.encoded_len());
                if let Err(status) = client.flood(f).await {
                    debug!(neighbor = %id, error = %status.message(), "flood failed");
                }
            }
        }
    }
}

/// Online CPUs from `SYS/devices/system/cpu/online` ("0-3,6"); `[0]` if unreadable.
fn online_cpus(sys_root: &std::path::Path) -> Vec<u32> {
    let text = std::fs::read_to_string(sys_root.join("devices/system/cpu/online")).unwrap_or_default();
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<u32>(), b.parse::<u32>()) {
                    cpus.extend(a..=b);
                }
            }
            None => cpus.extend(part.parse::<u32>().ok()),
        }
    }
    if cpus.is_empty() { vec![0] } else { cpus }
}

fn monitor_source(cfg: &Config) -> Source {
    let r = &cfg.resources;
    match r.source {
        crate::config::Source::Cgroup => Source::Cgroup {
            cgroup_root: r.cgroup_root.clone(),
            rel: r.cgroup.clone().unwrap_or_default(),
            proc_root: r.proc_root.clone(),
        },
        crate::config::Source::Proc => Source::Proc {
            proc_root: r.proc_root.clone(),
            sys_root: r.sys_root.clone(),
        },
    }
}

fn resources(s: &Sample) -> pb::Resources {
    let pressure = |p: &Option<crate::monitor::Pressure>| {
        p.as_ref().map(|p| pb::Pressure {
            some_avg10: p.some_avg10,
            full_avg10: p.full_avg10,
        })
    };
    pb::Resources {
        cpu_used_pct: s.cpu_used_pct.clamp(0.0, 100.0),
        cpu_capacity_cores: s.cpu_capacity_cores,
        mem_used_pct: s.mem_used_pct.clamp(0.0, 100.0),
        mem_used_bytes: s.mem_used_bytes,
        mem_total_bytes: s.mem_total_bytes,
        disk_read_bytes_per_s: s.disk_read_bytes_per_s as u64,
        disk_write_bytes_per_s: s.disk_write_bytes_per_s as u64,
        free_cpu_cores: s.free_cpu_cores(),
        free_mem_bytes: s.free_mem_bytes(),
        cpu_pressure: pressure(&s.cpu_pressure),
        mem_pressure: pressure(&s.mem_pressure),
        io_pressure: pressure(&s.io_pressure),
    }
}

fn links(cfg: &Config, s: &Sample) -> Vec<pb::LinkMetrics> {
    s.interfaces
        .iter()
        .map(|i| pb::LinkMetrics {
            interface: i.name.clone(),
            neighbor: cfg
                .neighbors
                .iter()
                .find(|n| n.interface == i.name)
                .map(|n| n.id.to_string())
                .unwrap_or_default(),
            rx_bytes_per_s: i.rx_bytes_per_s as u64,
            tx_bytes_per_s: i.tx_bytes_per_s as u64,
            rx_packets_per_s: i.rx_packets_per_s as u64,
            tx_packets_per_s: i.tx_packets_per_s as u64,
            rtt_ms: None,
            up: true,
        })
        .collect()
}

/// Runs the daemon until `shutdown` resolves.
pub async fn run(cfg: Config, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
    let store = Arc::new(Store::open(&cfg.data_dir)?);
    let boot_id = store.next_boot_id((unix_ns() / 1_000_000) as u64)?;
    let mut monitor = Monitor::new(monitor_source(&cfg)).context("cannot start the monitor")?;
    info!(router = %cfg.router_id, boot_id, source = %monitor.describe(), "wuosd starting");
    let metrics = Metrics::new(cfg.router_id.as_str());

    let mut peers = HashMap::new();
    let mut receivers = Vec::new();
    for n in &cfg.neighbors {
        let (tx, rx) = mpsc::channel(64);
        peers.insert(n.id.to_string(), tx);
        receivers.push((n.id.to_string(), n.address.to_string(), rx));
    }
    let hello = cfg.hello_interval();
    let instance = Instance::new(InstanceConfig {
        router_id: cfg.router_id.to_string(),
        role: cfg.role.into(),
        boot_id,
        hello_interval_ms: hello.as_millis() as u32,
        dead_interval_ms: (hello * cfg.dead_multiplier).as_millis() as u32,
        telemetry_interval_ms: cfg.telemetry_interval.as_millis() as u32,
        hop_limit: cfg.hop_limit,
        stale_after_intervals: cfg.stale_after_intervals,
        neighbors: cfg
            .neighbors
            .iter()
            .map(|n| NeighborConfig {
                id: n.id.to_string(),
                address: n.address.to_string(),
                interface: n.interface.clone(),
            })
            .collect(),
        // The Control service shares the protocol port.
        control_address: cfg
            .advertised_control_address()
            .map(|a| a.to_string())
            .unwrap_or_default(),
    });
    let domains = match &cfg.domains {
        Some(dc) => {
            let first = monitor.sample(Instant::now()).context("first monitor sample")?;
            let budget = wuos_model::admission::HostBudget {
                cpus: first.cpu_capacity_cores,
                cpu_ids: online_cpus(&cfg.resources.sys_root),
                memory: first.mem_total_bytes,
            };
            let vm = wuos_southbound::domain::VmBackend::new();
            if let Some(note) = vm.accel_note() {
                tracing::warn!("{note}");
            }
            let backend: Arc<dyn wuos_southbound::domain::DomainBackend> =
                Arc::new(wuos_southbound::domain::Backends {
                    container: Arc::new(wuos_southbound::domain::ContainerBackend::new()),
                    vm: Some(Arc::new(vm)),
                });
            let d = crate::domains::Domains::open(
                dc.clone(),
                cfg.resources.cgroup_root.clone(),
                budget,
                store.clone(),
                backend,
            )
            .context("cannot start the domains")?;
            Some(Mutex::new(d))
        }
        None => None,
    };
    let datapath = match (&domains, cfg.datapath.xdp) {
        (Some(d), true) => {
            let services = d.lock().unwrap_or_else(|p| p.into_inner()).datapath_services();
            let ifaces: Vec<&str> = cfg.neighbors.iter().map(|n| n.interface.as_str()).collect();
            match crate::datapath::DataPath::start(&ifaces, &services) {
                Ok(dp) => {
                    info!(
                        interfaces = ifaces.len(),
                        services = services.len(),
                        "XDP classifier attached"
                    );
                    Some(dp)
                }
                Err(e) => {
                    warn!(error = %e, "no XDP data path: demand is not measured");
                    None
                }
            }
        }
        (None, true) => {
            warn!("[datapath] xdp needs [domains] (its catalog names the services): not attached");
            None
        }
        _ => None,
    };
    let shared = Arc::new(Shared {
        cfg: cfg.clone(),
        instance: Mutex::new(instance),
        metrics: metrics.clone(),
        domains,
        last_services: Mutex::new(Vec::new()),
        started: Instant::now(),
        peers,
        controller: crate::controller::Controller::open(store.clone()),
        orchestration: std::sync::OnceLock::new(),
        store: store.clone(),
        boot_id,
        datapath,
        netlink: match wuos_southbound::netlink::Netlink::connect_here(&tokio::runtime::Handle::current()) {
            Ok(nl) => Some(nl),
            Err(e) => {
                warn!(error = %e, "no netlink: service rules cannot be applied");
                None
            }
        },
    });
    for (id, address, rx) in receivers {
        tokio::spawn(peer_worker(shared.clone(), id, address, rx));
    }

    // Servers.
    let listen = cfg.listen;
    let neighbor_svc = crate::server::neighbor_service(shared.clone());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut stop_a = stop_rx.clone();
    let neighbor_server = tokio::spawn(
        Server::builder()
            .layer(tower::util::MapResponseLayer::new(crate::server::count_errors(
                metrics.clone(),
            )))
            .add_service(neighbor_svc)
            .add_service(crate::server::control_service(shared.clone()))
            .serve_with_shutdown(listen, async move {
                let _ = stop_a.changed().await;
            }),
    );
    let admin = crate::admin::serve(shared.clone(), &cfg.admin_socket, stop_rx.clone())?;
    if let Some(m) = &cfg.metrics_listen {
        let l = tokio::net::TcpListener::bind(*m)
            .await
            .with_context(|| format!("metrics_listen {m}"))?;
        let s = shared.clone();
        tokio::spawn(crate::metrics::serve(l, metrics.clone(), move || s.mirror_counters()));
    }

    // Ticker.
    let tick_every = (hello / 4).max(Duration::from_millis(10));
    let s = shared.clone();
    let ticker = tokio::spawn(async move {
        let mut t = tokio::time::interval(tick_every);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            t.tick().await;
            let now_ms = s.now_ms();
            s.input(Input::Tick { now_ms });
        }
    });

    // Sampler.
    let s = shared.clone();
    let interval = cfg.telemetry_interval;
    let sampler = tokio::spawn(async move {
        let mut t = tokio::time::interval(interval);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            t.tick().await;
            let t0 = Instant::now();
            match monitor.sample(t0) {
                Ok(sample) => {
                    s.metrics.sample_seconds.set(t0.elapsed().as_secs_f64());
                    s.metrics.cpu_used_pct.set(sample.cpu_used_pct);
                    s.metrics.mem_used_pct.set(sample.mem_used_pct);
                    s.metrics.mem_used_bytes.set(sample.mem_used_bytes as i64);
                    let now_ms = s.now_ms();
                    let services = s.services();
                    s.input(Input::Sample {
                        now_ms,
                        timestamp_unix_ns: unix_ns(),
                        resources: resources(&sample),
                        links: links(&s.cfg, &sample),
                        services,
                        demand: s.datapath.as_ref().map(|d| d.demand()).unwrap_or_default(),
                    });
                }
                Err(e) => warn!(error = %e, "monitor sample failed"),
            }
        }
    });

    // The orchestrator (fog routers).
    if let Some(oc) = &cfg.orchestrator {
        let o = crate::orchestration::start(shared.clone(), oc.clone());
        let _ = shared.orchestration.set(o);
        info!(datacenter = %oc.datacenter, "orchestrator running");
    }

    // The controller puts the kernel back in line with the intents in force: once the view has
    // filled after a start, then every 2 s (a lost route, a rule that could not be applied yet).
    let reconciler = shared.netlink.clone().map(|nl| {
        let s = shared.clone();
        tokio::spawn(async move {
            let mut t = tokio::time::interval(Duration::from_secs(2));
            t.tick().await;
            tokio::time::sleep(s.cfg.telemetry_interval * 2).await;
            loop {
                s.controller.reconcile(&s, &nl).await;
                t.tick().await;
            }
        })
    });

    // Domain supervision: restart policies.
    let supervisor = shared.domains.is_some().then(|| {
        let s = shared.clone();
        tokio::spawn(async move {
            let mut t = tokio::time::interval(Duration::from_secs(1));
            loop {
                t.tick().await;
                let s = s.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    if let Some(d) = &s.domains {
                        let probes = {
                            let mut d = d.lock().unwrap_or_else(|p| p.into_inner());
                            d.supervise();
                            d.due_probes()
                        };
                        // Probes run outside the lock, side by side (each bounded by its timeout).
                        let results: Vec<_> = std::thread::scope(|sc| {
                            let runs: Vec<_> = probes
                                .iter()
                                .map(|p| sc.spawn(move || (p.domain.clone(), crate::health::run(p))))
                                .collect();
                            runs.into_iter().filter_map(|h| h.join().ok()).collect()
                        });
                        if !results.is_empty() {
                            d.lock().unwrap_or_else(|p| p.into_inner()).record_probes(results);
                        }
                    }
                })
                .await;
            }
        })
    });

    shutdown.await;
    if let Some(t) = supervisor {
        t.abort();
    }
    if let Some(t) = reconciler {
        t.abort();
    }
    info!("shutting down: withdrawing from the neighbors");
    ticker.abort();
    sampler.abort();
    shared.input(Input::Shutdown {
        now_ms: shared.now_ms(),
    });
    // Give the peer workers a moment to deliver the withdrawals.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = stop_tx.send(true);
    // A graceful server shutdown waits for the neighbors' open HTTP/2 connections, which stay
    // open as long as they run: give in-flight calls a moment, then stop (dropping the runtime
    // at exit cancels what is left).
    let grace = Duration::from_millis(300);
    if tokio::time::timeout(grace, neighbor_server).await.is_err() {
        debug!("neighbor server still had connections; closing them");
    }
    let _ = tokio::time::timeout(grace, admin).await;
    let _ = std::fs::remove_file(&cfg.admin_socket);
    let own = shared.lock().status(shared.now_ms(), unix_ns()).own;
    if let Some(own) = own {
        let _ = store.put_blob("own_advert", &own.encode_to_vec());
    }
    info!("stopped");
    Ok(())
}

/// `s` cut to at most `max` bytes, on a character boundary.
fn clip(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}
