//! `inline` input sources: the data travels inside the job spec as a data URL.
//!
//! Bacalhau's CLI inlines small plaintext (`data:text/plain,...` or base64) and anything larger as
//! a gzipped tarball (`data:application/gzip;base64,...`); `gadus wasm run` inlines a local module
//! as `data:application/wasm;base64,...`. A tarball becomes a directory (unpacked with the same
//! guarded extraction `gadus get` uses), anything else one file named `data`.
//!
//! The spec already passed the API's body limit, so the decoded size is bounded by it; the
//! decoder still checks [`MAX_INLINE_BYTES`] so a provider used elsewhere cannot be fed more.

use std::path::Path;

use base64::Engine as _;
use gadus_core::model::SpecConfig;
use gadus_core::protocol::{ExecFailure, FailureKind};

use super::{InputProvider, Progress};
use crate::executor::PreparedInput;

/// Largest decoded inline payload.
pub const MAX_INLINE_BYTES: usize = 16 << 20;

/// A decoded data URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataUrl {
    /// Media type (`text/plain` when absent).
    pub media_type: String,
    /// Decoded bytes.
    pub data: Vec<u8>,
}

/// Why a data URL was refused (the job author's fault).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DataUrlError {
    /// Not `data:`.
    #[error("not a data URL (must start with \"data:\")")]
    NotDataUrl,
    /// No comma between header and payload.
    #[error("data URL has no ',' separating the media type from the data")]
    NoComma,
    /// Bad base64.
    #[error("data URL payload is not valid base64: {0}")]
    Base64(String),
    /// Bad percent-encoding.
    #[error("data URL payload has an invalid %-escape")]
    Percent,
    /// Too big.
    #[error("data URL payload exceeds {MAX_INLINE_BYTES} bytes")]
    TooLarge,
}

/// Parses an RFC 2397 data URL.
pub fn parse_data_url(url: &str) -> Result<DataUrl, DataUrlError> {
    let rest = url
        .get(..5)
        .filter(|p| p.eq_ignore_ascii_case("data:"))
        .map(|_| &url[5..])
        .ok_or(DataUrlError::NotDataUrl)?;
    let (header, payload) = rest.split_once(',').ok_or(DataUrlError::NoComma)?;
    let mut parts = header.split(';');
    let media_type = parts.next().unwrap_or("").trim();
    let base64 = parts.any(|p| p.trim().eq_ignore_ascii_case("base64"));
    // Decoded length is at most the encoded length: check before decoding.
    if payload.len() > MAX_INLINE_BYTES * 4 / 3 + 4 {
        return Err(DataUrlError::TooLarge);
    }
    let data = if base64 {
        let cleaned: String = payload.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        base64::engine::general_purpose::STANDARD
            .decode(cleaned.as_bytes())
            .or_else(|_| {
                base64::engine::general_purpose::STANDARD_NO_PAD.decode(cleaned.as_bytes())
            })
            .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(cleaned.as_bytes()))
            .map_err(|e| DataUrlError::Base64(e.to_string()))?
    } else {
        percent_decode(payload)?
    };
    if data.len() > MAX_INLINE_BYTES {
        return Err(DataUrlError::TooLarge);
    }
    Ok(DataUrl {
        media_type: if media_type.is_empty() { "text/plain".into() } else { media_type.into() },
        data,
    })
}

fn percent_decode(s: &str) -> Result<Vec<u8>, DataUrlError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3).ok_or(DataUrlError::Percent)?;
            let hex = std::str::from_utf8(hex).map_err(|_| DataUrlError::Percent)?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| DataUrlError::Percent)?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// Whether a media type names a gzipped tarball.
fn is_tarball(media_type: &str) -> bool {
    matches!(
        media_type.to_ascii_lowercase().as_str(),
        "application/gzip"
            | "application/x-gzip"
            | "application/x-tar+gzip"
            | "application/tar+gzip"
    )
}

/// The `inline` input provider.
#[derive(Debug, Default, Clone)]
pub struct InlineProvider;

#[async_trait::async_trait]
impl InputProvider for InlineProvider {
    fn source_type(&self) -> &'static str {
        "inline"
    }

    async fn prepare(
        &self,
        source: &SpecConfig,
        target: &str,
        work_dir: &Path,
        progress: &dyn Progress,
    ) -> Result<PreparedInput, ExecFailure> {
        let url = source.param("URL").and_then(|v| v.as_str()).ok_or_else(|| ExecFailure {
            kind: FailureKind::InvalidSpec,
            message: "inline input needs a URL parameter holding a data URL".into(),
        })?;
        let parsed = parse_data_url(url).map_err(|e| ExecFailure {
            kind: FailureKind::InvalidSpec,
            message: format!("inline input: {e}"),
        })?;
        progress.report(&format!("inline input: {} bytes", parsed.data.len()));
        let host_path = if is_tarball(&parsed.media_type) {
            let dir = work_dir.join("data");
            let data = parsed.data;
            let d = dir.clone();
            tokio::task::spawn_blocking(move || {
                crate::archive::safe_unpack_tar_gz(
                    std::io::Cursor::new(data),
                    &d,
                    &crate::archive::UnpackLimits::default(),
                )
            })
            .await
            .map_err(|e| ExecFailure { kind: FailureKind::Internal, message: e.to_string() })?
            .map_err(|e| ExecFailure {
                kind: FailureKind::InvalidSpec,
                message: format!("inline input tarball: {e}"),
            })?;
            dir
        } else {
            let file = work_dir.join("data");
            tokio::fs::write(&file, &parsed.data).await.map_err(|e| ExecFailure {
                kind: FailureKind::Internal,
                message: format!("writing inline input {}: {e}", file.display()),
            })?;
            file
        };
        Ok(PreparedInput::node_owned(target, host_path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_base64() {
        let d = parse_data_url("data:,hello%20world").unwrap();
        assert_eq!(d.data, b"hello world");
        assert_eq!(d.media_type, "text/plain");
        let d = parse_data_url("data:application/wasm;base64,AGFzbQ==").unwrap();
        assert_eq!(d.data, b"\0asm");
        assert_eq!(d.media_type, "application/wasm");
        assert_eq!(parse_data_url("http://x"), Err(DataUrlError::NotDataUrl));
        assert_eq!(parse_data_url("data:text/plain"), Err(DataUrlError::NoComma));
        assert_eq!(parse_data_url("data:,%4"), Err(DataUrlError::Percent));
        assert!(matches!(parse_data_url("data:;base64,!!!"), Err(DataUrlError::Base64(_))));
    }
}
