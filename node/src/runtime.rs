//! The node's event loop: one task owns the core's state machines and feeds them every input
//! — API commands, peer messages, executor results, timeouts — and performs their actions.
//!
//! ## Rounds and group commit
//!
//! The loop works in rounds. A round takes every input waiting in the channel, feeds them to
//! the orchestrator and the compute node, and delivers messages between the two co-located
//! machines directly (they share one store, so one commit covers both). Then it writes every
//! `Persist` record of the round in **one** fjall batch with one `SyncData` sync, and only
//! after that performs what the outside world can observe: API replies, messages to other
//! nodes, and executor work. Submissions that arrive while a sync is in flight wait in the
//! channel and share the next one. A storage error is fatal (fjall's advice): the process
//! exits and a restart recovers from the last sync.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use gadus_core::compute::{Compute, ComputeAction, ComputeConfig, ComputeRecord, Phase, Probe};
use gadus_core::model::{Job, NodeInfo, NodeState, Timestamp};
use gadus_core::orchestrator::{
    Action, NodeAction, Orchestrator, OrchestratorConfig, Record, Reply,
};
use gadus_core::protocol::{ExecFailure, ExecRef, FailureKind, Message, WireRunOutput};
use gadus_io::executor::{
    ExecutionContext, Executor, LogSink, OutputLimits, PreparedInput, system_env,
};
use gadus_io::storage::{InputProvider, NoProgress, Publisher};
use gadus_io::transport::{Inbound, Transport};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument as _;

use crate::clock::Clock;
use crate::logs::LogHub;
use crate::metrics::Metrics;
use crate::store::Store;

/// An input to the loop.
pub enum Input {
    /// `PUT /jobs`.
    Submit {
        /// The decoded job.
        job: Job,
        /// Where the answer goes.
        reply: oneshot::Sender<Reply>,
    },
    /// `DELETE /jobs/{id}`.
    Stop {
        /// Job ID.
        job_id: String,
        /// Why.
        reason: String,
        /// Answer.
        reply: oneshot::Sender<Reply>,
    },
    /// `PUT /nodes/{id}`.
    NodeAction {
        /// Node ID.
        node_id: String,
        /// What.
        action: NodeAction,
        /// Answer.
        reply: oneshot::Sender<Reply>,
    },
    /// Something from the network.
    Peer(Inbound),
    /// An executor or storage task finished a step.
    Work(Work),
    /// Stop the loop (clean shutdown).
    Shutdown,
}

/// Results of work the loop started.
pub enum Work {
    /// A probe answered.
    Probe(String, Result<(), String>),
    /// Inputs and engine are ready.
    Prepared(String, Result<(), ExecFailure>),
    /// The task ended.
    RunFinished(String, Result<WireRunOutput, (ExecFailure, Option<WireRunOutput>)>),
    /// Results published (`Ok(json)`).
    Published(String, Result<String, ExecFailure>),
    /// A restarted node could not re-attach.
    AdoptFailed(String, String),
}

/// What the API reads without going through the loop.
pub struct Shared {
    /// This node's ID.
    pub node_id: String,
    /// This node's own description (`/agent/node`).
    pub info: RwLock<NodeInfo>,
    /// The orchestrator's view of the cluster (`/nodes`).
    pub nodes: RwLock<Vec<NodeState>>,
    /// The store.
    pub store: Store,
    /// Live logs.
    pub logs: LogHub,
    /// Metrics.
    pub metrics: Metrics,
    /// Per-execution working directories.
    pub executions_dir: PathBuf,
    /// Whether this node runs an orchestrator.
    pub orchestrator: bool,
    /// Bumped after every commit: long-polling readers wait on it.
    pub changes: tokio::sync::watch::Sender<u64>,
    /// Where the loop reads the time.
    pub clock: Clock,
}

