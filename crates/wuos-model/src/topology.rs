//! The topology: nodes, links between them, their impairments and the
//! address pools, plus the checks every topology must pass.
//!
//! [`Topology::validate`] runs the same checks as the TOML loader in
//! [`crate::file`]; errors carry a key path such as `link[2].b` (0-based
//! indices into `nodes` / `links`) but no line or column.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::units::{self, UnitError};

/// Longest allowed node name: names become part of Linux namespace, cgroup
/// and interface-related names.
pub const MAX_NODE_NAME_LEN: usize = 12;
/// Smallest memory limit a node may have.
pub const MIN_MEMORY: u64 = 16 << 20;
/// Smallest allowed link MTU.
pub const MIN_MTU: u32 = 576;
/// Largest allowed link MTU.
pub const MAX_MTU: u32 = 9000;
/// Reserved for service VIPs; no pool may overlap it.
pub const SERVICE_VIP_POOL: Ipv4Net = Ipv4Net {
    addr: Ipv4Addr::new(10, 255, 0, 0),
    prefix_len: 16,
};

/// What a node is for; decides how tools draw and place it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Edge router, close to users.
    Edge,
    /// Fog router, aggregating edge routers.
    Fog,
    /// Data-centre router.
    Dc,
    /// An end host.
    Host,
}

impl Role {
    /// All roles, in documentation order.
    pub const ALL: [Role; 4] = [Role::Edge, Role::Fog, Role::Dc, Role::Host];

    /// The lowercase name used in files and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Edge => "edge",
            Role::Fog => "fog",
            Role::Dc => "dc",
            Role::Host => "host",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = TopologyErrorKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| TopologyErrorKind::BadRole {
                value: s.to_string(),
                suggestion: {
                    let lower = s.to_ascii_lowercase();
                    let names = Role::ALL.map(Role::as_str);
                    names
                        .iter()
                        .find(|r| **r == lower)
                        .copied()
                        .or_else(|| closest(&lower, names.into_iter()))
                        .map(str::to_string)
                },
            })
    }
}

/// A router or host.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// `[a-z0-9][a-z0-9_-]*`, at most [`MAX_NODE_NAME_LEN`] characters.
    pub name: String,
    /// What the node is for.
    pub role: Role,
    /// CPU limit in CPUs (e.g. 0.5); `None` = unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    /// Memory limit in bytes, at least [`MIN_MEMORY`]; `None` = unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<u64>,
    /// The WAN underlay whose provider network this router belongs to; its links are that
    /// underlay's (see [`Topology::link_underlay`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub underlay: Option<String>,
}

impl Node {
    /// A node with no limits and no underlay.
    pub fn new(name: impl Into<String>, role: Role) -> Node {
        Node {
            name: name.into(),
            role,
            cpus: None,
            memory: None,
            underlay: None,
        }
    }
}

/// Link shaping and impairment; every field is optional (`None` = not applied).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LinkParams {
    /// Rate limit in bits per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_bps: Option<u64>,
    /// One-way delay; serialized as a string such as `"20ms"`.
    #[serde(default, with = "units::opt_duration", skip_serializing_if = "Option::is_none")]
    pub delay: Option<Duration>,
    /// Delay jitter; must not exceed `delay`. Serialized like `delay`.
    #[serde(default, with = "units::opt_duration", skip_serializing_if = "Option::is_none")]
    pub jitter: Option<Duration>,
    /// Random loss in percent (0..=100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_pct: Option<f64>,
    /// Interface MTU on both ends, [`MIN_MTU`]..=[`MAX_MTU`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
}

impl LinkParams {
    /// Whether delay, jitter or loss is set to something non-zero (i.e. the
    /// link needs netem rather than only a rate limiter).
    pub fn needs_impairment(&self) -> bool {
        self.delay.is_some_and(|d| !d.is_zero())
            || self.jitter.is_some_and(|d| !d.is_zero())
            || self.loss_pct.is_some_and(|l| l != 0.0)
    }

    /// Overrides the fields that `other` sets.
    pub fn merge(&mut self, other: &LinkParams) {
        self.rate_bps = other.rate_bps.or(self.rate_bps);
        self.delay = other.delay.or(self.delay);
        self.jitter = other.jitter.or(self.jitter);
        self.loss_pct = other.loss_pct.or(self.loss_pct);
        self.mtu = other.mtu.or(self.mtu);
    }
}

/// A point-to-point link between nodes `a` and `b` (by name).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Link {
    /// One end.
    pub a: String,
    /// The other end.
    pub b: String,
    /// Shaping and impairment, already merged with any file defaults.
    #[serde(default)]
    pub params: LinkParams,
    /// The WAN underlay this link belongs to (`"mpls"`, `"inet"`): SD-WAN tunnels over an
    /// underlay start and end on addresses of its links, and those addresses are routed over its
    /// links only. See [`underlay_name_problem`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub underlay: Option<String>,
}

impl Link {
    /// An unlabelled link with default parameters.
    pub fn new(a: impl Into<String>, b: impl Into<String>) -> Link {
        Link {
            a: a.into(),
            b: b.into(),
            params: LinkParams::default(),
            underlay: None,
        }
    }
}

/// Longest underlay name: it is part of tunnel interface names (`wo1000-inet`).
pub const MAX_UNDERLAY_NAME_LEN: usize = 8;

