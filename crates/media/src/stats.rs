//! Per-stream RTP reception statistics: RFC 3550 A.1 sequence bookkeeping (extended
//! sequence numbers, cycles, loss, duplicates, reordering, restarts) and A.8
//! interarrival jitter.
//!
//! Follows the approach of str0m's `register.rs` (ReceiverRegister): 64-bit extended
//! sequence numbers, MAX_DROPOUT/MAX_MISORDER classification, a fixed bit window of
//! recently received sequence numbers for duplicate detection, and jitter kept as a
//! float in the media clock. Unlike RFC A.1 a large jump re-synchronises at once (no
//! probation) because a passive tap sees a call mid-stream and must not discard audio;
//! counters accumulate across restarts so totals stay meaningful for the whole stream.

/// Forward jumps smaller than this are a gap (lost packets), larger ones a restart (RFC 3550 A.1).
pub const MAX_DROPOUT: u16 = 3000;

/// Backward steps of at most this many are late packets, larger ones a restart (RFC 3550 A.1).
/// Must stay below the 128-bit duplicate window so every late packet can be checked.
pub const MAX_MISORDER: u16 = 100;

/// Width of the received-sequence bitmap: bit `i` = extended seq `max - i` was received.
const WINDOW_BITS: u64 = 128;

const NANOS_PER_SEC: i64 = 1_000_000_000;

/// How one packet's sequence number relates to the stream so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqOutcome {
    /// First packet of the stream.
    First,
    /// Next expected sequence number.
    InOrder,
    /// Ahead of the expected one; the value is how many packets are missing before it.
    Gap(u16),
    /// A sequence number already received (within the tracking window).
    Duplicate,
    /// Late but not seen before (fills an earlier gap).
    Reordered,
    /// A jump too large to be loss or reordering: the stream re-synchronised here.
    Restart,
}

/// Reception statistics of one RTP stream (one SSRC).
#[derive(Debug, Clone)]
pub struct StreamStats {
    clock_rate: u32,
    /// Highest extended sequence number of the current segment; starts at 1<<16 + seq so
    /// late packets right after the first never underflow.
    max_ext: u64,
    /// Lowest extended sequence number of the current segment.
    base_ext: u64,
    /// Received-bit window below and including `max_ext`.
    window: u128,
    /// Expected count and cycles of segments closed by restarts.
    expected_before: u64,
    cycles_before: u32,
    started: bool,
    packets: u64,
    bytes: u64,
    duplicates: u64,
    reordered: u64,
    /// A.8 jitter estimate in clock units.
    jitter: f64,
    max_jitter_ms: f64,
    /// Arrival (clock units) and RTP timestamp of the previous jitter sample.
    last_transit: Option<(i64, u32)>,
    first_arrival: Option<i64>,
    last_arrival: Option<i64>,
    max_delta_ns: i64,
    /// The previous packet was comfort noise (its successor's gap is not a delta).
    after_cn: bool,
}

/// Converts nanoseconds to clock units without overflowing for any i64 input.
fn ns_to_units(ns: i64, clock_rate: u32) -> i64 {
    let rate = i64::from(clock_rate);
    let secs = ns.div_euclid(NANOS_PER_SEC);
    let rem = ns.rem_euclid(NANOS_PER_SEC);
    secs.saturating_mul(rate)
        .saturating_add(rem * rate / NANOS_PER_SEC)
}

impl StreamStats {
    /// New statistics for a stream whose RTP clock runs at `clock_rate` Hz (0 = unknown:
    /// jitter is not computed).
    pub fn new(clock_rate: u32) -> Self {
        Self {
            clock_rate,
            max_ext: 0,
            base_ext: 0,
            window: 0,
            expected_before: 0,
            cycles_before: 0,
            started: false,
            packets: 0,
            bytes: 0,
            duplicates: 0,
            reordered: 0,
            jitter: 0.0,
            max_jitter_ms: 0.0,
            last_transit: None,
            first_arrival: None,
            last_arrival: None,
            max_delta_ns: 0,
            after_cn: false,
        }
    }

