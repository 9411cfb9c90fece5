//! End-to-end checks: generate a capture, parse it back with an independent reader, and
//! verify it contains exactly what the plan promised.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;

use common::{
    alaw_to_linear, decode, dominant, is_rtp, is_sip, read_pcap, sip_lines, ulaw_to_linear, Frame,
};
use vcontap_media::AudioDecoder;
use vcontap_synth::{generate, plan, Codec, Outcome, SipTransport, SynthConfig, SynthSummary};

fn run(cfg: &SynthConfig) -> (SynthSummary, Vec<Frame>) {
    let mut out = Vec::new();
    let summary = generate(cfg, &mut out).expect("generate");
    let records = read_pcap(&out);
    assert_eq!(records.len() as u64, summary.packets, "record count");
    assert_eq!(
        records.iter().map(|r| r.data.len() as u64).sum::<u64>(),
        summary.bytes
    );
    assert!(
        records.windows(2).all(|w| w[0].ts_ns <= w[1].ts_ns),
        "timestamps non-decreasing"
    );
    assert_eq!(records.first().map(|r| r.ts_ns), Some(summary.first.0));
    assert_eq!(records.last().map(|r| r.ts_ns), Some(summary.last.0));
    let frames: Vec<Frame> = records.iter().map(decode).collect();
    (summary, frames)
}

/// RTP payloads of one direction, in capture order.
fn rtp_of(frames: &[Frame], src: SocketAddr, dst: SocketAddr) -> Vec<&Frame> {
    frames
        .iter()
        .filter(|f| f.src == src && f.dst == dst && is_rtp(&f.payload))
        .collect()
}

#[test]
fn counts_and_plan_times_match_capture() {
    let cfg = SynthConfig {
        calls: 8,
        concurrent: 4,
        seconds: 2.0,
        failure_every: 4,
        ..Default::default()
    };
    let (summary, frames) = run(&cfg);
    assert_eq!(summary.calls, plan(&cfg));
    let sip = frames.iter().filter(|f| is_sip(&f.payload)).count() as u64;
    let rtp = frames.iter().filter(|f| is_rtp(&f.payload)).count() as u64;
    assert_eq!(sip, summary.sip_messages);
    assert_eq!(rtp, summary.rtp_packets);
    assert_eq!(sip + rtp, summary.packets);
    assert_eq!(summary.first, cfg.start);
    for call in &summary.calls {
        let mine: Vec<&Frame> = frames
            .iter()
            .filter(|f| String::from_utf8_lossy(&f.payload).contains(&call.call_id))
            .collect();
        assert_eq!(
            mine.first().map(|f| f.ts_ns),
            Some(call.invite_at.0),
            "invite_at"
        );
        assert_eq!(mine.last().map(|f| f.ts_ns), Some(call.end_at.0), "end_at");
        if let Some(answer) = call.answer_at {
            let ok = mine.iter().find(|f| {
                f.payload.starts_with(b"SIP/2.0 200")
                    && String::from_utf8_lossy(&f.payload).contains("CSeq: 1 INVITE")
            });
            assert_eq!(ok.map(|f| f.ts_ns), Some(answer.0), "answer_at");
        }
        assert_eq!(mine[0].src, call.caller_sip);
        assert_eq!(mine[0].dst, call.callee_sip);
    }
}

