//! Real handshakes on 127.0.0.1: a success with both identities, each refusal reason (seen by the
//! side that refuses and, where TLS carries it, by the refused side), reload and rotation.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use wuos_model::{Role, RouterId};
use wuos_pki::{
    Capability, Identity, InitOptions, Pki, Refusal, Refused, RevokeTarget, ServerTlsStream, TlsContext, TlsError,
    TlsFiles, Validity, accept, connect,
};

const T: Duration = Duration::from_secs(5);

fn r(id: &str) -> RouterId {
    RouterId::new(id).unwrap()
}

/// A PKI with routers r1 (fog, orchestrator) and r2 (edge).
fn pki(dir: &Path) -> Pki {
    let pki = Pki::init(dir, &InitOptions::default()).unwrap();
    pki.issue(
        &r("r1"),
        Role::Fog,
        &BTreeSet::from([Capability::Orchestrator]),
        Validity::days(1),
    )
    .unwrap();
    pki.issue(&r("r2"), Role::Edge, &BTreeSet::new(), Validity::days(1))
        .unwrap();
    pki
}

fn ctx(dir: &Path, router: &str) -> TlsContext {
    TlsContext::load(TlsFiles::in_pki_dir(dir, &r(router))).unwrap()
}

/// A server that accepts one connection and answers: the accept result goes back; on success
/// it echoes one line.
async fn serve_once(ctx: TlsContext) -> (std::net::SocketAddr, tokio::task::JoinHandle<Result<Identity, Refused>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let (mut stream, id) = accept(&ctx, tcp, T).await?;
        echo(&mut stream).await;
        Ok(id)
    });
    (addr, task)
}

async fn echo(stream: &mut ServerTlsStream) {
    let mut buf = [0u8; 64];
    if let Ok(n) = stream.read(&mut buf).await
        && n > 0
    {
        let _ = stream.write_all(&buf[..n]).await;
        let _ = stream.flush().await;
    }
}

/// Sends `msg` and reads the echo.
async fn ping<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    s: &mut S,
    msg: &[u8],
) -> std::io::Result<Vec<u8>> {
    s.write_all(msg).await?;
    s.flush().await?;
    let mut buf = vec![0u8; msg.len()];
    s.read_exact(&mut buf).await?;
    Ok(buf)
}

#[tokio::test]
async fn matching_identities_shake_hands_and_exchange_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    pki(tmp.path());
    let (addr, server) = serve_once(ctx(tmp.path(), "r1")).await;
    let (mut stream, server_id) = connect(&ctx(tmp.path(), "r2"), addr, &r("r1"), T).await.unwrap();
    assert_eq!(server_id.router, r("r1"));
    assert_eq!(server_id.role, Role::Fog);
    assert!(server_id.may(Capability::Orchestrator));
    assert_eq!(ping(&mut stream, b"hello").await.unwrap(), b"hello");
    let client_id = server.await.unwrap().unwrap();
    assert_eq!(client_id.router, r("r2"), "the server sees the client's identity");
    assert_eq!(client_id.role, Role::Edge);
    client_id.check_claim("r2").unwrap();
    assert_eq!(
        client_id.check_claim("r1").unwrap_err().reason,
        Refusal::IdentityMismatch
    );
}

#[tokio::test]
async fn connecting_to_another_router_than_expected_is_an_identity_mismatch() {
    let tmp = tempfile::tempdir().unwrap();
    pki(tmp.path());
    // r2 listens; the client expects r1.
    let (addr, server) = serve_once(ctx(tmp.path(), "r2")).await;
    let e = connect(&ctx(tmp.path(), "r1"), addr, &r("r1"), T).await.unwrap_err();
    assert_eq!(e.refusal(), Some(Refusal::IdentityMismatch), "{e}");
    assert!(e.to_string().contains("\"r2\""), "the message names who answered: {e}");
    assert_eq!(server.await.unwrap().unwrap_err().reason, Refusal::Handshake);
}

