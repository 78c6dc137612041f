//! Scenario tests of the orchestrator and compute state machines together, each named for the
//! behaviour it pins down. The cluster is in-process (tests/support): manual clock, message
//! queues the test manipulates, simulated executors, stores that survive restarts.

#![allow(clippy::unwrap_used)] // Tests unwrap: a panic is the failure report.

mod support;

use gadus_core::compute::Locality;
use gadus_core::model::*;
use gadus_core::orchestrator::{End, NodeAction, Reply};
use gadus_core::protocol::{FailureKind, Message};
use support::*;

fn completed_nodes(c: &Cluster, job: &str) -> Vec<String> {
    c.execs(job)
        .iter()
        .filter(|e| e.state() == ExecutionStateType::Completed)
        .map(|e| e.node().to_string())
        .collect()
}

#[test]
fn batch_job_completes_on_one_node() {
    let mut c = Cluster::new(1);
    let id = c.submit(&batch(1));
    assert_eq!(c.wait_terminal(&id, secs(10)), JobStateType::Completed);
    let execs = c.execs(&id);
    assert_eq!(execs.len(), 1);
    let e = &execs[0];
    assert_eq!(e.state(), ExecutionStateType::Completed);
    assert_eq!(e.execution.run_output.as_ref().unwrap().stdout, "hello from n-1\n");
    assert_eq!(e.execution.published_result.as_ref().unwrap().spec_type, "ipfs");
    assert_eq!(e.execution.desired_state.state_type, ExecutionDesiredStateType::Stopped);
}

#[test]
fn batch_count_partitions_run_on_distinct_nodes() {
    let mut c = Cluster::new(3);
    let id = c.submit(&batch(3));
    assert_eq!(c.wait_terminal(&id, secs(10)), JobStateType::Completed);
    let mut nodes = completed_nodes(&c, &id);
    nodes.sort();
    assert_eq!(nodes, vec!["n-1", "n-2", "n-3"]);
    let mut parts: Vec<_> = c.execs(&id).iter().map(|e| e.partition).collect();
    parts.sort();
    assert_eq!(parts, vec![0, 1, 2]);
}

#[test]
fn bid_timeout_then_retry_on_other_node() {
    let mut c = Cluster::new(2);
    // The first node that is asked never hears the question.
    c.drop_next(|m| matches!(m.msg, Message::AskForBid { .. }));
    let id = c.submit(&batch(1));
    assert_eq!(c.wait_terminal(&id, secs(60)), JobStateType::Completed);
    let execs = c.execs(&id);
    assert_eq!(execs.len(), 2, "one timed-out bid, one success");
    assert_eq!(execs[0].end, Some(End::BidTimedOut));
    assert_ne!(execs[0].node(), execs[1].node(), "the retry goes to the other node");
    assert!(c.history_text(&id).contains("did not answer the bid within 10s"));
}

#[test]
fn node_lost_reschedules() {
    let mut c = Cluster::new(2);
    c.behavior("n-1").run = secs(120);
    c.behavior("n-2").run = secs(120);
    let id = c.submit(&batch(1));
    c.run_for(secs(1));
    let first = c.execs(&id)[0].node().to_string();
    c.crash_node(&first);
    assert_eq!(c.wait_terminal(&id, secs(300)), JobStateType::Completed);
    let execs = c.execs(&id);
    assert_eq!(execs[0].end, Some(End::NodeLost));
    assert!(execs[0].execution.compute_state.message.contains("disconnected"));
    assert_ne!(completed_nodes(&c, &id), vec![first]);
    assert_eq!(
        c.orch().node(&execs[0].execution.node_id).unwrap().connection,
        NodeConnection::Disconnected
    );
}

#[test]
fn stale_attempt_result_ignored() {
    let mut c = Cluster::new(2);
    c.behavior("n-1").run = secs(60);
    c.behavior("n-2").run = secs(60);
    let id = c.submit(&batch(1));
    c.run_for(secs(1));
    let first = c.execs(&id)[0].node().to_string();
    c.partition(&first);
    // The orchestrator gives up on the partitioned node and reschedules...
    c.run_until(secs(60), |c| c.execs(&id).len() == 2);
    assert_eq!(c.execs(&id)[0].end, Some(End::NodeLost));
    // ...the partitioned node finishes its (superseded) attempt and the partition heals.
    c.run_for(secs(70));
    c.heal(&first);
    assert_eq!(c.wait_terminal(&id, secs(200)), JobStateType::Completed);
    c.run_for(secs(20));
    let done = completed_nodes(&c, &id);
    assert_eq!(done.len(), 1, "only the live attempt's result counts");
    assert_ne!(done[0], first);
    assert!(c.orch().stats().stale_messages > 0, "the late result was seen and ignored");
    assert_eq!(
        c.compute(&first).executions().count(),
        0,
        "the late result was acknowledged and forgotten"
    );
}

