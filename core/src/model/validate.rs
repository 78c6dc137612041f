//! Submission rules: `Job::normalize` (defaults + Bacalhau's warnings) and `Job::validate`
//! (every problem at once, each with its field path).

use std::collections::BTreeSet;
use std::fmt;

use super::engines::{DockerEngineSpec, LegacyWasmEngineSpec, WasmEngineSpec, names};
use super::job::{
    InputSource, Job, NetworkConfig, ResourcesConfig, SpecConfig, Task, TimeoutConfig,
};
use super::states::{JobStateType, JobType, State};
use crate::rng::IdGen;

/// The namespace jobs land in when none is given.
pub const DEFAULT_NAMESPACE: &str = "default";
/// Meta keys under this prefix are set by the server only.
pub const META_RESERVED_PREFIX: &str = "bacalhau.org/";
/// Environment variable prefixes reserved for system variables.
pub const RESERVED_ENV_PREFIXES: [&str; 2] = ["BACALHAU_", "GADUS_"];

/// Longest job/task name accepted.
pub const MAX_NAME_LEN: usize = 1024;
/// Largest `Count` accepted: beyond this a typo would create a flood of executions.
pub const MAX_COUNT: i64 = 10_000;
/// Most map entries (Meta, Labels, Env) accepted per map.
pub const MAX_MAP_ENTRIES: usize = 1024;
/// Longest map key accepted.
pub const MAX_KEY_LEN: usize = 1024;
/// Longest map value accepted.
pub const MAX_VALUE_LEN: usize = 64 * 1024;
/// Most input sources / result paths per task.
pub const MAX_TASK_ITEMS: usize = 1024;
/// Deepest nesting accepted inside `Params`.
pub const MAX_PARAMS_DEPTH: usize = 32;
/// Longest timeout accepted (seconds): 100 years; beyond this the arithmetic is nonsense.
pub const MAX_TIMEOUT_SECS: i64 = 100 * 365 * 24 * 3600;

/// One problem with a job spec: where, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path with indices, e.g. `Tasks[0].Resources.CPU`.
    pub path: String,
    /// What is wrong there.
    pub reason: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.reason)
        } else {
            write!(f, "{}: {}", self.path, self.reason)
        }
    }
}

/// Every problem found in a job spec (never empty).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ValidationErrors(pub Vec<FieldError>);

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid job spec ({} problem{}):",
            self.0.len(),
            if self.0.len() == 1 { "" } else { "s" }
        )?;
        for e in &self.0 {
            write!(f, "\n  - {e}")?;
        }
        Ok(())
    }
}

struct Errors(Vec<FieldError>);

impl Errors {
    fn add(&mut self, path: impl Into<String>, reason: impl Into<String>) {
        self.0.push(FieldError { path: path.into(), reason: reason.into() });
    }
}

/// Which reserved prefix, if any, an environment variable name starts with.
pub fn reserved_env_prefix(name: &str) -> Option<&'static str> {
    let upper = name.to_ascii_uppercase();
    RESERVED_ENV_PREFIXES.iter().copied().find(|p| upper.starts_with(p))
}

fn is_env_key(k: &str) -> bool {
    let mut chars = k.chars();
    chars.next().is_some_and(|c| c.is_ascii_uppercase())
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

fn depth(v: &serde_json::Value) -> usize {
    // Iterative to stay safe whatever the input depth.
    let mut max = 0;
    let mut stack = vec![(v, 1usize)];
    while let Some((v, d)) = stack.pop() {
        max = max.max(d);
        match v {
            serde_json::Value::Array(a) => stack.extend(a.iter().map(|x| (x, d + 1))),
            serde_json::Value::Object(o) => stack.extend(o.values().map(|x| (x, d + 1))),
            _ => {}
        }
    }
    max
}

fn preview(s: &str) -> String {
    if s.len() <= 64 {
        return format!("{s:?}");
    }
    let mut end = 64;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}… ({} bytes)", &s[..end], s.len())
}

