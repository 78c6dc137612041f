//! The compute node: decides bids, holds capacity, and walks each execution through
//! Preparing → Running → Publishing → a terminal state, while the driver does the work.
//!
//! ## Calling contract
//!
//! Same as the orchestrator's: one input (`handle_*` with `now`), then drain
//! [`Compute::poll_action`] and re-arm [`Compute::poll_timeout`]. `Persist` actions must be
//! durable before any later `Send`. The work itself is requested through actions —
//! [`ComputeAction::Probe`], [`ComputeAction::Prepare`], [`ComputeAction::Run`],
//! [`ComputeAction::Publish`], [`ComputeAction::Cancel`], [`ComputeAction::Adopt`] — whose
//! outcomes come back as inputs.
//!
//! ## Capacity
//!
//! A bid reserves the job's resources when it is accepted and the reservation is released
//! exactly once, when the execution reaches a terminal state, whatever the path (completed,
//! failed, cancelled, bid rejected, approval expired). The reserved total never exceeds the
//! configured capacity. The ExecutionTimeout clock starts when the task starts running:
//! downloading inputs and pulling images in Preparing do not count against it.

mod invariants;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::{Job, NetworkType, Resources, Timestamp, codec};
use crate::mutants::{Mutant, Mutants};
use crate::protocol::{
    ComputePhase, ExecFailure, ExecRef, ExecUpdate, FailureKind, Heartbeat, Message, NodeAdvert,
    NodeClock, NodeId, WireResources, WireRunOutput,
};
use crate::timers::Timers;

/// Where a node is willing to take jobs from, data-wise (Bacalhau's `Locality`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Locality {
    /// Bid whatever the inputs.
    #[default]
    Anywhere,
    /// Bid only when every `ipfs` input is already held locally.
    Local,
}

/// Job admission rules (Bacalhau's `JobAdmissionControl`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SelectionPolicy {
    /// Data locality.
    pub locality: Locality,
    /// Refuse jobs without inputs.
    pub reject_stateless: bool,
    /// Refuse jobs asking for network access.
    pub reject_networked: bool,
    /// A command that must exit 0 for the node to bid (gets the job on stdin).
    pub probe_exec: Option<String>,
    /// A URL that must answer < 400 (and `ShouldBid` when JSON) for the node to bid.
    pub probe_http: Option<String>,
}

/// Compute node settings.
#[derive(Clone, Debug)]
pub struct ComputeConfig {
    /// This node's ID.
    pub node_id: NodeId,
    /// Labels jobs can select on.
    pub labels: BTreeMap<String, String>,
    /// Engines this node runs (lower-case).
    pub engines: Vec<String>,
    /// Publishers available (lower-case).
    pub publishers: Vec<String>,
    /// Input source types available (lower-case).
    pub storages: Vec<String>,
    /// Total allocatable capacity.
    pub capacity: Resources,
    /// Largest single job.
    pub max_job: Resources,
    /// Heartbeat period.
    pub heartbeat_interval: Duration,
    /// How often the node re-announces itself.
    pub info_interval: Duration,
    /// How long an accepted bid waits for the orchestrator's approval.
    pub approval_timeout: Duration,
    /// ExecutionTimeout for jobs that set none (zero = unlimited).
    pub default_exec_timeout: Duration,
    /// Orchestrators to announce this node to.
    pub orchestrators: Vec<NodeId>,
    /// When set, the only orchestrators this node takes work from and announces itself to
    /// (`Compute.AllowedOrchestrators`); everything else is refused as a peer fault.
    pub allowed_orchestrators: Option<BTreeSet<NodeId>>,
    /// Admission rules.
    pub policy: SelectionPolicy,
    /// Published address (results server etc.).
    pub address: String,
    /// Software version.
    pub version: String,
    /// Deliberate bugs for the mutation test.
    pub mutants: Mutants,
}

impl ComputeConfig {
    /// Defaults for a node called `node_id` with `capacity`, announcing to `orchestrators`.
    pub fn new(
        node_id: impl Into<NodeId>,
        capacity: Resources,
        orchestrators: Vec<NodeId>,
    ) -> Self {
        ComputeConfig {
            node_id: node_id.into(),
            labels: BTreeMap::new(),
            engines: vec!["noop".into(), "wasm".into(), "docker".into()],
            publishers: vec!["noop".into(), "local".into(), "ipfs".into(), "s3".into()],
            storages: vec![
                "ipfs".into(),
                "urldownload".into(),
                "inline".into(),
                "s3".into(),
                "local".into(),
            ],
            max_job: capacity.clone(),
            capacity,
            heartbeat_interval: Duration::from_secs(5),
            info_interval: Duration::from_secs(30),
            approval_timeout: Duration::from_secs(60),
            default_exec_timeout: Duration::ZERO,
            orchestrators,
            allowed_orchestrators: None,
            policy: SelectionPolicy::default(),
            address: String::new(),
            version: format!("v{}", env!("CARGO_PKG_VERSION")),
            mutants: Mutants::NONE,
        }
    }
}

/// Where an execution is, locally.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Phase {
    /// Waiting for probe answers before bidding.
    Probing,
    /// Bid accepted, waiting for approval.
    AwaitingApproval,
    /// Inputs and image being prepared.
    Preparing,
    /// Task running.
    Running,
    /// Results being published.
    Publishing,
    /// Done; the outcome is being delivered.
    Terminal,
}

