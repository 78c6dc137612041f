//! The trustless-gateway client against real HTTP servers on 127.0.0.1: honest ones, liars,
//! oversized answers, wrong roots and a server that never answers.
#![allow(clippy::unwrap_used)]

#[path = "content_support.rs"]
mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gadus_io::content::{
    CidVersion, ContentStore, GatewayClient, GatewayOptions, ImportOptions, RAW, RemoteError,
    cid_of_block,
};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What the test server answers for one `path?query`.
#[derive(Clone)]
enum Reply {
    Ok(Vec<u8>),
    Status(u16),
    /// Accept the connection, then never answer.
    Hang,
}

/// A minimal HTTP/1.1 server: one request per connection, `Connection: close`. Records every
/// request line with its `Accept` header.
struct Server {
    base: String,
    seen: Arc<Mutex<Vec<(String, String)>>>,
}

async fn serve(routes: HashMap<String, Reply>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let routes = Arc::new(routes);
    tokio::spawn(async move {
        loop {
            let (mut sock, _) = listener.accept().await.unwrap();
            let routes = Arc::clone(&routes);
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = sock.read(&mut buf).await.unwrap();
                    if n == 0 {
                        return;
                    }
                    req.extend_from_slice(&buf[..n]);
                }
                let text = String::from_utf8_lossy(&req).into_owned();
                let target = text.split_whitespace().nth(1).unwrap_or("").to_owned();
                let accept = text
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase().strip_prefix("accept:").map(|v| v.trim().to_owned())
                    })
                    .unwrap_or_default();
                log.lock().unwrap().push((target.clone(), accept));
                let (status, body) =
                    match routes.get(&target).cloned().unwrap_or(Reply::Status(404)) {
                        Reply::Ok(body) => (200, body),
                        Reply::Status(s) => (s, Vec::new()),
                        Reply::Hang => {
                            tokio::time::sleep(Duration::from_secs(3600)).await;
                            return;
                        }
                    };
                let head = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = sock.write_all(head.as_bytes()).await;
                let _ = sock.write_all(&body).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    Server { base, seen }
}

fn fast() -> GatewayOptions {
    GatewayOptions {
        idle_timeout: Duration::from_millis(500),
        block_timeout: Duration::from_secs(2),
        ..Default::default()
    }
}

#[tokio::test]
async fn fetches_and_verifies_single_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(dir.path()).unwrap();
    let good = cid_of_block(CidVersion::V1, RAW, b"good block");
    let lied = cid_of_block(CidVersion::V1, RAW, b"the real bytes");
    let big_bytes = vec![3u8; 3 << 20];
    let big = cid_of_block(CidVersion::V1, RAW, &big_bytes);

    let liar = serve(HashMap::from([
        (format!("/ipfs/{good}?format=raw"), Reply::Ok(b"tampered block".to_vec())),
        (format!("/ipfs/{lied}?format=raw"), Reply::Ok(b"fake bytes".to_vec())),
        (format!("/ipfs/{big}?format=raw"), Reply::Ok(big_bytes.clone())),
    ]))
    .await;
    let honest = serve(HashMap::from([(
        format!("/ipfs/{good}?format=raw"),
        Reply::Ok(b"good block".to_vec()),
    )]))
    .await;
    let client =
        GatewayClient::new([liar.base.clone(), format!("{}/", honest.base)], fast()).unwrap();

    // The liar is asked first, refused, then the honest server delivers.
    let bytes = client.fetch_block(&store, &good).await.unwrap();
    assert_eq!(&bytes[..], b"good block");
    assert_eq!(&store.get_block(&good).unwrap().unwrap()[..], b"good block");
    assert_eq!(liar.seen.lock().unwrap()[0].1, "application/vnd.ipld.raw");
    assert_eq!(honest.seen.lock().unwrap().len(), 1);

    // Only liars: a typed error listing each attempt, nothing stored.
    let err = client.fetch_block(&store, &lied).await.unwrap_err();
    match err.remote() {
        Some(RemoteError::AllFailed { attempts, .. }) => {
            assert_eq!(attempts.len(), 2);
            assert!(attempts[0].1.contains("do not match"), "{}", attempts[0].1);
            assert!(attempts[1].1.contains("404"), "{}", attempts[1].1);
        }
        _ => panic!("{err}"),
    }
    assert!(!store.has_block(&lied).unwrap());

    // Oversized answers are cut off (even though the bytes would verify).
    let err = client.fetch_block(&store, &big).await.unwrap_err();
    assert!(err.to_string().contains("exceeds"), "{err}");
    assert!(!store.has_block(&big).unwrap());

    // A block already local needs no request.
    let before = honest.seen.lock().unwrap().len();
    client.fetch_block(&store, &good).await.unwrap();
    assert_eq!(honest.seen.lock().unwrap().len(), before);
}

