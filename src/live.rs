//! `vcontap capture`, `vcontap run` and `vcontap siprec`: the daemon. Live sources
//! (AF_PACKET rings, a HEP listener, the SIPREC server of `src/siprec.rs`) feed one [`Tap`]
//! on the monotonic clock with the live queue policy (drop-and-count, so a slow disk never
//! stalls the ring), finished vCons go through the
//! delivery core with the spool's `drop_newest` policy, and `/metrics`, `/healthz`,
//! `/readyz` are served on `--listen`. SIGTERM/SIGINT stop capture, finish every open call
//! with reason `shutdown`, drain the sinks and exit 0; SIGHUP is logged (logs go to stderr /
//! the journal, so there is no file to reopen; configuration changes need a restart).
//!
//! Wiring only: the loop below is the live counterpart of `vcontap_pipeline::run`, polling
//! every source in turn and running timers when all are idle, so a silent interface still
//! ends calls on time.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use vcontap_engine::{EngineConfig, FinishReason, RecordMode};
use vcontap_pipeline::{Clock, PipelineError, Tap, TapConfig};
use vcontap_sinks::WhenFull;

use crate::api::ApiState;
use crate::notify::Notifier;
use crate::outputs::{EventOutputs, OutputArgs, Outputs};
use crate::sink::EventsFile;
use crate::RecordArg;

/// Longest the loop sleeps when every source is idle: it bounds the packet → event latency
/// together with the ring's block timeout (a 10 ms sleep here put most live events 0–10 ms
/// late), and costs ~1,000 wake-ups a second on an idle link.
const IDLE_WAIT: Duration = Duration::from_millis(1);

/// Ring block size, KiB. Small blocks with a short timeout keep latency low without
/// shrinking the ring's time coverage: a block retired by its timeout wastes only its
/// unfilled part, and at 64 MiB a ring still holds 512 blocks (≥1 s even if every block
/// retires nearly empty every 2 ms).
pub const DEFAULT_BLOCK_KIB: u32 = 128;
/// Ring block retire timeout, ms (`tp_retire_blk_tov`).
pub const DEFAULT_BLOCK_TIMEOUT_MS: u32 = 2;
/// Slot size of a frame ring (`--frame-ring`): an MTU-sized Ethernet frame with room for
/// VLAN tags and the V2 header, 16 slots per 32 KiB (a 64 MiB ring holds 32,768 frames).
pub const DEFAULT_FRAME_SIZE: u32 = 2048;
/// With a single source that can sleep until input arrives (poll(2) on the rings, the
/// HEP queue), the longest such wait: short enough for the watchdog, the periodic log and
/// the stop flag.
const SOURCE_WAIT: Duration = Duration::from_millis(20);

/// Everything the daemon needs, from the command line (`capture`) or a file (`run`).
#[derive(Debug, Clone)]
pub struct LiveSettings {
    pub interfaces: Vec<String>,
    pub filter: Option<String>,
    pub rings: u32,
    pub ring_mib: u32,
    pub block_kib: u32,
    pub block_timeout_ms: u32,
    /// TPACKET_V2 frame ring with `frame_size`-byte slots instead of V3 blocks.
    pub frame_ring: bool,
    pub frame_size: u32,
    pub snaplen: u32,
    pub promiscuous: bool,
    pub hep_listen: Option<SocketAddr>,
    pub hep_auth_key: Option<String>,
    pub api: crate::live_api::ApiSettings,
    pub out: PathBuf,
    pub events: Option<PathBuf>,
    pub record: RecordArg,
    pub segment_seconds: u32,
    /// `--quality-interval` / `[engine] quality_interval_s` (`None`: the live default).
    pub quality_interval_s: Option<u32>,
    pub shards: usize,
    pub host: Option<String>,
    pub media_base_url: Option<String>,
    pub outputs: OutputArgs,
    /// The SIPREC recording server (`vcontap siprec`, `[siprec]`), another input.
    pub siprec: Option<crate::siprec::SiprecSettings>,
}

/// One live input, polled by the loop.
pub trait LiveSource {
    /// Hands what arrived (at most `max` items) to the Tap; returns how many.
    fn poll(
        &mut self,
        tap: &mut Tap,
        clock: &mut Clock,
        max: usize,
    ) -> Result<usize, PipelineError>;
    /// Appends this source's metric families.
    fn metrics(&self) -> crate::api::Render;
    /// A one-line status for the periodic log and systemd's STATUS=.
    fn status(&self) -> String;
    /// Sleeps until input may be ready or `timeout` passes. The default sleeps; sources
    /// that can be woken by their input (rings: poll(2); HEP: its queue) override it, so
    /// a lone source hands a frame to the engine as soon as the kernel has it.
    fn wait(&mut self, timeout: Duration) {
        std::thread::sleep(timeout);
    }
    /// SIGTERM: start ending what the source holds open (the SIPREC server sends a BYE
    /// for every session). The loop then keeps polling until [`LiveSource::settled`].
    fn begin_shutdown(&mut self, _tap: &mut Tap, _clock: &mut Clock) -> Result<(), PipelineError> {
        Ok(())
    }
    /// After [`LiveSource::begin_shutdown`]: true once nothing more needs polling.
    fn settled(&self) -> bool {
        true
    }
}

