//! The schedulers: given a job and its executions, decide what to change.
//!
//! | type | semantics |
//! |---|---|
//! | `batch` | `Count` partitions, each completed once; failed attempts retried on another node with exponential back-off up to the attempt limit; job Completed when every partition is |
//! | `service` | like batch, but a finished replica is replaced: `Count` replicas keep running; never completes |
//! | `ops` | one execution on every matching node, started without a bid round; Completed when all finish, Failed if any fails |
//! | `daemon` | like ops, including nodes that join later; failed executions restart with back-off; never completes |
//!
//! When fewer suitable nodes exist than needed, the job waits (state `Queued` if none fit) and
//! looks again after the queue back-off or when a node joins or frees capacity, until its
//! QueueTimeout expires; then it fails with the reason for every node.

use std::collections::BTreeMap;
use std::time::Duration;

use super::selection::{self, NodeUse, SearchParams};
use super::state::End;
use super::{Orchestrator, Timer};
use crate::model::{
    Evaluation, ExecutionDesiredStateType, ExecutionStateType, JobStateType, JobType, Timestamp,
};
use crate::mutants::Mutant;

pub(super) fn evaluate(
    o: &mut Orchestrator,
    now: Timestamp,
    job_id: &str,
    _eval: &Evaluation,
) -> String {
    let Some(job) = o.jobs.get(job_id) else { return "job not found".into() };
    let state = job.rec.job.state.state_type;
    if state.is_terminal() {
        if !o.cfg.mutants.on(Mutant::StopLeavesExecutions) {
            stop_live(o, now, job_id, &format!("job is {state}"));
        }
        return format!("job is {state}");
    }
    if let Some(total) = o.total_timeout(job_id) {
        let created = Timestamp(job.rec.job.create_time);
        if now >= created + total {
            let msg = format!(
                "Job timed out: not finished within its TotalTimeout of {}s",
                total.as_secs()
            );
            fail_job(o, now, job_id, &msg);
            return msg;
        }
    }
    match o.jobs[job_id].rec.job.job_type.clone() {
        JobType::Batch => batch_or_service(o, now, job_id, true),
        JobType::Service => batch_or_service(o, now, job_id, false),
        JobType::Ops => ops(o, now, job_id),
        JobType::Daemon => daemon(o, now, job_id),
        other => {
            let msg = format!("job type {other:?} has no scheduler");
            fail_job(o, now, job_id, &msg);
            msg
        }
    }
}

fn fail_job(o: &mut Orchestrator, now: Timestamp, job_id: &str, msg: &str) {
    o.set_job_state(now, job_id, JobStateType::Failed, msg);
    stop_live(o, now, job_id, "job failed");
}

fn stop_live(o: &mut Orchestrator, now: Timestamp, job_id: &str, reason: &str) {
    let live: Vec<String> = o.jobs[job_id]
        .execs
        .iter()
        .filter(|id| o.execs.get(*id).is_some_and(|e| !e.is_terminal()))
        .cloned()
        .collect();
    for id in live {
        o.stop_exec(now, &id, reason);
    }
}

#[derive(Default)]
struct Part {
    completed: bool,
    live: Vec<String>,
    failures: u32,
    last_failure: Option<Timestamp>,
    last_error: String,
}

fn delay_eval(o: &mut Orchestrator, job_id: &str, at: Timestamp) {
    let Some(j) = o.jobs.get_mut(job_id) else { return };
    if j.eval_at.is_none_or(|t| at < t) {
        j.eval_at = Some(at);
        o.timers.arm(at, Timer::Eval(job_id.to_string()));
    }
}

fn queue_timeout(o: &Orchestrator, job_id: &str) -> Duration {
    let t = o.jobs[job_id].rec.job.task().map(|t| t.timeouts().queue_timeout).unwrap_or(0);
    super::secs(t)
}

/// Search parameters for one job.
fn params<'a>(
    o: &Orchestrator,
    now: Timestamp,
    uses: &'a BTreeMap<String, NodeUse>,
    enough: usize,
) -> SearchParams<'a> {
    SearchParams {
        oversubscription: o.cfg.oversubscription,
        rank_jitter: o.cfg.rank_jitter,
        enough,
        refusal_horizon: now - o.cfg.queue_backoff,
        uses,
    }
}