#[test]
fn rtp_per_answered_call_and_stream_properties() {
    let cfg = SynthConfig {
        calls: 4,
        concurrent: 2,
        seconds: 3.0,
        ..Default::default()
    };
    let (summary, frames) = run(&cfg);
    for call in &summary.calls {
        assert_eq!(call.outcome, Outcome::Answered);
        let a = rtp_of(&frames, call.caller_rtp, call.callee_rtp);
        let b = rtp_of(&frames, call.callee_rtp, call.caller_rtp);
        assert_eq!(a.len() + b.len(), 2 * 3000 / 20);
        for (stream, ssrc) in [(&a, call.caller_ssrc), (&b, call.callee_ssrc)] {
            assert_eq!(
                stream[0].payload[1], 0x80,
                "marker + PT 0 on the first packet"
            );
            for w in stream.windows(2) {
                let (p, q) = (&w[0].payload, &w[1].payload);
                assert_eq!(u32::from_be_bytes(q[8..12].try_into().unwrap()), ssrc);
                let (s0, s1) = (
                    u16::from_be_bytes([p[2], p[3]]),
                    u16::from_be_bytes([q[2], q[3]]),
                );
                assert_eq!(s1, s0.wrapping_add(1));
                let (t0, t1) = (
                    u32::from_be_bytes(p[4..8].try_into().unwrap()),
                    u32::from_be_bytes(q[4..8].try_into().unwrap()),
                );
                assert_eq!(t1.wrapping_sub(t0), 160);
                let gap = w[1].ts_ns - w[0].ts_ns;
                assert!(
                    (18_000_000..=22_000_000).contains(&gap),
                    "arrival gap {gap}"
                );
            }
            // Media stays between the ACK and the BYE.
            assert!(
                stream[0].ts_ns > call.answer_at.unwrap().0
                    && stream.last().unwrap().ts_ns < call.end_at.0
            );
        }
    }
}

#[test]
fn outcomes_produce_expected_sip_sequences() {
    let cfg = SynthConfig {
        calls: 5,
        concurrent: 5,
        seconds: 1.0,
        failure_every: 1,
        ..Default::default()
    };
    let (summary, frames) = run(&cfg);
    let expected: HashMap<Outcome, Vec<&str>> = [
        (
            Outcome::Busy,
            vec![
                "INVITE",
                "SIP/2.0 100 Trying",
                "SIP/2.0 180 Ringing",
                "SIP/2.0 486 Busy Here",
                "ACK",
            ],
        ),
        (
            Outcome::NoAnswer,
            vec![
                "INVITE",
                "SIP/2.0 100 Trying",
                "SIP/2.0 180 Ringing",
                "CANCEL",
                "SIP/2.0 200 OK",
                "SIP/2.0 487 Request Terminated",
                "ACK",
            ],
        ),
        (
            Outcome::Rejected,
            vec![
                "INVITE",
                "SIP/2.0 100 Trying",
                "SIP/2.0 180 Ringing",
                "SIP/2.0 603 Decline",
                "ACK",
            ],
        ),
        (
            Outcome::NotFound,
            vec![
                "INVITE",
                "SIP/2.0 100 Trying",
                "SIP/2.0 404 Not Found",
                "ACK",
            ],
        ),
    ]
    .into_iter()
    .collect();
    let outcomes: Vec<Outcome> = summary.calls.iter().map(|c| c.outcome).collect();
    assert_eq!(
        outcomes,
        [
            Outcome::Busy,
            Outcome::NoAnswer,
            Outcome::Rejected,
            Outcome::NotFound,
            Outcome::Busy
        ]
    );
    for call in &summary.calls {
        let lines = sip_lines(&frames, &call.call_id);
        let got: Vec<&str> = lines
            .iter()
            .map(|l| {
                if l.starts_with("SIP/2.0") {
                    l.as_str()
                } else {
                    l.split(' ').next().unwrap()
                }
            })
            .collect();
        assert_eq!(got, expected[&call.outcome], "{:?}", call.outcome);
        assert!(call.answer_at.is_none());
    }
    assert_eq!(summary.rtp_packets, 0);

    let ok = SynthConfig {
        calls: 1,
        seconds: 1.0,
        ..Default::default()
    };
    let (summary, frames) = run(&ok);
    let lines = sip_lines(&frames, &summary.calls[0].call_id);
    let got: Vec<&str> = lines
        .iter()
        .map(|l| l.split(' ').take(2).last().unwrap())
        .collect();
    assert_eq!(
        got,
        [
            "sip:+15552000000@synth.example;user=phone",
            "100",
            "180",
            "200",
            "sip:+15552000000@10.2.0.1:5060;transport=udp",
            "sip:+15552000000@10.2.0.1:5060;transport=udp",
            "200"
        ]
    );
    assert!(lines[4].starts_with("ACK ") && lines[5].starts_with("BYE "));
}

