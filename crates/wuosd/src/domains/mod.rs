//! The hypervisor layer of one router: service domains, their admission against what the routing
//! and control domains reserve, the idle pool, persistence and re-adoption.
//!
//! [`Domains`] drives one state machine per domain, [`wuos_model::lifecycle::DomainRecord`]:
//! every operation is an [`Event`] whose [`Action`]s are carried out through the
//! [`DomainBackend`] here; restart policy, typed failures, the health gate and re-adoption live in
//! the record. It is synchronous and owned by one thread ([`component`]); it returns its own types
//! ([`DomainView`], [`DomainsReport`]), converted to protobuf only at the admin API.
//!
//! ```text
//!  start_service ──▶ catalog entry ──▶ DomainSpec ──▶ Admission::admit (refuses, naming the short
//!        │                                             resource and by how much)
//!        ├─ idle pool has one? ──▶ run_parked: the parked init gets its command, thawed
//!        └─ else ──▶ create + start                         ── Event::Start ──▶ Running(Starting)
//!  probes (due_probes / record_probe) ──▶ Healthy: ready ─┐
//!  supervise ──▶ backend.status(): Exited ──▶ Event::Exited ──▶ restart policy
//!  every change ──▶ store (redb): "domain/NAME" = Entry (JSON)
//!  wuosd start ──▶ each stored Entry: backend.status() ──▶ DomainRecord::readopt
//! ```

pub mod component;
pub mod probe;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};
use wuos_model::admission::{Admission, AdmissionError, HostBudget, Reservation};
use wuos_model::catalog::{Catalog, CatalogError, InstanceDirs, load_dir};
use wuos_model::domain::{CpuSpec, DomainKind, DomainSpec, InstanceLink, Isolation, NetAttach};
use wuos_model::lifecycle::{Action, DomainRecord, Event, Found, Health, LifecycleError, State};
use wuos_model::{Classify, ErrorClass, Ipv4Net};
use wuos_southbound::domain::{
    BackendKind, ContainerNet, ContainerSpec, DomainBackend, DomainError, Status as BackendStatus,
};

use crate::config::DomainsConfig;
use crate::store::{Store, StoreError};
use probe::Probe;

/// How long a stopped domain's processes get between SIGTERM and SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(2);

/// Why a domain operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DomainsError {
    #[error("unknown service {service}: {source}")]
    UnknownService {
        service: String,
        #[source]
        source: CatalogError,
    },
    #[error("no domain named {0}")]
    UnknownDomain(String),
    #[error("a domain named {0} exists already")]
    Exists(String),
    #[error("{0}")]
    Admission(#[from] AdmissionError),
    #[error("{0}")]
    Lifecycle(#[from] LifecycleError),
    #[error("the domain subnet {0} is full")]
    SubnetFull(Ipv4Net),
    #[error("{0}")]
    Backend(#[from] DomainError),
    #[error("{0}")]
    Catalog(CatalogError),
    #[error("cannot write {path}: {source}")]
    WriteConfig {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("the domains thread is not running")]
    Gone,
}

impl Classify for DomainsError {
    fn class(&self) -> ErrorClass {
        match self {
            DomainsError::UnknownService { .. } | DomainsError::UnknownDomain(_) => ErrorClass::NotFound,
            // A request that does not fit the resources, or a catalog entry that does not
            // instantiate with the given parameters: the request must change.
            DomainsError::Admission(_) | DomainsError::Catalog(_) => ErrorClass::BadInput,
            DomainsError::Exists(_) | DomainsError::SubnetFull(_) | DomainsError::Lifecycle(_) => ErrorClass::Conflict,
            DomainsError::Gone => ErrorClass::Unavailable,
            DomainsError::Backend(_) | DomainsError::WriteConfig { .. } | DomainsError::Store(_) => {
                ErrorClass::Internal
            }
        }
    }
}

/// What is kept of a domain, in the store (JSON) and in memory.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Entry {
    /// Its spec, lifecycle state and restart count.
    pub record: DomainRecord,
    /// Its /30 in the domain subnet.
    pub slot: u32,
    pub pid: i32,
    /// The name of its namespace, cgroup and run directory: its own name, or `pool-N` for a
    /// domain taken from the idle pool (a namespace cannot be renamed).
    pub host: String,
    /// The service VIP the instance answers on (from the catalog).
    pub vip: Option<Ipv4Addr>,
    /// How long its last start took, milliseconds.
    pub start_ms: f64,
    pub from_pool: bool,
}

/// An idle, frozen, pre-created domain (`pool-N`), ready to become a service.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct PoolMember {
    host: String,
    slot: u32,
    pid: i32,
}

