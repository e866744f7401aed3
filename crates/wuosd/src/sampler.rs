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

/// One reading of the monitor: how long it took, and the sample.
type Reading = (Duration, Result<Sample, MonitorError>);

/// The sampling clock, and where the monitor reads.
///
/// The monitor reads files (cgroup files, `/proc`), which block. On the runtime thread at a
/// `timerfd` ([`wuos_southbound::timer::Precise`]) a sample costs the daemon one wake-up; on a
/// thread of its own it costs two context switches more (the thread's wake, then the hand-off
/// that wakes the runtime): at 1,000 daemons on two cores the monitor threads took a fifth of
/// the daemons' CPU, reads included, and reading inline saves about 3 % of the daemons' CPU
/// (measured in pairs, docs/benchmarks.md, "Then the monitor on the runtime thread"). But on a
/// host running hundreds of routers, kernfs contention once made one sample take most of a
/// second, and on the daemon's one runtime thread that stalled the protocol task until its
/// neighbors were declared dead. So the monitor reads inline while its reads are quick, moves to
/// its own thread as soon as one takes longer than [`stall_limit`], and comes back once
/// [`BACK_AFTER`] readings in a row there were quick again: a stall holds the runtime at most
/// once, for one sample's reads, per episode.
struct Clock<M = Monitor> {
    interval: Duration,
    phase: SamplePhase,
    /// When the next inline sample is due.
    next: Instant,
    timer: Option<wuos_southbound::timer::Precise>,
    at: At<M>,
}

/// What the clock reads at each sample: the [`Monitor`] (a test's stand-in in the tests).
trait Reads: Send + 'static {
    fn read(&mut self, now: Instant) -> Result<Sample, MonitorError>;
}

impl Reads for Monitor {
    fn read(&mut self, now: Instant) -> Result<Sample, MonitorError> {
        self.sample(now)
    }
}

enum At<M> {
    Inline(Box<M>),
    /// Its own thread, which sends each reading and, with the last, the monitor back.
    Thread(mpsc::Receiver<(Reading, Option<Box<M>>)>),
    /// No monitor (its thread could not start).
    Gone,
}

/// Readings in a row, each quicker than a quarter of the stall limit, after which a monitor on
/// its own thread comes back to the runtime.
const BACK_AFTER: u32 = 60;

/// How long a sample's reads may hold the runtime thread: a quarter of the interval, at most
/// 100 ms (an echo-watched link is lost after 3 intervals of silence, a hello-watched one after
/// its dead interval, at least 3 intervals).
fn stall_limit(interval: Duration) -> Duration {
    (interval / 4).min(Duration::from_millis(100))
}

impl<M: Reads> Clock<M> {
    fn new(monitor: M, interval: Duration, phase: SamplePhase) -> Self {
        let timer = match wuos_southbound::timer::Precise::new() {
            Ok(t) => Some(t),
            Err(e) => {
                warn!(error = %e, "no timerfd: the samples use tokio's timer");
                None
            }
        };
        let next = match phase {
            SamplePhase::Free => Instant::now(),
            SamplePhase::Aligned => aligned(interval),
        };
        Clock {
            interval,
            phase,
            next,
            timer,
            at: At::Inline(Box::new(monitor)),
        }
    }

    /// The next reading; `None` once there is no monitor.
    async fn next(&mut self) -> Option<Reading> {
        loop {
            match &mut self.at {
                At::Gone => return None,
                At::Thread(rx) => {
                    let (reading, back) = rx.recv().await?;
                    if let Some(m) = back {
                        tracing::info!("the monitor's reads are quick again: back on the runtime thread");
                        self.next = self.after(Instant::now());
                        self.at = At::Inline(m);
                    }
                    return Some(reading);
                }
                At::Inline(_) => {
                    let at = tokio::time::Instant::from_std(self.next);
                    match &mut self.timer {
                        Some(t) => {
                            if let Err(e) = t.sleep_until(at).await {
                                warn!(error = %e, "the timerfd failed: the samples use tokio's timer");
                                self.timer = None;
                                continue;
                            }
                        }
                        None => tokio::time::sleep_until(at).await,
                    }
                    let At::Inline(monitor) = &mut self.at else { continue };
                    let t0 = Instant::now();
                    let sample = monitor.read(t0);
                    let took = t0.elapsed();
                    self.next = self.after(self.next);
                    if took > stall_limit(self.interval) {
                        warn!(
                            took_ms = took.as_millis() as u64,
                            "a sample's reads held the runtime thread: the monitor moves to a thread of its own"
                        );
                        let At::Inline(m) = std::mem::replace(&mut self.at, At::Gone) else {
                            unreachable!()
                        };
                        self.at = spawn_thread(m, self.interval, self.phase, self.next);
                    }
                    return Some((took, sample));
                }
            }
        }
    }

    /// When the sample after one due at `due` is due.
    fn after(&self, due: Instant) -> Instant {
        next_due(due, self.interval, self.phase)
    }
}

