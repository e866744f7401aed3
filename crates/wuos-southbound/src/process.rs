//! Finding and stopping processes by network namespace, for leak-free teardown.

use std::collections::HashSet;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Every pid under `proc_root` except this process's own.
fn other_pids(proc_root: &Path) -> impl Iterator<Item = i32> {
    let me = std::process::id() as i32;
    fs::read_dir(proc_root)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(move |&pid| pid != me)
}

/// Pids (under `proc_root`, usually `/proc`) whose network namespace is one of `inodes`.
pub fn pids_in_netns(proc_root: &Path, inodes: &HashSet<u64>) -> Vec<i32> {
    other_pids(proc_root)
        .filter(|pid| {
            fs::read_link(proc_root.join(pid.to_string()).join("ns/net"))
                .ok()
                .and_then(|l| {
                    let s = l.to_string_lossy().into_owned();
                    s.strip_prefix("net:[")?.strip_suffix(']')?.parse::<u64>().ok()
                })
                .is_some_and(|ino| inodes.contains(&ino))
        })
        .collect()
}

/// Whether `pid` is alive (a zombie counts as gone).
pub fn alive(proc_root: &Path, pid: i32) -> bool {
    match fs::read_to_string(proc_root.join(pid.to_string()).join("stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Sends SIGTERM, waits up to `grace`, then SIGKILLs whatever is left. Returns how many were signalled.
pub fn terminate(proc_root: &Path, pids: &[i32], grace: Duration) -> usize {
    let mut live: Vec<i32> = pids.iter().copied().filter(|&p| alive(proc_root, p)).collect();
    let n = live.len();
    for &p in &live {
        let _ = kill(Pid::from_raw(p), Signal::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while !live.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
        live.retain(|&p| alive(proc_root, p));
    }
    for &p in &live {
        let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
    }
    n
}

/// Whether process `pid`'s command line has every one of `needles` as a whole argument.
pub fn cmdline_has(proc_root: &Path, pid: i32, needles: &[&str]) -> bool {
    fs::read(proc_root.join(pid.to_string()).join("cmdline"))
        .map(|raw| {
            let args: Vec<&[u8]> = raw.split(|&b| b == 0).collect();
            needles.iter().all(|n| args.contains(&n.as_bytes()))
        })
        .unwrap_or(false)
}

/// Pids whose command line contains every one of `needles` (used to find a lab's relays after a crash).
pub fn pids_with_cmdline(proc_root: &Path, needles: &[&str]) -> Vec<i32> {
    other_pids(proc_root)
        .filter(|&pid| cmdline_has(proc_root, pid, needles))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alive_reads_state_from_stat() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("42")).unwrap();
        fs::write(dir.path().join("42/stat"), "42 (a (weird) name) S 1 2 3").unwrap();
        fs::create_dir_all(dir.path().join("43")).unwrap();
        fs::write(dir.path().join("43/stat"), "43 (zombie) Z 1 2 3").unwrap();
        assert!(alive(dir.path(), 42), "state S must count as alive");
        assert!(!alive(dir.path(), 43), "a zombie must count as gone");
        assert!(!alive(dir.path(), 44), "a missing pid must count as gone");
    }

    #[test]
    fn cmdline_matching_needs_every_needle_as_a_whole_argument() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("7")).unwrap();
        fs::write(dir.path().join("7/cmdline"), b"wuos\0lab\0relay\0--lab\0demo\0").unwrap();
        assert_eq!(pids_with_cmdline(dir.path(), &["relay", "demo"]), vec![7]);
        assert!(pids_with_cmdline(dir.path(), &["relay", "dem"]).is_empty());
    }
}

/// Why [`run_beside`] failed.
#[derive(Debug, thiserror::Error)]
pub enum BesideError {
    #[error("no process to run {0} beside")]
    NoProcess(String),
    #[error("cannot run nsenter (util-linux) for {command}: {source}")]
    Spawn { command: String, source: std::io::Error },
    #[error("{command} exited with {status}")]
    Failed {
        command: String,
        status: std::process::ExitStatus,
    },
    #[error("{command} did not finish within {timeout:?}")]
    Timeout { command: String, timeout: Duration },
    #[error("cannot wait for {command}: {source}")]
    Wait { command: String, source: std::io::Error },
}

/// Runs `argv` in the network and mount namespaces of process `pid` (`nsenter -t PID -n -m`),
/// with no input and no output, killed after `timeout`; `Ok` when it exits with 0.
pub fn run_beside(pid: i32, argv: &[String], timeout: Duration) -> Result<(), BesideError> {
    let command = argv.join(" ");
    if pid <= 0 {
        return Err(BesideError::NoProcess(command));
    }
    let mut child = std::process::Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-n", "-m", "--"])
        .args(argv)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|source| BesideError::Spawn {
            command: command.clone(),
            source,
        })?;
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => return Err(BesideError::Failed { command, status }),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(BesideError::Timeout { command, timeout });
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(source) => return Err(BesideError::Wait { command, source }),
        }
    }
}
