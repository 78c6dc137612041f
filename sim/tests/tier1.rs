//! Tier 1: seeded fault-injection runs of whole clusters of `gadus-core` state machines.
//!
//! - `seeds`: `SIM_SEEDS` seeds (default 500) plus every regression seed; each prints
//!   `sim tier=1 seed=<n> events=<count> trace=<hash>`; any failure prints its replay command.
//!   Across the run, every coverage mark that the faults should reach must be hit.
//! - `determinism`: the same seed twice gives the same trace hash.
//! - `mutants_are_caught`: every deliberate bug in `gadus-core` (feature `mutants`) is caught
//!   within the seed budget — proof that the suite can fail.
//! - `replay`: with `SIM_SEED=<n>`, runs that seed with a readable event trace.

#![allow(clippy::unwrap_used)] // Tests unwrap: a panic is the failure report.

use std::collections::BTreeMap;

use gadus_core::mutants::Mutant;
use gadus_sim::run::{REGRESSION_SEEDS, Report, run_seed, seed_budget};

/// Situations the CI seeds must reach (a fault model that never reaches them proves nothing).
const REQUIRED_MARKS: &[&str] = &[
    "adopted",
    "bid-timeout",
    "capacity-refusal",
    "compute-crash",
    "compute-restart",
    "crash-during-publishing",
    "duplicate-delivered",
    "exec-timeout",
    "job-completed",
    "job-failed",
    "message-lost",
    "node-gone-forever",
    "node-lost",
    "orchestrator-crash",
    "orchestrator-restart",
    "partition",
    "queue-timeout",
    "retry-after-node-loss",
    "retry-limit",
    "stale-result-dropped",
    "unsynced-lost",
];

const CI_SEEDS: u64 = 500;

#[test]
fn seeds() {
    let k = seed_budget(CI_SEEDS);
    let seeds: Vec<u64> = REGRESSION_SEEDS.iter().copied().chain(1..=k).collect();
    let mut marks: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut events = 0;
    // Seeds are independent: run them on every core, then read the reports in seed order (the
    // output and the verdict are the same as a sequential run's).
    let threads =
        std::thread::available_parallelism().map_or(1, |n| n.get()).min(seeds.len().max(1));
    let mut reports: Vec<(usize, Report)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let seeds = &seeds;
                s.spawn(move || {
                    (t..seeds.len())
                        .step_by(threads)
                        .map(|i| (i, run_seed(seeds[i], None, false)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("a seed's thread panicked")).collect()
    });
    reports.sort_by_key(|(i, _)| *i);
    assert_eq!(reports.len(), seeds.len());
    for (_, r) in reports {
        println!("{}", r.line());
        events += r.events;
        for (m, n) in &r.marks {
            *marks.entry(m).or_default() += n;
        }
        if let Some(f) = &r.failure {
            println!("  FAILED: {f}\n  replay: {}", r.replay_command());
            failures.push(r);
        }
    }
    println!(
        "sim tier=1 seeds={} events={events} marks={marks:?}",
        k + REGRESSION_SEEDS.len() as u64
    );
    assert!(
        failures.is_empty(),
        "{} seed(s) failed:\n{}",
        failures.len(),
        failures
            .iter()
            .map(|r| format!(
                "seed {}: {}\n  replay: {}",
                r.seed,
                r.failure.as_deref().unwrap_or(""),
                r.replay_command()
            ))
            .collect::<Vec<_>>()
            .join("\n")
    );
    if k >= CI_SEEDS {
        let missing: Vec<_> = REQUIRED_MARKS.iter().filter(|m| !marks.contains_key(*m)).collect();
        assert!(missing.is_empty(), "coverage marks never hit in {k} seeds: {missing:?}");
    } else {
        println!("(coverage marks are checked only with at least {CI_SEEDS} seeds)");
    }
}

#[test]
fn determinism() {
    for seed in [1, 2, 3, 17, 99] {
        let a: Report = run_seed(seed, None, false);
        let b: Report = run_seed(seed, None, false);
        println!("{}", a.line());
        assert_eq!((a.events, a.trace), (b.events, b.trace), "seed {seed} is not deterministic");
    }
}

#[test]
fn mutants_are_caught() {
    // Each mutant must be caught within the CI seed budget, whatever SIM_SEEDS says (the
    // search stops at the first seed that catches it).
    let budget = CI_SEEDS;
    let mut escaped = Vec::new();
    for m in Mutant::ALL {
        let caught = (1..=budget).find_map(|seed| {
            let r = run_seed(seed, Some(m), false);
            r.failure.map(|f| (seed, f))
        });
        match caught {
            Some((seed, why)) => println!("mutant {m}: caught by seed {seed}: {why}"),
            None => {
                println!("mutant {m}: NOT caught in {budget} seeds");
                escaped.push(m);
            }
        }
    }
    assert!(escaped.is_empty(), "mutants not caught: {escaped:?}");
}

#[test]
fn replay() {
    let Some(seed) = std::env::var("SIM_SEED").ok().and_then(|s| s.parse::<u64>().ok()) else {
        println!("set SIM_SEED=<n> to replay one seed with its event trace");
        return;
    };
    let r = run_seed(seed, None, true);
    println!("{}", r.line());
    if let Some(f) = &r.failure {
        panic!("seed {seed} failed: {f}");
    }
}
