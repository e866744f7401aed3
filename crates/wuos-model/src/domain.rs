//! Domains: the isolated execution environments a router runs (documented in
//! `docs/domains.md`).
//!
//! A router runs one **routing** domain (reserved cores and memory, see
//! [`crate::admission`]), **service** domains hosting VNFs (usually made from a
//! catalog entry, see [`crate::catalog`]) and **control** domains (SD-WAN
//! controller, orchestrator).
//!
//! - [`DomainSpec`] says what to run and with which resources;
//!   [`DomainSpec::validate`] checks it.
//! - Its lifecycle (state machine, health gate, re-adoption) is
//!   [`crate::lifecycle`].

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::topology::{Ipv4Net, MIN_MEMORY, SERVICE_VIP_POOL};
use crate::units;

/// Longest allowed domain name: names become cgroup, veth and file names.
pub const MAX_DOMAIN_NAME_LEN: usize = 24;
/// Smallest CPU quota, in cores: the cgroup minimum of 1 ms per 100 ms period.
pub const MIN_CPU_QUOTA: f64 = 0.01;
/// Largest relative CPU weight (cgroup v2 `cpu.weight` range is 1..=10000).
pub const MAX_CPU_SHARE: u32 = 10_000;

/// What a domain is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DomainKind {
    /// The router's routing daemons, on reserved cores and memory. At most one per router.
    Routing,
    /// A VNF (PABX, echo, ...), confined to what the routing domain leaves free.
    Service,
    /// SD-WAN controller or orchestrator; shares the service budget.
    Control,
}

impl DomainKind {
    /// The lowercase name used in files and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            DomainKind::Routing => "routing",
            DomainKind::Service => "service",
            DomainKind::Control => "control",
        }
    }
}

impl fmt::Display for DomainKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a domain is isolated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// Network namespace + cgroup (the default everywhere).
    #[default]
    Container,
    /// A KVM microVM through QEMU; needs a memory size.
    Vm,
}

impl Isolation {
    /// All kinds, in documentation order.
    pub const ALL: [Isolation; 2] = [Isolation::Container, Isolation::Vm];

    /// The lowercase name used in files and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::Container => "container",
            Isolation::Vm => "vm",
        }
    }
}

impl fmt::Display for Isolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How much CPU a domain gets. In TOML exactly one of `cores = [1, 2]`,
/// `cpus = 0.5` or `share = 200`; in JSON `{"cores":[1,2]}`, `{"cpus":0.5}`,
/// `{"share":200}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CpuSpec {
    /// Pinned to these cores (a cpuset); may use all of them.
    Cores(Vec<u32>),
    /// A CFS quota in cores (0.5 = half a core), at least [`MIN_CPU_QUOTA`].
    #[serde(rename = "cpus")]
    Quota(f64),
    /// A relative weight in 1..=[`MAX_CPU_SHARE`] (100 is the default weight);
    /// no guarantee, only a share of what its siblings leave.
    Share(u32),
}

impl CpuSpec {
    /// Checks the values; the problem names the offending value.
    pub fn check(&self) -> Result<(), DomainErrorKind> {
        match self {
            CpuSpec::Cores(cores) => {
                if cores.is_empty() {
                    return Err(DomainErrorKind::EmptyCpuset);
                }
                for (i, c) in cores.iter().enumerate() {
                    if cores[..i].contains(c) {
                        return Err(DomainErrorKind::DuplicateCore { core: *c });
                    }
                }
                Ok(())
            }
            CpuSpec::Quota(q) => {
                if q.is_finite() && *q >= MIN_CPU_QUOTA {
                    Ok(())
                } else {
                    Err(DomainErrorKind::BadQuota { value: *q })
                }
            }
            CpuSpec::Share(w) => {
                if (1..=MAX_CPU_SHARE).contains(w) {
                    Ok(())
                } else {
                    Err(DomainErrorKind::BadShare { value: *w })
                }
            }
        }
    }
}

/// Formats cores as a Linux cpuset list, sorted with ranges: `[3, 0, 1, 2, 7]` → `"0-3,7"`.
pub fn format_cpuset(cores: &[u32]) -> String {
    let mut sorted = cores.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut parts = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    parts.join(",")
}

