//! Shared helpers for the Docker executor tests: connecting (or skipping), the local busybox
//! images, execution contexts, a recording log sink and a leak guard.

#![allow(clippy::unwrap_used, dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::Docker;
use bollard::models::ContainerInspectResponse;
use bollard::query_parameters::RemoveContainerOptionsBuilder;
use gadus_core::model::Job;
use gadus_io::executor::docker::{
    DockerConfig, DockerExecutor, bench, connect_client, container_name, testimage,
};
use gadus_io::executor::{ExecutionContext, LogSink, Stream};
use tempfile::TempDir;

/// The plain busybox image (runs as 65534 under the executor).
pub const IMAGE: &str = "gadus-test/busybox:1";
/// The same rootfs with `USER 1000:1000`.
pub const IMAGE_USER: &str = "gadus-test/busybox-user1000:1";
/// The same rootfs with `VOLUME /data` (creates an anonymous volume per container).
pub const IMAGE_VOLUME: &str = "gadus-test/busybox-volume:1";

/// Whether a missing engine must fail the test run instead of skipping.
pub fn docker_required() -> bool {
    std::env::var_os("CI").is_some() || std::env::var_os("GADUS_REQUIRE_DOCKER").is_some()
}

/// An executor on the local engine with the test images present, or `None` (and a printed
/// reason) when no engine answers and none is required.
pub async fn executor_with(config: DockerConfig) -> Option<Arc<DockerExecutor>> {
    let config = DockerConfig { gpus: Some(Vec::new()), ..config };
    let exec = match DockerExecutor::connect(config).await {
        Ok(e) => e,
        Err(e) if docker_required() => {
            panic!("Docker is required here (CI or GADUS_REQUIRE_DOCKER is set) but: {e}")
        }
        Err(e) => {
            eprintln!(
                "SKIPPED: no Docker engine ({e}); set GADUS_REQUIRE_DOCKER=1 to fail instead"
            );
            return None;
        }
    };
    let docker = exec.docker();
    testimage::ensure_busybox(docker, IMAGE).await.expect("busybox test image");
    testimage::ensure_busybox_with(docker, IMAGE_USER, &["USER 1000:1000"]).await.unwrap();
    testimage::ensure_busybox_with(docker, IMAGE_VOLUME, &["VOLUME /data"]).await.unwrap();
    Some(Arc::new(exec))
}

/// [`executor_with`] the default configuration.
pub async fn executor() -> Option<Arc<DockerExecutor>> {
    executor_with(DockerConfig::default()).await
}

/// A job running `script` with `/bin/sh -c` in `image`.
pub fn sh_job(image: &str, script: &str) -> Job {
    let id = bench::fresh_execution_id();
    bench::docker_job(&format!("j-{id}"), image, &["/bin/sh", "-c"], &[script])
}

/// One execution's context plus its scratch directory and leak guard.
pub struct Run {
    pub ctx: ExecutionContext,
    pub dir: TempDir,
    _guard: Guard,
}

impl Run {
    pub fn new(job: Job) -> Run {
        let dir = tempfile::tempdir().unwrap();
        let id = bench::fresh_execution_id();
        let ctx = bench::context(&id, job, &dir.path().join("results")).unwrap();
        Run { _guard: Guard(id), ctx, dir }
    }

    pub fn id(&self) -> &str {
        &self.ctx.execution_id
    }

    pub fn name(&self) -> String {
        container_name(&self.ctx.execution_id)
    }

    pub fn result(&self, file: &str) -> String {
        std::fs::read_to_string(self.ctx.results_dir.join(file)).unwrap()
    }

    /// A host directory readable (or writable) by the container's unprivileged user.
    pub fn host_dir(&self, name: &str, mode: u32) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = self.dir.path().join(name);
        std::fs::create_dir_all(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }
}

/// Removes the container if a test panicked before its cleanup (a new runtime on a thread:
/// `Drop` cannot await, and the test's runtime may be gone).
struct Guard(String);

impl Drop for Guard {
    fn drop(&mut self) {
        let name = container_name(&self.0);
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                if let Ok(d) = connect_client(Duration::from_secs(5)).await {
                    let opts = RemoveContainerOptionsBuilder::default().force(true).v(true).build();
                    let _ = d.remove_container(&name, Some(opts)).await;
                }
            });
        })
        .join();
    }
}

/// Records everything the executor streams.
#[derive(Default)]
pub struct Recorder(pub Mutex<Vec<(Stream, Vec<u8>)>>);

impl LogSink for Recorder {
    fn write(&self, stream: Stream, bytes: &[u8]) {
        self.0.lock().unwrap().push((stream, bytes.to_vec()));
    }
}

impl Recorder {
    pub fn text(&self, stream: Stream) -> String {
        let chunks = self.0.lock().unwrap();
        let bytes: Vec<u8> =
            chunks.iter().filter(|(s, _)| *s == stream).flat_map(|(_, b)| b.clone()).collect();
        String::from_utf8(bytes).unwrap()
    }
}

/// Inspects a container, `None` if it does not exist.
pub async fn inspect(docker: &Docker, name: &str) -> Option<ContainerInspectResponse> {
    docker.inspect_container(name, None).await.ok()
}

/// Waits until the container runs (panics after 20 s).
pub async fn wait_running(docker: &Docker, name: &str) -> ContainerInspectResponse {
    for _ in 0..200 {
        if let Some(info) = inspect(docker, name).await
            && info.state.as_ref().and_then(|s| s.running) == Some(true)
        {
            return info;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("container {name} never ran");
}

/// Waits until `path` contains `needle` (panics after 20 s).
pub async fn wait_for_text(path: &Path, needle: &str) {
    for _ in 0..200 {
        if std::fs::read_to_string(path).is_ok_and(|s| s.contains(needle)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{} never contained {needle:?}", path.display());
}
