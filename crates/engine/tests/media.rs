//! Media classification and per-stream figures in virtual time: hand-built SIP, RTP, RTCP,
//! STUN and non-RTP UDP datagrams go in; the RTP report, the recording dialogs and the
//! engine counters are checked. No sockets, no clock, no files (the test plays the driver).

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::Value;
use vcontap_engine::{
    Engine, EngineConfig, EventKind, Output, RecordMode, StoredSegment, VconEvent,
};
use vcontap_wire::{Datagram, Timestamp, Transport};

const T0: i64 = 1_767_225_600_000_000_000; // 2026-01-01T00:00:00Z

fn a(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Plays the driver: feeds datagrams, drains outputs, stores every closed segment.
struct Harness {
    engine: Engine,
    events: Vec<Arc<VconEvent>>,
    stored: usize,
    /// Samples of each channel per segment index order of opening (left, right).
    audio: Vec<(u64, Vec<i16>, Vec<i16>)>,
}

impl Harness {
    fn new() -> Self {
        Self::with(EngineConfig {
            record: RecordMode::Stereo,
            host: "test.example".into(),
            ..EngineConfig::default()
        })
    }

    fn with(cfg: EngineConfig) -> Self {
        Harness {
            engine: Engine::new(cfg),
            events: Vec::new(),
            stored: 0,
            audio: Vec::new(),
        }
    }

    fn drain(&mut self) {
        while let Some(o) = self.engine.poll_output() {
            match o {
                Output::Event(e) => self.events.push(e),
                Output::SegmentOpened { segment, .. } => {
                    self.audio.push((segment.0, Vec::new(), Vec::new()));
                }
                Output::Audio { segment, samples } => {
                    if let Some(s) = self.audio.iter_mut().find(|s| s.0 == segment.0) {
                        s.1.extend(samples.iter().step_by(2));
                        s.2.extend(samples.iter().skip(1).step_by(2));
                    }
                }
                Output::SegmentClosed { segment } => {
                    self.stored += 1;
                    let st = StoredSegment {
                        url: format!("https://media.example/{}.wav", segment.0),
                        content_hash: vcontap_vcon::content_hash(&segment.0.to_be_bytes()),
                        filename: format!("{}.wav", segment.0),
                        mediatype: "audio/x-wav".into(),
                    };
                    self.engine.handle_segment_stored(segment, st);
                }
            }
        }
    }

    fn feed(&mut self, ms: i64, src: &str, dst: &str, payload: &[u8]) {
        let d = Datagram {
            ts: Timestamp(T0 + ms * 1_000_000),
            src: a(src),
            dst: a(dst),
            transport: Transport::Udp,
            vlan: None,
            payload,
        };
        self.engine.handle_datagram(&d);
        self.drain();
    }

    fn sip(&mut self, ms: i64, src: &str, dst: &str, msg: &str) {
        self.feed(
            ms,
            src,
            dst,
            msg.replace("\r\n", "\n").replace('\n', "\r\n").as_bytes(),
        );
    }

    fn timeout(&mut self, ms: i64) {
        self.engine.handle_timeout(Timestamp(T0 + ms * 1_000_000));
        self.drain();
    }

    /// Final snapshots, each checked by the vcon crate's rules, by `validate-vcon` and for
    /// overlapping recordings.
    fn finished(&self) -> Vec<Value> {
        let all: Vec<Value> = self
            .events
            .iter()
            .filter(|e| e.kind == EventKind::Finished)
            .map(|e| {
                let v: Value = serde_json::from_str(&e.vcon_json).unwrap();
                let parsed: vcontap_vcon::Vcon = serde_json::from_value(v.clone()).unwrap();
                vcontap_vcon::check(&parsed).unwrap();
                assert_recordings_do_not_overlap(&v);
                v
            })
            .collect();
        common::validate_vcon(&all);
        all
    }

    fn finished_call(&self, call_id: &str) -> Value {
        self.finished()
            .into_iter()
            .find(|v| v["vcontap"]["sip_call_id"] == call_id)
            .unwrap_or_else(|| panic!("no finished vCon for {call_id}"))
    }
}

/// Milliseconds since the epoch of a vCon time (`…T00:00:01.234Z`).
fn millis(t: &str) -> i64 {
    let (date, time) = t.trim_end_matches('Z').split_once('T').unwrap();
    assert_eq!(date, "2026-01-01", "tests run on the first day of 2026");
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut parts = hms.split(':').map(|p| p.parse::<i64>().unwrap());
    let (h, m, s) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let frac: i64 = format!("{frac:0<3}")[..3].parse().unwrap();
    T0 / 1_000_000 + ((h * 60 + m) * 60 + s) * 1000 + frac
}

/// Every `recording` dialog of a vCon ends (start + duration, as written) no later than the
/// next one starts. Exact: the engine starts a segment that follows another on a whole
/// millisecond, so the written figures need no rounding tolerance.
fn assert_recordings_do_not_overlap(v: &Value) {
    let mut spans: Vec<(i64, i64)> = v["dialog"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["type"] == "recording")
        .map(|d| {
            let start = millis(d["start"].as_str().unwrap());
            let dur = (d["duration"].as_f64().unwrap() * 1000.0).round() as i64;
            (start, start + dur)
        })
        .collect();
    spans.sort();
    for w in spans.windows(2) {
        assert!(
            w[0].1 <= w[1].0,
            "recording [{}, {}] ms overlaps the next one starting at {} ms",
            w[0].0 - T0 / 1_000_000,
            w[0].1 - T0 / 1_000_000,
            w[1].0 - T0 / 1_000_000
        );
    }
}

const A: &str = "10.0.0.1:5060";
const B: &str = "10.0.0.2:5060";
const A_RTP: &str = "10.0.0.1:4000";
const B_RTP: &str = "10.0.0.2:6000";

/// An audio SDP offering `pts` (0 PCMU, 8 PCMA, 101 telephone-event).
fn sdp(ip: &str, port: u16, pts: &[u8], extra: &str) -> String {
    let mut s = format!(
        "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP"
    );
    for pt in pts {
        s += &format!(" {pt}");
    }
    s += "\r\n";
    for pt in pts {
        s += match pt {
            0 => "a=rtpmap:0 PCMU/8000\r\n",
            8 => "a=rtpmap:8 PCMA/8000\r\n",
            101 => "a=rtpmap:101 telephone-event/8000\r\n",
            _ => "",
        };
    }
    s + extra + "a=sendrecv\r\n"
}

#[allow(clippy::too_many_arguments)]
fn request(
    method: &str,
    call: &str,
    cseq: u32,
    from: (&str, &str),
    to: (&str, Option<&str>),
    body: &str,
) -> String {
    let to_tag = to.1.map(|t| format!(";tag={t}")).unwrap_or_default();
    let ct = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/sdp\n"
    };
    format!(
        "{method} sip:{}@example SIP/2.0\nVia: SIP/2.0/UDP h;branch=z9hG4bK{call}{cseq}{method}\nFrom: <sip:{}@example>;tag={}\nTo: <sip:{}@example>{to_tag}\nCall-ID: {call}\nCSeq: {cseq} {method}\n{ct}Content-Length: {}\n\n{body}",
        to.0,
        from.0,
        from.1,
        to.0,
        body.len()
    )
}

