//! Domains: isolated execution environments with a resource budget, run by a router (service VNFs,
//! the routing domain with reserved cores). The daemon codes against [`DomainBackend`]; the real
//! backend is [`ContainerBackend`] (network namespace + cgroup + private read-only mount
//! namespace), and [`FakeBackend`] records calls and simulates states for the daemon's tests.
//!
//! # Layout
//! - `mod.rs`: the spec ([`ContainerSpec`]), the state ([`Status`]), the trait and [`DomainError`].
//! - [`container`]: the real backend — cgroup with limits, namespaces, launching, freezing, stopping.
//! - [`net`]: the domain's network namespace and its veth to the router.
//! - [`init`]: `domain-init`, the program that enters a domain and `exec`s the domain's command.
//! - [`vm`]: the `vm` backend — a QEMU microVM in the domain's cgroup, with a tap in the router's
//!   namespace; [`vm_image`] builds its kernel and initramfs.
//! - [`fake`]: the recording fake.
//!
//! ```text
//!  daemon ── start() ──spawn──▶ init_exe domain-init --netns … -- argv   (setsid, detached)
//!     ▲                            │ join cgroup · setns(net) · unshare(mnt) · / read-only
//!     │ stdin pipe: error text,    │ tmpfs /tmp /run /dev/shm · bind run_dir · execvp(argv)
//!     └─ or EOF at exec (CLOEXEC) ─┘
//!
//!  idle pool: start_parked() ─▶ same, then waits on run_dir/domain.command ─▶ pause() (frozen)
//!             run_parked()   ─▶ limits · argv+env into the FIFO · thaw ─▶ execve; the outcome
//!                               comes back on run_dir/domain.status
//! ```
//!
//! A domain's state lives in the kernel (the cgroup's tasks and freezer) and in two small files
//! in its `run_dir` (`domain.pid`, `domain.exit`), so a restarted daemon re-adopts running domains
//! with [`DomainBackend::status`].

pub mod container;
pub mod fake;
pub mod init;
pub mod net;
pub mod vm;
pub mod vm_image;

use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use container::ContainerBackend;
pub use fake::FakeBackend;
pub use vm::VmBackend;

use crate::cgroup::CgroupError;
use crate::netlink::NetlinkError;
use crate::netns::NetnsError;

/// Everything needed to create and run one container domain. Paths are host paths.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ContainerSpec {
    /// Unique per router, `[a-z0-9-]{1,24}`.
    pub name: String,
    /// The router's namespace file (`/run/netns/wuos.LAB.NODE`); `None`: the daemon's own
    /// namespace (a real router).
    pub router_netns: Option<PathBuf>,
    /// The domain's own namespace, e.g. `wuos.LAB.NODE.pabx-1`, made under `netns_dir`.
    pub netns_name: String,
    /// Where named namespaces live (`/run/netns`).
    pub netns_dir: PathBuf,
    /// The cgroup filesystem root (`/sys/fs/cgroup`).
    pub cgroup_root: PathBuf,
    /// The domain's cgroup relative to each hierarchy, e.g. `wuos/LAB/NODE/services/pabx-1`.
    pub cgroup: String,
    /// CPU capacity in cores (CFS quota).
    pub cpus: Option<f64>,
    /// Cores the domain is pinned to (must be a subset of the parent cgroup's).
    pub cpuset: Option<Vec<u32>>,
    /// CPU weight against sibling domains, 1–10000 (default 100).
    pub cpu_weight: Option<u32>,
    /// Memory limit in bytes.
    pub memory: Option<u64>,
    /// The veth between router and domain; `None`: the domain has only a loopback.
    pub net: Option<ContainerNet>,
    /// The command, searched in `PATH`.
    pub argv: Vec<String>,
    /// The command's whole environment (nothing is inherited from the daemon); `PATH` defaults to
    /// [`DEFAULT_PATH`].
    pub env: Vec<(String, String)>,
    /// Per-domain directory for logs and state: stdout+stderr go to `output.log`; the daemon keeps
    /// `domain.pid` and `domain.exit` here. Bind-mounted writable into the domain.
    pub run_dir: PathBuf,
    /// The binary that implements `domain-init` (`wuosd`, or the `domain_init` example in tests).
    pub init_exe: PathBuf,
    /// Which backend runs it (read by [`Backends`]; a backend called directly ignores it).
    pub backend: BackendKind,
}

/// The isolation a domain gets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BackendKind {
    /// [`ContainerBackend`].
    #[default]
    Container,
    /// [`VmBackend`].
    Vm,
}

