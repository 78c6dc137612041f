//! From an execution to a container configuration: the hardening lives here.
//!
//! [`plan`] is a pure function of the execution, the image's facts, the executor's
//! [`DockerConfig`] and the host's facts, so the security baseline (reliability-security §1.7)
//! is unit-tested field by field for every job path (the S2 "config drift" check) without a
//! Docker engine; the integration tests then assert the same fields on real containers.
//!
//! Baseline, for every container:
//! - no network (`NetworkMode: none`) unless the task asks for one *and* the node allows it,
//!   and then the fenced job network, never the host's;
//! - `CapDrop: [ALL]`, `SecurityOpt: [no-new-privileges]`, not privileged, private IPC, the
//!   default seccomp/AppArmor profiles untouched;
//! - read-only root filesystem, `/tmp` a size-capped `noexec,nosuid,nodev` tmpfs;
//! - a pids limit, memory = memory+swap (no swap), CPU quota, `nofile` and `core=0` ulimits;
//! - inputs bind-mounted read-only (writable only when the input says so), one writable bind
//!   per result path, nothing else from the host; no mounts over `/proc`, `/sys` or `/dev`;
//! - a non-root user unless the image names one;
//! - a bounded json-file log (the executor reads the logs back, so the driver is fixed).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;

use bollard::models::{
    ContainerCreateBody, DeviceMapping, DeviceRequest, HostConfig, HostConfigLogConfig, Mount,
    MountType, MountVolumeOptions, ResourcesUlimits,
};
use gadus_core::model::states::NetworkType;
use gadus_core::model::{DockerEngineSpec, Gpu, Task};
use gadus_core::protocol::{ExecFailure, FailureKind};

use super::DockerConfig;
use super::gpu::{VENDOR_AMD, VENDOR_INTEL, VENDOR_NVIDIA};
use crate::executor::{ExecutionContext, failure};

/// Label holding the execution ID (how a restarted node finds its containers).
pub const LABEL_EXECUTION_ID: &str = "gadus.execution-id";
/// Label holding the job ID.
pub const LABEL_JOB_ID: &str = "gadus.job-id";
/// Label present on every container this executor creates (value `true`).
pub const LABEL_MANAGED: &str = "gadus.managed";
/// Label holding the image reference as the job wrote it (the container runs the resolved ID).
pub const LABEL_IMAGE: &str = "gadus.image";

/// Docker refuses memory limits under 6 MiB (`Minimum memory limit allowed is 6MB`).
pub const DOCKER_MIN_MEMORY: u64 = 6 * 1024 * 1024;
/// Docker's smallest CPU quota is 0.01 CPU.
const MIN_NANO_CPUS: i64 = 10_000_000;

/// What the executor learnt about the image in `prepare`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedImage {
    /// The reference the job asked for.
    pub reference: String,
    /// The local image ID (`sha256:...`), which the container is created from so that a tag
    /// moving between prepare and run cannot change what runs.
    pub id: String,
    /// Registry digests (`name@sha256:...`), empty for images that were never pulled.
    pub repo_digests: Vec<String>,
    /// The image's `USER` (empty when unset).
    pub user: String,
}

/// What the host offers, learnt once at connection.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HostFacts {
    /// CPUs the engine reports (`NanoCpus` above it are refused by Docker).
    pub cpus: f64,
    /// GPUs the vendor tools reported.
    pub gpus: Vec<Gpu>,
    /// Why the engine cannot mount pinned host paths (`local` inputs), if it cannot: it must
    /// share this process's mount and PID namespaces to resolve `/proc/<pid>/fd/<n>`.
    pub no_pinned_mounts: Option<String>,
}