/// The domain's end of a veth pair into the router's namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetAttach {
    /// The domain's address on the veth.
    pub address: Ipv4Addr,
    /// Prefix length of the veth subnet, 1..=32.
    pub prefix_len: u8,
    /// Default route via this address (the router's end); with /32 it is
    /// reached on-link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv4Addr>,
}

impl NetAttach {
    /// The subnet the address lies in.
    pub fn subnet(&self) -> Ipv4Net {
        let len = self.prefix_len.min(32);
        let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
        Ipv4Net {
            addr: Ipv4Addr::from(u32::from(self.address) & mask),
            prefix_len: len,
        }
    }

    /// Checks the address, prefix length and gateway; the field name is
    /// `address`, `prefix_len` or `gateway`.
    pub fn check(&self) -> Result<(), (&'static str, DomainErrorKind)> {
        if !(1..=32).contains(&self.prefix_len) {
            return Err(("prefix_len", DomainErrorKind::BadPrefixLen { value: self.prefix_len }));
        }
        let net = self.subnet();
        let edge = |ip: Ipv4Addr| {
            self.prefix_len <= 30 && (ip == net.addr || u32::from(ip) == u32::from(net.addr) | !net.mask())
        };
        let address = |reason: &'static str| {
            Err((
                "address",
                DomainErrorKind::BadAddress {
                    address: self.address,
                    reason,
                },
            ))
        };
        if let Some(reason) = unicast_problem(self.address) {
            return address(reason);
        }
        if edge(self.address) {
            return address("it is the network or broadcast address of its subnet");
        }
        if SERVICE_VIP_POOL.contains(self.address) {
            return address("it lies in 10.255.0.0/16, which is reserved for service VIPs");
        }
        if let Some(gw) = self.gateway {
            let gateway = |reason: &'static str| Err(("gateway", DomainErrorKind::BadGateway { gateway: gw, reason }));
            if let Some(reason) = unicast_problem(gw) {
                return gateway(reason);
            }
            if gw == self.address {
                return gateway("it is the domain's own address");
            }
            if self.prefix_len < 32 && !net.contains(gw) {
                return gateway("it is outside the domain's subnet");
            }
            if edge(gw) {
                return gateway("it is the network or broadcast address of the subnet");
            }
        }
        Ok(())
    }
}

fn unicast_problem(ip: Ipv4Addr) -> Option<&'static str> {
    if ip.is_unspecified() {
        Some("it is unspecified")
    } else if ip.is_loopback() {
        Some("it is a loopback address")
    } else if ip.is_multicast() {
        Some("it is a multicast address")
    } else if ip.is_broadcast() {
        Some("it is the broadcast address")
    } else {
        None
    }
}

/// Where a running container domain is attached to its router: its veth (what the data path
/// redirects a service's packets onto).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct InstanceLink {
    /// The router's end of the domain's veth.
    pub host_if: String,
    /// The domain's network namespace file.
    pub netns: std::path::PathBuf,
    /// The domain's own end.
    pub dom_if: String,
}

/// What a health probe checks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthKind {
    /// The main process is alive.
    Process,
    /// A TCP connection to the domain's address on this port succeeds.
    Tcp {
        /// Port, not 0.
        port: u16,
    },
    /// This datagram, sent to the domain's address and port, gets any reply.
    Udp {
        /// Port, not 0.
        port: u16,
        /// The datagram (e.g. a SIP OPTIONS request).
        payload: String,
    },
    /// This command, run inside the domain, exits with 0.
    Command {
        /// Program and arguments; not empty.
        argv: Vec<String>,
    },
}

/// A periodic health probe. [`crate::lifecycle::Event::HealthFailed`] is raised after
/// `retries` consecutive failed probes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    /// What to probe.
    pub kind: HealthKind,
    /// Time between probes; serialized as `"5s"`.
    #[serde(with = "duration_str")]
    pub interval: Duration,
    /// How long a probe may take, at most `interval`; serialized like `interval`.
    #[serde(with = "duration_str")]
    pub timeout: Duration,
    /// Consecutive failures that make the domain unhealthy, at least 1.
    pub retries: u32,
}

impl HealthCheck {
    /// Default time between probes.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
    /// Default probe timeout.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
    /// Default consecutive failures.
    pub const DEFAULT_RETRIES: u32 = 3;

