//! Restart edge cases of the orchestrator.

#![allow(clippy::unwrap_used)] // Tests unwrap: a panic is the failure report.

use std::sync::Arc;

use gadus_core::model::{Job, JobStateType, Timestamp};
use gadus_core::orchestrator::{Action, JobRecord, Orchestrator, OrchestratorConfig, Record};

/// Regression (issue 12, defect 10): `restore` silently dropped a stored job whose spec no
/// longer parsed; it is kept and failed with the reason.
#[test]
fn a_stored_job_that_no_longer_parses_is_failed_with_the_reason() {
    let text = r#"{"ID":"j-old","Name":"j-old","Namespace":"default","Type":"batch","Count":1,
        "State":{"StateType":"Pending"},
        "Tasks":[{"Name":"main","Engine":{"Type":"noop"},"Resources":{"CPU":"lots"}}]}"#;
    let job: Job = gadus_core::model::codec::from_json(text.as_bytes(), 1 << 20).unwrap();
    assert_eq!(job.state.state_type, JobStateType::Pending);
    let rec = JobRecord {
        job: Arc::new(job),
        next_attempt: 1,
        queued_since: None,
        ops_dispatched: false,
        history_seq: 0,
    };
    let now = Timestamp(5_000_000_000);
    let mut o = Orchestrator::restore(
        OrchestratorConfig::new("n-orch"),
        1,
        now,
        [Record::Job(Box::new(rec))],
    );
    let mut failed = None;
    while let Some(a) = o.poll_action() {
        if let Action::Persist(Record::Job(j)) = a
            && j.job.id == "j-old"
        {
            failed = Some(j.job.state.clone());
        }
    }
    let state = failed.expect("the job is written back, not dropped");
    assert_eq!(state.state_type, JobStateType::Failed);
    assert!(state.message.contains("invalid resources"), "{}", state.message);
}
