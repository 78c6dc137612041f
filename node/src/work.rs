//! Execution work on a compute node: one owner per execution, from `Prepare` to `Release`.
//!
//! The compute state machine decides when an execution prepares, runs, publishes, is
//! cancelled and ends; the loop performs each step as a task. What those tasks share for one
//! execution (its job, its context once prepared, the pinned inputs inside it, whether it
//! was cancelled) lives in one [`ExecWork`], held by the [`WorkRegistry`] from the core's
//! `Prepare` (or `Adopt`) until its `Release`, which the core emits exactly once on every
//! path an execution can end by. Nothing else removes an entry, so nothing outlives its
//! execution (a map that only `Publish` and `Cancel` emptied leaked every execution that
//! failed or finished without a publisher).
//!
//! Steps of one execution never overlap: each holds the execution's step lock while it
//! works. A cancel marks the execution first and then stops the engine; a step that starts
//! afterwards sees the mark and does nothing, and the release's cleanup waits for the step
//! in flight to end, so a container created by a run that raced the cancel is still
//! removed (it once kept running after `job stop`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use gadus_core::model::Job;
use gadus_io::executor::ExecutionContext;

/// What the loop holds for one execution.
pub struct ExecWork {
    /// The job.
    pub job: Arc<Job>,
    ctx: Mutex<Option<ExecutionContext>>,
    cancelled: AtomicBool,
    step: tokio::sync::Mutex<()>,
}

impl ExecWork {
    fn new(job: Arc<Job>) -> Self {
        ExecWork {
            job,
            ctx: Mutex::new(None),
            cancelled: AtomicBool::new(false),
            step: tokio::sync::Mutex::new(()),
        }
    }

    /// Waits for the step in flight (if any) and holds off the next one; `None` when the
    /// execution was cancelled, in which case no step may start.
    pub async fn begin_step(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        let guard = self.step.lock().await;
        (!self.cancelled.load(Ordering::Acquire)).then_some(guard)
    }

    /// Waits for the step in flight (if any) to end, cancelled or not (for the cleanup).
    pub async fn quiesce(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.step.lock().await
    }

    /// Marks the execution cancelled: no further step starts.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
    }

    /// Whether it was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }

    /// The context, once prepared.
    pub fn context(&self) -> Option<ExecutionContext> {
        self.ctx.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Records the prepared context.
    pub fn set_context(&self, ctx: ExecutionContext) {
        *self.ctx.lock().unwrap_or_else(|p| p.into_inner()) = Some(ctx);
    }

    /// The engine name of the task.
    pub fn engine(&self) -> Option<String> {
        self.job.task().map(|t| t.engine_type())
    }
}

/// Every execution with work on this node.
#[derive(Default)]
pub struct WorkRegistry {
    map: Mutex<BTreeMap<String, Arc<ExecWork>>>,
}

impl WorkRegistry {
    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<ExecWork>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers an execution (at `Prepare` or `Adopt`). A registration for an ID already
    /// present replaces it: the core only does so for a new attempt after a restart.
    pub fn begin(&self, execution_id: &str, job: Arc<Job>) -> Arc<ExecWork> {
        let w = Arc::new(ExecWork::new(job));
        self.map().insert(execution_id.to_string(), w.clone());
        w
    }

    /// The work of an execution, if it is registered.
    pub fn get(&self, execution_id: &str) -> Option<Arc<ExecWork>> {
        self.map().get(execution_id).cloned()
    }

    /// Unregisters an execution (at `Release`), returning its work for the cleanup.
    pub fn end(&self, execution_id: &str) -> Option<Arc<ExecWork>> {
        self.map().remove(execution_id)
    }

    /// How many executions are registered (`gadus_executions_held` in `/metrics`).
    pub fn len(&self) -> usize {
        self.map().len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> Arc<Job> {
        Arc::new(Job::default())
    }

    #[tokio::test]
    async fn a_cancel_stops_every_later_step_and_release_empties_the_registry() {
        let r = WorkRegistry::default();
        let w = r.begin("e-1", job());
        assert!(w.begin_step().await.is_some());
        w.cancel();
        assert!(w.begin_step().await.is_none(), "no step starts after a cancel");
        assert_eq!(r.len(), 1);
        let ended = r.end("e-1").expect("registered");
        let _quiet = ended.quiesce().await;
        assert!(r.is_empty());
        assert!(r.end("e-1").is_none(), "released once");
    }

    #[tokio::test]
    async fn the_cleanup_waits_for_the_step_in_flight() {
        let r = Arc::new(WorkRegistry::default());
        let w = r.begin("e-1", job());
        let step = w.begin_step().await.expect("not cancelled");
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        let w2 = w.clone();
        let cleanup = tokio::spawn(async move {
            let _quiet = w2.quiesce().await;
            let _ = tx.send(());
        });
        tokio::task::yield_now().await;
        assert!(rx.try_recv().is_err(), "the cleanup waits while the step runs");
        drop(step);
        cleanup.await.unwrap();
    }
}
