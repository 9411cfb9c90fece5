//! Frame builders: Ethernet II (optionally 802.1Q tagged), IPv4 with header checksum, IPv6,
//! UDP and TCP with pseudo-header checksums.
//!
//! Builders append one whole frame to a caller-owned buffer, so the generator reuses one
//! allocation for millions of packets.

use std::net::{IpAddr, SocketAddr};

/// Largest IP payload a frame may carry (IPv4 total length and IPv6 payload length are
/// 16-bit fields).
pub const MAX_IP_PAYLOAD: usize = 65_535 - 20;

/// Hop limit / TTL of every packet.
pub const TTL: u8 = 64;

/// TCP flag bits.
pub mod tcp_flags {
    /// No more data from sender.
    pub const FIN: u8 = 0x01;
    /// Synchronize sequence numbers.
    pub const SYN: u8 = 0x02;
    /// Push buffered data to the application.
    pub const PSH: u8 = 0x08;
    /// Acknowledgment field is significant.
    pub const ACK: u8 = 0x10;
}

/// Why a frame could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PacketError {
    /// Source and destination are of different IP families.
    #[error("source and destination address families differ")]
    FamilyMismatch,
    /// The payload does not fit one IP packet.
    #[error("payload of {0} bytes does not fit one IP packet")]
    TooLarge(usize),
}

/// Link-layer framing of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    /// Source MAC.
    pub src_mac: [u8; 6],
    /// Destination MAC.
    pub dst_mac: [u8; 6],
    /// 802.1Q VLAN id (the tag is omitted when `None`).
    pub vlan: Option<u16>,
    /// 802.1Q priority code point (0..=7), e.g. 5 for voice, 3 for signaling.
    pub pcp: u8,
}

/// A locally administered MAC derived from an IP address, so each host has a stable MAC.
pub fn mac_for(ip: IpAddr) -> [u8; 6] {
    let o = match ip {
        IpAddr::V4(v4) => v4.octets(),
        IpAddr::V6(v6) => {
            let s = v6.octets();
            [s[6], s[7], s[14], s[15]]
        }
    };
    [0x02, 0x00, o[0], o[1], o[2], o[3]]
}

/// TCP header fields the builder does not derive itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpFields {
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number (sent as-is; set the ACK flag to make it meaningful).
    pub ack: u32,
    /// Flag bits from [`tcp_flags`].
    pub flags: u8,
    /// Receive window.
    pub window: u16,
}

/// One's complement sum of `data` (as big-endian 16-bit words) added to `acc`.
fn sum16(data: &[u8], mut acc: u64) -> u64 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        if let [hi, lo] = *c {
            acc += u64::from(u16::from_be_bytes([hi, lo]));
        }
    }
    if let [last] = chunks.remainder() {
        acc += u64::from(*last) << 8;
    }
    acc
}

/// Patches a checksum field of the header just written (always in bounds: `at` points
/// inside that header).
fn put_be16(buf: &mut [u8], at: usize, v: u16) {
    if let Some(field) = buf.get_mut(at..at + 2) {
        field.copy_from_slice(&v.to_be_bytes());
    }
}

fn fold(mut acc: u64) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xFFFF) + (acc >> 16);
    }
    !(acc as u16)
}

/// RFC 1071 Internet checksum of `data`; a buffer that includes a correct checksum sums to 0.
pub fn internet_checksum(data: &[u8]) -> u16 {
    fold(sum16(data, 0))
}

fn pseudo_sum(src: IpAddr, dst: IpAddr, proto: u8, len: usize) -> u64 {
    let mut acc = 0;
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            acc = sum16(&s.octets(), acc);
            acc = sum16(&d.octets(), acc);
        }
        (s, d) => {
            for ip in [s, d] {
                if let IpAddr::V6(v6) = ip {
                    acc = sum16(&v6.octets(), acc);
                }
            }
        }
    }
    acc + u64::from(proto) + len as u64
}

