//! The job specification: `Job`, `Task` and the pieces a task is made of.
//!
//! Field names, optionality and `omitempty` behaviour follow Bacalhau's Go structs exactly, so a
//! job encoded here is byte-for-byte what Bacalhau's server would answer (keys sorted as Go
//! sorts map keys; struct fields in declaration order).

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

use super::selector::LabelSelectorRequirement;
use super::states::{JobStateType, JobType, NetworkType, State};

/// A unit of work submitted by a user (Bacalhau `models.Job`).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Job {
    /// Server-generated `j-<uuid>`.
    #[serde(rename = "ID")]
    pub id: String,
    /// Logical name; defaults to the ID.
    pub name: String,
    /// Defaults to `default`.
    pub namespace: String,
    /// `batch`, `service`, `ops` or `daemon`.
    #[serde(rename = "Type")]
    pub job_type: JobType,
    /// Scheduling priority (higher first).
    pub priority: i64,
    /// Partitions (batch) or replicas (service); 0 for ops/daemon.
    pub count: i64,
    /// Node label constraints; `favour_`-prefixed keys are soft preferences.
    pub constraints: Vec<LabelSelectorRequirement>,
    /// Free-form metadata; keys under `bacalhau.org/` are reserved for the server.
    pub meta: BTreeMap<String, String>,
    /// Labels users can filter jobs by.
    pub labels: BTreeMap<String, String>,
    /// Exactly one task is supported.
    pub tasks: Vec<Task>,
    /// Current state (ignored on submission).
    pub state: State<JobStateType>,
    /// Spec version, bumped on update.
    pub version: u64,
    /// Bumped on every change.
    pub revision: u64,
    /// Unix nanoseconds.
    pub create_time: i64,
    /// Unix nanoseconds.
    pub modify_time: i64,
}

/// The decoding shape of [`Job`]: identical except that it can tell an absent `Count` from 0.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct JobWire {
    #[serde(rename = "ID", default)]
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: String,
    #[serde(rename = "Type", default)]
    job_type: JobType,
    #[serde(default)]
    priority: i64,
    #[serde(default)]
    count: Option<i64>,
    #[serde(default, deserialize_with = "null_as_default")]
    constraints: Vec<LabelSelectorRequirement>,
    #[serde(default, deserialize_with = "null_as_default")]
    meta: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "null_as_default")]
    labels: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "null_as_default")]
    tasks: Vec<Task>,
    #[serde(default)]
    state: State<JobStateType>,
    #[serde(default)]
    version: u64,
    #[serde(default)]
    revision: u64,
    #[serde(default)]
    create_time: i64,
    #[serde(default)]
    modify_time: i64,
}

impl<'de> Deserialize<'de> for Job {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = JobWire::deserialize(d)?;
        // Like Bacalhau: an absent Count means 1 for batch and service jobs; an explicit 0 is
        // kept (it stops a service).
        let count = match (w.count, &w.job_type) {
            (Some(c), _) => c,
            (None, JobType::Batch | JobType::Service) => 1,
            (None, _) => 0,
        };
        Ok(Job {
            id: w.id,
            name: w.name,
            namespace: w.namespace,
            job_type: w.job_type,
            priority: w.priority,
            count,
            constraints: w.constraints,
            meta: w.meta,
            labels: w.labels,
            tasks: w.tasks,
            state: w.state,
            version: w.version,
            revision: w.revision,
            create_time: w.create_time,
            modify_time: w.modify_time,
        })
    }
}

impl Job {
    /// The job's single task, if it has one.
    pub fn task(&self) -> Option<&Task> {
        self.tasks.first()
    }

    /// Whether the job is in a terminal state.
    pub fn is_terminal(&self) -> bool {
        self.state.state_type.is_terminal()
    }
}

/// Go's `null` for a slice or map decodes to empty.
pub(crate) fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// What to run and with what (Bacalhau `models.Task`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Task {
    /// Required; the CLI defaults it to `main`.
    #[serde(default)]
    pub name: String,
    /// The execution engine (`docker`, `wasm`, `noop`).
    #[serde(default)]
    pub engine: Option<SpecConfig>,
    /// Where results go; required when `ResultPaths` is non-empty.
    #[serde(default)]
    pub publisher: Option<SpecConfig>,
    /// Environment variables (keys `[A-Z][A-Z0-9_]*`, not `BACALHAU_`-prefixed).
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub env: BTreeMap<String, String>,
    /// Free-form metadata.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub meta: BTreeMap<String, String>,
    /// Data mounted into the task.
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "Vec::is_empty")]
    pub input_sources: Vec<InputSource>,
    /// Folders collected as results.
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "Vec::is_empty")]
    pub result_paths: Vec<ResultPath>,
    /// Requested resources, as strings (`500m`, `1gb`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourcesConfig>,
    /// Network access.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkConfig>,
    /// Timeouts in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<TimeoutConfig>,
}

impl Task {
    /// The timeouts, or all-zero ones.
    pub fn timeouts(&self) -> TimeoutConfig {
        self.timeouts.clone().unwrap_or_default()
    }

    /// The network config, or the default one.
    pub fn network_type(&self) -> NetworkType {
        self.network.as_ref().map(|n| n.network_type).unwrap_or_default()
    }

    /// The engine type, lower-cased (`""` when absent).
    pub fn engine_type(&self) -> String {
        self.engine.as_ref().map(|e| e.type_key()).unwrap_or_default()
    }

    /// The publisher type, lower-cased (`""` when absent).
    pub fn publisher_type(&self) -> String {
        self.publisher.as_ref().map(|p| p.type_key()).unwrap_or_default()
    }
}

