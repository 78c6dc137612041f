//! The blockstore: verified blocks in fjall, recursive pins, write sessions and garbage
//! collection.
//!
//! ## Consistency model
//!
//! Blocks are written through a [`BlockWriter`] session. Writes go straight to the `blocks`
//! keyspace (so a 50 GB import never sits in memory), and [`BlockWriter::commit`] writes the
//! session's pins and makes everything durable with one `PersistMode::SyncData`. A session
//! dropped without commit rolls back: the blocks it added are deleted again, so a CAR with one
//! bad block leaves nothing behind. After a crash, blocks of sessions that never committed may
//! remain; they are unpinned, so the next [`ContentStore::gc`] removes them.
//!
//! Three things must not race: a rollback deleting a block another live session also relies
//! on, GC deleting a block a live session wrote but has not pinned yet, and GC missing a pin
//! written mid-collection. So:
//! * every block a live session touched (added or found present) is counted in `inflight`;
//!   rollback deletes only blocks it added and no other session touched, and GC never deletes
//!   an in-flight block. The existence check and the count change happen under one lock.
//! * GC holds `gc_lock` from mark to sweep; pinning and commit take it briefly, so a pin is
//!   either visible to the mark phase or written after the sweep (whose in-flight check kept
//!   the session's blocks).
//!
//! Sessions hold no lock guards, so they are `Send` and can live across `.await`s.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use cid::Cid;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, KvSeparationOptions, PersistMode};

use super::block::{DAG_PB, IDENTITY, block_key, verify_block};
use super::error::{ContentError, RequestError, Result};
use super::pb::decode_dag_pb;

/// Pin record value: a recursive pin (the only kind; direct pins are not needed yet).
const PIN_RECURSIVE: &[u8] = &[1];

/// An embedded, IPFS-compatible content store. Cheap to clone; all clones share one database.
#[derive(Clone)]
pub struct ContentStore {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    db: Database,
    blocks: Keyspace,
    pins: Keyspace,
    /// Blocks touched by live sessions → how many sessions touch each.
    inflight: Mutex<HashMap<Vec<u8>, u32>>,
    /// Held by GC for a whole collection, briefly by pin changes and commits.
    gc_lock: Mutex<()>,
}

/// Block count and bytes held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Blocks stored.
    pub blocks: u64,
    /// Their total size in bytes.
    pub bytes: u64,
    /// Pinned roots.
    pub pins: u64,
}

