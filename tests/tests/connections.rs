//! Issue 13, item 4: the API holds under connection abuse. Idle and slow sockets beyond the
//! node's file limit, headers that never finish, bodies that trickle, and a full table of busy
//! connections: a normal client is still served, or told 503 in Bacalhau's shape.

#![allow(clippy::unwrap_used)]

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::{Node, http};

fn connect(node: &Node) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", node.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

async fn metric(node: &Node, name: &str) -> f64 {
    let text = http().get(node.url("/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
}

/// The probe that found the defect: more idle sockets than the node has files made every new
/// client time out. With a 512-file limit the node caps itself at 256 connections and closes
/// the longest-idle one for each newcomer, so 500 idle and 100 slow sockets lock no one out.
#[tokio::test]
async fn idle_and_slow_sockets_beyond_the_file_limit_do_not_lock_out_a_client() {
    let node = Node::start_with_file_limit(512, &["-c", "API.HeaderTimeout=60s"]);
    let mut held = Vec::new();
    for i in 0..600 {
        let mut s = connect(&node);
        if i % 6 == 0 {
            // Slow: a request line and one header, then nothing.
            s.write_all(b"GET /api/v1/agent/version HTTP/1.1\r\nHost: x\r\n").unwrap();
        }
        held.push(s);
    }
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let started = Instant::now();
    let resp = client.get(node.url("/api/v1/agent/version")).send().await;
    let resp = resp.unwrap_or_else(|e| panic!("a normal client was locked out: {e}"));
    assert_eq!(resp.status(), 200);
    println!("served after {:?} with {} sockets held", started.elapsed(), held.len());
    assert!(metric(&node, "gadus_api_connections_evicted_total").await >= 300.0);
    assert!(metric(&node, "gadus_api_connections ").await <= 256.0);
    // The evicted sockets were closed by the node (EOF), not left hanging.
    let mut buf = [0u8; 64];
    assert_eq!(held[1].read(&mut buf).unwrap_or(0), 0, "the oldest idle socket was closed");
}

/// A connection that does not finish its headers within `API.HeaderTimeout` is closed, and so
/// is one that sits idle between requests that long.
#[tokio::test]
async fn headers_must_arrive_within_the_header_timeout() {
    let node = Node::start(&["-c", "API.HeaderTimeout=1s"]);
    let mut silent = connect(&node);
    let mut partial = connect(&node);
    partial.write_all(b"GET /api/v1/agent/version HTTP/1.1\r\nHost: x\r\n").unwrap();
    let mut served = connect(&node);
    served.write_all(b"GET /api/v1/agent/version HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let started = Instant::now();
    let mut buf = vec![0u8; 4096];
    let n = served.read(&mut buf).unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
        "a whole request is served"
    );
    for (name, s) in
        [("silent", &mut silent), ("partial", &mut partial), ("idle after a request", &mut served)]
    {
        // Whatever arrives (a 408 from hyper, or nothing), the socket ends within the timeout.
        let mut all = Vec::new();
        let _ = s.read_to_end(&mut all);
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "{name} was held for {:?}",
            started.elapsed()
        );
    }
    assert!(started.elapsed() >= Duration::from_millis(900), "closed before the timeout");
}

/// A body that trickles is cut by `API.RequestTimeout` with a 408 in Bacalhau's shape.
#[tokio::test]
async fn a_trickling_body_is_cut_by_the_request_timeout() {
    let node = Node::start(&["-c", "API.RequestTimeout=1s"]);
    let mut s = connect(&node);
    s.write_all(
        b"PUT /api/v1/orchestrator/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{\"Job\":",
    )
    .unwrap();
    let mut all = Vec::new();
    let _ = s.read_to_end(&mut all);
    let text = String::from_utf8_lossy(&all);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("\"Code\":\"TimeOut\""), "{text}");
}

/// When every connection is busy (requests in flight), a newcomer gets a clear 503 in
/// Bacalhau's shape; once one finishes, the next client is served.
#[tokio::test]
async fn when_every_connection_is_busy_a_newcomer_gets_a_503_and_then_is_served() {
    let node = Node::start(&["-c", "API.MaxConnections=4", "-c", "API.RequestTimeout=60s"]);
    let mut busy: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = connect(&node);
            s.write_all(
                b"PUT /api/v1/orchestrator/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{",
            )
            .unwrap();
            s
        })
        .collect();
    // The four requests are in flight once their headers are read.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let resp = http().get(node.url("/api/v1/agent/version")).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "1");
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["Code"], "ServiceUnavailable", "{v}");
    assert!(v["Message"].as_str().unwrap().contains("API.MaxConnections"), "{v}");
    drop(busy.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = http().get(node.url("/api/v1/agent/version")).send().await.unwrap();
        if r.status() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "still {} after a slot freed", r.status());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(metric(&node, "gadus_api_connections_refused_total").await >= 1.0);
}

/// Writes are limited per client address (`API.WritesPerSecond`, twice that as burst): past
/// it a client gets 429 in Bacalhau's shape with Retry-After, its reads still work, and after
/// the wait its writes do again. Loopback is exempt by default (`API.RateLimitExempt`), so
/// this node clears the list to be limited on loopback.
#[tokio::test]
async fn writes_past_the_rate_limit_get_429_and_reads_do_not() {
    let delete = |node: &Node| {
        let url = node.url("/api/v1/orchestrator/jobs/no-such-job");
        async move { http().delete(url).send().await.unwrap() }
    };
    let node = Node::start(&["-c", "API.WritesPerSecond=2", "-c", "API.RateLimitExempt="]);
    let mut statuses = Vec::new();
    for _ in 0..10 {
        statuses.push(delete(&node).await.status().as_u16());
    }
    assert!(statuses[..4].iter().all(|s| *s != 429), "the burst of 4 passes: {statuses:?}");
    assert!(statuses.contains(&429), "{statuses:?}");
    let resp = delete(&node).await;
    assert_eq!(resp.status(), 429);
    let wait: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&wait), "{wait}");
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["Code"], "TooManyRequests", "{v}");
    assert!(v["Message"].as_str().unwrap().contains("API.WritesPerSecond"), "{v}");
    let read = http().get(node.url("/api/v1/orchestrator/jobs")).send().await.unwrap();
    assert_eq!(read.status(), 200, "reads are not limited");
    tokio::time::sleep(Duration::from_secs(wait)).await;
    assert_ne!(delete(&node).await.status(), 429, "a token came back");

    // The default exempts loopback: the same burst is never limited.
    let node = Node::start(&["-c", "API.WritesPerSecond=2"]);
    for _ in 0..10 {
        assert_ne!(delete(&node).await.status(), 429);
    }
}
