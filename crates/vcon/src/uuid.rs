//! UUIDv8 as the vCon core draft asks (§2.1 of the shared digest): a v7-like layout whose
//! last 62 bits are the high 62 bits of SHA-1 of the host's FQHN.
//!
//! Bits, most significant first: 48-bit Unix milliseconds, version `8`, 12 bits `rand_a`,
//! variant `0b10`, 62 bits of host hash. Two vCons from one host in the same millisecond
//! differ only in `rand_a`, so the engine hands out `rand_a` monotonically (see
//! [`UuidV8`]). Built by hand: formatting 16 bytes is shorter than a dependency.

use sha1::{Digest, Sha1};

/// The high 62 bits of SHA-1(`fqhn`), the tail of every vCon uuid made on this host.
pub fn host_hash(fqhn: &str) -> u64 {
    let d = Sha1::digest(fqhn.as_bytes());
    // A SHA-1 digest has 20 bytes, so the first 8 are always there.
    u64::from_be_bytes(d.first_chunk().copied().unwrap_or_default()) >> 2
}

/// Lays out a UUIDv8 from its fields and formats it canonically (8-4-4-4-12, lowercase).
pub fn uuid_v8(unix_ms: u64, rand_a: u16, host_hash: u64) -> String {
    let v: u128 = ((unix_ms as u128 & 0xFFFF_FFFF_FFFF) << 80)
        | (0x8u128 << 76)
        | (((rand_a & 0x0FFF) as u128) << 64)
        | (0b10u128 << 62)
        | (host_hash as u128 & ((1u128 << 62) - 1));
    let h = format!("{v:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Hands out unique UUIDv8s in time order for one engine shard.
///
/// `rand_a` is `shard` in the top 3 bits and a per-millisecond counter in the low 9; when a
/// millisecond's counter is exhausted the next id borrows the following millisecond, as
/// RFC 9562 §6.2 allows for monotonic generators. Ids are therefore unique per host as long
/// as shards are numbered below 8, and deterministic for a given capture (a replay of the
/// same capture produces the same ids, which makes stores idempotent).
#[derive(Debug, Clone)]
pub struct UuidV8 {
    host: u64,
    shard: u16,
    last_ms: u64,
    counter: u16,
}

impl UuidV8 {
    /// A generator for `fqhn`, shard `shard` (0..8).
    pub fn new(fqhn: &str, shard: u16) -> Self {
        UuidV8 {
            host: host_hash(fqhn),
            shard: shard & 0x7,
            last_ms: 0,
            counter: 0,
        }
    }

    /// The next id for an event at `unix_ms`.
    pub fn next(&mut self, unix_ms: u64) -> String {
        if unix_ms > self.last_ms {
            self.last_ms = unix_ms;
            self.counter = 0;
        } else if self.counter >= 0x1FF {
            self.last_ms += 1;
            self.counter = 0;
        } else {
            self.counter += 1;
        }
        uuid_v8(self.last_ms, (self.shard << 9) | self.counter, self.host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_has_version_and_variant() {
        let u = uuid_v8(0x0192_3456_789a, 0xabc, host_hash("capture.example.com"));
        assert_eq!(u.len(), 36);
        assert_eq!(&u[0..8], "01923456");
        assert_eq!(&u[9..13], "789a");
        assert_eq!(&u[14..15], "8", "version nibble");
        assert_eq!(&u[15..18], "abc");
        let variant = u8::from_str_radix(&u[19..20], 16).unwrap();
        assert_eq!(variant & 0b1100, 0b1000, "RFC 9562 variant");
    }

    #[test]
    fn generator_is_unique_and_ordered() {
        let mut g = UuidV8::new("h", 1);
        let mut seen = std::collections::HashSet::new();
        let mut last = String::new();
        for i in 0..2000u64 {
            let u = g.next(1000 + i / 1000);
            assert!(u > last, "monotonic");
            assert!(seen.insert(u.clone()));
            last = u;
        }
    }
}
