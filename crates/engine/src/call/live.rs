//! The `vcontap` extension object of a call's vCon (its live state): a typed struct, so
//! every member has one name and type in one place. Fields are declared in alphabetical
//! order and serialized through a sorted map, so members added at the end (the trace and
//! quality report of calls without a dialog) keep one stable order.

use serde::Serialize;
use vcontap_vcon::PartyHistory;

use crate::origin::HepView;

/// The live state of a call (`vcon.vcontap`).
#[derive(Debug, Serialize)]
pub(super) struct LiveState<'a> {
    /// An answer inferred from an ACK in a new transaction (the 2xx was not captured).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) answer_inferred: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) answered_at: Option<String>,
    /// BYEs answered with an error (the call went on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) byes_refused: Option<u32>,
    /// Spans in which the tap dropped packets while the call was live.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) capture_loss: Option<Vec<CaptureLoss>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) end_reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) ended_at: Option<String>,
    /// The HEP agents that sent the call's packets and whose clock stamped them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) hep: Option<HepView<'a>>,
    /// Party-history entries beyond the cap.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) history_dropped: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) invite_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) joined_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) joined_mid_call: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) party_history: Option<Vec<&'a PartyHistory>>,
    /// Session API: recording pauses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) recording_pauses: Option<Vec<Pause>>,
    pub(super) sip_call_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) sip_final_status: Option<u16>,
    /// `session` for calls opened through the session API.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) source: Option<&'static str>,
    /// `calling`, `early`, `answered`, `held` or `finished`.
    pub(super) state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) transfer_status: Option<&'a [serde_json::Value]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) undecodable_codecs: Option<&'a [String]>,
}

/// One span of capture loss.
#[derive(Debug, Serialize)]
pub(super) struct CaptureLoss {
    pub(super) start: String,
    pub(super) end: String,
    /// Packets the tap dropped in the span (all traffic, not only this call's).
    pub(super) packets: u64,
}

/// One recording pause of a session.
#[derive(Debug, Serialize)]
pub(super) struct Pause {
    pub(super) start: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) end: Option<String>,
}
