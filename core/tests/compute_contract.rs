//! The compute machine's promises to its driver and to orchestrators, one scenario each:
//! a late copy of an offer never runs an attempt twice, across a restart too, and every
//! execution given work is released exactly once, whichever way it ends.

#![allow(clippy::unwrap_used)] // Tests unwrap: a panic is the failure report.

use std::time::Duration;

use gadus_core::compute::{Compute, ComputeAction, ComputeConfig, ComputeRecord};
use gadus_core::model::{Resources, Timestamp};
use gadus_core::protocol::{ExecFailure, ExecRef, FailureKind, Message, WireRunOutput};

const ORCH: &str = "n-orch";

fn job_json() -> String {
    r#"{"ID":"j-1","Name":"j-1","Namespace":"default","Type":"ops","Count":0,
        "Tasks":[{"Name":"main","Engine":{"Type":"noop"},"Resources":{"CPU":"100m"}}]}"#
        .to_string()
}

fn exec(id: &str, attempt: u64) -> ExecRef {
    ExecRef { execution_id: id.into(), job_id: "j-1".into(), attempt }
}

fn ask(id: &str, attempt: u64) -> Message {
    Message::AskForBid {
        exec: exec(id, attempt),
        job_json: job_json(),
        partition: (0, 1),
        needs_approval: false,
    }
}

fn node(now: Timestamp) -> Compute {
    let cfg = ComputeConfig::new("n-c1", Resources::new(4.0, 4 << 30, 0, 0), vec![ORCH.into()]);
    Compute::new(cfg, now)
}

/// Drains the actions; returns them, and the persisted records appended to `store`.
fn drain(c: &mut Compute, store: &mut Vec<ComputeRecord>) -> Vec<ComputeAction> {
    let mut out = Vec::new();
    while let Some(a) = c.poll_action() {
        if let ComputeAction::Persist(r) = &a {
            store.push(r.clone());
        }
        out.push(a);
    }
    out
}

fn count(actions: &[ComputeAction], f: impl Fn(&ComputeAction) -> bool) -> usize {
    actions.iter().filter(|a| f(a)).count()
}

fn is_prepare(a: &ComputeAction) -> bool {
    matches!(a, ComputeAction::Prepare { .. })
}

fn is_release(a: &ComputeAction) -> bool {
    matches!(a, ComputeAction::Release { .. })
}

/// Runs `e-1` attempt 1 to Completed and has the orchestrator acknowledge it.
fn run_to_ack(c: &mut Compute, t: Timestamp, store: &mut Vec<ComputeRecord>) -> Vec<ComputeAction> {
    let mut all = Vec::new();
    c.handle_message(t, ORCH, ask("e-1", 1));
    all.extend(drain(c, store));
    c.handle_prepared(t, "e-1", Ok(()));
    all.extend(drain(c, store));
    c.handle_run_finished(t, "e-1", Ok(WireRunOutput::default()));
    all.extend(drain(c, store));
    c.handle_message(t, ORCH, Message::UpdateAck { exec: exec("e-1", 1) });
    all.extend(drain(c, store));
    all
}

/// Regression (issue 12, defect 7): the node forgot an execution on acknowledgement, so a
/// copy of its `AskForBid` arriving later created it again and ran it a second time.
#[test]
fn a_late_copy_of_an_offer_never_runs_the_attempt_again() {
    let t0 = Timestamp(1_000_000_000);
    let mut store = Vec::new();
    let mut c = node(t0);
    let first = run_to_ack(&mut c, t0, &mut store);
    assert_eq!(count(&first, is_prepare), 1);
    assert_eq!(c.executions().count(), 0, "acknowledged: forgotten but for its tombstone");

    let later = t0 + Duration::from_secs(90);
    c.handle_message(later, ORCH, ask("e-1", 1));
    let again = drain(&mut c, &mut store);
    assert_eq!(count(&again, is_prepare), 0, "the late copy must not start work: {again:?}");
    assert_eq!(c.executions().count(), 0);
    assert_eq!(c.stats().stale_messages, 1);

    // The same across a restart: the tombstone is durable.
    let cfg = ComputeConfig::new("n-c1", Resources::new(4.0, 4 << 30, 0, 0), vec![ORCH.into()]);
    let mut c = Compute::restore(cfg, later, store.clone());
    drain(&mut c, &mut store);
    c.handle_message(later, ORCH, ask("e-1", 1));
    assert_eq!(count(&drain(&mut c, &mut store), is_prepare), 0, "after a restart too");

    // A new attempt of the same execution ID is not a copy.
    c.handle_message(later, ORCH, ask("e-1", 2));
    assert_eq!(count(&drain(&mut c, &mut store), is_prepare), 1);
}

#[test]
fn tombstones_expire_and_are_forgotten_durably() {
    let t0 = Timestamp(1_000_000_000);
    let mut store = Vec::new();
    let mut c = node(t0);
    run_to_ack(&mut c, t0, &mut store);
    let expired = t0 + gadus_core::compute::TOMBSTONE_TTL + Duration::from_secs(10);
    c.handle_timeout(expired);
    let acts = drain(&mut c, &mut store);
    let forgot = acts
        .iter()
        .any(|a| matches!(a, ComputeAction::Persist(ComputeRecord::Forget(id)) if id == "e-1"));
    assert!(forgot, "{acts:?}");
}

