//! The Docker executor against the real engine: output, exit codes, environment, mounts, the
//! hardening baseline (S2, asserted on created containers), hostile containers (S1), deadlines,
//! cancel, missing images, adoption after a restart, and cleanup leaving nothing behind.
//!
//! Images are built locally from a static busybox (no registry). Without an engine every test
//! prints why it skipped; with `CI` or `GADUS_REQUIRE_DOCKER` set they fail instead.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::query_parameters::{
    ListContainersOptionsBuilder, StatsOptionsBuilder, WaitContainerOptionsBuilder,
};
use futures::StreamExt;
use gadus_core::model::job::{NetworkConfig, ResultPath};
use gadus_core::model::states::NetworkType;
use gadus_core::model::{Job, Resources};
use gadus_core::protocol::FailureKind;
use gadus_io::executor::docker::{
    DockerConfig, DockerError, DockerExecutor, LABEL_EXECUTION_ID, LABEL_JOB_ID, bench, network,
};
use gadus_io::executor::{Executor, NoLogs, PreparedInput, Stream};
use support::*;

fn with_result_path(mut job: Job, name: &str, path: &str) -> Job {
    job.tasks[0].result_paths.push(ResultPath { name: name.into(), path: path.into() });
    job
}

fn with_env(mut job: Job, engine_env: &[&str], task_env: &[(&str, &str)]) -> Job {
    let t = &mut job.tasks[0];
    t.env = task_env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let engine = t.engine.as_mut().unwrap();
    engine.params.insert("EnvironmentVariables".into(), serde_json::json!(engine_env));
    job
}

fn with_network(mut job: Job, network: NetworkType) -> Job {
    job.tasks[0].network = Some(NetworkConfig { network_type: network, ..Default::default() });
    job
}

#[tokio::test]
async fn hello_world_demuxes_output_and_writes_result_files() {
    let Some(exec) = executor().await else { return };
    let run = Run::new(sh_job(IMAGE, "echo out; echo err >&2; echo more; printf tail"));
    exec.prepare(&run.ctx).await.unwrap();
    let image_id = exec.docker().inspect_image(IMAGE).await.unwrap().id.unwrap();
    assert_eq!(exec.resolved_image(run.id()).as_deref(), Some(image_id.as_str()));

    let sink = Arc::new(Recorder::default());
    let out = exec.run(&run.ctx, sink.clone()).await.unwrap();
    assert_eq!(out.exit_code, 0);
    assert_eq!(out.stdout, "out\nmore\ntail");
    assert_eq!(out.stderr, "err\n");
    assert!(!out.stdout_truncated && !out.stderr_truncated);
    assert_eq!(run.result("stdout"), "out\nmore\ntail");
    assert_eq!(run.result("stderr"), "err\n");
    assert_eq!(run.result("exitCode"), "0");
    assert_eq!(sink.text(Stream::Stdout), "out\nmore\ntail");
    assert_eq!(sink.text(Stream::Stderr), "err\n");
    // The container was created from the resolved ID, labelled and named.
    let info = inspect(exec.docker(), &run.name()).await.unwrap();
    assert_eq!(info.image.as_deref(), Some(image_id.as_str()));
    let labels = info.config.unwrap().labels.unwrap();
    assert_eq!(labels[LABEL_EXECUTION_ID], run.id());
    assert_eq!(&labels[LABEL_JOB_ID], &run.ctx.job.id);
    exec.cleanup(run.id()).await;
    assert!(inspect(exec.docker(), &run.name()).await.is_none());
}

#[tokio::test]
async fn non_zero_exit_is_ok_and_output_is_truncated_inline_only() {
    let Some(exec) = executor().await else { return };
    let mut run = Run::new(sh_job(IMAGE, "seq 1 2000; echo bad >&2; exit 3"));
    run.ctx.output_limits.stdout = 10;
    exec.prepare(&run.ctx).await.unwrap();
    let out = exec.run(&run.ctx, Arc::new(NoLogs)).await.unwrap();
    assert_eq!(out.exit_code, 3);
    assert_eq!(run.result("exitCode"), "3");
    assert_eq!(out.stdout, "1\n2\n3\n4\n5\n");
    assert!(out.stdout_truncated);
    assert_eq!(out.stderr, "bad\n");
    // The result file keeps everything.
    assert_eq!(run.result("stdout").lines().count(), 2000);
    exec.cleanup(run.id()).await;
}

