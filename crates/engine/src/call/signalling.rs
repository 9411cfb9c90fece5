//! The SIP side of a call: who sent a message (caller or callee side, across B2BUA legs),
//! requests and responses driving the dialog state, SDP offers/answers (media routes,
//! codecs, hold, SRTP), transfers, INFO DTMF and the message trace.

use std::net::{IpAddr, SocketAddr};

use serde_json::json;
use vcontap_sip::{sdp, Kind, Message, Method};
use vcontap_vcon::{format_time, Dialog};
use vcontap_wire::{Datagram, Timestamp};

use super::*;

impl Call {
    /// Which side sent `msg`: 0 caller, 1 callee.
    ///
    /// A B2BUA (SBC) that keeps the Call-ID shows the call as several legs with their own
    /// tags; every From tag seen on an initial INVITE (no To tag) belongs to the caller side,
    /// so requests and responses of all legs are attributed to the same logical side.
    pub(super) fn sender_side(&self, msg: &Message<'_>, d: &Datagram<'_>) -> Side {
        let from_tag = msg.from().and_then(|f| f.tag);
        let from_caller = match from_tag {
            Some(t) if !self.sip.caller_tags.is_empty() => {
                self.sip.caller_tags.iter().any(|c| c == t)
            }
            _ => d.src == self.sip.caller_sip,
        };
        match (msg.is_request(), from_caller) {
            (true, true) | (false, false) => Side::Caller,
            _ => Side::Callee,
        }
    }

    pub(crate) fn handle_sip(&mut self, msg: &Message<'_>, d: &Datagram<'_>, now: Timestamp) {
        if self.finish_reason.is_some() {
            // Late retransmissions after the end still belong in the trace if room is left.
            self.trace_message(d, self.sender_side(msg, d));
            return;
        }
        self.sip.last_sip = now;
        if msg.is_request()
            && msg.method() == Some(Method::Invite)
            && msg.to().is_some_and(|t| t.tag.is_none())
        {
            if let Some(tag) = msg.from().and_then(|f| f.tag) {
                if self.sip.caller_tags.len() < MAX_EARLY_TAGS
                    && !self.sip.caller_tags.iter().any(|c| c == tag)
                {
                    self.sip.caller_tags.push(tag.to_string());
                }
            }
        }
        let side = self.sender_side(msg, d);
        self.trace_message(d, side);
        if pick(&self.sip.session_uuids, side).is_none() {
            *pick_mut(&mut self.sip.session_uuids, side) =
                msg.header("Session-ID").and_then(build::session_uuid);
        }
        match msg.kind() {
            Kind::Request { method, .. } => self.handle_request(method, msg, d, side, now),
            Kind::Response { code, .. } => self.handle_response(code, msg, side, now),
        }
    }

