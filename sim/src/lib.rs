//! # gadus-sim — deterministic simulation of whole gadus clusters
//!
//! `cargo test -p gadus-sim` runs clusters under faults and fails with a seed that reproduces
//! the bug.
//!
//! **Tier 1** ([`world`]) runs many `gadus-core` orchestrators and compute nodes in one
//! thread, with a virtual clock that jumps to the next event and a network where messages are
//! lost, duplicated, delayed, reordered and partitioned; machines crash (losing records not
//! yet synced) and restart from their stores; clocks are skewed; simulated executors succeed,
//! fail, hang or run past their timeout. One seed ([`scenario`]) picks the cluster, the
//! workload and the fault rates, then every event.
//!
//! Each seed runs a **safety** phase (faults on) and a **liveness** phase (faults off): every
//! invariant — each machine's own `check_invariants()` and the cluster-wide ones (no
//! acknowledged job lost, terminal states final, never more completions than `Count`, stale
//! attempts never accepted, capacity never exceeded) — is checked after every event, and at
//! the end every batch/ops job must be terminal.
//!
//! Every run prints `sim tier=1 seed=<n> events=<count> trace=<hash>`; the same seed always
//! gives the same hash. Replay one seed with a readable trace:
//!
//! ```text
//! SIM_SEED=42 cargo test -p gadus-sim --test tier1 -- replay --nocapture
//! ```
//!
//! **Tier 2** (`tests/tier2/`) runs the node itself — `gadus_node::runtime::Runtime` and the
//! REST router — on turmoil hosts, over a frame transport on turmoil TCP, with a fjall store
//! that outlives crashes. A client drives it through the HTTP API while the driver partitions,
//! holds, crashes and bounces hosts. Each seed runs in its own process and prints
//! `sim tier=2 seed=<n> events=<count> trace=<hash>`; replay one with
//! `SIM2_SEED=<n> cargo test -p gadus-sim --test tier2 replay -- --nocapture`. It lives in the
//! tests because turmoil (which switches on tokio's `test-util`) stays a dev-dependency.

pub mod run;
pub mod scenario;
pub mod trace;
pub mod world;
