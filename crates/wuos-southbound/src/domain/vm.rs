//! The `vm` backend: a domain is a QEMU `microvm` booting the host's kernel with the wuos guest
//! init (see [`super::vm_image`]), inside the domain's cgroup (its CPU quota, cores and memory
//! limit bound QEMU, guest RAM included).
//!
//! ```text
//!  router netns ── tap host_if (host_addr/prefix) ══ virtio-net ══ guest eth0 (dom_addr), VIPs on lo
//!  QEMU (in the domain cgroup, launched through domain-init into the router's namespace)
//!    ├─ 9p `hostroot`: the host's `/`, read-only      → guest /host (chroot of the command)
//!    ├─ 9p `rundir`:   the domain's run_dir, writable  → guest /run/domain (vm.run, vm.ready, vm.exit)
//!    └─ virtio-serial `wuos.control` ⇄ run_dir/control.sock (the daemon writes `stop`)
//! ```
//!
//! KVM is used when `/dev/kvm` exists and the CPU has hardware virtualization; otherwise TCG
//! (software emulation, much slower to boot), reported by [`VmBackend::accel_note`]. Under TCG
//! the guest gets `tsc_early_khz` or it may hang calibrating its clock.
//!
//! Like the container backend this one keeps no state: the cgroup, the pid file and the files in
//! `run_dir` are the truth, so a restarted daemon re-adopts running VMs. VMs have no idle pool
//! (parking is for containers): [`DomainBackend::start_parked`] is refused.

use std::fs;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::vm_image::{self, GuestImage, ImageSources};
use super::{ContainerBackend, ContainerSpec, DEFAULT_PATH, DomainBackend, DomainError, Status, Usage, net};

/// The guest command, written into `run_dir` and run by the guest init.
pub const RUN_SCRIPT: &str = "vm.run";
/// Written by the guest init once the command runs (its content: guest uptime, seconds).
pub const READY_FILE: &str = "vm.ready";
/// The guest command's exit code.
pub const GUEST_EXIT_FILE: &str = "vm.exit";
/// Why the guest init gave up.
pub const GUEST_ERROR_FILE: &str = "vm.error";
/// The guest's serial console.
pub const CONSOLE_FILE: &str = "console.log";
/// The control channel's socket (QEMU is the server).
pub const CONTROL_SOCKET: &str = "control.sock";
/// QEMU's own memory beside guest RAM that a memory limit must leave room for.
pub const QEMU_OVERHEAD: u64 = 128 << 20;

/// How QEMU runs the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    /// KVM if usable, else TCG.
    Auto,
    Kvm,
    Tcg,
}

/// The real `vm` backend.
#[derive(Debug)]
pub struct VmBackend {
    inner: ContainerBackend,
    /// `qemu-system-x86_64`.
    pub qemu: PathBuf,
    pub sources: ImageSources,
    /// Where the uncompressed kernel and the initramfs are kept.
    pub cache_dir: PathBuf,
    /// Guest RAM.
    pub guest_memory_mib: u32,
    pub accel: Accel,
    /// How long the guest may take from QEMU's start to running the command.
    pub boot_timeout: Duration,
    image: Mutex<Option<GuestImage>>,
}

impl Default for VmBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl VmBackend {
    pub fn new() -> Self {
        Self {
            inner: ContainerBackend::new(),
            qemu: "qemu-system-x86_64".into(),
            sources: ImageSources::default(),
            cache_dir: "/var/cache/wuos/vm".into(),
            guest_memory_mib: 128,
            accel: Accel::Auto,
            boot_timeout: Duration::from_secs(90),
            image: Mutex::new(None),
        }
    }

