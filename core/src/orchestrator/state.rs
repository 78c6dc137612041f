//! What the orchestrator keeps per job, execution and node, and what it persists.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::model::{
    Constraints, Evaluation, Execution, ExecutionStateType, Job, JobHistory, NodeConnection,
    NodeMembership, NodeState, Resources, Timestamp,
};
use crate::protocol::{NodeAdvert, NodeClock, NodeId};

/// Why an execution ended, as the orchestrator classifies it. Decides retries and node
/// exclusion.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum End {
    /// Finished successfully.
    Completed,
    /// The node declined the bid; `retryable` when only its current load was the reason.
    Refused {
        /// The node may accept later.
        retryable: bool,
    },
    /// The node never answered the bid.
    BidTimedOut,
    /// The task failed on the node (counts toward the attempt limit).
    Failed,
    /// The attempt exceeded ExecutionTimeout (counts toward the attempt limit).
    TimedOut,
    /// The node disconnected or forgot the execution (does not count).
    NodeLost,
    /// Stopped by the orchestrator (job stopped, completed elsewhere, superseded).
    Stopped,
}

impl End {
    /// Whether this end uses up one of the partition's attempts.
    pub fn counts_as_attempt(self) -> bool {
        matches!(self, End::Failed | End::TimedOut)
    }

    /// Whether the node should not be offered this job again.
    pub fn excludes_node(self) -> bool {
        matches!(self, End::Refused { retryable: false } | End::BidTimedOut)
    }
}

/// One execution as the orchestrator tracks (and persists) it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExecRecord {
    /// The API view.
    pub execution: Execution,
    /// Fencing number.
    pub attempt: u64,
    /// Partition index (batch/service); 0 otherwise.
    pub partition: u32,
    /// Whether the node must wait for approval (batch/service) or starts at once (ops/daemon).
    pub needs_approval: bool,
    /// How it ended, once terminal.
    pub end: Option<End>,
    /// When it ended.
    pub ended_at: Option<Timestamp>,
    /// Deadline for the bid answer (while in AskForBid).
    pub bid_deadline: Option<Timestamp>,
    /// When the node reported it running (starts the orchestrator's timeout watch).
    pub running_since: Option<Timestamp>,
    /// Latest node clock seen in a message about this execution.
    pub last_clock: NodeClock,
    /// Whether the node ever confirmed it holds the execution.
    pub node_confirmed: bool,
}

impl ExecRecord {
    /// The orchestrator considers it finished.
    pub fn is_terminal(&self) -> bool {
        self.execution.compute_state.state_type.is_terminal()
    }

    /// Compute state.
    pub fn state(&self) -> ExecutionStateType {
        self.execution.compute_state.state_type
    }

    /// The node it is on.
    pub fn node(&self) -> &str {
        &self.execution.node_id
    }
}

/// Persisted per-job scheduling state (the spec itself is in the job).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// The job, with its current state, revision and times.
    pub job: Arc<Job>,
    /// The next fencing number to hand out.
    pub next_attempt: u64,
    /// Since when the job waits for suitable nodes.
    pub queued_since: Option<Timestamp>,
    /// Ops jobs: whether the one round of executions was created.
    pub ops_dispatched: bool,
    /// Last history sequence number used.
    pub history_seq: u64,
}

/// A node as the orchestrator persists it (membership survives restarts; liveness does not).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// What the node said about itself.
    pub advert: NodeAdvert,
    /// Operator decision.
    pub membership: NodeMembership,
}

/// Everything the orchestrator writes to its store. `restore` rebuilds the machine from the
/// latest record of each key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Record {
    /// Upsert of a job and its scheduling state (key: job ID).
    Job(Box<JobRecord>),
    /// Upsert of an execution (key: execution ID).
    Execution(Arc<ExecRecord>),
    /// Upsert of an evaluation (key: evaluation ID).
    Evaluation(Box<Evaluation>),
    /// Append of a history entry (key: job ID + sequence number).
    History(Arc<JobHistory>),
    /// Upsert of a node (key: node ID).
    Node(Box<NodeRecord>),
    /// Removal of a node (operator `delete`).
    NodeDeleted(NodeId),
}

impl Record {
    /// The keyspace and key a store files this record under.
    pub fn key(&self) -> (&'static str, String) {
        match self {
            Record::Job(j) => ("jobs", j.job.id.clone()),
            Record::Execution(e) => ("executions", e.execution.id.clone()),
            Record::Evaluation(e) => ("evaluations", e.id.clone()),
            Record::History(h) => ("history", format!("{}/{:020}", h.job_id, h.seq_num)),
            Record::Node(n) => ("nodes", n.advert.node_id.clone()),
            Record::NodeDeleted(id) => ("nodes", id.clone()),
        }
    }
}

/// In-memory job state.
#[derive(Clone, Debug)]
pub(crate) struct JobRec {
    pub rec: JobRecord,
    /// Parsed resources with defaults applied.
    pub resources: Resources,
    /// Parsed constraints.
    pub constraints: Constraints,
    /// Engine type (lower-case).
    pub engine: String,
    /// Publisher type (lower-case; empty for none).
    pub publisher: String,
    /// Input source types (lower-case, deduplicated).
    pub storages: Vec<String>,
    /// The job as sent to compute nodes (encoded once).
    pub job_json: String,
    /// All executions, in creation order.
    pub execs: Vec<String>,
    /// History entries kept in memory while the job lives.
    pub history: Vec<Arc<JobHistory>>,
    /// A delayed evaluation is armed for this time.
    pub eval_at: Option<Timestamp>,
}

/// In-memory node state.
#[derive(Clone, Debug)]
pub(crate) struct NodeRec {
    pub state: NodeState,
    pub advert: NodeAdvert,
    pub max: Resources,
    pub max_job: Resources,
    pub available: Resources,
    pub queued: Resources,
    /// Capacity this orchestrator has promised here that the node's latest heartbeat does not
    /// show taken yet, by execution: bids not yet answered, and accepted bids the node
    /// answered after that heartbeat. A heartbeat only settles what it has seen (by the node's
    /// message clock), so a burst never places more than fits.
    pub promised: BTreeMap<String, Promise>,
    /// The clock of the heartbeat `available` and `queued` come from.
    pub hb_clock: NodeClock,
    pub last_seen: Timestamp,
    /// When the armed liveness check fires (one per node, re-armed lazily).
    pub liveness_at: Option<Timestamp>,
    pub clock: NodeClock,
    pub live_execs: BTreeSet<String>,
}

/// One execution's promised capacity on a node.
#[derive(Clone, Debug)]
pub(crate) struct Promise {
    pub resources: Resources,
    /// When the node accepted the bid (its message clock); `None` until it has.
    pub accepted_at: Option<NodeClock>,
}

impl NodeRec {
    /// Capacity promised here and not yet in the node's figures.
    pub fn promised_total(&self) -> Resources {
        self.promised.values().fold(Resources::default(), |sum, p| sum.add(&p.resources))
    }

    /// A heartbeat at `clock` shows every bid the node accepted before it: those promises are
    /// settled (in its `available`) and dropped; unanswered bids stay promised.
    pub fn settle(&mut self, clock: NodeClock) {
        debug_assert!(clock >= self.hb_clock, "heartbeats are applied in clock order");
        self.hb_clock = clock;
        self.promised.retain(|_, p| p.accepted_at.is_none_or(|at| at > clock));
    }

    pub fn is_schedulable(&self) -> bool {
        self.state.connection == NodeConnection::Connected
            && self.state.membership == NodeMembership::Approved
            && !self.advert.engines.is_empty()
    }
}
