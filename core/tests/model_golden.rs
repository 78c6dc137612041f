//! Golden tests: the reference example job and the other model types encode exactly as
//! Bacalhau's Go server does (keys, enum encodings, time formats), not merely "it parsed".

#![allow(clippy::unwrap_used)] // Tests unwrap: a panic is the failure report.

use gadus_core::model::*;
use gadus_core::rng::DetRng;
use serde_json::json;

const EXAMPLE: &str = include_str!("../../examples/word-count.yaml");

#[test]
fn reference_example_decodes_normalizes_and_reencodes() {
    let mut job = Job::from_yaml(EXAMPLE.as_bytes()).unwrap();
    let warnings = job.normalize(&mut DetRng::new(1));
    assert!(warnings.is_empty(), "{warnings:?}");
    job.validate().unwrap();
    let id = job.id.clone();
    assert!(id.starts_with("j-") && id.len() == 38, "{id}");
    let expected = json!({
        "ID": id,
        "Name": "word-count",
        "Namespace": "default",
        "Type": "batch",
        "Priority": 0,
        "Count": 2,
        "Constraints": [{"Key": "region", "Operator": "in", "Values": ["eu-west", "eu-central"]}],
        "Meta": {},
        "Labels": {"team": "data"},
        "Tasks": [{
            "Name": "main",
            "Engine": {"Type": "docker", "Params": {
                "Image": "ubuntu:24.04",
                "Entrypoint": ["/bin/bash", "-c"],
                "Parameters": ["wc -w /inputs/book.txt > /outputs/count.txt"]
            }},
            "Publisher": {"Type": "local"},
            "Env": {"LANG": "C.UTF-8"},
            "InputSources": [{
                "Source": {"Type": "urlDownload", "Params": {"URL": "https://example.org/book.txt"}},
                "Alias": "",
                "Target": "/inputs/book.txt"
            }],
            "ResultPaths": [{"Name": "outputs", "Path": "/outputs"}],
            "Resources": {"CPU": "500m", "Memory": "256mb"},
            "Network": {"Type": "None"},
            "Timeouts": {"ExecutionTimeout": 600, "QueueTimeout": 300, "TotalTimeout": 1200}
        }],
        "State": {"StateType": "Undefined"},
        "Version": 0,
        "Revision": 0,
        "CreateTime": 0,
        "ModifyTime": 0
    });
    let encoded: serde_json::Value = serde_json::from_str(&codec::to_json(&job)).unwrap();
    assert_eq!(encoded, expected);
    // Key order on the wire is Go's struct order.
    let text = codec::to_json(&job);
    let order = ["\"ID\"", "\"Name\"", "\"Namespace\"", "\"Type\"", "\"Priority\"", "\"Count\""];
    let pos: Vec<_> = order.iter().map(|k| text.find(k).unwrap()).collect();
    assert!(pos.windows(2).all(|w| w[0] < w[1]), "{text}");
    // Parsed resources are what Bacalhau computes.
    let r = job.tasks[0].resources.as_ref().unwrap().parse().unwrap();
    assert_eq!((r.cpu, r.memory), (0.5, 256_000_000));
    // Re-decoding the encoded job gives the same job.
    assert_eq!(Job::from_json(text.as_bytes()).unwrap(), job);
}

#[test]
fn python_client_style_lowercase_keys_are_understood() {
    let body = br#"{"job": {"name": "py", "type": "batch", "count": 3,
        "tasks": [{"name": "t", "engine": {"type": "wasm", "params": {"EntryModule": "/m.wasm"}},
                   "resources": {"cpu": "1", "MEMORY": "1gb"}, "timeouts": {"executiontimeout": 5}}]},
        "credential": null, "idempotencyToken": "abc", "namespace": "default"}"#;
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Put {
        job: Job,
    }
    let put: Put = codec::from_json(body, MAX_SPEC_BYTES).unwrap();
    let job = put.job;
    assert_eq!(job.name, "py");
    assert_eq!(job.job_type, JobType::Batch);
    assert_eq!(job.count, 3);
    let task = &job.tasks[0];
    assert_eq!(task.engine_type(), "wasm");
    assert_eq!(task.resources.as_ref().unwrap().memory, "1gb");
    assert_eq!(task.timeouts().execution_timeout, 5);
}