/// The daemon's backend: each call goes to the backend the spec's [`ContainerSpec::backend`]
/// names. Without a `vm` backend, vm domains are refused with the reason.
pub struct Backends {
    pub container: std::sync::Arc<dyn DomainBackend>,
    pub vm: Option<std::sync::Arc<dyn DomainBackend>>,
}

impl Backends {
    fn pick(&self, spec: &ContainerSpec) -> Result<&dyn DomainBackend, DomainError> {
        match spec.backend {
            BackendKind::Container => Ok(self.container.as_ref()),
            BackendKind::Vm => self.vm.as_deref().ok_or_else(|| DomainError::Unsupported {
                name: spec.name.clone(),
                what: "isolation \"vm\" (this daemon has no vm backend)",
            }),
        }
    }
}

impl DomainBackend for Backends {
    fn create(&self, spec: &ContainerSpec) -> Result<(), DomainError> {
        self.pick(spec)?.create(spec)
    }
    fn start(&self, spec: &ContainerSpec) -> Result<i32, DomainError> {
        self.pick(spec)?.start(spec)
    }
    fn start_parked(&self, spec: &ContainerSpec) -> Result<i32, DomainError> {
        self.pick(spec)?.start_parked(spec)
    }
    fn run_parked(&self, spec: &ContainerSpec) -> Result<i32, DomainError> {
        self.pick(spec)?.run_parked(spec)
    }
    fn pause(&self, spec: &ContainerSpec) -> Result<(), DomainError> {
        self.pick(spec)?.pause(spec)
    }
    fn resume(&self, spec: &ContainerSpec) -> Result<(), DomainError> {
        self.pick(spec)?.resume(spec)
    }
    fn stop(&self, spec: &ContainerSpec, grace: Duration) -> Result<(), DomainError> {
        self.pick(spec)?.stop(spec, grace)
    }
    fn destroy(&self, spec: &ContainerSpec) -> Result<(), DomainError> {
        self.pick(spec)?.destroy(spec)
    }
    fn status(&self, spec: &ContainerSpec) -> Status {
        self.pick(spec).map_or(Status::Absent, |b| b.status(spec))
    }
    fn usage(&self, spec: &ContainerSpec) -> Option<Usage> {
        self.pick(spec).ok()?.usage(spec)
    }
}

/// The veth between the router's namespace and the domain's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerNet {
    /// The end in the router's namespace, e.g. `d-pabx-1` (at most 15 bytes).
    pub host_if: String,
    /// The end in the domain's namespace, e.g. `eth0`.
    pub dom_if: String,
    pub host_addr: Ipv4Addr,
    pub dom_addr: Ipv4Addr,
    pub prefix_len: u8,
    /// Install a default route in the domain via `host_addr`.
    pub routes_via_host: bool,
    /// Service VIPs the domain answers on: /32s on its loopback (the router routes a VIP to the
    /// instance that serves it).
    pub vips: Vec<Ipv4Addr>,
}

/// `PATH` of a domain whose spec does not set one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// stdout and stderr of the domain, in `run_dir`.
pub const LOG_FILE: &str = "output.log";
/// The main pid, written by `start`.
pub const PID_FILE: &str = "domain.pid";
/// The main process's exit code, written when the daemon reaps it.
pub const EXIT_FILE: &str = "domain.exit";

impl ContainerSpec {
    /// The domain's namespace file (`netns_dir/netns_name`).
    pub fn netns_path(&self) -> PathBuf {
        self.netns_dir.join(&self.netns_name)
    }

    pub fn log_path(&self) -> PathBuf {
        self.run_dir.join(LOG_FILE)
    }

    pub fn pid_path(&self) -> PathBuf {
        self.run_dir.join(PID_FILE)
    }

    pub fn exit_path(&self) -> PathBuf {
        self.run_dir.join(EXIT_FILE)
    }

