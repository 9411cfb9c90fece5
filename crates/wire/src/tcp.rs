//! TCP stream reassembly, one buffer per direction, cut into messages by a [`Framer`].
//!
//! Each direction (src, dst) learns its initial sequence number from the SYN, or from the
//! first segment seen when the capture starts mid-stream. In-order bytes are appended to
//! the direction's buffer and the framer runs after every append; out-of-order segments
//! are held (bounded in count and bytes); retransmitted bytes are dropped; sequence
//! numbers compare with serial (wrapping) arithmetic. A hole that never fills (segment
//! lost by the capture) is skipped when holding more would exceed the bounds or when the
//! oldest held segment is older than [`TCP_GAP_TIMEOUT_NS`].
//!
//! SIP over TLS cannot be decoded by a passive tap. A connection to or from
//! [`SIP_TLS_PORT`], or whose first payload is a TLS record header, is counted once as
//! [`SkipReason::TlsFlow`] (its bytes in [`DecodeStats::tls_bytes`]) and never reaches the
//! framer, so it is neither mistaken for garbage (`TcpNotOurs`) nor resynchronised on.

use std::collections::VecDeque;
use std::net::SocketAddr;

use crate::frag::SWEEP_INTERVAL_NS;
use crate::stats::{DecodeStats, SkipReason};
use crate::{Datagram, Framer, Framing, Timestamp, Transport};

/// How long out-of-order data may wait for a missing segment (capture time) before the
/// gap is skipped. Long enough for any real retransmission (RTO is at most a few seconds
/// in practice before the capture shows the retransmitted segment).
pub const TCP_GAP_TIMEOUT_NS: i64 = 3_000_000_000;

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;

/// The registered port of SIP over TLS (RFC 3261 §19.1.2, `sips:`).
pub const SIP_TLS_PORT: u16 = 5061;

/// Whether `p` starts with a TLS (or SSL 3.0) record header: content type change cipher
/// spec, alert, handshake or application data (20-23), then version 3.0-3.4. No SIP
/// message starts with these bytes (a SIP start line is ASCII text), so the check cannot
/// take a SIP flow for TLS; application data counts too for captures that start after the
/// handshake.
pub(crate) fn looks_like_tls(p: &[u8]) -> bool {
    matches!(p, [20..=23, 3, 0..=4, ..])
}

/// One direction of a TCP connection.
pub(crate) type FlowKey = (SocketAddr, SocketAddr);

#[derive(Debug)]
struct Held {
    seq: u32,
    data: Vec<u8>,
}

/// Bytes a flow may discard, line by line, while looking for the start of a message after
/// it lost its place (a skipped gap, or a capture that starts mid-stream). Past this the
/// flow is declared not ours (TLS, binary protocols started mid-stream end up here).
pub const TCP_RESYNC_BUDGET: usize = 64 * 1024;

/// Framer calls per resynchronisation attempt: bounds the work a hostile stream can cause
/// (each call may scan to the next line break).
const RESYNC_PROBES: usize = 512;

/// When the framer needs to run again (see [`Framing::NeedBytes`], [`Framing::NeedLine`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// On any new bytes.
    Any,
    /// Once the buffer holds this many bytes.
    Bytes(usize),
    /// Once new bytes contain a line feed.
    Line,
}

#[derive(Debug)]
struct Flow {
    gen: u64,
    /// Initial sequence number, when the SYN was seen (a retransmitted SYN is no new
    /// connection).
    isn: Option<u32>,
    /// Sequence number just past the FIN, once seen: the flow ends when all data before it
    /// has arrived (a FIN can overtake data in a capture).
    fin_at: Option<u32>,
    /// Bytes left to discard while resynchronising on a message start (0 = in sync).
    resync: usize,
    /// What the framer last said it is waiting for.
    wait: Wait,
    next_seq: u32,
    buf: Vec<u8>,
    held: Vec<Held>,
    held_bytes: usize,
    held_since: Timestamp,
    ignored: bool,
    /// Carries TLS (implies `ignored`): its payload bytes are counted, not framed.
    tls: bool,
    /// Whether a payload was seen yet (the first one is checked for a TLS record).
    seen_payload: bool,
    last_ts: Timestamp,
}

/// Limits for the table (copied from the decoder configuration).
#[derive(Debug, Clone, Copy)]
pub(crate) struct TcpLimits {
    pub max_flows: usize,
    pub max_buffer: usize,
    pub max_held: usize,
    pub idle_ns: i64,
}

