//! The vcontap call engine: a sans-IO state machine that turns decoded datagrams into
//! calls and a stream of vCon events.
//!
//! # Run-loop contract (str0m/quinn style)
//!
//! The engine never reads the clock, opens files or spawns anything. The driver feeds it:
//!
//! - [`Engine::handle_datagram`] for every [`Datagram`] the wire decoder produced (its
//!   capture timestamp is what the vCon records; it never fires a timer);
//! - [`Engine::handle_timeout`] with the **timer clock** whenever it reaches
//!   [`Engine::poll_timeout`]: a monotonic input separate from capture timestamps (for a
//!   file replay the highest capture time seen, for a live source a monotonic clock on the
//!   capture epoch; `vcontap_pipeline::Clock`). Deadlines live in a min-heap of per-call
//!   entries, so a timeout touches only the calls that are due;
//! - the session API ([`Engine::open_session`] and friends, see `session.rs`) for calls a
//!   non-sniffed source (a SIPREC server) opens itself;
//! - [`Engine::handle_segment_stored`] / [`Engine::handle_segment_failed`] after it wrote a
//!   closed recording segment to storage (the engine cannot know the bytes' hash otherwise);
//! - [`Engine::finish_all`] at end of input.
//!
//! After **every** call into a `handle_*` method the driver drains [`Engine::poll_output`]
//! until it returns `None`. Outputs are ordered: audio of a segment always precedes its
//! `SegmentClosed`, a call's `Finished` event always follows its last `segment` event.
//!
//! # Outputs
//!
//! [`Output::Event`] carries a [`VconEvent`]: `created` (first INVITE, or the first message
//! of a call joined mid-way: parties known), `updated` (answer, hold/unhold, re-INVITE, DTMF,
//! transfer, party change; coalesced per call within 200 ms of capture time and flushed by
//! [`Engine::handle_timeout`]; with [`EngineConfig::quality_interval_ms`] also a timer-driven
//! "quality so far" refresh per call whose RTP counters moved, live snapshots then carrying
//! `vcontap.rtp_quality`), `segment` (a recording segment was stored and appended as a
//! `recording` dialog) and `finished`. Each
//! event holds the complete vCon snapshot already serialized to JSON once, behind an `Arc`,
//! so fan-out to many consumers never re-serializes or deep-clones.
//!
//! [`Output::SegmentOpened`], [`Output::Audio`] and [`Output::SegmentClosed`] stream decoded
//! PCM (interleaved 16-bit, caller left / callee right) to the driver, which writes it to
//! disk as it arrives: the engine never buffers a whole recording.
//!
//! # State and bounds
//!
//! The [`call table`](Engine) holds three indices, like quinn's `Endpoint`: Call-ID → call,
//! media address (learned from SDP `c=`/`m=`, RTP and RTCP) → call and side, and SSRC → call
//! as a fallback for NATed senders. A media address is normally one call's; the legs of a
//! B2BUA moved onto direct media announce the same pair and share it (up to
//! `MAX_SHARED_ROUTES` live calls), each packet going to every call that announced both its
//! addresses. On media addresses STUN is counted apart and RTCP is told from RTP by packet
//! type (RFC 5761). RTP that matches no call is tracked as an orphan flow in a bounded table,
//! once it looks like RTP (it parses, uses an RTP payload type, is off the well-known
//! non-media ports and a second packet of its SSRC followed), and creates no call. Every table has a limit in [`EngineConfig`]; when
//! the call table is full the oldest idle call is finished with reason `evicted`.
//!
//! Memory per idle-but-open call is bounded by the SIP trace cap
//! ([`EngineConfig::max_trace_messages`], [`EngineConfig::max_trace_bytes`]: the trace is
//! held as raw message bytes and rendered at the end, so the cap counts what is held), the
//! stream cap
//! ([`EngineConfig::max_streams_per_call`], ~300 bytes of counters each) and, while
//! recording, the mixer's jitter window (2 channels × (window + 2 s) × rate × 2 bytes, 128 KiB
//! at 8 kHz with the default 2 s window): about 20 KiB + trace for a signalling-only call.
//!
//! # Sharding
//!
//! One `Engine` is one shard. [`Router`] decides which shard a datagram belongs to so that a
//! call's SIP and its media land on the same shard (see its docs).

// Input is hostile (docs/CONTRIBUTING.md): no panicking shortcuts outside tests.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

mod build;
mod call;
mod config;
mod origin;
mod router;
mod session;
mod stats;

pub use call::FinishReason;
pub use config::{
    EngineConfig, RecordMode, DEFAULT_LIVE_QUALITY_INTERVAL_MS, MAX_QUALITY_INTERVAL_MS,
};
pub use origin::{AgentId, AgentInfo, Origin, MAX_AGENTS, MAX_AGENTS_PER_CALL};
pub use router::{Router, Shards};
pub use session::{
    Attachment, AttachmentBody, Participant, PayloadFormat, SessionError, SessionId, SessionSpec,
    Side, StreamSpec, MAX_SESSION_ATTACHMENTS, MAX_SESSION_ATTACHMENT_BYTES, MAX_SESSION_STREAMS,
};
pub use stats::EngineStats;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;

use call::Call;
use vcontap_wire::{Datagram, Timestamp, Transport};

/// Identifies one recording segment across the engine's outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SegmentId(pub u64);

/// Index of a call in the engine's slab.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct CallHandle(pub(crate) u32);

/// What kind of change an event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// First INVITE seen (or the first message of a call joined mid-way): parties known.
    Created,
    /// Answer, hold/unhold, re-INVITE, DTMF, transfer or party change, or a quality refresh
    /// ([`EngineConfig::quality_interval_ms`]). Changes closer than 200 ms of capture time to
    /// the previous `Updated` are coalesced into one event.
    Updated,
    /// A recording segment closed and was appended as a `recording` dialog.
    Segment,
    /// Final snapshot.
    Finished,
}

impl EventKind {
    /// The name used in the events stream.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Created => "created",
            EventKind::Updated => "updated",
            EventKind::Segment => "segment",
            EventKind::Finished => "finished",
        }
    }
}

