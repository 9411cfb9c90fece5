//! Randomized property tests for the SIP stream framer [`vcontap_sip::frame`], alone and
//! as the framer of the wire crate's TCP reassembly.
//!
//! No proptest: a tiny seeded splitmix64 PRNG drives every case, seeds are derived from a
//! fixed base per property so runs are deterministic. A failing case prints its seed;
//! rerun only that case with `PROP_SEED=<seed> cargo test -p vcontap-sip --test
//! framing_properties`. `PROP_CASES=<n>` overrides the number of cases per property.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};

use vcontap_sip::{frame, MAX_BODY_BYTES};
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
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len())]
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

// ---------- SIP message generator ----------

/// One random SIP message: request or response, CRLF or LF line ends, optional folded
/// and decoy headers, a body of 0..=20 KB announced by `Content-Length` / compact `l`
/// (absent when the body is empty, which means 0 on a stream).
fn sip_message(rng: &mut Rng, idx: usize) -> Vec<u8> {
    let eol: &[u8] = if rng.pct(80) { b"\r\n" } else { b"\n" };
    let mut m = Vec::new();
    let line = |m: &mut Vec<u8>, s: &str| {
        m.extend_from_slice(s.as_bytes());
        m.extend_from_slice(eol);
    };
    let method = *rng.pick(&[
        "INVITE",
        "ACK",
        "BYE",
        "CANCEL",
        "OPTIONS",
        "REGISTER",
        "INFO",
        "UPDATE",
        "PRACK",
        "REFER",
        "NOTIFY",
        "SUBSCRIBE",
        "MESSAGE",
        "PUBLISH",
        "X-CUSTOM",
    ]);
    if rng.pct(45) {
        let code = rng.range(100, 699);
        let reason = *rng.pick(&["OK", "Trying", "Ringing", "Busy Here", "", "Not Found"]);
        line(&mut m, &format!("SIP/2.0 {code} {reason}"));
    } else {
        let uri = *rng.pick(&[
            "sip:bob@example.com",
            "sips:alice@10.0.0.1:5061;transport=tls",
            "tel:+15551234567",
            "sip:[2001:db8::1]:5060",
            "urn:service:sos",
        ]);
        line(&mut m, &format!("{method} {uri} SIP/2.0"));
    }
    line(
        &mut m,
        &format!("Via: SIP/2.0/TCP 10.0.0.1:5060;branch=z9hG4bK{idx}x"),
    );
    line(&mut m, &format!("Call-ID: {idx}-{}@host", rng.next_u64()));
    line(&mut m, &format!("CSeq: {} {method}", rng.below(1000)));
    if rng.pct(30) {
        // Folded continuation line: never a Content-Length.
        line(&mut m, "Subject: a folded");
        line(&mut m, " continuation Content-Length: 99999");
    }
    if rng.pct(30) {
        line(&mut m, "X-Content-Length: 77");
        line(&mut m, "X-Note: Content-Length: 12345");
    }
    for k in 0..rng.below(6) {
        let v: String = (0..rng.below(80))
            .map(|_| char::from(b'a' + rng.below(26) as u8))
            .collect();
        line(&mut m, &format!("X-Pad-{k}: {v}"));
    }
    let body_len = match rng.below(10) {
        0..=3 => 0,
        4..=7 => rng.range(1, 600),
        8 => rng.range(600, 4000),
        _ => rng.range(4000, 20_000),
    };
    if body_len > 0 || rng.pct(50) {
        let name = *rng.pick(&[
            "Content-Length: ",
            "l: ",
            "l:",
            "content-length:",
            "CONTENT-LENGTH :  ",
            "Content-Length:\t",
        ]);
        let trail = *rng.pick(&["", " ", "  \t"]);
        line(&mut m, &format!("{name}{body_len}{trail}"));
    }
    if body_len > 0 {
        line(&mut m, "Content-Type: application/sdp");
    }
    m.extend_from_slice(eol);
    m.extend(rng.bytes(body_len));
    m
}

