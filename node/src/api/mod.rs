//! The REST API, compatible with Bacalhau v1 (`../shared/reference/bacalhau-api.md` §2, §10).
//!
//! Every error has Bacalhau's shape `{Status, Message, RequestID, Code, Component}`; every
//! response carries `X-Request-Id`; bodies are limited in size and decoded leniently (keys
//! match case-insensitively, unknown keys are ignored); each request has a timeout except the
//! log websocket.

mod agent;
mod data;
mod jobs;
mod logs;
mod nodes;
pub mod ratelimit;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use futures::FutureExt;
use serde_json::json;

use crate::config::NodeConfig;
use crate::runtime::Handle;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The node loop.
    pub node: Handle,
    /// The effective configuration.
    pub config: Arc<NodeConfig>,
    /// When the node started.
    pub started: Instant,
    /// The embedded content store (`/ipfs/...`, CAR uploads).
    pub content: Option<gadus_io::content::ContentStore>,
    /// The `local` publisher, whose archives `/results/...` serves.
    pub local_publisher: Option<Arc<gadus_io::storage::publish::LocalPublisher>>,
    /// The node's data directory (upload spooling).
    pub data_dir: std::path::PathBuf,
    /// Peers and gateways `/ipfs/` fetches missing content from.
    pub content_sources: Option<Arc<gadus_io::storage::ipfs::ContentSources>>,
    /// Who may do what (`API.Auth.*`).
    pub auth: Arc<crate::auth::Auth>,
    /// Per-client write limits (`API.WritesPerSecond`).
    pub write_limiter: Arc<ratelimit::WriteLimiter>,
}

/// The client's address, set by the accept loop ([`crate::listener`]).
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub std::net::SocketAddr);

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The request ID of the request being served (empty outside a request).
pub fn request_id() -> String {
    REQUEST_ID.try_with(Clone::clone).unwrap_or_default()
}

/// An error in Bacalhau's shape.
#[derive(Debug)]
pub struct ApiErr {
    status: StatusCode,
    code: &'static str,
    message: String,
    component: &'static str,
    details: Vec<String>,
}

impl ApiErr {
    /// An error with a status and Bacalhau error code.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiErr {
            status,
            code,
            message: message.into(),
            component: "APIServer",
            details: Vec::new(),
        }
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    /// 404 NotFound.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NotFound", message)
    }

    /// 500 InternalError.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", message)
    }

    /// Attaches per-problem details.
    pub fn with_details(mut self, details: Vec<String>) -> Self {
        self.details = details;
        self
    }

    /// Names the component at fault.
    pub fn component(mut self, c: &'static str) -> Self {
        self.component = c;
        self
    }
}

impl IntoResponse for ApiErr {
    fn into_response(self) -> Response {
        let mut body = json!({
            "Status": self.status.as_u16(),
            "Message": self.message,
            "RequestID": request_id(),
            "Code": self.code,
            "Component": self.component,
        });
        if !self.details.is_empty() {
            body["Details"] = json!({ "Problems": self.details });
        }
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<crate::store::StoreError> for ApiErr {
    fn from(e: crate::store::StoreError) -> Self {
        ApiErr::new(StatusCode::INTERNAL_SERVER_ERROR, "DatastoreFailure", e.to_string())
            .component("Store")
    }
}

impl From<crate::runtime::Stopped> for ApiErr {
    fn from(e: crate::runtime::Stopped) -> Self {
        ApiErr::new(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", e.to_string())
    }
}

/// JSON with exact model encoding.
pub fn json_ok<T: serde::Serialize>(v: &T) -> Response {
    let body = serde_json::to_vec(v).unwrap_or_default();
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Build information this node reports (`/agent/version`).
pub fn build_info_public() -> gadus_core::model::BuildVersionInfo {
    agent::build_info()
}

/// The router.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .merge(agent::routes())
        .merge(jobs::routes())
        .merge(nodes::routes())
        .route("/api/v1/requester/{*rest}", any(gone))
        .route("/metrics", get(metrics));
    let limit = state.config.api.max_body_bytes;
    Router::new()
        .merge(api)
        .merge(logs::routes())
        .merge(data::routes())
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(state.clone(), edge))
        .with_state(state)
}

async fn gone() -> ApiErr {
    ApiErr::new(
        StatusCode::GONE,
        "NotImplemented",
        "the legacy /api/v1/requester API was removed in Bacalhau v1.4; use /api/v1/orchestrator (see https://docs.bacalhau.org/references/cli-reference/command-migration)",
    )
}

async fn not_found(method: Method, uri: axum::http::Uri) -> ApiErr {
    ApiErr::not_found(format!("{method} {} is not an endpoint of this API", uri.path()))
}

async fn metrics(State(s): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], s.node.shared.metrics.render())
        .into_response()
}

