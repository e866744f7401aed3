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