#[tokio::test]
async fn large_output_is_complete_across_engine_log_rotation() {
    // The engine keeps at most 2 x 1 MiB of log; following it live still gets every line.
    let config = DockerConfig { log_max_size: "1m".into(), ..Default::default() };
    let Some(exec) = executor_with(config).await else { return };
    let run = Run::new(sh_job(IMAGE, "seq 1 400000; echo end >&2"));
    exec.prepare(&run.ctx).await.unwrap();
    let out = exec.run(&run.ctx, Arc::new(NoLogs)).await.unwrap();
    let stdout = run.result("stdout");
    assert!(stdout.len() > 2 << 20, "more than the engine keeps: {} bytes", stdout.len());
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 400_000);
    assert_eq!((lines[0], lines[399_999]), ("1", "400000"));
    assert!(out.stdout_truncated && out.stdout.len() <= 64 * 1024);
    assert_eq!(out.stderr, "end\n");
    exec.cleanup(run.id()).await;
}

#[tokio::test]
async fn environment_precedence_and_working_directory() {
    let Some(exec) = executor().await else { return };
    let mut job = sh_job(IMAGE, "pwd; echo A=$A B=$B C=$C J=$GADUS_JOB_ID P=$PATH");
    job = with_env(job, &["A=engine", "B=engine"], &[("A", "task"), ("C", "task")]);
    job.tasks[0]
        .engine
        .as_mut()
        .unwrap()
        .params
        .insert("WorkingDirectory".into(), "/work/dir".into());
    let run = Run::new(job);
    exec.prepare(&run.ctx).await.unwrap();
    let out = exec.run(&run.ctx, Arc::new(NoLogs)).await.unwrap();
    let job_id = &run.ctx.job.id;
    // EnvironmentVariables over Env, system variables over both, the image's PATH kept.
    assert_eq!(out.stdout, format!("/work/dir\nA=engine B=engine C=task J={job_id} P=/bin\n"));
    exec.cleanup(run.id()).await;
}

#[tokio::test]
async fn inputs_are_read_only_unless_writable_and_result_paths_are_written() {
    let Some(exec) = executor().await else { return };
    let job = with_result_path(
        sh_job(
            IMAGE,
            "cat /inputs/data.txt; \
             echo x > /inputs/new 2>/dev/null && echo RO_WRITTEN || echo RO_REFUSED; \
             echo rw > /scratch/made && echo RW_WRITTEN; \
             echo result > /outputs/r.txt && echo RESULT_WRITTEN; id -u",
        ),
        "out",
        "/outputs",
    );
    let mut run = Run::new(job);
    let input = run.host_dir("input", 0o755);
    std::fs::write(input.join("data.txt"), "input data\n").unwrap();
    let scratch = run.host_dir("scratch", 0o777);
    run.ctx.inputs = vec![
        PreparedInput {
            target: "/inputs".into(),
            host_path: input.clone(),
            writable: false,
            pinned: None,
        },
        PreparedInput {
            target: "/scratch".into(),
            host_path: scratch.clone(),
            writable: true,
            pinned: None,
        },
    ];
    exec.prepare(&run.ctx).await.unwrap();
    let out = exec.run(&run.ctx, Arc::new(NoLogs)).await.unwrap();
    assert_eq!(
        out.stdout, "input data\nRO_REFUSED\nRW_WRITTEN\nRESULT_WRITTEN\n65534\n",
        "{out:?}"
    );
    assert!(!input.join("new").exists());
    assert_eq!(std::fs::read_to_string(scratch.join("made")).unwrap(), "rw\n");
    assert_eq!(run.result("out/r.txt"), "result\n");
    exec.cleanup(run.id()).await;
}

