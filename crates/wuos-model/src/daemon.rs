//! The configuration of `wuosd`, the router daemon: one set of serde structs that the daemon
//! reads ([`DaemonConfig::load`]) and the lab writes ([`DaemonConfig::to_toml`]), with typed
//! durations, sizes and addresses, and [`DaemonConfig::validate`] for what types cannot say.
//!
//! ```toml
//! router_id = "r3"
//! role = "edge"                  # edge | fog | dc | host
//! listen = "0.0.0.0:7470"        # the augmented SD-WAN protocol (neighbors)
//! admin_socket = "/run/wuos/r3.sock"   # local administration (wuos status, wuos top)
//! admin_listen = "127.0.0.1:7471"      # the same on TCP (optional, unauthenticated)
//! metrics_listen = "127.0.0.1:9470"    # Prometheus text format at /metrics
//! telemetry_interval = "1s"
//! sample_phase = "free"          # or "aligned": at multiples of the interval on the wall clock
//! link_transport = "framed"      # or "grpc": links as protocol 2.3 carried them
//! hop_limit = 2
//! data_dir = "/var/lib/wuos"
//!
//! [resources]
//! source = "cgroup"              # or "proc"
//! cgroup = "wuos/demo/r3"        # with source = "cgroup"
//!
//! [[neighbor]]
//! id = "r2"
//! address = "10.0.0.2:7470"
//! interface = "eth0"
//! ```

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Classify, ErrorClass};
use crate::ids::{RouterId, ServiceId};
use crate::topology::{Ipv4Net, Role};
use crate::units;

/// The protocol port every lab router listens on.
pub const PROTOCOL_PORT: u16 = 7470;
/// The Prometheus port, on every lab router's loopback address.
pub const METRICS_PORT: u16 = 9470;
/// The SD-WAN controller's NBI (REST) port, on the controller router's loopback.
pub const NBI_PORT: u16 = 7480;

/// A configuration that cannot be used; the message names the file, the key and the fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// The file is not TOML.
    #[error("{path}:{line}:{col}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        col: usize,
        message: String,
    },
    /// A value (or a key) is wrong; `at` is `LINE:COL: ` when known.
    #[error("{path}:{at}{key}: {problem}; fix: {fix}")]
    Invalid {
        path: PathBuf,
        at: String,
        key: String,
        problem: String,
        fix: String,
    },
    #[error("cannot write the configuration: {0}")]
    Write(String),
}

impl Classify for ConfigError {
    fn class(&self) -> ErrorClass {
        match self {
            ConfigError::Read { source, .. } if source.kind() == std::io::ErrorKind::NotFound => ErrorClass::NotFound,
            ConfigError::Read { .. } | ConfigError::Write(_) => ErrorClass::Internal,
            ConfigError::Syntax { .. } | ConfigError::Invalid { .. } => ErrorClass::BadInput,
        }
    }
}

