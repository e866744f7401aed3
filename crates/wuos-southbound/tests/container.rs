//! Privileged tests of the container domain backend: real namespaces, cgroups, veths and
//! processes. Each test builds its own "router" (a namespace `wuos.t<PID>.<tag>` and a cgroup
//! `wuos/t<PID>/<tag>` under the real cgroup root) and removes everything on drop.
//!
//! The domains are launched through the `domain_init` example, which `cargo test` builds; on its
//! own: `cargo build -p wuos-southbound --examples`.
//!
//! The measurements (not assertions) run with
//! `cargo test -p wuos-southbound --test container -- --ignored --nocapture`.

use std::fs::{self, File};
use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use wuos_southbound::cgroup::{CgroupFs, Limits, Version};
use wuos_southbound::domain::{ContainerBackend, ContainerNet, ContainerSpec, DomainBackend, DomainError, Status};
use wuos_southbound::netns;
use wuos_southbound::privilege::may_run_privileged;

/// The tests measure CPU time and share two cores: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
const NETNS_DIR: &str = "/run/netns";

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// `target/debug/examples/domain_init`, next to this test's `deps` directory.
fn init_exe() -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its own path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lives in target/<profile>/deps");
    let init = profile_dir.join("examples/domain_init");
    assert!(
        init.exists(),
        "{} is missing: run `cargo build -p wuos-southbound --examples` first",
        init.display()
    );
    init
}

/// A router of the lab in miniature: a namespace and a cgroup; domains live inside both.
struct Router {
    ns_name: String,
    ns: File,
    cgroup_root: PathBuf,
    cgroup: String,
    run_base: PathBuf,
    backend: ContainerBackend,
    specs: Vec<ContainerSpec>,
    init: PathBuf,
}

impl Router {
    fn new(tag: &str) -> Self {
        Self::with_root(tag, Path::new(CGROUP_ROOT))
    }

    fn with_root(tag: &str, cgroup_root: &Path) -> Self {
        let pid = std::process::id();
        let ns_name = format!("wuos.t{pid}.{tag}");
        let _ = netns::delete(Path::new(NETNS_DIR), &ns_name);
        let (ns, ()) = netns::create(Path::new(NETNS_DIR), &ns_name, || ()).expect("router namespace");
        let cgroup = format!("wuos/t{pid}/{tag}");
        let cg = CgroupFs::detect(cgroup_root).expect("a cgroup hierarchy");
        cg.create(&cgroup, &Limits::default()).expect("router cgroup");
        let run_base = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("container-t{pid}-{tag}"));
        let _ = fs::remove_dir_all(&run_base);
        Self {
            ns_name,
            ns,
            cgroup_root: cgroup_root.to_owned(),
            cgroup,
            run_base,
            backend: ContainerBackend::default(),
            specs: Vec::new(),
            init: init_exe(),
        }
    }

    fn cg(&self) -> CgroupFs {
        CgroupFs::detect(&self.cgroup_root).unwrap()
    }

    /// A domain spec: veth `d-NAME` 10.231.K.1/30 (router) — eth0 10.231.K.2 (domain).
    fn spec(&mut self, name: &str, k: u8, argv: &[&str]) -> ContainerSpec {
        let run_dir = self.run_base.join(name);
        let s = ContainerSpec {
            name: name.to_owned(),
            router_netns: Some(Path::new(NETNS_DIR).join(&self.ns_name)),
            netns_name: format!("{}.{name}", self.ns_name),
            netns_dir: NETNS_DIR.into(),
            cgroup_root: self.cgroup_root.clone(),
            cgroup: format!("{}/{name}", self.cgroup),
            cpus: None,
            cpuset: None,
            cpu_weight: None,
            memory: None,
            net: Some(ContainerNet {
                host_if: format!("d-{name}"),
                dom_if: "eth0".into(),
                host_addr: Ipv4Addr::new(10, 231, k, 1),
                dom_addr: Ipv4Addr::new(10, 231, k, 2),
                prefix_len: 30,
                routes_via_host: true,
                vips: Vec::new(),
            }),
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env: vec![("RUN".into(), run_dir.display().to_string())],
            run_dir,
            init_exe: self.init.clone(),
            backend: Default::default(),
        };
        self.specs.push(s.clone());
        s
    }

    fn up(&mut self, s: &ContainerSpec) -> i32 {
        self.backend
            .create(s)
            .unwrap_or_else(|e| panic!("create {}: {e}", s.name));
        self.backend
            .start(s)
            .unwrap_or_else(|e| panic!("start {}: {e}", s.name))
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        for s in &self.specs {
            if let Err(e) = self.backend.destroy(s) {
                eprintln!("cleanup of {}: {e}", s.name);
            }
        }
        let cg = self.cg();
        let _ = cg.destroy(&self.cgroup, Path::new("/proc"));
        let _ = cg.destroy(&format!("wuos/t{}", std::process::id()), Path::new("/proc"));
        let _ = netns::delete(Path::new(NETNS_DIR), &self.ns_name);
        let _ = fs::remove_dir_all(&self.run_base);
    }
}

fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn log_of(s: &ContainerSpec) -> String {
    fs::read_to_string(s.log_path()).unwrap_or_default()
}

fn wait_log(s: &ContainerSpec, needle: &str) -> String {
    wait_for(
        &format!("{needle:?} in {}", s.log_path().display()),
        Duration::from_secs(10),
        || log_of(s).contains(needle),
    );
    log_of(s)
}

fn ns_inode(pid: i32, ns: &str) -> u64 {
    fs::metadata(format!("/proc/{pid}/ns/{ns}")).unwrap().ino()
}

fn read(path: impl AsRef<Path>) -> String {
    let p = path.as_ref();
    fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
        .trim()
        .to_string()
}

fn cpu_ns(b: &ContainerBackend, s: &ContainerSpec) -> u64 {
    b.usage(s).expect("usage of a created domain").cpu_ns
}

/// CPU time the domain uses over `window`.
fn cpu_over(b: &ContainerBackend, s: &ContainerSpec, window: Duration) -> Duration {
    let a = cpu_ns(b, s);
    std::thread::sleep(window);
    Duration::from_nanos(cpu_ns(b, s) - a)
}

#[test]
fn a_domain_has_its_own_namespaces_a_read_only_root_and_its_limits() {
    if !may_run_privileged("a_domain_has_its_own_namespaces_a_read_only_root_and_its_limits") {
        return;
    }
    let _g = serial();
    let mut r = Router::new("iso");
    let script = r#"
        touch /usr/wuos-probe 2>/dev/null && echo usr=rw || echo usr=ro
        echo tmp-entries=$(ls -A /tmp | wc -l)
        touch /tmp/probe && echo tmp=rw
        echo x > "$RUN/probe" && echo run-dir=rw
        echo 1 > /proc/sys/net/ipv4/ip_forward && echo sys-net=rw
        echo ready
        exec sleep 100
    "#;
    let mut s = r.spec("iso", 1, &["sh", "-c", script]);
    s.cpus = Some(0.5);
    s.memory = Some(64 << 20);
    s.cpuset = Some(vec![1]);
    s.cpu_weight = Some(200);
    let pid = r.up(&s);
    let log = wait_log(&s, "ready");
    let _ = fs::remove_file("/usr/wuos-probe");

    // Namespaces: the domain's own network namespace, a mount namespace of its own.
    let dom_ns = File::open(s.netns_path()).unwrap();
    assert_eq!(
        ns_inode(pid, "net"),
        netns::inode(&dom_ns).unwrap(),
        "the domain process runs in the domain's namespace"
    );
    assert_ne!(
        ns_inode(pid, "net"),
        netns::inode(&r.ns).unwrap(),
        "not in the router's"
    );
    assert_ne!(
        ns_inode(pid, "mnt"),
        ns_inode(std::process::id() as i32, "mnt"),
        "a private mount namespace"
    );
    assert!(log.contains("usr=ro"), "/ must be read-only in the domain; log:\n{log}");
    // Fresh and empty — but for the mount point that keeps the wuos tools (the init's own
    // directory) visible when they live under /tmp, as in a checkout there.
    let expected = usize::from(init_exe().starts_with("/tmp"));
    assert!(
        log.contains(&format!("tmp-entries={expected}")),
        "/tmp must be a fresh tmpfs with {expected} entries; log:\n{log}"
    );
    assert!(log.contains("tmp=rw"), "/tmp must be writable; log:\n{log}");
    assert!(log.contains("run-dir=rw"), "run_dir must be writable; log:\n{log}");
    assert!(
        log.contains("sys-net=rw"),
        "/proc/sys/net (the domain's own) must be writable; log:\n{log}"
    );
    assert_eq!(
        read(s.run_dir.join("probe")),
        "x",
        "the domain's write to run_dir reaches the host"
    );
    let in_router = netns::run_in(&r.ns, || fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap()).unwrap();
    assert_eq!(
        in_router.trim(),
        "0",
        "the domain's sysctl stayed in the domain's namespace"
    );

    // The cgroup and its limits, as the kernel holds them.
    let cg = r.cg();
    assert!(
        cg.procs(&s.cgroup).contains(&pid),
        "the domain process is in its cgroup"
    );
    let self_cgroup = read(format!("/proc/{pid}/cgroup"));
    assert!(
        self_cgroup.contains(&s.cgroup),
        "/proc/{pid}/cgroup names {}:\n{self_cgroup}",
        s.cgroup
    );
    match cg.version() {
        Version::V1 => {
            let d = |c: &str| Path::new(CGROUP_ROOT).join(c).join(&s.cgroup);
            assert_eq!(read(d("cpu").join("cpu.cfs_quota_us")), "50000");
            assert_eq!(read(d("cpu").join("cpu.cfs_period_us")), "100000");
            assert_eq!(read(d("cpu").join("cpu.shares")), "2048");
            assert_eq!(
                read(d("memory").join("memory.limit_in_bytes")),
                (64u64 << 20).to_string()
            );
            assert_eq!(read(d("cpuset").join("cpuset.cpus")), "1");
        }
        Version::V2 => {
            let d = Path::new(CGROUP_ROOT).join(&s.cgroup);
            assert_eq!(read(d.join("cpu.max")), "50000 100000");
            assert_eq!(read(d.join("cpu.weight")), "200");
            assert_eq!(read(d.join("memory.max")), (64u64 << 20).to_string());
            assert_eq!(read(d.join("cpuset.cpus")), "1");
        }
    }
    let allowed = read(format!("/proc/{pid}/status"));
    assert!(
        allowed
            .lines()
            .any(|l| l.starts_with("Cpus_allowed_list:") && l.ends_with("\t1")),
        "the process is pinned to core 1:\n{allowed}"
    );
    let u = r.backend.usage(&s).unwrap();
    assert!(u.memory_bytes > 0, "memory use is counted: {u:?}");
}

