//! RTCP compound packet parsing (RFC 3550 §6): sender/receiver reports with their
//! report blocks; SDES, BYE and APP are only classified.
//!
//! Owns: turning one RTCP datagram into a bounded list of [`RtcpPacket`]s. Parsing is
//! lenient the way a passive tap must be: a malformed sub-packet ends the walk, and
//! whatever parsed before it is returned.

use thiserror::Error;
use vcontap_wire::bytes::{be16, be32};

/// At most this many sub-packets are parsed from one datagram. A compound packet in
/// practice holds 2-4 (SR/RR + SDES [+ BYE]); the cap bounds work per datagram.
pub const MAX_RTCP_PACKETS: usize = 16;

/// At most this many report blocks per SR/RR: the 5-bit count field cannot say more.
pub const MAX_REPORT_BLOCKS: usize = 31;

/// Size of one report block in bytes.
const REPORT_BLOCK_LEN: usize = 24;

/// Why an RTCP datagram could not be parsed at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RtcpError {
    /// Datagram or the first sub-packet is shorter than its header or length claims.
    #[error("RTCP packet truncated")]
    Truncated,
    /// Version field is not 2.
    #[error("RTCP version {0} is not 2")]
    BadVersion(u8),
    /// An SR/RR whose length cannot hold its report blocks.
    #[error("RTCP report length does not match its report count")]
    BadLength,
}

/// One reception report block (RFC 3550 §6.4.1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReportBlock {
    /// SSRC of the source this block reports on.
    pub ssrc: u32,
    /// Fraction lost since the last report, in 1/256 units.
    pub fraction_lost: u8,
    /// Cumulative packets lost (24-bit signed, sign-extended).
    pub cumulative_lost: i32,
    /// Extended highest sequence number received.
    pub highest_seq: u32,
    /// Interarrival jitter in timestamp units.
    pub jitter: u32,
    /// Middle 32 bits of the NTP timestamp of the last SR received.
    pub lsr: u32,
    /// Delay since that SR, in 1/65536 s.
    pub dlsr: u32,
}

/// Sender report (PT 200).
#[derive(Debug, Clone, PartialEq)]
pub struct SenderReport {
    /// Sender SSRC.
    pub ssrc: u32,
    /// NTP timestamp, seconds.
    pub ntp_sec: u32,
    /// NTP timestamp, fraction.
    pub ntp_frac: u32,
    /// RTP timestamp matching the NTP timestamp.
    pub rtp_ts: u32,
    /// Packets sent.
    pub packet_count: u32,
    /// Payload octets sent.
    pub octet_count: u32,
    /// Reception report blocks (at most [`MAX_REPORT_BLOCKS`]).
    pub reports: Vec<ReportBlock>,
}

/// Receiver report (PT 201).
#[derive(Debug, Clone, PartialEq)]
pub struct ReceiverReport {
    /// Reporter SSRC.
    pub ssrc: u32,
    /// Reception report blocks (at most [`MAX_REPORT_BLOCKS`]).
    pub reports: Vec<ReportBlock>,
}

/// One sub-packet of a compound RTCP datagram.
#[derive(Debug, Clone, PartialEq)]
pub enum RtcpPacket {
    /// PT 200.
    SenderReport(SenderReport),
    /// PT 201.
    ReceiverReport(ReceiverReport),
    /// PT 202, with its chunk count.
    Sdes {
        /// Source count field.
        chunks: u8,
    },
    /// PT 203, with the number of SSRCs leaving.
    Bye {
        /// Source count field.
        ssrcs: u8,
    },
    /// PT 204.
    App,
    /// Any other packet type (e.g. 205/206 feedback, 207 XR).
    Other(u8),
}

fn report_blocks(body: &[u8], count: usize) -> Option<Vec<ReportBlock>> {
    let count = count.min(MAX_REPORT_BLOCKS);
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let b = body.get(i * REPORT_BLOCK_LEN..(i + 1) * REPORT_BLOCK_LEN)?;
        let lost_word = be32(b, 4)?;
        out.push(ReportBlock {
            ssrc: be32(b, 0)?,
            fraction_lost: (lost_word >> 24) as u8,
            // Shift the 24-bit field to the top and back to sign-extend it.
            cumulative_lost: ((lost_word << 8) as i32) >> 8,
            highest_seq: be32(b, 8)?,
            jitter: be32(b, 12)?,
            lsr: be32(b, 16)?,
            dlsr: be32(b, 20)?,
        });
    }
    Some(out)
}

