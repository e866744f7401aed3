//! `domain-init`: the first program of every domain process. The backend spawns
//!
//! ```text
//! INIT_EXE domain-init --cgroup-root R --cgroup C --netns FILE --ro-root --run-dir D --status-stdin -- ARGV…
//! ```
//!
//! and this program, single-threaded (`setns`/`unshare(CLONE_NEWNS)` act on the calling thread and
//! the latter refuses a shared `fs_struct`), in order:
//! 1. starts a new session (`setsid`): the daemon's terminal signals and restarts leave it alone;
//! 2. joins the cgroup (its pid into `cgroup.procs` of every hierarchy) — everything after is
//!    charged to the domain;
//! 3. enters the domain's network namespace;
//! 4. with `--ro-root`: a private mount namespace (`unshare(CLONE_NEWNS)`, `/` made `MS_REC |
//!    MS_PRIVATE` so nothing propagates back to the host), then every mount read-only in one
//!    call — `mount_setattr("/", AT_RECURSIVE, MOUNT_ATTR_RDONLY)` (Linux ≥ 5.12). No bind of `/`
//!    over itself is needed: in the new namespace every mount is already a private copy, and the
//!    read-only flag is a per-mount flag, so the host's mounts stay writable. Then
//!    `/proc/sys/net` is made writable again (it shows the domain's own namespace), fresh tmpfs
//!    are mounted on `/tmp`, `/run` and `/dev/shm` (charged to the domain's memory cgroup), and
//!    the directory of this program (the wuos tools) is bound back read-only when a tmpfs hides it;
//!    `run_dir` is bind-mounted writable (through an fd opened before `/run` was covered, so a
//!    run_dir under `/run` or `/tmp` works too; a bind copies the read-only flag of its source
//!    mount, so it is cleared on the copy, as for `/proc/sys/net`);
//! 5. restores SIGPIPE to its default (the Rust runtime ignores it, and ignored signals survive
//!    `exec`), and `execvp`s the command with the environment it was given.
//!
//! With `--status-stdin`, stdin is a pipe to the backend: the program keeps a close-on-exec copy,
//! puts `/dev/null` on stdin, and on failure writes the error text into the pipe. A successful
//! `exec` closes the pipe, which is how the backend knows the command runs.
//!
//! **Parked** (`--parked`, for the daemon's idle pool): after step 4 the program opens the FIFO
//! `run_dir/domain.command` (made by the backend) for reading, closes the status pipe — the
//! domain is ready, and usually frozen by the backend right after — and waits for a command:
//! [`encode_command`]'s argv and environment, written by the backend, which then reads the
//! outcome from the FIFO `run_dir/domain.status` (opened close-on-exec: EOF without text once
//! the command is `exec`ed, the error text otherwise). The command is searched in the `PATH` of
//! its own environment.
//!
//! `/proc` is not remounted: the domain shares the host's pid namespace.

// `mount_setattr` and resetting SIGPIPE have no safe wrapper in nix: `unsafe` (denied crate-wide)
// is allowed here, and every block carries a SAFETY comment.
#![allow(unsafe_code)]
#![warn(clippy::undocumented_unsafe_blocks)]

use std::convert::Infallible;
use std::ffi::{CStr, CString, OsString};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use nix::mount::{MsFlags, mount};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sched::{CloneFlags, setns, unshare};

use super::DomainError;
use crate::cgroup::CgroupFs;

/// The subcommand under which a binary exposes [`main_with`] (`wuosd domain-init …`).
pub const SUBCOMMAND: &str = "domain-init";
/// FIFO in `run_dir` on which a parked domain-init waits for its command.
pub const COMMAND_FIFO: &str = "domain.command";
/// FIFO in `run_dir` on which a parked domain-init reports the outcome of its command.
pub const STATUS_FIFO: &str = "domain.status";

