//! Tone synthesis and voice encoding for the RTP streams.
//!
//! Each stream carries a pure sine. The tone is precomputed over one exact period (a cycle
//! table), so G.711 payloads are table lookups and 2.5 million packets stay cheap. G.722 and
//! Opus go through `vcontap-media`'s stateful encoders.

use crate::config::Codec;
use crate::scenario::TONE_AMPLITUDE;

/// Largest cycle table in samples: one second at the highest sample rate. Tones whose exact
/// period is longer (non-integer or odd frequencies) use a one-second table instead, which
/// only adds a phase step once per second.
pub const MAX_TONE_TABLE: u32 = 48_000;

/// Errors from the voice encoders.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The codec cannot be encoded in this build.
    #[error("codec {0:?} is not available in this build")]
    Unavailable(Codec),
    /// The underlying encoder failed.
    #[error("{0:?} encoder failed: {1}")]
    Encoder(Codec, String),
}

// G.711 encoding is the media crate's (one implementation, tested there against the
// reference values); re-exported so synth users need only this crate.
pub use vcontap_media::{linear_to_alaw, linear_to_ulaw};

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// One exact period of a sine tone at a sample rate, as 16-bit PCM.
#[derive(Debug, Clone)]
pub(crate) struct ToneTable {
    pcm: Vec<i16>,
}

impl ToneTable {
    /// Table for `freq_hz` at `rate` Hz with [`TONE_AMPLITUDE`].
    pub(crate) fn new(freq_hz: f64, rate: u32) -> Self {
        let rate = rate.clamp(1, MAX_TONE_TABLE);
        let len = if freq_hz.is_finite() && freq_hz.fract() == 0.0 && freq_hz > 0.0 && freq_hz < 1e9
        {
            let f = freq_hz as u32;
            rate / gcd(rate, f).max(1)
        } else {
            rate
        };
        let len = len.clamp(1, MAX_TONE_TABLE);
        let step = std::f64::consts::TAU * freq_hz / f64::from(rate);
        let pcm = (0..len)
            .map(|n| (TONE_AMPLITUDE * (step * f64::from(n)).sin()).round() as i16)
            .collect();
        ToneTable { pcm }
    }

    /// Period in samples.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.pcm.len()
    }

    /// `count` samples starting at absolute sample index `pos`, appended to `out`.
    pub(crate) fn samples(&self, pos: u64, count: usize, out: &mut Vec<i16>) {
        let len = self.pcm.len().max(1);
        let mut i = (pos % len as u64) as usize;
        for _ in 0..count {
            out.push(self.pcm.get(i).copied().unwrap_or(0));
            i += 1;
            if i == len {
                i = 0;
            }
        }
    }
}

/// Produces one voice payload per slot for one RTP stream.
pub(crate) enum VoiceEncoder {
    /// G.711: the encoded cycle, read cyclically.
    Table(Vec<u8>),
    /// G.722 through vcontap-media.
    G722(ToneTable, Box<vcontap_media::G722Encoder>, Vec<i16>),
    /// Opus through vcontap-media.
    #[cfg(feature = "opus")]
    Opus(ToneTable, Box<vcontap_media::OpusEncoder>, Vec<i16>),
}

impl std::fmt::Debug for VoiceEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VoiceEncoder::Table(t) => write!(f, "Table({})", t.len()),
            VoiceEncoder::G722(..) => f.write_str("G722"),
            #[cfg(feature = "opus")]
            VoiceEncoder::Opus(..) => f.write_str("Opus"),
        }
    }
}

