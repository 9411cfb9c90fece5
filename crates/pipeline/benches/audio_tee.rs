//! `cargo bench -p vcontap-pipeline --bench audio_tee`: what the live audio tee costs the
//! media writer thread per 20 ms stereo chunk (8 kHz: 320 samples), with 0, 1, 10 and 64
//! (the most per call) subscribers of the call draining on other threads, and, with writes
//! paced at one chunk per 100 µs, how long a chunk takes from the write to a subscriber's
//! `poll` woken by its waker (p50/p99; the WebSocket adds the socket on top).
//!
//! Plain `std::time` with `harness = false`: one number per case, no criterion in this
//! crate's dev build.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vcontap_engine::{EventKind, SegmentId, StoredSegment, VconEvent};
use vcontap_pipeline::{
    AudioTee, FinishedSegment, MediaStore, Polled, SegmentMeta, SegmentWriter, TeeItem,
};
use vcontap_wire::Timestamp;

/// A store that keeps nothing: only the tee is measured.
struct Null;
impl MediaStore for Null {
    fn open(&self, _: &SegmentMeta) -> std::io::Result<Box<dyn SegmentWriter>> {
        Ok(Box::new(Null))
    }
}
impl SegmentWriter for Null {
    fn write(&mut self, s: &[i16]) -> std::io::Result<()> {
        std::hint::black_box(s);
        Ok(())
    }
    fn finish(self: Box<Self>) -> std::io::Result<Box<dyn FinishedSegment>> {
        Ok(Box::new(Null))
    }
}
impl FinishedSegment for Null {
    fn complete(self: Box<Self>) -> std::io::Result<StoredSegment> {
        Err(std::io::Error::other("unused"))
    }
}

fn event(uuid: &Arc<str>, kind: EventKind) -> VconEvent {
    VconEvent {
        uuid: uuid.clone(),
        seq: 1,
        kind,
        at: Timestamp(0),
        reason: None,
        vcon_json: "{}".into(),
    }
}

fn case(subs: usize, chunks: u64, pace: Option<Duration>) {
    let tee = AudioTee::wrap(Arc::new(Null));
    let uuid: Arc<str> = "019b76da-a800-895e-829f-2737e1fe9678".into();
    tee.on_event(&event(&uuid, EventKind::Created));
    let stop = Arc::new(AtomicBool::new(false));
    // Write times by chunk offset, for the write → poll latency.
    let sent: Arc<Vec<std::sync::atomic::AtomicU64>> =
        Arc::new((0..chunks).map(|_| Default::default()).collect());
    let t0 = Instant::now();
    let lat: Arc<Mutex<Vec<u64>>> = Arc::default();
    let mut drains = Vec::new();
    for i in 0..subs {
        let (stop, sent, lat) = (stop.clone(), sent.clone(), lat.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        let tee2 = tee.clone();
        let uuid2 = uuid.clone();
        drains.push(std::thread::spawn(move || {
            // Woken like the WebSocket task is (its waker is a `Notify`): unpark.
            let me = std::thread::current();
            let sub = tee2
                .subscribe(&uuid2, 1 << 18, Arc::new(move || me.unpark()))
                .unwrap();
            tx.send(()).unwrap();
            let mut mine = Vec::new();
            loop {
                match sub.poll(256) {
                    Polled::Items(items) => {
                        let now = t0.elapsed().as_nanos() as u64;
                        for it in items {
                            if let TeeItem::Audio { offset, .. } = it {
                                // The first subscriber samples the latency.
                                if i == 0 {
                                    let at = sent[(offset / 160) as usize].load(Ordering::Acquire);
                                    mine.push(now.saturating_sub(at));
                                }
                            }
                        }
                    }
                    Polled::Empty if stop.load(Ordering::Relaxed) => break,
                    Polled::Empty => std::thread::park_timeout(Duration::from_millis(5)),
                    Polled::Ended => break,
                }
            }
            lat.lock().unwrap().extend(mine);
            sub.dropped_samples()
        }));
        rx.recv().unwrap();
    }
    let meta = SegmentMeta {
        segment: SegmentId(1),
        uuid: uuid.clone(),
        index: 0,
        rate: 8000,
        channels: 2,
    };
    let mut w = tee.open(&meta).unwrap();
    let chunk: Vec<i16> = (0..320).map(|i| i as i16).collect();
    let start = Instant::now();
    for c in 0..chunks {
        if let Some(p) = pace {
            let due = start + p * c as u32;
            while Instant::now() < due {
                std::hint::spin_loop();
            }
        }
        if subs > 0 {
            sent[c as usize].store(t0.elapsed().as_nanos() as u64, Ordering::Release);
        }
        w.write(&chunk).unwrap();
    }
    let took = start.elapsed();
    drop(w.finish().unwrap());
    tee.on_event(&event(&uuid, EventKind::Finished));
    stop.store(true, Ordering::Relaxed);
    let dropped: u64 = drains.into_iter().map(|d| d.join().unwrap()).sum();
    let mut lat = std::mem::take(&mut *lat.lock().unwrap());
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .map_or(0.0, |&n| n as f64 / 1000.0)
    };
    match pace {
        None => println!(
            "subscribers {subs:>2}: {:>6.0} ns per 20 ms chunk written ({:.2} M chunks/s), dropped samples {dropped}",
            took.as_nanos() as f64 / chunks as f64,
            chunks as f64 / took.as_secs_f64() / 1e6,
        ),
        Some(p) => println!(
            "subscribers {subs:>2}, a chunk every {} µs: write → poll p50 {:.1} µs, p99 {:.1} µs, dropped samples {dropped}",
            p.as_micros(),
            pct(0.5),
            pct(0.99),
        ),
    }
}

fn main() {
    // `cargo bench` passes `--bench`; anything else (e.g. `cargo test --benches`) runs short.
    let full = std::env::args().any(|a| a == "--bench");
    let chunks = if full { 200_000 } else { 2_000 };
    for subs in [0, 1, 10, 64] {
        case(subs, chunks, None);
    }
    for subs in [1, 10, 64] {
        case(subs, chunks / 10, Some(Duration::from_micros(100)));
    }
}
