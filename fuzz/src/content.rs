//! The IPFS-compatible content store: CAR v1, dag-pb/UnixFS blocks, content paths.

use std::io::Read;
use std::sync::{Mutex, OnceLock, PoisonError};

use bytes::Bytes;
use cid::Cid;
use gadus_io::content::{
    CarDecoder, CarLimits, CidVersion, ContentStore, DAG_PB, EntryKind, ExportOptions,
    MAX_BLOCK_SIZE, RAW, cid_of_block, encode_car_header, parse_content_path, read_car,
    verify_block,
};

use crate::files::{self, Scratch};
use crate::text;

const CAR_LIMITS: CarLimits = CarLimits {
    max_header: 64 * 1024,
    max_roots: 1024,
    max_total_bytes: u64::MAX,
    max_blocks: 100_000,
};

type Blocks = Vec<(Cid, Bytes)>;

/// Decodes a CAR in one go (`read_car`) and pushed in small pieces (`CarDecoder`): both give
/// the same roots and blocks (or both fail after the same blocks); every block is verified
/// and within the block limit; and the roots and blocks, written out again with
/// `encode_car_header` and plain sections, read back the same.
pub fn car(data: &[u8]) {
    let (whole, blocks) = read_all(data);
    let (pieces, piece_blocks) = read_in_pieces(data, 1 + data.len() % 17);
    assert_eq!(whole.is_ok(), pieces.is_ok(), "read_car {whole:?} vs CarDecoder {pieces:?}");
    assert_eq!(blocks, piece_blocks, "both decoders yield the same blocks");
    if let (Ok(a), Ok(b)) = (&whole, &pieces) {
        assert_eq!(a, b, "both decoders see the same roots");
    }
    let mut block_bytes = 0;
    for (cid, block) in &blocks {
        assert!(block.len() <= MAX_BLOCK_SIZE);
        assert!(verify_block(cid, block).is_ok(), "an unverified block came out: {cid}");
        block_bytes += block.len();
    }
    assert!(block_bytes <= data.len(), "blocks are slices of the input");
    let Ok(roots) = whole else { return };
    assert!(roots.len() <= CAR_LIMITS.max_roots);
    let mut again = encode_car_header(&roots);
    for (cid, block) in &blocks {
        let cid_bytes = cid.to_bytes();
        put_varint(&mut again, (cid_bytes.len() + block.len()) as u64);
        again.extend_from_slice(&cid_bytes);
        again.extend_from_slice(block);
    }
    let (roots2, blocks2) = read_all(&again);
    assert_eq!(roots2.as_ref().ok(), Some(&roots), "re-encoded CAR: {roots2:?}");
    assert_eq!(blocks2, blocks);
}

fn read_all(data: &[u8]) -> (gadus_io::content::Result<Vec<Cid>>, Blocks) {
    let mut blocks = Vec::new();
    let roots = read_car(data, CAR_LIMITS, |cid, block| {
        blocks.push((cid, block));
        Ok(())
    });
    (roots, blocks)
}

fn read_in_pieces(data: &[u8], piece: usize) -> (gadus_io::content::Result<Vec<Cid>>, Blocks) {
    let mut decoder = CarDecoder::new(CAR_LIMITS);
    let mut blocks = Vec::new();
    let mut run = || -> gadus_io::content::Result<Vec<Cid>> {
        for chunk in data.chunks(piece) {
            decoder.push(chunk)?;
            while let Some(block) = decoder.next_block()? {
                blocks.push(block);
            }
        }
        decoder.finish()?;
        assert_eq!(decoder.blocks(), blocks.len() as u64);
        Ok(decoder.roots()?.expect("finish succeeded, so the header was read").to_vec())
    };
    let roots = run();
    (roots, blocks)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

// ------------------------------------------------------------------------------- unixfs

/// One store per process (opening fjall per input would dominate the run). Every input's
/// blocks are written in one session that is rolled back afterwards, so each input starts
/// from an empty store: the target stays deterministic.
fn store() -> &'static Mutex<ContentStore> {
    static STORE: OnceLock<Mutex<ContentStore>> = OnceLock::new();
    STORE.get_or_init(|| {
        let dir = files::root().join("store");
        Mutex::new(ContentStore::open(&dir).expect("open the scratch content store"))
    })
}

/// Largest file read by `cat` per input (a DAG may reuse one subtree to expand enormously).
const CAT_LIMIT: u64 = 4 << 20;
const EXPORT_LIMITS: ExportOptions = ExportOptions { max_bytes: 4 << 20, max_entries: 2_000 };

/// Input: records `flags:u8 len:u16be bytes[len]` (the last one may be short), each one
/// block; the harness names each block by its real CID (flags bit 0: raw instead of dag-pb,
/// bit 1: CIDv1), so links between blocks can be real. Identity CIDs inside blocks (the
/// digest *is* the block) let the fuzzer nest blocks without hashing. The first block is the
/// root. Reads it back every way the API offers and checks what the docs promise: `stat`,
/// `ls` and `resolve` agree, `cat` produces exactly the declared size, an export stays inside
/// its destination, matches its report, and leaves nothing behind when it fails.
pub fn unixfs(data: &[u8]) {
    let blocks = parse_blocks(data);
    let Some(&(root, _)) = blocks.first() else { return };
    let store = store().lock().unwrap_or_else(PoisonError::into_inner);
    let mut session = store.writer();
    for (cid, block) in &blocks {
        session.put(cid, block).expect("a block under its own CID is accepted");
    }
    read_back(&store, &root);
    session.rollback(); // the store is empty again
}