/// One vCon update, shared by every consumer.
#[derive(Debug)]
pub struct VconEvent {
    /// The call's vCon uuid.
    pub uuid: Arc<str>,
    /// 1, 2, 3… per call.
    pub seq: u64,
    /// What changed.
    pub kind: EventKind,
    /// Capture time of the packet (or timeout) that caused it.
    pub at: Timestamp,
    /// Why the call ended (only on `finished`).
    pub reason: Option<FinishReason>,
    /// The complete vCon snapshot as compact JSON, serialized once.
    pub vcon_json: Arc<str>,
}

impl VconEvent {
    /// The line written to an events file: `{"uuid","seq","kind","at","vcon"}`, built from
    /// the already-serialized snapshot without re-encoding it.
    pub fn to_json_line(&self) -> String {
        let mut s = String::with_capacity(self.vcon_json.len() + 160);
        s.push_str("{\"uuid\":\"");
        s.push_str(&self.uuid);
        s.push_str("\",\"seq\":");
        s.push_str(&self.seq.to_string());
        s.push_str(",\"kind\":\"");
        s.push_str(self.kind.as_str());
        s.push_str("\",\"at\":\"");
        s.push_str(&vcontap_vcon::format_time(self.at.nanos()));
        s.push_str("\",\"vcon\":");
        s.push_str(&self.vcon_json);
        s.push('}');
        s
    }
}

/// Something the driver must act on.
#[derive(Debug)]
pub enum Output {
    /// A vCon event for subscribers and stores.
    Event(Arc<VconEvent>),
    /// A recording segment starts: open a WAV file for it.
    SegmentOpened {
        /// The segment.
        segment: SegmentId,
        /// The call's vCon uuid.
        uuid: Arc<str>,
        /// 0, 1, 2… within the call.
        index: u32,
        /// Sample rate of the PCM.
        rate: u32,
        /// 2 (stereo: caller left, callee right) or 1 (mono mix).
        channels: u16,
    },
    /// Interleaved 16-bit PCM to append to the segment's file.
    Audio {
        /// The segment.
        segment: SegmentId,
        /// Samples, interleaved when stereo.
        samples: Vec<i16>,
    },
    /// The segment is complete: close the file and report back with
    /// [`Engine::handle_segment_stored`] or [`Engine::handle_segment_failed`].
    SegmentClosed {
        /// The segment.
        segment: SegmentId,
    },
}

/// Where a closed segment ended up, as reported by the driver.
#[derive(Debug, Clone)]
pub struct StoredSegment {
    /// URL consumers fetch it from (`file://` or the configured base URL).
    pub url: String,
    /// `sha512-…` over the exact bytes written.
    pub content_hash: String,
    /// File name.
    pub filename: String,
    /// `audio/x-wav`.
    pub mediatype: String,
}

/// Routing entry for a media address.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MediaRoute {
    pub(crate) call: CallHandle,
    /// Side that *receives* on this address (0 caller, 1 callee).
    pub(crate) side: Side,
    pub(crate) rtcp: bool,
    /// A video m-line's address: statistics only, never decoded.
    pub(crate) video: bool,
    /// Generation of the call slot, so a stale route to a reused slot is ignored.
    pub(crate) gen: u32,
}

/// The calls whose SDP announced one media address, newest last. Almost always one; a
/// B2BUA that re-INVITEs both of its legs onto direct media makes two calls (distinct
/// Call-IDs) announce the same address pair, and both must see the media. The first entry
/// is inline so the common lookup costs no extra indirection.
#[derive(Debug, Clone)]
pub(crate) struct RouteSet {
    first: MediaRoute,
    more: Vec<MediaRoute>,
}

/// Calls that may share one media address (B2BUA legs, conference bridges); a further
/// call announcing it pushes out the oldest.
const MAX_SHARED_ROUTES: usize = 4;

/// A call keeps its share of an address another call announces only while it has had SIP
/// or RTP within this long: both legs of a B2BUA are live when it moves them to direct
/// media, whereas a call whose BYE the tap missed has gone quiet before its ports are
/// reused, and is replaced as a single owner would be.
const SHARED_ROUTE_ACTIVE_MS: i64 = 2000;

impl RouteSet {
    fn one(r: MediaRoute) -> Self {
        RouteSet {
            first: r,
            more: Vec::new(),
        }
    }

    fn iter(&self) -> impl Iterator<Item = &MediaRoute> {
        std::iter::once(&self.first).chain(self.more.iter())
    }

    fn from_vec(mut v: Vec<MediaRoute>) -> Option<Self> {
        if v.is_empty() {
            return None;
        }
        let first = v.remove(0);
        Some(RouteSet { first, more: v })
    }
}

/// Where one media datagram goes: almost always one call; several only on an address
/// shared by dialogs (B2BUA legs on direct media).
#[derive(Debug, Clone)]
enum Route {
    One(CallHandle, MediaDir),
    /// Boxed so the common `One` stays two words and travels in registers.
    Many(Box<Deliveries>),
}

/// The calls one media datagram is delivered to on a shared address (never empty when
/// built by `route_media`).
#[derive(Debug, Clone, Copy)]
struct Deliveries {
    n: usize,
    to: [(CallHandle, MediaDir); MAX_SHARED_ROUTES],
}

impl Deliveries {
    const UNUSED: MediaDir = MediaDir {
        sender: Side::Caller,
        rtcp: false,
        video: false,
    };

    fn new() -> Self {
        Deliveries {
            n: 0,
            to: [(CallHandle(0), Self::UNUSED); MAX_SHARED_ROUTES],
        }
    }

    fn push(&mut self, h: CallHandle, dir: MediaDir) {
        if let Some(slot) = self.to.get_mut(self.n) {
            *slot = (h, dir);
            self.n += 1;
        }
    }

    fn iter(&self) -> impl Iterator<Item = (CallHandle, MediaDir)> + '_ {
        self.to.iter().take(self.n).copied()
    }
}

