//! Hub unit tests: real `VconEvent`s through a real hub and real subscriptions.

use super::*;
use vcontap_wire::Timestamp;

fn vcon(uuid: &str, state: &str, tel: &str, dialogs: usize) -> String {
    let d: Vec<Value> = (0..dialogs)
        .map(|i| json!({"type": "recording", "start": format!("t{i}")}))
        .collect();
    json!({
        "vcon": "0.4.0", "uuid": uuid,
        "parties": [{"tel": tel, "name": "Alice Example"}, {"sip": "sip:bob@example.com"}],
        "dialog": d,
        "vcontap": {"state": state, "invite_at": "2026-01-01T00:00:00Z"},
    })
    .to_string()
}

fn ev(uuid: &str, seq: u64, kind: EventKind, state: &str, dialogs: usize) -> VconEvent {
    VconEvent {
        uuid: uuid.into(),
        seq,
        kind,
        at: Timestamp(1_767_225_600_000_000_000 + seq as i64 * 1_000_000_000),
        reason: None,
        vcon_json: vcon(uuid, state, "+15551230000", dialogs).into(),
    }
}

fn json_of(f: &Frame) -> Value {
    serde_json::from_slice(&f.json).unwrap()
}

/// The `data:` of an SSE frame is exactly the JSON, and the frame is well formed.
fn check_sse(f: &Frame) {
    let s = std::str::from_utf8(&f.sse).unwrap();
    assert!(s.ends_with("\n\n"));
    let data = s.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
    assert_eq!(data.as_bytes(), &f.json[..]);
}

#[tokio::test]
async fn joiner_gets_snapshots_then_live_events_in_order() {
    let hub = Hub::new(HubConfig::default());
    hub.publish(&ev("a", 1, EventKind::Created, "calling", 0));
    hub.publish(&ev("a", 2, EventKind::Updated, "answered", 0));
    let mut s = hub.subscribe(SubscribeOptions::default()).unwrap();
    assert_eq!(hub.stats.subscribers.load(Relaxed), 1);
    hub.publish(&ev("a", 3, EventKind::Segment, "answered", 1));
    hub.publish(&ev("a", 4, EventKind::Finished, "finished", 1));
    hub.close();
    let mut got = Vec::new();
    while let Some(f) = s.next().await {
        check_sse(&f);
        let v = json_of(&f);
        got.push((
            v["seq"].as_u64().unwrap(),
            v["kind"].as_str().unwrap().to_string(),
        ));
        assert_eq!(v["vcon"]["uuid"], "a");
    }
    assert_eq!(
        got,
        vec![
            (2, "updated".into()),
            (3, "segment".into()),
            (4, "finished".into())
        ]
    );
    // Finished: out of the live list, still served from the recent cache.
    assert!(hub.calls(&Filter::default()).is_empty());
    assert!(hub.vcon("a").unwrap().contains("\"finished\""));
    drop(s);
    assert_eq!(hub.stats.subscribers.load(Relaxed), 0);
}

#[tokio::test]
async fn filters_by_uuid_party_state_and_kind() {
    let hub = Hub::new(HubConfig::default());
    let f = Filter::parse(None, Some("BOB@EXAMPLE"), Some("answered"), Some("updated")).unwrap();
    let mut s = hub
        .subscribe(SubscribeOptions {
            filter: f,
            ..Default::default()
        })
        .unwrap();
    hub.publish(&ev("a", 1, EventKind::Created, "calling", 0));
    hub.publish(&ev("a", 2, EventKind::Updated, "answered", 0));
    hub.publish(&ev("a", 3, EventKind::Updated, "held", 0));
    hub.close();
    let f = s.next().await.unwrap();
    assert_eq!(json_of(&f)["seq"], 2);
    assert!(s.next().await.is_none());

    let hub = Hub::new(HubConfig::default());
    let mut s = hub
        .subscribe(SubscribeOptions {
            filter: Filter::parse(Some("b,c"), Some("+1555123"), None, None).unwrap(),
            ..Default::default()
        })
        .unwrap();
    hub.publish(&ev("a", 1, EventKind::Created, "calling", 0));
    hub.publish(&ev("b", 1, EventKind::Created, "calling", 0));
    hub.close();
    assert_eq!(json_of(&s.next().await.unwrap())["uuid"], "b");
    assert!(s.next().await.is_none());
    let calls = hub.calls(&Filter::parse(None, Some("alice"), Some("calling"), None).unwrap());
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0]["parties"][0]["tel"], "+15551230000");
    assert_eq!(calls[0]["started"], "2026-01-01T00:00:00Z");
}

