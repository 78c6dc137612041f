//! The `wasm` engine: WASI preview-1 modules on the [wasmi] interpreter.
//!
//! ## Semantics (Bacalhau §4.4)
//!
//! `Engine.Params` name the entry module by a path inside the task (an input's target, a file
//! beneath a directory input, or a directory holding exactly one `.wasm`); import modules are
//! located the same way, instantiated first, and registered under their file stem
//! (`/wasm/imports/module_0.wasm` → `module_0`) and under the name their `name` section
//! declares, if any. The exported `Entrypoint` (default `_start`) is called with no arguments.
//!
//! - argv is `[""] + Parameters` (Bacalhau passes an empty program name); the environment is
//!   the task's merged with the system variables; stdin is empty.
//! - stdout and stderr go in full to `stdout`/`stderr` in the results directory and to the log
//!   sink as they are written (module `output`).
//! - Inputs are visible read-only at their targets, result paths writable at their `Path` and
//!   at `/<Name>` (Bacalhau's own WASM executor mounts them at the name); nothing else of the
//!   host is reachable (module `fs`).
//! - `proc_exit(n)` and a normal return (n = 0) are successful runs with exit code n. A trap,
//!   a limit or a stop is an `Err` carrying what was printed so far; `exitCode` then says 1
//!   (Bacalhau reports traps as exit code 1).
//!
//! ## Limits
//!
//! - **Module size and shape**: at most [`WasmConfig::max_module_bytes`]; wasmi's
//!   [`EnforcedLimits::strict`] bounds functions, globals, tables, segments and parameters, so a
//!   hostile module cannot make validation or lazy compilation expensive.
//! - **Memory**: the task's `Memory` (rounded up to whole 64 KiB pages; [`WasmConfig::
//!   default_memory_bytes`] when the task sets none) caps each linear memory; growing past it
//!   traps and fails the run as `OutOfMemory`. Table elements and instances are capped too.
//! - **Fuel**: a budget of `CPU cores × timeout seconds ×` [`FUEL_PER_CORE_SECOND`]; using it
//!   up is `OutOfFuel`. Without a timeout the budget is unlimited.
//! - **Wall clock**: the run is executed in fuel slices of [`WasmConfig::fuel_slice`] on a
//!   blocking thread; between slices (and every 20 ms inside WASI sleeps) it checks the
//!   deadline and the cancel flag (modules `runner` and `sched`). The async side additionally stops
//!   waiting [`WasmConfig::stop_grace`] after the deadline, should a host call ever block.
//! - **Stack**: wasm call depth and wasmi's value stack are capped, so deep recursion traps as
//!   a stack overflow (`TaskFailed`). wasmi is built with `portable-dispatch` (see
//!   `io/Cargo.toml`): its default tail-call dispatch can grow the *native* stack with every
//!   executed instruction in some build profiles, which would abort the whole node.
//!
//! Compiled modules are cached per execution between `prepare` and `run`; a WASM run cannot
//! outlive the node process, so `adopt` fails at once with `NodeRestarted`.

mod fs;
mod output;
mod runner;
mod sched;
mod spec;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use gadus_core::model::WasmEngineSpec;
use gadus_core::protocol::{ExecFailure, FailureKind};
use wasmi::{Config, EnforcedLimits, Engine, Linker};
use wasmi_wasi::wasi_common::sync::{clocks_ctx, random_ctx};
use wasmi_wasi::wasi_common::{Table, WasiCtx};

use self::fs::{MountError, MountSpec, build_preopens, guest_components};
use self::output::Capture;
use self::runner::{Ending, FuelPlan, Host, Limits};
use self::sched::{StopFlag, StopReason, StoppableSched};
use self::spec::Prepared;
use super::{ExecutionContext, Executor, LogSink, NoLogs, RunOutput, Stream, failure, run_output};

