//! Engine counters: what was seen, what was skipped and why.
//!
//! One list of counters (the `counters!` macro) declares the struct, [`EngineStats::merge`],
//! [`EngineStats::pairs`] and the test setter, so a new counter cannot be counted and never
//! shown or merged.

/// Declares [`EngineStats`] from one list of documented counters.
macro_rules! counters {
    ($($(#[$doc:meta])* $f:ident,)*) => {
        /// Counters of one engine shard; add shards together with [`EngineStats::merge`].
        #[derive(Debug, Clone, Default, PartialEq, Eq)]
        pub struct EngineStats {
            $($(#[$doc])* pub $f: u64,)*
        }

        impl EngineStats {
            /// Adds another shard's counters.
            pub fn merge(&mut self, o: &EngineStats) {
                $(self.$f += o.$f;)*
            }

            /// Name/value pairs for summaries and metrics, in declaration order.
            pub fn pairs(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($f), self.$f),)*]
            }

            #[cfg(test)]
            fn set(&mut self, name: &str, v: u64) {
                match name {
                    $(stringify!($f) => self.$f = v,)*
                    _ => panic!("unknown counter {name}"),
                }
            }
        }
    };
}

counters! {
    /// Datagrams handed in.
    datagrams,
    /// SIP messages parsed.
    sip_messages,
    /// Payloads that looked like SIP but did not parse.
    sip_parse_errors,
    /// SIP messages without Call-ID.
    sip_without_call_id,
    /// SIP messages outside any INVITE dialog (REGISTER, OPTIONS, SUBSCRIBE…).
    sip_non_call,
    /// INVITEs retransmitted after their call had finished (ignored).
    sip_retransmissions,
    /// RTP packets matched to a call (once per datagram, however many calls share it).
    rtp_packets,
    /// RTP packets matched through the SSRC fallback index.
    rtp_by_ssrc,
    /// RTCP packets matched to a call, including RTCP multiplexed on the RTP port without
    /// `a=rtcp-mux` (told apart by packet type, RFC 5761).
    rtcp_packets,
    /// RTCP packets of no known call.
    rtcp_unmatched,
    /// RTP packets of no known call in orphan flows: packets that parse as RTP with a payload
    /// type RTP uses, off well-known non-media ports, whose flow was confirmed by a second
    /// packet of the same SSRC.
    rtp_orphan_packets,
    /// Orphan RTP flows (source, destination) confirmed.
    orphan_flows,
    /// Orphan flows not tracked because the table was full.
    orphan_flows_dropped,
    /// Orphan flows forgotten after silence.
    orphan_flows_expired,
    /// UDP payloads that are neither SIP nor RTP/RTCP: well-known non-media ports (DNS,
    /// NetBIOS, mDNS, SSDP, NTP…), payload types RTP never uses, and one-off RTP-looking
    /// datagrams that no second packet of the same SSRC followed.
    udp_other,
    /// STUN messages (RFC 8489 magic cookie) on media ports or elsewhere: ICE checks and
    /// keepalives, never RTP.
    stun_packets,
    /// RTP packets of a known stream whose payload type no SDP of the call offered: counted
    /// in the stream's sequence space, never decoded, never a codec change.
    rtp_stray_payload_type,
    /// Calls created (sniffed and sessions).
    calls,
    /// Of those, sessions opened through the session API.
    sessions,
    /// Session packets ignored while the session's recording was paused.
    session_packets_paused,
    /// Session packets ignored because the session is not recorded (recording policy).
    session_packets_not_recorded,
    /// Session attachments not kept (per-session count or byte cap; noted in the vCon).
    session_attachments_dropped,
    /// Of those, calls joined mid-way (no INVITE seen; counted in `calls` too).
    calls_joined,
    /// Calls finished (all reasons).
    calls_finished,
    /// Calls finished early because the table was full.
    calls_evicted,
    /// INVITEs not tracked because the table was full of calls still finishing.
    calls_rejected,
    /// RTP streams of finished calls.
    streams,
    /// Streams not tracked because a call hit its stream limit.
    streams_dropped,
    /// Media routes not added because the table was full.
    media_routes_dropped,
    /// Recording segments the driver reported stored.
    segments,
    /// Recording segments the driver failed to store.
    segments_failed,
    /// Of those, segments whose store never answered within
    /// [`EngineConfig::segment_store_timeout_ms`](crate::EngineConfig::segment_store_timeout_ms).
    segments_timed_out,
    /// RTP packets whose payload could not be decoded.
    decode_errors,
    /// vCon events emitted.
    events,
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
            s.set(name, i as u64 + 1);
            all.merge(&s);
        }
        for (i, (name, v)) in all.pairs().into_iter().enumerate() {
            assert_eq!(v, i as u64 + 1, "{name} is merged");
        }
    }
}
