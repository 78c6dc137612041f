//! Reading UnixFS back: path resolution, streaming `cat`, directory listings, and export of a
//! DAG to disk.
//!
//! Every block is treated as hostile even though its bytes matched its CID (the CID only proves
//! *which* bytes, not that their author meant well):
//! * decoding is bounded (see `pb`), errors are typed, nothing panics;
//! * traversal uses explicit stacks with depth limits, never recursion on DAG depth for files;
//! * file nodes' declared sizes are checked against the bytes their subtrees produce;
//! * export writes only below `dest`: entry names must be plain (`..`, `.`, `/`, NUL and empty
//!   are refused, as are duplicates), files and directories are created exclusively (never
//!   through an existing path), and symlink targets may not climb out of `dest`;
//! * [`ExportOptions`] caps total bytes and entries, against DAGs that reuse one subtree many
//!   times to expand into far more data than they store.
//!
//! HAMT-sharded directories (as Kubo writes for large directories) are read: listing walks all
//! shards; name lookup scans the entries (no murmur3 hashing), which is linear in the
//! directory's size.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use bytes::{Buf, Bytes};
use cid::Cid;
use futures::Stream;

use super::MAX_PATH_DEPTH;
use super::block::{DAG_PB, RAW};
use super::error::{ContentError, LocalError, RequestError, Result, UntrustedError};
use super::pb::{DataType, decode_dag_pb, decode_unixfs};
use super::store::ContentStore;

/// The deepest file DAG followed (a balanced 174-ary tree of depth 8 already exceeds 10^17
/// bytes; trickle DAGs are deeper, but not by this much).
pub const MAX_FILE_DEPTH: usize = 64;
/// The deepest HAMT shard nesting followed (a 64-bit hash gives 8 levels at fan-out 256).
const MAX_HAMT_DEPTH: usize = 16;

/// What a UnixFS node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// A file (raw block or dag-pb UnixFS file).
    File,
    /// A directory (basic or HAMT-sharded).
    Directory,
    /// A symbolic link.
    Symlink,
}

/// One directory entry, as a gateway listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// The entry name.
    pub name: String,
    /// The entry's CID.
    pub cid: Cid,
    /// The link's cumulative DAG size, if the link states it.
    pub tsize: Option<u64>,
    /// The entry's kind, if its root block is in the store.
    pub kind: Option<EntryKind>,
    /// File size (or symlink target length), if known.
    pub size: Option<u64>,
}

/// What a CID is and how big.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeStat {
    /// The kind.
    pub kind: EntryKind,
    /// File content size or symlink target length; `None` for directories.
    pub size: Option<u64>,
}

/// Limits on an export (defaults: none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportOptions {
    /// Maximum file bytes written.
    pub max_bytes: u64,
    /// Maximum files, directories and symlinks created.
    pub max_entries: u64,
}

impl Default for ExportOptions {
    fn default() -> Self {
        Self { max_bytes: u64::MAX, max_entries: u64::MAX }
    }
}

/// What an export wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportReport {
    /// Regular files created.
    pub files: u64,
    /// Directories created (including `dest` when the root is a directory).
    pub directories: u64,
    /// Symlinks created.
    pub symlinks: u64,
    /// File bytes written.
    pub bytes: u64,
}

/// A decoded UnixFS node.
enum Node {
    File { data: Bytes, children: Vec<Cid>, filesize: Option<u64> },
    Directory { links: Vec<RawLink> },
    Hamt { links: Vec<RawLink>, prefix_len: usize },
    Symlink { target: Bytes },
}

struct RawLink {
    name: Bytes,
    cid: Cid,
    tsize: Option<u64>,
}

