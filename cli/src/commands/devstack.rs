//! `gadus devstack --nodes N [--compute-only K]`: a real cluster on loopback.
//!
//! Each node is a separate `gadus serve` process (this same binary) with its own data dir, API
//! port and libp2p port, so a devstack behaves exactly like machines on a network: nodes can
//! be killed, restarted and partitioned one by one. The first node is the bootstrap peer of
//! the others. The first `N - K` nodes run orchestrator and compute; the last `K` run compute
//! only. Every node gets the label `name=node-<i>`; `--node-labels i:k=v,...` adds more, so
//! jobs can target a node. Loopback URLs are allowed for `urlDownload` (devstack is for
//! development). Ctrl-C (or SIGTERM) stops every node.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::Global;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Number of nodes.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// How many of them run compute only (no orchestrator); they are the last ones.
    #[arg(long, default_value_t = 0)]
    compute_only: usize,
    /// Extra labels for one node: `INDEX:key=value[,key=value]` (repeatable; index from 0).
    #[arg(long = "node-labels")]
    node_labels: Vec<String>,
    /// First API port (node i listens on BASE + i); 0 picks free ports.
    #[arg(long, default_value_t = 0)]
    base_port: u16,
    /// Where the nodes keep their data (default: a fresh temporary directory, removed on exit).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Extra config for every node: `-c Key.Path=value` (repeatable).
    #[arg(short = 'c', long = "config")]
    config: Vec<String>,
}

/// One running node of a devstack.
pub struct Member {
    index: usize,
    child: Child,
    /// Its API port on 127.0.0.1.
    pub api_port: u16,
    p2p: Option<String>,
    orchestrator: bool,
}

/// A port that was free a moment ago.
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

/// Starts node `index` (a `gadus serve` child) and waits for its API and P2P lines.
#[allow(clippy::too_many_arguments)] // few call sites; a struct would only rename the list
pub fn spawn(
    g: &Global,
    index: usize,
    dir: &std::path::Path,
    api_port: u16,
    p2p_port: u16,
    compute_only: bool,
    labels: &str,
    peer: Option<&str>,
    config: &[String],
) -> anyhow::Result<Member> {
    let exe = std::env::current_exe().context("locating the gadus binary")?;
    let data = dir.join(format!("node-{index}"));
    std::fs::create_dir_all(&data)?;
    let mut cmd = Command::new(exe);
    cmd.args(["serve", "--data-dir"])
        .arg(&data)
        .args(["--api-host", "127.0.0.1", "--api-port", &api_port.to_string()])
        .args(["-c", "Network.Host=127.0.0.1", "-c", &format!("Network.Port={p2p_port}")])
        .args(["-c", "InputSources.AllowLoopback=true", "--labels", labels]);
    if compute_only {
        cmd.arg("--compute");
    }
    if let Some(p) = peer {
        cmd.args(["--peer", p]);
    }
    for c in config {
        cmd.args(["-c", c]);
    }
    if let Some(level) = &g.log_level {
        cmd.args(["--log-level", level]);
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting gadus serve")?;
    let stderr = child.stderr.take().context("no stderr")?;
    let (tx, rx) = std::sync::mpsc::channel();
    let log = data.join("node.log");
    std::thread::spawn(move || {
        let mut file = std::fs::File::create(&log).ok();
        let mut p2p = None;
        let mut sent = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(f) = file.as_mut() {
                use std::io::Write;
                let _ = writeln!(f, "{line}");
            }
            if p2p.is_none()
                && let Some(a) = line.strip_prefix("P2P: ")
                && a.starts_with("/ip4/127.")
            {
                p2p = Some(a.to_string());
            }
            if !sent && line.starts_with("To use this node") {
                let _ = tx.send(p2p.clone());
                sent = true;
            }
        }
        if !sent {
            let _ = tx.send(None);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let p2p = loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(p) => break p,
            Err(_) if Instant::now() > deadline => bail!("node {index} did not start within 60 s"),
            Err(_) => {
                if let Some(st) = child.try_wait()? {
                    bail!(
                        "node {index} exited ({st}) while starting; see {}",
                        data.join("node.log").display()
                    );
                }
            }
        }
    };
    Ok(Member { index, child, api_port, p2p, orchestrator: !compute_only })
}

impl Member {
    /// Its loopback libp2p address.
    pub fn p2p(&self) -> Option<&str> {
        self.p2p.as_deref()
    }
}

pub fn run(g: &Global, a: Args) -> anyhow::Result<ExitCode> {
    if a.nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    if a.compute_only >= a.nodes {
        bail!("--compute-only must leave at least one node with an orchestrator");
    }
    let mut extra: Vec<Vec<String>> = vec![Vec::new(); a.nodes];
    for l in &a.node_labels {
        let (i, kv) = l.split_once(':').context("--node-labels expects INDEX:key=value")?;
        let i: usize = i.parse().with_context(|| format!("--node-labels index {i:?}"))?;
        if i >= a.nodes {
            bail!("--node-labels index {i} is beyond --nodes {}", a.nodes);
        }
        extra[i].push(kv.to_string());
    }
    let tmp;
    let dir = match &a.dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::Builder::new().prefix("gadus-devstack-").tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let mut members: Vec<Member> = Vec::new();
    let result = (|| -> anyhow::Result<()> {
        for (i, extra) in extra.iter().enumerate() {
            let api_port = if a.base_port == 0 { free_port()? } else { a.base_port + i as u16 };
            let p2p_port = free_port()?;
            let mut labels = vec![format!("name=node-{i}")];
            labels.extend(extra.iter().cloned());
            let compute_only = i >= a.nodes - a.compute_only;
            let peer = members.first().and_then(|m| m.p2p.clone());
            let m = spawn(
                g,
                i,
                &dir,
                api_port,
                p2p_port,
                compute_only,
                &labels.join(","),
                peer.as_deref(),
                &a.config,
            )?;
            members.push(m);
        }
        Ok(())
    })();
    if let Err(e) = result {
        stop(&mut members);
        return Err(e);
    }
    println!("devstack: {} nodes on 127.0.0.1 (data in {})", members.len(), dir.display());
    for m in &members {
        println!(
            "  node-{}  {}  API http://127.0.0.1:{}  P2P {}",
            m.index,
            if m.orchestrator { "orchestrator+compute" } else { "compute" },
            m.api_port,
            m.p2p.as_deref().unwrap_or("-")
        );
    }
    println!("To use it from another shell:");
    println!("  export GADUS_API_HOST=127.0.0.1 GADUS_API_PORT={}", members[0].api_port);
    println!("Press Ctrl-C to stop.");
    let rt = super::runtime()?;
    rt.block_on(async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
    });
    eprintln!("stopping {} nodes", members.len());
    stop(&mut members);
    Ok(ExitCode::SUCCESS)
}

/// SIGTERM every node (a clean goodbye), then SIGKILL what is left after 10 s.
pub fn stop(members: &mut [Member]) {
    for m in members.iter() {
        if let Some(pid) = rustix::process::Pid::from_raw(m.child.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for m in members.iter_mut() {
        while Instant::now() < deadline {
            if matches!(m.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = m.child.kill();
        let _ = m.child.wait();
    }
}
