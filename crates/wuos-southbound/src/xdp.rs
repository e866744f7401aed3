//! The XDP data path: the classifier of `bpf/classifier.c`, loaded by aya, attached to a router's
//! interfaces, and driven through its maps.
//!
//! ```text
//!  ingress veth ──▶ wuos_classifier ──▶ services[(VIP, port, proto)] ──▶ id
//!                        │                 counters[id] (per CPU)   ◀── counters()
//!                        │                 flows (LRU 5-tuple) ─▶ events ring ◀── drain_new_flows()
//!                        ├─ local_rules[id] ─▶ MACs, TTL-1 ─▶ XDP_REDIRECT ─▶ instance veth
//!                        └─ anything else ─▶ XDP_PASS (kernel FIB)     (peer runs wuos_pass)
//! ```
//!
//! Programs are attached inside the router's network namespace (interface names and indexes are
//! per namespace, and so is the attachment); the attachments are bpf links, removed on
//! [`Classifier::detach`] or drop. A [`LocalRule`]'s ifindex is an interface of the namespace the
//! classifier runs in: resolve it there with [`link_info`].
//!
//! A native XDP_REDIRECT onto a veth needs an XDP program on the veth's far end
//! ([`Classifier::attach_receiver`]),
//! and TX checksum offload off on the sending end veth: a redirected frame loses its
//! partial-checksum state, so its L4 checksum must already be complete.
//!
//! Map layouts mirror the C structs byte for byte; keys and values are byte arrays here so that no
//! `unsafe impl Pod` is needed.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::time::Duration;

use aya::Ebpf;
use aya::maps::{HashMap, MapData, MapError, PerCpuHashMap, PerCpuValues, RingBuf};
use aya::programs::xdp::XdpLinkId;
use aya::programs::{ProgramError, Xdp, XdpMode};

use crate::netns::{self, NetnsError};

/// The classifier object built by `build.rs` from `bpf/classifier.c`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/classifier.o"));

const CLASSIFIER: &str = "wuos_classifier";
const PASS: &str = "wuos_pass";

const BPF_NOEXIST: u64 = 1;
const FLOW_EVENT_LEN: usize = 32;

/// Where the XDP program runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// In the driver (veth: its NAPI receive path); the fast path.
    Native,
    /// In the kernel's generic receive path, on an skb; works on any interface.
    Generic,
}

impl Mode {
    fn aya(self) -> XdpMode {
        match self {
            Mode::Native => XdpMode::Driver,
            Mode::Generic => XdpMode::Skb,
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Native => "native",
            Mode::Generic => "generic",
        })
    }
}

/// The transport protocols the classifier looks into.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
        }
    }

    pub fn from_number(n: u8) -> Option<Self> {
        match n {
            6 => Some(Proto::Tcp),
            17 => Some(Proto::Udp),
            _ => None,
        }
    }
}

/// A service as packets address it: virtual IP, destination port, protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    pub vip: Ipv4Addr,
    pub port: u16,
    pub proto: Proto,
}

impl ServiceKey {
    /// `struct service_key`: VIP and port in network byte order, protocol, padding.
    fn to_bytes(self) -> [u8; 8] {
        let [a, b, c, d] = self.vip.octets();
        let [p0, p1] = self.port.to_be_bytes();
        [a, b, c, d, p0, p1, self.proto.number(), 0]
    }
}

/// The data path's number for a service; several [`ServiceKey`]s may share one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceId(pub u32);

/// Hands a service's packets to a local instance: out of `ifindex` (an interface of the
/// classifier's namespace) with these MACs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalRule {
    pub ifindex: u32,
    /// The instance's MAC (the far end of the veth).
    pub dst_mac: [u8; 6],
    /// The MAC of `ifindex` itself.
    pub src_mac: [u8; 6],
}

impl LocalRule {
    /// `struct local_rule`: ifindex in host byte order, then the two MACs.
    fn to_bytes(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..4].copy_from_slice(&self.ifindex.to_ne_bytes());
        b[4..10].copy_from_slice(&self.dst_mac);
        b[10..].copy_from_slice(&self.src_mac);
        b
    }
}