/// Splits a content path (`/ipfs/<cid>/a/b`, `ipfs://<cid>/a/b` or `<cid>/a/b`) into the root
/// CID and the path inside it. Refuses `.`/`..`/NUL components.
pub fn parse_content_path(s: &str) -> Result<(Cid, String)> {
    let invalid =
        |reason: &str| RequestError::InvalidPath { path: s.to_owned(), reason: reason.to_owned() };
    let rest = s.strip_prefix("/ipfs/").or_else(|| s.strip_prefix("ipfs://")).unwrap_or(s);
    let (root, inner) = rest.split_once('/').unwrap_or((rest, ""));
    let cid = Cid::try_from(root).map_err(|e| invalid(&format!("bad CID: {e}")))?;
    let components = path_components(inner).map_err(invalid)?;
    Ok((cid, components.join("/")))
}

/// The non-empty components of a path inside a DAG; `.`, `..` and NUL are refused.
fn path_components(path: &str) -> std::result::Result<Vec<&str>, &'static str> {
    let mut out = Vec::new();
    for c in path.split('/') {
        match c {
            "" => {}
            "." | ".." => return Err("`.` and `..` are not allowed in content paths"),
            c if c.contains('\0') => return Err("NUL in content path"),
            c => out.push(c),
        }
    }
    Ok(out)
}

fn hex_digits(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 16 {
        v >>= 4;
        n += 1;
    }
    n
}

impl ContentStore {
    fn load(&self, cid: &Cid) -> Result<Node> {
        match cid.codec() {
            RAW => {
                let data = self.require_block(cid)?;
                let len = data.len() as u64;
                Ok(Node::File { data, children: Vec::new(), filesize: Some(len) })
            }
            DAG_PB => {
                let block = self.require_block(cid)?;
                let bad = |reason: &str| ContentError::malformed(*cid, reason);
                let node = decode_dag_pb(&block).map_err(bad)?;
                let unixfs =
                    decode_unixfs(node.data.ok_or_else(|| bad("dag-pb node without UnixFS data"))?)
                        .map_err(bad)?;
                let links = || -> Vec<RawLink> {
                    node.links
                        .iter()
                        .map(|l| RawLink {
                            name: l.name.map(|n| block.slice_ref(n)).unwrap_or_default(),
                            cid: l.cid,
                            tsize: l.tsize,
                        })
                        .collect()
                };
                let data = unixfs.data.map(|d| block.slice_ref(d)).unwrap_or_default();
                Ok(match unixfs.kind {
                    DataType::File | DataType::Raw => Node::File {
                        data,
                        children: node.links.iter().map(|l| l.cid).collect(),
                        filesize: unixfs.filesize,
                    },
                    DataType::Directory => Node::Directory { links: links() },
                    DataType::HamtShard => {
                        let fanout =
                            unixfs.fanout.ok_or_else(|| bad("HAMT shard without fanout"))?;
                        if !fanout.is_power_of_two() || !(2..=4096).contains(&fanout) {
                            return Err(bad("HAMT fanout is not a power of two in 2..=4096"));
                        }
                        Node::Hamt { links: links(), prefix_len: hex_digits(fanout - 1) }
                    }
                    DataType::Symlink => Node::Symlink { target: data },
                    DataType::Metadata => {
                        return Err(bad("UnixFS metadata nodes are not supported"));
                    }
                })
            }
            codec => Err(RequestError::NotUnixFs { cid: *cid, codec }.into()),
        }
    }

    /// The entries of a directory node (basic or HAMT), unvalidated names, in link order.
    fn dir_links(&self, cid: &Cid, node: Node) -> Result<Vec<RawLink>> {
        match node {
            Node::Directory { links } => Ok(links),
            Node::Hamt { links, prefix_len } => {
                let mut out = Vec::new();
                self.hamt_collect(cid, links, prefix_len, 0, &mut out)?;
                Ok(out)
            }
            _ => Err(RequestError::NotADirectory(*cid).into()),
        }
    }

