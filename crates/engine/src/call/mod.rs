//! One call: the SIP dialog state machine (INVITE → early → confirmed → ending → finished),
//! its SDP history and media routes, its RTP streams and its recording segments, and the vCon
//! it builds as it goes.
//!
//! The call never touches the call table: it reports new media routes
//! ([`Call::take_new_routes`]), closed segments ([`Call::take_closed_segments`]) and outputs
//! ([`Call::drain_outputs`]) back to the [`Engine`](crate::Engine), which owns the indices
//! (quinn's `EndpointEvent` pattern).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::{json, Value};
use vcontap_media::{AudioDecoder, CodecKind, DtmfDetector, DtmfEdge, StereoMixer, StreamStats};
use vcontap_sip::Message;
use vcontap_vcon::{format_time, PartyHistory, Vcon};
use vcontap_wire::{Datagram, Timestamp};

mod ending;
mod media;
mod signalling;

use crate::build;
use crate::config::{EngineConfig, RecordMode};
use crate::stats::EngineStats;
use crate::{EventKind, Output, SegmentId, StoredSegment, VconEvent};

/// Party-history entries kept per call (DTMF floods stop being recorded past this).
const MAX_HISTORY: usize = 1000;
/// A side's recording switches to another of its streams after the current one has been
/// silent this long (relayed legs, restarts on new ports).
const PRIMARY_TAKEOVER_MS: i64 = 500;
/// SSRCs whose RTCP figures are kept per call.
const MAX_RTCP_SSRCS: usize = 16;
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
    /// (payload type, encoding, clock rate, channels) of the audio m-line.
    codecs: Vec<(u8, String, u32, u8)>,
    /// The same for video m-lines (reported, never decoded).
    video_codecs: Vec<(u8, String, u32, u8)>,
}

impl Leg {
    fn codec(&self, pt: u8) -> Option<(&str, u32)> {
        self.codecs
            .iter()
            .find(|c| c.0 == pt)
            .map(|c| (c.1.as_str(), c.2))
    }

    fn video_codec(&self, pt: u8) -> Option<(&str, u32)> {
        self.video_codecs
            .iter()
            .find(|c| c.0 == pt)
            .map(|c| (c.1.as_str(), c.2))
    }
}

/// A media address a call learned from SDP, for the engine's routing table.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NewRoute {
    pub(crate) addr: SocketAddr,
    /// The side that receives on it.
    pub(crate) side: u8,
    pub(crate) rtcp: bool,
    pub(crate) video: bool,
}

/// One RTP stream: an SSRC in one direction.
struct Stream {
    sender: u8,
    /// From a video m-line: statistics only.
    video: bool,
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
    /// Times this SSRC took over its address pair from another SSRC (sender restarts).
    ssrc_changes: u32,
    /// Packets whose payload type no SDP of the call offered.
    stray_pts: u64,
    /// (sequence number, timestamp) of the last RFC 4733 end-of-event packet, so its
    /// retransmissions on the same sequence number are not counted as duplicates.
    last_event_end: Option<(u16, u32)>,
}

