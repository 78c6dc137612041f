//! `/api/v1/orchestrator/jobs*`.

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use base64::Engine as _;
use gadus_core::model::{Execution, Job, JobHistory, JobHistoryType, JobType, Timestamp};
use gadus_core::orchestrator::{ErrorKind, ExecRecord, Reply};
use serde::Deserialize;
use serde_json::json;
use tracing::Instrument as _;

use super::{ApiErr, AppState, body_rejection, decode_body, json_ok};
use crate::store::{JobQuery, Lookup};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/orchestrator/jobs", get(list).put(submit).post(submit))
        .route("/api/v1/orchestrator/jobs/{id}", get(describe).delete(stop))
        .route("/api/v1/orchestrator/jobs/{id}/history", get(history))
        .route("/api/v1/orchestrator/jobs/{id}/executions", get(executions))
        .route("/api/v1/orchestrator/jobs/{id}/results", get(results))
}

/// `PUT /jobs` body: `{Job, Force?}` plus fields clients send that we ignore.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PutJob {
    job: Option<Job>,
}

fn reply_error(e: gadus_core::orchestrator::ApiError) -> ApiErr {
    match e.kind {
        ErrorKind::Invalid => ApiErr::new(StatusCode::BAD_REQUEST, "ValidationError", e.message)
            .with_details(e.details),
        ErrorKind::NotFound => ApiErr::not_found(e.message),
        ErrorKind::Conflict => ApiErr::bad_request(e.message),
        ErrorKind::Internal => ApiErr::internal(e.message),
    }
}

/// The caller the edge identified (none outside the edge, e.g. a router without it).
fn caller(c: Option<axum::Extension<super::Caller>>) -> Option<String> {
    c.and_then(|axum::Extension(super::Caller(who))| who)
}

async fn submit(
    State(s): State<AppState>,
    who: Option<axum::Extension<super::Caller>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiErr> {
    let body = body.map_err(body_rejection)?;
    let put: PutJob = decode_body(&body, s.config.api.max_body_bytes)?;
    let mut job = put.job.ok_or_else(|| ApiErr::bad_request("request body has no Job"))?;
    // The job belongs to whoever the token names; a claim in the body is dropped.
    crate::auth::owner::stamp(&mut job, caller(who).as_deref());
    // The orchestrator assigns the ID, so the span learns it from the reply; recording it on
    // the span (not just the log line) is what puts it on the exported OTLP span.
    let span = tracing::info_span!(
        "job",
        job_id = tracing::field::Empty,
        job_name = tracing::field::Empty
    );
    if !job.name.is_empty() {
        // Unnamed jobs get their name (the ID) later; an empty field would only be noise.
        span.record("job_name", job.name.as_str());
    }
    match s.node.submit(job).instrument(span.clone()).await? {
        Reply::Submitted { job_id, evaluation_id, warnings } => {
            span.record("job_id", job_id.as_str());
            span.in_scope(|| tracing::info!(%evaluation_id, "job submitted"));
            s.node.shared.metrics.job_submitted();
            Ok(json_ok(
                &json!({ "JobID": job_id, "EvaluationID": evaluation_id, "Warnings": warnings }),
            ))
        }
        Reply::Error(e) => Err(reply_error(e)),
        other => Err(ApiErr::internal(format!("unexpected reply {other:?}"))),
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ListParams {
    namespace: Option<String>,
    limit: Option<usize>,
    next_token: Option<String>,
    order_by: Option<String>,
    reverse: Option<String>,
    labels: Option<String>,
    include: Option<String>,
    since: Option<i64>,
    event_type: Option<String>,
    execution_id: Option<String>,
    /// gadus extension: wait up to this long (e.g. `30s`) for new history instead of
    /// answering an empty page at once, so clients need no sleep loop.
    wait: Option<String>,
}

fn truthy(v: &Option<String>) -> bool {
    v.as_deref().is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "yes"))
}

async fn list(
    State(s): State<AppState>,
    who: Option<axum::Extension<super::Caller>>,
    Query(p): Query<ListParams>,
    raw: axum::extract::RawQuery,
) -> Result<Response, ApiErr> {
    if let Some(o) = &p.order_by
        && !matches!(
            o.as_str(),
            "" | "created_at" | "create_time" | "modified_at" | "modify_time" | "id"
        )
    {
        return Err(ApiErr::bad_request(format!(
            "invalid order_by {o:?} (created_at or modified_at)"
        )));
    }
    let namespace = match p.namespace.as_deref() {
        Some("*") => None,
        Some("") | None => Some("default".to_string()),
        Some(ns) => Some(ns.to_string()),
    };
    // `labels` may repeat: collect every occurrence from the raw query.
    let mut labels = Vec::new();
    if let Some(q) = raw.0 {
        for (k, v) in url_pairs(&q) {
            if k == "labels" && !v.is_empty() {
                labels.push(v);
            }
        }
    } else if let Some(l) = p.labels {
        labels.push(l);
    }
    let q = JobQuery {
        namespace,
        limit: p.limit.unwrap_or(100),
        reverse: truthy(&p.reverse),
        next_token: p.next_token,
        labels,
    };
    let mut page = s.node.shared.store.list_jobs(&q).map_err(|e| match e {
        crate::store::ListError::Query(e) => ApiErr::bad_request(e.to_string()),
        crate::store::ListError::Store(e) => ApiErr::from(e),
    })?;
    let who = caller(who);
    for j in &mut page.items {
        *j = crate::auth::owner::view(j, who.as_deref());
    }
    // Serialized straight to bytes: going through `json!` would first build a `Value` tree of
    // every job on the page.
    #[derive(serde::Serialize)]
    struct Page<'a> {
        #[serde(rename = "Items")]
        items: &'a [std::sync::Arc<Job>],
        #[serde(rename = "NextToken")]
        next_token: &'a str,
    }
    Ok(json_ok(&Page { items: &page.items, next_token: &page.next_token }))
}