#[test]
fn count_defaults_like_bacalhau() {
    let j = |s: &str| Job::from_json(s.as_bytes()).unwrap();
    assert_eq!(j(r#"{"Type":"batch"}"#).count, 1);
    assert_eq!(j(r#"{"Type":"service"}"#).count, 1);
    assert_eq!(j(r#"{"Type":"service","Count":0}"#).count, 0);
    let mut ops = j(r#"{"Type":"ops","Count":1}"#);
    ops.normalize(&mut DetRng::new(0));
    assert_eq!(ops.count, 0);
}

#[test]
fn normalize_returns_bacalhaus_warnings() {
    let mut job = Job::from_json(
        br#"{"ID":"mine","Type":"batch","State":{"StateType":"Running"},"Revision":3,"Version":2,
            "CreateTime":5,"ModifyTime":6,"Meta":{"bacalhau.org/requester.id":"x","ok":"y"},
            "Tasks":[{"Name":"a","Engine":{"Type":"noop"}},{"Name":"b","Engine":{"Type":"noop"}}]}"#,
    )
    .unwrap();
    let w = job.normalize(&mut DetRng::new(9));
    assert_eq!(
        w,
        vec![
            "job state is ignored when submitting a job",
            "job revision is ignored when submitting a job",
            "job version is ignored when submitting a job",
            "job create time is ignored when submitting a job",
            "job modify time is ignored when submitting a job",
            "job ID is ignored when submitting a batch job",
            "only one task is supported per job",
            "job meta key \"bacalhau.org/requester.id\" is reserved and will be ignored",
        ]
    );
    assert!(job.id.starts_with("j-"));
    assert_eq!(job.name, job.id);
    assert_eq!(job.tasks.len(), 1);
    assert_eq!(job.meta.len(), 1);
    job.validate().unwrap();
}

#[test]
fn execution_encodes_states_as_integers_and_stderr_lowercase() {
    let exec = Execution {
        id: "e-1".into(),
        namespace: "default".into(),
        node_id: "n-1".into(),
        job_id: "j-1".into(),
        desired_state: State::new(ExecutionDesiredStateType::Running),
        compute_state: State::with_message(ExecutionStateType::Completed, "done"),
        run_output: Some(RunCommandResult {
            stdout: "hi\n".into(),
            stderr: "warn\n".into(),
            exit_code: 0,
            ..Default::default()
        }),
        allocated_resources: Some(AllocatedResources {
            tasks: [("main".to_string(), Resources::new(0.5, 1024, 0, 0))].into(),
        }),
        create_time: 1_700_000_000_000_000_000,
        modify_time: 1_700_000_000_000_000_001,
        ..Default::default()
    };
    let v: serde_json::Value = serde_json::from_str(&codec::to_json(&exec)).unwrap();
    assert_eq!(v["DesiredState"], json!({"StateType": 1}));
    assert_eq!(v["ComputeState"], json!({"StateType": 9, "Message": "done"}));
    assert_eq!(
        v["RunOutput"],
        json!({"Stdout": "hi\n", "StdoutTruncated": false, "stderr": "warn\n",
               "StderrTruncated": false, "ExitCode": 0, "ErrorMsg": ""})
    );
    assert_eq!(v["AllocatedResources"], json!({"Tasks": {"main": {"CPU": 0.5, "Memory": 1024}}}));
    assert_eq!(v["CreateTime"], json!(1_700_000_000_000_000_000i64));
    assert_eq!(v["PublishedResult"], json!(null));
    assert!(v.get("Job").is_none() && v.get("PartitionIndex").is_none());
    assert_eq!(v["FollowupEvalID"], json!(""));
}

#[test]
fn history_and_events_use_rfc3339_strings() {
    let t = Timestamp(1_700_000_000_500_000_000);
    let h = JobHistory {
        seq_num: 1,
        history_type: JobHistoryType::ExecutionLevel,
        job_id: "j-1".into(),
        job_version: 1,
        execution_id: "e-1".into(),
        event: Event {
            message: "Running".into(),
            topic: "Execution".into(),
            timestamp: t.into(),
            ..Default::default()
        },
        time: t.into(),
        job_state: None,
        execution_state: Some(StateChange {
            previous: ExecutionStateType::BidAccepted,
            new: ExecutionStateType::Running,
        }),
    };
    let v: serde_json::Value = serde_json::from_str(&codec::to_json(&h)).unwrap();
    assert_eq!(
        v,
        json!({
            "SeqNum": 1, "Type": "ExecutionLevel", "JobID": "j-1", "JobVersion": 1,
            "ExecutionID": "e-1",
            "Event": {"Message": "Running", "Topic": "Execution", "Timestamp": "2023-11-14T22:13:20.5Z"},
            "Time": "2023-11-14T22:13:20.5Z",
            "ExecutionState": {"Previous": 5, "New": 6}
        })
    );
    // Undefined previous state is omitted, as Go's omitempty does.
    let sc = StateChange { previous: JobStateType::Undefined, new: JobStateType::Pending };
    assert_eq!(codec::to_json(&sc), r#"{"New":"Pending"}"#);
}

#[test]
fn node_state_and_evaluation_shapes() {
    let node = NodeState {
        info: NodeInfo {
            node_id: "n-1".into(),
            node_type: NodeType::Compute,
            labels: [("region".to_string(), "eu".to_string())].into(),
            supported_protocols: vec!["gadus/1".into()],
            compute_node_info: ComputeNodeInfo {
                execution_engines: vec!["wasm".into()],
                max_capacity: Resources::new(2.0, 1 << 30, 0, 0),
                address: "127.0.0.1:6001".into(),
                ..Default::default()
            },
            bacalhau_version: BuildVersionInfo {
                git_version: "v1.7.0".into(),
                build_date: Timestamp::from_secs(1_700_000_000).into(),
                ..Default::default()
            },
        },
        membership: NodeMembership::Approved,
        connection: NodeConnection::Connected,
        connection_state: ConnectionState {
            status: NodeConnection::Connected,
            ..Default::default()
        },
    };
    let v: serde_json::Value = serde_json::from_str(&codec::to_json(&node)).unwrap();
    assert_eq!(v["Membership"], "APPROVED");
    assert_eq!(v["Connection"], "CONNECTED");
    assert_eq!(v["Info"]["NodeType"], "Compute");
    let cni = &v["Info"]["ComputeNodeInfo"];
    assert_eq!(cni["QueueCapacity"], json!({}));
    assert_eq!(cni["address"], "127.0.0.1:6001");
    assert_eq!(cni["MaxCapacity"], json!({"CPU": 2.0, "Memory": 1073741824u64}));
    assert_eq!(v["Info"]["BacalhauVersion"]["BuildDate"], "2023-11-14T22:13:20Z");
    assert_eq!(v["ConnectionState"]["LastHeartbeat"], "0001-01-01T00:00:00Z");
    assert_eq!(serde_json::from_value::<NodeState>(v).unwrap(), node);

    let ev = Evaluation {
        id: "7b0c".into(),
        job_id: "j-1".into(),
        triggered_by: EvalTrigger::NodeLeave,
        job_type: JobType::Daemon,
        status: EvalStatus::Pending,
        ..Default::default()
    };
    let v: serde_json::Value = serde_json::from_str(&codec::to_json(&ev)).unwrap();
    assert_eq!(v["TriggeredBy"], "node-leave");
    assert_eq!(v["Type"], "daemon");
    assert_eq!(v["Status"], "pending");
    assert_eq!(v["WaitUntil"], "0001-01-01T00:00:00Z");
}

#[test]
fn legacy_wasm_params_are_converted() {
    let mut job = Job::from_yaml(
        br#"
Type: batch
Tasks:
  - Name: main
    Engine:
      Type: wasm
      Params:
        EntryModule:
          Source: {Type: ipfs, Params: {CID: QmXyz}}
        EntryPoint: run
        Parameters: [a, b]
        EnvironmentVariables: {GREETING: hi}
        ImportModules:
          - Source: {Type: urlDownload, Params: {URL: "http://x/lib.wasm"}}
"#,
    )
    .unwrap();
    job.normalize(&mut DetRng::new(2));
    job.validate().unwrap();
    let task = &job.tasks[0];
    let wasm = WasmEngineSpec::from_spec(task.engine.as_ref().unwrap()).unwrap();
    assert_eq!(wasm.entry_module, "/wasm/entry.wasm");
    assert_eq!(wasm.entrypoint(), "run");
    assert_eq!(wasm.parameters, vec!["a", "b"]);
    assert_eq!(wasm.import_modules, vec!["/wasm/imports/module_0.wasm"]);
    let targets: Vec<_> = task.input_sources.iter().map(|i| i.target.as_str()).collect();
    assert_eq!(targets, vec!["/wasm/entry.wasm", "/wasm/imports/module_0.wasm"]);
    assert_eq!(task.env["GREETING"], "hi");
}
