//! Privileged test of the `vm` domain backend: a real QEMU microVM (TCG on this machine) booting
//! the host's kernel with the wuos guest init, a tap in a router namespace, the domain's cgroup
//! around QEMU. Needs root, `qemu-system-x86_64`, a kernel in /boot with its modules and
//! busybox-static (all installed by scripts/test.sh).

use std::fs::{self, File};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use wuos_southbound::cgroup::{CgroupFs, Limits};
use wuos_southbound::domain::vm::{GUEST_EXIT_FILE, VmBackend};
use wuos_southbound::domain::{BackendKind, ContainerNet, ContainerSpec, DomainBackend, Status};
use wuos_southbound::netns;
use wuos_southbound::privilege::may_run_privileged;

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
const NETNS_DIR: &str = "/run/netns";

/// The router namespace and cgroup, and the domain's spec; everything is removed on drop.
struct Router {
    ns_name: String,
    _ns: File,
    cgroup: String,
    run_base: PathBuf,
    vm: VmBackend,
    spec: Option<ContainerSpec>,
}

impl Router {
    fn new() -> Self {
        let pid = std::process::id();
        let ns_name = format!("wuos.t{pid}.vm");
        let _ = netns::delete(Path::new(NETNS_DIR), &ns_name);
        let (ns, ()) = netns::create(Path::new(NETNS_DIR), &ns_name, || ()).expect("router namespace");
        let cgroup = format!("wuos/t{pid}/vm");
        CgroupFs::detect(Path::new(CGROUP_ROOT))
            .expect("a cgroup hierarchy")
            .create(&cgroup, &Limits::default())
            .expect("router cgroup");
        let run_base = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("vm-t{pid}"));
        let _ = fs::remove_dir_all(&run_base);
        Self {
            ns_name,
            _ns: ns,
            cgroup,
            run_base,
            vm: VmBackend::new(),
            spec: None,
        }
    }

    fn spec(&mut self, name: &str, argv: &[&str]) -> ContainerSpec {
        let s = ContainerSpec {
            name: name.to_owned(),
            router_netns: Some(Path::new(NETNS_DIR).join(&self.ns_name)),
            netns_name: format!("{}.{name}", self.ns_name),
            netns_dir: NETNS_DIR.into(),
            cgroup_root: CGROUP_ROOT.into(),
            cgroup: format!("{}/{name}", self.cgroup),
            cpus: Some(1.0),
            cpuset: None,
            cpu_weight: None,
            memory: Some(512 << 20),
            net: Some(ContainerNet {
                host_if: format!("d-{name}"),
                dom_if: "eth0".into(),
                host_addr: Ipv4Addr::new(10, 232, 0, 1),
                dom_addr: Ipv4Addr::new(10, 232, 0, 2),
                prefix_len: 30,
                routes_via_host: true,
                vips: vec![Ipv4Addr::new(10, 255, 0, 77)],
            }),
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env: vec![("GREETING".into(), "hello from the guest".into())],
            run_dir: self.run_base.join(name),
            // QEMU is launched through domain-init; the example binary implements it.
            init_exe: PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
                .parent()
                .expect("target dir")
                .join("debug/examples/domain_init"),
            backend: BackendKind::Vm,
        };
        self.spec = Some(s.clone());
        s
    }

    fn in_router(&self, argv: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.ns_name])
            .args(argv)
            .output()
            .expect("ip netns exec")
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        if let Some(s) = &self.spec
            && let Err(e) = self.vm.destroy(s)
        {
            eprintln!("cleanup of {}: {e}", s.name);
        }
        let cg = CgroupFs::detect(Path::new(CGROUP_ROOT)).unwrap();
        let _ = cg.destroy(&self.cgroup, Path::new("/proc"));
        let _ = cg.destroy(&format!("wuos/t{}", std::process::id()), Path::new("/proc"));
        let _ = netns::delete(Path::new(NETNS_DIR), &self.ns_name);
        let _ = fs::remove_dir_all(&self.run_base);
    }
}

fn have_qemu() -> bool {
    let ok = Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        let msg = "vm test: qemu-system-x86_64 is missing (apt-get install qemu-system-x86)";
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{msg}; CI=true forbids skipping"
        );
        eprintln!("{msg}: skipped");
    }
    ok
}

