//! Cross-check of the pure-Rust Opus decoder (`OpusDecoder`, opus-pure) against libopus
//! (`LibopusDecoder`) on the same libopus-encoded streams. Needs `--features opus`.
//!
//! The RFC 6716/8251 test vectors cannot be fetched on the build machines, so libopus is
//! the reference: a few seconds of tones, a speech-like signal and noise are encoded with
//! libopus (VoIP and audio applications, 8–64 kbit/s, 2.5–60 ms frames, mono and stereo),
//! decoded by both, and the SNR of the pure-Rust output against libopus's is printed
//! (`cargo test -p vcontap-media --features opus --test opus_cross_check -- --nocapture`).
//!
//! Floor: 60 dB. Measured: ≥ 94 dB on every mono stream (bit-exact on most SILK streams);
//! Opus decoders are not required to be bit-exact (RFC 6716 §6: conformance is a
//! perceptual-quality comparison, and float decoders round differently), so 0 error cannot
//! be asked for. Decoders with real bugs land far lower — opus-rs and rusty-opus give
//! 28–45 dB on the speech-like streams here — so 60 dB tells a faithful decoder from a
//! plausible-sounding wrong one, with 30 dB of margin for libopus version and CPU
//! (SIMD) differences.
//!
//! Stereo streams are checked against libopus's *stereo* output averaged to mono, which is
//! what the pure-Rust mono decoder produces (measured ≥ 92 dB). libopus's own mono decoder
//! turns CELT phase inversion off and so mixes differently; that SNR is printed, not
//! asserted (see the `codec/opus.rs` header).
#![cfg(feature = "opus")]

use vcontap_media::{AudioDecoder, LibopusDecoder, OpusDecoder, OpusEncoder};

const RATE: f64 = 48_000.0;
/// Floor for the pure-Rust decoder against libopus (see the module doc for why).
const MIN_SNR_DB: f64 = 60.0;

/// `secs` seconds of `kind` at 48 kHz, interleaved when `stereo` (the channels differ, so
/// a stereo encoder has something to code).
fn signal(kind: &str, secs: f64, stereo: bool) -> Vec<i16> {
    let n = (RATE * secs) as usize;
    let ch = if stereo { 2 } else { 1 };
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut noise = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % 2001) as f64 / 1000.0 - 1.0
    };
    let tau = 2.0 * std::f64::consts::PI;
    let mut out = Vec::with_capacity(n * ch);
    for i in 0..n {
        let t = i as f64 / RATE;
        for c in 0..ch {
            let c = c as f64;
            let v = match kind {
                "tone" => 8000.0 * (tau * (440.0 + 300.0 * c) * t).sin(),
                "dtmf" => {
                    4000.0 * (tau * 697.0 * t).sin()
                        + 4000.0 * (tau * (1209.0 + 127.0 * c) * t).sin()
                }
                // Voiced speech stand-in: a gliding 100–150 Hz pitch, harmonics shaped by
                // two formants, a 3 Hz syllable envelope and a little breath noise.
                "speech" => {
                    let f0 = 120.0 + 30.0 * (tau * 0.7 * t).sin() + 20.0 * c;
                    let env = (0.5 + 0.5 * (tau * 3.0 * t).sin()).powi(2);
                    let mut v = 0.0;
                    for h in 1..20 {
                        let f = f0 * f64::from(h);
                        let formants = (-((f - 700.0) / 300.0).powi(2)).exp()
                            + 0.6 * (-((f - 1800.0) / 400.0).powi(2)).exp()
                            + 0.05;
                        v += formants * (tau * f * t).sin();
                    }
                    env * 6000.0 * v + 300.0 * noise()
                }
                _ => 3000.0 * noise(),
            };
            out.push(v.clamp(-32767.0, 32767.0) as i16);
        }
    }
    out
}

/// SNR in dB of `test` against `reference` (equal lengths); 999 when identical.
fn snr_db(reference: &[i16], test: &[i16]) -> f64 {
    assert_eq!(reference.len(), test.len(), "decoded lengths differ");
    let (mut sig, mut err) = (0.0f64, 0.0f64);
    for (&r, &t) in reference.iter().zip(test) {
        let r = f64::from(r);
        sig += r * r;
        err += (r - f64::from(t)).powi(2);
    }
    if err == 0.0 {
        999.0
    } else {
        10.0 * (sig / err).log10()
    }
}

fn average_to_mono(stereo: &[i16]) -> Vec<i16> {
    stereo
        .chunks_exact(2)
        .map(|lr| ((i32::from(lr[0]) + i32::from(lr[1])) >> 1) as i16)
        .collect()
}

fn decode_all(dec: &mut dyn AudioDecoder, packets: &[Vec<u8>]) -> Vec<i16> {
    let mut out = Vec::new();
    for p in packets {
        dec.decode(p, &mut out).expect("libopus packet decodes");
    }
    out
}

