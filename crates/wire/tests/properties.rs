//! Randomized property tests for the decoder's stateful reassembly: TCP streams
//! (reordering, retransmissions with partial overlaps, sequence wraparound, capture
//! starting mid-stream, loss and gap skipping) and IPv4/IPv6 fragment reassembly with its
//! table bounds.
//!
//! No proptest: a tiny seeded splitmix64 PRNG drives every case, seeds are derived from a
//! fixed base per property so runs are deterministic. A failing case prints its seed;
//! rerun only that case with `PROP_SEED=<seed> cargo test -p vcontap-wire --test properties`.
//! `PROP_CASES=<n>` overrides the number of cases per property (for longer soak runs).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};

use vcontap_wire::{
    Datagram, Decoder, DecoderConfig, Framing, LinkType, RawPacket, SkipReason, Timestamp,
    Transport, TCP_GAP_TIMEOUT_NS,
};

// ---------- PRNG and case runner ----------

/// splitmix64: tiny, fast, good enough to drive test-case generation.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (0 when `n == 0`).
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }
    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }
    /// True with probability `pct` percent.
    fn pct(&mut self, pct: usize) -> bool {
        self.below(100) < pct
    }
    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

fn parse_seed(s: &str) -> Option<u64> {
    let s = s.trim();
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

/// Runs `prop` for `cases` deterministic seeds (or only `$PROP_SEED`), printing the seed
/// of a failing case before re-raising its panic.
fn check(name: &str, base: u64, cases: u64, prop: impl Fn(&mut Rng)) {
    let seeds: Vec<u64> = match std::env::var("PROP_SEED").ok().and_then(|s| parse_seed(&s)) {
        Some(s) => vec![s],
        None => {
            let n = std::env::var("PROP_CASES")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(cases);
            (0..n)
                .map(|i| base ^ i.wrapping_mul(0xD1B5_4A32_D192_ED03))
                .collect()
        }
    };
    for seed in seeds {
        let r = catch_unwind(AssertUnwindSafe(|| prop(&mut Rng(seed))));
        if let Err(e) = r {
            eprintln!(
                "property `{name}` failed for seed {seed:#018x}; rerun with PROP_SEED={seed:#x}"
            );
            resume_unwind(e);
        }
    }
}

// ---------- frame builders ----------

fn eth(vlan: Option<u16>, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
    if let Some(id) = vlan {
        v.extend_from_slice(&0x8100u16.to_be_bytes());
        v.extend_from_slice(&id.to_be_bytes());
    }
    v.extend_from_slice(&ethertype.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, id: u16, fo: u16, payload: &[u8]) -> Vec<u8> {
    let total = u16::try_from(20 + payload.len()).expect("IPv4 packet too large for test");
    let mut v = vec![0x45, 0];
    v.extend_from_slice(&total.to_be_bytes());
    v.extend_from_slice(&id.to_be_bytes());
    v.extend_from_slice(&fo.to_be_bytes());
    v.extend_from_slice(&[64, proto, 0, 0]);
    v.extend_from_slice(&src.octets());
    v.extend_from_slice(&dst.octets());
    v.extend_from_slice(payload);
    v
}

fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, nh: u8, payload: &[u8]) -> Vec<u8> {
    let plen = u16::try_from(payload.len()).expect("IPv6 payload too large for test");
    let mut v = vec![0x60, 0, 0, 0];
    v.extend_from_slice(&plen.to_be_bytes());
    v.extend_from_slice(&[nh, 64]);
    v.extend_from_slice(&src.octets());
    v.extend_from_slice(&dst.octets());
    v.extend_from_slice(payload);
    v
}

/// An unfragmented IP packet of the family of `src`/`dst`, in an Ethernet frame.
fn ip_frame(vlan: Option<u16>, src: IpAddr, dst: IpAddr, proto: u8, payload: &[u8]) -> Vec<u8> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => eth(vlan, 0x0800, &ipv4(s, d, proto, 7, 0, payload)),
        (IpAddr::V6(s), IpAddr::V6(d)) => eth(vlan, 0x86DD, &ipv6(s, d, proto, payload)),
        _ => panic!("mixed address families"),
    }
}

fn udp(sp: u16, dp: u16, payload: &[u8]) -> Vec<u8> {
    let len = u16::try_from(8 + payload.len()).expect("UDP datagram too large for test");
    let mut v = Vec::new();
    v.extend_from_slice(&sp.to_be_bytes());
    v.extend_from_slice(&dp.to_be_bytes());
    v.extend_from_slice(&len.to_be_bytes());
    v.extend_from_slice(&[0, 0]);
    v.extend_from_slice(payload);
    v
}

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

