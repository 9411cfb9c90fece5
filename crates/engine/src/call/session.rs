//! Calls opened through the engine's session API (a SIPREC recording server, later other
//! non-sniffed sources): built from declared participants and streams instead of a sniffed
//! INVITE, then driven by the same media path, segments, events and vCon building as a
//! sniffed call.

use vcontap_vcon::{format_time, Vcon};
use vcontap_wire::Timestamp;

use super::*;
use crate::session::{Participant, SessionSpec, Side};

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
        call.emit(EventKind::Created, spec.at);
        call
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