    pub(super) fn handle_request(
        &mut self,
        method: Method<'_>,
        msg: &Message<'_>,
        _d: &Datagram<'_>,
        side: Side,
        now: Timestamp,
    ) {
        let in_dialog = msg.to().is_some_and(|t| t.tag.is_some());
        match method {
            Method::Invite if !in_dialog => {
                let seq = msg.cseq().map(|c| c.seq).unwrap_or(0);
                if seq > self.sip.invite_cseq || self.sip.challenge.is_some() {
                    // The INVITE re-sent after a 401/407 challenge (same Call-ID, CSeq+1).
                    self.sip.invite_cseq = seq.max(self.sip.invite_cseq);
                    self.sip.challenge = None;
                }
                if let Some(b) = msg.top_via_branch() {
                    if self.sip.invite_branches.len() < MAX_EARLY_TAGS
                        && !self.sip.invite_branches.iter().any(|x| x == b)
                    {
                        self.sip.invite_branches.push(b.to_string());
                    }
                }
                self.apply_sdp(msg, Side::Caller, now, false);
            }
            Method::Invite | Method::Update => {
                let mut changed = self.apply_sdp(msg, side, now, true);
                if self.state >= State::Answered {
                    changed |= self.connected_identity(msg, side, now);
                }
                if changed && self.state >= State::Answered {
                    self.emit(EventKind::Updated, now);
                }
            }
            // A BYE after a failure final response changes no outcome; it is only traced.
            Method::Bye if self.bye_at.is_none() && self.failed.is_none() => {
                // The `drop` is recorded when the BYE succeeds (`finish`): a refused BYE
                // drops nobody.
                self.bye_at = Some(now);
                self.sip.bye_side = side;
                self.sip.bye_cseq = msg.cseq().map(|c| c.seq);
            }
            Method::Ack => {
                // An ACK for the INVITE in a new transaction (another Via branch than the
                // INVITE's) acknowledges a 2xx (RFC 3261 §13.2.2.4, §17.1.1.3): the call was
                // answered even when the 2xx was lost on the tap.
                let for_invite = msg.cseq().is_some_and(|c| c.seq == self.sip.invite_cseq);
                let new_transaction = msg
                    .top_via_branch()
                    .is_some_and(|b| !self.sip.invite_branches.iter().any(|x| x == b));
                // A pending 401/407 is acknowledged too (on every hop), never a lost 2xx.
                if self.state < State::Answered
                    && self.failed.is_none()
                    && self.sip.challenge.is_none()
                    && in_dialog
                    && for_invite
                    && new_transaction
                {
                    self.infer_answer(msg, now);
                }
                // Late offer (RFC 3261 §13.2.1): the offer was in the 2xx, the answer rides in
                // the ACK and names where the caller receives.
                if self.apply_sdp(msg, side, now, false) && self.state >= State::Answered {
                    self.emit(EventKind::Updated, now);
                }
            }
            Method::Prack => {
                // An offer in a reliable 18x is answered in the PRACK (RFC 3262).
                self.apply_sdp(msg, side, now, false);
            }
            Method::Cancel if self.cancel_at.is_none() && self.state < State::Answered => {
                self.cancel_at = Some(now);
            }
            Method::Info => {
                if let Some(info) = msg
                    .content_type()
                    .and_then(|ct| vcontap_sip::dtmf_from_info(ct, msg.body()))
                {
                    let down = self.add_history(now, side, PartyEvent::Keydown, Some(info.digit));
                    let up = now.add_millis(info.duration_ms.unwrap_or(100).min(60_000) as i64);
                    if self.add_history(up, side, PartyEvent::Keyup, Some(info.digit)) || down {
                        self.emit(EventKind::Updated, now);
                    }
                }
            }
            Method::Refer => {
                // Recorded when accepted (2xx): a REFER can be challenged or refused.
                if let (Some(target), Some(cseq)) = (
                    msg.header("Refer-To").and_then(build::party_from_header),
                    msg.cseq(),
                ) {
                    if self.sip.pending_refers.len() < MAX_EARLY_TAGS {
                        self.sip.pending_refers.push((cseq.seq, side, target));
                    }
                }
            }
            Method::Notify if self.transfers > 0 => {
                // RFC 3515 progress of an accepted REFER: a message/sipfrag status line.
                let refer_event = msg
                    .header("Event")
                    .is_some_and(|e| e.trim().to_ascii_lowercase().starts_with("refer"));
                let code = std::str::from_utf8(msg.body())
                    .ok()
                    .and_then(|b| b.trim_start().strip_prefix("SIP/2.0 "))
                    .and_then(|r| r.get(..3))
                    .and_then(|c| c.parse::<u16>().ok());
                if let (true, Some(code)) = (refer_event, code) {
                    if code >= 200 && self.transfer_status.len() < MAX_EARLY_TAGS {
                        self.transfer_status.push(json!({
                            "at": format_time(now.nanos()),
                            "status": code,
                            "outcome": if code < 300 { "completed" } else { "failed" },
                        }));
                        self.emit(EventKind::Updated, now);
                    }
                }
            }
            _ => {}
        }
    }