/// A stream of `n` SIP messages with optional CR/LF keep-alives before each. Returns the
/// stream and its parts in order: `(start, end, is_message)`.
fn sip_stream(rng: &mut Rng, n: usize) -> (Vec<u8>, Vec<(usize, usize, bool)>) {
    let mut s = Vec::new();
    let mut parts = Vec::new();
    for i in 0..n {
        if rng.pct(30) {
            let ka = *rng.pick(&[&b"\r\n\r\n"[..], b"\r\n", b"\n", b"\r\n\r\n\r\n\r\n"]);
            parts.push((s.len(), s.len() + ka.len(), false));
            s.extend_from_slice(ka);
        }
        let m = sip_message(rng, i);
        parts.push((s.len(), s.len() + m.len(), true));
        s.extend_from_slice(&m);
    }
    (s, parts)
}

/// Prefix lengths to try for a part of `n` bytes: all up to 768 (about the longest header
/// section generated here), then a sample, and the last few.
fn prefix_lengths(rng: &mut Rng, n: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..=n.min(768)).collect();
    if n > 768 {
        v.extend((0..64).map(|_| rng.range(768, n)));
        v.extend([n - 2, n - 1, n]);
    }
    v
}

/// Property 5a: on a concatenation of messages and keep-alives, `frame` says Incomplete
/// for every strict prefix of a message and `Message(len)` at its exact end (and with any
/// amount of following data), and `Skip` covers exactly the keep-alive bytes present.
#[test]
fn frame_finds_exact_boundaries_on_growing_prefixes() {
    check("sip_frame_boundaries", 0x51F_0001, 200, |rng| {
        let n = rng.range(1, 8);
        let (stream, parts) = sip_stream(rng, n);
        // Consume the stream the way TCP reassembly does, part by part.
        let mut cur = 0;
        for &(a, b, is_msg) in &parts {
            assert_eq!(cur, a);
            let len = b - a;
            for p in prefix_lengths(rng, len) {
                let got = frame(&stream[a..a + p]);
                let want = if is_msg {
                    if p == len {
                        Framing::Message(len)
                    } else {
                        Framing::Incomplete
                    }
                } else if p == 0 {
                    Framing::Incomplete
                } else {
                    Framing::Skip(p)
                };
                if want == Framing::Incomplete {
                    assert!(got.is_incomplete(), "part [{a}, {b}) prefix {p}: {got:?}");
                } else {
                    assert_eq!(got, want, "part [{a}, {b}) prefix {p}");
                }
            }
            // With everything that follows still buffered.
            let want = if is_msg {
                Framing::Message(len)
            } else {
                Framing::Skip(len)
            };
            assert_eq!(frame(&stream[a..]), want, "part [{a}, {b}) with the rest");
            cur = b;
        }
        assert_eq!(cur, stream.len());
    });
}

/// Checks the invariants of one verdict on `buf`.
fn check_verdict(buf: &[u8], v: Framing) {
    match v {
        Framing::Message(n) => {
            assert!(
                n > 0 && n <= buf.len(),
                "Message({n}) on {} bytes",
                buf.len()
            );
            // The verdict depends only on the message's own bytes.
            assert_eq!(
                frame(&buf[..n]),
                Framing::Message(n),
                "Message({n}) unstable"
            );
        }
        Framing::Skip(n) => {
            assert!(n > 0 && n <= buf.len(), "Skip({n}) on {} bytes", buf.len());
            assert!(buf[..n].iter().all(|&b| b == b'\r' || b == b'\n'));
        }
        Framing::NeedBytes(n) => assert!(n > buf.len(), "NeedBytes({n}) on {} bytes", buf.len()),
        Framing::Incomplete | Framing::NeedLine | Framing::NotOurs => {}
    }
}

