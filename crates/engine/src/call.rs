//! One call: the SIP dialog state machine (INVITE → early → confirmed → ending → finished),
//! its SDP history and media routes, its RTP streams and its recording segments, and the vCon
//! it builds as it goes.
//!
//! The call never touches the call table: it reports new media routes
//! ([`Call::take_new_routes`]), closed segments ([`Call::take_closed_segments`]) and outputs
//! ([`Call::drain_outputs`]) back to the [`Engine`](crate::Engine), which owns the indices
//! (quinn's `EndpointEvent` pattern).

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use serde_json::{json, Value};
use vcontap_media::{
    codec_kind, new_decoder, parse_dtmf_event, parse_rtcp, parse_rtp, AudioDecoder, CodecKind,
    DtmfDetector, DtmfEdge, RtcpPacket, SeqOutcome, StereoMixer, StreamStats,
};
use vcontap_sip::{sdp, Kind, Message, Method};
use vcontap_vcon::{format_time, Attachment, Dialog, PartyHistory, Vcon};
use vcontap_wire::{Datagram, Timestamp};

use crate::build;
use crate::config::{EngineConfig, RecordMode};
use crate::stats::EngineStats;
use crate::{EventKind, Output, SegmentId, StoredSegment, VconEvent};

/// Party-history entries kept per call (DTMF floods stop being recorded past this).
const MAX_HISTORY: usize = 1000;
/// A side's recording switches to another of its streams after the current one has been
/// silent this long (relayed legs, restarts on new ports).
const PRIMARY_TAKEOVER_MS: i64 = 500;
/// Parties per call (caller, callee and transfer targets).
const MAX_PARTIES: usize = 16;
/// Early-dialog To tags remembered per call (forking).
const MAX_EARLY_TAGS: usize = 8;
/// Media routes one call may register over its lifetime (re-INVITE churn guard).
const MAX_ROUTES_PER_CALL: usize = 32;

/// Why a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FinishReason {
    /// BYE (and its 200, or the linger time).
    Bye,
    /// CANCEL / 487.
    Cancel,
    /// A final failure response to the INVITE.
    Failure(u16),
    /// No SIP or RTP for the idle timeout.
    Timeout,
    /// The input ended with the call open.
    EndOfInput,
    /// The call table was full.
    Evicted,
}

impl FinishReason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            FinishReason::Bye => "bye",
            FinishReason::Cancel => "cancel",
            FinishReason::Failure(_) => "failure",
            FinishReason::Timeout => "timeout",
            FinishReason::EndOfInput => "end-of-input",
            FinishReason::Evicted => "evicted",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum State {
    Calling,
    Early,
    Answered,
    Finishing,
}

/// The negotiated media of one side, from its latest SDP.
#[derive(Debug, Clone, Default)]
struct Leg {
    /// (payload type, encoding, clock rate, channels).
    codecs: Vec<(u8, String, u32, u8)>,
}

impl Leg {
    fn codec(&self, pt: u8) -> Option<(&str, u32)> {
        self.codecs
            .iter()
            .find(|c| c.0 == pt)
            .map(|c| (c.1.as_str(), c.2))
    }
}

/// One RTP stream: an SSRC in one direction.
struct Stream {
    sender: u8,
    ssrc: u32,
    src: SocketAddr,
    dst: SocketAddr,
    stats: StreamStats,
    codecs: Vec<String>,
    pts: Vec<u8>,
    dtmf: DtmfDetector,
    decoder: Option<(CodecKind, Box<dyn AudioDecoder>)>,
    pcm: Vec<i16>,
    decode_errors: u64,
    /// Codec of the last payload type seen, so the hot path resolves it once.
    codec: Option<Codec>,
}

/// A resolved payload type.
struct Codec {
    pt: u8,
    /// `legs_gen` when resolved: a new SDP invalidates the cache.
    gen: u32,
    kind: CodecKind,
    clock: u32,
    label: Box<str>,
    /// The segment this codec was last noted in.
    noted_in: Option<SegmentId>,
    /// Already named as encrypted in `undecodable`.
    encrypted_noted: bool,
}

#[derive(Debug, Clone, Default)]
struct RtcpSummary {
    sender_reports: u64,
    receiver_reports: u64,
    fraction_lost: Option<u8>,
    cumulative_lost: Option<i32>,
    jitter: Option<u32>,
}

struct Segment {
    id: SegmentId,
    start: Timestamp,
    rate: u32,
    mixer: StereoMixer,
    codecs: Vec<String>,
    last_drain: Timestamp,
    frames: u64,
}

struct Pending {
    id: SegmentId,
    /// Capture time of the input that closed the segment.
    closed_at: Timestamp,
    start: Timestamp,
    duration: f64,
    codecs: Vec<String>,
}

/// A call and the vCon it grows.
pub(crate) struct Call {
    uuid: Arc<str>,
    call_id: String,
    vcon: Vcon,
    seq: u64,
    state: State,
    record: RecordMode,
    segment_seconds: u32,
    jitter_window_ms: u32,
    audio_chunk_ms: u32,
    max_streams: usize,
    max_trace_messages: usize,
    max_trace_bytes: usize,

    invite_at: Timestamp,
    answer_at: Option<Timestamp>,
    end_at: Option<Timestamp>,
    caller_tag: Option<String>,
    /// From tags of every initial INVITE seen (one per B2BUA leg sharing the Call-ID).
    caller_tags: Vec<String>,
    to_tag: Option<String>,
    early_tags: Vec<String>,
    invite_cseq: u32,
    caller_sip: SocketAddr,
    final_code: Option<u16>,
    cancel_at: Option<Timestamp>,
    bye_at: Option<Timestamp>,
    challenge: Option<(Timestamp, u16)>,
    last_sip: Timestamp,
    last_rtp: Option<Timestamp>,
    finish_reason: Option<FinishReason>,

