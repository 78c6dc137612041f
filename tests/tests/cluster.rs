//! Multi-node clusters of real `gadus serve` processes talking libp2p on loopback.
//!
//! - a job submitted to node A with a label constraint runs on node C; its results are
//!   fetched through A's API;
//! - kill -9 of the compute node running a long Docker job: the orchestrator marks it
//!   disconnected, the job completes on another node, and the restarted node's late report
//!   of the old attempt is not accepted;
//! - an ops job runs once on every node; a daemon job starts on a node that joins later.

#![allow(clippy::unwrap_used)] // Tests unwrap: a panic is the failure report.
mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Node, call, submit, wait_terminal};

/// Fast liveness so node loss is noticed in seconds, not Bacalhau's default 30 s.
const FAST: &[&str] = &[
    "-c",
    "Compute.Heartbeat.Interval=300ms",
    "-c",
    "Orchestrator.NodeManager.DisconnectTimeout=2s",
    "-c",
    "Orchestrator.Scheduler.RetryBackoff=200ms",
];

fn args<'a>(base: &[&'a str], more: &[&'a str]) -> Vec<&'a str> {
    let mut v: Vec<&str> = FAST.to_vec();
    v.extend_from_slice(base);
    v.extend_from_slice(more);
    v
}

async fn nodes(n: &Node) -> Vec<Value> {
    let (_, v, _) = call("GET", &n.url("/api/v1/orchestrator/nodes"), None).await;
    v["Nodes"].as_array().cloned().unwrap_or_default()
}

async fn wait_nodes(n: &Node, count: usize) {
    let start = Instant::now();
    loop {
        let list = nodes(n).await;
        let connected = list
            .iter()
            .filter(|s| s["Connection"] == "CONNECTED" && s["Info"]["NodeType"] == "Compute")
            .count();
        if connected >= count {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "only {connected} of {count} nodes joined: {list:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn executions(n: &Node, job: &str) -> Vec<Value> {
    let (_, v, _) =
        call("GET", &n.url(&format!("/api/v1/orchestrator/jobs/{job}/executions")), None).await;
    v["Items"].as_array().cloned().unwrap_or_default()
}

async fn node_id(n: &Node) -> String {
    let (_, v, _) = call("GET", &n.url("/api/v1/agent/node"), None).await;
    v["NodeID"].as_str().or(v["Info"]["NodeID"].as_str()).unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_constrained_job_runs_on_the_matching_node_and_results_come_back_through_a() {
    let a = Node::start(&args(&["--orchestrator"], &[]));
    let peer = a.p2p.clone().expect("node A has a loopback P2P address");
    let _b = Node::start(&args(&["--compute", "--labels", "zone=b", "--peer", &peer], &[]));
    let c = Node::start(&args(&["--compute", "--labels", "zone=c", "--peer", &peer], &[]));
    wait_nodes(&a, 2).await;
    let c_id = node_id(&c).await;
    assert!(c_id.starts_with("12D3KooW"), "node IDs are libp2p peer IDs: {c_id}");

    let module =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/wasm/hello.wasm");
    let out = a.cli(&[
        "wasm",
        "run",
        module.to_str().unwrap(),
        "-s",
        "zone=c",
        "-p",
        "local",
        "--id-only",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let job = String::from_utf8_lossy(&out.stdout).trim().lines().last().unwrap().to_string();
    assert_eq!(wait_terminal(&a, &job, Duration::from_secs(30)).await, "Completed");
    let execs = executions(&a, &job).await;
    assert_eq!(execs.len(), 1, "{execs:?}");
    assert_eq!(execs[0]["NodeID"], c_id.as_str(), "ran on C");

    let dest = tempfile::tempdir().unwrap();
    let out = a.cli(&["get", &job, "-o", dest.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = std::fs::read_to_string(dest.path().join(format!("job-{job}/stdout"))).unwrap();
    assert_eq!(stdout, "hello from gadus\n");
}

/// Execution states (Bacalhau v1.6+ numbering): from BidAccepted on, the task is under way.
const BID_ACCEPTED: i64 = 5;
const COMPLETED: i64 = 9;

/// A one-partition Docker job running a shell `script` in the busybox test image.
fn shell_job(image: &str, script: &str) -> Value {
    json!({
        "Type": "batch", "Count": 1,
        "Tasks": [{"Name": "main",
            "Engine": {"Type": "docker", "Params": {"Image": image, "Entrypoint": ["/bin/sh", "-c", script]}},
            "Resources": {"CPU": "100m", "Memory": "32Mb"}}]
    })
}

/// Waits until an execution of `job` is under way; returns the node running it.
async fn wait_started(n: &Node, job: &str) -> String {
    let start = Instant::now();
    loop {
        let e = executions(n, job).await;
        if let Some(e) =
            e.iter().find(|e| e["ComputeState"]["StateType"].as_i64() >= Some(BID_ACCEPTED))
        {
            return e["NodeID"].as_str().unwrap().to_string();
        }
        assert!(start.elapsed() < Duration::from_secs(30), "never started: {e:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The completed executions of `job`, and all of them (for failure messages).
async fn completed(n: &Node, job: &str) -> (Vec<Value>, Vec<Value>) {
    let all = executions(n, job).await;
    let done = all
        .iter()
        .filter(|e| e["ComputeState"]["StateType"] == json!(COMPLETED))
        .cloned()
        .collect();
    (done, all)
}

/// `gadus_stale_messages_total` from a node's `/metrics`.
async fn stale_messages(n: &Node) -> u64 {
    let text = support::http().get(n.url("/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("gadus_stale_messages_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("gadus_stale_messages_total in /metrics")
}

#[tokio::test(flavor = "multi_thread")]
async fn node_loss_reschedules_and_the_late_result_is_not_accepted() {
    let Some(image) = support::busybox().await else { return };
    let a = Node::start(&args(&["--orchestrator"], &[]));
    let peer = a.p2p.clone().unwrap();
    let mut b = Node::start(&args(&["--compute", "--peer", &peer], &[]));
    let mut c = Node::start(&args(&["--compute", "--peer", &peer], &[]));
    wait_nodes(&a, 2).await;
    let (b_id, c_id) = (node_id(&b).await, node_id(&c).await);

    let job = submit(&a, shell_job(&image, "sleep 4; echo done")).await;
    // Wait until the execution is under way, give the container a moment to start, kill its node.
    let first_node = wait_started(&a, &job).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let victim = if first_node == b_id {
        &mut b
    } else {
        assert_eq!(first_node, c_id);
        &mut c
    };
    victim.kill9();

    assert_eq!(wait_terminal(&a, &job, Duration::from_secs(60)).await, "Completed");
    let (done, execs) = completed(&a, &job).await;
    assert_eq!(done.len(), 1, "exactly one completed execution: {execs:#?}");
    assert_ne!(done[0]["NodeID"], first_node.as_str(), "completed on the surviving node");

    // The killed node comes back (same identity); its container may still finish and be
    // adopted, but the orchestrator never accepts that superseded attempt.
    let dir = victim.data_dir.clone();
    let extra: Vec<String> = victim.extra.clone();
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let _back = Node::start_in(&dir, 0, &extra);
    tokio::time::sleep(Duration::from_secs(6)).await;
    let (_, v, _) = call("GET", &a.url(&format!("/api/v1/orchestrator/jobs/{job}")), None).await;
    assert_eq!(v["Job"]["State"]["StateType"], "Completed");
    let (done, execs) = completed(&a, &job).await;
    assert_eq!(done.len(), 1, "the late attempt was not accepted: {execs:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn ops_runs_on_every_node_and_daemon_reaches_a_late_joiner() {
    let a = Node::start(&args(&[], &[]));
    let peer = a.p2p.clone().unwrap();
    let b = Node::start(&args(&["--compute", "--peer", &peer], &[]));
    wait_nodes(&a, 2).await;
    let ids = [node_id(&a).await, node_id(&b).await];

    let ops =
        submit(&a, json!({"Type": "ops", "Tasks": [{"Name": "main", "Engine": {"Type": "noop"}}]}))
            .await;
    assert_eq!(wait_terminal(&a, &ops, Duration::from_secs(30)).await, "Completed");
    let mut on: Vec<String> = executions(&a, &ops)
        .await
        .iter()
        .map(|e| e["NodeID"].as_str().unwrap().to_string())
        .collect();
    on.sort();
    let mut want = ids.to_vec();
    want.sort();
    assert_eq!(on, want, "one execution per node");

    let daemon = submit(
        &a,
        json!({"Type": "daemon", "Tasks": [{"Name": "main", "Engine": {"Type": "noop"}}]}),
    )
    .await;
    let c = Node::start(&args(&["--compute", "--peer", &peer], &[]));
    let c_id = node_id(&c).await;
    let start = Instant::now();
    loop {
        let e = executions(&a, &daemon).await;
        if e.iter().any(|e| e["NodeID"] == c_id.as_str()) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "daemon never reached the new node: {e:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_owning_orchestrator_restarts_and_the_job_still_completes() {
    let Some(image) = support::busybox().await else { return };
    // A fixed libp2p port: the compute node re-dials its bootstrap address after A restarts.
    let port = free_port().to_string();
    let net = format!("Network.Port={port}");
    let mut a = Node::start(&args(&["--orchestrator", "-c", &net], &[]));
    let peer = a.p2p.clone().unwrap();
    let _b = Node::start(&args(&["--compute", "--peer", &peer], &[]));
    wait_nodes(&a, 1).await;
    let job = submit(&a, shell_job(&image, "sleep 3; echo survived")).await;
    wait_started(&a, &job).await;
    // kill -9 the orchestrator mid-job and bring it back on the same data dir and ports.
    let (dir, api) = (a.data_dir.clone(), a.port);
    let extra: Vec<String> = a.extra.clone();
    a.kill9();
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let a = Node::start_in(&dir, api, &extra);
    assert_eq!(wait_terminal(&a, &job, Duration::from_secs(60)).await, "Completed");
    let (done, execs) = completed(&a, &job).await;
    assert_eq!(done.len(), 1, "{execs:#?}");
    assert!(done[0]["RunOutput"]["Stdout"].as_str().unwrap_or("").contains("survived"));
    // The history is complete: submitted ... running ... completed, in order.
    let (_, h, _) =
        call("GET", &a.url(&format!("/api/v1/orchestrator/jobs/{job}/history")), None).await;
    let states: Vec<String> = h["Items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["Type"] == "JobLevel")
        .filter_map(|i| i["JobState"]["New"].as_str().map(str::to_string))
        .collect();
    assert_eq!(states.first().map(String::as_str), Some("Pending"), "{h:#}");
    assert_eq!(states.last().map(String::as_str), Some("Completed"), "{h:#}");
    assert!(states.iter().any(|s| s == "Running"), "{states:?}");
}

/// SIGSTOP / SIGCONT a node: while stopped it sends nothing and answers nothing, as if
/// partitioned away, and its connections stay open, so when it resumes it speaks up with
/// whatever it did (here: the result of an attempt the orchestrator has given up on).
fn signal(node: &Node, sig: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(node.child.id() as i32).unwrap();
    rustix::process::kill_process(pid, sig).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silenced_node_loses_its_job_and_its_late_result_is_rejected() {
    let Some(image) = support::busybox().await else { return };
    let a = Node::start(&args(&["--orchestrator"], &[]));
    let peer = a.p2p.clone().unwrap();
    let b = Node::start(&args(&["--compute", "--peer", &peer], &[]));
    let c = Node::start(&args(&["--compute", "--peer", &peer], &[]));
    wait_nodes(&a, 2).await;
    let (b_id, c_id) = (node_id(&b).await, node_id(&c).await);
    let job = submit(&a, shell_job(&image, "sleep 3; echo attempt")).await;
    let first = wait_started(&a, &job).await;
    let silenced = if first == b_id { &b } else { &c };
    assert!(first == b_id || first == c_id);
    signal(silenced, rustix::process::Signal::STOP);
    // The orchestrator stops hearing from it, marks it disconnected and reruns the job.
    let state = wait_terminal(&a, &job, Duration::from_secs(60)).await;
    // Let the silenced node speak again: its container finished meanwhile, so it reports a
    // completed attempt that has been superseded.
    signal(silenced, rustix::process::Signal::CONT);
    assert_eq!(state, "Completed");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (done, execs) = completed(&a, &job).await;
    assert_eq!(done.len(), 1, "only the rerun counts: {execs:#?}");
    assert_ne!(done[0]["NodeID"], first.as_str(), "{execs:#?}");
    // The late report arrived and was counted as stale, not merely lost.
    let stale = stale_messages(&a).await;
    assert!(stale > 0, "the superseded attempt's messages were seen and ignored");
}

/// A TCP proxy the test controls: forwards to `target` until `cut`, which drops every open
/// connection and refuses new ones until `heal`. A node that reaches the cluster only through
/// it (a dial-only node) is partitioned away by `cut`.
struct Proxy {
    port: u16,
    blocked: std::sync::Arc<std::sync::atomic::AtomicBool>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(target: u16) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let blocked = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let conns = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (b, c) = (blocked.clone(), conns.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if b.load(std::sync::atomic::Ordering::SeqCst) {
                    continue; // dropped at once: the partition refuses new connections
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut out) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
                c.lock().unwrap().push(task);
            }
        });
        Proxy { port, blocked, conns }
    }

    fn cut(&self) {
        self.blocked.store(true, std::sync::atomic::Ordering::SeqCst);
        for t in self.conns.lock().unwrap().drain(..) {
            t.abort();
        }
    }

    fn heal(&self) {
        self.blocked.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partitioned_node_loses_its_job_and_its_late_result_is_rejected() {
    let Some(image) = support::busybox().await else { return };
    let a_port = free_port();
    let net = format!("Network.Port={a_port}");
    let a = Node::start(&args(&["--orchestrator", "-c", &net], &[]));
    let a_id = node_id(&a).await;
    let proxy = Proxy::start(a_port).await;
    // B listens nowhere and reaches A only through the proxy.
    let via_proxy = format!("/ip4/127.0.0.1/tcp/{}/p2p/{a_id}", proxy.port);
    let b = Node::start(&args(
        &["--compute", "-c", "Network.DialOnly=true", "--peer", &via_proxy],
        &[],
    ));
    wait_nodes(&a, 1).await;
    let b_id = node_id(&b).await;
    let job = submit(&a, shell_job(&image, "sleep 3; echo attempt")).await;
    assert_eq!(wait_started(&a, &job).await, b_id);
    // Partition B away; C joins directly. After the heartbeat timeout the job reruns on C.
    proxy.cut();
    let peer = a.p2p.clone().unwrap();
    let c = Node::start(&args(&["--compute", "--peer", &peer], &[]));
    let c_id = node_id(&c).await;
    assert_eq!(wait_terminal(&a, &job, Duration::from_secs(60)).await, "Completed");
    // Heal: B reconnects and reports its finished, superseded attempt.
    proxy.heal();
    let start = Instant::now();
    let stale = loop {
        let stale = stale_messages(&a).await;
        if stale > 0 || start.elapsed() > Duration::from_secs(20) {
            break stale;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(stale > 0, "B's late report reached A after the partition healed and was refused");
    let (done, execs) = completed(&a, &job).await;
    assert_eq!(done.len(), 1, "{execs:#?}");
    assert_eq!(done[0]["NodeID"], c_id.as_str(), "{execs:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn ipfs_data_moves_between_nodes_both_ways() {
    let a = Node::start(&args(&["--labels", "zone=a"], &[]));
    let peer = a.p2p.clone().unwrap();
    let c = Node::start(&args(&["--compute", "--labels", "zone=c", "--peer", &peer], &[]));
    wait_nodes(&a, 2).await;
    let c_id = node_id(&c).await;
    let tmp = tempfile::tempdir().unwrap();
    let book = tmp.path().join("book.txt");
    std::fs::write(&book, "one two three four five\n").unwrap();
    // The input lives only in A's store; the job must run on C.
    let out = a.cli(&["data", "add", "-q", book.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cid = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let module =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/wasm/word-count.wasm");
    let out = a.cli(&[
        "wasm",
        "run",
        module.to_str().unwrap(),
        "-s",
        "zone=c",
        "-i",
        &format!("ipfs://{cid}:/inputs/book.txt"),
        "-o",
        "outputs:/outputs",
        "-p",
        "ipfs",
        "--id-only",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let job = String::from_utf8_lossy(&out.stdout).trim().lines().last().unwrap().to_string();
    assert_eq!(wait_terminal(&a, &job, Duration::from_secs(30)).await, "Completed");
    let execs = executions(&a, &job).await;
    assert_eq!(execs[0]["NodeID"], c_id.as_str(), "ran on C, which fetched the input from A");
    let result = execs[0]["PublishedResult"]["Params"]["CID"].as_str().unwrap().to_string();
    // The result lives in C's store; A fetches it from C when asked.
    let out = a.cli(&["data", "cat", &format!("{result}/outputs/count.txt")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "5\n");
    let dest = tmp.path().join("results");
    let out = a.cli(&["get", &job, "-o", dest.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        std::fs::read_to_string(dest.join(format!("job-{job}/outputs/count.txt"))).unwrap(),
        "5\n"
    );
    // An unknown CID is a clean 404, not a loop between the two nodes.
    let missing = "bafkreiaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let (status, _, _) = call("GET", &a.url(&format!("/ipfs/{missing}")), None).await;
    assert!(status == 404 || status == 400, "{status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn local_locality_bids_only_where_the_input_is_stored() {
    let a = Node::start(&args(&["--orchestrator"], &[]));
    let peer = a.p2p.clone().unwrap();
    let local = ["-c", "JobAdmissionControl.Locality=local"];
    let holder = Node::start(&args(&["--compute", "--peer", &peer], &local));
    let other = Node::start(&args(&["--compute", "--peer", &peer], &local));
    wait_nodes(&a, 2).await;
    let holder_id = node_id(&holder).await;
    let tmp = tempfile::tempdir().unwrap();
    let book = tmp.path().join("book.txt");
    std::fs::write(&book, "where the data is\n").unwrap();
    let out = holder.cli(&["data", "add", "-q", book.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cid = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let module =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/wasm/word-count.wasm");
    // Several jobs: each must land on the holder, never on the node without the data.
    for _ in 0..3 {
        let out = a.cli(&[
            "wasm",
            "run",
            module.to_str().unwrap(),
            "-i",
            &format!("ipfs://{cid}:/inputs/book.txt"),
            "-o",
            "outputs:/outputs",
            "--id-only",
        ]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let job = String::from_utf8_lossy(&out.stdout).trim().lines().last().unwrap().to_string();
        assert_eq!(wait_terminal(&a, &job, Duration::from_secs(30)).await, "Completed");
        let (done, execs) = completed(&a, &job).await;
        assert_eq!(done.len(), 1, "{execs:#?}");
        assert_eq!(done[0]["NodeID"], holder_id.as_str(), "ran where the input is stored");
    }
    drop(other);
}

/// A closed cluster (issue 18, item 7, first step): a compute node with
/// `Compute.AllowedOrchestrators` takes work only from the orchestrators listed. A stranger
/// orchestrator that knew the node while it was open keeps offering it work after it is
/// closed: none of it runs, and the refusals are counted against the stranger.
#[tokio::test(flavor = "multi_thread")]
async fn a_compute_node_takes_work_only_from_allowed_orchestrators() {
    let a = Node::start(&args(&["--orchestrator"], &[]));
    let a_peer = a.p2p.clone().unwrap();
    let a_id = a_peer.rsplit('/').next().unwrap().to_string();
    // C keeps its libp2p port across its restart, so the stranger finds it again.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let net_port = format!("Network.Port={port}");
    let c_dir = tempfile::tempdir().unwrap();
    let open = args(&["--compute", "--peer", &a_peer, "-c", &net_port], &[]);
    let mut c = Node::start_in(c_dir.path(), 0, &open);
    let c_peer = c.p2p.clone().unwrap();
    let stranger = Node::start(&args(&["--orchestrator", "--peer", &c_peer], &[]));
    let stranger_id = stranger.p2p.clone().unwrap().rsplit('/').next().unwrap().to_string();
    wait_nodes(&stranger, 1).await;

    // Closed: only A.
    c.kill9();
    let allow = format!("Compute.AllowedOrchestrators={a_id}");
    let closed = args(&["--compute", "--peer", &a_peer, "-c", &net_port, "-c", &allow], &[]);
    let c = Node::start_in(c_dir.path(), 0, &closed);
    wait_nodes(&a, 1).await;

    let job = json!({"Type": "batch", "Count": 1,
        "Tasks": [{"Name": "main", "Engine": {"Type": "noop"}}]});
    let ok = submit(&a, job.clone()).await;
    assert_eq!(wait_terminal(&a, &ok, Duration::from_secs(30)).await, "Completed");

    let refused = submit(&stranger, job).await;
    let want = format!("gadus_peer_faults_total{{peer=\"{stranger_id}\",kind=\"not_allowed\"}}");
    let start = Instant::now();
    let text = loop {
        let text =
            support::http().get(c.url("/metrics")).send().await.unwrap().text().await.unwrap();
        if text.contains(&want) || start.elapsed() > Duration::from_secs(30) {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(text.contains(&want), "C counted the stranger's offers: {text}");
    let ran = executions(&stranger, &refused)
        .await
        .iter()
        .any(|e| e["ComputeState"]["StateType"].as_i64() >= Some(BID_ACCEPTED));
    assert!(!ran, "a stranger's job ran on a closed compute node");
    assert_ne!(support::job_state(&stranger, &refused).await, "Completed");
}

fn swarm_key_in(dir: &std::path::Path) {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).unwrap();
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(dir.join("swarm.key"), format!("/key/swarm/psk/1.0.0/\n/base16/\n{hex}\n"))
        .unwrap();
}

/// A closed cluster (issue 18, item 7): nodes sharing `<data dir>/swarm.key` form a private
/// libp2p network; a node with another key, or with none, cannot even connect, so it never
/// joins and is never handed work.
#[tokio::test(flavor = "multi_thread")]
async fn only_nodes_with_the_swarm_key_join_a_private_cluster() {
    let a_dir = tempfile::tempdir().unwrap();
    swarm_key_in(a_dir.path());
    let a = Node::start_in(a_dir.path(), 0, &args(&["--orchestrator"], &[]));
    let a_peer = a.p2p.clone().unwrap();

    let member = tempfile::tempdir().unwrap();
    std::fs::copy(a_dir.path().join("swarm.key"), member.path().join("swarm.key")).unwrap();
    let c = Node::start_in(member.path(), 0, &args(&["--compute", "--peer", &a_peer], &[]));
    let other_key = tempfile::tempdir().unwrap();
    swarm_key_in(other_key.path());
    let _wrong = Node::start_in(other_key.path(), 0, &args(&["--compute", "--peer", &a_peer], &[]));
    let _none = Node::start(&args(&["--compute", "--peer", &a_peer], &[]));

    wait_nodes(&a, 1).await;
    let c_id = node_id(&c).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let joined: Vec<String> = nodes(&a)
        .await
        .iter()
        .filter(|n| n["Info"]["NodeType"] == "Compute")
        .map(|n| n["Info"]["NodeID"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(joined, vec![c_id.clone()], "only the node with the key joined");

    let job = json!({"Type": "batch", "Count": 1,
        "Tasks": [{"Name": "main", "Engine": {"Type": "noop"}}]});
    let id = submit(&a, job).await;
    assert_eq!(wait_terminal(&a, &id, Duration::from_secs(30)).await, "Completed");
    for e in executions(&a, &id).await {
        assert_eq!(e["NodeID"], c_id.as_str(), "work went only to the member");
    }
}

/// Issue 18, item 7: with `Orchestrator.NodeManager.ManualApproval=true` (Bacalhau's key) a
/// new compute node waits in PENDING, gets no work, until `gadus node approve`.
#[tokio::test(flavor = "multi_thread")]
async fn a_new_compute_node_waits_for_approval_before_it_gets_work() {
    let a = Node::start(&args(
        &["--orchestrator", "-c", "Orchestrator.NodeManager.ManualApproval=true"],
        &[],
    ));
    let a_peer = a.p2p.clone().unwrap();
    let c = Node::start(&args(&["--compute", "--peer", &a_peer], &[]));
    let c_id = node_id(&c).await;
    let start = Instant::now();
    let membership = loop {
        let m = nodes(&a)
            .await
            .iter()
            .find(|n| n["Info"]["NodeID"] == c_id.as_str())
            .map(|n| n["Membership"].as_str().unwrap_or("").to_string());
        if let Some(m) = m {
            break m;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "C never showed up on A");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(membership, "PENDING");
    let job = submit(
        &a,
        json!({"Type": "batch", "Count": 1,
        "Tasks": [{"Name": "main", "Engine": {"Type": "noop"}}]}),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(executions(&a, &job).await.is_empty(), "a pending node was given work");
    assert_ne!(support::job_state(&a, &job).await, "Completed");

    let o = a.cli(&["node", "approve", &c_id]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(wait_terminal(&a, &job, Duration::from_secs(30)).await, "Completed");
    let approved =
        nodes(&a).await.into_iter().find(|n| n["Info"]["NodeID"] == c_id.as_str()).unwrap();
    assert_eq!(approved["Membership"], "APPROVED", "{approved}");
}
