//! [`SimClock`]: the simulation's clock, driven by tokio's (paused) virtual time plus
//! injected jumps, forward and back.

use std::sync::Mutex;

use chrono::Duration;
use livedrop_core::clock::{truncate, Clock, Timestamp};
use tokio::time::Instant;

/// A clock that follows tokio's virtual time from a fixed origin, and can jump: forward
/// (a VM resumed after a pause) or back (NTP stepping a fast wall clock back).
///
/// On a paused runtime the time it reads is decided by the run alone, so two runs of
/// one seed see the same instants.
#[derive(Debug)]
pub struct SimClock {
    origin: Timestamp,
    start: Instant,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    jumped: Duration,
    latest: Timestamp,
}

impl SimClock {
    /// A clock reading `origin` now.
    pub fn new(origin: Timestamp) -> Self {
        Self {
            origin,
            start: Instant::now(),
            state: Mutex::new(State {
                jumped: Duration::zero(),
                latest: truncate(origin),
            }),
        }
    }

    /// Moves the clock by `by` on top of the passing time: forward, or back when `by`
    /// is negative.
    pub fn jump(&self, by: Duration) {
        self.lock().jumped += by;
    }

    /// The latest time the clock has read so far, now included: unlike
    /// [`Clock::now`] it never goes back. No reading taken before an instant is later
    /// than `latest()` at that instant, so a reading later than it was taken after.
    pub fn latest(&self) -> Timestamp {
        let now = self.now();
        self.lock().latest.max(now)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Clock for SimClock {
    fn now(&self) -> Timestamp {
        let elapsed = Duration::from_std(self.start.elapsed()).unwrap_or(Duration::zero());
        let mut state = self.lock();
        let now = truncate(self.origin + elapsed + state.jumped);
        state.latest = state.latest.max(now);
        now
    }
}
