//! IPv4 and IPv6 (extension headers, fragments), UDP, TCP segment parsing, and the
//! IP-level tunnels: GRE (RFC 2784/2890) with ERSPAN I/II/III, VXLAN, IP-in-IP and
//! IPv6-in-IP. IPv4 header checksums are deliberately not verified: captures taken on the
//! sending host carry unfilled checksums (offload), and a tap must not drop those.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::bytes::{be16, be32};
use crate::decoder::{Ctx, Decoder};
use crate::frag::FragKey;
use crate::link::{ETH_IPV4, ETH_IPV6, ETH_TEB};
use crate::stats::SkipReason;
use crate::tcp::Seg;
use crate::{Datagram, Transport};

/// Most IPv6 extension headers we walk before the upper-layer header.
const MAX_IPV6_EXT_HEADERS: usize = 8;

/// UDP port of VXLAN (RFC 7348).
const VXLAN_PORT: u16 = 4789;

const PROTO_HOPOPT: u8 = 0;
const PROTO_IPIP: u8 = 4;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const PROTO_IPV6: u8 = 41;
const PROTO_ROUTING: u8 = 43;
const PROTO_FRAGMENT: u8 = 44;
const PROTO_GRE: u8 = 47;
const PROTO_AH: u8 = 51;
const PROTO_DSTOPTS: u8 = 60;
const PROTO_SCTP: u8 = 132;

const GRE_ERSPAN_2: u16 = 0x88BE;
const GRE_ERSPAN_3: u16 = 0x22EB;
const GRE_MPLS: u16 = 0x8847;

type Out<'o> = &'o mut dyn FnMut(Datagram<'_>);

/// Where an IPv6 extension-header walk stopped.
enum V6Walk {
    /// Upper-layer protocol and the offset of its header.
    Upper(u8, usize),
    /// A fragment header: (next header, offset in bytes, more flag, id, fragment data offset).
    Fragment(u8, usize, bool, u32, usize),
}

/// Walks extension headers starting with `nh` at `off` in `d`.
fn v6_walk(mut nh: u8, d: &[u8], mut off: usize) -> Result<V6Walk, SkipReason> {
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        match nh {
            PROTO_HOPOPT | PROTO_ROUTING | PROTO_DSTOPTS | PROTO_AH => {
                let (Some(&next), Some(&hl)) = (d.get(off), d.get(off + 1)) else {
                    return Err(SkipReason::Truncated);
                };
                let len = if nh == PROTO_AH {
                    (usize::from(hl) + 2) * 4
                } else {
                    (usize::from(hl) + 1) * 8
                };
                off += len;
                if off > d.len() {
                    return Err(SkipReason::Truncated);
                }
                nh = next;
            }
            PROTO_FRAGMENT => {
                let (Some(&next), Some(offm), Some(id)) =
                    (d.get(off), be16(d, off + 2), be32(d, off + 4))
                else {
                    return Err(SkipReason::Truncated);
                };
                let frag_off = usize::from(offm & 0xFFF8);
                return Ok(V6Walk::Fragment(next, frag_off, offm & 1 != 0, id, off + 8));
            }
            _ => return Ok(V6Walk::Upper(nh, off)),
        }
    }
    Err(SkipReason::BadIpv6Header)
}

impl Decoder {
    pub(crate) fn ipv4(&mut self, ctx: Ctx, d: &[u8], out: Out<'_>) {
        let (Some(&vihl), Some(total), Some(fo), Some(&proto), Some(s), Some(t)) = (
            d.first(),
            be16(d, 2),
            be16(d, 6),
            d.get(9),
            be32(d, 12),
            be32(d, 16),
        ) else {
            return self.skip(SkipReason::Truncated);
        };
        let ihl = usize::from(vihl & 0x0F) * 4;
        if vihl >> 4 != 4 || ihl < 20 {
            return self.skip(SkipReason::BadIpv4Header);
        }
        // Total length 0 appears on TSO-offloaded outgoing packets: use what was captured.
        let total = if total == 0 {
            d.len()
        } else {
            usize::from(total)
        };
        if total < ihl {
            return self.skip(SkipReason::BadIpv4Header);
        }
        // Trimming to the total length drops Ethernet padding.
        let Some(payload) = d.get(ihl..total) else {
            return self.skip(SkipReason::Truncated);
        };
        let src = IpAddr::V4(Ipv4Addr::from(s));
        let dst = IpAddr::V4(Ipv4Addr::from(t));
        let more = fo & 0x2000 != 0;
        let off = usize::from(fo & 0x1FFF) * 8;
        if more || off != 0 {
            let Some(id) = be16(d, 4) else { return };
            let key = FragKey {
                src,
                dst,
                id: u32::from(id),
                proto,
            };
            if let Some(whole) = self
                .frags
                .insert(key, off, more, payload, ctx.ts, &mut self.stats)
            {
                self.l4(ctx, src, dst, proto, &whole, out);
            }
            return;
        }
        self.l4(ctx, src, dst, proto, payload, out);
    }

