//! The simulated engine: jobs say in their engine params how their run goes, and the run
//! takes simulated time. It registers as the `noop` engine, so jobs pass the node's real
//! validation unchanged.
//!
//! `Engine.Params`: `Millis` (run time, default 100) and `Outcome`: `ok` (exit 0), `fail`
//! (the execution fails and the orchestrator retries), or `hang` (runs until its
//! execution timeout or a cancel).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gadus_core::protocol::{ExecFailure, FailureKind};
use gadus_io::executor::{
    ExecutionContext, Executor, LogSink, RunOutput, failure, run_output, write_result_files,
};
use tokio::sync::watch;

use crate::record::Recorder;

/// One per node boot: a crash drops it with every run in flight.
pub struct SimExecutor {
    node: String,
    rec: Recorder,
    cancels: Mutex<BTreeMap<String, watch::Sender<bool>>>,
}

impl SimExecutor {
    pub fn new(node: &str, rec: Recorder) -> SimExecutor {
        SimExecutor { node: node.to_string(), rec, cancels: Mutex::new(BTreeMap::new()) }
    }
}

/// Counts a run as running until it is dropped (finished, cancelled, or crashed with its node).
struct Running<'a>(&'a SimExecutor);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.rec.run_ended(&self.0.node);
    }
}

#[async_trait::async_trait]
impl Executor for SimExecutor {
    fn engine(&self) -> &'static str {
        "noop"
    }

    async fn prepare(&self, _ctx: &ExecutionContext) -> Result<(), ExecFailure> {
        Ok(())
    }

    async fn run(
        &self,
        ctx: &ExecutionContext,
        _logs: Arc<dyn LogSink>,
    ) -> Result<RunOutput, (ExecFailure, Option<RunOutput>)> {
        let engine = ctx.task().engine.clone().unwrap_or_default();
        let millis = engine.param("Millis").and_then(|v| v.as_u64()).unwrap_or(100);
        let outcome = engine.param_str("Outcome").unwrap_or("ok").to_string();
        let (tx, mut cancelled) = watch::channel(false);
        if let Ok(mut c) = self.cancels.lock() {
            c.insert(ctx.execution_id.clone(), tx);
        }
        self.rec.run_started(&self.node);
        let _running = Running(self);
        self.rec
            .line(format!("exec {} start {} {outcome} {millis}ms", self.node, ctx.execution_id));
        let work = if outcome == "hang" { Duration::MAX } else { Duration::from_millis(millis) };
        let limit = ctx.deadline.unwrap_or(Duration::MAX);
        let end = tokio::select! {
            biased;
            _ = cancelled.wait_for(|c| *c) => "cancelled",
            () = tokio::time::sleep(work.min(limit)) => {
                if work > limit { "timeout" } else { "done" }
            }
        };
        if let Ok(mut c) = self.cancels.lock() {
            c.remove(&ctx.execution_id);
        }
        self.rec.line(format!("exec {} {end} {}", self.node, ctx.execution_id));
        match end {
            "cancelled" => self.rec.mark("execution-cancelled"),
            "timeout" => self.rec.mark("execution-timeout"),
            _ => {}
        }
        match (end, outcome.as_str()) {
            ("cancelled", _) => Err((failure(FailureKind::Internal, "cancelled"), None)),
            ("timeout", _) => Err((failure(FailureKind::Timeout, "execution timed out"), None)),
            (_, "fail") => Err((
                failure(FailureKind::TaskFailed, "simulated failure"),
                Some(run_output(b"", b"simulated failure", 1, ctx.output_limits)),
            )),
            _ => {
                write_result_files(&ctx.results_dir, b"ok", b"", 0)
                    .map_err(|e| (failure(FailureKind::Internal, e.to_string()), None))?;
                Ok(run_output(b"ok", b"", 0, ctx.output_limits))
            }
        }
    }

    async fn cancel(&self, execution_id: &str) {
        if let Ok(c) = self.cancels.lock()
            && let Some(tx) = c.get(execution_id)
        {
            let _ = tx.send(true);
        }
    }

    async fn adopt(
        &self,
        _ctx: &ExecutionContext,
        _logs: Arc<dyn LogSink>,
    ) -> Result<RunOutput, (ExecFailure, Option<RunOutput>)> {
        // The run was a task of the crashed boot: there is nothing to re-attach to.
        Err((failure(FailureKind::NodeRestarted, "the simulated process died with its node"), None))
    }

    async fn cleanup(&self, _execution_id: &str) {}
}
