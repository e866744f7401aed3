//! cgroups — a router's "hardware" (CPU quota, memory limit) in the lab, and later the budgets of
//! domains. Works on cgroup v2 (unified) and on v1 (one hierarchy per controller), detected from the
//! cgroup root, which is a parameter (`/sys/fs/cgroup` on a real host, a temp dir in tests).
//!
//! Paths given to this module are relative to the root of each hierarchy, e.g. `wuos/demo/r1`.
//!
//! Besides limits, the module pins cores (`cpuset`), weighs CPU shares, freezes and thaws a cgroup
//! (the pause of a domain), reads usage counters and sums the budgets of a cgroup's children.
//! On v1 a cgroup is made in every controller hierarchy wuos uses, `cpuset` included: its
//! `cpuset.cpus`/`cpuset.mems` are copied from the parent at every new level, because a v1 cpuset
//! cgroup with empty ones refuses tasks (ENOSPC).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// CPU period used for quotas, in microseconds.
pub const CPU_PERIOD_US: u64 = 100_000;

/// v1 controllers wuos uses. A `cpuset` cgroup gets its parent's `cpuset.cpus`/`cpuset.mems` at
/// creation (see [`CgroupFs::create`]), otherwise it would refuse tasks.
const V1_CONTROLLERS: [&str; 6] = ["cpu", "cpuacct", "memory", "pids", "freezer", "cpuset"];

/// Default CPU weight (v2 `cpu.weight`), equal to v1's default `cpu.shares` of 1024.
pub const DEFAULT_CPU_WEIGHT: u32 = 100;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no usable cgroup hierarchy under {root} (neither cgroup v2 nor v1 cpu/memory controllers found)")]
    NoHierarchy { root: PathBuf },
    #[error("cannot write {value:?} to {path}: {source}")]
    Write {
        path: PathBuf,
        value: String,
        source: io::Error,
    },
    #[error("cannot create cgroup {path}: {source}")]
    Create { path: PathBuf, source: io::Error },
    #[error("cannot remove cgroup {path}: {source}")]
    Remove { path: PathBuf, source: io::Error },
    #[error("the {controller} controller is not available under {root}; mount it (v1) or use a kernel with it (v2)")]
    NoController { controller: &'static str, root: PathBuf },
    #[error("cgroup {path} did not reach the {wanted} state within {waited:?} (still {state})")]
    FreezeTimeout {
        path: PathBuf,
        wanted: &'static str,
        state: String,
        waited: Duration,
    },
}

/// Freezer state of a cgroup (v1 `freezer.state`; v2 `cgroup.freeze` + `cgroup.events`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FreezeState {
    Thawed,
    /// Asked to freeze; some tasks are not frozen yet.
    Freezing,
    /// Frozen, by itself or by an ancestor.
    Frozen,
}

/// The limits of a cgroup's direct children and what its own limits leave after them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Budgets {
    /// The cgroup's own limits.
    pub parent: Limits,
    /// Each direct child (by directory name) with its limits.
    pub children: Vec<(String, Limits)>,
    /// The parent's limits minus the sum of the children's (floored at 0); `None` where the parent
    /// is unlimited. Children without a limit are not counted: they share what is left.
    pub unreserved: Limits,
}

/// Resource limits of a cgroup. `None` means unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Limits {
    /// CPU capacity in cores (0.5 = half a core), enforced as a CFS quota.
    pub cpus: Option<f64>,
    /// Memory limit in bytes.
    pub memory: Option<u64>,
}

/// Which cgroup version the host runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Version {
    V1,
    V2,
}

/// A cgroup filesystem: its root and the hierarchies under it.
#[derive(Clone, Debug)]
pub struct CgroupFs {
    root: PathBuf,
    version: Version,
    /// v1: the mounted controller hierarchies wuos uses; v2: the single root.
    hierarchies: Vec<PathBuf>,
}

impl CgroupFs {
    /// Detects the version under `root`: v2 when `root/cgroup.controllers` exists, otherwise v1 with
    /// whichever of wuos's controllers are mounted as `root/<controller>`.
    pub fn detect(root: &Path) -> Result<Self, CgroupError> {
        if root.join("cgroup.controllers").exists() {
            return Ok(Self {
                root: root.to_owned(),
                version: Version::V2,
                hierarchies: vec![root.to_owned()],
            });
        }
        let hierarchies: Vec<PathBuf> = V1_CONTROLLERS
            .iter()
            .map(|c| root.join(c))
            .filter(|p| p.join("cgroup.procs").exists())
            .collect();
        let has = |c: &str| hierarchies.iter().any(|h| h.ends_with(c));
        if !has("cpu") || !has("memory") {
            return Err(CgroupError::NoHierarchy { root: root.to_owned() });
        }
        Ok(Self {
            root: root.to_owned(),
            version: Version::V1,
            hierarchies,
        })
    }

