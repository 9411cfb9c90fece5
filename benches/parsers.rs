//! Criterion micro benches of the per-packet work: SIP and SDP parsing, RTP parsing with
//! RFC 3550 statistics, the wire decoder on an Ethernet/IPv4/UDP/RTP frame, G.711, G.722 and Opus
//! decoding and the stereo mixer. Run with `cargo bench --bench parsers`; the figures and what they
//! mean for the end-to-end budget are in docs/PERFORMANCE.md.

use std::hint::black_box;
use std::net::SocketAddr;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vcontap_media::{new_decoder, parse_rtp, CodecKind, StereoMixer, StreamStats};
use vcontap_synth::{mac_for, udp_frame, write_rtp_header, Link, RtpHeader};
use vcontap_wire::{Decoder, DecoderConfig, LinkType, RawPacket, Timestamp};

/// libopus-made Opus packets, shared with the media crate's tests.
#[path = "../crates/media/tests/opus_fixture/mod.rs"]
mod opus_fixture;

/// The INVITE the synthesizer's calls start with, in the shape real UAs send.
const INVITE: &str = "INVITE sip:+15551230002@example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.1.1.1:5060;branch=z9hG4bK-524287-1---a1b2c3d4e5f6;rport\r\n\
Max-Forwards: 70\r\n\
Contact: <sip:+15551230001@10.1.1.1:5060;transport=udp>\r\n\
To: <sip:+15551230002@example.com>\r\n\
From: \"Alice Example\" <sip:+15551230001@example.com>;tag=9fxced76sl\r\n\
Call-ID: 3848276298220188511@10.1.1.1\r\n\
CSeq: 1 INVITE\r\n\
Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, NOTIFY, MESSAGE, SUBSCRIBE, INFO\r\n\
Content-Type: application/sdp\r\n\
Supported: replaces, timer\r\n\
User-Agent: vcontap-bench/1.0\r\n";

/// An audio offer with G.711 both laws and telephone-event.
const SDP: &str = "v=0\r\n\
o=alice 2890844526 2890844526 IN IP4 10.1.1.1\r\n\
s=-\r\n\
c=IN IP4 10.1.1.1\r\n\
t=0 0\r\n\
m=audio 20000 RTP/AVP 0 8 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=ptime:20\r\n\
a=sendrecv\r\n";

fn rtp_packet(seq: u16, ts: u32) -> Vec<u8> {
    let mut p = Vec::with_capacity(172);
    write_rtp_header(
        &mut p,
        &RtpHeader {
            marker: false,
            payload_type: 0,
            seq,
            timestamp: ts,
            ssrc: 0x1234_5678,
        },
    );
    p.extend((0..160u32).map(|i| (i * 37 % 256) as u8));
    p
}

fn sip(c: &mut Criterion) {
    let msg = format!("{INVITE}Content-Length: {}\r\n\r\n{SDP}", SDP.len());
    let mut g = c.benchmark_group("sip");
    g.throughput(Throughput::Bytes(msg.len() as u64));
    g.bench_function("invite_parse_call_id_cseq_from_to", |b| {
        b.iter(|| {
            let m = vcontap_sip::Message::parse(black_box(msg.as_bytes())).expect("valid INVITE");
            black_box((m.call_id(), m.cseq(), m.from(), m.to()));
        })
    });
    g.throughput(Throughput::Bytes(SDP.len() as u64));
    g.bench_function("sdp_parse", |b| {
        b.iter(|| {
            black_box(vcontap_sip::sdp::parse(black_box(SDP.as_bytes())).expect("valid SDP"))
                .media
                .len()
        })
    });
    g.finish();
}

fn rtp(c: &mut Criterion) {
    let packets: Vec<Vec<u8>> = (0..1024u16)
        .map(|i| rtp_packet(i, u32::from(i) * 160))
        .collect();
    let mut g = c.benchmark_group("rtp");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse_rtp_and_stats_update", |b| {
        let mut stats = StreamStats::new(8000);
        let mut i = 0usize;
        let mut arrival = 1_767_225_600_000_000_000i64;
        b.iter(|| {
            let p = parse_rtp(black_box(&packets[i % packets.len()])).expect("valid RTP");
            arrival += 20_000_000;
            // Sequence keeps rising across laps of the packet ring (wrapping u16).
            let lap = (i / packets.len()) as u16;
            let seq = p.seq.wrapping_add(lap.wrapping_mul(1024));
            let ts = p.ts.wrapping_add(u32::from(lap) * 1024 * 160);
            black_box(stats.update(seq, ts, arrival, p.payload.len()));
            i += 1;
        })
    });
    g.finish();
}

