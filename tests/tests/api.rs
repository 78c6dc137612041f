//! The REST API of a real `gadus serve`, checked against Bacalhau's shapes: endpoints, enum
//! encodings, history tokens, and every documented error — none of which changes state.

#![allow(clippy::unwrap_used)] // Tests unwrap: a panic is the failure report.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::*;

fn assert_error_shape(v: &Value, status: u16, code: &str) {
    assert_eq!(v["Status"], status, "{v}");
    assert_eq!(v["Code"], code, "{v}");
    assert!(v["Message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    assert!(v["RequestID"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    assert!(v["Component"].is_string(), "{v}");
}

#[tokio::test]
async fn agent_endpoints() {
    let node = Node::start(&[]);
    let (s, v, h) = call("GET", &node.url("/api/v1/agent/alive"), None).await;
    assert_eq!((s, v), (200, json!({"Status": "OK"})));
    assert!(h.get("x-request-id").is_some());
    let (_, v, _) = call("GET", &node.url("/api/v1/agent/version"), None).await;
    assert!(v["GitVersion"].as_str().unwrap().starts_with("v1."), "{v}");
    assert!(v["BuildDate"].as_str().unwrap().ends_with('Z'));
    let (_, v, _) = call("GET", &node.url("/api/v1/agent/node"), None).await;
    assert_eq!(v["NodeType"], "Compute");
    assert!(
        v["ComputeNodeInfo"]["ExecutionEngines"].as_array().unwrap().iter().any(|e| e == "wasm")
    );
    assert!(v["ComputeNodeInfo"].get("QueueCapacity").is_some());
    let (_, v, _) = call("GET", &node.url("/api/v1/agent/config"), None).await;
    assert_eq!(v["config"]["API"]["Port"], 0, "the port flag was 0: {v}");
    let (_, v, _) = call("GET", &node.url("/api/v1/auth"), None).await;
    assert_eq!(v["Methods"]["ClientKey"]["type"], "challenge");
}

#[tokio::test]
async fn job_lifecycle_shapes() {
    let node = Node::start(&[]);
    // Python-client style: lowercase keys and extra fields.
    let body = json!({"job": {"type": "batch", "count": 1, "name": "shapes", "labels": {"team": "a"},
        "tasks": [{"name": "main", "engine": {"type": "noop"}}]}, "idempotencyToken": "x", "credential": null});
    let (s, v, _) = call(
        "PUT",
        &node.url("/api/v1/orchestrator/jobs"),
        Some(serde_json::to_vec(&body).unwrap()),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let id = v["JobID"].as_str().unwrap().to_string();
    assert!(v["EvaluationID"].as_str().is_some_and(|e| !e.is_empty()));
    assert!(v["Warnings"].is_array());
    assert_eq!(wait_terminal(&node, &id, Duration::from_secs(30)).await, "Completed");

    let (_, v, _) = call(
        "GET",
        &node.url(&format!("/api/v1/orchestrator/jobs/{id}?include=history,executions")),
        None,
    )
    .await;
    assert_eq!(v["Job"]["State"]["StateType"], "Completed");
    assert!(v["Job"]["CreateTime"].is_i64());
    let exec = &v["Executions"]["Items"][0];
    assert_eq!(exec["ComputeState"]["StateType"], 9, "Completed is 9 in v1.6+: {exec}");
    assert_eq!(exec["DesiredState"]["StateType"], 2);
    assert!(exec["RunOutput"].get("stderr").is_some());
    assert!(v["History"]["Items"].as_array().unwrap().len() >= 5);
    assert_eq!(v["History"]["NextToken"], "", "terminal job: history complete");
    // By name and by prefix.
    let (s, _, _) = call("GET", &node.url("/api/v1/orchestrator/jobs/shapes"), None).await;
    assert_eq!(s, 200);
    let (s, _, _) =
        call("GET", &node.url(&format!("/api/v1/orchestrator/jobs/{}", &id[..10])), None).await;
    assert_eq!(s, 200);
    // Executions, results, history endpoints.
    let (_, v, _) =
        call("GET", &node.url(&format!("/api/v1/orchestrator/jobs/{id}/executions")), None).await;
    assert_eq!(v["Items"].as_array().unwrap().len(), 1);
    let (_, v, _) =
        call("GET", &node.url(&format!("/api/v1/orchestrator/jobs/{id}/results")), None).await;
    assert!(v["Items"].is_array());
    let (_, v, _) = call(
        "GET",
        &node.url(&format!("/api/v1/orchestrator/jobs/{id}/history?event_type=job")),
        None,
    )
    .await;
    assert!(v["Items"].as_array().unwrap().iter().all(|h| h["Type"] == "JobLevel"));
    // List with a label filter.
    let (_, v, _) = call("GET", &node.url("/api/v1/orchestrator/jobs?labels=team%3Da"), None).await;
    assert_eq!(v["Items"].as_array().unwrap().len(), 1);
    let (_, v, _) = call("GET", &node.url("/api/v1/orchestrator/jobs?labels=team%3Db"), None).await;
    assert_eq!(v["Items"].as_array().unwrap().len(), 0);
    // Stopping a completed job is refused and changes nothing.
    let (s, v, _) = call(
        "DELETE",
        &node.url(&format!("/api/v1/orchestrator/jobs/{id}")),
        Some(br#"{"reason":"x"}"#.to_vec()),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(job_state(&node, &id).await, "Completed");
}

#[tokio::test]
async fn history_token_stays_non_empty_until_terminal() {
    let node = Node::start(&[]);
    // Needs a node with label gpu: stays queued.
    let job = json!({"Type": "batch", "Constraints": [{"Key": "gpu", "Operator": "exists"}],
        "Tasks": [{"Name": "main", "Engine": {"Type": "noop"}, "Timeouts": {"QueueTimeout": 600}}]});
    let id = submit(&node, job).await;
    let (_, v, _) =
        call("GET", &node.url(&format!("/api/v1/orchestrator/jobs/{id}/history")), None).await;
    let token = v["NextToken"].as_str().unwrap().to_string();
    assert!(!token.is_empty(), "a queued job's history is not finished");
    let (_, v, _) = call(
        "GET",
        &node.url(&format!("/api/v1/orchestrator/jobs/{id}/history?next_token={token}")),
        None,
    )
    .await;
    assert!(v["Items"].as_array().unwrap().is_empty());
    assert!(!v["NextToken"].as_str().unwrap().is_empty(), "still non-empty with zero new items");
    let (s, v, _) = call(
        "DELETE",
        &node.url(&format!("/api/v1/orchestrator/jobs/{id}")),
        Some(br#"{"reason":"test"}"#.to_vec()),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(job_state(&node, &id).await, "Stopped");
    let (_, v, _) = call(
        "GET",
        &node.url(&format!("/api/v1/orchestrator/jobs/{id}/history?next_token={token}")),
        None,
    )
    .await;
    assert!(!v["Items"].as_array().unwrap().is_empty());
    assert_eq!(v["NextToken"], "");
}

#[tokio::test]
async fn bad_requests_get_the_error_shape_and_change_nothing() {
    let node = Node::start(&[]);
    let jobs = || async {
        let (_, v, _) = call("GET", &node.url("/api/v1/orchestrator/jobs?namespace=*"), None).await;
        v["Items"].as_array().unwrap().len()
    };
    let put = node.url("/api/v1/orchestrator/jobs");
    let (s, v, _) = call("PUT", &put, Some(b"{not json".to_vec())).await;
    assert_error_shape(&v, 400, "BadRequest");
    assert_eq!(s, 400);
    let (s, v, _) =
        call("PUT", &put, Some(br#"{"Job": {"Type": "batch", "Count": "two"}}"#.to_vec())).await;
    assert_eq!(s, 400);
    assert!(v["Message"].as_str().unwrap().contains("Count"), "{v}");
    let (s, v, _) = call(
        "PUT",
        &put,
        Some(br#"{"Job": {"Type": "batch", "Tasks": [{"Env": {"bad": "x"}}]}}"#.to_vec()),
    )
    .await;
    assert_error_shape(&v, 400, "ValidationError");
    assert_eq!(s, 400);
    assert!(v["Message"].as_str().unwrap().contains("Tasks[0].Engine: missing"), "{v}");
    let big = vec![b' '; 20 * 1024 * 1024];
    let (s, v, _) = call("PUT", &put, Some(big)).await;
    assert_eq!(s, 413, "{v}");
    assert_error_shape(&v, 413, "BadRequest");
    let (s, v, _) =
        call("GET", &node.url("/api/v1/orchestrator/jobs/j-does-not-exist"), None).await;
    assert_eq!(s, 404);
    assert_error_shape(&v, 404, "NotFound");
    let (s, v, _) =
        call("GET", &node.url("/api/v1/orchestrator/jobs?labels=a%20in%20(b"), None).await;
    assert_eq!(s, 400, "{v}");
    let (s, v, _) = call("GET", &node.url("/api/v1/nowhere"), None).await;
    assert_eq!(s, 404);
    assert_error_shape(&v, 404, "NotFound");
    assert_eq!(v["Component"], "APIServer");
    let (s, _, _) = call("POST", &node.url("/api/v1/requester/submit"), Some(b"{}".to_vec())).await;
    assert_eq!(s, 410);
    let c = http();
    let r = c
        .get(node.url("/api/v1/agent/alive"))
        .header("X-Bacalhau-Git-Version", "v1.2.0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let r = c
        .get(node.url("/api/v1/agent/alive"))
        .header("X-Request-Id", "mine-123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "mine-123");
    assert_eq!(jobs().await, 0, "no bad request changed state");
}

#[tokio::test]
async fn nodes_and_metrics() {
    let node = Node::start(&["--labels", "zone=a"]);
    let (_, v, _) = call("GET", &node.url("/api/v1/orchestrator/nodes"), None).await;
    let nodes = v["Nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 1, "{v}");
    assert_eq!(nodes[0]["Membership"], "APPROVED");
    assert_eq!(nodes[0]["Connection"], "CONNECTED");
    assert_eq!(nodes[0]["Info"]["Labels"]["zone"], "a");
    let id = nodes[0]["Info"]["NodeID"].as_str().unwrap().to_string();
    let (_, v, _) = call("GET", &node.url(&format!("/api/v1/orchestrator/nodes/{id}")), None).await;
    assert_eq!(v["Node"]["Info"]["NodeID"], id);
    let (_, v, _) =
        call("GET", &node.url("/api/v1/orchestrator/nodes?labels=zone%3Db"), None).await;
    assert!(v["Nodes"].as_array().unwrap().is_empty());
    let (_, v, _) = call(
        "PUT",
        &node.url(&format!("/api/v1/orchestrator/nodes/{id}")),
        Some(br#"{"Action":"approve"}"#.to_vec()),
    )
    .await;
    assert_eq!(v["Success"], false, "already approved: {v}");
    let id2 = submit(&node, noop_job()).await;
    wait_terminal(&node, &id2, Duration::from_secs(30)).await;
    let text = http().get(node.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(text.contains("gadus_jobs{state=\"Completed\"} 1"), "{text}");
    assert!(text.contains("gadus_fsync_batch_records_count"), "{text}");
    assert!(text.contains("gadus_api_request_duration_seconds_bucket"), "{text}");
}
