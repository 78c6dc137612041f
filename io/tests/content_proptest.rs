//! Properties over random trees: import → export round trips, CAR export → import into a fresh
//! store, GC keeps exactly what pins reach, and hostile bytes never panic nor leave residue.
#![allow(clippy::unwrap_used)]

#[path = "content_support.rs"]
mod support;

use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::path::Path;

use gadus_io::content::{
    CarImportOptions, CarLimits, ContentStore, ImportOptions, hash_path, read_car,
};
use proptest::prelude::*;
use support::*;

#[derive(Debug, Clone)]
enum Tree {
    File { seed: u64, len: usize },
    Dir(BTreeMap<String, Tree>),
}

fn name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_.-]{1,10}".prop_filter("not . or ..", |n| n != "." && n != "..")
}

fn tree() -> impl Strategy<Value = Tree> {
    let file = (any::<u64>(), prop_oneof![4 => 0usize..3_000, 1 => 3_000usize..60_000])
        .prop_map(|(seed, len)| Tree::File { seed, len });
    file.prop_recursive(3, 30, 5, |inner| {
        prop::collection::btree_map(name(), inner, 0..5).prop_map(Tree::Dir)
    })
}

fn root_dir() -> impl Strategy<Value = BTreeMap<String, Tree>> {
    prop::collection::btree_map(name(), tree(), 0..6)
}

/// Layouts that make multi-chunk files and deep DAGs cheap (small chunks, few links), plus
/// Kubo's defaults for both CID versions.
fn options() -> impl Strategy<Value = ImportOptions> {
    (
        any::<bool>(),
        prop::sample::select(vec![(256usize, 2usize), (1000, 3), (4096, 174), (262_144, 174)]),
    )
        .prop_map(|(v1, (chunk_size, max_links))| {
            let base = if v1 { ImportOptions::kubo_v1() } else { ImportOptions::kubo_v0() };
            ImportOptions { chunk_size, max_links, ..base }
        })
}

