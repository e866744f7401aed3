//! Framed links (protocol 2.4): a link opened with the magic is checked as a gRPC one is (each
//! refusal comes back as the close record's reason and is counted), and a 2.4 router keeps its
//! links with a router that carries them over gRPC (`link_transport = "grpc"`, as 2.3 did), in
//! both directions. Real daemons on loopback (no root needed).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wuos_proto::pb;
use wuosd::link::{MAGIC, Record, put_frame, read_record};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Daemon {
    child: Child,
    sock: PathBuf,
    mport: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A wuosd on 127.0.0.1:`port` named `id`, with `extra` lines of wuosd.toml and `neighbors`.
fn start(id: &str, port: u16, extra: &str, neighbors: &[(&str, &str)]) -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    let mport = free_port();
    let sock = dir.path().join("d.sock");
    let mut cfg = format!(
        "router_id = \"{id}\"\nrole = \"edge\"\nlisten = \"127.0.0.1:{port}\"\nadmin_socket = \"{}\"\n\
         metrics_listen = \"127.0.0.1:{mport}\"\ntelemetry_interval = \"100ms\"\ndata_dir = \"{}\"\n{extra}\n",
        sock.display(),
        dir.path().join("data").display()
    );
    for (n, p) in neighbors {
        cfg.push_str(&format!(
            "[[neighbor]]\nid = \"{n}\"\naddress = \"{p}\"\ninterface = \"lo\"\n"
        ));
    }
    let path = dir.path().join("wuosd.toml");
    std::fs::write(&path, cfg).unwrap();
    let log = std::fs::File::create(dir.path().join("wuosd.log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_wuosd"))
        .arg("--config")
        .arg(&path)
        .stderr(log)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let d = Daemon {
        child,
        sock,
        mport,
        _dir: dir,
    };
    wait_until("wuosd starts", || d.sock.exists());
    d
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn rejected(d: &Daemon, reason: &str) -> u64 {
    metric(d, "wuosd_rejected_messages_total", reason)
}

fn metric(d: &Daemon, family: &str, name: &str) -> u64 {
    let mut c = std::net::TcpStream::connect(("127.0.0.1", d.mport)).unwrap();
    c.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut s = String::new();
    c.read_to_string(&mut s).unwrap();
    s.lines()
        .find(|l| l.starts_with(family) && l.contains(&format!("name=\"{name}\"")))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn first_frame(version: u32, sender: &str) -> pb::Frame {
    let header = Some(pb::Header {
        version,
        sender: sender.into(),
    });
    pb::Frame {
        header: header.clone(),
        hello: Some(pb::Hello {
            header,
            role: pb::Role::Edge as i32,
            boot_id: 7,
            hello_interval_ms: 100,
            dead_interval_ms: 300,
            interface: "lo".into(),
        }),
        ..Default::default()
    }
}

/// Opens a framed link to `port`, sends `bytes` after the magic, and returns the first record
/// the daemon answers with (after its magic, which it must send).
async fn exchange(port: u16, bytes: &[u8]) -> Record {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(&MAGIC).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut head = [0u8; 8];
    s.read_exact(&mut head).await.unwrap();
    assert_eq!(head, MAGIC, "a 2.4 router answers the magic");
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), read_record(&mut s, &mut buf))
        .await
        .expect("an answer within 5 s")
        .unwrap()
        .expect("a record")
}

fn frame_bytes(f: &pb::Frame) -> Vec<u8> {
    let mut b = Vec::new();
    put_frame(&mut b, f);
    b
}

fn close_reason(r: Record) -> String {
    match r {
        Record::Close(reason) => reason,
        Record::Frame(f, _) => panic!("expected a refusal, got a frame {f:?}"),
    }
}

