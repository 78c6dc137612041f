//! `gadus serve`: run a node until Ctrl-C.

use std::process::ExitCode;

use anyhow::Context;
use gadus_node::config::{Layers, NodeConfig};

use super::Global;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Run the orchestrator (alone, unless --compute is also given).
    #[arg(long)]
    orchestrator: bool,
    /// Run the compute role (alone, unless --orchestrator is also given).
    #[arg(long)]
    compute: bool,
    /// Node labels `key=value` (repeatable or comma-separated).
    #[arg(long, value_delimiter = ',')]
    labels: Vec<String>,
    /// Bootstrap peers (`/ip4/127.0.0.1/tcp/PORT/p2p/ID`).
    #[arg(long)]
    peer: Vec<String>,
    /// Host paths jobs may mount with `local` inputs, `path[:ro|:rw]` (Bacalhau's flag).
    #[arg(long = "allow-listed-local-paths", value_delimiter = ',')]
    allow_listed_local_paths: Vec<String>,
    /// Any config key: `-c Key.Path=value` (repeatable).
    #[arg(short = 'c', long = "config")]
    config: Vec<String>,
    /// Serve the API over TLS with this PEM certificate chain (with --tlskey).
    #[arg(long, env = "BACALHAU_TLS_CERT")]
    tlscert: Option<String>,
    /// The certificate's PEM private key.
    #[arg(long, env = "BACALHAU_TLS_KEY")]
    tlskey: Option<String>,
    /// Serve the API over TLS with a certificate made for this node (kept in <data dir>/tls;
    /// its fingerprint is printed; clients trust it with --cacert).
    #[arg(long)]
    self_signed: bool,
    /// Obtain and renew the API's certificate for this host name over ACME (Let's Encrypt
    /// unless -c API.TLS.AutoCertDirectory=URL); the CA validates with TLS-ALPN-01, so the API
    /// must be reachable at HOST:443.
    #[arg(long, value_name = "HOSTNAME")]
    autocert: Option<String>,
}

/// The effective configuration for a node started from the command line.
pub fn load_config(g: &Global, extra: &[(String, String)]) -> anyhow::Result<NodeConfig> {
    let data_dir = gadus_node::resolve_data_dir(g.data_dir.clone());
    let mut flags: Vec<(String, String)> = vec![("DataDir".into(), data_dir.display().to_string())];
    if let Some(h) = &g.api_host {
        flags.push(("API.Host".into(), h.clone()));
    }
    if let Some(p) = g.api_port {
        flags.push(("API.Port".into(), p.to_string()));
    }
    if let Some(l) = &g.log_level {
        flags.push(("Logging.Level".into(), l.clone()));
    }
    if g.log_format == "json" {
        flags.push(("Logging.Mode".into(), "json".into()));
    }
    flags.extend(extra.iter().cloned());
    let layers =
        Layers { file: Some(data_dir.join("config.yaml")), env: std::env::vars().collect(), flags };
    NodeConfig::load(&layers).context("loading the configuration")
}

/// Logs to stderr (text, or JSON with `--log-format json`) and, when `OTEL_EXPORTER_OTLP_*`
/// is set, OpenTelemetry export. Call inside the runtime (`rt.enter()`): the OTLP exporter
/// builds its gRPC channel there. Keep the guard until the node has stopped, and drop it before
/// the runtime so the last spans are flushed.
pub fn init_logging(cfg: &NodeConfig) -> gadus_node::telemetry::TelemetryGuard {
    gadus_node::telemetry::init(&cfg.logging.level, cfg.logging.mode.eq_ignore_ascii_case("json"))
}

pub fn run(g: &Global, args: Args) -> anyhow::Result<ExitCode> {
    let mut extra = Vec::new();
    if args.orchestrator || args.compute {
        extra.push(("Orchestrator.Enabled".into(), args.orchestrator.to_string()));
        extra.push(("Compute.Enabled".into(), args.compute.to_string()));
    }
    if !args.labels.is_empty() {
        extra.push(("Labels".into(), args.labels.join(",")));
    }
    if !args.allow_listed_local_paths.is_empty() {
        extra.push((
            "Compute.AllowListedLocalPaths".into(),
            args.allow_listed_local_paths.join(","),
        ));
    }
    if !args.peer.is_empty() {
        extra.push(("Network.Peers".into(), args.peer.join(",")));
    }
    if let Some(c) = &args.tlscert {
        extra.push(("API.TLS.CertFile".into(), c.clone()));
    }
    if let Some(k) = &args.tlskey {
        extra.push(("API.TLS.KeyFile".into(), k.clone()));
    }
    if args.self_signed {
        extra.push(("API.TLS.SelfSigned".into(), "true".into()));
    }
    if let Some(h) = &args.autocert {
        extra.push(("API.TLS.AutoCert".into(), h.clone()));
    }
    for c in &args.config {
        let (k, v) =
            c.split_once('=').with_context(|| format!("-c expects Key.Path=value, got {c:?}"))?;
        extra.push((k.trim().to_string(), v.trim().to_string()));
    }
    let cfg = load_config(g, &extra)?;
    let rt = super::runtime()?;
    // Declared after `rt`, so it is dropped (and flushes) while the runtime is still alive.
    let _telemetry = {
        let _entered = rt.enter();
        init_logging(&cfg)
    };
    let open_to_network = anonymous_writes_off_loopback(&cfg);
    rt.block_on(async move {
        let node = gadus_node::start(cfg, Default::default()).await?;
        if open_to_network {
            eprintln!(
                "WARNING: anyone who can reach {} may submit and run jobs (anonymous writes, no TLS); lock it down with -c API.Auth.AccessPolicyPath=builtin:no-anon, a login policy and --tlscert/--self-signed (README: Securing a node)",
                node.api_url()
            );
        }
        eprintln!("gadus node {} is ready", node.node_id);
        eprintln!("API: {}", node.api_url());
        if let Some(cert) = &node.tls {
            eprintln!("TLS certificate: {cert}");
        }
        if let Some(p2p) = &node.p2p {
            for a in p2p.listen_addrs() {
                eprintln!("P2P: {a}");
            }
        }
        let host = if node.api_addr.ip().is_unspecified() { "127.0.0.1".to_string() } else { node.api_addr.ip().to_string() };
        eprintln!("To use this node from another shell:\n  export GADUS_API_HOST={host} GADUS_API_PORT={}", node.api_addr.port());
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {
                eprintln!("shutting down");
                node.shutdown().await;
            }
            () = wait_term() => {
                node.shutdown().await;
            }
        }
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

async fn wait_term() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}

/// Whether the node serves anonymous writes, in clear text, on an address other hosts can
/// reach.
fn anonymous_writes_off_loopback(cfg: &gadus_node::NodeConfig) -> bool {
    let policy = cfg.api.auth.access_policy_path.as_str();
    let anonymous = matches!(policy, "" | "builtin:anonymous");
    let tls = cfg.api.tls.self_signed
        || !cfg.api.tls.cert_file.is_empty()
        || !cfg.api.tls.auto_cert.is_empty();
    let host = cfg.api.host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    anonymous && !loopback && !tls
}
