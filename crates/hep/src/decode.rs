//! Decoding one HEP message: HEP3 chunks, the legacy v1/v2 header, and inflating compressed
//! payloads and gzipped datagrams with an output cap.
//!
//! Versions are told apart as heplify-server does: `HEP3` → v3, first byte 1 → v1, 2 → v2;
//! a datagram starting `1f 8b` is gzip (heplify `payload_zip`) and is inflated then decoded
//! once more (never twice).

use std::borrow::Cow;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use flate2::read::{DeflateDecoder, GzDecoder, ZlibDecoder};
use vcontap_wire::bytes::{array_at, be16, be32, le32};

use crate::{
    chunk, HepError, HepMessage, ProtoType, Version, CHUNK_HEADER, HEP3_HEADER, HEP3_MAGIC,
    MAX_MESSAGE,
};

/// Default cap on what one compressed payload (or gzipped datagram) may inflate to: the
/// largest HEP message. Beyond it the message is a decompression bomb, rejected.
pub const DEFAULT_MAX_INFLATED: usize = 64 * 1024;

/// Decoder limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most bytes a compressed payload or gzipped datagram may inflate to.
    pub max_inflated: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_inflated: DEFAULT_MAX_INFLATED,
        }
    }
}

/// Decodes one HEP message (a UDP datagram, or a message cut by [`crate::TcpFramer`]) with
/// the default [`Limits`].
pub fn decode(bytes: &[u8]) -> Result<HepMessage<'_>, HepError> {
    decode_with(bytes, &Limits::default())
}

/// Decodes one HEP message with explicit limits.
pub fn decode_with<'a>(bytes: &'a [u8], limits: &Limits) -> Result<HepMessage<'a>, HepError> {
    if let [0x1f, 0x8b, ..] = bytes {
        let inner = inflate(bytes, limits.max_inflated.max(MAX_MESSAGE))?;
        if let [0x1f, 0x8b, ..] = inner.as_slice() {
            return Err(HepError::NestedCompression);
        }
        let mut msg = decode_plain(&inner, limits)?.into_owned();
        msg.gzipped = true;
        return Ok(msg);
    }
    decode_plain(bytes, limits)
}

fn decode_plain<'a>(bytes: &'a [u8], limits: &Limits) -> Result<HepMessage<'a>, HepError> {
    match bytes {
        [b'H', b'E', b'P', b'3', ..] => decode_v3(bytes, limits),
        [1, ..] => decode_legacy(bytes, Version::V1),
        [2, ..] => decode_legacy(bytes, Version::V2),
        [] | [_] | [_, _] | [_, _, _] => Err(HepError::TooShort),
        _ => Err(HepError::UnknownVersion),
    }
}