    /// Checks the probe; the field name is `health.port`, `health.argv`,
    /// `health.interval`, `health.timeout` or `health.retries`.
    pub fn check(&self) -> Result<(), (&'static str, DomainErrorKind)> {
        match &self.kind {
            HealthKind::Process => {}
            HealthKind::Tcp { port } | HealthKind::Udp { port, .. } => {
                if *port == 0 {
                    return Err(("health.port", DomainErrorKind::ZeroPort));
                }
            }
            HealthKind::Command { argv } => {
                if argv.first().is_none_or(String::is_empty) {
                    return Err(("health.argv", DomainErrorKind::EmptyHealthCommand));
                }
            }
        }
        if self.interval.is_zero() {
            return Err(("health.interval", DomainErrorKind::ZeroInterval));
        }
        if self.timeout.is_zero() || self.timeout > self.interval {
            let kind = DomainErrorKind::BadTimeout {
                timeout: self.timeout,
                interval: self.interval,
            };
            return Err(("health.timeout", kind));
        }
        if self.retries == 0 {
            return Err(("health.retries", DomainErrorKind::ZeroRetries));
        }
        Ok(())
    }
}

/// What to do when the main process exits or the health check fails.
///
/// Written (in TOML and JSON) as `"never"`, `"always"`, `"on-failure"` (3
/// retries) or `"on-failure:N"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum RestartPolicy {
    /// Leave it stopped or failed.
    Never,
    /// Restart after a failure (non-zero exit, signal, failed health check) up
    /// to `max_retries` times in a row; a clean exit stops it.
    OnFailure {
        /// Restarts allowed before giving up.
        max_retries: u32,
    },
    /// Restart after any exit, without limit (the daemon should back off).
    Always,
}

impl RestartPolicy {
    /// Retries of a bare `"on-failure"`.
    pub const DEFAULT_RETRIES: u32 = 3;
}

impl Default for RestartPolicy {
    /// `on-failure:3`.
    fn default() -> Self {
        RestartPolicy::OnFailure {
            max_retries: Self::DEFAULT_RETRIES,
        }
    }
}

impl fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestartPolicy::Never => f.write_str("never"),
            RestartPolicy::Always => f.write_str("always"),
            RestartPolicy::OnFailure { max_retries } => write!(f, "on-failure:{max_retries}"),
        }
    }
}

impl FromStr for RestartPolicy {
    type Err = DomainErrorKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || DomainErrorKind::BadRestart { value: s.to_string() };
        match s {
            "never" => Ok(RestartPolicy::Never),
            "always" => Ok(RestartPolicy::Always),
            "on-failure" => Ok(RestartPolicy::default()),
            _ => {
                let n = s.strip_prefix("on-failure:").ok_or_else(bad)?;
                if !n.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                let max_retries = n.parse().map_err(|_| bad())?;
                Ok(RestartPolicy::OnFailure { max_retries })
            }
        }
    }
}

impl TryFrom<String> for RestartPolicy {
    type Error = DomainErrorKind;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<RestartPolicy> for String {
    fn from(p: RestartPolicy) -> String {
        p.to_string()
    }
}

/// Everything needed to create and run one domain.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DomainSpec {
    /// `[a-z0-9][a-z0-9-]*`, at most [`MAX_DOMAIN_NAME_LEN`] characters; unique per router.
    pub name: String,
    /// What it is for.
    pub kind: DomainKind,
    /// How it is isolated.
    #[serde(default)]
    pub isolation: Isolation,
    /// CPU; `None` = whatever its parent cgroup allows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuSpec>,
    /// Memory limit in bytes, at least 16 MiB; `None` = the parent's budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<u64>,
    /// Its veth into the router's namespace; routing domains have none (they
    /// own the router's namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net: Option<NetAttach>,
    /// Program and arguments of the main process, run in the foreground.
    pub argv: Vec<String>,
    /// Environment of the main process, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<(String, String)>,
    /// Health probe; `None` = only process liveness via [`Event::Exited`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthCheck>,
    /// What to do when it exits or turns unhealthy.
    #[serde(default)]
    pub restart: RestartPolicy,
    /// The catalog entry it instantiates, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
}