#[tokio::test]
async fn fetches_whole_dags_as_car() {
    let dir = tempfile::tempdir().unwrap();
    let files = vec![
        ("x.txt".to_string(), b"hello world".to_vec()),
        ("d/big".to_string(), seeded_bytes(31, 900_000)),
    ];
    write_tree(&dir.path().join("src"), &files, &[]);
    let origin = ContentStore::open(dir.path().join("origin")).unwrap();
    let root = origin.import_path(dir.path().join("src"), &ImportOptions::kubo_v1()).unwrap().cid;
    let mut car = Vec::new();
    origin.export_car(&root, &mut car).unwrap();
    let mut tampered = car.clone();
    let at = tampered.len() - 100;
    tampered[at] ^= 1;
    let mut other_root = Vec::new();
    let unrelated = origin.import_bytes(b"unrelated", &ImportOptions::kubo_v1()).unwrap().cid;
    origin.export_car(&unrelated, &mut other_root).unwrap();
    let path = format!("/ipfs/{root}?format=car");

    let bad = serve(HashMap::from([(path.clone(), Reply::Ok(tampered))])).await;
    let wrong = serve(HashMap::from([(path.clone(), Reply::Ok(other_root))])).await;
    let broken = serve(HashMap::from([(path.clone(), Reply::Status(500))])).await;
    let good = serve(HashMap::from([(path.clone(), Reply::Ok(car))])).await;

    let local = ContentStore::open(dir.path().join("local")).unwrap();
    let client = GatewayClient::new([&bad.base, &wrong.base, &broken.base], fast()).unwrap();
    let err = client.fetch_dag(&local, &root, true).await.unwrap_err();
    let Some(RemoteError::AllFailed { attempts, .. }) = err.remote() else { panic!("{err}") };
    assert!(attempts[0].1.contains("do not match"), "{}", attempts[0].1);
    assert!(attempts[1].1.contains("do not include the requested"), "{}", attempts[1].1);
    assert!(attempts[2].1.contains("500"), "{}", attempts[2].1);
    assert_eq!(local.stats().unwrap().blocks, 0, "nothing from the bad CARs was kept");
    assert_eq!(bad.seen.lock().unwrap()[0].1, "application/vnd.ipld.car");

    let client = GatewayClient::new([&bad.base, &good.base], fast()).unwrap();
    let report = client.fetch_dag(&local, &root, true).await.unwrap();
    assert_eq!(report.source.as_deref(), Some(good.base.as_str()));
    assert_eq!(report.blocks, origin.stats().unwrap().blocks - 1, "all but the unrelated block");
    assert!(local.is_pinned(&root).unwrap());
    local.export(&root, &dir.path().join("out")).unwrap();
    assert_eq!(snapshot(&dir.path().join("out")), snapshot(&dir.path().join("src")));

    // Complete locally: no request at all.
    let before = good.seen.lock().unwrap().len();
    let report = client.fetch_dag(&local, &root, true).await.unwrap();
    assert_eq!(report.source, None);
    assert_eq!(good.seen.lock().unwrap().len(), before);
}

#[tokio::test]
async fn a_silent_server_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(dir.path()).unwrap();
    let cid = cid_of_block(CidVersion::V1, RAW, b"anything");
    let silent = serve(HashMap::from([
        (format!("/ipfs/{cid}?format=raw"), Reply::Hang),
        (format!("/ipfs/{cid}?format=car"), Reply::Hang),
    ]))
    .await;
    let client = GatewayClient::new([&silent.base], fast()).unwrap();
    let start = Instant::now();
    assert!(client.fetch_block(&store, &cid).await.is_err());
    assert!(client.fetch_dag(&store, &cid, false).await.is_err());
    assert!(start.elapsed() < Duration::from_secs(10), "took {:?}", start.elapsed());
}

#[test]
fn bad_base_urls_are_refused() {
    for bad in ["ftp://x", "not a url", "http://x/?q=1"] {
        assert!(GatewayClient::new([bad], GatewayOptions::default()).is_err(), "{bad}");
    }
    let err = GatewayClient::new(Vec::<String>::new(), GatewayOptions::default()).err().unwrap();
    assert!(matches!(err.remote(), Some(RemoteError::NoGateways)));
}
