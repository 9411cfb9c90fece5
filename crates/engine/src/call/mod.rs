//! One call: the SIP dialog state machine (INVITE → early → confirmed → ending → finished),
//! its SDP history and media routes, its RTP streams and its recording segments, and the vCon
//! it builds as it goes. The sniffed-SIP front end lives in [`SipDialog`]; calls opened
//! through the session API (`session.rs`) share everything else.
//!
//! The call never touches the call table: it reports new media routes
//! ([`Call::take_new_routes`]), closed segments ([`Call::take_closed_segments`]) and outputs
//! ([`Call::drain_outputs`]) back to the [`Engine`](crate::Engine), which owns the indices
//! (quinn's `EndpointEvent` pattern).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::Value;
use vcontap_media::{AudioDecoder, CodecKind, DtmfDetector, DtmfEdge, StereoMixer, StreamStats};
use vcontap_sip::Message;
use vcontap_vcon::{format_time, DialogType, Json, PartyEvent, PartyHistory, Vcon};
use vcontap_wire::{Datagram, Timestamp};

mod ending;
mod live;
mod media;
mod report;
mod session;
mod signalling;
mod timer;

use crate::build;
use crate::config::{EngineConfig, RecordMode};
use crate::origin::{AgentInfo, CallOrigins, Origin};
pub(crate) use crate::session::Side;
use crate::stats::EngineStats;
use crate::{EventKind, Output, SegmentId, StoredSegment, VconEvent};

/// Party-history entries kept per call (DTMF floods stop being recorded past this).
const MAX_HISTORY: usize = 1000;
/// Capture-loss spans kept per call.
const MAX_CAPTURE_LOSS: usize = 64;
/// A side's recording switches to another of its streams after the current one has been
/// silent this long (relayed legs, restarts on new ports).
const PRIMARY_TAKEOVER_MS: i64 = 500;
/// A recording segment is closed at its last packet after this much silence (no RTP, no
/// hold): the silence may be the end of the call, and a recording never runs past the end.
/// It also bounds the silence the mixer releases at once when media resumes (30 s × rate ×
/// 2 channels: ~1 MiB at 8 kHz); a longer pause splits the recording into two segments.
const SILENCE_CUT_MS: i64 = 30_000;
/// SSRCs whose RTCP figures are kept per call.
const MAX_RTCP_SSRCS: usize = 16;
/// Parties per call (caller, callee and transfer targets).
const MAX_PARTIES: usize = 16;
/// Early-dialog To tags remembered per call (forking).
const MAX_EARLY_TAGS: usize = 8;
/// Media routes one call may register over its lifetime (re-INVITE churn guard).
const MAX_ROUTES_PER_CALL: usize = 32;
/// `updated` events of one call closer together than this (capture time) are coalesced into
/// one carrying the latest snapshot: a DTMF or re-INVITE flood costs at most five full
/// snapshots per second and call. `created`, `segment` and `finished` are never held back.
pub(crate) const UPDATE_COALESCE_MS: i64 = 200;

/// Why a call ended (the `vcontap.end_reason` of the vCon and the `reason` of the
/// `finished` event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
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
    /// The daemon is shutting down (SIGTERM): every open call is finished.
    Shutdown,
}

impl FinishReason {
    /// The name used in vCons and events.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Bye => "bye",
            FinishReason::Cancel => "cancel",
            FinishReason::Failure(_) => "failure",
            FinishReason::Timeout => "timeout",
            FinishReason::EndOfInput => "end-of-input",
            FinishReason::Evicted => "evicted",
            FinishReason::Shutdown => "shutdown",
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
    pub(crate) side: Side,
    pub(crate) rtcp: bool,
    pub(crate) video: bool,
}

