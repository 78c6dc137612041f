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

pub mod run;
pub mod scenario;
pub mod trace;
pub mod world;
