//! Helpers shared by the `content_*` tests (included with `#[path]`), plus their own checks.
//!
//! * seeded, reproducible file contents written to real files;
//! * the Debian `ipfs_cid` oracle (Kubo's default CIDv0 for a file), required in CI;
//! * rust-unixfs (an independent implementation verified against Kubo) as a second oracle for
//!   CIDv1/raw-leaves files and for directories, which `ipfs_cid` cannot do.
#![allow(clippy::unwrap_used, dead_code)]

use std::io::Write;
use std::path::Path;
use std::process::Command;

/// SplitMix64: tiny, seeded, good enough to make every chunk differ.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// `len` seeded bytes in memory.
pub fn seeded_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0; len];
    Rng::new(seed).fill(&mut v);
    v
}

/// Writes `len` seeded bytes to `path` in 1 MiB pieces (never the whole file in memory).
pub fn write_seeded_file(path: &Path, seed: u64, len: u64) {
    let mut rng = Rng::new(seed);
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill(&mut buf[..n]);
        file.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
    file.flush().unwrap();
}

/// Whether missing external tools must fail the test (CI) rather than skip it.
pub fn tools_required() -> bool {
    std::env::var_os("CI").is_some() || std::env::var_os("GADUS_REQUIRE_TOOLS").is_some()
}

/// Whether Debian's `ipfs_cid` is installed. Without it: panics in CI, prints why otherwise.
pub fn have_ipfs_cid() -> bool {
    let found = Command::new("ipfs_cid").arg("--help").output().is_ok();
    if !found {
        let why =
            "`ipfs_cid` (Debian package ipfs-cid) is not installed; run .ci/content-test-deps.sh";
        assert!(!tools_required(), "{why}");
        eprintln!("SKIPPED oracle comparison: {why}");
    }
    found
}

/// Kubo's default (`ipfs add`, CIDv0) CID of a regular file, per Debian's `ipfs_cid`.
pub fn ipfs_cid_v0(path: &Path) -> String {
    let out = Command::new("ipfs_cid").arg(path).output().unwrap();
    assert!(out.status.success(), "ipfs_cid failed: {}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let json: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    json["CIDv0"].as_str().unwrap().to_owned()
}

/// rust-unixfs's CID and cumulative DAG size for a file (`v1` = CIDv1 + raw leaves).
pub fn unixfs_file(data: &[u8], v1: bool) -> (String, u64) {
    use rust_unixfs::file::adder::FileAdder;
    let version = if v1 { cid::Version::V1 } else { cid::Version::V0 };
    let mut adder = FileAdder::builder().with_cid_version(version).build();
    let mut blocks = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let (produced, consumed) = adder.push(rest);
        blocks.extend(produced);
        rest = &rest[consumed..];
    }
    blocks.extend(adder.finish());
    let total: u64 = blocks.iter().map(|(_, b)| b.len() as u64).sum();
    (blocks.last().unwrap().0.to_string(), total)
}

/// rust-unixfs's CID of a directory tree given as `(relative path, file bytes)`; the tree is
/// wrapped in one root directory, as `ipfs add -r` of that directory does.
pub fn unixfs_tree(files: &[(String, Vec<u8>)], v1: bool) -> String {
    use rust_unixfs::dir::builder::{BufferingTreeBuilder, TreeOptions};
    let mut opts = TreeOptions::default();
    opts.wrap_with_directory();
    opts.cid_version(if v1 { cid::Version::V1 } else { cid::Version::V0 });
    let mut builder = BufferingTreeBuilder::new(opts);
    for (path, data) in files {
        let (cid, size) = unixfs_file(data, v1);
        builder.put_link(path, cid.parse().unwrap(), size).unwrap();
    }
    let mut root = None;
    let mut iter = builder.build();
    while let Some(node) = iter.next_borrowed() {
        root = Some(node.unwrap().cid.to_string());
    }
    root.unwrap()
}

// ---- hand-made dag-pb/UnixFS blocks, for hostile and unusual DAGs --------------------------

