//! G.722 (64 kbit/s, mode 1) SB-ADPCM decoder and encoder.
//!
//! Owns: the G.722 codec state machines. Hand-ported from Steve Underwood's
//! public-domain SpanDSP `g722_encode.c`/`g722_decode.c` (themselves based on the
//! unrestricted CMU 1993 implementation of ITU-T G.722), limited to what RTP carries:
//! 64 kbit/s, one code byte per pair of 16 kHz samples, QMF band splitting on.
//!
//! Why not the `ezk-g722` crate (a Rust port of the same code): it drags in the `ezk`
//! media framework (tokio, parking_lot, slotmap, rand, rtp-types, ...) for ~400 lines of
//! arithmetic, and its encoder asserts on odd input lengths. This port keeps the
//! dependency tree empty, carries an odd trailing sample over to the next call, and
//! only indexes tables with masked values so hostile payloads cannot panic. All
//! intermediate values stay far inside i32 (|det| <= 32064, table entries <= 24808,
//! products < 2^30), which the fuzz target exercises.
//!
//! Note: G.722's RTP clock rate is 8000 Hz (RFC 3551 §4.5.2, a historical error kept for
//! compatibility) while the audio is sampled at 16000 Hz: one RTP tick = two samples.

use super::{AudioDecoder, CodecError};

/// Output/input sample rate of G.722 audio.
pub const G722_SAMPLE_RATE: u32 = 16_000;

#[cfg(test)]
const WL: [i32; 8] = [-60, -30, 58, 172, 334, 538, 1198, 3042];
#[cfg(test)]
const RL42: [i32; 16] = [0, 7, 6, 5, 4, 3, 2, 1, 7, 6, 5, 4, 3, 2, 1, 0];
/// `WL[RL42[i]]`, the low-band log scale factor multiplier for 4-bit code `i`, composed
/// ahead of time (one lookup instead of two; the tests check the composition).
const WL_RL42: [i32; 16] = [
    -60, 3042, 1198, 538, 334, 172, 58, -30, 3042, 1198, 538, 334, 172, 58, -30, -60,
];
const ILB: [i32; 32] = [
    2048, 2093, 2139, 2186, 2233, 2282, 2332, 2383, 2435, 2489, 2543, 2599, 2656, 2714, 2774, 2834,
    2896, 2960, 3025, 3091, 3158, 3228, 3298, 3371, 3444, 3520, 3597, 3676, 3756, 3838, 3922, 4008,
];
#[cfg(test)]
const WH: [i32; 3] = [0, -214, 798];
#[cfg(test)]
const RH2: [i32; 4] = [2, 1, 2, 1];
/// `WH[RH2[i]]` for 2-bit high-band code `i` (see [`WL_RL42`]).
const WH_RH2: [i32; 4] = [798, -214, 798, -214];
const QM2: [i32; 4] = [-7408, -1616, 7408, 1616];
const QM4: [i32; 16] = [
    0, -20456, -12896, -8968, -6288, -4240, -2584, -1200, 20456, 12896, 8968, 6288, 4240, 2584,
    1200, 0,
];
const QM6: [i32; 64] = [
    -136, -136, -136, -136, -24808, -21904, -19008, -16704, -14984, -13512, -12280, -11192, -10232,
    -9360, -8576, -7856, -7192, -6576, -6000, -5456, -4944, -4464, -4008, -3576, -3168, -2776,
    -2400, -2032, -1688, -1360, -1040, -728, 24808, 21904, 19008, 16704, 14984, 13512, 12280,
    11192, 10232, 9360, 8576, 7856, 7192, 6576, 6000, 5456, 4944, 4464, 4008, 3576, 3168, 2776,
    2400, 2032, 1688, 1360, 1040, 728, 432, 136, -432, -136,
];
const QMF_COEFFS: [i32; 12] = [3, -11, 12, 32, -210, 951, 3876, -805, 362, -156, 53, -11];
// Encoder-only tables.
const Q6: [i32; 32] = [
    0, 35, 72, 110, 150, 190, 233, 276, 323, 370, 422, 473, 530, 587, 650, 714, 786, 858, 940,
    1023, 1121, 1219, 1339, 1458, 1612, 1765, 1980, 2195, 2557, 2919, 0, 0,
];
const ILN: [i32; 32] = [
    0, 63, 62, 31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16, 15, 14, 13, 12, 11,
    10, 9, 8, 7, 6, 5, 4, 0,
];
const ILP: [i32; 32] = [
    0, 61, 60, 59, 58, 57, 56, 55, 54, 53, 52, 51, 50, 49, 48, 47, 46, 45, 44, 43, 42, 41, 40, 39,
    38, 37, 36, 35, 34, 33, 32, 0,
];
const IHN: [i32; 3] = [0, 1, 0];
const IHP: [i32; 3] = [0, 3, 2];

