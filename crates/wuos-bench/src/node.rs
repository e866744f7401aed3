//! Working with one router of a lab: commands inside it (`wuos lab exec`, which joins its
//! namespace and cgroup and then becomes the command, so a child's pid is the command's), its
//! daemon's admin API, and the two measuring tools run between routers (ping, iperf3).

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use wuos_lab::LabEnv;
use wuos_lab::daemons::socket_path;
use wuos_proto::admin::AdminClient;

/// A router of a lab.
#[derive(Clone, Copy, Debug)]
pub struct Node<'a> {
    pub env: &'a LabEnv,
    pub lab: &'a str,
    pub name: &'a str,
}

impl<'a> Node<'a> {
    pub fn new(env: &'a LabEnv, lab: &'a str, name: &'a str) -> Self {
        Self { env, lab, name }
    }

    fn exec(&self) -> Command {
        let mut c = Command::new(&self.env.relay_exe);
        c.args(["lab", "exec", self.lab, self.name, "--"]);
        c
    }

    /// Runs `argv` in the router, killed after `timeout`; its output.
    pub fn output(&self, argv: &[&str], timeout: Duration) -> Result<Output> {
        Command::new("timeout")
            .arg(format!("{}", timeout.as_secs().max(1)))
            .arg(&self.env.relay_exe)
            .args(["lab", "exec", self.lab, self.name, "--"])
            .args(argv)
            .output()
            .with_context(|| format!("cannot run {} on {}", argv[0], self.name))
    }

    /// Starts `argv` in the router with its output in `log` and `cwd` as working directory.
    pub fn spawn_logged(&self, argv: &[String], cwd: &Path, log: &Path) -> Result<Child> {
        let out = std::fs::File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
        self.exec()
            .args(argv)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out.try_clone()?))
            .stderr(Stdio::from(out))
            .spawn()
            .with_context(|| format!("cannot start {} on {}", argv[0], self.name))
    }

    /// Starts `argv` in the router, its output discarded.
    pub fn spawn_quiet(&self, argv: &[&str]) -> Result<Child> {
        self.exec()
            .args(argv)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {} on {}", argv[0], self.name))
    }

    /// Starts `argv` in the router with its standard output piped to the caller (its errors
    /// discarded).
    pub fn spawn_piped(&self, argv: &[&str]) -> Result<Child> {
        self.exec()
            .args(argv)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {} on {}", argv[0], self.name))
    }

    /// The router daemon's admin socket.
    pub fn socket(&self) -> std::path::PathBuf {
        socket_path(self.env, self.lab, self.name)
    }

    /// A client of the router's daemon.
    pub async fn admin(&self) -> Result<AdminClient> {
        AdminClient::connect(self.socket())
            .await
            .with_context(|| format!("the daemon of {}", self.name))
    }

    /// The router's `ping` output towards `dst` with `args` before it (count, interval…).
    pub fn ping(&self, prefix: &[&str], args: &[&str], dst: &str, timeout: Duration) -> Result<String> {
        let argv: Vec<&str> = prefix
            .iter()
            .copied()
            .chain(["ping"])
            .chain(args.iter().copied())
            .chain([dst])
            .collect();
        Ok(String::from_utf8_lossy(&self.output(&argv, timeout)?.stdout).into_owned())
    }
}

/// The coarsest resolution (ms) of the `time=` values in `ping`'s output, read from the
/// decimals it printed (`time=30.1 ms` → 0.1); `None` without replies.
pub fn printed_resolution_ms(ping_output: &str) -> Option<f64> {
    ping_output
        .lines()
        .filter_map(|l| l.split("time=").nth(1))
        .map(|t| {
            let v = t.trim_end_matches(" ms").trim();
            let decimals = v.split_once('.').map_or(0, |(_, frac)| frac.len());
            10f64.powi(-(decimals as i32))
        })
        .reduce(f64::max)
}

/// A single-threaded runtime for a benchmark's admin calls.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

/// TCP throughput (Gbit/s, as received) of an iperf3 run of `seconds` from `client` to the
/// iperf3 server started on `server` at `addr`; both run behind `prefix` (e.g. `taskset -c 0`).
pub fn iperf_gbps(server: Node<'_>, client: Node<'_>, addr: &str, seconds: u64, prefix: &[&str]) -> Result<f64> {
    let srv_argv: Vec<&str> = prefix.iter().copied().chain(["iperf3", "-s", "-1"]).collect();
    let mut srv = server.spawn_quiet(&srv_argv)?;
    std::thread::sleep(Duration::from_millis(400));
    let secs = seconds.to_string();
    let argv: Vec<&str> = prefix
        .iter()
        .copied()
        .chain(["iperf3", "-c", addr, "-t", &secs, "-J"])
        .collect();
    let out = client.output(&argv, Duration::from_secs(seconds + 10));
    let _ = srv.kill();
    let _ = srv.wait();
    let v: serde_json::Value = serde_json::from_slice(&out?.stdout).context("iperf3 -J output")?;
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|b| b / 1e9)
        .context("iperf3 reported no throughput")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_printed_resolution_is_the_coarsest_seen() {
        let out = "PING 10.254.0.2 (10.254.0.2) 56(84) bytes of data.\n\
                   64 bytes from 10.254.0.2: icmp_seq=1 ttl=64 time=0.052 ms\n\
                   64 bytes from 10.254.0.2: icmp_seq=2 ttl=64 time=40.1 ms\n\
                   64 bytes from 10.254.0.2: icmp_seq=3 ttl=64 time=9.87 ms\n";
        assert_eq!(printed_resolution_ms(out), Some(0.1));
        assert_eq!(printed_resolution_ms("time=120 ms"), Some(1.0));
        assert_eq!(printed_resolution_ms("time=0.031 ms"), Some(0.001));
        assert_eq!(printed_resolution_ms("no replies"), None);
    }
}