fn parse_blocks(mut data: &[u8]) -> Vec<(Cid, Vec<u8>)> {
    let mut out = Vec::new();
    while let Some((&flags, rest)) = data.split_first() {
        if out.len() == 64 {
            break;
        }
        let (len, rest) = match rest {
            [a, b, rest @ ..] => (usize::from(u16::from_be_bytes([*a, *b])), rest),
            _ => (rest.len(), rest),
        };
        let (block, rest) = rest.split_at(len.min(rest.len()));
        data = rest;
        let codec = if flags & 1 == 1 { RAW } else { DAG_PB };
        let version = if flags & 2 == 2 || codec == RAW { CidVersion::V1 } else { CidVersion::V0 };
        out.push((cid_of_block(version, codec, block), block.to_vec()));
    }
    out
}

fn read_back(store: &ContentStore, root: &Cid) {
    let _ = store.first_missing(root);
    if let Ok(stat) = store.stat(root) {
        match stat.kind {
            EntryKind::File => cat_all(store, root, stat.size),
            EntryKind::Directory => list(store, root),
            EntryKind::Symlink => assert!(stat.size.is_some()),
        }
    }
    let scratch = Scratch::new();
    let dest = scratch.path().join("dest");
    let canary = files::plant_canary(scratch.path());
    let exported = store.export_with(root, &dest, &EXPORT_LIMITS);
    files::assert_only_dest_and_canary(scratch.path(), &canary);
    match exported {
        Ok(report) => {
            let tree = files::snapshot(&dest);
            let (mut files_, mut dirs, mut links, mut bytes) = (0, 0, 0, 0);
            for entry in tree.values() {
                match entry {
                    files::Entry::File { bytes: b, .. } => {
                        files_ += 1;
                        bytes += b.len() as u64;
                    }
                    files::Entry::Dir => dirs += 1,
                    files::Entry::Symlink(_) => links += 1,
                    files::Entry::Other(kind) => panic!("export created a {kind}"),
                }
            }
            assert_eq!((report.files, report.directories, report.symlinks), (files_, dirs, links));
            assert_eq!(report.bytes, bytes, "the report counts the bytes on disk");
            assert!(bytes <= EXPORT_LIMITS.max_bytes);
            assert!(files_ + dirs + links <= EXPORT_LIMITS.max_entries);
            files::assert_links_inside(&dest, &tree);
        }
        Err(e) => {
            let _ = e.to_string();
            // "On error, whatever was written under `dest` is removed again."
            assert!(
                std::fs::symlink_metadata(&dest).is_err(),
                "a failed export ({e}) left {}",
                dest.display()
            );
        }
    }
}

fn cat_all(store: &ContentStore, root: &Cid, size: Option<u64>) {
    let Ok(mut reader) = store.cat(root, "") else { return };
    if let Some(declared) = reader.declared_size() {
        assert_eq!(Some(declared), size, "cat and stat agree on the size");
    }
    let mut produced = 0u64;
    loop {
        match reader.next_chunk() {
            Ok(Some(chunk)) => {
                // Sizes are checked when a node's subtree ends, so a lying DAG may hand out
                // more than it declared before the error: only a completed read is checked.
                produced += chunk.len() as u64;
                if produced > CAT_LIMIT {
                    return;
                }
            }
            Ok(None) => {
                if let Some(n) = size {
                    assert_eq!(produced, n, "cat produced a different size than declared");
                }
                break;
            }
            Err(e) => {
                let _ = e.to_string();
                return;
            }
        }
    }
    // `Read` gives the same bytes.
    if let Ok(reader) = store.cat(root, "") {
        let mut all = Vec::new();
        let read = reader.take(CAT_LIMIT + 1).read_to_end(&mut all);
        assert!(read.is_ok(), "next_chunk succeeded but read failed: {read:?}");
        assert_eq!(all.len() as u64, produced);
    }
}

fn list(store: &ContentStore, root: &Cid) {
    let Ok(entries) = store.ls(root, "") else { return };
    assert!(entries.windows(2).all(|w| w[0].name <= w[1].name), "ls is sorted by name");
    for (i, entry) in entries.iter().enumerate() {
        let unique = entries.iter().filter(|e| e.name == entry.name).count() == 1;
        let plain = !entry.name.is_empty() && !entry.name.contains('/');
        if unique && plain && entry.name != "." && entry.name != ".." && !entry.name.contains('\0')
        {
            let found = store.resolve(root, &entry.name);
            assert_eq!(found.ok(), Some(entry.cid), "resolve finds what ls lists ({i})");
        }
    }
}

// --------------------------------------------------------------------------- gateway path

/// Any text as a `/ipfs/...` content path: what parses has only plain components, and its
/// canonical spellings (`/ipfs/`, `ipfs://`, bare) parse to the same CID and path.
pub fn gateway_path(data: &[u8]) {
    let Some(s) = text(data) else { return };
    match parse_content_path(s) {
        Ok((cid, inner)) => {
            if !inner.is_empty() {
                for c in inner.split('/') {
                    assert!(
                        !c.is_empty() && c != "." && c != ".." && !c.contains('\0'),
                        "{inner:?}"
                    );
                }
            }
            assert_eq!(Cid::try_from(cid.to_string().as_str()).ok(), Some(cid));
            for form in [
                format!("/ipfs/{cid}/{inner}"),
                format!("ipfs://{cid}/{inner}"),
                format!("{cid}/{inner}"),
                format!("/ipfs/{cid}//{inner}/"),
            ] {
                let again = parse_content_path(&form);
                assert_eq!(again.as_ref().ok(), Some(&(cid, inner.clone())), "{form:?}");
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}
