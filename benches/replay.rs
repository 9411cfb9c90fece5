//! End-to-end replay benchmark: throughput (packets/s, calls/s) and peak memory of
//! `vcontap replay` over a synthesized corpus of concurrent G.711 calls.
//!
//! Run with `cargo bench --bench replay` (no other preparation: cargo builds the `vcontap`
//! binary for benches and hands its path in `CARGO_BIN_EXE_vcontap`). Corpora are
//! synthesized once with `vcontap_synth::generate` into `<target>/vcontap-bench/` and reused;
//! delete that folder to regenerate them.
//!
//! What it measures (results and their reading: docs/PERFORMANCE.md):
//!
//! 1. In-process, stage by stage: pcap read alone, read + wire decode (one thread), and
//!    the CLI's own pipeline (`vcontap_pipeline::run` with one inline shard) with
//!    `RecordMode::None` and `RecordMode::Stereo` (stereo PCM SHA-512-hashed per segment on
//!    the pipeline's writer/hasher threads by an in-memory store: the CLI's work minus the
//!    file writes).
//! 2. The real CLI in a child process (`--record none|stereo`, `--shards 1|2`), which writes
//!    real vCon and WAV files; peak memory is the child's `VmHWM` (peak RSS) from `/proc`.
//! 3. Peak memory against capture length (same concurrency, 4x the calls) and against
//!    concurrency (2x the concurrent calls), CLI `--record stereo --shards 1`.
//!
//! Knobs (environment): `VCONTAP_BENCH_SCALE` (float, default 1.0) scales the number of
//! calls of every corpus, e.g. 0.02 for a profiling run under callgrind;
//! `VCONTAP_BENCH_ONLY` = `inproc-none` | `inproc-stereo` | `inproc` | `cli` | `memory` runs
//! one part only; `VCONTAP_BENCH_KEEP_OUT=1` keeps the CLI output folders.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha512};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use vcontap_engine::{EngineConfig, RecordMode, StoredSegment};
use vcontap_pipeline::{
    Clock, FinishedSegment, MediaStore, Pace, PcapFiles, SegmentMeta, SegmentWriter, Tap, TapConfig,
};
use vcontap_synth::{Codec, SynthConfig};
use vcontap_wire::{Decoder, DecoderConfig, PcapReader};

/// The main corpus: at least 500 concurrent calls and at least 2 million packets.
const MAIN: CorpusSpec = CorpusSpec {
    name: "main",
    calls: 1000,
    concurrent: 600,
    seconds: 30.0,
};
/// Memory vs capture length: same concurrency as [`LONG`], a quarter of the calls.
const SHORT: CorpusSpec = CorpusSpec {
    name: "short",
    calls: 400,
    concurrent: 400,
    seconds: 20.0,
};
/// Memory vs capture length: 4x the calls (and capture time) of [`SHORT`].
const LONG: CorpusSpec = CorpusSpec {
    name: "long",
    calls: 1600,
    concurrent: 400,
    seconds: 20.0,
};
/// Memory vs concurrency: the calls of [`LONG`] at twice its concurrency.
const WIDE: CorpusSpec = CorpusSpec {
    name: "wide",
    calls: 1600,
    concurrent: 800,
    seconds: 20.0,
};

/// One synthesized corpus.
#[derive(Clone, Copy)]
struct CorpusSpec {
    name: &'static str,
    calls: u32,
    concurrent: u32,
    seconds: f64,
}

/// A corpus on disk.
struct Corpus {
    path: PathBuf,
    packets: u64,
    calls: u32,
    concurrent: u32,
    capture_secs: f64,
}

/// One measured configuration.
struct Row {
    what: String,
    packets: u64,
    calls: u64,
    wall: Duration,
    peak_rss_kib: Option<u64>,
}