#[tokio::test]
async fn hardening_baseline_on_created_containers() {
    let Some(exec) = executor().await else { return };
    // A Host-network job on a node that does not allow network still gets none.
    let job = with_network(
        with_result_path(
            sh_job(
                IMAGE,
                "id -u; grep -E '^(CapEff|NoNewPrivs)' /proc/self/status; ls /sys/class/net",
            ),
            "out",
            "/outputs",
        ),
        NetworkType::Host,
    );
    let mut run = Run::new(job);
    run.ctx.resources = Resources { cpu: 0.25, memory: 48 << 20, ..Default::default() };
    exec.prepare(&run.ctx).await.unwrap();
    let out = exec.run(&run.ctx, Arc::new(NoLogs)).await.unwrap();
    assert_eq!(
        out.stdout, "65534\nCapEff:\t0000000000000000\nNoNewPrivs:\t1\nlo\n",
        "non-root, no capabilities, no new privileges, loopback only"
    );

    let info = inspect(exec.docker(), &run.name()).await.unwrap();
    let hc = info.host_config.unwrap();
    assert_eq!(hc.network_mode.as_deref(), Some("none"));
    assert_eq!(hc.cap_drop, Some(vec!["ALL".to_string()]));
    assert!(hc.security_opt.unwrap().iter().any(|o| o.starts_with("no-new-privileges")));
    assert_eq!(hc.readonly_rootfs, Some(true));
    assert_eq!(hc.privileged, Some(false));
    assert_eq!(hc.pids_limit, Some(DockerConfig::default().pids_limit));
    assert_eq!(hc.memory, Some(48 << 20));
    assert_eq!(hc.memory_swap, Some(48 << 20));
    assert_eq!(hc.nano_cpus, Some(250_000_000));
    let tmp = &hc.tmpfs.unwrap()["/tmp"];
    assert!(tmp.contains("noexec") && tmp.contains("nosuid") && tmp.contains("size="), "{tmp}");
    assert!(hc.binds.unwrap_or_default().is_empty());
    let mounts = info.mounts.unwrap();
    assert_eq!(mounts.len(), 1, "only the result path: {mounts:?}");
    assert_eq!(mounts[0].destination.as_deref(), Some("/outputs"));
    assert_eq!(mounts[0].rw, Some(true));
    assert_eq!(info.config.unwrap().user.as_deref(), Some("65534:65534"));
    exec.cleanup(run.id()).await;

    // When the node allows network, Bridge gets the fenced job network (an interface besides lo).
    let mut run = Run::new(with_network(sh_job(IMAGE, "ls /sys/class/net"), NetworkType::Bridge));
    run.ctx.allow_network = true;
    exec.prepare(&run.ctx).await.unwrap();
    let out = exec.run(&run.ctx, Arc::new(NoLogs)).await.unwrap();
    assert!(out.stdout.contains("eth0"), "{out:?}");
    let hc = inspect(exec.docker(), &run.name()).await.unwrap().host_config.unwrap();
    assert_eq!(hc.network_mode.as_deref(), Some(network::JOB_NETWORK));
    assert_eq!(hc.cap_drop, Some(vec!["ALL".to_string()]));
    exec.cleanup(run.id()).await;
}

#[tokio::test]
async fn image_user_is_kept_and_can_write_results() {
    let Some(exec) = executor().await else { return };
    let job =
        with_result_path(sh_job(IMAGE_USER, "id -u; echo hi > /outputs/f"), "out", "/outputs");
    let run = Run::new(job);
    exec.prepare(&run.ctx).await.unwrap();
    let out = exec.run(&run.ctx, Arc::new(NoLogs)).await.unwrap();
    assert_eq!(out.stdout, "1000\n", "{out:?}");
    assert_eq!(run.result("out/f"), "hi\n");
    exec.cleanup(run.id()).await;
}

#[tokio::test]
async fn fork_bomb_is_contained_by_the_pids_limit() {
    let limit = 64;
    let Some(exec) = executor_with(DockerConfig { pids_limit: limit, ..Default::default() }).await
    else {
        return;
    };
    // The bomb forks until the limit; the shell then `exec`s (no fork needed) into a sleep,
    // and when it exits the whole PID namespace goes with it.
    let run = Run::new(sh_job(IMAGE, "bomb() { bomb | bomb & }; bomb; exec sleep 3"));
    exec.prepare(&run.ctx).await.unwrap();
    let name = run.name();
    let probe = async {
        wait_running(exec.docker(), &name).await;
        let mut max_pids = 0;
        let started = Instant::now();
        while started.elapsed() < Duration::from_millis(2000) {
            let opts = StatsOptionsBuilder::default().stream(false).one_shot(true).build();
            if let Some(Ok(stats)) = exec.docker().stats(&name, Some(opts)).next().await {
                max_pids = max_pids.max(stats.pids_stats.and_then(|p| p.current).unwrap_or(0));
            }
            // The host can still start processes while the bomb runs.
            let t = Instant::now();
            assert!(std::process::Command::new("true").status().unwrap().success());
            assert!(t.elapsed() < Duration::from_secs(2), "host fork took {:?}", t.elapsed());
        }
        max_pids
    };
    let (result, max_pids) = tokio::join!(exec.run(&run.ctx, Arc::new(NoLogs)), probe);
    let out = result.unwrap();
    assert!(max_pids > 1, "the bomb ran ({max_pids} pids)");
    assert!(max_pids <= limit as u64, "{max_pids} pids > limit {limit}");
    assert!(
        out.stderr.contains("can't fork"),
        "forks were refused: {:?}",
        &out.stderr[..out.stderr.len().min(200)]
    );
    assert_eq!(out.exit_code, 0);
    exec.cleanup(run.id()).await;
}

