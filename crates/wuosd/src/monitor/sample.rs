//! What one sampling returns.

/// Pressure stall information of one resource (see [`pressure`](super::pressure)).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Pressure {
    /// % of the last 10 s during which some task waited for the resource.
    pub some_avg10: f64,
    /// % of the last 10 s during which all non-idle tasks waited at once (0 when not reported).
    pub full_avg10: f64,
    /// Read from `/proc/pressure` (the whole host), not from the router's cgroup.
    pub host_scope: bool,
}

/// Traffic of one interface over the last interval.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct InterfaceRates {
    pub name: String,
    pub rx_bytes_per_s: f64,
    pub tx_bytes_per_s: f64,
    pub rx_packets_per_s: f64,
    pub tx_packets_per_s: f64,
}

/// The router's resources at one sampling; rates are over the interval since the previous one.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Sample {
    /// CPU use in % of `cpu_capacity_cores`, 0–100.
    pub cpu_used_pct: f64,
    /// Online CPUs, or the cgroup's CPU quota in cores (at most the host's CPUs).
    pub cpu_capacity_cores: f64,
    /// `mem_used_bytes` in % of `mem_total_bytes`, 0–100.
    pub mem_used_pct: f64,
    /// `MemTotal − MemAvailable`, or the cgroup's usage minus its inactive file cache.
    pub mem_used_bytes: u64,
    /// `MemTotal`, or the cgroup's memory limit (at most `MemTotal`).
    pub mem_total_bytes: u64,
    pub disk_read_bytes_per_s: f64,
    pub disk_write_bytes_per_s: f64,
    /// Interfaces of the router's network namespace but `lo`, in `/proc/net/dev` order.
    pub interfaces: Vec<InterfaceRates>,
    pub cpu_pressure: Option<Pressure>,
    pub mem_pressure: Option<Pressure>,
    pub io_pressure: Option<Pressure>,
    /// True for the first sample (no previous counters: rates are 0).
    pub first: bool,
}

impl Sample {
    /// Cores not used over the last interval.
    pub fn free_cpu_cores(&self) -> f64 {
        (self.cpu_capacity_cores * (1.0 - self.cpu_used_pct / 100.0)).max(0.0)
    }

    /// Memory bytes not used.
    pub fn free_mem_bytes(&self) -> u64 {
        self.mem_total_bytes.saturating_sub(self.mem_used_bytes)
    }
}

/// Rate of a counter that went from `prev` to `cur` in `elapsed_secs`; 0 when no time elapsed or
/// the counter went backwards (reset).
pub(crate) fn per_second(prev: u64, cur: u64, elapsed_secs: f64) -> f64 {
    if elapsed_secs > 0.0 {
        cur.saturating_sub(prev) as f64 / elapsed_secs
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_figures() {
        let s = Sample {
            cpu_used_pct: 25.0,
            cpu_capacity_cores: 0.5,
            mem_used_bytes: 100,
            mem_total_bytes: 300,
            ..Sample::default()
        };
        assert_eq!(s.free_cpu_cores(), 0.375);
        assert_eq!(s.free_mem_bytes(), 200);
        let over = Sample {
            mem_used_bytes: 400,
            mem_total_bytes: 300,
            ..Sample::default()
        };
        assert_eq!(over.free_mem_bytes(), 0);
    }

    #[test]
    fn rates() {
        assert_eq!(per_second(100, 300, 2.0), 100.0);
        assert_eq!(per_second(100, 300, 0.0), 0.0);
        assert_eq!(per_second(300, 100, 1.0), 0.0);
    }
}
