//! Classic pcap writer, used by the traffic synthesizer and by tests to build captures.
//!
//! Writes little-endian libpcap files with µs (`0xa1b2c3d4`) or ns (`0xa1b23c4d`) magic.

use std::io::{self, Write};

use crate::{LinkType, Timestamp};

/// Snap length written in the file header: the tcpdump default, so every frame fits.
const SNAPLEN: u32 = 262_144;

/// Streaming classic pcap writer.
#[derive(Debug)]
pub struct PcapWriter<W: Write> {
    w: W,
    nanos: bool,
}

impl<W: Write> PcapWriter<W> {
    /// Writes the file header. `nanos` selects nanosecond timestamps.
    pub fn new(mut w: W, link: LinkType, nanos: bool) -> io::Result<Self> {
        let magic: u32 = if nanos { 0xA1B2_3C4D } else { 0xA1B2_C3D4 };
        let mut h = [0u8; 24];
        h[0..4].copy_from_slice(&magic.to_le_bytes());
        h[4..6].copy_from_slice(&2u16.to_le_bytes());
        h[6..8].copy_from_slice(&4u16.to_le_bytes());
        h[16..20].copy_from_slice(&SNAPLEN.to_le_bytes());
        h[20..24].copy_from_slice(&link.0.to_le_bytes());
        w.write_all(&h)?;
        Ok(PcapWriter { w, nanos })
    }

    /// Appends one frame captured whole (`orig_len == data.len()`).
    ///
    /// Fails with `InvalidInput` for timestamps before 1970 or after 2106 (not
    /// representable in classic pcap) and frames longer than `u32::MAX`.
    pub fn write_packet(&mut self, ts: Timestamp, data: &[u8]) -> io::Result<()> {
        let secs = u32::try_from(ts.secs())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "timestamp out of range"))?;
        let frac = if self.nanos {
            ts.subsec_nanos()
        } else {
            ts.subsec_nanos() / 1000
        };
        let len = u32::try_from(data.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame too long"))?;
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&secs.to_le_bytes());
        h[4..8].copy_from_slice(&frac.to_le_bytes());
        h[8..12].copy_from_slice(&len.to_le_bytes());
        h[12..16].copy_from_slice(&len.to_le_bytes());
        self.w.write_all(&h)?;
        self.w.write_all(data)
    }

    /// Flushes the underlying writer.
    pub fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }

    /// Returns the underlying writer.
    pub fn into_inner(self) -> W {
        self.w
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PcapReader;

    #[test]
    fn roundtrip_us_and_ns() {
        for nanos in [false, true] {
            let mut w = PcapWriter::new(Vec::new(), LinkType::RAW, nanos).unwrap();
            let ts = Timestamp::from_parts(1_700_000_000, 123_456_789);
            w.write_packet(ts, b"\x45hello").unwrap();
            w.write_packet(ts.add_millis(5), b"").unwrap();
            let bytes = w.into_inner();
            let mut r = PcapReader::new(&bytes[..]).unwrap();
            assert_eq!(r.link_type(), Some(LinkType::RAW));
            let p = r.next_packet().unwrap().unwrap();
            let want = if nanos {
                ts
            } else {
                Timestamp::from_parts(1_700_000_000, 123_456_000)
            };
            assert_eq!(p.ts, want);
            assert_eq!(p.data, b"\x45hello");
            assert_eq!(p.orig_len, 6);
            assert!(r.next_packet().unwrap().unwrap().data.is_empty());
            assert!(r.next_packet().unwrap().is_none());
        }
    }

    #[test]
    fn rejects_unrepresentable_timestamps() {
        let mut w = PcapWriter::new(Vec::new(), LinkType::ETHERNET, false).unwrap();
        assert!(w.write_packet(Timestamp(-1), b"x").is_err());
        assert!(w
            .write_packet(Timestamp::from_parts(1 << 33, 0), b"x")
            .is_err());
    }
}
