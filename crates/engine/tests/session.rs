//! The session API against a sniffed call: the same conversation (participants, two
//! streams of PCMU, the same packets) opened once from sniffed SIP and once through
//! `open_session` must give the same events, segments and vCon shape; participant changes
//! and pause/resume behave as documented.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::Value;
use vcontap_engine::{
    Engine, EngineConfig, EventKind, FinishReason, Output, Participant, PayloadFormat, RecordMode,
    SessionError, SessionId, SessionSpec, Side, StoredSegment, StreamSpec, VconEvent,
};
use vcontap_wire::{Datagram, Timestamp, Transport};

const T0: i64 = 1_767_225_600_000_000_000;

fn ts(ms: i64) -> Timestamp {
    Timestamp(T0 + ms * 1_000_000)
}

fn dg<'a>(ms: i64, src: &str, dst: &str, payload: &'a [u8]) -> Datagram<'a> {
    Datagram {
        ts: ts(ms),
        src: src.parse::<SocketAddr>().unwrap(),
        dst: dst.parse::<SocketAddr>().unwrap(),
        transport: Transport::Udp,
        vlan: None,
        payload,
    }
}

struct Driver {
    engine: Engine,
    events: Vec<Arc<VconEvent>>,
    samples: usize,
}

impl Driver {
    fn new() -> Self {
        Driver {
            engine: Engine::new(EngineConfig {
                record: RecordMode::Stereo,
                host: "session.test".into(),
                ..EngineConfig::default()
            }),
            events: Vec::new(),
            samples: 0,
        }
    }