/// Everything a compute node needs to do the work.
pub struct Adapters {
    /// Engines by name.
    pub executors: BTreeMap<String, Arc<dyn Executor>>,
    /// Input providers.
    pub inputs: Vec<Arc<dyn InputProvider>>,
    /// Publishers.
    pub publishers: Vec<Arc<dyn Publisher>>,
    /// Network to other nodes (`None`: a single node).
    pub transport: Option<Arc<dyn Transport>>,
    /// Where the `ipfs` input provider looks for missing CIDs (peers are added as they join).
    pub content_sources: Option<Arc<gadus_io::storage::ipfs::ContentSources>>,
    /// Allow networked jobs.
    pub allow_network: bool,
    /// Inline output limits.
    pub output_limits: OutputLimits,
    /// ExecutionTimeout for jobs that set none.
    pub default_exec_timeout: Duration,
}

/// A handle to a running node loop.
#[derive(Clone)]
pub struct Handle {
    tx: mpsc::Sender<Input>,
    /// Shared read-side state.
    pub shared: Arc<Shared>,
}

/// The node has stopped (its loop ended).
#[derive(Debug, thiserror::Error)]
#[error("the node is shutting down")]
pub struct Stopped;

impl Handle {
    async fn ask(
        &self,
        make: impl FnOnce(oneshot::Sender<Reply>) -> Input,
    ) -> Result<Reply, Stopped> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).await.map_err(|_| Stopped)?;
        rx.await.map_err(|_| Stopped)
    }

    /// Submits a job; answers once it is durable.
    pub async fn submit(&self, job: Job) -> Result<Reply, Stopped> {
        self.ask(|reply| Input::Submit { job, reply }).await
    }

    /// Stops a job.
    pub async fn stop(&self, job_id: String, reason: String) -> Result<Reply, Stopped> {
        self.ask(|reply| Input::Stop { job_id, reason, reply }).await
    }

    /// Approves, rejects or deletes a node.
    pub async fn node_action(&self, node_id: String, action: NodeAction) -> Result<Reply, Stopped> {
        self.ask(|reply| Input::NodeAction { node_id, action, reply }).await
    }

    /// Feeds a transport event.
    pub async fn peer(&self, event: Inbound) {
        let _ = self.tx.send(Input::Peer(event)).await;
    }

    /// Asks the loop to stop.
    pub async fn shutdown(&self) {
        let _ = self.tx.send(Input::Shutdown).await;
    }
}

/// The loop.
pub struct Runtime {
    id: String,
    orch: Option<Orchestrator>,
    compute: Option<Compute>,
    shared: Arc<Shared>,
    adapters: Arc<Adapters>,
    rx: mpsc::Receiver<Input>,
    tx: mpsc::Sender<Input>,
    replies: BTreeMap<u64, oneshot::Sender<Reply>>,
    next_req: u64,
    work: Arc<crate::work::WorkRegistry>,
}

#[derive(Default)]
struct Batch {
    orch: Vec<Record>,
    compute: Vec<ComputeRecord>,
    effects: Vec<Effect>,
}

enum Effect {
    Reply(u64, Reply),
    Remote(String, Message),
    Compute(ComputeAction),
}

/// Largest number of inputs taken into one round (bounds a round's latency).
const ROUND_MAX_INPUTS: usize = 512;

