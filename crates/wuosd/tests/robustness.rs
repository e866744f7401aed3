//! wuosd refuses bad protocol messages — wrong version, spoofed sender, oversized, undecodable —
//! with a logged reason and a counter, keeps running, and stops cleanly on SIGTERM. Runs a real
//! daemon on loopback (no root needed).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use wuos_proto::pb;
use wuos_proto::pb::neighbor_client::NeighborClient;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sends raw bytes as a gRPC message: what a broken or hostile peer could put on the wire.
#[derive(Clone, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        use bytes::Buf;
        let mut v = vec![0; src.remaining()];
        src.copy_to_slice(&mut v);
        Ok(Some(v))
    }
}

fn header(version: u32, sender: &str) -> Option<pb::Header> {
    Some(pb::Header {
        version,
        sender: sender.into(),
    })
}

fn hello(version: u32, sender: &str) -> pb::Hello {
    pb::Hello {
        header: header(version, sender),
        role: pb::Role::Edge as i32,
        boot_id: 7,
        hello_interval_ms: 100,
        dead_interval_ms: 300,
        interface: "lo".into(),
    }
}

fn scrape(port: u16) -> String {
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut s = String::new();
    c.read_to_string(&mut s).unwrap();
    s
}

fn metric(text: &str, name: &str, label: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(name) && l.contains(label))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

struct Running {
    daemon: Daemon,
    dir: tempfile::TempDir,
    port: u16,
    mport: u16,
    /// The admin API's TCP address (`admin_listen`).
    aport: u16,
    sock: std::path::PathBuf,
}

