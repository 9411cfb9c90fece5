//! The [`Tap`]: wire decoder + shard router + engine shards behind one sans-IO-style
//! interface — `handle_packet`, `handle_timeout`, `poll_timeout`, `finish` — so every
//! driver (file replay, live capture, HEP, benches) runs the same code and none can forget
//! a timer. Datagrams that arrive already decoded enter through `handle_datagram` (or
//! `handle_hep`, which adds the HEP capture agent as a 4-byte `Origin`), the same
//! per-datagram path as the ones decoded from frames.
//!
//! # Time
//!
//! Packets carry their capture timestamp, which is what the vCon records. Timers (call
//! timeouts, lingering, segment drains, fragment and TCP expiry, batch flushes) run on a
//! separate **monotonic** input, `now`, that the driver supplies with every call: for a
//! file replay it is the highest capture time seen so far (a replay is a simulation of the
//! capture clock), for a live source it is the driver's monotonic clock mapped onto the
//! capture epoch ([`crate::clock::Clock`]). A packet stamped in the future therefore cannot
//! fire every timer at once, and a silent interface still ends calls on time as long as the
//! driver calls [`Tap::handle_timeout`] when [`Tap::poll_timeout`] says so.
//!
//! # Shards
//!
//! With one shard the engine runs inline on the driver's thread (deterministic event
//! order). With more, each shard runs on its own thread, fed with batches:
//!
//! | queue | bound | when full |
//! |---|---|---|
//! | driver → shard | [`SHARD_QUEUE_BATCHES`] batches of at most [`BATCH_DATAGRAMS`] | [`QueuePolicy`]: `block` (replay) or `drop_newest` (live; counted) |
//! | shards → event handler thread | [`EVENT_QUEUE`] events | block: the handler is the durable path to the sinks |
//!
//! Sessions (the engine's session API, for sources that are not sniffed: SIPREC) go to
//! one shard each, picked by their [`SessionHandle`]; inline they run at once and the
//! engine's refusals come back as [`PipelineError::Session`], threaded they travel as
//! messages on the same shard queue (control calls block, media follows the queue
//! policy like frames do) and a refusal is logged by the shard.
//!
//! A shard's partial batch is sent when it fills, when its oldest datagram has waited
//! [`TapConfig::batch_latency_ms`] of timer time, or when the shard's own next deadline
//! (published after every batch) has passed, so every shard sees time when its deadline
//! passes, not after N packets.

use std::net::SocketAddr;
use std::ops::Range;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use vcontap_engine::{
    AgentId, AgentInfo, Attachment, EngineConfig, EngineStats, EventKind, FinishReason, Origin,
    Participant, Router, SessionSpec, StreamSpec, VconEvent,
};
use vcontap_wire::{
    Datagram, DecodeStats, Decoder, DecoderConfig, RawPacket, Timestamp, Transport,
};

use crate::agents::AgentTable;
use crate::hep::HepMeta;
use crate::media::{MediaStore, MediaTotals};
use crate::queue::{QueueCounters, QueuePolicy, QueueSnapshot};
use crate::shard::{ShardCore, ShardTotals};
use crate::PipelineError;

/// Datagrams per batch handed to a shard thread.
pub const BATCH_DATAGRAMS: usize = 512;
/// Batches queued per shard thread.
pub const SHARD_QUEUE_BATCHES: usize = 64;
/// Events queued for the event handler thread (sharded mode).
pub const EVENT_QUEUE: usize = 4096;
/// Most engine shards: beyond the cores of any tap host, and each shard owns 3 threads.
pub const MAX_SHARDS: usize = 64;
/// Packets between publications of the packet counter in [`TapCounters`].
const PUBLISH_EVERY: u64 = 1024;
/// How often (timer time) the decoder's fragment and TCP tables are swept.
const DECODER_SWEEP_MS: i64 = 1000;

/// Receives every event, in emission order per call. Runs on the driver's thread (one
/// shard) or on the event handler thread (several).
pub type EventHandler = Box<dyn FnMut(&Arc<VconEvent>) -> Result<(), PipelineError> + Send>;

