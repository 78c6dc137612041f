//! Errors of the content store, grouped by who is at fault.
//!
//! * [`RequestError`] — the caller asked for something invalid or absent (bad options, a path
//!   that does not exist in the DAG, a destination that already exists).
//! * [`UntrustedError`] — bytes that came from outside (a peer, a gateway, a CAR file, or a DAG
//!   whose blocks someone else authored) are invalid; they were refused and nothing was stored.
//! * [`LocalError`] — this machine failed: the disk or the database.
//! * [`RemoteError`] — no gateway delivered (connection failures, HTTP errors, timeouts); every
//!   attempt's reason is kept.
//!
//! The split maps directly onto execution failures: a request error is the job's fault, an
//! untrusted or remote error means the input is unavailable, a local error is the node's.

use std::path::PathBuf;

use cid::Cid;

/// Any error of [`crate::content`]. The details are boxed (CIDs are ~100 bytes) so `Result`s
/// stay small on the hot paths; match with [`Self::request`], [`Self::untrusted`], ... .
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    /// The caller's fault.
    #[error(transparent)]
    Request(Box<RequestError>),
    /// Bytes from outside are invalid (refused, not stored).
    #[error(transparent)]
    Untrusted(Box<UntrustedError>),
    /// The local disk or database failed.
    #[error(transparent)]
    Local(Box<LocalError>),
    /// No gateway delivered.
    #[error(transparent)]
    Remote(Box<RemoteError>),
}

/// The caller asked for something invalid or absent.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// Import/export options out of range.
    #[error("invalid options: {0}")]
    InvalidOptions(String),
    /// A block needed for the operation is not in the store.
    #[error("block {0} is not in the store")]
    MissingBlock(Cid),
    /// A CID string or content path could not be parsed.
    #[error("invalid content path {path:?}: {reason}")]
    InvalidPath {
        /// What was given.
        path: String,
        /// Why it was refused.
        reason: String,
    },
    /// A path component names no entry in the directory.
    #[error("no entry {name:?} in directory {dir}")]
    NoSuchEntry {
        /// The directory's CID.
        dir: Cid,
        /// The missing name.
        name: String,
    },
    /// The CID names a directory (or symlink) where a file was required.
    #[error("{0} is not a file")]
    NotAFile(Cid),
    /// The CID names a file (or symlink) where a directory was required.
    #[error("{0} is not a directory")]
    NotADirectory(Cid),
    /// The CID's codec is neither dag-pb nor raw, so it has no UnixFS meaning.
    #[error("{cid} uses codec {codec:#x}, which is not UnixFS (dag-pb or raw)")]
    NotUnixFs {
        /// The CID.
        cid: Cid,
        /// Its codec.
        codec: u64,
    },
    /// Export never overwrites: the destination must not exist.
    #[error("destination {0} already exists")]
    DestinationExists(PathBuf),
    /// An import source is not a regular file, directory or symlink (a fifo, socket, device).
    #[error("{0} is not a regular file, directory or symlink")]
    UnsupportedFileType(PathBuf),
    /// A file or directory name on disk cannot be a UnixFS link name (not UTF-8).
    #[error("{0} has a name that is not UTF-8")]
    NonUtf8Name(PathBuf),
    /// A directory has too many entries for one unsharded directory block.
    #[error(
        "directory {path} is too large for one block ({bytes} bytes); HAMT sharding is not implemented"
    )]
    DirectoryTooLarge {
        /// The directory on disk.
        path: PathBuf,
        /// The size its block would have.
        bytes: usize,
    },
    /// Directory nesting on disk deeper than [`crate::content::MAX_PATH_DEPTH`].
    #[error("{0} is nested too deeply")]
    TooDeep(PathBuf),
    /// The CID is pinned; unpin it first.
    #[error("{0} is pinned")]
    Pinned(Cid),
    /// An export or fetch produced more than the caller's limit allows.
    #[error("limit exceeded: {0}")]
    LimitExceeded(String),
}

