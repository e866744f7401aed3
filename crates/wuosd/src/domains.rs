//! The hypervisor layer of one router: service, control and routing domains, their admission
//! against what the routing domain reserves, the idle pool, persistence and re-adoption.
//!
//! ```text
//!  Admin RPC ──▶ Domains::start_service ──▶ catalog entry ──▶ DomainSpec ──▶ Admission::admit
//!                     │                                                      (refuses, naming
//!                     ├─ idle pool has one? ──▶ write argv, thaw: the parked  the short resource)
//!                     │                          init execs the service
//!                     └─ else ──▶ backend.create + backend.start
//!  every change ──▶ store (redb): "domain/NAME" = Entry (JSON)
//!  wuosd start ──▶ for each stored Entry: backend.status() ──▶ re-adopt (Running/Paused) or
//!                  apply the restart policy (Exited/Absent)
//!  supervise tick ──▶ backend.status() of running domains ──▶ restart policy
//! ```

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};
use wuos_model::Ipv4Net;
use wuos_model::admission::{Admission, HostBudget, Reservation};
use wuos_model::catalog::{Catalog, InstanceDirs, load_dir};
use wuos_model::domain::{CpuSpec, DomainKind, DomainSpec, Isolation, NetAttach, RestartPolicy};
use wuos_proto::pb;
use wuos_southbound::domain::{BackendKind, ContainerNet, ContainerSpec, DomainBackend, Status as BackendStatus};

use crate::config::DomainsConfig;
use crate::health::{Health, HealthState, Probe};
use crate::store::Store;

#[derive(Debug, thiserror::Error)]
pub enum DomainsError {
    #[error("{1}")]
    UnknownService(String, String),
    #[error("no domain named {0}")]
    UnknownDomain(String),
    #[error("a domain named {0} exists already")]
    Exists(String),
    #[error("{0}")]
    Refused(String),
    #[error("the domain subnet {0} is full")]
    SubnetFull(String),
    #[error("{0}")]
    Backend(String),
    #[error("{0}")]
    Catalog(String),
    #[error("store: {0}")]
    Store(String),
}

impl wuos_model::Classify for DomainsError {
    fn class(&self) -> wuos_model::ErrorClass {
        use wuos_model::ErrorClass as C;
        match self {
            DomainsError::UnknownService(..) | DomainsError::UnknownDomain(_) => C::NotFound,
            DomainsError::Refused(_) | DomainsError::Catalog(_) => C::BadInput,
            DomainsError::Exists(_) | DomainsError::SubnetFull(_) => C::Conflict,
            DomainsError::Backend(_) | DomainsError::Store(_) => C::Internal,
        }
    }
}

/// What is kept of a domain, in the store and in memory.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Entry {
    pub spec: DomainSpec,
    /// "created", "running", "paused", "stopped", "failed: …", "pooled".
    pub state: String,
    pub slot: u32,
    pub restarts: u32,
    pub start_ms: f64,
    pub from_pool: bool,
    #[serde(default)]
    pub pid: i32,
    /// The name of its namespace, cgroup and run directory: its own name, or `pool-N` for a
    /// domain taken from the idle pool (a namespace cannot be renamed).
    #[serde(default)]
    pub host: String,
    /// The service VIP the instance answers on (from the catalog).
    #[serde(default)]
    pub vip: Option<Ipv4Addr>,
}

pub struct Domains {
    cfg: DomainsConfig,
    cgroup_root: PathBuf,
    backend: Arc<dyn DomainBackend>,
    catalog: Catalog,
    admission: Admission,
    entries: BTreeMap<String, Entry>,
    /// Idle, frozen, pre-created domains (names pool-N), ready to become a service.
    pool: Vec<Entry>,
    store: Arc<Store>,
    subnet: Ipv4Net,
    init_exe: PathBuf,
    /// The two latest CPU readings of each domain (when, cumulative ns), taken by
    /// [`Domains::supervise`] once a second: its CPU % is the rate between them.
    cpu_seen: BTreeMap<String, [(Instant, u64); 2]>,
    /// Health-probe bookkeeping of running domains (see [`crate::health`]).
    health: BTreeMap<String, HealthState>,
}

