//! The router's XDP data path (`[datapath] xdp = true`): the classifier of `bpf/classifier.c` on
//! every neighbor interface, knowing each catalog service by its VIP and ports. It counts the
//! services' packets and new flows; every telemetry interval the new-flow events, counted per
//! second, become the `demand` of our adverts, which the orchestrators read. Everything else
//! passes to the kernel untouched. When this router serves a service itself, the controller has
//! the classifier redirect the service's packets straight onto the local instance's veth; the
//! VIP route carries whatever XDP does not see (packets from this router itself, and fragments,
//! which nftables marks: table `ip wuos`).
//!
//! [`DataPath`] works through the southbound traits ([`XdpMaps`], [`Nftables`]), so it is tested
//! with their fakes; [`spawn`] gives it a task of its own and returns the handle the controller,
//! the sampler and the admin API share.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};
use tracing::warn;
use wuos_model::catalog::Proto as CatalogProto;
use wuos_model::domain::InstanceLink;
use wuos_proto::pb;
use wuos_southbound::nft::{NftError, Nftables};
use wuos_southbound::xdp::{Proto, ServiceId, ServiceKey, XdpError, XdpMaps};

use crate::domains::ServiceSpec;

/// Why the data path could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error("{0}")]
    Xdp(#[from] XdpError),
    #[error("{0}")]
    Nft(#[from] NftError),
    #[error("the data path does not know service {0}")]
    UnknownService(String),
    #[error("the data path task is not running")]
    Gone,
}

/// The nftables table of the data path's marks.
pub const NFT_TABLE: &str = "wuos";

/// The mark of service number `id` (the classifier's service id).
pub fn mark(id: u32) -> u32 {
    0x5700_0000 | id
}

/// The classifier, its service names and the redirects in force.
pub struct DataPath {
    xdp: Box<dyn XdpMaps>,
    nft: Arc<dyn Nftables>,
    names: BTreeMap<u32, String>,
    redirects: BTreeMap<String, InstanceLink>,
    last_demand: Instant,
}

impl std::fmt::Debug for DataPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataPath").field("services", &self.names).finish()
    }
}

impl DataPath {
    /// Registers `services` with the classifier and installs the nftables marks.
    pub fn new(
        mut xdp: Box<dyn XdpMaps>,
        nft: Arc<dyn Nftables>,
        services: &[ServiceSpec],
    ) -> Result<Self, DatapathError> {
        let mut names = BTreeMap::new();
        for (i, s) in services.iter().enumerate() {
            let id = ServiceId(i as u32 + 1);
            for &(proto, port) in &s.ports {
                let proto = match proto {
                    CatalogProto::Tcp => Proto::Tcp,
                    CatalogProto::Udp => Proto::Udp,
                };
                xdp.add_service(
                    ServiceKey {
                        vip: s.vip,
                        port,
                        proto,
                    },
                    id,
                )?;
            }
            names.insert(id.0, s.name.clone());
        }
        // Where XDP does not see the traffic: packets the router sends itself (XDP runs on
        // ingress) and IP fragments (XDP cannot see their ports) are marked by nftables.
        nft.apply(&nft_ruleset(services))?;
        Ok(Self {
            xdp,
            nft,
            names,
            redirects: BTreeMap::new(),
            last_demand: Instant::now(),
        })
    }

    fn id_of(&self, service: &str) -> Option<ServiceId> {
        self.names
            .iter()
            .find(|(_, n)| n.as_str() == service)
            .map(|(&id, _)| ServiceId(id))
    }

    /// Redirects `service`'s packets to the local instance behind `to`.
    pub fn redirect(&mut self, service: &str, to: &InstanceLink) -> Result<(), DatapathError> {
        let id = self
            .id_of(service)
            .ok_or_else(|| DatapathError::UnknownService(service.into()))?;
        self.xdp.redirect(id, to)?;
        self.redirects.insert(service.to_string(), to.clone());
        Ok(())
    }

    /// Stops redirecting `service` (its packets follow the kernel's routes again).
    pub fn clear(&mut self, service: &str) -> Result<(), DatapathError> {
        if let Some(id) = self.id_of(service) {
            self.xdp.clear_redirect(id)?;
        }
        self.redirects.remove(service);
        Ok(())
    }

    /// The redirects in force, by service.
    pub fn redirects(&self) -> &BTreeMap<String, InstanceLink> {
        &self.redirects
    }