#[test]
fn queue_timeout_fails_with_per_node_reasons() {
    let mut c = Cluster::new(2);
    let id = c.submit(&job_yaml(
        "batch",
        "Constraints: [{Key: region, Operator: '=', Values: [mars]}]\n",
        "    Timeouts: {QueueTimeout: 30}\n",
    ));
    c.run_for(secs(1));
    assert_eq!(c.state(&id), JobStateType::Queued);
    assert_eq!(c.wait_terminal(&id, secs(60)), JobStateType::Failed);
    let msg = c.job(&id).state.message;
    assert!(
        msg.contains("not enough nodes to run job. requested: 1, available: 2, suitable: 0"),
        "{msg}"
    );
    assert!(msg.contains("node n-1: labels do not match constraint region=mars"), "{msg}");
    assert!(msg.contains("node n-2: labels do not match constraint region=mars"), "{msg}");
}

#[test]
fn zero_queue_timeout_fails_at_once() {
    let mut c = Cluster::new(1);
    let id = c.submit(&job_yaml("batch", "", "    Resources: {CPU: '64'}\n"));
    c.run_for(secs(1));
    assert_eq!(c.state(&id), JobStateType::Failed);
    assert!(
        c.job(&id)
            .state
            .message
            .contains("node n-1: job needs more CPU than the node allows per job")
    );
}

#[test]
fn waiting_jobs_do_not_grow_the_store() {
    // A job no node can take is re-checked every QueueBackoff for as long as it waits. Those
    // re-checks change nothing durable and must not leave a record each (100k queued jobs
    // would write 10k records a second).
    let mut c = Cluster::new(1);
    let id = c.submit(&job_yaml(
        "batch",
        "Constraints: [{Key: gpu, Operator: exists}]\n",
        "    Timeouts: {QueueTimeout: 3600}\n",
    ));
    let evaluations =
        |c: &Cluster| c.orch_store.keys().filter(|(ks, _)| ks == "evaluations").count();
    c.run_for(secs(2));
    assert_eq!(c.state(&id), JobStateType::Queued);
    let before = evaluations(&c);
    assert!(before >= 1, "the submission's evaluation is stored");
    c.run_for(secs(300));
    assert_eq!(c.state(&id), JobStateType::Queued);
    assert_eq!(evaluations(&c), before, "re-checks of a waiting job left evaluation records");
    // A re-check that does place the job is recorded.
    c.add_node_with("n-gpu", |cfg| {
        cfg.labels.insert("gpu".into(), "a100".into());
    });
    assert_eq!(c.wait_terminal(&id, secs(30)), JobStateType::Completed);
    assert!(evaluations(&c) > before);
}

#[test]
fn queued_job_runs_when_node_joins() {
    let mut c = Cluster::new(1);
    let id = c.submit(&job_yaml(
        "batch",
        "Constraints: [{Key: gpu, Operator: exists}]\n",
        "    Timeouts: {QueueTimeout: 600}\n",
    ));
    c.run_for(secs(2));
    assert_eq!(c.state(&id), JobStateType::Queued);
    c.add_node_with("n-gpu", |cfg| {
        cfg.labels.insert("gpu".into(), "a100".into());
    });
    assert_eq!(c.wait_terminal(&id, secs(30)), JobStateType::Completed);
    assert_eq!(completed_nodes(&c, &id), vec!["n-gpu"]);
}

#[test]
fn daemon_runs_on_late_joining_node() {
    let mut c = Cluster::new(2);
    c.behavior("n-1").outcome = Outcome::Hang;
    c.behavior("n-2").outcome = Outcome::Hang;
    let id = c.submit(&job_yaml("daemon", "", ""));
    c.run_for(secs(2));
    assert_eq!(c.execs(&id).len(), 2);
    c.add_node_with("n-3", |_| {});
    c.behavior("n-3").outcome = Outcome::Hang;
    c.run_for(secs(2));
    let nodes: Vec<String> = c.execs(&id).iter().map(|e| e.node().to_string()).collect();
    assert!(nodes.contains(&"n-3".to_string()), "{nodes:?}");
    assert_eq!(c.state(&id), JobStateType::Running);
    assert!(
        c.execs(&id)
            .iter()
            .all(|e| e.execution.desired_state.state_type == ExecutionDesiredStateType::Running)
    );
}

#[test]
fn daemon_restarts_failed_execution_with_backoff() {
    let mut c = Cluster::new(1);
    c.behavior("n-1").outcome = Outcome::Fail(FailureKind::TaskFailed);
    let id = c.submit(&job_yaml("daemon", "", ""));
    c.run_for(secs(20));
    let execs = c.execs(&id);
    assert!(execs.len() >= 3, "daemon keeps restarting: {}", execs.len());
    assert!(!c.state(&id).is_terminal(), "a daemon never completes or fails");
    let gaps: Vec<i64> =
        execs.windows(2).map(|w| w[1].execution.create_time - w[0].execution.create_time).collect();
    assert!(gaps.windows(2).all(|g| g[1] >= g[0]), "back-off grows: {gaps:?}");
}

