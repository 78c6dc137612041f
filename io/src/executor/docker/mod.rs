//! The `docker` engine: runs a task in a hardened container through the local Docker engine
//! (bollard), Bacalhau-compatible (API reference §1.4, §4.2–4.3).
//!
//! ## Lifecycle
//!
//! - [`DockerExecutor::connect`] talks to the engine named by `DOCKER_HOST` (default socket),
//!   negotiates the API version down to the engine's (Docker 20.10 speaks 1.41, bollard 1.53),
//!   and fails clearly when nothing answers. GPUs are detected once ([`gpu::detect_gpus`]).
//! - `prepare` pulls the image **only if it is missing** (inspect first), within
//!   [`DockerConfig::pull_timeout`]; that time is Preparing time. The resolved image ID is
//!   recorded ([`DockerExecutor::resolved_image`]) and the container is created from that ID, so
//!   a tag that moves between prepare and run changes nothing.
//! - `run` creates `gadus-<executionID>` (labelled with the execution and job IDs), attaches
//!   to its output, starts it, copies the demultiplexed output into `results_dir/stdout` and
//!   `stderr` and the [`LogSink`], waits for the exit, writes `exitCode`, and classifies: a
//!   non-zero exit is `Ok` (data); the deadline is `Timeout` (the container is killed); a
//!   cgroup OOM kill is `OutOfMemory`; a missing image is `ImageUnavailable`; engine trouble is
//!   `Internal`.
//! - `cancel` kills the container (idempotent); `adopt` finds a container by label after a node
//!   restart and waits for it like `run` (or collects it, if it already exited); `cleanup`
//!   force-removes it with its anonymous volumes.
//!
//! The container configuration, and with it the whole hardening baseline, is built by the pure
//! [`plan::plan`] (unit-tested field by field).
//!
//! ## Engine notes (Docker 20.10, cgroup v1, fuse-overlayfs; measured)
//!
//! - `State.OOMKilled` is set by *any* OOM kill in the container's cgroup, also one of a child
//!   process the task survived; such a run that still exits 0 is a success. An exit code 137
//!   without the flag is checked against the engine's `oom` events.
//! - The `/tmp` tmpfs needs `mode=1777`, or a non-root task cannot write to it.
//! - Following the json-file log (`logs?follow=1`) across a rotation loses and repeats lines
//!   (a 2.7 MB output under `max-size=1m` came back as 150k of 400k lines, out of order), so
//!   `run` attaches before the start instead: nothing is lost, and a slow reader slows the
//!   task. The log is still kept (bounded) for `adopt`.
//! - `wait` and `attach` answer their headers at once, so bollard's 120 s request timeout
//!   (which covers only the headers) does not cut long runs.
//! - `nofile` above the daemon's own hard limit (20000 there) makes runc fail the start.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::Docker;
use bollard::container::{AttachContainerResults, LogOutput};
use bollard::errors::Error as BollardError;
use bollard::models::{ContainerInspectResponse, ContainerStateStatusEnum};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, CreateImageOptionsBuilder,
    EventsOptionsBuilder, KillContainerOptionsBuilder, ListContainersOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use futures::StreamExt;
use gadus_core::model::{Gpu, Timestamp};
use gadus_core::protocol::{ExecFailure, FailureKind};
use tokio::time::Instant;

use super::{ExecutionContext, Executor, LogSink, NoLogs, RunOutput, Stream, failure};

pub mod bench;
pub mod gpu;
pub mod network;
pub mod output;
pub mod plan;
pub mod testimage;

pub use plan::{
    HostFacts, LABEL_EXECUTION_ID, LABEL_IMAGE, LABEL_JOB_ID, LABEL_MANAGED, ResolvedImage,
    container_name,
};

use output::{Captured, Collector};

/// Errors outside an execution (connecting, image building, listing).
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// The client could not be set up for `DOCKER_HOST`.
    #[error("cannot use the Docker engine at {host}: {source}")]
    Connect {
        /// `DOCKER_HOST` or the default socket.
        host: String,
        /// Why.
        #[source]
        source: BollardError,
    },
    /// The engine did not answer.
    #[error("the Docker engine at {host} does not answer: {reason}")]
    Unreachable {
        /// `DOCKER_HOST` or the default socket.
        host: String,
        /// Why.
        reason: String,
    },
    /// A call to the engine failed.
    #[error("Docker engine error: {0}")]
    Engine(#[from] BollardError),
    /// An image could not be built or imported.
    #[error("image: {0}")]
    Image(String),
    /// Local I/O.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// Tunables. The defaults are the hardening baseline; change them knowingly.
#[derive(Clone, Debug)]
pub struct DockerConfig {
    /// Maximum processes/threads in a container (stops fork bombs).
    pub pids_limit: i64,
    /// Size of the `/tmp` tmpfs in bytes (counts against the memory limit too).
    pub tmp_size: u64,
    /// User for images that do not name a non-root one; `None` runs them as the image says
    /// (usually root).
    pub default_user: Option<String>,
    /// Memory limit when the grant has none (bytes).
    pub default_memory: u64,
    /// `nofile` ulimit (soft = hard); `None` keeps the engine's. It cannot exceed the engine's
    /// own hard limit (runc then fails to start the container: "error setting rlimits").
    pub nofile: Option<u64>,
    /// How long a missing image may take to pull.
    pub pull_timeout: Duration,
    /// json-file `max-size` of the container log (bounds the engine's copy on disk).
    pub log_max_size: String,
    /// Bytes of each of `stdout`/`stderr` written to the result files; the rest is counted
    /// and dropped.
    pub max_output_file_bytes: u64,
    /// How long a killed container may take to stop, and its log stream to end.
    pub stop_grace: Duration,
    /// How long connecting may take.
    pub connect_timeout: Duration,
    /// GPUs to offer; `None` detects them with the vendor tools.
    pub gpus: Option<Vec<Gpu>>,
}

impl Default for DockerConfig {
    fn default() -> Self {
        DockerConfig {
            pids_limit: 256,
            tmp_size: 64 * 1024 * 1024,
            default_user: Some("65534:65534".to_string()),
            default_memory: 512 * 1024 * 1024,
            // Below the daemons' usual hard limits (20000 on the reference machine).
            nofile: Some(8192),
            pull_timeout: Duration::from_secs(600),
            log_max_size: "64m".to_string(),
            max_output_file_bytes: 1 << 30,
            stop_grace: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            gpus: None,
        }
    }
}

/// A container this executor created, as found on the engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManagedContainer {
    /// Container ID.
    pub id: String,
    /// The execution it runs.
    pub execution_id: String,
    /// The job.
    pub job_id: String,
    /// `created`, `running`, `exited`, ...
    pub state: String,
}

