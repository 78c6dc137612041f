//! Input sources and result publishers: how data reaches a task and how results leave it.
//!
//! Storage-type names and parameters are Bacalhau's (`../shared/reference/bacalhau-api.md`
//! §1.5–1.6): inputs `ipfs` (`CID`), `urlDownload` (`URL`), `s3` (`Bucket`, `Key`, `Filter`,
//! `Region`, `Endpoint`, `VersionID`), `inline` (`URL` = data URL), `local` / `localDirectory`
//! (`SourcePath`, `ReadWrite`); publishers `local`, `ipfs`, `s3` (`Bucket`, `Key` with
//! `{jobID}`/`{executionID}`/`{nodeID}`/`{date}`/`{time}`, `Endpoint`, `Region`, `Encoding`),
//! `noop`. Parameter keys match case-insensitively ([`SpecConfig::param`]).
//!
//! Implementations here: [`url::UrlDownloadProvider`] (`urlDownload`, behind an SSRF guard),
//! [`s3::S3InputProvider`] and [`s3::S3Publisher`] (`s3`, any S3-compatible service).

pub mod s3;
pub mod url;

pub mod inline;
pub mod ipfs;
pub mod local;
pub mod publish;

use std::path::Path;

use gadus_core::model::{Job, SpecConfig};
use gadus_core::protocol::ExecFailure;

use crate::executor::PreparedInput;

/// Progress messages while preparing (reported as execution events).
pub trait Progress: Send + Sync {
    /// A human-readable step ("downloading https://… (12 MiB of 40 MiB)").
    fn report(&self, message: &str);
}

/// No progress reporting.
pub struct NoProgress;

impl Progress for NoProgress {
    fn report(&self, _: &str) {}
}

/// Makes one kind of input source available on the host.
#[async_trait::async_trait]
pub trait InputProvider: Send + Sync {
    /// The storage type it serves (lower-case, e.g. `urldownload`).
    fn source_type(&self) -> &'static str;

    /// Fetches `source` into `work_dir` (a fresh directory for this input) and says where the
    /// data is; `target` is the path inside the task. Errors are classified
    /// (`InputUnavailable`, `InvalidSpec`, ...).
    async fn prepare(
        &self,
        source: &SpecConfig,
        target: &str,
        work_dir: &Path,
        progress: &dyn Progress,
    ) -> Result<PreparedInput, ExecFailure>;

    /// Whether the input is already held by this node (data locality); `false` if unknown.
    async fn is_local(&self, _source: &SpecConfig) -> bool {
        false
    }
}

/// Publishes an execution's results folder.
#[async_trait::async_trait]
pub trait Publisher: Send + Sync {
    /// The publisher type it serves (lower-case).
    fn publisher_type(&self) -> &'static str;

    /// Publishes `results_dir` (`stdout`, `stderr`, `exitCode`, one folder per ResultPath)
    /// and returns the published result as a storage spec a client can download from
    /// (`{Type: ipfs, Params: {CID}}`, `{Type: urlDownload, Params: {URL}}`, `{Type: s3, ...}`).
    async fn publish(
        &self,
        spec: &SpecConfig,
        job: &Job,
        execution_id: &str,
        node_id: &str,
        results_dir: &Path,
    ) -> Result<SpecConfig, ExecFailure>;
}
