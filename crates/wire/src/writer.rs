//! Classic pcap writer: the one the traffic synthesizer and the tests build captures with.
//!
//! Writes little-endian libpcap 2.4 files with µs (`0xa1b2c3d4`) or ns (`0xa1b23c4d`)
//! magic; every capture tool reads this format. It lives next to [`crate::PcapReader`] so
//! the two agree on the format, and it refuses records the reader would refuse.

use std::io::{self, Write};

use crate::{LinkType, Timestamp, MAX_RECORD_BYTES};

/// Snap length announced in the file header and the longest frame accepted: the reader's
/// [`MAX_RECORD_BYTES`] (the tcpdump default), so every file written reads back.
pub const SNAPLEN: u32 = MAX_RECORD_BYTES as u32;

/// Magic of microsecond-resolution files.
pub const MAGIC_MICROS: u32 = 0xA1B2_C3D4;
/// Magic of nanosecond-resolution files.
pub const MAGIC_NANOS: u32 = 0xA1B2_3C4D;

/// Timestamp resolution of a pcap file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// Microseconds (the classic, most widely supported form).
    Micros,
    /// Nanoseconds.
    Nanos,
}

/// Errors writing a pcap file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PcapWriteError {
    /// The output failed.
    #[error("pcap write failed: {0}")]
    Io(#[from] io::Error),
    /// The timestamp is before 1970 or after 2106 (32-bit seconds field).
    #[error("timestamp {0:?} does not fit a classic pcap record")]
    Timestamp(Timestamp),
    /// The frame is longer than [`SNAPLEN`].
    #[error("frame of {0} bytes exceeds the snap length")]
    FrameTooLong(usize),
}

/// Streams pcap records to any writer (wrap files in a `BufWriter`).
#[derive(Debug)]
pub struct PcapWriter<W: Write> {
    out: W,
    resolution: Resolution,
}

impl<W: Write> PcapWriter<W> {
    /// Writes the file header and returns the writer.
    pub fn new(mut out: W, link: LinkType, resolution: Resolution) -> Result<Self, PcapWriteError> {
        let magic = match resolution {
            Resolution::Micros => MAGIC_MICROS,
            Resolution::Nanos => MAGIC_NANOS,
        };
        // magic, version 2.4, thiszone 0, sigfigs 0, snaplen, link type.
        let mut header = [0u8; 24];
        header[0..4].copy_from_slice(&magic.to_le_bytes());
        header[4..6].copy_from_slice(&2u16.to_le_bytes());
        header[6..8].copy_from_slice(&4u16.to_le_bytes());
        header[16..20].copy_from_slice(&SNAPLEN.to_le_bytes());
        header[20..24].copy_from_slice(&link.0.to_le_bytes());
        out.write_all(&header)?;
        Ok(PcapWriter { out, resolution })
    }

    /// Appends one record; `frame` is stored whole (captured length = original length).
    pub fn write_packet(&mut self, ts: Timestamp, frame: &[u8]) -> Result<(), PcapWriteError> {
        let secs = u32::try_from(ts.secs()).map_err(|_| PcapWriteError::Timestamp(ts))?;
        let frac = match self.resolution {
            Resolution::Micros => ts.subsec_nanos() / 1000,
            Resolution::Nanos => ts.subsec_nanos(),
        };
        let len = u32::try_from(frame.len())
            .ok()
            .filter(|&l| l <= SNAPLEN)
            .ok_or(PcapWriteError::FrameTooLong(frame.len()))?;
        let mut rec = [0u8; 16];
        rec[0..4].copy_from_slice(&secs.to_le_bytes());
        rec[4..8].copy_from_slice(&frac.to_le_bytes());
        rec[8..12].copy_from_slice(&len.to_le_bytes());
        rec[12..16].copy_from_slice(&len.to_le_bytes());
        self.out.write_all(&rec)?;
        self.out.write_all(frame)?;
        Ok(())
    }

