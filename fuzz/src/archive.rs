//! Untrusted archives and inline data: tar.gz unpacking and `data:` URLs.

use std::io::Write;

use base64::Engine as _;
use flate2::Compression;
use flate2::write::GzEncoder;
use gadus_io::archive::{UnpackLimits, pack_tar_gz, safe_unpack_tar_gz};
use gadus_io::storage::inline::{MAX_INLINE_BYTES, parse_data_url};

use crate::files::{self, Entry, Scratch};
use crate::text;

/// Small enough that a gzip bomb is refused in milliseconds.
const LIMITS: UnpackLimits = UnpackLimits { max_total_bytes: 1 << 20, max_entries: 256 };

/// Input: one mode byte, then the archive: with an even mode byte the rest is a plain tar the
/// harness gzips (so mutations reach the tar structure instead of breaking the gzip CRC),
/// with an odd one it is the tar.gz itself. Unpacks into `dest` next to a canary file and
/// directory and checks: nothing appears or changes outside `dest`; inside, only
/// directories, regular files (no hard links, modes 0644/0755) and symlinks that resolve
/// inside `dest`; the limits hold; and a successful unpack, packed again with `pack_tar_gz`,
/// unpacks to the same tree and packs to the same bytes (packing is deterministic).
pub fn tar_gz(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    let archive = if mode & 1 == 0 { gzip(rest) } else { rest.to_vec() };
    let scratch = Scratch::new();
    let canary = files::plant_canary(scratch.path());
    let dest = scratch.path().join("dest");
    let result = safe_unpack_tar_gz(&archive[..], &dest, &LIMITS);
    files::assert_only_dest_and_canary(scratch.path(), &canary);
    // `dest` is created before the first entry is read, so it exists even on error.
    let tree = files::snapshot(&dest);
    files::assert_links_inside(&dest, &tree);
    let mut on_disk = 0u64;
    for (rel, entry) in &tree {
        match entry {
            Entry::File { bytes, mode } => {
                on_disk += bytes.len() as u64;
                if result.is_ok() {
                    assert!(
                        *mode == 0o644 || *mode == 0o755,
                        "{} has mode {mode:o}",
                        rel.display()
                    );
                }
            }
            Entry::Dir | Entry::Symlink(_) => {}
            Entry::Other(kind) => panic!("unpacking created a {kind} at {}", rel.display()),
        }
    }
    // Even a refused archive never leaves more than the limit on disk (the entry that crosses
    // it is cut one byte past the limit, which is how the crossing is noticed).
    assert!(on_disk <= LIMITS.max_total_bytes + 1, "{on_disk} bytes on disk");
    let stats = match result {
        Ok(stats) => stats,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    assert!(stats.entries <= LIMITS.max_entries);
    // Later entries may overwrite earlier files, so disk can hold less than was written.
    assert!(on_disk <= stats.bytes && stats.bytes <= LIMITS.max_total_bytes, "{stats:?}");

    let packed = pack_tar_gz(&dest, Vec::new()).expect("pack_tar_gz packs what was unpacked");
    let dest2 = scratch.path().join("again");
    // The repacked archive lists implicit parent directories as entries of their own.
    let roomy = UnpackLimits { max_entries: u64::MAX, ..LIMITS };
    let again = safe_unpack_tar_gz(&packed[..], &dest2, &roomy);
    assert!(again.is_ok(), "our own archive is refused: {again:?}");
    assert_eq!(files::snapshot(&dest2), tree, "unpack(pack(tree)) differs from tree");
    let packed2 = pack_tar_gz(&dest2, Vec::new()).expect("pack again");
    assert!(packed2 == packed, "packing the same tree twice gave different bytes");
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
    gz.write_all(data).expect("write to memory");
    gz.finish().expect("finish a gzip stream in memory")
}

/// Any text as an `inline` input's URL: a decoded payload is within the limit and never
/// longer than its encoding, and the same bytes written as base64 and as %-escapes decode
/// back to themselves.
pub fn data_url(data: &[u8]) {
    let Some(s) = text(data) else { return };
    let url = match parse_data_url(s) {
        Ok(url) => url,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let payload = s.split_once(',').map_or("", |(_, p)| p);
    assert!(url.data.len() <= MAX_INLINE_BYTES);
    assert!(url.data.len() <= payload.len(), "decoding expanded {} bytes", payload.len());
    assert!(!url.media_type.is_empty() && url.media_type == url.media_type.trim());
    let b64 = base64::engine::general_purpose::STANDARD.encode(&url.data);
    let again = parse_data_url(&format!("data:application/octet-stream;base64,{b64}"));
    assert_eq!(again.map(|u| u.data).as_ref(), Ok(&url.data), "base64 round trip");
    if url.data.len() * 3 <= MAX_INLINE_BYTES {
        let escaped: String = url.data.iter().map(|b| format!("%{b:02X}")).collect();
        let again = parse_data_url(&format!("DATA:text/plain,{escaped}"));
        assert_eq!(again.map(|u| u.data).as_ref(), Ok(&url.data), "%-escape round trip");
    }
}
