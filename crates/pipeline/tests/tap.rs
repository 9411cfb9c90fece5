//! The pipeline end to end, in process: frames in, events out, with real threads, real
//! queues and a real media store. Checks what the issue asks of the pipeline: N shards give
//! the same calls as one (including NATed media found through the SSRC fallback), a store
//! that never answers cannot keep a call open forever, and a live queue policy drops and
//! counts instead of stalling the source.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use vcontap_engine::{EngineConfig, EventKind, RecordMode, StoredSegment};
use vcontap_pipeline::{FinishedSegment, MediaStore, SegmentMeta, SegmentWriter, Tap, TapConfig};
use vcontap_wire::{LinkType, RawPacket, Timestamp};

const T0: i64 = 1_767_225_600_000_000_000;

/// A raw-IP (LINKTYPE_RAW) IPv4/UDP frame.
fn frame(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), payload: &[u8]) -> Vec<u8> {
    let total = 28 + payload.len();
    let mut f = vec![
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        0,
        0,
        0,
        64,
        17,
        0,
        0,
    ];
    f.extend_from_slice(&src.0.octets());
    f.extend_from_slice(&dst.0.octets());
    f.extend_from_slice(&src.1.to_be_bytes());
    f.extend_from_slice(&dst.1.to_be_bytes());
    f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    f
}