#[test]
fn ops_targets_all_matching_nodes() {
    let mut c = Cluster::with(
        4,
        |_| {},
        |cfg| {
            let zone = if cfg.node_id == "n-4" { "us" } else { "eu" };
            cfg.labels.insert("zone".into(), zone.into());
        },
    );
    let id =
        c.submit(&job_yaml("ops", "Constraints: [{Key: zone, Operator: '=', Values: [eu]}]\n", ""));
    assert_eq!(c.wait_terminal(&id, secs(10)), JobStateType::Completed);
    let mut nodes = completed_nodes(&c, &id);
    nodes.sort();
    assert_eq!(nodes, vec!["n-1", "n-2", "n-3"]);
    assert_eq!(c.job(&id).count, 0);
    assert!(
        c.execs(&id).iter().all(|e| !e.needs_approval),
        "ops executions start without a bid round"
    );
}

#[test]
fn ops_fails_if_any_node_fails() {
    let mut c = Cluster::new(3);
    c.behavior("n-2").outcome = Outcome::Fail(FailureKind::TaskFailed);
    let id = c.submit(&job_yaml("ops", "", ""));
    assert_eq!(c.wait_terminal(&id, secs(10)), JobStateType::Failed);
    let msg = c.job(&id).state.message;
    assert!(msg.contains("Job failed on 1 of 3 node(s)") && msg.contains("node n-2"), "{msg}");
}

#[test]
fn ops_does_not_run_on_late_joining_node() {
    let mut c = Cluster::new(1);
    c.behavior("n-1").run = secs(5);
    let id = c.submit(&job_yaml("ops", "", ""));
    c.run_for(secs(1));
    c.add_node_with("n-late", |_| {});
    assert_eq!(c.wait_terminal(&id, secs(30)), JobStateType::Completed);
    assert_eq!(c.execs(&id).len(), 1);
}

#[test]
fn stop_cancels_running_executions() {
    let mut c = Cluster::new(2);
    c.behavior("n-1").outcome = Outcome::Hang;
    c.behavior("n-2").outcome = Outcome::Hang;
    let id = c.submit(&batch(2));
    c.run_for(secs(2));
    assert_eq!(c.state(&id), JobStateType::Running);
    let reply = c.stop(&id);
    assert!(
        matches!(reply, Reply::Stopped { ref evaluation_id } if !evaluation_id.is_empty()),
        "{reply:?}"
    );
    c.run_for(secs(1));
    assert_eq!(c.state(&id), JobStateType::Stopped);
    assert!(c.execs(&id).iter().all(|e| e.state() == ExecutionStateType::Cancelled));
    for n in ["n-1", "n-2"] {
        assert!(c.compute(n).reserved().is_zero(), "{n} released its capacity");
    }
}

#[test]
fn stop_before_approval_rejects_the_bid() {
    let mut c = Cluster::new(1);
    c.drop_all(|m| matches!(m.msg, Message::BidResult { .. }));
    let id = c.submit(&batch(1));
    c.run_for(secs(1));
    c.stop(&id);
    c.drop_if = None;
    c.run_for(secs(10));
    assert_eq!(c.execs(&id)[0].state(), ExecutionStateType::BidRejected);
    assert!(c.compute("n-1").reserved().is_zero());
}

#[test]
fn stop_completed_job_is_an_error() {
    let mut c = Cluster::new(1);
    let id = c.submit(&batch(1));
    c.wait_terminal(&id, secs(10));
    // The job left memory: stopping it is "not found" or "already completed", never a change.
    match c.stop(&id) {
        Reply::Error(e) => assert!(e.message.contains(&id)),
        other => panic!("stop of a completed job must fail: {other:?}"),
    }
    assert_eq!(c.state(&id), JobStateType::Completed);
}

#[test]
fn stop_twice_is_a_noop() {
    let mut c = Cluster::new(1);
    c.behavior("n-1").outcome = Outcome::Hang;
    let id = c.submit(&batch(1));
    c.run_for(secs(1));
    c.stop(&id);
    // The job is evicted once everything is terminal; a second stop of a still-known stopped
    // job answers an empty evaluation, an evicted one "not found": neither changes anything.
    let before = c.history(&id).len();
    let again = c.stop(&id);
    assert!(
        matches!(again, Reply::Stopped { ref evaluation_id } if evaluation_id.is_empty())
            || matches!(again, Reply::Error(_))
    );
    assert_eq!(c.history(&id).len(), before);
}

#[test]
fn stop_unknown_job_is_not_found() {
    let mut c = Cluster::new(1);
    match c.stop("j-nope") {
        Reply::Error(e) => assert_eq!(e.kind, gadus_core::orchestrator::ErrorKind::NotFound),
        other => panic!("{other:?}"),
    }
}

#[test]
fn favour_label_preferred() {
    for _ in 0..5 {
        let mut c = Cluster::with(
            6,
            |_| {},
            |cfg| {
                if cfg.node_id == "n-5" {
                    cfg.labels.insert("ssd".into(), "true".into());
                }
            },
        );
        let id = c.submit(&job_yaml(
            "batch",
            "Constraints: [{Key: favour_ssd, Operator: '=', Values: ['true']}]\n",
            "",
        ));
        assert_eq!(c.wait_terminal(&id, secs(10)), JobStateType::Completed);
        assert_eq!(completed_nodes(&c, &id), vec!["n-5"]);
    }
}

