//! The delivery core end to end with the real spool and file sink, plus a scripted store
//! (a test double for a *store*, to drive the core's retry, breaker, dead-letter and
//! restart paths deterministically; the store sinks have their own tests against real
//! services).

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vcontap_engine::{EventKind, VconEvent};
use vcontap_sinks::retry::RetryConfig;
use vcontap_sinks::spool::{Spool, SpoolConfig};
use vcontap_sinks::{
    BoxFuture, Built, Delivery, DeliveryConfig, EventSink, NamedSink, Outcome, Record, Sink,
    SinkError, SinkSpec, WhenFull,
};
use vcontap_wire::Timestamp;

fn uuid(n: u32) -> String {
    format!("018f0000-0000-8000-8000-{n:012}")
}

fn event(n: u32, seq: u64, kind: EventKind) -> Arc<VconEvent> {
    let u = uuid(n);
    Arc::new(VconEvent {
        uuid: u.clone().into(),
        seq,
        kind,
        at: Timestamp(1_767_225_600_000_000_000),
        reason: None,
        vcon_json: format!(
            r#"{{"vcon":"0.4.0","uuid":"{u}","created_at":"2026-01-01T00:00:00Z","parties":[],"dialog":[],"attachments":[{{"purpose":"sip-message-trace","body":"x"}}],"n":{n}}}"#
        )
        .into(),
    })
}

/// A store that fails its first `fail_first` attempts, refuses uuids in `refuse`, and
/// records every delivered uuid (duplicates included, as a store would see them).
#[derive(Clone, Default)]
struct Scripted {
    fail_first: Arc<AtomicU32>,
    refuse: Vec<String>,
    seen: Arc<Mutex<Vec<String>>>,
    attempts: Arc<AtomicU32>,
    batch_sizes: Arc<Mutex<Vec<usize>>>,
}

impl Sink for Scripted {
    fn max_batch(&self) -> usize {
        16
    }
    fn deliver<'a>(
        &'a mut self,
        batch: &'a [Arc<Record>],
    ) -> BoxFuture<'a, Result<Vec<Outcome>, SinkError>> {
        Box::pin(async move {
            self.attempts.fetch_add(1, Ordering::SeqCst);
            self.batch_sizes.lock().unwrap().push(batch.len());
            if self
                .fail_first
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return Err(SinkError::new("connection refused"));
            }
            Ok(batch
                .iter()
                .map(|r| {
                    if self.refuse.contains(&r.uuid.to_string()) {
                        Outcome::Rejected("422 validation failed".into())
                    } else {
                        self.seen.lock().unwrap().push(r.uuid.to_string());
                        Outcome::Delivered
                    }
                })
                .collect())
        })
    }
}

fn fast_retry() -> RetryConfig {
    RetryConfig {
        base: Duration::from_millis(5),
        max: Duration::from_millis(40),
        open_after: 3,
    }
}

