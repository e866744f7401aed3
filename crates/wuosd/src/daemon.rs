//! The running daemon: components that own their state and talk over channels.
//!
//! ```text
//!                     ┌──────────── watch<Neighborhood> ─────────────┬──────────────────────┐
//!                     │                                              ▼                      ▼
//!  Neighbor.Link ◀─▶ protocol task (Instance) ◀── sampler ◀─ monitor   controller task     orchestration task
//!  dialers       ◀─▶      │                         ▲  ▲               (Controller)          (Orchestrator,
//!                         │                         │  └── demand ── data path task ◀──┐     fog routers only)
//!                         │                         └─ snapshot ─┐   (XDP, nftables)   │        │ intents
//!  Control gRPC ── sessions ──Intents{session}──────────────────┼──▶ controller ───────┤        │
//!                                                               │      │ ensure        │        ▼
//!  Admin gRPC (Unix socket) ──▶ status · domains · policy       └── domains thread ◀───┘   Links: local session
//!                                                                 (Domains, probes)          | Control sessions
//! ```
//!
//! Every component is a task (the domains one an OS thread: its calls block) with a handle
//! (`*Handle`: a channel sender and watch receivers); nothing is shared behind a lock. The
//! protocol, controller and orchestrator state machines are synchronous and tested without
//! sockets; tasks only turn I/O into inputs and outputs into I/O.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use prost::Message;
use tokio::sync::mpsc;
use tonic::transport::Server;
use tracing::{debug, info, warn};
use wuos_model::daemon::DaemonConfig;
use wuos_proto::neighborhood::Neighborhood;
use wuos_proto::{Instance, InstanceConfig, NeighborConfig};
use wuos_southbound::netlink::Netlink;

use crate::clock::{Clock, unix_ns};
use crate::datapath::{DataPath, DatapathHandle};
use crate::domains::Domains;
use crate::domains::component::DomainsHandle;
use crate::metrics::Metrics;
use crate::monitor::{Monitor, Source};
use crate::store::Store;

/// Online CPUs from `SYS/devices/system/cpu/online` ("0-3,6"); `[0]` if unreadable.
fn online_cpus(sys_root: &std::path::Path) -> Vec<u32> {
    let text = std::fs::read_to_string(sys_root.join("devices/system/cpu/online")).unwrap_or_default();
    wuos_southbound::cgroup::parse_cpu_list(text.trim())
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| vec![0])
}

fn monitor_source(cfg: &DaemonConfig) -> Source {
    let r = &cfg.resources;
    match r.source {
        wuos_model::daemon::Source::Cgroup => Source::Cgroup {
            cgroup_root: r.cgroup_root.clone(),
            rel: r.cgroup.clone().unwrap_or_default(),
            proc_root: r.proc_root.clone(),
        },
        wuos_model::daemon::Source::Proc => Source::Proc {
            proc_root: r.proc_root.clone(),
            sys_root: r.sys_root.clone(),
        },
    }
}

/// The links' watch by ICMP echo when `link_dead_interval` is on. Without a raw socket (no
/// `CAP_NET_RAW`) the hellos watch the links alone, every telemetry interval unless configured:
/// the configuration that comes back says so.
fn link_watch(mut cfg: DaemonConfig, boot_id: u64) -> (DaemonConfig, Option<crate::liveness::Watch>) {
    let Some(dead) = cfg.link_dead_interval() else {
        return (cfg, None);
    };
    match wuos_southbound::echo::Echo::new((boot_id ^ u64::from(std::process::id())) as u16) {
        Ok(echo) => {
            let neighbors = cfg
                .neighbors
                .iter()
                .filter_map(|n| Some((n.id.to_string(), wuos_model::daemon::ipv4_of(&n.address)?)));
            let watch = crate::liveness::Watch::new(Box::new(echo), dead, neighbors);
            info!(
                dead_ms = dead.as_millis() as u64,
                hello_ms = cfg.hello_interval().as_millis() as u64,
                "links watched by ICMP echo"
            );
            (cfg, Some(watch))
        }
        Err(e) => {
            cfg.link_dead_interval = Some(Duration::ZERO);
            warn!(
                error = %e,
                hello_ms = cfg.hello_interval().as_millis() as u64,
                "cannot send ICMP echo (a raw socket needs CAP_NET_RAW): the links are watched by hellos alone"
            );
            (cfg, None)
        }
    }
}

