//! The messages between orchestrators and compute nodes, and their byte encoding.
//!
//! ## Encoding
//!
//! A frame is a 4-byte big-endian length followed by that many bytes of
//! `bincode(Envelope)` (bincode 2, standard varint configuration, **with an explicit byte
//! limit**). [`decode_frame`] checks the length against [`MAX_FRAME_BYTES`] before looking at
//! the payload, and bincode refuses any length prefix inside the payload that would claim more
//! than the limit, so decoding any byte string returns a value or a [`WireError`], never
//! panics, and never allocates more than the frame limit.
//!
//! Wire types are plain (no `skip_serializing_if`, no `serde_json::Value`), because bincode is
//! not self-describing. The job spec and published results, which carry free-form JSON
//! parameters, travel as JSON text inside the frame and are decoded with the same bounded,
//! lenient decoder as the REST API.
//!
//! ## Delivery
//!
//! The network may drop, duplicate, delay and reorder messages. Handlers are idempotent
//! (keyed by execution ID and attempt number); compute nodes re-send execution updates until
//! the orchestrator acknowledges them, and report every execution they hold in each
//! heartbeat, which lets the orchestrator re-send what was lost and detect what a node forgot.

use serde::{Deserialize, Serialize};

use crate::model::{Job, Resources, RunCommandResult, SpecConfig};

/// Bumped on any incompatible change to [`Envelope`] or [`Message`].
pub const PROTOCOL_VERSION: u16 = 1;

/// Largest frame payload accepted (and the bincode decode limit).
pub const MAX_FRAME_BYTES: usize = 4 * 1024 * 1024;

/// The protocol name nodes advertise in `NodeInfo.SupportedProtocols`.
pub const PROTOCOL_NAME: &str = "gadus/1";

/// A node's identity on the wire.
pub type NodeId = String;

/// Identifies one attempt of one execution. `attempt` is the job-wide fencing number: it grows
/// with every execution the orchestrator creates for the job, and a message naming an attempt
/// the orchestrator no longer considers live is ignored (and counted).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ExecRef {
    /// `e-<uuid>`.
    pub execution_id: String,
    /// `j-<uuid>`.
    pub job_id: String,
    /// Fencing number.
    pub attempt: u64,
}

/// Resources in integer units, for the wire (millicores avoid float drift in sums).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireResources {
    /// Thousandths of a core.
    pub cpu_milli: u64,
    /// Bytes.
    pub memory: u64,
    /// Bytes.
    pub disk: u64,
    /// GPUs.
    pub gpu: u64,
}

impl From<&Resources> for WireResources {
    fn from(r: &Resources) -> Self {
        WireResources {
            cpu_milli: (r.cpu * 1000.0).round().max(0.0) as u64,
            memory: r.memory,
            disk: r.disk,
            gpu: r.gpu,
        }
    }
}

impl From<WireResources> for Resources {
    fn from(w: WireResources) -> Self {
        Resources::new(w.cpu_milli as f64 / 1000.0, w.memory, w.disk, w.gpu)
    }
}

/// Why an execution failed, classified so the orchestrator (and the user) can tell faults apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum FailureKind {
    /// The task ran and exited with a non-zero code or trapped.
    TaskFailed,
    /// The attempt exceeded its ExecutionTimeout.
    Timeout,
    /// Out of memory (OOM kill, WASM memory limit).
    OutOfMemory,
    /// WASM ran out of fuel.
    OutOfFuel,
    /// Inputs could not be prepared (download failed, CID not found, ...).
    InputUnavailable,
    /// The image or module could not be found or pulled.
    ImageUnavailable,
    /// Results could not be published.
    PublishFailed,
    /// The node restarted and could not re-adopt the execution.
    NodeRestarted,
    /// The job spec is not runnable on this node (bad engine params, ...).
    InvalidSpec,
    /// Anything else on the node (executor crashed, disk full, ...).
    Internal,
}

impl FailureKind {
    /// Short human name.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::TaskFailed => "task failed",
            FailureKind::Timeout => "execution timed out",
            FailureKind::OutOfMemory => "out of memory",
            FailureKind::OutOfFuel => "out of fuel",
            FailureKind::InputUnavailable => "input unavailable",
            FailureKind::ImageUnavailable => "image unavailable",
            FailureKind::PublishFailed => "publishing failed",
            FailureKind::NodeRestarted => "node restarted",
            FailureKind::InvalidSpec => "invalid spec",
            FailureKind::Internal => "internal error",
        }
    }
}

/// A classified failure with a message for humans.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecFailure {
    /// Class.
    pub kind: FailureKind,
    /// Detail.
    pub message: String,
}

