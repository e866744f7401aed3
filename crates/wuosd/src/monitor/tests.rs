//! The monitor on fixture trees (a fake `/proc` and fake cgroup hierarchies in temp dirs), and
//! once on the live `/proc`.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::*;

const GIB: u64 = 1 << 30;

/// A temp dir to lay out fake host files in.
struct Tree(tempfile::TempDir);

impl Tree {
    fn new() -> Self {
        Self(tempfile::tempdir().unwrap())
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.0.path().join(rel)
    }

    fn put(&self, rel: &str, text: &str) -> &Self {
        let path = self.path(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
        self
    }

    fn remove(&self, rel: &str) {
        fs::remove_file(self.path(rel)).unwrap();
    }
}

/// `/proc/stat` of 2 CPUs with `busy` and `idle` jiffies in total.
fn stat(busy: u64, idle: u64) -> String {
    format!(
        "cpu  {busy} 0 0 {idle} 0 0 0 0 0 0\ncpu0 {} 0 0 {} 0 0 0 0 0 0\ncpu1 {} 0 0 {} 0 0 0 0 0 0\nintr 0\n",
        busy / 2,
        idle / 2,
        busy - busy / 2,
        idle - idle / 2
    )
}

fn meminfo(total_kb: u64, available_kb: u64) -> String {
    format!("MemTotal:       {total_kb} kB\nMemFree:        1 kB\nMemAvailable:   {available_kb} kB\n")
}

fn net_dev(eth0_rx: u64, eth0_tx: u64) -> String {
    format!(
        "Inter-|   Receive                                                |  Transmit\n \
         face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
         lo:    3193      29    0    0    0     0          0         0     3193      29    0    0    0     0       0          0\n  \
         eth0: {eth0_rx} {} 0 0 0 0 0 0 {eth0_tx} {} 0 0 0 0 0 0\n",
        eth0_rx / 100,
        eth0_tx / 100
    )
}

fn diskstats(sectors_read: u64, sectors_written: u64) -> String {
    format!(
        " 254       0 vda 1 0 {sectors_read} 0 1 0 {sectors_written} 0 0 0 0 0 0 0 0 0 0\n \
          254       1 vda1 1 0 {sectors_read} 0 1 0 {sectors_written} 0 0 0 0 0 0 0 0 0 0\n"
    )
}

const PSI: &str = "some avg10=1.50 avg60=0.50 avg300=0.10 total=100\nfull avg10=0.25 avg60=0.00 avg300=0.00 total=10\n";

/// A fake `/proc` of a 2-CPU, 4 GiB host with PSI.
fn host(t: &Tree) {
    t.put("proc/stat", &stat(100, 900))
        .put("proc/meminfo", &meminfo(4 << 20, 3 << 20))
        .put("proc/diskstats", &diskstats(0, 0))
        .put("proc/net/dev", &net_dev(1000, 2000))
        .put("proc/pressure/cpu", PSI)
        .put("proc/pressure/memory", PSI)
        .put("proc/pressure/io", PSI);
}

fn proc_source(t: &Tree) -> Source {
    Source::Proc {
        proc_root: t.path("proc"),
        sys_root: t.path("sys"),
    }
}

fn cgroup_source(t: &Tree, rel: &str) -> Source {
    Source::Cgroup {
        cgroup_root: t.path("cgroup"),
        rel: rel.into(),
        proc_root: t.path("proc"),
    }
}

/// A v1 cgroup `rel` with the given quota, CPU usage (ns) and memory usage/limit/inactive file.
fn v1_cgroup(t: &Tree, rel: &str, quota_us: i64, usage_ns: u64, mem: (u64, u64, u64)) {
    let (usage, limit, inactive) = mem;
    t.put(&format!("cgroup/cpu/{rel}/cpu.cfs_quota_us"), &format!("{quota_us}\n"))
        .put(&format!("cgroup/cpu/{rel}/cpu.cfs_period_us"), "100000\n")
        .put(&format!("cgroup/cpuacct/{rel}/cpuacct.usage"), &format!("{usage_ns}\n"))
        .put(
            &format!("cgroup/memory/{rel}/memory.usage_in_bytes"),
            &format!("{usage}\n"),
        )
        .put(
            &format!("cgroup/memory/{rel}/memory.limit_in_bytes"),
            &format!("{limit}\n"),
        )
        .put(
            &format!("cgroup/memory/{rel}/memory.stat"),
            &format!("cache 0\ninactive_file 1\nhierarchical_memory_limit {limit}\ntotal_inactive_file {inactive}\n"),
        );
}

/// A v2 cgroup `rel` with the given `cpu.max`, usage (µs), `memory.max`, memory.current and
/// inactive file.
fn v2_cgroup(t: &Tree, rel: &str, cpu_max: &str, usage_us: u64, mem_max: &str, current: u64, inactive: u64) {
    t.put("cgroup/cgroup.controllers", "cpuset cpu io memory pids\n")
        .put(&format!("cgroup/{rel}/cpu.max"), &format!("{cpu_max}\n"))
        .put(
            &format!("cgroup/{rel}/cpu.stat"),
            &format!("usage_usec {usage_us}\nuser_usec 0\nsystem_usec 0\n"),
        )
        .put(&format!("cgroup/{rel}/memory.max"), &format!("{mem_max}\n"))
        .put(&format!("cgroup/{rel}/memory.current"), &format!("{current}\n"))
        .put(
            &format!("cgroup/{rel}/memory.stat"),
            &format!("anon 1\nfile 2\ninactive_file {inactive}\n"),
        );
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-6
}

#[test]
fn proc_source_rates_over_a_controlled_interval() {
    let t = Tree::new();
    host(&t);
    let mut m = Monitor::new(proc_source(&t)).unwrap();
    assert_eq!(
        m.describe(),
        format!("proc {} (2.00 cores, 4.0 GiB)", t.path("proc").display())
    );

    let t0 = Instant::now();
    let s = m.sample(t0).unwrap();
    assert!(s.first);
    assert_eq!((s.cpu_used_pct, s.cpu_capacity_cores), (0.0, 2.0));
    assert_eq!(
        (s.mem_used_bytes, s.mem_total_bytes, s.mem_used_pct),
        (GIB, 4 * GIB, 25.0)
    );
    assert_eq!(s.free_mem_bytes(), 3 * GIB);
    assert_eq!(
        s.interfaces,
        [InterfaceRates {
            name: "eth0".into(),
            ..Default::default()
        }]
    );
    let psi = Some(Pressure {
        some_avg10: 1.5,
        full_avg10: 0.25,
        host_scope: true,
    });
    assert_eq!((&s.cpu_pressure, &s.mem_pressure, &s.io_pressure), (&psi, &psi, &psi));

    // Two seconds: 200 jiffies (2 CPUs at 100 Hz… the figure only uses jiffies), 150 busy.
    t.put("proc/stat", &stat(250, 950))
        .put("proc/diskstats", &diskstats(4000, 8000))
        .put("proc/net/dev", &net_dev(201_000, 6000));
    let s = m.sample(t0 + Duration::from_secs(2)).unwrap();
    assert!(!s.first);
    assert!(close(s.cpu_used_pct, 75.0), "{}", s.cpu_used_pct);
    assert!(close(s.free_cpu_cores(), 0.5));
    // Only vda, not vda1: 4000 sectors × 512 / 2 s.
    assert_eq!(
        (s.disk_read_bytes_per_s, s.disk_write_bytes_per_s),
        (1_024_000.0, 2_048_000.0)
    );
    assert_eq!(
        s.interfaces,
        [InterfaceRates {
            name: "eth0".into(),
            rx_bytes_per_s: 100_000.0,
            tx_bytes_per_s: 2000.0,
            rx_packets_per_s: 1000.0,
            tx_packets_per_s: 20.0,
        }]
    );
}

#[test]
fn proc_source_without_psi() {
    let t = Tree::new();
    host(&t);
    fs::remove_dir_all(t.path("proc/pressure")).unwrap();
    let s = Monitor::new(proc_source(&t)).unwrap().sample(Instant::now()).unwrap();
    assert_eq!((s.cpu_pressure, s.mem_pressure, s.io_pressure), (None, None, None));
}

#[test]
fn cgroup_v1_half_a_core_and_unlimited_memory() {
    let t = Tree::new();
    host(&t);
    v1_cgroup(&t, "wuos", -1, 0, (0, 9_223_372_036_854_771_712, 0));
    v1_cgroup(&t, "wuos/demo", -1, 0, (0, 9_223_372_036_854_771_712, 0));
    let huge = 9_223_372_036_854_771_712;
    v1_cgroup(&t, "wuos/demo/r1", 50_000, 1_000_000_000, (300 << 20, huge, 100 << 20));
    let mut m = Monitor::new(cgroup_source(&t, "wuos/demo/r1")).unwrap();
    assert_eq!(
        m.describe(),
        "cgroup v1 wuos/demo/r1 (0.50 cores, 4.0 GiB, no disk accounting)"
    );

    let t0 = Instant::now();
    let s = m.sample(t0).unwrap();
    assert!(s.first);
    assert_eq!(s.cpu_capacity_cores, 0.5);
    // Unlimited: the host's MemTotal. Used: usage minus total_inactive_file.
    assert_eq!((s.mem_used_bytes, s.mem_total_bytes), (200 << 20, 4 * GIB));
    assert!(close(s.mem_used_pct, 100.0 * 200.0 / 4096.0));
    assert_eq!(
        s.cpu_pressure.as_ref().map(|p| p.host_scope),
        Some(true),
        "v1 has no cgroup PSI"
    );

    // 0.25 s of CPU in 1 s on half a core.
    t.put("cgroup/cpuacct/wuos/demo/r1/cpuacct.usage", "1250000000\n");
    let s = m.sample(t0 + Duration::from_secs(1)).unwrap();
    assert!(close(s.cpu_used_pct, 50.0), "{}", s.cpu_used_pct);
    assert!(close(s.free_cpu_cores(), 0.25));
    assert_eq!((s.disk_read_bytes_per_s, s.disk_write_bytes_per_s), (0.0, 0.0));
    assert_eq!(s.interfaces.len(), 1, "interfaces come from proc_root/net/dev");
}

#[test]
fn cgroup_v1_unlimited_cpu_ancestor_limits_and_blkio() {
    let t = Tree::new();
    host(&t);
    let huge = 9_223_372_036_854_771_712;
    v1_cgroup(&t, "wuos", -1, 0, (0, huge, 0));
    v1_cgroup(&t, "r1", -1, 0, (50 << 20, 256 << 20, 0));
    t.put(
        "cgroup/blkio/r1/blkio.throttle.io_service_bytes_recursive",
        "8:0 Read 1000\n8:0 Write 0\nTotal 1000\n",
    )
    .put(
        "cgroup/blkio/r1/blkio.throttle.io_service_bytes",
        "garbage that must not be read\n",
    );
    let mut m = Monitor::new(cgroup_source(&t, "r1")).unwrap();
    assert_eq!(
        m.describe(),
        "cgroup v1 r1 (2.00 cores, 256 MiB)",
        "no quota: the host's CPUs"
    );
    let t0 = Instant::now();
    m.sample(t0).unwrap();
    t.put(
        "cgroup/blkio/r1/blkio.throttle.io_service_bytes_recursive",
        "8:0 Read 5000\n8:0 Write 400\nTotal 5400\n",
    );
    let s = m.sample(t0 + Duration::from_millis(500)).unwrap();
    assert_eq!((s.disk_read_bytes_per_s, s.disk_write_bytes_per_s), (8000.0, 800.0));
    assert_eq!((s.mem_used_pct, s.mem_total_bytes), (100.0 * 50.0 / 256.0, 256 << 20));

    // A quota on an ancestor bounds the cgroup; a limit above the host's memory does not count.
    v1_cgroup(&t, "wuos", 150_000, 0, (0, huge, 0));
    v1_cgroup(&t, "wuos/r2", -1, 0, (0, 64 * GIB, 0));
    let mut m = Monitor::new(cgroup_source(&t, "wuos/r2")).unwrap();
    let s = m.sample(t0).unwrap();
    assert_eq!((s.cpu_capacity_cores, s.mem_total_bytes), (1.5, 4 * GIB));
}

#[test]
fn cgroup_v2_max_and_limits_changed_at_run_time() {
    let t = Tree::new();
    host(&t);
    v2_cgroup(&t, "wuos", "max 100000", 0, "max", 0, 0);
    v2_cgroup(&t, "wuos/r1", "max 100000", 2_000_000, "max", 1 << 30, 256 << 20);
    t.put(
        "cgroup/wuos/r1/io.stat",
        "8:0 rbytes=100 wbytes=200 rios=1 wios=1 dbytes=0 dios=0\n",
    )
    .put(
        "cgroup/wuos/r1/cpu.pressure",
        "some avg10=3.00 avg60=0.00 avg300=0.00 total=1\n",
    )
    .put("cgroup/wuos/r1/memory.pressure", PSI);
    let mut m = Monitor::new(cgroup_source(&t, "wuos/r1")).unwrap();
    assert_eq!(m.describe(), "cgroup v2 wuos/r1 (2.00 cores, 4.0 GiB)");

    let t0 = Instant::now();
    let s = m.sample(t0).unwrap();
    assert_eq!(
        (s.cpu_capacity_cores, s.mem_total_bytes, s.mem_used_bytes),
        (2.0, 4 * GIB, 768 << 20)
    );
    assert_eq!(
        s.cpu_pressure,
        Some(Pressure {
            some_avg10: 3.0,
            full_avg10: 0.0,
            host_scope: false
        })
    );
    assert_eq!(
        s.mem_pressure,
        Some(Pressure {
            some_avg10: 1.5,
            full_avg10: 0.25,
            host_scope: false
        })
    );
    assert_eq!(
        s.io_pressure, None,
        "the cgroup has no io.pressure: no host figure mixed in"
    );

    // The router is shrunk: its limits are read again every LIMITS_EVERY samples (the first
    // sample read them), so the next LIMITS_EVERY - 1 still say what they said.
    t.put("cgroup/wuos/r1/cpu.max", "50000 100000\n")
        .put("cgroup/wuos/r1/memory.max", &format!("{}\n", 1u64 << 31));
    let mut at = t0;
    for _ in 1..super::LIMITS_EVERY {
        at += Duration::from_millis(10);
        let s = m.sample(at).unwrap();
        assert_eq!((s.cpu_capacity_cores, s.mem_total_bytes), (2.0, 4 * GIB));
    }
    t.put("cgroup/wuos/r1/cpu.stat", "usage_usec 2100000\n").put(
        "cgroup/wuos/r1/io.stat",
        "8:0 rbytes=1100 wbytes=2200 rios=1 wios=1 dbytes=0 dios=0\n",
    );
    let s = m.sample(at + Duration::from_millis(250)).unwrap();
    assert_eq!((s.cpu_capacity_cores, s.mem_total_bytes), (0.5, 2 * GIB));
    // 0.1 s of CPU in 0.25 s on half a core.
    assert!(close(s.cpu_used_pct, 80.0), "{}", s.cpu_used_pct);
    assert_eq!((s.disk_read_bytes_per_s, s.disk_write_bytes_per_s), (4000.0, 8000.0));
    assert_eq!(m.describe(), "cgroup v2 wuos/r1 (0.50 cores, 2.0 GiB)");
}

#[test]
fn cgroup_v2_without_pressure_files_falls_back_to_the_host() {
    let t = Tree::new();
    host(&t);
    v2_cgroup(&t, "r1", "max 100000", 0, "max", 0, 0);
    let s = Monitor::new(cgroup_source(&t, "r1"))
        .unwrap()
        .sample(Instant::now())
        .unwrap();
    assert_eq!(s.cpu_pressure.map(|p| p.host_scope), Some(true));
}

#[test]
fn children_are_bounded_by_the_router() {
    for v1 in [true, false] {
        let t = Tree::new();
        host(&t);
        if v1 {
            v1_cgroup(&t, "r1", 50_000, 0, (0, 1 << 30, 0));
            v1_cgroup(&t, "r1/dom-a", -1, 0, (100 << 20, 9_223_372_036_854_771_712, 0));
            // The kernel's hierarchical_memory_limit is the smallest limit of the ancestors.
            t.put(
                "cgroup/memory/r1/dom-a/memory.stat",
                "hierarchical_memory_limit 1073741824
",
            );
        } else {
            v2_cgroup(&t, "r1", "50000 100000", 0, &(1u64 << 30).to_string(), 0, 0);
            v2_cgroup(&t, "r1/dom-a", "max 100000", 0, "max", 100 << 20, 0);
        }
        let mut m = Monitor::new(cgroup_source(&t, "r1")).unwrap();
        let t0 = Instant::now();
        let s = m.sample_child("dom-a", t0).unwrap();
        assert!(s.first);
        assert_eq!(
            (s.cpu_capacity_cores, s.mem_total_bytes, s.mem_used_bytes),
            (0.5, GIB, 100 << 20)
        );
        assert!(s.interfaces.is_empty());
        assert_eq!(s.cpu_pressure, None, "no host-scope pressure for children");

        if v1 {
            t.put("cgroup/cpuacct/r1/dom-a/cpuacct.usage", "100000000\n");
        } else {
            t.put("cgroup/r1/dom-a/cpu.stat", "usage_usec 100000\n");
        }
        // The router's own sampling does not disturb the child's previous counters.
        assert!(m.sample(t0).unwrap().first);
        let s = m.sample_child("dom-a", t0 + Duration::from_secs(1)).unwrap();
        assert!(!s.first);
        assert!(close(s.cpu_used_pct, 20.0), "{}", s.cpu_used_pct);

        m.forget_child("dom-a");
        assert!(m.sample_child("dom-a", t0).unwrap().first);
        let err = m.sample_child("dom-b", t0).unwrap_err().to_string();
        assert!(err.contains("r1/dom-b/"), "{err}");
        for bad in ["", "../r2", "/abs", "a//b"] {
            assert!(
                matches!(m.sample_child(bad, t0), Err(MonitorError::BadChild { .. })),
                "{bad:?}"
            );
        }
    }
}

#[test]
fn proc_source_has_no_children() {
    let t = Tree::new();
    host(&t);
    let mut m = Monitor::new(proc_source(&t)).unwrap();
    let err = m.sample_child("dom-a", Instant::now()).unwrap_err().to_string();
    assert!(err.starts_with("Per-cgroup figures need a cgroup source"), "{err}");
}

/// The error of `Monitor::new` names the missing file.
fn missing(source: Source, file: &Path) {
    let err = Monitor::new(source)
        .err()
        .expect("Monitor::new should fail")
        .to_string();
    assert!(err.starts_with(&format!("{} does not exist", file.display())), "{err}");
}

#[test]
fn errors_name_the_missing_file() {
    let t = Tree::new();
    host(&t);
    t.remove("proc/meminfo");
    missing(proc_source(&t), &t.path("proc/meminfo"));
    host(&t);
    t.remove("proc/net/dev");
    missing(cgroup_source(&t, "r1"), &t.path("proc/net/dev"));
    host(&t);

    v1_cgroup(&t, "r1", -1, 0, (0, 0, 0));
    t.remove("cgroup/cpuacct/r1/cpuacct.usage");
    missing(cgroup_source(&t, "r1"), &t.path("cgroup/cpuacct/r1/cpuacct.usage"));
    missing(cgroup_source(&t, "nope"), &t.path("cgroup/cpuacct/nope/cpuacct.usage"));

    // v2 without the memory controller (like /sys/fs/cgroup/unified on a hybrid host).
    let t = Tree::new();
    host(&t);
    v2_cgroup(&t, "r1", "max 100000", 0, "max", 0, 0);
    t.remove("cgroup/r1/memory.current");
    let err = Monitor::new(cgroup_source(&t, "r1")).err().unwrap().to_string();
    assert!(err.contains("r1/memory.current does not exist"), "{err}");
    assert!(err.contains("cgroup.subtree_control"), "{err}");
}

#[test]
fn errors_name_the_file_that_went_wrong_while_sampling() {
    let t = Tree::new();
    host(&t);
    let mut m = Monitor::new(proc_source(&t)).unwrap();
    t.put("proc/meminfo", "MemTotal: 1 kB\n");
    let err = m.sample(Instant::now()).unwrap_err().to_string();
    let want = format!(
        "Could not parse {}: there is no MemAvailable line",
        t.path("proc/meminfo").display()
    );
    assert!(err.starts_with(&want), "{err}");

    host(&t);
    t.remove("proc/diskstats");
    let err = m.sample(Instant::now()).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!("Could not read {}: ", t.path("proc/diskstats").display())),
        "{err}"
    );
}

/// The live machine's `/proc`, twice; needs no privileges.
#[test]
fn live_proc() {
    let mut m = Monitor::new(Source::Proc {
        proc_root: "/proc".into(),
        sys_root: "/sys".into(),
    })
    .unwrap();
    let t0 = Instant::now();
    let first = m.sample(t0).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let s = m.sample(Instant::now()).unwrap();
    assert!(first.first && !s.first);
    for sample in [&first, &s] {
        assert!((0.0..=100.0).contains(&sample.cpu_used_pct), "{sample:?}");
        assert!((0.0..=100.0).contains(&sample.mem_used_pct), "{sample:?}");
        assert!(sample.cpu_capacity_cores >= 1.0, "{sample:?}");
        assert!(
            sample.mem_total_bytes > 0 && sample.mem_used_bytes <= sample.mem_total_bytes,
            "{sample:?}"
        );
        assert!(sample.disk_read_bytes_per_s >= 0.0 && sample.disk_write_bytes_per_s >= 0.0);
        assert!(
            sample
                .interfaces
                .iter()
                .all(|i| i.name != "lo" && i.rx_bytes_per_s >= 0.0)
        );
    }
    assert!(m.describe().starts_with("proc /proc ("), "{}", m.describe());
}
