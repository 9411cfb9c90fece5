//! The delivery runtime: takes engine events, runs the transform stage and the spool writer
//! (a thread: file I/O and fdatasync), and one tokio task per sink.
//!
//! Queues and their full-policies (every queue is bounded):
//!
//! | queue | bound | when full |
//! |---|---|---|
//! | engine → spool writer | [`DeliveryConfig::queue`] vCons | **block** (the writer never waits long: see the spool policy) |
//! | spool on disk | [`SpoolConfig::max_bytes`] | [`WhenFull::Block`] (replay: the engine slows down) or [`WhenFull::DropNewest`] (live: refuse, count, log an error with the uuid) — alarm either way |
//! | spool → durable sink | the sink's cursor: records wait on disk, never in memory | — (a sink that is down costs disk, not RAM) |
//! | engine → event sink | [`DeliveryConfig::event_queue`] events per sink | **drop_oldest** (counted): best-effort, never slows capture |
//!
//! A durable sink's task reads batches from the spool in id order, delivers them with a
//! per-attempt timeout, dead-letters rejected records (`dead/<sink>/<uuid>.vcon.json` and
//! `<uuid>.reason.json`), retries transient failures with backoff and a circuit breaker
//! ([`crate::retry`]), and moves its cursor; the spool deletes segments every owing sink
//! has passed.
//!
//! Shutdown ([`Delivery::finish`]): the writer commits what is queued, then every sink
//! drains until it has caught up or the drain deadline passes; whatever is left stays in the
//! spool for the next start.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use crossbeam_channel::{bounded, Receiver, Sender};
use tokio::sync::{watch, Notify};
use vcontap_engine::{EventKind, VconEvent};

use crate::metrics::{EventMetrics, Metrics, SinkMetrics};
use crate::record::Record;
use crate::retry::{Retry, RetryConfig};
use crate::sink::{Built, EventSink, Outcome, Sink};
use crate::spool::{sink_file_name, Spool, SpoolConfig, SpoolError};
use crate::transform::{self, Transform};

/// What to do when the spool reaches its bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenFull {
    /// Wait for the sinks to make room (replay: nothing is lost, the input slows down).
    Block,
    /// Refuse new vCons (counted and logged with their uuid) so capture never stalls.
    DropNewest,
}

/// Delivery settings.
pub struct DeliveryConfig {
    /// The spool.
    pub spool: SpoolConfig,
    /// Policy at the spool's bound.
    pub when_full: WhenFull,
    /// vCons queued for the spool writer.
    pub queue: usize,
    /// Most vCons per group commit.
    pub commit_batch: usize,
    /// Retry policy of every sink.
    pub retry: RetryConfig,
    /// A delivery attempt that takes longer has failed.
    pub attempt_timeout: Duration,
    /// Events queued per event sink.
    pub event_queue: usize,
    /// The transform stage, in order.
    pub transforms: Vec<Box<dyn Transform>>,
}

impl DeliveryConfig {
    /// Defaults around a spool directory.
    pub fn new(spool_dir: impl Into<PathBuf>) -> Self {
        DeliveryConfig {
            spool: SpoolConfig::new(spool_dir),
            when_full: WhenFull::Block,
            queue: 4096,
            commit_batch: 1024,
            retry: RetryConfig::default(),
            attempt_timeout: Duration::from_secs(30),
            event_queue: 10_000,
            transforms: Vec::new(),
        }
    }
}

/// Delivery errors.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The spool could not be opened or written.
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// The spool writer stopped.
    #[error("the spool writer stopped")]
    WriterGone,
    /// A thread could not be started.
    #[error("cannot start the spool writer: {0}")]
    Thread(#[source] std::io::Error),
    /// Two sinks have the same name.
    #[error("two sinks are both named `{0}`; give one a `name`")]
    DuplicateName(String),
}

