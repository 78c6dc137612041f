//! `GET /api/v1/orchestrator/jobs/{id}/logs`: a websocket streaming
//! `{"value":{"Type":1|2,"Line":"..."}}` frames (1 = stdout, 2 = stderr), or `{"error":"..."}`,
//! ended by a normal close. `follow` keeps streaming until the execution ends; `tail` skips
//! output produced before the request.

use std::time::Duration;

use axum::Router;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use gadus_io::executor::Stream;
use serde::Deserialize;
use serde_json::json;

use super::{ApiErr, AppState};
use crate::store::Lookup;

pub fn routes() -> Router<AppState> {
    Router::new().route("/api/v1/orchestrator/jobs/{id}/logs", get(logs))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Params {
    execution_id: Option<String>,
    tail: Option<String>,
    follow: Option<String>,
    namespace: Option<String>,
}

fn flag(v: &Option<String>) -> bool {
    v.as_deref().is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "yes"))
}

async fn logs(
    ws: WebSocketUpgrade,
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(p): Query<Params>,
) -> Response {
    let ns = p
        .namespace
        .clone()
        .filter(|n| !n.is_empty() && n != "*")
        .unwrap_or_else(|| "default".into());
    let job = match s.node.shared.store.find_job(&id, &ns) {
        Ok(Lookup::Found(j)) => j,
        Ok(Lookup::NotFound) => {
            return ApiErr::not_found(format!("job not found: {id}")).into_response();
        }
        Ok(Lookup::Ambiguous) => {
            return ApiErr::bad_request(format!("job ID prefix {id:?} matches several jobs"))
                .into_response();
        }
        Err(e) => return ApiErr::from(e).into_response(),
    };
    let job_id = job.job.id.clone();
    if let Some(e) = p.execution_id.as_deref().filter(|e| !e.is_empty()) {
        match s.node.shared.store.executions(&job_id) {
            Ok(execs) if execs.iter().any(|x| x.execution.id == e) => {}
            Ok(_) => {
                return ApiErr::not_found(format!("execution {e} not found in job {job_id}"))
                    .into_response();
            }
            Err(err) => return ApiErr::from(err).into_response(),
        }
    }
    ws.on_upgrade(move |socket| stream(socket, s, job_id, p))
}

fn frame(stream: Stream, line: &str) -> Message {
    Message::Text(json!({ "value": { "Type": stream as u8, "Line": line } }).to_string().into())
}

async fn send_lines(socket: &mut WebSocket, stream: Stream, data: &[u8]) -> bool {
    let text = String::from_utf8_lossy(data);
    for line in text.split_inclusive('\n') {
        if socket.send(frame(stream, line)).await.is_err() {
            return false;
        }
    }
    true
}

async fn stream(mut socket: WebSocket, s: AppState, job_id: String, p: Params) {
    let follow = flag(&p.follow);
    let tail = flag(&p.tail);
    let shared = s.node.shared.clone();
    let mut sent = std::collections::BTreeSet::new();
    loop {
        let execs = match shared.store.executions(&job_id) {
            Ok(e) => e,
            Err(e) => {
                let _ = socket
                    .send(Message::Text(json!({ "error": e.to_string() }).to_string().into()))
                    .await;
                break;
            }
        };
        let wanted: Vec<_> = execs
            .into_iter()
            .filter(|e| {
                p.execution_id.as_deref().is_none_or(|id| id.is_empty() || e.execution.id == id)
            })
            .collect();
        let mut pending = false;
        for e in &wanted {
            let id = e.execution.id.clone();
            if sent.contains(&id) {
                continue;
            }
            let local = e.node() == shared.node_id;
            if !local {
                if e.is_terminal() || !follow {
                    let out = e.execution.run_output.clone().unwrap_or_default();
                    if !tail
                        && (!send_lines(&mut socket, Stream::Stdout, out.stdout.as_bytes()).await
                            || !send_lines(&mut socket, Stream::Stderr, out.stderr.as_bytes())
                                .await)
                    {
                        return;
                    }
                    sent.insert(id);
                } else {
                    pending = true;
                }
                continue;
            }
            let rx = shared.logs.subscribe(&id);
            let results = shared.executions_dir.join(&id).join("results");
            if rx.is_none() && !e.is_terminal() && follow {
                pending = true; // not started yet: wait for it
                continue;
            }
            if !tail {
                for (stream, file) in [(Stream::Stdout, "stdout"), (Stream::Stderr, "stderr")] {
                    let data = std::fs::read(results.join(file)).unwrap_or_default();
                    if !send_lines(&mut socket, stream, &data).await {
                        return;
                    }
                }
            }
            if let (Some(mut rx), true) = (rx, follow) {
                loop {
                    match rx.recv().await {
                        Ok(chunk) => {
                            if !send_lines(&mut socket, chunk.stream, &chunk.data).await {
                                return;
                            }
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                            let note = format!(
                                "[gadus: {n} chunks of output skipped: the client read too slowly]\n"
                            );
                            if !send_lines(&mut socket, Stream::Stderr, note.as_bytes()).await {
                                return;
                            }
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                    }
                }
            }
            sent.insert(id);
        }
        let job_done =
            shared.store.job(&job_id).ok().flatten().is_some_and(|j| j.job.is_terminal());
        if !follow || (!pending && job_done) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code: axum::extract::ws::close_code::NORMAL,
            reason: "".into(),
        })))
        .await;
}
