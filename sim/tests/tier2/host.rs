//! One simulated host: the node's real event loop ([`gadus_node::runtime::Runtime`]) and its
//! real HTTP router, wired to the simulated network, the simulated engine and a fjall store
//! that outlives the host's crashes (the store is opened once per run; a crash drops the
//! boot's tasks and memory, and the next boot restores from what was committed).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use gadus_core::compute::ComputeConfig;
use gadus_core::model::{NodeInfo, NodeType, Resources, Timestamp};
use gadus_core::orchestrator::OrchestratorConfig;
use gadus_io::executor::{Executor, OutputLimits};
use gadus_node::clock::Clock;
use gadus_node::runtime::{Adapters, Runtime, Shared};
use gadus_node::store::Store;
use tokio::sync::mpsc;

use crate::executor::SimExecutor;
use crate::net::{API_PORT, ApiListener, SimTransport};
use crate::record::Recorder;

/// Slots per compute node: jobs ask for one CPU, nodes offer this many.
pub const CPUS: u32 = 2;
/// Compute heartbeat interval.
pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// How long the orchestrator waits for a silent node before rescheduling its work.
pub const DISCONNECT: Duration = Duration::from_secs(10);

/// What one host is.
#[derive(Clone)]
pub struct HostSpec {
    /// Host name = node ID.
    pub id: String,
    /// Runs an orchestrator.
    pub orchestrator: bool,
    /// Runs a compute node.
    pub compute: bool,
    /// Every host (the transport dials all but itself).
    pub peers: Vec<String>,
    /// Per-run seed (the node's orchestrator seed derives from it and the boot number).
    pub seed: u64,
    /// The host's store (kept across boots).
    pub store: Store,
    /// Execution working directories.
    pub dir: PathBuf,
    /// The deliberate bug both state machines run with (`mutants_are_caught`).
    pub mutants: gadus_core::mutants::Mutants,
}

/// The host's software, as turmoil calls it on every (re)boot.
pub async fn boot(spec: HostSpec, boot: u64, rec: Recorder) -> turmoil::Result {
    let id = spec.id.clone();
    rec.line(format!("boot {id} #{boot}"));
    let since = turmoil::since_epoch().unwrap_or_default();
    let clock = Clock::tokio_from(Timestamp(i64::try_from(since.as_nanos()).unwrap_or(i64::MAX)));

    let (in_tx, mut in_rx) = mpsc::channel(4096);
    let transport = SimTransport::start(&id, &spec.peers, in_tx, rec.clone());
    let executor: Arc<dyn Executor> = Arc::new(SimExecutor::new(&id, rec.clone()));
    let executors: BTreeMap<String, Arc<dyn Executor>> =
        [("noop".to_string(), executor)].into_iter().collect();

    let orch_cfg = spec.orchestrator.then(|| {
        let mut o = OrchestratorConfig::new(id.clone());
        o.bid_timeout = Duration::from_secs(3);
        o.disconnect_timeout = DISCONNECT;
        o.queue_backoff = Duration::from_secs(2);
        o.busy_queue_timeout = Duration::from_secs(60);
        o.exec_timeout_grace = Duration::from_secs(5);
        o.retry.backoff_base = Duration::from_millis(500);
        o.retry.backoff_max = Duration::from_secs(4);
        o.mutants = spec.mutants;
        o
    });
    let compute_cfg = spec.compute.then(|| {
        let own = if spec.orchestrator { vec![id.clone()] } else { Vec::new() };
        let capacity = Resources::new(f64::from(CPUS), 8 << 30, 100 << 30, 0);
        let mut c = ComputeConfig::new(id.clone(), capacity, own);
        c.engines = vec!["noop".into()];
        c.publishers = vec!["noop".into()];
        c.storages = vec!["inline".into()];
        c.heartbeat_interval = HEARTBEAT;
        c.info_interval = Duration::from_secs(10);
        c.mutants = spec.mutants;
        c
    });
    let info = NodeInfo {
        node_id: id.clone(),
        node_type: if spec.compute { NodeType::Compute } else { NodeType::Requester },
        ..Default::default()
    };
    let shared = Arc::new(Shared {
        node_id: id.clone(),
        info: RwLock::new(info),
        nodes: RwLock::new(Vec::new()),
        store: spec.store.clone(),
        logs: gadus_node::logs::LogHub::default(),
        metrics: gadus_node::metrics::Metrics::default(),
        executions_dir: spec.dir.clone(),
        orchestrator: spec.orchestrator,
        changes: tokio::sync::watch::channel(0).0,
        clock,
    });
    let adapters = Adapters {
        executors,
        inputs: vec![Arc::new(gadus_io::storage::inline::InlineProvider)],
        publishers: vec![Arc::new(gadus_io::storage::publish::NoopPublisher)],
        transport: Some(transport),
        content_sources: None,
        allow_network: false,
        output_limits: OutputLimits { stdout: 4096, stderr: 4096 },
        default_exec_timeout: Duration::ZERO,
    };
    let seed = spec.seed ^ boot.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let (handle, _loop) =
        Runtime::start(id.clone(), orch_cfg, compute_cfg, shared, adapters, seed)?;
    let h = handle.clone();
    tokio::spawn(async move {
        while let Some(event) = in_rx.recv().await {
            h.peer(event).await;
        }
    });

    let state = gadus_node::api::AppState {
        node: handle,
        config: Arc::new(gadus_node::NodeConfig::default()),
        started: Instant::now(),
        content: None,
        local_publisher: None,
        data_dir: spec.dir.clone(),
        content_sources: None,
        auth: Arc::new(
            gadus_node::auth_from_config(&gadus_node::NodeConfig::default(), &id, &spec.dir)
                .expect("default auth"),
        ),
        // No client addresses on turmoil's network: writes are not rate limited here.
        write_limiter: Arc::new(
            gadus_node::api::ratelimit::WriteLimiter::new(0, &[]).expect("no ranges"),
        ),
    };
    let listener = turmoil::net::TcpListener::bind(("0.0.0.0", API_PORT)).await?;
    axum::serve(ApiListener(listener), gadus_node::api::router(state)).await?;
    Ok(())
}
