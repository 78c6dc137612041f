//! The job model, wire-compatible with Bacalhau v1 (`../shared/reference/bacalhau-api.md`
//! §0–§1, §3.2).
//!
//! Every type here encodes exactly as Bacalhau's Go server does (PascalCase keys with the few
//! lower-case exceptions, job state as a string, execution states as v1.6+ integers,
//! nanosecond `CreateTime` versus RFC 3339 `Time`), and decodes leniently, as Go does
//! (case-insensitive keys, unknown keys ignored) — see [`lenient`] and [`codec`].

pub mod codec;
pub mod engines;
pub mod evaluation;
pub mod execution;
pub mod history;
pub mod ident;
pub mod job;
pub mod lenient;
pub mod node;
pub mod resources;
pub mod selector;
pub mod states;
pub mod time;
pub mod validate;

pub use codec::{DecodeError, MAX_SPEC_BYTES};
pub use engines::{DockerEngineSpec, WasmEngineSpec};
pub use evaluation::{EvalStatus, EvalTrigger, Evaluation};
pub use execution::{Execution, RunCommandResult};
pub use history::{Event, JobHistory, StateChange};
pub use job::{
    InputSource, Job, NetworkConfig, Port, ResourcesConfig, ResultPath, SpecConfig, Task,
    TimeoutConfig,
};
pub use node::{BuildVersionInfo, ComputeNodeInfo, ConnectionState, NodeInfo, NodeState};
pub use resources::{AllocatedResources, Gpu, Resources};
pub use selector::{Constraints, LabelSelectorRequirement, Operator, parse_selector};
pub use states::{
    ExecutionDesiredStateType, ExecutionStateType, JobHistoryType, JobStateType, JobType,
    NetworkType, NodeConnection, NodeMembership, NodeType, State,
};
pub use time::{Timestamp, WallTime};
pub use validate::{FieldError, ValidationErrors};