#[test]
fn favour_label_is_not_a_filter() {
    let mut c = Cluster::new(2);
    let id =
        c.submit(&job_yaml("batch", "Constraints: [{Key: favour_ssd, Operator: exists}]\n", ""));
    assert_eq!(c.wait_terminal(&id, secs(10)), JobStateType::Completed);
}

#[test]
fn hard_constraint_filters_nodes() {
    let mut c = Cluster::with(
        3,
        |_| {},
        |cfg| {
            if cfg.node_id == "n-2" {
                cfg.labels.insert("region".into(), "eu".into());
            }
        },
    );
    let id = c.submit(&job_yaml(
        "batch",
        "Constraints: [{Key: region, Operator: in, Values: [eu, us]}]\n",
        "",
    ));
    assert_eq!(c.wait_terminal(&id, secs(10)), JobStateType::Completed);
    assert_eq!(completed_nodes(&c, &id), vec!["n-2"]);
}

#[test]
fn engine_not_supported_is_unsuitable() {
    let mut c = Cluster::with(2, |_| {}, |cfg| cfg.engines = vec!["wasm".into()]);
    let id = c.submit(&job_yaml("batch", "", ""));
    c.run_for(secs(1));
    assert_eq!(c.state(&id), JobStateType::Failed);
    assert!(c.job(&id).state.message.contains("node n-1: does not support engine \"noop\""));
}

#[test]
fn failed_execution_retried_with_backoff() {
    let mut c = Cluster::with(2, |o| o.retry.max_attempts = 5, |_| {});
    c.behavior("n-1").outcome = Outcome::Fail(FailureKind::TaskFailed);
    c.behavior("n-2").outcome = Outcome::Fail(FailureKind::TaskFailed);
    let id = c.submit(&batch(1));
    c.run_for(secs(1));
    assert_eq!(c.execs(&id).len(), 1);
    c.run_for(secs(3));
    let execs = c.execs(&id);
    assert!(execs.len() >= 2, "retried");
    let gap = execs[1].execution.create_time - execs[0].execution.modify_time;
    assert!(gap >= 1_000_000_000, "the retry waited the 1s back-off: {gap}ns");
    assert_ne!(
        execs[0].node(),
        execs[1].node(),
        "a retry prefers a node that did not fail the job"
    );
}

#[test]
fn retry_limit_fails_job_with_last_error() {
    let mut c = Cluster::new(3);
    for n in ["n-1", "n-2", "n-3"] {
        c.behavior(n).outcome = Outcome::Fail(FailureKind::OutOfMemory);
    }
    let id = c.submit(&batch(1));
    assert_eq!(c.wait_terminal(&id, secs(120)), JobStateType::Failed);
    assert_eq!(c.execs(&id).len(), 3, "the default limit is 3 attempts");
    let msg = c.job(&id).state.message;
    assert!(msg.contains("failed 3 times") && msg.contains("out of memory"), "{msg}");
}

#[test]
fn execution_timeout_fails_attempt_and_retries() {
    let mut c = Cluster::new(2);
    c.behavior("n-1").outcome = Outcome::Hang;
    c.behavior("n-2").outcome = Outcome::Hang;
    let id = c.submit(&job_yaml("batch", "", "    Timeouts: {ExecutionTimeout: 2}\n"));
    c.run_for(secs(4));
    let execs = c.execs(&id);
    assert_eq!(execs[0].end, Some(End::TimedOut));
    assert!(execs[0].execution.compute_state.message.contains("timed out"));
    assert!(execs.len() >= 2, "retried after the timeout");
}

#[test]
fn prepare_time_not_counted_in_execution_timeout() {
    let mut c = Cluster::new(1);
    c.behavior("n-1").prepare = secs(30); // a slow image pull
    c.behavior("n-1").run = secs(1);
    let id = c.submit(&job_yaml("batch", "", "    Timeouts: {ExecutionTimeout: 2}\n"));
    assert_eq!(c.wait_terminal(&id, secs(60)), JobStateType::Completed);
    assert_eq!(c.execs(&id).len(), 1);
}

#[test]
fn total_timeout_fails_job() {
    let mut c = Cluster::new(1);
    c.behavior("n-1").outcome = Outcome::Hang;
    let id = c.submit(&job_yaml("batch", "", "    Timeouts: {TotalTimeout: 5}\n"));
    assert_eq!(c.wait_terminal(&id, secs(30)), JobStateType::Failed);
    assert!(c.job(&id).state.message.contains("TotalTimeout of 5s"));
    c.run_for(secs(1));
    assert!(c.compute("n-1").reserved().is_zero(), "the execution was cancelled");
}