/// UDP ports of services that are never media (DNS, DHCP, NTP, NetBIOS name and datagram,
/// SNMP, IKE, syslog, SSDP, IPsec NAT-T, mDNS, LLMNR): a datagram to or from one of them
/// that no SDP announced is `udp_other`, however its first bytes read.
const NON_MEDIA_UDP_PORTS: [u16; 15] = [
    53, 67, 68, 123, 137, 138, 161, 162, 500, 514, 1900, 4500, 5353, 5355, 11211,
];

/// Sequence step within which a second RTP-looking packet of the same SSRC confirms an
/// orphan flow (allows for a few lost packets, rejects unrelated datagrams).
const ORPHAN_CONFIRM_SEQ_STEP: u16 = 16;

/// A media address as a table key: IPv4 as its v4-mapped IPv6 form (so dual-stack SDP and
/// packets meet) and the port. Two integer writes hash far faster than `SocketAddr`'s
/// derived `Hash` (discriminant, length-prefixed octets, port), on the hottest lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct MediaKey {
    ip: u128,
    port: u16,
}

impl MediaKey {
    pub(crate) fn of(a: &SocketAddr) -> Self {
        let ip = match a.ip() {
            std::net::IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
            std::net::IpAddr::V6(v6) => u128::from(v6),
        };
        MediaKey { ip, port: a.port() }
    }
}

type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// A heuristic RTP flow with no SDP behind it. It counts as orphan RTP once a second
/// packet of the same SSRC follows within [`ORPHAN_CONFIRM_SEQ_STEP`] sequence numbers;
/// until then its packets are held back, and become `udp_other` if none follows.
#[derive(Debug, Clone, Copy)]
struct Orphan {
    last: Timestamp,
    packets: u64,
    ssrc: u32,
    seq: u16,
    confirmed: bool,
}

/// One shard of the call engine. See the crate docs for the run-loop contract.
pub struct Engine {
    cfg: EngineConfig,
    calls: Vec<Option<Call>>,
    gens: Vec<u32>,
    free: Vec<u32>,
    by_call_id: Map<Box<str>, CallHandle>,
    by_media: Map<MediaKey, RouteSet>,
    by_ssrc: Map<u32, (CallHandle, u32)>,
    segments: Map<SegmentId, CallHandle>,
    /// Closed segments in the order they were handed to the store, with the timer time
    /// they were closed at: a store that never answers times them out
    /// ([`EngineConfig::segment_store_timeout_ms`]).
    store_waits: VecDeque<(Timestamp, SegmentId)>,
    /// Per-call deadlines: (timer time, slot, generation), min-first. Entries are lazy: a
    /// call's real deadline is re-read when its entry fires, so a packet that pushes the
    /// idle deadline later costs nothing; only an *earlier* deadline adds an entry.
    timers: BinaryHeap<Reverse<(i64, u32, u32)>>,
    /// The earliest entry each slot has in `timers` (`i64::MAX`: none).
    scheduled: Vec<i64>,
    orphans: Map<(SocketAddr, SocketAddr), Orphan>,
    /// Call-IDs of calls finished in the last [`RETRANSMIT_WINDOW_MS`], with their INVITE
    /// CSeq, so stray INVITE retransmissions do not start new calls.
    recently_finished: Map<Box<str>, (Timestamp, u32)>,
    /// Calls in creation order, for eviction when the table is full.
    age_order: VecDeque<(CallHandle, u32)>,
    outputs: VecDeque<Output>,
    uuids: vcontap_vcon::CallUuids,
    next_segment: u64,
    /// Next sweep of the orphan and recently-finished tables.
    next_sweep: Timestamp,
    /// Content clock: the latest capture time seen (what events are stamped with).
    now: Timestamp,
    /// Timer clock: the latest `handle_timeout` time (monotonic; see the crate docs).
    timer_now: Timestamp,
    /// [`Engine::poll_timeout`], kept current so the per-packet check is one load.
    next_timeout: Timestamp,
    stats: EngineStats,
    /// Capture agents the driver registered, by [`AgentId`] (at most [`MAX_AGENTS`]).
    agents: Vec<Option<Arc<AgentInfo>>>,
    /// The origin of the datagram being handled ([`Engine::handle_datagram_from`]).
    origin: Option<Origin>,
}

/// How long a finished call's Call-ID is remembered: RFC 3261 Timer B (64 × T1 = 32 s) is
/// the longest an INVITE is retransmitted.
const RETRANSMIT_WINDOW_MS: i64 = 32_000;

/// A call silent this long is preferred for eviction when the call table is full.
const EVICT_IDLE_MS: i64 = 30_000;
/// Calls looked at per eviction before the oldest is taken regardless.
const EVICT_TRIES: usize = 8;

/// How often (timer time) orphan flows and remembered Call-IDs are swept.
const SWEEP_INTERVAL_MS: i64 = 1000;

impl Engine {
    /// A new engine shard.
    pub fn new(cfg: EngineConfig) -> Self {
        let uuids = vcontap_vcon::CallUuids::new(&cfg.host);
        let rs = || foldhash::fast::RandomState::default();
        Engine {
            calls: Vec::new(),
            gens: Vec::new(),
            free: Vec::new(),
            by_call_id: HashMap::with_hasher(rs()),
            by_media: HashMap::with_hasher(rs()),
            by_ssrc: HashMap::with_hasher(rs()),
            segments: HashMap::with_hasher(rs()),
            store_waits: VecDeque::new(),
            timers: BinaryHeap::new(),
            scheduled: Vec::new(),
            orphans: HashMap::with_hasher(rs()),
            recently_finished: HashMap::with_hasher(rs()),
            age_order: VecDeque::new(),
            outputs: VecDeque::new(),
            uuids,
            next_segment: ((cfg.shard as u64) << 48) + 1,
            next_sweep: Timestamp(i64::MIN),
            now: Timestamp(i64::MIN),
            timer_now: Timestamp(i64::MIN),
            next_timeout: Timestamp(i64::MIN),
            stats: EngineStats::default(),
            agents: Vec::new(),
            origin: None,
            cfg,
        }
    }

    /// Counters.
    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    /// Calls currently open.
    pub fn open_calls(&self) -> usize {
        self.by_call_id.len()
    }

