//! The live inputs of `capture` and `run`, behind [`LiveSource`]: AF_PACKET rings
//! (`vcontap-afpacket`, several interfaces and PACKET_FANOUT rings polled by the one loop,
//! so a call's SIP and RTP meet in the same Tap whatever ring they arrived on) and the HEP
//! listener (`vcontap_pipeline::hep`). Wiring and metrics only.

use std::fmt::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use vcontap_afpacket::{Capture, Fanout, RingConfig, RingStats};
use vcontap_pipeline::hep::{HepConfig, HepCounters, HepListener};
use vcontap_pipeline::{Clock, PacketSource, PipelineError, Poll, Tap};

use crate::api::Render;
use crate::live::{LiveSettings, LiveSource};

/// Checks a capture filter expression (for `validate`).
pub fn check_filter(f: &str) -> Result<()> {
    if cfg!(feature = "pcap") {
        // Compiled as the kernel will run it on a named Ethernet interface.
        vcontap_afpacket::bpf::compile(f, false, 65535).map_err(|e| anyhow::anyhow!("{e}"))?;
    } else {
        vcontap_afpacket::filter::Filter::parse(f).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    Ok(())
}

/// Opens every source the settings name.
pub fn open(s: &LiveSettings) -> Result<Vec<Box<dyn LiveSource>>> {
    let mut out: Vec<Box<dyn LiveSource>> = Vec::new();
    if !s.interfaces.is_empty() {
        out.push(Box::new(Rings::open(s)?));
    }
    if let Some(addr) = s.hep_listen {
        let mut cfg = HepConfig::new(addr);
        cfg.auth_key = s.hep_auth_key.clone().map(String::into_bytes);
        let l = HepListener::bind(cfg).with_context(|| format!("--hep-listen {addr}"))?;
        out.push(Box::new(Hep {
            counters: l.counters(),
            listener: l,
            addr,
        }));
    }
    Ok(out)
}

struct Rings {
    cap: Capture,
    /// Kernel drops so far, and when they were last read (timer clock).
    drops_seen: u64,
    last_read: Option<vcontap_wire::Timestamp>,
    labels: Vec<String>,
    stats: Arc<Mutex<Vec<RingStats>>>,
    refreshed: Instant,
}

impl Rings {
    fn open(s: &LiveSettings) -> Result<Self> {
        // With the `pcap` feature the expression is BPF, compiled by libpcap and run by the
        // kernel (each ring compiles it for its socket); otherwise the user-space filter.
        let (filter, bpf) = match &s.filter {
            Some(f) if cfg!(feature = "pcap") => (Default::default(), Some(f.clone())),
            Some(f) => (
                vcontap_afpacket::filter::Filter::parse(f)
                    .map_err(|e| anyhow::anyhow!("--filter: {e}"))?,
                None,
            ),
            None => (Default::default(), None),
        };
        let mut rings = Vec::new();
        let mut labels = Vec::new();
        for (i, iface) in s.interfaces.iter().enumerate() {
            let mut cfg = RingConfig::new(iface);
            // Ring memory = block size × blocks.
            cfg.block_size = s.block_kib.saturating_mul(1024);
            cfg.block_count = (s.ring_mib.max(1).saturating_mul(1024) / s.block_kib.max(1)).max(2);
            cfg.block_timeout_ms = s.block_timeout_ms;
            if s.frame_ring {
                cfg.layout = vcontap_afpacket::Layout::Frames;
                cfg.frame_size = s.frame_size.min(cfg.block_size);
            }
            cfg.snaplen = s.snaplen;
            cfg.promiscuous = s.promiscuous;
            cfg.filter = filter.clone();
            cfg.bpf = bpf.clone();
            let cap = if s.rings > 1 {
                // A group id per process and interface: two daemons must not share one.
                let group = ((std::process::id() as u16).wrapping_mul(31)).wrapping_add(i as u16);
                cfg.fanout = Some(Fanout {
                    group,
                    defrag: true,
                });
                Capture::fanout(&cfg, s.rings as usize, group)
            } else {
                Capture::open(std::slice::from_ref(&cfg))
            }
            .with_context(|| format!("capturing on {iface}"))?;
            for (r, ring) in cap.into_rings().into_iter().enumerate() {
                labels.push(format!("{iface}#{r}"));
                rings.push(ring);
            }
        }
        let n = rings.len();
        Ok(Rings {
            cap: Capture::from_rings(rings),
            drops_seen: 0,
            last_read: None,
            labels,
            stats: Arc::new(Mutex::new(vec![RingStats::default(); n])),
            refreshed: Instant::now(),
        })
    }
}

impl LiveSource for Rings {
    fn poll(
        &mut self,
        tap: &mut Tap,
        clock: &mut Clock,
        max: usize,
    ) -> Result<usize, PipelineError> {
        let n = match self.cap.poll(max, |p| {
            let now = clock.on_packet(p.ts);
            tap.handle_packet(p, now)
        })? {
            Poll::Packets(n) => n,
            Poll::Idle | Poll::End => 0,
        };
        // The kernel's counters reset on every read: read them once a second into totals.
        if self.refreshed.elapsed() >= Duration::from_secs(1) {
            self.refreshed = Instant::now();
            match self.cap.stats() {
                Ok(v) => {
                    // Drops since the last read: every call open in that span says so.
                    let now = clock.now();
                    let drops: u64 = v.iter().map(|s| s.kernel_drops).sum();
                    if drops > self.drops_seen {
                        let from = self.last_read.unwrap_or(now);
                        tracing::warn!(dropped = drops - self.drops_seen, "the capture ring dropped packets (ring too small or the host too busy)");
                        tap.note_capture_loss(from, now, drops - self.drops_seen);
                    }
                    self.drops_seen = drops;
                    self.last_read = Some(now);
                    if let Ok(mut g) = self.stats.lock() {
                        *g = v;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "reading ring statistics failed"),
            }
        }
        Ok(n)
    }

    fn metrics(&self) -> Render {
        let stats = self.stats.clone();
        let labels = self.labels.clone();
        Box::new(move |out: &mut String| {
            let Ok(g) = stats.lock() else { return };
            type Get = fn(&RingStats) -> u64;
            let fams: [(&str, &str, &str, Get); 7] = [
                (
                    "vcontap_ring_packets_total",
                    "counter",
                    "frames the kernel passed to the ring",
                    |s| s.kernel_packets,
                ),
                (
                    "vcontap_ring_drops_total",
                    "counter",
                    "frames the kernel dropped (ring full)",
                    |s| s.kernel_drops,
                ),
                (
                    "vcontap_ring_freezes_total",
                    "counter",
                    "ring freezes",
                    |s| s.freezes,
                ),
                (
                    "vcontap_ring_frames_total",
                    "counter",
                    "frames handed to the pipeline",
                    |s| s.frames,
                ),
                (
                    "vcontap_ring_bytes_total",
                    "counter",
                    "bytes handed to the pipeline",
                    |s| s.bytes,
                ),
                (
                    "vcontap_ring_filtered_total",
                    "counter",
                    "frames dropped by the capture filter",
                    |s| s.filtered,
                ),
                (
                    "vcontap_ring_blocks_waiting",
                    "gauge",
                    "ring blocks filled and not yet read",
                    |s| u64::from(s.blocks_waiting),
                ),
            ];
            for (name, kind, help, get) in fams {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
                for (l, s) in labels.iter().zip(g.iter()) {
                    let _ = writeln!(out, "{name}{{ring=\"{l}\"}} {}", get(s));
                }
            }
        })
    }

    fn wait(&mut self, timeout: Duration) {
        // poll(2) on every ring: wakes when a block (or, with a frame ring, a frame) is
        // handed over.
        if self.cap.wait(timeout).is_err() {
            std::thread::sleep(timeout);
        }
    }

    fn status(&self) -> String {
        let g = self.stats.lock().map(|g| g.clone()).unwrap_or_default();
        let frames: u64 = g.iter().map(|s| s.frames).sum();
        let drops: u64 = g.iter().map(|s| s.kernel_drops).sum();
        format!(
            "{} ring(s) on {}: {frames} frames, {drops} kernel drops",
            self.labels.len(),
            {
                let mut v: Vec<&str> = self
                    .labels
                    .iter()
                    .map(|l| l.split('#').next().unwrap_or(""))
                    .collect();
                v.dedup();
                v.join(",")
            }
        )
    }
}

struct Hep {
    listener: HepListener,
    counters: Arc<HepCounters>,
    addr: std::net::SocketAddr,
}

impl LiveSource for Hep {
    fn poll(
        &mut self,
        tap: &mut Tap,
        clock: &mut Clock,
        max: usize,
    ) -> Result<usize, PipelineError> {
        self.listener.feed(tap, clock, max)
    }

    fn wait(&mut self, timeout: Duration) {
        let start = Instant::now();
        if !self.listener.wait(timeout) {
            // A closed queue answers at once: sleep the rest rather than spin.
            std::thread::sleep(timeout.saturating_sub(start.elapsed()));
        }
    }

    fn metrics(&self) -> Render {
        let c = self.counters.clone();
        Box::new(move |out: &mut String| {
            let s = c.snapshot();
            for (name, help, v) in [
                (
                    "vcontap_hep_received_total",
                    "HEP messages received",
                    s.received,
                ),
                ("vcontap_hep_bytes_total", "HEP bytes received", s.bytes),
                (
                    "vcontap_hep_decoded_total",
                    "HEP messages decoded",
                    s.decoded,
                ),
                (
                    "vcontap_hep_auth_failed_total",
                    "HEP messages with a wrong or missing key",
                    s.auth_failed,
                ),
                (
                    "vcontap_hep_forwarded_total",
                    "HEP datagrams handed to the pipeline",
                    s.forwarded,
                ),
                (
                    "vcontap_hep_queue_dropped_total",
                    "HEP datagrams dropped on a full queue",
                    s.queue_dropped,
                ),
                (
                    "vcontap_hep_unsupported_total",
                    "HEP messages of types vcontap does not use",
                    s.unsupported_type + s.rtcp_json + s.logs,
                ),
            ] {
                let _ = writeln!(
                    out,
                    "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
                );
            }
            let name = "vcontap_hep_malformed_total";
            let _ = writeln!(
                out,
                "# HELP {name} HEP messages rejected, by reason\n# TYPE {name} counter"
            );
            for (reason, n) in &s.malformed {
                let _ = writeln!(out, "{name}{{reason=\"{reason}\"}} {n}");
            }
        })
    }

    fn status(&self) -> String {
        let s = self.counters.snapshot();
        format!(
            "HEP on {}: {} received, {} malformed",
            self.addr,
            s.received,
            s.malformed_total()
        )
    }
}
