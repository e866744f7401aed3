//! Announcement thresholds: which measured figures a router announces anew.
//!
//! A router samples itself every telemetry interval, and most of its figures move a little every
//! time: its CPU by a fraction of a point, every interface's rates by the control traffic itself,
//! every round trip by scheduling noise. Announced as measured, each of those moves puts the
//! figure in the next delta, and a hub with 73 links re-sent all 73 every second to each of its
//! neighbors (`docs/benchmarks.md`, "At scale"). As IGP traffic-engineering extensions do
//! (RFC 7471 §5, "Announcement Thresholds and Filters"), a figure is announced anew only when it
//! moved significantly since it was last announced; until then the advert keeps the value last
//! announced, so the delta leaves it out. What changes a router's structure — a link that
//! appears, goes or goes down, an instance's state or health, a capacity — is always announced at
//! once, and every figure is announced exactly at least every [`Thresholds::refresh`] samples.
//!
//! | figure | announced anew when it moved by at least |
//! |---|---|
//! | percentages (CPU, memory, an instance's CPU, pressure) | [`Thresholds::pct_points`] points |
//! | rates and amounts (bytes, packets, memory) | [`Thresholds::relative`] of the larger value, and at least a floor ([`floor`]) |
//! | free CPU (cores) | [`Thresholds::relative`] of the capacity |
//! | a link's round trip | [`Thresholds::relative`] of the larger value, and at least 1 ms |

use crate::pb;

/// When figures are announced anew.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Thresholds {
    /// A percentage is announced anew when it moved by this many points.
    pub pct_points: f64,
    /// A rate or an amount when it moved by this fraction of the larger of the two values.
    pub relative: f64,
    /// Every figure is announced exactly at least every this many samples; 1 announces every
    /// sample as measured (no thresholds).
    pub refresh: u32,
}

impl Default for Thresholds {
    /// The daemon's defaults (`[announce]` in `wuosd.toml`).
    fn default() -> Self {
        Self::from(&wuos_model::daemon::AnnounceConfig::default())
    }
}

impl From<&wuos_model::daemon::AnnounceConfig> for Thresholds {
    fn from(c: &wuos_model::daemon::AnnounceConfig) -> Self {
        Self {
            pct_points: c.pct_points,
            relative: c.relative,
            refresh: c.refresh,
        }
    }
}

/// The smallest move of each kind of amount that counts, whatever [`Thresholds::relative`] says
/// (near zero any change is a large fraction).
pub mod floor {
    /// Bytes per second (an interface's or a disk's rate).
    pub const BYTES_PER_S: u64 = 16 * 1024;
    /// Packets per second.
    pub const PACKETS_PER_S: u64 = 16;
    /// Memory, bytes.
    pub const MEMORY_BYTES: u64 = 1024 * 1024;
    /// A round trip, ms.
    pub const RTT_MS: f64 = 1.0;
}

/// What one router announces: the last announced figures, and when they were last all exact.
#[derive(Clone, Debug, Default)]
pub struct Announcer {
    thresholds: Thresholds,
    last: Option<(pb::Resources, Vec<pb::LinkMetrics>, Vec<pb::ServiceInstance>)>,
    since_refresh: u32,
}

impl Announcer {
    pub fn new(thresholds: Thresholds) -> Self {
        Self {
            thresholds,
            last: None,
            since_refresh: 0,
        }
    }

    /// The figures to announce for a new sample: each as measured when it moved significantly
    /// since last announced (or at a refresh), else as last announced.
    pub fn announce(
        &mut self,
        resources: pb::Resources,
        links: Vec<pb::LinkMetrics>,
        services: Vec<pb::ServiceInstance>,
    ) -> (pb::Resources, Vec<pb::LinkMetrics>, Vec<pb::ServiceInstance>) {
        self.since_refresh += 1;
        let refresh = self.since_refresh >= self.thresholds.refresh.max(1);
        let out = match (&self.last, refresh) {
            (Some((r, l, s)), false) => {
                let t = &self.thresholds;
                let links = links
                    .into_iter()
                    .map(|n| match l.iter().find(|o| o.interface == n.interface) {
                        Some(o) => link(t, o, n),
                        None => n,
                    })
                    .collect();
                let services = services
                    .into_iter()
                    .map(|n| match s.iter().find(|o| o.name == n.name) {
                        Some(o) => service(t, o, n),
                        None => n,
                    })
                    .collect();
                (self::resources(t, r, resources), links, services)
            }
            _ => {
                self.since_refresh = 0;
                (resources, links, services)
            }
        };
        self.last = Some(out.clone());
        out
    }
}

/// `new` when it differs from `old` by at least `points`, else `old`.
fn pct(points: f64, old: f64, new: f64) -> f64 {
    if (new - old).abs() >= points { new } else { old }
}