impl Runtime {
    /// Starts the loop: restores both machines from the store (or starts them fresh).
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        id: String,
        orch_cfg: Option<OrchestratorConfig>,
        compute_cfg: Option<ComputeConfig>,
        shared: Arc<Shared>,
        adapters: Adapters,
        seed: u64,
    ) -> Result<(Handle, tokio::task::JoinHandle<()>), crate::store::StoreError> {
        let t = shared.clock.now();
        let orch = match orch_cfg {
            Some(cfg) => {
                let records = shared.store.load_orchestrator()?;
                Some(if records.is_empty() {
                    Orchestrator::new(cfg, seed)
                } else {
                    Orchestrator::restore(cfg, seed, t, records)
                })
            }
            None => None,
        };
        let compute = match compute_cfg {
            Some(cfg) => {
                let records = shared.store.load_compute()?;
                Some(if records.is_empty() {
                    Compute::new(cfg, t)
                } else {
                    Compute::restore(cfg, t, records)
                })
            }
            None => None,
        };
        let (tx, rx) = mpsc::channel(4096);
        let rt = Runtime {
            id,
            orch,
            compute,
            shared: shared.clone(),
            adapters: Arc::new(adapters),
            rx,
            tx: tx.clone(),
            replies: BTreeMap::new(),
            next_req: 0,
            work: Arc::new(crate::work::WorkRegistry::default()),
        };
        let task = tokio::spawn(rt.run());
        Ok((Handle { tx, shared }, task))
    }

    async fn run(mut self) {
        // Startup actions (announcements, restore adoptions) form the first round.
        self.round(Vec::new()).await;
        loop {
            let deadline = self.next_deadline();
            let wait = deadline.map(|d| d.since(self.shared.clock.now()));
            let first = match wait {
                // `biased`: tokio picks select branches at random otherwise, and the tier-2
                // simulation needs the same choice on every replay of a seed.
                Some(w) => tokio::select! {
                    biased;
                    i = self.rx.recv() => i,
                    () = tokio::time::sleep(w) => {
                        self.round(Vec::new()).await;
                        continue;
                    }
                },
                None => self.rx.recv().await,
            };
            let Some(first) = first else { break };
            if matches!(first, Input::Shutdown) {
                self.shutdown().await;
                break;
            }
            let mut inputs = vec![first];
            while inputs.len() < ROUND_MAX_INPUTS {
                match self.rx.try_recv() {
                    Ok(Input::Shutdown) => {
                        self.round(inputs).await;
                        self.shutdown().await;
                        return;
                    }
                    Ok(i) => inputs.push(i),
                    Err(_) => break,
                }
            }
            self.round(inputs).await;
        }
    }

    async fn shutdown(&mut self) {
        if let Some(c) = self.compute.as_mut() {
            c.shutdown();
        }
        self.round(Vec::new()).await;
    }

    fn next_deadline(&self) -> Option<Timestamp> {
        let a = self.orch.as_ref().and_then(|o| o.poll_timeout());
        let b = self.compute.as_ref().and_then(|c| c.poll_timeout());
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// One round: feed, settle, commit once, then act.
    async fn round(&mut self, inputs: Vec<Input>) {
        let t = self.shared.clock.now();
        let mut batch = Batch::default();
        let n_inputs = inputs.len();
        for input in inputs {
            self.feed(t, input, &mut batch);
        }
        // Timers due now.
        if self.orch.as_ref().and_then(|o| o.poll_timeout()).is_some_and(|d| d <= t)
            && let Some(o) = self.orch.as_mut()
        {
            o.handle_timeout(t);
        }
        if self.compute.as_ref().and_then(|c| c.poll_timeout()).is_some_and(|d| d <= t)
            && let Some(c) = self.compute.as_mut()
        {
            c.handle_timeout(t);
        }
        self.settle(t, &mut batch);
        let committed = !batch.orch.is_empty() || !batch.compute.is_empty();
        if committed {
            let n = batch.orch.len() + batch.compute.len();
            let started = std::time::Instant::now();
            let orch = std::mem::take(&mut batch.orch);
            let compute = std::mem::take(&mut batch.compute);
            self.shared.metrics.observe_records(&orch);
            if let Err(e) = self.shared.store.commit_async(orch, compute).await {
                // fjall advises crash-and-restart on I/O errors: nothing unsynced was revealed.
                tracing::error!(error = %e, "storage failure; exiting so a restart recovers from the last sync");
                std::process::exit(70);
            }
            self.shared.metrics.fsync(n, n_inputs, started.elapsed());
        }
        if let Some(o) = &self.orch {
            self.shared.metrics.stale_messages(o.stats().stale_messages);
            let nodes: Vec<NodeState> = o.nodes().cloned().collect();
            if let Ok(mut w) = self.shared.nodes.write() {
                *w = nodes;
            }
        }
        // Wake readers only once everything they may read (store and node view) is current.
        if committed {
            self.shared.changes.send_modify(|v| *v += 1);
        }
        for e in batch.effects {
            self.perform(e);
        }
    }

    fn feed(&mut self, t: Timestamp, input: Input, batch: &mut Batch) {
        match input {
            Input::Submit { job, reply } => match self.orch.as_mut() {
                Some(o) => {
                    self.next_req += 1;
                    self.replies.insert(self.next_req, reply);
                    let store = &self.shared.store;
                    o.submit_unless_stored(t, self.next_req, job, |id| {
                        store.job_exists(id).map_err(|e| e.to_string())
                    });
                }
                None => {
                    let _ = reply.send(no_orchestrator());
                }
            },
            Input::Stop { job_id, reason, reply } => match self.orch.as_mut() {
                Some(o) => {
                    self.next_req += 1;
                    self.replies.insert(self.next_req, reply);
                    o.stop(t, self.next_req, &job_id, &reason);
                }
                None => {
                    let _ = reply.send(no_orchestrator());
                }
            },
            Input::NodeAction { node_id, action, reply } => match self.orch.as_mut() {
                Some(o) => {
                    self.next_req += 1;
                    self.replies.insert(self.next_req, reply);
                    o.node_action(t, self.next_req, &node_id, action);
                }
                None => {
                    let _ = reply.send(no_orchestrator());
                }
            },
            Input::Peer(Inbound::Message { from, message }) => self.route(t, &from, message),
            Input::Peer(Inbound::PeerUp { node, api, addr }) => {
                tracing::info!(%node, api = api.as_deref().unwrap_or(""), "peer up");
                // Any peer may run an orchestrator: announce this compute node to it. A peer
                // without one drops the messages; one with one learns about this node at once.
                if let Some(c) = self.compute.as_mut() {
                    c.add_orchestrator(&node);
                }
                // Peers are read through their local-only gateway (see api::data).
                if let (Some(sources), Some(api)) = (&self.adapters.content_sources, api)
                    && let Err(why) = sources.add_peer(&api, addr)
                {
                    self.peer_fault(&node, &gadus_core::peer::PeerMisbehaved::BadApiUrl(why));
                }
            }
            Input::Peer(Inbound::PeerDown { node }) => {
                tracing::info!(%node, "peer down");
                if let Some(c) = self.compute.as_mut() {
                    c.remove_orchestrator(&node);
                }
            }
            Input::Work(w) => {
                let Some(c) = self.compute.as_mut() else { return };
                match w {
                    Work::Probe(id, r) => c.handle_probe_result(t, &id, r),
                    Work::Prepared(id, r) => c.handle_prepared(t, &id, r),
                    Work::RunFinished(id, r) => c.handle_run_finished(t, &id, r),
                    Work::Published(id, r) => c.handle_published(t, &id, r),
                    Work::AdoptFailed(id, why) => c.handle_adopt_failed(t, &id, &why),
                }
            }
            Input::Shutdown => {}
        }
        let _ = batch;
    }

    /// Delivers a message to the right co-located machine.
    fn route(&mut self, t: Timestamp, from: &str, message: Message) {
        // Peers are untrusted: a message that breaks the protocol is counted and dropped
        // before either machine sees it.
        if from != self.id
            && let Err(fault) = gadus_core::peer::check_message(from, &message)
        {
            self.peer_fault(from, &fault);
            return;
        }
        let to_compute = matches!(
            message,
            Message::AskForBid { .. }
                | Message::BidAccepted { .. }
                | Message::BidRejected { .. }
                | Message::CancelExecution { .. }
                | Message::UpdateAck { .. }
        );
        if to_compute {
            if let Some(c) = self.compute.as_mut() {
                c.handle_message(t, from, message);
            }
        } else if let Some(o) = self.orch.as_mut() {
            o.handle_message(t, from, message);
        }
    }

    fn peer_fault(&self, peer: &str, fault: &gadus_core::peer::PeerMisbehaved) {
        tracing::warn!(peer, kind = fault.kind(), error = %fault, "peer misbehaved; message dropped");
        self.shared.metrics.peer_fault(peer, fault.kind());
    }

    /// Drains both machines, delivering local messages directly, until both are quiet.
    fn settle(&mut self, t: Timestamp, batch: &mut Batch) {
        let mut local: VecDeque<(String, Message)> = VecDeque::new();
        loop {
            let mut progressed = false;
            while let Some(a) = self.orch.as_mut().and_then(|o| o.poll_action()) {
                progressed = true;
                match a {
                    Action::Persist(r) => batch.orch.push(r),
                    Action::Send { to, message } if to == self.id => {
                        local.push_back((self.id.clone(), message))
                    }
                    Action::Send { to, message } => batch.effects.push(Effect::Remote(to, message)),
                    Action::Reply { request, reply } => {
                        batch.effects.push(Effect::Reply(request, reply))
                    }
                }
            }
            while let Some(a) = self.compute.as_mut().and_then(|c| c.poll_action()) {
                progressed = true;
                match a {
                    ComputeAction::Persist(r) => batch.compute.push(r),
                    ComputeAction::Send { to, message } if to == self.id => {
                        local.push_back((self.id.clone(), message));
                    }
                    ComputeAction::Send { to, message } => {
                        batch.effects.push(Effect::Remote(to, message))
                    }
                    other => batch.effects.push(Effect::Compute(other)),
                }
            }
            let faults = self.compute.as_mut().map(|c| c.take_faults()).unwrap_or_default();
            for (peer, fault) in faults {
                self.peer_fault(&peer, &fault);
            }
            while let Some((from, m)) = local.pop_front() {
                progressed = true;
                self.route(t, &from, m);
            }
            if !progressed {
                break;
            }
        }
    }

    fn perform(&mut self, e: Effect) {
        match e {
            Effect::Reply(req, reply) => {
                if let Some(tx) = self.replies.remove(&req) {
                    let _ = tx.send(reply);
                }
            }
            Effect::Remote(to, message) => match &self.adapters.transport {
                Some(t) => {
                    if let Err(e) = t.send(&to, message) {
                        tracing::debug!(%to, error = %e, "send failed; the protocol will recover");
                    }
                }
                None => tracing::debug!(%to, "no transport: message to another node dropped"),
            },
            Effect::Compute(a) => self.start_work(a),
        }
    }

    fn start_work(&mut self, a: ComputeAction) {
        let tx = self.tx.clone();
        let adapters = self.adapters.clone();
        let shared = self.shared.clone();
        let node_id = self.id.clone();
        match a {
            ComputeAction::Probe { exec, probe } => {
                let span = exec_span("probe", &exec);
                let task = async move {
                    let r = run_probe(&adapters, probe).await;
                    let _ = tx.send(Input::Work(Work::Probe(exec.execution_id, r))).await;
                };
                tokio::spawn(task.instrument(span));
            }
            ComputeAction::Prepare { exec, job, resources, partition } => {
                let id = exec.execution_id.clone();
                let w = self.work.begin(&id, job.clone());
                self.shared.metrics.executions_held(self.work.len());
                let span = exec_span("prepare", &exec);
                let task = async move {
                    // Cancelled before it began: the core has already moved on.
                    let Some(step) = w.begin_step().await else { return };
                    let r = prepare(&adapters, &shared, &exec, job, resources, partition)
                        .await
                        .map(|ctx| w.set_context(ctx));
                    drop(step);
                    let _ = tx.send(Input::Work(Work::Prepared(id, r))).await;
                };
                tokio::spawn(task.instrument(span));
            }
            ComputeAction::Run { exec } => {
                let id = exec.execution_id.clone();
                let w = self.work.get(&id);
                let span = exec_span("run", &exec);
                let task = async move {
                    let lost =
                        || Err((failure(FailureKind::Internal, "execution state lost"), None));
                    let r = match &w {
                        None => lost(),
                        Some(w) => {
                            let Some(_step) = w.begin_step().await else { return };
                            match w.context() {
                                Some(ctx) => run(&adapters, &shared, &ctx, false).await,
                                None => lost(),
                            }
                        }
                    };
                    let _ = tx.send(Input::Work(Work::RunFinished(id, r))).await;
                };
                tokio::spawn(task.instrument(span));
            }
            ComputeAction::Publish { exec } => {
                let id = exec.execution_id.clone();
                let w = self.work.get(&id);
                let span = exec_span("publish", &exec);
                let task = async move {
                    let r = match &w {
                        None => Err(failure(FailureKind::Internal, "execution state lost")),
                        Some(w) => {
                            let Some(_step) = w.begin_step().await else { return };
                            publish(&adapters, &shared, &w.job, &id, &node_id).await
                        }
                    };
                    let _ = tx.send(Input::Work(Work::Published(id, r))).await;
                };
                tokio::spawn(task.instrument(span));
            }
            ComputeAction::Cancel { exec } => {
                let id = exec.execution_id.clone();
                // Marked first: a step that has not begun never will. The engine is stopped
                // at once, while a run may be in flight; the cleanup comes with `Release`.
                let w = self.work.get(&id);
                if let Some(w) = &w {
                    w.cancel();
                }
                let executor =
                    w.and_then(|w| w.engine()).and_then(|e| adapters.executors.get(&e).cloned());
                let span = exec_span("cancel", &exec);
                let task = async move {
                    if let Some(ex) = executor {
                        ex.cancel(&id).await;
                    }
                };
                tokio::spawn(task.instrument(span));
            }
            ComputeAction::Release { exec } => {
                let id = exec.execution_id.clone();
                let w = self.work.end(&id);
                self.shared.metrics.executions_held(self.work.len());
                let span = exec_span("release", &exec);
                let task = async move {
                    // After a restart the node may release what an earlier process left:
                    // then every engine looks for leftovers (cleanup is idempotent).
                    let engines: Vec<_> = match w.as_ref().and_then(|w| w.engine()) {
                        Some(e) => adapters.executors.get(&e).cloned().into_iter().collect(),
                        None => adapters.executors.values().cloned().collect(),
                    };
                    let quiet = match &w {
                        Some(w) => Some(w.quiesce().await),
                        None => None,
                    };
                    for ex in engines {
                        ex.cleanup(&id).await;
                    }
                    shared.logs.close(&id);
                    drop(quiet);
                };
                tokio::spawn(task.instrument(span));
            }
            ComputeAction::Adopt { exec, job, phase } => {
                let id = exec.execution_id.clone();
                let w = self.work.begin(&id, job.clone());
                self.shared.metrics.executions_held(self.work.len());
                let span = exec_span("adopt", &exec);
                let task = async move {
                    let Some(_step) = w.begin_step().await else { return };
                    match phase {
                        Phase::Publishing => {
                            let r = publish(&adapters, &shared, &job, &id, &node_id).await;
                            let _ = tx.send(Input::Work(Work::Published(id, r))).await;
                        }
                        _ => {
                            let ctx = context(
                                &adapters,
                                &shared,
                                &exec,
                                job,
                                gadus_core::model::Resources::default(),
                                (0, 1),
                                Vec::new(),
                            );
                            match run(&adapters, &shared, &ctx, true).await {
                                Err((f, _)) if f.kind == FailureKind::NodeRestarted => {
                                    let _ = tx
                                        .send(Input::Work(Work::AdoptFailed(id, f.message)))
                                        .await;
                                }
                                r => {
                                    let _ = tx.send(Input::Work(Work::RunFinished(id, r))).await;
                                }
                            }
                        }
                    }
                };
                tokio::spawn(task.instrument(span));
            }
            ComputeAction::Persist(_) | ComputeAction::Send { .. } => {}
        }
    }
}