/// Table lookup. Every index is masked to (or bounded by) the table length, so LLVM drops
/// both the bounds check and the fallback: this is the panic-free spelling of `t[i]`.
#[inline(always)]
fn lut<const N: usize>(t: &[i32; N], i: usize) -> i32 {
    t.get(i).copied().unwrap_or(0)
}

#[inline]
fn sat(v: i32) -> i32 {
    v.clamp(i32::from(i16::MIN), i32::from(i16::MAX))
}

/// Adaptive predictor state of one sub-band.
#[derive(Debug, Clone, Default)]
struct Band {
    s: i32,
    sp: i32,
    sz: i32,
    r: [i32; 3],
    a: [i32; 3],
    ap: [i32; 3],
    p: [i32; 3],
    d: [i32; 7],
    b: [i32; 7],
    bp: [i32; 7],
    sg: [i32; 7],
    nb: i32,
    det: i32,
}

impl Band {
    /// Logarithmic scale factor update and scale computation (blocks 3L/3H).
    /// `nb_max` 18432 and `shift` 8 for the low band, 22528 and 10 for the high band.
    #[inline]
    fn scale(&mut self, w: i32, nb_max: i32, shift: i32) {
        self.nb = (((self.nb * 127) >> 7) + w).clamp(0, nb_max);
        let wd1 = ((self.nb >> 6) & 31) as usize;
        let wd2 = shift - (self.nb >> 11);
        let wd3 = if wd2 < 0 {
            lut(&ILB, wd1) << -wd2
        } else {
            lut(&ILB, wd1) >> wd2
        };
        self.det = wd3 << 2;
    }

    /// Block 4: reconstruction, pole/zero predictor adaptation and prediction.
    fn block4(&mut self, d: i32) {
        self.d[0] = d;
        self.r[0] = sat(self.s + d);
        self.p[0] = sat(self.sz + d);

        // UPPOL2
        for (sg, p) in self.sg.iter_mut().zip(&self.p) {
            *sg = p >> 15;
        }
        let wd1 = sat(self.a[1] << 2);
        let wd2 = (if self.sg[0] == self.sg[1] { -wd1 } else { wd1 }).min(32767);
        let mut wd3 = (wd2 >> 7) + if self.sg[0] == self.sg[2] { 128 } else { -128 };
        wd3 += (self.a[2] * 32512) >> 15;
        self.ap[2] = wd3.clamp(-12288, 12288);

        // UPPOL1
        self.sg[0] = self.p[0] >> 15;
        self.sg[1] = self.p[1] >> 15;
        let wd1 = if self.sg[0] == self.sg[1] { 192 } else { -192 };
        let wd2 = (self.a[1] * 32640) >> 15;
        let lim = sat(15360 - self.ap[2]);
        self.ap[1] = sat(wd1 + wd2).clamp(-lim, lim);

        // UPZERO
        let wd1 = if d == 0 { 0 } else { 128 };
        let sg0 = d >> 15;
        self.sg[0] = sg0;
        let zero = self.sg[1..].iter_mut().zip(&mut self.bp[1..]);
        for ((sg, bp), (d, b)) in zero.zip(self.d[1..].iter().zip(&self.b[1..])) {
            *sg = d >> 15;
            let wd2 = if *sg == sg0 { wd1 } else { -wd1 };
            let wd3 = (b * 32640) >> 15;
            *bp = sat(wd2 + wd3);
        }

        // DELAYA
        self.d.copy_within(..6, 1);
        self.b[1..].copy_from_slice(&self.bp[1..]);
        self.r.copy_within(..2, 1);
        self.p.copy_within(..2, 1);
        self.a[1..].copy_from_slice(&self.ap[1..]);

        // FILTEP
        let wd1 = (self.a[1] * sat(self.r[1] + self.r[1])) >> 15;
        let wd2 = (self.a[2] * sat(self.r[2] + self.r[2])) >> 15;
        self.sp = sat(wd1 + wd2);

        // FILTEZ
        let sz: i32 = self.b[1..]
            .iter()
            .zip(&self.d[1..])
            .map(|(b, d)| (b * sat(d + d)) >> 15)
            .sum();
        self.sz = sat(sz);

        // PREDIC
        self.s = sat(self.sp + self.sz);
    }
}

