//! The sampler: every telemetry interval it samples the router ([`Monitor`]), gathers what its
//! advert carries — the figures, the interfaces' rates, the service instances (the domains'
//! snapshot) and the demand (the data path's new flows) — and hands it to the protocol task.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::warn;
use wuos_model::daemon::SamplePhase;
use wuos_proto::pb;

use crate::clock::unix_ns;
use crate::datapath::DatapathHandle;
use crate::domains::DomainsSnapshot;
use crate::domains::component::DomainsHandle;
use crate::metrics::Metrics;
use crate::monitor::{Monitor, MonitorError, Sample};
use crate::protocol::{self, ProtocolHandle};

/// What the sampler needs besides the monitor.
pub struct Parts {
    pub interval: Duration,
    /// When within the interval (free-running, or at its multiples on the wall clock).
    pub phase: SamplePhase,
    /// Which figures are announced anew (the advert keeps the others as last announced).
    pub announce: wuos_proto::announce::Thresholds,
    pub me: wuos_model::RouterId,
    pub role: wuos_model::Role,
    pub protocol: ProtocolHandle,
    pub controller: crate::controller::ControllerHandle,
    /// This router's orchestrator's placements (fog routers that run one).
    pub placements: Option<tokio::sync::watch::Receiver<Vec<pb::Placement>>>,
    /// This router's SD-WAN tunnels (the edge component's state).
    pub sdwan: Option<tokio::sync::watch::Receiver<Option<pb::SdwanEdgeState>>>,
    /// Its monitored paths and steered classes, added to that state (protocol 2.2).
    pub paths: Option<tokio::sync::watch::Receiver<Arc<crate::sdwan::paths::Report>>>,
    pub domains: Option<DomainsHandle>,
    pub datapath: Option<DatapathHandle>,
    pub metrics: Arc<Metrics>,
    /// Interface name → the neighbor at its far end.
    pub neighbor_of: HashMap<String, String>,
}

/// The monitor's own thread: it keeps the sampling clock and reads the files, and hands each
/// reading to the sampler task; it ends when the task is gone.
///
/// The monitor reads files (cgroup files, `/proc`), which block: on a host running hundreds of
/// routers, kernfs contention made one sample take most of a second, and on the daemon's one
/// runtime thread that stalled the protocol task until its neighbors were declared dead. The
/// thread keeps its own clock too: a tokio timer a second away wakes the runtime twice (at its
/// coarse wheel slot, then on time) and a hop to a blocking thread and back wakes it once more;
/// here the runtime wakes once per sample, when the reading arrives. Each wake-up costs more than
/// the work it does when a machine runs a thousand daemons.
///
/// Each reading comes with how long it took.
fn spawn_clock(
    mut monitor: Monitor,
    interval: Duration,
    phase: SamplePhase,
) -> mpsc::Receiver<(Duration, Result<Sample, MonitorError>)> {
    let (tx, rx) = mpsc::channel(1);
    let spawned = std::thread::Builder::new().name("monitor".into()).spawn(move || {
        // Aligned: from the wall clock each time (late or slewed, the next multiple).
        let aligned = || Instant::now() + until_aligned(std::time::SystemTime::now(), interval);
        let mut next = match phase {
            SamplePhase::Free => Instant::now(),
            SamplePhase::Aligned => aligned(),
        };
        loop {
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
            let t0 = Instant::now();
            let sample = monitor.sample(t0);
            match tx.try_send((t0.elapsed(), sample)) {
                Ok(()) => {}
                // The task has not taken the last one yet: this one is dropped, like a missed tick.
                Err(mpsc::error::TrySendError::Full(_)) => warn!("the sampler is behind: a sample dropped"),
                Err(mpsc::error::TrySendError::Closed(_)) => return,
            }
            next = match phase {
                // Late (a stalled read, a suspended host): the next sample one interval from
                // now, not a burst to catch up.
                SamplePhase::Free => (next + interval).max(Instant::now()),
                SamplePhase::Aligned => aligned(),
            };
        }
    });
    if let Err(e) = spawned {
        warn!(error = %e, "cannot start the monitor's thread: no samples");
    }
    rx
}

/// How long from `now` to the next multiple of `interval` since the Unix epoch (a whole interval
/// when `now` is one).
fn until_aligned(now: std::time::SystemTime, interval: Duration) -> Duration {
    let since = now.duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    let i = interval.as_nanos().max(1);
    Duration::from_nanos((i - since % i) as u64)
}