fn no_orchestrator() -> Reply {
    Reply::Error(gadus_core::orchestrator::ApiError {
        kind: gadus_core::orchestrator::ErrorKind::Conflict,
        message: "this node does not run an orchestrator (serve with --orchestrator)".into(),
        details: Vec::new(),
    })
}

fn failure(kind: FailureKind, msg: impl Into<String>) -> ExecFailure {
    ExecFailure { kind, message: msg.into() }
}

fn exec_dir(shared: &Shared, id: &str) -> PathBuf {
    shared.executions_dir.join(id)
}

fn context(
    adapters: &Adapters,
    shared: &Shared,
    exec: &ExecRef,
    job: Arc<Job>,
    resources: gadus_core::model::Resources,
    partition: (u32, u32),
    inputs: Vec<PreparedInput>,
) -> ExecutionContext {
    let timeout = job.task().map(|t| t.timeouts().effective_execution_timeout()).unwrap_or(0);
    let deadline = if timeout > 0 {
        Some(Duration::from_secs(u64::try_from(timeout).unwrap_or(0)))
    } else if adapters.default_exec_timeout.is_zero() {
        None
    } else {
        Some(adapters.default_exec_timeout)
    };
    ExecutionContext {
        execution_id: exec.execution_id.clone(),
        system_env: system_env(&job, &exec.execution_id, partition),
        job,
        resources,
        inputs,
        results_dir: exec_dir(shared, &exec.execution_id).join("results"),
        deadline,
        output_limits: adapters.output_limits,
        allow_network: adapters.allow_network,
    }
}