/// Why `name` cannot name an underlay (`[a-z][a-z0-9]*`, at most [`MAX_UNDERLAY_NAME_LEN`]).
pub fn underlay_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("it is empty")
    } else if name.len() > MAX_UNDERLAY_NAME_LEN {
        Some("it is longer than 8 characters")
    } else if !name.as_bytes()[0].is_ascii_lowercase() {
        Some("it must start with a lowercase letter")
    } else if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()) {
        Some("only lowercase letters and digits are allowed")
    } else {
        None
    }
}

/// An IPv4 network such as `10.0.0.0/16` (no host bits set).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ipv4Net {
    /// The network address.
    pub addr: Ipv4Addr,
    /// Prefix length, 0..=32.
    pub prefix_len: u8,
}

impl Ipv4Net {
    /// Checks that `prefix_len <= 32` and that no host bits are set.
    pub fn new(addr: Ipv4Addr, prefix_len: u8) -> Result<Self, TopologyErrorKind> {
        let net = Ipv4Net { addr, prefix_len };
        net.check()?;
        Ok(net)
    }

    fn check(&self) -> Result<(), TopologyErrorKind> {
        let bad = |reason: &str| TopologyErrorKind::BadNet {
            value: format!("{}/{}", self.addr, self.prefix_len),
            reason: reason.to_string(),
        };
        if self.prefix_len > 32 {
            return Err(bad("the prefix length is larger than 32"));
        }
        if u32::from(self.addr) & !self.mask() != 0 {
            return Err(bad("host bits are set after the prefix"));
        }
        Ok(())
    }

    /// The netmask as a number, e.g. `0xffff_0000` for /16.
    pub fn mask(&self) -> u32 {
        u32::MAX
            .checked_shl(32 - u32::from(self.prefix_len.min(32)))
            .unwrap_or(0)
    }

    /// Number of addresses, e.g. 65536 for /16.
    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix_len.min(32)))
    }

    /// Whether `ip` lies inside this network.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr) & self.mask()
    }

    /// Whether the two networks share any address.
    pub fn overlaps(&self, other: &Ipv4Net) -> bool {
        self.contains(other.addr) || other.contains(self.addr)
    }

    /// The `n`-th address of the network (0 = the network address), if inside it.
    pub fn nth(&self, n: u64) -> Option<Ipv4Addr> {
        if n >= self.size() {
            return None;
        }
        let base = u64::from(u32::from(self.addr) & self.mask());
        u32::try_from(base + n).ok().map(Ipv4Addr::from)
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl FromStr for Ipv4Net {
    type Err = TopologyErrorKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason: &str| TopologyErrorKind::BadNet {
            value: s.to_string(),
            reason: reason.to_string(),
        };
        let (addr, len) = s
            .trim()
            .split_once('/')
            .ok_or_else(|| bad("the /prefix length is missing"))?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad("not an IPv4 address"))?;
        if len.is_empty() || len.len() > 2 || !len.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("the prefix length is not a number from 0 to 32"));
        }
        let len: u8 = len.parse().map_err(|_| bad("the prefix length is not a number"))?;
        Ipv4Net::new(addr, len).map_err(|e| match e {
            TopologyErrorKind::BadNet { reason, .. } => TopologyErrorKind::BadNet {
                value: s.to_string(),
                reason,
            },
            other => other,
        })
    }
}

/// Address pools that [`crate::plan::address_plan`] carves addresses from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pools {
    /// Point-to-point link subnets come from here.
    pub links: Ipv4Net,
    /// Size of each link subnet: 31 (default) or 30.
    pub link_prefix_len: u8,
    /// Node `i` gets loopback `loopbacks.addr + i + 1` (a /32).
    pub loopbacks: Ipv4Net,
}

impl Default for Pools {
    /// Links from 10.0.0.0/16 in /31s, loopbacks from 10.254.0.0/16.
    fn default() -> Self {
        Pools {
            links: Ipv4Net {
                addr: Ipv4Addr::new(10, 0, 0, 0),
                prefix_len: 16,
            },
            link_prefix_len: 31,
            loopbacks: Ipv4Net {
                addr: Ipv4Addr::new(10, 254, 0, 0),
                prefix_len: 16,
            },
        }
    }
}

impl Pools {
    /// How many link subnets fit in `links`.
    pub fn link_capacity(&self) -> u64 {
        if !(self.link_prefix_len == 30 || self.link_prefix_len == 31) || self.link_prefix_len < self.links.prefix_len {
            return 0;
        }
        1u64 << (self.link_prefix_len - self.links.prefix_len)
    }

    /// How many node loopbacks fit in `loopbacks` (its first address is not used).
    pub fn loopback_capacity(&self) -> u64 {
        self.loopbacks.size() - 1
    }
}

/// A whole emulated network.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Topology {
    /// Optional label, e.g. `"grid-3x3"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Nodes; their index is used throughout (addressing, routes).
    pub nodes: Vec<Node>,
    /// Links; their index is used throughout (addressing, routes).
    pub links: Vec<Link>,
    /// Address pools.
    #[serde(default)]
    pub pools: Pools,
}