/// `new` when it differs from `old` by at least `relative` of the larger and at least `floor`.
fn amount(relative: f64, floor: u64, old: u64, new: u64) -> u64 {
    let moved = old.abs_diff(new);
    let needed = ((old.max(new) as f64 * relative) as u64).max(floor);
    if moved >= needed { new } else { old }
}

fn resources(t: &Thresholds, o: &pb::Resources, n: pb::Resources) -> pb::Resources {
    // A new capacity or total is a new router: everything as measured.
    if o.cpu_capacity_cores != n.cpu_capacity_cores || o.mem_total_bytes != n.mem_total_bytes {
        return n;
    }
    let pressure = |o: &Option<pb::Pressure>, n: Option<pb::Pressure>| match (o, n) {
        (Some(o), Some(n)) => Some(pb::Pressure {
            some_avg10: pct(t.pct_points, o.some_avg10, n.some_avg10),
            full_avg10: pct(t.pct_points, o.full_avg10, n.full_avg10),
        }),
        (_, n) => n,
    };
    let free_cpu = if (n.free_cpu_cores - o.free_cpu_cores).abs() >= t.relative * n.cpu_capacity_cores {
        n.free_cpu_cores
    } else {
        o.free_cpu_cores
    };
    pb::Resources {
        cpu_used_pct: pct(t.pct_points, o.cpu_used_pct, n.cpu_used_pct),
        cpu_capacity_cores: n.cpu_capacity_cores,
        mem_used_pct: pct(t.pct_points, o.mem_used_pct, n.mem_used_pct),
        mem_used_bytes: amount(t.relative, floor::MEMORY_BYTES, o.mem_used_bytes, n.mem_used_bytes),
        mem_total_bytes: n.mem_total_bytes,
        disk_read_bytes_per_s: amount(
            t.relative,
            floor::BYTES_PER_S,
            o.disk_read_bytes_per_s,
            n.disk_read_bytes_per_s,
        ),
        disk_write_bytes_per_s: amount(
            t.relative,
            floor::BYTES_PER_S,
            o.disk_write_bytes_per_s,
            n.disk_write_bytes_per_s,
        ),
        free_cpu_cores: free_cpu,
        free_mem_bytes: amount(t.relative, floor::MEMORY_BYTES, o.free_mem_bytes, n.free_mem_bytes),
        cpu_pressure: pressure(&o.cpu_pressure, n.cpu_pressure),
        mem_pressure: pressure(&o.mem_pressure, n.mem_pressure),
        io_pressure: pressure(&o.io_pressure, n.io_pressure),
    }
}

fn link(t: &Thresholds, o: &pb::LinkMetrics, n: pb::LinkMetrics) -> pb::LinkMetrics {
    if o.neighbor != n.neighbor || o.up != n.up {
        return n;
    }
    let rate = |floor, o, n| amount(t.relative, floor, o, n);
    let rtt_ms = match (o.rtt_ms, n.rtt_ms) {
        (Some(o), Some(n)) => {
            let needed = (o.max(n) * t.relative).max(floor::RTT_MS);
            Some(if (n - o).abs() >= needed { n } else { o })
        }
        (_, n) => n,
    };
    pb::LinkMetrics {
        rx_bytes_per_s: rate(floor::BYTES_PER_S, o.rx_bytes_per_s, n.rx_bytes_per_s),
        tx_bytes_per_s: rate(floor::BYTES_PER_S, o.tx_bytes_per_s, n.tx_bytes_per_s),
        rx_packets_per_s: rate(floor::PACKETS_PER_S, o.rx_packets_per_s, n.rx_packets_per_s),
        tx_packets_per_s: rate(floor::PACKETS_PER_S, o.tx_packets_per_s, n.tx_packets_per_s),
        rtt_ms,
        ..n
    }
}

