//! wuosd over mutual TLS, on loopback (no root needed): a peer without a valid certificate —
//! none, another CA's, a revoked one, an expired one, one of another router than it claims —
//! cannot become a neighbor, each refusal counted under its reason; a certificate without the
//! orchestrator capability cannot send intents; a rotated certificate keeps the links up and is
//! what new handshakes see.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wuos_model::{Role, RouterId};
use wuos_pki::{Capability, IssueRequest, Pki, RevokeTarget, TlsContext, TlsFiles, Validity};
use wuos_proto::pb;
use wuos_proto::pb::session_envelope::Body;

const T: Duration = Duration::from_secs(5);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn r(id: &str) -> RouterId {
    RouterId::new(id).unwrap()
}

struct Daemon {
    child: Child,
    port: u16,
    mport: u16,
    sock: PathBuf,
    log: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `id`'s wuosd on 127.0.0.1 with its certificate from `pki`, and the given neighbors
/// (id, port); waits for its admin socket.
fn start(dir: &Path, pki: &Path, id: &str, port: u16, neighbors: &[(&str, u16)]) -> Daemon {
    // Not the routers' port: the kernel may hand the same free port out twice.
    let mport = std::iter::repeat_with(free_port).find(|&p| p != port).unwrap();
    let sock = dir.join(format!("{id}.sock"));
    let log = dir.join(format!("{id}.log"));
    let f = TlsFiles::in_pki_dir(pki, &r(id));
    let mut cfg = format!(
        "router_id = \"{id}\"\nrole = \"fog\"\nlisten = \"127.0.0.1:{port}\"\nadmin_socket = \"{}\"\n\
         metrics_listen = \"127.0.0.1:{mport}\"\ntelemetry_interval = \"200ms\"\ndata_dir = \"{}\"\n",
        sock.display(),
        dir.join(format!("{id}-data")).display()
    );
    for (n, p) in neighbors {
        cfg += &format!("[[neighbor]]\nid = \"{n}\"\naddress = \"127.0.0.1:{p}\"\ninterface = \"lo\"\n");
    }
    cfg += &format!(
        "[tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\ncrl = \"{}\"\n",
        f.ca.display(),
        f.cert.display(),
        f.key.display(),
        f.crl.display()
    );
    let path = dir.join(format!("{id}.toml"));
    std::fs::write(&path, cfg).unwrap();
    // A killed daemon of the same name leaves its socket behind.
    let _ = std::fs::remove_file(&sock);
    let mut child = Command::new(env!("CARGO_BIN_EXE_wuosd"))
        .arg("--config")
        .arg(&path)
        .env("RUST_LOG", "info")
        .stderr(std::fs::File::create(&log).unwrap())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // Started: its admin socket exists and its metrics answer (the last listener it opens, after
    // the routers' port); a daemon that exited instead fails here with its log.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sock.exists() || std::net::TcpStream::connect(("127.0.0.1", mport)).is_err() {
        let exited = child.try_wait().unwrap();
        assert!(
            Instant::now() < deadline && exited.is_none(),
            "wuosd {id} did not start ({exited:?}): {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Daemon {
        child,
        port,
        mport,
        sock,
        log,
    }
}

fn scrape(port: u16) -> String {
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut s = String::new();
    c.read_to_string(&mut s).unwrap();
    s
}

fn rejected(d: &Daemon, reason: &str) -> u64 {
    let label = format!("name=\"{reason}\"");
    scrape(d.mport)
        .lines()
        .find(|l| l.starts_with("wuosd_rejected_messages_total") && l.contains(&label))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

/// Waits (up to 10 s) until `f` holds.
fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn status(d: &Daemon) -> pb::StatusReply {
    wuos_proto::admin::status(d.sock.as_path()).await.unwrap()
}

fn counter(st: &pb::StatusReply, name: &str) -> u64 {
    st.counters.iter().find(|c| c.name == name).map_or(0, |c| c.value)
}

fn state_of(st: &pb::StatusReply, neighbor: &str) -> String {
    st.neighbors
        .iter()
        .find(|n| n.id == neighbor)
        .map(|n| n.state.clone())
        .unwrap_or_default()
}

/// Trusts any server certificate, to reach the server's judgement of ours.
#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn files_of(pki: &Path, router: &str) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    use rustls::pki_types::pem::PemObject;
    let f = TlsFiles::in_pki_dir(pki, &r(router));
    let chain = CertificateDer::pem_file_iter(&f.cert)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    (chain, PrivateKeyDer::from_pem_file(&f.key).unwrap())
}

/// A TLS client that presents `cert` (or none) and tries to talk: the daemon must refuse it.
async fn try_raw(port: u16, cert: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>) {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let b = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(provider)));
    let config = match cert {
        Some((chain, key)) => b.with_client_auth_cert(chain, key).unwrap(),
        None => b.with_no_client_auth(),
    };
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let Ok(mut s) = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()), tcp)
        .await
    else {
        return;
    };
    // HTTP/2's preface: a refused client learns it here, on its first exchange.
    let _ = s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
    let mut buf = [0u8; 64];
    let r = tokio::time::timeout(T, s.read(&mut buf))
        .await
        .expect("the daemon answers or closes");
    assert!(
        !matches!(r, Ok(n) if n > 0),
        "the daemon must refuse this client, not talk HTTP/2 with it"
    );
}

