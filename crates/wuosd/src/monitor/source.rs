//! Where the figures come from: a whole machine (`/proc`) or a lab router's cgroup, the paths of
//! the files read for each (built once), and the file reader that reuses one buffer.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::{MonitorError, cpu, disk, memory, parse_err};

/// The cgroup hierarchy of a [`Source::Cgroup`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CgroupVersion {
    V1,
    V2,
}

impl CgroupVersion {
    /// v2 when `cgroup_root/cgroup.controllers` exists, else v1 (one directory per controller).
    pub fn detect(cgroup_root: &Path) -> Self {
        if cgroup_root.join("cgroup.controllers").exists() {
            Self::V2
        } else {
            Self::V1
        }
    }
}

/// What a [`Monitor`](super::Monitor) measures.
#[derive(Clone, Debug)]
pub enum Source {
    /// A whole machine: /proc (and /sys) under `proc_root`/`sys_root`.
    ///
    /// `sys_root` is not read by the current figures: the CPU count comes from the `cpuN` lines
    /// of `/proc/stat` (the same online CPUs its aggregate line sums) and whole disks are told
    /// from partitions by their names (see [`disk`]).
    Proc { proc_root: PathBuf, sys_root: PathBuf },
    /// A lab router: its cgroup `rel` (e.g. "wuos/demo/r1") under `cgroup_root`
    /// ("/sys/fs/cgroup"), version detected by [`CgroupVersion::detect`]: v2 when
    /// `cgroup_root/cgroup.controllers` exists, else v1 with per-controller dirs (cpu, cpuacct,
    /// memory, blkio). Host figures (MemTotal, CPU count, /proc/net/dev) still come from
    /// `proc_root`.
    Cgroup {
        cgroup_root: PathBuf,
        rel: String,
        proc_root: PathBuf,
    },
}

impl Source {
    /// The `/proc` of the host, read by both kinds of source.
    pub fn proc_root(&self) -> &Path {
        match self {
            Self::Proc { proc_root, .. } | Self::Cgroup { proc_root, .. } => proc_root,
        }
    }
}

/// Reads whole files into one buffer that grows to the biggest file read and is then reused:
/// a sampling allocates nothing for its reads. Files stay open between samplings and are read
/// again from offset 0 (procfs, cgroupfs and PSI files produce their text anew at each read from
/// 0): the path lookups of opening ten files a second were most of a sample's cost on a host of
/// a thousand routers. A file that fails on its old handle (its cgroup was removed and made
/// again) is opened anew once.
pub(crate) struct Reader {
    buf: Vec<u8>,
    open: HashMap<PathBuf, File>,
}

impl Reader {
    pub(crate) fn new() -> Self {
        // /proc/stat, the biggest file read, is ~2 KiB + 3 KiB per 100 interrupt lines.
        Self {
            buf: vec![0; 8192],
            open: HashMap::new(),
        }
    }

