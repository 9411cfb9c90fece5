//! Bounds-checked fixed-width integer readers, the one set every vcontap parser uses
//! (capture files, link/IP/transport headers, RTP/RTCP, RFC 4733).
//!
//! Each reader returns `None` when the bytes are not all there, so a parser turns a short
//! input into a counted skip with `?` or `let ... else` instead of indexing. They compile
//! to one bounds check and an unaligned load: hot paths (wire decode, RTP parse) use them
//! directly.

/// The `N` bytes at `at`, if all in bounds.
#[inline]
pub fn array_at<const N: usize>(b: &[u8], at: usize) -> Option<[u8; N]> {
    b.get(at..at.checked_add(N)?)?.try_into().ok()
}

/// Big-endian (network order) u16 at `at`.
#[inline]
pub fn be16(b: &[u8], at: usize) -> Option<u16> {
    array_at(b, at).map(u16::from_be_bytes)
}

/// Big-endian (network order) u32 at `at`.
#[inline]
pub fn be32(b: &[u8], at: usize) -> Option<u32> {
    array_at(b, at).map(u32::from_be_bytes)
}

/// Little-endian u32 at `at`.
#[inline]
pub fn le32(b: &[u8], at: usize) -> Option<u32> {
    array_at(b, at).map(u32::from_le_bytes)
}

/// u16 at `at` in the given byte order (capture files declare theirs in the header).
#[inline]
pub fn u16_at(b: &[u8], at: usize, big_endian: bool) -> Option<u16> {
    let s = array_at(b, at)?;
    Some(if big_endian {
        u16::from_be_bytes(s)
    } else {
        u16::from_le_bytes(s)
    })
}

/// u32 at `at` in the given byte order.
#[inline]
pub fn u32_at(b: &[u8], at: usize, big_endian: bool) -> Option<u32> {
    let s = array_at(b, at)?;
    Some(if big_endian {
        u32::from_be_bytes(s)
    } else {
        u32::from_le_bytes(s)
    })
}

/// i64 at `at` in the given byte order.
#[inline]
pub fn i64_at(b: &[u8], at: usize, big_endian: bool) -> Option<i64> {
    let s = array_at(b, at)?;
    Some(if big_endian {
        i64::from_be_bytes(s)
    } else {
        i64::from_le_bytes(s)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_in_bounds_and_refuses_short_input() {
        let b = [0x12, 0x34, 0x56, 0x78, 0x9A];
        assert_eq!(be16(&b, 0), Some(0x1234));
        assert_eq!(be16(&b, 3), Some(0x789A));
        assert_eq!(be16(&b, 4), None);
        assert_eq!(be32(&b, 1), Some(0x3456_789A));
        assert_eq!(be32(&b, 2), None);
        assert_eq!(le32(&b, 0), Some(0x7856_3412));
        assert_eq!(u16_at(&b, 0, false), Some(0x3412));
        assert_eq!(u32_at(&b, 0, true), Some(0x1234_5678));
        assert_eq!(i64_at(&[0xFF; 8], 0, true), Some(-1));
        assert_eq!(i64_at(&[1, 0, 0, 0, 0, 0, 0, 0], 0, false), Some(1));
        assert_eq!(i64_at(&b, 0, false), None);
        // An offset near usize::MAX must not wrap around.
        assert_eq!(be16(&b, usize::MAX), None);
        assert_eq!(array_at::<0>(&b, 5), Some([]));
    }
}
