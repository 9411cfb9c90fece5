//! A call's next deadline, for the engine's timer heap: the earliest time at which
//! [`Call::due`] could become true or buffered audio must be handed out. The engine arms a
//! timer for it instead of sweeping every call.

use vcontap_wire::Timestamp;

use super::*;

impl Call {
    /// The earliest timer time after `now` at which the call has something to do without
    /// input. Waiting for segment stores is timed by the engine, not here.
    ///
    /// A deadline already past at `now` (its work ran, but waits on input: audio drains
    /// only up to the last packet) is looked at again `retry_ms` later, so it can neither
    /// spin nor hide a later deadline.
    pub(crate) fn next_deadline(
        &self,
        cfg: &EngineConfig,
        now: Timestamp,
        retry_ms: i64,
    ) -> Timestamp {
        let mut t = Timestamp(i64::MAX);
        if self.finish_reason.is_some() {
            return t;
        }
        let retry = now.add_millis(retry_ms);
        let mut at = |base: Timestamp, ms: i64| {
            let d = base.add_millis(ms);
            t = t.min(if d <= now { retry } else { d });
        };
        for (base, wait, _) in self.end_timers(cfg).into_iter().flatten() {
            at(base, wait);
        }
        if let Some(u) = self.update_deadline() {
            // A held-back `updated` event (coalescing) is due.
            at(u, 0);
        }
        if let Some(q) = self.quality_deadline() {
            // The next "quality so far" refresh.
            at(q, 0);
        }
        if let Some(seg) = &self.segment {
            // Audio keeps flowing to the writer through silences (hold): see `tick`.
            at(seg.last_drain, i64::from(self.audio_chunk_ms));
        }
        t
    }
}