fn tcp(sp: u16, dp: u16, seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&sp.to_be_bytes());
    v.extend_from_slice(&dp.to_be_bytes());
    v.extend_from_slice(&seq.to_be_bytes());
    v.extend_from_slice(&[0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    v.extend_from_slice(payload);
    v
}

#[derive(Debug, Clone, PartialEq)]
struct Out {
    transport: Transport,
    src: SocketAddr,
    dst: SocketAddr,
    vlan: Option<u16>,
    ts: Timestamp,
    payload: Vec<u8>,
}

fn feed(dec: &mut Decoder, frame: &[u8], ts: i64) -> Vec<Out> {
    let pkt = RawPacket {
        ts: Timestamp(ts),
        link: LinkType::ETHERNET,
        data: frame,
        orig_len: frame.len() as u32,
    };
    let mut v = Vec::new();
    dec.decode(&pkt, &mut |d: Datagram<'_>| {
        v.push(Out {
            transport: d.transport,
            src: d.src,
            dst: d.dst,
            vlan: d.vlan,
            ts: d.ts,
            payload: d.payload.to_vec(),
        })
    });
    for o in &v {
        assert_eq!(
            o.ts,
            Timestamp(ts),
            "datagram carries its frame's timestamp"
        );
    }
    v
}

fn random_ips(rng: &mut Rng) -> (IpAddr, IpAddr) {
    if rng.pct(50) {
        let a = Ipv4Addr::from(rng.next_u64() as u32 | 0x0100_0000);
        let mut b = Ipv4Addr::from(rng.next_u64() as u32 | 0x0100_0000);
        if a == b {
            b = Ipv4Addr::from(u32::from(a) ^ 1);
        }
        (a.into(), b.into())
    } else {
        let a = Ipv6Addr::from(u128::from(rng.next_u64()) << 64 | u128::from(rng.next_u64()));
        let b = Ipv6Addr::from(!u128::from(a));
        (a.into(), b.into())
    }
}

fn random_vlan(rng: &mut Rng) -> Option<u16> {
    rng.pct(30).then(|| rng.range(1, 4094) as u16)
}

// ---------- TCP: a resynchronising test framer ----------

/// Messages are `<` + bytes without `<`/`>` + `>`; anything else between them is noise.
/// The framer skips to the next `<`, so it resynchronises after a gap: a payload that is
/// not exactly one original message can only come from the reassembly splicing bytes.
fn angle(b: &[u8]) -> Framing {
    match b.iter().position(|&c| c == b'<') {
        Some(0) => match b.iter().position(|&c| c == b'>') {
            Some(i) => Framing::Message(i + 1),
            None => Framing::Incomplete,
        },
        Some(i) => Framing::Skip(i),
        None if b.is_empty() => Framing::Incomplete,
        None => Framing::Skip(b.len()),
    }
}

/// A byte stream of `n` angle messages (unique by their index) with optional noise in
/// between; returns the stream and each message's `[start, end)`.
fn angle_stream(rng: &mut Rng, n: usize, big: bool) -> (Vec<u8>, Vec<(usize, usize)>) {
    let mut s = Vec::new();
    let mut msgs = Vec::new();
    for i in 0..n {
        if rng.pct(25) {
            for _ in 0..rng.range(1, 4) {
                s.push(b"\r\n \t"[rng.below(4)]);
            }
        }
        let start = s.len();
        s.push(b'<');
        s.extend_from_slice(format!("{i}:").as_bytes());
        let len = if big && rng.pct(8) {
            rng.range(200, 20_000)
        } else {
            rng.below(200)
        };
        s.extend(rng.bytes(len).into_iter().map(|c| match c {
            b'<' | b'>' => b'.',
            c => c,
        }));
        s.push(b'>');
        msgs.push((start, s.len()));
    }
    (s, msgs)
}

/// Cuts `[0, total)` into consecutive segments of 1..=max_seg bytes.
fn cut(rng: &mut Rng, total: usize, max_seg: usize) -> Vec<(usize, usize)> {
    let mut v = Vec::new();
    let mut at = 0;
    while at < total {
        let end = (at + rng.range(1, max_seg)).min(total);
        v.push((at, end));
        at = end;
    }
    v
}