    fn hamt_collect(
        &self,
        shard: &Cid,
        links: Vec<RawLink>,
        prefix_len: usize,
        depth: usize,
        out: &mut Vec<RawLink>,
    ) -> Result<()> {
        if depth > MAX_HAMT_DEPTH {
            return Err(UntrustedError::TooDeep(*shard).into());
        }
        for link in links {
            if link.name.len() < prefix_len
                || !link.name[..prefix_len].iter().all(u8::is_ascii_hexdigit)
            {
                return Err(ContentError::malformed(
                    *shard,
                    "HAMT link name without a hex bucket prefix",
                ));
            }
            if link.name.len() == prefix_len {
                // A sub-shard.
                match self.load(&link.cid)? {
                    Node::Hamt { links, prefix_len: p } if p == prefix_len => {
                        self.hamt_collect(&link.cid, links, prefix_len, depth + 1, out)?
                    }
                    _ => {
                        return Err(ContentError::malformed(
                            link.cid,
                            "HAMT sub-shard is not a shard of the same fanout",
                        ));
                    }
                }
            } else {
                out.push(RawLink {
                    name: link.name.slice(prefix_len..),
                    cid: link.cid,
                    tsize: link.tsize,
                });
            }
        }
        Ok(())
    }

    /// Follows `path` (slash-separated names) from `root`. Symlinks are not followed.
    pub fn resolve(&self, root: &Cid, path: &str) -> Result<Cid> {
        let components = path_components(path).map_err(|r| RequestError::InvalidPath {
            path: path.to_owned(),
            reason: r.to_owned(),
        })?;
        let mut current = *root;
        for (depth, name) in components.into_iter().enumerate() {
            if depth >= MAX_PATH_DEPTH {
                return Err(RequestError::InvalidPath {
                    path: path.to_owned(),
                    reason: "too deep".into(),
                }
                .into());
            }
            let node = self.load(&current)?;
            let links = self.dir_links(&current, node)?;
            let found = links.iter().find(|l| &l.name[..] == name.as_bytes());
            current = match found {
                Some(link) => link.cid,
                None => {
                    return Err(
                        RequestError::NoSuchEntry { dir: current, name: name.to_owned() }.into()
                    );
                }
            };
        }
        Ok(current)
    }

    /// Kind and size of the node at `cid`.
    pub fn stat(&self, cid: &Cid) -> Result<NodeStat> {
        Ok(match self.load(cid)? {
            Node::File { data, filesize, children } => NodeStat {
                kind: EntryKind::File,
                // A dag-pb file without a filesize (legal, if unusual) is as big as its data
                // when it has no children; otherwise unknown without reading it all.
                size: filesize.or(children.is_empty().then_some(data.len() as u64)),
            },
            Node::Directory { .. } | Node::Hamt { .. } => {
                NodeStat { kind: EntryKind::Directory, size: None }
            }
            Node::Symlink { target } => {
                NodeStat { kind: EntryKind::Symlink, size: Some(target.len() as u64) }
            }
        })
    }