/// A domain as the daemon reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct DomainView {
    pub name: String,
    pub kind: DomainKind,
    pub service: Option<String>,
    pub state: State,
    /// The probes' verdict and the last outcome, while it runs.
    pub health: Option<(Health, String)>,
    /// Running, and healthy (or without a probe): it may take traffic.
    pub ready: bool,
    pub pid: i32,
    pub address: Option<Ipv4Addr>,
    /// Limits; `None`: none.
    pub cpus: Option<f64>,
    pub memory_limit: Option<u64>,
    /// Use, from the last supervision.
    pub memory_bytes: u64,
    /// % of one core over the last supervision period (0 until there are two readings).
    pub cpu_pct: f64,
    pub restarts: u32,
    pub start_ms: f64,
    pub from_pool: bool,
    /// Its veth, for a running container domain.
    pub link: Option<InstanceLink>,
}

/// The routing or the control domain: what it keeps for itself, what it holds, what it uses.
#[derive(Clone, Debug, PartialEq)]
pub struct ReservedDomain {
    pub kind: DomainKind,
    /// Cores it keeps (empty: it shares the router's cores, weighted).
    pub cores: Vec<u32>,
    /// Memory kept out of the services' budget (`None`: nothing kept).
    pub memory: Option<u64>,
    /// What runs in it.
    pub holds: String,
    /// Its processes (the control domain: this daemon).
    pub pid: i32,
    /// Use, from the last supervision (the control domain: its cgroup).
    pub memory_bytes: u64,
    pub cpu_pct: f64,
}

/// Every domain and what is left for services.
#[derive(Clone, Debug, PartialEq)]
pub struct DomainsReport {
    /// The routing domain, then the control domain.
    pub reserved: Vec<ReservedDomain>,
    pub domains: Vec<DomainView>,
    pub free_cpus: f64,
    pub free_memory: u64,
    pub pool_idle: u32,
}

/// A catalog service as the data path classifies it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceSpec {
    pub name: String,
    pub vip: Ipv4Addr,
    pub ports: Vec<(wuos_model::catalog::Proto, u16)>,
}

/// What the other components read without asking: the catalog and every domain as of the last
/// change or supervision.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DomainsSnapshot {
    pub catalog: Vec<String>,
    pub datapath_services: Vec<ServiceSpec>,
    pub domains: Vec<DomainView>,
}

impl DomainsSnapshot {
    /// The domain running service `service`'s instance (named after it), if any.
    pub fn instance(&self, service: &str) -> Option<&DomainView> {
        self.domains.iter().find(|d| d.name == service)
    }
}

/// Resource readings of a domain since the previous supervision.
#[derive(Clone, Copy, Debug, Default)]
struct Readings {
    /// The two latest (when, cumulative CPU ns).
    cpu: Option<[(Instant, u64); 2]>,
    memory_bytes: u64,
}

pub struct Domains {
    cfg: DomainsConfig,
    cgroup_root: PathBuf,
    backend: Arc<dyn DomainBackend>,
    catalog: Catalog,
    admission: Admission,
    entries: BTreeMap<String, Entry>,
    pool: Vec<PoolMember>,
    store: Arc<Store>,
    init_exe: PathBuf,
    readings: BTreeMap<String, Readings>,
    /// Domains started from the pool whose entry is written after the caller has its answer
    /// (see [`Domains::persist_deferred`]): name → the pool member's host name.
    deferred: Vec<(String, String)>,
}

impl std::fmt::Debug for Domains {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Domains").field("entries", &self.entries.len()).finish()
    }
}

const KEY_PREFIX: &str = "domain/";
const POOL_KEY_PREFIX: &str = "pool/";
const POOL_PREFIX: &str = "pool-";

impl Domains {
    /// Loads the catalog, sets up admission and re-adopts what the store knows. Pool members an
    /// earlier daemon left are removed (call [`Domains::fill_pool`] to make new ones).
    pub fn open(
        cfg: DomainsConfig,
        cgroup_root: PathBuf,
        budget: HostBudget,
        store: Arc<Store>,
        backend: Arc<dyn DomainBackend>,
    ) -> Result<Self, DomainsError> {
        let catalog = load_dir(&cfg.catalog).map_err(DomainsError::Catalog)?;
        let reservation = Reservation {
            routing_cores: cfg.routing_cores.clone(),
            routing_memory: cfg.routing_memory.unwrap_or(0),
            control_memory: cfg.control_memory.unwrap_or(0),
        };
        let admission = Admission::new(budget, reservation)?;
        let init_exe = cfg
            .init_exe
            .clone()
            .or_else(|| std::env::current_exe().ok())
            .unwrap_or_else(|| PathBuf::from("wuosd"));
        let mut d = Self {
            cfg,
            cgroup_root,
            backend,
            catalog,
            admission,
            entries: BTreeMap::new(),
            pool: Vec::new(),
            store,
            init_exe,
            readings: BTreeMap::new(),
            deferred: Vec::new(),
        };
        d.readopt()?;
        Ok(d)
    }

