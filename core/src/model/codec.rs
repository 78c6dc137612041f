//! Bounded, lenient decoding of untrusted JSON and YAML, and exact encoding.
//!
//! Decoding checks the size first, goes through [`CaseInsensitive`] (Go-style key matching,
//! unknown keys ignored) and reports the path of the first offending field
//! (`Tasks[0].Resources: invalid type: ...`). serde_json and yaml_serde both stop at 128 levels
//! of nesting, and yaml_serde refuses alias expansion bombs, so no input can exhaust the stack
//! or memory beyond a small multiple of its size; YAML flow nesting is bounded by a linear
//! pre-scan before the parser sees it (see [`MAX_YAML_FLOW_DEPTH`]).

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::job::Job;
use super::lenient::CaseInsensitive;

/// Largest job spec or API body decoded (matches Bacalhau's 10 MB body limit).
pub const MAX_SPEC_BYTES: usize = 10 * 1024 * 1024;

/// Why bytes could not be decoded. The sender is at fault in every case.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input exceeds the size limit; nothing was parsed.
    #[error("input is {size} bytes; the limit is {limit} bytes")]
    TooLarge {
        /// Input size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Malformed syntax or a value of the wrong type; the message names the field.
    #[error("{0}")]
    Invalid(String),
}

fn path_error<E: std::fmt::Display>(e: serde_path_to_error::Error<E>) -> DecodeError {
    let path = e.path().to_string();
    if path == "." || path.is_empty() {
        DecodeError::Invalid(e.inner().to_string())
    } else {
        DecodeError::Invalid(format!("{path}: {}", e.inner()))
    }
}

fn check_size(bytes: &[u8], limit: usize) -> Result<(), DecodeError> {
    if bytes.len() > limit {
        return Err(DecodeError::TooLarge { size: bytes.len(), limit });
    }
    Ok(())
}

/// Decodes JSON leniently (case-insensitive keys, unknown keys ignored), at most `limit` bytes.
pub fn from_json<T: DeserializeOwned>(bytes: &[u8], limit: usize) -> Result<T, DecodeError> {
    check_size(bytes, limit)?;
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let v = serde_path_to_error::deserialize(CaseInsensitive(&mut de)).map_err(path_error)?;
    de.end().map_err(|e| DecodeError::Invalid(e.to_string()))?;
    Ok(v)
}

/// Decodes YAML leniently, at most `limit` bytes.
pub fn from_yaml<T: DeserializeOwned>(bytes: &[u8], limit: usize) -> Result<T, DecodeError> {
    check_size(bytes, limit)?;
    check_flow_depth(bytes)?;
    let de = yaml_serde::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(CaseInsensitive(de)).map_err(path_error)
}

/// Deepest `[`/`{` nesting a YAML document may have. The YAML parser reads a whole flow
/// collection before the deserializer's own 128-level limit can refuse it, in time that grows
/// with the square of the depth (100,000 `[` took 20 s): a linear pre-scan refuses it first.
/// Generous, because the scan also counts brackets inside plain and block scalars.
pub const MAX_YAML_FLOW_DEPTH: usize = 512;

/// Refuses YAML whose flow collections nest deeper than [`MAX_YAML_FLOW_DEPTH`] (skipping
/// quoted scalars and comments), in one pass.
fn check_flow_depth(bytes: &[u8]) -> Result<(), DecodeError> {
    let mut depth = 0usize;
    let mut i = 0;
    let mut prev = b'\n';
    while let Some(&b) = bytes.get(i) {
        match b {
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_YAML_FLOW_DEPTH {
                    return Err(DecodeError::Invalid(format!(
                        "YAML collections nested deeper than {MAX_YAML_FLOW_DEPTH} levels"
                    )));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b'#' if prev.is_ascii_whitespace() => {
                while bytes.get(i).is_some_and(|c| *c != b'\n') {
                    i += 1;
                }
                continue;
            }
            b'\'' | b'"' if matches!(prev, b' ' | b'\t' | b'\n' | b'[' | b'{' | b',' | b':') => {
                // A quoted scalar: skip to its closing quote (`''` and `\"` escapes).
                i += 1;
                while let Some(&c) = bytes.get(i) {
                    if b == b'"' && c == b'\\' {
                        i += 2;
                        continue;
                    }
                    if c == b {
                        if b == b'\'' && bytes.get(i + 1) == Some(&b'\'') {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
            }
            _ => {}
        }
        prev = bytes.get(i).copied().unwrap_or(b' ');
        i += 1;
    }
    Ok(())
}

/// Decodes JSON when the first non-blank byte is `{`, YAML otherwise (YAML is the CLI's
/// default job file format; JSON files are also valid YAML but JSON errors read better).
pub fn from_json_or_yaml<T: DeserializeOwned>(
    bytes: &[u8],
    limit: usize,
) -> Result<T, DecodeError> {
    check_size(bytes, limit)?;
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => from_json(bytes, limit),
        _ => from_yaml(bytes, limit),
    }
}

/// Encodes with the exact Go key spellings.
pub fn to_json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("model types always encode to JSON")
}

/// Encodes indented JSON.
pub fn to_json_pretty<T: Serialize>(v: &T) -> String {
    serde_json::to_string_pretty(v).expect("model types always encode to JSON")
}

/// Encodes YAML.
pub fn to_yaml<T: Serialize>(v: &T) -> String {
    yaml_serde::to_string(v).expect("model types always encode to YAML")
}

impl Job {
    /// Decodes a job from JSON (bounded, lenient).
    pub fn from_json(bytes: &[u8]) -> Result<Job, DecodeError> {
        from_json(bytes, MAX_SPEC_BYTES)
    }

    /// Decodes a job from YAML (bounded, lenient).
    pub fn from_yaml(bytes: &[u8]) -> Result<Job, DecodeError> {
        from_yaml(bytes, MAX_SPEC_BYTES)
    }

    /// Decodes a job file in either format.
    pub fn from_file_bytes(bytes: &[u8]) -> Result<Job, DecodeError> {
        from_json_or_yaml(bytes, MAX_SPEC_BYTES)
    }
}