/// Bytes from outside are invalid. Whatever carried them was refused and nothing from it was
/// stored.
#[derive(Debug, thiserror::Error)]
pub enum UntrustedError {
    /// The block's bytes do not hash to its CID: a lying or broken peer.
    #[error("block bytes do not match {0}")]
    HashMismatch(Cid),
    /// A hash function we cannot verify (only sha2-256 and identity are supported).
    #[error("{cid} uses hash function {code:#x}, which this store cannot verify")]
    UnsupportedHash {
        /// The CID.
        cid: Cid,
        /// Its multihash code.
        code: u64,
    },
    /// A block above [`crate::content::MAX_BLOCK_SIZE`].
    #[error("block of {size} bytes exceeds the {max}-byte limit")]
    BlockTooLarge {
        /// Its size (or a lower bound of it).
        size: u64,
        /// The limit.
        max: u64,
    },
    /// A dag-pb or UnixFS block that does not decode, or a DAG that is inconsistent.
    #[error("malformed block {cid}: {reason}")]
    Malformed {
        /// The block.
        cid: Cid,
        /// What is wrong.
        reason: String,
    },
    /// A directory entry whose name could escape the export directory (`..`, `/`, NUL, empty)
    /// or is duplicated.
    #[error("unsafe entry name {name:?} in directory {dir}")]
    UnsafeName {
        /// The directory's CID.
        dir: Cid,
        /// The refused name (lossy UTF-8).
        name: String,
    },
    /// A symlink whose target is absolute or climbs out of the export root.
    #[error("unsafe symlink target {target:?} in {cid}")]
    UnsafeSymlink {
        /// The symlink node.
        cid: Cid,
        /// Its target (lossy UTF-8).
        target: String,
    },
    /// A DAG nested deeper than the traversal allows.
    #[error("DAG under {0} is nested too deeply")]
    TooDeep(Cid),
    /// A CAR stream that does not decode.
    #[error("invalid CAR: {0}")]
    Car(String),
    /// A CAR or gateway answer whose roots are not what was asked for.
    #[error("CAR roots {got:?} do not include the requested {want}")]
    WrongRoot {
        /// The requested root.
        want: Cid,
        /// The roots the peer sent.
        got: Vec<Cid>,
    },
}

/// This machine failed.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// A file-system operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was attempted ("read", "create", ...).
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// An I/O error on a caller-supplied reader or writer.
    #[error("stream: {0}")]
    Stream(#[source] std::io::Error),
    /// The block database failed.
    #[error("block database: {0}")]
    Database(#[from] fjall::Error),
    /// A background task died (panicked or was cancelled).
    #[error("background task failed: {0}")]
    Task(String),
}

/// No gateway delivered the content.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// No base URL was configured.
    #[error("no gateway configured")]
    NoGateways,
    /// A base URL is not an `http`/`https` URL.
    #[error("invalid gateway URL {url:?}: {reason}")]
    InvalidUrl {
        /// The configured value.
        url: String,
        /// Why.
        reason: String,
    },
    /// The HTTP client could not be built (TLS setup).
    #[error("http client: {0}")]
    Client(String),
    /// Every gateway failed; one line per attempt.
    #[error("all {} gateways failed for {cid}: {}", attempts.len(), attempts.iter().map(|(u, e)| format!("{u}: {e}")).collect::<Vec<_>>().join("; "))]
    AllFailed {
        /// What was fetched.
        cid: Cid,
        /// `(url, reason)` per attempt, in order.
        attempts: Vec<(String, String)>,
    },
}

impl ContentError {
    /// Shorthand for a [`LocalError::Io`].
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        LocalError::Io { op, path: path.into(), source }.into()
    }

    /// Shorthand for an [`UntrustedError::Malformed`].
    pub(crate) fn malformed(cid: Cid, reason: impl Into<String>) -> Self {
        UntrustedError::Malformed { cid, reason: reason.into() }.into()
    }

    /// The caller's error, if it is one.
    pub fn request(&self) -> Option<&RequestError> {
        if let Self::Request(e) = self { Some(e) } else { None }
    }

    /// The untrusted-input error, if it is one.
    pub fn untrusted(&self) -> Option<&UntrustedError> {
        if let Self::Untrusted(e) = self { Some(e) } else { None }
    }

    /// The local error, if it is one.
    pub fn local(&self) -> Option<&LocalError> {
        if let Self::Local(e) = self { Some(e) } else { None }
    }

    /// The remote error, if it is one.
    pub fn remote(&self) -> Option<&RemoteError> {
        if let Self::Remote(e) = self { Some(e) } else { None }
    }
}

impl From<RequestError> for ContentError {
    fn from(e: RequestError) -> Self {
        Self::Request(Box::new(e))
    }
}

impl From<UntrustedError> for ContentError {
    fn from(e: UntrustedError) -> Self {
        Self::Untrusted(Box::new(e))
    }
}

impl From<LocalError> for ContentError {
    fn from(e: LocalError) -> Self {
        Self::Local(Box::new(e))
    }
}

impl From<RemoteError> for ContentError {
    fn from(e: RemoteError) -> Self {
        Self::Remote(Box::new(e))
    }
}

impl From<fjall::Error> for ContentError {
    fn from(e: fjall::Error) -> Self {
        LocalError::Database(e).into()
    }
}

/// Result alias of this module.
pub type Result<T, E = ContentError> = std::result::Result<T, E>;
