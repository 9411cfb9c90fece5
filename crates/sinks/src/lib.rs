//! Durable delivery of finished vCons to the stores vcontap's users run.
//!
//! ```text
//!  engine events ─▶ Delivery::submit ─┬─ finished ─▶ transforms ─▶ Spool (log, group fsync)
//!                                     │                              │ committed records
//!                                     │                              ▼
//!                                     │                 one task per durable Sink: cursor,
//!                                     │                 batches, retry/backoff, breaker,
//!                                     │                 dead letters ─▶ store (file, redis…)
//!                                     └─ every event ─▶ per EventSink bounded queue
//!                                                       (drop_oldest) ─▶ store streams
//! ```
//!
//! - [`sink`]: the interface a store client implements ([`Sink`], [`EventSink`]).
//! - [`spec`]: `--sink URL` / `[[sinks]]` parsing into a [`SinkSpec`] and the registry.
//! - [`record`]: what a sink gets ([`Record`]: exact bytes, uuid, spool id).
//! - [`file`]: the embedded default store.
//!
//! This crate is an I/O shell (files, sockets, a tokio runtime it is handed); the sans-IO
//! crates below it never depend on it.

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

pub mod delivery;
pub mod file;
#[cfg(feature = "http")]
pub mod http;
pub mod metrics;
#[cfg(feature = "nats")]
pub mod nats;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod record;
#[cfg(feature = "redis")]
pub mod redis;
pub mod retry;
#[cfg(feature = "s3")]
pub mod s3;
pub mod sink;
pub mod spec;
pub mod spool;
pub mod transform;

pub use delivery::{Delivery, DeliveryConfig, DeliveryReport, NamedSink, Submitter, WhenFull};
pub use record::{Record, RecordId, VconHead};
pub use sink::{BoxFuture, Built, EventSink, Outcome, Sink, SinkError};
pub use spec::{ConfigError, Options, SinkSpec, SinkTable};