    pub fn version(&self) -> &Version {
        &self.version
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directories of cgroup `rel` in every hierarchy.
    pub fn dirs(&self, rel: &str) -> Vec<PathBuf> {
        self.hierarchies.iter().map(|h| h.join(rel)).collect()
    }

    fn controller_dir(&self, controller: &str, rel: &str) -> Option<PathBuf> {
        match self.version {
            Version::V2 => Some(self.root.join(rel)),
            Version::V1 => self
                .hierarchies
                .iter()
                .find(|h| h.ends_with(controller))
                .map(|h| h.join(rel)),
        }
    }

    /// Creates cgroup `rel` (and its parents) in every hierarchy and applies `limits`.
    pub fn create(&self, rel: &str, limits: &Limits) -> Result<(), CgroupError> {
        if self.version == Version::V2 {
            self.enable_v2_controllers(rel)?;
        }
        for (h, dir) in self.hierarchies.iter().zip(self.dirs(rel)) {
            if self.version == Version::V1 && h.ends_with("cpuset") {
                create_cpuset_chain(h, rel)?;
            } else {
                fs::create_dir_all(&dir).map_err(|source| CgroupError::Create {
                    path: dir.clone(),
                    source,
                })?;
            }
        }
        self.set_limits(rel, limits)
    }

    /// On v2, a child gets cpu/memory/pids files only if every ancestor lists them in
    /// `cgroup.subtree_control`.
    fn enable_v2_controllers(&self, rel: &str) -> Result<(), CgroupError> {
        let available = fs::read_to_string(self.root.join("cgroup.controllers")).unwrap_or_default();
        let wanted: Vec<String> = ["cpu", "memory", "pids"]
            .iter()
            .filter(|c| available.split_whitespace().any(|a| a == **c))
            .map(|c| format!("+{c}"))
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let mut dir = self.root.clone();
        let parts: Vec<&str> = rel.split('/').filter(|p| !p.is_empty()).collect();
        for part in &parts {
            let ctl = dir.join("cgroup.subtree_control");
            let current = fs::read_to_string(&ctl).unwrap_or_default();
            for w in &wanted {
                if !current.split_whitespace().any(|c| c == &w[1..]) {
                    write(&ctl, w)?;
                }
            }
            dir = dir.join(part);
            fs::create_dir_all(&dir).map_err(|source| CgroupError::Create {
                path: dir.clone(),
                source,
            })?;
        }
        Ok(())
    }

    /// Applies `limits` to an existing cgroup (None resets to unlimited).
    pub fn set_limits(&self, rel: &str, limits: &Limits) -> Result<(), CgroupError> {
        let quota = limits
            .cpus
            .map(|c| ((c * CPU_PERIOD_US as f64).round() as u64).max(1000));
        match self.version {
            Version::V2 => {
                let dir = self.root.join(rel);
                let cpu = match quota {
                    Some(q) => format!("{q} {CPU_PERIOD_US}"),
                    None => format!("max {CPU_PERIOD_US}"),
                };
                write_if_exists(&dir.join("cpu.max"), &cpu)?;
                let mem = limits.memory.map_or("max".to_string(), |m| m.to_string());
                write_if_exists(&dir.join("memory.max"), &mem)?;
            }
            Version::V1 => {
                if let Some(dir) = self.controller_dir("cpu", rel) {
                    write(&dir.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
                    let q = quota.map_or("-1".to_string(), |q| q.to_string());
                    write(&dir.join("cpu.cfs_quota_us"), &q)?;
                }
                if let Some(dir) = self.controller_dir("memory", rel) {
                    let mem = limits.memory.map_or("-1".to_string(), |m| m.to_string());
                    write(&dir.join("memory.limit_in_bytes"), &mem)?;
                }
            }
        }
        Ok(())
    }

    /// Reads back the limits of cgroup `rel` as the kernel holds them.
    pub fn limits(&self, rel: &str) -> Limits {
        let read = |p: Option<PathBuf>| p.and_then(|p| fs::read_to_string(p).ok());
        match self.version {
            Version::V2 => {
                let dir = self.root.join(rel);
                let cpus = read(Some(dir.join("cpu.max"))).and_then(|s| {
                    let mut it = s.split_whitespace();
                    let q: f64 = it.next()?.parse().ok()?;
                    let p: f64 = it.next()?.parse().ok()?;
                    Some(q / p)
                });
                let memory = read(Some(dir.join("memory.max"))).and_then(|s| s.trim().parse().ok());
                Limits { cpus, memory }
            }
            Version::V1 => {
                let cpu = self.controller_dir("cpu", rel);
                let q: Option<i64> =
                    read(cpu.as_ref().map(|d| d.join("cpu.cfs_quota_us"))).and_then(|s| s.trim().parse().ok());
                let p: Option<i64> =
                    read(cpu.as_ref().map(|d| d.join("cpu.cfs_period_us"))).and_then(|s| s.trim().parse().ok());
                let cpus = match (q, p) {
                    (Some(q), Some(p)) if q > 0 && p > 0 => Some(q as f64 / p as f64),
                    _ => None,
                };
                // v1 reports "unlimited" as a huge page-aligned number.
                let memory = read(
                    self.controller_dir("memory", rel)
                        .map(|d| d.join("memory.limit_in_bytes")),
                )
                .and_then(|s| s.trim().parse::<u64>().ok())
                .filter(|&m| m < (1 << 62));
                Limits { cpus, memory }
            }
        }
    }

    /// Moves process `pid` (all its threads) into cgroup `rel` in every hierarchy. A v1 cpuset
    /// hierarchy without the cgroup (made before wuos used cpuset) is skipped.
    pub fn join(&self, rel: &str, pid: u32) -> Result<(), CgroupError> {
        for (h, dir) in self.hierarchies.iter().zip(self.dirs(rel)) {
            if self.version == Version::V1 && h.ends_with("cpuset") && !dir.exists() {
                continue;
            }
            write(&dir.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// Pids in cgroup `rel` and its descendants (from every hierarchy, deduplicated).
    pub fn procs(&self, rel: &str) -> Vec<i32> {
        let mut pids = Vec::new();
        for dir in self.dirs(rel) {
            collect_procs(&dir, &mut pids);
        }
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Whether cgroup `rel` exists in any hierarchy.
    pub fn exists(&self, rel: &str) -> bool {
        self.dirs(rel).iter().any(|d| d.exists())
    }

    /// Kills every process in `rel` and its descendants, then removes the cgroups bottom-up in every
    /// hierarchy. Removing a cgroup that does not exist is not an error.
    pub fn destroy(&self, rel: &str, proc_root: &Path) -> Result<(), CgroupError> {
        let kill_file = self.root.join(rel).join("cgroup.kill");
        if self.version == Version::V2 && kill_file.exists() {
            let _ = fs::write(&kill_file, "1");
        }
        // A frozen v1 task keeps a SIGKILL pending until it is thawed (v2's cgroup.kill needs no
        // thaw): thaw the whole subtree (idle-pool domains, paused services) first.
        if let (Version::V1, Ok(dir)) = (self.version, self.freezer_dir(rel)) {
            thaw_tree(&dir);
        }
        let pids = self.procs(rel);
        if !pids.is_empty() {
            crate::process::terminate(proc_root, &pids, Duration::from_millis(300));
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        for dir in self.dirs(rel) {
            remove_tree(&dir, deadline)?;
        }
        Ok(())
    }
}

/// Pinning, weights, freezing, usage counters and budgets (added for domains).
impl CgroupFs {
    /// Pins cgroup `rel` to `cpus` (`None`: every core of the parent). v1 writes `cpuset.cpus`
    /// (the cgroup was given its parent's cores and memory nodes by [`Self::create`]); v2 enables
    /// the cpuset controller on the ancestors and writes `cpuset.cpus` (empty means inherit).
    /// The cores must be a subset of the parent's, or the kernel refuses (EINVAL).
    pub fn set_cpuset(&self, rel: &str, cpus: Option<&[u32]>) -> Result<(), CgroupError> {
        let list = cpus.map(|c| c.iter().map(u32::to_string).collect::<Vec<_>>().join(","));
        match self.version {
            Version::V1 => {
                let dir = self
                    .controller_dir("cpuset", rel)
                    .ok_or_else(|| CgroupError::NoController {
                        controller: "cpuset",
                        root: self.root.clone(),
                    })?;
                let value = match list {
                    Some(l) => l,
                    None => {
                        let parent = dir.parent().unwrap_or(&dir).join("cpuset.cpus");
                        fs::read_to_string(&parent).unwrap_or_default().trim().to_string()
                    }
                };
                write(&dir.join("cpuset.cpus"), &value)
            }
            Version::V2 => {
                let available = fs::read_to_string(self.root.join("cgroup.controllers")).unwrap_or_default();
                if !available.split_whitespace().any(|c| c == "cpuset") {
                    return match list {
                        Some(_) => Err(CgroupError::NoController {
                            controller: "cpuset",
                            root: self.root.clone(),
                        }),
                        None => Ok(()),
                    };
                }
                let mut dir = self.root.clone();
                for part in rel.split('/').filter(|p| !p.is_empty()) {
                    let ctl = dir.join("cgroup.subtree_control");
                    let current = fs::read_to_string(&ctl).unwrap_or_default();
                    if !current.split_whitespace().any(|c| c == "cpuset") {
                        write(&ctl, "+cpuset")?;
                    }
                    dir = dir.join(part);
                }
                // An empty write is a no-op for the kernel: a newline resets to "inherit".
                write(&dir.join("cpuset.cpus"), &list.unwrap_or_else(|| "\n".to_string()))
            }
        }
    }

    /// Sets the CPU weight of `rel` relative to its siblings (`None`: the default,
    /// [`DEFAULT_CPU_WEIGHT`]). v2 `cpu.weight` (1–10000); v1 `cpu.shares` = weight × 1024 / 100.
    pub fn set_cpu_weight(&self, rel: &str, weight: Option<u32>) -> Result<(), CgroupError> {
        let w = weight.unwrap_or(DEFAULT_CPU_WEIGHT).clamp(1, 10_000);
        match self.version {
            Version::V2 => write_if_exists(&self.root.join(rel).join("cpu.weight"), &w.to_string()),
            Version::V1 => match self.controller_dir("cpu", rel) {
                Some(dir) => write(&dir.join("cpu.shares"), &(u64::from(w) * 1024 / 100).max(2).to_string()),
                None => Ok(()),
            },
        }
    }

    /// The CPU weight of `rel` as the kernel holds it (v1 shares converted back).
    pub fn cpu_weight(&self, rel: &str) -> Option<u32> {
        match self.version {
            Version::V2 => read_u64(&self.root.join(rel).join("cpu.weight")).map(|w| w as u32),
            Version::V1 => {
                read_u64(&self.controller_dir("cpu", rel)?.join("cpu.shares")).map(|s| (s * 100 / 1024) as u32)
            }
        }
    }

    /// The cores `rel` may run on, from `cpuset.cpus` (v2: `cpuset.cpus.effective`), expanded.
    pub fn cpuset(&self, rel: &str) -> Option<Vec<u32>> {
        let file = match self.version {
            Version::V1 => self.controller_dir("cpuset", rel)?.join("cpuset.cpus"),
            Version::V2 => self.root.join(rel).join("cpuset.cpus.effective"),
        };
        parse_cpu_list(fs::read_to_string(file).ok()?.trim())
    }

    fn freezer_dir(&self, rel: &str) -> Result<PathBuf, CgroupError> {
        self.controller_dir("freezer", rel)
            .ok_or_else(|| CgroupError::NoController {
                controller: "freezer",
                root: self.root.clone(),
            })
    }

    /// The freezer state of `rel`; `None` when the cgroup or the freezer does not exist.
    pub fn freeze_state(&self, rel: &str) -> Option<FreezeState> {
        let dir = self.freezer_dir(rel).ok()?;
        match self.version {
            Version::V1 => match fs::read_to_string(dir.join("freezer.state")).ok()?.trim() {
                "FROZEN" => Some(FreezeState::Frozen),
                "FREEZING" => Some(FreezeState::Freezing),
                _ => Some(FreezeState::Thawed),
            },
            Version::V2 => {
                let asked = fs::read_to_string(dir.join("cgroup.freeze")).ok()?.trim() == "1";
                let frozen = events_frozen(&dir)?;
                Some(match (asked, frozen) {
                    (_, true) => FreezeState::Frozen,
                    (true, false) => FreezeState::Freezing,
                    (false, false) => FreezeState::Thawed,
                })
            }
        }
    }

    /// Freezes every task of `rel` and its descendants and waits until the kernel reports them
    /// frozen (v1 `freezer.state` FROZEN, v2 `cgroup.events` `frozen 1`). On timeout the cgroup is
    /// thawed again and an error says which state it was stuck in.
    pub fn freeze(&self, rel: &str, timeout: Duration) -> Result<(), CgroupError> {
        self.set_frozen(rel, true, timeout)
    }

    /// Thaws `rel` and waits until the kernel reports it thawed. A cgroup frozen by an ancestor
    /// stays frozen: that is reported as a timeout.
    pub fn thaw(&self, rel: &str, timeout: Duration) -> Result<(), CgroupError> {
        self.set_frozen(rel, false, timeout)
    }

    fn set_frozen(&self, rel: &str, frozen: bool, timeout: Duration) -> Result<(), CgroupError> {
        let dir = self.freezer_dir(rel)?;
        let (file, value) = match (self.version, frozen) {
            (Version::V1, true) => ("freezer.state", "FROZEN"),
            (Version::V1, false) => ("freezer.state", "THAWED"),
            (Version::V2, true) => ("cgroup.freeze", "1"),
            (Version::V2, false) => ("cgroup.freeze", "0"),
        };
        let wanted = if frozen {
            FreezeState::Frozen
        } else {
            FreezeState::Thawed
        };
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_micros(200);
        write(&dir.join(file), value)?;
        loop {
            let state = self.freeze_state(rel);
            if state == Some(wanted) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                if frozen {
                    let _ = self.set_frozen(rel, false, Duration::from_secs(1));
                }
                return Err(CgroupError::FreezeTimeout {
                    path: dir,
                    wanted: if frozen { "frozen" } else { "thawed" },
                    state: state.map_or("unknown".into(), |s| format!("{s:?}").to_lowercase()),
                    waited: timeout,
                });
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(10));
            if self.version == Version::V1 && frozen {
                // v1 retries the tasks that could not be frozen yet on every write.
                write(&dir.join(file), value)?;
            }
        }
    }

    /// CPU time used by `rel` and its descendants since creation, in nanoseconds (v1
    /// `cpuacct.usage`, v2 `cpu.stat` `usage_usec`, which v2 has even without the cpu controller).
    pub fn cpu_usage_ns(&self, rel: &str) -> Option<u64> {
        match self.version {
            Version::V1 => read_u64(&self.controller_dir("cpuacct", rel)?.join("cpuacct.usage")),
            Version::V2 => stat_value(&self.root.join(rel).join("cpu.stat"), "usage_usec").map(|us| us * 1000),
        }
    }

    /// Memory in use by `rel` and its descendants without the reclaimable inactive page cache (the
    /// "working set": v1 `memory.usage_in_bytes` − `total_inactive_file`, v2 `memory.current` −
    /// `inactive_file`), the figure the daemon's monitor uses too.
    pub fn memory_usage(&self, rel: &str) -> Option<u64> {
        let dir = self.controller_dir("memory", rel)?;
        let (current, inactive) = match self.version {
            Version::V1 => (
                read_u64(&dir.join("memory.usage_in_bytes"))?,
                stat_value(&dir.join("memory.stat"), "total_inactive_file"),
            ),
            Version::V2 => (
                read_u64(&dir.join("memory.current"))?,
                stat_value(&dir.join("memory.stat"), "inactive_file"),
            ),
        };
        Some(current.saturating_sub(inactive.unwrap_or(0)))
    }

    /// The limits of `rel`'s direct children and what `rel`'s limits leave after them, so a
    /// parent (a router) can check that a new child (a domain) fits its budget before creating it.
    pub fn child_budgets(&self, rel: &str) -> Budgets {
        let parent = self.limits(rel);
        let base = match self.version {
            Version::V2 => Some(self.root.join(rel)),
            Version::V1 => self.controller_dir("cpu", rel),
        };
        let mut names: Vec<String> = base
            .and_then(|d| fs::read_dir(d).ok())
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        let children: Vec<(String, Limits)> = names
            .into_iter()
            .map(|n| {
                let l = self.limits(&format!("{}/{n}", rel.trim_end_matches('/')));
                (n, l)
            })
            .collect();
        let cpus_used: f64 = children.iter().filter_map(|(_, l)| l.cpus).sum();
        let mem_used: u64 = children.iter().filter_map(|(_, l)| l.memory).sum();
        let unreserved = Limits {
            cpus: parent.cpus.map(|c| (c - cpus_used).max(0.0)),
            memory: parent.memory.map(|m| m.saturating_sub(mem_used)),
        };
        Budgets {
            parent,
            children,
            unreserved,
        }
    }
}

/// Creates the v1 cpuset cgroup `rel` level by level, giving every new level its parent's
/// `cpuset.cpus` and `cpuset.mems` (a v1 cpuset cgroup with empty ones refuses tasks). Levels that
/// already have values keep them. Files the parent lacks (a fake cgroupfs) are left alone.
fn create_cpuset_chain(hierarchy: &Path, rel: &str) -> Result<(), CgroupError> {
    let mut dir = hierarchy.to_owned();
    for part in rel.split('/').filter(|p| !p.is_empty()) {
        let parent = dir.clone();
        dir = dir.join(part);
        match fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(source) => return Err(CgroupError::Create { path: dir, source }),
        }
        for file in ["cpuset.cpus", "cpuset.mems"] {
            let mine = fs::read_to_string(dir.join(file)).unwrap_or_default();
            if !mine.trim().is_empty() {
                continue;
            }
            if let Ok(theirs) = fs::read_to_string(parent.join(file))
                && !theirs.trim().is_empty()
            {
                write(&dir.join(file), theirs.trim())?;
            }
        }
    }
    Ok(())
}

/// Parses a kernel CPU list such as `0-2,5`.
pub fn parse_cpu_list(s: &str) -> Option<Vec<u32>> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.parse().ok()?, b.parse().ok()?);
                out.extend(a..=b);
            }
            None => out.push(part.parse().ok()?),
        }
    }
    Some(out)
}

