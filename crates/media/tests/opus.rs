//! Opus in the default build: the pure-Rust decoder (`new_decoder(CodecKind::Opus)`)
//! decodes libopus packets with no C library, and malformed packets are errors, never
//! panics or oversized output.
//!
//! The packets in `opus_fixture/mod.rs` were made once by libopus (how to regenerate them
//! is written there); the cross-check against libopus itself is `opus_cross_check.rs`
//! (`--features opus`).

#[path = "opus_fixture/mod.rs"]
mod opus_fixture;

use vcontap_media::{decoder_sample_rate, new_decoder, AudioDecoder, CodecKind, OPUS_SAMPLE_RATE};

/// 120 ms at 48 kHz: the most one Opus packet may carry (RFC 6716 §3.2.5).
const MAX_PACKET_SAMPLES: usize = 5760;
/// 2.5 ms at 48 kHz: every Opus frame is a multiple of it.
const MIN_FRAME_SAMPLES: usize = 120;

fn opus() -> Box<dyn AudioDecoder> {
    new_decoder(CodecKind::Opus).expect("Opus decodes in every build")
}

fn rms(s: &[i16]) -> f64 {
    (s.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / s.len().max(1) as f64).sqrt()
}

/// Frequency from rising zero crossings.
fn zero_crossing_hz(s: &[i16]) -> f64 {
    let rising = s.windows(2).filter(|w| w[0] < 0 && w[1] >= 0).count();
    rising as f64 * f64::from(OPUS_SAMPLE_RATE) / s.len() as f64
}

fn decode_stream(dec: &mut dyn AudioDecoder, packets: &[&[u8]]) -> Vec<i16> {
    let mut out = Vec::new();
    for p in packets {
        let before = out.len();
        let n = dec.decode(p, &mut out).expect("libopus packet decodes");
        assert_eq!(
            out.len() - before,
            n,
            "returned count matches what was appended"
        );
    }
    out
}

/// Decodes one packet that may be hostile: either an error that appends nothing, or at
/// most 120 ms of whole 2.5 ms frames. Returns whether it decoded.
fn decode_hostile(dec: &mut dyn AudioDecoder, packet: &[u8]) -> bool {
    let mut out = Vec::new();
    match dec.decode(packet, &mut out) {
        Ok(n) => {
            assert_eq!(n, out.len());
            assert!(
                n <= MAX_PACKET_SAMPLES,
                "{n} samples from {} bytes",
                packet.len()
            );
            assert_eq!(n % MIN_FRAME_SAMPLES, 0, "{n} samples is not whole frames");
            true
        }
        Err(_) => {
            assert!(out.is_empty(), "an error appends nothing");
            false
        }
    }
}

#[test]
fn libopus_packets_decode_to_the_tone_without_libopus() {
    assert_eq!(decoder_sample_rate(CodecKind::Opus), Some(48_000));
    for (name, packets) in opus_fixture::ALL {
        let mut dec = opus();
        assert_eq!(dec.sample_rate(), 48_000);
        let pcm = decode_stream(dec.as_mut(), packets);
        // 200 ms of 48 kHz audio, whatever the frame size.
        assert_eq!(pcm.len(), 9600, "{name}");
        // Past the codec's start-up (lookahead and energy ramp), the 1 kHz tone at peak
        // 8000 comes back: right pitch, about the right level.
        let steady = &pcm[4800..];
        let hz = zero_crossing_hz(steady);
        assert!((hz - 1000.0).abs() < 25.0, "{name}: {hz} Hz");
        let level = rms(steady) / (8000.0 / 2f64.sqrt());
        assert!((0.7..1.3).contains(&level), "{name}: level {level}");
    }
}