fn engine_config(s: &LiveSettings) -> EngineConfig {
    EngineConfig {
        record: match s.record {
            RecordArg::None => RecordMode::None,
            RecordArg::Stereo => RecordMode::Stereo,
            RecordArg::Mono => RecordMode::Mono,
        },
        segment_seconds: s.segment_seconds,
        host: s.host.clone().unwrap_or_else(crate::replay::host_name),
        // `None` lets `TapConfig::live` apply the live default.
        quality_interval_ms: s.quality_interval_s.map(|n| i64::from(n) * 1000),
        ..EngineConfig::default()
    }
}

/// A frame ring's slot size: the V2 header and a minimal frame fit, frames stay 16-aligned,
/// and it stays below the largest block.
pub fn frame_size_ok(n: u32) -> bool {
    (256..=65536).contains(&n) && n.is_multiple_of(16)
}

/// Opens the sources the settings name.
fn open_sources(s: &LiveSettings) -> Result<Vec<Box<dyn LiveSource>>> {
    let mut v: Vec<Box<dyn LiveSource>> = Vec::new();
    v.extend(crate::sources::open(s)?);
    if v.is_empty() && s.siprec.is_none() {
        bail!("nothing to listen to: give --interface IF and/or --hep-listen ADDR (or [siprec])");
    }
    Ok(v)
}

