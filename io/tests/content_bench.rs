//! `gadus bench cid` figures: CID-only import throughput against single-core sha2-256.
//!
//! Run with optimizations (the target is a release-build property):
//! `cargo test -p gadus-io --release --test content_bench -- --ignored --nocapture`
#![allow(clippy::unwrap_used)]

use std::time::Instant;

use gadus_io::content::{
    ContentStore, ImportOptions, hash_bytes, hash_reader, measure_cid_throughput,
};

#[test]
fn measurement_paths_agree() {
    // The benchmark's two CID paths must compute the same thing, or its figures mean nothing.
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    for opts in [ImportOptions::kubo_v0(), ImportOptions::kubo_v1()] {
        assert_eq!(hash_bytes(&data, &opts).unwrap(), hash_reader(&data[..], &opts).unwrap());
    }
    let small = measure_cid_throughput(1 << 20, 1, &ImportOptions::kubo_v0()).unwrap();
    assert!(small.sha256 > 0.0 && small.cid_from_bytes > 0.0 && small.cid_from_reader > 0.0);
}

#[test]
#[ignore = "benchmark: run in release with --ignored --nocapture"]
fn cid_only_import_reaches_90_percent_of_sha256() {
    for (name, opts) in
        [("v0 (ipfs add)", ImportOptions::kubo_v0()), ("v1 raw leaves", ImportOptions::kubo_v1())]
    {
        let t = measure_cid_throughput(256 << 20, 5, &opts).unwrap();
        eprintln!("{name}: {t}");
        if !cfg!(debug_assertions) {
            assert!(t.bytes_ratio() >= 0.9, "{name}: {t}");
            assert!(t.reader_ratio() >= 0.9, "{name}: {t}");
        }
    }
}

#[test]
#[ignore = "benchmark: run in release with --ignored --nocapture"]
fn stored_import_throughput() {
    // For comparison: the same import written to fjall (one SyncData at commit).
    let data: Vec<u8> =
        (0..256u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(dir.path()).unwrap();
    let start = Instant::now();
    let imported = store.import_bytes(&data, &ImportOptions::kubo_v0()).unwrap();
    let secs = start.elapsed().as_secs_f64();
    eprintln!("stored import (v0): {:.0} MiB/s", 256.0 / secs);
    assert_eq!(imported.cid, hash_bytes(&data, &ImportOptions::kubo_v0()).unwrap().cid);
}