impl Topology {
    /// Index of the node called `name`.
    pub fn node_index(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// Runs every check the TOML loader runs (except those about the file's
    /// syntax, keys and units). Errors have a key such as `link[2].b` but no
    /// line or column; the "file" in the message is `<topology>` or the
    /// topology's name.
    pub fn validate(&self) -> Result<(), TopologyError> {
        check(self).map_err(|(anchor, kind)| {
            let file = match &self.name {
                Some(n) => format!("<topology {n}>"),
                None => "<topology>".to_string(),
            };
            TopologyError::new(file, kind).with_key(anchor.key())
        })
    }

    /// For every node, its `(neighbour node, link)` pairs in link order.
    /// Links naming unknown nodes are skipped.
    pub fn neighbors(&self) -> Vec<Vec<(usize, usize)>> {
        let index = self.name_map();
        let mut adj = vec![Vec::new(); self.nodes.len()];
        for (i, l) in self.links.iter().enumerate() {
            if let (Some(&a), Some(&b)) = (index.get(l.a.as_str()), index.get(l.b.as_str())) {
                adj[a].push((b, i));
                if a != b {
                    adj[b].push((a, i));
                }
            }
        }
        adj
    }

    /// Node name → index (first occurrence wins).
    pub(crate) fn name_map(&self) -> HashMap<&str, usize> {
        let mut m = HashMap::with_capacity(self.nodes.len());
        for (i, n) in self.nodes.iter().enumerate() {
            m.entry(n.name.as_str()).or_insert(i);
        }
        m
    }

    /// The underlay link `l` belongs to: its own label, else that of a provider router at
    /// either end (a's first).
    pub fn link_underlay(&self, l: usize) -> Option<&str> {
        let link = self.links.get(l)?;
        if let Some(u) = &link.underlay {
            return Some(u);
        }
        let index = |name: &str| self.nodes.iter().find(|n| n.name == name);
        [&link.a, &link.b]
            .into_iter()
            .find_map(|end| index(end).and_then(|n| n.underlay.as_deref()))
    }

    /// `(a, b)` node indices of every link, `None` where a name is unknown.
    pub fn link_ends(&self) -> Vec<Option<(usize, usize)>> {
        let index = self.name_map();
        self.links
            .iter()
            .map(|l| Some((*index.get(l.a.as_str())?, *index.get(l.b.as_str())?)))
            .collect()
    }
}

/// What is wrong with a topology. `Display` is `WHAT IS WRONG; fix: HOW TO FIX`.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum TopologyErrorKind {
    /// The file is not valid TOML.
    #[error("{message}; fix: correct the TOML syntax at this position")]
    Syntax {
        /// The TOML parser's message.
        message: String,
    },
    /// A key that the format does not know.
    #[error(
        "unknown key \"{key}\"; fix: {}remove it (allowed here: {})",
        suggestion.as_ref().map(|s| format!("did you mean \"{s}\"? otherwise ")).unwrap_or_default(),
        if expected.is_empty() { "nothing".to_string() } else { expected.join(", ") }
    )]
    UnknownKey {
        /// The unknown key.
        key: String,
        /// The keys allowed in that table.
        expected: Vec<String>,
        /// The closest allowed key, if any is close.
        suggestion: Option<String>,
    },
    /// A required key is absent.
    #[error("missing required key \"{key}\"; fix: add `{key} = ...` to this table")]
    MissingKey {
        /// The missing key.
        key: String,
    },
    /// A value of the wrong type (e.g. a number where a string is expected).
    #[error("{message}; fix: change the value to the expected type (see docs/topology.md)")]
    Invalid {
        /// The deserializer's message.
        message: String,
    },
    /// The file could not be read.
    #[error("cannot read the file: {message}; fix: check the path and its permissions")]
    Io {
        /// The OS error.
        message: String,
    },
    /// No nodes at all.
    #[error("the topology has no nodes; fix: add at least one [[node]] table")]
    Empty,
    /// A node name breaks the naming rule.
    #[error(
        "bad node name \"{name}\": {reason}; fix: use 1 to 12 characters from a-z, 0-9, '-' and \
         '_', starting with a letter or digit"
    )]
    BadNodeName {
        /// The name.
        name: String,
        /// Which rule it breaks.
        reason: String,
    },
    /// Two nodes share a name.
    #[error("duplicate node name \"{name}\" (already used by node[{first}]); fix: rename one of them")]
    DuplicateNode {
        /// The name.
        name: String,
        /// Index of the first node with that name.
        first: usize,
    },
    /// Not one of edge, fog, dc, host.
    #[error(
        "bad role \"{value}\"; fix: {}use edge, fog, dc or host",
        suggestion.as_ref().map(|s| format!("did you mean \"{s}\"? ")).unwrap_or_default()
    )]
    BadRole {
        /// The value given.
        value: String,
        /// The closest role, if any is close.
        suggestion: Option<String>,
    },
    /// `cpus` not a positive finite number.
    #[error("bad cpus {value}: it must be greater than 0; fix: use e.g. 0.5 or 2, or remove the key")]
    BadCpus {
        /// The value given.
        value: f64,
    },
    /// `memory` below [`MIN_MEMORY`].
    #[error("memory {} is below the 16MiB minimum; fix: use at least \"16MiB\", or remove the key", units::format_bytes(*bytes))]
    MemoryTooSmall {
        /// The value given, in bytes.
        bytes: u64,
    },
    /// A link names a node that does not exist.
    #[error(
        "link refers to unknown node \"{name}\"; fix: {}",
        match suggestion {
            Some(s) => format!("did you mean \"{s}\"?"),
            None => "use the name of a [[node]], or add a node with this name".to_string(),
        }
    )]
    UnknownNode {
        /// The unknown name.
        name: String,
        /// The closest existing name within edit distance 2.
        suggestion: Option<String>,
    },
    /// `a == b`.
    #[error("link connects node \"{name}\" to itself; fix: make a and b name two different nodes")]
    SelfLoop {
        /// The node.
        name: String,
    },
    /// A second link between the same two nodes.
    #[error(
        "duplicate link between \"{a}\" and \"{b}\" (already linked by link[{first}]); fix: remove \
         one of them, parallel links are not supported"
    )]
    DuplicateLink {
        /// One end.
        a: String,
        /// The other end.
        b: String,
        /// Index of the first link between them.
        first: usize,
    },
    /// A rate, duration, size or percentage that does not parse.
    #[error("bad {} \"{}\"; fix: {}", .0.what(), .0.value(), .0.hint())]
    Unit(UnitError),
    /// `rate` of zero.
    #[error("rate 0 would block the link; fix: use a positive rate such as \"10mbit\", or remove the key for no limit")]
    ZeroRate,
    /// `loss` outside 0..=100.
    #[error("loss {value}% is outside 0..=100; fix: use a percentage such as \"0.5%\"")]
    BadLoss {
        /// The value given, in percent.
        value: f64,
    },
    /// `jitter` larger than `delay`.
    #[error(
        "jitter {} is larger than delay {}; fix: set delay to at least the jitter, or lower the jitter",
        units::format_duration(*jitter),
        units::format_duration(*delay)
    )]
    JitterExceedsDelay {
        /// The jitter.
        jitter: Duration,
        /// The delay (zero when unset).
        delay: Duration,
    },
    /// An underlay label that cannot be one.
    #[error(
        "bad underlay name \"{name}\": {reason}; fix: use a short lowercase name such as \"mpls\", \"inet\" or \"lte\""
    )]
    BadUnderlay {
        /// The label given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `mtu` outside [`MIN_MTU`]..=[`MAX_MTU`].
    #[error("mtu {mtu} is outside 576..=9000; fix: use a value from 576 to 9000 (1500 is the Ethernet default)")]
    BadMtu {
        /// The value given.
        mtu: i64,
    },
    /// Not a valid IPv4 network.
    #[error(
        "bad network \"{value}\": {reason}; fix: write ADDRESS/LENGTH with no host bits set \
         (e.g. \"10.0.0.0/16\")"
    )]
    BadNet {
        /// The value given.
        value: String,
        /// Why it is bad.
        reason: String,
    },
    /// `link_prefix` other than 30 or 31.
    #[error("link_prefix {value} is not supported; fix: use 31 (the default) or 30")]
    BadLinkPrefix {
        /// The value given.
        value: i64,
    },
    /// Not enough addresses.
    #[error(
        "pool {net} has room for {capacity} {what} but the topology needs {needed}; fix: use a \
         larger pool (a shorter prefix length)"
    )]
    PoolTooSmall {
        /// `"links"` or `"loopbacks"`.
        what: &'static str,
        /// The pool.
        net: Ipv4Net,
        /// How many are needed.
        needed: u64,
        /// How many fit.
        capacity: u64,
    },
    /// The link and loopback pools share addresses.
    #[error("pools {a} and {b} overlap; fix: choose two disjoint pools")]
    PoolOverlap {
        /// The link pool.
        a: Ipv4Net,
        /// The loopback pool.
        b: Ipv4Net,
    },
    /// A pool overlaps [`SERVICE_VIP_POOL`].
    #[error("pool {net} overlaps 10.255.0.0/16, which is reserved for service addresses; fix: choose another range")]
    PoolReserved {
        /// The pool.
        net: Ipv4Net,
    },
    /// A node that cannot be reached from the first node.
    #[error(
        "node \"{name}\" is not connected to \"{root}\" (unreachable: {}); fix: add links so every \
         node is reachable from every other",
        list_names(unreachable)
    )]
    Unreachable {
        /// The first unreachable node.
        name: String,
        /// The first node of the topology.
        root: String,
        /// Every unreachable node.
        unreachable: Vec<String>,
    },
}

