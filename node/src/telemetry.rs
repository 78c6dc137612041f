//! Process-wide telemetry: `tracing` logs on stderr (human text, or JSON lines) and, when an
//! OTLP endpoint is configured through the standard OpenTelemetry environment variables,
//! OpenTelemetry traces and metrics exported over OTLP/gRPC.
//!
//! Export is opt-in: nothing is sent and no exporter thread is started unless
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or the signal-specific `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` /
//! `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`) is set. The rest of the standard variables
//! (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_BSP_*`, `OTEL_METRIC_EXPORT_INTERVAL`,
//! `OTEL_EXPORTER_OTLP_HEADERS`, …) are read by the OpenTelemetry SDK itself.
//!
//! Spans reach OpenTelemetry through `tracing-opentelemetry`, so the node's `tracing` spans (the
//! `job` and `execution` spans carry `job_id` / `execution_id` fields) become OTLP spans whose
//! attributes hold those IDs. Metrics are recorded through the global meter (see
//! [`crate::metrics`]), which is a no-op until [`init`] installs a provider.
//!
//! [`init`] must be called inside a Tokio runtime context: the tonic exporter builds its channel
//! on the current runtime, and the SDK's exporter threads drive requests on that runtime's
//! reactor. Keep the returned [`TelemetryGuard`] alive until the runtime's work is done and drop
//! it before the runtime, so buffered spans and metrics are flushed on the way out.

use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

/// The service name when `OTEL_SERVICE_NAME` does not say otherwise.
pub const SERVICE_NAME: &str = "gadus";

/// How long shutdown may spend flushing each provider: long enough for one export to a local
/// collector, short enough that an unreachable collector does not hang process exit.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Flushes and shuts down the OpenTelemetry providers when dropped.
#[must_use = "dropping the guard shuts telemetry export down"]
#[derive(Default)]
pub struct TelemetryGuard {
    tracer: Option<SdkTracerProvider>,
    meter: Option<SdkMeterProvider>,
}

impl TelemetryGuard {
    /// Whether spans are being exported over OTLP.
    pub fn exports_traces(&self) -> bool {
        self.tracer.is_some()
    }

    /// Whether metrics are being exported over OTLP.
    pub fn exports_metrics(&self) -> bool {
        self.meter.is_some()
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        // Shutdown flushes what the batch processor and periodic reader still hold; errors are
        // only reported: the process is exiting and there is nobody left to retry.
        if let Some(t) = self.tracer.take()
            && let Err(e) = t.shutdown_with_timeout(SHUTDOWN_TIMEOUT)
        {
            eprintln!("telemetry: flushing spans failed: {e}");
        }
        if let Some(m) = self.meter.take()
            && let Err(e) = m.shutdown_with_timeout(SHUTDOWN_TIMEOUT)
        {
            eprintln!("telemetry: flushing metrics failed: {e}");
        }
    }
}

fn env_set(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| !v.is_empty())
}

/// Installs the global `tracing` subscriber and, if configured, the OTLP exporters.
///
/// `level` is the default filter for the log output (`GADUS_LOG`, an `EnvFilter` directive
/// string, overrides it); `json` selects JSON lines instead of human-readable text. Calling
/// it a second time leaves the first subscriber in place and returns an inert guard.
pub fn init(level: &str, json: bool) -> TelemetryGuard {
    let filter = EnvFilter::try_from_env("GADUS_LOG").unwrap_or_else(|_| {
        EnvFilter::new(format!("{level},hyper=warn,h2=warn,tonic=warn,fjall=warn,lsm_tree=warn"))
    });
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = if json { fmt.json().boxed() } else { fmt.boxed() };

    let resource = resource();
    let mut guard = TelemetryGuard::default();
    let mut errors = Vec::new();

    let otel_layer = if env_set("OTEL_EXPORTER_OTLP_ENDPOINT")
        || env_set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    {
        match opentelemetry_otlp::SpanExporter::builder().with_tonic().build() {
            Ok(exporter) => {
                let provider = SdkTracerProvider::builder()
                    .with_resource(resource.clone())
                    .with_batch_exporter(exporter)
                    .build();
                let tracer = provider.tracer(SERVICE_NAME);
                guard.tracer = Some(provider);
                // Its own filter, independent of the log level: the test harness and quiet
                // deployments log at `warn` but still want the info-level job spans exported.
                // The exporter's own stack (tonic, h2, hyper, tower) is cut off so exporting a
                // batch does not produce spans that need exporting.
                let otel_filter = EnvFilter::new(
                    "info,h2=off,hyper=off,hyper_util=off,tonic=off,tower=off,opentelemetry=off,\
                     opentelemetry_sdk=off,opentelemetry_otlp=off,fjall=off,lsm_tree=off",
                );
                Some(tracing_opentelemetry::layer().with_tracer(tracer).with_filter(otel_filter))
            }
            Err(e) => {
                errors.push(format!("OTLP span exporter: {e}"));
                None
            }
        }
    } else {
        None
    };

    if env_set("OTEL_EXPORTER_OTLP_ENDPOINT") || env_set("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") {
        match opentelemetry_otlp::MetricExporter::builder().with_tonic().build() {
            Ok(exporter) => {
                let provider = SdkMeterProvider::builder()
                    .with_resource(resource)
                    .with_periodic_exporter(exporter)
                    .build();
                guard.meter = Some(provider);
            }
            Err(e) => errors.push(format!("OTLP metric exporter: {e}")),
        }
    }

    let installed = tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(otel_layer)
        .try_init()
        .is_ok();
    if !installed {
        // Somebody else owns the global subscriber (tests that start nodes in-process): our
        // tracer would never see a span, so do not keep an exporter running for nothing.
        return TelemetryGuard::default();
    }
    if let Some(m) = &guard.meter {
        // Only now: instruments made from the global meter (crate::metrics) must point at a
        // provider that stays alive, not at one dropped because the subscriber was taken.
        opentelemetry::global::set_meter_provider(m.clone());
    }
    for e in errors {
        tracing::warn!("telemetry export disabled: {e}");
    }
    if guard.exports_traces() || guard.exports_metrics() {
        let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").unwrap_or_default();
        tracing::info!(
            traces = guard.exports_traces(),
            metrics = guard.exports_metrics(),
            %endpoint,
            "exporting OpenTelemetry over OTLP/gRPC"
        );
    }
    guard
}

/// `service.name` is `gadus` unless `OTEL_SERVICE_NAME` is set; the SDK's detectors add the
/// SDK attributes and `OTEL_RESOURCE_ATTRIBUTES`.
fn resource() -> Resource {
    let builder = Resource::builder();
    let builder = if env_set("OTEL_SERVICE_NAME") {
        builder // EnvResourceDetector (inside `builder()`) has already applied it.
    } else {
        builder.with_service_name(SERVICE_NAME)
    };
    builder.with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION"))).build()
}
