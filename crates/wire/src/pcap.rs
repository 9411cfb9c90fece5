//! Streaming capture-file reader: classic pcap and pcapng.
//!
//! Written by hand rather than with `pcap-parser`: the subset vcontap needs (classic pcap in
//! both byte orders with µs/ns/modified records; pcapng SHB/IDB/EPB/SPB/OPB with
//! `if_tsresol`/`if_tsoffset`) is a few hundred lines, and owning it lets us guarantee the
//! hostile-input properties we need: one bounded, reused buffer (the file is never
//! materialised), no allocation sized by a length field before that length was checked
//! against [`MAX_RECORD_BYTES`], and clean errors instead of panics on truncation.

use std::io::{self, Read};

use crate::bytes::{i64_at, u16_at, u32_at};
use crate::{LinkType, RawPacket, Timestamp, MAGIC_MICROS, MAGIC_NANOS};

/// Largest record (classic pcap packet or pcapng packet block) we buffer.
///
/// The largest snap length tcpdump/dumpcap use is 262144 bytes, so every real capture fits;
/// a larger claimed length means a corrupt file, and we refuse to allocate for it.
pub const MAX_RECORD_BYTES: usize = 256 * 1024;

/// Room for pcapng block framing and packet-block headers on top of [`MAX_RECORD_BYTES`].
const BLOCK_OVERHEAD: usize = 64;

/// Most interfaces we track in one pcapng section; later IDBs are ignored (their packets
/// counted as skipped) so a hostile file cannot grow the table without bound.
const MAX_INTERFACES: usize = 1024;

/// Size of the reader's own buffer, and so the most bytes requested per `read` call. The
/// reader is its own buffer: wrap a `File` directly, not in a `BufReader` (that would copy
/// every byte twice). 1 MiB keeps syscalls rare at millions of packets per second.
const READ_CHUNK: usize = 1024 * 1024;

/// Errors from [`PcapReader`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PcapError {
    /// The underlying reader failed.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// The input is neither classic pcap nor pcapng.
    #[error("not a pcap or pcapng capture")]
    UnknownFormat,
    /// The input ends in the middle of a header or record.
    #[error("capture ends in the middle of a record")]
    Truncated,
    /// A classic pcap record claims more bytes than [`MAX_RECORD_BYTES`].
    #[error("record of {0} bytes exceeds the {MAX_RECORD_BYTES}-byte limit")]
    RecordTooLarge(u64),
    /// A pcapng block violates the format (bad length, bad byte-order magic).
    #[error("malformed pcapng block: {0}")]
    Malformed(&'static str),
}

/// Which container a [`PcapReader`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptureFormat {
    /// Classic libpcap format.
    Pcap,
    /// pcapng.
    PcapNg,
}

/// Timestamp resolution of a pcapng interface (`if_tsresol`).
#[derive(Debug, Clone, Copy)]
enum Resol {
    /// Units of 10^-n seconds.
    Pow10(u8),
    /// Units of 2^-n seconds.
    Pow2(u8),
}

#[derive(Debug, Clone, Copy)]
struct Iface {
    link: LinkType,
    resol: Resol,
    offset_secs: i64,
}

#[derive(Debug)]
enum Format {
    Classic {
        swapped: bool,
        nanos: bool,
        link: LinkType,
        /// 16 normally, 24 for the "modified" (Kuznetzov) format.
        rec_hdr: usize,
    },
    Ng {
        big_endian: bool,
        ifaces: Vec<Iface>,
    },
}

/// Streaming reader over a classic pcap or pcapng capture.
///
/// Reads through one reused buffer of at most [`MAX_RECORD_BYTES`] plus a little framing,
/// whatever the file size.
#[derive(Debug)]
pub struct PcapReader<R: Read> {
    r: R,
    buf: Vec<u8>,
    pos: usize,
    end: usize,
    eof: bool,
    fmt: Format,
    last_ts: Timestamp,
    skipped: u64,
}

const PCAPNG_SHB: u32 = 0x0A0D_0D0A;
const PCAPNG_IDB: u32 = 1;
const PCAPNG_OPB: u32 = 2;
const PCAPNG_SPB: u32 = 3;
const PCAPNG_EPB: u32 = 6;
const PCAPNG_BOM: u32 = 0x1A2B_3C4D;