/// Everything `wuosd` is told.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    pub router_id: RouterId,
    pub role: Role,
    /// The augmented SD-WAN protocol (Neighbor and Control services).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The address other routers reach this router's controller at (advertised); default: the
    /// listen address (which must then not be a wildcard).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_address: Option<SocketAddr>,
    /// The local administration API (a Unix socket).
    pub admin_socket: PathBuf,
    /// The administration API on TCP as well (`wuos … --address HOST:PORT`). Unauthenticated:
    /// bind it to loopback or a management network only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_listen: Option<SocketAddr>,
    /// Prometheus text format at `/metrics`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<SocketAddr>,
    /// How often the router samples itself and advertises: 10 ms to 600 s.
    #[serde(default = "default_interval", with = "units::duration")]
    pub telemetry_interval: Duration,
    /// When samples are taken: `free` (one interval after the daemon's start, so routers sample
    /// at unrelated moments) or `aligned` (at the multiples of the interval on the wall clock:
    /// routers with synchronized clocks sample together and a neighbor's frames arrive together).
    #[serde(default, skip_serializing_if = "SamplePhase::is_free")]
    pub sample_phase: SamplePhase,
    /// Hello interval: a neighbor that has sent nothing else for this long sends a keepalive.
    /// Defaults to the telemetry interval; to ten of them (at most 30 s) while ICMP echo
    /// watches the links (`link_dead_interval`), when hellos only have to catch a daemon that
    /// hangs while its kernel still answers.
    #[serde(default, with = "units::opt_duration", skip_serializing_if = "Option::is_none")]
    pub hello_interval: Option<Duration>,
    /// Links watched by ICMP echo, answered by the neighbor's kernel (wuosd's `liveness`): a
    /// neighbor that answered neither an echo nor with a frame for this long is lost at once,
    /// its link closed. It catches a cut link or a dead host without waking either daemon (the
    /// probes leave at our sample, and the replies are read at the next). Default: three
    /// telemetry intervals when the interval is at least 1 s and links are framed; otherwise
    /// off. `0s`: off (hellos alone watch the links). Needs `CAP_NET_RAW`; without it the
    /// daemon says so and uses hellos alone.
    #[serde(default, with = "units::opt_duration", skip_serializing_if = "Option::is_none")]
    pub link_dead_interval: Option<Duration>,
    /// A neighbor is lost after this many hello intervals without a word from it.
    #[serde(default = "default_dead_multiplier")]
    pub dead_multiplier: u32,
    #[serde(default = "default_hop_limit")]
    pub hop_limit: u32,
    /// A view entry is stale after this many of its origin's intervals without a refresh.
    #[serde(default = "default_stale_after")]
    pub stale_after_intervals: u32,
    /// Quiet adverts: a sample that says nothing new (only its sequence and timestamp would
    /// move) is not sent until this many intervals have passed since the last advert; 1 sends
    /// every sample (protocol 2.2 and before, whose routers age a quiet origin's entry out).
    #[serde(default = "default_quiet_intervals", skip_serializing_if = "is_default_quiet")]
    pub quiet_intervals: u32,
    /// How links to neighbors are carried: `framed` (protocol 2.4: frames straight on the
    /// TCP/TLS stream; a 2.3 neighbor is reached over gRPC) or `grpc` (as 2.3 did: neither dialled
    /// nor accepted framed; for comparisons and mixed networks).
    #[serde(default, skip_serializing_if = "LinkTransport::is_framed")]
    pub link_transport: LinkTransport,
    /// Announcement thresholds: which measured figures are announced anew.
    #[serde(default, skip_serializing_if = "AnnounceConfig::is_default")]
    pub announce: AnnounceConfig,
    /// The embedded store.
    pub data_dir: PathBuf,
    #[serde(default)]
    pub resources: ResourcesConfig,
    #[serde(default, rename = "neighbor", skip_serializing_if = "Vec::is_empty")]
    pub neighbors: Vec<NeighborConfig>,
    /// Domains (the hypervisor layer); absent: this router runs no domains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domains: Option<DomainsConfig>,
    /// The orchestrator (fog routers); absent: this router only takes intents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orchestrator: Option<OrchestratorConfig>,
    /// The data path.
    #[serde(default)]
    pub datapath: DatapathConfig,
    /// Mutual TLS between routers (`Neighbor` and `Control`); absent: plain TCP, and a warning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// The SD-WAN controller role (a designated fog or dc router); absent: this router only
    /// takes the pieces of its SD-WAN configuration from the controller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdwan_controller: Option<SdwanControllerConfig>,
    /// Path monitoring (STAMP) and SLA steering on this edge.
    #[serde(default, skip_serializing_if = "SdwanPathsConfig::is_default")]
    pub sdwan_paths: SdwanPathsConfig,
}

/// `[sdwan_paths]`: the STAMP probes of a steered class's paths and how decisions are damped
/// (docs/sdwan.md, "Path monitoring and SLA steering").
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SdwanPathsConfig {
    /// How often each path is probed: 10 ms to 60 s.
    #[serde(default = "default_probe_interval", with = "units::duration")]
    pub probe_interval: Duration,
    /// Probes kept per path (loss is counted over them): 10 to 10,000.
    #[serde(default = "default_probe_window")]
    pub window: u32,
    /// The STAMP reflector's UDP port, and the port probes go to (0: no reflector here).
    #[serde(default = "default_stamp_port")]
    pub stamp_port: u16,
    /// A path a class is not on is taken only after complying this long without a break.
    #[serde(default = "default_hold", with = "units::duration")]
    pub hold: Duration,
    /// … with every SLA limit scaled by 1 − hysteresis (0 to 0.9).
    #[serde(default = "default_hysteresis")]
    pub hysteresis: f64,
    /// Probe every tunnel on its own. By default the tunnels that cross the same underlay path
    /// (the same underlay and outer destination: one per overlay between two edges) share one
    /// probe stream, so the probes cost per pair of edges and underlay, not per overlay.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub probe_each_tunnel: bool,
}

fn default_probe_interval() -> Duration {
    Duration::from_millis(100)
}

fn default_probe_window() -> u32 {
    100
}

/// The STAMP well-known port (RFC 8762).
fn default_stamp_port() -> u16 {
    862
}

fn default_hold() -> Duration {
    Duration::from_secs(5)
}

fn default_hysteresis() -> f64 {
    0.1
}

impl Default for SdwanPathsConfig {
    fn default() -> Self {
        SdwanPathsConfig {
            probe_interval: default_probe_interval(),
            window: default_probe_window(),
            stamp_port: default_stamp_port(),
            hold: default_hold(),
            hysteresis: default_hysteresis(),
            probe_each_tunnel: false,
        }
    }
}

impl SdwanPathsConfig {
    pub fn is_default(&self) -> bool {
        *self == SdwanPathsConfig::default()
    }