impl Job {
    /// Applies Bacalhau's submission rules and defaults, returning the warnings Bacalhau
    /// returns: server-owned fields are cleared, extra tasks dropped, reserved meta keys
    /// removed; then `ID` = `j-<uuid>` (from `ids`), `Name` = ID, `Namespace` = `default`,
    /// `Count` = 0 for ops/daemon (absent → 1 for batch/service is decided at decode time).
    pub fn normalize(&mut self, ids: &mut impl IdGen) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.state.state_type != JobStateType::Undefined {
            warnings.push("job state is ignored when submitting a job".to_string());
        }
        self.state = State::new(JobStateType::Undefined);
        for (set, name) in [
            (self.revision != 0, "revision"),
            (self.version != 0, "version"),
            (self.create_time != 0, "create time"),
            (self.modify_time != 0, "modify time"),
        ] {
            if set {
                warnings.push(format!("job {name} is ignored when submitting a job"));
            }
        }
        self.revision = 0;
        self.version = 0;
        self.create_time = 0;
        self.modify_time = 0;
        if matches!(self.job_type, JobType::Batch | JobType::Ops) && !self.id.is_empty() {
            warnings.push("job ID is ignored when submitting a batch job".to_string());
            self.id.clear();
        }
        if self.tasks.len() > 1 {
            warnings.push("only one task is supported per job".to_string());
            self.tasks.truncate(1);
        }
        let reserved: Vec<String> =
            self.meta.keys().filter(|k| k.starts_with(META_RESERVED_PREFIX)).cloned().collect();
        for k in reserved {
            warnings.push(format!("job meta key {k:?} is reserved and will be ignored"));
            self.meta.remove(&k);
        }

        self.namespace = self.namespace.trim().to_string();
        if self.namespace.is_empty() {
            self.namespace = DEFAULT_NAMESPACE.to_string();
        }
        if self.id.is_empty() {
            self.id = format!("j-{}", ids.next_uuid());
        }
        if self.name.is_empty() {
            self.name = self.id.clone();
        }
        // Ops and daemon jobs run on every matching node: Count is meaningless, so 0 and 1 are
        // both accepted and stored as 0; anything larger is left for `validate` to reject.
        if self.job_type.targets_all_nodes() && self.count <= 1 {
            self.count = 0;
        }
        for task in &mut self.tasks {
            task.normalize();
        }
        warnings
    }

    /// Checks the whole spec and returns **every** problem, each with its field path.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut e = Errors(Vec::new());
        self.validate_job_level(&mut e);
        if self.tasks.is_empty() {
            e.add("Tasks", "missing: a job needs exactly one task");
        }
        for (i, task) in self.tasks.iter().enumerate() {
            task.validate_into(&format!("Tasks[{i}]"), &mut e);
        }
        if e.0.is_empty() { Ok(()) } else { Err(ValidationErrors(e.0)) }
    }

    fn validate_job_level(&self, e: &mut Errors) {
        // IDs and namespaces become folder names, store keys and URL paths: one strict syntax.
        if let Some(reason) = super::ident::problem(&self.id) {
            e.add("ID", reason);
        }
        if self.name.trim().is_empty() {
            e.add("Name", "missing");
        } else if self.name.len() > MAX_NAME_LEN {
            e.add("Name", format!("longer than {MAX_NAME_LEN} bytes ({} bytes)", self.name.len()));
        } else if self.name.contains('\0') {
            e.add("Name", "must not contain null characters");
        }
        if let Some(reason) = super::ident::problem(&self.namespace) {
            e.add("Namespace", reason);
        }
        match &self.job_type {
            JobType::Missing => e.add("Type", "missing (batch, service, ops or daemon)"),
            JobType::Unknown(t) => e.add(
                "Type",
                format!("unknown job type {} (expected batch, service, ops or daemon)", preview(t)),
            ),
            _ => {}
        }
        if self.count < 0 {
            e.add("Count", format!("must be >= 0, got {}", self.count));
        } else if self.count > 1 && self.job_type.targets_all_nodes() {
            e.add(
                "Count",
                format!(
                    "{} jobs run on all matching nodes and cannot set Count > 1",
                    self.job_type
                ),
            );
        } else if self.count > MAX_COUNT {
            e.add("Count", format!("must be <= {MAX_COUNT}, got {}", self.count));
        }
        for (i, c) in self.constraints.iter().enumerate() {
            if let Err(reason) = c.check() {
                e.add(format!("Constraints[{i}]"), reason);
            }
        }
        check_string_map("Meta", &self.meta, e);
        check_string_map("Labels", &self.labels, e);
    }
}