#[test]
fn a_vm_domain_boots_answers_ping_on_its_tap_pauses_and_stops_through_its_control_channel() {
    if !may_run_privileged("vm domain") || !have_qemu() {
        return;
    }
    let mut r = Router::new();
    if let Some(note) = r.vm.accel_note() {
        eprintln!("note: {note}");
    }
    // The command proves it runs in the guest, chrooted into the read-only host view, with the
    // spec's environment: it writes the guest's kernel command line through the 9p run directory.
    let s = r.spec(
        "vm1",
        &[
            "sh",
            "-c",
            "echo \"$GREETING: $(cat /proc/cmdline)\" > /run/domain/hello; touch /etc/wuos-vm-probe 2>/dev/null && echo writable >> /run/domain/hello; exec sleep 600",
        ],
    );
    r.vm.create(&s).unwrap_or_else(|e| panic!("create: {e}"));
    let t0 = Instant::now();
    let pid = r.vm.start(&s).unwrap_or_else(|e| panic!("start: {e}"));
    eprintln!("vm booted to its command in {:?}", t0.elapsed());

    // QEMU runs in the domain's cgroup, with the limits.
    let cg = CgroupFs::detect(Path::new(CGROUP_ROOT)).unwrap();
    assert!(
        cg.procs(&s.cgroup).contains(&pid),
        "QEMU (pid {pid}) is in {}",
        s.cgroup
    );
    assert_eq!(cg.limits(&s.cgroup).memory, Some(512 << 20));
    assert_eq!(r.vm.status(&s), Status::Running { pid });

    // The guest answers ping on the tap, at its address and at its VIP (routed via the tap).
    let ping = r.in_router(&["ping", "-c", "3", "-W", "5", "10.232.0.2"]);
    assert!(
        ping.status.success(),
        "ping guest: {}",
        String::from_utf8_lossy(&ping.stdout)
    );
    let route = r.in_router(&["ip", "route", "add", "10.255.0.77/32", "via", "10.232.0.2"]);
    assert!(route.status.success(), "{}", String::from_utf8_lossy(&route.stderr));
    let ping = r.in_router(&["ping", "-c", "2", "-W", "5", "10.255.0.77"]);
    assert!(
        ping.status.success(),
        "ping VIP: {}",
        String::from_utf8_lossy(&ping.stdout)
    );

    let hello = fs::read_to_string(s.run_dir.join("hello")).expect("the guest command wrote run_dir/hello");
    assert!(hello.starts_with("hello from the guest: "), "{hello}");
    assert!(
        hello.contains("wuos.addr=10.232.0.2/30"),
        "it ran in the guest: {hello}"
    );
    assert!(
        !hello.contains("writable"),
        "the host filesystem is read-only in the guest: {hello}"
    );
    assert!(!Path::new("/etc/wuos-vm-probe").exists());

    // Pause freezes QEMU: the guest stops answering; resume brings it back.
    r.vm.pause(&s).unwrap();
    assert_eq!(r.vm.status(&s), Status::Paused { pid });
    let ping = r.in_router(&["ping", "-c", "1", "-W", "1", "10.232.0.2"]);
    assert!(!ping.status.success(), "a paused vm does not answer");
    r.vm.resume(&s).unwrap();
    let ping = r.in_router(&["ping", "-c", "2", "-W", "5", "10.232.0.2"]);
    assert!(
        ping.status.success(),
        "resumed: {}",
        String::from_utf8_lossy(&ping.stdout)
    );

    // Stop asks the guest over the control channel: the guest init ends the command (SIGTERM:
    // 143), records its exit code and powers off, so QEMU exits by itself.
    let t = Instant::now();
    r.vm.stop(&s, Duration::from_secs(30)).unwrap();
    eprintln!(
        "stopped in {:?}; console: {}",
        t.elapsed(),
        fs::read_to_string(s.run_dir.join("console.log"))
            .unwrap_or_default()
            .lines()
            .rev()
            .take(5)
            .collect::<Vec<_>>()
            .join(" / ")
    );
    assert_eq!(r.vm.status(&s), Status::Exited { code: Some(143) });
    assert!(
        s.run_dir.join(GUEST_EXIT_FILE).exists(),
        "the guest recorded the exit itself (a killed QEMU would not have)"
    );
    r.vm.destroy(&s).unwrap();
    assert!(!cg.exists(&s.cgroup), "the cgroup is gone");
    let link = r.in_router(&["ip", "link", "show", "d-vm1"]);
    assert!(!link.status.success(), "the tap is gone with QEMU");
}