    /// Flushes the underlying writer.
    pub fn flush(&mut self) -> Result<(), PcapWriteError> {
        Ok(self.out.flush()?)
    }

    /// Flushes and returns the underlying writer.
    pub fn into_inner(mut self) -> Result<W, PcapWriteError> {
        self.out.flush()?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PcapReader;

    #[test]
    fn roundtrip_us_and_ns() {
        for resolution in [Resolution::Micros, Resolution::Nanos] {
            let mut w = PcapWriter::new(Vec::new(), LinkType::RAW, resolution).unwrap();
            let ts = Timestamp::from_parts(1_700_000_000, 123_456_789);
            w.write_packet(ts, b"\x45hello").unwrap();
            w.write_packet(ts.add_millis(5), b"").unwrap();
            let bytes = w.into_inner().unwrap();
            let mut r = PcapReader::new(&bytes[..]).unwrap();
            assert_eq!(r.link_type(), Some(LinkType::RAW));
            let p = r.next_packet().unwrap().unwrap();
            let want = match resolution {
                Resolution::Nanos => ts,
                Resolution::Micros => Timestamp::from_parts(1_700_000_000, 123_456_000),
            };
            assert_eq!(p.ts, want);
            assert_eq!(p.data, b"\x45hello");
            assert_eq!(p.orig_len, 6);
            assert!(r.next_packet().unwrap().unwrap().data.is_empty());
            assert!(r.next_packet().unwrap().is_none());
        }
    }

    #[test]
    fn header_and_record_layout() {
        let mut w = PcapWriter::new(Vec::new(), LinkType::ETHERNET, Resolution::Micros).unwrap();
        w.write_packet(Timestamp::from_parts(1_767_225_600, 123_456_789), b"abc")
            .unwrap();
        let out = w.into_inner().unwrap();
        assert_eq!(out.len(), 24 + 16 + 3);
        assert_eq!(&out[0..4], &[0xD4, 0xC3, 0xB2, 0xA1]);
        assert_eq!(&out[4..8], &[2, 0, 4, 0]);
        assert_eq!(&out[16..20], &SNAPLEN.to_le_bytes());
        assert_eq!(&out[20..24], &1u32.to_le_bytes());
        assert_eq!(&out[24..28], &1_767_225_600u32.to_le_bytes());
        assert_eq!(&out[28..32], &123_456u32.to_le_bytes());
        assert_eq!(&out[32..36], &3u32.to_le_bytes());
        assert_eq!(&out[36..40], &3u32.to_le_bytes());
        assert_eq!(&out[40..], b"abc");
    }

    #[test]
    fn rejects_unrepresentable_records() {
        let mut w = PcapWriter::new(Vec::new(), LinkType::ETHERNET, Resolution::Nanos).unwrap();
        assert!(matches!(
            w.write_packet(Timestamp(-1), b"x"),
            Err(PcapWriteError::Timestamp(_))
        ));
        assert!(matches!(
            w.write_packet(Timestamp::from_parts(i64::from(u32::MAX) + 1, 0), b"x"),
            Err(PcapWriteError::Timestamp(_))
        ));
        let huge = vec![0u8; SNAPLEN as usize + 1];
        assert!(matches!(
            w.write_packet(Timestamp(0), &huge),
            Err(PcapWriteError::FrameTooLong(_))
        ));
        // The largest accepted frame reads back.
        let big = vec![7u8; SNAPLEN as usize];
        w.write_packet(Timestamp::from_parts(5, 7), &big).unwrap();
        let out = w.into_inner().unwrap();
        assert_eq!(&out[0..4], &MAGIC_NANOS.to_le_bytes());
        let mut r = PcapReader::new(&out[..]).unwrap();
        let p = r.next_packet().unwrap().unwrap();
        assert_eq!(p.ts, Timestamp::from_parts(5, 7));
        assert_eq!(p.data.len(), big.len());
        assert!(r.next_packet().unwrap().is_none());
    }
}
