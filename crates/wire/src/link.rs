//! Link layers: NULL/LOOP, Ethernet, Linux SLL/SLL2, raw IP; 802.1Q/802.1ad VLAN and
//! QinQ, PPPoE session, MPLS label stacks. Everything here only slices the frame.

use crate::bytes::{be16, be32, le32};
use crate::decoder::{Ctx, Decoder};
use crate::stats::SkipReason;
use crate::{Datagram, LinkType};

/// Most VLAN tags we unwrap (QinQ uses two; more is either exotic or hostile).
const MAX_VLAN_TAGS: usize = 8;

/// Most MPLS labels we pop before giving up.
const MAX_MPLS_LABELS: usize = 16;

pub(crate) const ETH_IPV4: u16 = 0x0800;
pub(crate) const ETH_IPV6: u16 = 0x86DD;
pub(crate) const ETH_TEB: u16 = 0x6558;
const ETH_VLAN: u16 = 0x8100;
const ETH_QINQ: u16 = 0x88A8;
const ETH_QINQ_OLD: u16 = 0x9100;
const ETH_PPPOE_SESSION: u16 = 0x8864;
const ETH_MPLS: u16 = 0x8847;
const ETH_MPLS_MC: u16 = 0x8848;

/// LINKTYPE 14: raw IP on OpenBSD (DLT_RAW there).
const LINKTYPE_RAW_OPENBSD: u32 = 14;