fn cfg(dir: &Path) -> DeliveryConfig {
    let mut c = DeliveryConfig::new(dir.join("spool"));
    c.retry = fast_retry();
    c
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn retries_dead_letters_and_empties_the_spool() {
    let d = tempfile::tempdir().unwrap();
    let rt = rt();
    let store = Scripted {
        fail_first: Arc::new(AtomicU32::new(5)),
        refuse: vec![uuid(7)],
        ..Default::default()
    };
    let del = Delivery::start(
        cfg(d.path()),
        vec![NamedSink {
            name: "store".into(),
            built: Built::durable(store.clone()),
        }],
        rt.handle().clone(),
    )
    .unwrap();
    for n in 0..100 {
        del.submit(&event(n, 1, EventKind::Created)).unwrap();
        del.submit(&event(n, 2, EventKind::Finished)).unwrap();
    }
    let report = del.finish(Duration::from_secs(30));
    let seen = store.seen.lock().unwrap().clone();
    let want: Vec<String> = (0..100).filter(|n| *n != 7).map(uuid).collect();
    assert_eq!(
        seen, want,
        "every vCon once, in order, the refused one not at all"
    );
    let r = &report.sinks[0];
    assert_eq!(
        (r.delivered, r.dead_lettered, r.pending, r.failed),
        (99, 1, 0, 5)
    );
    assert_eq!(report.spooled, 100);
    // While the breaker was open the probes carried one record.
    assert!(store.batch_sizes.lock().unwrap().contains(&1));
    // The dead letter holds the exact bytes and the reason.
    let dead = d.path().join("spool/dead");
    let sub = std::fs::read_dir(&dead)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let body = std::fs::read_to_string(sub.join(format!("{}.vcon.json", uuid(7)))).unwrap();
    assert_eq!(body, &*event(7, 2, EventKind::Finished).vcon_json);
    let why = std::fs::read_to_string(sub.join(format!("{}.reason.json", uuid(7)))).unwrap();
    assert!(
        why.contains("422 validation failed") && why.contains("\"sink\": \"store\""),
        "{why}"
    );
    // Nothing is owed any more.
    let s = Spool::open(
        SpoolConfig::new(d.path().join("spool")),
        vec!["store".into()],
    )
    .unwrap();
    assert!(s.pending().unwrap().is_empty());
}

#[test]
fn a_restart_redelivers_what_was_not_acknowledged() {
    let d = tempfile::tempdir().unwrap();
    let rt = rt();
    // Run 1: the store is down for the whole run; the drain gives up quickly.
    let down = Scripted {
        fail_first: Arc::new(AtomicU32::new(u32::MAX)),
        ..Default::default()
    };
    let del = Delivery::start(
        cfg(d.path()),
        vec![NamedSink {
            name: "store".into(),
            built: Built::durable(down.clone()),
        }],
        rt.handle().clone(),
    )
    .unwrap();
    for n in 0..50 {
        del.submit(&event(n, 1, EventKind::Finished)).unwrap();
    }
    let report = del.finish(Duration::from_millis(300));
    assert_eq!(report.sinks[0].delivered, 0);
    assert_eq!(report.sinks[0].pending, 50);
    assert!(down.seen.lock().unwrap().is_empty());
    // Run 2: the store is back; the spool delivers all 50 before anything new.
    let up = Scripted::default();
    let del = Delivery::start(
        cfg(d.path()),
        vec![NamedSink {
            name: "store".into(),
            built: Built::durable(up.clone()),
        }],
        rt.handle().clone(),
    )
    .unwrap();
    del.submit(&event(50, 1, EventKind::Finished)).unwrap();
    let report = del.finish(Duration::from_secs(30));
    let seen = up.seen.lock().unwrap().clone();
    assert_eq!(seen, (0..51).map(uuid).collect::<Vec<_>>());
    assert_eq!(report.sinks[0].pending, 0);
}

#[test]
fn file_sink_through_the_spool_with_a_transform() {
    let d = tempfile::tempdir().unwrap();
    let rt = rt();
    let out = d.path().join("vcons");
    let spec = SinkSpec::parse(&format!("file://{}", out.display())).unwrap();
    let name = spec.name.clone();
    let built = vcontap_sinks::spec::build(spec).unwrap();
    let mut c = cfg(d.path());
    c.transforms =
        vec![vcontap_sinks::transform::parse("drop_attachments:sip-message-trace").unwrap()];
    let del = Delivery::start(c, vec![NamedSink { name, built }], rt.handle().clone()).unwrap();
    let _guard = rt.enter();
    for n in 0..300 {
        del.submit(&event(n, 1, EventKind::Finished)).unwrap();
    }
    let report = del.finish(Duration::from_secs(30));
    assert_eq!(report.sinks[0].delivered, 300);
    let day = out.join("2026/01/01");
    let files = std::fs::read_dir(&day).unwrap().count();
    assert_eq!(files, 300);
    let v: serde_json::Value = serde_json::from_slice(
        &std::fs::read(day.join(format!("{}.vcon.json", uuid(42)))).unwrap(),
    )
    .unwrap();
    assert_eq!(v["n"], 42);
    assert_eq!(
        v["attachments"].as_array().unwrap().len(),
        0,
        "transform applied"
    );
}

#[test]
fn spool_full_drop_newest_refuses_and_counts() {
    let d = tempfile::tempdir().unwrap();
    let rt = rt();
    let down = Scripted {
        fail_first: Arc::new(AtomicU32::new(u32::MAX)),
        ..Default::default()
    };
    let mut c = cfg(d.path());
    c.spool.max_bytes = 4000;
    c.when_full = WhenFull::DropNewest;
    c.commit_batch = 1;
    let del = Delivery::start(
        c,
        vec![NamedSink {
            name: "store".into(),
            built: Built::durable(down),
        }],
        rt.handle().clone(),
    )
    .unwrap();
    for n in 0..100 {
        del.submit(&event(n, 1, EventKind::Finished)).unwrap();
    }
    let report = del.finish(Duration::from_millis(100));
    assert!(report.rejected_full > 50, "{report:?}");
    assert_eq!(report.spooled + report.rejected_full, 100);
}

/// An event store that is slow: its queue overflows and drops the oldest events.
struct SlowEvents {
    seen: Arc<Mutex<Vec<(String, u64)>>>,
}

impl EventSink for SlowEvents {
    fn max_batch(&self) -> usize {
        1
    }
    fn publish<'a>(
        &'a mut self,
        batch: &'a [Arc<VconEvent>],
    ) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            for e in batch {
                self.seen.lock().unwrap().push((e.uuid.to_string(), e.seq));
            }
            Ok(())
        })
    }
}

