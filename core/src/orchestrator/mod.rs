//! The orchestrator (Bacalhau's "requester"): owns the jobs submitted to it and drives them to
//! a terminal state by placing executions on compute nodes.
//!
//! ## Calling contract
//!
//! Inputs: [`Orchestrator::submit`], [`Orchestrator::stop`], [`Orchestrator::node_action`],
//! [`Orchestrator::handle_message`] and [`Orchestrator::handle_timeout`], each with the
//! current time. After **every** input, drain [`Orchestrator::poll_action`] until it returns
//! `None`, then arm a timer for [`Orchestrator::poll_timeout`].
//!
//! Actions are ordered: a `Persist` precedes the `Send` or `Reply` that reveals it. The driver
//! must make every `Persist` durable before it performs any later `Send` or `Reply` (group
//! commit: one fsync may cover many records). Restart is [`Orchestrator::restore`] from the
//! latest record of each key; nothing else survives.
//!
//! ## What happens inside
//!
//! Every change (submission, stop, execution update, timeout, node join or loss) triggers an
//! *evaluation* of the affected job; evaluations are coalesced so a job has at most one pending
//! at a time, and are processed (highest priority first) before the input returns. The
//! scheduler for the job's type ([`scheduler`]) compares the job's executions with what it
//! needs and plans: new executions on ranked nodes ([`selection`]), approvals, cancellations,
//! retries with exponential back-off, queueing, and the job's own state changes — each
//! recorded in the job's history with a reason.

mod invariants;
mod scheduler;
mod selection;
mod state;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

pub use state::{End, ExecRecord, JobRecord, NodeRecord, Record};
use state::{JobRec, NodeRec, Promise};

use crate::model::history::topics;
use crate::model::{
    BuildVersionInfo, ComputeNodeInfo, ConnectionState, Constraints, EvalStatus, EvalTrigger,
    Evaluation, Event, Execution, ExecutionDesiredStateType, ExecutionStateType, Job, JobHistory,
    JobHistoryType, JobStateType, JobType, NodeConnection, NodeInfo, NodeMembership, NodeState,
    NodeType, Resources, ResourcesConfig, SpecConfig, State, StateChange, Timestamp, WallTime,
    codec,
};
use crate::mutants::{Mutant, Mutants};
use crate::protocol::{
    ComputePhase, ExecRef, ExecUpdate, FailureKind, Heartbeat, Message, NodeAdvert, NodeClock,
    NodeId,
};
use crate::rng::{DetRng, IdGen};
use crate::timers::Timers;

/// How failed attempts are retried.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Attempts per partition that may fail (task failure or timeout) before the job fails.
    pub max_attempts: u32,
    /// Delay before the second attempt; doubles with each further failure.
    pub backoff_base: Duration,
    /// Longest delay between attempts.
    pub backoff_max: Duration,
}

impl RetryPolicy {
    /// The delay after `failures` failed attempts (0 → none).
    pub fn backoff(&self, failures: u32) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        let exp = failures.saturating_sub(1).min(30);
        self.backoff_base.saturating_mul(1u32 << exp).min(self.backoff_max)
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
        }
    }
}

/// Defaults applied to submitted jobs (Bacalhau's `JobDefaults`).
#[derive(Clone, Debug, PartialEq)]
pub struct JobDefaults {
    /// Resources for tasks that ask for none (per field).
    pub resources: ResourcesConfig,
    /// QueueTimeout (s) when the job sets none; 0 = fail at once when no node fits.
    pub queue_timeout: i64,
    /// ExecutionTimeout (s) when the job sets none; 0 = unlimited.
    pub execution_timeout: i64,
    /// TotalTimeout (s) for batch/ops jobs that set none; 0 = unlimited.
    pub total_timeout: i64,
    /// Publisher for tasks that name none.
    pub publisher: Option<SpecConfig>,
}

impl Default for JobDefaults {
    fn default() -> Self {
        JobDefaults {
            resources: ResourcesConfig {
                cpu: "100m".into(),
                memory: "64mb".into(),
                disk: String::new(),
                gpu: String::new(),
            },
            queue_timeout: 0,
            execution_timeout: 0,
            total_timeout: 0,
            publisher: None,
        }
    }
}

/// Orchestrator settings.
#[derive(Clone, Debug)]
pub struct OrchestratorConfig {
    /// This node's ID.
    pub node_id: NodeId,
    /// How long a node may take to answer a bid.
    pub bid_timeout: Duration,
    /// Silence after which a node is disconnected and its executions rescheduled.
    pub disconnect_timeout: Duration,
    /// How often a queued job looks for nodes again.
    pub queue_backoff: Duration,
    /// How long a job without a QueueTimeout waits when nodes exist that are only busy (or
    /// briefly disconnected); jobs no node could ever run fail at once.
    pub busy_queue_timeout: Duration,
    /// Retries.
    pub retry: RetryPolicy,
    /// Slack on top of ExecutionTimeout before the orchestrator gives up on an attempt whose
    /// node should have stopped it.
    pub exec_timeout_grace: Duration,
    /// A node may be offered up to this multiple of its capacity (queued bids included).
    /// 1.0 by default: compute nodes keep no local queue, so anything beyond what fits is
    /// refused, and a refused job used to wait out a back-off with a new execution each time.
    pub oversubscription: f64,
    /// New nodes start PENDING instead of APPROVED.
    pub manual_approval: bool,
    /// Rank jitter range (0..=n).
    pub rank_jitter: u64,
    /// A placement stops searching after this many suitable nodes per needed execution.
    pub placement_sample: usize,
    /// Job defaults.
    pub defaults: JobDefaults,
    /// Deliberate bugs for the mutation test.
    pub mutants: Mutants,
}

impl OrchestratorConfig {
    /// Defaults for a node called `node_id`.
    pub fn new(node_id: impl Into<NodeId>) -> Self {
        OrchestratorConfig {
            node_id: node_id.into(),
            bid_timeout: Duration::from_secs(10),
            disconnect_timeout: Duration::from_secs(30),
            queue_backoff: Duration::from_secs(10),
            busy_queue_timeout: Duration::from_secs(600),
            retry: RetryPolicy::default(),
            exec_timeout_grace: Duration::from_secs(30),
            oversubscription: 1.0,
            manual_approval: false,
            rank_jitter: 5,
            placement_sample: 4,
            defaults: JobDefaults::default(),
            mutants: Mutants::NONE,
        }
    }
}

/// The driver's handle for a request awaiting its [`Reply`].
pub type RequestId = u64;

/// What kind of failure an API request met (maps to Bacalhau's error codes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is malformed or invalid (`ValidationError` / `BadRequest`).
    Invalid,
    /// No such job or node.
    NotFound,
    /// The request conflicts with the current state (e.g. stopping a completed job).
    Conflict,
    /// The node could not answer (its store failed): the node's fault, not the client's.
    Internal,
}

/// A refused request, with a message for the user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// Kind.
    pub kind: ErrorKind,
    /// Message.
    pub message: String,
    /// Each problem, for validation failures.
    pub details: Vec<String>,
}

impl ApiError {
    fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ApiError { kind, message: message.into(), details: Vec::new() }
    }
}

/// The answer to a request.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    /// The job is accepted and durable.
    Submitted {
        /// Its ID.
        job_id: String,
        /// The evaluation that placed it.
        evaluation_id: String,
        /// Bacalhau's submission warnings.
        warnings: Vec<String>,
    },
    /// The stop is recorded (`evaluation_id` empty if the job was already stopped).
    Stopped {
        /// The evaluation.
        evaluation_id: String,
    },
    /// The node action is recorded.
    NodeUpdated,
    /// Refused.
    Error(ApiError),
}

/// Something for the driver to do.
#[derive(Clone, Debug, PartialEq)]
#[must_use]
pub enum Action {
    /// Make this record durable before any later `Send` or `Reply`.
    Persist(Record),
    /// Deliver a message to a compute node.
    Send {
        /// Receiver.
        to: NodeId,
        /// Message.
        message: Message,
    },
    /// Answer an API request.
    Reply {
        /// The request.
        request: RequestId,
        /// The answer.
        reply: Reply,
    },
}