/// Random garbage: uniform bytes, SIP-flavoured alphabets, and mutated real messages
/// (flipped, inserted, deleted bytes, cut anywhere, hostile Content-Length values).
fn garbage(rng: &mut Rng) -> Vec<u8> {
    const SIPISH: &[u8] = b"SIP/2.0 \r\n:;lL0123456789INVITE sip:@Content-Length\t-+";
    match rng.below(4) {
        0 => {
            let n = rng.below(3000);
            rng.bytes(n)
        }
        1 => (0..rng.below(3000))
            .map(|_| SIPISH[rng.below(SIPISH.len())])
            .collect(),
        2 => {
            let cl = rng
                .pick(&[
                    "-1".to_string(),
                    "99999999999999999999".into(),
                    (MAX_BODY_BYTES + 1).to_string(),
                    MAX_BODY_BYTES.to_string(),
                    "1 2".into(),
                    "0x10".into(),
                    String::new(),
                    "18446744073709551615".into(),
                    "4294967296".into(),
                ])
                .clone();
            let mut m = format!("INVITE sip:a@b SIP/2.0\r\nl: {cl}\r\n\r\n").into_bytes();
            let extra = rng.below(100);
            m.extend(rng.bytes(extra));
            m
        }
        _ => {
            let mut m = sip_message(rng, 0);
            for _ in 0..rng.range(1, 8) {
                if m.is_empty() {
                    break;
                }
                let i = rng.below(m.len());
                match rng.below(4) {
                    0 => m[i] = rng.next_u64() as u8,
                    1 => m.insert(i, *rng.pick(&[b'\r', b'\n', b':', b' ', 0, 0xff])),
                    2 => {
                        m.remove(i);
                    }
                    _ => m.truncate(i),
                }
            }
            m
        }
    }
}

/// Property 5b: garbage never panics, lengths stay within the buffer, and the verdict on
/// a growing buffer never flip-flops: once `Message(n)` or `NotOurs` is returned, more
/// bytes never change it (otherwise the TCP segmentation would decide the outcome).
#[test]
fn frame_is_total_bounded_and_stable_on_garbage() {
    check("sip_frame_garbage", 0x51F_0002, 1000, |rng| {
        let buf = garbage(rng);
        let v = frame(&buf);
        check_verdict(&buf, v);
        // Growing prefixes (sampled beyond 1 KB) must be consistent with each other.
        let mut last_final: Option<(usize, Framing)> = None;
        let mut lens: Vec<usize> = (0..=buf.len().min(1024)).collect();
        if buf.len() > 1024 {
            lens.extend((0..64).map(|_| rng.range(1024, buf.len())));
            lens.sort_unstable();
            lens.push(buf.len());
        }
        for p in lens {
            let got = frame(&buf[..p]);
            check_verdict(&buf[..p], got);
            if let Some((at, fin)) = last_final {
                match fin {
                    Framing::Message(_) | Framing::NotOurs => {
                        assert_eq!(got, fin, "verdict at {at} changed at prefix {p}")
                    }
                    Framing::Skip(n) => assert!(
                        matches!(got, Framing::Skip(m) if m >= n),
                        "Skip({n}) at {at} became {got:?} at prefix {p}"
                    ),
                    Framing::Incomplete | Framing::NeedBytes(_) | Framing::NeedLine => {}
                }
            }
            if !got.is_incomplete() {
                last_final = Some((p, got));
            }
        }
        // Appending bytes to a final verdict keeps it.
        if matches!(v, Framing::Message(_) | Framing::NotOurs) {
            let mut longer = buf.clone();
            let extra = rng.range(1, 200);
            longer.extend(rng.bytes(extra));
            assert_eq!(frame(&longer), v, "verdict changed by appended bytes");
        }
    });
}

// ---------- SIP over reassembled TCP ----------

fn tcp_frame(src: SocketAddr, dst: SocketAddr, seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let (IpAddr::V4(s), IpAddr::V4(d)) = (src.ip(), dst.ip()) else {
        panic!("IPv4 only here");
    };
    let mut t = Vec::new();
    t.extend_from_slice(&src.port().to_be_bytes());
    t.extend_from_slice(&dst.port().to_be_bytes());
    t.extend_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 0, 0x50, flags | 0x10, 0xff, 0xff, 0, 0, 0, 0]);
    t.extend_from_slice(payload);
    let total = u16::try_from(20 + t.len()).expect("segment too large");
    let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&[0, 1, 0x40, 0, 64, 6, 0, 0]);
    f.extend_from_slice(&s.octets());
    f.extend_from_slice(&d.octets());
    f.extend_from_slice(&t);
    f
}