#[test]
fn capacity_never_exceeded_under_many_jobs() {
    let mut c = Cluster::with(2, |o| o.defaults.queue_timeout = 600, |_| {});
    let ids: Vec<String> =
        (0..20).map(|_| c.submit(&job_yaml("batch", "", "    Resources: {CPU: '1'}\n"))).collect();
    // Invariants (capacity included) are checked after every event by the harness.
    for id in &ids {
        assert_eq!(
            c.wait_terminal(id, secs(300)),
            JobStateType::Completed,
            "{}",
            c.history_text(id)
        );
    }
}

#[test]
fn capacity_refusal_is_retryable() {
    let mut c = Cluster::with(1, |o| o.defaults.queue_timeout = 600, |_| {});
    c.behavior("n-1").run = secs(5);
    let a = c.submit(&job_yaml("batch", "", "    Resources: {CPU: '3'}\n"));
    let b = c.submit(&job_yaml("batch", "", "    Resources: {CPU: '3'}\n"));
    assert_eq!(c.wait_terminal(&a, secs(60)), JobStateType::Completed);
    assert_eq!(c.wait_terminal(&b, secs(60)), JobStateType::Completed);
}

#[test]
fn service_keeps_count_replicas() {
    let mut c = Cluster::new(3);
    c.behavior("n-1").run = secs(2);
    c.behavior("n-2").outcome = Outcome::Hang;
    c.behavior("n-3").outcome = Outcome::Hang;
    let id = c.submit(&job_yaml("service", "Count: 2\n", ""));
    c.run_for(secs(10));
    let live = c.execs(&id).iter().filter(|e| !e.is_terminal()).count();
    assert_eq!(live, 2, "a finished replica is replaced");
    assert!(!c.state(&id).is_terminal(), "a service never completes");
}

#[test]
fn service_count_zero_runs_nothing() {
    let mut c = Cluster::new(1);
    let id = c.submit(&job_yaml("service", "Count: 0\n", ""));
    c.run_for(secs(5));
    assert!(c.execs(&id).is_empty());
    assert_eq!(c.state(&id), JobStateType::Pending);
}

#[test]
fn history_records_every_transition_with_reason() {
    let mut c = Cluster::new(1);
    let id = c.submit(&batch(1));
    c.wait_terminal(&id, secs(10));
    let h = c.history(&id);
    let seqs: Vec<u64> = h.iter().map(|e| e.seq_num).collect();
    assert_eq!(seqs, (1..=h.len() as u64).collect::<Vec<_>>());
    let jobs: Vec<_> =
        h.iter().filter_map(|e| e.job_state.as_ref().map(|s| (s.previous, s.new))).collect();
    assert_eq!(
        jobs,
        vec![
            (JobStateType::Undefined, JobStateType::Pending),
            (JobStateType::Pending, JobStateType::Running),
            (JobStateType::Running, JobStateType::Completed)
        ]
    );
    let execs: Vec<_> =
        h.iter().filter_map(|e| e.execution_state.as_ref().map(|s| s.new)).collect();
    assert_eq!(
        execs,
        vec![
            ExecutionStateType::AskForBid,
            ExecutionStateType::AskForBidAccepted,
            ExecutionStateType::BidAccepted,
            ExecutionStateType::Running,
            ExecutionStateType::Publishing,
            ExecutionStateType::Completed
        ]
    );
    assert!(h.iter().all(|e| !e.event.message.is_empty() && !e.time.is_zero()));
}

#[test]
fn duplicate_messages_are_idempotent() {
    let mut c = Cluster::new(3);
    c.dup_if = Some(Box::new(|_| true));
    let id = c.submit(&batch(2));
    assert_eq!(c.wait_terminal(&id, secs(30)), JobStateType::Completed);
    assert_eq!(completed_nodes(&c, &id).len(), 2);
    assert_eq!(c.execs(&id).len(), 2, "duplicates create nothing");
}

#[test]
fn lost_bid_accepted_is_resent_on_heartbeat() {
    let mut c = Cluster::new(1);
    c.drop_next(|m| matches!(m.msg, Message::BidAccepted { .. }));
    let id = c.submit(&batch(1));
    assert_eq!(c.wait_terminal(&id, secs(30)), JobStateType::Completed);
    assert_eq!(c.execs(&id).len(), 1, "the same attempt went through");
}

#[test]
fn lost_bid_result_recovered_from_heartbeat() {
    let mut c = Cluster::with(1, |o| o.bid_timeout = secs(60), |_| {});
    c.drop_next(|m| matches!(m.msg, Message::BidResult { .. }));
    let id = c.submit(&batch(1));
    assert_eq!(c.wait_terminal(&id, secs(30)), JobStateType::Completed);
    assert_eq!(c.execs(&id).len(), 1);
}

#[test]
fn lost_completion_is_redelivered_until_acked() {
    let mut c = Cluster::new(1);
    c.drop_next(
        |m| matches!(&m.msg, Message::ExecutionUpdate { update, .. } if update.is_terminal()),
    );
    let id = c.submit(&batch(1));
    assert_eq!(c.wait_terminal(&id, secs(30)), JobStateType::Completed);
    c.run_for(secs(10));
    assert_eq!(c.compute("n-1").executions().count(), 0, "forgotten once acknowledged");
}

