//! The live audio tee: decoded PCM of calls in progress, copied to subscribers (the
//! `/v1/calls/{uuid}/audio` WebSocket) as it is written.
//!
//! [`AudioTee`] wraps the [`MediaStore`] the shards write to, so it sees exactly the PCM that
//! ends up in the recording segments, on the media writer threads (never the engine thread;
//! the engine stays sans-IO and knows nothing of it). It also takes the vCon events
//! ([`AudioTee::on_event`]) to know which calls are live and when one ends: `finished` is
//! emitted only after every segment of the call came back from the store, so by then all
//! of its audio went through the tee.
//!
//! Queues: one per subscriber, bounded at `capacity` audio chunks with policy **drop
//! newest** (the writer thread never waits on a subscriber; what a subscriber lost is
//! counted and visible as a jump in the chunk offsets). Segment start/end notices are small
//! and never dropped unless the queue holds [`CONTROL_SLACK`] more items than its audio
//! bound, which only a subscriber that stopped reading reaches. The end of the call is a
//! flag, so it is never lost. With no subscriber at all, a write costs one atomic load.
//!
//! Bounded memory: the live-call table is capped at [`MAX_CALLS`] entries and an entry is
//! removed at `finished`; subscribers per call are capped at [`MAX_SUBSCRIBERS_PER_CALL`].
//!
//! One mutex guards the table: taken at segment start/end, per event, and per audio write
//! only while someone subscribes (a map lookup; the copy for subscribers is made once).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use vcontap_engine::{EventKind, VconEvent};

use crate::media::{FinishedSegment, MediaStore, SegmentMeta, SegmentWriter};

/// Live calls tracked (beyond it new calls cannot be subscribed to; nothing else changes).
pub const MAX_CALLS: usize = 1 << 20;
/// Subscribers of one call.
pub const MAX_SUBSCRIBERS_PER_CALL: usize = 64;
/// Room for control notices above a subscriber's audio bound.
pub const CONTROL_SLACK: usize = 64;

/// The recording segment audio is flowing into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentInfo {
    /// 0, 1, 2… within the call (the WAV file `<uuid>-NNN.wav`).
    pub index: u32,
    /// Sample rate.
    pub rate: u32,
    /// 2 (caller left, callee right) or 1 (mono mix).
    pub channels: u16,
}

/// What a subscriber receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TeeItem {
    /// A segment starts (recording resumed after hold, a cut, or the first one).
    SegmentStart(SegmentInfo),
    /// Interleaved PCM of segment `index`, starting `offset` sample frames (per channel)
    /// into the segment.
    Audio {
        /// The segment.
        index: u32,
        /// Sample frames since the segment started.
        offset: u64,
        /// Interleaved samples (shared by every subscriber).
        samples: Arc<[i16]>,
    },
    /// Segment `index` is complete.
    SegmentEnd {
        /// The segment.
        index: u32,
    },
}

/// Why a subscription was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubscribeError {
    /// No such live call (unknown or already finished).
    #[error("no such call in progress")]
    NotLive,
    /// The call has [`MAX_SUBSCRIBERS_PER_CALL`] subscribers.
    #[error("too many audio subscribers for this call")]
    TooMany,
}

/// Called when something was queued for a subscriber whose queue was empty, or the call
/// ended (e.g. `tokio::sync::Notify::notify_one`, which keeps a permit for a later wait).
pub type Waker = Arc<dyn Fn() + Send + Sync>;

struct SubShared {
    queue: Mutex<VecDeque<TeeItem>>,
    capacity: usize,
    ended: AtomicBool,
    dropped_samples: AtomicU64,
    waker: Waker,
}

impl SubShared {
    fn push(&self, item: TeeItem) {
        let audio = matches!(item, TeeItem::Audio { .. });
        // The waker fires only when the queue goes from empty to not empty: a subscriber
        // drains until it finds the queue empty before it waits (see `AudioSubscription`),
        // so one wake per burst is enough and a busy writer makes no syscall per chunk.
        let wake = match self.queue.lock() {
            Ok(mut q) => {
                let limit = if audio {
                    self.capacity
                } else {
                    self.capacity + CONTROL_SLACK
                };
                if q.len() < limit {
                    let was_empty = q.is_empty();
                    q.push_back(item);
                    was_empty
                } else {
                    if let TeeItem::Audio { samples, .. } = &item {
                        self.dropped_samples
                            .fetch_add(samples.len() as u64, Ordering::Relaxed);
                    }
                    false
                }
            }
            Err(_) => false,
        };
        if wake {
            (self.waker)();
        }
    }

