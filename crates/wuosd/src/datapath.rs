//! The router's XDP data path (`[datapath] xdp = true`): the classifier of `bpf/classifier.c` on
//! every neighbor interface, knowing each catalog service by its VIP and ports. It counts the
//! services' packets and new flows; every telemetry interval the new-flow events of its ring
//! buffer, counted per second, become the `demand` of our adverts, which the orchestrators read.
//! Everything else passes to the kernel untouched. (The classifier can also redirect a service's
//! packets to a local instance, `Classifier::set_local_rule`; the daemon does not use that yet:
//! a local instance is reached by the VIP route the controller installs.)

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Mutex;
use std::time::Instant;

use wuos_model::catalog::Proto as CatalogProto;
use wuos_proto::pb;
use wuos_southbound::xdp::{Classifier, Mode, Proto, ServiceId, ServiceKey};

/// A catalog service as the data path knows it.
#[derive(Clone, Debug)]
pub struct ServiceSpec {
    pub name: String,
    pub vip: Ipv4Addr,
    pub ports: Vec<(CatalogProto, u16)>,
}

/// The attached classifier and the counters at the last sample.
pub struct DataPath {
    classifier: Mutex<Classifier>,
    names: BTreeMap<u32, String>,
    /// When demand was last reported.
    last: Mutex<(Instant,)>,
}

impl std::fmt::Debug for DataPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataPath").field("services", &self.names).finish()
    }
}

impl DataPath {
    /// Loads the classifier onto `ifaces` (native mode, generic if the driver refuses) and
    /// registers `services`.
    pub fn start(ifaces: &[&str], services: &[ServiceSpec]) -> Result<Self, String> {
        let mut c = match Classifier::attach(None, ifaces, Mode::Native) {
            Ok(c) => c,
            Err(native) => Classifier::attach(None, ifaces, Mode::Generic)
                .map_err(|e| format!("native: {native}; generic: {e}"))?,
        };
        let mut names = BTreeMap::new();
        for (i, s) in services.iter().enumerate() {
            let id = ServiceId(i as u32 + 1);
            for &(proto, port) in &s.ports {
                let proto = match proto {
                    CatalogProto::Tcp => Proto::Tcp,
                    CatalogProto::Udp => Proto::Udp,
                };
                c.add_service(
                    ServiceKey {
                        vip: s.vip,
                        port,
                        proto,
                    },
                    id,
                )
                .map_err(|e| e.to_string())?;
            }
            names.insert(id.0, s.name.clone());
        }
        Ok(Self {
            classifier: Mutex::new(c),
            names,
            last: Mutex::new((Instant::now(),)),
        })
    }

    /// New flows per second per service since the last call (the first call: since start) —
    /// the new-flow events of the ring buffer, counted — and packets so far (the per-CPU
    /// counters). Services without traffic yet are reported with 0.
    pub fn demand(&self) -> Vec<pb::ServiceDemand> {
        let mut c = self.classifier.lock().unwrap_or_else(|p| p.into_inner());
        let mut new_flows: BTreeMap<u32, u64> = BTreeMap::new();
        for e in c.drain_new_flows() {
            *new_flows.entry(e.service.0).or_default() += 1;
        }
        let packets: BTreeMap<u32, u64> = c
            .counters()
            .map(|v| v.into_iter().map(|(id, k)| (id.0, k.packets)).collect())
            .unwrap_or_default();
        drop(c);
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let secs = now.duration_since(last.0).as_secs_f64().max(1e-3);
        last.0 = now;
        self.names
            .iter()
            .map(|(id, name)| pb::ServiceDemand {
                service: name.clone(),
                flows_per_s: new_flows.get(id).copied().unwrap_or(0) as f64 / secs,
                packets: packets.get(id).copied().unwrap_or(0),
            })
            .collect()
    }
}