impl Phase {
    fn wire(self) -> ComputePhase {
        match self {
            Phase::Probing | Phase::AwaitingApproval => ComputePhase::AwaitingApproval,
            Phase::Preparing => ComputePhase::Preparing,
            Phase::Running => ComputePhase::Running,
            Phase::Publishing => ComputePhase::Publishing,
            Phase::Terminal => ComputePhase::Terminal,
        }
    }

    /// Whether capacity is held in this phase.
    pub fn holds_capacity(self) -> bool {
        matches!(
            self,
            Phase::AwaitingApproval | Phase::Preparing | Phase::Running | Phase::Publishing
        )
    }
}

/// One execution as the node tracks (and persists) it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LocalExec {
    /// The attempt.
    pub exec: ExecRef,
    /// Who asked.
    pub orchestrator: NodeId,
    /// The job.
    pub job: Arc<Job>,
    /// Resources held.
    pub resources: Resources,
    /// Partition index and count.
    pub partition: (u32, u32),
    /// Whether approval is needed before starting.
    pub needs_approval: bool,
    /// Where it is.
    pub phase: Phase,
    /// Whether its resources are currently reserved.
    pub reserved: bool,
    /// Approval expiry (AwaitingApproval) or execution timeout (Running).
    pub deadline: Option<Timestamp>,
    /// When the task started running.
    pub running_since: Option<Timestamp>,
    /// The terminal update, until the orchestrator acknowledges it.
    pub outcome: Option<ExecUpdate>,
    /// Probes still unanswered.
    pub pending_probes: u8,
    /// Output of the run, kept while publishing.
    pub output: Option<WireRunOutput>,
}

/// Everything the compute node persists.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ComputeRecord {
    /// Upsert of an execution (key: execution ID).
    Exec(Box<LocalExec>),
    /// The orchestrator acknowledged the outcome: forget the execution.
    Forget(String),
    /// What is kept of an acknowledged execution until `until`: its attempt, so that a copy
    /// of its `AskForBid` delayed past the acknowledgement cannot create and run it again
    /// (key: execution ID, replacing its `Exec` record; a `Forget` removes it).
    Tombstone {
        /// Execution ID.
        execution_id: String,
        /// The attempt that ended.
        attempt: u64,
        /// When the tombstone may go.
        until: Timestamp,
    },
    /// The restart counter.
    Incarnation(u64),
}

impl ComputeRecord {
    /// The keyspace and key a store files this record under.
    pub fn key(&self) -> (&'static str, String) {
        match self {
            ComputeRecord::Exec(e) => ("executions", e.exec.execution_id.clone()),
            ComputeRecord::Forget(id) => ("executions", id.clone()),
            ComputeRecord::Tombstone { execution_id, .. } => ("executions", execution_id.clone()),
            ComputeRecord::Incarnation(_) => ("meta", "incarnation".into()),
        }
    }
}

/// A job-selection probe to run before bidding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// Run a command with the job (`{"Job": ...}`) on stdin; exit 0 = bid.
    Exec {
        /// Command line.
        command: String,
        /// `{"Job": <job>}`.
        body: String,
    },
    /// POST the job to a URL; status < 400 = bid (and `ShouldBid` if JSON).
    Http {
        /// URL.
        url: String,
        /// `{"Job": <job>}`.
        body: String,
    },
    /// Are all these CIDs stored locally?
    Locality {
        /// CIDs of the job's `ipfs` inputs.
        cids: Vec<String>,
    },
}

/// Something for the driver to do.
#[derive(Clone, Debug, PartialEq)]
#[must_use]
pub enum ComputeAction {
    /// Make durable before any later `Send`.
    Persist(ComputeRecord),
    /// Deliver a message.
    Send {
        /// Receiver.
        to: NodeId,
        /// Message.
        message: Message,
    },
    /// Run a probe; answer with [`Compute::handle_probe_result`].
    Probe {
        /// The attempt.
        exec: ExecRef,
        /// What to check.
        probe: Probe,
    },
    /// Prepare inputs and the image; answer with [`Compute::handle_prepared`].
    Prepare {
        /// The attempt.
        exec: ExecRef,
        /// The job.
        job: Arc<Job>,
        /// Resources granted.
        resources: Resources,
        /// Partition index and count.
        partition: (u32, u32),
    },
    /// Start the task; answer with [`Compute::handle_run_finished`].
    Run {
        /// The attempt.
        exec: ExecRef,
    },
    /// Publish the results; answer with [`Compute::handle_published`].
    Publish {
        /// The attempt.
        exec: ExecRef,
    },
    /// Stop whatever runs for this attempt and clean up (no answer expected).
    Cancel {
        /// The attempt.
        exec: ExecRef,
    },
    /// The attempt is over here: drop everything held for it (its context, pinned inputs,
    /// containers, scratch files; no answer expected). Emitted exactly once for every
    /// attempt that was given a `Prepare` or an `Adopt`, on whichever path it ends
    /// (completed, failed, timed out, cancelled), after any `Cancel`.
    Release {
        /// The attempt.
        exec: ExecRef,
    },
    /// After a restart: re-attach to the running (or publishing) work of this attempt and
    /// report its end as usual, or call [`Compute::handle_adopt_failed`].
    Adopt {
        /// The attempt.
        exec: ExecRef,
        /// The job.
        job: Arc<Job>,
        /// Running or Publishing.
        phase: Phase,
    },
}

/// Counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ComputeStats {
    /// Bids accepted.
    pub bids_accepted: u64,
    /// Bids declined.
    pub bids_rejected: u64,
    /// Messages about unknown or finished executions, ignored.
    pub stale_messages: u64,
    /// Executions completed.
    pub completed: u64,
    /// Executions failed.
    pub failed: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Heartbeat,
    Info,
    Exec(String),
}

/// The compute state machine.
#[derive(Debug)]
pub struct Compute {
    cfg: ComputeConfig,
    clock: NodeClock,
    execs: BTreeMap<String, LocalExec>,
    reserved: Resources,
    timers: Timers<Timer>,
    actions: VecDeque<ComputeAction>,
    stats: ComputeStats,
    /// Capacity releases seen per execution (must be at most one).
    releases: BTreeMap<String, u32>,
    violations: Vec<String>,
    /// Peer faults seen since the driver last took them (bounded: the oldest are dropped).
    faults: VecDeque<(NodeId, crate::peer::PeerMisbehaved)>,
    /// Acknowledged executions: their last attempt and when the tombstone expires.
    tombstones: BTreeMap<String, (u64, Timestamp)>,
    /// The same, by expiry (then ID), to drop them in order.
    tomb_order: BTreeSet<(Timestamp, String)>,
}

/// How long an acknowledged execution is remembered: longer than any copy of its
/// `AskForBid` can take to arrive (the transport gives up on a frame long before).
pub const TOMBSTONE_TTL: Duration = Duration::from_secs(3600);
/// Most tombstones kept; beyond, the oldest go first (bounded memory under any load).
pub const MAX_TOMBSTONES: usize = 100_000;

/// Most orchestrators a node announces itself to (peers come and go; this bounds the list
/// whatever a flood of identities does).
pub const MAX_ORCHESTRATORS: usize = 1024;

/// Peer faults kept for the driver between two [`Compute::take_faults`].
const MAX_PENDING_FAULTS: usize = 1024;

fn wire_res(r: &Resources) -> WireResources {
    WireResources::from(r)
}

impl Compute {
    /// A node starting for the first time: it announces itself at once.
    pub fn new(cfg: ComputeConfig, now: Timestamp) -> Self {
        let mut c = Compute {
            cfg,
            clock: NodeClock { incarnation: 1, seq: 0 },
            execs: BTreeMap::new(),
            reserved: Resources::default(),
            timers: Timers::default(),
            actions: VecDeque::new(),
            stats: ComputeStats::default(),
            releases: BTreeMap::new(),
            violations: Vec::new(),
            faults: VecDeque::new(),
            tombstones: BTreeMap::new(),
            tomb_order: BTreeSet::new(),
        };
        c.actions.push_back(ComputeAction::Persist(ComputeRecord::Incarnation(1)));
        c.start(now);
        c
    }

    fn start(&mut self, now: Timestamp) {
        self.announce(now);
        self.timers.arm(now + self.cfg.heartbeat_interval, Timer::Heartbeat);
        self.timers.arm(now + self.cfg.info_interval, Timer::Info);
    }

    /// Rebuilds a node after a restart. Executions that were preparing fail (their inputs may
    /// be half-written); running or publishing ones are handed to the driver to re-adopt;
    /// pending bids keep waiting; undelivered outcomes are sent again.
    pub fn restore(
        cfg: ComputeConfig,
        now: Timestamp,
        records: impl IntoIterator<Item = ComputeRecord>,
    ) -> Self {
        let mut incarnation = 0;
        let mut execs = BTreeMap::new();
        let mut tombstones = BTreeMap::new();
        for r in records {
            match r {
                ComputeRecord::Exec(e) => {
                    tombstones.remove(&e.exec.execution_id);
                    execs.insert(e.exec.execution_id.clone(), *e);
                }
                ComputeRecord::Forget(id) => {
                    execs.remove(&id);
                    tombstones.remove(&id);
                }
                ComputeRecord::Tombstone { execution_id, attempt, until } => {
                    execs.remove(&execution_id);
                    tombstones.insert(execution_id, (attempt, until));
                }
                ComputeRecord::Incarnation(n) => incarnation = incarnation.max(n),
            }
        }
        let mut c = Compute {
            cfg,
            clock: NodeClock { incarnation: incarnation + 1, seq: 0 },
            execs: BTreeMap::new(),
            reserved: Resources::default(),
            timers: Timers::default(),
            actions: VecDeque::new(),
            stats: ComputeStats::default(),
            releases: BTreeMap::new(),
            violations: Vec::new(),
            faults: VecDeque::new(),
            tombstones: BTreeMap::new(),
            tomb_order: BTreeSet::new(),
        };
        c.actions.push_back(ComputeAction::Persist(ComputeRecord::Incarnation(incarnation + 1)));
        for (id, e) in &execs {
            if e.reserved {
                c.reserved = c.reserved.add(&e.resources);
            }
            if let Some(d) = e.deadline {
                c.timers.arm(d, Timer::Exec(id.clone()));
            }
        }
        c.execs = execs;
        for (id, (attempt, until)) in tombstones {
            c.tomb_order.insert((until, id.clone()));
            c.tombstones.insert(id, (attempt, until));
        }
        c.expire_tombstones(now);
        c.start(now);
        let ids: Vec<String> = c.execs.keys().cloned().collect();
        for id in ids {
            let e = &c.execs[&id];
            match e.phase {
                Phase::Probing => {
                    let r = e.exec.clone();
                    let to = e.orchestrator.clone();
                    c.finish(
                        now,
                        &id,
                        ExecUpdate::Cancelled { reason: "node restarted before bidding".into() },
                    );
                    c.send_msg(&to, |clock| Message::BidResult {
                        exec: r,
                        accepted: false,
                        reason: "node restarted before bidding".into(),
                        retryable: true,
                        clock,
                    });
                }
                Phase::AwaitingApproval => {}
                Phase::Preparing => {
                    let f = ExecFailure {
                        kind: FailureKind::NodeRestarted,
                        message: "node restarted while preparing the execution".into(),
                    };
                    c.finish(now, &id, ExecUpdate::Failed { failure: f, output: None });
                }
                Phase::Running | Phase::Publishing => {
                    c.actions.push_back(ComputeAction::Adopt {
                        exec: e.exec.clone(),
                        job: e.job.clone(),
                        phase: e.phase,
                    });
                }
                Phase::Terminal => c.deliver_outcome(&id),
            }
        }
        c
    }