fn read_u64(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// A `key value` line of a stat file (`cpu.stat`, `memory.stat`).
fn stat_value(path: &Path, key: &str) -> Option<u64> {
    let s = fs::read_to_string(path).ok()?;
    s.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        if k == key { v.trim().parse().ok() } else { None }
    })
}

/// v2 `cgroup.events`: `frozen 1`.
fn events_frozen(dir: &Path) -> Option<bool> {
    stat_value(&dir.join("cgroup.events"), "frozen").map(|v| v == 1)
}

/// Writes THAWED to every v1 freezer cgroup under `dir` that is not thawed.
fn thaw_tree(dir: &Path) {
    let state = dir.join("freezer.state");
    if fs::read_to_string(&state).is_ok_and(|s| s.trim() != "THAWED") {
        let _ = fs::write(&state, "THAWED");
    }
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            thaw_tree(&e.path());
        }
    }
}

fn collect_procs(dir: &Path, out: &mut Vec<i32>) {
    if let Ok(s) = fs::read_to_string(dir.join("cgroup.procs")) {
        out.extend(s.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    }
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.filter_map(|e| e.ok()) {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                collect_procs(&e.path(), out);
            }
        }
    }
}

/// rmdir a cgroup tree bottom-up, retrying on EBUSY while killed tasks are still being reaped.
fn remove_tree(dir: &Path, deadline: Instant) -> Result<(), CgroupError> {
    let Ok(rd) = fs::read_dir(dir) else {
        return Ok(());
    };
    for e in rd.filter_map(|e| e.ok()) {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            remove_tree(&e.path(), deadline)?;
        }
    }
    let mut pause = Duration::from_millis(1);
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if Instant::now() < deadline && e.raw_os_error() == Some(libc::EBUSY) => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(10));
            }
            Err(source) => {
                return Err(CgroupError::Remove {
                    path: dir.to_owned(),
                    source,
                });
            }
        }
    }
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    fs::write(path, value).map_err(|source| CgroupError::Write {
        path: path.to_owned(),
        value: value.to_owned(),
        source,
    })
}