async fn prepare(
    adapters: &Adapters,
    shared: &Shared,
    exec: &ExecRef,
    job: Arc<Job>,
    resources: gadus_core::model::Resources,
    partition: (u32, u32),
) -> Result<ExecutionContext, ExecFailure> {
    let task =
        job.task().ok_or_else(|| failure(FailureKind::InvalidSpec, "job has no task"))?.clone();
    let engine = task.engine_type();
    let executor = adapters.executors.get(&engine).cloned().ok_or_else(|| {
        failure(
            FailureKind::InvalidSpec,
            format!("engine {engine:?} is not available on this node"),
        )
    })?;
    let dir = exec_dir(shared, &exec.execution_id);
    let results = dir.join("results");
    // A retry of the same execution starts from clean directories.
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&results).map_err(|e| {
        failure(FailureKind::Internal, format!("creating {}: {e}", results.display()))
    })?;
    let mut inputs = Vec::new();
    for (i, input) in task.input_sources.iter().enumerate() {
        let Some(source) = &input.source else {
            return Err(failure(FailureKind::InvalidSpec, format!("input {i} has no source")));
        };
        let kind = source.type_key();
        let provider =
            adapters.inputs.iter().find(|p| p.source_type() == kind).cloned().ok_or_else(|| {
                failure(
                    FailureKind::InvalidSpec,
                    format!("input source {kind:?} is not available on this node"),
                )
            })?;
        let work_dir = dir.join("inputs").join(i.to_string());
        std::fs::create_dir_all(&work_dir).map_err(|e| {
            failure(FailureKind::Internal, format!("creating {}: {e}", work_dir.display()))
        })?;
        inputs.push(provider.prepare(source, &input.target, &work_dir, &NoProgress).await?);
    }
    let ctx = context(adapters, shared, exec, job, resources, partition, inputs);
    executor.prepare(&ctx).await?;
    Ok(ctx)
}

