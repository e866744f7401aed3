//! The container backend: a domain is a cgroup (limits, pinning, weight, freezer), a network
//! namespace with a veth to its router, and processes launched through `domain-init` (see
//! [`super::init`]) into a private mount namespace with a read-only root.
//!
//! The backend keeps no state of its own: everything is read back from the cgroup filesystem,
//! `/proc` and the domain's `run_dir`, so a new instance (a restarted daemon) sees the same
//! domains. The only thing a restart loses is the exit code of a main process that was started by
//! the earlier daemon (only the parent can reap it).

use std::fs::{self, OpenOptions};
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill};
use nix::sys::stat::Mode;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{Pid, mkfifo};

use super::init::{COMMAND_FIFO, InitArgs, STATUS_FIFO, SUBCOMMAND, encode_command};
use super::{ContainerSpec, DEFAULT_PATH, DomainBackend, DomainError, EXIT_FILE, PID_FILE, Status, Usage, net};
use crate::cgroup::{CgroupError, CgroupFs, FreezeState, Limits, Version};
use crate::process;

/// The real backend. Cheap to make; holds only paths and timeouts.
#[derive(Clone, Debug)]
pub struct ContainerBackend {
    proc_root: PathBuf,
    /// How long `domain-init` may take to `exec` the command.
    pub init_timeout: Duration,
    /// How long the freezer may take to settle.
    pub freeze_timeout: Duration,
    /// The SIGTERM grace of `destroy` on a domain that still runs.
    pub destroy_grace: Duration,
}

impl Default for ContainerBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl ContainerBackend {
    /// A backend reading processes under `/proc`.
    pub fn new() -> Self {
        Self::with_proc_root("/proc")
    }

    /// A backend reading processes under `proc_root`.
    pub fn with_proc_root(proc_root: impl Into<PathBuf>) -> Self {
        Self {
            proc_root: proc_root.into(),
            init_timeout: Duration::from_secs(10),
            freeze_timeout: Duration::from_secs(5),
            destroy_grace: Duration::from_secs(1),
        }
    }

    pub(crate) fn proc_root(&self) -> &Path {
        &self.proc_root
    }

    pub(crate) fn cgroups(&self, spec: &ContainerSpec) -> Result<CgroupFs, DomainError> {
        CgroupFs::detect(&spec.cgroup_root).map_err(cg_err(&spec.name))
    }

    /// Live (non-zombie) processes of the domain's cgroup and its descendants.
    pub(crate) fn live_procs(&self, cg: &CgroupFs, spec: &ContainerSpec) -> Vec<i32> {
        cg.procs(&spec.cgroup)
            .into_iter()
            .filter(|&p| process::alive(&self.proc_root, p))
            .collect()
    }

    pub(crate) fn make_cgroup(&self, cg: &CgroupFs, spec: &ContainerSpec) -> Result<(), DomainError> {
        cg.create(&spec.cgroup, &Limits::default())
            .map_err(cg_err(&spec.name))?;
        self.apply_limits(cg, spec)
    }

