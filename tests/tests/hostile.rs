//! Regression tests for defects found by hostile probing of a real `gadus serve` (issue 12):
//! each one failed against the code before its fix.

#![allow(clippy::unwrap_used)] // Tests unwrap: a panic is the failure report.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::*;

fn service_job(id: &str, name: &str) -> Value {
    json!({"Type": "service", "ID": id, "Name": name, "Labels": {"who": name},
        "Tasks": [{"Name": "main", "Engine": {"Type": "noop"}}]})
}

async fn put_job(node: &Node, job: Value) -> (u16, Value) {
    let body = serde_json::to_vec(&json!({ "Job": job })).unwrap();
    let (s, v, _) = call("PUT", &node.url("/api/v1/orchestrator/jobs"), Some(body)).await;
    (s, v)
}

async fn get_job(node: &Node, id: &str) -> Value {
    let (s, v, _) = call("GET", &node.url(&format!("/api/v1/orchestrator/jobs/{id}")), None).await;
    assert_eq!(s, 200, "{v}");
    v
}

/// Defect 3: a service job submitted with a finished job's ID replaced it (name, type,
/// labels), merged executions and history, and listed the ID twice; after a restart the old
/// executions were loaded under the new job.
#[tokio::test]
async fn a_finished_job_id_is_never_reused() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::start_in(dir.path(), 0, &[]);
    let (s, v) = put_job(&node, service_job("svc-1", "first")).await;
    assert_eq!(s, 200, "{v}");
    let (s, v, _) =
        call("DELETE", &node.url("/api/v1/orchestrator/jobs/svc-1?reason=done"), None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(wait_terminal(&node, "svc-1", Duration::from_secs(30)).await, "Stopped");
    // Let the stopped job leave memory (its executions end), then try to take its ID.
    let before = get_job(&node, "svc-1").await;
    let mut refused = 0;
    for _ in 0..20 {
        let (s, v) = put_job(&node, service_job("svc-1", "second")).await;
        assert_eq!(s, 400, "a reused ID must be refused: {v}");
        assert!(v["Message"].as_str().unwrap().contains("already exists"), "{v}");
        refused += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(refused, 20);
    let after = get_job(&node, "svc-1").await;
    assert_eq!(after["Job"], before["Job"], "the finished job must be unchanged");
    let (_, list, _) = call("GET", &node.url("/api/v1/orchestrator/jobs?limit=100"), None).await;
    let listed = list["Items"].as_array().unwrap().iter().filter(|j| j["ID"] == "svc-1").count();
    assert_eq!(listed, 1, "{list}");

    // And across a restart.
    node.kill9();
    let node = Node::start_in(dir.path(), 0, &[]);
    let (s, v) = put_job(&node, service_job("svc-1", "third")).await;
    assert_eq!(s, 400, "{v}");
    let after = get_job(&node, "svc-1").await;
    assert_eq!(after["Job"]["Name"], "first");
    assert_eq!(after["Job"]["Labels"]["who"], "first");
    assert_eq!(after["Job"]["State"]["StateType"], "Stopped");
}

/// Defect 2: client-chosen IDs and namespaces that are not plain identifiers are refused at
/// the API (they became folder names in `gadus get`).
#[tokio::test]
async fn path_like_ids_are_refused_at_the_api() {
    let node = Node::start(&[]);
    for id in ["../../.ssh", "a/b", "..", ".hidden", "-rf", "a b", "x%2F.."] {
        let (s, v) = put_job(&node, service_job(id, "bad")).await;
        assert_eq!(s, 400, "{id:?}: {v}");
        assert_eq!(v["Code"], "ValidationError", "{id:?}: {v}");
        assert!(v["Message"].as_str().unwrap().contains("ID"), "{id:?}: {v}");
    }
    let mut job = service_job("ok-1", "fine");
    job["Namespace"] = json!("../etc");
    let (s, v) = put_job(&node, job).await;
    assert_eq!(s, 400, "{v}");
    assert!(v["Message"].as_str().unwrap().contains("Namespace"), "{v}");
    let (_, list, _) = call("GET", &node.url("/api/v1/orchestrator/jobs"), None).await;
    assert_eq!(list["Items"].as_array().unwrap().len(), 0, "nothing was stored: {list}");
}

/// Defect 5: `?wait=1e300` reached `Duration::from_secs_f64` unbounded and the handler
/// panicked, killing the connection without an answer.
#[tokio::test]
async fn absurd_durations_in_queries_are_a_clear_400() {
    let node = Node::start(&[]);
    let id = submit(&node, noop_job()).await;
    for wait in ["1e300", "-1", "NaN", "inf", "1e13"] {
        let url = node.url(&format!("/api/v1/orchestrator/jobs/{id}/history?wait={wait}"));
        let (s, v, _) = call("GET", &url, None).await;
        assert_eq!(s, 400, "wait={wait}: {v}");
        assert_eq!(v["Code"], "BadRequest", "wait={wait}: {v}");
        assert!(v["Message"].as_str().unwrap().contains("duration"), "wait={wait}: {v}");
    }
    let text = reqwest::get(node.url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(text.contains("gadus_api_panics_total 0"), "no handler panicked");
}

/// Defect 4: a compute node trusted the jobs peers offered (resources that did not parse
/// counted as zero, an ExecutionTimeout near i64::MAX panicked the executor), took execution
/// IDs that name folders, and fetched content from any API URL a peer advertised. A real
/// libp2p peer plays the hostile orchestrator against a real node.
#[tokio::test]
async fn a_hostile_peer_is_refused_and_counted() {
    use gadus_core::protocol::{ExecRef, Message};
    use gadus_io::transport::p2p::{P2pConfig, P2pTransport};
    use gadus_io::transport::{Inbound, Transport};

    let node = Node::start(&[]);
    let node_addr = node.p2p.clone().expect("the node listens on loopback");
    let node_id = node_addr.rsplit('/').next().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = P2pConfig::new(
        vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        dir.path().join("hostile.key"),
    );
    cfg.bootstrap = vec![node_addr.parse().unwrap()];
    cfg.api_url = Some("http://169.254.169.254/latest/meta-data".into());
    let (evil, mut inbound, _handle) = P2pTransport::start(cfg).await.unwrap();
    let evil_id = evil.local_id().to_string();
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let Some(Inbound::PeerUp { node, .. }) = inbound.recv().await
                && node == node_id
            {
                return;
            }
        }
    })
    .await
    .expect("the node comes up at the hostile peer");

    let job = |extra: &str| {
        format!(
            r#"{{"ID":"j-evil","Name":"j-evil","Namespace":"default","Type":"batch","Count":1,
            "Tasks":[{{"Name":"main","Engine":{{"Type":"noop"}}{extra}}}]}}"#
        )
    };
    let ask = |exec: &str, job_json: String| Message::AskForBid {
        exec: ExecRef { execution_id: exec.into(), job_id: "j-evil".into(), attempt: 1 },
        job_json,
        partition: (0, 1),
        needs_approval: false,
    };
    evil.send(&node_id, ask("e-cpu", job(r#","Resources":{"CPU":"lots","Memory":"1tb"}"#)))
        .unwrap();
    evil.send(
        &node_id,
        ask("e-time", job(r#","Timeouts":{"ExecutionTimeout":9223372036854775807}"#)),
    )
    .unwrap();
    evil.send(&node_id, ask("../../etc", job(""))).unwrap();

    let mut refused = std::collections::BTreeMap::new();
    tokio::time::timeout(Duration::from_secs(20), async {
        while refused.len() < 2 {
            if let Some(Inbound::Message {
                message: Message::BidResult { exec, accepted, reason, .. },
                ..
            }) = inbound.recv().await
            {
                assert!(!accepted, "{} must be refused", exec.execution_id);
                assert_ne!(exec.execution_id, "../../etc", "a bad ID gets no answer at all");
                refused.insert(exec.execution_id, reason);
            }
        }
    })
    .await
    .expect("both bad jobs are refused with a bid");
    assert!(
        refused["e-cpu"].contains("invalid job") && refused["e-cpu"].contains("CPU"),
        "{refused:?}"
    );
    assert!(refused["e-time"].contains("ExecutionTimeout"), "{refused:?}");

    let want = [
        format!("gadus_peer_faults_total{{peer=\"{evil_id}\",kind=\"invalid_job\"}} 2"),
        format!("gadus_peer_faults_total{{peer=\"{evil_id}\",kind=\"identifier\"}} 1"),
        format!("gadus_peer_faults_total{{peer=\"{evil_id}\",kind=\"api_url\"}} 1"),
    ];
    let mut text = String::new();
    for _ in 0..100 {
        text = reqwest::get(node.url("/metrics")).await.unwrap().text().await.unwrap();
        if want.iter().all(|w| text.contains(w.as_str())) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for w in &want {
        assert!(text.contains(w.as_str()), "missing {w} in\n{text}");
    }
    // Nothing was reserved or started for the hostile offers, and the node still works.
    let (_, execs, _) =
        call("GET", &node.url("/api/v1/orchestrator/jobs/j-evil/executions"), None).await;
    assert!(execs["Items"].as_array().is_none_or(|a| a.is_empty()), "{execs}");
    let id = submit(&node, noop_job()).await;
    assert_eq!(wait_terminal(&node, &id, Duration::from_secs(30)).await, "Completed");
}

/// A WASM module that prints `LEAKED` if `/in/secret.txt` opens and `legit` if
/// `/in/legit.txt` does (`/in` is the first preopen, fd 3).
const PROBE_WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "secret.txt")
  (data (i32.const 200) "legit.txt")
  (data (i32.const 300) "LEAKED\n")
  (data (i32.const 320) "legit\n")
  (func $print (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
  (func $opens (param $name i32) (param $len i32) (result i32)
    (i32.eqz (call $path_open (i32.const 3) (i32.const 0) (local.get $name) (local.get $len)
      (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 16))))
  (func (export "_start")
    (if (call $opens (i32.const 100) (i32.const 10)) (then (call $print (i32.const 300) (i32.const 7))))
    (if (call $opens (i32.const 200) (i32.const 9)) (then (call $print (i32.const 320) (i32.const 6))))))"#;

/// Defect 1: `local` inputs were checked against the allow-list and then mounted by path, so
/// swapping the checked folder for a symlink in between (`renameat2(RENAME_EXCHANGE)` in a
/// loop) mounted what the symlink pointed at. Real jobs, Docker and WASM, run while a thread
/// swaps an allow-listed folder with a symlink to a folder outside the allow-list; no job may
/// ever see the outside folder.
#[tokio::test(flavor = "multi_thread")]
async fn swapping_a_local_input_for_a_symlink_never_exposes_the_host() {
    use base64::Engine as _;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();
    let allowed = root.join("allowed");
    let secret = root.join("secret");
    std::fs::create_dir_all(allowed.join("a")).unwrap();
    std::fs::create_dir_all(&secret).unwrap();
    std::fs::write(allowed.join("a/legit.txt"), "legit\n").unwrap();
    std::fs::write(secret.join("secret.txt"), "host secret\n").unwrap();
    std::os::unix::fs::symlink(&secret, allowed.join("b")).unwrap();

    let allow = format!("{}:ro", allowed.display());
    let node = Node::start(&["--allow-listed-local-paths", &allow]);

    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let swaps = std::sync::Arc::new(AtomicU64::new(0));
    let swapper = {
        let (stop, swaps, a, b) =
            (stop.clone(), swaps.clone(), allowed.join("a"), allowed.join("b"));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                rustix::fs::renameat_with(
                    rustix::fs::CWD,
                    &a,
                    rustix::fs::CWD,
                    &b,
                    rustix::fs::RenameFlags::EXCHANGE,
                )
                .unwrap();
                swaps.fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    let input = json!([{"Target": "/in",
        "Source": {"Type": "local", "Params": {"SourcePath": allowed.join("a").to_str().unwrap()}}}]);
    let wasm = base64::engine::general_purpose::STANDARD.encode(wat::parse_str(PROBE_WAT).unwrap());
    let mut wasm_inputs = input.clone();
    wasm_inputs.as_array_mut().unwrap().push(json!({"Target": "/wasm/probe.wasm",
        "Source": {"Type": "inline", "Params": {"URL": format!("data:application/wasm;base64,{wasm}")}}}));
    let wasm_job = json!({"Type": "batch", "Count": 1, "Tasks": [{"Name": "main",
        "Engine": {"Type": "wasm", "Params": {"EntryModule": "/wasm/probe.wasm"}},
        "InputSources": wasm_inputs, "Timeouts": {"ExecutionTimeout": 60}}]});
    let mut jobs = vec![wasm_job; 40];
    if let Some(image) = busybox().await {
        let script = "cat /in/secret.txt 2>/dev/null && echo LEAKED; cat /in/legit.txt";
        let docker_job = json!({"Type": "batch", "Count": 1, "Tasks": [{"Name": "main",
            "Engine": {"Type": "docker", "Params": {"Image": image,
                "Entrypoint": ["/bin/sh", "-c", script]}},
            "InputSources": input, "Resources": {"CPU": "100m", "Memory": "32Mb"},
            "Timeouts": {"ExecutionTimeout": 60}}]});
        jobs.extend(vec![docker_job; 30]);
    }

    let (mut clean, mut refused, mut leaked) = (0, 0, Vec::new());
    for chunk in jobs.chunks(10) {
        let mut ids = Vec::new();
        for job in chunk {
            ids.push(submit(&node, job.clone()).await);
        }
        for id in ids {
            let state = wait_terminal(&node, &id, Duration::from_secs(120)).await;
            let (_, v, _) =
                call("GET", &node.url(&format!("/api/v1/orchestrator/jobs/{id}/executions")), None)
                    .await;
            let out: String = v["Items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["RunOutput"]["Stdout"].as_str().unwrap_or("").to_string())
                .collect();
            if out.contains("LEAKED") || out.contains("host secret") {
                leaked.push(format!("{id}: {out:?}"));
            } else if state == "Completed" && out.contains("legit") {
                clean += 1;
            } else {
                refused += 1;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    swapper.join().unwrap();
    // Leave `a` where it began, so the temporary folder is removed cleanly.
    eprintln!(
        "swap race: {} jobs, {clean} saw the allowed folder, {refused} were refused, {} leaked, {} swaps",
        jobs.len(),
        leaked.len(),
        swaps.load(Ordering::Relaxed)
    );
    assert!(
        leaked.is_empty(),
        "a job saw the folder outside the allow-list:\n{}",
        leaked.join("\n")
    );
    assert!(swaps.load(Ordering::Relaxed) > 1000, "the swap loop ran");
    assert!(clean + refused == jobs.len(), "every job ended");
}

async fn metric(node: &Node, name: &str) -> Option<f64> {
    let text = reqwest::get(node.url("/metrics")).await.ok()?.text().await.ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
}

/// Defect 6: the loop's per-execution map was emptied only on Publish or Cancel, so every
/// execution that failed in prepare or run, or finished without a publisher, stayed in
/// memory for ever. Now the core releases each one exactly once; the node reports how many
/// it holds.
#[tokio::test]
async fn finished_executions_leave_nothing_behind() {
    let node = Node::start(&[]);
    let fails_in_prepare = json!({"Type": "batch", "Count": 1, "Tasks": [{"Name": "main",
        "Engine": {"Type": "noop"},
        "InputSources": [{"Target": "/in", "Source": {"Type": "local",
            "Params": {"SourcePath": "/etc"}}}]}]});
    let trap = wat::parse_str(r#"(module (func (export "_start") unreachable))"#).unwrap();
    let fails_in_run = json!({"Type": "batch", "Count": 1, "Tasks": [{"Name": "main",
    "Engine": {"Type": "wasm", "Params": {"EntryModule": "/m.wasm"}},
    "InputSources": [{"Target": "/m.wasm", "Source": {"Type": "inline", "Params": {"URL":
        format!("data:application/wasm;base64,{}", {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode(&trap)
        })}}}]}]});
    let mut ids = Vec::new();
    for _ in 0..5 {
        for job in [&fails_in_prepare, &fails_in_run, &noop_job()] {
            ids.push(submit(&node, job.clone()).await);
        }
    }
    for id in &ids {
        let state = wait_terminal(&node, id, Duration::from_secs(60)).await;
        assert!(matches!(state.as_str(), "Completed" | "Failed"), "{id}: {state}");
    }
    let mut held = None;
    for _ in 0..100 {
        held = metric(&node, "gadus_executions_held").await;
        if held == Some(0.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(held, Some(0.0), "every finished execution was released");
}

/// Defect 8: a job stopped while its execution was preparing or starting kept its container
/// running (3 of 3 tries right after `job run`). Stops at several moments after submission
/// must leave no container and no volume of the job behind.
#[tokio::test(flavor = "multi_thread")]
async fn a_stop_at_any_moment_leaves_no_container() {
    let Some(image) = busybox().await else { return };
    let docker = bollard::Docker::connect_with_local_defaults().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().canonicalize().unwrap().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let allow = format!("{}:ro", data.display());
    let node = Node::start(&["--allow-listed-local-paths", &allow]);
    let job = json!({"Type": "batch", "Count": 1, "Tasks": [{"Name": "main",
        "Engine": {"Type": "docker", "Params": {"Image": image,
            "Entrypoint": ["/bin/sh", "-c", "sleep 600"]}},
        "InputSources": [{"Target": "/in", "Source": {"Type": "local",
            "Params": {"SourcePath": data.to_str().unwrap()}}}],
        "Resources": {"CPU": "100m", "Memory": "32Mb"}}]});
    for delay_ms in [0u64, 5, 20, 50, 100, 250, 600, 1500] {
        let id = submit(&node, job.clone()).await;
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        let (s, v, _) =
            call("DELETE", &node.url(&format!("/api/v1/orchestrator/jobs/{id}")), None).await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(wait_terminal(&node, &id, Duration::from_secs(30)).await, "Stopped");
        let label = format!("gadus.job-id={id}");
        let mut left = usize::MAX;
        for _ in 0..100 {
            let filters = std::collections::HashMap::from([("label", vec![label.as_str()])]);
            let opts = bollard::query_parameters::ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filters)
                .build();
            let containers = docker.list_containers(Some(opts)).await.unwrap().len();
            let vopts = bollard::query_parameters::ListVolumesOptionsBuilder::default()
                .filters(&filters)
                .build();
            let volumes =
                docker.list_volumes(Some(vopts)).await.unwrap().volumes.unwrap_or_default().len();
            left = containers + volumes;
            if left == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(left, 0, "stop {delay_ms} ms after submission left containers or volumes");
    }
}

/// Defect 10: bad query strings, a logs request without a websocket upgrade and a wrong
/// method answered in plain text or with an empty body; every error of the API is in
/// Bacalhau's shape.
#[tokio::test]
async fn every_api_error_is_in_bacalhaus_shape() {
    let node = Node::start(&[]);
    let id = submit(&node, noop_job()).await;
    for (method, path, status) in [
        ("GET", "/api/v1/orchestrator/jobs?limit=abc".to_string(), 400),
        ("GET", format!("/api/v1/orchestrator/jobs/{id}/history?limit=x"), 400),
        ("GET", format!("/api/v1/orchestrator/jobs/{id}/logs"), 400),
        ("POST", "/api/v1/agent/alive".to_string(), 405),
        ("DELETE", "/api/v1/orchestrator/nodes".to_string(), 405),
        ("GET", "/no/such/thing".to_string(), 404),
    ] {
        let (s, v, h) = call(method, &node.url(&path), None).await;
        assert_eq!(s, status, "{method} {path}: {v}");
        assert_eq!(v["Status"], status, "{method} {path}: {v}");
        assert!(v["Message"].as_str().is_some_and(|m| !m.is_empty()), "{method} {path}: {v}");
        assert!(v["RequestID"].as_str().is_some_and(|m| !m.is_empty()), "{method} {path}: {v}");
        assert!(v["Code"].is_string(), "{method} {path}: {v}");
        if status == 405 {
            assert!(h.get("allow").is_some(), "{method} {path}: 405 names the allowed methods");
        }
    }
}

/// Defect 10: a second node on the same data directory failed deep in the store
/// (`FjallError: Locked`, three times); it now stops at once with one clear line.
#[test]
fn a_second_node_on_the_same_data_dir_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let _first = Node::start_in(dir.path(), 0, &[]);
    let out = std::process::Command::new(gadus_bin())
        .args(["serve", "--data-dir"])
        .arg(dir.path())
        .args(["--api-host", "127.0.0.1", "--api-port", "0", "-c", "Network.Host=127.0.0.1"])
        .env("GADUS_LOG", "warn")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("another gadus process").count(), 1, "{err}");
    assert!(err.contains(dir.path().to_str().unwrap()), "{err}");
    assert!(!err.contains("Locked"), "{err}");
}

/// Defect 10: a CAR upload interrupted by kill -9 left its spool file for ever.
#[tokio::test]
async fn an_upload_cut_by_kill_9_leaves_no_spool_behind() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::start_in(dir.path(), 0, &[]);
    let spool = dir.path().join("tmp");
    // An upload that never ends: the node spools what arrives.
    let (tx, rx) = futures::channel::mpsc::unbounded::<Result<Vec<u8>, std::io::Error>>();
    tx.unbounded_send(Ok(vec![0u8; 256 * 1024])).unwrap();
    let body = reqwest::Body::wrap_stream(rx);
    let url = node.url("/api/v1/data/car");
    let upload = tokio::spawn(async move { http().post(url).body(body).send().await });
    let mut spooled = false;
    for _ in 0..100 {
        spooled = std::fs::read_dir(&spool).map(|d| d.count() > 0).unwrap_or(false);
        if spooled {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(spooled, "the upload is being spooled");
    node.kill9();
    drop(tx);
    let _ = upload.await;
    assert!(std::fs::read_dir(&spool).unwrap().count() > 0, "kill -9 left the spool");
    let _node = Node::start_in(dir.path(), 0, &[]);
    assert_eq!(std::fs::read_dir(&spool).unwrap().count(), 0, "cleared at start");
}

/// A flood of concurrent junk (oversized, malformed and valid submissions, bad paths) from
/// many clients at once: every request gets an answer below 500, and the node stays usable.
#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_concurrent_junk_gets_answers_and_loses_nothing() {
    let node = Node::start(&["-c", "API.MaxBodyBytes=1048576"]);
    let client = http();
    let mut tasks = Vec::new();
    for i in 0..400usize {
        let c = client.clone();
        let base = node.url("");
        tasks.push(tokio::spawn(async move {
            let (method, path, body): (&str, String, Vec<u8>) = match i % 5 {
                0 => ("PUT", "/api/v1/orchestrator/jobs".into(), vec![b'{'; 2 << 20]),
                1 => ("PUT", "/api/v1/orchestrator/jobs".into(), vec![0xff; 1000]),
                2 => (
                    "PUT",
                    "/api/v1/orchestrator/jobs".into(),
                    serde_json::to_vec(&json!({"Job": noop_job()})).unwrap(),
                ),
                3 => ("GET", format!("/api/v1/orchestrator/jobs/{}", "x".repeat(8000)), vec![]),
                _ => ("DELETE", "/api/v1/orchestrator/jobs/../../etc".into(), vec![]),
            };
            let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
            let resp = c
                .request(m, format!("{base}{path}"))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await;
            match resp {
                Ok(r) => {
                    let s = r.status().as_u16();
                    let v: Value = r.json().await.unwrap_or(Value::Null);
                    (i, s, v)
                }
                Err(e) => (i, 0, json!(e.to_string())),
            }
        }));
    }
    let mut submitted = Vec::new();
    for t in tasks {
        let (i, s, v) = t.await.unwrap();
        assert!(s != 0 && s < 500, "request {i} got {s}: {v}");
        if s == 200 {
            submitted.push(v["JobID"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(submitted.len(), 80, "every valid submission in the flood was accepted");
    for id in &submitted {
        let state = wait_terminal(&node, id, Duration::from_secs(120)).await;
        assert_eq!(state, "Completed", "{id}");
    }
}