#[test]
fn a_framed_link_is_checked_like_a_grpc_one() {
    let port = free_port();
    // "peer" is configured at 127.0.0.1 (where this test connects from), "zzz" at 127.0.0.2.
    let d = start("me", port, "", &[("peer", "127.0.0.1:1"), ("zzz", "127.0.0.2:2")]);
    let rt = rt();
    rt.block_on(async {
        // The configured neighbor: answered with the daemon's own first frame.
        match exchange(port, &frame_bytes(&first_frame(wuos_proto::PROTOCOL_VERSION, "peer"))).await {
            Record::Frame(f, _) => {
                assert_eq!(f.header.unwrap().sender, "me");
                assert!(f.hello.expect("its hello comes first").boot_id > 0);
            }
            r => panic!("expected the daemon's hello, got {r:?}"),
        }
        // A configured neighbor's id from another address.
        let why = close_reason(exchange(port, &frame_bytes(&first_frame(wuos_proto::PROTOCOL_VERSION, "zzz"))).await);
        assert!(why.contains("sender address mismatch"), "{why}");
        // Not a neighbor.
        let why = close_reason(exchange(port, &frame_bytes(&first_frame(wuos_proto::PROTOCOL_VERSION, "who"))).await);
        assert!(why.contains("who"), "{why}");
        // Protocol 1.1.
        let why = close_reason(exchange(port, &frame_bytes(&first_frame((1 << 16) | 1, "peer"))).await);
        assert!(why.contains("unsupported protocol version 1.1"), "{why}");
        // A record over the limit: refused before its body is read.
        let why = close_reason(exchange(port, &(1u32 << 30).to_be_bytes()).await);
        assert!(why.contains("limit"), "{why}");
        // Not protobuf.
        let mut junk = 4u32.to_be_bytes().to_vec();
        junk.extend([0xff; 4]);
        let why = close_reason(exchange(port, &junk).await);
        assert!(why.contains("undecodable"), "{why}");
        // An opening that is neither the magic nor HTTP/2 is closed without an answer.
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
        assert!(!buf.starts_with(&MAGIC), "{buf:?}");
    });
    for (reason, n) in [
        ("sender_address", 1),
        ("unknown_neighbor", 1),
        ("version", 1),
        ("too_large", 1),
        ("undecodable", 1),
    ] {
        assert_eq!(rejected(&d, reason), n, "rejected{{name={reason}}}");
    }
    // The daemon still takes links.
    rt.block_on(async {
        let r = exchange(port, &frame_bytes(&first_frame(wuos_proto::PROTOCOL_VERSION, "peer"))).await;
        assert!(matches!(r, Record::Frame(..)), "{r:?}");
    });
}

fn neighbor_up(d: &Daemon, neighbor: &str) -> bool {
    let st = rt().block_on(wuos_proto::admin::status(d.sock.as_path()));
    st.is_ok_and(|st| st.neighbors.iter().any(|n| n.id == neighbor && n.state == "up"))
}

#[test]
fn a_framed_router_and_a_grpc_one_are_neighbors_whoever_dials() {
    // "a" sorts first: it dials. Once as the framed side, once as the gRPC side; and two framed
    // routers link framed.
    let grpc = "link_transport = \"grpc\"";
    for (a_extra, b_extra) in [("", grpc), (grpc, ""), ("", "")] {
        let (pa, pb) = (free_port(), free_port());
        let b = start("b", pb, b_extra, &[("a", &format!("127.0.0.1:{pa}"))]);
        let a = start("a", pa, a_extra, &[("b", &format!("127.0.0.1:{pb}"))]);
        wait_until(&format!("a ({a_extra:?}) and b ({b_extra:?}) up"), || {
            neighbor_up(&a, "b") && neighbor_up(&b, "a")
        });
        // And they stay up: the adverts flow (b's view holds a's advert).
        wait_until("b holds a's advert", || {
            rt().block_on(wuos_proto::admin::status(b.sock.as_path()))
                .is_ok_and(|st| {
                    st.view
                        .iter()
                        .any(|e| e.advert.as_ref().is_some_and(|ad| ad.origin == "a"))
                })
        });
        let transport = if a_extra.is_empty() && b_extra.is_empty() {
            "framed"
        } else {
            "grpc"
        };
        for (d, who) in [(&a, "a"), (&b, "b")] {
            assert!(
                metric(d, "wuosd_links_opened_total", transport) >= 1,
                "{who} opened its link {transport}"
            );
            let other = if transport == "framed" { "grpc" } else { "framed" };
            assert_eq!(
                metric(d, "wuosd_links_opened_total", other),
                0,
                "{who} opened no {other} link"
            );
        }
    }
}

#[test]
fn a_grpc_only_router_does_not_answer_the_magic() {
    let port = free_port();
    let _d = start("me", port, "link_transport = \"grpc\"", &[("peer", "127.0.0.1:1")]);
    rt().block_on(async {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        s.write_all(&MAGIC).await.unwrap();
        s.write_all(&first_frame(wuos_proto::PROTOCOL_VERSION, "peer").encode_to_vec())
            .await
            .unwrap();
        let mut head = [0u8; 8];
        let r = tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut head)).await;
        // HTTP/2 answers with its own preface (a SETTINGS frame), or closes.
        assert!(
            !matches!(r, Ok(Ok(_))) || head != MAGIC,
            "a router configured for gRPC links must not take a framed one"
        );
    });
}
