//! Audio codecs: naming, decoder construction and the [`AudioDecoder`] trait.
//!
//! Owns: mapping SDP encoding names to [`CodecKind`], building a decoder per stream, and
//! the codec implementations (G.711, G.722 and the Opus decoder in pure Rust, so the
//! default build needs no C library; libopus — the Opus encoder and a reference decoder —
//! only with the `opus` feature).
//!
//! Clock rates: the RTP clock is not always the audio sample rate. G.722 runs an
//! 8000 Hz RTP clock but decodes to 16000 Hz samples (RFC 3551 §4.5.2); Opus always uses a
//! 48000 Hz RTP clock (RFC 7587). Use [`rtp_clock_rate`] for timestamps and
//! [`AudioDecoder::sample_rate`] for PCM.

mod g711;
mod g722;
mod opus;

use thiserror::Error;

pub use g711::{alaw_to_linear, linear_to_alaw, linear_to_ulaw, ulaw_to_linear};
pub use g722::{G722Decoder, G722Encoder, G722_SAMPLE_RATE};
#[cfg(feature = "opus")]
pub use opus::{LibopusDecoder, OpusEncoder};
pub use opus::{OpusDecoder, OPUS_SAMPLE_RATE};

/// Codec families vcontap knows about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CodecKind {
    /// G.711 μ-law.
    Pcmu,
    /// G.711 A-law.
    Pcma,
    /// G.722 (64 kbit/s).
    G722,
    /// Opus.
    Opus,
    /// RFC 4733 telephone-event (DTMF).
    TelephoneEvent,
    /// RFC 3389 comfort noise.
    ComfortNoise,
    /// Anything else.
    Other,
}

/// Errors from decoding or encoding audio.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The Opus decoder rejected the packet (malformed, truncated, over 120 ms), or
    /// libopus rejected an encoder call.
    #[error("opus: {0}")]
    Opus(String),
}

/// Maps an SDP `a=rtpmap` encoding name (case-insensitive) to a [`CodecKind`].
pub fn codec_kind(encoding_name: &str) -> CodecKind {
    let n = encoding_name.trim();
    let is = |s: &str| n.eq_ignore_ascii_case(s);
    if is("PCMU") {
        CodecKind::Pcmu
    } else if is("PCMA") {
        CodecKind::Pcma
    } else if is("G722") {
        CodecKind::G722
    } else if is("opus") {
        CodecKind::Opus
    } else if is("telephone-event") {
        CodecKind::TelephoneEvent
    } else if is("CN") {
        CodecKind::ComfortNoise
    } else {
        CodecKind::Other
    }
}

/// Decodes one codec's RTP payloads to mono 16-bit PCM. One instance per stream since
/// ADPCM/Opus decoders carry state between packets.
pub trait AudioDecoder: Send {
    /// Sample rate of the PCM produced (not necessarily the RTP clock rate).
    fn sample_rate(&self) -> u32;
    /// Decodes one payload, appending samples to `out`; returns how many were appended.
    fn decode(&mut self, payload: &[u8], out: &mut Vec<i16>) -> Result<usize, CodecError>;
}

/// A fresh decoder for `kind`: PCMU/PCMA at 8000 Hz, G.722 at 16000 Hz, Opus at 48000 Hz
/// mono (the pure-Rust [`OpusDecoder`], in every build). `None` for codecs that carry no
/// decodable audio here (telephone-event, CN, unknown).
pub fn new_decoder(kind: CodecKind) -> Option<Box<dyn AudioDecoder>> {
    match kind {
        CodecKind::Pcmu => Some(Box::new(g711::PcmuDecoder)),
        CodecKind::Pcma => Some(Box::new(g711::PcmaDecoder)),
        CodecKind::G722 => Some(Box::new(G722Decoder::new())),
        CodecKind::Opus => OpusDecoder::new()
            .ok()
            .map(|d| Box::new(d) as Box<dyn AudioDecoder>),
        _ => None,
    }
}

/// Sample rate of the PCM that [`new_decoder`] would produce for `kind`; `None` exactly
/// when `new_decoder` would return `None`.
pub fn decoder_sample_rate(kind: CodecKind) -> Option<u32> {
    match kind {
        CodecKind::Pcmu | CodecKind::Pcma => Some(8000),
        CodecKind::G722 => Some(G722_SAMPLE_RATE),
        CodecKind::Opus => Some(OPUS_SAMPLE_RATE),
        _ => None,
    }
}