fn ok(
    call: &str,
    cseq: u32,
    method: &str,
    from: (&str, &str),
    to: (&str, &str),
    body: &str,
) -> String {
    let ct = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/sdp\n"
    };
    format!(
        "SIP/2.0 200 OK\nVia: SIP/2.0/UDP h;branch=z9hG4bK{call}{cseq}{method}\nFrom: <sip:{}@example>;tag={}\nTo: <sip:{}@example>;tag={}\nCall-ID: {call}\nCSeq: {cseq} {method}\n{ct}Content-Length: {}\n\n{body}",
        from.0,
        from.1,
        to.0,
        to.1,
        body.len()
    )
}

const ALICE: (&str, &str) = ("+15550001", "ta");
const BOB: (&str, &str) = ("+15550002", "tb");

/// INVITE/200/ACK between A and B; media at `A_RTP` and `B_RTP`, both offering `pts`.
fn answered(h: &mut Harness, call: &str, pts: &[u8], extra: &str) {
    h.sip(
        0,
        A,
        B,
        &request(
            "INVITE",
            call,
            1,
            ALICE,
            (BOB.0, None),
            &sdp("10.0.0.1", 4000, pts, extra),
        ),
    );
    h.sip(
        500,
        B,
        A,
        &ok(
            call,
            1,
            "INVITE",
            ALICE,
            BOB,
            &sdp("10.0.0.2", 6000, pts, extra),
        ),
    );
    h.sip(
        510,
        A,
        B,
        &request("ACK", call, 1, ALICE, (BOB.0, Some(BOB.1)), ""),
    );
}