/// Regression (issue 12, defect 6): the driver's per-execution state was dropped only on
/// Publish or Cancel. Every path that ends an execution given work releases it once.
#[test]
fn every_ending_releases_its_work_exactly_once() {
    let t = Timestamp(1_000_000_000);
    let fail = |k| ExecFailure { kind: k, message: "x".into() };
    type Path = Box<dyn Fn(&mut Compute, Timestamp)>;
    let paths: Vec<(&str, Path)> = vec![
        (
            "fails in prepare",
            Box::new(move |c, t| {
                c.handle_prepared(t, "e-1", Err(fail(FailureKind::InputUnavailable)))
            }),
        ),
        (
            "fails in run",
            Box::new(move |c, t| {
                c.handle_prepared(t, "e-1", Ok(()));
                c.handle_run_finished(t, "e-1", Err((fail(FailureKind::TaskFailed), None)));
            }),
        ),
        (
            "completes without a publisher",
            Box::new(|c, t| {
                c.handle_prepared(t, "e-1", Ok(()));
                c.handle_run_finished(t, "e-1", Ok(WireRunOutput::default()));
            }),
        ),
        (
            "cancelled while preparing",
            Box::new(|c, t| {
                c.handle_message(
                    t,
                    ORCH,
                    Message::CancelExecution { exec: exec("e-1", 1), reason: "stop".into() },
                );
            }),
        ),
        (
            "cancelled while running",
            Box::new(|c, t| {
                c.handle_prepared(t, "e-1", Ok(()));
                c.handle_message(
                    t,
                    ORCH,
                    Message::CancelExecution { exec: exec("e-1", 1), reason: "stop".into() },
                );
            }),
        ),
    ];
    for (name, path) in paths {
        let mut store = Vec::new();
        let mut c = node(t);
        c.handle_message(t, ORCH, ask("e-1", 1));
        let mut acts = drain(&mut c, &mut store);
        path(&mut c, t);
        acts.extend(drain(&mut c, &mut store));
        // Late results after the end change nothing.
        c.handle_run_finished(t, "e-1", Ok(WireRunOutput::default()));
        c.handle_message(
            t,
            ORCH,
            Message::CancelExecution { exec: exec("e-1", 1), reason: "again".into() },
        );
        acts.extend(drain(&mut c, &mut store));
        assert_eq!(count(&acts, is_release), 1, "{name}: {acts:?}");
        let cancel_at = acts.iter().position(|a| matches!(a, ComputeAction::Cancel { .. }));
        let release_at = acts.iter().position(is_release);
        if let Some(cancel_at) = cancel_at {
            assert!(cancel_at < release_at.unwrap(), "{name}: Cancel comes before Release");
        }
    }
}

/// Regression (issue 12, defect 10): heartbeats went to every peer ever seen.
#[test]
fn peers_that_leave_stop_getting_heartbeats_unless_executions_are_held_for_them() {
    let t = Timestamp(1_000_000_000);
    let mut store = Vec::new();
    let mut c = node(t);
    c.add_orchestrator("n-passing");
    assert!(c.orchestrators().iter().any(|o| o == "n-passing"));
    c.remove_orchestrator("n-passing");
    assert!(!c.orchestrators().iter().any(|o| o == "n-passing"));
    // An orchestrator this node runs work for keeps hearing about it.
    c.handle_message(t, ORCH, ask("e-1", 1));
    drain(&mut c, &mut store);
    c.remove_orchestrator(ORCH);
    assert!(c.orchestrators().iter().any(|o| o == ORCH));
    for i in 0..5000 {
        c.add_orchestrator(&format!("n-{i}"));
    }
    assert!(c.orchestrators().len() <= gadus_core::compute::MAX_ORCHESTRATORS);
}

/// A closed compute node (`Compute.AllowedOrchestrators`) takes no work from, and does not
/// announce itself to, any other peer; each refusal is a fault of that peer.
#[test]
fn a_closed_node_refuses_strangers_and_counts_them() {
    let t = Timestamp(1_000_000_000);
    let mut store = Vec::new();
    let mut cfg = ComputeConfig::new("n-c1", Resources::new(4.0, 4 << 30, 0, 0), vec![ORCH.into()]);
    cfg.allowed_orchestrators = Some([ORCH.to_string()].into());
    let mut c = Compute::new(cfg, t);
    drain(&mut c, &mut store);
    c.handle_message(t, "n-stranger", ask("e-1", 1));
    let acts = drain(&mut c, &mut store);
    assert_eq!(count(&acts, is_prepare), 0);
    assert!(acts.iter().all(|a| !matches!(a, ComputeAction::Send { .. })), "no answer: {acts:?}");
    let faults = c.take_faults();
    assert_eq!(faults.len(), 1);
    assert_eq!((faults[0].0.as_str(), faults[0].1.kind()), ("n-stranger", "not_allowed"));
    c.add_orchestrator("n-stranger");
    assert!(!c.orchestrators().iter().any(|o| o == "n-stranger"));
    c.handle_message(t, ORCH, ask("e-2", 1));
    assert_eq!(count(&drain(&mut c, &mut store), is_prepare), 1, "the allowed one still works");
}
