//! Fuzz target: arbitrary packet sequences through the whole sans-IO pipeline — wire
//! decoder, shard router and two engine shards — exactly as `vcontap_pipeline::Tap` wires
//! them, but single-threaded so each input is cheap and deterministic.
//!
//! Input: records of `[kind][a][b][dt][len: u16 BE][bytes]`. `kind & 3 == 0` hands `bytes`
//! to the decoder as a raw Ethernet frame; otherwise a raw-IP IPv4/UDP frame is built from
//! address/port indices `a`/`b` (a small set, so SIP, SDP media ports and RTP meet) around
//! `bytes`. `dt` advances capture time (0–2.5 s); the timer clock follows it and engine
//! timeouts run when due, like the Tap does.
#![no_main]

use std::net::Ipv4Addr;

use vcontap_engine::{Engine, EngineConfig, Output, RecordMode, Router};
use vcontap_wire::{Decoder, DecoderConfig, LinkType, RawPacket, Timestamp};

const IPS: [Ipv4Addr; 4] = [
    Ipv4Addr::new(10, 0, 0, 1),
    Ipv4Addr::new(10, 0, 0, 2),
    Ipv4Addr::new(192, 168, 1, 1),
    Ipv4Addr::new(203, 0, 113, 9),
];
const PORTS: [u16; 8] = [5060, 5061, 4000, 4001, 6000, 6001, 49170, 53];

fn frame(a: u8, b: u8, payload: &[u8]) -> Vec<u8> {
    let (sip, sport) = (IPS[usize::from(a & 3)], PORTS[usize::from(a >> 2) & 7]);
    let (dip, dport) = (IPS[usize::from(b & 3)], PORTS[usize::from(b >> 2) & 7]);
    let total = (28 + payload.len()).min(65_535);
    let mut f = vec![0x45, 0, (total >> 8) as u8, total as u8, 0, 0, 0x40, 0, 64, 17, 0, 0];
    f.extend_from_slice(&sip.octets());
    f.extend_from_slice(&dip.octets());
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&((total - 20) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    f
}

fn drain(e: &mut Engine) {
    while let Some(o) = e.poll_output() {
        if let Output::SegmentClosed { segment } = o {
            e.handle_segment_failed(segment);
        }
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut dec = Decoder::new(DecoderConfig {
        tcp_framer: Some(vcontap_sip::frame),
        max_frag_buffers: 4,
        max_tcp_flows: 4,
        ..DecoderConfig::default()
    });
    let mut router = Router::new(2);
    let cfg = |shard| EngineConfig {
        record: RecordMode::Stereo,
        shard,
        max_calls: 8,
        max_streams_per_call: 4,
        max_media_routes: 32,
        max_orphan_flows: 8,
        max_trace_messages: 16,
        ..EngineConfig::default()
    };
    let mut engines = [Engine::new(cfg(0)), Engine::new(cfg(1))];
    let mut ts = Timestamp::from_parts(1_700_000_000, 0);
    let mut rest = data;
    while rest.len() >= 6 {
        let (kind, a, b, dt) = (rest[0], rest[1], rest[2], rest[3]);
        let len = usize::from(u16::from_be_bytes([rest[4], rest[5]]));
        let body = &rest[6..];
        let bytes = &body[..len.min(body.len())];
        rest = &body[bytes.len()..];
        ts = ts.add_millis(i64::from(dt) * 10);
        let (link, f) = if kind & 3 == 0 {
            (LinkType::ETHERNET, bytes.to_vec())
        } else {
            (LinkType::RAW, frame(a, b, bytes))
        };
        for e in engines.iter_mut() {
            if ts >= e.poll_timeout() {
                e.handle_timeout(ts);
                drain(e);
            }
        }
        dec.handle_timeout(ts);
        let pkt = RawPacket {
            ts,
            link,
            data: &f,
            orig_len: f.len() as u32,
        };
        dec.decode(&pkt, &mut |d| {
            let i = router.route(&d);
            assert!(i < 2, "router picked a shard that does not exist");
            engines[i].handle_datagram(&d);
            drain(&mut engines[i]);
        });
    }
    for e in engines.iter_mut() {
        e.finish_all(ts.add_millis(1));
        drain(e);
        e.expire_segments();
        drain(e);
        assert_eq!(e.open_calls(), 0, "every call ends at finish_all");
        assert_eq!(e.stats().calls, e.stats().calls_finished);
    }
});
