//! The node: configuration, durations, REST request bodies and query strings.
//!
//! The API's request types (`PutJob`, `StopBody`, `UpdateBody`, `ListParams`, the nodes' and
//! logs' `Params`, `GatewayQuery`) are private to `gadus_node::api`; the mirrors below copy
//! their serde attributes and must follow them when they change.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use gadus_core::model::{Job, codec, parse_selector};
use gadus_node::api::decode_body;
use gadus_node::config::{Layers, MAX_DURATION_SECS, NodeConfig, parse_duration};
use serde::Deserialize;

use crate::files::Scratch;
use crate::text;

/// Any text as a Go-style duration (config values, the API's `wait=`): the value is within
/// the bound, and its renderings in nanoseconds and in seconds parse back to it (up to
/// floating-point rounding).
pub fn duration(data: &[u8]) {
    let Some(s) = text(data) else { return };
    let d = match parse_duration(s) {
        Ok(d) => d,
        Err(e) => {
            assert!(!e.is_empty());
            return;
        }
    };
    assert!(d.as_secs_f64() <= MAX_DURATION_SECS, "{s:?} -> {d:?}");
    if d.as_secs_f64() > MAX_DURATION_SECS * (1.0 - 1e-9) {
        // At the bound, a rendering one rounding step larger is refused (`1e12s` parses,
        // `1e21ns` does not: 1e21 * 1e-9 rounds above 1e12). Harmless; not a property.
        return;
    }
    for form in [format!("{}ns", d.as_nanos()), format!("{}s", d.as_secs_f64())] {
        let again = parse_duration(&form).unwrap_or_else(|e| panic!("{s:?} -> {form:?}: {e}"));
        // Relative error of a few f64 operations, plus the nanosecond rounding.
        let tolerance = Duration::from_nanos(2 + (d.as_nanos() / 1_000_000_000_000) as u64);
        assert!(again.abs_diff(d) <= tolerance, "{s:?} -> {d:?} -> {form:?} -> {again:?}");
    }
}