fn check_string_map(path: &str, m: &std::collections::BTreeMap<String, String>, e: &mut Errors) {
    if m.len() > MAX_MAP_ENTRIES {
        e.add(path, format!("more than {MAX_MAP_ENTRIES} entries"));
        return;
    }
    for (k, v) in m {
        if k.is_empty() {
            e.add(path, "keys must not be empty");
        } else if k.len() > MAX_KEY_LEN {
            e.add(format!("{path}.{}", preview(k)), format!("key longer than {MAX_KEY_LEN} bytes"));
        }
        if v.len() > MAX_VALUE_LEN {
            e.add(format!("{path}.{k}"), format!("value longer than {MAX_VALUE_LEN} bytes"));
        }
    }
}

fn check_params(path: &str, spec: &SpecConfig, e: &mut Errors) {
    let d = spec.params.values().map(depth).max().unwrap_or(0);
    if d > MAX_PARAMS_DEPTH {
        e.add(format!("{path}.Params"), format!("nested deeper than {MAX_PARAMS_DEPTH} levels"));
    }
}

impl Task {
    /// Trims and lower-cases what Bacalhau normalizes, fills empty sub-objects, and converts
    /// the legacy WASM parameter form.
    pub fn normalize(&mut self) {
        self.name = self.name.trim().to_string();
        if let Some(engine) = &mut self.engine {
            engine.spec_type = engine.spec_type.trim().to_string();
        }
        let publisher = self.publisher.get_or_insert_with(SpecConfig::default);
        publisher.spec_type = publisher.spec_type.trim().to_string();
        self.resources.get_or_insert_with(ResourcesConfig::default).normalize();
        let network = self.network.get_or_insert_with(NetworkConfig::default);
        for d in &mut network.domains {
            *d = d.trim().to_ascii_lowercase();
        }
        self.timeouts.get_or_insert_with(TimeoutConfig::default);
        for input in &mut self.input_sources {
            input.alias = input.alias.trim().to_string();
            input.target = input.target.trim().to_string();
            if let Some(src) = &mut input.source {
                src.spec_type = src.spec_type.trim().to_string();
            }
        }
        self.convert_legacy_wasm();
    }

    /// v1.4–1.6 WASM jobs named their modules as input sources inside the engine params;
    /// convert them like Bacalhau's orchestrator does (`/wasm/entry.wasm`,
    /// `/wasm/imports/module_N.wasm`).
    fn convert_legacy_wasm(&mut self) {
        let Some(engine) = &self.engine else { return };
        if !engine.is_type(names::WASM) {
            return;
        }
        let Some(legacy) = LegacyWasmEngineSpec::detect(engine) else { return };
        let mut params = serde_json::Map::new();
        if let Some(mut entry) = legacy.entry_module {
            if entry.target.is_empty() {
                entry.target = "/wasm/entry.wasm".to_string();
            }
            params.insert("EntryModule".into(), entry.target.clone().into());
            self.input_sources.push(entry);
        }
        let mut imports = Vec::new();
        for (i, mut m) in legacy.import_modules.into_iter().enumerate() {
            if m.target.is_empty() {
                m.target = format!("/wasm/imports/module_{i}.wasm");
            }
            imports.push(serde_json::Value::from(m.target.clone()));
            self.input_sources.push(m);
        }
        if !legacy.entry_point.is_empty() {
            params.insert("Entrypoint".into(), legacy.entry_point.into());
        }
        if !legacy.parameters.is_empty() {
            params.insert("Parameters".into(), legacy.parameters.into());
        }
        if !imports.is_empty() {
            params.insert("ImportModules".into(), imports.into());
        }
        for (k, v) in legacy.environment_variables {
            self.env.entry(k).or_insert(v);
        }
        if let Some(engine) = &mut self.engine {
            engine.params = params;
        }
    }

