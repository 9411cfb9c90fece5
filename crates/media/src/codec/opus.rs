//! Opus decoding/encoding through libopus (only with the `opus` cargo feature).
//!
//! Owns: a mono 48 kHz decoder for RTP Opus payloads (RFC 7587: the RTP clock is always
//! 48 kHz) and a 48 kHz mono VoIP encoder for the traffic synthesizer. Stereo streams are
//! decoded down-mixed to mono by libopus, which is what a per-party channel needs.

use super::{AudioDecoder, CodecError};

/// Sample rate Opus is decoded at.
pub const OPUS_SAMPLE_RATE: u32 = 48_000;

/// Largest Opus packet duration (120 ms) at 48 kHz: the decode buffer size.
const MAX_FRAME_SAMPLES: usize = 5760;

/// Upper bound of one encoded packet (libopus recommends 4000 bytes).
const MAX_PACKET_BYTES: usize = 4000;

fn err(e: opus::Error) -> CodecError {
    CodecError::Opus(e.to_string())
}

/// libopus decoder, 48 kHz mono.
pub(crate) struct OpusDecoder {
    inner: opus::Decoder,
    buf: Vec<i16>,
}

impl OpusDecoder {
    pub(crate) fn new() -> Result<Self, CodecError> {
        Ok(Self {
            inner: opus::Decoder::new(OPUS_SAMPLE_RATE, opus::Channels::Mono).map_err(err)?,
            buf: vec![0; MAX_FRAME_SAMPLES],
        })
    }
}

impl AudioDecoder for OpusDecoder {
    fn sample_rate(&self) -> u32 {
        OPUS_SAMPLE_RATE
    }

    fn decode(&mut self, payload: &[u8], out: &mut Vec<i16>) -> Result<usize, CodecError> {
        if payload.is_empty() {
            // An empty payload would ask libopus for loss concealment; a passive tap
            // leaves gaps as silence instead.
            return Ok(0);
        }
        let n = self
            .inner
            .decode(payload, &mut self.buf, false)
            .map_err(err)?;
        let n = n.min(self.buf.len());
        out.extend_from_slice(&self.buf[..n]);
        Ok(n)
    }
}

/// libopus encoder, 48 kHz mono, VoIP application. For the traffic synthesizer.
pub struct OpusEncoder {
    inner: opus::Encoder,
    buf: Vec<u8>,
}

impl OpusEncoder {
    /// A 48 kHz mono VoIP encoder.
    pub fn new() -> Result<Self, CodecError> {
        Ok(Self {
            inner: opus::Encoder::new(
                OPUS_SAMPLE_RATE,
                opus::Channels::Mono,
                opus::Application::Voip,
            )
            .map_err(err)?,
            buf: vec![0; MAX_PACKET_BYTES],
        })
    }

    /// Encodes one frame (960 samples = 20 ms; any valid Opus frame size works) and
    /// appends the packet to `out`.
    pub fn encode(&mut self, pcm: &[i16], out: &mut Vec<u8>) -> Result<(), CodecError> {
        let n = self.inner.encode(pcm, &mut self.buf).map_err(err)?;
        out.extend_from_slice(&self.buf[..n.min(self.buf.len())]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::test_util::{dominant_freq, rms, tone};

    #[test]
    fn tone_round_trip() {
        let pcm = tone(1000.0, 48_000, 48_000, 8000.0);
        let mut enc = OpusEncoder::new().unwrap();
        let mut dec = OpusDecoder::new().unwrap();
        let mut out = Vec::new();
        let mut pkt = Vec::new();
        for frame in pcm.chunks_exact(960) {
            pkt.clear();
            enc.encode(frame, &mut pkt).unwrap();
            assert!(!pkt.is_empty() && pkt.len() < 1500);
            assert_eq!(dec.decode(&pkt, &mut out).unwrap(), 960);
        }
        assert_eq!(out.len(), 48_000);
        let steady = &out[9600..];
        let f = dominant_freq(steady, 48_000);
        assert!((f - 1000.0).abs() < 20.0, "freq {f}");
        let ratio = rms(steady) / rms(&pcm[9600..]);
        assert!((ratio - 1.0).abs() < 0.25, "rms ratio {ratio}");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut dec = OpusDecoder::new().unwrap();
        let mut out = Vec::new();
        assert_eq!(dec.decode(&[], &mut out).unwrap(), 0);
        // Code 3 packet claiming 63 frames with no data.
        assert!(dec.decode(&[0x03, 0xff], &mut out).is_err());
        let mut enc = OpusEncoder::new().unwrap();
        assert!(enc.encode(&[0; 17], &mut Vec::new()).is_err());
    }
}