    /// The accelerator QEMU will use, and a warning when it is TCG because KVM is not usable.
    pub fn resolved_accel(&self) -> (Accel, Option<String>) {
        match self.accel {
            Accel::Kvm => (Accel::Kvm, None),
            Accel::Tcg => (Accel::Tcg, None),
            Accel::Auto => {
                let dev = Path::new("/dev/kvm").exists();
                let flags = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
                let hw = flags
                    .lines()
                    .filter(|l| l.starts_with("flags"))
                    .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
                if dev && hw {
                    (Accel::Kvm, None)
                } else {
                    let why = if dev {
                        "/dev/kvm exists but the CPU shows no vmx/svm (a paravirtual device that cannot run ordinary guests)"
                    } else {
                        "no /dev/kvm"
                    };
                    (
                        Accel::Tcg,
                        Some(format!(
                            "vm domains run under TCG software emulation ({why}): boots take seconds and guests run slowly"
                        )),
                    )
                }
            }
        }
    }

    /// The warning to log once at start-up, if any.
    pub fn accel_note(&self) -> Option<String> {
        self.resolved_accel().1
    }

    /// The guest image, built on first use (and cached on disk across daemons).
    pub fn image(&self, name: &str) -> Result<GuestImage, DomainError> {
        let mut cached = self.image.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(img) = cached.as_ref()
            && img.kernel.exists()
            && img.initramfs.exists()
        {
            return Ok(img.clone());
        }
        let img = vm_image::prepare(&self.sources, &self.cache_dir).map_err(|error| DomainError::Image {
            name: name.to_owned(),
            error,
        })?;
        *cached = Some(img.clone());
        Ok(img)
    }

    fn validate(&self, spec: &ContainerSpec) -> Result<(), DomainError> {
        spec.validate()?;
        let guest = u64::from(self.guest_memory_mib) << 20;
        if let Some(m) = spec.memory
            && m < guest + QEMU_OVERHEAD
        {
            return Err(DomainError::InvalidSpec {
                name: spec.name.clone(),
                reason: format!(
                    "memory {} MiB is too small for a vm domain: the guest has {} MiB and QEMU needs about {} MiB more",
                    m >> 20,
                    self.guest_memory_mib,
                    QEMU_OVERHEAD >> 20
                ),
            });
        }
        Ok(())
    }

    /// The spec of the QEMU process as the container machinery launches it: the same cgroup and
    /// run_dir, but in the router's network namespace (where QEMU makes the tap), with no network
    /// of its own.
    fn launcher(&self, spec: &ContainerSpec, argv: Vec<String>) -> ContainerSpec {
        let router = spec
            .router_netns
            .clone()
            .unwrap_or_else(|| self.inner.proc_root().join("self/ns/net"));
        ContainerSpec {
            netns_dir: router.parent().map(Path::to_owned).unwrap_or_default(),
            netns_name: router
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default(),
            net: None,
            argv,
            env: vec![("PATH".into(), DEFAULT_PATH.into())],
            ..spec.clone()
        }
    }