/// Delivery order of the segments plus retransmissions: each segment is displaced by less
/// than `window` positions; with probability `dup_pct` a retransmission follows within
/// `window` positions: the same segment, a range covering parts of it and its successor,
/// or older data. Returns byte ranges in delivery order.
fn deliveries(
    rng: &mut Rng,
    segs: &[(usize, usize)],
    window: usize,
    dup_pct: usize,
) -> Vec<(usize, usize)> {
    let mut keyed: Vec<(usize, usize, (usize, usize))> = Vec::new();
    for (i, &s) in segs.iter().enumerate() {
        let key = (i + rng.below(window)) * 2;
        keyed.push((key, keyed.len(), s));
        if rng.pct(dup_pct) {
            let r = match rng.below(3) {
                0 => s,
                1 => {
                    let hi = segs[(i + 1).min(segs.len() - 1)].1;
                    let a = rng.range(s.0, s.1 - 1);
                    let b = rng.range(a + 1, hi.min(a + 1500));
                    (a, b)
                }
                _ => {
                    let lo = segs[i.saturating_sub(3)].0;
                    let a = rng.range(lo, s.1 - 1);
                    let b = rng.range(a + 1, s.1.min(a + 1500));
                    (a, b)
                }
            };
            let key = (i + rng.below(window + 1)) * 2 + 1;
            keyed.push((key, keyed.len(), r));
        }
    }
    keyed.sort_by_key(|&(k, n, _)| (k, n));
    keyed.into_iter().map(|(_, _, r)| r).collect()
}

/// One direction of a TCP connection under test.
struct TcpFlow {
    src: SocketAddr,
    dst: SocketAddr,
    vlan: Option<u16>,
    /// Sequence number of stream byte 0.
    base: u32,
    /// The SYN's sequence number, when the capture saw the handshake.
    syn: Option<u32>,
    stream: Vec<u8>,
    msgs: Vec<(usize, usize)>,
    /// Messages the decoder must emit, in order (indices into `msgs`).
    expect: Vec<usize>,
    /// Next index into `expect`.
    got: usize,
}

impl TcpFlow {
    fn frame(&self, seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
        let t = tcp(self.src.port(), self.dst.port(), seq, flags | ACK, payload);
        ip_frame(self.vlan, self.src.ip(), self.dst.ip(), 6, &t)
    }
    fn data(&self, (a, b): (usize, usize)) -> Vec<u8> {
        self.frame(self.base.wrapping_add(a as u32), 0, &self.stream[a..b])
    }
    fn syn_frame(&self) -> Option<Vec<u8>> {
        self.syn.map(|s| self.frame(s, SYN, &[]))
    }
    fn fin_frame(&self) -> Vec<u8> {
        let end = self.base.wrapping_add(self.stream.len() as u32);
        self.frame(end, FIN, &[])
    }
    /// Checks one emitted datagram against the next expected message.
    fn accept(&mut self, o: &Out) {
        assert_eq!(o.transport, Transport::Tcp);
        assert_eq!(o.vlan, self.vlan);
        let Some(&want) = self.expect.get(self.got) else {
            panic!(
                "unexpected extra message {:?}",
                String::from_utf8_lossy(&o.payload[..o.payload.len().min(40)])
            );
        };
        let (a, b) = self.msgs[want];
        if o.payload != self.stream[a..b] {
            let pos = self
                .msgs
                .iter()
                .position(|&(a, b)| self.stream[a..b] == o.payload);
            panic!(
                "message #{} of the flow should be original #{want} ({} bytes), got {} bytes \
                 ({}): {:?}",
                self.got,
                b - a,
                o.payload.len(),
                match pos {
                    Some(p) => format!("original #{p}, out of order or duplicated"),
                    None => "not an original message: corrupted splice".into(),
                },
                String::from_utf8_lossy(&o.payload[..o.payload.len().min(40)])
            );
        }
        self.got += 1;
    }
    fn finish(&self) {
        assert_eq!(
            self.got,
            self.expect.len(),
            "flow {} -> {} emitted {} of {} expected messages",
            self.src,
            self.dst,
            self.got,
            self.expect.len()
        );
    }
}

/// A random flow: addresses, ISN (often just below the wrap), SYN seen or not.
fn random_flow(rng: &mut Rng, src: SocketAddr, dst: SocketAddr, stream_len: usize) -> TcpFlow {
    let isn = match rng.below(3) {
        0 => u32::MAX - rng.below(stream_len + 2) as u32,
        1 => u32::MAX - rng.below(4) as u32,
        _ => rng.next_u64() as u32,
    };
    let with_syn = rng.pct(50);
    TcpFlow {
        src,
        dst,
        vlan: None,
        base: if with_syn { isn.wrapping_add(1) } else { isn },
        syn: with_syn.then_some(isn),
        stream: Vec::new(),
        msgs: Vec::new(),
        expect: Vec::new(),
        got: 0,
    }
}

fn tcp_decoder() -> Decoder {
    Decoder::new(DecoderConfig {
        tcp_framer: Some(angle),
        ..DecoderConfig::default()
    })
}

/// Routes every emitted datagram to its flow (by addresses) and checks it.
fn dispatch(flows: &mut [TcpFlow], outs: &[Out]) {
    for o in outs {
        let f = flows
            .iter_mut()
            .find(|f| f.src == o.src && f.dst == o.dst)
            .unwrap_or_else(|| panic!("datagram with unknown addresses {} -> {}", o.src, o.dst));
        f.accept(o);
    }
}

