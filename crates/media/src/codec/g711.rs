//! G.711 μ-law (PCMU) and A-law (PCMA) conversion, after the public-domain Sun
//! Microsystems reference `g711.c`.
//!
//! Owns: the sample conversions and the two stateless decoders. Decoding is a lookup in a
//! 256-entry table computed at compile time by `const fn`, so the per-sample cost is one
//! load.

use super::{AudioDecoder, CodecError};

/// μ-law bias added before segment search (reference `BIAS`).
const ULAW_BIAS: i32 = 0x84;
/// Largest magnitude μ-law encodes (in the reference's 14-bit domain).
const ULAW_CLIP: i32 = 8159;

const fn ulaw_decode_ref(u: u8) -> i16 {
    let u = !u as i32;
    let t = (((u & 0x0f) << 3) + ULAW_BIAS) << ((u & 0x70) >> 4);
    (if u & 0x80 != 0 {
        ULAW_BIAS - t
    } else {
        t - ULAW_BIAS
    }) as i16
}

const fn alaw_decode_ref(a: u8) -> i16 {
    let a = (a ^ 0x55) as i32;
    let mut t = (a & 0x0f) << 4;
    let seg = (a & 0x70) >> 4;
    t = match seg {
        0 => t + 8,
        1 => t + 0x108,
        _ => (t + 0x108) << (seg - 1),
    };
    (if a & 0x80 != 0 { t } else { -t }) as i16
}

// Evaluated at compile time only (the statics below): `i < 256` bounds every index, and
// an out-of-bounds one would fail the build, never panic at run time.
#[allow(clippy::indexing_slicing)]
const fn ulaw_table() -> [i16; 256] {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = ulaw_decode_ref(i as u8);
        i += 1;
    }
    t
}

// Evaluated at compile time only (the statics below): `i < 256` bounds every index, and
// an out-of-bounds one would fail the build, never panic at run time.
#[allow(clippy::indexing_slicing)]
const fn alaw_table() -> [i16; 256] {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = alaw_decode_ref(i as u8);
        i += 1;
    }
    t
}

/// μ-law code -> linear 16-bit sample.
static ULAW_TABLE: [i16; 256] = ulaw_table();
/// A-law code -> linear 16-bit sample.
static ALAW_TABLE: [i16; 256] = alaw_table();

/// Decodes one μ-law byte (0xFF -> 0, 0x00 -> -32124).
#[inline]
pub fn ulaw_to_linear(u: u8) -> i16 {
    // A u8 index into a 256-entry table: LLVM drops the check and the fallback.
    ULAW_TABLE.get(usize::from(u)).copied().unwrap_or(0)
}

/// Decodes one A-law byte (0xD5 -> 8, 0x55 -> -8).
#[inline]
pub fn alaw_to_linear(a: u8) -> i16 {
    ALAW_TABLE.get(usize::from(a)).copied().unwrap_or(0)
}

/// Index of the first segment end >= `v`, or 8 if above all.
#[inline]
fn segment(v: i32, ends: &[i32; 8]) -> i32 {
    ends.iter().position(|&e| v <= e).unwrap_or(8) as i32
}

/// Encodes one linear sample to μ-law.
pub fn linear_to_ulaw(s: i16) -> u8 {
    const ENDS: [i32; 8] = [0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF];
    let mut v = i32::from(s) >> 2;
    let mask = if v < 0 {
        v = -v;
        0x7F
    } else {
        0xFF
    };
    v = v.min(ULAW_CLIP) + (ULAW_BIAS >> 2);
    let seg = segment(v, &ENDS);
    if seg >= 8 {
        return 0x7F ^ mask;
    }
    (((seg << 4) | ((v >> (seg + 1)) & 0x0F)) as u8) ^ mask
}

/// Encodes one linear sample to A-law.
pub fn linear_to_alaw(s: i16) -> u8 {
    const ENDS: [i32; 8] = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF];
    let mut v = i32::from(s) >> 3;
    let mask = if v >= 0 {
        0xD5
    } else {
        v = -v - 1;
        0x55
    };
    let seg = segment(v, &ENDS);
    if seg >= 8 {
        return 0x7F ^ mask;
    }
    let q = if seg < 2 {
        (v >> 1) & 0x0F
    } else {
        (v >> seg) & 0x0F
    };
    (((seg << 4) | q) as u8) ^ mask
}