/// How a [`Tap`] is built.
#[derive(Clone)]
pub struct TapConfig {
    /// Engine limits (each shard gets a copy with its own shard number).
    pub engine: EngineConfig,
    /// Decoder limits; the SIP TCP framer is filled in when `tcp_framer` is `None`.
    pub decoder: DecoderConfig,
    /// Engine shards: 1 runs inline.
    pub shards: usize,
    /// What the driver → shard queues do when full.
    pub policy: QueuePolicy,
    /// A partial batch waits at most this long (timer time) before it is sent: small for
    /// live sources (latency of events), larger for replays (throughput).
    pub batch_latency_ms: i64,
    /// Where recordings go (`None`: segments are reported as failed; use with
    /// `RecordMode::None`).
    pub media: Option<Arc<dyn MediaStore>>,
    /// At the end, how long (wall clock) to wait for a media store's answers before the
    /// segments still in flight are marked failed.
    pub flush_wait: std::time::Duration,
}

impl TapConfig {
    /// Defaults for a file replay: one shard, blocking queues, no media store.
    pub fn replay(engine: EngineConfig) -> Self {
        TapConfig {
            engine,
            decoder: DecoderConfig::default(),
            shards: 1,
            policy: QueuePolicy::Block,
            batch_latency_ms: 1000,
            media: None,
            flush_wait: crate::shard::FLUSH_WAIT,
        }
    }

    /// Defaults for a live source: drop-and-count queues, 20 ms batch latency, and the
    /// live "quality so far" refresh at [`vcontap_engine::DEFAULT_LIVE_QUALITY_INTERVAL_MS`]
    /// unless the engine configuration chose (`Some(0)` keeps it off).
    pub fn live(mut engine: EngineConfig) -> Self {
        engine
            .quality_interval_ms
            .get_or_insert(vcontap_engine::DEFAULT_LIVE_QUALITY_INTERVAL_MS);
        TapConfig {
            policy: QueuePolicy::DropNewest,
            batch_latency_ms: 20,
            ..TapConfig::replay(engine)
        }
    }
}

/// Live counters for progress lines and metrics, readable from any thread.
#[derive(Debug, Default)]
pub struct TapCounters {
    /// Packets handed to the Tap (published every 1024 packets and at the end).
    pub packets: AtomicU64,
    /// Calls created (`created` events).
    pub calls_created: AtomicU64,
    /// Calls finished (`finished` events).
    pub calls_finished: AtomicU64,
    /// Events emitted.
    pub events: AtomicU64,
    /// The driver → shard queues.
    pub shard_queue: QueueCounters,
}

impl TapCounters {
    /// Calls open now.
    pub fn open_calls(&self) -> u64 {
        self.calls_created
            .load(Ordering::Relaxed)
            .saturating_sub(self.calls_finished.load(Ordering::Relaxed))
    }

