//! Calls opened through the engine's session API (a SIPREC recording server, later other
//! non-sniffed sources): built from declared participants and streams instead of a sniffed
//! INVITE, then driven by the same media path, segments, events and vCon building as a
//! sniffed call.

use vcontap_vcon::{format_time, Vcon};
use vcontap_wire::Timestamp;

use super::*;
use crate::session::{
    Attachment, AttachmentBody, Participant, SessionSpec, Side, StreamSpec,
    MAX_SESSION_ATTACHMENTS, MAX_SESSION_ATTACHMENT_BYTES, MAX_SESSION_STREAMS,
};

/// What a session's vCon keeps beyond a sniffed call's: attachments (placed or waiting for
/// a dialog), streams declared later, and the recording policy's verdict.
#[derive(Debug, Default)]
pub(crate) struct SessionContent {
    /// Attachments waiting for a dialog to point at (their `dialog` is set when placed).
    unplaced: Vec<vcontap_vcon::Attachment>,
    /// Attachments kept so far (placed or not) and their body bytes.
    kept: usize,
    bytes: usize,
    /// Over the caps.
    dropped: u64,
    dropped_bytes: u64,
    not_recorded: Option<String>,
    /// (label, side, when) of every stream added after the open.
    added: Vec<(String, Side, Timestamp)>,
}

impl SessionContent {
    pub(super) fn unplaced_view(&self) -> Option<Vec<live::Unplaced<'_>>> {
        (!self.unplaced.is_empty()).then(|| {
            self.unplaced
                .iter()
                .map(|a| live::Unplaced {
                    purpose: a.purpose.as_deref(),
                    start: &a.start,
                    party: a.party,
                    mediatype: a.mediatype.as_deref(),
                    encoding: a.encoding.as_deref(),
                    body: a.body.as_ref(),
                })
                .collect()
        })
    }

    pub(super) fn dropped_view(&self) -> Option<live::Dropped> {
        (self.dropped > 0).then_some(live::Dropped {
            count: self.dropped,
            bytes: self.dropped_bytes,
        })
    }

    pub(super) fn recording_view(&self) -> Option<live::Recording<'_>> {
        self.not_recorded.as_deref().map(|reason| live::Recording {
            recorded: false,
            reason,
        })
    }

    pub(super) fn added_view(&self) -> Option<Vec<live::AddedStream<'_>>> {
        (!self.added.is_empty()).then(|| {
            self.added
                .iter()
                .map(|(label, side, at)| live::AddedStream {
                    label,
                    side: side_name(*side),
                    at: format_time(at.nanos()),
                })
                .collect()
        })
    }
}

impl Call {
    /// A call for `spec`, connected at `spec.at` (a recording session is live once opened).
    pub(crate) fn new_session(
        uuid: String,
        spec: &SessionSpec,
        cfg: &EngineConfig,
        seg_base: u64,
    ) -> Self {
        let mut vcon = Vcon::new(uuid.clone(), format_time(spec.at.nanos()));
        vcon.add_extension(vcontap_vcon::EXT_VCONTAP);
        vcon.subject = spec.subject.clone();
        for p in spec.participants.iter().take(MAX_PARTIES) {
            vcon.parties.push(p.party.clone());
        }
        let mut call = Call::blank(uuid, &spec.key, vcon, cfg, seg_base, spec.at);
        call.sniffed = false;
        call.side_party = side_parties(&spec.participants, [0, 1]);
        call.state = State::Answered;
        call.answer_at = Some(spec.at);
        // Codecs per side: every stream's formats, so a payload type resolves whichever
        // direction it is looked up from.
        let mut codecs: Vec<(u8, String, u32, u8)> = Vec::new();
        for st in &spec.streams {
            call.session_streams.push(st.side);
            for f in &st.formats {
                if !codecs.iter().any(|c| c.0 == f.pt) {
                    codecs.push((f.pt, f.encoding.clone(), f.clock_rate, f.channels));
                }
            }
        }
        for leg in call.legs.iter_mut() {
            leg.codecs = codecs.clone();
        }
        if spec.not_recorded.is_some() || !spec.attachments.is_empty() {
            let content = call.content.get_or_insert_with(Box::default);
            content.not_recorded = spec.not_recorded.clone();
            for a in &spec.attachments {
                call.session_attach(a.clone());
            }
        }
        call.emit(EventKind::Created, spec.at);
        call
    }