fn feed(dec: &mut Decoder, frame: &[u8], ts: i64) -> Vec<(SocketAddr, SocketAddr, Vec<u8>)> {
    let pkt = RawPacket {
        ts: Timestamp(ts),
        link: LinkType::ETHERNET,
        data: frame,
        orig_len: frame.len() as u32,
    };
    let mut v = Vec::new();
    dec.decode(&pkt, &mut |d: Datagram<'_>| {
        assert_eq!(d.transport, Transport::Tcp);
        v.push((d.src, d.dst, d.payload.to_vec()));
    });
    v
}

/// A `[start, end)` byte range of the stream.
type Range = (usize, usize);

/// Segments of 1..=max_seg bytes delivered with each displaced by less than `window`
/// positions, plus retransmissions (exact, or straddling two segments).
fn plan(rng: &mut Rng, total: usize) -> (Vec<Range>, Vec<Range>) {
    let max_seg = match rng.below(3) {
        0 => rng.range(total / 1500 + 1, 200.max(total / 1500 + 1)),
        _ => rng.range(536, 1500),
    };
    let mut segs = Vec::new();
    let mut at = 0;
    while at < total {
        let end = (at + rng.range(1, max_seg)).min(total);
        segs.push((at, end));
        at = end;
    }
    let window = rng.range(1, 8);
    let dup = rng.below(25);
    let mut keyed = Vec::new();
    for (i, &s) in segs.iter().enumerate() {
        keyed.push(((i + rng.below(window)) * 2, keyed.len(), s));
        if rng.pct(dup) {
            let r = if rng.pct(50) {
                s
            } else {
                let hi = segs[(i + 1).min(segs.len() - 1)].1;
                let a = rng.range(s.0, s.1 - 1);
                (a, rng.range(a + 1, hi.min(a + 1500)))
            };
            keyed.push(((i + rng.below(window + 1)) * 2 + 1, keyed.len(), r));
        }
    }
    keyed.sort_by_key(|&(k, n, _)| (k, n));
    (segs, keyed.into_iter().map(|(_, _, r)| r).collect())
}

/// Property 1 with the real framer: a SIP stream with keep-alives, cut into random
/// segments, reordered, retransmitted (with partial overlaps), starting at an ISN that
/// often wraps, with or without the SYN: the decoder emits exactly the messages, in order.
#[test]
fn sip_over_tcp_reassembles_exactly() {
    check("sip_over_tcp", 0x51F_0003, 300, |rng| {
        let src = SocketAddr::new(Ipv4Addr::new(10, 0, 0, 1).into(), 40000);
        let dst = SocketAddr::new(Ipv4Addr::new(10, 0, 0, 2).into(), 5060);
        let n = rng.range(1, 15);
        let (stream, parts) = sip_stream(rng, n);
        let want: Vec<&[u8]> = parts
            .iter()
            .filter(|p| p.2)
            .map(|&(a, b, _)| &stream[a..b])
            .collect();
        let isn = if rng.pct(50) {
            u32::MAX - rng.below(stream.len() + 2) as u32
        } else {
            rng.next_u64() as u32
        };
        let syn = rng.pct(50);
        let base = isn.wrapping_add(u32::from(syn));
        let (segs, mut order) = plan(rng, stream.len());
        if !syn {
            // Mid-stream start at the first segment: it must be seen first.
            order.retain(|&r| r != segs[0]);
            order.insert(0, segs[0]);
        }
        let mut dec = Decoder::new(DecoderConfig {
            tcp_framer: Some(frame),
            ..DecoderConfig::default()
        });
        let mut got = Vec::new();
        let mut ts = 0i64;
        if syn {
            assert!(feed(&mut dec, &tcp_frame(src, dst, isn, 0x02, &[]), ts).is_empty());
        }
        for &(a, b) in &order {
            ts += 1000;
            let seq = base.wrapping_add(a as u32);
            for (s, d, p) in feed(&mut dec, &tcp_frame(src, dst, seq, 0, &stream[a..b]), ts) {
                assert_eq!((s, d), (src, dst));
                got.push(p);
            }
        }
        assert_eq!(got.len(), want.len(), "message count");
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                g == w,
                "message {i} differs ({} vs {} bytes)",
                g.len(),
                w.len()
            );
        }
        assert_eq!(dec.stats().skipped(SkipReason::TcpNotOurs), 0);
        let end = base.wrapping_add(stream.len() as u32);
        feed(&mut dec, &tcp_frame(src, dst, end, 0x01, &[]), ts + 1);
        assert_eq!(dec.tcp_flows(), 0);
    });
}