    fn end(&self) {
        self.ended.store(true, Ordering::Release);
        (self.waker)();
    }
}

#[derive(Default)]
struct CallSlot {
    segment: Option<SegmentInfo>,
    subs: Vec<Arc<SubShared>>,
    /// An event of the call was seen (its `finished` will remove the slot).
    live: bool,
}

#[derive(Default)]
struct Hub {
    calls: Mutex<HashMap<Arc<str>, CallSlot>>,
    /// Subscribers alive, so writes skip the lock when nobody listens.
    subscribers: AtomicUsize,
}

impl Hub {
    fn segment_changed(&self, uuid: &Arc<str>, seg: Option<SegmentInfo>, item: TeeItem) {
        let Ok(mut g) = self.calls.lock() else { return };
        if !g.contains_key(uuid) && g.len() < MAX_CALLS {
            // The writer thread can open a segment before the event handler saw `created`.
            g.insert(uuid.clone(), CallSlot::default());
        }
        let Some(slot) = g.get_mut(uuid) else { return };
        slot.segment = seg;
        for s in &slot.subs {
            s.push(item.clone());
        }
        // A slot only the writer knows of (nobody feeds this tee the events) would never
        // see `finished`: it goes when its segment closes, so the table cannot fill up.
        if seg.is_none() && !slot.live && slot.subs.is_empty() {
            g.remove(uuid);
        }
    }

    fn audio(&self, uuid: &str, index: u32, offset: u64, samples: &[i16]) {
        if self.subscribers.load(Ordering::Relaxed) == 0 {
            return;
        }
        let Ok(g) = self.calls.lock() else { return };
        let Some(slot) = g.get(uuid) else {
            return;
        };
        if slot.subs.is_empty() {
            return;
        }
        // One copy, shared by every subscriber of the call.
        let item = TeeItem::Audio {
            index,
            offset,
            samples: Arc::from(samples),
        };
        for s in &slot.subs {
            s.push(item.clone());
        }
    }

    fn unsubscribe(&self, uuid: &str, shared: &Arc<SubShared>) {
        self.subscribers.fetch_sub(1, Ordering::Relaxed);
        if let Ok(mut g) = self.calls.lock() {
            if let Some(slot) = g.get_mut(uuid) {
                slot.subs.retain(|s| !Arc::ptr_eq(s, shared));
            }
        }
    }
}

/// The tee: wrap the media store with [`AudioTee::wrap`], feed it the vCon events, and
/// subscribe to calls by uuid.
pub struct AudioTee {
    store: Arc<dyn MediaStore>,
    hub: Arc<Hub>,
}

impl AudioTee {
    /// A tee in front of `store`. Give the result to `TapConfig::media`.
    pub fn wrap(store: Arc<dyn MediaStore>) -> Arc<AudioTee> {
        Arc::new(AudioTee {
            store,
            hub: Arc::new(Hub::default()),
        })
    }

    /// Follows the calls' lives: call it with every event the Tap emits (on the event
    /// handler's thread; a map lookup, and an insert or remove at a call's start and end).
    pub fn on_event(&self, e: &VconEvent) {
        let Ok(mut g) = self.hub.calls.lock() else {
            return;
        };
        match e.kind {
            EventKind::Finished => {
                if let Some(slot) = g.remove(&e.uuid) {
                    for s in slot.subs {
                        s.end();
                    }
                }
            }
            _ => {
                let full = g.len() >= MAX_CALLS;
                match g.get_mut(&e.uuid) {
                    Some(slot) => slot.live = true,
                    None if !full => {
                        g.insert(
                            e.uuid.clone(),
                            CallSlot {
                                live: true,
                                ..CallSlot::default()
                            },
                        );
                    }
                    None => {}
                }
            }
        }
    }

    /// Subscriptions alive, over all calls.
    pub fn subscribers(&self) -> usize {
        self.hub.subscribers.load(Ordering::Relaxed)
    }

    /// Calls the tee knows to be live.
    pub fn live_calls(&self) -> usize {
        self.hub.calls.lock().map(|g| g.len()).unwrap_or(0)
    }

