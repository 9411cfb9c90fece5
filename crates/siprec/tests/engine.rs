//! The recording server's actions drive the real engine: an INVITE with metadata, RTP on
//! both streams, a pause/resume re-INVITE, a metadata UPDATE adding a participant and a
//! BYE give one finished vCon with the metadata parties (tel for E.164 only), a recording,
//! and a document `validate-vcon` accepts. Every vendor INVITE of ../shared/siprec opens
//! an engine session too.

use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::Value;
use vcontap_engine::{
    Engine, EngineConfig, EventKind, Output, RecordMode, SessionId, StoredSegment, VconEvent,
};
use vcontap_sip::Message;
use vcontap_siprec::answer::{Bound, MAX_KEY_MATERIAL};
use vcontap_siprec::session::{self, SessionPlan};
use vcontap_siprec::uas::{Config, Event, Peer, Transport, Uas};
use vcontap_wire::{Datagram, Timestamp};

const T0: i64 = 1_767_225_600_000_000_000;

fn ts(ms: i64) -> Timestamp {
    Timestamp(T0 + ms * 1_000_000)
}

const SRC: Peer = Peer {
    transport: Transport::Udp,
    addr: SocketAddr::V4(std::net::SocketAddrV4::new(
        std::net::Ipv4Addr::new(192, 0, 2, 1),
        5070,
    )),
    conn: 0,
};

/// A shell in miniature: the UAS, the engine, port binding and the action mapping.
struct Shell {
    uas: Uas,
    engine: Engine,
    session: Option<(SessionId, SessionPlan, Timestamp)>,
    ports: Vec<Option<u16>>,
    events: Vec<Arc<VconEvent>>,
    sent: Vec<Vec<u8>>,
    tag: Option<String>,
}

impl Shell {
    fn new() -> Shell {
        Shell {
            uas: Uas::new(Config::new(
                "192.0.2.2".parse().unwrap(),
                "<sip:srs@192.0.2.2:5060>".into(),
                "192.0.2.2:5060".into(),
                7,
            )),
            engine: Engine::new(EngineConfig {
                record: RecordMode::Stereo,
                host: "siprec.test".into(),
                ..EngineConfig::default()
            }),
            session: None,
            ports: Vec::new(),
            events: Vec::new(),
            sent: Vec::new(),
            tag: None,
        }
    }

    fn engine_drain(&mut self) {
        while let Some(o) = self.engine.poll_output() {
            match o {
                Output::Event(e) => self.events.push(e),
                Output::SegmentClosed { segment } => {
                    let st = StoredSegment {
                        url: format!("https://media.example/{}.wav", segment.0),
                        content_hash: vcontap_vcon::content_hash(&segment.0.to_be_bytes()),
                        filename: format!("{}.wav", segment.0),
                        mediatype: "audio/x-wav".into(),
                    };
                    self.engine.handle_segment_stored(segment, st);
                }
                _ => {}
            }
        }
    }

    fn drain(&mut self, now: Timestamp) {
        loop {
            let mut any = false;
            while let Some(t) = self.uas.poll_transmit() {
                if let Ok(m) = Message::parse(&t.bytes) {
                    if m.status() == Some(200) && m.method() == Some(vcontap_sip::Method::Invite) {
                        self.tag = m.to().and_then(|t| t.tag).map(str::to_owned);
                    }
                }
                self.sent.push(t.bytes);
                any = true;
            }
            while let Some(e) = self.uas.poll_event() {
                any = true;
                self.act(now, e);
            }
            if !any {
                return;
            }
        }
    }

    fn act(&mut self, now: Timestamp, e: Event) {
        match e {
            Event::MediaRequest {
                rs,
                plans,
                existing,
                ..
            } => {
                let bound: Vec<Option<Bound>> = plans
                    .iter()
                    .enumerate()
                    .map(|(i, p)| {
                        existing[i].or_else(|| {
                            p.accepted().then(|| Bound {
                                port: 40000 + 2 * i as u16,
                                key: [9; MAX_KEY_MATERIAL],
                            })
                        })
                    })
                    .collect();
                self.ports = bound.iter().map(|b| b.map(|b| b.port)).collect();
                assert!(self.uas.media_ready(now, rs, bound));
            }
            Event::Opened(o) => {
                let plan = session::plan(&o);
                let id = self.engine.open_session(plan.spec.clone()).unwrap();
                self.session = Some((id, plan, o.at));
                self.engine_drain();
            }
            Event::MetadataChanged {
                metadata,
                streams,
                at,
                ..
            } => {
                let (id, _, t0) = self.session.as_ref().unwrap();
                let ps = session::participants(Some(&metadata), &streams);
                self.engine
                    .update_participants(*id, &ps, session::at(*t0, at))
                    .unwrap();
                self.engine_drain();
            }
            Event::Paused { at, .. } => {
                let (id, _, t0) = self.session.as_ref().unwrap();
                self.engine
                    .pause_session(*id, session::at(*t0, at))
                    .unwrap();
                self.engine_drain();
            }
            Event::Resumed { at, .. } => {
                let (id, _, t0) = self.session.as_ref().unwrap();
                self.engine
                    .resume_session(*id, session::at(*t0, at))
                    .unwrap();
                self.engine_drain();
            }
            Event::Ended { reason, at, .. } => {
                if let Some((id, _, t0)) = self.session.take() {
                    self.engine
                        .end_session(id, session::finish_reason(reason), session::at(t0, at))
                        .unwrap();
                    self.engine_drain();
                }
            }
            _ => {}
        }
    }