    fn validate_into(&self, p: &str, e: &mut Errors) {
        if self.name.trim().is_empty() {
            e.add(format!("{p}.Name"), "missing");
        } else if self.name.len() > MAX_NAME_LEN {
            e.add(format!("{p}.Name"), format!("longer than {MAX_NAME_LEN} bytes"));
        } else if self.name.contains('\0') {
            e.add(format!("{p}.Name"), "must not contain null characters");
        }
        self.validate_engine(p, e);
        if let Some(publisher) = &self.publisher {
            check_params(&format!("{p}.Publisher"), publisher, e);
        }
        let has_publisher = self.publisher.as_ref().is_some_and(|s| !s.spec_type.trim().is_empty());
        if !self.result_paths.is_empty() && !has_publisher {
            e.add(format!("{p}.Publisher"), "required when ResultPaths are set");
        }
        self.validate_env(p, e);
        check_string_map(&format!("{p}.Meta"), &self.meta, e);
        self.validate_inputs(p, e);
        self.validate_results(p, e);
        if let Some(Err(errs)) = self.resources.as_ref().map(ResourcesConfig::parse) {
            for (field, err) in errs {
                e.add(format!("{p}.Resources.{field}"), err.to_string());
            }
        }
        if let Some(n) = &self.network {
            validate_network(&format!("{p}.Network"), n, e);
        }
        if let Some(t) = &self.timeouts {
            validate_timeouts(&format!("{p}.Timeouts"), t, e);
        }
    }

    fn validate_engine(&self, p: &str, e: &mut Errors) {
        let Some(engine) = &self.engine else {
            e.add(format!("{p}.Engine"), "missing");
            return;
        };
        if engine.spec_type.trim().is_empty() {
            e.add(format!("{p}.Engine.Type"), "missing (docker, wasm or noop)");
            return;
        }
        check_params(&format!("{p}.Engine"), engine, e);
        let typed = if engine.is_type(names::DOCKER) {
            DockerEngineSpec::from_spec(engine).err()
        } else if engine.is_type(names::WASM) {
            WasmEngineSpec::from_spec(engine).err()
        } else {
            None
        };
        for (field, reason) in typed.unwrap_or_default() {
            let path = if field.is_empty() {
                format!("{p}.Engine.Params")
            } else {
                format!("{p}.Engine.Params.{field}")
            };
            e.add(path, reason);
        }
    }

    fn validate_env(&self, p: &str, e: &mut Errors) {
        if self.env.len() > MAX_MAP_ENTRIES {
            e.add(format!("{p}.Env"), format!("more than {MAX_MAP_ENTRIES} entries"));
            return;
        }
        for (k, v) in &self.env {
            let path = format!("{p}.Env.{}", if k.len() > 64 { preview(k) } else { k.clone() });
            if !is_env_key(k) {
                e.add(path, "keys must match [A-Z][A-Z0-9_]*");
            } else if let Some(prefix) = reserved_env_prefix(k) {
                e.add(
                    path,
                    format!("keys must not start with {prefix} (reserved for system variables)"),
                );
            } else if v.is_empty() {
                e.add(path, "value must not be empty");
            } else if v.len() > MAX_VALUE_LEN {
                e.add(path, format!("value longer than {MAX_VALUE_LEN} bytes"));
            }
        }
    }

    fn validate_inputs(&self, p: &str, e: &mut Errors) {
        if self.input_sources.len() > MAX_TASK_ITEMS {
            e.add(format!("{p}.InputSources"), format!("more than {MAX_TASK_ITEMS} entries"));
            return;
        }
        let mut aliases = BTreeSet::new();
        let mut targets = BTreeSet::new();
        for (j, input) in self.input_sources.iter().enumerate() {
            let ip = format!("{p}.InputSources[{j}]");
            validate_input(&ip, input, e);
            if !input.alias.is_empty() && !aliases.insert(input.alias.as_str()) {
                e.add(format!("{ip}.Alias"), format!("duplicate alias {}", preview(&input.alias)));
            }
            if !input.target.is_empty() && !targets.insert(input.target.as_str()) {
                e.add(
                    format!("{ip}.Target"),
                    format!("duplicate target {}", preview(&input.target)),
                );
            }
        }
    }

    fn validate_results(&self, p: &str, e: &mut Errors) {
        if self.result_paths.len() > MAX_TASK_ITEMS {
            e.add(format!("{p}.ResultPaths"), format!("more than {MAX_TASK_ITEMS} entries"));
            return;
        }
        let mut names = BTreeSet::new();
        let mut paths = BTreeSet::new();
        for (j, r) in self.result_paths.iter().enumerate() {
            let rp = format!("{p}.ResultPaths[{j}]");
            if r.name.trim().is_empty() {
                e.add(format!("{rp}.Name"), "missing");
            } else if r.name.contains(['/', '\\', '\0']) || r.name == "." || r.name == ".." {
                e.add(format!("{rp}.Name"), "must be a plain folder name (no '/', '..')");
            } else if matches!(r.name.as_str(), "stdout" | "stderr" | "exitCode") {
                e.add(
                    format!("{rp}.Name"),
                    format!("{:?} is reserved for the execution's output", r.name),
                );
            } else if !names.insert(r.name.as_str()) {
                e.add(format!("{rp}.Name"), format!("duplicate name {}", preview(&r.name)));
            }
            if r.path.trim().is_empty() {
                e.add(format!("{rp}.Path"), "missing");
            } else if !r.path.starts_with('/') {
                e.add(format!("{rp}.Path"), "must be an absolute path");
            } else if r.path.split('/').any(|c| c == "..") {
                e.add(format!("{rp}.Path"), "must not contain '..'");
            } else if !paths.insert(r.path.as_str()) {
                e.add(format!("{rp}.Path"), format!("duplicate path {}", preview(&r.path)));
            }
        }
    }
}

