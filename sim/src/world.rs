//! The tier-1 discrete-event world: orchestrators and compute nodes (the real `gadus-core`
//! state machines) on one thread, a virtual clock that jumps to the next event, a network of
//! per-message delivery times with loss, duplication, reordering, delay and partitions,
//! crash/restart that keeps only what was synced, clock skew, and simulated executors.
//!
//! Every choice comes from one [`DetRng`] seeded by the scenario, and every processed event is
//! appended to a trace whose hash identifies the run: the same seed gives the same hash.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::time::Duration;

use gadus_core::compute::{Compute, ComputeAction, ComputeConfig, ComputeRecord, Phase};
use gadus_core::model::{ExecutionStateType, Job, JobStateType, JobType, Resources, Timestamp};
use gadus_core::mutants::Mutants;
use gadus_core::orchestrator::{Action, End, Orchestrator, OrchestratorConfig, Record, Reply};
use gadus_core::protocol::{ExecFailure, FailureKind, Message, WireRunOutput};
use gadus_core::rng::DetRng;

use crate::scenario::Scenario;
use crate::trace::Trace;

/// Simulation start (wall-clock epoch the machines see, before skew).
pub const EPOCH_SECS: i64 = 1_700_000_000;

#[derive(Clone, Debug)]
enum WorkKind {
    Prepared,
    RunDone,
    Published,
    Probe,
    AdoptFailed,
}

#[derive(Clone, Debug)]
enum Event {
    Deliver { from: usize, to: usize, msg: Box<Message>, dup: bool },
    Timer { machine: usize },
    Work { machine: usize, exec: String, kind: WorkKind, epoch: u64 },
    Submit { orch: usize, spec: usize },
    Stop { job: usize },
    Partition,
    Heal { a: usize, b: usize, oneway: bool },
    Crash { machine: usize },
    Restart { machine: usize },
    KillForever { machine: usize },
    EndSafety,
}

/// How a task will behave, decided when its execution is prepared.
#[derive(Clone, Debug)]
struct Plan {
    prepare: Duration,
    run: Duration,
    outcome: Outcome,
    publish: Duration,
    publish_fails: bool,
}

#[derive(Clone, Debug)]
enum Outcome {
    Exit(i64),
    Fail(FailureKind),
    Hang,
}

struct OrchSlot {
    cfg: OrchestratorConfig,
    m: Option<Orchestrator>,
    synced: BTreeMap<(String, String), Record>,
    unsynced: Vec<Record>,
    restarts: u64,
    stale_seen: u64,
}

struct ComputeSlot {
    cfg: ComputeConfig,
    m: Option<Compute>,
    synced: BTreeMap<(String, String), ComputeRecord>,
    unsynced: Vec<ComputeRecord>,
    /// Work in flight in the "executor", with the epoch that started it.
    work: BTreeMap<String, u64>,
    /// Incremented by crashes: work from an older epoch is dead unless it survived.
    epoch: u64,
    plans: BTreeMap<String, Plan>,
    /// What the driver holds per execution since `Prepare`/`Adopt` (execution → job), until
    /// `Release`; a crash empties it (the driver's memory is gone).
    held: BTreeMap<String, String>,
}

/// A client's view of a job it submitted.
#[derive(Clone, Debug)]
pub struct Acked {
    /// Orchestrator index.
    pub orch: usize,
    /// Job type.
    pub job_type: JobType,
    /// Count.
    pub count: i64,
}

/// The simulated cluster.
pub struct World {
    /// What this run is.
    pub scenario: Scenario,
    rng: DetRng,
    /// Global simulated time.
    pub now: Timestamp,
    heap: BinaryHeap<Reverse<(Timestamp, u64)>>,
    events: BTreeMap<u64, Event>,
    seq: u64,
    orchs: Vec<OrchSlot>,
    computes: Vec<ComputeSlot>,
    timer_at: Vec<Option<Timestamp>>,
    cut: BTreeSet<(usize, usize)>,
    crash_mid_batch: BTreeSet<usize>,
    /// Machines that died for good.
    dead: BTreeSet<usize>,
    faults_on: bool,
    specs: Vec<String>,
    /// Jobs acknowledged to clients, by ID.
    pub acked: BTreeMap<String, Acked>,
    acked_order: Vec<String>,
    next_req: u64,
    pending_submits: BTreeMap<u64, usize>,
    terminal_seen: BTreeMap<String, JobStateType>,
    /// Runs started per (execution, attempt): never more than one.
    runs: BTreeMap<(String, u64), u32>,
    exec_terminal_seen: BTreeMap<String, ExecutionStateType>,
    completions: BTreeMap<String, BTreeSet<String>>,
    /// Latest durable state of every execution, by job.
    exec_states: BTreeMap<String, BTreeMap<String, ExecutionStateType>>,
    node_lost_jobs: BTreeSet<String>,
    /// Coverage marks: how often each situation occurred.
    pub marks: BTreeMap<&'static str, u64>,
    /// The event trace.
    pub trace: Trace,
    /// Events processed.
    pub events_processed: u64,
    violation: Option<String>,
}

fn name(i: usize, orchestrators: usize) -> String {
    if i < orchestrators { format!("o-{i}") } else { format!("c-{}", i - orchestrators) }
}

const JOB_KINDS: [&str; 4] = ["batch", "service", "ops", "daemon"];

