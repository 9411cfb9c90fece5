//! Decoder counters: frames, datagrams, bytes and why frames (or parts of them) were skipped.
//!
//! Counters are plain `u64`s updated on the hot path; the skip counters live in a fixed
//! array indexed by [`SkipReason`] so counting never hashes or allocates.

/// Why the decoder dropped a frame, a fragment, a chunk or TCP stream bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum SkipReason {
    /// The captured bytes end before a header or the length a header announces.
    Truncated,
    /// The capture's link type is not one the decoder understands.
    UnsupportedLinkType,
    /// A malformed link-layer header (VLAN stack too deep, bad PPPoE, MPLS stack too deep).
    BadLinkHeader,
    /// The link layer carries something other than IPv4/IPv6 (ARP, LLC, LLDP, ...).
    NonIpEthertype,
    /// Malformed IPv4 header (version, IHL or total length).
    BadIpv4Header,
    /// Malformed IPv6 header or extension header chain.
    BadIpv6Header,
    /// IP protocol that carries no payload we decode (ICMP, ESP, OSPF, ...).
    UnsupportedIpProto,
    /// Malformed UDP header (length field below 8).
    BadUdp,
    /// Malformed TCP header (data offset).
    BadTcp,
    /// Malformed SCTP packet or chunk header.
    BadSctp,
    /// SCTP packet without DATA chunks (INIT, SACK, HEARTBEAT, ...).
    SctpNonData,
    /// SCTP DATA chunk fragment that could not be reassembled (out of order, I-DATA,
    /// table full, timed out).
    SctpFragmented,
    /// IP fragment reaching past the largest datagram reassembled
    /// ([`crate::DecoderConfig::max_frag_bytes_per_datagram`]); its datagram is dropped.
    FragmentTooLarge,
    /// IP fragment contradicting its siblings (a second last fragment ending elsewhere, or
    /// data past the end the last fragment set); its datagram is dropped.
    FragmentInconsistent,
    /// IP datagram arriving in more disjoint pieces than reassembly tracks (a flood of tiny
    /// non-adjacent fragments); it is dropped.
    FragmentTooManyHoles,
    /// Reassembled IPv6 payload that starts with another fragment header; dropped.
    FragmentNested,
    /// A partially reassembled datagram was evicted because the table was full (or
    /// reassembly is disabled: `max_frag_buffers` is 0).
    FragmentEvicted,
    /// A partially reassembled datagram timed out (a fragment never arrived).
    FragmentTimeout,
    /// A TCP direction the framer declared foreign; it is ignored from then on.
    TcpNotOurs,
    /// A TCP direction buffered more than the cap; its buffer was dropped.
    TcpBufferOverflow,
    /// A TCP flow was evicted because the flow table was full.
    TcpFlowsEvicted,
    /// A TCP sequence gap never filled; the decoder skipped over it.
    TcpGapSkipped,
    /// A TCP flow with buffered bytes went idle and was dropped.
    TcpIdleTimeout,
    /// More nested tunnels than [`crate::MAX_TUNNEL_DEPTH`].
    TunnelDepthExceeded,
    /// Malformed or unsupported tunnel header (GRE, ERSPAN, VXLAN).
    BadTunnel,
    /// A TCP connection carrying TLS (SIP over TLS: port 5061, or a stream that starts with
    /// a TLS record): counted once per connection; its bytes are not decoded (see
    /// [`DecodeStats::tls_bytes`]).
    TlsFlow,
}

impl SkipReason {
    /// Every reason, in declaration order (the index of a reason in its counter array).
    pub const ALL: [SkipReason; 26] = [
        SkipReason::Truncated,
        SkipReason::UnsupportedLinkType,
        SkipReason::BadLinkHeader,
        SkipReason::NonIpEthertype,
        SkipReason::BadIpv4Header,
        SkipReason::BadIpv6Header,
        SkipReason::UnsupportedIpProto,
        SkipReason::BadUdp,
        SkipReason::BadTcp,
        SkipReason::BadSctp,
        SkipReason::SctpNonData,
        SkipReason::SctpFragmented,
        SkipReason::FragmentTooLarge,
        SkipReason::FragmentInconsistent,
        SkipReason::FragmentTooManyHoles,
        SkipReason::FragmentNested,
        SkipReason::FragmentEvicted,
        SkipReason::FragmentTimeout,
        SkipReason::TcpNotOurs,
        SkipReason::TcpBufferOverflow,
        SkipReason::TcpFlowsEvicted,
        SkipReason::TcpGapSkipped,
        SkipReason::TcpIdleTimeout,
        SkipReason::TunnelDepthExceeded,
        SkipReason::BadTunnel,
        SkipReason::TlsFlow,
    ];