fn validate_input(ip: &str, input: &InputSource, e: &mut Errors) {
    if input.target.is_empty() {
        e.add(format!("{ip}.Target"), "missing");
    } else if !input.target.starts_with('/') {
        e.add(format!("{ip}.Target"), "must be an absolute path");
    } else if input.target.split('/').any(|c| c == "..") || input.target.contains('\0') {
        e.add(format!("{ip}.Target"), "must not contain '..' or null characters");
    }
    match &input.source {
        None => e.add(format!("{ip}.Source"), "missing"),
        Some(s) if s.spec_type.trim().is_empty() => e.add(format!("{ip}.Source.Type"), "missing"),
        Some(s) => check_params(&format!("{ip}.Source"), s, e),
    }
}

fn validate_network(p: &str, n: &NetworkConfig, e: &mut Errors) {
    use super::states::NetworkType;
    if !n.domains.is_empty() && n.network_type != NetworkType::Http {
        e.add(format!("{p}.Domains"), "can only be set with Type HTTP");
    }
    for (i, d) in n.domains.iter().enumerate() {
        let ok = !d.is_empty()
            && d.len() <= 253
            && d.trim_start_matches('.').split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            })
            || d.parse::<std::net::IpAddr>().is_ok();
        if !ok {
            e.add(format!("{p}.Domains[{i}]"), format!("invalid domain {}", preview(d)));
        }
    }
    if !n.ports.is_empty() && !n.network_type.supports_ports() {
        e.add(format!("{p}.Ports"), "can only be set with Type Host, Bridge or Full");
        return;
    }
    let mut names = BTreeSet::new();
    for (i, port) in n.ports.iter().enumerate() {
        let pp = format!("{p}.Ports[{i}]");
        let name_ok = port.name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && port.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && port.name.len() <= 200;
        if !name_ok {
            e.add(format!("{pp}.Name"), "must be a valid environment variable name");
        } else if !names.insert(port.name.as_str()) {
            e.add(format!("{pp}.Name"), format!("duplicate port name {:?}", port.name));
        }
        if port.r#static != 0 && !(1024..=65535).contains(&port.r#static) {
            e.add(format!("{pp}.Static"), "must be between 1024 and 65535");
        }
        if !(0..=65535).contains(&port.target) {
            e.add(format!("{pp}.Target"), "must be between 0 and 65535");
        }
        if !port.host_network.is_empty() && port.host_network.parse::<std::net::IpAddr>().is_err() {
            e.add(format!("{pp}.HostNetwork"), "must be an IP address");
        }
    }
}

fn validate_timeouts(p: &str, t: &TimeoutConfig, e: &mut Errors) {
    let mut ok = true;
    for (v, name) in [
        (t.execution_timeout, "ExecutionTimeout"),
        (t.queue_timeout, "QueueTimeout"),
        (t.total_timeout, "TotalTimeout"),
    ] {
        if v < 0 {
            e.add(format!("{p}.{name}"), format!("must be >= 0, got {v}"));
            ok = false;
        } else if v > MAX_TIMEOUT_SECS {
            e.add(format!("{p}.{name}"), format!("must be <= {MAX_TIMEOUT_SECS} seconds"));
            ok = false;
        }
    }
    if ok && t.total_timeout > 0 && t.execution_timeout + t.queue_timeout > t.total_timeout {
        e.add(
            p.to_string(),
            format!(
                "ExecutionTimeout + QueueTimeout exceed TotalTimeout ({}s + {}s > {}s)",
                t.execution_timeout, t.queue_timeout, t.total_timeout
            ),
        );
    }
}