#[tokio::test]
async fn network_egress_fails_without_network() {
    let Some(exec) = executor().await else { return };
    let run = Run::new(sh_job(
        IMAGE,
        "wget -q -T 3 -O - http://1.1.1.1/ 2>&1; echo wget=$?; nc -w 2 8.8.8.8 53 </dev/null 2>&1; echo nc=$?",
    ));
    exec.prepare(&run.ctx).await.unwrap();
    let out = exec.run(&run.ctx, Arc::new(NoLogs)).await.unwrap();
    assert!(out.stdout.contains("Network is unreachable"), "{out:?}");
    assert!(out.stdout.contains("wget=1") && !out.stdout.contains("nc=0"), "{out:?}");
    exec.cleanup(run.id()).await;
}

#[tokio::test]
async fn root_filesystem_is_read_only_and_privileged_operations_fail() {
    let Some(exec) = executor().await else { return };
    let script = "echo x > /evil 2>/dev/null && echo ROOT_WRITTEN || echo ROOT_REFUSED; \
        touch /bin/evil 2>/dev/null && echo BIN_WRITTEN || echo BIN_REFUSED; \
        echo ok > /tmp/t && echo TMP_WRITABLE; \
        cp /bin/busybox /tmp/bb && { /tmp/bb true 2>/dev/null && echo TMP_EXEC || echo TMP_NOEXEC; }; \
        mkdir -p /tmp/m; mount -t tmpfs none /tmp/m 2>/dev/null && echo MOUNTED || echo MOUNT_REFUSED; \
        unshare -U -r true 2>/dev/null && echo UNSHARED || echo UNSHARE_REFUSED; \
        echo KCORE_BYTES=$(head -c 16 /proc/kcore 2>/dev/null | wc -c)";
    let run = Run::new(sh_job(IMAGE, script));
    exec.prepare(&run.ctx).await.unwrap();
    let out = exec.run(&run.ctx, Arc::new(NoLogs)).await.unwrap();
    assert_eq!(
        out.stdout,
        "ROOT_REFUSED\nBIN_REFUSED\nTMP_WRITABLE\nTMP_NOEXEC\nMOUNT_REFUSED\nUNSHARE_REFUSED\nKCORE_BYTES=0\n",
        "{out:?}"
    );
    exec.cleanup(run.id()).await;
}

#[tokio::test]
async fn memory_hog_is_classified_out_of_memory() {
    let Some(exec) = executor().await else { return };
    let mut run = Run::new(sh_job(
        IMAGE,
        "echo start; x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived",
    ));
    run.ctx.resources.memory = 32 << 20;
    exec.prepare(&run.ctx).await.unwrap();
    let (f, out) = exec.run(&run.ctx, Arc::new(NoLogs)).await.unwrap_err();
    assert_eq!(f.kind, FailureKind::OutOfMemory, "{f:?}");
    let out = out.unwrap();
    assert_eq!(out.exit_code, 137);
    assert_eq!(out.stdout, "start\n");
    assert_eq!(run.result("exitCode"), "137");
    exec.cleanup(run.id()).await;

    // cgroup v1 flags the container even when only a child was killed; a task that survives
    // that and exits 0 succeeded.
    let mut run = Run::new(sh_job(
        IMAGE,
        "sh -c 'x=$(head -c 200000000 /dev/zero | tr \"\\0\" a)'; echo child=$?",
    ));
    run.ctx.resources.memory = 32 << 20;
    exec.prepare(&run.ctx).await.unwrap();
    let out = exec.run(&run.ctx, Arc::new(NoLogs)).await.unwrap();
    assert_eq!((out.exit_code, out.stdout.as_str()), (0, "child=137\n"));
    exec.cleanup(run.id()).await;
}

