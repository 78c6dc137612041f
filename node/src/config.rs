//! Node configuration: defaults < `config.yaml` in the data dir < `GADUS_<KEY_PATH>`
//! environment variables < command-line flags.
//!
//! Keys follow Bacalhau's current ones (`API.Port`, `Orchestrator.Enabled`, `Compute.Enabled`,
//! `Labels`, `Compute.AllocatedCapacity.CPU`, `JobAdmissionControl.*`, `JobDefaults.*`, ...).
//! The layers are merged as JSON trees (keys matched case-insensitively, as Bacalhau does) and
//! then decoded into [`NodeConfig`]; an environment variable names a key path in upper case
//! with `.` replaced by `_` (`GADUS_API_PORT`, `GADUS_COMPUTE_ALLOCATEDCAPACITY_CPU`).
//! Durations are Go-style strings (`30s`, `1m30s`, `500ms`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use gadus_core::model::lenient::CaseInsensitive;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The whole node configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct NodeConfig {
    /// Where state lives (`~/.gadus`).
    pub data_dir: String,
    /// Node labels jobs can select on.
    pub labels: BTreeMap<String, String>,
    /// The REST API.
    #[serde(rename = "API")]
    pub api: ApiConfig,
    /// Orchestrator role.
    pub orchestrator: OrchestratorSection,
    /// Compute role.
    pub compute: ComputeSection,
    /// Admission rules for jobs on this compute node.
    pub job_admission_control: AdmissionSection,
    /// Defaults applied to submitted jobs.
    pub job_defaults: JobDefaultsSection,
    /// Engines.
    pub engines: Toggles,
    /// Input sources.
    pub input_sources: InputSection,
    /// Publishers.
    pub publishers: PublishersSection,
    /// Peer-to-peer network.
    pub network: NetworkSection,
    /// Logs.
    pub logging: LoggingSection,
    /// The embedded content store (gadus's keys).
    pub data_store: DataStoreSection,
}

/// `DataStore.*` (gadus's): what uploads into the embedded content store may use.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct DataStoreSection {
    /// Largest CAR one request may upload (`POST /api/v1/data/car`, `gadus data add`).
    pub max_upload_bytes: u64,
    /// Most the content store may hold: a quantity (`50GB`) or a share of the data
    /// directory's filesystem (`50%`). An upload that would take it past is refused (507).
    pub quota: String,
    /// Free space the node keeps on the data directory's filesystem (`5%`, `2GB`): an upload
    /// that would leave less is refused (507) and its spool removed.
    pub min_free_disk: String,
}

impl Default for DataStoreSection {
    fn default() -> Self {
        DataStoreSection {
            max_upload_bytes: 8 << 30,
            quota: "50%".into(),
            min_free_disk: "5%".into(),
        }
    }
}

/// `API.*`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ApiConfig {
    /// Bind address.
    pub host: String,
    /// Port (Bacalhau's default 1234).
    pub port: u16,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Per-request timeout (websockets excepted).
    pub request_timeout: String,
    /// gadus's: open connections at most (plain and TLS); when full, the longest-idle
    /// connection is closed for a new one, or the newcomer gets a 503 if none is idle. Also
    /// kept below the process's file limit.
    pub max_connections: usize,
    /// gadus's: how long a connection may take to send a request's headers, and how long it
    /// may sit idle between requests (HTTP/1), before it is closed. TLS handshakes get as long.
    pub header_timeout: String,
    /// gadus's: writes (PUT, POST, DELETE, ...) a second per client address, with twice that
    /// as burst; more get 429 with Retry-After. 0 = no limit.
    pub writes_per_second: u32,
    /// gadus's: client ranges (CIDR) whose writes are not limited; loopback by default.
    pub rate_limit_exempt: Vec<String>,
    /// Authentication methods and the access policy.
    pub auth: AuthSection,
    /// TLS for the API.
    #[serde(rename = "TLS")]
    pub tls: TlsSection,
}

/// `API.TLS.*` (Bacalhau's names).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct TlsSection {
    /// PEM certificate chain.
    pub cert_file: String,
    /// PEM private key.
    pub key_file: String,
    /// Make and serve a self-signed certificate (kept in `<data dir>/tls/`).
    pub self_signed: bool,
    /// Obtain and renew the certificate for this host name over ACME (`--autocert`).
    pub auto_cert: String,
    /// Where the ACME account and certificates are cached; empty = `<data dir>/autocert-cache`.
    pub auto_cert_cache_path: String,
    /// The ACME directory URL (gadus's key); empty = Let's Encrypt's production directory.
    pub auto_cert_directory: String,
    /// A PEM root to trust for the ACME server's own HTTPS (gadus's key: a private CA or a
    /// test CA such as pebble's); empty = the system's roots.
    #[serde(rename = "AutoCertCAFile")]
    pub auto_cert_ca_file: String,
}

