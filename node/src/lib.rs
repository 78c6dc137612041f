//! # gadus-node — the node process
//!
//! One node = one event loop ([`runtime`]) owning the core's orchestrator and compute state
//! machines, a durable fjall [`store`] written in group commits, the adapters of `gadus-io`
//! (executors, inputs, publishers, transport), and the Bacalhau-compatible REST [`api`].
//!
//! ```text
//!  HTTP (axum) ──▶ Handle ──▶ ┌──────────── event loop (one task) ────────────┐
//!  libp2p     ──▶ Inbound ──▶ │ Orchestrator ⇄ Compute   (gadus-core)          │
//!  executors  ──▶ Work    ──▶ │ round: feed → settle → ONE fsync → act         │
//!                             └──▶ replies · messages · executor/storage tasks ┘
//! ```
//!
//! Each execution's work (context, pinned inputs, engine state) is owned by [`work`] from the
//! core's `Prepare` to its `Release`; the API's answers are guarded against handler panics.
//!
//! [`start`] assembles a node from a [`config::NodeConfig`]: `gadus serve`, `job run
//! --local`, `devstack` and the tests all go through it.

pub mod api;
pub mod auth;
pub mod clock;
pub mod config;
pub mod listener;
pub mod logs;
pub mod metrics;
pub mod runtime;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod work;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use gadus_core::compute::{ComputeConfig, Locality, SelectionPolicy};
use gadus_core::model::resources::{parse_bytes, parse_cpu};
use gadus_core::model::{NodeInfo, NodeType, Resources, ResourcesConfig, SpecConfig};
use gadus_core::orchestrator::{JobDefaults, OrchestratorConfig, RetryPolicy};
use gadus_io::executor::{Executor, OutputLimits};

pub use config::NodeConfig;
pub use runtime::Handle;

use config::parse_duration;

/// The authenticator and authorizer `API.Auth.*` describes (a bad policy stops the start).
pub fn auth_from_config(
    cfg: &NodeConfig,
    node_id: &str,
    data_dir: &Path,
) -> Result<auth::Auth, StartError> {
    let methods = cfg
        .api
        .auth
        .methods
        .iter()
        .map(|(name, m)| {
            let spec = auth::MethodSpec {
                kind: m.kind.clone(),
                policy_path: m.policy_path.clone(),
                users_file: m.users_file.clone(),
                allowed_clients: m.allowed_clients.clone(),
            };
            (name.clone(), spec)
        })
        .collect();
    auth::Auth::new(node_id, data_dir, &methods, &cfg.api.auth.access_policy_path)
        .map_err(|e| StartError::Config(e.to_string()))
}

/// Why a node could not start (the message says what to fix).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data directory is unusable.
    #[error("data directory {path}: {error}")]
    DataDir {
        /// Path.
        path: String,
        /// Why.
        error: String,
    },
    /// The store could not be opened.
    #[error("store: {0}")]
    Store(#[from] store::StoreError),
    /// The API port could not be bound.
    #[error("cannot listen on {addr}: {error}")]
    Listen {
        /// Address.
        addr: String,
        /// Why.
        error: String,
    },
    /// A configuration value is unusable.
    #[error("configuration: {0}")]
    Config(String),
    /// Another process runs a node on this data directory.
    #[error(
        "another gadus process{holder} holds the data directory {path}: stop it, or give this node its own --data-dir"
    )]
    Busy {
        /// The data directory.
        path: String,
        /// ` (PID n)` when known.
        holder: String,
    },
}