/// Max segment size for a stream, so that a case stays at a few thousand segments.
fn seg_size(rng: &mut Rng, total: usize) -> usize {
    let floor = total / 1500 + 1;
    match rng.below(4) {
        0 => rng.range(floor.max(1), 40.max(floor)),
        1 => rng.range(floor.max(100), 600.max(floor)),
        _ => rng.range(floor.max(536), 1500),
    }
}

/// Property 1: reordering, duplication, partial overlaps and wraparound never change the
/// message sequence of a direction, with or without the SYN, on one or two interleaved
/// directions.
#[test]
fn tcp_reassembly_is_exact_under_reordering_and_retransmission() {
    check("tcp_reassembly_exact", 0x7C9_0001, 300, |rng| {
        let (ia, ib) = random_ips(rng);
        let a = SocketAddr::new(ia, rng.range(1024, 65535) as u16);
        let b = SocketAddr::new(ib, 5060);
        let vlan = random_vlan(rng);
        let nflows = rng.range(1, 2);
        let mut flows = Vec::new();
        let mut plans = Vec::new();
        for k in 0..nflows {
            let (src, dst) = if k == 0 { (a, b) } else { (b, a) };
            let n = rng.range(1, 30);
            let (stream, msgs) = angle_stream(rng, n, true);
            let mut f = random_flow(rng, src, dst, stream.len());
            f.vlan = vlan;
            let max_seg = seg_size(rng, stream.len());
            let segs = cut(rng, stream.len(), max_seg);
            let window = rng.range(1, 8);
            let dup = rng.below(30);
            let mut plan = deliveries(rng, &segs, window, dup);
            // Without the SYN the first segment seen defines the stream start: the capture
            // begins at segment `c`; earlier originals were before the capture (old
            // retransmissions of them may still show up and must be ignored).
            let start = if f.syn.is_none() {
                let c = rng.below(segs.len());
                let first = segs[c];
                plan.retain(|&r| {
                    // Originals before the capture start are gone, except rare old
                    // retransmissions of them.
                    r != first && (r.0 >= first.0 || segs.binary_search(&r).is_err() || rng.pct(10))
                });
                plan.insert(0, first);
                first.0
            } else {
                0
            };
            f.expect = (0..msgs.len()).filter(|&i| msgs[i].0 >= start).collect();
            f.stream = stream;
            f.msgs = msgs;
            let mut frames: Vec<Vec<u8>> = f.syn_frame().into_iter().collect();
            frames.extend(plan.iter().map(|&r| f.data(r)));
            frames.push(f.fin_frame());
            plans.push(frames);
            flows.push(f);
        }
        // Interleave the directions, keeping each one's order.
        let mut dec = tcp_decoder();
        let mut ts = 1_700_000_000_000_000_000i64 + rng.below(1 << 30) as i64;
        let mut pos = vec![0usize; plans.len()];
        loop {
            let live: Vec<usize> = (0..plans.len())
                .filter(|&k| pos[k] < plans[k].len())
                .collect();
            if live.is_empty() {
                break;
            }
            let k = live[rng.below(live.len())];
            let outs = feed(&mut dec, &plans[k][pos[k]], ts);
            dispatch(&mut flows, &outs);
            pos[k] += 1;
            ts += 1_000;
        }
        for f in &flows {
            f.finish();
        }
        assert_eq!(dec.tcp_flows(), 0, "FIN closes every direction");
        assert_eq!(dec.stats().skipped(SkipReason::TcpGapSkipped), 0);
        assert_eq!(dec.stats().skipped(SkipReason::TcpBufferOverflow), 0);
    });
}