    /// Stable snake_case name, for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::Truncated => "truncated",
            SkipReason::UnsupportedLinkType => "unsupported_link_type",
            SkipReason::BadLinkHeader => "bad_link_header",
            SkipReason::NonIpEthertype => "non_ip_ethertype",
            SkipReason::BadIpv4Header => "bad_ipv4_header",
            SkipReason::BadIpv6Header => "bad_ipv6_header",
            SkipReason::UnsupportedIpProto => "unsupported_ip_proto",
            SkipReason::BadUdp => "bad_udp",
            SkipReason::BadTcp => "bad_tcp",
            SkipReason::BadSctp => "bad_sctp",
            SkipReason::SctpNonData => "sctp_non_data",
            SkipReason::SctpFragmented => "sctp_fragmented",
            SkipReason::FragmentTooLarge => "fragment_too_large",
            SkipReason::FragmentInconsistent => "fragment_inconsistent",
            SkipReason::FragmentTooManyHoles => "fragment_too_many_holes",
            SkipReason::FragmentNested => "fragment_nested",
            SkipReason::FragmentEvicted => "fragment_evicted",
            SkipReason::FragmentTimeout => "fragment_timeout",
            SkipReason::TcpNotOurs => "tcp_not_ours",
            SkipReason::TcpBufferOverflow => "tcp_buffer_overflow",
            SkipReason::TcpFlowsEvicted => "tcp_flows_evicted",
            SkipReason::TcpGapSkipped => "tcp_gap_skipped",
            SkipReason::TcpIdleTimeout => "tcp_idle_timeout",
            SkipReason::TunnelDepthExceeded => "tunnel_depth_exceeded",
            SkipReason::BadTunnel => "bad_tunnel",
            SkipReason::TlsFlow => "tls_flow",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Counters kept by a [`crate::Decoder`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecodeStats {
    /// Frames handed to [`crate::Decoder::decode`].
    pub frames: u64,
    /// Datagrams emitted (UDP datagrams, TCP messages, SCTP DATA chunks).
    pub datagrams: u64,
    /// Captured bytes of all frames handed to the decoder.
    pub bytes: u64,
    /// IP fragments accepted into a reassembly buffer (not a skip).
    pub fragments_buffered: u64,
    /// IP datagrams completed by reassembly.
    pub fragments_reassembled: u64,
    /// TCP payload bytes of TLS connections ([`SkipReason::TlsFlow`]), seen but not decoded.
    pub tls_bytes: u64,
    skipped: [u64; SkipReason::ALL.len()],
}

impl DecodeStats {
    /// How many times `r` was counted.
    pub fn skipped(&self, r: SkipReason) -> u64 {
        self.skipped.get(r.index()).copied().unwrap_or(0)
    }

    /// Sum over all skip reasons.
    pub fn skipped_total(&self) -> u64 {
        self.skipped.iter().fold(0u64, |a, b| a.saturating_add(*b))
    }

    /// TCP connections carrying TLS (SIP over TLS), seen but not decoded: what a summary
    /// reports as "N TLS SIP flows seen, not decoded".
    pub fn tls_flows(&self) -> u64 {
        self.skipped(SkipReason::TlsFlow)
    }

    /// The reasons with a nonzero count, in declaration order.
    pub fn nonzero_skips(&self) -> impl Iterator<Item = (SkipReason, u64)> + '_ {
        SkipReason::ALL
            .iter()
            .map(|r| (*r, self.skipped(*r)))
            .filter(|(_, n)| *n > 0)
    }

    pub(crate) fn skip(&mut self, r: SkipReason) {
        if let Some(c) = self.skipped.get_mut(r.index()) {
            *c = c.wrapping_add(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_in_declaration_order_and_names_unique() {
        for (i, r) in SkipReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
        let mut names: Vec<_> = SkipReason::ALL.iter().map(|r| r.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), SkipReason::ALL.len());
    }

    #[test]
    fn counting_and_iteration() {
        let mut s = DecodeStats::default();
        s.skip(SkipReason::BadUdp);
        s.skip(SkipReason::BadUdp);
        s.skip(SkipReason::TcpNotOurs);
        assert_eq!(s.skipped(SkipReason::BadUdp), 2);
        assert_eq!(s.skipped(SkipReason::Truncated), 0);
        assert_eq!(s.skipped_total(), 3);
        let v: Vec<_> = s.nonzero_skips().collect();
        assert_eq!(
            v,
            vec![(SkipReason::BadUdp, 2), (SkipReason::TcpNotOurs, 1)]
        );
    }
}
