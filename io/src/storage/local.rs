//! `local` (and legacy `localDirectory`) input sources: a host path mounted into the task.
//!
//! A job must never reach a host path the operator did not offer. The node's allow-list
//! (`Compute.AllowListedLocalPaths`, entries `path[:ro|:rw]`, Bacalhau's form) is resolved to
//! canonical paths once; each request's `SourcePath` is canonicalised too (so `..` and symlinks
//! are resolved before the comparison) and must lie under an entry. Read-write access needs an
//! entry that grants `:rw` *and* the source's `ReadWrite: true`.
//!
//! Nothing is copied. What was checked is opened without following symlinks and held open
//! ([`crate::pinned`]); the executor mounts that open object (read-only unless writable),
//! never the path, which may be swapped for a symlink after the check.

use std::path::{Path, PathBuf};

use gadus_core::model::SpecConfig;
use gadus_core::protocol::{ExecFailure, FailureKind};

use super::{InputProvider, Progress};
use crate::executor::PreparedInput;
use crate::pinned::PinnedPath;

/// One allow-listed host path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedPath {
    /// Canonical host path.
    pub path: PathBuf,
    /// Whether jobs may write to it.
    pub writable: bool,
}

/// Why an allow-list entry was refused (the operator's fault).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Compute.AllowListedLocalPaths entry {entry:?}: {reason}")]
pub struct AllowListError {
    /// The entry as configured.
    pub entry: String,
    /// Why.
    pub reason: String,
}

/// Parses `path[:ro|:rw]` entries; paths that do not exist are skipped with a warning (a mount
/// may appear later, but it cannot be canonicalised now), relative paths are refused.
pub fn parse_allow_list(entries: &[String]) -> Result<Vec<AllowedPath>, AllowListError> {
    let mut out = Vec::new();
    for entry in entries {
        let (path, writable) = match entry.rsplit_once(':') {
            Some((p, "rw")) => (p, true),
            Some((p, "ro")) => (p, false),
            _ => (entry.as_str(), false),
        };
        // Bacalhau allows a trailing `/*` meaning "anything below".
        let path = path.trim_end_matches("/*");
        let p = Path::new(path);
        if !p.is_absolute() {
            return Err(AllowListError {
                entry: entry.clone(),
                reason: "the path must be absolute".into(),
            });
        }
        match p.canonicalize() {
            Ok(c) => out.push(AllowedPath { path: c, writable }),
            Err(e) => tracing::warn!(entry, error = %e, "allow-listed local path is not usable"),
        }
    }
    Ok(out)
}

/// The `local` input provider.
#[derive(Debug, Clone)]
pub struct LocalProvider {
    allowed: Vec<AllowedPath>,
    kind: &'static str,
}

impl LocalProvider {
    /// A provider for storage type `local`.
    pub fn new(allowed: Vec<AllowedPath>) -> Self {
        Self { allowed, kind: "local" }
    }

    /// The same provider under the legacy name `localDirectory`.
    pub fn legacy(allowed: Vec<AllowedPath>) -> Self {
        Self { allowed, kind: "localdirectory" }
    }

    /// Checks a request against the allow-list; returns the canonical path.
    pub fn check(&self, source: &str, read_write: bool) -> Result<PathBuf, ExecFailure> {
        let refuse = |why: String| ExecFailure { kind: FailureKind::InvalidSpec, message: why };
        let p = Path::new(source);
        if !p.is_absolute() {
            return Err(refuse(format!("local input {source:?}: SourcePath must be absolute")));
        }
        let canonical = p.canonicalize().map_err(|e| ExecFailure {
            kind: FailureKind::InputUnavailable,
            message: format!("local input {source:?}: {e}"),
        })?;
        let grant = self.allowed.iter().find(|a| canonical.starts_with(&a.path));
        match grant {
            None => Err(refuse(format!(
                "local input {source:?} is not under any path this node allows \
                 (Compute.AllowListedLocalPaths)"
            ))),
            Some(a) if read_write && !a.writable => Err(refuse(format!(
                "local input {source:?} asks for ReadWrite but {} is allowed read-only",
                a.path.display()
            ))),
            Some(_) => Ok(canonical),
        }
    }
}

impl LocalProvider {
    /// Checks a request and opens what it names, following no symlink at any component,
    /// so the engine gets that very object even if the path is swapped afterwards
    /// ([`crate::pinned`]). Symlinks in the request are resolved first (to a place that
    /// must be allowed); one appearing between the check and the open is refused.
    pub fn pin(&self, source: &str, read_write: bool) -> Result<PinnedPath, ExecFailure> {
        let canonical = self.check(source, read_write)?;
        PinnedPath::open_no_symlinks(&canonical).map_err(|e| {
            let why = if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
                "it changed while being checked (a symlink appeared in the path)".to_string()
            } else {
                e.to_string()
            };
            ExecFailure {
                kind: FailureKind::InputUnavailable,
                message: format!(
                    "local input {source:?}: cannot open {}: {why}",
                    canonical.display()
                ),
            }
        })
    }
}

#[async_trait::async_trait]
impl InputProvider for LocalProvider {
    fn source_type(&self) -> &'static str {
        self.kind
    }

    async fn prepare(
        &self,
        source: &SpecConfig,
        target: &str,
        _work_dir: &Path,
        progress: &dyn Progress,
    ) -> Result<PreparedInput, ExecFailure> {
        let path = source.param_str("SourcePath").ok_or_else(|| ExecFailure {
            kind: FailureKind::InvalidSpec,
            message: "local input needs a SourcePath parameter".into(),
        })?;
        let rw = match source.param("ReadWrite") {
            Some(serde_json::Value::Bool(b)) => *b,
            Some(serde_json::Value::String(s)) => s.eq_ignore_ascii_case("true"),
            _ => false,
        };
        let pinned = self.pin(path, rw)?;
        progress.report(&format!("mounting {}", pinned.checked_path().display()));
        Ok(PreparedInput {
            target: target.to_string(),
            host_path: pinned.magic_path().to_path_buf(),
            writable: rw,
            pinned: Some(pinned),
        })
    }

    async fn is_local(&self, source: &SpecConfig) -> bool {
        source.param_str("SourcePath").is_some_and(|p| self.check(p, false).is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list_is_enforced_after_canonicalisation() {
        let root = tempfile::tempdir().unwrap();
        let ro = root.path().join("ro");
        let rw = root.path().join("rw");
        let secret = root.path().join("secret");
        for d in [&ro, &rw, &secret] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::os::unix::fs::symlink(&secret, ro.join("link")).unwrap();
        let allowed = parse_allow_list(&[
            format!("{}:ro", ro.display()),
            format!("{}:rw", rw.display()),
            "/does/not/exist".into(),
        ])
        .unwrap();
        assert_eq!(allowed.len(), 2);
        let p = LocalProvider::new(allowed);
        assert!(p.check(ro.to_str().unwrap(), false).is_ok());
        assert!(p.check(ro.to_str().unwrap(), true).is_err(), "ro entry grants no write");
        assert!(p.check(rw.to_str().unwrap(), true).is_ok());
        assert!(p.check(secret.to_str().unwrap(), false).is_err());
        let escape = format!("{}/../secret", ro.display());
        assert!(p.check(&escape, false).is_err(), "`..` resolved before the check");
        let via_link = format!("{}/link", ro.display());
        assert!(p.check(&via_link, false).is_err(), "symlink resolved before the check");
        assert!(p.check("relative/path", false).is_err());
        assert!(parse_allow_list(&["relative:ro".into()]).is_err());
    }
}
