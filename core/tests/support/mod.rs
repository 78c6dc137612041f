//! An in-process cluster for scenario tests: one orchestrator and N compute nodes wired
//! through message queues the test controls (drop, delay, duplicate, reorder, partition),
//! a manual clock, simulated executors, and record stores that survive restarts.

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use gadus_core::compute::{Compute, ComputeAction, ComputeConfig, ComputeRecord, Phase};
use gadus_core::model::*;
use gadus_core::orchestrator::{
    Action, ExecRecord, NodeAction, Orchestrator, OrchestratorConfig, Record, Reply,
};
use gadus_core::protocol::{ExecFailure, FailureKind, Message, WireRunOutput};

pub const ORCH: &str = "orch";

/// How a node's simulated executor behaves.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// Exit 0 after the run time.
    Succeed,
    /// Exit with this code (still "completed", as in Bacalhau).
    Exit(i64),
    /// Fail with a classified error.
    Fail(FailureKind),
    /// Never finish.
    Hang,
}

#[derive(Clone, Debug)]
pub struct Behavior {
    pub prepare: Duration,
    pub run: Duration,
    pub publish: Duration,
    pub outcome: Outcome,
    pub fail_prepare: bool,
    pub fail_publish: bool,
}

impl Default for Behavior {
    fn default() -> Self {
        Behavior {
            prepare: Duration::from_millis(10),
            run: Duration::from_millis(100),
            publish: Duration::from_millis(10),
            outcome: Outcome::Succeed,
            fail_prepare: false,
            fail_publish: false,
        }
    }
}

#[derive(Clone, Debug)]
pub enum Work {
    Prepared(String),
    RunDone(String),
    Published(String),
}

#[derive(Clone, Debug)]
pub struct InFlight {
    pub at: Timestamp,
    pub seq: u64,
    pub from: String,
    pub to: String,
    pub msg: Message,
}

pub struct Node {
    pub compute: Option<Compute>,
    pub cfg: ComputeConfig,
    pub store: BTreeMap<(String, String), ComputeRecord>,
    pub behavior: Behavior,
    /// Executions whose work is "in the executor" (survives a node restart, like containers).
    pub running: BTreeSet<String>,
}

/// A predicate over messages in flight.
pub type MsgFilter = Box<dyn FnMut(&InFlight) -> bool>;

pub struct Cluster {
    pub now: Timestamp,
    pub orch: Option<Orchestrator>,
    pub orch_cfg: OrchestratorConfig,
    pub orch_store: BTreeMap<(String, String), Record>,
    pub nodes: BTreeMap<String, Node>,
    pub net: Vec<InFlight>,
    pub latency: Duration,
    pub work: Vec<(Timestamp, String, Work)>,
    pub replies: BTreeMap<u64, Reply>,
    next_req: u64,
    seq: u64,
    /// Links that drop everything: (from, to).
    pub cut: BTreeSet<(String, String)>,
    /// Drop messages matching this (then forget it when it returns true once, if `once`).
    pub drop_if: Option<(MsgFilter, bool)>,
    /// Duplicate every message matching this.
    pub dup_if: Option<MsgFilter>,
    pub sent: Vec<(String, String, &'static str)>,
    pub restarts: u64,
    pub steps: u64,
}

pub fn t0() -> Timestamp {
    Timestamp::from_secs(1_700_000_000)
}

pub fn node_name(i: usize) -> String {
    format!("n-{i}")
}

impl Cluster {
    pub fn new(n: usize) -> Cluster {
        Self::with(n, |_| {}, |_| {})
    }

    /// A cluster of `n` nodes (capacity 4 CPU / 4 GB each) after tweaking the configs.
    pub fn with(
        n: usize,
        orch: impl FnOnce(&mut OrchestratorConfig),
        node: impl Fn(&mut ComputeConfig),
    ) -> Cluster {
        let mut orch_cfg = OrchestratorConfig::new(ORCH);
        orch(&mut orch_cfg);
        let now = t0();
        let mut c = Cluster {
            now,
            orch: Some(Orchestrator::new(orch_cfg.clone(), 42)),
            orch_cfg,
            orch_store: BTreeMap::new(),
            nodes: BTreeMap::new(),
            net: Vec::new(),
            latency: Duration::from_millis(1),
            work: Vec::new(),
            replies: BTreeMap::new(),
            next_req: 0,
            seq: 0,
            cut: BTreeSet::new(),
            drop_if: None,
            dup_if: None,
            sent: Vec::new(),
            restarts: 0,
            steps: 0,
        };
        for i in 1..=n {
            c.add_node_with(&node_name(i), &node);
        }
        c.drain();
        c.run_for(Duration::from_millis(50));
        c
    }

