//! Engine counters: what was seen, what was skipped and why.

/// Counters of one engine shard; add shards together with [`EngineStats::merge`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Datagrams handed in.
    pub datagrams: u64,
    /// SIP messages parsed.
    pub sip_messages: u64,
    /// Payloads that looked like SIP but did not parse.
    pub sip_parse_errors: u64,
    /// SIP messages without Call-ID.
    pub sip_without_call_id: u64,
    /// SIP messages outside any INVITE dialog (REGISTER, OPTIONS, SUBSCRIBE…).
    pub sip_non_call: u64,
    /// INVITEs retransmitted after their call had finished (ignored).
    pub sip_retransmissions: u64,
    /// RTP packets matched to a call (once per datagram, however many calls share it).
    pub rtp_packets: u64,
    /// RTP packets matched through the SSRC fallback index.
    pub rtp_by_ssrc: u64,
    /// RTCP packets matched to a call, including RTCP multiplexed on the RTP port without
    /// `a=rtcp-mux` (told apart by packet type, RFC 5761).
    pub rtcp_packets: u64,
    /// RTCP packets of no known call.
    pub rtcp_unmatched: u64,
    /// RTP packets of no known call in orphan flows: packets that parse as RTP with a payload
    /// type RTP uses, off well-known non-media ports, whose flow was confirmed by a second
    /// packet of the same SSRC.
    pub rtp_orphan_packets: u64,
    /// Orphan RTP flows (source, destination) confirmed.
    pub orphan_flows: u64,
    /// Orphan flows not tracked because the table was full.
    pub orphan_flows_dropped: u64,
    /// Orphan flows forgotten after silence.
    pub orphan_flows_expired: u64,
    /// UDP payloads that are neither SIP nor RTP/RTCP: well-known non-media ports (DNS,
    /// NetBIOS, mDNS, SSDP, NTP…), payload types RTP never uses, and one-off RTP-looking
    /// datagrams that no second packet of the same SSRC followed.
    pub udp_other: u64,
    /// STUN messages (RFC 8489 magic cookie) on media ports or elsewhere: ICE checks and
    /// keepalives, never RTP.
    pub stun_packets: u64,
    /// RTP packets of a known stream whose payload type no SDP of the call offered: counted
    /// in the stream's sequence space, never decoded, never a codec change.
    pub rtp_stray_payload_type: u64,
    /// Calls created (sniffed and sessions).
    pub calls: u64,
    /// Of those, sessions opened through the session API.
    pub sessions: u64,
    /// Session packets ignored while the session's recording was paused.
    pub session_packets_paused: u64,
    /// Of those, calls joined mid-way (no INVITE seen; counted in `calls` too).
    pub calls_joined: u64,
    /// Calls finished (all reasons).
    pub calls_finished: u64,
    /// Calls finished early because the table was full.
    pub calls_evicted: u64,
    /// INVITEs not tracked because the table was full of calls still finishing.
    pub calls_rejected: u64,
    /// RTP streams of finished calls.
    pub streams: u64,
    /// Streams not tracked because a call hit its stream limit.
    pub streams_dropped: u64,
    /// Media routes not added because the table was full.
    pub media_routes_dropped: u64,
    /// Recording segments the driver reported stored.
    pub segments: u64,
    /// Recording segments the driver failed to store.
    pub segments_failed: u64,
    /// Of those, segments whose store never answered within
    /// [`EngineConfig::segment_store_timeout_ms`](crate::EngineConfig::segment_store_timeout_ms).
    pub segments_timed_out: u64,
    /// RTP packets whose payload could not be decoded.
    pub decode_errors: u64,
    /// vCon events emitted.
    pub events: u64,
}

impl EngineStats {
    /// Adds another shard's counters.
    pub fn merge(&mut self, o: &EngineStats) {
        macro_rules! add { ($($f:ident),*) => { $( self.$f += o.$f; )* } }
        add!(
            datagrams,
            sip_messages,
            sip_parse_errors,
            sip_without_call_id,
            sip_non_call,
            sip_retransmissions,
            rtp_packets,
            rtp_by_ssrc,
            rtcp_packets,
            rtcp_unmatched,
            rtp_orphan_packets,
            orphan_flows,
            orphan_flows_dropped,
            orphan_flows_expired,
            udp_other,
            stun_packets,
            rtp_stray_payload_type,
            calls,
            sessions,
            session_packets_paused,
            calls_joined,
            calls_finished,
            calls_evicted,
            calls_rejected,
            streams,
            streams_dropped,
            media_routes_dropped,
            segments,
            segments_failed,
            segments_timed_out,
            decode_errors,
            events
        );
    }