/// Whether `g` is an original message cut inside its start line: after losing its place a
/// stream cannot tell `PDATE sip:…` (the tail of `UPDATE sip:…`) from an extension method,
/// so the framer legitimately emits that tail once. The engine then sees an unknown method
/// and ignores it.
///
/// Likewise a message that follows a body without a final line break may be found a few
/// bytes early (`AINFO …` where the body ended in `…\xffA`): an original message preceded
/// by junk without a line break. Both only ever affect the first message after a resync.
fn is_cut_start_line(g: &[u8], originals: &[&[u8]]) -> bool {
    originals.iter().any(|o| {
        let line = o.iter().position(|&c| c == b'\n').unwrap_or(o.len());
        (1..line).any(|k| &o[k..] == g)
            || (g.len() > o.len() && g.ends_with(o) && !g[..g.len() - o.len()].contains(&b'\n'))
    })
}

/// Property 2 with the real framer: one segment is lost for good. Messages before the hole
/// come out; after the gap is skipped, later messages must come out again, and every
/// emitted payload is exactly one original message.
#[test]
fn sip_over_tcp_recovers_after_loss() {
    check("sip_over_tcp_loss", 0x51F_0004, 200, |rng| {
        let src = SocketAddr::new(Ipv4Addr::new(10, 0, 0, 1).into(), 40000);
        let dst = SocketAddr::new(Ipv4Addr::new(10, 0, 0, 2).into(), 5060);
        let n = rng.range(4, 15);
        let (stream, parts) = sip_stream(rng, n);
        let msgs: Vec<(usize, usize)> = parts
            .iter()
            .filter(|p| p.2)
            .map(|&(a, b, _)| (a, b))
            .collect();
        let isn = rng.next_u64() as u32;
        let (segs, mut order) = plan(rng, stream.len());
        if segs.len() < 3 {
            return;
        }
        let lost = segs[rng.range(1, segs.len() - 2)];
        order.retain(|&(a, b)| b <= lost.0 || a >= lost.1);
        // Only interesting when the hole is inside a message (a hole between messages
        // resynchronises trivially) and whole messages follow it.
        let after: Vec<usize> = (0..msgs.len()).filter(|&i| msgs[i].0 >= lost.1).collect();
        if after.is_empty() {
            return;
        }
        let mut dec = Decoder::new(DecoderConfig {
            tcp_framer: Some(frame),
            ..DecoderConfig::default()
        });
        let mut got = Vec::new();
        let mut ts = 0i64;
        feed(&mut dec, &tcp_frame(src, dst, isn, 0x02, &[]), ts);
        let base = isn.wrapping_add(1);
        let mut deliver = |dec: &mut Decoder, (a, b): (usize, usize), ts: i64| {
            let seq = base.wrapping_add(a as u32);
            for (_, _, p) in feed(dec, &tcp_frame(src, dst, seq, 0, &stream[a..b]), ts) {
                got.push(p);
            }
        };
        for &r in &order {
            ts += 1000;
            deliver(&mut dec, r, ts);
        }
        // The gap timeout passes, then a retransmission of the last segment.
        ts += TCP_GAP_TIMEOUT_NS + 1;
        deliver(&mut dec, *segs.last().unwrap(), ts);
        let originals: Vec<&[u8]> = msgs.iter().map(|&(a, b)| &stream[a..b]).collect();
        let mut positions = Vec::new();
        for g in &got {
            if !originals.contains(&g.as_slice()) && is_cut_start_line(g, &originals) {
                // A junk-prefixed original still counts as that message.
                if let Some(pos) = originals
                    .iter()
                    .position(|o| g.len() > o.len() && g.ends_with(o))
                {
                    positions.push(pos);
                }
                continue;
            }
            let Some(pos) = originals.iter().position(|o| o == g) else {
                panic!(
                    "emitted payload is not an original message ({} bytes)",
                    g.len()
                );
            };
            assert!(
                positions.last() < Some(&pos),
                "message {pos} out of order or duplicated"
            );
            positions.push(pos);
        }
        let before = msgs.iter().filter(|m| m.1 <= lost.0).count();
        assert!(
            positions.iter().copied().take(before).eq(0..before),
            "every message before the hole is emitted"
        );
        assert!(
            positions.last().is_some_and(|l| after.contains(l)),
            "no message after the hole was emitted ({} of {} after it; skips {:?})",
            got.len() - before,
            after.len(),
            dec.stats().nonzero_skips().collect::<Vec<_>>()
        );
    });
}

