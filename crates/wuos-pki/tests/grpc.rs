//! tonic over the PKI on 127.0.0.1: a tonic server fed by `incoming`, a channel made with
//! `GrpcConnector`, and a hand-rolled service that answers with who called it (read from the
//! request's `PeerInfo`). The channel is used as a plain HTTP/2 service (no protobuf needed).

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tonic::body::Body;
use tonic::codegen::http;
use tonic::server::NamedService;
use tonic::transport::{Endpoint, Server};
use tower::ServiceExt;
use wuos_model::{Role, RouterId};
use wuos_pki::{
    Capability, GrpcConnector, IncomingOptions, InitOptions, PeerInfo, Pki, Refusal, TlsContext, TlsFiles, Validity,
    incoming,
};

fn r(id: &str) -> RouterId {
    RouterId::new(id).unwrap()
}

/// Answers every call with the caller's router id and serial in headers.
#[derive(Clone)]
struct Who;

impl NamedService for Who {
    const NAME: &'static str = "wuos.test.Who";
}

impl tower::Service<http::Request<Body>> for Who {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let peer = req.extensions().get::<PeerInfo>().cloned();
        let (router, serial) = peer.map_or(("none".into(), "none".into()), |p| {
            (p.identity.router.to_string(), p.identity.serial)
        });
        let resp = http::Response::builder()
            .status(200)
            .header("content-type", "application/grpc")
            .header("grpc-status", "0")
            .header("x-peer-router", router)
            .header("x-peer-serial", serial)
            .body(Body::empty())
            .unwrap();
        std::future::ready(Ok(resp))
    }
}

async fn who(channel: tonic::transport::Channel) -> (String, String) {
    let req = http::Request::builder()
        .method("POST")
        .uri("http://r1/wuos.test.Who/Ask")
        .header("content-type", "application/grpc")
        .body(Body::empty())
        .unwrap();
    let resp = channel.oneshot(req).await.expect("the call goes through");
    let h = |k: &str| resp.headers()[k].to_str().unwrap().to_string();
    (h("x-peer-router"), h("x-peer-serial"))
}

#[tokio::test]
async fn tonic_serves_verified_peers_and_reports_refusals_without_blocking_others() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::init(tmp.path(), &InitOptions::default()).unwrap();
    let none = BTreeSet::new();
    pki.issue(&r("r1"), Role::Fog, &none, Validity::days(1)).unwrap();
    let r2 = pki
        .issue(
            &r("r2"),
            Role::Edge,
            &BTreeSet::from([Capability::Controller]),
            Validity::days(1),
        )
        .unwrap();
    let server_ctx = TlsContext::load(TlsFiles::in_pki_dir(tmp.path(), &r("r1"))).unwrap();
    let client_ctx = TlsContext::load(TlsFiles::in_pki_dir(tmp.path(), &r("r2"))).unwrap();

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let refusals: Arc<Mutex<Vec<(Refusal, SocketAddr)>>> = Arc::default();
    let seen = refusals.clone();
    let opts = IncomingOptions {
        handshake_timeout: Duration::from_secs(4),
        max_handshakes: 16,
    };
    let conns = incoming(listener, server_ctx, opts, move |r, a| {
        seen.lock().unwrap().push((r.reason, a))
    });
    tokio::spawn(Server::builder().add_service(Who).serve_with_incoming(conns));

    // A client that connects and says nothing: its handshake waits for the timeout...
    let _silent = TcpStream::connect(addr).await.unwrap();
    // ...while a real client is served at once.
    let started = std::time::Instant::now();
    let endpoint = Endpoint::from_shared(format!("http://{addr}")).unwrap();
    let connector = GrpcConnector::new(client_ctx.clone(), r("r1"), Duration::from_secs(5));
    let channel = endpoint.connect_with_connector(connector).await.unwrap();
    assert_eq!(
        who(channel).await,
        ("r2".to_string(), r2.serial.clone()),
        "the handler sees the caller"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "a silent client must not delay others (took {:?})",
        started.elapsed()
    );

    // A connector that expects another router refuses the server.
    let wrong = GrpcConnector::new(client_ctx.clone(), r("r9"), Duration::from_secs(5));
    let e = endpoint.connect_with_connector(wrong).await.unwrap_err();
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    let refusal = std::iter::from_fn(|| {
        let c = cause?;
        cause = c.source();
        Some(c)
    })
    .find_map(|c| c.downcast_ref::<wuos_pki::ConnectError>())
    .and_then(wuos_pki::ConnectError::refusal);
    assert_eq!(refusal, Some(Refusal::IdentityMismatch), "the error says why: {e:?}");

    // The silent client times out and is counted; so is the one that hung up on r9's mismatch.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while refusals.lock().unwrap().len() < 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got: Vec<Refusal> = refusals.lock().unwrap().iter().map(|(r, _)| *r).collect();
    assert_eq!(got.len(), 2, "two refusals counted: {got:?}");
    assert!(got.iter().all(|r| *r == Refusal::Handshake), "{got:?}");
    assert!(refusals.lock().unwrap().iter().all(|(_, a)| a.ip().is_loopback()));
}
