//! Blockstore, sessions, pins, GC and durability, on real fjall directories.
#![allow(clippy::unwrap_used)]

#[path = "content_support.rs"]
mod support;

use std::io::Read;

use cid::Cid;
use cid::multihash::Multihash;
use gadus_io::content::{
    CidVersion, ContentStore, ImportOptions, RAW, RequestError, UntrustedError, cid_of_block,
};
use support::*;

#[test]
fn put_get_has_delete() {
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(dir.path()).unwrap();
    let cid = cid_of_block(CidVersion::V1, RAW, b"hello world");
    assert!(!store.has_block(&cid).unwrap());
    assert_eq!(store.get_block(&cid).unwrap(), None);
    store.put_block(&cid, b"hello world").unwrap();
    assert!(store.has_block(&cid).unwrap());
    assert_eq!(&store.get_block(&cid).unwrap().unwrap()[..], b"hello world");
    // Keyed by multihash: the CIDv0/dag-pb form of the same hash finds the same bytes.
    let v0 = Cid::new_v0(*cid.hash()).unwrap();
    assert!(store.has_block(&v0).unwrap());
    assert!(store.delete_block(&cid).unwrap());
    assert!(!store.has_block(&cid).unwrap());
    assert!(!store.delete_block(&cid).unwrap());
}

#[test]
fn lying_blocks_are_refused_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(dir.path()).unwrap();
    let cid = cid_of_block(CidVersion::V1, RAW, b"the truth");
    let err = store.put_block(&cid, b"a lie").unwrap_err();
    assert!(matches!(err.untrusted(), Some(UntrustedError::HashMismatch(c)) if *c == cid), "{err}");
    assert!(!store.has_block(&cid).unwrap());
    assert_eq!(store.stats().unwrap().blocks, 0);

    // Over 2 MiB: refused even when the hash matches.
    let big = vec![7u8; (2 << 20) + 1];
    let big_cid = cid_of_block(CidVersion::V1, RAW, &big);
    let err = store.put_block(&big_cid, &big).unwrap_err();
    assert!(matches!(err.untrusted(), Some(UntrustedError::BlockTooLarge { .. })), "{err}");

    // A hash we cannot verify (blake3, 0x1e) is refused rather than trusted.
    let blake = Cid::new_v1(RAW, Multihash::<64>::wrap(0x1e, &[0u8; 32]).unwrap());
    let err = store.put_block(&blake, b"x").unwrap_err();
    assert!(
        matches!(err.untrusted(), Some(UntrustedError::UnsupportedHash { code: 0x1e, .. })),
        "{err}"
    );
    assert_eq!(store.stats().unwrap().blocks, 0);
}

#[test]
fn identity_cids_carry_their_data() {
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(dir.path()).unwrap();
    let cid = Cid::new_v1(RAW, Multihash::<64>::wrap(0x00, b"inline").unwrap());
    assert!(store.has_block(&cid).unwrap());
    assert_eq!(&store.get_block(&cid).unwrap().unwrap()[..], b"inline");
    store.put_block(&cid, b"inline").unwrap();
    assert!(store.put_block(&cid, b"other").is_err());
}

#[test]
fn imports_survive_drop_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let files = vec![
        ("a.txt".to_string(), b"alpha".to_vec()),
        ("deep/b.bin".to_string(), seeded_bytes(9, 700_000)),
        ("deep/deeper/c".to_string(), seeded_bytes(10, 262_144)),
    ];
    write_tree(&src, &files, &["empty".to_string()]);
    let db = dir.path().join("db");
    let (tree, file) = {
        let store = ContentStore::open(&db).unwrap();
        let tree = store.import_path(&src, &ImportOptions::kubo_v0()).unwrap();
        let file =
            store.import_reader(&seeded_bytes(11, 1 << 20)[..], &ImportOptions::kubo_v1()).unwrap();
        (tree, file)
    }; // store dropped: database closed
    let store = ContentStore::open(&db).unwrap();
    assert!(store.is_pinned(&tree.cid).unwrap());
    assert!(store.is_pinned(&file.cid).unwrap());
    let out = dir.path().join("out");
    store.export(&tree.cid, &out).unwrap();
    assert_eq!(snapshot(&out), snapshot(&src));
    let mut bytes = Vec::new();
    store.cat(&file.cid, "").unwrap().read_to_end(&mut bytes).unwrap();
    assert_eq!(bytes, seeded_bytes(11, 1 << 20));
    // Nothing to collect: everything is pinned.
    assert_eq!(store.gc().unwrap().blocks_freed, 0);
}

