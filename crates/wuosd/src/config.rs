//! wuosd's configuration: TOML into `deny_unknown_fields` structs, then [`Config::validate`].
//!
//! ```toml
//! router_id = "r3"
//! role = "edge"                  # edge | fog | dc | host
//! listen = "0.0.0.0:7470"        # the augmented SD-WAN protocol (neighbors)
//! admin_socket = "/run/wuos/r3.sock"   # local administration (wuos status, wuos top)
//! metrics_listen = "127.0.0.1:9470"    # Prometheus text format at /metrics
//! telemetry_interval = "1s"
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

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use wuos_model::Role;
use wuos_model::units::parse_duration;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// `location` is `LINE:COL:` when known, so the message reads `FILE:LINE:COL: …`.
    #[error("{path}:{location} {message}")]
    Parse {
        path: PathBuf,
        location: String,
        message: String,
    },
    #[error("{path}: {key}: {problem}; fix: {fix}")]
    Invalid {
        path: PathBuf,
        key: String,
        problem: String,
        fix: String,
    },
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub router_id: String,
    pub role: Role,
    #[serde(default = "default_listen")]
    pub listen: String,
    /// The address other routers reach this router's controller at (advertised); default: the
    /// listen address (which must then not be a wildcard).
    #[serde(default)]
    pub control_address: Option<String>,
    pub admin_socket: PathBuf,
    #[serde(default)]
    pub metrics_listen: Option<String>,
    #[serde(default = "default_interval")]
    pub telemetry_interval: String,
    /// Hello interval; defaults to the telemetry interval.
    #[serde(default)]
    pub hello_interval: Option<String>,
    /// A neighbor is lost after this many hello intervals without a word from it.
    #[serde(default = "default_dead_multiplier")]
    pub dead_multiplier: u32,
    #[serde(default = "default_hop_limit")]
    pub hop_limit: u32,
    /// A view entry is stale after this many of its origin's intervals without a refresh.
    #[serde(default = "default_stale_after")]
    pub stale_after_intervals: u32,
    pub data_dir: PathBuf,
    #[serde(default)]
    pub resources: ResourcesConfig,
    #[serde(default, rename = "neighbor")]
    pub neighbors: Vec<NeighborConfig>,
    /// Domains (the hypervisor layer); absent: this router runs no domains.
    #[serde(default)]
    pub domains: Option<DomainsConfig>,
    /// The orchestrator (fog routers); absent: this router only takes intents.
    #[serde(default)]
    pub orchestrator: Option<OrchestratorConfig>,
    /// The data path.
    #[serde(default)]
    pub datapath: DatapathConfig,
}

/// `[datapath]`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DatapathConfig {
    /// Attach the XDP classifier to the neighbor interfaces: per-service counters and the demand
    /// in our adverts (needs `[domains]`, whose catalog names the services).
    #[serde(default)]
    pub xdp: bool,
}

/// `[orchestrator]`: where services go when no rule of the policy fits, and the timers of moves.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OrchestratorConfig {
    /// The data-centre router, which always runs every service.
    pub datacenter: String,
    /// A policy file applied at start (when the store holds none applied later).
    #[serde(default)]
    pub policy: Option<PathBuf>,
    /// Consecutive samples a change must hold.
    #[serde(default = "default_confirm")]
    pub confirm_samples: u32,
    /// How long the old instance keeps running after the routes moved.
    #[serde(default = "default_drain")]
    pub drain: String,
    /// How long a new instance may take to become healthy.
    #[serde(default = "default_ready_timeout")]
    pub ready_timeout: String,
    /// New flows per second a service needs before it is moved (0: any demand, or none needed
    /// when the data path reports none).
    #[serde(default)]
    pub min_demand_flows: f64,
}

fn default_confirm() -> u32 {
    1
}

fn default_drain() -> String {
    "2s".into()
}

fn default_ready_timeout() -> String {
    "20s".into()
}

