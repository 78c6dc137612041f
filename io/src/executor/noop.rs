//! The `noop` engine: succeeds at once with empty output (tests and benchmarks).

use std::sync::Arc;

use gadus_core::protocol::{ExecFailure, FailureKind};

use super::{
    ExecutionContext, Executor, LogSink, RunOutput, failure, run_output, write_result_files,
};

/// Does nothing, successfully.
#[derive(Debug, Default)]
pub struct NoopExecutor;

#[async_trait::async_trait]
impl Executor for NoopExecutor {
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
        write_result_files(&ctx.results_dir, b"", b"", 0)
            .map_err(|e| (failure(FailureKind::Internal, format!("writing results: {e}")), None))?;
        for r in &ctx.task().result_paths {
            std::fs::create_dir_all(ctx.results_dir.join(&r.name)).map_err(|e| {
                (failure(FailureKind::Internal, format!("writing results: {e}")), None)
            })?;
        }
        Ok(run_output(b"", b"", 0, ctx.output_limits))
    }

    async fn cancel(&self, _execution_id: &str) {}

    async fn adopt(
        &self,
        ctx: &ExecutionContext,
        logs: Arc<dyn LogSink>,
    ) -> Result<RunOutput, (ExecFailure, Option<RunOutput>)> {
        self.run(ctx, logs).await
    }

    async fn cleanup(&self, _execution_id: &str) {}
}
