//! `vcontap replay`: wiring only. Capture files ([`PcapFiles`]) run through the shared
//! pipeline ([`vcontap_pipeline::run`]: decoder → router → engine shards → media writers),
//! finished vCons go to the delivery core ([`crate::outputs`]: spool, transforms, the
//! `--out` file sink and every `--sink`), the `--events` stream to a file, and a summary
//! is printed.
//!
//! Replay uses the capture clock as the timer clock and blocking queues (nothing is lost;
//! the reader slows down instead), see `vcontap_pipeline::tap`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use vcontap_engine::{EngineConfig, RecordMode};
use vcontap_pipeline::{source, Clock, Pace, PcapFiles, Tap, TapConfig, TapTotals};
use vcontap_sinks::WhenFull;

use crate::outputs::{EventOutputs, Outputs};
use crate::progress::Progress;
use crate::sink::EventsFile;
use crate::{RecordArg, ReplayArgs};

fn engine_config(a: &ReplayArgs) -> EngineConfig {
    EngineConfig {
        record: match a.record {
            RecordArg::None => RecordMode::None,
            RecordArg::Stereo => RecordMode::Stereo,
            RecordArg::Mono => RecordMode::Mono,
        },
        segment_seconds: a.segment_seconds,
        host: a.host.clone().unwrap_or_else(host_name),
        // Quality so far is for live watchers: on for a realtime replay (a demo of a live
        // source), off for a plain one so its events stay as they were.
        quality_interval_ms: Some(match (a.quality_interval, a.pace) {
            (Some(n), _) => i64::from(n) * 1000,
            (None, crate::Pace::Realtime) => vcontap_engine::DEFAULT_LIVE_QUALITY_INTERVAL_MS,
            (None, crate::Pace::Max) => 0,
        }),
        ..EngineConfig::default()
    }
}