/// Edge middleware: request ID, client version check, per-request timeout, latency metrics.
async fn edge(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_string)
        .unwrap_or_else(uuid_v4);
    let method = req.method().to_string();
    let route = route_label(req.uri().path());
    let websocket = req.uri().path().ends_with("/logs");
    // The IPFS gateway answers in the gateway's own plain-text style; every other error
    // leaves in Bacalhau's shape.
    let gateway =
        req.uri().path().starts_with("/ipfs/") || req.uri().path().starts_with("/local/ipfs/");
    let path = req.uri().path().to_string();
    // Content and archive routes stream large bodies both ways: no buffering, no timeout.
    let streaming = websocket || data::is_streaming(req.uri().path());
    let started = Instant::now();
    let timeout = crate::config::parse_duration(&s.config.api.request_timeout)
        .unwrap_or(Duration::from_secs(30));
    let version_check = check_client_version(&req);
    let throttled = write_limit(&s, &req);
    let config = s.config.clone();
    let limit = s.config.api.max_body_bytes;
    let auth = s.auth.clone();
    let store = s.node.shared.store.clone();
    let fut = async move {
        // Throttled writes are answered before their bodies are read.
        if let Some(wait) = throttled {
            return too_many_writes(&config.api, wait);
        }
        // Read the body here, under the size limit: an oversized one is drained (up to a hard
        // cap) before answering 413, so the client sees the answer instead of a reset.
        // The body's read is cut by the request timeout too: a client that trickles it
        // cannot hold the request (and its connection's slot) for longer.
        let req = if streaming {
            req
        } else {
            match tokio::time::timeout(timeout, limit_body(req, limit)).await {
                Ok(Ok(r)) => r,
                Ok(Err(resp)) => return *resp,
                Err(_) => {
                    return ApiErr::new(
                        StatusCode::REQUEST_TIMEOUT,
                        "TimeOut",
                        format!("the request body did not arrive within {timeout:?}"),
                    )
                    .into_response();
                }
            }
        };
        if let Err(e) = version_check {
            return *e;
        }
        if let Err(e) = authorize(&auth, &store, &req, streaming) {
            return *e;
        }
        // Who is calling is settled once, here; handlers read it (ownership, redaction).
        let mut req = req;
        let who = auth.caller_of(req.headers(), crate::clock::system_now().0);
        req.extensions_mut().insert(Caller(who));
        if streaming {
            next.run(req).await
        } else {
            match tokio::time::timeout(timeout, next.run(req)).await {
                Ok(r) => r,
                Err(_) => ApiErr::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "TimeOut",
                    format!("request took longer than {timeout:?}"),
                )
                .into_response(),
            }
        }
    };
    let mut resp =
        guard_panics(&s.node.shared.metrics, &id, REQUEST_ID.scope(id.clone(), fut)).await;
    if !gateway {
        resp = REQUEST_ID.scope(id.clone(), in_bacalhau_shape(resp, &method, &path)).await;
    }
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    s.node.shared.metrics.api(&method, &route, resp.status().as_u16(), started.elapsed());
    resp
}

/// For a write (any method but GET, HEAD and OPTIONS) over its client's rate
/// (`API.WritesPerSecond`): the client's address and how long until it may write again.
fn write_limit(s: &AppState, req: &Request) -> Option<(std::net::IpAddr, Duration)> {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return None;
    }
    let ClientAddr(addr) = req.extensions().get::<ClientAddr>().copied()?;
    s.write_limiter.admit(addr.ip(), Instant::now()).err().map(|wait| (addr.ip(), wait))
}