#[tokio::test]
async fn host_files_beyond_the_mounts_are_invisible() {
    let Some(exec) = executor().await else { return };
    let me = std::env::current_exe().unwrap();
    let script = format!(
        "ls /; test -e '{}' && echo HOST_VISIBLE || echo HOST_HIDDEN; \
         test -e /var/run/docker.sock && echo SOCKET || echo NO_SOCKET",
        me.display()
    );
    let run = Run::new(sh_job(IMAGE, &script));
    exec.prepare(&run.ctx).await.unwrap();
    let out = exec.run(&run.ctx, Arc::new(NoLogs)).await.unwrap();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines,
        ["bin", "dev", "etc", "proc", "root", "sys", "tmp", "HOST_HIDDEN", "NO_SOCKET"],
        "{out:?}"
    );
    exec.cleanup(run.id()).await;
}

#[tokio::test]
async fn deadline_kills_the_container_as_timeout() {
    let Some(exec) = executor().await else { return };
    let mut run = Run::new(sh_job(IMAGE, "echo started; sleep 30; echo never"));
    run.ctx.deadline = Some(Duration::from_secs(1));
    exec.prepare(&run.ctx).await.unwrap();
    let t = Instant::now();
    let (f, out) = exec.run(&run.ctx, Arc::new(NoLogs)).await.unwrap_err();
    assert_eq!(f.kind, FailureKind::Timeout, "{f:?}");
    assert!(t.elapsed() < Duration::from_secs(15), "took {:?}", t.elapsed());
    assert_eq!(out.unwrap().stdout, "started\n");
    let state = inspect(exec.docker(), &run.name()).await.unwrap().state.unwrap();
    assert_eq!(state.running, Some(false));
    exec.cleanup(run.id()).await;
}

#[tokio::test]
async fn cancel_stops_a_running_container_and_is_idempotent() {
    let Some(exec) = executor().await else { return };
    let run = Run::new(sh_job(IMAGE, "echo started; sleep 30; echo never"));
    exec.prepare(&run.ctx).await.unwrap();
    let handle = {
        let (exec, ctx) = (exec.clone(), run.ctx.clone());
        tokio::spawn(async move { exec.run(&ctx, Arc::new(NoLogs)).await })
    };
    wait_for_text(&run.ctx.results_dir.join("stdout"), "started").await;
    let t = Instant::now();
    exec.cancel(run.id()).await;
    exec.cancel(run.id()).await;
    let result = tokio::time::timeout(Duration::from_secs(15), handle).await.unwrap().unwrap();
    assert!(t.elapsed() < Duration::from_secs(15));
    let (f, out) = result.unwrap_err();
    assert!(f.message.contains("cancelled"), "{f:?}");
    assert!(!out.unwrap().stdout.contains("never"));
    let state = inspect(exec.docker(), &run.name()).await.unwrap().state.unwrap();
    assert_eq!(state.running, Some(false));
    // Cancelling what does not exist is harmless.
    exec.cancel("e-never-existed").await;
    exec.cleanup(run.id()).await;
    exec.cleanup("e-never-existed").await;
}

#[tokio::test]
async fn missing_image_is_image_unavailable() {
    let Some(exec) = executor().await else { return };
    for image in [
        "gadus-test/does-not-exist:1",
        "gadus-test/busybox@sha256:0000000000000000000000000000000000000000000000000000000000000000",
    ] {
        let run = Run::new(sh_job(image, "true"));
        let f = exec.prepare(&run.ctx).await.unwrap_err();
        assert_eq!(f.kind, FailureKind::ImageUnavailable, "{f:?}");
        assert!(f.message.contains(image), "{f:?}");
        // run never pulls: still unavailable, and nothing was created.
        let (f, out) = exec.run(&run.ctx, Arc::new(NoLogs)).await.unwrap_err();
        assert_eq!(f.kind, FailureKind::ImageUnavailable, "{f:?}");
        assert!(out.is_none());
        assert!(inspect(exec.docker(), &run.name()).await.is_none());
        exec.cleanup(run.id()).await;
    }
}