/// PCMU decoder: one byte per 8 kHz sample.
#[derive(Debug, Default, Clone)]
pub(crate) struct PcmuDecoder;

impl AudioDecoder for PcmuDecoder {
    fn sample_rate(&self) -> u32 {
        8000
    }
    fn decode(&mut self, payload: &[u8], out: &mut Vec<i16>) -> Result<usize, CodecError> {
        out.extend(payload.iter().map(|&b| ulaw_to_linear(b)));
        Ok(payload.len())
    }
}

/// PCMA decoder: one byte per 8 kHz sample.
#[derive(Debug, Default, Clone)]
pub(crate) struct PcmaDecoder;

impl AudioDecoder for PcmaDecoder {
    fn sample_rate(&self) -> u32 {
        8000
    }
    fn decode(&mut self, payload: &[u8], out: &mut Vec<i16>) -> Result<usize, CodecError> {
        out.extend(payload.iter().map(|&b| alaw_to_linear(b)));
        Ok(payload.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_values() {
        assert_eq!(ulaw_to_linear(0xFF), 0);
        assert_eq!(ulaw_to_linear(0x7F), 0);
        assert_eq!(ulaw_to_linear(0x00), -32124);
        assert_eq!(ulaw_to_linear(0x80), 32124);
        assert_eq!(alaw_to_linear(0xD5), 8);
        assert_eq!(alaw_to_linear(0x55), -8);
        assert_eq!(alaw_to_linear(0xAA), 32256);
        assert_eq!(alaw_to_linear(0x2A), -32256);
        assert_eq!(linear_to_ulaw(0), 0xFF);
        assert_eq!(linear_to_alaw(0), 0xD5);
        assert_eq!(linear_to_ulaw(i16::MAX), 0x80);
        assert_eq!(linear_to_ulaw(i16::MIN), 0x00);
        assert_eq!(linear_to_alaw(i16::MAX), 0xAA);
        assert_eq!(linear_to_alaw(i16::MIN), 0x2A);
    }

    #[test]
    fn codes_round_trip() {
        for c in 0..=255u8 {
            let u = linear_to_ulaw(ulaw_to_linear(c));
            // 0x7F is μ-law's negative zero; it re-encodes as positive zero.
            assert_eq!(u, if c == 0x7F { 0xFF } else { c }, "ulaw {c:#x}");
            assert_eq!(linear_to_alaw(alaw_to_linear(c)), c, "alaw {c:#x}");
        }
    }

    #[test]
    fn samples_round_trip_within_quantisation() {
        for s in (i16::MIN..=i16::MAX).step_by(7) {
            let x = i32::from(s);
            let eu = (i32::from(ulaw_to_linear(linear_to_ulaw(s))) - x).abs();
            let ea = (i32::from(alaw_to_linear(linear_to_alaw(s))) - x).abs();
            // Step size is ~1/16 of the magnitude: allow half a step plus the bias floor.
            let bound = x.abs() / 16 + 36;
            assert!(eu <= bound, "ulaw {s}: err {eu}");
            assert!(ea <= bound, "alaw {s}: err {ea}");
        }
    }

    #[test]
    fn tables_are_monotonic_per_sign() {
        // Within the positive half codes 0xFF..0x80 increase in magnitude.
        for c in 0x81..=0xFFu8 {
            assert!(ulaw_to_linear(c) <= ulaw_to_linear(c - 1));
        }
    }

    #[test]
    fn decoders() {
        let mut out = vec![7];
        assert_eq!(PcmuDecoder.decode(&[0xFF, 0x00], &mut out).unwrap(), 2);
        assert_eq!(PcmaDecoder.decode(&[0xD5], &mut out).unwrap(), 1);
        assert_eq!(out, vec![7, 0, -32124, 8]);
    }
}
