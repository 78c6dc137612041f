//! CIDs equal Kubo's: published vectors, Debian's `ipfs_cid` (Kubo's default CIDv0) on real
//! seeded files of every interesting size, and rust-unixfs for CIDv1/raw leaves and trees.
#![allow(clippy::unwrap_used)]

#[path = "content_support.rs"]
mod support;

use std::fs;

use gadus_io::content::{ContentStore, ImportOptions, hash_bytes, hash_path, hash_reader};
use support::*;

const KIB: u64 = 1024;
const CHUNK: u64 = 256 * KIB;

#[test]
fn kubo_published_vectors() {
    let v0 = hash_bytes(b"hello world", &ImportOptions::kubo_v0()).unwrap();
    assert_eq!(v0.cid.to_string(), "Qmf412jQZiuVUtdgnB36FXFX7xg5V6KEbSJ4dpQuhkLyfD");
    assert_eq!(v0.size, 11);
    let v1 = hash_bytes(b"hello world", &ImportOptions::kubo_v1()).unwrap();
    assert_eq!(v1.cid.to_string(), "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e");
    let v1_pb = ImportOptions { raw_leaves: false, ..ImportOptions::kubo_v1() };
    assert_eq!(
        hash_bytes(b"hello world", &v1_pb).unwrap().cid.to_string(),
        "bafybeihykld7uyxzogax6vgyvag42y7464eywpf55gxi5qpoisibh3c5wa"
    );
    // Empty file: Kubo's well-known empty-file CIDs.
    assert_eq!(
        hash_bytes(b"", &ImportOptions::kubo_v0()).unwrap().cid.to_string(),
        "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"
    );
    assert_eq!(
        hash_bytes(b"", &ImportOptions::kubo_v1()).unwrap().cid.to_string(),
        "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
    );
}

#[test]
fn empty_directory_vectors() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    fs::create_dir(&empty).unwrap();
    assert_eq!(
        hash_path(&empty, &ImportOptions::kubo_v0()).unwrap().cid.to_string(),
        "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn"
    );
    assert_eq!(
        hash_path(&empty, &ImportOptions::kubo_v1()).unwrap().cid.to_string(),
        "bafybeiczsscdsbs7ffqz55asqdf3smv6klcw3gofszvwlyarci47bgf354"
    );
}

/// File sizes covering: empty, tiny, the 256 KiB chunk boundary ±1, several chunks, exactly 174
/// chunks (one full node) and 175 (the first rebalance to depth 2), 45 MiB (183 blocks) and
/// 50 MB.
fn oracle_sizes() -> Vec<u64> {
    vec![
        0,
        1,
        11,
        CHUNK - 1,
        CHUNK,
        CHUNK + 1,
        300_000,
        1 << 20,
        3 * CHUNK + 17,
        174 * CHUNK,
        174 * CHUNK + 1,
        45 << 20,
        50_000_000,
    ]
}

#[test]
fn file_cids_equal_debian_ipfs_cid_and_stored_import() {
    if !have_ipfs_cid() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(dir.path().join("store")).unwrap();
    for (i, size) in oracle_sizes().into_iter().enumerate() {
        let path = dir.path().join(format!("f{size}"));
        write_seeded_file(&path, 1000 + i as u64, size);
        let want = ipfs_cid_v0(&path);
        // Three routes must agree with the oracle: hash-only from a path, hash-only from a
        // reader, and a real import into fjall.
        let hashed = hash_path(&path, &ImportOptions::kubo_v0()).unwrap();
        assert_eq!(hashed.cid.to_string(), want, "hash_path, {size} bytes");
        assert_eq!(hashed.size, size);
        let streamed =
            hash_reader(fs::File::open(&path).unwrap(), &ImportOptions::kubo_v0()).unwrap();
        assert_eq!(streamed, hashed);
        let stored = store.import_path(&path, &ImportOptions::kubo_v0()).unwrap();
        assert_eq!(stored.cid.to_string(), want, "import_path, {size} bytes");
        if size == 45 << 20 {
            assert_eq!(stored.blocks, 183, "180 leaves + 2 full-ish nodes + root");
        }
        fs::remove_file(&path).unwrap();
    }
}

#[test]
fn cidv1_raw_leaf_file_cids_equal_rust_unixfs() {
    for (i, size) in oracle_sizes().into_iter().enumerate() {
        if size > 174 * CHUNK + 1 {
            continue; // the 45/50 MB cases are covered for v0 by the Debian oracle
        }
        let data = seeded_bytes(2000 + i as u64, size as usize);
        let (want_v1, want_tsize) = unixfs_file(&data, true);
        let got = hash_bytes(&data, &ImportOptions::kubo_v1()).unwrap();
        assert_eq!(got.cid.to_string(), want_v1, "v1 {size} bytes");
        assert_eq!(got.tsize, want_tsize, "v1 tsize {size} bytes");
        let (want_v0, want_tsize) = unixfs_file(&data, false);
        let got = hash_bytes(&data, &ImportOptions::kubo_v0()).unwrap();
        assert_eq!(got.cid.to_string(), want_v0, "v0 {size} bytes");
        assert_eq!(got.tsize, want_tsize, "v0 tsize {size} bytes");
    }
}

#[test]
fn large_cidv1_file_equals_rust_unixfs() {
    // 45 MiB through the streaming reader path (v1 raw leaves, two-level tree).
    let data = seeded_bytes(77, 45 << 20);
    let (want, _) = unixfs_file(&data, true);
    let got = hash_reader(&data[..], &ImportOptions::kubo_v1()).unwrap();
    assert_eq!(got.cid.to_string(), want);
    assert_eq!(got.blocks, 183);
}

#[test]
fn directory_tree_cids_equal_rust_unixfs() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let files: Vec<(String, Vec<u8>)> = vec![
        ("b.txt".into(), b"bee".to_vec()),
        ("a.txt".into(), b"hello world".to_vec()),
        ("A-upper".into(), seeded_bytes(1, 1000)),
        ("sub/big.bin".into(), seeded_bytes(2, (CHUNK * 2 + 5) as usize)),
        ("sub/deeper/empty-file".into(), Vec::new()),
        ("sub/deeper/.hidden".into(), b"dot".to_vec()),
        ("z/\u{e9}t\u{e9}.txt".into(), b"unicode".to_vec()),
    ];
    for (path, data) in &files {
        let full = root.join(path);
        fs::create_dir_all(full.parent().unwrap()).unwrap();
        fs::write(full, data).unwrap();
    }
    for (v1, opts) in [(false, ImportOptions::kubo_v0()), (true, ImportOptions::kubo_v1())] {
        let want = unixfs_tree(&files, v1);
        assert_eq!(hash_path(&root, &opts).unwrap().cid.to_string(), want, "v1={v1}");
    }
}