/// A typed, parameterised component: engine, publisher or storage source.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SpecConfig {
    /// Component type; compared case-insensitively.
    #[serde(rename = "Type", default)]
    pub spec_type: String,
    /// Component parameters (free-form JSON).
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "serde_json::Map::is_empty"
    )]
    pub params: serde_json::Map<String, serde_json::Value>,
}

impl SpecConfig {
    /// A config of `spec_type` without parameters.
    pub fn new(spec_type: impl Into<String>) -> Self {
        SpecConfig { spec_type: spec_type.into(), params: serde_json::Map::new() }
    }

    /// Adds a parameter.
    pub fn with_param(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.params.insert(key.to_string(), value.into());
        self
    }

    /// The type trimmed and lower-cased, for comparisons and capability sets.
    pub fn type_key(&self) -> String {
        self.spec_type.trim().to_ascii_lowercase()
    }

    /// Whether the type matches `t`, ignoring case.
    pub fn is_type(&self, t: &str) -> bool {
        self.spec_type.trim().eq_ignore_ascii_case(t.trim())
    }

    /// No type and no parameters.
    pub fn is_empty(&self) -> bool {
        self.spec_type.is_empty() && self.params.is_empty()
    }

    /// A parameter looked up ignoring the key's case (Go decodes params with mapstructure,
    /// which is case-insensitive).
    pub fn param(&self, key: &str) -> Option<&serde_json::Value> {
        self.params.get(key).or_else(|| {
            self.params.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v)
        })
    }

    /// A string parameter, ignoring key case.
    pub fn param_str(&self, key: &str) -> Option<&str> {
        self.param(key).and_then(|v| v.as_str())
    }
}

/// Data to make available to the task (Bacalhau `models.InputSource`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct InputSource {
    /// The storage source (`ipfs`, `urlDownload`, `s3`, `inline`, `local`).
    #[serde(default)]
    pub source: Option<SpecConfig>,
    /// Optional name, unique within the task.
    #[serde(default)]
    pub alias: String,
    /// Where it appears inside the task; unique within the task.
    #[serde(default)]
    pub target: String,
}

/// A folder collected as a result (Bacalhau `models.ResultPath`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ResultPath {
    /// Name of the result folder.
    #[serde(default)]
    pub name: String,
    /// Path inside the task.
    #[serde(default)]
    pub path: String,
}

/// Requested resources as the user wrote them (Bacalhau `models.ResourcesConfig`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ResourcesConfig {
    /// Kubernetes CPU quantity: `500m`, `1.5`, `2`.
    #[serde(
        rename = "CPU",
        default,
        deserialize_with = "string_or_number",
        skip_serializing_if = "String::is_empty"
    )]
    pub cpu: String,
    /// Humanized bytes: `512Mb`, `1gb`, `1.5GiB`, `1048576`.
    #[serde(
        rename = "Memory",
        default,
        deserialize_with = "string_or_number",
        skip_serializing_if = "String::is_empty"
    )]
    pub memory: String,
    /// Humanized bytes.
    #[serde(
        rename = "Disk",
        default,
        deserialize_with = "string_or_number",
        skip_serializing_if = "String::is_empty"
    )]
    pub disk: String,
    /// Whole GPUs.
    #[serde(
        rename = "GPU",
        default,
        deserialize_with = "string_or_number",
        skip_serializing_if = "String::is_empty"
    )]
    pub gpu: String,
}

/// Resource strings are strings on the wire, but YAML writers often type `CPU: 1`. Accept a
/// number too (its decimal text), and `null` as empty.
fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        S(String),
        U(u64),
        I(i64),
        F(f64),
    }
    Ok(match Option::<Raw>::deserialize(d)? {
        None => String::new(),
        Some(Raw::S(s)) => s,
        Some(Raw::U(n)) => n.to_string(),
        Some(Raw::I(n)) => n.to_string(),
        Some(Raw::F(f)) => f.to_string(),
    })
}

/// Network access for the task (Bacalhau `models.NetworkConfig`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkConfig {
    /// `Default`, `None`, `Host`, `Full`, `HTTP`, `Bridge`.
    #[serde(rename = "Type", default)]
    pub network_type: NetworkType,
    /// Allowed domains (HTTP mode only).
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "Vec::is_empty")]
    pub domains: Vec<String>,
    /// Port mappings (Host/Bridge/Full only).
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<Port>,
}

/// A port mapping (Bacalhau `models.Port`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Port {
    /// Name, a valid environment variable name.
    #[serde(default)]
    pub name: String,
    /// Fixed host port (0 = allocate).
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub r#static: i64,
    /// Port inside the task (bridge mode).
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub target: i64,
    /// Host interface to bind.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host_network: String,
}

/// Timeouts in whole seconds; 0 means "not set" (Bacalhau `models.TimeoutConfig`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TimeoutConfig {
    /// Per attempt, from when it starts running; falls back to TotalTimeout.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub execution_timeout: i64,
    /// How long the job may wait for a suitable node.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub queue_timeout: i64,
    /// End to end (batch and ops only).
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub total_timeout: i64,
}

impl TimeoutConfig {
    /// The effective per-attempt timeout in seconds (ExecutionTimeout, else TotalTimeout).
    pub fn effective_execution_timeout(&self) -> i64 {
        if self.execution_timeout > 0 { self.execution_timeout } else { self.total_timeout }
    }
}

pub(crate) fn is_zero_i64(n: &i64) -> bool {
    *n == 0
}