#[tokio::test]
async fn unrunnable_specs_fail_with_their_class() {
    let Some(exec) = executor().await else { return };
    // An entrypoint that does not exist: the task's fault, reported when the start fails.
    let run = Run::new(bench::docker_job("j-x", IMAGE, &["/no/such/binary"], &[]));
    exec.prepare(&run.ctx).await.unwrap();
    let (f, _) = exec.run(&run.ctx, Arc::new(NoLogs)).await.unwrap_err();
    assert_eq!(f.kind, FailureKind::TaskFailed, "{f:?}");
    assert!(f.message.contains("/no/such/binary"), "{f:?}");
    exec.cleanup(run.id()).await;
    assert!(inspect(exec.docker(), &run.name()).await.is_none());

    // Refused while Preparing, before anything is created: no image, a mount over /proc,
    // GPUs this node does not have.
    let mut no_image = sh_job(IMAGE, "true");
    no_image.tasks[0].engine.as_mut().unwrap().params.remove("Image");
    let mut over_proc = Run::new(sh_job(IMAGE, "true"));
    let input = over_proc.host_dir("in", 0o755);
    over_proc.ctx.inputs = vec![PreparedInput::node_owned("/proc/sys", input)];
    let mut gpu = Run::new(sh_job(IMAGE, "true"));
    gpu.ctx.resources.gpu = 1;
    for run in [Run::new(no_image), over_proc, gpu] {
        let f = exec.prepare(&run.ctx).await.unwrap_err();
        assert_eq!(f.kind, FailureKind::InvalidSpec, "{f:?}");
        let (f, _) = exec.run(&run.ctx, Arc::new(NoLogs)).await.unwrap_err();
        assert_eq!(f.kind, FailureKind::InvalidSpec, "{f:?}");
        assert!(inspect(exec.docker(), &run.name()).await.is_none());
    }
}

#[tokio::test]
async fn adopt_reattaches_to_a_running_container_after_restart() {
    let Some(first) = executor().await else { return };
    let run = Run::new(sh_job(IMAGE, "echo before; sleep 3; echo after; exit 4"));
    first.prepare(&run.ctx).await.unwrap();
    let handle = {
        let (exec, ctx) = (first.clone(), run.ctx.clone());
        tokio::spawn(async move { exec.run(&ctx, Arc::new(NoLogs)).await })
    };
    let before = wait_running(first.docker(), &run.name()).await;
    // The node dies: its run is dropped, its executor gone.
    handle.abort();
    drop(first);

    let second = executor().await.unwrap();
    let sink = Arc::new(Recorder::default());
    let out = second.adopt(&run.ctx, sink.clone()).await.unwrap();
    assert_eq!(out.exit_code, 4);
    assert_eq!(out.stdout, "before\nafter\n");
    assert_eq!(run.result("stdout"), "before\nafter\n");
    assert_eq!(run.result("exitCode"), "4");
    assert_eq!(sink.text(Stream::Stdout), "before\nafter\n");
    // The same container, not restarted.
    let after = inspect(second.docker(), &run.name()).await.unwrap();
    assert_eq!(after.id, before.id);
    assert_eq!(after.restart_count, Some(0));
    assert_eq!(after.state.unwrap().started_at, before.state.unwrap().started_at);
    assert_eq!(second.resolved_image(run.id()), before.image);
    second.cleanup(run.id()).await;
}

#[tokio::test]
async fn adopt_collects_an_exited_container_and_fails_without_one() {
    let Some(first) = executor().await else { return };
    let run = Run::new(sh_job(IMAGE, "echo done; echo warn >&2; sleep 1; exit 2"));
    first.prepare(&run.ctx).await.unwrap();
    let handle = {
        let (exec, ctx) = (first.clone(), run.ctx.clone());
        tokio::spawn(async move { exec.run(&ctx, Arc::new(NoLogs)).await })
    };
    wait_running(first.docker(), &run.name()).await;
    handle.abort();
    // It finishes while no node watches.
    let opts = WaitContainerOptionsBuilder::default().condition("not-running").build();
    let _ = first.docker().wait_container(&run.name(), Some(opts)).next().await;
    drop(first);

    let second = executor().await.unwrap();
    let out = second.adopt(&run.ctx, Arc::new(NoLogs)).await.unwrap();
    assert_eq!((out.exit_code, out.stdout.as_str(), out.stderr.as_str()), (2, "done\n", "warn\n"));
    assert_eq!(run.result("exitCode"), "2");
    second.cleanup(run.id()).await;

    // After cleanup there is nothing to adopt.
    let (f, out) = second.adopt(&run.ctx, Arc::new(NoLogs)).await.unwrap_err();
    assert_eq!(f.kind, FailureKind::NodeRestarted, "{f:?}");
    assert!(out.is_none());
}