fn bye(h: &mut Harness, ms: i64, call: &str) {
    h.sip(
        ms,
        A,
        B,
        &request("BYE", call, 2, ALICE, (BOB.0, Some(BOB.1)), ""),
    );
    h.sip(ms + 10, B, A, &ok(call, 2, "BYE", ALICE, BOB, ""));
}

fn rtp(seq: u16, ts: u32, ssrc: u32, pt: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0x80, pt, (seq >> 8) as u8, seq as u8];
    v.extend_from_slice(&ts.to_be_bytes());
    v.extend_from_slice(&ssrc.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// An RFC 4733 telephone-event payload.
fn event(digit: u8, end: bool, duration: u16) -> [u8; 4] {
    let d = duration.to_be_bytes();
    [digit, if end { 0x8a } else { 0x0a }, d[0], d[1]]
}

/// A RTCP sender report (PT 200) from `ssrc` with one report block about `about`.
fn sender_report(ssrc: u32, about: u32) -> Vec<u8> {
    let mut v = vec![0x81, 200, 0, 12];
    v.extend_from_slice(&ssrc.to_be_bytes());
    v.extend_from_slice(&[0; 20]); // NTP, RTP timestamp, counts
    v.extend_from_slice(&about.to_be_bytes());
    v.extend_from_slice(&[0; 20]); // loss, highest seq, jitter, LSR, DLSR
    v
}

/// A STUN Binding request (RFC 8489): type 0x0001, length 0, the magic cookie, a transaction id.
fn stun_binding() -> Vec<u8> {
    let mut v = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42];
    v.extend_from_slice(&[7; 12]);
    v
}

/// 20 ms G.711 µ-law packets in both directions from `from_ms` for `packets` packets, on
/// sequence numbers and timestamps that follow the clock. `content` is (caller, callee) bytes.
fn talk(h: &mut Harness, from_ms: i64, packets: u16, pt: u8, content: (u8, u8)) {
    for i in 0..packets {
        let ms = from_ms + i as i64 * 20;
        let k = (ms / 20) as u16;
        h.feed(
            ms,
            A_RTP,
            B_RTP,
            &rtp(
                100 + k,
                1000 + k as u32 * 160,
                0xAAAA,
                pt,
                &[content.0; 160],
            ),
        );
        h.feed(
            ms + 1,
            B_RTP,
            A_RTP,
            &rtp(
                500 + k,
                9000 + k as u32 * 160,
                0xBBBB,
                pt,
                &[content.1; 160],
            ),
        );
    }
}

fn streams(v: &Value) -> Vec<Value> {
    v["analysis"]
        .as_array()
        .and_then(|a| a.first())
        .map(|a| a["body"]["streams"].clone())
        .or_else(|| {
            v["vcontap"]
                .get("rtp_quality")
                .map(|q| q["streams"].clone())
        })
        .and_then(|s| s.as_array().cloned())
        .unwrap_or_default()
}

fn recordings(v: &Value) -> usize {
    v["dialog"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["type"] == "recording")
        .count()
}

// ---- 1. stray payload types and segment overlap ------------------------------------------