/// Default RTP clock rate of `kind` when SDP does not say (RFC 3551 static payload
/// types, RFC 7587 for Opus). G.722 is 8000 here even though its audio is 16 kHz.
/// `None` for telephone-event (it follows the audio codec's clock) and unknown codecs.
pub fn rtp_clock_rate(kind: CodecKind) -> Option<u32> {
    match kind {
        CodecKind::Pcmu | CodecKind::Pcma | CodecKind::G722 | CodecKind::ComfortNoise => Some(8000),
        CodecKind::Opus => Some(48_000),
        CodecKind::TelephoneEvent | CodecKind::Other => None,
    }
}

/// Signal helpers shared by the codec and mixer tests.
#[cfg(test)]
pub(crate) mod test_util {
    /// A sine tone of `freq` Hz, `n` samples at `rate`, peak `amp`.
    pub fn tone(freq: f64, rate: u32, n: usize, amp: f64) -> Vec<i16> {
        (0..n)
            .map(|i| {
                (amp * (2.0 * std::f64::consts::PI * freq * i as f64 / f64::from(rate)).sin())
                    as i16
            })
            .collect()
    }

    /// Root mean square of the samples.
    pub fn rms(s: &[i16]) -> f64 {
        if s.is_empty() {
            return 0.0;
        }
        (s.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / s.len() as f64).sqrt()
    }

    /// Goertzel power of `freq` in `s`, normalised by length.
    pub fn goertzel(s: &[i16], rate: u32, freq: f64) -> f64 {
        let w = 2.0 * std::f64::consts::PI * freq / f64::from(rate);
        let c = 2.0 * w.cos();
        let (mut s1, mut s2) = (0.0f64, 0.0f64);
        for &x in s {
            let s0 = f64::from(x) + c * s1 - s2;
            s2 = s1;
            s1 = s0;
        }
        (s1 * s1 + s2 * s2 - c * s1 * s2) / (s.len() as f64).powi(2)
    }

    /// Frequency estimated from rising zero crossings.
    pub fn dominant_freq(s: &[i16], rate: u32) -> f64 {
        let crossings = s.windows(2).filter(|w| w[0] < 0 && w[1] >= 0).count();
        crossings as f64 * f64::from(rate) / s.len() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::test_util::*;
    use super::*;

    #[test]
    fn names() {
        assert_eq!(codec_kind("pcmu"), CodecKind::Pcmu);
        assert_eq!(codec_kind("PCMA"), CodecKind::Pcma);
        assert_eq!(codec_kind("g722"), CodecKind::G722);
        assert_eq!(codec_kind("OPUS"), CodecKind::Opus);
        assert_eq!(codec_kind("Telephone-Event"), CodecKind::TelephoneEvent);
        assert_eq!(codec_kind("cn"), CodecKind::ComfortNoise);
        assert_eq!(codec_kind("G729"), CodecKind::Other);
        assert_eq!(codec_kind(""), CodecKind::Other);
    }

    #[test]
    fn decoders_and_rates_agree() {
        for k in [
            CodecKind::Pcmu,
            CodecKind::Pcma,
            CodecKind::G722,
            CodecKind::Opus,
            CodecKind::TelephoneEvent,
            CodecKind::ComfortNoise,
            CodecKind::Other,
        ] {
            assert_eq!(
                new_decoder(k).map(|d| d.sample_rate()),
                decoder_sample_rate(k),
                "{k:?}"
            );
        }
        assert_eq!(decoder_sample_rate(CodecKind::G722), Some(16_000));
        assert_eq!(rtp_clock_rate(CodecKind::G722), Some(8000));
        // Opus decodes in every build, with or without libopus.
        assert_eq!(decoder_sample_rate(CodecKind::Opus), Some(48_000));
    }

    #[test]
    fn helpers_measure_what_they_claim() {
        let t = tone(440.0, 8000, 8000, 1000.0);
        assert!((dominant_freq(&t, 8000) - 440.0).abs() < 2.0);
        assert!((rms(&t) - 1000.0 / 2f64.sqrt()).abs() < 5.0);
        assert!(goertzel(&t, 8000, 440.0) > 100.0 * goertzel(&t, 8000, 1000.0));
    }
}