    pub fn add_node_with(&mut self, name: &str, tweak: impl Fn(&mut ComputeConfig)) {
        let mut cfg = ComputeConfig::new(
            name,
            Resources::new(4.0, 4_000_000_000, 100_000_000_000, 0),
            vec![ORCH.into()],
        );
        cfg.heartbeat_interval = Duration::from_secs(5);
        tweak(&mut cfg);
        let compute = Compute::new(cfg.clone(), self.now);
        self.nodes.insert(
            name.to_string(),
            Node {
                compute: Some(compute),
                cfg,
                store: BTreeMap::new(),
                behavior: Behavior::default(),
                running: BTreeSet::new(),
            },
        );
        self.drain();
    }

    pub fn orch(&self) -> &Orchestrator {
        self.orch.as_ref().unwrap()
    }

    pub fn compute(&self, name: &str) -> &Compute {
        self.nodes[name].compute.as_ref().unwrap()
    }

    pub fn behavior(&mut self, name: &str) -> &mut Behavior {
        &mut self.nodes.get_mut(name).unwrap().behavior
    }

    // ------------------------------------------------------------ driving

    fn push_msg(&mut self, from: &str, to: &str, msg: Message) {
        self.seq += 1;
        let f = InFlight {
            at: self.now + self.latency,
            seq: self.seq,
            from: from.into(),
            to: to.into(),
            msg,
        };
        self.sent.push((f.from.clone(), f.to.clone(), f.msg.name()));
        if self.cut.contains(&(f.from.clone(), f.to.clone())) {
            return;
        }
        if let Some((pred, once)) = &mut self.drop_if
            && pred(&f)
        {
            if *once {
                self.drop_if = None;
            }
            return;
        }
        if let Some(pred) = &mut self.dup_if
            && pred(&f)
        {
            let mut d = f.clone();
            self.seq += 1;
            d.seq = self.seq;
            d.at = d.at + Duration::from_millis(3);
            self.net.push(d);
        }
        self.net.push(f);
    }

    /// Performs every pending action of every machine.
    pub fn drain(&mut self) {
        loop {
            let mut progressed = false;
            while let Some(a) = self.orch.as_mut().and_then(|o| o.poll_action()) {
                {
                    progressed = true;
                    match a {
                        Action::Persist(r) => {
                            let (ks, k) = r.key();
                            self.orch_store.insert((ks.to_string(), k), r);
                        }
                        Action::Send { to, message } => self.push_msg(ORCH, &to, message),
                        Action::Reply { request, reply } => {
                            self.replies.insert(request, reply);
                        }
                    }
                }
            }
            let names: Vec<String> = self.nodes.keys().cloned().collect();
            for name in names {
                while let Some(a) = self
                    .nodes
                    .get_mut(&name)
                    .unwrap()
                    .compute
                    .as_mut()
                    .and_then(|c| c.poll_action())
                {
                    progressed = true;
                    self.perform(&name, a);
                }
            }
            if !progressed {
                break;
            }
        }
    }