/// Runs the daemon until SIGTERM/SIGINT.
pub fn run(s: LiveSettings) -> Result<()> {
    if !s.block_kib.is_power_of_two()
        || !(64..=65536).contains(&s.block_kib)
        || u64::from(s.block_kib) > u64::from(s.ring_mib.max(1)) * 1024
    {
        bail!(
            "--block-kib {}: must be a power of two from 64 to 65536, at most --ring-mib × 1024",
            s.block_kib
        );
    }
    if s.frame_ring && !frame_size_ok(s.frame_size) {
        bail!(
            "--frame-size {}: must be a multiple of 16 from 256 to 65536",
            s.frame_size
        );
    }
    if !(1..=1000).contains(&s.block_timeout_ms) {
        bail!(
            "--block-timeout-ms {}: must be 1 to 1000",
            s.block_timeout_ms
        );
    }
    if s.shards == 0 || s.shards > vcontap_pipeline::tap::MAX_SHARDS {
        bail!(
            "--shards must be between 1 and {}",
            vcontap_pipeline::tap::MAX_SHARDS
        );
    }
    s.api.check()?;
    crate::web::WebSlots::global().set_tokens(&s.api.tokens);
    let notifier = Notifier::from_env();
    let outputs = Outputs::start(Some(&s.out), &s.outputs, WhenFull::DropNewest)?;
    let rt = outputs.runtime_handle();
    let api = ApiState::new(outputs.delivery.metrics().clone());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // Only with --listen: without a server nobody could read what the hub keeps.
    let hub = s
        .api
        .listen
        .map(|_| crate::live_api::open_hub(&s.api, &s.out))
        .transpose()?;
    if let (Some(addr), Some(hub)) = (s.api.listen, &hub) {
        let live = crate::live_api::LiveApi::new(hub.clone(), &s.api.tokens, Some(s.out.clone()));
        let local = crate::api::serve(
            &rt,
            addr,
            api.clone(),
            Some(live),
            s.api.tls()?,
            stop_rx.clone(),
        )
        .with_context(|| format!("--listen {addr}"))?;
        if s.api.tokens.is_empty() {
            tracing::info!(%local, "serving the API on loopback only (no API token configured)");
        } else {
            tracing::info!(%local, "serving the API (token required)");
        }
    }
    let handler_hub = hub.clone();
    // Signals: the first SIGTERM/SIGINT stops capture (a second one while draining is
    // ignored: the drain has its own deadline).
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        let stop_tx = stop_tx.clone();
        rt.spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
                signal(SignalKind::hangup()),
            ) else {
                tracing::error!("cannot install signal handlers");
                return;
            };
            loop {
                tokio::select! {
                    _ = term.recv() => { tracing::info!("SIGTERM: stopping"); break; }
                    _ = int.recv() => { tracing::info!("SIGINT: stopping"); break; }
                    _ = hup.recv() => {
                        tracing::info!("SIGHUP: logs go to stderr (nothing to reopen); configuration changes need a restart");
                    }
                }
            }
            stop.store(true, Ordering::SeqCst);
            stop_tx.send_replace(true);
        });
    }
    let events = match &s.events {
        Some(p) => {
            let mut f = EventsFile::create(p)?;
            f.flush_each = true;
            Some(f)
        }
        None => None,
    };
    let events = Arc::new(Mutex::new(events));
    let handler_events = events.clone();
    let delivery = outputs.delivery.handle();
    let latency = api.clone();
    let mut cfg = TapConfig::live(engine_config(&s));
    cfg.shards = s.shards;
    if s.record != RecordArg::None {
        cfg.media = Some(outputs.recordings(&s.outputs, &s.out, s.media_base_url.as_deref())?);
    }
    let audio_tee = s
        .api
        .listen
        .and_then(|_| crate::web::tap_media(&mut cfg.media, &s.out.join("media")));
    let mut tap = Tap::new(
        cfg,
        EventOutputs {
            latency: Some(latency),
            audio_tee,
            hub: handler_hub,
            events: handler_events,
            delivery,
        }
        .handler(),
    )?;
    *api.tap
        .lock()
        .map_err(|_| anyhow::anyhow!("api state poisoned"))? = Some(tap.counters());
    let mut clock = Clock::monotonic();
    let mut sources = open_sources(&s)?;
    if let Some(sr) = &s.siprec {
        // After the Tap, so a SIPREC session never arrives before there is one to open.
        sources.push(Box::new(crate::siprec::open(
            sr,
            rt.clone(),
            clock.clone(),
        )?));
    }
    if let Ok(mut extra) = api.extra.lock() {
        for src in &sources {
            extra.push(src.metrics());
        }
    }
    api.ready.store(true, Ordering::SeqCst);
    let status = sources
        .iter()
        .map(|x| x.status())
        .collect::<Vec<_>>()
        .join("; ");
    tracing::info!(sources = %status, "capturing");
    notifier.send(&format!("READY=1\nSTATUS={status}"));

    let mut last_watchdog = Instant::now();
    let mut last_log = Instant::now();
    let watchdog = notifier.watchdog_interval();
    while !stop.load(Ordering::Relaxed) {
        let mut got = 0;
        for src in sources.iter_mut() {
            got += src.poll(&mut tap, &mut clock, vcontap_pipeline::source::BURST)?;
        }
        if got == 0 {
            tap.publish_counters();
            tap.flush()?;
            let now = clock.now();
            if now >= tap.poll_timeout() {
                tap.handle_timeout(now)?;
            }
            let until = tap
                .poll_timeout()
                .nanos()
                .saturating_sub(clock.now().nanos());
            let until = Duration::from_nanos(u64::try_from(until).unwrap_or(0));
            match sources.as_mut_slice() {
                [one] => one.wait(until.min(SOURCE_WAIT)),
                _ => std::thread::sleep(until.min(IDLE_WAIT)),
            }
        }
        api.beat();
        // The watchdog is fed from the loop itself: a wedged loop stops feeding it.
        if let Some(w) = watchdog {
            if last_watchdog.elapsed() >= w {
                notifier.send("WATCHDOG=1");
                last_watchdog = Instant::now();
            }
        }
        if last_log.elapsed() >= Duration::from_secs(60) {
            let c = tap.counters();
            let status: Vec<String> = sources.iter().map(|x| x.status()).collect();
            tracing::info!(
                packets = c.packets.load(Ordering::Relaxed),
                open_calls = c.open_calls(),
                finished = c.calls_finished.load(Ordering::Relaxed),
                sources = %status.join("; "),
                "status"
            );
            notifier.send(&format!("STATUS={}", status.join("; ")));
            last_log = Instant::now();
        }
    }
    notifier.send("STOPPING=1\nSTATUS=finishing open calls and draining the sinks");
    api.ready.store(false, Ordering::SeqCst);
    // Sources with something to end (SIPREC sessions: BYE) get their own bounded time.
    for src in sources.iter_mut() {
        src.begin_shutdown(&mut tap, &mut clock)?;
    }
    while !sources.iter().all(|x| x.settled()) {
        let mut got = 0;
        for src in sources.iter_mut() {
            got += src.poll(&mut tap, &mut clock, vcontap_pipeline::source::BURST)?;
        }
        if got == 0 {
            std::thread::sleep(IDLE_WAIT);
        }
    }
    drop(sources);
    let totals = tap.finish_because(clock.now(), FinishReason::Shutdown)?;
    if let Some(f) = events
        .lock()
        .map_err(|_| anyhow::anyhow!("events file poisoned"))?
        .as_mut()
    {
        f.flush()?;
    }
    if let Some(h) = &hub {
        h.close();
    }
    let spool_dir = outputs.spool_dir.clone();
    let report = outputs.finish();
    stop_tx.send_replace(true);
    eprintln!(
        "vcontap stopped: {} packets, {} calls",
        totals.packets, totals.engine.calls
    );
    crate::outputs::print_report(&report, &spool_dir);
    Ok(())
}
