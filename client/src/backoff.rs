//! Pacing of reconnect attempts: exponential backoff with full jitter.
//!
//! Why full jitter: a draining node closes all its clients at the same moment (1012),
//! and a hub that restarts or loses Redis does the same to many nodes' clients at
//! once. Clients that waited exactly `base * 2^n` would hit the surviving nodes in
//! synchronised waves; drawing every delay uniformly from `[0, min(cap, base * 2^n)]`
//! spreads them over the whole window, which keeps the total work lowest among the
//! usual schemes (see "Exponential Backoff And Jitter", AWS Architecture Blog, 2015).
//!
//! [`Backoff`] is the policy (plain data); [`Delays`] is one run of it, an iterator of
//! the waits before each attempt, with its own random number generator so tests can
//! seed it ([`Backoff::delays_seeded`]) and get the same waits every time.

use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

/// A reconnect policy: exponential growth from `base`, capped at `cap`, full jitter,
/// and optionally a limit on the number of attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    max_attempts: Option<u32>,
}

impl Default for Backoff {
    /// 100 ms doubling up to 30 s, attempts without limit: what an interactive client
    /// (an IDE plugin, `teamhub listen`) wants.
    fn default() -> Self {
        Backoff::new(Duration::from_millis(100), Duration::from_secs(30))
    }
}

impl Backoff {
    /// Waits grow from `base` and never exceed `cap` (a `cap` below `base` caps at
    /// `base`). Attempts are unlimited until [`Backoff::max_attempts`] says otherwise.
    pub fn new(base: Duration, cap: Duration) -> Backoff {
        Backoff {
            base,
            cap: cap.max(base),
            max_attempts: None,
        }
    }

    /// Gives up after `attempts` connection attempts (at least one is always made).
    pub fn max_attempts(mut self, attempts: u32) -> Backoff {
        self.max_attempts = Some(attempts.max(1));
        self
    }

    pub fn base(&self) -> Duration {
        self.base
    }

    pub fn cap(&self) -> Duration {
        self.cap
    }

    /// `None`: attempts continue until one succeeds or fails for good.
    pub fn attempt_limit(&self) -> Option<u32> {
        self.max_attempts
    }

    /// The longest wait before attempt `attempt` (counted from 0): `min(cap, base * 2^attempt)`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// One run of the policy, seeded from the operating system.
    pub fn delays(&self) -> Delays {
        Delays::new(*self, rand::make_rng())
    }

    /// One run of the policy with a fixed seed: the same seed gives the same waits.
    pub fn delays_seeded(&self, seed: u64) -> Delays {
        Delays::new(*self, SmallRng::seed_from_u64(seed))
    }
}

/// The waits before successive attempts of one reconnect (see [`Backoff`]).
///
/// Yields the wait before attempt 0, 1, 2, ... and ends after the policy's attempt
/// limit. The first wait is jittered too (up to `base`): it is what keeps the clients
/// of a drained node from all arriving within the same millisecond.
#[derive(Debug, Clone)]
pub struct Delays {
    policy: Backoff,
    attempt: u32,
    rng: SmallRng,
}

impl Delays {
    fn new(policy: Backoff, rng: SmallRng) -> Delays {
        Delays {
            policy,
            attempt: 0,
            rng,
        }
    }

    /// How many waits were handed out, that is, attempts started.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Starts over from `base`, after a connection that worked for a while.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    pub fn policy(&self) -> &Backoff {
        &self.policy
    }
}

impl Iterator for Delays {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        if self
            .policy
            .max_attempts
            .is_some_and(|max| self.attempt >= max)
        {
            return None;
        }
        let ceiling = self.policy.ceiling(self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        // Nanoseconds fit a u64 for any ceiling under 584 years.
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Some(Duration::from_nanos(self.rng.random_range(0..=nanos)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn ceilings_double_from_base_up_to_cap() {
        let b = Backoff::new(100 * MS, 1000 * MS);
        let ceilings: Vec<_> = (0..6).map(|n| b.ceiling(n)).collect();
        assert_eq!(
            ceilings,
            [100 * MS, 200 * MS, 400 * MS, 800 * MS, 1000 * MS, 1000 * MS]
        );
        // No overflow however many attempts were made.
        assert_eq!(b.ceiling(31), 1000 * MS);
        assert_eq!(b.ceiling(u32::MAX), 1000 * MS);
        let huge = Backoff::new(Duration::from_secs(1), Duration::MAX);
        assert_eq!(
            huge.ceiling(200),
            Duration::from_secs(1).saturating_mul(u32::MAX)
        );
    }

    #[test]
    fn a_cap_below_base_caps_at_base() {
        let b = Backoff::new(500 * MS, 10 * MS);
        assert_eq!((b.cap(), b.ceiling(3)), (500 * MS, 500 * MS));
    }

    #[test]
    fn every_wait_is_within_zero_and_its_ceiling() {
        let b = Backoff::new(10 * MS, 300 * MS);
        for seed in 0..50 {
            for (n, wait) in b.delays_seeded(seed).take(12).enumerate() {
                assert!(
                    wait <= b.ceiling(n as u32),
                    "seed {seed} attempt {n}: {wait:?}"
                );
            }
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_waits_and_others_differ() {
        let b = Backoff::default();
        let run = |seed| b.delays_seeded(seed).take(8).collect::<Vec<_>>();
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn waits_are_jittered_over_the_whole_window() {
        // Full jitter: over many draws the waits of one attempt cover [0, ceiling]
        // roughly uniformly, rather than clustering at the ceiling (no jitter) or
        // in its upper half ("equal jitter").
        let b = Backoff::new(1000 * MS, 1000 * MS);
        let mut delays = b.delays_seeded(42);
        let draws: Vec<Duration> = (0..2000).map(|_| delays.next().unwrap()).collect();
        let low = draws.iter().filter(|d| **d < 250 * MS).count();
        let high = draws.iter().filter(|d| **d > 750 * MS).count();
        // Each quarter expects 500 of 2000; these bounds are many deviations wide.
        assert!((350..650).contains(&low), "below a quarter: {low}");
        assert!((350..650).contains(&high), "above three quarters: {high}");
    }

    #[test]
    fn max_attempts_ends_the_run_and_reset_starts_over() {
        let b = Backoff::new(MS, 8 * MS).max_attempts(3);
        let mut delays = b.delays_seeded(1);
        assert_eq!(delays.by_ref().count(), 3);
        assert_eq!(delays.attempts(), 3);
        assert_eq!(delays.next(), None);
        delays.reset();
        assert!(delays.next().is_some());
        assert_eq!(delays.attempts(), 1);
        // At least one attempt is always made.
        assert_eq!(Backoff::default().max_attempts(0).attempt_limit(), Some(1));
        assert_eq!(Backoff::default().attempt_limit(), None);
    }

    #[test]
    fn unlimited_runs_keep_going_at_the_cap() {
        let b = Backoff::new(MS, 4 * MS);
        let mut delays = b.delays_seeded(3);
        assert!(delays.by_ref().take(1000).all(|d| d <= 4 * MS));
        assert_eq!(delays.attempts(), 1000);
    }
}