    /// Refuses figures out of range: the key, the problem and the fix.
    pub fn check(&self) -> Result<(), (&'static str, String, &'static str)> {
        if !(Duration::from_millis(10)..=Duration::from_secs(60)).contains(&self.probe_interval) {
            return Err((
                "sdwan_paths.probe_interval",
                format!("{:?} is out of range", self.probe_interval),
                "use 10ms to 60s (100ms is the default)",
            ));
        }
        if !(10..=10_000).contains(&self.window) {
            return Err((
                "sdwan_paths.window",
                format!("{} is out of range", self.window),
                "use 10 to 10000 probes (100 is the default)",
            ));
        }
        if !(0.0..=0.9).contains(&self.hysteresis) {
            return Err((
                "sdwan_paths.hysteresis",
                format!("{} is out of range", self.hysteresis),
                "use 0 to 0.9 (0.1 is the default)",
            ));
        }
        Ok(())
    }
}

/// `[sdwan_controller]`: the SD-WAN's sites and the northbound interface (docs/sdwan.md).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SdwanControllerConfig {
    /// The sites, their WAN attachments and LANs (the JSON form of `wuos_sdwan::Inventory`).
    pub inventory: PathBuf,
    /// Where the NBI (REST and gRPC) listens: the router's loopback.
    pub nbi_listen: SocketAddr,
    /// A file holding the bearer token NBI requests must carry.
    pub token_file: PathBuf,
}

/// `[tls]`: this router's certificate and what it trusts (files as `wuos pki` writes them). The
/// files are read again when they change: a rotated certificate or a new CRL applies to new
/// connections without a restart, and established ones go on.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The CA certificate (PEM).
    pub ca: PathBuf,
    /// This router's certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// The CA's revocation list (PEM).
    pub crl: PathBuf,
}

/// When a router samples itself within its telemetry interval (`sample_phase`).
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SamplePhase {
    /// One interval after the previous sample, from the daemon's start.
    #[default]
    Free,
    /// At the multiples of the interval since the Unix epoch (wall clock).
    Aligned,
}

impl SamplePhase {
    fn is_free(&self) -> bool {
        *self == Self::Free
    }

    /// As written in `wuosd.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Free => "free",
            Self::Aligned => "aligned",
        }
    }
}

impl std::str::FromStr for SamplePhase {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        [Self::Free, Self::Aligned]
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("{s:?}: use \"free\" or \"aligned\""))
    }
}

/// How links to neighbors are carried (`link_transport`).
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LinkTransport {
    /// Length-prefixed frames on the stream (2.4), gRPC with a neighbor that does not answer.
    #[default]
    Framed,
    /// gRPC `Neighbor.Link` only (2.0-2.3).
    Grpc,
}

impl LinkTransport {
    fn is_framed(&self) -> bool {
        *self == Self::Framed
    }

    /// As written in `wuosd.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Framed => "framed",
            Self::Grpc => "grpc",
        }
    }
}

impl std::str::FromStr for LinkTransport {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        [Self::Framed, Self::Grpc]
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("{s:?}: use \"framed\" or \"grpc\""))
    }
}

/// `[announce]`: a measured figure is announced anew only when it moved significantly since it
/// was last announced, and every figure exactly at least every `refresh` samples
/// (docs/protocol.md, "Announcement thresholds").
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AnnounceConfig {
    /// A percentage (CPU, memory, pressure) moves by this many points: 0 to 100.
    #[serde(default = "default_pct_points")]
    pub pct_points: f64,
    /// A rate or an amount moves by this fraction of the larger value: 0 to 1.
    #[serde(default = "default_relative")]
    pub relative: f64,
    /// Every figure exactly at least every this many samples: 1 (every sample as measured, no
    /// thresholds) to 3600.
    #[serde(default = "default_refresh")]
    pub refresh: u32,
}

impl Default for AnnounceConfig {
    fn default() -> Self {
        Self {
            pct_points: default_pct_points(),
            relative: default_relative(),
            refresh: default_refresh(),
        }
    }
}

impl AnnounceConfig {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

fn default_pct_points() -> f64 {
    1.0
}
fn default_relative() -> f64 {
    0.1
}
fn default_refresh() -> u32 {
    DEFAULT_QUIET_INTERVALS
}

/// `[datapath]`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DatapathConfig {
    /// Attach the XDP classifier to the neighbor interfaces: per-service counters and the demand
    /// in our adverts (needs `[domains]`, whose catalog names the services).
    #[serde(default)]
    pub xdp: bool,
}