    /// Lists the directory at `root`/`path`, sorted by name. Each entry's kind and size come
    /// from its root block when that block is local (`None` otherwise).
    pub fn ls(&self, root: &Cid, path: &str) -> Result<Vec<DirEntry>> {
        let cid = self.resolve(root, path)?;
        let node = self.load(&cid)?;
        let links = self.dir_links(&cid, node)?;
        let mut out = Vec::with_capacity(links.len());
        for link in links {
            let name =
                String::from_utf8(link.name.to_vec()).map_err(|_| UntrustedError::UnsafeName {
                    dir: cid,
                    name: String::from_utf8_lossy(&link.name).into_owned(),
                })?;
            let stat = match self.stat(&link.cid) {
                Ok(stat) => Some(stat),
                Err(e) if matches!(e.request(), Some(RequestError::MissingBlock(_))) => None,
                Err(e) => return Err(e),
            };
            out.push(DirEntry {
                name,
                cid: link.cid,
                tsize: link.tsize,
                kind: stat.map(|s| s.kind),
                size: stat.and_then(|s| s.size),
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// A streaming reader of the file at `root`/`path`.
    pub fn cat(&self, root: &Cid, path: &str) -> Result<CatReader> {
        let cid = self.resolve(root, path)?;
        CatReader::new(self.clone(), cid)
    }

    /// Writes the file, directory tree or symlink at `root` to `dest`, which must not exist.
    /// On error, whatever was written under `dest` is removed again.
    pub fn export(&self, root: &Cid, dest: &Path) -> Result<ExportReport> {
        self.export_with(root, dest, &ExportOptions::default())
    }

    /// [`Self::export`] with limits.
    pub fn export_with(
        &self,
        root: &Cid,
        dest: &Path,
        opts: &ExportOptions,
    ) -> Result<ExportReport> {
        if fs::symlink_metadata(dest).is_ok() {
            return Err(RequestError::DestinationExists(dest.to_owned()).into());
        }
        let mut exporter = Exporter { store: self, opts, report: ExportReport::default() };
        match exporter.node(root, dest, 0) {
            Ok(()) => Ok(exporter.report),
            Err(e) => {
                // Best effort, and only if this export created `dest` (exclusively, so
                // everything below it is ours; remove_dir_all does not follow symlinks).
                if exporter.report != ExportReport::default() {
                    let _ = match fs::symlink_metadata(dest) {
                        Ok(m) if m.is_dir() => fs::remove_dir_all(dest),
                        Ok(_) => fs::remove_file(dest),
                        Err(_) => Ok(()),
                    };
                }
                Err(e)
            }
        }
    }
}

/// Whether a directory entry name is safe to create as one path component.
fn safe_name(name: &[u8]) -> bool {
    !name.is_empty() && name != b"." && name != b".." && !name.contains(&b'/') && !name.contains(&0)
}

/// Whether a symlink created `depth` directories below the export root stays inside it:
/// relative, leading `..`s no more than `depth`, then only descending names. (A `..` after a
/// name is refused because the name could itself be a symlink pointing upward.)
fn safe_symlink_target(target: &[u8], depth: usize) -> bool {
    if target.is_empty() || target.starts_with(b"/") || target.contains(&0) {
        return false;
    }
    let mut ups = 0;
    let mut descended = false;
    for c in target.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." if !descended => ups += 1,
            b".." => return false,
            _ => descended = true,
        }
    }
    ups <= depth
}

struct Exporter<'a> {
    store: &'a ContentStore,
    opts: &'a ExportOptions,
    report: ExportReport,
}

impl Exporter<'_> {
    fn count_entry(&mut self) -> Result<()> {
        let n = self.report.files + self.report.directories + self.report.symlinks;
        if n >= self.opts.max_entries {
            return Err(RequestError::LimitExceeded(format!(
                "more than {} entries",
                self.opts.max_entries
            ))
            .into());
        }
        Ok(())
    }

    /// Writes `cid` at `path`, `depth` directories below the export root.
    fn node(&mut self, cid: &Cid, path: &Path, depth: usize) -> Result<()> {
        if depth > MAX_PATH_DEPTH {
            return Err(UntrustedError::TooDeep(*cid).into());
        }
        self.count_entry()?;
        match self.store.load(cid)? {
            Node::File { .. } => self.file(cid, path),
            Node::Symlink { target } => self.symlink(cid, &target, path, depth),
            node => {
                let links = self.store.dir_links(cid, node)?;
                // Validate every name before creating anything for this directory.
                let mut seen = HashSet::with_capacity(links.len());
                for link in &links {
                    if !safe_name(&link.name)
                        || std::str::from_utf8(&link.name).is_err()
                        || !seen.insert(&link.name[..])
                    {
                        let name = String::from_utf8_lossy(&link.name).into_owned();
                        return Err(UntrustedError::UnsafeName { dir: *cid, name }.into());
                    }
                }
                fs::create_dir(path).map_err(|e| create_error(path, e))?;
                self.report.directories += 1;
                for link in &links {
                    // Names were checked to be UTF-8 above.
                    let name = String::from_utf8_lossy(&link.name);
                    self.node(&link.cid, &path.join(&*name), depth + 1)?;
                }
                Ok(())
            }
        }
    }

