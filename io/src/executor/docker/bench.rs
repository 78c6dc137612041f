//! Helpers for `gadus bench docker-overhead` and for tests: a docker job in one call, and one
//! timed prepare → run → cleanup of a container running `true`.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gadus_core::model::job::SpecConfig;
use gadus_core::model::{Job, Resources, Task};
use gadus_core::protocol::{ExecFailure, FailureKind};

use super::DockerExecutor;
use crate::executor::{ExecutionContext, Executor, NoLogs, OutputLimits, failure, system_env};

/// A job whose single task runs `image` with the given entrypoint and parameters.
pub fn docker_job(job_id: &str, image: &str, entrypoint: &[&str], parameters: &[&str]) -> Job {
    let strings =
        |v: &[&str]| serde_json::Value::from(v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    let mut engine = SpecConfig::new("docker").with_param("Image", image);
    if !entrypoint.is_empty() {
        engine = engine.with_param("Entrypoint", strings(entrypoint));
    }
    if !parameters.is_empty() {
        engine = engine.with_param("Parameters", strings(parameters));
    }
    let task = Task { name: "main".into(), engine: Some(engine), ..Default::default() };
    Job {
        id: job_id.to_string(),
        name: job_id.to_string(),
        tasks: vec![task],
        ..Default::default()
    }
}

/// A fresh execution ID, unique within this host (`e-<pid>-<n>-<nanos>`).
pub fn fresh_execution_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("e-{}-{n}-{nanos}", std::process::id())
}

/// An execution of `job` with modest limits (0.5 CPU, 64 MiB, 60 s), no inputs, no network,
/// results in `results_dir` (created).
pub fn context(
    execution_id: &str,
    job: Job,
    results_dir: &Path,
) -> std::io::Result<ExecutionContext> {
    std::fs::create_dir_all(results_dir)?;
    Ok(ExecutionContext {
        execution_id: execution_id.to_string(),
        system_env: system_env(&job, execution_id, (0, 1)),
        job: Arc::new(job),
        resources: Resources { cpu: 0.5, memory: 64 * 1024 * 1024, ..Default::default() },
        inputs: Vec::new(),
        results_dir: results_dir.to_path_buf(),
        deadline: Some(Duration::from_secs(60)),
        output_limits: OutputLimits::default(),
        allow_network: false,
    })
}

/// Time spent in each phase of one execution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Overhead {
    /// `prepare` (the image is local: an inspect).
    pub prepare: Duration,
    /// `run`: create, start, logs, wait, inspect.
    pub run: Duration,
    /// `cleanup`: remove the container.
    pub cleanup: Duration,
}

impl Overhead {
    /// All three phases.
    pub fn total(&self) -> Duration {
        self.prepare + self.run + self.cleanup
    }
}

/// Runs `true` in `image` (which must be local and have `/bin/true`, e.g. the busybox test
/// image) through the executor, results under `scratch/<executionID>`; cleans up in every case.
pub async fn run_true(
    exec: &DockerExecutor,
    image: &str,
    scratch: &Path,
) -> Result<Overhead, ExecFailure> {
    let id = fresh_execution_id();
    let job = docker_job(&format!("j-{id}"), image, &["/bin/true"], &[]);
    let ctx = context(&id, job, &scratch.join(&id))
        .map_err(|e| failure(FailureKind::Internal, format!("results dir: {e}")))?;
    let t0 = Instant::now();
    let prepared = exec.prepare(&ctx).await;
    let t1 = Instant::now();
    let ran = match prepared {
        Ok(()) => exec.run(&ctx, Arc::new(NoLogs)).await.map_err(|(f, _)| f),
        Err(f) => Err(f),
    };
    let t2 = Instant::now();
    exec.cleanup(&id).await;
    let t3 = Instant::now();
    let out = ran?;
    if out.exit_code != 0 {
        return Err(failure(FailureKind::TaskFailed, format!("`true` exited {}", out.exit_code)));
    }
    Ok(Overhead { prepare: t1 - t0, run: t2 - t1, cleanup: t3 - t2 })
}
