//! tar.gz packing of result folders and safe unpacking of untrusted tar.gz archives.
//!
//! Results leave a node as one tar.gz (the s3 publisher's `gzip` encoding, Bacalhau's local
//! publisher), and archives arrive from outside (published results downloaded again, inline
//! inputs). Both directions live here so the one format has one set of rules.
//!
//! **Packing** ([`pack_tar_gz`]) is deterministic: entries sorted by name, mtime 0, uid/gid 0,
//! no user or group names, modes normalised to 0644/0755. The same folder always gives the same
//! bytes, so a re-published result hashes the same. Symlinks are stored as symlinks, never
//! followed: a task that links `/etc/shadow` into its outputs must not publish the host's file.
//! Sockets, FIFOs and device nodes cannot be carried by value and are skipped.
//!
//! **Unpacking** ([`safe_unpack_tar_gz`]) treats every byte as hostile (the `tar` crate's own
//! `unpack` has had traversal advisories: RUSTSEC-2018-0002, -2021-0080, -2026-0067). Entries
//! are iterated one by one and refused — with an [`UnpackError`] naming the entry — if their
//! path is absolute or has a `..` component, if they are hard links, device nodes or FIFOs, if
//! they are symlinks that could resolve outside the destination (absolute targets, climbing
//! out, chains through other links; see `link_stays_inside`), or once the archive
//! exceeds [`UnpackLimits`] (entry count, total uncompressed bytes, counted as the bytes are
//! written so a lying size header does not help). Every write goes through a `cap-std`
//! directory handle on the destination, which refuses to resolve any path outside it, so even
//! a chain of individually harmless symlinks cannot lead a later entry out. A refused archive
//! may leave a partial tree inside the destination; nothing is ever written outside it.

use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};

use cap_std::ambient_authority;
use cap_std::fs::Dir;
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use tar::{EntryType, Header};

/// Bounds on what an untrusted archive may unpack to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnpackLimits {
    /// Total uncompressed bytes of all regular files.
    pub max_total_bytes: u64,
    /// Number of entries (files, directories and links together).
    pub max_entries: u64,
}

impl Default for UnpackLimits {
    /// 10 GiB and 100,000 entries: generous for real results, fatal for a gzip bomb.
    fn default() -> Self {
        UnpackLimits { max_total_bytes: 10 * 1024 * 1024 * 1024, max_entries: 100_000 }
    }
}

/// What an unpack produced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnpackStats {
    /// Entries processed.
    pub entries: u64,
    /// Uncompressed bytes written.
    pub bytes: u64,
}