    fn file(&mut self, cid: &Cid, path: &Path) -> Result<()> {
        let mut reader = CatReader::new(self.store.clone(), *cid)?;
        // create_new: never truncate or write through an existing file or symlink.
        let mut file = File::create_new(path).map_err(|e| create_error(path, e))?;
        self.report.files += 1;
        while let Some(chunk) = reader.next_chunk()? {
            self.report.bytes += chunk.len() as u64;
            if self.report.bytes > self.opts.max_bytes {
                return Err(RequestError::LimitExceeded(format!(
                    "more than {} bytes",
                    self.opts.max_bytes
                ))
                .into());
            }
            file.write_all(&chunk).map_err(|e| ContentError::io("write", path, e))?;
        }
        file.sync_data().map_err(|e| ContentError::io("sync", path, e))
    }

    fn symlink(&mut self, cid: &Cid, target: &[u8], path: &Path, depth: usize) -> Result<()> {
        // The symlink lives in its parent directory, `depth - 1` levels below the root. At the
        // root itself it would *be* the destination, resolved from the destination's parent:
        // outside whatever its target says (found by the `unixfs` fuzz target).
        if depth == 0
            || !safe_symlink_target(target, depth - 1)
            || std::str::from_utf8(target).is_err()
        {
            let target = String::from_utf8_lossy(target).into_owned();
            return Err(UntrustedError::UnsafeSymlink { cid: *cid, target }.into());
        }
        let target = PathBuf::from(String::from_utf8_lossy(target).into_owned());
        make_symlink(&target, path)?;
        self.report.symlinks += 1;
        Ok(())
    }
}

#[cfg(unix)]
fn make_symlink(target: &Path, path: &Path) -> Result<()> {
    std::os::unix::fs::symlink(target, path).map_err(|e| create_error(path, e))
}

#[cfg(not(unix))]
fn make_symlink(_target: &Path, path: &Path) -> Result<()> {
    Err(ContentError::io(
        "symlink",
        path,
        io::Error::new(io::ErrorKind::Unsupported, "symlinks need unix"),
    ))
}

fn create_error(path: &Path, e: io::Error) -> ContentError {
    if e.kind() == io::ErrorKind::AlreadyExists {
        RequestError::DestinationExists(path.to_owned()).into()
    } else {
        ContentError::io("create", path, e)
    }
}

struct Frame {
    cid: Cid,
    children: Vec<Cid>,
    next: usize,
    /// The byte offset at which this node's content must end, if it declares a size.
    end: Option<u64>,
}

/// Streams a UnixFS file's bytes, leaf by leaf, checking declared sizes on the way.
/// Implements [`Read`]; [`CatReader::next_chunk`] hands out whole leaves without copying, and
/// [`CatReader::into_stream`] adapts it for async servers.
pub struct CatReader {
    store: ContentStore,
    stack: Vec<Frame>,
    /// Data of the node just entered, not yet handed out.
    current: Bytes,
    /// What `read` has left of the last chunk.
    pending: Bytes,
    produced: u64,
    size: Option<u64>,
}

impl CatReader {
    fn new(store: ContentStore, cid: Cid) -> Result<Self> {
        let mut reader = Self {
            store,
            stack: Vec::new(),
            current: Bytes::new(),
            pending: Bytes::new(),
            produced: 0,
            size: None,
        };
        reader.enter(cid, true)?;
        reader.size = reader.stack.first().and_then(|f| f.end);
        Ok(reader)
    }

    /// The file size the root declares, if it does.
    pub fn declared_size(&self) -> Option<u64> {
        self.size
    }

