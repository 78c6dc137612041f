//! `urlDownload` against a real HTTP server on loopback: downloads, limits, and the SSRF guard.
//! Every refused case runs with a canary listener at the address the URL really names; the
//! canary must never see a connection.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::get;
use gadus_core::model::SpecConfig;
use gadus_core::protocol::FailureKind;
use gadus_io::storage::url::{AddrClass, UrlDownloadProvider, UrlPolicy, classify};
use gadus_io::storage::{InputProvider, NoProgress, Progress};

const HELLO: &[u8] = b"hello from the test server\n";

async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

/// A listener that counts the connections it gets.
struct Canary {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
}

impl Canary {
    async fn bind(at: &str) -> Option<Canary> {
        let listener = tokio::net::TcpListener::bind(at).await.ok()?;
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        tokio::spawn(async move {
            while let Ok((_sock, _)) = listener.accept().await {
                h.fetch_add(1, Ordering::SeqCst);
            }
        });
        Some(Canary { addr, hits })
    }
    fn port(&self) -> u16 {
        self.addr.port()
    }
    async fn assert_untouched(&self) {
        // Give a stray connection time to be accepted before judging.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(self.hits.load(Ordering::SeqCst), 0, "canary {} was contacted", self.addr);
    }
}

/// The test server: a small file, a large one, and redirects.
async fn test_server(canary_port: u16) -> SocketAddr {
    let router = Router::new()
        .route("/data/hello.txt", get(|| async { HELLO }))
        .route("/big", get(|| async { vec![b'x'; 2 * 1024 * 1024] }))
        // No Content-Length: the cap must hold while streaming.
        .route(
            "/big-chunked",
            get(|| async {
                let chunks = (0..32)
                    .map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'y'; 64 * 1024])));
                axum::body::Body::from_stream(futures::stream::iter(chunks))
            }),
        )
        .route("/redirect-same", get(|| async { redirect("/data/hello.txt".to_string()) }))
        .route(
            "/redirect-canary",
            get(move || async move { redirect(format!("http://127.0.0.1:{canary_port}/x")) }),
        )
        .route(
            "/redirect-localhost",
            get(move || async move { redirect(format!("http://localhost:{canary_port}/x")) }),
        )
        .route(
            "/redirect-odd",
            get(move || async move { redirect(format!("http://0x7f.1:{canary_port}/x")) }),
        )
        .route("/loop", get(|| async { redirect("/loop".to_string()) }))
        .route("/missing", get(|| async { StatusCode::NOT_FOUND }));
    serve(router).await
}

fn redirect(to: String) -> (StatusCode, HeaderMap) {
    let mut h = HeaderMap::new();
    h.insert(header::LOCATION, to.parse().unwrap());
    (StatusCode::FOUND, h)
}

fn loopback_ok() -> UrlPolicy {
    UrlPolicy { allow_loopback: true, ..UrlPolicy::default() }
}

fn spec(url: &str) -> SpecConfig {
    SpecConfig::new("urlDownload").with_param("url", url)
}

#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);

impl Progress for Recorder {
    fn report(&self, message: &str) {
        self.0.lock().unwrap().push(message.to_string());
    }
}

#[tokio::test]
async fn downloads_a_file_read_only_with_progress() {
    let canary = Canary::bind("127.0.0.1:0").await.unwrap();
    let server = test_server(canary.port()).await;
    let work = tempfile::tempdir().unwrap();
    let provider = UrlDownloadProvider::new(loopback_ok());
    assert_eq!(provider.source_type(), "urldownload");
    let progress = Recorder::default();
    let input = provider
        .prepare(
            &spec(&format!("http://{server}/data/hello.txt")),
            "/inputs",
            work.path(),
            &progress,
        )
        .await
        .unwrap();
    assert_eq!(input.target, "/inputs");
    assert!(!input.writable);
    assert_eq!(input.host_path, work.path().join("hello.txt"));
    assert_eq!(std::fs::read(&input.host_path).unwrap(), HELLO);
    assert!(std::fs::metadata(&input.host_path).unwrap().permissions().readonly());
    assert!(progress.0.lock().unwrap().iter().any(|m| m.starts_with("downloaded")));
}