/// `[orchestrator]`: where services go when no rule of the policy fits, and the timers of moves.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OrchestratorConfig {
    /// The data-centre router, which always runs every service.
    pub datacenter: RouterId,
    /// A policy file applied at start (when the store holds none applied later).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PathBuf>,
    /// Consecutive samples a change must hold.
    #[serde(default = "default_confirm")]
    pub confirm_samples: u32,
    /// Share the network with other orchestrators: place and route only in this orchestrator's
    /// region (the routers nearer to it than to any other; docs/policy.md, "Regions"). Off: every
    /// router of the view, as a lone orchestrator.
    #[serde(default = "default_true")]
    pub regions: bool,
    /// How long the old instance keeps running after the routes moved.
    #[serde(default = "default_drain", with = "units::duration")]
    pub drain: Duration,
    /// How long a new instance may take to become healthy before its move is aborted (the one
    /// timeout of a start: the controller answers when the instance is ready or has failed).
    #[serde(default = "default_ready_timeout", with = "units::duration")]
    pub ready_timeout: Duration,
    /// New flows per second a service needs before it is moved (0: any demand).
    #[serde(default)]
    pub min_demand_flows: f64,
}

impl OrchestratorConfig {
    /// The defaults, with `datacenter` as the data centre.
    pub fn new(datacenter: RouterId) -> Self {
        Self {
            datacenter,
            policy: None,
            confirm_samples: default_confirm(),
            regions: true,
            drain: default_drain(),
            ready_timeout: default_ready_timeout(),
            min_demand_flows: 0.0,
        }
    }
}

/// `[domains]`: where services run, and what the routing and control domains keep for
/// themselves.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DomainsConfig {
    /// The VNF catalog directory (`*.toml`, see docs/domains.md).
    pub catalog: PathBuf,
    /// Per-domain files (logs, configs, pid files).
    pub run_dir: PathBuf,
    /// The router's network namespace file; absent: the host namespace (a real router).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router_netns: Option<PathBuf>,
    #[serde(default = "default_netns_dir")]
    pub netns_dir: PathBuf,
    /// The router's cgroup (relative to `resources.cgroup_root`); domains live below it.
    pub cgroup: String,
    /// Prefix of domain namespace names (`PREFIX.DOMAIN`).
    pub netns_prefix: String,
    /// Domain links: a /30 each from this network (a /29 or larger).
    #[serde(with = "net_string")]
    pub subnet: Ipv4Net,
    /// Cores the routing domain keeps; services get the rest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routing_cores: Vec<u32>,
    /// Memory the routing domain keeps.
    #[serde(default, with = "units::opt_bytes", skip_serializing_if = "Option::is_none")]
    pub routing_memory: Option<u64>,
    /// Run wuosd (protocol, monitor, controller, orchestrator) in a control domain of its own: a
    /// cgroup on the routing cores (when routing keeps some), weighted above the services. Off:
    /// it shares the router with its services (a lab without reservations, for comparison).
    #[serde(default = "default_true")]
    pub control_domain: bool,
    /// Memory the control domain keeps: never available to services.
    #[serde(default, with = "units::opt_bytes", skip_serializing_if = "Option::is_none")]
    pub control_memory: Option<u64>,
    /// Frozen, pre-created service domains kept ready.
    #[serde(default)]
    pub pool: u32,
    /// The program that implements `domain-init` (default: this wuosd).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_exe: Option<PathBuf>,
    /// Site values of catalog parameters, per service (`[domains.params.pabx]`,
    /// `static_users = "..."`): used by every instance started here, an explicit start's
    /// parameters winning.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<ServiceId, BTreeMap<String, String>>,
}

/// Where the monitor reads the router's figures.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// `/proc` and `/sys` (a real router).
    #[default]
    Proc,
    /// The router's cgroup (a lab router).
    Cgroup,
}

/// `[resources]`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ResourcesConfig {
    #[serde(default)]
    pub source: Source,
    /// The router's cgroup, with `source = "cgroup"` (relative to `cgroup_root`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    #[serde(default = "default_cgroup_root")]
    pub cgroup_root: PathBuf,
    #[serde(default = "default_proc_root")]
    pub proc_root: PathBuf,
    #[serde(default = "default_sys_root")]
    pub sys_root: PathBuf,
}

impl Default for ResourcesConfig {
    fn default() -> Self {
        Self {
            source: Source::Proc,
            cgroup: None,
            cgroup_root: default_cgroup_root(),
            proc_root: default_proc_root(),
            sys_root: default_sys_root(),
        }
    }
}

