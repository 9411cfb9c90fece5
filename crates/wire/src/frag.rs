//! IPv4 and IPv6 fragment reassembly.
//!
//! A bounded table keyed by (src, dst, id, proto) with a seeded hasher (keys are
//! attacker-controlled). Each entry is capped in bytes and in disjoint byte ranges; the
//! table is capped in entries (oldest evicted first) and entries expire after a timeout.
//! Overlapping and duplicate fragments simply overwrite bytes ("last wins"): captures
//! are passive, so we only need to be safe, not to match a particular host stack.
//!
//! Every datagram that can never be reassembled is counted once with the reason it was
//! given up: too large, inconsistent, too many holes, evicted (table full) or timed out.
//! Calling [`crate::Decoder::handle_timeout`] with a time past the last frame at the end
//! of the input counts the datagrams still incomplete as timed out.

use std::collections::VecDeque;
use std::net::IpAddr;

use crate::stats::{DecodeStats, SkipReason};
use crate::Timestamp;

/// Most disjoint byte ranges (holes + 1) we track per datagram; a peer sending many
/// tiny non-adjacent fragments cannot make merging quadratic.
pub(crate) const MAX_FRAG_RANGES: usize = 64;

/// Capture-time interval between timeout sweeps, so that frequent `handle_timeout`
/// calls stay O(1) most of the time.
pub(crate) const SWEEP_INTERVAL_NS: i64 = 1_000_000_000;

/// Identity of one fragmented datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct FragKey {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub id: u32,
    pub proto: u8,
}

#[derive(Debug)]
struct FragBuf {
    first_ts: Timestamp,
    gen: u64,
    data: Vec<u8>,
    /// Sorted, disjoint, non-adjacent [start, end) ranges received.
    ranges: Vec<(usize, usize)>,
    total: Option<usize>,
}

/// Limits for the table (copied from the decoder configuration).
#[derive(Debug, Clone, Copy)]
pub(crate) struct FragLimits {
    pub max_buffers: usize,
    pub max_bytes: usize,
    pub timeout_ns: i64,
}

#[derive(Debug)]
pub(crate) struct FragTable {
    map: foldhash::HashMap<FragKey, FragBuf>,
    /// Insertion order for eviction; stale entries (gen mismatch) are skipped lazily.
    order: VecDeque<(FragKey, u64)>,
    next_gen: u64,
    next_sweep: i64,
    lim: FragLimits,
}