    legs: [Leg; 2],
    legs_gen: u32,
    routes: Vec<SocketAddr>,
    new_routes: Vec<(SocketAddr, u8, bool)>,
    streams: Vec<Stream>,
    /// Index of the stream each side sent on last (hot-path cache).
    last_stream: [usize; 2],
    /// The stream that feeds each side's recording channel, and its last packet.
    primary: [Option<usize>; 2],
    primary_last: [Option<Timestamp>; 2],
    ssrc_changes: [u32; 2],
    rtcp: [RtcpSummary; 2],
    held: [bool; 2],
    history: Vec<(Timestamp, PartyHistory)>,
    history_assigned: usize,
    undecodable: Vec<String>,

    segment: Option<Segment>,
    seg_base: u64,
    seg_index: u32,
    pending: VecDeque<Pending>,
    closed: Vec<SegmentId>,
    outputs: Vec<Output>,
    trace: Vec<Value>,
    trace_bytes: usize,
    trace_dropped: u64,
    transfers: u32,
    /// REFERs waiting for their final response: (CSeq, transferor side, target).
    pending_refers: Vec<(u32, u8, vcontap_vcon::Party)>,
    /// Media is encrypted (SDP `RTP/SAVP*`, ZRTP): named, never decoded into noise.
    encrypted: Option<&'static str>,
    done: bool,
    edges: Vec<DtmfEdge>,
    /// Time of the last event (events never go back in time).
    last_at: Timestamp,
    /// When `finish` was called.
    finish_at: Option<Timestamp>,
    /// RFC 7989 Session-ID UUIDs of the caller and callee sides.
    session_uuids: [Option<String>; 2],
    /// Extra members of the `vcontap` object (trace and quality when no dialog can hold them).
    extra: Vec<(&'static str, Value)>,
}

/// `PCMU/8000`-style label; encoding names are case-insensitive (RFC 4855), so upper-case them
/// to keep one label per codec whatever each side wrote.
fn codec_label(name: &str, clock: u32) -> String {
    format!("{}/{clock}", name.to_ascii_uppercase())
}

fn side_name(side: u8) -> &'static str {
    if side == 0 {
        "caller"
    } else {
        "callee"
    }
}

impl Call {
    pub(crate) fn new(
        uuid: String,
        call_id: &str,
        msg: &Message<'_>,
        d: &Datagram<'_>,
        cfg: &EngineConfig,
        seg_base: u64,
    ) -> Self {
        let created = format_time(d.ts.nanos());
        let mut vcon = Vcon::new(uuid.clone(), created);
        vcon.add_extension(vcontap_vcon::EXT_SIP_SIGNALING);
        vcon.add_extension(vcontap_vcon::EXT_VCONTAP);
        vcon.subject = msg
            .header("Subject")
            .map(str::to_string)
            .filter(|s| !s.is_empty());
        let (caller, callee) = build::parties(msg);
        vcon.parties.push(caller);
        vcon.parties.push(callee);
        let mut call = Call {
            uuid: uuid.into(),
            call_id: call_id.to_string(),
            vcon,
            seq: 0,
            state: State::Calling,
            record: cfg.record,
            segment_seconds: cfg.segment_seconds,
            jitter_window_ms: cfg.jitter_window_ms,
            audio_chunk_ms: cfg.audio_chunk_ms,
            max_streams: cfg.max_streams_per_call,
            max_trace_messages: cfg.max_trace_messages,
            max_trace_bytes: cfg.max_trace_bytes,
            invite_at: d.ts,
            answer_at: None,
            end_at: None,
            caller_tag: msg.from().and_then(|f| f.tag.map(str::to_string)),
            caller_tags: msg
                .from()
                .and_then(|f| f.tag.map(str::to_string))
                .into_iter()
                .collect(),
            to_tag: None,
            early_tags: Vec::new(),
            invite_cseq: msg.cseq().map(|c| c.seq).unwrap_or(0),
            caller_sip: d.src,
            final_code: None,
            cancel_at: None,
            bye_at: None,
            challenge: None,
            last_sip: d.ts,
            last_rtp: None,
            finish_reason: None,
            legs: [Leg::default(), Leg::default()],
            legs_gen: 0,
            routes: Vec::new(),
            new_routes: Vec::new(),
            streams: Vec::new(),
            last_stream: [0; 2],
            primary: [None; 2],
            primary_last: [None; 2],
            ssrc_changes: [0; 2],
            rtcp: [RtcpSummary::default(), RtcpSummary::default()],
            held: [false; 2],
            history: Vec::new(),
            history_assigned: 0,
            undecodable: Vec::new(),
            segment: None,
            seg_base,
            seg_index: 0,
            pending: VecDeque::new(),
            closed: Vec::new(),
            outputs: Vec::new(),
            trace: Vec::new(),
            trace_bytes: 0,
            trace_dropped: 0,
            transfers: 0,
            pending_refers: Vec::new(),
            encrypted: None,
            done: false,
            edges: Vec::new(),
            extra: Vec::new(),
            session_uuids: [None, None],
            last_at: d.ts,
            finish_at: None,
        };
        call.emit(EventKind::Created, d.ts);
        call
    }

    pub(crate) fn call_id(&self) -> &str {
        &self.call_id
    }

    pub(crate) fn invite_cseq(&self) -> u32 {
        self.invite_cseq
    }

    pub(crate) fn last_activity(&self) -> Timestamp {
        self.last_rtp
            .map_or(self.last_sip, |r| r.max(self.last_sip))
    }

    pub(crate) fn is_done(&self) -> bool {
        self.done
    }

    /// Finished but waiting for segment stores.
    pub(crate) fn is_finishing(&self) -> bool {
        self.finish_reason.is_some()
    }

    pub(crate) fn stream_count(&self) -> usize {
        self.streams.len()
    }

    pub(crate) fn routes(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.routes.iter().copied()
    }