/// A service's traffic since it was added, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceCounters {
    pub packets: u64,
    /// Whole Ethernet frames, headers included.
    pub bytes: u64,
    /// Flows seen for the first time (entries made in the flow table).
    pub flows: u64,
}

/// The first packet of a flow to a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowEvent {
    pub service: ServiceId,
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    pub proto: Proto,
    /// The interface the packet came in on (an index of the classifier's namespace).
    pub ifindex: u32,
    /// When the packet was seen, on CLOCK_MONOTONIC (time since boot, suspend excluded).
    pub timestamp: Duration,
}

impl FlowEvent {
    /// Decodes `struct flow_event`. `None` for a record of another length or protocol.
    pub fn decode(b: &[u8]) -> Option<Self> {
        let b: &[u8; FLOW_EVENT_LEN] = b.try_into().ok()?;
        let u32_ne = |i: usize| u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let ip = |i: usize| Ipv4Addr::new(b[i], b[i + 1], b[i + 2], b[i + 3]);
        let port = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&b[8..16]);
        Some(Self {
            service: ServiceId(u32_ne(0)),
            ifindex: u32_ne(4),
            timestamp: Duration::from_nanos(u64::from_ne_bytes(ts)),
            src: SocketAddrV4::new(ip(16), port(24)),
            dst: SocketAddrV4::new(ip(20), port(26)),
            proto: Proto::from_number(b[28])?,
        })
    }

    /// Encodes as the program does; the inverse of [`FlowEvent::decode`] (for tests and fakes).
    pub fn encode(&self) -> [u8; FLOW_EVENT_LEN] {
        let mut b = [0u8; FLOW_EVENT_LEN];
        b[0..4].copy_from_slice(&self.service.0.to_ne_bytes());
        b[4..8].copy_from_slice(&self.ifindex.to_ne_bytes());
        let ns = u64::try_from(self.timestamp.as_nanos()).unwrap_or(u64::MAX);
        b[8..16].copy_from_slice(&ns.to_ne_bytes());
        b[16..20].copy_from_slice(&self.src.ip().octets());
        b[20..24].copy_from_slice(&self.dst.ip().octets());
        b[24..26].copy_from_slice(&self.src.port().to_be_bytes());
        b[26..28].copy_from_slice(&self.dst.port().to_be_bytes());
        b[28] = self.proto.number();
        b
    }
}

/// An interface as the kernel knows it in one namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkInfo {
    pub index: u32,
    pub mac: [u8; 6],
}