impl VoiceEncoder {
    /// Encoder for a tone of `freq_hz` in `codec`.
    pub(crate) fn new(codec: Codec, freq_hz: f64) -> Result<Self, CodecError> {
        let table = ToneTable::new(freq_hz, codec.sample_rate());
        match codec {
            Codec::Pcmu => Ok(VoiceEncoder::Table(
                table.pcm.iter().map(|&s| linear_to_ulaw(s)).collect(),
            )),
            Codec::Pcma => Ok(VoiceEncoder::Table(
                table.pcm.iter().map(|&s| linear_to_alaw(s)).collect(),
            )),
            Codec::G722 => Ok(VoiceEncoder::G722(table, Box::default(), Vec::new())),
            #[cfg(feature = "opus")]
            Codec::Opus => {
                let enc = vcontap_media::OpusEncoder::new()
                    .map_err(|e| CodecError::Encoder(codec, format!("{e:?}")))?;
                Ok(VoiceEncoder::Opus(table, Box::new(enc), Vec::new()))
            }
            #[cfg(not(feature = "opus"))]
            Codec::Opus => Err(CodecError::Unavailable(codec)),
        }
    }

    /// Appends the payload of the voice slot starting at audio sample `pos` and lasting
    /// `count` audio samples.
    pub(crate) fn encode(
        &mut self,
        pos: u64,
        count: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), CodecError> {
        match self {
            VoiceEncoder::Table(bytes) => {
                let len = bytes.len().max(1);
                let mut i = (pos % len as u64) as usize;
                for _ in 0..count {
                    out.push(bytes.get(i).copied().unwrap_or(0xFF));
                    i += 1;
                    if i == len {
                        i = 0;
                    }
                }
                Ok(())
            }
            VoiceEncoder::G722(table, enc, pcm) => {
                pcm.clear();
                table.samples(pos, count, pcm);
                enc.encode(pcm, out);
                Ok(())
            }
            #[cfg(feature = "opus")]
            VoiceEncoder::Opus(table, enc, pcm) => {
                pcm.clear();
                table.samples(pos, count, pcm);
                enc.encode(pcm, out)
                    .map_err(|e| CodecError::Encoder(Codec::Opus, format!("{e:?}")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use vcontap_media::{alaw_to_linear, ulaw_to_linear};

    #[test]
    fn g711_known_values() {
        assert_eq!(linear_to_ulaw(0), 0xFF);
        assert_eq!(linear_to_ulaw(i16::MAX), 0x80);
        assert_eq!(linear_to_ulaw(i16::MIN), 0x00);
        assert_eq!(linear_to_alaw(0), 0xD5);
        assert_eq!(linear_to_alaw(i16::MAX), 0xAA);
        assert_eq!(linear_to_alaw(i16::MIN), 0x2A);
    }

    #[test]
    fn g711_round_trip_within_quantization() {
        for s in (i16::MIN..=i16::MAX).step_by(97) {
            let tol = (i32::from(s).abs() / 16).max(16);
            let u = i32::from(ulaw_to_linear(linear_to_ulaw(s)));
            let a = i32::from(alaw_to_linear(linear_to_alaw(s)));
            assert!((u - i32::from(s)).abs() <= tol, "ulaw {s} -> {u}");
            assert!((a - i32::from(s)).abs() <= tol, "alaw {s} -> {a}");
        }
    }

    #[test]
    fn tone_table_is_one_exact_period() {
        let t = ToneTable::new(450.0, 8000);
        assert_eq!(t.len(), 160);
        let t = ToneTable::new(400.0, 8000);
        assert_eq!(t.len(), 20);
        let t = ToneTable::new(437.3, 16000);
        assert_eq!(t.len(), 16000);
        let t = ToneTable::new(f64::NAN, 8000);
        assert_eq!(t.len(), 8000);
        let mut out = Vec::new();
        ToneTable::new(1000.0, 8000).samples(3, 16, &mut out);
        // 1 kHz at 8 kHz: 8-sample period, peaks at n = 2 (mod 8).
        assert_eq!(out[7], 8000);
        assert_eq!(out[15], 8000);
    }

    #[test]
    fn table_encoder_wraps() {
        let mut enc = VoiceEncoder::new(Codec::Pcmu, 1000.0).expect("pcmu");
        let mut a = Vec::new();
        enc.encode(0, 160, &mut a).expect("encode");
        let mut b = Vec::new();
        enc.encode(8 * 1000, 160, &mut b).expect("encode");
        assert_eq!(a.len(), 160);
        assert_eq!(a, b);
    }
}
