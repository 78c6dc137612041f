//! `gadus job validate` as a user runs it: the real binary on real files.

#![allow(clippy::unwrap_used)] // Tests unwrap: a panic is the failure report.

use std::process::Command;

fn gadus(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_gadus"))
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .unwrap()
}

#[test]
fn validates_every_shipped_example() {
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples")).unwrap() {
        let path = entry.unwrap().path();
        if !matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "json")) {
            continue; // examples/wasm/ holds modules, not job files
        }
        let out = gadus(&["job", "validate", path.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let yaml = String::from_utf8(out.stdout).unwrap();
        assert!(yaml.contains("ID: j-"), "{yaml}");
        assert!(yaml.contains("Namespace: default"), "{yaml}");
    }
}

#[test]
fn json_output_is_the_normalized_job() {
    let out = gadus(&["job", "validate", "examples/word-count.yaml", "--output", "json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["Name"], "word-count");
    assert_eq!(v["Count"], 2);
    assert_eq!(v["State"]["StateType"], "Undefined");
    assert_eq!(v["Tasks"][0]["Resources"]["Memory"], "256mb");
}

#[test]
fn invalid_file_lists_every_problem_and_fails() {
    let dir = std::env::temp_dir().join(format!("gadus-validate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.yaml");
    std::fs::write(
        &file,
        "Type: batch\nTasks:\n  - Env: {bad-key: x}\n    Resources: {CPU: lots}\n",
    )
    .unwrap();
    let out = gadus(&["job", "validate", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    for line in [
        "Tasks[0].Name: missing",
        "Tasks[0].Engine: missing",
        "Tasks[0].Env.bad-key: keys must match [A-Z][A-Z0-9_]*",
        "Tasks[0].Resources.CPU: invalid quantity \"lots\"",
    ] {
        assert!(err.contains(line), "missing {line:?} in:\n{err}");
    }
    assert!(out.stdout.is_empty());
    let missing = gadus(&["job", "validate", "does-not-exist.yaml"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("does-not-exist.yaml"));
}