impl World {
    /// Builds the world for a scenario; `mutants` switches on a deliberate bug in every
    /// machine.
    pub fn new(scenario: Scenario, mutants: Mutants, verbose: bool) -> World {
        let mut rng = DetRng::new(scenario.seed);
        let now = Timestamp::from_secs(EPOCH_SECS);
        let o = scenario.orchestrators;
        let orch_names: Vec<String> = (0..o).map(|i| name(i, o)).collect();
        let mut orchs = Vec::new();
        for n in &orch_names {
            let mut cfg = OrchestratorConfig::new(n.clone());
            cfg.mutants = mutants;
            cfg.bid_timeout = Duration::from_secs(10);
            cfg.disconnect_timeout = Duration::from_secs(20);
            cfg.queue_backoff = Duration::from_secs(5);
            orchs.push(OrchSlot {
                m: Some(Orchestrator::new(cfg.clone(), rng.next_u64())),
                cfg,
                synced: BTreeMap::new(),
                unsynced: Vec::new(),
                restarts: 0,
                stale_seen: 0,
            });
        }
        let mut computes = Vec::new();
        for i in 0..scenario.computes {
            let n = name(o + i, o);
            let cpus = f64::from(scenario.node_cpus);
            let mut cfg = ComputeConfig::new(
                n,
                Resources::new(cpus, 16_000_000_000, 100_000_000_000, 0),
                orch_names.clone(),
            );
            cfg.labels.insert("zone".into(), if i % 2 == 0 { "a".into() } else { "b".into() });
            cfg.heartbeat_interval = Duration::from_secs(3);
            cfg.info_interval = Duration::from_secs(15);
            cfg.approval_timeout = Duration::from_secs(40);
            cfg.mutants = mutants;
            computes.push(ComputeSlot {
                cfg,
                m: None,
                synced: BTreeMap::new(),
                unsynced: Vec::new(),
                work: BTreeMap::new(),
                held: BTreeMap::new(),
                epoch: 0,
                plans: BTreeMap::new(),
            });
        }
        let machines = o + scenario.computes;
        let mut specs = Vec::new();
        for _ in 0..scenario.jobs {
            specs.push(random_spec(&mut rng, scenario.batch_only));
        }
        let mut w = World {
            rng,
            now,
            heap: BinaryHeap::new(),
            events: BTreeMap::new(),
            seq: 0,
            orchs,
            computes,
            timer_at: vec![None; machines],
            cut: BTreeSet::new(),
            crash_mid_batch: BTreeSet::new(),
            dead: BTreeSet::new(),
            faults_on: true,
            specs,
            acked: BTreeMap::new(),
            acked_order: Vec::new(),
            next_req: 0,
            pending_submits: BTreeMap::new(),
            terminal_seen: BTreeMap::new(),
            runs: BTreeMap::new(),
            exec_terminal_seen: BTreeMap::new(),
            completions: BTreeMap::new(),
            exec_states: BTreeMap::new(),
            node_lost_jobs: BTreeSet::new(),
            marks: BTreeMap::new(),
            trace: Trace::new(verbose),
            events_processed: 0,
            violation: None,
            scenario,
        };
        // Compute nodes start (and announce themselves) at slightly different times.
        for i in 0..w.scenario.computes {
            let at = w.now + Duration::from_millis(w.rng.below(2000));
            w.push(at, Event::Restart { machine: o + i });
        }
        let safety = w.scenario.safety;
        for spec in 0..w.scenario.jobs {
            let window = if w.scenario.batch_only {
                safety.as_millis() as u64
            } else {
                (safety.as_millis() as u64 * 8) / 10
            };
            let at = w.now + Duration::from_millis(w.rng.below(window));
            let orch = w.rng.below(o as u64) as usize;
            w.push(at, Event::Submit { orch, spec });
        }
        for _ in 0..(w.scenario.jobs / 4) {
            let at = w.now + Duration::from_millis(w.rng.below(safety.as_millis() as u64));
            let job = w.rng.below(1000) as usize;
            w.push(at, Event::Stop { job });
        }
        let f = w.scenario.faults.clone();
        if !f.partition_every.is_zero() {
            let at = w.now + jitter(&mut w.rng, f.partition_every);
            w.push(at, Event::Partition);
        }
        if !f.crash_every.is_zero() {
            let at = w.now + jitter(&mut w.rng, f.crash_every);
            let machine = w.rng.below(machines as u64) as usize;
            w.push(at, Event::Crash { machine });
        }
        if let Some(at) = f.kill_forever_at {
            let machine = o + w.rng.below(w.scenario.computes as u64) as usize;
            w.push(w.now + at, Event::KillForever { machine });
        }
        w.push(w.now + safety, Event::EndSafety);
        w
    }

    fn mark(&mut self, m: &'static str) {
        *self.marks.entry(m).or_default() += 1;
    }

    fn push(&mut self, at: Timestamp, e: Event) {
        self.seq += 1;
        self.heap.push(Reverse((at, self.seq)));
        self.events.insert(self.seq, e);
    }

    fn o(&self) -> usize {
        self.scenario.orchestrators
    }

    fn local(&self, machine: usize) -> Timestamp {
        let skew = self.scenario.skew_ms[machine];
        if skew >= 0 {
            self.now + Duration::from_millis(skew as u64)
        } else {
            self.now - Duration::from_millis(skew.unsigned_abs())
        }
    }