/// Empties the upload spool folder left by an earlier process (logged, never fatal).
fn clear_spool(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut removed = 0;
    for entry in entries.flatten() {
        if std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    if removed > 0 {
        tracing::info!(removed, dir = %dir.display(), "removed unfinished upload spools");
    }
}

/// Takes `<data dir>/gadus.lock` (an exclusive `flock`, released by the kernel when the
/// process ends, even by kill -9), so that a second node on the same directory stops at once
/// with one clear message instead of failing deep inside the store.
fn lock_data_dir(dir: &Path) -> Result<std::fs::File, StartError> {
    use std::io::{Read, Seek, Write};
    let path = dir.join("gadus.lock");
    let unusable = |e: std::io::Error| StartError::DataDir {
        path: path.display().to_string(),
        error: e.to_string(),
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(unusable)?;
    if rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
        let mut pid = String::new();
        let _ = file.read_to_string(&mut pid);
        let pid = pid.trim();
        return Err(StartError::Busy {
            path: dir.display().to_string(),
            holder: if pid.is_empty() { String::new() } else { format!(" (PID {pid})") },
        });
    }
    file.set_len(0).map_err(unusable)?;
    file.rewind().map_err(unusable)?;
    write!(file, "{}", std::process::id()).map_err(unusable)?;
    Ok(file)
}

/// A started node.
pub struct RunningNode {
    /// The node loop.
    pub handle: Handle,
    /// Where the API listens.
    pub api_addr: SocketAddr,
    /// This node's ID.
    pub node_id: String,
    /// The libp2p transport, when the node is networked.
    pub p2p: Option<gadus_io::transport::p2p::P2pHandle>,
    loop_task: tokio::task::JoinHandle<()>,
    api_task: tokio::task::JoinHandle<()>,
    /// When the API speaks TLS: its certificate file and SHA-256 fingerprint, or where ACME
    /// obtains it.
    pub tls: Option<String>,
    /// Held for the node's lifetime: one process per data directory.
    _lock: std::fs::File,
}

impl RunningNode {
    /// The API base URL (`http://host:port`, `https://` with TLS).
    pub fn api_url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.api_addr)
    }

    /// Stops the API and the loop cleanly (the compute node says goodbye).
    pub async fn shutdown(self) {
        self.api_task.abort();
        self.handle.shutdown().await;
        let _ = self.loop_task.await;
        if let Some(p) = &self.p2p {
            p.shutdown().await;
        }
    }

    /// Waits until the loop ends (forever, normally).
    pub async fn wait(self) {
        let _ = self.loop_task.await;
        self.api_task.abort();
    }
}

/// This node's ID: the libp2p peer ID of the ed25519 key in `<data dir>/libp2p.key` (created
/// on first start), so the ID peers authenticate and the ID jobs and executions name are one.
pub fn node_id(data_dir: &Path) -> Result<String, StartError> {
    gadus_io::transport::p2p::peer_id_from_key_file(&data_dir.join("libp2p.key")).map_err(|e| {
        StartError::DataDir { path: data_dir.display().to_string(), error: e.to_string() }
    })
}

fn physical_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<u64>().ok()))
        })
        .map(|kb| kb * 1024)
        .unwrap_or(4 << 30)
}

fn free_disk(path: &Path) -> u64 {
    filesystem_space(path).map_or(100 << 30, |(_, free)| free)
}

/// `80%` of `whole`, or an absolute byte quantity (`50GB`): for the byte-sized settings
/// (`DataStore.Quota`, `DataStore.MinFreeDisk`).
pub fn share_of(spec: &str, whole: f64) -> Result<f64, String> {
    share(spec, whole, |s| parse_bytes(s).ok().map(|v| v as f64))
}

/// The size and the free space of the filesystem holding `path`, in bytes.
pub fn filesystem_space(path: &Path) -> Option<(u64, u64)> {
    let s = rustix::fs::statvfs(path).ok()?;
    Some((s.f_blocks.saturating_mul(s.f_frsize), s.f_bavail.saturating_mul(s.f_frsize)))
}

/// `80%` of `physical`, or an absolute quantity parsed with `parse`.
fn share(spec: &str, physical: f64, parse: impl Fn(&str) -> Option<f64>) -> Result<f64, String> {
    let spec = spec.trim();
    if let Some(p) = spec.strip_suffix('%') {
        let pct: f64 = p.trim().parse().map_err(|_| format!("invalid percentage {spec:?}"))?;
        if !(0.0..=100.0).contains(&pct) {
            return Err(format!("percentage out of range: {spec:?}"));
        }
        return Ok(physical * pct / 100.0);
    }
    parse(spec).ok_or_else(|| format!("invalid quantity {spec:?}"))
}