/// Property 2: one segment lost for good. Messages wholly before the hole come out, the
/// gap is skipped exactly once (by the held-segment bound or the gap timeout), every
/// message starting after the hole comes out, and nothing else: no splice, no duplicate.
#[test]
fn tcp_loss_skips_the_gap_without_splicing() {
    check("tcp_loss_gap_skip", 0x7C9_0002, 300, |rng| {
        let (ia, ib) = random_ips(rng);
        let src = SocketAddr::new(ia, rng.range(1024, 65535) as u16);
        let dst = SocketAddr::new(ib, 5060);
        let n = rng.range(2, 40);
        let (stream, msgs) = angle_stream(rng, n, true);
        let mut f = random_flow(rng, src, dst, stream.len());
        let max_seg = seg_size(rng, stream.len());
        let segs = cut(rng, stream.len(), max_seg);
        if segs.len() < 2 {
            return;
        }
        let lost_idx = rng.range(1, segs.len() - 1);
        let lost = segs[lost_idx];
        let window = rng.range(1, 8);
        let dup = rng.below(20);
        let mut plan = deliveries(rng, &segs, window, dup);
        // The segment and every retransmission touching its bytes never arrive.
        plan.retain(|&(a, b)| b <= lost.0 || a >= lost.1);
        // The capture may start at a segment boundary before the hole (no SYN).
        let start = if f.syn.is_none() {
            let c = rng.below(lost_idx);
            let first = segs[c];
            plan.retain(|&r| r != first && (r.0 >= first.0 || segs.binary_search(&r).is_err()));
            plan.insert(0, first);
            first.0
        } else {
            0
        };
        let after_gap = lost.1 < stream.len();
        f.expect = (0..msgs.len())
            .filter(|&i| {
                let (a, b) = msgs[i];
                a >= start && (b <= lost.0 || a >= lost.1)
            })
            .collect();
        f.stream = stream;
        f.msgs = msgs;
        let max_held = rng.range(32, 64);
        let mut dec = Decoder::new(DecoderConfig {
            tcp_framer: Some(angle),
            max_tcp_out_of_order_segments: max_held,
            ..DecoderConfig::default()
        });
        let mut ts = rng.below(1 << 40) as i64;
        let mut flows = [f];
        if let Some(syn) = flows[0].syn_frame() {
            assert!(feed(&mut dec, &syn, ts).is_empty());
        }
        for &r in &plan {
            ts += 1_000;
            let frame = flows[0].data(r);
            let outs = feed(&mut dec, &frame, ts);
            dispatch(&mut flows, &outs);
        }
        // Nothing more arrives for longer than the gap timeout, then a retransmission of
        // the last segment: the held data behind the hole must not wait forever.
        if after_gap {
            ts += TCP_GAP_TIMEOUT_NS + 1;
            let frame = flows[0].data(*segs.last().unwrap());
            let outs = feed(&mut dec, &frame, ts);
            dispatch(&mut flows, &outs);
        }
        flows[0].finish();
        assert_eq!(
            dec.stats().skipped(SkipReason::TcpGapSkipped),
            u64::from(after_gap),
            "gap skipped exactly once"
        );
        let outs = feed(&mut dec, &flows[0].fin_frame(), ts + 1);
        assert!(outs.is_empty());
        // Data before the FIN may still be missing (the hole was never skipped): the flow
        // lingers for the gap timeout, then goes.
        dec.handle_timeout(Timestamp(ts + 2 + TCP_GAP_TIMEOUT_NS));
        assert_eq!(dec.tcp_flows(), 0);
    });
}

/// Reordering that never stops (segment `2k+1` always arrives after `2k+2` and `2k+4`,
/// the out-of-order queue is never empty) for longer than the gap timeout, while no byte
/// is missing for more than a few packets: nothing may be skipped.
#[test]
fn tcp_sustained_reordering_is_not_a_gap() {
    check("tcp_sustained_reordering", 0x7C9_0003, 50, |rng| {
        let (ia, ib) = random_ips(rng);
        let src = SocketAddr::new(ia, 40000);
        let dst = SocketAddr::new(ib, 5060);
        let (stream, msgs) = angle_stream(rng, 300, false);
        let mut f = random_flow(rng, src, dst, stream.len());
        let segs = cut(rng, stream.len(), 120);
        // s0, s2, s4, s1, s6, s3, s8, s5, ...: each odd segment two packets late.
        let mut order = vec![0usize];
        let mut evens = (2..segs.len()).step_by(2);
        let mut odds = (1..segs.len()).step_by(2);
        if let Some(e) = evens.next() {
            order.push(e);
        }
        loop {
            let (e, o) = (evens.next(), odds.next());
            order.extend(e);
            order.extend(o);
            if e.is_none() && o.is_none() {
                break;
            }
        }
        assert_eq!(order.iter().collect::<BTreeSet<_>>().len(), segs.len());
        f.expect = (0..msgs.len()).collect();
        f.stream = stream;
        f.msgs = msgs;
        let mut dec = tcp_decoder();
        let mut flows = [f];
        let mut ts = 0i64;
        if let Some(syn) = flows[0].syn_frame() {
            feed(&mut dec, &syn, ts);
        }
        // 20 ms between packets: well over TCP_GAP_TIMEOUT_NS in total.
        for &i in &order {
            ts += 20_000_000;
            let frame = flows[0].data(segs[i]);
            let outs = feed(&mut dec, &frame, ts);
            dispatch(&mut flows, &outs);
        }
        assert!(
            ts > 2 * TCP_GAP_TIMEOUT_NS,
            "the run must outlast the gap timeout"
        );
        flows[0].finish();
        assert_eq!(dec.stats().skipped(SkipReason::TcpGapSkipped), 0);
    });
}

