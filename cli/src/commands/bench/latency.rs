//! `gadus bench wasm-latency`, `gadus bench api` and `gadus bench docker-overhead`: whole-node
//! measurements through the HTTP API of a real node started in this process.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;

use super::embedded::{Embedded, noop_wasm_job};
use super::percentile;

/// `bench wasm-latency` options.
#[derive(Debug, clap::Args)]
pub struct WasmLatencyArgs {
    /// Sequential jobs measured (after a warm-up of 20).
    #[arg(long, default_value_t = 300)]
    pub jobs: usize,
    /// Jobs in flight for the throughput phase.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Jobs submitted in the throughput phase.
    #[arg(long, default_value_t = 2000)]
    pub throughput_jobs: usize,
}

/// Runs `bench wasm-latency`.
pub async fn wasm_latency(
    g: &crate::commands::Global,
    a: WasmLatencyArgs,
) -> anyhow::Result<ExitCode> {
    let node = Arc::new(Embedded::start(g, false).await?);
    let job = noop_wasm_job();
    for _ in 0..20 {
        node.api.run(&job).await?;
    }
    let mut samples = Vec::with_capacity(a.jobs);
    for _ in 0..a.jobs {
        samples.push(node.api.run(&job).await?.as_micros() as u64);
    }
    samples.sort_unstable();
    let (rate, _) = concurrent(&node, &job, a.throughput_jobs, a.concurrency).await?;
    println!(
        "{}",
        json!({
            "bench": "wasm-latency",
            "jobs": a.jobs,
            "p50_ms": samples[samples.len() / 2] as f64 / 1000.0,
            "p99_ms": percentile(&samples, 99.0) as f64 / 1000.0,
            "concurrency": a.concurrency,
            "throughput_jobs": a.throughput_jobs,
            "jobs_per_s": (rate * 10.0).round() / 10.0,
        })
    );
    if let Ok(n) = Arc::try_unwrap(node) {
        n.stop().await;
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `total` jobs with `concurrency` in flight; returns jobs/s and the sorted latencies (µs).
async fn concurrent(
    node: &Arc<Embedded>,
    job: &serde_json::Value,
    total: usize,
    concurrency: usize,
) -> anyhow::Result<(f64, Vec<u64>)> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (node, job, next) = (node.clone(), job.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < total {
                lat.push(node.api.run(&job).await?.as_micros() as u64);
            }
            anyhow::Ok(lat)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let rate = total as f64 / t.elapsed().as_secs_f64();
    all.sort_unstable();
    Ok((rate, all))
}

/// `bench api` options.
#[derive(Debug, clap::Args)]
pub struct ApiArgs {
    /// Jobs submitted (durably) before the listing phase.
    #[arg(long, default_value_t = 10_000)]
    pub jobs: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 32)]
    pub clients: usize,
    /// List requests measured.
    #[arg(long, default_value_t = 1000)]
    pub pages: usize,
    /// Page size of the list requests.
    #[arg(long, default_value_t = 100)]
    pub page_size: usize,
    /// The access policy every request is judged by (`API.Auth.AccessPolicyPath`; the
    /// default is what a node runs, `""` = none, every request allowed).
    #[arg(long, default_value = "builtin:anonymous")]
    pub access_policy: String,
}