impl DomainSpec {
    /// A pre-created domain of the idle pool: its init is parked (frozen) until it is given a
    /// service's command; limits and command come with [`crate::catalog::ServiceDef::instantiate`].
    pub fn parked(name: &str) -> Self {
        DomainSpec {
            name: name.to_string(),
            kind: DomainKind::Service,
            isolation: Isolation::Container,
            cpu: None,
            memory: None,
            net: None,
            argv: Vec::new(),
            env: Vec::new(),
            health: None,
            restart: RestartPolicy::Never,
            service: None,
        }
    }
    /// Checks every rule of `docs/domains.md`; the first problem wins.
    pub fn validate(&self) -> Result<(), DomainError> {
        use DomainErrorKind as K;
        let err = |field: &str, kind: K| {
            Err(DomainError {
                domain: self.name.clone(),
                field: field.to_string(),
                kind,
            })
        };
        if let Some(reason) = domain_name_problem(&self.name) {
            return err(
                "name",
                K::BadName {
                    name: self.name.clone(),
                    reason,
                },
            );
        }
        match self.argv.first() {
            None => return err("argv", K::EmptyCommand),
            Some(p) if p.is_empty() => return err("argv[0]", K::EmptyCommand),
            Some(_) => {}
        }
        if let Some(i) = self.argv.iter().position(|a| a.contains('\0')) {
            return err(&format!("argv[{i}]"), K::NulInArgument { index: i });
        }
        for (i, (k, v)) in self.env.iter().enumerate() {
            let field = format!("env.{k}");
            if !env_name_ok(k) {
                return err(&field, K::BadEnvName { key: k.clone() });
            }
            if v.contains('\0') {
                return err(&field, K::NulInEnv { key: k.clone() });
            }
            if self.env[..i].iter().any(|(k2, _)| k2 == k) {
                return err(&field, K::DuplicateEnv { key: k.clone() });
            }
        }
        if let Some(cpu) = &self.cpu
            && let Err(kind) = cpu.check()
        {
            return err("cpu", kind);
        }
        if let Some(bytes) = self.memory
            && bytes < MIN_MEMORY
        {
            return err("memory", K::MemoryTooSmall { bytes });
        }
        if self.isolation == Isolation::Vm && self.memory.is_none() {
            return err("memory", K::VmWithoutMemory);
        }
        if let Some(net) = &self.net {
            if self.kind == DomainKind::Routing {
                return err("net", K::RoutingWithNet);
            }
            if let Err((field, kind)) = net.check() {
                return err(&format!("net.{field}"), kind);
            }
        }
        if let Some(h) = &self.health
            && let Err((field, kind)) = h.check()
        {
            return err(field, kind);
        }
        if let Some(s) = &self.service {
            if self.kind == DomainKind::Routing {
                return err("service", K::RoutingWithService);
            }
            if let Some(reason) = domain_name_problem(s) {
                return err(
                    "service",
                    K::BadServiceName {
                        name: s.clone(),
                        reason,
                    },
                );
            }
        }
        Ok(())
    }
}

/// Why `name` is not a valid domain (or catalog service) name, if it is not.
pub fn domain_name_problem(name: &str) -> Option<&'static str> {
    let mut chars = name.chars();
    match chars.next() {
        None => Some("it is empty"),
        Some(_) if name.chars().count() > MAX_DOMAIN_NAME_LEN => Some("it is longer than 24 characters"),
        Some(c) if !(c.is_ascii_lowercase() || c.is_ascii_digit()) => {
            Some("it must start with a lowercase letter or a digit")
        }
        Some(_) => chars
            .any(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'))
            .then_some("it may only contain a-z, 0-9 and '-'"),
    }
}

