//! `vcontap replay`: wiring only. Capture files ([`PcapFiles`]) run through the shared
//! pipeline ([`vcontap_pipeline::run`]: decoder → router → engine shards → media writers),
//! events go to the [`FileSink`](crate::sink::FileSink), and a summary is printed.
//!
//! Replay uses the capture clock as the timer clock and blocking queues (nothing is lost;
//! the reader slows down instead), see `vcontap_pipeline::tap`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use vcontap_engine::{EngineConfig, RecordMode};
use vcontap_pipeline::{
    source, Clock, LocalFiles, Pace, PcapFiles, PipelineError, Tap, TapConfig, TapTotals,
};

use crate::progress::Progress;
use crate::sink::FileSink;
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
    let mut sink = FileSink::new(&a.out, a.events.as_deref())?;
    sink.flush_each = a.pace == crate::Pace::Realtime;
    let sink = Arc::new(Mutex::new(sink));
    let handler_sink = sink.clone();
    let mut cfg = TapConfig::replay(engine_config(&a));
    cfg.shards = a.shards;
    if a.record != RecordArg::None {
        let store = LocalFiles::new(&a.out.join("media"), a.media_base_url.as_deref())?;
        cfg.media = Some(Arc::new(store));
    }
    if a.pace == crate::Pace::Realtime {
        // A live demo: events should reach subscribers within tens of milliseconds.
        cfg.batch_latency_ms = 20;
    }
    let tap = Tap::new(
        cfg,
        Box::new(move |e| {
            // Uncontended: only the pipeline's one event thread (or the driver) calls it.
            let mut s = handler_sink
                .lock()
                .map_err(|_| PipelineError::Handler("event sink poisoned".into()))?;
            s.handle(e)
                .map_err(|err| PipelineError::Handler(format!("{err:#}")))
        }),
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
    let mut sink = sink
        .lock()
        .map_err(|_| anyhow::anyhow!("event sink poisoned"))?;
    sink.flush()?;
    if src.opened() == 0 {
        let why: Vec<String> = src
            .unreadable()
            .iter()
            .map(|u| format!("{}: {}", u.path.display(), u.reason))
            .collect();
        bail!("no input could be read as a capture ({})", why.join("; "));
    }
    print_summary(&a, &src, &totals, &sink, started.elapsed());
    Ok(())
}

fn print_summary(
    a: &ReplayArgs,
    src: &PcapFiles,
    t: &TapTotals,
    sink: &FileSink,
    elapsed: Duration,
) {
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
    eprintln!("  vcons written       {}", sink.vcons_written);
    eprintln!("  events written      {}", sink.events_written);
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