    /// Changes the RTP clock rate (e.g. once SDP is known or the payload type changes).
    /// The jitter estimate restarts since transit times in different clocks don't compare.
    pub fn set_clock_rate(&mut self, clock_rate: u32) {
        if clock_rate != self.clock_rate {
            self.clock_rate = clock_rate;
            self.jitter = 0.0;
            self.last_transit = None;
        }
    }

    /// Records one packet: sequence number, RTP timestamp, arrival time (ns since the
    /// epoch) and payload length.
    pub fn update(
        &mut self,
        seq: u16,
        rtp_ts: u32,
        arrival: i64,
        payload_len: usize,
    ) -> SeqOutcome {
        self.update_marked(seq, rtp_ts, arrival, payload_len, false, false)
    }

    /// Like [`StreamStats::update`], knowing the marker bit and whether the payload is
    /// comfort noise. As Wireshark's RTP analysis does, the gap before a marked packet
    /// (talk spurt after silence suppression), a comfort-noise packet and the packet after
    /// comfort noise do not count towards `max_delta_ms`: those gaps are intended, not
    /// network trouble.
    pub fn update_marked(
        &mut self,
        seq: u16,
        rtp_ts: u32,
        arrival: i64,
        payload_len: usize,
        marker: bool,
        comfort_noise: bool,
    ) -> SeqOutcome {
        self.record(
            seq,
            rtp_ts,
            arrival,
            payload_len,
            marker,
            comfort_noise,
            true,
        )
    }

    /// Records an RFC 4733 telephone-event packet: it takes its place in the stream's
    /// sequence space (loss, duplicates, reordering) and its arrival gap counts, but it is
    /// no jitter sample. Every update of an event repeats the event's start timestamp, so
    /// its transit time grows by the packet interval each time; RFC 3550 jitter is about
    /// the media clock, and tshark leaves these packets out of it too. The next voice
    /// packet is compared with the previous voice packet.
    pub fn update_event(
        &mut self,
        seq: u16,
        rtp_ts: u32,
        arrival: i64,
        payload_len: usize,
        marker: bool,
    ) -> SeqOutcome {
        self.record(seq, rtp_ts, arrival, payload_len, marker, false, false)
    }

    // One per-packet entry point behind the public ones; a struct would add a copy per
    // packet on the hot path.
    #[allow(clippy::too_many_arguments)]
    fn record(
        &mut self,
        seq: u16,
        rtp_ts: u32,
        arrival: i64,
        payload_len: usize,
        marker: bool,
        comfort_noise: bool,
        jitter: bool,
    ) -> SeqOutcome {
        if let Some(last) = self.last_arrival {
            if !marker && !comfort_noise && !self.after_cn {
                self.max_delta_ns = self.max_delta_ns.max(arrival.saturating_sub(last));
            }
        }
        self.after_cn = comfort_noise;
        self.first_arrival.get_or_insert(arrival);
        self.last_arrival = Some(arrival);

        let outcome = self.sequence(seq);
        if outcome == SeqOutcome::Duplicate {
            self.duplicates += 1;
            return outcome;
        }
        if outcome == SeqOutcome::Reordered {
            self.reordered += 1;
        }
        if outcome == SeqOutcome::Restart {
            self.last_transit = None;
        }
        self.packets += 1;
        self.bytes = self.bytes.saturating_add(payload_len as u64);
        if jitter {
            self.jitter_sample(rtp_ts, arrival);
        }
        outcome
    }

    fn start_segment(&mut self, seq: u16) {
        self.max_ext = (1 << 16) | u64::from(seq);
        self.base_ext = self.max_ext;
        self.window = 1;
    }

    fn sequence(&mut self, seq: u16) -> SeqOutcome {
        if !self.started {
            self.started = true;
            self.start_segment(seq);
            return SeqOutcome::First;
        }
        let max_seq = self.max_ext as u16;
        let udelta = seq.wrapping_sub(max_seq);
        if udelta == 0 {
            SeqOutcome::Duplicate
        } else if udelta < MAX_DROPOUT {
            let d = u64::from(udelta);
            self.max_ext += d;
            self.window = if d >= WINDOW_BITS {
                1
            } else {
                (self.window << d) | 1
            };
            if udelta == 1 {
                SeqOutcome::InOrder
            } else {
                SeqOutcome::Gap(udelta - 1)
            }
        } else if udelta <= u16::MAX - MAX_MISORDER {
            self.expected_before = self.expected_before.saturating_add(self.segment_expected());
            self.cycles_before = self.cycles_before.saturating_add(self.segment_cycles());
            self.start_segment(seq);
            SeqOutcome::Restart
        } else {
            // Late: `back` is 1..=MAX_MISORDER, always inside the window.
            let back = u64::from(seq.wrapping_neg().wrapping_add(max_seq));
            let bit = 1u128 << back;
            if self.window & bit != 0 {
                return SeqOutcome::Duplicate;
            }
            self.window |= bit;
            // A packet from before the first one seen widens the expected range instead
            // of making loss negative.
            self.base_ext = self.base_ext.min(self.max_ext - back);
            SeqOutcome::Reordered
        }
    }

