//! Fuzzes what the live API takes from outside and from snapshots: subscriber filters (query
//! parameters), snapshots of any shape through the hub (party/state extraction, JSON Patch
//! diffs while a delta subscriber exists, `GET /v1/calls` rows), and the diff of two
//! arbitrary JSON documents. Nothing here may panic or allocate without bound.
#![no_main]

use std::sync::Arc;

use vcontap_engine::{EventKind, VconEvent};
use vcontap_live::{patch, Filter, Hub, HubConfig, SubscribeOptions};
use vcontap_wire::Timestamp;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(6, '\u{1}');
    let (uuid, party, state, kind) = (parts.next(), parts.next(), parts.next(), parts.next());
    let a = parts.next().unwrap_or("");
    let b = parts.next().unwrap_or("");
    let filter = Filter::parse(uuid, party, state, kind).unwrap_or_default();

    let hub = Hub::new(HubConfig {
        channel: 4,
        recent_events: 4,
        finished_vcons: 2,
        full_every: 3,
        egress_lists: vec!["e".into()],
        ..HubConfig::default()
    });
    let _sub = hub.subscribe(SubscribeOptions {
        filter: filter.clone(),
        delta: true,
        last_event_id: uuid.map(String::from),
    });
    for (seq, (doc, kind)) in [
        (a, EventKind::Created),
        (b, EventKind::Updated),
        (a, EventKind::Segment),
        (b, EventKind::Finished),
    ]
    .into_iter()
    .enumerate()
    {
        hub.publish(&VconEvent {
            uuid: Arc::from(uuid.unwrap_or("u")),
            seq: seq as u64 + 1,
            kind,
            at: Timestamp(seq as i64),
            reason: None,
            vcon_json: Arc::from(doc),
        });
        let _ = hub.calls(&filter);
    }
    let _ = hub.vcon(uuid.unwrap_or("u"));
    let _ = hub.egress_pop("e", 10);

    if let (Ok(x), Ok(y)) = (
        serde_json::from_str::<serde_json::Value>(a),
        serde_json::from_str::<serde_json::Value>(b),
    ) {
        let mut ops = Vec::new();
        patch::diff(&x, &y, &mut ops);
    }
});
