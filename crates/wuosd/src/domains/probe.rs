//! Health probes of service domains, as the catalog defines them (`[health]`): a TCP connect, a
//! UDP datagram that must get a reply, or a command run inside the domain. The daemon runs them
//! from the router's namespace, where the domain's address is one veth away, off the domains
//! thread; their outcomes go to [`super::Domains::record_probe`] (the verdicts are kept by the
//! domain's lifecycle record, `wuos_model::lifecycle`).

use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use wuos_model::domain::HealthKind;

/// One probe to run.
#[derive(Clone, Debug, PartialEq)]
pub struct Probe {
    pub domain: String,
    /// The domain's main pid: the incarnation probed (and, for `command` probes, whose
    /// namespaces the command runs in).
    pub pid: i32,
    pub kind: HealthKind,
    /// The domain's address.
    pub addr: Ipv4Addr,
    pub timeout: Duration,
    /// Command probes cannot enter a microVM.
    pub vm: bool,
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
            wuos_southbound::process::run_beside(p.pid, argv, p.timeout).map_err(|e| e.to_string())
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

#[cfg(test)]
mod tests {
    use super::*;

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
            pid: 0,
            kind,
            addr: Ipv4Addr::LOCALHOST,
            timeout: Duration::from_millis(300),
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
        let err = run(&probe(HealthKind::Command {
            argv: vec!["true".into()],
        }))
        .unwrap_err();
        assert!(err.contains("no process"), "{err}");
    }
}