    fn count(&self, e: &VconEvent) {
        self.events.fetch_add(1, Ordering::Relaxed);
        match e.kind {
            EventKind::Created => self.calls_created.fetch_add(1, Ordering::Relaxed),
            EventKind::Finished => self.calls_finished.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
    }
}

/// What a whole run did.
#[derive(Debug, Clone, Default)]
pub struct TapTotals {
    /// Packets handed in.
    pub packets: u64,
    /// The decoder's counters.
    pub decode: DecodeStats,
    /// The engines' counters, summed over shards.
    pub engine: EngineStats,
    /// The media writers' counters, summed over shards.
    pub media: MediaTotals,
    /// Events emitted.
    pub events: u64,
    /// The driver → shard queues.
    pub shard_queue: QueueSnapshot,
}

/// One datagram's metadata in a [`Batch`]; its payload is `buf[range]`.
type BatchItem = (
    Timestamp,
    SocketAddr,
    SocketAddr,
    Transport,
    Option<u16>,
    Range<usize>,
    Option<Origin>,
);

/// Datagrams with owned payloads, packed into one buffer.
#[derive(Default)]
struct Batch {
    buf: Vec<u8>,
    items: Vec<BatchItem>,
    /// Timer time when sent: the shard runs its due timers at this time after the items.
    now: Timestamp,
}

enum ShardMsg {
    Batch(Batch),
    Finish(Timestamp, FinishReason),
    /// The source dropped packets in this span (kernel ring drops).
    CaptureLoss(Timestamp, Timestamp, u64),
    /// A HEP capture agent interned by the driver, before any datagram naming it.
    Agent(AgentId, Arc<AgentInfo>),
    /// A session control call (never carries `Media`) at timer time `.2`.
    Session(u64, SessionCall<'static>, Timestamp),
    /// A session's packet on stream `.1`, payload owned, at timer time `.4`.
    SessionMedia(u64, usize, BatchItem, Vec<u8>, Timestamp),
}

/// A session opened through [`Tap::open_session`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionHandle(pub u64);

/// One call of the engine's session API, routed by the [`Tap`] to the session's shard.
#[derive(Debug, Clone)]
pub enum SessionCall<'a> {
    /// `Engine::open_session` (use [`Tap::open_session`]).
    Open(SessionSpec),
    /// `Engine::session_media`: one packet of declared stream `stream`.
    Media {
        /// Index into the spec's streams.
        stream: usize,
        /// The packet as received.
        datagram: Datagram<'a>,
    },
    /// `Engine::update_participants`.
    Participants {
        /// The whole new list.
        participants: Vec<Participant>,
        /// When it changed.
        at: Timestamp,
    },
    /// `Engine::pause_session`.
    Pause(Timestamp),
    /// `Engine::resume_session`.
    Resume(Timestamp),
    /// `Engine::end_session`.
    End(FinishReason, Timestamp),
    /// `Engine::attach_session`: one more vCon attachment.
    Attach(Attachment),
    /// `Engine::add_session_stream`: the stream gets the next index (the number of streams
    /// declared before it); threaded, a refusal is logged by the shard like any other.
    AddStream {
        /// The new stream.
        stream: StreamSpec,
        /// When it was added.
        at: Timestamp,
    },
}

struct RemoteShard {
    tx: Sender<ShardMsg>,
    batch: Batch,
    /// Timer time at which the oldest datagram of `batch` was added.
    batch_since: Option<Timestamp>,
    /// The shard's next deadline, as it published it.
    deadline: Arc<AtomicI64>,
    /// The deadline a timeout was last sent for (not yet answered by a new publication).
    timeout_sent: i64,
    thread: Option<JoinHandle<Result<ShardTotals, PipelineError>>>,
}

enum Mode {
    Inline {
        core: Box<ShardCore>,
        handler: EventHandler,
    },
    Threads {
        shards: Vec<RemoteShard>,
        router: Box<Router>,
        events: Option<JoinHandle<Result<(), PipelineError>>>,
    },
}

/// Decoder + router + engine shards. See the module docs.
pub struct Tap {
    decoder: Decoder,
    mode: Mode,
    policy: QueuePolicy,
    batch_latency_ns: i64,
    /// Timer time (monotonic, the max of every `now` handed in).
    now: Timestamp,
    next_decoder_sweep: Timestamp,
    counters: Arc<TapCounters>,
    packets: u64,
    /// HEP capture agents seen so far.
    agents: AgentTable,
    /// The next [`SessionHandle`].
    next_session: u64,
}

impl Tap {
    /// Builds the pipeline; `handler` receives every event.
    pub fn new(cfg: TapConfig, mut handler: EventHandler) -> Result<Tap, PipelineError> {
        if cfg.shards == 0 || cfg.shards > MAX_SHARDS {
            return Err(PipelineError::Config(format!(
                "shards must be between 1 and {MAX_SHARDS}"
            )));
        }
        let mut dcfg = cfg.decoder;
        if dcfg.tcp_framer.is_none() {
            dcfg.tcp_framer = Some(vcontap_sip::frame);
        }
        let counters = Arc::new(TapCounters::default());
        let engine_cfg = |i: usize| EngineConfig {
            shard: i as u16,
            ..cfg.engine.clone()
        };
        let mode = if cfg.shards == 1 {
            Mode::Inline {
                core: Box::new(ShardCore::new(
                    engine_cfg(0),
                    cfg.media.clone(),
                    0,
                    cfg.flush_wait,
                )?),
                handler,
            }
        } else {
            let (ev_tx, ev_rx) = bounded::<Arc<VconEvent>>(EVENT_QUEUE);
            let events = std::thread::Builder::new()
                .name("vcontap-events".into())
                .spawn(move || -> Result<(), PipelineError> {
                    for e in ev_rx {
                        handler(&e)?;
                    }
                    Ok(())
                })
                .map_err(PipelineError::Thread)?;
            let mut shards = Vec::with_capacity(cfg.shards);
            for i in 0..cfg.shards {
                let core = ShardCore::new(engine_cfg(i), cfg.media.clone(), i, cfg.flush_wait)?;
                let deadline = core.deadline.clone();
                let (tx, rx) = bounded::<ShardMsg>(SHARD_QUEUE_BATCHES);
                let ev_tx = ev_tx.clone();
                let c = counters.clone();
                let thread = std::thread::Builder::new()
                    .name(format!("vcontap-shard-{i}"))
                    .spawn(move || shard_loop(core, rx, ev_tx, c))
                    .map_err(PipelineError::Thread)?;
                shards.push(RemoteShard {
                    tx,
                    batch: Batch::default(),
                    batch_since: None,
                    deadline,
                    timeout_sent: i64::MIN,
                    thread: Some(thread),
                });
            }
            Mode::Threads {
                shards,
                router: Box::new(Router::new(cfg.shards)),
                events: Some(events),
            }
        };
        Ok(Tap {
            decoder: Decoder::new(dcfg),
            mode,
            policy: cfg.policy,
            batch_latency_ns: cfg.batch_latency_ms.max(0).saturating_mul(1_000_000),
            now: Timestamp(i64::MIN),
            next_decoder_sweep: Timestamp(i64::MIN),
            counters,
            packets: 0,
            agents: AgentTable::default(),
            next_session: 0,
        })
    }