/// Splits and percent-decodes a query string.
fn url_pairs(q: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(q.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
}

/// The namespace a job lookup searches: `namespace=` as given, `default` when empty or `*`.
/// The access check (`super::named_job`) resolves jobs through this too, so it sees the job
/// the handler acts on.
pub(super) fn job_namespace(namespace: Option<&str>) -> &str {
    namespace.filter(|n| !n.is_empty() && *n != "*").unwrap_or("default")
}

/// Finds a job by ID, prefix or name.
fn find(
    s: &AppState,
    id: &str,
    namespace: Option<&str>,
) -> Result<gadus_core::orchestrator::JobRecord, ApiErr> {
    match s.node.shared.store.find_job(id, job_namespace(namespace))? {
        Lookup::Found(j) => Ok(*j),
        Lookup::NotFound => Err(ApiErr::not_found(format!("job not found: {id}"))),
        Lookup::Ambiguous => Err(ApiErr::bad_request(format!(
            "job ID prefix {id:?} matches several jobs; use more characters"
        ))),
    }
}

fn execution_view(e: &ExecRecord) -> Execution {
    e.execution.clone()
}

async fn describe(
    State(s): State<AppState>,
    who: Option<axum::Extension<super::Caller>>,
    Path(id): Path<String>,
    Query(p): Query<ListParams>,
) -> Result<Response, ApiErr> {
    let rec = find(&s, &id, p.namespace.as_deref())?;
    let who = caller(who);
    let job = (*crate::auth::owner::view(&rec.job, who.as_deref())).clone();
    let mut out = json!({ "Job": job });
    let include: Vec<String> =
        p.include.unwrap_or_default().split(',').map(|x| x.trim().to_ascii_lowercase()).collect();
    if include.iter().any(|i| i == "history") {
        let (items, next) = history_page(&s, &job, &ListParams::default())?;
        out["History"] = json!({ "Items": items, "NextToken": next });
    }
    if include.iter().any(|i| i == "executions") {
        let items: Vec<Execution> = s
            .node
            .shared
            .store
            .executions(&job.id)?
            .iter()
            .map(|e| {
                let owner = crate::auth::owner::owner(&rec.job);
                crate::auth::owner::view_execution(execution_view(e), owner, who.as_deref())
            })
            .collect();
        out["Executions"] = json!({ "Items": items, "NextToken": "" });
    }
    Ok(json_ok(&out))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct StopBody {
    reason: String,
}

async fn stop(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<std::collections::BTreeMap<String, String>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiErr> {
    let body = body.map_err(body_rejection)?;
    let mut reason = q.get("reason").cloned().unwrap_or_default();
    if !body.iter().all(u8::is_ascii_whitespace) {
        let b: StopBody = decode_body(&body, 64 * 1024)?;
        if !b.reason.is_empty() {
            reason = b.reason;
        }
    }
    let rec = find(&s, &id, q.get("namespace").map(String::as_str))?;
    // Finished jobs leave the orchestrator's memory; answer for them from the store.
    match rec.job.state.state_type {
        gadus_core::model::JobStateType::Stopped => {
            return Ok(json_ok(&json!({ "EvaluationID": "" })));
        }
        st if st.is_terminal() => {
            return Err(ApiErr::bad_request(format!(
                "cannot stop job {}: it is already {st}",
                rec.job.id
            )));
        }
        _ => {}
    }
    match s.node.stop(rec.job.id.clone(), reason).await? {
        Reply::Stopped { evaluation_id } => Ok(json_ok(&json!({ "EvaluationID": evaluation_id }))),
        Reply::Error(e) => Err(reply_error(e)),
        other => Err(ApiErr::internal(format!("unexpected reply {other:?}"))),
    }
}

fn encode_seq(seq: u64) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("seq:{seq}"))
}

fn decode_seq(t: &str) -> Result<u64, ApiErr> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(t.as_bytes())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| ApiErr::bad_request(format!("invalid next_token {t:?}")))?;
    raw.strip_prefix("seq:")
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| ApiErr::bad_request(format!("invalid next_token {t:?}")))
}

