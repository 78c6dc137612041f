//! UnixFS import: files and directory trees into blocks, with Kubo's CIDs.
//!
//! Files are cut into fixed-size chunks and linked in go-unixfs's *balanced* layout: at most
//! `max_links` children per node, every internal node full except along the right edge, the
//! root as shallow as possible, and a one-chunk file's root being the leaf itself. The
//! builder keeps one pending link list per tree level, so memory is `O(depth × max_links)`
//! whatever the file size; the chunk buffer is reused.
//!
//! Directories are basic dag-pb directory nodes with links sorted by name bytes, as Kubo
//! writes them below its HAMT threshold. Hidden files are included (as `ipfs add -r --hidden`).
//! Symlinks are stored as UnixFS symlink nodes and never followed.
//!
//! **Gap:** Kubo switches a directory to a HAMT shard when its links' estimated size reaches
//! 256 KiB (roughly 5,000+ entries); this importer does not build HAMTs, so for such
//! directories it still writes one basic directory block (valid UnixFS, readable by Kubo, but
//! a different CID from Kubo's), and refuses a directory whose block would exceed
//! [`MAX_BLOCK_SIZE`]. Reading HAMT directories (export, `cat`, `ls`) is supported.
//!
//! "Only hash" ([`hash_reader`], [`hash_bytes`], [`hash_path`]) runs the same builder with a
//! sink that drops blocks, so its CIDs are the stored ones by construction.

use std::fs::{self, File};
use std::io::{ErrorKind, Read};
use std::path::Path;

use cid::Cid;

use super::block::{CidVersion, DAG_PB, RAW, sha256_cid, sha256_parts};
use super::error::{ContentError, LocalError, RequestError, Result};
use super::pb::{
    EMPTY_FILE_BLOCK, LeafFraming, encode_directory, encode_file_node, encode_symlink,
};
use super::store::{BlockWriter, ContentStore};
use super::{MAX_BLOCK_SIZE, MAX_PATH_DEPTH};

/// The largest chunk size accepted (leaves must stay far below [`MAX_BLOCK_SIZE`]).
pub const MAX_CHUNK_SIZE: usize = 1 << 20;
/// The largest fan-out accepted (4096 links keep an internal node around 200 KiB).
pub const MAX_LINKS: usize = 4096;

/// How content is cut, linked and named, and whether the import is pinned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportOptions {
    /// CID version of dag-pb nodes (and of everything, with raw leaves).
    pub cid_version: CidVersion,
    /// Leaves as `raw` blocks (CIDv1 only) instead of dag-pb UnixFS file nodes.
    pub raw_leaves: bool,
    /// Fixed chunk size in bytes, `1..=MAX_CHUNK_SIZE`.
    pub chunk_size: usize,
    /// Maximum links per internal file node, `2..=MAX_LINKS`.
    pub max_links: usize,
    /// Pin the imported root (ignored by the hash-only functions).
    pub pin: bool,
}

impl ImportOptions {
    /// `ipfs add` defaults (profile `unixfs-v0-2015`): CIDv0, dag-pb leaves, 256 KiB, 174 links.
    pub fn kubo_v0() -> Self {
        Self {
            cid_version: CidVersion::V0,
            raw_leaves: false,
            chunk_size: 256 * 1024,
            max_links: 174,
            pin: true,
        }
    }

    /// `ipfs add --cid-version=1`: CIDv1, raw leaves, 256 KiB, 174 links.
    pub fn kubo_v1() -> Self {
        Self { cid_version: CidVersion::V1, raw_leaves: true, ..Self::kubo_v0() }
    }

    /// Kubo's `unixfs-v1-2025` profile file layout: CIDv1, raw leaves, 1 MiB, 1024 links.
    pub fn unixfs_v1_2025() -> Self {
        Self { chunk_size: 1 << 20, max_links: 1024, ..Self::kubo_v1() }
    }