    /// The backend's spec of a domain kept under `host` in `slot`.
    fn cspec(&self, host: &str, slot: u32, spec: &DomainSpec, vip: Option<Ipv4Addr>) -> ContainerSpec {
        let base = u32::from(self.cfg.subnet.addr) + 4 * slot;
        let cpus = match &spec.cpu {
            Some(CpuSpec::Quota(c)) => Some(*c),
            _ => None,
        };
        let cpuset = match &spec.cpu {
            Some(CpuSpec::Cores(c)) => Some(c.clone()),
            _ if spec.kind == DomainKind::Routing => Some(self.cfg.routing_cores.clone()).filter(|c| !c.is_empty()),
            _ => Some(self.admission.service_cores().to_vec()).filter(|c| !c.is_empty()),
        };
        let cpu_weight = match &spec.cpu {
            Some(CpuSpec::Share(w)) => Some(*w),
            _ => None,
        };
        let group = if spec.kind == DomainKind::Routing {
            "routing"
        } else {
            "services"
        };
        ContainerSpec {
            name: host.to_string(),
            router_netns: self.cfg.router_netns.clone(),
            netns_name: format!("{}.{host}", self.cfg.netns_prefix),
            netns_dir: self.cfg.netns_dir.clone(),
            cgroup_root: self.cgroup_root.clone(),
            cgroup: format!("{}/{group}/{host}", self.cfg.cgroup),
            cpus,
            cpuset,
            cpu_weight,
            memory: spec.memory,
            net: Some(ContainerNet {
                host_if: format!("d{slot}"),
                dom_if: "eth0".into(),
                host_addr: Ipv4Addr::from(base + 1),
                dom_addr: Ipv4Addr::from(base + 2),
                prefix_len: 30,
                routes_via_host: true,
                vips: vip.into_iter().collect(),
            }),
            argv: spec.argv.clone(),
            env: self.env_with_path(&spec.env),
            run_dir: self.cfg.run_dir.join(host),
            init_exe: self.init_exe.clone(),
            backend: match spec.isolation {
                Isolation::Container => BackendKind::Container,
                Isolation::Vm => BackendKind::Vm,
            },
        }
    }

    fn entry_spec(&self, e: &Entry) -> ContainerSpec {
        self.cspec(&e.host, e.slot, &e.record.spec, e.vip)
    }

    /// The domain's environment; without a PATH of its own it gets the standard one, led by the
    /// directory of the wuos binaries (catalog commands such as `wuos hog` live there).
    fn env_with_path(&self, env: &[(String, String)]) -> Vec<(String, String)> {
        let mut env = env.to_vec();
        if !env.iter().any(|(k, _)| k == "PATH") {
            let mut path = String::new();
            if let Some(dir) = self.init_exe.parent() {
                path.push_str(&format!("{}:", dir.display()));
            }
            path.push_str(wuos_southbound::domain::DEFAULT_PATH);
            env.push(("PATH".into(), path));
        }
        env
    }

    fn free_slot(&self) -> Result<u32, DomainsError> {
        let used: std::collections::HashSet<u32> = self
            .entries
            .values()
            .map(|e| e.slot)
            .chain(self.pool.iter().map(|p| p.slot))
            .collect();
        let slots = (self.cfg.subnet.size() / 4) as u32;
        (0..slots)
            .find(|s| !used.contains(s))
            .ok_or(DomainsError::SubnetFull(self.cfg.subnet))
    }