#[test]
fn ipv6_vlan_checksums() {
    let cfg = SynthConfig {
        calls: 3,
        seconds: 1.0,
        ipv6: true,
        vlan: Some(301),
        ..Default::default()
    };
    let (summary, frames) = run(&cfg);
    assert!(frames.iter().all(|f| f.vlan == Some(301)));
    assert!(frames.iter().all(|f| f.src.is_ipv6()));
    assert!(summary.calls[0]
        .caller_sip
        .ip()
        .to_string()
        .starts_with("fd00:"));
    let invite = frames
        .iter()
        .find(|f| f.payload.starts_with(b"INVITE"))
        .unwrap();
    let text = String::from_utf8_lossy(&invite.payload);
    assert!(text.contains("c=IN IP6 fd00:0:0:1::1\r\n"));
    // decode() already verified every UDP checksum; make sure there was plenty to verify.
    assert!(frames.len() > 300);
    let (_, v4) = run(&SynthConfig {
        calls: 2,
        seconds: 1.0,
        ..Default::default()
    });
    assert!(v4.iter().all(|f| f.vlan.is_none() && f.src.is_ipv4()));
}

#[test]
fn tcp_transport_sequence_numbers() {
    let cfg = SynthConfig {
        calls: 3,
        concurrent: 3,
        seconds: 1.0,
        transport: SipTransport::Tcp,
        auth_challenge: true,
        ..Default::default()
    };
    let (summary, frames) = run(&cfg);
    let tcp: Vec<&Frame> = frames.iter().filter(|f| f.tcp.is_some()).collect();
    assert_eq!(
        tcp.len() as u64 + summary.rtp_packets,
        summary.packets,
        "all SIP over TCP"
    );
    for call in &summary.calls {
        let conn: Vec<&&Frame> = tcp
            .iter()
            .filter(|f| {
                (f.src == call.caller_sip && f.dst == call.callee_sip)
                    || (f.src == call.callee_sip && f.dst == call.caller_sip)
            })
            .collect();
        assert_eq!(conn[0].tcp.unwrap().flags, 0x02, "SYN first");
        assert_eq!(conn[1].tcp.unwrap().flags, 0x12, "SYN-ACK");
        assert_eq!(conn[2].tcp.unwrap().flags, 0x10, "ACK");
        let n = conn.len();
        assert_eq!(conn[n - 3].tcp.unwrap().flags, 0x11, "FIN-ACK from caller");
        assert_eq!(conn[n - 2].tcp.unwrap().flags, 0x11, "FIN-ACK from callee");
        assert_eq!(conn[n - 1].tcp.unwrap().flags, 0x10, "last ACK");
        // Per direction: every segment starts where the previous one ended.
        let mut next: HashMap<SocketAddr, u32> = HashMap::new();
        let mut streams: HashMap<SocketAddr, Vec<u8>> = HashMap::new();
        for f in &conn {
            let t = f.tcp.unwrap();
            if let Some(&expect) = next.get(&f.src) {
                assert_eq!(t.seq, expect, "seq continuity");
            }
            if t.flags & 0x10 != 0 {
                if let Some(&peer) = next.get(&f.dst) {
                    assert_eq!(t.ack, peer, "ack = peer's next seq");
                }
            }
            let used = f.payload.len() as u32 + u32::from(t.flags & 0x03 != 0);
            next.insert(f.src, t.seq.wrapping_add(used));
            streams
                .entry(f.src)
                .or_default()
                .extend_from_slice(&f.payload);
        }
        // The caller's byte stream is a sequence of complete SIP requests.
        let stream = String::from_utf8(streams.remove(&call.caller_sip).unwrap()).unwrap();
        let mut rest = stream.as_str();
        let mut methods = Vec::new();
        while !rest.is_empty() {
            let (head, tail) = rest.split_once("\r\n\r\n").expect("header end");
            let len: usize = head
                .split("\r\n")
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .unwrap()
                .parse()
                .unwrap();
            methods.push(head.split(' ').next().unwrap().to_string());
            rest = &tail[len..];
        }
        assert_eq!(methods, ["INVITE", "ACK", "INVITE", "ACK", "BYE"]);
        assert!(
            stream.contains("CSeq: 2 INVITE\r\n") && stream.contains("Proxy-Authorization: Digest")
        );
        assert!(stream.contains("Via: SIP/2.0/TCP"));
    }
}