/// Runs `bench api`: durable submissions/s with N clients, then list-page latency.
pub async fn api(g: &crate::commands::Global, a: ApiArgs) -> anyhow::Result<ExitCode> {
    // Jobs that no node can run stay queued: the bench measures the API and the durable
    // store, not executions. A label no node has keeps them off every node.
    let mut gl = g.clone();
    gl.log_level = Some("warn".into());
    let policy = vec![("API.Auth.AccessPolicyPath".to_string(), a.access_policy.clone())];
    let node = Arc::new(Embedded::start_with(&gl, false, &policy).await?);
    let job = json!({
        "Type": "batch",
        "Count": 1,
        "Constraints": [{"Key": "bench", "Operator": "=", "Values": ["nowhere"]}],
        "Tasks": [{"Name": "main", "Engine": {"Type": "noop"}}]
    });
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..a.clients.max(1) {
        let (node, job, next, total) = (node.clone(), job.clone(), next.clone(), a.jobs);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < total {
                let s = Instant::now();
                node.api.submit(&job).await?;
                lat.push(s.elapsed().as_micros() as u64);
            }
            anyhow::Ok(lat)
        }));
    }
    let mut submit = Vec::new();
    for t in tasks {
        submit.extend(t.await??);
    }
    let rate = a.jobs as f64 / t.elapsed().as_secs_f64();
    submit.sort_unstable();
    // Listing: first pages and pages deep in the list (following NextToken).
    let mut pages = Vec::with_capacity(a.pages);
    let mut token = String::new();
    for _ in 0..a.pages {
        let url = format!(
            "{}/api/v1/orchestrator/jobs?limit={}&next_token={token}",
            node.api.base, a.page_size
        );
        let s = Instant::now();
        let v: serde_json::Value = node.api.http.get(url).send().await?.json().await?;
        pages.push(s.elapsed().as_micros() as u64);
        token = v["NextToken"].as_str().unwrap_or("").to_string();
        let n = v["Items"].as_array().map(Vec::len).context("no Items in the list answer")?;
        anyhow::ensure!(n > 0, "empty page");
    }
    pages.sort_unstable();
    println!(
        "{}",
        json!({
            "bench": "api",
            "access_policy": a.access_policy,
            "jobs": a.jobs,
            "clients": a.clients,
            "submissions_per_s": rate.round(),
            "submit_p50_ms": submit[submit.len() / 2] as f64 / 1000.0,
            "submit_p99_ms": percentile(&submit, 99.0) as f64 / 1000.0,
            "page_size": a.page_size,
            "page_p50_ms": pages[pages.len() / 2] as f64 / 1000.0,
            "page_p99_ms": percentile(&pages, 99.0) as f64 / 1000.0,
        })
    );
    if let Ok(n) = Arc::try_unwrap(node) {
        n.stop().await;
    }
    Ok(ExitCode::SUCCESS)
}

/// `bench docker-overhead` options.
#[derive(Debug, clap::Args)]
pub struct DockerArgs {
    /// Pairs of runs (gadus job, plain docker run), alternating.
    #[arg(long, default_value_t = 20)]
    pub runs: usize,
}

/// Runs `bench docker-overhead`.
pub async fn docker_overhead(
    g: &crate::commands::Global,
    a: DockerArgs,
) -> anyhow::Result<ExitCode> {
    let docker = bollard_connect()?;
    let image = gadus_io::executor::docker::testimage::ensure_busybox(
        &docker,
        "gadus-bench-busybox:latest",
    )
    .await
    .map_err(|e| anyhow::anyhow!("building the busybox image: {e}"))?;
    let node = Embedded::start(g, true).await?;
    let job = json!({
        "Type": "batch",
        "Count": 1,
        "Tasks": [{"Name": "main", "Engine": {"Type": "docker", "Params": {"Image": image, "Entrypoint": ["/bin/true"]}},
                   "Resources": {"CPU": "100m", "Memory": "32Mb"}}]
    });
    node.api.run(&job).await?; // warm-up
    let (mut ours, mut plain) = (Vec::new(), Vec::new());
    for _ in 0..a.runs {
        ours.push(node.api.run(&job).await?.as_micros() as u64);
        let t = Instant::now();
        let st = tokio::process::Command::new("docker")
            .args(["run", "--rm", "--network", "none", &image, "/bin/true"])
            .status()
            .await
            .context("running `docker run`")?;
        anyhow::ensure!(st.success(), "docker run failed: {st}");
        plain.push(t.elapsed().as_micros() as u64);
    }
    ours.sort_unstable();
    plain.sort_unstable();
    let (o, p) = (ours[ours.len() / 2], plain[plain.len() / 2]);
    println!(
        "{}",
        json!({
            "bench": "docker-overhead",
            "runs": a.runs,
            "gadus_p50_ms": o as f64 / 1000.0,
            "docker_run_p50_ms": p as f64 / 1000.0,
            "ratio": ((o as f64 / p.max(1) as f64) * 100.0).round() / 100.0,
        })
    );
    node.stop().await;
    Ok(ExitCode::SUCCESS)
}

fn bollard_connect() -> anyhow::Result<bollard::Docker> {
    bollard::Docker::connect_with_local_defaults()
        .map(|d| d.with_timeout(Duration::from_secs(120)))
        .context("connecting to the Docker engine")
}
