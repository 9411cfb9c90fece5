//! The per-stream RTP quality report (`analysis` body `streams[]`, schema
//! `vcontap-rtp-quality`) as typed structs: one name and type per member, in one place.
//! Fields are declared alphabetically and serialized through a sorted map, matching the
//! member order the report has always had.

use serde::Serialize;

/// One RTP stream (an SSRC in one direction on one address pair) as measured at the tap.
#[derive(Debug, Serialize)]
pub(super) struct StreamReport<'a> {
    pub(super) bytes: u64,
    pub(super) codecs: &'a [String],
    pub(super) decode_errors: u64,
    /// `caller->callee` or `callee->caller`.
    pub(super) direction: String,
    pub(super) dst: String,
    pub(super) duplicates: u64,
    pub(super) expected: u64,
    pub(super) first: Option<String>,
    pub(super) jitter_ms: f64,
    pub(super) last: Option<String>,
    pub(super) loss_percent: f64,
    pub(super) lost: i64,
    /// Wireshark-compatible largest gap between packets.
    pub(super) max_delta_ms: f64,
    pub(super) max_jitter_ms: f64,
    /// `audio` or `video`.
    pub(super) media: &'static str,
    pub(super) packets: u64,
    /// The party index of the sender.
    pub(super) party: u32,
    pub(super) quality_estimate: Option<Quality>,
    pub(super) reordered: u64,
    /// What RTCP said about this SSRC, kept apart from what the tap measured.
    pub(super) rtcp: Option<Rtcp>,
    pub(super) seq_cycles: u32,
    pub(super) src: String,
    /// `0x` and 8 upper-case hex digits.
    pub(super) ssrc: String,
    pub(super) ssrc_changes: u32,
    /// Packets with a payload type no SDP of the call offered (only when any).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) stray_payload_type_packets: Option<u64>,
}

/// RTCP about one SSRC.
#[derive(Debug, Serialize)]
pub(super) struct Rtcp {
    /// The latest report block about this SSRC from the other end.
    pub(super) reported_by_receiver: Option<Reported>,
    /// Sender reports this SSRC sent.
    pub(super) sender_reports: u64,
}

/// The latest RTCP report block about an SSRC (RFC 3550 §6.4.1).
#[derive(Debug, Serialize)]
pub(super) struct Reported {
    pub(super) cumulative_lost: i32,
    pub(super) fraction_lost_percent: f64,
    pub(super) highest_seq: u32,
    pub(super) jitter_ms: Option<f64>,
    pub(super) reports: u64,
}

/// An E-model listening-quality estimate (upper bound: network delay is unobservable).
#[derive(Debug, Serialize)]
pub(super) struct Quality {
    pub(super) method: &'static str,
    pub(super) mos_cq: f64,
    pub(super) r_factor: f64,
}
