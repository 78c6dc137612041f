//! A small client for the node's REST API (Bacalhau's v1 endpoints).

use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use serde_json::Value;

/// Where the node's API is and how to talk to it.
#[derive(Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
    /// Key and tokens; `None` = never send a token nor log in.
    identity: Option<crate::auth::Identity>,
    /// The logs websocket's TLS (`wss://`), trusting what `http` trusts.
    ws_tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl Client {
    /// A client for `host:port` (IPv6 hosts may be bracketed or not).
    pub fn new(host: &str, port: u16) -> anyhow::Result<Client> {
        Self::new_with(host, port, &TlsOptions::default())
    }

    /// A client for `host:port` speaking TLS as `tls` says (an `https://` host implies it).
    pub fn new_with(host: &str, port: u16, tls: &TlsOptions) -> anyhow::Result<Client> {
        let (host, https) = match host.split_once("://") {
            Some(("https", rest)) => (rest, true),
            Some((_, rest)) => (rest, tls.use_tls),
            None => (host, tls.use_tls),
        };
        let https = https || tls.cacert.is_some();
        let host = host.trim_end_matches('/');
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(5));
        if let Some(path) = &tls.cacert {
            let pem = std::fs::read(path)
                .with_context(|| format!("reading the CA certificate {}", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("{} is not a PEM certificate", path.display()))?;
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        if tls.insecure {
            builder = builder.danger_accept_invalid_certs(true);
        }
        let http = builder.build().context("building the HTTP client")?;
        let scheme = if https { "https" } else { "http" };
        let ws_tls = if https { Some(crate::ws_tls::client_config(tls)?) } else { None };
        Ok(Client { base: format!("{scheme}://{host}:{port}"), http, identity: None, ws_tls })
    }

    /// Sends the stored token with each request and logs in again when the node says 401.
    pub fn with_identity(mut self, identity: crate::auth::Identity) -> Client {
        self.identity = Some(identity);
        self
    }

    /// The API's base URL (`http://host:port`), the key of `tokens.json`.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn authorized(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self.identity.as_ref().and_then(|i| i.token(&self.base)) {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// Sends the request `make` builds, with the token; on 401, logs in and sends it again.
    async fn send(
        &self,
        make: impl Fn() -> reqwest::RequestBuilder,
    ) -> anyhow::Result<reqwest::Response> {
        // As Bacalhau's CLI: without a token, log in first (so the node knows who submits);
        // a node that cannot log us in may still serve anonymous callers.
        if let Some(id) = &self.identity
            && id.token(&self.base).is_none()
            && let Err(e) = self.login().await
        {
            if e.downcast_ref::<Unreachable>().is_some() {
                return Err(e);
            }
            tracing_note(&e);
        }
        let resp = self.authorized(make()).send().await.map_err(|e| self.connect_error(e))?;
        if resp.status() != reqwest::StatusCode::UNAUTHORIZED || self.identity.is_none() {
            return Ok(resp);
        }
        self.login().await?;
        self.authorized(make()).send().await.map_err(|e| self.connect_error(e))
    }

    /// Logs in by a method the node lists (challenge first, ask when answers were given or
    /// nothing else is offered) and stores the token. Returns the method's name.
    pub async fn login(&self) -> anyhow::Result<String> {
        let Some(id) = &self.identity else { bail!("this client has no identity to log in with") };
        let listed = self
            .handle(
                self.http
                    .get(format!("{}/api/v1/auth", self.base))
                    .send()
                    .await
                    .map_err(|e| self.connect_error(e))?,
            )
            .await?;
        let methods = listed.get("Methods").and_then(Value::as_object).cloned().unwrap_or_default();
        if methods.is_empty() {
            bail!("the node at {} requires a token but lists no authentication method", self.base);
        }
        let kind = |m: &Value| m.get("type").and_then(Value::as_str).unwrap_or("").to_string();
        let prefer_ask = id.answers.contains_key("username") || id.answers.contains_key("password");
        let mut order: Vec<(&String, &Value)> = methods.iter().collect();
        order.sort_by_key(|(_, m)| match (kind(m).as_str(), prefer_ask) {
            ("ask", true) | ("challenge", false) => 0,
            ("ask", false) | ("challenge", true) => 1,
            _ => 2,
        });
        let (name, method) = order[0];
        let body =
            crate::auth::answer(id, &kind(method), method.get("params").unwrap_or(&Value::Null))?;
        let resp = self
            .http
            .post(format!("{}/api/v1/auth/{}", self.base, q(name)))
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&body)?)
            .send()
            .await
            .map_err(|e| self.connect_error(e))?;
        let v = self.handle(resp).await?;
        let a = v.get("Authentication").cloned().unwrap_or(Value::Null);
        match (a.get("success").and_then(Value::as_bool), a.get("token").and_then(Value::as_str)) {
            (Some(true), Some(token)) => {
                id.store_token(&self.base, Some(token))?;
                Ok(name.clone())
            }
            _ => {
                let reason = a.get("reason").and_then(Value::as_str).unwrap_or("no reason given");
                bail!("the node refused to log you in with {name}: {reason}")
            }
        }
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
        let chain = {
            let mut text = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                text.push_str(&format!(": {s}"));
                src = s.source();
            }
            text
        };
        if chain.contains("certificate") || chain.contains("UnknownIssuer") {
            return anyhow::Error::new(Unreachable(format!(
                "the node at {} presented a TLS certificate this client does not trust ({chain}); pass --cacert FILE with the node's certificate (gadus serve prints its path and fingerprint), or --insecure to skip the check",
                self.base
            )));
        }
        if chain.contains("InvalidContentType") || chain.contains("wrong version number") {
            return anyhow::Error::new(Unreachable(format!(
                "the node at {} does not speak TLS (use http:// or drop --tls): {chain}",
                self.base
            )));
        }
        if e.is_connect() || e.is_timeout() {
            return anyhow::Error::new(Unreachable(format!(
                "cannot reach the gadus node at {}: {e} (is `gadus serve` running? set --api-host/--api-port or GADUS_API_HOST/GADUS_API_PORT; a node serving TLS needs --tls)",
                self.base
            )));
        }
        anyhow!(
            "cannot reach the gadus node at {}: {e} (is `gadus serve` running? set --api-host/--api-port or GADUS_API_HOST/GADUS_API_PORT)",
            self.base
        )
    }

    /// GET a JSON document.
    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let resp = self.send(|| self.http.get(&url)).await?;
        self.handle(resp).await
    }

    /// GET with a longer timeout (long polls).
    pub async fn get_long(&self, path: &str, timeout: Duration) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let resp = self.send(|| self.http.get(&url).timeout(timeout)).await?;
        self.handle(resp).await
    }

    /// PUT a JSON body.
    pub async fn put(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let bytes = serde_json::to_vec(body)?;
        let resp = self
            .send(|| {
                self.http.put(&url).header("content-type", "application/json").body(bytes.clone())
            })
            .await?;
        self.handle(resp).await
    }

    /// DELETE with a JSON body.
    pub async fn delete(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let bytes = serde_json::to_vec(body)?;
        let resp = self
            .send(|| {
                self.http
                    .delete(&url)
                    .header("content-type", "application/json")
                    .body(bytes.clone())
            })
            .await?;
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
        // The token goes only to this node, never to another host a result URL names.
        let own = url.starts_with(&format!("{}/", self.base));
        let mut resp = if own {
            self.send(|| self.http.get(&url).timeout(Duration::from_secs(3600))).await?
        } else {
            self.http
                .get(&url)
                .timeout(Duration::from_secs(3600))
                .send()
                .await
                .with_context(|| format!("downloading {url}"))?
        };
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
        let mut resp = self.send(|| self.http.get(&url).timeout(Duration::from_secs(3600))).await?;
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
        let resp = self.post_file_once(path, file, content_type).await?;
        if resp.status() == reqwest::StatusCode::UNAUTHORIZED && self.identity.is_some() {
            self.login().await?;
            let resp = self.post_file_once(path, file, content_type).await?;
            return self.handle(resp).await;
        }
        self.handle(resp).await
    }

    async fn post_file_once(
        &self,
        path: &str,
        file: &std::path::Path,
        content_type: &str,
    ) -> anyhow::Result<reqwest::Response> {
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
        self.authorized(req).send().await.map_err(|e| self.connect_error(e))
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
        let open = || async {
            use tokio_tungstenite::tungstenite::client::IntoClientRequest;
            let mut req = url.as_str().into_client_request()?;
            if let Some(t) = self.identity.as_ref().and_then(|i| i.token(&self.base))
                && let Ok(v) = format!("Bearer {t}").parse()
            {
                req.headers_mut().insert("authorization", v);
            }
            let connector = self.ws_tls.clone().map(tokio_tungstenite::Connector::Rustls);
            tokio_tungstenite::connect_async_tls_with_config(req, None, false, connector).await
        };
        let first = open().await;
        let unauthorized = matches!(&first,
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) if r.status() == 401);
        let (mut ws, _) = if unauthorized && self.identity.is_some() {
            self.login().await?;
            open().await
        } else {
            first
        }
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

/// How the client speaks TLS (Bacalhau's `--tls`, `--cacert`, `--insecure`).
#[derive(Clone, Debug, Default)]
pub struct TlsOptions {
    /// Use `https://`.
    pub use_tls: bool,
    /// Trust this PEM certificate (bundle) too; implies TLS.
    pub cacert: Option<std::path::PathBuf>,
    /// Do not verify the node's certificate.
    pub insecure: bool,
}

/// The node could not be reached at all (no point logging in or retrying).
#[derive(Debug)]
struct Unreachable(String);

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unreachable {}

/// A failed first login is not fatal (the node may serve anonymous callers); it is said on
/// stderr only when asked for (`GADUS_LOG_LEVEL=debug`).
fn tracing_note(e: &anyhow::Error) {
    if std::env::var("GADUS_LOG_LEVEL").is_ok_and(|l| l.eq_ignore_ascii_case("debug")) {
        eprintln!("note: logging in failed: {e:#}");
    }
}

/// Percent-encodes a query value.
pub fn q(v: &str) -> String {
    form_urlencoded::byte_serialize(v.as_bytes()).collect()
}
