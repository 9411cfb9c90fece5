//! The engine's session API through the Tap (a SIPREC recorder's path): sessions opened,
//! fed, paused, resumed and ended through `Tap::open_session`/`Tap::session` reach the same
//! events, media store and vCons as sniffed calls, inline (one shard) and threaded (sessions
//! spread over shards), and the engine's refusals surface inline.

use std::sync::{Arc, Mutex};

use serde_json::Value;
use vcontap_engine::{
    EngineConfig, EventKind, FinishReason, Participant, PayloadFormat, RecordMode, SessionSpec,
    Side, StreamSpec,
};
use vcontap_pipeline::{LocalFiles, PipelineError, SessionCall, Tap, TapConfig};
use vcontap_vcon::Party;
use vcontap_wire::{Datagram, Timestamp, Transport};

const T0: i64 = 1_767_225_600_000_000_000;

fn ts(ms: i64) -> Timestamp {
    Timestamp(T0 + ms * 1_000_000)
}

fn spec(key: &str) -> SessionSpec {
    let pcmu = vec![PayloadFormat {
        pt: 0,
        encoding: "PCMU".into(),
        clock_rate: 8000,
        channels: 1,
    }];
    SessionSpec {
        key: key.into(),
        participants: vec![
            Participant {
                party: Party {
                    tel: Some("+15551230001".into()),
                    ..Party::default()
                },
                side: Side::Caller,
            },
            Participant {
                party: Party {
                    sip: Some("sip:2001@pbx.example".into()),
                    ..Party::default()
                },
                side: Side::Callee,
            },
        ],
        streams: vec![
            StreamSpec {
                label: "1".into(),
                side: Side::Caller,
                formats: pcmu.clone(),
            },
            StreamSpec {
                label: "2".into(),
                side: Side::Callee,
                formats: pcmu,
            },
        ],
        subject: None,
        at: ts(0),
        attachments: Vec::new(),
        not_recorded: None,
    }
}

fn rtp(seq: u16, ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 0];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend((0..160).map(|i| if (i / 8) % 2 == 0 { 0x20 } else { 0xa0 }));
    p
}

type Events = Arc<Mutex<Vec<(EventKind, Value)>>>;

fn tap(shards: usize, media: &std::path::Path) -> (Tap, Events) {
    let mut cfg = TapConfig::replay(EngineConfig {
        record: RecordMode::Stereo,
        host: "session.test".into(),
        ..EngineConfig::default()
    });
    cfg.shards = shards;
    cfg.media = Some(Arc::new(LocalFiles::new(media, None).unwrap()));
    let events: Events = Arc::new(Mutex::new(Vec::new()));
    let e = events.clone();
    let tap = Tap::new(
        cfg,
        Box::new(move |ev| {
            e.lock()
                .unwrap()
                .push((ev.kind, serde_json::from_str(&ev.vcon_json).unwrap()));
            Ok(())
        }),
    )
    .unwrap();
    (tap, events)
}

/// `sessions` two-stream sessions: 1 s of audio, a 1 s pause, 1 s more, then a BYE-like end.
fn drive(tap: &mut Tap, sessions: u32) {
    let hs: Vec<_> = (0..sessions)
        .map(|i| tap.open_session(spec(&format!("rs-{i}")), ts(0)).unwrap())
        .collect();
    let mut seq = 0u16;
    for (from, to) in [(0i64, 1000i64), (2000, 3000)] {
        let mut t = from;
        while t < to {
            for (i, h) in hs.iter().enumerate() {
                for stream in 0..2usize {
                    let p = rtp(seq, 0x100 + (i as u32) * 2 + stream as u32);
                    let d = Datagram {
                        ts: ts(t),
                        src: format!("192.0.2.1:{}", 6000 + 2 * stream).parse().unwrap(),
                        dst: format!("192.0.2.2:{}", 40000 + 4 * i + 2 * stream)
                            .parse()
                            .unwrap(),
                        transport: Transport::Udp,
                        vlan: None,
                        payload: &p,
                    };
                    tap.session(
                        *h,
                        SessionCall::Media {
                            stream,
                            datagram: d,
                        },
                        ts(t),
                    )
                    .unwrap();
                }
            }
            seq = seq.wrapping_add(1);
            t += 20;
        }
        if from == 0 {
            for h in &hs {
                tap.session(*h, SessionCall::Pause(ts(1000)), ts(1000))
                    .unwrap();
                tap.session(*h, SessionCall::Resume(ts(2000)), ts(2000))
                    .unwrap();
            }
        }
    }
    for h in &hs {
        tap.session(*h, SessionCall::End(FinishReason::Bye, ts(3000)), ts(3000))
            .unwrap();
    }
}

fn check(events: &Events, sessions: usize, media: &std::path::Path) {
    let ev = events.lock().unwrap();
    let finished: Vec<&Value> = ev
        .iter()
        .filter(|(k, _)| *k == EventKind::Finished)
        .map(|(_, v)| v)
        .collect();
    assert_eq!(finished.len(), sessions, "one finished vCon per session");
    for v in finished {
        let parties = v["parties"].as_array().unwrap();
        assert_eq!(parties[0]["tel"], "+15551230001");
        assert_eq!(parties[1]["sip"], "sip:2001@pbx.example");
        let recs: Vec<&Value> = v["dialog"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["type"] == "recording")
            .collect();
        assert_eq!(recs.len(), 2, "the pause cuts the recording in two: {v}");
        for r in recs {
            let d = r["duration"].as_f64().unwrap();
            assert!((0.9..=1.1).contains(&d), "segment of about 1 s: {d}");
        }
    }
    let wavs = walk(media)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "wav"))
        .count();
    assert_eq!(
        wavs,
        2 * sessions,
        "two WAV segments per session in the store"
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn tmp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "vcontap-session-test-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn sessions_inline_reach_events_and_media_store() {
    let dir = tmp("inline");
    let (mut t, events) = tap(1, &dir);
    drive(&mut t, 2);
    t.finish(ts(4000)).unwrap();
    check(&events, 2, &dir);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sessions_threaded_spread_over_shards_and_finish() {
    let dir = tmp("threads");
    let (mut t, events) = tap(3, &dir);
    drive(&mut t, 5);
    t.finish(ts(4000)).unwrap();
    check(&events, 5, &dir);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn inline_refusals_come_back_and_open_shutdown_finishes_sessions() {
    let dir = tmp("refusals");
    let (mut t, events) = tap(1, &dir);
    let h = t.open_session(spec("dup"), ts(0)).unwrap();
    assert!(matches!(
        t.open_session(spec("dup"), ts(0)),
        Err(PipelineError::Session(
            vcontap_engine::SessionError::DuplicateKey
        ))
    ));
    let p = rtp(1, 9);
    let d = Datagram {
        ts: ts(10),
        src: "192.0.2.1:6000".parse().unwrap(),
        dst: "192.0.2.2:40000".parse().unwrap(),
        transport: Transport::Udp,
        vlan: None,
        payload: &p,
    };
    assert!(matches!(
        t.session(
            h,
            SessionCall::Media {
                stream: 7,
                datagram: d
            },
            ts(10)
        ),
        Err(PipelineError::Session(
            vcontap_engine::SessionError::UnknownStream
        ))
    ));
    t.finish_because(ts(100), FinishReason::Shutdown).unwrap();
    let ev = events.lock().unwrap();
    let (kind, v) = ev.last().unwrap();
    assert_eq!(*kind, EventKind::Finished);
    assert_eq!(v["parties"][0]["tel"], "+15551230001");
    let _ = std::fs::remove_dir_all(&dir);
}
