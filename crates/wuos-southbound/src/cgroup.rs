//! cgroups — a router's "hardware" (CPU quota, memory limit) in the lab, and later the budgets of
//! domains. Works on cgroup v2 (unified) and on v1 (one hierarchy per controller), detected from the
//! cgroup root, which is a parameter (`/sys/fs/cgroup` on a real host, a temp dir in tests).
//!
//! Paths given to this module are relative to the root of each hierarchy, e.g. `wuos/demo/r1`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// CPU period used for quotas, in microseconds.
pub const CPU_PERIOD_US: u64 = 100_000;

/// v1 controllers wuos uses. `cpuset` is left out on purpose: a v1 cpuset cgroup refuses tasks until
/// its `cpuset.cpus`/`cpuset.mems` are filled in; domains that pin cores set it up themselves.
const V1_CONTROLLERS: [&str; 5] = ["cpu", "cpuacct", "memory", "pids", "freezer"];

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
        for dir in self.dirs(rel) {
            fs::create_dir_all(&dir).map_err(|source| CgroupError::Create {
                path: dir.clone(),
                source,
            })?;
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

    /// Moves process `pid` (all its threads) into cgroup `rel` in every hierarchy.
    pub fn join(&self, rel: &str, pid: u32) -> Result<(), CgroupError> {
        for dir in self.dirs(rel) {
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
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if Instant::now() < deadline && e.raw_os_error() == Some(libc::EBUSY) => {
                std::thread::sleep(Duration::from_millis(10));
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

    #[test]
    fn no_hierarchy_is_a_clear_error() {
        let root = tempfile::tempdir().unwrap();
        let err = CgroupFs::detect(root.path()).unwrap_err().to_string();
        assert!(err.contains("no usable cgroup hierarchy"), "{err}");
    }
}