    pub(super) fn handle_response(
        &mut self,
        code: u16,
        msg: &Message<'_>,
        side: Side,
        now: Timestamp,
    ) {
        let Some(cseq) = msg.cseq() else { return };
        match cseq.method {
            Method::Refer if code >= 200 => {
                let Some(pos) = self.sip.pending_refers.iter().position(|r| r.0 == cseq.seq) else {
                    return;
                };
                let (_, transferor, target) = self.sip.pending_refers.swap_remove(pos);
                if (200..300).contains(&code) {
                    self.accept_transfer(transferor, target, now);
                }
            }
            Method::Invite => {
                let initial = cseq.seq == self.sip.invite_cseq && self.state < State::Answered;
                if (100..200).contains(&code) {
                    if let Some(tag) = msg.to().and_then(|t| t.tag) {
                        if code > 100
                            && self.sip.early_tags.len() < MAX_EARLY_TAGS
                            && !self.sip.early_tags.iter().any(|t| t == tag)
                        {
                            self.sip.early_tags.push(tag.to_string());
                        }
                    }
                    if code > 100 && self.state == State::Calling {
                        self.state = State::Early;
                    }
                    self.apply_sdp(msg, side, now, false);
                } else if (200..300).contains(&code) {
                    if initial {
                        self.state = State::Answered;
                        self.answer_at = Some(now);
                        self.sip.to_tag = msg.to().and_then(|t| t.tag.map(str::to_string));
                        self.cancel_at = None;
                        // A 2xx after a failure (another fork or B2BUA leg answered): the
                        // call was answered after all.
                        self.failed = None;
                        self.final_code = None;
                        self.sip.answer_inferred = false;
                        self.apply_sdp(msg, side, now, false);
                        if let Some(callee) = self.vcon.parties.get_mut(1) {
                            build::update_callee(callee, msg);
                        }
                        self.emit(EventKind::Updated, now);
                    } else if self.state >= State::Answered {
                        // Answer to a re-INVITE: media may move, but hold is decided by offers.
                        self.apply_sdp(msg, side, now, false);
                    }
                } else if code >= 300 && initial {
                    if code == 401 || code == 407 {
                        self.sip.challenge = Some((now, code));
                    } else if self.failed.is_none() {
                        // The outcome is known, but the call lingers (`due`) so the ACK,
                        // retransmissions and any stray BYE stay in its trace.
                        self.final_code = Some(code);
                        self.failed = Some((now, code));
                    }
                }
            }
            Method::Update | Method::Prack if (200..300).contains(&code) => {
                // The answer to an offer in an UPDATE or PRACK names where its sender
                // receives.
                self.apply_sdp(msg, side, now, false);
            }
            Method::Bye if code >= 200 => {
                // 2xx, or 481/408 (RFC 3261 §12.2.1.2: the dialog is gone), end the call,
                // even when the BYE itself was lost on the tap. Any other error (500, 491…)
                // refuses this BYE: the call goes on, with its media and recording.
                if (200..300).contains(&code) || code == 408 || code == 481 {
                    if self.bye_at.is_none() && self.failed.is_none() {
                        self.bye_at = Some(now);
                        self.sip.bye_side = side.other();
                    }
                    self.finish(FinishReason::Bye, now);
                } else if self.bye_at.is_some() && self.sip.bye_cseq == Some(cseq.seq) {
                    self.bye_at = None;
                    self.sip.bye_cseq = None;
                    self.sip.byes_refused = self.sip.byes_refused.saturating_add(1);
                    self.emit(EventKind::Updated, now);
                }
            }
            _ => {}
        }
    }

    /// The call was answered but the 2xx was not seen (lost on the tap): `msg` (an ACK for
    /// a 2xx) proves it. Answer time is the ACK's, which follows the 2xx by a round trip.
    fn infer_answer(&mut self, msg: &Message<'_>, now: Timestamp) {
        self.state = State::Answered;
        self.answer_at = Some(now);
        self.sip.answer_inferred = true;
        self.sip.to_tag = msg.to().and_then(|t| t.tag.map(str::to_string));
        self.cancel_at = None;
        self.emit(EventKind::Updated, now);
    }

