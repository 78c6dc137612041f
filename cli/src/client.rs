//! A small client for the node's REST API (Bacalhau's v1 endpoints).

use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use serde_json::Value;

/// Where the node's API is and how to talk to it.
#[derive(Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    /// A client for `host:port` (IPv6 hosts may be bracketed or not).
    pub fn new(host: &str, port: u16) -> anyhow::Result<Client> {
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(5))
            .build()
            .context("building the HTTP client")?;
        Ok(Client { base: format!("http://{host}:{port}"), http })
    }

    async fn handle(&self, resp: reqwest::Response) -> anyhow::Result<Value> {
        let status = resp.status();
        let bytes = resp.bytes().await.context("reading the node's answer")?;
        if status.is_success() {
            if bytes.is_empty() {
                return Ok(Value::Null);
            }
            return serde_json::from_slice(&bytes)
                .context("the node answered something that is not JSON");
        }
        // Bacalhau's error shape: {Status, Message, RequestID, Code, Component, Details?}.
        if let Ok(v) = serde_json::from_slice::<Value>(&bytes)
            && let Some(msg) = v.get("Message").and_then(Value::as_str)
        {
            let mut text = msg.to_string();
            if let Some(problems) = v.pointer("/Details/Problems").and_then(Value::as_array)
                && !text.contains('\n')
            {
                for p in problems.iter().filter_map(Value::as_str) {
                    text.push_str(&format!("\n  - {p}"));
                }
            }
            bail!("{text}");
        }
        bail!("the node answered {status}: {}", String::from_utf8_lossy(&bytes));
    }

    fn connect_error(&self, e: reqwest::Error) -> anyhow::Error {
        anyhow!(
            "cannot reach the gadus node at {}: {e} (is `gadus serve` running? set --api-host/--api-port or GADUS_API_HOST/GADUS_API_PORT)",
            self.base
        )
    }

    /// GET a JSON document.
    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .map_err(|e| self.connect_error(e))?;
        self.handle(resp).await
    }

    /// GET with a longer timeout (long polls).
    pub async fn get_long(&self, path: &str, timeout: Duration) -> anyhow::Result<Value> {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| self.connect_error(e))?;
        self.handle(resp).await
    }

    /// PUT a JSON body.
    pub async fn put(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let resp = self
            .http
            .put(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(serde_json::to_vec(body)?)
            .send()
            .await
            .map_err(|e| self.connect_error(e))?;
        self.handle(resp).await
    }

    /// DELETE with a JSON body.
    pub async fn delete(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let resp = self
            .http
            .delete(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(serde_json::to_vec(body)?)
            .send()
            .await
            .map_err(|e| self.connect_error(e))?;
        self.handle(resp).await
    }

    /// Downloads a URL (absolute, or a path on this node) into `dest`, refusing more than
    /// `limit` bytes. Returns the bytes written.
    pub async fn download_to(
        &self,
        url: &str,
        dest: &std::path::Path,
        limit: u64,
    ) -> anyhow::Result<u64> {
        use tokio::io::AsyncWriteExt;
        let url =
            if url.starts_with('/') { format!("{}{url}", self.base) } else { url.to_string() };
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            bail!("refusing to download {url:?}: only http and https URLs are fetched");
        }
        let mut resp = self
            .http
            .get(&url)
            .timeout(Duration::from_secs(3600))
            .send()
            .await
            .with_context(|| format!("downloading {url}"))?;
        if !resp.status().is_success() {
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            let msg = serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|v| v.get("Message").and_then(Value::as_str).map(str::to_string))
                .unwrap_or(body);
            bail!("downloading {url}: {status} {msg}");
        }
        let mut f = tokio::fs::File::create(dest)
            .await
            .with_context(|| format!("creating {}", dest.display()))?;
        let mut total = 0u64;
        while let Some(chunk) = resp.chunk().await.with_context(|| format!("downloading {url}"))? {
            total += chunk.len() as u64;
            if total > limit {
                bail!("downloading {url}: larger than {limit} bytes");
            }
            f.write_all(&chunk).await.with_context(|| format!("writing {}", dest.display()))?;
        }
        f.flush().await?;
        Ok(total)
    }

    /// Streams a URL's body to `out` (stdout for `data cat`).
    pub async fn stream_to(
        &self,
        path: &str,
        out: &mut (dyn std::io::Write + Send),
    ) -> anyhow::Result<u64> {
        let url = format!("{}{path}", self.base);
        let mut resp = self
            .http
            .get(&url)
            .timeout(Duration::from_secs(3600))
            .send()
            .await
            .map_err(|e| self.connect_error(e))?;
        if !resp.status().is_success() {
            return self.handle(resp).await.map(|_| 0);
        }
        let mut total = 0u64;
        while let Some(chunk) = resp.chunk().await.with_context(|| format!("reading {url}"))? {
            total += chunk.len() as u64;
            out.write_all(&chunk)?;
        }
        out.flush()?;
        Ok(total)
    }

    /// POSTs a file as the request body (streamed).
    pub async fn post_file(
        &self,
        path: &str,
        file: &std::path::Path,
        content_type: &str,
    ) -> anyhow::Result<Value> {
        let f = tokio::fs::File::open(file)
            .await
            .with_context(|| format!("opening {}", file.display()))?;
        let len = f.metadata().await.map(|m| m.len()).ok();
        let stream = futures::stream::unfold(f, |mut f| async move {
            use tokio::io::AsyncReadExt;
            let mut buf = vec![0u8; 256 * 1024];
            match f.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok::<_, std::io::Error>(buf), f))
                }
                Err(e) => Some((Err(e), f)),
            }
        });
        let mut req = self
            .http
            .post(format!("{}{path}", self.base))
            .timeout(Duration::from_secs(3600))
            .header("content-type", content_type)
            .body(reqwest::Body::wrap_stream(stream));
        if let Some(n) = len {
            req = req.header("content-length", n);
        }
        let resp = req.send().await.map_err(|e| self.connect_error(e))?;
        self.handle(resp).await
    }

    /// Streams a job's logs over the websocket, calling `line(type, text)` per frame.
    pub async fn logs(
        &self,
        job: &str,
        query: &str,
        mut line: impl FnMut(u64, &str),
    ) -> anyhow::Result<()> {
        use futures::StreamExt;
        let url = format!(
            "{}/api/v1/orchestrator/jobs/{job}/logs?{query}",
            self.base.replacen("http", "ws", 1)
        );
        let (mut ws, _) = tokio_tungstenite::connect_async(&url)
            .await
            .with_context(|| format!("opening the log stream {url}"))?;
        while let Some(msg) = ws.next().await {
            let msg = msg.context("reading the log stream")?;
            match msg {
                tokio_tungstenite::tungstenite::Message::Text(t) => {
                    let v: Value = serde_json::from_str(&t).context("a log frame is not JSON")?;
                    if let Some(e) = v.get("error").and_then(Value::as_str) {
                        bail!("{e}");
                    }
                    let kind = v.pointer("/value/Type").and_then(Value::as_u64).unwrap_or(1);
                    let text = v.pointer("/value/Line").and_then(Value::as_str).unwrap_or_default();
                    line(kind, text);
                }
                tokio_tungstenite::tungstenite::Message::Close(_) => break,
                _ => {}
            }
        }
        Ok(())
    }
}

/// Percent-encodes a query value.
pub fn q(v: &str) -> String {
    form_urlencoded::byte_serialize(v.as_bytes()).collect()
}
