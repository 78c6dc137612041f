//! Embedded IPFS-compatible content store: blocks in fjall, UnixFS import/export with Kubo's
//! CIDs, pinning and GC, CAR v1, and a verifying trustless-gateway client.
//!
//! ## Pieces
//!
//! | what | where |
//! |---|---|
//! | blockstore: `put_block` (verified), `get_block`, `has_block`, `delete_block`, write sessions | [`ContentStore`], [`BlockWriter`] |
//! | UnixFS import of files (from a path or any `Read`) and directory trees; "only hash" | [`ContentStore::import_path`], [`ContentStore::import_reader`], [`hash_reader`], [`hash_bytes`], [`hash_path`] |
//! | export to disk, streaming `cat`, `ls`, path resolution, `stat` | [`ContentStore::export`], [`ContentStore::cat`], [`ContentStore::ls`], [`ContentStore::resolve`], [`parse_content_path`] |
//! | recursive pins, mark-and-sweep GC | [`ContentStore::pin`], [`ContentStore::unpin`], [`ContentStore::gc`] |
//! | CAR v1 export (also as a lazy chunk stream for HTTP) and all-or-nothing verified import | [`ContentStore::export_car`], [`ContentStore::car_chunks`], [`ContentStore::import_car`], [`CarDecoder`] |
//! | trustless gateway client (`?format=raw` blocks, `?format=car` DAGs) | [`GatewayClient`] |
//! | `gadus bench cid` measurement | [`measure_cid_throughput`] |
//!
//! What a `/ipfs/{cid}` server needs: [`ContentStore::get_block`] (raw block),
//! [`ContentStore::car_chunks`] (CAR stream, `into_stream()` for async bodies),
//! [`ContentStore::cat`] (file bytes, `into_stream()` too), [`ContentStore::ls`] (names, CIDs,
//! sizes, kinds) and [`ContentStore::resolve`]/[`ContentStore::stat`].
//!
//! ## Compatibility
//!
//! [`ImportOptions::kubo_v0`] (the default) is `ipfs add`: CIDv0, dag-pb leaves, 256 KiB
//! chunks, balanced DAG with 174 links per node. [`ImportOptions::kubo_v1`] is
//! `ipfs add --cid-version=1` (raw leaves). Tests compare against Debian's `ipfs_cid` (Kubo's
//! CIDv0), Kubo's published vectors and rust-unixfs. Directories above Kubo's HAMT threshold
//! are written unsharded (different CID from Kubo's; see `import` docs). Only sha2-256 and
//! identity CIDs are accepted, since other hashes could not be verified.
//!
//! ## Trust
//!
//! Anything from outside is verified before it is stored: [`verify_block`] is the single gate
//! (size ≤ [`MAX_BLOCK_SIZE`], hash equals the CID). Decoders of dag-pb, UnixFS and CAR are
//! hand-written, bounded, and return [`ContentError`]s — never panic. Export cannot write
//! outside its destination. Errors say who is at fault ([`RequestError`], [`UntrustedError`],
//! [`LocalError`], [`RemoteError`]).
//!
//! The store API is synchronous (fjall is); async callers use `spawn_blocking`, as
//! [`GatewayClient`] and the `into_stream` adapters do.

mod bench;
mod block;
mod car;
mod error;
mod export;
mod gateway;
mod import;
mod pb;
mod store;

pub use bench::{CidThroughput, measure_cid_throughput, pseudo_random_bytes};
pub use block::{CidVersion, DAG_PB, IDENTITY, RAW, SHA2_256, cid_of_block, verify_block};
pub use car::{
    CarChunks, CarDecoder, CarExport, CarImport, CarImportOptions, CarLimits, encode_car_header,
    read_car,
};
pub use cid::Cid;
pub use error::{ContentError, LocalError, RemoteError, RequestError, Result, UntrustedError};
pub use export::{
    CatReader, DirEntry, EntryKind, ExportOptions, ExportReport, MAX_FILE_DEPTH, NodeStat,
    parse_content_path,
};
pub use gateway::{FetchReport, GatewayClient, GatewayOptions};
pub use import::{
    ImportOptions, Imported, MAX_CHUNK_SIZE, MAX_LINKS, hash_bytes, hash_path, hash_reader,
};
pub use store::{BlockWriter, ContentStore, GcReport, StoreStats};

/// The largest block accepted from anywhere (the Bitswap and trustless-gateway limit).
pub const MAX_BLOCK_SIZE: usize = 2 * 1024 * 1024;
/// The deepest directory nesting imported, resolved or exported.
pub const MAX_PATH_DEPTH: usize = 256;