#[tokio::test]
async fn adopt_holds_the_container_to_its_remaining_deadline() {
    let Some(first) = executor().await else { return };
    let mut run = Run::new(sh_job(IMAGE, "echo up; sleep 30"));
    run.ctx.deadline = Some(Duration::from_secs(2));
    first.prepare(&run.ctx).await.unwrap();
    let handle = {
        let (exec, ctx) = (first.clone(), run.ctx.clone());
        tokio::spawn(async move { exec.run(&ctx, Arc::new(NoLogs)).await })
    };
    wait_running(first.docker(), &run.name()).await;
    handle.abort();
    drop(first);
    // The node is down past the deadline.
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let second = executor().await.unwrap();
    let t = Instant::now();
    let (f, out) = second.adopt(&run.ctx, Arc::new(NoLogs)).await.unwrap_err();
    assert_eq!(f.kind, FailureKind::Timeout, "{f:?}");
    assert!(t.elapsed() < Duration::from_secs(10), "killed at once, took {:?}", t.elapsed());
    assert_eq!(out.unwrap().stdout, "up\n");
    second.cleanup(run.id()).await;
}

#[tokio::test]
async fn cleanup_leaves_no_container_or_volume_after_any_outcome() {
    let Some(exec) = executor().await else { return };
    let docker = exec.docker().clone();
    let cases: Vec<(&str, &str, Option<Duration>)> = vec![
        ("success", "echo ok > /data/f; echo ok", None),
        ("failure", "exit 9", None),
        ("timeout", "sleep 30", Some(Duration::from_secs(1))),
    ];
    for (what, script, deadline) in cases {
        // The VOLUME image makes the engine create an anonymous volume per container.
        let mut run = Run::new(sh_job(IMAGE_VOLUME, script));
        run.ctx.deadline = deadline;
        exec.prepare(&run.ctx).await.unwrap();
        let _ = exec.run(&run.ctx, Arc::new(NoLogs)).await;
        let info = inspect(&docker, &run.name()).await.unwrap();
        let volumes: Vec<String> = info
            .mounts
            .unwrap()
            .into_iter()
            .filter(|m| m.destination.as_deref() == Some("/data"))
            .filter_map(|m| m.name)
            .collect();
        assert_eq!(volumes.len(), 1, "{what}: an anonymous volume exists before cleanup");
        exec.cleanup(run.id()).await;
        exec.cleanup(run.id()).await; // idempotent
        let filters =
            HashMap::from([("label", vec![format!("{LABEL_EXECUTION_ID}={}", run.id())])]);
        let opts = ListContainersOptionsBuilder::default().all(true).filters(&filters).build();
        assert!(
            docker.list_containers(Some(opts)).await.unwrap().is_empty(),
            "{what}: container left"
        );
        for v in volumes {
            assert!(docker.inspect_volume(&v).await.is_err(), "{what}: volume {v} left");
        }
        assert_eq!(exec.resolved_image(run.id()), None, "{what}: state forgotten");
    }

    // Cancelled mid-run.
    let run = Run::new(sh_job(IMAGE_VOLUME, "echo started; sleep 30"));
    exec.prepare(&run.ctx).await.unwrap();
    let handle = {
        let (exec, ctx) = (exec.clone(), run.ctx.clone());
        tokio::spawn(async move { exec.run(&ctx, Arc::new(NoLogs)).await })
    };
    wait_for_text(&run.ctx.results_dir.join("stdout"), "started").await;
    exec.cancel(run.id()).await;
    let _ = handle.await.unwrap();
    exec.cleanup(run.id()).await;
    assert!(inspect(&docker, &run.name()).await.is_none(), "cancelled: container left");
    let managed = exec.managed_containers().await.unwrap();
    assert!(managed.iter().all(|c| c.execution_id != run.id()));
}

#[tokio::test]
async fn bench_helper_runs_true() {
    let Some(exec) = executor().await else { return };
    let scratch = tempfile::tempdir().unwrap();
    let o = bench::run_true(&exec, IMAGE, scratch.path()).await.unwrap();
    assert!(o.run > Duration::ZERO && o.total() >= o.run);
}

#[tokio::test]
async fn connecting_to_a_dead_engine_fails_clearly() {
    // A socket file nobody listens on (the listener is gone): connection refused.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("docker.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let docker =
        bollard::Docker::connect_with_unix(path.to_str().unwrap(), 5, bollard::API_DEFAULT_VERSION)
            .unwrap();
    let err = DockerExecutor::with_client(
        docker,
        DockerConfig { gpus: Some(vec![]), ..Default::default() },
    )
    .await
    .unwrap_err();
    assert!(matches!(err, DockerError::Unreachable { .. }), "{err:?}");
    assert!(err.to_string().contains("does not answer"), "{err}");
}

