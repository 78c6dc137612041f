//! CAR v1 export/import: round trips into a fresh store, all-or-nothing refusal of bad CARs,
//! typed errors (never panics) for truncated and garbage input.
#![allow(clippy::unwrap_used)]

#[path = "content_support.rs"]
mod support;

use gadus_io::content::{
    CarImportOptions, CarLimits, CidVersion, ContentError, ContentStore, ImportOptions, RAW,
    RequestError, UntrustedError, cid_of_block, read_car,
};
use support::*;

/// A store holding a small tree; returns (store dir guard, store, root, CAR bytes).
fn fixture(opts: &ImportOptions) -> (tempfile::TempDir, ContentStore, cid::Cid, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let files = vec![
        ("a".to_string(), b"hello world".to_vec()),
        ("b/c.bin".to_string(), seeded_bytes(21, 700_000)),
        ("b/same-as-a".to_string(), b"hello world".to_vec()),
    ];
    write_tree(&dir.path().join("src"), &files, &[]);
    let store = ContentStore::open(dir.path().join("db")).unwrap();
    let root = store.import_path(dir.path().join("src"), opts).unwrap().cid;
    let mut car = Vec::new();
    store.export_car(&root, &mut car).unwrap();
    (dir, store, root, car)
}

fn cids_in(car: &[u8]) -> Vec<cid::Cid> {
    let mut cids = Vec::new();
    read_car(car, CarLimits::default(), |cid, _| {
        cids.push(cid);
        Ok(())
    })
    .unwrap();
    cids
}

#[test]
fn car_round_trips_into_a_fresh_store() {
    for opts in [ImportOptions::kubo_v0(), ImportOptions::kubo_v1()] {
        let (dir, source, root, car) = fixture(&opts);
        let cids = cids_in(&car);
        assert_eq!(cids[0], root, "depth-first: the root comes first");
        let unique: std::collections::HashSet<_> = cids.iter().collect();
        assert_eq!(unique.len(), cids.len(), "each block once (the two identical files share one)");
        assert_eq!(cids.len() as u64, source.stats().unwrap().blocks);

        let fresh = ContentStore::open(dir.path().join("fresh")).unwrap();
        let imported = fresh.import_car(&car[..], &CarImportOptions::default()).unwrap();
        assert_eq!(imported.roots, vec![root]);
        assert_eq!(imported.blocks, cids.len() as u64);
        assert_eq!(imported.blocks_added, cids.len() as u64);
        assert!(fresh.is_pinned(&root).unwrap());
        fresh.export(&root, &dir.path().join("out")).unwrap();
        assert_eq!(snapshot(&dir.path().join("out")), snapshot(&dir.path().join("src")));

        // Re-exporting from the fresh store gives the same bytes.
        let mut again = Vec::new();
        fresh.export_car(&root, &mut again).unwrap();
        assert_eq!(again, car);
        // Importing twice adds nothing.
        assert_eq!(
            fresh.import_car(&car[..], &CarImportOptions::default()).unwrap().blocks_added,
            0
        );
    }
}

#[test]
fn a_car_with_one_bad_block_stores_nothing() {
    let (dir, _, _, car) = fixture(&ImportOptions::kubo_v0());
    // Flip one byte near the end: inside the last section's block data.
    let mut bad = car.clone();
    let at = bad.len() - 10;
    bad[at] ^= 0x55;
    let fresh = ContentStore::open(dir.path().join("fresh")).unwrap();
    let err = fresh.import_car(&bad[..], &CarImportOptions::default()).unwrap_err();
    assert!(matches!(err.untrusted(), Some(UntrustedError::HashMismatch(_))), "{err}");
    assert_eq!(
        fresh.stats().unwrap(),
        Default::default(),
        "blocks before the bad one were rolled back"
    );
}