/// `API.Auth.*` (Bacalhau's names).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct AuthSection {
    /// Authentication methods by name (`ClientKey: {Type: challenge}` by default).
    pub methods: BTreeMap<String, AuthMethodSection>,
    /// The Rego policy judging every request (`bacalhau.authz.allow`/`token_valid`): a
    /// path or `builtin:<name>`. The default, `builtin:anonymous`, is Bacalhau's open mode
    /// plus ownership (only a job's owner stops it, updates it, reads its logs and results);
    /// empty = every request allowed (Bacalhau's own default).
    pub access_policy_path: String,
}

/// `API.Auth.Methods.<name>`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct AuthMethodSection {
    /// `challenge` or `ask`.
    #[serde(rename = "Type")]
    pub kind: String,
    /// The Rego policy issuing tokens (`bacalhau.authn.token`), a path or `builtin:<name>`;
    /// empty = builtin:challenge-anon for a challenge method.
    pub policy_path: String,
    /// gadus's: a JSON file of username -> [scrypt hash, salt] (`gadus auth hash-password`),
    /// given to the policy as `data.gadus.users` (builtin:password reads it).
    pub users_file: String,
    /// gadus's: client IDs (comma-separated), given to the policy as
    /// `data.gadus.allowed_clients` (builtin:allowed-clients reads it).
    pub allowed_clients: String,
}

impl Default for AuthSection {
    fn default() -> Self {
        let mut methods = BTreeMap::new();
        methods.insert(
            "ClientKey".to_string(),
            AuthMethodSection { kind: "challenge".into(), ..Default::default() },
        );
        AuthSection { methods, access_policy_path: "builtin:anonymous".into() }
    }
}

impl Default for AuthMethodSection {
    fn default() -> Self {
        AuthMethodSection {
            kind: "challenge".into(),
            policy_path: String::new(),
            users_file: String::new(),
            allowed_clients: String::new(),
        }
    }
}

/// `Orchestrator.*`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct OrchestratorSection {
    /// Run the orchestrator.
    pub enabled: bool,
    /// Node liveness and approval.
    pub node_manager: NodeManagerSection,
    /// Scheduling.
    pub scheduler: SchedulerSection,
}

/// `Orchestrator.NodeManager.*`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct NodeManagerSection {
    /// Silence after which a node is disconnected.
    pub disconnect_timeout: String,
    /// New nodes wait for an operator's approval.
    pub manual_approval: bool,
}

/// `Orchestrator.Scheduler.*`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct SchedulerSection {
    /// How often a queued job looks for nodes again.
    pub queue_backoff: String,
    /// How long a job without QueueTimeout waits for busy (not unsuitable) nodes.
    pub busy_queue_timeout: String,
    /// How long a node may take to answer a bid.
    pub bid_timeout: String,
    /// Failed attempts per partition before a batch job fails.
    pub max_attempts: u32,
    /// First retry delay (doubles per failure).
    pub retry_backoff: String,
    /// Longest retry delay.
    pub max_retry_backoff: String,
}

/// `Compute.*`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ComputeSection {
    /// Run the compute role.
    pub enabled: bool,
    /// Share of this machine offered to jobs (`80%`) or absolute amounts (`2`, `4gb`).
    pub allocated_capacity: CapacitySection,
    /// Heartbeats.
    pub heartbeat: HeartbeatSection,
    /// Host paths jobs may mount with `local` inputs: `path[:ro|:rw]`.
    pub allow_listed_local_paths: Vec<String>,
    /// stdout/stderr bytes returned inline in an execution.
    pub max_inline_output_bytes: usize,
    /// Node IDs (libp2p peer IDs) of the only orchestrators this compute node takes work
    /// from; empty = any peer (an open cluster).
    pub allowed_orchestrators: Vec<String>,
}

/// `Compute.AllocatedCapacity.*`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CapacitySection {
    /// CPU.
    #[serde(rename = "CPU")]
    pub cpu: String,
    /// Memory.
    pub memory: String,
    /// Disk.
    pub disk: String,
    /// GPU.
    #[serde(rename = "GPU")]
    pub gpu: String,
}

/// `Compute.Heartbeat.*`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct HeartbeatSection {
    /// Heartbeat period.
    pub interval: String,
}

/// `JobAdmissionControl.*`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct AdmissionSection {
    /// `anywhere` or `local`.
    pub locality: String,
    /// Refuse jobs without inputs.
    pub reject_stateless_jobs: bool,
    /// Refuse jobs that ask for network access.
    pub reject_networked_jobs: bool,
    /// URL probed before bidding.
    #[serde(rename = "ProbeHTTP")]
    pub probe_http: String,
    /// Command run before bidding.
    pub probe_exec: String,
}

/// `JobDefaults.*`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct JobDefaultsSection {
    /// Batch jobs.
    pub batch: TypeDefaults,
    /// Ops jobs.
    pub ops: TypeDefaults,
    /// Service jobs.
    pub service: TypeDefaults,
    /// Daemon jobs.
    pub daemon: TypeDefaults,
}

/// `JobDefaults.<Type>.*`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct TypeDefaults {
    /// Priority.
    pub priority: i64,
    /// Task defaults.
    pub task: TaskDefaults,
}