/// `[domains]`: where services run and what the routing domain keeps for itself.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DomainsConfig {
    /// The VNF catalog directory (`*.toml`, see docs/domains.md).
    pub catalog: PathBuf,
    /// Per-domain files (logs, configs, pid files).
    pub run_dir: PathBuf,
    /// The router's network namespace file; absent: the host namespace (a real router).
    #[serde(default)]
    pub router_netns: Option<PathBuf>,
    #[serde(default = "default_netns_dir")]
    pub netns_dir: PathBuf,
    /// The router's cgroup (relative to `resources.cgroup_root`); domains live below it.
    pub cgroup: String,
    /// Prefix of domain namespace names (`PREFIX.DOMAIN`).
    pub netns_prefix: String,
    /// Domain links: a /30 each from this pool ("10.253.3.0/24").
    pub subnet: String,
    /// Cores and memory the routing domain keeps; services get the rest.
    #[serde(default)]
    pub routing_cores: Vec<u32>,
    #[serde(default)]
    pub routing_memory: Option<String>,
    /// Frozen, pre-created service domains kept ready.
    #[serde(default)]
    pub pool: u32,
    /// The program that implements `domain-init` (default: this wuosd).
    #[serde(default)]
    pub init_exe: Option<PathBuf>,
    /// Site values of catalog parameters, per service (`[domains.params.pabx]`,
    /// `static_users = "..."`): used by every instance started here, an explicit start's
    /// parameters winning.
    #[serde(default)]
    pub params: std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>,
}

