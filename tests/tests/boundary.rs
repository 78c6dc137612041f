//! A property test of the node boundary (issue 12): random sequences of API calls, valid and
//! malformed, interleaved with kill -9 and restart, against a real `gadus serve`. Whatever
//! arrives: no 5xx, no panic in the node's log, and every acknowledged job stays readable
//! with the spec it was acknowledged with.
//!
//! Each run prints its seed; `BOUNDARY_SEED=<n>` replays one, `BOUNDARY_OPS=<k>` sets the
//! number of calls per seed.

#![allow(clippy::unwrap_used)] // Tests unwrap: a panic is the failure report.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};
use support::*;

fn valid_job(rng: &mut Rng, n: usize) -> Value {
    let label = format!("l{}", rng.below(5));
    match rng.below(3) {
        0 => json!({"Type": "service", "ID": format!("svc-{n}"), "Name": format!("svc-{n}"),
            "Labels": {"k": label}, "Tasks": [{"Name": "main", "Engine": {"Type": "noop"}}]}),
        _ => json!({"Type": "batch", "Count": 1 + rng.below(2), "Name": format!("b-{n}"),
            "Labels": {"k": label}, "Tasks": [{"Name": "main", "Engine": {"Type": "noop"}}]}),
    }
}

fn malformed_body(rng: &mut Rng) -> Vec<u8> {
    let len = rng.below(4096) as usize;
    let texts: [Vec<u8>; 12] = [
        rng.bytes(len),
        b"{\"Job\":".to_vec(),
        b"{\"Job\":{\"Type\":\"batch\",\"Tasks\":[{\"Name\":\"m\",\"Engine\":{\"Type\":\"noop\"}}],\"Count\":-5}}".to_vec(),
        b"{\"Job\":{\"Type\":\"batch\",\"Tasks\":\"not a list\"}}".to_vec(),
        format!("{{\"Job\":{{\"Type\":\"service\",\"ID\":\"../{}\",\"Tasks\":[{{\"Name\":\"m\",\"Engine\":{{\"Type\":\"noop\"}}}}]}}}}", "x".repeat(len)).into_bytes(),
        format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)).into_bytes(),
        b"{\"Job\":{\"Type\":\"batch\",\"Tasks\":[{\"Name\":\"m\",\"Engine\":{\"Type\":\"noop\"},\"Timeouts\":{\"ExecutionTimeout\":9223372036854775807}}]}}".to_vec(),
        b"{\"Job\":{\"Type\":\"batch\",\"Tasks\":[{\"Name\":\"m\",\"Engine\":{\"Type\":\"noop\"},\"Resources\":{\"CPU\":\"1e400\"}}]}}".to_vec(),
        b"\xff\xfe\x00".to_vec(),
        b"null".to_vec(),
        format!("{{\"Job\":{{\"Type\":\"batch\",\"Labels\":{{\"{}\":\"v\"}},\"Tasks\":[]}}}}", "k".repeat(len)).into_bytes(),
        Vec::new(),
    ];
    rng.pick(&texts).clone()
}

fn weird_query(rng: &mut Rng) -> String {
    let parts = [
        "limit=abc",
        "limit=-1",
        "limit=99999999999999999999",
        "next_token=%%%",
        "next_token=AAAA",
        "reverse=1",
        "labels=k%3Dl1",
        "labels=%21%21%21",
        "namespace=..",
        "order_by=x",
        "wait=1e300",
        "since=-9",
        "include=executions",
        "a=b&a=c",
        "%00=%00",
    ];
    let n = 1 + rng.below(3);
    (0..n).map(|_| *rng.pick(&parts)).collect::<Vec<_>>().join("&")
}

fn spec_of(job: &Value) -> Value {
    json!({"Name": job["Name"], "Type": job["Type"], "Labels": job["Labels"],
        "Namespace": job["Namespace"], "Tasks": job["Tasks"]})
}

