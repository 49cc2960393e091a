//! The clock port. Every service reads time through it so tests can move time.

use std::sync::Mutex;

use chrono::{DateTime, Duration, DurationRound, Utc};

/// A point in time, UTC, with microsecond precision (what PostgreSQL keeps).
pub type Timestamp = DateTime<Utc>;

/// Truncates a timestamp to microseconds, so values survive a database round trip unchanged.
pub fn truncate(t: Timestamp) -> Timestamp {
    t.duration_trunc(Duration::microseconds(1)).unwrap_or(t)
}

/// The earliest instant a store must keep: 0001-01-01T00:00:00Z.
///
/// Stores keep years 1 to 9999 (what RFC 3339 writes and PostgreSQL's `timestamptz`
/// holds with room to spare); services refuse times outside with `invalid_input`.
pub const EARLIEST: Timestamp = match DateTime::from_timestamp(-62_135_596_800, 0) {
    Some(t) => t,
    None => DateTime::UNIX_EPOCH,
};

/// The latest instant a store must keep: 9999-12-31T23:59:59.999999Z.
pub const LATEST: Timestamp = match DateTime::from_timestamp(253_402_300_799, 999_999_000) {
    Some(t) => t,
    None => DateTime::UNIX_EPOCH,
};

/// Whether every store can keep `t` (see [`EARLIEST`] and [`LATEST`]).
pub fn is_storable(t: Timestamp) -> bool {
    (EARLIEST..=LATEST).contains(&t)
}

/// Where services get the current time.
pub trait Clock: Send + Sync + 'static {
    /// The current time, truncated to microseconds.
    fn now(&self) -> Timestamp;
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        truncate(Utc::now())
    }
}

/// A clock that only moves when told to: deterministic tests.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<Timestamp>,
}

impl ManualClock {
    /// A clock stopped at `start`.
    pub fn new(start: Timestamp) -> Self {
        Self {
            now: Mutex::new(truncate(start)),
        }
    }

    /// A clock stopped at a fixed, arbitrary instant (2030-01-01T00:00:00Z).
    pub fn fixed() -> Self {
        Self::new(DateTime::from_timestamp(1_893_456_000, 0).unwrap_or_default())
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().unwrap_or_else(|p| p.into_inner());
        *now = truncate(*now + by);
    }

    /// Sets the clock to `to`.
    pub fn set(&self, to: Timestamp) {
        *self.now.lock().unwrap_or_else(|p| p.into_inner()) = truncate(to);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.now.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_storable_range_is_years_1_to_9999() {
        assert_eq!(EARLIEST.to_rfc3339(), "0001-01-01T00:00:00+00:00");
        assert_eq!(LATEST.to_rfc3339(), "9999-12-31T23:59:59.999999+00:00");
        assert!(is_storable(EARLIEST) && is_storable(LATEST));
        assert!(!is_storable(EARLIEST - Duration::microseconds(1)));
        assert!(!is_storable(LATEST + Duration::microseconds(1)));
    }
}