/// Converts a pcapng timestamp in interface units to nanoseconds, saturating.
fn units_to_nanos(units: u64, resol: Resol) -> i64 {
    let u = u128::from(units);
    let ns: u128 = match resol {
        Resol::Pow10(e) if e <= 9 => u * 10u128.pow(u32::from(9 - e)),
        Resol::Pow10(e) => {
            let d = u32::from(e - 9);
            if d > 38 {
                0
            } else {
                u / 10u128.pow(d)
            }
        }
        Resol::Pow2(e) => (u * 1_000_000_000) >> e.min(127),
    };
    i64::try_from(ns).unwrap_or(i64::MAX)
}

impl<R: Read> PcapReader<R> {
    /// Sniffs the magic number and reads the file header.
    ///
    /// Returns [`PcapError::UnknownFormat`] for anything that is not pcap/pcapng (NetMon,
    /// snoop, ERF, text, empty input).
    pub fn new(r: R) -> Result<Self, PcapError> {
        let mut me = PcapReader {
            r,
            buf: vec![0; READ_CHUNK],
            pos: 0,
            end: 0,
            eof: false,
            fmt: Format::Ng {
                big_endian: false,
                ifaces: Vec::new(),
            },
            last_ts: Timestamp(0),
            skipped: 0,
        };
        if !me.fill(4)? {
            return Err(PcapError::UnknownFormat);
        }
        let head = me.avail();
        let magic_le = u32_at(head, 0, false).ok_or(PcapError::UnknownFormat)?;
        let classic = match magic_le {
            MAGIC_MICROS => Some((false, false, 16)),
            MAGIC_NANOS => Some((false, true, 16)),
            0xA1B2_CD34 => Some((false, false, 24)),
            0xD4C3_B2A1 => Some((true, false, 16)),
            0x4D3C_B2A1 => Some((true, true, 16)),
            0x34CD_B2A1 => Some((true, false, 24)),
            _ => None,
        };
        if let Some((swapped, nanos, rec_hdr)) = classic {
            if !me.fill(24)? {
                return Err(PcapError::Truncated);
            }
            // Magic read little-endian: "swapped" means the file is big-endian.
            let be = swapped;
            let raw_link = u32_at(me.avail(), 20, be).ok_or(PcapError::Truncated)?;
            // Upper bits carry FCS length / reserved flags; the link type is the low 16 bits.
            let link = LinkType(raw_link & 0xFFFF);
            me.pos += 24;
            me.fmt = Format::Classic {
                swapped,
                nanos,
                link,
                rec_hdr,
            };
            return Ok(me);
        }
        if magic_le == PCAPNG_SHB {
            if !me.fill(12)? {
                return Err(PcapError::UnknownFormat);
            }
            let bom = u32_at(me.avail(), 8, false).ok_or(PcapError::UnknownFormat)?;
            let big_endian = match bom {
                PCAPNG_BOM => false,
                0x4D3C_2B1A => true,
                _ => return Err(PcapError::UnknownFormat),
            };
            me.fmt = Format::Ng {
                big_endian,
                ifaces: Vec::new(),
            };
            return Ok(me);
        }
        Err(PcapError::UnknownFormat)
    }

    /// The container format found by [`PcapReader::new`].
    pub fn format(&self) -> CaptureFormat {
        match self.fmt {
            Format::Classic { .. } => CaptureFormat::Pcap,
            Format::Ng { .. } => CaptureFormat::PcapNg,
        }
    }

    /// Link type of a classic pcap file, or of interface 0 of the current pcapng section.
    pub fn link_type(&self) -> Option<LinkType> {
        match &self.fmt {
            Format::Classic { link, .. } => Some(*link),
            Format::Ng { ifaces, .. } => ifaces.first().map(|i| i.link),
        }
    }

    /// Packet records skipped so far (pcapng blocks over the size cap, packets on an
    /// unknown interface). Unknown non-packet blocks are not counted.
    pub fn skipped_records(&self) -> u64 {
        self.skipped
    }

    fn avail(&self) -> &[u8] {
        self.buf.get(self.pos..self.end).unwrap_or(&[])
    }