fn main() {
    let only = std::env::var("VCONTAP_BENCH_ONLY").unwrap_or_default();
    let scale: f64 = std::env::var("VCONTAP_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let want = |part: &str| {
        only.is_empty() || only == part || (only == "inproc" && part.starts_with("inproc"))
    };
    let dir = bench_dir();
    std::fs::create_dir_all(&dir).expect("creating the bench folder");
    println!(
        "vcontap replay bench  (corpora in {}, scale {scale})",
        dir.display()
    );

    let main = corpus(&dir, MAIN, scale);
    let mut rows = Vec::new();

    if want("inproc-none") || want("inproc-stereo") {
        if only.is_empty() || only == "inproc" {
            rows.push(stage_read(&main));
            rows.push(stage_decode(&main));
        }
        if want("inproc-none") {
            rows.push(stage_engine(&main, RecordMode::None));
        }
        if want("inproc-stereo") {
            rows.push(stage_engine(&main, RecordMode::Stereo));
        }
    }
    if want("cli") {
        for (record, shards) in [("none", 1), ("none", 2), ("stereo", 1), ("stereo", 2)] {
            rows.push(cli(&dir, &main, record, shards));
        }
    }
    print_table(&format!("corpus {}", describe(&main)), &rows);

    if want("memory") {
        let mut mem = Vec::new();
        for spec in [SHORT, LONG, WIDE] {
            let c = corpus(&dir, spec, scale);
            let mut r = cli(&dir, &c, "stereo", 1);
            r.what = format!("{:<6} {}", spec.name, describe(&c));
            mem.push(r);
        }
        print_table(
            "peak memory vs capture length and concurrency (cli --record stereo --shards 1)",
            &mem,
        );
    }
}

/// `<target>/vcontap-bench`: the bench binary lives in `<target>/<profile>/deps/`.
fn bench_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.ancestors()
        .nth(3)
        .map(|t| t.join("vcontap-bench"))
        .unwrap_or_else(|| std::env::temp_dir().join("vcontap-bench"))
}

fn describe(c: &Corpus) -> String {
    format!(
        "{} calls, {} concurrent, {} packets, {:.0} s capture",
        c.calls, c.concurrent, c.packets, c.capture_secs
    )
}

/// Synthesizes `spec` (scaled) unless a file from an earlier run is there.
fn corpus(dir: &Path, spec: CorpusSpec, scale: f64) -> Corpus {
    let calls = ((f64::from(spec.calls) * scale).round() as u32).max(2);
    let concurrent = ((f64::from(spec.concurrent) * scale).round() as u32).clamp(1, calls);
    let stem = format!("{}-{}c-{}x-{}s", spec.name, calls, concurrent, spec.seconds);
    let path = dir.join(format!("{stem}.pcap"));
    let meta = dir.join(format!("{stem}.meta"));
    if let (true, Ok(m)) = (path.is_file(), std::fs::read_to_string(&meta)) {
        let mut it = m.split_whitespace().filter_map(|v| v.parse::<f64>().ok());
        if let (Some(p), Some(s)) = (it.next(), it.next()) {
            return Corpus {
                path,
                packets: p as u64,
                calls,
                concurrent,
                capture_secs: s,
            };
        }
    }
    let cfg = SynthConfig {
        calls,
        concurrent,
        seconds: spec.seconds,
        codecs: vec![Codec::Pcmu, Codec::Pcma],
        seed: 7,
        ..SynthConfig::default()
    };
    let t = Instant::now();
    let tmp = path.with_extension("pcap.part");
    let f = File::create(&tmp).expect("creating the corpus");
    let s = vcontap_synth::generate(&cfg, f).expect("synthesizing the corpus");
    std::fs::rename(&tmp, &path).expect("renaming the corpus");
    let capture_secs = (s.last.nanos() - s.first.nanos()) as f64 / 1e9;
    std::fs::write(&meta, format!("{} {}\n", s.packets, capture_secs))
        .expect("writing corpus meta");
    println!(
        "synthesized {}: {} packets ({} RTP, {} SIP), {:.1} MB in {:.1} s",
        path.display(),
        s.packets,
        s.rtp_packets,
        s.sip_messages,
        s.bytes as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );
    Corpus {
        path,
        packets: s.packets,
        calls,
        concurrent,
        capture_secs,
    }
}

fn open(c: &Corpus) -> PcapReader<File> {
    let f = File::open(&c.path).expect("opening the corpus");
    PcapReader::new(f).expect("reading the pcap header")
}

fn new_decoder() -> Decoder {
    Decoder::new(DecoderConfig {
        tcp_framer: Some(vcontap_sip::frame),
        ..DecoderConfig::default()
    })
}