    /// The same options with `pin` set.
    #[must_use]
    pub fn with_pin(mut self, pin: bool) -> Self {
        self.pin = pin;
        self
    }

    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(RequestError::InvalidOptions(m).into());
        if !(1..=MAX_CHUNK_SIZE).contains(&self.chunk_size) {
            return bad(format!("chunk_size {} outside 1..={MAX_CHUNK_SIZE}", self.chunk_size));
        }
        if !(2..=MAX_LINKS).contains(&self.max_links) {
            return bad(format!("max_links {} outside 2..={MAX_LINKS}", self.max_links));
        }
        if self.raw_leaves && self.cid_version == CidVersion::V0 {
            return bad("raw leaves need CIDv1 (CIDv0 can only name dag-pb blocks)".into());
        }
        Ok(())
    }
}

impl Default for ImportOptions {
    fn default() -> Self {
        Self::kubo_v0()
    }
}

/// The result of an import.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Imported {
    /// The root CID.
    pub cid: Cid,
    /// Content bytes (file bytes; for a directory, all file bytes beneath it).
    pub size: u64,
    /// Cumulative size of every block in the DAG (what a parent link's `Tsize` says).
    pub tsize: u64,
    /// Blocks produced (duplicates included).
    pub blocks: u64,
}

/// Where the builder's blocks go.
pub(crate) trait BlockSink {
    /// Accepts a block given as parts to concatenate, already hashed to `cid`.
    fn put(&mut self, cid: &Cid, parts: &[&[u8]]) -> Result<()>;
}

/// Drops every block: "only hash".
pub(crate) struct HashOnly;

impl BlockSink for HashOnly {
    fn put(&mut self, _: &Cid, _: &[&[u8]]) -> Result<()> {
        Ok(())
    }
}

impl BlockSink for BlockWriter {
    fn put(&mut self, cid: &Cid, parts: &[&[u8]]) -> Result<()> {
        self.put_trusted(cid, parts)
    }
}

#[derive(Debug, Clone, Copy)]
struct Link {
    cid: Cid,
    tsize: u64,
    size: u64,
}

/// The streaming balanced-layout builder for one file.
struct FileBuilder<'o> {
    opts: &'o ImportOptions,
    /// `levels[0]` holds leaves not yet under a parent, `levels[1]` nodes of depth 1, ...
    levels: Vec<Vec<Link>>,
    blocks: u64,
}

impl<'o> FileBuilder<'o> {
    fn new(opts: &'o ImportOptions) -> Self {
        Self { opts, levels: Vec::new(), blocks: 0 }
    }

    fn push_leaf(&mut self, sink: &mut impl BlockSink, chunk: &[u8]) -> Result<()> {
        let len = chunk.len() as u64;
        let link = if self.opts.raw_leaves {
            let cid = sha256_cid(CidVersion::V1, RAW, &sha256_parts(&[chunk]));
            sink.put(&cid, &[chunk])?;
            Link { cid, tsize: len, size: len }
        } else {
            // Hash `prefix ‖ chunk ‖ suffix` without building the block (the common case when
            // only hashing); a storing sink concatenates.
            let framing = LeafFraming::new(chunk.len());
            let parts = [framing.prefix(), chunk, framing.suffix()];
            let cid = sha256_cid(self.opts.cid_version, DAG_PB, &sha256_parts(&parts));
            sink.put(&cid, &parts)?;
            let block_len = (framing.prefix().len() + chunk.len() + framing.suffix().len()) as u64;
            Link { cid, tsize: block_len, size: len }
        };
        self.blocks += 1;
        self.push(sink, 0, link)
    }

    /// Adds `link` at `level`; a level reaching `max_links` becomes a node one level up.
    fn push(&mut self, sink: &mut impl BlockSink, level: usize, link: Link) -> Result<()> {
        if self.levels.len() <= level {
            self.levels.resize_with(level + 1, Vec::new);
        }
        self.levels[level].push(link);
        if self.levels[level].len() == self.opts.max_links {
            let links = std::mem::take(&mut self.levels[level]);
            let node = self.node(sink, &links)?;
            self.push(sink, level + 1, node)?;
        }
        Ok(())
    }