#[test]
fn incomplete_dags_are_refused_when_pinning() {
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(dir.path().join("db")).unwrap();
    let present = put_raw(&store, b"present");
    let absent = cid_of_block(CidVersion::V1, RAW, b"absent");
    let root = put_dir(&store, &[(b"p", present), (b"q", absent)]);
    let mut car = Vec::new();
    let err = store.export_car(&root, &mut car).unwrap_err();
    assert!(matches!(err.request(), Some(RequestError::MissingBlock(c)) if *c == absent), "{err}");

    // Hand-build the CAR without the absent block.
    let mut car = gadus_io::content::encode_car_header(&[root]);
    for cid in [root, present] {
        let block = store.get_block(&cid).unwrap().unwrap();
        let cid_bytes = cid.to_bytes();
        varint(&mut car, (cid_bytes.len() + block.len()) as u64);
        car.extend_from_slice(&cid_bytes);
        car.extend_from_slice(&block);
    }
    let fresh = ContentStore::open(dir.path().join("fresh")).unwrap();
    let err = fresh.import_car(&car[..], &CarImportOptions::default()).unwrap_err();
    assert!(
        matches!(err.untrusted(), Some(UntrustedError::Car(m)) if m.contains("incomplete")),
        "{err}"
    );
    assert_eq!(fresh.stats().unwrap().blocks, 0);
    // Without pinning, a partial DAG is acceptable (a gateway may send what we lack).
    let ok = fresh
        .import_car(&car[..], &CarImportOptions { pin_roots: false, ..Default::default() })
        .unwrap();
    assert_eq!(ok.blocks, 2);
    assert!(!fresh.is_pinned(&root).unwrap());
}

#[test]
fn truncated_cars_are_typed_errors_at_every_length() {
    let (dir, _, _, car) = fixture(&ImportOptions { chunk_size: 4096, ..ImportOptions::kubo_v1() });
    let fresh = ContentStore::open(dir.path().join("fresh")).unwrap();
    // Every cut inside the header and the first sections, then a stride through the rest.
    let cuts = (0..600).chain((600..car.len()).step_by(997));
    for cut in cuts {
        let err = fresh.import_car(&car[..cut], &CarImportOptions::default()).unwrap_err();
        assert!(
            matches!(err.untrusted(), Some(UntrustedError::Car(_))),
            "cut at {cut}/{}: {err}",
            car.len()
        );
    }
    assert_eq!(fresh.stats().unwrap().blocks, 0);
}

#[test]
fn garbage_and_absurd_lengths_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(dir.path()).unwrap();
    let header = gadus_io::content::encode_car_header(&[cid_of_block(CidVersion::V1, RAW, b"x")]);
    let mut absurd_section = header.clone();
    absurd_section.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]); // 2^63-ish
    let mut overflow_varint = header.clone();
    overflow_varint.extend_from_slice(&[0xff; 11]);
    let mut bad_cid = header.clone();
    bad_cid.extend_from_slice(&[0x04, 0x07, 0x07, 0x07, 0x07]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("text", b"this is not a CAR file at all, just words".to_vec()),
        ("huge header length", vec![0xff, 0xff, 0xff, 0xff, 0x0f]),
        ("absurd section length", absurd_section),
        ("varint overflow", overflow_varint),
        ("bad section CID", bad_cid),
        ("zero-length section", [header.clone(), vec![0x00]].concat()),
    ];
    for (what, bytes) in cases {
        let err = store.import_car(&bytes[..], &CarImportOptions::default()).unwrap_err();
        assert!(matches!(err.untrusted(), Some(UntrustedError::Car(_))), "{what}: {err}");
    }
    // Random garbage of many sizes: always an error, never a panic.
    let mut rng = Rng::new(99);
    for len in [1usize, 2, 7, 64, 1000, 70_000] {
        let mut bytes = vec![0u8; len];
        rng.fill(&mut bytes);
        assert!(store.import_car(&bytes[..], &CarImportOptions::default()).is_err(), "{len}");
    }
    assert_eq!(store.stats().unwrap().blocks, 0);
}

#[test]
fn limits_bound_the_import() {
    let (dir, _, _, car) = fixture(&ImportOptions::kubo_v0());
    let fresh = ContentStore::open(dir.path().join("fresh")).unwrap();
    let small = CarImportOptions {
        limits: CarLimits { max_total_bytes: 1000, ..CarLimits::default() },
        ..Default::default()
    };
    let err: ContentError = fresh.import_car(&car[..], &small).unwrap_err();
    assert!(matches!(err.request(), Some(RequestError::LimitExceeded(_))), "{err}");
    let few = CarImportOptions {
        limits: CarLimits { max_blocks: 2, ..CarLimits::default() },
        ..Default::default()
    };
    assert!(fresh.import_car(&car[..], &few).is_err());
    assert_eq!(fresh.stats().unwrap().blocks, 0);
}