fn env_name_ok(k: &str) -> bool {
    let mut b = k.bytes();
    b.next().is_some_and(|c| c.is_ascii_alphabetic() || c == b'_') && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// What is wrong with a domain spec (or with the same part of a catalog
/// entry). `Display` is `WHAT IS WRONG; fix: HOW TO FIX`.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum DomainErrorKind {
    /// The name breaks the naming rule.
    #[error(
        "bad name \"{name}\": {reason}; fix: use 1 to 24 characters from a-z, 0-9 and '-', starting with a letter or digit"
    )]
    BadName {
        /// The name.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// No program to run.
    #[error("the command is empty; fix: give the program and its arguments, e.g. [\"kamailio\", \"-DD\"]")]
    EmptyCommand,
    /// An argument with a NUL byte.
    #[error("argument {index} contains a NUL byte; fix: remove it")]
    NulInArgument {
        /// Its index in argv.
        index: usize,
    },
    /// Not a portable environment variable name.
    #[error("bad environment variable name \"{key}\"; fix: use A-Z, a-z, 0-9 and '_', not starting with a digit")]
    BadEnvName {
        /// The name.
        key: String,
    },
    /// An environment value with a NUL byte.
    #[error("the value of {key} contains a NUL byte; fix: remove it")]
    NulInEnv {
        /// The variable.
        key: String,
    },
    /// The same variable twice.
    #[error("environment variable {key} is set twice; fix: keep one")]
    DuplicateEnv {
        /// The variable.
        key: String,
    },
    /// `cores = []`.
    #[error("the cpuset is empty; fix: list at least one core, e.g. cores = [1]")]
    EmptyCpuset,
    /// A core listed twice.
    #[error("core {core} is listed twice; fix: list each core once")]
    DuplicateCore {
        /// The core.
        core: u32,
    },
    /// A quota that is not a number of cores ≥ 0.01.
    #[error("bad cpus {value}: a quota must be at least 0.01 cores; fix: use e.g. 0.5 or 2")]
    BadQuota {
        /// The value given.
        value: f64,
    },
    /// A weight outside 1..=10000.
    #[error("bad share {value}: a weight must be from 1 to 10000; fix: use e.g. 100 (the default weight) or 200")]
    BadShare {
        /// The value given.
        value: u32,
    },
    /// Memory below the minimum.
    #[error("memory {} is below the 16MiB minimum; fix: use at least \"16MiB\"", units::format_bytes(*bytes))]
    MemoryTooSmall {
        /// The value given, in bytes.
        bytes: u64,
    },
    /// A VM without a memory size.
    #[error("a vm domain needs a fixed memory size; fix: set memory, e.g. \"256MiB\"")]
    VmWithoutMemory,
    /// A routing domain with a veth.
    #[error("a routing domain owns the router's namespace and has no veth into it; fix: remove the network attachment")]
    RoutingWithNet,
    /// A routing domain made from a catalog entry.
    #[error("a routing domain cannot instantiate a catalog service; fix: make it a service domain")]
    RoutingWithService,
    /// A prefix length outside 1..=32.
    #[error("prefix length {value} is outside 1..=32; fix: use the veth subnet's length, e.g. 30")]
    BadPrefixLen {
        /// The value given.
        value: u8,
    },
    /// A bad domain address.
    #[error("bad address {address}: {reason}; fix: use a unicast address of the veth subnet")]
    BadAddress {
        /// The address.
        address: Ipv4Addr,
        /// Why it is bad.
        reason: &'static str,
    },
    /// A bad gateway.
    #[error("bad gateway {gateway}: {reason}; fix: use the router's end of the veth")]
    BadGateway {
        /// The gateway.
        gateway: Ipv4Addr,
        /// Why it is bad.
        reason: &'static str,
    },
    /// A health probe on port 0.
    #[error("port 0 cannot be probed; fix: use the port the service listens on")]
    ZeroPort,
    /// A command probe without a command.
    #[error("the health command is empty; fix: give the program and its arguments")]
    EmptyHealthCommand,
    /// A zero probe interval.
    #[error("the health interval is 0; fix: use e.g. \"10s\"")]
    ZeroInterval,
    /// A zero timeout or one longer than the interval.
    #[error(
        "health timeout {} must be above 0 and at most the interval {}; fix: shorten the timeout or lengthen the interval",
        units::format_duration(*timeout),
        units::format_duration(*interval)
    )]
    BadTimeout {
        /// The timeout.
        timeout: Duration,
        /// The interval.
        interval: Duration,
    },
    /// `retries = 0`.
    #[error("health retries is 0; fix: use at least 1 (3 is the default)")]
    ZeroRetries,
    /// Not a restart policy.
    #[error("bad restart policy \"{value}\"; fix: use never, always, on-failure or on-failure:N")]
    BadRestart {
        /// The value given.
        value: String,
    },
    /// A catalog service name that breaks the naming rule.
    #[error("bad service name \"{name}\": {reason}; fix: use the name of a catalog entry")]
    BadServiceName {
        /// The name.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
}

