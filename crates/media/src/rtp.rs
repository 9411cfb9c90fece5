//! Zero-copy RTP header view (RFC 3550 §5.1) and cheap RTP/RTCP classifiers.
//!
//! Owns: splitting one UDP payload into RTP header fields and the media payload.
//! Not `rtp-rs` or similar: that crate has been stale since 2021, and what we need
//! is ~60 lines, allocation-free and panic-free on hostile input.

use thiserror::Error;
use vcontap_wire::bytes::{be16, be32};

/// Fixed RTP header length in bytes (V/P/X/CC, M/PT, seq, ts, ssrc).
pub const RTP_HEADER_LEN: usize = 12;

/// Why a datagram is not a well-formed RTP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RtpError {
    /// Shorter than the fixed header, the CSRC list or the header extension claims.
    #[error("RTP packet truncated")]
    Truncated,
    /// Version field is not 2.
    #[error("RTP version {0} is not 2")]
    BadVersion(u8),
    /// Padding bit set but the padding count is 0 or larger than the payload.
    #[error("RTP padding count invalid")]
    BadPadding,
}

/// A parsed RTP packet borrowing its payload from the datagram.
#[derive(Debug, Clone, Copy)]
pub struct RtpPacket<'a> {
    /// Marker bit (start of talkspurt for audio).
    pub marker: bool,
    /// Payload type (7 bits).
    pub pt: u8,
    /// Sequence number.
    pub seq: u16,
    /// RTP timestamp in the payload's clock.
    pub ts: u32,
    /// Synchronisation source.
    pub ssrc: u32,
    /// Number of CSRC entries skipped.
    pub csrc_count: u8,
    /// Whether a header extension was present (and skipped).
    pub has_extension: bool,
    /// Media payload: after CSRCs and the extension, padding removed.
    pub payload: &'a [u8],
}

/// Parses an RTP packet. Checks version 2, that CSRCs and the header extension fit,
/// and that the padding count is non-zero and not larger than the payload.
pub fn parse_rtp(buf: &[u8]) -> Result<RtpPacket<'_>, RtpError> {
    let (&b0, &b1) = match (buf.first(), buf.get(1)) {
        (Some(a), Some(b)) if buf.len() >= RTP_HEADER_LEN => (a, b),
        _ => return Err(RtpError::Truncated),
    };
    let version = b0 >> 6;
    if version != 2 {
        return Err(RtpError::BadVersion(version));
    }
    let padding = b0 & 0x20 != 0;
    let has_extension = b0 & 0x10 != 0;
    let csrc_count = b0 & 0x0f;
    let seq = be16(buf, 2).ok_or(RtpError::Truncated)?;
    let ts = be32(buf, 4).ok_or(RtpError::Truncated)?;
    let ssrc = be32(buf, 8).ok_or(RtpError::Truncated)?;

    let mut off = RTP_HEADER_LEN + 4 * usize::from(csrc_count);
    if has_extension {
        // 16-bit profile id, 16-bit length in 32-bit words, then the words.
        let words = be16(buf, off + 2).ok_or(RtpError::Truncated)?;
        off += 4 + 4 * usize::from(words);
    }
    if off > buf.len() {
        return Err(RtpError::Truncated);
    }
    let mut end = buf.len();
    if padding {
        let pad = usize::from(*buf.last().ok_or(RtpError::Truncated)?);
        if pad == 0 || pad > end - off {
            return Err(RtpError::BadPadding);
        }
        end -= pad;
    }
    Ok(RtpPacket {
        marker: b1 & 0x80 != 0,
        pt: b1 & 0x7f,
        seq,
        ts,
        ssrc,
        csrc_count,
        has_extension,
        payload: buf.get(off..end).ok_or(RtpError::Truncated)?,
    })
}

/// Cheap check whether a datagram could be RTP: version 2, at least a full header, and a
/// payload type outside 72..=76 (RTCP packet types 200..=204 with the marker bit masked off).
pub fn looks_like_rtp(buf: &[u8]) -> bool {
    match (buf.first(), buf.get(1)) {
        (Some(&b0), Some(&b1)) if buf.len() >= RTP_HEADER_LEN => {
            b0 >> 6 == 2 && !(72..=76).contains(&(b1 & 0x7f))
        }
        _ => false,
    }
}