fn default_netns_dir() -> PathBuf {
    "/run/netns".into()
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ResourcesConfig {
    #[serde(default = "default_source")]
    pub source: String,
    #[serde(default)]
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
            source: default_source(),
            cgroup: None,
            cgroup_root: default_cgroup_root(),
            proc_root: default_proc_root(),
            sys_root: default_sys_root(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NeighborConfig {
    pub id: String,
    pub address: String,
    pub interface: String,
}

fn default_listen() -> String {
    "0.0.0.0:7470".into()
}
fn default_interval() -> String {
    "1s".into()
}
fn default_dead_multiplier() -> u32 {
    3
}
fn default_hop_limit() -> u32 {
    2
}
fn default_stale_after() -> u32 {
    3
}
fn default_source() -> String {
    "proc".into()
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

/// Router ids: 1-64 of `A-Z a-z 0-9 . _ -`.
pub fn valid_router_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let cfg = Self::parse(&text, path)?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let location = e
                .span()
                .map(|s| {
                    let before = &text[..s.start.min(text.len())];
                    let line = before.matches('\n').count() + 1;
                    let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                    format!("{line}:{col}:")
                })
                .unwrap_or_default();
            ConfigError::Parse {
                path: path.to_owned(),
                location,
                message: e.message().to_string(),
            }
        })
    }

    /// What our adverts give as the controller's address: `control_address`, or `listen` unless
    /// it is a wildcard (then none: no orchestrator can reach us).
    pub fn advertised_control_address(&self) -> String {
        match &self.control_address {
            Some(a) => a.clone(),
            None if self.listen.starts_with("0.0.0.0:") || self.listen.starts_with("[::]:") => String::new(),
            None => self.listen.clone(),
        }
    }

    pub fn telemetry_interval(&self) -> Duration {
        parse_duration(&self.telemetry_interval).unwrap_or(Duration::from_secs(1))
    }

    pub fn hello_interval(&self) -> Duration {
        self.hello_interval
            .as_deref()
            .and_then(|h| parse_duration(h).ok())
            .unwrap_or_else(|| self.telemetry_interval())
    }

    /// Checks every value; the error names the key and the fix.
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let bad = |key: &str, problem: String, fix: &str| ConfigError::Invalid {
            path: path.to_owned(),
            key: key.into(),
            problem,
            fix: fix.into(),
        };
        if !valid_router_id(&self.router_id) {
            return Err(bad(
                "router_id",
                format!("{:?} is not a router id", self.router_id),
                "use 1-64 letters, digits, '.', '_' or '-'",
            ));
        }
        if self.listen.parse::<SocketAddr>().is_err() {
            return Err(bad(
                "listen",
                format!("{:?} is not an address:port", self.listen),
                "e.g. \"0.0.0.0:7470\"",
            ));
        }
        if let Some(m) = self
            .metrics_listen
            .as_ref()
            .filter(|m| m.parse::<SocketAddr>().is_err())
        {
            return Err(bad(
                "metrics_listen",
                format!("{m:?} is not an address:port"),
                "e.g. \"127.0.0.1:9470\"",
            ));
        }
        for (key, value) in [
            ("telemetry_interval", Some(&self.telemetry_interval)),
            ("hello_interval", self.hello_interval.as_ref()),
        ] {
            let Some(v) = value else { continue };
            match parse_duration(v) {
                Ok(d) if (Duration::from_millis(10)..=Duration::from_secs(600)).contains(&d) => {}
                Ok(d) => {
                    return Err(bad(key, format!("{d:?} is out of range"), "use 10ms to 600s"));
                }
                Err(e) => return Err(bad(key, e.to_string(), "e.g. \"1s\" or \"100ms\"")),
            }
        }
        if let Some(o) = &self.orchestrator {
            if o.datacenter.is_empty() {
                return Err(bad(
                    "orchestrator.datacenter",
                    "is empty".into(),
                    "name the data-centre router",
                ));
            }
            for (key, v) in [
                ("orchestrator.drain", &o.drain),
                ("orchestrator.ready_timeout", &o.ready_timeout),
            ] {
                if let Err(e) = parse_duration(v) {
                    return Err(bad(key, e.to_string(), "e.g. \"2s\""));
                }
            }
            if !(1..=1000).contains(&o.confirm_samples) {
                return Err(bad(
                    "orchestrator.confirm_samples",
                    format!("{} is out of range", o.confirm_samples),
                    "use 1 to 1000",
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
        if !(1..=100).contains(&self.stale_after_intervals) {
            return Err(bad(
                "stale_after_intervals",
                format!("{} is out of range", self.stale_after_intervals),
                "use 1 to 100 (3 is the default)",
            ));
        }
        match (self.resources.source.as_str(), &self.resources.cgroup) {
            ("proc", _) => {}
            ("cgroup", Some(c)) if !c.is_empty() && !c.starts_with('/') && !c.contains("..") => {}
            ("cgroup", _) => {
                return Err(bad(
                    "resources.cgroup",
                    "source = \"cgroup\" needs the router's cgroup".into(),
                    "set cgroup = \"wuos/LAB/ROUTER\" (relative to cgroup_root)",
                ));
            }
            (other, _) => {
                return Err(bad(
                    "resources.source",
                    format!("unknown source {other:?}"),
                    "use \"proc\" (a real machine) or \"cgroup\" (a lab router)",
                ));
            }
        }
        if let Some(d) = &self.domains {
            if d.subnet
                .parse::<wuos_model::Ipv4Net>()
                .map_or(true, |n| n.prefix_len > 29)
            {
                return Err(bad(
                    "domains.subnet",
                    format!("{:?} is not a network with room for domains", d.subnet),
                    "use a /29 or larger, e.g. \"10.253.3.0/24\"",
                ));
            }
            if let Some(Err(e)) = d.routing_memory.as_deref().map(wuos_model::units::parse_bytes) {
                return Err(bad("domains.routing_memory", e.to_string(), "e.g. \"128MiB\""));
            }
            if d.cgroup.is_empty() || d.cgroup.starts_with('/') || d.cgroup.contains("..") {
                return Err(bad(
                    "domains.cgroup",
                    format!("{:?} is not a relative cgroup path", d.cgroup),
                    "e.g. \"wuos/LAB/ROUTER\"",
                ));
            }
            if d.pool > 64 {
                return Err(bad("domains.pool", format!("{} is too many", d.pool), "use 0 to 64"));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for (i, n) in self.neighbors.iter().enumerate() {
            let key = format!("neighbor[{i}]");
            if !valid_router_id(&n.id) || n.id == self.router_id {
                return Err(bad(
                    &format!("{key}.id"),
                    format!("{:?} is not a valid neighbor id", n.id),
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
            if n.address.parse::<SocketAddr>().is_err() {
                return Err(bad(
                    &format!("{key}.address"),
                    format!("{:?} is not an address:port", n.address),
                    "e.g. \"10.0.0.1:7470\"",
                ));
            }
        }
        Ok(())
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

    fn check(text: &str) -> Result<Config, ConfigError> {
        let p = Path::new("wuosd.toml");
        let c = Config::parse(text, p)?;
        c.validate(p)?;
        Ok(c)
    }

    #[test]
    fn a_good_config_loads_with_defaults() {
        let c = check(GOOD).unwrap();
        assert_eq!(c.telemetry_interval(), Duration::from_millis(100));
        assert_eq!(c.hello_interval(), Duration::from_millis(100));
        assert_eq!(c.hop_limit, 2);
        assert_eq!(c.listen, "0.0.0.0:7470");
        assert_eq!(c.neighbors[0].id, "r2");
    }

    #[test]
    fn unknown_keys_are_refused_with_their_location() {
        let e = check(&GOOD.replace("role = \"edge\"", "role = \"edge\"\nspeed = 3")).unwrap_err();
        let s = e.to_string();
        assert!(s.contains("wuosd.toml:4:1") && s.contains("speed"), "{s}");
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
        ];
        for (text, key) in cases {
            let e = check(&text).expect_err(key).to_string();
            assert!(
                e.contains(key) && e.contains("fix:"),
                "expected an error about {key}, got: {e}"
            );
        }
    }
}