/// A container to create, and the host directories to prepare for it.
#[derive(Clone, Debug)]
pub struct ContainerPlan {
    /// `gadus-<executionID>`.
    pub name: String,
    /// The create request.
    pub body: ContainerCreateBody,
    /// Host directories bind-mounted writable for results (`results_dir/<Name>`).
    pub result_dirs: Vec<PathBuf>,
    /// Volumes to create before the container: pinned host paths (see [`InputVolume`]).
    pub volumes: Vec<InputVolume>,
    /// The user the task runs as.
    pub user: Option<String>,
}

/// A `local` input the engine mounts from its pinned file descriptor: a `local`-driver volume
/// `type=none,o=bind,device=/proc/<pid>/fd/<n>`, mounted by the engine in its own namespace
/// (where the magic link resolves to the pinned object), then into the container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputVolume {
    /// `gadus-<executionID>-in<k>`, labelled like the container.
    pub name: String,
    /// `/proc/<pid>/fd/<n>`.
    pub device: String,
    /// Mounted read-write (else `bind,ro`).
    pub writable: bool,
}

/// The `local` driver options of an input volume.
pub fn volume_driver_opts(v: &InputVolume) -> HashMap<String, String> {
    HashMap::from([
        ("type".to_string(), "none".to_string()),
        ("o".to_string(), if v.writable { "bind" } else { "bind,ro" }.to_string()),
        ("device".to_string(), v.device.clone()),
    ])
}

/// The container name of an execution. Docker names allow `[a-zA-Z0-9][a-zA-Z0-9_.-]*`;
/// execution IDs (`e-<uuid>`) already fit, anything else is mapped so the name stays
/// deterministic (cancel and cleanup find the container by it after a restart).
pub fn container_name(execution_id: &str) -> String {
    let safe: String = execution_id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') { c } else { '-' })
        .collect();
    format!("gadus-{safe}")
}

/// The task of the execution, or `InvalidSpec` (the context helper panics instead).
pub fn task(ctx: &ExecutionContext) -> Result<&Task, ExecFailure> {
    ctx.job.task().ok_or_else(|| failure(FailureKind::InvalidSpec, "the job has no task"))
}

/// Decodes the task's docker engine parameters.
pub fn engine_spec(ctx: &ExecutionContext) -> Result<DockerEngineSpec, ExecFailure> {
    let task = task(ctx)?;
    let engine = task
        .engine
        .as_ref()
        .ok_or_else(|| failure(FailureKind::InvalidSpec, "the task has no engine"))?;
    if !engine.is_type(gadus_core::model::engines::names::DOCKER) {
        return Err(failure(
            FailureKind::InvalidSpec,
            format!("engine {:?} is not docker", engine.spec_type),
        ));
    }
    DockerEngineSpec::from_spec(engine).map_err(|errs| {
        let text: Vec<String> = errs
            .into_iter()
            .map(|(k, v)| if k.is_empty() { v } else { format!("{k}: {v}") })
            .collect();
        failure(FailureKind::InvalidSpec, format!("docker engine params: {}", text.join("; ")))
    })
}

