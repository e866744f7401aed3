//! Prometheus metrics of the daemon, served in the text format at `/metrics` by a minimal HTTP
//! server (one request per connection; Prometheus needs nothing more).

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NameLabel {
    pub name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirLabel {
    pub direction: String,
}

/// A figure per SD-WAN path.
type PathGauges = Family<PathLabel, Gauge<f64, AtomicU64>>;

/// An SD-WAN path: an overlay's tunnel over an underlay towards a site.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PathLabel {
    pub overlay: String,
    pub underlay: String,
    pub site: String,
}

/// A steered class towards a site.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SteerLabel {
    pub class: String,
    pub site: String,
}

/// Fills [`SdwanMetrics`] from wherever the SD-WAN figures are (the paths task's report), at
/// each scrape.
pub type SdwanRefresh = Box<dyn Fn(&SdwanMetrics) + Send + Sync>;

/// The SD-WAN path figures (issue 12), refreshed at each scrape
/// (`crate::sdwan::paths::metrics_refresh`).
#[derive(Default)]
pub struct SdwanMetrics {
    pub rtt_ms: PathGauges,
    pub loss_pct: PathGauges,
    pub jitter_ms: PathGauges,
    pub up: Family<PathLabel, Gauge>,
    pub sla_met: Family<SteerLabel, Gauge>,
    pub probes_sent: Counter,
    pub answers: Counter,
    pub reflected: Counter,
    pub decisions: Counter,
    refresh: std::sync::Mutex<Option<SdwanRefresh>>,
}

impl std::fmt::Debug for SdwanMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SdwanMetrics").finish_non_exhaustive()
    }
}

impl SdwanMetrics {
    fn refresh(&self) {
        if let Some(r) = self.refresh.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            r(self);
        }
    }
}

/// Every metric the daemon exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Protocol bytes on the wire (encoded message sizes), by direction.
    pub protocol_bytes: Family<DirLabel, Counter>,
    /// Protocol messages refused, by reason.
    pub rejected: Family<NameLabel, Counter>,
    /// Replies with a non-OK gRPC status, by code (3 = invalid argument, 13 = internal, …).
    pub rpc_errors: Family<NameLabel, Counter>,
    /// Links opened, by how they are carried (`framed`, `grpc`).
    pub links_opened: Family<NameLabel, Counter>,
    /// Protocol state-machine counters, mirrored after every change.
    pub protocol_events: Family<NameLabel, Gauge>,
    pub cpu_used_pct: Gauge<f64, AtomicU64>,
    pub mem_used_pct: Gauge<f64, AtomicU64>,
    pub mem_used_bytes: Gauge,
    pub neighbors_up: Gauge,
    pub view_entries: Gauge,
    pub sample_seconds: Gauge<f64, AtomicU64>,
    pub sdwan: Arc<SdwanMetrics>,
    /// The two series of `protocol_bytes` (shared with the family: one atomic each), held so
    /// that counting a frame neither allocates a label nor looks one up; also reported through
    /// the admin Status.
    pub bytes_sent: Counter,
    pub bytes_received: Counter,
}

