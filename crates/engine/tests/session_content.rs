//! What a session's vCon keeps beyond audio (engine session API): attachments (held in
//! `vcontap.attachments` until a dialog exists, then top-level; capped per session), streams
//! declared after the open (recorded on their side's channel), and sessions a recording
//! policy keeps from being recorded.

use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::{json, Value};
use vcontap_engine::{
    Attachment, AttachmentBody, Engine, EngineConfig, FinishReason, Output, Participant,
    PayloadFormat, RecordMode, SessionError, SessionId, SessionSpec, Side, StoredSegment,
    StreamSpec, VconEvent, MAX_SESSION_ATTACHMENTS, MAX_SESSION_STREAMS,
};
use vcontap_vcon::Party;
use vcontap_wire::{Datagram, Timestamp, Transport};

const T0: i64 = 1_767_225_600_000_000_000;

fn ts(ms: i64) -> Timestamp {
    Timestamp(T0 + ms * 1_000_000)
}

struct Driver {
    engine: Engine,
    events: Vec<Arc<VconEvent>>,
    /// Audio samples per channel (left, right) that were not silence.
    loud: [usize; 2],
}

impl Driver {
    fn new() -> Self {
        Driver {
            engine: Engine::new(EngineConfig {
                record: RecordMode::Stereo,
                host: "content.test".into(),
                ..EngineConfig::default()
            }),
            events: Vec::new(),
            loud: [0, 0],
        }
    }