/// Parses one sub-packet (header already length-checked) into a packet.
fn parse_one(pkt: &[u8]) -> Result<RtcpPacket, RtcpError> {
    let b0 = *pkt.first().ok_or(RtcpError::Truncated)?;
    let pt = *pkt.get(1).ok_or(RtcpError::Truncated)?;
    let count = usize::from(b0 & 0x1f);
    Ok(match pt {
        200 => {
            let w = |at| be32(pkt, at).ok_or(RtcpError::BadLength);
            let body = pkt.get(28..).ok_or(RtcpError::BadLength)?;
            RtcpPacket::SenderReport(SenderReport {
                ssrc: w(4)?,
                ntp_sec: w(8)?,
                ntp_frac: w(12)?,
                rtp_ts: w(16)?,
                packet_count: w(20)?,
                octet_count: w(24)?,
                reports: report_blocks(body, count).ok_or(RtcpError::BadLength)?,
            })
        }
        201 => RtcpPacket::ReceiverReport(ReceiverReport {
            ssrc: be32(pkt, 4).ok_or(RtcpError::BadLength)?,
            reports: report_blocks(pkt.get(8..).ok_or(RtcpError::BadLength)?, count)
                .ok_or(RtcpError::BadLength)?,
        }),
        202 => RtcpPacket::Sdes {
            chunks: count as u8,
        },
        203 => RtcpPacket::Bye { ssrcs: count as u8 },
        204 => RtcpPacket::App,
        other => RtcpPacket::Other(other),
    })
}

/// Parses a (compound) RTCP datagram. Stops at the first malformed sub-packet and returns
/// what parsed before it; an error only if not even the first sub-packet parsed. At most
/// [`MAX_RTCP_PACKETS`] sub-packets are returned.
pub fn parse_rtcp(buf: &[u8]) -> Result<Vec<RtcpPacket>, RtcpError> {
    let mut out = Vec::new();
    let mut rest = buf;
    while out.len() < MAX_RTCP_PACKETS && !rest.is_empty() {
        match split_one(rest).and_then(|(pkt, tail)| Ok((parse_one(pkt)?, tail))) {
            Ok((p, tail)) => {
                out.push(p);
                rest = tail;
            }
            Err(e) if out.is_empty() => return Err(e),
            Err(_) => break,
        }
    }
    if out.is_empty() {
        return Err(RtcpError::Truncated);
    }
    Ok(out)
}