/// A sink with its name, ready to start.
pub struct NamedSink {
    /// Name (cursor, dead letters, metrics).
    pub name: String,
    /// What its builder produced.
    pub built: Built,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Running,
    /// Deliver what is spooled, then stop.
    Drain,
    /// Stop now (drain deadline passed).
    Abort,
}

struct Shared {
    spool: Mutex<Spool>,
    head: watch::Sender<u64>,
    stop: watch::Sender<Stop>,
    dead_dir: PathBuf,
    metrics: Arc<Metrics>,
}

struct EventQueue {
    q: Mutex<VecDeque<Arc<VconEvent>>>,
    cap: usize,
    notify: Notify,
    metrics: Arc<EventMetrics>,
}

/// What was delivered, and what is left, per sink at the end.
#[derive(Debug, Clone)]
pub struct SinkReport {
    /// Sink name.
    pub name: String,
    /// Records delivered this run.
    pub delivered: u64,
    /// Records dead-lettered this run.
    pub dead_lettered: u64,
    /// Records still owed (left in the spool).
    pub pending: u64,
    /// Failed attempts this run.
    pub failed: u64,
}

/// The result of [`Delivery::finish`].
#[derive(Debug, Clone, Default)]
pub struct DeliveryReport {
    /// Durable sinks.
    pub sinks: Vec<SinkReport>,
    /// vCons committed to the spool this run.
    pub spooled: u64,
    /// Records still in the spool for sinks not configured in this run.
    pub stale_sinks: Vec<String>,
    /// vCons refused because the spool was full.
    pub rejected_full: u64,
    /// vCons a transform refused (dead-lettered).
    pub transform_failed: u64,
    /// Events dropped by event sinks (queue full or store down).
    pub events_dropped: u64,
}

enum Msg {
    Vcon(Arc<str>, Arc<str>),
    /// Commit what came before, then stop (sent by [`Delivery::finish`]).
    Close,
}

/// A cheap, cloneable handle that hands engine events to a running [`Delivery`] (what an
/// event handler owns).
#[derive(Clone)]
pub struct Submitter {
    tx: Sender<Msg>,
    events: Vec<Arc<EventQueue>>,
    metrics: Arc<Metrics>,
}

impl Submitter {
    /// Hands one engine event over: every event to the event sinks (drop-oldest queues),
    /// finished vCons to the spool writer (blocking while its queue is full).
    pub fn submit(&self, ev: &Arc<VconEvent>) -> Result<(), DeliveryError> {
        for q in &self.events {
            let mut g = q.q.lock().map_err(|_| DeliveryError::WriterGone)?;
            if g.len() >= q.cap {
                g.pop_front();
                q.metrics.dropped.fetch_add(1, Relaxed);
            }
            g.push_back(ev.clone());
            q.metrics.queued.store(g.len() as u64, Relaxed);
            drop(g);
            q.notify.notify_one();
        }
        if ev.kind == EventKind::Finished {
            self.metrics.spool.queued.fetch_add(1, Relaxed);
            self.tx
                .send(Msg::Vcon(ev.uuid.clone(), ev.vcon_json.clone()))
                .map_err(|_| DeliveryError::WriterGone)?;
        }
        Ok(())
    }
}

