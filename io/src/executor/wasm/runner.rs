//! Running a prepared module to its end on the current (blocking) thread.
//!
//! The entrypoint is called with [`wasmi::Func::call_resumable`] and a small amount of fuel.
//! Each time the slice is used up wasmi hands back a [`ResumableCall::OutOfFuel`]; the loop
//! then checks the stop flag and the deadline, charges the slice against the execution's fuel
//! budget and resumes with a fresh slice. Running out of *budget* is the `OutOfFuel` failure;
//! running out of a *slice* is just a scheduling point. This is how a wall-clock deadline and
//! `cancel` are enforced on an interpreter that has no epoch interruption.

use std::sync::Arc;
use std::time::Instant;

use gadus_core::protocol::{ExecFailure, FailureKind};
use wasmi::errors::{ErrorKind, MemoryError};
use wasmi::{Engine, Func, Linker, ResourceLimiter, ResumableCall, Store, TrapCode, Val};
use wasmi_core::LimiterError;
use wasmi_wasi::WasiCtx;

use super::sched::{StopFlag, StopReason};
use super::spec::Prepared;
use crate::executor::failure;

/// What a store carries: the WASI context and the resource limiter.
pub(crate) struct Host {
    pub wasi: WasiCtx,
    pub limiter: Limiter,
}

/// What a growth request was refused for (to word the failure).
#[derive(Clone, Copy, Debug)]
enum Denied {
    Memory { desired: usize },
    Table { desired: usize },
}

/// Store limits that trap on refusal (a refused `memory.grow` returning -1 makes most programs
/// fail obscurely later) and remember what was refused.
pub(crate) struct Limiter {
    memory_bytes: usize,
    table_elements: usize,
    instances: usize,
    denied: Option<Denied>,
}

