//! `vcontap replay`: capture files → wire decoder → router → engine shard(s) → WAV segments,
//! vCon files and the event stream.
//!
//! With `--shards 1` (the default) everything runs on the calling thread, which keeps the
//! event order fully deterministic. With more shards the reading thread decodes and routes
//! (see `vcontap_engine::Router`) and each shard runs on its own OS thread:
//!
//! | queue | bound | when full |
//! |---|---|---|
//! | reader → shard | [`SHARD_QUEUE_BATCHES`] batches of [`BATCH_DATAGRAMS`] | **block**: a file replay slows down, nothing is lost |
//! | shards → event writer | [`EVENT_QUEUE`] events | **block**: the writer is the durable sink |

use std::fs::File;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use crossbeam_channel::{bounded, Receiver, Sender};
use vcontap_engine::{
    Engine, EngineConfig, EngineStats, Output, RecordMode, Router, SegmentId, StoredSegment,
    VconEvent,
};
use vcontap_wire::{
    Datagram, DecodeStats, Decoder, DecoderConfig, PcapReader, Timestamp, Transport,
};

use crate::media_store::{Closed, MediaStore};
use crate::progress::Progress;
use crate::sink::FileSink;
use crate::{Pace, RecordArg, ReplayArgs};

/// Datagrams per batch handed to a shard thread.
const BATCH_DATAGRAMS: usize = 512;
/// Batches queued per shard.
const SHARD_QUEUE_BATCHES: usize = 64;
/// Events queued for the writer.
const EVENT_QUEUE: usize = 4096;
/// Largest shard count (uuids carry the shard in 3 bits).
const MAX_SHARDS: usize = 8;

/// How many drains pass between polls of the media writer's answers.
const REPLY_POLL: u32 = 64;
/// Media messages queued from a shard to its writer thread.
const MEDIA_QUEUE: usize = 1024;

/// Work for a shard's media writer thread.
enum MediaMsg {
    Open {
        segment: SegmentId,
        uuid: Arc<str>,
        index: u32,
        rate: u32,
        channels: u16,
    },
    Audio {
        segment: SegmentId,
        samples: Vec<i16>,
    },
    Close {
        segment: SegmentId,
    },
}

/// A store's answer: where the closed segment is, or why it could not be stored.
type Stored = (SegmentId, std::result::Result<StoredSegment, String>);

/// One engine shard. Its recordings are written and finalized on a writer thread and hashed
/// (SHA-512 is a third of the CPU cost of recording) on a hasher thread, so the engine
/// thread only decodes and mixes:
///
/// | queue | bound | when full |
/// |---|---|---|
/// | shard → media writer | [`MEDIA_QUEUE`] messages | block, while still collecting the answers (no deadlock) |
/// | media writer → hasher | [`MEDIA_QUEUE`] closed files | block (the hasher never waits on anything) |
/// | hasher → shard | one answer per closed segment | never blocks: at most one answer per open segment exists |
struct Shard {
    engine: Engine,
    media_tx: Option<Sender<MediaMsg>>,
    stored_rx: Receiver<Stored>,
    /// Answers received while blocked on a full media queue, handled at the next drain.
    early: std::collections::VecDeque<Stored>,
    /// Segments closed and not yet answered.
    in_flight: usize,
    /// Drains so far (answers are polled every [`REPLY_POLL`]).
    polls: u32,
    /// Set at the end of input: poll answers on every drain.
    flushing: bool,
    writer: Option<std::thread::JoinHandle<(u64, u64)>>,
}

