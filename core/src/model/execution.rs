//! Executions: one attempt to run a job's task on one node (Bacalhau `models.Execution`).

use serde::{Deserialize, Serialize};

use super::job::{Job, SpecConfig};
use super::resources::AllocatedResources;
use super::states::{ExecutionDesiredStateType, ExecutionStateType, State};

/// One attempt at (a partition of) a job on one node.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Execution {
    /// `e-<uuid>`.
    #[serde(rename = "ID", default)]
    pub id: String,
    /// The job's namespace.
    #[serde(default)]
    pub namespace: String,
    /// The evaluation that created it.
    #[serde(rename = "EvalID", default)]
    pub eval_id: String,
    /// Optional name.
    #[serde(default)]
    pub name: String,
    /// Where it runs.
    #[serde(rename = "NodeID", default)]
    pub node_id: String,
    /// Its job.
    #[serde(rename = "JobID", default)]
    pub job_id: String,
    /// The job spec, when embedded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<Box<Job>>,
    /// The job version it runs.
    #[serde(default)]
    pub job_version: u64,
    /// What the node reserved for it.
    #[serde(default)]
    pub allocated_resources: Option<AllocatedResources>,
    /// What the orchestrator wants.
    #[serde(default)]
    pub desired_state: State<ExecutionDesiredStateType>,
    /// What the compute node reports.
    #[serde(default)]
    pub compute_state: State<ExecutionStateType>,
    /// Where the results went.
    #[serde(default)]
    pub published_result: Option<SpecConfig>,
    /// Exit code and (truncated) output.
    #[serde(default)]
    pub run_output: Option<RunCommandResult>,
    /// The attempt this one replaced.
    #[serde(default)]
    pub previous_execution: String,
    /// The attempt that replaced this one.
    #[serde(default)]
    pub next_execution: String,
    /// Evaluation created when this execution changed.
    #[serde(rename = "FollowupEvalID", default)]
    pub followup_eval_id: String,
    /// Which of the job's `Count` partitions this attempt serves.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub partition_index: i64,
    /// Bumped on every change.
    #[serde(default)]
    pub revision: u64,
    /// Unix nanoseconds.
    #[serde(default)]
    pub create_time: i64,
    /// Unix nanoseconds.
    #[serde(default)]
    pub modify_time: i64,
}

fn is_zero_i64(n: &i64) -> bool {
    *n == 0
}

/// What running the task produced (Bacalhau `models.RunCommandResult`; note `stderr`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunCommandResult {
    /// Standard output, truncated to the node's limit.
    #[serde(rename = "Stdout", default)]
    pub stdout: String,
    /// Whether `stdout` was cut.
    #[serde(rename = "StdoutTruncated", default)]
    pub stdout_truncated: bool,
    /// Standard error, truncated to the node's limit (lower-case key, as in Go).
    #[serde(rename = "stderr", default)]
    pub stderr: String,
    /// Whether `stderr` was cut.
    #[serde(rename = "StderrTruncated", default)]
    pub stderr_truncated: bool,
    /// Process exit code.
    #[serde(rename = "ExitCode", default)]
    pub exit_code: i64,
    /// Why it failed, if it did.
    #[serde(rename = "ErrorMsg", default)]
    pub error_msg: String,
}

impl Execution {
    /// Whether the compute state is final.
    pub fn is_terminal(&self) -> bool {
        self.compute_state.state_type.is_terminal()
    }
}