#[test]
fn the_memory_limit_is_enforced() {
    if !may_run_privileged("the_memory_limit_is_enforced") {
        return;
    }
    let _g = serial();
    let mut r = Router::new("oom");
    // `tail -n 1` buffers a line that never ends: 300 MB against a 64 MiB limit.
    let script = r#"head -c 300M /dev/zero | tail -n 1 > /dev/null; echo "tail-exit=$?""#;
    let mut s = r.spec("oom", 2, &["sh", "-c", script]);
    s.memory = Some(64 << 20);
    r.up(&s);
    let log = wait_log(&s, "tail-exit=");
    assert!(
        log.contains("tail-exit=137"),
        "tail must be killed by the OOM killer (exit 137 = SIGKILL); log:\n{log}"
    );
    wait_for("the domain to exit", Duration::from_secs(5), || {
        matches!(r.backend.status(&s), Status::Exited { .. })
    });
    assert_eq!(
        r.backend.status(&s),
        Status::Exited { code: Some(0) },
        "sh itself survived and exited 0"
    );
}

fn pause_and_resume(r: &mut Router) {
    let s = r.spec("busy", 3, &["sh", "-c", "while :; do :; done"]);
    let pid = r.up(&s);
    let window = Duration::from_millis(500);
    let running = cpu_over(&r.backend, &s, window);
    assert!(
        running > Duration::from_millis(100),
        "a busy loop uses CPU: {running:?} in {window:?}"
    );

    r.backend.pause(&s).unwrap();
    assert_eq!(r.backend.status(&s), Status::Paused { pid });
    let paused = cpu_over(&r.backend, &s, window);
    assert!(
        paused < Duration::from_millis(1),
        "a paused domain uses no CPU: {paused:?} in {window:?}"
    );

    r.backend.resume(&s).unwrap();
    assert_eq!(r.backend.status(&s), Status::Running { pid });
    let resumed = cpu_over(&r.backend, &s, window);
    assert!(
        resumed > Duration::from_millis(100),
        "a resumed busy loop uses CPU again: {resumed:?}"
    );

    // Stopping a paused domain works too (v1 frozen tasks cannot die until thawed).
    r.backend.pause(&s).unwrap();
    r.backend.stop(&s, Duration::from_millis(500)).unwrap();
    assert_eq!(
        r.backend.status(&s),
        Status::Exited { code: Some(143) },
        "SIGTERM ends sh: 128 + 15"
    );
}