impl Shard {
    fn new(cfg: EngineConfig, media_dir: &Path, base_url: Option<&str>) -> Result<Self> {
        let mut store = MediaStore::new(media_dir, base_url)?;
        let (media_tx, media_rx) = bounded::<MediaMsg>(MEDIA_QUEUE);
        // Unbounded in type only: the writer sends exactly one answer per Close, and the
        // number of closes in flight is bounded by the open segments (one per call).
        let (stored_tx, stored_rx) = crossbeam_channel::unbounded::<Stored>();
        // Writer thread: WAV files. Hasher thread: SHA-512 of each closed file. Separate so
        // the two most expensive I/O steps of recording run in parallel with each other and
        // with the engine.
        let (hash_tx, hash_rx) =
            bounded::<(SegmentId, std::result::Result<Closed, String>)>(MEDIA_QUEUE);
        let name = format!("vcontap-hash-{}", cfg.shard);
        let hasher = std::thread::Builder::new().name(name).spawn(move || {
            for (segment, closed) in hash_rx {
                let res = closed.and_then(|c| c.hash().map_err(|e| e.to_string()));
                if stored_tx.send((segment, res)).is_err() {
                    break;
                }
            }
        })?;
        let name = format!("vcontap-media-{}", cfg.shard);
        let writer = std::thread::Builder::new().name(name).spawn(move || {
            let mut failed = std::collections::HashSet::new();
            for m in media_rx {
                match m {
                    MediaMsg::Open {
                        segment,
                        uuid,
                        index,
                        rate,
                        channels,
                    } => {
                        if let Err(e) = store.open(segment, &uuid, index, rate, channels) {
                            tracing::warn!(error = %e, "Cannot open a recording segment.");
                            failed.insert(segment);
                        }
                    }
                    MediaMsg::Audio { segment, samples } => {
                        if let Err(e) = store.write(segment, &samples) {
                            tracing::warn!(error = %e, "Cannot write a recording segment.");
                            failed.insert(segment);
                        }
                    }
                    MediaMsg::Close { segment } => {
                        let res = if failed.remove(&segment) {
                            Err("write failed".to_string())
                        } else {
                            store.finalize(segment).map_err(|e| e.to_string())
                        };
                        if hash_tx.send((segment, res)).is_err() {
                            break;
                        }
                    }
                }
            }
            drop(hash_tx);
            let _ = hasher.join();
            (store.written, store.bytes)
        })?;
        Ok(Shard {
            engine: Engine::new(cfg),
            media_tx: Some(media_tx),
            stored_rx,
            early: std::collections::VecDeque::new(),
            in_flight: 0,
            polls: 0,
            flushing: false,
            writer: Some(writer),
        })
    }

    fn send_media(&mut self, msg: MediaMsg) -> Result<()> {
        let tx = self.media_tx.as_ref().context("media writer closed")?;
        let mut msg = msg;
        loop {
            match tx.try_send(msg) {
                Ok(()) => return Ok(()),
                Err(crossbeam_channel::TrySendError::Full(m)) => {
                    msg = m;
                    // Keep the writer's answers flowing while we wait for room.
                    crossbeam_channel::select! {
                        recv(self.stored_rx) -> r => {
                            if let Ok(x) = r {
                                self.early.push_back(x);
                            }
                        }
                        default(Duration::from_millis(5)) => {}
                    }
                }
                Err(crossbeam_channel::TrySendError::Disconnected(_)) => {
                    bail!("media writer stopped")
                }
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
    fn drain(&mut self, emit: &mut dyn FnMut(Arc<VconEvent>) -> Result<()>) -> Result<()> {
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
                    } => self.send_media(MediaMsg::Open {
                        segment,
                        uuid,
                        index,
                        rate,
                        channels,
                    })?,
                    Output::Audio { segment, samples } => {
                        self.send_media(MediaMsg::Audio { segment, samples })?
                    }
                    Output::SegmentClosed { segment } => {
                        self.in_flight += 1;
                        self.send_media(MediaMsg::Close { segment })?
                    }
                }
            }
            // Answers are polled every REPLY_POLL drains: a channel poll per packet was 5%
            // of the engine thread while segments were queued behind audio.
            self.polls = self.polls.wrapping_add(1);
            let next = match self.early.pop_front() {
                Some(x) => Some(x),
                None if self.in_flight > 0 && (self.polls % REPLY_POLL == 0 || self.flushing) => {
                    self.stored_rx.try_recv().ok()
                }
                None => None,
            };
            match next {
                Some(x) => self.stored(x),
                None => return Ok(()),
            }
        }
    }

    /// Waits for every segment in flight and drains until nothing is left.
    fn flush(&mut self, emit: &mut dyn FnMut(Arc<VconEvent>) -> Result<()>) -> Result<()> {
        self.flushing = true;
        self.drain(emit)?;
        while self.in_flight > 0 {
            let x = self
                .stored_rx
                .recv()
                .map_err(|_| anyhow::anyhow!("media writer stopped"))?;
            self.stored(x);
            self.drain(emit)?;
        }
        Ok(())
    }

    /// Stops the writer; returns (segments written, audio bytes).
    fn close(&mut self) -> Result<(u64, u64)> {
        self.media_tx = None;
        match self.writer.take() {
            Some(w) => w
                .join()
                .map_err(|_| anyhow::anyhow!("media writer panicked")),
            None => Ok((0, 0)),
        }
    }
}

