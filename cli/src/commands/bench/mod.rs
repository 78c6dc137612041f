//! `gadus bench ...`: commands that measure and print one JSON line per configuration.
//! Figures go into the README's benchmark table; tests never assert on them.

mod placement;

use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Orchestrator placement throughput and latency with simulated compute nodes.
    Placement(placement::Args),
}

pub fn run(_g: &super::Global, cmd: BenchCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        BenchCommand::Placement(a) => placement::run(a),
    }
}

/// The p-th percentile (0..=100) of sorted samples.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let idx = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}
