//! Privileged tests of the XDP classifier on real namespaces and veths, in native and generic mode.
//!
//! ```text
//!   client ──c0═r-c── router ──r-s═s0── server (VIP 10.77.9.9 on lo: the kernel route's end)
//!   10.77.1.2          │  classifier on r-c               10.77.2.2
//!                     r-i
//!                      ║
//!                     i0── instance (VIP 10.77.9.9 on lo: a local service instance)
//!                          10.77.3.2
//! ```
//!
//! Every namespace is `wuos.xdptest.<PID>.<mode>.<role>` and is deleted on drop, failed test or not.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use wuos_southbound::netns;
use wuos_southbound::privilege::may_run_privileged;
use wuos_southbound::xdp::{
    Classifier, FlowEvent, LocalRule, Mode, Proto, ServiceCounters, ServiceId, ServiceKey, link_info,
};

const NETNS_DIR: &str = "/run/netns";
const VIP: Ipv4Addr = Ipv4Addr::new(10, 77, 9, 9);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 77, 1, 2);
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 77, 2, 2);
const UDP_PORT: u16 = 5000;
const TCP_PORT: u16 = 5001;
const UDP_SVC: ServiceId = ServiceId(7);
const TCP_SVC: ServiceId = ServiceId(8);
/// Ethernet + IPv4 + UDP headers around a datagram's payload.
const UDP_OVERHEAD: u64 = 14 + 20 + 8;

/// The tests share two cores and wait on timeouts: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The four namespaces; deleted on drop.
struct Lab {
    names: Vec<String>,
    client: File,
    router: File,
    server: File,
    instance: File,
}

impl Lab {
    fn name(&self, role: usize) -> &str {
        &self.names[role]
    }

    fn new(tag: &str) -> Self {
        let names: Vec<String> = ["c", "r", "s", "i"]
            .iter()
            .map(|role| format!("wuos.xdptest.{}.{tag}.{role}", std::process::id()))
            .collect();
        let dir = Path::new(NETNS_DIR);
        for n in &names {
            let _ = netns::delete(dir, n);
        }
        // Made one by one, so a failure half-way still deletes the ones made.
        let mut lab = Self {
            names: Vec::new(),
            client: File::open("/proc/self/ns/net").unwrap(),
            router: File::open("/proc/self/ns/net").unwrap(),
            server: File::open("/proc/self/ns/net").unwrap(),
            instance: File::open("/proc/self/ns/net").unwrap(),
        };
        let mut files = Vec::new();
        for n in &names {
            let (f, ()) = netns::create(dir, n, || {
                netns::sysctl(Path::new("/proc/sys"), "net/ipv4/ip_forward", "1").expect("ip_forward");
            })
            .unwrap_or_else(|e| panic!("{e}"));
            lab.names.push(n.clone());
            files.push(f);
        }
        let mut files = files.into_iter();
        lab.client = files.next().unwrap();
        lab.router = files.next().unwrap();
        lab.server = files.next().unwrap();
        lab.instance = files.next().unwrap();
        let (c, r, s, i) = (lab.name(0), lab.name(1), lab.name(2), lab.name(3));
        for (here, ours, there, theirs, net) in [(r, "r-c", c, "c0", 1), (r, "r-s", s, "s0", 2), (r, "r-i", i, "i0", 3)]
        {
            run(
                "ip",
                &[
                    "-n", here, "link", "add", ours, "type", "veth", "peer", "name", theirs, "netns", there,
                ],
            );
            run(
                "ip",
                &["-n", here, "addr", "add", &format!("10.77.{net}.1/24"), "dev", ours],
            );
            run(
                "ip",
                &["-n", there, "addr", "add", &format!("10.77.{net}.2/24"), "dev", theirs],
            );
            run("ip", &["-n", here, "link", "set", ours, "up"]);
            run("ip", &["-n", there, "link", "set", theirs, "up"]);
            run(
                "ip",
                &["-n", there, "route", "add", "default", "via", &format!("10.77.{net}.1")],
            );
        }
        for ns in [c, r, s, i] {
            run("ip", &["-n", ns, "link", "set", "lo", "up"]);
        }
        for ns in [s, i] {
            run("ip", &["-n", ns, "addr", "add", &format!("{VIP}/32"), "dev", "lo"]);
        }
        // The kernel's route to the VIP: the server.
        run(
            "ip",
            &[
                "-n",
                r,
                "route",
                "add",
                &format!("{VIP}/32"),
                "via",
                &SERVER.to_string(),
            ],
        );
        // A redirected frame loses its partial-checksum state: the client completes checksums.
        run("ip", &["netns", "exec", c, "ethtool", "-K", "c0", "tx", "off"]);
        lab
    }