/// The capacity this node offers to jobs.
pub fn allocated_capacity(cfg: &NodeConfig, gpus: u64) -> Result<Resources, StartError> {
    let cap = &cfg.compute.allocated_capacity;
    let cpus = std::thread::available_parallelism().map(|n| n.get() as f64).unwrap_or(1.0);
    let bad =
        |k: &str, e: String| StartError::Config(format!("Compute.AllocatedCapacity.{k}: {e}"));
    let cpu = share(&cap.cpu, cpus, |s| parse_cpu(s).ok()).map_err(|e| bad("CPU", e))?;
    let memory =
        share(&cap.memory, physical_memory() as f64, |s| parse_bytes(s).ok().map(|v| v as f64))
            .map_err(|e| bad("Memory", e))?;
    let disk = share(&cap.disk, free_disk(&cfg.data_dir()) as f64, |s| {
        parse_bytes(s).ok().map(|v| v as f64)
    })
    .map_err(|e| bad("Disk", e))?;
    let gpu = share(&cap.gpu, gpus as f64, |s| s.parse::<u64>().ok().map(|v| v as f64))
        .map_err(|e| bad("GPU", e))?;
    Ok(Resources::new(cpu, memory as u64, disk as u64, gpu as u64))
}

fn dur(key: &str, v: &str) -> Result<Duration, StartError> {
    parse_duration(v).map_err(|e| StartError::Config(format!("{key}: {e}")))
}

fn secs(key: &str, v: &str) -> Result<i64, StartError> {
    Ok(i64::try_from(dur(key, v)?.as_secs()).unwrap_or(i64::MAX))
}

/// The orchestrator settings for a node configuration.
pub fn orchestrator_config(
    cfg: &NodeConfig,
    node_id: &str,
) -> Result<OrchestratorConfig, StartError> {
    let mut o = OrchestratorConfig::new(node_id);
    let sch = &cfg.orchestrator.scheduler;
    o.bid_timeout = dur("Orchestrator.Scheduler.BidTimeout", &sch.bid_timeout)?;
    o.queue_backoff = dur("Orchestrator.Scheduler.QueueBackoff", &sch.queue_backoff)?;
    o.busy_queue_timeout = dur("Orchestrator.Scheduler.BusyQueueTimeout", &sch.busy_queue_timeout)?;
    o.disconnect_timeout = dur(
        "Orchestrator.NodeManager.DisconnectTimeout",
        &cfg.orchestrator.node_manager.disconnect_timeout,
    )?;
    o.manual_approval = cfg.orchestrator.node_manager.manual_approval;
    o.retry = RetryPolicy {
        max_attempts: sch.max_attempts.max(1),
        backoff_base: dur("Orchestrator.Scheduler.RetryBackoff", &sch.retry_backoff)?,
        backoff_max: dur("Orchestrator.Scheduler.MaxRetryBackoff", &sch.max_retry_backoff)?,
    };
    let b = &cfg.job_defaults.batch.task;
    o.defaults = JobDefaults {
        resources: ResourcesConfig {
            cpu: b.resources.cpu.clone(),
            memory: b.resources.memory.clone(),
            disk: b.resources.disk.clone(),
            gpu: b.resources.gpu.clone(),
        },
        queue_timeout: secs(
            "JobDefaults.Batch.Task.Timeouts.QueueTimeout",
            &b.timeouts.queue_timeout,
        )?,
        execution_timeout: secs(
            "JobDefaults.Batch.Task.Timeouts.ExecutionTimeout",
            &b.timeouts.execution_timeout,
        )?,
        total_timeout: secs(
            "JobDefaults.Batch.Task.Timeouts.TotalTimeout",
            &b.timeouts.total_timeout,
        )?,
        publisher: (!b.publisher.kind.is_empty())
            .then(|| SpecConfig::new(b.publisher.kind.clone())),
    };
    Ok(o)
}

/// Options beyond the configuration file (things tests and `devstack` inject).
#[derive(Default)]
pub struct StartOptions {
    /// Bind the API here instead of `API.Host:API.Port` (port 0 = any).
    pub api_listen: Option<SocketAddr>,
    /// Extra executors (replacing built-in ones of the same engine).
    pub executors: Vec<Arc<dyn Executor>>,
    /// Skip probing the Docker engine (faster start when not needed).
    pub without_docker: bool,
    /// Do not start the libp2p transport (a single embedded node: `job run --local`, benches).
    pub without_network: bool,
}