    /// A recording policy decided this session is not recorded.
    pub(crate) fn is_not_recorded(&self) -> bool {
        self.content
            .as_deref()
            .is_some_and(|c| c.not_recorded.is_some())
    }

    /// Keeps an attachment (unplaced until a dialog exists, see [`Call::place_attachments`])
    /// unless it exceeds the per-session caps; false when it was dropped. Emits `updated`
    /// (a no-op before `created`, which carries it anyway).
    pub(crate) fn session_attach(&mut self, a: Attachment) -> bool {
        let len = a.body.len();
        let content = self.content.get_or_insert_with(Box::default);
        if content.kept >= MAX_SESSION_ATTACHMENTS
            || content.bytes.saturating_add(len) > MAX_SESSION_ATTACHMENT_BYTES
        {
            content.dropped = content.dropped.saturating_add(1);
            content.dropped_bytes = content.dropped_bytes.saturating_add(len as u64);
            if self.seq > 0 && self.finish_reason.is_none() {
                self.emit(EventKind::Updated, a.at);
            }
            return false;
        }
        content.kept += 1;
        content.bytes = content.bytes.saturating_add(len);
        let encoding = a.body.encoding();
        let body = match a.body {
            AttachmentBody::Text(t) | AttachmentBody::Base64Url(t) => {
                vcontap_vcon::Json::Tree(serde_json::Value::String(t))
            }
            AttachmentBody::Json(v) => vcontap_vcon::Json::Tree(v),
        };
        content.unplaced.push(vcontap_vcon::Attachment {
            purpose: Some(a.purpose),
            start: format_time(a.at.nanos()),
            // The party that distributed it: a recording client is no party, so the first
            // party stands in, as for the sniffed SIP trace.
            party: 0,
            dialog: 0,
            mediatype: Some(a.mediatype),
            encoding: Some(encoding.into()),
            body: Some(body),
        });
        if let Some(ext) = a.extension {
            self.vcon.add_extension(ext);
        }
        if self.seq > 0 && self.finish_reason.is_none() {
            self.emit(EventKind::Updated, a.at);
        }
        true
    }

    /// Moves waiting attachments to the top-level `attachments`, pointing at the first
    /// dialog, once there is one (indices stay stable: they are only ever appended).
    pub(super) fn place_attachments(&mut self) {
        let Some(content) = self.content.as_deref_mut() else {
            return;
        };
        if content.unplaced.is_empty() {
            return;
        }
        let Some(first) = self
            .vcon
            .dialog
            .iter()
            .position(|d| d.kind != DialogType::Transfer)
        else {
            return;
        };
        for mut a in content.unplaced.drain(..) {
            a.dialog = first as u32;
            self.vcon.attachments.push(a);
        }
    }

    /// Declares one more stream on `spec.side`; its index, or `None` past
    /// [`MAX_SESSION_STREAMS`]. New payload types join both legs' codec tables (the
    /// resolved-codec cache and the offered set are rebuilt).
    pub(crate) fn session_add_stream(&mut self, spec: &StreamSpec, at: Timestamp) -> Option<usize> {
        if self.session_streams.len() >= MAX_SESSION_STREAMS || self.finish_reason.is_some() {
            return None;
        }
        let index = self.session_streams.len();
        self.session_streams.push(spec.side);
        let mut changed = false;
        for leg in self.legs.iter_mut() {
            for f in &spec.formats {
                if !leg.codecs.iter().any(|c| c.0 == f.pt) {
                    leg.codecs
                        .push((f.pt, f.encoding.clone(), f.clock_rate, f.channels));
                    changed = true;
                }
            }
        }
        if changed {
            self.legs_gen = self.legs_gen.wrapping_add(1);
        }
        let content = self.content.get_or_insert_with(Box::default);
        if content.added.len() < MAX_SESSION_STREAMS {
            content.added.push((spec.label.clone(), spec.side, at));
        }
        self.emit(EventKind::Updated, at);
        Some(index)
    }

