//! `gadus get JOB [--output-dir DIR]`: fetch the results of every completed execution into
//! `DIR/job-<id>/` — `stdout`, `stderr`, `exitCode`, one folder per ResultPath.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use serde_json::Value;

use gadus_core::model::ident::{self, IdKind};

use super::Global;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Job ID, unique prefix or name.
    id: String,
    /// Where to put `job-<id>/` (default: the current directory).
    #[arg(long, short = 'o', alias = "output-dir")]
    output_dir: Option<PathBuf>,
    /// Keep each execution's unmerged results under `raw/`.
    #[arg(long)]
    raw: bool,
}

pub async fn run(g: &Global, args: Args) -> anyhow::Result<ExitCode> {
    let c = g.client()?;
    let v = c.get(&format!("/api/v1/orchestrator/jobs/{}?include=executions", args.id)).await?;
    let id = v["Job"]["ID"].as_str().context("no job ID in the answer")?.to_string();
    let ns = v["Job"]["Namespace"].as_str().unwrap_or("default");
    let dir_name = results_folder_name(&id, ns)?;
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
    // Each execution's results are staged under raw/<execution>/ and then merged, as
    // Bacalhau's `job get` does; raw/ is removed unless --raw.
    let raw = dest.join("raw");
    for e in &completed {
        let exec_id = e["ID"].as_str().unwrap_or("execution");
        // The server names this folder: it is checked like any identifier from outside.
        ident::check(IdKind::Execution, exec_id)
            .map_err(|e| anyhow::anyhow!("the node answered with a bad {e}"))?;
        let stage = raw.join(exec_id);
        if stage.exists() {
            std::fs::remove_dir_all(&stage)
                .with_context(|| format!("clearing {}", stage.display()))?;
        }
        fetch_one(&c, e, &stage).await.with_context(|| format!("execution {exec_id}"))?;
    }
    for e in &completed {
        let exec_id = e["ID"].as_str().unwrap_or("execution");
        merge(&raw.join(exec_id), &dest)?;
    }
    if !args.raw {
        std::fs::remove_dir_all(&raw).with_context(|| format!("removing {}", raw.display()))?;
    }
    println!("Results for job {id} are in {}", dest.display());
    Ok(ExitCode::SUCCESS)
}

/// `job-<id>` (or `job-<namespace>-<id>`): both come from the server, so both are checked
/// before they name a folder; a node answering `../../.ssh` gets an error, not a write.
fn results_folder_name(id: &str, namespace: &str) -> anyhow::Result<String> {
    ident::check(IdKind::Job, id)
        .and_then(|()| ident::check(IdKind::Namespace, namespace))
        .map_err(|e| anyhow::anyhow!("the node answered with a bad {e}"))?;
    Ok(if namespace == "default" { format!("job-{id}") } else { format!("job-{namespace}-{id}") })
}

/// Largest archive `gadus get` downloads (and unpacks).
const MAX_RESULT_BYTES: u64 = 64 << 30;

/// Puts one execution's results into `stage` (created here).
async fn fetch_one(c: &crate::client::Client, e: &Value, stage: &Path) -> anyhow::Result<()> {
    let published = &e["PublishedResult"];
    let kind = published["Type"].as_str().unwrap_or("").to_ascii_lowercase();
    let param = |k: &str| {
        published["Params"]
            .as_object()
            .and_then(|m| m.iter().find(|(key, _)| key.eq_ignore_ascii_case(k)))
            .and_then(|(_, v)| v.as_str())
            .map(str::to_string)
    };
    match kind.as_str() {
        "" | "noop" => {
            // Nothing was published: what the node returned inline is all there is.
            std::fs::create_dir_all(stage)?;
            let out = &e["RunOutput"];
            std::fs::write(stage.join("stdout"), out["Stdout"].as_str().unwrap_or(""))?;
            std::fs::write(stage.join("stderr"), out["stderr"].as_str().unwrap_or(""))?;
            std::fs::write(stage.join("exitCode"), out["ExitCode"].to_string())?;
        }
        "urldownload" => {
            let url = param("URL").context("urlDownload result without a URL")?;
            let tmp = tempfile::tempdir()?;
            let archive = tmp.path().join("results.tar.gz");
            c.download_to(&url, &archive, MAX_RESULT_BYTES).await?;
            let stage = stage.to_path_buf();
            tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
                let f = std::fs::File::open(&archive)?;
                std::fs::create_dir_all(&stage)?;
                gadus_io::archive::safe_unpack_tar_gz(
                    std::io::BufReader::new(f),
                    &stage,
                    &gadus_io::archive::UnpackLimits::default(),
                )
                .map_err(|e| anyhow::anyhow!("refusing the results archive from {url}: {e}"))?;
                Ok(())
            })
            .await??;
        }
        "ipfs" => {
            let cid = param("CID").context("ipfs result without a CID")?;
            if let Some(parent) = stage.parent() {
                std::fs::create_dir_all(parent)?;
            }
            super::data::fetch_verified(c, &cid, stage).await?;
        }
        "s3" => fetch_s3(published, stage).await?,
        other => bail!("results published with {other:?} cannot be downloaded by this client"),
    }
    Ok(())
}