/// A FIN reordered before the last data segments (it is sequence-wise after them): the
/// data still completes and is delivered exactly once.
#[test]
fn tcp_fin_reordered_before_data_loses_nothing() {
    check("tcp_fin_reordered", 0x7C9_0004, 200, |rng| {
        let (ia, ib) = random_ips(rng);
        let src = SocketAddr::new(ia, 40000);
        let dst = SocketAddr::new(ib, 5060);
        let n = rng.range(2, 10);
        let (stream, msgs) = angle_stream(rng, n, false);
        let mut f = random_flow(rng, src, dst, stream.len());
        f.syn = Some(f.base.wrapping_sub(1));
        let segs = cut(rng, stream.len(), 300);
        if segs.len() < 2 {
            return;
        }
        f.expect = (0..msgs.len()).collect();
        f.stream = stream;
        f.msgs = msgs;
        let mut frames: Vec<Vec<u8>> = f.syn_frame().into_iter().collect();
        frames.extend(segs.iter().map(|&r| f.data(r)));
        // FIN swapped with one of the last two data segments.
        let back = rng.range(1, 2.min(segs.len()));
        frames.insert(frames.len() - back, f.fin_frame());
        let mut dec = tcp_decoder();
        let mut flows = [f];
        for (i, fr) in frames.iter().enumerate() {
            let outs = feed(&mut dec, fr, i as i64 * 1000);
            dispatch(&mut flows, &outs);
        }
        flows[0].finish();
    });
}

/// A retransmitted SYN (same ISN) seen after the first data segments is not a new
/// connection: nothing is lost.
#[test]
fn tcp_duplicate_syn_after_data_is_harmless() {
    check("tcp_duplicate_syn", 0x7C9_0005, 200, |rng| {
        let (ia, ib) = random_ips(rng);
        let src = SocketAddr::new(ia, 40000);
        let dst = SocketAddr::new(ib, 5060);
        let n = rng.range(2, 10);
        let (stream, msgs) = angle_stream(rng, n, false);
        let mut f = random_flow(rng, src, dst, stream.len());
        f.syn = Some(f.base.wrapping_sub(1));
        let segs = cut(rng, stream.len(), 300);
        f.expect = (0..msgs.len()).collect();
        f.stream = stream;
        f.msgs = msgs;
        let mut frames: Vec<Vec<u8>> = f.syn_frame().into_iter().collect();
        frames.extend(segs.iter().map(|&r| f.data(r)));
        let at = rng.range(2, 3.min(frames.len()));
        frames.insert(at, f.syn_frame().unwrap());
        frames.push(f.fin_frame());
        let mut dec = tcp_decoder();
        let mut flows = [f];
        for (i, fr) in frames.iter().enumerate() {
            let outs = feed(&mut dec, fr, i as i64 * 1000);
            dispatch(&mut flows, &outs);
        }
        flows[0].finish();
    });
}

// ---------- IP fragments ----------

/// One datagram being fragmented, with the model of its reassembly buffer.
struct FragCase {
    v6: bool,
    src: IpAddr,
    dst: IpAddr,
    id: u32,
    /// The UDP datagram (header + payload): the fragmentable part.
    dgram: Vec<u8>,
    payload: Vec<u8>,
    sp: u16,
    dp: u16,
    /// Model: bytes covered by the live buffer, `None` when no buffer is live.
    covered: Option<Vec<bool>>,
    total_known: bool,
}

impl FragCase {
    fn new(rng: &mut Rng, id: u32, max_payload: usize) -> FragCase {
        let (src, dst) = random_ips(rng);
        let len = rng.range(1, max_payload);
        let payload = rng.bytes(len);
        let (sp, dp) = (rng.range(1, 65535) as u16, rng.range(1, 65535) as u16);
        FragCase {
            v6: src.is_ipv6(),
            src,
            dst,
            id,
            dgram: udp(sp, dp, &payload),
            payload,
            sp,
            dp,
            covered: None,
            total_known: false,
        }
    }

    fn frame(&self, vlan: Option<u16>, off: usize, end: usize) -> Vec<u8> {
        let more = end < self.dgram.len();
        let data = &self.dgram[off..end];
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let fo = (off / 8) as u16 | if more { 0x2000 } else { 0 };
                eth(vlan, 0x0800, &ipv4(s, d, 17, self.id as u16, fo, data))
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let mut p = vec![17, 0];
                p.extend_from_slice(&(off as u16 | u16::from(more)).to_be_bytes());
                p.extend_from_slice(&self.id.to_be_bytes());
                p.extend_from_slice(data);
                eth(vlan, 0x86DD, &ipv6(s, d, 44, &p))
            }
            _ => unreachable!(),
        }
    }

    /// Model step: returns true when this fragment completes the live buffer.
    fn model(&mut self, off: usize, end: usize) -> bool {
        let total = self.dgram.len();
        let cov = self.covered.get_or_insert_with(|| vec![false; total]);
        cov[off..end].iter_mut().for_each(|c| *c = true);
        if end == total {
            self.total_known = true;
        }
        if self.total_known && cov.iter().all(|&c| c) {
            self.covered = None;
            self.total_known = false;
            true
        } else {
            false
        }
    }

    fn check_out(&self, o: &Out) {
        assert_eq!(o.transport, Transport::Udp);
        assert_eq!(o.src, SocketAddr::new(self.src, self.sp));
        assert_eq!(o.dst, SocketAddr::new(self.dst, self.dp));
        assert!(o.payload == self.payload, "reassembled payload differs");
    }
}