    pub(crate) fn ipv6(&mut self, ctx: Ctx, d: &[u8], out: Out<'_>) {
        let (Some(&v), Some(plen), Some(&nh), Some(s), Some(t)) =
            (d.first(), be16(d, 4), d.get(6), d.get(8..24), d.get(24..40))
        else {
            return self.skip(SkipReason::Truncated);
        };
        if v >> 4 != 6 {
            return self.skip(SkipReason::BadIpv6Header);
        }
        let end = if plen == 0 {
            d.len()
        } else {
            40 + usize::from(plen)
        };
        let Some(d) = d.get(..end) else {
            return self.skip(SkipReason::Truncated);
        };
        let (Ok(s), Ok(t)) = (<[u8; 16]>::try_from(s), <[u8; 16]>::try_from(t)) else {
            return self.skip(SkipReason::Truncated);
        };
        let src = IpAddr::V6(Ipv6Addr::from(s));
        let dst = IpAddr::V6(Ipv6Addr::from(t));
        match v6_walk(nh, d, 40) {
            Err(r) => self.skip(r),
            Ok(V6Walk::Upper(proto, off)) => {
                self.l4(ctx, src, dst, proto, d.get(off..).unwrap_or(&[]), out)
            }
            Ok(V6Walk::Fragment(next, foff, more, id, data_off)) => {
                let key = FragKey {
                    src,
                    dst,
                    id,
                    proto: next,
                };
                let data = d.get(data_off..).unwrap_or(&[]);
                let Some(whole) = self
                    .frags
                    .insert(key, foff, more, data, ctx.ts, &mut self.stats)
                else {
                    return;
                };
                match v6_walk(next, &whole, 0) {
                    Ok(V6Walk::Upper(proto, off)) => {
                        self.l4(ctx, src, dst, proto, whole.get(off..).unwrap_or(&[]), out)
                    }
                    Ok(V6Walk::Fragment(..)) => self.skip(SkipReason::FragmentNested),
                    Err(r) => self.skip(r),
                }
            }
        }
    }

    /// Dispatches an IP payload (already reassembled) by protocol number.
    fn l4(&mut self, ctx: Ctx, src: IpAddr, dst: IpAddr, proto: u8, d: &[u8], out: Out<'_>) {
        match proto {
            PROTO_UDP => self.udp(ctx, src, dst, d, out),
            PROTO_TCP => self.tcp_segment(ctx, src, dst, d, out),
            PROTO_SCTP => self.sctp(ctx, src, dst, d, out),
            PROTO_GRE => self.gre(ctx, d, out),
            PROTO_IPIP => {
                if let Some(c) = self.deeper(ctx) {
                    self.ipv4(c, d, out);
                }
            }
            PROTO_IPV6 => {
                if let Some(c) = self.deeper(ctx) {
                    self.ipv6(c, d, out);
                }
            }
            _ => self.skip(SkipReason::UnsupportedIpProto),
        }
    }

    fn udp(&mut self, ctx: Ctx, src: IpAddr, dst: IpAddr, d: &[u8], out: Out<'_>) {
        let (Some(sp), Some(dp), Some(len)) = (be16(d, 0), be16(d, 2), be16(d, 4)) else {
            return self.skip(SkipReason::Truncated);
        };
        let len = usize::from(len);
        if len < 8 {
            return self.skip(SkipReason::BadUdp);
        }
        let Some(payload) = d.get(8..len) else {
            return self.skip(SkipReason::Truncated);
        };
        if dp == VXLAN_PORT && payload.first().is_some_and(|f| f & 0x08 != 0) {
            if let (Some(c), Some(inner)) = (self.deeper(ctx), payload.get(8..)) {
                self.ether(c, inner, out);
            }
            return;
        }
        self.stats.datagrams += 1;
        out(Datagram {
            ts: ctx.ts,
            src: SocketAddr::new(src, sp),
            dst: SocketAddr::new(dst, dp),
            transport: Transport::Udp,
            vlan: ctx.vlan,
            payload,
        });
    }

