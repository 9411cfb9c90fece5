//! Fuzz target: one input is several frames for one `Decoder` so fragment, TCP and SCTP
//! state carries across frames. Layout: byte 0 picks the link type; then repeated
//! records of [len: u16 BE][frame bytes], each decoded with an advancing timestamp.
#![no_main]

use vcontap_wire::{Decoder, DecoderConfig, Framing, LinkType, RawPacket, Timestamp};

const LINKS: [LinkType; 10] = [
    LinkType::ETHERNET,
    LinkType::NULL,
    LinkType::LOOP,
    LinkType::RAW,
    LinkType::RAW_12,
    LinkType::IPV4,
    LinkType::IPV6,
    LinkType::LINUX_SLL,
    LinkType::LINUX_SLL2,
    LinkType(14),
];

fn lines(b: &[u8]) -> Framing {
    match b.first() {
        Some(b'#') => Framing::NotOurs,
        Some(b'\r') => Framing::Skip(1),
        _ => match b.iter().position(|&c| c == b'\n') {
            Some(i) => Framing::Message(i + 1),
            None => Framing::Incomplete,
        },
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&sel, mut rest)) = data.split_first() else {
        return;
    };
    let link = LINKS[usize::from(sel) % LINKS.len()];
    // Small limits so eviction, overflow and gap skipping are reachable.
    let mut dec = Decoder::new(DecoderConfig {
        tcp_framer: Some(lines),
        max_frag_buffers: 4,
        max_tcp_flows: 4,
        max_tcp_buffer_bytes: 4096,
        max_tcp_out_of_order_segments: 4,
        ..DecoderConfig::default()
    });
    let mut ts = Timestamp::from_parts(1_700_000_000, 0);
    let mut frames = 0u64;
    let mut emitted = 0u64;
    while rest.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        let body = &rest[2..];
        let frame = &body[..len.min(body.len())];
        rest = &body[frame.len()..];
        let pkt = RawPacket {
            ts,
            link,
            data: frame,
            orig_len: frame.len() as u32,
        };
        dec.decode(&pkt, &mut |d| {
            // Every payload is a slice of this frame or of bounded reassembly state.
            assert!(d.payload.len() <= 256 * 1024);
            emitted += 1;
        });
        frames += 1;
        // Advance time by a pseudo-random amount (up to ~4 s) to reach the timeouts.
        ts = ts.add_millis(i64::from(sel) * 16 + (frames as i64 % 7) * 100);
        dec.handle_timeout(ts);
    }
    assert_eq!(dec.stats().frames, frames);
    assert_eq!(dec.stats().datagrams, emitted);
});