pub(crate) fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Runs `vcontap replay`.
pub fn run(a: ReplayArgs) -> Result<()> {
    if a.shards == 0 || a.shards > vcontap_pipeline::tap::MAX_SHARDS {
        bail!(
            "--shards must be between 1 and {}",
            vcontap_pipeline::tap::MAX_SHARDS
        );
    }
    if let Some(u) = &a.media_base_url {
        if !u.contains("://") {
            bail!("--media-base-url must be an absolute URL with a scheme (e.g. https://…)");
        }
    }
    for c in &a.captures {
        source::check_file(c)?;
    }
    let started = Instant::now();
    // Sinks and spool first: a bad --sink is a start-up error, before any packet is read.
    let outputs = Outputs::start(Some(&a.out), &a.outputs, WhenFull::Block)?;
    let events = match &a.events {
        Some(p) => {
            let mut f = EventsFile::create(p)?;
            f.flush_each = a.pace == crate::Pace::Realtime;
            Some(f)
        }
        None => None,
    };
    let events = Arc::new(Mutex::new(events));
    let handler_events = events.clone();
    let delivery = outputs.delivery.handle();
    let api = crate::live_api::ApiSettings::from_args(&a.api)?;
    api.check()?;
    crate::web::WebSlots::global().set_tokens(&api.tokens);
    // Only with --listen: without a server nobody could read what the hub keeps.
    let hub = api
        .listen
        .map(|_| crate::live_api::open_hub(&api, &a.out))
        .transpose()?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let api_state = crate::api::ApiState::new(outputs.delivery.metrics().clone());
    if let (Some(addr), Some(hub)) = (api.listen, &hub) {
        let live = crate::live_api::LiveApi::new(hub.clone(), &api.tokens, Some(a.out.clone()));
        let local = crate::api::serve(
            &outputs.runtime_handle(),
            addr,
            api_state.clone(),
            Some(live),
            api.tls()?,
            stop_rx,
        )
        .with_context(|| format!("--listen {addr}"))?;
        tracing::info!(%local, "serving the API");
        api_state
            .ready
            .store(true, std::sync::atomic::Ordering::SeqCst);
        wait_subscribers(hub, a.wait_subscribers);
    }
    let handler_hub = hub.clone();
    let mut cfg = TapConfig::replay(engine_config(&a));
    cfg.shards = a.shards;
    if a.record != RecordArg::None {
        cfg.media = Some(outputs.recordings(&a.outputs, &a.out, a.media_base_url.as_deref())?);
    }
    let audio_tee = api
        .listen
        .and_then(|_| crate::web::tap_media(&mut cfg.media, &a.out.join("media")));
    if a.pace == crate::Pace::Realtime {
        // A live demo: events should reach subscribers within tens of milliseconds.
        cfg.batch_latency_ms = 20;
    }
    let tap = Tap::new(
        cfg,
        EventOutputs {
            latency: None,
            audio_tee,
            hub: handler_hub,
            events: handler_events,
            delivery,
        }
        .handler(),
    )?;
    let pace = match a.pace {
        crate::Pace::Max => Pace::Max,
        crate::Pace::Realtime => Pace::Realtime,
    };
    let mut src = PcapFiles::new(&a.captures, pace);
    let progress = Progress::new(a.quiet);
    let mut bursts = 0u64;
    let totals = vcontap_pipeline::run(&mut src, tap, Clock::capture(), &mut |tap| {
        bursts += 1;
        api_state.beat();
        if bursts.is_multiple_of(256) {
            let c = tap.counters();
            progress.update(
                c.packets.load(std::sync::atomic::Ordering::Relaxed),
                c.open_calls() as usize,
                c.calls_finished.load(std::sync::atomic::Ordering::Relaxed),
            );
        }
        true
    })?;
    progress.finish();
    let events_written = match events
        .lock()
        .map_err(|_| anyhow::anyhow!("events file poisoned"))?
        .as_mut()
    {
        Some(f) => {
            f.flush()?;
            f.written
        }
        None => 0,
    };
    // Subscribers drain what was sent and see their streams end; the API stays up for
    // --linger so finished vCons can still be read.
    if let Some(h) = &hub {
        h.close();
    }
    if api.listen.is_some() && a.linger > 0 {
        std::thread::sleep(Duration::from_secs(a.linger));
    }
    stop_tx.send_replace(true);
    let spool_dir = outputs.spool_dir.clone();
    let file_sink = outputs.file_sink.clone();
    let report = outputs.finish();
    if src.opened() == 0 {
        let why: Vec<String> = src
            .unreadable()
            .iter()
            .map(|u| format!("{}: {}", u.path.display(), u.reason))
            .collect();
        bail!("no input could be read as a capture ({})", why.join("; "));
    }
    print_summary(&a, &src, &totals, started.elapsed());
    eprintln!("  events written      {events_written}");
    let vcons = file_sink
        .and_then(|n| report.sinks.iter().find(|s| s.name == n))
        .map_or(0, |s| s.delivered);
    eprintln!("  vcons written       {vcons}");
    crate::outputs::print_report(&report, &spool_dir);
    Ok(())
}

/// Waits until `n` clients subscribed to the event stream (at most 60 s).
fn wait_subscribers(hub: &vcontap_live::Hub, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while hub
        .stats
        .subscribers
        .load(std::sync::atomic::Ordering::Relaxed)
        < n
    {
        if Instant::now() >= deadline {
            tracing::warn!(
                n,
                "--wait-subscribers: not all subscribers came; replaying anyway"
            );
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn print_summary(a: &ReplayArgs, src: &PcapFiles, t: &TapTotals, elapsed: Duration) {
    let secs = elapsed.as_secs_f64().max(1e-9);
    eprintln!("replay summary");
    eprintln!("  files               {}", a.captures.len());
    for u in src.unreadable() {
        eprintln!("  not a capture       {} ({})", u.path.display(), u.reason);
    }
    eprintln!("  packets read        {}", t.packets);
    eprintln!("  datagrams decoded   {}", t.decode.datagrams);
    for (r, n) in t.decode.nonzero_skips() {
        eprintln!("  skipped {:<20} {}", r.as_str(), n);
    }
    if t.decode.tls_flows() > 0 {
        eprintln!(
            "  sip over tls        {} TLS SIP flows seen, not decoded ({} bytes)",
            t.decode.tls_flows(),
            t.decode.tls_bytes
        );
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
    eprintln!(
        "  recording segments  {} ({:.1} MB{})",
        t.media.segments,
        t.media.audio_bytes as f64 / 1e6,
        if t.media.failed > 0 {
            format!(", {} failed", t.media.failed)
        } else {
            String::new()
        }
    );
    if t.shard_queue.dropped_packets > 0 {
        eprintln!(
            "  dropped (queue full) {} packets",
            t.shard_queue.dropped_packets
        );
    }
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
