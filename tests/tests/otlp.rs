//! Telemetry of a real `gadus serve`: OpenTelemetry traces and metrics exported over OTLP/gRPC to
//! a real OTLP receiver (the collector's generated tonic services, hosted on loopback in this
//! test), and JSON log lines on stderr with `--log-format json`.

#![allow(clippy::unwrap_used)] // Tests unwrap: a panic is the failure report.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use serde_json::Value;
use support::*;

/// What the receiver has been sent, kept whole so assertions see the real wire messages.
#[derive(Clone, Default)]
struct Received {
    traces: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
    metrics: Arc<Mutex<Vec<ExportMetricsServiceRequest>>>,
}

#[tonic::async_trait]
impl TraceService for Received {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.traces.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

#[tonic::async_trait]
impl MetricsService for Received {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.metrics.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse { partial_success: None }))
    }
}

/// Starts the OTLP receiver on 127.0.0.1 and returns its endpoint URL.
async fn start_receiver(received: Received) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(received.clone()))
            .add_service(MetricsServiceServer::new(received))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    format!("http://{addr}")
}

fn string_attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attrs.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            AnyValue::StringValue(s) => Some(s.as_str()),
            _ => None,
        }
    })
}

/// (span name, service.name of its resource, attributes) for every span received so far.
fn spans(r: &Received) -> Vec<(String, Option<String>, Vec<KeyValue>)> {
    let mut out = Vec::new();
    for req in r.traces.lock().unwrap().iter() {
        for rs in &req.resource_spans {
            let service = rs
                .resource
                .as_ref()
                .and_then(|res| string_attr(&res.attributes, "service.name"))
                .map(str::to_string);
            for ss in &rs.scope_spans {
                for s in &ss.spans {
                    out.push((s.name.clone(), service.clone(), s.attributes.clone()));
                }
            }
        }
    }
    out
}

fn metric_names(r: &Received) -> Vec<String> {
    let mut out = Vec::new();
    for req in r.metrics.lock().unwrap().iter() {
        for rm in &req.resource_metrics {
            for sm in &rm.scope_metrics {
                out.extend(sm.metrics.iter().map(|m| m.name.clone()));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_with_job_and_execution_ids_reach_an_otlp_receiver() {
    let received = Received::default();
    let endpoint = start_receiver(received.clone()).await;
    let node = tokio::task::block_in_place(|| {
        Node::start_env(
            &[],
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
                // Export within a fraction of a second rather than the default 5 s / 60 s.
                ("OTEL_BSP_SCHEDULE_DELAY", "100"),
                ("OTEL_METRIC_EXPORT_INTERVAL", "200"),
            ],
        )
    });
    let job_id = submit(&node, noop_job()).await;
    assert_eq!(wait_terminal(&node, &job_id, Duration::from_secs(30)).await, "Completed");

    let deadline = Instant::now() + Duration::from_secs(30);
    let (job_span, exec_span) = loop {
        let all = spans(&received);
        let job_span = all
            .iter()
            .find(|(name, _, a)| name == "job" && string_attr(a, "job_id") == Some(&job_id))
            .cloned();
        // The run span: a noop job on a node without a publisher has no publish step.
        let exec_span = all
            .iter()
            .find(|(name, _, a)| {
                name == "execution"
                    && string_attr(a, "job_id") == Some(&job_id)
                    && string_attr(a, "phase") == Some("run")
            })
            .cloned();
        if let (Some(j), Some(e)) = (job_span, exec_span) {
            break (j, e);
        }
        assert!(
            Instant::now() < deadline,
            "no job/execution spans for {job_id} within 30s; got {:?}",
            all.iter().map(|(n, _, a)| (n, a)).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(job_span.1.as_deref(), Some("gadus"), "resource service.name");
    assert_eq!(exec_span.1.as_deref(), Some("gadus"), "resource service.name");
    let exec_id = string_attr(&exec_span.2, "execution_id").unwrap_or_default();
    assert!(exec_id.starts_with("e-"), "execution_id attribute: {exec_id:?}");

    // The execution ID on the span is the one the API reports for the job.
    let (_, v, _) =
        call("GET", &node.url(&format!("/api/v1/orchestrator/jobs/{job_id}/executions")), None)
            .await;
    let ids: Vec<&str> =
        v["Items"].as_array().unwrap().iter().filter_map(|e| e["ID"].as_str()).collect();
    assert!(ids.contains(&exec_id), "{exec_id} not among {ids:?}");

    // Metrics travel the same way: the submission counter and the API latency histogram.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let names = metric_names(&received);
        if names.iter().any(|n| n == "gadus.jobs.submitted")
            && names.iter().any(|n| n == "http.server.request.duration")
        {
            break;
        }
        assert!(Instant::now() < deadline, "metrics not exported within 30s; got {names:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_spans_are_flushed_when_the_node_stops() {
    let received = Received::default();
    let endpoint = start_receiver(received.clone()).await;
    let mut node = tokio::task::block_in_place(|| {
        Node::start_env(
            &[],
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
                // Far beyond the test: spans can only leave through the shutdown flush.
                ("OTEL_BSP_SCHEDULE_DELAY", "600000"),
                ("OTEL_METRIC_EXPORT_INTERVAL", "600000"),
            ],
        )
    });
    let job_id = submit(&node, noop_job()).await;
    assert_eq!(wait_terminal(&node, &job_id, Duration::from_secs(30)).await, "Completed");
    let has_job_span = |r: &Received| {
        spans(r).iter().any(|(n, _, a)| n == "job" && string_attr(a, "job_id") == Some(&job_id))
    };
    assert!(!has_job_span(&received), "exported before shutdown: the premise does not hold");

    let pid = rustix::process::Pid::from_child(&node.child);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = node.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "node did not exit within 30s of SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status}");
    assert!(has_job_span(&received), "job span not flushed at shutdown");
    assert!(
        metric_names(&received).iter().any(|n| n == "gadus.jobs.submitted"),
        "metrics not flushed at shutdown"
    );
}

#[tokio::test]
async fn log_format_json_writes_json_lines_to_stderr() {
    let node = Node::start_env(&["--log-format", "json"], &[("GADUS_LOG", "info")]);
    let job_id = submit(&node, noop_job()).await;
    assert_eq!(wait_terminal(&node, &job_id, Duration::from_secs(30)).await, "Completed");

    // The "job submitted" event, logged inside the job span, as one JSON object per line.
    let deadline = Instant::now() + Duration::from_secs(30);
    let event = loop {
        let found = node.stderr.lock().unwrap().iter().find_map(|l| {
            let v: Value = serde_json::from_str(l).ok()?;
            (v["fields"]["message"] == "job submitted").then_some(v)
        });
        if let Some(v) = found {
            break v;
        }
        assert!(Instant::now() < deadline, "no JSON `job submitted` line within 30s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(event["level"], "INFO", "{event}");
    assert!(event["timestamp"].is_string(), "{event}");
    assert_eq!(event["span"]["name"], "job", "{event}");
    assert_eq!(event["span"]["job_id"], job_id.as_str(), "{event}");

    // Everything the logger writes is JSON; only the startup banner (plain eprintln) is not.
    let lines = node.stderr.lock().unwrap().clone();
    let logs: Vec<&String> = lines.iter().filter(|l| l.starts_with('{')).collect();
    assert!(logs.iter().all(|l| serde_json::from_str::<Value>(l).is_ok()), "{logs:?}");
}
