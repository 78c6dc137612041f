//! Prometheus metrics in text exposition format (`GET /metrics`): jobs by state, executions,
//! evaluations, API latency histograms, and group-commit batch sizes and fsync latency.
//!
//! A few of the same figures are also recorded as OpenTelemetry instruments on the global
//! meter, which [`crate::telemetry::init`] points at an OTLP exporter when one is configured
//! (otherwise the instruments are no-ops and cost a virtual call).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use gadus_core::model::JobStateType;
use gadus_core::orchestrator::Record;
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram as OtelHistogram};

#[derive(Clone, Debug)]
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram { bounds, counts: vec![0; bounds.len()], sum: 0.0, count: 0 }
    }

    fn observe(&mut self, v: f64) {
        for (i, b) in self.bounds.iter().enumerate() {
            if v <= *b {
                self.counts[i] += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {c}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

const LATENCY: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
const SIZES: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0];

#[derive(Default)]
struct Inner {
    live_jobs: BTreeMap<String, JobStateType>,
    terminal_jobs: BTreeMap<&'static str, u64>,
    executions: BTreeMap<String, u64>,
    evaluations: u64,
    api: BTreeMap<(String, String, u16), Histogram>,
    fsync_records: Option<Histogram>,
    fsync_seconds: Option<Histogram>,
    round_inputs: Option<Histogram>,
    stale_messages: u64,
    jobs_submitted: u64,
    api_panics: u64,
    /// API connections: open now; closed for being idle when full; refused (503) when full.
    api_connections: usize,
    api_connections_evicted: u64,
    api_connections_refused: u64,
    executions_held: usize,
    /// Faults per (peer, kind); at most [`MAX_FAULTY_PEERS`] peers are named.
    peer_faults: BTreeMap<(String, &'static str), u64>,
    faulty_peers: std::collections::BTreeSet<String>,
}

/// Peers named in `gadus_peer_faults_total`; faults of further peers count under `other`, so
/// an attacker cycling through identities cannot grow the exposition without bound.
const MAX_FAULTY_PEERS: usize = 1024;

/// OpenTelemetry instruments, made from the global meter when the node's metrics are created
/// (after telemetry init, so they bind to the OTLP provider if there is one).
struct Otel {
    jobs_submitted: Counter<u64>,
    api_duration: OtelHistogram<f64>,
}

impl Default for Otel {
    fn default() -> Self {
        let meter = opentelemetry::global::meter("gadus");
        Otel {
            jobs_submitted: meter
                .u64_counter("gadus.jobs.submitted")
                .with_description("Jobs accepted by the orchestrator API.")
                .build(),
            // Semantic-convention name and unit, with the Prometheus histogram's buckets so
            // both exports agree.
            api_duration: meter
                .f64_histogram("http.server.request.duration")
                .with_description("API request latency.")
                .with_unit("s")
                .with_boundaries(LATENCY.to_vec())
                .build(),
        }
    }
}

/// The node's metrics.
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
    otel: Otel,
}

impl Metrics {
    /// Updates job/execution/evaluation figures from records about to be committed.
    pub fn observe_records(&self, records: &[Record]) {
        let Ok(mut m) = self.inner.lock() else { return };
        for r in records {
            match r {
                Record::Job(j) => {
                    let s = j.job.state.state_type;
                    if s.is_terminal() {
                        if m.live_jobs.remove(&j.job.id).is_some() || j.job.revision > 0 {
                            *m.terminal_jobs.entry(s.as_str()).or_default() += 1;
                        }
                    } else {
                        m.live_jobs.insert(j.job.id.clone(), s);
                    }
                }
                Record::Execution(e) if e.is_terminal() => {
                    *m.executions.entry(e.state().name().to_string()).or_default() += 1;
                }
                Record::Evaluation(_) => m.evaluations += 1,
                _ => {}
            }
        }
    }

    /// One group commit: records written, inputs it covered, how long the sync took.
    pub fn fsync(&self, records: usize, inputs: usize, took: Duration) {
        let Ok(mut m) = self.inner.lock() else { return };
        m.fsync_records.get_or_insert_with(|| Histogram::new(SIZES)).observe(records as f64);
        m.round_inputs.get_or_insert_with(|| Histogram::new(SIZES)).observe(inputs as f64);
        m.fsync_seconds.get_or_insert_with(|| Histogram::new(LATENCY)).observe(took.as_secs_f64());
    }

    /// The orchestrator's count of ignored messages about superseded or unknown attempts.
    pub fn stale_messages(&self, total: u64) {
        if let Ok(mut m) = self.inner.lock() {
            m.stale_messages = total;
        }
    }

    /// Executions the compute side holds work for (context, pinned inputs, engine state).
    pub fn executions_held(&self, n: usize) {
        if let Ok(mut m) = self.inner.lock() {
            m.executions_held = n;
        }
    }

    /// The API's open connections now, and what the cap did: closed an idle one, refused one.
    pub fn api_connections(&self, open: usize, evicted: u64, refused: u64) {
        if let Ok(mut m) = self.inner.lock() {
            m.api_connections = open;
            m.api_connections_evicted += evicted;
            m.api_connections_refused += refused;
        }
    }

    /// An API handler panicked (answered 500).
    pub fn api_panic(&self) {
        if let Ok(mut m) = self.inner.lock() {
            m.api_panics += 1;
        }
    }

    /// A peer broke the protocol (its message was dropped).
    pub fn peer_fault(&self, peer: &str, kind: &'static str) {
        let Ok(mut m) = self.inner.lock() else { return };
        let known = m.faulty_peers.contains(peer);
        let label = if !gadus_core::model::ident::is_valid(peer) {
            "invalid".to_string()
        } else if known || m.faulty_peers.len() < MAX_FAULTY_PEERS {
            if !known {
                m.faulty_peers.insert(peer.to_string());
            }
            peer.to_string()
        } else {
            "other".to_string()
        };
        *m.peer_faults.entry((label, kind)).or_default() += 1;
    }

    /// One job accepted by the API.
    pub fn job_submitted(&self) {
        self.otel.jobs_submitted.add(1, &[]);
        let Ok(mut m) = self.inner.lock() else { return };
        m.jobs_submitted += 1;
    }

    /// One API request.
    pub fn api(&self, method: &str, route: &str, status: u16, took: Duration) {
        self.otel.api_duration.record(
            took.as_secs_f64(),
            &[
                KeyValue::new("http.request.method", method.to_string()),
                KeyValue::new("http.route", route.to_string()),
                KeyValue::new("http.response.status_code", i64::from(status)),
            ],
        );
        let Ok(mut m) = self.inner.lock() else { return };
        m.api
            .entry((method.to_string(), route.to_string(), status))
            .or_insert_with(|| Histogram::new(LATENCY))
            .observe(took.as_secs_f64());
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let Ok(m) = self.inner.lock() else { return String::new() };
        let mut out = String::new();
        out.push_str("# HELP gadus_jobs Jobs by state (live jobs now; terminal jobs since start).\n# TYPE gadus_jobs gauge\n");
        let mut by_state: BTreeMap<&str, u64> = BTreeMap::new();
        for s in m.live_jobs.values() {
            *by_state.entry(s.as_str()).or_default() += 1;
        }
        for (s, n) in &m.terminal_jobs {
            *by_state.entry(s).or_default() += n;
        }
        for s in JobStateType::ALL.iter().filter(|s| **s != JobStateType::Undefined) {
            let _ = writeln!(
                out,
                "gadus_jobs{{state=\"{}\"}} {}",
                s.as_str(),
                by_state.get(s.as_str()).copied().unwrap_or(0)
            );
        }
        out.push_str("# HELP gadus_executions_finished_total Executions that reached a terminal state.\n# TYPE gadus_executions_finished_total counter\n");
        for (s, n) in &m.executions {
            let _ = writeln!(out, "gadus_executions_finished_total{{state=\"{s}\"}} {n}");
        }
        out.push_str("# HELP gadus_stale_messages_total Messages about superseded or unknown attempts, ignored (fencing).\n# TYPE gadus_stale_messages_total counter\n");
        let _ = writeln!(out, "gadus_stale_messages_total {}", m.stale_messages);
        out.push_str("# HELP gadus_executions_held Executions whose work this compute node holds (from prepare to release).\n# TYPE gadus_executions_held gauge\n");
        let _ = writeln!(out, "gadus_executions_held {}", m.executions_held);
        out.push_str("# HELP gadus_api_panics_total API requests whose handler panicked (answered 500).\n# TYPE gadus_api_panics_total counter\n");
        let _ = writeln!(out, "gadus_api_panics_total {}", m.api_panics);
        out.push_str("# HELP gadus_api_connections Open API connections.\n# TYPE gadus_api_connections gauge\n");
        let _ = writeln!(out, "gadus_api_connections {}", m.api_connections);
        out.push_str("# HELP gadus_api_connections_evicted_total Idle API connections closed to make room (API.MaxConnections).\n# TYPE gadus_api_connections_evicted_total counter\n");
        let _ = writeln!(out, "gadus_api_connections_evicted_total {}", m.api_connections_evicted);
        out.push_str("# HELP gadus_api_connections_refused_total API connections answered 503 because every connection was busy.\n# TYPE gadus_api_connections_refused_total counter\n");
        let _ = writeln!(out, "gadus_api_connections_refused_total {}", m.api_connections_refused);
        out.push_str("# HELP gadus_peer_faults_total Messages refused because the peer broke the protocol, by peer and kind.\n# TYPE gadus_peer_faults_total counter\n");
        for ((peer, kind), n) in &m.peer_faults {
            let _ = writeln!(out, "gadus_peer_faults_total{{peer=\"{peer}\",kind=\"{kind}\"}} {n}");
        }
        out.push_str("# HELP gadus_jobs_submitted_total Jobs accepted by the API since start.\n# TYPE gadus_jobs_submitted_total counter\n");
        let _ = writeln!(out, "gadus_jobs_submitted_total {}", m.jobs_submitted);
        out.push_str("# HELP gadus_evaluations_total Evaluations processed.\n# TYPE gadus_evaluations_total counter\n");
        let _ = writeln!(out, "gadus_evaluations_total {}", m.evaluations);
        out.push_str("# HELP gadus_api_request_duration_seconds API request latency.\n# TYPE gadus_api_request_duration_seconds histogram\n");
        for ((method, route, status), h) in &m.api {
            h.render(
                &mut out,
                "gadus_api_request_duration_seconds",
                &format!("method=\"{method}\",route=\"{route}\",status=\"{status}\""),
            );
        }
        out.push_str("# HELP gadus_fsync_batch_records Records per group commit.\n# TYPE gadus_fsync_batch_records histogram\n");
        if let Some(h) = &m.fsync_records {
            h.render(&mut out, "gadus_fsync_batch_records", "");
        }
        out.push_str("# HELP gadus_round_inputs Inputs (requests, messages, results) per group commit.\n# TYPE gadus_round_inputs histogram\n");
        if let Some(h) = &m.round_inputs {
            h.render(&mut out, "gadus_round_inputs", "");
        }
        out.push_str("# HELP gadus_fsync_duration_seconds Time to write and sync one group commit.\n# TYPE gadus_fsync_duration_seconds histogram\n");
        if let Some(h) = &m.fsync_seconds {
            h.render(&mut out, "gadus_fsync_duration_seconds", "");
        }
        out
    }
}