/// What a garbage collection removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Blocks deleted.
    pub blocks_freed: u64,
    /// Their total size in bytes.
    pub bytes_freed: u64,
    /// Blocks kept (reachable from a pin, or held by a live session).
    pub blocks_kept: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere while holding these locks leaves the map consistent (each update is a
    // single insert/remove), so poisoning carries no information here.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ContentStore {
    /// Opens (or creates) the store in `dir`. One process per directory (fjall holds a lock).
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let db = Database::builder(dir.as_ref()).open()?;
        // Blocks are up to 2 MiB: key-value separation keeps them out of LSM compactions.
        let blocks = db.keyspace("blocks", || {
            KeyspaceCreateOptions::default()
                .with_kv_separation(Some(KvSeparationOptions::default()))
        })?;
        let pins = db.keyspace("pins", KeyspaceCreateOptions::default)?;
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                blocks,
                pins,
                inflight: Mutex::new(HashMap::new()),
                gc_lock: Mutex::new(()),
            }),
        })
    }

    /// Verifies `data` against `cid` and stores it durably (one fsync; use a [`BlockWriter`]
    /// for many blocks). Not pinned.
    pub fn put_block(&self, cid: &Cid, data: &[u8]) -> Result<()> {
        let mut writer = self.writer();
        writer.put(cid, data)?;
        writer.commit(&[])
    }

    /// The block's bytes, or `None` if absent. Identity CIDs are answered from the CID itself.
    pub fn get_block(&self, cid: &Cid) -> Result<Option<Bytes>> {
        if cid.hash().code() == IDENTITY {
            return Ok(Some(Bytes::copy_from_slice(cid.hash().digest())));
        }
        Ok(self.inner.blocks.get(block_key(cid))?.map(|v| Bytes::copy_from_slice(&v)))
    }

    /// Like [`Self::get_block`], with absence as [`RequestError::MissingBlock`].
    pub(crate) fn require_block(&self, cid: &Cid) -> Result<Bytes> {
        self.get_block(cid)?.ok_or_else(|| RequestError::MissingBlock(*cid).into())
    }

    /// Whether the block is present.
    pub fn has_block(&self, cid: &Cid) -> Result<bool> {
        if cid.hash().code() == IDENTITY {
            return Ok(true);
        }
        Ok(self.inner.blocks.contains_key(block_key(cid))?)
    }

    /// Deletes one block; `false` if it was absent. Refused for a pinned root; deleting a block
    /// inside a pinned DAG is allowed and makes that pin incomplete (GC tolerates that).
    pub fn delete_block(&self, cid: &Cid) -> Result<bool> {
        let _gc = lock(&self.inner.gc_lock);
        if self.is_pinned(cid)? {
            return Err(RequestError::Pinned(*cid).into());
        }
        let key = block_key(cid);
        if lock(&self.inner.inflight).contains_key(&key) {
            // A live session relies on it; pretend it was deleted and let GC take it later.
            return Ok(false);
        }
        if !self.inner.blocks.contains_key(&key)? {
            return Ok(false);
        }
        self.inner.blocks.remove(key)?;
        self.inner.db.persist(PersistMode::SyncData)?;
        Ok(true)
    }

    /// Counts blocks, bytes and pins (a full key scan: O(blocks), values are not read).
    pub fn stats(&self) -> Result<StoreStats> {
        let mut stats = StoreStats::default();
        for guard in self.inner.blocks.iter() {
            stats.blocks += 1;
            stats.bytes += u64::from(guard.size()?);
        }
        stats.pins = self.inner.pins.iter().count() as u64;
        Ok(stats)
    }

    /// Starts a write session.
    pub fn writer(&self) -> BlockWriter {
        BlockWriter {
            store: self.clone(),
            touched: HashMap::new(),
            committed: false,
            blocks_added: 0,
            bytes_added: 0,
        }
    }

    /// Pins `root` recursively. The whole DAG must be present (a pin promises the content).
    pub fn pin(&self, root: &Cid) -> Result<()> {
        let _gc = lock(&self.inner.gc_lock);
        if let Some(missing) = self.first_missing(root)? {
            return Err(RequestError::MissingBlock(missing).into());
        }
        self.inner.pins.insert(root.to_bytes(), PIN_RECURSIVE)?;
        self.inner.db.persist(PersistMode::SyncData)?;
        Ok(())
    }

    /// Removes the pin on `root`; `false` if it was not pinned. Blocks stay until [`Self::gc`].
    pub fn unpin(&self, root: &Cid) -> Result<bool> {
        let _gc = lock(&self.inner.gc_lock);
        let key = root.to_bytes();
        if !self.inner.pins.contains_key(&key)? {
            return Ok(false);
        }
        self.inner.pins.remove(key)?;
        self.inner.db.persist(PersistMode::SyncData)?;
        Ok(true)
    }

    /// Whether `root` is pinned.
    pub fn is_pinned(&self, root: &Cid) -> Result<bool> {
        Ok(self.inner.pins.contains_key(root.to_bytes())?)
    }

    /// Every pinned root.
    pub fn pins(&self) -> Result<Vec<Cid>> {
        let mut out = Vec::new();
        for guard in self.inner.pins.iter() {
            let key = guard.key()?;
            // Pin keys are written by us from valid CIDs; a corrupt key is skipped rather than
            // failing every pin listing.
            if let Ok(cid) = Cid::try_from(&key[..]) {
                out.push(cid);
            }
        }
        Ok(out)
    }

    /// The first block of `root`'s DAG that is not in the store, or `None` if it is complete.
    /// Fails on a malformed dag-pb block.
    pub fn first_missing(&self, root: &Cid) -> Result<Option<Cid>> {
        let mut seen = HashSet::new();
        let mut stack = vec![*root];
        while let Some(cid) = stack.pop() {
            if !seen.insert(block_key(&cid)) {
                continue;
            }
            if cid.codec() != DAG_PB {
                // raw and unknown codecs: no links we can follow.
                if !self.has_block(&cid)? {
                    return Ok(Some(cid));
                }
                continue;
            }
            let Some(block) = self.get_block(&cid)? else { return Ok(Some(cid)) };
            let node = decode_dag_pb(&block).map_err(|e| ContentError::malformed(cid, e))?;
            stack.extend(node.links.iter().rev().map(|l| l.cid));
        }
        Ok(None)
    }

    /// Deletes every block not reachable from a pin (and not held by a live session).
    pub fn gc(&self) -> Result<GcReport> {
        let _gc = lock(&self.inner.gc_lock);
        // Mark. A missing or undecodable block under a pin is skipped: GC must not fail because
        // a pinned DAG is damaged, it must only never delete what a pin reaches.
        let mut live: HashSet<Vec<u8>> = HashSet::new();
        for root in self.pins()? {
            let mut stack = vec![root];
            while let Some(cid) = stack.pop() {
                if !live.insert(block_key(&cid)) || cid.codec() != DAG_PB {
                    continue;
                }
                if let Some(block) = self.get_block(&cid)?
                    && let Ok(node) = decode_dag_pb(&block)
                {
                    stack.extend(node.links.iter().map(|l| l.cid));
                }
            }
        }
        // Sweep.
        let mut report = GcReport::default();
        for guard in self.inner.blocks.iter() {
            let key = guard.key()?;
            if live.contains(&key[..]) {
                report.blocks_kept += 1;
                continue;
            }
            let inflight = lock(&self.inner.inflight);
            if inflight.contains_key(&key[..]) {
                report.blocks_kept += 1;
                continue;
            }
            let size = self.inner.blocks.size_of(&key)?.unwrap_or(0);
            self.inner.blocks.remove(key)?;
            drop(inflight);
            report.blocks_freed += 1;
            report.bytes_freed += u64::from(size);
        }
        self.inner.db.persist(PersistMode::SyncData)?;
        Ok(report)
    }
}

