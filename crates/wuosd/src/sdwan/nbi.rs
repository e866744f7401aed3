//! The SD-WAN controller's northbound interface: REST over HTTP/1.1 on the controller router's
//! loopback, every request but the OpenAPI document carrying `Authorization: Bearer TOKEN`; the
//! gRPC twin (`wuos.v1.SdwanNbi`, [`super::grpc`]) on the same port over HTTP/2. A
//! thin layer: each change is an [`Action`] (or a list of them, all or none) handed to the
//! controller task; the OpenAPI 3.1 document is generated from the same types (utoipa) and
//! served at `/openapi.json`.
//!
//! | method | path | body | does |
//! |---|---|---|---|
//! | GET | `/openapi.json` | — | the OpenAPI document (no token) |
//! | GET | `/v1/sites` | — | the inventory: sites, WAN attachments, LANs |
//! | GET, POST | `/v1/overlays` | `OverlaySpec` | list; create |
//! | GET, DELETE | `/v1/overlays/{name}` | — | one overlay; delete |
//! | POST | `/v1/overlays/{name}/sites` | `SiteRequest` | add a site |
//! | DELETE | `/v1/overlays/{name}/sites/{site}` | — | remove a site |
//! | GET, POST | `/v1/classes` | `ClassSpec` | list; create |
//! | DELETE | `/v1/classes/{name}` | — | delete |
//! | PUT | `/v1/classes/{name}/overlay` | `AssignRequest` | send the class to another overlay |
//! | POST | `/v1/classes/{name}/services` | `ServiceRequest` | add a microservice's rules |
//! | DELETE | `/v1/classes/{name}/services/{service}` | — | remove them |
//! | POST | `/v1/actions` | `[Action]` | several changes, all or none |
//! | GET | `/v1/status` | — | per edge: in sync or not, tunnels, classes |
//!
//! A change answers `{"generation": N}` once it is persisted and sent to the edges; whether
//! the edges hold it is in `/v1/status` (`in_sync`, `synced_generation`). Errors are
//! `{"error": CODE, "message": …}` with 400 (`invalid`), 401 (`unauthorized`), 404
//! (`not_found`), 409 (`conflict`) or 503 (`unavailable`).

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tracing::warn;
use utoipa::{OpenApi, ToSchema};
use wuos_sdwan::{Action, ClassSpec, ErrorKind, Inventory, MatchRule, Member, Overlay, OverlaySpec, TrafficClass};

use super::controller::{Refused, SdwanHandle, Status};

/// The answer to a change.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Changed {
    /// The desired state's generation after the change.
    pub generation: u64,
}

/// An error.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ApiError {
    /// `invalid`, `unauthorized`, `not_found`, `conflict` or `unavailable`.
    pub error: String,
    pub message: String,
}

/// `POST /v1/overlays/{name}/sites`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SiteRequest {
    pub site: String,
    #[serde(default)]
    pub member: Member,
}

/// `PUT /v1/classes/{name}/overlay`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignRequest {
    pub overlay: String,
}

/// `POST /v1/classes/{name}/services`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceRequest {
    pub service: String,
    pub rules: Vec<MatchRule>,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "wuos SD-WAN NBI", description = "Overlays, traffic classes and their state (docs/sdwan.md)"),
    paths(
        sites, list_overlays, create_overlay, get_overlay, delete_overlay, add_site, remove_site,
        list_classes, create_class, delete_class, assign_class, add_service, remove_service, actions, status
    ),
    components(schemas(Action, Changed, ApiError, SiteRequest, AssignRequest, ServiceRequest, Status)),
    modifiers(&Bearer)
)]
pub struct Api;

struct Bearer;

impl utoipa::Modify for Bearer {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        api.security = Some(vec![SecurityRequirement::new("bearer", Vec::<String>::new())]);
    }
}

/// The OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    Api::openapi()
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(ApiError {
            error: code.into(),
            message: message.into(),
        }),
    )
        .into_response()
}

fn unavailable() -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "the SD-WAN controller is stopping",
    )
}