/// Errors of the XDP data path; each names what it was doing and where.
#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    #[error(
        "cannot load the XDP classifier into the kernel (needs root and a kernel with BTF maps and ring buffers): {0}"
    )]
    Load(#[source] Box<aya::EbpfError>),
    #[error("cannot load XDP program {program} (the verifier's log follows): {source}")]
    LoadProgram {
        program: &'static str,
        source: Box<ProgramError>,
    },
    #[error("the embedded classifier object has no {0}; rebuild wuos-southbound")]
    Object(&'static str),
    #[error("cannot read map {map} of the classifier: {source}")]
    Map { map: &'static str, source: Box<MapError> },
    #[error("cannot {what}: {source}")]
    Update { what: String, source: Box<MapError> },
    #[error("cannot attach XDP program {program} ({mode}) to {iface} in {netns}: {source}")]
    Attach {
        program: &'static str,
        mode: Mode,
        iface: String,
        netns: String,
        source: Box<ProgramError>,
    },
    #[error("cannot detach XDP program {program} from {iface} in {netns}: {source}")]
    Detach {
        program: &'static str,
        iface: String,
        netns: String,
        source: Box<ProgramError>,
    },
    #[error("no interface {iface} in {netns}")]
    NoSuchInterface { iface: String, netns: String },
    #[error("cannot list the interfaces of {netns}: {source}")]
    Interfaces { netns: String, source: io::Error },
    #[error("cannot work in {netns}: {source}")]
    Netns { netns: String, source: NetnsError },
    #[error("cannot duplicate the handle of {netns}: {source}")]
    NetnsHandle { netns: String, source: io::Error },
    #[error("cannot count the possible CPUs: {0}")]
    Cpus(io::Error),
}

/// How errors and messages name a namespace: its path (`/run/netns/NAME`) when it has one.
fn netns_label(netns: Option<&File>) -> String {
    match netns {
        None => "the current namespace".into(),
        Some(f) => match std::fs::read_link(format!("/proc/self/fd/{}", f.as_raw_fd())) {
            Ok(p) => format!("namespace {}", p.display()),
            Err(_) => format!("namespace net:[{}]", netns::inode(f).unwrap_or(0)),
        },
    }
}

/// Runs `f` inside `netns`, or on this thread when `None`.
fn in_netns<R: Send>(netns: Option<&File>, f: impl FnOnce() -> R + Send) -> Result<R, XdpError> {
    match netns {
        None => Ok(f()),
        Some(ns) => netns::run_in(ns, f).map_err(|source| XdpError::Netns {
            netns: netns_label(Some(ns)),
            source,
        }),
    }
}

/// The index and MAC of interface `name` in `netns` (or the current namespace).
pub fn link_info(netns: Option<&File>, name: &str) -> Result<LinkInfo, XdpError> {
    let label = || netns_label(netns);
    let found = in_netns(netns, || -> Result<Option<LinkInfo>, io::Error> {
        let Ok(index) = nix::net::if_::if_nametoindex(name) else {
            return Ok(None);
        };
        let mac = nix::ifaddrs::getifaddrs()
            .map_err(io::Error::from)?
            .filter(|a| a.interface_name == name)
            .find_map(|a| a.address?.as_link_addr()?.addr())
            .unwrap_or_default();
        Ok(Some(LinkInfo { index, mac }))
    })?;
    match found {
        Ok(Some(info)) => Ok(info),
        Ok(None) => Err(XdpError::NoSuchInterface {
            iface: name.into(),
            netns: label(),
        }),
        Err(source) => Err(XdpError::Interfaces { netns: label(), source }),
    }
}

/// One program attached to one interface.
struct Attachment {
    program: &'static str,
    netns: Option<File>,
    iface: String,
    link: Option<XdpLinkId>,
}

/// The classifier loaded in the kernel, attached to a router's interfaces; detached on drop.
pub struct Classifier {
    ebpf: Ebpf,
    services: HashMap<MapData, [u8; 8], u32>,
    counters: PerCpuHashMap<MapData, u32, [u64; 3]>,
    rules: HashMap<MapData, u32, [u8; 16]>,
    flows: HashMap<MapData, [u8; 16], [u8; 16]>,
    events: RingBuf<MapData>,
    attached: Vec<Attachment>,
    mode: Mode,
}

impl std::fmt::Debug for Classifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ifaces: Vec<String> = self
            .attached
            .iter()
            .map(|a| format!("{}@{} in {}", a.program, a.iface, netns_label(a.netns.as_ref())))
            .collect();
        f.debug_struct("Classifier")
            .field("mode", &self.mode)
            .field("attached", &ifaces)
            .finish_non_exhaustive()
    }
}

fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, XdpError> {
    ebpf.take_map(name).ok_or(XdpError::Object(name))
}