/// `[[neighbor]]`: a router at the far end of one of our links.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NeighborConfig {
    pub id: RouterId,
    pub address: SocketAddr,
    pub interface: String,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::UNSPECIFIED, PROTOCOL_PORT))
}
fn default_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_dead_multiplier() -> u32 {
    3
}
/// The default hello interval in telemetry intervals while echo watches the links.
const HELLOS_WHILE_WATCHED: u32 = 10;
/// The longest default hello interval while echo watches the links.
const MAX_WATCHED_HELLO: Duration = Duration::from_secs(30);
/// The shortest `link_dead_interval`.
const MIN_LINK_DEAD: Duration = Duration::from_secs(2);
fn default_hop_limit() -> u32 {
    2
}
fn default_stale_after() -> u32 {
    3
}
/// How many intervals an unchanged advert waits by default (`quiet_intervals`).
pub const DEFAULT_QUIET_INTERVALS: u32 = 100;
/// The most intervals an unchanged advert may wait (`quiet_intervals`; the protocol's bound).
pub const MAX_QUIET_INTERVALS: u32 = 100;
fn default_quiet_intervals() -> u32 {
    DEFAULT_QUIET_INTERVALS
}
fn is_default_quiet(n: &u32) -> bool {
    *n == DEFAULT_QUIET_INTERVALS
}
fn default_confirm() -> u32 {
    1
}
fn default_drain() -> Duration {
    Duration::from_secs(2)
}
fn default_ready_timeout() -> Duration {
    Duration::from_secs(20)
}
fn default_true() -> bool {
    true
}
fn default_netns_dir() -> PathBuf {
    "/run/netns".into()
}
fn default_cgroup_root() -> PathBuf {
    "/sys/fs/cgroup".into()
}
fn default_proc_root() -> PathBuf {
    "/proc".into()
}
fn default_sys_root() -> PathBuf {
    "/sys".into()
}

/// `Ipv4Net` as `"10.253.3.0/24"`.
mod net_string {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::topology::Ipv4Net;

    pub fn serialize<S: Serializer>(n: &Ipv4Net, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&n.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Ipv4Net, D::Error> {
        let s = String::deserialize(d)?;
        s.parse()
            .map_err(|e| serde::de::Error::custom(format!("{s:?} is not a network: {e}")))
    }
}

/// How to write a value of `key` correctly, for messages.
fn fix_for(key: &str) -> &'static str {
    let last = key.rsplit('.').next().unwrap_or(key);
    match last {
        "router_id" | "id" | "datacenter" => "use 1-64 letters, digits, '.', '_' or '-'",
        "listen" | "address" | "control_address" => "use an address:port, e.g. \"10.0.0.1:7470\"",
        "metrics_listen" => "use an address:port, e.g. \"127.0.0.1:9470\"",
        "telemetry_interval" | "hello_interval" | "link_dead_interval" | "drain" | "ready_timeout" => {
            "use a duration, e.g. \"1s\" or \"100ms\""
        }
        "routing_memory" | "control_memory" => "use a size, e.g. \"128MiB\"",
        "role" => "use edge, fog, dc or host",
        "sample_phase" => "use \"free\" or \"aligned\"",
        "link_transport" => "use \"framed\" or \"grpc\"",
        "source" => "use \"proc\" (a real machine) or \"cgroup\" (a lab router)",
        "subnet" => "use a /29 or larger, e.g. \"10.253.3.0/24\"",
        _ if key.starts_with("domains.params") => "name catalog services, e.g. [domains.params.pabx]",
        _ => "see the keys of wuosd.toml in README.md (\"The router daemon\")",
    }
}

