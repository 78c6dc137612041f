//! Stopping a running guest: the stop flag and a WASI scheduler that honours it.
//!
//! wasmi has no epoch interruption, so a guest is stopped cooperatively: the executor runs it
//! in fuel slices and checks the [`StopFlag`] and the wall-clock deadline between slices. That
//! covers guest code, but not time spent *inside* a host call — and the only host calls that
//! can take long are WASI sleeps (`poll_oneoff` on a clock, which is how wasi-libc implements
//! `nanosleep`). [`StoppableSched`] therefore sleeps in short steps and aborts the call with a
//! trap as soon as the flag is raised or the deadline passes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use wasmi_wasi::wasi_common::Error;
use wasmi_wasi::wasi_common::sched::{Poll, WasiSched};
use wasmi_wasi::wasi_common::sync::sched::SyncSched;

/// Why a run was asked to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StopReason {
    /// `Executor::cancel`.
    Cancelled,
    /// The wall-clock deadline passed.
    Deadline,
}

/// Set from any thread; read by the run loop between fuel slices and by [`StoppableSched`].
/// The first reason wins, so a cancel racing a deadline reports whichever came first.
#[derive(Debug, Default)]
pub(crate) struct StopFlag(AtomicU8);

const RUNNING: u8 = 0;
const CANCELLED: u8 = 1;
const DEADLINE: u8 = 2;

impl StopFlag {
    pub(crate) fn request(&self, reason: StopReason) {
        let value = match reason {
            StopReason::Cancelled => CANCELLED,
            StopReason::Deadline => DEADLINE,
        };
        let _ = self.0.compare_exchange(RUNNING, value, Ordering::AcqRel, Ordering::Acquire);
    }

    pub(crate) fn get(&self) -> Option<StopReason> {
        match self.0.load(Ordering::Acquire) {
            CANCELLED => Some(StopReason::Cancelled),
            DEADLINE => Some(StopReason::Deadline),
            _ => None,
        }
    }

    /// The stop reason, raising `Deadline` first if `deadline` has passed.
    pub(crate) fn check(&self, deadline: Option<Instant>) -> Option<StopReason> {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            self.request(StopReason::Deadline);
        }
        self.get()
    }
}

/// The error a host call returns when the run is stopped mid-call. It traps the guest; the run
/// loop classifies the trap by looking at the [`StopFlag`], not at this message.
#[derive(Debug)]
struct Stopped;

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("execution stopped by the host")
    }
}

impl std::error::Error for Stopped {}

/// How long one sleep step lasts: the worst-case delay before a stop is noticed mid-sleep.
const SLEEP_STEP: Duration = Duration::from_millis(20);

/// wasi-common's blocking scheduler, with sleeps cut into steps that check the stop flag.
pub(crate) struct StoppableSched {
    inner: SyncSched,
    stop: Arc<StopFlag>,
    deadline: Option<Instant>,
}

impl StoppableSched {
    pub(crate) fn new(stop: Arc<StopFlag>, deadline: Option<Instant>) -> Self {
        StoppableSched { inner: SyncSched::new(), stop, deadline }
    }

    /// Sleeps `total` in steps; `Err` (a trap) if the run is stopped meanwhile.
    fn sleep_stoppable(&self, total: Duration) -> Result<(), Error> {
        // The guest chooses `total` (up to u64::MAX ns): an end beyond what `Instant` holds
        // is "never", and only the stop flag or the deadline ends the sleep.
        let end = Instant::now().checked_add(total);
        loop {
            if self.stop.check(self.deadline).is_some() {
                return Err(Error::trap(anyhow::Error::new(Stopped)));
            }
            let now = Instant::now();
            let left = end.map_or(SLEEP_STEP, |end| end.saturating_duration_since(now));
            if left.is_zero() {
                return Ok(());
            }
            std::thread::sleep(left.min(SLEEP_STEP));
        }
    }
}

#[async_trait::async_trait]
impl WasiSched for StoppableSched {
    async fn poll_oneoff<'a>(&self, poll: &mut Poll<'a>) -> Result<(), Error> {
        // With only clock subscriptions the poll is a plain sleep until the earliest deadline:
        // do the waiting here, stoppably, then let the inner scheduler report the expired
        // clocks (it returns at once). With file subscriptions (stdio pipes and regular files,
        // which are always ready) the inner poll does not block for long.
        let only_clocks = poll.rw_subscriptions().next().is_none();
        if only_clocks
            && let Some(wait) = poll.earliest_clock_deadline().and_then(|c| c.duration_until())
        {
            self.sleep_stoppable(wait)?;
        }
        if self.stop.check(self.deadline).is_some() {
            return Err(Error::trap(anyhow::Error::new(Stopped)));
        }
        self.inner.poll_oneoff(poll).await
    }

    async fn sched_yield(&self) -> Result<(), Error> {
        self.inner.sched_yield().await
    }

    async fn sleep(&self, duration: Duration) -> Result<(), Error> {
        self.sleep_stoppable(duration)
    }
}