/// RFC 5761 §4 demultiplexing of RTP and RTCP on one port: version 2 and a second byte of
/// 200..=204 (SR, RR, SDES, BYE, APP), which read as RTP is payload type 72..=76 with or
/// without the marker bit. RTP never uses those payload types, so endpoints that multiplex
/// without announcing `a=rtcp-mux` are told apart the same way.
pub fn is_muxed_rtcp(buf: &[u8]) -> bool {
    match (buf.first(), buf.get(1)) {
        (Some(&b0), Some(&b1)) => b0 >> 6 == 2 && (72..=76).contains(&(b1 & 0x7f)),
        _ => false,
    }
}

/// STUN magic cookie (RFC 8489 §5), at bytes 4..8 of every STUN message.
pub const STUN_MAGIC_COOKIE: u32 = 0x2112_A442;

/// Whether a datagram is a STUN message (ICE connectivity checks and keepalives share the
/// media ports, RFC 7983): the two top bits zero, the magic cookie, and a message length
/// (bytes 2..4, excluding the 20-byte header) that is a multiple of 4 and fits the datagram.
pub fn looks_like_stun(buf: &[u8]) -> bool {
    let (Some(&b0), Some(len), Some(cookie)) = (buf.first(), be16(buf, 2), be32(buf, 4)) else {
        return false;
    };
    b0 >> 6 == 0
        && cookie == STUN_MAGIC_COOKIE
        && len % 4 == 0
        && usize::from(len) + 20 <= buf.len()
}

/// Whether a payload type is one RTP uses (RFC 3551 §6 and the IANA registry): the
/// assigned static types 0..=34 (with the reserved 1, 2, 19 and 20..=24 kept, as some
/// senders use them) and the dynamic range 96..=127. 35..=95 are unassigned or collide
/// with RTCP (RFC 5761) and never appear in real RTP.
pub fn is_rtp_payload_type(pt: u8) -> bool {
    matches!(pt, 0..=34 | 96..=127)
}

/// A stricter test than [`looks_like_rtp`] for traffic that no SDP announced: the packet
/// parses (CSRC list, extension and padding fit) and its payload type is one RTP uses.
pub fn plausible_rtp(buf: &[u8]) -> Option<RtpPacket<'_>> {
    let p = parse_rtp(buf).ok()?;
    is_rtp_payload_type(p.pt).then_some(p)
}