/// `JobDefaults.<Type>.Task.*`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct TaskDefaults {
    /// Resources.
    pub resources: ResourceDefaults,
    /// Publisher type for tasks that name none.
    pub publisher: PublisherDefault,
    /// Timeouts.
    pub timeouts: TimeoutDefaults,
}

/// Resource defaults.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResourceDefaults {
    /// CPU.
    #[serde(rename = "CPU")]
    pub cpu: String,
    /// Memory.
    #[serde(rename = "Memory")]
    pub memory: String,
    /// Disk.
    #[serde(rename = "Disk")]
    pub disk: String,
    /// GPU.
    #[serde(rename = "GPU")]
    pub gpu: String,
}

/// Publisher default.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct PublisherDefault {
    /// Type (`local`, `ipfs`, ...).
    #[serde(rename = "Type")]
    pub kind: String,
}

/// Timeout defaults (Go durations).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct TimeoutDefaults {
    /// Per attempt.
    pub execution_timeout: String,
    /// Waiting for nodes.
    pub queue_timeout: String,
    /// End to end.
    pub total_timeout: String,
}

/// `Engines` / `Publishers`: what is switched off.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Toggles {
    /// Disabled types (lower-case).
    pub disabled: Vec<String>,
}

/// `Publishers.*`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct PublishersSection {
    /// Disabled types (lower-case).
    pub disabled: Vec<String>,
    /// Per-publisher settings.
    pub types: PublisherTypes,
}

/// `Publishers.Types.*`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct PublisherTypes {
    /// `Publishers.Types.Local.*`.
    pub local: LocalPublisherSection,
}

/// `Publishers.Types.Local.*`: how clients reach the archives this node serves.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct LocalPublisherSection {
    /// Host name or IP put in result URLs (default: the API host, or 127.0.0.1 when the API
    /// listens on every address).
    pub address: String,
}

/// `InputSources.*`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct InputSection {
    /// Disabled types.
    pub disabled: Vec<String>,
    /// Let `urlDownload` reach loopback addresses (devstack and tests only).
    pub allow_loopback: bool,
    /// IPFS gateways to fetch missing CIDs from.
    pub gateways: Vec<String>,
}

/// `Network.*` (libp2p).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
#[derive(Default)]
pub struct NetworkSection {
    /// Address libp2p listens on (default every IPv4 interface).
    pub host: String,
    /// libp2p TCP port (0 = any).
    pub port: u16,
    /// Bootstrap peers (`/ip4/127.0.0.1/tcp/PORT/p2p/ID`).
    pub peers: Vec<String>,
    /// Local peer discovery.
    #[serde(rename = "MDNS")]
    pub mdns: bool,
    /// Open no listener: only dial the bootstrap peers (a node behind NAT or a firewall;
    /// peers reach it over the connections it opens).
    pub dial_only: bool,
    /// A private network's swarm key (the IPFS `/key/swarm/psk/1.0.0/` file); empty = use
    /// `<data dir>/swarm.key` when it exists. Peers without the same key cannot connect.
    pub swarm_key_path: String,
}

/// `Logging.*`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct LoggingSection {
    /// `info`, `debug`, ...
    pub level: String,
    /// `default` (human) or `json`.
    pub mode: String,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            data_dir: default_data_dir().display().to_string(),
            labels: BTreeMap::new(),
            api: ApiConfig::default(),
            orchestrator: OrchestratorSection::default(),
            compute: ComputeSection::default(),
            job_admission_control: AdmissionSection::default(),
            job_defaults: JobDefaultsSection::default(),
            engines: Toggles::default(),
            input_sources: InputSection::default(),
            publishers: PublishersSection::default(),
            network: NetworkSection::default(),
            logging: LoggingSection::default(),
            data_store: DataStoreSection::default(),
        }
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            host: "0.0.0.0".into(),
            port: 1234,
            max_body_bytes: 10 * 1024 * 1024,
            request_timeout: "30s".into(),
            max_connections: 4096,
            header_timeout: "10s".into(),
            writes_per_second: 50,
            rate_limit_exempt: vec!["127.0.0.0/8".into(), "::1/128".into()],
            auth: AuthSection::default(),
            tls: TlsSection::default(),
        }
    }
}

impl Default for OrchestratorSection {
    fn default() -> Self {
        OrchestratorSection {
            enabled: true,
            node_manager: NodeManagerSection::default(),
            scheduler: SchedulerSection::default(),
        }
    }
}

impl Default for NodeManagerSection {
    fn default() -> Self {
        NodeManagerSection { disconnect_timeout: "30s".into(), manual_approval: false }
    }
}

impl Default for SchedulerSection {
    fn default() -> Self {
        SchedulerSection {
            queue_backoff: "10s".into(),
            busy_queue_timeout: "10m".into(),
            bid_timeout: "10s".into(),
            max_attempts: 3,
            retry_backoff: "1s".into(),
            max_retry_backoff: "1m".into(),
        }
    }
}

impl Default for ComputeSection {
    fn default() -> Self {
        ComputeSection {
            enabled: true,
            allocated_capacity: CapacitySection::default(),
            heartbeat: HeartbeatSection::default(),
            allow_listed_local_paths: Vec::new(),
            max_inline_output_bytes: 64 * 1024,
            allowed_orchestrators: Vec::new(),
        }
    }
}

