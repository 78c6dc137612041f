//! Results published to S3 by a real node and fetched by `gadus get`: an S3-compatible server
//! (`s3s-fs`, SigV4 auth) runs in this test on loopback; the node and the CLI get the same
//! credentials from the environment, as they would from AWS's.

#![allow(clippy::unwrap_used)] // Tests unwrap: a panic is the failure report.
mod support;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use support::Node;

const AK: &str = "gadus-e2e-access";
const SK: &str = "gadus-e2e-secret-key-0123456789";

#[tokio::test(flavor = "multi_thread")]
async fn s3_published_results_come_back_with_gadus_get() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("results")).unwrap();
    let fs = s3s_fs::FileSystem::new(root.path()).map_err(|e| format!("{e:?}")).unwrap();
    let mut builder = S3ServiceBuilder::new(fs);
    builder.set_auth(SimpleAuth::from_single(AK, SK));
    let service = builder.build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let http = ConnBuilder::new(TokioExecutor::new());
        while let Ok((sock, _)) = listener.accept().await {
            let conn = http.serve_connection(TokioIo::new(sock), service.clone()).into_owned();
            tokio::spawn(async move {
                let _ = conn.await;
            });
        }
    });

    // The node may reach a loopback S3 endpoint only because the test allows it.
    let node = Node::start_env(
        &["-c", "InputSources.AllowLoopback=true"],
        &[("AWS_ACCESS_KEY_ID", AK), ("AWS_SECRET_ACCESS_KEY", SK)],
    );
    let module = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/wasm/hello.wasm"),
    )
    .unwrap();
    use base64::Engine as _;
    let url = format!(
        "data:application/wasm;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(module)
    );
    let job = serde_json::json!({
        "Type": "batch", "Count": 1,
        "Tasks": [{
            "Name": "main",
            "Engine": {"Type": "wasm", "Params": {"EntryModule": "/wasm/hello.wasm"}},
            "InputSources": [{"Source": {"Type": "inline", "Params": {"URL": url}}, "Target": "/wasm/hello.wasm"}],
            "Publisher": {"Type": "s3", "Params": {
                "Bucket": "results", "Key": "jobs/{jobID}/{executionID}",
                "Endpoint": format!("http://{addr}"), "Region": "us-east-1"}}
        }]
    });
    let file = root.path().join("job.json");
    std::fs::write(&file, serde_json::to_vec(&job).unwrap()).unwrap();
    let out = node.cli(&["job", "run", file.to_str().unwrap(), "--id-only"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let id = String::from_utf8_lossy(&out.stdout).trim().lines().last().unwrap().to_string();
    let v: serde_json::Value =
        serde_json::from_slice(&node.cli(&["job", "describe", &id, "--output", "json"]).stdout)
            .unwrap();
    let published = &v["Executions"]["Items"][0]["PublishedResult"];
    assert_eq!(published["Type"], "s3", "{v:#}");
    let key = published["Params"]["Key"].as_str().unwrap();
    assert!(key.starts_with(&format!("jobs/{id}/e-")) && key.ends_with(".tar.gz"), "{key}");

    let dest = tempfile::tempdir().unwrap();
    let out = node.cli(&["get", &id, "-o", dest.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = std::fs::read_to_string(dest.path().join(format!("job-{id}/stdout"))).unwrap();
    assert_eq!(stdout, "hello from gadus\n");
}
