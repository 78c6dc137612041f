//! Starting and driving real `gadus serve` processes.

#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The `gadus` binary `cargo test --workspace` built next to this test executable.
pub fn gadus_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("GADUS_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let bin = dir.join("gadus");
    assert!(
        bin.exists(),
        "{} not found: run the workspace tests (`cargo test --workspace`), which build it, or set GADUS_BIN",
        bin.display()
    );
    bin
}

/// A running `gadus serve`.
pub struct Node {
    pub child: Child,
    pub port: u16,
    /// The libp2p address on loopback (`/ip4/127.0.0.1/tcp/P/p2p/ID`).
    pub p2p: Option<String>,
    pub data_dir: PathBuf,
    pub extra: Vec<String>,
    /// Every stderr line the node has written so far (logs and the startup banner).
    pub stderr: Arc<Mutex<Vec<String>>>,
    /// Environment variables given to the node and to [`Node::cli`] calls.
    pub env: Vec<(String, String)>,
    _tmp: Option<tempfile::TempDir>,
}

impl Node {
    /// Starts a node in a fresh temporary data directory.
    pub fn start(extra: &[&str]) -> Node {
        Self::start_env(extra, &[])
    }

    /// Like [`Node::start`], with extra environment variables for the process (they override
    /// the harness defaults such as `GADUS_LOG=warn`).
    pub fn start_env(extra: &[&str], env: &[(&str, &str)]) -> Node {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let mut n = Self::start_in_env(&dir, 0, extra, env);
        n._tmp = Some(tmp);
        n
    }

    /// Starts (or restarts) a node on `data_dir`; port 0 picks a free one.
    pub fn start_in(data_dir: &Path, port: u16, extra: &[&str]) -> Node {
        Self::start_in_env(data_dir, port, extra, &[])
    }

    /// [`Node::start_in`] with extra environment variables.
    pub fn start_in_env(data_dir: &Path, port: u16, extra: &[&str], env: &[(&str, &str)]) -> Node {
        Self::start_limited(data_dir, port, extra, env, None)
    }

    /// Starts a node whose open-file limit (soft and hard) is `nofile`, as a small machine's.
    pub fn start_with_file_limit(nofile: u64, extra: &[&str]) -> Node {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let mut n = Self::start_limited(&dir, 0, extra, &[], Some(nofile));
        n._tmp = Some(tmp);
        n
    }

    fn start_limited(
        data_dir: &Path,
        port: u16,
        extra: &[&str],
        env: &[(&str, &str)],
        nofile: Option<u64>,
    ) -> Node {
        let mut command = match nofile {
            None => Command::new(gadus_bin()),
            Some(n) => {
                let mut c = Command::new("sh");
                c.arg("-c").arg(format!("ulimit -n {n} && exec \"$0\" \"$@\"")).arg(gadus_bin());
                c
            }
        };
        let mut child = command
            .args(["serve", "--data-dir"])
            .arg(data_dir)
            .args(["--api-host", "127.0.0.1", "--api-port", &port.to_string()])
            // Tests stay on loopback: libp2p listens on 127.0.0.1 only.
            .args(["-c", "Network.Host=127.0.0.1"])
            .args(extra)
            .env("GADUS_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let kept = lines.clone();
        std::thread::spawn(move || {
            let (mut sent, mut port, mut p2p) = (false, None, None);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                kept.lock().unwrap().push(line.clone());
                if let Some(addr) =
                    line.strip_prefix("API: http://").or_else(|| line.strip_prefix("API: https://"))
                {
                    port = addr.rsplit(':').next().and_then(|p| p.parse::<u16>().ok());
                }
                if p2p.is_none()
                    && let Some(a) = line.strip_prefix("P2P: ")
                    && a.starts_with("/ip4/127.")
                {
                    p2p = Some(a.to_string());
                }
                if !sent
                    && line.starts_with("To use this node")
                    && let Some(port) = port
                {
                    let _ = tx.send((port, p2p.clone()));
                    sent = true;
                }
                if std::env::var_os("GADUS_TEST_LOGS").is_some() {
                    eprintln!("[node] {line}");
                }
            }
        });
        let (port, p2p) =
            rx.recv_timeout(Duration::from_secs(60)).expect("gadus serve did not start within 60s");
        Node {
            child,
            port,
            p2p,
            data_dir: data_dir.to_path_buf(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            stderr: lines,
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            _tmp: None,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// SIGKILL: no clean shutdown.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Runs the `gadus` CLI against this node.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(gadus_bin())
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("GADUS_API_HOST", "127.0.0.1")
            .env("GADUS_API_PORT", self.port.to_string())
            .output()
            .unwrap()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap()
}

/// Sends a request and returns (status, JSON body or Null, headers).
pub async fn call(
    method: &str,
    url: &str,
    body: Option<Vec<u8>>,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let c = http();
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = c.request(m, url);
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.unwrap();
    let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, v, headers)
}

pub async fn submit(node: &Node, job: Value) -> String {
    let (status, v, _) = call(
        "PUT",
        &node.url("/api/v1/orchestrator/jobs"),
        Some(serde_json::to_vec(&serde_json::json!({"Job": job})).unwrap()),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    v["JobID"].as_str().unwrap().to_string()
}

pub async fn job_state(node: &Node, id: &str) -> String {
    let (_, v, _) = call("GET", &node.url(&format!("/api/v1/orchestrator/jobs/{id}")), None).await;
    v["Job"]["State"]["StateType"].as_str().unwrap_or("").to_string()
}

pub async fn wait_terminal(node: &Node, id: &str, limit: Duration) -> String {
    let start = Instant::now();
    loop {
        let s = job_state(node, id).await;
        if matches!(s.as_str(), "Completed" | "Failed" | "Stopped") || start.elapsed() > limit {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn noop_job() -> Value {
    serde_json::json!({"Type": "batch", "Count": 1, "Tasks": [{"Name": "main", "Engine": {"Type": "noop"}}]})
}

/// The busybox test image (built locally, no registry), or `None` when no Docker engine
/// answers (a failure instead under `GADUS_REQUIRE_DOCKER`).
pub async fn busybox() -> Option<String> {
    let docker = match bollard::Docker::connect_with_local_defaults() {
        Ok(d) if d.ping().await.is_ok() => d,
        _ => {
            assert!(
                std::env::var_os("GADUS_REQUIRE_DOCKER").is_none(),
                "the Docker engine does not answer but GADUS_REQUIRE_DOCKER is set"
            );
            eprintln!("skipping: no Docker engine");
            return None;
        }
    };
    Some(
        gadus_io::executor::docker::testimage::ensure_busybox(&docker, "gadus-test-busybox:latest")
            .await
            .expect("building the busybox test image"),
    )
}

/// xorshift64*: small, seeded, reproducible.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len() as u64) as usize]
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}