#[test]
fn gc_keeps_pinned_and_removes_unpinned() {
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(dir.path()).unwrap();
    let opts = ImportOptions { chunk_size: 1024, max_links: 4, ..ImportOptions::kubo_v1() };
    let kept = store.import_bytes(&seeded_bytes(1, 20_000), &opts).unwrap();
    let dropped =
        store.import_bytes(&seeded_bytes(2, 30_000), &opts.clone().with_pin(false)).unwrap();
    let before = store.stats().unwrap();
    assert_eq!(before.blocks, kept.blocks + dropped.blocks);
    assert_eq!(before.pins, 1);

    let report = store.gc().unwrap();
    assert_eq!(report.blocks_freed, dropped.blocks);
    assert_eq!(
        report.bytes_freed, dropped.tsize,
        "tsize counts every block once here (no duplicates)"
    );
    assert_eq!(report.blocks_kept, kept.blocks);
    assert!(!store.has_block(&dropped.cid).unwrap());
    assert_eq!(store.first_missing(&kept.cid).unwrap(), None);

    assert!(store.unpin(&kept.cid).unwrap());
    assert!(!store.unpin(&kept.cid).unwrap());
    let report = store.gc().unwrap();
    assert_eq!(report.blocks_freed, kept.blocks);
    assert_eq!(store.stats().unwrap(), Default::default());
}

#[test]
fn pin_requires_the_whole_dag_and_pinned_roots_cannot_be_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(dir.path()).unwrap();
    let leaf = put_raw(&store, b"leaf");
    let absent = cid_of_block(CidVersion::V1, RAW, b"never stored");
    let root = put_dir(&store, &[(b"a", leaf), (b"b", absent)]);
    let err = store.pin(&root).unwrap_err();
    assert!(matches!(err.request(), Some(RequestError::MissingBlock(c)) if *c == absent), "{err}");
    store.put_block(&absent, b"never stored").unwrap();
    store.pin(&root).unwrap();
    assert!(matches!(
        store.delete_block(&root).unwrap_err().request(),
        Some(RequestError::Pinned(_))
    ));
    assert_eq!(store.pins().unwrap(), vec![root]);
}

#[test]
fn dropped_session_rolls_back_only_what_it_added() {
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(dir.path()).unwrap();
    let existing = put_raw(&store, b"already here");
    let fresh = cid_of_block(CidVersion::V1, RAW, b"fresh");
    {
        let mut w = store.writer();
        w.put(&existing, b"already here").unwrap();
        w.put(&fresh, b"fresh").unwrap();
        assert_eq!(w.blocks_added(), 1);
        assert!(store.has_block(&fresh).unwrap(), "writes are visible before commit");
    } // dropped: rollback
    assert!(store.has_block(&existing).unwrap());
    assert!(!store.has_block(&fresh).unwrap());
}

#[test]
fn rollback_keeps_blocks_another_live_session_relies_on() {
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(dir.path()).unwrap();
    let shared = cid_of_block(CidVersion::V1, RAW, b"shared");
    let mut a = store.writer();
    a.put(&shared, b"shared").unwrap(); // added by A
    let mut b = store.writer();
    b.put(&shared, b"shared").unwrap(); // found present by B
    drop(a);
    assert!(store.has_block(&shared).unwrap(), "B still relies on it");
    b.commit(&[shared]).unwrap();
    assert!(store.is_pinned(&shared).unwrap());
    assert!(store.has_block(&shared).unwrap());
}

#[test]
fn gc_spares_blocks_of_a_live_session() {
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(dir.path()).unwrap();
    let cid = cid_of_block(CidVersion::V1, RAW, b"in flight");
    let mut w = store.writer();
    w.put(&cid, b"in flight").unwrap();
    let report = store.gc().unwrap();
    assert_eq!(report.blocks_freed, 0);
    assert!(store.has_block(&cid).unwrap());
    w.commit(&[]).unwrap();
    // Committed without a pin: now it is garbage.
    assert_eq!(store.gc().unwrap().blocks_freed, 1);
}

#[test]
fn failed_import_leaves_nothing() {
    struct Failing(usize);
    impl Read for Failing {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.0 == 0 {
                return Err(std::io::Error::other("disk on fire"));
            }
            let n = buf.len().min(self.0);
            buf[..n].fill(1);
            self.0 -= n;
            Ok(n)
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(dir.path()).unwrap();
    let err = store.import_reader(Failing(3 << 20), &ImportOptions::kubo_v0()).unwrap_err();
    assert!(err.local().is_some(), "{err}");
    assert_eq!(store.stats().unwrap(), Default::default());
}

#[test]
fn invalid_options_are_the_callers_fault() {
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(dir.path()).unwrap();
    for opts in [
        ImportOptions { raw_leaves: true, ..ImportOptions::kubo_v0() },
        ImportOptions { chunk_size: 0, ..ImportOptions::kubo_v0() },
        ImportOptions { chunk_size: (1 << 20) + 1, ..ImportOptions::kubo_v0() },
        ImportOptions { max_links: 1, ..ImportOptions::kubo_v0() },
    ] {
        let err = store.import_bytes(b"x", &opts).unwrap_err();
        assert!(matches!(err.request(), Some(RequestError::InvalidOptions(_))), "{err}");
    }
}