/// Free: one interval after `due`, or now when that has passed (a stalled read, a suspended host:
/// no burst to catch up). Aligned: the next multiple of the interval on the wall clock (late or
/// slewed, the next one).
fn next_due(due: Instant, interval: Duration, phase: SamplePhase) -> Instant {
    match phase {
        SamplePhase::Free => (due + interval).max(Instant::now()),
        SamplePhase::Aligned => aligned(interval),
    }
}

fn aligned(interval: Duration) -> Instant {
    Instant::now() + until_aligned(std::time::SystemTime::now(), interval)
}

/// The monitor on a thread of its own from `next` on (see [`Clock`]).
fn spawn_thread<M: Reads>(monitor: Box<M>, interval: Duration, phase: SamplePhase, mut next: Instant) -> At<M> {
    let (tx, rx) = mpsc::channel(1);
    let quick = stall_limit(interval) / 4;
    let spawned = std::thread::Builder::new().name("monitor".into()).spawn(move || {
        let mut monitor = monitor;
        let mut quick_in_a_row = 0;
        loop {
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
            let t0 = Instant::now();
            let sample = monitor.read(t0);
            let took = t0.elapsed();
            quick_in_a_row = if took < quick { quick_in_a_row + 1 } else { 0 };
            next = next_due(next, interval, phase);
            if quick_in_a_row >= BACK_AFTER {
                // The last reading and the monitor with it; the runtime takes the clock back.
                let _ = tx.blocking_send(((took, sample), Some(monitor)));
                return;
            }
            match tx.try_send(((took, sample), None)) {
                Ok(()) => {}
                // The task has not taken the last one yet: this one is dropped, like a missed tick.
                Err(mpsc::error::TrySendError::Full(_)) => warn!("the sampler is behind: a sample dropped"),
                Err(mpsc::error::TrySendError::Closed(_)) => return,
            }
        }
    });
    match spawned {
        Ok(_) => At::Thread(rx),
        Err(e) => {
            warn!(error = %e, "cannot start the monitor's thread: no samples");
            At::Gone
        }
    }
}

/// How long from `now` to the next multiple of `interval` since the Unix epoch (a whole interval
/// when `now` is one).
fn until_aligned(now: std::time::SystemTime, interval: Duration) -> Duration {
    let since = now.duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    let i = interval.as_nanos().max(1);
    Duration::from_nanos((i - since % i) as u64)
}

/// Runs until the task is aborted (a monitor on its own thread ends at its next sample).
pub async fn run(monitor: Monitor, p: Parts) {
    let mut clock = Clock::new(monitor, p.interval, p.phase);
    let mut announcer = wuos_proto::announce::Announcer::new(p.announce);
    while let Some((took, sample)) = clock.next().await {
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

    /// A monitor that records on which thread it reads, and stalls once when told to.
    struct Fake {
        stall: std::sync::Arc<std::sync::atomic::AtomicBool>,
        threads: std::sync::Arc<std::sync::Mutex<Vec<std::thread::ThreadId>>>,
    }

    impl super::Reads for Fake {
        fn read(&mut self, _: std::time::Instant) -> Result<Sample, crate::monitor::MonitorError> {
            if self.stall.swap(false, std::sync::atomic::Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(30));
            }
            self.threads.lock().unwrap().push(std::thread::current().id());
            Ok(Sample::default())
        }
    }

    #[tokio::test]
    async fn a_stalled_read_moves_the_monitor_off_the_runtime_thread_until_reads_are_quick_again() {
        let stall = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let threads = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let fake = Fake {
            stall: stall.clone(),
            threads: threads.clone(),
        };
        // 48 ms: reads may hold the runtime 12 ms (a busy CI host preempting a quick read for
        // that long is unlikely); the stall takes 30.
        let mut clock = super::Clock::new(fake, Duration::from_millis(48), wuos_model::daemon::SamplePhase::Free);
        let runtime = std::thread::current().id();
        let mut next = async || clock.next().await.expect("a reading").1.expect("a sample");
        for _ in 0..3 {
            next().await;
        }
        stall.store(true, std::sync::atomic::Ordering::SeqCst);
        next().await;
        let mut reads = 0;
        loop {
            next().await;
            reads += 1;
            if *threads.lock().unwrap().last().unwrap() == runtime {
                break;
            }
            assert!(reads < 10 * super::BACK_AFTER, "the monitor never came back");
        }
        let t = threads.lock().unwrap();
        assert!(t[..4].iter().all(|&id| id == runtime), "inline at first, the stall too");
        let away = &t[4..t.len() - 1];
        assert!(
            away.iter().all(|&id| id != runtime),
            "on its own thread after the stall"
        );
        assert!(
            away.len() >= super::BACK_AFTER as usize,
            "back after {} quick readings, not {}",
            super::BACK_AFTER,
            away.len()
        );
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
