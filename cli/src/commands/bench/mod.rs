//! `gadus bench ...`: commands that measure and print one JSON line per configuration.
//! Figures go into the README's benchmark table; tests never assert on them.

mod burst;
mod cluster;
mod embedded;
mod latency;
mod micro;
mod placement;

use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Orchestrator placement throughput and latency with simulated compute nodes.
    Placement(placement::Args),
    /// UnixFS import speed: sha256 vs CID-only vs import into the store (MiB/s).
    Cid(micro::CidArgs),
    /// Instantiate + run a no-op WASM module (µs per run).
    WasmExec(micro::WasmExecArgs),
    /// No-op WASM job submit -> Completed through a real node's API (sequential and in flight).
    WasmLatency(latency::WasmLatencyArgs),
    /// Durable job submissions/s with concurrent clients, and job-list page latency.
    Api(latency::ApiArgs),
    /// A `true` container through gadus versus plain `docker run`.
    DockerOverhead(latency::DockerArgs),
    /// N real nodes on loopback (libp2p), no-op WASM jobs submitted to one: jobs/s and latency.
    Cluster(cluster::Args),
    /// Many no-op jobs at once from 1 and from N clients: drain time, executions per job.
    Burst(burst::Args),
}

pub fn run(g: &super::Global, cmd: BenchCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        BenchCommand::Placement(a) => placement::run(a),
        BenchCommand::Cid(a) => micro::cid(a),
        BenchCommand::WasmExec(a) => micro::wasm_exec(a),
        BenchCommand::WasmLatency(a) => super::runtime()?.block_on(latency::wasm_latency(g, a)),
        BenchCommand::Api(a) => super::runtime()?.block_on(latency::api(g, a)),
        BenchCommand::Cluster(a) => cluster::run(g, a),
        BenchCommand::Burst(a) => super::runtime()?.block_on(burst::run(g, a)),
        BenchCommand::DockerOverhead(a) => {
            super::runtime()?.block_on(latency::docker_overhead(g, a))
        }
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