    fn segment_expected(&self) -> u64 {
        if self.started {
            self.max_ext - self.base_ext + 1
        } else {
            0
        }
    }

    fn segment_cycles(&self) -> u32 {
        // Segments start in cycle 1 (see `start_segment`).
        ((self.max_ext >> 16) - 1) as u32
    }

    fn jitter_sample(&mut self, rtp_ts: u32, arrival: i64) {
        if self.clock_rate == 0 {
            return;
        }
        let arr = ns_to_units(arrival, self.clock_rate);
        if let Some((last_arr, last_ts)) = self.last_transit {
            // D(i-1,i) = (Rj - Ri) - (Sj - Si); the wrapping i32 timestamp difference
            // handles timestamp wrap-around and small backwards steps.
            let ts_delta = i64::from(rtp_ts.wrapping_sub(last_ts) as i32);
            let d = arr.saturating_sub(last_arr).saturating_sub(ts_delta);
            self.jitter += ((d as f64).abs() - self.jitter) / 16.0;
            self.max_jitter_ms = self.max_jitter_ms.max(self.jitter_ms());
        }
        self.last_transit = Some((arr, rtp_ts));
    }

    /// Unique (non-duplicate) packets received.
    pub fn packets(&self) -> u64 {
        self.packets
    }
    /// Payload bytes of the unique packets received.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
    /// Packets expected from the sequence number range (summed over restarts).
    pub fn expected(&self) -> u64 {
        self.expected_before.saturating_add(self.segment_expected())
    }
    /// `expected - packets`; may be negative (RFC 3550 A.3), e.g. across restarts.
    pub fn lost(&self) -> i64 {
        (self.expected() as i64).saturating_sub(self.packets as i64)
    }
    /// Duplicate packets seen (not counted in `packets`).
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }
    /// Late packets that filled an earlier gap.
    pub fn reordered(&self) -> u64 {
        self.reordered
    }
    /// Sequence number wrap-arounds (summed over restarts).
    pub fn seq_cycles(&self) -> u32 {
        self.cycles_before.saturating_add(if self.started {
            self.segment_cycles()
        } else {
            0
        })
    }
    /// Current interarrival jitter estimate in milliseconds (0 if the clock rate is unknown).
    pub fn jitter_ms(&self) -> f64 {
        if self.clock_rate == 0 {
            0.0
        } else {
            self.jitter * 1000.0 / f64::from(self.clock_rate)
        }
    }
    /// Largest jitter estimate seen, in milliseconds.
    pub fn max_jitter_ms(&self) -> f64 {
        self.max_jitter_ms
    }
    /// Arrival time (ns) of the first packet.
    pub fn first_arrival(&self) -> Option<i64> {
        self.first_arrival
    }
    /// Arrival time (ns) of the most recent packet.
    pub fn last_arrival(&self) -> Option<i64> {
        self.last_arrival
    }
    /// Largest arrival gap between consecutive packets (in arrival order), in milliseconds.
    pub fn max_delta_ms(&self) -> f64 {
        self.max_delta_ns as f64 / 1e6
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: i64 = 1_000_000;

    fn feed(s: &mut StreamStats, seqs: &[u16]) -> Vec<SeqOutcome> {
        seqs.iter()
            .map(|&q| s.update(q, u32::from(q) * 160, i64::from(q) * 20 * MS, 160))
            .collect()
    }

    #[test]
    fn in_order() {
        let mut s = StreamStats::new(8000);
        let o = feed(&mut s, &[10, 11, 12, 13]);
        assert_eq!(o[0], SeqOutcome::First);
        assert!(o[1..].iter().all(|&x| x == SeqOutcome::InOrder));
        assert_eq!(
            (s.packets(), s.expected(), s.lost(), s.bytes()),
            (4, 4, 0, 640)
        );
        assert_eq!(s.jitter_ms(), 0.0);
        assert_eq!(s.first_arrival(), Some(200 * MS));
        assert_eq!(s.last_arrival(), Some(260 * MS));
        assert!((s.max_delta_ms() - 20.0).abs() < 1e-9);
    }

    #[test]
    fn loss_duplicate_reorder() {
        let mut s = StreamStats::new(8000);
        let o = feed(&mut s, &[1, 2, 5, 5, 3, 3, 6]);
        assert_eq!(
            o,
            vec![
                SeqOutcome::First,
                SeqOutcome::InOrder,
                SeqOutcome::Gap(2),
                SeqOutcome::Duplicate,
                SeqOutcome::Reordered,
                SeqOutcome::Duplicate,
                SeqOutcome::InOrder
            ]
        );
        assert_eq!(s.packets(), 5);
        assert_eq!(s.expected(), 6);
        assert_eq!(s.lost(), 1);
        assert_eq!(s.duplicates(), 2);
        assert_eq!(s.reordered(), 1);
    }

    #[test]
    fn late_before_first() {
        let mut s = StreamStats::new(8000);
        feed(&mut s, &[100, 101]);
        assert_eq!(s.update(99, 0, 0, 1), SeqOutcome::Reordered);
        assert_eq!((s.expected(), s.lost()), (3, 0));
    }

    #[test]
    fn wraparound() {
        let mut s = StreamStats::new(8000);
        let o = feed(&mut s, &[65533, 65534, 65535, 0, 1, 65535, 3]);
        assert_eq!(o[3], SeqOutcome::InOrder);
        assert_eq!(o[5], SeqOutcome::Duplicate);
        assert_eq!(o[6], SeqOutcome::Gap(1));
        assert_eq!(s.seq_cycles(), 1);
        assert_eq!(s.expected(), 7);
        assert_eq!(s.packets(), 6);
        assert_eq!(s.lost(), 1);
        // Late packet across the wrap.
        assert_eq!(s.update(2, 0, 0, 0), SeqOutcome::Reordered);
        assert_eq!(s.lost(), 0);
    }

    #[test]
    fn restart() {
        let mut s = StreamStats::new(8000);
        feed(&mut s, &[1, 2, 3]);
        assert_eq!(s.update(40_000, 0, 0, 10), SeqOutcome::Restart);
        assert_eq!(s.update(40_001, 160, 20 * MS, 10), SeqOutcome::InOrder);
        assert_eq!(s.expected(), 5);
        assert_eq!(s.packets(), 5);
        assert_eq!(s.lost(), 0);
        // Far backwards (beyond MAX_MISORDER) is also a restart.
        assert_eq!(s.update(39_000, 0, 0, 10), SeqOutcome::Restart);
        assert_eq!(s.expected(), 6);
    }

    #[test]
    fn big_gap_clears_window() {
        let mut s = StreamStats::new(8000);
        feed(&mut s, &[1]);
        assert_eq!(s.update(2000, 0, 0, 0), SeqOutcome::Gap(1998));
        assert_eq!(s.update(1950, 0, 0, 0), SeqOutcome::Reordered);
        assert_eq!(s.update(1950, 0, 0, 0), SeqOutcome::Duplicate);
    }

    #[test]
    fn jitter_matches_hand_computation() {
        // 8 kHz, 20 ms packets (160 ticks), arrivals offset by +0, +4, -2, +1, +0 ms.
        let mut s = StreamStats::new(8000);
        let offsets_ms = [0i64, 4, -2, 1, 0];
        for (i, off) in offsets_ms.iter().enumerate() {
            let arr = 1_700_000_000 * 1_000 * MS + (i as i64 * 20 + off) * MS;
            s.update(i as u16, 1000 + i as u32 * 160, arr, 160);
        }
        // |D| in ms: 4, 6, 3, 1 -> ticks 32, 48, 24, 8.
        let mut j = 0.0f64;
        let mut max = 0.0f64;
        for d in [32.0, 48.0, 24.0, 8.0] {
            j += (d - j) / 16.0;
            max = max.max(j);
        }
        assert!(
            (s.jitter_ms() - j / 8.0).abs() < 1e-9,
            "{} vs {}",
            s.jitter_ms(),
            j / 8.0
        );
        assert!((s.max_jitter_ms() - max / 8.0).abs() < 1e-9);
        assert!(s.jitter_ms() > 0.5 && s.jitter_ms() < 1.0);
        assert!((s.max_delta_ms() - 24.0).abs() < 1e-9);
    }

    #[test]
    fn jitter_handles_timestamp_wrap_and_zero_clock() {
        let mut s = StreamStats::new(8000);
        s.update(1, u32::MAX - 79, 0, 160);
        s.update(2, 80, 20 * MS, 160);
        assert!(s.jitter_ms().abs() < 1e-9);
        let mut z = StreamStats::new(0);
        z.update(1, 0, 0, 1);
        z.update(2, 999, 5 * MS, 1);
        assert_eq!(z.jitter_ms(), 0.0);
        z.set_clock_rate(8000);
        z.update(3, 1000, 10 * MS, 1);
        assert_eq!(z.jitter_ms(), 0.0);
    }

    #[test]
    fn extreme_inputs_do_not_panic() {
        let mut s = StreamStats::new(u32::MAX);
        for (i, a) in [i64::MIN, i64::MAX, 0, i64::MIN, -1]
            .into_iter()
            .enumerate()
        {
            s.update(
                (i as u16).wrapping_mul(30_000),
                (i as u32).wrapping_mul(0x9e37_79b9),
                a,
                usize::MAX,
            );
        }
        assert!(s.jitter_ms().is_finite());
        assert!(s.max_delta_ms() >= 0.0);
    }

    #[test]
    fn telephone_events_are_no_jitter_samples() {
        // Voice every 20 ms on a steady clock; an event train in between repeats its start
        // timestamp while arrivals advance (RFC 4733 §2.5.1.2).
        let mut s = StreamStats::new(8000);
        let mut seq = 0u16;
        for i in 0..10i64 {
            s.update(seq, (i * 160) as u32, i * 20 * MS, 160);
            seq += 1;
        }
        for i in 10..16i64 {
            let o = s.update_event(seq, 1600, i * 20 * MS, 4, i == 10);
            assert_ne!(o, SeqOutcome::Duplicate);
            seq += 1;
        }
        for i in 16..20i64 {
            s.update(seq, (i * 160) as u32, i * 20 * MS, 160);
            seq += 1;
        }
        assert_eq!(s.jitter_ms(), 0.0);
        assert_eq!(s.max_jitter_ms(), 0.0);
        assert_eq!((s.packets(), s.lost(), s.duplicates()), (20, 0, 0));
        // The same train fed as voice is what used to inflate the estimate.
        let mut v = StreamStats::new(8000);
        for i in 0..6i64 {
            v.update(i as u16, 1600, i * 20 * MS, 4);
        }
        assert!(v.jitter_ms() > 5.0);
    }

    #[test]
    fn marked_and_comfort_noise_gaps_are_not_deltas() {
        let mut st = StreamStats::new(8000);
        let ms = 1_000_000i64;
        st.update_marked(1, 0, 0, 160, false, false);
        st.update_marked(2, 160, 20 * ms, 160, false, false);
        // 2 s of silence suppression, then a talk spurt with the marker bit.
        st.update_marked(3, 16_160, 2020 * ms, 160, true, false);
        assert!((st.max_delta_ms() - 20.0).abs() < 1e-9);
        // Comfort noise, and the packet after it, don't count either.
        st.update_marked(4, 16_320, 2040 * ms, 1, false, true);
        st.update_marked(5, 40_000, 5000 * ms, 160, false, false);
        assert!((st.max_delta_ms() - 20.0).abs() < 1e-9);
        st.update_marked(6, 40_160, 5100 * ms, 160, false, false);
        assert!(
            (st.max_delta_ms() - 100.0).abs() < 1e-9,
            "a real 100 ms gap counts"
        );
        assert_eq!(st.packets(), 6);
    }
}