#[test]
fn compute_restart_readopts_running_execution() {
    let mut c = Cluster::new(1);
    c.behavior("n-1").run = secs(10);
    let id = c.submit(&batch(1));
    c.run_for(secs(2));
    c.crash_node("n-1");
    c.restart_node("n-1");
    assert_eq!(c.wait_terminal(&id, secs(60)), JobStateType::Completed);
    assert_eq!(c.execs(&id).len(), 1, "re-adopted, not rescheduled");
}

#[test]
fn compute_restart_without_container_fails_and_reschedules() {
    let mut c = Cluster::new(2);
    c.behavior("n-1").run = secs(10);
    c.behavior("n-2").run = secs(10);
    let id = c.submit(&batch(1));
    c.run_for(secs(2));
    let first = c.execs(&id)[0].node().to_string();
    c.crash_node(&first);
    c.nodes.get_mut(&first).unwrap().running.clear(); // the work died with the node
    c.restart_node(&first);
    assert_eq!(c.wait_terminal(&id, secs(120)), JobStateType::Completed);
    let execs = c.execs(&id);
    assert_eq!(execs[0].end, Some(End::NodeLost));
    assert!(execs[0].execution.compute_state.message.contains("could not re-adopt"));
}

#[test]
fn compute_restart_during_prepare_fails_and_reschedules() {
    let mut c = Cluster::new(2);
    c.behavior("n-1").prepare = secs(20);
    c.behavior("n-2").prepare = secs(20);
    let id = c.submit(&batch(1));
    c.run_for(secs(2));
    let first = c.execs(&id)[0].node().to_string();
    c.crash_node(&first);
    c.restart_node(&first);
    assert_eq!(c.wait_terminal(&id, secs(120)), JobStateType::Completed);
    assert!(c.execs(&id)[0].execution.compute_state.message.contains("restarted while preparing"));
}

#[test]
fn orchestrator_restart_continues_running_job() {
    let mut c = Cluster::new(2);
    c.behavior("n-1").run = secs(10);
    c.behavior("n-2").run = secs(10);
    let id = c.submit(&batch(2));
    c.run_for(secs(2));
    let before = c.orch().snapshot();
    c.crash_orchestrator();
    c.restart_orchestrator();
    assert_eq!(c.orch().snapshot(), before, "restore(records) rebuilds the same state");
    assert_eq!(c.wait_terminal(&id, secs(120)), JobStateType::Completed);
    assert_eq!(c.execs(&id).len(), 2, "nothing was rescheduled");
    let h = c.history(&id);
    assert!(
        h.windows(2).all(|w| w[1].seq_num == w[0].seq_num + 1),
        "history continues without gaps"
    );
}

#[test]
fn orchestrator_restart_resumes_queued_job() {
    let mut c = Cluster::with(1, |o| o.defaults.queue_timeout = 600, |_| {});
    let id = c.submit(&job_yaml("batch", "Constraints: [{Key: gpu, Operator: exists}]\n", ""));
    c.run_for(secs(2));
    c.crash_orchestrator();
    c.restart_orchestrator();
    assert_eq!(c.state(&id), JobStateType::Queued);
    c.add_node_with("n-gpu", |cfg| {
        cfg.labels.insert("gpu".into(), "1".into());
    });
    assert_eq!(c.wait_terminal(&id, secs(60)), JobStateType::Completed);
}

#[test]
fn manual_approval_keeps_nodes_pending_until_approved() {
    let mut c = Cluster::with(
        1,
        |o| {
            o.manual_approval = true;
            o.defaults.queue_timeout = 600;
        },
        |_| {},
    );
    assert_eq!(c.orch().node("n-1").unwrap().membership, NodeMembership::Pending);
    let id = c.submit(&batch(1));
    c.run_for(secs(2));
    assert_eq!(c.state(&id), JobStateType::Queued);
    assert!(c.job(&id).state.message.contains("membership is PENDING"));
    assert_eq!(c.node_action("n-1", NodeAction::Approve), Reply::NodeUpdated);
    assert_eq!(c.wait_terminal(&id, secs(30)), JobStateType::Completed);
}

#[test]
fn rejected_node_gets_no_work() {
    let mut c = Cluster::new(2);
    c.node_action("n-1", NodeAction::Reject);
    let id = c.submit(&batch(1));
    c.wait_terminal(&id, secs(10));
    assert_eq!(completed_nodes(&c, &id), vec!["n-2"]);
    assert!(
        matches!(c.node_action("n-1", NodeAction::Reject), Reply::Error(_)),
        "already rejected"
    );
}

#[test]
fn deleted_node_is_forgotten() {
    let mut c = Cluster::new(2);
    c.node_action("n-2", NodeAction::Delete);
    assert!(c.orch().node("n-2").is_none());
    assert!(matches!(c.node_action("n-9", NodeAction::Approve), Reply::Error(_)));
}