/// 429 in Bacalhau's shape, with Retry-After.
fn too_many_writes(
    api: &crate::config::ApiConfig,
    (ip, wait): (std::net::IpAddr, Duration),
) -> Response {
    let secs = wait.as_secs().max(1);
    let mut resp = ApiErr::new(
        StatusCode::TOO_MANY_REQUESTS,
        "TooManyRequests",
        format!(
            "more than {} writes a second from {ip} (API.WritesPerSecond); retry in {secs}s",
            api.writes_per_second
        ),
    )
    .into_response();
    resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
    resp
}

/// Rewrites an error that did not come from our handlers (a query or path the extractor
/// refused, a websocket route called without an upgrade, a method the route lacks: axum
/// answers those in plain text or with an empty body) into Bacalhau's error shape, keeping
/// its status and its text as the message.
async fn in_bacalhau_shape(resp: Response, method: &str, path: &str) -> Response {
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let allow = resp.headers().get(header::ALLOW).and_then(|v| v.to_str().ok()).map(str::to_string);
    let text = axum::body::to_bytes(resp.into_body(), 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let (code, message) = match status {
        StatusCode::METHOD_NOT_ALLOWED => (
            "MethodNotAllowed",
            format!(
                "{method} is not allowed on {path}{}",
                allow.as_deref().map(|a| format!(" (allowed: {a})")).unwrap_or_default()
            ),
        ),
        StatusCode::NOT_FOUND => {
            ("NotFound", if text.is_empty() { format!("{path} not found") } else { text })
        }
        s if s.is_server_error() => ("InternalError", text),
        _ => (
            "BadRequest",
            if text.is_empty() { format!("invalid request to {path}") } else { text },
        ),
    };
    let mut out = ApiErr::new(status, code, message).into_response();
    if let Some(a) = allow.and_then(|a| HeaderValue::from_str(&a).ok()) {
        out.headers_mut().insert(header::ALLOW, a);
    }
    out
}

/// Runs a request: a panicking handler must not silently kill the connection. The client
/// gets a 500 in Bacalhau's shape, and the panic is logged and counted (the default hook has
/// already printed its message and location).
async fn guard_panics(
    metrics: &crate::metrics::Metrics,
    id: &str,
    fut: impl std::future::Future<Output = Response>,
) -> Response {
    match std::panic::AssertUnwindSafe(fut).catch_unwind().await {
        Ok(resp) => resp,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(request_id = %id, panic = %what, "API handler panicked");
            metrics.api_panic();
            REQUEST_ID.sync_scope(id.to_string(), || {
                ApiErr::internal("the node failed while answering this request (it was logged)")
                    .into_response()
            })
        }
    }
}

/// Largest body drained before answering 413 (beyond it the connection is dropped).
const DRAIN_MAX: usize = 64 * 1024 * 1024;

async fn limit_body(req: Request, limit: usize) -> Result<Request, Box<Response>> {
    use http_body_util::BodyExt;
    let (parts, mut body) = req.into_parts();
    let mut buf: Vec<u8> = Vec::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return Err(Box::new(
                ApiErr::bad_request("could not read the request body").into_response(),
            ));
        };
        if let Ok(data) = frame.into_data() {
            total += data.len();
            if total <= limit {
                buf.extend_from_slice(&data);
            } else if total > DRAIN_MAX {
                break;
            }
        }
    }
    if total > limit {
        let e = ApiErr::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "BadRequest",
            format!("request body of {total}+ bytes exceeds the {limit}-byte limit"),
        );
        return Err(Box::new(e.into_response()));
    }
    let buf = bytes::Bytes::from(buf);
    let mut parts = parts;
    parts.extensions.insert(BodyCopy(buf.clone()));
    Ok(Request::from_parts(parts, axum::body::Body::from(buf)))
}

