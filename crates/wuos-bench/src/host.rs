//! What the host tells about itself, read from procfs (its root is a parameter): the machine a
//! benchmark ran on (cores, kernel, memory, load before and after), available memory, and a
//! process's CPU time and RSS.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// The machine a benchmark ran on. The load averages at the start and the end tell whether the
/// machine was quiet: figures taken while others compiled are not valid.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub kernel: String,
    pub memory_gib: f64,
    /// 1-, 5- and 15-minute load averages when the benchmark started.
    pub loadavg_start: [f64; 3],
    /// The same when it ended (filled by [`Machine::finish`]).
    pub loadavg_end: Option<[f64; 3]>,
    #[serde(skip)]
    proc_root: PathBuf,
}

impl Machine {
    /// Reads the machine from `proc_root` (`/proc`).
    pub fn read(proc_root: &Path) -> Self {
        let read = |rel: &str| std::fs::read_to_string(proc_root.join(rel)).unwrap_or_default();
        Self {
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            kernel: read("sys/kernel/osrelease").trim().to_string(),
            memory_gib: meminfo_bytes(&read("meminfo"), "MemTotal").unwrap_or(0) as f64 / (1u64 << 30) as f64,
            loadavg_start: loadavg(&read("loadavg")).unwrap_or_default(),
            loadavg_end: None,
            proc_root: proc_root.to_path_buf(),
        }
    }

    /// Records the load at the end of the benchmark.
    pub fn finish(&mut self) {
        self.loadavg_end = loadavg(&std::fs::read_to_string(self.proc_root.join("loadavg")).unwrap_or_default());
    }
}

impl fmt::Display for Machine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} cores, {:.0} GiB, kernel {}, load {:.2} at the start",
            self.cores, self.memory_gib, self.kernel, self.loadavg_start[0]
        )?;
        if let Some(end) = self.loadavg_end {
            write!(f, ", {:.2} at the end", end[0])?;
        }
        Ok(())
    }
}

/// A `/proc/meminfo` field in bytes (`MemAvailable`, `MemTotal`).
pub fn meminfo_bytes(meminfo: &str, field: &str) -> Option<u64> {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kib| kib * 1024)
}

/// The three load averages of `/proc/loadavg`.
pub fn loadavg(text: &str) -> Option<[f64; 3]> {
    let mut f = text.split_whitespace().map(|v| v.parse::<f64>().ok());
    Some([f.next()??, f.next()??, f.next()??])
}

/// The host's `MemAvailable` in bytes.
pub fn mem_available(proc_root: &Path) -> Option<u64> {
    meminfo_bytes(
        &std::fs::read_to_string(proc_root.join("meminfo")).ok()?,
        "MemAvailable",
    )
}

/// Clock ticks per second (`CLK_TCK`), the unit of [`proc_usage`]'s CPU time.
pub fn ticks_per_s() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64
}

/// The host's busy time in clock ticks, all CPUs together: every column of `/proc/stat`'s `cpu`
/// line but idle and iowait (user, nice, system, irq, softirq, steal) — kernel threads and
/// interrupt work included.
pub fn busy_ticks(proc_root: &Path) -> Option<u64> {
    busy_of(&std::fs::read_to_string(proc_root.join("stat")).ok()?)
}

fn busy_of(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal (guest and guest_nice are in user already)
    let at = |i: usize| f.get(i).copied().unwrap_or(0);
    Some(at(0) + at(1) + at(2) + at(5) + at(6) + at(7))
}

/// Waits until the host is quiet — busy less than `threshold_pct` of one core over a whole
/// second (all CPUs, [`busy_ticks`]) — or `limit` has passed; how long it waited. The kernel
/// tears a big lab's namespaces and cgroups down in its own workers for a while after `lab down`
/// returns, and a measurement that starts then measures that too.
pub fn wait_quiet(proc_root: &Path, threshold_pct: f64, limit: std::time::Duration) -> std::time::Duration {
    let t0 = std::time::Instant::now();
    let mut last = busy_ticks(proc_root);
    while t0.elapsed() < limit {
        std::thread::sleep(std::time::Duration::from_secs(1));
        let now = busy_ticks(proc_root);
        match (last, now) {
            (Some(a), Some(b)) if (b.saturating_sub(a) as f64 / ticks_per_s() * 100.0) < threshold_pct => break,
            (None, _) | (_, None) => break,
            _ => last = now,
        }
    }
    t0.elapsed()
}

/// (utime + stime in clock ticks, RSS bytes) of process `pid`.
pub fn proc_usage(proc_root: &Path, pid: i32) -> Option<(u64, u64)> {
    let dir = proc_root.join(pid.to_string());
    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    let status = std::fs::read_to_string(dir.join("status")).ok()?;
    let rss = meminfo_bytes(&status, "VmRSS")?;
    Some((ticks, rss))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_is_all_but_idle_and_iowait() {
        let stat = "cpu  10 1 5 1000 7 2 3 4 9 9\ncpu0 1 1 1 1 1 1 1 1 0 0\n";
        assert_eq!(busy_of(stat), Some(10 + 1 + 5 + 2 + 3 + 4));
        assert_eq!(busy_of("intr 1\n"), None);
    }

    #[test]
    fn meminfo_and_loadavg_parse() {
        let m = "MemTotal:       24576000 kB\nMemFree:  100 kB\nMemAvailable:   2048 kB\n";
        assert_eq!(meminfo_bytes(m, "MemAvailable"), Some(2048 * 1024));
        assert_eq!(meminfo_bytes(m, "MemTotal"), Some(24576000 * 1024));
        assert_eq!(meminfo_bytes(m, "Mem"), None, "a field is matched whole");
        assert_eq!(loadavg("3.11 2.33 1.52 2/95 11660\n"), Some([3.11, 2.33, 1.52]));
        assert_eq!(loadavg("3.11"), None);
    }

    #[test]
    fn a_machine_is_read_from_the_proc_root_it_is_given() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("sys/kernel")).unwrap();
        std::fs::write(d.path().join("sys/kernel/osrelease"), "6.18.0-test\n").unwrap();
        std::fs::write(d.path().join("meminfo"), "MemTotal: 2097152 kB\n").unwrap();
        std::fs::write(d.path().join("loadavg"), "0.50 0.40 0.30 1/2 3\n").unwrap();
        let mut m = Machine::read(d.path());
        assert_eq!((m.kernel.as_str(), m.memory_gib), ("6.18.0-test", 2.0));
        std::fs::write(d.path().join("loadavg"), "1.25 0.40 0.30 1/2 3\n").unwrap();
        m.finish();
        assert!(
            m.to_string()
                .ends_with("kernel 6.18.0-test, load 0.50 at the start, 1.25 at the end"),
            "{m}"
        );
    }
}
