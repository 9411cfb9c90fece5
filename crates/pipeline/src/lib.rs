//! The vcontap packet pipeline: everything between a packet source and the event handler,
//! shared by every driver (`vcontap replay`, live capture, HEP, the benches).
//!
//! ```text
//!  PacketSource ──frames──▶ Tap ─┬─ Decoder (IP reassembly, TCP streams)
//!  (pcap files,                  ├─ Router (Call-ID / SDP media address / SSRC → shard)
//!   AF_PACKET, HEP)              └─ shards: Engine ─▶ MediaWriter (writer + hasher threads)
//!                                        │                 └─▶ MediaStore (local files, …)
//!                                        └──events──▶ EventHandler (files, sinks, live API)
//! ```
//!
//! [`Tap`] is driven like the sans-IO crates below it (`handle_packet` / `handle_timeout` /
//! `poll_timeout`), with time as an input ([`Clock`]); this crate is the layer that owns
//! threads and files for them: shard threads, media writer/hasher threads, the pcap file
//! source and the local media store. Queue bounds and full-policies are listed in
//! [`tap`] and [`media`]; [`QueuePolicy`] names them.
//!
//! [`run`] is the loop every driver uses: poll the source, hand frames to the Tap with the
//! timer clock, run timers when the source is idle, finish at the end.

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

mod agents;
pub mod audio_tee;
pub mod clock;
pub mod hep;
pub mod media;
pub mod queue;
mod shard;
pub mod source;
pub mod tap;

pub use audio_tee::{AudioSubscription, AudioTee, Polled, SegmentInfo, SubscribeError, TeeItem};
pub use clock::Clock;
pub use hep::{HepConfig, HepCounters, HepDatagram, HepListener, HepMeta, HepStats, HepVia};
pub use media::{FinishedSegment, LocalFiles, MediaStore, MediaTotals, SegmentMeta, SegmentWriter};
pub use queue::{QueueCounters, QueuePolicy, QueueSnapshot};
pub use shard::{ShardTotals, FLUSH_WAIT};
pub use source::{Pace, PacketSource, PcapFiles, Poll};
pub use tap::{EventHandler, SessionCall, SessionHandle, Tap, TapConfig, TapCounters, TapTotals};

use std::time::Duration;

/// What can stop a pipeline.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Bad configuration, found at start-up.
    #[error("{0}")]
    Config(String),
    /// A file or directory could not be used.
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    /// A thread could not be started.
    #[error("cannot start a thread: {0}")]
    Thread(#[source] std::io::Error),
    /// A pipeline stage stopped (its thread ended or panicked).
    #[error("{0} stopped")]
    Stopped(&'static str),
    /// The event handler failed (e.g. the output disk is full).
    #[error("event handler: {0}")]
    Handler(String),
    /// The engine refused a session-API call (inline mode only: a threaded shard logs it).
    #[error("session: {0}")]
    Session(#[from] vcontap_engine::SessionError),
}

/// Longest a live driver sleeps between polls of an idle source.
const IDLE_SLEEP: Duration = Duration::from_millis(10);

/// Runs `source` through `tap` until the source ends, then finishes every call. `tick` is
/// called after every burst (progress lines, shutdown checks: return `false` to stop).
pub fn run<S: PacketSource>(
    source: &mut S,
    mut tap: Tap,
    mut clock: Clock,
    tick: &mut dyn FnMut(&Tap) -> bool,
) -> Result<TapTotals, PipelineError> {
    loop {
        let poll = source.poll(source::BURST, |p| {
            let now = clock.on_packet(p.ts);
            tap.handle_packet(p, now)
        })?;
        match poll {
            Poll::Packets(_) => {}
            Poll::Idle => {
                tap.flush()?;
                let now = clock.now();
                if now >= tap.poll_timeout() {
                    tap.handle_timeout(now)?;
                }
                let wait = tap
                    .poll_timeout()
                    .nanos()
                    .saturating_sub(clock.now().nanos());
                let wait = Duration::from_nanos(u64::try_from(wait).unwrap_or(0));
                std::thread::sleep(wait.min(IDLE_SLEEP));
            }
            Poll::End => break,
        }
        if !tick(&tap) {
            break;
        }
    }
    let now = clock.now();
    tap.finish(now)
}