impl std::fmt::Debug for ContentStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContentStore").finish_non_exhaustive()
    }
}

/// A write session: blocks are stored as they come; [`Self::commit`] pins and makes them
/// durable; dropping without commit removes what the session added.
pub struct BlockWriter {
    store: ContentStore,
    /// Block key → whether this session added it (as opposed to finding it present).
    touched: HashMap<Vec<u8>, bool>,
    committed: bool,
    blocks_added: u64,
    bytes_added: u64,
}

impl BlockWriter {
    /// Verifies `data` against `cid` and stores it.
    pub fn put(&mut self, cid: &Cid, data: &[u8]) -> Result<()> {
        verify_block(cid, data)?;
        self.put_trusted(cid, &[data])
    }

    /// Stores a block this process just hashed itself (the importer), given as parts to
    /// concatenate. Skips verification, which would hash it twice.
    pub(crate) fn put_trusted(&mut self, cid: &Cid, parts: &[&[u8]]) -> Result<()> {
        if cid.hash().code() == IDENTITY {
            return Ok(()); // the CID carries the data
        }
        let key = block_key(cid);
        if self.touched.contains_key(&key) {
            return Ok(());
        }
        let inner = &self.store.inner;
        let exists = {
            let mut inflight = lock(&inner.inflight);
            let exists = inner.blocks.contains_key(&key)?;
            *inflight.entry(key.clone()).or_insert(0) += 1;
            exists
        };
        // Registered: from here on the drop handler releases the count.
        self.touched.insert(key.clone(), false);
        if !exists {
            let value: Vec<u8> = if parts.len() == 1 { parts[0].to_vec() } else { parts.concat() };
            let len = value.len() as u64;
            inner.blocks.insert(key.clone(), value)?;
            self.touched.insert(key, true);
            self.blocks_added += 1;
            self.bytes_added += len;
        }
        Ok(())
    }

    /// Blocks this session added (not counting blocks that were already present).
    pub fn blocks_added(&self) -> u64 {
        self.blocks_added
    }

    /// Bytes this session added.
    pub fn bytes_added(&self) -> u64 {
        self.bytes_added
    }

    /// Pins `pins` (without checking completeness: the caller built or verified the DAGs) and
    /// makes the session durable with one `SyncData`.
    pub fn commit(mut self, pins: &[Cid]) -> Result<()> {
        let inner = Arc::clone(&self.store.inner);
        let _gc = lock(&inner.gc_lock);
        let mut written = Vec::new();
        let result = (|| -> Result<()> {
            for pin in pins {
                let key = pin.to_bytes();
                if !inner.pins.contains_key(&key)? {
                    inner.pins.insert(key.clone(), PIN_RECURSIVE)?;
                    written.push(key);
                }
            }
            inner.db.persist(PersistMode::SyncData)?;
            Ok(())
        })();
        if let Err(e) = result {
            for key in written {
                // Best effort: the session is rolled back by drop below, so its pins must go too.
                let _ = inner.pins.remove(key);
            }
            return Err(e);
        }
        self.committed = true;
        self.release();
        Ok(())
    }

    /// Explicit rollback (the same as dropping the session).
    pub fn rollback(self) {}

    /// Drops this session's in-flight counts; on rollback also deletes blocks it added that
    /// no other live session touched.
    fn release(&mut self) {
        let inner = &self.store.inner;
        let mut inflight = lock(&inner.inflight);
        for (key, added) in self.touched.drain() {
            let remaining = match inflight.get_mut(&key) {
                Some(count) => {
                    *count = count.saturating_sub(1);
                    *count
                }
                None => 0,
            };
            if remaining == 0 {
                inflight.remove(&key);
                if added && !self.committed {
                    // Errors cannot be reported from drop; a block left behind is unpinned and
                    // the next GC removes it.
                    let _ = inner.blocks.remove(key);
                }
            }
        }
    }
}

impl std::fmt::Debug for BlockWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockWriter")
            .field("touched", &self.touched.len())
            .field("blocks_added", &self.blocks_added)
            .field("committed", &self.committed)
            .finish_non_exhaustive()
    }
}

impl Drop for BlockWriter {
    fn drop(&mut self) {
        if !self.touched.is_empty() {
            self.release();
        }
    }
}