    fn drain(&mut self) {
        while let Some(o) = self.engine.poll_output() {
            match o {
                Output::Event(e) => self.events.push(e),
                Output::Audio { samples, .. } => {
                    for frame in samples.chunks(2) {
                        for (ch, s) in frame.iter().enumerate() {
                            if s.unsigned_abs() > 200 {
                                self.loud[ch] += 1;
                            }
                        }
                    }
                }
                Output::SegmentOpened { .. } => {}
                Output::SegmentClosed { segment } => {
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

    fn packet(&mut self, id: SessionId, stream: usize, seq: u16, ssrc: u32, ms: i64) {
        if ts(ms) >= self.engine.poll_timeout() {
            self.engine.handle_timeout(ts(ms));
        }
        let p = rtp(seq, ssrc);
        let d = Datagram {
            ts: ts(ms),
            src: "10.9.0.1:4000".parse::<SocketAddr>().unwrap(),
            dst: format!("10.9.0.9:{}", 40000 + 2 * stream)
                .parse::<SocketAddr>()
                .unwrap(),
            transport: Transport::Udp,
            vlan: None,
            payload: &p,
        };
        self.engine.session_media(id, stream, &d).unwrap();
        self.drain();
    }

    fn last(&self) -> Value {
        serde_json::from_str(&self.events.last().unwrap().vcon_json).unwrap()
    }
}

/// A loud PCMU packet.
fn rtp(seq: u16, ssrc: u32) -> Vec<u8> {
    let mut v = vec![0x80, 0, (seq >> 8) as u8, seq as u8];
    v.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    v.extend_from_slice(&ssrc.to_be_bytes());
    v.extend((0..160).map(|i| if (i / 10) % 2 == 0 { 0x10 } else { 0x90 }));
    v
}

fn pcmu() -> Vec<PayloadFormat> {
    vec![PayloadFormat {
        pt: 0,
        encoding: "PCMU".into(),
        clock_rate: 8000,
        channels: 1,
    }]
}

fn stream(label: &str, side: Side) -> StreamSpec {
    StreamSpec {
        label: label.into(),
        side,
        formats: pcmu(),
    }
}

fn spec(streams: Vec<StreamSpec>) -> SessionSpec {
    let party = |tel: &str| Party {
        tel: Some(tel.into()),
        ..Party::default()
    };
    SessionSpec {
        key: "rs-content-1".into(),
        participants: vec![
            Participant {
                party: party("+15551230001"),
                side: Side::Caller,
            },
            Participant {
                party: party("+15551230002"),
                side: Side::Callee,
            },
        ],
        streams,
        subject: None,
        at: ts(0),
        attachments: Vec::new(),
        not_recorded: None,
    }
}

fn text(purpose: &str, ms: i64, body: &str) -> Attachment {
    Attachment {
        purpose: purpose.into(),
        at: ts(ms),
        mediatype: "text/plain".into(),
        body: AttachmentBody::Text(body.into()),
        extension: None,
    }
}

#[test]
fn attachments_wait_for_a_dialog_then_move_to_the_top_level() {
    let mut d = Driver::new();
    let mut s = spec(vec![stream("1", Side::Caller), stream("2", Side::Callee)]);
    s.attachments = vec![Attachment {
        purpose: "sip-invite".into(),
        at: ts(0),
        mediatype: "message/sip".into(),
        body: AttachmentBody::Text("INVITE sip:srs@x SIP/2.0\r\n\r\n".into()),
        extension: Some(vcontap_vcon::EXT_SIP_SIGNALING),
    }];
    let id = d.engine.open_session(s).unwrap();
    d.drain();
    let created = d.last();
    assert!(
        created.get("attachments").is_none(),
        "no dialog yet: {created}"
    );
    let held = &created["vcontap"]["attachments"];
    assert_eq!(held[0]["purpose"], "sip-invite");
    assert_eq!(held[0]["encoding"], "none");
    assert_eq!(held[0]["mediatype"], "message/sip");
    assert!(held[0].get("dialog").is_none(), "{held}");
    assert!(created["extensions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e == "sip-signaling"));

    d.engine
        .attach_session(
            id,
            Attachment {
                purpose: "siprec-ids".into(),
                at: ts(500),
                mediatype: "application/json".into(),
                body: AttachmentBody::Json(json!({"group_id": "g1"})),
                extension: None,
            },
        )
        .unwrap();
    for i in 0..100u16 {
        d.packet(id, 0, i, 0xA, 1000 + 20 * i64::from(i));
        d.packet(id, 1, i, 0xB, 1001 + 20 * i64::from(i));
    }
    let live = d.last();
    let held: Vec<&Value> = live["vcontap"]["attachments"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    assert_eq!(held.len(), 2, "{live}");
    assert_eq!(held[1]["body"], json!({"group_id": "g1"}));
    assert_eq!(held[1]["encoding"], "json");

    d.engine
        .end_session(id, FinishReason::Bye, ts(3100))
        .unwrap();
    d.drain();
    let v = d.last();
    assert!(v["vcontap"].get("attachments").is_none(), "all placed: {v}");
    let top = v["attachments"].as_array().unwrap();
    assert_eq!(top.len(), 2, "{v}");
    for a in top {
        assert_eq!(a["dialog"], 0, "the first recording");
        assert_eq!(a["party"], 0);
    }
    assert_eq!(v["dialog"][0]["type"], "recording");
    assert_eq!(top[0]["start"], "2026-01-01T00:00:00Z");
    assert_eq!(top[1]["start"], "2026-01-01T00:00:00.500Z");
}

#[test]
fn attachments_over_the_caps_are_counted_not_kept() {
    let mut d = Driver::new();
    let id = d
        .engine
        .open_session(spec(vec![stream("1", Side::Caller)]))
        .unwrap();
    for i in 0..MAX_SESSION_ATTACHMENTS + 3 {
        d.engine
            .attach_session(id, text("note", i as i64, "abcd"))
            .unwrap();
    }
    // Within the count but over the byte cap.
    let huge = "x".repeat(vcontap_engine::MAX_SESSION_ATTACHMENT_BYTES + 1);
    d.drain();
    d.engine
        .end_session(id, FinishReason::Bye, ts(5000))
        .unwrap();
    d.drain();
    let v = d.last();
    assert_eq!(
        v["vcontap"]["attachments"].as_array().unwrap().len(),
        MAX_SESSION_ATTACHMENTS
    );
    assert_eq!(
        v["vcontap"]["attachments_dropped"],
        json!({"count": 3, "bytes": 12})
    );
    assert_eq!(d.engine.stats().session_attachments_dropped, 3);
    // A fresh session: the byte cap alone.
    let mut s = spec(vec![stream("1", Side::Caller)]);
    s.key = "rs-content-2".into();
    let id = d.engine.open_session(s).unwrap();
    d.engine
        .attach_session(id, text("big", 6000, &huge))
        .unwrap();
    d.engine
        .attach_session(id, text("small", 6001, "ok"))
        .unwrap();
    d.engine
        .end_session(id, FinishReason::Bye, ts(7000))
        .unwrap();
    d.drain();
    let v = d.last();
    let held = v["vcontap"]["attachments"].as_array().unwrap();
    assert_eq!(held.len(), 1);
    assert_eq!(held[0]["purpose"], "small");
    assert_eq!(v["vcontap"]["attachments_dropped"]["count"], 1);
    assert_eq!(
        v["vcontap"]["attachments_dropped"]["bytes"],
        huge.len() as u64
    );
}

#[test]
fn a_stream_added_later_records_on_its_side() {
    let mut d = Driver::new();
    let id = d
        .engine
        .open_session(spec(vec![stream("caller-leg", Side::Caller)]))
        .unwrap();
    d.drain();
    assert_eq!(
        d.engine.session_media(
            id,
            1,
            &Datagram {
                ts: ts(10),
                src: "10.9.0.1:4000".parse().unwrap(),
                dst: "10.9.0.9:40002".parse().unwrap(),
                transport: Transport::Udp,
                vlan: None,
                payload: &rtp(0, 0xB),
            }
        ),
        Err(SessionError::UnknownStream),
        "not declared yet"
    );
    for i in 0..50u16 {
        d.packet(id, 0, i, 0xA, 20 * i64::from(i));
    }
    assert_eq!(d.loud[1], 0, "nothing on the right yet");
    // The agent's stream arrives with a re-INVITE, with a payload type of its own.
    let mut agent = stream("callee-leg", Side::Callee);
    agent.formats.push(PayloadFormat {
        pt: 8,
        encoding: "PCMA".into(),
        clock_rate: 8000,
        channels: 1,
    });
    assert_eq!(d.engine.add_session_stream(id, agent, ts(1000)).unwrap(), 1);
    for i in 50..150u16 {
        d.packet(id, 0, i, 0xA, 20 * i64::from(i));
        d.packet(id, 1, i - 50, 0xB, 20 * i64::from(i) + 1);
    }
    d.engine
        .end_session(id, FinishReason::Bye, ts(3100))
        .unwrap();
    d.drain();
    let v = d.last();
    assert!(d.loud[0] > 8000 * 2, "caller left: {:?}", d.loud);
    assert!(
        (8000..=8000 * 2 + 800).contains(&d.loud[1]),
        "about 2 s of the agent right: {:?}",
        d.loud
    );
    assert_eq!(
        v["vcontap"]["streams_added"],
        json!([{"label": "callee-leg", "side": "callee", "at": "2026-01-01T00:00:01Z"}])
    );
    let report = v["analysis"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["schema"] == "vcontap-rtp-quality")
        .unwrap();
    let mut streams: Vec<(u64, u64)> = report["body"]["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["party"].as_u64().unwrap(), s["packets"].as_u64().unwrap()))
        .collect();
    streams.sort();
    assert_eq!(streams, [(0, 150), (1, 100)]);
    // The cap on declared streams.
    let mut s = spec(vec![stream("1", Side::Caller)]);
    s.key = "rs-content-3".into();
    let id = d.engine.open_session(s).unwrap();
    for k in 1..MAX_SESSION_STREAMS {
        assert_eq!(
            d.engine
                .add_session_stream(id, stream(&k.to_string(), Side::Callee), ts(4000))
                .unwrap(),
            k
        );
    }
    assert_eq!(
        d.engine
            .add_session_stream(id, stream("one too many", Side::Callee), ts(4000)),
        Err(SessionError::TooManyStreams)
    );
}

#[test]
fn a_session_not_recorded_keeps_no_media_and_says_why() {
    let mut d = Driver::new();
    let mut s = spec(vec![stream("1", Side::Caller), stream("2", Side::Callee)]);
    s.not_recorded = Some("do-not-record list".into());
    s.attachments = vec![text("note", 0, "kept")];
    let id = d.engine.open_session(s).unwrap();
    for i in 0..100u16 {
        d.packet(id, 0, i, 0xA, 20 * i64::from(i));
        d.packet(id, 1, i, 0xB, 20 * i64::from(i) + 1);
    }
    d.engine
        .end_session(id, FinishReason::Bye, ts(2100))
        .unwrap();
    d.drain();
    let v = d.last();
    assert_eq!(d.loud, [0, 0], "no audio produced");
    assert_eq!(d.engine.stats().session_packets_not_recorded, 200);
    assert!(v["dialog"].as_array().is_none_or(|d| d.is_empty()), "{v}");
    assert_eq!(
        v["vcontap"]["recording"],
        json!({"recorded": false, "reason": "do-not-record list"})
    );
    assert_eq!(v["vcontap"]["no_recording"], "policy");
    assert_eq!(v["vcontap"]["attachments"][0]["body"], "kept");
    assert_eq!(v["vcontap"]["end_reason"], "bye");
}
