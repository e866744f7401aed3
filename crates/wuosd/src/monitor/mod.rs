//! The resource monitor: the router's own view of its CPU, memory, disk, interfaces and pressure,
//! sampled once per telemetry interval (1–10 Hz).
//!
//! # Layout
//! - [`source`]: where the figures come from ([`Source`]: a whole machine's `/proc`, or a lab
//!   router's cgroup v1/v2), the file paths of each, and the reused-buffer file reader.
//! - [`sample`]: what one sampling returns ([`Sample`], [`InterfaceRates`], [`Pressure`]).
//! - [`cpu`]: `/proc/stat`, `cpuacct.usage`, `cpu.stat`, CFS quotas (`cpu.cfs_quota_us`,
//!   `cpu.max`), and CPU use as a share of capacity.
//! - [`memory`]: `/proc/meminfo`, `memory.stat`, memory limits (`memory.limit_in_bytes`,
//!   `memory.max`).
//! - [`disk`]: `/proc/diskstats` (whole physical devices only), `blkio.throttle.io_service_bytes`,
//!   `io.stat`.
//! - [`net`]: `/proc/net/dev` and per-interface rates.
//! - [`pressure`]: PSI files (`cpu.pressure`, `/proc/pressure/cpu`, …).
//! - `tests`: the [`Monitor`] on fixture trees of both sources and both cgroup versions, and one
//!   test on the live `/proc`.
//! - `fixtures/`: files captured from real kernels, used by the parser tests.
//!
//! Every parser takes the file's text (`&str`) and does no I/O. [`Monitor::sample`] opens, reads
//! and parses each file into one reused buffer; its paths are built once by [`Monitor::new`].
//! Counters become rates against the previous call, over the elapsed time between the
//! [`Instant`]s the caller passes in.

pub mod cpu;
pub mod disk;
pub mod memory;
pub mod net;
pub mod pressure;
pub mod sample;
pub mod source;

impl wuos_model::Classify for MonitorError {
    fn class(&self) -> wuos_model::ErrorClass {
        wuos_model::ErrorClass::Internal
    }
}

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io;
use std::path::PathBuf;
use std::time::Instant;

pub use sample::{InterfaceRates, Pressure, Sample};
pub use source::{CgroupVersion, Source};

use cpu::CpuCounter;
use disk::IoBytes;
use net::InterfaceCounters;
use source::{CgroupFiles, HostFiles, Reader};

