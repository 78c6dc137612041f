//! What a tier-2 run observes: the event trace (hashed, printed on replay) and the figures the
//! invariants are checked against that only the executors can see (concurrent executions).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use gadus_sim::trace::Trace;

/// Shared by every host, the client and the fault driver of one run. Everything in a turmoil
/// run happens on one thread, one host at a time, so the lock is never contended.
#[derive(Clone)]
pub struct Recorder(Arc<Mutex<State>>);

struct State {
    trace: Trace,

    running: BTreeMap<String, u32>,
    max_running: BTreeMap<String, u32>,
    marks: BTreeMap<&'static str, u64>,
}

impl Recorder {
    /// A fresh recorder; `verbose` prints every line as it is written (`SIM_SEED` replays).
    pub fn new(verbose: bool) -> Recorder {
        Recorder(Arc::new(Mutex::new(State {
            trace: Trace::new(verbose),
            running: BTreeMap::new(),
            max_running: BTreeMap::new(),
            marks: BTreeMap::new(),
        })))
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }

    /// Appends a trace line stamped with the simulated time.
    pub fn line(&self, line: String) {
        let ms = turmoil::sim_elapsed().unwrap_or_default().as_millis();
        self.line_at(ms, line);
    }

    /// Appends a line stamped by the caller (the fault driver runs outside any host).
    pub fn line_at(&self, ms: u128, line: String) {
        let line = format!("{ms:>7} {line}");
        self.with(|s| s.trace.line(line));
    }

    /// An execution started running on `node`.
    pub fn run_started(&self, node: &str) {
        self.with(|s| {
            let n = s.running.entry(node.to_string()).or_default();
            *n += 1;
            let n = *n;
            let m = s.max_running.entry(node.to_string()).or_default();
            *m = (*m).max(n);
        });
    }

    /// An execution stopped running on `node`.
    pub fn run_ended(&self, node: &str) {
        self.with(|s| {
            if let Some(n) = s.running.get_mut(node) {
                *n = n.saturating_sub(1);
            }
        });
    }

    /// Counts a coverage mark.
    pub fn mark(&self, m: &'static str) {
        self.with(|s| *s.marks.entry(m).or_default() += 1);
    }

    /// The marks counted so far.
    pub fn marks(&self) -> BTreeMap<&'static str, u64> {
        self.with(|s| s.marks.clone())
    }

    /// The most executions each node ran at once.
    pub fn max_running(&self) -> BTreeMap<String, u32> {
        self.with(|s| s.max_running.clone())
    }

    /// (events, trace hash).
    pub fn summary(&self) -> (u64, u64) {
        self.with(|s| (s.trace.len(), s.trace.hash()))
    }
}