impl DaemonConfig {
    /// Reads, parses and validates `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let cfg = Self::parse(&text, path)?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    /// Parses `text` (only parses: see [`DaemonConfig::validate`]); `path` is for messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        if let Err(e) = toml::from_str::<toml::Table>(text) {
            let (line, col) = e.span().map_or((1, 1), |s| crate::file::line_col(text, s.start));
            return Err(ConfigError::Syntax {
                path: path.to_owned(),
                line,
                col,
                message: crate::file::one_line(e.message()),
            });
        }
        toml::from_str(text).map_err(|e| {
            let offset = e.span().map(|s| s.start);
            let message = crate::file::one_line(e.message());
            // An unknown key names itself in backticks; a bad value sits on its key's line.
            let name = message
                .strip_prefix("unknown field ")
                .and_then(|_| crate::file::backticked(&message).into_iter().next())
                .or_else(|| offset.and_then(|o| crate::file::key_on_line(text, o)))
                .unwrap_or_default();
            let key = crate::file::key_path(text, offset, &name);
            let at = offset.map_or(String::new(), |o| {
                let (l, c) = crate::file::line_col(text, o);
                format!("{l}:{c}: ")
            });
            ConfigError::Invalid {
                path: path.to_owned(),
                at,
                fix: fix_for(&key).to_string(),
                key,
                problem: message,
            }
        })
    }

    /// The configuration as TOML, as [`DaemonConfig::parse`] reads it back.
    pub fn to_toml(&self) -> Result<String, ConfigError> {
        toml::to_string(self).map_err(|e| ConfigError::Write(e.to_string()))
    }

    /// What our adverts give as the controller's address: `control_address`, or `listen` unless
    /// it is a wildcard (then none: no orchestrator can reach us).
    pub fn advertised_control_address(&self) -> Option<SocketAddr> {
        self.control_address
            .or(Some(self.listen).filter(|l| !l.ip().is_unspecified()))
    }

    pub fn hello_interval(&self) -> Duration {
        self.hello_interval
            .unwrap_or_else(|| default_hello_interval(self.telemetry_interval, self.link_dead_interval().is_some()))
    }

    /// How long a neighbor may leave an echo unanswered before its link is closed; `None`: echo
    /// does not watch the links (only hellos do).
    pub fn link_dead_interval(&self) -> Option<Duration> {
        match self.link_dead_interval {
            Some(d) => Some(d).filter(|d| !d.is_zero()),
            None => default_link_dead_interval(self.telemetry_interval, self.link_transport),
        }
    }

    /// How long a silent neighbor takes to be lost: by echo when it watches the links and that
    /// is sooner, else by the hellos.
    pub fn failure_detection(&self) -> Duration {
        let hellos = self.dead_interval();
        self.link_dead_interval().map_or(hellos, |l| l.min(hellos))
    }

    /// How long a neighbor may stay silent before it is lost.
    pub fn dead_interval(&self) -> Duration {
        self.hello_interval() * self.dead_multiplier
    }

    /// Checks what the types cannot say; the error names the key and the fix.
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let bad = |key: &str, problem: String, fix: &str| ConfigError::Invalid {
            path: path.to_owned(),
            at: String::new(),
            key: key.into(),
            problem,
            fix: fix.into(),
        };
        let intervals = Duration::from_millis(10)..=Duration::from_secs(600);
        for (key, d) in [
            ("telemetry_interval", Some(self.telemetry_interval)),
            ("hello_interval", self.hello_interval),
        ] {
            if let Some(d) = d.filter(|d| !intervals.contains(d)) {
                return Err(bad(key, format!("{d:?} is out of range"), "use 10ms to 600s"));
            }
        }
        if let Some(d) = self.link_dead_interval {
            check_link_dead_interval(d, self.link_transport)
                .map_err(|(problem, fix)| bad("link_dead_interval", problem, fix))?;
        }
        if let Some(o) = &self.orchestrator {
            if o.datacenter == self.router_id {
                return Err(bad(
                    "orchestrator.datacenter",
                    format!("{} is this router", o.datacenter),
                    "name the data-centre router",
                ));
            }
            if !(1..=1000).contains(&o.confirm_samples) {
                return Err(bad(
                    "orchestrator.confirm_samples",
                    format!("{} is out of range", o.confirm_samples),
                    "use 1 to 1000",
                ));
            }
            if o.ready_timeout.is_zero() {
                return Err(bad(
                    "orchestrator.ready_timeout",
                    "is zero".into(),
                    "give a new instance time to start, e.g. \"20s\"",
                ));
            }
            if !(o.min_demand_flows.is_finite() && o.min_demand_flows >= 0.0) {
                return Err(bad(
                    "orchestrator.min_demand_flows",
                    format!("{} is not a rate", o.min_demand_flows),
                    "use 0 or more new flows per second",
                ));
            }
        }
        if let Err((key, problem, fix)) = self.sdwan_paths.check() {
            return Err(bad(key, problem, fix));
        }
        if !(1..=8).contains(&self.hop_limit) {
            return Err(bad(
                "hop_limit",
                format!("{} is out of range", self.hop_limit),
                "use 1 to 8 (2 is the default)",
            ));
        }
        if !(2..=100).contains(&self.dead_multiplier) {
            return Err(bad(
                "dead_multiplier",
                format!("{} is out of range", self.dead_multiplier),
                "use 2 to 100 (3 is the default)",
            ));
        }
        let a = &self.announce;
        if !(0.0..=100.0).contains(&a.pct_points) {
            return Err(bad(
                "announce.pct_points",
                format!("{} is out of range", a.pct_points),
                "use 0 to 100 points",
            ));
        }
        if !(0.0..=1.0).contains(&a.relative) {
            return Err(bad(
                "announce.relative",
                format!("{} is out of range", a.relative),
                "use a fraction from 0 to 1, e.g. 0.1",
            ));
        }
        if !(1..=3600).contains(&a.refresh) {
            return Err(bad(
                "announce.refresh",
                format!("{} is out of range", a.refresh),
                "use 1 (no thresholds) to 3600 samples",
            ));
        }
        if !(1..=100).contains(&self.stale_after_intervals) {
            return Err(bad(
                "stale_after_intervals",
                format!("{} is out of range", self.stale_after_intervals),
                "use 1 to 100 (3 is the default)",
            ));
        }
        if !(1..=MAX_QUIET_INTERVALS).contains(&self.quiet_intervals) {
            return Err(bad(
                "quiet_intervals",
                format!("{} is out of range", self.quiet_intervals),
                "use 1 (every sample is sent) to 100 (10 is the default)",
            ));
        }
        let relative = |c: &str| !c.is_empty() && !c.starts_with('/') && !c.contains("..");
        match (self.resources.source, &self.resources.cgroup) {
            (Source::Proc, _) => {}
            (Source::Cgroup, Some(c)) if relative(c) => {}
            (Source::Cgroup, _) => {
                return Err(bad(
                    "resources.cgroup",
                    "source = \"cgroup\" needs the router's cgroup".into(),
                    "set cgroup = \"wuos/LAB/ROUTER\" (relative to cgroup_root)",
                ));
            }
        }
        if let Some(d) = &self.domains {
            if d.subnet.prefix_len > 29 {
                return Err(bad(
                    "domains.subnet",
                    format!("{} has no room for domains", d.subnet),
                    fix_for("subnet"),
                ));
            }
            if !relative(&d.cgroup) {
                return Err(bad(
                    "domains.cgroup",
                    format!("{:?} is not a relative cgroup path", d.cgroup),
                    "e.g. \"wuos/LAB/ROUTER\"",
                ));
            }
            for (key, m) in [
                ("domains.routing_memory", d.routing_memory),
                ("domains.control_memory", d.control_memory),
            ] {
                if let Some(m) = m.filter(|&m| m < crate::topology::MIN_MEMORY) {
                    return Err(bad(
                        key,
                        format!("{} is less than 16MiB", units::format_bytes(m)),
                        "use at least \"16MiB\"",
                    ));
                }
            }
            if d.pool > 64 {
                return Err(bad("domains.pool", format!("{} is too many", d.pool), "use 0 to 64"));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for (i, n) in self.neighbors.iter().enumerate() {
            let key = format!("neighbor[{i}]");
            if n.id == self.router_id {
                return Err(bad(
                    &format!("{key}.id"),
                    format!("{} is this router", n.id),
                    "use another router's id",
                ));
            }
            if !seen.insert(&n.id) {
                return Err(bad(
                    &format!("{key}.id"),
                    format!("neighbor {} is listed twice", n.id),
                    "list each neighbor once",
                ));
            }
            if n.address.ip().is_unspecified() || n.address.port() == 0 {
                return Err(bad(
                    &format!("{key}.address"),
                    format!("{} is not a neighbor's address", n.address),
                    fix_for("address"),
                ));
            }
        }
        Ok(())
    }
}

