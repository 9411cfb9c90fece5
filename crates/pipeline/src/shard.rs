//! One engine shard and its media writer: drains the engine's outputs after every input,
//! sends audio to the writer threads, feeds their answers back, and hands events on.
//!
//! A shard runs inline on the driver's thread (one shard: fully deterministic event order)
//! or on a thread of its own fed with batches by the [`Tap`](crate::Tap).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;
use vcontap_engine::{
    Engine, EngineConfig, EngineStats, FinishReason, Origin, Output, RecordMode, SessionError,
    SessionId, VconEvent,
};
use vcontap_wire::{Datagram, Timestamp};

use crate::media::{MediaMsg, MediaStore, MediaTotals, MediaWriter, SegmentMeta, Stored};
use crate::PipelineError;

/// How many drains pass between polls of the media writer's answers: a channel poll per
/// packet was 5 % of the engine thread while segments were queued behind audio.
const REPLY_POLL: u32 = 64;

/// While segments are with the store, the shard asks for time this often (timer clock) to
/// collect their answers when no packets arrive.
const ANSWER_POLL_MS: i64 = 20;

/// At the end of input, how long (wall clock) to wait for a store to answer for a closed
/// segment before the segment is marked failed and the call finished without it.
pub const FLUSH_WAIT: Duration = Duration::from_secs(60);

/// Receives every event a shard emits, on the shard's thread.
pub type EmitFn<'a> = dyn FnMut(Arc<VconEvent>) -> Result<(), PipelineError> + 'a;

/// What one shard did, reported when it stops.
#[derive(Debug, Clone, Default)]
pub struct ShardTotals {
    /// The engine's counters.
    pub engine: EngineStats,
    /// The media writer's counters.
    pub media: MediaTotals,
}

/// An engine with its media writer.
pub(crate) struct ShardCore {
    pub(crate) engine: Engine,
    media: Option<MediaWriter>,
    /// Answers received while blocked on a full media queue, handled at the next drain.
    early: VecDeque<Stored>,
    /// Segments closed and not yet answered.
    in_flight: usize,
    polls: u32,
    /// Set at the end of input: poll answers on every drain.
    flushing: bool,
    /// This shard's next deadline, published for the Tap when the shard runs on a thread.
    pub(crate) deadline: Arc<AtomicI64>,
    /// How long `finish` waits for the store's answers.
    flush_wait: Duration,
    /// The store did not answer in time: its threads are detached, not joined.
    abandoned: bool,
    /// Open sessions of the session API: the Tap's handle → the engine's id (bounded by
    /// the engine's call table: an open that the engine refuses is not inserted).
    sessions: std::collections::HashMap<u64, SessionId>,
}

impl ShardCore {
    pub(crate) fn new(
        cfg: EngineConfig,
        store: Option<Arc<dyn MediaStore>>,
        shard: usize,
        flush_wait: Duration,
    ) -> Result<Self, PipelineError> {
        let media = match (cfg.record, store) {
            (RecordMode::None, _) | (_, None) => None,
            (_, Some(s)) => Some(MediaWriter::spawn(s, shard)?),
        };
        let engine = Engine::new(cfg);
        let deadline = Arc::new(AtomicI64::new(engine.poll_timeout().nanos()));
        Ok(ShardCore {
            engine,
            media,
            early: VecDeque::new(),
            in_flight: 0,
            polls: 0,
            flushing: false,
            deadline,
            flush_wait,
            abandoned: false,
            sessions: std::collections::HashMap::new(),
        })
    }