struct HubSink {
    hub: LogHub,
    id: String,
}

impl LogSink for HubSink {
    fn write(&self, stream: gadus_io::executor::Stream, bytes: &[u8]) {
        self.hub.write(&self.id, stream, bytes);
    }
}

async fn run(
    adapters: &Adapters,
    shared: &Shared,
    ctx: &ExecutionContext,
    adopt: bool,
) -> Result<WireRunOutput, (ExecFailure, Option<WireRunOutput>)> {
    let engine = ctx.job.task().map(|t| t.engine_type()).unwrap_or_default();
    let Some(executor) = adapters.executors.get(&engine).cloned() else {
        return Err((
            failure(FailureKind::InvalidSpec, format!("engine {engine:?} is not available")),
            None,
        ));
    };
    shared.logs.open(&ctx.execution_id);
    let sink: Arc<dyn LogSink> =
        Arc::new(HubSink { hub: shared.logs.clone(), id: ctx.execution_id.clone() });
    let r = if adopt { executor.adopt(ctx, sink).await } else { executor.run(ctx, sink).await };
    executor.cleanup(&ctx.execution_id).await;
    shared.logs.close(&ctx.execution_id);
    r
}

async fn publish(
    adapters: &Adapters,
    shared: &Shared,
    job: &Job,
    id: &str,
    node_id: &str,
) -> Result<String, ExecFailure> {
    let spec = job.task().and_then(|t| t.publisher.clone()).unwrap_or_default();
    let kind = spec.type_key();
    let publisher =
        adapters.publishers.iter().find(|p| p.publisher_type() == kind).cloned().ok_or_else(
            || {
                failure(
                    FailureKind::PublishFailed,
                    format!("publisher {kind:?} is not available on this node"),
                )
            },
        )?;
    let results = exec_dir(shared, id).join("results");
    let published = publisher.publish(&spec, job, id, node_id, &results).await?;
    Ok(gadus_core::model::codec::to_json(&published))
}