    /// Live counters (shared; cheap to read from another thread).
    pub fn counters(&self) -> Arc<TapCounters> {
        self.counters.clone()
    }

    /// Tells every shard that the source lost `packets` between `from` and `to` (e.g. kernel
    /// ring drops): calls open in that span say so in their vCons (`vcontap.capture_loss`).
    pub fn note_capture_loss(&mut self, from: Timestamp, to: Timestamp, packets: u64) {
        match &mut self.mode {
            Mode::Inline { core, .. } => core.engine.note_capture_loss(from, to, packets),
            Mode::Threads { shards, .. } => {
                for s in shards.iter_mut() {
                    // Rare and tiny: blocking is fine, and the mark must not be lost.
                    let _ = s.tx.send(ShardMsg::CaptureLoss(from, to, packets));
                }
            }
        }
    }

    /// Publishes the packet count now (it is otherwise published every 1024 packets): a
    /// live driver calls this when its sources are idle, so `/metrics` stays current.
    pub fn publish_counters(&self) {
        self.counters.packets.store(self.packets, Ordering::Relaxed);
    }

    /// The decoder's counters so far.
    pub fn decode_stats(&self) -> &DecodeStats {
        self.decoder.stats()
    }

    /// Feeds one captured frame. `now` is the timer clock (see the module docs); timers
    /// due at `now` run first, so a driver that only ever calls this still times out calls
    /// while packets flow.
    pub fn handle_packet(
        &mut self,
        pkt: &RawPacket<'_>,
        now: Timestamp,
    ) -> Result<(), PipelineError> {
        let now = self.before_input(now)?;
        let mut err = None;
        let (mode, policy, counters) = (&mut self.mode, self.policy, &*self.counters);
        self.decoder.decode(pkt, &mut |d| {
            if err.is_none() {
                err = dispatch(mode, &d, None, now, policy, counters).err();
            }
        });
        match err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Feeds one datagram that arrived already decoded (HEP, which carries the payload,
    /// addresses and capture time of a packet another host saw): the same path as the
    /// datagrams [`Tap::handle_packet`] decodes from a frame, and counted as one packet.
    /// `now` is the timer clock, as for `handle_packet`.
    pub fn handle_datagram(
        &mut self,
        d: &Datagram<'_>,
        now: Timestamp,
    ) -> Result<(), PipelineError> {
        let now = self.before_input(now)?;
        dispatch(&mut self.mode, d, None, now, self.policy, &self.counters)
    }

    /// Feeds one datagram taken out of HEP, with what HEP said about it: as
    /// [`Tap::handle_datagram`], and the calls it reaches name its capture agent and say
    /// whose clock stamped it (`vcontap.hep`). Each distinct agent is interned once.
    pub fn handle_hep(
        &mut self,
        d: &Datagram<'_>,
        meta: &HepMeta,
        now: Timestamp,
    ) -> Result<(), PipelineError> {
        let now = self.before_input(now)?;
        let (agent, new) = self.agents.intern(meta.capture_id, meta.node_name.as_ref());
        if let (Some(id), Some(info)) = (agent, new) {
            self.register_agent(id, info);
        }
        let origin = Origin {
            agent,
            arrival_time: meta.arrival_time,
        };
        dispatch(
            &mut self.mode,
            d,
            Some(origin),
            now,
            self.policy,
            &self.counters,
        )
    }

    /// HEP agents not named in vCons because the agent table was full.
    pub fn agents_overflow(&self) -> u64 {
        self.agents.overflow
    }

    fn register_agent(&mut self, id: AgentId, info: Arc<AgentInfo>) {
        match &mut self.mode {
            Mode::Inline { core, .. } => core.engine.register_agent(id, info),
            Mode::Threads { shards, .. } => {
                for s in shards.iter_mut() {
                    // Once per agent: blocking is fine, and it must precede the batch that
                    // names the agent (same channel, so it does).
                    let _ = s.tx.send(ShardMsg::Agent(id, info.clone()));
                }
            }
        }
    }

    /// What every input does first: run due timers, count the packet; returns the timer
    /// time to stamp the input with.
    fn before_input(&mut self, now: Timestamp) -> Result<Timestamp, PipelineError> {
        if now >= self.poll_timeout() {
            self.handle_timeout(now)?;
        }
        self.packets += 1;
        // Published in steps: a shared atomic per packet would bounce its cache line
        // between the reader and the shard threads that count events beside it.
        if self.packets.is_multiple_of(PUBLISH_EVERY) {
            self.counters.packets.store(self.packets, Ordering::Relaxed);
        }
        Ok(self.now.max(now))
    }

    /// The next timer time at which [`Tap::handle_timeout`] has work to do.
    pub fn poll_timeout(&self) -> Timestamp {
        let mut t = self.next_decoder_sweep;
        match &self.mode {
            Mode::Inline { core, .. } => t = t.min(core.next_deadline(self.now)),
            Mode::Threads { shards, .. } => {
                for s in shards {
                    if let Some(since) = s.batch_since {
                        t = t.min(Timestamp(
                            since.nanos().saturating_add(self.batch_latency_ns),
                        ));
                    }
                    let d = s.deadline.load(Ordering::Acquire);
                    if d != s.timeout_sent {
                        t = t.min(Timestamp(d));
                    }
                }
            }
        }
        t
    }

    /// Runs every timer due at `now` (timer clock): decoder expiry, engine deadlines, batch
    /// flushes.
    pub fn handle_timeout(&mut self, now: Timestamp) -> Result<(), PipelineError> {
        self.now = self.now.max(now);
        let now = self.now;
        if now >= self.next_decoder_sweep {
            self.decoder.handle_timeout(now);
            self.next_decoder_sweep = now.add_millis(DECODER_SWEEP_MS);
        }
        let counters = &self.counters;
        match &mut self.mode {
            Mode::Inline { core, handler } => {
                let mut emit = counting(counters, handler);
                core.handle_timeout(now, &mut emit)?;
            }
            Mode::Threads { shards, .. } => {
                for s in shards.iter_mut() {
                    let batch_due = s.batch_since.is_some_and(|t| {
                        now.nanos() >= t.nanos().saturating_add(self.batch_latency_ns)
                    });
                    let d = s.deadline.load(Ordering::Acquire);
                    let timer_due = d <= now.nanos() && d != s.timeout_sent;
                    if batch_due || timer_due {
                        if timer_due {
                            s.timeout_sent = d;
                        }
                        send_batch(s, now, self.policy, counters)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Sends every partial batch now (a live driver calls this when its source runs dry).
    pub fn flush(&mut self) -> Result<(), PipelineError> {
        let now = self.now;
        if let Mode::Threads { shards, .. } = &mut self.mode {
            for s in shards.iter_mut() {
                if !s.batch.items.is_empty() {
                    send_batch(s, now, self.policy, &self.counters)?;
                }
            }
        }
        Ok(())
    }

    /// Ends the run: finishes every open call at `now` (end of input or shutdown), waits
    /// for the media writers, and returns the totals.
    pub fn finish(self, now: Timestamp) -> Result<TapTotals, PipelineError> {
        self.finish_because(now, FinishReason::EndOfInput)
    }

    /// [`Tap::finish`] with the reason every open call is finished with (`Shutdown` when
    /// a live daemon stops on SIGTERM).
    pub fn finish_because(
        mut self,
        now: Timestamp,
        reason: FinishReason,
    ) -> Result<TapTotals, PipelineError> {
        self.handle_timeout(now)?;
        // No more frames can come: every partial IP datagram is now one that can never be
        // reassembled (counted by reason) and every TCP flow is over.
        self.decoder.handle_timeout(Timestamp(i64::MAX));
        let now = self.now;
        self.counters.packets.store(self.packets, Ordering::Relaxed);
        let mut totals = TapTotals {
            packets: self.packets,
            ..TapTotals::default()
        };
        let counters = self.counters.clone();
        match self.mode {
            Mode::Inline {
                mut core,
                mut handler,
            } => {
                let mut emit = counting(&counters, &mut handler);
                core.finish(now, reason, &mut emit)?;
                let t = core.close();
                totals.engine = t.engine;
                totals.media = t.media;
            }
            Mode::Threads {
                mut shards,
                mut events,
                ..
            } => {
                for s in shards.iter_mut() {
                    // Finishing must not lose the tail of a replay: always block here.
                    let b = std::mem::take(&mut s.batch);
                    s.batch_since = None;
                    let _ = s.tx.send(ShardMsg::Batch(Batch { now, ..b }));
                    let _ = s.tx.send(ShardMsg::Finish(now, reason));
                }
                let mut first_err = None;
                for mut s in shards {
                    drop(s.tx);
                    match s.thread.take().map(|t| t.join()) {
                        Some(Ok(Ok(t))) => {
                            totals.engine.merge(&t.engine);
                            totals.media.merge(&t.media);
                        }
                        Some(Ok(Err(e))) => {
                            first_err.get_or_insert(e);
                        }
                        Some(Err(_)) => {
                            first_err.get_or_insert(PipelineError::Stopped("engine shard"));
                        }
                        None => {}
                    }
                }
                if let Some(ev) = events.take() {
                    match ev.join() {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => {
                            first_err.get_or_insert(e);
                        }
                        Err(_) => {
                            first_err.get_or_insert(PipelineError::Stopped("event handler"));
                        }
                    }
                }
                if let Some(e) = first_err {
                    return Err(e);
                }
            }
        }
        totals.decode = self.decoder.stats().clone();
        totals.events = counters.events.load(Ordering::Relaxed);
        totals.shard_queue = counters.shard_queue.snapshot();
        Ok(totals)
    }
}

impl Tap {
    /// Opens a session (the engine's session API) on one shard; `now` is the timer clock.
    /// Inline, a refusal (duplicate key, table full) is [`PipelineError::Session`];
    /// threaded, the shard logs it and later calls on the handle are ignored the same way.
    pub fn open_session(
        &mut self,
        spec: SessionSpec,
        now: Timestamp,
    ) -> Result<SessionHandle, PipelineError> {
        let h = SessionHandle(self.next_session);
        self.next_session = self.next_session.wrapping_add(1);
        self.session(h, SessionCall::Open(spec), now)?;
        Ok(h)
    }

    /// One call on an open session: media counts as a packet (and may be dropped by a full
    /// live queue, counted like frames), control calls are never dropped.
    pub fn session(
        &mut self,
        h: SessionHandle,
        call: SessionCall<'_>,
        now: Timestamp,
    ) -> Result<(), PipelineError> {
        // Timers due first, as for frames; the engine takes each call's own time.
        if matches!(call, SessionCall::Media { .. }) {
            self.before_input(now)?;
        } else if now >= self.poll_timeout() {
            self.handle_timeout(now)?;
        }
        let now = self.now.max(now);
        let counters = &self.counters;
        match &mut self.mode {
            Mode::Inline { core, handler } => {
                let mut emit = counting(counters, handler);
                core.session_call(h.0, call, &mut emit)?
                    .map_err(PipelineError::Session)
            }
            Mode::Threads { shards, .. } => {
                let n = shards.len().max(1) as u64;
                let Some(s) = usize::try_from(h.0 % n)
                    .ok()
                    .and_then(|i| shards.get_mut(i))
                else {
                    return Ok(());
                };
                let msg = match call {
                    SessionCall::Media {
                        stream,
                        datagram: d,
                    } => ShardMsg::SessionMedia(
                        h.0,
                        stream,
                        (
                            d.ts,
                            d.src,
                            d.dst,
                            d.transport,
                            d.vlan,
                            0..d.payload.len(),
                            None,
                        ),
                        d.payload.to_vec(),
                        now,
                    ),
                    SessionCall::Open(spec) => ShardMsg::Session(h.0, SessionCall::Open(spec), now),
                    SessionCall::Participants { participants, at } => {
                        ShardMsg::Session(h.0, SessionCall::Participants { participants, at }, now)
                    }
                    SessionCall::Pause(at) => ShardMsg::Session(h.0, SessionCall::Pause(at), now),
                    SessionCall::Resume(at) => ShardMsg::Session(h.0, SessionCall::Resume(at), now),
                    SessionCall::End(r, at) => ShardMsg::Session(h.0, SessionCall::End(r, at), now),
                    SessionCall::Attach(a) => ShardMsg::Session(h.0, SessionCall::Attach(a), now),
                    SessionCall::AddStream { stream, at } => {
                        ShardMsg::Session(h.0, SessionCall::AddStream { stream, at }, now)
                    }
                };
                let q = &counters.shard_queue;
                let msg = match s.tx.try_send(msg) {
                    Ok(()) => {
                        QueueCounters::add(&q.sent, 1);
                        return Ok(());
                    }
                    Err(TrySendError::Disconnected(_)) => {
                        return Err(PipelineError::Stopped("engine shard"))
                    }
                    Err(TrySendError::Full(m)) => m,
                };
                QueueCounters::add(&q.full, 1);
                if matches!(msg, ShardMsg::SessionMedia(..))
                    && self.policy == QueuePolicy::DropNewest
                {
                    QueueCounters::add(&q.dropped, 1);
                    QueueCounters::add(&q.dropped_packets, 1);
                    return Ok(());
                }
                s.tx.send(msg)
                    .map_err(|_| PipelineError::Stopped("engine shard"))?;
                QueueCounters::add(&q.sent, 1);
                Ok(())
            }
        }
    }
}

/// One datagram into the engine: inline, or batched for the shard(s) the router picks.
#[inline(always)]
fn dispatch(
    mode: &mut Mode,
    d: &Datagram<'_>,
    origin: Option<Origin>,
    now: Timestamp,
    policy: QueuePolicy,
    counters: &TapCounters,
) -> Result<(), PipelineError> {
    match mode {
        Mode::Inline { core, handler } => {
            let mut emit = counting(counters, handler);
            core.handle_datagram(d, origin, &mut emit)
        }
        Mode::Threads { shards, router, .. } => {
            // Usually one shard; each shard sharing a media address (B2BUA legs on
            // direct media in different shards) gets its own copy.
            for i in router.route_all(d).iter() {
                let Some(s) = shards.get_mut(i) else { continue };
                let b = &mut s.batch;
                let start = b.buf.len();
                b.buf.extend_from_slice(d.payload);
                b.items.push((
                    d.ts,
                    d.src,
                    d.dst,
                    d.transport,
                    d.vlan,
                    start..b.buf.len(),
                    origin,
                ));
                s.batch_since.get_or_insert(now);
                if b.items.len() >= BATCH_DATAGRAMS {
                    send_batch(s, now, policy, counters)?;
                }
            }
            Ok(())
        }
    }
}

/// The inline shard's event path: count the event, then hand it to the handler.
fn counting<'a>(
    counters: &'a TapCounters,
    handler: &'a mut EventHandler,
) -> impl FnMut(Arc<VconEvent>) -> Result<(), PipelineError> + 'a {
    move |e| {
        counters.count(&e);
        handler(&e)
    }
}

/// Sends `s`'s batch (possibly empty: a pure timer tick) stamped with timer time `now`.
fn send_batch(
    s: &mut RemoteShard,
    now: Timestamp,
    policy: QueuePolicy,
    counters: &TapCounters,
) -> Result<(), PipelineError> {
    let mut b = std::mem::take(&mut s.batch);
    s.batch_since = None;
    b.now = now;
    let n = b.items.len() as u64;
    let q = &counters.shard_queue;
    let msg = match s.tx.try_send(ShardMsg::Batch(b)) {
        Ok(()) => {
            QueueCounters::add(&q.sent, 1);
            return Ok(());
        }
        Err(TrySendError::Disconnected(_)) => return Err(PipelineError::Stopped("engine shard")),
        Err(TrySendError::Full(m)) => m,
    };
    QueueCounters::add(&q.full, 1);
    match policy {
        QueuePolicy::Block => {
            s.tx.send(msg)
                .map_err(|_| PipelineError::Stopped("engine shard"))?;
            QueueCounters::add(&q.sent, 1);
        }
        QueuePolicy::DropNewest => {
            QueueCounters::add(&q.dropped, 1);
            QueueCounters::add(&q.dropped_packets, n);
            // The shard still needs to see time: it will get it with the next batch.
            s.timeout_sent = i64::MIN;
        }
    }
    Ok(())
}

/// After a session message: the timers a batch would have run (a shard fed only by
/// sessions still needs time), and the deadline published for the Tap.
fn session_timers(
    core: &mut ShardCore,
    now: Timestamp,
    emit: &mut crate::shard::EmitFn<'_>,
) -> Result<(), PipelineError> {
    if now >= core.next_deadline(now) {
        core.handle_timeout(now, emit)?;
    }
    core.publish_deadline(now);
    Ok(())
}

fn shard_loop(
    mut core: ShardCore,
    rx: Receiver<ShardMsg>,
    ev: Sender<Arc<VconEvent>>,
    counters: Arc<TapCounters>,
) -> Result<ShardTotals, PipelineError> {
    let mut emit = |e: Arc<VconEvent>| {
        counters.count(&e);
        ev.send(e)
            .map_err(|_| PipelineError::Stopped("event handler"))
    };
    for msg in rx {
        match msg {
            ShardMsg::Batch(b) => {
                for (ts, src, dst, transport, vlan, r, origin) in &b.items {
                    let d = Datagram {
                        ts: *ts,
                        src: *src,
                        dst: *dst,
                        transport: *transport,
                        vlan: *vlan,
                        payload: b.buf.get(r.clone()).unwrap_or(&[]),
                    };
                    core.handle_datagram(&d, *origin, &mut emit)?;
                }
                core.handle_timeout(b.now, &mut emit)?;
                core.publish_deadline(b.now);
            }
            ShardMsg::Finish(ts, reason) => core.finish(ts, reason, &mut emit)?,
            ShardMsg::CaptureLoss(a, b, n) => core.engine.note_capture_loss(a, b, n),
            ShardMsg::Agent(id, info) => core.engine.register_agent(id, info),
            ShardMsg::Session(h, call, now) => {
                if let Err(e) = core.session_call(h, call, &mut emit)? {
                    tracing::warn!(error = %e, session = h, "The engine refused a session call.");
                }
                session_timers(&mut core, now, &mut emit)?;
            }
            ShardMsg::SessionMedia(
                h,
                stream,
                (ts, src, dst, transport, vlan, _, _),
                payload,
                now,
            ) => {
                let datagram = Datagram {
                    ts,
                    src,
                    dst,
                    transport,
                    vlan,
                    payload: &payload,
                };
                // A packet after the end or for an unknown stream: nothing to record.
                let _ = core.session_call(h, SessionCall::Media { stream, datagram }, &mut emit)?;
                session_timers(&mut core, now, &mut emit)?;
            }
        }
    }
    Ok(core.close())
}