#[test]
fn g711_tones_decode_to_planned_frequencies() {
    for codec in [Codec::Pcmu, Codec::Pcma] {
        let cfg = SynthConfig {
            calls: 3,
            seconds: 1.0,
            codecs: vec![codec],
            ..Default::default()
        };
        let (summary, frames) = run(&cfg);
        for call in &summary.calls {
            for (src, dst, hz) in [
                (call.caller_rtp, call.callee_rtp, call.caller_tone_hz),
                (call.callee_rtp, call.caller_rtp, call.callee_tone_hz),
            ] {
                let pcm: Vec<i16> = rtp_of(&frames, src, dst)
                    .iter()
                    .flat_map(|f| f.payload[12..].iter().copied())
                    .map(|b| {
                        if codec == Codec::Pcmu {
                            ulaw_to_linear(b)
                        } else {
                            alaw_to_linear(b)
                        }
                    })
                    .collect();
                assert_eq!(pcm.len(), 8000);
                assert_eq!(dominant(&pcm, 8000.0), hz, "{codec:?}");
                let peak = pcm.iter().map(|s| i32::from(*s).abs()).max().unwrap();
                assert!((7500..=8500).contains(&peak), "amplitude {peak}");
            }
        }
    }
}

#[test]
fn g722_tone_decodes() {
    let cfg = SynthConfig {
        calls: 1,
        seconds: 1.0,
        codecs: vec![Codec::G722],
        ..Default::default()
    };
    let (summary, frames) = run(&cfg);
    let call = &summary.calls[0];
    let stream = rtp_of(&frames, call.caller_rtp, call.callee_rtp);
    assert_eq!(stream[0].payload[1] & 0x7F, 9);
    assert_eq!(stream[0].payload.len(), 12 + 160);
    let ts = |f: &Frame| u32::from_be_bytes(f.payload[4..8].try_into().unwrap());
    assert_eq!(
        ts(stream[1]).wrapping_sub(ts(stream[0])),
        160,
        "8 kHz RTP clock"
    );
    let mut dec = vcontap_media::G722Decoder::new();
    let mut pcm = Vec::new();
    for f in &stream {
        dec.decode(&f.payload[12..], &mut pcm).unwrap();
    }
    assert_eq!(pcm.len(), 16000);
    // Skip the decoder's adaptation time.
    let f = dominant(&pcm[3200..], 16000.0);
    assert_eq!(f, call.caller_tone_hz);
}

#[test]
fn rfc4733_dtmf_events() {
    let cfg = SynthConfig {
        calls: 2,
        seconds: 3.0,
        dtmf: Some("19#".into()),
        ..Default::default()
    };
    let (summary, frames) = run(&cfg);
    for call in &summary.calls {
        assert_eq!(call.dtmf, "19#");
        let stream = rtp_of(&frames, call.caller_rtp, call.callee_rtp);
        assert_eq!(stream.len(), 150, "events replace voice slots");
        let events: Vec<&&Frame> = stream
            .iter()
            .filter(|f| f.payload[1] & 0x7F == 101)
            .collect();
        assert_eq!(events.len(), 3 * 8);
        let starts: Vec<(u8, i64)> = events
            .iter()
            .filter(|f| f.payload[1] & 0x80 != 0)
            .map(|f| (f.payload[12], f.ts_ns))
            .collect();
        assert_eq!(starts.iter().map(|s| s.0).collect::<Vec<_>>(), [1, 9, 11]);
        let answer = call.answer_at.unwrap().0;
        assert!(
            starts[0].1 - answer >= 1_000_000_000,
            "digits start after 1 s of talk"
        );
        let ends = events.iter().filter(|f| f.payload[13] & 0x80 != 0).count();
        assert_eq!(ends, 9);
        let callee = rtp_of(&frames, call.callee_rtp, call.caller_rtp);
        assert!(callee.iter().all(|f| f.payload[1] & 0x7F == 0));
        let sdp = frames
            .iter()
            .find(|f| f.payload.starts_with(b"INVITE"))
            .unwrap();
        let text = String::from_utf8_lossy(&sdp.payload);
        assert!(text.contains("a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n"));
    }
}