    fn to_global(&self, machine: usize, local: Timestamp) -> Timestamp {
        let skew = self.scenario.skew_ms[machine];
        if skew >= 0 {
            local - Duration::from_millis(skew as u64)
        } else {
            local + Duration::from_millis(skew.unsigned_abs())
        }
    }

    fn up(&self, machine: usize) -> bool {
        let o = self.o();
        if machine < o {
            self.orchs[machine].m.is_some()
        } else {
            self.computes[machine - o].m.is_some()
        }
    }

    /// Runs both phases; `Err` describes the first violated invariant or stuck job.
    pub fn run(&mut self) -> Result<(), String> {
        let end = self.now + self.scenario.safety + self.scenario.liveness;
        while let Some(Reverse((at, seq))) = self.heap.pop() {
            if at > end {
                break;
            }
            self.now = self.now.max(at);
            let Some(event) = self.events.remove(&seq) else { continue };
            self.events_processed += 1;
            self.handle(event);
            if let Some(v) = self.violation.take() {
                return Err(format!("at t={}ms: {v}", self.elapsed_ms()));
            }
            if self.scenario.check_every_event {
                self.check_machines()?;
            }
        }
        self.now = end;
        self.check_machines()?;
        if self.scenario.liveness.is_zero() {
            return Ok(());
        }
        self.check_liveness()
    }

    fn elapsed_ms(&self) -> i64 {
        (self.now.as_nanos() - Timestamp::from_secs(EPOCH_SECS).as_nanos()) / 1_000_000
    }

    fn check_machines(&self) -> Result<(), String> {
        for (i, s) in self.orchs.iter().enumerate() {
            if let Some(m) = &s.m {
                m.check_invariants()
                    .map_err(|e| format!("at t={}ms orchestrator o-{i}: {e}", self.elapsed_ms()))?;
            }
        }
        for (i, s) in self.computes.iter().enumerate() {
            if let Some(m) = &s.m {
                m.check_invariants()
                    .map_err(|e| format!("at t={}ms compute c-{i}: {e}", self.elapsed_ms()))?;
            }
        }
        Ok(())
    }

    fn handle(&mut self, event: Event) {
        let t = self.elapsed_ms();
        let o = self.o();
        match event {
            Event::Deliver { from, to, msg, dup } => {
                if !self.up(to) {
                    self.trace.line(format!(
                        "{t} drop-down {}->{} {}",
                        name(from, o),
                        name(to, o),
                        msg.name()
                    ));
                    return;
                }
                self.trace.line(format!(
                    "{t} deliver {}->{} {}{}",
                    name(from, o),
                    name(to, o),
                    msg.name(),
                    exec_tag(&msg)
                ));
                if dup {
                    self.mark("duplicate-delivered");
                }
                let now = self.local(to);
                let from_name = name(from, o);
                if to < o {
                    if let Some(m) = self.orchs[to].m.as_mut() {
                        m.handle_message(now, &from_name, *msg);
                    }
                    self.drain_orch(to);
                } else {
                    if let Some(m) = self.computes[to - o].m.as_mut() {
                        m.handle_message(now, &from_name, *msg);
                    }
                    self.drain_compute(to);
                }
            }
            Event::Timer { machine } => {
                if self.timer_at[machine] != Some(self.now) {
                    return; // superseded
                }
                self.timer_at[machine] = None;
                let now = self.local(machine);
                self.trace.line(format!("{t} timer {}", name(machine, o)));
                if machine < o {
                    if let Some(m) = self.orchs[machine].m.as_mut() {
                        m.handle_timeout(now);
                    }
                    self.drain_orch(machine);
                } else {
                    if let Some(m) = self.computes[machine - o].m.as_mut() {
                        m.handle_timeout(now);
                    }
                    self.drain_compute(machine);
                }
            }
            Event::Work { machine, exec, kind, epoch } => self.on_work(machine, exec, kind, epoch),
            Event::Submit { orch, spec } => {
                if !self.up(orch) {
                    // The client retries a bit later.
                    self.push(self.now + Duration::from_secs(1), Event::Submit { orch, spec });
                    return;
                }
                let job =
                    Job::from_yaml(self.specs[spec].as_bytes()).expect("generated specs decode");
                self.next_req += 1;
                self.pending_submits.insert(self.next_req, orch);
                self.trace.line(format!(
                    "{t} submit {} spec={spec} req={}",
                    name(orch, o),
                    self.next_req
                ));
                let now = self.local(orch);
                let req = self.next_req;
                if let Some(m) = self.orchs[orch].m.as_mut() {
                    m.submit(now, req, job);
                }
                self.drain_orch(orch);
            }
            Event::Stop { job } => {
                if self.acked_order.is_empty() {
                    return;
                }
                let id = self.acked_order[job % self.acked_order.len()].clone();
                let orch = self.acked[&id].orch;
                if !self.up(orch) {
                    return;
                }
                self.trace.line(format!("{t} stop {id}"));
                self.next_req += 1;
                let now = self.local(orch);
                let req = self.next_req;
                if let Some(m) = self.orchs[orch].m.as_mut() {
                    m.stop(now, req, &id, "simulated user");
                }
                self.drain_orch(orch);
            }
            Event::Partition => self.on_partition(),
            Event::Heal { a, b, oneway } => {
                self.cut.remove(&(a, b));
                if !oneway {
                    self.cut.remove(&(b, a));
                }
                self.trace.line(format!("{t} heal {}-{}", name(a, o), name(b, o)));
            }
            Event::Crash { machine } => self.on_crash_event(machine),
            Event::Restart { machine } => {
                if !self.dead.contains(&machine) {
                    self.restart(machine);
                }
            }
            Event::KillForever { machine } => {
                self.crash_now(machine);
                self.dead.insert(machine);
                self.mark("node-gone-forever");
            }
            Event::EndSafety => self.end_safety(),
        }
    }

