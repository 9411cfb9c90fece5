//! The live audio tee against the real pipeline: a synthesized capture with holds (so
//! recordings are cut into segments) runs through a Tap whose media store is an
//! [`AudioTee`] in front of [`LocalFiles`]; subscribers joining at `created` and
//! mid-call must receive exactly the PCM of the WAV segments written for the same call
//! (from their join point on), then the end of the call.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use vcontap_engine::{EngineConfig, EventKind, RecordMode};
use vcontap_pipeline::{
    AudioSubscription, AudioTee, Clock, LocalFiles, Polled, SubscribeError, Tap, TapConfig, TeeItem,
};
use vcontap_synth::{generate, SynthConfig};
use vcontap_wire::PcapReader;

fn tmpdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("vcontap-tee-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Per call: segment index → (first offset received, samples from there on).
type Heard = BTreeMap<u32, (u64, Vec<i16>)>;

/// Drains a subscription to its end, checking chunks are contiguous within a segment.
fn drain(sub: &AudioSubscription) -> (Heard, Vec<u32>) {
    let mut heard = Heard::new();
    let mut starts = Vec::new();
    let mut channels = 0u64;
    loop {
        match sub.poll(64) {
            Polled::Items(items) => {
                for it in items {
                    match it {
                        TeeItem::SegmentStart(s) => {
                            starts.push(s.index);
                            channels = u64::from(s.channels);
                        }
                        TeeItem::Audio {
                            index,
                            offset,
                            samples,
                        } => {
                            assert!(channels > 0, "audio before its segment's description");
                            let e = heard.entry(index).or_insert((offset, Vec::new()));
                            assert_eq!(
                                e.0 + e.1.len() as u64 / channels,
                                offset,
                                "chunks of segment {index} are contiguous"
                            );
                            e.1.extend_from_slice(&samples);
                        }
                        TeeItem::SegmentEnd { .. } => {}
                    }
                }
            }
            Polled::Empty => panic!("the call finished, so the subscription must end"),
            Polled::Ended => return (heard, starts),
        }
    }
}

fn wav(path: &std::path::Path) -> Vec<i16> {
    hound::WavReader::open(path)
        .unwrap()
        .samples::<i16>()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn subscribers_hear_the_pcm_of_the_wav_segments() {
    let synth = SynthConfig {
        calls: 6,
        concurrent: 6,
        seconds: 4.0,
        seed: 21,
        hold: true,
        failure_every: 0,
        ..SynthConfig::default()
    };
    let mut pcap = Vec::new();
    generate(&synth, &mut pcap).unwrap();

    let dir = tmpdir("wav");
    let tee = AudioTee::wrap(Arc::new(LocalFiles::new(&dir, None).unwrap()));
    let mut cfg = TapConfig::replay(EngineConfig {
        record: RecordMode::Stereo,
        segment_seconds: 1,
        host: "tee.test".into(),
        ..EngineConfig::default()
    });
    cfg.media = Some(tee.clone());

    // Half the calls are joined at `created`, half at their first `updated` (answer: the
    // join lands somewhere in the first segment, or before it).
    let subs: Arc<Mutex<HashMap<String, (bool, AudioSubscription)>>> = Arc::default();
    let wakes = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicUsize::new(0));
    let (s, t, w, f) = (subs.clone(), tee.clone(), wakes.clone(), finished.clone());
    let mut created = 0usize;
    let mut tap = Tap::new(
        cfg,
        Box::new(move |e| {
            t.on_event(e);
            let mut s = s.lock().unwrap();
            let early = created.is_multiple_of(2);
            let join = match e.kind {
                EventKind::Created => {
                    created += 1;
                    early
                }
                EventKind::Updated => !s.contains_key(&*e.uuid),
                EventKind::Finished => {
                    f.fetch_add(1, Ordering::Relaxed);
                    false
                }
                EventKind::Segment => false,
            };
            if join && !s.contains_key(&*e.uuid) {
                let w = w.clone();
                let waker = Arc::new(move || {
                    w.fetch_add(1, Ordering::Relaxed);
                });
                let sub = t.subscribe(&e.uuid, 1 << 20, waker).unwrap();
                s.insert(e.uuid.to_string(), (e.kind == EventKind::Created, sub));
            }
            Ok(())
        }),
    )
    .unwrap();
    let mut clock = Clock::capture();
    let mut r = PcapReader::new(&pcap[..]).unwrap();
    while let Some(p) = r.next_packet().unwrap() {
        let now = clock.on_packet(p.ts);
        tap.handle_packet(&p, now).unwrap();
    }
    tap.finish(clock.now()).unwrap();
    assert_eq!(finished.load(Ordering::Relaxed), 6);
    assert_eq!(tee.live_calls(), 0, "finished calls leave the tee");

    let subs = std::mem::take(&mut *subs.lock().unwrap());
    assert_eq!(subs.len(), 6, "every call was subscribed to");
    assert!(wakes.load(Ordering::Relaxed) > 0);
    let mut segments_checked = 0;
    let mut multi_segment_calls = 0;
    for (uuid, (at_created, sub)) in &subs {
        assert_eq!(sub.dropped_samples(), 0);
        let (heard, starts) = drain(sub);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with(uuid.as_str()))
            .collect();
        files.sort();
        assert!(!files.is_empty(), "call {uuid} was recorded");
        multi_segment_calls += usize::from(files.len() > 1);
        let first_heard = heard.keys().next().copied().unwrap_or(u32::MAX);
        for (i, name) in files.iter().enumerate() {
            let i = i as u32;
            assert_eq!(name, &format!("{uuid}-{i:03}.wav"));
            let pcm = wav(&dir.join(name));
            match heard.get(&i) {
                Some((offset, samples)) => {
                    // Joined before the segment began, or (only for the first segment
                    // heard by a mid-call joiner) somewhere in it.
                    if *at_created || i > first_heard {
                        assert_eq!(*offset, 0, "{name} heard from its start");
                    }
                    let skip = (*offset * 2) as usize;
                    assert_eq!(samples.len() + skip, pcm.len(), "{name} length");
                    assert!(samples[..] == pcm[skip..], "{name} PCM differs");
                    segments_checked += 1;
                }
                None => {
                    // Only segments entirely before a mid-call join may be missing.
                    assert!(!at_created && i < first_heard, "{name} not heard");
                }
            }
        }
        if *at_created {
            assert_eq!(heard.len(), files.len(), "{uuid}: every segment heard");
            assert_eq!(starts, (0..files.len() as u32).collect::<Vec<_>>());
        }
        // Subscribing after the end is refused.
        assert_eq!(
            tee.subscribe(uuid, 4, Arc::new(|| {})).err(),
            Some(SubscribeError::NotLive)
        );
    }
    assert!(segments_checked >= 12, "{segments_checked}");
    assert!(multi_segment_calls >= 3, "holds and 1 s cuts make segments");
}