/// A [`DomainSpec`] that fails validation: `domain NAME: FIELD: WHAT; fix: HOW`.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("domain {domain}: {field}: {kind}")]
pub struct DomainError {
    /// The domain's name (as given, possibly the bad name itself).
    pub domain: String,
    /// The offending field, e.g. `cpu`, `net.gateway`, `env.PATH`, `argv[2]`.
    pub field: String,
    /// What is wrong.
    pub kind: DomainErrorKind,
}

/// `#[serde(with = "duration_str")]` for `Duration`: `"5s"`, via
/// [`units::format_duration`] / [`units::parse_duration`].
mod duration_str {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::units::format_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        crate::units::parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> DomainSpec {
        DomainSpec {
            name: "pabx-1".into(),
            kind: DomainKind::Service,
            isolation: Isolation::Container,
            cpu: Some(CpuSpec::Quota(0.5)),
            memory: Some(128 << 20),
            net: Some(NetAttach {
                address: Ipv4Addr::new(10, 0, 4, 2),
                prefix_len: 30,
                gateway: Some(Ipv4Addr::new(10, 0, 4, 1)),
            }),
            argv: vec!["kamailio".into(), "-DD".into()],
            env: vec![("LANG".into(), "C".into())],
            health: Some(HealthCheck {
                kind: HealthKind::Udp {
                    port: 5060,
                    payload: "OPTIONS".into(),
                },
                interval: Duration::from_secs(5),
                timeout: Duration::from_secs(1),
                retries: 3,
            }),
            restart: RestartPolicy::default(),
            service: Some("pabx".into()),
        }
    }

    /// Validates `s` expecting a problem in `field`; returns the message.
    #[track_caller]
    fn bad(s: DomainSpec, field: &str) -> String {
        let e = s.validate().expect_err("should fail");
        assert_eq!(e.field, field, "{e}");
        let msg = e.to_string();
        assert!(msg.contains("; fix: "), "{msg}");
        msg
    }

    #[test]
    fn valid_specs() {
        spec().validate().unwrap();
        let routing = DomainSpec {
            name: "routing".into(),
            kind: DomainKind::Routing,
            cpu: Some(CpuSpec::Cores(vec![0])),
            net: None,
            health: None,
            service: None,
            ..spec()
        };
        routing.validate().unwrap();
        let mut s = spec();
        s.net.as_mut().unwrap().prefix_len = 32;
        s.net.as_mut().unwrap().gateway = Some(Ipv4Addr::new(10, 9, 9, 9)); // on-link
        s.validate().unwrap();
        s.net.as_mut().unwrap().gateway = None;
        s.cpu = Some(CpuSpec::Share(10_000));
        s.isolation = Isolation::Vm;
        s.validate().unwrap();
        let name = "a".repeat(24);
        DomainSpec { name, ..spec() }.validate().unwrap();
    }

    #[test]
    fn name_errors() {
        for (name, why) in [
            ("", "it is empty"),
            ("Pabx", "must start with a lowercase letter or a digit"),
            ("-pabx", "must start with a lowercase letter or a digit"),
            ("pabx_1", "may only contain a-z, 0-9 and '-'"),
            (&"a".repeat(25), "longer than 24"),
        ] {
            let msg = bad(
                DomainSpec {
                    name: name.into(),
                    ..spec()
                },
                "name",
            );
            assert!(msg.contains(why), "{msg}");
        }
        let msg = bad(
            DomainSpec {
                name: "Pabx".into(),
                ..spec()
            },
            "name",
        );
        assert!(msg.starts_with("domain Pabx: name: bad name \"Pabx\": "), "{msg}");
        let msg = bad(
            DomainSpec {
                service: Some("PABX".into()),
                ..spec()
            },
            "service",
        );
        assert!(msg.contains("bad service name \"PABX\""), "{msg}");
    }