#[test]
fn stray_payload_types_neither_cut_the_recording_nor_name_a_codec() {
    let mut h = Harness::new();
    answered(&mut h, "stray", &[0, 101], "");
    talk(&mut h, 600, 50, 0, (0xFF, 0x7F));
    // A few packets inside the caller's stream with payload types nobody offered: 19 (reserved),
    // 8 (PCMA, static but not in either SDP) and 96 (dynamic, unmapped).
    for (i, pt) in [19u8, 8, 96, 19].into_iter().enumerate() {
        let ms = 1600 + i as i64 * 20;
        let k = (ms / 20) as u16;
        h.feed(
            ms,
            A_RTP,
            B_RTP,
            &rtp(100 + k, 1000 + k as u32 * 160, 0xAAAA, pt, &[0x55; 160]),
        );
    }
    talk(&mut h, 1680, 50, 0, (0xFF, 0x7F));
    bye(&mut h, 2800, "stray");
    let v = h.finished_call("stray");
    assert_eq!(
        recordings(&v),
        1,
        "a stray payload type does not cut the recording"
    );
    assert!(
        v["vcontap"].get("undecodable_codecs").is_none(),
        "{}",
        v["vcontap"]
    );
    let s = streams(&v);
    let caller = s.iter().find(|s| s["ssrc"] == "0x0000AAAA").unwrap();
    assert_eq!(caller["codecs"], serde_json::json!(["PCMU/8000"]));
    assert_eq!(caller["stray_payload_type_packets"], 4);
    assert_eq!(
        caller["lost"], 0,
        "stray packets still fill the sequence space"
    );
    assert_eq!(h.engine.stats().rtp_stray_payload_type, 4);
}

#[test]
fn a_payload_type_of_an_earlier_sdp_is_not_stray() {
    // A re-INVITE moves both sides to PCMA only, but the endpoints keep sending PCMU (as
    // the sipnab re-INVITE capture does): still recorded, not stray.
    let mut h = Harness::new();
    answered(&mut h, "lag", &[0, 101], "");
    talk(&mut h, 600, 25, 0, (0x80, 0x80));
    let from_b = (BOB.0, Some(BOB.1));
    h.sip(
        1100,
        A,
        B,
        &request(
            "INVITE",
            "lag",
            2,
            ALICE,
            from_b,
            &sdp("10.0.0.1", 4000, &[8], ""),
        ),
    );
    h.sip(
        1150,
        B,
        A,
        &ok(
            "lag",
            2,
            "INVITE",
            ALICE,
            BOB,
            &sdp("10.0.0.2", 6000, &[8], ""),
        ),
    );
    h.sip(1160, A, B, &request("ACK", "lag", 2, ALICE, from_b, ""));
    talk(&mut h, 1200, 50, 0, (0x80, 0x80));
    bye(&mut h, 2300, "lag");
    let v = h.finished_call("lag");
    assert_eq!(recordings(&v), 1);
    assert!(
        (v["dialog"][0]["duration"].as_f64().unwrap() - 1.7).abs() < 0.05,
        "{}",
        v["dialog"][0]
    );
    assert_eq!(h.engine.stats().rtp_stray_payload_type, 0);
    let loud = h.audio[0].1.iter().filter(|s| s.abs() > 1000).count();
    assert!(
        loud > 11_000,
        "the PCMU after the re-INVITE is recorded: {loud}"
    );
}

#[test]
fn codec_change_cuts_into_segments_that_do_not_overlap() {
    let mut h = Harness::new();
    answered(&mut h, "cut", &[0, 8, 101], "");
    talk(&mut h, 600, 50, 0, (0xFF, 0x7F));
    // Both sides move to PCMA (offered): a codec change cuts the recording.
    talk(&mut h, 1600, 50, 8, (0xD5, 0x55));
    talk(&mut h, 2600, 50, 0, (0xFF, 0x7F));
    bye(&mut h, 3700, "cut");
    let v = h.finished_call("cut");
    assert_eq!(recordings(&v), 3, "{}", v["dialog"]);
}

// ---- 2. jitter without telephone-events, per-stream SSRC changes -------------------------

