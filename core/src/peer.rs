//! Peers are untrusted: what a peer may send, and the one error for a peer that breaks it.
//!
//! Every node of a cluster is reached over the network, and a compromised or buggy one must
//! not be able to make another node panic, over-commit, write outside its folders or run a
//! job that the REST API would refuse. So everything a peer sends is held to the same rules as
//! API input before a state machine acts on it:
//!
//! - [`check_message`] runs on every decoded message before it is routed: identifiers that
//!   become folder names and store keys ([`crate::model::ident`]), partitions, a node's
//!   description of itself, and published results, which must decode;
//! - [`check_offered_job`] decodes the job of an `AskForBid` and validates it exactly as a
//!   submission is validated (resources that do not parse, timeouts beyond the bound, bad IDs
//!   are refused, and the refusal travels back in the bid).
//!
//! A violation is a [`PeerMisbehaved`] (the name follows rustls's error for the same idea).
//! The driver counts each one per peer and kind (`gadus_peer_faults_total` in `/metrics`) and
//! drops the message; nothing the peer sent changes state.

use crate::model::ident::{self, IdKind, IdentError};
use crate::model::validate::MAX_COUNT;
use crate::model::{Job, Resources};
use crate::protocol::{ExecRef, ExecUpdate, Message, NodeId, WireError, decode_published};

/// Longest free-text field accepted from a peer (reasons, error messages, versions).
pub const MAX_PEER_TEXT: usize = 64 * 1024;

/// How a peer broke the protocol. The peer is at fault in every case.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PeerMisbehaved {
    /// Bytes that do not decode as a frame.
    #[error("undecodable frame: {0}")]
    Frame(#[from] WireError),
    /// The envelope names another sender than the authenticated peer.
    #[error("frame claims to come from {claimed}")]
    ForgedSender {
        /// Who the envelope said it was from.
        claimed: String,
    },
    /// The envelope is addressed to another node.
    #[error("frame addressed to {to}")]
    Misaddressed {
        /// The addressee it named.
        to: String,
    },
    /// An identifier that does not have the required syntax.
    #[error("{0}")]
    Identifier(#[from] IdentError),
    /// A job that the REST API would refuse.
    #[error("invalid job: {0}")]
    InvalidJob(String),
    /// A partition outside its job's count.
    #[error("partition {index} of {count} is out of range")]
    BadPartition {
        /// Index sent.
        index: u32,
        /// Count sent.
        count: u32,
    },
    /// A node describing another node.
    #[error("node {from} sent the description of node {described}")]
    ForgedNodeInfo {
        /// Sender.
        from: String,
        /// Whom the description was about.
        described: String,
    },
    /// A published result that does not decode.
    #[error("unreadable published result: {0}")]
    InvalidResult(String),
    /// A text field longer than [`MAX_PEER_TEXT`].
    #[error("{field} is {len} bytes, over the {MAX_PEER_TEXT}-byte limit")]
    Oversized {
        /// Which field.
        field: &'static str,
        /// Its length.
        len: usize,
    },
    /// An API URL the node will not fetch from.
    #[error("unusable API URL: {0}")]
    BadApiUrl(String),
    /// An orchestrator this compute node does not take work from
    /// (`Compute.AllowedOrchestrators`).
    #[error("not an allowed orchestrator of this node")]
    NotAllowed,
}

impl PeerMisbehaved {
    /// A stable short name, used as the `kind` label of the per-peer counters.
    pub fn kind(&self) -> &'static str {
        match self {
            PeerMisbehaved::Frame(_) => "frame",
            PeerMisbehaved::ForgedSender { .. } => "forged_sender",
            PeerMisbehaved::Misaddressed { .. } => "misaddressed",
            PeerMisbehaved::Identifier(_) => "identifier",
            PeerMisbehaved::InvalidJob(_) => "invalid_job",
            PeerMisbehaved::BadPartition { .. } => "partition",
            PeerMisbehaved::ForgedNodeInfo { .. } => "forged_node_info",
            PeerMisbehaved::InvalidResult(_) => "invalid_result",
            PeerMisbehaved::Oversized { .. } => "oversized",
            PeerMisbehaved::BadApiUrl(_) => "api_url",
            PeerMisbehaved::NotAllowed => "not_allowed",
        }
    }
}

