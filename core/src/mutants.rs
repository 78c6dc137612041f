//! Deliberate bugs, compiled in only with the `mutants` feature, switched on one at a time by
//! name. The simulation suite runs against each and must catch every one: it is the proof that
//! the suite can fail. Without the feature, [`Mutants::on`] is a constant `false` and the
//! optimizer removes every mutant branch.

use std::fmt;

/// The known mutants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mutant {
    /// The orchestrator accepts updates from a superseded attempt.
    AcceptStaleResult,
    /// The orchestrator replies to a submission before persisting the job.
    ReplyBeforePersist,
    /// A compute node releases an execution's capacity twice.
    DoubleRelease,
    /// The orchestrator forgets to reschedule executions of a lost node.
    NoRescheduleOnNodeLoss,
    /// The orchestrator counts a failed execution as a completed partition.
    FailedCountsAsCompleted,
    /// A compute node starts an execution without checking its capacity.
    IgnoreCapacity,
    /// The orchestrator leaves a terminal job's executions running on stop.
    StopLeavesExecutions,
    /// A compute node forgets an acknowledged execution without a tombstone.
    NoTombstone,
    /// A compute node never tells its driver that an execution's work can be released.
    NoRelease,
}

impl Mutant {
    /// Every mutant.
    pub const ALL: [Mutant; 9] = [
        Mutant::AcceptStaleResult,
        Mutant::ReplyBeforePersist,
        Mutant::DoubleRelease,
        Mutant::NoRescheduleOnNodeLoss,
        Mutant::FailedCountsAsCompleted,
        Mutant::IgnoreCapacity,
        Mutant::StopLeavesExecutions,
        Mutant::NoTombstone,
        Mutant::NoRelease,
    ];

    /// Parses a mutant name (as printed by `Display`).
    pub fn parse(s: &str) -> Option<Mutant> {
        Self::ALL.iter().copied().find(|m| m.to_string() == s)
    }
}

impl fmt::Display for Mutant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Mutant::AcceptStaleResult => "accept-stale-result",
            Mutant::ReplyBeforePersist => "reply-before-persist",
            Mutant::DoubleRelease => "double-release",
            Mutant::NoRescheduleOnNodeLoss => "no-reschedule-on-node-loss",
            Mutant::FailedCountsAsCompleted => "failed-counts-as-completed",
            Mutant::IgnoreCapacity => "ignore-capacity",
            Mutant::StopLeavesExecutions => "stop-leaves-executions",
            Mutant::NoTombstone => "no-tombstone",
            Mutant::NoRelease => "no-release",
        };
        f.write_str(s)
    }
}

/// Which mutant (if any) a state machine runs with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mutants {
    #[cfg(feature = "mutants")]
    active: Option<Mutant>,
}

impl Mutants {
    /// No mutant.
    pub const NONE: Mutants = Mutants {
        #[cfg(feature = "mutants")]
        active: None,
    };

    /// Runs with `m` switched on (only with the `mutants` feature; otherwise a no-op).
    #[allow(unused_variables)]
    pub fn with(m: Mutant) -> Mutants {
        Mutants {
            #[cfg(feature = "mutants")]
            active: Some(m),
        }
    }

    /// Whether `m` is switched on.
    #[inline(always)]
    #[allow(unused_variables)]
    pub fn on(&self, m: Mutant) -> bool {
        #[cfg(feature = "mutants")]
        {
            self.active == Some(m)
        }
        #[cfg(not(feature = "mutants"))]
        {
            false
        }
    }
}