/// Trusts any server certificate (to reach the server's check of the client).
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

/// A plain rustls client that trusts any server and presents `cert` (or nothing).
async fn raw_client(
    addr: std::net::SocketAddr,
    cert: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
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
    let tcp = TcpStream::connect(addr).await?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await
}

/// What the server and the refused client each saw.
async fn refused_client(
    server: TlsContext,
    cert: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> (Refusal, Refusal) {
    let (addr, task) = serve_once(server).await;
    let mut stream = raw_client(addr, cert).await.expect("a TLS 1.3 client finishes first");
    let client_saw = match ping(&mut stream, b"x").await {
        Ok(_) => panic!("the server should have refused the client"),
        Err(e) => Refused::from_io(&e).reason,
    };
    let server_saw = task.await.unwrap().expect_err("the server should refuse").reason;
    (server_saw, client_saw)
}

fn files_of(dir: &Path, router: &str) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    use rustls::pki_types::pem::PemObject;
    let f = TlsFiles::in_pki_dir(dir, &r(router));
    let chain = CertificateDer::pem_file_iter(&f.cert)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    (chain, PrivateKeyDer::from_pem_file(&f.key).unwrap())
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    pki(tmp.path());
    let (server, client) = refused_client(ctx(tmp.path(), "r1"), None).await;
    assert_eq!(server, Refusal::NoCertificate);
    assert_eq!(
        client,
        Refusal::NoCertificate,
        "certificate_required reaches the client"
    );
}

#[tokio::test]
async fn a_certificate_of_another_ca_is_refused_on_both_sides() {
    let tmp = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    pki(tmp.path());
    pki(other.path());
    // The client's certificate is the other CA's.
    let (server, client) = refused_client(ctx(tmp.path(), "r1"), Some(files_of(other.path(), "r2"))).await;
    assert_eq!((server, client), (Refusal::UnknownCa, Refusal::UnknownCa));
    // The server's certificate is the other CA's.
    let (addr, task) = serve_once(ctx(other.path(), "r1")).await;
    let e = connect(&ctx(tmp.path(), "r2"), addr, &r("r1"), T).await.unwrap_err();
    assert_eq!(e.refusal(), Some(Refusal::UnknownCa), "{e}");
    assert_eq!(
        task.await.unwrap().unwrap_err().reason,
        Refusal::UnknownCa,
        "unknown_ca reaches the server"
    );
}

#[tokio::test]
async fn a_certificate_revoked_after_issue_is_refused_after_reload() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = pki(tmp.path());
    let server = ctx(tmp.path(), "r1");
    let client = ctx(tmp.path(), "r2");
    pki.revoke(&RevokeTarget::Router(r("r2"))).unwrap();
    // Not reloaded yet: the old CRL is in force.
    let (addr, task) = serve_once(server.clone()).await;
    let (mut s, _) = connect(&client, addr, &r("r1"), T).await.unwrap();
    ping(&mut s, b"x").await.unwrap();
    task.await.unwrap().unwrap();
    // Reloaded: refused, and the client hears why.
    assert!(server.reload_if_changed().unwrap(), "the CRL changed");
    let (server_saw, client_saw) = refused_client(server.clone(), Some(files_of(tmp.path(), "r2"))).await;
    assert_eq!((server_saw, client_saw), (Refusal::Revoked, Refusal::Revoked));
    // And a client refuses a revoked server.
    pki.revoke(&RevokeTarget::Router(r("r1"))).unwrap();
    let other_client = {
        pki.issue(&r("r3"), Role::Dc, &BTreeSet::new(), Validity::days(1))
            .unwrap();
        ctx(tmp.path(), "r3")
    };
    let (addr, task) = serve_once(server).await;
    let e = connect(&other_client, addr, &r("r1"), T).await.unwrap_err();
    assert_eq!(e.refusal(), Some(Refusal::Revoked), "{e}");
    assert_eq!(task.await.unwrap().unwrap_err().reason, Refusal::Revoked);
}