    /// The next timer time at which [`Engine::handle_timeout`] has work to do: the
    /// earliest call deadline (timeout, linger, audio drain), segment store timeout or
    /// table sweep. Never a fixed sweep over every call.
    #[inline]
    pub fn poll_timeout(&self) -> Timestamp {
        self.next_timeout
    }

    /// Recomputes [`Engine::poll_timeout`] after the heap or the store queue lost entries.
    fn refresh_timeout(&mut self) {
        let mut t = self.next_sweep;
        if let Some(Reverse((d, _, _))) = self.timers.peek() {
            t = t.min(Timestamp(*d));
        }
        if let Some((closed, _)) = self.store_waits.front() {
            t = t.min(closed.add_millis(self.cfg.segment_store_timeout_ms));
        }
        self.next_timeout = t;
    }

    /// Whether [`Engine::poll_output`] has anything (cheap: drivers skip their drain loop).
    #[inline]
    pub fn has_output(&self) -> bool {
        !self.outputs.is_empty()
    }

    /// Next output, if any. Drain after every `handle_*` call.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// Feeds one decoded datagram.
    ///
    /// Datagrams move the content clock only: timers run in [`Engine::handle_timeout`].
    pub fn handle_datagram(&mut self, d: &Datagram<'_>) {
        if d.ts > self.now {
            self.now = d.ts;
        }
        self.stats.datagrams += 1;
        if d.transport == Transport::Udp {
            // Known media first: it is >95% of the traffic on a tap.
            if let Some(to) = self.route_media(d) {
                self.handle_routed(to, d);
                return;
            }
            let non_media = NON_MEDIA_UDP_PORTS.contains(&d.src.port())
                || NON_MEDIA_UDP_PORTS.contains(&d.dst.port());
            if vcontap_sip::looks_like_sip(d.payload) {
                self.handle_sip(d);
            } else if vcontap_media::looks_like_stun(d.payload) {
                self.stats.stun_packets += 1;
            } else if non_media {
                self.stats.udp_other += 1;
            } else if vcontap_media::looks_like_rtcp(d.payload) {
                self.stats.rtcp_unmatched += 1;
            } else if vcontap_media::looks_like_rtp(d.payload) {
                if !self.route_by_ssrc(d) {
                    self.track_orphan(d);
                }
            } else {
                self.stats.udp_other += 1;
            }
        } else {
            self.handle_sip(d);
        }
    }

    /// Feeds one datagram that another host captured (HEP) with where it came from: the
    /// calls it reaches note its agent and whose clock stamped it (`vcontap.hep`).
    pub fn handle_datagram_from(&mut self, d: &Datagram<'_>, origin: Origin) {
        self.origin = Some(origin);
        self.handle_datagram(d);
        self.origin = None;
    }

    /// Makes `id` name `info` for [`Origin`]s handed in later. The driver interns each
    /// distinct agent once; ids at or above [`MAX_AGENTS`] are ignored (their packets are
    /// counted as from unnamed agents).
    pub fn register_agent(&mut self, id: AgentId, info: Arc<AgentInfo>) {
        let i = usize::from(id.0);
        if i >= MAX_AGENTS {
            return;
        }
        if self.agents.len() <= i {
            self.agents.resize(i + 1, None);
        }
        if let Some(slot) = self.agents.get_mut(i) {
            *slot = Some(info);
        }
    }