fn service(t: &Thresholds, o: &pb::ServiceInstance, n: pb::ServiceInstance) -> pb::ServiceInstance {
    if o.service != n.service || o.state != n.state || o.health != n.health || o.memory_limit != n.memory_limit {
        return n;
    }
    pb::ServiceInstance {
        cpu_pct: pct(t.pct_points, o.cpu_pct, n.cpu_pct),
        memory_bytes: amount(t.relative, floor::MEMORY_BYTES, o.memory_bytes, n.memory_bytes),
        ..n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(cpu: f64, mem_bytes: u64) -> pb::Resources {
        pb::Resources {
            cpu_used_pct: cpu,
            cpu_capacity_cores: 1.0,
            mem_used_pct: 20.0,
            mem_used_bytes: mem_bytes,
            mem_total_bytes: 1 << 30,
            free_cpu_cores: 1.0 - cpu / 100.0,
            ..Default::default()
        }
    }

    fn eth(rx: u64, rtt: f64, up: bool) -> pb::LinkMetrics {
        pb::LinkMetrics {
            interface: "eth0".into(),
            neighbor: "r2".into(),
            rx_bytes_per_s: rx,
            tx_bytes_per_s: rx,
            rx_packets_per_s: rx / 1000,
            tx_packets_per_s: rx / 1000,
            rtt_ms: Some(rtt),
            up,
        }
    }

    fn pabx(state: &str, cpu: f64) -> pb::ServiceInstance {
        pb::ServiceInstance {
            service: "pabx".into(),
            state: state.into(),
            name: "pabx-1".into(),
            cpu_pct: cpu,
            memory_bytes: 50 << 20,
            memory_limit: 0,
            health: "healthy".into(),
        }
    }

    #[test]
    fn small_moves_keep_the_last_announced_value_large_ones_go_at_once() {
        let mut a = Announcer::new(Thresholds::default());
        let (r, l, _) = a.announce(res(10.0, 100 << 20), vec![eth(2000, 0.40, true)], vec![]);
        assert_eq!(
            (r.cpu_used_pct, l[0].rx_bytes_per_s, l[0].rtt_ms),
            (10.0, 2000, Some(0.40))
        );
        // Noise: CPU 0.6 points, rates under the 16 KiB/s floor, RTT under 1 ms, memory under 1 MiB.
        let (r, l, _) = a.announce(res(10.6, (100 << 20) + 500_000), vec![eth(9000, 0.90, true)], vec![]);
        assert_eq!(r, res(10.0, 100 << 20), "noise leaves the resources as announced");
        assert_eq!(l[0], eth(2000, 0.40, true), "noise leaves the link as announced");
        // A CPU step of 5 points and a rate of 1 MB/s are announced at once.
        let (r, l, _) = a.announce(res(15.0, 100 << 20), vec![eth(1_000_000, 0.50, true)], vec![]);
        assert_eq!((r.cpu_used_pct, l[0].rx_bytes_per_s), (15.0, 1_000_000));
        // Against the last announced value, not the last measured: 0.6 + 0.6 points is 1.2.
        a.announce(res(15.6, 100 << 20), vec![eth(1_000_000, 0.5, true)], vec![]);
        let (r, ..) = a.announce(res(16.2, 100 << 20), vec![eth(1_000_000, 0.5, true)], vec![]);
        assert_eq!(r.cpu_used_pct, 16.2);
        // 10 % of 1 MB/s: 5 % is kept, 20 % goes.
        let (_, l, _) = a.announce(res(16.2, 100 << 20), vec![eth(1_050_000, 0.5, true)], vec![]);
        assert_eq!(l[0].rx_bytes_per_s, 1_000_000);
        let (_, l, _) = a.announce(res(16.2, 100 << 20), vec![eth(800_000, 0.5, true)], vec![]);
        assert_eq!(l[0].rx_bytes_per_s, 800_000);
    }

    #[test]
    fn structure_always_goes_at_once() {
        let mut a = Announcer::new(Thresholds::default());
        a.announce(
            res(10.0, 1 << 20),
            vec![eth(2000, 0.4, true)],
            vec![pabx("running", 5.0)],
        );
        let (_, l, s) = a.announce(
            res(10.0, 1 << 20),
            vec![eth(2100, 0.4, false)],
            vec![pabx("paused", 5.2)],
        );
        assert_eq!(
            l[0],
            eth(2100, 0.4, false),
            "a link going down is announced with its figures"
        );
        assert_eq!(s[0], pabx("paused", 5.2), "a new state is announced with its figures");
        let mut other = eth(2000, 0.4, true);
        other.interface = "eth1".into();
        let (_, l, _) = a.announce(res(10.0, 1 << 20), vec![eth(2100, 0.4, false), other.clone()], vec![]);
        assert_eq!(l[1], other, "a new link as measured");
        let bigger = pb::Resources {
            cpu_capacity_cores: 2.0,
            ..res(10.2, 1 << 20)
        };
        let (r, ..) = a.announce(bigger, vec![], vec![]);
        assert_eq!(r, bigger, "a new capacity: everything as measured");
    }

    #[test]
    fn every_figure_is_exact_at_each_refresh() {
        let t = Thresholds {
            refresh: 3,
            ..Thresholds::default()
        };
        let mut a = Announcer::new(t);
        let seen: Vec<f64> = [10.0, 10.1, 10.2, 10.3, 10.4, 10.5, 10.6]
            .iter()
            .map(|c| a.announce(res(*c, 1 << 20), vec![], vec![]).0.cpu_used_pct)
            .collect();
        assert_eq!(seen, [10.0, 10.0, 10.0, 10.3, 10.3, 10.3, 10.6]);
        let mut every = Announcer::new(Thresholds {
            refresh: 1,
            ..Thresholds::default()
        });
        for c in [10.0, 10.1, 10.2] {
            assert_eq!(every.announce(res(c, 1 << 20), vec![], vec![]).0.cpu_used_pct, c);
        }
    }
}