#[test]
fn a_full_queue_drops_audio_not_the_end() {
    let synth = SynthConfig {
        calls: 1,
        concurrent: 1,
        seconds: 3.0,
        seed: 5,
        failure_every: 0,
        ..SynthConfig::default()
    };
    let mut pcap = Vec::new();
    generate(&synth, &mut pcap).unwrap();
    let dir = tmpdir("full");
    let tee = AudioTee::wrap(Arc::new(LocalFiles::new(&dir, None).unwrap()));
    let mut cfg = TapConfig::replay(EngineConfig {
        record: RecordMode::Mono,
        host: "tee.test".into(),
        ..EngineConfig::default()
    });
    cfg.media = Some(tee.clone());
    let sub: Arc<Mutex<Option<AudioSubscription>>> = Arc::default();
    let (s, t) = (sub.clone(), tee.clone());
    let mut tap = Tap::new(
        cfg,
        Box::new(move |e| {
            t.on_event(e);
            if e.kind == EventKind::Created {
                *s.lock().unwrap() = Some(t.subscribe(&e.uuid, 2, Arc::new(|| {})).unwrap());
            }
            Ok(())
        }),
    )
    .unwrap();
    let mut clock = Clock::capture();
    let mut r = PcapReader::new(&pcap[..]).unwrap();
    while let Some(p) = r.next_packet().unwrap() {
        let now = clock.on_packet(p.ts);
        tap.handle_packet(&p, now).unwrap();
    }
    tap.finish(clock.now()).unwrap();
    let sub = sub.lock().unwrap().take().unwrap();
    assert!(sub.dropped_samples() > 0, "a queue of 2 chunks overflows");
    let mut audio = 0;
    let mut ended = false;
    for _ in 0..1000 {
        match sub.poll(16) {
            Polled::Items(items) => {
                audio += items
                    .iter()
                    .filter(|i| matches!(i, TeeItem::Audio { .. }))
                    .count();
            }
            Polled::Empty => panic!("must end"),
            Polled::Ended => {
                ended = true;
                break;
            }
        }
    }
    assert!(ended, "the end of the call is never dropped");
    assert!(audio <= 2, "the queue bound holds: {audio}");
}