    /// Writes domain `name`'s entry (or removes it when it is gone); for a domain started from
    /// the pool, its pool member's key goes in the same transaction.
    fn persist(&mut self, name: &str) {
        let key = format!("{KEY_PREFIX}{name}");
        let pool_key = self
            .deferred
            .iter()
            .position(|(n, _)| n == name)
            .map(|i| format!("{POOL_KEY_PREFIX}{}", self.deferred.remove(i).1));
        let deletes: Vec<&str> = pool_key.iter().map(String::as_str).collect();
        let r = match self.entries.get(name) {
            Some(e) => {
                let entry = serde_json::to_vec(e).expect("entries serialize");
                self.store.update(&[(key.as_str(), entry.as_slice())], &deletes)
            }
            None => self.store.update(&[], &[&[key.as_str()][..], &deletes].concat()),
        };
        if let Err(e) = r {
            warn!(domain = name, error = %e, "cannot persist domain state");
        }
    }

    /// After a daemon restart: every stored domain is matched with what the backend finds and
    /// its record decides (adopt, restart, fail, remove); stored pool members are destroyed.
    fn readopt(&mut self) -> Result<(), DomainsError> {
        for (key, value) in self.store.blobs_with_prefix(POOL_KEY_PREFIX)? {
            if let Ok(p) = serde_json::from_slice::<PoolMember>(&value) {
                let spec = self.cspec(&p.host, p.slot, &DomainSpec::parked(&p.host), None);
                if let Err(e) = self.backend.destroy(&spec) {
                    warn!(domain = %p.host, error = %e, "cannot remove an old pool member");
                }
            }
            self.store.delete_blob(&key)?;
        }
        for (key, value) in self.store.blobs_with_prefix(KEY_PREFIX)? {
            let name = key.trim_start_matches(KEY_PREFIX).to_string();
            let Ok(mut e) = serde_json::from_slice::<Entry>(&value) else {
                warn!(domain = %name, "unreadable stored domain state (written by an older wuosd?); left alone");
                continue;
            };
            let spec = self.entry_spec(&e);
            let found = match self.backend.status(&spec) {
                BackendStatus::Running { pid } => {
                    e.pid = pid;
                    Found::Running
                }
                BackendStatus::Paused { pid } => {
                    e.pid = pid;
                    Found::Paused
                }
                BackendStatus::Exited { code } => Found::Exited { code },
                BackendStatus::Absent => Found::Absent,
            };
            let actions = e.record.readopt(found);
            info!(domain = %name, state = %e.record.state, found = ?found, "re-adopted");
            if e.record.state != State::Destroyed
                && let Err(err) = self.admission.admit(&e.record.spec)
            {
                warn!(domain = %name, error = %err, "re-adopted domain no longer fits the budget");
            }
            self.entries.insert(name.clone(), e);
            self.execute(&name, actions);
        }
        Ok(())
    }

    /// Keeps `cfg.pool` parked, frozen domains ready. Called off the path of a start (after its
    /// caller has its answer).
    pub fn fill_pool(&mut self) {
        while (self.pool.len() as u32) < self.cfg.pool {
            // A pool name must be free everywhere: domains taken from the pool keep theirs.
            let in_use = |n: &str| self.pool.iter().any(|p| p.host == n) || self.entries.values().any(|e| e.host == n);
            let Some(host) = (0..).map(|i| format!("{POOL_PREFIX}{i}")).find(|n| !in_use(n)) else {
                return;
            };
            let Ok(slot) = self.free_slot() else { return };
            let cs = self.cspec(&host, slot, &DomainSpec::parked(&host), None);
            if let Err(err) = self.backend.create(&cs) {
                // Nothing of ours to clean: what exists under that name is someone else's.
                warn!(error = %err, "cannot fill the idle pool");
                return;
            }
            let parked = self
                .backend
                .start_parked(&cs)
                .and_then(|pid| self.backend.pause(&cs).map(|()| pid));
            let pid = match parked {
                Ok(pid) => pid,
                Err(err) => {
                    warn!(error = %err, "cannot fill the idle pool");
                    let _ = self.backend.destroy(&cs);
                    return;
                }
            };
            let member = PoolMember { host, slot, pid };
            // Stored so that a restarted daemon finds and removes it (pool members are rebuilt).
            if let Err(err) = self.store.put_blob(
                &format!("{POOL_KEY_PREFIX}{}", member.host),
                &serde_json::to_vec(&member).expect("pool members serialize"),
            ) {
                warn!(error = %err, "cannot persist a pool member");
            }
            self.pool.push(member);
        }
    }

