//! The sampler: every telemetry interval it samples the router ([`Monitor`]), gathers what its
//! advert carries — the figures, the interfaces' rates, the service instances (the domains'
//! snapshot) and the demand (the data path's new flows) — and hands it to the protocol task.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::warn;
use wuos_proto::pb;

use crate::clock::unix_ns;
use crate::datapath::DatapathHandle;
use crate::domains::DomainsSnapshot;
use crate::domains::component::DomainsHandle;
use crate::metrics::Metrics;
use crate::monitor::{Monitor, Sample};
use crate::protocol::{self, ProtocolHandle};

/// What the sampler needs besides the monitor.
pub struct Parts {
    pub interval: Duration,
    pub protocol: ProtocolHandle,
    pub domains: Option<DomainsHandle>,
    pub datapath: Option<DatapathHandle>,
    pub metrics: Arc<Metrics>,
    /// Interface name → the neighbor at its far end.
    pub neighbor_of: HashMap<String, String>,
}

/// Runs until the task is aborted.
pub async fn run(mut monitor: Monitor, p: Parts) {
    let mut t = tokio::time::interval(p.interval);
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        t.tick().await;
        let t0 = Instant::now();
        let sample = match monitor.sample(t0) {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "monitor sample failed");
                continue;
            }
        };
        p.metrics.sample_seconds.set(t0.elapsed().as_secs_f64());
        p.metrics.cpu_used_pct.set(sample.cpu_used_pct);
        p.metrics.mem_used_pct.set(sample.mem_used_pct);
        p.metrics.mem_used_bytes.set(sample.mem_used_bytes as i64);
        let services = p.domains.as_ref().map(|d| services(&d.snapshot())).unwrap_or_default();
        let demand = match &p.datapath {
            Some(dp) => dp.demand().await,
            None => Vec::new(),
        };
        p.protocol
            .sample(protocol::Sample {
                timestamp_unix_ns: unix_ns(),
                resources: resources(&sample),
                links: links(&p.neighbor_of, &sample),
                services,
                demand,
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

fn links(neighbor_of: &HashMap<String, String>, s: &Sample) -> Vec<pb::LinkMetrics> {
    s.interfaces
        .iter()
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
