//! Opus: the pure-Rust decoder every build uses, and libopus behind the `opus` feature.
//!
//! Owns: [`OpusDecoder`], a 48 kHz mono decoder for RTP Opus payloads (RFC 7587: the RTP
//! clock is always 48 kHz) built on the pure-Rust `opus-pure` crate, so the default build
//! decodes Opus without a C toolchain; and, with the `opus` feature, [`LibopusDecoder`]
//! (the reference decoder) and [`OpusEncoder`] (48 kHz mono VoIP, for the synthesizer).
//!
//! Why `opus-pure`: five pure-Rust decoders were run against libopus 1.3.1 on the same
//! libopus-encoded streams (SILK, hybrid and CELT; 8–128 kbit/s; 2.5–60 ms frames; mono and
//! stereo; tones, speech-like and noise). `opus-pure` 0.2 agreed on every mono stream at
//! ≥ 94 dB SNR (bit-exact on most SILK ones) and decodes at about libopus speed;
//! `opus-rs` 0.1.40 and `rusty-opus` 1.0 drop to 28–45 dB on speech-like SILK/hybrid
//! streams, `mousiki` 0.2 disagrees almost everywhere and panicked on garbage in a debug
//! build, and `opus-decoder` 0.1.1 runs CELT two orders of magnitude slower than libopus (a
//! naive O(n²) DFT) and mis-mixes stereo streams to mono. `tests/opus_cross_check.rs`
//! keeps that comparison running under `--features opus` and prints the figures. `opus-pure` has no dependencies; its `unsafe` is confined
//! to SIMD kernels behind runtime CPU detection, and it returned errors (never panicked)
//! on every garbage, truncated and oversized packet tried (`tests/opus.rs`).
//!
//! Stereo streams are down-mixed to mono, which is what a per-party channel needs. The
//! pure-Rust decoder decodes them in stereo and averages left and right: that agrees with
//! libopus's stereo output averaged (≥ 92 dB), while `opus-pure`'s own stereo-to-mono path
//! drifts to 25–40 dB on speech. libopus's mono decoder down-mixes differently again (it
//! switches off CELT intensity-stereo phase inversion, so phase-inverted bands do not
//! cancel); the cross-check prints that difference. VoIP Opus is nearly always mono.
//!
//! The engine uses [`OpusDecoder`] in both builds, so recordings and their hashes do not
//! depend on the `opus` feature.

use super::{AudioDecoder, CodecError};

/// Sample rate Opus is decoded at.
pub const OPUS_SAMPLE_RATE: u32 = 48_000;

/// Largest Opus packet duration (120 ms, RFC 6716 §3.2.5) at 48 kHz: the decode buffer
/// size. A packet claiming more is rejected by the decoder, never written past.
const MAX_FRAME_SAMPLES: usize = 5760;

/// Pure-Rust Opus decoder (`opus-pure`), 48 kHz mono output. Available in every build.
/// Holds ~200 KiB of heap state (~280 KiB once stereo; measured with a counting allocator
/// after 1 s of decoding), plus 23 KiB of output buffer.
///
/// Starts as a mono decoder; the first stereo packet (TOC bit `s`) switches it for good to
/// a stereo decoder whose output is averaged to mono (see the module doc). A mono stream
/// never pays for stereo decoding (~40 % more time), and the switch loses only the mono
/// decoder's history, once.
pub struct OpusDecoder {
    inner: opus_pure::OpusDecoder,
    stereo: bool,
    /// Interleaved PCM of one packet: 120 ms × the decoder's channels.
    buf: Vec<i16>,
}

impl std::fmt::Debug for OpusDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusDecoder")
            .field("stereo", &self.stereo)
            .finish_non_exhaustive()
    }
}

/// TOC bit saying the packet codes two channels (RFC 6716 §3.1).
const TOC_STEREO: u8 = 0x04;

fn pure(channels: usize) -> Result<opus_pure::OpusDecoder, CodecError> {
    opus_pure::OpusDecoder::new(OPUS_SAMPLE_RATE as i32, channels)
        .map_err(|e| CodecError::Opus(e.to_string()))
}