/// Operator decisions about a node (`PUT /nodes/{id}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeAction {
    /// Approve membership.
    Approve,
    /// Reject membership.
    Reject,
    /// Forget the node.
    Delete,
}

/// Counters for metrics and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OrchestratorStats {
    /// Messages about superseded or unknown attempts, ignored.
    pub stale_messages: u64,
    /// Messages whose sender is not the execution's node, ignored.
    pub misdirected_messages: u64,
    /// Evaluations processed.
    pub evaluations: u64,
    /// Executions created.
    pub executions_created: u64,
    /// Nodes declared lost.
    pub nodes_lost: u64,
    /// Retries scheduled after a failed attempt.
    pub retries: u64,
}

/// Queued jobs woken per capacity-freeing event.
const QUEUED_WAKE_MAX: usize = 32;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Node(String),
    Bid(String),
    ExecTimeout(String),
    Eval(String),
    JobTimeout(String),
}

/// The orchestrator state machine. See the module documentation for the calling contract.
#[derive(Debug)]
pub struct Orchestrator {
    cfg: OrchestratorConfig,
    rng: DetRng,
    jobs: BTreeMap<String, JobRec>,
    /// Executions are shared with pending `Persist` actions: copy-on-write, so persisting
    /// one is a reference count, not a deep copy.
    execs: BTreeMap<String, Arc<ExecRecord>>,
    nodes: BTreeMap<String, NodeRec>,
    /// Node IDs in a stable order, for sampled placement.
    node_order: Vec<String>,
    /// Jobs by namespace/name → ID (latest).
    names: BTreeMap<(String, String), String>,
    /// Pending evaluations (one per job) and their processing order.
    pending: BTreeMap<String, Evaluation>,
    eval_order: BTreeSet<(std::cmp::Reverse<i64>, u64, String)>,
    eval_seq: u64,
    /// Daemon jobs (evaluated when nodes join).
    daemons: BTreeSet<String>,
    /// Jobs waiting for nodes (evaluated when nodes join or free capacity).
    queued: BTreeSet<String>,
    timers: Timers<Timer>,
    actions: VecDeque<Action>,
    /// The job being evaluated (its own triggers are absorbed) and its evaluation ID.
    evaluating: Option<String>,
    current_eval_id: String,
    stats: OrchestratorStats,
    /// Illegal transitions seen (a bug); reported by `check_invariants`.
    violations: Vec<String>,
}

fn wall(now: Timestamp) -> WallTime {
    WallTime::at(now)
}

fn event(now: Timestamp, topic: &str, message: impl Into<String>) -> Event {
    Event {
        message: message.into(),
        topic: topic.to_string(),
        timestamp: wall(now),
        ..Default::default()
    }
}

fn secs(n: i64) -> Duration {
    Duration::from_secs(u64::try_from(n).unwrap_or(0))
}