fn decode_v3<'a>(bytes: &'a [u8], limits: &Limits) -> Result<HepMessage<'a>, HepError> {
    if array_at::<4>(bytes, 0) != Some(HEP3_MAGIC) {
        return Err(HepError::UnknownVersion);
    }
    let total = usize::from(be16(bytes, 4).ok_or(HepError::TooShort)?);
    if total < HEP3_HEADER {
        return Err(HepError::BadLength);
    }
    // Bytes after `total` (padding some senders add) are ignored; fewer is a cut message.
    let msg_bytes = bytes.get(..total).ok_or(HepError::LengthBeyondPacket)?;
    let mut rest = msg_bytes.get(HEP3_HEADER..).unwrap_or(&[]);
    let mut m = HepMessage {
        version: Version::V3,
        ..HepMessage::default()
    };
    let mut compressed: Option<&[u8]> = None;
    while !rest.is_empty() {
        let (Some(vendor), Some(id), Some(len)) = (be16(rest, 0), be16(rest, 2), be16(rest, 4))
        else {
            return Err(HepError::TruncatedChunk);
        };
        let len = usize::from(len);
        if len < CHUNK_HEADER {
            return Err(HepError::BadChunkLength);
        }
        let value = rest
            .get(CHUNK_HEADER..len)
            .ok_or(HepError::ChunkBeyondPacket)?;
        rest = rest.get(len..).unwrap_or(&[]);
        if vendor != 0 {
            m.skipped_chunks = m.skipped_chunks.saturating_add(1);
            continue;
        }
        let bad = || HepError::BadChunkValue(id);
        match id {
            chunk::IP_FAMILY => m.family = Some(u8_of(value).ok_or_else(bad)?),
            chunk::IP_PROTO => m.ip_proto = Some(u8_of(value).ok_or_else(bad)?),
            chunk::IPV4_SRC => m.src_ip = Some(IpAddr::V4(v4_of(value).ok_or_else(bad)?)),
            chunk::IPV4_DST => m.dst_ip = Some(IpAddr::V4(v4_of(value).ok_or_else(bad)?)),
            chunk::IPV6_SRC => m.src_ip = Some(IpAddr::V6(v6_of(value).ok_or_else(bad)?)),
            chunk::IPV6_DST => m.dst_ip = Some(IpAddr::V6(v6_of(value).ok_or_else(bad)?)),
            chunk::SRC_PORT => m.src_port = Some(u16_of(value).ok_or_else(bad)?),
            chunk::DST_PORT => m.dst_port = Some(u16_of(value).ok_or_else(bad)?),
            chunk::TS_SECS => m.ts_secs = Some(u32_of(value).ok_or_else(bad)?),
            chunk::TS_MICROS => m.ts_micros = Some(u32_of(value).ok_or_else(bad)?),
            chunk::PROTO_TYPE => m.proto_type = Some(ProtoType(u8_of(value).ok_or_else(bad)?)),
            chunk::CAPTURE_ID => m.capture_id = Some(capture_id_of(value).ok_or_else(bad)?),
            chunk::KEEPALIVE => m.keepalive = Some(u16_of(value).ok_or_else(bad)?),
            chunk::AUTH_KEY => m.auth_key = Some(Cow::Borrowed(value)),
            chunk::PAYLOAD => m.payload = Some(Cow::Borrowed(value)),
            chunk::COMPRESSED_PAYLOAD => compressed = Some(value),
            chunk::CORRELATION_ID => m.correlation_id = Some(Cow::Borrowed(value)),
            chunk::VLAN => m.vlan = Some(u16_of(value).ok_or_else(bad)?),
            chunk::NODE_NAME => m.node_name = Some(Cow::Borrowed(value)),
            _ => m.skipped_chunks = m.skipped_chunks.saturating_add(1),
        }
    }
    // A plain payload wins over a compressed one (no sender sends both).
    if m.payload.is_none() {
        if let Some(z) = compressed {
            m.payload = Some(Cow::Owned(inflate(z, limits.max_inflated)?));
            m.payload_compressed = true;
        }
    }
    Ok(m)
}

fn u8_of(v: &[u8]) -> Option<u8> {
    match v {
        [b] => Some(*b),
        _ => None,
    }
}

fn u16_of(v: &[u8]) -> Option<u16> {
    match v.len() {
        2 => be16(v, 0),
        _ => None,
    }
}

fn u32_of(v: &[u8]) -> Option<u32> {
    match v.len() {
        4 => be32(v, 0),
        _ => None,
    }
}

/// The capture id is a u32 in v3, but agents that followed the v2 header send a u16.
fn capture_id_of(v: &[u8]) -> Option<u32> {
    match v.len() {
        4 => be32(v, 0),
        2 => be16(v, 0).map(u32::from),
        _ => None,
    }
}

fn v4_of(v: &[u8]) -> Option<Ipv4Addr> {
    match v.len() {
        4 => array_at::<4>(v, 0).map(Ipv4Addr::from),
        _ => None,
    }
}

fn v6_of(v: &[u8]) -> Option<Ipv6Addr> {
    match v.len() {
        16 => array_at::<16>(v, 0).map(Ipv6Addr::from),
        _ => None,
    }
}