    fn perform(&mut self, name: &str, a: ComputeAction) {
        let now = self.now;
        let node = self.nodes.get_mut(name).unwrap();
        let b = node.behavior.clone();
        match a {
            ComputeAction::Persist(r) => {
                let (ks, k) = r.key();
                if let ComputeRecord::Forget(_) = r {
                    node.store.remove(&(ks.to_string(), k));
                } else {
                    node.store.insert((ks.to_string(), k), r);
                }
            }
            ComputeAction::Send { to, message } => self.push_msg(name, &to, message),
            ComputeAction::Probe { exec, .. } => {
                node.compute.as_mut().unwrap().handle_probe_result(now, &exec.execution_id, Ok(()));
            }
            ComputeAction::Prepare { exec, .. } => {
                node.running.insert(exec.execution_id.clone());
                self.work.push((
                    now + b.prepare,
                    name.to_string(),
                    Work::Prepared(exec.execution_id),
                ));
            }
            ComputeAction::Run { exec } => {
                if !matches!(b.outcome, Outcome::Hang) {
                    self.work.push((
                        now + b.run,
                        name.to_string(),
                        Work::RunDone(exec.execution_id),
                    ));
                }
            }
            ComputeAction::Publish { exec } => {
                self.work.push((
                    now + b.publish,
                    name.to_string(),
                    Work::Published(exec.execution_id),
                ));
            }
            ComputeAction::Release { .. } => {}
            ComputeAction::Cancel { exec } => {
                node.running.remove(&exec.execution_id);
                self.work.retain(|(_, n, w)| !(n == name && work_id(w) == exec.execution_id));
            }
            ComputeAction::Adopt { exec, phase, .. } => {
                if node.running.contains(&exec.execution_id) {
                    // The "container" survived: finish it from where it is.
                    let w = if phase == Phase::Publishing {
                        Work::Published(exec.execution_id)
                    } else {
                        Work::RunDone(exec.execution_id)
                    };
                    if !self.work.iter().any(|(_, n, x)| n == name && work_id(x) == work_id(&w)) {
                        self.work.push((now + b.run, name.to_string(), w));
                    }
                } else {
                    node.compute.as_mut().unwrap().handle_adopt_failed(
                        now,
                        &exec.execution_id,
                        "no such container",
                    );
                }
            }
        }
    }