impl Default for CapacitySection {
    fn default() -> Self {
        CapacitySection {
            cpu: "80%".into(),
            memory: "80%".into(),
            disk: "80%".into(),
            gpu: "100%".into(),
        }
    }
}

impl Default for HeartbeatSection {
    fn default() -> Self {
        HeartbeatSection { interval: "5s".into() }
    }
}

impl Default for AdmissionSection {
    fn default() -> Self {
        AdmissionSection {
            locality: "anywhere".into(),
            reject_stateless_jobs: false,
            reject_networked_jobs: false,
            probe_http: String::new(),
            probe_exec: String::new(),
        }
    }
}

impl Default for JobDefaultsSection {
    fn default() -> Self {
        let batch = TypeDefaults {
            priority: 0,
            task: TaskDefaults {
                resources: ResourceDefaults {
                    cpu: "100m".into(),
                    memory: "64Mb".into(),
                    ..Default::default()
                },
                publisher: PublisherDefault::default(),
                timeouts: TimeoutDefaults::default(),
            },
        };
        JobDefaultsSection {
            batch: batch.clone(),
            ops: batch.clone(),
            service: batch.clone(),
            daemon: batch,
        }
    }
}

impl Default for LoggingSection {
    fn default() -> Self {
        LoggingSection { level: "info".into(), mode: "default".into() }
    }
}

/// `~/.gadus`.
pub fn default_data_dir() -> PathBuf {
    std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(".")).join(".gadus")
}

/// A configuration problem (the user's fault): names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read or parsed.
    #[error("config file {path}: {error}")]
    File {
        /// Which file.
        path: String,
        /// Why.
        error: String,
    },
    /// A key has a bad value.
    #[error("config key {key}: {error}")]
    Value {
        /// The key path.
        key: String,
        /// Why.
        error: String,
    },
    /// Unknown key.
    #[error("unknown config key {0:?} (see `gadus config list`)")]
    UnknownKey(String),
}

/// Flattens a JSON tree to `Key.Path → leaf` pairs (maps like `Labels` are leaves).
pub fn flatten(v: &Value, prefix: &str, out: &mut BTreeMap<String, Value>) {
    match v {
        Value::Object(m) if prefix != "Labels" => {
            for (k, v) in m {
                let p = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(v, &p, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.clone());
        }
    }
}

/// The canonical key path for `key` (case-insensitive), if it exists.
pub fn canonical_key(key: &str) -> Option<String> {
    if let Some(k) = method_key(key) {
        return Some(k);
    }
    let mut leaves = BTreeMap::new();
    flatten(&serde_json::to_value(NodeConfig::default()).expect("config encodes"), "", &mut leaves);
    leaves.keys().find(|k| k.eq_ignore_ascii_case(key)).cloned()
}

/// `API.Auth.Methods.<name>.<Type|PolicyPath|UsersFile|AllowedClients>`: method names are the operator's, so these
/// keys exist for any name.
fn method_key(key: &str) -> Option<String> {
    const PREFIX: &str = "api.auth.methods.";
    let rest = key
        .get(..PREFIX.len())
        .filter(|p| p.eq_ignore_ascii_case(PREFIX))
        .map(|_| &key[PREFIX.len()..])?;
    let (name, field) = rest.rsplit_once('.')?;
    if name.is_empty() || name.contains('.') {
        return None;
    }
    let field = ["Type", "PolicyPath", "UsersFile", "AllowedClients"]
        .into_iter()
        .find(|f| f.eq_ignore_ascii_case(field))?;
    Some(format!("API.Auth.Methods.{name}.{field}"))
}

/// Parses a textual value for `key` according to the default's type.
fn typed_value(key: &str, raw: &str) -> Result<Value, ConfigError> {
    if method_key(key).is_some() {
        return Ok(Value::String(raw.to_string()));
    }
    let mut leaves = BTreeMap::new();
    flatten(&serde_json::to_value(NodeConfig::default()).expect("config encodes"), "", &mut leaves);
    let template = leaves.get(key).ok_or_else(|| ConfigError::UnknownKey(key.to_string()))?;
    let bad = |e: &str| ConfigError::Value { key: key.to_string(), error: e.to_string() };
    Ok(match template {
        Value::Bool(_) => Value::Bool(match raw.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" => false,
            _ => return Err(bad(&format!("expected true or false, got {raw:?}"))),
        }),
        Value::Number(_) => Value::Number(
            raw.trim()
                .parse::<u64>()
                .map_err(|_| bad(&format!("expected a number, got {raw:?}")))?
                .into(),
        ),
        Value::Array(_) => Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.into()))
                .collect(),
        ),
        Value::Object(_) => {
            // Maps (Labels): `k=v,k2=v2`.
            let mut m = Map::new();
            for pair in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let (k, v) = pair
                    .split_once('=')
                    .ok_or_else(|| bad(&format!("expected key=value pairs, got {pair:?}")))?;
                m.insert(k.trim().to_string(), Value::String(v.trim().to_string()));
            }
            Value::Object(m)
        }
        _ => Value::String(raw.to_string()),
    })
}