fn sip(first: &str, cid: &str, to_tag: bool, cseq: &str, sdp: Option<(Ipv4Addr, u16)>) -> Vec<u8> {
    let body = sdp.map_or(String::new(), |(ip, port)| {
        format!("v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
    });
    let ctype = if sdp.is_some() {
        "Content-Type: application/sdp\r\n"
    } else {
        ""
    };
    let tag = if to_tag { ";tag=callee" } else { "" };
    format!(
        "{first}\r\nVia: SIP/2.0/UDP 10.1.0.1:5060;branch=z9hG4bK{cid}{cseq}\r\nFrom: \"A\" <sip:+15551230000@a.example>;tag=caller\r\nTo: <sip:+15559870000@b.example>{tag}\r\nCall-ID: {cid}\r\nCSeq: {cseq}\r\n{ctype}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn rtp(seq: u16, ts: u32, ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 0];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[0x7f; 160]);
    p
}

/// Frames of `calls` overlapping calls; each call's media first flows between its SDP
/// addresses, then (same SSRCs) between NAT addresses no SDP announced.
fn traffic(calls: u32, packets_per_phase: u16) -> Vec<(Timestamp, Vec<u8>)> {
    let mut out = Vec::new();
    let sipa = (Ipv4Addr::new(10, 1, 0, 1), 5060);
    let sipb = (Ipv4Addr::new(10, 2, 0, 1), 5060);
    for c in 0..calls {
        let base = T0 + i64::from(c) * 50_000_000;
        let cid = format!("call-{c}@tap.test");
        let ma = (
            Ipv4Addr::new(10, 1, 1, (c % 250) as u8 + 1),
            20000 + 2 * c as u16,
        );
        let mb = (
            Ipv4Addr::new(10, 2, 1, (c % 250) as u8 + 1),
            30000 + 2 * c as u16,
        );
        let nat_a = (
            Ipv4Addr::new(203, 0, 113, (c % 250) as u8 + 1),
            40000 + c as u16,
        );
        let nat_b = (
            Ipv4Addr::new(198, 51, 100, (c % 250) as u8 + 1),
            50000 + c as u16,
        );
        let t = |ms: i64| Timestamp(base + ms * 1_000_000);
        out.push((
            t(0),
            frame(
                sipa,
                sipb,
                &sip(
                    "INVITE sip:b@b.example SIP/2.0",
                    &cid,
                    false,
                    "1 INVITE",
                    Some(ma),
                ),
            ),
        ));
        out.push((
            t(100),
            frame(
                sipb,
                sipa,
                &sip("SIP/2.0 200 OK", &cid, true, "1 INVITE", Some(mb)),
            ),
        ));
        out.push((
            t(110),
            frame(
                sipa,
                sipb,
                &sip("ACK sip:b@b.example SIP/2.0", &cid, true, "1 ACK", None),
            ),
        ));
        let (ssrc_a, ssrc_b) = (0x1000_0000 + c, 0x2000_0000 + c);
        let n = packets_per_phase;
        for i in 0..2 * n {
            let ms = 120 + i64::from(i) * 20;
            let (sa, da, sb, db) = if i < n {
                (ma, mb, mb, ma)
            } else {
                (nat_a, nat_b, nat_b, nat_a)
            };
            out.push((t(ms), frame(sa, da, &rtp(i, u32::from(i) * 160, ssrc_a))));
            out.push((
                t(ms + 1),
                frame(sb, db, &rtp(i, u32::from(i) * 160, ssrc_b)),
            ));
        }
        let end = 120 + i64::from(2 * n) * 20 + 100;
        out.push((
            t(end),
            frame(
                sipa,
                sipb,
                &sip("BYE sip:b@b.example SIP/2.0", &cid, true, "2 BYE", None),
            ),
        ));
        out.push((
            t(end + 10),
            frame(
                sipb,
                sipa,
                &sip("SIP/2.0 200 OK", &cid, true, "2 BYE", None),
            ),
        ));
    }
    out.sort_by_key(|(t, _)| *t);
    out
}

type Finished = Arc<Mutex<Vec<Value>>>;

/// A Tap whose handler keeps every finished vCon.
fn collecting_tap(cfg: TapConfig) -> (Tap, Finished) {
    let done: Finished = Arc::new(Mutex::new(Vec::new()));
    let d = done.clone();
    let tap = Tap::new(
        cfg,
        Box::new(move |e| {
            if e.kind == EventKind::Finished {
                d.lock()
                    .unwrap()
                    .push(serde_json::from_str(&e.vcon_json).unwrap());
            }
            Ok(())
        }),
    )
    .unwrap();
    (tap, done)
}

/// Feeds raw-IP frames with the capture clock as timer clock; returns the last time.
fn feed(tap: &mut Tap, frames: &[(Timestamp, Vec<u8>)]) -> Timestamp {
    let mut last = Timestamp(0);
    for (ts, f) in frames {
        let pkt = RawPacket {
            ts: *ts,
            link: LinkType::RAW,
            data: f,
            orig_len: f.len() as u32,
        };
        last = last.max(*ts);
        tap.handle_packet(&pkt, last).unwrap();
    }
    last
}

fn run(
    cfg: TapConfig,
    frames: &[(Timestamp, Vec<u8>)],
) -> (Vec<Value>, vcontap_pipeline::TapTotals) {
    let (mut tap, done) = collecting_tap(cfg);
    let last = feed(&mut tap, frames);
    let totals = tap.finish(last).unwrap();
    let v = done.lock().unwrap().clone();
    (v, totals)
}

fn engine(record: RecordMode) -> EngineConfig {
    EngineConfig {
        record,
        host: "tap.test".into(),
        ..EngineConfig::default()
    }
}

/// What must not depend on the shard count: per Call-ID, the uuid, parties, streams with
/// their packet counts, and the end reason.
fn digest(vcons: &[Value]) -> BTreeMap<String, Value> {
    vcons
        .iter()
        .map(|v| {
            let uuid = v["uuid"].as_str().unwrap().to_string();
            let mut streams: Vec<(String, u64)> = v["analysis"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .filter(|a| a["schema"] == "vcontap-rtp-quality")
                .flat_map(|a| a["body"]["streams"].as_array().cloned().unwrap_or_default())
                // Calls without a recording keep the report in the `vcontap` object.
                .chain(
                    v["vcontap"]["rtp_quality"]["streams"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default(),
                )
                .map(|s| {
                    (
                        s["ssrc"].as_str().unwrap_or("").to_string(),
                        s["packets"].as_u64().unwrap_or(0),
                    )
                })
                .collect();
            streams.sort();
            let d = serde_json::json!({
                "parties": v["parties"],
                "streams": streams,
                "end": v["vcontap"]["end_reason"],
            });
            (uuid, d)
        })
        .collect()
}

#[test]
fn shards_agree_with_one_engine_on_nated_media() {
    let frames = traffic(40, 25);
    let (one, t1) = run(TapConfig::replay(engine(RecordMode::None)), &frames);
    let mut cfg = TapConfig::replay(engine(RecordMode::None));
    cfg.shards = 4;
    let (four, t4) = run(cfg, &frames);
    assert_eq!(one.len(), 40);
    assert_eq!(four.len(), 40);
    let (d1, d4) = (digest(&one), digest(&four));
    assert_eq!(d1, d4, "4 shards differ from 1");
    // The NAT phase really went through the SSRC fallback, and nothing became an orphan.
    assert_eq!(t1.engine.rtp_by_ssrc, 40 * 2 * 25, "{:?}", t1.engine);
    assert_eq!(t4.engine.rtp_by_ssrc, t1.engine.rtp_by_ssrc);
    assert_eq!(t4.engine.rtp_orphan_packets, 0);
    assert_eq!(t4.engine.rtp_packets, 40 * 4 * 25);
    for (_, d) in d1 {
        let streams = d["streams"].as_array().unwrap();
        // A stream is an SSRC on one address pair: each direction once on the SDP
        // addresses and once on the NAT addresses, 25 packets each.
        assert_eq!(streams.len(), 4, "both phases of both directions: {d}");
        assert!(
            streams.iter().all(|s| s[1].as_u64() == Some(25)),
            "every packet counted: {d}"
        );
    }
    validate(&four);
    for t in [&t1, &t4] {
        assert_eq!(t.engine.calls, t.engine.calls_finished);
        assert_eq!(t.engine.events, t.events, "engine and tap agree on events");
    }
}

/// The two legs of a B2BUA (different Call-IDs, on different shards) re-INVITEd onto
/// direct media announce the same address pair: with 4 shards each leg's call still gets
/// both streams, exactly as with one engine.
#[test]
fn direct_media_legs_on_different_shards_both_get_the_streams() {
    let ip = |a, b, c, d| Ipv4Addr::new(a, b, c, d);
    let (a_sip, sbc_sip, b_sip) = (
        (ip(10, 1, 0, 1), 5060),
        (ip(10, 9, 0, 1), 5060),
        (ip(10, 2, 0, 1), 5060),
    );
    let (a_media, b_media) = ((ip(10, 1, 1, 1), 20000), (ip(10, 2, 1, 1), 40000));
    let (sbc_a, sbc_b) = ((ip(10, 9, 1, 1), 30000), (ip(10, 9, 1, 1), 30002));
    // Call-IDs the 4-shard router puts on different shards.
    let mut router = vcontap_engine::Router::new(4);
    let shard_of = |r: &mut vcontap_engine::Router, cid: &str| {
        let f = frame(
            a_sip,
            sbc_sip,
            &sip("INVITE sip:x SIP/2.0", cid, false, "1 INVITE", None),
        );
        let d = vcontap_wire::Datagram {
            ts: Timestamp(T0),
            src: "10.1.0.1:5060".parse().unwrap(),
            dst: "10.9.0.1:5060".parse().unwrap(),
            transport: vcontap_wire::Transport::Udp,
            vlan: None,
            payload: f.get(28..).unwrap(),
        };
        r.route(&d)
    };
    let leg2 = "leg2@b2bua.test".to_string();
    let s2 = shard_of(&mut router, &leg2);
    let leg1 = (0..100)
        .map(|i| format!("leg1-{i}@b2bua.test"))
        .find(|c| shard_of(&mut router, c) != s2)
        .unwrap();
    let t = |ms: i64| Timestamp(T0 + ms * 1_000_000);
    let mut frames = vec![
        (
            t(0),
            frame(
                a_sip,
                sbc_sip,
                &sip(
                    "INVITE sip:b SIP/2.0",
                    &leg1,
                    false,
                    "1 INVITE",
                    Some(a_media),
                ),
            ),
        ),
        (
            t(10),
            frame(
                sbc_sip,
                b_sip,
                &sip(
                    "INVITE sip:b SIP/2.0",
                    &leg2,
                    false,
                    "1 INVITE",
                    Some(sbc_b),
                ),
            ),
        ),
        (
            t(100),
            frame(
                b_sip,
                sbc_sip,
                &sip("SIP/2.0 200 OK", &leg2, true, "1 INVITE", Some(b_media)),
            ),
        ),
        (
            t(110),
            frame(
                sbc_sip,
                a_sip,
                &sip("SIP/2.0 200 OK", &leg1, true, "1 INVITE", Some(sbc_a)),
            ),
        ),
        (
            t(120),
            frame(
                a_sip,
                sbc_sip,
                &sip("ACK sip:b SIP/2.0", &leg1, true, "1 ACK", None),
            ),
        ),
        (
            t(121),
            frame(
                sbc_sip,
                b_sip,
                &sip("ACK sip:b SIP/2.0", &leg2, true, "1 ACK", None),
            ),
        ),
        // Direct media: each leg is re-INVITEd so A and B send to each other.
        (
            t(500),
            frame(
                a_sip,
                sbc_sip,
                &sip(
                    "INVITE sip:b SIP/2.0",
                    &leg1,
                    true,
                    "2 INVITE",
                    Some(a_media),
                ),
            ),
        ),
        (
            t(510),
            frame(
                sbc_sip,
                a_sip,
                &sip("SIP/2.0 200 OK", &leg1, true, "2 INVITE", Some(b_media)),
            ),
        ),
        (
            t(520),
            frame(
                sbc_sip,
                b_sip,
                &sip(
                    "INVITE sip:b SIP/2.0",
                    &leg2,
                    true,
                    "2 INVITE",
                    Some(a_media),
                ),
            ),
        ),
        (
            t(530),
            frame(
                b_sip,
                sbc_sip,
                &sip("SIP/2.0 200 OK", &leg2, true, "2 INVITE", Some(b_media)),
            ),
        ),
    ];
    for i in 0..100u16 {
        let ms = 600 + i64::from(i) * 20;
        frames.push((
            t(ms),
            frame(a_media, b_media, &rtp(i, u32::from(i) * 160, 0xA)),
        ));
        frames.push((
            t(ms + 1),
            frame(b_media, a_media, &rtp(i, u32::from(i) * 160, 0xB)),
        ));
    }
    frames.push((
        t(3000),
        frame(
            a_sip,
            sbc_sip,
            &sip("BYE sip:b SIP/2.0", &leg1, true, "3 BYE", None),
        ),
    ));
    frames.push((
        t(3005),
        frame(
            sbc_sip,
            a_sip,
            &sip("SIP/2.0 200 OK", &leg1, true, "3 BYE", None),
        ),
    ));
    frames.push((
        t(3010),
        frame(
            sbc_sip,
            b_sip,
            &sip("BYE sip:b SIP/2.0", &leg2, true, "3 BYE", None),
        ),
    ));
    frames.push((
        t(3015),
        frame(
            b_sip,
            sbc_sip,
            &sip("SIP/2.0 200 OK", &leg2, true, "3 BYE", None),
        ),
    ));
    let (one, _) = run(TapConfig::replay(engine(RecordMode::None)), &frames);
    let mut cfg = TapConfig::replay(engine(RecordMode::None));
    cfg.shards = 4;
    let (four, _) = run(cfg, &frames);
    assert_eq!(one.len(), 2);
    assert_eq!(digest(&one), digest(&four), "4 shards differ from 1");
    for (_, d) in digest(&four) {
        let ssrcs: Vec<&str> = d["streams"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s[0].as_str().unwrap())
            .collect();
        assert!(
            ssrcs.contains(&"0x0000000A") && ssrcs.contains(&"0x0000000B"),
            "each leg gets both direct streams: {d}"
        );
    }
    validate(&four);
}

/// A store whose `complete` never returns until released: a hung object store.
struct HungStore {
    release: Arc<AtomicBool>,
}
struct HungWriter(Arc<AtomicBool>);
struct HungFinished(Arc<AtomicBool>);

impl MediaStore for HungStore {
    fn open(&self, _: &SegmentMeta) -> std::io::Result<Box<dyn SegmentWriter>> {
        Ok(Box::new(HungWriter(self.release.clone())))
    }
}
impl SegmentWriter for HungWriter {
    fn write(&mut self, _: &[i16]) -> std::io::Result<()> {
        Ok(())
    }
    fn finish(self: Box<Self>) -> std::io::Result<Box<dyn FinishedSegment>> {
        Ok(Box::new(HungFinished(self.0)))
    }
}
impl FinishedSegment for HungFinished {
    fn complete(self: Box<Self>) -> std::io::Result<StoredSegment> {
        while !self.0.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(5));
        }
        Err(std::io::Error::other("released"))
    }
}

#[test]
fn a_store_that_never_answers_cannot_hold_a_call_open() {
    let release = Arc::new(AtomicBool::new(false));
    let mut cfg = TapConfig::replay(EngineConfig {
        segment_store_timeout_ms: 2_000,
        ..engine(RecordMode::Stereo)
    });
    cfg.media = Some(Arc::new(HungStore {
        release: release.clone(),
    }));
    cfg.flush_wait = Duration::from_millis(200);
    // One call that ends early, then another call keeps capture time running for 10 s.
    let mut frames = traffic(1, 25);
    let late = traffic(1, 250)
        .into_iter()
        .map(|(t, f)| (Timestamp(t.nanos() + 3_000_000_000), f))
        .map(|(t, mut f)| {
            // Same length, so the frame's IP and UDP lengths stay right.
            while let Some(i) = f.windows(7).position(|w| w == b"call-0@") {
                f[i..i + 7].copy_from_slice(b"late-0@");
            }
            (t, f)
        });
    frames.extend(late);
    frames.sort_by_key(|(t, _)| *t);
    let (vcons, totals) = run(cfg, &frames);
    release.store(true, Ordering::Relaxed);
    assert_eq!(vcons.len(), 2, "both calls finish: {:?}", totals.engine);
    assert!(totals.engine.segments_timed_out >= 1, "{:?}", totals.engine);
    for v in &vcons {
        assert!(
            v["dialog"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .all(|d| d["type"] != "recording"),
            "a segment never stored is not in the vCon"
        );
    }
}

/// A store whose `open` blocks until released: a disk that stalls.
struct StalledStore {
    release: Arc<AtomicBool>,
}
impl MediaStore for StalledStore {
    fn open(&self, _: &SegmentMeta) -> std::io::Result<Box<dyn SegmentWriter>> {
        while !self.release.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(Box::new(HungWriter(self.release.clone())))
    }
}

#[test]
fn live_policy_drops_and_counts_instead_of_stalling() {
    let release = Arc::new(AtomicBool::new(false));
    // Audio handed out every 20 ms: one media message per packet fills the writer queue.
    let mut cfg = TapConfig::live(EngineConfig {
        audio_chunk_ms: 20,
        ..engine(RecordMode::Stereo)
    });
    cfg.shards = 2;
    cfg.media = Some(Arc::new(StalledStore {
        release: release.clone(),
    }));
    // Enough audio to fill the media queue behind the stalled open, then the shard queue.
    let frames = traffic(2, 20000);
    let r = release.clone();
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(3));
        r.store(true, Ordering::Relaxed);
    });
    let started = std::time::Instant::now();
    let (mut tap, done) = collecting_tap(cfg);
    let last = feed(&mut tap, &frames);
    let fed = started.elapsed();
    let totals = tap.finish(last).unwrap();
    releaser.join().unwrap();
    assert!(
        fed < Duration::from_secs(3),
        "the source was never blocked by the stalled store (fed in {fed:?})"
    );
    let q = totals.shard_queue;
    assert!(q.dropped > 0 && q.dropped_packets > 0, "{q:?}");
    assert_eq!(
        totals.engine.datagrams + q.dropped_packets,
        totals.decode.datagrams,
        "every datagram is either handled or counted as dropped"
    );
    assert_eq!(done.lock().unwrap().len(), totals.engine.calls as usize);
}

/// Runs `validate-vcon` (from `$VCONTAP_SHARED` or `../shared`) over `vcons`; skips with a
/// message when the shared folder is absent.
fn validate(vcons: &[Value]) {
    let shared = std::env::var_os("VCONTAP_SHARED")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared")
        });
    let tool = shared.join("tools/validate-vcon");
    if !tool.exists() {
        eprintln!("skipped: validate-vcon not found (set VCONTAP_SHARED)");
        return;
    }
    // One directory per call: tests run in parallel threads of one process.
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("vcontap-pipeline-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for v in vcons {
        let name = format!("{}.vcon.json", v["uuid"].as_str().unwrap());
        std::fs::write(dir.join(name), serde_json::to_vec(v).unwrap()).unwrap();
    }
    let o = std::process::Command::new(&tool)
        .arg("--quiet")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "validate-vcon: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
