//! Fuzz target: arbitrary bytes as a capture file through `PcapReader`, decoding every
//! packet with a line framer so TCP reassembly runs too.
#![no_main]

use vcontap_wire::{Decoder, DecoderConfig, Framing, PcapReader};

fn lines(b: &[u8]) -> Framing {
    match b.first() {
        Some(c) if c.is_ascii_alphabetic() => match b.iter().position(|&c| c == b'\n') {
            Some(i) => Framing::Message(i + 1),
            None => Framing::Incomplete,
        },
        Some(b'\r' | b'\n') => Framing::Skip(1),
        _ => Framing::NotOurs,
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(mut reader) = PcapReader::new(data) else {
        return;
    };
    let mut dec = Decoder::new(DecoderConfig {
        tcp_framer: Some(lines),
        ..DecoderConfig::default()
    });
    let mut emitted = 0u64;
    while let Ok(Some(pkt)) = reader.next_packet() {
        assert!(pkt.data.len() <= vcontap_wire::MAX_RECORD_BYTES);
        let ts = pkt.ts;
        dec.decode(&pkt, &mut |d| {
            assert!(d.payload.len() <= 256 * 1024);
            emitted += 1;
        });
        dec.handle_timeout(ts);
    }
    assert_eq!(dec.stats().datagrams, emitted);
});