fn list_names(names: &[String]) -> String {
    const SHOW: usize = 10;
    let mut s = names
        .iter()
        .take(SHOW)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOW {
        s.push_str(&format!(" and {} more", names.len() - SHOW));
    }
    s
}

/// A [`TopologyErrorKind`] with where it happened.
///
/// `Display` is one line: `FILE:LINE:COL: KEY: WHAT IS WRONG; fix: HOW TO FIX`
/// (1-based line and column); without a location `FILE: KEY: ...`; without a
/// key the `KEY: ` part is left out.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub struct TopologyError {
    file: String,
    line: Option<usize>,
    column: Option<usize>,
    key: Option<String>,
    kind: Box<TopologyErrorKind>,
}

impl fmt::Display for TopologyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let (Some(line), Some(col)) = (self.line, self.column) {
            write!(f, ":{line}:{col}")?;
        }
        f.write_str(": ")?;
        if let Some(key) = &self.key {
            write!(f, "{key}: ")?;
        }
        // Keep it to one line whatever the inner messages contain.
        let kind = self.kind.to_string();
        if kind.contains('\n') {
            f.write_str(&kind.split('\n').map(str::trim).collect::<Vec<_>>().join(" "))
        } else {
            f.write_str(&kind)
        }
    }
}

impl TopologyError {
    /// An error in `file` without location or key.
    pub fn new(file: impl Into<String>, kind: TopologyErrorKind) -> Self {
        TopologyError {
            file: file.into(),
            line: None,
            column: None,
            key: None,
            kind: Box::new(kind),
        }
    }