/// Why an archive was refused. All variants but [`UnpackError::Destination`] and
/// [`UnpackError::Write`] are the archive's fault.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// The archive is not a valid tar.gz (truncated, bad gzip, bad header).
    #[error("malformed archive: {0}")]
    Malformed(#[source] io::Error),
    /// An entry's path is absolute.
    #[error("archive entry {entry:?} has an absolute path")]
    AbsolutePath {
        /// The entry's path as stored.
        entry: String,
    },
    /// An entry's path contains `..`.
    #[error("archive entry {entry:?} has a '..' component")]
    ParentComponent {
        /// The entry's path as stored.
        entry: String,
    },
    /// A symlink whose target is absolute or resolves outside the destination.
    #[error("archive entry {entry:?} is a symlink leaving the destination (-> {target:?})")]
    EscapingLink {
        /// The link's path as stored.
        entry: String,
        /// Its target as stored.
        target: String,
    },
    /// A hard link (refused outright: it could alias any file the process can reach).
    #[error("archive entry {entry:?} is a hard link; hard links are refused")]
    HardLink {
        /// The entry's path as stored.
        entry: String,
    },
    /// A device node, FIFO or other special or unknown entry type.
    #[error("archive entry {entry:?} is a special file ({kind}); refused")]
    SpecialFile {
        /// The entry's path as stored.
        entry: String,
        /// The tar entry type.
        kind: String,
    },
    /// More than [`UnpackLimits::max_entries`] entries.
    #[error("archive has more than {limit} entries (refused at {entry:?})")]
    TooManyEntries {
        /// The first entry beyond the limit.
        entry: String,
        /// The limit.
        limit: u64,
    },
    /// More than [`UnpackLimits::max_total_bytes`] uncompressed.
    #[error("archive unpacks to more than {limit} bytes (refused at {entry:?})")]
    TooLarge {
        /// The entry that crossed the limit.
        entry: String,
        /// The limit.
        limit: u64,
    },
    /// The destination could not be created or opened (our side).
    #[error("cannot open destination {path}: {source}")]
    Destination {
        /// The destination.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// Writing an entry failed: a full disk, or a path the sandboxed directory handle refused
    /// to resolve (an entry reaching outside through links).
    #[error("cannot write archive entry {entry:?}: {source}")]
    Write {
        /// The entry's path as stored.
        entry: String,
        /// Cause.
        #[source]
        source: io::Error,
    },
}

/// Writes `dir`'s tree as a deterministic tar.gz to `writer` and returns the writer once the
/// gzip stream is finished. Paths in the archive are relative to `dir` (no leading `./`).
pub fn pack_tar_gz<W: Write>(dir: &Path, writer: W) -> io::Result<W> {
    let mut builder = tar::Builder::new(GzEncoder::new(writer, Compression::default()));
    // Sorted depth-first walk without following symlinks.
    let mut stack: Vec<PathBuf> = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let mut names: Vec<_> = std::fs::read_dir(dir.join(&rel))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()?;
        names.sort();
        let mut subdirs = Vec::new();
        for name in names {
            let rel_path = rel.join(&name);
            let abs = dir.join(&rel_path);
            let meta = std::fs::symlink_metadata(&abs)?;
            let ft = meta.file_type();
            let mut header = Header::new_gnu();
            header.set_mtime(0);
            header.set_uid(0);
            header.set_gid(0);
            if ft.is_dir() {
                header.set_entry_type(EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                builder.append_data(&mut header, &rel_path, io::empty())?;
                subdirs.push(rel_path);
            } else if ft.is_file() {
                header.set_entry_type(EntryType::Regular);
                header.set_mode(if is_executable(&meta) { 0o755 } else { 0o644 });
                header.set_size(meta.len());
                let file = std::fs::File::open(&abs)?;
                // `take` guards against a file growing while it is packed: the header already
                // promised `len` bytes.
                builder.append_data(&mut header, &rel_path, file.take(meta.len()))?;
            } else if ft.is_symlink() {
                let target = std::fs::read_link(&abs)?;
                header.set_entry_type(EntryType::Symlink);
                header.set_mode(0o777);
                header.set_size(0);
                builder.append_link(&mut header, &rel_path, &target)?;
            }
            // Sockets, FIFOs and devices: skipped (see the module docs).
        }
        // Reverse so the stack pops them in sorted order.
        stack.extend(subdirs.into_iter().rev());
    }
    builder.into_inner()?.finish()
}

#[cfg(unix)]
fn is_executable(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o111 != 0
}

#[cfg(not(unix))]
fn is_executable(_: &std::fs::Metadata) -> bool {
    false
}

/// Unpacks an untrusted tar.gz into `dest` (created if missing) under `limits`; see the module
/// docs for what is refused.
pub fn safe_unpack_tar_gz<R: Read>(
    reader: R,
    dest: &Path,
    limits: &UnpackLimits,
) -> Result<UnpackStats, UnpackError> {
    let dest_err = |source| UnpackError::Destination { path: dest.to_path_buf(), source };
    std::fs::create_dir_all(dest).map_err(dest_err)?;
    let root = Dir::open_ambient_dir(dest, ambient_authority()).map_err(dest_err)?;

    let mut archive = tar::Archive::new(GzDecoder::new(reader));
    let mut stats = UnpackStats::default();
    for entry in archive.entries().map_err(UnpackError::Malformed)? {
        let mut entry = entry.map_err(UnpackError::Malformed)?;
        let raw_path = entry.path_bytes();
        let name = String::from_utf8_lossy(&raw_path).into_owned();
        drop(raw_path);

        stats.entries += 1;
        if stats.entries > limits.max_entries {
            return Err(UnpackError::TooManyEntries { entry: name, limit: limits.max_entries });
        }
        let rel = checked_relative(&entry.path().map_err(UnpackError::Malformed)?, &name)?;
        let kind = entry.header().entry_type();
        let write_err = |source| UnpackError::Write { entry: name.clone(), source };

        match kind {
            EntryType::Directory => {
                if !rel.as_os_str().is_empty() {
                    root.create_dir_all(&rel).map_err(write_err)?;
                }
            }
            EntryType::Regular | EntryType::Continuous => {
                if rel.as_os_str().is_empty() {
                    return Err(UnpackError::SpecialFile { entry: name, kind: "root file".into() });
                }
                let remaining = limits.max_total_bytes - stats.bytes;
                // Refuse early on the declared size, and again on the bytes really read
                // (the header can lie; RUSTSEC-2026-0068).
                if entry.header().size().map_err(UnpackError::Malformed)? > remaining {
                    return Err(UnpackError::TooLarge {
                        entry: name,
                        limit: limits.max_total_bytes,
                    });
                }
                if let Some(parent) = rel.parent().filter(|p| !p.as_os_str().is_empty()) {
                    root.create_dir_all(parent).map_err(write_err)?;
                }
                let file = root.create(&rel).map_err(write_err)?;
                let mut file = file.into_std();
                let mut limited = (&mut entry).take(remaining.saturating_add(1));
                let written = io::copy(&mut limited, &mut file).map_err(|e| {
                    // A read error is the archive's (truncated, corrupt); a write error ours.
                    if e.kind() == io::ErrorKind::UnexpectedEof
                        || e.kind() == io::ErrorKind::InvalidData
                        || e.kind() == io::ErrorKind::InvalidInput
                    {
                        UnpackError::Malformed(e)
                    } else {
                        UnpackError::Write { entry: name.clone(), source: e }
                    }
                })?;
                if written > remaining {
                    return Err(UnpackError::TooLarge {
                        entry: name,
                        limit: limits.max_total_bytes,
                    });
                }
                stats.bytes += written;
                set_mode(&file, entry.header().mode().unwrap_or(0o644)).map_err(write_err)?;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(UnpackError::Malformed)?
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                if !link_stays_inside(&root, &rel, &target) {
                    return Err(UnpackError::EscapingLink {
                        entry: name,
                        target: target.to_string_lossy().into_owned(),
                    });
                }
                if let Some(parent) = rel.parent().filter(|p| !p.as_os_str().is_empty()) {
                    root.create_dir_all(parent).map_err(write_err)?;
                }
                create_symlink(&root, &target, &rel).map_err(write_err)?;
            }
            EntryType::Link => return Err(UnpackError::HardLink { entry: name }),
            // Metadata-only entries the tar crate did not fold into the next entry.
            EntryType::XGlobalHeader => {}
            other => {
                return Err(UnpackError::SpecialFile { entry: name, kind: format!("{other:?}") });
            }
        }
    }
    Ok(stats)
}

/// The entry path made relative and checked: no root, no prefix, no `..`; `.` dropped.
fn checked_relative(path: &Path, name: &str) -> Result<PathBuf, UnpackError> {
    let mut rel = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(part) => rel.push(part),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(UnpackError::ParentComponent { entry: name.to_string() });
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(UnpackError::AbsolutePath { entry: name.to_string() });
            }
        }
    }
    Ok(rel)
}