#[test]
fn malformed_filters_are_refused() {
    assert!(matches!(
        Filter::parse(None, None, None, Some("created,exploded")),
        Err(HubError::BadFilter(_))
    ));
    let many = vec!["x"; 101].join(",");
    assert!(Filter::parse(Some(&many), None, None, None).is_err());
    assert!(Filter::parse(None, Some(&"p".repeat(300)), None, None).is_err());
    assert!(Filter::parse(Some(""), Some(""), Some(""), Some("")).is_ok());
}

#[tokio::test]
async fn delta_patches_reproduce_every_snapshot_with_periodic_full() {
    let hub = Hub::new(HubConfig {
        full_every: 4,
        ..HubConfig::default()
    });
    let mut s = hub
        .subscribe(SubscribeOptions {
            delta: true,
            ..Default::default()
        })
        .unwrap();
    let mut expected = Vec::new();
    for seq in 1..=12u64 {
        let kind = if seq == 1 {
            EventKind::Created
        } else {
            EventKind::Segment
        };
        let e = ev("a", seq, kind, "answered", seq as usize);
        expected.push(serde_json::from_str::<Value>(&e.vcon_json).unwrap());
        hub.publish(&e);
    }
    hub.close();
    let mut doc = Value::Null;
    let (mut full, mut patches) = (0, 0);
    let mut i = 0;
    while let Some(f) = s.next().await {
        let v = json_of(&f);
        if let Some(p) = v.get("patch") {
            patch::tests::apply(&mut doc, p.as_array().unwrap());
            patches += 1;
        } else {
            doc = v["vcon"].clone();
            full += 1;
        }
        assert_eq!(doc, expected[i], "after event {}", i + 1);
        i += 1;
    }
    assert_eq!(i, 12);
    // 1 created + a full at least every 4 events.
    assert_eq!((full, patches), (3, 9));
}

/// After 10 rounds of `a` and `b` into a 4-slot ring nobody read: one `gap` of 16 naming
/// both calls, then rounds 9 and 10, and the hub's counters agree.
async fn expect_gap_of_16_then_rounds_9_and_10(hub: &Hub, gap: &Frame, s: &mut Subscription) {
    let g = json_of(gap);
    assert_eq!(g["kind"], "gap");
    assert_eq!(g["lost"], 16);
    assert_eq!(g["before"], "a:9");
    assert_eq!(g["calls"], json!(["a", "b"]));
    let mut rest = Vec::new();
    while let Some(f) = s.next().await {
        let v = json_of(&f);
        rest.push(format!("{}{}", v["seq"], v["uuid"]));
    }
    assert_eq!(rest, ["9\"a\"", "9\"b\"", "10\"a\"", "10\"b\""]);
    assert_eq!(hub.stats.gaps.load(Relaxed), 1);
    assert_eq!(hub.stats.lost.load(Relaxed), 16);
}

#[tokio::test]
async fn stalled_subscriber_gets_a_gap_naming_what_it_lost() {
    let hub = Hub::new(HubConfig {
        channel: 4,
        ..HubConfig::default()
    });
    let mut s = hub.subscribe(SubscribeOptions::default()).unwrap();
    // The publisher never waits: 20 events into a 4-slot ring with nobody reading.
    for seq in 1..=10u64 {
        hub.publish(&ev("a", seq, EventKind::Updated, "answered", 0));
        hub.publish(&ev("b", seq, EventKind::Updated, "answered", 0));
    }
    hub.close();
    let gap = s.next().await.unwrap();
    assert!(gap.sse.starts_with(b"event: gap\n"));
    expect_gap_of_16_then_rounds_9_and_10(&hub, &gap, &mut s).await;
}

