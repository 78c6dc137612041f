//! Bacalhau's official Python API client (`bacalhau-apiclient` from PyPI) against a real
//! `gadus serve`: submit, list, describe with executions and history, stop, list nodes, agent
//! version. `.ci/run` installs the client into `.ci/venv`; elsewhere set `GADUS_PYTHON` to a
//! Python that has it, or the test skips (and fails under `GADUS_REQUIRE_TOOLS=1`).

#![allow(clippy::unwrap_used)] // Tests unwrap: a panic is the failure report.
mod support;

use std::path::PathBuf;
use std::process::Command;

use support::Node;

fn python() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("GADUS_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.ci/venv/bin/python");
    venv.exists().then_some(venv)
}

fn python_or_skip() -> Option<PathBuf> {
    let py = python();
    if py.is_none() {
        assert!(
            std::env::var_os("GADUS_REQUIRE_TOOLS").is_none(),
            "no Python with bacalhau-apiclient (.ci/venv or GADUS_PYTHON) but GADUS_REQUIRE_TOOLS is set"
        );
        eprintln!("skipping: no Python with bacalhau-apiclient (run .ci/python-test-deps.sh)");
    }
    py
}

#[test]
fn bacalhau_python_client_drives_gadus() {
    let Some(py) = python_or_skip() else { return };
    let node = Node::start(&[]);
    run_script(&py, &node, None, false);
}

/// Issue 18: against a node running Bacalhau's own `policy_ns_anon.rego`, the client passes
/// when it carries a token, here one Bacalhau's `ask_ns_secret.rego` issues (every namespace,
/// full rights) for its shipped secret; without the token the same node refuses it. The
/// policy opens only the bare jobs endpoint to writes, so its stop (DELETE /jobs/{id}) is
/// refused, as under Bacalhau.
#[test]
fn bacalhau_python_client_drives_a_policy_node_with_a_token() {
    let Some(py) = python_or_skip() else { return };
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/bacalhau-policies");
    let access =
        format!("API.Auth.AccessPolicyPath={}", fixtures.join("policy_ns_anon.rego").display());
    let secret = format!(
        "API.Auth.Methods.Secret.PolicyPath={}",
        fixtures.join("ask_ns_secret.rego").display()
    );
    let node =
        Node::start(&["-c", &access, "-c", "API.Auth.Methods.Secret.Type=ask", "-c", &secret]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let token = rt.block_on(async {
        let answer = serde_json::json!({"token": "insert a secret string here"});
        let (status, v, _) = support::call(
            "POST",
            &node.url("/api/v1/auth/Secret"),
            Some(serde_json::to_vec(&answer).unwrap()),
        )
        .await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["Authentication"]["success"], true, "{v}");
        v["Authentication"]["token"].as_str().unwrap().to_string()
    });
    run_script(&py, &node, Some(&token), true);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/bacalhau_client.py");
    let out = Command::new(&py).arg(&script).arg(node.url("")).output().unwrap();
    assert!(!out.status.success(), "without a token the policy must refuse the submission");
}

fn run_script(py: &PathBuf, node: &Node, token: Option<&str>, stop_forbidden: bool) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/bacalhau_client.py");
    let mut cmd = Command::new(py);
    cmd.arg(&script).arg(format!("http://127.0.0.1:{}", node.port));
    if let Some(t) = token {
        cmd.arg(t);
        if stop_forbidden {
            cmd.arg("stop-forbidden");
        }
    }
    let out = cmd.output().expect("running python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(out.status.success(), "python client failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("all python client checks passed"), "{stdout}");
}