fn instance_config(cfg: &DaemonConfig, boot_id: u64) -> InstanceConfig {
    InstanceConfig {
        router_id: cfg.router_id.to_string(),
        role: cfg.role.into(),
        boot_id,
        hello_interval_ms: cfg.hello_interval().as_millis() as u32,
        dead_interval_ms: cfg.dead_interval().as_millis() as u32,
        telemetry_interval_ms: cfg.telemetry_interval.as_millis() as u32,
        hop_limit: cfg.hop_limit,
        stale_after_intervals: cfg.stale_after_intervals,
        quiet_intervals: cfg.quiet_intervals,
        neighbors: cfg
            .neighbors
            .iter()
            .map(|n| NeighborConfig {
                id: n.id.to_string(),
                address: n.address.to_string(),
                interface: n.interface.clone(),
            })
            .collect(),
        control_address: cfg
            .advertised_control_address()
            .map(|a| a.to_string())
            .unwrap_or_default(),
    }
}

/// The mutual-TLS context of `[tls]`, or `None` (and a warning) without it.
fn load_tls(cfg: &DaemonConfig) -> Result<Option<wuos_pki::TlsContext>> {
    let Some(t) = &cfg.tls else {
        warn!("no [tls]: neighbors and controllers talk over plain TCP, unauthenticated");
        return Ok(None);
    };
    let ctx = wuos_pki::TlsContext::load(wuos_pki::TlsFiles {
        ca: t.ca.clone(),
        cert: t.cert.clone(),
        key: t.key.clone(),
        crl: t.crl.clone(),
    })
    .context("[tls]")?;
    let id = ctx.identity();
    if id.router != cfg.router_id {
        anyhow::bail!(
            "[tls] cert {} is {}'s certificate, not this router's ({})",
            t.cert.display(),
            id.router,
            cfg.router_id
        );
    }
    info!(serial = %id.serial, role = %id.role, "mutual TLS with certificate");
    Ok(Some(ctx))
}

/// Reads the certificate, key and CRL again when their files change (looked at every 2 s): a
/// rotated certificate or a new CRL applies to new connections; established ones go on. The look
/// rides the protocol's publications of the neighborhood (one at every sample at least) rather
/// than a timer of its own, which would wake the daemon for two `stat`s; a fallback timer covers
/// a protocol that publishes nothing.
async fn reload_tls(ctx: wuos_pki::TlsContext, mut published: tokio::sync::watch::Receiver<Arc<Neighborhood>>) {
    const EVERY: Duration = Duration::from_secs(2);
    let mut last = tokio::time::Instant::now();
    loop {
        let woke = tokio::select! {
            r = published.changed() => r.is_ok(),
            () = tokio::time::sleep_until(last + EVERY * 2) => true,
        };
        if !woke {
            return;
        }
        if last.elapsed() < EVERY {
            continue;
        }
        last = tokio::time::Instant::now();
        match ctx.reload_if_changed() {
            Ok(true) => info!(serial = %ctx.identity().serial, "TLS files changed: reloaded"),
            Ok(false) => {}
            Err(e) => warn!(error = %e, "TLS files changed but cannot be loaded: keeping the previous ones"),
        }
    }
}