/// Per-execution memory of this process.
#[derive(Debug, Default)]
struct ExecState {
    image: Option<ResolvedImage>,
    cancelled: bool,
}

/// Runs `docker` tasks. Cheap to share (`Arc`); every method may run concurrently for
/// different executions.
pub struct DockerExecutor {
    docker: Docker,
    config: DockerConfig,
    host: HostFacts,
    engine_version: String,
    execs: Mutex<HashMap<String, ExecState>>,
    /// Whether the fenced job network is set up (see [`network`]); set once it is.
    job_network_ready: tokio::sync::Mutex<bool>,
}

impl std::fmt::Debug for DockerExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerExecutor")
            .field("engine_version", &self.engine_version)
            .field("host", &self.host)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Where the client connects: `DOCKER_HOST`, else the default socket.
pub fn docker_host() -> String {
    std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".to_string())
}

/// Whether the engine behind `host` resolves `/proc/<pid>/fd/<n>` as this process does, which
/// pinned `local` inputs need (see [`crate::pinned`]): it must run in this process's mount
/// and PID namespaces. The engine is the peer of its Unix socket (`SO_PEERCRED`, whose PID
/// the kernel translates into our PID namespace, or 0 when the peer is not visible there).
/// Behind a socket proxy this checks the proxy.
pub async fn engine_shares_namespaces(host: &str) -> Result<(), String> {
    let Some(path) = host.strip_prefix("unix://") else {
        return Err(format!("the engine is reached at {host}, not over a local Unix socket"));
    };
    let stream = tokio::net::UnixStream::connect(path)
        .await
        .map_err(|e| format!("connecting to {path}: {e}"))?;
    let pid = stream
        .peer_cred()
        .map_err(|e| format!("reading the engine's credentials: {e}"))?
        .pid()
        .filter(|p| *p > 0)
        .ok_or("the engine's process is not visible from this PID namespace")?;
    for ns in ["mnt", "pid"] {
        let ours = std::fs::read_link(format!("/proc/self/ns/{ns}"))
            .map_err(|e| format!("reading this process's {ns} namespace: {e}"))?;
        let theirs = std::fs::read_link(format!("/proc/{pid}/ns/{ns}"))
            .map_err(|e| format!("reading the engine's (PID {pid}) {ns} namespace: {e}"))?;
        if ours != theirs {
            return Err(format!(
                "the engine (PID {pid}) runs in another {ns} namespace ({} vs {})",
                theirs.display(),
                ours.display()
            ));
        }
    }
    Ok(())
}

/// A client for `DOCKER_HOST` whose API version is negotiated down to the engine's; fails
/// when the engine does not answer within `timeout`.
pub async fn connect_client(timeout: Duration) -> Result<Docker, DockerError> {
    let host = docker_host();
    let docker = Docker::connect_with_local_defaults()
        .map_err(|source| DockerError::Connect { host: host.clone(), source })?;
    negotiate(docker, timeout).await
}

/// Lowers the client's API version to the engine's (bollard speaks 1.53, Docker 20.10 only
/// 1.41 and refuses newer clients).
async fn negotiate(docker: Docker, timeout: Duration) -> Result<Docker, DockerError> {
    let host = docker_host();
    match tokio::time::timeout(timeout, docker.negotiate_version()).await {
        Ok(Ok(docker)) => Ok(docker),
        Ok(Err(e)) => Err(DockerError::Unreachable { host, reason: e.to_string() }),
        Err(_) => {
            Err(DockerError::Unreachable { host, reason: format!("no answer in {timeout:?}") })
        }
    }
}

/// Splits an image reference into name, tag and digest (`reg:5000/a/b:1@sha256:..`).
pub fn split_reference(reference: &str) -> (&str, Option<&str>, Option<&str>) {
    let (rest, digest) = match reference.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (reference, None),
    };
    // A ':' before the last '/' is a registry port, not a tag.
    let last = rest.rfind('/').map_or(0, |i| i + 1);
    match rest[last..].rfind(':') {
        Some(i) => (&rest[..last + i], Some(&rest[last + i + 1..]), digest),
        None => (rest, None, digest),
    }
}

fn status_is(e: &BollardError, code: u16) -> bool {
    matches!(e, BollardError::DockerResponseServerError { status_code, .. } if *status_code == code)
}

fn internal(what: &str, e: impl std::fmt::Display) -> ExecFailure {
    failure(FailureKind::Internal, format!("{what}: {e}"))
}

fn no_output(f: ExecFailure) -> (ExecFailure, Option<RunOutput>) {
    (f, None)
}

fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Parses Docker's `StartedAt`/`FinishedAt`; its "never" (`0001-01-01...`) is `None`.
fn docker_time(s: Option<&str>) -> Option<i64> {
    let t = Timestamp::parse_rfc3339(s?)?.as_nanos();
    (t > 0).then_some(t)
}

/// How waiting for the container ended.
struct Exit {
    code: i64,
    timed_out: bool,
}

/// A finished container, before classification.
struct Finished {
    output: RunOutput,
    timed_out: bool,
    oom: bool,
}

/// How often a running task's disk use is measured against `Resources.Disk`: a task writing
/// at full speed can overshoot the limit by what it writes in this time before it is killed.
const DISK_POLL: Duration = Duration::from_millis(250);

/// Files and folders a task may create in its results before it is stopped: each costs an
/// inode and a walk, whatever its size.
const MAX_RESULT_ENTRIES: u64 = 1_000_000;