async fn run_seed(seed: u64, ops: usize) {
    println!("boundary seed={seed} ops={ops}");
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::start_in(dir.path(), 0, &[]);
    let mut acked: BTreeMap<String, Value> = BTreeMap::new();
    let mut kills = 0;
    for n in 0..ops {
        let op = rng.below(100);
        let (status, what) = if op < 25 {
            let job = valid_job(&mut rng, n);
            let body = serde_json::to_vec(&json!({ "Job": job })).unwrap();
            let (s, v, _) = call("PUT", &node.url("/api/v1/orchestrator/jobs"), Some(body)).await;
            if s == 200 {
                let id = v["JobID"].as_str().unwrap().to_string();
                let (_, got, _) =
                    call("GET", &node.url(&format!("/api/v1/orchestrator/jobs/{id}")), None).await;
                acked.insert(id, spec_of(&got["Job"]));
            }
            (s, "submit".to_string())
        } else if op < 45 {
            let body = malformed_body(&mut rng);
            let (s, v, _) = call("PUT", &node.url("/api/v1/orchestrator/jobs"), Some(body)).await;
            assert!((400..500).contains(&s) || s == 200, "malformed submit answered {s}: {v}");
            if s == 200 {
                acked.insert(v["JobID"].as_str().unwrap().to_string(), Value::Null);
            }
            (s, "malformed submit".to_string())
        } else if op < 60 {
            let q = weird_query(&mut rng);
            let path = match rng.below(3) {
                0 => format!("/api/v1/orchestrator/jobs?{q}"),
                1 => match acked.keys().next() {
                    Some(id) => format!("/api/v1/orchestrator/jobs/{id}/history?{q}"),
                    None => format!("/api/v1/orchestrator/jobs?{q}"),
                },
                _ => format!("/api/v1/orchestrator/nodes?{q}"),
            };
            let (s, _, _) = call("GET", &node.url(&path), None).await;
            (s, format!("GET {path}"))
        } else if op < 72 {
            let ids: Vec<String> = acked.keys().cloned().collect();
            let id = if ids.is_empty() || rng.below(3) == 0 {
                rng.pick(&["..", "j-none", "%2e%2e", "a%00b", "svc-0/../x"]).to_string()
            } else {
                rng.pick(&ids).clone()
            };
            let (s, _, _) = call(
                "DELETE",
                &node.url(&format!("/api/v1/orchestrator/jobs/{id}?reason=x")),
                None,
            )
            .await;
            (s, format!("stop {id}"))
        } else if op < 84 {
            let paths = [
                "/api/v1/orchestrator/jobs/..%2f..%2fetc",
                "/api/v1/agent/../../etc/passwd",
                "/ipfs/not-a-cid",
                "/ipfs/QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG/../..",
                "/results/../../etc/passwd",
                "/api/v1/orchestrator/nodes/%00",
                "/api/v1/auth/nope",
                "/api/v1/data/car",
            ];
            let path = *rng.pick(&paths);
            let method = *rng.pick(&["GET", "POST", "PUT", "DELETE", "PATCH"]);
            let body = (method != "GET").then(|| rng.bytes(64));
            let (s, _, _) = call(method, &node.url(path), body).await;
            (s, format!("{method} {path}"))
        } else if op < 96 {
            let (s, _, _) = call(
                "POST",
                &node.url("/api/v1/orchestrator/nodes"),
                Some(
                    serde_json::to_vec(&json!({"NodeID": rng.pick(&["n-x", "..", ""]),
                    "Action": rng.pick(&["approve", "reject", "delete", "explode"])}))
                    .unwrap(),
                ),
            )
            .await;
            (s, "node action".to_string())
        } else {
            node.kill9();
            kills += 1;
            node = Node::start_in(dir.path(), 0, &[]);
            (200, "kill -9 and restart".to_string())
        };
        assert!(status < 500, "seed {seed} op {n} ({what}) answered {status}");
    }
    for (id, spec) in &acked {
        let (s, got, _) =
            call("GET", &node.url(&format!("/api/v1/orchestrator/jobs/{id}")), None).await;
        assert_eq!(s, 200, "seed {seed}: acknowledged job {id} is gone: {got}");
        if !spec.is_null() {
            assert_eq!(&spec_of(&got["Job"]), spec, "seed {seed}: job {id} changed");
        }
    }
    let log = node.stderr.lock().unwrap().join("\n");
    assert!(!log.contains("panicked"), "seed {seed}: the node panicked:\n{log}");
    println!(
        "boundary seed={seed}: {} jobs acknowledged, {kills} kill -9, all readable",
        acked.len()
    );
}

#[tokio::test]
async fn random_api_calls_with_kill_9_keep_every_promise() {
    let ops = std::env::var("BOUNDARY_OPS").ok().and_then(|s| s.parse().ok()).unwrap_or(300);
    let seeds: Vec<u64> = match std::env::var("BOUNDARY_SEED").ok().and_then(|s| s.parse().ok()) {
        Some(s) => vec![s],
        None => vec![1, 2, 3, 4],
    };
    for seed in seeds {
        run_seed(seed, ops).await;
    }
}

#[tokio::test]
async fn a_job_acknowledged_before_kill_9_completes_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::start_in(dir.path(), 0, &[]);
    let id = submit(&node, noop_job()).await;
    node.kill9();
    let node = Node::start_in(dir.path(), 0, &[]);
    assert_eq!(wait_terminal(&node, &id, Duration::from_secs(30)).await, "Completed");
}
