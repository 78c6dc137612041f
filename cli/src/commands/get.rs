//! `gadus get JOB [--output-dir DIR]`: fetch the results of every completed execution into
//! `DIR/job-<id>/` — `stdout`, `stderr`, `exitCode`, one folder per ResultPath.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use serde_json::Value;

use super::Global;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Job ID, unique prefix or name.
    id: String,
    /// Where to put `job-<id>/` (default: the current directory).
    #[arg(long, short = 'o', alias = "output-dir")]
    output_dir: Option<PathBuf>,
}

pub async fn run(g: &Global, args: Args) -> anyhow::Result<ExitCode> {
    let c = g.client()?;
    let v = c.get(&format!("/api/v1/orchestrator/jobs/{}?include=executions", args.id)).await?;
    let id = v["Job"]["ID"].as_str().context("no job ID in the answer")?.to_string();
    let ns = v["Job"]["Namespace"].as_str().unwrap_or("default");
    let dir_name = if ns == "default" { format!("job-{id}") } else { format!("job-{ns}-{id}") };
    let dest = args.output_dir.unwrap_or_else(|| PathBuf::from(".")).join(dir_name);
    let completed: Vec<&Value> = v["Executions"]["Items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["ComputeState"]["StateType"].as_i64() == Some(9))
        .collect();
    if completed.is_empty() {
        bail!(
            "job {id} has no completed executions (state {})",
            v["Job"]["State"]["StateType"].as_str().unwrap_or("?")
        );
    }
    std::fs::create_dir_all(&dest).with_context(|| format!("creating {}", dest.display()))?;
    for e in &completed {
        let published = &e["PublishedResult"];
        let kind = published["Type"].as_str().unwrap_or("").to_ascii_lowercase();
        match kind.as_str() {
            "" | "noop" => {
                // Nothing was published: what the node returned inline is all there is.
                let out = &e["RunOutput"];
                std::fs::write(dest.join("stdout"), out["Stdout"].as_str().unwrap_or(""))?;
                std::fs::write(dest.join("stderr"), out["stderr"].as_str().unwrap_or(""))?;
                std::fs::write(dest.join("exitCode"), out["ExitCode"].to_string())?;
            }
            other => {
                bail!("results published with {other:?} cannot be downloaded by this client yet")
            }
        }
    }
    println!("Results for job {id} are in {}", dest.display());
    Ok(ExitCode::SUCCESS)
}