/// Fuel granted per CPU core per second of timeout. One unit of fuel is roughly one executed
/// WebAssembly instruction; wasmi (loop dispatch) ran about 0.7·10⁹ of them per second on the
/// development machine, so this is an upper bound with headroom for faster cores: a task that
/// stays within its CPU share runs into its timeout before its fuel. Fuel is the deterministic
/// backstop (a 0.1-core task gets a tenth of the work of a 1-core task); the wall-clock
/// deadline is the other one.
pub const FUEL_PER_CORE_SECOND: u64 = 2_000_000_000;

/// Fuel per slice: how often (in executed instructions) the deadline and cancel flag are
/// checked. About 7 ms of interpretation at the measured speed; resuming costs well under a
/// microsecond.
pub const FUEL_SLICE: u64 = 5_000_000;

/// A WebAssembly module exporting `_start` (which does nothing) and a one-page `memory`: the
/// smallest WASI command, for benchmarks of instantiation and call overhead.
pub const NOOP_MODULE: &[u8] = &[
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version 1
    0x01, 0x04, 0x01, 0x60, 0x00, 0x00, // type section: one type, () -> ()
    0x03, 0x02, 0x01, 0x00, // function section: one function of type 0
    0x05, 0x03, 0x01, 0x00, 0x01, // memory section: one memory, min 1 page
    0x07, 0x13, 0x02, // export section: 2 exports
    0x06, b'_', b's', b't', b'a', b'r', b't', 0x00, 0x00, // "_start" = func 0
    0x06, b'm', b'e', b'm', b'o', b'r', b'y', 0x02, 0x00, // "memory" = memory 0
    0x0a, 0x04, 0x01, 0x02, 0x00, 0x0b, // code section: one body, no locals, `end`
];

/// Tunables of the WASM executor. `Default` gives production values.
#[derive(Clone, Debug)]
pub struct WasmConfig {
    /// Largest module file accepted.
    pub max_module_bytes: u64,
    /// See [`FUEL_PER_CORE_SECOND`].
    pub fuel_per_core_second: u64,
    /// See [`FUEL_SLICE`].
    pub fuel_slice: u64,
    /// Linear-memory limit for tasks that request no memory.
    pub default_memory_bytes: u64,
    /// Maximum elements per table.
    pub max_table_elements: usize,
    /// Maximum wasm call depth (wasmi's default of 1,000 is shallower than native programs
    /// expect).
    pub max_recursion_depth: usize,
    /// Maximum size of wasmi's value stack, in bytes (per running execution).
    pub max_value_stack_bytes: usize,
    /// How long `run` waits past the deadline for the run thread to notice it before giving
    /// up on it (only a host call that blocks for long could make that happen).
    pub stop_grace: Duration,
    /// Most bytes of stdout (and of stderr) kept in the result files, as Docker's executor;
    /// a guest that writes more gets write errors and its run fails.
    pub max_output_file_bytes: u64,
}

impl Default for WasmConfig {
    fn default() -> Self {
        WasmConfig {
            max_module_bytes: 64 * 1024 * 1024,
            fuel_per_core_second: FUEL_PER_CORE_SECOND,
            fuel_slice: FUEL_SLICE,
            default_memory_bytes: 1024 * 1024 * 1024,
            max_table_elements: 1 << 20,
            max_recursion_depth: 10_000,
            max_value_stack_bytes: 8 * 1024 * 1024,
            stop_grace: Duration::from_secs(2),
            max_output_file_bytes: 1 << 30,
        }
    }
}

/// Per-execution state: the compiled modules and the stop flag.
#[derive(Default)]
struct Slot {
    prepared: Mutex<Option<Arc<Prepared>>>,
    stop: Arc<StopFlag>,
}

/// A module compiled by [`WasmExecutor::compile`], runnable many times.
#[derive(Clone)]
pub struct CompiledModule {
    prepared: Arc<Prepared>,
}

/// The result of [`WasmExecutor::run_module`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModuleRun {
    /// `proc_exit` code, or 0 when `_start` returned.
    pub exit_code: i32,
    /// Up to 1 MiB of stdout.
    pub stdout: Vec<u8>,
    /// Up to 1 MiB of stderr.
    pub stderr: Vec<u8>,
    /// Fuel the run consumed (≈ instructions executed).
    pub fuel_consumed: u64,
}