fn write_if_exists(path: &Path, value: &str) -> Result<(), CgroupError> {
    if path.exists() { write(path, value) } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_v1() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for c in ["cpu", "memory", "pids"] {
            fs::create_dir_all(dir.path().join(c)).unwrap();
            fs::write(dir.path().join(c).join("cgroup.procs"), "").unwrap();
        }
        dir
    }

    #[test]
    fn detects_v1_and_writes_quota_and_limit() {
        let root = fake_v1();
        let cg = CgroupFs::detect(root.path()).unwrap();
        assert_eq!(cg.version(), &Version::V1);
        cg.create(
            "wuos/lab/r1",
            &Limits {
                cpus: Some(0.5),
                memory: Some(256 << 20),
            },
        )
        .unwrap();
        let cpu = root.path().join("cpu/wuos/lab/r1");
        assert_eq!(fs::read_to_string(cpu.join("cpu.cfs_quota_us")).unwrap(), "50000");
        assert_eq!(fs::read_to_string(cpu.join("cpu.cfs_period_us")).unwrap(), "100000");
        let mem = root.path().join("memory/wuos/lab/r1/memory.limit_in_bytes");
        assert_eq!(fs::read_to_string(mem).unwrap(), (256u64 << 20).to_string());
        assert_eq!(
            cg.limits("wuos/lab/r1"),
            Limits {
                cpus: Some(0.5),
                memory: Some(256 << 20)
            }
        );
        assert!(
            root.path().join("pids/wuos/lab/r1").is_dir(),
            "every hierarchy gets the cgroup"
        );
    }

    #[test]
    fn detects_v2_and_enables_controllers_on_ancestors() {
        let root = tempfile::tempdir().unwrap();
        fs::write(root.path().join("cgroup.controllers"), "cpuset cpu io memory pids").unwrap();
        fs::write(root.path().join("cgroup.subtree_control"), "").unwrap();
        let cg = CgroupFs::detect(root.path()).unwrap();
        assert_eq!(cg.version(), &Version::V2);
        // A real cgroupfs creates cpu.max when the directory is made; emulate the files.
        fs::create_dir_all(root.path().join("wuos/lab/r1")).unwrap();
        fs::write(root.path().join("wuos/lab/r1/cpu.max"), "max 100000").unwrap();
        fs::write(root.path().join("wuos/lab/r1/memory.max"), "max").unwrap();
        cg.create(
            "wuos/lab/r1",
            &Limits {
                cpus: Some(2.0),
                memory: None,
            },
        )
        .unwrap();
        assert_eq!(
            fs::read_to_string(root.path().join("wuos/lab/r1/cpu.max")).unwrap(),
            "200000 100000"
        );
        assert_eq!(
            fs::read_to_string(root.path().join("wuos/lab/r1/memory.max")).unwrap(),
            "max"
        );
        // The root's subtree_control was written with the wanted controllers (last write wins in a plain file).
        let ctl = fs::read_to_string(root.path().join("cgroup.subtree_control")).unwrap();
        assert!(ctl.starts_with('+'), "subtree_control must be written, got {ctl:?}");
    }

    fn fake_v1_full() -> tempfile::TempDir {
        let dir = fake_v1();
        for c in ["cpuacct", "freezer", "cpuset"] {
            fs::create_dir_all(dir.path().join(c)).unwrap();
            fs::write(dir.path().join(c).join("cgroup.procs"), "").unwrap();
        }
        fs::write(dir.path().join("cpuset/cpuset.cpus"), "0-3\n").unwrap();
        fs::write(dir.path().join("cpuset/cpuset.mems"), "0\n").unwrap();
        dir
    }

    #[test]
    fn v1_cpuset_levels_get_the_parents_cpus_and_mems_then_the_pinned_cores() {
        let root = fake_v1_full();
        let cg = CgroupFs::detect(root.path()).unwrap();
        cg.create("wuos/lab/r1/dom", &Limits::default()).unwrap();
        for level in ["wuos", "wuos/lab", "wuos/lab/r1", "wuos/lab/r1/dom"] {
            let d = root.path().join("cpuset").join(level);
            assert_eq!(fs::read_to_string(d.join("cpuset.cpus")).unwrap(), "0-3", "{level}");
            assert_eq!(fs::read_to_string(d.join("cpuset.mems")).unwrap(), "0", "{level}");
        }
        cg.set_cpuset("wuos/lab/r1/dom", Some(&[1, 3])).unwrap();
        assert_eq!(cg.cpuset("wuos/lab/r1/dom"), Some(vec![1, 3]));
        cg.set_cpuset("wuos/lab/r1/dom", None).unwrap();
        assert_eq!(
            cg.cpuset("wuos/lab/r1/dom"),
            Some(vec![0, 1, 2, 3]),
            "None goes back to the parent's cores"
        );
    }

    #[test]
    fn v1_weight_is_written_as_shares_and_read_back() {
        let root = fake_v1_full();
        let cg = CgroupFs::detect(root.path()).unwrap();
        cg.create("d", &Limits::default()).unwrap();
        cg.set_cpu_weight("d", Some(200)).unwrap();
        assert_eq!(
            fs::read_to_string(root.path().join("cpu/d/cpu.shares")).unwrap(),
            "2048"
        );
        assert_eq!(cg.cpu_weight("d"), Some(200));
        cg.set_cpu_weight("d", None).unwrap();
        assert_eq!(
            fs::read_to_string(root.path().join("cpu/d/cpu.shares")).unwrap(),
            "1024"
        );
    }

    #[test]
    fn v1_freeze_writes_the_state_and_reads_it_back() {
        let root = fake_v1_full();
        let cg = CgroupFs::detect(root.path()).unwrap();
        cg.create("d", &Limits::default()).unwrap();
        assert_eq!(cg.freeze_state("d"), None, "no freezer.state file yet");
        fs::write(root.path().join("freezer/d/freezer.state"), "THAWED\n").unwrap();
        assert_eq!(cg.freeze_state("d"), Some(FreezeState::Thawed));
        cg.freeze("d", Duration::from_millis(100)).unwrap();
        assert_eq!(
            fs::read_to_string(root.path().join("freezer/d/freezer.state")).unwrap(),
            "FROZEN"
        );
        assert_eq!(cg.freeze_state("d"), Some(FreezeState::Frozen));
        cg.thaw("d", Duration::from_millis(100)).unwrap();
        assert_eq!(cg.freeze_state("d"), Some(FreezeState::Thawed));
    }

    #[test]
    fn v2_freeze_waits_for_cgroup_events_and_times_out_clearly() {
        let root = tempfile::tempdir().unwrap();
        fs::write(root.path().join("cgroup.controllers"), "").unwrap();
        let cg = CgroupFs::detect(root.path()).unwrap();
        let d = root.path().join("d");
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("cgroup.freeze"), "0\n").unwrap();
        fs::write(d.join("cgroup.events"), "populated 1\nfrozen 0\n").unwrap();
        assert_eq!(cg.freeze_state("d"), Some(FreezeState::Thawed));
        // A plain file never reports "frozen 1": the freeze times out and is undone.
        let err = cg.freeze("d", Duration::from_millis(30)).unwrap_err().to_string();
        assert!(err.contains("did not reach the frozen state"), "{err}");
        assert_eq!(
            fs::read_to_string(d.join("cgroup.freeze")).unwrap(),
            "0",
            "a failed freeze thaws again"
        );
        fs::write(d.join("cgroup.freeze"), "1\n").unwrap();
        assert_eq!(cg.freeze_state("d"), Some(FreezeState::Freezing));
        fs::write(d.join("cgroup.events"), "populated 1\nfrozen 1\n").unwrap();
        assert_eq!(cg.freeze_state("d"), Some(FreezeState::Frozen));
    }

    #[test]
    fn usage_counters_and_working_set() {
        let root = fake_v1_full();
        let cg = CgroupFs::detect(root.path()).unwrap();
        cg.create("d", &Limits::default()).unwrap();
        fs::write(root.path().join("cpuacct/d/cpuacct.usage"), "12345\n").unwrap();
        fs::write(root.path().join("memory/d/memory.usage_in_bytes"), "1000\n").unwrap();
        fs::write(
            root.path().join("memory/d/memory.stat"),
            "cache 5\ntotal_inactive_file 300\n",
        )
        .unwrap();
        assert_eq!(cg.cpu_usage_ns("d"), Some(12345));
        assert_eq!(cg.memory_usage("d"), Some(700));

        let v2 = tempfile::tempdir().unwrap();
        fs::write(v2.path().join("cgroup.controllers"), "cpu memory").unwrap();
        fs::create_dir_all(v2.path().join("d")).unwrap();
        fs::write(v2.path().join("d/cpu.stat"), "usage_usec 7\nuser_usec 5\n").unwrap();
        fs::write(v2.path().join("d/memory.current"), "4096\n").unwrap();
        fs::write(v2.path().join("d/memory.stat"), "anon 1\ninactive_file 96\n").unwrap();
        let cg = CgroupFs::detect(v2.path()).unwrap();
        assert_eq!(cg.cpu_usage_ns("d"), Some(7000));
        assert_eq!(cg.memory_usage("d"), Some(4000));
    }

    #[test]
    fn child_budgets_subtract_limited_children() {
        let root = fake_v1_full();
        let cg = CgroupFs::detect(root.path()).unwrap();
        let gib = 1u64 << 30;
        cg.create(
            "r1",
            &Limits {
                cpus: Some(2.0),
                memory: Some(gib),
            },
        )
        .unwrap();
        cg.create(
            "r1/routing",
            &Limits {
                cpus: Some(0.5),
                memory: Some(gib / 4),
            },
        )
        .unwrap();
        cg.create(
            "r1/pabx",
            &Limits {
                cpus: Some(1.0),
                memory: None,
            },
        )
        .unwrap();
        cg.create("r1/free", &Limits::default()).unwrap();
        let b = cg.child_budgets("r1");
        assert_eq!(b.parent.cpus, Some(2.0));
        let names: Vec<&str> = b.children.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["free", "pabx", "routing"]);
        assert_eq!(b.unreserved.cpus, Some(0.5));
        assert_eq!(b.unreserved.memory, Some(gib - gib / 4));
    }

    #[test]
    fn cpu_lists_parse_ranges() {
        assert_eq!(parse_cpu_list("0-2,5"), Some(vec![0, 1, 2, 5]));
        assert_eq!(parse_cpu_list(""), Some(vec![]));
        assert_eq!(parse_cpu_list("x"), None);
    }

    #[test]
    fn no_hierarchy_is_a_clear_error() {
        let root = tempfile::tempdir().unwrap();
        let err = CgroupFs::detect(root.path()).unwrap_err().to_string();
        assert!(err.contains("no usable cgroup hierarchy"), "{err}");
    }
}