impl Orchestrator {
    /// A fresh orchestrator; `seed` drives every random choice (IDs, rank jitter).
    pub fn new(cfg: OrchestratorConfig, seed: u64) -> Self {
        Orchestrator {
            cfg,
            rng: DetRng::new(seed),
            jobs: BTreeMap::new(),
            execs: BTreeMap::new(),
            nodes: BTreeMap::new(),
            node_order: Vec::new(),
            names: BTreeMap::new(),
            pending: BTreeMap::new(),
            eval_order: BTreeSet::new(),
            eval_seq: 0,
            daemons: BTreeSet::new(),
            queued: BTreeSet::new(),
            timers: Timers::default(),
            actions: VecDeque::new(),
            evaluating: None,
            current_eval_id: String::new(),
            stats: OrchestratorStats::default(),
            violations: Vec::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &OrchestratorConfig {
        &self.cfg
    }

    /// Counters.
    pub fn stats(&self) -> &OrchestratorStats {
        &self.stats
    }

    /// The next action, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The next deadline at which [`Orchestrator::handle_timeout`] must be called.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.timers.next()
    }

    // ------------------------------------------------------------------ queries

    /// A live job (terminal jobs leave memory once all their executions are done; read them
    /// from the store).
    pub fn job(&self, id: &str) -> Option<&Job> {
        self.jobs.get(id).map(|j| &*j.rec.job)
    }

    /// IDs of the jobs in memory.
    pub fn job_ids(&self) -> impl Iterator<Item = &String> {
        self.jobs.keys()
    }

    /// An execution in memory.
    pub fn execution(&self, id: &str) -> Option<&ExecRecord> {
        self.execs.get(id).map(|e| &**e)
    }

    /// A live job's executions, in creation order.
    pub fn executions_of(&self, job_id: &str) -> Vec<&ExecRecord> {
        self.jobs
            .get(job_id)
            .map(|j| j.execs.iter().filter_map(|id| self.execs.get(id).map(|e| &**e)).collect())
            .unwrap_or_default()
    }

    /// A live job's history.
    pub fn history_of(&self, job_id: &str) -> &[Arc<JobHistory>] {
        self.jobs.get(job_id).map(|j| j.history.as_slice()).unwrap_or(&[])
    }

    /// Every node known, as the API shows them.
    pub fn nodes(&self) -> impl Iterator<Item = &NodeState> {
        self.nodes.values().map(|n| &n.state)
    }

    /// One node.
    pub fn node(&self, id: &str) -> Option<&NodeState> {
        self.nodes.get(id).map(|n| &n.state)
    }

    // ------------------------------------------------------------------ API inputs

    /// Submits a job (already decoded). Replies `Submitted` once the job is durable, or an
    /// error listing every validation problem.
    pub fn submit(&mut self, now: Timestamp, request: RequestId, job: Job) {
        self.submit_unless_stored(now, request, job, |_| Ok(false));
    }

    /// [`Orchestrator::submit`] for a driver whose store holds jobs that have left memory:
    /// `stored(id)` says whether a job with that ID exists there (terminal jobs are not in
    /// memory, and a client-chosen ID must never replace one of them), or why it cannot tell.
    pub fn submit_unless_stored(
        &mut self,
        now: Timestamp,
        request: RequestId,
        mut job: Job,
        stored: impl FnOnce(&str) -> Result<bool, String>,
    ) {
        let warnings = job.normalize(&mut self.rng);
        self.apply_defaults(&mut job);
        if let Err(errs) = job.validate() {
            let details: Vec<String> = errs.0.iter().map(|e| e.to_string()).collect();
            let mut err = ApiError::new(ErrorKind::Invalid, errs.to_string());
            err.details = details;
            self.reply(request, Reply::Error(err));
            return;
        }
        let exists = match self.jobs.contains_key(&job.id) {
            true => Ok(true),
            false => stored(&job.id),
        };
        match exists {
            Ok(false) => {}
            Ok(true) => {
                let msg = format!(
                    "a job with ID {} already exists (IDs are never reused, even after the job \
                     ended: choose another ID)",
                    job.id
                );
                self.reply(request, Reply::Error(ApiError::new(ErrorKind::Conflict, msg)));
                return;
            }
            Err(why) => {
                let msg = format!("cannot check whether job {} exists: {why}", job.id);
                self.reply(request, Reply::Error(ApiError::new(ErrorKind::Internal, msg)));
                return;
            }
        }
        let rec = match self.new_job_rec(now, job) {
            Ok(rec) => rec,
            Err(e) => {
                self.reply(request, Reply::Error(e));
                return;
            }
        };
        let job_id = rec.rec.job.id.clone();
        let ns_name = (rec.rec.job.namespace.clone(), rec.rec.job.name.clone());
        if rec.rec.job.job_type == JobType::Daemon {
            self.daemons.insert(job_id.clone());
        }
        self.jobs.insert(job_id.clone(), rec);
        self.names.insert(ns_name, job_id.clone());
        let reply =
            Reply::Submitted { job_id: job_id.clone(), evaluation_id: String::new(), warnings };
        if self.cfg.mutants.on(Mutant::ReplyBeforePersist) {
            // BUG (mutant): acknowledge before anything is durable.
            self.reply(request, reply.clone());
        }
        self.persist_job(&job_id);
        self.add_history(
            now,
            &job_id,
            JobHistoryType::JobLevel,
            "",
            topics::SUBMISSION,
            "Job submitted",
            Some((JobStateType::Undefined, JobStateType::Pending)),
            None,
        );
        if let Some(total) = self.total_timeout(&job_id) {
            self.timers.arm(now + total, Timer::JobTimeout(job_id.clone()));
        }
        let eval_id = self.trigger(now, &job_id, EvalTrigger::JobRegister);
        self.process_evaluations(now);
        if !self.cfg.mutants.on(Mutant::ReplyBeforePersist) {
            let Reply::Submitted { job_id, warnings, .. } = reply else { unreachable!() };
            self.reply(request, Reply::Submitted { job_id, evaluation_id: eval_id, warnings });
        }
    }

    fn apply_defaults(&self, job: &mut Job) {
        let d = &self.cfg.defaults;
        let is_batchlike = matches!(job.job_type, JobType::Batch | JobType::Ops);
        for task in &mut job.tasks {
            let r = task.resources.get_or_insert_with(ResourcesConfig::default);
            for (field, default) in [
                (&mut r.cpu, &d.resources.cpu),
                (&mut r.memory, &d.resources.memory),
                (&mut r.disk, &d.resources.disk),
                (&mut r.gpu, &d.resources.gpu),
            ] {
                if field.is_empty() {
                    field.clone_from(default);
                }
            }
            if let Some(t) = &mut task.timeouts {
                if t.queue_timeout == 0 {
                    t.queue_timeout = d.queue_timeout;
                }
                if t.execution_timeout == 0 && is_batchlike {
                    t.execution_timeout = d.execution_timeout;
                }
                if t.total_timeout == 0 && is_batchlike {
                    t.total_timeout = d.total_timeout;
                }
            }
            if let (Some(p), Some(default)) = (&mut task.publisher, &d.publisher)
                && p.is_empty()
            {
                *p = default.clone();
            }
        }
    }

    fn new_job_rec(&mut self, now: Timestamp, mut job: Job) -> Result<JobRec, ApiError> {
        job.state = State::new(JobStateType::Pending);
        job.version = 1;
        job.revision = 1;
        job.create_time = now.as_nanos();
        job.modify_time = now.as_nanos();
        job.meta.insert("bacalhau.org/orchestrator.id".into(), self.cfg.node_id.clone());
        job.meta.insert("bacalhau.org/requester.id".into(), self.cfg.node_id.clone());
        let rec = JobRecord {
            job: Arc::new(job),
            next_attempt: 1,
            queued_since: None,
            ops_dispatched: false,
            history_seq: 0,
        };
        Self::job_rec_from(rec)
    }

    fn job_rec_from(rec: JobRecord) -> Result<JobRec, ApiError> {
        let job = &rec.job;
        let task =
            job.task().ok_or_else(|| ApiError::new(ErrorKind::Invalid, "job has no task"))?;
        let resources = match &task.resources {
            Some(r) => {
                r.parse().map_err(|_| ApiError::new(ErrorKind::Invalid, "invalid resources"))?
            }
            None => Resources::default(),
        };
        Ok(Self::job_rec_with(rec, resources))
    }

    /// A job's in-memory record with `resources` (no checks: for a stored job that can no
    /// longer be scheduled, kept so that it can be failed with the reason).
    fn job_rec_with(rec: JobRecord, resources: Resources) -> JobRec {
        let job = &rec.job;
        let task = job.task();
        let mut storages: Vec<String> = task
            .map(|t| &t.input_sources[..])
            .unwrap_or_default()
            .iter()
            .filter_map(|i| i.source.as_ref().map(|s| s.type_key()))
            .collect();
        storages.sort();
        storages.dedup();
        JobRec {
            resources,
            constraints: Constraints::split(&job.constraints),
            engine: task.map(|t| t.engine_type()).unwrap_or_default(),
            publisher: task.map(|t| t.publisher_type()).unwrap_or_default(),
            storages,
            job_json: codec::to_json(&**job),
            execs: Vec::new(),
            history: Vec::new(),
            eval_at: None,
            rec,
        }
    }

    /// Stops a job: its executions are cancelled and it ends `Stopped`.
    pub fn stop(&mut self, now: Timestamp, request: RequestId, job_id: &str, reason: &str) {
        let Some(job) = self.jobs.get(job_id) else {
            let msg = format!("job {job_id} not found");
            self.reply(request, Reply::Error(ApiError::new(ErrorKind::NotFound, msg)));
            return;
        };
        match job.rec.job.state.state_type {
            JobStateType::Stopped => {
                self.reply(request, Reply::Stopped { evaluation_id: String::new() });
                return;
            }
            s if s.is_terminal() => {
                let msg = format!("cannot stop job {job_id}: it is already {s}");
                self.reply(request, Reply::Error(ApiError::new(ErrorKind::Conflict, msg)));
                return;
            }
            _ => {}
        }
        let message = if reason.is_empty() {
            "Job stopped by user".to_string()
        } else {
            format!("Job stopped by user: {reason}")
        };
        self.set_job_state(now, job_id, JobStateType::Stopped, &message);
        let eval_id = self.trigger(now, job_id, EvalTrigger::JobCancel);
        self.process_evaluations(now);
        self.reply(request, Reply::Stopped { evaluation_id: eval_id });
    }

    /// Approves, rejects or forgets a node.
    pub fn node_action(
        &mut self,
        now: Timestamp,
        request: RequestId,
        node_id: &str,
        action: NodeAction,
    ) {
        let Some(node) = self.nodes.get_mut(node_id) else {
            let msg = format!("node {node_id} not found");
            self.reply(request, Reply::Error(ApiError::new(ErrorKind::NotFound, msg)));
            return;
        };
        match action {
            NodeAction::Approve | NodeAction::Reject => {
                let target = if action == NodeAction::Approve {
                    NodeMembership::Approved
                } else {
                    NodeMembership::Rejected
                };
                if node.state.membership == target {
                    let msg = format!("node {node_id} is already {target}");
                    self.reply(request, Reply::Error(ApiError::new(ErrorKind::Conflict, msg)));
                    return;
                }
                node.state.membership = target;
                let rec = NodeRecord { advert: node.advert.clone(), membership: target };
                self.actions.push_back(Action::Persist(Record::Node(Box::new(rec))));
                if target == NodeMembership::Rejected {
                    self.node_lost(now, node_id, "node was rejected by an operator");
                } else {
                    self.trigger_node_joined(now);
                }
            }
            NodeAction::Delete => {
                self.node_lost(now, node_id, "node was deleted by an operator");
                self.nodes.remove(node_id);
                self.node_order.retain(|n| n != node_id);
                self.actions.push_back(Action::Persist(Record::NodeDeleted(node_id.to_string())));
            }
        }
        self.process_evaluations(now);
        self.reply(request, Reply::NodeUpdated);
    }

    fn reply(&mut self, request: RequestId, reply: Reply) {
        self.actions.push_back(Action::Reply { request, reply });
    }

    fn send(&mut self, to: &str, message: Message) {
        self.actions.push_back(Action::Send { to: to.to_string(), message });
    }

    // ------------------------------------------------------------------ peer messages

    /// A message from a compute node.
    pub fn handle_message(&mut self, now: Timestamp, from: &str, message: Message) {
        match message {
            Message::NodeInfo { advert, clock } => self.on_node_info(now, from, advert, clock),
            Message::Heartbeat { heartbeat, clock } => {
                self.on_heartbeat(now, from, heartbeat, clock)
            }
            Message::Goodbye { clock } => {
                if self.touch_node(now, from, clock) {
                    self.node_lost(now, from, "node shut down");
                }
            }
            Message::BidResult { exec, accepted, reason, retryable, clock } => {
                self.touch_node(now, from, clock);
                self.on_bid_result(now, from, &exec, accepted, &reason, retryable, clock);
            }
            Message::ExecutionUpdate { exec, update, clock } => {
                self.touch_node(now, from, clock);
                let terminal = update.is_terminal();
                self.on_exec_update(now, from, &exec, update, clock);
                if terminal {
                    // Acknowledge even stale or duplicate terminal updates: the node may forget.
                    self.send(from, Message::UpdateAck { exec });
                }
            }
            // Orchestrator-bound messages only; anything else is a confused peer.
            Message::AskForBid { .. }
            | Message::BidAccepted { .. }
            | Message::BidRejected { .. }
            | Message::CancelExecution { .. }
            | Message::UpdateAck { .. } => {
                self.stats.misdirected_messages += 1;
            }
        }
        self.process_evaluations(now);
    }

    /// Records that we heard from a known node; false if the node is unknown.
    fn touch_node(&mut self, now: Timestamp, from: &str, clock: NodeClock) -> bool {
        let Some(node) = self.nodes.get_mut(from) else { return false };
        node.last_seen = node.last_seen.max(now);
        node.clock = node.clock.max(clock);
        if node.liveness_at.is_none() {
            // One armed check per node; when it fires it re-arms from the latest news.
            let deadline = node.last_seen + self.cfg.disconnect_timeout;
            node.liveness_at = Some(deadline);
            self.timers.arm(deadline, Timer::Node(from.to_string()));
        }
        if node.state.connection == NodeConnection::Disconnected
            && node.state.membership != NodeMembership::Rejected
        {
            node.state.connection = NodeConnection::Connected;
            node.state.connection_state.status = NodeConnection::Connected;
            node.state.connection_state.connected_since = wall(now);
            self.trigger_node_joined(now);
        }
        if let Some(node) = self.nodes.get_mut(from) {
            node.state.connection_state.last_heartbeat = wall(node.last_seen);
        }
        true
    }

    fn on_node_info(&mut self, now: Timestamp, from: &str, advert: NodeAdvert, clock: NodeClock) {
        if advert.node_id != from {
            self.stats.misdirected_messages += 1;
            return;
        }
        let info = node_info_from(&advert);
        let max: Resources = advert.max_capacity.into();
        let max_job: Resources = advert.max_job.into();
        let changed;
        match self.nodes.get_mut(from) {
            Some(node) => {
                changed = node.advert != advert;
                node.state.info = info;
                node.max = max;
                node.max_job = max_job;
                node.advert = advert.clone();
            }
            None => {
                changed = true;
                let membership = if self.cfg.manual_approval {
                    NodeMembership::Pending
                } else {
                    NodeMembership::Approved
                };
                let state = NodeState {
                    info,
                    membership,
                    connection: NodeConnection::Disconnected,
                    connection_state: ConnectionState::default(),
                };
                self.nodes.insert(
                    from.to_string(),
                    NodeRec {
                        state,
                        advert: advert.clone(),
                        available: max.clone(),
                        max,
                        max_job,
                        queued: Resources::default(),
                        promised: BTreeMap::new(),
                        hb_clock: NodeClock::default(),
                        last_seen: now,
                        liveness_at: None,
                        clock,
                        live_execs: BTreeSet::new(),
                    },
                );
                let pos = self
                    .node_order
                    .binary_search_by(|n| n.as_str().cmp(from))
                    .unwrap_or_else(|p| p);
                self.node_order.insert(pos, from.to_string());
            }
        }
        if changed {
            let membership = self.nodes[from].state.membership;
            let rec = NodeRecord { advert, membership };
            self.actions.push_back(Action::Persist(Record::Node(Box::new(rec))));
            self.trigger_node_joined(now);
        }
        self.touch_node(now, from, clock);
    }

    fn on_heartbeat(&mut self, now: Timestamp, from: &str, hb: Heartbeat, clock: NodeClock) {
        let Some(node) = self.nodes.get(from) else {
            // Unknown node: its NodeInfo was lost; it re-sends it periodically.
            return;
        };
        if clock < node.clock {
            // An old heartbeat overtaken by newer news: its load figures are stale.
            self.touch_node(now, from, node.clock);
            return;
        }
        let freed = {
            let node = self.nodes.get_mut(from).expect("checked above");
            let before = node.available.clone();
            node.available = hb.available.into();
            node.queued = hb.queued.into();
            node.settle(clock);
            node.state.info.compute_node_info.available_capacity = node.available.clone();
            node.state.info.compute_node_info.queue_capacity = node.queued.clone();
            node.state.info.compute_node_info.running_executions = i64::from(hb.running);
            !node.available.fits_in(&before)
        };
        self.touch_node(now, from, clock);
        if freed {
            self.trigger_queued(now);
        }
        self.reconcile(now, from, &hb, clock);
    }

    /// Compares what the node holds with what we expect, re-sends what was lost, cancels
    /// what should not run, and fails what the node forgot.
    fn reconcile(&mut self, now: Timestamp, from: &str, hb: &Heartbeat, clock: NodeClock) {
        let mut listed = BTreeSet::new();
        for (r, phase) in &hb.executions {
            listed.insert(r.execution_id.as_str());
            let ours = self.execs.get(&r.execution_id);
            let live_match = ours
                .is_some_and(|e| e.attempt == r.attempt && e.node() == from && !e.is_terminal());
            if !live_match {
                if *phase != ComputePhase::Terminal {
                    self.send(
                        from,
                        Message::CancelExecution {
                            exec: r.clone(),
                            reason: "the orchestrator no longer expects this execution".into(),
                        },
                    );
                }
                continue;
            }
            let e = ours.expect("live_match implies present");
            let desired = e.execution.desired_state.state_type;
            match (e.state(), phase) {
                // A lost BidResult: the node took the bid.
                (ExecutionStateType::AskForBid, ComputePhase::AwaitingApproval) => {
                    let reason = String::new();
                    self.on_bid_result(now, from, r, true, &reason, false, clock);
                }
                // A lost BidAccepted: say it again.
                (_, ComputePhase::AwaitingApproval)
                    if desired == ExecutionDesiredStateType::Running =>
                {
                    self.send(from, Message::BidAccepted { exec: r.clone() });
                }
                _ => {}
            }
        }
        let forgotten: Vec<String> = self
            .nodes
            .get(from)
            .map(|n| {
                n.live_execs
                    .iter()
                    .filter(|id| !listed.contains(id.as_str()))
                    .filter(|id| {
                        self.execs
                            .get(*id)
                            .is_some_and(|e| e.node_confirmed && e.last_clock < clock)
                    })
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        for id in forgotten {
            self.end_exec(
                now,
                &id,
                ExecutionStateType::Failed,
                End::NodeLost,
                &format!("node {from} no longer holds the execution (it restarted or lost it)"),
            );
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_bid_result(
        &mut self,
        now: Timestamp,
        from: &str,
        r: &ExecRef,
        accepted: bool,
        reason: &str,
        retryable: bool,
        clock: NodeClock,
    ) {
        let Some(id) = self.live_exec_for(from, r) else { return };
        let e = exec_mut(&mut self.execs, &id).expect("live_exec_for checked");
        let first_news = !e.node_confirmed;
        e.node_confirmed = true;
        e.last_clock = e.last_clock.max(clock);
        if e.state() != ExecutionStateType::AskForBid {
            if first_news {
                self.persist_exec(&id);
            }
            return; // duplicate
        }
        e.bid_deadline = None;
        let job_id = e.execution.job_id.clone();
        let direct = !e.needs_approval;
        if accepted && let Some(n) = self.nodes.get_mut(from) {
            // Settled at once when the node's latest heartbeat is newer than its answer.
            if clock <= n.hb_clock {
                n.promised.remove(&id);
            } else if let Some(p) = n.promised.get_mut(&id) {
                p.accepted_at = Some(clock);
            }
        }
        if accepted {
            if direct {
                self.set_exec_state(
                    now,
                    &id,
                    ExecutionStateType::BidAccepted,
                    None,
                    "Node accepted the execution",
                );
            } else {
                self.set_exec_state(
                    now,
                    &id,
                    ExecutionStateType::AskForBidAccepted,
                    None,
                    "Node bid on the execution",
                );
            }
            self.trigger(now, &job_id, EvalTrigger::ExecUpdate);
        } else {
            let msg = if reason.is_empty() {
                "Node declined the bid".to_string()
            } else {
                format!("Node declined the bid: {reason}")
            };
            self.end_exec(
                now,
                &id,
                ExecutionStateType::AskForBidRejected,
                End::Refused { retryable },
                &msg,
            );
        }
    }

    /// The ID of the live execution a message refers to, or `None` (counted as stale).
    fn live_exec_for(&mut self, from: &str, r: &ExecRef) -> Option<String> {
        let accept_stale = self.cfg.mutants.on(Mutant::AcceptStaleResult);
        match self.execs.get(&r.execution_id) {
            Some(e) if e.node() != from => {
                self.stats.misdirected_messages += 1;
                None
            }
            Some(e) if e.attempt == r.attempt && !e.is_terminal() => Some(r.execution_id.clone()),
            // BUG (mutant): believe a superseded attempt.
            Some(e) if accept_stale && e.state() != ExecutionStateType::Completed => {
                Some(r.execution_id.clone())
            }
            _ => {
                self.stats.stale_messages += 1;
                None
            }
        }
    }

    fn on_exec_update(
        &mut self,
        now: Timestamp,
        from: &str,
        r: &ExecRef,
        update: ExecUpdate,
        clock: NodeClock,
    ) {
        let Some(id) = self.live_exec_for(from, r) else {
            if !update.is_terminal() {
                // A node works on something we do not expect: stop it.
                self.send(
                    from,
                    Message::CancelExecution {
                        exec: r.clone(),
                        reason: "the orchestrator no longer expects this execution".into(),
                    },
                );
            }
            return;
        };
        let e = exec_mut(&mut self.execs, &id).expect("live_exec_for checked");
        if !e.node_confirmed {
            e.node_confirmed = true;
            self.persist_exec(&id);
        }
        let e = exec_mut(&mut self.execs, &id).expect("present");
        if clock < e.last_clock && !update.is_terminal() {
            return; // an old progress report overtaken by a newer one
        }
        e.last_clock = e.last_clock.max(clock);
        let job_id = e.execution.job_id.clone();
        match update {
            ExecUpdate::Preparing => {
                if e.state() == ExecutionStateType::AskForBidAccepted
                    || e.state() == ExecutionStateType::AskForBid
                {
                    self.set_exec_state(
                        now,
                        &id,
                        ExecutionStateType::BidAccepted,
                        None,
                        "Preparing inputs and environment",
                    );
                }
            }
            ExecUpdate::Running => {
                if matches!(e.state(), ExecutionStateType::Running | ExecutionStateType::Publishing)
                {
                    return;
                }
                e.running_since = Some(now);
                if let Some(t) = self.exec_timeout(&job_id) {
                    self.timers
                        .arm(now + t + self.cfg.exec_timeout_grace, Timer::ExecTimeout(id.clone()));
                }
                self.set_exec_state(
                    now,
                    &id,
                    ExecutionStateType::Running,
                    None,
                    "Execution is running",
                );
                self.mark_job_running(now, &job_id);
            }
            ExecUpdate::Publishing => {
                if e.state() != ExecutionStateType::Publishing {
                    self.set_exec_state(
                        now,
                        &id,
                        ExecutionStateType::Publishing,
                        None,
                        "Publishing results",
                    );
                }
            }
            ExecUpdate::Completed { output, published_json } => {
                let published = crate::protocol::decode_published(&published_json).ok().flatten();
                let e = exec_mut(&mut self.execs, &id).expect("present");
                e.execution.run_output = Some(output.into());
                e.execution.published_result = published;
                self.end_exec(
                    now,
                    &id,
                    ExecutionStateType::Completed,
                    End::Completed,
                    "Execution completed",
                );
            }
            ExecUpdate::Failed { failure, output } => {
                let e = exec_mut(&mut self.execs, &id).expect("present");
                let mut out = output.map(crate::model::RunCommandResult::from).unwrap_or_default();
                out.error_msg = failure.message.clone();
                e.execution.run_output = Some(out);
                let end = if failure.kind == FailureKind::Timeout {
                    End::TimedOut
                } else if failure.kind == FailureKind::NodeRestarted {
                    End::NodeLost
                } else {
                    End::Failed
                };
                let msg =
                    format!("Execution failed ({}): {}", failure.kind.as_str(), failure.message);
                self.end_exec(now, &id, ExecutionStateType::Failed, end, &msg);
            }
            ExecUpdate::Cancelled { reason } => {
                // The node gave up the execution on its own (e.g. an unapproved bid expired).
                self.end_exec(
                    now,
                    &id,
                    ExecutionStateType::Cancelled,
                    End::NodeLost,
                    &format!("Node cancelled the execution: {reason}"),
                );
            }
        }
    }

    // ------------------------------------------------------------------ timeouts

    /// Call when [`Orchestrator::poll_timeout`]'s deadline has passed.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        while let Some(t) = self.timers.pop_due(now) {
            match t {
                Timer::Node(id) => self.on_node_timer(now, &id),
                Timer::Bid(id) => self.on_bid_timer(now, &id),
                Timer::ExecTimeout(id) => self.on_exec_timer(now, &id),
                Timer::Eval(job_id) => {
                    if let Some(j) = self.jobs.get_mut(&job_id)
                        && j.eval_at.is_some_and(|at| at <= now)
                    {
                        j.eval_at = None;
                        self.trigger(now, &job_id, EvalTrigger::JobQueue);
                    }
                }
                Timer::JobTimeout(job_id) => {
                    if self.jobs.get(&job_id).is_some_and(|j| !j.rec.job.is_terminal()) {
                        self.trigger(now, &job_id, EvalTrigger::JobTimeout);
                    }
                }
            }
        }
        self.process_evaluations(now);
    }

    fn on_node_timer(&mut self, now: Timestamp, id: &str) {
        let Some(node) = self.nodes.get_mut(id) else { return };
        node.liveness_at = None;
        if node.state.connection != NodeConnection::Connected {
            return;
        }
        let deadline = node.last_seen + self.cfg.disconnect_timeout;
        if deadline > now {
            // Heard from it since this check was armed: check again later.
            node.liveness_at = Some(deadline);
            self.timers.arm(deadline, Timer::Node(id.to_string()));
            return;
        }
        let silent = now.since(node.last_seen).as_secs();
        self.node_lost(now, id, &format!("node {id} disconnected: no heartbeat for {silent}s"));
    }

    fn on_bid_timer(&mut self, now: Timestamp, id: &str) {
        let Some(e) = self.execs.get(id) else { return };
        if e.state() != ExecutionStateType::AskForBid || e.bid_deadline.is_none_or(|d| d > now) {
            return;
        }
        let node = e.node().to_string();
        let msg = format!(
            "node {node} did not answer the bid within {}s",
            self.cfg.bid_timeout.as_secs()
        );
        self.end_exec(now, id, ExecutionStateType::Failed, End::BidTimedOut, &msg);
    }

    fn on_exec_timer(&mut self, now: Timestamp, id: &str) {
        let Some(e) = self.execs.get(id) else { return };
        if e.is_terminal() {
            return;
        }
        let Some(since) = e.running_since else { return };
        let Some(limit) = self.exec_timeout(&e.execution.job_id) else { return };
        if since + limit + self.cfg.exec_timeout_grace > now {
            return;
        }
        let msg = format!(
            "execution timed out: still running after {}s (ExecutionTimeout)",
            limit.as_secs()
        );
        self.end_exec(now, id, ExecutionStateType::Failed, End::TimedOut, &msg);
    }

    /// Marks a node disconnected and fails its live executions (they will be rescheduled).
    fn node_lost(&mut self, now: Timestamp, id: &str, reason: &str) {
        let Some(node) = self.nodes.get_mut(id) else { return };
        if node.state.connection == NodeConnection::Connected {
            self.stats.nodes_lost += 1;
        }
        node.state.connection = NodeConnection::Disconnected;
        node.state.connection_state.status = NodeConnection::Disconnected;
        node.state.connection_state.disconnected_since = wall(now);
        node.state.connection_state.last_error = reason.to_string();
        if self.cfg.mutants.on(Mutant::NoRescheduleOnNodeLoss) {
            return; // BUG (mutant): the executions stay "running" on a dead node.
        }
        let live: Vec<String> = node.live_execs.iter().cloned().collect();
        for exec_id in live {
            self.end_exec(now, &exec_id, ExecutionStateType::Failed, End::NodeLost, reason);
        }
    }

    // ------------------------------------------------------------------ evaluations

    fn trigger(&mut self, now: Timestamp, job_id: &str, by: EvalTrigger) -> String {
        if self.evaluating.as_deref() == Some(job_id) {
            return String::new();
        }
        if let Some(e) = self.pending.get(job_id) {
            return e.id.clone();
        }
        let Some(job) = self.jobs.get(job_id) else { return String::new() };
        let eval = Evaluation {
            id: self.rng.next_uuid().to_string(),
            namespace: job.rec.job.namespace.clone(),
            job_id: job_id.to_string(),
            triggered_by: by,
            priority: job.rec.job.priority,
            job_type: job.rec.job.job_type.clone(),
            status: EvalStatus::Pending,
            comment: String::new(),
            wait_until: WallTime::ZERO,
            create_time: now.as_nanos(),
            modify_time: now.as_nanos(),
        };
        let id = eval.id.clone();
        self.eval_seq += 1;
        self.eval_order.insert((
            std::cmp::Reverse(eval.priority),
            self.eval_seq,
            job_id.to_string(),
        ));
        self.pending.insert(job_id.to_string(), eval);
        id
    }

    fn trigger_node_joined(&mut self, now: Timestamp) {
        let jobs: Vec<String> = self.daemons.iter().chain(self.queued.iter()).cloned().collect();
        for j in jobs {
            self.trigger(now, &j, EvalTrigger::NodeJoin);
        }
    }

    /// Wakes the jobs waiting longest for capacity (a bounded number: each freed slot can
    /// take only so many, and the rest re-check after the queue back-off anyway).
    fn trigger_queued(&mut self, now: Timestamp) {
        if self.queued.is_empty() {
            return;
        }
        let mut waiting: Vec<(std::cmp::Reverse<i64>, Timestamp, String)> = self
            .queued
            .iter()
            .filter(|j| {
                !self.pending.contains_key(*j) && self.evaluating.as_deref() != Some(j.as_str())
            })
            .filter_map(|j| {
                let rec = &self.jobs.get(j)?.rec;
                Some((
                    std::cmp::Reverse(rec.job.priority),
                    rec.queued_since.unwrap_or(now),
                    j.clone(),
                ))
            })
            .collect();
        waiting.sort();
        for (_, _, j) in waiting.into_iter().take(QUEUED_WAKE_MAX) {
            self.trigger(now, &j, EvalTrigger::JobQueue);
        }
    }

    /// Runs every pending evaluation (highest priority first).
    fn process_evaluations(&mut self, now: Timestamp) {
        while let Some((_, _, job_id)) = self.eval_order.pop_first() {
            let Some(mut eval) = self.pending.remove(&job_id) else { continue };
            self.stats.evaluations += 1;
            self.evaluating = Some(job_id.clone());
            self.current_eval_id = eval.id.clone();
            let before = self.actions.len();
            let comment = self.evaluate(now, &job_id, &eval);
            self.evaluating = None;
            eval.status = EvalStatus::Complete;
            eval.comment = comment;
            eval.modify_time = now.as_nanos();
            // A periodic re-check of a queued job that changed nothing durable (still queued,
            // no new execution, no history) leaves no record: with many jobs waiting for
            // capacity it would otherwise write one record per job every QueueBackoff, for
            // as long as they wait. No reply or history names these evaluations.
            let changed = self.actions.iter().skip(before).any(|a| matches!(a, Action::Persist(_)));
            if changed || eval.triggered_by != EvalTrigger::JobQueue {
                self.actions.push_back(Action::Persist(Record::Evaluation(Box::new(eval))));
            }
            self.maybe_evict(&job_id);
        }
    }

    /// Terminal jobs whose executions are all terminal leave memory (the store keeps them).
    fn maybe_evict(&mut self, job_id: &str) {
        let Some(job) = self.jobs.get(job_id) else { return };
        if !job.rec.job.is_terminal()
            || job.execs.iter().any(|id| self.execs.get(id).is_some_and(|e| !e.is_terminal()))
        {
            return;
        }
        let job = self.jobs.remove(job_id).expect("checked");
        for id in &job.execs {
            self.execs.remove(id);
        }
        let key = (job.rec.job.namespace.clone(), job.rec.job.name.clone());
        if self.names.get(&key).is_some_and(|j| j == job_id) {
            self.names.remove(&key);
        }
        self.daemons.remove(job_id);
        self.queued.remove(job_id);
    }

    // ------------------------------------------------------------------ state changes

    fn total_timeout(&self, job_id: &str) -> Option<Duration> {
        let job = &self.jobs.get(job_id)?.rec.job;
        if !matches!(job.job_type, JobType::Batch | JobType::Ops) {
            return None;
        }
        let t = job.task()?.timeouts().total_timeout;
        (t > 0).then(|| secs(t))
    }

    fn exec_timeout(&self, job_id: &str) -> Option<Duration> {
        let job = &self.jobs.get(job_id)?.rec.job;
        let t = job.task()?.timeouts().effective_execution_timeout();
        (t > 0).then(|| secs(t))
    }

    fn persist_job(&mut self, job_id: &str) {
        if let Some(j) = self.jobs.get(job_id) {
            self.actions.push_back(Action::Persist(Record::Job(Box::new(j.rec.clone()))));
        }
    }

    fn persist_exec(&mut self, exec_id: &str) {
        if let Some(e) = self.execs.get(exec_id) {
            self.actions.push_back(Action::Persist(Record::Execution(Arc::clone(e))));
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn add_history(
        &mut self,
        now: Timestamp,
        job_id: &str,
        kind: JobHistoryType,
        exec_id: &str,
        topic: &str,
        message: &str,
        job_state: Option<(JobStateType, JobStateType)>,
        exec_state: Option<(ExecutionStateType, ExecutionStateType)>,
    ) {
        let Some(job) = self.jobs.get_mut(job_id) else { return };
        job.rec.history_seq += 1;
        let entry = JobHistory {
            seq_num: job.rec.history_seq,
            history_type: kind,
            job_id: job_id.to_string(),
            job_version: job.rec.job.version,
            execution_id: exec_id.to_string(),
            event: event(now, topic, message),
            time: wall(now),
            job_state: job_state.map(|(previous, new)| StateChange { previous, new }),
            execution_state: exec_state.map(|(previous, new)| StateChange { previous, new }),
        };
        let entry = Arc::new(entry);
        job.history.push(Arc::clone(&entry));
        self.actions.push_back(Action::Persist(Record::History(entry)));
    }

    fn set_job_state(&mut self, now: Timestamp, job_id: &str, new: JobStateType, message: &str) {
        let Some(j) = self.jobs.get_mut(job_id) else { return };
        let old = j.rec.job.state.state_type;
        if old == new || old.is_terminal() {
            return;
        }
        if !invariants::job_transition_ok(old, new) {
            self.violations.push(format!("job {job_id}: illegal transition {old} -> {new}"));
        }
        let job = Arc::make_mut(&mut j.rec.job);
        job.state = State::with_message(new, message);
        job.revision += 1;
        job.modify_time = now.as_nanos();
        if new == JobStateType::Queued {
            j.rec.queued_since.get_or_insert(now);
            self.queued.insert(job_id.to_string());
        } else {
            self.queued.remove(job_id);
        }
        self.persist_job(job_id);
        self.add_history(
            now,
            job_id,
            JobHistoryType::JobLevel,
            "",
            topics::STATE_UPDATE,
            message,
            Some((old, new)),
            None,
        );
    }

    fn mark_job_running(&mut self, now: Timestamp, job_id: &str) {
        if let Some(j) = self.jobs.get_mut(job_id)
            && matches!(j.rec.job.state.state_type, JobStateType::Pending | JobStateType::Queued)
        {
            j.rec.queued_since = None;
            self.set_job_state(now, job_id, JobStateType::Running, "Job is running");
        }
    }

    fn set_exec_state(
        &mut self,
        now: Timestamp,
        id: &str,
        new: ExecutionStateType,
        desired: Option<ExecutionDesiredStateType>,
        message: &str,
    ) {
        let Some(e) = exec_mut(&mut self.execs, id) else { return };
        let old = e.state();
        if !invariants::exec_transition_ok(old, new) {
            self.violations.push(format!("execution {id}: illegal transition {old} -> {new}"));
        }
        e.execution.compute_state = State::with_message(new, message);
        if let Some(d) = desired {
            e.execution.desired_state = State::with_message(d, message);
        }
        e.execution.revision += 1;
        e.execution.modify_time = now.as_nanos();
        let job_id = e.execution.job_id.clone();
        if new.is_terminal() {
            let node = e.execution.node_id.clone();
            if let Some(n) = self.nodes.get_mut(&node) {
                n.live_execs.remove(id);
            }
        }
        self.persist_exec(id);
        self.add_history(
            now,
            &job_id,
            JobHistoryType::ExecutionLevel,
            id,
            topics::EXECUTION,
            message,
            None,
            Some((old, new)),
        );
    }

    /// Ends an execution for good, recording why; triggers an evaluation of its job.
    fn end_exec(
        &mut self,
        now: Timestamp,
        id: &str,
        state: ExecutionStateType,
        end: End,
        message: &str,
    ) {
        let Some(e) = exec_mut(&mut self.execs, id) else { return };
        if e.is_terminal() {
            return;
        }
        e.end = Some(end);
        e.ended_at = Some(now);
        e.bid_deadline = None;
        let job_id = e.execution.job_id.clone();
        let node_id = e.execution.node_id.clone();
        // Whatever this execution held on its node is free again, and jobs waiting for
        // capacity may fit now: a promise not yet settled is dropped; capacity the node's
        // figures show taken is given back when the node itself reported the end (it released
        // it then; a heartbeat sent before that report is older than it and is ignored).
        if let Some(r) = self.jobs.get(&job_id).map(|j| j.resources.clone())
            && let Some(n) = self.nodes.get_mut(&node_id)
            && n.promised.remove(id).is_none()
            && matches!(end, End::Completed | End::Failed)
        {
            n.available = n.available.add(&r).min(&n.max);
        }
        self.trigger_queued(now);
        self.set_exec_state(now, id, state, Some(ExecutionDesiredStateType::Stopped), message);
        if end.counts_as_attempt() || end == End::NodeLost {
            self.stats.retries +=
                u64::from(self.jobs.get(&job_id).is_some_and(|j| !j.rec.job.is_terminal()));
        }
        let trigger = match end {
            End::Completed => EvalTrigger::ExecUpdate,
            End::TimedOut | End::BidTimedOut => EvalTrigger::ExecTimeout,
            End::NodeLost => EvalTrigger::NodeLeave,
            _ => EvalTrigger::ExecFailure,
        };
        self.trigger(now, &job_id, trigger);
    }

    /// Stops a live execution from the orchestrator's side and tells its node.
    fn stop_exec(&mut self, now: Timestamp, id: &str, reason: &str) {
        let Some(e) = self.execs.get(id) else { return };
        if e.is_terminal() {
            return;
        }
        let r = exec_ref(e);
        let node = e.node().to_string();
        let unapproved = e.execution.desired_state.state_type == ExecutionDesiredStateType::Pending
            && matches!(
                e.state(),
                ExecutionStateType::New
                    | ExecutionStateType::AskForBid
                    | ExecutionStateType::AskForBidAccepted
            );
        if unapproved {
            self.end_exec(now, id, ExecutionStateType::BidRejected, End::Stopped, reason);
            self.send(&node, Message::BidRejected { exec: r, reason: reason.to_string() });
        } else {
            self.end_exec(now, id, ExecutionStateType::Cancelled, End::Stopped, reason);
            self.send(&node, Message::CancelExecution { exec: r, reason: reason.to_string() });
        }
    }

    /// Approves a bid: the node may start.
    fn approve_exec(&mut self, now: Timestamp, id: &str) {
        let Some(e) = self.execs.get(id) else { return };
        let r = exec_ref(e);
        let node = e.node().to_string();
        self.set_exec_state(
            now,
            id,
            ExecutionStateType::BidAccepted,
            Some(ExecutionDesiredStateType::Running),
            "Bid accepted",
        );
        self.send(&node, Message::BidAccepted { exec: r });
    }

    /// Creates an execution on `node` and asks the node to bid (or to start, when
    /// `needs_approval` is false).
    fn create_exec(
        &mut self,
        now: Timestamp,
        job_id: &str,
        node_id: &str,
        partition: u32,
        needs_approval: bool,
        eval_id: &str,
    ) {
        let exec_id = format!("e-{}", self.rng.next_uuid());
        let Some(job) = self.jobs.get_mut(job_id) else { return };
        let attempt = job.rec.next_attempt;
        job.rec.next_attempt += 1;
        job.execs.push(exec_id.clone());
        let resources = job.resources.clone();
        let task_name = job.rec.job.task().map(|t| t.name.clone()).unwrap_or_default();
        let count = u32::try_from(job.rec.job.count.max(1)).unwrap_or(u32::MAX);
        let desired = if needs_approval {
            ExecutionDesiredStateType::Pending
        } else {
            ExecutionDesiredStateType::Running
        };
        let execution = Execution {
            id: exec_id.clone(),
            namespace: job.rec.job.namespace.clone(),
            eval_id: eval_id.to_string(),
            node_id: node_id.to_string(),
            job_id: job_id.to_string(),
            job_version: job.rec.job.version,
            allocated_resources: Some(crate::model::AllocatedResources {
                tasks: [(task_name, resources.clone())].into(),
            }),
            desired_state: State::new(desired),
            compute_state: State::with_message(ExecutionStateType::AskForBid, "Asking node to bid"),
            partition_index: i64::from(partition),
            revision: 1,
            create_time: now.as_nanos(),
            modify_time: now.as_nanos(),
            ..Default::default()
        };
        let rec = ExecRecord {
            execution,
            attempt,
            partition,
            needs_approval,
            end: None,
            ended_at: None,
            bid_deadline: Some(now + self.cfg.bid_timeout),
            running_since: None,
            last_clock: NodeClock::default(),
            node_confirmed: false,
        };
        let message = Message::AskForBid {
            exec: exec_ref(&rec),
            job_json: job.job_json.clone(),
            partition: (partition, count),
            needs_approval,
        };
        self.execs.insert(exec_id.clone(), Arc::new(rec));
        if let Some(n) = self.nodes.get_mut(node_id) {
            n.live_execs.insert(exec_id.clone());
            let promise = Promise { resources: resources.clone(), accepted_at: None };
            let before = n.promised.insert(exec_id.clone(), promise);
            debug_assert!(before.is_none(), "a new execution has no promise yet");
        }
        self.stats.executions_created += 1;
        self.persist_job(job_id);
        self.persist_exec(&exec_id);
        self.add_history(
            now,
            job_id,
            JobHistoryType::ExecutionLevel,
            &exec_id,
            topics::SCHEDULING,
            &format!("Execution created on node {node_id}"),
            None,
            Some((ExecutionStateType::Undefined, ExecutionStateType::AskForBid)),
        );
        self.timers.arm(now + self.cfg.bid_timeout, Timer::Bid(exec_id));
        self.send(node_id, message);
    }

    // ------------------------------------------------------------------ restore

    /// Rebuilds an orchestrator from its records (the latest of each key, in any order of
    /// keys; history in sequence order). Nodes come back as connected as of `now`, so they
    /// get a full disconnect timeout to check in before their executions are rescheduled;
    /// every unfinished job is evaluated again.
    pub fn restore(
        cfg: OrchestratorConfig,
        seed: u64,
        now: Timestamp,
        records: impl IntoIterator<Item = Record>,
    ) -> Self {
        let mut o = Orchestrator::new(cfg, seed);
        let mut evals = Vec::new();
        let mut execs = Vec::new();
        let mut history = Vec::new();
        let mut unusable: Vec<(String, String)> = Vec::new();
        for r in records {
            match r {
                Record::Job(j) => {
                    let j = *j;
                    let id = j.job.id.clone();
                    let key = (j.job.namespace.clone(), j.job.name.clone());
                    let is_daemon = j.job.job_type == JobType::Daemon;
                    let queued = j.job.state.state_type == JobStateType::Queued;
                    // A stored job this version cannot schedule (its spec no longer parses)
                    // is kept and failed with the reason, never dropped silently.
                    let rec = match Self::job_rec_from(j.clone()) {
                        Ok(rec) => rec,
                        Err(e) => {
                            unusable.push((id.clone(), e.message));
                            Self::job_rec_with(j, Resources::default())
                        }
                    };
                    if let Some(old) = o.jobs.get(&id) {
                        let mut rec = rec;
                        rec.execs = old.execs.clone();
                        o.jobs.insert(id.clone(), rec);
                    } else {
                        o.jobs.insert(id.clone(), rec);
                    }
                    o.names.insert(key, id.clone());
                    if is_daemon {
                        o.daemons.insert(id.clone());
                    }
                    if queued {
                        o.queued.insert(id);
                    } else {
                        o.queued.remove(&id);
                    }
                }
                Record::Execution(e) => execs.push(Arc::unwrap_or_clone(e)),
                Record::Evaluation(e) => evals.push(*e),
                Record::History(h) => history.push(h),
                Record::Node(n) => {
                    let n = *n;
                    let id = n.advert.node_id.clone();
                    let info = node_info_from(&n.advert);
                    let max: Resources = n.advert.max_capacity.into();
                    let rec = NodeRec {
                        state: NodeState {
                            info,
                            membership: n.membership,
                            connection: if n.membership == NodeMembership::Rejected {
                                NodeConnection::Disconnected
                            } else {
                                NodeConnection::Connected
                            },
                            connection_state: ConnectionState {
                                status: NodeConnection::Connected,
                                last_heartbeat: wall(now),
                                connected_since: wall(now),
                                ..Default::default()
                            },
                        },
                        max_job: n.advert.max_job.into(),
                        available: max.clone(),
                        max,
                        queued: Resources::default(),
                        promised: BTreeMap::new(),
                        hb_clock: NodeClock::default(),
                        last_seen: now,
                        liveness_at: Some(now + o.cfg.disconnect_timeout),
                        clock: NodeClock::default(),
                        live_execs: BTreeSet::new(),
                        advert: n.advert,
                    };
                    o.nodes.insert(id, rec);
                }
                Record::NodeDeleted(id) => {
                    o.nodes.remove(&id);
                }
            }
        }
        o.node_order = o.nodes.keys().cloned().collect();
        for id in o.node_order.clone() {
            o.timers.arm(now + o.cfg.disconnect_timeout, Timer::Node(id));
        }
        execs.sort_by(|a, b| {
            a.execution.job_id.cmp(&b.execution.job_id).then(a.attempt.cmp(&b.attempt))
        });
        for e in execs {
            let id = e.execution.id.clone();
            let Some(job) = o.jobs.get_mut(&e.execution.job_id) else { continue };
            if !job.execs.contains(&id) {
                job.execs.push(id.clone());
            }
            if !e.is_terminal() {
                if let Some(n) = o.nodes.get_mut(e.node()) {
                    n.live_execs.insert(id.clone());
                }
                if let Some(d) = e.bid_deadline {
                    o.timers.arm(d.max(now), Timer::Bid(id.clone()));
                }
                if let Some(since) = e.running_since
                    && let Some(t) = job
                        .rec
                        .job
                        .task()
                        .map(|t| t.timeouts().effective_execution_timeout())
                        .filter(|t| *t > 0)
                {
                    o.timers.arm(
                        since + secs(t) + o.cfg.exec_timeout_grace,
                        Timer::ExecTimeout(id.clone()),
                    );
                }
            }
            o.execs.insert(id, Arc::new(e));
        }
        history.sort_by(|a, b| a.job_id.cmp(&b.job_id).then(a.seq_num.cmp(&b.seq_num)));
        for h in history {
            if let Some(job) = o.jobs.get_mut(&h.job_id) {
                // History entries are written without re-writing the job record.
                job.rec.history_seq = job.rec.history_seq.max(h.seq_num);
                job.history.push(h);
            }
        }
        drop(evals); // Evaluations are an audit trail; every live job is re-evaluated below.
        for (id, why) in unusable {
            let message =
                format!("the stored job can no longer be scheduled ({why}): failed at restart");
            o.set_job_state(now, &id, JobStateType::Failed, &message);
        }
        let ids: Vec<String> = o.jobs.keys().cloned().collect();
        for id in &ids {
            if let Some(t) = o.total_timeout(id) {
                let created = Timestamp(o.jobs[id].rec.job.create_time);
                o.timers.arm((created + t).max(now), Timer::JobTimeout(id.clone()));
            }
        }
        for id in ids {
            o.maybe_evict(&id);
            if o.jobs.contains_key(&id) {
                o.trigger(now, &id, EvalTrigger::JobQueue);
            }
        }
        o
    }

    /// The persistent part of the state, for comparing a restored machine with the original.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            jobs: self.jobs.iter().map(|(k, j)| (k.clone(), j.rec.clone())).collect(),
            // `last_clock` is refreshed by every message without a write; it is an
            // optimisation for ordering, not state that must survive a restart.
            execs: self
                .execs
                .iter()
                .map(|(k, e)| {
                    let mut e = (**e).clone();
                    e.last_clock = NodeClock::default();
                    (k.clone(), e)
                })
                .collect(),
            history: self
                .jobs
                .iter()
                .map(|(k, j)| (k.clone(), j.history.iter().map(|h| (**h).clone()).collect()))
                .collect(),
            nodes: self
                .nodes
                .iter()
                .map(|(k, n)| {
                    (
                        k.clone(),
                        NodeRecord { advert: n.advert.clone(), membership: n.state.membership },
                    )
                })
                .collect(),
        }
    }

    /// Runs the registered scheduler for one job; returns the evaluation comment.
    fn evaluate(&mut self, now: Timestamp, job_id: &str, eval: &Evaluation) -> String {
        scheduler::evaluate(self, now, job_id, eval)
    }
}

/// The persistent state of an orchestrator (see [`Orchestrator::snapshot`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    /// Jobs in memory.
    pub jobs: BTreeMap<String, JobRecord>,
    /// Executions in memory.
    pub execs: BTreeMap<String, ExecRecord>,
    /// History of jobs in memory.
    pub history: BTreeMap<String, Vec<JobHistory>>,
    /// Nodes.
    pub nodes: BTreeMap<String, NodeRecord>,
}

/// Mutable access to an execution (copy-on-write if a pending action still shares it).
fn exec_mut<'a>(
    execs: &'a mut BTreeMap<String, Arc<ExecRecord>>,
    id: &str,
) -> Option<&'a mut ExecRecord> {
    execs.get_mut(id).map(Arc::make_mut)
}

fn exec_ref(e: &ExecRecord) -> ExecRef {
    ExecRef {
        execution_id: e.execution.id.clone(),
        job_id: e.execution.job_id.clone(),
        attempt: e.attempt,
    }
}

/// The API's `NodeInfo` for an advert.
pub fn node_info_from(a: &NodeAdvert) -> NodeInfo {
    let max: Resources = a.max_capacity.into();
    NodeInfo {
        node_id: a.node_id.clone(),
        node_type: NodeType::Compute,
        labels: a.labels.iter().cloned().collect(),
        supported_protocols: vec![crate::protocol::PROTOCOL_NAME.to_string()],
        compute_node_info: ComputeNodeInfo {
            execution_engines: a.engines.clone(),
            publishers: a.publishers.clone(),
            storage_sources: a.storages.clone(),
            available_capacity: max.clone(),
            max_capacity: max,
            max_job_requirements: a.max_job.into(),
            address: a.address.clone(),
            ..Default::default()
        },
        bacalhau_version: BuildVersionInfo { git_version: a.version.clone(), ..Default::default() },
    }
}