/// The hello interval when none is configured: the telemetry interval, or ten of them (at most
/// 30 s) when echo `watched` the links.
pub fn default_hello_interval(telemetry: Duration, watched: bool) -> Duration {
    if watched {
        (telemetry * HELLOS_WHILE_WATCHED).min(MAX_WATCHED_HELLO).max(telemetry)
    } else {
        telemetry
    }
}

/// The `link_dead_interval` when none is configured: three telemetry intervals for framed
/// links when the interval is at least 1 s, else none (echo is read at each sample, so it
/// needs a few samples per dead interval; below 1 s the hellos are cheap enough per second).
pub fn default_link_dead_interval(telemetry: Duration, transport: LinkTransport) -> Option<Duration> {
    (transport.is_framed() && telemetry >= Duration::from_secs(1)).then(|| telemetry * default_dead_multiplier())
}

/// Checks a `link_dead_interval` for links carried by `transport`: the problem and its fix.
pub fn check_link_dead_interval(d: Duration, transport: LinkTransport) -> Result<(), (String, &'static str)> {
    if d.is_zero() {
        return Ok(());
    }
    if !(MIN_LINK_DEAD..=Duration::from_secs(600)).contains(&d) {
        return Err((format!("{d:?} is out of range"), "use 2s to 600s, or 0s for off"));
    }
    if !transport.is_framed() {
        return Err((
            "is set, but the links are gRPC".into(),
            "echo watches framed links only: leave it unset, or use framed links",
        ));
    }
    Ok(())
}