/// Progress of an execution as the compute node reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExecUpdate {
    /// Downloading inputs / pulling images (does not count against ExecutionTimeout).
    Preparing,
    /// The task is running.
    Running,
    /// Results are being published.
    Publishing,
    /// Done: output and where the results went (`SpecConfig` as JSON, empty for none).
    Completed {
        /// Exit code and truncated output.
        output: WireRunOutput,
        /// Published result as JSON (`{"Type":"ipfs","Params":{"CID":...}}`), or empty.
        published_json: String,
    },
    /// Failed, with a classified reason and whatever output exists.
    Failed {
        /// Why.
        failure: ExecFailure,
        /// Output captured before the failure.
        output: Option<WireRunOutput>,
    },
    /// Stopped on request (or the node released an unapproved bid).
    Cancelled {
        /// Why.
        reason: String,
    },
}

impl ExecUpdate {
    /// Whether no further update follows.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            ExecUpdate::Completed { .. } | ExecUpdate::Failed { .. } | ExecUpdate::Cancelled { .. }
        )
    }

    /// A short name for traces.
    pub fn name(&self) -> &'static str {
        match self {
            ExecUpdate::Preparing => "Preparing",
            ExecUpdate::Running => "Running",
            ExecUpdate::Publishing => "Publishing",
            ExecUpdate::Completed { .. } => "Completed",
            ExecUpdate::Failed { .. } => "Failed",
            ExecUpdate::Cancelled { .. } => "Cancelled",
        }
    }
}

/// `RunCommandResult` in wire form.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireRunOutput {
    /// Standard output (truncated).
    pub stdout: String,
    /// Whether it was truncated.
    pub stdout_truncated: bool,
    /// Standard error (truncated).
    pub stderr: String,
    /// Whether it was truncated.
    pub stderr_truncated: bool,
    /// Exit code.
    pub exit_code: i64,
    /// Error message.
    pub error_msg: String,
}

impl From<WireRunOutput> for RunCommandResult {
    fn from(w: WireRunOutput) -> Self {
        RunCommandResult {
            stdout: w.stdout,
            stdout_truncated: w.stdout_truncated,
            stderr: w.stderr,
            stderr_truncated: w.stderr_truncated,
            exit_code: w.exit_code,
            error_msg: w.error_msg,
        }
    }
}

impl From<RunCommandResult> for WireRunOutput {
    fn from(r: RunCommandResult) -> Self {
        WireRunOutput {
            stdout: r.stdout,
            stdout_truncated: r.stdout_truncated,
            stderr: r.stderr,
            stderr_truncated: r.stderr_truncated,
            exit_code: r.exit_code,
            error_msg: r.error_msg,
        }
    }
}

/// A compute node's logical clock: `incarnation` grows on every restart, `seq` with every
/// message within one incarnation. Lets the orchestrator order what it hears from a node even
/// when the network reorders it.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct NodeClock {
    /// Restart counter (persisted).
    pub incarnation: u64,
    /// Message counter within the incarnation.
    pub seq: u64,
}

/// The compute-side state of one execution, as listed in heartbeats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ComputePhase {
    /// Bid accepted, waiting for the orchestrator's approval.
    AwaitingApproval,
    /// Preparing inputs / image.
    Preparing,
    /// Running.
    Running,
    /// Publishing results.
    Publishing,
    /// Finished (the terminal update is being delivered).
    Terminal,
}

/// What a compute node is and can do (the `NodeInfo` of the model, in wire form).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeAdvert {
    /// Node ID.
    pub node_id: NodeId,
    /// Labels.
    pub labels: Vec<(String, String)>,
    /// Supported engines (lower-case).
    pub engines: Vec<String>,
    /// Supported publishers (lower-case).
    pub publishers: Vec<String>,
    /// Supported storage sources (lower-case).
    pub storages: Vec<String>,
    /// Total allocatable capacity.
    pub max_capacity: WireResources,
    /// Largest single job accepted.
    pub max_job: WireResources,
    /// Where results published with `local` can be fetched, etc.
    pub address: String,
    /// Software version (`vX.Y.Z`).
    pub version: String,
}

/// Periodic liveness and load report from a compute node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Free capacity now.
    pub available: WireResources,
    /// Capacity held by bids awaiting approval.
    pub queued: WireResources,
    /// Running executions.
    pub running: u32,
    /// Every execution the node holds for the receiving orchestrator, with its phase.
    pub executions: Vec<(ExecRef, ComputePhase)>,
}