    fn node(&mut self, sink: &mut impl BlockSink, links: &[Link]) -> Result<Link> {
        let cids: Vec<Vec<u8>> = links.iter().map(|l| l.cid.to_bytes()).collect();
        let block =
            encode_file_node(cids.iter().zip(links).map(|(c, l)| (c.as_slice(), l.tsize, l.size)));
        let cid = sha256_cid(self.opts.cid_version, DAG_PB, &sha256_parts(&[&block]));
        sink.put(&cid, &[&block])?;
        self.blocks += 1;
        Ok(Link {
            cid,
            tsize: block.len() as u64 + links.iter().map(|l| l.tsize).sum::<u64>(),
            size: links.iter().map(|l| l.size).sum(),
        })
    }

    fn finish(mut self, sink: &mut impl BlockSink) -> Result<Imported> {
        let Some(top) = self.levels.iter().rposition(|l| !l.is_empty()) else {
            // Empty file: go-unixfs writes an empty leaf (raw, or a dag-pb file of size 0).
            let (cid, len) = if self.opts.raw_leaves {
                (sha256_cid(CidVersion::V1, RAW, &sha256_parts(&[])), 0)
            } else {
                let cid =
                    sha256_cid(self.opts.cid_version, DAG_PB, &sha256_parts(&[&EMPTY_FILE_BLOCK]));
                (cid, EMPTY_FILE_BLOCK.len() as u64)
            };
            let parts: [&[u8]; 1] = [if self.opts.raw_leaves { &[] } else { &EMPTY_FILE_BLOCK }];
            sink.put(&cid, &parts)?;
            return Ok(Imported { cid, size: 0, tsize: len, blocks: 1 });
        };
        // Close the right edge bottom-up: every partial level below the top becomes one node
        // under the next level (go-unixfs's fillNodeRec wraps even a single child).
        for level in 0..top {
            if !self.levels[level].is_empty() {
                let links = std::mem::take(&mut self.levels[level]);
                let node = self.node(sink, &links)?;
                self.levels[level + 1].push(node);
            }
        }
        let top_links = std::mem::take(&mut self.levels[top]);
        let root = match top_links.as_slice() {
            [only] => *only,
            links => self.node(sink, links)?,
        };
        Ok(Imported { cid: root.cid, size: root.size, tsize: root.tsize, blocks: self.blocks })
    }
}