    /// Ensures at least `n` unread bytes are buffered; `false` at end of input.
    fn fill(&mut self, n: usize) -> Result<bool, PcapError> {
        if self.end - self.pos >= n {
            return Ok(true);
        }
        if self.buf.len() - self.pos < n {
            self.buf.copy_within(self.pos..self.end, 0);
            self.end -= self.pos;
            self.pos = 0;
            if self.buf.len() < n {
                // n is bounded by MAX_RECORD_BYTES + BLOCK_OVERHEAD by every caller.
                self.buf.resize(n, 0);
            }
        }
        while self.end - self.pos < n {
            if self.eof {
                return Ok(false);
            }
            let Some(dst) = self.buf.get_mut(self.end..) else {
                return Ok(false);
            };
            match self.r.read(dst) {
                Ok(0) => self.eof = true,
                Ok(k) => self.end += k.min(dst.len()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(true)
    }

    /// Drops `n` bytes of input without buffering them all; `false` if input ended first.
    fn discard(&mut self, mut n: u64) -> Result<bool, PcapError> {
        loop {
            let have = (self.end - self.pos) as u64;
            if have >= n {
                self.pos += n as usize;
                return Ok(true);
            }
            n -= have;
            self.pos = 0;
            self.end = 0;
            if !self.fill(1)? {
                return Ok(false);
            }
        }
    }

    /// Reads the next packet; `Ok(None)` at a clean end of input.
    ///
    /// A record cut short by the end of input gives [`PcapError::Truncated`].
    pub fn next_packet(&mut self) -> Result<Option<RawPacket<'_>>, PcapError> {
        match self.fmt {
            Format::Classic {
                swapped,
                nanos,
                link,
                rec_hdr,
            } => self.next_classic(swapped, nanos, link, rec_hdr),
            Format::Ng { .. } => self.next_ng(),
        }
    }

    fn next_classic(
        &mut self,
        be: bool,
        nanos: bool,
        link: LinkType,
        rec_hdr: usize,
    ) -> Result<Option<RawPacket<'_>>, PcapError> {
        if !self.fill(rec_hdr)? {
            return if self.pos == self.end {
                Ok(None)
            } else {
                Err(PcapError::Truncated)
            };
        }
        let h = self.avail();
        let field = |off| u32_at(h, off, be).ok_or(PcapError::Truncated);
        let (secs, frac, incl, orig) = (field(0)?, field(4)?, field(8)?, field(12)?);
        let incl_len = incl as usize;
        if incl_len > MAX_RECORD_BYTES {
            return Err(PcapError::RecordTooLarge(u64::from(incl)));
        }
        if !self.fill(rec_hdr + incl_len)? {
            return Err(PcapError::Truncated);
        }
        let sub = if nanos {
            i64::from(frac)
        } else {
            i64::from(frac) * 1000
        };
        let ts = Timestamp(
            i64::from(secs)
                .saturating_mul(1_000_000_000)
                .saturating_add(sub),
        );
        let start = self.pos + rec_hdr;
        self.pos = start + incl_len;
        self.last_ts = ts;
        let data = self
            .buf
            .get(start..start + incl_len)
            .ok_or(PcapError::Truncated)?;
        Ok(Some(RawPacket {
            ts,
            link,
            data,
            orig_len: orig,
        }))
    }

    fn next_ng(&mut self) -> Result<Option<RawPacket<'_>>, PcapError> {
        // (data start, data len, ts, link, orig_len) of the packet found.
        let found: (usize, usize, Timestamp, LinkType, u32) = loop {
            if !self.fill(8)? {
                return if self.pos == self.end {
                    Ok(None)
                } else {
                    Err(PcapError::Truncated)
                };
            }
            let raw_type = u32_at(self.avail(), 0, false).ok_or(PcapError::Truncated)?;
            if raw_type == PCAPNG_SHB {
                // A new section may switch byte order; its interfaces start afresh.
                if !self.fill(12)? {
                    return Err(PcapError::Truncated);
                }
                let big_endian = match u32_at(self.avail(), 8, false) {
                    Some(PCAPNG_BOM) => false,
                    Some(0x4D3C_2B1A) => true,
                    _ => return Err(PcapError::Malformed("section header byte-order magic")),
                };
                self.fmt = Format::Ng {
                    big_endian,
                    ifaces: Vec::new(),
                };
            }
            let be = matches!(
                self.fmt,
                Format::Ng {
                    big_endian: true,
                    ..
                }
            );
            let btype = u32_at(self.avail(), 0, be).ok_or(PcapError::Truncated)?;
            let blen32 = u32_at(self.avail(), 4, be).ok_or(PcapError::Truncated)?;
            let blen = blen32 as usize;
            // (Bit test rather than is_multiple_of: the workspace MSRV is 1.85.)
            if blen < 12 || blen & 3 != 0 {
                return Err(PcapError::Malformed("block length"));
            }
            if blen > MAX_RECORD_BYTES + BLOCK_OVERHEAD {
                if matches!(btype, PCAPNG_EPB | PCAPNG_SPB | PCAPNG_OPB) {
                    self.skipped += 1;
                }
                if !self.discard(u64::from(blen32))? {
                    return Err(PcapError::Truncated);
                }
                continue;
            }
            if !self.fill(blen)? {
                return Err(PcapError::Truncated);
            }
            let body_start = self.pos + 8;
            let body_len = blen - 12;
            let block_pos = self.pos;
            self.pos += blen;
            let body = self
                .buf
                .get(body_start..body_start + body_len)
                .ok_or(PcapError::Truncated)?;
            let Format::Ng { ifaces, .. } = &mut self.fmt else {
                return Err(PcapError::Malformed("format state"));
            };
            match btype {
                PCAPNG_IDB => {
                    let link = u16_at(body, 0, be).ok_or(PcapError::Malformed("short IDB"))?;
                    let mut iface = Iface {
                        link: LinkType(u32::from(link)),
                        resol: Resol::Pow10(6),
                        offset_secs: 0,
                    };
                    parse_idb_options(body.get(8..).unwrap_or(&[]), be, &mut iface);
                    if ifaces.len() < MAX_INTERFACES {
                        ifaces.push(iface);
                    }
                }
                PCAPNG_EPB | PCAPNG_OPB => {
                    let (if_id, hi, lo, cap, orig) = if btype == PCAPNG_EPB {
                        (
                            u32_at(body, 0, be),
                            u32_at(body, 4, be),
                            u32_at(body, 8, be),
                            u32_at(body, 12, be),
                            u32_at(body, 16, be),
                        )
                    } else {
                        (
                            u16_at(body, 0, be).map(u32::from),
                            u32_at(body, 4, be),
                            u32_at(body, 8, be),
                            u32_at(body, 12, be),
                            u32_at(body, 16, be),
                        )
                    };
                    let (Some(if_id), Some(hi), Some(lo), Some(cap), Some(orig)) =
                        (if_id, hi, lo, cap, orig)
                    else {
                        return Err(PcapError::Malformed("short packet block"));
                    };
                    let cap = cap as usize;
                    if cap > body_len - 20 {
                        return Err(PcapError::Malformed("captured length beyond block"));
                    }
                    let Some(iface) = ifaces.get(if_id as usize).copied() else {
                        self.skipped += 1;
                        continue;
                    };
                    let units = (u64::from(hi) << 32) | u64::from(lo);
                    let ns = units_to_nanos(units, iface.resol)
                        .saturating_add(iface.offset_secs.saturating_mul(1_000_000_000));
                    break (block_pos + 28, cap, Timestamp(ns), iface.link, orig);
                }
                PCAPNG_SPB => {
                    let orig = u32_at(body, 0, be).ok_or(PcapError::Malformed("short SPB"))?;
                    let Some(iface) = ifaces.first().copied() else {
                        self.skipped += 1;
                        continue;
                    };
                    let cap = (orig as usize).min(body_len - 4);
                    break (block_pos + 12, cap, self.last_ts, iface.link, orig);
                }
                // SHB handled above; NRB, ISB, DSB, custom and unknown blocks are skipped.
                _ => {}
            }
        };
        let (start, len, ts, link, orig_len) = found;
        self.last_ts = ts;
        let data = self
            .buf
            .get(start..start + len)
            .ok_or(PcapError::Truncated)?;
        Ok(Some(RawPacket {
            ts,
            link,
            data,
            orig_len,
        }))
    }
}

