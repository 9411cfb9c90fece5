//! SCTP (RFC 9260): common header plus DATA (and I-DATA, RFC 8260) chunks. Each user
//! message becomes one [`Datagram`]; control chunks are skipped. A message fragmented over
//! several DATA chunks (large SIP INVITEs are) is reassembled per (src, dst, stream) when
//! its fragments carry consecutive TSNs, in a small bounded table; I-DATA fragments and
//! anything out of order are counted as [`SkipReason::SctpFragmented`].

use std::net::{IpAddr, SocketAddr};

use crate::bytes::{be16, be32};
use crate::decoder::{Ctx, Decoder};
use crate::frag::SWEEP_INTERVAL_NS;
use crate::stats::{DecodeStats, SkipReason};
use crate::{Datagram, Timestamp, Transport};

/// Largest SCTP user message we reassemble (SIP messages are far smaller).
const MAX_SCTP_MESSAGE_BYTES: usize = 256 * 1024;

/// Most SCTP messages under reassembly at once; new ones are refused beyond this.
const MAX_SCTP_PARTIALS: usize = 256;

type SctpKey = (SocketAddr, SocketAddr, u16);

#[derive(Debug)]
struct Partial {
    next_tsn: u32,
    data: Vec<u8>,
    first_ts: Timestamp,
}

/// Partially received fragmented SCTP messages.
#[derive(Debug)]
pub(crate) struct SctpTable {
    map: foldhash::HashMap<SctpKey, Partial>,
    next_sweep: i64,
}

impl SctpTable {
    pub(crate) fn new() -> Self {
        SctpTable {
            map: foldhash::HashMap::default(),
            next_sweep: i64::MIN,
        }
    }

    /// Adds one fragment; returns the whole message when `E` completes it.
    fn fragment(
        &mut self,
        key: SctpKey,
        flags: u8,
        tsn: u32,
        data: &[u8],
        ts: Timestamp,
        stats: &mut DecodeStats,
    ) -> Option<Vec<u8>> {
        let begin = flags & 0x02 != 0;
        let end = flags & 0x01 != 0;
        if begin {
            if self.map.len() >= MAX_SCTP_PARTIALS && !self.map.contains_key(&key) {
                stats.skip(SkipReason::SctpFragmented);
                return None;
            }
            let p = Partial {
                next_tsn: tsn.wrapping_add(1),
                data: data.to_vec(),
                first_ts: ts,
            };
            if self.map.insert(key, p).is_some() {
                stats.skip(SkipReason::SctpFragmented);
            }
            return None;
        }
        let Some(p) = self.map.get_mut(&key) else {
            stats.skip(SkipReason::SctpFragmented);
            return None;
        };
        if tsn == p.next_tsn.wrapping_sub(1) {
            // Retransmission of the fragment we already have.
            return None;
        }
        if tsn != p.next_tsn || p.data.len().saturating_add(data.len()) > MAX_SCTP_MESSAGE_BYTES {
            self.map.remove(&key);
            stats.skip(SkipReason::SctpFragmented);
            return None;
        }
        p.data.extend_from_slice(data);
        p.next_tsn = tsn.wrapping_add(1);
        if end {
            return self.map.remove(&key).map(|p| p.data);
        }
        None
    }

    pub(crate) fn handle_timeout(&mut self, now: Timestamp, timeout_ns: i64, st: &mut DecodeStats) {
        if now.0 < self.next_sweep {
            return;
        }
        self.next_sweep = now.0.saturating_add(SWEEP_INTERVAL_NS);
        self.map.retain(|_, p| {
            let keep = now.0.saturating_sub(p.first_ts.0) <= timeout_ns;
            if !keep {
                st.skip(SkipReason::SctpFragmented);
            }
            keep
        });
    }
}

const CHUNK_DATA: u8 = 0;
const CHUNK_IDATA: u8 = 64;
/// B (beginning) and E (ending) flags of a DATA chunk: both set = whole message.
const FLAGS_BE: u8 = 0x03;

impl Decoder {
    pub(crate) fn sctp(
        &mut self,
        ctx: Ctx,
        src: IpAddr,
        dst: IpAddr,
        d: &[u8],
        out: &mut dyn FnMut(Datagram<'_>),
    ) {
        let (Some(sp), Some(dp), Some(mut rest)) = (be16(d, 0), be16(d, 2), d.get(12..)) else {
            return self.skip(SkipReason::Truncated);
        };
        let mut data_chunks = 0usize;
        // Every chunk is at least 4 bytes, so this loop is bounded by the packet length.
        while let (Some(&ty), Some(&flags), Some(len)) = (rest.first(), rest.get(1), be16(rest, 2))
        {
            let len = usize::from(len);
            if len < 4 {
                return self.skip(SkipReason::BadSctp);
            }
            let Some(chunk) = rest.get(..len) else {
                return self.skip(SkipReason::Truncated);
            };
            let hdr = match ty {
                CHUNK_DATA => Some(16),
                CHUNK_IDATA => Some(20),
                _ => None,
            };
            if let Some(hdr) = hdr {
                data_chunks += 1;
                let (src, dst) = (SocketAddr::new(src, sp), SocketAddr::new(dst, dp));
                let emit =
                    |stats: &mut DecodeStats, out: &mut dyn FnMut(Datagram<'_>), p: &[u8]| {
                        stats.datagrams += 1;
                        out(Datagram {
                            ts: ctx.ts,
                            src,
                            dst,
                            transport: Transport::Sctp,
                            vlan: ctx.vlan,
                            payload: p,
                        });
                    };
                match (chunk.get(hdr..), be32(chunk, 4), be16(chunk, 8)) {
                    (Some(payload), _, _) if flags & FLAGS_BE == FLAGS_BE => {
                        emit(&mut self.stats, out, payload)
                    }
                    (Some(payload), Some(tsn), Some(sid)) if ty == CHUNK_DATA => {
                        let key = (src, dst, sid);
                        if let Some(msg) =
                            self.sctp
                                .fragment(key, flags, tsn, payload, ctx.ts, &mut self.stats)
                        {
                            emit(&mut self.stats, out, &msg);
                        }
                    }
                    (Some(_), _, _) => self.skip(SkipReason::SctpFragmented),
                    (None, _, _) => self.skip(SkipReason::BadSctp),
                }
            }
            // Chunks are padded to a multiple of 4; the last one's padding may be absent.
            let padded = (len + 3) & !3;
            rest = rest.get(padded..).unwrap_or(&[]);
        }
        if data_chunks == 0 {
            self.skip(SkipReason::SctpNonData);
        }
    }
}