    fn sip(&mut self, ms: i64, bytes: &[u8]) {
        self.uas.handle_datagram(ts(ms), SRC, bytes);
        self.drain(ts(ms));
    }

    /// One 20 ms PCMU packet on m-line `m`.
    fn rtp(&mut self, ms: i64, m: usize, seq: u16) {
        let (id, plan, _) = self.session.as_ref().unwrap();
        let k = plan.stream_index[m].unwrap();
        let mut p = vec![0x80, 0, (seq >> 8) as u8, seq as u8];
        p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
        p.extend_from_slice(&(0x1000 + m as u32).to_be_bytes());
        p.extend((0..160).map(|i| if (i / 8) % 2 == 0 { 0x20 } else { 0xa0 }));
        let d = Datagram {
            ts: ts(ms),
            src: format!("192.0.2.1:{}", 6000 + 2 * m).parse().unwrap(),
            dst: format!("192.0.2.2:{}", self.ports[m].unwrap())
                .parse()
                .unwrap(),
            transport: vcontap_wire::Transport::Udp,
            vlan: None,
            payload: &p,
        };
        self.engine.session_media(*id, k, &d).unwrap();
        self.engine_drain();
    }
}

fn request(
    method: &str,
    branch: &str,
    cseq: u32,
    to_tag: Option<&str>,
    ct: &str,
    body: &str,
) -> Vec<u8> {
    let tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
    let ct = if body.is_empty() {
        String::new()
    } else {
        format!("Content-Type: {ct}\r\n")
    };
    format!(
        "{method} sip:srs@192.0.2.2 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5070;branch={branch}\r\n\
From: <sip:src@192.0.2.1>;tag=s1\r\nTo: <sip:srs@192.0.2.2>{tag}\r\nCall-ID: rs-e2e@192.0.2.1\r\n\
CSeq: {cseq} {method}\r\nContact: <sip:src@192.0.2.1:5070>;+sip.src\r\nRequire: siprec\r\n{ct}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn sdp(dir: &str) -> String {
    let mut s =
        "v=0\r\no=src 5 5 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n".to_owned();
    for l in ["1", "2"] {
        s.push_str(&format!(
            "m=audio 600{l} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=label:{l}\r\na={dir}\r\n"
        ));
    }
    s
}

const META: &str = "<?xml version=\"1.0\"?>\n<recording xmlns='urn:ietf:params:xml:ns:recording:1'>\n<datamode>complete</datamode>\n\
<session session_id='S'><sipSessionID>abc;remote=def</sipSessionID></session>\n\
<participant participant_id='A'><nameID aor='sip:+15551230001@pbx.example'><name>Ada</name></nameID></participant>\n\
<participant participant_id='B'><nameID aor='sip:2001@pbx.example'/></participant>\n\
<stream stream_id='s1' session_id='S'><label>1</label></stream>\n<stream stream_id='s2' session_id='S'><label>2</label></stream>\n\
<participantstreamassoc participant_id='A'><send>s1</send><recv>s2</recv></participantstreamassoc>\n\
<participantstreamassoc participant_id='B'><send>s2</send><recv>s1</recv></participantstreamassoc>\n</recording>\n";

/// Runs `validate-vcon` once over all `vcons` (it is slow to start).
fn validate(vcons: &[Value]) {
    let shared = std::env::var_os("VCONTAP_SHARED")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared")
        });
    let tool = shared.join("tools/validate-vcon");
    if !tool.exists() {
        eprintln!("skipped: validate-vcon not found in {}", shared.display());
        return;
    }
    static RUN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "vcontap-siprec-tests-{}-{}",
        std::process::id(),
        RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    for (i, v) in vcons.iter().enumerate() {
        std::fs::write(
            dir.join(format!("{i}.vcon.json")),
            serde_json::to_vec(v).unwrap(),
        )
        .unwrap();
    }
    let o = std::process::Command::new(&tool)
        .arg("--quiet")
        .arg(&dir)
        .output()
        .expect("run validate-vcon");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        o.status.success(),
        "validate-vcon failed:\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn recording_session_becomes_a_valid_vcon() {
    let mut sh = Shell::new();
    let body = format!(
        "--b\r\nContent-Type: application/sdp\r\n\r\n{}\r\n--b\r\nContent-Type: application/rs-metadata+xml\r\nContent-Disposition: recording-session\r\n\r\n{META}\r\n--b--\r\n",
        sdp("sendonly")
    );
    sh.sip(
        0,
        &request(
            "INVITE",
            "z9hG4bK1",
            1,
            None,
            "multipart/mixed;boundary=b",
            &body,
        ),
    );
    let tag = sh.tag.clone().expect("200 OK");
    assert!(sh.session.is_some(), "engine session opened");
    // RTP may come before the ACK.
    for i in 0..50u16 {
        sh.rtp(10 + 20 * i64::from(i), 0, i);
        sh.rtp(11 + 20 * i64::from(i), 1, i);
    }
    sh.sip(30, &request("ACK", "z9hG4bK1a", 1, Some(&tag), "", ""));
    // Pause, silence, resume.
    sh.sip(
        1100,
        &request(
            "INVITE",
            "z9hG4bK2",
            2,
            Some(&tag),
            "application/sdp",
            &sdp("inactive"),
        ),
    );
    sh.sip(1110, &request("ACK", "z9hG4bK2a", 2, Some(&tag), "", ""));
    sh.sip(
        3000,
        &request(
            "INVITE",
            "z9hG4bK3",
            3,
            Some(&tag),
            "application/sdp",
            &sdp("sendonly"),
        ),
    );
    sh.sip(3010, &request("ACK", "z9hG4bK3a", 3, Some(&tag), "", ""));
    for i in 50..100u16 {
        sh.rtp(3020 + 20 * i64::from(i - 50), 0, i);
        sh.rtp(3021 + 20 * i64::from(i - 50), 1, i);
    }
    // A third participant joins stream 2 by a partial, metadata-only UPDATE.
    let partial =
        "<recording xmlns='urn:ietf:params:xml:ns:recording:1'><datamode>partial</datamode>\
<participant participant_id='C'><nameID aor='sip:+15551230003@pbx.example'/></participant>\
<participantstreamassoc participant_id='C'><send>s2</send></participantstreamassoc></recording>";
    sh.sip(
        4100,
        &request(
            "UPDATE",
            "z9hG4bK4",
            4,
            Some(&tag),
            "application/rs-metadata",
            partial,
        ),
    );
    sh.sip(5000, &request("BYE", "z9hG4bK5", 5, Some(&tag), "", ""));
    assert!(sh.session.is_none(), "ended");
    sh.engine.handle_timeout(ts(600_000));
    sh.engine_drain();

    let kinds: Vec<EventKind> = sh.events.iter().map(|e| e.kind).collect();
    assert_eq!(kinds.first(), Some(&EventKind::Created));
    assert_eq!(kinds.last(), Some(&EventKind::Finished), "{kinds:?}");
    let v: Value = serde_json::from_str(&sh.events.last().unwrap().vcon_json).unwrap();
    let parties = v["parties"].as_array().unwrap();
    assert_eq!(parties[0]["tel"], "+15551230001");
    assert_eq!(parties[0]["name"], "Ada");
    assert_eq!(parties[1]["sip"], "sip:2001@pbx.example");
    assert!(parties[1].get("tel").is_none(), "an extension is not E.164");
    assert!(
        parties.iter().any(|p| p["tel"] == "+15551230003"),
        "the joined participant: {parties:?}"
    );
    let recordings: Vec<&Value> = v["dialog"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["type"] == "recording")
        .collect();
    assert!(!recordings.is_empty(), "{v}");
    validate(std::slice::from_ref(&v));
}

