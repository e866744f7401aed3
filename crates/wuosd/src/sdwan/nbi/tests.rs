//! The NBI over HTTP requests (no socket: the router as a tower service): the token, each
//! endpoint, refusals with their codes, and the OpenAPI document naming every route.

use axum::body::Body;
use axum::http::{Method, Request as HttpRequest};
use tower::ServiceExt;

use super::*;
use crate::sdwan::controller::tests::{Setup, e1_synced};

const TOKEN: &str = "0123456789abcdef";

async fn call(
    app: &Router,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (StatusCode, serde_json::Value) {
    let mut req = HttpRequest::builder().method(method).uri(path);
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    if !body.is_empty() {
        req = req.header(header::CONTENT_TYPE, "application/json");
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::from(body.to_string())).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
    let v = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, v)
}

#[tokio::test]
async fn the_rest_nbi_changes_reads_and_refuses() {
    let s = Setup::new();
    let h = s.start().await;
    let app = router(h.clone(), TOKEN.into());
    let t = Some(TOKEN);

    // The token: none, a wrong one, a right one.
    for bad in [None, Some("0123456789abcdeX"), Some("short")] {
        let (st, v) = call(&app, Method::GET, "/v1/overlays", bad, "").await;
        assert_eq!(st, StatusCode::UNAUTHORIZED, "{bad:?}");
        assert_eq!(v["error"], "unauthorized");
    }
    let (st, v) = call(&app, Method::GET, "/v1/overlays", t, "").await;
    assert_eq!((st, v), (StatusCode::OK, serde_json::json!([])));

    // The OpenAPI document needs no token and names every route.
    let (st, spec) = call(&app, Method::GET, "/openapi.json", None, "").await;
    assert_eq!(st, StatusCode::OK);
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
    for p in [
        "/v1/sites",
        "/v1/overlays",
        "/v1/overlays/{name}",
        "/v1/overlays/{name}/sites",
        "/v1/overlays/{name}/sites/{site}",
        "/v1/classes",
        "/v1/classes/{name}",
        "/v1/classes/{name}/overlay",
        "/v1/classes/{name}/services",
        "/v1/classes/{name}/services/{service}",
        "/v1/actions",
        "/v1/status",
    ] {
        assert!(spec["paths"][p].is_object(), "{p} missing from the OpenAPI document");
    }
    assert!(spec["components"]["schemas"]["Action"].is_object());
    assert!(spec["components"]["securitySchemes"]["bearer"].is_object());

    // Create an overlay and a class, read them back.
    let (st, v) = call(
        &app,
        Method::POST,
        "/v1/overlays",
        t,
        r#"{"name":"voice","sites":{"e1":{},"e2":{}},"underlays":["mpls"]}"#,
    )
    .await;
    assert_eq!((st, &v["generation"]), (StatusCode::OK, &serde_json::json!(1)), "{v}");
    let (st, v) = call(
        &app,
        Method::POST,
        "/v1/overlays",
        t,
        r#"{"name":"bulk","sites":{"e1":{},"e2":{}}}"#,
    )
    .await;
    assert_eq!((st, &v["generation"]), (StatusCode::OK, &serde_json::json!(2)), "{v}");
    let (st, v) = call(
        &app,
        Method::POST,
        "/v1/classes",
        t,
        r#"{"name":"sip","overlay":"voice","rules":[{"proto":"udp","dst_ports":"5060"}]}"#,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (_, v) = call(&app, Method::GET, "/v1/overlays/voice", t, "").await;
    assert_eq!(v["id"], 1);
    assert_eq!(v["underlays"], serde_json::json!(["mpls"]));
    let (st, v) = call(&app, Method::PUT, "/v1/classes/sip/overlay", t, r#"{"overlay":"bulk"}"#).await;
    assert_eq!((st, &v["generation"]), (StatusCode::OK, &serde_json::json!(4)), "{v}");
    let (st, _) = call(
        &app,
        Method::POST,
        "/v1/classes/sip/services",
        t,
        r#"{"service":"pabx","rules":[{"proto":"tcp","dst_ports":5061}]}"#,
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = call(&app, Method::POST, "/v1/overlays/voice/sites", t, r#"{"site":"e3"}"#).await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = call(&app, Method::DELETE, "/v1/overlays/voice/sites/e3", t, "").await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = call(&app, Method::DELETE, "/v1/classes/sip/services/pabx", t, "").await;
    assert_eq!(st, StatusCode::OK);
    let (_, v) = call(&app, Method::GET, "/v1/classes", t, "").await;
    assert_eq!(
        (v[0]["name"].as_str(), v[0]["overlay"].as_str()),
        (Some("sip"), Some("bulk"))
    );
    let status = e1_synced(&h, 8).await;
    assert_eq!(status.edges["e1"].classes["sip"], "bulk");
    let (_, v) = call(&app, Method::GET, "/v1/status", t, "").await;
    assert_eq!(v["generation"], 8);
    assert_eq!(v["edges"]["e1"]["in_sync"], true);
    let (_, v) = call(&app, Method::GET, "/v1/sites", t, "").await;
    assert_eq!(v["underlays"], serde_json::json!(["inet", "mpls"]));

    // Refusals: each with its code and the name of what is wrong; nothing changes.
    for (method, path, body, code, needle) in [
        (
            Method::POST,
            "/v1/overlays",
            r#"{"name":"voice","sites":{"e1":{}}}"#,
            StatusCode::CONFLICT,
            "voice",
        ),
        (
            Method::POST,
            "/v1/overlays",
            r#"{"name":"x","sites":{"e9":{}}}"#,
            StatusCode::NOT_FOUND,
            "e9",
        ),
        (
            Method::POST,
            "/v1/overlays",
            r#"{"name":"x","sites":{"e1":{}},"underlays":["sat"]}"#,
            StatusCode::NOT_FOUND,
            "sat",
        ),
        (
            Method::POST,
            "/v1/overlays",
            r#"{"name":"Bad Name"}"#,
            StatusCode::BAD_REQUEST,
            "Bad Name",
        ),
        (
            Method::POST,
            "/v1/overlays",
            r#"{"name":"x","colour":"red"}"#,
            StatusCode::BAD_REQUEST,
            "colour",
        ),
        (
            Method::POST,
            "/v1/overlays",
            r#"{"name":"#,
            StatusCode::BAD_REQUEST,
            "EOF",
        ),
        (
            Method::POST,
            "/v1/classes",
            r#"{"name":"c","overlay":"nope","rules":[]}"#,
            StatusCode::NOT_FOUND,
            "nope",
        ),
        (
            Method::POST,
            "/v1/classes",
            r#"{"name":"c","overlay":"voice","rules":[{"proto":"udp","dst_ports":70000}]}"#,
            StatusCode::BAD_REQUEST,
            "70000",
        ),
        (
            Method::POST,
            "/v1/classes",
            r#"{"name":"c","overlay":"voice","rules":[{"proto":"udp","dst_ports":5060}]}"#,
            StatusCode::CONFLICT,
            "sip",
        ),
        (
            Method::POST,
            "/v1/classes",
            r#"{"name":"c","overlay":"voice","rules":[{"dst":"10.0.0.300/24"}]}"#,
            StatusCode::BAD_REQUEST,
            "10.0.0.300",
        ),
        (Method::DELETE, "/v1/overlays/bulk", "", StatusCode::CONFLICT, "sip"),
        (Method::DELETE, "/v1/overlays/nope", "", StatusCode::NOT_FOUND, "nope"),
        (Method::GET, "/v1/overlays/nope", "", StatusCode::NOT_FOUND, "nope"),
        (
            Method::POST,
            "/v1/actions",
            r#"[{"action":"delete_class","name":"sip"},{"action":"delete_overlay","name":"nope"}]"#,
            StatusCode::NOT_FOUND,
            "action 1",
        ),
        (Method::GET, "/v2/nothing", "", StatusCode::NOT_FOUND, "openapi"),
    ] {
        let (st, v) = call(&app, method.clone(), path, t, body).await;
        assert_eq!(st, code, "{method} {path} {body}: {v}");
        let msg = v["message"].as_str().unwrap_or_default();
        assert!(
            msg.contains(needle),
            "{method} {path} {body}: {msg:?} should name {needle:?}"
        );
    }
    let (g, d) = h.desired().await.unwrap();
    assert_eq!(
        (g, d.overlays.len(), d.classes.len()),
        (8, 2, 1),
        "the refusals changed nothing"
    );
}

/// The same port serves REST (HTTP/1.1, the `wuos` client) and gRPC (HTTP/2, a tonic client).
#[tokio::test]
async fn rest_and_grpc_share_the_port_and_the_token() {
    use wuos_proto::pb;
    use wuos_proto::pb::sdwan_nbi_client::SdwanNbiClient;

    let s = Setup::new();
    let h = s.start().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(listener, h.clone(), TOKEN.into()));

    let mut grpc = SdwanNbiClient::connect(format!("http://{addr}")).await.unwrap();
    fn with_token<T>(msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        r.metadata_mut()
            .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
        r
    }
    let e = grpc.get_state(pb::ReadRequest {}).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);

    let create = |name: &str, layout: &str| pb::NbiAction {
        kind: Some(pb::nbi_action::Kind::CreateOverlay(pb::CreateOverlay {
            name: name.into(),
            sites: ["e1", "e2"]
                .iter()
                .map(|s| pb::Member {
                    site: s.to_string(),
                    lans: vec![],
                })
                .collect(),
            layout: layout.into(),
            hub: "e1".into(),
            underlays: vec!["mpls".into()],
            ..Default::default()
        })),
    };
    let class = pb::NbiAction {
        kind: Some(pb::nbi_action::Kind::CreateClass(pb::CreateClass {
            name: "sip".into(),
            overlay: "voice".into(),
            rules: vec![pb::MatchRule {
                proto: "udp".into(),
                dst_ports: "5060".into(),
                dscp: Some(46),
                ..Default::default()
            }],
            steering: Some(pb::Steering {
                sla: Some(pb::Sla {
                    max_latency_ms: Some(40.0),
                    max_loss_pct: Some(1.0),
                    ..Default::default()
                }),
                prefer: vec!["voice/mpls".into()],
                ..Default::default()
            }),
        })),
    };
    let r = grpc
        .apply(with_token(pb::ApplyRequest {
            actions: vec![create("voice", "hub_and_spoke"), class],
        }))
        .await
        .unwrap();
    assert_eq!(r.get_ref().generation, 1);

    // Refusals keep their class; a bad field is named; nothing changes.
    for (a, code, needle) in [
        (create("voice", ""), tonic::Code::FailedPrecondition, "voice"),
        (create("x", "ring"), tonic::Code::InvalidArgument, "ring"),
        (
            pb::NbiAction {
                kind: Some(pb::nbi_action::Kind::DeleteOverlay(pb::NameRef { name: "nope".into() })),
            },
            tonic::Code::NotFound,
            "nope",
        ),
        (pb::NbiAction { kind: None }, tonic::Code::InvalidArgument, "kind"),
        (
            pb::NbiAction {
                kind: Some(pb::nbi_action::Kind::SetSteering(pb::SetSteering {
                    class: "sip".into(),
                    steering: Some(pb::Steering {
                        sla: Some(pb::Sla {
                            max_latency_ms: Some(-1.0),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                })),
            },
            tonic::Code::InvalidArgument,
            "max_latency_ms",
        ),
    ] {
        let e = grpc
            .apply(with_token(pb::ApplyRequest { actions: vec![a] }))
            .await
            .unwrap_err();
        assert_eq!(e.code(), code, "{}", e.message());
        assert!(e.message().contains(needle), "{:?} should name {needle:?}", e.message());
    }

    let d = grpc
        .get_desired(with_token(pb::ReadRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.generation, 1);
    assert_eq!(
        (d.overlays[0].layout.as_str(), d.overlays[0].hub.as_str()),
        ("hub_and_spoke", "e1")
    );
    assert_eq!(d.classes[0].rules[0].dst_ports, "5060");
    assert_eq!(d.classes[0].rules[0].dscp, Some(46));
    let steering = d.classes[0].steering.as_ref().expect("the class's steering is kept");
    assert_eq!(steering.sla.unwrap().max_latency_ms, Some(40.0));
    assert_eq!(steering.prefer, ["voice/mpls"]);
    e1_synced(&h, 1).await;
    let st = grpc
        .get_state(with_token(pb::ReadRequest {}))
        .await
        .unwrap()
        .into_inner();
    let e1 = st.edges.iter().find(|e| e.site == "e1").unwrap();
    assert!(e1.in_sync);
    assert_eq!(e1.tunnels[0].name, "wo1-mpls");
    assert_eq!(e1.classes["sip"], "voice");

    // REST on the same port, with the wuos client.
    let mut rest = wuos_proto::nbi::NbiClient::connect(&addr.to_string(), TOKEN)
        .await
        .unwrap();
    let v = rest.get("/v1/overlays").await.unwrap();
    assert_eq!(v[0]["name"], "voice");
    let mut wrong = wuos_proto::nbi::NbiClient::connect(&addr.to_string(), "nope")
        .await
        .unwrap();
    match wrong.get("/v1/status").await.unwrap_err() {
        wuos_proto::nbi::NbiError::Refused { status, code, .. } => {
            assert_eq!((status, code.as_str()), (401, "unauthorized"))
        }
        e => panic!("{e}"),
    }
}
