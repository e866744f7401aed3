//! Traffic control through iproute2's `tc`, in batch mode (`tc -n NS -batch -`): one process per
//! namespace and change, however many commands. netlink-packet-route has no typed HTB/TBF, and this
//! kernel has `tbf`, `htb`, `clsact`, `u32` and `mirred` but no `netem`, `fq` or `matchall`.

use std::io::{self, Write};
use std::process::{Command, Stdio};

#[derive(Debug, thiserror::Error)]
pub enum TcError {
    #[error("cannot run tc: {0} (is iproute2 installed?)")]
    Spawn(io::Error),
    #[error("tc in namespace {netns} failed: {stderr}\ncommands were:\n{commands}")]
    Failed {
        netns: String,
        stderr: String,
        commands: String,
    },
}

/// Runs `commands` (one tc command per line, without the leading `tc`) inside namespace `netns`.
/// With `-force`, tc goes on after an error and reports every failing line.
pub fn batch(netns: &str, commands: &[String]) -> Result<(), TcError> {
    if commands.is_empty() {
        return Ok(());
    }
    let text = commands.join("\n") + "\n";
    let mut child = Command::new("tc")
        .args(["-n", netns, "-force", "-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(TcError::Spawn)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(text.as_bytes()).map_err(TcError::Spawn)?;
    }
    let out = child.wait_with_output().map_err(TcError::Spawn)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(TcError::Failed {
            netns: netns.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            commands: text,
        })
    }
}

/// A token bucket on `dev`'s egress: `rate_bps` bits/s. The bucket holds 5 ms of traffic (at least
/// a few MTU-sized frames), the queue 50 ms. `None` removes the root qdisc.
pub fn rate(dev: &str, rate_bps: Option<u64>, mtu: u32) -> Vec<String> {
    match rate_bps {
        Some(r) => {
            let burst = (r / 8 / 200).max(u64::from(mtu) * 4).max(3000);
            vec![format!(
                "qdisc replace dev {dev} root tbf rate {r}bit burst {burst} latency 50ms"
            )]
        }
        None => vec![format!("qdisc del dev {dev} root")],
    }
}

/// Splices a user-space path into a link: everything `dev` sends goes out through `side` instead,
/// and everything that arrives on `side` is received as if it arrived on `dev`.
pub fn redirect_through(dev: &str, side: &str) -> Vec<String> {
    vec![
        format!("qdisc replace dev {dev} clsact"),
        format!(
            "filter replace dev {dev} egress pref 1 handle 800::1 u32 match u32 0 0 action mirred egress redirect dev {side}"
        ),
        format!("qdisc replace dev {side} clsact"),
        format!(
            "filter replace dev {side} ingress pref 1 handle 800::1 u32 match u32 0 0 action mirred ingress redirect dev {dev}"
        ),
    ]
}

/// Undoes [`redirect_through`].
pub fn unredirect(dev: &str, side: &str) -> Vec<String> {
    vec![
        format!("qdisc del dev {dev} clsact"),
        format!("qdisc del dev {side} clsact"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tbf_burst_covers_frames_and_five_ms() {
        let c = rate("eth0", Some(10_000_000), 1500);
        assert_eq!(
            c,
            vec!["qdisc replace dev eth0 root tbf rate 10000000bit burst 6250 latency 50ms"]
        );
        let slow = rate("eth0", Some(64_000), 1500);
        assert!(slow[0].contains("burst 6000"), "{slow:?}");
        assert_eq!(rate("eth1", None, 1500), vec!["qdisc del dev eth1 root"]);
    }

    #[test]
    fn redirect_is_symmetric() {
        let c = redirect_through("eth0", "ix0");
        assert!(c[1].contains("dev eth0 egress") && c[1].ends_with("redirect dev ix0"));
        assert!(c[3].contains("dev ix0 ingress") && c[3].ends_with("ingress redirect dev eth0"));
    }
}