/// The domains thread, when the config has `[domains]`.
fn start_domains(
    cfg: &DaemonConfig,
    monitor: &mut Monitor,
    store: &Arc<Store>,
    clock: Clock,
) -> Result<Option<DomainsHandle>> {
    let Some(dc) = &cfg.domains else { return Ok(None) };
    match crate::domains::enter_control_domain(&cfg.resources.cgroup_root, dc) {
        Ok(None) => info!("no control domain ([domains] control_domain = false): the control plane shares the router"),
        Ok(Some(rel)) => info!(cgroup = %rel, "running in the control domain"),
        Err(e) => {
            warn!(error = %e, "cannot enter the control domain: the control plane shares the router with its services")
        }
    }
    let first = monitor.sample(Instant::now()).context("first monitor sample")?;
    let budget = wuos_model::admission::HostBudget {
        cpus: first.cpu_capacity_cores,
        cpu_ids: online_cpus(&cfg.resources.sys_root),
        memory: first.mem_total_bytes,
    };
    let vm = wuos_southbound::domain::VmBackend::new();
    if let Some(note) = vm.accel_note() {
        warn!("{note}");
    }
    let backend: Arc<dyn wuos_southbound::domain::DomainBackend> = Arc::new(wuos_southbound::domain::Backends {
        container: Arc::new(wuos_southbound::domain::ContainerBackend::new()),
        vm: Some(Arc::new(vm)),
    });
    let d = Domains::open(
        dc.clone(),
        cfg.resources.cgroup_root.clone(),
        budget,
        store.clone(),
        backend,
    )
    .context("cannot start the domains")?;
    let (handle, _thread) = crate::domains::component::spawn(d, clock.origin(), crate::domains::probe::run)
        .context("cannot start the domains thread")?;
    Ok(Some(handle))
}

/// The XDP data path, when configured and possible (else demand is not measured, and says so).
fn start_datapath(cfg: &DaemonConfig, domains: Option<&DomainsHandle>) -> Option<DatapathHandle> {
    use wuos_southbound::xdp::{Classifier, Mode};
    if !cfg.datapath.xdp {
        return None;
    }
    let Some(domains) = domains else {
        warn!("[datapath] xdp needs [domains] (its catalog names the services): not attached");
        return None;
    };
    let services = domains.snapshot().datapath_services.clone();
    let ifaces: Vec<&str> = cfg.neighbors.iter().map(|n| n.interface.as_str()).collect();
    let classifier = Classifier::attach(None, &ifaces, Mode::Native).or_else(|native| {
        Classifier::attach(None, &ifaces, Mode::Generic).map_err(|e| format!("native: {native}; generic: {e}"))
    });
    let dp = classifier.map_err(|e| e.to_string()).and_then(|c| {
        DataPath::new(Box::new(c), Arc::new(wuos_southbound::nft::NftCommand), &services).map_err(|e| e.to_string())
    });
    match dp {
        Ok(dp) => {
            info!(
                interfaces = ifaces.len(),
                services = services.len(),
                "XDP classifier attached"
            );
            Some(crate::datapath::spawn(dp))
        }
        Err(e) => {
            warn!(error = %e, "no XDP data path: demand is not measured");
            None
        }
    }
}