    /// The side a declared stream is sent from.
    pub(crate) fn session_stream_side(&self, stream: usize) -> Option<Side> {
        self.session_streams.get(stream).copied()
    }

    pub(crate) fn is_paused(&self) -> bool {
        self.paused.is_some()
    }

    /// New participant list: new people are appended as parties; a side whose speaker
    /// changed gets `drop`/`join` and a segment cut, as a connected-identity change.
    pub(crate) fn session_participants(&mut self, list: &[Participant], at: Timestamp) {
        if self.finish_reason.is_some() {
            return;
        }
        let mut changed = false;
        let mut index_of = Vec::with_capacity(list.len());
        for p in list {
            let existing = self
                .vcon
                .parties
                .iter()
                .position(|q| same_person(q, &p.party));
            let idx = match existing {
                Some(i) => Some(i as u32),
                None if self.vcon.parties.len() < MAX_PARTIES => {
                    self.vcon.parties.push(p.party.clone());
                    changed = true;
                    Some((self.vcon.parties.len() - 1) as u32)
                }
                None => None,
            };
            index_of.push(idx);
        }
        for side in [Side::Caller, Side::Callee] {
            let first = list
                .iter()
                .zip(&index_of)
                .find(|(p, _)| p.side == side)
                .and_then(|(_, i)| *i);
            if let Some(new) = first {
                if *pick(&self.side_party, side) != new {
                    self.cut_segment(at);
                    self.add_history(at, side, PartyEvent::Drop, None);
                    *pick_mut(&mut self.side_party, side) = new;
                    self.add_history(at, side, PartyEvent::Join, None);
                    changed = true;
                }
            }
        }
        if changed {
            self.emit(EventKind::Updated, at);
        }
    }

    /// Recording paused (e.g. SIPREC pause for a card number): the segment is cut and
    /// nothing is recorded until [`Call::session_resume`].
    pub(crate) fn session_pause(&mut self, at: Timestamp) {
        if self.paused.is_some() || self.finish_reason.is_some() {
            return;
        }
        self.paused = Some(at);
        self.cut_segment(at);
        self.emit(EventKind::Updated, at);
    }

    pub(crate) fn session_resume(&mut self, at: Timestamp) {
        let Some(since) = self.paused.take() else {
            return;
        };
        if self.pauses.len() < MAX_HISTORY {
            self.pauses.push((since, at.max(since)));
        }
        if self.finish_reason.is_none() {
            self.emit(EventKind::Updated, at);
        }
    }

    /// Ends a session: an open pause closes at the end.
    pub(crate) fn session_end(&mut self, reason: FinishReason, at: Timestamp) {
        if let Some(since) = self.paused.take() {
            if self.pauses.len() < MAX_HISTORY {
                self.pauses.push((since, at.max(since)));
            }
        }
        if reason == FinishReason::Bye && self.bye_at.is_none() {
            self.bye_at = Some(at);
        }
        self.finish(reason, at);
    }
}

/// The party index on each side: the first participant declared on it, else `default`.
fn side_parties(list: &[Participant], default: [u32; 2]) -> [u32; 2] {
    let mut out = default;
    for side in [Side::Caller, Side::Callee] {
        if let Some(i) = list.iter().take(MAX_PARTIES).position(|p| p.side == side) {
            if let Some(x) = out.get_mut(side.index() as usize) {
                *x = i as u32;
            }
        }
    }
    // A side nobody was declared on shares the other side's party (indices stay valid).
    let n = list.len().clamp(1, MAX_PARTIES) as u32;
    for x in out.iter_mut() {
        if *x >= n {
            *x = 0;
        }
    }
    out
}

/// Whether two parties name the same person (same SIP URI, else same number, else name).
fn same_person(a: &vcontap_vcon::Party, b: &vcontap_vcon::Party) -> bool {
    match (&a.sip, &b.sip, &a.tel, &b.tel) {
        (Some(x), Some(y), _, _) => x.eq_ignore_ascii_case(y),
        (_, _, Some(x), Some(y)) => x == y,
        _ => a.name.is_some() && a.name == b.name,
    }
}