    /// Advances the timer clock to `now` and runs what is due: finishes timed-out calls,
    /// ends lingering ones, hands out buffered audio, fails segments a store never
    /// answered for, sweeps the orphan table.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        self.advance(now);
    }

    /// Fails every segment still waiting for its store (end of input with a store that
    /// does not answer), so every finishing call can complete.
    pub fn expire_segments(&mut self) {
        let waiting: Vec<SegmentId> = self.store_waits.drain(..).map(|(_, s)| s).collect();
        for s in waiting {
            if self.segments.contains_key(&s) {
                self.stats.segments_timed_out += 1;
                self.handle_segment_failed(s);
            }
        }
        self.refresh_timeout();
    }

    /// Reports that a closed segment was written to storage.
    pub fn handle_segment_stored(&mut self, segment: SegmentId, stored: StoredSegment) {
        let Some(h) = self.segments.remove(&segment) else {
            return;
        };
        self.stats.segments += 1;
        let now = self.now;
        if let Some(call) = self.call_mut(h) {
            call.segment_stored(segment, Some(stored), now);
        }
        self.collect(h);
    }

    /// Reports that a closed segment could not be stored (it is left out of the vCon).
    pub fn handle_segment_failed(&mut self, segment: SegmentId) {
        let Some(h) = self.segments.remove(&segment) else {
            return;
        };
        self.stats.segments_failed += 1;
        let now = self.now;
        if let Some(call) = self.call_mut(h) {
            call.segment_stored(segment, None, now);
        }
        self.collect(h);
    }

    /// Notes capture loss (the tap's kernel ring dropped `packets` between `from` and `to`)
    /// on every call open in that span; it shows in their vCons as `vcontap.capture_loss`.
    pub fn note_capture_loss(&mut self, from: Timestamp, to: Timestamp, packets: u64) {
        let handles: Vec<CallHandle> = (0..self.calls.len() as u32)
            .map(CallHandle)
            .filter(|h| self.call_ref(*h).is_some())
            .collect();
        for h in handles {
            if let Some(c) = self.call_mut(h) {
                c.note_capture_loss(from, to, packets);
            }
        }
    }

    /// Finishes every open call at the end of input.
    pub fn finish_all(&mut self, now: Timestamp) {
        self.finish_all_because(now, FinishReason::EndOfInput);
    }

    /// Finishes every open call with `reason` (`Shutdown` when a live daemon stops).
    pub fn finish_all_because(&mut self, now: Timestamp, reason: FinishReason) {
        self.advance(now);
        let now = self.now.max(now);
        let handles: Vec<CallHandle> = (0..self.calls.len() as u32)
            .map(CallHandle)
            .filter(|h| self.call_ref(*h).is_some())
            .collect();
        for h in handles {
            self.finish_call(h, reason, now);
        }
        // One-off RTP-looking datagrams that no second packet confirmed were not RTP.
        let stats = &mut self.stats;
        self.orphans.retain(|_, o| {
            if !o.confirmed {
                stats.udp_other += o.packets;
            }
            o.confirmed
        });
    }

    // ---- internals -------------------------------------------------------------------

    fn advance(&mut self, now: Timestamp) {
        self.advance_inner(now);
        self.refresh_timeout();
    }

    fn advance_inner(&mut self, now: Timestamp) {
        if now > self.timer_now {
            self.timer_now = now;
        }
        if now > self.now {
            self.now = now;
        }
        let now = self.timer_now;
        // Calls whose deadline passed.
        while let Some(Reverse((t, slot, gen))) = self.timers.peek().copied() {
            if t > now.nanos() {
                break;
            }
            self.timers.pop();
            let h = CallHandle(slot);
            if self.gen(h) != gen || self.scheduled.get(slot as usize) != Some(&t) {
                continue; // stale: the slot was reused, or an earlier entry already ran
            }
            if let Some(x) = self.scheduled.get_mut(slot as usize) {
                *x = i64::MAX;
            }
            let due = self.call_ref(h).and_then(|c| c.due(now, &self.cfg));
            match due {
                Some(r) => self.finish_call(h, r, now),
                None => {
                    if let Some(c) = self.call_mut(h) {
                        c.tick(now);
                        c.flush_update(now);
                        c.refresh_quality(now);
                    }
                    self.collect(h);
                    self.schedule(h);
                }
            }
        }
        // Segments a store never answered for.
        let limit = self.cfg.segment_store_timeout_ms;
        while let Some(&(closed, seg)) = self.store_waits.front() {
            let waiting = self.segments.contains_key(&seg);
            // Answered entries leave from the front at once (stores answer roughly in
            // order), so the queue holds about the segments really in flight.
            if waiting && closed.add_millis(limit) > now {
                break;
            }
            self.store_waits.pop_front();
            if waiting {
                self.stats.segments_timed_out += 1;
                self.handle_segment_failed(seg);
            }
        }
        if now < self.next_sweep {
            return;
        }
        self.next_sweep = now.add_millis(SWEEP_INTERVAL_MS);
        let window = RETRANSMIT_WINDOW_MS * 1_000_000;
        self.recently_finished
            .retain(|_, (t, _)| now.nanos().saturating_sub(t.nanos()) < window);
        let idle = self.cfg.orphan_idle_ms.saturating_mul(1_000_000);
        let stats = &mut self.stats;
        self.orphans.retain(|_, o| {
            if now.nanos().saturating_sub(o.last.nanos()) < idle {
                return true;
            }
            if o.confirmed {
                stats.orphan_flows_expired += 1;
            } else {
                stats.udp_other += o.packets;
            }
            false
        });
        // Lazy entries accumulate when deadlines keep moving earlier; rebuild the heap
        // from the per-slot minimum when it outgrows the table (amortized O(1)).
        if self.timers.len() > 2 * self.calls.len() + 1024 {
            let gens = &self.gens;
            self.timers = self
                .scheduled
                .iter()
                .enumerate()
                .filter(|(_, t)| **t != i64::MAX)
                .map(|(i, t)| Reverse((*t, i as u32, gens.get(i).copied().unwrap_or(0))))
                .collect();
        }
    }

    /// (Re)arms the timer of a live call if its next deadline is earlier than the one
    /// already scheduled.
    fn schedule(&mut self, h: CallHandle) {
        let Some(c) = self.call_ref(h) else { return };
        let d = c
            .next_deadline(&self.cfg, self.timer_now, SWEEP_INTERVAL_MS)
            .nanos();
        let gen = self.gen(h);
        let Some(slot) = self.scheduled.get_mut(h.0 as usize) else {
            return;
        };
        if d < *slot {
            *slot = d;
            self.timers.push(Reverse((d, h.0, gen)));
            self.next_timeout = self.next_timeout.min(Timestamp(d));
        }
    }

    fn call_ref(&self, h: CallHandle) -> Option<&Call> {
        self.calls.get(h.0 as usize).and_then(|c| c.as_ref())
    }

    fn call_mut(&mut self, h: CallHandle) -> Option<&mut Call> {
        self.calls.get_mut(h.0 as usize).and_then(|c| c.as_mut())
    }

    fn gen(&self, h: CallHandle) -> u32 {
        self.gens.get(h.0 as usize).copied().unwrap_or(0)
    }

    /// The call(s) a media datagram belongs to: by its destination (the side that receives
    /// there sent nothing, the other side did), else by its source. On an address several
    /// calls share, it goes to every call that announced the source address too (on its
    /// other side), as each leg of a B2BUA with direct media did; failing that, to the call
    /// that announced the address last.
    fn route_media(&self, d: &Datagram<'_>) -> Option<Route> {
        let dir = |r: &MediaRoute, sender: Side| MediaDir {
            sender,
            rtcp: r.rtcp,
            video: r.video,
        };
        if let Some(set) = self.by_media.get(&MediaKey::of(&d.dst)) {
            if set.more.is_empty() {
                // The common case (one call on this address): no delivery list to build.
                let r = &set.first;
                if r.gen == self.gen(r.call) {
                    return Some(Route::One(r.call, dir(r, r.side.other())));
                }
            } else {
                let mut out = Deliveries::new();
                let from = self.by_media.get(&MediaKey::of(&d.src));
                let mut newest = None;
                for r in set.iter().filter(|r| r.gen == self.gen(r.call)) {
                    newest = Some(r);
                    let paired = from.is_some_and(|f| {
                        f.iter().any(|q| {
                            q.call == r.call
                                && q.gen == r.gen
                                && q.side != r.side
                                && q.rtcp == r.rtcp
                        })
                    });
                    if paired {
                        out.push(r.call, dir(r, r.side.other()));
                    }
                }
                if out.n == 0 {
                    if let Some(r) = newest {
                        return Some(Route::One(r.call, dir(r, r.side.other())));
                    }
                }
                if out.n > 0 {
                    return Some(Route::Many(Box::new(out)));
                }
            }
        }
        let set = self.by_media.get(&MediaKey::of(&d.src))?;
        let r = set.iter().filter(|r| r.gen == self.gen(r.call)).last()?;
        Some(Route::One(r.call, dir(r, r.side)))
    }

    /// A datagram on announced media addresses: STUN is counted apart, RTCP is told from
    /// RTP by its packet type (RFC 5761) whether or not the SDP said `rtcp-mux`, and the
    /// packet goes to each call it was routed to.
    fn handle_routed(&mut self, to: Route, d: &Datagram<'_>) {
        if d.payload.first().is_some_and(|b| b >> 6 == 0)
            && vcontap_media::looks_like_stun(d.payload)
        {
            self.stats.stun_packets += 1;
            return;
        }
        let muxed = vcontap_media::is_muxed_rtcp(d.payload);
        let rtcp = match &to {
            Route::One(_, dir) => dir.rtcp,
            Route::Many(all) => all.to.first().is_some_and(|(_, dir)| dir.rtcp),
        };
        if rtcp || muxed {
            self.stats.rtcp_packets += 1;
        } else {
            self.stats.rtp_packets += 1;
        }
        match to {
            Route::One(h, mut dir) => {
                dir.rtcp |= muxed;
                self.handle_media(h, dir, d);
            }
            Route::Many(all) => {
                for (h, mut dir) in all.iter() {
                    dir.rtcp |= muxed;
                    self.handle_media(h, dir, d);
                }
            }
        }
    }

    fn route_by_ssrc(&mut self, d: &Datagram<'_>) -> bool {
        let Ok(p) = vcontap_media::parse_rtp(d.payload) else {
            return false;
        };
        let Some(&(h, gen)) = self.by_ssrc.get(&p.ssrc) else {
            return false;
        };
        if gen != self.gen(h) {
            return false;
        }
        let Some((sender, video)) = self.call_ref(h).and_then(|c| c.side_of_ssrc(p.ssrc)) else {
            return false;
        };
        self.stats.rtp_by_ssrc += 1;
        self.stats.rtp_packets += 1;
        self.handle_media(
            h,
            MediaDir {
                sender,
                rtcp: false,
                video,
            },
            d,
        );
        true
    }

    /// RTP-looking traffic of no call. It must parse as RTP with a payload type RTP uses,
    /// and a flow counts as orphan RTP only once a second packet of the same SSRC follows
    /// it (sequence number a little ahead): DNS, NetBIOS and other UDP whose first byte
    /// happens to read as version 2 is `udp_other`.
    fn track_orphan(&mut self, d: &Datagram<'_>) {
        let Some(p) = vcontap_media::plausible_rtp(d.payload) else {
            self.stats.udp_other += 1;
            return;
        };
        let key = (d.src, d.dst);
        if let Some(o) = self.orphans.get_mut(&key) {
            o.last = d.ts;
            if o.confirmed {
                o.packets += 1;
                self.stats.rtp_orphan_packets += 1;
                return;
            }
            let step = p.seq.wrapping_sub(o.seq);
            if p.ssrc == o.ssrc && (1..=ORPHAN_CONFIRM_SEQ_STEP).contains(&step) {
                o.confirmed = true;
                o.packets += 1;
                self.stats.orphan_flows += 1;
                self.stats.rtp_orphan_packets += o.packets;
            } else {
                // The held-back packet had no successor: it was not RTP; this one may be.
                self.stats.udp_other += o.packets;
                *o = Orphan {
                    last: d.ts,
                    packets: 1,
                    ssrc: p.ssrc,
                    seq: p.seq,
                    confirmed: false,
                };
            }
            return;
        }
        if self.orphans.len() >= self.cfg.max_orphan_flows {
            self.stats.orphan_flows_dropped += 1;
            self.stats.rtp_orphan_packets += 1;
            return;
        }
        self.orphans.insert(
            key,
            Orphan {
                last: d.ts,
                packets: 1,
                ssrc: p.ssrc,
                seq: p.seq,
                confirmed: false,
            },
        );
    }

    fn handle_media(&mut self, h: CallHandle, dir: MediaDir, d: &Datagram<'_>) {
        let now = self.now;
        let Some(call) = self.calls.get_mut(h.0 as usize).and_then(|c| c.as_mut()) else {
            return;
        };
        if let Some(o) = self.origin {
            call.note_origin(o, &self.agents);
        }
        let mut new_ssrc = None;
        if dir.rtcp {
            call.handle_rtcp(dir.sender, d);
        } else {
            new_ssrc = if dir.video {
                call.handle_video_rtp(dir.sender, d, now, &mut self.stats)
            } else {
                call.handle_rtp(dir.sender, d, now, &mut self.stats)
            };
        }
        // The common RTP packet changes nothing outside its call: skip the bookkeeping.
        // `has_pending` includes a held-back `updated` event, which moves the call's
        // deadline earlier without output: the call is rescheduled then too.
        let busy = call.has_pending();
        if let Some(ssrc) = new_ssrc {
            if self.by_ssrc.len() < self.cfg.max_calls * 4 {
                self.by_ssrc.insert(ssrc, (h, self.gen(h)));
            }
        }
        if busy {
            self.sync_routes(h);
            self.collect(h);
        }
    }

    fn handle_sip(&mut self, d: &Datagram<'_>) {
        let msg = match vcontap_sip::Message::parse(d.payload) {
            Ok(m) => m,
            Err(_) => {
                self.stats.sip_parse_errors += 1;
                return;
            }
        };
        self.stats.sip_messages += 1;
        let Some(call_id) = msg.call_id() else {
            self.stats.sip_without_call_id += 1;
            return;
        };
        let initial_invite = msg.is_request()
            && msg.method() == Some(vcontap_sip::Method::Invite)
            && msg.to().is_some_and(|t| t.tag.is_none());
        if let Some(&h) = self.by_call_id.get(call_id) {
            // A new INVITE (higher CSeq) after a failure final response (3xx redirect, 422,
            // 491…) is a new call: the failed one stops lingering and is finished first.
            let retry = initial_invite
                && self.call_ref(h).is_some_and(|c| {
                    c.is_failed_lingering() && msg.cseq().is_some_and(|s| s.seq > c.invite_cseq())
                });
            if retry {
                // Finished as its failure whatever the reason given (see `Call::finish`).
                let now = self.now;
                self.finish_call(h, FinishReason::Timeout, now);
            }
        }
        let h = match self.by_call_id.get(call_id) {
            Some(h) => *h,
            None if !initial_invite => {
                // Late answers, ACKs and BYE retransmissions of a finished call land here
                // too; they are counted, not turned into calls. An in-dialog message with SDP
                // of a call whose INVITE was never seen opens a call joined mid-way.
                if !joinable(&msg) || self.recently_finished.contains_key(call_id) {
                    self.stats.sip_non_call += 1;
                    return;
                }
                match self.new_call(call_id, &msg, d, true) {
                    Some(h) => {
                        self.stats.calls_joined += 1;
                        h
                    }
                    None => return,
                }
            }
            None => {
                let is_invite =
                    msg.is_request() && msg.method() == Some(vcontap_sip::Method::Invite);
                if !is_invite {
                    self.stats.sip_non_call += 1;
                    return;
                }
                // An INVITE retransmitted after its call already ended (UDP crossing a
                // final response) is not a new call; a new INVITE (higher CSeq) is.
                let cseq = msg.cseq().map_or(0, |c| c.seq);
                if self
                    .recently_finished
                    .get(call_id)
                    .is_some_and(|(_, c)| cseq <= *c)
                {
                    self.stats.sip_retransmissions += 1;
                    return;
                }
                match self.new_call(call_id, &msg, d, false) {
                    Some(h) => h,
                    None => return,
                }
            }
        };
        let now = self.now;
        if let Some(call) = self.calls.get_mut(h.0 as usize).and_then(|c| c.as_mut()) {
            if let Some(o) = self.origin {
                call.note_origin(o, &self.agents);
            }
            call.handle_sip(&msg, d, now);
        }
        self.sync_routes(h);
        self.collect(h);
    }

    fn new_call(
        &mut self,
        call_id: &str,
        msg: &vcontap_sip::Message<'_>,
        d: &Datagram<'_>,
        joined: bool,
    ) -> Option<CallHandle> {
        let cfg = self.cfg.clone();
        let tag = msg.from().and_then(|f| f.tag).unwrap_or("");
        self.alloc_call(
            call_id,
            d.ts,
            |uuid, seg_base| {
                if joined {
                    Call::joined(uuid, call_id, msg, d, &cfg, seg_base)
                } else {
                    Call::new(uuid, call_id, msg, d, &cfg, seg_base)
                }
            },
            tag,
        )
    }

    /// Takes a slot for a new call keyed `key` (evicting when the table is full), derives
    /// its uuid from the key, `caller_tag` and `at`, and stores what `make` builds.
    pub(crate) fn alloc_call(
        &mut self,
        key: &str,
        at: Timestamp,
        make: impl FnOnce(String, u64) -> Call,
        caller_tag: &str,
    ) -> Option<CallHandle> {
        if self.by_call_id.len() >= self.cfg.max_calls && !self.evict_one() {
            self.stats.calls_rejected += 1;
            return None;
        }
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.calls.push(None);
                self.gens.push(0);
                self.scheduled.push(i64::MAX);
                (self.calls.len() - 1) as u32
            }
        };
        let h = CallHandle(slot);
        if let Some(g) = self.gens.get_mut(slot as usize) {
            *g = g.wrapping_add(1);
        }
        if let Some(x) = self.scheduled.get_mut(slot as usize) {
            *x = i64::MAX;
        }
        let uuid = self.uuids.for_call(key, caller_tag, at.nanos());
        let seg_base = self.next_segment;
        self.next_segment += 1 << 16;
        let call = make(uuid, seg_base);
        if let Some(c) = self.calls.get_mut(slot as usize) {
            *c = Some(call);
        }
        self.by_call_id.insert(key.into(), h);
        self.age_order.push_back((h, self.gen(h)));
        if self.age_order.len() > 2 * self.by_call_id.len() + 64 {
            // Drop entries of calls that already ended (amortized O(1) per call).
            let (calls, gens) = (&self.calls, &self.gens);
            self.age_order.retain(|(h, g)| {
                calls.get(h.0 as usize).is_some_and(|c| c.is_some())
                    && gens.get(h.0 as usize) == Some(g)
            });
        }
        self.stats.calls += 1;
        Some(h)
    }

    /// Registers media addresses the call learned from SDP and moves its outputs to the queue.
    fn sync_routes(&mut self, h: CallHandle) {
        let gen = self.gen(h);
        let Some(call) = self.calls.get_mut(h.0 as usize).and_then(|c| c.as_mut()) else {
            return;
        };
        let new_routes = call.take_new_routes();
        for call::NewRoute {
            addr,
            side,
            rtcp,
            video,
        } in new_routes
        {
            let key = MediaKey::of(&addr);
            let route = MediaRoute {
                call: h,
                side,
                rtcp,
                video,
                gen,
            };
            let Some(set) = self.by_media.get(&key) else {
                if self.by_media.len() >= self.cfg.max_media_routes {
                    self.stats.media_routes_dropped += 1;
                } else {
                    self.by_media.insert(key, RouteSet::one(route));
                }
                continue;
            };
            // Other live calls on this address keep their share; this call's own older
            // entry and those of quiet or ended calls are replaced.
            let mut kept: Vec<MediaRoute> = set
                .iter()
                .filter(|r| r.call != h && self.shares_routes(r))
                .copied()
                .collect();
            if kept.len() >= MAX_SHARED_ROUTES {
                kept.remove(0);
            }
            kept.push(route);
            if let Some(set) = RouteSet::from_vec(kept) {
                self.by_media.insert(key, set);
            }
        }
    }

    /// Whether the call behind an existing route is live enough to share its address with a
    /// call announcing it now (see [`SHARED_ROUTE_ACTIVE_MS`]).
    fn shares_routes(&self, r: &MediaRoute) -> bool {
        r.gen == self.gen(r.call)
            && self.call_ref(r.call).is_some_and(|c| {
                !c.is_finishing()
                    && self.now.nanos().saturating_sub(c.last_activity().nanos())
                        <= SHARED_ROUTE_ACTIVE_MS * 1_000_000
            })
    }

    /// Moves a call's pending outputs to the queue and removes it once it is fully finished.
    fn collect(&mut self, h: CallHandle) {
        let Some(call) = self.calls.get_mut(h.0 as usize).and_then(|c| c.as_mut()) else {
            return;
        };
        for seg in call.take_closed_segments() {
            self.segments.insert(seg, h);
            self.store_waits.push_back((self.timer_now, seg));
            let limit = self.cfg.segment_store_timeout_ms;
            self.next_timeout = self.next_timeout.min(self.timer_now.add_millis(limit));
        }
        let before = self.outputs.len();
        call.drain_outputs(&mut self.outputs);
        let done = call.is_done();
        self.stats.events += self
            .outputs
            .range(before..)
            .filter(|o| matches!(o, Output::Event(_)))
            .count() as u64;
        if done {
            self.remove_call(h);
        } else {
            self.schedule(h);
        }
    }

    /// Makes room in a full call table: finishes (reason `evicted`) the oldest call that has
    /// been idle for [`EVICT_IDLE_MS`], looking at no more than [`EVICT_TRIES`] calls in
    /// creation order, else the oldest one. Amortized O(1): an INVITE flood against a full
    /// table never scans it.
    fn evict_one(&mut self) -> bool {
        let now = self.now;
        let mut tries = 0;
        let mut oldest = None;
        while let Some((h, gen)) = self.age_order.pop_front() {
            if self.gen(h) != gen {
                continue;
            }
            let Some(c) = self.call_ref(h) else { continue };
            let (finishing, last) = (c.is_finishing(), c.last_activity());
            // Requeued in any case: a call ending or evicted later leaves a stale entry
            // that the generation check skips.
            self.age_order.push_back((h, gen));
            tries += 1;
            if !finishing {
                let idle = now.nanos().saturating_sub(last.nanos()) >= EVICT_IDLE_MS * 1_000_000;
                if idle {
                    oldest = Some(h);
                    break;
                }
                oldest.get_or_insert(h);
            }
            if tries >= EVICT_TRIES {
                break;
            }
        }
        match oldest {
            Some(h) => {
                self.stats.calls_evicted += 1;
                self.finish_call(h, FinishReason::Evicted, now);
                true
            }
            None => false,
        }
    }

    fn finish_call(&mut self, h: CallHandle, reason: FinishReason, now: Timestamp) {
        if let Some(call) = self.call_mut(h) {
            call.finish(reason, now);
        }
        self.collect(h);
    }

    fn remove_call(&mut self, h: CallHandle) {
        let Some(call) = self.calls.get_mut(h.0 as usize).and_then(|c| c.take()) else {
            return;
        };
        self.stats.calls_finished += 1;
        self.stats.streams += call.stream_count() as u64;
        self.by_call_id.remove(call.call_id());
        if self.recently_finished.len() < self.cfg.max_calls {
            self.recently_finished
                .insert(call.call_id().into(), (self.now, call.invite_cseq()));
        }
        for addr in call.routes() {
            let key = MediaKey::of(&addr);
            let Some(set) = self.by_media.get(&key) else {
                continue;
            };
            if set.iter().any(|r| r.call == h) {
                let rest: Vec<MediaRoute> = set.iter().filter(|r| r.call != h).copied().collect();
                match RouteSet::from_vec(rest) {
                    Some(set) => {
                        self.by_media.insert(key, set);
                    }
                    None => {
                        self.by_media.remove(&key);
                    }
                }
            }
        }
        for ssrc in call.ssrcs() {
            if self.by_ssrc.get(&ssrc).is_some_and(|(c, _)| *c == h) {
                self.by_ssrc.remove(&ssrc);
            }
        }
        self.free.push(h.0);
    }
}

