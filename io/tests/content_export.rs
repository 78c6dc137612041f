//! Export, cat, ls and path resolution — including hostile DAGs that try to write outside the
//! destination, lie about sizes, or expand far beyond what they store.
#![allow(clippy::unwrap_used)]

#[path = "content_support.rs"]
mod support;

use std::io::Read;

use futures::StreamExt;
use gadus_io::content::{
    ContentStore, EntryKind, ExportOptions, ImportOptions, RequestError, UntrustedError,
    parse_content_path,
};
use support::*;

fn sample_tree(root: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let files = vec![
        ("readme.md".to_string(), b"# hi\n".to_vec()),
        ("data/big.bin".to_string(), seeded_bytes(3, 600_000)),
        ("data/zero".to_string(), Vec::new()),
        ("data/nested/x.txt".to_string(), b"x".to_vec()),
        (".hidden".to_string(), b"dot file".to_vec()),
    ];
    write_tree(root, &files, &["data/empty-dir".to_string()]);
    files
}

#[test]
fn export_round_trips_trees_for_both_cid_versions() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    sample_tree(&src);
    std::os::unix::fs::symlink("nested/x.txt", src.join("data/link")).unwrap();
    let store = ContentStore::open(dir.path().join("db")).unwrap();
    for (i, opts) in [ImportOptions::kubo_v0(), ImportOptions::kubo_v1()].iter().enumerate() {
        let imported = store.import_path(&src, opts).unwrap();
        assert_eq!(imported.size, 5 + 600_000 + 1 + 8);
        let out = dir.path().join(format!("out{i}"));
        let report = store.export(&imported.cid, &out).unwrap();
        assert_eq!(snapshot(&out), snapshot(&src));
        assert_eq!(report.files, 5);
        assert_eq!(report.directories, 4);
        assert_eq!(report.symlinks, 1);
        assert_eq!(report.bytes, imported.size);
        // Export never overwrites.
        let err = store.export(&imported.cid, &out).unwrap_err();
        assert!(matches!(err.request(), Some(RequestError::DestinationExists(_))), "{err}");
        assert_eq!(
            snapshot(&out),
            snapshot(&src),
            "a refused export leaves the existing tree alone"
        );
    }
}

#[test]
fn single_file_exports_to_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(dir.path().join("db")).unwrap();
    let data = seeded_bytes(4, 3 * 262_144 + 5);
    let imported = store.import_bytes(&data, &ImportOptions::kubo_v0()).unwrap();
    let out = dir.path().join("file.bin");
    store.export(&imported.cid, &out).unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), data);
}

#[test]
fn cat_ls_resolve_and_stat() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let files = sample_tree(&src);
    let store = ContentStore::open(dir.path().join("db")).unwrap();
    let root = store.import_path(&src, &ImportOptions::kubo_v1()).unwrap().cid;

    let mut got = Vec::new();
    let mut reader = store.cat(&root, "data/big.bin").unwrap();
    assert_eq!(reader.declared_size(), Some(600_000));
    reader.read_to_end(&mut got).unwrap();
    assert_eq!(got, files[1].1);

    // The `CID/path/inside` form.
    let (cid, path) = parse_content_path(&format!("/ipfs/{root}/data/nested/x.txt")).unwrap();
    let mut got = String::new();
    store.cat(&cid, &path).unwrap().read_to_string(&mut got).unwrap();
    assert_eq!(got, "x");

    let listing = store.ls(&root, "data").unwrap();
    let names: Vec<_> = listing.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["big.bin", "empty-dir", "nested", "zero"]);
    assert_eq!(listing[0].kind, Some(EntryKind::File));
    assert_eq!(listing[0].size, Some(600_000));
    assert!(listing[0].tsize.unwrap() > 600_000);
    assert_eq!(listing[1].kind, Some(EntryKind::Directory));
    assert_eq!(listing[3].size, Some(0));

    let err = store.cat(&root, "data").unwrap_err();
    assert!(matches!(err.request(), Some(RequestError::NotAFile(_))), "{err}");
    let err = store.cat(&root, "data/missing").unwrap_err();
    assert!(
        matches!(err.request(), Some(RequestError::NoSuchEntry { name, .. }) if name == "missing"),
        "{err}"
    );
    let err = store.ls(&root, "readme.md").unwrap_err();
    assert!(matches!(err.request(), Some(RequestError::NotADirectory(_))), "{err}");
    let err = store.resolve(&root, "data/../readme.md").unwrap_err();
    assert!(matches!(err.request(), Some(RequestError::InvalidPath { .. })), "{err}");
    assert_eq!(store.stat(&root).unwrap().kind, EntryKind::Directory);
}