/// A link opened with `ctx`'s certificate whose first frame claims to be `claim`; the error, if
/// the daemon refuses it.
async fn open_link(ctx: &TlsContext, port: u16, server: &str, claim: &str) -> Result<pb::Frame, tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect_with_connector(wuos_pki::GrpcConnector::new(ctx.clone(), r(server), T))
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut c = pb::neighbor_client::NeighborClient::new(channel);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let header = Some(wuos_proto::validate::header(claim));
    tx.send(pb::Frame {
        header: header.clone(),
        hello: Some(pb::Hello {
            header,
            role: pb::Role::Edge as i32,
            boot_id: 9,
            hello_interval_ms: 200,
            dead_interval_ms: 600,
            interface: "lo".into(),
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut inbound = c
        .link(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    let f = tokio::time::timeout(T, inbound.message()).await.expect("an answer")?;
    drop(tx);
    Ok(f.expect("a frame"))
}

/// A Control session with `ctx`'s certificate, claiming `claim`; the code of the answer to one
/// start intent.
async fn intent_answer(ctx: &TlsContext, port: u16, server: &str, claim: &str) -> String {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect_with_connector(wuos_pki::GrpcConnector::new(ctx.clone(), r(server), T))
        .await
        .unwrap();
    let mut c = pb::control_client::ControlClient::new(channel);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(pb::SessionEnvelope {
        header: Some(wuos_proto::validate::header(claim)),
        session_id: 5,
        sequence: 1,
        body: Some(Body::Intents(pb::IntentBatch {
            intents: vec![pb::Intent {
                id: 1,
                kind: Some(pb::intent::Kind::ServiceInstance(pb::ServiceInstanceIntent {
                    service: "echo".into(),
                    present: true,
                })),
            }],
        })),
    })
    .await
    .unwrap();
    let mut replies = c
        .session(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let e = tokio::time::timeout(T, replies.message())
        .await
        .expect("an answer")
        .unwrap()
        .expect("an envelope");
    match e.body {
        Some(Body::Error(x)) => format!("{}: {}", x.code, x.message),
        Some(Body::Ack(_)) => "ack".into(),
        other => panic!("unexpected answer {other:?}"),
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn issue(pki: &Pki, id: &str, role: Role, caps: &[Capability], validity: Validity) {
    pki.issue(&r(id), role, &caps.iter().copied().collect::<BTreeSet<_>>(), validity)
        .unwrap();
}

#[test]
fn peers_without_a_valid_certificate_are_refused_by_reason_and_edges_send_no_intents() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, ca1, ca2) = (tmp.path(), tmp.path().join("pki"), tmp.path().join("other-ca"));
    let pki = Pki::init(&ca1, &Default::default()).unwrap();
    issue(&pki, "me", Role::Fog, &[], Validity::days(1));
    issue(&pki, "peer", Role::Edge, &[], Validity::days(1));
    issue(&pki, "orch", Role::Fog, &[Capability::Orchestrator], Validity::days(1));
    issue(&pki, "gone", Role::Edge, &[], Validity::days(1));
    let now = time::OffsetDateTime::now_utc();
    let past = Validity {
        not_before: now - time::Duration::days(10),
        not_after: now - time::Duration::days(1),
    };
    issue(&pki, "old", Role::Edge, &[], past);
    pki.revoke(&RevokeTarget::Router(r("gone"))).unwrap();
    let other = Pki::init(&ca2, &Default::default()).unwrap();
    issue(&other, "peer", Role::Edge, &[], Validity::days(1));

    let port = free_port();
    let me = start(dir, &ca1, "me", port, &[("peer", 1), ("old", 1), ("gone", 1)]);
    let rt = rt();
    // Refused at the handshake, each under its reason.
    rt.block_on(try_raw(port, None));
    wait_until("no_certificate counted", || rejected(&me, "tls_no_certificate") == 1);
    rt.block_on(try_raw(port, Some(files_of(&ca2, "peer"))));
    wait_until("unknown_ca counted", || rejected(&me, "tls_unknown_ca") == 1);
    rt.block_on(try_raw(port, Some(files_of(&ca1, "gone"))));
    wait_until("revoked counted", || rejected(&me, "tls_revoked") == 1);
    rt.block_on(try_raw(port, Some(files_of(&ca1, "old"))));
    wait_until("expired counted", || rejected(&me, "tls_expired") == 1);
    // A valid certificate of another router than the link's first frame claims.
    let orch = TlsContext::load(TlsFiles::in_pki_dir(&ca1, &r("orch"))).unwrap();
    let e = rt.block_on(open_link(&orch, port, "me", "peer")).unwrap_err();
    assert!(
        e.message().contains("orch"),
        "the refusal names the certificate's router: {e}"
    );
    assert_eq!(rejected(&me, "tls_identity_mismatch"), 1);
    // None of them became a neighbor.
    let st = rt.block_on(status(&me));
    for n in ["peer", "old", "gone"] {
        assert_eq!(state_of(&st, n), "down", "{n} must not be a neighbor");
    }
    assert_eq!(counter(&st, "links_opened"), 0, "no link was opened");
    // The real peer is.
    let peer = TlsContext::load(TlsFiles::in_pki_dir(&ca1, &r("peer"))).unwrap();
    let f = rt.block_on(open_link(&peer, port, "me", "peer")).unwrap();
    assert_eq!(f.hello.expect("the daemon's hello").header.unwrap().sender, "me");

    // Intents: an edge's certificate may not send them; one claiming another router neither;
    // the orchestrator's goes through to the controller (which then answers on its own terms).
    let a = rt.block_on(intent_answer(&peer, port, "me", "peer"));
    assert!(
        a.starts_with("forbidden:") && a.contains("orchestrator capability"),
        "{a}"
    );
    assert_eq!(rejected(&me, "capability"), 1);
    let a = rt.block_on(intent_answer(&orch, port, "me", "peer"));
    assert!(a.starts_with("forbidden:"), "{a}");
    assert_eq!(rejected(&me, "tls_identity_mismatch"), 2);
    let a = rt.block_on(intent_answer(&orch, port, "me", "orch"));
    assert!(!a.starts_with("forbidden"), "an orchestrator's intent is taken: {a}");
    let log = std::fs::read_to_string(&me.log).unwrap();
    assert!(log.contains("refused a TLS connection"), "{log}");
}

#[test]
fn a_rotated_certificate_keeps_the_links_up_and_is_what_new_handshakes_see() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, ca) = (tmp.path(), tmp.path().join("pki"));
    let pki = Pki::init(&ca, &Default::default()).unwrap();
    pki.issue_many(&[
        IssueRequest {
            router: r("r1"),
            role: Role::Fog,
            capabilities: BTreeSet::new(),
            validity: Validity::days(1),
        },
        IssueRequest {
            router: r("r2"),
            role: Role::Edge,
            capabilities: BTreeSet::new(),
            validity: Validity::days(1),
        },
    ])
    .unwrap();
    let (p1, p2) = (free_port(), free_port());
    let d1 = start(dir, &ca, "r1", p1, &[("r2", p2)]);
    let d2 = start(dir, &ca, "r2", p2, &[("r1", p1)]);
    let rt = rt();
    let up = |d: &Daemon, n: &str| state_of(&rt.block_on(status(d)), n) == "up";
    wait_until("r1 and r2 neighbors", || up(&d1, "r2") && up(&d2, "r1"));
    let before = rt.block_on(status(&d1));

    // Rotate r1's certificate, then revoke the old one: r1 reloads both (it looks every 2 s).
    issue(&pki, "r1", Role::Fog, &[], Validity::days(2));
    wait_until("r1 reloaded its certificate", || {
        std::fs::read_to_string(&d1.log)
            .unwrap()
            .contains("TLS files changed: reloaded")
    });
    pki.revoke(&RevokeTarget::Superseded(r("r1"))).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let after = rt.block_on(status(&d1));
    assert_eq!(state_of(&after, "r2"), "up");
    for c in ["links_opened", "links_closed", "neighbor_down"] {
        assert_eq!(counter(&after, c), counter(&before, c), "{c}: the link was not dropped");
    }
    assert!(
        counter(&after, "frames_received") > counter(&before, "frames_received"),
        "frames still flow on the old session"
    );

    // r2 restarts: its new handshake with r1 must see r1's new certificate (the old one is
    // revoked, so a handshake with it would be refused).
    drop(d2);
    let d2 = start(dir, &ca, "r2", p2, &[("r1", p1)]);
    assert_eq!(d2.port, p2);
    wait_until("r2 back up with r1 over the new certificate", || up(&d2, "r1"));
    assert_eq!(rejected(&d2, "tls_revoked"), 0);
}