/// Too few nodes: queue the job, or fail it when its QueueTimeout has run out.
/// Returns the evaluation comment.
fn not_enough(
    o: &mut Orchestrator,
    now: Timestamp,
    job_id: &str,
    msg: String,
    none_fit: bool,
    transient: bool,
) -> String {
    let mut qt = queue_timeout(o, job_id);
    if qt.is_zero() && transient {
        // No QueueTimeout, but some node could take the job once its load or connectivity
        // changes: wait for it (a burst must not fail jobs that would run a minute later).
        // Jobs no node could ever run still fail at once.
        qt = o.cfg.busy_queue_timeout;
    }
    let since = o.jobs[job_id].rec.queued_since.unwrap_or(now);
    if now >= since + qt {
        fail_job(o, now, job_id, &msg);
        return msg;
    }
    if o.jobs[job_id].rec.queued_since.is_none() {
        if let Some(j) = o.jobs.get_mut(job_id) {
            j.rec.queued_since = Some(now);
        }
        o.persist_job(job_id);
    }
    o.queued.insert(job_id.to_string());
    if none_fit {
        o.set_job_state(now, job_id, JobStateType::Queued, &msg);
    }
    let next = (now + o.cfg.queue_backoff).min(since + qt);
    delay_eval(o, job_id, next);
    msg
}

fn batch_or_service(o: &mut Orchestrator, now: Timestamp, job_id: &str, is_batch: bool) -> String {
    let count = u32::try_from(o.jobs[job_id].rec.job.count.max(0)).unwrap_or(0);
    let failed_counts = o.cfg.mutants.on(Mutant::FailedCountsAsCompleted);
    let mut parts: Vec<Part> = (0..count).map(|_| Part::default()).collect();
    let mut surplus = Vec::new();
    for id in &o.jobs[job_id].execs {
        let Some(e) = o.execs.get(id) else { continue };
        let Some(part) = parts.get_mut(e.partition as usize) else {
            if !e.is_terminal() {
                surplus.push(id.clone());
            }
            continue;
        };
        let state = e.state();
        if is_batch
            && (state == ExecutionStateType::Completed
                || (failed_counts && state == ExecutionStateType::Failed))
        {
            part.completed = true;
        } else if !e.is_terminal() {
            part.live.push(id.clone());
        } else if e.end.is_some_and(End::counts_as_attempt)
            || (!is_batch && e.end == Some(End::Completed))
        {
            // A service replica that exits is restarted like a failed one: with back-off, so
            // a task that exits at once does not spin.
            part.failures += 1;
            if e.ended_at >= part.last_failure {
                part.last_failure = e.ended_at;
                part.last_error = e.execution.compute_state.message.clone();
            }
        }
    }
    for id in surplus {
        o.stop_exec(now, &id, "partition no longer needed (Count lowered)");
    }
    // Completed partitions need nothing else running.
    for p in parts.iter().filter(|p| p.completed) {
        for id in &p.live {
            o.stop_exec(now, id, "partition already completed by another execution");
        }
    }
    if is_batch && parts.iter().all(|p| p.completed) {
        let msg = format!("Job completed: {count} of {count} partitions succeeded");
        o.set_job_state(now, job_id, JobStateType::Completed, &msg);
        return msg;
    }
    // Approvals: at most one execution per partition may run.
    for p in parts.iter().filter(|p| !p.completed && !p.live.is_empty()) {
        let running = p.live.iter().find(|id| {
            o.execs[*id].execution.desired_state.state_type == ExecutionDesiredStateType::Running
        });
        if running.is_some() {
            continue;
        }
        let bid = p
            .live
            .iter()
            .find(|id| o.execs[*id].state() == ExecutionStateType::AskForBidAccepted)
            .cloned();
        if let Some(bid) = bid {
            o.approve_exec(now, &bid);
            for other in p.live.iter().filter(|id| **id != bid) {
                o.stop_exec(now, other, "another node's bid was accepted");
            }
        }
    }
    // Missing partitions.
    let mut ready = Vec::new();
    let mut wake: Option<Timestamp> = None;
    for (i, p) in parts.iter().enumerate() {
        if p.completed || !p.live.is_empty() {
            continue;
        }
        if is_batch && p.failures >= o.cfg.retry.max_attempts {
            let msg = format!(
                "Job failed: partition {i} failed {} times (the limit); last error: {}",
                p.failures, p.last_error
            );
            fail_job(o, now, job_id, &msg);
            return msg;
        }
        if let Some(last) = p.last_failure {
            let at = last + o.cfg.retry.backoff(p.failures.min(30));
            if at > now {
                wake = Some(wake.map_or(at, |w: Timestamp| w.min(at)));
                continue;
            }
        }
        ready.push(i as u32);
    }
    if let Some(at) = wake {
        delay_eval(o, job_id, at);
    }
    if ready.is_empty() {
        return "nothing to place".into();
    }
    place(o, now, job_id, &ready)
}