    /// One session-API call ([`crate::tap::SessionCall`]) for the Tap's session `handle`.
    pub(crate) fn session_call(
        &mut self,
        handle: u64,
        call: crate::tap::SessionCall<'_>,
        emit: &mut EmitFn<'_>,
    ) -> Result<Result<(), SessionError>, PipelineError> {
        use crate::tap::SessionCall;
        let r = match call {
            SessionCall::Open(spec) => self.engine.open_session(spec).map(|id| {
                self.sessions.insert(handle, id);
            }),
            call => match self.sessions.get(&handle).copied() {
                None => Err(SessionError::UnknownSession),
                Some(id) => match call {
                    SessionCall::Open(_) => Ok(()),
                    SessionCall::Media { stream, datagram } => {
                        self.engine.session_media(id, stream, &datagram)
                    }
                    SessionCall::Participants { participants, at } => {
                        self.engine.update_participants(id, &participants, at)
                    }
                    SessionCall::Pause(at) => self.engine.pause_session(id, at),
                    SessionCall::Resume(at) => self.engine.resume_session(id, at),
                    SessionCall::Attach(a) => self.engine.attach_session(id, a),
                    SessionCall::AddStream { stream, at } => {
                        self.engine.add_session_stream(id, stream, at).map(|_| ())
                    }
                    SessionCall::End(reason, at) => {
                        self.sessions.remove(&handle);
                        self.engine.end_session(id, reason, at)
                    }
                },
            },
        };
        self.drain(emit)?;
        Ok(r)
    }

    pub(crate) fn handle_datagram(
        &mut self,
        d: &Datagram<'_>,
        origin: Option<Origin>,
        emit: &mut EmitFn<'_>,
    ) -> Result<(), PipelineError> {
        match origin {
            None => self.engine.handle_datagram(d),
            Some(o) => self.engine.handle_datagram_from(d, o),
        }
        self.drain(emit)
    }

    pub(crate) fn handle_timeout(
        &mut self,
        now: Timestamp,
        emit: &mut EmitFn<'_>,
    ) -> Result<(), PipelineError> {
        if now >= self.engine.poll_timeout() {
            self.engine.handle_timeout(now);
        }
        self.drain(emit)?;
        // Every answer that has arrived: on a live source with no traffic, timers are the
        // only thing that runs, and a call waiting for its last segment must not wait for
        // the next packet to be finished.
        while self.in_flight > 0 {
            let Some(x) = self.media.as_ref().and_then(|m| m.answers.try_recv().ok()) else {
                break;
            };
            self.stored(x);
            self.drain(emit)?;
        }
        Ok(())
    }

    /// When this shard next needs time: the engine's deadline, or soon while segments are
    /// with the store (their answers are collected on timeouts, see `handle_timeout`).
    pub(crate) fn next_deadline(&self, now: Timestamp) -> Timestamp {
        let t = self.engine.poll_timeout();
        if self.in_flight > 0 {
            t.min(now.add_millis(ANSWER_POLL_MS))
        } else {
            t
        }
    }

    /// Publishes the next deadline for the Tap.
    pub(crate) fn publish_deadline(&self, now: Timestamp) {
        self.deadline
            .store(self.next_deadline(now).nanos(), Ordering::Release);
    }

    fn send_media(&mut self, msg: MediaMsg) -> Result<(), PipelineError> {
        let Some(w) = self.media.as_ref() else {
            // No writer (record none, or no store): a closed segment is answered as failed
            // so the call still finishes.
            if let MediaMsg::Close { segment } = msg {
                self.early
                    .push_back((segment, Err("no media store configured".into())));
            }
            return Ok(());
        };
        let mut msg = msg;
        loop {
            match w.try_send(msg) {
                Ok(()) => return Ok(()),
                Err(Some(m)) => {
                    msg = m;
                    // Queue full (policy: block). Keep the writer's answers flowing while
                    // waiting for room, so writer → hasher → shard can never deadlock.
                    match w.answers.recv_timeout(Duration::from_millis(5)) {
                        Ok(x) => self.early.push_back(x),
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => {
                            return Err(PipelineError::Stopped("media writer"))
                        }
                    }
                }
                Err(None) => return Err(PipelineError::Stopped("media writer")),
            }
        }
    }