pub fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn field_bytes(out: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
    out.push(tag);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// A UnixFS `Data` message.
pub fn unixfs(
    kind: u64,
    data: Option<&[u8]>,
    filesize: Option<u64>,
    blocksizes: &[u64],
    fanout: Option<u64>,
) -> Vec<u8> {
    let mut out = vec![0x08];
    varint(&mut out, kind);
    if let Some(d) = data {
        field_bytes(&mut out, 0x12, d);
    }
    if let Some(f) = filesize {
        out.push(0x18);
        varint(&mut out, f);
    }
    for b in blocksizes {
        out.push(0x20);
        varint(&mut out, *b);
    }
    if let Some(f) = fanout {
        out.extend_from_slice(&[0x28, 0x22, 0x30]); // hashType murmur3 (0x22), then fanout
        varint(&mut out, f);
    }
    out
}

/// A dag-pb node with `(name, cid, tsize)` links and `data`.
pub fn pb_node(links: &[(&[u8], cid::Cid, u64)], data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, cid, tsize) in links {
        let mut link = Vec::new();
        field_bytes(&mut link, 0x0a, &cid.to_bytes());
        field_bytes(&mut link, 0x12, name);
        link.push(0x18);
        varint(&mut link, *tsize);
        field_bytes(&mut out, 0x12, &link);
    }
    field_bytes(&mut out, 0x0a, data);
    out
}

/// Stores a dag-pb block and returns its CIDv1.
pub fn put_pb(store: &gadus_io::content::ContentStore, block: &[u8]) -> cid::Cid {
    use gadus_io::content::{CidVersion, DAG_PB, cid_of_block};
    let cid = cid_of_block(CidVersion::V1, DAG_PB, block);
    store.put_block(&cid, block).unwrap();
    cid
}

/// Stores a raw block and returns its CID.
pub fn put_raw(store: &gadus_io::content::ContentStore, data: &[u8]) -> cid::Cid {
    use gadus_io::content::{CidVersion, RAW, cid_of_block};
    let cid = cid_of_block(CidVersion::V1, RAW, data);
    store.put_block(&cid, data).unwrap();
    cid
}

/// A directory block with the given entries (in the order given).
pub fn put_dir(store: &gadus_io::content::ContentStore, entries: &[(&[u8], cid::Cid)]) -> cid::Cid {
    let links: Vec<_> = entries.iter().map(|(n, c)| (*n, *c, 10)).collect();
    put_pb(store, &pb_node(&links, &unixfs(1, None, None, &[], None)))
}

// ---- trees on disk ---------------------------------------------------------------------------

/// Every entry under `root` as `relative path -> content` (`None` for directories, symlink
/// targets prefixed with `->`).
pub fn snapshot(root: &Path) -> std::collections::BTreeMap<String, Option<Vec<u8>>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let rel = path.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let kind = entry.file_type().unwrap();
            if kind.is_symlink() {
                let target = std::fs::read_link(&path).unwrap();
                out.insert(rel, Some(format!("->{}", target.display()).into_bytes()));
            } else if kind.is_dir() {
                out.insert(rel, None);
                stack.push(path);
            } else {
                out.insert(rel, Some(std::fs::read(&path).unwrap()));
            }
        }
    }
    out
}

/// Writes `(relative path, bytes)` files (and `dirs`, possibly empty) under `root`.
pub fn write_tree(root: &Path, files: &[(String, Vec<u8>)], dirs: &[String]) {
    std::fs::create_dir_all(root).unwrap();
    for d in dirs {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    for (path, data) in files {
        let full = root.join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, data).unwrap();
    }
}

#[test]
fn seeded_bytes_are_reproducible_and_streamed_identically() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    write_seeded_file(&path, 7, 3 << 20 | 5);
    assert_eq!(std::fs::read(&path).unwrap(), seeded_bytes(7, 3 << 20 | 5));
    assert_ne!(seeded_bytes(7, 64), seeded_bytes(8, 64));
}

#[test]
fn rust_unixfs_oracle_reproduces_kubo_vectors() {
    assert_eq!(
        unixfs_file(b"hello world", false).0,
        "Qmf412jQZiuVUtdgnB36FXFX7xg5V6KEbSJ4dpQuhkLyfD"
    );
    assert_eq!(
        unixfs_file(b"hello world", true).0,
        "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"
    );
}
