//! Property: whatever happens — submissions, stops, node joins, crashes, partitions, lost and
//! duplicated messages, clock jumps — every invariant holds after every event (the harness
//! checks them), and `restore(records)` rebuilds the orchestrator's persistent state.

#![allow(clippy::unwrap_used)] // Tests unwrap: a panic is the failure report.

mod support;

use std::time::Duration;

use gadus_core::model::JobStateType;
use gadus_core::protocol::FailureKind;
use proptest::prelude::*;
use support::*;

#[derive(Clone, Debug)]
enum Op {
    Submit { kind: u8, count: u8, constrained: bool },
    Stop(u8),
    AddNode,
    CrashNode(u8),
    RestartNode(u8),
    Partition(u8),
    Heal(u8),
    DropNext(u8),
    DuplicateAll(bool),
    Advance(u16),
    RestartOrchestrator,
    NodeBehavior(u8, u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..4, 0u8..4, any::<bool>()).prop_map(|(kind, count, constrained)| Op::Submit { kind, count, constrained }),
        1 => any::<u8>().prop_map(Op::Stop),
        1 => Just(Op::AddNode),
        1 => any::<u8>().prop_map(Op::CrashNode),
        1 => any::<u8>().prop_map(Op::RestartNode),
        1 => any::<u8>().prop_map(Op::Partition),
        1 => any::<u8>().prop_map(Op::Heal),
        1 => any::<u8>().prop_map(Op::DropNext),
        1 => any::<bool>().prop_map(Op::DuplicateAll),
        4 => (1u16..20_000).prop_map(Op::Advance),
        1 => Just(Op::RestartOrchestrator),
        1 => (any::<u8>(), 0u8..4).prop_map(|(n, b)| Op::NodeBehavior(n, b)),
    ]
}

fn pick(c: &Cluster, i: u8) -> String {
    let names: Vec<&String> = c.nodes.keys().collect();
    names[i as usize % names.len()].clone()
}

fn apply(c: &mut Cluster, jobs: &mut Vec<String>, op: &Op) {
    match op {
        Op::Submit { kind, count, constrained } => {
            let kind = ["batch", "service", "ops", "daemon"][*kind as usize];
            let count = if matches!(kind, "batch" | "service") {
                format!("Count: {count}\n")
            } else {
                String::new()
            };
            let cons = if *constrained {
                "Constraints: [{Key: zone, Operator: '=', Values: [a]}]\n"
            } else {
                ""
            };
            let yaml = job_yaml(
                kind,
                &format!("{count}{cons}"),
                "    Timeouts: {QueueTimeout: 60, ExecutionTimeout: 30}\n",
            );
            jobs.push(c.submit(&yaml));
        }
        Op::Stop(i) => {
            if !jobs.is_empty() {
                let id = jobs[*i as usize % jobs.len()].clone();
                let _ = c.stop(&id);
            }
        }
        Op::AddNode => {
            let name = format!("n-x{}", c.nodes.len());
            let zone = if c.nodes.len().is_multiple_of(2) { "a" } else { "b" };
            c.add_node_with(&name, |cfg| {
                cfg.labels.insert("zone".into(), zone.into());
            });
        }
        Op::CrashNode(i) => {
            let n = pick(c, *i);
            if c.nodes[&n].compute.is_some() {
                c.crash_node(&n);
            }
        }
        Op::RestartNode(i) => {
            let n = pick(c, *i);
            if c.nodes[&n].compute.is_none() {
                c.restart_node(&n);
            }
        }
        Op::Partition(i) => {
            let n = pick(c, *i);
            c.partition(&n);
        }
        Op::Heal(i) => {
            let n = pick(c, *i);
            c.heal(&n);
        }
        Op::DropNext(k) => {
            let k = *k % 4;
            c.drop_next(move |m| match k {
                0 => m.msg.name() == "AskForBid",
                1 => m.msg.name() == "BidResult",
                2 => m.msg.name() == "ExecutionUpdate",
                _ => m.msg.name() == "BidAccepted",
            });
        }
        Op::DuplicateAll(on) => {
            c.dup_if = if *on { Some(Box::new(|_| true)) } else { None };
        }
        Op::Advance(ms) => c.run_for(Duration::from_millis(u64::from(*ms))),
        Op::RestartOrchestrator => {
            c.crash_orchestrator();
            c.restart_orchestrator();
        }
        Op::NodeBehavior(i, b) => {
            let n = pick(c, *i);
            let beh = c.behavior(&n);
            beh.outcome = match b {
                0 => Outcome::Succeed,
                1 => Outcome::Fail(FailureKind::TaskFailed),
                2 => Outcome::Hang,
                _ => Outcome::Exit(2),
            };
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn invariants_hold_under_random_events(ops in prop::collection::vec(op(), 1..40)) {
        let mut c = Cluster::with(3, |_| {}, |cfg| {
            let zone = if cfg.node_id == "n-2" { "b" } else { "a" };
            cfg.labels.insert("zone".into(), zone.into());
        });
        let mut jobs = Vec::new();
        for op in &ops {
            apply(&mut c, &mut jobs, op);
        }
        // Persistent state survives a restart exactly.
        let before = c.orch().snapshot();
        c.crash_orchestrator();
        c.restart_orchestrator();
        prop_assert_eq!(c.orch().snapshot(), before);
        // Liveness: heal everything; every batch/ops job ends within its timeouts + back-off.
        for n in c.nodes.keys().cloned().collect::<Vec<_>>() {
            c.heal(&n);
            if c.nodes[&n].compute.is_none() {
                c.restart_node(&n);
            }
            c.behavior(&n).outcome = Outcome::Succeed;
        }
        c.drop_if = None;
        c.dup_if = None;
        c.run_for(Duration::from_secs(300));
        for id in &jobs {
            let job = c.job(id);
            if matches!(job.job_type, gadus_core::model::JobType::Batch | gadus_core::model::JobType::Ops) {
                prop_assert!(job.state.state_type.is_terminal(), "job {} stuck in {}: {}", id, job.state.state_type, c.history_text(id));
            }
            prop_assert!(job.state.state_type != JobStateType::Undefined);
        }
    }
}
