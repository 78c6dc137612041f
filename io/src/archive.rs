//! Result archives: deterministic `.tar.gz` packing and guarded unpacking.
//!
//! Archives cross trust boundaries: a compute node packs results that a client unpacks, and a
//! job spec may carry a tarball. Unpacking therefore trusts nothing in the archive: every
//! entry's path is checked component by component (no absolute paths, no `..`, no Windows
//! prefixes), only regular files and directories are created (links, devices and FIFOs are
//! refused, so no later entry can be written through a link), and totals are capped (bytes
//! and entries, which also stops gzip bombs). Files are created with `create_new` under a
//! directory this unpack created, so nothing outside `dest` is touched.

use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

/// Limits on one unpack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnpackLimits {
    /// Total file bytes written.
    pub max_total_bytes: u64,
    /// Entries (files and directories).
    pub max_entries: u64,
}

impl Default for UnpackLimits {
    fn default() -> Self {
        Self { max_total_bytes: 10 << 30, max_entries: 100_000 }
    }
}

/// Why an archive was refused (the archive's fault) or could not be written (ours).
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// An entry's path is absolute or leaves the destination.
    #[error("entry {0:?} has an unsafe path (absolute or with `..`)")]
    UnsafePath(String),
    /// An entry is a link, device or FIFO.
    #[error("entry {path:?} is a {kind}: only files and directories are accepted")]
    UnsupportedEntry {
        /// Entry path.
        path: String,
        /// What it is.
        kind: &'static str,
    },
    /// Total bytes or entries above the limit.
    #[error("archive exceeds the limit: {0}")]
    TooLarge(String),
    /// The same file appears twice.
    #[error("entry {0:?} appears twice")]
    Duplicate(String),
    /// Corrupt tar or gzip data.
    #[error("corrupt archive: {0}")]
    Corrupt(String),
    /// A local filesystem failure.
    #[error("writing {path}: {error}")]
    Local {
        /// Where.
        path: String,
        /// What.
        error: std::io::Error,
    },
}

fn local(path: &Path, error: std::io::Error) -> ArchiveError {
    ArchiveError::Local { path: path.display().to_string(), error }
}

/// Packs `dir`'s contents (not `dir` itself) as a gzipped tar into `writer`. Deterministic:
/// entries sorted by name, mtime 0, owner 0. Symlinks inside `dir` are skipped (results never
/// carry links to the compute node's filesystem).
pub fn pack_tar_gz(dir: &Path, writer: impl Write) -> Result<(), ArchiveError> {
    let gz = flate2::write::GzEncoder::new(writer, flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    tar.mode(tar::HeaderMode::Deterministic);
    tar.follow_symlinks(false);
    add_dir(&mut tar, dir, Path::new(""))?;
    let gz = tar.into_inner().map_err(|e| local(dir, e))?;
    let mut w = gz.finish().map_err(|e| local(dir, e))?;
    w.flush().map_err(|e| local(dir, e))?;
    Ok(())
}

fn add_dir<W: Write>(
    tar: &mut tar::Builder<W>,
    dir: &Path,
    rel: &Path,
) -> Result<(), ArchiveError> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| local(dir, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| local(dir, e))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let name = rel.join(entry.file_name());
        let meta = std::fs::symlink_metadata(&path).map_err(|e| local(&path, e))?;
        if meta.is_dir() {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
            h.set_mtime(0);
            tar.append_data(&mut h, &name, std::io::empty()).map_err(|e| local(&path, e))?;
            add_dir(tar, &path, &name)?;
        } else if meta.is_file() {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o644);
            h.set_size(meta.len());
            h.set_mtime(0);
            let f = std::fs::File::open(&path).map_err(|e| local(&path, e))?;
            tar.append_data(&mut h, &name, f).map_err(|e| local(&path, e))?;
        }
    }
    Ok(())
}

/// Checks an entry path: relative, only normal components. Returns the components.
fn safe_relative(raw: &Path) -> Result<PathBuf, ArchiveError> {
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            _ => return Err(ArchiveError::UnsafePath(raw.display().to_string())),
        }
    }
    Ok(out)
}

/// Unpacks a gzipped tar from `reader` into `dest` (created if missing), refusing anything
/// unsafe (see the module docs). On error, what was written so far stays under `dest` only.
pub fn safe_unpack_tar_gz(
    reader: impl Read,
    dest: &Path,
    limits: &UnpackLimits,
) -> Result<u64, ArchiveError> {
    std::fs::create_dir_all(dest).map_err(|e| local(dest, e))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(reader));
    let corrupt = |e: std::io::Error| ArchiveError::Corrupt(e.to_string());
    let (mut bytes, mut count) = (0u64, 0u64);
    for entry in archive.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        count += 1;
        if count > limits.max_entries {
            return Err(ArchiveError::TooLarge(format!(
                "more than {} entries",
                limits.max_entries
            )));
        }
        let raw = entry.path().map_err(corrupt)?.into_owned();
        let shown = raw.display().to_string();
        let rel = safe_relative(&raw)?;
        let kind = entry.header().entry_type();
        let unsupported = |kind| ArchiveError::UnsupportedEntry { path: shown.clone(), kind };
        match kind {
            tar::EntryType::Directory => {
                if rel.as_os_str().is_empty() {
                    continue;
                }
                make_dirs(dest, &rel)?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if rel.as_os_str().is_empty() {
                    return Err(ArchiveError::UnsafePath(shown));
                }
                let parent = rel.parent().unwrap_or(Path::new(""));
                make_dirs(dest, parent)?;
                let target = dest.join(&rel);
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&target)
                    .map_err(|e| match e.kind() {
                        std::io::ErrorKind::AlreadyExists => ArchiveError::Duplicate(shown.clone()),
                        _ => local(&target, e),
                    })?;
                // Copy with the remaining budget + 1, so "too large" is detected without
                // trusting the header's size.
                let budget = limits.max_total_bytes - bytes;
                let n =
                    std::io::copy(&mut (&mut entry).take(budget + 1), &mut f).map_err(corrupt)?;
                if n > budget {
                    return Err(ArchiveError::TooLarge(format!(
                        "more than {} bytes",
                        limits.max_total_bytes
                    )));
                }
                bytes += n;
            }
            tar::EntryType::Symlink => return Err(unsupported("symbolic link")),
            tar::EntryType::Link => return Err(unsupported("hard link")),
            tar::EntryType::Char | tar::EntryType::Block => return Err(unsupported("device")),
            tar::EntryType::Fifo => return Err(unsupported("FIFO")),
            // PAX/GNU metadata entries are consumed by the tar crate; anything else is odd.
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader => {}
            _ => return Err(unsupported("special entry")),
        }
    }
    Ok(bytes)
}

/// Creates `dest/rel` one component at a time, refusing any existing component that is not a
/// real directory (a symlink planted earlier cannot redirect later entries).
fn make_dirs(dest: &Path, rel: &Path) -> Result<(), ArchiveError> {
    let mut cur = dest.to_path_buf();
    for c in rel.components() {
        cur.push(c);
        match std::fs::symlink_metadata(&cur) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(ArchiveError::UnsafePath(rel.display().to_string())),
            Err(_) => std::fs::create_dir(&cur).map_err(|e| local(&cur, e))?,
        }
    }
    Ok(())
}