    /// New flows per second per service since the last call (the first: since start) — the
    /// new-flow events counted — and packets so far. Services without traffic are reported
    /// with 0.
    pub fn demand(&mut self, now: Instant) -> Vec<pb::ServiceDemand> {
        let mut new_flows: BTreeMap<u32, u64> = BTreeMap::new();
        for e in self.xdp.drain_new_flows() {
            *new_flows.entry(e.service.0).or_default() += 1;
        }
        let packets = self
            .counters()
            .into_iter()
            .map(|(id, k)| (id, k.packets))
            .collect::<BTreeMap<_, _>>();
        let secs = now.duration_since(self.last_demand).as_secs_f64().max(1e-3);
        self.last_demand = now;
        self.names
            .iter()
            .map(|(id, name)| pb::ServiceDemand {
                service: name.clone(),
                flows_per_s: new_flows.get(id).copied().unwrap_or(0) as f64 / secs,
                packets: packets.get(id).copied().unwrap_or(0),
            })
            .collect()
    }

    fn counters(&self) -> Vec<(u32, wuos_southbound::xdp::ServiceCounters)> {
        match self.xdp.counters() {
            Ok(v) => v.into_iter().map(|(id, k)| (id.0, k)).collect(),
            Err(e) => {
                warn!(error = %e, "cannot read the data path's counters");
                Vec::new()
            }
        }
    }

    /// Per service: packets and flows counted, and the veth it is redirected to (the admin API).
    pub fn summary(&self) -> Vec<pb::DataPathService> {
        let counters: BTreeMap<u32, _> = self.counters().into_iter().collect();
        self.names
            .iter()
            .map(|(id, n)| {
                let k = counters.get(id).copied().unwrap_or_default();
                pb::DataPathService {
                    service: n.clone(),
                    packets: k.packets,
                    flows: k.flows,
                    redirect_to: self.redirects.get(n).map(|t| t.host_if.clone()).unwrap_or_default(),
                }
            })
            .collect()
    }
}

impl Drop for DataPath {
    fn drop(&mut self) {
        let _ = self.nft.apply(&format!("delete table ip {NFT_TABLE}\n"));
    }
}

/// The nftables ruleset (replacing any earlier one): per service, packets this router sends to
/// its VIP and port, and fragments to its VIP arriving here, are counted and marked.
pub fn nft_ruleset(services: &[ServiceSpec]) -> String {
    let mut out = String::new();
    let mut frag = String::new();
    for (i, s) in services.iter().enumerate() {
        let m = mark(i as u32 + 1);
        for &(proto, port) in &s.ports {
            let p = match proto {
                CatalogProto::Tcp => "tcp",
                CatalogProto::Udp => "udp",
            };
            out.push_str(&format!(
                "    ip daddr {} {p} dport {port} counter meta mark set {m:#x} comment \"{}\"\n",
                s.vip, s.name
            ));
        }
        frag.push_str(&format!(
            "    ip daddr {} ip frag-off & 0x3fff != 0 counter meta mark set {m:#x} comment \"{} fragments\"\n",
            s.vip, s.name
        ));
    }
    format!(
        "add table ip {t}\ndelete table ip {t}\ntable ip {t} {{\n  chain output {{\n    type filter hook output priority mangle; policy accept;\n{out}  }}\n  chain fragments {{\n    type filter hook prerouting priority mangle; policy accept;\n{frag}  }}\n}}\n",
        t = NFT_TABLE
    )
}

enum Msg {
    Redirect {
        service: String,
        to: Option<InstanceLink>,
        reply: oneshot::Sender<Result<(), DatapathError>>,
    },
    Redirects(oneshot::Sender<BTreeMap<String, InstanceLink>>),
    Demand(oneshot::Sender<Vec<pb::ServiceDemand>>),
    Summary(oneshot::Sender<Vec<pb::DataPathService>>),
}

/// The door into the data path's task; cheap to clone.
#[derive(Clone, Debug)]
pub struct DatapathHandle {
    tx: mpsc::Sender<Msg>,
}

impl DatapathHandle {
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Msg) -> Option<T> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(make(reply)).await.ok()?;
        rx.await.ok()
    }

    /// Redirects `service` to `to`, or (`None`) stops redirecting it.
    pub async fn redirect(&self, service: &str, to: Option<InstanceLink>) -> Result<(), DatapathError> {
        let service = service.to_string();
        self.ask(|reply| Msg::Redirect { service, to, reply })
            .await
            .unwrap_or(Err(DatapathError::Gone))
    }

    pub async fn redirects(&self) -> BTreeMap<String, InstanceLink> {
        self.ask(Msg::Redirects).await.unwrap_or_default()
    }

    pub async fn demand(&self) -> Vec<pb::ServiceDemand> {
        self.ask(Msg::Demand).await.unwrap_or_default()
    }

    pub async fn summary(&self) -> Vec<pb::DataPathService> {
        self.ask(Msg::Summary).await.unwrap_or_default()
    }
}

