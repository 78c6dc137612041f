//! Running seeds: one seed → one report; a failure carries the one-line replay command.

use std::collections::BTreeMap;

use gadus_core::mutants::{Mutant, Mutants};

use crate::scenario::Scenario;
use crate::world::World;

/// What one seed produced.
#[derive(Clone, Debug)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// Events processed.
    pub events: u64,
    /// Hash of the event trace.
    pub trace: u64,
    /// Coverage marks hit.
    pub marks: BTreeMap<&'static str, u64>,
    /// The first violation, if any.
    pub failure: Option<String>,
    /// Simulated seconds covered.
    pub simulated_secs: u64,
}

impl Report {
    /// The line every run prints.
    pub fn line(&self) -> String {
        format!("sim tier=1 seed={} events={} trace={:016x}", self.seed, self.events, self.trace)
    }

    /// How to replay this seed.
    pub fn replay_command(&self) -> String {
        format!("SIM_SEED={} cargo test -p gadus-sim --test tier1 -- replay --nocapture", self.seed)
    }
}

/// Runs one seed (optionally with a mutant switched on).
pub fn run_seed(seed: u64, mutant: Option<Mutant>, verbose: bool) -> Report {
    let scenario = Scenario::from_seed(seed);
    if verbose {
        println!("sim tier=1 seed={seed} scenario: {scenario}");
    }
    let mutants = mutant.map_or(Mutants::NONE, Mutants::with);
    let simulated_secs = (scenario.safety + scenario.liveness).as_secs();
    let mut world = World::new(scenario, mutants, verbose);
    let result = world.run();
    Report {
        seed,
        events: world.events_processed,
        trace: world.trace.hash(),
        marks: world.marks.clone(),
        failure: result.err(),
        simulated_secs,
    }
}

/// Seeds that once failed: replayed by every run, forever.
pub const REGRESSION_SEEDS: &[u64] = &[];

/// How many seeds a run covers: `SIM_SEEDS` or the CI default.
pub fn seed_budget(default: u64) -> u64 {
    std::env::var("SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}