#[test]
fn hand_made_packets() {
    // A TOC byte alone (CELT fullband 20 ms, one frame of zero bytes): the frame is
    // absent, which a decoder treats as a lost frame; from a fresh decoder that is 20 ms
    // of silence.
    let mut dec = opus();
    let mut out = Vec::new();
    assert_eq!(dec.decode(&[0xf8], &mut out).unwrap(), 960);
    assert!(out.iter().all(|&s| s == 0));

    // The packet libopus sends for digital silence in CELT mode (silence flag set):
    // 20 ms of zeros, for mono (0xf8) and stereo (0xfc) TOCs alike.
    for toc in [0xf8, 0xfc] {
        let mut out = Vec::new();
        assert_eq!(opus().decode(&[toc, 0xff, 0xfe], &mut out).unwrap(), 960);
        assert!(out.iter().all(|&s| s == 0), "toc {toc:#x}");
    }

    // Code 1 (two equal frames) of the same silence: 40 ms.
    let mut out = Vec::new();
    assert_eq!(
        opus()
            .decode(&[0xf9, 0xff, 0xfe, 0xff, 0xfe], &mut out)
            .unwrap(),
        1920
    );

    // A tone then the silence packet: the tone stops (the CELT overlap tail decays
    // within the packet).
    let mut dec = opus();
    let tone = decode_stream(dec.as_mut(), opus_fixture::AUDIO_64K_10MS);
    assert!(rms(&tone[4800..]) > 4000.0);
    let mut out = Vec::new();
    dec.decode(&[0xf8, 0xff, 0xfe], &mut out).unwrap();
    assert!(rms(&out[480..]) < 50.0, "rms {}", rms(&out[480..]));
}

#[test]
fn malformed_packets_are_errors_not_panics() {
    let mut dec = opus();
    let reject = |dec: &mut Box<dyn AudioDecoder>, p: &[u8], why: &str| {
        assert!(!decode_hostile(dec.as_mut(), p), "accepted: {why}");
    };
    // Code 3 with no frame-count byte.
    reject(&mut dec, &[0xfb], "code 3 without a count");
    // Code 3, 63 frames of 20 ms: 1.26 s, over the 120 ms a packet may carry.
    reject(&mut dec, &[0xfb, 0x3f], "63 × 20 ms");
    reject(&mut dec, &[0x03, 0xff], "63 frames, VBR, padding, no data");
    // Code 3 with zero frames.
    reject(&mut dec, &[0xfb, 0x00, 0xff, 0xfe], "zero frames");
    // Code 1 needs an even payload for its two equal frames.
    reject(&mut dec, &[0xf9, 0xff, 0xfe, 0x00], "code 1, odd payload");
    // Code 2: first frame's length runs past the end.
    reject(
        &mut dec,
        &[0xfa, 0xfb, 0x04, 0x00],
        "code 2, length past the end",
    );
    // Code 3 padding that claims more bytes than there are.
    reject(
        &mut dec,
        &[0xfb, 0x41, 0xff, 0xff, 0x10],
        "padding past the end",
    );
    // A frame over 1275 bytes (code 1: two frames of 1276).
    let mut big = vec![0xf9];
    big.extend(std::iter::repeat_n(0x55, 2 * 1276));
    reject(&mut dec, &big, "frames over 1275 bytes");

    // Every TOC byte, alone and with short or long tails, including the maximal frame
    // counts and padding flags of code 3.
    let tails: [&[u8]; 6] = [
        &[],
        &[0xff],
        &[0xff, 0xff],
        &[0xbf, 0xff, 0xff, 0xff],
        &[0x7f, 0x00, 0x01, 0x02, 0x03],
        &[0xc8; 400],
    ];
    for toc in 0..=255u8 {
        for tail in tails {
            let mut p = vec![toc];
            p.extend_from_slice(tail);
            decode_hostile(dec.as_mut(), &p);
        }
    }

    // Every truncation of every real packet, and the packets with bytes flipped.
    for (_, packets) in opus_fixture::ALL {
        for p in packets.iter() {
            for cut in 1..p.len() {
                decode_hostile(dec.as_mut(), &p[..cut]);
            }
            let mut flipped = p.to_vec();
            for i in 1..flipped.len() {
                flipped[i] ^= 0xa5;
                decode_hostile(dec.as_mut(), &flipped);
            }
        }
    }

    // A datagram-sized and an oversized packet of garbage.
    for len in [1500, 65_535] {
        let p: Vec<u8> = (0..len).map(|i| (i * 131 % 251) as u8).collect();
        decode_hostile(dec.as_mut(), &p);
    }

    // Deterministic random garbage.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut decoded = 0;
    for _ in 0..2000 {
        let len = (next() % 400) as usize;
        let p: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        decoded += usize::from(decode_hostile(dec.as_mut(), &p));
    }
    // Random bytes are often valid Opus (the range coder accepts anything): the point is
    // that nothing panicked and every output was bounded.
    assert!(decoded > 0);

    // The same decoder still decodes a real stream after all that.
    let pcm = decode_stream(dec.as_mut(), opus_fixture::AUDIO_64K_10MS);
    let hz = zero_crossing_hz(&pcm[4800..]);
    assert!((hz - 1000.0).abs() < 25.0, "{hz} Hz after garbage");
}