fn write(path: &Path, tree: &Tree) {
    match tree {
        Tree::File { seed, len } => std::fs::write(path, seeded_bytes(*seed, *len)).unwrap(),
        Tree::Dir(entries) => {
            std::fs::create_dir(path).unwrap();
            for (name, child) in entries {
                write(&path.join(name), child);
            }
        }
    }
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(config(40))]

    #[test]
    fn import_export_round_trip(entries in root_dir(), opts in options()) {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        write(&src, &Tree::Dir(entries));
        let store = ContentStore::open(dir.path().join("db")).unwrap();
        let imported = store.import_path(&src, &opts).unwrap();
        // Only-hash computes the same CID without storing.
        prop_assert_eq!(hash_path(&src, &opts).unwrap(), imported);
        let out = dir.path().join("out");
        store.export(&imported.cid, &out).unwrap();
        prop_assert_eq!(snapshot(&out), snapshot(&src));
    }

    #[test]
    fn car_round_trip_into_a_fresh_store(entries in root_dir(), opts in options()) {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        write(&src, &Tree::Dir(entries));
        let store = ContentStore::open(dir.path().join("db")).unwrap();
        let root = store.import_path(&src, &opts).unwrap().cid;
        let mut car = Vec::new();
        let exported = store.export_car(&root, &mut car).unwrap();
        prop_assert_eq!(exported.bytes, car.len() as u64);

        let fresh = ContentStore::open(dir.path().join("fresh")).unwrap();
        let imported = fresh.import_car(&car[..], &CarImportOptions::default()).unwrap();
        prop_assert_eq!(imported.roots, vec![root]);
        prop_assert_eq!(imported.blocks, exported.blocks);
        // Every block of the source is now in the fresh store, and the tree exports equal.
        prop_assert_eq!(fresh.stats().unwrap().blocks, store.stats().unwrap().blocks);
        let out = dir.path().join("out");
        fresh.export(&root, &out).unwrap();
        prop_assert_eq!(snapshot(&out), snapshot(&src));
    }

    #[test]
    fn gc_keeps_exactly_what_pins_reach(
        files in prop::collection::vec((any::<u64>(), 0usize..20_000, any::<bool>()), 1..8),
        v1 in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let base = if v1 { ImportOptions::kubo_v1() } else { ImportOptions::kubo_v0() };
        let opts = ImportOptions { chunk_size: 1024, max_links: 3, ..base };
        // Seeds mod 3 make some files identical, so pinned and unpinned DAGs share blocks.
        let imported: Vec<_> = files
            .iter()
            .map(|&(seed, len, pin)| {
                let data = seeded_bytes(seed % 3, len);
                (store.import_bytes(&data, &opts.clone().with_pin(pin)).unwrap(), data, pin)
            })
            .collect();
        let mut live = HashSet::new();
        for (i, _, pin) in &imported {
            if *pin {
                let mut car = Vec::new();
                store.export_car(&i.cid, &mut car).unwrap();
                read_car(&car[..], CarLimits::default(), |cid, _| {
                    live.insert(cid.hash().to_bytes());
                    Ok(())
                })
                .unwrap();
            }
        }
        store.gc().unwrap();
        prop_assert_eq!(store.stats().unwrap().blocks, live.len() as u64);
        for (i, data, pin) in &imported {
            prop_assert_eq!(store.has_block(&i.cid).unwrap(), live.contains(&i.cid.hash().to_bytes()));
            if *pin {
                let mut got = Vec::new();
                store.cat(&i.cid, "").unwrap().read_to_end(&mut got).unwrap();
                prop_assert_eq!(&got, data);
            }
        }
        prop_assert_eq!(store.gc().unwrap().blocks_freed, 0);
    }

    #[test]
    fn mutated_cars_never_panic_and_leave_nothing_on_error(
        seed in any::<u64>(),
        len in 0usize..5_000,
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..4),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path().join("db")).unwrap();
        let opts = ImportOptions { chunk_size: 512, max_links: 2, ..ImportOptions::kubo_v1() };
        let root = store.import_bytes(&seeded_bytes(seed, len), &opts).unwrap().cid;
        let mut car = Vec::new();
        store.export_car(&root, &mut car).unwrap();
        for (at, byte, kind) in edits {
            let i = at.index(car.len());
            match kind {
                0 => car[i] ^= byte | 1,     // flip
                1 => car.truncate(i),        // cut
                _ => car.insert(i, byte),    // insert
            }
            if car.is_empty() {
                break;
            }
        }
        let fresh = ContentStore::open(dir.path().join("fresh")).unwrap();
        if fresh.import_car(&car[..], &CarImportOptions::default()).is_err() {
            prop_assert_eq!(fresh.stats().unwrap().blocks, 0);
        }
    }

    #[test]
    fn random_dag_pb_blocks_never_panic(
        raw in prop::collection::vec(any::<u8>(), 0..300),
        kind in 0u64..7,
        data in prop::option::of(prop::collection::vec(any::<u8>(), 0..64)),
        filesize in prop::option::of(0u64..10_000),
        names in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..6), 0..4),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path().join("db")).unwrap();
        let leaf = put_raw(&store, b"leaf");
        // Arbitrary bytes, and well-framed nodes with arbitrary UnixFS contents and link names.
        let arbitrary = put_pb(&store, &raw);
        let links: Vec<_> = names.iter().map(|n| (n.as_slice(), leaf, 4)).collect();
        let framed = put_pb(&store, &pb_node(&links, &unixfs(kind, data.as_deref(), filesize, &[4], Some(256))));
        let nested = put_dir(&store, &[(b"x", arbitrary), (b"y", framed)]);
        for (i, cid) in [arbitrary, framed, nested].into_iter().enumerate() {
            let _ = store.stat(&cid);
            let _ = store.ls(&cid, "");
            let _ = store.resolve(&cid, "x/y");
            if let Ok(mut r) = store.cat(&cid, "") {
                let mut sink = Vec::new();
                let _ = r.read_to_end(&mut sink);
            }
            let jail = dir.path().join(format!("jail{i}"));
            std::fs::create_dir(&jail).unwrap();
            let _ = store.export(&cid, &jail.join("out"));
            // Whatever happened, nothing escaped the jail.
            let outside: Vec<_> = std::fs::read_dir(&jail).unwrap().map(|e| e.unwrap().file_name()).collect();
            prop_assert!(outside.iter().all(|n| n == "out"), "{:?}", outside);
            let mut car = Vec::new();
            let _ = store.export_car(&cid, &mut car);
        }
    }
}