#[test]
fn pause_brings_cpu_use_to_zero_and_resume_brings_it_back() {
    if !may_run_privileged("pause_brings_cpu_use_to_zero_and_resume_brings_it_back") {
        return;
    }
    let _g = serial();
    let mut r = Router::new("pause");
    pause_and_resume(&mut r);
}

/// On a hybrid host the v2 hierarchy (`/sys/fs/cgroup/unified`) has no cpu or memory controller
/// but has `cgroup.freeze`, `cgroup.kill` and `cpu.stat`: enough to run the v2 freezer path here.
#[test]
fn pause_and_kill_work_on_cgroup_v2() {
    if !may_run_privileged("pause_and_kill_work_on_cgroup_v2") {
        return;
    }
    let root = [Path::new(CGROUP_ROOT), Path::new("/sys/fs/cgroup/unified")]
        .into_iter()
        .find(|r| r.join("cgroup.controllers").exists());
    let Some(root) = root else {
        eprintln!("pause_and_kill_work_on_cgroup_v2: skipped, no cgroup v2 hierarchy");
        return;
    };
    let _g = serial();
    let mut r = Router::with_root("v2", root);
    assert_eq!(*r.cg().version(), Version::V2);
    pause_and_resume(&mut r);
}

#[test]
fn the_veth_carries_pings_both_ways() {
    if !may_run_privileged("the_veth_carries_pings_both_ways") {
        return;
    }
    let _g = serial();
    let mut r = Router::new("veth");
    let script = "ping -c 2 -i 0.2 -W 2 10.231.4.1 > /dev/null && echo ping-ok || echo ping-failed; exec sleep 100";
    let s = r.spec("veth", 4, &["sh", "-c", script]);
    r.up(&s);
    let log = wait_log(&s, "ping-");
    assert!(
        log.contains("ping-ok"),
        "the domain reaches the router over the veth; log:\n{log}"
    );
    let back = netns::run_in(&r.ns, || {
        Command::new("ping")
            .args(["-c", "2", "-i", "0.2", "-W", "2", "10.231.4.2"])
            .output()
            .unwrap()
    })
    .unwrap();
    assert!(
        back.status.success(),
        "the router reaches the domain: {}",
        String::from_utf8_lossy(&back.stdout)
    );
}

#[test]
fn status_survives_a_new_backend_and_destroy_leaves_nothing() {
    if !may_run_privileged("status_survives_a_new_backend_and_destroy_leaves_nothing") {
        return;
    }
    let _g = serial();
    let mut r = Router::new("adopt");
    let s = r.spec("adopt", 5, &["sleep", "100"]);
    assert_eq!(r.backend.status(&s), Status::Absent);
    r.backend.create(&s).unwrap();
    assert_eq!(
        r.backend.status(&s),
        Status::Exited { code: None },
        "created, never started"
    );
    let err = r.backend.create(&s).unwrap_err();
    assert!(
        matches!(err, DomainError::Exists { .. }),
        "a second create is refused: {err}"
    );
    let pid = r.backend.start(&s).unwrap();
    assert!(
        matches!(r.backend.start(&s), Err(DomainError::AlreadyRunning { pid: p, .. }) if p == pid),
        "a second start is refused"
    );

    // A daemon restart: a new backend knows nothing but the spec.
    let fresh = ContainerBackend::new();
    assert_eq!(
        fresh.status(&s),
        Status::Running { pid },
        "re-adopted with the same pid"
    );
    fresh.pause(&s).unwrap();
    assert_eq!(r.backend.status(&s), Status::Paused { pid });
    fresh.resume(&s).unwrap();
    fresh.stop(&s, Duration::from_secs(1)).unwrap();
    assert_eq!(fresh.status(&s), Status::Exited { code: Some(143) });
    let pid2 = fresh.start(&s).unwrap();
    assert_eq!(r.backend.status(&s), Status::Running { pid: pid2 });

    fresh.destroy(&s).unwrap();
    fresh.destroy(&s).unwrap(); // idempotent
    assert_eq!(fresh.status(&s), Status::Absent);
    assert!(!s.netns_path().exists(), "the namespace file is gone");
    for c in ["cpu", "cpuacct", "memory", "pids", "freezer", "cpuset", ""] {
        let d = Path::new(CGROUP_ROOT).join(c).join(&s.cgroup);
        assert!(!d.exists(), "{} is left behind", d.display());
    }
    assert!(
        !wuos_southbound::process::alive(Path::new("/proc"), pid2),
        "the process is gone"
    );
    let link = Command::new("ip")
        .args(["-n", &r.ns_name, "link", "show", "d-adopt"])
        .output()
        .unwrap();
    assert!(!link.status.success(), "the veth is gone from the router");
    assert!(
        r.cg().procs(&r.cgroup).is_empty(),
        "no process is left in the router's cgroup"
    );
}