/// What a task has written under its results folder.
#[derive(Clone, Copy, Debug)]
struct DiskUsage {
    /// Allocated bytes (blocks, so sparse files count what they really use).
    bytes: u64,
    /// Files, folders and links.
    entries: u64,
}

/// Walks `dir` without following links; stops counting past [`MAX_RESULT_ENTRIES`].
fn disk_usage(dir: &Path) -> DiskUsage {
    use std::os::unix::fs::MetadataExt;
    let mut used = DiskUsage { bytes: 0, entries: 0 };
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            used.entries += 1;
            if used.entries > MAX_RESULT_ENTRIES {
                return used;
            }
            let Ok(m) = e.path().symlink_metadata() else { continue };
            used.bytes = used.bytes.saturating_add(m.blocks().saturating_mul(512));
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    used
}

/// Removes everything under `dir` but the captured `stdout` and `stderr`.
fn remove_written(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let name = e.file_name();
        if name == "stdout" || name == "stderr" {
            continue;
        }
        let path = e.path();
        let is_dir = path.symlink_metadata().map(|m| m.is_dir()).unwrap_or(false);
        let _ = if is_dir { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
    }
}

enum Kill {
    Killed,
    NotRunning,
    Gone,
}

impl DockerExecutor {
    /// Connects to `DOCKER_HOST` (or the default socket); fails when the engine does not
    /// answer within `config.connect_timeout`.
    pub async fn connect(config: DockerConfig) -> Result<Self, DockerError> {
        let docker = Docker::connect_with_local_defaults()
            .map_err(|source| DockerError::Connect { host: docker_host(), source })?;
        Self::with_client(docker, config).await
    }

    /// Uses an existing client (its API version is negotiated here).
    pub async fn with_client(docker: Docker, config: DockerConfig) -> Result<Self, DockerError> {
        let docker = negotiate(docker, config.connect_timeout).await?;
        let host_name = docker_host();
        let unreachable = |e: BollardError| DockerError::Unreachable {
            host: host_name.clone(),
            reason: e.to_string(),
        };
        let info = tokio::time::timeout(config.connect_timeout, docker.info())
            .await
            .map_err(|_| DockerError::Unreachable {
                host: host_name.clone(),
                reason: format!("no answer in {:?}", config.connect_timeout),
            })?
            .map_err(unreachable)?;
        let gpus = match &config.gpus {
            Some(g) => g.clone(),
            None => gpu::detect_gpus().await,
        };
        let no_pinned_mounts = engine_shares_namespaces(&host_name).await.err();
        if let Some(why) = &no_pinned_mounts {
            tracing::warn!(reason = %why, "local inputs cannot be mounted by this Docker engine");
        }
        Ok(DockerExecutor {
            docker,
            host: HostFacts { cpus: info.ncpu.unwrap_or(0) as f64, gpus, no_pinned_mounts },
            engine_version: info.server_version.unwrap_or_default(),
            config,
            execs: Mutex::new(HashMap::new()),
            job_network_ready: tokio::sync::Mutex::new(false),
        })
    }

    /// The client (shared with tests and benchmarks).
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    /// The configuration in force.
    pub fn config(&self) -> &DockerConfig {
        &self.config
    }

    /// CPUs and GPUs of the host as the executor sees them.
    pub fn host_facts(&self) -> &HostFacts {
        &self.host
    }

    /// The GPUs this node offers.
    pub fn gpus(&self) -> &[Gpu] {
        &self.host.gpus
    }

    /// The engine's version string (`20.10.24+dfsg1`).
    pub fn engine_version(&self) -> &str {
        &self.engine_version
    }

    /// The image ID (`sha256:...`) the execution runs, once prepared, run or adopted.
    pub fn resolved_image(&self, execution_id: &str) -> Option<String> {
        self.resolved_image_info(execution_id).map(|i| i.id)
    }

    /// Everything known about the execution's image (ID, registry digests, user).
    pub fn resolved_image_info(&self, execution_id: &str) -> Option<ResolvedImage> {
        self.execs().get(execution_id).and_then(|s| s.image.clone())
    }

    fn execs(&self) -> MutexGuard<'_, HashMap<String, ExecState>> {
        // A panic while holding the lock leaves plain data behind; keep going with it.
        self.execs.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn is_cancelled(&self, execution_id: &str) -> bool {
        self.execs().get(execution_id).is_some_and(|s| s.cancelled)
    }

    fn remember_image(&self, execution_id: &str, image: ResolvedImage) {
        self.execs().entry(execution_id.to_string()).or_default().image = Some(image);
    }

    /// The local image for `reference`, or `None` if the engine does not have it.
    async fn inspect_image(&self, reference: &str) -> Result<Option<ResolvedImage>, ExecFailure> {
        match self.docker.inspect_image(reference).await {
            Ok(img) => {
                let id = img.id.ok_or_else(|| {
                    internal("inspecting image", format!("{reference} has no ID"))
                })?;
                Ok(Some(ResolvedImage {
                    reference: reference.to_string(),
                    id,
                    repo_digests: img.repo_digests.unwrap_or_default(),
                    user: img.config.and_then(|c| c.user).unwrap_or_default(),
                }))
            }
            Err(e) if status_is(&e, 404) => Ok(None),
            // A malformed reference is the spec's fault and can never be pulled either.
            Err(e) if status_is(&e, 400) => Err(failure(
                FailureKind::ImageUnavailable,
                format!("image {reference:?} is not a valid reference: {e}"),
            )),
            Err(e) => Err(internal(&format!("inspecting image {reference}"), e)),
        }
    }