    #[test]
    fn command_and_env_errors() {
        let msg = bad(DomainSpec { argv: vec![], ..spec() }, "argv");
        assert!(msg.contains("the command is empty"), "{msg}");
        bad(
            DomainSpec {
                argv: vec![String::new()],
                ..spec()
            },
            "argv[0]",
        );
        let msg = bad(
            DomainSpec {
                argv: vec!["a".into(), "b\0".into()],
                ..spec()
            },
            "argv[1]",
        );
        assert!(msg.contains("argument 1 contains a NUL byte"), "{msg}");
        for key in ["1X", "A-B", ""] {
            let msg = bad(
                DomainSpec {
                    env: vec![(key.into(), "v".into())],
                    ..spec()
                },
                &format!("env.{key}"),
            );
            assert!(msg.contains("bad environment variable name"), "{msg}");
        }
        bad(
            DomainSpec {
                env: vec![("A".into(), "\0".into())],
                ..spec()
            },
            "env.A",
        );
        let msg = bad(
            DomainSpec {
                env: vec![("_A1".into(), "1".into()), ("_A1".into(), "2".into())],
                ..spec()
            },
            "env._A1",
        );
        assert!(msg.contains("set twice"), "{msg}");
    }

    #[test]
    fn resource_errors() {
        let cpu = |c: CpuSpec| DomainSpec { cpu: Some(c), ..spec() };
        assert!(bad(cpu(CpuSpec::Cores(vec![])), "cpu").contains("cpuset is empty"));
        assert!(bad(cpu(CpuSpec::Cores(vec![1, 2, 1])), "cpu").contains("core 1 is listed twice"));
        for q in [0.0, 0.005, -1.0, f64::NAN, f64::INFINITY] {
            assert!(bad(cpu(CpuSpec::Quota(q)), "cpu").contains("bad cpus"));
        }
        CpuSpec::Quota(0.01).check().unwrap();
        assert!(bad(cpu(CpuSpec::Share(0)), "cpu").contains("bad share 0"));
        bad(cpu(CpuSpec::Share(10_001)), "cpu");
        let msg = bad(
            DomainSpec {
                memory: Some(1 << 20),
                ..spec()
            },
            "memory",
        );
        assert!(msg.contains("memory 1MiB is below the 16MiB minimum"), "{msg}");
        let msg = bad(
            DomainSpec {
                memory: None,
                isolation: Isolation::Vm,
                ..spec()
            },
            "memory",
        );
        assert!(msg.contains("a vm domain needs a fixed memory size"), "{msg}");
    }

    #[test]
    fn kind_errors() {
        let routing = DomainSpec {
            kind: DomainKind::Routing,
            service: None,
            ..spec()
        };
        assert!(bad(routing.clone(), "net").contains("routing domain owns the router's namespace"));
        let msg = bad(
            DomainSpec {
                net: None,
                service: Some("pabx".into()),
                ..routing
            },
            "service",
        );
        assert!(msg.contains("cannot instantiate a catalog service"), "{msg}");
    }

    #[test]
    fn net_errors() {
        let net = |a: [u8; 4], len: u8, gw: Option<[u8; 4]>| DomainSpec {
            net: Some(NetAttach {
                address: a.into(),
                prefix_len: len,
                gateway: gw.map(Ipv4Addr::from),
            }),
            ..spec()
        };
        assert!(bad(net([10, 0, 4, 2], 0, None), "net.prefix_len").contains("prefix length 0 is outside 1..=32"));
        bad(net([10, 0, 4, 2], 33, None), "net.prefix_len");
        for (a, why) in [
            ([0, 0, 0, 0], "unspecified"),
            ([127, 0, 0, 1], "loopback"),
            ([224, 0, 0, 1], "multicast"),
            ([255, 255, 255, 255], "broadcast address"),
            ([10, 0, 4, 0], "network or broadcast address of its subnet"),
            ([10, 0, 4, 3], "network or broadcast address of its subnet"),
            ([10, 255, 0, 10], "reserved for service VIPs"),
        ] {
            let msg = bad(net(a, 30, None), "net.address");
            assert!(msg.contains(why), "{a:?}: {msg}");
        }
        // A /31 has no network or broadcast address.
        net([10, 0, 4, 0], 31, Some([10, 0, 4, 1])).validate().unwrap();
        for (gw, why) in [
            ([10, 0, 4, 2], "the domain's own address"),
            ([10, 0, 5, 1], "outside the domain's subnet"),
            ([10, 0, 4, 3], "network or broadcast address of the subnet"),
            ([0, 0, 0, 0], "unspecified"),
        ] {
            let msg = bad(net([10, 0, 4, 2], 30, Some(gw)), "net.gateway");
            assert!(msg.contains(why), "{gw:?}: {msg}");
            assert!(msg.contains("fix: use the router's end of the veth"), "{msg}");
        }
    }