    fn drain(&mut self) {
        while let Some(o) = self.engine.poll_output() {
            match o {
                Output::Event(e) => self.events.push(e),
                Output::Audio { samples, .. } => self.samples += samples.len() / 2,
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

    fn tick(&mut self, ms: i64) {
        if ts(ms) >= self.engine.poll_timeout() {
            self.engine.handle_timeout(ts(ms));
            self.drain();
        }
    }

    fn feed(&mut self, d: &Datagram<'_>) {
        self.tick((d.ts.nanos() - T0) / 1_000_000);
        self.engine.handle_datagram(d);
        self.drain();
    }

    /// Packet `i` of both declared streams (caller then callee, 1 ms apart) at `ms`.
    fn talk(&mut self, id: SessionId, i: u16, ms: i64) {
        let caller = rtp(i, 0xA, 0x10);
        let callee = rtp(i, 0xB, 0x30);
        let packets = [
            (0, dg(ms, "10.9.0.1:4000", "10.9.0.9:40000", &caller)),
            (1, dg(ms + 1, "10.9.0.1:4002", "10.9.0.9:40002", &callee)),
        ];
        for (stream, d) in &packets {
            self.engine.session_media(id, *stream, d).unwrap();
            self.drain();
        }
    }

    fn kinds(&self) -> Vec<EventKind> {
        self.events.iter().map(|e| e.kind).collect()
    }

    fn last(&self) -> Value {
        serde_json::from_str(&self.events.last().unwrap().vcon_json).unwrap()
    }
}

fn rtp(seq: u16, ssrc: u32, level: u8) -> Vec<u8> {
    let mut v = vec![0x80, 0, (seq >> 8) as u8, seq as u8];
    v.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    v.extend_from_slice(&ssrc.to_be_bytes());
    // A square-ish wave in µ-law so the channel is audibly not silent.
    v.extend((0..160).map(|i| {
        if (i / 10) % 2 == 0 {
            level
        } else {
            level ^ 0x80
        }
    }));
    v
}

const SDP_A: &str = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
const SDP_B: &str = "v=0\r\no=- 1 1 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

fn sip(first: &str, to_tag: bool, cseq: &str, body: &str) -> String {
    let tag = if to_tag { ";tag=tb" } else { "" };
    let ct = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/sdp\r\n"
    };
    format!(
        "{first}\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK{}\r\nFrom: \"Alice A\" <sip:+15550001@a.example>;tag=ta\r\nTo: \"Bob B\" <sip:+15550002@b.example>{tag}\r\nCall-ID: sess-1@test\r\nCSeq: {cseq}\r\n{ct}Content-Length: {}\r\n\r\n{body}",
        cseq.replace(' ', ""),
        body.len()
    )
}

/// 3 s of talk, 20 ms packets each way.
const PACKETS: u16 = 150;

fn sniffed() -> Driver {
    let mut d = Driver::new();
    let (a, b) = ("10.0.0.1:5060", "10.0.0.2:5060");
    d.feed(&dg(
        0,
        a,
        b,
        sip(
            "INVITE sip:+15550002@b.example SIP/2.0",
            false,
            "1 INVITE",
            SDP_A,
        )
        .as_bytes(),
    ));
    d.feed(&dg(
        100,
        b,
        a,
        sip("SIP/2.0 200 OK", true, "1 INVITE", SDP_B).as_bytes(),
    ));
    d.feed(&dg(
        110,
        a,
        b,
        sip("ACK sip:b SIP/2.0", true, "1 ACK", "").as_bytes(),
    ));
    for i in 0..PACKETS {
        let ms = 120 + i64::from(i) * 20;
        d.feed(&dg(
            ms,
            "10.0.0.1:4000",
            "10.0.0.2:6000",
            &rtp(i, 0xA, 0x10),
        ));
        d.feed(&dg(
            ms + 1,
            "10.0.0.2:6000",
            "10.0.0.1:4000",
            &rtp(i, 0xB, 0x30),
        ));
    }
    let end = 120 + i64::from(PACKETS) * 20;
    d.feed(&dg(
        end,
        a,
        b,
        sip("BYE sip:b SIP/2.0", true, "2 BYE", "").as_bytes(),
    ));
    d.feed(&dg(
        end + 5,
        b,
        a,
        sip("SIP/2.0 200 OK", true, "2 BYE", "").as_bytes(),
    ));
    d
}

fn pcmu() -> Vec<PayloadFormat> {
    vec![PayloadFormat {
        pt: 0,
        encoding: "PCMU".into(),
        clock_rate: 8000,
        channels: 1,
    }]
}

fn spec(parties: &Value) -> SessionSpec {
    let party = |i: usize| serde_json::from_value(parties[i].clone()).unwrap();
    SessionSpec {
        key: "siprec-session-1".into(),
        participants: vec![
            Participant {
                party: party(0),
                side: Side::Caller,
            },
            Participant {
                party: party(1),
                side: Side::Callee,
            },
        ],
        streams: vec![
            StreamSpec {
                label: "1".into(),
                side: Side::Caller,
                formats: pcmu(),
            },
            StreamSpec {
                label: "2".into(),
                side: Side::Callee,
                formats: pcmu(),
            },
        ],
        subject: None,
        at: ts(100),
        attachments: Vec::new(),
        not_recorded: None,
    }
}

/// Streams' (party, packets) and recordings' (parties, duration) of a finished vCon.
/// (streams as (party, packets), recordings as (parties, duration), end reason, parties).
type Shape = (Vec<(u64, u64)>, Vec<(Value, f64)>, Value, usize);

fn shape(v: &Value) -> Shape {
    let mut streams: Vec<(u64, u64)> = v["analysis"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["schema"] == "vcontap-rtp-quality")
        .flat_map(|a| a["body"]["streams"].as_array().unwrap().clone())
        .map(|s| (s["party"].as_u64().unwrap(), s["packets"].as_u64().unwrap()))
        .collect();
    streams.sort();
    let recs = v["dialog"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["type"] == "recording")
        .map(|d| (d["parties"].clone(), d["duration"].as_f64().unwrap()))
        .collect();
    (
        streams,
        recs,
        v["vcontap"]["end_reason"].clone(),
        v["parties"].as_array().unwrap().len(),
    )
}

#[test]
fn a_session_gives_the_same_vcon_shape_as_a_sniffed_call() {
    let s = sniffed();
    let sv = s.last();
    assert_eq!(*s.kinds().last().unwrap(), EventKind::Finished);

    let mut d = Driver::new();
    let id = d.engine.open_session(spec(&sv["parties"])).unwrap();
    d.drain();
    for i in 0..PACKETS {
        let ms = 120 + i64::from(i) * 20;
        d.tick(ms);
        d.talk(id, i, ms);
    }
    let end = 120 + i64::from(PACKETS) * 20;
    d.engine
        .end_session(id, FinishReason::Bye, ts(end))
        .unwrap();
    d.drain();
    let v = d.last();

    assert_eq!(
        d.kinds(),
        [EventKind::Created, EventKind::Segment, EventKind::Finished]
    );
    assert_eq!(
        s.kinds(),
        [
            EventKind::Created,
            EventKind::Updated,
            EventKind::Segment,
            EventKind::Finished
        ],
        "the sniffed call also reports its answer"
    );
    // Same streams, parties, end reason and recordings; durations may differ by the few
    // milliseconds between the sniffed BYE and its 200 OK, where a sniffed call is cut.
    let (a, b) = (shape(&v), shape(&sv));
    assert_eq!(
        (&a.0, &a.2, a.3),
        (&b.0, &b.2, b.3),
        "session {v}\nsniffed {sv}"
    );
    assert_eq!(a.1.len(), b.1.len());
    for (x, y) in a.1.iter().zip(&b.1) {
        assert_eq!(x.0, y.0, "recording parties");
        assert!((x.1 - y.1).abs() < 0.05, "durations {} vs {}", x.1, y.1);
    }
    assert_eq!(v["parties"], sv["parties"]);
    assert!(
        d.samples.abs_diff(s.samples) <= 8 * 50,
        "the same audio was recorded: {} vs {} frames",
        d.samples,
        s.samples
    );
    assert_eq!(v["vcontap"]["source"], "session");
    // A session has no sniffed SIP dialog: no sip-signaling fields, no trace.
    let rec = v["dialog"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["type"] == "recording")
        .unwrap();
    assert!(rec.get("sip_call_id").is_none());
    assert!(v["attachments"].as_array().is_none_or(|a| a.is_empty()));
    // The handle is dead after the end.
    assert_eq!(
        d.engine.session_media(
            id,
            0,
            &dg(end + 1, "10.9.0.1:4000", "10.9.0.9:40000", &rtp(1, 0xA, 0))
        ),
        Err(SessionError::UnknownSession)
    );
    check(&d.events);
}

#[test]
fn participants_change_and_pause_resume() {
    let s = sniffed();
    let sv = s.last();
    let mut d = Driver::new();
    let id = d.engine.open_session(spec(&sv["parties"])).unwrap();
    d.drain();
    assert_eq!(
        d.engine.open_session(spec(&sv["parties"])),
        Err(SessionError::DuplicateKey)
    );
    let mut carol: vcontap_vcon::Party = serde_json::from_value(sv["parties"][1].clone()).unwrap();
    carol.sip = Some("sip:carol@c.example".into());
    carol.tel = None;
    carol.name = Some("Carol".into());
    for i in 0..PACKETS {
        let ms = 120 + i64::from(i) * 20;
        d.tick(ms);
        match i {
            40 => d.engine.pause_session(id, ts(ms)).unwrap(),
            80 => d.engine.resume_session(id, ts(ms)).unwrap(),
            100 => {
                let list = [
                    Participant {
                        party: serde_json::from_value(sv["parties"][0].clone()).unwrap(),
                        side: Side::Caller,
                    },
                    Participant {
                        party: carol.clone(),
                        side: Side::Callee,
                    },
                ];
                d.engine.update_participants(id, &list, ts(ms)).unwrap();
            }
            _ => {}
        }
        d.drain();
        d.talk(id, i, ms);
    }
    assert_eq!(
        d.engine
            .session_media(id, 7, &dg(0, "1.1.1.1:1", "2.2.2.2:2", &rtp(0, 1, 0))),
        Err(SessionError::UnknownStream)
    );
    let end = 120 + i64::from(PACKETS) * 20;
    d.engine
        .end_session(id, FinishReason::Shutdown, ts(end))
        .unwrap();
    d.drain();
    let v = d.last();
    assert_eq!(v["vcontap"]["end_reason"], "shutdown");
    assert_eq!(
        d.events.last().unwrap().reason,
        Some(FinishReason::Shutdown)
    );
    // Carol was appended; the callee channel names her after the change.
    let parties = v["parties"].as_array().unwrap();
    assert_eq!(parties.len(), 3);
    assert_eq!(parties[2]["name"], "Carol");
    let recs: Vec<&Value> = v["dialog"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["type"] == "recording")
        .collect();
    assert_eq!(
        recs.len(),
        3,
        "cut at pause and at the participant change: {v}"
    );
    assert_eq!(recs[0]["parties"], serde_json::json!([0, 1]));
    assert_eq!(recs[2]["parties"], serde_json::json!([0, 2]));
    let hist: Vec<&str> = recs[2]["party_history"].as_array().map_or(vec![], |h| {
        h.iter().map(|e| e["event"].as_str().unwrap()).collect()
    });
    assert!(hist.is_empty() || hist.iter().all(|e| *e == "drop" || *e == "join"));
    let all_hist: Vec<String> = v["dialog"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|x| x["party_history"].as_array().cloned().unwrap_or_default())
        .map(|e| format!("{}:{}", e["party"], e["event"].as_str().unwrap()))
        .collect();
    assert!(all_hist.iter().any(|e| e == "1:drop"), "{all_hist:?}");
    assert!(all_hist.iter().any(|e| e == "2:join"), "{all_hist:?}");
    // The pause interval is reported and nothing was recorded during it (40 packets).
    let pauses = v["vcontap"]["recording_pauses"].as_array().unwrap();
    assert_eq!(pauses.len(), 1);
    assert!(pauses[0]["end"].is_string());
    let recorded: f64 = recs.iter().map(|r| r["duration"].as_f64().unwrap()).sum();
    assert!(
        recorded < 2.4 && recorded > 1.9,
        "3 s minus the 0.8 s pause, got {recorded}"
    );
    check(&d.events);
}

/// Every snapshot passes the structural checks; `seq` counts from 1.
fn check(events: &[Arc<VconEvent>]) {
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1);
        let v: vcontap_vcon::Vcon = serde_json::from_str(&e.vcon_json).unwrap();
        vcontap_vcon::check(&v).unwrap_or_else(|err| panic!("event {}: {err}", e.seq));
    }
    validate(events);
}