/// The legacy header (live.md §1.5): version, header length (unreliable: sngrep writes the
/// total length truncated to a byte), family, protocol, ports, addresses, then for v2 a time
/// block of 10 bytes (secs, µs, u16 capture id) or 12 (the same with 2 padding bytes, as
/// Kamailio and sngrep copy the unpacked C struct), then the SIP payload.
fn decode_legacy(bytes: &[u8], version: Version) -> Result<HepMessage<'_>, HepError> {
    let family = *bytes.get(2).ok_or(HepError::TruncatedLegacy)?;
    if family != 2 && family != 10 {
        return Err(HepError::BadFamily);
    }
    let proto = *bytes.get(3).ok_or(HepError::TruncatedLegacy)?;
    let sport = be16(bytes, 4).ok_or(HepError::TruncatedLegacy)?;
    let dport = be16(bytes, 6).ok_or(HepError::TruncatedLegacy)?;
    let (src, dst, mut at) = match family {
        2 => {
            let s = array_at::<4>(bytes, 8).ok_or(HepError::TruncatedLegacy)?;
            let d = array_at::<4>(bytes, 12).ok_or(HepError::TruncatedLegacy)?;
            (
                IpAddr::V4(Ipv4Addr::from(s)),
                IpAddr::V4(Ipv4Addr::from(d)),
                16,
            )
        }
        10 => {
            let s = array_at::<16>(bytes, 8).ok_or(HepError::TruncatedLegacy)?;
            let d = array_at::<16>(bytes, 24).ok_or(HepError::TruncatedLegacy)?;
            (
                IpAddr::V6(Ipv6Addr::from(s)),
                IpAddr::V6(Ipv6Addr::from(d)),
                40,
            )
        }
        _ => return Err(HepError::BadFamily),
    };
    let mut m = HepMessage {
        version,
        family: Some(family),
        ip_proto: Some(proto),
        src_ip: Some(src),
        dst_ip: Some(dst),
        src_port: Some(sport),
        dst_port: Some(dport),
        proto_type: Some(ProtoType::SIP),
        ..HepMessage::default()
    };
    if version == Version::V2 {
        let block = bytes.get(at..at + 10).ok_or(HepError::TruncatedLegacy)?;
        let (secs, micros) = legacy_time(block);
        m.ts_secs = Some(secs);
        m.ts_micros = Some(micros);
        m.capture_id = array_at::<2>(block, 8).map(|b| u32::from(u16::from_le_bytes(b)));
        let after10 = bytes.get(at + 10..).unwrap_or(&[]);
        // 12 (the padded struct) unless the payload visibly starts after 10.
        at += if starts_like_sip(after10) || bytes.len() < at + 12 {
            10
        } else {
            12
        };
    }
    m.payload = Some(Cow::Borrowed(bytes.get(at..).unwrap_or(&[])));
    Ok(m)
}

/// v2 time fields: little-endian as Kamailio forces them; heplify-server's big-endian
/// reading is taken only when the little-endian one is implausible and it is not.
fn legacy_time(block: &[u8]) -> (u32, u32) {
    let plausible = |s: u32, us: u32| (946_684_800..4_102_444_800).contains(&s) && us < 1_000_000;
    let le = (le32(block, 0).unwrap_or(0), le32(block, 4).unwrap_or(0));
    let be = (be32(block, 0).unwrap_or(0), be32(block, 4).unwrap_or(0));
    if !plausible(le.0, le.1) && plausible(be.0, be.1) {
        be
    } else {
        le
    }
}

/// Whether bytes start like a SIP request or status line (an upper-case token then a space,
/// or `SIP/2.0 `).
fn starts_like_sip(b: &[u8]) -> bool {
    if b.starts_with(b"SIP/2.0 ") {
        return true;
    }
    let token = b
        .iter()
        .take(17)
        .take_while(|c| c.is_ascii_uppercase())
        .count();
    token >= 3 && b.get(token) == Some(&b' ')
}