fn typed<M>(name: &'static str, map: aya::maps::Map) -> Result<M, XdpError>
where
    M: TryFrom<aya::maps::Map, Error = MapError>,
{
    M::try_from(map).map_err(|source| XdpError::Map {
        map: name,
        source: source.into(),
    })
}

fn errno(e: &MapError) -> Option<i32> {
    match e {
        MapError::SyscallError(s) => s.io_error.raw_os_error(),
        _ => None,
    }
}

impl Classifier {
    /// Loads the classifier and attaches it to `ifaces` in `netns` (the current namespace when
    /// `None`). On error nothing stays attached.
    pub fn attach(netns: Option<&File>, ifaces: &[&str], mode: Mode) -> Result<Self, XdpError> {
        let mut ebpf = Ebpf::load(OBJECT).map_err(|e| XdpError::Load(Box::new(e)))?;
        for program in [CLASSIFIER, PASS] {
            xdp_program(&mut ebpf, program)?
                .load()
                .map_err(|source| XdpError::LoadProgram {
                    program,
                    source: source.into(),
                })?;
        }
        let services = typed("services", take_map(&mut ebpf, "services")?)?;
        let counters = typed("counters", take_map(&mut ebpf, "counters")?)?;
        let rules = typed("local_rules", take_map(&mut ebpf, "local_rules")?)?;
        let flows = typed("flows", take_map(&mut ebpf, "flows")?)?;
        let events = typed("events", take_map(&mut ebpf, "events")?)?;
        let mut c = Self {
            ebpf,
            services,
            counters,
            rules,
            flows,
            events,
            attached: Vec::new(),
            mode,
        };
        for iface in ifaces {
            // On error, `c` drops and detaches what was attached so far.
            c.attach_program(CLASSIFIER, netns, iface, mode)?;
        }
        Ok(c)
    }

    /// Attaches an XDP_PASS program (native mode) to `iface` in `netns`: the far end of a veth
    /// that a [`LocalRule`] redirects to. A native-mode redirect onto a veth is dropped unless its
    /// far end runs an XDP program; a generic-mode redirect does not need it.
    pub fn attach_receiver(&mut self, netns: Option<&File>, iface: &str) -> Result<(), XdpError> {
        self.attach_program(PASS, netns, iface, Mode::Native)
    }

    fn attach_program(
        &mut self,
        program: &'static str,
        netns: Option<&File>,
        iface: &str,
        mode: Mode,
    ) -> Result<(), XdpError> {
        let netns_file = netns
            .map(File::try_clone)
            .transpose()
            .map_err(|source| XdpError::NetnsHandle {
                netns: netns_label(netns),
                source,
            })?;
        let prog = xdp_program(&mut self.ebpf, program)?;
        let link = in_netns(netns, || prog.attach(iface, mode.aya()))?.map_err(|source| XdpError::Attach {
            program,
            mode,
            iface: iface.into(),
            netns: netns_label(netns),
            source: source.into(),
        })?;
        self.attached.push(Attachment {
            program,
            netns: netns_file,
            iface: iface.into(),
            link: Some(link),
        });
        Ok(())
    }

    /// The mode the classifier was attached in.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Classifies packets to `key` as service `id` (replacing an earlier id for the key).
    pub fn add_service(&mut self, key: ServiceKey, id: ServiceId) -> Result<(), XdpError> {
        let what = || {
            format!(
                "add service {} {}:{} as id {}",
                proto_name(key.proto),
                key.vip,
                key.port,
                id.0
            )
        };
        let nr_cpus = aya::util::nr_cpus().map_err(|(_, e)| XdpError::Cpus(e))?;
        let zero = PerCpuValues::try_from(vec![[0u64; 3]; nr_cpus]).map_err(XdpError::Cpus)?;
        // Counters start at zero once; an id that already has counters keeps them.
        match self.counters.insert(id.0, zero, BPF_NOEXIST) {
            Ok(()) => {}
            Err(e) if errno(&e) == Some(libc::EEXIST) => {}
            Err(source) => {
                return Err(XdpError::Update {
                    what: what(),
                    source: source.into(),
                });
            }
        }
        self.services
            .insert(key.to_bytes(), id.0, 0)
            .map_err(|source| XdpError::Update {
                what: what(),
                source: source.into(),
            })
    }

    /// Stops classifying `key`; returns whether it was there. When the last key of a service
    /// goes, its counters and its entries in the flow table go with it (a later service with
    /// that id starts afresh); its local rule stays until [`Classifier::clear_local_rule`].
    pub fn remove_service(&mut self, key: ServiceKey) -> Result<bool, XdpError> {
        let what = || format!("remove service {} {}:{}", proto_name(key.proto), key.vip, key.port);
        let bytes = key.to_bytes();
        let id = match self.services.get(&bytes, 0) {
            Ok(id) => id,
            Err(MapError::KeyNotFound) => return Ok(false),
            Err(e) if errno(&e) == Some(libc::ENOENT) => return Ok(false),
            Err(source) => {
                return Err(XdpError::Update {
                    what: what(),
                    source: source.into(),
                });
            }
        };
        match self.services.remove(&bytes) {
            Ok(()) => {}
            Err(e) if errno(&e) == Some(libc::ENOENT) => return Ok(false),
            Err(source) => {
                return Err(XdpError::Update {
                    what: what(),
                    source: source.into(),
                });
            }
        }
        let still_used = self.services.iter().filter_map(Result::ok).any(|(_, v)| v == id);
        if !still_used {
            let _ = self.counters.remove(&id);
            let stale: Vec<[u8; 16]> = self
                .flows
                .iter()
                .filter_map(Result::ok)
                .filter(|(_, v)| u32::from_ne_bytes([v[0], v[1], v[2], v[3]]) == id)
                .map(|(k, _)| k)
                .collect();
            for k in stale {
                let _ = self.flows.remove(&k);
            }
        }
        Ok(true)
    }

    /// Sends service `id`'s packets to a local instance instead of the kernel's route.
    pub fn set_local_rule(&mut self, id: ServiceId, rule: LocalRule) -> Result<(), XdpError> {
        self.rules
            .insert(id.0, rule.to_bytes(), 0)
            .map_err(|source| XdpError::Update {
                what: format!(
                    "set the local rule of service {} (out of ifindex {})",
                    id.0, rule.ifindex
                ),
                source: source.into(),
            })
    }

    /// Returns service `id`'s packets to the kernel's route; returns whether it had a rule.
    pub fn clear_local_rule(&mut self, id: ServiceId) -> Result<bool, XdpError> {
        match self.rules.remove(&id.0) {
            Ok(()) => Ok(true),
            Err(e) if errno(&e) == Some(libc::ENOENT) => Ok(false),
            Err(source) => Err(XdpError::Update {
                what: format!("clear the local rule of service {}", id.0),
                source: source.into(),
            }),
        }
    }

    /// Every service's counters, summed over CPUs, by id.
    pub fn counters(&self) -> Result<Vec<(ServiceId, ServiceCounters)>, XdpError> {
        let mut out = BTreeMap::new();
        for entry in self.counters.iter() {
            let (id, per_cpu) = entry.map_err(|source| XdpError::Map {
                map: "counters",
                source: source.into(),
            })?;
            let mut sum = ServiceCounters::default();
            for [packets, bytes, flows] in per_cpu.iter() {
                sum.packets += packets;
                sum.bytes += bytes;
                sum.flows += flows;
            }
            out.insert(ServiceId(id), sum);
        }
        Ok(out.into_iter().collect())
    }

    /// The new-flow events waiting in the ring buffer, oldest first; does not block.
    pub fn drain_new_flows(&mut self) -> Vec<FlowEvent> {
        let mut out = Vec::new();
        while let Some(item) = self.events.next() {
            if let Some(ev) = FlowEvent::decode(&item) {
                out.push(ev);
            }
        }
        out
    }

    /// Detaches every program, each in its namespace, reporting the first failure.
    pub fn detach(mut self) -> Result<(), XdpError> {
        self.detach_all()
    }

    fn detach_all(&mut self) -> Result<(), XdpError> {
        let mut first = None;
        for a in &mut self.attached {
            let Some(link) = a.link.take() else { continue };
            let program = a.program;
            let r = match xdp_program(&mut self.ebpf, program) {
                Ok(prog) => in_netns(a.netns.as_ref(), || prog.detach(link)).and_then(|r| {
                    r.map_err(|source| XdpError::Detach {
                        program,
                        iface: a.iface.clone(),
                        netns: netns_label(a.netns.as_ref()),
                        source: source.into(),
                    })
                }),
                Err(e) => Err(e),
            };
            if let Err(e) = r {
                first.get_or_insert(e);
            }
        }
        self.attached.clear();
        first.map_or(Ok(()), Err)
    }
}

impl Drop for Classifier {
    fn drop(&mut self) {
        // Links are bpf links: closing their fds (when `ebpf` drops) would detach them too; this
        // does it explicitly and in order.
        let _ = self.detach_all();
    }
}

fn xdp_program<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut Xdp, XdpError> {
    ebpf.program_mut(name)
        .and_then(|p| <&mut Xdp>::try_from(p).ok())
        .ok_or(XdpError::Object(name))
}

fn proto_name(p: Proto) -> &'static str {
    match p {
        Proto::Tcp => "tcp",
        Proto::Udp => "udp",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_key_is_laid_out_like_the_c_struct() {
        let k = ServiceKey {
            vip: Ipv4Addr::new(10, 0, 0, 9),
            port: 5201,
            proto: Proto::Udp,
        };
        assert_eq!(k.to_bytes(), [10, 0, 0, 9, 0x14, 0x51, 17, 0]);
    }

    #[test]
    fn a_local_rule_is_laid_out_like_the_c_struct() {
        let r = LocalRule {
            ifindex: 7,
            dst_mac: [2, 0, 0, 0, 0, 1],
            src_mac: [2, 0, 0, 0, 0, 2],
        };
        let mut want = 7u32.to_ne_bytes().to_vec();
        want.extend([2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2]);
        assert_eq!(r.to_bytes().to_vec(), want);
    }

    #[test]
    fn a_flow_event_decodes_what_the_program_writes() {
        let mut b = [0u8; 32];
        b[0..4].copy_from_slice(&42u32.to_ne_bytes());
        b[4..8].copy_from_slice(&3u32.to_ne_bytes());
        b[8..16].copy_from_slice(&1_500_000_000u64.to_ne_bytes());
        b[16..20].copy_from_slice(&[10, 1, 0, 2]);
        b[20..24].copy_from_slice(&[10, 9, 9, 9]);
        b[24..26].copy_from_slice(&40000u16.to_be_bytes());
        b[26..28].copy_from_slice(&53u16.to_be_bytes());
        b[28] = 17;
        let ev = FlowEvent::decode(&b).expect("a well-formed record decodes");
        assert_eq!(
            ev,
            FlowEvent {
                service: ServiceId(42),
                src: "10.1.0.2:40000".parse().unwrap(),
                dst: "10.9.9.9:53".parse().unwrap(),
                proto: Proto::Udp,
                ifindex: 3,
                timestamp: Duration::from_millis(1500),
            }
        );
        assert_eq!(ev.encode(), b, "encode is decode's inverse");
        assert_eq!(FlowEvent::decode(&b[..31]), None, "a short record is refused");
        b[28] = 1;
        assert_eq!(FlowEvent::decode(&b), None, "ICMP is not a flow the program reports");
    }

    #[test]
    fn the_embedded_object_is_an_ebpf_elf() {
        assert_eq!(&OBJECT[..4], b"\x7fELF");
        assert_eq!(OBJECT.as_ptr() as usize % 8, 0, "aligned for aya");
    }
}

pub use wuos_model::domain::InstanceLink;

/// The XDP data path as the daemon drives it: services classified, redirects to local
/// instances, counters and new-flow events. [`Classifier`] is the kernel's; [`RecordingXdp`] the
/// fake beside it.
pub trait XdpMaps: Send {
    /// Classifies packets to `key` as service `id`.
    fn add_service(&mut self, key: ServiceKey, id: ServiceId) -> Result<(), XdpError>;
    /// Sends service `id`'s packets straight to the local instance behind `to`.
    fn redirect(&mut self, id: ServiceId, to: &InstanceLink) -> Result<(), XdpError>;
    /// Returns service `id`'s packets to the kernel's route; whether it had a redirect.
    fn clear_redirect(&mut self, id: ServiceId) -> Result<bool, XdpError>;
    /// Every service's counters, by id.
    fn counters(&self) -> Result<Vec<(ServiceId, ServiceCounters)>, XdpError>;
    /// The new-flow events waiting, oldest first; does not block.
    fn drain_new_flows(&mut self) -> Vec<FlowEvent>;
}

impl XdpMaps for Classifier {
    fn add_service(&mut self, key: ServiceKey, id: ServiceId) -> Result<(), XdpError> {
        Classifier::add_service(self, key, id)
    }

    /// Resolves both ends of the veth (the far one in the instance's namespace: ifindexes are per
    /// namespace), attaches the receiving program on the far end once in native mode (a native
    /// redirect onto a veth needs one), and sets the rule.
    fn redirect(&mut self, id: ServiceId, to: &InstanceLink) -> Result<(), XdpError> {
        let ns = File::open(&to.netns).map_err(|source| XdpError::NetnsHandle {
            netns: format!("namespace {}", to.netns.display()),
            source,
        })?;
        let host = link_info(None, &to.host_if)?;
        let dom = link_info(Some(&ns), &to.dom_if)?;
        let receiving = self
            .attached
            .iter()
            .any(|a| a.program == PASS && a.iface == to.dom_if && a.netns.as_ref().is_some_and(|f| same_netns(f, &ns)));
        if self.mode == Mode::Native && !receiving {
            self.attach_receiver(Some(&ns), &to.dom_if)?;
        }
        self.set_local_rule(
            id,
            LocalRule {
                ifindex: host.index,
                dst_mac: dom.mac,
                src_mac: host.mac,
            },
        )
    }

    fn clear_redirect(&mut self, id: ServiceId) -> Result<bool, XdpError> {
        self.clear_local_rule(id)
    }

    fn counters(&self) -> Result<Vec<(ServiceId, ServiceCounters)>, XdpError> {
        Classifier::counters(self)
    }

    fn drain_new_flows(&mut self) -> Vec<FlowEvent> {
        Classifier::drain_new_flows(self)
    }
}

/// Whether two namespace handles are the same namespace.
fn same_netns(a: &File, b: &File) -> bool {
    matches!((netns::inode(a), netns::inode(b)), (Ok(x), Ok(y)) if x == y)
}

/// What a [`RecordingXdp`] was asked to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum XdpCall {
    AddService(ServiceKey, ServiceId),
    Redirect(ServiceId, InstanceLink),
    ClearRedirect(ServiceId),
}