/// Capture starting mid-connection (no SYN) at a random segment, possibly inside a
/// message: the partial first message is dropped and every later message comes out.
#[test]
fn sip_over_tcp_capture_starting_mid_message() {
    check("sip_over_tcp_mid_start", 0x51F_0005, 200, |rng| {
        let src = SocketAddr::new(Ipv4Addr::new(10, 0, 0, 1).into(), 40000);
        let dst = SocketAddr::new(Ipv4Addr::new(10, 0, 0, 2).into(), 5060);
        let n = rng.range(2, 10);
        let (stream, parts) = sip_stream(rng, n);
        let base = rng.next_u64() as u32;
        let (segs, mut order) = plan(rng, stream.len());
        let first = segs[rng.below(segs.len())];
        order.retain(|&r| r != first && (r.0 >= first.0 || segs.binary_search(&r).is_err()));
        order.insert(0, first);
        let want: Vec<&[u8]> = parts
            .iter()
            .filter(|p| p.2 && p.0 >= first.0)
            .map(|&(a, b, _)| &stream[a..b])
            .collect();
        let mut dec = Decoder::new(DecoderConfig {
            tcp_framer: Some(frame),
            ..DecoderConfig::default()
        });
        let mut got = Vec::new();
        for (i, &(a, b)) in order.iter().enumerate() {
            let seq = base.wrapping_add(a as u32);
            let f = tcp_frame(src, dst, seq, 0, &stream[a..b]);
            got.extend(feed(&mut dec, &f, i as i64 * 1000).into_iter().map(|o| o.2));
        }
        let all: Vec<&[u8]> = parts
            .iter()
            .filter(|p| p.2)
            .map(|&(a, b, _)| &stream[a..b])
            .collect();
        if got.len() == want.len() + 1 && is_cut_start_line(&got[0], &all) {
            got.remove(0);
        } else if !got.is_empty()
            && !want.is_empty()
            && got[0] != want[0]
            && got[0].ends_with(want[0])
            && is_cut_start_line(&got[0], &all)
        {
            got[0] = want[0].to_vec();
        }
        if std::env::var_os("PROP_DEBUG").is_some() {
            for g in &got {
                eprintln!(
                    "got {} {:?}",
                    g.len(),
                    String::from_utf8_lossy(&g[..g.len().min(60)])
                );
            }
            for w in &want {
                eprintln!(
                    "want {} {:?}",
                    w.len(),
                    String::from_utf8_lossy(&w[..w.len().min(60)])
                );
            }
            eprintln!(
                "first {:?} {:?}",
                first,
                String::from_utf8_lossy(&stream[first.0..first.1.min(first.0 + 80)])
            );
        }
        assert_eq!(got.len(), want.len(), "message count");
        assert!(
            got.iter().zip(&want).all(|(g, w)| g == w),
            "messages differ"
        );
    });
}