/// Starts a wuosd on loopback with two configured neighbors ("peer" at 127.0.0.1, "far" at
/// 127.0.0.2) and waits for its admin socket.
fn start() -> Running {
    let dir = tempfile::tempdir().unwrap();
    let (port, mport, aport) = (free_port(), free_port(), free_port());
    let sock = dir.path().join("me.sock");
    let cfg = dir.path().join("wuosd.toml");
    std::fs::write(
        &cfg,
        format!(
            "router_id = \"me\"\nrole = \"fog\"\nlisten = \"127.0.0.1:{port}\"\nadmin_socket = \"{}\"\n\
             admin_listen = \"127.0.0.1:{aport}\"\n\
             metrics_listen = \"127.0.0.1:{mport}\"\ntelemetry_interval = \"100ms\"\ndata_dir = \"{}\"\n\
             [[neighbor]]\nid = \"peer\"\naddress = \"127.0.0.1:1\"\ninterface = \"lo\"\n\
             [[neighbor]]\nid = \"far\"\naddress = \"127.0.0.2:7470\"\ninterface = \"lo\"\n",
            sock.display(),
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("wuosd.log")).unwrap();
    let d = Daemon(
        Command::new(env!("CARGO_BIN_EXE_wuosd"))
            .arg("--config")
            .arg(&cfg)
            .stderr(log)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sock.exists() {
        assert!(Instant::now() < deadline, "wuosd did not start");
        std::thread::sleep(Duration::from_millis(20));
    }

    Running {
        daemon: d,
        dir,
        port,
        mport,
        aport,
        sock,
    }
}

#[test]
fn bad_messages_are_refused_counted_and_survived() {
    let Running {
        daemon: mut d,
        dir,
        port,
        mport,
        aport,
        sock,
    } = start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = NeighborClient::connect(format!("http://127.0.0.1:{port}"))
            .await
            .unwrap();
        // A protocol 1.x router: refused, saying why.
        let e = c.hello(hello((1 << 16) | 1, "peer")).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
        assert!(
            e.message()
                .contains("unsupported protocol version 1.1 (this router speaks 2.x)"),
            "{}",
            e.message()
        );
        // A link opened by the configured neighbor: its hello is answered by ours.
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let first = pb::Frame {
            header: header(wuos_proto::PROTOCOL_VERSION, "peer"),
            hello: Some(hello(wuos_proto::PROTOCOL_VERSION, "peer")),
            ..Default::default()
        };
        tx.send(first.clone()).await.unwrap();
        let mut inbound = c
            .link(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        let answer = tokio::time::timeout(Duration::from_secs(5), inbound.message())
            .await
            .expect("an answer within 5 s")
            .unwrap()
            .expect("a frame");
        assert_eq!(answer.header.unwrap().sender, "me");
        assert!(answer.hello.expect("its hello comes first").boot_id > 0);
        drop(tx);
        // Another neighbor's id from the wrong address.
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let far = pb::Frame {
            header: header(wuos_proto::PROTOCOL_VERSION, "far"),
            hello: Some(hello(wuos_proto::PROTOCOL_VERSION, "far")),
            ..Default::default()
        };
        tx.send(far).await.unwrap();
        let e = c
            .link(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .unwrap_err();
        assert!(e.message().contains("sender address mismatch"), "{}", e.message());
        // Oversized: far more adverts than one frame may carry.
        let advert = pb::TelemetryAdvert {
            origin: "x".repeat(60),
            ..Default::default()
        };
        let big = pb::Frame {
            adverts: vec![advert; 2000],
            ..first
        };
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.send(big).await.unwrap();
        let e = c
            .link(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .unwrap_err();
        assert!(e.message().contains("oversized"), "{}", e.message());
        // Undecodable bytes.
        let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut raw = tonic::client::Grpc::new(channel);
        raw.ready().await.unwrap();
        let path = tonic::codegen::http::uri::PathAndQuery::from_static("/wuos.v1.Neighbor/Hello");
        let e = raw
            .unary(
                tonic::Request::new(vec![0xff, 0xff, 0xff, 0xff, 0x0f, 0x01]),
                path,
                RawCodec,
            )
            .await
            .unwrap_err();
        assert_ne!(e.code(), tonic::Code::Ok);
    });

    // Still running, and every refusal was counted.
    assert!(d.0.try_wait().unwrap().is_none(), "wuosd must survive bad messages");
    let text = scrape(mport);
    assert_eq!(
        metric(&text, "wuosd_rejected_messages_total", "name=\"version\""),
        1,
        "{text}"
    );
    assert_eq!(
        metric(&text, "wuosd_rejected_messages_total", "name=\"sender_address\""),
        1,
        "{text}"
    );
    assert_eq!(
        metric(&text, "wuosd_rejected_messages_total", "name=\"too_large\""),
        1,
        "{text}"
    );
    let rpc_errors: u64 = text
        .lines()
        .filter(|l| l.starts_with("wuosd_rpc_errors_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(
        rpc_errors, 4,
        "four refused calls (version, address, size, undecodable):\n{text}"
    );
    let status = rt.block_on(wuos_proto::admin::status(sock.as_path())).unwrap();
    assert_eq!(status.router_id, "me");
    // The same API by address (admin_listen), as `wuos status --address` reaches it.
    let by_address = rt
        .block_on(wuos_proto::admin::status(wuos_proto::admin::Target::Address(format!(
            "127.0.0.1:{aport}"
        ))))
        .unwrap();
    assert_eq!(by_address.router_id, "me");
    let log = std::fs::read_to_string(dir.path().join("wuosd.log")).unwrap();
    assert!(
        log.contains("refused a protocol 1.x call") && log.contains("unsupported protocol version 1.1"),
        "{log}"
    );

    // SIGTERM: a clean stop that removes the admin socket.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(d.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    let status = loop {
        if let Some(s) = d.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "wuosd did not stop within 3 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "clean exit expected, got {status}");
    assert!(!Path::new(&sock).exists(), "the admin socket must be removed");
}

#[test]
fn a_bad_config_is_refused_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(
        &cfg,
        "router_id = \"me\"\nrole = \"fog\"\nadmin_socket = \"/tmp/x\"\ndata_dir = \"/tmp/y\"\nhop_limit = 0\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wuosd"))
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml") && err.contains("hop_limit") && err.contains("fix:"),
        "{err}"
    );
}

#[test]
fn control_sessions_follow_the_envelope_rules() {
    use pb::session_envelope::Body;
    let r = start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = pb::control_client::ControlClient::connect(format!("http://127.0.0.1:{}", r.port))
            .await
            .unwrap();
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let mut replies = c
            .session(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        let env = |seq: u64, ids: &[u64]| pb::SessionEnvelope {
            header: header(wuos_proto::PROTOCOL_VERSION, "orch"),
            session_id: 42,
            sequence: seq,
            body: Some(Body::Intents(pb::IntentBatch {
                intents: ids
                    .iter()
                    .map(|&id| pb::Intent {
                        id,
                        kind: Some(pb::intent::Kind::Policy(pb::PolicyIntent { text: "voip".into() })),
                    })
                    .collect(),
            })),
        };
        let error_of = |e: &pb::SessionEnvelope| match &e.body {
            Some(Body::Error(x)) => (x.intent_id, x.code.clone()),
            other => panic!("expected an error envelope, got {other:?}"),
        };
        tx.send(env(1, &[10, 11])).await.unwrap();
        for (seq, id) in [(1, 10), (2, 11)] {
            let e = replies.message().await.unwrap().expect("a reply per intent");
            assert_eq!(
                (e.session_id, e.sequence),
                (42, seq),
                "replies are numbered in the session"
            );
            // A policy is not an intent a controller takes: refused, saying where policies go.
            assert_eq!(error_of(&e), (id, "failed".to_string()));
            match &e.body {
                Some(Body::Error(x)) => assert!(x.message.contains("wuos policy apply"), "{}", x.message),
                _ => unreachable!(),
            }
            assert_eq!(e.header.unwrap().sender, "me");
        }
        tx.send(env(5, &[12])).await.unwrap();
        let e = replies.message().await.unwrap().unwrap();
        assert_eq!(error_of(&e).1, "sequence", "a gap in the sequence is reported");
    });
    assert!(r.sock.exists());
}