    /// Starts an instance of catalog service `service` named `name` (empty: `SERVICE-N`).
    pub fn start_service(
        &mut self,
        service: &str,
        name: &str,
        params: &BTreeMap<String, String>,
    ) -> Result<DomainView, DomainsError> {
        let t0 = Instant::now();
        let def = self
            .catalog
            .get(service)
            .map_err(|source| DomainsError::UnknownService {
                service: service.into(),
                source,
            })?
            .clone();
        let name = if name.is_empty() {
            (1..)
                .map(|i| format!("{service}-{i}"))
                .find(|n| !self.entries.contains_key(n))
                .expect("a free instance name")
        } else {
            name.to_string()
        };
        if self.entries.contains_key(&name) {
            return Err(DomainsError::Exists(name));
        }
        // The pool holds parked containers: a vm domain boots on its own.
        let pooled = if def.isolation == Isolation::Container {
            self.pool.pop()
        } else {
            None
        };
        let made = self.instantiate(&def, &name, pooled.as_ref(), params);
        let (spec, slot, host) = match made {
            Ok(x) => x,
            Err(e) => {
                self.pool.extend(pooled);
                return Err(e);
            }
        };
        let mut record = DomainRecord::new(spec);
        record.handle(&Event::Start)?;
        let mut e = Entry {
            record,
            slot,
            pid: 0,
            host,
            vip: def.vip,
            start_ms: 0.0,
            from_pool: pooled.is_some(),
        };
        let cs = self.entry_spec(&e);
        let started = match pooled {
            // A thaw and a configuration: the parked init gets its command and execs it.
            Some(_) => self.backend.run_parked(&cs),
            None => self.backend.create(&cs).and_then(|()| self.backend.start(&cs)),
        };
        match started {
            Ok(pid) => {
                e.pid = pid;
                e.start_ms = t0.elapsed().as_secs_f64() * 1e3;
                info!(domain = %name, service, pid, start_ms = e.start_ms, from_pool = e.from_pool, "service started");
                let pool_host = e.from_pool.then(|| e.host.clone());
                self.entries.insert(name.clone(), e);
                match pool_host {
                    // Written once the caller has its answer; until then the store still lists
                    // the pool member, so a daemon that dies in between removes the domain
                    // rather than losing track of it.
                    Some(host) => self.deferred.push((name.clone(), host)),
                    None => self.persist(&name),
                }
                Ok(self.view(&name, true).expect("just inserted"))
            }
            Err(err) => {
                self.admission.release(&name);
                let _ = self.backend.destroy(&cs);
                Err(err.into())
            }
        }
    }

    /// Writes the entries of domains started from the pool (called once their callers have their
    /// answers), each with its pool member's key removed in the same transaction.
    pub fn persist_deferred(&mut self) {
        let names: Vec<String> = self.deferred.iter().map(|(n, _)| n.clone()).collect();
        for name in names {
            self.persist(&name);
        }
    }

    /// Makes the spec of `name` from `def` (in the pool member's slot when there is one), writes
    /// its rendered config file where the domain sees it, and admits it.
    fn instantiate(
        &mut self,
        def: &wuos_model::catalog::ServiceDef,
        name: &str,
        pooled: Option<&PoolMember>,
        params: &BTreeMap<String, String>,
    ) -> Result<(DomainSpec, u32, String), DomainsError> {
        let slot = match pooled {
            Some(p) => p.slot,
            None => self.free_slot()?,
        };
        let base = u32::from(self.cfg.subnet.addr) + 4 * slot;
        let attach = NetAttach {
            address: Ipv4Addr::from(base + 2),
            prefix_len: 30,
            gateway: Some(Ipv4Addr::from(base + 1)),
        };
        // Its files live where the domain sees them: the run directory of its host name (a pool
        // member keeps `pool-N`); inside the domain /run is private, except this directory.
        let host = pooled.map_or_else(|| name.to_string(), |p| p.host.clone());
        let dir = self.cfg.run_dir.join(&host);
        let dirs = InstanceDirs {
            config_dir: dir.display().to_string(),
            run_dir: dir.display().to_string(),
        };
        // The site's values for this service, then the caller's.
        let mut merged = self.cfg.params.get(def.name.as_str()).cloned().unwrap_or_default();
        merged.extend(params.iter().map(|(k, v)| (k.clone(), v.clone())));
        let spec = def
            .instantiate(name, attach, &dirs, &merged)
            .map_err(DomainsError::Catalog)?;
        let vars = def.vars(name, attach, &dirs, &merged).map_err(DomainsError::Catalog)?;
        if let Some((file, text)) = self
            .catalog
            .render_config(&def.name, &vars)
            .map_err(DomainsError::Catalog)?
        {
            let path = dir.join(&file);
            std::fs::create_dir_all(&dir)
                .and_then(|()| std::fs::write(&path, text))
                .map_err(|source| DomainsError::WriteConfig { path, source })?;
        }
        self.admission.admit(&spec)?;
        Ok((spec, slot, host))
    }