/// Runs until the task is aborted (the monitor's thread ends at its next sample).
pub async fn run(monitor: Monitor, p: Parts) {
    let mut readings = spawn_clock(monitor, p.interval, p.phase);
    let mut announcer = wuos_proto::announce::Announcer::new(p.announce);
    while let Some((took, sample)) = readings.recv().await {
        let sample = match sample {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "monitor sample failed");
                continue;
            }
        };
        p.metrics.sample_seconds.set(took.as_secs_f64());
        p.metrics.cpu_used_pct.set(sample.cpu_used_pct);
        p.metrics.mem_used_pct.set(sample.mem_used_pct);
        p.metrics.mem_used_bytes.set(sample.mem_used_bytes as i64);
        let services = p.domains.as_ref().map(|d| services(&d.snapshot())).unwrap_or_default();
        let demand = match &p.datapath {
            Some(dp) => dp.demand().await,
            None => Vec::new(),
        };
        // The region first goes to the controller, then into the advert: an orchestrator routes a
        // router once its advert names it, and the controller must by then take its intents.
        let region = {
            let n = p.protocol.watch().borrow().clone();
            wuos_orchestrator::region::choose(&p.me, p.role, p.placements.is_some(), &n)
        };
        p.controller
            .region(wuos_controller::Region::from_choice(region.clone()))
            .await;
        let placements = p.placements.as_ref().map(|w| w.borrow().clone()).unwrap_or_default();
        let (resources, links, services) =
            announcer.announce(resources(&sample), links(&p.neighbor_of, &sample), services);
        p.protocol
            .sample(protocol::Sample {
                timestamp_unix_ns: unix_ns(),
                resources,
                links,
                services,
                demand,
                region: region.map(|r| r.to_string()).unwrap_or_default(),
                placements,
                sdwan: p.sdwan.as_ref().and_then(|w| w.borrow().clone()).map(|mut s| {
                    if let Some(r) = &p.paths {
                        crate::sdwan::paths::advertise(&mut s, &r.borrow());
                    }
                    s
                }),
            })
            .await;
    }
}

/// The service instances this router hosts, for its adverts.
pub fn services(s: &DomainsSnapshot) -> Vec<pb::ServiceInstance> {
    s.domains
        .iter()
        .filter_map(|d| {
            Some(pb::ServiceInstance {
                service: d.service.clone()?,
                state: d.state.as_str().to_string(),
                name: d.name.clone(),
                cpu_pct: d.cpu_pct,
                memory_bytes: d.memory_bytes,
                memory_limit: d.memory_limit.unwrap_or(0),
                health: d.health.as_ref().map(|h| h.0.as_str().to_string()).unwrap_or_default(),
            })
        })
        .collect()
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

/// The router's own interfaces: not its SD-WAN tunnels, which the SD-WAN part of the advert
/// reports (an edge with 1,000 of them sampled, compared and cut 1,000 links every second).
fn links(neighbor_of: &HashMap<String, String>, s: &Sample) -> Vec<pb::LinkMetrics> {
    s.interfaces
        .iter()
        .filter(|i| !wuos_sdwan::edge::is_tunnel_name(&i.name))
        .map(|i| pb::LinkMetrics {
            interface: i.name.clone(),
            neighbor: neighbor_of.get(&i.name).cloned().unwrap_or_default(),
            rx_bytes_per_s: i.rx_bytes_per_s as u64,
            tx_bytes_per_s: i.tx_bytes_per_s as u64,
            rx_packets_per_s: i.rx_packets_per_s as u64,
            tx_packets_per_s: i.tx_packets_per_s as u64,
            rtt_ms: None,
            up: true,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::until_aligned;
    use crate::monitor::{InterfaceRates, Sample};

    #[test]
    fn links_are_the_routers_interfaces_not_its_sdwan_tunnels() {
        let sample = Sample {
            interfaces: ["eth0", "wo1-mpls", "eth1", "wo12-inet", "wonder"]
                .map(|name| InterfaceRates {
                    name: name.into(),
                    ..Default::default()
                })
                .to_vec(),
            ..Default::default()
        };
        let neighbor_of = [("eth1".to_string(), "r2".to_string())].into();
        let links: Vec<(String, String)> = super::links(&neighbor_of, &sample)
            .into_iter()
            .map(|l| (l.interface, l.neighbor))
            .collect();
        let pair = |a: &str, b: &str| (a.to_string(), b.to_string());
        assert_eq!(links, [pair("eth0", ""), pair("eth1", "r2"), pair("wonder", "")]);
    }

    #[test]
    fn aligned_samples_fall_on_multiples_of_the_interval() {
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        assert_eq!(until_aligned(UNIX_EPOCH + s(100) + ms(250), s(1)), ms(750));
        assert_eq!(until_aligned(UNIX_EPOCH + s(100), s(1)), s(1));
        assert_eq!(until_aligned(UNIX_EPOCH + s(100) + ms(30), ms(100)), ms(70));
        assert_eq!(until_aligned(UNIX_EPOCH + s(7), s(5)), s(3));
    }
}