/// Inflates gzip (`1f 8b`), zlib (CMF/FLG check) or raw deflate, producing at most `cap`
/// bytes: the reader is cut at `cap + 1`, so a bomb costs at most `cap` bytes of memory and
/// the work to produce them.
fn inflate(data: &[u8], cap: usize) -> Result<Vec<u8>, HepError> {
    let limit = u64::try_from(cap).unwrap_or(u64::MAX).saturating_add(1);
    let mut out = Vec::new();
    let r = match data {
        [0x1f, 0x8b, ..] => GzDecoder::new(data).take(limit).read_to_end(&mut out),
        [cmf, flg, ..] if cmf & 0x0f == 8 && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0 => {
            ZlibDecoder::new(data).take(limit).read_to_end(&mut out)
        }
        _ => DeflateDecoder::new(data).take(limit).read_to_end(&mut out),
    };
    r.map_err(|_| HepError::BadCompression)?;
    if out.len() > cap {
        return Err(HepError::InflateTooLarge);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode_v3;
    use flate2::write::{DeflateEncoder, GzEncoder, ZlibEncoder};
    use flate2::Compression;
    use std::io::Write;

    /// The spec's example packet (HEP3 REV 37, "HEP3 example"): 113 bytes.
    fn spec_vector() -> Vec<u8> {
        let mut p = Vec::new();
        p.extend_from_slice(b"HEP3");
        p.extend_from_slice(&113u16.to_be_bytes());
        let mut c = |id: u16, v: &[u8]| {
            p.extend_from_slice(&0u16.to_be_bytes());
            p.extend_from_slice(&id.to_be_bytes());
            p.extend_from_slice(&((v.len() + 6) as u16).to_be_bytes());
            p.extend_from_slice(v);
        };
        c(1, &[2]);
        c(2, &[17]);
        c(3, &[212, 202, 0, 1]);
        c(4, &[82, 116, 0, 211]);
        c(7, &12010u16.to_be_bytes());
        c(8, &5060u16.to_be_bytes());
        c(9, &1_313_440_459u32.to_be_bytes());
        c(10, &120_000u32.to_be_bytes());
        c(11, &[1]);
        c(12, &228u32.to_be_bytes());
        c(15, b"INVITE sip:bob");
        p
    }

    fn chunk(vendor: u16, id: u16, v: &[u8]) -> Vec<u8> {
        let mut c = Vec::new();
        c.extend_from_slice(&vendor.to_be_bytes());
        c.extend_from_slice(&id.to_be_bytes());
        c.extend_from_slice(&((v.len() + 6) as u16).to_be_bytes());
        c.extend_from_slice(v);
        c
    }

    fn dec(p: &[u8]) -> Result<HepMessage<'static>, HepError> {
        decode(p).map(HepMessage::into_owned)
    }

    fn hep3(chunks: &[Vec<u8>]) -> Vec<u8> {
        let body: Vec<u8> = chunks.concat();
        let mut p = b"HEP3".to_vec();
        p.extend_from_slice(&((body.len() + 6) as u16).to_be_bytes());
        p.extend_from_slice(&body);
        p
    }

    #[test]
    fn spec_test_vector() {
        let p = spec_vector();
        assert_eq!(p.len(), 113);
        let m = decode(&p).unwrap();
        assert_eq!(m.version, Version::V3);
        assert_eq!(m.family, Some(2));
        assert_eq!(m.ip_proto, Some(17));
        assert_eq!(m.src_ip, Some("212.202.0.1".parse().unwrap()));
        assert_eq!(m.dst_ip, Some("82.116.0.211".parse().unwrap()));
        assert_eq!(m.src_port, Some(12010));
        assert_eq!(m.dst_port, Some(5060));
        assert_eq!(
            m.timestamp(),
            Some(crate::HepTime {
                secs: 1_313_440_459,
                micros: 120_000,
                repaired: false
            })
        );
        assert_eq!(m.proto_type, Some(ProtoType::SIP));
        assert_eq!(m.capture_id, Some(228));
        assert_eq!(m.payload_bytes(), b"INVITE sip:bob");
        assert_eq!(m.skipped_chunks, 0);
        // The encoder writes the same chunks in the same order: byte for byte the vector.
        let mut out = Vec::new();
        encode_v3(&m, &mut out).unwrap();
        assert_eq!(out, p);
    }

    #[test]
    fn truncated_and_bad_lengths() {
        let p = spec_vector();
        // Cut anywhere: the header length claims more than is there.
        for cut in 6..p.len() {
            assert_eq!(
                decode(&p[..cut]),
                Err(HepError::LengthBeyondPacket),
                "{cut}"
            );
        }
        assert_eq!(decode(&p[..5]), Err(HepError::TooShort));
        assert_eq!(decode(b"HE"), Err(HepError::TooShort));
        assert_eq!(decode(b""), Err(HepError::TooShort));
        // Huge claimed total length.
        let mut q = p.clone();
        q[4..6].copy_from_slice(&65535u16.to_be_bytes());
        assert_eq!(decode(&q), Err(HepError::LengthBeyondPacket));
        // Total length below the header.
        q[4..6].copy_from_slice(&5u16.to_be_bytes());
        assert_eq!(decode(&q), Err(HepError::BadLength));
        // A header length that ends inside a chunk: the chunk overruns the message.
        q[4..6].copy_from_slice(&110u16.to_be_bytes());
        assert_eq!(decode(&q), Err(HepError::ChunkBeyondPacket));
        // Ends 3 bytes after the last chunk boundary: a truncated chunk header.
        let mut r = p.clone();
        r.extend_from_slice(&[0, 0, 0]);
        r[4..6].copy_from_slice(&116u16.to_be_bytes());
        assert_eq!(decode(&r), Err(HepError::TruncatedChunk));
        // Trailing bytes beyond the header length are ignored.
        let mut s = p.clone();
        s.extend_from_slice(&[0xaa; 7]);
        assert_eq!(decode(&s).unwrap().payload_bytes(), b"INVITE sip:bob");
        // Unknown first bytes.
        assert_eq!(decode(b"EEP3\0\x06"), Err(HepError::UnknownVersion));
        assert_eq!(decode(&[9; 40]), Err(HepError::UnknownVersion));
    }

    #[test]
    fn chunk_length_errors() {
        let sip = chunk(0, 15, b"OPTIONS sip:x SIP/2.0\r\n\r\n");
        // Zero-length chunk: would loop forever if accepted.
        let mut zero = chunk(0, 1, &[]);
        zero[4..6].copy_from_slice(&0u16.to_be_bytes());
        zero.truncate(6);
        assert_eq!(
            decode(&hep3(&[zero, sip.clone()])),
            Err(HepError::BadChunkLength)
        );
        // Length 5 (without its own header, the hep-js bug).
        let mut five = chunk(0, 1, &[2]);
        five[4..6].copy_from_slice(&1u16.to_be_bytes());
        assert_eq!(decode(&hep3(&[five])), Err(HepError::BadChunkLength));
        // Chunk claims beyond the message.
        let mut long = chunk(0, 15, b"abc");
        long[4..6].copy_from_slice(&60000u16.to_be_bytes());
        assert_eq!(decode(&hep3(&[long])), Err(HepError::ChunkBeyondPacket));
        // A used chunk with a wrong-size value.
        assert_eq!(
            decode(&hep3(&[chunk(0, 3, &[1, 2, 3]), sip.clone()])),
            Err(HepError::BadChunkValue(3))
        );
        assert_eq!(
            decode(&hep3(&[chunk(0, 7, &[1]), sip.clone()])),
            Err(HepError::BadChunkValue(7))
        );
    }

    #[test]
    fn unknown_vendor_and_chunk_ids_are_skipped() {
        let m = dec(&hep3(&[
            chunk(0x0002, 0x0001, b"kamailio private"),
            chunk(0, 0x0020, &[0, 42]), // MOS
            chunk(0, 0x7777, b"future"),
            chunk(0, 0x13, b"edge-1"),
            chunk(0, 0x11, b"call-1@x"),
            chunk(0, 0x12, &7u16.to_be_bytes()),
            chunk(0, 0x0e, b"secret"),
            chunk(0, 0x0c, &2002u16.to_be_bytes()), // 16-bit capture id, tolerated
            chunk(
                0,
                5,
                &[0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            ),
            chunk(0, 4, &[192, 0, 2, 1]),
            chunk(0, 15, b"BYE sip:x SIP/2.0\r\n\r\n"),
        ]))
        .unwrap();
        assert_eq!(m.skipped_chunks, 3);
        assert_eq!(m.node_name.as_deref(), Some(&b"edge-1"[..]));
        assert_eq!(m.correlation_id.as_deref(), Some(&b"call-1@x"[..]));
        assert_eq!(m.vlan, Some(7));
        assert_eq!(m.auth_key.as_deref(), Some(&b"secret"[..]));
        assert_eq!(m.capture_id, Some(2002));
        assert_eq!(m.timestamp(), None, "no timestamp: arrival time");
        // Mixed families: the v4 peer is mapped into v6.
        let (s, d, complete) = m.socket_addrs();
        assert!(complete);
        assert_eq!(s.ip(), "2001:db8::1".parse::<IpAddr>().unwrap());
        assert_eq!(d.ip(), "::ffff:192.0.2.1".parse::<IpAddr>().unwrap());
        assert_eq!((s.port(), d.port()), (0, 0));
    }

    #[test]
    fn timestamps_are_repaired() {
        let with = |s: u32, us: u32| {
            let p = hep3(&[
                chunk(0, 9, &s.to_be_bytes()),
                chunk(0, 10, &us.to_be_bytes()),
            ]);
            decode(&p).unwrap().timestamp()
        };
        assert_eq!(with(0, 5), None);
        let ntp = with(1_700_000_000 + NTP, 1).unwrap();
        assert_eq!(
            (ntp.secs, ntp.micros, ntp.repaired),
            (1_700_000_000, 1, true)
        );
        let us = with(1_700_000_000, 5_000_000).unwrap();
        assert_eq!(
            (us.secs, us.micros, us.repaired),
            (1_700_000_000, 999_999, true)
        );
    }
    const NTP: u32 = crate::NTP_UNIX_OFFSET;

    fn compressed(kind: &str, data: &[u8]) -> Vec<u8> {
        match kind {
            "gzip" => {
                let mut e = GzEncoder::new(Vec::new(), Compression::default());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            "zlib" => {
                let mut e = ZlibEncoder::new(Vec::new(), Compression::default());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            _ => {
                let mut e = DeflateEncoder::new(Vec::new(), Compression::default());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
        }
    }

    #[test]
    fn compressed_payload_in_every_wrapper() {
        let sip = b"INVITE sip:bob@example.com SIP/2.0\r\nCall-ID: z\r\n\r\n".repeat(3);
        for kind in ["gzip", "zlib", "deflate"] {
            let m = dec(&hep3(&[
                chunk(0, 11, &[1]),
                chunk(0, 0x10, &compressed(kind, &sip)),
            ]))
            .unwrap();
            assert!(m.payload_compressed, "{kind}");
            assert_eq!(m.payload_bytes(), &sip[..], "{kind}");
        }
        // Garbage that is none of them.
        assert_eq!(
            decode(&hep3(&[chunk(0, 0x10, &[0x1f, 0x8b, 8, 0, 1, 2, 3, 4])])),
            Err(HepError::BadCompression)
        );
        assert_eq!(
            decode(&hep3(&[chunk(0, 0x10, &[0xff; 32])])),
            Err(HepError::BadCompression)
        );
    }

    #[test]
    fn decompression_bomb_is_capped() {
        let bomb = compressed("zlib", &vec![0u8; 10 * 1024 * 1024]);
        assert!(bomb.len() < 20_000, "{}", bomb.len());
        let p = hep3(&[chunk(0, 0x10, &bomb)]);
        assert_eq!(decode(&p), Err(HepError::InflateTooLarge));
        // Exactly at the cap is fine.
        let ok = compressed("gzip", &vec![b'a'; DEFAULT_MAX_INFLATED]);
        let m = dec(&hep3(&[chunk(0, 0x10, &ok)])).unwrap();
        assert_eq!(m.payload_bytes().len(), DEFAULT_MAX_INFLATED);
        let small = Limits { max_inflated: 100 };
        assert_eq!(
            decode_with(&hep3(&[chunk(0, 0x10, &ok)]), &small),
            Err(HepError::InflateTooLarge)
        );
    }

    #[test]
    fn whole_datagram_gzip() {
        let p = spec_vector();
        let z = compressed("gzip", &p);
        let m = decode(&z).unwrap();
        assert!(m.gzipped);
        assert_eq!(m.payload_bytes(), b"INVITE sip:bob");
        assert_eq!(m.capture_id, Some(228));
        // Gzip of gzip is refused, gzip of garbage is counted as such.
        assert_eq!(
            decode(&compressed("gzip", &z)),
            Err(HepError::NestedCompression)
        );
        assert_eq!(
            decode(&compressed("gzip", b"hello")),
            Err(HepError::UnknownVersion)
        );
        let bomb = compressed("gzip", &vec![0u8; 4 * 1024 * 1024]);
        assert_eq!(decode(&bomb), Err(HepError::InflateTooLarge));
        assert_eq!(decode(&z[..z.len() - 10]), Err(HepError::BadCompression));
    }

    fn v2(family: u8, pad: bool, little_endian: bool) -> Vec<u8> {
        let mut p = vec![2, if family == 2 { 16 } else { 40 }, family, 17];
        p.extend_from_slice(&5060u16.to_be_bytes());
        p.extend_from_slice(&5080u16.to_be_bytes());
        if family == 2 {
            p.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
        } else {
            p.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
            p.extend_from_slice(&"2001:db8::2".parse::<Ipv6Addr>().unwrap().octets());
        }
        let (s, us, id) = (1_700_000_123u32, 654_321u32, 2002u16);
        if little_endian {
            p.extend_from_slice(&s.to_le_bytes());
            p.extend_from_slice(&us.to_le_bytes());
        } else {
            p.extend_from_slice(&s.to_be_bytes());
            p.extend_from_slice(&us.to_be_bytes());
        }
        p.extend_from_slice(&id.to_le_bytes());
        if pad {
            p.extend_from_slice(&[0, 0]);
        }
        p.extend_from_slice(b"REGISTER sip:example.com SIP/2.0\r\n\r\n");
        p
    }

    #[test]
    fn hep_v2_packets() {
        for family in [2u8, 10] {
            for pad in [false, true] {
                for le in [true, false] {
                    let p = v2(family, pad, le);
                    let m = decode(&p).unwrap();
                    assert_eq!(m.version, Version::V2);
                    assert_eq!(m.proto_type, Some(ProtoType::SIP));
                    assert_eq!(m.src_port, Some(5060));
                    assert_eq!(m.dst_port, Some(5080));
                    let t = m.timestamp().unwrap();
                    assert_eq!(
                        (t.secs, t.micros),
                        (1_700_000_123, 654_321),
                        "{family} {pad} {le}"
                    );
                    assert_eq!(m.capture_id, Some(2002));
                    assert_eq!(
                        m.payload_bytes(),
                        b"REGISTER sip:example.com SIP/2.0\r\n\r\n",
                        "{family} {pad} {le}"
                    );
                    if family == 10 {
                        assert_eq!(m.src_ip, Some(IpAddr::V6(Ipv6Addr::LOCALHOST)));
                    } else {
                        assert_eq!(m.dst_ip, Some("10.0.0.2".parse().unwrap()));
                    }
                }
            }
        }
        // v1: no time block.
        let mut v1 = v2(2, false, true);
        v1[0] = 1;
        v1.drain(16..26);
        let m = decode(&v1).unwrap();
        assert_eq!(m.version, Version::V1);
        assert_eq!(m.timestamp(), None);
        assert!(m.payload_bytes().starts_with(b"REGISTER "));
        // Truncations and bad families.
        let p = v2(10, true, true);
        for cut in 1..50 {
            assert!(decode(&p[..cut]).is_err(), "{cut}");
        }
        assert_eq!(decode(&p[..30]), Err(HepError::TruncatedLegacy));
        let mut bad = p.clone();
        bad[2] = 23;
        assert_eq!(decode(&bad), Err(HepError::BadFamily));
    }

    #[test]
    fn reasons_are_distinct_and_indexed() {
        let mut names: Vec<_> = HepError::ALL.iter().map(|e| e.reason()).collect();
        for (i, e) in HepError::ALL.iter().enumerate() {
            assert_eq!(e.index(), i);
        }
        names.sort();
        names.dedup();
        assert_eq!(names.len(), HepError::ALL.len());
    }
}