#[test]
fn a_tee_without_events_does_not_keep_calls() {
    let synth = SynthConfig {
        calls: 3,
        concurrent: 3,
        seconds: 2.0,
        seed: 8,
        hold: true,
        failure_every: 0,
        ..SynthConfig::default()
    };
    let mut pcap = Vec::new();
    generate(&synth, &mut pcap).unwrap();
    let dir = tmpdir("noevents");
    let tee = AudioTee::wrap(Arc::new(LocalFiles::new(&dir, None).unwrap()));
    let mut cfg = TapConfig::replay(EngineConfig {
        record: RecordMode::Stereo,
        host: "tee.test".into(),
        ..EngineConfig::default()
    });
    cfg.media = Some(tee.clone());
    let mut tap = Tap::new(cfg, Box::new(|_| Ok(()))).unwrap();
    let mut clock = Clock::capture();
    let mut r = PcapReader::new(&pcap[..]).unwrap();
    while let Some(p) = r.next_packet().unwrap() {
        let now = clock.on_packet(p.ts);
        tap.handle_packet(&p, now).unwrap();
    }
    let totals = tap.finish(clock.now()).unwrap();
    assert!(totals.media.segments >= 3, "{:?}", totals.media);
    assert_eq!(tee.live_calls(), 0, "slots go when their segment closes");
}

#[test]
fn subscribers_per_call_are_capped() {
    use vcontap_pipeline::audio_tee::MAX_SUBSCRIBERS_PER_CALL;
    let dir = tmpdir("cap");
    let tee = AudioTee::wrap(Arc::new(LocalFiles::new(&dir, None).unwrap()));
    let uuid: Arc<str> = "019b76da-a800-895e-829f-2737e1fe9678".into();
    let ev = |kind| vcontap_engine::VconEvent {
        uuid: uuid.clone(),
        seq: 1,
        kind,
        at: vcontap_wire::Timestamp(0),
        reason: None,
        vcon_json: "{}".into(),
    };
    assert_eq!(
        tee.subscribe(&uuid, 4, Arc::new(|| {})).err(),
        Some(SubscribeError::NotLive)
    );
    tee.on_event(&ev(EventKind::Created));
    let mut subs: Vec<_> = (0..MAX_SUBSCRIBERS_PER_CALL)
        .map(|_| tee.subscribe(&uuid, 4, Arc::new(|| {})).unwrap())
        .collect();
    assert_eq!(tee.subscribers(), MAX_SUBSCRIBERS_PER_CALL);
    assert_eq!(
        tee.subscribe(&uuid, 4, Arc::new(|| {})).err(),
        Some(SubscribeError::TooMany)
    );
    subs.pop();
    subs.push(tee.subscribe(&uuid, 4, Arc::new(|| {})).unwrap());
    tee.on_event(&ev(EventKind::Finished));
    assert!(subs.iter().all(|s| s.poll(8) == Polled::Ended));
    drop(subs);
    assert_eq!(tee.subscribers(), 0);
}