#[test]
fn pure_rust_decoder_matches_libopus() {
    let mut worst = f64::INFINITY;
    let mut failures = Vec::new();
    println!("stream                              pure vs libopus  (stereo: vs libopus mono)");
    for music in [false, true] {
        for stereo in [false, true] {
            for bitrate in [8_000, 16_000, 32_000, 64_000] {
                for frame_ms in [2.5, 10.0, 20.0, 60.0] {
                    for kind in ["tone", "dtmf", "speech", "noise"] {
                        let ch = if stereo { 2 } else { 1 };
                        let pcm = signal(kind, 1.5, stereo);
                        let mut enc = OpusEncoder::with(stereo, music).unwrap();
                        enc.set_bitrate(bitrate).unwrap();
                        let frame = (RATE * frame_ms / 1000.0) as usize;
                        let packets: Vec<Vec<u8>> = pcm
                            .chunks_exact(frame * ch)
                            .map(|f| {
                                let mut p = Vec::new();
                                enc.encode(f, &mut p).unwrap();
                                p
                            })
                            .collect();
                        let pure = decode_all(&mut OpusDecoder::new().unwrap(), &packets);
                        let lib_mono = decode_all(&mut LibopusDecoder::new().unwrap(), &packets);
                        assert_eq!(pure.len(), pcm.len() / ch);
                        let name = format!(
                            "{} {} {:>2}k {:>4}ms {kind:<6}",
                            if music { "audio" } else { "voip " },
                            if stereo { "stereo" } else { "mono  " },
                            bitrate / 1000,
                            frame_ms
                        );
                        let (snr, extra) = if stereo {
                            let lib_avg = average_to_mono(&decode_all(
                                &mut LibopusDecoder::new_stereo().unwrap(),
                                &packets,
                            ));
                            let vs_mono = snr_db(&lib_mono, &pure);
                            (snr_db(&lib_avg, &pure), format!("  ({vs_mono:5.1} dB)"))
                        } else {
                            (snr_db(&lib_mono, &pure), String::new())
                        };
                        println!("{name} {snr:6.1} dB{extra}");
                        worst = worst.min(snr);
                        if snr < MIN_SNR_DB {
                            failures.push(format!("{name}: {snr:.1} dB"));
                        }
                    }
                }
            }
        }
    }
    println!(
        "worst SNR of the pure-Rust decoder against libopus: {worst:.1} dB (floor {MIN_SNR_DB} dB)"
    );
    assert!(failures.is_empty(), "below {MIN_SNR_DB} dB: {failures:#?}");
}

/// The packets checked into `tests/opus.rs` are what libopus makes: libopus decodes them to
/// the same audio as the pure-Rust decoder.
#[test]
fn checked_in_packets_decode_the_same_with_libopus() {
    for (name, packets) in opus_fixture::ALL {
        let packets: Vec<Vec<u8>> = packets.iter().map(|p| p.to_vec()).collect();
        let pure = decode_all(&mut OpusDecoder::new().unwrap(), &packets);
        let lib = decode_all(&mut LibopusDecoder::new().unwrap(), &packets);
        let snr = snr_db(&lib, &pure);
        println!("fixture {name}: {snr:.1} dB");
        assert!(snr >= MIN_SNR_DB, "{name}: {snr:.1} dB");
    }
}

/// The hand-made packets of `tests/opus.rs` (TOC-only, CELT silence, code 1) decode the
/// same with both decoders, and libopus rejects the malformed ones there too.
#[test]
fn hand_made_packets_agree_with_libopus() {
    let stream: Vec<Vec<u8>> = vec![
        vec![0xf8],
        vec![0xf8, 0xff, 0xfe],
        vec![0xf9, 0xff, 0xfe, 0xff, 0xfe],
        vec![0xfc, 0xff, 0xfe],
    ];
    let pure = decode_all(&mut OpusDecoder::new().unwrap(), &stream);
    let lib = decode_all(&mut LibopusDecoder::new().unwrap(), &stream);
    assert_eq!(pure, lib);
    for bad in [
        &[0xfb][..],
        &[0xfb, 0x3f],
        &[0xf9, 0xff, 0xfe, 0x00],
        &[0xfa, 0xfb, 0x04, 0x00],
    ] {
        assert!(LibopusDecoder::new()
            .unwrap()
            .decode(bad, &mut Vec::new())
            .is_err());
        assert!(OpusDecoder::new()
            .unwrap()
            .decode(bad, &mut Vec::new())
            .is_err());
    }
}

/// Regenerates the fixture of `tests/opus_fixture/mod.rs`:
/// `cargo test -p vcontap-media --features opus --test opus_cross_check -- --ignored
/// --nocapture print_fixture`, then paste the output over that file's arrays.
#[test]
#[ignore = "tooling: prints the checked-in Opus fixture"]
fn print_fixture() {
    // 1 kHz, 8000 peak. VoIP 24 kbit/s 20 ms frames (SILK/hybrid) and audio 64 kbit/s
    // 10 ms frames (CELT).
    let tone: Vec<i16> = (0..48_000 / 5)
        .map(|i| (8000.0 * (2.0 * std::f64::consts::PI * 1000.0 * i as f64 / RATE).sin()) as i16)
        .collect();
    for (name, music, bitrate, frame) in [
        ("VOIP_24K_20MS", false, 24_000, 960),
        ("AUDIO_64K_10MS", true, 64_000, 480),
    ] {
        let mut enc = OpusEncoder::with(false, music).unwrap();
        enc.set_bitrate(bitrate).unwrap();
        println!("pub const {name}: &[&[u8]] = &[");
        for f in tone.chunks_exact(frame) {
            let mut p = Vec::new();
            enc.encode(f, &mut p).unwrap();
            let bytes: Vec<String> = p.iter().map(|b| format!("0x{b:02x}")).collect();
            println!("    &[{}],", bytes.join(", "));
        }
        println!("];");
    }
}

#[path = "opus_fixture/mod.rs"]
mod opus_fixture;