/// The IPv4 address of `a`, if it is one.
pub fn ipv4_of(a: &SocketAddr) -> Option<Ipv4Addr> {
    match a.ip() {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
router_id = "r3"
role = "edge"
admin_socket = "/tmp/r3.sock"
data_dir = "/tmp/r3"
telemetry_interval = "100ms"
[resources]
source = "cgroup"
cgroup = "wuos/demo/r3"
[[neighbor]]
id = "r2"
address = "10.0.0.2:7470"
interface = "eth0"
"#;

    fn check(text: &str) -> Result<DaemonConfig, ConfigError> {
        let p = Path::new("wuosd.toml");
        let c = DaemonConfig::parse(text, p)?;
        c.validate(p)?;
        Ok(c)
    }

    #[test]
    fn a_good_config_loads_with_defaults() {
        let c = check(GOOD).unwrap();
        assert_eq!(c.telemetry_interval, Duration::from_millis(100));
        assert_eq!(c.hello_interval(), Duration::from_millis(100));
        assert_eq!(c.dead_interval(), Duration::from_millis(300));
        assert_eq!(c.hop_limit, 2);
        assert_eq!(c.listen, "0.0.0.0:7470".parse().unwrap());
        assert_eq!(c.advertised_control_address(), None, "a wildcard is not advertised");
        assert_eq!(c.neighbors[0].id, "r2");
    }

    #[test]
    fn what_is_written_reads_back_the_same() {
        let mut c = check(GOOD).unwrap();
        c.domains = Some(DomainsConfig {
            catalog: "/cat".into(),
            run_dir: "/run/d".into(),
            router_netns: Some("/run/netns/x".into()),
            netns_dir: default_netns_dir(),
            cgroup: "wuos/l/r3".into(),
            netns_prefix: "wuos.l.r3".into(),
            subnet: "10.253.0.0/26".parse().unwrap(),
            routing_cores: vec![0],
            routing_memory: Some(64 << 20),
            control_domain: true,
            control_memory: Some(32 << 20),
            pool: 2,
            init_exe: None,
            params: [(
                ServiceId::new("pabx").unwrap(),
                [("static_users".to_string(), "a b \"c\"".to_string())].into(),
            )]
            .into(),
        });
        c.orchestrator = Some(OrchestratorConfig {
            datacenter: RouterId::new("dc").unwrap(),
            policy: None,
            confirm_samples: 2,
            regions: false,
            drain: Duration::from_millis(1500),
            ready_timeout: Duration::from_secs(20),
            min_demand_flows: 0.5,
        });
        let text = c.to_toml().unwrap();
        assert!(text.contains("routing_memory = \"64MiB\""), "{text}");
        assert!(text.contains("drain = \"1500ms\""), "{text}");
        let back = check(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(back, c);
    }

    #[test]
    fn unknown_keys_are_refused_with_their_location() {
        let e = check(&GOOD.replace("role = \"edge\"", "role = \"edge\"\nspeed = 3")).unwrap_err();
        let s = e.to_string();
        assert!(s.contains("wuosd.toml:4:1") && s.contains("speed"), "{s}");
        assert_eq!(e.class(), ErrorClass::BadInput);
    }

    #[test]
    fn bad_values_name_key_and_fix() {
        let cases = [
            (GOOD.replace("\"r3\"", "\"r 3\""), "router_id"),
            (GOOD.replace("\"100ms\"", "\"fast\""), "telemetry_interval"),
            (GOOD.replace("\"100ms\"", "\"1ms\""), "telemetry_interval"),
            (GOOD.replace("cgroup = \"wuos/demo/r3\"", ""), "resources.cgroup"),
            (
                GOOD.replace("source = \"cgroup\"", "source = \"magic\""),
                "resources.source",
            ),
            (GOOD.replace("10.0.0.2:7470", "10.0.0.2"), "neighbor[0].address"),
            (GOOD.replace("id = \"r2\"", "id = \"r3\""), "neighbor[0].id"),
            (format!("hop_limit = 9\n{GOOD}"), "hop_limit"),
            (format!("link_dead_interval = \"1s\"\n{GOOD}"), "link_dead_interval"),
            (
                format!("link_dead_interval = \"3s\"\nlink_transport = \"grpc\"\n{GOOD}"),
                "link_dead_interval",
            ),
        ];
        for (text, key) in cases {
            let e = check(&text).expect_err(key).to_string();
            assert!(
                e.contains(key) && e.contains("fix:"),
                "expected an error about {key}, got: {e}"
            );
        }
    }

    #[test]
    fn echo_watches_framed_links_at_intervals_of_a_second_or_more() {
        let s = Duration::from_secs;
        let mut c = check(GOOD).unwrap();
        // 100 ms: hellos watch the links.
        assert_eq!(c.link_dead_interval(), None);
        assert_eq!(c.failure_detection(), Duration::from_millis(300));
        c.telemetry_interval = s(1);
        assert_eq!(c.link_dead_interval(), Some(s(3)));
        assert_eq!(c.hello_interval(), s(10));
        assert_eq!(c.dead_interval(), s(30));
        assert_eq!(c.failure_detection(), s(3), "echo sees a silent link first");
        c.telemetry_interval = s(5);
        assert_eq!((c.link_dead_interval(), c.hello_interval()), (Some(s(15)), s(30)));
        c.hello_interval = Some(s(2));
        assert_eq!(c.hello_interval(), s(2), "an explicit hello interval wins");
        assert_eq!(c.failure_detection(), s(6), "three 2-s hellos come before 15 s");
        c.hello_interval = None;
        c.link_dead_interval = Some(Duration::ZERO);
        assert_eq!((c.link_dead_interval(), c.hello_interval()), (None, s(5)), "0s: off");
        c.link_dead_interval = None;
        c.link_transport = LinkTransport::Grpc;
        assert_eq!(c.link_dead_interval(), None, "gRPC links are not watched");
    }
}