    // ------------------------------------------------------------ network

    fn send(&mut self, from: usize, to_name: &str, msg: Message) {
        let o = self.o();
        let Some(to) = (0..o + self.scenario.computes).find(|i| name(*i, o) == to_name) else {
            return;
        };
        let f = self.scenario.faults.clone();
        if self.cut.contains(&(from, to)) {
            self.trace.line(format!(
                "{} cut {}->{} {}",
                self.elapsed_ms(),
                name(from, o),
                to_name,
                msg.name()
            ));
            return;
        }
        if self.faults_on && self.rng.chance(f.loss) {
            self.mark("message-lost");
            self.trace.line(format!(
                "{} lost {}->{} {}",
                self.elapsed_ms(),
                name(from, o),
                to_name,
                msg.name()
            ));
            return;
        }
        let (min, max) = if self.faults_on {
            (f.latency_min, f.latency_max)
        } else {
            (Duration::from_millis(1), Duration::from_millis(5))
        };
        let spread = max.saturating_sub(min).as_millis() as u64;
        let latency = min + Duration::from_millis(self.rng.below(spread + 1));
        let is_offer = matches!(msg, Message::AskForBid { .. } | Message::BidAccepted { .. });
        if self.faults_on && is_offer && self.rng.chance(f.late_duplicate) {
            let late = Duration::from_secs(30 + self.rng.below(151));
            self.mark("late-duplicate-sent");
            self.push(
                self.now + latency + late,
                Event::Deliver { from, to, msg: Box::new(msg.clone()), dup: true },
            );
        }
        if self.faults_on && self.rng.chance(f.duplicate) {
            let extra = Duration::from_millis(self.rng.below(spread + 1));
            self.push(
                self.now + latency + extra,
                Event::Deliver { from, to, msg: Box::new(msg.clone()), dup: true },
            );
        }
        self.push(self.now + latency, Event::Deliver { from, to, msg: Box::new(msg), dup: false });
    }

    fn on_partition(&mut self) {
        if !self.faults_on {
            return;
        }
        let o = self.o();
        let n = o + self.scenario.computes;
        let a = self.rng.below(n as u64) as usize;
        let mut b = self.rng.below(n as u64) as usize;
        if a == b {
            b = (a + 1) % n;
        }
        let oneway = self.rng.chance(0.3);
        self.cut.insert((a, b));
        if !oneway {
            self.cut.insert((b, a));
        }
        self.mark("partition");
        self.trace.line(format!(
            "{} partition {}-{} oneway={oneway}",
            self.elapsed_ms(),
            name(a, o),
            name(b, o)
        ));
        let heal = self.now + Duration::from_secs(5 + self.rng.below(55));
        self.push(heal, Event::Heal { a, b, oneway });
        let every = self.scenario.faults.partition_every;
        let next = self.now + jitter(&mut self.rng, every);
        self.push(next, Event::Partition);
    }

    // ------------------------------------------------------------ timers

    fn rearm(&mut self, machine: usize) {
        let o = self.o();
        let local = if machine < o {
            self.orchs[machine].m.as_ref().and_then(|m| m.poll_timeout())
        } else {
            self.computes[machine - o].m.as_ref().and_then(|m| m.poll_timeout())
        };
        let Some(local) = local else { return };
        let at = self.to_global(machine, local).max(self.now);
        if self.timer_at[machine].is_none_or(|t| at < t || t < self.now) {
            self.timer_at[machine] = Some(at);
            self.push(at, Event::Timer { machine });
        }
    }

    // ------------------------------------------------------------ orchestrators

    fn drain_orch(&mut self, i: usize) {
        let mut actions = Vec::new();
        if let Some(m) = self.orchs[i].m.as_mut() {
            while let Some(a) = m.poll_action() {
                actions.push(a);
            }
        }
        let crash_at = if self.crash_mid_batch.contains(&i) && !actions.is_empty() {
            Some(self.rng.below(actions.len() as u64) as usize)
        } else {
            None
        };
        for (k, a) in actions.into_iter().enumerate() {
            if crash_at == Some(k) {
                self.crash_now(i);
                return;
            }
            match a {
                Action::Persist(r) => self.orchs[i].unsynced.push(r),
                Action::Send { to, message } => {
                    self.sync_orch(i);
                    self.send(i, &to, message);
                }
                Action::Reply { request, reply } => {
                    self.sync_orch(i);
                    self.on_reply(i, request, reply);
                }
            }
        }
        self.sync_orch(i);
        if let Some(m) = &self.orchs[i].m {
            let stale = m.stats().stale_messages;
            if stale > self.orchs[i].stale_seen {
                self.orchs[i].stale_seen = stale;
                self.mark("stale-result-dropped");
            }
        }
        self.rearm(i);
    }