#[test]
fn sip_info_dtmf() {
    let cfg = SynthConfig {
        calls: 1,
        seconds: 2.0,
        dtmf: Some("5*".into()),
        sip_info_dtmf: true,
        ..Default::default()
    };
    let (summary, frames) = run(&cfg);
    let call = &summary.calls[0];
    let infos: Vec<String> = frames
        .iter()
        .filter(|f| f.payload.starts_with(b"INFO "))
        .map(|f| String::from_utf8_lossy(&f.payload).into_owned())
        .collect();
    assert_eq!(infos.len(), 2);
    assert!(
        infos[0].contains("Content-Type: application/dtmf-relay\r\n")
            && infos[0].ends_with("Signal=5\r\nDuration=100\r\n")
    );
    assert!(infos[1].contains("CSeq: 3 INFO") && infos[1].contains("Signal=*\r\n"));
    let lines = sip_lines(&frames, &call.call_id);
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.as_str() == "SIP/2.0 200 OK")
            .count(),
        4,
        "200 to INVITE, 2 INFOs, BYE"
    );
    assert!(
        rtp_of(&frames, call.caller_rtp, call.callee_rtp)
            .iter()
            .all(|f| f.payload[1] & 0x7F == 0),
        "no RFC 4733"
    );
}

#[test]
fn hold_and_resume() {
    let cfg = SynthConfig {
        calls: 1,
        seconds: 4.0,
        hold: true,
        ..Default::default()
    };
    let (summary, frames) = run(&cfg);
    let call = &summary.calls[0];
    let (hold, resume) = call.hold.unwrap();
    let reinvites: Vec<&Frame> = frames
        .iter()
        .filter(|f| f.payload.starts_with(b"INVITE") && f.ts_ns > call.invite_at.0)
        .collect();
    assert_eq!(reinvites.len(), 2);
    assert_eq!((reinvites[0].ts_ns, reinvites[1].ts_ns), (hold.0, resume.0));
    let t0 = String::from_utf8_lossy(&reinvites[0].payload);
    assert!(
        t0.contains("CSeq: 2 INVITE")
            && t0.contains("a=sendonly\r\n")
            && !t0.contains("P-Asserted-Identity")
    );
    assert!(String::from_utf8_lossy(&reinvites[1].payload).contains("a=sendrecv\r\n"));
    let answers: Vec<String> = frames
        .iter()
        .filter(|f| {
            f.payload.starts_with(b"SIP/2.0 200")
                && String::from_utf8_lossy(&f.payload).contains("INVITE\r\n")
        })
        .map(|f| String::from_utf8_lossy(&f.payload).into_owned())
        .collect();
    assert_eq!(answers.len(), 3);
    assert!(answers[1].contains("a=recvonly\r\n") && answers[2].contains("a=sendrecv\r\n"));
    let caller = rtp_of(&frames, call.caller_rtp, call.callee_rtp);
    let callee = rtp_of(&frames, call.callee_rtp, call.caller_rtp);
    assert_eq!(caller.len(), 200);
    assert_eq!(callee.len(), 150, "callee silent for 1 s");
    assert!(!callee
        .iter()
        .any(|f| f.ts_ns > hold.0 + 25_000_000 && f.ts_ns < resume.0));
}

#[test]
fn early_media_and_codec_round_robin() {
    let cfg = SynthConfig {
        calls: 3,
        seconds: 1.0,
        early_media: true,
        codecs: vec![Codec::Pcma, Codec::G722],
        ..Default::default()
    };
    let (summary, frames) = run(&cfg);
    let codecs: Vec<Codec> = summary.calls.iter().map(|c| c.codec).collect();
    assert_eq!(codecs, [Codec::Pcma, Codec::G722, Codec::Pcma]);
    for call in &summary.calls {
        let lines = sip_lines(&frames, &call.call_id);
        assert_eq!(lines[3], "SIP/2.0 183 Session Progress");
        assert_eq!(lines[4], "SIP/2.0 200 OK");
    }
    let early = frames
        .iter()
        .find(|f| f.payload.starts_with(b"SIP/2.0 183"))
        .unwrap();
    assert!(String::from_utf8_lossy(&early.payload).contains("m=audio 20000 RTP/AVP 8 101\r\n"));
}