/// The command line of `domain-init`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InitArgs {
    /// The domain's network namespace file; `None`: stay in the current one.
    pub netns: Option<PathBuf>,
    pub cgroup_root: PathBuf,
    /// The domain's cgroup, relative to each hierarchy.
    pub cgroup: String,
    /// Private mount namespace with a read-only `/` and fresh `/tmp`, `/run`, `/dev/shm`.
    pub ro_root: bool,
    /// Bind-mounted writable into the domain (with `ro_root`).
    pub run_dir: Option<PathBuf>,
    /// Report setup errors through stdin (a pipe from the backend); see the module docs.
    pub status_stdin: bool,
    /// Wait for the command on `run_dir/domain.command` instead of taking it from `argv`
    /// (needs `run_dir`); see the module docs.
    pub parked: bool,
    /// The command and its arguments (empty when parked).
    pub argv: Vec<OsString>,
}

impl InitArgs {
    /// Parses the arguments that follow `domain-init`.
    pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Self, DomainError> {
        let mut a = Self::default();
        let mut it = args.into_iter();
        let mut cgroup_root = None;
        let mut cgroup = None;
        while let Some(arg) = it.next() {
            let mut value = |flag: &str| {
                it.next()
                    .ok_or_else(|| DomainError::InitUsage(format!("{flag} needs a value")))
            };
            match arg.to_str() {
                Some("--netns") => a.netns = Some(value("--netns")?.into()),
                Some("--cgroup-root") => cgroup_root = Some(PathBuf::from(value("--cgroup-root")?)),
                Some("--cgroup") => {
                    let v = value("--cgroup")?;
                    cgroup = Some(
                        v.into_string()
                            .map_err(|_| DomainError::InitUsage("--cgroup must be UTF-8".into()))?,
                    );
                }
                Some("--run-dir") => a.run_dir = Some(value("--run-dir")?.into()),
                Some("--ro-root") => a.ro_root = true,
                Some("--status-stdin") => a.status_stdin = true,
                Some("--parked") => a.parked = true,
                Some("--") => {
                    a.argv = it.collect();
                    break;
                }
                _ => {
                    return Err(DomainError::InitUsage(format!(
                        "unexpected argument {:?}",
                        arg.to_string_lossy()
                    )));
                }
            }
        }
        a.cgroup_root = cgroup_root.ok_or_else(|| DomainError::InitUsage("--cgroup-root is required".into()))?;
        a.cgroup = cgroup.ok_or_else(|| DomainError::InitUsage("--cgroup is required".into()))?;
        if a.parked {
            if a.run_dir.is_none() {
                return Err(DomainError::InitUsage(
                    "--parked needs --run-dir (its command FIFO is there)".into(),
                ));
            }
            if !a.argv.is_empty() {
                return Err(DomainError::InitUsage(
                    "--parked takes its command from the FIFO, not after --".into(),
                ));
            }
        } else if a.argv.is_empty() {
            return Err(DomainError::InitUsage("no command after --".into()));
        }
        Ok(a)
    }

    /// The arguments that [`Self::parse`] reads back (without the `domain-init` subcommand).
    pub fn to_args(&self) -> Vec<OsString> {
        let mut v: Vec<OsString> = vec![
            "--cgroup-root".into(),
            self.cgroup_root.clone().into(),
            "--cgroup".into(),
            self.cgroup.clone().into(),
        ];
        if let Some(n) = &self.netns {
            v.push("--netns".into());
            v.push(n.clone().into());
        }
        if self.ro_root {
            v.push("--ro-root".into());
        }
        if let Some(d) = &self.run_dir {
            v.push("--run-dir".into());
            v.push(d.clone().into());
        }
        if self.status_stdin {
            v.push("--status-stdin".into());
        }
        if self.parked {
            v.push("--parked".into());
        }
        v.push("--".into());
        v.extend(self.argv.iter().cloned());
        v
    }
}

/// `main` of a binary whose first argument may be `domain-init`: parses the rest, runs, and on
/// failure prints the error and exits with 126.
pub fn main_from_args() -> ! {
    let mut args = std::env::args_os().skip(1).peekable();
    if args.peek().is_some_and(|a| a == SUBCOMMAND) {
        args.next();
    }
    main_with(args)
}

