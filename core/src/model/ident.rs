//! The one syntax for identifiers that become part of a path, a store key or a URL.
//!
//! Job IDs of service and daemon jobs are chosen by clients, namespaces too, and execution
//! and node IDs arrive from peers; each of them ends up in a folder name (`gadus get`'s
//! `job-<id>`, a compute node's `executions/<id>`), a fjall key or a URL path. Rather than
//! escaping at each of those places, every identifier is held to one syntax where it enters:
//!
//! - 1 to [`MAX_ID_LEN`] bytes of ASCII letters, digits, `_`, `.` and `-`;
//! - the first character is a letter or a digit.
//!
//! Such a string is always a single, ordinary path component: it can never be `.` or `..`,
//! contain a separator, a NUL, a space, a control character or a percent sign, or start
//! with `-` (which a command line would read as an option). Generated IDs (`j-<uuid>`,
//! `e-<uuid>`, `n-<uuid>`, libp2p peer IDs) all fit.

use std::fmt;

/// Longest identifier, in bytes (a folder name with a prefix stays well under 255).
pub const MAX_ID_LEN: usize = 128;

/// What kind of identifier was refused (for the message).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdKind {
    /// A job ID.
    Job,
    /// A namespace.
    Namespace,
    /// An execution ID.
    Execution,
    /// A node ID.
    Node,
    /// An evaluation ID.
    Evaluation,
}

impl fmt::Display for IdKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IdKind::Job => "job ID",
            IdKind::Namespace => "namespace",
            IdKind::Execution => "execution ID",
            IdKind::Node => "node ID",
            IdKind::Evaluation => "evaluation ID",
        })
    }
}

/// An identifier that does not have the required syntax (whoever sent it is at fault).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{kind} {shown}: {reason}")]
pub struct IdentError {
    /// Which identifier.
    pub kind: IdKind,
    /// The value, quoted and cut to a readable length.
    pub shown: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// The reason `s` is not a valid identifier, if it is not.
pub fn problem(s: &str) -> Option<&'static str> {
    let Some(first) = s.bytes().next() else { return Some("is empty") };
    if s.len() > MAX_ID_LEN {
        return Some("is longer than 128 bytes");
    }
    if !first.is_ascii_alphanumeric() {
        return Some("must start with a letter or a digit");
    }
    if !s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')) {
        return Some("may hold only ASCII letters, digits, '_', '.' and '-'");
    }
    None
}

/// Checks `s` as an identifier of `kind`.
pub fn check(kind: IdKind, s: &str) -> Result<(), IdentError> {
    match problem(s) {
        None => Ok(()),
        Some(reason) => Err(IdentError { kind, shown: shown(s), reason }),
    }
}

/// Whether `s` is a valid identifier.
pub fn is_valid(s: &str) -> bool {
    problem(s).is_none()
}

/// `s` quoted, cut to 64 characters so an error never echoes megabytes.
fn shown(s: &str) -> String {
    let mut out: String = s.chars().take(64).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    format!("{out:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_valid() {
        for id in [
            "j-0e5c2d6f-8f1a-4c8e-9d1a-3b2c1d0e9f8a",
            "e-1",
            "n-abc",
            "12D3KooWGzxzKZYveHXtpG6AsrUJBcWxHBFS2HsEoGTxrMLvKXtf",
            "default",
            "my_service.v2",
            "A",
        ] {
            assert!(is_valid(id), "{id}");
        }
    }

    #[test]
    fn path_tricks_and_oddities_are_refused() {
        for bad in [
            "", ".", "..", "../x", "a/b", "/etc", "a\\b", ".hidden", "-rf", "_x", "a b", "a\0b",
            "a\nb", "a%2Fb", "é", "a?b", "a#b", "a:b",
        ] {
            assert!(!is_valid(bad), "{bad:?}");
        }
        assert!(!is_valid(&"a".repeat(MAX_ID_LEN + 1)));
        assert!(is_valid(&"a".repeat(MAX_ID_LEN)));
    }

    #[test]
    fn errors_name_the_identifier_and_cut_long_values() {
        let e = check(IdKind::Job, &format!("../{}", "x".repeat(500))).unwrap_err();
        let text = e.to_string();
        assert!(text.starts_with("job ID \"../xxx"), "{text}");
        assert!(text.len() < 200, "{text}");
    }
}