    /// QEMU's command line for `spec`.
    pub fn qemu_argv(&self, spec: &ContainerSpec, img: &GuestImage) -> Vec<String> {
        let (accel, _) = self.resolved_accel();
        let run = spec.run_dir.display().to_string();
        // reboot=t: a triple fault, which QEMU (-no-reboot) turns into its exit at once.
        let mut append = vec![
            "console=ttyS0".to_owned(),
            "quiet".into(),
            "panic=-1".into(),
            "reboot=t".into(),
        ];
        if accel == Accel::Tcg {
            append.push("tsc_early_khz=2000000".into());
        }
        let mut argv: Vec<String> = vec![
            self.qemu.display().to_string(),
            "-name".into(),
            format!("wuos-{},process=wuos-vm-{}", spec.name, spec.name),
            "-M".into(),
            "microvm,x-option-roms=off,rtc=off".into(),
            "-accel".into(),
            match accel {
                Accel::Kvm => "kvm".into(),
                _ => "tcg,tb-size=64".into(),
            },
            "-m".into(),
            format!("{}M", self.guest_memory_mib),
            "-smp".into(),
            "1".into(),
            "-nodefaults".into(),
            "-no-user-config".into(),
            "-display".into(),
            "none".into(),
            "-no-reboot".into(),
            "-serial".into(),
            format!("file:{run}/{CONSOLE_FILE}"),
            "-kernel".into(),
            img.kernel.display().to_string(),
            "-initrd".into(),
            img.initramfs.display().to_string(),
        ];
        if let Some(n) = &spec.net {
            append.push(format!("wuos.addr={}/{}", n.dom_addr, n.prefix_len));
            if n.routes_via_host {
                append.push(format!("wuos.gw={}", n.host_addr));
            }
            if !n.vips.is_empty() {
                let vips: Vec<String> = n.vips.iter().map(ToString::to_string).collect();
                append.push(format!("wuos.vips={}", vips.join(",")));
            }
            let m = net::mac_for(&spec.netns_name, 1);
            let mac = m.map(|b| format!("{b:02x}")).join(":");
            argv.extend([
                "-netdev".into(),
                format!("tap,id=n0,ifname={},script=no,downscript=no", n.host_if),
                "-device".into(),
                format!("virtio-net-device,netdev=n0,mac={mac}"),
            ]);
        }
        argv.extend([
            "-append".into(),
            append.join(" "),
            "-fsdev".into(),
            "local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap".into(),
            "-device".into(),
            "virtio-9p-device,fsdev=hostroot,mount_tag=hostroot".into(),
            "-fsdev".into(),
            format!("local,id=rundir,path={run},security_model=none"),
            "-device".into(),
            "virtio-9p-device,fsdev=rundir,mount_tag=rundir".into(),
            "-device".into(),
            "virtio-serial-device".into(),
            "-chardev".into(),
            format!("socket,id=ctl,path={run}/{CONTROL_SOCKET},server=on,wait=off"),
            "-device".into(),
            "virtserialport,chardev=ctl,name=wuos.control".into(),
        ]);
        argv
    }