/// Why the monitor could not start or could not take a sample.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error("{path} does not exist, and the monitor needs it for {what}.")]
    Missing { path: PathBuf, what: &'static str },
    #[error("Could not read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("Could not parse {path}: {reason}.")]
    Parse { path: PathBuf, reason: &'static str },
    #[error("Per-cgroup figures need a cgroup source, and this monitor reads the whole machine from {proc_root}.")]
    NotCgroup { proc_root: PathBuf },
    #[error("{rel:?} is not a child cgroup path: it must be relative and non-empty, without `..` or empty components.")]
    BadChild { rel: String },
}

/// The counters of one sampling, kept to compute the next sampling's rates.
#[derive(Clone, Copy, Debug)]
struct Counters {
    at: Instant,
    cpu: CpuCounter,
    io: IoBytes,
}

/// What to read for the figures of the source.
enum Probe {
    Proc,
    Cgroup(Box<CgroupFiles>),
}

/// A child cgroup sampled by [`Monitor::sample_child`]: its paths and its previous counters.
struct Child {
    files: CgroupFiles,
    prev: Option<Counters>,
    limits: Limits,
}

/// Samples between two readings of a cgroup's limits (CPU quotas, memory limit files, at every
/// level): they change when an operator or the orchestrator resizes a domain, not from one
/// second to the next (on cgroup v1: two quota files and one limit file per level, re-read for
/// nothing). A hierarchical limit in `memory.stat` (read every sample) still counts at once.
pub const LIMITS_EVERY: u32 = 10;

/// A cgroup's limits as last read, and how many samples ago.
#[derive(Clone, Copy, Debug, Default)]
struct Limits {
    read: Option<(f64, u64)>,
    age: u32,
}

impl Limits {
    /// The limits (cores, memory bytes), read anew when none are held or they are
    /// [`LIMITS_EVERY`] samples old.
    fn get(&mut self, reader: &mut Reader, files: &CgroupFiles, host: (f64, u64)) -> Result<(f64, u64), MonitorError> {
        match self.read {
            Some(l) if self.age < LIMITS_EVERY => {
                self.age += 1;
                Ok(l)
            }
            _ => {
                let l = (
                    files.read_cpu_capacity(reader, host.0)?,
                    files.read_memory_limits(reader, host.1)?,
                );
                self.read = Some(l);
                self.age = 1;
                Ok(l)
            }
        }
    }
}

/// Samples the router's resources. See the [module documentation](self).
pub struct Monitor {
    source: Source,
    host: HostFiles,
    probe: Probe,
    /// CPUs of the host: for a cgroup source, read once by [`Monitor::new`]; for a proc source,
    /// refreshed by every sample.
    host_cpus: f64,
    /// `MemTotal` of the host, same refresh rule as `host_cpus`.
    host_mem: u64,
    reader: Reader,
    prev: Option<Counters>,
    prev_interfaces: Vec<(String, InterfaceCounters)>,
    children: HashMap<String, Child>,
    /// The router cgroup's limits (a cgroup source).
    limits: Limits,
    /// Capacity found by the latest sampling (or by `new`), for [`Monitor::describe`].
    capacity_cores: f64,
    mem_total: u64,
}

impl Monitor {
    /// Checks that the files of `source` exist and reads its capacity (CPUs, memory).
    ///
    /// The error names the first missing or unreadable file. Optional files are not required:
    /// CPU quota files (absent: no quota), the disk counters of a cgroup (absent: disk rates
    /// stay 0, see [`Monitor::describe`]) and PSI files (absent: `None` pressures).
    pub fn new(source: Source) -> Result<Self, MonitorError> {
        let host = HostFiles::new(source.proc_root());
        let mut reader = Reader::new();
        let probe = match &source {
            Source::Proc { .. } => {
                host.check_exist(true)?;
                Probe::Proc
            }
            Source::Cgroup {
                cgroup_root,
                rel,
                proc_root,
            } => {
                host.check_exist(false)?;
                let version = CgroupVersion::detect(cgroup_root);
                let files = CgroupFiles::new(cgroup_root, version, rel, Some(proc_root));
                files.check_exist()?;
                Probe::Cgroup(Box::new(files))
            }
        };
        let stat = cpu::parse_proc_stat(reader.read(&host.stat)?).map_err(|r| parse_err(&host.stat, r))?;
        let meminfo = memory::parse_meminfo(reader.read(&host.meminfo)?).map_err(|r| parse_err(&host.meminfo, r))?;
        let host_cpus = f64::from(stat.cpus);
        let host_mem = meminfo.total_bytes;
        let (capacity_cores, mem_total) = match &probe {
            Probe::Proc => (host_cpus, host_mem),
            Probe::Cgroup(files) => (
                files.read_cpu_capacity(&mut reader, host_cpus)?,
                files.read_memory(&mut reader, host_mem)?.1,
            ),
        };
        Ok(Self {
            source,
            host,
            probe,
            host_cpus,
            host_mem,
            reader,
            prev: None,
            prev_interfaces: Vec::new(),
            children: HashMap::new(),
            limits: Limits::default(),
            capacity_cores,
            mem_total,
        })
    }

    /// The source this monitor reads.
    pub fn source(&self) -> &Source {
        &self.source
    }

    /// Reads every counter once and computes rates against the previous call. `now` is the
    /// time of the reading (tests pass made-up instants); the first call has `first` set and
    /// all rates 0.
    pub fn sample(&mut self, now: Instant) -> Result<Sample, MonitorError> {
        let secs = elapsed(self.prev.as_ref(), now);
        let mut sample = match &self.probe {
            Probe::Proc => {
                let (sample, counters) = sample_proc(&mut self.reader, &self.host, now, self.prev.as_ref())?;
                self.host_cpus = sample.cpu_capacity_cores;
                self.host_mem = sample.mem_total_bytes;
                self.prev = Some(counters);
                sample
            }
            Probe::Cgroup(files) => {
                let (sample, counters) = sample_cgroup(
                    &mut self.reader,
                    files,
                    &mut self.limits,
                    (self.host_cpus, self.host_mem),
                    now,
                    self.prev.as_ref(),
                )?;
                self.prev = Some(counters);
                sample
            }
        };
        let text = self.reader.read(&self.host.net_dev)?;
        sample.interfaces =
            net::update_rates(text, &mut self.prev_interfaces, secs).map_err(|r| parse_err(&self.host.net_dev, r))?;
        self.capacity_cores = sample.cpu_capacity_cores;
        self.mem_total = sample.mem_total_bytes;
        Ok(sample)
    }

    /// Samples the CPU, memory, disk (when accounted) and cgroup-scoped pressure of the child
    /// cgroup `rel` of the router's cgroup (e.g. `"dom-a"` for `wuos/demo/r1/dom-a`), the same
    /// way as [`Monitor::sample`]. Interfaces are left empty (they belong to the router's
    /// namespace, not to a cgroup) and so is host-scope pressure (it is in the router's sample).
    /// Each child keeps its own previous counters: its first call has `first` set.
    pub fn sample_child(&mut self, rel: &str, now: Instant) -> Result<Sample, MonitorError> {
        let Probe::Cgroup(router) = &self.probe else {
            return Err(MonitorError::NotCgroup {
                proc_root: self.source.proc_root().to_owned(),
            });
        };
        if rel.is_empty() || rel.starts_with('/') || rel.split('/').any(|c| c == ".." || c.is_empty()) {
            return Err(MonitorError::BadChild { rel: rel.to_owned() });
        }
        let child = match self.children.get_mut(rel) {
            Some(child) => child,
            None => {
                let files = router.child(rel);
                files.check_exist()?;
                self.children.entry(rel.to_owned()).or_insert(Child {
                    files,
                    prev: None,
                    limits: Limits::default(),
                })
            }
        };
        let (sample, counters) = sample_cgroup(
            &mut self.reader,
            &child.files,
            &mut child.limits,
            (self.host_cpus, self.host_mem),
            now,
            child.prev.as_ref(),
        )?;
        child.prev = Some(counters);
        Ok(sample)
    }

    /// Drops the previous counters of child `rel` (call it when the child cgroup is removed).
    pub fn forget_child(&mut self, rel: &str) {
        self.children.remove(rel);
    }

    /// One line for logs, e.g. `cgroup v1 wuos/demo/r1 (0.50 cores, 256 MiB)`, with the
    /// capacity found by the latest sampling.
    pub fn describe(&self) -> String {
        let mut s = match (&self.source, &self.probe) {
            (Source::Cgroup { rel, .. }, Probe::Cgroup(files)) => {
                let v = match files.version {
                    CgroupVersion::V1 => "v1",
                    CgroupVersion::V2 => "v2",
                };
                format!("cgroup {v} {rel} (")
            }
            _ => format!("proc {} (", self.source.proc_root().display()),
        };
        let _ = write!(s, "{:.2} cores, ", self.capacity_cores);
        push_bytes(&mut s, self.mem_total);
        if let Probe::Cgroup(files) = &self.probe
            && files.io.is_none()
        {
            s.push_str(", no disk accounting");
        }
        s.push(')');
        s
    }
}

fn parse_err(path: &std::path::Path, reason: &'static str) -> MonitorError {
    MonitorError::Parse {
        path: path.to_owned(),
        reason,
    }
}

/// Seconds since `prev` (0 when there is none, or when `now` is not later).
fn elapsed(prev: Option<&Counters>, now: Instant) -> f64 {
    prev.map_or(0.0, |p| now.saturating_duration_since(p.at).as_secs_f64())
}

/// Fills the fields that depend on the previous counters.
fn finish(mut sample: Sample, prev: Option<&Counters>, cur: Counters, capacity: f64) -> (Sample, Counters) {
    let secs = elapsed(prev, cur.at);
    sample.cpu_capacity_cores = capacity;
    match prev {
        None => sample.first = true,
        Some(p) => {
            sample.cpu_used_pct = cpu::used_pct(p.cpu, cur.cpu, secs, capacity);
            sample.disk_read_bytes_per_s = sample::per_second(p.io.read, cur.io.read, secs);
            sample.disk_write_bytes_per_s = sample::per_second(p.io.write, cur.io.write, secs);
        }
    }
    (sample, cur)
}

fn sample_proc(
    reader: &mut Reader,
    host: &HostFiles,
    now: Instant,
    prev: Option<&Counters>,
) -> Result<(Sample, Counters), MonitorError> {
    let stat = cpu::parse_proc_stat(reader.read(&host.stat)?).map_err(|r| parse_err(&host.stat, r))?;
    let mem = memory::parse_meminfo(reader.read(&host.meminfo)?).map_err(|r| parse_err(&host.meminfo, r))?;
    let io = disk::parse_diskstats(reader.read(&host.diskstats)?).map_err(|r| parse_err(&host.diskstats, r))?;
    let used = mem.total_bytes.saturating_sub(mem.available_bytes);
    let mut sample = Sample {
        mem_used_bytes: used,
        mem_total_bytes: mem.total_bytes,
        mem_used_pct: memory::used_pct(used, mem.total_bytes),
        ..Sample::default()
    };
    sample.cpu_pressure = pressure::read(reader, host.pressure[0].as_deref(), true)?;
    sample.mem_pressure = pressure::read(reader, host.pressure[1].as_deref(), true)?;
    sample.io_pressure = pressure::read(reader, host.pressure[2].as_deref(), true)?;
    let cur = Counters {
        at: now,
        cpu: CpuCounter::Jiffies {
            busy: stat.busy,
            total: stat.total,
        },
        io,
    };
    Ok(finish(sample, prev, cur, f64::from(stat.cpus)))
}

fn sample_cgroup(
    reader: &mut Reader,
    files: &CgroupFiles,
    limits: &mut Limits,
    host: (f64, u64),
    now: Instant,
    prev: Option<&Counters>,
) -> Result<(Sample, Counters), MonitorError> {
    let usage_ns = files.read_cpu_usage_ns(reader)?;
    let (capacity, mem_limit) = limits.get(reader, files, host)?;
    let (used, total) = files.read_memory_used(reader, mem_limit)?;
    let io = files.read_io(reader)?.unwrap_or_default();
    let mut sample = Sample {
        mem_used_bytes: used,
        mem_total_bytes: total,
        mem_used_pct: memory::used_pct(used, total),
        ..Sample::default()
    };
    let [cpu, mem, io_psi] = &files.pressure;
    sample.cpu_pressure = pressure::read(reader, cpu.as_deref(), files.pressure_host_scope)?;
    sample.mem_pressure = pressure::read(reader, mem.as_deref(), files.pressure_host_scope)?;
    sample.io_pressure = pressure::read(reader, io_psi.as_deref(), files.pressure_host_scope)?;
    let cur = Counters {
        at: now,
        cpu: CpuCounter::UsageNs(usage_ns),
        io,
    };
    Ok(finish(sample, prev, cur, capacity))
}

/// Appends `bytes` as `256 MiB` below 1 GiB, `3.8 GiB` above.
fn push_bytes(s: &mut String, bytes: u64) {
    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;
    let _ = if bytes >= GIB {
        write!(s, "{:.1} GiB", bytes as f64 / GIB as f64)
    } else {
        write!(s, "{} MiB", bytes / MIB)
    };
}