    /// From now on the media is encrypted: close the recording, decode nothing more.
    pub(super) fn mark_encrypted(&mut self, how: &'static str, now: Timestamp) {
        if self.encrypted.is_none() {
            self.encrypted = Some(how);
            self.cut_segment(now);
        }
    }

    /// A new P-Asserted-Identity in an in-dialog request (RFC 4916 connected identity, e.g.
    /// after an attended transfer): a different person now speaks on `side`. The person is
    /// appended as a party (the old one is kept: parties are append-only), the recording is
    /// cut so every segment names who was on each channel, and `drop`/`join` are recorded.
    fn connected_identity(&mut self, msg: &Message<'_>, side: Side, now: Timestamp) -> bool {
        let cur = *pick(&self.side_party, side) as usize;
        let Some(current) = self.vcon.parties.get(cur) else {
            return false;
        };
        let Some(fresh) = build::connected_party(current, msg) else {
            return false;
        };
        if self.vcon.parties.len() >= MAX_PARTIES {
            return false;
        }
        self.cut_segment(now);
        self.add_history(now, side, PartyEvent::Drop, None);
        self.vcon.parties.push(fresh);
        *pick_mut(&mut self.side_party, side) = (self.vcon.parties.len() - 1) as u32;
        self.add_history(now, side, PartyEvent::Join, None);
        true
    }

    /// A transfer was accepted: the target becomes a party (once), the recording is cut, and a
    /// `transfer` dialog records the roles.
    pub(super) fn accept_transfer(
        &mut self,
        transferor: Side,
        target: vcontap_vcon::Party,
        now: Timestamp,
    ) {
        let existing = self
            .vcon
            .parties
            .iter()
            .position(|p| p.sip.is_some() && p.sip == target.sip);
        let idx = match existing {
            Some(i) => i as u32,
            None if self.vcon.parties.len() < MAX_PARTIES => {
                self.vcon.parties.push(target);
                (self.vcon.parties.len() - 1) as u32
            }
            None => return,
        };
        self.transfers += 1;
        self.cut_segment(now);
        self.vcon.dialog.push(Dialog {
            kind: DialogType::Transfer,
            start: format_time(now.nanos()),
            transferor: Some(*pick(&self.side_party, transferor)),
            transferee: Some(*pick(&self.side_party, transferor.other())),
            transfer_target: Some(idx),
            sip_call_id: Some(self.call_id.clone()),
            ..Default::default()
        });
        self.emit(EventKind::Updated, now);
    }

    /// Applies the SDP of `msg` as `side`'s receive description. Returns true when something
    /// visible changed (hold state or codecs).
    pub(super) fn apply_sdp(
        &mut self,
        msg: &Message<'_>,
        side: Side,
        now: Timestamp,
        offer: bool,
    ) -> bool {
        let Some(body) = vcontap_sip::sdp_body(msg) else {
            return false;
        };
        let Ok(s) = sdp::parse(body) else {
            return false;
        };
        // Video m-lines: routes and payload types for the RTP report (never recorded).
        let mut video_codecs = Vec::new();
        for m in s
            .media
            .iter()
            .filter(|m| m.kind.eq_ignore_ascii_case("video") && m.port != 0)
        {
            video_codecs.extend(formats(m));
            self.add_media_routes(m, &s, side, true);
        }
        if !video_codecs.is_empty() && pick(&self.legs, side).video_codecs != video_codecs {
            pick_mut(&mut self.legs, side).video_codecs = video_codecs;
            self.legs_gen = self.legs_gen.wrapping_add(1);
        }
        let Some(m) = s
            .media
            .iter()
            .find(|m| m.kind.eq_ignore_ascii_case("audio") && m.port != 0)
        else {
            return false;
        };
        // RTP/SAVP, RTP/SAVPF, UDP/TLS/RTP/SAVPF: the payload is encrypted; decoding it as
        // the named codec would write noise.
        if m.proto.to_ascii_uppercase().contains("SAVP") {
            self.mark_encrypted("SRTP", now);
        }
        let mut changed = false;
        let codecs = formats(m);
        if pick(&self.legs, side).codecs != codecs {
            changed = !pick(&self.legs, side).codecs.is_empty();
            pick_mut(&mut self.legs, side).codecs = codecs;
            self.legs_gen = self.legs_gen.wrapping_add(1);
        }
        self.add_media_routes(m, &s, side, false);
        if offer && self.state >= State::Answered {
            let held = m.is_held(&s);
            if held != *pick(&self.held, side) {
                *pick_mut(&mut self.held, side) = held;
                self.add_history(
                    now,
                    side,
                    if held {
                        PartyEvent::Hold
                    } else {
                        PartyEvent::Unhold
                    },
                    None,
                );
                self.cut_segment(now);
                changed = true;
            }
        }
        changed
    }