    fn tcp_segment(&mut self, ctx: Ctx, src: IpAddr, dst: IpAddr, d: &[u8], out: Out<'_>) {
        let (Some(sp), Some(dp), Some(seq), Some(&doff), Some(&flags)) =
            (be16(d, 0), be16(d, 2), be32(d, 4), d.get(12), d.get(13))
        else {
            return self.skip(SkipReason::Truncated);
        };
        let hl = usize::from(doff >> 4) * 4;
        if hl < 20 {
            return self.skip(SkipReason::BadTcp);
        }
        let Some(payload) = d.get(hl..) else {
            return self.skip(SkipReason::BadTcp);
        };
        let Some(framer) = self.cfg.tcp_framer else {
            return;
        };
        let seg = Seg {
            src: SocketAddr::new(src, sp),
            dst: SocketAddr::new(dst, dp),
            seq,
            flags,
            payload,
            ts: ctx.ts,
            vlan: ctx.vlan,
        };
        self.tcp.segment(seg, framer, &mut self.stats, out);
    }

    /// GRE (RFC 2784 / 2890 version 0) carrying IP, Ethernet, MPLS or ERSPAN.
    fn gre(&mut self, ctx: Ctx, d: &[u8], out: Out<'_>) {
        let (Some(flags), Some(proto)) = (be16(d, 0), be16(d, 2)) else {
            return self.skip(SkipReason::Truncated);
        };
        // Version must be 0; routing (RFC 1701 R bit) and other legacy bits unsupported.
        if flags & 0x0007 != 0 || flags & 0x4000 != 0 {
            return self.skip(SkipReason::BadTunnel);
        }
        let has_seq = flags & 0x1000 != 0;
        let hl = 4
            + if flags & 0x8000 != 0 { 4 } else { 0 }
            + if flags & 0x2000 != 0 { 4 } else { 0 }
            + if has_seq { 4 } else { 0 };
        let Some(inner) = d.get(hl..) else {
            return self.skip(SkipReason::Truncated);
        };
        let Some(c) = self.deeper(ctx) else { return };
        match proto {
            ETH_IPV4 => self.ipv4(c, inner, out),
            ETH_IPV6 => self.ipv6(c, inner, out),
            ETH_TEB => self.ether(c, inner, out),
            GRE_MPLS => self.mpls(c, inner, out),
            // ERSPAN type I has no sequence number and no ERSPAN header.
            GRE_ERSPAN_2 if !has_seq => self.ether(c, inner, out),
            GRE_ERSPAN_2 => match inner.get(8..) {
                Some(frame) => self.ether(c, frame, out),
                None => self.skip(SkipReason::Truncated),
            },
            GRE_ERSPAN_3 => {
                let Some(w) = be16(inner, 10) else {
                    return self.skip(SkipReason::Truncated);
                };
                // O bit: an 8-byte platform-specific subheader follows.
                let hl = if w & 1 != 0 { 20 } else { 12 };
                let frame_type = (w >> 10) & 0x1F;
                let Some(frame) = inner.get(hl..) else {
                    return self.skip(SkipReason::Truncated);
                };
                match frame_type {
                    0 => self.ether(c, frame, out),
                    2 => self.ip_guess(c, frame, out),
                    _ => self.skip(SkipReason::BadTunnel),
                }
            }
            _ => self.skip(SkipReason::BadTunnel),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v6_walk_chain() {
        // hop-by-hop (8 bytes) -> dest opts (16 bytes) -> UDP
        let mut d = vec![PROTO_DSTOPTS, 0, 0, 0, 0, 0, 0, 0];
        d.extend_from_slice(&[PROTO_UDP, 1]);
        d.extend_from_slice(&[0; 14]);
        assert!(matches!(
            v6_walk(PROTO_HOPOPT, &d, 0),
            Ok(V6Walk::Upper(PROTO_UDP, 24))
        ));
        // Truncated dest opts.
        assert!(matches!(
            v6_walk(PROTO_HOPOPT, &d[..20], 0),
            Err(SkipReason::Truncated)
        ));
        // Fragment header.
        let f = [PROTO_UDP, 0, 0x05, 0x01, 0, 0, 0, 9];
        assert!(matches!(
            v6_walk(PROTO_FRAGMENT, &f, 0),
            Ok(V6Walk::Fragment(PROTO_UDP, 0x500, true, 9, 8))
        ));
        // Endless chain of zero-length hop-by-hop headers is cut off.
        let loopy = [0u8; 128];
        assert!(matches!(
            v6_walk(PROTO_HOPOPT, &loopy, 0),
            Err(SkipReason::BadIpv6Header)
        ));
    }
}