    fn enter(&mut self, cid: Cid, root: bool) -> Result<()> {
        if self.stack.len() >= MAX_FILE_DEPTH {
            return Err(UntrustedError::TooDeep(cid).into());
        }
        let (data, children, filesize) = match self.store.load(&cid)? {
            Node::File { data, children, filesize } => (data, children, filesize),
            _ if root => return Err(RequestError::NotAFile(cid).into()),
            _ => return Err(ContentError::malformed(cid, "a file links to a non-file node")),
        };
        let end = match filesize {
            Some(size) => {
                if (data.len() as u64) > size {
                    return Err(ContentError::malformed(
                        cid,
                        "file node data exceeds its filesize",
                    ));
                }
                Some(
                    self.produced
                        .checked_add(size)
                        .ok_or_else(|| ContentError::malformed(cid, "filesize overflows"))?,
                )
            }
            None => None,
        };
        self.current = data;
        self.stack.push(Frame { cid, children, next: 0, end });
        Ok(())
    }

    /// The next piece of the file (one leaf's data), or `None` at the end.
    pub fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        loop {
            if !self.current.is_empty() {
                let chunk = std::mem::take(&mut self.current);
                self.produced += chunk.len() as u64;
                return Ok(Some(chunk));
            }
            let Some(top) = self.stack.last_mut() else { return Ok(None) };
            if let Some(&child) = top.children.get(top.next) {
                top.next += 1;
                self.enter(child, false)?;
                continue;
            }
            let done = self.stack.pop().expect("last_mut just returned Some");
            if let Some(end) = done.end
                && end != self.produced
            {
                return Err(ContentError::malformed(
                    done.cid,
                    "file size differs from the bytes its DAG holds",
                ));
            }
        }
    }

    /// An async stream of the file's chunks; each step reads the store on a blocking thread.
    /// Needs a tokio runtime.
    pub fn into_stream(self) -> impl Stream<Item = Result<Bytes>> + Send + 'static {
        futures::stream::unfold(Some(self), |state| async move {
            let mut reader = state?;
            let step = tokio::task::spawn_blocking(move || {
                let chunk = reader.next_chunk();
                (reader, chunk)
            })
            .await;
            match step {
                Ok((reader, Ok(Some(chunk)))) => Some((Ok(chunk), Some(reader))),
                Ok((_, Ok(None))) => None,
                Ok((_, Err(e))) => Some((Err(e), None)),
                Err(join) => Some((Err(LocalError::Task(join.to_string()).into()), None)),
            }
        })
    }
}

impl std::fmt::Debug for CatReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CatReader")
            .field("root", &self.stack.first().map(|fr| fr.cid))
            .field("produced", &self.produced)
            .field("declared_size", &self.size)
            .finish_non_exhaustive()
    }
}

impl Read for CatReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pending.is_empty() {
            match self.next_chunk().map_err(io::Error::other)? {
                Some(chunk) => self.pending = chunk,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.pending.len());
        buf[..n].copy_from_slice(&self.pending[..n]);
        self.pending.advance(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_symlink_targets() {
        for bad in [&b""[..], b".", b"..", b"a/b", b"/", b"a\0b"] {
            assert!(!safe_name(bad), "{bad:?}");
        }
        assert!(safe_name(b"...") && safe_name(b".hidden") && safe_name(b"a b"));
        assert!(safe_symlink_target(b"file", 0));
        assert!(safe_symlink_target(b"./a/b", 0));
        assert!(safe_symlink_target(b"../x", 1));
        assert!(!safe_symlink_target(b"../x", 0));
        assert!(!safe_symlink_target(b"/etc/passwd", 5));
        assert!(
            !safe_symlink_target(b"a/../../x", 5),
            "`..` after a name could follow a symlink up"
        );
        assert!(!safe_symlink_target(b"", 1));
    }

    #[test]
    fn content_paths() {
        let (cid, path) =
            parse_content_path("/ipfs/QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn/a//b/")
                .unwrap();
        assert_eq!(cid.to_string(), "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn");
        assert_eq!(path, "a/b");
        assert!(parse_content_path("QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn/../x").is_err());
        assert!(parse_content_path("not-a-cid/x").is_err());
        assert_eq!(hex_digits(255), 2);
        assert_eq!(hex_digits(15), 1);
        assert_eq!(hex_digits(4095), 3);
    }
}