#[test]
fn telephone_events_stay_out_of_jitter_and_their_end_retransmissions_are_not_duplicates() {
    let mut h = Harness::new();
    answered(&mut h, "dtmf", &[0, 101], "");
    // 3 s of steady caller audio; at 1.0 s a digit: 5 updates then the end packet three
    // times. The first digit's ends reuse one sequence number (RFC 2833 senders), the
    // second digit's ends take one each (RFC 4733 §2.5.1.4 allows both).
    let mut seq = 100u16;
    let mut ms = 600;
    let voice = |h: &mut Harness, ms: i64, seq: &mut u16| {
        h.feed(
            ms,
            A_RTP,
            B_RTP,
            &rtp(*seq, ms as u32 * 8, 0xAAAA, 0, &[0xFF; 160]),
        );
        *seq += 1;
    };
    for digit in [5u8, 7] {
        for _ in 0..20 {
            voice(&mut h, ms, &mut seq);
            ms += 20;
        }
        let ts = ms as u32 * 8;
        for u in 1..=5u16 {
            h.feed(
                ms,
                A_RTP,
                B_RTP,
                &rtp(seq, ts, 0xAAAA, 101, &event(digit, false, u * 160)),
            );
            seq += 1;
            ms += 20;
        }
        for _ in 0..3 {
            h.feed(
                ms,
                A_RTP,
                B_RTP,
                &rtp(seq, ts, 0xAAAA, 101, &event(digit, true, 960)),
            );
            if digit == 7 {
                seq += 1;
            }
            ms += 20;
        }
        if digit == 5 {
            seq += 1;
        }
    }
    for _ in 0..20 {
        voice(&mut h, ms, &mut seq);
        ms += 20;
    }
    // One real duplicate of a voice packet still counts.
    h.feed(
        ms,
        A_RTP,
        B_RTP,
        &rtp(seq - 1, (ms as u32 - 20) * 8, 0xAAAA, 0, &[0xFF; 160]),
    );
    bye(&mut h, ms + 100, "dtmf");
    let v = h.finished_call("dtmf");
    let s = streams(&v);
    let caller = s.iter().find(|s| s["ssrc"] == "0x0000AAAA").unwrap();
    assert_eq!(caller["lost"], 0, "{caller}");
    assert_eq!(
        caller["duplicates"], 1,
        "only the voice duplicate: {caller}"
    );
    let jitter = caller["jitter_ms"].as_f64().unwrap();
    assert!(
        jitter < 0.1,
        "events on one timestamp are not jitter: {jitter}"
    );
    assert!(caller["max_jitter_ms"].as_f64().unwrap() < 0.1, "{caller}");
    let r = caller["quality_estimate"]["r_factor"].as_f64().unwrap();
    assert!(r >= 92.9, "the E-model follows the jitter: {r}");
    let history = v["dialog"][0]["party_history"].as_array().unwrap();
    let keys: Vec<&str> = history
        .iter()
        .filter_map(|e| e["button"].as_str())
        .collect();
    assert_eq!(keys, ["5", "5", "7", "7"], "one down and one up per digit");
}

#[test]
fn ssrc_changes_are_counted_on_the_stream_that_took_over() {
    let mut h = Harness::new();
    answered(&mut h, "ssrc", &[0, 101], "");
    talk(&mut h, 600, 50, 0, (0xFF, 0x7F));
    // The caller restarts its sender: a new SSRC on the same addresses.
    for i in 0..50u16 {
        let ms = 1600 + i as i64 * 20;
        h.feed(
            ms,
            A_RTP,
            B_RTP,
            &rtp(7000 + i, 50_000 + i as u32 * 160, 0xCCCC, 0, &[0xFF; 160]),
        );
        let k = (ms / 20) as u16;
        h.feed(
            ms + 1,
            B_RTP,
            A_RTP,
            &rtp(500 + k, 9000 + k as u32 * 160, 0xBBBB, 0, &[0x7F; 160]),
        );
    }
    // An announcement server sends to the caller from elsewhere with its own SSRC: another
    // address pair, not a change of the callee's stream.
    for i in 0..10u16 {
        let ms = 2600 + i as i64 * 20;
        h.feed(
            ms,
            "10.0.0.9:8000",
            A_RTP,
            &rtp(i, i as u32 * 160, 0xDDDD, 0, &[0x7F; 160]),
        );
    }
    bye(&mut h, 2900, "ssrc");
    let v = h.finished_call("ssrc");
    let s = streams(&v);
    let changes = |ssrc: &str| {
        s.iter()
            .find(|x| x["ssrc"] == ssrc)
            .unwrap_or_else(|| panic!("no stream {ssrc}"))["ssrc_changes"]
            .clone()
    };
    assert_eq!(changes("0x0000AAAA"), 0);
    assert_eq!(
        changes("0x0000CCCC"),
        1,
        "the new SSRC replaced 0xAAAA once"
    );
    assert_eq!(changes("0x0000BBBB"), 0, "the callee never changed");
    assert_eq!(changes("0x0000DDDD"), 0);
}

