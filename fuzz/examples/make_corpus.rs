//! Writes the seed corpus, fuzz/corpus/<target>/, from gadus's own encoders: frames from
//! `encode_frame`, CARs from `ContentStore::export_car`, UnixFS blocks from the importer,
//! tar.gz from `pack_tar_gz`, jobs from ../examples. Deterministic; re-run it after a wire
//! format changes:  cargo run -p gadus-fuzz --example make_corpus
//! Seeds are small on purpose (the fuzzer grows its corpus in a temporary copy).

#![allow(clippy::unwrap_used)] // A one-off generator run by hand: a panic is the report.

use std::io::Read;
use std::path::{Path, PathBuf};

use gadus_core::model::{Job, codec};
use gadus_core::protocol::{
    ComputePhase, Envelope, ExecFailure, ExecRef, ExecUpdate, FailureKind, Heartbeat, Message,
    NodeAdvert, NodeClock, PROTOCOL_VERSION, WireResources, WireRunOutput, encode_frame,
};
use gadus_core::rng::DetRng;
use gadus_io::archive::pack_tar_gz;
use gadus_io::content::{CarLimits, Cid, ContentStore, DAG_PB, ImportOptions, RAW, read_car};

fn main() {
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let tmp = std::env::temp_dir().join(format!("gadus-make-corpus-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    let mut w = Writer { out, count: 0 };

    // ---------------------------------------------------------------- jobs
    let mut jobs: Vec<(String, Vec<u8>)> = Vec::new();
    for name in ["hello-wasm.yaml", "word-count.yaml", "ops-everywhere.yaml"] {
        jobs.push((name.into(), std::fs::read(examples.join(name)).unwrap()));
    }
    jobs.push(("docker.json".into(), DOCKER_JOB_JSON.as_bytes().to_vec()));
    jobs.push(("service.yaml".into(), SERVICE_JOB_YAML.as_bytes().to_vec()));
    jobs.push(("legacy-wasm.json".into(), LEGACY_WASM_JSON.as_bytes().to_vec()));
    for (name, bytes) in &jobs {
        w.put("job_spec", name, bytes);
    }
    let normalized: Vec<Job> = jobs
        .iter()
        .map(|(_, b)| {
            let mut job = Job::from_file_bytes(b).unwrap();
            job.normalize(&mut DetRng::new(7));
            job
        })
        .collect();
    for (i, job) in normalized.iter().enumerate() {
        let json = codec::to_json(job);
        w.put("offered_job", &format!("job-{i}.json"), json.as_bytes());
        w.put("api_body", &format!("put-job-{i}.json"), format!("{{\"Job\":{json}}}").as_bytes());
    }
    w.put(
        "offered_job",
        "published-ipfs.json",
        br#"{"Type":"ipfs","Params":{"CID":"QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"}}"#,
    );
    w.put(
        "offered_job",
        "published-s3.json",
        br#"{"Type":"s3","Params":{"Bucket":"b","Key":"results/j-1.tar.gz","Region":"eu-west-1"}}"#,
    );
    w.put("api_body", "stop.json", br#"{"Reason":"no longer needed"}"#);
    w.put("api_body", "node-update.json", br#"{"NodeID":"n-1","Action":"approve","Message":"ok"}"#);
    w.put("api_body", "put-job-lowercase.json", br#"{"job":{"name":"x","type":"batch","tasks":[{"name":"main","engine":{"type":"noop"}}]},"force":false}"#);

    // ---------------------------------------------------------------- frames
    let exec = ExecRef { execution_id: "e-6f1c2a".into(), job_id: "j-9b3e".into(), attempt: 2 };
    let clock = NodeClock { incarnation: 3, seq: 41 };
    let res = WireResources { cpu_milli: 500, memory: 256 << 20, disk: 1 << 30, gpu: 0 };
    let messages = vec![
        ("ask-for-bid", Message::AskForBid {
            exec: exec.clone(),
            job_json: codec::to_json(&normalized[1]),
            partition: (1, 2),
            needs_approval: true,
        }),
        ("bid-accepted", Message::BidAccepted { exec: exec.clone() }),
        ("bid-rejected", Message::BidRejected { exec: exec.clone(), reason: "busy".into() }),
        ("cancel", Message::CancelExecution { exec: exec.clone(), reason: "stopped".into() }),
        ("update-ack", Message::UpdateAck { exec: exec.clone() }),
        ("bid-result", Message::BidResult {
            exec: exec.clone(),
            accepted: false,
            reason: "no GPU".into(),
            retryable: true,
            clock,
        }),
        ("completed", Message::ExecutionUpdate {
            exec: exec.clone(),
            update: ExecUpdate::Completed {
                output: WireRunOutput { stdout: "9\n".into(), exit_code: 0, ..Default::default() },
                published_json: r#"{"Type":"ipfs","Params":{"CID":"QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"}}"#.into(),
            },
            clock,
        }),
        ("failed", Message::ExecutionUpdate {
            exec: exec.clone(),
            update: ExecUpdate::Failed {
                failure: ExecFailure { kind: FailureKind::OutOfMemory, message: "oom".into() },
                output: Some(WireRunOutput { stderr: "killed".into(), exit_code: 137, ..Default::default() }),
            },
            clock,
        }),
        ("running", Message::ExecutionUpdate { exec: exec.clone(), update: ExecUpdate::Running, clock }),
        ("node-info", Message::NodeInfo {
            advert: NodeAdvert {
                node_id: "n-compute".into(),
                labels: vec![("region".into(), "eu".into())],
                engines: vec!["docker".into(), "wasm".into()],
                publishers: vec!["local".into(), "ipfs".into()],
                storages: vec!["inline".into(), "ipfs".into()],
                max_capacity: res,
                max_job: res,
                address: "http://127.0.0.1:1234".into(),
                version: "0.1.0".into(),
            },
            clock,
        }),
        ("heartbeat", Message::Heartbeat {
            heartbeat: Heartbeat {
                available: res,
                queued: WireResources::default(),
                running: 1,
                executions: vec![(exec.clone(), ComputePhase::Running)],
            },
            clock,
        }),
        ("goodbye", Message::Goodbye { clock }),
    ];
    for (name, message) in messages {
        let from = if name == "node-info" { "n-compute" } else { "n-orch" };
        let env = Envelope {
            version: PROTOCOL_VERSION,
            from: from.into(),
            to: "n-compute".into(),
            message,
        };
        let frame = encode_frame(&env).unwrap();
        w.put("protocol_frame", name, &frame);
        w.put("p2p_frame", name, &frame);
        w.put("peer_message", name, &frame[4..]);
    }

    // ---------------------------------------------------------------- content
    let tree = tmp.join("tree");
    std::fs::create_dir_all(tree.join("outputs/nested")).unwrap();
    std::fs::write(tree.join("stdout"), "hello from gadus\n").unwrap();
    std::fs::write(tree.join("exitCode"), "0").unwrap();
    std::fs::write(tree.join("outputs/count.txt"), "9\n").unwrap();
    std::fs::write(tree.join("outputs/nested/book.txt"), BOOK).unwrap();
    std::os::unix::fs::symlink("count.txt", tree.join("outputs/latest")).unwrap();
    let store = ContentStore::open(tmp.join("store")).unwrap();
    let small_chunks = |base: ImportOptions| ImportOptions { chunk_size: 64, max_links: 3, ..base };
    let imports = [
        ("dir-v0", ImportOptions::kubo_v0(), tree.clone()),
        ("dir-v1", small_chunks(ImportOptions::kubo_v1()), tree.clone()),
        (
            "file-v0-chunked",
            small_chunks(ImportOptions::kubo_v0()),
            tree.join("outputs/nested/book.txt"),
        ),
        ("file-v1", ImportOptions::kubo_v1(), tree.join("stdout")),
    ];
    let mut some_cids = Vec::new();
    for (name, opts, path) in imports {
        let imported = store.import_path(&path, &opts).unwrap();
        some_cids.push(imported.cid);
        let mut car = Vec::new();
        store.export_car(&imported.cid, &mut car).unwrap();
        w.put("car", &format!("{name}.car"), &car);
        // The same blocks in the unixfs target's record format, root first.
        let mut blocks = Vec::new();
        read_car(&car[..], CarLimits::default(), |cid, data| {
            blocks.push((cid, data));
            Ok(())
        })
        .unwrap();
        let mut records = Vec::new();
        for (cid, data) in &blocks {
            records.push(flags(cid));
            records.extend_from_slice(&u16::try_from(data.len()).unwrap().to_be_bytes());
            records.extend_from_slice(data);
        }
        w.put("unixfs", name, &records);
    }
    // An empty file, by hand (a symlink root is regressions/unixfs/root-symlink).
    w.put("unixfs", "empty-file", &record(0, &[0x0a, 0x04, 0x08, 0x02, 0x18, 0x00]));
    // Gateway paths.
    let v0 = some_cids[0];
    let v1 = some_cids[1];
    for (i, p) in [
        format!("/ipfs/{v0}"),
        format!("/ipfs/{v0}/outputs/count.txt"),
        format!("ipfs://{v1}/outputs/nested/book.txt"),
        format!("{v1}/stdout"),
        format!("/ipfs/{v0}/../etc/passwd"),
        "/ipfs/bafkqaaa".to_string(),
    ]
    .iter()
    .enumerate()
    {
        w.put("gateway_path", &format!("path-{i}"), p.as_bytes());
    }

    // ---------------------------------------------------------------- archives
    let packed = pack_tar_gz(&tree, Vec::new()).unwrap();
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(&packed[..]).read_to_end(&mut tar).unwrap();
    w.put("tar_gz", "results.tar.gz", &[&[1u8][..], &packed].concat());
    w.put("tar_gz", "results.tar", &[&[0u8][..], &tar].concat());
    let one = tmp.join("one");
    std::fs::create_dir_all(&one).unwrap();
    std::fs::write(one.join("data"), "x").unwrap();
    let small = pack_tar_gz(&one, Vec::new()).unwrap();
    let b64 = |b: &[u8]| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(b)
    };
    w.put("data_url", "plain", b"data:,hello%20world");
    w.put("data_url", "text", b"data:text/plain;charset=utf-8,line%0Anext");
    w.put(
        "data_url",
        "base64",
        format!("data:application/octet-stream;base64,{}", b64(b"\x00\x01binary")).as_bytes(),
    );
    w.put(
        "data_url",
        "tarball",
        format!("data:application/gzip;base64,{}", b64(&small)).as_bytes(),
    );

    // ---------------------------------------------------------------- text decoders
    for (i, s) in [
        "region=eu",
        "region in (eu-west,eu-central),gpu,!spot",
        "cores>4,mem<64,tier!=free",
        "favour_zone==a, env notin (dev)",
        "a=b,c=",
        "",
    ]
    .iter()
    .enumerate()
    {
        w.put("selector", &format!("sel-{i}"), s.as_bytes());
    }
    for (i, s) in [
        "j-6f1c2a3b-0d2e-4f5a-8b9c-1d2e3f4a5b6c",
        "default",
        "12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo",
        "e-1.attempt_2",
        "../etc",
        "-rf",
        "a b",
    ]
    .iter()
    .enumerate()
    {
        w.put("ident", &format!("id-{i}"), s.as_bytes());
    }
    for (i, s) in [
        "500m",
        "1.5GiB",
        "256mb",
        "2",
        "1e3",
        "0.25",
        "1,024 KB",
        "2024-06-01T12:30:45.123456789Z",
        "0001-01-01T00:00:00Z",
        "2024-06-01T12:30:45+02:00",
    ]
    .iter()
    .enumerate()
    {
        w.put("quantities", &format!("q-{i}"), s.as_bytes());
    }
    for (i, s) in ["1h30m", "500ms", "1.5s", "30", "2h45m30.5s", "100µs", "0"].iter().enumerate() {
        w.put("duration", &format!("d-{i}"), s.as_bytes());
    }
    w.put(
        "node_config",
        "api.yaml",
        b"API:\n  Host: 127.0.0.1\n  Port: 1235\nLabels:\n  region: eu\n",
    );
    w.put("node_config", "compute.yaml", NODE_CONFIG_YAML.as_bytes());
    w.put("node_config", "with-flags", b"compute:\n  enabled: true\n\0Compute.Heartbeat.Interval=2s\nLabels=a=b,c=d\nAPI.Port=4321\n");
    w.put("node_config", "empty", b"");
    for (i, q) in [
        "namespace=default&limit=10&order_by=created_at&reverse=true",
        "labels=region%3Deu&labels=gpu&wait=30s&since=12",
        "filter-approval=APPROVED&filter_status=CONNECTED&labels=region+in+(eu)",
        "execution_id=e-1&tail=true&follow=1",
        "format=car",
        "a=%zz&&=&b",
    ]
    .iter()
    .enumerate()
    {
        w.put("api_query", &format!("q-{i}"), q.as_bytes());
    }

    let _ = std::fs::remove_dir_all(&tmp);
    eprintln!("wrote {} seed files", w.count);
}

/// The unixfs target's flags for a block under `cid`: bit 0 raw, bit 1 CIDv1.
fn flags(cid: &Cid) -> u8 {
    let raw = u8::from(cid.codec() == RAW);
    let v1 = u8::from(cid.version() == cid::Version::V1) << 1;
    assert!(cid.codec() == RAW || cid.codec() == DAG_PB);
    raw | v1
}

fn record(flags: u8, data: &[u8]) -> Vec<u8> {
    let mut out = vec![flags];
    out.extend_from_slice(&u16::try_from(data.len()).unwrap().to_be_bytes());
    out.extend_from_slice(data);
    out
}

struct Writer {
    out: PathBuf,
    count: usize,
}

impl Writer {
    fn put(&mut self, target: &str, name: &str, data: &[u8]) {
        let dir = self.out.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), data).unwrap();
        self.count += 1;
    }
}

const BOOK: &str = "the quick brown fox jumps over the lazy dog\n\
It was the best of times, it was the worst of times, it was the age of wisdom, \
it was the age of foolishness, it was the epoch of belief, it was the epoch of incredulity.\n";

const DOCKER_JOB_JSON: &str = r#"{
  "Name": "docker-echo",
  "Type": "batch",
  "Namespace": "default",
  "Count": 1,
  "Priority": 0,
  "Meta": {"owner": "ci"},
  "Labels": {"team": "infra"},
  "Constraints": [{"Key": "region", "Operator": "=", "Values": ["eu"]}, {"Key": "favour_zone", "Operator": "in", "Values": ["a", "b"]}],
  "Tasks": [{
    "Name": "main",
    "Engine": {"Type": "docker", "Params": {"Image": "busybox:1.36", "Entrypoint": ["/bin/sh", "-c"], "Parameters": ["echo hi > /outputs/out.txt"], "EnvironmentVariables": ["A=1"], "WorkingDirectory": "/"}},
    "Publisher": {"Type": "s3", "Params": {"Bucket": "results", "Key": "job-{jobID}", "Region": "eu-west-1"}},
    "InputSources": [
      {"Alias": "data", "Target": "/inputs/data", "Source": {"Type": "ipfs", "Params": {"CID": "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"}}},
      {"Target": "/inputs/s3", "Source": {"Type": "s3", "Params": {"Bucket": "in", "Key": "prefix/*", "Filter": ".*\\.csv$", "Region": "eu-west-1"}}},
      {"Target": "/inputs/local", "ReadWrite": true, "Source": {"Type": "localDirectory", "Params": {"SourcePath": "/data", "ReadWrite": true}}}
    ],
    "ResultPaths": [{"Name": "outputs", "Path": "/outputs"}],
    "Env": {"LANG": "C.UTF-8"},
    "Resources": {"CPU": "1", "Memory": "1Gb", "Disk": "10gb", "GPU": "0"},
    "Network": {"Type": "HTTP", "Domains": ["example.org", ".github.com"]},
    "Timeouts": {"ExecutionTimeout": 300, "QueueTimeout": 60, "TotalTimeout": 600}
  }],
  "State": {"StateType": "Pending", "Message": ""},
  "Version": 0, "Revision": 0, "CreateTime": 0, "ModifyTime": 0
}"#;

const SERVICE_JOB_YAML: &str = "Name: web
Type: service
ID: my-service-1
Namespace: team-a
Count: 3
Tasks:
  - Name: main
    Engine:
      Type: docker
      Params:
        Image: nginx:1.27
    Network: {Type: Full}
    Resources: {CPU: 250m, Memory: 128Mi}
    Timeouts: {ExecutionTimeout: 0}
";

const LEGACY_WASM_JSON: &str = r#"{"Name":"legacy","Type":"batch","Tasks":[{"Name":"main","Engine":{"Type":"wasm","Params":{"EntryModule":{"Source":{"Type":"ipfs","Params":{"CID":"QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"}}},"Entrypoint":"_start","ImportModules":[],"Parameters":["a"]}}}]}"#;

const NODE_CONFIG_YAML: &str = "Orchestrator:
  Enabled: true
  Scheduler:
    BidTimeout: 5s
    MaxAttempts: 3
Compute:
  Enabled: true
  Heartbeat:
    Interval: 1s
  AllocatedCapacity:
    CPU: \"2\"
    Memory: 4GiB
JobAdmissionControl:
  Locality: anywhere
JobDefaults:
  Batch:
    Task:
      Timeouts:
        ExecutionTimeout: 10m
Network:
  Port: 1235
";
