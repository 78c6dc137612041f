//! `/api/v1/orchestrator/nodes*`.

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::get;
use gadus_core::model::{NodeState, parse_selector};
use gadus_core::orchestrator::{NodeAction, Reply};
use serde::Deserialize;
use serde_json::json;

use super::{ApiErr, AppState, body_rejection, decode_body, json_ok};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/orchestrator/nodes", get(list).post(update_by_body))
        .route("/api/v1/orchestrator/nodes/{id}", get(describe).put(update))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Params {
    limit: Option<usize>,
    order_by: Option<String>,
    reverse: Option<String>,
    labels: Option<String>,
    #[serde(rename = "filter-approval", alias = "filter_approval")]
    filter_approval: Option<String>,
    #[serde(rename = "filter-status", alias = "filter_status")]
    filter_status: Option<String>,
}

fn nodes(s: &AppState) -> Vec<NodeState> {
    s.node.shared.nodes.read().map(|n| n.clone()).unwrap_or_default()
}

async fn list(State(s): State<AppState>, Query(p): Query<Params>) -> Result<Response, ApiErr> {
    let mut items = nodes(&s);
    if let Some(l) = p.labels.as_deref().filter(|l| !l.is_empty()) {
        let sel = parse_selector(l)
            .map_err(|e| ApiErr::bad_request(format!("invalid labels selector: {e}")))?;
        items.retain(|n| sel.iter().all(|r| r.matches(&n.info.labels)));
    }
    if let Some(a) = p.filter_approval.as_deref().filter(|a| !a.is_empty()) {
        items.retain(|n| n.membership.as_str().eq_ignore_ascii_case(a));
    }
    if let Some(st) = p.filter_status.as_deref().filter(|s| !s.is_empty()) {
        items.retain(|n| n.connection.as_str().eq_ignore_ascii_case(st));
    }
    let avail = |n: &NodeState| n.info.compute_node_info.available_capacity.clone();
    match p.order_by.as_deref().unwrap_or("id") {
        "" | "id" => items.sort_by(|a, b| a.info.node_id.cmp(&b.info.node_id)),
        "type" => items.sort_by_key(|a| a.info.node_type),
        "available_cpu" => items.sort_by(|a, b| avail(b).cpu.total_cmp(&avail(a).cpu)),
        "available_memory" => items.sort_by_key(|n| std::cmp::Reverse(avail(n).memory)),
        "available_disk" => items.sort_by_key(|n| std::cmp::Reverse(avail(n).disk)),
        "available_gpu" => items.sort_by_key(|n| std::cmp::Reverse(avail(n).gpu)),
        "approval" => items.sort_by_key(|a| a.membership),
        "status" => items.sort_by_key(|a| a.connection),
        other => return Err(ApiErr::bad_request(format!("invalid order_by {other:?}"))),
    }
    if p.reverse.as_deref().is_some_and(|r| r.eq_ignore_ascii_case("true")) {
        items.reverse();
    }
    if let Some(l) = p.limit.filter(|l| *l > 0) {
        items.truncate(l);
    }
    // Bacalhau's Go server writes `Nodes`; its published Python client (bacalhau-apiclient
    // 1.4's swagger model) only reads a lower-case `nodes`. Go clients match keys
    // case-insensitively and both keys carry the same list, so sending both serves everyone.
    Ok(json_ok(&json!({ "Nodes": items, "nodes": items, "NextToken": "" })))
}

fn find(s: &AppState, id: &str) -> Result<NodeState, ApiErr> {
    let all = nodes(s);
    if let Some(n) = all.iter().find(|n| n.info.node_id == id) {
        return Ok(n.clone());
    }
    let matches: Vec<&NodeState> = all.iter().filter(|n| n.info.node_id.starts_with(id)).collect();
    match matches.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(ApiErr::not_found(format!("node not found: {id}"))),
        _ => Err(ApiErr::bad_request(format!("node ID prefix {id:?} matches several nodes"))),
    }
}

async fn describe(State(s): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiErr> {
    let n = find(&s, &id)?;
    Ok(json_ok(&json!({ "Node": n })))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct UpdateBody {
    action: String,
    message: String,
    #[serde(rename = "NodeID")]
    node_id: String,
}

async fn apply(s: &AppState, id: &str, action: &str) -> Result<Response, ApiErr> {
    let node = find(s, id)?;
    let action = match action.to_ascii_lowercase().as_str() {
        "approve" => NodeAction::Approve,
        "reject" => NodeAction::Reject,
        "delete" => NodeAction::Delete,
        other => {
            return Err(ApiErr::bad_request(format!(
                "invalid node action {other:?} (approve, reject or delete)"
            )));
        }
    };
    match s.node.node_action(node.info.node_id, action).await? {
        Reply::NodeUpdated => Ok(json_ok(&json!({ "Success": true }))),
        Reply::Error(e) => Ok(json_ok(&json!({ "Success": false, "Error": e.message }))),
        other => Err(ApiErr::internal(format!("unexpected reply {other:?}"))),
    }
}

async fn update(
    State(s): State<AppState>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiErr> {
    let body = body.map_err(body_rejection)?;
    let b: UpdateBody = decode_body(&body, 64 * 1024)?;
    let _ = b.message;
    apply(&s, &id, &b.action).await
}

/// Bacalhau's Python client posts `{nodeID, action, message}` to `/nodes`.
async fn update_by_body(
    State(s): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiErr> {
    let body = body.map_err(body_rejection)?;
    let b: UpdateBody = decode_body(&body, 64 * 1024)?;
    if b.node_id.is_empty() {
        return Err(ApiErr::bad_request("request body has no NodeID"));
    }
    apply(&s, &b.node_id, &b.action).await
}
