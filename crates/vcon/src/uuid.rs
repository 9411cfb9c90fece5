//! UUIDv8 as the vCon core draft asks (§2.1 of the shared digest): a v7-like layout whose
//! last 62 bits are the high 62 bits of SHA-1 of the host's FQHN.
//!
//! Bits, most significant first: 48-bit Unix milliseconds, version `8`, 12 bits `rand_a`,
//! variant `0b10`, 62 bits of host hash. Two vCons from one host in the same millisecond
//! differ only in `rand_a`, which [`CallUuids`] derives from the call's identity. Built
//! by hand: formatting 16 bytes is shorter than a dependency.

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

/// Derives each call's UUIDv8 from the host and the call's identity.
///
/// `rand_a` (the 12 free bits of the draft's layout) is taken from SHA-1 over the host
/// name, the Call-ID, the caller's From tag and the first INVITE's capture time in
/// nanoseconds, so
///
/// - the same call gets the same uuid on every replay, with any shard count and in any
///   process (stores upsert by uuid, so re-delivery is idempotent);
/// - different calls starting in the same millisecond (other shards, other processes,
///   other captures) differ unless their 12 hash bits collide (1 in 4096 per such pair).
///   Within one engine a collision with a uuid handed out in the last
///   [`RECENT_UUIDS`] is detected and resolved by stepping `rand_a`, deterministically.
///
/// The tail stays the draft's host hash, so the uuid still names the host.
#[derive(Debug, Clone)]
pub struct CallUuids {
    host_name: String,
    host: u64,
    recent: std::collections::VecDeque<u128>,
    recent_set: std::collections::HashSet<u128>,
}

/// Uuids remembered per engine for collision detection.
pub const RECENT_UUIDS: usize = 65_536;

impl CallUuids {
    /// A generator for `fqhn`.
    pub fn new(fqhn: &str) -> Self {
        CallUuids {
            host_name: fqhn.to_string(),
            host: host_hash(fqhn),
            recent: std::collections::VecDeque::new(),
            recent_set: std::collections::HashSet::new(),
        }
    }

    /// The uuid of the call with this identity, first seen at `invite_ns`.
    pub fn for_call(&mut self, call_id: &str, caller_tag: &str, invite_ns: i64) -> String {
        let mut h = Sha1::new();
        for part in [
            self.host_name.as_bytes(),
            call_id.as_bytes(),
            caller_tag.as_bytes(),
        ] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
        h.update(invite_ns.to_be_bytes());
        let d = h.finalize();
        let mut rand_a = u16::from_be_bytes([
            d.first().copied().unwrap_or(0),
            d.get(1).copied().unwrap_or(0),
        ]) & 0x0FFF;
        let ms = u64::try_from(invite_ns.max(0) / 1_000_000).unwrap_or(0);
        let key = |r: u16| ((ms as u128) << 16) | r as u128;
        let mut tries = 0;
        while self.recent_set.contains(&key(rand_a)) && tries < 0x1000 {
            rand_a = (rand_a + 1) & 0x0FFF;
            tries += 1;
        }
        if self.recent.len() >= RECENT_UUIDS {
            if let Some(old) = self.recent.pop_front() {
                self.recent_set.remove(&old);
            }
        }
        self.recent.push_back(key(rand_a));
        self.recent_set.insert(key(rand_a));
        uuid_v8(ms, rand_a, self.host)
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
    fn call_uuids_are_deterministic_and_unique() {
        let t = 1_767_225_600_123_456_789i64;
        // The same call gives the same uuid in any generator (shard, process, replay).
        let a = CallUuids::new("h.example").for_call("c1@x", "tag1", t);
        let b = CallUuids::new("h.example").for_call("c1@x", "tag1", t);
        assert_eq!(a, b);
        assert_eq!(&a[0..8], &format!("{:012x}", t / 1_000_000)[0..8]);
        // Other hosts, calls, tags or times differ.
        assert_ne!(
            a,
            CallUuids::new("other.example").for_call("c1@x", "tag1", t)
        );
        assert_ne!(a, CallUuids::new("h.example").for_call("c2@x", "tag1", t));
        // Thousands of calls in one millisecond on one engine never collide.
        let mut g = CallUuids::new("h.example");
        let mut seen = std::collections::HashSet::new();
        for i in 0..4096 {
            assert!(seen.insert(g.for_call(&format!("call-{i}"), "t", t)));
        }
    }
}