/// In-memory capture size of [`WasmExecutor::run_module`].
const MODULE_RUN_CAPTURE: usize = 1024 * 1024;

/// The `wasm` engine. Cheap to share; every method may run concurrently for different
/// executions.
pub struct WasmExecutor {
    engine: Engine,
    /// WASI preview 1, defined once; each run clones it and adds its import modules.
    linker: Linker<Host>,
    config: WasmConfig,
    executions: Mutex<HashMap<String, Arc<Slot>>>,
}

impl std::fmt::Debug for WasmExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmExecutor").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Default for WasmExecutor {
    fn default() -> Self {
        Self::new(WasmConfig::default())
    }
}

impl WasmExecutor {
    /// An executor with `config`.
    pub fn new(config: WasmConfig) -> Self {
        let mut engine_config = Config::default();
        engine_config
            .consume_fuel(true)
            .enforced_limits(EnforcedLimits::strict())
            .set_max_recursion_depth(config.max_recursion_depth.max(1));
        // wasmi panics if the maximum is below its minimum (1,000 bytes by default).
        engine_config.set_max_stack_height(config.max_value_stack_bytes.max(1_000));
        let engine = Engine::new(&engine_config);
        let mut linker = Linker::new(&engine);
        wasmi_wasi::add_to_linker(&mut linker, |host: &mut Host| &mut host.wasi)
            .expect("WASI functions are defined once into an empty linker");
        WasmExecutor { engine, linker, config, executions: Mutex::new(HashMap::new()) }
    }

    /// The configuration in use.
    pub fn config(&self) -> &WasmConfig {
        &self.config
    }

    fn executions(&self) -> MutexGuard<'_, HashMap<String, Arc<Slot>>> {
        self.executions.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn slot(&self, execution_id: &str) -> Arc<Slot> {
        self.executions().entry(execution_id.to_string()).or_default().clone()
    }

    /// Compiles a module binary (validated under the same limits as task modules) whose
    /// `_start` [`run_module`](Self::run_module) can then call repeatedly.
    pub fn compile(&self, wasm: &[u8]) -> Result<CompiledModule, ExecFailure> {
        if wasm.len() as u64 > self.config.max_module_bytes {
            return Err(failure(FailureKind::InvalidSpec, "module larger than the size limit"));
        }
        if !wasm.starts_with(b"\0asm") {
            return Err(failure(FailureKind::InvalidSpec, "not a WebAssembly binary"));
        }
        let entry = wasmi::Module::new(&self.engine, wasm)
            .map_err(|e| failure(FailureKind::InvalidSpec, format!("invalid module: {e}")))?;
        if !matches!(entry.get_export("_start"), Some(wasmi::ExternType::Func(_))) {
            return Err(failure(FailureKind::InvalidSpec, "the module exports no _start function"));
        }
        let prepared = Prepared {
            entry,
            entry_path: "<bytes>".to_string(),
            imports: Vec::new(),
            entrypoint: WasmEngineSpec::DEFAULT_ENTRYPOINT.to_string(),
        };
        Ok(CompiledModule { prepared: Arc::new(prepared) })
    }

    /// Instantiates `module` in a fresh store and runs `_start` on the calling thread, with
    /// WASI args `[""] + args`, no environment, no filesystem, the default memory limit and no
    /// fuel budget. Output is kept in memory. Meant for benchmarks and tools; tasks go through
    /// [`Executor::run`].
    pub fn run_module(
        &self,
        module: &CompiledModule,
        args: &[String],
    ) -> Result<ModuleRun, ExecFailure> {
        let sink: Arc<dyn LogSink> = Arc::new(NoLogs);
        let stdout = Capture::in_memory(MODULE_RUN_CAPTURE, Stream::Stdout, sink.clone());
        let stderr = Capture::in_memory(MODULE_RUN_CAPTURE, Stream::Stderr, sink);
        let limits = Limits {
            memory_bytes: self.memory_limit(0),
            table_elements: self.config.max_table_elements,
            fuel: FuelPlan { budget: None, slice: self.config.fuel_slice.max(1) },
            stop: Arc::new(StopFlag::default()),
            deadline: None,
            deadline_text: "none".to_string(),
        };
        let mut argv = vec![String::new()];
        argv.extend(args.iter().cloned());
        let wasi = wasi_ctx(&argv, &[], &stdout, &stderr, Vec::new(), &limits)?;
        let outcome = runner::execute(&self.engine, &self.linker, &module.prepared, wasi, &limits);
        match outcome.ending {
            Ending::Exited(exit_code) => Ok(ModuleRun {
                exit_code,
                stdout: stdout.prefix(),
                stderr: stderr.prefix(),
                fuel_consumed: outcome.fuel_consumed,
            }),
            Ending::Failed(f) => Err(f),
        }
    }