#[tokio::test]
async fn cat_as_an_async_stream() {
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(dir.path().join("db")).unwrap();
    let data = seeded_bytes(5, 1 << 20);
    let cid = store.import_bytes(&data, &ImportOptions::kubo_v0()).unwrap().cid;
    let mut stream = Box::pin(store.cat(&cid, "").unwrap().into_stream());
    let mut got = Vec::new();
    let mut chunks = 0;
    while let Some(chunk) = stream.next().await {
        got.extend_from_slice(&chunk.unwrap());
        chunks += 1;
    }
    assert_eq!(got, data);
    assert_eq!(chunks, 4, "one chunk per 256 KiB leaf");
}

/// Exports `root` into `<tmp>/jail/out` and checks nothing appeared outside `out`.
fn export_in_jail(store: &ContentStore, root: &cid::Cid) -> gadus_io::content::ContentError {
    let jail = tempfile::tempdir().unwrap();
    let out = jail.path().join("out");
    let err = store.export(root, &out).unwrap_err();
    let left: Vec<_> =
        std::fs::read_dir(jail.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.is_empty(), "export left {left:?} behind");
    err
}

#[test]
fn hostile_names_are_refused_on_export() {
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(dir.path().join("db")).unwrap();
    let payload = put_raw(&store, b"pwned");
    for name in [&b"../evil"[..], b"..", b".", b"a/b", b"", b"nul\0byte", b"/abs", b"\xff\xfe"] {
        // Put a valid sibling first so the bad entry is not the only thing in the directory.
        let root = put_dir(&store, &[(b"fine", payload), (name, payload)]);
        let err = export_in_jail(&store, &root);
        assert!(
            matches!(err.untrusted(), Some(UntrustedError::UnsafeName { .. })),
            "{name:?}: {err}"
        );
    }
    // Nested: the bad directory is one level down, after a good file was written.
    let bad = put_dir(&store, &[(b"../../escape", payload)]);
    let root = put_dir(&store, &[(b"a-good", payload), (b"sub", bad)]);
    export_in_jail(&store, &root);
    // Duplicate names (a symlink and a directory of the same name could otherwise chain).
    let root = put_dir(&store, &[(b"same", payload), (b"same", payload)]);
    let err = export_in_jail(&store, &root);
    assert!(matches!(err.untrusted(), Some(UntrustedError::UnsafeName { .. })), "{err}");
    // And resolution refuses `..` outright.
    assert!(store.resolve(&root, "..").is_err());
}

#[test]
fn hostile_symlinks_are_refused_on_export() {
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(dir.path().join("db")).unwrap();
    for target in [&b"/etc/passwd"[..], b"../outside", b"sub/../../x", b""] {
        let link = put_pb(&store, &pb_node(&[], &unixfs(4, Some(target), None, &[], None)));
        let root = put_dir(&store, &[(b"link", link)]);
        let err = export_in_jail(&store, &root);
        assert!(
            matches!(err.untrusted(), Some(UntrustedError::UnsafeSymlink { .. })),
            "{target:?}: {err}"
        );
    }
    // A relative link that stays inside is fine.
    let link = put_pb(&store, &pb_node(&[], &unixfs(4, Some(b"../sibling"), None, &[], None)));
    let sub = put_dir(&store, &[(b"link", link)]);
    let root = put_dir(&store, &[(b"sub", sub)]);
    let out = dir.path().join("ok");
    store.export(&root, &out).unwrap();
    assert_eq!(std::fs::read_link(out.join("sub/link")).unwrap().to_str(), Some("../sibling"));
}