    fn xdp_on(&self, ns: usize, iface: &str) -> bool {
        run("ip", &["-n", self.name(ns), "link", "show", iface]).contains("prog/xdp")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for n in &self.names {
            if let Err(e) = netns::delete(Path::new(NETNS_DIR), n) {
                eprintln!("cleanup of {n}: {e}");
            }
        }
    }
}

fn udp(ns: &File, addr: SocketAddrV4) -> UdpSocket {
    let s = netns::run_in(ns, || UdpSocket::bind(addr))
        .unwrap()
        .unwrap_or_else(|e| panic!("bind udp {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    s
}

fn tcp_listener(ns: &File, addr: SocketAddrV4) -> TcpListener {
    let l = netns::run_in(ns, || TcpListener::bind(addr))
        .unwrap()
        .unwrap_or_else(|e| panic!("listen tcp {addr}: {e}"));
    l.set_nonblocking(true).unwrap();
    l
}

/// Datagrams received on `s` until it stays quiet for its read timeout.
fn received(s: &UdpSocket) -> Vec<(usize, SocketAddr)> {
    let mut buf = [0u8; 65536];
    let mut got = Vec::new();
    loop {
        match s.recv_from(&mut buf) {
            Ok(x) => got.push(x),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return got,
            Err(e) => panic!("recv: {e}"),
        }
    }
}

fn send(s: &UdpSocket, n: usize, len: usize) {
    for _ in 0..n {
        s.send_to(&vec![0x5a; len], SocketAddrV4::new(VIP, UDP_PORT)).unwrap();
    }
}

fn ping(lab: &Lab, dst: Ipv4Addr) -> bool {
    Command::new("ip")
        .args(["netns", "exec", lab.name(0), "ping", "-c", "2", "-i", "0.2", "-W", "2"])
        .arg(dst.to_string())
        .output()
        .unwrap()
        .status
        .success()
}

/// Connects from the client to `dst`, sends 1 MiB, and reads it back from whichever of
/// `listeners` accepted; returns the index of that listener.
fn tcp_exchange(lab: &Lab, dst: SocketAddrV4, listeners: &[&TcpListener]) -> usize {
    let mut client = netns::run_in(&lab.client, || {
        TcpStream::connect_timeout(&dst.into(), Duration::from_secs(3))
    })
    .unwrap()
    .unwrap_or_else(|e| panic!("tcp connect to {dst}: {e}"));
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    let (which, mut conn) = loop {
        if let Some(x) = listeners
            .iter()
            .enumerate()
            .find_map(|(k, l)| l.accept().ok().map(|(c, _)| (k, c)))
        {
            break x;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no listener accepted the connection to {dst}"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    conn.set_nonblocking(false).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let data: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    let writer = {
        let data = data.clone();
        std::thread::spawn(move || {
            client.write_all(&data).unwrap();
            client.shutdown(std::net::Shutdown::Write).unwrap();
        })
    };
    let mut got = Vec::new();
    conn.read_to_end(&mut got).unwrap_or_else(|e| {
        panic!(
            "reading 1 MiB over TCP to {dst}: {e} after {} bytes (stalled?)",
            got.len()
        )
    });
    writer.join().unwrap();
    assert!(
        got == data,
        "TCP to {dst} delivered {} bytes, corrupted or short",
        got.len()
    );
    which
}

fn counters_of(c: &Classifier, id: ServiceId) -> Option<ServiceCounters> {
    c.counters()
        .unwrap()
        .into_iter()
        .find(|(i, _)| *i == id)
        .map(|(_, c)| c)
}

fn scenario(mode: Mode) {
    let lab = Lab::new(&mode.to_string());
    let udp_key = ServiceKey {
        vip: VIP,
        port: UDP_PORT,
        proto: Proto::Udp,
    };
    let tcp_key = ServiceKey {
        vip: VIP,
        port: TCP_PORT,
        proto: Proto::Tcp,
    };
    let at_server = udp(&lab.server, SocketAddrV4::new(VIP, UDP_PORT));
    let at_instance = udp(&lab.instance, SocketAddrV4::new(VIP, UDP_PORT));
    let tcp_server = tcp_listener(&lab.server, SocketAddrV4::new(VIP, TCP_PORT));
    let tcp_instance = tcp_listener(&lab.instance, SocketAddrV4::new(VIP, TCP_PORT));
    let r_c = link_info(Some(&lab.router), "r-c").unwrap();
    let r_i = link_info(Some(&lab.router), "r-i").unwrap();
    let i0 = link_info(Some(&lab.instance), "i0").unwrap();
    assert_ne!(i0.mac, [0; 6], "the instance's MAC is read in its namespace");

    let mut xdp = Classifier::attach(Some(&lab.router), &["r-c"], mode).unwrap_or_else(|e| panic!("{e}"));
    xdp.attach_receiver(Some(&lab.instance), "i0")
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(lab.xdp_on(1, "r-c"), "the classifier is attached to r-c");
    assert!(lab.xdp_on(3, "i0"), "the receiver program is attached to i0");
    let err = link_info(Some(&lab.router), "nope").unwrap_err().to_string();
    assert!(
        err.contains("nope") && err.contains(lab.name(1)),
        "the error names the interface and namespace: {err}"
    );
    xdp.add_service(udp_key, UDP_SVC).unwrap();
    xdp.add_service(tcp_key, TCP_SVC).unwrap();
    assert_eq!(
        counters_of(&xdp, UDP_SVC),
        Some(ServiceCounters::default()),
        "counters start at zero"
    );

    // Unrelated traffic flows with the classifier on (and fills the ARP caches).
    assert!(ping(&lab, SERVER), "ping client -> server through the classifier");
    let tcp_other = tcp_listener(&lab.server, SocketAddrV4::new(SERVER, 6000));
    tcp_exchange(&lab, SocketAddrV4::new(SERVER, 6000), &[&tcp_other]);
    assert!(
        xdp.drain_new_flows().is_empty(),
        "unrelated traffic makes no flow events"
    );
    assert_eq!(counters_of(&xdp, UDP_SVC), Some(ServiceCounters::default()));

    // Service traffic without a local rule: counted, one event per flow, the kernel's route.
    let clients: Vec<UdpSocket> = (0..3).map(|_| udp(&lab.client, SocketAddrV4::new(CLIENT, 0))).collect();
    for c in &clients {
        send(c, 5, 100);
    }
    assert_eq!(
        received(&at_server).len(),
        15,
        "all datagrams reach the server (kernel route)"
    );
    assert!(
        received(&at_instance).is_empty(),
        "none reach the instance without a rule"
    );
    assert_eq!(
        counters_of(&xdp, UDP_SVC),
        Some(ServiceCounters {
            packets: 15,
            bytes: 15 * (UDP_OVERHEAD + 100),
            flows: 3
        }),
    );
    let events = xdp.drain_new_flows();
    let mut ports: Vec<u16> = events.iter().map(|e| e.src.port()).collect();
    ports.sort();
    let mut want: Vec<u16> = clients.iter().map(|c| c.local_addr().unwrap().port()).collect();
    want.sort();
    assert_eq!(ports, want, "exactly one event per flow: {events:?}");
    for e in &events {
        assert_eq!(
            (e.service, *e.src.ip(), e.dst, e.proto, e.ifindex),
            (UDP_SVC, CLIENT, SocketAddrV4::new(VIP, UDP_PORT), Proto::Udp, r_c.index),
            "event {e:?}"
        );
        assert!(e.timestamp > Duration::ZERO);
    }
    assert!(
        events.windows(2).all(|w| w[0].timestamp <= w[1].timestamp),
        "oldest first"
    );
    for c in &clients {
        send(c, 2, 100);
    }
    assert_eq!(received(&at_server).len(), 6);
    assert!(xdp.drain_new_flows().is_empty(), "known flows make no new events");
    assert_eq!(counters_of(&xdp, UDP_SVC).unwrap().flows, 3);

    // With a local rule: to the instance, not the kernel's route; replies go back normally.
    let rule = LocalRule {
        ifindex: r_i.index,
        dst_mac: i0.mac,
        src_mac: r_i.mac,
    };
    xdp.set_local_rule(UDP_SVC, rule).unwrap();
    xdp.set_local_rule(TCP_SVC, rule).unwrap();
    let fresh = udp(&lab.client, SocketAddrV4::new(CLIENT, 0));
    send(&fresh, 5, 200);
    send(&clients[0], 5, 200);
    let got = received(&at_instance);
    assert_eq!(got.len(), 10, "all datagrams reach the instance: {got:?}");
    assert!(got.iter().all(|(len, from)| *len == 200 && from.ip() == CLIENT));
    assert!(received(&at_server).is_empty(), "none take the kernel's route");
    let events: Vec<FlowEvent> = xdp.drain_new_flows();
    assert_eq!(events.len(), 1, "one new flow: {events:?}");
    assert_eq!(events[0].src, fresh.local_addr().unwrap().to_string().parse().unwrap());
    at_instance.send_to(b"reply", got[0].1).unwrap();
    assert_eq!(received(&fresh).len(), 1, "the instance's reply reaches the client");

    // TCP through the redirect: the instance accepts, 1 MiB arrives intact (no stall).
    let which = tcp_exchange(&lab, SocketAddrV4::new(VIP, TCP_PORT), &[&tcp_server, &tcp_instance]);
    assert_eq!(which, 1, "the instance, not the server, accepted the TCP connection");
    let t = counters_of(&xdp, TCP_SVC).unwrap();
    assert_eq!(t.flows, 1, "one TCP flow: {t:?}");
    assert!(t.packets > 10, "the TCP service's packets are counted: {t:?}");
    assert_eq!(xdp.drain_new_flows().len(), 1);

    // A packet that would expire at the router is left to the kernel, which drops it (ICMP time
    // exceeded); with TTL 2 it arrives, so the TTL went down by one and the header checksum held
    // (the instance's kernel checks it).
    let short_lived = udp(&lab.client, SocketAddrV4::new(CLIENT, 0));
    short_lived.set_ttl(1).unwrap();
    send(&short_lived, 2, 100);
    assert!(received(&at_instance).is_empty(), "TTL 1 is not redirected");
    assert!(received(&at_server).is_empty(), "TTL 1 is not forwarded either");
    short_lived.set_ttl(2).unwrap();
    send(&short_lived, 2, 100);
    assert_eq!(received(&at_instance).len(), 2, "TTL 2 reaches the instance");
    assert_eq!(xdp.drain_new_flows().len(), 1);

    // Fragments are left to the kernel even with a rule (the later ones carry no ports).
    let before = counters_of(&xdp, UDP_SVC).unwrap();
    send(&clients[1], 1, 3000);
    let got = received(&at_server);
    assert_eq!(got.len(), 1, "a fragmented datagram takes the kernel's route: {got:?}");
    assert_eq!(got[0].0, 3000, "reassembled whole at the server");
    assert!(received(&at_instance).is_empty());
    assert_eq!(counters_of(&xdp, UDP_SVC), Some(before), "fragments are not counted");

    // Clearing the rule returns the service to the kernel's route.
    assert!(xdp.clear_local_rule(UDP_SVC).unwrap());
    assert!(!xdp.clear_local_rule(UDP_SVC).unwrap(), "a second clear finds nothing");
    send(&fresh, 3, 100);
    assert_eq!(received(&at_server).len(), 3);
    assert!(received(&at_instance).is_empty());

    // Unrelated traffic still flows with rules in place.
    assert!(ping(&lab, SERVER));
    assert!(ping(&lab, VIP), "ICMP to the VIP takes the kernel's route");
    tcp_exchange(&lab, SocketAddrV4::new(SERVER, 6000), &[&tcp_other]);
    assert_eq!(
        counters_of(&xdp, UDP_SVC).unwrap().packets,
        before.packets + 3,
        "only service datagrams are counted"
    );

    // Removing the service: no counters, no events, traffic still passes.
    assert!(xdp.remove_service(udp_key).unwrap());
    assert!(!xdp.remove_service(udp_key).unwrap());
    assert_eq!(counters_of(&xdp, UDP_SVC), None, "the last key's counters go with it");
    send(&fresh, 2, 100);
    assert_eq!(received(&at_server).len(), 2);
    assert!(xdp.drain_new_flows().is_empty());

    // Detach removes the programs; the path keeps working without them.
    xdp.detach().unwrap_or_else(|e| panic!("{e}"));
    assert!(!lab.xdp_on(1, "r-c"), "no XDP program left on r-c");
    assert!(!lab.xdp_on(3, "i0"), "no XDP program left on i0");
    assert!(ping(&lab, SERVER));
    send(&fresh, 2, 100);
    assert_eq!(received(&at_server).len(), 2);
}

#[test]
fn the_classifier_counts_reports_flows_and_redirects_in_native_mode() {
    if !may_run_privileged("the_classifier_counts_reports_flows_and_redirects_in_native_mode") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    scenario(Mode::Native);
}

#[test]
fn the_classifier_counts_reports_flows_and_redirects_in_generic_mode() {
    if !may_run_privileged("the_classifier_counts_reports_flows_and_redirects_in_generic_mode") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    scenario(Mode::Generic);
}

#[test]
fn dropping_the_classifier_detaches_it_and_a_failed_attach_leaves_nothing() {
    if !may_run_privileged("dropping_the_classifier_detaches_it_and_a_failed_attach_leaves_nothing") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let lab = Lab::new("drop");
    {
        let _xdp = Classifier::attach(Some(&lab.router), &["r-c", "r-s"], Mode::Native).unwrap();
        assert!(lab.xdp_on(1, "r-c") && lab.xdp_on(1, "r-s"));
    }
    assert!(!lab.xdp_on(1, "r-c") && !lab.xdp_on(1, "r-s"), "drop detaches");

    let err = Classifier::attach(Some(&lab.router), &["r-c", "missing0"], Mode::Native)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("missing0") && err.contains(lab.name(1)),
        "the error names the interface and the namespace: {err}"
    );
    assert!(
        !lab.xdp_on(1, "r-c"),
        "the attachment made before the failure is undone"
    );
}