    #[test]
    fn health_errors() {
        let health = |kind: HealthKind, interval: u64, timeout: u64, retries: u32| DomainSpec {
            health: Some(HealthCheck {
                kind,
                interval: Duration::from_secs(interval),
                timeout: Duration::from_secs(timeout),
                retries,
            }),
            ..spec()
        };
        let msg = bad(health(HealthKind::Tcp { port: 0 }, 5, 1, 3), "health.port");
        assert!(msg.contains("port 0 cannot be probed"), "{msg}");
        let udp = HealthKind::Udp {
            port: 0,
            payload: String::new(),
        };
        bad(health(udp, 5, 1, 3), "health.port");
        bad(health(HealthKind::Command { argv: vec![] }, 5, 1, 3), "health.argv");
        bad(
            health(
                HealthKind::Command {
                    argv: vec![String::new()],
                },
                5,
                1,
                3,
            ),
            "health.argv",
        );
        bad(health(HealthKind::Process, 0, 0, 3), "health.interval");
        let msg = bad(health(HealthKind::Process, 5, 6, 3), "health.timeout");
        assert!(
            msg.contains("health timeout 6s must be above 0 and at most the interval 5s"),
            "{msg}"
        );
        bad(health(HealthKind::Process, 5, 0, 3), "health.timeout");
        bad(health(HealthKind::Process, 5, 5, 0), "health.retries");
        health(HealthKind::Process, 5, 5, 1).validate().unwrap();
    }

    #[test]
    fn restart_policy_strings() {
        for (s, p) in [
            ("never", RestartPolicy::Never),
            ("always", RestartPolicy::Always),
            ("on-failure", RestartPolicy::OnFailure { max_retries: 3 }),
            ("on-failure:0", RestartPolicy::OnFailure { max_retries: 0 }),
            ("on-failure:12", RestartPolicy::OnFailure { max_retries: 12 }),
        ] {
            assert_eq!(s.parse::<RestartPolicy>(), Ok(p), "{s}");
            assert_eq!(p.to_string().parse::<RestartPolicy>(), Ok(p));
        }
        for s in [
            "",
            "Never",
            "on-failure:",
            "on-failure:-1",
            "on-failure:+1",
            "on_failure",
            "restart",
        ] {
            let e = s.parse::<RestartPolicy>().unwrap_err();
            assert_eq!(e, DomainErrorKind::BadRestart { value: s.into() });
        }
        assert!(
            "x".parse::<RestartPolicy>()
                .unwrap_err()
                .to_string()
                .contains("fix: use never, always, on-failure or on-failure:N")
        );
    }

    #[test]
    fn json_round_trip() {
        let s = spec();
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains(r#""cpu":{"cpus":0.5}"#), "{json}");
        assert!(json.contains(r#""interval":"5s""#), "{json}");
        assert!(json.contains(r#""restart":"on-failure:3""#), "{json}");
        assert!(json.contains(r#""kind":"service""#), "{json}");
        assert_eq!(serde_json::from_str::<DomainSpec>(&json).unwrap(), s);
        let cores = serde_json::to_string(&CpuSpec::Cores(vec![1, 2])).unwrap();
        assert_eq!(cores, r#"{"cores":[1,2]}"#);
        assert!(serde_json::from_str::<RestartPolicy>(r#""sometimes""#).is_err());
    }

    #[test]
    fn cpusets() {
        assert_eq!(format_cpuset(&[3, 0, 1, 2, 7]), "0-3,7");
        assert_eq!(format_cpuset(&[1]), "1");
        assert_eq!(format_cpuset(&[]), "");
        assert_eq!(format_cpuset(&[5, 1, 3, 2, 2]), "1-3,5");
    }
}