/// Reads `if_tsresol` (9) and `if_tsoffset` (14) from an IDB's options.
fn parse_idb_options(mut opts: &[u8], be: bool, iface: &mut Iface) {
    while let (Some(code), Some(len)) = (u16_at(opts, 0, be), u16_at(opts, 2, be)) {
        let len = usize::from(len);
        let Some(val) = opts.get(4..4 + len) else {
            return;
        };
        match (code, val) {
            (0, _) => return,
            (9, [r]) => {
                iface.resol = if r & 0x80 == 0 {
                    Resol::Pow10(*r)
                } else {
                    Resol::Pow2(r & 0x7F)
                };
            }
            (14, _) => {
                if let Some(off) = i64_at(val, 0, be) {
                    iface.offset_secs = off;
                }
            }
            _ => {}
        }
        let padded = (4 + len + 3) & !3;
        opts = opts.get(padded..).unwrap_or(&[]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classic(be: bool, magic: u32, link: u32, recs: &[(u32, u32, &[u8])]) -> Vec<u8> {
        let w32 = |v: &mut Vec<u8>, x: u32| {
            v.extend_from_slice(&if be { x.to_be_bytes() } else { x.to_le_bytes() })
        };
        let w16 = |v: &mut Vec<u8>, x: u16| {
            v.extend_from_slice(&if be { x.to_be_bytes() } else { x.to_le_bytes() })
        };
        let mut v = Vec::new();
        w32(&mut v, magic);
        w16(&mut v, 2);
        w16(&mut v, 4);
        w32(&mut v, 0);
        w32(&mut v, 0);
        w32(&mut v, 65535);
        w32(&mut v, link);
        for (s, f, d) in recs {
            w32(&mut v, *s);
            w32(&mut v, *f);
            w32(&mut v, d.len() as u32);
            w32(&mut v, d.len() as u32 + 10);
            v.extend_from_slice(d);
        }
        v
    }

    #[test]
    fn classic_both_orders_and_resolutions() {
        for be in [false, true] {
            for (magic, mult) in [(0xA1B2_C3D4u32, 1000i64), (0xA1B2_3C4D, 1)] {
                let file = classic(be, magic, 1, &[(10, 5, b"abc"), (11, 7, b"")]);
                let mut r = PcapReader::new(&file[..]).unwrap();
                assert_eq!(r.format(), CaptureFormat::Pcap);
                assert_eq!(r.link_type(), Some(LinkType::ETHERNET));
                let p = r.next_packet().unwrap().unwrap();
                assert_eq!(p.data, b"abc");
                assert_eq!(p.orig_len, 13);
                assert_eq!(p.ts, Timestamp(10_000_000_000 + 5 * mult));
                let p = r.next_packet().unwrap().unwrap();
                assert!(p.data.is_empty());
                assert!(r.next_packet().unwrap().is_none());
            }
        }
    }

    #[test]
    fn classic_truncated_and_huge() {
        let file = classic(false, 0xA1B2_C3D4, 1, &[(1, 0, b"abcdef")]);
        for cut in 25..file.len() {
            let mut r = PcapReader::new(&file[..cut]).unwrap();
            assert!(
                matches!(r.next_packet(), Err(PcapError::Truncated)),
                "cut {cut}"
            );
        }
        let mut file = classic(false, 0xA1B2_C3D4, 1, &[]);
        file.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0]);
        let mut r = PcapReader::new(&file[..]).unwrap();
        assert!(matches!(
            r.next_packet(),
            Err(PcapError::RecordTooLarge(0x7fff_ffff))
        ));
        assert!(matches!(
            PcapReader::new(&file[..10]),
            Err(PcapError::Truncated)
        ));
    }

    #[test]
    fn unknown_formats() {
        for f in [
            &b""[..],
            b"GMBU\x00\x02",
            b"hello world, this is text",
            &[0u8; 64],
        ] {
            assert!(matches!(PcapReader::new(f), Err(PcapError::UnknownFormat)));
        }
    }

    #[test]
    fn resolutions() {
        assert_eq!(units_to_nanos(1_500_000, Resol::Pow10(6)), 1_500_000_000);
        assert_eq!(units_to_nanos(15, Resol::Pow10(1)), 1_500_000_000);
        assert_eq!(
            units_to_nanos(1_500_000_000_000, Resol::Pow10(12)),
            1_500_000_000
        );
        assert_eq!(units_to_nanos(3 << 29, Resol::Pow2(30)), 1_500_000_000);
        assert_eq!(units_to_nanos(u64::MAX, Resol::Pow10(0)), i64::MAX);
        assert_eq!(units_to_nanos(u64::MAX, Resol::Pow10(120)), 0);
        assert_eq!(units_to_nanos(u64::MAX, Resol::Pow2(127)), 0);
    }
}