    fn on_reply(&mut self, orch: usize, request: u64, reply: Reply) {
        let Some(o) = self.pending_submits.remove(&request) else { return };
        debug_assert_eq!(o, orch);
        if let Reply::Submitted { job_id, .. } = reply {
            // The client now knows about the job: it must never be lost.
            let (job_type, count) =
                match self.orchs[orch].synced.get(&("jobs".to_string(), job_id.clone())) {
                    Some(Record::Job(j)) => (j.job.job_type.clone(), j.job.count),
                    _ => {
                        self.violation =
                            Some(format!("job {job_id} acknowledged before it was durable"));
                        (JobType::Batch, 1)
                    }
                };
            self.acked_order.push(job_id.clone());
            self.acked.insert(job_id, Acked { orch, job_type, count });
        }
    }

    /// Group commit: everything persisted so far becomes durable. Checks the cluster-wide
    /// invariants on the newly durable records.
    fn sync_orch(&mut self, i: usize) {
        let records = std::mem::take(&mut self.orchs[i].unsynced);
        for r in records {
            self.observe(&r);
            let (ks, k) = r.key();
            self.orchs[i].synced.insert((ks.to_string(), k), r);
        }
    }

    fn observe(&mut self, r: &Record) {
        match r {
            Record::Job(j) => {
                let s = j.job.state.state_type;
                if let Some(prev) = self.terminal_seen.get(&j.job.id) {
                    if *prev != s {
                        self.violation =
                            Some(format!("job {} left terminal state {prev} for {s}", j.job.id));
                    }
                } else if s.is_terminal() {
                    self.terminal_seen.insert(j.job.id.clone(), s);
                    self.mark(if s == JobStateType::Completed {
                        "job-completed"
                    } else {
                        "job-terminal-other"
                    });
                    if s == JobStateType::Completed {
                        self.check_completion(&j.job);
                    }
                    if s == JobStateType::Failed {
                        self.mark("job-failed");
                        if j.job.state.message.contains("not enough nodes") {
                            self.mark("queue-timeout");
                        }
                        if j.job.state.message.contains("(the limit)") {
                            self.mark("retry-limit");
                        }
                    }
                }
            }
            Record::Execution(e) => {
                let id = &e.execution.id;
                let s = e.state();
                self.exec_states
                    .entry(e.execution.job_id.clone())
                    .or_default()
                    .insert(id.clone(), s);
                if let Some(prev) = self.exec_terminal_seen.get(id) {
                    if *prev != s {
                        self.violation = Some(format!(
                            "execution {id} left terminal state {prev} for {s} (a stale attempt was accepted)"
                        ));
                    }
                } else if s.is_terminal() {
                    self.exec_terminal_seen.insert(id.clone(), s);
                    match e.end {
                        Some(End::BidTimedOut) => self.mark("bid-timeout"),
                        Some(End::TimedOut) => self.mark("exec-timeout"),
                        Some(End::NodeLost) => {
                            self.mark("node-lost");
                            self.node_lost_jobs.insert(e.execution.job_id.clone());
                        }
                        Some(End::Refused { retryable: true }) => self.mark("capacity-refusal"),
                        _ => {}
                    }
                }
                if s == ExecutionStateType::AskForBid
                    && e.execution.revision == 1
                    && self.node_lost_jobs.contains(&e.execution.job_id)
                {
                    self.mark("retry-after-node-loss");
                }
                if s == ExecutionStateType::Completed {
                    let job = e.execution.job_id.clone();
                    let set = self.completions.entry(job.clone()).or_default();
                    set.insert(id.clone());
                    let n = set.len();
                    if let Some(a) = self.acked.get(&job)
                        && a.job_type == JobType::Batch
                        && n as i64 > a.count
                    {
                        self.violation = Some(format!(
                            "job {job}: {n} completed executions counted for Count {}",
                            a.count
                        ));
                    }
                }
            }
            _ => {}
        }
    }

    /// A job recorded Completed must have earned it: `Count` completed partitions (batch),
    /// or every execution completed (ops).
    fn check_completion(&mut self, job: &Job) {
        let states = self.exec_states.get(&job.id).cloned().unwrap_or_default();
        let completed =
            states.values().filter(|s| **s == ExecutionStateType::Completed).count() as i64;
        match job.job_type {
            JobType::Batch if completed < job.count => {
                self.violation = Some(format!(
                    "job {} recorded Completed with {completed} completed executions for Count {}",
                    job.id, job.count
                ));
            }
            JobType::Ops if completed < states.len() as i64 => {
                self.violation = Some(format!(
                    "ops job {} recorded Completed but {} of {} executions did not complete",
                    job.id,
                    states.len() as i64 - completed,
                    states.len()
                ));
            }
            _ => {}
        }
    }

    // ------------------------------------------------------------ compute nodes

    fn drain_compute(&mut self, machine: usize) {
        let i = machine - self.o();
        let mut actions = Vec::new();
        if let Some(m) = self.computes[i].m.as_mut() {
            while let Some(a) = m.poll_action() {
                actions.push(a);
            }
        }
        let crash_at = if self.crash_mid_batch.contains(&machine) && !actions.is_empty() {
            Some(self.rng.below(actions.len() as u64) as usize)
        } else {
            None
        };
        for (k, a) in actions.into_iter().enumerate() {
            if crash_at == Some(k) {
                self.crash_now(machine);
                return;
            }
            self.perform(machine, a);
        }
        self.sync_compute(i);
        self.rearm(machine);
    }

