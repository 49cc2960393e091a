//! [`SimClock`]: the simulation's clock, driven by tokio's (paused) virtual time plus
//! injected jumps.

use std::sync::Mutex;

use chrono::Duration;
use livedrop_core::clock::{truncate, Clock, Timestamp};
use tokio::time::Instant;

/// A clock that follows tokio's virtual time from a fixed origin, and can jump forward
/// (an NTP correction, a VM resumed after a pause).
///
/// On a paused runtime the time it reads is decided by the run alone, so two runs of
/// one seed see the same instants.
#[derive(Debug)]
pub struct SimClock {
    origin: Timestamp,
    start: Instant,
    jumped: Mutex<Duration>,
}

impl SimClock {
    /// A clock reading `origin` now.
    pub fn new(origin: Timestamp) -> Self {
        Self {
            origin,
            start: Instant::now(),
            jumped: Mutex::new(Duration::zero()),
        }
    }

    /// Moves the clock forward by `by` on top of the passing time.
    pub fn jump(&self, by: Duration) {
        *self.jumped.lock().unwrap_or_else(|p| p.into_inner()) += by;
    }
}

impl Clock for SimClock {
    fn now(&self) -> Timestamp {
        let elapsed = Duration::from_std(self.start.elapsed()).unwrap_or(Duration::zero());
        let jumped = *self.jumped.lock().unwrap_or_else(|p| p.into_inner());
        truncate(self.origin + elapsed + jumped)
    }
}