#[tokio::test]
async fn follows_redirects_and_resolves_names() {
    let canary = Canary::bind("127.0.0.1:0").await.unwrap();
    let server = test_server(canary.port()).await;
    let provider = UrlDownloadProvider::new(loopback_ok());

    let work = tempfile::tempdir().unwrap();
    let input = provider
        .prepare(&spec(&format!("http://{server}/redirect-same")), "/in", work.path(), &NoProgress)
        .await
        .unwrap();
    // Named after the URL the user gave.
    assert_eq!(input.host_path, work.path().join("redirect-same"));
    assert_eq!(std::fs::read(&input.host_path).unwrap(), HELLO);

    // A host name goes through our resolver and the pinned address.
    let work = tempfile::tempdir().unwrap();
    let url = format!("http://localhost:{}/data/hello.txt", server.port());
    let input = provider.prepare(&spec(&url), "/in", work.path(), &NoProgress).await.unwrap();
    assert_eq!(std::fs::read(&input.host_path).unwrap(), HELLO);

    // No path segment: `file`.
    let work = tempfile::tempdir().unwrap();
    let err = provider
        .prepare(&spec(&format!("http://{server}/")), "/in", work.path(), &NoProgress)
        .await
        .unwrap_err();
    assert_eq!(err.kind, FailureKind::InputUnavailable, "{}", err.message);
    assert!(!work.path().join("file").exists(), "no partial file is left");
}

#[tokio::test]
async fn size_cap_exceeded_fails_and_leaves_nothing() {
    let canary = Canary::bind("127.0.0.1:0").await.unwrap();
    let server = test_server(canary.port()).await;
    let work = tempfile::tempdir().unwrap();
    let provider = UrlDownloadProvider::new(UrlPolicy { max_bytes: 1024 * 1024, ..loopback_ok() });
    let err = provider
        .prepare(&spec(&format!("http://{server}/big")), "/in", work.path(), &NoProgress)
        .await
        .unwrap_err();
    assert_eq!(err.kind, FailureKind::InputUnavailable);
    assert!(err.message.contains("limit"), "{}", err.message);
    assert!(!work.path().join("big").exists());

    let err = provider
        .prepare(&spec(&format!("http://{server}/big-chunked")), "/in", work.path(), &NoProgress)
        .await
        .unwrap_err();
    assert_eq!(err.kind, FailureKind::InputUnavailable);
    assert!(err.message.contains("sent more than"), "{}", err.message);
    assert!(!work.path().join("big-chunked").exists(), "the partial file is removed");
}

#[tokio::test]
async fn http_errors_loops_and_bad_specs_are_classified() {
    let canary = Canary::bind("127.0.0.1:0").await.unwrap();
    let server = test_server(canary.port()).await;
    let provider = UrlDownloadProvider::new(loopback_ok());
    let work = tempfile::tempdir().unwrap();
    let run = |url: String| {
        let provider = provider.clone();
        let dir = work.path().to_path_buf();
        async move { provider.prepare(&spec(&url), "/in", &dir, &NoProgress).await.unwrap_err() }
    };
    let err = run(format!("http://{server}/missing")).await;
    assert_eq!(err.kind, FailureKind::InputUnavailable);
    assert!(err.message.contains("404"), "{}", err.message);
    let err = run(format!("http://{server}/loop")).await;
    assert_eq!(err.kind, FailureKind::InputUnavailable);
    assert!(err.message.contains("redirects"), "{}", err.message);
    for bad in ["ftp://example.com/x", "file:///etc/passwd", "not a url"] {
        let err = run(bad.to_string()).await;
        assert_eq!(err.kind, FailureKind::InvalidSpec, "{bad}: {}", err.message);
    }
    let err = provider
        .prepare(&SpecConfig::new("urlDownload"), "/in", work.path(), &NoProgress)
        .await
        .unwrap_err();
    assert_eq!(err.kind, FailureKind::InvalidSpec);
}

#[tokio::test]
async fn timeout_applies_to_the_whole_download() {
    // A server that accepts and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });
    let provider = UrlDownloadProvider::new(UrlPolicy {
        timeout: Duration::from_millis(300),
        ..loopback_ok()
    });
    let work = tempfile::tempdir().unwrap();
    let err = provider
        .prepare(&spec(&format!("http://{addr}/slow")), "/in", work.path(), &NoProgress)
        .await
        .unwrap_err();
    assert_eq!(err.kind, FailureKind::InputUnavailable);
    assert!(err.message.contains("within"), "{}", err.message);
}