#[test]
fn not_enough_nodes_error_groups_many_nodes() {
    let mut c = Cluster::new(10);
    let id = c.submit(&job_yaml(
        "batch",
        "Constraints: [{Key: arch, Operator: '=', Values: [riscv]}]\n",
        "",
    ));
    c.run_for(secs(1));
    let msg = c.job(&id).state.message;
    assert!(
        msg.contains("10 nodes (n-1, n-10, …): labels do not match constraint arch=riscv"),
        "{msg}"
    );
}

#[test]
fn nonzero_exit_code_still_completes() {
    let mut c = Cluster::new(1);
    c.behavior("n-1").outcome = Outcome::Exit(3);
    let id = c.submit(&batch(1));
    assert_eq!(c.wait_terminal(&id, secs(10)), JobStateType::Completed);
    assert_eq!(c.execs(&id)[0].execution.run_output.as_ref().unwrap().exit_code, 3);
}

#[test]
fn publish_failure_fails_execution() {
    let mut c = Cluster::with(1, |o| o.retry.max_attempts = 1, |_| {});
    c.behavior("n-1").fail_publish = true;
    let id = c.submit(&batch(1));
    assert_eq!(c.wait_terminal(&id, secs(10)), JobStateType::Failed);
    assert!(c.execs(&id)[0].execution.compute_state.message.contains("publishing failed"));
}

#[test]
fn input_failure_is_classified() {
    let mut c = Cluster::with(1, |o| o.retry.max_attempts = 1, |_| {});
    c.behavior("n-1").fail_prepare = true;
    let id = c.submit(&batch(1));
    assert_eq!(c.wait_terminal(&id, secs(10)), JobStateType::Failed);
    assert!(c.execs(&id)[0].execution.compute_state.message.contains("input unavailable"));
}

#[test]
fn unapproved_bid_expires_on_compute() {
    let mut c = Cluster::with(1, |o| o.bid_timeout = secs(600), |n| n.approval_timeout = secs(20));
    c.drop_all(|m| matches!(m.msg, Message::BidAccepted { .. }));
    let id = c.submit(&batch(1));
    c.run_for(secs(1));
    assert!(!c.compute("n-1").reserved().is_zero(), "the bid holds capacity");
    c.run_for(secs(30));
    assert_eq!(c.execs(&id)[0].end, Some(End::NodeLost));
    assert!(c.execs(&id)[0].execution.compute_state.message.contains("bid expired"));
}

#[test]
fn reject_networked_policy_refuses_bid() {
    let mut c = Cluster::with(1, |_| {}, |n| n.policy.reject_networked = true);
    let id = c.submit(&job_yaml("batch", "", "    Network: {Type: Full}\n"));
    c.run_for(secs(2));
    let e = &c.execs(&id)[0];
    assert_eq!(e.state(), ExecutionStateType::AskForBidRejected);
    assert!(
        e.execution.compute_state.message.contains("does not accept jobs with network type Full")
    );
}

#[test]
fn reject_stateless_policy_refuses_jobs_without_inputs() {
    let mut c = Cluster::with(1, |_| {}, |n| n.policy.reject_stateless = true);
    let id = c.submit(&batch(1));
    c.run_for(secs(2));
    assert_eq!(c.state(&id), JobStateType::Failed);
    assert!(c.history_text(&id).contains("does not accept jobs without inputs"));
}

#[test]
fn local_locality_probes_for_inputs() {
    let mut c = Cluster::with(1, |_| {}, |n| n.policy.locality = Locality::Local);
    let id = c.submit(&job_yaml(
        "batch",
        "",
        "    InputSources: [{Target: /in, Source: {Type: ipfs, Params: {CID: QmX}}}]\n",
    ));
    // The harness answers every probe with "yes".
    assert_eq!(c.wait_terminal(&id, secs(10)), JobStateType::Completed);
}