    fn stored(&mut self, (segment, res): Stored) {
        self.in_flight = self.in_flight.saturating_sub(1);
        match res {
            Ok(st) => self.engine.handle_segment_stored(segment, st),
            Err(e) => {
                tracing::warn!(error = %e, "Cannot store a recording segment; it is left out of the vCon.");
                self.engine.handle_segment_failed(segment);
            }
        }
    }

    /// Drains the engine: media to the writer, events on, answers back in.
    ///
    /// Split in two so the check that runs after every packet inlines into the packet path
    /// and the loop does not.
    #[inline(always)]
    pub(crate) fn drain(&mut self, emit: &mut EmitFn<'_>) -> Result<(), PipelineError> {
        // The common case after an RTP packet: nothing came out, nothing is in flight.
        if !self.engine.has_output() && self.in_flight == 0 && self.early.is_empty() {
            return Ok(());
        }
        self.drain_outputs(emit)
    }

    #[inline(never)]
    fn drain_outputs(&mut self, emit: &mut EmitFn<'_>) -> Result<(), PipelineError> {
        loop {
            while let Some(o) = self.engine.poll_output() {
                match o {
                    Output::Event(e) => emit(e)?,
                    Output::SegmentOpened {
                        segment,
                        uuid,
                        index,
                        rate,
                        channels,
                    } => self.send_media(MediaMsg::Open(SegmentMeta {
                        segment,
                        uuid,
                        index,
                        rate,
                        channels,
                    }))?,
                    Output::Audio { segment, samples } => {
                        self.send_media(MediaMsg::Audio { segment, samples })?
                    }
                    Output::SegmentClosed { segment } => {
                        self.in_flight += 1;
                        self.send_media(MediaMsg::Close { segment })?
                    }
                }
            }
            self.polls = self.polls.wrapping_add(1);
            let next = match self.early.pop_front() {
                Some(x) => Some(x),
                None if self.in_flight > 0
                    && (self.polls.is_multiple_of(REPLY_POLL) || self.flushing) =>
                {
                    self.media.as_ref().and_then(|m| m.answers.try_recv().ok())
                }
                None => None,
            };
            match next {
                Some(x) => self.stored(x),
                None => return Ok(()),
            }
        }
    }

    /// Finishes every call at `now` and waits (at most `flush_wait`, [`FLUSH_WAIT`] by
    /// default, of wall clock) for every segment in flight; segments still unanswered then are failed by
    /// the engine's store timeout so every call ends.
    pub(crate) fn finish(
        &mut self,
        now: Timestamp,
        reason: FinishReason,
        emit: &mut EmitFn<'_>,
    ) -> Result<(), PipelineError> {
        self.engine.finish_all_because(now, reason);
        self.flushing = true;
        self.drain(emit)?;
        let started = Instant::now();
        while self.in_flight > 0 {
            let left = self.flush_wait.saturating_sub(started.elapsed());
            let answer = match self.media.as_ref() {
                Some(m) if !left.is_zero() => m.answers.recv_timeout(left).ok(),
                _ => None,
            };
            match answer {
                Some(x) => {
                    self.stored(x);
                    self.drain(emit)?;
                }
                None => {
                    tracing::warn!(
                        segments = self.in_flight,
                        "The media store did not answer; the segments are marked failed."
                    );
                    self.engine.expire_segments();
                    self.in_flight = 0;
                    self.abandoned = true;
                    self.drain(emit)?;
                }
            }
        }
        self.publish_deadline(now);
        Ok(())
    }

    pub(crate) fn close(mut self) -> ShardTotals {
        let media = match self.media.as_mut() {
            // A hung store would hang the join: leave its threads to the process exit.
            Some(m) if self.abandoned => m.abandon(),
            Some(m) => m.close(),
            None => MediaTotals::default(),
        };
        ShardTotals {
            engine: self.engine.stats().clone(),
            media,
        }
    }
}
