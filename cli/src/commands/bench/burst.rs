//! `gadus bench burst`: many no-op jobs at once, from one client and from many, on one node.
//! Prints per client count: drain time (first submit to last Completed), jobs/s, executions
//! per job (one is the target: a refusal for capacity used to cost a new execution and a
//! back-off), and p50/p99 submit -> Completed; then the many-client rate as a ratio of the
//! single-client rate measured in the same run.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use futures::StreamExt;
use serde_json::{Value, json};

use super::embedded::Embedded;
use super::percentile;

/// `bench burst` options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Jobs per configuration.
    #[arg(long, default_value_t = 1000)]
    pub jobs: usize,
    /// Concurrent submitting clients, one configuration each (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,50")]
    pub clients: Vec<usize>,
}

fn now_ns() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

/// Completed jobs as the node's metrics count them.
async fn completed(node: &Embedded) -> anyhow::Result<usize> {
    let text = node.api.http.get(format!("{}/metrics", node.api.base)).send().await?.text().await?;
    let line = text
        .lines()
        .find(|l| l.starts_with("gadus_jobs{state=\"Completed\"}"))
        .context("no gadus_jobs{state=\"Completed\"} in /metrics")?;
    Ok(line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) as usize)
}

/// One configuration on a fresh node; returns the JSON line's fields.
async fn one(g: &crate::commands::Global, jobs: usize, clients: usize) -> anyhow::Result<Value> {
    let mut gl = g.clone();
    gl.log_level = Some("warn".into());
    let node = Arc::new(Embedded::start_with(&gl, false, &[]).await?);
    let job = json!({
        "Type": "batch",
        "Count": 1,
        "Tasks": [{"Name": "main", "Engine": {"Type": "noop"}}]
    });
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients.max(1) {
        let (node, job, next) = (node.clone(), job.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < jobs {
                let at = now_ns();
                mine.push((node.api.submit(&job).await?, at));
            }
            anyhow::Ok(mine)
        }));
    }
    let mut submitted = Vec::new();
    for t in tasks {
        submitted.extend(t.await??);
    }
    let submit_s = started.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(900);
    while completed(&node).await? < jobs {
        if Instant::now() > deadline {
            bail!("{clients} clients: not drained within 900 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drain_s = started.elapsed().as_secs_f64();
    // Per job: executions made, and submit -> Completed (the job's ModifyTime).
    let api = node.api.clone();
    let per_job: Vec<anyhow::Result<(usize, u64)>> = futures::stream::iter(submitted)
        .map(|(id, at)| {
            let api = api.clone();
            async move {
                let base = format!("{}/api/v1/orchestrator/jobs/{id}", api.base);
                let j: Value = api.http.get(&base).send().await?.json().await?;
                let e: Value =
                    api.http.get(format!("{base}/executions")).send().await?.json().await?;
                let n = e["Items"].as_array().map(Vec::len).context("no executions list")?;
                let done = j["Job"]["ModifyTime"].as_i64().context("no ModifyTime")?;
                anyhow::Ok((n, u64::try_from((done - at).max(0)).unwrap_or(0) / 1000))
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let mut execs = Vec::new();
    let mut latency_us = Vec::new();
    for r in per_job {
        let (n, us) = r?;
        execs.push(n);
        latency_us.push(us);
    }
    latency_us.sort_unstable();
    if let Ok(n) = Arc::try_unwrap(node) {
        n.stop().await;
    }
    Ok(json!({
        "clients": clients,
        "jobs": jobs,
        "submit_s": (submit_s * 1000.0).round() / 1000.0,
        "drain_s": (drain_s * 1000.0).round() / 1000.0,
        "jobs_per_s": (jobs as f64 / drain_s).round(),
        "executions_per_job": execs.iter().sum::<usize>() as f64 / jobs.max(1) as f64,
        "max_executions_per_job": execs.iter().max().copied().unwrap_or(0),
        "p50_submit_to_completed_ms": latency_us[latency_us.len() / 2] as f64 / 1000.0,
        "p99_submit_to_completed_ms": percentile(&latency_us, 99.0) as f64 / 1000.0,
    }))
}

/// Runs `bench burst`.
pub async fn run(g: &crate::commands::Global, a: Args) -> anyhow::Result<ExitCode> {
    let mut rates = Vec::new();
    for clients in &a.clients {
        let mut v = one(g, a.jobs, *clients).await?;
        v["bench"] = json!("burst");
        v["cores"] = json!(std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0));
        rates.push((*clients, v["jobs_per_s"].as_f64().unwrap_or(0.0)));
        if let Some((one_client, base)) = rates.first().copied()
            && rates.len() > 1
            && base > 0.0
        {
            let rate = v["jobs_per_s"].as_f64().unwrap_or(0.0);
            v[format!("ratio_to_{one_client}_clients")] =
                json!((rate / base * 100.0).round() / 100.0);
        }
        println!("{v}");
    }
    Ok(ExitCode::SUCCESS)
}