fn set_path(root: &mut Value, key: &str, value: Value) {
    let mut cur = root;
    let parts: Vec<&str> = key.split('.').collect();
    for (i, p) in parts.iter().enumerate() {
        let Value::Object(m) = cur else { return };
        if i == parts.len() - 1 {
            m.insert((*p).to_string(), value);
            return;
        }
        cur = m.entry((*p).to_string()).or_insert_with(|| Value::Object(Map::new()));
    }
}

/// Merges `over` into `base`, matching object keys case-insensitively (keys of `base` win
/// their spelling).
fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                let existing = b.keys().find(|bk| bk.eq_ignore_ascii_case(&k)).cloned();
                match existing {
                    Some(bk) if !matches!(v, Value::Object(_)) || bk == "Labels" => {
                        b.insert(bk, v);
                    }
                    Some(bk) => merge(b.get_mut(&bk).expect("present"), v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

fn get_ci<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.as_object()?.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v)
}

/// Whether a config file names `API.Auth.Methods`.
fn file_sets_methods(v: &Value) -> bool {
    get_ci(v, "API").and_then(|a| get_ci(a, "Auth")).and_then(|a| get_ci(a, "Methods")).is_some()
}

/// Empties `API.Auth.Methods` (the defaults) before the operator's own are applied.
fn clear_methods(tree: &mut Value) {
    if let Some(m) = tree.pointer_mut("/API/Auth/Methods") {
        *m = Value::Object(Map::new());
    }
}

/// The layers that make a configuration.
#[derive(Clone, Debug, Default)]
pub struct Layers {
    /// `config.yaml` path (may not exist).
    pub file: Option<PathBuf>,
    /// Environment variables (name → value), usually `std::env::vars()`.
    pub env: BTreeMap<String, String>,
    /// Flags as key path → raw value.
    pub flags: Vec<(String, String)>,
}

impl NodeConfig {
    /// Builds the effective configuration: defaults < file < env < flags.
    pub fn load(layers: &Layers) -> Result<NodeConfig, ConfigError> {
        let mut tree = serde_json::to_value(NodeConfig::default()).expect("config encodes");
        let mut file_named_methods = false;
        if let Some(path) = &layers.file
            && path.exists()
        {
            let text = std::fs::read(path).map_err(|e| ConfigError::File {
                path: path.display().to_string(),
                error: e.to_string(),
            })?;
            if !text.iter().all(u8::is_ascii_whitespace) {
                let v: Value =
                    gadus_core::model::codec::from_yaml(&text, 1024 * 1024).map_err(|e| {
                        ConfigError::File { path: path.display().to_string(), error: e.to_string() }
                    })?;
                if !v.is_null() {
                    if file_sets_methods(&v) {
                        clear_methods(&mut tree);
                        file_named_methods = true;
                    }
                    merge(&mut tree, v);
                }
            }
        }
        let mut leaves = BTreeMap::new();
        flatten(
            &serde_json::to_value(NodeConfig::default()).expect("config encodes"),
            "",
            &mut leaves,
        );
        for key in leaves.keys() {
            let env = format!("GADUS_{}", key.replace('.', "_").to_ascii_uppercase());
            if let Some(raw) = layers.env.get(&env) {
                set_path(&mut tree, key, typed_value(key, raw)?);
            }
        }
        // Methods the operator names replace the default ClientKey challenge (which gives any
        // key holder a token): a node locked to passwords must not keep accepting any key.
        if layers.flags.iter().any(|(k, _)| method_key(k).is_some()) && !file_named_methods {
            clear_methods(&mut tree);
        }
        for (key, raw) in &layers.flags {
            let k = canonical_key(key).ok_or_else(|| ConfigError::UnknownKey(key.clone()))?;
            set_path(&mut tree, &k, typed_value(&k, raw)?);
        }
        let cfg: NodeConfig =
            serde_path_to_error::deserialize(CaseInsensitive(tree)).map_err(|e| {
                ConfigError::Value { key: e.path().to_string(), error: e.inner().to_string() }
            })?;
        cfg.check()?;
        Ok(cfg)
    }

