//! Executors run a task and report how it ended. One trait for every engine.
//!
//! ## Contract
//!
//! The node loop owns an execution's lifecycle (the core decides when to start, time out or
//! cancel); an executor only performs:
//!
//! 1. [`Executor::prepare`] — fetch what the engine needs (pull the image, load and validate
//!    the module). Runs in the Preparing phase: its time never counts against the
//!    ExecutionTimeout.
//! 2. [`Executor::run`] — run the task to its end. Writes `stdout`, `stderr` and `exitCode`
//!    into [`ExecutionContext::results_dir`] (and the task's result paths under it, one folder
//!    per `ResultPath` name), streams output lines to the [`LogSink`], and returns the
//!    [`RunOutput`] with stdout/stderr truncated to the configured limits. A task that runs and
//!    exits non-zero is `Ok` (the exit code is data, as in Bacalhau); a trap, an OOM kill, a
//!    deadline or an executor error is `Err` with a classified [`ExecFailure`].
//! 3. [`Executor::cancel`] — stop the execution if it runs; idempotent; `run` then returns.
//! 4. [`Executor::adopt`] — after a node restart, re-attach to an execution that may still be
//!    running (Docker finds its container by label) and wait for its end like `run`; an engine
//!    whose executions cannot survive a restart (WASM) returns `Err` at once.
//! 5. [`Executor::cleanup`] — remove everything the execution left (containers, temporary
//!    files) except `results_dir`, which belongs to the node.
//!
//! Executors are `Send + Sync` and shared: every method may be called concurrently for
//! different executions.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use gadus_core::model::{Job, Resources};
use gadus_core::protocol::{ExecFailure, FailureKind, WireRunOutput};

/// The output of a task (Bacalhau's `RunCommandResult`, wire form).
pub type RunOutput = WireRunOutput;

/// One input made available to the task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreparedInput {
    /// Path inside the task (the input source's `Target`).
    pub target: String,
    /// Where the data is on the host (a file or a directory).
    pub host_path: PathBuf,
    /// Whether the task may write to it (only `local` sources with `ReadWrite`).
    pub writable: bool,
    /// For a host path the job named (`local`): the checked file or directory, held open.
    /// Engines must use it, never `host_path` (which then is its `/proc/<pid>/fd/<n>` link):
    /// the path itself may have been swapped since it was checked.
    pub pinned: Option<crate::pinned::PinnedPath>,
}

impl PreparedInput {
    /// An input the node prepared in a folder of its own (downloads, inline data).
    pub fn node_owned(target: &str, host_path: std::path::PathBuf) -> Self {
        PreparedInput { target: target.to_string(), host_path, writable: false, pinned: None }
    }
}

/// Everything an executor needs to run one execution.
#[derive(Clone, Debug)]
pub struct ExecutionContext {
    /// `e-<uuid>`.
    pub execution_id: String,
    /// The job (its single task is what runs).
    pub job: Arc<Job>,
    /// Resources granted (limits to enforce).
    pub resources: Resources,
    /// Inputs, already downloaded.
    pub inputs: Vec<PreparedInput>,
    /// Where `stdout`, `stderr`, `exitCode` and one folder per ResultPath name go. Exists and
    /// is empty when `run` starts.
    pub results_dir: PathBuf,
    /// System variables (`BACALHAU_JOB_ID`, ..., and their `GADUS_*` twins), which override
    /// the task's own `Env` on conflict.
    pub system_env: BTreeMap<String, String>,
    /// Wall-clock limit for the run (the ExecutionTimeout), enforced by the executor too.
    pub deadline: Option<Duration>,
    /// Truncation limits for the stdout/stderr returned inline.
    pub output_limits: OutputLimits,
    /// Whether the node allows networked tasks (the job's Network type is honoured only then).
    pub allow_network: bool,
}

impl ExecutionContext {
    /// The task being run.
    pub fn task(&self) -> &gadus_core::model::Task {
        self.job.task().expect("validated jobs have exactly one task")
    }

    /// The task's environment merged with the system variables (system wins).
    pub fn environment(&self) -> BTreeMap<String, String> {
        let mut env = self.task().env.clone();
        env.extend(self.system_env.iter().map(|(k, v)| (k.clone(), v.clone())));
        env
    }
}