#[tokio::test]
async fn an_expired_certificate_is_refused_on_both_sides() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = pki(tmp.path());
    let now = OffsetDateTime::now_utc();
    let past = Validity {
        not_before: now - time::Duration::days(10),
        not_after: now - time::Duration::days(1),
    };
    pki.issue(&r("old"), Role::Edge, &BTreeSet::new(), past).unwrap();
    let (server, client) = refused_client(ctx(tmp.path(), "r1"), Some(files_of(tmp.path(), "old"))).await;
    assert_eq!((server, client), (Refusal::Expired, Refusal::Expired));
    let (addr, task) = serve_once(ctx(tmp.path(), "old")).await;
    let e = connect(&ctx(tmp.path(), "r1"), addr, &r("old"), T).await.unwrap_err();
    assert_eq!(e.refusal(), Some(Refusal::Expired), "{e}");
    assert_eq!(task.await.unwrap().unwrap_err().reason, Refusal::Expired);
}

#[tokio::test]
async fn a_ca_signed_certificate_without_a_wuos_identity_is_not_a_router_cert() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = pki(tmp.path());
    let ca_pem = std::fs::read_to_string(pki.ca_path()).unwrap();
    let ca_key = rcgen::KeyPair::from_pem(&std::fs::read_to_string(tmp.path().join("ca.key")).unwrap()).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_pem, ca_key).unwrap();
    let mut p = rcgen::CertificateParams::new(vec!["web.example".to_string()]).unwrap();
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = p.signed_by(&key, &issuer).unwrap();
    let key = PrivateKeyDer::try_from(key.serialize_der()).unwrap();
    let (server, _) = refused_client(ctx(tmp.path(), "r1"), Some((vec![cert.der().clone()], key))).await;
    assert_eq!(server, Refusal::NotARouterCert);
}

#[tokio::test]
async fn garbage_and_silence_are_handshake_refusals() {
    let tmp = tempfile::tempdir().unwrap();
    pki(tmp.path());
    let (addr, task) = serve_once(ctx(tmp.path(), "r1")).await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    assert_eq!(task.await.unwrap().unwrap_err().reason, Refusal::Handshake);

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = ctx(tmp.path(), "r1");
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        accept(&server, tcp, Duration::from_millis(200)).await.map(|_| ())
    });
    let _silent = TcpStream::connect(addr).await.unwrap();
    let e = task.await.unwrap().unwrap_err();
    assert_eq!(e.reason, Refusal::Handshake);
    assert!(e.detail.contains("within"), "a timeout says so: {e}");
}