/// Random 8-byte-aligned cut points: 2..=40 pieces covering `[0, total)`.
fn frag_pieces(rng: &mut Rng, total: usize) -> Vec<(usize, usize)> {
    let slots = (total - 1) / 8; // aligned offsets 8, 16, .. below total
    let want = rng.range(1, slots.clamp(1, 39));
    let mut cuts = BTreeSet::new();
    while cuts.len() < want {
        cuts.insert(rng.range(1, slots) * 8);
    }
    let mut v = Vec::new();
    let mut at = 0;
    for c in cuts.into_iter().chain(std::iter::once(total)) {
        v.push((at, c));
        at = c;
    }
    v
}

/// Property 3: fragments of 1..=3 interleaved datagrams (IPv4 and IPv6) in random order
/// with duplicates and overlapping re-fragmentations: each datagram comes out exactly when
/// its last missing byte arrives, with the original payload, exactly once.
#[test]
fn fragments_reassemble_exactly_once_in_any_order() {
    check("frag_reassembly", 0x7C9_0006, 400, |rng| {
        let vlan = random_vlan(rng);
        let n = rng.range(1, 3);
        let mut cases: Vec<FragCase> = (0..n)
            .map(|k| FragCase::new(rng, 0x1000 + k as u32 * 7919, 9000))
            .collect();
        let mut per: Vec<Vec<(usize, usize)>> = Vec::new();
        for c in &cases {
            let total = c.dgram.len();
            let pieces = frag_pieces(rng, total);
            let mut mine: Vec<(usize, usize)> = pieces.clone();
            // Duplicates and overlapping fragments (another fragmentation of the same
            // bytes); total fragments stay under the 64-range bound per datagram.
            for _ in 0..rng.below(20) {
                if rng.pct(50) {
                    mine.push(pieces[rng.below(pieces.len())]);
                } else {
                    let slots = (total - 1) / 8;
                    let a = rng.range(0, slots) * 8;
                    let b = if rng.pct(30) {
                        total
                    } else {
                        (rng.range(a / 8 + 1, slots + 1) * 8).min(total)
                    };
                    // [0, total) would be an unfragmented IPv4 packet, not a fragment.
                    if (a, b) != (0, total) || c.v6 {
                        mine.push((a, b));
                    }
                }
            }
            rng.shuffle(&mut mine);
            per.push(mine);
        }
        // Interleave the datagrams randomly while keeping each one's own order.
        let mut plan = Vec::new();
        let mut idx = vec![0usize; n];
        loop {
            let live: Vec<usize> = (0..n).filter(|&k| idx[k] < per[k].len()).collect();
            if live.is_empty() {
                break;
            }
            let k = live[rng.below(live.len())];
            plan.push((k, per[k][idx[k]].0, per[k][idx[k]].1));
            idx[k] += 1;
        }
        // Half the time stop each datagram at its completion: "exactly one datagram".
        let stop_at_completion = rng.pct(50);
        let mut done = vec![0usize; n];
        let mut dec = Decoder::new(DecoderConfig::default());
        for (step, &(k, a, b)) in plan.iter().enumerate() {
            if stop_at_completion && done[k] > 0 {
                continue;
            }
            let frame = cases[k].frame(vlan, a, b);
            let outs = feed(&mut dec, &frame, step as i64);
            let completes = cases[k].model(a, b);
            assert_eq!(
                outs.len(),
                usize::from(completes),
                "fragment [{a}, {b}) of datagram {k} (total {}), v6={}",
                cases[k].dgram.len(),
                cases[k].v6
            );
            for o in &outs {
                cases[k].check_out(o);
                assert_eq!(o.vlan, vlan);
            }
            done[k] += outs.len();
        }
        assert!(done.iter().all(|&d| d >= 1), "every datagram reassembled");
        let live = cases.iter().filter(|c| c.covered.is_some()).count();
        assert_eq!(dec.fragment_buffers(), live);
        if stop_at_completion {
            assert!(done.iter().all(|&d| d == 1));
            assert_eq!(dec.fragment_buffers(), 0);
        }
        for r in [
            SkipReason::FragmentTooLarge,
            SkipReason::FragmentInconsistent,
            SkipReason::FragmentTooManyHoles,
            SkipReason::FragmentNested,
        ] {
            assert_eq!(dec.stats().skipped(r), 0, "{r}");
        }
    });
}

