//! Node feasibility and ranking: which nodes may run a job, which are best, and — when none
//! will do — exactly why each was unsuitable.
//!
//! Ranks follow Bacalhau's ranker chain (features +10, hard labels +10, per-job maximum +10,
//! each matching `favour_` label +10, never ran this job +30, free capacity 0–80, seeded
//! jitter 0–5). Instead of scoring every node for every job, a placement scans the node list
//! from a random offset and stops once it holds enough suitable candidates (Nomad's
//! "limit" idea), so placement cost does not grow with the cluster; jobs with soft
//! preferences and ops/daemon jobs scan everything.

use std::collections::BTreeMap;

use super::state::{End, ExecRecord, JobRec, NodeRec};
use crate::model::{Resources, Timestamp};
use crate::rng::DetRng;

/// What a job has done on one node so far.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct NodeUse {
    pub live: bool,
    pub excluded: bool,
    pub failures: u32,
    pub ran: u32,
    /// Latest retryable refusal (capacity): skip the node until the next evaluation round.
    pub refused_at: Option<Timestamp>,
}

/// Per-node history of one job, built once per evaluation.
pub(crate) fn node_uses(
    job: &JobRec,
    execs: &BTreeMap<String, std::sync::Arc<ExecRecord>>,
) -> BTreeMap<String, NodeUse> {
    let mut out: BTreeMap<String, NodeUse> = BTreeMap::new();
    for id in &job.execs {
        let Some(e) = execs.get(id) else { continue };
        let u = out.entry(e.node().to_string()).or_default();
        u.ran += 1;
        if !e.is_terminal() {
            u.live = true;
        }
        match e.end {
            Some(end) if end.excludes_node() => u.excluded = true,
            Some(End::Refused { retryable: true }) => {
                u.refused_at = u.refused_at.max(e.ended_at);
            }
            Some(end) if end.counts_as_attempt() => u.failures += 1,
            _ => {}
        }
    }
    out
}

/// A suitable node and its rank.
#[derive(Clone, Debug)]
pub(crate) struct Candidate {
    pub node: String,
    pub rank: i64,
}

/// The result of a node search.
#[derive(Clone, Debug, Default)]
pub(crate) struct Search {
    pub suitable: Vec<Candidate>,
    /// Why each rejected node was unsuitable (complete only when `scanned_all`), and whether
    /// the reason may pass (capacity, connectivity) rather than last (labels, engines).
    pub unsuitable: Vec<(String, String, bool)>,
    pub scanned_all: bool,
    pub total_nodes: usize,
}

/// Tuning for the search.
pub(crate) struct SearchParams<'a> {
    pub oversubscription: f64,
    pub rank_jitter: u64,
    /// Stop after this many suitable nodes (0 = scan everything).
    pub enough: usize,
    /// Ignore retryable refusals at or before this time (a new round since then).
    pub refusal_horizon: Timestamp,
    pub uses: &'a BTreeMap<String, NodeUse>,
}

/// Checks one node; `Ok(rank)` or `Err((reason, transient))`.
pub(crate) fn assess(
    node: &NodeRec,
    job: &JobRec,
    p: &SearchParams<'_>,
    rng: &mut DetRng,
) -> Result<i64, (String, bool)> {
    assess_static(node, job)?;
    assess_load(node, job, p, rng)
}

/// Reasons that last: the node can never run this job as configured.
fn assess_static(node: &NodeRec, job: &JobRec) -> Result<(), (String, bool)> {
    let fixed = |r: String| Err((r, false));
    if node.advert.engines.is_empty() {
        return fixed("not a compute node".into());
    }
    if node.state.membership == crate::model::NodeMembership::Rejected {
        return fixed("membership is REJECTED".into());
    }
    if !node.advert.engines.contains(&job.engine) {
        return fixed(format!("does not support engine {:?}", job.engine));
    }
    if !job.publisher.is_empty() && !node.advert.publishers.contains(&job.publisher) {
        return fixed(format!("does not support publisher {:?}", job.publisher));
    }
    for s in &job.storages {
        if !node.advert.storages.iter().any(|e| e == s) {
            return fixed(format!("does not support input source {s:?}"));
        }
    }
    let labels = &node.state.info.labels;
    if let Some(r) = job.constraints.hard.iter().find(|r| !r.matches(labels)) {
        return fixed(format!("labels do not match constraint {r}"));
    }
    if !job.resources.fits_in(&node.max_job) {
        let over = job.resources.exceeding(&node.max_job).join(", ");
        return fixed(format!(
            "job needs more {over} than the node allows per job ({})",
            node.max_job
        ));
    }
    Ok(())
}

