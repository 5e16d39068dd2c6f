//! The inbound rate limit of one connection.
//!
//! A token bucket (governor): `rate` frames per second, bursts of `2 * rate`. A frame
//! over the limit is refused with `rate_limited`; a client that keeps going collects
//! strikes, and [`Limits::max_strikes`] refusals within [`Limits::STRIKE_WINDOW`] close
//! the connection with 4008. A well-behaved client that bursts once never gets close.

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::time::Instant;

use crate::node::Limits;

#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    Allow,
    Refuse,
    Close,
}

pub(super) struct InboundLimiter {
    bucket: Option<DefaultDirectRateLimiter>,
    max_strikes: u32,
    window_start: Option<Instant>,
    strikes: u32,
}

impl InboundLimiter {
    pub(super) fn new(limits: &Limits) -> Self {
        let bucket = limits.rate_limit.map(|rate| {
            let burst = rate.saturating_mul(std::num::NonZeroU32::MIN.saturating_add(1));
            RateLimiter::direct(Quota::per_second(rate).allow_burst(burst))
        });
        Self {
            bucket,
            max_strikes: limits.max_strikes,
            window_start: None,
            strikes: 0,
        }
    }

    pub(super) fn check(&mut self, now: Instant) -> Verdict {
        let Some(bucket) = &self.bucket else {
            return Verdict::Allow;
        };
        if bucket.check().is_ok() {
            return Verdict::Allow;
        }
        match self.window_start {
            Some(start) if now.duration_since(start) < Limits::STRIKE_WINDOW => self.strikes += 1,
            _ => {
                self.window_start = Some(now);
                self.strikes = 1;
            }
        }
        if self.strikes >= self.max_strikes {
            Verdict::Close
        } else {
            Verdict::Refuse
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limits(rate: u32, strikes: u32) -> Limits {
        Limits {
            max_frame_bytes: 1024,
            rate_limit: std::num::NonZeroU32::new(rate),
            max_joins: 1,
            ping_interval: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            outbox_size: 1,
            jwt_leeway: 0,
            max_strikes: strikes,
        }
    }

    #[test]
    fn burst_of_twice_the_rate_then_refusals_then_close() {
        let mut l = InboundLimiter::new(&limits(10, 3));
        let now = Instant::now();
        let allowed = (0..20).filter(|_| l.check(now) == Verdict::Allow).count();
        assert_eq!(allowed, 20, "a burst of 2 * rate is allowed");
        assert_eq!(l.check(now), Verdict::Refuse);
        assert_eq!(l.check(now), Verdict::Refuse);
        assert_eq!(l.check(now), Verdict::Close);
    }

    #[test]
    fn zero_turns_it_off() {
        let mut l = InboundLimiter::new(&limits(0, 1));
        assert!((0..10_000).all(|_| l.check(Instant::now()) == Verdict::Allow));
    }
}
