//! `gadus bench cid` and `gadus bench wasm-exec`: single-component measurements.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use gadus_io::content::{ContentStore, ImportOptions};
use serde_json::json;

use super::percentile;

/// `bench cid` options.
#[derive(Debug, clap::Args)]
pub struct CidArgs {
    /// Bytes hashed (`1GiB`, `256MiB`, `1000000`).
    #[arg(long, default_value = "1GiB")]
    pub size: String,
    /// Rounds per measurement (the best is kept).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// CID version (0: Kubo's default, 1: raw leaves).
    #[arg(long, default_value_t = 0)]
    pub cid_version: u8,
}

/// Runs `bench cid`: sha256 vs CID-only import vs import into a store.
pub fn cid(a: CidArgs) -> anyhow::Result<ExitCode> {
    let bytes = gadus_core::model::resources::parse_bytes(&a.size)
        .map_err(|e| anyhow::anyhow!("--size {:?}: {e}", a.size))?;
    let bytes = usize::try_from(bytes).context("--size too large for this machine")?;
    let opts = if a.cid_version == 1 { ImportOptions::kubo_v1() } else { ImportOptions::kubo_v0() };
    let t = gadus_io::content::measure_cid_throughput(bytes, a.rounds, &opts)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    // Import into a real store (fjall on disk): same bytes, blocks written and committed.
    let dir = tempfile::tempdir()?;
    let store = ContentStore::open(dir.path().join("store")).map_err(|e| anyhow::anyhow!("{e}"))?;
    let data = gadus_io::content::pseudo_random_bytes(bytes);
    let s = Instant::now();
    store.import_reader(std::io::Cursor::new(&data), &opts).map_err(|e| anyhow::anyhow!("{e}"))?;
    let store_mib_s = bytes as f64 / (1 << 20) as f64 / s.elapsed().as_secs_f64().max(1e-9);
    let r = |x: f64| (x * 10.0).round() / 10.0;
    println!(
        "{}",
        json!({
            "bench": "cid",
            "bytes": bytes,
            "cid_version": a.cid_version,
            "sha256_mib_s": r(t.sha256),
            "cid_only_mib_s": r(t.cid_from_bytes),
            "cid_only_streamed_mib_s": r(t.cid_from_reader),
            "store_import_mib_s": r(store_mib_s),
            "cid_only_ratio": (t.bytes_ratio() * 1000.0).round() / 1000.0,
            "streamed_ratio": (t.reader_ratio() * 1000.0).round() / 1000.0,
            "store_ratio": ((store_mib_s / t.sha256) * 1000.0).round() / 1000.0,
        })
    );
    Ok(ExitCode::SUCCESS)
}

/// `bench wasm-exec` options.
#[derive(Debug, clap::Args)]
pub struct WasmExecArgs {
    /// Runs measured (after 100 warm-up runs).
    #[arg(long, default_value_t = 5000)]
    pub runs: usize,
}

/// Runs `bench wasm-exec`: instantiate + run the no-op module, per run.
pub fn wasm_exec(a: WasmExecArgs) -> anyhow::Result<ExitCode> {
    let exec = gadus_io::executor::wasm::WasmExecutor::default();
    let module = exec
        .compile(gadus_io::executor::wasm::NOOP_MODULE)
        .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    for _ in 0..100 {
        exec.run_module(&module, &[]).map_err(|e| anyhow::anyhow!("{}", e.message))?;
    }
    let mut samples = Vec::with_capacity(a.runs);
    for _ in 0..a.runs {
        let t = Instant::now();
        exec.run_module(&module, &[]).map_err(|e| anyhow::anyhow!("{}", e.message))?;
        samples.push(t.elapsed().as_nanos() as u64);
    }
    samples.sort_unstable();
    let us = |ns: u64| (ns as f64 / 100.0).round() / 10.0;
    // Compile + instantiate + run, for modules not seen before.
    let t = Instant::now();
    for _ in 0..100 {
        exec.run_module_bytes(gadus_io::executor::wasm::NOOP_MODULE, &[])
            .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    }
    let cold = t.elapsed().as_nanos() as u64 / 100;
    println!(
        "{}",
        json!({
            "bench": "wasm-exec",
            "runs": a.runs,
            "p50_us": us(samples[samples.len() / 2]),
            "p99_us": us(percentile(&samples, 99.0)),
            "compile_and_run_mean_us": us(cold),
        })
    );
    Ok(ExitCode::SUCCESS)
}
