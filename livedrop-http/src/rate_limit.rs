//! Rate limits of `POST /orders`: per user and, when turned on, per client address.

use std::net::IpAddr;
use std::num::NonZeroU32;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use livedrop_core::UserId;

use crate::error::ApiError;

/// Keyed limiters for order placement.
pub(crate) struct OrderLimits {
    per_user: Option<DefaultKeyedRateLimiter<UserId>>,
    per_ip: Option<DefaultKeyedRateLimiter<IpAddr>>,
    clock: DefaultClock,
}

impl std::fmt::Debug for OrderLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrderLimits")
            .field("per_user", &self.per_user.is_some())
            .field("per_ip", &self.per_ip.is_some())
            .finish()
    }
}

/// `rate` requests per second with a burst of `rate` plus half of it (a small burst
/// above the steady rate), or no limiter for 0.
fn limiter<K: std::hash::Hash + Eq + Clone>(rate: u32) -> Option<DefaultKeyedRateLimiter<K>> {
    let per_second = NonZeroU32::new(rate)?;
    let burst = NonZeroU32::new(rate.saturating_add(rate / 2)).unwrap_or(per_second);
    Some(RateLimiter::keyed(
        Quota::per_second(per_second).allow_burst(burst),
    ))
}

impl OrderLimits {
    /// `per_user` and `per_ip` requests per second (0 turns a limit off), each with
    /// a burst of one and a half times the rate.
    pub(crate) fn new(per_user: u32, per_ip: u32) -> Self {
        Self {
            per_user: limiter(per_user),
            per_ip: limiter(per_ip),
            clock: DefaultClock::default(),
        }
    }

    /// Counts one order request; 429 `rate_limited` with the seconds to wait when
    /// the user or the address is over its limit.
    pub(crate) fn check(&self, user: UserId, ip: Option<IpAddr>) -> Result<(), ApiError> {
        if let (Some(limiter), Some(ip)) = (&self.per_ip, ip) {
            if let Err(not_until) = limiter.check_key(&ip) {
                return Err(self.refusal(not_until.wait_time_from(self.clock.now()), "address"));
            }
        }
        if let Some(limiter) = &self.per_user {
            if let Err(not_until) = limiter.check_key(&user) {
                return Err(self.refusal(not_until.wait_time_from(self.clock.now()), "user"));
            }
        }
        Ok(())
    }

    fn refusal(&self, wait: std::time::Duration, scope: &str) -> ApiError {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        metrics::counter!("livedrop_rate_limited_total", "scope" => scope.to_owned()).increment(1);
        ApiError::rate_limited(secs.max(1))
    }

    /// Forgets keys whose limits are back to full, bounding memory.
    pub(crate) fn retain_recent(&self) {
        if let Some(l) = &self.per_user {
            l.retain_recent();
            l.shrink_to_fit();
        }
        if let Some(l) = &self.per_ip {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}