/// The running delivery (see the module docs).
pub struct Delivery {
    submitter: Submitter,
    writer: Option<JoinHandle<()>>,
    events: Vec<Arc<EventQueue>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    shared: Arc<Shared>,
    metrics: Arc<Metrics>,
    rt: tokio::runtime::Handle,
}

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Delivery {
    /// Opens the spool and starts the writer thread and one task per sink on `rt`.
    pub fn start(
        cfg: DeliveryConfig,
        sinks: Vec<NamedSink>,
        rt: tokio::runtime::Handle,
    ) -> Result<Self, DeliveryError> {
        let mut names: Vec<String> = Vec::new();
        for s in &sinks {
            if names.contains(&s.name) {
                return Err(DeliveryError::DuplicateName(s.name.clone()));
            }
            names.push(s.name.clone());
        }
        let durable: Vec<String> = sinks
            .iter()
            .filter(|s| s.built.sink.is_some())
            .map(|s| s.name.clone())
            .collect();
        let spool = Spool::open(cfg.spool.clone(), durable)?;
        let dead_dir = spool.dir().join("dead");
        let head = spool.head().0;
        let mut metrics = Metrics::default();
        metrics.spool.max_bytes.store(spool.max_bytes(), Relaxed);
        metrics.spool.bytes.store(spool.bytes(), Relaxed);
        let mut durable_sinks = Vec::new();
        let mut event_sinks = Vec::new();
        for s in sinks {
            if let Some(d) = s.built.sink {
                let m = Arc::new(SinkMetrics {
                    name: s.name.clone(),
                    ..Default::default()
                });
                metrics.sinks.push(m.clone());
                durable_sinks.push((s.name.clone(), d, m));
            }
            if let Some(e) = s.built.events {
                let m = Arc::new(EventMetrics {
                    name: s.name.clone(),
                    ..Default::default()
                });
                metrics.events.push(m.clone());
                event_sinks.push((s.name, e, m));
            }
        }
        if spool.truncated_frames > 0 {
            tracing::warn!(
                frames = spool.truncated_frames,
                "spool: torn frames from an earlier crash were cut (they were never acknowledged)"
            );
        }
        let stale = spool.stale_sinks();
        if !stale.is_empty() {
            tracing::warn!(sinks = ?stale, "spool holds vCons owed to sinks that are not configured now (see `vcontap spool list`)");
        }
        let metrics = Arc::new(metrics);
        let shared = Arc::new(Shared {
            spool: Mutex::new(spool),
            head: watch::channel(head).0,
            stop: watch::channel(Stop::Running).0,
            dead_dir,
            metrics: metrics.clone(),
        });
        let (tx, rx) = bounded(cfg.queue.max(1));
        let mut tasks = Vec::new();
        for (name, sink, m) in durable_sinks {
            tasks.push(rt.spawn(sink_loop(
                name,
                sink,
                shared.clone(),
                m,
                cfg.retry,
                cfg.attempt_timeout,
            )));
        }
        let mut events = Vec::new();
        for (name, sink, m) in event_sinks {
            let q = Arc::new(EventQueue {
                q: Mutex::new(VecDeque::new()),
                cap: cfg.event_queue.max(1),
                notify: Notify::new(),
                metrics: m,
            });
            events.push(q.clone());
            tasks.push(rt.spawn(event_loop(
                name,
                sink,
                q,
                shared.clone(),
                cfg.retry,
                cfg.attempt_timeout,
            )));
        }
        let w_shared = shared.clone();
        let w_metrics = metrics.clone();
        let writer = std::thread::Builder::new()
            .name("vcontap-spool".into())
            .spawn(move || spool_writer(rx, w_shared, w_metrics, cfg))
            .map_err(DeliveryError::Thread)?;
        Ok(Delivery {
            submitter: Submitter {
                tx,
                events: events.clone(),
                metrics: metrics.clone(),
            },
            writer: Some(writer),
            events,
            tasks,
            shared,
            metrics,
            rt,
        })
    }

    /// Shared metrics (for summaries and `/metrics`).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// A handle for event handlers.
    pub fn handle(&self) -> Submitter {
        self.submitter.clone()
    }

    /// Hands one engine event over (see [`Submitter::submit`]).
    pub fn submit(&self, ev: &Arc<VconEvent>) -> Result<(), DeliveryError> {
        self.submitter.submit(ev)
    }

    /// Stops: commits what is queued, lets every sink drain for at most `drain`, stops the
    /// rest (left in the spool for the next start) and reports. Call from outside the
    /// runtime (it blocks).
    pub fn finish(mut self, drain: Duration) -> DeliveryReport {
        // A close message rather than dropping the sender: a handle still held elsewhere
        // must not keep the writer (and this call) waiting forever.
        let _ = self.submitter.tx.send(Msg::Close);
        if let Some(w) = self.writer.take() {
            if w.join().is_err() {
                tracing::error!("spool writer panicked");
            }
        }
        // `send_replace`, not `send`: `send` leaves the value unchanged when no task has
        // subscribed yet (a task not polled once before a quick finish), which then waited
        // for the drain deadline.
        self.shared.stop.send_replace(Stop::Drain);
        for q in &self.events {
            q.notify.notify_one();
        }
        let deadline = Instant::now() + drain;
        let mut tasks: Vec<Option<tokio::task::JoinHandle<()>>> = std::mem::take(&mut self.tasks)
            .into_iter()
            .map(Some)
            .collect();
        let shared = self.shared.clone();
        self.rt.block_on(async move {
            let drained = tokio::time::timeout_at(deadline.into(), join_all(&mut tasks)).await;
            if drained.is_err() {
                shared.stop.send_replace(Stop::Abort);
                join_all(&mut tasks).await;
            }
        });
        self.report()
    }

    fn report(&self) -> DeliveryReport {
        let spool = self.shared.spool.lock().ok();
        let m = &self.metrics;
        let sinks = m
            .sinks
            .iter()
            .map(|s| SinkReport {
                name: s.name.clone(),
                delivered: s.delivered.load(Relaxed),
                dead_lettered: s.dead_lettered.load(Relaxed),
                pending: s.pending.load(Relaxed),
                failed: s.failed.load(Relaxed),
            })
            .collect();
        DeliveryReport {
            sinks,
            spooled: m.spool.records.load(Relaxed),
            stale_sinks: spool.map(|s| s.stale_sinks()).unwrap_or_default(),
            rejected_full: m.spool.rejected_full.load(Relaxed),
            transform_failed: m.spool.transform_failed.load(Relaxed),
            events_dropped: m.events.iter().map(|e| e.dropped.load(Relaxed)).sum(),
        }
    }
}

