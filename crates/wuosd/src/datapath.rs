//! The router's XDP data path (`[datapath] xdp = true`): the classifier of `bpf/classifier.c` on
//! every neighbor interface, knowing each catalog service by its VIP and ports. It counts the
//! services' packets and new flows; every telemetry interval the new-flow events of its ring
//! buffer, counted per second, become the `demand` of our adverts, which the orchestrators read.
//! Everything else passes to the kernel untouched. When this router serves a service itself (a
//! local service rule from the controller), the classifier redirects the service's packets
//! straight onto the local instance's veth ([`DataPath::set_local`]); the VIP route the
//! controller installs carries whatever XDP does not (packets from this router itself).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;

use wuos_model::catalog::Proto as CatalogProto;
use wuos_proto::pb;
use wuos_southbound::xdp::{Classifier, LocalRule, Mode, Proto, ServiceId, ServiceKey, link_info};

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
    /// Domain veth ends (namespace, ifindex) that already run the receiving program.
    receivers: Mutex<BTreeSet<(PathBuf, u32)>>,
    /// The services redirected to a local instance now, and the veth.
    local: Mutex<BTreeMap<String, String>>,
    /// When demand was last reported.
    last: Mutex<Instant>,
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
        // Where XDP does not see the traffic: packets the router sends itself (XDP runs on
        // ingress) and IP fragments (XDP cannot see their ports) are marked by nftables.
        apply_nft(&nft_ruleset(services))?;
        Ok(Self {
            classifier: Mutex::new(c),
            names,
            receivers: Mutex::new(BTreeSet::new()),
            local: Mutex::new(BTreeMap::new()),
            last: Mutex::new(Instant::now()),
        })
    }

    fn id_of(&self, service: &str) -> Option<ServiceId> {
        self.names
            .iter()
            .find(|(_, n)| n.as_str() == service)
            .map(|(&id, _)| ServiceId(id))
    }

    /// Redirects `service`'s packets to the local instance behind `host_if` (this router's end of
    /// its veth), whose other end `dom_if` lives in the namespace `dom_netns`.
    pub fn set_local(
        &self,
        service: &str,
        host_if: &str,
        dom_netns: &std::path::Path,
        dom_if: &str,
    ) -> Result<(), String> {
        let Some(id) = self.id_of(service) else {
            return Err(format!("the data path does not know service {service}"));
        };
        let ns = std::fs::File::open(dom_netns).map_err(|e| format!("{}: {e}", dom_netns.display()))?;
        let host = link_info(None, host_if).map_err(|e| e.to_string())?;
        let dom = link_info(Some(&ns), dom_if).map_err(|e| e.to_string())?;
        let mut c = self.classifier.lock().unwrap_or_else(|p| p.into_inner());
        let mut receivers = self.receivers.lock().unwrap_or_else(|p| p.into_inner());
        let key = (dom_netns.to_path_buf(), dom.index);
        if c.mode() == Mode::Native && !receivers.contains(&key) {
            // A native redirect onto a veth needs a program on its far end.
            c.attach_receiver(Some(&ns), dom_if).map_err(|e| e.to_string())?;
            receivers.insert(key);
        }
        c.set_local_rule(
            id,
            LocalRule {
                ifindex: host.index,
                dst_mac: dom.mac,
                src_mac: host.mac,
            },
        )
        .map_err(|e| e.to_string())?;
        self.local
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(service.to_string(), host_if.to_string());
        Ok(())
    }

    /// Stops redirecting `service` (its packets follow the kernel's routes again).
    pub fn clear_local(&self, service: &str) {
        if let Some(id) = self.id_of(service) {
            let _ = self
                .classifier
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clear_local_rule(id);
        }
        self.local.lock().unwrap_or_else(|p| p.into_inner()).remove(service);
    }

    /// Per service: packets and flows counted, and the veth it is redirected to, if any (for the
    /// admin API).
    pub fn summary(&self) -> Vec<(String, u64, u64, Option<String>)> {
        let counters: BTreeMap<u32, (u64, u64)> = self
            .classifier
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .counters()
            .map(|v| v.into_iter().map(|(id, k)| (id.0, (k.packets, k.flows))).collect())
            .unwrap_or_default();
        let local = self.local.lock().unwrap_or_else(|p| p.into_inner());
        self.names
            .iter()
            .map(|(id, n)| {
                let (p, f) = counters.get(id).copied().unwrap_or_default();
                (n.clone(), p, f, local.get(n).cloned())
            })
            .collect()
    }

    /// The nftables table of the marks, as `nft list` shows it (counters included).
    pub fn nft_table() -> String {
        std::process::Command::new("nft")
            .args(["list", "table", "ip", NFT_TABLE])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
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
        let secs = now.duration_since(*last).as_secs_f64().max(1e-3);
        *last = now;
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

impl Drop for DataPath {
    fn drop(&mut self) {
        let _ = apply_nft(&format!("delete table ip {NFT_TABLE}\n"));
    }
}

/// The nftables table of the data path's marks.
pub const NFT_TABLE: &str = "wuos";

/// The mark of service number `id` (the classifier's service id).
pub fn mark(id: u32) -> u32 {
    0x5700_0000 | id
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

fn apply_nft(script: &str) -> Result<(), String> {
    use std::io::Write;
    let mut child = std::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run nft (apt-get install nftables): {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes()).map_err(|e| e.to_string())?;
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("nft: {}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ruleset_marks_each_service_on_output_and_its_fragments() {
        let s = nft_ruleset(&[ServiceSpec {
            name: "pabx".into(),
            vip: Ipv4Addr::new(10, 255, 0, 10),
            ports: vec![(CatalogProto::Udp, 5060), (CatalogProto::Tcp, 5060)],
        }]);
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
}
