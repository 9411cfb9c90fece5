//! Retry policy of a sink, sans-IO (time is an input): exponential backoff with full
//! jitter, and a circuit breaker that stops hammering a store that is down.
//!
//! - Each failed attempt waits `min(max, base · 2^n) · U(0.5, 1.0)` before the next one
//!   (jitter keeps several agents from retrying in lockstep after a store restart).
//! - After `open_after` consecutive failures the breaker **opens** (logged once, exported as
//!   a metric); when the wait has passed it is **half-open** and one probe of a single record
//!   is sent; success closes it, failure re-opens it with the next, longer wait.
//!
//! The delivery loop is sequential per sink, so the breaker is what turns "store down" into
//! one quiet probe per backoff period instead of a batch per period.

use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

/// Backoff settings.
#[derive(Debug, Clone, Copy)]
pub struct RetryConfig {
    /// First wait.
    pub base: Duration,
    /// Longest wait.
    pub max: Duration,
    /// Consecutive failures that open the breaker.
    pub open_after: u32,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            base: Duration::from_millis(200),
            max: Duration::from_secs(30),
            open_after: 5,
        }
    }
}

/// Breaker states (as exported: 0 closed, 1 open, 2 half-open).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Delivering normally.
    Closed = 0,
    /// Failing: waiting before the next probe.
    Open = 1,
    /// Probing with one record.
    HalfOpen = 2,
}

/// Backoff plus breaker for one sink.
#[derive(Debug)]
pub struct Retry {
    cfg: RetryConfig,
    failures: u32,
    state: BreakerState,
    jitter: RandomState,
}

/// What the loop should do after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AfterFailure {
    /// Wait this long before the next attempt.
    pub wait: Duration,
    /// The breaker just opened (log it once).
    pub opened: bool,
}

impl Retry {
    /// A closed breaker.
    pub fn new(cfg: RetryConfig) -> Self {
        Retry {
            cfg,
            failures: 0,
            state: BreakerState::Closed,
            jitter: RandomState::new(),
        }
    }

    /// Current state.
    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// Consecutive failures so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// How many records the next attempt may carry (one while probing).
    pub fn batch_limit(&self, max: usize) -> usize {
        if self.state == BreakerState::Closed {
            max
        } else {
            1
        }
    }

    /// Records a failed attempt.
    pub fn failure(&mut self) -> AfterFailure {
        self.failures = self.failures.saturating_add(1);
        let opened = self.state == BreakerState::Closed && self.failures >= self.cfg.open_after;
        if opened || self.state == BreakerState::HalfOpen {
            self.state = BreakerState::Open;
        }
        let exp = self.failures.saturating_sub(1).min(20);
        let full = self.cfg.base.saturating_mul(1u32 << exp).min(self.cfg.max);
        // U(0.5, 1.0) from a per-process random hasher: no RNG crate needed for jitter.
        let r = (self.jitter.hash_one(self.failures) % 1000) as f64 / 1000.0;
        AfterFailure {
            wait: full.mul_f64(0.5 + r / 2.0),
            opened,
        }
    }

    /// The wait after a failure has passed: the next attempt is a probe if the breaker is
    /// open.
    pub fn ready(&mut self) {
        if self.state == BreakerState::Open {
            self.state = BreakerState::HalfOpen;
        }
    }

    /// Records a successful attempt; returns true when this closed an open breaker.
    pub fn success(&mut self) -> bool {
        let recovered = self.state != BreakerState::Closed;
        self.failures = 0;
        self.state = BreakerState::Closed;
        recovered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let mut r = Retry::new(RetryConfig::default());
        let mut last_cap = Duration::ZERO;
        for n in 1..=12u32 {
            let a = r.failure();
            let cap = Duration::from_millis(200)
                .saturating_mul(1 << (n - 1))
                .min(Duration::from_secs(30));
            assert!(
                a.wait <= cap && a.wait >= cap / 2,
                "{n}: {:?} vs {cap:?}",
                a.wait
            );
            assert!(cap >= last_cap);
            last_cap = cap;
            assert_eq!(a.opened, n == 5);
            r.ready();
        }
        assert_eq!(last_cap, Duration::from_secs(30));
    }

    #[test]
    fn breaker_opens_probes_with_one_and_closes() {
        let mut r = Retry::new(RetryConfig {
            open_after: 2,
            ..RetryConfig::default()
        });
        assert_eq!(r.batch_limit(64), 64);
        r.failure();
        assert_eq!(r.state(), BreakerState::Closed);
        r.ready();
        assert!(r.failure().opened);
        assert_eq!(r.state(), BreakerState::Open);
        r.ready();
        assert_eq!(r.state(), BreakerState::HalfOpen);
        assert_eq!(r.batch_limit(64), 1);
        let again = r.failure();
        assert!(!again.opened, "re-opening is not a new alarm");
        assert_eq!(r.state(), BreakerState::Open);
        r.ready();
        assert!(r.success());
        assert_eq!(r.state(), BreakerState::Closed);
        assert!(!r.success());
    }
}