/// One page of history. `NextToken` stays non-empty while the job (or the filtered execution)
/// is not terminal, even with no new items — Bacalhau's CLI polls until it is empty.
fn history_page(
    s: &AppState,
    job: &Job,
    p: &ListParams,
) -> Result<(Vec<JobHistory>, String), ApiErr> {
    let after = match p.next_token.as_deref() {
        Some(t) if !t.is_empty() => decode_seq(t)?,
        _ => 0,
    };
    let limit = p.limit.unwrap_or(1000).clamp(1, 10_000);
    let kind = match p.event_type.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("") | Some("all") => None,
        Some("job") => Some(JobHistoryType::JobLevel),
        Some("execution") => Some(JobHistoryType::ExecutionLevel),
        Some(other) => {
            return Err(ApiErr::bad_request(format!(
                "invalid event_type {other:?} (all, job or execution)"
            )));
        }
    };
    let since = p.since.map(Timestamp::from_secs);
    let all = s.node.shared.store.history(&job.id)?;
    let mut items = Vec::new();
    let mut last = after;
    let mut more = false;
    for h in all.into_iter().filter(|h| h.seq_num > after) {
        if items.len() == limit {
            more = true;
            break;
        }
        last = h.seq_num;
        if kind.is_some_and(|k| h.history_type != k) {
            continue;
        }
        if let Some(e) = &p.execution_id
            && !e.is_empty()
            && h.execution_id != *e
        {
            continue;
        }
        if since.is_some_and(|t| h.time.0.is_some_and(|ht| ht < t)) {
            continue;
        }
        items.push(h);
    }
    let done = match p.execution_id.as_deref().filter(|e| !e.is_empty()) {
        Some(e) => s
            .node
            .shared
            .store
            .executions(&job.id)?
            .iter()
            .any(|x| x.execution.id == e && x.is_terminal()),
        None => job.is_terminal(),
    };
    let next = if more || !done { encode_seq(last) } else { String::new() };
    Ok((items, next))
}

async fn history(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(p): Query<ListParams>,
) -> Result<Response, ApiErr> {
    let wait = match p.wait.as_deref() {
        Some(w) => crate::config::parse_duration(w)
            .map_err(ApiErr::bad_request)?
            .min(std::time::Duration::from_secs(25)),
        None => std::time::Duration::ZERO,
    };
    let deadline = tokio::time::Instant::now() + wait;
    let mut changes = s.node.shared.changes.subscribe();
    loop {
        let rec = find(&s, &id, p.namespace.as_deref())?;
        let (items, next) = history_page(&s, &rec.job, &p)?;
        if !items.is_empty() || next.is_empty() || tokio::time::Instant::now() >= deadline {
            return Ok(json_ok(&json!({ "Items": items, "NextToken": next })));
        }
        // Sleep until the node commits something new (or the wait ends).
        if tokio::time::timeout_at(deadline, changes.changed()).await.is_err() {
            let (items, next) = history_page(&s, &rec.job, &p)?;
            return Ok(json_ok(&json!({ "Items": items, "NextToken": next })));
        }
    }
}

async fn executions(
    State(s): State<AppState>,
    who: Option<axum::Extension<super::Caller>>,
    Path(id): Path<String>,
    Query(p): Query<ListParams>,
) -> Result<Response, ApiErr> {
    let rec = find(&s, &id, p.namespace.as_deref())?;
    let who = caller(who);
    let mut items: Vec<Execution> = s
        .node
        .shared
        .store
        .executions(&rec.job.id)?
        .iter()
        .map(|e| {
            let owner = crate::auth::owner::owner(&rec.job);
            crate::auth::owner::view_execution(execution_view(e), owner, who.as_deref())
        })
        .collect();
    match p.order_by.as_deref() {
        Some("modified_at" | "modify_time") => items.sort_by_key(|e| e.modify_time),
        Some("" | "created_at" | "create_time") | None => items.sort_by_key(|e| e.create_time),
        Some(o) => return Err(ApiErr::bad_request(format!("invalid order_by {o:?}"))),
    }
    if truthy(&p.reverse) {
        items.reverse();
    }
    if let Some(l) = p.limit.filter(|l| *l > 0) {
        items.truncate(l);
    }
    Ok(json_ok(&json!({ "Items": items, "NextToken": "" })))
}

async fn results(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(p): Query<ListParams>,
) -> Result<Response, ApiErr> {
    let rec = find(&s, &id, p.namespace.as_deref())?;
    if !matches!(rec.job.job_type, JobType::Batch | JobType::Ops) {
        return Err(ApiErr::bad_request(format!(
            "job {} is a {} job: only batch and ops jobs have results",
            rec.job.id, rec.job.job_type
        )));
    }
    let items: Vec<_> = s
        .node
        .shared
        .store
        .executions(&rec.job.id)?
        .into_iter()
        .filter(|e| e.state() == gadus_core::model::ExecutionStateType::Completed)
        .filter_map(|e| e.execution.published_result)
        .collect();
    Ok(json_ok(&json!({ "Items": items, "NextToken": "" })))
}