#[tokio::test]
async fn last_event_id_resumes_or_resyncs() {
    let hub = Hub::new(HubConfig::default());
    for seq in 1..=3 {
        hub.publish(&ev("a", seq, EventKind::Updated, "answered", 0));
    }
    let mut s = hub
        .subscribe(SubscribeOptions {
            last_event_id: Some("a:1".into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(json_of(&s.next().await.unwrap())["seq"], 2);
    assert_eq!(json_of(&s.next().await.unwrap())["seq"], 3);
    let mut s = hub
        .subscribe(SubscribeOptions {
            last_event_id: Some("zz:9".into()),
            ..Default::default()
        })
        .unwrap();
    let r = s.next().await.unwrap();
    assert!(r.sse.starts_with(b"event: resync\n"));
    assert_eq!(json_of(&s.next().await.unwrap())["seq"], 3);
}

#[test]
fn subscriber_limit_and_bounded_caches() {
    let hub = Hub::new(HubConfig {
        max_subscribers: 1,
        recent_events: 3,
        finished_vcons: 2,
        egress_lists: vec!["out".into()],
        egress_max: 2,
        ..HubConfig::default()
    });
    let a = hub.subscribe(SubscribeOptions::default()).unwrap();
    assert_eq!(
        hub.subscribe(SubscribeOptions::default()).err(),
        Some(HubError::TooManySubscribers(1))
    );
    drop(a);
    assert!(hub.subscribe(SubscribeOptions::default()).is_ok());
    for u in ["u1", "u2", "u3"] {
        hub.publish(&ev(u, 1, EventKind::Finished, "finished", 0));
    }
    assert!(hub.vcon("u1").is_none());
    assert!(hub.vcon("u3").is_some());
    assert_eq!(hub.lock().recent.len(), 3);
    let popped = hub.egress_pop("out", 10).unwrap();
    assert_eq!(popped, vec![Arc::from("u3"), Arc::from("u2")]);
    assert!(hub.egress_pop("out", 10).unwrap().is_empty());
    assert!(hub.egress_pop("nope", 1).is_none());
    assert_eq!(hub.stats.egress_dropped.load(Relaxed), 1);
}

#[test]
fn malformed_snapshots_do_not_break_the_hub() {
    let hub = Hub::new(HubConfig::default());
    for junk in [
        "",
        "{",
        "[1,2]",
        "{\"parties\":7}",
        "{\"parties\":[{\"tel\":5}]}",
    ] {
        hub.publish(&VconEvent {
            uuid: "j".into(),
            seq: 1,
            kind: EventKind::Created,
            at: Timestamp(0),
            reason: None,
            vcon_json: junk.into(),
        });
    }
    let rows = hub.calls(&Filter::default());
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["uuid"], "j");
}

#[test]
fn calls_show_streams_and_quality_so_far_from_live_snapshots() {
    let hub = Hub::new(HubConfig::default());
    hub.publish(&ev("q", 1, EventKind::Created, "calling", 0));
    let row = &hub.calls(&Filter::default())[0];
    assert_eq!(
        (row["streams"].clone(), row["quality"].clone()),
        (json!(0), Value::Null)
    );
    // A live snapshot with the engine's report so far (`vcontap.rtp_quality`).
    let mut v: Value = serde_json::from_str(&vcon("q", "answered", "+15551230000", 0)).unwrap();
    v["vcontap"]["rtp_quality"] = json!({"streams": [
        {"packets": 150, "loss_percent": 0.0, "quality_estimate": {"mos_cq": 4.41}},
        {"packets": 149, "loss_percent": 0.67},
    ]});
    hub.publish(&VconEvent {
        vcon_json: v.to_string().into(),
        ..ev("q", 2, EventKind::Updated, "answered", 0)
    });
    let row = &hub.calls(&Filter::default())[0];
    assert_eq!(row["streams"], 2);
    assert_eq!(row["quality"]["streams"][0]["packets"], 150);
    assert_eq!(row["quality"]["streams"][1]["loss_percent"], 0.67);
}

/// Subscribers behind a relay get what direct ones get: snapshots at join, then every
/// later event once, in order, even when the relay forwards events older than the join.
#[tokio::test]
async fn relay_subscribers_match_direct_ones_without_duplicates() {
    let hub = Hub::new(HubConfig::default());
    let (relay, handle) = hub.relay();
    hub.publish(&ev("a", 1, EventKind::Created, "calling", 0));
    // Joins while the relay has not yet forwarded `a:1` (it is not running yet).
    let mut via = hub
        .subscribe_via(&handle, SubscribeOptions::default())
        .unwrap();
    let direct = hub.subscribe(SubscribeOptions::default()).unwrap();
    let task = tokio::spawn(relay.run());
    hub.publish(&ev("a", 2, EventKind::Updated, "answered", 0));
    hub.publish(&ev("b", 1, EventKind::Created, "calling", 0));
    hub.publish(&ev("a", 3, EventKind::Finished, "finished", 0));
    hub.close();
    let drain = |mut s: Subscription| async move {
        let mut got = Vec::new();
        while let Some(f) = s.next().await {
            let v = json_of(&f);
            got.push(format!("{}:{}", v["uuid"].as_str().unwrap(), v["seq"]));
        }
        got
    };
    let (a, b) = (drain(via).await, drain(direct).await);
    assert_eq!(a, ["a:1", "a:2", "b:1", "a:3"]);
    assert_eq!(a, b);
    task.await.unwrap();
    // The relay ended with the hub: a late subscriber through it gets the snapshot of the
    // call still live (`b`) and then the end of the stream.
    via = hub
        .subscribe_via(&handle, SubscribeOptions::default())
        .unwrap();
    assert_eq!(json_of(&via.next().await.unwrap())["uuid"], "b");
    assert!(via.next().await.is_none());
    assert_eq!(hub.stats.gaps.load(Relaxed), 0);
}

/// A relay that falls behind the hub skips ahead; its subscribers get a `gap` naming how
/// many events they lost and which calls, then the events after it.
#[tokio::test]
async fn a_lagging_relay_gives_its_subscribers_a_gap() {
    let hub = Hub::new(HubConfig {
        channel: 4,
        ..HubConfig::default()
    });
    let (relay, handle) = hub.relay();
    let mut s = hub
        .subscribe_via(&handle, SubscribeOptions::default())
        .unwrap();
    // The relay is not running: 20 events overflow its 4-slot hub receiver.
    for seq in 1..=10u64 {
        hub.publish(&ev("a", seq, EventKind::Updated, "answered", 0));
        hub.publish(&ev("b", seq, EventKind::Updated, "answered", 0));
    }
    hub.close();
    tokio::spawn(relay.run());
    let gap = s.next().await.unwrap();
    expect_gap_of_16_then_rounds_9_and_10(&hub, &gap, &mut s).await;
}

/// `try_next` hands out what is ready without waiting, with the same gap accounting as
/// `next`, and says nothing once drained (the end of the stream is `next`'s to tell).
#[tokio::test]
async fn try_next_drains_ready_events_and_reports_gaps_like_next() {
    let hub = Hub::new(HubConfig {
        channel: 4,
        ..HubConfig::default()
    });
    let mut s = hub.subscribe(SubscribeOptions::default()).unwrap();
    assert!(s.try_next().is_none());
    for seq in 1..=3u64 {
        hub.publish(&ev("a", seq, EventKind::Updated, "answered", 0));
    }
    let seqs: Vec<u64> = std::iter::from_fn(|| s.try_next())
        .map(|f| json_of(&f)["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2, 3]);
    // Overflow the 4-slot ring: the next ready frame is the gap, then the survivors.
    for seq in 4..=10u64 {
        hub.publish(&ev("a", seq, EventKind::Updated, "answered", 0));
    }
    let g = json_of(&s.try_next().unwrap());
    assert_eq!(
        (g["kind"].as_str(), g["lost"].as_u64()),
        (Some("gap"), Some(3))
    );
    let seqs: Vec<u64> = std::iter::from_fn(|| s.try_next())
        .map(|f| json_of(&f)["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [7, 8, 9, 10]);
    hub.close();
    assert!(s.try_next().is_none());
    assert!(s.next().await.is_none());
    assert_eq!(hub.stats.lost.load(Relaxed), 3);
}