/// A fake data path for tests: records what it is asked, reports the counters and new flows a
/// test gives it.
#[derive(Debug, Default)]
pub struct RecordingXdp {
    pub calls: Vec<XdpCall>,
    pub counters: BTreeMap<ServiceId, ServiceCounters>,
    pub flows: Vec<FlowEvent>,
    /// The next redirect fails with this message.
    pub fail_redirect: Option<String>,
}

impl XdpMaps for RecordingXdp {
    fn add_service(&mut self, key: ServiceKey, id: ServiceId) -> Result<(), XdpError> {
        self.calls.push(XdpCall::AddService(key, id));
        Ok(())
    }

    fn redirect(&mut self, id: ServiceId, to: &InstanceLink) -> Result<(), XdpError> {
        if let Some(m) = self.fail_redirect.take() {
            return Err(XdpError::NoSuchInterface {
                iface: to.dom_if.clone(),
                netns: m,
            });
        }
        self.calls.push(XdpCall::Redirect(id, to.clone()));
        Ok(())
    }

    fn clear_redirect(&mut self, id: ServiceId) -> Result<bool, XdpError> {
        self.calls.push(XdpCall::ClearRedirect(id));
        Ok(true)
    }

    fn counters(&self) -> Result<Vec<(ServiceId, ServiceCounters)>, XdpError> {
        Ok(self.counters.iter().map(|(k, v)| (*k, *v)).collect())
    }

    fn drain_new_flows(&mut self) -> Vec<FlowEvent> {
        std::mem::take(&mut self.flows)
    }
}