impl Limiter {
    /// Limits for a store that will instantiate `modules` modules (each may have one memory and
    /// a few tables under wasmi's strict limits).
    pub(crate) fn new(memory_bytes: usize, table_elements: usize, modules: usize) -> Self {
        Limiter { memory_bytes, table_elements, instances: modules, denied: None }
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> Result<bool, LimiterError> {
        if desired > self.memory_bytes || maximum.is_some_and(|m| desired > m) {
            self.denied = Some(Denied::Memory { desired });
            return Err(LimiterError::ResourceLimiterDeniedAllocation);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> Result<bool, LimiterError> {
        if desired > self.table_elements || maximum.is_some_and(|m| desired > m) {
            self.denied = Some(Denied::Table { desired });
            return Err(LimiterError::ResourceLimiterDeniedAllocation);
        }
        Ok(true)
    }

    fn memory_grow_failed(&mut self, _error: &MemoryError) -> Result<(), LimiterError> {
        // The host could not supply memory the limit allowed: still out of memory.
        self.denied.get_or_insert(Denied::Memory { desired: self.memory_bytes });
        Err(LimiterError::ResourceLimiterDeniedAllocation)
    }

    fn instances(&self) -> usize {
        self.instances
    }

    fn tables(&self) -> usize {
        // wasmi's strict module limits allow up to 100 tables per module.
        self.instances.saturating_mul(100)
    }

    fn memories(&self) -> usize {
        self.instances
    }
}

/// Fuel limits of one run.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FuelPlan {
    /// Total fuel the run may consume; `None` for no budget (the run is still sliced).
    pub budget: Option<u64>,
    /// Fuel per slice: the granularity of deadline and cancel checks.
    pub slice: u64,
}

/// Hands out fuel slice by slice against the budget.
struct FuelMeter {
    plan: FuelPlan,
    /// Fuel given to the store so far (consumed plus what the store still holds).
    granted: u64,
}

impl FuelMeter {
    fn consumed(&self, store: &Store<Host>) -> u64 {
        self.granted.saturating_sub(store.get_fuel().unwrap_or(0))
    }

    /// Gives the store a new slice of at least `required`; `false` if the budget cannot.
    fn refill(&mut self, store: &mut Store<Host>, required: u64) -> bool {
        let consumed = self.consumed(store);
        let remaining = self.plan.budget.map_or(u64::MAX, |b| b.saturating_sub(consumed));
        if remaining == 0 || remaining < required {
            return false;
        }
        let slice = self.plan.slice.max(required).min(remaining);
        if store.set_fuel(slice).is_err() {
            return false;
        }
        self.granted = consumed.saturating_add(slice);
        true
    }
}

/// How a run ended.
#[derive(Debug)]
pub(crate) enum Ending {
    /// `proc_exit(code)`, or the entrypoint returned (code 0).
    Exited(i32),
    /// A trap, a limit, a stop, or a spec problem found at instantiation.
    Failed(ExecFailure),
}

/// The outcome of [`execute`].
#[derive(Debug)]
pub(crate) struct Outcome {
    pub ending: Ending,
    pub fuel_consumed: u64,
}

/// Where the run was when it failed (instantiation errors are the spec's fault).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Instantiate,
    Run,
}

/// Everything [`execute`] needs besides the modules.
pub(crate) struct Limits {
    pub memory_bytes: usize,
    pub table_elements: usize,
    pub fuel: FuelPlan,
    pub stop: Arc<StopFlag>,
    pub deadline: Option<Instant>,
    /// Described in timeout messages.
    pub deadline_text: String,
}

/// Instantiates the import modules and the entry module, then runs the entrypoint.
pub(crate) fn execute(
    engine: &Engine,
    base_linker: &Linker<Host>,
    prepared: &Prepared,
    wasi: WasiCtx,
    limits: &Limits,
) -> Outcome {
    let modules = prepared.imports.len() + 1;
    let limiter = Limiter::new(limits.memory_bytes, limits.table_elements, modules);
    let mut store = Store::new(engine, Host { wasi, limiter });
    store.limiter(|host| &mut host.limiter);
    let mut meter = FuelMeter { plan: limits.fuel, granted: 0 };
    let ending = run(&mut store, &mut meter, base_linker, prepared, limits);
    Outcome { ending, fuel_consumed: meter.consumed(&store) }
}

fn run(
    store: &mut Store<Host>,
    meter: &mut FuelMeter,
    base_linker: &Linker<Host>,
    prepared: &Prepared,
    limits: &Limits,
) -> Ending {
    let mut linker = base_linker.clone();
    // Start functions run inside instantiation, which cannot be resumed: they get one slice.
    for (names, module) in &prepared.imports {
        if !meter.refill(store, 0) {
            return out_of_fuel(meter);
        }
        let instance = match linker.instantiate_and_start(&mut *store, module) {
            Ok(instance) => instance,
            Err(e) => return classify(&e, store, meter, limits, Phase::Instantiate),
        };
        for name in names {
            if let Err(e) = linker.instance(&mut *store, name, instance) {
                return Ending::Failed(failure(
                    FailureKind::InvalidSpec,
                    format!("registering import module {name:?}: {e}"),
                ));
            }
        }
    }
    if !meter.refill(store, 0) {
        return out_of_fuel(meter);
    }
    let instance = match linker.instantiate_and_start(&mut *store, &prepared.entry) {
        Ok(instance) => instance,
        Err(e) => return classify(&e, store, meter, limits, Phase::Instantiate),
    };
    if let Some(reason) = limits.stop.check(limits.deadline) {
        return stopped(reason, limits);
    }
    let Some(func) = instance.get_func(&*store, &prepared.entrypoint) else {
        // `prepare` checked the export; reaching this means the module changed under us.
        return Ending::Failed(failure(
            FailureKind::InvalidSpec,
            format!(
                "entrypoint {:?} is not an exported function of {}",
                prepared.entrypoint, prepared.entry_path
            ),
        ));
    };
    call_sliced(store, meter, func, limits)
}

fn call_sliced(
    store: &mut Store<Host>,
    meter: &mut FuelMeter,
    func: Func,
    limits: &Limits,
) -> Ending {
    // The entrypoint's results (if any) are ignored, as in Bacalhau; they still need slots.
    let mut outputs: Vec<Val> =
        func.ty(&*store).results().iter().map(|ty| Val::default_for_ty(*ty)).collect();
    if !meter.refill(store, 0) {
        return out_of_fuel(meter);
    }
    let mut call = func.call_resumable(&mut *store, &[], &mut outputs);
    loop {
        match call {
            Ok(ResumableCall::Finished) => return Ending::Exited(0),
            Ok(ResumableCall::OutOfFuel(pending)) => {
                if let Some(reason) = limits.stop.check(limits.deadline) {
                    return stopped(reason, limits);
                }
                if !meter.refill(store, pending.required_fuel()) {
                    return out_of_fuel(meter);
                }
                call = pending.resume(&mut *store, &mut outputs);
            }
            Ok(ResumableCall::HostTrap(trap)) => {
                // Never resumed: a host function failing is the end of the run (`proc_exit`
                // included).
                let error = trap.into_host_error();
                return classify(&error, store, meter, limits, Phase::Run);
            }
            Err(e) => return classify(&e, store, meter, limits, Phase::Run),
        }
    }
}

fn out_of_fuel(meter: &FuelMeter) -> Ending {
    let budget = meter.plan.budget.map_or("unlimited".to_string(), |b| b.to_string());
    Ending::Failed(failure(
        FailureKind::OutOfFuel,
        format!(
            "out of fuel: the module used its budget of {budget} fuel (derived from the task's \
             CPU limit and execution timeout)"
        ),
    ))
}

fn stopped(reason: StopReason, limits: &Limits) -> Ending {
    Ending::Failed(match reason {
        StopReason::Cancelled => failure(FailureKind::Internal, "cancelled"),
        StopReason::Deadline => failure(
            FailureKind::Timeout,
            format!("execution exceeded its timeout of {}", limits.deadline_text),
        ),
    })
}

fn mib(bytes: usize) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// Turns a wasmi error into how the run ended.
fn classify(
    error: &wasmi::Error,
    store: &Store<Host>,
    meter: &FuelMeter,
    limits: &Limits,
    phase: Phase,
) -> Ending {
    if let Some(code) = error.i32_exit_status() {
        return Ending::Exited(code);
    }
    let denied = store.data().limiter.denied;
    let memory_failure = |desired: usize| {
        failure(
            FailureKind::OutOfMemory,
            format!(
                "out of memory: the module asked for {} of linear memory, the limit is {}",
                mib(desired),
                mib(limits.memory_bytes)
            ),
        )
    };
    let table_failure = |desired: usize| {
        failure(
            FailureKind::TaskFailed,
            format!(
                "table limit exceeded: the module asked for {desired} table elements, the limit \
                 is {}",
                limits.table_elements
            ),
        )
    };
    if let Some(code) = error.as_trap_code() {
        let f = match code {
            TrapCode::OutOfFuel => {
                // Fuel runs out without a resumable call only inside instantiation (a start
                // function), where the slice is the limit.
                if meter.plan.budget.is_some_and(|b| meter.consumed(store) >= b) {
                    return out_of_fuel(meter);
                }
                failure(
                    FailureKind::OutOfFuel,
                    format!(
                        "out of fuel: a start function used more than the {} fuel allowed during \
                         instantiation",
                        meter.plan.slice
                    ),
                )
            }
            TrapCode::GrowthOperationLimited | TrapCode::OutOfSystemMemory => match denied {
                Some(Denied::Table { desired }) => table_failure(desired),
                Some(Denied::Memory { desired }) => memory_failure(desired),
                None => memory_failure(limits.memory_bytes),
            },
            TrapCode::StackOverflow => failure(
                FailureKind::TaskFailed,
                "stack overflow: call depth or value stack limit exceeded (runaway recursion?)",
            ),
            TrapCode::UnreachableCodeReached => {
                failure(FailureKind::TaskFailed, "unreachable instruction executed")
            }
            other => failure(FailureKind::TaskFailed, format!("trap: {}", other.trap_message())),
        };
        return Ending::Failed(f);
    }
    // A refusal outside executing code: an initial memory (or table) above the limit, which
    // wasmi reports as an instantiation error wrapping the limiter's refusal.
    match denied {
        Some(Denied::Memory { desired }) => return Ending::Failed(memory_failure(desired)),
        Some(Denied::Table { desired }) => return Ending::Failed(table_failure(desired)),
        None => {}
    }
    if let Some(reason) = limits.stop.get() {
        // A host call (sleep, poll) noticed the stop and trapped.
        return stopped(reason, limits);
    }
    if phase == Phase::Instantiate {
        let kind = match error.kind() {
            ErrorKind::Linker(_) | ErrorKind::Instantiation(_) => FailureKind::InvalidSpec,
            _ => FailureKind::TaskFailed,
        };
        return Ending::Failed(failure(kind, format!("instantiating the module: {error}")));
    }
    Ending::Failed(failure(FailureKind::TaskFailed, format!("host call failed: {error}")))
}