fn refused(r: Refused) -> Response {
    let (status, code) = match &r {
        Refused::Action { error, .. } => match error.kind() {
            ErrorKind::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ErrorKind::Conflict => (StatusCode::CONFLICT, "conflict"),
            ErrorKind::Invalid => (StatusCode::BAD_REQUEST, "invalid"),
        },
        Refused::Store(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
    };
    error(status, code, r.message())
}

/// A JSON request body; one that does not parse is answered 400 `invalid`, saying why, in the
/// NBI's error form.
struct Body<T>(T);

impl<S: Send + Sync, T> axum::extract::FromRequest<S> for Body<T>
where
    Json<T>: axum::extract::FromRequest<S, Rejection = JsonRejection>,
{
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Response> {
        Json::<T>::from_request(req, state)
            .await
            .map(|Json(t)| Body(t))
            .map_err(|e| error(StatusCode::BAD_REQUEST, "invalid", e.body_text()))
    }
}

async fn act(h: &SdwanHandle, actions: Vec<Action>) -> Response {
    match h.act(actions).await {
        Ok(Ok(generation)) => Json(Changed { generation }).into_response(),
        Ok(Err(r)) => refused(r),
        Err(_) => unavailable(),
    }
}

type S = State<SdwanHandle>;

#[utoipa::path(get, path = "/v1/sites", responses((status = 200, body = Inventory)))]
async fn sites(State(h): S) -> Json<Inventory> {
    Json(h.inventory().clone())
}

#[utoipa::path(get, path = "/v1/overlays", responses((status = 200, body = Vec<Overlay>)))]
async fn list_overlays(State(h): S) -> Response {
    match h.desired().await {
        Ok((_, d)) => Json(d.overlays.into_values().collect::<Vec<_>>()).into_response(),
        Err(_) => unavailable(),
    }
}

#[utoipa::path(post, path = "/v1/overlays", request_body = OverlaySpec,
    responses((status = 200, body = Changed), (status = 400, body = ApiError), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
async fn create_overlay(State(h): S, Body(spec): Body<OverlaySpec>) -> Response {
    act(&h, vec![Action::CreateOverlay(spec)]).await
}

#[utoipa::path(get, path = "/v1/overlays/{name}", params(("name" = String, Path)),
    responses((status = 200, body = Overlay), (status = 404, body = ApiError)))]
async fn get_overlay(State(h): S, Path(name): Path<String>) -> Response {
    match h.desired().await {
        Ok((_, d)) => match d.overlay(&name) {
            Ok(o) => Json(o.clone()).into_response(),
            Err(e) => error(StatusCode::NOT_FOUND, "not_found", e.to_string()),
        },
        Err(_) => unavailable(),
    }
}

#[utoipa::path(delete, path = "/v1/overlays/{name}", params(("name" = String, Path)),
    responses((status = 200, body = Changed), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
async fn delete_overlay(State(h): S, Path(name): Path<String>) -> Response {
    act(&h, vec![Action::DeleteOverlay { name }]).await
}

#[utoipa::path(post, path = "/v1/overlays/{name}/sites", params(("name" = String, Path)), request_body = SiteRequest,
    responses((status = 200, body = Changed), (status = 400, body = ApiError), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
async fn add_site(State(h): S, Path(overlay): Path<String>, Body(r): Body<SiteRequest>) -> Response {
    let (site, member) = (r.site, r.member);
    act(&h, vec![Action::AddSite { overlay, site, member }]).await
}

#[utoipa::path(delete, path = "/v1/overlays/{name}/sites/{site}", params(("name" = String, Path), ("site" = String, Path)),
    responses((status = 200, body = Changed), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
async fn remove_site(State(h): S, Path((overlay, site)): Path<(String, String)>) -> Response {
    act(&h, vec![Action::RemoveSite { overlay, site }]).await
}

#[utoipa::path(get, path = "/v1/classes", responses((status = 200, body = Vec<TrafficClass>)))]
async fn list_classes(State(h): S) -> Response {
    match h.desired().await {
        Ok((_, d)) => Json(d.classes.into_values().collect::<Vec<_>>()).into_response(),
        Err(_) => unavailable(),
    }
}

#[utoipa::path(post, path = "/v1/classes", request_body = ClassSpec,
    responses((status = 200, body = Changed), (status = 400, body = ApiError), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
async fn create_class(State(h): S, Body(spec): Body<ClassSpec>) -> Response {
    act(&h, vec![Action::CreateClass(spec)]).await
}

#[utoipa::path(delete, path = "/v1/classes/{name}", params(("name" = String, Path)),
    responses((status = 200, body = Changed), (status = 404, body = ApiError)))]
async fn delete_class(State(h): S, Path(name): Path<String>) -> Response {
    act(&h, vec![Action::DeleteClass { name }]).await
}

#[utoipa::path(put, path = "/v1/classes/{name}/overlay", params(("name" = String, Path)), request_body = AssignRequest,
    responses((status = 200, body = Changed), (status = 404, body = ApiError)))]