#[test]
fn a_command_that_cannot_run_is_reported_by_start() {
    if !may_run_privileged("a_command_that_cannot_run_is_reported_by_start") {
        return;
    }
    let _g = serial();
    let mut r = Router::new("bad");
    let s = r.spec("bad", 6, &["/nonexistent/wuos-cmd"]);
    r.backend.create(&s).unwrap();
    let err = r.backend.start(&s).unwrap_err().to_string();
    assert!(
        err.contains("failed to start") && err.contains("/nonexistent/wuos-cmd"),
        "the error names the command: {err}"
    );
    assert_ne!(r.backend.status(&s), Status::Absent);
    assert!(r.cg().procs(&s.cgroup).is_empty());
}

#[test]
fn a_parked_domain_is_frozen_until_it_is_given_its_command() {
    if !may_run_privileged("a_parked_domain_is_frozen_until_it_is_given_its_command") {
        return;
    }
    let _g = serial();
    let mut r = Router::new("park");
    let mut s = r.spec("park", 7, &[]);
    r.backend.create(&s).unwrap();
    let pid = r.backend.start_parked(&s).unwrap();
    r.backend.pause(&s).unwrap();
    assert_eq!(r.backend.status(&s), Status::Paused { pid });
    assert_eq!(
        cpu_over(&r.backend, &s, Duration::from_millis(200)),
        Duration::ZERO,
        "a parked, frozen init uses no CPU"
    );

    // The service: its own limits and command, handed to the parked init.
    s.memory = Some(48 << 20);
    s.cpus = Some(0.25);
    s.argv = [
        "sh",
        "-c",
        "echo parked-ok env=$GREETING; touch /usr/wuos-probe 2>/dev/null || echo usr=ro; exec sleep 100",
    ]
    .map(String::from)
    .to_vec();
    s.env = vec![("GREETING".into(), "hello".into())];
    let t = Instant::now();
    assert_eq!(
        r.backend.run_parked(&s).unwrap(),
        pid,
        "the parked init becomes the service"
    );
    let took = t.elapsed();
    let log = wait_log(&s, "usr=ro");
    assert!(
        log.contains("parked-ok env=hello"),
        "the command ran with its environment; log:\n{log}"
    );
    assert_eq!(r.backend.status(&s), Status::Running { pid });
    let dom_ns = File::open(s.netns_path()).unwrap();
    assert_eq!(ns_inode(pid, "net"), netns::inode(&dom_ns).unwrap());
    assert_eq!(
        r.cg().limits(&s.cgroup),
        Limits {
            cpus: Some(0.25),
            memory: Some(48 << 20)
        },
        "the service's limits replace the pool's"
    );
    wait_for("sleep to replace sh", Duration::from_secs(5), || {
        read(format!("/proc/{pid}/comm")) == "sleep"
    });
    let again = r.backend.run_parked(&s).unwrap_err();
    assert!(
        matches!(again, DomainError::NotParked { .. }),
        "a command is given once: {again}"
    );
    eprintln!("run_parked took {took:?}");

    // A parked init given a command that does not exist reports it.
    let mut bad = r.spec("park-bad", 8, &[]);
    r.backend.create(&bad).unwrap();
    r.backend.start_parked(&bad).unwrap();
    r.backend.pause(&bad).unwrap();
    bad.argv = vec!["wuos-no-such-command".into()];
    let err = r.backend.run_parked(&bad).unwrap_err().to_string();
    assert!(
        err.contains("wuos-no-such-command"),
        "the error names the command: {err}"
    );
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// `/proc/meminfo` fields in KiB.
fn meminfo(keys: &[&str]) -> Vec<u64> {
    let info = read("/proc/meminfo");
    keys.iter()
        .map(|k| {
            info.lines()
                .find_map(|l| l.strip_prefix(k)?.strip_prefix(':'))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or_else(|| panic!("no {k} in /proc/meminfo"))
        })
        .collect()
}

/// MemAvailable and kernel memory (Slab + Percpu + KernelStack + PageTables), KiB.
fn memory_now() -> (u64, u64) {
    let v = meminfo(&["MemAvailable", "Slab", "Percpu", "KernelStack", "PageTables"]);
    (v[0], v[1..].iter().sum())
}

/// Not a pass/fail test: prints the cost of domains on this machine.
#[test]
#[ignore = "measurement; run with --ignored --nocapture"]
fn measure_domain_costs() {
    if !may_run_privileged("measure_domain_costs") {
        return;
    }
    let _g = serial();
    let mut r = Router::new("bench");
    let n = 20;
    let specs: Vec<ContainerSpec> = (0..n)
        .map(|i| r.spec(&format!("b{i}"), 100 + i as u8, &["sleep", "100"]))
        .collect();

    let mut create = Vec::new();
    let mut start = Vec::new();
    let mut up = Vec::new();
    let mut pause = Vec::new();
    let mut resume = Vec::new();
    let mut destroy = Vec::new();
    let mut pooled = Vec::new();
    for s in &specs {
        let t = Instant::now();
        r.backend.create(s).unwrap();
        create.push(t.elapsed());
        let t1 = Instant::now();
        let pid = r.backend.start(s).unwrap();
        start.push(t1.elapsed());
        assert_eq!(r.backend.status(s), Status::Running { pid });
        up.push(t.elapsed());
        let t = Instant::now();
        r.backend.pause(s).unwrap();
        pause.push(t.elapsed());
        let t = Instant::now();
        r.backend.resume(s).unwrap();
        resume.push(t.elapsed());
        let t = Instant::now();
        r.backend.destroy(s).unwrap();
        destroy.push(t.elapsed());

        // The idle pool: parked and frozen beforehand, then given the command.
        r.backend.create(s).unwrap();
        r.backend.start_parked(s).unwrap();
        r.backend.pause(s).unwrap();
        let t = Instant::now();
        let pid = r.backend.run_parked(s).unwrap();
        assert_eq!(r.backend.status(s), Status::Running { pid });
        pooled.push(t.elapsed());
        r.backend.destroy(s).unwrap();
    }

    // Memory: three rounds of 20 idle domains; namespaces are freed asynchronously, so settle first.
    let mut avail = Vec::new();
    let mut kernel = Vec::new();
    let mut cgroup = Vec::new();
    for _ in 0..3 {
        std::thread::sleep(Duration::from_secs(3));
        let (a0, k0) = memory_now();
        for s in &specs {
            r.up(s);
        }
        std::thread::sleep(Duration::from_secs(1));
        let (a1, k1) = memory_now();
        avail.push(a0 as i64 - a1 as i64);
        kernel.push(k1 as i64 - k0 as i64);
        let in_cgroups: u64 = specs.iter().map(|s| r.backend.usage(s).unwrap().memory_bytes).sum();
        cgroup.push(in_cgroups as i64 / 1024);
        for s in &specs {
            r.backend.destroy(s).unwrap();
        }
    }
    let per = |v: &Vec<i64>| {
        v.iter()
            .map(|x| format!("{:>5}", x / n as i64))
            .collect::<Vec<_>>()
            .join(" ")
    };

    println!(
        "domain costs, median of {n} runs (2 cores, kernel {}, debug build of domain_init)",
        read("/proc/sys/kernel/osrelease")
    );
    println!("  create (cgroup + netns + veth)   {:>9.2?}", median(create));
    println!("  start (spawn → exec)             {:>9.2?}", median(start));
    println!("  create + start until running     {:>9.2?}", median(up));
    println!("  run_parked until running (pool)  {:>9.2?}", median(pooled));
    println!("  pause (freezer settled)          {:>9.2?}", median(pause));
    println!("  resume (thawed)                  {:>9.2?}", median(resume));
    println!("  destroy (running sleep)          {:>9.2?}", median(destroy));
    println!("  memory per idle domain, KiB, 3 rounds of {n} (sleep 100):");
    println!("    MemAvailable delta / {n}        {}", per(&avail));
    println!("    kernel (slab, percpu, stacks, page tables) {}", per(&kernel));
    println!("    charged to the domain cgroups  {}", per(&cgroup));
}