impl FragTable {
    pub(crate) fn new(lim: FragLimits) -> Self {
        FragTable {
            map: foldhash::HashMap::default(),
            order: VecDeque::new(),
            next_gen: 0,
            next_sweep: i64::MIN,
            lim,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Adds one fragment (`offset` in bytes into the fragmentable part, `more` = MF flag).
    /// Returns the reassembled payload once every byte is present.
    pub(crate) fn insert(
        &mut self,
        key: FragKey,
        offset: usize,
        more: bool,
        data: &[u8],
        ts: Timestamp,
        stats: &mut DecodeStats,
    ) -> Option<Vec<u8>> {
        let end = offset.saturating_add(data.len());
        if self.lim.max_buffers == 0 {
            stats.skip(SkipReason::FragmentEvicted);
            return None;
        }
        if end > self.lim.max_bytes {
            self.drop_invalid(&key, SkipReason::FragmentTooLarge, stats);
            return None;
        }
        if !self.map.contains_key(&key) {
            while self.map.len() >= self.lim.max_buffers {
                if !self.evict_oldest() {
                    break;
                }
                stats.skip(SkipReason::FragmentEvicted);
            }
            let gen = self.next_gen;
            self.next_gen = self.next_gen.wrapping_add(1);
            self.map.insert(
                key,
                FragBuf {
                    first_ts: ts,
                    gen,
                    data: Vec::new(),
                    ranges: Vec::new(),
                    total: None,
                },
            );
            self.order.push_back((key, gen));
            self.compact_order();
        }
        let buf = self.map.get_mut(&key)?;
        let consistent = match (more, buf.total) {
            (false, Some(t)) => t == end,
            (false, None) => buf.ranges.last().is_none_or(|r| r.1 <= end),
            (true, Some(t)) => end <= t,
            (true, None) => true,
        };
        if !consistent {
            self.drop_invalid(&key, SkipReason::FragmentInconsistent, stats);
            return None;
        }
        if !more {
            buf.total = Some(end);
        }
        if end > buf.data.len() {
            buf.data.resize(end, 0);
        }
        if let Some(dst) = buf.data.get_mut(offset..end) {
            dst.copy_from_slice(data);
        }
        if end > offset && !add_range(&mut buf.ranges, offset, end) {
            self.drop_invalid(&key, SkipReason::FragmentTooManyHoles, stats);
            return None;
        }
        stats.fragments_buffered += 1;
        let total = buf.total?;
        let complete = match buf.ranges.as_slice() {
            [] => total == 0,
            [(0, e)] => *e == total,
            _ => false,
        };
        if !complete {
            return None;
        }
        let mut done = self.map.remove(&key)?;
        done.data.truncate(total);
        stats.fragments_reassembled += 1;
        Some(done.data)
    }

    /// Expires entries older than the timeout (at most once per [`SWEEP_INTERVAL_NS`]).
    pub(crate) fn handle_timeout(&mut self, now: Timestamp, stats: &mut DecodeStats) {
        if now.0 < self.next_sweep {
            return;
        }
        self.next_sweep = now.0.saturating_add(SWEEP_INTERVAL_NS);
        let timeout = self.lim.timeout_ns;
        let before = self.map.len();
        self.map
            .retain(|_, b| now.0.saturating_sub(b.first_ts.0) <= timeout);
        for _ in self.map.len()..before {
            stats.skip(SkipReason::FragmentTimeout);
        }
        self.compact_order();
    }

    /// Gives up on `key`'s datagram (if buffered) because of fragment `why`: counted once.
    fn drop_invalid(&mut self, key: &FragKey, why: SkipReason, stats: &mut DecodeStats) {
        self.map.remove(key);
        stats.skip(why);
    }

    fn evict_oldest(&mut self) -> bool {
        while let Some((k, g)) = self.order.pop_front() {
            if self.map.get(&k).is_some_and(|b| b.gen == g) {
                self.map.remove(&k);
                return true;
            }
        }
        false
    }

    /// Drops stale order entries once they outnumber live ones (amortised O(1)).
    fn compact_order(&mut self) {
        if self.order.len() > 2 * self.map.len() + 64 {
            let map = &self.map;
            self.order
                .retain(|(k, g)| map.get(k).is_some_and(|b| b.gen == *g));
        }
    }
}

/// Inserts [start, end) into sorted disjoint `ranges`, merging overlaps and neighbours.
/// Returns false when the result would exceed [`MAX_FRAG_RANGES`].
fn add_range(ranges: &mut Vec<(usize, usize)>, start: usize, end: usize) -> bool {
    let (mut s, mut e) = (start, end);
    // First range that could touch [s, e): the first with r.1 >= s.
    let i = ranges.partition_point(|r| r.1 < s);
    let mut j = i;
    while let Some(r) = ranges.get(j) {
        if r.0 > e {
            break;
        }
        s = s.min(r.0);
        e = e.max(r.1);
        j += 1;
    }
    ranges.splice(i..j, std::iter::once((s, e)));
    ranges.len() <= MAX_FRAG_RANGES
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn key(id: u32) -> FragKey {
        FragKey {
            src: Ipv4Addr::new(1, 1, 1, 1).into(),
            dst: Ipv4Addr::new(2, 2, 2, 2).into(),
            id,
            proto: 17,
        }
    }

    fn table(max_buffers: usize) -> FragTable {
        FragTable::new(FragLimits {
            max_buffers,
            max_bytes: 70_000,
            timeout_ns: 5_000_000_000,
        })
    }

    #[test]
    fn ranges_merge() {
        let mut r = Vec::new();
        assert!(add_range(&mut r, 16, 24));
        assert!(add_range(&mut r, 0, 8));
        assert_eq!(r, vec![(0, 8), (16, 24)]);
        assert!(add_range(&mut r, 8, 16));
        assert_eq!(r, vec![(0, 24)]);
        assert!(add_range(&mut r, 4, 30));
        assert_eq!(r, vec![(0, 30)]);
        let mut r = Vec::new();
        let ok = (0..200).all(|i| add_range(&mut r, i * 16, i * 16 + 8));
        assert!(!ok);
    }

    #[test]
    fn out_of_order_duplicate_and_overlap() {
        let mut t = table(8);
        let mut st = DecodeStats::default();
        let payload: Vec<u8> = (0..40u8).collect();
        assert!(t
            .insert(key(1), 24, false, &payload[24..], Timestamp(0), &mut st)
            .is_none());
        assert!(t
            .insert(key(1), 8, true, &payload[8..24], Timestamp(0), &mut st)
            .is_none());
        assert!(t
            .insert(key(1), 8, true, &payload[8..16], Timestamp(0), &mut st)
            .is_none());
        let got = t
            .insert(key(1), 0, true, &payload[..16], Timestamp(0), &mut st)
            .unwrap();
        assert_eq!(got, payload);
        assert_eq!(t.len(), 0);
        assert_eq!(st.fragments_reassembled, 1);
        assert_eq!(st.fragments_buffered, 4);
    }

    #[test]
    fn inconsistent_and_oversized() {
        let mut t = table(8);
        let mut st = DecodeStats::default();
        assert!(t
            .insert(key(1), 8, false, &[0; 16], Timestamp(0), &mut st)
            .is_none());
        // Second "last fragment" ending elsewhere: invalid.
        assert!(t
            .insert(key(1), 16, false, &[0; 16], Timestamp(0), &mut st)
            .is_none());
        assert_eq!(st.skipped(SkipReason::FragmentInconsistent), 1);
        assert!(t
            .insert(key(2), 69_000, true, &[0; 2000], Timestamp(0), &mut st)
            .is_none());
        assert_eq!(st.skipped(SkipReason::FragmentTooLarge), 1);
        // Data past the end the last fragment set.
        t.insert(key(3), 16, false, &[0; 8], Timestamp(0), &mut st);
        t.insert(key(3), 16, true, &[0; 16], Timestamp(0), &mut st);
        assert_eq!(st.skipped(SkipReason::FragmentInconsistent), 2);
        assert_eq!(st.skipped_total(), 3);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn too_many_holes_is_named() {
        let mut t = table(8);
        let mut st = DecodeStats::default();
        for i in 0..MAX_FRAG_RANGES {
            t.insert(key(1), i * 16, true, &[0; 8], Timestamp(0), &mut st);
        }
        assert_eq!(t.len(), 1);
        assert_eq!(st.skipped_total(), 0);
        t.insert(
            key(1),
            MAX_FRAG_RANGES * 16,
            true,
            &[0; 8],
            Timestamp(0),
            &mut st,
        );
        assert_eq!(t.len(), 0);
        assert_eq!(st.skipped(SkipReason::FragmentTooManyHoles), 1);
        assert_eq!(st.skipped_total(), 1);
    }

    #[test]
    fn disabled_reassembly_counts_every_fragment_as_evicted() {
        let mut t = table(0);
        let mut st = DecodeStats::default();
        assert!(t
            .insert(key(1), 0, true, &[0; 8], Timestamp(0), &mut st)
            .is_none());
        assert_eq!(st.skipped(SkipReason::FragmentEvicted), 1);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn eviction_and_timeout() {
        let mut t = table(2);
        let mut st = DecodeStats::default();
        for id in 0..5 {
            t.insert(key(id), 8, true, &[0; 8], Timestamp(0), &mut st);
        }
        assert_eq!(t.len(), 2);
        assert_eq!(st.skipped(SkipReason::FragmentEvicted), 3);
        // The two youngest survive.
        assert!(t.map.contains_key(&key(4)) && t.map.contains_key(&key(3)));
        t.handle_timeout(Timestamp(1_000_000_000), &mut st);
        assert_eq!(t.len(), 2);
        t.handle_timeout(Timestamp(6_000_000_000), &mut st);
        assert_eq!(t.len(), 0);
        assert_eq!(st.skipped(SkipReason::FragmentTimeout), 2);
    }
}