/// Appends Ethernet (+VLAN) and IP headers; returns the offset of the IP payload.
fn push_l2_l3(
    buf: &mut Vec<u8>,
    link: &Link,
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    l4_len: usize,
    ip_id: u16,
) -> Result<usize, PacketError> {
    if l4_len > MAX_IP_PAYLOAD {
        return Err(PacketError::TooLarge(l4_len));
    }
    buf.extend_from_slice(&link.dst_mac);
    buf.extend_from_slice(&link.src_mac);
    if let Some(vlan) = link.vlan {
        buf.extend_from_slice(&0x8100u16.to_be_bytes());
        let tci = (u16::from(link.pcp & 7) << 13) | (vlan & 0x0FFF);
        buf.extend_from_slice(&tci.to_be_bytes());
    }
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            buf.extend_from_slice(&0x0800u16.to_be_bytes());
            let start = buf.len();
            let total = (20 + l4_len) as u16;
            buf.extend_from_slice(&[0x45, 0xB8]); // DSCP EF would be voice; harmless for SIP.
            buf.extend_from_slice(&total.to_be_bytes());
            buf.extend_from_slice(&ip_id.to_be_bytes());
            buf.extend_from_slice(&0x4000u16.to_be_bytes()); // Don't Fragment.
            buf.extend_from_slice(&[TTL, proto, 0, 0]);
            buf.extend_from_slice(&s.octets());
            buf.extend_from_slice(&d.octets());
            let sum = internet_checksum(buf.get(start..).unwrap_or_default());
            put_be16(buf, start + 10, sum);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            buf.extend_from_slice(&0x86DDu16.to_be_bytes());
            buf.extend_from_slice(&[0x6B, 0x80, 0, 0]); // Version 6, traffic class 0xB8.
            buf.extend_from_slice(&(l4_len as u16).to_be_bytes());
            buf.extend_from_slice(&[proto, TTL]);
            buf.extend_from_slice(&s.octets());
            buf.extend_from_slice(&d.octets());
        }
        _ => return Err(PacketError::FamilyMismatch),
    }
    Ok(buf.len())
}

/// Appends one Ethernet/IP/UDP frame carrying `payload` to `buf`.
pub fn udp_frame(
    buf: &mut Vec<u8>,
    link: &Link,
    src: SocketAddr,
    dst: SocketAddr,
    payload: &[u8],
    ip_id: u16,
) -> Result<(), PacketError> {
    let l4_len = 8 + payload.len();
    let mark = buf.len();
    let start = match push_l2_l3(buf, link, src.ip(), dst.ip(), 17, l4_len, ip_id) {
        Ok(s) => s,
        Err(e) => {
            buf.truncate(mark);
            return Err(e);
        }
    };
    buf.extend_from_slice(&src.port().to_be_bytes());
    buf.extend_from_slice(&dst.port().to_be_bytes());
    buf.extend_from_slice(&(l4_len as u16).to_be_bytes());
    buf.extend_from_slice(&[0, 0]);
    buf.extend_from_slice(payload);
    let sum = fold(sum16(
        buf.get(start..).unwrap_or_default(),
        pseudo_sum(src.ip(), dst.ip(), 17, l4_len),
    ));
    // 0 means "no checksum" in UDP; RFC 768 sends all ones instead.
    let sum = if sum == 0 { 0xFFFF } else { sum };
    put_be16(buf, start + 6, sum);
    Ok(())
}