impl Metrics {
    pub fn new(router_id: &str) -> Arc<Self> {
        let mut registry = Registry::with_prefix_and_labels(
            "wuosd",
            [(
                std::borrow::Cow::Borrowed("router"),
                std::borrow::Cow::Owned(router_id.to_string()),
            )]
            .into_iter(),
        );
        let protocol_bytes: Family<DirLabel, Counter> = Family::default();
        let series = |direction: &str| {
            protocol_bytes
                .get_or_create(&DirLabel {
                    direction: direction.into(),
                })
                .clone()
        };
        let (bytes_sent, bytes_received) = (series("sent"), series("received"));
        let m = Self {
            protocol_bytes,
            rejected: Family::default(),
            rpc_errors: Family::default(),
            links_opened: Family::default(),
            protocol_events: Family::default(),
            cpu_used_pct: Gauge::default(),
            mem_used_pct: Gauge::default(),
            mem_used_bytes: Gauge::default(),
            neighbors_up: Gauge::default(),
            view_entries: Gauge::default(),
            sample_seconds: Gauge::default(),
            sdwan: Arc::default(),
            bytes_sent,
            bytes_received,
            registry: Registry::default(),
        };
        registry.register(
            "rpc_errors",
            "Replies with a non-OK gRPC status, by code",
            m.rpc_errors.clone(),
        );
        registry.register(
            "links_opened",
            "Neighbor links opened, by transport (framed: 2.4; grpc: with a 2.3 router)",
            m.links_opened.clone(),
        );
        registry.register(
            "protocol_bytes",
            "Encoded protocol message bytes",
            m.protocol_bytes.clone(),
        );
        registry.register(
            "rejected_messages",
            "Protocol messages refused, by reason",
            m.rejected.clone(),
        );
        registry.register(
            "protocol_events",
            "Protocol state machine counters",
            m.protocol_events.clone(),
        );
        registry.register(
            "cpu_used_percent",
            "CPU in use, % of the router's capacity",
            m.cpu_used_pct.clone(),
        );
        registry.register(
            "memory_used_percent",
            "Memory in use, % of the router's RAM",
            m.mem_used_pct.clone(),
        );
        registry.register("memory_used_bytes", "Memory in use", m.mem_used_bytes.clone());
        registry.register("neighbors_up", "Neighbors that are up", m.neighbors_up.clone());
        registry.register(
            "view_entries",
            "Routers in the neighborhood view",
            m.view_entries.clone(),
        );
        registry.register(
            "sample_seconds",
            "Time one monitor sample took",
            m.sample_seconds.clone(),
        );
        let sd = &m.sdwan;
        let paths: [(&str, &str, &PathGauges); 3] = [
            ("sdwan_path_rtt_ms", "SD-WAN path round trip (STAMP), ms", &sd.rtt_ms),
            (
                "sdwan_path_loss_percent",
                "SD-WAN path probes lost over the window, %",
                &sd.loss_pct,
            ),
            (
                "sdwan_path_jitter_ms",
                "SD-WAN path jitter (RFC 3550), ms",
                &sd.jitter_ms,
            ),
        ];
        for (name, help, family) in paths {
            registry.register(name, help, family.clone());
        }
        registry.register("sdwan_path_up", "SD-WAN path up (1) or down (0)", sd.up.clone());
        registry.register(
            "sdwan_steering_sla_met",
            "A steered class's SLA met (1) or not (0) towards a site; absent while not known",
            sd.sla_met.clone(),
        );
        registry.register(
            "sdwan_stamp_probes_sent",
            "STAMP test packets sent",
            sd.probes_sent.clone(),
        );
        registry.register("sdwan_stamp_answers", "STAMP answers that counted", sd.answers.clone());
        registry.register(
            "sdwan_stamp_reflected",
            "STAMP test packets this router's reflector answered",
            sd.reflected.clone(),
        );
        registry.register(
            "sdwan_steering_decisions",
            "SD-WAN steering decisions made",
            sd.decisions.clone(),
        );
        Arc::new(Self { registry, ..m })
    }

    /// Where the SD-WAN figures come from (set once the paths task runs).
    pub fn sdwan_refresh(&self, refresh: SdwanRefresh) {
        *self.sdwan.refresh.lock().unwrap_or_else(|e| e.into_inner()) = Some(refresh);
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        self.sdwan.refresh();
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }

    /// A link was opened, carried by `transport` (`framed` or `grpc`).
    pub fn link_opened(&self, transport: &str) {
        self.links_opened
            .get_or_create(&NameLabel { name: transport.into() })
            .inc();
    }

    pub fn reject(&self, reason: &str) {
        self.rejected.get_or_create(&NameLabel { name: reason.into() }).inc();
    }

    pub fn rpc_error(&self, code: &str) {
        self.rpc_errors.get_or_create(&NameLabel { name: code.into() }).inc();
    }

    pub fn bytes(&self, direction: &str, n: usize) {
        let series = if direction == "sent" {
            &self.bytes_sent
        } else {
            &self.bytes_received
        };
        series.inc_by(n as u64);
    }
}

/// Serves `GET /metrics` until the listener fails (the protocol task mirrors its counters into
/// the gauges at its ticks).
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            return;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let n = conn.read(&mut buf).await.unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]);
            let (status, body) = if req.starts_with("GET /metrics") {
                ("200 OK", metrics.render())
            } else {
                ("404 Not Found", "only /metrics is served here\n".to_string())
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(head.as_bytes()).await;
            let _ = conn.write_all(body.as_bytes()).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_with_the_router_label() {
        let m = Metrics::new("r3");
        m.reject("unsupported version");
        m.bytes("sent", 120);
        m.neighbors_up.set(2);
        let text = m.render();
        assert!(
            text.contains("wuosd_rejected_messages_total{router=\"r3\",name=\"unsupported version\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("wuosd_protocol_bytes_total{router=\"r3\",direction=\"sent\"} 120"),
            "{text}"
        );
        assert!(text.contains("wuosd_neighbors_up{router=\"r3\"} 2"), "{text}");
    }
}
