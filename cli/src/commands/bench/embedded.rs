//! A real node started in this process for the end-to-end benchmarks: its own temporary data
//! dir, the API on a loopback port, talked to over HTTP exactly as a client would.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

/// A node under measurement.
pub struct Embedded {
    /// The running node (stopped by [`Embedded::stop`]).
    pub node: gadus_node::RunningNode,
    /// Its API.
    pub api: Api,
    _dir: tempfile::TempDir,
}

/// A node's API as the benchmarks drive it.
#[derive(Clone)]
pub struct Api {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// A client with a connection pool sized for the benchmark's concurrency.
    pub http: reqwest::Client,
}

impl Api {
    /// A client for `base`.
    pub fn new(base: String) -> anyhow::Result<Api> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .timeout(Duration::from_secs(120))
            .build()?;
        Ok(Api { base, http })
    }
}

impl Embedded {
    /// Starts a node with default settings; `docker` probes the Docker engine.
    pub async fn start(g: &crate::commands::Global, docker: bool) -> anyhow::Result<Embedded> {
        Self::start_with(g, docker, &[]).await
    }

    /// [`Embedded::start`] with extra configuration (`Key.Path`, value).
    pub async fn start_with(
        g: &crate::commands::Global,
        docker: bool,
        extra: &[(String, String)],
    ) -> anyhow::Result<Embedded> {
        let dir = tempfile::tempdir().context("creating a temporary data directory")?;
        let mut gl = g.clone();
        gl.data_dir = Some(dir.path().to_path_buf());
        let cfg = crate::commands::serve::load_config(&gl, extra)?;
        let opts = gadus_node::StartOptions {
            api_listen: Some("127.0.0.1:0".parse()?),
            without_network: true,
            without_docker: !docker,
            ..Default::default()
        };
        let node = gadus_node::start(cfg, opts).await?;
        let api = Api::new(format!("http://127.0.0.1:{}", node.api_addr.port()))?;
        Ok(Embedded { node, api, _dir: dir })
    }

    /// Stops the node.
    pub async fn stop(self) {
        self.node.shutdown().await;
    }
}

impl Api {
    /// Submits `job` and returns its ID.
    pub async fn submit(&self, job: &Value) -> anyhow::Result<String> {
        let r = self
            .http
            .put(format!("{}/api/v1/orchestrator/jobs", self.base))
            .json(&json!({ "Job": job }))
            .send()
            .await?;
        let status = r.status();
        let v: Value = r.json().await?;
        if !status.is_success() {
            bail!("submit refused: {v}");
        }
        Ok(v["JobID"].as_str().context("no JobID")?.to_string())
    }

    /// Waits (long-polling the history) until the job is terminal; returns its state.
    pub async fn wait_terminal(&self, id: &str) -> anyhow::Result<String> {
        let mut token = String::new();
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let url = format!(
                "{}/api/v1/orchestrator/jobs/{id}/history?wait=20s&limit=1000&next_token={token}",
                self.base
            );
            let v: Value = self.http.get(url).send().await?.json().await?;
            let next = v["NextToken"].as_str().unwrap_or("").to_string();
            if next.is_empty() {
                break;
            }
            token = next;
            if Instant::now() > deadline {
                bail!("job {id} not terminal after 600 s");
            }
        }
        let v: Value = self
            .http
            .get(format!("{}/api/v1/orchestrator/jobs/{id}", self.base))
            .send()
            .await?
            .json()
            .await?;
        Ok(v["Job"]["State"]["StateType"].as_str().unwrap_or("").to_string())
    }

    /// Submits and waits; errors unless the job completed. Returns submit -> Completed time.
    pub async fn run(&self, job: &Value) -> anyhow::Result<Duration> {
        let t = Instant::now();
        let id = self.submit(job).await?;
        let state = self.wait_terminal(&id).await?;
        if state != "Completed" {
            bail!("job {id} ended {state}");
        }
        Ok(t.elapsed())
    }
}

/// A batch job running the no-op WASM module (sent inline).
pub fn noop_wasm_job() -> Value {
    use base64::Engine as _;
    let url = format!(
        "data:application/wasm;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(gadus_io::executor::wasm::NOOP_MODULE)
    );
    json!({
        "Type": "batch",
        "Count": 1,
        "Tasks": [{
            "Name": "main",
            "Engine": {"Type": "wasm", "Params": {"EntryModule": "/wasm/noop.wasm"}},
            "InputSources": [{"Source": {"Type": "inline", "Params": {"URL": url}}, "Target": "/wasm/noop.wasm"}],
            "Resources": {"CPU": "10m", "Memory": "16Mb"}
        }]
    })
}
