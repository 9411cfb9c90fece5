//! Queue-full policies: what a bounded queue does when its consumer falls behind.
//!
//! Every queue in the pipeline is bounded; the policy is chosen by the driver, because the
//! right answer depends on where the packets come from (see `docs/style.md`):
//!
//! - a **file replay** must not lose anything and has nobody to wait for it, so the reader
//!   blocks ([`QueuePolicy::Block`]);
//! - a **live capture** must never stall: if an engine shard falls behind, blocking would
//!   only move the loss into the kernel ring where it cannot be attributed, so the pipeline
//!   drops the batch and counts every packet in it ([`QueuePolicy::DropNewest`]).

use std::sync::atomic::{AtomicU64, Ordering};

/// What happens when a bounded queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueuePolicy {
    /// The producer waits for room (file replay: lossless, back-pressure to the reader).
    Block,
    /// The new item is dropped and counted (live capture: never stall the source).
    DropNewest,
}

impl QueuePolicy {
    /// The name used in configuration and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            QueuePolicy::Block => "block",
            QueuePolicy::DropNewest => "drop_newest",
        }
    }
}

/// Counters of one bounded queue, shared between producer and observers.
#[derive(Debug, Default)]
pub struct QueueCounters {
    /// Items enqueued.
    pub sent: AtomicU64,
    /// Items dropped by [`QueuePolicy::DropNewest`].
    pub dropped: AtomicU64,
    /// Packets inside dropped items (a batch holds many).
    pub dropped_packets: AtomicU64,
    /// Times the producer found the queue full (either policy).
    pub full: AtomicU64,
}

impl QueueCounters {
    pub(crate) fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// A plain copy for summaries.
    pub fn snapshot(&self) -> QueueSnapshot {
        QueueSnapshot {
            sent: self.sent.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            dropped_packets: self.dropped_packets.load(Ordering::Relaxed),
            full: self.full.load(Ordering::Relaxed),
        }
    }
}

/// A point-in-time copy of [`QueueCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueSnapshot {
    /// Items enqueued.
    pub sent: u64,
    /// Items dropped.
    pub dropped: u64,
    /// Packets inside dropped items.
    pub dropped_packets: u64,
    /// Times the queue was found full.
    pub full: u64,
}
