//! The `local` and `noop` publishers.
//!
//! `local` (Bacalhau's default for single-node setups): the compute node packs the results
//! folder into `<execution-id>.tar.gz` under its data dir and serves it over HTTP; the
//! published result is `{Type: urlDownload, Params: {URL}}`, which `gadus get` (or `curl`)
//! downloads and unpacks. gadus serves these files from the node's own API server (route
//! `/results/{execution-id}.tar.gz`), so there is no second port to open; `base_url` is the
//! address other machines reach that server at.
//!
//! `noop` publishes nothing: the inline stdout/stderr in the execution is all there is.

use std::path::{Path, PathBuf};

use gadus_core::model::{Job, SpecConfig};
use gadus_core::protocol::{ExecFailure, FailureKind};

use super::Publisher;

/// The `local` publisher.
#[derive(Debug, Clone)]
pub struct LocalPublisher {
    dir: PathBuf,
    base_url: String,
}

impl LocalPublisher {
    /// Archives go to `dir`; URLs are `<base_url>/results/<file>`.
    pub fn new(dir: PathBuf, base_url: String) -> Self {
        Self { dir, base_url: base_url.trim_end_matches('/').to_string() }
    }

    /// The archive served for `file` (`<execution-id>.tar.gz`), if the name is one this
    /// publisher could have written (no path separators or dot-files).
    pub fn archive_path(&self, file: &str) -> Option<PathBuf> {
        let ok = file.ends_with(".tar.gz")
            && !file.starts_with('.')
            && file.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        ok.then(|| self.dir.join(file))
    }
}

#[async_trait::async_trait]
impl Publisher for LocalPublisher {
    fn publisher_type(&self) -> &'static str {
        "local"
    }

    async fn publish(
        &self,
        _spec: &SpecConfig,
        _job: &Job,
        execution_id: &str,
        _node_id: &str,
        results_dir: &Path,
    ) -> Result<SpecConfig, ExecFailure> {
        let name = format!("{execution_id}.tar.gz");
        let Some(path) = self.archive_path(&name) else {
            return Err(ExecFailure {
                kind: FailureKind::Internal,
                message: format!("execution ID {execution_id:?} is not a safe file name"),
            });
        };
        let dir = self.dir.clone();
        let results = results_dir.to_path_buf();
        let fail = |m: String| ExecFailure { kind: FailureKind::PublishFailed, message: m };
        tokio::task::spawn_blocking(move || -> Result<(), String> {
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("creating {}: {e}", dir.display()))?;
            // Written under a temporary name and renamed: a download never sees half a file.
            let tmp = path.with_extension("partial");
            let f = std::fs::File::create(&tmp)
                .map_err(|e| format!("creating {}: {e}", tmp.display()))?;
            let w = crate::archive::pack_tar_gz(&results, std::io::BufWriter::new(f))
                .map_err(|e| format!("packing results: {e}"))?;
            // Flush and sync explicitly: a BufWriter dropped with an error loses it silently.
            let f = w.into_inner().map_err(|e| format!("writing {}: {e}", tmp.display()))?;
            f.sync_data().map_err(|e| format!("syncing {}: {e}", tmp.display()))?;
            std::fs::rename(&tmp, &path).map_err(|e| format!("renaming {}: {e}", tmp.display()))
        })
        .await
        .map_err(|e| fail(e.to_string()))?
        .map_err(fail)?;
        Ok(SpecConfig::new("urlDownload")
            .with_param("URL", format!("{}/results/{name}", self.base_url)))
    }
}

/// The `noop` publisher.
#[derive(Debug, Default, Clone)]
pub struct NoopPublisher;

#[async_trait::async_trait]
impl Publisher for NoopPublisher {
    fn publisher_type(&self) -> &'static str {
        "noop"
    }

    async fn publish(
        &self,
        _spec: &SpecConfig,
        _job: &Job,
        _execution_id: &str,
        _node_id: &str,
        _results_dir: &Path,
    ) -> Result<SpecConfig, ExecFailure> {
        Ok(SpecConfig::new("noop"))
    }
}
