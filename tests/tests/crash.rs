//! kill -9 of `gadus serve` at random moments while clients submit jobs, then restart: every
//! job the API acknowledged is still there and reaches a terminal state.

#![allow(clippy::unwrap_used)] // Tests unwrap: a panic is the failure report.

mod support;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::*;

const CYCLES: usize = 20;

fn random_ms(max: u64) -> u64 {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).unwrap();
    u64::from_le_bytes(b) % max
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_jobs_survive_kill_9() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let mut acked: BTreeSet<String> = BTreeSet::new();
    let mut node = Node::start_in(&dir, 0, &[]);
    for cycle in 0..CYCLES {
        let port = node.port;
        let got = Arc::new(Mutex::new(Vec::new()));
        let mut clients = Vec::new();
        for _ in 0..2 {
            let got = got.clone();
            clients.push(tokio::spawn(async move {
                let c = http();
                let url = format!("http://127.0.0.1:{port}/api/v1/orchestrator/jobs");
                let body = serde_json::to_vec(&serde_json::json!({"Job": noop_job()})).unwrap();
                loop {
                    match c
                        .put(&url)
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .await
                    {
                        Ok(r) if r.status().is_success() => {
                            let v: serde_json::Value = r.json_or_null().await;
                            if let Some(id) = v["JobID"].as_str() {
                                got.lock().unwrap().push(id.to_string());
                            }
                            // Paced: the point is crashing mid-stream, not load.
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                        // The node died mid-request: that submission was never acknowledged.
                        _ => break,
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(50 + random_ms(700))).await;
        node.kill9();
        for c in clients {
            let _ = c.await;
        }
        let new: Vec<String> = got.lock().unwrap().clone();
        acked.extend(new.iter().cloned());
        node = Node::start_in(&dir, port, &[]);
        // Every job acknowledged in this cycle is known after the crash (all of them are
        // checked again at the end).
        for id in &new {
            let s = job_state(&node, id).await;
            assert!(!s.is_empty(), "cycle {cycle}: acknowledged job {id} was lost");
        }
        println!("cycle {cycle}: {} new acknowledged jobs, {} in total", new.len(), acked.len());
    }
    assert!(acked.len() >= CYCLES, "the clients got some submissions through ({})", acked.len());
    for id in &acked {
        let s = wait_terminal(&node, id, Duration::from_secs(60)).await;
        assert_eq!(s, "Completed", "job {id} ended {s}");
    }
}

trait JsonOrNull {
    async fn json_or_null(self) -> serde_json::Value;
}

impl JsonOrNull for reqwest::Response {
    async fn json_or_null(self) -> serde_json::Value {
        match self.bytes().await {
            Ok(b) => serde_json::from_slice(&b).unwrap_or(serde_json::Value::Null),
            Err(_) => serde_json::Value::Null,
        }
    }
}