impl OpusDecoder {
    /// A 48 kHz decoder with mono output.
    pub fn new() -> Result<Self, CodecError> {
        Ok(Self {
            inner: pure(1)?,
            stereo: false,
            buf: vec![0; MAX_FRAME_SAMPLES * 2],
        })
    }
}

impl AudioDecoder for OpusDecoder {
    fn sample_rate(&self) -> u32 {
        OPUS_SAMPLE_RATE
    }

    fn decode(&mut self, payload: &[u8], out: &mut Vec<i16>) -> Result<usize, CodecError> {
        let Some(&toc) = payload.first() else {
            // An empty payload would ask for loss concealment; a passive tap leaves gaps
            // as silence instead.
            return Ok(0);
        };
        if !self.stereo && toc & TOC_STEREO != 0 {
            self.inner = pure(2)?;
            self.stereo = true;
        }
        let n = self
            .inner
            .decode_s16(payload, MAX_FRAME_SAMPLES, &mut self.buf)
            .map_err(|e| CodecError::Opus(e.to_string()))?;
        if self.stereo {
            let pcm = self.buf.get(..n.saturating_mul(2)).unwrap_or(&self.buf);
            // The average of two i16 always fits an i16.
            out.extend(pcm.chunks_exact(2).map(|lr| match *lr {
                [l, r] => ((i32::from(l) + i32::from(r)) >> 1) as i16,
                _ => 0,
            }));
            Ok(pcm.len() / 2)
        } else {
            let pcm = self.buf.get(..n).unwrap_or(&self.buf);
            out.extend_from_slice(pcm);
            Ok(pcm.len())
        }
    }
}

#[cfg(feature = "opus")]
pub use libopus::{LibopusDecoder, OpusEncoder};

/// libopus through the `opus` crate: the synthesizer's encoder and the reference decoder.
#[cfg(feature = "opus")]
mod libopus {
    use super::{AudioDecoder, CodecError, MAX_FRAME_SAMPLES, OPUS_SAMPLE_RATE};

    /// Upper bound of one encoded packet (libopus recommends 4000 bytes).
    const MAX_PACKET_BYTES: usize = 4000;

    fn err(e: opus::Error) -> CodecError {
        CodecError::Opus(e.to_string())
    }

    /// libopus decoder, 48 kHz mono: the alternative to [`super::OpusDecoder`], used to
    /// cross-check it. Down-mixes stereo streams with phase inversion switched off.
    pub struct LibopusDecoder {
        inner: opus::Decoder,
        buf: Vec<i16>,
    }

    impl LibopusDecoder {
        /// A 48 kHz mono decoder.
        pub fn new() -> Result<Self, CodecError> {
            Self::with_channels(opus::Channels::Mono)
        }

        /// A 48 kHz decoder with interleaved stereo output (for comparing down-mixes).
        pub fn new_stereo() -> Result<Self, CodecError> {
            Self::with_channels(opus::Channels::Stereo)
        }

        fn with_channels(ch: opus::Channels) -> Result<Self, CodecError> {
            let n = MAX_FRAME_SAMPLES * ch as usize;
            Ok(Self {
                inner: opus::Decoder::new(OPUS_SAMPLE_RATE, ch).map_err(err)?,
                buf: vec![0; n],
            })
        }
    }

    impl AudioDecoder for LibopusDecoder {
        fn sample_rate(&self) -> u32 {
            OPUS_SAMPLE_RATE
        }

        /// Appends the decoded samples (interleaved for a stereo decoder) and returns
        /// how many values were appended.
        fn decode(&mut self, payload: &[u8], out: &mut Vec<i16>) -> Result<usize, CodecError> {
            if payload.is_empty() {
                return Ok(0);
            }
            let channels = self.buf.len() / MAX_FRAME_SAMPLES;
            let n = self
                .inner
                .decode(payload, &mut self.buf, false)
                .map_err(err)?;
            let pcm = self
                .buf
                .get(..n.saturating_mul(channels))
                .unwrap_or(&self.buf);
            out.extend_from_slice(pcm);
            Ok(pcm.len())
        }
    }