    fn sync_compute(&mut self, i: usize) {
        let records = std::mem::take(&mut self.computes[i].unsynced);
        for r in records {
            let (ks, k) = r.key();
            if matches!(r, ComputeRecord::Forget(_)) {
                self.computes[i].synced.remove(&(ks.to_string(), k));
            } else {
                self.computes[i].synced.insert((ks.to_string(), k), r);
            }
        }
    }

    fn plan(&mut self, job: &Job) -> Plan {
        let s = &self.scenario;
        let has_timeout =
            job.task().is_some_and(|t| t.timeouts().effective_execution_timeout() > 0);
        let outcome = if has_timeout && self.rng.chance(s.task_hang) {
            Outcome::Hang
        } else if self.rng.chance(s.task_failure) {
            let kinds = [FailureKind::TaskFailed, FailureKind::OutOfMemory, FailureKind::OutOfFuel];
            Outcome::Fail(kinds[self.rng.below(3) as usize])
        } else if self.rng.chance(0.1) {
            Outcome::Exit(1 + self.rng.below(3) as i64)
        } else {
            Outcome::Exit(0)
        };
        Plan {
            prepare: Duration::from_millis(self.rng.below(5_000)),
            run: Duration::from_millis(100 + self.rng.below(20_000)),
            outcome,
            publish: Duration::from_millis(self.rng.below(3_000)),
            publish_fails: self.rng.chance(0.02),
        }
    }

    fn perform(&mut self, machine: usize, a: ComputeAction) {
        let i = machine - self.o();
        let epoch = self.computes[i].epoch;
        match a {
            ComputeAction::Persist(r) => self.computes[i].unsynced.push(r),
            ComputeAction::Send { to, message } => {
                self.sync_compute(i);
                self.send(machine, &to, message);
            }
            ComputeAction::Probe { exec, .. } => {
                self.push(
                    self.now,
                    Event::Work { machine, exec: exec.execution_id, kind: WorkKind::Probe, epoch },
                );
            }
            ComputeAction::Prepare { exec, job, .. } => {
                self.computes[i].held.insert(exec.execution_id.clone(), exec.job_id.clone());
                let plan = self.plan(&job);
                let at = self.now + plan.prepare;
                self.computes[i].plans.insert(exec.execution_id.clone(), plan);
                self.computes[i].work.insert(exec.execution_id.clone(), epoch);
                self.push(
                    at,
                    Event::Work {
                        machine,
                        exec: exec.execution_id,
                        kind: WorkKind::Prepared,
                        epoch,
                    },
                );
            }
            ComputeAction::Run { exec } => {
                // At most one Run per (execution, attempt), whatever arrives twice or late.
                let runs = self.runs.entry((exec.execution_id.clone(), exec.attempt)).or_default();
                *runs += 1;
                if *runs > 1 {
                    self.violation = Some(format!(
                        "execution {} attempt {} was run {} times",
                        exec.execution_id, exec.attempt, runs
                    ));
                }
                let plan = self.computes[i].plans.get(&exec.execution_id).cloned();
                if let Some(plan) = plan
                    && !matches!(plan.outcome, Outcome::Hang)
                {
                    self.push(
                        self.now + plan.run,
                        Event::Work {
                            machine,
                            exec: exec.execution_id,
                            kind: WorkKind::RunDone,
                            epoch,
                        },
                    );
                }
            }
            ComputeAction::Publish { exec } => {
                let d = self.computes[i]
                    .plans
                    .get(&exec.execution_id)
                    .map(|p| p.publish)
                    .unwrap_or_default();
                self.push(
                    self.now + d,
                    Event::Work {
                        machine,
                        exec: exec.execution_id,
                        kind: WorkKind::Published,
                        epoch,
                    },
                );
            }
            ComputeAction::Cancel { exec } => {
                self.computes[i].work.remove(&exec.execution_id);
            }
            ComputeAction::Release { exec } => {
                // Releasing what this incarnation never held is fine: after a restart it
                // cleans up what an earlier one left.
                self.computes[i].held.remove(&exec.execution_id);
                self.computes[i].plans.remove(&exec.execution_id);
                self.mark("released");
            }
            ComputeAction::Adopt { exec, phase, .. } => {
                self.computes[i].held.insert(exec.execution_id.clone(), exec.job_id.clone());
                let id = exec.execution_id;
                if self.computes[i].work.contains_key(&id) {
                    self.mark("adopted");
                    // The surviving work finishes from where it was.
                    self.computes[i].work.insert(id.clone(), epoch);
                    let kind = if phase == Phase::Publishing {
                        WorkKind::Published
                    } else {
                        WorkKind::RunDone
                    };
                    let hang = self.computes[i]
                        .plans
                        .get(&id)
                        .is_some_and(|p| matches!(p.outcome, Outcome::Hang));
                    if !hang || phase == Phase::Publishing {
                        let d = Duration::from_millis(self.rng.below(5_000));
                        self.push(self.now + d, Event::Work { machine, exec: id, kind, epoch });
                    }
                } else {
                    self.push(
                        self.now,
                        Event::Work { machine, exec: id, kind: WorkKind::AdoptFailed, epoch },
                    );
                }
            }
        }
    }

