//! core/ is sans-IO, mechanically: its dependency tree holds no async runtime, network stack,
//! container client, store, WASM engine or OS-randomness crate, and its source reads no clock,
//! file, socket or thread RNG. (clippy.toml in core/ bans the same things at lint time.)

#![allow(clippy::unwrap_used)] // Tests unwrap: a panic is the failure report.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

/// Crates that would let core touch the world (or make it nondeterministic).
const FORBIDDEN: &[&str] = &[
    "tokio",
    "libp2p",
    "bollard",
    "fjall",
    "wasmi",
    "reqwest",
    "hyper",
    "axum",
    "mio",
    "socket2",
    "getrandom",
    "async-std",
    "smol",
    "turmoil",
    "object_store",
    "regorus",
];

/// The crates `gadus-core` needs (normal and build dependencies, never dev), resolved with
/// the features *core itself* enables. `cargo metadata` would unify features across the whole
/// workspace (the node's crates switch on `uuid/v4`, which pulls `getrandom` under core's
/// `uuid` in a workspace build), hiding what core really asks for; `cargo tree -p` does not.
/// Calls core must not make even when a feature is on are banned by `core/clippy.toml`.
fn normal_dependency_closure() -> BTreeSet<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let out = Command::new(cargo)
        .args([
            "tree",
            "-p",
            "gadus-core",
            "-e",
            "normal,build",
            "--prefix",
            "none",
            "--format",
            "{p}",
            "--locked",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(out.status.success(), "cargo tree failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[test]
fn core_dependency_tree_has_no_io_crates() {
    let closure = normal_dependency_closure();
    assert!(closure.contains("serde"), "the walk found core's dependencies: {closure:?}");
    let bad: Vec<_> = closure.iter().filter(|n| FORBIDDEN.contains(&n.as_str())).collect();
    assert!(bad.is_empty(), "gadus-core must stay sans-IO, but depends on {bad:?}");
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn core_source_reads_no_clock_file_socket_or_thread_rng() {
    const PATTERNS: &[&str] = &[
        "Instant::now",
        "SystemTime::now",
        "now_utc",
        "thread_rng",
        "OsRng",
        "rand::random",
        "std::fs",
        "std::net::Tcp",
        "std::net::Udp",
        "std::thread",
        "tokio::",
        "HashMap",
        "HashSet",
    ];
    let mut files = Vec::new();
    rust_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut files);
    assert!(files.len() > 5);
    let mut hits = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for (i, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for p in PATTERNS {
                if code.contains(p) {
                    hits.push(format!("{}:{}: {}", f.display(), i + 1, line.trim()));
                }
            }
        }
    }
    assert!(hits.is_empty(), "core/src must not touch the world:\n{}", hits.join("\n"));
}