impl std::fmt::Debug for Domains {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Domains").field("entries", &self.entries.len()).finish()
    }
}

/// The health probe of domain `name` as its service defines it (`None`: no probe or no address).
fn probe_of(name: &str, e: &Entry) -> Option<Probe> {
    let check = e.spec.health.as_ref()?;
    let net = e.spec.net.as_ref()?;
    Some(Probe {
        domain: name.to_string(),
        kind: check.kind.clone(),
        addr: net.address,
        timeout: check.timeout,
        pid: e.pid,
        vm: e.spec.isolation == Isolation::Vm,
    })
}

const KEY_PREFIX: &str = "domain/";
const POOL_PREFIX: &str = "pool-";

impl Domains {
    /// Loads the catalog, sets up admission, re-adopts what the store knows and fills the pool.
    pub fn open(
        cfg: DomainsConfig,
        cgroup_root: PathBuf,
        budget: HostBudget,
        store: Arc<Store>,
        backend: Arc<dyn DomainBackend>,
    ) -> Result<Self, DomainsError> {
        let catalog = load_dir(&cfg.catalog).map_err(|e| DomainsError::Catalog(e.to_string()))?;
        let reservation = Reservation {
            routing_cores: cfg.routing_cores.clone(),
            routing_memory: cfg.routing_memory.unwrap_or(0),
        };
        let admission = Admission::new(budget, reservation).map_err(|e| DomainsError::Refused(e.to_string()))?;
        let subnet: Ipv4Net = cfg.subnet;
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
            subnet,
            init_exe,
            cpu_seen: BTreeMap::new(),
            health: BTreeMap::new(),
        };
        d.readopt()?;
        d.fill_pool();
        Ok(d)
    }

    fn cspec(&self, name: &str, e: &Entry) -> ContainerSpec {
        let name = if e.host.is_empty() { name } else { e.host.as_str() };
        let base = u32::from(self.subnet.addr) + 4 * e.slot;
        let cpus = match &e.spec.cpu {
            Some(CpuSpec::Quota(c)) => Some(*c),
            _ => None,
        };
        let cpuset = match &e.spec.cpu {
            Some(CpuSpec::Cores(c)) => Some(c.clone()),
            _ if e.spec.kind == DomainKind::Routing => Some(self.cfg.routing_cores.clone()).filter(|c| !c.is_empty()),
            _ => Some(self.admission.service_cores().to_vec()).filter(|c| !c.is_empty()),
        };
        let cpu_weight = match &e.spec.cpu {
            Some(CpuSpec::Share(w)) => Some(*w),
            _ => None,
        };
        let group = if e.spec.kind == DomainKind::Routing {
            "routing"
        } else {
            "services"
        };
        ContainerSpec {
            name: name.to_string(),
            router_netns: self.cfg.router_netns.clone(),
            netns_name: format!("{}.{name}", self.cfg.netns_prefix),
            netns_dir: self.cfg.netns_dir.clone(),
            cgroup_root: self.cgroup_root.clone(),
            cgroup: format!("{}/{group}/{name}", self.cfg.cgroup),
            cpus,
            cpuset,
            cpu_weight,
            memory: e.spec.memory,
            net: Some(ContainerNet {
                host_if: format!("d{}", e.slot),
                dom_if: "eth0".into(),
                host_addr: Ipv4Addr::from(base + 1),
                dom_addr: Ipv4Addr::from(base + 2),
                prefix_len: 30,
                routes_via_host: true,
                vips: e.vip.into_iter().collect(),
            }),
            argv: e.spec.argv.clone(),
            env: self.env_with_path(&e.spec.env),
            run_dir: self.cfg.run_dir.join(name),
            init_exe: self.init_exe.clone(),
            backend: match e.spec.isolation {
                Isolation::Container => BackendKind::Container,
                Isolation::Vm => BackendKind::Vm,
            },
        }
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
            path.push_str("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
            env.push(("PATH".into(), path));
        }
        env
    }

    fn free_slot(&self) -> Result<u32, DomainsError> {
        let used: std::collections::HashSet<u32> =
            self.entries.values().chain(self.pool.iter()).map(|e| e.slot).collect();
        let slots = (self.subnet.size() / 4) as u32;
        (0..slots)
            .find(|s| !used.contains(s))
            .ok_or_else(|| DomainsError::SubnetFull(self.cfg.subnet.to_string()))
    }

    fn persist(&self, name: &str) {
        let r = match self.entries.get(name) {
            Some(e) => self.store.put_blob(
                &format!("{KEY_PREFIX}{name}"),
                &serde_json::to_vec(e).expect("entries serialize"),
            ),
            None => self.store.delete_blob(&format!("{KEY_PREFIX}{name}")),
        };
        if let Err(e) = r {
            warn!(domain = name, error = %e, "cannot persist domain state");
        }
    }

    /// After a daemon restart: keep what still runs, restart or mark what does not.
    fn readopt(&mut self) -> Result<(), DomainsError> {
        let stored = self
            .store
            .blobs_with_prefix(KEY_PREFIX)
            .map_err(|e| DomainsError::Store(e.to_string()))?;
        for (key, value) in stored {
            let name = key.trim_start_matches(KEY_PREFIX).to_string();
            let Ok(mut e) = serde_json::from_slice::<Entry>(&value) else {
                warn!(domain = %name, "unreadable stored domain state; skipped");
                continue;
            };
            let spec = self.cspec(&name, &e);
            let status = self.backend.status(&spec);
            e.state = match (&e.state[..], status) {
                (_, BackendStatus::Running { pid }) => {
                    e.pid = pid;
                    "running".into()
                }
                (_, BackendStatus::Paused { pid }) => {
                    e.pid = pid;
                    "paused".into()
                }
                ("stopped", _) => "stopped".into(),
                (_, BackendStatus::Exited { code }) => format!("failed: exited with {code:?} while wuosd was down"),
                (_, BackendStatus::Absent) => "failed: gone while wuosd was down".into(),
            };
            info!(domain = %name, state = %e.state, "re-adopted");
            if name.starts_with(POOL_PREFIX) {
                // Pool members are recreated: a frozen parked init is cheap to make again.
                let _ = self.backend.destroy(&spec);
                self.store.delete_blob(&key).ok();
                continue;
            }
            let _ = self.admission.admit(&e.spec);
            self.entries.insert(name.clone(), e);
            if self.entries[&name].state.starts_with("failed") {
                self.apply_restart_policy(&name);
            }
        }
        Ok(())
    }

    /// Keeps `cfg.pool` parked, frozen domains ready.
    pub fn fill_pool(&mut self) {
        while (self.pool.len() as u32) < self.cfg.pool {
            // A pool name must be free everywhere: domains taken from the pool keep theirs.
            let in_use = |n: &str| self.pool.iter().chain(self.entries.values()).any(|e| e.host == n);
            let Some(name) = (0..).map(|i| format!("{POOL_PREFIX}{i}")).find(|n| !in_use(n)) else {
                return;
            };
            let Ok(slot) = self.free_slot() else { return };
            let spec = DomainSpec::parked(&name);
            let mut e = Entry {
                spec,
                state: "pooled".into(),
                slot,
                restarts: 0,
                start_ms: 0.0,
                from_pool: false,
                pid: 0,
                host: name.clone(),
                vip: None,
            };
            let cs = self.cspec(&name, &e);
            if let Err(err) = self.backend.create(&cs) {
                // Nothing of ours to clean: what exists under that name is someone else's.
                warn!(error = %err, "cannot fill the idle pool");
                return;
            }
            let parked = self.backend.start_parked(&cs).and_then(|pid| {
                e.pid = pid;
                self.backend.pause(&cs)
            });
            if let Err(err) = parked {
                warn!(error = %err, "cannot fill the idle pool");
                let _ = self.backend.destroy(&cs);
                return;
            }
            // Stored so that a restarted daemon finds and removes it (pool members are rebuilt).
            if let Err(err) = self.store.put_blob(
                &format!("{KEY_PREFIX}{name}"),
                &serde_json::to_vec(&e).expect("entries serialize"),
            ) {
                warn!(error = %err, "cannot persist a pool member");
            }
            self.pool.push(e);
        }
    }

    /// Starts an instance of catalog service `service`.
    pub fn start_service(
        &mut self,
        service: &str,
        name: &str,
        params: &BTreeMap<String, String>,
    ) -> Result<pb::DomainInfo, DomainsError> {
        let t0 = Instant::now();
        let def = self
            .catalog
            .get(service)
            .map_err(|e| DomainsError::UnknownService(service.into(), e.to_string()))?
            .clone();
        let name = if name.is_empty() {
            (1..)
                .map(|i| format!("{service}-{i}"))
                .find(|n| !self.entries.contains_key(n))
                .unwrap_or_default()
        } else {
            name.to_string()
        };
        if self.entries.contains_key(&name) {
            return Err(DomainsError::Exists(name));
        }
        // The pool's slot (and so its address) is reused when one is taken. The pool holds
        // parked containers: a vm domain boots on its own.
        let pooled = if def.isolation == Isolation::Container {
            self.pool.pop()
        } else {
            None
        };
        if let Some(p) = &pooled {
            let _ = self.store.delete_blob(&format!("{KEY_PREFIX}{}", p.host));
        }
        let slot = match &pooled {
            Some(p) => p.slot,
            None => self.free_slot()?,
        };
        let base = u32::from(self.subnet.addr) + 4 * slot;
        let attach = NetAttach {
            address: Ipv4Addr::from(base + 2),
            prefix_len: 30,
            gateway: Some(Ipv4Addr::from(base + 1)),
        };
        // Its files live where the domain sees them: the run directory of its host name (a pool
        // member keeps `pool-N`); inside the domain /run is private, except this directory.
        let host = pooled.as_ref().map_or_else(|| name.clone(), |p| p.host.clone());
        let dir = self.cfg.run_dir.join(&host);
        let dirs = InstanceDirs {
            config_dir: dir.display().to_string(),
            run_dir: dir.display().to_string(),
        };
        // The site's values for this service, then the caller's.
        let mut merged = self.cfg.params.get(service).cloned().unwrap_or_default();
        merged.extend(params.iter().map(|(k, v)| (k.clone(), v.clone())));
        let params = &merged;
        let made = def.instantiate(&name, attach, &dirs, params).and_then(|spec| {
            // The service's config file (e.g. kamailio.cfg), rendered into its directory.
            let vars = def.vars(&name, attach, &dirs, params)?;
            Ok((spec, self.catalog.render_config(service, &vars)?))
        });
        let (spec, config) = match made {
            Ok(x) => x,
            Err(e) => {
                if let Some(p) = pooled {
                    self.pool.push(p);
                }
                return Err(DomainsError::Catalog(e.to_string()));
            }
        };
        if let Some((file, text)) = config {
            let written = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(dir.join(&file), text));
            if let Err(e) = written {
                if let Some(p) = pooled {
                    self.pool.push(p);
                }
                return Err(DomainsError::Backend(format!(
                    "cannot write {}: {e}",
                    dir.join(file).display()
                )));
            }
        }
        if let Err(e) = self.admission.admit(&spec) {
            if let Some(p) = pooled {
                self.pool.push(p);
            }
            return Err(DomainsError::Refused(e.to_string()));
        }
        let mut e = Entry {
            spec,
            state: "created".into(),
            slot,
            restarts: 0,
            start_ms: 0.0,
            from_pool: pooled.is_some(),
            pid: 0,
            host,
            vip: def.vip,
        };
        let result = match pooled {
            Some(_) => {
                // A thaw and a configuration: the parked init gets its command and execs it.
                let cs = self.cspec(&name, &e);
                self.backend.run_parked(&cs)
            }
            None => {
                let cs = self.cspec(&name, &e);
                self.backend.create(&cs).and_then(|()| self.backend.start(&cs))
            }
        };
        match result {
            Ok(pid) => {
                e.pid = pid;
                e.state = "running".into();
                e.start_ms = t0.elapsed().as_secs_f64() * 1e3;
                info!(domain = %name, service, pid, start_ms = e.start_ms, from_pool = e.from_pool, "service started");
                self.entries.insert(name.clone(), e);
                self.persist(&name);
                self.fill_pool();
                Ok(self.info(&name))
            }
            Err(err) => {
                self.admission.release(&name);
                let cs = self.cspec(&name, &e);
                let _ = self.backend.destroy(&cs);
                self.fill_pool();
                Err(DomainsError::Backend(err.to_string()))
            }
        }
    }

    fn entry(&self, name: &str) -> Result<&Entry, DomainsError> {
        self.entries
            .get(name)
            .ok_or_else(|| DomainsError::UnknownDomain(name.into()))
    }

    fn set_state(&mut self, name: &str, state: &str) -> pb::DomainInfo {
        if let Some(e) = self.entries.get_mut(name) {
            e.state = state.into();
        }
        self.persist(name);
        self.info(name)
    }

    pub fn pause(&mut self, name: &str) -> Result<pb::DomainInfo, DomainsError> {
        let e = self.entry(name)?;
        if e.state != "running" {
            return Err(DomainsError::Refused(format!(
                "cannot pause domain {name}: it is {}",
                e.state
            )));
        }
        let cs = self.cspec(name, e);
        self.backend
            .pause(&cs)
            .map_err(|e| DomainsError::Backend(e.to_string()))?;
        Ok(self.set_state(name, "paused"))
    }

    pub fn resume(&mut self, name: &str) -> Result<pb::DomainInfo, DomainsError> {
        let e = self.entry(name)?;
        if e.state != "paused" {
            return Err(DomainsError::Refused(format!(
                "cannot resume domain {name}: it is {}",
                e.state
            )));
        }
        let cs = self.cspec(name, e);
        self.backend
            .resume(&cs)
            .map_err(|e| DomainsError::Backend(e.to_string()))?;
        Ok(self.set_state(name, "running"))
    }

    pub fn stop(&mut self, name: &str) -> Result<pb::DomainInfo, DomainsError> {
        let e = self.entry(name)?;
        let cs = self.cspec(name, e);
        self.backend
            .stop(&cs, Duration::from_secs(2))
            .map_err(|e| DomainsError::Backend(e.to_string()))?;
        Ok(self.set_state(name, "stopped"))
    }

    pub fn destroy(&mut self, name: &str) -> Result<pb::DomainInfo, DomainsError> {
        let e = self.entry(name)?;
        let cs = self.cspec(name, e);
        self.backend
            .destroy(&cs)
            .map_err(|e| DomainsError::Backend(e.to_string()))?;
        let info = self.set_state(name, "destroyed");
        self.entries.remove(name);
        self.admission.release(name);
        self.cpu_seen.remove(name);
        self.persist(name);
        Ok(info)
    }

    /// Destroys every domain and pool member (a clean daemon stop keeps services running; this
    /// is for `--destroy-domains` and tests).
    pub fn destroy_all(&mut self) {
        let names: Vec<String> = self.entries.keys().cloned().collect();
        for n in names {
            let _ = self.destroy(&n);
        }
        for p in std::mem::take(&mut self.pool) {
            let cs = self.cspec(&p.spec.name, &p);
            let _ = self.backend.destroy(&cs);
        }
    }

    fn apply_restart_policy(&mut self, name: &str) {
        let Some(e) = self.entries.get(name) else { return };
        let again = match e.spec.restart {
            RestartPolicy::Never => false,
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure { max_retries } => e.restarts < max_retries,
        };
        if !again {
            return;
        }
        let cs = self.cspec(name, e);
        let _ = self.backend.destroy(&cs);
        let r = self.backend.create(&cs).and_then(|()| self.backend.start(&cs));
        let e = self.entries.get_mut(name).expect("checked above");
        e.restarts += 1;
        match r {
            Ok(pid) => {
                e.pid = pid;
                e.state = "running".into();
                info!(domain = name, restarts = e.restarts, "restarted");
            }
            Err(err) => e.state = format!("failed: restart: {err}"),
        }
        self.persist(name);
    }

    /// Periodic check (once a second): takes every domain's CPU reading, and restarts a running
    /// domain whose process exited, per its policy.
    pub fn supervise(&mut self) {
        let now = Instant::now();
        let names: Vec<String> = self.entries.keys().cloned().collect();
        for name in &names {
            let cs = self.cspec(name, &self.entries[name]);
            if let Some(u) = self.backend.usage(&cs) {
                let reading = (now, u.cpu_ns);
                let slot = self.cpu_seen.entry(name.clone()).or_insert([reading, reading]);
                *slot = [slot[1], reading];
            }
        }
        let running: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| e.state == "running")
            .map(|(n, _)| n.clone())
            .collect();
        for name in running {
            let cs = self.cspec(&name, &self.entries[&name]);
            match self.backend.status(&cs) {
                BackendStatus::Exited { .. } | BackendStatus::Absent => {}
                BackendStatus::Running { .. } | BackendStatus::Paused { .. } => continue,
            }
            warn!(domain = %name, "exited");
            if let Some(e) = self.entries.get_mut(&name) {
                e.state = "failed: exited".into();
            }
            self.apply_restart_policy(&name);
            self.persist(&name);
        }
    }

    pub fn info(&self, name: &str) -> pb::DomainInfo {
        let Some(e) = self.entries.get(name) else {
            return pb::DomainInfo {
                name: name.into(),
                state: "destroyed".into(),
                ..Default::default()
            };
        };
        let cs = self.cspec(name, e);
        let usage = self.backend.usage(&cs);
        // CPU % of one core over the last supervision period (0 until there are two readings).
        let cpu_pct = self.cpu_seen.get(name).map_or(0.0, |[(t0, a), (t1, b)]| {
            let dt = t1.duration_since(*t0).as_nanos() as f64;
            if dt > 0.0 {
                b.saturating_sub(*a) as f64 / dt * 100.0
            } else {
                0.0
            }
        });
        // Only running domains are probed; a paused one keeps no stale verdict.
        let probed = self.health.get(name).filter(|_| e.state == "running");
        pb::DomainInfo {
            name: name.into(),
            kind: format!("{:?}", e.spec.kind).to_lowercase(),
            service: e.spec.service.clone().unwrap_or_default(),
            state: e.state.clone(),
            pid: e.pid,
            address: e.spec.net.as_ref().map(|n| n.address.to_string()).unwrap_or_default(),
            cpus: cs.cpus.unwrap_or(0.0),
            memory_limit: cs.memory.unwrap_or(0),
            memory_bytes: usage.as_ref().map_or(0, |u| u.memory_bytes),
            cpu_pct,
            restarts: e.restarts,
            start_ms: e.start_ms,
            from_pool: e.from_pool,
            health: probed.map_or("", |h| h.health.as_str()).into(),
            health_detail: probed.map(|h| h.detail.clone()).unwrap_or_default(),
        }
    }

    /// The health probes due now, of running domains; run them outside the lock and hand the
    /// outcomes to [`Domains::record_probes`].
    pub fn due_probes(&mut self) -> Vec<Probe> {
        let now = Instant::now();
        let mut due = Vec::new();
        for (name, e) in &self.entries {
            let Some(check) = &e.spec.health else { continue };
            if e.state != "running" {
                self.health.remove(name);
                continue;
            }
            let h = self
                .health
                .entry(name.clone())
                .or_insert_with(|| HealthState::new(Some(check)));
            if h.due(check, now)
                && let Some(p) = probe_of(name, e)
            {
                due.push(p);
            }
        }
        due
    }

    /// Records probe outcomes; a domain that has just turned unhealthy is restarted per its
    /// policy (like one whose process exited).
    pub fn record_probes(&mut self, results: Vec<(String, Result<(), String>)>) {
        let now = Instant::now();
        for (name, result) in results {
            let Some(check) = self.entries.get(&name).and_then(|e| e.spec.health.clone()) else {
                continue;
            };
            let Some(h) = self.health.get_mut(&name) else { continue };
            if h.record(&check, now, result) {
                warn!(domain = %name, detail = %h.detail, "unhealthy");
                self.health.remove(&name);
                self.apply_restart_policy(&name);
                self.persist(&name);
            }
        }
    }

    /// A probe of `name` to run now (regardless of its interval: a waiter for its health), or
    /// `None` when it is not running or has no probe beyond its process.
    pub fn probe_now(&mut self, name: &str) -> Option<Probe> {
        let e = self.entries.get(name).filter(|e| e.state == "running")?;
        let check = e.spec.health.as_ref()?;
        let probe = probe_of(name, e)?;
        let h = self
            .health
            .entry(name.to_string())
            .or_insert_with(|| HealthState::new(Some(check)));
        (h.health != Health::Unchecked).then_some(probe)
    }

    /// Whether `name` runs and its health probe passed (true for services without a probe).
    pub fn is_healthy(&self, name: &str) -> bool {
        let running = self.entries.get(name).is_some_and(|e| e.state == "running");
        running
            && self
                .health
                .get(name)
                .is_none_or(|h| matches!(h.health, Health::Healthy | Health::Unchecked))
    }

    /// The catalog services with a VIP, as the data path classifies them.
    pub fn datapath_services(&self) -> Vec<crate::datapath::ServiceSpec> {
        self.catalog
            .services
            .values()
            .filter_map(|d| {
                Some(crate::datapath::ServiceSpec {
                    name: d.name.clone(),
                    vip: d.vip?,
                    ports: d.ports.iter().map(|p| (p.proto, p.port)).collect(),
                })
            })
            .collect()
    }

    /// Where running domain `name` is attached: this router's end of its link, its namespace
    /// file and its own end (for the data path's redirect).
    pub fn instance_link(&self, name: &str) -> Option<(String, PathBuf, String)> {
        let e = self.entries.get(name).filter(|e| e.state == "running")?;
        let cs = self.cspec(name, e);
        let net = cs.net.as_ref()?;
        // A vm's guest end is not a veth in a namespace: no redirect there.
        (e.spec.isolation == Isolation::Container).then(|| (net.host_if.clone(), cs.netns_path(), net.dom_if.clone()))
    }

    /// The state of domain `name` ("running", "paused", "failed: …", …) and its address, from
    /// memory: unlike [`Domains::info`] it reads nothing from the kernel (the controller asks at
    /// every reconcile).
    pub fn state_of(&self, name: &str) -> Option<(&str, Option<Ipv4Addr>)> {
        self.entries
            .get(name)
            .map(|e| (e.state.as_str(), e.spec.net.as_ref().map(|n| n.address)))
    }

    /// The services the catalog defines.
    pub fn catalog_services(&self) -> Vec<String> {
        self.catalog.services.keys().cloned().collect()
    }

    pub fn list(&self) -> pb::DomainList {
        let (free_cpus, free_memory) = self.admission.free();
        pb::DomainList {
            domains: self.entries.keys().map(|n| self.info(n)).collect(),
            free_cpus,
            free_memory,
            pool_idle: self.pool.len() as u32,
        }
    }
}
