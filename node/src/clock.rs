//! Where the node loop reads the time. The core never reads a clock: the loop passes `now`
//! into every call, and this is the one place it comes from.
//!
//! `gadus serve` uses the system clock. The tier-2 simulation (`sim/tests/tier2`) runs the same
//! loop on turmoil, whose tokio runtimes have a paused clock that only moves when the
//! simulation steps; there the node reads [`Clock::Tokio`], wall time derived from tokio's
//! `Instant`, so a seed replays to the same timestamps.

use gadus_core::model::Timestamp;

/// A source of wall-clock time for the node loop.
#[derive(Clone, Copy, Debug, Default)]
pub enum Clock {
    /// `SystemTime::now()`.
    #[default]
    System,
    /// `origin` plus the time tokio's clock has moved since `at` (deterministic under a paused
    /// runtime).
    Tokio {
        /// Wall time at `at`.
        origin: Timestamp,
        /// The tokio instant `origin` corresponds to.
        at: tokio::time::Instant,
    },
}

impl Clock {
    /// A clock that reads `origin` now and then follows tokio's (possibly paused) clock.
    pub fn tokio_from(origin: Timestamp) -> Clock {
        Clock::Tokio { origin, at: tokio::time::Instant::now() }
    }

    /// Now, as the core's timestamp.
    pub fn now(&self) -> Timestamp {
        match self {
            Clock::System => system_now(),
            Clock::Tokio { origin, at } => {
                let nanos = i64::try_from(at.elapsed().as_nanos()).unwrap_or(i64::MAX);
                Timestamp(origin.0.saturating_add(nanos))
            }
        }
    }
}

/// The system clock as the core's timestamp.
pub fn system_now() -> Timestamp {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    Timestamp(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}