#[test]
fn event_sinks_drop_oldest_and_never_block() {
    let d = tempfile::tempdir().unwrap();
    let rt = rt();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut c = cfg(d.path());
    c.event_queue = 10;
    let del = Delivery::start(
        c,
        vec![NamedSink {
            name: "events".into(),
            built: Built {
                sink: None,
                events: Some(Box::new(SlowEvents { seen: seen.clone() })),
            },
        }],
        rt.handle().clone(),
    )
    .unwrap();
    let t = std::time::Instant::now();
    for seq in 1..=200 {
        del.submit(&event(1, seq, EventKind::Updated)).unwrap();
    }
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "submit must not wait for the store"
    );
    let report = del.finish(Duration::from_secs(10));
    let seen = seen.lock().unwrap().clone();
    assert!(report.events_dropped >= 150, "{report:?}");
    assert_eq!(seen.len() as u64 + report.events_dropped, 200);
    // What got through is in order and ends with the newest events.
    assert!(seen.windows(2).all(|w| w[0].1 < w[1].1));
    assert_eq!(seen.last().unwrap().1, 200);
}

/// Sink tasks that were never polled before `finish` (the runtime's only worker is busy
/// when delivery starts and finishes) must still see the head and the stop signal: both
/// are set with `send_replace`, which updates the value even when nobody has subscribed
/// yet (`send` would leave it unchanged, and the task waited for the drain deadline).
#[test]
fn a_quick_finish_before_any_task_ran_does_not_wait_for_the_deadline() {
    for n in [0u32, 10] {
        let d = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        // Occupy the only worker so the sink task is not polled before `finish`.
        rt.spawn(async { std::thread::sleep(Duration::from_millis(800)) });
        std::thread::sleep(Duration::from_millis(50));
        let store = Scripted::default();
        let del = Delivery::start(
            cfg(d.path()),
            vec![NamedSink {
                name: "store".into(),
                built: Built::durable(store.clone()),
            }],
            rt.handle().clone(),
        )
        .unwrap();
        for i in 0..n {
            del.submit(&event(i, 1, EventKind::Finished)).unwrap();
        }
        let t = std::time::Instant::now();
        let report = del.finish(Duration::from_secs(30));
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "{n}: took {:?}",
            t.elapsed()
        );
        assert_eq!(report.sinks[0].delivered, u64::from(n));
        assert_eq!(store.seen.lock().unwrap().len(), n as usize);
    }
}