    /// Reaps the main process if it is this process's child and has exited, recording its code
    /// in `run_dir` (and dropping the pid file, so a reused pid is never waited for). Returns
    /// whether the main process is our child that has not exited yet.
    fn reap(&self, spec: &ContainerSpec) -> bool {
        let Some(pid) = read_pid(&spec.pid_path()) else {
            return false;
        };
        let code = match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => code,
            Ok(WaitStatus::Signaled(_, sig, _)) => 128 + sig as i32,
            Ok(WaitStatus::StillAlive) => return true,
            // Not our child (started by an earlier daemon): nothing to record.
            _ => return false,
        };
        let _ = fs::write(spec.exit_path(), code.to_string());
        let _ = fs::remove_file(spec.pid_path());
        false
    }

    /// Waits until domain-init closes its end of `pipe` (EOF: the command is `exec`ed, or the
    /// init is parked) and returns what it wrote before (error text, empty on success). Handles
    /// non-blocking FIFOs; gives up at `deadline`, or when `pid` has died without ever opening
    /// its end (a FIFO reports no hang-up then).
    fn await_report(
        &self,
        spec: &ContainerSpec,
        pipe: &mut (impl Read + AsFd),
        pid: i32,
        deadline: Instant,
    ) -> Result<Vec<u8>, DomainError> {
        let mut report = Vec::new();
        let mut buf = [0u8; 1024];
        let mut dead_seen = false;
        let what = "read the report of domain-init from";
        let pipe_path = Path::new("its status pipe");
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(DomainError::InitTimeout {
                    name: spec.name.clone(),
                    waited: self.init_timeout,
                });
            }
            let slice = left.min(Duration::from_millis(50));
            let mut fds = [PollFd::new(pipe.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::try_from(slice).unwrap_or(PollTimeout::MAX)) {
                Ok(0) => {
                    // Dead (or a zombie) without closing its end: a FIFO it never opened. One
                    // more round, in case the end closed just as it died.
                    if !process::alive(&self.proc_root, pid) {
                        if dead_seen {
                            return Err(DomainError::Init {
                                name: spec.name.clone(),
                                message: format!("domain-init (pid {pid}) died without a report"),
                                log: spec.log_path(),
                            });
                        }
                        dead_seen = true;
                    }
                    continue;
                }
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(DomainError::io(&spec.name, what, pipe_path, e.into())),
            }
            match pipe.read(&mut buf) {
                Ok(0) => return Ok(report),
                Ok(n) => report.extend_from_slice(&buf[..n]),
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {}
                Err(e) => return Err(DomainError::io(&spec.name, what, pipe_path, e)),
            }
        }
    }

    /// Applies the spec's limits, weight and cores to an existing cgroup.
    fn apply_limits(&self, cg: &CgroupFs, spec: &ContainerSpec) -> Result<(), DomainError> {
        let limits = Limits {
            cpus: spec.cpus,
            memory: spec.memory,
        };
        cg.set_limits(&spec.cgroup, &limits).map_err(cg_err(&spec.name))?;
        cg.set_cpu_weight(&spec.cgroup, spec.cpu_weight)
            .map_err(cg_err(&spec.name))?;
        if spec.cpuset.is_some() || *cg.version() == Version::V1 {
            cg.set_cpuset(&spec.cgroup, spec.cpuset.as_deref())
                .map_err(cg_err(&spec.name))?;
        }
        Ok(())
    }

    /// Spawns domain-init for `spec`: with its command, or parked (waiting for one on the
    /// command FIFO). Returns once the command is `exec`ed or the init is parked.
    fn launch(&self, spec: &ContainerSpec, parked: bool) -> Result<i32, DomainError> {
        self.launch_with(spec, parked, true)
    }

    /// [`launch`](Self::launch), with or without the private read-only mount namespace (the
    /// `vm` backend runs QEMU, the hypervisor, with the host's view).
    pub(crate) fn launch_with(&self, spec: &ContainerSpec, parked: bool, ro_root: bool) -> Result<i32, DomainError> {
        spec.validate()?;
        let cg = self.cgroups(spec)?;
        let ns_path = spec.netns_path();
        if !cg.exists(&spec.cgroup) || !ns_path.exists() {
            return Err(DomainError::NotCreated {
                name: spec.name.clone(),
                path: if ns_path.exists() {
                    spec.cgroup_root.join(&spec.cgroup)
                } else {
                    ns_path
                },
            });
        }
        self.reap(spec);
        if let Some(&pid) = self.live_procs(&cg, spec).first() {
            return Err(DomainError::AlreadyRunning {
                name: spec.name.clone(),
                pid,
            });
        }
        // A domain paused and then emptied (its processes exited) is still frozen: domain-init
        // would freeze on joining it.
        if cg
            .freeze_state(&spec.cgroup)
            .is_some_and(|st| st != FreezeState::Thawed)
        {
            cg.thaw(&spec.cgroup, self.freeze_timeout).map_err(cg_err(&spec.name))?;
        }
        let _ = fs::remove_file(spec.pid_path());
        let _ = fs::remove_file(spec.exit_path());
        fs::create_dir_all(&spec.run_dir)
            .map_err(|e| DomainError::io(&spec.name, "create the run directory", &spec.run_dir, e))?;
        for fifo in [COMMAND_FIFO, STATUS_FIFO] {
            let path = spec.run_dir.join(fifo);
            let _ = fs::remove_file(&path);
            if parked {
                mkfifo(&path, Mode::from_bits_truncate(0o600))
                    .map_err(|e| DomainError::io(&spec.name, "make the FIFO", &path, e.into()))?;
            }
        }
        let log_path = spec.log_path();
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| DomainError::io(&spec.name, "open the log", &log_path, e))?;
        let log2 = log
            .try_clone()
            .map_err(|e| DomainError::io(&spec.name, "duplicate the log", &log_path, e))?;
        let (reader, writer) =
            io::pipe().map_err(|e| DomainError::io(&spec.name, "make a status pipe for", &spec.init_exe, e))?;

        let args = InitArgs {
            netns: Some(ns_path),
            cgroup_root: spec.cgroup_root.clone(),
            cgroup: spec.cgroup.clone(),
            ro_root,
            run_dir: Some(spec.run_dir.clone()),
            status_stdin: true,
            parked,
            argv: if parked {
                Vec::new()
            } else {
                spec.argv.iter().map(Into::into).collect()
            },
        };
        let mut cmd = Command::new(&spec.init_exe);
        cmd.arg(SUBCOMMAND)
            .args(args.to_args())
            .env_clear()
            .envs(with_default_path(&spec.env))
            .current_dir("/")
            .stdin(Stdio::from(writer))
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2));
        let spawned = cmd.spawn();
        // The write end must be closed here, or the pipe never reports EOF.
        drop(cmd);
        let mut child = spawned.map_err(|error| DomainError::Spawn {
            name: spec.name.clone(),
            exe: spec.init_exe.clone(),
            error,
        })?;
        let pid = child.id() as i32;
        let deadline = Instant::now() + self.init_timeout;
        let mut reader = reader;
        let report = match self.await_report(spec, &mut reader, pid, deadline) {
            Ok(r) => r,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        };
        if !report.is_empty() {
            let _ = child.wait();
            return Err(DomainError::Init {
                name: spec.name.clone(),
                message: String::from_utf8_lossy(&report).trim().to_string(),
                log: spec.log_path(),
            });
        }
        let pid_path = spec.pid_path();
        fs::write(&pid_path, pid.to_string())
            .map_err(|e| DomainError::io(&spec.name, "write the pid file", &pid_path, e))?;
        // Dropping `child` neither kills nor waits: `reap` collects the exit code later.
        Ok(pid)
    }

    /// SIGKILL (v2: `cgroup.kill`) until the cgroup is empty; forks racing the kill are caught by
    /// the next round.
    fn kill_all(&self, cg: &CgroupFs, spec: &ContainerSpec) -> Result<(), DomainError> {
        let waited = Duration::from_secs(5);
        let deadline = Instant::now() + waited;
        let kill_file = spec.cgroup_root.join(&spec.cgroup).join("cgroup.kill");
        loop {
            let live = self.live_procs(cg, spec);
            if live.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(DomainError::Unkillable {
                    name: spec.name.clone(),
                    pids: live,
                    waited,
                });
            }
            if *cg.version() == Version::V2 && kill_file.exists() {
                let _ = fs::write(&kill_file, "1");
            } else {
                for p in live {
                    let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
                }
            }
            self.reap(spec);
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn remove_everything(&self, spec: &ContainerSpec, cg: Option<&CgroupFs>) -> Result<(), DomainError> {
        let mut first: Option<DomainError> = None;
        if let Some(cg) = cg
            && let Err(error) = cg.destroy(&spec.cgroup, &self.proc_root)
        {
            first.get_or_insert(DomainError::Cgroup {
                name: spec.name.clone(),
                error,
            });
        }
        if let Err(e) = net::remove(spec, &self.proc_root) {
            first.get_or_insert(e);
        }
        for f in [PID_FILE, EXIT_FILE, COMMAND_FIFO, STATUS_FIFO] {
            let _ = fs::remove_file(spec.run_dir.join(f));
        }
        first.map_or(Ok(()), Err)
    }
}