    /// Waits until the guest runs the command (`vm.ready`), gave up (`vm.error`), or QEMU died.
    fn await_ready(&self, spec: &ContainerSpec, launcher: &ContainerSpec) -> Result<(), DomainError> {
        let deadline = Instant::now() + self.boot_timeout;
        let ready = spec.run_dir.join(READY_FILE);
        let error = spec.run_dir.join(GUEST_ERROR_FILE);
        loop {
            if ready.exists() {
                return Ok(());
            }
            let failure = if let Ok(e) = fs::read_to_string(&error) {
                Some(e.trim().to_owned())
            } else if matches!(self.inner.status(launcher), Status::Exited { .. } | Status::Absent) {
                Some("QEMU exited".to_owned())
            } else if Instant::now() >= deadline {
                Some(format!("the guest did not come up within {:?}", self.boot_timeout))
            } else {
                None
            };
            if let Some(message) = failure {
                let _ = self.inner.stop(launcher, Duration::from_millis(200));
                return Err(DomainError::Boot {
                    name: spec.name.clone(),
                    message,
                    console: console_tail(&spec.run_dir),
                    log: spec.run_dir.join(CONSOLE_FILE),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// The last lines of the guest console, for error messages.
fn console_tail(run_dir: &Path) -> String {
    let text = fs::read_to_string(run_dir.join(CONSOLE_FILE)).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

/// `'it'\''s'`: one shell word.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The script the guest init runs (chrooted into the host view): the command with exactly the
/// spec's environment.
pub fn run_script(spec: &ContainerSpec) -> String {
    let mut env = spec.env.clone();
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.push(("PATH".into(), DEFAULT_PATH.into()));
    }
    let mut line = String::from("exec env -i");
    for (k, v) in &env {
        line.push(' ');
        line.push_str(&shell_quote(&format!("{k}={v}")));
    }
    for a in &spec.argv {
        line.push(' ');
        line.push_str(&shell_quote(a));
    }
    format!(
        "# wuos vm domain {}: the command, run by the guest init\ncd /\n{line}\n",
        spec.name
    )
}

impl DomainBackend for VmBackend {
    fn create(&self, spec: &ContainerSpec) -> Result<(), DomainError> {
        self.validate(spec)?;
        self.image(&spec.name)?;
        let cg = self.inner.cgroups(spec)?;
        if !self.inner.live_procs(&cg, spec).is_empty() {
            return Err(DomainError::Exists {
                name: spec.name.clone(),
                what: "cgroup with processes",
                path: spec.cgroup_root.join(&spec.cgroup),
            });
        }
        fs::create_dir_all(&spec.run_dir)
            .map_err(|e| DomainError::io(&spec.name, "create the run directory", &spec.run_dir, e))?;
        self.inner.make_cgroup(&cg, spec)
    }

    fn start(&self, spec: &ContainerSpec) -> Result<i32, DomainError> {
        self.validate(spec)?;
        if spec.argv.is_empty() {
            return Err(DomainError::InvalidSpec {
                name: spec.name.clone(),
                reason: "argv must name a command to start".into(),
            });
        }
        let img = self.image(&spec.name)?;
        fs::create_dir_all(&spec.run_dir)
            .map_err(|e| DomainError::io(&spec.name, "create the run directory", &spec.run_dir, e))?;
        for f in [
            READY_FILE,
            GUEST_EXIT_FILE,
            GUEST_ERROR_FILE,
            CONSOLE_FILE,
            CONTROL_SOCKET,
        ] {
            let _ = fs::remove_file(spec.run_dir.join(f));
        }
        let script = spec.run_dir.join(RUN_SCRIPT);
        fs::write(&script, run_script(spec))
            .map_err(|e| DomainError::io(&spec.name, "write the guest command", &script, e))?;
        let launcher = self.launcher(spec, self.qemu_argv(spec, &img));
        let pid = self.inner.launch_with(&launcher, false, false)?;
        if let Err(e) = net::address_tap(spec, self.inner.proc_root(), Duration::from_secs(10)) {
            let _ = self.inner.stop(&launcher, Duration::from_millis(200));
            return Err(e);
        }
        self.await_ready(spec, &launcher)?;
        Ok(pid)
    }

    fn start_parked(&self, spec: &ContainerSpec) -> Result<i32, DomainError> {
        Err(DomainError::Unsupported {
            name: spec.name.clone(),
            what: "parking (the idle pool holds container domains; a vm boots on start)",
        })
    }

    fn run_parked(&self, spec: &ContainerSpec) -> Result<i32, DomainError> {
        self.start_parked(spec)
    }

    fn pause(&self, spec: &ContainerSpec) -> Result<(), DomainError> {
        self.inner.pause(&self.launcher(spec, vec![]))
    }

    fn resume(&self, spec: &ContainerSpec) -> Result<(), DomainError> {
        self.inner.resume(&self.launcher(spec, vec![]))
    }

    /// Asks the guest to end its command over the control channel (the guest then powers off and
    /// QEMU exits); whatever still runs after `grace` is killed.
    fn stop(&self, spec: &ContainerSpec, grace: Duration) -> Result<(), DomainError> {
        let launcher = self.launcher(spec, vec![]);
        let start = Instant::now();
        if matches!(self.inner.status(&launcher), Status::Running { .. })
            && let Ok(mut s) = UnixStream::connect(spec.run_dir.join(CONTROL_SOCKET))
        {
            let _ = s.set_write_timeout(Some(Duration::from_millis(200)));
            let _ = s.write_all(b"stop\n");
            while start.elapsed() < grace && matches!(self.inner.status(&launcher), Status::Running { .. }) {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        self.inner.stop(&launcher, grace.saturating_sub(start.elapsed()))
    }

    fn destroy(&self, spec: &ContainerSpec) -> Result<(), DomainError> {
        let stopped = self.stop(spec, self.inner.destroy_grace);
        let launcher = self.launcher(spec, vec![]);
        let removed = match self.inner.cgroups(&launcher) {
            Ok(cg) => cg
                .destroy(&spec.cgroup, self.inner.proc_root())
                .map_err(|error| DomainError::Cgroup {
                    name: spec.name.clone(),
                    error,
                }),
            Err(e) => Err(e),
        };
        for f in [
            super::PID_FILE,
            super::EXIT_FILE,
            READY_FILE,
            GUEST_EXIT_FILE,
            GUEST_ERROR_FILE,
            CONTROL_SOCKET,
        ] {
            let _ = fs::remove_file(spec.run_dir.join(f));
        }
        stopped.and(removed)
    }

    /// As the container's, but an exited domain reports its guest command's exit code when the
    /// guest wrote one (QEMU's own is that of a powered-off machine).
    fn status(&self, spec: &ContainerSpec) -> Status {
        match self.inner.status(&self.launcher(spec, vec![])) {
            Status::Exited { code } => {
                let guest = fs::read_to_string(spec.run_dir.join(GUEST_EXIT_FILE))
                    .ok()
                    .and_then(|s| s.trim().parse().ok());
                Status::Exited { code: guest.or(code) }
            }
            other => other,
        }
    }

    fn usage(&self, spec: &ContainerSpec) -> Option<Usage> {
        self.inner.usage(&self.launcher(spec, vec![]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::tests::spec;

    #[test]
    fn the_run_script_quotes_every_word_and_clears_the_environment() {
        let mut s = spec();
        s.argv = vec!["echo".into(), "it's here".into(), "$HOME".into()];
        s.env = vec![("A".into(), "b c".into())];
        let script = run_script(&s);
        assert!(
            script.contains(r#"exec env -i 'A=b c' 'PATH=/usr/local/sbin"#),
            "{script}"
        );
        assert!(script.contains(r#"'echo' 'it'\''s here' '$HOME'"#), "{script}");
    }

    #[test]
    fn qemu_gets_the_tap_the_shares_the_control_channel_and_the_guest_network() {
        let mut vm = VmBackend::new();
        vm.accel = Accel::Tcg;
        let mut s = spec();
        s.net.as_mut().unwrap().vips = vec!["10.255.0.10".parse().unwrap()];
        let img = GuestImage {
            release: "6.1".into(),
            kernel: "/c/vmlinux-6.1".into(),
            initramfs: "/c/initramfs.cpio".into(),
        };
        let argv = vm.qemu_argv(&s, &img).join(" ");
        for needle in [
            "-M microvm",
            "-accel tcg",
            "tsc_early_khz=2000000",
            "ifname=d-pabx-1,script=no",
            "wuos.addr=10.200.0.2/30",
            "wuos.gw=10.200.0.1",
            "wuos.vips=10.255.0.10",
            "path=/,security_model=none,readonly=on",
            "path=/run/wuos/demo/r1/pabx-1,security_model=none",
            "name=wuos.control",
            "-kernel /c/vmlinux-6.1",
        ] {
            assert!(argv.contains(needle), "{needle:?} missing from {argv}");
        }
        vm.accel = Accel::Kvm;
        assert!(!vm.qemu_argv(&s, &img).join(" ").contains("tsc_early_khz"));
    }

    #[test]
    fn a_memory_limit_must_leave_room_for_the_guest_and_qemu() {
        let vm = VmBackend::new();
        let mut s = spec();
        s.memory = Some(200 << 20);
        let err = vm.validate(&s).unwrap_err().to_string();
        assert!(
            err.contains("too small for a vm domain") && err.contains("128 MiB"),
            "{err}"
        );
        s.memory = Some(256 << 20);
        vm.validate(&s).unwrap();
    }

    #[test]
    fn the_launcher_runs_in_the_router_namespace_without_a_network_of_its_own() {
        let vm = VmBackend::new();
        let l = vm.launcher(&spec(), vec!["qemu".into()]);
        assert_eq!(l.netns_path(), Path::new("/run/netns/wuos.demo.r1"));
        assert!(l.net.is_none());
        assert_eq!(l.cgroup, spec().cgroup);
        l.validate().unwrap();
    }

    #[test]
    fn parking_is_refused_with_the_reason() {
        let err = VmBackend::new().start_parked(&spec()).unwrap_err().to_string();
        assert!(err.contains("idle pool holds container domains"), "{err}");
    }
}