/// Whether a SIP message of an unknown Call-ID opens a call joined mid-way (its INVITE was
/// never seen: the tap started during the call, or the INVITE was lost): an in-dialog
/// (both tags) message of an INVITE dialog that carries SDP, so there is media to record —
/// a re-INVITE, ACK, UPDATE, PRACK or BYE, or a 2xx to an INVITE, UPDATE or PRACK — or a
/// re-INVITE without SDP (a late offer: its 2xx and ACK will carry the media).
/// Other messages without SDP (a lone BYE, ACK, UPDATE refresh, INFO, in-dialog OPTIONS)
/// and every other method (OPTIONS, REGISTER, SUBSCRIBE, NOTIFY, MESSAGE…) never open a
/// call: there would be no media to record.
fn joinable(msg: &vcontap_sip::Message<'_>) -> bool {
    use vcontap_sip::{Kind, Method};
    let tagged = msg
        .to()
        .is_some_and(|t| t.tag.is_some_and(|t| !t.is_empty()))
        && msg
            .from()
            .is_some_and(|f| f.tag.is_some_and(|t| !t.is_empty()));
    if !tagged {
        return false;
    }
    if vcontap_sip::sdp_body(msg).is_none() {
        // `method()` of a response is its CSeq method: only the request counts here.
        return msg.is_request() && msg.method() == Some(Method::Invite);
    }
    match msg.kind() {
        Kind::Request { method, .. } => matches!(
            method,
            Method::Invite | Method::Ack | Method::Update | Method::Prack | Method::Bye
        ),
        Kind::Response { code, .. } => {
            (200..300).contains(&code)
                && msg.cseq().is_some_and(|c| {
                    matches!(c.method, Method::Invite | Method::Update | Method::Prack)
                })
        }
    }
}

/// Direction of a media packet within its call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MediaDir {
    /// 0 = from the caller, 1 = from the callee.
    pub(crate) sender: Side,
    pub(crate) rtcp: bool,
    pub(crate) video: bool,
}