impl DomainBackend for ContainerBackend {
    fn create(&self, spec: &ContainerSpec) -> Result<(), DomainError> {
        spec.validate()?;
        let cg = self.cgroups(spec)?;
        let ns_path = spec.netns_path();
        if ns_path.exists() {
            return Err(DomainError::Exists {
                name: spec.name.clone(),
                what: "network namespace",
                path: ns_path,
            });
        }
        if !self.live_procs(&cg, spec).is_empty() {
            return Err(DomainError::Exists {
                name: spec.name.clone(),
                what: "cgroup with processes",
                path: spec.cgroup_root.join(&spec.cgroup),
            });
        }
        let made = (|| {
            fs::create_dir_all(&spec.run_dir)
                .map_err(|e| DomainError::io(&spec.name, "create the run directory", &spec.run_dir, e))?;
            let _ = fs::remove_file(spec.pid_path());
            let _ = fs::remove_file(spec.exit_path());
            self.make_cgroup(&cg, spec)?;
            net::create(spec, &self.proc_root)
        })();
        if let Err(e) = made {
            // The namespace may be a stranger's only if it existed before: checked above.
            let _ = self.remove_everything(spec, Some(&cg));
            return Err(e);
        }
        Ok(())
    }

    fn start(&self, spec: &ContainerSpec) -> Result<i32, DomainError> {
        if spec.argv.is_empty() {
            return Err(DomainError::InvalidSpec {
                name: spec.name.clone(),
                reason: "argv must name a command to start".into(),
            });
        }
        self.launch(spec, false)
    }