/// Judges a request with the access policy: denied with a valid token is 403 (the caller is
/// known and may not), otherwise 401 (the CLI then logs in again). The body is the one the
/// edge already read (empty for streamed routes).
fn authorize(
    auth: &crate::auth::Auth,
    store: &crate::store::Store,
    req: &Request,
    streaming: bool,
) -> Result<(), Box<Response>> {
    if !auth.has_access_policy() {
        return Ok(());
    }
    let mut headers: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (name, value) in req.headers() {
        headers
            .entry(crate::auth::canonical_header(name.as_str()))
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    let raw_body =
        if streaming { None } else { req.extensions().get::<BodyCopy>().map(|b| b.0.clone()) };
    let body =
        raw_body.as_ref().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
    let job = named_job(store, req, raw_body.as_deref());
    let http = crate::auth::HttpInput {
        host: req
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string(),
        method: req.method().to_string(),
        path: req.uri().path().to_string(),
        query: req.uri().query().unwrap_or("").to_string(),
        headers,
        body,
        job,
    };
    let d = auth.authorize(&http, crate::clock::system_now().0);
    if d.allow {
        return Ok(());
    }
    let e = if d.token_valid {
        ApiErr::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!("{} {} is not allowed for this caller", http.method, http.path),
        )
    } else {
        ApiErr::new(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "a valid token is required: log in again (gadus authenticates by itself with the node's listed methods)",
        )
    };
    Err(Box::new(e.component("Auth").into_response()))
}

/// The existing job a request acts on, for the access policy's `input.job`: the one its path
/// names (`/api/v1/orchestrator/jobs/{id}/...`, decoded and looked up by ID, prefix or name
/// as the handlers find it), the one a result archive (`/results/{execution}.tar.gz`) belongs
/// to, or the one a submission's `Job.ID` would update. When a request could name several
/// (a `namespace` given twice), an owned one wins: the check must never see a weaker job
/// than the handler acts on.
fn named_job(
    store: &crate::store::Store,
    req: &Request,
    body: Option<&[u8]>,
) -> Option<crate::auth::JobRef> {
    let as_ref = |rec: &gadus_core::orchestrator::JobRecord| crate::auth::JobRef {
        id: rec.job.id.clone(),
        namespace: rec.job.namespace.clone(),
        owner: crate::auth::owner::owner(&rec.job).to_string(),
    };
    let decode = |seg: &str| {
        percent_encoding::percent_decode_str(seg).decode_utf8().ok().map(|s| s.into_owned())
    };
    if let Some(file) = req.uri().path().strip_prefix("/results/") {
        let exec = decode(file)?;
        let exec = exec.strip_suffix(".tar.gz").unwrap_or(&exec);
        let job = store.job_of_execution(exec).ok()??;
        return store.job(&job).ok()?.as_ref().map(as_ref);
    }
    let path = req.uri().path().strip_prefix("/api/v1/orchestrator/jobs")?;
    let (id, namespaces) = match path.strip_prefix('/').and_then(|p| p.split('/').next()) {
        Some(seg) if !seg.is_empty() => {
            let ns: Vec<String> =
                form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
                    .filter(|(k, _)| k == "namespace")
                    .map(|(_, v)| v.into_owned())
                    .collect();
            (decode(seg)?, ns)
        }
        _ => {
            // A submission: the job it names, if any (keys matched as the decoder does).
            let v: serde_json::Value = serde_json::from_slice(body?).ok()?;
            let get = |v: &serde_json::Value, k: &str| {
                v.as_object()?
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(k))
                    .map(|(_, v)| v.clone())
            };
            let job = get(&v, "Job")?;
            let id = get(&job, "ID")?.as_str()?.to_string();
            let ns = get(&job, "Namespace").and_then(|n| n.as_str().map(str::to_string));
            (id, ns.into_iter().collect())
        }
    };
    let mut namespaces: Vec<Option<String>> = namespaces.into_iter().map(Some).collect();
    if namespaces.is_empty() {
        namespaces.push(None);
    }
    let found: Vec<crate::auth::JobRef> = namespaces
        .iter()
        .filter_map(|ns| match store.find_job(&id, jobs::job_namespace(ns.as_deref())) {
            Ok(crate::store::Lookup::Found(rec)) => Some(as_ref(&rec)),
            _ => None,
        })
        .collect();
    found.iter().find(|j| !j.owner.is_empty()).or(found.first()).cloned()
}

