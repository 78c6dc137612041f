//! # gadus-core — the deterministic heart of gadus
//!
//! This crate decides; it never acts. It holds the Bacalhau-compatible job model
//! ([`model`]) and the state machines that run jobs, and it does no I/O at all: no clocks, no
//! sockets, no files, no threads, no OS randomness, no async runtime. Time arrives as an
//! argument (`now`), randomness from a seeded [`rng::DetRng`], and every effect on the world
//! leaves as an action for the driver to perform, whose outcome comes back as an input:
//!
//! ```text
//!   driver (node/ or sim/)                 core
//!   ───────────────────────                ─────────────────────────────
//!   API call, peer message,  ──handle_*(now, input)──▶  state machine
//!   executor result, timeout
//!                            ◀──poll_action()────────  Send, Persist, Reply, StartExecution…
//!                            ◀──poll_timeout()───────  next deadline
//! ```
//!
//! Because of this the same code runs in production (driven by libp2p, Docker, WASM and fjall
//! adapters in `gadus-io`/`gadus-node`) and in the seeded simulator (`gadus-sim`), where one
//! seed replays a whole cluster bit for bit.
//!
//! The purity is enforced mechanically: `core/clippy.toml` bans clocks, thread RNGs and
//! `HashMap`/`HashSet` here, and `tests/purity.rs` fails if this crate's dependency tree ever
//! contains an async runtime, a network stack, a container client, a store or a WASM engine.

pub mod compute;
pub mod model;
pub mod mutants;
pub mod orchestrator;
pub mod peer;
pub mod protocol;
pub mod rng;
pub mod timers;