    /// libopus encoder, 48 kHz, VoIP application. For the traffic synthesizer and tests.
    pub struct OpusEncoder {
        inner: opus::Encoder,
        buf: Vec<u8>,
    }

    impl OpusEncoder {
        /// A 48 kHz mono VoIP encoder.
        pub fn new() -> Result<Self, CodecError> {
            Self::with(false, false)
        }

        /// A 48 kHz encoder: `stereo` takes interleaved stereo input; `music` picks the
        /// libopus "audio" application (CELT-leaning) instead of "VoIP" (SILK-leaning).
        pub fn with(stereo: bool, music: bool) -> Result<Self, CodecError> {
            let ch = if stereo {
                opus::Channels::Stereo
            } else {
                opus::Channels::Mono
            };
            let app = if music {
                opus::Application::Audio
            } else {
                opus::Application::Voip
            };
            Ok(Self {
                inner: opus::Encoder::new(OPUS_SAMPLE_RATE, ch, app).map_err(err)?,
                buf: vec![0; MAX_PACKET_BYTES],
            })
        }

        /// Sets the target bitrate in bits per second.
        pub fn set_bitrate(&mut self, bps: i32) -> Result<(), CodecError> {
            self.inner
                .set_bitrate(opus::Bitrate::Bits(bps))
                .map_err(err)
        }

        /// Encodes one frame (960 samples per channel = 20 ms; any valid Opus frame size
        /// works) and appends the packet to `out`.
        pub fn encode(&mut self, pcm: &[i16], out: &mut Vec<u8>) -> Result<(), CodecError> {
            let n = self.inner.encode(pcm, &mut self.buf).map_err(err)?;
            out.extend_from_slice(self.buf.get(..n).unwrap_or(&self.buf));
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_payload_is_a_gap_not_concealment() {
        let mut dec = OpusDecoder::new().unwrap();
        let mut out = Vec::new();
        assert_eq!(dec.decode(&[], &mut out).unwrap(), 0);
        assert!(out.is_empty());
    }

    #[cfg(feature = "opus")]
    #[test]
    fn tone_round_trip_through_both_decoders() {
        use crate::codec::test_util::{dominant_freq, rms, tone};
        let pcm = tone(1000.0, 48_000, 48_000, 8000.0);
        let mut enc = OpusEncoder::new().unwrap();
        let mut pure = OpusDecoder::new().unwrap();
        let mut lib = LibopusDecoder::new().unwrap();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let mut pkt = Vec::new();
        for frame in pcm.chunks_exact(960) {
            pkt.clear();
            enc.encode(frame, &mut pkt).unwrap();
            assert!(!pkt.is_empty() && pkt.len() < 1500);
            assert_eq!(pure.decode(&pkt, &mut a).unwrap(), 960);
            assert_eq!(lib.decode(&pkt, &mut b).unwrap(), 960);
        }
        for out in [&a, &b] {
            assert_eq!(out.len(), 48_000);
            let steady = &out[9600..];
            let f = dominant_freq(steady, 48_000);
            assert!((f - 1000.0).abs() < 20.0, "freq {f}");
            let ratio = rms(steady) / rms(&pcm[9600..]);
            assert!((ratio - 1.0).abs() < 0.25, "rms ratio {ratio}");
        }
    }

    #[cfg(feature = "opus")]
    #[test]
    fn libopus_garbage_is_an_error_not_a_panic() {
        let mut dec = LibopusDecoder::new().unwrap();
        let mut out = Vec::new();
        assert_eq!(dec.decode(&[], &mut out).unwrap(), 0);
        // Code 3 packet claiming 63 frames with no data.
        assert!(dec.decode(&[0x03, 0xff], &mut out).is_err());
        let mut enc = OpusEncoder::new().unwrap();
        assert!(enc.encode(&[0; 17], &mut Vec::new()).is_err());
    }
}