    /// Pulls `reference` (by digest when pinned, else by tag, `latest` when none: an API pull
    /// without a tag would fetch every tag of the repository).
    async fn pull(&self, reference: &str) -> Result<(), ExecFailure> {
        let (name, tag, digest) = split_reference(reference);
        let opts = CreateImageOptionsBuilder::default()
            .from_image(name)
            .tag(digest.or(tag).unwrap_or("latest"))
            .build();
        let pull = async {
            let mut progress = self.docker.create_image(Some(opts), None, None);
            while let Some(step) = progress.next().await {
                step?;
            }
            Ok::<(), BollardError>(())
        };
        match tokio::time::timeout(self.config.pull_timeout, pull).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(
                e @ (BollardError::DockerResponseServerError { .. }
                | BollardError::DockerStreamError { .. }),
            )) => Err(failure(
                FailureKind::ImageUnavailable,
                format!("image {reference} is not present and cannot be pulled: {e}"),
            )),
            Ok(Err(e)) => Err(internal(&format!("pulling image {reference}"), e)),
            Err(_) => Err(failure(
                FailureKind::ImageUnavailable,
                format!(
                    "image {reference} is not present and pulling it took longer than {:?}",
                    self.config.pull_timeout
                ),
            )),
        }
    }

    /// Makes sure the engine has `reference`, pulling it only when missing.
    pub async fn ensure_image(&self, reference: &str) -> Result<ResolvedImage, ExecFailure> {
        if let Some(img) = self.inspect_image(reference).await? {
            return Ok(img);
        }
        self.pull(reference).await?;
        self.inspect_image(reference).await?.ok_or_else(|| {
            failure(
                FailureKind::ImageUnavailable,
                format!("image {reference} was pulled but the engine does not list it"),
            )
        })
    }

    /// The image recorded by `prepare`, or the local one (`run` never pulls: that time would
    /// count against the ExecutionTimeout).
    async fn image_for(
        &self,
        ctx: &ExecutionContext,
        reference: &str,
    ) -> Result<ResolvedImage, ExecFailure> {
        if let Some(img) = self.resolved_image_info(&ctx.execution_id)
            && img.reference == reference
        {
            return Ok(img);
        }
        let img = self.inspect_image(reference).await?.ok_or_else(|| {
            failure(
                FailureKind::ImageUnavailable,
                format!("image {reference} is not present on this node (prepare pulls it)"),
            )
        })?;
        self.remember_image(&ctx.execution_id, img.clone());
        Ok(img)
    }

    /// Containers this executor created (for a restarted node to adopt or remove).
    pub async fn managed_containers(&self) -> Result<Vec<ManagedContainer>, DockerError> {
        self.list_by_label(&format!("{LABEL_MANAGED}=true")).await
    }

    async fn list_by_label(&self, label: &str) -> Result<Vec<ManagedContainer>, DockerError> {
        let filters = HashMap::from([("label", vec![label])]);
        let opts = ListContainersOptionsBuilder::default().all(true).filters(&filters).build();
        let list = self.docker.list_containers(Some(opts)).await?;
        Ok(list
            .into_iter()
            .filter_map(|c| {
                let labels = c.labels.unwrap_or_default();
                Some(ManagedContainer {
                    id: c.id?,
                    execution_id: labels.get(LABEL_EXECUTION_ID).cloned().unwrap_or_default(),
                    job_id: labels.get(LABEL_JOB_ID).cloned().unwrap_or_default(),
                    state: c.state.map(|s| s.to_string()).unwrap_or_default(),
                })
            })
            .collect())
    }

    /// The execution's container, found by name, else by label.
    async fn find_container(
        &self,
        execution_id: &str,
    ) -> Result<Option<ContainerInspectResponse>, ExecFailure> {
        let by_label = |info: &ContainerInspectResponse| {
            info.config
                .as_ref()
                .and_then(|c| c.labels.as_ref())
                .and_then(|l| l.get(LABEL_EXECUTION_ID))
                .is_some_and(|id| id == execution_id)
        };
        match self.docker.inspect_container(&container_name(execution_id), None).await {
            Ok(info) if by_label(&info) => return Ok(Some(info)),
            Ok(_) => {}
            Err(e) if status_is(&e, 404) => {}
            Err(e) => return Err(internal("inspecting container", e)),
        }
        let found = self
            .list_by_label(&format!("{LABEL_EXECUTION_ID}={execution_id}"))
            .await
            .map_err(|e| internal("listing containers", e))?;
        let Some(first) = found.first() else { return Ok(None) };
        match self.docker.inspect_container(&first.id, None).await {
            Ok(info) => Ok(Some(info)),
            Err(e) if status_is(&e, 404) => Ok(None),
            Err(e) => Err(internal("inspecting container", e)),
        }
    }

    /// Sends SIGKILL.
    async fn kill(&self, container: &str) -> Result<Kill, BollardError> {
        let opts = KillContainerOptionsBuilder::default().signal("SIGKILL").build();
        match self.docker.kill_container(container, Some(opts)).await {
            Ok(()) => Ok(Kill::Killed),
            Err(e) if status_is(&e, 404) => Ok(Kill::Gone),
            // "Container ... is not running"
            Err(e) if status_is(&e, 409) => Ok(Kill::NotRunning),
            Err(e) => Err(e),
        }
    }

    /// The exit code once the container is not running.
    async fn wait_stopped(&self, container: &str) -> Result<i64, ExecFailure> {
        let opts = WaitContainerOptionsBuilder::default().condition("not-running").build();
        let mut waiting = self.docker.wait_container(container, Some(opts));
        match waiting.next().await {
            Some(Ok(r)) => Ok(r.status_code),
            // bollard turns every non-zero exit into this error.
            Some(Err(BollardError::DockerContainerWaitError { code, .. })) => Ok(code),
            Some(Err(e)) => Err(internal("waiting for the container", e)),
            None => Err(internal("waiting for the container", "the engine closed the stream")),
        }
    }

    /// Waits for the exit; at `deadline` kills the container and waits for it to stop.
    async fn wait_exit(
        &self,
        container: &str,
        deadline: Option<Instant>,
    ) -> Result<Exit, ExecFailure> {
        let waiting = self.wait_stopped(container);
        tokio::pin!(waiting);
        let Some(deadline) = deadline else {
            return waiting.await.map(|code| Exit { code, timed_out: false });
        };
        tokio::select! {
            r = &mut waiting => return r.map(|code| Exit { code, timed_out: false }),
            () = tokio::time::sleep_until(deadline) => {}
        }
        // Exited at the very moment the deadline fired: not a timeout.
        let timed_out = match self.kill(container).await {
            Ok(Kill::Killed) => true,
            Ok(Kill::NotRunning | Kill::Gone) => false,
            Err(e) => return Err(internal("killing the container at its deadline", e)),
        };
        match tokio::time::timeout(self.config.stop_grace, waiting).await {
            Ok(r) => r.map(|code| Exit { code, timed_out }),
            Err(_) => Err(internal("stopping the container", "it did not stop after SIGKILL")),
        }
    }

    /// Attaches to the container's output: before the start (`replay` false) nothing is
    /// missed and a slow reader slows the task instead of losing lines; on a running
    /// container (`replay` true) the engine first replays its log.
    async fn attach(
        &self,
        container: &str,
        replay: bool,
    ) -> Result<AttachContainerResults, BollardError> {
        let opts = AttachContainerOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .stream(true)
            .logs(replay)
            .build();
        self.docker.attach_container(container, Some(opts)).await
    }

    /// The whole stored log of a stopped container (reliable: nothing rotates any more).
    fn stored_logs(&self, container: &str) -> AttachContainerResults {
        let opts = LogsOptionsBuilder::default().follow(false).stdout(true).stderr(true).build();
        AttachContainerResults {
            output: self.docker.logs(container, Some(opts)).boxed(),
            input: Box::pin(tokio::io::sink()),
        }
    }

    /// Copies an output stream into `collector` until it ends. Owns the stream so that it is
    /// closed as soon as copying stops: an attached reader that stopped reading would block
    /// the task's writes.
    async fn pump(
        mut source: AttachContainerResults,
        collector: &mut Collector,
    ) -> Result<(), String> {
        while let Some(item) = source.output.next().await {
            let written = match item.map_err(|e| format!("reading the output: {e}"))? {
                LogOutput::StdOut { message } | LogOutput::Console { message } => {
                    collector.push(Stream::Stdout, &message).await
                }
                LogOutput::StdErr { message } => collector.push(Stream::Stderr, &message).await,
                LogOutput::StdIn { .. } => Ok(()),
            };
            written.map_err(|e| format!("writing the output: {e}"))?;
        }
        Ok(())
    }

    /// Whether the engine logged an `oom` event for the container since `since_nanos`.
    async fn oom_event_seen(&self, container_id: &str, since_nanos: i64) -> bool {
        let secs =
            |n: i64| format!("{}.{:09}", n.div_euclid(1_000_000_000), n.rem_euclid(1_000_000_000));
        let filters = HashMap::from([
            ("container", vec![container_id]),
            ("event", vec!["oom"]),
            ("type", vec!["container"]),
        ]);
        let since = secs(since_nanos.saturating_sub(1_000_000_000).max(0));
        let until = secs(now_nanos());
        let opts =
            EventsOptionsBuilder::default().since(&since).until(&until).filters(&filters).build();
        let mut events = self.docker.events(Some(opts));
        let first = tokio::time::timeout(Duration::from_secs(5), events.next()).await;
        matches!(first, Ok(Some(Ok(_))))
    }

    /// Follows a started (or finished) container to its end: output to the result files and
    /// the sink, exit code, OOM and deadline facts.
    async fn supervise(
        &self,
        ctx: &ExecutionContext,
        container: &str,
        source: AttachContainerResults,
        logs: Arc<dyn LogSink>,
        deadline: Option<Instant>,
    ) -> Result<Finished, (ExecFailure, Option<RunOutput>)> {
        let cap = self.config.max_output_file_bytes;
        let mut disk_over: Option<DiskUsage> = None;
        let io_failure = |e: std::io::Error| internal("writing the result files", e);
        let mut collector = Collector::create(&ctx.results_dir, ctx.output_limits, logs, cap)
            .await
            .map_err(|e| no_output(io_failure(e)))?;

        let (exit, pumped) = {
            let pump = Self::pump(source, &mut collector);
            let waiter = self.wait_exit(container, deadline);
            tokio::pin!(pump, waiter);
            let mut pumped = None;
            // Resources.Disk: what the task wrote (result paths and its output files) is
            // measured every DISK_POLL; past the limit the container is killed. The root
            // filesystem is read-only and /tmp a size-capped tmpfs, so nothing else grows.
            let disk_limit = ctx.resources.disk;
            let mut poll = tokio::time::interval(DISK_POLL);
            poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let exit = loop {
                tokio::select! {
                    exit = &mut waiter => break exit,
                    r = &mut pump, if pumped.is_none() => pumped = Some(r),
                    _ = poll.tick(), if disk_limit > 0 && disk_over.is_none() => {
                        let dir = ctx.results_dir.clone();
                        let used = tokio::task::spawn_blocking(move || disk_usage(&dir))
                            .await
                            .unwrap_or(DiskUsage { bytes: 0, entries: 0 });
                        if used.bytes > disk_limit || used.entries > MAX_RESULT_ENTRIES {
                            disk_over = Some(used);
                            let _ = self.kill(container).await;
                        }
                    }
                }
            };
            if pumped.is_none() && exit.is_ok() {
                // The engine closes the stream once the container stopped and every byte was
                // sent; give it a bounded moment to do so.
                pumped = Some(
                    tokio::time::timeout(self.config.stop_grace, &mut pump)
                        .await
                        .unwrap_or_else(|_| Err("the log stream did not end".to_string())),
                );
            }
            (exit, pumped)
        };
        let mut captured = collector.finish().await.map_err(|e| no_output(io_failure(e)))?;
        if let Some(used) = disk_over {
            // What the task wrote goes at once (its stdout and stderr, capped, stay for the
            // error): a job over its disk limit must not keep the node's disk.
            remove_written(&ctx.results_dir);
            let out = captured.run_output(-1, ctx.output_limits);
            let msg = if used.entries > MAX_RESULT_ENTRIES {
                format!("disk limit exceeded (wrote more than {MAX_RESULT_ENTRIES} files)")
            } else {
                format!(
                    "disk limit exceeded (wrote {} of {} bytes); the task was killed and what it wrote removed",
                    used.bytes, ctx.resources.disk
                )
            };
            let mut out = out;
            out.error_msg = msg.clone();
            return Err((failure(FailureKind::TaskFailed, msg), Some(out)));
        }
        let exit = match exit {
            Ok(exit) => exit,
            Err(f) => {
                let out = captured.run_output(-1, ctx.output_limits);
                return Err((f, Some(out)));
            }
        };
        if let Some(Err(why)) = pumped {
            // The live stream broke (engine restart, ...): the container has stopped, so read
            // its stored log instead (complete unless it outgrew the log's rotation), without
            // re-sending it to the sink.
            let mut again =
                Collector::create(&ctx.results_dir, ctx.output_limits, Arc::new(NoLogs), cap)
                    .await
                    .map_err(|e| no_output(io_failure(e)))?;
            if let Err(again_why) = Self::pump(self.stored_logs(container), &mut again).await {
                let out = captured.run_output(exit.code, ctx.output_limits);
                return Err((
                    internal("collecting the output", format!("{why}; {again_why}")),
                    Some(out),
                ));
            }
            captured = again.finish().await.map_err(|e| no_output(io_failure(e)))?;
        }

        let info = self.docker.inspect_container(container, None).await.map_err(|e| {
            (
                internal("inspecting the container", e),
                Some(captured.run_output(exit.code, ctx.output_limits)),
            )
        })?;
        let state = info.state.unwrap_or_default();
        let code = state.exit_code.unwrap_or(exit.code);
        let output =
            self.finish_output(ctx, &captured, code).map_err(|e| no_output(io_failure(e)))?;

        // cgroup v1 flags any OOM kill in the cgroup, also of a child the task survived;
        // only a failed run is an OOM failure.
        let mut oom = state.oom_killed == Some(true) && code != 0;
        if !oom && code == 137 && !exit.timed_out {
            let since = docker_time(state.started_at.as_deref()).unwrap_or(0);
            let id = info.id.as_deref().unwrap_or(container);
            oom = self.oom_event_seen(id, since).await;
        }
        Ok(Finished { output, timed_out: exit.timed_out, oom })
    }

    /// Writes `exitCode` and builds the inline output.
    fn finish_output(
        &self,
        ctx: &ExecutionContext,
        captured: &Captured,
        code: i64,
    ) -> std::io::Result<RunOutput> {
        std::fs::write(ctx.results_dir.join("exitCode"), code.to_string())?;
        Ok(captured.run_output(code, ctx.output_limits))
    }

    /// Turns a finished container into the execution's result.
    fn conclude(
        &self,
        execution_id: &str,
        f: Finished,
    ) -> Result<RunOutput, (ExecFailure, Option<RunOutput>)> {
        let fail = |kind, msg: String, mut out: RunOutput| {
            out.error_msg = msg.clone();
            Err((failure(kind, msg), Some(out)))
        };
        if self.is_cancelled(execution_id) {
            return fail(FailureKind::Internal, "execution cancelled".into(), f.output);
        }
        if f.timed_out {
            return fail(
                FailureKind::Timeout,
                "the task exceeded its execution timeout and was killed".into(),
                f.output,
            );
        }
        if f.oom {
            return fail(
                FailureKind::OutOfMemory,
                "the task exceeded its memory limit and was killed".into(),
                f.output,
            );
        }
        Ok(f.output)
    }

    /// Creates the result folders and lets the task's user write them.
    fn prepare_result_dirs(
        &self,
        dirs: &[std::path::PathBuf],
        user: Option<&str>,
    ) -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let numeric = user.and_then(|u| {
            let (uid, gid) = match u.split_once(':') {
                Some((uid, gid)) => (uid.parse::<u32>().ok()?, Some(gid.parse::<u32>().ok()?)),
                None => (u.parse::<u32>().ok()?, None),
            };
            Some((uid, gid))
        });
        for dir in dirs {
            std::fs::create_dir_all(dir)?;
            // chown when the user is numeric and we may; else (a named user, a rootless
            // node) the folder is opened to everyone — it lives in the node's private dir.
            let owned = match numeric {
                Some((uid, gid)) => std::os::unix::fs::chown(dir, Some(uid), gid).is_ok(),
                None => user.is_none(),
            };
            if !owned {
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777))?;
            }
        }
        Ok(())
    }

    /// Removes the execution's container(s) and anonymous volumes; reports what failed.
    pub async fn try_cleanup(&self, execution_id: &str) -> Result<(), DockerError> {
        let opts = || RemoveContainerOptionsBuilder::default().force(true).v(true).build();
        let gone = |e: &BollardError| {
            status_is(e, 404)
                || (status_is(e, 409) && e.to_string().contains("already in progress"))
        };
        match self.docker.remove_container(&container_name(execution_id), Some(opts())).await {
            Ok(()) => {}
            Err(e) if gone(&e) => {}
            Err(e) => return Err(e.into()),
        }
        // Anything else labelled with the execution (e.g. created under another name).
        for c in self.list_by_label(&format!("{LABEL_EXECUTION_ID}={execution_id}")).await? {
            match self.docker.remove_container(&c.id, Some(opts())).await {
                Ok(()) => {}
                Err(e) if gone(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.remove_volumes(execution_id).await?;
        self.execs().remove(execution_id);
        Ok(())
    }

    /// Creates the volumes through which pinned `local` inputs are mounted. A volume of the
    /// same name left by an earlier run is removed first: its device names a descriptor of a
    /// process that may no longer exist (or be someone else now).
    async fn create_input_volumes(
        &self,
        ctx: &ExecutionContext,
        volumes: &[plan::InputVolume],
    ) -> Result<(), ExecFailure> {
        for v in volumes {
            match self
                .docker
                .remove_volume(&v.name, None::<bollard::query_parameters::RemoveVolumeOptions>)
                .await
            {
                Ok(()) => {}
                Err(e) if status_is(&e, 404) => {}
                Err(e) => return Err(internal("removing a stale input volume", e)),
            }
            let labels = HashMap::from([
                (LABEL_EXECUTION_ID.to_string(), ctx.execution_id.clone()),
                (LABEL_JOB_ID.to_string(), ctx.job.id.clone()),
                (LABEL_MANAGED.to_string(), "true".to_string()),
            ]);
            let request = bollard::models::VolumeCreateRequest {
                name: Some(v.name.clone()),
                driver: Some("local".into()),
                driver_opts: Some(plan::volume_driver_opts(v)),
                labels: Some(labels),
                ..Default::default()
            };
            self.docker
                .create_volume(request)
                .await
                .map_err(|e| internal("creating an input volume", e))?;
        }
        Ok(())
    }

    /// Removes the volumes labelled with the execution.
    async fn remove_volumes(&self, execution_id: &str) -> Result<(), DockerError> {
        let filters = HashMap::from([(
            "label".to_string(),
            vec![format!("{LABEL_EXECUTION_ID}={execution_id}")],
        )]);
        let opts = bollard::query_parameters::ListVolumesOptionsBuilder::default()
            .filters(&filters)
            .build();
        let listed = self.docker.list_volumes(Some(opts)).await?;
        for v in listed.volumes.unwrap_or_default() {
            match self
                .docker
                .remove_volume(&v.name, None::<bollard::query_parameters::RemoveVolumeOptions>)
                .await
            {
                Ok(()) => {}
                Err(e) if status_is(&e, 404) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Sets up the fenced job network once (later calls return at once).
    async fn ensure_job_network(&self) -> Result<(), ExecFailure> {
        let mut ready = self.job_network_ready.lock().await;
        if !*ready {
            network::ensure(&self.docker).await.map_err(|e| {
                failure(
                    FailureKind::Internal,
                    format!("this node cannot give networked jobs a network fenced off from the node ({e}); its operator can refuse such jobs with JobAdmissionControl.RejectNetworkedJobs=true"),
                )
            })?;
            *ready = true;
        }
        Ok(())
    }

    /// Starts a created container, honouring a cancel that raced the creation.
    async fn start(&self, ctx: &ExecutionContext, name: &str) -> Result<(), ExecFailure> {
        if self.is_cancelled(&ctx.execution_id) {
            return Err(failure(FailureKind::Internal, "execution cancelled"));
        }
        if let Err(e) = self.docker.start_container(name, None).await {
            let msg = e.to_string();
            // The runtime could not exec the entrypoint: the task's own fault (a shell would
            // exit 126/127), not the node's.
            let task_fault = [
                "executable file not found",
                "no such file or directory",
                "permission denied",
                "not a directory",
            ]
            .iter()
            .any(|m| msg.contains(m));
            let kind = if task_fault { FailureKind::TaskFailed } else { FailureKind::Internal };
            return Err(failure(kind, format!("the container could not start: {msg}")));
        }
        // A cancel between the check above and the start found nothing running to kill.
        if self.is_cancelled(&ctx.execution_id) {
            let _ = self.kill(name).await;
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Executor for DockerExecutor {
    fn engine(&self) -> &'static str {
        gadus_core::model::engines::names::DOCKER
    }

    async fn prepare(&self, ctx: &ExecutionContext) -> Result<(), ExecFailure> {
        let spec = plan::engine_spec(ctx)?;
        let image = self.ensure_image(&spec.image).await?;
        // Validate the rest (mount targets, GPUs) while still Preparing.
        plan::plan(ctx, &spec, &image, &self.config, &self.host)?;
        self.remember_image(&ctx.execution_id, image);
        Ok(())
    }

    async fn run(
        &self,
        ctx: &ExecutionContext,
        logs: Arc<dyn LogSink>,
    ) -> Result<RunOutput, (ExecFailure, Option<RunOutput>)> {
        let spec = plan::engine_spec(ctx).map_err(no_output)?;
        let image = self.image_for(ctx, &spec.image).await.map_err(no_output)?;
        let plan = plan::plan(ctx, &spec, &image, &self.config, &self.host).map_err(no_output)?;
        self.prepare_result_dirs(&plan.result_dirs, plan.user.as_deref())
            .map_err(|e| no_output(internal("creating the result folders", e)))?;
        self.execs().entry(ctx.execution_id.clone()).or_default();
        self.create_input_volumes(ctx, &plan.volumes).await.map_err(no_output)?;
        let networked = plan
            .body
            .host_config
            .as_ref()
            .and_then(|h| h.network_mode.as_deref())
            .is_some_and(|m| m == network::JOB_NETWORK);
        if networked {
            self.ensure_job_network().await.map_err(no_output)?;
        }

        let opts = CreateContainerOptionsBuilder::default().name(&plan.name).build();
        if let Err(e) = self.docker.create_container(Some(opts), plan.body).await {
            let f = match &e {
                e if status_is(e, 404) => failure(
                    FailureKind::ImageUnavailable,
                    format!("image {} is no longer present: {e}", spec.image),
                ),
                e if status_is(e, 409) => internal(
                    "creating the container",
                    format!("{} already exists (adopt or clean up the execution): {e}", plan.name),
                ),
                e if status_is(e, 400) => failure(
                    FailureKind::InvalidSpec,
                    format!("the engine refused the container: {e}"),
                ),
                e => internal("creating the container", e),
            };
            return Err(no_output(f));
        }
        // Attached before the start, so every byte is seen: the engine's follow-logs loses
        // and repeats lines across json-file rotations (measured on 20.10).
        let source = self
            .attach(&plan.name, false)
            .await
            .map_err(|e| no_output(internal("attaching to the container", e)))?;
        self.start(ctx, &plan.name).await.map_err(no_output)?;
        // The ExecutionTimeout counts from the start: image pulls and creation are not in it.
        // Beyond what `Instant` holds is no deadline (a huge timeout once panicked here).
        let deadline = ctx.deadline.and_then(|d| Instant::now().checked_add(d));
        let finished = self.supervise(ctx, &plan.name, source, logs, deadline).await?;
        self.conclude(&ctx.execution_id, finished)
    }

    async fn cancel(&self, execution_id: &str) {
        self.execs().entry(execution_id.to_string()).or_default().cancelled = true;
        // Nothing to do when it is not running (not started, finished, removed).
        if let Err(e) = self.kill(&container_name(execution_id)).await {
            eprintln!("gadus docker: cancelling {execution_id}: {e}");
        }
    }

    /// The result files are rewritten from the container's stored log, and the sink receives
    /// the whole output again (it cannot know what the previous process already forwarded).
    async fn adopt(
        &self,
        ctx: &ExecutionContext,
        logs: Arc<dyn LogSink>,
    ) -> Result<RunOutput, (ExecFailure, Option<RunOutput>)> {
        let restarted = |why: String| no_output(failure(FailureKind::NodeRestarted, why));
        let Some(info) = self.find_container(&ctx.execution_id).await.map_err(no_output)? else {
            return Err(restarted(format!("no container for execution {}", ctx.execution_id)));
        };
        let id = info.id.clone().unwrap_or_else(|| container_name(&ctx.execution_id));
        let labels = info.config.as_ref().and_then(|c| c.labels.clone()).unwrap_or_default();
        self.remember_image(
            &ctx.execution_id,
            ResolvedImage {
                reference: labels.get(LABEL_IMAGE).cloned().unwrap_or_default(),
                id: info.image.clone().unwrap_or_default(),
                repo_digests: Vec::new(),
                user: info.config.as_ref().and_then(|c| c.user.clone()).unwrap_or_default(),
            },
        );
        let state = info.state.clone().unwrap_or_default();
        let started = docker_time(state.started_at.as_deref());
        match state.status {
            Some(
                ContainerStateStatusEnum::RUNNING
                | ContainerStateStatusEnum::PAUSED
                | ContainerStateStatusEnum::RESTARTING,
            ) => {
                // What is left of the ExecutionTimeout, counted from the container's start.
                let ran = started.map_or(Duration::ZERO, |s| {
                    Duration::from_nanos(u64::try_from(now_nanos().saturating_sub(s)).unwrap_or(0))
                });
                let deadline =
                    ctx.deadline.and_then(|d| Instant::now().checked_add(d.saturating_sub(ran)));
                // Replays the stored log, then follows live (lines written between the two, or
                // rotated away while the node was down, can be missed).
                let mut source = self
                    .attach(&id, true)
                    .await
                    .map_err(|e| no_output(internal("attaching to the container", e)))?;
                // An attach that reaches a container already stopped never ends (measured);
                // if it stopped meanwhile, its stored log is complete anyway. (A stop during
                // the replay is caught by `stop_grace` and the stored-log repair.)
                let still_running = self
                    .docker
                    .inspect_container(&id, None)
                    .await
                    .ok()
                    .and_then(|i| i.state)
                    .and_then(|s| s.running)
                    .unwrap_or(false);
                if !still_running {
                    source = self.stored_logs(&id);
                }
                let finished = self.supervise(ctx, &id, source, logs, deadline).await?;
                self.conclude(&ctx.execution_id, finished)
            }
            Some(ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::DEAD) => {
                let source = self.stored_logs(&id);
                let mut finished = self.supervise(ctx, &id, source, logs, None).await?;
                // It ran unsupervised while the node was down: hold it to its deadline.
                let ended = docker_time(state.finished_at.as_deref());
                if let (Some(limit), Some(s), Some(e)) = (ctx.deadline, started, ended) {
                    let ran = Duration::from_nanos(u64::try_from(e.saturating_sub(s)).unwrap_or(0));
                    finished.timed_out = ran > limit;
                }
                self.conclude(&ctx.execution_id, finished)
            }
            other => Err(restarted(format!(
                "container {id} of execution {} is {} and was never run to its end",
                ctx.execution_id,
                other.map(|s| s.to_string()).unwrap_or_else(|| "in an unknown state".into())
            ))),
        }
    }

    async fn cleanup(&self, execution_id: &str) {
        if let Err(e) = self.try_cleanup(execution_id).await {
            eprintln!("gadus docker: cleaning up {execution_id}: {e}");
        }
    }
}

/// Whether `path` is a statically linked ELF (no `PT_INTERP`), the only kind that runs in a
/// `FROM scratch` image.
pub fn is_static_elf(path: &Path) -> std::io::Result<bool> {
    let data = std::fs::read(path)?;
    let u16_at = |o: usize| data.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]) as usize);
    let u32_at =
        |o: usize| data.get(o..o + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    let u64_at = |o: usize| {
        data.get(o..o + 8)
            .map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
    };
    // 64-bit little-endian ELF only (the engines we target).
    if data.get(0..6) != Some(&[0x7f, b'E', b'L', b'F', 2, 1][..]) {
        return Ok(false);
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return Ok(false);
    };
    let phoff = usize::try_from(phoff).unwrap_or(usize::MAX);
    for i in 0..phnum {
        const PT_INTERP: u32 = 3;
        match u32_at(phoff.saturating_add(i * phentsize)) {
            Some(PT_INTERP) => return Ok(false),
            Some(_) => {}
            None => return Ok(false),
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_into_name_tag_digest() {
        assert_eq!(split_reference("busybox"), ("busybox", None, None));
        assert_eq!(split_reference("busybox:1.36"), ("busybox", Some("1.36"), None));
        assert_eq!(split_reference("localhost:5000/a/b"), ("localhost:5000/a/b", None, None));
        assert_eq!(
            split_reference("localhost:5000/a/b:2"),
            ("localhost:5000/a/b", Some("2"), None)
        );
        assert_eq!(split_reference("x@sha256:abc"), ("x", None, Some("sha256:abc")));
        assert_eq!(split_reference("r:1/x:t@sha256:abc"), ("r:1/x", Some("t"), Some("sha256:abc")));
    }

    #[test]
    fn docker_never_time_is_none() {
        assert_eq!(docker_time(Some("0001-01-01T00:00:00Z")), None);
        assert_eq!(docker_time(None), None);
        assert!(docker_time(Some("2026-11-21T07:37:34.234834364Z")).is_some());
    }

    #[test]
    fn static_elf_detection() {
        let dir = tempfile::tempdir().unwrap();
        let not_elf = dir.path().join("x");
        std::fs::write(&not_elf, b"#!/bin/sh\n").unwrap();
        assert!(!is_static_elf(&not_elf).unwrap());
        // This test binary is dynamically linked (it has an interpreter).
        let me = std::env::current_exe().unwrap();
        assert!(!is_static_elf(&me).unwrap());
    }
}
