//! Delivery metrics: per durable sink (delivered, retried, failed, dead-lettered, pending,
//! breaker state, delivery latency histogram), per event sink (published, dropped, failed),
//! and the spool (records, bytes, fsync batches, full-policy hits). All counters are
//! atomics written by the delivery tasks and read by anyone (summary lines, `/metrics`).
//!
//! [`Metrics::render_prometheus`] writes the Prometheus text format by hand: it is a few
//! lines per family, and the `metrics` exporter crates would add a registry and an HTTP
//! server this crate does not need.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::Arc;

/// Upper bounds (seconds) of the delivery latency histogram (spool commit → store ack).
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
];

/// A cumulative histogram over fixed bucket bounds (seconds), shared by the delivery
/// latency here and the daemon's packet → event latency.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    inf: AtomicU64,
    sum_us: AtomicU64,
}

impl Default for Histogram {
    /// The delivery latency buckets ([`LATENCY_BUCKETS`]).
    fn default() -> Self {
        Histogram::new(&LATENCY_BUCKETS)
    }
}

impl Histogram {
    /// An empty histogram with these upper bounds (seconds, ascending).
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            inf: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
        }
    }

    /// Records one observation in microseconds.
    pub fn observe_us(&self, us: u64) {
        let s = us as f64 / 1e6;
        match self.bounds.iter().position(|b| s <= *b) {
            Some(i) => {
                if let Some(c) = self.counts.get(i) {
                    c.fetch_add(1, Relaxed);
                }
            }
            None => {
                self.inf.fetch_add(1, Relaxed);
            }
        }
        self.sum_us.fetch_add(us, Relaxed);
    }

    /// Records one observation in milliseconds.
    pub fn observe_ms(&self, ms: u64) {
        self.observe_us(ms.saturating_mul(1000));
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Relaxed)).sum::<u64>() + self.inf.load(Relaxed)
    }

    /// The smallest bucket bound at or above quantile `q` (0..1), in seconds.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let want = ((n as f64) * q).ceil().max(1.0) as u64;
        let mut acc = 0;
        for (c, b) in self.counts.iter().zip(self.bounds) {
            acc += c.load(Relaxed);
            if acc >= want {
                return Some(*b);
            }
        }
        Some(f64::INFINITY)
    }

    /// Appends the `_bucket`/`_sum`/`_count` lines of `name`, with `labels` (already
    /// escaped, `k="v"` pairs joined by commas; empty for none). The HELP/TYPE header is
    /// the caller's, once per family.
    pub fn render(&self, name: &str, labels: &str, out: &mut String) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut acc = 0;
        for (c, b) in self.counts.iter().zip(self.bounds) {
            acc += c.load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {acc}");
        }
        let n = acc + self.inf.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {n}");
        let sum = self.sum_us.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(
            out,
            "{name}_sum{{{labels}}} {sum}\n{name}_count{{{labels}}} {n}"
        );
    }
}

/// Counters of one durable sink.
#[derive(Debug, Default)]
pub struct SinkMetrics {
    /// The sink's name (label).
    pub name: String,
    /// Records the store acknowledged.
    pub delivered: AtomicU64,
    /// Attempts repeated after a transient failure (records × attempts).
    pub retried: AtomicU64,
    /// Failed attempts (transient errors and timeouts).
    pub failed: AtomicU64,
    /// Records the store refused for good.
    pub dead_lettered: AtomicU64,
    /// Records spooled for this sink and not yet done (its queue depth).
    pub pending: AtomicU64,
    /// 0 closed, 1 open, 2 half-open.
    pub breaker: AtomicU8,
    /// Spool commit → store acknowledgement.
    pub latency: Histogram,
}

/// Counters of one event sink.
#[derive(Debug, Default)]
pub struct EventMetrics {
    /// The sink's name (label).
    pub name: String,
    /// Events published.
    pub published: AtomicU64,
    /// Events dropped because its queue was full (oldest first).
    pub dropped: AtomicU64,
    /// Failed publish attempts (their events are dropped: best-effort).
    pub failed: AtomicU64,
    /// Events queued now.
    pub queued: AtomicU64,
}

/// Counters of the spool.
#[derive(Debug, Default)]
pub struct SpoolMetrics {
    /// vCons committed.
    pub records: AtomicU64,
    /// Group commits (one fdatasync each).
    pub commits: AtomicU64,
    /// Bytes of segment files on disk.
    pub bytes: AtomicU64,
    /// The configured bound.
    pub max_bytes: AtomicU64,
    /// vCons refused because the spool was full (policy `drop_newest`).
    pub rejected_full: AtomicU64,
    /// Times the writer waited for space (policy `block`).
    pub full_waits: AtomicU64,
    /// vCons a transform refused (dead-lettered under `dead/_transform`).
    pub transform_failed: AtomicU64,
    /// vCons queued for the spool writer now.
    pub queued: AtomicU64,
}

/// Every delivery metric, shared.
#[derive(Debug, Default)]
pub struct Metrics {
    /// The spool.
    pub spool: SpoolMetrics,
    /// Durable sinks, in configuration order.
    pub sinks: Vec<Arc<SinkMetrics>>,
    /// Event sinks, in configuration order.
    pub events: Vec<Arc<EventMetrics>>,
}

fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A metric family: name, Prometheus type, help, and how to read it from one item.
type Family<'a, T> = (&'a str, &'a str, &'a str, fn(&T) -> u64);

/// Writes families with one `sink="…"` sample per item.
fn per_sink_families<T>(
    out: &mut String,
    families: &[Family<'_, T>],
    items: &[Arc<T>],
    name_of: fn(&T) -> &str,
) {
    for (name, kind, help, get) in families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for m in items {
            let _ = writeln!(out, "{name}{{sink=\"{}\"}} {}", label(name_of(m)), get(m));
        }
    }
}

impl Metrics {
    /// Appends the Prometheus text exposition of every metric.
    pub fn render_prometheus(&self, out: &mut String) {
        let sp = &self.spool;
        for (name, help, v) in [
            (
                "vcontap_spool_records_total",
                "vCons committed to the spool",
                sp.records.load(Relaxed),
            ),
            (
                "vcontap_spool_commits_total",
                "spool group commits (one fdatasync each)",
                sp.commits.load(Relaxed),
            ),
            (
                "vcontap_spool_rejected_full_total",
                "vCons refused because the spool was full",
                sp.rejected_full.load(Relaxed),
            ),
            (
                "vcontap_spool_full_waits_total",
                "times the spool writer waited for space",
                sp.full_waits.load(Relaxed),
            ),
            (
                "vcontap_transform_failed_total",
                "vCons a transform refused",
                sp.transform_failed.load(Relaxed),
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        }
        for (name, help, v) in [
            (
                "vcontap_spool_bytes",
                "bytes of spool segments on disk",
                sp.bytes.load(Relaxed),
            ),
            (
                "vcontap_spool_max_bytes",
                "configured spool bound",
                sp.max_bytes.load(Relaxed),
            ),
            (
                "vcontap_spool_queue_depth",
                "vCons waiting for the spool writer",
                sp.queued.load(Relaxed),
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        let per_sink: [Family<'_, SinkMetrics>; 6] = [
            (
                "vcontap_sink_delivered_total",
                "counter",
                "records delivered",
                |m| m.delivered.load(Relaxed),
            ),
            (
                "vcontap_sink_retried_total",
                "counter",
                "record deliveries retried",
                |m| m.retried.load(Relaxed),
            ),
            (
                "vcontap_sink_failed_total",
                "counter",
                "failed delivery attempts",
                |m| m.failed.load(Relaxed),
            ),
            (
                "vcontap_sink_dead_lettered_total",
                "counter",
                "records dead-lettered",
                |m| m.dead_lettered.load(Relaxed),
            ),
            (
                "vcontap_sink_queue_depth",
                "gauge",
                "records spooled and not yet delivered",
                |m| m.pending.load(Relaxed),
            ),
            (
                "vcontap_sink_breaker_state",
                "gauge",
                "0 closed, 1 open, 2 half-open",
                |m| u64::from(m.breaker.load(Relaxed)),
            ),
        ];
        per_sink_families(out, &per_sink, &self.sinks, |m| &m.name);
        let name = "vcontap_sink_delivery_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} spool commit to store acknowledgement\n# TYPE {name} histogram"
        );
        for m in &self.sinks {
            m.latency
                .render(name, &format!("sink=\"{}\"", label(&m.name)), out);
        }
        let per_event: [Family<'_, EventMetrics>; 4] = [
            (
                "vcontap_event_sink_published_total",
                "counter",
                "events published",
                |m| m.published.load(Relaxed),
            ),
            (
                "vcontap_event_sink_dropped_total",
                "counter",
                "events dropped (queue full)",
                |m| m.dropped.load(Relaxed),
            ),
            (
                "vcontap_event_sink_failed_total",
                "counter",
                "failed publish attempts",
                |m| m.failed.load(Relaxed),
            ),
            (
                "vcontap_event_sink_queue_depth",
                "gauge",
                "events queued",
                |m| m.queued.load(Relaxed),
            ),
        ];
        per_sink_families(out, &per_event, &self.events, |m| &m.name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_and_exposition() {
        let s = Arc::new(SinkMetrics {
            name: "redis://h:1/0".into(),
            ..Default::default()
        });
        for ms in [0, 3, 3, 40, 200_000] {
            s.latency.observe_ms(ms);
        }
        s.delivered.store(5, Relaxed);
        assert_eq!(s.latency.count(), 5);
        assert_eq!(s.latency.quantile(0.5), Some(0.005));
        assert_eq!(s.latency.quantile(1.0), Some(f64::INFINITY));
        let m = Metrics {
            sinks: vec![s],
            ..Default::default()
        };
        let mut out = String::new();
        m.render_prometheus(&mut out);
        assert!(
            out.contains("vcontap_sink_delivered_total{sink=\"redis://h:1/0\"} 5"),
            "{out}"
        );
        assert!(out.contains(
            "vcontap_sink_delivery_seconds_bucket{sink=\"redis://h:1/0\",le=\"0.005\"} 3"
        ));
        assert!(out.contains(
            "vcontap_sink_delivery_seconds_bucket{sink=\"redis://h:1/0\",le=\"+Inf\"} 5"
        ));
        assert!(out.contains("# TYPE vcontap_spool_bytes gauge"));
    }
}