/// Gives `dp` a task of its own (map updates are quick system calls).
pub fn spawn(mut dp: DataPath) -> DatapathHandle {
    let (tx, mut rx) = mpsc::channel(64);
    tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            match m {
                Msg::Redirect { service, to, reply } => {
                    let r = match to {
                        Some(to) => dp.redirect(&service, &to),
                        None => dp.clear(&service),
                    };
                    let _ = reply.send(r);
                }
                Msg::Redirects(reply) => {
                    let _ = reply.send(dp.redirects().clone());
                }
                Msg::Demand(reply) => {
                    let _ = reply.send(dp.demand(Instant::now()));
                }
                Msg::Summary(reply) => {
                    let _ = reply.send(dp.summary());
                }
            }
        }
    });
    DatapathHandle { tx }
}

impl wuos_model::Classify for DatapathError {
    fn class(&self) -> wuos_model::ErrorClass {
        use wuos_model::ErrorClass as C;
        match self {
            DatapathError::Xdp(e) => e.class(),
            DatapathError::Nft(e) => e.class(),
            DatapathError::UnknownService(_) => C::NotFound,
            DatapathError::Gone => C::Unavailable,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddrV4};
    use std::time::Duration;

    use wuos_southbound::nft::RecordingNft;
    use wuos_southbound::xdp::{FlowEvent, RecordingXdp, ServiceCounters, XdpCall};

    use super::*;

    fn pabx() -> ServiceSpec {
        ServiceSpec {
            name: "pabx".into(),
            vip: Ipv4Addr::new(10, 255, 0, 10),
            ports: vec![(CatalogProto::Udp, 5060), (CatalogProto::Tcp, 5060)],
        }
    }

    #[test]
    fn the_ruleset_marks_each_service_on_output_and_its_fragments() {
        let s = nft_ruleset(&[pabx()]);
        assert!(s.starts_with("add table ip wuos\ndelete table ip wuos\n"), "{s}");
        assert!(
            s.contains("ip daddr 10.255.0.10 udp dport 5060 counter meta mark set 0x57000001 comment \"pabx\""),
            "{s}"
        );
        assert!(s.contains("ip daddr 10.255.0.10 tcp dport 5060 counter"), "{s}");
        assert!(
            s.contains("ip daddr 10.255.0.10 ip frag-off & 0x3fff != 0 counter meta mark set 0x57000001"),
            "{s}"
        );
        assert!(s.contains("type filter hook output priority mangle"), "{s}");
    }

    #[test]
    fn services_are_classified_demand_is_counted_per_second_and_redirects_are_kept() {
        let nft = Arc::new(RecordingNft::default());
        let flow = |n: u16| FlowEvent {
            service: ServiceId(1),
            src: SocketAddrV4::new(Ipv4Addr::new(10, 254, 0, 1), n),
            dst: SocketAddrV4::new(Ipv4Addr::new(10, 255, 0, 10), 5060),
            proto: Proto::Udp,
            ifindex: 2,
            timestamp: Duration::ZERO,
        };
        let mut xdp = RecordingXdp {
            flows: (0..6).map(flow).collect(),
            ..Default::default()
        };
        xdp.counters.insert(
            ServiceId(1),
            ServiceCounters {
                packets: 40,
                bytes: 4000,
                flows: 6,
            },
        );
        let mut dp = DataPath::new(Box::new(xdp), nft.clone(), &[pabx()]).unwrap();
        assert_eq!(nft.scripts().len(), 1, "the marks are installed");
        let t0 = dp.last_demand;
        let d = dp.demand(t0 + Duration::from_secs(2));
        assert_eq!(
            (d[0].service.as_str(), d[0].flows_per_s, d[0].packets),
            ("pabx", 3.0, 40)
        );
        let d = dp.demand(t0 + Duration::from_secs(3));
        assert_eq!(d[0].flows_per_s, 0.0, "the events were counted once");
        let to = InstanceLink {
            host_if: "d0".into(),
            netns: "/run/netns/x".into(),
            dom_if: "eth0".into(),
        };
        dp.redirect("pabx", &to).unwrap();
        assert_eq!(dp.summary()[0].redirect_to, "d0");
        assert!(matches!(
            dp.redirect("nosuch", &to),
            Err(DatapathError::UnknownService(_))
        ));
        dp.clear("pabx").unwrap();
        assert!(dp.redirects().is_empty());
        drop(dp);
        assert_eq!(
            nft.scripts().last().unwrap(),
            "delete table ip wuos\n",
            "removed on drop"
        );
    }

    #[test]
    fn the_fake_records_the_classifiers_calls() {
        let mut xdp = RecordingXdp::default();
        let to = InstanceLink {
            host_if: "d0".into(),
            netns: "/run/netns/x".into(),
            dom_if: "eth0".into(),
        };
        xdp.redirect(ServiceId(1), &to).unwrap();
        xdp.clear_redirect(ServiceId(1)).unwrap();
        assert_eq!(
            xdp.calls,
            vec![
                XdpCall::Redirect(ServiceId(1), to),
                XdpCall::ClearRedirect(ServiceId(1))
            ]
        );
    }
}