// ---- 3. RTCP on the RTP port, STUN ---------------------------------------------------------

#[test]
fn rtcp_on_the_rtp_port_is_rtcp_and_stun_is_not_rtp() {
    let mut h = Harness::new();
    // No rtcp-mux in either SDP; the endpoints multiplex anyway (RFC 5761 demux applies).
    answered(&mut h, "mux", &[0, 101], "");
    // ICE connectivity checks on the media ports before and during the call.
    h.feed(590, A_RTP, B_RTP, &stun_binding());
    talk(&mut h, 600, 50, 0, (0xFF, 0x7F));
    for i in 0..3 {
        let ms = 1000 + i * 500;
        h.feed(ms, A_RTP, B_RTP, &sender_report(0xAAAA, 0xBBBB));
        h.feed(ms + 2, B_RTP, A_RTP, &sender_report(0xBBBB, 0xAAAA));
        h.feed(ms + 3, B_RTP, A_RTP, &stun_binding());
    }
    // STUN between addresses nobody announced is not an orphan RTP flow either.
    h.feed(1700, "10.0.0.7:3478", "10.0.0.8:40000", &stun_binding());
    talk(&mut h, 1600, 50, 0, (0xFF, 0x7F));
    bye(&mut h, 2700, "mux");
    let v = h.finished_call("mux");
    let s = streams(&v);
    assert_eq!(s.len(), 2, "two voice streams, no RTCP 'stream': {s:?}");
    for st in &s {
        assert_eq!(st["codecs"], serde_json::json!(["PCMU/8000"]), "{st}");
        assert_eq!(st["rtcp"]["sender_reports"], 3, "{st}");
    }
    assert!(
        v["vcontap"].get("undecodable_codecs").is_none(),
        "{}",
        v["vcontap"]
    );
    assert_eq!(recordings(&v), 1);
    let st = h.engine.stats();
    assert_eq!(st.rtcp_packets, 6);
    assert_eq!(st.stun_packets, 5);
    assert_eq!(st.rtp_packets, 200);
    assert_eq!((st.rtp_orphan_packets, st.orphan_flows), (0, 0));
}

// ---- 4. orphan RTP must look like RTP ---------------------------------------------------------

#[test]
fn only_rtp_looking_flows_are_orphan_rtp() {
    let mut h = Harness::new();
    // Payloads whose first byte happens to read as RTP version 2, on well-known non-RTP ports:
    // a DNS query with id 0x80xx, NetBIOS name/datagram service, mDNS, SSDP, NTP.
    let lookalike = rtp(1, 0, 0x1234, 0, &[0; 20]);
    for (src, dst) in [
        ("10.0.0.3:40000", "10.0.0.53:53"),
        ("10.0.0.53:53", "10.0.0.3:40000"),
        ("10.0.0.3:137", "10.0.0.255:137"),
        ("10.0.0.3:138", "10.0.0.255:138"),
        ("10.0.0.3:5353", "224.0.0.251:5353"),
        ("10.0.0.3:40001", "239.255.255.250:1900"),
        ("10.0.0.3:123", "10.0.0.4:123"),
    ] {
        h.feed(0, src, dst, &lookalike);
        h.feed(20, src, dst, &rtp(2, 160, 0x1234, 0, &[0; 20]));
    }
    // Version 2 but an unassigned payload type (RFC 3551 leaves 35..=71 and 77..=95 unassigned).
    for i in 0..5u16 {
        h.feed(
            40 + i as i64,
            "10.0.0.3:41000",
            "10.0.0.4:41000",
            &rtp(i, 0, 0x99, 50, &[0; 20]),
        );
    }
    // A single RTP-looking packet is not yet a flow; its successor (same SSRC, seq + 1) is.
    h.feed(
        100,
        "10.0.0.5:30000",
        "10.0.0.6:30000",
        &rtp(10, 0, 0x5555, 0, &[0; 160]),
    );
    assert_eq!(h.engine.stats().orphan_flows, 0);
    h.feed(
        120,
        "10.0.0.5:30000",
        "10.0.0.6:30000",
        &rtp(11, 160, 0x5555, 0, &[0; 160]),
    );
    // A one-off RTP-looking datagram that never repeats is not orphan RTP.
    h.feed(
        130,
        "10.0.0.7:30000",
        "10.0.0.8:30000",
        &rtp(10, 0, 0x7777, 8, &[0; 160]),
    );
    let st = h.engine.stats().clone();
    assert_eq!(st.orphan_flows, 1, "{st:?}");
    assert_eq!(st.rtp_orphan_packets, 2, "{st:?}");
    assert_eq!(st.udp_other, 14 + 5, "{st:?}");
    // Idle flows are forgotten and counted; the unconfirmed one-off becomes `udp_other`.
    h.timeout(200_000);
    let st = h.engine.stats().clone();
    assert_eq!(st.orphan_flows_expired, 1, "{st:?}");
    assert_eq!(st.udp_other, 14 + 5 + 1, "{st:?}");
    assert!(st.pairs().contains(&("orphan_flows_expired", 1)));
}

