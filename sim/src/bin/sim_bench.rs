//! `cargo run --release -p gadus-sim --bin sim-bench`: how many simulated seconds the tier-1
//! simulator covers per wall-clock second for a 50-node cluster, 600 simulated seconds,
//! one job per second. Prints one JSON line.

#![allow(clippy::disallowed_methods)] // a benchmark measures wall-clock time on purpose

use std::time::{Duration, Instant};

use gadus_core::mutants::Mutants;
use gadus_sim::scenario::{Faults, Scenario};
use gadus_sim::world::World;

fn main() {
    let simulated = Duration::from_secs(600);
    let scenario = Scenario {
        seed: 1,
        orchestrators: 1,
        computes: 50,
        jobs: 600,
        safety: simulated,
        liveness: Duration::ZERO,
        skew_ms: vec![0; 51],
        faults: Faults {
            loss: 0.01,
            duplicate: 0.01,
            latency_min: Duration::from_millis(1),
            latency_max: Duration::from_millis(50),
            partition_every: Duration::from_secs(60),
            crash_every: Duration::ZERO,
            crash_mid_batch: 0.0,
            work_survives: 1.0,
            kill_forever_at: None,
            late_duplicate: 0.0,
        },
        task_failure: 0.05,
        task_hang: 0.0,
        node_cpus: 8,
        batch_only: true,
        check_every_event: false,
    };
    let start = Instant::now();
    let mut world = World::new(scenario, Mutants::NONE, false);
    // Liveness is not checked here: this measures speed, the tests check correctness.
    let outcome = world.run();
    let wall = start.elapsed().as_secs_f64();
    println!(
        "{{\"bench\":\"sim\",\"nodes\":50,\"simulated_s\":{},\"jobs\":600,\"events\":{},\"wall_s\":{wall:.3},\"sim_s_per_wall_s\":{:.0},\"invariants\":\"{}\"}}",
        simulated.as_secs(),
        world.events_processed,
        simulated.as_secs_f64() / wall,
        if outcome.is_ok() { "hold" } else { "VIOLATED" }
    );
}