    /// The text of `path`; a missing file is an error naming it.
    pub(crate) fn read(&mut self, path: &Path) -> Result<&str, MonitorError> {
        match self.fill(path) {
            Ok(len) => text(&self.buf[..len], path),
            Err(source) => Err(MonitorError::Read {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// The text of `path`, or `None` when it does not exist or its kernel feature is off
    /// (`EOPNOTSUPP`, e.g. PSI files with `psi=0`).
    pub(crate) fn read_optional(&mut self, path: &Path) -> Result<Option<&str>, MonitorError> {
        match self.fill(path) {
            Ok(len) => text(&self.buf[..len], path).map(Some),
            Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::Unsupported) => Ok(None),
            Err(source) => Err(MonitorError::Read {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// Reads `path` into the buffer, returning its length: `pread` calls from offset 0 until end
    /// of file, no `fstat` for a size hint (procfs and cgroupfs files report size 0 anyway).
    fn fill(&mut self, path: &Path) -> io::Result<usize> {
        if let Some(file) = self.open.get(path) {
            match read_all(file, &mut self.buf) {
                Ok(len) => return Ok(len),
                Err(_) => {
                    self.open.remove(path);
                }
            }
        }
        let file = File::open(path)?;
        let len = read_all(&file, &mut self.buf)?;
        self.open.insert(path.to_owned(), file);
        Ok(len)
    }
}

/// Below this many bytes in all, a read that returned fewer bytes than asked read the whole file.
/// procfs and cgroupfs files are seq_files, which stop short of the end only when their buffer
/// (a page, 4 KiB, at least) fills; under half a page, no record of theirs can be left over. It
/// saves the second read that would return 0: half of the monitor's system calls.
const SHORT_IS_WHOLE: usize = 2048;

/// Reads `file` from offset 0 to its end into `buf` (grown as needed); the length read.
fn read_all(file: &File, buf: &mut Vec<u8>) -> io::Result<usize> {
    let mut len = 0;
    loop {
        if len == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        let asked = buf.len() - len;
        match file.read_at(&mut buf[len..], len as u64) {
            Ok(0) => return Ok(len),
            Ok(n) if n < asked && len + n < SHORT_IS_WHOLE => return Ok(len + n),
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

fn text<'a>(bytes: &'a [u8], path: &Path) -> Result<&'a str, MonitorError> {
    std::str::from_utf8(bytes).map_err(|_| parse_err(path, "it is not UTF-8 text"))
}

fn check(path: &Path, what: &'static str) -> Result<(), MonitorError> {
    if path.exists() {
        Ok(())
    } else {
        Err(MonitorError::Missing {
            path: path.to_owned(),
            what,
        })
    }
}

/// The host files under `proc_root`.
pub(crate) struct HostFiles {
    pub(crate) stat: PathBuf,
    pub(crate) meminfo: PathBuf,
    pub(crate) diskstats: PathBuf,
    pub(crate) net_dev: PathBuf,
    /// `pressure/{cpu,memory,io}`, `None` when absent at start (kernel without PSI).
    pub(crate) pressure: [Option<PathBuf>; 3],
}

impl HostFiles {
    pub(crate) fn new(proc_root: &Path) -> Self {
        let psi = |r: &str| Some(proc_root.join("pressure").join(r)).filter(|p| p.exists());
        Self {
            stat: proc_root.join("stat"),
            meminfo: proc_root.join("meminfo"),
            diskstats: proc_root.join("diskstats"),
            net_dev: proc_root.join("net/dev"),
            pressure: [psi("cpu"), psi("memory"), psi("io")],
        }
    }

    /// Checks the files every source reads, and `diskstats` for a proc source.
    pub(crate) fn check_exist(&self, whole_machine: bool) -> Result<(), MonitorError> {
        check(&self.stat, "the CPU figures (and the host's CPU count)")?;
        check(&self.meminfo, "the memory figures (and the host's MemTotal)")?;
        if whole_machine {
            check(&self.diskstats, "the disk figures")?;
        }
        check(&self.net_dev, "the interface figures")
    }
}

/// CPU quota files of one level of a cgroup path.
#[derive(Clone, Debug)]
pub(crate) enum QuotaFiles {
    V1 { quota: PathBuf, period: PathBuf },
    V2 { max: PathBuf },
}

/// The files of one cgroup (the router's, or a child of it).
#[derive(Clone, Debug)]
pub(crate) struct CgroupFiles {
    pub(crate) version: CgroupVersion,
    cgroup_root: PathBuf,
    rel: String,
    /// v1 `cpuacct/<rel>/cpuacct.usage` (ns), v2 `<rel>/cpu.stat` (`usage_usec`).
    cpu_usage: PathBuf,
    /// Quota files of the cgroup and of each ancestor up to (not including) the root: a quota
    /// anywhere above bounds the cgroup. Absent files mean no quota at that level.
    quotas: Vec<QuotaFiles>,
    /// v1 `memory.usage_in_bytes`, v2 `memory.current`.
    mem_current: PathBuf,
    mem_stat: PathBuf,
    /// v1: `memory.limit_in_bytes` of the cgroup (the ancestors' bound is
    /// `hierarchical_memory_limit` in `memory.stat`); v2: `memory.max` of the cgroup and each
    /// ancestor.
    mem_limits: Vec<PathBuf>,
    /// v1 `blkio.throttle.io_service_bytes_recursive` (or the non-recursive file on kernels
    /// without it), v2 `io.stat`; `None` when absent at start: no disk accounting for this
    /// cgroup (the lab does not create blkio cgroups on v1; v2 needs the io controller).
    pub(crate) io: Option<PathBuf>,
    /// PSI files: the cgroup's own on v2; otherwise (and when `proc_root` is given) the host's.
    pub(crate) pressure: [Option<PathBuf>; 3],
    pub(crate) pressure_host_scope: bool,
}

impl CgroupFiles {
    /// Paths of cgroup `rel`. Host-scope pressure falls back to `proc_root/pressure` when the
    /// cgroup has no PSI files and `proc_root` is given.
    pub(crate) fn new(cgroup_root: &Path, version: CgroupVersion, rel: &str, proc_root: Option<&Path>) -> Self {
        let rel = rel.trim_matches('/');
        let dir = |controller: &str, rel: &str| match version {
            CgroupVersion::V1 => cgroup_root.join(controller).join(rel),
            CgroupVersion::V2 => cgroup_root.join(rel),
        };
        let levels = || std::iter::successors(Some(rel), |r| r.rfind('/').map(|i| &r[..i])).filter(|r| !r.is_empty());
        let (cpu_usage, quotas, mem_current, mem_limits, io, pressure) = match version {
            CgroupVersion::V1 => {
                let quotas = levels()
                    .map(|r| QuotaFiles::V1 {
                        quota: dir("cpu", r).join("cpu.cfs_quota_us"),
                        period: dir("cpu", r).join("cpu.cfs_period_us"),
                    })
                    .collect();
                let blkio = dir("blkio", rel);
                let io = [
                    "blkio.throttle.io_service_bytes_recursive",
                    "blkio.throttle.io_service_bytes",
                ]
                .iter()
                .map(|f| blkio.join(f))
                .find(|p| p.exists());
                (
                    dir("cpuacct", rel).join("cpuacct.usage"),
                    quotas,
                    dir("memory", rel).join("memory.usage_in_bytes"),
                    vec![dir("memory", rel).join("memory.limit_in_bytes")],
                    io,
                    [None, None, None],
                )
            }
            CgroupVersion::V2 => {
                let d = cgroup_root.join(rel);
                let psi = |f: &str| Some(d.join(f)).filter(|p| p.exists());
                (
                    d.join("cpu.stat"),
                    levels()
                        .map(|r| QuotaFiles::V2 {
                            max: cgroup_root.join(r).join("cpu.max"),
                        })
                        .collect(),
                    d.join("memory.current"),
                    levels().map(|r| cgroup_root.join(r).join("memory.max")).collect(),
                    Some(d.join("io.stat")).filter(|p| p.exists()),
                    [psi("cpu.pressure"), psi("memory.pressure"), psi("io.pressure")],
                )
            }
        };
        let mem_stat = dir("memory", rel).join("memory.stat");
        let (pressure, pressure_host_scope) = match (pressure, proc_root) {
            ([None, None, None], Some(proc_root)) => (HostFiles::new(proc_root).pressure, true),
            (p, _) => (p, false),
        };
        Self {
            version,
            cgroup_root: cgroup_root.to_owned(),
            rel: rel.to_owned(),
            cpu_usage,
            quotas,
            mem_current,
            mem_stat,
            mem_limits,
            io,
            pressure,
            pressure_host_scope,
        }
    }

    /// The files of child `child` of this cgroup, without host-scope pressure.
    pub(crate) fn child(&self, child: &str) -> Self {
        let rel = format!("{}/{}", self.rel, child.trim_matches('/'));
        Self::new(&self.cgroup_root, self.version, &rel, None)
    }

    /// Checks the counters every sampling needs.
    pub(crate) fn check_exist(&self) -> Result<(), MonitorError> {
        let (cpu, mem) = match self.version {
            CgroupVersion::V1 => (
                "the CPU figures (cgroup v1 cpuacct controller)",
                "the memory figures (cgroup v1 memory controller)",
            ),
            CgroupVersion::V2 => (
                "the CPU figures",
                "the memory figures (cgroup v2 memory controller, enabled in the parent's cgroup.subtree_control)",
            ),
        };
        check(&self.cpu_usage, cpu)?;
        check(&self.mem_current, mem)?;
        check(&self.mem_stat, mem)
    }

    /// CPU time used by the cgroup since its creation, in nanoseconds.
    pub(crate) fn read_cpu_usage_ns(&self, reader: &mut Reader) -> Result<u64, MonitorError> {
        let text = reader.read(&self.cpu_usage)?;
        match self.version {
            CgroupVersion::V1 => cpu::parse_cpuacct_usage(text),
            CgroupVersion::V2 => cpu::parse_cpu_stat_usage_usec(text).map(|us| us.saturating_mul(1000)),
        }
        .map_err(|r| parse_err(&self.cpu_usage, r))
    }

    /// The smallest quota of the cgroup and its ancestors, in cores, at most `host_cpus`.
    pub(crate) fn read_cpu_capacity(&self, reader: &mut Reader, host_cpus: f64) -> Result<f64, MonitorError> {
        let mut cores = host_cpus;
        for level in &self.quotas {
            let quota = match level {
                QuotaFiles::V1 { quota, period } => {
                    let Some(q) = reader.read_optional(quota)? else {
                        continue;
                    };
                    let q = cpu::parse_cfs_quota_us(q).map_err(|r| parse_err(quota, r))?;
                    let Some(q) = q else { continue };
                    let Some(p) = reader.read_optional(period)? else {
                        continue;
                    };
                    cpu::cfs_cores(q, cpu::parse_cfs_period_us(p).map_err(|r| parse_err(period, r))?)
                }
                QuotaFiles::V2 { max } => {
                    let Some(text) = reader.read_optional(max)? else {
                        continue;
                    };
                    cpu::parse_cpu_max(text).map_err(|r| parse_err(max, r))?
                }
            };
            if let Some(q) = quota {
                cores = cores.min(q);
            }
        }
        Ok(cores)
    }

    /// Used (working set: usage minus inactive file cache) and total bytes; the total is the
    /// smallest limit of the cgroup and its ancestors, at most `host_mem`.
    pub(crate) fn read_memory(&self, reader: &mut Reader, host_mem: u64) -> Result<(u64, u64), MonitorError> {
        let limits = self.read_memory_limits(reader, host_mem)?;
        self.read_memory_used(reader, limits)
    }

    /// Used bytes (as [`CgroupFiles::read_memory`]) and the total: `limits` (from
    /// [`CgroupFiles::read_memory_limits`]), or less when `memory.stat` names a smaller
    /// hierarchical limit.
    pub(crate) fn read_memory_used(&self, reader: &mut Reader, limits: u64) -> Result<(u64, u64), MonitorError> {
        let current = reader.read(&self.mem_current)?;
        let current = memory::parse_bytes(current).map_err(|r| parse_err(&self.mem_current, r))?;
        let stat = reader.read(&self.mem_stat)?;
        let stat = memory::parse_memory_stat(stat, &self.version).map_err(|r| parse_err(&self.mem_stat, r))?;
        let total = stat.hierarchical_limit.map_or(limits, |l| limits.min(l));
        Ok((current.saturating_sub(stat.inactive_file), total))
    }

    /// The smallest memory limit file of the cgroup and its ancestors, at most `host_mem`.
    pub(crate) fn read_memory_limits(&self, reader: &mut Reader, host_mem: u64) -> Result<u64, MonitorError> {
        let mut total = host_mem;
        for path in &self.mem_limits {
            let Some(text) = reader.read_optional(path)? else {
                continue;
            };
            let limit = match self.version {
                CgroupVersion::V1 => memory::parse_limit_in_bytes(text),
                CgroupVersion::V2 => memory::parse_memory_max(text),
            }
            .map_err(|r| parse_err(path, r))?;
            if let Some(limit) = limit {
                total = total.min(limit);
            }
        }
        Ok(total)
    }

    /// Bytes read and written by the cgroup, `None` without disk accounting.
    pub(crate) fn read_io(&self, reader: &mut Reader) -> Result<Option<disk::IoBytes>, MonitorError> {
        let Some(path) = &self.io else { return Ok(None) };
        let Some(text) = reader.read_optional(path)? else {
            return Ok(None);
        };
        match self.version {
            CgroupVersion::V1 => disk::parse_blkio_service_bytes(text),
            CgroupVersion::V2 => disk::parse_io_stat(text),
        }
        .map(Some)
        .map_err(|r| parse_err(path, r))
    }
}
