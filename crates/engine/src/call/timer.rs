//! A call's next deadline, for the engine's timer heap: the earliest time at which
//! [`Call::due`] could become true or buffered audio must be handed out. The engine arms a
//! timer for it instead of sweeping every call.

use vcontap_wire::Timestamp;

use super::*;

impl Call {
    /// The earliest timer time at which the call has something to do without input.
    /// Waiting for segment stores is timed by the engine, not here.
    pub(crate) fn next_deadline(&self, cfg: &EngineConfig) -> Timestamp {
        let mut t = Timestamp(i64::MAX);
        if self.finish_reason.is_some() {
            return t;
        }
        let mut at = |base: Timestamp, ms: i64| t = t.min(base.add_millis(ms));
        if let Some(b) = self.bye_at {
            at(b, cfg.linger_ms);
        }
        if let Some(c) = self.cancel_at {
            at(c, cfg.linger_ms);
        }
        if let Some((c, _)) = self.challenge {
            at(c, cfg.auth_wait_ms);
        }
        let limit = if self.state >= State::Answered {
            cfg.idle_timeout_ms
        } else {
            cfg.ringing_timeout_ms
        };
        at(self.last_activity(), limit);
        if let Some(seg) = &self.segment {
            // Audio keeps flowing to the writer through silences (hold): see `tick`.
            at(seg.last_drain, i64::from(self.audio_chunk_ms));
        }
        t
    }
}