    /// `start` (or keep) the one instance of `service` (named after it), or destroy it: what a
    /// controller's instance intent asks. A stopped or failed instance is started afresh.
    pub fn ensure(&mut self, service: &str, present: bool) -> Result<(), DomainsError> {
        let state = self.entries.get(service).map(|e| e.record.state.clone());
        match (present, state) {
            (false, None) => Ok(()),
            (false, Some(_)) => {
                self.destroy(service)?;
                info!(%service, "instance removed (intent)");
                Ok(())
            }
            (true, Some(State::Running | State::Paused)) => Ok(()),
            (true, Some(_)) => {
                self.destroy(service)?;
                self.start_service(service, service, &BTreeMap::new()).map(drop)
            }
            (true, None) => {
                self.start_service(service, service, &BTreeMap::new())?;
                info!(%service, "instance started (intent)");
                Ok(())
            }
        }
    }

    /// Feeds `event` to domain `name`'s record and carries out its actions.
    fn apply(&mut self, name: &str, event: Event) -> Result<DomainView, DomainsError> {
        let e = self
            .entries
            .get_mut(name)
            .ok_or_else(|| DomainsError::UnknownDomain(name.into()))?;
        let actions = e.record.handle(&event)?;
        let failed = self.execute(name, actions);
        let view = self.view(name, true);
        if self
            .entries
            .get(name)
            .is_some_and(|e| e.record.state == State::Destroyed)
        {
            self.entries.remove(name);
            self.readings.remove(name);
            self.admission.release(name);
        }
        self.persist(name);
        match failed {
            Some(err) => Err(err),
            None => Ok(view.expect("the entry existed when the event was fed")),
        }
    }

    /// Carries out a record's actions for domain `name`; a spawn that fails is fed back to the
    /// record as [`Event::SpawnFailed`]. Returns the first backend error.
    fn execute(&mut self, name: &str, actions: Vec<Action>) -> Option<DomainsError> {
        let mut first = None;
        for a in actions {
            let Some(e) = self.entries.get(name) else { break };
            let cs = self.entry_spec(e);
            let r: Result<Option<i32>, DomainError> = match a {
                Action::Spawn => self
                    .backend
                    .create(&cs)
                    .and_then(|()| self.backend.start(&cs))
                    .map(Some),
                Action::Restart => {
                    let _ = self.backend.destroy(&cs);
                    self.backend
                        .create(&cs)
                        .and_then(|()| self.backend.start(&cs))
                        .map(Some)
                }
                Action::Freeze => self.backend.pause(&cs).map(|()| None),
                Action::Thaw => self.backend.resume(&cs).map(|()| None),
                Action::Kill => self.backend.stop(&cs, STOP_GRACE).map(|()| None),
                Action::Remove => self.backend.destroy(&cs).map(|()| None),
            };
            let e = self.entries.get_mut(name).expect("checked above");
            match r {
                Ok(Some(pid)) => {
                    e.pid = pid;
                    if a == Action::Restart {
                        info!(domain = name, restarts = e.record.restarts, pid, "restarted");
                    }
                }
                Ok(None) => {}
                Err(err) if matches!(a, Action::Spawn | Action::Restart) => {
                    warn!(domain = name, error = %err, "cannot start");
                    let followup = e
                        .record
                        .handle(&Event::SpawnFailed { error: err.to_string() })
                        .unwrap_or_default();
                    first.get_or_insert(DomainsError::Backend(err));
                    return self.execute(name, followup).or(first);
                }
                Err(err) => {
                    warn!(domain = name, action = ?a, error = %err, "domain action failed");
                    first.get_or_insert(DomainsError::Backend(err));
                }
            }
        }
        first
    }

    pub fn pause(&mut self, name: &str) -> Result<DomainView, DomainsError> {
        self.apply(name, Event::Pause)
    }

    pub fn resume(&mut self, name: &str) -> Result<DomainView, DomainsError> {
        self.apply(name, Event::Resume)
    }

    pub fn stop(&mut self, name: &str) -> Result<DomainView, DomainsError> {
        self.apply(name, Event::Stop)
    }

    pub fn destroy(&mut self, name: &str) -> Result<DomainView, DomainsError> {
        self.apply(name, Event::Destroy)
    }

