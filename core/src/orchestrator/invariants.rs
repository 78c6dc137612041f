//! Safety properties the orchestrator checks about itself. Cheap enough to run after every
//! event in simulation; a violation is a bug in gadus, never a consequence of bad input.

use std::collections::BTreeMap;

use super::Orchestrator;
use crate::model::{ExecutionStateType, JobStateType, JobType};

/// Whether a job may move from `old` to `new`.
pub(crate) fn job_transition_ok(old: JobStateType, new: JobStateType) -> bool {
    use JobStateType::*;
    match (old, new) {
        (a, b) if a == b => false,
        (a, _) if a.is_terminal() => false,
        (Undefined, Pending) => true,
        (Pending | Queued | Running, Queued | Running | Completed | Failed | Stopped) => true,
        _ => false,
    }
}

fn exec_order(s: ExecutionStateType) -> u8 {
    use ExecutionStateType::*;
    match s {
        Undefined | New => 0,
        AskForBid => 1,
        AskForBidAccepted => 2,
        BidAccepted => 3,
        Running => 4,
        Publishing => 5,
        _ => 6,
    }
}

/// Whether an execution may move from `old` to `new`: forward only, terminal is final.
pub(crate) fn exec_transition_ok(old: ExecutionStateType, new: ExecutionStateType) -> bool {
    if old.is_terminal() || old == new {
        return false;
    }
    new.is_terminal() || exec_order(new) > exec_order(old)
}

impl Orchestrator {
    /// Checks every invariant; `Err` names the first violation.
    pub fn check_invariants(&self) -> Result<(), String> {
        if let Some(v) = self.violations.first() {
            return Err(v.clone());
        }
        if self.node_order.len() != self.nodes.len()
            || self.node_order.iter().zip(self.nodes.keys()).any(|(a, b)| a != b)
        {
            return Err("node order out of sync with the node table".into());
        }
        for (id, job) in &self.jobs {
            let spec = &job.rec.job;
            let mut completed: BTreeMap<u32, u32> = BTreeMap::new();
            let mut live: BTreeMap<u32, u32> = BTreeMap::new();
            let mut last_attempt = 0;
            for eid in &job.execs {
                let e = self
                    .execs
                    .get(eid)
                    .ok_or_else(|| format!("job {id} lists unknown execution {eid}"))?;
                if e.execution.job_id != *id {
                    return Err(format!(
                        "execution {eid} filed under job {id} belongs to {}",
                        e.execution.job_id
                    ));
                }
                if e.attempt <= last_attempt || e.attempt >= job.rec.next_attempt {
                    return Err(format!("job {id}: attempt numbers out of order at {eid}"));
                }
                last_attempt = e.attempt;
                if e.state() == ExecutionStateType::Completed {
                    *completed.entry(e.partition).or_default() += 1;
                }
                if !e.is_terminal() {
                    *live.entry(e.partition).or_default() += 1;
                }
            }
            if matches!(spec.job_type, JobType::Batch | JobType::Service)
                && let Some((p, n)) = live.iter().find(|(_, n)| **n > 1)
            {
                return Err(format!("job {id}: {n} live attempts of partition {p}"));
            }
            if spec.job_type == JobType::Batch {
                if let Some((p, n)) = completed.iter().find(|(_, n)| **n > 1) {
                    return Err(format!("job {id}: partition {p} completed {n} times"));
                }
                let total: u32 = completed.values().sum();
                if i64::from(total) > spec.count {
                    return Err(format!(
                        "job {id}: {total} completions counted for Count {}",
                        spec.count
                    ));
                }
                if spec.state.state_type == JobStateType::Completed && i64::from(total) < spec.count
                {
                    return Err(format!(
                        "job {id} is Completed with {total} of {} partitions done",
                        spec.count
                    ));
                }
            }
            let settled = !self.pending.contains_key(id);
            if spec.is_terminal() && settled && !live.is_empty() {
                return Err(format!(
                    "job {id} is {} but still has live executions",
                    spec.state.state_type
                ));
            }
        }
        for (eid, e) in &self.execs {
            if !self.jobs.contains_key(&e.execution.job_id) {
                return Err(format!("execution {eid} outlives its job {}", e.execution.job_id));
            }
            if let Some(n) = self.nodes.get(e.node())
                && n.live_execs.contains(eid) == e.is_terminal()
            {
                return Err(format!("node {} live set disagrees about execution {eid}", e.node()));
            }
            if e.is_terminal() != e.end.is_some() {
                return Err(format!("execution {eid}: terminal state and end reason disagree"));
            }
        }
        for (nid, n) in &self.nodes {
            if let Some(eid) = n.live_execs.iter().find(|e| !self.execs.contains_key(*e)) {
                return Err(format!("node {nid} holds unknown live execution {eid}"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions() {
        use ExecutionStateType::*;
        assert!(exec_transition_ok(AskForBid, AskForBidAccepted));
        assert!(exec_transition_ok(AskForBid, Completed));
        assert!(!exec_transition_ok(Running, BidAccepted));
        assert!(!exec_transition_ok(Completed, Failed));
        assert!(job_transition_ok(JobStateType::Running, JobStateType::Queued));
        assert!(!job_transition_ok(JobStateType::Completed, JobStateType::Running));
    }
}