/// Downloads an `s3` published result with this user's AWS credentials (environment): a
/// `.tar.gz` object is unpacked with the same guards as a `local` archive; a `plain` prefix is
/// copied as is.
async fn fetch_s3(published: &Value, stage: &Path) -> anyhow::Result<()> {
    use gadus_io::storage::InputProvider;
    let spec: gadus_core::model::SpecConfig =
        serde_json::from_value(published.clone()).context("the s3 result is not a storage spec")?;
    let config = gadus_io::storage::s3::S3Config {
        credentials: gadus_io::storage::s3::S3Credentials::from_env(),
        // The client talks to whatever endpoint the result names, including a local one.
        endpoint_policy: gadus_io::storage::url::UrlPolicy {
            allow_loopback: true,
            allow_private: true,
            ..Default::default()
        },
        max_input_bytes: MAX_RESULT_BYTES,
        ..Default::default()
    };
    let provider = gadus_io::storage::s3::S3InputProvider::new(config);
    let tmp = tempfile::tempdir()?;
    let got = provider
        .prepare(&spec, "/results", tmp.path(), &gadus_io::storage::NoProgress)
        .await
        .map_err(|e| anyhow::anyhow!("downloading the s3 result: {}", e.message))?;
    let stage = stage.to_path_buf();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        std::fs::create_dir_all(&stage)?;
        if got.host_path.is_file() {
            let f = std::fs::File::open(&got.host_path)?;
            gadus_io::archive::safe_unpack_tar_gz(
                std::io::BufReader::new(f),
                &stage,
                &gadus_io::archive::UnpackLimits::default(),
            )
            .map_err(|e| anyhow::anyhow!("refusing the s3 results archive: {e}"))?;
        } else {
            merge(&got.host_path, &stage)?;
        }
        Ok(())
    })
    .await??;
    Ok(())
}

/// Merges a staged execution into `dest`: `stdout`/`stderr` are appended, `exitCode` keeps the
/// last, result folders are merged (an existing file of the same name is kept and the new one
/// written next to it with the execution's suffix).
fn merge(stage: &Path, dest: &Path) -> anyhow::Result<()> {
    let Ok(entries) = std::fs::read_dir(stage) else { return Ok(()) };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let from = entry.path();
        let to = dest.join(&name);
        let meta = std::fs::symlink_metadata(&from)?;
        if meta.file_type().is_symlink() {
            continue; // never follow or recreate links from results
        }
        if meta.is_dir() {
            std::fs::create_dir_all(&to)?;
            merge(&from, &to)?;
        } else if (name == "stdout" || name == "stderr") && to.is_file() {
            let mut out = std::fs::OpenOptions::new().append(true).open(&to)?;
            std::io::copy(&mut std::fs::File::open(&from)?, &mut out)?;
        } else if to.exists() && name != "exitCode" {
            let mut alt = to.clone().into_os_string();
            alt.push(".1");
            std::fs::copy(&from, PathBuf::from(alt))?;
        } else {
            std::fs::copy(&from, &to)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_names_from_the_server_are_checked() {
        assert_eq!(results_folder_name("j-1", "default").unwrap(), "job-j-1");
        assert_eq!(results_folder_name("svc", "team").unwrap(), "job-team-svc");
        for (id, ns) in [
            ("../../.ssh", "default"),
            ("a/b", "default"),
            ("..", "default"),
            ("j-1", "../x"),
            ("j-1", "a/b"),
            ("", "default"),
        ] {
            let e = results_folder_name(id, ns).unwrap_err().to_string();
            assert!(e.contains("bad"), "{id:?} {ns:?}: {e}");
        }
    }
}