/// Addressing of the segment being processed, copied into emitted datagrams.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Seg<'a> {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub seq: u32,
    pub flags: u8,
    pub payload: &'a [u8],
    pub ts: Timestamp,
    pub vlan: Option<u16>,
}

#[derive(Debug)]
pub(crate) struct TcpTable {
    map: foldhash::HashMap<FlowKey, Flow>,
    order: VecDeque<(FlowKey, u64)>,
    next_gen: u64,
    next_sweep: i64,
    lim: TcpLimits,
}

/// Serial-number difference `a - b` (RFC 1982 style), as a signed distance.
fn seq_diff(a: u32, b: u32) -> i32 {
    a.wrapping_sub(b) as i32
}

struct Sink<'o, 's> {
    src: SocketAddr,
    dst: SocketAddr,
    ts: Timestamp,
    vlan: Option<u16>,
    framer: Framer,
    stats: &'s mut DecodeStats,
    out: &'o mut dyn FnMut(Datagram<'_>),
}

impl TcpTable {
    pub(crate) fn new(lim: TcpLimits) -> Self {
        TcpTable {
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

    pub(crate) fn segment(
        &mut self,
        seg: Seg<'_>,
        framer: Framer,
        stats: &mut DecodeStats,
        out: &mut dyn FnMut(Datagram<'_>),
    ) {
        let key = (seg.src, seg.dst);
        let closing = seg.flags & (FIN | RST) != 0;
        let syn = seg.flags & SYN != 0;
        let data_seq = if syn {
            seg.seq.wrapping_add(1)
        } else {
            seg.seq
        };
        match self.map.get_mut(&key) {
            Some(f) if f.ignored => {
                if f.tls {
                    stats.tls_bytes = stats.tls_bytes.wrapping_add(seg.payload.len() as u64);
                }
                if closing {
                    self.map.remove(&key);
                } else {
                    f.last_ts = seg.ts;
                }
                return;
            }
            Some(f) => {
                if syn && f.isn != Some(seg.seq) {
                    // New connection reusing the 4-tuple (or a SYN after mid-stream start);
                    // a retransmitted SYN (same ISN) changes nothing.
                    f.buf.clear();
                    f.held.clear();
                    f.held_bytes = 0;
                    f.next_seq = data_seq;
                    f.isn = Some(seg.seq);
                    f.fin_at = None;
                    f.resync = 0;
                    f.wait = Wait::Any;
                }
            }
            None => {
                if seg.flags & RST != 0 || (seg.payload.is_empty() && !syn) {
                    return;
                }
                if self.lim.max_flows == 0 {
                    stats.skip(SkipReason::TcpFlowsEvicted);
                    return;
                }
                while self.map.len() >= self.lim.max_flows {
                    if !self.evict_oldest() {
                        break;
                    }
                    stats.skip(SkipReason::TcpFlowsEvicted);
                }
                let gen = self.next_gen;
                self.next_gen = self.next_gen.wrapping_add(1);
                self.map.insert(
                    key,
                    Flow {
                        gen,
                        isn: syn.then_some(seg.seq),
                        fin_at: None,
                        // Without the SYN we may be mid-message: find a start first.
                        resync: if syn { 0 } else { TCP_RESYNC_BUDGET },
                        wait: Wait::Any,
                        next_seq: data_seq,
                        buf: Vec::new(),
                        held: Vec::new(),
                        held_bytes: 0,
                        held_since: seg.ts,
                        ignored: false,
                        tls: false,
                        seen_payload: false,
                        last_ts: seg.ts,
                    },
                );
                self.order.push_back((key, gen));
                if self.order.len() > 2 * self.map.len() + 64 {
                    let map = &self.map;
                    self.order
                        .retain(|(k, g)| map.get(k).is_some_and(|f| f.gen == *g));
                }
            }
        }
        let lim = self.lim;
        let Some(flow) = self.map.get_mut(&key) else {
            return;
        };
        flow.last_ts = seg.ts;
        let first_payload = !flow.seen_payload && !seg.payload.is_empty();
        flow.seen_payload |= first_payload;
        let tls_port = seg.src.port() == SIP_TLS_PORT || seg.dst.port() == SIP_TLS_PORT;
        if !flow.ignored && (tls_port || (first_payload && looks_like_tls(seg.payload))) {
            flow.ignored = true;
            flow.tls = true;
            flow.buf = Vec::new();
            flow.held = Vec::new();
            flow.held_bytes = 0;
            stats.tls_bytes = stats.tls_bytes.wrapping_add(seg.payload.len() as u64);
            // One connection, two directions: count it when the first of them is marked.
            let reverse_tls = self.map.get(&(seg.dst, seg.src)).is_some_and(|r| r.tls);
            if !reverse_tls {
                stats.skip(SkipReason::TlsFlow);
            }
            if closing {
                self.map.remove(&key);
            }
            return;
        }
        if !seg.payload.is_empty() {
            let mut sink = Sink {
                src: seg.src,
                dst: seg.dst,
                ts: seg.ts,
                vlan: seg.vlan,
                framer,
                stats,
                out,
            };
            accept(flow, data_seq, seg.payload, &lim, &mut sink);
        }
        if seg.flags & RST != 0 {
            self.map.remove(&key);
            return;
        }
        if seg.flags & FIN != 0 {
            let end = data_seq.wrapping_add(seg.payload.len() as u32);
            flow.fin_at = Some(end);
        }
        // Done once everything up to the FIN arrived; until then data may still be in flight
        // (captures reorder), and the idle timeout frees the flow if it never comes.
        if flow.fin_at.is_some_and(|f| seq_diff(flow.next_seq, f) >= 0) {
            self.map.remove(&key);
        }
    }

    /// Frees flows idle for longer than the idle timeout (at most once per sweep interval).
    pub(crate) fn handle_timeout(&mut self, now: Timestamp, stats: &mut DecodeStats) {
        if now.0 < self.next_sweep {
            return;
        }
        self.next_sweep = now.0.saturating_add(SWEEP_INTERVAL_NS);
        let idle = self.lim.idle_ns;
        self.map.retain(|_, f| {
            // A closed flow still waiting for data before its FIN waits only as long as a
            // gap would be held; an open one until the idle timeout.
            let limit = if f.fin_at.is_some() {
                TCP_GAP_TIMEOUT_NS
            } else {
                idle
            };
            let keep = now.0.saturating_sub(f.last_ts.0) <= limit;
            if !keep && (!f.buf.is_empty() || !f.held.is_empty()) {
                stats.skip(SkipReason::TcpIdleTimeout);
            }
            keep
        });
        let map = &self.map;
        self.order
            .retain(|(k, g)| map.get(k).is_some_and(|f| f.gen == *g));
    }

    fn evict_oldest(&mut self) -> bool {
        while let Some((k, g)) = self.order.pop_front() {
            if self.map.get(&k).is_some_and(|f| f.gen == g) {
                self.map.remove(&k);
                return true;
            }
        }
        false
    }
}

/// Handles the payload of one segment starting at sequence number `seq`.
fn accept(flow: &mut Flow, seq: u32, data: &[u8], lim: &TcpLimits, sink: &mut Sink<'_, '_>) {
    let diff = seq_diff(seq, flow.next_seq);
    if diff > 0 {
        // Future data: hold it while a missing segment may still arrive.
        if flow.held.is_empty() {
            flow.held_since = sink.ts;
        }
        let fits = flow.held.len() < lim.max_held
            && flow.held_bytes.saturating_add(data.len()) <= lim.max_buffer;
        if fits {
            flow.held.push(Held {
                seq,
                data: data.to_vec(),
            });
            flow.held_bytes += data.len();
        }
        let stale = sink.ts.0.saturating_sub(flow.held_since.0) > TCP_GAP_TIMEOUT_NS;
        if !fits || stale {
            skip_gap(flow, if fits { None } else { Some(seq) }, lim, sink);
            if !fits && !flow.ignored {
                // The segment we could not hold now starts at or after next_seq.
                accept(flow, seq, data, lim, sink);
            }
        }
        return;
    }
    let dup = diff.unsigned_abs() as usize;
    if let Some(fresh) = data.get(dup..).filter(|d| !d.is_empty()) {
        append(flow, fresh, lim, sink);
        drain_held(flow, lim, sink);
        // The stream moved: whatever is still held waits from now, so sustained mild
        // reordering is never mistaken for a lost segment.
        flow.held_since = sink.ts;
    }
}

/// Gives up on the missing bytes before the earliest held segment (or `extra`).
fn skip_gap(flow: &mut Flow, extra: Option<u32>, lim: &TcpLimits, sink: &mut Sink<'_, '_>) {
    let mut earliest = extra;
    for h in &flow.held {
        earliest = Some(match earliest {
            Some(e) if seq_diff(e, h.seq) <= 0 => e,
            _ => h.seq,
        });
    }
    let Some(start) = earliest else { return };
    sink.stats.skip(SkipReason::TcpGapSkipped);
    // The buffered prefix belongs to a message whose rest is lost, and the bytes after the
    // gap may start mid-message: resynchronise on the next message start.
    flow.buf.clear();
    flow.wait = Wait::Any;
    flow.resync = TCP_RESYNC_BUDGET;
    flow.next_seq = start;
    drain_held(flow, lim, sink);
}

/// Appends every held segment that has become contiguous.
fn drain_held(flow: &mut Flow, lim: &TcpLimits, sink: &mut Sink<'_, '_>) {
    while !flow.ignored {
        let next = flow.next_seq;
        let Some(i) = flow.held.iter().position(|h| seq_diff(h.seq, next) <= 0) else {
            break;
        };
        let h = flow.held.swap_remove(i);
        flow.held_bytes = flow.held_bytes.saturating_sub(h.data.len());
        let dup = seq_diff(next, h.seq).unsigned_abs() as usize;
        if let Some(fresh) = h.data.get(dup..).filter(|d| !d.is_empty()) {
            append(flow, fresh, lim, sink);
        }
    }
    if flow.held.is_empty() {
        flow.held_since = sink.ts;
    }
}

/// Appends in-order bytes and runs the framer.
fn append(flow: &mut Flow, data: &[u8], lim: &TcpLimits, sink: &mut Sink<'_, '_>) {
    flow.next_seq = flow.next_seq.wrapping_add(data.len() as u32);
    if flow.ignored {
        return;
    }
    if flow.buf.len().saturating_add(data.len()) > lim.max_buffer {
        // The framer never found the end of a message: drop what we have and let the
        // framer resynchronise on the new bytes (it may skip to a start or say NotOurs).
        sink.stats.skip(SkipReason::TcpBufferOverflow);
        flow.buf.clear();
        flow.wait = Wait::Any;
        if data.len() > lim.max_buffer {
            return;
        }
    }
    flow.buf.extend_from_slice(data);
    let due = match flow.wait {
        Wait::Any => true,
        Wait::Bytes(n) => flow.buf.len() >= n,
        Wait::Line => data.contains(&b'\n'),
    };
    if due {
        run_framer(flow, sink);
    }
}

/// The stream does not carry the framer's protocol: stop tracking it (counted once).
fn not_ours(flow: &mut Flow, sink: &mut Sink<'_, '_>) {
    sink.stats.skip(SkipReason::TcpNotOurs);
    flow.ignored = true;
    flow.buf = Vec::new();
    flow.held = Vec::new();
    flow.held_bytes = 0;
}

fn run_framer(flow: &mut Flow, sink: &mut Sink<'_, '_>) {
    flow.wait = Wait::Any;
    let mut start = 0usize;
    while let Some(avail) = flow.buf.get(start..).filter(|a| !a.is_empty()) {
        match (sink.framer)(avail) {
            Framing::Message(n) if n > 0 && n <= avail.len() => {
                flow.resync = 0;
                if let Some(msg) = avail.get(..n) {
                    sink.stats.datagrams += 1;
                    (sink.out)(Datagram {
                        ts: sink.ts,
                        src: sink.src,
                        dst: sink.dst,
                        transport: Transport::Tcp,
                        vlan: sink.vlan,
                        payload: msg,
                    });
                }
                start += n;
            }
            Framing::Skip(n) if n > 0 && n <= avail.len() => start += n,
            Framing::NotOurs if flow.resync > 0 => {
                // Lost our place: move to the next position the framer accepts as a
                // possible message start (a line start, or any upper-case letter: a message
                // may follow a body that has no final line break). Bounded by RESYNC_PROBES
                // framer calls and the flow's budget. The framer cannot always tell a cut
                // or junk-prefixed start line from an extension method, so the first message
                // after a resync may carry a few junk bytes; every later one is exact.
                let next = avail
                    .windows(2)
                    .enumerate()
                    .filter(|(_, w)| matches!(w, [prev, cur] if *prev == b'\n' || cur.is_ascii_uppercase()))
                    .map(|(i, _)| i + 1)
                    .take(RESYNC_PROBES)
                    .find(|&p| avail.get(p..).is_some_and(|rest| (sink.framer)(rest) != Framing::NotOurs));
                let dropped = next.unwrap_or(avail.len());
                start += dropped;
                flow.resync = flow.resync.saturating_sub(dropped);
                if flow.resync == 0 {
                    return not_ours(flow, sink);
                }
            }
            Framing::NotOurs => return not_ours(flow, sink),
            // Relative to `avail`, which becomes the buffer start once `start` is drained.
            Framing::NeedBytes(n) => {
                flow.wait = Wait::Bytes(n);
                break;
            }
            Framing::NeedLine => {
                flow.wait = Wait::Line;
                break;
            }
            // Incomplete, or a framer bug (zero / overlong length): wait for more bytes.
            _ => break,
        }
    }
    if start > 0 {
        flow.buf.drain(..start.min(flow.buf.len()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    fn lines(b: &[u8]) -> Framing {
        match b.iter().position(|&c| c == b'\n') {
            Some(i) => Framing::Message(i + 1),
            None => Framing::Incomplete,
        }
    }

    fn addr(p: u16) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), p)
    }

    fn lim() -> TcpLimits {
        TcpLimits {
            max_flows: 4,
            max_buffer: 1024,
            max_held: 4,
            idle_ns: 10_000_000_000,
        }
    }

    fn feed(t: &mut TcpTable, st: &mut DecodeStats, seq: u32, flags: u8, p: &[u8]) -> Vec<String> {
        feed_at(t, st, seq, flags, p, 0)
    }

    fn feed_at(
        t: &mut TcpTable,
        st: &mut DecodeStats,
        seq: u32,
        flags: u8,
        p: &[u8],
        ts: i64,
    ) -> Vec<String> {
        let mut v = Vec::new();
        let seg = Seg {
            src: addr(1),
            dst: addr(2),
            seq,
            flags,
            payload: p,
            ts: Timestamp(ts),
            vlan: None,
        };
        t.segment(seg, lines, st, &mut |d| {
            v.push(String::from_utf8_lossy(d.payload).into())
        });
        v
    }

    #[test]
    fn wraparound_and_retransmit() {
        let mut t = TcpTable::new(lim());
        let mut st = DecodeStats::default();
        let isn = u32::MAX - 3;
        assert!(feed(&mut t, &mut st, isn, SYN, b"").is_empty());
        assert!(feed(&mut t, &mut st, isn.wrapping_add(1), 0, b"ab").is_empty());
        assert_eq!(
            feed(&mut t, &mut st, isn.wrapping_add(3), 0, b"c\nde"),
            vec!["abc\n"]
        );
        // Retransmission overlapping old and new bytes.
        assert_eq!(
            feed(&mut t, &mut st, isn.wrapping_add(3), 0, b"c\ndef\n"),
            vec!["def\n"]
        );
        assert!(feed(&mut t, &mut st, isn.wrapping_add(1), 0, b"abc\n").is_empty());
        assert_eq!(t.len(), 1);
        feed(&mut t, &mut st, isn.wrapping_add(9), FIN, b"");
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn gap_skipped_when_held_bound_exceeded() {
        let mut t = TcpTable::new(lim());
        let mut st = DecodeStats::default();
        assert!(feed(&mut t, &mut st, 100, 0, b"partial").is_empty());
        // bytes 107..110 lost; later segments are held, then the gap is skipped.
        let mut got = Vec::new();
        for i in 0..6u32 {
            got.extend(feed(&mut t, &mut st, 110 + i * 3, 0, b"x\nz"));
        }
        assert_eq!(st.skipped(SkipReason::TcpGapSkipped), 1);
        assert_eq!(got.first().map(String::as_str), Some("x\n"));
        assert!(got.iter().all(|s| !s.contains("partial")));
    }

    #[test]
    fn gap_skipped_after_timeout() {
        let mut t = TcpTable::new(lim());
        let mut st = DecodeStats::default();
        feed_at(&mut t, &mut st, 1, 0, b"a", 0);
        assert!(feed_at(&mut t, &mut st, 10, 0, b"late\n", 1).is_empty());
        let got = feed_at(&mut t, &mut st, 15, 0, b"x\n", TCP_GAP_TIMEOUT_NS + 2);
        assert_eq!(got, vec!["late\n", "x\n"]);
        assert_eq!(st.skipped(SkipReason::TcpGapSkipped), 1);
    }

    #[test]
    fn not_ours_and_overflow_and_eviction() {
        fn never(_: &[u8]) -> Framing {
            Framing::NotOurs
        }
        let mut t = TcpTable::new(lim());
        let mut st = DecodeStats::default();
        let seg = |p: u16, payload: &'static [u8]| Seg {
            src: addr(p),
            dst: addr(2),
            seq: 0,
            flags: 0,
            payload,
            ts: Timestamp(0),
            vlan: None,
        };
        // With its SYN seen the flow is in sync: the first NotOurs ends it.
        let mut syn = seg(9, b"");
        syn.flags = SYN;
        t.segment(syn, never, &mut st, &mut |_| {});
        let mut data = seg(9, b"zzz");
        data.seq = 1;
        t.segment(data, never, &mut st, &mut |_| {});
        t.segment(data, never, &mut st, &mut |_| {});
        assert_eq!(st.skipped(SkipReason::TcpNotOurs), 1);
        // Without it (capture started mid-stream) it first looks for a message start, and
        // gives up once the resync budget is spent.
        let mid = vec![b'z'; TCP_RESYNC_BUDGET + 10];
        let mut s = seg(8, b"");
        let mut big_lim = lim();
        big_lim.max_buffer = 2 * TCP_RESYNC_BUDGET;
        let mut t2 = TcpTable::new(big_lim);
        s.payload = &mid;
        t2.segment(s, never, &mut st, &mut |_| {});
        assert_eq!(st.skipped(SkipReason::TcpNotOurs), 2);
        // Overflow: 1024-byte cap, no newline ever.
        let big = [b'a'; 600];
        let mut n = 0;
        for i in 0..3u32 {
            let mut s = seg(1, b"");
            s.payload = &big;
            s.seq = i * 600;
            t.segment(s, lines, &mut st, &mut |_| n += 1);
        }
        assert_eq!(n, 0);
        assert!(st.skipped(SkipReason::TcpBufferOverflow) >= 1);
        for p in 10..20 {
            t.segment(seg(p, b"q"), lines, &mut st, &mut |_| {});
        }
        assert_eq!(t.len(), 4);
        assert_eq!(st.skipped(SkipReason::TcpFlowsEvicted), 8);
        t.handle_timeout(Timestamp(20_000_000_000), &mut st);
        assert_eq!(t.len(), 0);
        assert!(st.skipped(SkipReason::TcpIdleTimeout) >= 1);
    }

    #[test]
    fn framer_waits_are_honoured() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static CALLS: AtomicUsize = AtomicUsize::new(0);
        // A length-prefixed toy protocol: "<len>\n" then len bytes; the header line needs a
        // line feed, the body a known length.
        fn toy(b: &[u8]) -> Framing {
            CALLS.fetch_add(1, Ordering::Relaxed);
            let Some(nl) = b.iter().position(|&c| c == b'\n') else {
                return Framing::NeedLine;
            };
            let len: usize = std::str::from_utf8(&b[..nl])
                .ok()
                .and_then(|t| t.parse().ok())
                .unwrap_or(0);
            let total = nl + 1 + len;
            if b.len() < total {
                Framing::NeedBytes(total)
            } else {
                Framing::Message(total)
            }
        }
        let mut big = lim();
        big.max_buffer = 4096;
        let mut t = TcpTable::new(big);
        let mut st = DecodeStats::default();
        let mut msg = b"1000\n".to_vec();
        msg.extend(std::iter::repeat_n(b'x', 1000));
        let mut got = 0;
        let mut syn = Seg {
            src: addr(1),
            dst: addr(2),
            seq: 0,
            flags: SYN,
            payload: b"",
            ts: Timestamp(0),
            vlan: None,
        };
        t.segment(syn, toy, &mut st, &mut |_| {});
        // One byte per segment: 1005 segments.
        for (i, b) in msg.iter().enumerate() {
            syn.flags = 0;
            syn.seq = 1 + i as u32;
            syn.payload = std::slice::from_ref(b);
            t.segment(syn, toy, &mut st, &mut |d| {
                assert_eq!(d.payload.len(), 1005);
                got += 1;
            });
        }
        assert_eq!(got, 1);
        // First byte (nothing known yet), the line feed, the last body byte: 3 calls, not 1005.
        assert_eq!(CALLS.load(Ordering::Relaxed), 3, "framer calls");
    }
}