    /// Sets the key path (e.g. `link[2].b`).
    pub fn with_key(mut self, key: Option<String>) -> Self {
        self.key = key;
        self
    }

    /// Sets the 1-based line and column.
    pub fn at(mut self, line: usize, column: usize) -> Self {
        self.line = Some(line);
        self.column = Some(column);
        self
    }

    /// The file name (or `<topology>` for [`Topology::validate`]).
    pub fn file(&self) -> &str {
        &self.file
    }

    /// 1-based line of the offending value, when known.
    pub fn line(&self) -> Option<usize> {
        self.line
    }

    /// 1-based column (in characters) of the offending value, when known.
    pub fn column(&self) -> Option<usize> {
        self.column
    }

    /// Key path of the offending value, e.g. `node[1].name` or `pools.links`.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// What is wrong.
    pub fn kind(&self) -> &TopologyErrorKind {
        &self.kind
    }
}

/// Where a validation problem is, independent of any file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Anchor {
    /// The node list as a whole.
    Nodes,
    Node(usize, NodeField),
    Link(usize, LinkField),
    Pools(PoolField),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NodeField {
    Name,
    Role,
    Cpus,
    Memory,
    Underlay,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LinkField {
    /// The link as a whole (located at its `a`).
    Pair,
    A,
    B,
    Rate,
    Jitter,
    Loss,
    Mtu,
    Underlay,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PoolField {
    Links,
    LinkPrefix,
    Loopbacks,
}

impl Anchor {
    pub(crate) fn key(self) -> Option<String> {
        Some(match self {
            Anchor::Nodes => "node".to_string(),
            Anchor::Node(i, f) => {
                let f = match f {
                    NodeField::Name => "name",
                    NodeField::Role => "role",
                    NodeField::Cpus => "cpus",
                    NodeField::Memory => "memory",
                    NodeField::Underlay => "underlay",
                };
                format!("node[{i}].{f}")
            }
            Anchor::Link(i, LinkField::Pair) => format!("link[{i}]"),
            Anchor::Link(i, f) => {
                let f = match f {
                    LinkField::Pair | LinkField::A => "a",
                    LinkField::B => "b",
                    LinkField::Rate => "rate",
                    LinkField::Jitter => "jitter",
                    LinkField::Loss => "loss",
                    LinkField::Mtu => "mtu",
                    LinkField::Underlay => "underlay",
                };
                format!("link[{i}].{f}")
            }
            Anchor::Pools(f) => match f {
                PoolField::Links => "pools.links",
                PoolField::LinkPrefix => "pools.link_prefix",
                PoolField::Loopbacks => "pools.loopbacks",
            }
            .to_string(),
        })
    }
}

/// Why `name` is not a valid node name, if it is not.
pub fn node_name_problem(name: &str) -> Option<&'static str> {
    let mut chars = name.chars();
    match chars.next() {
        None => Some("it is empty"),
        Some(_) if name.chars().count() > MAX_NODE_NAME_LEN => Some("it is longer than 12 characters"),
        Some(c) if !(c.is_ascii_lowercase() || c.is_ascii_digit()) => {
            Some("it must start with a lowercase letter or a digit")
        }
        Some(_) => chars
            .any(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_'))
            .then_some("it may only contain a-z, 0-9, '-' and '_'"),
    }
}

/// Levenshtein distance (by characters).
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let subst = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = subst.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// The candidate closest to `word` within edit distance 2 (first wins ties),
/// never `word` itself.
pub(crate) fn closest<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .filter(|c| *c != word)
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// All structural checks, in a fixed order; the first problem wins.
pub(crate) fn check(t: &Topology) -> Result<(), (Anchor, TopologyErrorKind)> {
    use TopologyErrorKind as K;
    if t.nodes.is_empty() {
        return Err((Anchor::Nodes, K::Empty));
    }

    let mut index: HashMap<&str, usize> = HashMap::with_capacity(t.nodes.len());
    for (i, n) in t.nodes.iter().enumerate() {
        if let Some(reason) = node_name_problem(&n.name) {
            let kind = K::BadNodeName {
                name: n.name.clone(),
                reason: reason.to_string(),
            };
            return Err((Anchor::Node(i, NodeField::Name), kind));
        }
        if let Some(&first) = index.get(n.name.as_str()) {
            let kind = K::DuplicateNode {
                name: n.name.clone(),
                first,
            };
            return Err((Anchor::Node(i, NodeField::Name), kind));
        }
        index.insert(&n.name, i);
        if let Some(c) = n.cpus
            && !(c.is_finite() && c > 0.0)
        {
            return Err((Anchor::Node(i, NodeField::Cpus), K::BadCpus { value: c }));
        }
        if let Some(m) = n.memory
            && m < MIN_MEMORY
        {
            return Err((Anchor::Node(i, NodeField::Memory), K::MemoryTooSmall { bytes: m }));
        }
        check_underlay(&n.underlay).map_err(|k| (Anchor::Node(i, NodeField::Underlay), k))?;
    }

    let mut pairs: HashMap<(usize, usize), usize> = HashMap::with_capacity(t.links.len());
    let mut adj: Vec<Vec<usize>> = vec![Vec::new(); t.nodes.len()];
    for (i, l) in t.links.iter().enumerate() {
        let end = |name: &str, field| {
            index.get(name).copied().ok_or_else(|| {
                let kind = K::UnknownNode {
                    name: name.to_string(),
                    suggestion: closest(name, t.nodes.iter().map(|n| n.name.as_str())).map(str::to_string),
                };
                (Anchor::Link(i, field), kind)
            })
        };
        let a = end(&l.a, LinkField::A)?;
        let b = end(&l.b, LinkField::B)?;
        if a == b {
            let kind = K::SelfLoop { name: l.a.clone() };
            return Err((Anchor::Link(i, LinkField::B), kind));
        }
        if let Some(&first) = pairs.get(&(a.min(b), a.max(b))) {
            let kind = K::DuplicateLink {
                a: l.a.clone(),
                b: l.b.clone(),
                first,
            };
            return Err((Anchor::Link(i, LinkField::Pair), kind));
        }
        pairs.insert((a.min(b), a.max(b)), i);
        adj[a].push(b);
        adj[b].push(a);
        check_params(&l.params).map_err(|(f, k)| (Anchor::Link(i, f), k))?;
        check_underlay(&l.underlay).map_err(|k| (Anchor::Link(i, LinkField::Underlay), k))?;
    }

    check_pools(&t.pools, t.links.len(), t.nodes.len())?;

    let mut seen = vec![false; t.nodes.len()];
    let mut queue = VecDeque::from([0usize]);
    seen[0] = true;
    while let Some(u) = queue.pop_front() {
        for &v in &adj[u] {
            if !seen[v] {
                seen[v] = true;
                queue.push_back(v);
            }
        }
    }
    let unreachable: Vec<usize> = (0..t.nodes.len()).filter(|&i| !seen[i]).collect();
    if let Some(&first) = unreachable.first() {
        let kind = K::Unreachable {
            name: t.nodes[first].name.clone(),
            root: t.nodes[0].name.clone(),
            unreachable: unreachable.iter().map(|&i| t.nodes[i].name.clone()).collect(),
        };
        return Err((Anchor::Node(first, NodeField::Name), kind));
    }
    Ok(())
}

/// Checks an optional underlay label.
fn check_underlay(u: &Option<String>) -> Result<(), TopologyErrorKind> {
    match u.as_deref().and_then(|u| Some((u, underlay_name_problem(u)?))) {
        Some((name, reason)) => Err(TopologyErrorKind::BadUnderlay {
            name: name.to_string(),
            reason: reason.to_string(),
        }),
        None => Ok(()),
    }
}

/// Checks one link's (merged) parameters.
pub(crate) fn check_params(p: &LinkParams) -> Result<(), (LinkField, TopologyErrorKind)> {
    use TopologyErrorKind as K;
    if p.rate_bps == Some(0) {
        return Err((LinkField::Rate, K::ZeroRate));
    }
    if let Some(jitter) = p.jitter {
        let delay = p.delay.unwrap_or_default();
        if jitter > delay {
            return Err((LinkField::Jitter, K::JitterExceedsDelay { jitter, delay }));
        }
    }
    if let Some(l) = p.loss_pct
        && !(0.0..=100.0).contains(&l)
    {
        return Err((LinkField::Loss, K::BadLoss { value: l }));
    }
    if let Some(m) = p.mtu
        && !(MIN_MTU..=MAX_MTU).contains(&m)
    {
        return Err((LinkField::Mtu, K::BadMtu { mtu: i64::from(m) }));
    }
    Ok(())
}

fn check_pools(p: &Pools, links: usize, nodes: usize) -> Result<(), (Anchor, TopologyErrorKind)> {
    use TopologyErrorKind as K;
    let links_at = Anchor::Pools(PoolField::Links);
    let loops_at = Anchor::Pools(PoolField::Loopbacks);
    p.links.check().map_err(|k| (links_at, k))?;
    p.loopbacks.check().map_err(|k| (loops_at, k))?;
    if p.link_prefix_len != 30 && p.link_prefix_len != 31 {
        let kind = K::BadLinkPrefix {
            value: i64::from(p.link_prefix_len),
        };
        return Err((Anchor::Pools(PoolField::LinkPrefix), kind));
    }
    for (net, at) in [(p.links, links_at), (p.loopbacks, loops_at)] {
        if net.overlaps(&SERVICE_VIP_POOL) {
            return Err((at, K::PoolReserved { net }));
        }
    }
    if p.links.overlaps(&p.loopbacks) {
        let kind = K::PoolOverlap {
            a: p.links,
            b: p.loopbacks,
        };
        return Err((links_at, kind));
    }
    let (needed, capacity) = (links as u64, p.link_capacity());
    if needed > capacity {
        let kind = K::PoolTooSmall {
            what: "links",
            net: p.links,
            needed,
            capacity,
        };
        return Err((links_at, kind));
    }
    let (needed, capacity) = (nodes as u64, p.loopback_capacity());
    if needed > capacity {
        let kind = K::PoolTooSmall {
            what: "loopbacks",
            net: p.loopbacks,
            needed,
            capacity,
        };
        return Err((loops_at, kind));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str) -> Node {
        Node {
            name: name.into(),
            role: Role::Edge,
            cpus: None,
            memory: None,
            underlay: None,
        }
    }

    fn link(a: &str, b: &str) -> Link {
        Link {
            a: a.into(),
            b: b.into(),
            params: LinkParams::default(),
            underlay: None,
        }
    }

    fn topo(nodes: &[&str], links: &[(&str, &str)]) -> Topology {
        Topology {
            name: None,
            nodes: nodes.iter().map(|n| node(n)).collect(),
            links: links.iter().map(|(a, b)| link(a, b)).collect(),
            pools: Pools::default(),
        }
    }

    fn err(t: &Topology) -> TopologyError {
        t.validate().expect_err("topology should be invalid")
    }

    #[test]
    fn roles() {
        for r in Role::ALL {
            assert_eq!(r.to_string().parse::<Role>(), Ok(r));
        }
        let e = "fgo".parse::<Role>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "bad role \"fgo\"; fix: did you mean \"fog\"? use edge, fog, dc or host"
        );
        assert!(
            matches!("Edge".parse::<Role>(), Err(TopologyErrorKind::BadRole { suggestion: Some(s), .. }) if s == "edge")
        );
        assert!(matches!(
            "router".parse::<Role>(),
            Err(TopologyErrorKind::BadRole { suggestion: None, .. })
        ));
    }

    #[test]
    fn ipv4net() {
        let n: Ipv4Net = "10.0.0.0/16".parse().unwrap();
        assert_eq!(n.to_string(), "10.0.0.0/16");
        assert_eq!(n.size(), 65536);
        assert!(n.contains(Ipv4Addr::new(10, 0, 255, 1)));
        assert!(!n.contains(Ipv4Addr::new(10, 1, 0, 0)));
        assert_eq!(n.nth(257), Some(Ipv4Addr::new(10, 0, 1, 1)));
        assert_eq!(n.nth(65536), None);
        assert!("0.0.0.0/0".parse::<Ipv4Net>().is_ok());
        assert!("1.2.3.4/32".parse::<Ipv4Net>().is_ok());
        for bad in [
            "10.0.0.1/16",
            "10.0.0.0/33",
            "10.0.0.0",
            "10.0.0/8",
            "10.0.0.0/x",
            "10.0.0.0/",
        ] {
            assert!(
                matches!(bad.parse::<Ipv4Net>(), Err(TopologyErrorKind::BadNet { .. })),
                "{bad}"
            );
        }
        let e = "10.0.0.1/16".parse::<Ipv4Net>().unwrap_err().to_string();
        assert!(e.starts_with("bad network \"10.0.0.1/16\": host bits are set"), "{e}");
        assert!(Ipv4Net::new(Ipv4Addr::new(10, 0, 0, 0), 40).is_err());
    }

    #[test]
    fn link_params() {
        let mut p = LinkParams {
            rate_bps: Some(1),
            delay: Some(Duration::from_millis(5)),
            ..Default::default()
        };
        assert!(p.needs_impairment());
        p.merge(&LinkParams {
            delay: Some(Duration::ZERO),
            mtu: Some(1400),
            ..Default::default()
        });
        assert_eq!(p.rate_bps, Some(1));
        assert_eq!(p.delay, Some(Duration::ZERO));
        assert_eq!(p.mtu, Some(1400));
        assert!(!p.needs_impairment());
        p.loss_pct = Some(0.1);
        assert!(p.needs_impairment());
        assert!(!LinkParams::default().needs_impairment());
    }

    #[test]
    fn node_names() {
        for ok in ["r1", "0", "a-b_c", "abcdefghijkl"] {
            assert_eq!(node_name_problem(ok), None, "{ok}");
        }
        for bad in ["", "R1", "-r", "_r", "r.1", "abcdefghijklm", "r 1"] {
            assert!(node_name_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn valid_and_neighbors() {
        let t = topo(&["a", "b", "c"], &[("a", "b"), ("c", "b")]);
        t.validate().unwrap();
        assert_eq!(t.node_index("c"), Some(2));
        assert_eq!(t.node_index("x"), None);
        assert_eq!(t.neighbors(), vec![vec![(1, 0)], vec![(0, 0), (2, 1)], vec![(1, 1)]]);
        assert_eq!(t.link_ends(), vec![Some((0, 1)), Some((2, 1))]);
    }

    #[test]
    fn validate_errors() {
        let e = err(&topo(&[], &[]));
        assert_eq!(e.key(), Some("node"));
        assert_eq!(e.line(), None);
        assert_eq!(e.column(), None);
        assert_eq!(
            e.to_string(),
            "<topology>: node: the topology has no nodes; fix: add at least one [[node]] table"
        );

        let e = err(&topo(&["a", "Bad"], &[("a", "Bad")]));
        assert_eq!(e.key(), Some("node[1].name"));
        assert!(matches!(e.kind(), TopologyErrorKind::BadNodeName { .. }));

        let e = err(&topo(&["a", "a"], &[]));
        assert_eq!(e.key(), Some("node[1].name"));
        assert_eq!(
            e.kind(),
            &TopologyErrorKind::DuplicateNode {
                name: "a".into(),
                first: 0
            }
        );

        let e = err(&topo(&["r1", "r2"], &[("r1", "r3")]));
        assert_eq!(e.key(), Some("link[0].b"));
        assert!(
            e.to_string()
                .ends_with("link refers to unknown node \"r3\"; fix: did you mean \"r1\"?"),
            "{e}"
        );
        let e = err(&topo(&["alpha", "beta"], &[("zzzzz", "beta")]));
        assert_eq!(e.key(), Some("link[0].a"));
        assert!(matches!(
            e.kind(),
            TopologyErrorKind::UnknownNode { suggestion: None, .. }
        ));

        let e = err(&topo(&["a", "b"], &[("a", "a")]));
        assert_eq!(e.key(), Some("link[0].b"));
        assert!(matches!(e.kind(), TopologyErrorKind::SelfLoop { .. }));

        let e = err(&topo(&["a", "b"], &[("a", "b"), ("b", "a")]));
        assert_eq!(e.key(), Some("link[1]"));
        assert!(matches!(e.kind(), TopologyErrorKind::DuplicateLink { first: 0, .. }));

        let e = err(&topo(&["a", "b", "c", "d"], &[("a", "b"), ("c", "d")]));
        assert_eq!(e.key(), Some("node[2].name"));
        assert!(
            e.to_string()
                .contains("node \"c\" is not connected to \"a\" (unreachable: c, d)"),
            "{e}"
        );

        let mut t = topo(&["a", "b"], &[("a", "b")]);
        t.nodes[0].cpus = Some(0.0);
        assert_eq!(err(&t).key(), Some("node[0].cpus"));
        t.nodes[0].cpus = Some(f64::NAN);
        assert_eq!(err(&t).key(), Some("node[0].cpus"));
        t.nodes[0].cpus = Some(0.25);
        t.nodes[1].memory = Some(1 << 20);
        assert_eq!(err(&t).key(), Some("node[1].memory"));
        t.nodes[1].memory = Some(MIN_MEMORY);
        t.validate().unwrap();

        let p = &mut t.links[0].params;
        p.jitter = Some(Duration::from_millis(2));
        assert_eq!(err(&t).key(), Some("link[0].jitter"));
        t.links[0].params.delay = Some(Duration::from_millis(2));
        t.validate().unwrap();
        t.links[0].params.mtu = Some(100);
        assert_eq!(err(&t).key(), Some("link[0].mtu"));
        t.links[0].params.mtu = Some(9000);
        t.links[0].params.loss_pct = Some(101.0);
        assert_eq!(err(&t).key(), Some("link[0].loss"));
        t.links[0].params.loss_pct = None;
        t.links[0].params.rate_bps = Some(0);
        assert_eq!(err(&t).key(), Some("link[0].rate"));
        t.links[0].params.rate_bps = None;
        t.validate().unwrap();

        t.name = Some("demo".into());
        t.pools.link_prefix_len = 29;
        let e = err(&t);
        assert_eq!(e.key(), Some("pools.link_prefix"));
        assert!(e.to_string().starts_with("<topology demo>: pools.link_prefix: "), "{e}");
        t.pools.link_prefix_len = 30;
        t.pools.links = "10.0.0.0/30".parse().unwrap();
        t.validate().unwrap();
        t.links.push(link("a", "c"));
        t.nodes.push(node("c"));
        let e = err(&t);
        assert_eq!(e.key(), Some("pools.links"));
        assert!(matches!(
            e.kind(),
            TopologyErrorKind::PoolTooSmall {
                what: "links",
                needed: 2,
                capacity: 1,
                ..
            }
        ));
        t.pools.links = "10.0.0.0/16".parse().unwrap();
        t.pools.loopbacks = "10.254.0.0/31".parse().unwrap();
        assert!(matches!(
            err(&t).kind(),
            TopologyErrorKind::PoolTooSmall {
                what: "loopbacks",
                needed: 3,
                capacity: 1,
                ..
            }
        ));
        t.pools.loopbacks = "10.0.128.0/24".parse().unwrap();
        assert!(matches!(err(&t).kind(), TopologyErrorKind::PoolOverlap { .. }));
        t.pools.loopbacks = "10.255.0.0/24".parse().unwrap();
        assert!(matches!(err(&t).kind(), TopologyErrorKind::PoolReserved { .. }));
        t.pools.loopbacks = Ipv4Net {
            addr: Ipv4Addr::new(10, 254, 0, 1),
            prefix_len: 16,
        };
        assert!(matches!(err(&t).kind(), TopologyErrorKind::BadNet { .. }));
        t.pools = Pools::default();
        t.validate().unwrap();
    }

    #[test]
    fn edit_distances() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "ab"), 2);
        assert_eq!(edit_distance("r1", "r1"), 0);
        assert_eq!(closest("r9", ["r1", "r2"].into_iter()), Some("r1"));
        assert_eq!(closest("core", ["r1", "r2"].into_iter()), None);
    }

    #[test]
    fn json_round_trip() {
        let mut t = topo(&["a", "b"], &[("a", "b")]);
        t.name = Some("x".into());
        t.nodes[0].cpus = Some(0.5);
        t.nodes[0].memory = Some(256 << 20);
        t.nodes[1].role = Role::Dc;
        t.links[0].params = LinkParams {
            rate_bps: Some(10_000_000),
            delay: Some(Duration::from_micros(1500)),
            jitter: Some(Duration::from_millis(1)),
            loss_pct: Some(0.5),
            mtu: Some(1400),
        };
        let json = serde_json::to_string(&t).unwrap();
        assert!(json.contains(r#""delay":"1500us""#), "{json}");
        assert!(json.contains(r#""jitter":"1ms""#), "{json}");
        assert!(json.contains(r#""role":"dc""#), "{json}");
        let back: Topology = serde_json::from_str(&json).unwrap();
        assert_eq!(back, t);
        // Minimal JSON: optional fields and pools may be left out.
        let min: Topology = serde_json::from_str(r#"{"nodes":[{"name":"a","role":"edge"}],"links":[]}"#).unwrap();
        assert_eq!(min.pools, Pools::default());
        assert_eq!(min.nodes[0].cpus, None);
        let bad = serde_json::from_str::<LinkParams>(r#"{"delay":"20 parsecs"}"#).unwrap_err();
        assert!(bad.to_string().contains("bad duration"), "{bad}");
    }
}