#[tokio::test]
async fn rotation_keeps_established_streams_and_new_handshakes_present_the_new_serial() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = pki(tmp.path());
    let server = ctx(tmp.path(), "r1");
    let client = ctx(tmp.path(), "r2");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // A config taken before the reload, used after it.
    let early_config = server.server_config();
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = tokio_rustls::TlsAcceptor::from(early_config.clone());
            let seen_tx = seen_tx.clone();
            tokio::spawn(async move {
                let Ok(mut s) = acceptor.accept(tcp).await else { return };
                let der = s.get_ref().1.peer_certificates().unwrap()[0].clone();
                seen_tx.send(Identity::from_der(&der).unwrap().serial).unwrap();
                loop {
                    let mut buf = [0u8; 64];
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            s.write_all(&buf[..n]).await.unwrap();
                            s.flush().await.unwrap();
                        }
                    }
                }
            });
        }
    });

    let old_server = server.identity();
    let old_client = client.identity();
    let (mut established, first) = connect(&client, addr, &r("r1"), T).await.unwrap();
    assert_eq!(first.serial, old_server.serial);
    assert_eq!(seen_rx.recv().await.unwrap(), old_client.serial);
    assert_eq!(ping(&mut established, b"before").await.unwrap(), b"before");

    // Rotate both routers' certificates; nothing changes until reload.
    let new_server = pki
        .issue(&r("r1"), Role::Fog, &BTreeSet::new(), Validity::days(2))
        .unwrap();
    let new_client = pki
        .issue(&r("r2"), Role::Edge, &BTreeSet::new(), Validity::days(2))
        .unwrap();
    assert_ne!(new_server.serial, old_server.serial);
    assert_eq!(server.identity(), old_server, "no reload, no change");
    assert_eq!(
        server.reload().unwrap(),
        new_server,
        "reload returns the identity now in force"
    );
    assert!(client.reload_if_changed().unwrap());
    assert!(!client.reload_if_changed().unwrap(), "nothing changed since");

    assert_eq!(
        ping(&mut established, b"after").await.unwrap(),
        b"after",
        "the established stream goes on"
    );
    let (mut fresh, second) = connect(&client, addr, &r("r1"), T).await.unwrap();
    assert_eq!(
        second.serial, new_server.serial,
        "a new handshake presents the new server certificate"
    );
    assert_eq!(
        seen_rx.recv().await.unwrap(),
        new_client.serial,
        "and the new client certificate"
    );
    assert_eq!(ping(&mut fresh, b"new").await.unwrap(), b"new");

    // Finishing the rotation: the old certificates are revoked; the established stream, made
    // with them, still runs (revocation applies to handshakes), new ones use the new certs.
    pki.revoke(&RevokeTarget::Superseded(r("r1"))).unwrap();
    pki.revoke(&RevokeTarget::Superseded(r("r2"))).unwrap();
    server.reload().unwrap();
    client.reload().unwrap();
    assert_eq!(ping(&mut established, b"still").await.unwrap(), b"still");
    connect(&client, addr, &r("r1"), T)
        .await
        .expect("the new certificates are not revoked");
}

#[tokio::test]
async fn a_failed_reload_keeps_the_material_in_force() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = pki(tmp.path());
    let server = ctx(tmp.path(), "r1");
    let before = server.identity();
    // Mid-rotation: the key is new, the certificate is not.
    pki.issue(&r("rx"), Role::Edge, &BTreeSet::new(), Validity::days(1))
        .unwrap();
    std::fs::copy(pki.key_path(&r("rx")), pki.key_path(&r("r1"))).unwrap();
    let e = server.reload_if_changed().unwrap_err();
    assert!(matches!(e, TlsError::KeyMismatch { .. }), "{e}");
    assert!(e.to_string().contains("r1.key"), "the message names the file: {e}");
    assert_eq!(server.identity(), before);
    let (addr, task) = serve_once(server.clone()).await;
    connect(&ctx(tmp.path(), "r2"), addr, &r("r1"), T)
        .await
        .expect("the old material still serves");
    task.await.unwrap().unwrap();
    // The rotation completes: the next check reloads.
    pki.issue(&r("r1"), Role::Fog, &BTreeSet::new(), Validity::days(1))
        .unwrap();
    assert!(server.reload_if_changed().unwrap());
    assert_ne!(server.identity().serial, before.serial);
}

#[test]
fn missing_files_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let e = TlsContext::load(TlsFiles::in_pki_dir(tmp.path(), &r("r1"))).unwrap_err();
    assert!(e.to_string().contains("ca.pem"), "{e}");
    assert_eq!(wuos_model::Classify::class(&e), wuos_model::ErrorClass::NotFound);
}

#[tokio::test]
async fn no_listener_is_a_tcp_error_not_a_refusal() {
    let tmp = tempfile::tempdir().unwrap();
    pki(tmp.path());
    let addr = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let e = connect(&ctx(tmp.path(), "r2"), addr, &r("r1"), T).await.unwrap_err();
    assert!(matches!(e, wuos_pki::ConnectError::Tcp { .. }), "{e}");
    assert_eq!(e.refusal(), None, "nothing to count as a TLS refusal");
    assert!(e.to_string().contains(&addr.to_string()), "{e}");
}