/// Cheap check whether a datagram could be RTCP: version 2, packet type 200..=207 and a
/// first sub-packet whose length field fits inside the datagram.
pub fn looks_like_rtcp(buf: &[u8]) -> bool {
    let (Some(&b0), Some(&b1), Some(len)) = (buf.first(), buf.get(1), be16(buf, 2)) else {
        return false;
    };
    b0 >> 6 == 2 && (200..=207).contains(&b1) && (usize::from(len) + 1) * 4 <= buf.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(b0: u8, b1: u8) -> Vec<u8> {
        let mut v = vec![b0, b1, 0x12, 0x34, 0, 0, 0x01, 0x40, 0xde, 0xad, 0xbe, 0xef];
        v.truncate(12);
        v
    }

    #[test]
    fn plain_packet() {
        let mut p = header(0x80, 0x80);
        p.extend_from_slice(&[1, 2, 3]);
        let r = parse_rtp(&p).unwrap();
        assert!(r.marker);
        assert_eq!(r.pt, 0);
        assert_eq!(r.seq, 0x1234);
        assert_eq!(r.ts, 320);
        assert_eq!(r.ssrc, 0xdead_beef);
        assert_eq!(r.csrc_count, 0);
        assert!(!r.has_extension);
        assert_eq!(r.payload, &[1, 2, 3]);
        assert!(looks_like_rtp(&p));
        assert!(!looks_like_rtcp(&p));
    }

    #[test]
    fn csrc_extension_padding() {
        // P=1, X=1, CC=2, PT=8
        let mut p = header(0x80 | 0x20 | 0x10 | 2, 8);
        p.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 2]); // CSRCs
        p.extend_from_slice(&[0xbe, 0xde, 0, 1, 9, 9, 9, 9]); // one-word extension
        p.extend_from_slice(&[0xaa, 0xbb]); // payload
        p.extend_from_slice(&[0, 0, 3]); // 3 bytes of padding
        let r = parse_rtp(&p).unwrap();
        assert_eq!(r.pt, 8);
        assert_eq!(r.csrc_count, 2);
        assert!(r.has_extension);
        assert_eq!(r.payload, &[0xaa, 0xbb]);
    }

    #[test]
    fn malformed() {
        assert_eq!(parse_rtp(&[]).unwrap_err(), RtpError::Truncated);
        assert_eq!(parse_rtp(&[0x80; 11]).unwrap_err(), RtpError::Truncated);
        assert_eq!(
            parse_rtp(&header(0x40, 0)).unwrap_err(),
            RtpError::BadVersion(1)
        );
        // CSRC count 15 but no CSRCs.
        assert_eq!(
            parse_rtp(&header(0x8f, 0)).unwrap_err(),
            RtpError::Truncated
        );
        // Extension claiming 0xffff words.
        let mut p = header(0x90, 0);
        p.extend_from_slice(&[0, 0, 0xff, 0xff]);
        assert_eq!(parse_rtp(&p).unwrap_err(), RtpError::Truncated);
        // Extension header itself cut short.
        let mut p = header(0x90, 0);
        p.extend_from_slice(&[0, 0]);
        assert_eq!(parse_rtp(&p).unwrap_err(), RtpError::Truncated);
        // Padding larger than the payload.
        let mut p = header(0xa0, 0);
        p.extend_from_slice(&[1, 2, 9]);
        assert_eq!(parse_rtp(&p).unwrap_err(), RtpError::BadPadding);
        // Padding count zero.
        let mut p = header(0xa0, 0);
        p.extend_from_slice(&[1, 0]);
        assert_eq!(parse_rtp(&p).unwrap_err(), RtpError::BadPadding);
        // Padding exactly consuming the payload is fine.
        let mut p = header(0xa0, 0);
        p.extend_from_slice(&[0, 2]);
        assert_eq!(parse_rtp(&p).unwrap().payload.len(), 0);
    }

    #[test]
    fn classifiers() {
        assert!(!looks_like_rtp(&[0x80; 8]));
        assert!(!looks_like_rtp(&header(0x80, 200)));
        assert!(looks_like_rtp(&header(0x80, 0x80 | 101)));
        let rr = [0x80, 201, 0, 1, 0, 0, 0, 1];
        assert!(looks_like_rtcp(&rr));
        assert!(!looks_like_rtcp(&rr[..6]));
        assert!(!looks_like_rtcp(&[0x80, 201, 0, 5, 0, 0, 0, 1]));
        assert!(!looks_like_rtcp(&[0x80, 199, 0, 1, 0, 0, 0, 1]));
        assert!(!looks_like_rtcp(&[]));
    }

    #[test]
    fn rtcp_mux_demux_and_stun() {
        let sr = [0x80, 200, 0, 6, 0, 0, 0, 1];
        assert!(is_muxed_rtcp(&sr));
        assert!(is_muxed_rtcp(&[0x81, 204]));
        assert!(!is_muxed_rtcp(&header(0x80, 0x80 | 101)));
        assert!(
            !is_muxed_rtcp(&[0x80, 205]),
            "RTPFB is not in the RFC 5761 range"
        );
        assert!(!is_muxed_rtcp(&[0x40, 200]));
        let mut stun = vec![0x00, 0x01, 0x00, 0x04, 0x21, 0x12, 0xA4, 0x42];
        stun.extend_from_slice(&[0; 16]);
        assert!(looks_like_stun(&stun));
        assert!(!looks_like_stun(&stun[..20]), "length past the end");
        stun[4] = 0x22;
        assert!(!looks_like_stun(&stun), "no magic cookie");
        assert!(!looks_like_stun(&[0x00, 0x01]));
        let mut zrtp = vec![0x10, 0, 0, 0];
        zrtp.extend_from_slice(b"ZRTP");
        zrtp.extend_from_slice(&[0; 12]);
        assert!(!looks_like_stun(&zrtp));
    }

    #[test]
    fn plausible_rtp_wants_a_used_payload_type() {
        assert!(plausible_rtp(&header(0x80, 0)).is_some());
        assert!(plausible_rtp(&header(0x80, 0x80 | 111)).is_some());
        assert!(plausible_rtp(&header(0x80, 50)).is_none());
        assert!(plausible_rtp(&header(0x80, 72)).is_none());
        assert!(
            plausible_rtp(&header(0x8f, 0)).is_none(),
            "15 CSRCs that are not there"
        );
    }
}