/// Runs `domain-init` with the arguments that follow the subcommand; never returns. For a
/// daemon: `if args[1] == "domain-init" { init::main_with(args[2..]) }` before its own parsing.
pub fn main_with(args: impl IntoIterator<Item = OsString>) -> ! {
    let args: Vec<OsString> = args.into_iter().collect();
    let wants_status = args.iter().take_while(|a| *a != "--").any(|a| a == "--status-stdin");
    let err = match InitArgs::parse(args) {
        Ok(a) => match run(a) {
            Ok(never) => match never {},
            Err(e) => e,
        },
        Err(e) => {
            if wants_status && let Ok(mut pipe) = take_status_pipe() {
                let _ = pipe.write_all(e.to_string().as_bytes());
            }
            e
        }
    };
    eprintln!("{err}");
    std::process::exit(126)
}

/// Enters the domain and `exec`s its command. Returns only on failure, after reporting the error
/// through the status pipe when `status_stdin` is set. Must run in a single-threaded process.
pub fn run(args: InitArgs) -> Result<Infallible, DomainError> {
    let mut status = if args.status_stdin {
        Some(take_status_pipe().map_err(|error| DomainError::InitStep {
            step: "take the status pipe from",
            path: "stdin".into(),
            error,
        })?)
    } else {
        None
    };
    let err = match enter_and_exec(&args, &mut status) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    if let Some(mut pipe) = status {
        let _ = pipe.write_all(err.to_string().as_bytes());
    }
    Err(err)
}

/// Keeps a close-on-exec copy of stdin (the status pipe) and puts `/dev/null` on stdin.
fn take_status_pipe() -> io::Result<File> {
    let pipe = io::stdin().as_fd().try_clone_to_owned()?;
    let null = File::open("/dev/null")?;
    nix::unistd::dup2_stdin(null).map_err(io::Error::from)?;
    Ok(File::from(pipe))
}

fn step(step: &'static str, path: &Path) -> impl FnOnce(io::Error) -> DomainError {
    let path = path.to_owned();
    move |error| DomainError::InitStep { step, path, error }
}

fn nix_step(s: &'static str, path: &Path) -> impl FnOnce(nix::errno::Errno) -> DomainError {
    let f = step(s, path);
    move |e| f(io::Error::from(e))
}

/// `status` is where errors are reported: the stdin pipe, then (parked) the status FIFO.
fn enter_and_exec(a: &InitArgs, status: &mut Option<File>) -> Result<Infallible, DomainError> {
    // EPERM: already a process-group leader (started by hand from a shell); keep going.
    let _ = nix::unistd::setsid();

    let cg = CgroupFs::detect(&a.cgroup_root).map_err(|error| DomainError::Cgroup {
        name: a.cgroup.rsplit('/').next().unwrap_or_default().to_owned(),
        error,
    })?;
    cg.join(&a.cgroup, std::process::id())
        .map_err(|error| DomainError::Cgroup {
            name: a.cgroup.rsplit('/').next().unwrap_or_default().to_owned(),
            error,
        })?;

    if let Some(ns) = &a.netns {
        let file = File::open(ns).map_err(step("open the network namespace", ns))?;
        setns(&file, CloneFlags::CLONE_NEWNET).map_err(nix_step("enter the network namespace", ns))?;
    }

    if a.ro_root {
        private_read_only_root(a.run_dir.as_deref())?;
    } else if let Some(d) = &a.run_dir {
        fs::create_dir_all(d).map_err(step("create the run directory", d))?;
    }

    // SAFETY: SIG_DFL installs no handler; this process is single-threaded and about to exec.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };

    if a.parked {
        let run_dir = a.run_dir.as_deref().unwrap_or(Path::new("/"));
        let (argv, env) = wait_for_command(run_dir, status)?;
        return exec_with_env(&argv, &env);
    }
    let argv = cstrings(&a.argv)?;
    let cmd = Path::new(a.argv[0].as_os_str());
    nix::unistd::execvp(&argv[0], &argv).map_err(nix_step("execute", cmd))
}