/// The two QMF filter sums over the 24-sample delay line: (even taps with the coefficients
/// forward, odd taps with them reversed).
#[inline]
fn qmf(x: &[i32; 24]) -> (i32, i32) {
    let mut even = 0;
    let mut odd = 0;
    let taps = x
        .chunks_exact(2)
        .zip(QMF_COEFFS.iter().zip(QMF_COEFFS.iter().rev()));
    for (pair, (cf, cr)) in taps {
        if let [e, o] = *pair {
            even += e * cf;
            odd += o * cr;
        }
    }
    (even, odd)
}

/// G.722 decoder state: 64 kbit/s code bytes in, 16 kHz samples out (two per byte).
#[derive(Debug, Clone)]
pub struct G722Decoder {
    x: [i32; 24],
    band: [Band; 2],
}

impl Default for G722Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl G722Decoder {
    /// A decoder in the reset state.
    pub fn new() -> Self {
        // SpanDSP's reset state: det 32 in the low band, 8 in the high band.
        let mut band = [Band::default(), Band::default()];
        band[0].det = 32;
        band[1].det = 8;
        Self { x: [0; 24], band }
    }

    /// Decodes one code byte into two 16 kHz samples.
    #[inline]
    fn decode_byte(&mut self, code: u8) -> [i16; 2] {
        let code = i32::from(code);
        let ilow6 = (code & 0x3f) as usize;
        let ihigh = ((code >> 6) & 0x3) as usize;
        let low = &mut self.band[0];

        // Block 5L: inverse quantiser with 6 bits, reconstruct, limit.
        let wd2 = (low.det * lut(&QM6, ilow6)) >> 15;
        let rlow = (low.s + wd2).clamp(-16384, 16383);
        // Block 2L: 4-bit inverse quantiser for the predictor.
        let ilow4 = ilow6 >> 2;
        let dlowt = (low.det * lut(&QM4, ilow4)) >> 15;
        low.scale(lut(&WL_RL42, ilow4), 18432, 8);
        low.block4(dlowt);

        let high = &mut self.band[1];
        let dhigh = (high.det * lut(&QM2, ihigh)) >> 15;
        let rhigh = (dhigh + high.s).clamp(-16384, 16383);
        high.scale(lut(&WH_RH2, ihigh), 22528, 10);
        high.block4(dhigh);

        // Receive QMF.
        self.x.copy_within(2.., 0);
        self.x[22] = rlow + rhigh;
        self.x[23] = rlow - rhigh;
        let (xout2, xout1) = qmf(&self.x);
        [sat(xout1 >> 11) as i16, sat(xout2 >> 11) as i16]
    }
}

impl AudioDecoder for G722Decoder {
    fn sample_rate(&self) -> u32 {
        G722_SAMPLE_RATE
    }

    fn decode(&mut self, payload: &[u8], out: &mut Vec<i16>) -> Result<usize, CodecError> {
        out.reserve(payload.len() * 2);
        for &b in payload {
            out.extend_from_slice(&self.decode_byte(b));
        }
        Ok(payload.len() * 2)
    }
}

/// G.722 encoder (64 kbit/s): 16 kHz samples in, one code byte per two samples out.
/// Used by the traffic synthesizer.
#[derive(Debug, Clone)]
pub struct G722Encoder {
    x: [i32; 24],
    band: [Band; 2],
    /// Odd sample left over from the previous call; QMF needs pairs.
    pending: Option<i16>,
}

impl Default for G722Encoder {
    fn default() -> Self {
        Self::new()
    }
}

impl G722Encoder {
    /// An encoder in the reset state.
    pub fn new() -> Self {
        // SpanDSP's reset state: det 32 in the low band, 8 in the high band.
        let mut band = [Band::default(), Band::default()];
        band[0].det = 32;
        band[1].det = 8;
        Self {
            x: [0; 24],
            band,
            pending: None,
        }
    }

    /// Encodes 16 kHz samples, appending one byte per sample pair to `out`. An odd final
    /// sample is kept and paired with the first sample of the next call.
    pub fn encode(&mut self, pcm16k: &[i16], out: &mut Vec<u8>) {
        out.reserve(pcm16k.len() / 2 + 1);
        let mut rest = pcm16k;
        if let Some(first) = self.pending.take() {
            match rest.split_first() {
                Some((&second, tail)) => {
                    out.push(self.encode_pair(first, second));
                    rest = tail;
                }
                None => {
                    self.pending = Some(first);
                    return;
                }
            }
        }
        let mut pairs = rest.chunks_exact(2);
        for p in &mut pairs {
            if let [s0, s1] = *p {
                out.push(self.encode_pair(s0, s1));
            }
        }
        self.pending = pairs.remainder().first().copied();
    }