    fn do_work(&mut self, name: &str, w: Work) {
        let now = self.now;
        let Some(node) = self.nodes.get_mut(name) else { return };
        let b = node.behavior.clone();
        let Some(c) = node.compute.as_mut() else { return };
        match w {
            Work::Prepared(id) => {
                let r = if b.fail_prepare {
                    Err(ExecFailure {
                        kind: FailureKind::InputUnavailable,
                        message: "input not found".into(),
                    })
                } else {
                    Ok(())
                };
                c.handle_prepared(now, &id, r);
            }
            Work::RunDone(id) => {
                node.running.remove(&id);
                let r = match b.outcome {
                    Outcome::Succeed => Ok(WireRunOutput {
                        stdout: format!("hello from {name}\n"),
                        ..Default::default()
                    }),
                    Outcome::Exit(code) => {
                        Ok(WireRunOutput { exit_code: code, ..Default::default() })
                    }
                    Outcome::Fail(kind) => Err((
                        ExecFailure { kind, message: format!("simulated {}", kind.as_str()) },
                        None,
                    )),
                    Outcome::Hang => return,
                };
                c.handle_run_finished(now, &id, r);
            }
            Work::Published(id) => {
                let r = if b.fail_publish {
                    Err(ExecFailure {
                        kind: FailureKind::PublishFailed,
                        message: "store unreachable".into(),
                    })
                } else {
                    Ok(format!(r#"{{"Type":"ipfs","Params":{{"CID":"Qm{id}"}}}}"#))
                };
                c.handle_published(now, &id, r);
            }
        }
    }

    /// The next time anything happens.
    fn next_event(&self) -> Option<Timestamp> {
        let mut t: Option<Timestamp> = None;
        let mut consider = |x: Option<Timestamp>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |t| t.min(x)));
            }
        };
        consider(self.net.iter().map(|m| m.at).min());
        consider(self.work.iter().map(|w| w.0).min());
        consider(self.orch.as_ref().and_then(|o| o.poll_timeout()));
        for n in self.nodes.values() {
            consider(n.compute.as_ref().and_then(|c| c.poll_timeout()));
        }
        t
    }

    /// Processes everything due at `self.now`.
    fn step_now(&mut self) {
        self.steps += 1;
        assert!(
            self.steps < 2_000_000,
            "runaway: 2M steps at {}; in flight: {:?}",
            self.now,
            self.net
                .iter()
                .take(5)
                .map(|m| (m.from.clone(), m.to.clone(), m.msg.name()))
                .collect::<Vec<_>>()
        );
        let now = self.now;
        // Network.
        self.net.sort_by_key(|m| (m.at, m.seq));
        while let Some(pos) = self.net.iter().position(|m| m.at <= now) {
            let m = self.net.remove(pos);
            self.deliver(m);
            self.drain();
        }
        // Executors.
        self.work.sort_by_key(|w| w.0);
        while let Some(pos) = self.work.iter().position(|w| w.0 <= now) {
            let (_, name, w) = self.work.remove(pos);
            self.do_work(&name, w);
            self.drain();
        }
        // Timers.
        if let Some(o) = self.orch.as_mut()
            && o.poll_timeout().is_some_and(|t| t <= now)
        {
            o.handle_timeout(now);
        }
        for n in self.nodes.values_mut() {
            if let Some(c) = n.compute.as_mut()
                && c.poll_timeout().is_some_and(|t| t <= now)
            {
                c.handle_timeout(now);
            }
        }
        self.drain();
        self.check();
    }

    fn deliver(&mut self, m: InFlight) {
        let now = self.now;
        if m.to == ORCH {
            if let Some(o) = self.orch.as_mut() {
                o.handle_message(now, &m.from, m.msg);
            }
        } else if let Some(n) = self.nodes.get_mut(&m.to)
            && let Some(c) = n.compute.as_mut()
        {
            c.handle_message(now, &m.from, m.msg);
        }
    }

    pub fn check(&self) {
        if let Some(o) = &self.orch {
            o.check_invariants().unwrap_or_else(|e| panic!("orchestrator invariant: {e}"));
        }
        for (name, n) in &self.nodes {
            if let Some(c) = &n.compute {
                c.check_invariants().unwrap_or_else(|e| panic!("node {name} invariant: {e}"));
            }
        }
    }

    /// Advances the clock by `d`, processing every event on the way.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        self.drain();
        loop {
            match self.next_event() {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    self.step_now();
                }
                _ => break,
            }
        }
        self.now = end;
        self.step_now();
    }

    /// Runs until `cond` holds (checked after every event) or `limit` passes; returns whether
    /// it held.
    pub fn run_until(&mut self, limit: Duration, mut cond: impl FnMut(&Cluster) -> bool) -> bool {
        let end = self.now + limit;
        self.drain();
        loop {
            if cond(self) {
                return true;
            }
            match self.next_event() {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    self.step_now();
                }
                _ => {
                    self.now = end;
                    self.step_now();
                    return cond(self);
                }
            }
        }
    }

    // ------------------------------------------------------------ API

    pub fn submit_job(&mut self, job: Job) -> Reply {
        self.next_req += 1;
        let req = self.next_req;
        self.orch.as_mut().unwrap().submit(self.now, req, job);
        self.drain();
        self.replies.remove(&req).expect("submit replies synchronously")
    }

    pub fn submit(&mut self, yaml: &str) -> String {
        let job = Job::from_yaml(yaml.as_bytes()).unwrap();
        match self.submit_job(job) {
            Reply::Submitted { job_id, .. } => job_id,
            other => panic!("submission refused: {other:?}"),
        }
    }

    pub fn stop(&mut self, job_id: &str) -> Reply {
        self.next_req += 1;
        let req = self.next_req;
        self.orch.as_mut().unwrap().stop(self.now, req, job_id, "test");
        self.drain();
        self.replies.remove(&req).unwrap()
    }

    pub fn node_action(&mut self, node: &str, action: NodeAction) -> Reply {
        self.next_req += 1;
        let req = self.next_req;
        self.orch.as_mut().unwrap().node_action(self.now, req, node, action);
        self.drain();
        self.replies.remove(&req).unwrap()
    }

    // ------------------------------------------------------------ reading the store

    pub fn job(&self, id: &str) -> Job {
        match self.orch_store.get(&("jobs".to_string(), id.to_string())) {
            Some(Record::Job(j)) => (*j.job).clone(),
            _ => panic!("job {id} not in the store"),
        }
    }

    pub fn state(&self, id: &str) -> JobStateType {
        self.job(id).state.state_type
    }

    pub fn execs(&self, job_id: &str) -> Vec<ExecRecord> {
        let mut v: Vec<ExecRecord> = self
            .orch_store
            .values()
            .filter_map(|r| match r {
                Record::Execution(e) if e.execution.job_id == job_id => Some((**e).clone()),
                _ => None,
            })
            .collect();
        v.sort_by_key(|e| e.attempt);
        v
    }

    pub fn history(&self, job_id: &str) -> Vec<JobHistory> {
        let mut v: Vec<JobHistory> = self
            .orch_store
            .values()
            .filter_map(|r| match r {
                Record::History(h) if h.job_id == job_id => Some((**h).clone()),
                _ => None,
            })
            .collect();
        v.sort_by_key(|h| h.seq_num);
        v
    }

    pub fn history_text(&self, job_id: &str) -> String {
        self.history(job_id).iter().map(|h| h.event.message.clone()).collect::<Vec<_>>().join("\n")
    }

    pub fn wait_terminal(&mut self, job_id: &str, limit: Duration) -> JobStateType {
        let id = job_id.to_string();
        self.run_until(limit, |c| c.state(&id).is_terminal());
        self.state(job_id)
    }

    // ------------------------------------------------------------ faults

    pub fn partition(&mut self, node: &str) {
        self.cut.insert((ORCH.into(), node.into()));
        self.cut.insert((node.into(), ORCH.into()));
    }

    pub fn heal(&mut self, node: &str) {
        self.cut.remove(&(ORCH.to_string(), node.to_string()));
        self.cut.remove(&(node.to_string(), ORCH.to_string()));
    }

    pub fn drop_next(&mut self, pred: impl FnMut(&InFlight) -> bool + 'static) {
        self.drop_if = Some((Box::new(pred), true));
    }

    pub fn drop_all(&mut self, pred: impl FnMut(&InFlight) -> bool + 'static) {
        self.drop_if = Some((Box::new(pred), false));
    }

    /// Kills a compute node: its in-memory state and unsent messages are gone; its store and
    /// its "containers" remain.
    pub fn crash_node(&mut self, name: &str) {
        let n = self.nodes.get_mut(name).unwrap();
        n.compute = None;
        self.net.retain(|m| m.from != name && m.to != name);
        self.work.retain(|(_, w, x)| !(w == name && matches!(x, Work::Prepared(_))));
    }

    pub fn restart_node(&mut self, name: &str) {
        let n = self.nodes.get_mut(name).unwrap();
        let records: Vec<ComputeRecord> = n.store.values().cloned().collect();
        n.compute = Some(Compute::restore(n.cfg.clone(), self.now, records));
        self.restarts += 1;
        self.drain();
    }

    /// Kills the orchestrator: pending messages to it are lost.
    pub fn crash_orchestrator(&mut self) {
        self.orch = None;
        self.net.retain(|m| m.to != ORCH && m.from != ORCH);
    }

    pub fn restart_orchestrator(&mut self) {
        let mut records: Vec<Record> = self.orch_store.values().cloned().collect();
        records.sort_by_key(|r| match r {
            Record::Node(_) | Record::NodeDeleted(_) => 0,
            Record::Job(_) => 1,
            _ => 2,
        });
        self.orch = Some(Orchestrator::restore(
            self.orch_cfg.clone(),
            4242 + self.restarts,
            self.now,
            records,
        ));
        self.restarts += 1;
        self.drain();
    }
}

fn work_id(w: &Work) -> String {
    match w {
        Work::Prepared(id) | Work::RunDone(id) | Work::Published(id) => id.clone(),
    }
}

/// A batch job running the noop engine.
pub fn batch(count: u32) -> String {
    format!(
        "Type: batch\nCount: {count}\nTasks:\n  - Name: main\n    Engine: {{Type: noop}}\n    Publisher: {{Type: ipfs}}\n    Resources: {{CPU: 500m, Memory: 100mb}}\n"
    )
}

pub fn job_yaml(kind: &str, extra_job: &str, extra_task: &str) -> String {
    let resources = if extra_task.contains("Resources:") {
        ""
    } else {
        "    Resources: {CPU: 500m, Memory: 100mb}\n"
    };
    format!(
        "Type: {kind}\n{extra_job}Tasks:\n  - Name: main\n    Engine: {{Type: noop}}\n{resources}{extra_task}"
    )
}

pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}