/// Input: the bytes of `config.yaml`, optionally followed by a NUL and `key=value` lines
/// taken as `-c key=value` flags. `NodeConfig::load` either refuses with an error or yields
/// a configuration that passes `check`, and that configuration written out as YAML loads
/// back to itself (what `gadus config` relies on).
pub fn node_config(data: &[u8]) {
    let (file, flags) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Some(flags) = text(flags) else { return };
    let flags: Vec<(String, String)> = flags
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .take(16)
        .collect();
    let scratch = Scratch::new();
    let path = scratch.path().join("config.yaml");
    std::fs::write(&path, file).expect("write the config file");
    let layers = Layers { file: Some(path.clone()), env: BTreeMap::new(), flags };
    let cfg = match NodeConfig::load(&layers) {
        Ok(cfg) => cfg,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    assert!(cfg.check().is_ok(), "load returned a config that check refuses");
    let _ = cfg.list();
    let yaml = codec::to_yaml(&cfg);
    std::fs::write(&path, &yaml).expect("write the config file");
    let again = NodeConfig::load(&Layers { file: Some(path), ..Layers::default() });
    match again {
        Ok(again) => assert_eq!(again, cfg, "config written as YAML loads differently\n{yaml}"),
        Err(e) => panic!("the effective config, written as YAML, does not load: {e}\n{yaml}"),
    }
}

/// `PUT /api/v1/orchestrator/jobs` (`jobs.rs`).
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PutJob {
    job: Option<Job>,
}

/// `PUT .../jobs/{id}` stop body (`jobs.rs`).
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct StopBody {
    reason: String,
}

/// `POST /nodes` body (`nodes.rs`).
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct UpdateBody {
    action: String,
    message: String,
    #[serde(rename = "NodeID")]
    node_id: String,
}

fn status(e: gadus_node::api::ApiErr) -> StatusCode {
    e.into_response().status()
}

/// Any bytes as a request body: `decode_body` into each body shape answers a value, 400, or
/// 413 exactly when the body exceeds the limit; a submitted job then goes through the same
/// checks as a job file (see [`crate::job_spec`]).
pub fn api_body(data: &[u8]) {
    let limit = NodeConfig::default().api.max_body_bytes;
    let expect_error = |e: gadus_node::api::ApiErr, limit: usize| {
        let code = status(e);
        if data.len() > limit {
            assert_eq!(code, StatusCode::PAYLOAD_TOO_LARGE);
        } else {
            assert_eq!(code, StatusCode::BAD_REQUEST);
        }
    };
    match decode_body::<PutJob>(data, limit) {
        Ok(PutJob { job: Some(job) }) => crate::model::submitted(job),
        Ok(PutJob { job: None }) => {}
        Err(e) => expect_error(e, limit),
    }
    match decode_body::<StopBody>(data, 64 * 1024) {
        Ok(b) => assert!(b.reason.len() <= data.len()),
        Err(e) => expect_error(e, 64 * 1024),
    }
    match decode_body::<UpdateBody>(data, 64 * 1024) {
        Ok(b) => assert!(b.action.len() + b.message.len() + b.node_id.len() <= 3 * data.len()),
        Err(e) => expect_error(e, 64 * 1024),
    }
    if data.len() > 16 {
        match decode_body::<StopBody>(data, 16) {
            Ok(_) => panic!("a {}-byte body passed a 16-byte limit", data.len()),
            Err(e) => expect_error(e, 16),
        }
    }
    if let Ok(v) = decode_body::<serde_json::Value>(data, limit) {
        let again = codec::to_json(&v);
        let back: serde_json::Value = decode_body(again.as_bytes(), usize::MAX)
            .unwrap_or_else(|_| panic!("re-encoded JSON does not decode: {again}"));
        assert_eq!(codec::to_json(&back), again, "JSON value round trip");
    }
}

/// `GET /api/v1/orchestrator/jobs` query (`jobs.rs`).
#[derive(Deserialize, Default)]
#[serde(default)]
#[allow(dead_code)]
struct ListParams {
    namespace: Option<String>,
    limit: Option<usize>,
    next_token: Option<String>,
    order_by: Option<String>,
    reverse: Option<String>,
    labels: Option<String>,
    include: Option<String>,
    since: Option<i64>,
    event_type: Option<String>,
    execution_id: Option<String>,
    wait: Option<String>,
}

/// `GET /api/v1/orchestrator/nodes` query (`nodes.rs`).
#[derive(Deserialize, Default)]
#[serde(default)]
#[allow(dead_code)]
struct NodeParams {
    limit: Option<usize>,
    order_by: Option<String>,
    reverse: Option<String>,
    labels: Option<String>,
    #[serde(rename = "filter-approval", alias = "filter_approval")]
    filter_approval: Option<String>,
    #[serde(rename = "filter-status", alias = "filter_status")]
    filter_status: Option<String>,
}

/// `GET .../jobs/{id}/logs` query (`logs.rs`).
#[derive(Deserialize, Default)]
#[serde(default)]
#[allow(dead_code)]
struct LogParams {
    execution_id: Option<String>,
    tail: Option<String>,
    follow: Option<String>,
    namespace: Option<String>,
}

/// `/ipfs/{path}` query (`data.rs`).
#[derive(Deserialize)]
#[allow(dead_code)]
struct GatewayQuery {
    format: Option<String>,
}

/// Any bytes as a query string, decoded as axum's `Query` does into every query shape of the
/// API, and split by `form_urlencoded` as the jobs list does for repeated `labels=`; the
/// values that are parsed further (`labels`, `wait`) go through their parsers; the pairs
/// survive `form_urlencoded`'s serializer.
pub fn api_query(data: &[u8]) {
    if let Ok(p) = serde_urlencoded::from_bytes::<ListParams>(data) {
        if let Some(w) = &p.wait {
            let _ = parse_duration(w);
        }
        if let Some(l) = &p.labels {
            let _ = parse_selector(l);
        }
    }
    if let Ok(p) = serde_urlencoded::from_bytes::<NodeParams>(data)
        && let Some(l) = &p.labels
    {
        let _ = parse_selector(l);
    }
    let _ = serde_urlencoded::from_bytes::<LogParams>(data);
    let _ = serde_urlencoded::from_bytes::<GatewayQuery>(data);
    let _ = serde_urlencoded::from_bytes::<BTreeMap<String, String>>(data);
    let pairs: Vec<(String, String)> = form_urlencoded::parse(data).into_owned().collect();
    for (k, v) in &pairs {
        if k == "labels" && !v.is_empty() {
            let _ = parse_selector(v);
        }
    }
    let encoded = form_urlencoded::Serializer::new(String::new()).extend_pairs(&pairs).finish();
    let again: Vec<(String, String)> =
        form_urlencoded::parse(encoded.as_bytes()).into_owned().collect();
    assert_eq!(again, pairs, "form_urlencoded round trip via {encoded:?}");
}