#[tokio::test]
async fn ssrf_targets_are_refused_without_a_connection() {
    let canary = Canary::bind("127.0.0.1:0").await.unwrap();
    let canary6 = Canary::bind("[::1]:0").await;
    let port = canary.port();
    let provider = UrlDownloadProvider::new(UrlPolicy::default());
    let work = tempfile::tempdir().unwrap();

    let mut urls = vec![
        format!("http://127.0.0.1:{port}/x"),
        format!("http://localhost:{port}/x"),
        format!("http://2130706433:{port}/x"),
        format!("http://0177.0.0.1:{port}/x"),
        format!("http://0x7f.1:{port}/x"),
        format!("http://127.1:{port}/x"),
        format!("http://[::ffff:127.0.0.1]:{port}/x"),
        format!("http://[::ffff:7f00:1]:{port}/x"),
        format!("https://127.0.0.1:{port}/x"),
        // No canary can listen at these; they must be refused before any connect.
        "http://169.254.169.254/latest/meta-data/".to_string(),
        "http://[::ffff:169.254.169.254]/".to_string(),
        "http://10.0.0.1/".to_string(),
        "http://172.16.5.4/".to_string(),
        "http://192.168.1.1/".to_string(),
        "http://100.64.0.1/".to_string(),
        "http://0.0.0.0/".to_string(),
        "http://255.255.255.255/".to_string(),
        "http://224.0.0.1/".to_string(),
        "http://[fd00::1]/".to_string(),
        "http://[fe80::1]/".to_string(),
        "http://[::]/".to_string(),
        "http://[64:ff9b::a9fe:a9fe]/".to_string(),
    ];
    let port6 = canary6.as_ref().map_or(port, Canary::port);
    urls.push(format!("http://[::1]:{port6}/x"));

    for url in &urls {
        let started = std::time::Instant::now();
        let err = provider.prepare(&spec(url), "/in", work.path(), &NoProgress).await.unwrap_err();
        assert_eq!(err.kind, FailureKind::InvalidSpec, "{url}: {}", err.message);
        assert!(err.message.contains("refused by policy"), "{url}: {}", err.message);
        assert!(started.elapsed() < Duration::from_secs(2), "{url} was not refused up front");
    }
    canary.assert_untouched().await;
    if let Some(c6) = &canary6 {
        c6.assert_untouched().await;
    }
    assert_eq!(std::fs::read_dir(work.path()).unwrap().count(), 0);
}

#[tokio::test]
async fn redirects_are_rechecked_at_every_hop() {
    let canary = Canary::bind("127.0.0.1:0").await.unwrap();
    let server = test_server(canary.port()).await;
    // Loopback is refused; only the first server's exact address is let through.
    let provider =
        UrlDownloadProvider::new(UrlPolicy { allow_addrs: vec![server], ..UrlPolicy::default() });
    let work = tempfile::tempdir().unwrap();

    // The exception works for the allowed server itself.
    let ok = provider
        .prepare(&spec(&format!("http://{server}/data/hello.txt")), "/in", work.path(), &NoProgress)
        .await
        .unwrap();
    assert_eq!(std::fs::read(&ok.host_path).unwrap(), HELLO);

    for path in ["/redirect-canary", "/redirect-localhost", "/redirect-odd"] {
        let err = provider
            .prepare(&spec(&format!("http://{server}{path}")), "/in", work.path(), &NoProgress)
            .await
            .unwrap_err();
        assert_eq!(err.kind, FailureKind::InvalidSpec, "{path}: {}", err.message);
        assert!(err.message.contains("refused by policy"), "{path}: {}", err.message);
    }
    canary.assert_untouched().await;
}

#[test]
fn address_classes() {
    let c = |s: &str| classify(s.parse().unwrap());
    assert_eq!(c("8.8.8.8"), AddrClass::Public);
    assert_eq!(c("2606:4700::1111"), AddrClass::Public);
    assert_eq!(c("127.5.6.7"), AddrClass::Loopback);
    assert_eq!(c("::1"), AddrClass::Loopback);
    assert_eq!(c("::ffff:127.0.0.1"), AddrClass::Loopback);
    assert_eq!(c("10.1.2.3"), AddrClass::Private);
    assert_eq!(c("172.31.255.255"), AddrClass::Private);
    assert_eq!(c("172.32.0.1"), AddrClass::Public);
    assert_eq!(c("192.168.0.1"), AddrClass::Private);
    assert_eq!(c("100.64.0.1"), AddrClass::Private);
    assert_eq!(c("100.127.255.255"), AddrClass::Private);
    assert_eq!(c("100.128.0.1"), AddrClass::Public);
    assert_eq!(c("fc00::1"), AddrClass::Private);
    assert_eq!(c("2002:0a00:0001::1"), AddrClass::Private);
    for bad in
        ["169.254.169.254", "0.0.0.0", "0.1.2.3", "255.255.255.255", "224.0.0.1", "240.0.0.1"]
    {
        assert!(matches!(c(bad), AddrClass::Forbidden(_)), "{bad}");
    }
    for bad in ["::", "fe80::1", "ff02::1", "::ffff:169.254.169.254", "64:ff9b::a9fe:a9fe"] {
        assert!(matches!(c(bad), AddrClass::Forbidden(_)), "{bad}");
    }
}