    /// Checks every value that must parse and lie in a range (durations, counts), with an
    /// error naming the key: a value that parses but cannot work (a heartbeat every 0 s
    /// re-arms its timer at `now` forever) is as wrong as one that does not parse.
    pub fn check(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, error: String| ConfigError::Value { key: key.into(), error };
        let ms = Duration::from_millis;
        let sch = &self.orchestrator.scheduler;
        let mut parsed: BTreeMap<&'static str, Duration> = BTreeMap::new();
        for (key, v, min) in [
            ("API.RequestTimeout", &self.api.request_timeout, ms(100)),
            ("API.HeaderTimeout", &self.api.header_timeout, ms(100)),
            (
                "Orchestrator.NodeManager.DisconnectTimeout",
                &self.orchestrator.node_manager.disconnect_timeout,
                ms(1000),
            ),
            ("Orchestrator.Scheduler.QueueBackoff", &sch.queue_backoff, ms(10)),
            ("Orchestrator.Scheduler.BusyQueueTimeout", &sch.busy_queue_timeout, Duration::ZERO),
            ("Orchestrator.Scheduler.BidTimeout", &sch.bid_timeout, ms(100)),
            ("Orchestrator.Scheduler.RetryBackoff", &sch.retry_backoff, Duration::ZERO),
            ("Orchestrator.Scheduler.MaxRetryBackoff", &sch.max_retry_backoff, Duration::ZERO),
            ("Compute.Heartbeat.Interval", &self.compute.heartbeat.interval, ms(100)),
        ] {
            let d = parse_duration(v).map_err(|e| bad(key, e))?;
            if d < min {
                return Err(bad(key, format!("{v:?} is below the minimum of {min:?}")));
            }
            parsed.insert(key, d);
        }
        let heartbeat = parsed["Compute.Heartbeat.Interval"];
        let disconnect = parsed["Orchestrator.NodeManager.DisconnectTimeout"];
        if heartbeat >= disconnect {
            return Err(bad(
                "Compute.Heartbeat.Interval",
                format!(
                    "{heartbeat:?} must be shorter than \
                     Orchestrator.NodeManager.DisconnectTimeout ({disconnect:?}), or every \
                     node would be disconnected between two heartbeats"
                ),
            ));
        }
        if parsed["Orchestrator.Scheduler.MaxRetryBackoff"]
            < parsed["Orchestrator.Scheduler.RetryBackoff"]
        {
            return Err(bad(
                "Orchestrator.Scheduler.MaxRetryBackoff",
                "must not be shorter than Orchestrator.Scheduler.RetryBackoff".into(),
            ));
        }
        for (kind, d) in [
            ("Batch", &self.job_defaults.batch),
            ("Ops", &self.job_defaults.ops),
            ("Service", &self.job_defaults.service),
            ("Daemon", &self.job_defaults.daemon),
        ] {
            let t = &d.task.timeouts;
            for (name, v) in [
                ("ExecutionTimeout", &t.execution_timeout),
                ("QueueTimeout", &t.queue_timeout),
                ("TotalTimeout", &t.total_timeout),
            ] {
                let key = format!("JobDefaults.{kind}.Task.Timeouts.{name}");
                let d = parse_duration(v).map_err(|e| bad(&key, e))?;
                let max = gadus_core::model::validate::MAX_TIMEOUT_SECS.unsigned_abs();
                if d.as_secs() > max {
                    return Err(bad(&key, format!("{v:?} is over the limit of {max} s")));
                }
            }
        }
        for (key, v) in [
            ("DataStore.Quota", &self.data_store.quota),
            ("DataStore.MinFreeDisk", &self.data_store.min_free_disk),
        ] {
            crate::share_of(v, 1.0).map_err(|e| bad(key, e))?;
        }
        for c in &self.api.rate_limit_exempt {
            crate::api::ratelimit::Cidr::parse(c).map_err(|e| bad("API.RateLimitExempt", e))?;
        }
        for id in &self.compute.allowed_orchestrators {
            gadus_core::model::ident::check(gadus_core::model::ident::IdKind::Node, id)
                .map_err(|e| bad("Compute.AllowedOrchestrators", e.to_string()))?;
        }
        for (key, v, min, max) in [
            ("API.MaxBodyBytes", self.api.max_body_bytes, 1024, 1 << 30),
            ("API.MaxConnections", self.api.max_connections, 4, 1 << 20),
            ("Orchestrator.Scheduler.MaxAttempts", sch.max_attempts as usize, 1, 100),
            ("Compute.MaxInlineOutputBytes", self.compute.max_inline_output_bytes, 0, 16 << 20),
        ] {
            if !(min..=max).contains(&v) {
                return Err(bad(key, format!("{v} is outside {min}..={max}")));
            }
        }
        if !matches!(
            self.job_admission_control.locality.to_ascii_lowercase().as_str(),
            "anywhere" | "local"
        ) {
            return Err(ConfigError::Value {
                key: "JobAdmissionControl.Locality".into(),
                error: format!(
                    "expected anywhere or local, got {:?}",
                    self.job_admission_control.locality
                ),
            });
        }
        Ok(())
    }

    /// Every key with its effective value, for `gadus config list`.
    pub fn list(&self) -> BTreeMap<String, Value> {
        let mut out = BTreeMap::new();
        flatten(&serde_json::to_value(self).expect("config encodes"), "", &mut out);
        out
    }

    /// The data directory as a path.
    pub fn data_dir(&self) -> PathBuf {
        PathBuf::from(&self.data_dir)
    }
}