async fn run_probe(adapters: &Adapters, probe: Probe) -> Result<(), String> {
    match probe {
        Probe::Locality { cids } => {
            let Some(ipfs) = adapters.inputs.iter().find(|p| p.source_type() == "ipfs") else {
                return Err("no ipfs input source on this node".into());
            };
            for cid in cids {
                let spec =
                    gadus_core::model::SpecConfig::new("ipfs").with_param("CID", cid.clone());
                if !ipfs.is_local(&spec).await {
                    return Err(format!(
                        "input {cid} is not stored on this node (locality: local)"
                    ));
                }
            }
            Ok(())
        }
        Probe::Exec { command, body } => {
            use tokio::io::AsyncWriteExt;
            let mut child = tokio::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(&command)
                .env("BACALHAU_JOB_SELECTION_PROBE_DATA", &body)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .map_err(|e| format!("probe command failed to start: {e}"))?;
            if let Some(mut stdin) = child.stdin.take() {
                let _ = stdin.write_all(body.as_bytes()).await;
            }
            let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
                .await
                .map_err(|_| "probe command timed out".to_string())?
                .map_err(|e| format!("probe command failed: {e}"))?;
            if status.success() {
                Ok(())
            } else {
                Err(format!("probe command exited with {status}"))
            }
        }
        Probe::Http { url, body } => {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .map_err(|e| e.to_string())?;
            let resp = client
                .post(&url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .map_err(|e| format!("probe {url} failed: {e}"))?;
            if resp.status().as_u16() >= 400 {
                return Err(format!("probe {url} answered {}", resp.status()));
            }
            let is_json = resp
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.contains("json"));
            if is_json {
                let bytes = resp.bytes().await.map_err(|e| format!("probe {url}: {e}"))?;
                let v: serde_json::Value =
                    serde_json::from_slice(&bytes[..bytes.len().min(64 * 1024)])
                        .map_err(|e| format!("probe {url}: {e}"))?;
                let should = v.as_object().and_then(|o| {
                    o.iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case("ShouldBid"))
                        .map(|(_, v)| v.as_bool())
                });
                if let Some(Some(false)) = should {
                    let reason = v
                        .as_object()
                        .and_then(|o| o.iter().find(|(k, _)| k.eq_ignore_ascii_case("Reason")))
                        .and_then(|(_, v)| v.as_str())
                        .unwrap_or("no reason given");
                    return Err(format!("probe {url} declined: {reason}"));
                }
            }
            Ok(())
        }
    }
}

/// The span around one piece of compute work: exported spans and log lines carry the IDs, so an
/// execution can be followed across prepare, run and publish (and across nodes, by job ID).
fn exec_span(phase: &'static str, exec: &ExecRef) -> tracing::Span {
    tracing::info_span!(
        "execution",
        phase,
        execution_id = %exec.execution_id,
        job_id = %exec.job_id,
        attempt = exec.attempt
    )
}