/// Awaits every task not yet awaited. Cancel-safe: a handle is cleared only once its task
/// has been joined, so after a timeout the rest can be awaited again.
async fn join_all(tasks: &mut [Option<tokio::task::JoinHandle<()>>]) {
    for t in tasks.iter_mut() {
        if let Some(h) = t.as_mut() {
            let _ = h.await;
            *t = None;
        }
    }
}

fn spool_writer(
    rx: Receiver<Msg>,
    shared: Arc<Shared>,
    metrics: Arc<Metrics>,
    cfg: DeliveryConfig,
) {
    let mut warned_full = false;
    let max_batch = cfg.commit_batch.max(1);
    let mut closing = false;
    while !closing {
        let Ok(first) = rx.recv() else { break };
        let mut msgs = Vec::new();
        let mut bytes = 0usize;
        let mut next = Some(first);
        while let Some(m) = next.take() {
            match m {
                Msg::Vcon(u, j) => {
                    bytes += j.len();
                    msgs.push((u, j));
                }
                Msg::Close => {
                    closing = true;
                    break;
                }
            }
            if msgs.len() < max_batch && bytes < (8 << 20) {
                next = rx.try_recv().ok();
            }
        }
        if closing && !rx.is_empty() {
            tracing::error!(
                queued = rx.len(),
                "vCons submitted after the delivery was closed"
            );
        }
        metrics.spool.queued.fetch_sub(msgs.len() as u64, Relaxed);
        let mut batch: Vec<(Arc<str>, Bytes)> = Vec::with_capacity(msgs.len());
        for (uuid, json) in msgs {
            match transform::apply_all(&cfg.transforms, json.as_bytes()) {
                Ok(None) => batch.push((uuid, Bytes::from(json.as_bytes().to_vec()))),
                Ok(Some(v)) => batch.push((uuid, Bytes::from(v))),
                Err(why) => {
                    metrics.spool.transform_failed.fetch_add(1, Relaxed);
                    tracing::error!(uuid = %uuid, reason = %why, "transform refused a vCon; dead-lettered");
                    let rec = Record {
                        id: crate::record::RecordId(0),
                        uuid: uuid.clone(),
                        json: Bytes::from(json.as_bytes().to_vec()),
                        spooled_unix_ms: now_unix_ms(),
                    };
                    if let Err(e) = dead_letter(&shared.dead_dir, "_transform", &rec, &why) {
                        tracing::error!(uuid = %uuid, error = %e, "cannot write a dead letter");
                    }
                }
            }
        }
        // The bound: wait for room, or refuse what does not fit.
        let need: u64 = batch.iter().map(|(_, j)| j.len() as u64 + 64).sum();
        loop {
            let used = shared.spool.lock().map(|s| s.bytes()).unwrap_or(0);
            if used + need <= cfg.spool.max_bytes || batch.is_empty() {
                warned_full = false;
                break;
            }
            if !warned_full {
                tracing::error!(
                    used,
                    max = cfg.spool.max_bytes,
                    policy = ?cfg.when_full,
                    "ALARM: spool full (sinks are not keeping up or are down)"
                );
                warned_full = true;
            }
            match cfg.when_full {
                WhenFull::Block => {
                    metrics.spool.full_waits.fetch_add(1, Relaxed);
                    std::thread::sleep(Duration::from_millis(100));
                }
                WhenFull::DropNewest => {
                    for (uuid, _) in &batch {
                        tracing::error!(uuid = %uuid, "spool full: vCon refused (policy drop_newest)");
                    }
                    metrics
                        .spool
                        .rejected_full
                        .fetch_add(batch.len() as u64, Relaxed);
                    batch.clear();
                }
            }
        }
        if batch.is_empty() {
            continue;
        }
        // A disk error must not lose the batch: keep retrying (the queue in front blocks
        // the engine meanwhile, which is the only safe choice for vCons already finished).
        let mut wait = Duration::from_millis(100);
        loop {
            // Stage under the lock, write and fdatasync outside it (sink tasks keep
            // reading meanwhile), then commit under the lock.
            let staged = shared
                .spool
                .lock()
                .map_err(|_| None)
                .and_then(|mut s| s.stage(&batch, now_unix_ms()).map_err(Some));
            let res = staged
                .and_then(|st| st.write().map(|()| st).map_err(Some))
                .and_then(|st| {
                    let mut s = shared.spool.lock().map_err(|_| None)?;
                    let recs = s.commit(st);
                    Ok((recs, s.head().0, s.bytes()))
                });
            match res {
                Ok((recs, head, bytes)) => {
                    metrics.spool.records.fetch_add(recs.len() as u64, Relaxed);
                    metrics.spool.commits.fetch_add(1, Relaxed);
                    metrics.spool.bytes.store(bytes, Relaxed);
                    for s in &metrics.sinks {
                        s.pending.fetch_add(recs.len() as u64, Relaxed);
                    }
                    shared.head.send_replace(head);
                    break;
                }
                Err(None) => return,
                Err(Some(SpoolError::TooLarge(uuid, n))) => {
                    tracing::error!(uuid = %uuid, bytes = n, "vCon too large for the spool; dead-lettered");
                    batch.retain(|(u, j)| {
                        let big = j.len() > crate::spool::MAX_FRAME - 300;
                        if big {
                            let rec = Record {
                                id: crate::record::RecordId(0),
                                uuid: u.clone(),
                                json: j.clone(),
                                spooled_unix_ms: now_unix_ms(),
                            };
                            let _ = dead_letter(&shared.dead_dir, "_spool", &rec, "too large");
                        }
                        !big
                    });
                }
                Err(Some(e)) => {
                    tracing::error!(error = %e, "spool write failed; retrying");
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

/// Writes a dead letter (the exact bytes and the reason) and fsyncs it: after this the
/// spool may forget the record.
pub fn dead_letter(
    dead_dir: &Path,
    sink: &str,
    rec: &Record,
    why: &str,
) -> std::io::Result<PathBuf> {
    let dir = dead_dir.join(sink_file_name(sink));
    std::fs::create_dir_all(&dir)?;
    let safe: String = rec
        .uuid
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    let body = dir.join(format!("{safe}.vcon.json"));
    let reason = dir.join(format!("{safe}.reason.json"));
    for (path, bytes) in [
        (&body, rec.json.to_vec()),
        (
            &reason,
            serde_json::to_vec_pretty(&serde_json::json!({
                "sink": sink,
                "uuid": rec.uuid.as_ref(),
                "record": rec.id.0,
                "reason": why,
                "at_unix_ms": now_unix_ms(),
            }))
            .unwrap_or_default(),
        ),
    ] {
        let tmp = path.with_extension("tmp");
        let f = std::fs::File::create(&tmp)?;
        std::io::Write::write_all(&mut &f, &bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
    }
    std::fs::File::open(&dir)?.sync_all()?;
    Ok(body)
}

async fn sink_loop(
    name: String,
    mut sink: Box<dyn Sink>,
    shared: Arc<Shared>,
    m: Arc<SinkMetrics>,
    retry_cfg: RetryConfig,
    attempt_timeout: Duration,
) {
    let mut retry = Retry::new(retry_cfg);
    let mut head_rx = shared.head.subscribe();
    let mut stop_rx = shared.stop.subscribe();
    let mut cursor = match shared.spool.lock() {
        Ok(s) => s.cursor(&name),
        Err(_) => return,
    };
    let mut down_since: Option<Instant> = None;
    loop {
        let limit = retry.batch_limit(sink.max_batch().max(1));
        let read = match shared.spool.lock() {
            Ok(s) => s.read_for(&name, cursor, limit),
            Err(_) => return,
        };
        let (batch, next) = match read {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(sink = %name, error = %e, "spool read failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if batch.is_empty() {
            if next > cursor {
                if let Ok(mut s) = shared.spool.lock() {
                    if let Err(e) = s.advance(&name, next) {
                        tracing::warn!(sink = %name, error = %e, "cannot save the sink's cursor");
                    }
                }
                cursor = next;
            }
            m.pending.store(0, Relaxed);
            let head = *head_rx.borrow_and_update();
            if cursor.0 >= head && *stop_rx.borrow() != Stop::Running {
                break;
            }
            if cursor.0 < head {
                // More was committed meanwhile; yield so a tight loop can never starve the
                // runtime.
                tokio::task::yield_now().await;
                continue;
            }
            tokio::select! {
                _ = head_rx.changed() => {}
                _ = stop_rx.changed() => {}
            }
            continue;
        }
        if *stop_rx.borrow() == Stop::Abort {
            break;
        }
        let attempt = tokio::select! {
            r = tokio::time::timeout(attempt_timeout, sink.deliver(&batch)) => r,
            _ = wait_abort(&mut stop_rx) => break,
        };
        let error = match attempt {
            Ok(Ok(outcomes)) if outcomes.len() == batch.len() => {
                let now = now_unix_ms();
                for (rec, o) in batch.iter().zip(outcomes) {
                    match o {
                        Outcome::Delivered => {
                            m.delivered.fetch_add(1, Relaxed);
                            m.latency
                                .observe_ms(now.saturating_sub(rec.spooled_unix_ms));
                        }
                        Outcome::Rejected(why) => {
                            m.dead_lettered.fetch_add(1, Relaxed);
                            match dead_letter(&shared.dead_dir, &name, rec, &why) {
                                Ok(p) => {
                                    tracing::warn!(sink = %name, uuid = %rec.uuid, reason = %why, file = %p.display(), "store refused a vCon; dead-lettered")
                                }
                                Err(e) => {
                                    tracing::error!(sink = %name, uuid = %rec.uuid, error = %e, "cannot write a dead letter")
                                }
                            }
                        }
                    }
                }
                if retry.success() {
                    let secs = down_since.take().map_or(0.0, |t| t.elapsed().as_secs_f64());
                    tracing::info!(sink = %name, down_s = secs, "sink recovered; circuit closed");
                }
                m.breaker.store(retry.state() as u8, Relaxed);
                let to = batch
                    .last()
                    .map_or(next, |r| crate::record::RecordId(r.id.0 + 1));
                let to = if to > next { to } else { next };
                if let Ok(mut s) = shared.spool.lock() {
                    if let Err(e) = s.advance(&name, to) {
                        tracing::warn!(sink = %name, error = %e, "cannot save the sink's cursor");
                    }
                    m.pending.store(s.head().0.saturating_sub(to.0), Relaxed);
                    shared.metrics.spool.bytes.store(s.bytes(), Relaxed);
                }
                cursor = to;
                continue;
            }
            Ok(Ok(outcomes)) => format!(
                "sink answered {} outcomes for {} records",
                outcomes.len(),
                batch.len()
            ),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {} s", attempt_timeout.as_secs_f64()),
        };
        m.failed.fetch_add(1, Relaxed);
        m.retried.fetch_add(batch.len() as u64, Relaxed);
        let a = retry.failure();
        m.breaker.store(retry.state() as u8, Relaxed);
        if a.opened {
            down_since = Some(Instant::now());
            tracing::warn!(sink = %name, error = %error, failures = retry.failures(), "sink unavailable; circuit open, probing with one record");
        } else {
            tracing::debug!(sink = %name, error = %error, wait_ms = a.wait.as_millis() as u64, "delivery failed; retrying");
        }
        tokio::select! {
            _ = tokio::time::sleep(a.wait) => {}
            _ = wait_abort(&mut stop_rx) => break,
        }
        retry.ready();
    }
    sink.close().await;
}

async fn wait_abort(rx: &mut watch::Receiver<Stop>) {
    loop {
        if *rx.borrow_and_update() == Stop::Abort {
            return;
        }
        if rx.changed().await.is_err() {
            // The sender is gone: nothing will ever stop us, so never resolve.
            std::future::pending::<()>().await;
        }
    }
}

async fn event_loop(
    name: String,
    mut sink: Box<dyn EventSink>,
    q: Arc<EventQueue>,
    shared: Arc<Shared>,
    retry_cfg: RetryConfig,
    attempt_timeout: Duration,
) {
    let mut stop_rx = shared.stop.subscribe();
    let mut retry = Retry::new(retry_cfg);
    loop {
        let batch: Vec<Arc<VconEvent>> = match q.q.lock() {
            Ok(mut g) => {
                let n = g.len().min(sink.max_batch().max(1));
                let b = g.drain(..n).collect();
                q.metrics.queued.store(g.len() as u64, Relaxed);
                b
            }
            Err(_) => return,
        };
        if batch.is_empty() {
            if *stop_rx.borrow_and_update() != Stop::Running {
                break;
            }
            tokio::select! {
                _ = q.notify.notified() => {}
                _ = stop_rx.changed() => {}
            }
            continue;
        }
        let r = tokio::select! {
            r = tokio::time::timeout(attempt_timeout, sink.publish(&batch)) => r,
            _ = wait_abort(&mut stop_rx) => break,
        };
        match r {
            Ok(Ok(())) => {
                q.metrics.published.fetch_add(batch.len() as u64, Relaxed);
                retry.success();
            }
            other => {
                // Best-effort: the batch is dropped (counted); back off so a dead store
                // is not hammered, while newer events queue (drop-oldest).
                q.metrics.failed.fetch_add(1, Relaxed);
                q.metrics.dropped.fetch_add(batch.len() as u64, Relaxed);
                let why = match other {
                    Ok(Err(e)) => e.to_string(),
                    _ => "timeout".into(),
                };
                let a = retry.failure();
                if a.opened {
                    tracing::warn!(sink = %name, error = %why, "event sink unavailable; dropping events while it is down");
                }
                tokio::select! {
                    _ = tokio::time::sleep(a.wait) => {}
                    _ = wait_abort(&mut stop_rx) => break,
                }
                retry.ready();
            }
        }
    }
}