    pub(crate) fn ssrcs(&self) -> impl Iterator<Item = u32> + '_ {
        self.streams.iter().map(|s| s.ssrc)
    }

    pub(crate) fn side_of_ssrc(&self, ssrc: u32) -> Option<u8> {
        self.streams
            .iter()
            .find(|s| s.ssrc == ssrc)
            .map(|s| s.sender)
    }

    /// Whether the call has anything for the engine: routes, closed segments, outputs, or
    /// it is done.
    pub(crate) fn has_pending(&self) -> bool {
        self.done
            || !self.new_routes.is_empty()
            || !self.closed.is_empty()
            || !self.outputs.is_empty()
    }

    pub(crate) fn take_new_routes(&mut self) -> Vec<(SocketAddr, u8, bool)> {
        std::mem::take(&mut self.new_routes)
    }

    pub(crate) fn take_closed_segments(&mut self) -> Vec<SegmentId> {
        std::mem::take(&mut self.closed)
    }

    pub(crate) fn drain_outputs(&mut self, out: &mut VecDeque<Output>) {
        out.extend(self.outputs.drain(..));
    }

    // ---- events ----------------------------------------------------------------------

    fn emit(&mut self, kind: EventKind, at: Timestamp) {
        // Segment stores may complete after later packets were handled; keep `at`
        // non-decreasing per call so consumers can rely on it.
        let at = at.max(self.last_at);
        self.last_at = at;
        self.seq += 1;
        self.vcon.updated_at = Some(format_time(at.nanos()));
        self.vcon.vcontap = Some(self.live_state());
        let json = serde_json::to_string(&self.vcon).unwrap_or_default();
        let reason = if kind == EventKind::Finished {
            self.finish_reason.map(FinishReason::as_str)
        } else {
            None
        };
        self.outputs.push(Output::Event(Arc::new(VconEvent {
            uuid: self.uuid.clone(),
            seq: self.seq,
            kind,
            at,
            reason,
            vcon_json: json.into(),
        })));
    }

    fn live_state(&mut self) -> Value {
        let state = match (self.state, self.done || self.finish_reason.is_some()) {
            (_, true) => "finished",
            (State::Calling, _) => "calling",
            (State::Early, _) => "early",
            (State::Answered, _) if self.held.iter().any(|h| *h) => "held",
            (State::Answered, _) | (State::Finishing, _) => "answered",
        };
        let mut v = json!({
            "state": state,
            "sip_call_id": self.call_id,
            "invite_at": format_time(self.invite_at.nanos()),
        });
        if let Some(a) = self.answer_at {
            v["answered_at"] = json!(format_time(a.nanos()));
        }
        if let Some(e) = self.end_at {
            v["ended_at"] = json!(format_time(e.nanos()));
        }
        if let Some(r) = self.finish_reason {
            v["end_reason"] = json!(r.as_str());
        }
        if let Some(c) = self.final_code {
            v["sip_final_status"] = json!(c);
        }
        if !self.history.is_empty() {
            v["party_history"] = Value::Array(
                self.history
                    .iter()
                    .filter_map(|(_, h)| serde_json::to_value(h).ok())
                    .collect(),
            );
        }
        if !self.undecodable.is_empty() {
            v["undecodable_codecs"] = json!(self.undecodable);
        }
        // Only filled right before the final snapshot, so it can move instead of copy.
        for (k, x) in self.extra.drain(..) {
            v[k] = x;
        }
        v
    }

    fn add_history(&mut self, at: Timestamp, party: u32, event: &str, button: Option<char>) {
        if self.history.len() >= MAX_HISTORY {
            return;
        }
        self.history.push((
            at,
            PartyHistory {
                party,
                time: format_time(at.nanos()),
                event: event.to_string(),
                button: button.map(|c| c.to_string()),
            },
        ));
    }

    // ---- SIP -------------------------------------------------------------------------

    /// Which side sent `msg`: 0 caller, 1 callee.
    ///
    /// A B2BUA (SBC) that keeps the Call-ID shows the call as several legs with their own
    /// tags; every From tag seen on an initial INVITE (no To tag) belongs to the caller side,
    /// so requests and responses of all legs are attributed to the same logical side.
    fn sender_side(&self, msg: &Message<'_>, d: &Datagram<'_>) -> u8 {
        let from_tag = msg.from().and_then(|f| f.tag);
        let from_caller = match from_tag {
            Some(t) if !self.caller_tags.is_empty() => self.caller_tags.iter().any(|c| c == t),
            _ => d.src == self.caller_sip,
        };
        match (msg.is_request(), from_caller) {
            (true, true) | (false, false) => 0,
            _ => 1,
        }
    }

    pub(crate) fn handle_sip(&mut self, msg: &Message<'_>, d: &Datagram<'_>, now: Timestamp) {
        if self.finish_reason.is_some() {
            // Late retransmissions after the end still belong in the trace if room is left.
            self.trace_message(msg, d, self.sender_side(msg, d));
            return;
        }
        self.last_sip = now;
        if msg.is_request()
            && msg.method() == Some(Method::Invite)
            && msg.to().is_some_and(|t| t.tag.is_none())
        {
            if let Some(tag) = msg.from().and_then(|f| f.tag) {
                if self.caller_tags.len() < MAX_EARLY_TAGS
                    && !self.caller_tags.iter().any(|c| c == tag)
                {
                    self.caller_tags.push(tag.to_string());
                }
            }
        }
        let side = self.sender_side(msg, d);
        self.trace_message(msg, d, side);
        if self.session_uuids[side as usize].is_none() {
            self.session_uuids[side as usize] =
                msg.header("Session-ID").and_then(build::session_uuid);
        }
        match msg.kind() {
            Kind::Request { method, .. } => self.handle_request(method, msg, d, side, now),
            Kind::Response { code, .. } => self.handle_response(code, msg, side, now),
        }
    }

    fn handle_request(
        &mut self,
        method: Method<'_>,
        msg: &Message<'_>,
        _d: &Datagram<'_>,
        side: u8,
        now: Timestamp,
    ) {
        let in_dialog = msg.to().is_some_and(|t| t.tag.is_some());
        match method {
            Method::Invite if !in_dialog => {
                let seq = msg.cseq().map(|c| c.seq).unwrap_or(0);
                if seq > self.invite_cseq || self.challenge.is_some() {
                    // The INVITE re-sent after a 401/407 challenge (same Call-ID, CSeq+1).
                    self.invite_cseq = seq.max(self.invite_cseq);
                    self.challenge = None;
                }
                self.apply_sdp(msg, 0, now, false);
            }
            Method::Invite | Method::Update => {
                let changed = self.apply_sdp(msg, side, now, true);
                if changed && self.state >= State::Answered {
                    self.emit(EventKind::Updated, now);
                }
            }
            Method::Bye if self.bye_at.is_none() => {
                self.bye_at = Some(now);
                self.add_history(now, side as u32, "drop", None);
            }
            Method::Cancel if self.cancel_at.is_none() && self.state < State::Answered => {
                self.cancel_at = Some(now);
            }
            Method::Info => {
                if let Some(info) = msg
                    .content_type()
                    .and_then(|ct| vcontap_sip::dtmf_from_info(ct, msg.body()))
                {
                    self.add_history(now, side as u32, "keydown", Some(info.digit));
                    let up = now.add_millis(info.duration_ms.unwrap_or(100).min(60_000) as i64);
                    self.add_history(up, side as u32, "keyup", Some(info.digit));
                    self.emit(EventKind::Updated, now);
                }
            }
            Method::Refer => {
                // Recorded when accepted (2xx): a REFER can be challenged or refused.
                if let (Some(target), Some(cseq)) = (
                    msg.header("Refer-To").and_then(build::party_from_header),
                    msg.cseq(),
                ) {
                    if self.pending_refers.len() < MAX_EARLY_TAGS {
                        self.pending_refers.push((cseq.seq, side, target));
                    }
                }
            }
            _ => {}
        }
    }

    fn handle_response(&mut self, code: u16, msg: &Message<'_>, side: u8, now: Timestamp) {
        let Some(cseq) = msg.cseq() else { return };
        match cseq.method {
            Method::Refer if code >= 200 => {
                let Some(pos) = self.pending_refers.iter().position(|r| r.0 == cseq.seq) else {
                    return;
                };
                let (_, transferor, target) = self.pending_refers.swap_remove(pos);
                if (200..300).contains(&code) {
                    self.accept_transfer(transferor, target, now);
                }
            }
            Method::Invite => {
                let initial = cseq.seq == self.invite_cseq && self.state < State::Answered;
                if (100..200).contains(&code) {
                    if let Some(tag) = msg.to().and_then(|t| t.tag) {
                        if code > 100
                            && self.early_tags.len() < MAX_EARLY_TAGS
                            && !self.early_tags.iter().any(|t| t == tag)
                        {
                            self.early_tags.push(tag.to_string());
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
                        self.to_tag = msg.to().and_then(|t| t.tag.map(str::to_string));
                        self.cancel_at = None;
                        self.apply_sdp(msg, side, now, false);
                        build::update_callee(&mut self.vcon.parties[1], msg);
                        self.emit(EventKind::Updated, now);
                    } else if self.state >= State::Answered {
                        // Answer to a re-INVITE: media may move, but hold is decided by offers.
                        self.apply_sdp(msg, side, now, false);
                    }
                } else if code >= 300 && initial {
                    if code == 401 || code == 407 {
                        self.challenge = Some((now, code));
                    } else {
                        self.final_code = Some(code);
                        let reason = if code == 487 {
                            FinishReason::Cancel
                        } else {
                            FinishReason::Failure(code)
                        };
                        self.finish(reason, now);
                    }
                }
            }
            Method::Bye if code >= 200 && self.bye_at.is_some() => {
                self.finish(FinishReason::Bye, now);
            }
            _ => {}
        }
    }

    /// From now on the media is encrypted: close the recording, decode nothing more.
    fn mark_encrypted(&mut self, how: &'static str, now: Timestamp) {
        if self.encrypted.is_none() {
            self.encrypted = Some(how);
            self.cut_segment(now);
        }
    }

    /// A transfer was accepted: the target becomes a party (once), the recording is cut, and a
    /// `transfer` dialog records the roles.
    fn accept_transfer(&mut self, transferor: u8, target: vcontap_vcon::Party, now: Timestamp) {
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
            kind: "transfer".into(),
            start: format_time(now.nanos()),
            transferor: Some(transferor as u32),
            transferee: Some(1 - transferor as u32),
            transfer_target: Some(idx),
            sip_call_id: Some(self.call_id.clone()),
            ..Default::default()
        });
        self.emit(EventKind::Updated, now);
    }

    /// Applies the SDP of `msg` as `side`'s receive description. Returns true when something
    /// visible changed (hold state or codecs).
    fn apply_sdp(&mut self, msg: &Message<'_>, side: u8, now: Timestamp, offer: bool) -> bool {
        let Some(body) = vcontap_sip::sdp_body(msg) else {
            return false;
        };
        let Ok(s) = sdp::parse(body) else {
            return false;
        };
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
        let codecs: Vec<(u8, String, u32, u8)> = m
            .formats
            .iter()
            .filter_map(|pt| m.codec(*pt).map(|(n, r, c)| (*pt, n.to_string(), r, c)))
            .collect();
        if self.legs[side as usize].codecs != codecs {
            changed = !self.legs[side as usize].codecs.is_empty();
            self.legs[side as usize].codecs = codecs;
            self.legs_gen = self.legs_gen.wrapping_add(1);
        }
        if let Some(ip) = m.connection_or(&s) {
            if !ip.is_unspecified() {
                self.add_route(SocketAddr::new(ip, m.port), side, false);
                if let Some((port, addr)) = m.rtcp {
                    self.add_route(SocketAddr::new(addr.unwrap_or(ip), port), side, true);
                } else if !m.rtcp_mux {
                    self.add_route(SocketAddr::new(ip, m.port.wrapping_add(1)), side, true);
                }
            }
        }
        if offer && self.state >= State::Answered {
            let held = m.is_held(&s);
            if held != self.held[side as usize] {
                self.held[side as usize] = held;
                self.add_history(now, side as u32, if held { "hold" } else { "unhold" }, None);
                self.cut_segment(now);
                changed = true;
            }
        }
        changed
    }

    fn add_route(&mut self, addr: SocketAddr, side: u8, rtcp: bool) {
        if self.routes.contains(&addr) {
            // Same address re-announced by the other side (e.g. a B2BUA) keeps the first owner.
            return;
        }
        if self.routes.len() >= MAX_ROUTES_PER_CALL {
            return;
        }
        if let IpAddr::V4(v4) = addr.ip() {
            if v4.is_broadcast() {
                return;
            }
        }
        self.routes.push(addr);
        self.new_routes.push((addr, side, rtcp));
    }

    fn trace_message(&mut self, msg: &Message<'_>, d: &Datagram<'_>, side: u8) {
        if self.trace.len() >= self.max_trace_messages
            || self.trace_bytes + d.payload.len() > self.max_trace_bytes
        {
            self.trace_dropped += 1;
            return;
        }
        self.trace_bytes += d.payload.len();
        self.trace.push(build::trace_entry(msg, d, side));
    }

    // ---- media -----------------------------------------------------------------------

    pub(crate) fn handle_rtcp(&mut self, sender: u8, d: &Datagram<'_>) {
        let Ok(pkts) = parse_rtcp(d.payload) else {
            return;
        };
        let sum = &mut self.rtcp[sender as usize & 1];
        for p in pkts {
            let blocks = match &p {
                RtcpPacket::SenderReport(sr) => {
                    sum.sender_reports += 1;
                    &sr.reports
                }
                RtcpPacket::ReceiverReport(rr) => {
                    sum.receiver_reports += 1;
                    &rr.reports
                }
                _ => continue,
            };
            if let Some(b) = blocks.first() {
                sum.fraction_lost = Some(b.fraction_lost);
                sum.cumulative_lost = Some(b.cumulative_lost);
                sum.jitter = Some(b.jitter);
            }
        }
    }

    /// Resolves a payload type to (kind, clock rate, label). Payload types are those the
    /// *receiver* announced; fall back to the sender's SDP, then the RFC 3551 static table.
    fn resolve_codec(&self, sender: u8, pt: u8) -> Codec {
        let recv = &self.legs[1 - sender as usize];
        let send = &self.legs[sender as usize];
        let (name, clock) = match recv.codec(pt).or_else(|| send.codec(pt)) {
            Some((n, r)) => (n.to_string(), r),
            None => match sdp::static_payload_type(pt) {
                Some((n, r, _)) => (n.to_string(), r),
                None => (format!("PT{pt}"), 0),
            },
        };
        Codec {
            pt,
            gen: self.legs_gen,
            kind: codec_kind(&name),
            clock,
            label: codec_label(&name, clock).into(),
            noted_in: None,
            encrypted_noted: false,
        }
    }

    /// Handles one RTP packet from `sender`. Returns the SSRC when it is new to the call.
    ///
    /// This is the hot path (≈95% of all packets): no allocation unless the payload type,
    /// the SDP or the stream changes.
    pub(crate) fn handle_rtp(
        &mut self,
        sender: u8,
        d: &Datagram<'_>,
        now: Timestamp,
        stats: &mut EngineStats,
    ) -> Option<u32> {
        let p = match parse_rtp(d.payload) {
            Ok(p) => p,
            Err(_) => {
                // ZRTP (RFC 6189) shares the media ports: version 0 and the "ZRTP" cookie.
                // After its handshake the media is SRTP.
                if d.payload.get(4..8) == Some(b"ZRTP".as_slice()) && self.finish_reason.is_none() {
                    self.mark_encrypted("ZRTP", now);
                }
                return None;
            }
        };
        if self.finish_reason.is_some() {
            return None;
        }
        self.last_rtp = Some(now);
        let sender = sender & 1;
        let mut new_ssrc = None;
        // A stream is an SSRC on one address pair (as tshark counts them): a relayed call
        // shows the same SSRC on both legs, which must not be merged into one set of counters.
        let hit =
            |s: &Stream| s.ssrc == p.ssrc && s.sender == sender && s.src == d.src && s.dst == d.dst;
        // Most packets belong to the stream this sender used last.
        let last = self.last_stream[sender as usize];
        let found = match self.streams.get(last) {
            Some(s) if hit(s) => Some(last),
            _ => self.streams.iter().position(hit),
        };
        let idx = match found {
            Some(i) => i,
            None => {
                if self.streams.len() >= self.max_streams {
                    stats.streams_dropped += 1;
                    return None;
                }
                if self
                    .streams
                    .iter()
                    .any(|s| s.sender == sender && s.ssrc != p.ssrc)
                {
                    self.ssrc_changes[sender as usize] += 1;
                }
                self.streams.push(Stream {
                    sender,
                    ssrc: p.ssrc,
                    src: d.src,
                    dst: d.dst,
                    stats: StreamStats::new(0),
                    codecs: Vec::new(),
                    pts: Vec::new(),
                    dtmf: DtmfDetector::new(),
                    decoder: None,
                    pcm: Vec::new(),
                    decode_errors: 0,
                    codec: None,
                });
                new_ssrc = Some(p.ssrc);
                self.streams.len() - 1
            }
        };
        self.last_stream[sender as usize] = idx;
        let cached = self.streams[idx]
            .codec
            .as_ref()
            .is_some_and(|c| c.pt == p.pt && c.gen == self.legs_gen);
        if !cached {
            let c = self.resolve_codec(sender, p.pt);
            let stream = &mut self.streams[idx];
            if !stream.pts.contains(&p.pt) && stream.pts.len() < 16 {
                stream.pts.push(p.pt);
                stream.codecs.push(c.label.to_string());
            }
            stream.codec = Some(c);
        }
        let stream = &mut self.streams[idx];
        let (kind, clock) = match &stream.codec {
            Some(c) => (c.kind, c.clock),
            None => return new_ssrc,
        };
        if kind == CodecKind::TelephoneEvent {
            // RFC 4733 events share the stream's sequence space.
            let outcome = stream.stats.update_marked(
                p.seq,
                p.ts,
                now.nanos(),
                p.payload.len(),
                p.marker,
                false,
            );
            if outcome == SeqOutcome::Duplicate {
                return new_ssrc;
            }
            if let Some(ev) = parse_dtmf_event(p.payload) {
                let mut edges = std::mem::take(&mut self.edges);
                edges.clear();
                self.streams[idx].dtmf.push(p.ts, &ev, &mut edges);
                for e in &edges {
                    match *e {
                        DtmfEdge::Down(c) => {
                            self.add_history(now, sender as u32, "keydown", Some(c))
                        }
                        DtmfEdge::Up { digit, .. } => {
                            self.add_history(now, sender as u32, "keyup", Some(digit))
                        }
                    }
                }
                let any = !edges.is_empty();
                self.edges = edges;
                if any {
                    self.emit(EventKind::Updated, now);
                }
            }
            return new_ssrc;
        }
        if clock != 0 && kind != CodecKind::ComfortNoise {
            stream.stats.set_clock_rate(clock);
        }
        let cn = kind == CodecKind::ComfortNoise;
        let outcome =
            stream
                .stats
                .update_marked(p.seq, p.ts, now.nanos(), p.payload.len(), p.marker, cn);
        if self.record == RecordMode::None
            || self.state < State::Answered
            || outcome == SeqOutcome::Duplicate
            || kind == CodecKind::ComfortNoise
        {
            return new_ssrc;
        }
        if let Some(how) = self.encrypted {
            // Named once per stream and codec, not per packet.
            if let Some(c) = self.streams[idx].codec.as_mut() {
                if !c.encrypted_noted {
                    c.encrypted_noted = true;
                    let label = format!("{} ({how})", c.label);
                    if !self.undecodable.contains(&label) && self.undecodable.len() < 8 {
                        self.undecodable.push(label);
                    }
                }
            }
            return new_ssrc;
        }
        // One stream per side feeds the recording: a tap on an SBC/B2BUA sees the same audio
        // on both legs (often with the same SSRC), and mixing both would make the channel
        // jump between two timelines. The primary changes when the sender changes SSRC on
        // the same addresses, or when it has been silent for PRIMARY_TAKEOVER_MS.
        let side = sender as usize;
        match self.primary[side] {
            Some(p) if p == idx => {}
            Some(p) => {
                let same_leg = self
                    .streams
                    .get(p)
                    .is_some_and(|ps| ps.src == d.src && ps.dst == d.dst);
                let silent = self.primary_last[side].is_none_or(|t| {
                    now.nanos().saturating_sub(t.nanos()) > PRIMARY_TAKEOVER_MS * 1_000_000
                });
                if !(same_leg || silent) {
                    return new_ssrc;
                }
                self.primary[side] = Some(idx);
            }
            None => self.primary[side] = Some(idx),
        }
        self.primary_last[side] = Some(now);
        let stream = &mut self.streams[idx];
        // Decoder (re)selection; a codec change cuts the segment.
        let prev = stream.decoder.as_ref().map(|(k, _)| *k);
        if prev != Some(kind) {
            match new_decoder(kind) {
                Some(dec) => {
                    stream.decoder = Some((kind, dec));
                    if prev.is_some() {
                        self.cut_segment(now);
                    }
                }
                None => {
                    // Switching to a codec we cannot decode is a codec change too: close the
                    // segment rather than pad it with silence for this side.
                    if prev.is_some() {
                        stream.decoder = None;
                        self.cut_segment(now);
                    }
                    let label = self.streams[idx]
                        .codec
                        .as_ref()
                        .map(|c| c.label.to_string())
                        .unwrap_or_default();
                    if !self.undecodable.contains(&label) && self.undecodable.len() < 8 {
                        self.undecodable.push(label);
                    }
                    return new_ssrc;
                }
            }
        }
        let stream = &mut self.streams[idx];
        let Some((_, dec)) = stream.decoder.as_mut() else {
            return new_ssrc;
        };
        stream.pcm.clear();
        let pcm_rate = dec.sample_rate();
        if dec.decode(p.payload, &mut stream.pcm).is_err() {
            stream.decode_errors += 1;
            stats.decode_errors += 1;
            return new_ssrc;
        }
        // Open a segment on the first decodable audio after answer; a faster codec than the
        // open segment's rate starts a new segment.
        if self.segment.as_ref().is_some_and(|s| s.rate < pcm_rate) {
            self.cut_segment(now);
        }
        if self.segment.is_none() {
            self.open_segment(now, pcm_rate.max(8000));
        }
        let stream = &mut self.streams[idx];
        let Some(seg) = self.segment.as_mut() else {
            return new_ssrc;
        };
        // Note the codec on the segment once per (stream, codec, segment), not per packet.
        if let Some(c) = stream.codec.as_mut() {
            if c.noted_in != Some(seg.id) {
                c.noted_in = Some(seg.id);
                if !seg.codecs.iter().any(|l| **l == *c.label) && seg.codecs.len() < 8 {
                    seg.codecs.push(c.label.to_string());
                }
            }
        }
        let stream = &self.streams[idx];
        seg.mixer.push(
            sender as usize,
            p.ssrc,
            now.nanos(),
            p.ts,
            clock.max(1),
            &stream.pcm,
            pcm_rate,
        );
        self.drain_audio(now, false);
        if self.segment_seconds > 0 {
            if let Some(seg) = &self.segment {
                if now.nanos().saturating_sub(seg.start.nanos())
                    >= self.segment_seconds as i64 * 1_000_000_000
                {
                    self.cut_segment(now);
                }
            }
        }
        new_ssrc
    }

    fn open_segment(&mut self, now: Timestamp, rate: u32) {
        let id = SegmentId(self.seg_base + self.seg_index as u64);
        let index = self.seg_index;
        self.seg_index += 1;
        let channels = if self.record == RecordMode::Mono {
            1
        } else {
            2
        };
        self.outputs.push(Output::SegmentOpened {
            segment: id,
            uuid: self.uuid.clone(),
            index,
            rate,
            channels,
        });
        self.segment = Some(Segment {
            id,
            start: now,
            rate,
            mixer: StereoMixer::new(rate, now.nanos(), self.jitter_window_ms),
            codecs: Vec::new(),
            last_drain: now,
            frames: 0,
        });
    }

    fn push_audio(&mut self, id: SegmentId, mut buf: Vec<i16>) {
        if buf.is_empty() {
            return;
        }
        if self.record == RecordMode::Mono {
            let mono: Vec<i16> = buf
                .chunks_exact(2)
                .map(|f| f[0].saturating_add(f[1]))
                .collect();
            buf = mono;
        }
        self.outputs.push(Output::Audio {
            segment: id,
            samples: buf,
        });
    }

    fn drain_audio(&mut self, now: Timestamp, force: bool) {
        let chunk = self.audio_chunk_ms as i64 * 1_000_000;
        let Some(seg) = self.segment.as_mut() else {
            return;
        };
        if !force && now.nanos().saturating_sub(seg.last_drain.nanos()) < chunk {
            return;
        }
        seg.last_drain = now;
        let mut buf = Vec::new();
        seg.frames += seg.mixer.drain(now.nanos(), &mut buf) as u64;
        let id = seg.id;
        self.push_audio(id, buf);
    }

    /// Closes the open segment (if any) at `now`.
    fn cut_segment(&mut self, now: Timestamp) {
        let Some(mut seg) = self.segment.take() else {
            return;
        };
        let mut buf = Vec::new();
        seg.frames += seg.mixer.finish(now.nanos(), &mut buf) as u64;
        self.push_audio(seg.id, buf);
        self.outputs.push(Output::SegmentClosed { segment: seg.id });
        self.closed.push(seg.id);
        let duration = seg.frames as f64 / seg.rate.max(1) as f64;
        self.pending.push_back(Pending {
            closed_at: now,
            id: seg.id,
            start: seg.start,
            duration,
            codecs: seg.codecs,
        });
    }

    /// Periodic work: hands out buffered audio even when packets pause (hold).
    pub(crate) fn tick(&mut self, now: Timestamp) {
        self.drain_audio(now, false);
    }

    pub(crate) fn segment_stored(
        &mut self,
        id: SegmentId,
        stored: Option<StoredSegment>,
        now: Timestamp,
    ) {
        let Some(pos) = self.pending.iter().position(|p| p.id == id) else {
            return;
        };
        let Some(p) = self.pending.remove(pos) else {
            return;
        };
        if let Some(st) = stored {
            // Events up to the cut belong to the closing segment (a hold lands on the one it ends).
            let mut hist = Vec::new();
            while self.history_assigned < self.history.len()
                && self.history[self.history_assigned].0 <= p.closed_at
            {
                hist.push(self.history[self.history_assigned].1.clone());
                self.history_assigned += 1;
            }
            let mut dlg = self.sip_dialog("recording", p.start);
            dlg.duration = Some((p.duration * 1000.0).round() / 1000.0);
            dlg.parties = Some(vec![0, 1]);
            dlg.mediatype = Some(st.mediatype);
            dlg.filename = Some(st.filename);
            dlg.url = Some(st.url);
            dlg.content_hash = Some(st.content_hash);
            dlg.party_history = hist;
            dlg.codecs = p.codecs;
            self.vcon.dialog.push(dlg);
            // At the cut, not when the driver's store came back (deterministic).
            self.emit(EventKind::Segment, p.closed_at);
        }
        self.try_finalize(now);
    }

    fn sip_dialog(&self, kind: &str, start: Timestamp) -> Dialog {
        Dialog {
            kind: kind.to_string(),
            start: format_time(start.nanos()),
            application: Some("sip".into()),
            sip_call_id: Some(self.call_id.clone()),
            sip_from_tag: self.caller_tag.clone(),
            sip_to_tag: self.to_tag.clone(),
            sip_cseq: Some(self.invite_cseq),
            session_id: self.session_id(),
            ..Default::default()
        }
    }

    /// The RFC 7989 Session-ID pair, when either side sent one.
    fn session_id(&self) -> Option<vcontap_vcon::SessionId> {
        const NIL: &str = "00000000000000000000000000000000";
        let [a, b] = &self.session_uuids;
        (a.is_some() || b.is_some()).then(|| vcontap_vcon::SessionId {
            local: a.clone().unwrap_or_else(|| NIL.into()),
            remote: b.clone().unwrap_or_else(|| NIL.into()),
        })
    }

    // ---- ending ----------------------------------------------------------------------

    /// Whether the call should end at `now` without further input.
    pub(crate) fn due(&self, now: Timestamp, cfg: &EngineConfig) -> Option<FinishReason> {
        if self.finish_reason.is_some() {
            return None;
        }
        let since = |t: Timestamp| now.nanos().saturating_sub(t.nanos()) / 1_000_000;
        if let Some(b) = self.bye_at {
            if since(b) >= cfg.linger_ms {
                return Some(FinishReason::Bye);
            }
        }
        if let Some(c) = self.cancel_at {
            if since(c) >= cfg.linger_ms {
                return Some(FinishReason::Cancel);
            }
        }
        if let Some((t, code)) = self.challenge {
            if since(t) >= cfg.auth_wait_ms {
                return Some(FinishReason::Failure(code));
            }
        }
        let limit = if self.state >= State::Answered {
            cfg.idle_timeout_ms
        } else {
            cfg.ringing_timeout_ms
        };
        if since(self.last_activity()) >= limit {
            return Some(FinishReason::Timeout);
        }
        None
    }

    pub(crate) fn finish(&mut self, reason: FinishReason, now: Timestamp) {
        if self.finish_reason.is_some() {
            return;
        }
        if let FinishReason::Failure(code) = reason {
            self.final_code.get_or_insert(code);
        }
        self.finish_reason = Some(reason);
        self.finish_at = Some(now);
        self.state = State::Finishing;
        // A call that ended by itself ends at its last signalling; a timeout at last activity.
        let end = match reason {
            FinishReason::Bye => self.bye_at.unwrap_or(now),
            // A challenge nobody answered: the call ended with the 401/407.
            FinishReason::Failure(_) if self.challenge.is_some() => {
                self.challenge.map_or(now, |(t, _)| t)
            }
            FinishReason::Timeout | FinishReason::EndOfInput | FinishReason::Evicted => {
                self.last_activity()
            }
            _ => now,
        };
        self.end_at = Some(end);
        self.cut_segment(now);
        self.try_finalize(now);
    }

    fn disposition(&self) -> Option<&'static str> {
        if let Some(a) = self.answer_at {
            // 200 OK then BYE before any media at all: the callee hung up at once.
            // Only when nothing else happened in the dialog: a signalling-only capture of a
            // real conversation (no RTP captured, but re-INVITEs, DTMF, a slower BYE) must not
            // be called incomplete because *our* capture lacks media.
            let quick = self
                .end_at
                .is_some_and(|e| e.nanos().saturating_sub(a.nanos()) < 2_000_000_000);
            let bye = self.finish_reason == Some(FinishReason::Bye);
            let quiet = self.history.iter().all(|(_, h)| h.event == "drop") && self.transfers == 0;
            return (bye && quick && quiet && self.streams.is_empty()).then_some("hung-up");
        }
        match (self.final_code, self.finish_reason) {
            (Some(486 | 600), _) => Some("busy"),
            (Some(408 | 480 | 487), _) => Some("no-answer"),
            (Some(503), _) => Some("congestion"),
            (Some(c), _) if (300..400).contains(&c) => None,
            (Some(c), _) if c >= 400 => Some("failed"),
            (None, Some(FinishReason::Cancel)) => Some("no-answer"),
            _ => None,
        }
    }

    fn try_finalize(&mut self, now: Timestamp) {
        if self.finish_reason.is_none() || !self.pending.is_empty() || self.done {
            return;
        }
        let end = self.end_at.unwrap_or(now);
        if let Some(disp) = self.disposition() {
            let mut d = self.sip_dialog("incomplete", self.invite_at);
            d.duration = Some(
                (end.nanos().saturating_sub(self.invite_at.nanos()).max(0) as f64 / 1e9 * 1000.0)
                    .round()
                    / 1000.0,
            );
            d.parties = Some(vec![0, 1]);
            d.disposition = Some(disp.to_string());
            // Events not covered by a recording stay on this dialog.
            d.party_history = self.history[self.history_assigned..]
                .iter()
                .map(|(_, h)| h.clone())
                .collect();
            self.history_assigned = self.history.len();
            self.vcon.dialog.push(d);
        }
        let recordings: Vec<u32> = self
            .vcon
            .dialog
            .iter()
            .enumerate()
            .filter(|(_, d)| d.kind == "recording")
            .map(|(i, _)| i as u32)
            .collect();
        if !self.trace.is_empty() {
            // Built by hand: `json!` would re-serialize the moved trace into a fresh copy.
            let mut body = serde_json::Map::new();
            body.insert("version".into(), json!("1.0"));
            body.insert("call_id".into(), json!(self.call_id));
            body.insert(
                "messages".into(),
                Value::Array(std::mem::take(&mut self.trace)),
            );
            body.insert("messages_dropped".into(), json!(self.trace_dropped));
            let body = Value::Object(body);
            match self.vcon.dialog.iter().position(|d| d.kind != "transfer") {
                Some(first) => self.vcon.attachments.push(Attachment {
                    purpose: Some("sip-message-trace".into()),
                    start: format_time(self.invite_at.nanos()),
                    party: 0,
                    dialog: first as u32,
                    mediatype: Some("application/json".into()),
                    encoding: Some("json".into()),
                    body: Some(body),
                }),
                // An answered call without recordings (`--record none`, undecodable codecs,
                // signalling-only captures) has no dialog an attachment or analysis could
                // point at (the schema requires attachment `dialog`, the vcon library requires
                // analysis `dialog`, and a content-less `recording` fails ingest), so the trace
                // stays in the `vcontap` extension object instead of being lost.
                None => self.extra.push(("sip_message_trace", body)),
            }
        }
        if !self.streams.is_empty() && recordings.is_empty() {
            let streams: Vec<Value> = self.streams.iter().map(|s| self.stream_report(s)).collect();
            self.extra
                .push(("rtp_quality", json!({ "streams": streams })));
        } else if !self.streams.is_empty() {
            let streams: Vec<Value> = self.streams.iter().map(|s| self.stream_report(s)).collect();
            self.vcon.analysis.push(vcontap_vcon::Analysis {
                kind: "report".into(),
                dialog: Some(recordings),
                vendor: "vcontap".into(),
                product: Some(concat!("vcontap ", env!("CARGO_PKG_VERSION")).into()),
                schema: Some("vcontap-rtp-quality".into()),
                mediatype: Some("application/json".into()),
                encoding: Some("json".into()),
                body: Some(json!({ "streams": streams })),
            });
        }
        self.done = true;
        // The finishing input's time, not the time the last segment store came back: the
        // final snapshot does not depend on how fast the driver writes media.
        let at = self.finish_at.unwrap_or(now).max(end);
        self.emit(EventKind::Finished, at);
    }

    fn stream_report(&self, s: &Stream) -> Value {
        let st = &s.stats;
        let expected = st.expected();
        let lost = st.lost();
        let loss_pct = if expected > 0 {
            (lost.max(0) as f64 * 100.0 / expected as f64 * 100.0).round() / 100.0
        } else {
            0.0
        };
        let r = &self.rtcp[s.sender as usize];
        let round = |x: f64| (x * 1000.0).round() / 1000.0;
        json!({
            "party": s.sender,
            "direction": format!("{}->{}", side_name(s.sender), side_name(1 - s.sender)),
            "ssrc": format!("0x{:08X}", s.ssrc),
            "src": s.src.to_string(),
            "dst": s.dst.to_string(),
            "codecs": s.codecs,
            "packets": st.packets(),
            "bytes": st.bytes(),
            "expected": expected,
            "lost": lost,
            "loss_percent": loss_pct,
            "duplicates": st.duplicates(),
            "reordered": st.reordered(),
            "seq_cycles": st.seq_cycles(),
            "jitter_ms": round(st.jitter_ms()),
            "max_jitter_ms": round(st.max_jitter_ms()),
            "max_delta_ms": round(st.max_delta_ms()),
            "ssrc_changes": self.ssrc_changes[s.sender as usize],
            "decode_errors": s.decode_errors,
            "first": st.first_arrival().map(format_time),
            "last": st.last_arrival().map(format_time),
            "rtcp": {
                "sender_reports": r.sender_reports,
                "receiver_reports": r.receiver_reports,
                "fraction_lost": r.fraction_lost,
                "cumulative_lost": r.cumulative_lost,
                "jitter": r.jitter,
            },
        })
    }
}