// ---- 5. B2BUA with direct media on both legs -------------------------------------------------

#[test]
fn b2bua_direct_media_reaches_both_legs() {
    // Alice (10.0.0.1) calls the B2BUA (10.0.0.5), which calls Bob (10.0.0.2) on a second
    // Call-ID. Media is anchored on the B2BUA first, then both legs are re-INVITEd onto
    // direct media between 10.0.0.1:4000 and 10.0.0.2:6000.
    const X: &str = "10.0.0.5:5060";
    const X_RTP1: &str = "10.0.0.5:20000";
    const X_RTP2: &str = "10.0.0.5:20002";
    let mut h = Harness::new();
    let pts = [0u8, 101];
    let b2b = ("b2bua", "tx");
    let b2b2 = ("b2bua", "ty");
    h.sip(
        0,
        A,
        X,
        &request(
            "INVITE",
            "leg1",
            1,
            ALICE,
            ("b2bua", None),
            &sdp("10.0.0.1", 4000, &pts, ""),
        ),
    );
    h.sip(
        10,
        X,
        B,
        &request(
            "INVITE",
            "leg2",
            1,
            b2b2,
            (BOB.0, None),
            &sdp("10.0.0.5", 20002, &pts, ""),
        ),
    );
    h.sip(
        500,
        B,
        X,
        &ok(
            "leg2",
            1,
            "INVITE",
            b2b2,
            BOB,
            &sdp("10.0.0.2", 6000, &pts, ""),
        ),
    );
    h.sip(
        510,
        X,
        B,
        &request("ACK", "leg2", 1, b2b2, (BOB.0, Some(BOB.1)), ""),
    );
    h.sip(
        520,
        X,
        A,
        &ok(
            "leg1",
            1,
            "INVITE",
            ALICE,
            b2b,
            &sdp("10.0.0.5", 20000, &pts, ""),
        ),
    );
    h.sip(
        530,
        A,
        X,
        &request("ACK", "leg1", 1, ALICE, (b2b.0, Some(b2b.1)), ""),
    );
    // Anchored media for one second.
    for i in 0..50u16 {
        let ms = 600 + i as i64 * 20;
        let ts = i as u32 * 160;
        h.feed(ms, A_RTP, X_RTP1, &rtp(i, ts, 0xA1, 0, &[0xFF; 160]));
        h.feed(ms + 1, X_RTP2, B_RTP, &rtp(i, ts, 0xA2, 0, &[0xFF; 160]));
        h.feed(ms + 2, B_RTP, X_RTP2, &rtp(i, ts, 0xB1, 0, &[0x7F; 160]));
        h.feed(ms + 3, X_RTP1, A_RTP, &rtp(i, ts, 0xB2, 0, &[0x7F; 160]));
    }
    // Re-INVITEs: each party is told the other's address.
    h.sip(
        1600,
        X,
        A,
        &request(
            "INVITE",
            "leg1",
            2,
            b2b,
            (ALICE.0, Some(ALICE.1)),
            &sdp("10.0.0.2", 6000, &pts, ""),
        ),
    );
    h.sip(
        1610,
        X,
        B,
        &request(
            "INVITE",
            "leg2",
            2,
            b2b2,
            (BOB.0, Some(BOB.1)),
            &sdp("10.0.0.1", 4000, &pts, ""),
        ),
    );
    h.sip(
        1650,
        A,
        X,
        &ok(
            "leg1",
            2,
            "INVITE",
            b2b,
            ALICE,
            &sdp("10.0.0.1", 4000, &pts, ""),
        ),
    );
    h.sip(
        1660,
        B,
        X,
        &ok(
            "leg2",
            2,
            "INVITE",
            b2b2,
            BOB,
            &sdp("10.0.0.2", 6000, &pts, ""),
        ),
    );
    h.sip(
        1670,
        X,
        A,
        &request("ACK", "leg1", 2, b2b, (ALICE.0, Some(ALICE.1)), ""),
    );
    h.sip(
        1680,
        X,
        B,
        &request("ACK", "leg2", 2, b2b2, (BOB.0, Some(BOB.1)), ""),
    );
    // Direct media for two seconds: Alice sends 0xFF (loud positive), Bob 0x7F (silence-ish
    // µ-law zero) would not tell channels apart, so Bob sends 0x80 (loud positive) too.
    for i in 50..150u16 {
        let ms = 1700 + (i - 50) as i64 * 20;
        let ts = i as u32 * 160;
        h.feed(ms, A_RTP, B_RTP, &rtp(i, ts, 0xA1, 0, &[0x80; 160]));
        h.feed(ms + 1, B_RTP, A_RTP, &rtp(i, ts, 0xB1, 0, &[0x80; 160]));
    }
    h.sip(
        3800,
        A,
        X,
        &request("BYE", "leg1", 2, ALICE, (b2b.0, Some(b2b.1)), ""),
    );
    h.sip(3810, X, A, &ok("leg1", 2, "BYE", ALICE, b2b, ""));
    h.sip(
        3820,
        X,
        B,
        &request("BYE", "leg2", 3, b2b2, (BOB.0, Some(BOB.1)), ""),
    );
    h.sip(3830, B, X, &ok("leg2", 3, "BYE", b2b2, BOB, ""));
    let all = h.finished();
    for call in ["leg1", "leg2"] {
        let v = all
            .iter()
            .find(|v| v["vcontap"]["sip_call_id"] == call)
            .unwrap();
        let s = streams(v);
        for (src, dst) in [(A_RTP, B_RTP), (B_RTP, A_RTP)] {
            let st = s
                .iter()
                .find(|x| x["src"] == src && x["dst"] == dst)
                .unwrap_or_else(|| panic!("{call} lacks the direct stream {src} -> {dst}: {s:?}"));
            assert_eq!(st["packets"], 100, "{call}: {st}");
        }
    }
    // Both legs' recordings have the direct audio on both channels from its first packet:
    // the re-INVITE moved the media, so the direct stream takes over at once.
    assert_eq!(h.audio.len(), 2, "one recording per leg");
    for (seg, left, right) in &h.audio {
        let tail = |ch: &Vec<i16>| ch[8000..].iter().filter(|s| s.abs() > 1000).count();
        assert!(
            tail(left) >= 15_900,
            "segment {seg}: left channel silent in direct media"
        );
        assert!(
            tail(right) >= 15_900,
            "segment {seg}: right channel silent in direct media"
        );
    }
}

// ---- 6. every counter is counted ---------------------------------------------------------------

#[test]
fn segment_and_event_counters_follow_the_outputs() {
    let mut h = Harness::new();
    answered(&mut h, "count", &[0, 8, 101], "");
    talk(&mut h, 600, 50, 0, (0xFF, 0x7F));
    talk(&mut h, 1600, 50, 8, (0xD5, 0x55));
    bye(&mut h, 2700, "count");
    let st = h.engine.stats();
    assert_eq!(st.segments, 2);
    assert_eq!(st.segments, h.stored as u64);
    assert_eq!(st.events, h.events.len() as u64);
    assert!(
        st.events >= 4,
        "created, updated, two segments, finished: {}",
        st.events
    );
}