/// Runs the daemon until `shutdown` resolves.
pub async fn run(cfg: DaemonConfig, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
    let clock = Clock::start();
    let store = Arc::new(Store::open(&cfg.data_dir)?);
    let boot_id = store.next_boot_id((unix_ns() / 1_000_000) as u64)?;
    let mut monitor = Monitor::new(monitor_source(&cfg)).context("cannot start the monitor")?;
    info!(router = %cfg.router_id, boot_id, source = %monitor.describe(), "wuosd starting");
    let metrics = Metrics::new(cfg.router_id.as_str());
    let tls = load_tls(&cfg)?;
    let connector = match &tls {
        Some(ctx) => crate::protocol::AnyConnector::Tls(crate::protocol::Tls(ctx.clone())),
        None => crate::protocol::AnyConnector::Plain(crate::protocol::Plain),
    };

    let (cfg, liveness) = link_watch(cfg, boot_id);
    let protocol = crate::protocol::spawn(
        Instance::new(instance_config(&cfg, boot_id)),
        clock,
        metrics.clone(),
        connector.clone(),
        cfg.link_transport,
        liveness,
    );
    let domains = start_domains(&cfg, &mut monitor, &store, clock)?;
    let datapath = start_datapath(&cfg, domains.as_ref());
    let netlink = Netlink::connect_here(&tokio::runtime::Handle::current())
        .context("cannot open a netlink socket (the controller installs routes with it)")?;
    let edge = crate::sdwan::edge::spawn(
        wuos_southbound::overlays::NetlinkOverlays {
            netlink: netlink.clone(),
            nft: wuos_southbound::nft::NftCommand,
        },
        store.clone(),
        crate::sdwan::edge::CHECK_EVERY,
    );
    let stamp_answers = Arc::new(std::sync::atomic::AtomicU64::new(0));
    if cfg.sdwan_paths.stamp_port != 0 {
        let at = std::net::SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, cfg.sdwan_paths.stamp_port));
        match crate::sdwan::paths::spawn_reflector(at, stamp_answers.clone()) {
            Ok((at, _)) => info!(%at, "STAMP reflector listening"),
            Err(e) => warn!(
                port = cfg.sdwan_paths.stamp_port,
                error = %e,
                "cannot start the STAMP reflector: other edges' probes of paths to this one go unanswered"
            ),
        }
    }
    let paths = match crate::sdwan::paths::spawn(
        edge.plans(),
        store.clone(),
        wuos_southbound::nft::NftCommand,
        cfg.sdwan_paths.clone(),
    ) {
        Ok(p) => Some(p),
        Err(e) => {
            warn!(error = %e, "cannot open the STAMP sender's socket: SD-WAN paths are not monitored");
            None
        }
    };
    if let Some(p) = &paths {
        metrics.sdwan_refresh(crate::sdwan::paths::metrics_refresh(p.report(), stamp_answers.clone()));
    }
    let controller = crate::controller::spawn(crate::controller::Parts {
        me: cfg.router_id.clone(),
        routes: netlink,
        store: store.clone(),
        domains: domains.clone(),
        datapath: datapath.clone(),
        neighborhood: protocol.watch(),
    });
    let orchestration = match &cfg.orchestrator {
        Some(oc) => {
            let (replies_tx, replies) = mpsc::channel(256);
            let links = crate::delivery::Links::new(
                cfg.router_id.clone(),
                controller.clone(),
                replies_tx,
                boot_id,
                metrics.clone(),
                connector.clone(),
            )
            .await;
            let o = crate::orchestration::spawn(
                crate::orchestration::Parts {
                    me: cfg.router_id.clone(),
                    cfg: oc.clone(),
                    interval: cfg.telemetry_interval,
                    settle: cfg.failure_detection() + 2 * cfg.telemetry_interval,
                    clock,
                    store: store.clone(),
                    neighborhood: protocol.watch(),
                    catalog: domains
                        .as_ref()
                        .map(|d| d.snapshot().catalog.clone())
                        .unwrap_or_default(),
                    delivery: links,
                },
                replies,
            );
            info!(datacenter = %oc.datacenter, "orchestrator running");
            Some(o)
        }
        None => None,
    };

    let _sdwan = match &cfg.sdwan_controller {
        Some(sc) => {
            let text = std::fs::read_to_string(&sc.inventory)
                .with_context(|| format!("sdwan_controller.inventory {}", sc.inventory.display()))?;
            let inventory: wuos_sdwan::Inventory = serde_json::from_str(&text)
                .with_context(|| format!("sdwan_controller.inventory {}", sc.inventory.display()))?;
            let token = std::fs::read_to_string(&sc.token_file)
                .with_context(|| format!("sdwan_controller.token_file {}", sc.token_file.display()))?;
            let handle = crate::sdwan::controller::spawn(crate::sdwan::controller::Parts {
                me: cfg.router_id.clone(),
                inventory,
                store: store.clone(),
                connector: connector.clone(),
                metrics: metrics.clone(),
                session_id: boot_id,
                local_edge: edge.clone(),
                neighborhood: protocol.watch(),
            });
            let listener = tokio::net::TcpListener::bind(sc.nbi_listen)
                .await
                .with_context(|| format!("sdwan_controller.nbi_listen {}", sc.nbi_listen))?;
            tokio::spawn(crate::sdwan::nbi::serve(
                listener,
                handle.clone(),
                token.trim().to_string(),
            ));
            info!(nbi = %sc.nbi_listen, "SD-WAN controller and its NBI running");
            Some(handle)
        }
        None => None,
    };

    // Servers: the protocol (Neighbor, Control), the admin socket, metrics.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut stop_a = stop_rx.clone();
    let neighbors: HashMap<String, std::net::IpAddr> = cfg
        .neighbors
        .iter()
        .map(|n| (n.id.to_string(), n.address.ip()))
        .collect();
    // The protocol port: framed links (`crate::link`) are served as they come; every other
    // connection (gRPC: Control sessions, 2.3 routers' links) goes on to tonic.
    let neighbor_svc = Arc::new(crate::server::NeighborSvc::new(
        protocol.clone(),
        metrics.clone(),
        neighbors,
        tls.is_some(),
        cfg.link_transport,
    ));
    let router = Server::builder()
        .layer(tower::util::MapResponseLayer::new(crate::server::count_errors(
            metrics.clone(),
        )))
        .add_service(crate::server::neighbor_service(neighbor_svc.clone()))
        .add_service(crate::server::control_service(
            cfg.router_id.to_string(),
            controller.clone(),
            edge.clone(),
            metrics.clone(),
            tls.is_some(),
        ));
    let stopped = async move {
        let _ = stop_a.changed().await;
    };
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("listen {}", cfg.listen))?;
    let neighbor_server = match &tls {
        Some(ctx) => {
            let m = metrics.clone();
            let incoming = wuos_pki::incoming(
                listener,
                ctx.clone(),
                wuos_pki::IncomingOptions::default(),
                move |r: &wuos_pki::Refused, addr| {
                    m.reject(&format!("tls_{}", r.reason.label()));
                    warn!(%addr, reason = r.reason.label(), detail = %r.detail, "refused a TLS connection");
                },
            );
            let (grpc, conns) = tokio::sync::mpsc::channel(64);
            tokio::spawn(crate::server::accept_tls(incoming, neighbor_svc, grpc));
            tokio::spawn(reload_tls(ctx.clone(), protocol.watch()));
            tokio::spawn(router.serve_with_incoming_shutdown(crate::server::grpc_incoming(conns), stopped))
        }
        None => {
            let (grpc, conns) = tokio::sync::mpsc::channel(64);
            tokio::spawn(crate::server::accept_tcp(listener, neighbor_svc, grpc));
            tokio::spawn(router.serve_with_incoming_shutdown(crate::server::grpc_incoming(conns), stopped))
        }
    };
    let admin_svc = crate::admin::AdminSvc {
        router_id: cfg.router_id.to_string(),
        protocol: protocol.clone(),
        domains: domains.clone(),
        orchestration: orchestration.clone(),
        datapath: datapath.clone(),
        metrics: metrics.clone(),
        paths: paths.clone(),
    };
    if let Some(addr) = cfg.admin_listen {
        crate::admin::serve_tcp(admin_svc.clone(), addr, stop_rx.clone()).await?;
        warn!(%addr, "the admin API listens on TCP, unauthenticated");
    }
    let admin = crate::admin::serve(admin_svc, &cfg.admin_socket, stop_rx.clone())?;
    if let Some(m) = cfg.metrics_listen {
        let l = tokio::net::TcpListener::bind(m)
            .await
            .with_context(|| format!("metrics_listen {m}"))?;
        tokio::spawn(crate::metrics::serve(l, metrics.clone()));
    }
    let sampler = tokio::spawn(crate::sampler::run(
        monitor,
        crate::sampler::Parts {
            interval: cfg.telemetry_interval,
            phase: cfg.sample_phase,
            announce: (&cfg.announce).into(),
            me: cfg.router_id.clone(),
            role: cfg.role,
            protocol: protocol.clone(),
            controller: controller.clone(),
            placements: orchestration.as_ref().map(|o| o.placements()),
            sdwan: Some(edge.advert()),
            paths: paths.as_ref().map(|p| p.report()),
            domains: domains.clone(),
            datapath,
            metrics: metrics.clone(),
            neighbor_of: cfg
                .neighbors
                .iter()
                .map(|n| (n.interface.clone(), n.id.to_string()))
                .collect(),
        },
    ));

    shutdown.await;
    info!("shutting down: withdrawing from the neighbors");
    sampler.abort();
    let own = protocol.status(false).await.ok().and_then(|s| s.own);
    protocol.shutdown().await;
    // Give the links a moment to deliver the withdrawals.
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
    if let Some(d) = &domains {
        // Domains keep running: a restarted daemon re-adopts them.
        d.shutdown();
    }
    if let Some(own) = own {
        let _ = store.put_blob("own_advert", &own.encode_to_vec());
    }
    info!("stopped");
    Ok(())
}
