//! An HTTP/1 client for the node's API over turmoil TCP (reqwest cannot be pointed at turmoil):
//! one connection per request, and a bounded wait, since a partition stalls a connection rather
//! than failing it.

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

use crate::net::API_PORT;

/// A request that gets no whole answer within this long has failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// An answer: status and JSON body (`Null` when the body is not JSON).
pub struct Answer {
    pub status: u16,
    pub body: serde_json::Value,
}

/// `method path` on `host`'s API with an optional JSON body.
pub async fn request(
    host: &str,
    method: &str,
    path: &str,
    body: Option<String>,
) -> Result<Answer, String> {
    let (status, bytes) = tokio::time::timeout(REQUEST_TIMEOUT, attempt(host, method, path, body))
        .await
        .map_err(|_| "timed out".to_string())??;
    let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    Ok(Answer { status, body })
}

/// `GET path` on `host`'s API, as text (`/metrics`).
pub async fn request_text(host: &str, path: &str) -> Result<String, String> {
    let (_, bytes) = tokio::time::timeout(REQUEST_TIMEOUT, attempt(host, "GET", path, None))
        .await
        .map_err(|_| "timed out".to_string())??;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

async fn attempt(
    host: &str,
    method: &str,
    path: &str,
    body: Option<String>,
) -> Result<(u16, Bytes), String> {
    let stream = turmoil::net::TcpStream::connect((host, API_PORT))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(conn);
    let req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", host)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(|e| format!("request: {e}"))?;
    let resp = sender.send_request(req).await.map_err(|e| format!("send: {e}"))?;
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.map_err(|e| format!("body: {e}"))?.to_bytes();
    Ok((status, bytes))
}