async fn assign_class(State(h): S, Path(class): Path<String>, Body(r): Body<AssignRequest>) -> Response {
    let overlay = r.overlay;
    act(&h, vec![Action::AssignClass { class, overlay }]).await
}

#[utoipa::path(post, path = "/v1/classes/{name}/services", params(("name" = String, Path)), request_body = ServiceRequest,
    responses((status = 200, body = Changed), (status = 400, body = ApiError), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
async fn add_service(State(h): S, Path(class): Path<String>, Body(r): Body<ServiceRequest>) -> Response {
    let (service, rules) = (r.service, r.rules);
    act(&h, vec![Action::AddService { class, service, rules }]).await
}

#[utoipa::path(delete, path = "/v1/classes/{name}/services/{service}", params(("name" = String, Path), ("service" = String, Path)),
    responses((status = 200, body = Changed), (status = 404, body = ApiError)))]
async fn remove_service(State(h): S, Path((class, service)): Path<(String, String)>) -> Response {
    act(&h, vec![Action::RemoveService { class, service }]).await
}

/// Several changes, carried out in order, all or none.
#[utoipa::path(post, path = "/v1/actions", request_body = Vec<Action>,
    responses((status = 200, body = Changed), (status = 400, body = ApiError), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
async fn actions(State(h): S, Body(list): Body<Vec<Action>>) -> Response {
    act(&h, list).await
}

#[utoipa::path(get, path = "/v1/status", responses((status = 200, body = Status)))]
async fn status(State(h): S) -> Response {
    match h.status().await {
        Ok(s) => Json(s).into_response(),
        Err(_) => unavailable(),
    }
}

/// Whether `headers` carry `Authorization: Bearer TOKEN` (compared in constant time).
pub fn authorized(headers: &HeaderMap, token: &str) -> bool {
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    same_token(given.trim(), token)
}

/// Whether `given` is `token`, compared in constant time (for tokens of the same length).
pub fn same_token(given: &str, token: &str) -> bool {
    let (a, b) = (given.as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn check_token(State(token): State<Arc<str>>, req: Request, next: Next) -> Response {
    if authorized(req.headers(), &token) {
        next.run(req).await
    } else {
        error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this NBI needs `Authorization: Bearer TOKEN` (the lab's: `wuos sdwan token`)",
        )
    }
}

/// The NBI's routes over `handle`, requests checked against `token`.
pub fn router(handle: SdwanHandle, token: String) -> Router {
    let token: Arc<str> = token.into();
    let rest_token = token.clone();
    let v1 = Router::new()
        .route("/v1/sites", get(sites))
        .route("/v1/overlays", get(list_overlays).post(create_overlay))
        .route("/v1/overlays/{name}", get(get_overlay).delete(delete_overlay))
        .route("/v1/overlays/{name}/sites", post(add_site))
        .route("/v1/overlays/{name}/sites/{site}", delete(remove_site))
        .route("/v1/classes", get(list_classes).post(create_class))
        .route("/v1/classes/{name}", delete(delete_class))
        .route("/v1/classes/{name}/overlay", put(assign_class))
        .route("/v1/classes/{name}/services", post(add_service))
        .route("/v1/classes/{name}/services/{service}", delete(remove_service))
        .route("/v1/actions", post(actions))
        .route("/v1/status", get(status))
        .layer(middleware::from_fn_with_state(rest_token, check_token))
        .with_state(handle.clone());
    let spec = openapi();
    Router::new()
        .route("/openapi.json", get(move || async move { Json(spec) }))
        .merge(v1)
        .merge(super::grpc::routes(handle, token))
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such endpoint (see /openapi.json)",
            )
        })
}

/// Serves the NBI on `listener` until the daemon stops.
pub async fn serve(listener: TcpListener, handle: SdwanHandle, token: String) {
    if let Err(e) = axum::serve(listener, router(handle, token)).await {
        warn!(error = %e, "the SD-WAN NBI stopped");
    }
}

#[cfg(test)]
mod tests;