    /// Configuration.
    pub fn config(&self) -> &ComputeConfig {
        &self.cfg
    }

    /// Counters.
    pub fn stats(&self) -> &ComputeStats {
        &self.stats
    }

    /// The peer faults seen since the last call, for the driver to count per peer.
    pub fn take_faults(&mut self) -> Vec<(NodeId, crate::peer::PeerMisbehaved)> {
        self.faults.drain(..).collect()
    }

    fn record_fault(&mut self, peer: &str, fault: crate::peer::PeerMisbehaved) {
        if self.faults.len() == MAX_PENDING_FAULTS {
            self.faults.pop_front();
        }
        self.faults.push_back((peer.to_string(), fault));
    }

    /// Capacity currently reserved.
    pub fn reserved(&self) -> &Resources {
        &self.reserved
    }

    /// Executions held.
    pub fn executions(&self) -> impl Iterator<Item = &LocalExec> {
        self.execs.values()
    }

    /// One execution.
    pub fn execution(&self, id: &str) -> Option<&LocalExec> {
        self.execs.get(id)
    }

    /// The next action.
    pub fn poll_action(&mut self) -> Option<ComputeAction> {
        self.actions.pop_front()
    }

    /// The next deadline.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.timers.next()
    }

    /// What this node advertises.
    pub fn advert(&self) -> NodeAdvert {
        NodeAdvert {
            node_id: self.cfg.node_id.clone(),
            labels: self.cfg.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            engines: self.cfg.engines.clone(),
            publishers: self.cfg.publishers.clone(),
            storages: self.cfg.storages.clone(),
            max_capacity: wire_res(&self.cfg.capacity),
            max_job: wire_res(&self.cfg.max_job),
            address: self.cfg.address.clone(),
            version: self.cfg.version.clone(),
        }
    }

    fn send_msg(&mut self, to: &str, make: impl FnOnce(NodeClock) -> Message) {
        self.clock.seq += 1;
        let message = make(self.clock);
        self.actions.push_back(ComputeAction::Send { to: to.to_string(), message });
    }

    /// A new orchestrator became reachable (a peer joined the cluster): announce this node to
    /// it at once and include it in every later heartbeat. Known orchestrators are ignored, so
    /// a peer flapping up and down costs one NodeInfo per reconnect.
    pub fn add_orchestrator(&mut self, id: &str) {
        if id == self.cfg.node_id
            || !self.takes_work_from(id)
            || self.cfg.orchestrators.iter().any(|o| o == id)
            || self.cfg.orchestrators.len() >= MAX_ORCHESTRATORS
        {
            return;
        }
        self.cfg.orchestrators.push(id.to_string());
        let advert = self.advert();
        self.send_msg(id, |clock| Message::NodeInfo { advert, clock });
    }

    /// A peer went away: it stops receiving this node's announcements and heartbeats (they
    /// went to every peer ever seen), unless this node still holds executions for it. It is
    /// added again when it comes back.
    pub fn remove_orchestrator(&mut self, id: &str) {
        if self.execs.values().any(|e| e.orchestrator == id) {
            return;
        }
        self.cfg.orchestrators.retain(|o| o != id);
    }

    /// The orchestrators this node announces itself to.
    pub fn orchestrators(&self) -> &[NodeId] {
        &self.cfg.orchestrators
    }

    fn announce(&mut self, _now: Timestamp) {
        let advert = self.advert();
        for o in self.cfg.orchestrators.clone() {
            let advert = advert.clone();
            self.send_msg(&o, |clock| Message::NodeInfo { advert, clock });
        }
    }

    fn persist(&mut self, id: &str) {
        if let Some(e) = self.execs.get(id) {
            self.actions
                .push_back(ComputeAction::Persist(ComputeRecord::Exec(Box::new(e.clone()))));
        }
    }

    // ------------------------------------------------------------------ messages

    /// Whether this node takes work from `peer` (its own orchestrator always).
    pub fn takes_work_from(&self, peer: &str) -> bool {
        peer == self.cfg.node_id
            || self.cfg.allowed_orchestrators.as_ref().is_none_or(|a| a.contains(peer))
    }

    /// A message from an orchestrator.
    pub fn handle_message(&mut self, now: Timestamp, from: &str, message: Message) {
        if !self.takes_work_from(from) {
            // A closed cluster: work from anyone else is refused unanswered (an answer would
            // tell a stranger this node exists and what it holds).
            self.record_fault(from, crate::peer::PeerMisbehaved::NotAllowed);
            return;
        }
        match message {
            Message::AskForBid { exec, job_json, partition, needs_approval } => {
                self.on_ask(now, from, exec, &job_json, partition, needs_approval);
            }
            Message::BidAccepted { exec } => self.on_bid_accepted(now, from, &exec),
            Message::BidRejected { exec, reason } | Message::CancelExecution { exec, reason } => {
                self.on_cancel(now, from, &exec, &reason);
            }
            Message::UpdateAck { exec } => self.on_ack(now, from, &exec),
            _ => self.stats.stale_messages += 1,
        }
    }

    /// The execution this message is about, if it is known, from `from`, and the same attempt.
    fn known(&mut self, from: &str, r: &ExecRef) -> Option<String> {
        match self.execs.get(&r.execution_id) {
            Some(e) if e.orchestrator == from && e.exec.attempt == r.attempt => {
                Some(r.execution_id.clone())
            }
            _ => {
                self.stats.stale_messages += 1;
                None
            }
        }
    }

    fn on_ask(
        &mut self,
        now: Timestamp,
        from: &str,
        exec: ExecRef,
        job_json: &str,
        partition: (u32, u32),
        needs_approval: bool,
    ) {
        if self.is_buried(&exec) {
            // A late copy of an offer whose execution ended and was acknowledged: running it
            // again would run one attempt twice.
            self.stats.stale_messages += 1;
            return;
        }
        if let Some(e) = self.execs.get(&exec.execution_id) {
            // A duplicate: answer again with what we decided.
            if e.exec.attempt == exec.attempt && e.orchestrator == from {
                let id = exec.execution_id.clone();
                match e.phase {
                    Phase::Probing => {}
                    Phase::Terminal => self.deliver_outcome(&id),
                    _ => self.send_msg(from, |clock| Message::BidResult {
                        exec,
                        accepted: true,
                        reason: String::new(),
                        retryable: false,
                        clock,
                    }),
                }
            } else {
                self.stats.stale_messages += 1;
            }
            return;
        }
        // The job is held to the API's rules: a peer cannot make this node run what a user
        // could not submit, nor reserve zero capacity with resources that do not parse.
        let (job, resources) = match crate::peer::check_offered_job(job_json) {
            Ok(checked) => checked,
            Err(fault) => {
                self.stats.bids_rejected += 1;
                let reason = format!("refused: {fault}");
                self.record_fault(from, fault);
                self.send_msg(from, |clock| Message::BidResult {
                    exec,
                    accepted: false,
                    reason,
                    retryable: false,
                    clock,
                });
                return;
            }
        };
        if let Err(reason) = self.admissible(&job).and_then(|()| self.fits_node(&resources)) {
            self.stats.bids_rejected += 1;
            self.send_msg(from, |clock| Message::BidResult {
                exec,
                accepted: false,
                reason,
                retryable: false,
                clock,
            });
            return;
        }
        let probes = self.probes_for(&job);
        let id = exec.execution_id.clone();
        let local = LocalExec {
            exec: exec.clone(),
            orchestrator: from.to_string(),
            job: Arc::new(job),
            resources,
            partition,
            needs_approval,
            phase: Phase::Probing,
            reserved: false,
            deadline: None,
            running_since: None,
            outcome: None,
            pending_probes: u8::try_from(probes.len()).unwrap_or(u8::MAX),
            output: None,
        };
        self.execs.insert(id.clone(), local);
        if probes.is_empty() {
            self.decide_bid(now, &id);
        } else {
            for probe in probes {
                self.actions.push_back(ComputeAction::Probe { exec: exec.clone(), probe });
            }
        }
    }

    /// Static admission rules (everything but capacity and probes).
    fn admissible(&self, job: &Job) -> Result<(), String> {
        let Some(task) = job.task() else { return Err("job has no task".into()) };
        let engine = task.engine_type();
        if !self.cfg.engines.contains(&engine) {
            return Err(format!("engine {engine:?} is not supported by this node"));
        }
        let publisher = task.publisher_type();
        if !publisher.is_empty() && !self.cfg.publishers.contains(&publisher) {
            return Err(format!("publisher {publisher:?} is not supported by this node"));
        }
        for input in &task.input_sources {
            let t = input.source.as_ref().map(|s| s.type_key()).unwrap_or_default();
            if !self.cfg.storages.contains(&t) {
                return Err(format!("input source {t:?} is not supported by this node"));
            }
        }
        if self.cfg.policy.reject_stateless && task.input_sources.is_empty() {
            return Err("this node does not accept jobs without inputs".into());
        }
        let net = task.network_type();
        if self.cfg.policy.reject_networked && net.is_networked() {
            return Err(format!("this node does not accept jobs with network type {net}"));
        }
        if net == NetworkType::Default || net == NetworkType::None {
            // Always fine: no network.
        }
        Ok(())
    }

    fn fits_node(&self, r: &Resources) -> Result<(), String> {
        if !r.fits_in(&self.cfg.max_job) {
            return Err(format!(
                "job needs {r}, more than this node's per-job limit {}",
                self.cfg.max_job
            ));
        }
        Ok(())
    }

    fn probes_for(&self, job: &Job) -> Vec<Probe> {
        let mut out = Vec::new();
        let p = &self.cfg.policy;
        if p.probe_exec.is_some() || p.probe_http.is_some() {
            let body = format!("{{\"Job\":{}}}", codec::to_json(job));
            if let Some(command) = &p.probe_exec {
                out.push(Probe::Exec { command: command.clone(), body: body.clone() });
            }
            if let Some(url) = &p.probe_http {
                out.push(Probe::Http { url: url.clone(), body });
            }
        }
        if p.locality == Locality::Local {
            let cids: Vec<String> = job
                .task()
                .map(|t| {
                    t.input_sources
                        .iter()
                        .filter_map(|i| i.source.as_ref())
                        .filter(|s| s.is_type("ipfs"))
                        .filter_map(|s| s.param_str("CID").map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            if !cids.is_empty() {
                out.push(Probe::Locality { cids });
            }
        }
        out
    }

    /// A probe's answer: `Ok(())` to bid, `Err(reason)` to decline.
    pub fn handle_probe_result(
        &mut self,
        now: Timestamp,
        execution_id: &str,
        result: Result<(), String>,
    ) {
        let Some(e) = self.execs.get_mut(execution_id) else { return };
        if e.phase != Phase::Probing {
            return;
        }
        match result {
            Ok(()) => {
                e.pending_probes = e.pending_probes.saturating_sub(1);
                if e.pending_probes == 0 {
                    self.decide_bid(now, execution_id);
                }
            }
            Err(reason) => {
                let e = self.execs.remove(execution_id).expect("present");
                self.stats.bids_rejected += 1;
                let reason = format!("job selection probe declined: {reason}");
                self.send_msg(&e.orchestrator, |clock| Message::BidResult {
                    exec: e.exec,
                    accepted: false,
                    reason,
                    retryable: false,
                    clock,
                });
            }
        }
    }

    /// All probes passed: reserve capacity and bid (or decline for lack of capacity).
    fn decide_bid(&mut self, now: Timestamp, id: &str) {
        let e = &self.execs[id];
        let free = self.cfg.capacity.sub(&self.reserved);
        let ignore = self.cfg.mutants.on(Mutant::IgnoreCapacity);
        if !e.resources.fits_in(&free) && !ignore {
            let e = self.execs.remove(id).expect("present");
            self.stats.bids_rejected += 1;
            let reason =
                format!("not enough capacity: job needs {}, node has {free} free", e.resources);
            self.send_msg(&e.orchestrator, |clock| Message::BidResult {
                exec: e.exec,
                accepted: false,
                reason,
                retryable: true,
                clock,
            });
            return;
        }
        let e = self.execs.get_mut(id).expect("present");
        e.reserved = true;
        self.reserved = self.reserved.add(&e.resources);
        self.stats.bids_accepted += 1;
        let (r, to, direct) = (e.exec.clone(), e.orchestrator.clone(), !e.needs_approval);
        if direct {
            e.phase = Phase::Preparing;
            self.persist(id);
            self.send_msg(&to, |clock| Message::BidResult {
                exec: r.clone(),
                accepted: true,
                reason: String::new(),
                retryable: false,
                clock,
            });
            self.begin_prepare(id);
        } else {
            e.phase = Phase::AwaitingApproval;
            let deadline = now + self.cfg.approval_timeout;
            e.deadline = Some(deadline);
            self.timers.arm(deadline, Timer::Exec(id.to_string()));
            self.persist(id);
            self.send_msg(&to, |clock| Message::BidResult {
                exec: r,
                accepted: true,
                reason: String::new(),
                retryable: false,
                clock,
            });
        }
    }

    fn begin_prepare(&mut self, id: &str) {
        let e = &self.execs[id];
        let (r, to) = (e.exec.clone(), e.orchestrator.clone());
        self.actions.push_back(ComputeAction::Prepare {
            exec: e.exec.clone(),
            job: e.job.clone(),
            resources: e.resources.clone(),
            partition: e.partition,
        });
        self.send_msg(&to, |clock| Message::ExecutionUpdate {
            exec: r,
            update: ExecUpdate::Preparing,
            clock,
        });
    }

    fn on_bid_accepted(&mut self, _now: Timestamp, from: &str, r: &ExecRef) {
        let Some(id) = self.known(from, r) else { return };
        let e = self.execs.get_mut(&id).expect("known");
        if e.phase != Phase::AwaitingApproval {
            return; // duplicate
        }
        e.phase = Phase::Preparing;
        e.deadline = None;
        self.persist(&id);
        self.begin_prepare(&id);
    }

    fn on_cancel(&mut self, now: Timestamp, from: &str, r: &ExecRef, reason: &str) {
        let Some(id) = self.known(from, r) else { return };
        let e = &self.execs[&id];
        match e.phase {
            Phase::Terminal => {}
            Phase::Probing | Phase::AwaitingApproval => {
                self.finish(now, &id, ExecUpdate::Cancelled { reason: reason.to_string() });
            }
            Phase::Preparing | Phase::Running | Phase::Publishing => {
                self.actions.push_back(ComputeAction::Cancel { exec: e.exec.clone() });
                self.finish(now, &id, ExecUpdate::Cancelled { reason: reason.to_string() });
            }
        }
    }

    fn on_ack(&mut self, now: Timestamp, from: &str, r: &ExecRef) {
        let Some(id) = self.known(from, r) else { return };
        if self.execs[&id].phase == Phase::Terminal {
            self.execs.remove(&id);
            self.releases.remove(&id);
            if self.cfg.mutants.on(Mutant::NoTombstone) {
                // BUG (mutant): forgotten outright, as before tombstones.
                self.actions.push_back(ComputeAction::Persist(ComputeRecord::Forget(id)));
                return;
            }
            // Not forgotten outright: a delayed copy of its AskForBid must not bring it back.
            let until = now + TOMBSTONE_TTL;
            self.tombstones.insert(id.clone(), (r.attempt, until));
            self.tomb_order.insert((until, id.clone()));
            self.actions.push_back(ComputeAction::Persist(ComputeRecord::Tombstone {
                execution_id: id,
                attempt: r.attempt,
                until,
            }));
            self.expire_tombstones(now);
        }
    }

    /// Drops tombstones that expired, and the oldest beyond [`MAX_TOMBSTONES`].
    fn expire_tombstones(&mut self, now: Timestamp) {
        while let Some((until, id)) = self.tomb_order.first().cloned() {
            if until > now && self.tomb_order.len() <= MAX_TOMBSTONES {
                break;
            }
            self.tomb_order.pop_first();
            self.tombstones.remove(&id);
            self.actions.push_back(ComputeAction::Persist(ComputeRecord::Forget(id)));
        }
        debug_assert_eq!(self.tombstones.len(), self.tomb_order.len());
    }

    /// Whether this is a copy of an offer for an attempt that already ended and was
    /// acknowledged here (or an older one).
    fn is_buried(&self, exec: &ExecRef) -> bool {
        self.tombstones.get(&exec.execution_id).is_some_and(|(attempt, _)| exec.attempt <= *attempt)
    }

    // ------------------------------------------------------------------ executor results

    /// Inputs and image are ready (or could not be prepared).
    pub fn handle_prepared(
        &mut self,
        now: Timestamp,
        execution_id: &str,
        result: Result<(), ExecFailure>,
    ) {
        let Some(e) = self.execs.get_mut(execution_id) else { return };
        if e.phase != Phase::Preparing {
            return;
        }
        if let Err(failure) = result {
            self.finish(now, execution_id, ExecUpdate::Failed { failure, output: None });
            return;
        }
        e.phase = Phase::Running;
        e.running_since = Some(now);
        let limit =
            match e.job.task().map(|t| t.timeouts().effective_execution_timeout()).unwrap_or(0) {
                t if t > 0 => Some(Duration::from_secs(u64::try_from(t).unwrap_or(0))),
                _ if !self.cfg.default_exec_timeout.is_zero() => {
                    Some(self.cfg.default_exec_timeout)
                }
                _ => None,
            };
        e.deadline = limit.map(|l| now + l);
        if let Some(d) = e.deadline {
            self.timers.arm(d, Timer::Exec(execution_id.to_string()));
        }
        let (r, to) = (e.exec.clone(), e.orchestrator.clone());
        self.persist(execution_id);
        self.actions.push_back(ComputeAction::Run { exec: r.clone() });
        self.send_msg(&to, |clock| Message::ExecutionUpdate {
            exec: r,
            update: ExecUpdate::Running,
            clock,
        });
    }

    /// The task ended: `Ok(output)` when it ran (whatever its exit code, as in Bacalhau),
    /// `Err` when it could not run to the end (trap, OOM kill, executor error).
    pub fn handle_run_finished(
        &mut self,
        now: Timestamp,
        execution_id: &str,
        result: Result<WireRunOutput, (ExecFailure, Option<WireRunOutput>)>,
    ) {
        let Some(e) = self.execs.get_mut(execution_id) else { return };
        if e.phase != Phase::Running {
            return;
        }
        match result {
            Err((failure, output)) => {
                self.finish(now, execution_id, ExecUpdate::Failed { failure, output })
            }
            Ok(output) => {
                let has_publisher = e.job.task().is_some_and(|t| {
                    !t.publisher_type().is_empty() && t.publisher_type() != "noop"
                });
                if has_publisher {
                    e.phase = Phase::Publishing;
                    e.deadline = None;
                    e.output = Some(output);
                    let (r, to) = (e.exec.clone(), e.orchestrator.clone());
                    self.persist(execution_id);
                    self.actions.push_back(ComputeAction::Publish { exec: r.clone() });
                    self.send_msg(&to, |clock| Message::ExecutionUpdate {
                        exec: r,
                        update: ExecUpdate::Publishing,
                        clock,
                    });
                } else {
                    self.finish(
                        now,
                        execution_id,
                        ExecUpdate::Completed { output, published_json: String::new() },
                    );
                }
            }
        }
    }

    /// Results are published: `Ok(json)` is the published result spec (or empty).
    pub fn handle_published(
        &mut self,
        now: Timestamp,
        execution_id: &str,
        result: Result<String, ExecFailure>,
    ) {
        let Some(e) = self.execs.get_mut(execution_id) else { return };
        if e.phase != Phase::Publishing {
            return;
        }
        let output = e.output.take().unwrap_or_default();
        match result {
            Ok(published_json) => {
                self.finish(now, execution_id, ExecUpdate::Completed { output, published_json })
            }
            Err(failure) => {
                self.finish(now, execution_id, ExecUpdate::Failed { failure, output: Some(output) })
            }
        }
    }

    /// The driver could not re-attach to an execution after a restart.
    pub fn handle_adopt_failed(&mut self, now: Timestamp, execution_id: &str, reason: &str) {
        let Some(e) = self.execs.get(execution_id) else { return };
        if !matches!(e.phase, Phase::Running | Phase::Publishing) {
            return;
        }
        let failure = ExecFailure {
            kind: FailureKind::NodeRestarted,
            message: format!("node restarted and could not re-adopt the execution: {reason}"),
        };
        self.finish(now, execution_id, ExecUpdate::Failed { failure, output: None });
    }

    /// Ends an execution: release its capacity (exactly once), record and send the outcome.
    fn finish(&mut self, _now: Timestamp, id: &str, outcome: ExecUpdate) {
        let Some(e) = self.execs.get_mut(id) else { return };
        if e.phase == Phase::Terminal {
            return;
        }
        match &outcome {
            ExecUpdate::Completed { .. } => self.stats.completed += 1,
            ExecUpdate::Failed { .. } => self.stats.failed += 1,
            _ => {}
        }
        let e = self.execs.get_mut(id).expect("present");
        let had_work = matches!(e.phase, Phase::Preparing | Phase::Running | Phase::Publishing);
        if had_work && !self.cfg.mutants.on(Mutant::NoRelease) {
            self.actions.push_back(ComputeAction::Release { exec: e.exec.clone() });
        }
        e.phase = Phase::Terminal;
        e.deadline = None;
        e.outcome = Some(outcome);
        if e.reserved {
            e.reserved = false;
            let r = e.resources.clone();
            self.release(id, &r);
            if self.cfg.mutants.on(Mutant::DoubleRelease) {
                self.release(id, &r); // BUG (mutant)
            }
        }
        self.persist(id);
        self.deliver_outcome(id);
    }

    fn release(&mut self, id: &str, r: &Resources) {
        *self.releases.entry(id.to_string()).or_default() += 1;
        self.reserved = self.reserved.sub(r);
    }

    fn deliver_outcome(&mut self, id: &str) {
        let Some(e) = self.execs.get(id) else { return };
        let Some(outcome) = e.outcome.clone() else { return };
        let (r, to) = (e.exec.clone(), e.orchestrator.clone());
        self.send_msg(&to, |clock| Message::ExecutionUpdate { exec: r, update: outcome, clock });
    }

    // ------------------------------------------------------------------ timeouts

    /// Call when [`Compute::poll_timeout`]'s deadline has passed.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        while let Some(t) = self.timers.pop_due(now) {
            match t {
                Timer::Heartbeat => {
                    self.expire_tombstones(now);
                    self.heartbeat();
                    self.timers.arm(now + self.cfg.heartbeat_interval, Timer::Heartbeat);
                }
                Timer::Info => {
                    self.announce(now);
                    self.timers.arm(now + self.cfg.info_interval, Timer::Info);
                }
                Timer::Exec(id) => self.on_exec_deadline(now, &id),
            }
        }
    }

    fn on_exec_deadline(&mut self, now: Timestamp, id: &str) {
        let Some(e) = self.execs.get(id) else { return };
        if e.deadline.is_none_or(|d| d > now) {
            return;
        }
        match e.phase {
            Phase::AwaitingApproval => {
                let secs = self.cfg.approval_timeout.as_secs();
                self.finish(
                    now,
                    id,
                    ExecUpdate::Cancelled {
                        reason: format!("bid expired: no approval within {secs}s"),
                    },
                );
            }
            Phase::Running => {
                let since = e.running_since.unwrap_or(now);
                let secs = now.since(since).as_secs();
                self.actions.push_back(ComputeAction::Cancel { exec: e.exec.clone() });
                let failure = ExecFailure {
                    kind: FailureKind::Timeout,
                    message: format!("execution timed out after {secs}s (ExecutionTimeout)"),
                };
                self.finish(now, id, ExecUpdate::Failed { failure, output: None });
            }
            _ => {}
        }
    }

    /// Sends each orchestrator this node's load and the executions it holds for it, and
    /// re-sends outcomes not yet acknowledged.
    fn heartbeat(&mut self) {
        let mut per: BTreeMap<NodeId, Vec<(ExecRef, ComputePhase)>> = BTreeMap::new();
        for o in &self.cfg.orchestrators {
            per.entry(o.clone()).or_default();
        }
        let mut queued = Resources::default();
        let mut running = 0u32;
        let mut undelivered = Vec::new();
        for (id, e) in &self.execs {
            per.entry(e.orchestrator.clone()).or_default().push((e.exec.clone(), e.phase.wire()));
            match e.phase {
                Phase::AwaitingApproval => queued = queued.add(&e.resources),
                Phase::Preparing | Phase::Running | Phase::Publishing => running += 1,
                Phase::Terminal => undelivered.push(id.clone()),
                Phase::Probing => {}
            }
        }
        let available = wire_res(&self.cfg.capacity.sub(&self.reserved));
        let queued = wire_res(&queued);
        for (o, executions) in per {
            let heartbeat = Heartbeat { available, queued, running, executions };
            self.send_msg(&o, |clock| Message::Heartbeat { heartbeat, clock });
        }
        for id in undelivered {
            self.deliver_outcome(&id);
        }
    }

    /// Tells orchestrators this node is leaving (clean shutdown).
    pub fn shutdown(&mut self) {
        let mut to: BTreeSet<NodeId> = self.cfg.orchestrators.iter().cloned().collect();
        to.extend(self.execs.values().map(|e| e.orchestrator.clone()));
        for o in to {
            self.send_msg(&o, |clock| Message::Goodbye { clock });
        }
    }
}

/// The resources a job's task asks for (zero when unparseable: validated upstream).
pub fn job_resources(job: &Job) -> Resources {
    job.task().and_then(|t| t.resources.as_ref()).and_then(|r| r.parse().ok()).unwrap_or_default()
}