/// Stage 1: pcap records only.
fn stage_read(c: &Corpus) -> Row {
    let t = Instant::now();
    let mut r = open(c);
    let (mut n, mut bytes) = (0u64, 0u64);
    while let Ok(Some(p)) = r.next_packet() {
        n += 1;
        bytes += p.data.len() as u64;
    }
    std::hint::black_box(bytes);
    Row {
        what: "in-process 1 thread: pcap read".into(),
        packets: n,
        calls: 0,
        wall: t.elapsed(),
        peak_rss_kib: None,
    }
}

/// Stage 2: pcap read + wire decode (link, IP, UDP, TCP reassembly + SIP framing).
fn stage_decode(c: &Corpus) -> Row {
    let t = Instant::now();
    let mut r = open(c);
    let mut dec = new_decoder();
    let (mut n, mut payload) = (0u64, 0u64);
    while let Ok(Some(p)) = r.next_packet() {
        n += 1;
        dec.decode(&p, &mut |d| payload += d.payload.len() as u64);
    }
    std::hint::black_box(payload);
    Row {
        what: "in-process 1 thread: read + decode".into(),
        packets: n,
        calls: 0,
        wall: t.elapsed(),
        peak_rss_kib: None,
    }
}

/// Stage 3: the full single-shard pipeline of `vcontap replay --shards 1` — the same
/// `vcontap_pipeline::run` loop, `PcapFiles` source and `Tap` as the CLI — with a media
/// store that hashes the PCM in memory instead of writing WAV files (the CLI rows include
/// the file writes).
fn stage_engine(c: &Corpus, record: RecordMode) -> Row {
    let t = Instant::now();
    let mut cfg = TapConfig::replay(EngineConfig {
        record,
        host: "bench.example".into(),
        ..EngineConfig::default()
    });
    if record != RecordMode::None {
        cfg.media = Some(Arc::new(HashStore));
    }
    let events = Arc::new(AtomicU64::new(0));
    let ev = events.clone();
    let tap = Tap::new(
        cfg,
        Box::new(move |e| {
            ev.fetch_add(e.vcon_json.len() as u64, Ordering::Relaxed);
            Ok(())
        }),
    )
    .expect("building the pipeline");
    let mut src = PcapFiles::new(std::slice::from_ref(&c.path), Pace::Max);
    let totals = vcontap_pipeline::run(&mut src, tap, Clock::capture(), &mut |_| true)
        .expect("running the pipeline");
    let wall = t.elapsed();
    let st = &totals.engine;
    let mode = if record == RecordMode::None {
        "none"
    } else {
        "stereo"
    };
    println!(
        "  [{mode}] calls {} finished {} rtp {} sip {} events {} ({:.1} MB JSON) segments {} audio {:.1} MB hashed",
        st.calls,
        st.calls_finished,
        st.rtp_packets,
        st.sip_messages,
        totals.events,
        events.load(Ordering::Relaxed) as f64 / 1e6,
        totals.media.segments,
        totals.media.audio_bytes as f64 / 1e6
    );
    Row {
        what: format!("in-process pipeline, 1 shard: --record {mode} (PCM hashed, no files)"),
        packets: totals.packets,
        calls: st.calls,
        wall,
        peak_rss_kib: None,
    }
}

/// A media store that SHA-512-hashes the PCM as it arrives instead of writing files: the
/// pipeline's writer and hasher threads run exactly as in the CLI, minus the disk.
struct HashStore;
struct HashWriter(Sha512, String);
struct HashFinished(Sha512, String);

impl MediaStore for HashStore {
    fn open(&self, m: &SegmentMeta) -> std::io::Result<Box<dyn SegmentWriter>> {
        Ok(Box::new(HashWriter(
            Sha512::new(),
            format!("{}-{:03}.wav", m.uuid, m.index),
        )))
    }
}

impl SegmentWriter for HashWriter {
    fn write(&mut self, samples: &[i16]) -> std::io::Result<()> {
        // As the WAV bytes would be: little-endian 16-bit, hashed in one call per chunk.
        let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
        self.0.update(&bytes);
        Ok(())
    }
    fn finish(self: Box<Self>) -> std::io::Result<Box<dyn FinishedSegment>> {
        Ok(Box::new(HashFinished(self.0, self.1)))
    }
}