/// Reasons that may pass: load, connectivity, approval, this job's own history there.
fn assess_load(
    node: &NodeRec,
    job: &JobRec,
    p: &SearchParams<'_>,
    rng: &mut DetRng,
) -> Result<i64, (String, bool)> {
    let passing = |r: String| Err((r, true));
    if node.state.membership != crate::model::NodeMembership::Approved {
        return passing(format!("membership is {}", node.state.membership));
    }
    if !node.is_schedulable() {
        return passing("disconnected".into());
    }
    let labels = &node.state.info.labels;
    let used = node.max.sub(&node.available).add(&node.queued).add(&node.promised_total());
    if !used.add(&job.resources).fits_in(&node.max.scale(p.oversubscription)) {
        return passing(format!(
            "not enough capacity: job needs {}, node has {} available",
            job.resources, node.available
        ));
    }
    let u = p.uses.get(&node.state.info.node_id).copied().unwrap_or_default();
    if u.live {
        return passing("already runs an execution of this job".into());
    }
    if u.excluded {
        return Err(("refused or did not answer a bid for this job".into(), false));
    }
    if u.failures >= 2 {
        return Err((format!("this job already failed on it {} times", u.failures), false));
    }
    if u.refused_at.is_some_and(|t| t > p.refusal_horizon) {
        return passing("declined this job for lack of capacity".into());
    }
    let mut rank = 30; // engine/publisher/storage, per-job maximum, labels
    rank += 10 * job.constraints.preference(labels) as i64;
    if u.ran == 0 {
        rank += 30;
    }
    rank += capacity_score(node, &used);
    rank += rng.below(p.rank_jitter + 1) as i64;
    Ok(rank)
}

fn frac(free: f64, max: f64) -> f64 {
    if max <= 0.0 { 0.0 } else { (free / max).clamp(0.0, 1.0) }
}

/// 0–80 by free capacity (CPU .4, memory .3, disk .2, GPU .1) plus up to 20 for an empty queue.
fn capacity_score(node: &NodeRec, used: &Resources) -> i64 {
    let m = &node.max;
    let free = m.sub(used);
    let s = 0.4 * frac(free.cpu, m.cpu)
        + 0.3 * frac(free.memory as f64, m.memory as f64)
        + 0.2 * frac(free.disk as f64, m.disk as f64)
        + 0.1 * frac(free.gpu as f64, m.gpu as f64);
    let queue = 1.0 - frac(node.queued.cpu, m.cpu);
    (s * 80.0 + queue * 20.0) as i64
}

/// Scans nodes (from a random offset) and returns the suitable ones, best first.
pub(crate) fn search(
    order: &[String],
    nodes: &BTreeMap<String, NodeRec>,
    job: &JobRec,
    p: &SearchParams<'_>,
    rng: &mut DetRng,
) -> Search {
    let mut out = Search { total_nodes: order.len(), ..Default::default() };
    let n = order.len();
    let start = if n == 0 { 0 } else { rng.below(n as u64) as usize };
    let mut scanned = 0;
    for i in 0..n {
        let id = &order[(start + i) % n];
        scanned += 1;
        let Some(node) = nodes.get(id) else { continue };
        match assess(node, job, p, rng) {
            Ok(rank) => {
                out.suitable.push(Candidate { node: id.clone(), rank });
                if p.enough > 0 && out.suitable.len() >= p.enough {
                    break;
                }
            }
            Err((reason, transient)) => out.unsuitable.push((id.clone(), reason, transient)),
        }
    }
    out.scanned_all = scanned == n;
    out.suitable.sort_by(|a, b| b.rank.cmp(&a.rank).then_with(|| a.node.cmp(&b.node)));
    out
}

/// Bacalhau's "not enough nodes" error, improved: it names each node and why it was
/// unsuitable, grouping nodes that share a reason when there are many.
pub(crate) fn not_enough_nodes(requested: usize, s: &Search) -> String {
    let mut msg = format!(
        "not enough nodes to run job. requested: {requested}, available: {}, suitable: {}.",
        s.total_nodes,
        s.suitable.len()
    );
    if s.total_nodes == 0 {
        msg.push_str(" No compute nodes have joined the cluster.");
        return msg;
    }
    let mut by_reason: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (node, reason, _) in &s.unsuitable {
        by_reason.entry(reason.as_str()).or_default().push(node.as_str());
    }
    for (reason, mut nodes) in by_reason {
        nodes.sort_unstable();
        if nodes.len() <= 5 {
            for n in nodes {
                msg.push_str(&format!("\n• node {n}: {reason}"));
            }
        } else {
            msg.push_str(&format!(
                "\n• {} nodes ({}, {}, …): {reason}",
                nodes.len(),
                nodes[0],
                nodes[1]
            ));
        }
    }
    msg
}
