//! Replays every committed input through its target without libFuzzer: each file of
//! `corpus/<target>/` (the seeds) and `regressions/<target>/` (inputs that once crashed).
//! `cargo test -p gadus-fuzz` (and so the workspace's test suite) runs it; a regression stays
//! fixed because its input stays here.

use std::path::{Path, PathBuf};

fn dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn files_in(d: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(d) else { return Vec::new() };
    let mut out: Vec<PathBuf> = entries
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| {
            p.is_file() && !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    out.sort();
    out
}

fn names_in(d: &Path, strip_rs: bool) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(d)
        .unwrap_or_else(|e| panic!("{}: {e}", d.display()))
        .map(|e| e.expect("a directory entry").file_name().to_string_lossy().into_owned())
        .filter_map(|n| if strip_rs { n.strip_suffix(".rs").map(str::to_string) } else { Some(n) })
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    names
}

/// Runs every input of `sub/<target>/`; panics at the end, naming every input that failed
/// (each one's panic message is printed as it happens).
fn replay(sub: &str) -> usize {
    let mut count = 0;
    let mut failed = Vec::new();
    for (name, target) in gadus_fuzz::TARGETS {
        for file in files_in(&dir().join(sub).join(name)) {
            let data = std::fs::read(&file).expect("read an input");
            eprintln!("{name}: {}", file.display());
            let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| target(&data)));
            if run.is_err() {
                failed.push(format!("{name}: {}", file.display()));
            }
            count += 1;
        }
    }
    assert!(failed.is_empty(), "{} of {count} inputs failed:\n{}", failed.len(), failed.join("\n"));
    count
}

#[test]
fn every_target_has_a_binary_and_a_seed_corpus() {
    let targets: Vec<String> = gadus_fuzz::TARGETS.iter().map(|(n, _)| n.to_string()).collect();
    let mut sorted = targets.clone();
    sorted.sort();
    assert_eq!(targets, sorted, "keep TARGETS sorted");
    assert_eq!(names_in(&dir().join("corpus"), false), targets, "corpus/ vs TARGETS");
    for name in &targets {
        assert!(!files_in(&dir().join("corpus").join(name)).is_empty(), "corpus/{name} is empty");
    }
    if dir().join("regressions").is_dir() {
        for name in names_in(&dir().join("regressions"), false) {
            assert!(targets.contains(&name), "regressions/{name} names no target");
        }
    }
}

#[test]
fn seed_corpus_replays() {
    assert!(replay("corpus") > 0);
}

#[test]
fn regressions_replay() {
    replay("regressions");
}

#[test]
fn trivial_inputs_replay() {
    for (_, target) in gadus_fuzz::TARGETS {
        for data in [&b""[..], b"\0", b"\xff", b"{}", b"a", b"\0\0\0\0", b"\x1f\x8b"] {
            target(data);
        }
    }
}