/// Sets `key` to `raw` in the YAML file at `path` (creating it), validating the value.
pub fn set_in_file(path: &Path, key: &str, raw: &str) -> Result<String, ConfigError> {
    let canonical = canonical_key(key).ok_or_else(|| ConfigError::UnknownKey(key.to_string()))?;
    let value = typed_value(&canonical, raw)?;
    let mut tree = if path.exists() {
        let text = std::fs::read(path).map_err(|e| ConfigError::File {
            path: path.display().to_string(),
            error: e.to_string(),
        })?;
        if text.iter().all(u8::is_ascii_whitespace) {
            Value::Object(Map::new())
        } else {
            gadus_core::model::codec::from_yaml(&text, 1024 * 1024).map_err(|e| {
                ConfigError::File { path: path.display().to_string(), error: e.to_string() }
            })?
        }
    } else {
        Value::Object(Map::new())
    };
    if !tree.is_object() {
        tree = Value::Object(Map::new());
    }
    set_path(&mut tree, &canonical, value);
    // Validate the result before writing.
    let check = Layers { file: None, env: BTreeMap::new(), flags: Vec::new() };
    let mut full = serde_json::to_value(NodeConfig::default()).expect("config encodes");
    merge(&mut full, tree.clone());
    let _: NodeConfig = serde_path_to_error::deserialize(CaseInsensitive(full)).map_err(|e| {
        ConfigError::Value { key: e.path().to_string(), error: e.inner().to_string() }
    })?;
    drop(check);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| ConfigError::File {
            path: dir.display().to_string(),
            error: e.to_string(),
        })?;
    }
    let text = gadus_core::model::codec::to_yaml(&tree);
    std::fs::write(path, text).map_err(|e| ConfigError::File {
        path: path.display().to_string(),
        error: e.to_string(),
    })?;
    Ok(canonical)
}

/// Parses a Go-style duration: `1h30m`, `30s`, `500ms`, `2m`, `1.5s`; a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() || s == "0" {
        return Ok(Duration::ZERO);
    }
    if let Ok(n) = s.parse::<f64>() {
        // A bare number is seconds, held to the same bound as the unit form (an unbounded
        // `from_secs_f64(1e300)` panicked the API handler: issue 12, defect 5).
        return bounded_secs(n, s);
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        if num_end == 0 {
            return Err(format!("invalid duration {s:?}"));
        }
        let n: f64 = rest[..num_end].parse().map_err(|_| format!("invalid duration {s:?}"))?;
        rest = &rest[num_end..];
        let unit_end = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let unit = &rest[..unit_end];
        rest = &rest[unit_end..];
        let factor = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(format!("invalid duration {s:?}: unknown unit {unit:?}")),
        };
        total += n * factor;
    }
    bounded_secs(total, s)
}

/// Longest duration any setting or query accepts (about 31,700 years: "forever" in practice,
/// and far from where `Duration` or `Instant` arithmetic overflows).
pub const MAX_DURATION_SECS: f64 = 1e12;