impl Stream {
    fn new(sender: u8, video: bool, ssrc: u32, src: SocketAddr, dst: SocketAddr) -> Self {
        Stream {
            sender,
            video,
            ssrc,
            src,
            dst,
            stats: StreamStats::new(0),
            codecs: Vec::new(),
            pts: Vec::new(),
            dtmf: DtmfDetector::new(),
            decoder: None,
            pcm: Vec::new(),
            decode_errors: 0,
            codec: None,
            ssrc_changes: 0,
            stray_pts: 0,
            last_event_end: None,
        }
    }
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

/// What RTCP says about one SSRC: how many sender reports it sent itself, and the latest
/// report block about it from the other end (kept apart from what the tap measured).
#[derive(Debug, Clone)]
struct RtcpSummary {
    ssrc: u32,
    sender_reports: u64,
    /// Latest report block whose source is this SSRC, and how many were seen.
    reported: Option<vcontap_media::ReportBlock>,
    reports: u64,
}

struct Segment {
    id: SegmentId,
    start: Timestamp,
    rate: u32,
    mixer: StereoMixer,
    codecs: Vec<String>,
    last_drain: Timestamp,
    frames: u64,
    /// The codec each side last fed into this segment: a side's codec change cuts only
    /// when it already has audio here, so both sides switching cut once, not twice.
    kinds: [Option<CodecKind>; 2],
}

struct Pending {
    id: SegmentId,
    /// Parties on the left and right channel while the segment was recorded.
    parties: [u32; 2],
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
    /// Every audio payload type any SDP of the call offered (bit per PT), folded in from
    /// `legs` at `offered_gen`; RTP with any other payload type is stray.
    offered_pts: u128,
    offered_gen: Option<u32>,
    /// The audio RTP address each side announced last: a stream sent there takes over the
    /// side's recording at once when a re-INVITE moves the media.
    media_to: [Option<SocketAddr>; 2],
    routes: Vec<SocketAddr>,
    new_routes: Vec<NewRoute>,
    streams: Vec<Stream>,
    /// Index of the stream each side sent on last (hot-path cache).
    last_stream: [usize; 2],
    /// The stream that feeds each side's recording channel, and its last packet.
    primary: [Option<usize>; 2],
    primary_last: [Option<Timestamp>; 2],
    /// Per SSRC, bounded by [`MAX_RTCP_SSRCS`].
    rtcp: Vec<RtcpSummary>,
    held: [bool; 2],
    history: Vec<(Timestamp, PartyHistory)>,
    history_assigned: usize,
    undecodable: Vec<String>,

    segment: Option<Segment>,
    /// Where the last closed segment's audio ends: the next one starts no earlier, so
    /// recordings never overlap in time.
    seg_end: Option<Timestamp>,
    seg_base: u64,
    seg_index: u32,
    pending: VecDeque<Pending>,
    closed: Vec<SegmentId>,
    outputs: Vec<Output>,
    trace: Vec<Value>,
    trace_bytes: usize,
    trace_dropped: u64,
    transfers: u32,
    /// Final NOTIFY results of accepted transfers (RFC 3515 sipfrag), newest last.
    transfer_status: Vec<Value>,
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
    /// The party index currently on each side (changes when the connected identity does).
    side_party: [u32; 2],
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
            offered_pts: 0,
            offered_gen: None,
            media_to: [None; 2],
            routes: Vec::new(),
            new_routes: Vec::new(),
            streams: Vec::new(),
            last_stream: [0; 2],
            primary: [None; 2],
            primary_last: [None; 2],
            rtcp: Vec::new(),
            held: [false; 2],
            history: Vec::new(),
            history_assigned: 0,
            undecodable: Vec::new(),
            segment: None,
            seg_end: None,
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
            transfer_status: Vec::new(),
            encrypted: None,
            done: false,
            edges: Vec::new(),
            extra: Vec::new(),
            session_uuids: [None, None],
            side_party: [0, 1],
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

    /// The sending side of a known SSRC, and whether it is a video stream.
    pub(crate) fn side_of_ssrc(&self, ssrc: u32) -> Option<(u8, bool)> {
        self.streams
            .iter()
            .find(|s| s.ssrc == ssrc)
            .map(|s| (s.sender, s.video))
    }

    /// Whether the call has anything for the engine: routes, closed segments, outputs, or
    /// it is done.
    pub(crate) fn has_pending(&self) -> bool {
        self.done
            || !self.new_routes.is_empty()
            || !self.closed.is_empty()
            || !self.outputs.is_empty()
    }

    pub(crate) fn take_new_routes(&mut self) -> Vec<NewRoute> {
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
        if !self.transfer_status.is_empty() {
            v["transfer_status"] = Value::Array(self.transfer_status.clone());
        }
        // Only filled right before the final snapshot, so it can move instead of copy.
        for (k, x) in self.extra.drain(..) {
            v[k] = x;
        }
        v
    }

    /// Records an event of `side`'s current party (see `side_party`).
    fn add_history(&mut self, at: Timestamp, side: u8, event: &str, button: Option<char>) {
        let party = self.side_party[side as usize & 1];
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
}