    /// Periodic check (once a second): takes every domain's CPU and memory reading, and feeds
    /// the exit of a running domain's processes to its record (the restart policy decides).
    pub fn supervise(&mut self) {
        let now = Instant::now();
        let control = ContainerSpec {
            name: "control".into(),
            cgroup_root: self.cgroup_root.clone(),
            cgroup: control_cgroup(&self.cfg),
            ..ContainerSpec::default()
        };
        self.read_usage(CONTROL, &control, now);
        let names: Vec<String> = self.entries.keys().cloned().collect();
        for name in names {
            let cs = self.entry_spec(&self.entries[&name]);
            self.read_usage(&name, &cs, now);
            if !self.entries[&name].record.state.expects_processes() {
                continue;
            }
            let code = match self.backend.status(&cs) {
                BackendStatus::Exited { code } => code,
                BackendStatus::Absent => None,
                BackendStatus::Running { .. } | BackendStatus::Paused { .. } => continue,
            };
            warn!(domain = %name, ?code, "exited");
            let _ = self.apply(&name, Event::Exited { code });
        }
    }

    /// Takes one CPU and memory reading of `spec`'s cgroup, kept under `key`.
    fn read_usage(&mut self, key: &str, spec: &ContainerSpec, now: Instant) {
        if let Some(u) = self.backend.usage(spec) {
            let r = self.readings.entry(key.to_string()).or_default();
            let reading = (now, u.cpu_ns);
            r.cpu = Some(r.cpu.map_or([reading, reading], |[_, last]| [last, reading]));
            r.memory_bytes = u.memory_bytes;
        }
    }

    /// The health probes due at `now_ms`; run them off this thread and hand the outcomes to
    /// [`Domains::record_probe`].
    pub fn due_probes(&self, now_ms: u64) -> Vec<Probe> {
        self.entries
            .iter()
            .filter(|(_, e)| e.record.probe_due(now_ms))
            .filter_map(|(name, e)| {
                let check = e.record.spec.health.as_ref()?;
                let net = e.record.spec.net.as_ref()?;
                Some(Probe {
                    domain: name.clone(),
                    pid: e.pid,
                    kind: check.kind.clone(),
                    addr: net.address,
                    timeout: check.timeout,
                    vm: e.record.spec.isolation == Isolation::Vm,
                })
            })
            .collect()
    }

    /// Records a probe's outcome for domain `name` as it ran beside process `pid` (an outcome
    /// about an earlier incarnation is dropped); a domain that has just turned unhealthy gets its
    /// restart policy.
    pub fn record_probe(&mut self, name: &str, pid: i32, now_ms: u64, outcome: Result<(), String>) {
        if self.entries.get(name).is_none_or(|e| e.pid != pid) {
            return;
        }
        // A verdict that comes before the domain's first supervision comes with its first
        // reading: an advert must not call an instance healthy while saying it uses no memory.
        if !self.readings.contains_key(name) {
            let cs = self.entry_spec(&self.entries[name]);
            self.read_usage(name, &cs, Instant::now());
        }
        let Some(e) = self.entries.get_mut(name) else {
            return;
        };
        let was = e.record.state.clone();
        let actions = e.record.record_probe(now_ms, outcome);
        if !actions.is_empty() {
            let detail = e.record.health().map(|h| h.detail.clone()).unwrap_or_default();
            warn!(domain = name, %detail, "unhealthy");
            if let Some(err) = self.execute(name, actions) {
                warn!(domain = name, error = %err, "after an unhealthy verdict");
            }
        }
        if self.entries.get(name).is_some_and(|e| e.record.state != was) || !self.entries.contains_key(name) {
            self.persist(name);
        }
    }

    /// Domain `name` as reported; `with_usage` reads its cgroup now (else: the last supervision).
    fn view(&self, name: &str, with_usage: bool) -> Option<DomainView> {
        let e = self.entries.get(name)?;
        let cs = self.entry_spec(e);
        let readings = self.readings.get(name).copied().unwrap_or_default();
        let memory_bytes = if with_usage {
            self.backend
                .usage(&cs)
                .map_or(readings.memory_bytes, |u| u.memory_bytes)
        } else {
            readings.memory_bytes
        };
        let cpu_pct = cpu_pct(&readings);
        let running = e.record.state == State::Running;
        let link = cs
            .net
            .as_ref()
            .filter(|_| running && e.record.spec.isolation == Isolation::Container)
            .map(|n| InstanceLink {
                host_if: n.host_if.clone(),
                netns: cs.netns_path(),
                dom_if: n.dom_if.clone(),
            });
        Some(DomainView {
            name: name.into(),
            kind: e.record.spec.kind,
            service: e.record.spec.service.clone(),
            state: e.record.state.clone(),
            health: e.record.health().map(|h| (h.health, h.detail.clone())),
            ready: e.record.is_ready(),
            pid: e.pid,
            address: e.record.spec.net.as_ref().map(|n| n.address),
            cpus: cs.cpus,
            memory_limit: cs.memory,
            memory_bytes,
            cpu_pct,
            restarts: e.record.restarts,
            start_ms: e.start_ms,
            from_pool: e.from_pool,
            link,
        })
    }