/// Every message of the protocol.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Message {
    // ---- orchestrator -> compute ----
    /// Offer an execution. `needs_approval` = false starts it at once (ops/daemon jobs).
    AskForBid {
        /// The attempt.
        exec: ExecRef,
        /// The normalized job as JSON.
        job_json: String,
        /// Partition index and count (for `BACALHAU_PARTITION_*`).
        partition: (u32, u32),
        /// Whether the node must wait for `BidAccepted` before starting.
        needs_approval: bool,
    },
    /// The orchestrator chose this bid: start.
    BidAccepted {
        /// The attempt.
        exec: ExecRef,
    },
    /// The orchestrator declined this bid: release it.
    BidRejected {
        /// The attempt.
        exec: ExecRef,
        /// Why.
        reason: String,
    },
    /// Stop this execution.
    CancelExecution {
        /// The attempt.
        exec: ExecRef,
        /// Why.
        reason: String,
    },
    /// The orchestrator recorded this terminal update; the node may forget the execution.
    UpdateAck {
        /// The attempt.
        exec: ExecRef,
    },

    // ---- compute -> orchestrator ----
    /// Answer to `AskForBid`.
    BidResult {
        /// The attempt.
        exec: ExecRef,
        /// Whether the node takes it.
        accepted: bool,
        /// Why not (or a note).
        reason: String,
        /// A refusal only because of the node's current load: it may accept later.
        retryable: bool,
        /// Sender clock.
        clock: NodeClock,
    },
    /// Progress of an execution.
    ExecutionUpdate {
        /// The attempt.
        exec: ExecRef,
        /// What happened.
        update: ExecUpdate,
        /// Sender clock.
        clock: NodeClock,
    },
    /// The node's description (on start and on change).
    NodeInfo {
        /// What the node is.
        advert: NodeAdvert,
        /// Sender clock.
        clock: NodeClock,
    },
    /// Liveness and load.
    Heartbeat {
        /// The report.
        heartbeat: Heartbeat,
        /// Sender clock.
        clock: NodeClock,
    },
    /// The node is shutting down cleanly.
    Goodbye {
        /// Sender clock.
        clock: NodeClock,
    },
}

impl Message {
    /// The attempt the message is about, if any.
    pub fn exec(&self) -> Option<&ExecRef> {
        match self {
            Message::AskForBid { exec, .. }
            | Message::BidAccepted { exec }
            | Message::BidRejected { exec, .. }
            | Message::CancelExecution { exec, .. }
            | Message::UpdateAck { exec }
            | Message::BidResult { exec, .. }
            | Message::ExecutionUpdate { exec, .. } => Some(exec),
            Message::NodeInfo { .. } | Message::Heartbeat { .. } | Message::Goodbye { .. } => None,
        }
    }

    /// A short name for traces and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Message::AskForBid { .. } => "AskForBid",
            Message::BidAccepted { .. } => "BidAccepted",
            Message::BidRejected { .. } => "BidRejected",
            Message::CancelExecution { .. } => "CancelExecution",
            Message::UpdateAck { .. } => "UpdateAck",
            Message::BidResult { .. } => "BidResult",
            Message::ExecutionUpdate { .. } => "ExecutionUpdate",
            Message::NodeInfo { .. } => "NodeInfo",
            Message::Heartbeat { .. } => "Heartbeat",
            Message::Goodbye { .. } => "Goodbye",
        }
    }
}

/// What travels in a frame: a message with its protocol version and endpoints.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// [`PROTOCOL_VERSION`] of the sender.
    pub version: u16,
    /// Sender.
    pub from: NodeId,
    /// Intended receiver.
    pub to: NodeId,
    /// The message.
    pub message: Message,
}

/// Why bytes from a peer were refused. The peer is at fault in every case.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Fewer than 4 bytes: no length prefix.
    #[error("frame shorter than its 4-byte length prefix")]
    Truncated,
    /// The length prefix exceeds [`MAX_FRAME_BYTES`].
    #[error("frame of {0} bytes exceeds the {MAX_FRAME_BYTES}-byte limit")]
    TooLarge(usize),
    /// The length prefix does not match the bytes present.
    #[error("frame length prefix says {declared} bytes but {actual} follow")]
    LengthMismatch {
        /// Declared.
        declared: usize,
        /// Present.
        actual: usize,
    },
    /// The payload is not a valid envelope.
    #[error("malformed frame payload: {0}")]
    Malformed(String),
    /// Bytes left over after the envelope.
    #[error("{0} trailing bytes after the envelope")]
    Trailing(usize),
    /// Sent by an incompatible peer.
    #[error("unsupported protocol version {0} (this node speaks {PROTOCOL_VERSION})")]
    Version(u16),
    /// An embedded JSON document (job spec, result) is invalid.
    #[error("invalid embedded document: {0}")]
    Document(String),
}

fn config() -> bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<MAX_FRAME_BYTES>,
> {
    bincode::config::standard().with_limit::<MAX_FRAME_BYTES>()
}