    /// [`compile`](Self::compile) then [`run_module`](Self::run_module).
    pub fn run_module_bytes(&self, wasm: &[u8], args: &[String]) -> Result<ModuleRun, ExecFailure> {
        let module = self.compile(wasm)?;
        self.run_module(&module, args)
    }

    /// The memory limit in bytes: `requested` (or the default) rounded up to whole pages.
    fn memory_limit(&self, requested: u64) -> usize {
        const PAGE: u64 = 64 * 1024;
        let bytes = if requested == 0 { self.config.default_memory_bytes } else { requested };
        let rounded = bytes.div_ceil(PAGE).saturating_mul(PAGE);
        usize::try_from(rounded).unwrap_or(usize::MAX)
    }

    /// The fuel budget for `cpu` cores over `deadline`.
    fn fuel_budget(&self, cpu: f64, deadline: Option<Duration>) -> Option<u64> {
        let deadline = deadline?;
        let cores = if cpu.is_finite() && cpu > 0.0 { cpu } else { 1.0 };
        let fuel = cores * deadline.as_secs_f64() * self.config.fuel_per_core_second as f64;
        // `as` saturates; never hand out zero, or not even `_start`'s prologue could run.
        Some((fuel as u64).max(1))
    }

    /// Reads the task's spec and compiles its modules (on a blocking thread).
    async fn load(&self, ctx: &ExecutionContext) -> Result<Prepared, ExecFailure> {
        let task = ctx
            .job
            .task()
            .ok_or_else(|| failure(FailureKind::InvalidSpec, "the job has no task"))?;
        let engine_spec = task
            .engine
            .as_ref()
            .ok_or_else(|| failure(FailureKind::InvalidSpec, "the task has no engine"))?;
        if gadus_core::model::engines::LegacyWasmEngineSpec::detect(engine_spec).is_some() {
            return Err(failure(
                FailureKind::InvalidSpec,
                "legacy wasm parameters (EntryModule as an input source) must be converted by \
                 the orchestrator before execution",
            ));
        }
        let spec = WasmEngineSpec::from_spec(engine_spec).map_err(|errs| {
            let text: Vec<String> = errs
                .iter()
                .map(
                    |(field, e)| if field.is_empty() { e.clone() } else { format!("{field}: {e}") },
                )
                .collect();
            failure(FailureKind::InvalidSpec, format!("wasm engine params: {}", text.join("; ")))
        })?;
        let engine = self.engine.clone();
        let inputs = ctx.inputs.clone();
        let max = self.config.max_module_bytes;
        tokio::task::spawn_blocking(move || spec::load(&engine, &spec, &inputs, max))
            .await
            .map_err(|e| failure(FailureKind::Internal, format!("loading modules: {e}")))?
    }
}