/// Issue 13, item 3: a networked job (`Full`, `Host`, `HTTP`, `Bridge` alike) runs on the
/// fenced job network: it has an interface and a default route, but no address of the node
/// answers it. A canary listens on every address of the host; the test first reaches it
/// itself through the same addresses, so "blocked" means fenced, not "nothing there".
/// (Before: `Full` was the host's network, where the job reached 127.0.0.1 of the node, and
/// `Bridge`/`HTTP` reached the node through Docker's gateway.)
#[tokio::test]
async fn networked_jobs_cannot_reach_the_node() {
    let Some(exec) = executor().await else { return };
    let canary = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = canary.local_addr().unwrap().port();
    let docker0 = "172.17.0.1";
    for host in ["127.0.0.1", docker0] {
        std::net::TcpStream::connect_timeout(
            &format!("{host}:{port}").parse().unwrap(),
            Duration::from_secs(2),
        )
        .unwrap_or_else(|e| panic!("the canary is not reachable on {host}: {e}"));
    }
    let script = format!(
        "ls /sys/class/net; ip route | grep -q '^default' && echo ROUTE; \
         gw=$(ip route | awk '/^default/ {{print $3}}'); \
         for a in $gw {docker0} 169.254.169.254; do \
           if nc -w 2 $a {port} </dev/null; then echo REACHED $a; else echo BLOCKED $a; fi; \
         done"
    );
    for kind in [NetworkType::Full, NetworkType::Host] {
        let mut run = Run::new(with_network(sh_job(IMAGE, &script), kind));
        run.ctx.allow_network = true;
        exec.prepare(&run.ctx).await.unwrap();
        let out = exec.run(&run.ctx, Arc::new(NoLogs)).await.unwrap();
        println!("{kind:?}: {}", out.stdout);
        assert!(out.stdout.contains("eth0") && out.stdout.contains("ROUTE"), "{out:?}");
        assert!(!out.stdout.contains("REACHED"), "{kind:?} reached the node: {}", out.stdout);
        assert_eq!(out.stdout.matches("BLOCKED").count(), 3, "{}", out.stdout);
        let hc = inspect(exec.docker(), &run.name()).await.unwrap().host_config.unwrap();
        assert_eq!(hc.network_mode.as_deref(), Some(network::JOB_NETWORK));
        exec.cleanup(run.id()).await;
    }
}

/// Issue 13, item 2: `Resources.Disk` is enforced. A job that asked for 10 MB and writes 300
/// MB is killed once it crosses the limit, fails saying what it wrote of what it asked, and
/// what it wrote is gone; a job within its limit completes with its files. (Before: a job
/// that asked for 100Mb wrote 1.5 GB and Completed.)
#[tokio::test]
async fn a_job_writing_past_its_disk_limit_is_killed_and_its_files_removed() {
    let Some(exec) = executor().await else { return };
    let job = with_result_path(
        sh_job(
            IMAGE,
            "echo start; dd if=/dev/zero of=/outputs/big bs=1M count=300 2>&1; echo done",
        ),
        "out",
        "/outputs",
    );
    let mut run = Run::new(job);
    run.ctx.resources =
        Resources { cpu: 0.5, memory: 64 << 20, disk: 10_000_000, ..Default::default() };
    exec.prepare(&run.ctx).await.unwrap();
    let (f, out) = exec.run(&run.ctx, Arc::new(NoLogs)).await.unwrap_err();
    assert_eq!(f.kind, FailureKind::TaskFailed, "{f:?}");
    assert!(f.message.starts_with("disk limit exceeded (wrote "), "{f:?}");
    assert!(f.message.contains("of 10000000 bytes"), "{f:?}");
    assert!(out.unwrap().stdout.starts_with("start"));
    assert!(!run.ctx.results_dir.join("out").exists(), "what the job wrote is removed");
    exec.cleanup(run.id()).await;

    let job = with_result_path(
        sh_job(IMAGE, "dd if=/dev/zero of=/outputs/small bs=1M count=2 2>/dev/null; echo ok"),
        "out",
        "/outputs",
    );
    let mut run = Run::new(job);
    run.ctx.resources =
        Resources { cpu: 0.5, memory: 64 << 20, disk: 10_000_000, ..Default::default() };
    exec.prepare(&run.ctx).await.unwrap();
    let out = exec.run(&run.ctx, Arc::new(NoLogs)).await.unwrap();
    assert_eq!(out.stdout, "ok\n");
    assert_eq!(std::fs::metadata(run.ctx.results_dir.join("out/small")).unwrap().len(), 2 << 20);
    exec.cleanup(run.id()).await;
}