#[test]
fn deterministic_bytes() {
    let cfg = SynthConfig {
        calls: 6,
        seconds: 1.0,
        failure_every: 3,
        hold: false,
        ..Default::default()
    };
    let (mut a, mut b) = (Vec::new(), Vec::new());
    generate(&cfg, &mut a).unwrap();
    generate(&cfg, &mut b).unwrap();
    assert_eq!(a, b);
    let mut c = Vec::new();
    generate(&SynthConfig { seed: 99, ..cfg }, &mut c).unwrap();
    assert_ne!(a, c);
}

#[test]
fn invalid_config_is_refused_before_writing() {
    let mut out = Vec::new();
    assert!(generate(
        &SynthConfig {
            calls: 0,
            ..Default::default()
        },
        &mut out
    )
    .is_err());
    assert!(generate(
        &SynthConfig {
            ptime_ms: 7,
            ..Default::default()
        },
        &mut out
    )
    .is_err());
    let far = vcontap_wire::Timestamp::from_parts(i64::from(u32::MAX) - 1, 0);
    assert!(generate(
        &SynthConfig {
            start: far,
            ..Default::default()
        },
        &mut out
    )
    .is_err());
    assert!(out.is_empty());
}

#[test]
fn busy_instant_has_about_concurrent_calls_in_capture() {
    let cfg = SynthConfig {
        calls: 120,
        concurrent: 30,
        seconds: 2.0,
        ..Default::default()
    };
    let (summary, frames) = run(&cfg);
    // Active = between the call's INVITE and its last SIP message, measured on the capture.
    let mut bounds: HashMap<&str, (i64, i64)> = HashMap::new();
    for f in frames.iter().filter(|f| is_sip(&f.payload)) {
        let text = std::str::from_utf8(&f.payload).unwrap();
        let id = summary
            .calls
            .iter()
            .find(|c| text.contains(&c.call_id))
            .unwrap();
        let e = bounds
            .entry(id.call_id.as_str())
            .or_insert((f.ts_ns, f.ts_ns));
        e.1 = f.ts_ns;
    }
    let mut edges: Vec<(i64, i32)> = bounds
        .values()
        .flat_map(|&(a, b)| [(a, 1), (b, -1)])
        .collect();
    edges.sort();
    let (mut cur, mut max) = (0, 0);
    for (_, d) in edges {
        cur += d;
        max = max.max(cur);
    }
    assert!((27..=33).contains(&max), "max active {max}");
}

#[cfg(feature = "opus")]
#[test]
fn opus_stream_decodes() {
    let cfg = SynthConfig {
        calls: 1,
        seconds: 1.0,
        codecs: vec![Codec::Opus],
        dtmf: Some("7".into()),
        ..Default::default()
    };
    let (summary, frames) = run(&cfg);
    let call = &summary.calls[0];
    let invite = frames
        .iter()
        .find(|f| f.payload.starts_with(b"INVITE"))
        .unwrap();
    let text = String::from_utf8_lossy(&invite.payload);
    assert!(
        text.contains("a=rtpmap:111 opus/48000/2\r\n")
            && text.contains("telephone-event/48000\r\n")
    );
    let stream = rtp_of(&frames, call.callee_rtp, call.caller_rtp);
    assert_eq!(stream.len(), 50);
    let ts = |f: &Frame| u32::from_be_bytes(f.payload[4..8].try_into().unwrap());
    assert_eq!(
        ts(stream[1]).wrapping_sub(ts(stream[0])),
        960,
        "48 kHz RTP clock"
    );
    let mut dec = vcontap_media::new_decoder(vcontap_media::CodecKind::Opus).unwrap();
    let mut pcm = Vec::new();
    for f in &stream {
        assert_eq!(f.payload[1] & 0x7F, 111);
        dec.decode(&f.payload[12..], &mut pcm).unwrap();
    }
    assert_eq!(pcm.len(), 48_000);
    assert_eq!(dominant(&pcm[9600..], 48_000.0), call.callee_tone_hz);
}
