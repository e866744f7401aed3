//! Health probes of service domains, as the catalog defines them (`[health]`): a TCP connect, a
//! UDP datagram that must get a reply, or a command run inside the domain. The daemon runs them
//! from the router's namespace, where the domain's address is one veth away.
//!
//! [`HealthState`] is the bookkeeping: a domain is `starting` until its first good probe,
//! `healthy` after it, and `unhealthy` after `retries` consecutive failures (the restart policy
//! then applies). Probes are scheduled by the domains manager and run outside its lock.

use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use wuos_model::domain::{HealthCheck, HealthKind};

/// One probe to run.
#[derive(Clone, Debug)]
pub struct Probe {
    pub domain: String,
    pub kind: HealthKind,
    /// The domain's address.
    pub addr: Ipv4Addr,
    pub timeout: Duration,
    /// The domain's main pid (for `command` probes, run in its namespaces).
    pub pid: i32,
    /// Command probes cannot enter a microVM.
    pub vm: bool,
}

/// What a domain's probes say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// No good probe yet.
    Starting,
    Healthy,
    /// `retries` consecutive failures.
    Unhealthy,
    /// The service defines no probe other than its process being alive.
    Unchecked,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Starting => "starting",
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
            Health::Unchecked => "unchecked",
        }
    }
}

/// Per-domain probe bookkeeping (in memory: a restarted daemon starts over at `starting`).
#[derive(Clone, Debug)]
pub struct HealthState {
    pub health: Health,
    pub failures: u32,
    /// The last probe's outcome, for `wuos service list`.
    pub detail: String,
    pub last: Option<Instant>,
}

impl HealthState {
    pub fn new(check: Option<&HealthCheck>) -> Self {
        let probed = check.is_some_and(|c| c.kind != HealthKind::Process);
        Self {
            health: if probed { Health::Starting } else { Health::Unchecked },
            failures: 0,
            detail: String::new(),
            last: None,
        }
    }

    /// Whether a probe is due at `now`.
    pub fn due(&self, check: &HealthCheck, now: Instant) -> bool {
        self.health != Health::Unchecked && self.last.is_none_or(|t| now.duration_since(t) >= check.interval)
    }

    /// Records a probe's outcome; returns true when the domain has just become unhealthy.
    pub fn record(&mut self, check: &HealthCheck, now: Instant, result: Result<(), String>) -> bool {
        self.last = Some(now);
        match result {
            Ok(()) => {
                self.failures = 0;
                self.health = Health::Healthy;
                self.detail = "ok".into();
                false
            }
            Err(why) => {
                self.failures += 1;
                self.detail = why;
                // A service that never came up gets as many chances as one that went down.
                if self.failures >= check.retries && self.health != Health::Unhealthy {
                    self.health = Health::Unhealthy;
                    return true;
                }
                false
            }
        }
    }
}

/// Runs one probe; `Err` says what failed.
pub fn run(p: &Probe) -> Result<(), String> {
    match &p.kind {
        HealthKind::Process => Ok(()),
        HealthKind::Tcp { port } => {
            let to = SocketAddr::from((p.addr, *port));
            TcpStream::connect_timeout(&to, p.timeout)
                .map(drop)
                .map_err(|e| format!("tcp {to}: {e}"))
        }
        HealthKind::Udp { port, payload } => udp(p.addr, *port, payload.as_bytes(), p.timeout),
        HealthKind::Command { argv } => {
            if p.vm {
                return Err("command probes cannot run inside a vm domain; use tcp or udp".into());
            }
            command(p.pid, argv, p.timeout)
        }
    }
}

fn udp(addr: Ipv4Addr, port: u16, payload: &[u8], timeout: Duration) -> Result<(), String> {
    let to = SocketAddr::from((addr, port));
    let fail = |e: std::io::Error| {
        if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) {
            format!("udp {to}: no reply within {timeout:?}")
        } else {
            format!("udp {to}: {e}")
        }
    };
    let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).map_err(fail)?;
    s.connect(to).map_err(fail)?;
    s.set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
        .map_err(fail)?;
    s.send(payload).map_err(fail)?;
    let mut buf = [0u8; 2048];
    // Any datagram from the service is a reply; an ICMP port unreachable fails at once.
    s.recv(&mut buf).map(drop).map_err(fail)
}

