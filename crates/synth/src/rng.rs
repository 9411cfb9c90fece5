//! Tiny deterministic random numbers (SplitMix64) so captures are reproducible from a seed
//! without pulling in the `rand` crate.

/// SplitMix64 generator (Steele, Lea, Flood 2014): 64-bit state, one add and a mix per draw.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// An independent generator for one call of a run: mixing the index in keeps each
    /// call's draws stable no matter how many other calls exist.
    pub(crate) fn for_call(seed: u64, index: u32, stream: u64) -> Self {
        let mut base = Rng(seed ^ 0x5EED_CA11_0000_0000);
        let a = base.next_u64();
        Rng(a ^ u64::from(index).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ stream.rotate_left(32))
    }

    /// Next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Next 32 random bits.
    pub(crate) fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    /// Uniform value in `0..bound` (0 when `bound` is 0); the modulo bias is irrelevant here.
    pub(crate) fn below(&mut self, bound: u64) -> u64 {
        if bound == 0 {
            0
        } else {
            self.next_u64() % bound
        }
    }

    /// `n` random bytes as lowercase hex (for tags, branches, Call-IDs).
    pub(crate) fn hex(&mut self, n: usize) -> String {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(n * 2);
        let mut bits = 0u64;
        for i in 0..n {
            if i % 8 == 0 {
                bits = self.next_u64();
            }
            let byte = (bits & 0xFF) as usize;
            bits >>= 8;
            // Nibbles index the 16 digits: `get` never falls back.
            let digit = |n: usize| char::from(DIGITS.get(n).copied().unwrap_or(b'0'));
            s.push(digit(byte >> 4));
            s.push(digit(byte & 0xF));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_distinct_per_call() {
        let a: Vec<u64> = (0..4).map(|_| Rng::new(7).next_u64()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        let mut x = Rng::for_call(7, 1, 0);
        let mut y = Rng::for_call(7, 2, 0);
        let mut z = Rng::for_call(7, 1, 1);
        let xv = x.next_u64();
        assert_ne!(xv, y.next_u64());
        assert_ne!(xv, z.next_u64());
        assert_eq!(Rng::for_call(7, 1, 0).next_u64(), xv);
    }

    #[test]
    fn below_and_hex() {
        let mut r = Rng::new(3);
        assert_eq!(r.below(0), 0);
        assert!((0..1000).all(|_| r.below(10) < 10));
        let h = r.hex(16);
        assert_eq!(h.len(), 32);
        assert!(h.bytes().all(|b| b.is_ascii_hexdigit()));
    }
}