    /// Subscribes to a live call's audio from now on. `capacity` bounds the queue (audio
    /// chunks, at least 1); `waker` is called whenever something was queued or the call
    /// ended.
    pub fn subscribe(
        &self,
        uuid: &str,
        capacity: usize,
        waker: Waker,
    ) -> Result<AudioSubscription, SubscribeError> {
        let mut g = self.hub.calls.lock().map_err(|_| SubscribeError::NotLive)?;
        let key = g
            .get_key_value(uuid)
            .map(|(k, _)| k.clone())
            .ok_or(SubscribeError::NotLive)?;
        let slot = g.get_mut(uuid).ok_or(SubscribeError::NotLive)?;
        if slot.subs.len() >= MAX_SUBSCRIBERS_PER_CALL {
            return Err(SubscribeError::TooMany);
        }
        let shared = Arc::new(SubShared {
            queue: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
            ended: AtomicBool::new(false),
            dropped_samples: AtomicU64::new(0),
            waker,
        });
        // Joining mid-segment: the segment's description comes first, so every chunk that
        // follows can be interpreted.
        if let Some(seg) = slot.segment {
            shared.push(TeeItem::SegmentStart(seg));
        }
        slot.subs.push(shared.clone());
        let uuid = key;
        self.hub.subscribers.fetch_add(1, Ordering::Relaxed);
        Ok(AudioSubscription {
            hub: self.hub.clone(),
            uuid,
            shared,
        })
    }
}

impl MediaStore for AudioTee {
    fn open(&self, meta: &SegmentMeta) -> std::io::Result<Box<dyn SegmentWriter>> {
        let inner = self.store.open(meta)?;
        let info = SegmentInfo {
            index: meta.index,
            rate: meta.rate,
            channels: meta.channels,
        };
        self.hub
            .segment_changed(&meta.uuid, Some(info), TeeItem::SegmentStart(info));
        Ok(Box::new(TeeSegment {
            inner,
            hub: self.hub.clone(),
            uuid: meta.uuid.clone(),
            info,
            frames: 0,
        }))
    }
}

/// A segment being written: the wrapped store's writer, then the tee.
struct TeeSegment {
    inner: Box<dyn SegmentWriter>,
    hub: Arc<Hub>,
    uuid: Arc<str>,
    info: SegmentInfo,
    /// Sample frames written so far.
    frames: u64,
}

impl SegmentWriter for TeeSegment {
    fn write(&mut self, samples: &[i16]) -> std::io::Result<()> {
        self.inner.write(samples)?;
        self.hub
            .audio(&self.uuid, self.info.index, self.frames, samples);
        self.frames += (samples.len() / usize::from(self.info.channels.max(1))) as u64;
        Ok(())
    }

    fn finish(self: Box<Self>) -> std::io::Result<Box<dyn FinishedSegment>> {
        let TeeSegment {
            inner,
            hub,
            uuid,
            info,
            ..
        } = *self;
        hub.segment_changed(&uuid, None, TeeItem::SegmentEnd { index: info.index });
        inner.finish()
    }
}

/// One subscriber's end: when the waker fires, [`AudioSubscription::poll`] until it says
/// [`Polled::Empty`] (the waker fires again only after the queue was found empty), then
/// wait for the waker. A waker that remembers a wake given before the wait (a
/// `tokio::sync::Notify` permit, a thread unpark) closes the race. Dropping it unsubscribes.
pub struct AudioSubscription {
    hub: Arc<Hub>,
    uuid: Arc<str>,
    shared: Arc<SubShared>,
}

/// What [`AudioSubscription::poll`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Polled {
    /// Items, oldest first (at most the `max` asked for).
    Items(Vec<TeeItem>),
    /// Nothing queued now; wait for the waker.
    Empty,
    /// The call finished and everything was delivered.
    Ended,
}

impl AudioSubscription {
    /// The call's uuid.
    pub fn uuid(&self) -> &str {
        &self.uuid
    }

    /// Takes up to `max` queued items.
    pub fn poll(&self, max: usize) -> Polled {
        // Read the flag before the queue: an end seen here means every item of the call
        // was queued before it.
        let ended = self.shared.ended.load(Ordering::Acquire);
        let items: Vec<TeeItem> = match self.shared.queue.lock() {
            Ok(mut q) => {
                let n = q.len().min(max.max(1));
                q.drain(..n).collect()
            }
            Err(_) => Vec::new(),
        };
        if !items.is_empty() {
            Polled::Items(items)
        } else if ended {
            Polled::Ended
        } else {
            Polled::Empty
        }
    }

    /// Samples (all channels) dropped because the queue was full.
    pub fn dropped_samples(&self) -> u64 {
        self.shared.dropped_samples.load(Ordering::Relaxed)
    }
}

impl Drop for AudioSubscription {
    fn drop(&mut self) {
        self.hub.unsubscribe(&self.uuid, &self.shared);
    }
}