fn bounded_secs(secs: f64, text: &str) -> Result<Duration, String> {
    if !(0.0..=MAX_DURATION_SECS).contains(&secs) {
        return Err(format!(
            "invalid duration {text:?}: must be between 0 and {MAX_DURATION_SECS:e} seconds"
        ));
    }
    Duration::try_from_secs_f64(secs).map_err(|e| format!("invalid duration {text:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layers(
        file: Option<&str>,
        env: &[(&str, &str)],
        flags: &[(&str, &str)],
    ) -> (tempfile::TempDir, Layers) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        if let Some(text) = file {
            std::fs::write(&path, text).unwrap();
        }
        let l = Layers {
            file: Some(path),
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            flags: flags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        };
        (dir, l)
    }

    #[test]
    fn precedence_is_flags_over_env_over_file_over_defaults() {
        let (_d, l) = layers(None, &[], &[]);
        assert_eq!(NodeConfig::load(&l).unwrap().api.port, 1234);
        let (_d, l) = layers(Some("API:\n  Port: 2000\nlabels: {zone: a}\n"), &[], &[]);
        let c = NodeConfig::load(&l).unwrap();
        assert_eq!((c.api.port, c.labels["zone"].as_str()), (2000, "a"));
        let (_d, l) = layers(Some("API:\n  Port: 2000\n"), &[("GADUS_API_PORT", "3000")], &[]);
        assert_eq!(NodeConfig::load(&l).unwrap().api.port, 3000);
        let (_d, l) = layers(
            Some("API:\n  Port: 2000\n"),
            &[("GADUS_API_PORT", "3000")],
            &[("api.port", "4000")],
        );
        assert_eq!(NodeConfig::load(&l).unwrap().api.port, 4000);
    }

    /// Regression (issue 12, defect 9): `Compute.Heartbeat.Interval=0` passed validation and
    /// the heartbeat timer re-armed at `now` forever.
    #[test]
    fn durations_and_counts_out_of_range_name_their_key() {
        for (key, value, wanted) in [
            ("Compute.Heartbeat.Interval", "0", "Compute.Heartbeat.Interval"),
            ("Compute.Heartbeat.Interval", "1ms", "Compute.Heartbeat.Interval"),
            ("Compute.Heartbeat.Interval", "1h", "Compute.Heartbeat.Interval"),
            ("Orchestrator.Scheduler.QueueBackoff", "0s", "Orchestrator.Scheduler.QueueBackoff"),
            ("Orchestrator.Scheduler.BidTimeout", "1e300", "Orchestrator.Scheduler.BidTimeout"),
            ("API.RequestTimeout", "0", "API.RequestTimeout"),
            ("Orchestrator.Scheduler.MaxAttempts", "0", "Orchestrator.Scheduler.MaxAttempts"),
            ("API.MaxBodyBytes", "1", "API.MaxBodyBytes"),
            (
                "JobDefaults.Batch.Task.Timeouts.ExecutionTimeout",
                "99999999999h",
                "JobDefaults.Batch.Task.Timeouts.ExecutionTimeout",
            ),
        ] {
            let (_d, l) = layers(None, &[], &[(key, value)]);
            match NodeConfig::load(&l) {
                Err(ConfigError::Value { key: k, error }) => {
                    assert_eq!(k, wanted, "{key}={value}: {error}")
                }
                other => panic!("{key}={value}: wanted a value error, got {other:?}"),
            }
        }
        let (_d, l) = layers(None, &[], &[("Compute.Heartbeat.Interval", "300ms")]);
        assert!(NodeConfig::load(&l).is_ok());
    }

    #[test]
    fn env_reaches_nested_and_typed_keys() {
        let (_d, l) = layers(
            None,
            &[
                ("GADUS_COMPUTE_ENABLED", "false"),
                ("GADUS_COMPUTE_ALLOCATEDCAPACITY_CPU", "2"),
                ("GADUS_LABELS", "region=eu,gpu=a100"),
                ("GADUS_NETWORK_PEERS", "/ip4/127.0.0.1/tcp/1/p2p/x,/ip4/127.0.0.1/tcp/2/p2p/y"),
            ],
            &[],
        );
        let c = NodeConfig::load(&l).unwrap();
        assert!(!c.compute.enabled);
        assert_eq!(c.compute.allocated_capacity.cpu, "2");
        assert_eq!(c.labels.len(), 2);
        assert_eq!(c.network.peers.len(), 2);
    }

    #[test]
    fn bad_values_name_their_key() {
        let (_d, l) = layers(None, &[("GADUS_API_PORT", "lots")], &[]);
        assert!(NodeConfig::load(&l).unwrap_err().to_string().contains("API.Port"));
        let (_d, l) =
            layers(Some("Orchestrator: {NodeManager: {DisconnectTimeout: soon}}\n"), &[], &[]);
        assert!(NodeConfig::load(&l).unwrap_err().to_string().contains("DisconnectTimeout"));
        let (_d, l) = layers(None, &[], &[("No.Such.Key", "1")]);
        assert!(matches!(NodeConfig::load(&l), Err(ConfigError::UnknownKey(_))));
    }

    #[test]
    fn auth_methods_named_by_the_operator_replace_the_default_challenge() {
        let d = NodeConfig::load(&Layers::default()).unwrap();
        assert_eq!(d.api.auth.methods.keys().collect::<Vec<_>>(), ["ClientKey"]);
        assert_eq!(d.api.auth.methods["ClientKey"].kind, "challenge");
        let layers = Layers {
            flags: vec![
                ("api.auth.methods.Password.type".into(), "ask".into()),
                ("API.Auth.Methods.Password.PolicyPath".into(), "/p.rego".into()),
                ("API.Auth.AccessPolicyPath".into(), "builtin:no-anon".into()),
            ],
            ..Default::default()
        };
        let c = NodeConfig::load(&layers).unwrap();
        assert_eq!(c.api.auth.methods.keys().collect::<Vec<_>>(), ["Password"]);
        assert_eq!(c.api.auth.methods["Password"].kind, "ask");
        assert_eq!(c.api.auth.methods["Password"].policy_path, "/p.rego");
        assert_eq!(c.api.auth.access_policy_path, "builtin:no-anon");
        let bad = Layers {
            flags: vec![("API.Auth.Methods.Password.Bogus".into(), "x".into())],
            ..Default::default()
        };
        assert!(matches!(NodeConfig::load(&bad), Err(ConfigError::UnknownKey(_))));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.yaml");
        std::fs::write(&file, "API:\n  Auth:\n    Methods:\n      Pw:\n        Type: ask\n        PolicyPath: /x.rego\n").unwrap();
        let c = NodeConfig::load(&Layers { file: Some(file), ..Default::default() }).unwrap();
        assert_eq!(c.api.auth.methods.keys().collect::<Vec<_>>(), ["Pw"]);
    }

    #[test]
    fn set_writes_the_file_and_load_reads_it() {
        let (d, l) = layers(None, &[], &[]);
        let path = d.path().join("config.yaml");
        assert_eq!(set_in_file(&path, "api.port", "5555").unwrap(), "API.Port");
        set_in_file(&path, "Labels", "zone=b").unwrap();
        let c = NodeConfig::load(&l).unwrap();
        assert_eq!(c.api.port, 5555);
        assert_eq!(c.labels["zone"], "b");
        assert!(set_in_file(&path, "API.Port", "x").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5d").is_err());
        // Regression (issue 12, defect 5): a bare number went to `from_secs_f64` unbounded
        // and panicked (`?wait=1e300`).
        for bad in ["1e300", "1e13", "-1", "NaN", "inf", "1e12h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_duration("1e12").unwrap(), Duration::from_secs(1_000_000_000_000));
    }
}