/// Reads until `buf` is full or the reader ends; returns how much was read.
fn fill(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

fn build_file_from_reader(
    sink: &mut impl BlockSink,
    opts: &ImportOptions,
    mut reader: impl Read,
    path: Option<&Path>,
) -> Result<Imported> {
    let mut builder = FileBuilder::new(opts);
    let mut buf = vec![0u8; opts.chunk_size];
    loop {
        let n = fill(&mut reader, &mut buf).map_err(|e| match path {
            Some(p) => ContentError::io("read", p, e),
            None => LocalError::Stream(e).into(),
        })?;
        if n > 0 {
            builder.push_leaf(sink, &buf[..n])?;
        }
        if n < buf.len() {
            break;
        }
    }
    builder.finish(sink)
}

fn build_file_from_bytes(
    sink: &mut impl BlockSink,
    opts: &ImportOptions,
    data: &[u8],
) -> Result<Imported> {
    let mut builder = FileBuilder::new(opts);
    for chunk in data.chunks(opts.chunk_size) {
        builder.push_leaf(sink, chunk)?;
    }
    builder.finish(sink)
}

fn build_path(
    sink: &mut impl BlockSink,
    opts: &ImportOptions,
    path: &Path,
    depth: usize,
) -> Result<Imported> {
    if depth > MAX_PATH_DEPTH {
        return Err(RequestError::TooDeep(path.to_owned()).into());
    }
    let meta = fs::symlink_metadata(path).map_err(|e| ContentError::io("stat", path, e))?;
    let kind = meta.file_type();
    if kind.is_file() {
        let file = File::open(path).map_err(|e| ContentError::io("open", path, e))?;
        build_file_from_reader(sink, opts, file, Some(path))
    } else if kind.is_symlink() {
        let target = fs::read_link(path).map_err(|e| ContentError::io("readlink", path, e))?;
        let block = encode_symlink(target.as_os_str().as_encoded_bytes());
        let cid = sha256_cid(opts.cid_version, DAG_PB, &sha256_parts(&[&block]));
        sink.put(&cid, &[&block])?;
        Ok(Imported { cid, size: 0, tsize: block.len() as u64, blocks: 1 })
    } else if kind.is_dir() {
        build_dir(sink, opts, path, depth)
    } else {
        Err(RequestError::UnsupportedFileType(path.to_owned()).into())
    }
}

fn build_dir(
    sink: &mut impl BlockSink,
    opts: &ImportOptions,
    path: &Path,
    depth: usize,
) -> Result<Imported> {
    let mut names = Vec::new();
    for entry in fs::read_dir(path).map_err(|e| ContentError::io("list", path, e))? {
        let entry = entry.map_err(|e| ContentError::io("list", path, e))?;
        let name =
            entry.file_name().into_string().map_err(|_| RequestError::NonUtf8Name(entry.path()))?;
        names.push(name);
    }
    // Links sorted by name bytes (String's order is byte order), as go-merkledag encodes them.
    names.sort_unstable();
    let mut children = Vec::with_capacity(names.len());
    let (mut size, mut blocks) = (0u64, 0u64);
    for name in names {
        let child = build_path(sink, opts, &path.join(&name), depth + 1)?;
        size += child.size;
        blocks += child.blocks;
        children.push((name, child.cid.to_bytes(), child.tsize));
    }
    let block = encode_directory(children.iter().map(|(n, c, t)| (n.as_bytes(), c.as_slice(), *t)));
    if block.len() > MAX_BLOCK_SIZE {
        return Err(
            RequestError::DirectoryTooLarge { path: path.to_owned(), bytes: block.len() }.into()
        );
    }
    let cid = sha256_cid(opts.cid_version, DAG_PB, &sha256_parts(&[&block]));
    sink.put(&cid, &[&block])?;
    let tsize = block.len() as u64 + children.iter().map(|(_, _, t)| t).sum::<u64>();
    Ok(Imported { cid, size, tsize, blocks: blocks + 1 })
}

/// The CID of a file read from `reader`, without storing anything ("only hash").
pub fn hash_reader(reader: impl Read, opts: &ImportOptions) -> Result<Imported> {
    opts.validate()?;
    build_file_from_reader(&mut HashOnly, opts, reader, None)
}

/// The CID of a file held in memory, without storing anything. Hashes straight from `data`
/// (no chunk copy): the fastest path.
pub fn hash_bytes(data: &[u8], opts: &ImportOptions) -> Result<Imported> {
    opts.validate()?;
    build_file_from_bytes(&mut HashOnly, opts, data)
}

/// The CID of a file, directory tree or symlink on disk, without storing anything.
pub fn hash_path(path: impl AsRef<Path>, opts: &ImportOptions) -> Result<Imported> {
    opts.validate()?;
    build_path(&mut HashOnly, opts, path.as_ref(), 0)
}

impl ContentStore {
    fn import_with(
        &self,
        opts: &ImportOptions,
        build: impl FnOnce(&mut BlockWriter) -> Result<Imported>,
    ) -> Result<Imported> {
        opts.validate()?;
        let mut writer = self.writer();
        let imported = build(&mut writer)?; // on error the writer drops and rolls back
        let pins: &[Cid] = if opts.pin { std::slice::from_ref(&imported.cid) } else { &[] };
        writer.commit(pins)?;
        Ok(imported)
    }

    /// Imports a file streamed from `reader`; durable (and pinned if `opts.pin`) on return.
    pub fn import_reader(&self, reader: impl Read, opts: &ImportOptions) -> Result<Imported> {
        self.import_with(opts, |w| build_file_from_reader(w, opts, reader, None))
    }

    /// Imports a file held in memory.
    pub fn import_bytes(&self, data: &[u8], opts: &ImportOptions) -> Result<Imported> {
        self.import_with(opts, |w| build_file_from_bytes(w, opts, data))
    }

    /// Imports a file, a directory tree or a symlink from disk (files are streamed).
    pub fn import_path(&self, path: impl AsRef<Path>, opts: &ImportOptions) -> Result<Imported> {
        self.import_with(opts, |w| build_path(w, opts, path.as_ref(), 0))
    }
}