    /// Checks names, paths and limits before anything is made, so a bad spec fails with one clear
    /// message instead of half a domain.
    pub fn validate(&self) -> Result<(), DomainError> {
        let bad = |reason: String| {
            Err(DomainError::InvalidSpec {
                name: self.name.clone(),
                reason,
            })
        };
        let name_ok = (1..=24).contains(&self.name.len())
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !name_ok {
            return bad("the name must be 1 to 24 characters of a-z, 0-9 and '-'".into());
        }
        if self.netns_name.is_empty() || self.netns_name.contains('/') || self.netns_name.starts_with('.') {
            return bad(format!("netns_name {:?} must be a plain file name", self.netns_name));
        }
        if !self.netns_dir.is_absolute() || !self.cgroup_root.is_absolute() || !self.run_dir.is_absolute() {
            return bad("netns_dir, cgroup_root and run_dir must be absolute paths".into());
        }
        if let Some(r) = &self.router_netns
            && !r.is_absolute()
        {
            return bad(format!("router_netns {} must be an absolute path", r.display()));
        }
        let parts: Vec<&str> = self.cgroup.split('/').collect();
        if self.cgroup.starts_with('/') || parts.iter().any(|p| p.is_empty() || *p == "." || *p == "..") {
            return bad(format!(
                "cgroup {:?} must be a relative path such as wuos/LAB/NODE/services/NAME",
                self.cgroup
            ));
        }
        if self.argv.first().is_some_and(String::is_empty) {
            return bad("argv[0] must name a command".into());
        }
        if self
            .argv
            .iter()
            .chain(self.env.iter().map(|(_, v)| v))
            .any(|a| a.contains('\0'))
        {
            return bad("argv and env values must not contain NUL bytes".into());
        }
        if self
            .env
            .iter()
            .any(|(k, _)| k.is_empty() || k.contains('=') || k.contains('\0'))
        {
            return bad("environment names must be non-empty and contain neither '=' nor NUL".into());
        }
        if self.init_exe.as_os_str().is_empty() {
            return bad("init_exe must name the domain-init binary".into());
        }
        if let Some(c) = self.cpus
            && !(c.is_finite() && c >= 0.01)
        {
            return bad(format!("cpus {c} must be at least 0.01"));
        }
        if self.cpuset.as_ref().is_some_and(Vec::is_empty) {
            return bad("cpuset must list at least one core (or be left out)".into());
        }
        if let Some(w) = self.cpu_weight
            && !(1..=10_000).contains(&w)
        {
            return bad(format!("cpu_weight {w} must be within 1..=10000"));
        }
        if let Some(m) = self.memory
            && m < (4 << 20)
        {
            return bad(format!("memory {m} bytes is below the 4 MiB minimum"));
        }
        if let Some(n) = &self.net {
            for (what, ifname) in [("host_if", &n.host_if), ("dom_if", &n.dom_if)] {
                let ok = (1..=15).contains(&ifname.len())
                    && ifname.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
                if !ok {
                    return bad(format!(
                        "{what} {ifname:?} must be 1 to 15 characters of letters, digits, '-', '_' or '.'"
                    ));
                }
            }
            if n.prefix_len == 0 || n.prefix_len > 32 {
                return bad(format!("prefix_len {} must be within 1..=32", n.prefix_len));
            }
            if n.host_addr == n.dom_addr {
                return bad(format!("host_addr and dom_addr are both {}", n.host_addr));
            }
        }
        Ok(())
    }
}

/// What a domain is doing, as seen from the kernel (and `run_dir`), so it survives a daemon
/// restart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Processes run in the cgroup; `pid` is the main one (or, once it has exited while others
    /// remain — a daemon that forked — the lowest remaining pid).
    Running { pid: i32 },
    /// Frozen (or freezing).
    Paused { pid: i32 },
    /// Nothing runs in the domain. `code` is the main process's exit code, 128 + signal when
    /// killed by one; `None` when this daemon could not reap it (it was started by an earlier
    /// daemon process) or when the domain was created and never started.
    Exited { code: Option<i32> },
    /// No such domain (no cgroup).
    Absent,
}

/// Resource use of a domain, from its cgroup.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// CPU time since creation, nanoseconds.
    pub cpu_ns: u64,
    /// Working set (usage without inactive page cache), bytes; 0 when the memory controller is
    /// not available (a v2 hierarchy without it).
    pub memory_bytes: u64,
}