/// The variables the container gets: the task's `Env`, then the engine's
/// `EnvironmentVariables` (more specific, so they win over `Env`), then the system variables,
/// which win over both (Bacalhau). Docker merges the image's own `ENV` underneath.
pub fn environment(task: &Task, spec: &DockerEngineSpec, ctx: &ExecutionContext) -> Vec<String> {
    let mut env: BTreeMap<String, String> = task.env.clone();
    for kv in &spec.environment_variables {
        // `KEY` alone means an empty value; for Docker it would mean "unset".
        let (k, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
        env.insert(k.to_string(), v.to_string());
    }
    env.extend(ctx.system_env.iter().map(|(k, v)| (k.clone(), v.clone())));
    env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// The Docker network mode: none unless the task asks for network and the node allows it,
/// and then the fenced job network ([`super::network`]) whatever the type: never the host's
/// network (its loopback is the node's) nor Docker's default bridge (its gateway is the node).
pub fn network_mode(network: NetworkType, allow_network: bool) -> &'static str {
    if !(network.is_networked() && allow_network) {
        return "none";
    }
    super::network::JOB_NETWORK
}

/// Whether a `USER` value names root (`root`, `0`, `0:<group>`, `root:<group>`).
fn is_root_user(user: &str) -> bool {
    let name = user.split(':').next().unwrap_or_default().trim();
    name == "root" || name == "0"
}

/// The image's user when it names a non-root one, else the configured default (65534).
pub fn choose_user(image_user: &str, default_user: Option<&str>) -> Option<String> {
    let image_user = image_user.trim();
    if !image_user.is_empty() && !is_root_user(image_user) {
        return Some(image_user.to_string());
    }
    default_user.map(str::to_string)
}

/// Checks a path inside the container that something is mounted at.
fn check_target(what: &str, target: &str) -> Result<String, ExecFailure> {
    let bad = |why: &str| failure(FailureKind::InvalidSpec, format!("{what} {target:?}: {why}"));
    if !target.starts_with('/') {
        return Err(bad("must be an absolute path"));
    }
    if target.contains('\0') || target.split('/').any(|c| c == "..") {
        return Err(bad("must not contain '..' or NUL"));
    }
    let normal = format!(
        "/{}",
        target.split('/').filter(|c| !c.is_empty() && *c != ".").collect::<Vec<_>>().join("/")
    );
    if normal == "/" {
        return Err(bad("cannot replace the root filesystem"));
    }
    // A host file over /proc, /sys or /dev can mislead the runtime itself (runc's mount
    // CVEs went through there); nothing legitimate needs it.
    for reserved in ["/proc", "/sys", "/dev"] {
        if normal == reserved || normal.starts_with(&format!("{reserved}/")) {
            return Err(bad("cannot mount over /proc, /sys or /dev"));
        }
    }
    Ok(normal)
}

fn bind(source: String, target: String, read_only: bool) -> Mount {
    Mount {
        target: Some(target),
        source: Some(source),
        typ: Some(MountType::BIND),
        read_only: Some(read_only),
        ..Default::default()
    }
}

/// GPUs to hand to the container: those granted in `resources.gpus` or, when the grant only
/// has a count, the first ones of the node.
fn gpu_devices(
    want: u64,
    granted: &[Gpu],
    host: &HostFacts,
) -> Result<(Vec<DeviceRequest>, Vec<DeviceMapping>), ExecFailure> {
    if want == 0 {
        return Ok((Vec::new(), Vec::new()));
    }
    if host.gpus.is_empty() {
        return Err(failure(
            FailureKind::InvalidSpec,
            format!("the task needs {want} GPU(s) but this node has none"),
        ));
    }
    let chosen: Vec<Gpu> = if granted.is_empty() {
        host.gpus.iter().take(usize::try_from(want).unwrap_or(usize::MAX)).cloned().collect()
    } else {
        granted.to_vec()
    };
    if (chosen.len() as u64) < want {
        return Err(failure(
            FailureKind::InvalidSpec,
            format!("the task needs {want} GPU(s) but this node has {}", chosen.len()),
        ));
    }
    let mut requests = Vec::new();
    let mut devices = Vec::new();
    let nvidia: Vec<String> =
        chosen.iter().filter(|g| g.vendor == VENDOR_NVIDIA).map(|g| g.index.to_string()).collect();
    if !nvidia.is_empty() {
        requests.push(DeviceRequest {
            driver: Some("nvidia".into()),
            device_ids: Some(nvidia),
            capabilities: Some(vec![vec!["gpu".into()]]),
            ..Default::default()
        });
    }
    let dev = |path: String| DeviceMapping {
        path_on_host: Some(path.clone()),
        path_in_container: Some(path),
        cgroup_permissions: Some("rwm".into()),
    };
    let mut dri = BTreeSet::new();
    for g in chosen.iter().filter(|g| g.vendor == VENDOR_AMD || g.vendor == VENDOR_INTEL) {
        if g.vendor == VENDOR_AMD && dri.insert("/dev/kfd".to_string()) {
            devices.push(dev("/dev/kfd".into()));
        }
        // The DRI card and render nodes of that PCI device; Docker resolves the by-path
        // symlinks to the device nodes. Without an address, the whole DRI directory.
        let paths = if g.pci_address.is_empty() {
            vec!["/dev/dri".to_string()]
        } else {
            vec![
                format!("/dev/dri/by-path/pci-{}-card", g.pci_address),
                format!("/dev/dri/by-path/pci-{}-render", g.pci_address),
            ]
        };
        for p in paths {
            if dri.insert(p.clone()) {
                devices.push(dev(p));
            }
        }
    }
    Ok((requests, devices))
}

/// Builds the container for an execution. Fails with `InvalidSpec` for what can never run
/// here (bad mount targets, GPUs the node lacks).
pub fn plan(
    ctx: &ExecutionContext,
    spec: &DockerEngineSpec,
    image: &ResolvedImage,
    config: &DockerConfig,
    host: &HostFacts,
) -> Result<ContainerPlan, ExecFailure> {
    let task = task(ctx)?;
    let name = container_name(&ctx.execution_id);

    let mut targets = BTreeSet::new();
    let mut mounts = Vec::new();
    let mut volumes = Vec::new();
    for (k, input) in ctx.inputs.iter().enumerate() {
        let target = check_target("input target", &input.target)?;
        if !targets.insert(target.clone()) {
            return Err(failure(FailureKind::InvalidSpec, format!("two mounts at {target}")));
        }
        let source = input.host_path.to_str().ok_or_else(|| {
            failure(FailureKind::Internal, format!("input path {:?} is not UTF-8", input.host_path))
        })?;
        if input.pinned.is_none() {
            mounts.push(bind(source.to_string(), target, !input.writable));
            continue;
        }
        // A path the job named: never bind the path (it may have been swapped since it was
        // checked), mount the pinned object through a volume.
        if let Some(why) = &host.no_pinned_mounts {
            return Err(failure(
                FailureKind::InputUnavailable,
                format!("local inputs cannot be mounted safely on this node: {why}"),
            ));
        }
        let volume = InputVolume {
            name: format!("{name}-in{k}"),
            device: source.to_string(),
            writable: input.writable,
        };
        mounts.push(Mount {
            target: Some(target),
            source: Some(volume.name.clone()),
            typ: Some(MountType::VOLUME),
            read_only: Some(!input.writable),
            // Never copy the image's files at the target into the host folder.
            volume_options: Some(MountVolumeOptions { no_copy: Some(true), ..Default::default() }),
            ..Default::default()
        });
        volumes.push(volume);
    }
    let mut result_dirs = Vec::new();
    for r in &task.result_paths {
        let target = check_target("result path", &r.path)?;
        if r.name.is_empty()
            || r.name.contains(['/', '\\', '\0'])
            || matches!(r.name.as_str(), "." | ".." | "stdout" | "stderr" | "exitCode")
        {
            return Err(failure(
                FailureKind::InvalidSpec,
                format!("result path name {:?} is not a plain folder name", r.name),
            ));
        }
        if !targets.insert(target.clone()) {
            return Err(failure(FailureKind::InvalidSpec, format!("two mounts at {target}")));
        }
        let dir = ctx.results_dir.join(&r.name);
        let source = dir.to_str().ok_or_else(|| {
            failure(FailureKind::Internal, format!("results path {dir:?} is not UTF-8"))
        })?;
        mounts.push(bind(source.to_string(), target, false));
        result_dirs.push(dir);
    }

    let tmpfs = if targets.contains("/tmp") {
        // Something is mounted at /tmp itself; Docker refuses two mounts at one point.
        None
    } else {
        Some(HashMap::from([(
            "/tmp".to_string(),
            format!("rw,noexec,nosuid,nodev,size={},mode=1777", config.tmp_size),
        )]))
    };

    let memory = if ctx.resources.memory == 0 {
        config.default_memory
    } else {
        ctx.resources.memory.max(DOCKER_MIN_MEMORY)
    };
    let memory = i64::try_from(memory).unwrap_or(i64::MAX);
    let nano_cpus = (ctx.resources.cpu > 0.0).then(|| {
        let cpus =
            if host.cpus > 0.0 { ctx.resources.cpu.min(host.cpus) } else { ctx.resources.cpu };
        // `as` saturates; the value is bounded by the host's CPU count anyway.
        ((cpus * 1e9).round() as i64).max(MIN_NANO_CPUS)
    });

    let (device_requests, devices) = gpu_devices(ctx.resources.gpu, &ctx.resources.gpus, host)?;
    let user = choose_user(&image.user, config.default_user.as_deref());

    let network = network_mode(task.network_type(), ctx.allow_network);
    let ulimit = |name: &str, v: i64| ResourcesUlimits {
        name: Some(name.into()),
        soft: Some(v),
        hard: Some(v),
    };
    let host_config = HostConfig {
        network_mode: Some(network.into()),
        cap_drop: Some(vec!["ALL".into()]),
        security_opt: Some(vec!["no-new-privileges".into()]),
        privileged: Some(false),
        ipc_mode: Some("private".into()),
        readonly_rootfs: Some(true),
        tmpfs,
        mounts: Some(mounts),
        pids_limit: Some(config.pids_limit),
        memory: Some(memory),
        memory_swap: Some(memory),
        nano_cpus,
        ulimits: Some(
            config
                .nofile
                .map(|n| ulimit("nofile", i64::try_from(n).unwrap_or(i64::MAX)))
                .into_iter()
                // Core dumps would land on the host (core_pattern may pipe to a host helper).
                .chain([ulimit("core", 0)])
                .collect(),
        ),
        device_requests: (!device_requests.is_empty()).then_some(device_requests),
        devices: (!devices.is_empty()).then_some(devices),
        log_config: Some(HostConfigLogConfig {
            typ: Some("json-file".into()),
            config: Some(HashMap::from([
                ("max-size".to_string(), config.log_max_size.clone()),
                ("max-file".to_string(), "2".to_string()),
            ])),
        }),
        auto_remove: Some(false),
        ..Default::default()
    };

    let labels = HashMap::from([
        (LABEL_EXECUTION_ID.to_string(), ctx.execution_id.clone()),
        (LABEL_JOB_ID.to_string(), ctx.job.id.clone()),
        (LABEL_MANAGED.to_string(), "true".to_string()),
        (LABEL_IMAGE.to_string(), image.reference.clone()),
    ]);
    let body = ContainerCreateBody {
        image: Some(image.id.clone()),
        entrypoint: (!spec.entrypoint.is_empty()).then(|| spec.entrypoint.clone()),
        cmd: (!spec.parameters.is_empty()).then(|| spec.parameters.clone()),
        env: Some(environment(task, spec, ctx)),
        working_dir: (!spec.working_directory.is_empty()).then(|| spec.working_directory.clone()),
        user: user.clone(),
        labels: Some(labels),
        tty: Some(false),
        open_stdin: Some(false),
        attach_stdin: Some(false),
        attach_stdout: Some(false),
        attach_stderr: Some(false),
        host_config: Some(host_config),
        ..Default::default()
    };
    Ok(ContainerPlan { name, body, result_dirs, volumes, user })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use gadus_core::model::job::{NetworkConfig, ResultPath, SpecConfig};
    use gadus_core::model::{Job, Resources};

    use super::*;
    use crate::executor::{OutputLimits, PreparedInput};

    fn ctx(network: NetworkType, allow: bool, resources: Resources) -> ExecutionContext {
        let task = Task {
            name: "main".into(),
            engine: Some(
                SpecConfig::new("docker")
                    .with_param("Image", "img:1")
                    .with_param("Entrypoint", serde_json::json!(["/bin/sh", "-c"]))
                    .with_param("Parameters", serde_json::json!(["echo hi"]))
                    .with_param("EnvironmentVariables", serde_json::json!(["A=engine", "B=2", "C"]))
                    .with_param("WorkingDirectory", "/work"),
            ),
            env: BTreeMap::from([("A".into(), "task".into()), ("D".into(), "4".into())]),
            result_paths: vec![ResultPath { name: "out".into(), path: "/outputs".into() }],
            network: Some(NetworkConfig { network_type: network, ..Default::default() }),
            ..Default::default()
        };
        let job = Job { id: "j-1".into(), tasks: vec![task], ..Default::default() };
        ExecutionContext {
            execution_id: "e-1".into(),
            job: Arc::new(job),
            resources,
            inputs: vec![
                PreparedInput {
                    target: "/inputs".into(),
                    host_path: "/data/in".into(),
                    writable: false,
                    pinned: None,
                },
                PreparedInput {
                    target: "/scratch/".into(),
                    host_path: "/data/rw".into(),
                    writable: true,
                    pinned: None,
                },
            ],
            results_dir: "/results/e-1".into(),
            system_env: BTreeMap::from([
                ("GADUS_JOB_ID".into(), "j-1".into()),
                ("B".into(), "sys".into()),
            ]),
            deadline: None,
            output_limits: OutputLimits::default(),
            allow_network: allow,
        }
    }

    fn image(user: &str) -> ResolvedImage {
        ResolvedImage {
            reference: "img:1".into(),
            id: "sha256:abc".into(),
            repo_digests: vec![],
            user: user.into(),
        }
    }

    fn host() -> HostFacts {
        HostFacts { cpus: 2.0, gpus: vec![], no_pinned_mounts: None }
    }

    fn build(
        c: &ExecutionContext,
        img: &ResolvedImage,
        h: &HostFacts,
    ) -> Result<ContainerPlan, ExecFailure> {
        let spec = engine_spec(c)?;
        plan(c, &spec, img, &DockerConfig::default(), h)
    }

    /// S2: the hardening baseline is present on every path a job can take.
    #[test]
    fn hardening_baseline_on_every_path() {
        let res = Resources { cpu: 0.5, memory: 64 << 20, ..Default::default() };
        for network in [
            NetworkType::Default,
            NetworkType::None,
            NetworkType::Host,
            NetworkType::Full,
            NetworkType::Http,
            NetworkType::Bridge,
        ] {
            for allow in [false, true] {
                for user in ["", "root", "1000:1000"] {
                    let c = ctx(network, allow, res.clone());
                    let p = build(&c, &image(user), &host()).unwrap();
                    let hc = p.body.host_config.as_ref().unwrap();
                    assert_eq!(hc.cap_drop.as_deref(), Some(&["ALL".to_string()][..]));
                    assert_eq!(
                        hc.security_opt.as_deref(),
                        Some(&["no-new-privileges".to_string()][..])
                    );
                    assert_eq!(hc.readonly_rootfs, Some(true));
                    assert_eq!(hc.privileged, Some(false));
                    assert_eq!(hc.pids_limit, Some(DockerConfig::default().pids_limit));
                    assert_eq!(hc.memory, Some(64 << 20));
                    assert_eq!(hc.memory_swap, hc.memory);
                    assert_eq!(hc.nano_cpus, Some(500_000_000));
                    let tmp = &hc.tmpfs.as_ref().unwrap()["/tmp"];
                    assert!(
                        tmp.contains("noexec") && tmp.contains("nosuid") && tmp.contains("size=")
                    );
                    let expected_net = match (allow, network) {
                        (true, n) if n.is_networked() => super::super::network::JOB_NETWORK,
                        _ => "none",
                    };
                    assert_eq!(
                        hc.network_mode.as_deref(),
                        Some(expected_net),
                        "{network:?} {allow}"
                    );
                    let u = p.user.as_deref().unwrap();
                    assert!(!is_root_user(u), "runs as {u}");
                    assert_eq!(p.body.image.as_deref(), Some("sha256:abc"));
                }
            }
        }
    }

    #[test]
    fn mounts_env_labels_and_command() {
        let c = ctx(NetworkType::None, false, Resources::default());
        let p = build(&c, &image(""), &host()).unwrap();
        let hc = p.body.host_config.as_ref().unwrap();
        let mounts = hc.mounts.as_ref().unwrap();
        let by_target: BTreeMap<_, _> = mounts
            .iter()
            .map(|m| (m.target.clone().unwrap(), (m.source.clone().unwrap(), m.read_only)))
            .collect();
        assert_eq!(by_target["/inputs"], ("/data/in".into(), Some(true)));
        assert_eq!(by_target["/scratch"], ("/data/rw".into(), Some(false)));
        assert_eq!(by_target["/outputs"], ("/results/e-1/out".into(), Some(false)));
        assert_eq!(mounts.len(), 3, "nothing else from the host");
        assert!(hc.binds.is_none());
        assert_eq!(p.result_dirs, vec![PathBuf::from("/results/e-1/out")]);
        // memory falls back to the default when the grant has none; no CPU quota then.
        assert_eq!(hc.memory, Some(i64::try_from(DockerConfig::default().default_memory).unwrap()));
        assert_eq!(hc.nano_cpus, None);
        let env = p.body.env.unwrap();
        assert_eq!(env, vec!["A=engine", "B=sys", "C=", "D=4", "GADUS_JOB_ID=j-1"]);
        assert_eq!(p.body.entrypoint.unwrap(), vec!["/bin/sh", "-c"]);
        assert_eq!(p.body.cmd.unwrap(), vec!["echo hi"]);
        assert_eq!(p.body.working_dir.as_deref(), Some("/work"));
        let labels = p.body.labels.unwrap();
        assert_eq!(labels[LABEL_EXECUTION_ID], "e-1");
        assert_eq!(labels[LABEL_JOB_ID], "j-1");
        assert_eq!(p.name, "gadus-e-1");
        assert_eq!(p.user.as_deref(), Some("65534:65534"));
    }

    #[test]
    fn image_user_kept_unless_root() {
        assert_eq!(choose_user("app", Some("65534:65534")).as_deref(), Some("app"));
        assert_eq!(choose_user("1000:0", Some("65534:65534")).as_deref(), Some("1000:0"));
        assert_eq!(choose_user("root", Some("65534:65534")).as_deref(), Some("65534:65534"));
        assert_eq!(choose_user("0:0", Some("65534:65534")).as_deref(), Some("65534:65534"));
        assert_eq!(choose_user("", None), None);
    }

    #[test]
    fn memory_is_raised_to_dockers_minimum_and_cpus_capped_by_host() {
        let res = Resources { cpu: 8.0, memory: 1024, ..Default::default() };
        let c = ctx(NetworkType::None, false, res);
        let hc = build(&c, &image(""), &host()).unwrap().body.host_config.unwrap();
        assert_eq!(hc.memory, Some(DOCKER_MIN_MEMORY as i64));
        assert_eq!(hc.nano_cpus, Some(2_000_000_000));
    }

    #[test]
    fn bad_targets_are_invalid_specs() {
        for target in ["relative", "/", "/proc", "/proc/self", "/sys/fs", "/dev", "/a/../b", "//"] {
            let mut c = ctx(NetworkType::None, false, Resources::default());
            c.inputs[0].target = target.into();
            let err = build(&c, &image(""), &host()).unwrap_err();
            assert_eq!(err.kind, FailureKind::InvalidSpec, "{target}");
        }
        let mut c = ctx(NetworkType::None, false, Resources::default());
        c.inputs[1].target = "/outputs".into();
        assert_eq!(build(&c, &image(""), &host()).unwrap_err().kind, FailureKind::InvalidSpec);
    }

    #[test]
    fn mount_at_tmp_replaces_the_tmpfs() {
        let mut c = ctx(NetworkType::None, false, Resources::default());
        c.inputs[1].target = "/tmp".into();
        let hc = build(&c, &image(""), &host()).unwrap().body.host_config.unwrap();
        assert!(hc.tmpfs.is_none());
    }

    #[test]
    fn gpus_become_device_requests_or_devices() {
        let nvidia = |i| Gpu { index: i, vendor: VENDOR_NVIDIA.into(), ..Default::default() };
        let amd = Gpu {
            index: 0,
            vendor: VENDOR_AMD.into(),
            pci_address: "0000:03:00.0".into(),
            ..Default::default()
        };
        let h = HostFacts {
            cpus: 2.0,
            gpus: vec![nvidia(0), nvidia(1), amd.clone()],
            no_pinned_mounts: None,
        };

        let res = Resources { gpu: 1, ..Default::default() };
        let c = ctx(NetworkType::None, false, res);
        let hc = build(&c, &image(""), &h).unwrap().body.host_config.unwrap();
        let req = &hc.device_requests.unwrap()[0];
        assert_eq!(req.driver.as_deref(), Some("nvidia"));
        assert_eq!(req.device_ids.as_deref(), Some(&["0".to_string()][..]));
        assert_eq!(req.capabilities, Some(vec![vec!["gpu".to_string()]]));
        assert_eq!(
            hc.cap_drop.as_deref(),
            Some(&["ALL".to_string()][..]),
            "GPUs keep the baseline"
        );

        let res = Resources { gpu: 2, gpus: vec![nvidia(1), amd], ..Default::default() };
        let c = ctx(NetworkType::None, false, res);
        let hc = build(&c, &image(""), &h).unwrap().body.host_config.unwrap();
        assert_eq!(
            hc.device_requests.unwrap()[0].device_ids.as_deref(),
            Some(&["1".to_string()][..])
        );
        let devs: Vec<_> =
            hc.devices.unwrap().into_iter().map(|d| d.path_on_host.unwrap()).collect();
        assert_eq!(
            devs,
            vec![
                "/dev/kfd",
                "/dev/dri/by-path/pci-0000:03:00.0-card",
                "/dev/dri/by-path/pci-0000:03:00.0-render"
            ]
        );

        let c = ctx(NetworkType::None, false, Resources { gpu: 1, ..Default::default() });
        assert_eq!(build(&c, &image(""), &host()).unwrap_err().kind, FailureKind::InvalidSpec);
        let c = ctx(NetworkType::None, false, Resources { gpu: 4, ..Default::default() });
        assert_eq!(build(&c, &image(""), &h).unwrap_err().kind, FailureKind::InvalidSpec);

        let c = ctx(NetworkType::None, false, Resources::default());
        let hc = build(&c, &image(""), &h).unwrap().body.host_config.unwrap();
        assert!(hc.device_requests.is_none() && hc.devices.is_none());
    }

    #[test]
    fn container_names_are_docker_safe_and_stable() {
        assert_eq!(container_name("e-0d6f"), "gadus-e-0d6f");
        assert_eq!(container_name("e/x y"), "gadus-e-x-y");
    }

    #[test]
    fn wrong_engine_is_invalid() {
        let mut c = ctx(NetworkType::None, false, Resources::default());
        let mut job = (*c.job).clone();
        job.tasks[0].engine = Some(SpecConfig::new("wasm"));
        c.job = Arc::new(job);
        assert_eq!(engine_spec(&c).unwrap_err().kind, FailureKind::InvalidSpec);
    }
}