    /// Routes an m-line's RTP address and its RTCP address (`a=rtcp`, else port + 1 unless
    /// `a=rtcp-mux`) to `side`; `c=0.0.0.0` (old-style hold) announces nothing.
    fn add_media_routes(&mut self, m: &sdp::Media<'_>, s: &sdp::Sdp<'_>, side: Side, video: bool) {
        let Some(ip) = m.connection_or(s).filter(|ip| !ip.is_unspecified()) else {
            return;
        };
        self.add_route(SocketAddr::new(ip, m.port), side, false, video);
        if let Some((port, addr)) = m.rtcp {
            self.add_route(SocketAddr::new(addr.unwrap_or(ip), port), side, true, video);
        } else if !m.rtcp_mux {
            self.add_route(
                SocketAddr::new(ip, m.port.wrapping_add(1)),
                side,
                true,
                video,
            );
        }
    }

    pub(super) fn add_route(&mut self, addr: SocketAddr, side: Side, rtcp: bool, video: bool) {
        if !rtcp && !video {
            *pick_mut(&mut self.sip.media_to, side) = Some(addr);
        }
        if self.sip.routes.contains(&addr) {
            // Same address re-announced by the other side (e.g. a B2BUA) keeps the first owner.
            return;
        }
        if self.sip.routes.len() >= MAX_ROUTES_PER_CALL {
            return;
        }
        if let IpAddr::V4(v4) = addr.ip() {
            if v4.is_broadcast() {
                return;
            }
        }
        self.sip.routes.push(addr);
        self.sip.new_routes.push(NewRoute {
            addr,
            side,
            rtcp,
            video,
        });
    }

    /// Keeps a SIP message for the trace attachment, as raw bytes, within the per-call caps
    /// (messages and bytes, the record overhead included); beyond them it is counted.
    pub(super) fn trace_message(&mut self, d: &Datagram<'_>, side: Side) {
        let cost = d.payload.len() + TRACE_RECORD_OVERHEAD;
        if self.sip.trace.len() >= self.sip.max_trace_messages
            || self.sip.trace_bytes + cost > self.sip.max_trace_bytes
        {
            self.sip.trace_dropped += 1;
            return;
        }
        self.sip.trace_bytes += cost;
        self.sip.trace.push(TraceRecord {
            ts: d.ts,
            side,
            src: d.src,
            dst: d.dst,
            transport: d.transport,
            raw: d.payload.into(),
        });
    }
}

/// (payload type, encoding, clock rate, channels) of every format an m-line names.
fn formats(m: &sdp::Media<'_>) -> Vec<(u8, String, u32, u8)> {
    m.formats
        .iter()
        .filter_map(|pt| m.codec(*pt).map(|(n, r, c)| (*pt, n.to_string(), r, c)))
        .collect()
}