    fn on_work(&mut self, machine: usize, exec: String, kind: WorkKind, epoch: u64) {
        let o = self.o();
        let i = machine - o;
        let slot = &self.computes[i];
        if slot.m.is_none() || epoch != slot.epoch {
            return; // the work died with an earlier incarnation (or is re-scheduled by Adopt)
        }
        let t = self.elapsed_ms();
        self.trace.line(format!("{t} work {} {exec} {kind:?}", name(machine, o)));
        let now = self.local(machine);
        let plan = self.computes[i].plans.get(&exec).cloned();
        let running = self.computes[i].work.contains_key(&exec);
        let Some(m) = self.computes[i].m.as_mut() else { return };
        match kind {
            WorkKind::Probe => m.handle_probe_result(now, &exec, Ok(())),
            WorkKind::AdoptFailed => {
                m.handle_adopt_failed(now, &exec, "the work did not survive the restart")
            }
            WorkKind::Prepared if running => m.handle_prepared(now, &exec, Ok(())),
            WorkKind::RunDone if running => {
                let result = match plan.map(|p| p.outcome) {
                    Some(Outcome::Exit(code)) => Ok(WireRunOutput {
                        exit_code: code,
                        stdout: format!("{exec}\n"),
                        ..Default::default()
                    }),
                    Some(Outcome::Fail(kind)) => Err((
                        ExecFailure { kind, message: format!("simulated {}", kind.as_str()) },
                        None,
                    )),
                    _ => return,
                };
                self.computes[i].work.remove(&exec);
                if let Some(m) = self.computes[i].m.as_mut() {
                    m.handle_run_finished(now, &exec, result);
                }
            }
            WorkKind::Published => {
                let fails = plan.is_some_and(|p| p.publish_fails);
                let r = if fails {
                    Err(ExecFailure {
                        kind: FailureKind::PublishFailed,
                        message: "simulated publish failure".into(),
                    })
                } else {
                    Ok(format!(r#"{{"Type":"ipfs","Params":{{"CID":"Qm{exec}"}}}}"#))
                };
                m.handle_published(now, &exec, r);
            }
            _ => {}
        }
        self.drain_compute(machine);
    }

    // ------------------------------------------------------------ crashes

    fn on_crash_event(&mut self, machine: usize) {
        if self.faults_on {
            if self.up(machine) {
                if self.rng.chance(self.scenario.faults.crash_mid_batch) {
                    // Strike in the middle of the machine's next batch of actions.
                    self.crash_mid_batch.insert(machine);
                    self.push(self.now + Duration::from_secs(10), Event::Crash { machine });
                } else {
                    self.crash_now(machine);
                }
            }
            let n = self.o() + self.scenario.computes;
            let every = self.scenario.faults.crash_every;
            let next = self.now + jitter(&mut self.rng, every);
            let m = self.rng.below(n as u64) as usize;
            self.push(next, Event::Crash { machine: m });
        }
    }

    fn crash_now(&mut self, machine: usize) {
        let o = self.o();
        self.crash_mid_batch.remove(&machine);
        if !self.up(machine) {
            return;
        }
        self.trace.line(format!("{} crash {}", self.elapsed_ms(), name(machine, o)));
        if machine < o {
            let s = &mut self.orchs[machine];
            if !s.unsynced.is_empty() {
                self.marks.entry("unsynced-lost").and_modify(|c| *c += 1).or_insert(1);
            }
            s.unsynced.clear();
            s.m = None;
            self.mark("orchestrator-crash");
        } else {
            let i = machine - o;
            let publishing = self.computes[i]
                .m
                .as_ref()
                .is_some_and(|m| m.executions().any(|e| e.phase == Phase::Publishing));
            if publishing {
                self.mark("crash-during-publishing");
            }
            let survives = self.scenario.faults.work_survives;
            let s = &mut self.computes[i];
            if !s.unsynced.is_empty() {
                *self.marks.entry("unsynced-lost").or_default() += 1;
            }
            s.unsynced.clear();
            s.m = None;
            s.held.clear();
            s.epoch += 1;
            let ids: Vec<String> = s.work.keys().cloned().collect();
            for id in ids {
                if !self.rng.chance(survives) {
                    self.computes[i].work.remove(&id);
                }
            }
            self.mark("compute-crash");
        }
        self.timer_at[machine] = None;
        let down = Duration::from_secs(1 + self.rng.below(40));
        self.push(self.now + down, Event::Restart { machine });
    }

    fn restart(&mut self, machine: usize) {
        if self.up(machine) {
            return;
        }
        let o = self.o();
        let now = self.local(machine);
        let t = self.elapsed_ms();
        if machine < o {
            let s = &mut self.orchs[machine];
            let mut records: Vec<Record> = s.synced.values().cloned().collect();
            records.sort_by_key(|r| match r {
                Record::Node(_) | Record::NodeDeleted(_) => 0,
                Record::Job(_) => 1,
                _ => 2,
            });
            s.restarts += 1;
            let seed = self.rng.next_u64();
            let m = Orchestrator::restore(self.orchs[machine].cfg.clone(), seed, now, records);
            self.orchs[machine].stale_seen = m.stats().stale_messages;
            self.orchs[machine].m = Some(m);
            self.mark("orchestrator-restart");
            self.trace.line(format!("{t} restart {}", name(machine, o)));
            self.drain_orch(machine);
        } else {
            let i = machine - o;
            let s = &mut self.computes[i];
            let first = s.synced.is_empty() && s.epoch == 0;
            let m = if first {
                Compute::new(s.cfg.clone(), now)
            } else {
                let records: Vec<ComputeRecord> = s.synced.values().cloned().collect();
                Compute::restore(s.cfg.clone(), now, records)
            };
            s.m = Some(m);
            if !first {
                self.mark("compute-restart");
            }
            self.trace.line(format!("{t} start {}", name(machine, o)));
            self.drain_compute(machine);
        }
    }

    fn end_safety(&mut self) {
        self.trace.line(format!("{} end-safety", self.elapsed_ms()));
        self.faults_on = false;
        self.cut.clear();
        self.crash_mid_batch.clear();
        let n = self.o() + self.scenario.computes;
        for m in 0..n {
            if !self.up(m) && !self.dead.contains(&m) {
                self.push(self.now, Event::Restart { machine: m });
            }
        }
    }

    /// After the liveness phase: every batch/ops job is terminal, and no node still holds
    /// capacity for a finished job.
    fn check_liveness(&self) -> Result<(), String> {
        for (id, a) in &self.acked {
            if !matches!(a.job_type, JobType::Batch | JobType::Ops) {
                continue;
            }
            match self.orchs[a.orch].synced.get(&("jobs".to_string(), id.clone())) {
                Some(Record::Job(j)) if j.job.state.state_type.is_terminal() => {}
                Some(Record::Job(j)) => {
                    let history: Vec<String> = self.orchs[a.orch]
                        .synced
                        .iter()
                        .filter_map(|((ks, k), r)| match r {
                            Record::History(h) if ks == "history" && k.starts_with(id.as_str()) => {
                                Some(h.event.message.clone())
                            }
                            _ => None,
                        })
                        .rev()
                        .take(6)
                        .collect();
                    return Err(format!(
                        "liveness: job {id} ({}) stuck in {} after faults stopped; latest history: {:?}",
                        a.job_type, j.job.state.state_type, history
                    ));
                }
                _ => {
                    return Err(format!(
                        "liveness: acknowledged job {id} missing from its orchestrator's store"
                    ));
                }
            }
        }
        // No work left once the cluster is quiet: every execution the driver was given
        // work for, of a job that has finished, was released.
        for (i, s) in self.computes.iter().enumerate() {
            if let Some((exec, job)) =
                s.held.iter().find(|(_, job)| self.terminal_seen.contains_key(job.as_str()))
            {
                return Err(format!(
                    "liveness: compute c-{i} still holds work for execution {exec} of finished \
                     job {job} (no Release)"
                ));
            }
        }
        for (i, s) in self.computes.iter().enumerate() {
            let Some(m) = &s.m else { continue };
            for e in m.executions() {
                if e.phase == Phase::Terminal {
                    continue;
                }
                let terminal = self.terminal_seen.contains_key(&e.exec.job_id);
                if terminal {
                    return Err(format!(
                        "liveness: compute c-{i} still holds execution {} ({:?}) of finished job {}",
                        e.exec.execution_id, e.phase, e.exec.job_id
                    ));
                }
            }
        }
        Ok(())
    }
}

fn jitter(rng: &mut DetRng, mean: Duration) -> Duration {
    let ms = mean.as_millis() as u64;
    Duration::from_millis(ms / 2 + rng.below(ms + 1))
}

fn exec_tag(m: &Message) -> String {
    match m.exec() {
        Some(e) => format!(" {}#{}", &e.execution_id[..e.execution_id.len().min(10)], e.attempt),
        None => String::new(),
    }
}

fn random_spec(r: &mut DetRng, batch_only: bool) -> String {
    let kind = match r.below(10) {
        _ if batch_only => JOB_KINDS[0],
        0..=5 => JOB_KINDS[0],
        6 => JOB_KINDS[1],
        7 | 8 => JOB_KINDS[2],
        _ => JOB_KINDS[3],
    };
    let mut job = format!("Type: {kind}\n");
    if matches!(kind, "batch" | "service") {
        job.push_str(&format!("Count: {}\n", 1 + r.below(3)));
    }
    match r.below(6) {
        0 => job.push_str("Constraints: [{Key: zone, Operator: '=', Values: [a]}]\n"),
        1 => job.push_str("Constraints: [{Key: favour_zone, Operator: '=', Values: [b]}]\n"),
        2 => job.push_str("Constraints: [{Key: gpu, Operator: exists}]\n"),
        _ => {}
    }
    let cpu = [250, 500, 1000, 2000][r.below(4) as usize];
    let exec_timeout = [0, 0, 15, 60][r.below(4) as usize];
    let queue_timeout = [0, 30, 120, 600][r.below(4) as usize];
    let total = if kind == "batch" && r.chance(0.2) { 900 } else { 0 };
    job.push_str(&format!(
        "Tasks:\n  - Name: main\n    Engine: {{Type: noop}}\n    Publisher: {{Type: ipfs}}\n    Resources: {{CPU: {cpu}m, Memory: 100mb}}\n    Timeouts: {{ExecutionTimeout: {exec_timeout}, QueueTimeout: {queue_timeout}, TotalTimeout: {total}}}\n"
    ));
    job
}