/// How much of stdout/stderr is returned inline in the execution (all of it is in the result
/// files).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutputLimits {
    /// Bytes of stdout returned inline.
    pub stdout: usize,
    /// Bytes of stderr returned inline.
    pub stderr: usize,
}

impl Default for OutputLimits {
    fn default() -> Self {
        OutputLimits { stdout: 64 * 1024, stderr: 64 * 1024 }
    }
}

/// Which stream a log line came from (the logs API's `Type`: 1 stdout, 2 stderr).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stream {
    /// Standard output.
    Stdout = 1,
    /// Standard error.
    Stderr = 2,
}

/// Receives output as it is produced (for `job logs --follow`). Must not block.
pub trait LogSink: Send + Sync {
    /// A chunk of output (not necessarily whole lines).
    fn write(&self, stream: Stream, bytes: &[u8]);
}

/// A sink that drops everything.
pub struct NoLogs;

impl LogSink for NoLogs {
    fn write(&self, _: Stream, _: &[u8]) {}
}

/// A task runner for one engine.
#[async_trait::async_trait]
pub trait Executor: Send + Sync {
    /// The engine name jobs use in `Engine.Type` (lower-case).
    fn engine(&self) -> &'static str;

    /// Readies what the engine needs; see the module docs.
    async fn prepare(&self, ctx: &ExecutionContext) -> Result<(), ExecFailure>;

    /// Runs the task to its end; see the module docs.
    async fn run(
        &self,
        ctx: &ExecutionContext,
        logs: Arc<dyn LogSink>,
    ) -> Result<RunOutput, (ExecFailure, Option<RunOutput>)>;

    /// Stops the execution if it runs (idempotent).
    async fn cancel(&self, execution_id: &str);

    /// Re-attaches after a node restart and waits for the end, or fails at once.
    async fn adopt(
        &self,
        ctx: &ExecutionContext,
        logs: Arc<dyn LogSink>,
    ) -> Result<RunOutput, (ExecFailure, Option<RunOutput>)>;

    /// Removes what the execution left behind (but not `results_dir`).
    async fn cleanup(&self, execution_id: &str);
}

/// A classified failure.
pub fn failure(kind: FailureKind, message: impl Into<String>) -> ExecFailure {
    ExecFailure { kind, message: message.into() }
}

/// Cuts `bytes` to at most `limit` bytes on a UTF-8 boundary; returns the text and whether it
/// was cut.
pub fn truncate_utf8(bytes: &[u8], limit: usize) -> (String, bool) {
    let text = String::from_utf8_lossy(bytes);
    if text.len() <= limit {
        return (text.into_owned(), false);
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (text[..end].to_string(), true)
}

/// Writes the result files every executor produces: `stdout`, `stderr`, `exitCode`.
pub fn write_result_files(
    dir: &std::path::Path,
    stdout: &[u8],
    stderr: &[u8],
    exit_code: i64,
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("stdout"), stdout)?;
    std::fs::write(dir.join("stderr"), stderr)?;
    std::fs::write(dir.join("exitCode"), exit_code.to_string())?;
    Ok(())
}

/// Builds the inline [`RunOutput`] from full stdout/stderr.
pub fn run_output(stdout: &[u8], stderr: &[u8], exit_code: i64, limits: OutputLimits) -> RunOutput {
    let (stdout, stdout_truncated) = truncate_utf8(stdout, limits.stdout);
    let (stderr, stderr_truncated) = truncate_utf8(stderr, limits.stderr);
    RunOutput {
        stdout,
        stdout_truncated,
        stderr,
        stderr_truncated,
        exit_code,
        error_msg: String::new(),
    }
}

/// The system variables Bacalhau injects (plus `GADUS_*` twins).
pub fn system_env(
    job: &Job,
    execution_id: &str,
    partition: (u32, u32),
) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    let mut put = |k: &str, v: String| {
        env.insert(format!("BACALHAU_{k}"), v.clone());
        env.insert(format!("GADUS_{k}"), v);
    };
    put("EXECUTION_ID", execution_id.to_string());
    put("JOB_ID", job.id.clone());
    put("JOB_TYPE", job.job_type.to_string());
    put("PARTITION_INDEX", partition.0.to_string());
    put("PARTITION_COUNT", partition.1.to_string());
    env
}

pub mod docker;
pub mod noop;
pub mod wasm;