#[test]
fn lying_file_sizes_and_dag_bombs_are_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(dir.path().join("db")).unwrap();
    let leaf = put_raw(&store, &[1u8; 1000]);
    // Declares 5000 bytes but its leaves hold 2000.
    let liar = put_pb(
        &store,
        &pb_node(
            &[(b"", leaf, 1000), (b"", leaf, 1000)],
            &unixfs(2, None, Some(5000), &[1000, 1000], None),
        ),
    );
    let mut sink = Vec::new();
    let err = store.cat(&liar, "").unwrap().read_to_end(&mut sink).unwrap_err();
    assert!(err.to_string().contains("file size differs"), "{err}");

    // A bomb: each level links the one below 100 times (10^6 × 1000 bytes from 4 blocks).
    let mut node = leaf;
    let mut size = 1000u64;
    for _ in 0..3 {
        let links: Vec<_> = (0..100).map(|_| (&b""[..], node, 0)).collect();
        size *= 100;
        node = put_pb(&store, &pb_node(&links, &unixfs(2, None, Some(size), &[], None)));
    }
    let jail = tempfile::tempdir().unwrap();
    let opts = ExportOptions { max_bytes: 10 << 20, ..ExportOptions::default() };
    let err = store.export_with(&node, &jail.path().join("bomb"), &opts).unwrap_err();
    assert!(matches!(err.request(), Some(RequestError::LimitExceeded(_))), "{err}");
    assert!(std::fs::read_dir(jail.path()).unwrap().next().is_none(), "partial output removed");

    // Entry-count bombs: one directory linked from itself is impossible (hashes), but 100
    // names for one subdirectory, nested, are not.
    let mut d = put_dir(&store, &[(b"f", leaf)]);
    for _ in 0..3 {
        let names: Vec<Vec<u8>> = (0..100).map(|i| format!("d{i}").into_bytes()).collect();
        let entries: Vec<_> = names.iter().map(|n| (n.as_slice(), d)).collect();
        d = put_dir(&store, &entries);
    }
    let opts = ExportOptions { max_entries: 5000, ..ExportOptions::default() };
    let err = store.export_with(&d, &jail.path().join("dirs"), &opts).unwrap_err();
    assert!(matches!(err.request(), Some(RequestError::LimitExceeded(_))), "{err}");
}

#[test]
fn malformed_blocks_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(dir.path().join("db")).unwrap();
    let garbage = put_pb(&store, b"\xff\xff\xff\xff");
    let no_data = put_pb(&store, &[]);
    let bad_type = put_pb(&store, &pb_node(&[], &[0x08, 0x63]));
    let dir_in_file = {
        let d = put_dir(&store, &[]);
        put_pb(&store, &pb_node(&[(b"", d, 4)], &unixfs(2, None, Some(0), &[0], None)))
    };
    for cid in [garbage, no_data, bad_type, dir_in_file] {
        let mut sink = Vec::new();
        let cat = store.cat(&cid, "").map(|mut r| r.read_to_end(&mut sink));
        let export = store.export(&cid, &dir.path().join(format!("x{cid}")));
        assert!(export.is_err(), "{cid}");
        let err = export.unwrap_err();
        assert!(matches!(err.untrusted(), Some(UntrustedError::Malformed { .. })), "{cid}: {err}");
        assert!(cat.is_err() || cat.unwrap().is_err());
    }
    // A missing child is the store's gap, not a malformed DAG.
    let absent = gadus_io::content::cid_of_block(
        gadus_io::content::CidVersion::V1,
        gadus_io::content::RAW,
        b"?",
    );
    let root = put_dir(&store, &[(b"gone", absent)]);
    let err = store.export(&root, &dir.path().join("gone")).unwrap_err();
    assert!(matches!(err.request(), Some(RequestError::MissingBlock(c)) if *c == absent), "{err}");
    assert_eq!(store.ls(&root, "").unwrap()[0].kind, None, "listing works without the child");
}

#[test]
fn hamt_sharded_directories_are_read() {
    // A HAMT (UnixFS type 5, fanout 256) as Kubo writes for big directories: link names are a
    // two-hex-digit bucket, followed by the entry name for entries, alone for sub-shards.
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(dir.path().join("db")).unwrap();
    let foo = store.import_bytes(b"foo!", &ImportOptions::kubo_v0()).unwrap().cid;
    let bar = store.import_bytes(&seeded_bytes(6, 300_000), &ImportOptions::kubo_v0()).unwrap().cid;
    let sub = put_pb(
        &store,
        &pb_node(&[(b"05bar", bar, 10)], &unixfs(5, Some(&[0x20]), None, &[], Some(256))),
    );
    let root = put_pb(
        &store,
        &pb_node(
            &[(b"1B", sub, 10), (b"A0foo", foo, 10)],
            &unixfs(5, Some(&[0x04, 0x00]), None, &[], Some(256)),
        ),
    );
    let names: Vec<_> = store.ls(&root, "").unwrap().into_iter().map(|e| e.name).collect();
    assert_eq!(names, ["bar", "foo"]);
    let mut got = Vec::new();
    store.cat(&root, "bar").unwrap().read_to_end(&mut got).unwrap();
    assert_eq!(got, seeded_bytes(6, 300_000));
    let out = dir.path().join("out");
    store.export(&root, &out).unwrap();
    assert_eq!(std::fs::read(out.join("foo")).unwrap(), b"foo!");

    // A shard link without the hex prefix is malformed.
    let bad = put_pb(&store, &pb_node(&[(b"x", foo, 10)], &unixfs(5, None, None, &[], Some(256))));
    assert!(matches!(
        store.ls(&bad, "").unwrap_err().untrusted(),
        Some(UntrustedError::Malformed { .. })
    ));
}
