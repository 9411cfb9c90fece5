//! The HEP3 encoder: a [`HepMessage`] to bytes, chunks in heplify's order, integers in
//! network order (the capture id as a true u32, never 16-bit swapped as some agents do).

use crate::{chunk, HepMessage, CHUNK_HEADER, HEP3_HEADER, HEP3_MAGIC, MAX_MESSAGE};
use std::net::IpAddr;

/// Why a message could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The message would exceed 65535 bytes (HEP3's u16 length): truncate the payload first.
    #[error("HEP3 message of {0} bytes exceeds 65535")]
    TooLarge(usize),
}

/// Appends `m` as one HEP3 message to `out`. Every present field is written (the payload
/// uncompressed, in chunk 0x000f); the family chunk follows the source address (or the
/// destination's when the source is absent). On error `out` is left as it was.
pub fn encode_v3(m: &HepMessage<'_>, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let start = out.len();
    out.extend_from_slice(&HEP3_MAGIC);
    out.extend_from_slice(&[0, 0]);
    let mut put = |id: u16, v: &[u8]| {
        out.extend_from_slice(&0u16.to_be_bytes());
        out.extend_from_slice(&id.to_be_bytes());
        let len = u16::try_from(v.len().saturating_add(CHUNK_HEADER)).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(v);
    };
    let family = m.family.or(match m.src_ip.or(m.dst_ip) {
        Some(IpAddr::V4(_)) => Some(2),
        Some(IpAddr::V6(_)) => Some(10),
        None => None,
    });
    if let Some(f) = family {
        put(chunk::IP_FAMILY, &[f]);
    }
    if let Some(p) = m.ip_proto {
        put(chunk::IP_PROTO, &[p]);
    }
    for (ip, v4, v6) in [
        (m.src_ip, chunk::IPV4_SRC, chunk::IPV6_SRC),
        (m.dst_ip, chunk::IPV4_DST, chunk::IPV6_DST),
    ] {
        match ip {
            Some(IpAddr::V4(a)) => put(v4, &a.octets()),
            Some(IpAddr::V6(a)) => put(v6, &a.octets()),
            None => {}
        }
    }
    if let Some(p) = m.src_port {
        put(chunk::SRC_PORT, &p.to_be_bytes());
    }
    if let Some(p) = m.dst_port {
        put(chunk::DST_PORT, &p.to_be_bytes());
    }
    if let Some(s) = m.ts_secs {
        put(chunk::TS_SECS, &s.to_be_bytes());
    }
    if let Some(us) = m.ts_micros {
        put(chunk::TS_MICROS, &us.to_be_bytes());
    }
    if let Some(t) = m.proto_type {
        put(chunk::PROTO_TYPE, &[t.0]);
    }
    if let Some(id) = m.capture_id {
        put(chunk::CAPTURE_ID, &id.to_be_bytes());
    }
    if let Some(k) = m.keepalive {
        put(chunk::KEEPALIVE, &k.to_be_bytes());
    }
    if let Some(v) = m.vlan {
        put(chunk::VLAN, &v.to_be_bytes());
    }
    if let Some(n) = &m.node_name {
        put(chunk::NODE_NAME, n);
    }
    if let Some(c) = &m.correlation_id {
        put(chunk::CORRELATION_ID, c);
    }
    if let Some(k) = &m.auth_key {
        put(chunk::AUTH_KEY, k);
    }
    if let Some(p) = &m.payload {
        put(chunk::PAYLOAD, p);
    }
    let total = out.len() - start;
    // Any value over 65529 bytes already makes the total exceed the maximum.
    let Ok(len) = u16::try_from(total) else {
        out.truncate(start);
        return Err(EncodeError::TooLarge(total));
    };
    debug_assert!((HEP3_HEADER..=MAX_MESSAGE).contains(&total));
    if let Some(l) = out.get_mut(start + 4..start + 6) {
        l.copy_from_slice(&len.to_be_bytes());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{decode, ProtoType};
    use std::borrow::Cow;

    #[test]
    fn round_trip_and_size_limit() {
        let m = HepMessage {
            family: Some(10),
            ip_proto: Some(6),
            src_ip: Some("2001:db8::1".parse().unwrap()),
            dst_ip: Some("2001:db8::2".parse().unwrap()),
            src_port: Some(5061),
            dst_port: Some(5060),
            ts_secs: Some(1_700_000_000),
            ts_micros: Some(1),
            proto_type: Some(ProtoType::SIP),
            capture_id: Some(0x0102_0304),
            vlan: Some(12),
            node_name: Some(Cow::Borrowed(b"node")),
            correlation_id: Some(Cow::Borrowed(b"cid")),
            auth_key: Some(Cow::Borrowed(b"k")),
            keepalive: Some(30),
            payload: Some(Cow::Borrowed(b"SIP/2.0 200 OK\r\n\r\n")),
            ..HepMessage::default()
        };
        let mut out = vec![0xee];
        encode_v3(&m, &mut out).unwrap();
        assert_eq!(decode(&out[1..]).unwrap(), m);
        // The capture id is a real big-endian u32 on the wire.
        assert!(out.windows(4).any(|w| w == [1, 2, 3, 4]));
        let big = HepMessage {
            payload: Some(Cow::Owned(vec![b'x'; 65530])),
            ..HepMessage::default()
        };
        let mut out = vec![1, 2];
        assert!(matches!(
            encode_v3(&big, &mut out),
            Err(EncodeError::TooLarge(_))
        ));
        assert_eq!(out, [1, 2]);
        let fits = HepMessage {
            payload: Some(Cow::Owned(vec![b'x'; 65535 - 12])),
            ..HepMessage::default()
        };
        let mut out = Vec::new();
        encode_v3(&fits, &mut out).unwrap();
        assert_eq!(out.len(), 65535);
        assert_eq!(decode(&out).unwrap().payload_bytes().len(), 65523);
    }
}
