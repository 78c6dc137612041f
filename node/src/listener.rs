//! The API's accept loop, plain or TLS: what a client may hold of the node.
//!
//! - At most `API.MaxConnections` connections are open (and never more than the process's
//!   file limit allows, less a reserve for the node's own files). When a newcomer finds the
//!   table full, the connection idle the longest (no request in flight) is closed to make room,
//!   as servers do with keep-alive connections; only when every connection is busy does the
//!   newcomer get a `503` in Bacalhau's error shape. So idle or slow sockets, however many,
//!   cannot lock out a client that has something to ask.
//! - A connection must finish its TLS handshake, and each request's headers, within
//!   `API.HeaderTimeout`; an HTTP/1 connection idle between requests that long is closed too
//!   (hyper's header-read timer runs from the moment it waits for a request). Bodies are cut by
//!   the edge middleware's `API.RequestTimeout`.
//! - Plain connections speak HTTP/1 only, so the header timer applies from the first byte;
//!   TLS connections speak what ALPN chose (HTTP/2 with keep-alive pings, or HTTP/1).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;

use crate::metrics::Metrics;
use crate::runtime::Shared;

/// What the accept loop enforces.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Open connections at most.
    pub max_connections: usize,
    /// TLS handshake, request headers, and HTTP/1 idle time, each at most.
    pub header_timeout: Duration,
}

/// Files the node keeps for itself beyond API connections (store, logs, executors, peers).
const FILE_RESERVE: u64 = 256;

/// Raises the soft file limit to the hard one (allowed without privilege), and returns the
/// connection cap that fits under it.
pub fn fit_to_file_limit(wanted: usize) -> usize {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if let (Some(cur), Some(max)) = (limit.current, limit.maximum)
        && cur < max
        && setrlimit(Resource::Nofile, Rlimit { current: Some(max), maximum: Some(max) }).is_ok()
    {
        limit.current = Some(max);
    }
    match limit.current {
        Some(files) => {
            let room = files.saturating_sub(FILE_RESERVE).max(4);
            wanted.min(usize::try_from(room).unwrap_or(usize::MAX))
        }
        None => wanted,
    }
}

/// One open connection: how many of its requests are in flight, and how to close it.
struct Entry {
    in_flight: Arc<AtomicUsize>,
    close: Arc<Notify>,
}

#[derive(Default)]
struct Table {
    next_id: u64,
    /// By age: the smallest ID is the oldest connection.
    open: BTreeMap<u64, Entry>,
}

/// What the table decided for a newcomer.
enum Admit {
    /// Serve it under this ID.
    Serve(u64, Arc<AtomicUsize>, Arc<Notify>),
    /// Every connection is busy: answer 503.
    Refuse,
}

impl Table {
    fn admit(&mut self, cap: usize, metrics: &Metrics) -> Admit {
        let mut evicted = 0;
        if self.open.len() >= cap {
            let idle = self
                .open
                .iter()
                .find(|(_, e)| e.in_flight.load(Ordering::Acquire) == 0)
                .map(|(id, _)| *id);
            match idle.and_then(|id| self.open.remove(&id)) {
                Some(e) => {
                    e.close.notify_one();
                    evicted = 1;
                }
                None => {
                    metrics.api_connections(self.open.len(), 0, 1);
                    return Admit::Refuse;
                }
            }
        }
        debug_assert!(self.open.len() < cap, "room was made before admitting");
        let id = self.next_id;
        self.next_id += 1;
        let (in_flight, close) = (Arc::new(AtomicUsize::new(0)), Arc::new(Notify::new()));
        self.open.insert(id, Entry { in_flight: in_flight.clone(), close: close.clone() });
        metrics.api_connections(self.open.len(), evicted, 0);
        Admit::Serve(id, in_flight, close)
    }

    fn remove(&mut self, id: u64, metrics: &Metrics) {
        self.open.remove(&id);
        metrics.api_connections(self.open.len(), 0, 0);
    }
}

/// Counts a request in flight from its start until its response body is done (or dropped),
/// so a long download is never taken for an idle connection.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn start(n: &Arc<AtomicUsize>) -> InFlight {
        n.fetch_add(1, Ordering::AcqRel);
        InFlight(n.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let before = self.0.fetch_sub(1, Ordering::AcqRel);
        debug_assert!(before > 0, "in-flight count underflow");
    }
}

