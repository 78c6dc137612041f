//! `gadus_io::archive`: deterministic packing round-trips, and hostile archives (built here
//! byte by byte with raw tar headers, the way an attacker would) are refused without a byte
//! landing outside the destination.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;
use gadus_io::archive::{UnpackError, UnpackLimits, pack_tar_gz, safe_unpack_tar_gz};
use tar::{EntryType, Header};

/// A raw header whose name is written byte for byte (no validation by the tar crate).
fn raw_header(name: &str, kind: EntryType, size: u64, link: Option<&str>) -> Header {
    let mut h = Header::new_old();
    let old = h.as_old_mut();
    old.name[..name.len()].copy_from_slice(name.as_bytes());
    if let Some(link) = link {
        old.linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_cksum();
    h
}

/// Builds a tar.gz from `(name, kind, data, link)` entries.
fn hostile(entries: &[(&str, EntryType, &[u8], Option<&str>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
    for (name, kind, data, link) in entries {
        let h = raw_header(name, *kind, data.len() as u64, *link);
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap()
}

/// A sandbox: `<tmp>/dest` is where archives go; nothing else may appear under `<tmp>`.
struct Sandbox {
    tmp: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Self {
        Sandbox { tmp: tempfile::tempdir().unwrap() }
    }
    fn dest(&self) -> PathBuf {
        self.tmp.path().join("dest")
    }
    /// Everything under `<tmp>` except `dest` itself.
    fn outside(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.tmp.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p != &self.dest())
            .collect()
    }
    fn unpack(&self, bytes: &[u8], limits: &UnpackLimits) -> Result<(), UnpackError> {
        safe_unpack_tar_gz(bytes, &self.dest(), limits).map(|_| ())
    }
}

fn write(path: &Path, data: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::File::create(path).unwrap().write_all(data).unwrap();
}

fn tree(root: &Path) -> Vec<(String, Option<Vec<u8>>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            if meta.is_dir() {
                out.push((rel, None));
                stack.push(p);
            } else if meta.file_type().is_symlink() {
                let t = std::fs::read_link(&p).unwrap();
                out.push((rel, Some(format!("-> {}", t.display()).into_bytes())));
            } else {
                out.push((rel, Some(std::fs::read(&p).unwrap())));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn round_trip_preserves_tree_and_is_deterministic() {
    let src = tempfile::tempdir().unwrap();
    write(&src.path().join("stdout"), b"hello\n");
    write(&src.path().join("exitCode"), b"0");
    write(&src.path().join("outputs/a/b/c.txt"), b"deep");
    write(&src.path().join("outputs/big.bin"), &vec![7u8; 3 * 1024 * 1024 + 17]);
    std::fs::create_dir_all(src.path().join("outputs/empty")).unwrap();
    let long = "x".repeat(150);
    write(&src.path().join(format!("outputs/{long}")), b"long name");
    #[cfg(unix)]
    std::os::unix::fs::symlink("a/b/c.txt", src.path().join("outputs/link")).unwrap();

    let one = pack_tar_gz(src.path(), Vec::new()).unwrap();
    let two = pack_tar_gz(src.path(), Vec::new()).unwrap();
    assert_eq!(one, two, "packing is deterministic");

    let sb = Sandbox::new();
    let stats = safe_unpack_tar_gz(&one[..], &sb.dest(), &UnpackLimits::default()).unwrap();
    assert_eq!(tree(src.path()), tree(&sb.dest()));
    assert!(stats.bytes >= 3 * 1024 * 1024);
    assert!(sb.outside().is_empty());

    // Entries carry no owner or time.
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(&one[..]));
    let names: Vec<String> = ar
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let h = e.header();
            assert_eq!(h.mtime().unwrap(), 0);
            assert_eq!(h.uid().unwrap(), 0);
            assert!(h.username().unwrap().unwrap_or("").is_empty());
            e.path().unwrap().to_string_lossy().into_owned()
        })
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names[0], "exitCode");
    assert!(names.contains(&"outputs/a/b/c.txt".to_string()));
    assert_eq!(names.len(), sorted.len());
}

#[test]
fn zip_slip_parent_path_is_refused() {
    let sb = Sandbox::new();
    let ar = hostile(&[
        ("ok.txt", EntryType::Regular, b"fine", None),
        ("../evil", EntryType::Regular, b"pwned", None),
    ]);
    let err = sb.unpack(&ar, &UnpackLimits::default()).unwrap_err();
    assert!(matches!(&err, UnpackError::ParentComponent { entry } if entry == "../evil"), "{err}");
    assert!(sb.outside().is_empty(), "{:?}", sb.outside());
    // Nested traversal too.
    let ar = hostile(&[("a/../../evil2", EntryType::Regular, b"pwned", None)]);
    assert!(matches!(
        sb.unpack(&ar, &UnpackLimits::default()),
        Err(UnpackError::ParentComponent { .. })
    ));
    assert!(sb.outside().is_empty());
}

#[test]
fn absolute_path_is_refused() {
    let sb = Sandbox::new();
    let target = format!("/tmp/gadus-archive-test-{}-abs", std::process::id());
    let ar = hostile(&[(target.as_str(), EntryType::Regular, b"pwned", None)]);
    let err = sb.unpack(&ar, &UnpackLimits::default()).unwrap_err();
    assert!(matches!(&err, UnpackError::AbsolutePath { entry } if *entry == target), "{err}");
    assert!(!Path::new(&target).exists());
    assert!(sb.outside().is_empty());
}

#[test]
fn symlink_out_then_file_through_it_is_refused() {
    let sb = Sandbox::new();
    let marker = format!("gadus-archive-test-{}-link", std::process::id());
    let through = format!("evil/tmp/{marker}");
    let ar = hostile(&[
        ("evil", EntryType::Symlink, b"", Some("/")),
        (through.as_str(), EntryType::Regular, b"pwned", None),
    ]);
    let err = sb.unpack(&ar, &UnpackLimits::default()).unwrap_err();
    assert!(matches!(&err, UnpackError::EscapingLink { entry, .. } if entry == "evil"), "{err}");
    assert!(!Path::new("/tmp").join(&marker).exists());
    assert!(sb.outside().is_empty());

    // A relative link climbing out, then a file through it.
    let ar = hostile(&[
        ("sub/up", EntryType::Symlink, b"", Some("../..")),
        ("sub/up/escaped", EntryType::Regular, b"pwned", None),
    ]);
    let err = sb.unpack(&ar, &UnpackLimits::default()).unwrap_err();
    assert!(matches!(&err, UnpackError::EscapingLink { entry, .. } if entry == "sub/up"), "{err}");
    assert!(sb.outside().is_empty(), "{:?}", sb.outside());
}

#[test]
fn chained_symlinks_cannot_lead_out() {
    // Each link looks harmless on its own (`d/l -> ..` is the root), but `d/l/l2 -> ..` sits in
    // the root through the first link and points at its parent. The sandboxed directory handle
    // must refuse the file written through the chain.
    let sb = Sandbox::new();
    let ar = hostile(&[
        ("d/", EntryType::Directory, b"", None),
        ("d/l", EntryType::Symlink, b"", Some("..")),
        ("d/l/l2", EntryType::Symlink, b"", Some("..")),
        ("d/l/l2/escaped", EntryType::Regular, b"pwned", None),
    ]);
    let err = sb.unpack(&ar, &UnpackLimits::default()).unwrap_err();
    assert!(matches!(&err, UnpackError::Write { .. } | UnpackError::EscapingLink { .. }), "{err}");
    assert!(sb.outside().is_empty(), "{:?}", sb.outside());
}

#[test]
fn escaping_links_are_refused_even_without_a_file_through_them() {
    // `d/l -> ..` is the root (allowed), but `x -> d/l/..` climbs out through it: no link that
    // could lead outside may remain in the destination.
    let sb = Sandbox::new();
    let ar = hostile(&[
        ("d/", EntryType::Directory, b"", None),
        ("d/l", EntryType::Symlink, b"", Some("..")),
        ("x", EntryType::Symlink, b"", Some("d/l/..")),
    ]);
    let err = sb.unpack(&ar, &UnpackLimits::default()).unwrap_err();
    assert!(matches!(&err, UnpackError::EscapingLink { entry, .. } if entry == "x"), "{err}");
    assert!(std::fs::symlink_metadata(sb.dest().join("x")).is_err());

    // Links inside the tree that only descend (after climbing no higher than their folder)
    // are fine.
    let sb = Sandbox::new();
    let ar = hostile(&[
        ("a/b/f.txt", EntryType::Regular, b"data", None),
        ("a/c/up", EntryType::Symlink, b"", Some("../b/f.txt")),
        ("top", EntryType::Symlink, b"", Some("a/b")),
        ("top/g.txt", EntryType::Regular, b"via link", None),
    ]);
    sb.unpack(&ar, &UnpackLimits::default()).unwrap();
    assert_eq!(std::fs::read(sb.dest().join("a/c/up")).unwrap(), b"data");
    assert_eq!(std::fs::read(sb.dest().join("a/b/g.txt")).unwrap(), b"via link");
    assert!(sb.outside().is_empty());
}

#[test]
fn hard_links_and_special_files_are_refused() {
    let sb = Sandbox::new();
    let ar = hostile(&[("passwd", EntryType::Link, b"", Some("/etc/passwd"))]);
    let err = sb.unpack(&ar, &UnpackLimits::default()).unwrap_err();
    assert!(matches!(&err, UnpackError::HardLink { entry } if entry == "passwd"), "{err}");

    for kind in [EntryType::Char, EntryType::Block, EntryType::Fifo] {
        let ar = hostile(&[("dev", kind, b"", None)]);
        let err = sb.unpack(&ar, &UnpackLimits::default()).unwrap_err();
        assert!(matches!(&err, UnpackError::SpecialFile { entry, .. } if entry == "dev"), "{err}");
    }
    assert!(!sb.dest().join("dev").exists());
    assert!(sb.outside().is_empty());
}

#[test]
fn gzip_bomb_beyond_total_bytes_is_refused() {
    let sb = Sandbox::new();
    // 8 MiB of zeros compresses to a few KiB.
    let zeros = vec![0u8; 8 * 1024 * 1024];
    let ar = hostile(&[("bomb", EntryType::Regular, &zeros, None)]);
    assert!(ar.len() < 64 * 1024);
    let limits = UnpackLimits { max_total_bytes: 1024 * 1024, ..UnpackLimits::default() };
    let err = sb.unpack(&ar, &limits).unwrap_err();
    assert!(matches!(&err, UnpackError::TooLarge { entry, .. } if entry == "bomb"), "{err}");

    // Many small files that together cross the limit.
    let chunk = vec![1u8; 300 * 1024];
    let ar = hostile(&[
        ("a", EntryType::Regular, &chunk, None),
        ("b", EntryType::Regular, &chunk, None),
        ("c", EntryType::Regular, &chunk, None),
        ("d", EntryType::Regular, &chunk, None),
    ]);
    let err = sb.unpack(&ar, &limits).unwrap_err();
    assert!(matches!(&err, UnpackError::TooLarge { entry, .. } if entry == "d"), "{err}");
    assert!(sb.outside().is_empty());
}

#[test]
fn too_many_entries_is_refused() {
    let sb = Sandbox::new();
    let names: Vec<String> = (0..20).map(|i| format!("f{i}")).collect();
    let entries: Vec<_> =
        names.iter().map(|n| (n.as_str(), EntryType::Regular, &b"x"[..], None)).collect();
    let ar = hostile(&entries);
    let limits = UnpackLimits { max_entries: 10, ..UnpackLimits::default() };
    let err = sb.unpack(&ar, &limits).unwrap_err();
    assert!(
        matches!(&err, UnpackError::TooManyEntries { entry, limit: 10 } if entry == "f10"),
        "{err}"
    );
    assert!(sb.outside().is_empty());
}

#[test]
fn garbage_is_malformed() {
    let sb = Sandbox::new();
    let err = sb.unpack(b"this is not gzip at all", &UnpackLimits::default()).unwrap_err();
    assert!(matches!(err, UnpackError::Malformed(_)), "{err}");
}
