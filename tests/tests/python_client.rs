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

#[test]
fn bacalhau_python_client_drives_gadus() {
    let Some(py) = python() else {
        assert!(
            std::env::var_os("GADUS_REQUIRE_TOOLS").is_none(),
            "no Python with bacalhau-apiclient (.ci/venv or GADUS_PYTHON) but GADUS_REQUIRE_TOOLS is set"
        );
        eprintln!("skipping: no Python with bacalhau-apiclient (run .ci/python-test-deps.sh)");
        return;
    };
    let node = Node::start(&[]);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/bacalhau_client.py");
    let out = Command::new(py)
        .arg(&script)
        .arg(format!("http://127.0.0.1:{}", node.port))
        .output()
        .expect("running python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(out.status.success(), "python client failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("all python client checks passed"), "{stdout}");
}