fn cstrings(v: &[OsString]) -> Result<Vec<CString>, DomainError> {
    v.iter()
        .map(|s| CString::new(s.clone().into_vec()))
        .collect::<Result<_, _>>()
        .map_err(|_| DomainError::InitUsage("the command contains a NUL byte".into()))
}

/// Parked: opens the command FIFO, tells the backend it is ready (closes the status pipe), waits
/// for the command, then makes the status FIFO the place to report errors.
fn wait_for_command(run_dir: &Path, status: &mut Option<File>) -> Result<(Vec<OsString>, Vec<OsString>), DomainError> {
    use std::os::unix::fs::OpenOptionsExt;
    let cmd_path = run_dir.join(COMMAND_FIFO);
    // Non-blocking, so the open does not wait for a writer: the reader exists from now on, and
    // the backend's non-blocking open for writing succeeds whenever it comes.
    let mut fifo = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&cmd_path)
        .map_err(step("open the command FIFO", &cmd_path))?;
    // Ready: the backend's start_parked returns (and the backend usually freezes us here).
    drop(status.take());
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let mut fds = [PollFd::new(fifo.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            // Without an event a read could see "no writer yet" as EOF: wait again.
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(nix_step("wait on the command FIFO", &cmd_path)(e)),
        }
        match fifo.read(&mut buf) {
            // EOF: a writer came and closed (poll reports no hang-up before a writer opened).
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {}
            Err(e) => return Err(step("read the command FIFO", &cmd_path)(e)),
        }
    }
    let status_path = run_dir.join(STATUS_FIFO);
    // The backend holds the reader open while it waits; without one (it gave up) report nothing.
    *status = fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&status_path)
        .ok();
    decode_command(&raw)
}

/// `execve` with `env`, the command searched in that environment's `PATH` (not this process's).
fn exec_with_env(argv: &[OsString], env: &[OsString]) -> Result<Infallible, DomainError> {
    let cmd = Path::new(argv[0].as_os_str());
    let path_var = env
        .iter()
        .find_map(|e| e.as_bytes().strip_prefix(b"PATH="))
        .map(|p| std::ffi::OsStr::from_bytes(p).to_owned())
        .unwrap_or_else(|| super::DEFAULT_PATH.into());
    let resolved: PathBuf = if argv[0].as_bytes().contains(&b'/') {
        cmd.to_owned()
    } else {
        std::env::split_paths(&path_var)
            .map(|d| d.join(cmd))
            .find(|p| nix::unistd::access(p.as_path(), nix::unistd::AccessFlags::X_OK).is_ok() && p.is_file())
            .ok_or_else(|| DomainError::InitStep {
                step: "find in PATH the command",
                path: cmd.to_owned(),
                error: io::Error::from(io::ErrorKind::NotFound),
            })?
    };
    let file = CString::new(resolved.as_os_str().as_bytes())
        .map_err(|_| DomainError::InitUsage("the command contains a NUL byte".into()))?;
    nix::unistd::execve(&file, &cstrings(argv)?, &cstrings(env)?).map_err(nix_step("execute", &resolved))
}

/// The command of a parked domain as written to its FIFO: the number of arguments, the
/// arguments, the number of environment entries, the `KEY=VALUE` entries — each NUL-terminated.
pub fn encode_command(argv: &[String], env: &[(String, String)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut field = |s: &str| {
        out.extend_from_slice(s.as_bytes());
        out.push(0);
    };
    field(&argv.len().to_string());
    argv.iter().for_each(|a| field(a));
    field(&env.len().to_string());
    env.iter().for_each(|(k, v)| field(&format!("{k}={v}")));
    out
}

/// Reads back [`encode_command`]: (argv, `KEY=VALUE` entries).
pub fn decode_command(raw: &[u8]) -> Result<(Vec<OsString>, Vec<OsString>), DomainError> {
    let bad = |why: &str| DomainError::InitUsage(format!("malformed command from the FIFO: {why}"));
    let body = raw.strip_suffix(&[0]).ok_or_else(|| bad("not NUL-terminated"))?;
    let mut fields = body.split(|&b| b == 0);
    let mut count = |what: &str| -> Result<usize, DomainError> {
        let f = fields.next().ok_or_else(|| bad(what))?;
        std::str::from_utf8(f)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad(what))
    };
    let n = count("no argument count")?;
    let argv: Vec<OsString> = (&mut fields)
        .take(n)
        .map(|f| std::ffi::OsStr::from_bytes(f).to_owned())
        .collect();
    if argv.len() != n || n == 0 {
        return Err(bad("no command or too few arguments"));
    }
    let m = {
        let f = fields.next().ok_or_else(|| bad("no environment count"))?;
        std::str::from_utf8(f)
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
            .ok_or_else(|| bad("no environment count"))?
    };
    let env: Vec<OsString> = (&mut fields)
        .take(m)
        .map(|f| std::ffi::OsStr::from_bytes(f).to_owned())
        .collect();
    if env.len() != m || fields.next().is_some() {
        return Err(bad("wrong number of environment entries"));
    }
    Ok((argv, env))
}