fn validate(events: &[Arc<VconEvent>]) {
    let vcons: Vec<Value> = events
        .iter()
        .map(|e| serde_json::from_str(&e.vcon_json).unwrap())
        .collect();
    common::validate_vcon(&vcons);
}

#[test]
fn capture_loss_is_marked_on_calls_live_in_the_span() {
    let mut d = Driver::new();
    let (a, b) = ("10.0.0.1:5060", "10.0.0.2:5060");
    d.feed(&dg(
        0,
        a,
        b,
        sip(
            "INVITE sip:+15550002@b.example SIP/2.0",
            false,
            "1 INVITE",
            SDP_A,
        )
        .as_bytes(),
    ));
    d.feed(&dg(
        100,
        b,
        a,
        sip("SIP/2.0 200 OK", true, "1 INVITE", SDP_B).as_bytes(),
    ));
    // Loss before the call and after it are not its business; overlapping spans merge.
    d.engine.note_capture_loss(ts(-5000), ts(-4000), 7);
    d.engine.note_capture_loss(ts(500), ts(1500), 42);
    d.engine.note_capture_loss(ts(1400), ts(2000), 8);
    d.engine.note_capture_loss(ts(3000), ts(3100), 1);
    d.feed(&dg(
        4000,
        a,
        b,
        sip("BYE sip:b SIP/2.0", true, "2 BYE", "").as_bytes(),
    ));
    d.feed(&dg(
        4005,
        b,
        a,
        sip("SIP/2.0 200 OK", true, "2 BYE", "").as_bytes(),
    ));
    d.engine.note_capture_loss(ts(60_000), ts(61_000), 9);
    d.tick(70_000);
    assert_eq!(*d.kinds().last().unwrap(), EventKind::Finished);
    let v = d.last();
    let loss = v["vcontap"]["capture_loss"].as_array().unwrap();
    assert_eq!(loss.len(), 2, "{loss:?}");
    assert_eq!(loss[0]["packets"], 50);
    assert_eq!(loss[1]["packets"], 1);
    assert!(loss[0]["start"].as_str().unwrap() < loss[0]["end"].as_str().unwrap());
    // A call without loss has no member at all.
    let clean = sniffed();
    assert!(clean.last()["vcontap"].get("capture_loss").is_none());
}
