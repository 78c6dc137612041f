//! `/api/v1/agent/*`, `/api/v1/auth*` and Bacalhau's v1.4 compatibility paths.

use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use gadus_core::model::{BuildVersionInfo, Timestamp, WallTime};
use serde_json::json;

use super::{AppState, json_ok};

/// The Bacalhau API version this node implements (Bacalhau's CLI checks it is ≥ v1.4).
pub const API_VERSION: &str = "v1.7.0";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::temporary("/api/v1/agent/version") }))
        .route("/version", get(|| async { Redirect::temporary("/api/v1/agent/version") }))
        .route("/livez", get(|| async { Redirect::temporary("/api/v1/agent/alive") }))
        .route("/api/v1/agent/alive", get(alive))
        .route("/api/v1/agent/version", get(version))
        .route("/api/v1/agent/node", get(node))
        .route("/api/v1/agent/debug", get(debug))
        .route("/api/v1/agent/config", get(config))
        .route("/api/v1/healthz", get(|| async { "OK" }))
        .route("/api/v1/livez", get(|| async { "OK" }))
        .route(
            "/api/v1/id",
            get(|State(s): State<AppState>| async move { s.node.shared.node_id.clone() }),
        )
        .route("/api/v1/node_info", get(node))
        .route("/api/v1/auth", get(auth_methods))
        .route("/api/v1/auth/{name}", get(auth_method).post(authenticate))
}

async fn alive() -> Response {
    json_ok(&json!({"Status": "OK"}))
}

/// Build information; `GitVersion` is the Bacalhau API level, `GitCommit` names gadus.
pub fn build_info() -> BuildVersionInfo {
    let date = option_env!("GADUS_BUILD_EPOCH")
        .and_then(|s| s.parse::<i64>().ok())
        .unwrap_or(1_763_683_200);
    BuildVersionInfo {
        major: "1".into(),
        minor: "7".into(),
        git_version: API_VERSION.into(),
        git_commit: format!("gadus-{}", env!("CARGO_PKG_VERSION")),
        build_date: WallTime::at(Timestamp::from_secs(date)),
        goos: std::env::consts::OS.into(),
        goarch: match std::env::consts::ARCH {
            "x86_64" => "amd64".into(),
            "aarch64" => "arm64".into(),
            a => a.into(),
        },
    }
}

async fn version() -> Response {
    json_ok(&build_info())
}

async fn node(State(s): State<AppState>) -> Response {
    let info = s.node.shared.info.read().map(|i| i.clone()).unwrap_or_default();
    json_ok(&info)
}

async fn debug(State(s): State<AppState>) -> Response {
    let nodes = s.node.shared.nodes.read().map(|n| n.len()).unwrap_or(0);
    json_ok(&json!({
        "gadus": {
            "version": env!("CARGO_PKG_VERSION"),
            "node_id": s.node.shared.node_id,
            "uptime_seconds": s.started.elapsed().as_secs(),
            "orchestrator": s.node.shared.orchestrator,
            "known_nodes": nodes,
            "stored_jobs": s.node.shared.store.job_count(),
        }
    }))
}

async fn config(State(s): State<AppState>) -> Response {
    json_ok(&json!({ "config": &*s.config }))
}

fn now_ns() -> i64 {
    crate::clock::system_now().0
}

async fn auth_methods(State(s): State<AppState>) -> Response {
    match s.auth.requirements(now_ns()) {
        Ok(methods) => json_ok(&json!({ "NextToken": "", "Methods": methods })),
        Err(e) => super::ApiErr::internal(e.to_string()).component("Auth").into_response(),
    }
}

async fn auth_method(State(s): State<AppState>, Path(name): Path<String>) -> Response {
    match s.auth.requirement(&name, now_ns()) {
        Some(Ok(m)) => json_ok(&m),
        Some(Err(e)) => super::ApiErr::internal(e.to_string()).component("Auth").into_response(),
        None => {
            super::ApiErr::not_found(format!("no authentication method {name:?}")).into_response()
        }
    }
}

/// Checks the client's answer (a signed challenge, or the asked-for fields) and lets the
/// method's policy issue a token. A refusal is `success: false` with the reason, as Bacalhau
/// answers; a policy that fails is a 500 naming it.
async fn authenticate(
    State(s): State<AppState>,
    Path(name): Path<String>,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    if !s.auth.has_method(&name) {
        return super::ApiErr::not_found(format!("no authentication method {name:?}"))
            .into_response();
    }
    let body = match body {
        Ok(b) => b,
        Err(e) => return super::body_rejection(e).into_response(),
    };
    let answer: serde_json::Value = if body.iter().all(u8::is_ascii_whitespace) {
        serde_json::Value::Null
    } else {
        match super::decode_body(&body, s.config.api.max_body_bytes) {
            Ok(v) => v,
            Err(e) => return e.into_response(),
        }
    };
    // RSA and scrypt (32 MiB each) are CPU and memory work: off the async workers, and at
    // most two at a time, so a flood of login attempts queues (and times out) instead of
    // exhausting the blocking pool and the memory.
    static LOGINS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);
    let Ok(_slot) = LOGINS.acquire().await else {
        return super::ApiErr::internal("the login queue is closed").into_response();
    };
    let auth = s.auth.clone();
    let result =
        tokio::task::spawn_blocking(move || auth.authenticate(&name, &answer, now_ns())).await;
    match result {
        Ok(Ok(a)) => json_ok(&json!({ "Authentication": a.to_json() })),
        Ok(Err(e)) => super::ApiErr::internal(e).component("Auth").into_response(),
        Err(e) => super::ApiErr::internal(format!("authentication task failed: {e}"))
            .component("Auth")
            .into_response(),
    }
}