/// Builds a WASI context: args, env, captured stdio, preopens, and the stoppable scheduler.
fn wasi_ctx(
    argv: &[String],
    env: &[(String, String)],
    stdout: &Capture,
    stderr: &Capture,
    preopens: Vec<fs::Preopen>,
    limits: &Limits,
) -> Result<WasiCtx, ExecFailure> {
    let sched = StoppableSched::new(limits.stop.clone(), limits.deadline);
    let mut wasi = WasiCtx::new(random_ctx(), clocks_ctx(), Box::new(sched), Table::new());
    for arg in argv {
        wasi.push_arg(arg)
            .map_err(|e| failure(FailureKind::InvalidSpec, format!("Parameters: {e}")))?;
    }
    for (key, value) in env {
        wasi.push_env(key, value)
            .map_err(|e| failure(FailureKind::InvalidSpec, format!("environment {key}: {e}")))?;
    }
    wasi.set_stdout(Box::new(stdout.pipe()));
    wasi.set_stderr(Box::new(stderr.pipe()));
    for (path, dir) in preopens {
        wasi.push_preopened_dir(dir, &path)
            .map_err(|e| failure(FailureKind::Internal, format!("preopening {path}: {e}")))?;
    }
    Ok(wasi)
}

/// Everything a run needs, moved onto the blocking thread.
struct RunJob {
    engine: Engine,
    linker: Linker<Host>,
    prepared: Arc<Prepared>,
    argv: Vec<String>,
    env: Vec<(String, String)>,
    mounts: Vec<MountSpec>,
    stdout: Capture,
    stderr: Capture,
    limits: Limits,
}

/// Runs on the blocking thread: filesystem, WASI context, execution.
fn run_blocking(job: RunJob) -> Result<Ending, ExecFailure> {
    let preopens = build_preopens(&job.mounts).map_err(|e| match e {
        MountError::Invalid(m) => failure(FailureKind::InvalidSpec, m),
        MountError::Unavailable(m) => failure(FailureKind::InputUnavailable, m),
    })?;
    let wasi = wasi_ctx(&job.argv, &job.env, &job.stdout, &job.stderr, preopens, &job.limits)?;
    Ok(runner::execute(&job.engine, &job.linker, &job.prepared, wasi, &job.limits).ending)
}

fn internal(message: String) -> (ExecFailure, Option<RunOutput>) {
    (failure(FailureKind::Internal, message), None)
}

/// Files every execution writes at the top of its results folder.
const RESULT_FILES: [&str; 3] = ["stdout", "stderr", "exitCode"];

/// The guest mounts for `ctx`: inputs at their targets, result paths at `Path` and `/<Name>`.
/// Creates the result folders.
fn mounts(ctx: &ExecutionContext) -> Result<Vec<MountSpec>, ExecFailure> {
    let mut mounts: Vec<MountSpec> = ctx
        .inputs
        .iter()
        .map(|i| MountSpec {
            guest: i.target.clone(),
            host: i.host_path.clone(),
            writable: i.writable,
        })
        .collect();
    let task =
        ctx.job.task().ok_or_else(|| failure(FailureKind::InvalidSpec, "the job has no task"))?;
    for r in &task.result_paths {
        let name = r.name.as_str();
        if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\\']) {
            return Err(failure(
                FailureKind::InvalidSpec,
                format!("result path name {name:?} must be a plain folder name"),
            ));
        }
        if RESULT_FILES.contains(&name) {
            return Err(failure(
                FailureKind::InvalidSpec,
                format!("result path name {name:?} collides with the {name} result file"),
            ));
        }
        let host = ctx.results_dir.join(name);
        std::fs::create_dir_all(&host).map_err(|e| {
            failure(FailureKind::Internal, format!("creating result folder {name}: {e}"))
        })?;
        let by_name = format!("/{name}");
        let mut places = vec![by_name.clone()];
        if !r.path.is_empty() {
            let path = guest_components(&r.path).map_err(|e| {
                failure(FailureKind::InvalidSpec, format!("result path {name}: {e}"))
            })?;
            if path != [name.to_string()] {
                places.insert(0, r.path.clone());
            }
        }
        for guest in places {
            mounts.push(MountSpec { guest, host: host.clone(), writable: true });
        }
    }
    Ok(mounts)
}

