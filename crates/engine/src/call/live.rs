//! The `vcontap` extension object of a call's vCon (its live state): a typed struct, so
//! every member has one name and type in one place. Fields are declared in alphabetical
//! order, and [`Merged`] puts the members added to a final snapshot (the trace and quality
//! report of calls without a dialog) among them in sorted order, so the object has one
//! stable member order.

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use serde_json::{Map, Value};
use vcontap_vcon::Json;
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
    /// Session API: attachments waiting for a dialog to point at (or kept here for good
    /// when the session has none), in vCon attachment shape without `dialog`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) attachments: Option<Vec<Unplaced<'a>>>,
    /// Session API: attachments over the per-session caps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) attachments_dropped: Option<Dropped>,
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
    /// Session API: `{recorded: false, reason}` when a recording policy kept the session
    /// from being recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) recording: Option<Recording<'a>>,
    /// Session API: recording pauses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) recording_pauses: Option<Vec<Pause>>,
    /// The RTP quality report so far (live snapshots, when quality refresh is on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) rtp_quality: Option<Json>,
    pub(super) sip_call_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) sip_final_status: Option<u16>,
    /// `session` for calls opened through the session API.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) source: Option<&'static str>,
    /// `calling`, `early`, `answered`, `held` or `finished`.
    pub(super) state: &'static str,
    /// Session API: streams declared after the session opened.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) streams_added: Option<Vec<AddedStream<'a>>>,
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

/// A session attachment not (yet) in the top-level `attachments`.
#[derive(Debug, Serialize)]
pub(super) struct Unplaced<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) purpose: Option<&'a str>,
    pub(super) start: &'a str,
    pub(super) party: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) mediatype: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) encoding: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) body: Option<&'a Json>,
}

/// Session attachments over the caps.
#[derive(Debug, Serialize)]
pub(super) struct Dropped {
    pub(super) count: u64,
    pub(super) bytes: u64,
}

/// Why a session is not recorded.
#[derive(Debug, Serialize)]
pub(super) struct Recording<'a> {
    pub(super) recorded: bool,
    pub(super) reason: &'a str,
}

/// A stream declared after the session opened.
#[derive(Debug, Serialize)]
pub(super) struct AddedStream<'a> {
    pub(super) label: &'a str,
    /// `caller` or `callee`: the channel it records on.
    pub(super) side: &'static str,
    pub(super) at: String,
}

/// One recording pause of a session.
#[derive(Debug, Serialize)]
pub(super) struct Pause {
    pub(super) start: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) end: Option<String>,
}

/// The live state's members (as a map) and the extra members of a final snapshot, written
/// as one object in sorted member order; an extra member replaces a typed one of the same
/// name.
pub(super) struct Merged<'a> {
    pub(super) base: &'a Map<String, Value>,
    pub(super) extra: &'a [(&'static str, Json)],
}

impl Serialize for Merged<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        enum Member<'a> {
            Base(&'a Value),
            Extra(&'a Json),
        }
        let mut all: Vec<(&str, Member<'_>)> = self
            .base
            .iter()
            .filter(|(k, _)| !self.extra.iter().any(|(e, _)| e == k))
            .map(|(k, v)| (k.as_str(), Member::Base(v)))
            .chain(self.extra.iter().map(|(k, v)| (*k, Member::Extra(v))))
            .collect();
        all.sort_by(|a, b| a.0.cmp(b.0));
        let mut m = s.serialize_map(Some(all.len()))?;
        for (k, v) in &all {
            match v {
                Member::Base(v) => m.serialize_entry(k, v)?,
                Member::Extra(v) => m.serialize_entry(k, v)?,
            }
        }
        m.end()
    }
}