/// The caller a request's bearer token names (a valid token of this node), set by the edge.
#[derive(Clone, Debug, Default)]
pub struct Caller(pub Option<String>);

/// The request body as read by the edge, for the access policy's `input.http.body`.
#[derive(Clone)]
struct BodyCopy(bytes::Bytes);

/// Bacalhau's CLI sends its version; one older than v1.4.0 cannot speak this API.
fn check_client_version(req: &Request) -> Result<(), Box<Response>> {
    let Some(v) = req.headers().get("x-bacalhau-git-version").and_then(|v| v.to_str().ok()) else {
        return Ok(());
    };
    let v = v.trim();
    if v.is_empty() || v == "v0.0.0" || v.contains("dev") {
        return Ok(());
    }
    let Some(parsed) = parse_semver(v) else {
        let e = ApiErr::new(
            StatusCode::BAD_REQUEST,
            "VersionMismatch",
            format!("invalid client version {v:?}"),
        );
        return Err(Box::new(e.into_response()));
    };
    if parsed < (1, 4, 0) {
        let body = json!({
            "Error": format!("client version {v} is older than the minimum supported v1.4.0"),
            "MinVersion": "v1.4.0",
            "ClientVersion": v,
            "ServerVersion": agent::API_VERSION,
        });
        return Err(Box::new((StatusCode::FORBIDDEN, axum::Json(body)).into_response()));
    }
    Ok(())
}

fn parse_semver(v: &str) -> Option<(u64, u64, u64)> {
    let v = v.strip_prefix('v').unwrap_or(v);
    let core = v.split(['-', '+']).next()?;
    let mut it = core.split('.');
    let a = it.next()?.parse().ok()?;
    let b = it.next().unwrap_or("0").parse().ok()?;
    let c = it.next().unwrap_or("0").parse().ok()?;
    Some((a, b, c))
}

/// A low-cardinality route label for metrics (IDs replaced).
fn route_label(path: &str) -> String {
    path.split('/')
        .map(|seg| {
            if seg.starts_with("j-")
                || seg.starts_with("e-")
                || seg.starts_with("n-")
                || seg.len() > 24
            {
                "{id}"
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn uuid_v4() -> String {
    let mut b = [0u8; 16];
    if getrandom::fill(&mut b).is_err() {
        return "00000000-0000-4000-8000-000000000000".into();
    }
    uuid::Builder::from_random_bytes(b).into_uuid().to_string()
}

/// Reads a JSON body leniently, mapping size and syntax problems to Bacalhau errors.
pub fn decode_body<T: serde::de::DeserializeOwned>(body: &[u8], limit: usize) -> Result<T, ApiErr> {
    gadus_core::model::codec::from_json(body, limit).map_err(|e| match e {
        gadus_core::model::DecodeError::TooLarge { .. } => {
            ApiErr::new(StatusCode::PAYLOAD_TOO_LARGE, "BadRequest", e.to_string())
        }
        gadus_core::model::DecodeError::Invalid(m) => {
            ApiErr::bad_request(format!("invalid request body: {m}"))
        }
    })
}

/// Maps a body extraction failure (too large, unreadable) to the error shape.
pub fn body_rejection(e: axum::extract::rejection::BytesRejection) -> ApiErr {
    let status = e.status();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiErr::new(StatusCode::PAYLOAD_TOO_LARGE, "BadRequest", "request body too large")
    } else {
        ApiErr::new(status, "BadRequest", e.body_text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_handler_answers_500_in_bacalhaus_shape_and_is_counted() {
        let metrics = crate::metrics::Metrics::default();
        let boom = async {
            if request_id().is_empty() {
                return StatusCode::OK.into_response();
            }
            panic!("handler bug");
        };
        let resp = guard_panics(&metrics, "req-1", REQUEST_ID.scope("req-1".into(), boom)).await;
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["Code"], "InternalError");
        assert_eq!(v["RequestID"], "req-1");
        assert_eq!(v["Status"], 500);
        assert!(metrics.render().contains("gadus_api_panics_total 1"));
    }
}