/// Whether a symlink at `link` (relative to the root) with `target` provably resolves inside
/// the root. Lexical checks alone are fooled by chains (`d/l -> ..`, then `x -> d/l/..` looks
/// like the root but is its parent), so the rule is stricter and inductive:
///
/// * the link's parent folders are real directories, not symlinks, so its real depth is its
///   lexical depth;
/// * the target is relative, made of leading `..` (no more than that depth) followed only by
///   names: once it descends, it never climbs back, so symlinks it passes through (each itself
///   checked by this rule) can only lead deeper inside.
fn link_stays_inside(root: &Dir, link: &Path, target: &Path) -> bool {
    if target.as_os_str().is_empty() {
        return false;
    }
    let Some(parent) = link.parent() else { return false };
    let mut prefix = PathBuf::new();
    for part in parent.components() {
        prefix.push(part);
        match root.symlink_metadata(&prefix) {
            Ok(meta) if meta.file_type().is_symlink() => return false,
            // Missing folders are created as real directories before the link.
            _ => {}
        }
    }
    let mut ups_allowed = parent.components().count();
    let mut descended = false;
    for c in target.components() {
        match c {
            Component::ParentDir if !descended && ups_allowed > 0 => ups_allowed -= 1,
            Component::Normal(_) => descended = true,
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

#[cfg(unix)]
fn set_mode(file: &std::fs::File, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    // Only the executable bit survives: no setuid/setgid/sticky, no world-writable files.
    let mode = if mode & 0o111 != 0 { 0o755 } else { 0o644 };
    file.set_permissions(std::fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_mode(_: &std::fs::File, _: u32) -> io::Result<()> {
    Ok(())
}

#[cfg(not(windows))]
fn create_symlink(root: &Dir, target: &Path, link: &Path) -> io::Result<()> {
    root.symlink(target, link)
}

#[cfg(windows)]
fn create_symlink(_: &Dir, _: &Path, _: &Path) -> io::Result<()> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "symlinks are not unpacked on Windows"))
}