fn wire(c: &mut Criterion) {
    let src: SocketAddr = "10.1.1.1:20000".parse().expect("addr");
    let dst: SocketAddr = "10.2.1.1:30000".parse().expect("addr");
    let link = Link {
        src_mac: mac_for(src.ip()),
        dst_mac: mac_for(dst.ip()),
        vlan: None,
        pcp: 5,
    };
    let mut frame = Vec::new();
    udp_frame(&mut frame, &link, src, dst, &rtp_packet(1, 160), 1).expect("frame");
    let mut dec = Decoder::new(DecoderConfig {
        tcp_framer: Some(vcontap_sip::frame),
        ..DecoderConfig::default()
    });
    let mut g = c.benchmark_group("wire");
    g.throughput(Throughput::Elements(1));
    g.bench_function("decode_eth_ipv4_udp_rtp", |b| {
        let pkt = RawPacket {
            ts: Timestamp(1_767_225_600_000_000_000),
            link: LinkType::ETHERNET,
            data: &frame,
            orig_len: frame.len() as u32,
        };
        b.iter(|| {
            let mut n = 0usize;
            dec.decode(black_box(&pkt), &mut |d| n += d.payload.len());
            black_box(n)
        })
    });
    g.finish();
}

fn audio(c: &mut Criterion) {
    let payload = rtp_packet(1, 160)[12..].to_vec();
    let mut g = c.benchmark_group("audio");
    g.throughput(Throughput::Elements(160));
    for (name, kind) in [
        ("g711_pcmu_decode_160", CodecKind::Pcmu),
        ("g711_pcma_decode_160", CodecKind::Pcma),
        // 160 G.722 bytes are 320 samples at 16 kHz (20 ms).
        ("g722_decode_160", CodecKind::G722),
    ] {
        let mut d = new_decoder(kind).expect("built-in decoder");
        let mut out = Vec::with_capacity(160);
        g.bench_function(name, |b| {
            b.iter(|| {
                out.clear();
                d.decode(black_box(&payload), &mut out)
                    .expect("built-in decoders never fail");
                black_box(out.len())
            })
        });
    }
    let pcm: Vec<i16> = (0..160).map(|i| ((i * 97) % 2000 - 1000) as i16).collect();
    g.bench_function("mixer_push_160_and_drain", |b| {
        let start = 1_767_225_600_000_000_000i64;
        let mut mixer = StereoMixer::new(8000, start, 500);
        let mut out = Vec::with_capacity(16_000);
        let mut k = 0u32;
        b.iter(|| {
            // One 20 ms packet per direction, then release what left the jitter window,
            // as the engine does on every packet.
            let arrival = start + i64::from(k) * 20_000_000;
            let ts = k.wrapping_mul(160);
            mixer.push(0, 1, arrival, ts, 8000, black_box(&pcm), 8000);
            mixer.push(1, 2, arrival, ts, 8000, black_box(&pcm), 8000);
            out.clear();
            black_box(mixer.drain(arrival, &mut out));
            k = k.wrapping_add(1);
        })
    });
    g.finish();

    // Opus (the pure-Rust decoder every build uses) on libopus packets of a tone: 20 ms
    // hybrid frames at 24 kbit/s and 10 ms CELT frames at 64 kbit/s, one decoder per
    // stream as the engine keeps it. Elements are 48 kHz output samples.
    let mut g = c.benchmark_group("opus");
    for (name, packets, samples) in [
        (
            "opus_decode_hybrid_24k_20ms",
            opus_fixture::VOIP_24K_20MS,
            960,
        ),
        (
            "opus_decode_celt_64k_10ms",
            opus_fixture::AUDIO_64K_10MS,
            480,
        ),
    ] {
        g.throughput(Throughput::Elements(samples));
        let mut d = new_decoder(CodecKind::Opus).expect("Opus decodes in every build");
        let mut out = Vec::with_capacity(960);
        let mut i = 0;
        g.bench_function(name, |b| {
            b.iter(|| {
                out.clear();
                let p = packets[i % packets.len()];
                i += 1;
                black_box(d.decode(black_box(p), &mut out).expect("libopus packet"))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, sip, rtp, wire, audio);
criterion_main!(benches);