/// Every vendor INVITE opens an engine session (parties or placeholders, streams mapped).
#[test]
fn every_vendor_invite_opens_an_engine_session() {
    let dir = std::env::var_os("VCONTAP_SHARED")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"))
        .join("siprec");
    if !dir.is_dir() {
        eprintln!("SKIP: {} absent", dir.display());
        return;
    }
    let mut opened = 0;
    let mut all = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".txt") {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).unwrap();
        let text = text.split_once('\n').map(|(_, r)| r).unwrap_or("");
        // Body-only files: wrap in our INVITE; others are covered by the unit tests.
        if !text.trim_start().starts_with("--") {
            continue;
        }
        let boundary = text
            .lines()
            .find_map(|l| l.trim_end().strip_prefix("--"))
            .unwrap()
            .to_owned();
        let body = text.replace('\n', "\r\n");
        let mut sh = Shell::new();
        sh.sip(
            0,
            &request(
                "INVITE",
                "z9hG4bKv",
                1,
                None,
                &format!("multipart/mixed;boundary={boundary}"),
                &body,
            ),
        );
        let (id, plan, _) = sh
            .session
            .as_ref()
            .unwrap_or_else(|| panic!("{name}: not opened"));
        assert!(!plan.spec.participants.is_empty(), "{name}");
        assert!(!plan.spec.streams.is_empty(), "{name}");
        let id = *id;
        sh.engine
            .end_session(id, vcontap_engine::FinishReason::Bye, ts(1000))
            .unwrap();
        sh.engine.handle_timeout(ts(600_000));
        sh.engine_drain();
        let v: Value = serde_json::from_str(&sh.events.last().unwrap().vcon_json).unwrap();
        all.push(v);
        opened += 1;
    }
    assert_eq!(opened, 10, "the body-only vendor files");
    validate(&all);
}