type Out<'o> = &'o mut dyn FnMut(Datagram<'_>);

impl Decoder {
    pub(crate) fn link(&mut self, ctx: Ctx, link: LinkType, d: &[u8], out: Out<'_>) {
        match link {
            LinkType::ETHERNET => self.ether(ctx, d, out),
            LinkType::NULL | LinkType::LOOP => {
                let (Some(le), Some(be)) = (le32(d, 0), be32(d, 0)) else {
                    return self.skip(SkipReason::Truncated);
                };
                // NULL is host byte order of the capturing machine, LOOP network order;
                // address families are small, so whichever reading is small wins.
                let rest = d.get(4..).unwrap_or(&[]);
                match le.min(be) {
                    2 => self.ipv4(ctx, rest, out),
                    10 | 24 | 28 | 30 => self.ipv6(ctx, rest, out),
                    _ => self.skip(SkipReason::NonIpEthertype),
                }
            }
            LinkType::RAW | LinkType::RAW_12 => self.ip_guess(ctx, d, out),
            LinkType(LINKTYPE_RAW_OPENBSD) => self.ip_guess(ctx, d, out),
            LinkType::IPV4 => self.ipv4(ctx, d, out),
            LinkType::IPV6 => self.ipv6(ctx, d, out),
            LinkType::LINUX_SLL => match (be16(d, 14), d.get(16..)) {
                (Some(proto), Some(rest)) => self.ethertype(ctx, proto, rest, out),
                _ => self.skip(SkipReason::Truncated),
            },
            LinkType::LINUX_SLL2 => match (be16(d, 0), d.get(20..)) {
                (Some(proto), Some(rest)) => self.ethertype(ctx, proto, rest, out),
                _ => self.skip(SkipReason::Truncated),
            },
            _ => self.skip(SkipReason::UnsupportedLinkType),
        }
    }

    /// Ethernet II frame (also the inner frame of VXLAN, ERSPAN, GRE/TEB).
    pub(crate) fn ether(&mut self, ctx: Ctx, d: &[u8], out: Out<'_>) {
        match (be16(d, 12), d.get(14..)) {
            (Some(et), Some(rest)) => self.ethertype(ctx, et, rest, out),
            _ => self.skip(SkipReason::Truncated),
        }
    }

    /// Raw IP: version nibble decides.
    pub(crate) fn ip_guess(&mut self, ctx: Ctx, d: &[u8], out: Out<'_>) {
        match d.first().map(|b| b >> 4) {
            Some(4) => self.ipv4(ctx, d, out),
            Some(6) => self.ipv6(ctx, d, out),
            Some(_) => self.skip(SkipReason::NonIpEthertype),
            None => self.skip(SkipReason::Truncated),
        }
    }

    /// Dispatches on an ethertype after unwrapping any VLAN tags.
    pub(crate) fn ethertype(&mut self, mut ctx: Ctx, et: u16, d: &[u8], out: Out<'_>) {
        let (mut et, mut d) = (et, d);
        let mut tags = 0;
        while matches!(et, ETH_VLAN | ETH_QINQ | ETH_QINQ_OLD) {
            if tags == MAX_VLAN_TAGS {
                return self.skip(SkipReason::BadLinkHeader);
            }
            let (Some(tci), Some(inner), Some(rest)) = (be16(d, 0), be16(d, 2), d.get(4..)) else {
                return self.skip(SkipReason::Truncated);
            };
            let vid = tci & 0x0FFF;
            // VID 0 is a priority-only tag, not a VLAN.
            if ctx.vlan.is_none() && vid != 0 {
                ctx.vlan = Some(vid);
            }
            et = inner;
            d = rest;
            tags += 1;
        }
        match et {
            ETH_IPV4 => self.ipv4(ctx, d, out),
            ETH_IPV6 => self.ipv6(ctx, d, out),
            ETH_PPPOE_SESSION => self.pppoe(ctx, d, out),
            ETH_MPLS | ETH_MPLS_MC => self.mpls(ctx, d, out),
            ETH_TEB => {
                if let Some(c) = self.deeper(ctx) {
                    self.ether(c, d, out);
                }
            }
            _ => self.skip(SkipReason::NonIpEthertype),
        }
    }

    /// PPPoE session stage (RFC 2516) carrying PPP IPv4 (0x0021) or IPv6 (0x0057).
    fn pppoe(&mut self, ctx: Ctx, d: &[u8], out: Out<'_>) {
        let (Some(&vt), Some(&code), Some(len)) = (d.first(), d.get(1), be16(d, 4)) else {
            return self.skip(SkipReason::Truncated);
        };
        if vt != 0x11 || code != 0 {
            return self.skip(SkipReason::BadLinkHeader);
        }
        let Some(ppp) = d.get(6..6 + usize::from(len)) else {
            return self.skip(SkipReason::Truncated);
        };
        // Protocol-field compression: a single odd byte is the whole protocol.
        let (proto, rest) = match ppp.first() {
            Some(&b) if b & 1 == 1 => (u16::from(b), ppp.get(1..)),
            _ => (be16(ppp, 0).unwrap_or(0), ppp.get(2..)),
        };
        let rest = rest.unwrap_or(&[]);
        match proto {
            0x0021 => self.ipv4(ctx, rest, out),
            0x0057 => self.ipv6(ctx, rest, out),
            _ => self.skip(SkipReason::NonIpEthertype),
        }
    }

    /// MPLS label stack, then IPv4/IPv6 by version nibble, or an Ethernet pseudowire
    /// behind a zero control word.
    pub(crate) fn mpls(&mut self, ctx: Ctx, d: &[u8], out: Out<'_>) {
        let mut d = d;
        let mut bottom = false;
        for _ in 0..MAX_MPLS_LABELS {
            let (Some(entry), Some(rest)) = (be32(d, 0), d.get(4..)) else {
                return self.skip(SkipReason::Truncated);
            };
            d = rest;
            if entry & 0x100 != 0 {
                bottom = true;
                break;
            }
        }
        if !bottom {
            return self.skip(SkipReason::BadLinkHeader);
        }
        match d.first().map(|b| b >> 4) {
            Some(4) => self.ipv4(ctx, d, out),
            Some(6) => self.ipv6(ctx, d, out),
            Some(0) => {
                if let (Some(c), Some(rest)) = (self.deeper(ctx), d.get(4..)) {
                    self.ether(c, rest, out);
                }
            }
            Some(_) => self.skip(SkipReason::NonIpEthertype),
            None => self.skip(SkipReason::Truncated),
        }
    }
}