/// One datagram's metadata in a [`Batch`]; its payload is `buf[range]`.
type BatchItem = (
    Timestamp,
    SocketAddr,
    SocketAddr,
    Transport,
    Option<u16>,
    Range<usize>,
);

/// Datagrams with owned payloads, packed into one buffer.
#[derive(Default)]
struct Batch {
    buf: Vec<u8>,
    items: Vec<BatchItem>,
    now: Timestamp,
}

enum ShardMsg {
    Batch(Batch),
    Finish(Timestamp),
}

fn engine_config(a: &ReplayArgs, shard: u16) -> EngineConfig {
    EngineConfig {
        record: match a.record {
            RecordArg::None => RecordMode::None,
            RecordArg::Stereo => RecordMode::Stereo,
            RecordArg::Mono => RecordMode::Mono,
        },
        segment_seconds: a.segment_seconds,
        host: a.host.clone().unwrap_or_else(host_name),
        shard,
        ..EngineConfig::default()
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

struct Totals {
    files: usize,
    packets: u64,
    decode: DecodeStats,
    engine: EngineStats,
    vcons: u64,
    events: u64,
    segments: u64,
    audio_bytes: u64,
    elapsed: Duration,
}

/// Runs `vcontap replay`.
pub fn run(a: ReplayArgs) -> Result<()> {
    if a.shards == 0 || a.shards > MAX_SHARDS {
        bail!("--shards must be between 1 and {MAX_SHARDS}");
    }
    if let Some(u) = &a.media_base_url {
        if !u.contains("://") {
            bail!("--media-base-url must be an absolute URL with a scheme (e.g. https://…)");
        }
    }
    for c in &a.captures {
        if !c.is_file() {
            bail!("capture {} does not exist or is not a file", c.display());
        }
    }
    let totals = if a.shards == 1 {
        run_single(&a)?
    } else {
        run_sharded(&a)?
    };
    print_summary(&totals);
    Ok(())
}

fn new_decoder() -> Decoder {
    Decoder::new(DecoderConfig {
        tcp_framer: Some(vcontap_sip::frame),
        ..DecoderConfig::default()
    })
}

/// Reads every capture, calling `f` for each decoded datagram and `tick` after each packet.
fn read_all(
    a: &ReplayArgs,
    decoder: &mut Decoder,
    mut f: impl FnMut(&Datagram<'_>) -> Result<()>,
    mut tick: impl FnMut(Timestamp, u64) -> Result<()>,
) -> Result<(u64, Timestamp)> {
    let mut packets = 0u64;
    let mut last = Timestamp(0);
    let mut pace: Option<(Timestamp, Instant)> = None;
    for path in &a.captures {
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let mut reader = match PcapReader::new(file) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "Skipping a file that is not a capture.");
                continue;
            }
        };
        let mut err = None;
        loop {
            let pkt = match reader.next_packet() {
                Ok(Some(p)) => p,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "Capture ends with an unreadable record.");
                    break;
                }
            };
            packets += 1;
            last = last.max(pkt.ts);
            if a.pace == Pace::Realtime {
                let (t0, w0) = *pace.get_or_insert((pkt.ts, Instant::now()));
                let due =
                    Duration::from_nanos(pkt.ts.nanos().saturating_sub(t0.nanos()).max(0) as u64);
                let el = w0.elapsed();
                if due > el {
                    std::thread::sleep(due - el);
                }
            }
            decoder.decode(&pkt, &mut |d| {
                if err.is_none() {
                    if let Err(e) = f(&d) {
                        err = Some(e);
                    }
                }
            });
            if let Some(e) = err.take() {
                return Err(e);
            }
            tick(pkt.ts, packets)?;
        }
    }
    Ok((packets, last))
}