/// Encodes an envelope as a length-prefixed frame.
pub fn encode_frame(env: &Envelope) -> Result<Vec<u8>, WireError> {
    let payload = bincode::serde::encode_to_vec(env, config())
        .map_err(|e| WireError::Malformed(e.to_string()))?;
    if payload.len() > MAX_FRAME_BYTES {
        return Err(WireError::TooLarge(payload.len()));
    }
    let len = u32::try_from(payload.len()).map_err(|_| WireError::TooLarge(payload.len()))?;
    let mut out = Vec::with_capacity(4 + payload.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

/// Reads the length prefix of a frame: how many payload bytes follow. Lets a stream reader
/// refuse an oversized frame before reading it.
pub fn frame_len(prefix: [u8; 4]) -> Result<usize, WireError> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(WireError::TooLarge(len));
    }
    Ok(len)
}

/// Decodes one whole frame (prefix + payload).
pub fn decode_frame(bytes: &[u8]) -> Result<Envelope, WireError> {
    let Some((prefix, payload)) = bytes.split_first_chunk::<4>() else {
        return Err(WireError::Truncated);
    };
    let declared = frame_len(*prefix)?;
    if declared != payload.len() {
        return Err(WireError::LengthMismatch { declared, actual: payload.len() });
    }
    decode_payload(payload)
}

/// Decodes a frame payload (without the prefix).
pub fn decode_payload(payload: &[u8]) -> Result<Envelope, WireError> {
    if payload.len() > MAX_FRAME_BYTES {
        return Err(WireError::TooLarge(payload.len()));
    }
    let (env, used): (Envelope, usize) = bincode::serde::decode_from_slice(payload, config())
        .map_err(|e| WireError::Malformed(e.to_string()))?;
    if used != payload.len() {
        return Err(WireError::Trailing(payload.len() - used));
    }
    if env.version != PROTOCOL_VERSION {
        return Err(WireError::Version(env.version));
    }
    Ok(env)
}

/// Decodes the job carried by `AskForBid`.
pub fn decode_job(job_json: &str) -> Result<Job, WireError> {
    Job::from_json(job_json.as_bytes()).map_err(|e| WireError::Document(e.to_string()))
}

/// Decodes a published result carried by `Completed` (empty = none).
pub fn decode_published(json: &str) -> Result<Option<SpecConfig>, WireError> {
    if json.is_empty() {
        return Ok(None);
    }
    crate::model::codec::from_json(json.as_bytes(), MAX_FRAME_BYTES)
        .map(Some)
        .map_err(|e| WireError::Document(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Envelope {
        Envelope {
            version: PROTOCOL_VERSION,
            from: "n-orch".into(),
            to: "n-compute".into(),
            message: Message::ExecutionUpdate {
                exec: ExecRef { execution_id: "e-1".into(), job_id: "j-1".into(), attempt: 3 },
                update: ExecUpdate::Completed {
                    output: WireRunOutput {
                        stdout: "hi".into(),
                        exit_code: 0,
                        ..Default::default()
                    },
                    published_json: r#"{"Type":"ipfs","Params":{"CID":"Qm"}}"#.into(),
                },
                clock: NodeClock { incarnation: 1, seq: 9 },
            },
        }
    }

    #[test]
    fn frames_round_trip() {
        let env = sample();
        let bytes = encode_frame(&env).unwrap();
        assert_eq!(decode_frame(&bytes).unwrap(), env);
        let Message::ExecutionUpdate {
            update: ExecUpdate::Completed { published_json, .. }, ..
        } = env.message
        else {
            unreachable!()
        };
        assert_eq!(
            decode_published(&published_json).unwrap().unwrap().param_str("CID"),
            Some("Qm")
        );
    }

    #[test]
    fn bad_frames_are_typed_errors() {
        let good = encode_frame(&sample()).unwrap();
        assert_eq!(decode_frame(&good[..3]), Err(WireError::Truncated));
        assert!(matches!(
            decode_frame(&good[..good.len() - 1]),
            Err(WireError::LengthMismatch { .. })
        ));
        assert!(matches!(decode_frame(&[0xff, 0xff, 0xff, 0xff]), Err(WireError::TooLarge(_))));
        let mut wrong_version = sample();
        wrong_version.version = 99;
        let bytes = encode_frame(&wrong_version).unwrap();
        assert_eq!(decode_frame(&bytes), Err(WireError::Version(99)));
    }

    #[test]
    fn length_prefix_bombs_are_refused_without_allocating() {
        // An envelope whose first string claims 2^40 bytes and whose payload is tiny.
        for claim in [u64::MAX, 1u64 << 40, MAX_FRAME_BYTES as u64 + 1] {
            let mut payload = vec![1u8]; // version varint
            payload.push(0xfd); // u64 varint marker
            payload.extend_from_slice(&claim.to_le_bytes());
            let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
            frame.extend_from_slice(&payload);
            assert!(matches!(decode_frame(&frame), Err(WireError::Malformed(_))), "claim {claim}");
        }
    }
}