    /// Every domain (usage read now) and what is left for services.
    pub fn report(&self) -> DomainsReport {
        let (free_cpus, free_memory) = self.admission.free();
        let control = self.readings.get(CONTROL).copied().unwrap_or_default();
        let reserved = vec![
            ReservedDomain {
                kind: DomainKind::Routing,
                cores: self.cfg.routing_cores.clone(),
                memory: self.cfg.routing_memory,
                holds: "kernel forwarding".into(),
                pid: 0,
                memory_bytes: 0,
                cpu_pct: 0.0,
            },
            ReservedDomain {
                kind: DomainKind::Control,
                cores: if self.cfg.control_domain {
                    self.cfg.routing_cores.clone()
                } else {
                    Vec::new()
                },
                memory: self.cfg.control_memory,
                holds: if self.cfg.control_domain {
                    "wuosd: protocol, monitor, controller, orchestrator".into()
                } else {
                    "wuosd (not set apart: control_domain = false)".into()
                },
                pid: std::process::id() as i32,
                memory_bytes: control.memory_bytes,
                cpu_pct: cpu_pct(&control),
            },
        ];
        DomainsReport {
            reserved,
            domains: self.entries.keys().filter_map(|n| self.view(n, true)).collect(),
            free_cpus,
            free_memory,
            pool_idle: self.pool.len() as u32,
        }
    }

    /// What the other components read (usage as of the last supervision).
    pub fn snapshot(&self) -> DomainsSnapshot {
        DomainsSnapshot {
            catalog: self.catalog.services.keys().cloned().collect(),
            datapath_services: self
                .catalog
                .services
                .values()
                .filter_map(|d| {
                    Some(ServiceSpec {
                        name: d.name.clone(),
                        vip: d.vip?,
                        ports: d.ports.iter().map(|p| (p.proto, p.port)).collect(),
                    })
                })
                .collect(),
            domains: self.entries.keys().filter_map(|n| self.view(n, false)).collect(),
        }
    }
}

/// % of one core between the two latest readings (0 until there are two).
fn cpu_pct(r: &Readings) -> f64 {
    r.cpu.map_or(0.0, |[(t0, a), (t1, b)]| {
        let dt = t1.duration_since(t0).as_nanos() as f64;
        if dt > 0.0 {
            b.saturating_sub(a) as f64 / dt * 100.0
        } else {
            0.0
        }
    })
}

/// The readings key of the control domain (not a domain name: names cannot have capitals).
const CONTROL: &str = "CONTROL";

/// The control domain's cgroup under the router's.
pub fn control_cgroup(cfg: &DomainsConfig) -> String {
    format!("{}/control", cfg.cgroup)
}

/// How much CPU the control domain weighs against the services (the default weight is 100).
pub const CONTROL_CPU_WEIGHT: u32 = 400;

/// Moves this process (wuosd: protocol, monitor, controller, orchestrator) into the router's
/// control domain: its own cgroup, on the routing cores when routing keeps some (never the
/// services' cores) and weighted above services otherwise. Its memory reservation is kept out of
/// the services' budget by admission, not capped: a capped control plane could be OOM-killed.
pub fn enter_control_domain(
    cgroup_root: &std::path::Path,
    cfg: &DomainsConfig,
) -> Result<Option<String>, wuos_southbound::cgroup::CgroupError> {
    use wuos_southbound::cgroup::{CgroupFs, Limits};
    if !cfg.control_domain {
        return Ok(None);
    }
    let cg = CgroupFs::detect(cgroup_root)?;
    let rel = control_cgroup(cfg);
    cg.create(&rel, &Limits::default())?;
    if !cfg.routing_cores.is_empty() {
        cg.set_cpuset(&rel, Some(&cfg.routing_cores))?;
    }
    cg.set_cpu_weight(&rel, Some(CONTROL_CPU_WEIGHT))?;
    cg.join(&rel, std::process::id())?;
    Ok(Some(rel))
}

#[cfg(test)]
mod tests;