/// A way to run domains. Every method blocks (it may sleep for `grace` or a freezer); call it from
/// a blocking thread (`tokio::task::spawn_blocking`), not from an async task. All methods take the
/// full spec, so the backend keeps no state a daemon restart would lose.
pub trait DomainBackend: Send + Sync {
    /// Makes the cgroup (with limits), the network namespace and the veth with addresses and
    /// routes — no process yet. Fails with [`DomainError::Exists`] if the namespace exists or the
    /// cgroup has processes; a failure half-way removes what it made.
    fn create(&self, spec: &ContainerSpec) -> Result<(), DomainError>;
    /// Launches `argv` inside the domain, detached from the daemon; returns the pid once the
    /// command has been `exec`ed (or the reason it could not be).
    fn start(&self, spec: &ContainerSpec) -> Result<i32, DomainError>;
    /// For the idle pool: launches the domain's init fully set up (cgroup, namespaces, read-only
    /// root) but without a command — `spec.argv` is ignored and may be empty; returns its pid.
    /// The caller usually [`pause`](Self::pause)s it right after.
    fn start_parked(&self, spec: &ContainerSpec) -> Result<i32, DomainError>;
    /// Gives a parked domain its command: applies `spec`'s limits (cpus, memory, cpuset,
    /// weight) to its cgroup, hands over `spec.argv` and `spec.env`, thaws it, and returns the
    /// pid (the parked init's) once the command is `exec`ed. `spec` names the parked domain's
    /// namespace, cgroup and run_dir.
    fn run_parked(&self, spec: &ContainerSpec) -> Result<i32, DomainError>;
    /// Freezes every process of the domain; its CPU use drops to 0.
    fn pause(&self, spec: &ContainerSpec) -> Result<(), DomainError>;
    /// Thaws a paused domain (a running one is left alone).
    fn resume(&self, spec: &ContainerSpec) -> Result<(), DomainError>;
    /// SIGTERM to every process in the cgroup, then after `grace` SIGKILL to whatever is left.
    /// Stopping a domain that runs nothing is not an error.
    fn stop(&self, spec: &ContainerSpec, grace: Duration) -> Result<(), DomainError>;
    /// Stops if needed and removes the cgroup, the veth and the namespace. Idempotent. Leaves
    /// `run_dir/output.log` for post-mortems.
    fn destroy(&self, spec: &ContainerSpec) -> Result<(), DomainError>;
    /// The state from the cgroup's tasks, the freezer and `run_dir`: works for domains started by
    /// an earlier daemon process (re-adoption).
    fn status(&self, spec: &ContainerSpec) -> Status;
    /// CPU and memory use; `None` when the domain has no cgroup.
    fn usage(&self, spec: &ContainerSpec) -> Option<Usage>;
}

/// Errors of domain operations; each names the domain and, where there is one, the path.
#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    #[error("domain {name}: invalid spec: {reason}")]
    InvalidSpec { name: String, reason: String },
    #[error("domain {name} already exists ({what} {path}); destroy it first")]
    Exists {
        name: String,
        what: &'static str,
        path: PathBuf,
    },
    #[error("domain {name} is not created (no cgroup or namespace at {path}); create it first")]
    NotCreated { name: String, path: PathBuf },
    #[error("domain {name} is already running (pid {pid})")]
    AlreadyRunning { name: String, pid: i32 },
    #[error("domain {name} runs no process to {action}")]
    NotRunning { name: String, action: &'static str },
    #[error("domain {name} has no parked init waiting for a command ({reason}); start it with start_parked")]
    NotParked { name: String, reason: String },
    #[error("domain {name}: {error}")]
    Cgroup { name: String, error: CgroupError },
    #[error("domain {name}: {error}")]
    Netns { name: String, error: NetnsError },
    #[error("domain {name}: {error}")]
    Netlink { name: String, error: NetlinkError },
    #[error("domain {name}: cannot {what} {path}: {error}")]
    Io {
        name: String,
        what: &'static str,
        path: PathBuf,
        error: io::Error,
    },
    #[error(
        "domain {name}: cannot run the domain-init program {exe}: {error} (build it, or set init_exe to the wuosd binary)"
    )]
    Spawn {
        name: String,
        exe: PathBuf,
        error: io::Error,
    },
    #[error("domain {name} failed to start: {message} (output in {log})")]
    Init {
        name: String,
        message: String,
        log: PathBuf,
    },
    #[error("domain {name}: domain-init did not exec the command within {waited:?}")]
    InitTimeout { name: String, waited: Duration },
    #[error("domain {name}: processes {pids:?} survived SIGKILL for {waited:?} (stuck in the kernel?)")]
    Unkillable {
        name: String,
        pids: Vec<i32>,
        waited: Duration,
    },
    #[error("domain {name}: cannot start an async runtime for netlink: {error}")]
    Runtime { name: String, error: io::Error },
    /// `domain-init` was called with bad arguments.
    #[error(
        "domain-init: {0}; usage: domain-init --cgroup-root DIR --cgroup REL [--netns FILE] [--ro-root] [--run-dir DIR] [--status-stdin] -- COMMAND [ARG...]"
    )]
    InitUsage(String),
    /// A setup step of `domain-init` failed.
    #[error("domain-init: cannot {step} {path}: {error}")]
    InitStep {
        step: &'static str,
        path: PathBuf,
        error: io::Error,
    },
    #[error("domain {name}: {what} is not supported by this backend")]
    Unsupported { name: String, what: &'static str },
    #[error("domain {name}: cannot prepare the guest image: {error}")]
    Image { name: String, error: vm_image::ImageError },
    #[error("domain {name}: the vm did not boot: {message} (console {log}: {console})")]
    Boot {
        name: String,
        message: String,
        console: String,
        log: PathBuf,
    },
    /// A failure injected into the [`FakeBackend`].
    #[error("domain {name}: {message} (injected by the fake backend)")]
    Injected { name: String, message: String },
}