    /// Name/value pairs for summaries.
    pub fn pairs(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("datagrams", self.datagrams),
            ("sip_messages", self.sip_messages),
            ("sip_parse_errors", self.sip_parse_errors),
            ("sip_without_call_id", self.sip_without_call_id),
            ("sip_non_call", self.sip_non_call),
            ("sip_retransmissions", self.sip_retransmissions),
            ("rtp_packets", self.rtp_packets),
            ("rtp_by_ssrc", self.rtp_by_ssrc),
            ("rtcp_packets", self.rtcp_packets),
            ("rtcp_unmatched", self.rtcp_unmatched),
            ("rtp_orphan_packets", self.rtp_orphan_packets),
            ("orphan_flows", self.orphan_flows),
            ("orphan_flows_dropped", self.orphan_flows_dropped),
            ("orphan_flows_expired", self.orphan_flows_expired),
            ("udp_other", self.udp_other),
            ("stun_packets", self.stun_packets),
            ("rtp_stray_payload_type", self.rtp_stray_payload_type),
            ("calls", self.calls),
            ("sessions", self.sessions),
            ("session_packets_paused", self.session_packets_paused),
            ("calls_joined", self.calls_joined),
            ("calls_finished", self.calls_finished),
            ("calls_evicted", self.calls_evicted),
            ("calls_rejected", self.calls_rejected),
            ("streams", self.streams),
            ("streams_dropped", self.streams_dropped),
            ("media_routes_dropped", self.media_routes_dropped),
            ("segments", self.segments),
            ("segments_failed", self.segments_failed),
            ("segments_timed_out", self.segments_timed_out),
            ("decode_errors", self.decode_errors),
            ("events", self.events),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every counter is reported and merged: a field added without its `pairs` and `merge`
    /// lines would be counted and never shown (as `orphan_flows_expired` once was).
    #[test]
    fn pairs_and_merge_cover_every_field() {
        let fields = format!("{:?}", EngineStats::default())
            .matches(": 0")
            .count();
        let pairs = EngineStats::default().pairs();
        assert_eq!(pairs.len(), fields, "every field has a pair");
        // Each counter set alone to a distinct value, then all merged: every one arrives.
        let mut all = EngineStats::default();
        for (i, (name, _)) in pairs.iter().enumerate() {
            let mut s = EngineStats::default();
            set(&mut s, name, i as u64 + 1);
            all.merge(&s);
        }
        for (i, (name, v)) in all.pairs().into_iter().enumerate() {
            assert_eq!(v, i as u64 + 1, "{name} is merged");
        }
    }

    fn set(s: &mut EngineStats, name: &str, v: u64) {
        // The pairs' names are the field names; the Debug output checked below proves it.
        macro_rules! by_name { ($($f:ident),*) => { match name { $( stringify!($f) => s.$f = v, )* _ => panic!("unknown counter {name}") } } }
        by_name!(
            datagrams,
            sip_messages,
            sip_parse_errors,
            sip_without_call_id,
            sip_non_call,
            sip_retransmissions,
            rtp_packets,
            rtp_by_ssrc,
            rtcp_packets,
            rtcp_unmatched,
            rtp_orphan_packets,
            orphan_flows,
            orphan_flows_dropped,
            orphan_flows_expired,
            udp_other,
            stun_packets,
            rtp_stray_payload_type,
            calls,
            sessions,
            session_packets_paused,
            calls_joined,
            calls_finished,
            calls_evicted,
            calls_rejected,
            streams,
            streams_dropped,
            media_routes_dropped,
            segments,
            segments_failed,
            segments_timed_out,
            decode_errors,
            events
        );
        assert!(format!("{s:?}").contains(&format!("{name}: {v}")));
    }
}
