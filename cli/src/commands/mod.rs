//! The command tree. Each sub-module holds one command group.

mod agent;
mod auth;
mod bench;
mod config;
mod data;
pub(crate) mod devstack;
mod get;
mod job;
mod node;
mod run;
mod serve;
mod version;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::client::Client;

/// gadus: run Docker and WASM jobs next to the data, over a Bacalhau-compatible API.
#[derive(Debug, Parser)]
#[command(name = "gadus", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// Options every command understands.
#[derive(Debug, Clone, Args)]
pub struct Global {
    /// Host of the node's API (client commands) or address to bind (serve).
    #[arg(long, env = "GADUS_API_HOST", global = true)]
    pub api_host: Option<String>,
    /// Port of the node's API.
    #[arg(long, env = "GADUS_API_PORT", global = true)]
    pub api_port: Option<u16>,
    /// Data directory (default ~/.gadus).
    #[arg(long, env = "GADUS_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// Log format for the node: text or json.
    #[arg(long, global = true, default_value = "text")]
    pub log_format: String,
    /// Log level (error, warn, info, debug, trace).
    #[arg(long, global = true, env = "GADUS_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// User name for an `ask` login (or BACALHAU_API_USERNAME); the password comes from
    /// BACALHAU_API_PASSWORD or a prompt.
    #[arg(long, global = true)]
    pub username: Option<String>,
    /// Talk to the node over TLS (https).
    #[arg(long, global = true, env = "BACALHAU_API_TLS_USETLS")]
    pub tls: bool,
    /// Trust this PEM certificate for the node (a self-signed node's); implies --tls.
    #[arg(long, global = true, env = "BACALHAU_API_TLS_CACERT")]
    pub cacert: Option<PathBuf>,
    /// Do not verify the node's TLS certificate.
    #[arg(long, global = true, env = "BACALHAU_API_TLS_INSECURE")]
    pub insecure: bool,
}

impl Global {
    /// A client for the configured node.
    pub fn client(&self) -> anyhow::Result<Client> {
        let host = match self.api_host.as_deref() {
            None | Some("0.0.0.0") | Some("") => "127.0.0.1",
            Some(h) => h,
        };
        let tls = crate::client::TlsOptions {
            use_tls: self.tls,
            cacert: self.cacert.clone(),
            insecure: self.insecure,
        };
        Ok(Client::new_with(host, self.api_port.unwrap_or(1234), &tls)?
            .with_identity(self.identity()))
    }

    /// The client's key and tokens in the data directory.
    pub fn identity(&self) -> crate::auth::Identity {
        let dir = self.data_dir.clone().unwrap_or_else(gadus_node::config::default_data_dir);
        let mut id = crate::auth::Identity::from_env(dir);
        if let Some(u) = &self.username {
            id.answers.insert("username".into(), u.clone());
        }
        id
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the version of this client (and of the node, if reachable).
    Version(version::Args),
    /// Run a node (orchestrator and compute by default).
    Serve(serve::Args),
    /// Start a cluster of N real nodes on loopback (Ctrl-C stops them).
    Devstack(devstack::Args),
    /// Work with jobs.
    #[command(subcommand)]
    Job(job::JobCommand),
    /// Run a WASM module as a job.
    #[command(subcommand)]
    Wasm(run::WasmCommand),
    /// Run a Docker image as a job.
    #[command(subcommand)]
    Docker(run::DockerCommand),
    /// Download the results of a job.
    Get(get::Args),
    /// Add data to the node's IPFS-compatible store and read it back.
    #[command(subcommand)]
    Data(data::DataCommand),
    /// Inspect and manage nodes.
    #[command(subcommand)]
    Node(node::NodeCommand),
    /// Ask the node about itself.
    #[command(subcommand)]
    Agent(agent::AgentCommand),
    /// Print this client's ID (the hash of its key in <data dir>/user_id.pem).
    Id(auth::IdArgs),
    /// Log in, see who you are to the node, hash passwords for policies.
    #[command(subcommand)]
    Auth(auth::AuthCommand),
    /// Read and change the node configuration.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Measure gadus (each prints one JSON line per configuration).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let g = cli.global;
    match cli.command {
        Command::Version(args) => runtime()?.block_on(version::run(&g, args)),
        Command::Serve(args) => serve::run(&g, args),
        Command::Devstack(args) => devstack::run(&g, args),
        Command::Job(cmd) => job::run(&g, cmd),
        Command::Wasm(cmd) => run::wasm(&g, cmd),
        Command::Docker(cmd) => run::docker(&g, cmd),
        Command::Get(args) => runtime()?.block_on(get::run(&g, args)),
        Command::Data(cmd) => runtime()?.block_on(data::run(&g, cmd)),
        Command::Node(cmd) => runtime()?.block_on(node::run(&g, cmd)),
        Command::Agent(cmd) => runtime()?.block_on(agent::run(&g, cmd)),
        Command::Id(args) => auth::id(&g, args),
        Command::Auth(cmd) => runtime()?.block_on(auth::run(&g, cmd)),
        Command::Config(cmd) => config::run(&g, cmd),
        Command::Bench(cmd) => bench::run(&g, cmd),
    }
}

/// A tokio runtime for client commands.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("starting the async runtime: {e}"))
}

/// Human time from Unix nanoseconds.
pub fn time_ns(ns: i64) -> String {
    let t = gadus_core::model::Timestamp(ns).to_rfc3339();
    t.split('.').next().unwrap_or(&t).trim_end_matches('Z').replace('T', " ")
}
