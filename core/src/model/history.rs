//! Job history and events: the audit trail users read with `job history` and `--wait`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::states::{ExecutionStateType, JobHistoryType, JobStateType};
use super::time::WallTime;

/// A human-readable event with machine-readable details (Bacalhau `models.Event`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Event {
    /// What happened.
    #[serde(default)]
    pub message: String,
    /// Which subsystem (`Submission`, `Scheduling`, `Exec Timeout`, ...).
    #[serde(default)]
    pub topic: String,
    /// When.
    #[serde(default)]
    pub timestamp: WallTime,
    /// `IsError`, `Hint`, `Retryable`, `FailsExecution`, `NewState`, `ErrorCode`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub details: BTreeMap<String, String>,
}

/// Event topics used by the orchestrator and compute nodes.
pub mod topics {
    /// A job was submitted or updated.
    pub const SUBMISSION: &str = "Submission";
    /// A job or execution changed state.
    pub const STATE_UPDATE: &str = "State Update";
    /// Placement decisions.
    pub const SCHEDULING: &str = "Scheduling";
    /// Waiting for nodes.
    pub const QUEUEING: &str = "Queueing";
    /// An attempt exceeded its ExecutionTimeout.
    pub const EXEC_TIMEOUT: &str = "Exec Timeout";
    /// The job exceeded its TotalTimeout or QueueTimeout.
    pub const JOB_TIMEOUT: &str = "Job Timeout";
    /// Execution-level updates.
    pub const EXECUTION: &str = "Execution";
    /// Compute: preparing inputs.
    pub const DOWNLOADING_INPUTS: &str = "Downloading Inputs";
    /// Compute: preparing the environment (image pull).
    pub const PREPARING: &str = "Preparing Environment";
    /// Compute: running.
    pub const RUNNING: &str = "Running Execution";
    /// Compute: publishing.
    pub const PUBLISHING: &str = "Publishing Results";
    /// Compute: node restart.
    pub const RESTART: &str = "Restart";
}

/// `{Previous, New}` with zero values omitted, as Go's `omitempty` does.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct StateChange<T: Default + PartialEq> {
    /// Before.
    #[serde(default, skip_serializing_if = "is_default")]
    pub previous: T,
    /// After.
    #[serde(default, skip_serializing_if = "is_default")]
    pub new: T,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// One history entry (Bacalhau HEAD `models.JobHistory`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct JobHistory {
    /// Order within the job, from 1.
    #[serde(default)]
    pub seq_num: u64,
    /// Job- or execution-level.
    #[serde(rename = "Type", default)]
    pub history_type: JobHistoryType,
    /// The job.
    #[serde(rename = "JobID", default)]
    pub job_id: String,
    /// The job version.
    #[serde(default)]
    pub job_version: u64,
    /// The execution, for execution-level entries.
    #[serde(rename = "ExecutionID", default, skip_serializing_if = "String::is_empty")]
    pub execution_id: String,
    /// What happened.
    #[serde(default)]
    pub event: Event,
    /// When.
    #[serde(default)]
    pub time: WallTime,
    /// Job state transition, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_state: Option<StateChange<JobStateType>>,
    /// Execution state transition, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_state: Option<StateChange<ExecutionStateType>>,
}