    fn start_parked(&self, spec: &ContainerSpec) -> Result<i32, DomainError> {
        self.launch(spec, true)
    }

    fn run_parked(&self, spec: &ContainerSpec) -> Result<i32, DomainError> {
        spec.validate()?;
        if spec.argv.is_empty() {
            return Err(DomainError::InvalidSpec {
                name: spec.name.clone(),
                reason: "argv must name the command to give the parked domain".into(),
            });
        }
        let cg = self.cgroups(spec)?;
        if !cg.exists(&spec.cgroup) {
            return Err(not_created(spec));
        }
        let not_parked = |reason: String| DomainError::NotParked {
            name: spec.name.clone(),
            reason,
        };
        self.reap(spec);
        let live = self.live_procs(&cg, spec);
        let pid = read_pid(&spec.pid_path())
            .filter(|p| live.contains(p))
            .ok_or_else(|| not_parked("its init is not running".into()))?;
        let cmd_path = spec.run_dir.join(COMMAND_FIFO);
        let status_path = spec.run_dir.join(STATUS_FIFO);
        let deadline = Instant::now() + self.init_timeout;

        self.apply_limits(&cg, spec)?;
        net::add_vips(spec)?;
        // Reader first, so domain-init's non-blocking open for writing finds it.
        let mut status = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&status_path)
            .map_err(|e| not_parked(format!("cannot open {}: {e}", status_path.display())))?;
        let mut command = match OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&cmd_path)
        {
            Ok(f) => f,
            // ENXIO: nobody reads the FIFO: the init has already taken a command, or died.
            Err(e) => return Err(not_parked(format!("cannot open {}: {e}", cmd_path.display()))),
        };
        if cg
            .freeze_state(&spec.cgroup)
            .is_some_and(|st| st != FreezeState::Thawed)
        {
            cg.thaw(&spec.cgroup, self.freeze_timeout).map_err(cg_err(&spec.name))?;
        }
        let raw = encode_command(&spec.argv, &with_default_path(&spec.env));
        write_all_until(&mut command, &raw, deadline)
            .map_err(|e| DomainError::io(&spec.name, "hand the command to the parked init through", &cmd_path, e))?;
        drop(command);
        let report = self.await_report(spec, &mut status, pid, deadline)?;
        let _ = fs::remove_file(&cmd_path);
        let _ = fs::remove_file(&status_path);
        if !report.is_empty() {
            return Err(DomainError::Init {
                name: spec.name.clone(),
                message: String::from_utf8_lossy(&report).trim().to_string(),
                log: spec.log_path(),
            });
        }
        Ok(pid)
    }

    fn pause(&self, spec: &ContainerSpec) -> Result<(), DomainError> {
        let cg = self.cgroups(spec)?;
        if !cg.exists(&spec.cgroup) {
            return Err(not_created(spec));
        }
        if self.live_procs(&cg, spec).is_empty() {
            return Err(DomainError::NotRunning {
                name: spec.name.clone(),
                action: "pause",
            });
        }
        cg.freeze(&spec.cgroup, self.freeze_timeout).map_err(cg_err(&spec.name))
    }

    fn resume(&self, spec: &ContainerSpec) -> Result<(), DomainError> {
        let cg = self.cgroups(spec)?;
        if !cg.exists(&spec.cgroup) {
            return Err(not_created(spec));
        }
        match cg.freeze_state(&spec.cgroup) {
            Some(FreezeState::Thawed) | None => Ok(()),
            Some(_) => cg.thaw(&spec.cgroup, self.freeze_timeout).map_err(cg_err(&spec.name)),
        }
    }

    fn stop(&self, spec: &ContainerSpec, grace: Duration) -> Result<(), DomainError> {
        let cg = self.cgroups(spec)?;
        if !cg.exists(&spec.cgroup) {
            return Ok(());
        }
        // v1 frozen tasks cannot die (not even from SIGKILL) until thawed.
        if cg.freeze_state(&spec.cgroup).is_some_and(|s| s != FreezeState::Thawed) {
            cg.thaw(&spec.cgroup, self.freeze_timeout).map_err(cg_err(&spec.name))?;
        }
        let live = self.live_procs(&cg, spec);
        for &p in &live {
            let _ = kill(Pid::from_raw(p), Signal::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline && !self.live_procs(&cg, spec).is_empty() {
            self.reap(spec);
            std::thread::sleep(Duration::from_millis(5));
        }
        self.kill_all(&cg, spec)?;
        // The main process leaves the cgroup a moment before it becomes a zombie that can be reaped.
        let until = Instant::now() + Duration::from_millis(500);
        while self.reap(spec) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }

    fn destroy(&self, spec: &ContainerSpec) -> Result<(), DomainError> {
        // Without a usable cgroup root the network is still removed; the error is reported after.
        let cg = self.cgroups(spec);
        let stopped = match &cg {
            Ok(_) => self.stop(spec, self.destroy_grace),
            Err(_) => Ok(()),
        };
        let removed = self.remove_everything(spec, cg.as_ref().ok());
        cg.map(drop).and(stopped).and(removed)
    }

    fn status(&self, spec: &ContainerSpec) -> Status {
        let Ok(cg) = self.cgroups(spec) else {
            return Status::Absent;
        };
        if !cg.exists(&spec.cgroup) {
            return Status::Absent;
        }
        self.reap(spec);
        let live = self.live_procs(&cg, spec);
        if live.is_empty() {
            return Status::Exited {
                code: read_pid(&spec.exit_path()),
            };
        }
        let pid = read_pid(&spec.pid_path())
            .filter(|p| live.contains(p))
            .unwrap_or(live[0]);
        match cg.freeze_state(&spec.cgroup) {
            Some(FreezeState::Frozen | FreezeState::Freezing) => Status::Paused { pid },
            _ => Status::Running { pid },
        }
    }

    fn usage(&self, spec: &ContainerSpec) -> Option<Usage> {
        let cg = self.cgroups(spec).ok()?;
        if !cg.exists(&spec.cgroup) {
            return None;
        }
        Some(Usage {
            cpu_ns: cg.cpu_usage_ns(&spec.cgroup)?,
            memory_bytes: cg.memory_usage(&spec.cgroup).unwrap_or(0),
        })
    }
}

fn cg_err(name: &str) -> impl FnOnce(CgroupError) -> DomainError + '_ {
    move |error| DomainError::Cgroup {
        name: name.to_owned(),
        error,
    }
}

fn not_created(spec: &ContainerSpec) -> DomainError {
    DomainError::NotCreated {
        name: spec.name.clone(),
        path: spec.cgroup_root.join(&spec.cgroup),
    }
}

fn read_pid(path: &Path) -> Option<i32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The environment of a domain: the spec's, with `PATH` defaulted.
fn with_default_path(env: &[(String, String)]) -> Vec<(String, String)> {
    let mut env = env.to_vec();
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.push(("PATH".into(), DEFAULT_PATH.into()));
    }
    env
}

/// Writes `data` to a non-blocking FIFO, waiting for room until `deadline`.
fn write_all_until(f: &mut fs::File, mut data: &[u8], deadline: Instant) -> io::Result<()> {
    use std::io::Write;
    while !data.is_empty() {
        match f.write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "the parked init does not read"));
                }
                let mut fds = [PollFd::new(f.as_fd(), PollFlags::POLLOUT)];
                let _ = poll(&mut fds, PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
