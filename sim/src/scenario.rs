//! What one seed means: the cluster, the workload and the fault rates (swarm testing: the seed
//! first picks the configuration, then every event).

use std::fmt;
use std::time::Duration;

use gadus_core::rng::DetRng;

/// Fault rates for the safety phase (all zero in the liveness phase).
#[derive(Clone, Debug, PartialEq)]
pub struct Faults {
    /// Probability a message is dropped.
    pub loss: f64,
    /// Probability a message is delivered twice.
    pub duplicate: f64,
    /// Message latency range (reordering comes from the spread).
    pub latency_min: Duration,
    /// Upper bound of the latency.
    pub latency_max: Duration,
    /// Mean time between partitions (symmetric or one-way), zero = none.
    pub partition_every: Duration,
    /// Mean time between crashes of some machine, zero = none.
    pub crash_every: Duration,
    /// Probability a crash strikes in the middle of a machine's action batch (losing records
    /// persisted since the last sync) rather than between events.
    pub crash_mid_batch: f64,
    /// Probability a crashed compute node's running work survives (adoptable, like a container).
    pub work_survives: f64,
    /// A compute node dies for good at this time into the run (decommissioned hardware).
    pub kill_forever_at: Option<Duration>,
    /// Probability that an offer (`AskForBid`, `BidAccepted`) gets a second copy delivered
    /// 30–180 s late, often after the execution ended, was acknowledged, or its node restarted.
    pub late_duplicate: f64,
}

/// One simulated run's configuration, derived from its seed.
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    /// The seed.
    pub seed: u64,
    /// Orchestrator count.
    pub orchestrators: usize,
    /// Compute node count.
    pub computes: usize,
    /// Jobs submitted during the safety phase.
    pub jobs: usize,
    /// Length of the safety phase (faults on).
    pub safety: Duration,
    /// Length of the liveness phase (faults off) after which every batch/ops job must be done.
    pub liveness: Duration,
    /// Per-machine clock skew, in milliseconds (index: orchestrators, then computes).
    pub skew_ms: Vec<i64>,
    /// Faults.
    pub faults: Faults,
    /// Probability a task fails.
    pub task_failure: f64,
    /// Probability a task hangs (only for jobs with an ExecutionTimeout).
    pub task_hang: f64,
    /// CPUs per compute node.
    pub node_cpus: u32,
    /// Only batch jobs (benchmarks: a steady stream of finishing jobs).
    pub batch_only: bool,
    /// Check every invariant after every event (tests) or only at the end (benchmarks).
    pub check_every_event: bool,
}

impl Scenario {
    /// The scenario for `seed` at cluster scale.
    pub fn from_seed(seed: u64) -> Scenario {
        let mut r = DetRng::new(seed ^ 0x5EED_5CE7_A210_0001);
        let orchestrators = 1 + r.below(2) as usize;
        let computes = 2 + r.below(6) as usize;
        let calm = r.chance(0.15);
        let faults = if calm {
            Faults {
                loss: 0.0,
                duplicate: 0.0,
                latency_min: Duration::from_millis(1),
                latency_max: Duration::from_millis(5),
                partition_every: Duration::ZERO,
                crash_every: Duration::ZERO,
                crash_mid_batch: 0.0,
                work_survives: 1.0,
                kill_forever_at: None,
                late_duplicate: 0.0,
            }
        } else {
            Faults {
                loss: [0.0, 0.01, 0.05, 0.15][r.below(4) as usize],
                duplicate: [0.0, 0.02, 0.1][r.below(3) as usize],
                latency_min: Duration::from_millis(r.below(20)),
                latency_max: Duration::from_millis(20 + r.below(2000)),
                partition_every: Duration::from_secs([0, 20, 60, 120][r.below(4) as usize]),
                crash_every: Duration::from_secs([0, 30, 90][r.below(3) as usize]),
                crash_mid_batch: [0.0, 0.3, 0.8][r.below(3) as usize],
                work_survives: r.unit(),
                kill_forever_at: if computes >= 3 && r.chance(0.3) {
                    Some(Duration::from_secs(20 + r.below(100)))
                } else {
                    None
                },
                late_duplicate: 0.0,
            }
        };
        let machines = orchestrators + computes;
        let skew_max = [0, 200, 2_000][r.below(3) as usize] as u64;
        let skew_ms =
            (0..machines).map(|_| r.below(2 * skew_max + 1) as i64 - skew_max as i64).collect();
        let mut faults = faults;
        // Drawn last, so the fields above keep the values they had for each seed.
        let late = [0.0, 0.05, 0.3][r.below(3) as usize];
        if !calm {
            faults.late_duplicate = late;
        }
        Scenario {
            seed,
            orchestrators,
            computes,
            jobs: 3 + r.below(10) as usize,
            safety: Duration::from_secs(120 + r.below(180)),
            liveness: Duration::from_secs(1800),
            skew_ms,
            faults,
            task_failure: [0.0, 0.1, 0.3][r.below(3) as usize],
            task_hang: [0.0, 0.1][r.below(2) as usize],
            node_cpus: 2 + r.below(6) as u32,
            batch_only: false,
            check_every_event: true,
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fa = &self.faults;
        write!(
            f,
            "orchestrators={} computes={} jobs={} safety={}s skew_ms={:?} loss={} dup={} latency={}..{}ms partition_every={}s crash_every={}s crash_mid_batch={} work_survives={:.2} kill_forever_at={:?} late_dup={} task_failure={} task_hang={} cpus={}",
            self.orchestrators,
            self.computes,
            self.jobs,
            self.safety.as_secs(),
            self.skew_ms,
            fa.loss,
            fa.duplicate,
            fa.latency_min.as_millis(),
            fa.latency_max.as_millis(),
            fa.partition_every.as_secs(),
            fa.crash_every.as_secs(),
            fa.crash_mid_batch,
            fa.work_survives,
            fa.kill_forever_at,
            fa.late_duplicate,
            self.task_failure,
            self.task_hang,
            self.node_cpus
        )
    }
}