#[async_trait::async_trait]
impl Executor for WasmExecutor {
    fn engine(&self) -> &'static str {
        gadus_core::model::engines::names::WASM
    }

    async fn prepare(&self, ctx: &ExecutionContext) -> Result<(), ExecFailure> {
        let prepared = self.load(ctx).await?;
        let slot = self.slot(&ctx.execution_id);
        *slot.prepared.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(prepared));
        Ok(())
    }

    async fn run(
        &self,
        ctx: &ExecutionContext,
        logs: Arc<dyn LogSink>,
    ) -> Result<RunOutput, (ExecFailure, Option<RunOutput>)> {
        let started = Instant::now();
        let slot = self.slot(&ctx.execution_id);
        if slot.stop.get() == Some(StopReason::Cancelled) {
            return Err((failure(FailureKind::Internal, "cancelled"), None));
        }
        let cached = slot.prepared.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let prepared = match cached {
            Some(p) => p,
            // `run` without `prepare` (allowed: prepare only moves the work earlier).
            None => {
                let p = Arc::new(self.load(ctx).await.map_err(|f| (f, None))?);
                *slot.prepared.lock().unwrap_or_else(|e| e.into_inner()) = Some(p.clone());
                p
            }
        };
        let task = ctx
            .job
            .task()
            .ok_or_else(|| (failure(FailureKind::InvalidSpec, "the job has no task"), None))?;
        let parameters = task
            .engine
            .as_ref()
            .and_then(|e| WasmEngineSpec::from_spec(e).ok())
            .map(|s| s.parameters)
            .unwrap_or_default();
        let mut argv = vec![String::new()];
        argv.extend(parameters);
        let env: Vec<(String, String)> = ctx.environment().into_iter().collect();
        let mounts = mounts(ctx).map_err(|f| (f, None))?;

        std::fs::create_dir_all(&ctx.results_dir)
            .map_err(|e| internal(format!("creating the results folder: {e}")))?;
        let stdout = Capture::to_file(
            &ctx.results_dir.join("stdout"),
            ctx.output_limits.stdout,
            self.config.max_output_file_bytes,
            Stream::Stdout,
            logs.clone(),
        )
        .map_err(|e| internal(format!("creating the stdout file: {e}")))?;
        let stderr = Capture::to_file(
            &ctx.results_dir.join("stderr"),
            ctx.output_limits.stderr,
            self.config.max_output_file_bytes,
            Stream::Stderr,
            logs,
        )
        .map_err(|e| internal(format!("creating the stderr file: {e}")))?;

        // A deadline beyond what `Instant` can hold is no deadline (checked: a peer once sent
        // an ExecutionTimeout near i64::MAX seconds and the addition panicked).
        let deadline = ctx.deadline.and_then(|d| started.checked_add(d));
        let limits = Limits {
            memory_bytes: self.memory_limit(ctx.resources.memory),
            table_elements: self.config.max_table_elements,
            fuel: FuelPlan {
                budget: self.fuel_budget(ctx.resources.cpu, ctx.deadline),
                slice: self.config.fuel_slice.max(1),
            },
            stop: slot.stop.clone(),
            deadline,
            deadline_text: ctx.deadline.map_or("none".to_string(), |d| format!("{d:?}")),
        };
        let stop = slot.stop.clone();
        let deadline_text = limits.deadline_text.clone();
        let job = RunJob {
            engine: self.engine.clone(),
            linker: self.linker.clone(),
            prepared,
            argv,
            env,
            mounts,
            stdout: stdout.clone(),
            stderr: stderr.clone(),
            limits,
        };
        let mut done = tokio::task::spawn_blocking(move || run_blocking(job));

        // The run thread enforces the deadline itself; this wait is the backstop for a host
        // call that would not return.
        let give_up = deadline.and_then(|d| d.checked_add(self.config.stop_grace));
        let joined = match give_up {
            None => Some((&mut done).await),
            Some(give_up) => {
                let give_up = tokio::time::Instant::from_std(give_up);
                match tokio::time::timeout_at(give_up, &mut done).await {
                    Ok(joined) => Some(joined),
                    Err(_) => {
                        stop.request(StopReason::Deadline);
                        tokio::time::timeout(self.config.stop_grace, &mut done).await.ok()
                    }
                }
            }
        };
        let ending = match joined {
            Some(Ok(Ok(ending))) => ending,
            Some(Ok(Err(setup))) => return Err((setup, None)),
            // A panic in wasmi or the WASI layer: contained to this execution.
            Some(Err(e)) => {
                Ending::Failed(failure(FailureKind::Internal, format!("the WASM run crashed: {e}")))
            }
            None => Ending::Failed(failure(
                FailureKind::Timeout,
                format!("execution exceeded its timeout of {deadline_text} (stuck in a host call)"),
            )),
        };

        // Writing past the output cap is the task's fault, whatever it did after the error.
        let over = [("stdout", &stdout), ("stderr", &stderr)]
            .into_iter()
            .find_map(|(name, c)| c.over_limit().map(|o| (name, o)));
        let ending = match (ending, over) {
            (Ending::Failed(f), _) if f.kind != FailureKind::TaskFailed => Ending::Failed(f),
            (_, Some((name, o))) => Ending::Failed(failure(
                FailureKind::TaskFailed,
                format!(
                    "{name} exceeded the node's output limit of {} bytes (the result file keeps the first {} bytes)",
                    o.cap, o.cap
                ),
            )),
            (ending, None) => ending,
        };
        let exit_code = match &ending {
            Ending::Exited(code) => i64::from(*code),
            Ending::Failed(_) => 1,
        };
        let out = stdout.finish();
        let err = stderr.finish();
        let exit_written = std::fs::write(ctx.results_dir.join("exitCode"), exit_code.to_string());
        let (out, err) = match (out, err, exit_written) {
            (Ok(out), Ok(err), Ok(())) => (out, err),
            (Err(e), _, _) | (_, Err(e), _) => {
                return Err(internal(format!("writing output: {e}")));
            }
            (_, _, Err(e)) => return Err(internal(format!("writing exitCode: {e}"))),
        };
        let mut output = run_output(&out, &err, exit_code, ctx.output_limits);
        match ending {
            Ending::Exited(_) => Ok(output),
            Ending::Failed(f) => {
                output.error_msg = f.message.clone();
                Err((f, Some(output)))
            }
        }
    }

    async fn cancel(&self, execution_id: &str) {
        // Creates the slot if needed, so a cancel that overtakes `run` is still honoured.
        self.slot(execution_id).stop.request(StopReason::Cancelled);
    }

    async fn adopt(
        &self,
        _ctx: &ExecutionContext,
        _logs: Arc<dyn LogSink>,
    ) -> Result<RunOutput, (ExecFailure, Option<RunOutput>)> {
        Err((
            failure(
                FailureKind::NodeRestarted,
                "WASM executions run inside the node process and cannot survive a restart",
            ),
            None,
        ))
    }

    async fn cleanup(&self, execution_id: &str) {
        self.executions().remove(execution_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_limits_are_whole_pages_with_a_default() {
        let exec = WasmExecutor::default();
        assert_eq!(exec.memory_limit(1), 64 * 1024);
        assert_eq!(exec.memory_limit(64 * 1024), 64 * 1024);
        assert_eq!(exec.memory_limit(64 * 1024 + 1), 128 * 1024);
        assert_eq!(exec.memory_limit(0), 1024 * 1024 * 1024);
    }

    #[test]
    fn the_fuel_budget_scales_with_cpu_and_timeout() {
        let exec = WasmExecutor::default();
        let two_s = Some(Duration::from_secs(2));
        assert_eq!(exec.fuel_budget(0.5, two_s), Some(FUEL_PER_CORE_SECOND));
        assert_eq!(exec.fuel_budget(0.0, two_s), Some(2 * FUEL_PER_CORE_SECOND), "0 = one core");
        assert_eq!(exec.fuel_budget(f64::NAN, two_s), Some(2 * FUEL_PER_CORE_SECOND));
        assert_eq!(exec.fuel_budget(1.0, None), None, "no timeout, no budget");
        assert_eq!(exec.fuel_budget(1e-12, Some(Duration::from_millis(1))), Some(1));
        assert_eq!(exec.fuel_budget(1e30, two_s), Some(u64::MAX), "saturates");
    }
}