/// One RTP stream: an SSRC in one direction.
struct Stream {
    sender: Side,
    /// From a video m-line: statistics only.
    video: bool,
    ssrc: u32,
    src: SocketAddr,
    dst: SocketAddr,
    stats: StreamStats,
    codecs: Vec<String>,
    /// The kind of each entry of `codecs` (decisions compare kinds, never labels).
    kinds: Vec<CodecKind>,
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
    fn new(sender: Side, video: bool, ssrc: u32, src: SocketAddr, dst: SocketAddr) -> Self {
        Stream {
            sender,
            video,
            ssrc,
            src,
            dst,
            stats: StreamStats::new(0),
            codecs: Vec::new(),
            kinds: Vec::new(),
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

/// The SIP-dialog front end of a sniffed call: what matching messages and media to the call
/// needs (tags, CSeqs, branches, the caller's address, media routes announced in SDP), the
/// dialog's in-flight transactions (challenge, BYE, REFERs) and the message trace. A call
/// opened through the session API has an empty one; the call core (parties, streams,
/// recorder and segments, report, vCon document) is the rest of [`Call`].
pub(crate) struct SipDialog {
    max_trace_messages: usize,
    max_trace_bytes: usize,
    caller_tag: Option<String>,
    /// From tags of every initial INVITE seen (one per B2BUA leg sharing the Call-ID).
    caller_tags: Vec<String>,
    to_tag: Option<String>,
    early_tags: Vec<String>,
    invite_cseq: u32,
    caller_sip: SocketAddr,
    /// Top Via branches of the initial INVITEs seen (one per hop or B2BUA leg, bounded by
    /// [`MAX_EARLY_TAGS`]): an ACK in the same transaction acknowledges a failure (RFC 3261
    /// §17.1.1.3), an ACK in a new one acknowledges a 2xx.
    invite_branches: Vec<String>,
    /// Answered, but the 2xx was never seen (lost on the tap): inferred from the ACK.
    answer_inferred: bool,
    /// The tap started after the INVITE (or lost it): the call was joined on a later
    /// message of its dialog, roles inferred (see `Call::joined`).
    joined: bool,
    bye_side: Side,
    bye_cseq: Option<u32>,
    /// BYEs answered with an error that does not end the dialog (e.g. 500, 491).
    byes_refused: u32,
    challenge: Option<(Timestamp, u16)>,
    last_sip: Timestamp,
    /// The audio RTP address each side announced last: a stream sent there takes over the
    /// side's recording at once when a re-INVITE moves the media.
    media_to: [Option<SocketAddr>; 2],
    routes: Vec<SocketAddr>,
    new_routes: Vec<NewRoute>,
    /// Kept SIP messages, raw (rendered into the trace attachment at the end).
    trace: Vec<TraceRecord>,
    trace_bytes: usize,
    trace_dropped: u64,
    /// REFERs waiting for their final response: (CSeq, transferor side, target).
    pending_refers: Vec<(u32, Side, vcontap_vcon::Party)>,
    /// RFC 7989 Session-ID UUIDs of the caller and callee sides.
    session_uuids: [Option<String>; 2],
}

/// A call and the vCon it grows: the call core (state, parties, media streams with their
/// side and party, recorder and segments, quality report, vCon document) shared by every
/// source, and the sniffed SIP dialog's front end in [`SipDialog`] (empty for sessions).
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

    invite_at: Timestamp,
    answer_at: Option<Timestamp>,
    end_at: Option<Timestamp>,
    final_code: Option<u16>,
    /// A final failure response to the INVITE and when: the call lingers (`linger_ms`) to
    /// keep the ACK, retransmissions and stray BYEs in its trace before it finishes.
    failed: Option<(Timestamp, u16)>,
    cancel_at: Option<Timestamp>,
    /// The BYE waiting for its final response: when, from which side, its CSeq.
    bye_at: Option<Timestamp>,
    last_rtp: Option<Timestamp>,
    finish_reason: Option<FinishReason>,

    legs: [Leg; 2],
    legs_gen: u32,
    /// Every audio payload type any SDP of the call offered (bit per PT), folded in from
    /// `legs` at `offered_gen`; RTP with any other payload type is stray.
    offered_pts: u128,
    offered_gen: Option<u32>,
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
    /// Party-history entries not recorded because of [`MAX_HISTORY`].
    history_dropped: u64,
    /// Capture loss (the tap dropped packets) while the call was live: `(from, to, packets)`.
    capture_loss: Vec<(Timestamp, Timestamp, u64)>,
    /// HEP agents that sent the call's packets (boxed: sniffed calls have none).
    hep: Option<Box<CallOrigins>>,
    undecodable: Vec<String>,

    segment: Option<Segment>,
    /// Where the last closed segment's audio ends: the next one starts no earlier, so
    /// recordings never overlap in time.
    seg_end: Option<Timestamp>,
    seg_base: u64,
    seg_index: u32,
    pending: VecDeque<Pending>,
    /// Segments the driver could not store (left out of the vCon).
    segments_failed: u32,
    closed: Vec<SegmentId>,
    outputs: Vec<Output>,
    transfers: u32,
    /// Final NOTIFY results of accepted transfers (RFC 3515 sipfrag), newest last.
    transfer_status: Vec<Value>,
    /// Media is encrypted (SDP `RTP/SAVP*`, ZRTP): named, never decoded into noise.
    encrypted: Option<&'static str>,
    done: bool,
    edges: Vec<DtmfEdge>,
    /// Time of the last event (events never go back in time).
    last_at: Timestamp,
    /// Time of the last `updated` event emitted, and of the latest change held back since
    /// (see [`UPDATE_COALESCE_MS`]).
    last_update: Option<Timestamp>,
    pending_update: Option<Timestamp>,
    /// Quality so far ([`EngineConfig::quality_interval`], ms; 0: off): live snapshots
    /// carry the RTP report, and a refresh is due at `quality_due` (timer time).
    quality_interval_ms: i64,
    quality_due: Timestamp,
    /// RTP packets counted when the last snapshot was emitted: a refresh is only sent when
    /// they moved (a ringing or silent call costs nothing).
    quality_packets: u64,
    /// When `finish` was called.
    finish_at: Option<Timestamp>,
    /// The party index currently on each side (changes when the connected identity does).
    side_party: [u32; 2],
    /// Extra members of the `vcontap` object (trace and quality when no dialog can hold them).
    extra: Vec<(&'static str, Json)>,
    /// Opened from SIP seen on the wire (dialog fields in the vCon), or through the
    /// engine's session API (no sniffed dialog behind it).
    sniffed: bool,
    /// Session API: the side (channel) each declared stream is sent from.
    session_streams: Vec<Side>,
    /// Session API: recording paused since, and the closed pause intervals.
    paused: Option<Timestamp>,
    pauses: Vec<(Timestamp, Timestamp)>,
    /// Session API: attachments, added streams, recording policy (boxed: sniffed calls
    /// have none).
    content: Option<Box<session::SessionContent>>,
    /// The sniffed SIP dialog's own state (tags, transactions, routes, trace).
    sip: SipDialog,
}

/// One SIP message kept for the `sip-message-trace` attachment: its bytes as captured and
/// where it came from. Rendered to JSON only in the final snapshot
/// ([`crate::build::render_trace`]), so the per-call trace cap counts what is really held.
pub(crate) struct TraceRecord {
    pub(crate) ts: Timestamp,
    pub(crate) side: Side,
    pub(crate) src: SocketAddr,
    pub(crate) dst: SocketAddr,
    pub(crate) transport: vcontap_wire::Transport,
    pub(crate) raw: Box<[u8]>,
}

/// Bytes a [`TraceRecord`] costs besides its message.
pub(crate) const TRACE_RECORD_OVERHEAD: usize = std::mem::size_of::<TraceRecord>();

/// The element of a per-side pair for `side` (0 caller, 1 callee; higher bits ignored).
fn pick<T>(pair: &[T; 2], side: Side) -> &T {
    let [a, b] = pair;
    match side {
        Side::Caller => a,
        Side::Callee => b,
    }
}

/// [`pick`], mutable.
fn pick_mut<T>(pair: &mut [T; 2], side: Side) -> &mut T {
    let [a, b] = pair;
    match side {
        Side::Caller => a,
        Side::Callee => b,
    }
}

/// `PCMU/8000`-style label; encoding names are case-insensitive (RFC 4855), so upper-case them
/// to keep one label per codec whatever each side wrote.
fn codec_label(name: &str, clock: u32) -> String {
    format!("{}/{clock}", name.to_ascii_uppercase())
}

fn side_name(side: Side) -> &'static str {
    match side {
        Side::Caller => "caller",
        Side::Callee => "callee",
    }
}

impl Call {
    /// A call opened by its initial INVITE.
    pub(crate) fn new(
        uuid: String,
        call_id: &str,
        msg: &Message<'_>,
        d: &Datagram<'_>,
        cfg: &EngineConfig,
        seg_base: u64,
    ) -> Self {
        Self::open(uuid, call_id, msg, d, cfg, seg_base, false)
    }

    /// A call joined mid-way: its INVITE was never seen (the tap started during the call, or
    /// the INVITE was lost), and `msg` is an in-dialog message of an INVITE dialog (see
    /// `Engine::joinable`).
    ///
    /// Roles are a heuristic: the side that sent the request of `msg`'s transaction (the
    /// From of a request or of a response alike) is taken as the caller. That is right for
    /// the 2xx and ACK of the initial INVITE (a lost INVITE) and for re-INVITEs and UPDATEs
    /// sent by the caller (the usual session refresher); when the callee sent it, the roles
    /// are swapped, which `vcontap.joined_mid_call` tells consumers to expect.
    pub(crate) fn joined(
        uuid: String,
        call_id: &str,
        msg: &Message<'_>,
        d: &Datagram<'_>,
        cfg: &EngineConfig,
        seg_base: u64,
    ) -> Self {
        Self::open(uuid, call_id, msg, d, cfg, seg_base, true)
    }

    fn open(
        uuid: String,
        call_id: &str,
        msg: &Message<'_>,
        d: &Datagram<'_>,
        cfg: &EngineConfig,
        seg_base: u64,
        joined: bool,
    ) -> Self {
        let created = format_time(d.ts.nanos());
        let mut vcon = Vcon::new(uuid.clone(), created);
        vcon.add_extension(vcontap_vcon::EXT_SIP_SIGNALING);
        vcon.add_extension(vcontap_vcon::EXT_VCONTAP);
        vcon.subject = msg
            .header("Subject")
            .map(str::to_string)
            .filter(|s| !s.is_empty());
        let (caller, callee) = if joined {
            build::parties_joined(msg)
        } else {
            build::parties(msg)
        };
        // The requester of `msg`'s transaction is the caller (see `Call::joined`).
        let caller_sip = if msg.is_request() { d.src } else { d.dst };
        let invite_cseq = msg
            .cseq()
            .filter(|c| !joined || c.method == vcontap_sip::Method::Invite)
            .map_or(0, |c| c.seq);
        vcon.parties.push(caller);
        vcon.parties.push(callee);
        let mut call = Call::blank(uuid, call_id, vcon, cfg, seg_base, d.ts);
        if joined {
            call.state = State::Answered;
        }
        call.sip.caller_tag = msg.from().and_then(|f| f.tag.map(str::to_string));
        call.sip.caller_tags = call.sip.caller_tag.clone().into_iter().collect();
        call.sip.to_tag = joined
            .then(|| msg.to().and_then(|t| t.tag.map(str::to_string)))
            .flatten();
        call.sip.invite_cseq = invite_cseq;
        call.sip.caller_sip = caller_sip;
        call.sip.invite_branches = msg
            .top_via_branch()
            .filter(|_| !joined)
            .map(str::to_string)
            .into_iter()
            .collect();
        call.sip.joined = joined;
        call.emit(EventKind::Created, d.ts);
        call
    }

    /// A call with no SIP behind it yet: the state every source starts from (a sniffed
    /// INVITE fills in the dialog fields, a session fills in its parties and streams).
    pub(super) fn blank(
        uuid: String,
        call_id: &str,
        vcon: Vcon,
        cfg: &EngineConfig,
        seg_base: u64,
        at: Timestamp,
    ) -> Self {
        Call {
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
            invite_at: at,
            answer_at: None,
            end_at: None,
            final_code: None,
            failed: None,
            cancel_at: None,
            bye_at: None,
            last_rtp: None,
            finish_reason: None,
            legs: [Leg::default(), Leg::default()],
            legs_gen: 0,
            offered_pts: 0,
            offered_gen: None,
            streams: Vec::new(),
            last_stream: [0; 2],
            primary: [None; 2],
            primary_last: [None; 2],
            rtcp: Vec::new(),
            held: [false; 2],
            history: Vec::new(),
            history_assigned: 0,
            history_dropped: 0,
            capture_loss: Vec::new(),
            hep: None,
            undecodable: Vec::new(),
            segment: None,
            seg_end: None,
            seg_base,
            seg_index: 0,
            pending: VecDeque::new(),
            segments_failed: 0,
            closed: Vec::new(),
            outputs: Vec::new(),
            transfers: 0,
            transfer_status: Vec::new(),
            encrypted: None,
            done: false,
            edges: Vec::new(),
            extra: Vec::new(),
            side_party: [0, 1],
            last_at: at,
            last_update: None,
            pending_update: None,
            quality_interval_ms: cfg.quality_interval(),
            quality_due: at.add_millis(cfg.quality_interval()),
            quality_packets: 0,
            sniffed: true,
            session_streams: Vec::new(),
            paused: None,
            pauses: Vec::new(),
            content: None,
            finish_at: None,
            sip: SipDialog {
                max_trace_messages: cfg.max_trace_messages,
                max_trace_bytes: cfg.max_trace_bytes,
                caller_tag: None,
                caller_tags: Vec::new(),
                to_tag: None,
                early_tags: Vec::new(),
                invite_cseq: 0,
                caller_sip: SocketAddr::from(([0, 0, 0, 0], 0)),
                invite_branches: Vec::new(),
                answer_inferred: false,
                joined: false,
                bye_side: Side::Caller,
                bye_cseq: None,
                byes_refused: 0,
                challenge: None,
                last_sip: at,
                media_to: [None; 2],
                routes: Vec::new(),
                new_routes: Vec::new(),
                trace: Vec::new(),
                trace_bytes: 0,
                trace_dropped: 0,
                pending_refers: Vec::new(),
                session_uuids: [None, None],
            },
        }
    }

    pub(crate) fn call_id(&self) -> &str {
        &self.call_id
    }

    pub(crate) fn invite_cseq(&self) -> u32 {
        self.sip.invite_cseq
    }

    pub(crate) fn last_activity(&self) -> Timestamp {
        self.last_rtp
            .map_or(self.sip.last_sip, |r| r.max(self.sip.last_sip))
    }

    pub(crate) fn is_done(&self) -> bool {
        self.done
    }

    /// A final failure response was seen and the call lingers for its ACK and stragglers.
    pub(crate) fn is_failed_lingering(&self) -> bool {
        self.failed.is_some() && self.finish_reason.is_none()
    }

    /// Finished but waiting for segment stores.
    pub(crate) fn is_finishing(&self) -> bool {
        self.finish_reason.is_some()
    }

    pub(crate) fn stream_count(&self) -> usize {
        self.streams.len()
    }

    pub(crate) fn routes(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.sip.routes.iter().copied()
    }

    pub(crate) fn ssrcs(&self) -> impl Iterator<Item = u32> + '_ {
        self.streams.iter().map(|s| s.ssrc)
    }

    /// The sending side of a known SSRC, and whether it is a video stream.
    pub(crate) fn side_of_ssrc(&self, ssrc: u32) -> Option<(Side, bool)> {
        self.streams
            .iter()
            .find(|s| s.ssrc == ssrc)
            .map(|s| (s.sender, s.video))
    }

    /// Whether the call has anything for the engine: routes, closed segments, outputs, a
    /// held-back update to schedule, or it is done.
    pub(crate) fn has_pending(&self) -> bool {
        self.done
            || self.pending_update.is_some()
            || !self.sip.new_routes.is_empty()
            || !self.closed.is_empty()
            || !self.outputs.is_empty()
    }

    pub(crate) fn take_new_routes(&mut self) -> Vec<NewRoute> {
        std::mem::take(&mut self.sip.new_routes)
    }

    pub(crate) fn take_closed_segments(&mut self) -> Vec<SegmentId> {
        std::mem::take(&mut self.closed)
    }

    pub(crate) fn drain_outputs(&mut self, out: &mut VecDeque<Output>) {
        out.extend(self.outputs.drain(..));
    }

    // ---- events ----------------------------------------------------------------------

    /// Emits an event with the current snapshot. An `updated` within
    /// [`UPDATE_COALESCE_MS`] of the previous one is held back and later emitted once with
    /// the latest snapshot ([`Call::flush_update`]); any other event carries the latest
    /// snapshot anyway, so it absorbs a held-back update. `seq` stays contiguous.
    fn emit(&mut self, kind: EventKind, at: Timestamp) {
        if kind == EventKind::Updated {
            let window = UPDATE_COALESCE_MS * 1_000_000;
            if self
                .last_update
                .is_some_and(|t| at.nanos().saturating_sub(t.nanos()) < window)
            {
                self.pending_update = Some(at.max(self.pending_update.unwrap_or(at)));
                return;
            }
            self.last_update = Some(at);
        }
        self.pending_update = None;
        self.emit_now(kind, at);
    }

    /// Emits a held-back `updated` event once its coalescing window has passed.
    pub(crate) fn flush_update(&mut self, now: Timestamp) {
        let (Some(at), Some(deadline)) = (self.pending_update, self.update_deadline()) else {
            return;
        };
        if now >= deadline && self.finish_reason.is_none() {
            self.pending_update = None;
            self.last_update = Some(at);
            self.emit_now(EventKind::Updated, at);
        }
    }

    /// When a held-back `updated` event is due: the driver must call `handle_timeout` by
    /// then for the event to be on time.
    pub(crate) fn update_deadline(&self) -> Option<Timestamp> {
        self.pending_update?;
        self.last_update.map(|t| t.add_millis(UPDATE_COALESCE_MS))
    }

    /// Emits an `updated` event with the quality so far when the refresh interval has
    /// passed and the call's RTP counters moved since the last snapshot. Timer-driven (the
    /// deadline is in [`Call::next_deadline`]); the refresh is re-armed either way.
    pub(crate) fn refresh_quality(&mut self, now: Timestamp) {
        if self.quality_interval_ms <= 0 || self.finish_reason.is_some() || now < self.quality_due {
            return;
        }
        self.quality_due = now.add_millis(self.quality_interval_ms);
        if self.rtp_packets() != self.quality_packets {
            self.emit(EventKind::Updated, now);
        }
    }

    /// When the next quality refresh is due (timer time), if refreshes are on.
    pub(crate) fn quality_deadline(&self) -> Option<Timestamp> {
        (self.quality_interval_ms > 0).then_some(self.quality_due)
    }

    /// RTP packets counted on every stream of the call.
    fn rtp_packets(&self) -> u64 {
        self.streams.iter().map(|s| s.stats.packets()).sum()
    }

    fn emit_now(&mut self, kind: EventKind, at: Timestamp) {
        // Segment stores may complete after later packets were handled; keep `at`
        // non-decreasing per call so consumers can rely on it.
        let at = at.max(self.last_at);
        self.last_at = at;
        self.seq += 1;
        self.vcon.updated_at = Some(format_time(at.nanos()));
        self.place_attachments();
        self.vcon.vcontap = Some(self.live_state());
        let json = serde_json::to_string(&self.vcon).unwrap_or_default();
        let reason = if kind == EventKind::Finished {
            self.finish_reason
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

    fn live_state(&mut self) -> Json {
        let state = match (self.state, self.done || self.finish_reason.is_some()) {
            (_, true) => "finished",
            (State::Calling, _) => "calling",
            (State::Early, _) => "early",
            (State::Answered, _) if self.held.iter().any(|h| *h) => "held",
            (State::Answered, _) | (State::Finishing, _) => "answered",
        };
        let time = |t: Timestamp| format_time(t.nanos());
        let pauses: Vec<live::Pause> = self
            .pauses
            .iter()
            .map(|(a, b)| (*a, Some(*b)))
            .chain(self.paused.map(|p| (p, None)))
            .map(|(a, b)| live::Pause {
                start: time(a),
                end: b.map(time),
            })
            .collect();
        // Quality so far, on live snapshots only: a final snapshot puts the report in an
        // analysis (or `extra`) as before, so final vCons do not change.
        let rtp_quality = (self.quality_interval_ms > 0
            && state != "finished"
            && !self.streams.is_empty())
        .then(|| {
            self.quality_packets = self.rtp_packets();
            self.quality_report()
        });
        let live = live::LiveState {
            answer_inferred: self.sip.answer_inferred.then_some(true),
            answered_at: self.answer_at.map(time),
            byes_refused: (self.sip.byes_refused > 0).then_some(self.sip.byes_refused),
            capture_loss: (!self.capture_loss.is_empty()).then(|| {
                self.capture_loss
                    .iter()
                    .map(|(a, b, n)| live::CaptureLoss {
                        start: time(*a),
                        end: time(*b),
                        packets: *n,
                    })
                    .collect()
            }),
            end_reason: self.finish_reason.map(FinishReason::as_str),
            ended_at: self.end_at.map(time),
            hep: self.hep.as_deref().map(CallOrigins::view),
            history_dropped: (self.history_dropped > 0).then_some(self.history_dropped),
            // No INVITE was seen: the first message of the dialog the tap saw.
            invite_at: (!self.sip.joined).then(|| time(self.invite_at)),
            joined_at: self.sip.joined.then(|| time(self.invite_at)),
            joined_mid_call: self.sip.joined.then_some(true),
            party_history: (!self.history.is_empty())
                .then(|| self.history.iter().map(|(_, h)| h).collect()),
            attachments: self.content.as_deref().and_then(|c| c.unplaced_view()),
            attachments_dropped: self.content.as_deref().and_then(|c| c.dropped_view()),
            recording: self.content.as_deref().and_then(|c| c.recording_view()),
            recording_pauses: (!pauses.is_empty()).then_some(pauses),
            rtp_quality,
            streams_added: self.content.as_deref().and_then(|c| c.added_view()),
            sip_call_id: &self.call_id,
            sip_final_status: self.final_code,
            source: (!self.sniffed).then_some("session"),
            state,
            transfer_status: (!self.transfer_status.is_empty())
                .then_some(self.transfer_status.as_slice()),
            undecodable_codecs: (!self.undecodable.is_empty())
                .then_some(self.undecodable.as_slice()),
        };
        if self.extra.is_empty() {
            // Every snapshot but a final one: straight to text, no `Value` tree.
            if let Ok(t) = serde_json::value::to_raw_value(&live) {
                return Json::Text(t);
            }
            return Json::Tree(Value::Null);
        }
        // The final snapshot of a call without a recording dialog: the extra members (trace,
        // quality report) sit in sorted order among the typed ones.
        let base = match serde_json::to_value(&live) {
            Ok(Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        };
        let extra = std::mem::take(&mut self.extra);
        match serde_json::value::to_raw_value(&live::Merged {
            base: &base,
            extra: &extra,
        }) {
            Ok(t) => Json::Text(t),
            Err(_) => Json::Tree(Value::Object(base)),
        }
    }

    /// Counts one datagram that reached the call over HEP (see `origin.rs`).
    #[inline]
    pub(crate) fn note_origin(&mut self, o: Origin, agents: &[Option<Arc<AgentInfo>>]) {
        self.hep.get_or_insert_with(Box::default).note(o, agents);
    }

    /// Notes that the tap lost `packets` between `from` and `to` (kernel ring drops): kept
    /// apart from network loss, which the RTP report measures. At most
    /// [`MAX_CAPTURE_LOSS`] spans; later ones are merged into the last.
    pub(crate) fn note_capture_loss(&mut self, from: Timestamp, to: Timestamp, packets: u64) {
        if self.finish_reason.is_some() || to < self.invite_at {
            return;
        }
        let from = from.max(self.invite_at);
        let full = self.capture_loss.len() >= MAX_CAPTURE_LOSS;
        match self.capture_loss.last_mut() {
            Some(last) if full || last.1 >= from => {
                last.1 = last.1.max(to);
                last.2 = last.2.saturating_add(packets);
            }
            _ => self.capture_loss.push((from, to, packets)),
        }
    }

    /// Records an event of `side`'s current party (see `side_party`). Returns false when
    /// the history is full ([`MAX_HISTORY`]): the entry is counted in `history_dropped`.
    fn add_history(
        &mut self,
        at: Timestamp,
        side: Side,
        event: PartyEvent,
        button: Option<char>,
    ) -> bool {
        let party = *pick(&self.side_party, side);
        if self.history.len() >= MAX_HISTORY {
            self.history_dropped += 1;
            return false;
        }
        self.history.push((
            at,
            PartyHistory {
                party,
                time: format_time(at.nanos()),
                event,
                button: button.map(|c| c.to_string()),
            },
        ));
        true
    }
}
