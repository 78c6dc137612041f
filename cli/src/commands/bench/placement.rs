//! `gadus bench placement`: submits J single-task batch jobs into one orchestrator with N
//! simulated compute nodes that answer bids at once and complete the execution right after
//! it is approved. Measures the orchestrator alone (no network, no disk): jobs/s over the
//! whole submit → placed → completed cycle, and p99 of submit → placed (bid approved).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use gadus_core::model::{Job, Resources, Timestamp};
use gadus_core::orchestrator::{Action, Orchestrator, OrchestratorConfig};
use gadus_core::protocol::{
    ExecUpdate, Heartbeat, Message, NodeAdvert, NodeClock, WireResources, WireRunOutput,
};

use super::percentile;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Cluster sizes to measure (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = vec![100, 1000, 5000])]
    nodes: Vec<usize>,
    /// Jobs per measurement.
    #[arg(long, default_value_t = 100_000)]
    jobs: usize,
}

const JOB: &str = r#"{"Type":"batch","Count":1,"Tasks":[{"Name":"main","Engine":{"Type":"noop"},
    "Resources":{"CPU":"100m","Memory":"64mb"}}]}"#;

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let template = Job::from_json(JOB.as_bytes()).map_err(|e| anyhow::anyhow!("{e}"))?;
    for &n in &args.nodes {
        let (jobs_per_s, p50, p99) = measure(n, args.jobs, &template);
        println!(
            "{{\"bench\":\"placement\",\"nodes\":{n},\"jobs\":{},\"jobs_per_s\":{jobs_per_s:.0},\"p50_us\":{p50},\"p99_us\":{p99}}}",
            args.jobs
        );
    }
    Ok(ExitCode::SUCCESS)
}

struct Sim {
    orch: Orchestrator,
    now: Timestamp,
    clock: u64,
    placed: Option<String>,
    outbox: Vec<(String, Message)>,
}

impl Sim {
    fn drain(&mut self) {
        while let Some(a) = self.orch.poll_action() {
            if let Action::Send { to, message } = a {
                self.outbox.push((to, message));
            }
        }
    }

    /// Plays every simulated node's part until nothing is in flight.
    fn settle(&mut self) {
        self.drain();
        while !self.outbox.is_empty() {
            let batch = std::mem::take(&mut self.outbox);
            for (to, msg) in batch {
                self.clock += 1;
                let clock = NodeClock { incarnation: 1, seq: self.clock };
                let reply = match msg {
                    Message::AskForBid { exec, .. } => Message::BidResult {
                        exec,
                        accepted: true,
                        reason: String::new(),
                        retryable: false,
                        clock,
                    },
                    Message::BidAccepted { exec } => {
                        self.placed = Some(exec.job_id.clone());
                        Message::ExecutionUpdate {
                            exec,
                            update: ExecUpdate::Completed {
                                output: WireRunOutput::default(),
                                published_json: String::new(),
                            },
                            clock,
                        }
                    }
                    _ => continue,
                };
                self.orch.handle_message(self.now, &to, reply);
                self.drain();
            }
        }
    }
}

fn measure(nodes: usize, jobs: usize, template: &Job) -> (f64, u64, u64) {
    let mut cfg = OrchestratorConfig::new("bench-orch");
    cfg.disconnect_timeout = Duration::from_secs(3600);
    let mut sim = Sim {
        orch: Orchestrator::new(cfg, 7),
        now: Timestamp::from_secs(1_700_000_000),
        clock: 0,
        placed: None,
        outbox: Vec::new(),
    };
    let cap = WireResources::from(&Resources::new(1_000_000.0, u64::MAX / 4, u64::MAX / 4, 0));
    for i in 0..nodes {
        let id = format!("n-{i:05}");
        let advert = NodeAdvert {
            node_id: id.clone(),
            labels: vec![("zone".into(), format!("z{}", i % 8))],
            engines: vec!["noop".into(), "wasm".into()],
            publishers: vec!["noop".into(), "local".into()],
            storages: vec!["ipfs".into(), "urldownload".into()],
            max_capacity: cap,
            max_job: cap,
            address: String::new(),
            version: "v0.1.0".into(),
        };
        let clock = NodeClock { incarnation: 1, seq: 1 };
        sim.orch.handle_message(sim.now, &id, Message::NodeInfo { advert, clock });
        let heartbeat = Heartbeat { available: cap, ..Default::default() };
        let clock = NodeClock { incarnation: 1, seq: 2 };
        sim.orch.handle_message(sim.now, &id, Message::Heartbeat { heartbeat, clock });
        sim.drain();
    }
    let mut latencies = Vec::with_capacity(jobs);
    let start = Instant::now();
    for req in 0..jobs {
        sim.now = sim.now + Duration::from_micros(10);
        let t = Instant::now();
        sim.orch.submit(sim.now, req as u64, template.clone());
        sim.placed = None;
        sim.settle();
        latencies.push(t.elapsed().as_micros() as u64);
        assert!(sim.placed.is_some(), "job {req} was not placed");
    }
    let elapsed = start.elapsed().as_secs_f64();
    latencies.sort_unstable();
    (jobs as f64 / elapsed, percentile(&latencies, 50.0), percentile(&latencies, 99.0))
}