impl FinishedSegment for HashFinished {
    fn complete(self: Box<Self>) -> std::io::Result<StoredSegment> {
        Ok(StoredSegment {
            url: format!("file:///dev/null/{}", self.1),
            content_hash: vcontap_vcon::content_hash_from_digest(&self.0.finalize()),
            filename: self.1,
            mediatype: "audio/x-wav".into(),
        })
    }
}

/// The real CLI in a child process; peak RSS polled from `/proc/<pid>/status`.
fn cli(dir: &Path, c: &Corpus, record: &str, shards: u32) -> Row {
    let out = dir.join(format!("out-{record}-{shards}"));
    let _ = std::fs::remove_dir_all(&out);
    let _ = std::fs::remove_dir_all(out.with_extension("spool"));
    let err_path = dir.join(format!("stderr-{record}-{shards}.txt"));
    let err_file = File::create(&err_path).expect("creating the stderr file");
    let t = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_vcontap"))
        .arg("replay")
        .arg(&c.path)
        .arg("--out")
        .arg(&out)
        .arg("--spool")
        .arg(out.with_extension("spool"))
        .args([
            "--record",
            record,
            "--shards",
            &shards.to_string(),
            "--quiet",
            "--host",
            "bench.example",
        ])
        .stdout(Stdio::null())
        .stderr(err_file)
        .spawn()
        .expect("starting vcontap");
    let (status, rss) = wait_peak_rss(child);
    let wall = t.elapsed();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    assert!(
        status == 0,
        "vcontap replay failed (status {status}):\n{stderr}"
    );
    let calls = summary_value(&stderr, "calls").unwrap_or(0);
    let packets = summary_value(&stderr, "packets read").unwrap_or(c.packets);
    if std::env::var_os("VCONTAP_BENCH_KEEP_OUT").is_none() {
        let _ = std::fs::remove_dir_all(&out);
    }
    Row {
        what: format!("cli --record {record} --shards {shards}"),
        packets,
        calls,
        wall,
        peak_rss_kib: Some(rss),
    }
}

/// Waits for `child` and returns (exit status, peak RSS in KiB).
///
/// The peak is the child's own `VmHWM` from `/proc/<pid>/status`, polled every 2 ms until
/// exit (it only grows, so the last reading is the peak up to the final 2 ms). `wait4`'s
/// `ru_maxrss` is not used: Linux folds the parent's high-water mark into it at `exec`, so
/// it reports this bench's own footprint for small children.
fn wait_peak_rss(mut child: std::process::Child) -> (i32, u64) {
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak = 0u64;
    loop {
        if let Ok(st) = std::fs::read_to_string(&status_path) {
            if let Some(kib) = st
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
            {
                peak = peak.max(kib);
            }
        }
        match child.try_wait() {
            Ok(Some(status)) => return (status.code().unwrap_or(-1), peak),
            Ok(None) => std::thread::sleep(Duration::from_millis(2)),
            Err(e) => panic!("waiting for vcontap: {e}"),
        }
    }
}

/// A number from the replay summary on stderr (`  calls               1000 (0 evicted)`).
fn summary_value(stderr: &str, key: &str) -> Option<u64> {
    stderr.lines().find_map(|l| {
        let rest = l.trim_start().strip_prefix(key)?;
        if !rest.starts_with("  ") {
            return None;
        }
        rest.split_whitespace().next()?.parse().ok()
    })
}

fn print_table(title: &str, rows: &[Row]) {
    println!();
    println!("{title}");
    let w = rows.iter().map(|r| r.what.len()).max().unwrap_or(0).max(13);
    println!(
        "{:<w$} {:>10} {:>9} {:>14} {:>10} {:>12}",
        "configuration", "packets", "wall s", "packets/s", "calls/s", "peak RSS"
    );
    for r in rows {
        let s = r.wall.as_secs_f64().max(1e-9);
        let rss = r
            .peak_rss_kib
            .map(|k| format!("{:.1} MiB", k as f64 / 1024.0))
            .unwrap_or_else(|| "-".into());
        let calls = if r.calls > 0 {
            format!("{:.0}", r.calls as f64 / s)
        } else {
            "-".into()
        };
        println!(
            "{:<w$} {:>10} {:>9.3} {:>14} {:>10} {:>12}",
            r.what,
            r.packets,
            s,
            format!("{:.0}", r.packets as f64 / s),
            calls,
            rss
        );
    }
}