/// Runs `argv` in the network and mount namespaces of `pid` (`nsenter`), killed after `timeout`.
fn command(pid: i32, argv: &[String], timeout: Duration) -> Result<(), String> {
    if pid <= 0 {
        return Err("no process to run the probe beside".into());
    }
    let mut child = Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-n", "-m", "--"])
        .args(argv)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run nsenter: {e}"))?;
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(st)) if st.success() => return Ok(()),
            Ok(Some(st)) => return Err(format!("{} exited with {st}", argv.join(" "))),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{} did not finish within {timeout:?}", argv.join(" ")));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(format!("cannot wait for the probe: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(retries: u32) -> HealthCheck {
        HealthCheck {
            kind: HealthKind::Udp {
                port: 7,
                payload: "x".into(),
            },
            interval: Duration::from_secs(5),
            timeout: Duration::from_millis(200),
            retries,
        }
    }

    #[test]
    fn a_domain_turns_unhealthy_after_retries_failures_once_and_recovers() {
        let c = check(3);
        let mut h = HealthState::new(Some(&c));
        let t = Instant::now();
        assert_eq!(h.health, Health::Starting);
        assert!(h.due(&c, t));
        assert!(!h.record(&c, t, Err("a".into())));
        assert!(!h.due(&c, t + Duration::from_secs(1)), "not before the interval");
        assert!(h.due(&c, t + Duration::from_secs(5)));
        assert!(!h.record(&c, t, Err("b".into())));
        assert!(h.record(&c, t, Err("c".into())), "the third failure turns it unhealthy");
        assert_eq!((h.health, h.detail.as_str()), (Health::Unhealthy, "c"));
        assert!(!h.record(&c, t, Err("d".into())), "reported once");
        assert!(!h.record(&c, t, Ok(())));
        assert_eq!((h.health, h.failures), (Health::Healthy, 0));
    }

    #[test]
    fn process_only_checks_are_not_probed() {
        let mut c = check(1);
        c.kind = HealthKind::Process;
        let h = HealthState::new(Some(&c));
        assert_eq!(h.health, Health::Unchecked);
        assert!(!h.due(&c, Instant::now()));
        assert_eq!(HealthState::new(None).health, Health::Unchecked);
    }

    #[test]
    fn udp_and_tcp_probes_succeed_against_a_live_peer_and_say_why_they_fail() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = server.local_addr().unwrap().port();
        let echo = std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            let (n, from) = server.recv_from(&mut buf).unwrap();
            server.send_to(&buf[..n], from).unwrap();
        });
        let probe = |kind| Probe {
            domain: "d".into(),
            kind,
            addr: Ipv4Addr::LOCALHOST,
            timeout: Duration::from_millis(300),
            pid: 0,
            vm: false,
        };
        run(&probe(HealthKind::Udp {
            port,
            payload: "ping".into(),
        }))
        .unwrap();
        echo.join().unwrap();
        // Nobody listens there now: refused (ICMP) or no reply.
        let err = run(&probe(HealthKind::Udp {
            port,
            payload: "ping".into(),
        }))
        .unwrap_err();
        assert!(err.starts_with(&format!("udp 127.0.0.1:{port}")), "{err}");

        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let tport = listener.local_addr().unwrap().port();
        run(&probe(HealthKind::Tcp { port: tport })).unwrap();
        drop(listener);
        let err = run(&probe(HealthKind::Tcp { port: tport })).unwrap_err();
        assert!(err.contains("tcp 127.0.0.1"), "{err}");
        let err = run(&Probe {
            vm: true,
            ..probe(HealthKind::Command {
                argv: vec!["true".into()],
            })
        })
        .unwrap_err();
        assert!(err.contains("vm domain"), "{err}");
    }
}