/// Places one execution per partition in `ready` on the best distinct nodes.
fn place(o: &mut Orchestrator, now: Timestamp, job_id: &str, ready: &[u32]) -> String {
    let job = &o.jobs[job_id];
    let uses = selection::node_uses(job, &o.execs);
    let enough = if job.constraints.soft.is_empty() {
        ready.len() * o.cfg.placement_sample.max(1)
    } else {
        0
    };
    let p = params(o, now, &uses, enough);
    let search = selection::search(&o.node_order, &o.nodes, job, &p, &mut o.rng);
    let eval_id = o.current_eval_id.clone();
    let placed = search.suitable.len().min(ready.len());
    let chosen: Vec<String> = search.suitable.iter().take(placed).map(|c| c.node.clone()).collect();
    for (node, part) in chosen.iter().zip(ready) {
        o.create_exec(now, job_id, node, *part, true, &eval_id);
    }
    if placed < ready.len() {
        // Re-scan everything for the user's "why not" list if we stopped early.
        let search = if search.scanned_all {
            search
        } else {
            let p = params(o, now, &uses, 0);
            selection::search(&o.node_order, &o.nodes, &o.jobs[job_id], &p, &mut o.rng)
        };
        let msg = selection::not_enough_nodes(ready.len(), &search);
        let transient = search.unsuitable.iter().any(|u| u.2);
        return not_enough(o, now, job_id, msg, placed == 0, transient);
    }
    if let Some(j) = o.jobs.get_mut(job_id)
        && j.rec.queued_since.take().is_some()
    {
        o.queued.remove(job_id);
        o.persist_job(job_id);
    }
    format!("placed {placed} execution(s)")
}

fn ops(o: &mut Orchestrator, now: Timestamp, job_id: &str) -> String {
    if !o.jobs[job_id].rec.ops_dispatched {
        let job = &o.jobs[job_id];
        let uses = selection::node_uses(job, &o.execs);
        let p = params(o, now, &uses, 0);
        let search = selection::search(&o.node_order, &o.nodes, job, &p, &mut o.rng);
        if search.suitable.is_empty() {
            let msg = selection::not_enough_nodes(1, &search);
            let transient = search.unsuitable.iter().any(|u| u.2);
            return not_enough(o, now, job_id, msg, true, transient);
        }
        let eval_id = o.current_eval_id.clone();
        let nodes: Vec<String> = search.suitable.iter().map(|c| c.node.clone()).collect();
        if let Some(j) = o.jobs.get_mut(job_id) {
            j.rec.ops_dispatched = true;
            j.rec.queued_since = None;
        }
        o.queued.remove(job_id);
        for node in &nodes {
            o.create_exec(now, job_id, node, 0, false, &eval_id);
        }
        return format!("ops job started on {} node(s)", nodes.len());
    }
    let execs: Vec<_> = o.jobs[job_id].execs.iter().filter_map(|id| o.execs.get(id)).collect();
    if execs.iter().any(|e| !e.is_terminal()) {
        return "waiting for executions".into();
    }
    let failed: Vec<String> = execs
        .iter()
        .filter(|e| e.state() != ExecutionStateType::Completed)
        .map(|e| format!("node {}: {}", e.node(), e.execution.compute_state.message))
        .collect();
    let total = execs.len();
    if failed.is_empty() {
        let msg = format!("Job completed: succeeded on all {total} node(s)");
        o.set_job_state(now, job_id, JobStateType::Completed, &msg);
        msg
    } else {
        let msg =
            format!("Job failed on {} of {total} node(s): {}", failed.len(), failed.join("; "));
        o.set_job_state(now, job_id, JobStateType::Failed, &msg);
        msg
    }
}

fn daemon(o: &mut Orchestrator, now: Timestamp, job_id: &str) -> String {
    let job = &o.jobs[job_id];
    let mut uses = selection::node_uses(job, &o.execs);
    // Daemons retry on the same node forever (with back-off), so past failures never exclude.
    let mut backoff: BTreeMap<String, Timestamp> = BTreeMap::new();
    for id in &job.execs {
        let Some(e) = o.execs.get(id) else { continue };
        if let (Some(end), Some(at)) = (e.end, e.ended_at)
            && (end.counts_as_attempt() || end == End::Completed)
        {
            let failures = uses.get(e.node()).map_or(1, |u| u.ran);
            let until = at + o.cfg.retry.backoff(failures.min(30));
            let slot = backoff.entry(e.node().to_string()).or_insert(until);
            *slot = (*slot).max(until);
        }
    }
    for u in uses.values_mut() {
        u.failures = 0;
    }
    let p = params(o, now, &uses, 0);
    let search = selection::search(&o.node_order, &o.nodes, job, &p, &mut o.rng);
    let eval_id = o.current_eval_id.clone();
    let mut started = 0;
    let mut wake: Option<Timestamp> = None;
    let nodes: Vec<String> = search.suitable.iter().map(|c| c.node.clone()).collect();
    for node in nodes {
        if let Some(until) = backoff.get(&node).copied().filter(|t| *t > now) {
            wake = Some(wake.map_or(until, |w: Timestamp| w.min(until)));
            continue;
        }
        o.create_exec(now, job_id, &node, 0, false, &eval_id);
        started += 1;
    }
    if let Some(at) = wake {
        delay_eval(o, job_id, at);
    }
    format!("daemon started on {started} new node(s)")
}