/// Appends one Ethernet/IP/TCP frame (20-byte header, no options) carrying `payload`.
pub fn tcp_frame(
    buf: &mut Vec<u8>,
    link: &Link,
    src: SocketAddr,
    dst: SocketAddr,
    tcp: &TcpFields,
    payload: &[u8],
    ip_id: u16,
) -> Result<(), PacketError> {
    let l4_len = 20 + payload.len();
    let mark = buf.len();
    let start = match push_l2_l3(buf, link, src.ip(), dst.ip(), 6, l4_len, ip_id) {
        Ok(s) => s,
        Err(e) => {
            buf.truncate(mark);
            return Err(e);
        }
    };
    buf.extend_from_slice(&src.port().to_be_bytes());
    buf.extend_from_slice(&dst.port().to_be_bytes());
    buf.extend_from_slice(&tcp.seq.to_be_bytes());
    buf.extend_from_slice(&tcp.ack.to_be_bytes());
    buf.extend_from_slice(&[5 << 4, tcp.flags]);
    buf.extend_from_slice(&tcp.window.to_be_bytes());
    buf.extend_from_slice(&[0, 0, 0, 0]); // Checksum, urgent pointer.
    buf.extend_from_slice(payload);
    let sum = fold(sum16(
        buf.get(start..).unwrap_or_default(),
        pseudo_sum(src.ip(), dst.ip(), 6, l4_len),
    ));
    put_be16(buf, start + 16, sum);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(vlan: Option<u16>) -> Link {
        Link {
            src_mac: [2, 0, 1, 2, 3, 4],
            dst_mac: [2, 0, 5, 6, 7, 8],
            vlan,
            pcp: 5,
        }
    }

    fn verify_l4(frame: &[u8], l3: usize, v6: bool, proto: u8) {
        let (src, dst, l4) = if v6 {
            let s: [u8; 16] = frame[l3 + 8..l3 + 24].try_into().unwrap();
            let d: [u8; 16] = frame[l3 + 24..l3 + 40].try_into().unwrap();
            (IpAddr::from(s), IpAddr::from(d), &frame[l3 + 40..])
        } else {
            assert_eq!(
                internet_checksum(&frame[l3..l3 + 20]),
                0,
                "ipv4 header checksum"
            );
            let s: [u8; 4] = frame[l3 + 12..l3 + 16].try_into().unwrap();
            let d: [u8; 4] = frame[l3 + 16..l3 + 20].try_into().unwrap();
            (IpAddr::from(s), IpAddr::from(d), &frame[l3 + 20..])
        };
        assert_eq!(
            fold(sum16(l4, pseudo_sum(src, dst, proto, l4.len()))),
            0,
            "l4 checksum"
        );
    }

    #[test]
    fn udp_v4_with_vlan() {
        let mut buf = Vec::new();
        let src: SocketAddr = "10.1.0.1:20000".parse().unwrap();
        let dst: SocketAddr = "10.2.0.1:20000".parse().unwrap();
        udp_frame(&mut buf, &link(Some(42)), src, dst, b"hello rtp", 7).unwrap();
        assert_eq!(buf.len(), 18 + 20 + 8 + 9);
        assert_eq!(&buf[12..14], &[0x81, 0x00]);
        assert_eq!(u16::from_be_bytes([buf[14], buf[15]]) & 0x0FFF, 42);
        assert_eq!(&buf[16..18], &[0x08, 0x00]);
        verify_l4(&buf, 18, false, 17);
        assert_eq!(&buf[buf.len() - 9..], b"hello rtp");
    }

    #[test]
    fn udp_and_tcp_v6() {
        let mut buf = Vec::new();
        let src: SocketAddr = "[fd00:0:0:1::1]:5060".parse().unwrap();
        let dst: SocketAddr = "[fd00:0:0:2::1]:5060".parse().unwrap();
        udp_frame(&mut buf, &link(None), src, dst, b"odd-length", 0).unwrap();
        assert_eq!(&buf[12..14], &[0x86, 0xDD]);
        verify_l4(&buf, 14, true, 17);
        buf.clear();
        let tcp = TcpFields {
            seq: 1,
            ack: 2,
            flags: tcp_flags::PSH | tcp_flags::ACK,
            window: 64240,
        };
        tcp_frame(&mut buf, &link(None), src, dst, &tcp, b"INVITE", 1).unwrap();
        verify_l4(&buf, 14, true, 6);
    }

    #[test]
    fn tcp_v4_checksum() {
        let mut buf = Vec::new();
        let src: SocketAddr = "10.1.0.1:49152".parse().unwrap();
        let dst: SocketAddr = "10.2.0.1:5060".parse().unwrap();
        let tcp = TcpFields {
            seq: u32::MAX,
            ack: 0,
            flags: tcp_flags::SYN,
            window: 64240,
        };
        tcp_frame(&mut buf, &link(None), src, dst, &tcp, &[], 9).unwrap();
        assert_eq!(buf.len(), 14 + 20 + 20);
        verify_l4(&buf, 14, false, 6);
    }

    #[test]
    fn rejects_bad_input() {
        let mut buf = vec![1, 2, 3];
        let v4: SocketAddr = "10.1.0.1:1".parse().unwrap();
        let v6: SocketAddr = "[::1]:1".parse().unwrap();
        assert_eq!(
            udp_frame(&mut buf, &link(None), v4, v6, b"x", 0),
            Err(PacketError::FamilyMismatch)
        );
        assert_eq!(buf, [1, 2, 3], "failed build leaves the buffer untouched");
        let huge = vec![0u8; 70_000];
        assert_eq!(
            udp_frame(&mut buf, &link(None), v4, v4, &huge, 0),
            Err(PacketError::TooLarge(70_008))
        );
        assert_eq!(buf, [1, 2, 3]);
    }

    #[test]
    fn checksum_reference() {
        // RFC 1071 example words 0x0001 0xf203 0xf4f5 0xf6f7 sum to 0xddf2 -> checksum 0x220d.
        assert_eq!(
            internet_checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            0x220d
        );
        assert_eq!(mac_for("10.1.2.3".parse().unwrap()), [2, 0, 10, 1, 2, 3]);
    }
}
