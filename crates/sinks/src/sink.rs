//! The sink interface: what a store client implements ([`Sink`] for finished vCons out of
//! the spool, [`EventSink`] for best-effort real-time events), and what it answers
//! ([`Outcome`] per record, [`SinkError`] for a failure of the whole attempt).
//!
//! The delivery core ([`crate::delivery`]) owns retries, backoff, circuit breaking,
//! dead-lettering, ordering and metrics, so a sink is only the store-specific write:
//!
//! - `deliver` gets a batch of records **in spool order** (so updates of one uuid arrive in
//!   order) and must write each **idempotently by uuid**: delivery is at-least-once, and a
//!   batch is retried whole after an `Err`, so a record may arrive twice.
//! - `Ok(outcomes)` has one [`Outcome`] per record. `Rejected` is permanent (the store said
//!   no: HTTP 4xx, schema refusal): the record goes to the sink's dead-letter folder with the
//!   reason and is not retried.
//! - `Err(SinkError)` is transient (connection refused, timeout, 5xx): the same batch is
//!   retried with exponential backoff and jitter, and repeated failures open the sink's
//!   circuit breaker.
//!
//! Futures are boxed ([`BoxFuture`]) so sinks of different kinds sit behind one
//! `Box<dyn Sink>` in the fan-out.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use vcontap_engine::VconEvent;

use crate::record::Record;

/// A boxed, sendable future (what every sink method returns).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a store answered for one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Written (or already there: idempotent writes count as delivered).
    Delivered,
    /// Refused for good (4xx, schema refusal): dead-lettered with this reason, not retried.
    Rejected(String),
}

/// A transient failure of a whole delivery attempt: retried with backoff.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct SinkError(pub String);

impl SinkError {
    /// A transient failure with a message (shown in logs and `vcontap spool list`).
    pub fn new(msg: impl std::fmt::Display) -> Self {
        SinkError(msg.to_string())
    }
}

/// A store that keeps finished vCons (durable: records leave the spool only when every
/// durable sink has delivered or dead-lettered them).
pub trait Sink: Send + 'static {
    /// The most records handed to one `deliver` call.
    fn max_batch(&self) -> usize {
        64
    }

    /// Writes a batch of finished vCons, in spool order, idempotently by uuid.
    fn deliver<'a>(
        &'a mut self,
        batch: &'a [Arc<Record>],
    ) -> BoxFuture<'a, Result<Vec<Outcome>, SinkError>>;

    /// Called once at shutdown after the last delivery (flush buffers, close connections).
    fn close(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// A store that also wants every real-time event (`created`/`updated`/`segment`/`finished`
/// with the full snapshot). Best-effort: events are not spooled, and a slow store loses the
/// oldest queued events (counted) rather than slowing capture.
pub trait EventSink: Send + 'static {
    /// The most events handed to one `publish` call.
    fn max_batch(&self) -> usize {
        256
    }

    /// Publishes events in emission order (per uuid, `seq` increases).
    fn publish<'a>(
        &'a mut self,
        batch: &'a [Arc<VconEvent>],
    ) -> BoxFuture<'a, Result<(), SinkError>>;
}

/// What building a sink from its spec produced: a durable sink, an event sink, or both.
pub struct Built {
    /// Finished vCons (through the spool).
    pub sink: Option<Box<dyn Sink>>,
    /// Real-time events (best-effort).
    pub events: Option<Box<dyn EventSink>>,
}

impl Built {
    /// Only a durable sink.
    pub fn durable(sink: impl Sink) -> Self {
        Built {
            sink: Some(Box::new(sink)),
            events: None,
        }
    }
}