    fn encode_pair(&mut self, s0: i16, s1: i16) -> u8 {
        // Transmit QMF.
        self.x.copy_within(2.., 0);
        self.x[22] = i32::from(s0);
        self.x[23] = i32::from(s1);
        let (sumodd, sumeven) = qmf(&self.x);
        let xlow = (sumeven + sumodd) >> 14;
        let xhigh = (sumeven - sumodd) >> 14;

        // Low band: subtract prediction, 6-bit quantiser.
        let low = &mut self.band[0];
        let el = sat(xlow - low.s);
        let wd = if el >= 0 { el } else { -(el + 1) };
        let mut i = 1;
        while i < 30 && wd >= (lut(&Q6, i) * low.det) >> 12 {
            i += 1;
        }
        let ilow = if el < 0 { lut(&ILN, i) } else { lut(&ILP, i) };
        let ril = (ilow >> 2) as usize & 0xf;
        let dlow = (low.det * lut(&QM4, ril)) >> 15;
        low.scale(lut(&WL_RL42, ril), 18432, 8);
        low.block4(dlow);

        // High band: 2-bit quantiser.
        let high = &mut self.band[1];
        let eh = sat(xhigh - high.s);
        let wd = if eh >= 0 { eh } else { -(eh + 1) };
        let mih = if wd >= (564 * high.det) >> 12 { 2 } else { 1 };
        let ihigh = if eh < 0 {
            lut(&IHN, mih)
        } else {
            lut(&IHP, mih)
        };
        let ihigh_u = ihigh as usize & 0x3;
        let dhigh = (high.det * lut(&QM2, ihigh_u)) >> 15;
        high.scale(lut(&WH_RH2, ihigh_u), 22528, 10);
        high.block4(dhigh);

        ((ihigh << 6) | ilow) as u8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composed_scale_tables_match_the_reference() {
        for (i, &r) in RL42.iter().enumerate() {
            assert_eq!(WL_RL42[i], WL[r as usize]);
        }
        for (i, &r) in RH2.iter().enumerate() {
            assert_eq!(WH_RH2[i], WH[r as usize]);
        }
    }
    use crate::codec::test_util::{dominant_freq, rms, tone};

    #[test]
    fn tone_round_trip() {
        let pcm = tone(1000.0, 16_000, 16_000, 8000.0);
        let mut enc = G722Encoder::new();
        let mut bytes = Vec::new();
        // Feed in odd-sized chunks to exercise the pending sample.
        for chunk in pcm.chunks(321) {
            enc.encode(chunk, &mut bytes);
        }
        assert_eq!(bytes.len(), 8000);
        let mut dec = G722Decoder::new();
        let mut out = Vec::new();
        assert_eq!(dec.decode(&bytes, &mut out).unwrap(), 16_000);
        let steady = &out[1600..];
        let f = dominant_freq(steady, 16_000);
        assert!((f - 1000.0).abs() < 20.0, "freq {f}");
        let r_in = rms(&pcm[1600..]);
        let r_out = rms(steady);
        assert!((r_out / r_in - 1.0).abs() < 0.15, "rms {r_in} -> {r_out}");
    }

    #[test]
    fn silence_stays_quiet_and_garbage_is_safe() {
        let mut enc = G722Encoder::new();
        let mut bytes = Vec::new();
        enc.encode(&[0; 320], &mut bytes);
        let mut dec = G722Decoder::new();
        let mut out = Vec::new();
        dec.decode(&bytes, &mut out).unwrap();
        assert!(rms(&out) < 50.0);
        // Every code byte, repeatedly, including full-scale extremes.
        let garbage: Vec<u8> = (0..20_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        out.clear();
        assert_eq!(dec.decode(&garbage, &mut out).unwrap(), 40_000);
        let mut enc = G722Encoder::new();
        let loud: Vec<i16> = (0..4000)
            .map(|i| if i % 3 == 0 { i16::MIN } else { i16::MAX })
            .collect();
        bytes.clear();
        enc.encode(&loud, &mut bytes);
        assert_eq!(bytes.len(), 2000);
    }
}