fn run_single(a: &ReplayArgs) -> Result<Totals> {
    let started = Instant::now();
    let mut shard = Shard::new(
        engine_config(a, 0),
        &a.out.join("media"),
        a.media_base_url.as_deref(),
    )?;
    let mut sink = FileSink::new(&a.out, a.events.as_deref())?;
    sink.flush_each = a.pace == Pace::Realtime;
    let mut decoder = new_decoder();
    let progress = Progress::new(a.quiet);
    let mut emit = |e: Arc<VconEvent>| sink.handle(&e);
    let shard_ref = std::cell::RefCell::new(&mut shard);
    let emit_ref = std::cell::RefCell::new(&mut emit);
    let (packets, last) = read_all(
        a,
        &mut decoder,
        |d| {
            let mut s = shard_ref.borrow_mut();
            s.engine.handle_datagram(d);
            s.drain(&mut **emit_ref.borrow_mut())
        },
        |ts, n| {
            let mut s = shard_ref.borrow_mut();
            if ts >= s.engine.poll_timeout() {
                s.engine.handle_timeout(ts);
                s.drain(&mut **emit_ref.borrow_mut())?;
            }
            if n % 65_536 == 0 {
                progress.update(n, s.engine.open_calls(), s.engine.stats().calls_finished);
            }
            Ok(())
        },
    )?;
    let shard = shard_ref.into_inner();
    shard.engine.finish_all(last);
    shard.flush(&mut **emit_ref.borrow_mut())?;
    let (segments, audio_bytes) = shard.close()?;
    progress.finish();
    sink.flush()?;
    Ok(Totals {
        files: a.captures.len(),
        packets,
        decode: decoder.stats().clone(),
        engine: shard.engine.stats().clone(),
        vcons: sink.vcons_written,
        events: sink.events_written,
        segments,
        audio_bytes,
        elapsed: started.elapsed(),
    })
}

fn run_sharded(a: &ReplayArgs) -> Result<Totals> {
    let started = Instant::now();
    let (ev_tx, ev_rx) = bounded::<Arc<VconEvent>>(EVENT_QUEUE);
    let mut sink = FileSink::new(&a.out, a.events.as_deref())?;
    sink.flush_each = a.pace == Pace::Realtime;
    // Calls created / finished, counted by the writer for the progress line.
    let counts = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let counts_w = counts.clone();
    let writer = std::thread::Builder::new()
        .name("vcontap-writer".into())
        .spawn(move || -> Result<FileSink> {
            for e in ev_rx {
                match e.kind {
                    vcontap_engine::EventKind::Created => {
                        counts_w[0].fetch_add(1, Ordering::Relaxed)
                    }
                    vcontap_engine::EventKind::Finished => {
                        counts_w[1].fetch_add(1, Ordering::Relaxed)
                    }
                    _ => 0,
                };
                sink.handle(&e)?;
            }
            sink.flush()?;
            Ok(sink)
        })?;
    let mut txs: Vec<Sender<ShardMsg>> = Vec::new();
    let mut workers = Vec::new();
    for i in 0..a.shards {
        let (tx, rx) = bounded::<ShardMsg>(SHARD_QUEUE_BATCHES);
        let shard = Shard::new(
            engine_config(a, i as u16),
            &a.out.join("media"),
            a.media_base_url.as_deref(),
        )?;
        let ev_tx = ev_tx.clone();
        workers.push(
            std::thread::Builder::new()
                .name(format!("vcontap-shard-{i}"))
                .spawn(move || shard_loop(shard, rx, ev_tx))?,
        );
        txs.push(tx);
    }
    drop(ev_tx);
    let mut router = Router::new(a.shards);
    let mut decoder = new_decoder();
    let progress = Progress::new(a.quiet);
    let batches =
        std::cell::RefCell::new((0..a.shards).map(|_| Batch::default()).collect::<Vec<_>>());
    let send = |i: usize, b: &mut Batch, now: Timestamp| -> Result<()> {
        b.now = now;
        let full = std::mem::take(b);
        txs[i]
            .send(ShardMsg::Batch(full))
            .map_err(|_| anyhow::anyhow!("engine shard {i} stopped"))
    };
    let (packets, last) = read_all(
        a,
        &mut decoder,
        |d| {
            let i = router.route(d);
            let mut bs = batches.borrow_mut();
            let b = &mut bs[i];
            let start = b.buf.len();
            b.buf.extend_from_slice(d.payload);
            b.items
                .push((d.ts, d.src, d.dst, d.transport, d.vlan, start..b.buf.len()));
            if b.items.len() >= BATCH_DATAGRAMS {
                send(i, b, d.ts)?;
            }
            Ok(())
        },
        |ts, n| {
            // Every shard must see time pass even when it gets no packets (timeouts).
            if n % 8192 == 0 {
                let mut bs = batches.borrow_mut();
                for (i, b) in bs.iter_mut().enumerate() {
                    send(i, b, ts)?;
                }
                let created = counts[0].load(Ordering::Relaxed);
                let finished = counts[1].load(Ordering::Relaxed);
                progress.update(n, created.saturating_sub(finished) as usize, finished);
            }
            Ok(())
        },
    )?;
    let mut bs = batches.into_inner();
    for (i, b) in bs.iter_mut().enumerate() {
        send(i, b, last)?;
        txs[i]
            .send(ShardMsg::Finish(last))
            .map_err(|_| anyhow::anyhow!("engine shard {i} stopped"))?;
    }
    drop(txs);
    let mut engine = EngineStats::default();
    let (mut segments, mut audio_bytes) = (0, 0);
    for w in workers {
        let (st, seg, ab) = w
            .join()
            .map_err(|_| anyhow::anyhow!("engine shard panicked"))??;
        engine.merge(&st);
        segments += seg;
        audio_bytes += ab;
    }
    let sink = writer
        .join()
        .map_err(|_| anyhow::anyhow!("writer panicked"))??;
    progress.finish();
    Ok(Totals {
        files: a.captures.len(),
        packets,
        decode: decoder.stats().clone(),
        engine,
        vcons: sink.vcons_written,
        events: sink.events_written,
        segments,
        audio_bytes,
        elapsed: started.elapsed(),
    })
}