/// Splits off the first sub-packet by its length field, checking the version.
fn split_one(buf: &[u8]) -> Result<(&[u8], &[u8]), RtcpError> {
    let (Some(&first), Some(words)) = (buf.first(), be16(buf, 2)) else {
        return Err(RtcpError::Truncated);
    };
    let version = first >> 6;
    if version != 2 {
        return Err(RtcpError::BadVersion(version));
    }
    let len = (usize::from(words) + 1) * 4;
    buf.split_at_checked(len).ok_or(RtcpError::Truncated)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(ssrc: u32, frac: u8, lost: i32) -> Vec<u8> {
        let mut b = ssrc.to_be_bytes().to_vec();
        b.push(frac);
        b.extend_from_slice(&lost.to_be_bytes()[1..]);
        for v in [70_000u32, 42, 0x1234_5678, 65536] {
            b.extend_from_slice(&v.to_be_bytes());
        }
        b
    }

    fn sr() -> Vec<u8> {
        let mut p = vec![0x81, 200, 0, 12];
        for v in [0x1111_1111u32, 3_900_000_000, 0x8000_0000, 160, 50, 8000] {
            p.extend_from_slice(&v.to_be_bytes());
        }
        p.extend(block(0x2222_2222, 25, -3));
        assert_eq!(p.len(), 52);
        p
    }

    fn sdes() -> Vec<u8> {
        // One chunk: SSRC, CNAME "ab", END, padded to a word.
        vec![
            0x81, 202, 0, 3, 0x11, 0x11, 0x11, 0x11, 1, 2, b'a', b'b', 0, 0, 0, 0,
        ]
    }

    #[test]
    fn compound_sr_sdes() {
        let mut d = sr();
        d.extend(sdes());
        let pk = parse_rtcp(&d).unwrap();
        assert_eq!(pk.len(), 2);
        let RtcpPacket::SenderReport(s) = &pk[0] else {
            panic!("not SR: {pk:?}")
        };
        assert_eq!(s.ssrc, 0x1111_1111);
        assert_eq!(s.ntp_sec, 3_900_000_000);
        assert_eq!(s.ntp_frac, 0x8000_0000);
        assert_eq!(s.rtp_ts, 160);
        assert_eq!(s.packet_count, 50);
        assert_eq!(s.octet_count, 8000);
        assert_eq!(
            s.reports,
            vec![ReportBlock {
                ssrc: 0x2222_2222,
                fraction_lost: 25,
                cumulative_lost: -3,
                highest_seq: 70_000,
                jitter: 42,
                lsr: 0x1234_5678,
                dlsr: 65536
            }]
        );
        assert_eq!(pk[1], RtcpPacket::Sdes { chunks: 1 });
        assert!(crate::rtp::looks_like_rtcp(&d));
    }

    #[test]
    fn receiver_report_bye_other() {
        let mut d = vec![0x82, 201, 0, 13, 0, 0, 0, 9];
        d.extend(block(1, 0, 5));
        d.extend(block(2, 255, 0x7f_ffff));
        d.extend_from_slice(&[0x81, 203, 0, 1, 0, 0, 0, 9]);
        d.extend_from_slice(&[0x80, 207, 0, 0]);
        let pk = parse_rtcp(&d).unwrap();
        assert_eq!(pk.len(), 3);
        let RtcpPacket::ReceiverReport(r) = &pk[0] else {
            panic!("not RR")
        };
        assert_eq!(r.ssrc, 9);
        assert_eq!(r.reports.len(), 2);
        assert_eq!(r.reports[0].cumulative_lost, 5);
        assert_eq!(r.reports[1].cumulative_lost, 0x7f_ffff);
        assert_eq!(r.reports[1].fraction_lost, 255);
        assert_eq!(pk[1], RtcpPacket::Bye { ssrcs: 1 });
        assert_eq!(pk[2], RtcpPacket::Other(207));
    }

    #[test]
    fn truncated_and_garbage() {
        assert_eq!(parse_rtcp(&[]), Err(RtcpError::Truncated));
        assert_eq!(parse_rtcp(&[0x80, 201]), Err(RtcpError::Truncated));
        assert_eq!(
            parse_rtcp(&[0x40, 201, 0, 1, 0, 0, 0, 0]),
            Err(RtcpError::BadVersion(1))
        );
        // Length field larger than the datagram.
        assert_eq!(
            parse_rtcp(&[0x80, 201, 0xff, 0xff, 0, 0, 0, 0]),
            Err(RtcpError::Truncated)
        );
        // RR claiming 3 report blocks in a 2-word packet.
        assert_eq!(
            parse_rtcp(&[0x83, 201, 0, 1, 0, 0, 0, 0]),
            Err(RtcpError::BadLength)
        );
        // SR without sender info.
        assert_eq!(
            parse_rtcp(&[0x80, 200, 0, 1, 0, 0, 0, 0]),
            Err(RtcpError::BadLength)
        );
        // Good SR followed by a truncated SDES: the SR is kept.
        let mut d = sr();
        d.extend_from_slice(&sdes()[..10]);
        let pk = parse_rtcp(&d).unwrap();
        assert_eq!(pk.len(), 1);
        assert!(matches!(pk[0], RtcpPacket::SenderReport(_)));
    }

    #[test]
    fn bounded_packet_count() {
        let d: Vec<u8> = std::iter::repeat_n([0x80u8, 204, 0, 0], 100)
            .flatten()
            .collect();
        assert_eq!(parse_rtcp(&d).unwrap().len(), MAX_RTCP_PACKETS);
    }
}