fn check_ref(exec: &ExecRef) -> Result<(), PeerMisbehaved> {
    ident::check(IdKind::Execution, &exec.execution_id)?;
    ident::check(IdKind::Job, &exec.job_id)?;
    Ok(())
}

fn check_text(field: &'static str, s: &str) -> Result<(), PeerMisbehaved> {
    if s.len() > MAX_PEER_TEXT {
        return Err(PeerMisbehaved::Oversized { field, len: s.len() });
    }
    Ok(())
}

/// Checks a message from `from` before any state machine sees it.
pub fn check_message(from: &str, message: &Message) -> Result<(), PeerMisbehaved> {
    ident::check(IdKind::Node, from)?;
    match message {
        Message::AskForBid { exec, partition: (index, count), .. } => {
            check_ref(exec)?;
            // The job itself is checked by the compute node, which answers the bid with why.
            let count_ok = *count >= 1 && i64::from(*count) <= MAX_COUNT;
            if !count_ok || index >= count {
                return Err(PeerMisbehaved::BadPartition { index: *index, count: *count });
            }
        }
        Message::BidAccepted { exec } | Message::UpdateAck { exec } => check_ref(exec)?,
        Message::BidRejected { exec, reason } | Message::CancelExecution { exec, reason } => {
            check_ref(exec)?;
            check_text("reason", reason)?;
        }
        Message::BidResult { exec, reason, .. } => {
            check_ref(exec)?;
            check_text("reason", reason)?;
        }
        Message::ExecutionUpdate { exec, update, .. } => {
            check_ref(exec)?;
            match update {
                ExecUpdate::Completed { published_json, .. } => {
                    decode_published(published_json)
                        .map_err(|e| PeerMisbehaved::InvalidResult(e.to_string()))?;
                }
                ExecUpdate::Failed { failure, .. } => check_text("failure", &failure.message)?,
                ExecUpdate::Cancelled { reason } => check_text("reason", reason)?,
                ExecUpdate::Preparing | ExecUpdate::Running | ExecUpdate::Publishing => {}
            }
        }
        Message::NodeInfo { advert, .. } => {
            if advert.node_id != from {
                return Err(PeerMisbehaved::ForgedNodeInfo {
                    from: from.to_string(),
                    described: advert.node_id.chars().take(128).collect(),
                });
            }
            check_text("version", &advert.version)?;
            check_text("address", &advert.address)?;
        }
        Message::Heartbeat { heartbeat, .. } => {
            for (exec, _) in &heartbeat.executions {
                check_ref(exec)?;
            }
        }
        Message::Goodbye { .. } => {}
    }
    Ok(())
}

/// Decodes the job an orchestrator offers and validates it as a submission is validated;
/// returns it with the resources it asks for. The compute node refuses the bid with this
/// error as the reason.
pub fn check_offered_job(job_json: &str) -> Result<(Job, Resources), PeerMisbehaved> {
    let job = crate::protocol::decode_job(job_json)
        .map_err(|e| PeerMisbehaved::InvalidJob(e.to_string()))?;
    job.validate().map_err(|e| PeerMisbehaved::InvalidJob(e.to_string()))?;
    let resources = match job.task().and_then(|t| t.resources.as_ref()) {
        // An orchestrator fills in the defaults: a job without resources asks for none.
        None => Resources::default(),
        Some(r) => r.parse().map_err(|errs| {
            let shown: Vec<String> = errs.iter().map(|(f, e)| format!("{f}: {e}")).collect();
            PeerMisbehaved::InvalidJob(format!("unusable resources: {}", shown.join("; ")))
        })?,
    };
    Ok((job, resources))
}

