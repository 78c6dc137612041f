//! Typed engine parameters, decoded from a task's `Engine.Params` (Bacalhau §1.4).
//!
//! Keys match case-insensitively (Bacalhau decodes params through Go's JSON decoder).

use serde::Deserialize;

use super::job::{InputSource, SpecConfig, null_as_default};
use super::lenient::CaseInsensitive;

/// Engine type names.
pub mod names {
    /// Containers through the local Docker engine.
    pub const DOCKER: &str = "docker";
    /// WebAssembly modules (WASI preview 1).
    pub const WASM: &str = "wasm";
    /// Does nothing and succeeds (tests and benchmarks).
    pub const NOOP: &str = "noop";
}

/// `docker` engine parameters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DockerEngineSpec {
    /// Image reference, optionally pinned by digest (`name@sha256:...`).
    #[serde(default)]
    pub image: String,
    /// Overrides the image's entrypoint.
    #[serde(default, deserialize_with = "null_as_default")]
    pub entrypoint: Vec<String>,
    /// The container command (`CMD`).
    #[serde(default, deserialize_with = "null_as_default")]
    pub parameters: Vec<String>,
    /// Extra `K=V` variables.
    #[serde(default, deserialize_with = "null_as_default")]
    pub environment_variables: Vec<String>,
    /// Absolute working directory.
    #[serde(default)]
    pub working_directory: String,
}

/// `wasm` engine parameters (current form: paths inside the task filesystem).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct WasmEngineSpec {
    /// Path of the module inside the task (an input's target, or a folder holding one `.wasm`).
    #[serde(default)]
    pub entry_module: String,
    /// Exported function to call; `_start` when empty.
    #[serde(default)]
    pub entrypoint: String,
    /// Program arguments.
    #[serde(default, deserialize_with = "null_as_default")]
    pub parameters: Vec<String>,
    /// Paths of modules instantiated first, for imports.
    #[serde(default, deserialize_with = "null_as_default")]
    pub import_modules: Vec<String>,
}

/// The v1.4–1.6 `wasm` parameters: modules given as input sources.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct LegacyWasmEngineSpec {
    /// The module as an input source.
    #[serde(default)]
    pub entry_module: Option<InputSource>,
    /// Import modules as input sources.
    #[serde(default, deserialize_with = "null_as_default")]
    pub import_modules: Vec<InputSource>,
    /// Old spelling of `Entrypoint`.
    #[serde(default)]
    pub entry_point: String,
    /// Program arguments.
    #[serde(default, deserialize_with = "null_as_default")]
    pub parameters: Vec<String>,
    /// Environment variables (moved to the task's `Env` on conversion).
    #[serde(default, deserialize_with = "null_as_default")]
    pub environment_variables: std::collections::BTreeMap<String, String>,
}

fn decode<T: for<'de> Deserialize<'de>>(spec: &SpecConfig) -> Result<T, String> {
    let value = serde_json::Value::Object(spec.params.clone());
    serde_path_to_error::deserialize(CaseInsensitive(value)).map_err(|e| {
        let path = e.path().to_string();
        if path == "." { e.inner().to_string() } else { format!("{path}: {}", e.inner()) }
    })
}

impl DockerEngineSpec {
    /// Decodes and checks `Engine.Params` of a `docker` task. Errors name the parameter.
    pub fn from_spec(spec: &SpecConfig) -> Result<Self, Vec<(String, String)>> {
        let s: Self = decode(spec).map_err(|e| vec![(String::new(), e)])?;
        let mut errs = Vec::new();
        if s.image.trim().is_empty() {
            errs.push(("Image".to_string(), "missing".to_string()));
        }
        if !s.working_directory.is_empty() && !s.working_directory.starts_with('/') {
            errs.push(("WorkingDirectory".to_string(), "must be an absolute path".to_string()));
        }
        for (i, kv) in s.environment_variables.iter().enumerate() {
            let key = kv.split('=').next().unwrap_or_default();
            if key.is_empty() {
                errs.push((format!("EnvironmentVariables[{i}]"), "must be KEY=VALUE".into()));
            } else if let Some(p) = super::validate::reserved_env_prefix(key) {
                errs.push((
                    format!("EnvironmentVariables[{i}]"),
                    format!("{key} must not start with {p}"),
                ));
            }
        }
        if errs.is_empty() { Ok(s) } else { Err(errs) }
    }
}

impl WasmEngineSpec {
    /// The default exported function.
    pub const DEFAULT_ENTRYPOINT: &'static str = "_start";

    /// Decodes and checks `Engine.Params` of a `wasm` task (current form).
    pub fn from_spec(spec: &SpecConfig) -> Result<Self, Vec<(String, String)>> {
        let s: Self = decode(spec).map_err(|e| vec![(String::new(), e)])?;
        if s.entry_module.trim().is_empty() {
            return Err(vec![("EntryModule".to_string(), "missing".to_string())]);
        }
        Ok(s)
    }

    /// The function to call.
    pub fn entrypoint(&self) -> &str {
        if self.entrypoint.is_empty() { Self::DEFAULT_ENTRYPOINT } else { &self.entrypoint }
    }
}

impl LegacyWasmEngineSpec {
    /// Decodes the legacy form if `spec` is in it (its `EntryModule` is an object).
    pub fn detect(spec: &SpecConfig) -> Option<Self> {
        let entry = spec.param("EntryModule");
        let imports_are_objects = spec
            .param("ImportModules")
            .and_then(|v| v.as_array())
            .is_some_and(|a| a.iter().any(|m| m.is_object()));
        if !(entry.is_some_and(|e| e.is_object()) || imports_are_objects) {
            return None;
        }
        decode(spec).ok()
    }
}