/// Serves `app` on `listener` until the task is aborted; TLS when `tls` is given.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: Limits,
    shared: Arc<Shared>,
) {
    let table = Arc::new(Mutex::new(Table::default()));
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: wait, then go on accepting.
                tracing::warn!(error = %e, "API accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let admitted = table
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .admit(limits.max_connections, &shared.metrics);
        let (tls, app, table, shared) = (tls.clone(), app.clone(), table.clone(), shared.clone());
        let timeout = limits.header_timeout;
        tokio::spawn(async move {
            let Admit::Serve(id, in_flight, close) = admitted else {
                refuse(tcp, tls, timeout).await;
                return;
            };
            let served = async {
                match tls {
                    None => connection(tcp, peer, false, app, in_flight, timeout).await,
                    Some(acceptor) => {
                        let Ok(Ok(stream)) =
                            tokio::time::timeout(timeout, acceptor.accept(tcp)).await
                        else {
                            return;
                        };
                        let alpn = stream.get_ref().1.alpn_protocol();
                        // A TLS-ALPN-01 validation connection ends with its handshake.
                        if alpn == Some(crate::tls::acme::ACME_TLS_ALPN) {
                            return;
                        }
                        let h2 = alpn == Some(b"h2");
                        connection(stream, peer, h2, app, in_flight, timeout).await;
                    }
                }
            };
            tokio::select! {
                () = served => {}
                () = close.notified() => {}
            }
            table.lock().unwrap_or_else(|e| e.into_inner()).remove(id, &shared.metrics);
        });
    }
}

/// Serves one connection's requests, counting those in flight.
async fn connection<I>(
    io: I,
    peer: std::net::SocketAddr,
    h2: bool,
    app: axum::Router,
    in_flight: Arc<AtomicUsize>,
    header_timeout: Duration,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service =
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            let guard = InFlight::start(&in_flight);
            req.extensions_mut().insert(crate::api::ClientAddr(peer));
            let app = app.clone();
            async move {
                use tower::ServiceExt;
                let resp = app.oneshot(req.map(Body::new)).await?;
                // The guard lives as long as the response body: hyper drops the body when it has
                // been sent or the connection ends.
                Ok::<_, std::convert::Infallible>(resp.map(|b| {
                    Body::new(b.map_frame(move |f| {
                        let _alive = &guard;
                        f
                    }))
                }))
            }
        });
    // hyper's own builders, not hyper-util's auto one: that one first reads the protocol
    // preface with no timer at all, which a silent socket would hold forever.
    let io = TokioIo::new(io);
    if h2 {
        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(Some(Duration::from_secs(20)))
            .keep_alive_timeout(Duration::from_secs(20))
            .serve_connection(io, service)
            .await;
    } else {
        let _ = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .serve_connection(io, service)
            .with_upgrades()
            .await;
    }
}

/// Every connection is busy: a 503 in Bacalhau's error shape, then close.
async fn refuse(
    tcp: tokio::net::TcpStream,
    tls: Option<tokio_rustls::TlsAcceptor>,
    timeout: Duration,
) {
    let body = serde_json::json!({
        "Status": 503,
        "Message": "the node has as many API connections open as it allows (API.MaxConnections), all busy; retry shortly",
        "Code": "ServiceUnavailable",
        "Component": "API",
    })
    .to_string();
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let write = async {
        match tls {
            None => answer_after_head(tcp, &answer).await,
            Some(acceptor) => {
                if let Ok(s) = acceptor.accept(tcp).await {
                    answer_after_head(s, &answer).await;
                }
            }
        }
    };
    let _ = tokio::time::timeout(timeout, write).await;
}

/// Reads the request's head (a client answered before it has sent its request sees an
/// unsolicited message, not the answer), at most 16 KiB, then answers and closes.
async fn answer_after_head<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, answer: &str) {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while head.len() < 16 * 1024 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let _ = s.write_all(answer.as_bytes()).await;
    let _ = s.shutdown().await;
}