/// A run of TLS records (random content type 20..=23, TLS 1.0-1.3 version, random
/// contents that include line feeds and SIP-looking text) as a TLS peer sends them.
fn tls_records(rng: &mut Rng) -> Vec<u8> {
    let mut s = Vec::new();
    let records = rng.range(1, 6);
    for i in 0..records {
        let ctype = if i == 0 { 22 } else { 20 + rng.below(4) as u8 };
        let len = rng.range(1, 600);
        let mut body = rng.bytes(len);
        if rng.pct(50) {
            body.extend_from_slice(b"INVITE sip:a@b SIP/2.0\r\n\r\n");
        }
        s.extend_from_slice(&[ctype, 3, rng.below(5) as u8]);
        s.extend_from_slice(&(body.len() as u16).to_be_bytes());
        s.extend_from_slice(&body);
    }
    s
}

/// TLS connections (on the SIP port with a handshake, or any traffic on
/// 5061, from the SYN or joined mid-stream) interleaved with a SIP-over-TCP connection:
/// the SIP messages come out exactly, no TLS byte reaches the framer, every TLS
/// connection is counted once as `tls_flow` with all its bytes, nothing as `tcp_not_ours`.
#[test]
fn tls_flows_are_counted_and_never_framed() {
    check("tls_flows", 0x51F_0005, 100, |rng| {
        let client = |port: u16| SocketAddr::new(Ipv4Addr::new(10, 0, 0, 1).into(), port);
        let server = |port: u16| SocketAddr::new(Ipv4Addr::new(10, 0, 0, 2).into(), port);
        let mut dec = Decoder::new(DecoderConfig {
            tcp_framer: Some(frame),
            ..DecoderConfig::default()
        });
        let n_sip = rng.range(1, 5);
        let (sip, parts) = sip_stream(rng, n_sip);
        let want: Vec<&[u8]> = parts
            .iter()
            .filter(|p| p.2)
            .map(|&(a, b, _)| &sip[a..b])
            .collect();
        // (client, server, client bytes, server bytes, whether the SYN is seen)
        let n_tls = rng.range(1, 4);
        let tls: Vec<_> = (0..n_tls)
            .map(|i| {
                let sport = if rng.pct(50) { 5060 } else { 5061 };
                // Mid-stream joins only on 5061: elsewhere a flow is only known to be TLS
                // by a record header at the start of its first segment.
                let syn = sport == 5060 || rng.pct(50);
                let c = tls_records(rng);
                let s = tls_records(rng);
                (client(41000 + i as u16), server(sport), c, s, syn)
            })
            .collect();
        let mut ts = 0i64;
        let mut got = Vec::new();
        let sip_c = client(40000);
        let sip_s = server(5060);
        got.extend(feed(&mut dec, &tcp_frame(sip_c, sip_s, 99, 0x02, b""), ts));
        for (c, s, cb, sb, syn) in &tls {
            ts += 1;
            if *syn {
                feed(&mut dec, &tcp_frame(*c, *s, 999, 0x02, b""), ts);
                feed(&mut dec, &tcp_frame(*s, *c, 4999, 0x02, b""), ts);
            }
            // Client records, then server records, in segments of up to 500 bytes.
            for (from, to, bytes, isn) in [(*c, *s, cb, 1000u32), (*s, *c, sb, 5000)] {
                for (j, seg) in bytes.chunks(500).enumerate() {
                    let seq = isn + (j * 500) as u32;
                    ts += 1;
                    assert!(feed(&mut dec, &tcp_frame(from, to, seq, 0, seg), ts).is_empty());
                }
            }
        }
        for (j, seg) in sip.chunks(700).enumerate() {
            ts += 1;
            got.extend(feed(
                &mut dec,
                &tcp_frame(sip_c, sip_s, 100 + (j * 700) as u32, 0, seg),
                ts,
            ));
        }
        let got: Vec<&[u8]> = got.iter().map(|(_, _, p)| &p[..]).collect();
        assert_eq!(got, want);
        let st = dec.stats();
        assert_eq!(st.tls_flows(), n_tls as u64);
        let bytes: usize = tls.iter().map(|t| t.2.len() + t.3.len()).sum();
        assert_eq!(st.tls_bytes, bytes as u64);
        assert_eq!(st.skipped(SkipReason::TcpNotOurs), 0);
    });
}
