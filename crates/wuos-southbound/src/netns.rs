//! Network namespaces, named the way iproute2 names them: a bind mount of the namespace file at
//! `RUN_DIR/NAME` (usually `/run/netns/NAME`), so `ip netns exec` and `ip -n` work on them too.
//!
//! A namespace is created on a dedicated OS thread that `unshare`s, because `setns`/`unshare` act on
//! the calling thread only. The caller passes a closure that runs *inside* the new namespace on that
//! thread (sysctls, opening a netlink socket), which saves a second thread per namespace.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};

/// Errors of namespace operations; each names the namespace file.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("cannot prepare the namespace directory {path}: {source}")]
    RunDir { path: PathBuf, source: io::Error },
    #[error("namespace {path} already exists; remove it first (wuos lab down, or ip netns del)")]
    Exists { path: PathBuf },
    #[error("cannot create network namespace {path}: {source}")]
    Create { path: PathBuf, source: io::Error },
    #[error("cannot open network namespace {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("cannot enter network namespace {path}: {source}")]
    Enter { path: PathBuf, source: io::Error },
    #[error("cannot delete network namespace {path}: {source}")]
    Delete { path: PathBuf, source: io::Error },
    #[error("the namespace worker thread panicked")]
    ThreadPanicked,
}

fn errno(e: nix::errno::Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// Makes `run_dir` a shared bind mount of itself, as `ip netns add` does, so that namespace mounts
/// made here propagate to other mount namespaces. Done once per directory per process.
pub fn prepare_run_dir(run_dir: &Path) -> Result<(), NetnsError> {
    static DONE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
    let mut done = DONE.lock().unwrap_or_else(|p| p.into_inner());
    if done.iter().any(|d| d == run_dir) {
        return Ok(());
    }
    let err = |source| NetnsError::RunDir {
        path: run_dir.to_owned(),
        source,
    };
    fs::create_dir_all(run_dir).map_err(err)?;
    let shared = MsFlags::MS_SHARED | MsFlags::MS_REC;
    if mount(None::<&str>, run_dir, Some("none"), shared, None::<&str>).is_err() {
        // Not a mount point yet: bind it onto itself, then make it shared.
        mount(
            Some(run_dir),
            run_dir,
            Some("none"),
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| err(errno(e)))?;
        mount(None::<&str>, run_dir, Some("none"), shared, None::<&str>).map_err(|e| err(errno(e)))?;
    }
    done.push(run_dir.to_owned());
    Ok(())
}

/// Creates the named namespace `run_dir/name`, runs `inside` in it on the creating thread, and
/// returns an open handle to the namespace with the closure's result.
///
/// On failure nothing is left behind: a half-made mount point is removed.
pub fn create<R: Send>(run_dir: &Path, name: &str, inside: impl FnOnce() -> R + Send) -> Result<(File, R), NetnsError> {
    prepare_run_dir(run_dir)?;
    let path = run_dir.join(name);
    std::thread::scope(|s| {
        s.spawn(|| create_on_this_thread(&path, inside))
            .join()
            .unwrap_or(Err(NetnsError::ThreadPanicked))
    })
}

fn create_on_this_thread<R>(path: &Path, inside: impl FnOnce() -> R) -> Result<(File, R), NetnsError> {
    let cerr = |source| NetnsError::Create {
        path: path.to_owned(),
        source,
    };
    match OpenOptions::new().write(true).create_new(true).open(path) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(NetnsError::Exists { path: path.to_owned() });
        }
        Err(e) => return Err(cerr(e)),
    }
    let made = (|| {
        unshare(CloneFlags::CLONE_NEWNET).map_err(|e| cerr(errno(e)))?;
        mount(
            Some("/proc/thread-self/ns/net"),
            path,
            Some("none"),
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| cerr(errno(e)))?;
        let file = File::open(path).map_err(cerr)?;
        Ok(file)
    })();
    match made {
        Ok(file) => Ok((file, inside())),
        Err(e) => {
            let _ = umount2(path, MntFlags::MNT_DETACH);
            let _ = fs::remove_file(path);
            Err(e)
        }
    }
}

/// Opens an existing named namespace.
pub fn open(run_dir: &Path, name: &str) -> Result<File, NetnsError> {
    let path = run_dir.join(name);
    File::open(&path).map_err(|source| NetnsError::Open { path, source })
}

/// Runs `f` inside the namespace `ns` on a short-lived thread and returns its result.
pub fn run_in<R: Send>(ns: &File, f: impl FnOnce() -> R + Send) -> Result<R, NetnsError> {
    std::thread::scope(|s| {
        s.spawn(|| {
            setns(ns, CloneFlags::CLONE_NEWNET).map_err(|e| NetnsError::Enter {
                path: PathBuf::from(format!("fd of {}", inode(ns).unwrap_or(0))),
                source: errno(e),
            })?;
            Ok(f())
        })
        .join()
        .unwrap_or(Err(NetnsError::ThreadPanicked))
    })
}

/// Moves the *calling thread* into the namespace. Used right before `exec` by `wuos lab exec`.
pub fn enter(run_dir: &Path, name: &str) -> Result<(), NetnsError> {
    let file = open(run_dir, name)?;
    setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| NetnsError::Enter {
        path: run_dir.join(name),
        source: errno(e),
    })
}

/// Deletes a named namespace (detaches the bind mount and removes the file). Deleting a namespace
/// that does not exist is not an error. The kernel frees the namespace, and every interface in it,
/// once no process and no mount holds it any more.
pub fn delete(run_dir: &Path, name: &str) -> Result<bool, NetnsError> {
    let path = run_dir.join(name);
    if !path.exists() {
        return Ok(false);
    }
    // EINVAL: not a mount point (e.g. a half-made namespace) — the file is still removed.
    match umount2(&path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => {
            return Err(NetnsError::Delete { path, source: errno(e) });
        }
    }
    match fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(NetnsError::Delete { path, source }),
    }
}

/// Names of the namespaces in `run_dir` that start with `prefix`.
pub fn list(run_dir: &Path, prefix: &str) -> Vec<String> {
    let Ok(dir) = fs::read_dir(run_dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = dir
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(prefix))
        .collect();
    names.sort();
    names
}

/// The inode that identifies a namespace (what `/proc/PID/ns/net` links to as `net:[INODE]`).
pub fn inode(ns: &File) -> io::Result<u64> {
    Ok(ns.metadata()?.ino())
}

/// Writes a sysctl of the *calling thread's* network namespace, e.g. `net/ipv4/ip_forward`.
/// `/proc/sys/net` shows the namespace of the thread that opens it.
pub fn sysctl(proc_sys: &Path, key: &str, value: &str) -> io::Result<()> {
    fs::write(proc_sys.join(key), value)
}