/// The node ID of a peer, checked.
pub fn check_node_id(node: &NodeId) -> Result<(), PeerMisbehaved> {
    Ok(ident::check(IdKind::Node, node)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Heartbeat, NodeAdvert, NodeClock, WireRunOutput};

    fn exec(id: &str) -> ExecRef {
        ExecRef { execution_id: id.into(), job_id: "j-1".into(), attempt: 1 }
    }

    #[test]
    fn execution_ids_that_would_name_a_folder_elsewhere_are_refused() {
        for bad in ["../../etc", "e/1", ".", ""] {
            let m = Message::BidAccepted { exec: exec(bad) };
            let e = check_message("n-1", &m).unwrap_err();
            assert_eq!(e.kind(), "identifier", "{bad:?}: {e}");
        }
        assert!(check_message("n-1", &Message::BidAccepted { exec: exec("e-1") }).is_ok());
    }

    #[test]
    fn partitions_must_lie_in_the_count() {
        let ask = |index, count| Message::AskForBid {
            exec: exec("e-1"),
            job_json: String::new(),
            partition: (index, count),
            needs_approval: true,
        };
        assert!(check_message("n-1", &ask(0, 1)).is_ok());
        assert!(check_message("n-1", &ask(2, 3)).is_ok());
        for (i, c) in [(0, 0), (1, 1), (5, 3), (0, u32::MAX)] {
            assert_eq!(check_message("n-1", &ask(i, c)).unwrap_err().kind(), "partition");
        }
    }

    #[test]
    fn a_node_describes_only_itself() {
        let m = Message::NodeInfo {
            advert: NodeAdvert { node_id: "n-2".into(), ..Default::default() },
            clock: NodeClock::default(),
        };
        assert_eq!(check_message("n-1", &m).unwrap_err().kind(), "forged_node_info");
        let m = Message::NodeInfo {
            advert: NodeAdvert { node_id: "n-1".into(), ..Default::default() },
            clock: NodeClock::default(),
        };
        assert!(check_message("n-1", &m).is_ok());
    }

    #[test]
    fn unreadable_results_and_heartbeat_refs_are_faults() {
        let m = Message::ExecutionUpdate {
            exec: exec("e-1"),
            update: ExecUpdate::Completed {
                output: WireRunOutput::default(),
                published_json: "{not json".into(),
            },
            clock: NodeClock::default(),
        };
        assert_eq!(check_message("n-1", &m).unwrap_err().kind(), "invalid_result");
        let m = Message::Heartbeat {
            heartbeat: Heartbeat {
                executions: vec![(exec("../x"), crate::protocol::ComputePhase::Running)],
                ..Default::default()
            },
            clock: NodeClock::default(),
        };
        assert_eq!(check_message("n-1", &m).unwrap_err().kind(), "identifier");
    }

    #[test]
    fn offered_jobs_are_validated_like_submissions() {
        let job = |extra: &str| {
            format!(
                r#"{{"ID":"j-1","Name":"j-1","Namespace":"default","Type":"batch","Count":1,
                "Tasks":[{{"Name":"main","Engine":{{"Type":"noop"}}{extra}}}]}}"#
            )
        };
        let (_, r) = check_offered_job(&job(r#","Resources":{"CPU":"2","Memory":"1gb"}"#)).unwrap();
        assert_eq!(r.cpu, 2.0);
        // Regression (issue 12, defect 4): unparseable resources counted as zero, and an
        // ExecutionTimeout near i64::MAX overflowed `Instant + Duration` in the executors.
        for (extra, why) in [
            (r#","Resources":{"CPU":"lots"}"#, "CPU"),
            (r#","Timeouts":{"ExecutionTimeout":9223372036854775807}"#, "ExecutionTimeout"),
            (r#","Timeouts":{"ExecutionTimeout":-5}"#, "ExecutionTimeout"),
        ] {
            let e = check_offered_job(&job(extra)).unwrap_err();
            assert_eq!(e.kind(), "invalid_job");
            assert!(e.to_string().contains(why), "{e}");
        }
        let e = check_offered_job("{").unwrap_err();
        assert_eq!(e.kind(), "invalid_job");
    }
}