fn shard_loop(
    mut shard: Shard,
    rx: Receiver<ShardMsg>,
    ev: Sender<Arc<VconEvent>>,
) -> Result<(EngineStats, u64, u64)> {
    let mut emit = |e: Arc<VconEvent>| {
        ev.send(e)
            .map_err(|_| anyhow::anyhow!("event writer stopped"))
    };
    for msg in rx {
        match msg {
            ShardMsg::Batch(b) => {
                for (ts, src, dst, transport, vlan, r) in &b.items {
                    let d = Datagram {
                        ts: *ts,
                        src: *src,
                        dst: *dst,
                        transport: *transport,
                        vlan: *vlan,
                        payload: b.buf.get(r.clone()).unwrap_or(&[]),
                    };
                    shard.engine.handle_datagram(&d);
                    shard.drain(&mut emit)?;
                }
                shard.engine.handle_timeout(b.now);
                shard.drain(&mut emit)?;
            }
            ShardMsg::Finish(ts) => {
                shard.engine.finish_all(ts);
                shard.flush(&mut emit)?;
            }
        }
    }
    let (written, bytes) = shard.close()?;
    Ok((shard.engine.stats().clone(), written, bytes))
}

fn print_summary(t: &Totals) {
    let secs = t.elapsed.as_secs_f64().max(1e-9);
    eprintln!("replay summary");
    eprintln!("  files               {}", t.files);
    eprintln!("  packets read        {}", t.packets);
    eprintln!("  datagrams decoded   {}", t.decode.datagrams);
    for (r, n) in t.decode.nonzero_skips() {
        eprintln!("  skipped {:<20} {}", r.as_str(), n);
    }
    let e = &t.engine;
    eprintln!(
        "  sip messages        {} ({} unparsable, {} outside calls)",
        e.sip_messages, e.sip_parse_errors, e.sip_non_call
    );
    eprintln!(
        "  rtp packets         {} in calls, {} orphan in {} flows",
        e.rtp_packets, e.rtp_orphan_packets, e.orphan_flows
    );
    eprintln!("  rtcp packets        {}", e.rtcp_packets);
    eprintln!(
        "  calls               {} ({} evicted)",
        e.calls, e.calls_evicted
    );
    eprintln!("  streams             {}", e.streams);
    eprintln!("  vcons written       {}", t.vcons);
    eprintln!("  events written      {}", t.events);
    eprintln!(
        "  recording segments  {} ({:.1} MB)",
        t.segments,
        t.audio_bytes as f64 / 1e6
    );
    eprintln!(
        "  elapsed             {:.3} s ({:.0} packets/s, {:.0} calls/s)",
        secs,
        t.packets as f64 / secs,
        e.calls as f64 / secs
    );
    if let Some(kb) = peak_rss_kib() {
        eprintln!("  peak memory         {:.1} MiB", kb as f64 / 1024.0);
    }
}

/// Peak resident set size of this process (Linux `VmHWM`), if available.
fn peak_rss_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
