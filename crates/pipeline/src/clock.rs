//! The timer clock a driver hands to the [`Tap`](crate::Tap): monotonic, on the capture
//! epoch (nanoseconds since 1970), separate from the packets' own timestamps.
//!
//! - [`Clock::Capture`] (file replay): the highest capture timestamp seen so far. A replay
//!   simulates the capture clock, so timeouts fire exactly where they would have live,
//!   whatever the replay speed; a timestamp going backwards never moves time back.
//! - [`Clock::Monotonic`] (live sources): `std::time::Instant` elapsed since start, added to
//!   the wall clock read once at start. Stepping the system clock (NTP, an operator) never
//!   fires or delays timers, and a silent interface still advances time.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use vcontap_wire::Timestamp;

/// A timer clock. See the module docs.
#[derive(Debug, Clone)]
pub enum Clock {
    /// The highest capture time seen.
    Capture {
        /// Highest capture time so far.
        max: Timestamp,
    },
    /// Monotonic wall time on the capture epoch.
    Monotonic {
        /// When the clock started.
        start: Instant,
        /// The wall clock at `start`.
        epoch: Timestamp,
    },
}

impl Clock {
    /// The replay clock.
    pub fn capture() -> Self {
        Clock::Capture {
            max: Timestamp(i64::MIN),
        }
    }

    /// The live clock, anchored to the wall clock now.
    pub fn monotonic() -> Self {
        let epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| Timestamp(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)))
            .unwrap_or_default();
        Clock::Monotonic {
            start: Instant::now(),
            epoch,
        }
    }

    /// Timer time for a packet captured at `ts`.
    pub fn on_packet(&mut self, ts: Timestamp) -> Timestamp {
        match self {
            Clock::Capture { max } => {
                *max = (*max).max(ts);
                *max
            }
            Clock::Monotonic { .. } => self.now(),
        }
    }

    /// Timer time now (for a replay: the last capture time seen).
    pub fn now(&self) -> Timestamp {
        match self {
            Clock::Capture { max } => *max,
            Clock::Monotonic { start, epoch } => {
                let el = i64::try_from(start.elapsed().as_nanos()).unwrap_or(i64::MAX);
                Timestamp(epoch.nanos().saturating_add(el))
            }
        }
    }
}
