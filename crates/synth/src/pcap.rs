//! A small classic-pcap (libpcap 2.4) writer: global header, then one record per frame.
//!
//! Written little-endian with microsecond or nanosecond timestamps; every capture tool
//! reads this format.

use std::io::Write;

use vcontap_wire::{LinkType, Timestamp};

/// Snap length announced in the global header; frames are never cut, so this is just the
/// largest frame the generator can build (64 KiB IP packet plus link headers).
pub const SNAPLEN: u32 = 65_535 + 18;

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
pub enum PcapError {
    /// The output failed.
    #[error("pcap write failed: {0}")]
    Io(#[from] std::io::Error),
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
    /// Writes the global header and returns the writer.
    pub fn new(mut out: W, link: LinkType, resolution: Resolution) -> Result<Self, PcapError> {
        let magic = match resolution {
            Resolution::Micros => MAGIC_MICROS,
            Resolution::Nanos => MAGIC_NANOS,
        };
        let mut header = [0u8; 24];
        header[0..4].copy_from_slice(&magic.to_le_bytes());
        header[4..6].copy_from_slice(&2u16.to_le_bytes());
        header[6..8].copy_from_slice(&4u16.to_le_bytes());
        // thiszone and sigfigs stay 0.
        header[16..20].copy_from_slice(&SNAPLEN.to_le_bytes());
        header[20..24].copy_from_slice(&link.0.to_le_bytes());
        out.write_all(&header)?;
        Ok(PcapWriter { out, resolution })
    }

    /// Appends one record; `frame` is stored whole (captured length = original length).
    pub fn write_packet(&mut self, ts: Timestamp, frame: &[u8]) -> Result<(), PcapError> {
        let secs = u32::try_from(ts.secs()).map_err(|_| PcapError::Timestamp(ts))?;
        let frac = match self.resolution {
            Resolution::Micros => ts.subsec_nanos() / 1000,
            Resolution::Nanos => ts.subsec_nanos(),
        };
        let len = u32::try_from(frame.len())
            .ok()
            .filter(|&l| l <= SNAPLEN)
            .ok_or(PcapError::FrameTooLong(frame.len()))?;
        let mut rec = [0u8; 16];
        rec[0..4].copy_from_slice(&secs.to_le_bytes());
        rec[4..8].copy_from_slice(&frac.to_le_bytes());
        rec[8..12].copy_from_slice(&len.to_le_bytes());
        rec[12..16].copy_from_slice(&len.to_le_bytes());
        self.out.write_all(&rec)?;
        self.out.write_all(frame)?;
        Ok(())
    }

    /// Flushes and returns the inner writer.
    pub fn into_inner(mut self) -> Result<W, PcapError> {
        self.out.flush()?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_record_layout() {
        let mut w = PcapWriter::new(Vec::new(), LinkType::ETHERNET, Resolution::Micros).unwrap();
        w.write_packet(Timestamp::from_parts(1_767_225_600, 123_456_789), b"abc")
            .unwrap();
        let out = w.into_inner().unwrap();
        assert_eq!(out.len(), 24 + 16 + 3);
        assert_eq!(&out[0..4], &[0xD4, 0xC3, 0xB2, 0xA1]);
        assert_eq!(u32::from_le_bytes(out[20..24].try_into().unwrap()), 1);
        assert_eq!(
            u32::from_le_bytes(out[24..28].try_into().unwrap()),
            1_767_225_600
        );
        assert_eq!(u32::from_le_bytes(out[28..32].try_into().unwrap()), 123_456);
        assert_eq!(u32::from_le_bytes(out[32..36].try_into().unwrap()), 3);
        assert_eq!(&out[40..], b"abc");
    }

    #[test]
    fn nanos_and_errors() {
        let mut w = PcapWriter::new(Vec::new(), LinkType::RAW, Resolution::Nanos).unwrap();
        w.write_packet(Timestamp::from_parts(5, 7), b"").unwrap();
        assert!(matches!(
            w.write_packet(Timestamp(-1), b"x"),
            Err(PcapError::Timestamp(_))
        ));
        assert!(matches!(
            w.write_packet(Timestamp::from_parts(i64::from(u32::MAX) + 1, 0), b"x"),
            Err(PcapError::Timestamp(_))
        ));
        let huge = vec![0u8; SNAPLEN as usize + 1];
        assert!(matches!(
            w.write_packet(Timestamp(0), &huge),
            Err(PcapError::FrameTooLong(_))
        ));
        let out = w.into_inner().unwrap();
        assert_eq!(&out[0..4], &MAGIC_NANOS.to_le_bytes());
        assert_eq!(u32::from_le_bytes(out[28..32].try_into().unwrap()), 7);
        assert_eq!(out.len(), 24 + 16);
    }
}