/// Starts a node: store, adapters, event loop and API server.
pub async fn start(cfg: NodeConfig, opts: StartOptions) -> Result<RunningNode, StartError> {
    let data_dir = cfg.data_dir();
    std::fs::create_dir_all(&data_dir).map_err(|e| StartError::DataDir {
        path: data_dir.display().to_string(),
        error: e.to_string(),
    })?;
    let lock = lock_data_dir(&data_dir)?;
    // Upload spools (`<data dir>/tmp`) of a process killed mid-upload are never finished: with
    // the directory locked, nothing else can be using them.
    clear_spool(&data_dir.join("tmp"));
    let node_id = node_id(&data_dir)?;
    let auth = Arc::new(auth_from_config(&cfg, &node_id, &data_dir)?);
    // The token key is made (or read) off the request path, before the first caller needs it.
    let warm = auth.clone();
    tokio::task::spawn_blocking(move || warm.warm_up());
    let store = store::Store::open(&data_dir.join("state"))?;
    let executions_dir = data_dir.join("compute").join("executions");
    std::fs::create_dir_all(&executions_dir).map_err(|e| StartError::DataDir {
        path: executions_dir.display().to_string(),
        error: e.to_string(),
    })?;

    let mut executors: BTreeMap<String, Arc<dyn Executor>> = BTreeMap::new();
    executors.insert("noop".into(), Arc::new(gadus_io::executor::noop::NoopExecutor));
    executors.insert("wasm".into(), Arc::new(gadus_io::executor::wasm::WasmExecutor::default()));
    let mut gpus = 0;
    if !opts.without_docker {
        match gadus_io::executor::docker::DockerExecutor::connect(Default::default()).await {
            Ok(d) => {
                gpus = d.gpus().len() as u64;
                executors.insert("docker".into(), Arc::new(d));
            }
            Err(e) => {
                tracing::info!(error = %e, "Docker engine not available: the docker engine is disabled on this node")
            }
        }
    }
    for e in opts.executors {
        executors.insert(e.engine().to_string(), e);
    }
    executors.retain(|k, _| !cfg.engines.disabled.iter().any(|d| d.eq_ignore_ascii_case(k)));

    let addr: SocketAddr = match opts.api_listen {
        Some(a) => a,
        None => format!("{}:{}", cfg.api.host, cfg.api.port)
            .parse()
            .map_err(|e| StartError::Config(format!("API.Host/API.Port: {e}")))?,
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| StartError::Listen { addr: addr.to_string(), error: e.to_string() })?;
    let api_addr = listener
        .local_addr()
        .map_err(|e| StartError::Listen { addr: addr.to_string(), error: e.to_string() })?;
    let tls = tls::setup(&cfg.api.tls, &data_dir, &cfg.api.host)?;
    let limits = listener::Limits {
        max_connections: listener::fit_to_file_limit(cfg.api.max_connections),
        header_timeout: crate::config::parse_duration(&cfg.api.header_timeout)
            .map_err(|e| StartError::Config(format!("API.HeaderTimeout: {e}")))?,
    };
    if limits.max_connections < cfg.api.max_connections {
        tracing::warn!(
            wanted = cfg.api.max_connections,
            cap = limits.max_connections,
            "API.MaxConnections lowered to fit the process's file limit"
        );
    }
    let storage = storage_adapters(&cfg, &data_dir, api_addr)?;
    let (inputs, publishers) = (storage.inputs.clone(), storage.publishers.clone());

    let capacity = allocated_capacity(&cfg, gpus)?;
    let orch_cfg =
        if cfg.orchestrator.enabled { Some(orchestrator_config(&cfg, &node_id)?) } else { None };
    let compute_cfg = if cfg.compute.enabled {
        let own = if cfg.orchestrator.enabled { vec![node_id.clone()] } else { Vec::new() };
        let mut c = ComputeConfig::new(node_id.clone(), capacity.clone(), own);
        c.labels = cfg.labels.clone();
        c.labels.insert("Operating-System".into(), std::env::consts::OS.into());
        c.labels.insert("Architecture".into(), api_arch());
        c.engines = executors.keys().cloned().collect();
        c.publishers = publishers.iter().map(|p| p.publisher_type().to_string()).collect();
        c.storages = inputs.iter().map(|p| p.source_type().to_string()).collect();
        c.heartbeat_interval = dur("Compute.Heartbeat.Interval", &cfg.compute.heartbeat.interval)?;
        let ac = &cfg.job_admission_control;
        c.policy = SelectionPolicy {
            locality: if ac.locality.eq_ignore_ascii_case("local") {
                Locality::Local
            } else {
                Locality::Anywhere
            },
            reject_stateless: ac.reject_stateless_jobs,
            reject_networked: ac.reject_networked_jobs,
            probe_exec: (!ac.probe_exec.is_empty()).then(|| ac.probe_exec.clone()),
            probe_http: (!ac.probe_http.is_empty()).then(|| ac.probe_http.clone()),
        };
        c.version = agent_version();
        if !cfg.compute.allowed_orchestrators.is_empty() {
            c.allowed_orchestrators =
                Some(cfg.compute.allowed_orchestrators.iter().cloned().collect());
        }
        Some(c)
    } else {
        None
    };

    let mut info = match &compute_cfg {
        Some(c) => {
            let mut i = gadus_core::orchestrator::node_info_from(
                &gadus_core::compute::Compute::new(c.clone(), clock::system_now()).advert(),
            );
            i.node_type = NodeType::Compute;
            i
        }
        None => NodeInfo {
            node_id: node_id.clone(),
            node_type: NodeType::Requester,
            labels: cfg.labels.clone(),
            ..Default::default()
        },
    };
    info.bacalhau_version = api::build_info_public();

    let shared = Arc::new(runtime::Shared {
        node_id: node_id.clone(),
        info: RwLock::new(info),
        nodes: RwLock::new(Vec::new()),
        store,
        logs: logs::LogHub::default(),
        metrics: metrics::Metrics::default(),
        executions_dir,
        orchestrator: cfg.orchestrator.enabled,
        changes: tokio::sync::watch::channel(0).0,
        clock: clock::Clock::System,
    });
    let (transport, p2p_rx, p2p) = if opts.without_network {
        (None, None, None)
    } else {
        let (t, rx, h) = start_p2p(&cfg, &data_dir, api_addr).await?;
        (Some(t as Arc<dyn gadus_io::transport::Transport>), Some(rx), Some(h))
    };
    let adapters = runtime::Adapters {
        executors,
        inputs,
        publishers,
        transport,
        content_sources: Some(storage.sources.clone()),
        allow_network: !cfg.job_admission_control.reject_networked_jobs,
        output_limits: OutputLimits {
            stdout: cfg.compute.max_inline_output_bytes,
            stderr: cfg.compute.max_inline_output_bytes,
        },
        default_exec_timeout: Duration::ZERO,
    };
    let mut seed = [0u8; 8];
    getrandom::fill(&mut seed).map_err(|e| StartError::Config(format!("no OS randomness: {e}")))?;
    let (handle, loop_task) = runtime::Runtime::start(
        node_id.clone(),
        orch_cfg,
        compute_cfg,
        shared,
        adapters,
        u64::from_le_bytes(seed),
    )?;
    // A node running both roles registers its own compute side with its orchestrator in the
    // loop's first rounds; wait for that (briefly) so `node list` right after start shows it.
    if cfg.orchestrator.enabled && cfg.compute.enabled {
        let mut changes = handle.shared.changes.subscribe();
        let registered = |h: &Handle| {
            h.shared
                .nodes
                .read()
                .map(|n| n.iter().any(|s| s.info.node_id == node_id))
                .unwrap_or(true)
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !registered(&handle) {
            if tokio::time::timeout_at(deadline, changes.changed()).await.is_err() {
                tracing::warn!("the node's compute side has not registered itself yet");
                break;
            }
        }
    }

    let write_limiter = Arc::new(
        api::ratelimit::WriteLimiter::new(cfg.api.writes_per_second, &cfg.api.rate_limit_exempt)
            .map_err(|e| StartError::Config(format!("API.RateLimitExempt: {e}")))?,
    );
    let state = api::AppState {
        node: handle.clone(),
        config: Arc::new(cfg),
        started: Instant::now(),
        content: Some(storage.content.clone()),
        local_publisher: storage.local.clone(),
        data_dir: data_dir.clone(),
        content_sources: Some(storage.sources.clone()),
        auth,
        write_limiter,
    };
    let app = api::router(state);
    let tls_info = tls.as_ref().map(|t| t.describe.clone());
    let shared = handle.shared.clone();
    let api_task = match tls {
        Some(t) => tokio::spawn(tls::serve(listener, app, t, limits, shared)),
        None => tokio::spawn(listener::serve(listener, app, None, limits, shared)),
    };
    if let Some(mut rx) = p2p_rx {
        let h = handle.clone();
        tokio::spawn(async move {
            while let Some(event) = rx.recv().await {
                h.peer(event).await;
            }
        });
    }
    Ok(RunningNode {
        handle,
        api_addr,
        node_id,
        p2p,
        loop_task,
        api_task,
        tls: tls_info,
        _lock: lock,
    })
}

fn api_arch() -> String {
    match std::env::consts::ARCH {
        "x86_64" => "amd64".into(),
        "aarch64" => "arm64".into(),
        a => a.into(),
    }
}

fn agent_version() -> String {
    format!("v{}", env!("CARGO_PKG_VERSION"))
}

/// Starts the libp2p transport: listens on `Network.Port` (0 = any) on every interface of
/// `API.Host`'s family, dials `Network.Peers`, advertises the API URL.
async fn start_p2p(
    cfg: &NodeConfig,
    data_dir: &Path,
    api_addr: SocketAddr,
) -> Result<
    (
        Arc<gadus_io::transport::p2p::P2pTransport>,
        tokio::sync::mpsc::Receiver<gadus_io::transport::Inbound>,
        gadus_io::transport::p2p::P2pHandle,
    ),
    StartError,
> {
    use gadus_io::transport::p2p::{P2pConfig, P2pTransport};
    let host = if cfg.network.host.is_empty() { "0.0.0.0" } else { cfg.network.host.as_str() };
    let ip: std::net::IpAddr =
        host.parse().map_err(|e| StartError::Config(format!("Network.Host {host:?}: {e}")))?;
    let proto = if ip.is_ipv6() { "ip6" } else { "ip4" };
    let listen = format!("/{proto}/{ip}/tcp/{}", cfg.network.port)
        .parse()
        .map_err(|e| StartError::Config(format!("Network.Port: {e}")))?;
    let listen = if cfg.network.dial_only { Vec::new() } else { vec![listen] };
    let mut p = P2pConfig::new(listen, data_dir.join("libp2p.key"));
    p.learn_peer_addrs = !cfg.network.dial_only;
    for peer in &cfg.network.peers {
        let peer = peer.trim();
        if peer.is_empty() {
            continue;
        }
        p.bootstrap.push(
            peer.parse().map_err(|e| StartError::Config(format!("Network.Peers {peer:?}: {e}")))?,
        );
    }
    p.mdns = cfg.network.mdns;
    // A private network: `Network.SwarmKeyPath`, else `<data dir>/swarm.key` when present
    // (where Kubo keeps it).
    let swarm_key = match cfg.network.swarm_key_path.as_str() {
        "" => Some(data_dir.join("swarm.key")).filter(|p| p.exists()),
        path => Some(PathBuf::from(path)),
    };
    if let Some(path) = swarm_key {
        p.swarm_key = Some(
            gadus_io::transport::p2p::load_swarm_key(&path)
                .map_err(|e| StartError::Config(format!("Network.SwarmKeyPath: {e}")))?,
        );
        tracing::info!(path = %path.display(), "private network: peers need this swarm key");
    }
    let api_host = if api_addr.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else if api_addr.is_ipv6() {
        format!("[{}]", api_addr.ip())
    } else {
        api_addr.ip().to_string()
    };
    p.api_url = Some(format!("http://{api_host}:{}", api_addr.port()));
    P2pTransport::start(p).await.map_err(|e| StartError::Config(format!("libp2p: {e}")))
}

/// The node's data plane: content store, input providers and publishers.
pub struct Storage {
    /// The embedded content store (`<data dir>/content`).
    pub content: gadus_io::content::ContentStore,
    /// Where missing CIDs are fetched from (peers are added as they appear).
    pub sources: Arc<gadus_io::storage::ipfs::ContentSources>,
    /// Input providers.
    pub inputs: Vec<Arc<dyn gadus_io::storage::InputProvider>>,
    /// Publishers.
    pub publishers: Vec<Arc<dyn gadus_io::storage::Publisher>>,
    /// The `local` publisher (its archives are served by the API).
    pub local: Option<Arc<gadus_io::storage::publish::LocalPublisher>>,
}

/// Input providers and publishers available on this node, minus the disabled ones.
fn storage_adapters(
    cfg: &NodeConfig,
    data_dir: &Path,
    api_addr: SocketAddr,
) -> Result<Storage, StartError> {
    use gadus_io::storage::{InputProvider, Publisher, inline, ipfs, local, publish};
    let content = gadus_io::content::ContentStore::open(data_dir.join("content"))
        .map_err(|e| StartError::Config(format!("opening the content store: {e}")))?;
    let allowed = local::parse_allow_list(&cfg.compute.allow_listed_local_paths)
        .map_err(|e| StartError::Config(e.to_string()))?;
    let url_policy = gadus_io::storage::url::UrlPolicy {
        allow_loopback: cfg.input_sources.allow_loopback,
        ..Default::default()
    };
    let sources =
        Arc::new(ipfs::ContentSources::new(cfg.input_sources.gateways.clone(), url_policy.clone()));
    // S3 credentials come from the node's environment (AWS_ACCESS_KEY_ID/SECRET), as the AWS
    // tools do; endpoints named in job specs are vetted like urlDownload URLs.
    let s3 = gadus_io::storage::s3::S3Config {
        credentials: gadus_io::storage::s3::S3Credentials::from_env(),
        endpoint_policy: url_policy.clone(),
        ..Default::default()
    };
    let mut inputs: Vec<Arc<dyn InputProvider>> = vec![
        Arc::new(inline::InlineProvider),
        Arc::new(gadus_io::storage::url::UrlDownloadProvider::new(url_policy)),
        Arc::new(gadus_io::storage::s3::S3InputProvider::new(s3.clone())),
        Arc::new(ipfs::IpfsProvider::new(content.clone(), sources.clone())),
        Arc::new(local::LocalProvider::new(allowed.clone())),
        Arc::new(local::LocalProvider::legacy(allowed)),
    ];
    let disabled_in =
        |t: &str| cfg.input_sources.disabled.iter().any(|d| d.eq_ignore_ascii_case(t));
    inputs.retain(|p| !disabled_in(p.source_type()));

    let host = if !cfg.publishers.types.local.address.is_empty() {
        cfg.publishers.types.local.address.clone()
    } else if api_addr.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        api_addr.ip().to_string()
    };
    let host =
        if host.contains(':') && !host.starts_with('[') { format!("[{host}]") } else { host };
    let local = Arc::new(publish::LocalPublisher::new(
        data_dir.join("compute").join("published"),
        format!("http://{host}:{}", api_addr.port()),
    ));
    let disabled_pub = |t: &str| cfg.publishers.disabled.iter().any(|d| d.eq_ignore_ascii_case(t));
    let mut publishers: Vec<Arc<dyn Publisher>> = vec![
        Arc::new(publish::NoopPublisher),
        Arc::new(ipfs::IpfsPublisher::new(content.clone())),
        Arc::new(gadus_io::storage::s3::S3Publisher::new(s3)),
    ];
    let local = (!disabled_pub("local")).then_some(local);
    if let Some(l) = &local {
        publishers.push(l.clone());
    }
    publishers.retain(|p| !disabled_pub(p.publisher_type()));
    Ok(Storage { content, sources, inputs, publishers, local })
}

/// The default data directory, honouring `GADUS_DIR`.
pub fn resolve_data_dir(flag: Option<PathBuf>) -> PathBuf {
    flag.or_else(|| std::env::var_os("GADUS_DIR").map(PathBuf::from))
        .unwrap_or_else(config::default_data_dir)
}