/// Property 4: more partial datagrams than `max_frag_buffers`: the table never exceeds its
/// bound, evicts oldest-first (checked against a FIFO model, evictions counted exactly),
/// still completes datagrams whose fragments all arrive while they are live, and the
/// timeout frees the rest.
#[test]
fn fragment_table_stays_bounded_and_evicts_oldest() {
    check("frag_table_bounds", 0x7C9_0007, 300, |rng| {
        let max = rng.range(1, 32);
        let mut dec = Decoder::new(DecoderConfig {
            max_frag_buffers: max,
            ..DecoderConfig::default()
        });
        let keys = rng.range(max + 1, 4 * max + 8);
        // Small datagrams of 2..=6 eight-byte blocks.
        let mut cases: Vec<FragCase> = (0..keys)
            .map(|k| {
                let mut c = FragCase::new(rng, 0x2000 + k as u32, 40);
                let blocks = rng.range(2, 6);
                c.payload.resize(blocks * 8 - 8, 0xAB);
                c.dgram = udp(c.sp, c.dp, &c.payload);
                c
            })
            .collect();
        let mut fifo: Vec<usize> = Vec::new();
        let mut evictions = 0u64;
        let mut completed = 0u64;
        let frames = rng.range(keys, 8 * keys);
        for step in 0..frames {
            // Favour recent keys so that some datagrams complete.
            let k = if rng.pct(50) {
                rng.below(keys)
            } else {
                (step / 4 + rng.below(3)) % keys
            };
            let blocks = cases[k].dgram.len() / 8;
            let j = rng.below(blocks);
            let (a, b) = (j * 8, j * 8 + 8);
            if !fifo.contains(&k) {
                if fifo.len() >= max {
                    let old = fifo.remove(0);
                    cases[old].covered = None;
                    cases[old].total_known = false;
                    evictions += 1;
                }
                fifo.push(k);
            }
            let completes = cases[k].model(a, b);
            if completes {
                fifo.retain(|&x| x != k);
            }
            let frame = cases[k].frame(None, a, b);
            let outs = feed(&mut dec, &frame, step as i64);
            assert_eq!(outs.len(), usize::from(completes), "step {step} key {k}");
            for o in &outs {
                cases[k].check_out(o);
                completed += 1;
            }
            assert!(dec.fragment_buffers() <= max);
            assert_eq!(dec.fragment_buffers(), fifo.len());
            assert_eq!(dec.stats().skipped(SkipReason::FragmentEvicted), evictions);
        }
        assert_eq!(dec.stats().fragments_reassembled, completed);
        let live = dec.fragment_buffers() as u64;
        dec.handle_timeout(Timestamp(frames as i64 + 6_000_000_000));
        assert_eq!(dec.fragment_buffers(), 0);
        assert_eq!(dec.stats().skipped(SkipReason::FragmentTimeout), live);
    });
}

/// Property 4b: a flood of distinct never-completing datagrams (random ids, sizes and
/// offsets, both families) keeps the table at its bound with one eviction per new entry.
#[test]
fn fragment_flood_is_bounded() {
    check("frag_flood", 0x7C9_0008, 100, |rng| {
        let max = rng.range(1, 64);
        let mut dec = Decoder::new(DecoderConfig {
            max_frag_buffers: max,
            ..DecoderConfig::default()
        });
        let n = rng.range(max + 1, 600);
        // Distinct ids (an odd stride is a permutation of u16), same addresses: only the
        // id tells the datagrams apart.
        let (id0, stride) = (rng.next_u64() as u16, rng.next_u64() as u16 | 1);
        let mut created = 0u64;
        for i in 0..n {
            let id = id0.wrapping_add((i as u16).wrapping_mul(stride));
            let mut c = FragCase::new(rng, u32::from(id), 1400);
            c.src = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
            c.dst = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
            let total = c.dgram.len();
            if total < 24 {
                continue;
            }
            // A middle fragment only: never completes.
            let end = 8 + 8 * rng.range(1, (total - 16) / 8);
            let frame = c.frame(None, 8, end);
            assert!(feed(&mut dec, &frame, i as i64).is_empty());
            created += 1;
            assert!(dec.fragment_buffers() <= max);
        }
        let buffers = dec.fragment_buffers() as u64;
        assert_eq!(buffers, created.min(max as u64));
        assert_eq!(
            dec.stats().skipped(SkipReason::FragmentEvicted),
            created - buffers
        );
    });
}
