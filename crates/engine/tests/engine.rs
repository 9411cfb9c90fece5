//! Engine scenarios in virtual time: hand-written SIP/RTP datagrams go in, the outputs and
//! the vCon snapshots are checked. No sockets, no clock, no files (the test plays the driver,
//! including storing segments).

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

struct Harness {
    engine: Engine,
    events: Vec<Arc<VconEvent>>,
    audio_frames: usize,
    stored: usize,
    left: Vec<i16>,
    right: Vec<i16>,
}

impl Harness {
    fn new(record: RecordMode) -> Self {
        Self::with(EngineConfig {
            record,
            host: "test.example".into(),
            ..EngineConfig::default()
        })
    }

    fn with(cfg: EngineConfig) -> Self {
        Harness {
            engine: Engine::new(cfg),
            events: Vec::new(),
            audio_frames: 0,
            stored: 0,
            left: Vec::new(),
            right: Vec::new(),
        }
    }

    fn drain(&mut self) {
        while let Some(o) = self.engine.poll_output() {
            match o {
                Output::Event(e) => self.events.push(e),
                Output::Audio { samples, .. } => {
                    self.audio_frames += samples.len() / 2;
                    self.left.extend(samples.iter().step_by(2));
                    self.right.extend(samples.iter().skip(1).step_by(2));
                }
                Output::SegmentOpened { .. } => {}
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
        // The driver's contract: timers due at the packet's time run first.
        if d.ts >= self.engine.poll_timeout() {
            self.engine.handle_timeout(d.ts);
            self.drain();
        }
        self.engine.handle_datagram(&d);
        self.drain();
    }

    fn sip(&mut self, ms: i64, src: &str, dst: &str, msg: &str) {
        // Bodies are built with CRLF already (their Content-Length counts it); normalize the rest.
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

    fn finish(&mut self, ms: i64) {
        self.engine.finish_all(Timestamp(T0 + ms * 1_000_000));
        self.drain();
    }

    fn last(&self) -> Value {
        serde_json::from_str(&self.events.last().expect("an event").vcon_json).unwrap()
    }

    fn kinds(&self) -> Vec<EventKind> {
        self.events.iter().map(|e| e.kind).collect()
    }

    fn finished(&self) -> Vec<Value> {
        self.events
            .iter()
            .filter(|e| e.kind == EventKind::Finished)
            .map(|e| serde_json::from_str(&e.vcon_json).unwrap())
            .collect()
    }
}

const A: &str = "10.0.0.1:5060";
const B: &str = "10.0.0.2:5060";

fn sdp(ip: &str, port: u16, pt: u8, dir: &str) -> String {
    let name = match pt {
        0 => "PCMU/8000",
        8 => "PCMA/8000",
        18 => "G729/8000",
        _ => "PCMU/8000",
    };
    format!(
        "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP {pt} 101\r\na=rtpmap:{pt} {name}\r\na=rtpmap:101 telephone-event/8000\r\na={dir}\r\n"
    )
}

fn invite(call: &str, cseq: u32, body: &str, extra: &str) -> String {
    format!(
        "INVITE sip:+15550002@b.example SIP/2.0\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK{cseq}\nFrom: \"Alice A\" <sip:+15550001@a.example;user=phone>;tag=ta\nTo: <sip:+15550002@b.example>\nCall-ID: {call}\nCSeq: {cseq} INVITE\n{extra}Content-Type: application/sdp\nContent-Length: {}\n\n{body}",
        body.len()
    )
}

fn response(
    call: &str,
    code: u16,
    reason: &str,
    cseq: u32,
    method: &str,
    to_tag: Option<&str>,
    body: &str,
) -> String {
    let tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
    let ct = if body.is_empty() {
        String::new()
    } else {
        "Content-Type: application/sdp\n".to_string()
    };
    format!(
        "SIP/2.0 {code} {reason}\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK{cseq}\nFrom: \"Alice A\" <sip:+15550001@a.example;user=phone>;tag=ta\nTo: <sip:+15550002@b.example>{tag}\nCall-ID: {call}\nCSeq: {cseq} {method}\n{ct}Content-Length: {}\n\n{body}",
        body.len()
    )
}

fn request(
    method: &str,
    call: &str,
    cseq: u32,
    from_caller: bool,
    extra: &str,
    ct: &str,
    body: &str,
) -> String {
    let (from, to) = if from_caller {
        (
            "<sip:+15550001@a.example>;tag=ta",
            "<sip:+15550002@b.example>;tag=tb",
        )
    } else {
        (
            "<sip:+15550002@b.example>;tag=tb",
            "<sip:+15550001@a.example>;tag=ta",
        )
    };
    let ctl = if ct.is_empty() {
        String::new()
    } else {
        format!("Content-Type: {ct}\n")
    };
    format!(
        "{method} sip:x@example SIP/2.0\nVia: SIP/2.0/UDP h;branch=z9hG4bKr{cseq}\nFrom: {from}\nTo: {to}\nCall-ID: {call}\nCSeq: {cseq} {method}\n{extra}{ctl}Content-Length: {}\n\n{body}",
        body.len()
    )
}

fn rtp(seq: u16, ts: u32, ssrc: u32, pt: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0x80, pt, (seq >> 8) as u8, seq as u8];
    v.extend_from_slice(&ts.to_be_bytes());
    v.extend_from_slice(&ssrc.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// INVITE/180/200/ACK between A and B with media at 10.0.0.1:4000 and 10.0.0.2:6000.
fn answered(h: &mut Harness, call: &str) {
    h.sip(
        0,
        A,
        B,
        &invite(call, 1, &sdp("10.0.0.1", 4000, 0, "sendrecv"), ""),
    );
    h.sip(
        50,
        B,
        A,
        &response(call, 180, "Ringing", 1, "INVITE", Some("tb"), ""),
    );
    h.sip(
        1000,
        B,
        A,
        &response(
            call,
            200,
            "OK",
            1,
            "INVITE",
            Some("tb"),
            &sdp("10.0.0.2", 6000, 0, "sendrecv"),
        ),
    );
    h.sip(1010, A, B, &request("ACK", call, 1, true, "", "", ""));
}

fn talk(h: &mut Harness, from_ms: i64, packets: u16) {
    for i in 0..packets {
        let ms = from_ms + i as i64 * 20;
        // Sequence numbers and timestamps follow the clock, as a real sender's would.
        let k = (ms / 20) as u16;
        h.feed(
            ms,
            "10.0.0.1:4000",
            "10.0.0.2:6000",
            &rtp(100 + k, 1000 + k as u32 * 160, 0xAAAA, 0, &[0xFF; 160]),
        );
        h.feed(
            ms + 1,
            "10.0.0.2:6000",
            "10.0.0.1:4000",
            &rtp(500 + k, 9000 + k as u32 * 160, 0xBBBB, 0, &[0x7F; 160]),
        );
    }
}

#[test]
fn basic_call_lifecycle_and_events() {
    let mut h = Harness::new(RecordMode::Stereo);
    answered(&mut h, "c1");
    assert_eq!(h.kinds(), vec![EventKind::Created, EventKind::Updated]);
    let v = h.last();
    assert_eq!(v["parties"][0]["tel"], "+15550001");
    assert_eq!(v["parties"][0]["name"], "Alice A");
    assert_eq!(v["parties"][1]["tel"], "+15550002");
    assert_eq!(v["vcontap"]["state"], "answered");
    talk(&mut h, 1100, 100);
    h.sip(3200, A, B, &request("BYE", "c1", 2, true, "", "", ""));
    h.sip(
        3210,
        B,
        A,
        &response("c1", 200, "OK", 2, "BYE", Some("tb"), ""),
    );
    assert_eq!(h.kinds().last(), Some(&EventKind::Finished));
    assert!(h.kinds().contains(&EventKind::Segment));
    let v = h.last();
    let d = &v["dialog"][0];
    assert_eq!(d["type"], "recording");
    // From the first packet (1.1 s) to the BYE (3.2 s): the recording runs to the end of the call.
    assert!((d["duration"].as_f64().unwrap() - 2.1).abs() < 0.05, "{d}");
    assert_eq!(d["sip_call_id"], "c1");
    assert_eq!(d["sip_from_tag"], "ta");
    assert_eq!(d["sip_to_tag"], "tb");
    assert_eq!(v["vcontap"]["end_reason"], "bye");
    let q = &v["analysis"][0]["body"]["streams"];
    assert_eq!(q.as_array().unwrap().len(), 2);
    assert_eq!(q[0]["packets"], 100);
    assert_eq!(q[0]["lost"], 0);
    // No loss, no jitter: the E-model's best G.711 case (R 93.2 minus the jitter buffer).
    let r = q[0]["quality_estimate"]["r_factor"].as_f64().unwrap();
    let mos = q[0]["quality_estimate"]["mos_cq"].as_f64().unwrap();
    assert!((92.5..=93.2).contains(&r), "{r}");
    assert!((4.35..=4.45).contains(&mos), "{mos}");
    assert!(
        h.audio_frames >= 15_000,
        "about 2 s of stereo at 8 kHz: {}",
        h.audio_frames
    );
    assert_eq!(h.engine.open_calls(), 0);
    let parsed: vcontap_vcon::Vcon = serde_json::from_value(v).unwrap();
    vcontap_vcon::check(&parsed).unwrap();
}

#[test]
fn outcomes_map_to_dispositions() {
    for (code, reason, disp) in [
        (486, "Busy Here", Some("busy")),
        (600, "Busy Everywhere", Some("busy")),
        (480, "Temporarily Unavailable", Some("no-answer")),
        (408, "Request Timeout", Some("no-answer")),
        (503, "Service Unavailable", Some("congestion")),
        (404, "Not Found", Some("failed")),
        (603, "Decline", Some("failed")),
        (302, "Moved Temporarily", None),
    ] {
        let mut h = Harness::new(RecordMode::Stereo);
        h.sip(
            0,
            A,
            B,
            &invite("f", 1, &sdp("10.0.0.1", 4000, 0, "sendrecv"), ""),
        );
        h.sip(
            100,
            B,
            A,
            &response("f", code, reason, 1, "INVITE", Some("tb"), ""),
        );
        assert!(
            h.finished().is_empty(),
            "{code}: lingers for the ACK and stragglers"
        );
        h.sip(
            110,
            A,
            B,
            &request("ACK", "f", 1, true, "", "", "")
                .replace("branch=z9hG4bKr1", "branch=z9hG4bK1"),
        );
        h.timeout(5200);
        let fin = h.finished();
        assert_eq!(fin.len(), 1, "{code} finishes the call after the linger");
        let v = &fin[0];
        assert_eq!(v["vcontap"]["sip_final_status"], code);
        match disp {
            Some(d) => {
                assert_eq!(v["dialog"][0]["type"], "incomplete", "{code}");
                assert_eq!(v["dialog"][0]["disposition"], d, "{code}");
                assert_eq!(v["attachments"][0]["purpose"], "sip-message-trace");
                let trace = &v["attachments"][0]["body"]["messages"];
                assert_eq!(trace[2]["method"], "ACK", "{code}: the ACK is in the trace");
                // The call ended with the final response, not when the linger did.
                assert!((v["dialog"][0]["duration"].as_f64().unwrap() - 0.1).abs() < 0.001);
                assert!(
                    v["vcontap"]["answer_inferred"].is_null(),
                    "an ACK to a failure"
                );
            }
            None => assert!(v["dialog"].is_null(), "a redirect is not a failure"),
        }
    }
}

#[test]
fn cancel_then_487_is_no_answer_and_200_after_cancel_wins() {
    let mut h = Harness::new(RecordMode::None);
    h.sip(
        0,
        A,
        B,
        &invite("x", 1, &sdp("10.0.0.1", 4000, 0, "sendrecv"), ""),
    );
    h.sip(
        100,
        B,
        A,
        &response("x", 180, "Ringing", 1, "INVITE", Some("tb"), ""),
    );
    h.sip(
        5000,
        A,
        B,
        &request("CANCEL", "x", 1, true, "", "", "").replace("tag=tb", "x=y"),
    );
    h.sip(
        5010,
        B,
        A,
        &response("x", 200, "OK", 1, "CANCEL", Some("tb"), ""),
    );
    h.sip(
        5020,
        B,
        A,
        &response("x", 487, "Request Terminated", 1, "INVITE", Some("tb"), ""),
    );
    h.timeout(11_000);
    let v = &h.finished()[0];
    assert_eq!(v["vcontap"]["end_reason"], "cancel");
    assert_eq!(v["dialog"][0]["disposition"], "no-answer");
    assert!((v["dialog"][0]["duration"].as_f64().unwrap() - 5.02).abs() < 0.01);

    // CANCEL crossing a 200: the call was answered.
    let mut h = Harness::new(RecordMode::None);
    h.sip(
        0,
        A,
        B,
        &invite("y", 1, &sdp("10.0.0.1", 4000, 0, "sendrecv"), ""),
    );
    h.sip(
        5000,
        A,
        B,
        &request("CANCEL", "y", 1, true, "", "", "").replace("tag=tb", "x=y"),
    );
    h.sip(
        5001,
        B,
        A,
        &response(
            "y",
            200,
            "OK",
            1,
            "INVITE",
            Some("tb"),
            &sdp("10.0.0.2", 6000, 0, "sendrecv"),
        ),
    );
    h.timeout(20_000);
    assert!(h.finished().is_empty(), "answered call stays open");
    assert_eq!(h.last()["vcontap"]["state"], "answered");
}

#[test]
fn auth_challenge_then_answer_is_one_call() {
    let mut h = Harness::new(RecordMode::None);
    h.sip(
        0,
        A,
        B,
        &invite("auth", 1, &sdp("10.0.0.1", 4000, 0, "sendrecv"), ""),
    );
    h.sip(
        10,
        B,
        A,
        &response(
            "auth",
            407,
            "Proxy Authentication Required",
            1,
            "INVITE",
            Some("p1"),
            "",
        ),
    );
    h.sip(20, A, B, &request("ACK", "auth", 1, true, "", "", ""));
    assert!(h.finished().is_empty(), "a challenge is not the outcome");
    h.sip(
        30,
        A,
        B,
        &invite(
            "auth",
            2,
            &sdp("10.0.0.1", 4000, 0, "sendrecv"),
            "Proxy-Authorization: Digest username=\"a\", response=\"secret\"\n",
        ),
    );
    h.sip(
        900,
        B,
        A,
        &response(
            "auth",
            200,
            "OK",
            2,
            "INVITE",
            Some("tb"),
            &sdp("10.0.0.2", 6000, 0, "sendrecv"),
        ),
    );
    h.sip(2000, A, B, &request("BYE", "auth", 3, true, "", "", ""));
    h.sip(
        2010,
        B,
        A,
        &response("auth", 200, "OK", 3, "BYE", Some("tb"), ""),
    );
    let fin = h.finished();
    assert_eq!(fin.len(), 1);
    assert_eq!(fin[0]["vcontap"]["end_reason"], "bye");
    assert!(
        !fin[0].to_string().contains("secret"),
        "credentials never reach the vCon"
    );

    // A challenge that is never answered ends as failed after the wait.
    let mut h = Harness::new(RecordMode::None);
    h.sip(
        0,
        A,
        B,
        &invite("auth2", 1, &sdp("10.0.0.1", 4000, 0, "sendrecv"), ""),
    );
    h.sip(
        10,
        B,
        A,
        &response("auth2", 401, "Unauthorized", 1, "INVITE", Some("p1"), ""),
    );
    h.timeout(40_000);
    assert!(
        h.finished().is_empty(),
        "a slow user may still answer the challenge"
    );
    h.timeout(301_000);
    let fin = h.finished();
    assert_eq!(fin[0]["dialog"][0]["disposition"], "failed");
    assert!(
        (fin[0]["dialog"][0]["duration"].as_f64().unwrap() - 0.01).abs() < 1e-6,
        "the call ended at the challenge"
    );
}

#[test]
fn hold_resume_dtmf_and_info_become_party_history_and_segments() {
    let mut h = Harness::new(RecordMode::Stereo);
    answered(&mut h, "h");
    talk(&mut h, 1100, 50);
    // RFC 4733 digit 5 from the caller: 3 event packets, 3 end retransmissions.
    for (i, (end, dur)) in [
        (false, 160u16),
        (false, 320),
        (false, 480),
        (true, 640),
        (true, 640),
        (true, 640),
    ]
    .iter()
    .enumerate()
    {
        let ev = [
            5u8,
            if *end { 0x80 } else { 0 } | 10,
            (dur >> 8) as u8,
            *dur as u8,
        ];
        h.feed(
            2200 + i as i64 * 20,
            "10.0.0.1:4000",
            "10.0.0.2:6000",
            &rtp(210 + i as u16, 50_000, 0xAAAA, 101, &ev),
        );
    }
    // Hold from the caller, then resume.
    h.sip(
        3000,
        A,
        B,
        &request(
            "INVITE",
            "h",
            2,
            true,
            "",
            "application/sdp",
            &sdp("10.0.0.1", 4000, 0, "sendonly"),
        ),
    );
    h.sip(
        3010,
        B,
        A,
        &response(
            "h",
            200,
            "OK",
            2,
            "INVITE",
            Some("tb"),
            &sdp("10.0.0.2", 6000, 0, "recvonly"),
        ),
    );
    talk(&mut h, 3100, 20);
    h.sip(
        4000,
        A,
        B,
        &request(
            "INVITE",
            "h",
            3,
            true,
            "",
            "application/sdp",
            &sdp("10.0.0.1", 4000, 0, "sendrecv"),
        ),
    );
    h.sip(
        4500,
        B,
        A,
        &request(
            "INFO",
            "h",
            1,
            false,
            "",
            "application/dtmf-relay",
            "Signal=#\r\nDuration=160\r\n",
        ),
    );
    talk(&mut h, 4600, 20);
    h.sip(5200, B, A, &request("BYE", "h", 2, false, "", "", ""));
    h.sip(
        5210,
        A,
        B,
        &response("h", 200, "OK", 2, "BYE", Some("tb"), ""),
    );
    let v = &h.finished()[0];
    let hist: Vec<String> = v["vcontap"]["party_history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            format!(
                "{}:{}{}",
                x["party"],
                x["event"].as_str().unwrap(),
                x["button"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(
        hist,
        vec![
            "0:keydown5",
            "0:keyup5",
            "0:hold",
            "0:unhold",
            "1:keydown#",
            "1:keyup#",
            "1:drop"
        ]
    );
    let recs: Vec<&Value> = v["dialog"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["type"] == "recording")
        .collect();
    assert_eq!(recs.len(), 3, "cut at hold and at resume");
    assert_eq!(
        recs[0]["party_history"].as_array().unwrap().last().unwrap()["event"],
        "hold"
    );
    assert_eq!(h.stored, 3);
    let updates = h
        .kinds()
        .iter()
        .filter(|k| **k == EventKind::Updated)
        .count();
    assert!(
        updates >= 6,
        "answer, keydown, keyup, hold, unhold, INFO: {updates} {:?}",
        h.events
            .iter()
            .map(|e| (e.kind, e.at.0 / 1_000_000 % 100_000))
            .collect::<Vec<_>>()
    );
}

#[test]
fn refer_adds_target_party_and_transfer_dialog() {
    let mut h = Harness::new(RecordMode::None);
    answered(&mut h, "r");
    let refer = |cseq: u32| {
        request(
            "REFER",
            "r",
            cseq,
            false,
            "Refer-To: \"Carol\" <sip:+15550003@c.example>\nReferred-By: <sip:+15550002@b.example>\n",
            "",
            "",
        )
    };
    // A challenged REFER is no transfer; its retry, accepted with 202, is one.
    h.sip(2000, B, A, &refer(5));
    let reply = |code: u16, reason: &str, cseq: u32| {
        response("r", code, reason, cseq, "REFER", Some("tb"), "").replace(
            "From: \"Alice A\" <sip:+15550001@a.example;user=phone>;tag=ta",
            "From: <sip:+15550002@b.example>;tag=tb",
        )
    };
    h.sip(2001, A, B, &reply(407, "Proxy Authentication Required", 5));
    assert!(
        h.last()["dialog"].is_null(),
        "no transfer before it is accepted"
    );
    h.sip(2010, B, A, &refer(6));
    h.sip(2011, A, B, &reply(202, "Accepted", 6));
    h.sip(2012, A, B, &reply(202, "Accepted", 6));
    let v = h.last();
    assert_eq!(
        v["dialog"].as_array().unwrap().len(),
        1,
        "retransmitted 202 adds nothing"
    );
    assert_eq!(v["parties"].as_array().unwrap().len(), 3);
    assert_eq!(v["parties"][2]["tel"], "+15550003");
    assert_eq!(v["parties"][2]["name"], "Carol");
    // RFC 3515 progress: 100 Trying (ignored), then the final 200 OK in a sipfrag NOTIFY.
    let notify = |cseq: u32, frag: &str| {
        request(
            "NOTIFY",
            "r",
            cseq,
            false,
            "Event: refer\n",
            "message/sipfrag",
            frag,
        )
    };
    h.sip(2100, B, A, &notify(7, "SIP/2.0 100 Trying\r\n"));
    assert!(h.last()["vcontap"]["transfer_status"].is_null());
    h.sip(2500, B, A, &notify(8, "SIP/2.0 200 OK\r\n"));
    let st = &h.last()["vcontap"]["transfer_status"][0];
    assert_eq!(st["status"], 200);
    assert_eq!(st["outcome"], "completed");
    let t = &v["dialog"][0];
    assert_eq!(t["type"], "transfer");
    assert_eq!(t["transferor"], 1);
    assert_eq!(t["transferee"], 0);
    assert_eq!(t["transfer_target"], 2);
    assert!(t.get("parties").is_none());
    let parsed: vcontap_vcon::Vcon = serde_json::from_value(v).unwrap();
    vcontap_vcon::check(&parsed).unwrap();
}

#[test]
fn bye_without_200_lingers_and_idle_calls_time_out() {
    let mut h = Harness::new(RecordMode::None);
    answered(&mut h, "l");
    h.sip(2000, A, B, &request("BYE", "l", 2, true, "", "", ""));
    assert!(h.finished().is_empty());
    h.timeout(8000);
    assert_eq!(h.finished()[0]["vcontap"]["end_reason"], "bye");

    let mut h = Harness::new(RecordMode::None);
    answered(&mut h, "idle");
    h.timeout(100_000);
    assert!(h.finished().is_empty());
    h.timeout(302_000);
    let v = &h.finished()[0];
    assert_eq!(v["vcontap"]["end_reason"], "timeout");
    assert!(v["dialog"].is_null(), "a timeout is not an incomplete call");
}

#[test]
fn undecodable_codec_is_named_not_recorded() {
    let mut h = Harness::new(RecordMode::Stereo);
    h.sip(
        0,
        A,
        B,
        &invite("g", 1, &sdp("10.0.0.1", 4000, 18, "sendrecv"), ""),
    );
    h.sip(
        100,
        B,
        A,
        &response(
            "g",
            200,
            "OK",
            1,
            "INVITE",
            Some("tb"),
            &sdp("10.0.0.2", 6000, 18, "sendrecv"),
        ),
    );
    for i in 0..50u16 {
        h.feed(
            200 + i as i64 * 20,
            "10.0.0.1:4000",
            "10.0.0.2:6000",
            &rtp(i, i as u32 * 160, 7, 18, &[1; 20]),
        );
    }
    h.finish(5000);
    let v = &h.finished()[0];
    assert_eq!(h.stored, 0, "no silent file");
    assert_eq!(v["vcontap"]["undecodable_codecs"][0], "G729/8000");
    assert_eq!(v["vcontap"]["end_reason"], "end-of-input");
    assert_eq!(
        v["vcontap"]["rtp_quality"]["streams"][0]["codecs"][0],
        "G729/8000"
    );
}

#[test]
fn hostile_input_is_counted_not_fatal() {
    let mut h = Harness::new(RecordMode::Stereo);
    // Garbage that looks like SIP, SIP without Call-ID, non-call SIP, random RTP.
    h.feed(0, A, B, b"INVITE sip:x SIP/2.0\r\n\xff\xfe\r\n\r\n");
    h.feed(1, A, B, b"INVITE sip:x@y SIP/2.0\r\nVia: x\r\n\r\n");
    h.feed(
        2,
        A,
        B,
        b"OPTIONS sip:x@y SIP/2.0\r\nCall-ID: o\r\nCSeq: 1 OPTIONS\r\n\r\n",
    );
    h.feed(3, "1.1.1.1:9", "2.2.2.2:9", &rtp(1, 1, 1, 0, &[0; 160]));
    h.feed(4, "1.1.1.1:9", "2.2.2.2:9", &[0x80]);
    // An orphan flow needs a second packet of its SSRC.
    h.feed(5, "1.1.1.1:9", "2.2.2.2:9", &rtp(2, 161, 1, 0, &[0; 160]));
    let st = h.engine.stats();
    assert_eq!(st.calls, 0);
    assert!(st.sip_without_call_id + st.sip_parse_errors >= 1);
    assert_eq!(st.sip_non_call, 1);
    assert_eq!(st.rtp_orphan_packets, 2);
    // A call table of one: a second call evicts the first, which is finished, not lost.
    let cfg = EngineConfig {
        max_calls: 1,
        record: RecordMode::None,
        ..EngineConfig::default()
    };
    let mut h = Harness::with(cfg);
    h.sip(0, A, B, &invite("e1", 1, "", ""));
    h.sip(10, A, B, &invite("e2", 1, "", ""));
    assert_eq!(h.engine.stats().calls_evicted, 1);
    assert_eq!(h.finished()[0]["vcontap"]["end_reason"], "evicted");
}

#[test]
fn identity_header_becomes_stir_and_pai_wins_for_tel() {
    let mut h = Harness::new(RecordMode::None);
    let extra = "P-Asserted-Identity: \"Carrier Name\" <sip:+15559990000@carrier.example>\nIdentity: eyJhbGciOiJFUzI1NiJ9.eyJhdHRlc3QiOiJBIn0.c2ln;info=<https://cert.example/c.pem>;alg=ES256;ppt=shaken\n";
    h.sip(0, A, B, &invite("stir", 1, "", extra));
    let v = h.last();
    assert_eq!(
        v["parties"][0]["stir"], "eyJhbGciOiJFUzI1NiJ9.eyJhdHRlc3QiOiJBIn0.c2ln",
        "PASSporT without its parameters"
    );
    assert_eq!(
        v["parties"][0]["tel"], "+15559990000",
        "network-asserted number first"
    );
    assert_eq!(v["parties"][0]["name"], "Carrier Name");
    assert_eq!(v["parties"][0]["validation"], "none");
}

#[test]
fn encrypted_media_is_named_never_decoded_into_noise() {
    // SDES-SRTP: the SDP profile says so.
    let mut h = Harness::new(RecordMode::Stereo);
    let savp = sdp("10.0.0.1", 4000, 0, "sendrecv").replace("RTP/AVP", "RTP/SAVP");
    h.sip(0, A, B, &invite("s", 1, &savp, ""));
    let ans = sdp("10.0.0.2", 6000, 0, "sendrecv").replace("RTP/AVP", "RTP/SAVP");
    h.sip(
        100,
        B,
        A,
        &response("s", 200, "OK", 1, "INVITE", Some("tb"), &ans),
    );
    talk(&mut h, 200, 50);
    h.finish(3000);
    let v = &h.finished()[0];
    assert_eq!(h.stored, 0, "no recording of ciphertext");
    assert_eq!(v["vcontap"]["undecodable_codecs"][0], "PCMU/8000 (SRTP)");

    // ZRTP: plain RTP until the ZRTP packets appear, then nothing more is decoded.
    let mut h = Harness::new(RecordMode::Stereo);
    answered(&mut h, "z");
    talk(&mut h, 1100, 25);
    let mut zrtp = vec![0x10, 0, 0, 1];
    zrtp.extend_from_slice(b"ZRTP");
    zrtp.extend_from_slice(&[0; 20]);
    h.feed(1700, "10.0.0.1:4000", "10.0.0.2:6000", &zrtp);
    talk(&mut h, 1720, 50);
    h.finish(5000);
    let v = &h.finished()[0];
    assert_eq!(h.stored, 1, "the plain part before ZRTP is kept");
    let d = &v["dialog"][0];
    assert!(d["duration"].as_f64().unwrap() < 0.7, "{d}");
    assert_eq!(v["vcontap"]["undecodable_codecs"][0], "PCMU/8000 (ZRTP)");
}

#[test]
fn invite_retransmitted_after_the_end_is_not_a_new_call() {
    let mut h = Harness::new(RecordMode::None);
    let inv = invite("rt", 1, &sdp("10.0.0.1", 4000, 0, "sendrecv"), "");
    h.sip(0, A, B, &inv);
    h.sip(
        100,
        B,
        A,
        &response("rt", 486, "Busy Here", 1, "INVITE", Some("tb"), ""),
    );
    // During the failure's linger a retransmission joins the call's trace; after it, it is
    // counted and dropped.
    h.sip(500, A, B, &inv);
    h.timeout(6000);
    h.sip(7000, A, B, &inv);
    h.finish(10_000);
    assert_eq!(h.finished().len(), 1, "one call");
    let v = &h.finished()[0];
    assert_eq!(
        v["attachments"][0]["body"]["messages"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert_eq!(h.engine.stats().sip_retransmissions, 1);
    // A new INVITE with the same Call-ID and a higher CSeq after the window is a new call.
    let mut h = Harness::new(RecordMode::None);
    h.sip(0, A, B, &inv);
    h.sip(
        100,
        B,
        A,
        &response("rt", 486, "Busy Here", 1, "INVITE", Some("tb"), ""),
    );
    h.sip(
        1000,
        A,
        B,
        &invite("rt", 2, &sdp("10.0.0.1", 4000, 0, "sendrecv"), ""),
    );
    h.finish(10_000);
    assert_eq!(h.finished().len(), 2);
}

#[test]
fn relayed_legs_feed_one_timeline_per_channel() {
    // An SBC relays the caller's audio: leg 1 (10.0.0.1:4000 -> 10.0.0.2:6000) and leg 2
    // (10.0.0.9:7000 -> 10.0.0.1:4000's peer) carry the same SSRC, 15 ms apart, with
    // different content here so the test can tell them apart.
    let mut h = Harness::new(RecordMode::Stereo);
    answered(&mut h, "relay");
    for i in 0..100u16 {
        let ms = 1100 + i as i64 * 20;
        let ts = 1000 + i as u32 * 160;
        h.feed(
            ms,
            "10.0.0.1:4000",
            "10.0.0.2:6000",
            &rtp(100 + i, ts, 0xAAAA, 0, &[0x80; 160]),
        );
        // The relayed copy arrives at the callee's SDP address from the SBC.
        h.feed(
            ms + 15,
            "10.0.0.9:7000",
            "10.0.0.2:6000",
            &rtp(100 + i, ts + 4000, 0xAAAA, 0, &[0x00; 160]),
        );
    }
    h.finish(4000);
    let v = &h.finished()[0];
    let streams = v["analysis"][0]["body"]["streams"].as_array().unwrap();
    assert_eq!(streams.len(), 2, "two legs, two streams in the report");
    // Leg 1 (0x80 = large positive µ-law) fills the left channel; the relay copy (0x00 =
    // large negative) never shows up in it.
    let neg = h.left.iter().filter(|s| **s < -1000).count();
    let pos = h.left.iter().filter(|s| **s > 1000).count();
    assert!(pos > 15_000, "the primary leg is recorded: {pos}");
    assert_eq!(neg, 0, "the relayed copy is not mixed in");
}

#[test]
fn rfc7989_session_id_becomes_the_dialog_session_id() {
    let mut h = Harness::new(RecordMode::None);
    let extra =
        "Session-ID: AB30317F1A784DC48FF824D0D3715D86;remote=00000000000000000000000000000000\n";
    h.sip(0, A, B, &invite("sid", 1, "", extra));
    let ok = response("sid", 486, "Busy Here", 1, "INVITE", Some("tb"), "").replace(
        "Content-Length: 0",
        "Session-ID: 47755a9de7794ba387653f2099600ef2;remote=ab30317f1a784dc48ff824d0d3715d86\nContent-Length: 0",
    );
    h.sip(50, B, A, &ok);
    h.finish(100);
    let v = &h.finished()[0];
    assert_eq!(
        v["dialog"][0]["session_id"],
        serde_json::json!({"local": "ab30317f1a784dc48ff824d0d3715d86", "remote": "47755a9de7794ba387653f2099600ef2"})
    );
}

#[test]
fn forked_early_dialogs_and_reinvite_moving_media() {
    let mut h = Harness::new(RecordMode::Stereo);
    h.sip(
        0,
        A,
        B,
        &invite("fork", 1, &sdp("10.0.0.1", 4000, 0, "sendrecv"), ""),
    );
    // Two forks ring with early media descriptions; the second one answers.
    h.sip(
        50,
        B,
        A,
        &response(
            "fork",
            183,
            "Session Progress",
            1,
            "INVITE",
            Some("f1"),
            &sdp("10.0.0.7", 7000, 0, "sendrecv"),
        ),
    );
    h.sip(
        60,
        B,
        A,
        &response(
            "fork",
            183,
            "Session Progress",
            1,
            "INVITE",
            Some("f2"),
            &sdp("10.0.0.8", 8000, 0, "sendrecv"),
        ),
    );
    h.sip(
        900,
        B,
        A,
        &response(
            "fork",
            200,
            "OK",
            1,
            "INVITE",
            Some("f2"),
            &sdp("10.0.0.8", 8000, 0, "sendrecv"),
        ),
    );
    for i in 0..25u16 {
        let ms = 1000 + i as i64 * 20;
        h.feed(
            ms,
            "10.0.0.8:8000",
            "10.0.0.1:4000",
            &rtp(i, i as u32 * 160, 0xB1, 0, &[0x7F; 160]),
        );
    }
    // The callee moves its media with a re-INVITE; RTP from the new address still belongs.
    let moved = sdp("10.0.0.9", 9000, 0, "sendrecv");
    h.sip(
        1600,
        B,
        A,
        &request("INVITE", "fork", 2, false, "", "application/sdp", &moved)
            .replace("tag=tb", "tag=f2"),
    );
    for i in 0..25u16 {
        let ms = 1700 + i as i64 * 20;
        h.feed(
            ms,
            "10.0.0.9:9000",
            "10.0.0.1:4000",
            &rtp(100 + i, 20_000 + i as u32 * 160, 0xB2, 0, &[0x7F; 160]),
        );
    }
    h.sip(
        2500,
        A,
        B,
        &request("BYE", "fork", 2, true, "", "", "").replace("tag=tb", "tag=f2"),
    );
    h.sip(
        2510,
        B,
        A,
        &response("fork", 200, "OK", 2, "BYE", Some("f2"), ""),
    );
    let v = &h.finished()[0];
    assert_eq!(
        v["dialog"][0]["sip_to_tag"], "f2",
        "the answering fork's tag"
    );
    let streams = v["analysis"][0]["body"]["streams"].as_array().unwrap();
    let packets: u64 = streams.iter().map(|s| s["packets"].as_u64().unwrap()).sum();
    assert_eq!(packets, 50, "RTP before and after the move is in the call");
    assert_eq!(h.engine.stats().rtp_orphan_packets, 0);
}

#[test]
fn invite_flood_against_a_full_table_evicts_oldest_first() {
    let cfg = EngineConfig {
        max_calls: 10,
        record: RecordMode::None,
        ..EngineConfig::default()
    };
    let mut h = Harness::with(cfg);
    for i in 0..2000 {
        h.sip(i, A, B, &invite(&format!("flood-{i}"), 1, "", ""));
    }
    assert_eq!(h.engine.open_calls(), 10);
    assert_eq!(h.engine.stats().calls_evicted, 1990);
    let fin = h.finished();
    assert_eq!(fin.len(), 1990);
    // Oldest first: the first evicted call is flood-0.
    assert_eq!(fin[0]["vcontap"]["sip_call_id"], "flood-0");
    assert_eq!(fin[0]["vcontap"]["end_reason"], "evicted");
}

#[test]
fn loss_lowers_the_quality_estimate() {
    let mut h = Harness::new(RecordMode::None);
    answered(&mut h, "loss");
    // Every 10th packet of the caller's stream is missing: 10 % loss.
    for i in 0..200u16 {
        if i % 10 == 9 {
            continue;
        }
        let ms = 1100 + i as i64 * 20;
        h.feed(
            ms,
            "10.0.0.1:4000",
            "10.0.0.2:6000",
            &rtp(i, i as u32 * 160, 0xAAAA, 0, &[0xFF; 160]),
        );
    }
    h.finish(6000);
    let v = &h.finished()[0];
    let s = &v["vcontap"]["rtp_quality"]["streams"][0];
    assert_eq!(s["lost"], 19, "{s}");
    let r = s["quality_estimate"]["r_factor"].as_f64().unwrap();
    // Ie,eff = 95 × 9.5 / (9.5 + 25.1) ≈ 26: R ≈ 66.9.
    assert!((64.0..=70.0).contains(&r), "{r}");
    assert!(s["quality_estimate"]["method"]
        .as_str()
        .unwrap()
        .contains("upper bound"));
}

#[test]
fn connected_identity_change_updates_the_party() {
    let mut h = Harness::new(RecordMode::Stereo);
    answered(&mut h, "cid");
    talk(&mut h, 1100, 40);
    let before = h.events.len();
    // The callee side sends a new asserted identity (e.g. after an attended transfer).
    let upd = request(
        "UPDATE",
        "cid",
        7,
        false,
        "P-Asserted-Identity: \"Dave D\" <sip:+15550004@d.example>\n",
        "",
        "",
    );
    h.sip(2000, B, A, &upd);
    let v = h.last();
    assert!(h.events.len() > before, "an updated event");
    assert_eq!(
        v["parties"][1]["tel"], "+15550002",
        "the dialled party is kept"
    );
    assert_eq!(v["parties"][2]["tel"], "+15550004");
    assert_eq!(v["parties"][2]["name"], "Dave D");
    assert_eq!(v["parties"][2]["role"], "callee");
    let n = h.events.len();
    // The same identity again, or a privacy placeholder without a user, changes nothing.
    h.sip(2100, B, A, &upd.replace("CSeq: 7", "CSeq: 8"));
    let anon = upd.replace("CSeq: 7", "CSeq: 9").replace(
        "\"Dave D\" <sip:+15550004@d.example>",
        "<sip:invalid.unknown.domain>",
    );
    h.sip(2200, B, A, &anon);
    assert_eq!(h.events.len(), n);
    talk(&mut h, 2300, 40);
    h.sip(3200, A, B, &request("BYE", "cid", 3, true, "", "", ""));
    h.sip(
        3210,
        B,
        A,
        &response("cid", 200, "OK", 3, "BYE", Some("tb"), ""),
    );
    let v = &h.finished()[0];
    let recs: Vec<&Value> = v["dialog"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["type"] == "recording")
        .collect();
    assert_eq!(recs.len(), 2, "cut at the identity change");
    assert_eq!(recs[0]["parties"], serde_json::json!([0, 1]));
    assert_eq!(
        recs[1]["parties"],
        serde_json::json!([0, 2]),
        "Dave on the right channel now"
    );
    let hist: Vec<String> = recs[0]["party_history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| format!("{}:{}", x["party"], x["event"].as_str().unwrap()))
        .collect();
    assert_eq!(hist, vec!["1:drop", "2:join"]);
}

#[test]
fn video_streams_are_reported_not_recorded() {
    let mut h = Harness::new(RecordMode::Stereo);
    let av = |ip: &str, a: u16, v: u16| {
        sdp(ip, a, 0, "sendrecv") + &format!("m=video {v} RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n")
    };
    h.sip(0, A, B, &invite("vid", 1, &av("10.0.0.1", 4000, 4002), ""));
    h.sip(
        100,
        B,
        A,
        &response(
            "vid",
            200,
            "OK",
            1,
            "INVITE",
            Some("tb"),
            &av("10.0.0.2", 6000, 6002),
        ),
    );
    for i in 0..30u16 {
        let ms = 200 + i as i64 * 33;
        h.feed(
            ms,
            "10.0.0.1:4002",
            "10.0.0.2:6002",
            &rtp(i, i as u32 * 3000, 0x71D0, 96, &[0x41; 900]),
        );
    }
    talk(&mut h, 200, 20);
    h.finish(3000);
    let v = &h.finished()[0];
    let streams = v["analysis"][0]["body"]["streams"].as_array().unwrap();
    let video: Vec<&Value> = streams.iter().filter(|s| s["media"] == "video").collect();
    assert_eq!(video.len(), 1);
    assert_eq!(video[0]["packets"], 30);
    assert_eq!(video[0]["codecs"][0], "H264/90000");
    assert!(video[0].get("quality_estimate").is_none_or(|q| q.is_null()));
    assert_eq!(h.stored, 1, "only the audio is recorded");
    assert_eq!(h.engine.stats().rtp_orphan_packets, 0);
}

/// Speech-like G.711 from both sides with distinct, non-silent samples: caller
/// 10.0.0.1:4000 → `callee_dst`, callee `callee_src` → 10.0.0.1:4000.
fn talk_from(h: &mut Harness, from_ms: i64, packets: u16, callee_src: &str, callee_dst: &str) {
    for i in 0..packets {
        let ms = from_ms + i as i64 * 20;
        let k = (ms / 20) as u16;
        h.feed(
            ms,
            "10.0.0.1:4000",
            callee_dst,
            &rtp(100 + k, 1000 + k as u32 * 160, 0xAAAA, 0, &[0x90; 160]),
        );
        h.feed(
            ms + 1,
            callee_src,
            "10.0.0.1:4000",
            &rtp(500 + k, 9000 + k as u32 * 160, 0xBBBB, 0, &[0x10; 160]),
        );
    }
}

fn loud(ch: &[i16]) -> usize {
    ch.iter().filter(|s| s.unsigned_abs() > 1000).count()
}

fn check(v: &Value) {
    let parsed: vcontap_vcon::Vcon = serde_json::from_value(v.clone()).unwrap();
    vcontap_vcon::check(&parsed).unwrap();
}

#[test]
fn late_offer_answer_in_ack_routes_the_answerers_stream() {
    // INVITE without SDP, the offer in the 200 OK, the answer in the ACK (RFC 3261 §13.2.1).
    // The callee sends from another port than it receives on, so only the ACK's SDP (where
    // the caller receives) ties its stream to the call.
    let mut h = Harness::new(RecordMode::Stereo);
    h.sip(0, A, B, &invite("lo", 1, "", ""));
    h.sip(
        1000,
        B,
        A,
        &response(
            "lo",
            200,
            "OK",
            1,
            "INVITE",
            Some("tb"),
            &sdp("10.0.0.2", 6000, 0, "sendrecv"),
        ),
    );
    h.sip(
        1010,
        A,
        B,
        &request(
            "ACK",
            "lo",
            1,
            true,
            "",
            "application/sdp",
            &sdp("10.0.0.1", 4000, 0, "sendrecv"),
        ),
    );
    talk_from(&mut h, 1100, 100, "10.0.0.2:6002", "10.0.0.2:6000");
    h.sip(3200, A, B, &request("BYE", "lo", 2, true, "", "", ""));
    h.sip(
        3210,
        B,
        A,
        &response("lo", 200, "OK", 2, "BYE", Some("tb"), ""),
    );
    assert_eq!(h.engine.stats().rtp_orphan_packets, 0, "no orphan stream");
    let v = h.last();
    let q = v["analysis"][0]["body"]["streams"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(q.len(), 2);
    assert!(q
        .iter()
        .any(|s| s["direction"] == "callee->caller" && s["packets"] == 100));
    assert!(loud(&h.left) > 10_000, "caller channel");
    assert!(loud(&h.right) > 10_000, "callee channel is not silent");
    check(&v);
}

#[test]
fn bye_refused_with_an_error_does_not_end_the_call() {
    let mut h = Harness::new(RecordMode::Stereo);
    answered(&mut h, "br");
    talk(&mut h, 1100, 40);
    h.sip(2000, A, B, &request("BYE", "br", 2, true, "", "", ""));
    h.sip(
        2010,
        B,
        A,
        &response("br", 500, "Server Internal Error", 2, "BYE", Some("tb"), ""),
    );
    talk(&mut h, 2100, 100);
    // Well past the BYE linger: the refused BYE does not end the call.
    h.timeout(9000);
    assert!(
        h.finished().is_empty(),
        "a refused BYE does not end the call"
    );
    assert_eq!(h.last()["vcontap"]["byes_refused"], 1);
    h.sip(9000, A, B, &request("BYE", "br", 3, true, "", "", ""));
    h.sip(
        9010,
        B,
        A,
        &response("br", 200, "OK", 3, "BYE", Some("tb"), ""),
    );
    let v = &h.finished()[0];
    assert_eq!(v["vcontap"]["end_reason"], "bye");
    assert_eq!(v["vcontap"]["ended_at"], "2026-01-01T00:00:09Z");
    // Media after the refused BYE is recorded, up to the BYE that succeeded.
    let d = &v["dialog"][0];
    assert!((d["duration"].as_f64().unwrap() - 7.9).abs() < 0.05, "{d}");
    let drops: Vec<&Value> = v["vcontap"]["party_history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "drop")
        .collect();
    assert_eq!(
        drops.len(),
        1,
        "only the BYE that succeeded drops the party"
    );
    assert_eq!(drops[0]["time"], "2026-01-01T00:00:09Z");
    check(v);

    // 481 (and 408): the dialog is gone at the far end (RFC 3261 §12.2.1.2): the call ends.
    let mut h = Harness::new(RecordMode::None);
    answered(&mut h, "b481");
    h.sip(2000, B, A, &request("BYE", "b481", 7, false, "", "", ""));
    h.sip(
        2010,
        A,
        B,
        &response("b481", 481, "Call Does Not Exist", 7, "BYE", Some("tb"), ""),
    );
    assert_eq!(h.finished()[0]["vcontap"]["end_reason"], "bye");

    // A BYE still unanswered when the input ends ended the call.
    let mut h = Harness::new(RecordMode::None);
    answered(&mut h, "eoi");
    h.sip(2000, B, A, &request("BYE", "eoi", 7, false, "", "", ""));
    h.finish(2100);
    let v = &h.finished()[0];
    assert_eq!(v["vcontap"]["end_reason"], "bye");
    assert_eq!(v["vcontap"]["party_history"][0]["event"], "drop");
    assert_eq!(v["vcontap"]["party_history"][0]["party"], 1);
}

#[test]
fn update_answer_in_its_2xx_moves_the_media() {
    // The callee moves its media with an UPDATE; the caller's answer (in the 2xx) names a
    // new receive port, which only that 2xx announces.
    let mut h = Harness::new(RecordMode::Stereo);
    answered(&mut h, "up");
    h.sip(
        1500,
        B,
        A,
        &request(
            "UPDATE",
            "up",
            3,
            false,
            "",
            "application/sdp",
            &sdp("10.0.0.2", 7000, 0, "sendrecv"),
        ),
    );
    let ok = response(
        "up",
        200,
        "OK",
        3,
        "UPDATE",
        Some("tb"),
        &sdp("10.0.0.1", 4100, 0, "sendrecv"),
    );
    h.sip(1510, A, B, &ok);
    for i in 0..50u16 {
        h.feed(
            1600 + i as i64 * 20,
            "10.0.0.2:7002",
            "10.0.0.1:4100",
            &rtp(i, i as u32 * 160, 0xCCCC, 0, &[0x10; 160]),
        );
    }
    assert_eq!(h.engine.stats().rtp_orphan_packets, 0);
    assert_eq!(h.engine.stats().rtp_packets, 50);
}

#[test]
fn answer_lost_on_the_tap_is_inferred_from_the_ack() {
    // INVITE, 180, the 200 OK lost, then ACK (a new transaction: another Via branch), RTP,
    // BYE: the call was answered and is recorded.
    let mut h = Harness::new(RecordMode::Stereo);
    h.sip(
        0,
        A,
        B,
        &invite("la", 1, &sdp("10.0.0.1", 4000, 0, "sendrecv"), ""),
    );
    h.sip(
        50,
        B,
        A,
        &response("la", 180, "Ringing", 1, "INVITE", Some("tb"), ""),
    );
    h.sip(1010, A, B, &request("ACK", "la", 1, true, "", "", ""));
    assert_eq!(h.last()["vcontap"]["state"], "answered");
    talk(&mut h, 1100, 100);
    h.sip(3200, A, B, &request("BYE", "la", 2, true, "", "", ""));
    h.sip(
        3210,
        B,
        A,
        &response("la", 200, "OK", 2, "BYE", Some("tb"), ""),
    );
    let v = &h.finished()[0];
    assert_eq!(v["vcontap"]["answer_inferred"], true);
    assert_eq!(v["vcontap"]["answered_at"], "2026-01-01T00:00:01.010Z");
    assert_eq!(v["vcontap"]["end_reason"], "bye");
    assert_eq!(v["dialog"][0]["type"], "recording");
    assert_eq!(v["dialog"][0]["sip_to_tag"], "tb");
    let trace = &v["attachments"][0]["body"]["messages"];
    assert_eq!(trace.as_array().unwrap().len(), 5);
    check(v);

    // The INVITE seen on two hops (a proxy: same Call-ID, another Via branch), its failure
    // lost on the tap: the second hop's ACK is in that hop's INVITE transaction, so it
    // acknowledges a failure, not a 2xx. The same after a 407 challenge.
    for lost in ["486", "407"] {
        let mut h = Harness::new(RecordMode::None);
        let inv = invite("hop", 1, &sdp("10.0.0.1", 4000, 0, "sendrecv"), "");
        h.sip(0, A, B, &inv);
        h.sip(
            5,
            "10.0.0.3:5060",
            B,
            &inv.replace("branch=z9hG4bK1", "branch=z9hG4bKhop2"),
        );
        if lost == "407" {
            h.sip(
                10,
                B,
                "10.0.0.3:5060",
                &response(
                    "hop",
                    407,
                    "Proxy Authentication Required",
                    1,
                    "INVITE",
                    Some("tb"),
                    "",
                )
                .replace("branch=z9hG4bK1", "branch=z9hG4bKhop2"),
            );
        }
        h.sip(
            20,
            "10.0.0.3:5060",
            B,
            &request("ACK", "hop", 1, true, "", "", "")
                .replace("branch=z9hG4bKr1", "branch=z9hG4bKhop2"),
        );
        assert_eq!(h.last()["vcontap"]["state"], "calling", "{lost}");
        assert!(h.last()["vcontap"]["answer_inferred"].is_null(), "{lost}");
    }
}

#[test]
fn bye_after_a_failure_stays_in_the_trace_and_keeps_the_outcome() {
    let mut h = Harness::new(RecordMode::Stereo);
    h.sip(
        0,
        A,
        B,
        &invite("bf", 1, &sdp("10.0.0.1", 4000, 0, "sendrecv"), ""),
    );
    h.sip(
        100,
        B,
        A,
        &response("bf", 486, "Busy Here", 1, "INVITE", Some("tb"), ""),
    );
    h.sip(
        110,
        A,
        B,
        &request("ACK", "bf", 1, true, "", "", "").replace("branch=z9hG4bKr1", "branch=z9hG4bK1"),
    );
    h.sip(300, A, B, &request("BYE", "bf", 2, true, "", "", ""));
    h.sip(
        310,
        B,
        A,
        &response("bf", 200, "OK", 2, "BYE", Some("tb"), ""),
    );
    // The BYE's 200 ends the linger early; the outcome is still the 486.
    let fin = h.finished();
    assert_eq!(fin.len(), 1);
    let v = &fin[0];
    assert_eq!(v["vcontap"]["end_reason"], "failure");
    assert_eq!(v["vcontap"]["sip_final_status"], 486);
    assert_eq!(v["vcontap"]["ended_at"], "2026-01-01T00:00:00.100Z");
    assert_eq!(v["dialog"][0]["disposition"], "busy");
    let trace = v["attachments"][0]["body"]["messages"].as_array().unwrap();
    let what: Vec<String> = trace
        .iter()
        .map(|m| {
            m["method"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| m["status_code"].to_string())
        })
        .collect();
    assert_eq!(what, ["INVITE", "486", "ACK", "BYE", "200"]);
    assert_eq!(
        h.engine.stats().sip_non_call,
        0,
        "nothing dropped as outside calls"
    );
    check(v);
}

#[test]
fn call_joined_mid_way_on_a_reinvite_becomes_a_call() {
    // The tap starts during the call: the first message is a session-refresh re-INVITE.
    let mut h = Harness::new(RecordMode::Stereo);
    h.sip(
        0,
        A,
        B,
        &request(
            "INVITE",
            "mid",
            5,
            true,
            "",
            "application/sdp",
            &sdp("10.0.0.1", 4000, 0, "sendrecv"),
        ),
    );
    assert_eq!(h.kinds(), vec![EventKind::Created]);
    let v = h.last();
    assert_eq!(v["vcontap"]["joined_mid_call"], true);
    assert_eq!(v["vcontap"]["state"], "answered");
    assert_eq!(v["parties"][0]["tel"], "+15550001");
    assert_eq!(v["parties"][0]["role"], "caller");
    assert_eq!(v["parties"][1]["tel"], "+15550002");
    h.sip(
        20,
        B,
        A,
        &response(
            "mid",
            200,
            "OK",
            5,
            "INVITE",
            Some("tb"),
            &sdp("10.0.0.2", 6000, 0, "sendrecv"),
        ),
    );
    h.sip(30, A, B, &request("ACK", "mid", 5, true, "", "", ""));
    talk_from(&mut h, 100, 100, "10.0.0.2:6000", "10.0.0.2:6000");
    assert_eq!(h.engine.stats().rtp_orphan_packets, 0);
    // The callee hangs up: its From is the callee, the tags say so.
    h.sip(2200, B, A, &request("BYE", "mid", 9, false, "", "", ""));
    h.sip(
        2210,
        A,
        B,
        &response("mid", 200, "OK", 9, "BYE", Some("tb"), ""),
    );
    let v = &h.finished()[0];
    assert_eq!(v["vcontap"]["end_reason"], "bye");
    assert_eq!(v["vcontap"]["joined_mid_call"], true);
    assert_eq!(h.engine.stats().calls_joined, 1);
    let d = &v["dialog"][0];
    assert_eq!(d["type"], "recording");
    assert_eq!(d["sip_from_tag"], "ta");
    assert_eq!(d["sip_to_tag"], "tb");
    assert!(
        loud(&h.left) > 10_000 && loud(&h.right) > 10_000,
        "both channels"
    );
    let drop = &v["vcontap"]["party_history"][0];
    assert_eq!(
        (drop["event"].as_str(), drop["party"].as_u64()),
        (Some("drop"), Some(1)),
        "the callee dropped"
    );
    assert_eq!(
        v["attachments"][0]["body"]["messages"][0]["direction"],
        "sent"
    );
    check(v);
}

#[test]
fn call_joined_on_a_late_offer_reinvite() {
    // A session refresh without SDP: the offer comes in its 2xx, the answer in the ACK.
    let mut h = Harness::new(RecordMode::Stereo);
    h.sip(0, A, B, &request("INVITE", "lr", 5, true, "", "", ""));
    assert_eq!(h.last()["vcontap"]["joined_mid_call"], true);
    h.sip(
        20,
        B,
        A,
        &response(
            "lr",
            200,
            "OK",
            5,
            "INVITE",
            Some("tb"),
            &sdp("10.0.0.2", 6000, 0, "sendrecv"),
        ),
    );
    h.sip(
        30,
        A,
        B,
        &request(
            "ACK",
            "lr",
            5,
            true,
            "",
            "application/sdp",
            &sdp("10.0.0.1", 4000, 0, "sendrecv"),
        ),
    );
    talk_from(&mut h, 100, 50, "10.0.0.2:6002", "10.0.0.2:6000");
    assert_eq!(h.engine.stats().rtp_orphan_packets, 0);
    h.finish(5000);
    assert!(loud(&h.left) > 5_000 && loud(&h.right) > 5_000);
    check(&h.finished()[0]);
}

#[test]
fn call_joined_on_the_answer_when_the_invite_was_lost() {
    // The INVITE (e.g. its first IP fragment) was lost: the dialog shows up with the callee's
    // 200 OK. Its From is still the caller (responses copy the request's From).
    let mut h = Harness::new(RecordMode::Stereo);
    h.sip(
        1000,
        B,
        A,
        &response(
            "lost",
            200,
            "OK",
            1,
            "INVITE",
            Some("tb"),
            &sdp("10.0.0.2", 6000, 0, "sendrecv"),
        )
        .replace("Content-Type", "Server: PBX 1.0\nContent-Type"),
    );
    h.sip(
        1010,
        A,
        B,
        &request(
            "ACK",
            "lost",
            1,
            true,
            "",
            "application/sdp",
            &sdp("10.0.0.1", 4000, 0, "sendrecv"),
        ),
    );
    talk_from(&mut h, 1100, 100, "10.0.0.2:6000", "10.0.0.2:6000");
    h.finish(60_000);
    let v = &h.finished()[0];
    assert_eq!(v["vcontap"]["joined_mid_call"], true);
    assert_eq!(v["parties"][0]["tel"], "+15550001");
    assert_eq!(v["parties"][0]["name"], "Alice A");
    assert!(
        v["parties"][0]["sip_user_agent"].is_null(),
        "the Server is the callee's"
    );
    assert_eq!(v["parties"][1]["sip_user_agent"], "PBX 1.0");
    assert_eq!(v["dialog"][0]["sip_cseq"], 1);
    assert!(loud(&h.left) > 10_000 && loud(&h.right) > 10_000);
    check(v);
}

#[test]
fn non_call_traffic_and_stragglers_never_become_joined_calls() {
    let mut h = Harness::new(RecordMode::None);
    let s = sdp("10.0.0.1", 4000, 0, "sendrecv");
    // Out-of-dialog and non-INVITE-dialog methods, with SDP bodies where legal.
    for (i, m) in [
        "OPTIONS",
        "REGISTER",
        "SUBSCRIBE",
        "NOTIFY",
        "MESSAGE",
        "INFO",
        "PUBLISH",
    ]
    .iter()
    .enumerate()
    {
        let call = format!("n{i}");
        h.sip(
            i as i64,
            A,
            B,
            &request(m, &call, 1, true, "", "application/sdp", &s),
        );
        h.sip(
            i as i64,
            B,
            A,
            &response(&call, 200, "OK", 1, m, Some("tb"), &s),
        );
    }
    // A lone BYE, ACK, UPDATE and INFO without SDP, and an INVITE-dialog 200 without a To
    // tag.
    h.sip(100, A, B, &request("BYE", "lone", 2, true, "", "", ""));
    h.sip(
        101,
        B,
        A,
        &response("lone", 200, "OK", 2, "BYE", Some("tb"), ""),
    );
    h.sip(102, A, B, &request("ACK", "lone2", 1, true, "", "", ""));
    h.sip(103, A, B, &request("UPDATE", "lone3", 3, true, "", "", ""));
    h.sip(103, A, B, &request("INFO", "lone4", 4, true, "", "", ""));
    // Answers to an INVITE without SDP: a failure, and a 2xx whose offer was in the INVITE.
    h.sip(
        105,
        B,
        A,
        &response("lone5", 486, "Busy Here", 1, "INVITE", Some("tb"), ""),
    );
    h.sip(
        106,
        B,
        A,
        &response("lone6", 200, "OK", 1, "INVITE", Some("tb"), ""),
    );
    h.sip(
        104,
        B,
        A,
        &response("notag", 200, "OK", 1, "INVITE", None, &s),
    );
    h.finish(10_000);
    assert_eq!(h.engine.stats().calls, 0, "{:?}", h.engine.stats());
    assert!(h.events.is_empty());

    // A 200 OK retransmitted after its call ended (it is re-sent until the ACK arrives).
    let mut h = Harness::new(RecordMode::None);
    answered(&mut h, "late");
    h.sip(2000, A, B, &request("BYE", "late", 2, true, "", "", ""));
    h.sip(
        2010,
        B,
        A,
        &response("late", 200, "OK", 2, "BYE", Some("tb"), ""),
    );
    let ok = response(
        "late",
        200,
        "OK",
        1,
        "INVITE",
        Some("tb"),
        &sdp("10.0.0.2", 6000, 0, "sendrecv"),
    );
    h.sip(3000, B, A, &ok);
    h.finish(10_000);
    assert_eq!(h.finished().len(), 1, "no second call");
    assert_eq!(h.engine.stats().calls_joined, 0);
}

#[test]
fn recording_ends_with_the_call_not_the_input() {
    // End of input a minute after the last packet, and an idle timeout: the last segment is
    // cut at the last media packet, never padded to the end of the input or the timeout.
    for end in ["input", "timeout"] {
        let mut h = Harness::new(RecordMode::Stereo);
        answered(&mut h, "end");
        talk(&mut h, 1100, 100);
        match end {
            "input" => h.finish(61_000),
            _ => h.timeout(305_000),
        }
        let v = &h.finished()[0];
        let d = &v["dialog"][0];
        assert!(
            (d["duration"].as_f64().unwrap() - 2.0).abs() < 0.05,
            "{end}: {d}"
        );
        assert!(h.audio_frames < 17_000, "{end}: {} frames", h.audio_frames);
    }
    // A minute without media (and without hold) mid-call: the segment is closed at its last
    // packet, the resumed media opens a new one; the silence is never released as zeros.
    let mut h = Harness::new(RecordMode::Stereo);
    answered(&mut h, "gap");
    talk(&mut h, 1100, 100);
    for s in 4..65 {
        h.timeout(s * 1000);
    }
    talk(&mut h, 65_000, 100);
    h.sip(67_000, A, B, &request("BYE", "gap", 2, true, "", "", ""));
    h.sip(
        67_010,
        B,
        A,
        &response("gap", 200, "OK", 2, "BYE", Some("tb"), ""),
    );
    let v = &h.finished()[0];
    let d = v["dialog"].as_array().unwrap();
    assert_eq!(d.len(), 2, "{d:?}");
    assert!((d[0]["duration"].as_f64().unwrap() - 2.0).abs() < 0.05);
    assert_eq!(d[1]["start"], "2026-01-01T00:01:05Z");
    assert!((d[1]["duration"].as_f64().unwrap() - 2.0).abs() < 0.05);
    assert!(h.audio_frames < 33_000, "{} frames", h.audio_frames);
    // Media after the BYE (before its 200) is not recorded.
    let mut h = Harness::new(RecordMode::Stereo);
    answered(&mut h, "bye");
    talk(&mut h, 1100, 50);
    h.sip(2100, A, B, &request("BYE", "bye", 2, true, "", "", ""));
    talk(&mut h, 2120, 100);
    h.sip(
        4200,
        B,
        A,
        &response("bye", 200, "OK", 2, "BYE", Some("tb"), ""),
    );
    let v = &h.finished()[0];
    assert!((v["dialog"][0]["duration"].as_f64().unwrap() - 1.0).abs() < 0.05);
}

#[test]
fn answered_calls_without_audio_have_one_shape() {
    fn shape(v: &Value) -> (Vec<String>, Vec<String>) {
        let top = v.as_object().unwrap().keys().cloned().collect();
        let mut ext: Vec<String> = v["vcontap"].as_object().unwrap().keys().cloned().collect();
        // Present only when there was RTP to report on.
        ext.retain(|k| k != "rtp_quality" && k != "undecodable_codecs");
        (top, ext)
    }
    let mut shapes = Vec::new();
    for cause in ["no-rtp", "undecodable-codec", "encrypted", "record-none"] {
        let mode = if cause == "record-none" {
            RecordMode::None
        } else {
            RecordMode::Stereo
        };
        let mut h = Harness::new(mode);
        let (pt, proto) = match cause {
            "undecodable-codec" => (18, "RTP/AVP"),
            "encrypted" => (0, "RTP/SAVP"),
            _ => (0, "RTP/AVP"),
        };
        let offer = sdp("10.0.0.1", 4000, pt, "sendrecv").replace("RTP/AVP", proto);
        let answer = sdp("10.0.0.2", 6000, pt, "sendrecv").replace("RTP/AVP", proto);
        h.sip(0, A, B, &invite("nr", 1, &offer, ""));
        h.sip(
            100,
            B,
            A,
            &response("nr", 200, "OK", 1, "INVITE", Some("tb"), &answer),
        );
        if cause != "no-rtp" {
            for i in 0..100u16 {
                let ms = 200 + i as i64 * 20;
                h.feed(
                    ms,
                    "10.0.0.1:4000",
                    "10.0.0.2:6000",
                    &rtp(i, i as u32 * 160, 7, pt, &[0x90; 160]),
                );
            }
        }
        h.sip(9000, A, B, &request("BYE", "nr", 2, true, "", "", ""));
        h.sip(
            9010,
            B,
            A,
            &response("nr", 200, "OK", 2, "BYE", Some("tb"), ""),
        );
        let v = h.finished()[0].clone();
        assert_eq!(h.stored, 0, "{cause}");
        assert!(v["dialog"].is_null(), "{cause}: no dialog at all");
        assert_eq!(v["vcontap"]["no_recording"], cause);
        assert!(v["vcontap"]["sip_message_trace"].is_object(), "{cause}");
        check(&v);
        shapes.push(shape(&v));
    }
    assert!(shapes.windows(2).all(|w| w[0] == w[1]), "{shapes:?}");
}

#[test]
fn dtmf_flood_is_capped_counted_and_coalesced() {
    let mut h = Harness::new(RecordMode::None);
    answered(&mut h, "fl");
    let info = |h: &mut Harness, i: u32| {
        let body = "Signal=5\r\nDuration=100\r\n";
        h.sip(
            2000 + i as i64 * 10,
            A,
            B,
            &request(
                "INFO",
                "fl",
                10 + i,
                true,
                "",
                "application/dtmf-relay",
                body,
            ),
        );
    };
    // 50 digits 10 ms apart: the first is emitted at once, the rest held back…
    for i in 0..50 {
        info(&mut h, i);
    }
    assert!(
        h.last()["vcontap"]["party_history"]
            .as_array()
            .unwrap()
            .len()
            < 100
    );
    // …and flushed by time alone, with the latest snapshot, at the deadline the engine
    // reports (well before its next 1 s sweep).
    let due = h.engine.poll_timeout();
    assert!(due.0 <= T0 + 2_700_000_000, "{}", due.0 - T0);
    h.engine.handle_timeout(due);
    h.drain();
    assert_eq!(h.events.last().unwrap().kind, EventKind::Updated);
    assert_eq!(
        h.last()["vcontap"]["party_history"]
            .as_array()
            .unwrap()
            .len(),
        100
    );
    // 750 more (1600 history entries against a cap of 1000) over 7.5 s: one `updated` per
    // 200 ms window at most, none once the history is full.
    let before = h.events.len();
    for i in 300..1050 {
        info(&mut h, i);
    }
    let flood = h.events.len() - before;
    assert!(flood <= 7_500 / 200 + 1, "{flood} events for 750 digits");
    h.timeout(12_000);
    h.sip(13_000, A, B, &request("BYE", "fl", 900, true, "", "", ""));
    h.sip(
        13_010,
        B,
        A,
        &response("fl", 200, "OK", 900, "BYE", Some("tb"), ""),
    );
    assert_eq!(h.events.last().unwrap().kind, EventKind::Finished);
    let v = h.last();
    assert_eq!(
        v["vcontap"]["party_history"].as_array().unwrap().len(),
        1000
    );
    assert_eq!(
        v["vcontap"]["history_dropped"], 601,
        "600 digits' entries and the drop"
    );
    let seqs: Vec<u64> = h.events.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "seq stays contiguous"
    );
    assert!(h.events.windows(2).all(|w| w[0].at <= w[1].at));
    check(&v);
}

/// The same answered call with `quality_interval_ms`: talk for 3 s, then silence, then BYE.
fn quality_run(interval: Option<i64>) -> Harness {
    let mut h = Harness::with(EngineConfig {
        record: RecordMode::None,
        host: "test.example".into(),
        quality_interval_ms: interval,
        ..EngineConfig::default()
    });
    answered(&mut h, "cq");
    talk(&mut h, 1100, 150);
    // Silence: timers keep running (the driver calls handle_timeout at poll_timeout).
    for ms in (4200..=9000).step_by(250) {
        h.timeout(ms);
    }
    h.sip(9000, A, B, &request("BYE", "cq", 2, true, "", "", ""));
    h.sip(
        9010,
        B,
        A,
        &response("cq", 200, "OK", 2, "BYE", Some("tb"), ""),
    );
    h
}

fn stream_packets(v: &Value) -> Option<u64> {
    let s = v["vcontap"]["rtp_quality"]["streams"].as_array()?;
    Some(s.iter().map(|x| x["packets"].as_u64().unwrap()).sum())
}

#[test]
fn quality_so_far_is_refreshed_on_the_timer_while_rtp_flows() {
    let h = quality_run(Some(1000));
    let live: Vec<(i64, Value)> = h
        .events
        .iter()
        .filter(|e| e.kind != EventKind::Finished)
        .map(|e| {
            let v: Value = serde_json::from_str(&e.vcon_json).unwrap();
            ((e.at.nanos() - T0) / 1_000_000, v)
        })
        .collect();
    // Before any RTP the snapshot has no report; from the first refresh on it has one.
    assert!(live[0].1["vcontap"].get("rtp_quality").is_none());
    let refreshes: Vec<(i64, u64)> = live
        .iter()
        .filter_map(|(at, v)| stream_packets(v).map(|p| (*at, p)))
        .collect();
    // RTP flows from 1.1 s to 4.1 s: refreshes about every second, never closer.
    assert!(
        (3..=4).contains(&refreshes.len()),
        "refreshes at {refreshes:?}"
    );
    for w in refreshes.windows(2) {
        assert!(w[1].0 - w[0].0 >= 1000, "too close: {refreshes:?}");
        assert!(w[1].1 > w[0].1, "counters must move: {refreshes:?}");
    }
    // Quiet call: no refresh once the counters stopped moving (RTP ended at ~4.1 s).
    let last = refreshes.last().unwrap();
    assert!(last.0 <= 5200, "refresh during silence: {refreshes:?}");
    assert_eq!(last.1, 300, "the last refresh has every packet");
    let seqs: Vec<u64> = h.events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    let v = h.last();
    check(&v);
    assert_eq!(v["vcontap"]["state"], "finished");
}

#[test]
fn quality_refresh_off_leaves_events_unchanged_and_finals_identical() {
    let on = quality_run(Some(1000));
    for off in [quality_run(None), quality_run(Some(0))] {
        assert!(off
            .events
            .iter()
            .filter(|e| e.kind != EventKind::Finished)
            .all(|e| !e.vcon_json.contains("rtp_quality")));
        assert!(off.events.len() < on.events.len());
        // The final vCon does not depend on the knob.
        assert_eq!(
            on.events.last().unwrap().vcon_json,
            off.events.last().unwrap().vcon_json
        );
    }
}

#[test]
fn quality_refresh_deadline_is_in_poll_timeout() {
    let mut h = Harness::with(EngineConfig {
        record: RecordMode::None,
        host: "test.example".into(),
        quality_interval_ms: Some(5000),
        // Keep other timers out of the way.
        idle_timeout_ms: 600_000,
        ..EngineConfig::default()
    });
    answered(&mut h, "cd");
    talk(&mut h, 1100, 10);
    let n = h.events.len();
    // The only deadline left is the refresh (created at 0 ms + 5 s), and the sweep.
    let due = T0 + 5000 * 1_000_000;
    assert!(h.engine.poll_timeout().nanos() <= due);
    h.timeout(4999);
    assert_eq!(h.events.len(), n, "not due yet");
    let mut t = 4999;
    while h.events.len() == n {
        t = (h.engine.poll_timeout().nanos() - T0) / 1_000_000;
        assert!(t <= 5000, "refresh not armed: next timeout at {t} ms");
        h.timeout(t);
    }
    assert_eq!(t, 5000);
    let e = h.events.last().unwrap();
    assert_eq!(e.kind, EventKind::Updated);
    assert_eq!(stream_packets(&h.last()), Some(20));
    // Nothing moved since: the next refresh is armed but sends nothing.
    h.timeout(10_000);
    h.timeout(15_001);
    assert_eq!(h.events.len(), n + 1);
}
