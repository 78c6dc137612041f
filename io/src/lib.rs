//! # gadus-io — adapters between the core and the world
//!
//! Real implementations of what the core asks for, each behind a narrow trait the node loop
//! (`gadus-node`) drives, so the simulator can substitute its own:
//!
//! | module | what |
//! |---|---|
//! | [`archive`] | deterministic tar.gz packing of results; bounded, traversal-safe unpacking |
//! | [`content`] | embedded IPFS-compatible store: fjall blocks, UnixFS import/export (Kubo CIDs), pins + GC, CAR v1, trustless-gateway client |
//! | [`executor`] | the [`executor::Executor`] trait and its engines: `noop`, `wasm` (wasmi + WASI), `docker` (bollard) |
//! | [`pinned`] | host paths opened without following symlinks and held open, so a checked `local` input cannot be swapped before it is mounted |
//! | [`transport`] | the [`transport::Transport`] trait the node loop sends through (in-process, libp2p) |
//! | [`storage`] | [`storage::InputProvider`] and [`storage::Publisher`]: how data reaches a task and results leave it |
//!
//! Adapters never decide anything: the core decided; an adapter performs one action and
//! reports its outcome (success, or a classified [`gadus_core::protocol::ExecFailure`]).

pub mod archive;
pub mod content;
pub mod executor;
pub mod pinned;
pub mod storage;
pub mod transport;