fn private_read_only_root(run_dir: Option<&Path>) -> Result<(), DomainError> {
    let root = Path::new("/");
    unshare(CloneFlags::CLONE_NEWNS).map_err(nix_step("unshare the mount namespace at", root))?;
    mount(
        None::<&str>,
        root,
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(nix_step("make the mounts private under", root))?;
    // Opened before /run and /tmp are covered by fresh tmpfs: the bind source stays reachable.
    let run_dir_fd = match run_dir {
        Some(d) => Some((d, File::open(d).map_err(step("open the run directory", d))?)),
        None => None,
    };
    // The directory of the wuos binaries (this program's), which domains' commands may use
    // (`wuos hog`, `wuos echo`); kept visible, read-only, if the fresh tmpfs would hide it.
    let hidden = |d: &Path| ["/tmp", "/run", "/dev/shm"].iter().any(|t| d.starts_with(t));
    let tools_fd = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
        .filter(|d| hidden(d) && run_dir.is_none_or(|r| !d.starts_with(r)))
        .and_then(|d| File::open(&d).ok().map(|f| (d, f)));

    mount_setattr(c"/", libc::AT_RECURSIVE as libc::c_uint, libc::MOUNT_ATTR_RDONLY, 0)
        .map_err(step("make every mount read-only under", root))?;

    let sys_net = Path::new("/proc/sys/net");
    if sys_net.is_dir() {
        mount(Some(sys_net), sys_net, None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .map_err(nix_step("bind", sys_net))?;
        mount_setattr(c"/proc/sys/net", 0, 0, libc::MOUNT_ATTR_RDONLY).map_err(step("make writable", sys_net))?;
    }

    for (dir, mode) in [("/tmp", "mode=1777"), ("/run", "mode=0755"), ("/dev/shm", "mode=1777")] {
        let dir = Path::new(dir);
        if dir.is_dir() {
            mount(
                Some("tmpfs"),
                dir,
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                Some(mode),
            )
            .map_err(nix_step("mount a tmpfs on", dir))?;
        }
    }

    if let Some((dir, fd)) = run_dir_fd {
        // Under /tmp or /run the directory must be made again on the fresh tmpfs; elsewhere it
        // exists already on the read-only tree.
        fs::create_dir_all(dir).map_err(step("create the mount point of the run directory", dir))?;
        let source = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
        mount(Some(&source), dir, None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .map_err(nix_step("bind the run directory onto", dir))?;
        // A bind copies the source mount's flags, read-only included: clear it on the copy.
        let target = CString::new(dir.as_os_str().as_bytes())
            .map_err(|_| DomainError::InitUsage("the run directory contains a NUL byte".into()))?;
        mount_setattr(&target, 0, 0, libc::MOUNT_ATTR_RDONLY).map_err(step("make writable", dir))?;
    }
    if let Some((dir, fd)) = tools_fd {
        fs::create_dir_all(&dir).map_err(step("create the mount point of the tools directory", &dir))?;
        let source = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
        // The bind keeps the source's read-only flag: the tools stay read-only in the domain.
        mount(Some(&source), &dir, None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .map_err(nix_step("bind the tools directory onto", &dir))?;
    }
    nix::unistd::chdir(root).map_err(nix_step("change directory to", root))?;
    Ok(())
}

/// `mount_setattr(2)` on `path` (relative to the current directory's mount namespace).
fn mount_setattr(path: &CStr, flags: libc::c_uint, set: u64, clear: u64) -> io::Result<()> {
    let attr = libc::mount_attr {
        attr_set: set,
        attr_clr: clear,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: `path` is NUL-terminated and `attr` a fully initialised `mount_attr` that lives
    // across the call; its exact size is passed, and the kernel only reads both.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            path.as_ptr(),
            flags,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if r == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ENOSYS) {
        return Err(io::Error::other(format!(
            "{e}: mount_setattr needs Linux 5.12 or later (path {})",
            Path::new(std::ffi::OsStr::from_bytes(path.to_bytes())).display()
        )));
    }
    Err(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn arguments_round_trip() {
        let a = InitArgs {
            netns: Some("/run/netns/wuos.x.r1.d".into()),
            cgroup_root: "/sys/fs/cgroup".into(),
            cgroup: "wuos/x/r1/d".into(),
            ro_root: true,
            run_dir: Some("/run/wuos/d".into()),
            status_stdin: true,
            parked: false,
            argv: os(&["sh", "-c", "echo -- --ro-root"]),
        };
        assert_eq!(InitArgs::parse(a.to_args()).unwrap(), a);
        let minimal = InitArgs {
            cgroup_root: "/c".into(),
            cgroup: "d".into(),
            argv: os(&["true"]),
            ..Default::default()
        };
        assert_eq!(InitArgs::parse(minimal.to_args()).unwrap(), minimal);
    }

    #[test]
    fn parked_arguments_need_a_run_dir_and_no_command() {
        let parked = InitArgs {
            cgroup_root: "/c".into(),
            cgroup: "d".into(),
            run_dir: Some("/run/wuos/d".into()),
            parked: true,
            ..Default::default()
        };
        assert_eq!(InitArgs::parse(parked.to_args()).unwrap(), parked);
        let err = |v: &[&str]| InitArgs::parse(os(v)).unwrap_err().to_string();
        assert!(err(&["--cgroup-root", "/c", "--cgroup", "d", "--parked", "--"]).contains("needs --run-dir"));
        assert!(
            err(&[
                "--cgroup-root",
                "/c",
                "--cgroup",
                "d",
                "--parked",
                "--run-dir",
                "/r",
                "--",
                "x"
            ])
            .contains("not after --")
        );
    }

    #[test]
    fn commands_round_trip_through_the_fifo_format() {
        let argv = vec!["sh".to_string(), "-c".into(), String::new(), "a\nb".into()];
        let env = vec![("PATH".to_string(), "/bin".to_string()), ("E".into(), "x=y".into())];
        let raw = encode_command(&argv, &env);
        let (a, e) = decode_command(&raw).unwrap();
        assert_eq!(
            a,
            argv.iter().map(OsString::from).collect::<Vec<_>>(),
            "empty and multi-line arguments survive"
        );
        assert_eq!(e, vec![OsString::from("PATH=/bin"), OsString::from("E=x=y")]);
        assert!(decode_command(&raw[..raw.len() - 1]).is_err(), "truncated");
        assert!(decode_command(b"0\x000\x00").is_err(), "no command");
        assert!(
            decode_command(b"1\x00x\x002\x00A=1\x00").is_err(),
            "missing environment entry"
        );
    }

    #[test]
    fn bad_arguments_say_what_is_missing() {
        let err = |v: &[&str]| InitArgs::parse(os(v)).unwrap_err().to_string();
        assert!(err(&["--cgroup", "d", "--", "x"]).contains("--cgroup-root is required"));
        assert!(err(&["--cgroup-root", "/c", "--cgroup", "d"]).contains("no command"));
        assert!(err(&["--cgroup-root"]).contains("needs a value"));
        assert!(err(&["--bogus"]).contains("unexpected argument \"--bogus\""));
        assert!(err(&["--bogus"]).contains("usage: domain-init"));
    }
}