#[test]
fn submit_invalid_job_lists_every_problem() {
    let mut c = Cluster::new(1);
    let job = Job::from_yaml(b"Type: batch\nTasks: [{Env: {bad: x}}]\n").unwrap();
    match c.submit_job(job) {
        Reply::Error(e) => {
            assert_eq!(e.kind, gadus_core::orchestrator::ErrorKind::Invalid);
            assert!(e.details.iter().any(|d| d == "Tasks[0].Engine: missing"), "{:?}", e.details);
            assert!(
                e.details.iter().any(|d| d.starts_with("Tasks[0].Env.bad:")),
                "{:?}",
                e.details
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(
        c.orch_store.is_empty() || c.orch_store.keys().all(|(ks, _)| ks != "jobs"),
        "nothing stored"
    );
}

#[test]
fn submission_returns_warnings_and_a_persisted_evaluation() {
    let mut c = Cluster::new(1);
    let job = Job::from_yaml(
        batch(1).replace("Type: batch", "Type: batch\nID: mine\nRevision: 4").as_bytes(),
    )
    .unwrap();
    match c.submit_job(job) {
        Reply::Submitted { job_id, evaluation_id, warnings } => {
            assert!(job_id.starts_with("j-"));
            assert!(
                warnings.contains(&"job ID is ignored when submitting a batch job".to_string())
            );
            assert!(
                warnings.contains(&"job revision is ignored when submitting a job".to_string())
            );
            assert!(c.orch_store.contains_key(&("evaluations".to_string(), evaluation_id)));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn goodbye_marks_node_disconnected_immediately() {
    let mut c = Cluster::new(2);
    c.behavior("n-1").outcome = Outcome::Hang;
    c.behavior("n-2").outcome = Outcome::Hang;
    let id = c.submit(&batch(1));
    c.run_for(secs(1));
    let node = c.execs(&id)[0].node().to_string();
    let n = c.nodes.get_mut(&node).unwrap();
    n.compute.as_mut().unwrap().shutdown();
    c.drain();
    c.run_for(secs(1));
    assert_eq!(c.orch().node(&node).unwrap().connection, NodeConnection::Disconnected);
    assert_eq!(c.execs(&id).len(), 2, "rescheduled at once");
}

#[test]
fn misdirected_messages_are_ignored() {
    let mut c = Cluster::new(2);
    c.behavior("n-1").outcome = Outcome::Hang;
    c.behavior("n-2").outcome = Outcome::Hang;
    let id = c.submit(&batch(1));
    c.run_for(secs(1));
    let e = c.execs(&id)[0].clone();
    let other = if e.node() == "n-1" { "n-2" } else { "n-1" };
    let forged = Message::ExecutionUpdate {
        exec: gadus_core::protocol::ExecRef {
            execution_id: e.execution.id.clone(),
            job_id: id.clone(),
            attempt: e.attempt,
        },
        update: gadus_core::protocol::ExecUpdate::Completed {
            output: Default::default(),
            published_json: String::new(),
        },
        clock: Default::default(),
    };
    let now = c.now;
    c.orch.as_mut().unwrap().handle_message(now, other, forged);
    c.drain();
    assert_eq!(c.orch().stats().misdirected_messages, 1);
    assert_ne!(c.execs(&id)[0].state(), ExecutionStateType::Completed);
}

#[test]
fn rank_spreads_jobs_across_free_nodes() {
    let mut c = Cluster::new(4);
    for n in ["n-1", "n-2", "n-3", "n-4"] {
        c.behavior(n).outcome = Outcome::Hang;
    }
    let ids: Vec<String> =
        (0..8).map(|_| c.submit(&job_yaml("batch", "", "    Resources: {CPU: '1'}\n"))).collect();
    c.run_for(secs(1));
    for n in ["n-1", "n-2", "n-3", "n-4"] {
        let held = c.compute(n).reserved().cpu;
        assert!((1.0..=3.0).contains(&held), "{n} holds {held} CPUs: load is spread");
    }
    assert_eq!(ids.len(), 8);
}

#[test]
fn heartbeats_keep_nodes_connected() {
    let mut c = Cluster::new(3);
    c.run_for(secs(120));
    assert!(c.orch().nodes().all(|n| n.connection == NodeConnection::Connected));
}

#[test]
fn silent_node_is_disconnected_after_timeout() {
    let mut c = Cluster::new(2);
    c.partition("n-2");
    c.run_for(secs(29));
    assert_eq!(c.orch().node("n-2").unwrap().connection, NodeConnection::Connected);
    c.run_for(secs(10));
    assert_eq!(c.orch().node("n-2").unwrap().connection, NodeConnection::Disconnected);
    c.heal("n-2");
    c.run_for(secs(10));
    assert_eq!(
        c.orch().node("n-2").unwrap().connection,
        NodeConnection::Connected,
        "it comes back"
    );
}

/// Issue 13, item 1: a burst of jobs on a node that fits four at a time. The orchestrator
/// must count the capacity it has promised until the node's heartbeat shows it taken (a
/// heartbeat sent before the node saw the bids used to wipe that count, so it placed more than
/// fit, the node refused, and each refused job waited out a back-off with a new execution):
/// every job runs exactly once and the node never refuses for capacity.
#[test]
fn a_burst_places_only_what_fits_and_runs_each_job_once() {
    let mut c = Cluster::with(
        1,
        |o| o.defaults.queue_timeout = 3600,
        |n| n.heartbeat_interval = std::time::Duration::from_millis(30),
    );
    c.latency = std::time::Duration::from_millis(20);
    c.behavior("n-1").run = std::time::Duration::from_millis(200);
    let mut ids = Vec::new();
    for _ in 0..60 {
        ids.push(c.submit(&job_yaml("batch", "", "    Resources: {CPU: '1'}\n")));
        c.run_for(std::time::Duration::from_millis(7));
    }
    for id in &ids {
        assert_eq!(
            c.wait_terminal(id, secs(600)),
            JobStateType::Completed,
            "{}",
            c.history_text(id)
        );
    }
    let per_job: Vec<usize> = ids.iter().map(|id| c.execs(id).len()).collect();
    let refused = ids.iter().filter(|id| c.history_text(id).contains("declined the bid")).count();
    assert_eq!(refused, 0, "bids refused for capacity; executions per job: {per_job:?}");
    assert!(per_job.iter().all(|n| *n == 1), "executions per job: {per_job:?}");
}
