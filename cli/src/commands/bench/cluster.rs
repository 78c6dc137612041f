//! `gadus bench cluster --nodes N`: N real `gadus serve` processes on loopback (started like
//! `gadus devstack`: one orchestrator + compute node, the rest compute only), no-op WASM jobs
//! submitted to the first node with a fixed number in flight; jobs/s and submit -> Completed
//! latency. Every job is placed by bidding over libp2p, runs on some node, and its completion
//! travels back over libp2p.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;

use super::embedded::{Api, noop_wasm_job};
use super::percentile;
use crate::commands::devstack;

/// `bench cluster` options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Nodes in the cluster.
    #[arg(long, default_value_t = 10)]
    pub nodes: usize,
    /// Jobs submitted.
    #[arg(long, default_value_t = 1000)]
    pub jobs: usize,
    /// Jobs in flight.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
}

/// Runs `bench cluster`.
pub fn run(g: &crate::commands::Global, a: Args) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(a.nodes >= 1, "--nodes must be at least 1");
    let dir = tempfile::Builder::new().prefix("gadus-bench-cluster-").tempdir()?;
    let mut members = Vec::new();
    let mut gl = g.clone();
    gl.log_level = Some("warn".into());
    let started = (|| -> anyhow::Result<()> {
        for i in 0..a.nodes {
            let peer = members.first().and_then(|m: &devstack::Member| m.p2p().map(str::to_string));
            members.push(devstack::spawn(
                &gl,
                i,
                dir.path(),
                devstack::free_port()?,
                devstack::free_port()?,
                i > 0,
                &format!("name=node-{i}"),
                peer.as_deref(),
                &["Compute.Heartbeat.Interval=1s".to_string()],
            )?);
        }
        Ok(())
    })();
    if let Err(e) = started {
        devstack::stop(&mut members);
        return Err(e);
    }
    let api = Api::new(format!("http://127.0.0.1:{}", members[0].api_port))?;
    let result = super::super::runtime()?.block_on(measure(api, &a));
    devstack::stop(&mut members);
    let (rate, lat, used) = result?;
    println!(
        "{}",
        json!({
            "bench": "cluster",
            "nodes": a.nodes,
            "jobs": a.jobs,
            "concurrency": a.concurrency,
            "jobs_per_s": (rate * 10.0).round() / 10.0,
            "p50_ms": lat[lat.len() / 2] as f64 / 1000.0,
            "p99_ms": percentile(&lat, 99.0) as f64 / 1000.0,
            "nodes_used": used,
        })
    );
    Ok(ExitCode::SUCCESS)
}

/// Waits for every node to join, then runs the jobs; returns jobs/s, sorted latencies (µs) and
/// how many distinct nodes ran them.
async fn measure(api: Api, a: &Args) -> anyhow::Result<(f64, Vec<u64>, usize)> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v: serde_json::Value = api
            .http
            .get(format!("{}/api/v1/orchestrator/nodes", api.base))
            .send()
            .await?
            .json()
            .await?;
        let connected = v["Nodes"]
            .as_array()
            .map(|n| n.iter().filter(|s| s["Connection"] == "CONNECTED").count())
            .unwrap_or(0);
        if connected >= a.nodes {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "only {connected} of {} nodes joined", a.nodes);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let api = Arc::new(api);
    let job = noop_wasm_job();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..a.concurrency.max(1) {
        let (api, job, next, total) = (api.clone(), job.clone(), next.clone(), a.jobs);
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < total {
                let s = Instant::now();
                let id = api.submit(&job).await?;
                let state = api.wait_terminal(&id).await?;
                anyhow::ensure!(state == "Completed", "job {id} ended {state}");
                out.push((s.elapsed().as_micros() as u64, id));
            }
            anyhow::Ok(out)
        }));
    }
    let mut lat = Vec::new();
    let mut ids = Vec::new();
    for t in tasks {
        for (l, id) in t.await.context("bench task")?? {
            lat.push(l);
            ids.push(id);
        }
    }
    let rate = a.jobs as f64 / t.elapsed().as_secs_f64();
    lat.sort_unstable();
    // Which nodes ran them (a sample of up to 200 jobs).
    let mut used = std::collections::BTreeSet::new();
    for id in ids.iter().take(200) {
        let v: serde_json::Value = api
            .http
            .get(format!("{}/api/v1/orchestrator/jobs/{id}/executions", api.base))
            .send()
            .await?
            .json()
            .await?;
        for e in v["Items"].as_array().into_iter().flatten() {
            if let Some(n) = e["NodeID"].as_str() {
                used.insert(n.to_string());
            }
        }
    }
    Ok((rate, lat, used.len()))
}