impl DomainError {
    fn io(name: &str, what: &'static str, path: &Path, error: io::Error) -> Self {
        Self::Io {
            name: name.to_owned(),
            what,
            path: path.to_owned(),
            error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn spec() -> ContainerSpec {
        ContainerSpec {
            name: "pabx-1".into(),
            router_netns: Some("/run/netns/wuos.demo.r1".into()),
            netns_name: "wuos.demo.r1.pabx-1".into(),
            netns_dir: "/run/netns".into(),
            cgroup_root: "/sys/fs/cgroup".into(),
            cgroup: "wuos/demo/r1/services/pabx-1".into(),
            cpus: Some(0.5),
            cpuset: None,
            cpu_weight: None,
            memory: Some(64 << 20),
            net: Some(ContainerNet {
                host_if: "d-pabx-1".into(),
                dom_if: "eth0".into(),
                host_addr: Ipv4Addr::new(10, 200, 0, 1),
                dom_addr: Ipv4Addr::new(10, 200, 0, 2),
                prefix_len: 30,
                routes_via_host: true,
                vips: Vec::new(),
            }),
            argv: vec!["sleep".into(), "100".into()],
            env: vec![],
            run_dir: "/run/wuos/demo/r1/pabx-1".into(),
            init_exe: "/usr/bin/wuosd".into(),
            backend: BackendKind::Container,
        }
    }

    #[test]
    fn a_good_spec_validates_and_names_its_files() {
        let s = spec();
        s.validate().unwrap();
        assert_eq!(s.netns_path(), Path::new("/run/netns/wuos.demo.r1.pabx-1"));
        assert_eq!(s.log_path(), Path::new("/run/wuos/demo/r1/pabx-1/output.log"));
    }

    #[test]
    fn bad_specs_say_what_to_fix() {
        type Change = Box<dyn Fn(&mut ContainerSpec)>;
        let cases: Vec<(Change, &str)> = vec![
            (Box::new(|s| s.name = "PABX".into()), "a-z, 0-9"),
            (Box::new(|s| s.name = "x".repeat(25)), "1 to 24"),
            (Box::new(|s| s.cgroup = "wuos/../etc".into()), "relative path"),
            (Box::new(|s| s.cgroup = "/wuos/x".into()), "relative path"),
            (Box::new(|s| s.netns_name = "a/b".into()), "plain file name"),
            (Box::new(|s| s.argv = vec![String::new()]), "argv[0]"),
            (Box::new(|s| s.cpus = Some(0.0)), "cpus"),
            (Box::new(|s| s.cpuset = Some(vec![])), "cpuset"),
            (Box::new(|s| s.cpu_weight = Some(0)), "cpu_weight"),
            (Box::new(|s| s.memory = Some(1024)), "4 MiB"),
            (Box::new(|s| s.run_dir = "rel".into()), "absolute"),
            (Box::new(|s| s.env = vec![("A=B".into(), "c".into())]), "environment"),
            (
                Box::new(|s| s.net.as_mut().unwrap().host_if = "much-too-long-name".into()),
                "host_if",
            ),
            (Box::new(|s| s.net.as_mut().unwrap().prefix_len = 33), "prefix_len"),
            (
                Box::new(|s| {
                    let n = s.net.as_mut().unwrap();
                    n.dom_addr = n.host_addr;
                }),
                "both",
            ),
        ];
        for (change, needle) in cases {
            let mut s = spec();
            change(&mut s);
            let err = s.validate().unwrap_err().to_string();
            assert!(err.contains(needle), "expected {needle:?} in: {err}");
            assert!(err.starts_with("domain "), "errors name the domain: {err}");
        }
    }
}
