//! The SIP trace is held as raw message bytes and rendered at the end: its byte cap counts
//! exactly the bytes kept (message + fixed record overhead), and the rendered trace names
//! what was dropped.

mod common;

use std::net::SocketAddr;

use serde_json::Value;
use vcontap_engine::{Engine, EngineConfig, EventKind, Output, RecordMode};
use vcontap_wire::{Datagram, Timestamp, Transport};

const T0: i64 = 1_767_225_600_000_000_000;

fn msg(first: &str, cseq: u32, method: &str, pad: usize) -> String {
    format!(
        "{first}\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK{cseq}\r\nFrom: <sip:a@x>;tag=ta\r\nTo: <sip:b@x>;tag=tb\r\nCall-ID: trace-1\r\nCSeq: {cseq} {method}\r\nX-Pad: {}\r\nAuthorization: Digest secret\r\nContent-Length: 0\r\n\r\n",
        "p".repeat(pad)
    )
}

#[test]
fn trace_cap_counts_the_bytes_really_held() {
    let max_bytes = 4096;
    let mut e = Engine::new(EngineConfig {
        record: RecordMode::None,
        max_trace_bytes: max_bytes,
        ..EngineConfig::default()
    });
    let mut msgs = vec![msg("INVITE sip:b@x SIP/2.0", 1, "INVITE", 0).replace(";tag=tb", "")];
    msgs.push(msg("SIP/2.0 200 OK", 1, "INVITE", 0));
    for i in 0..20 {
        msgs.push(msg("INFO sip:b@x SIP/2.0", 2 + i, "INFO", 300));
    }
    let mut finished = None;
    for (i, m) in msgs.iter().enumerate() {
        let d = Datagram {
            ts: Timestamp(T0 + i as i64 * 1_000_000),
            src: "10.0.0.1:5060".parse::<SocketAddr>().unwrap(),
            dst: "10.0.0.2:5060".parse::<SocketAddr>().unwrap(),
            transport: Transport::Udp,
            vlan: None,
            payload: m.as_bytes(),
        };
        e.handle_datagram(&d);
    }
    e.finish_all(Timestamp(T0 + 1_000_000_000));
    while let Some(o) = e.poll_output() {
        if let Output::Event(ev) = o {
            if ev.kind == EventKind::Finished {
                finished = Some(serde_json::from_str::<Value>(&ev.vcon_json).unwrap());
            }
        }
    }
    let v = finished.expect("finished");
    let parsed: vcontap_vcon::Vcon = serde_json::from_value(v.clone()).unwrap();
    vcontap_vcon::check(&parsed).unwrap();
    common::validate_vcon(std::slice::from_ref(&v));
    let trace = &v["vcontap"]["sip_message_trace"];
    let kept = trace["messages"].as_array().unwrap();
    let dropped = trace["messages_dropped"].as_u64().unwrap();
    assert_eq!(kept.len() as u64 + dropped, msgs.len() as u64);
    // What the cap allows, computed from the raw sizes and a record overhead of at most
    // 128 bytes: the kept messages fit, and one more would not have.
    let sizes: Vec<usize> = msgs.iter().map(String::len).collect();
    let raw_kept: usize = sizes.iter().take(kept.len()).sum();
    assert!(
        raw_kept <= max_bytes,
        "kept {raw_kept} raw bytes under a {max_bytes} cap"
    );
    let next = sizes[kept.len()];
    assert!(
        raw_kept + next + 128 * (kept.len() + 1) > max_bytes,
        "a further message would have fit: the cap is not what is held"
    );
    // Rendered at the end, credentials removed, wire order kept.
    for m in kept {
        let names: Vec<&str> = m["headers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h[0].as_str().unwrap())
            .collect();
        assert!(!names.contains(&"Authorization"));
        assert_eq!(names.first(), Some(&"Via"));
    }
    assert_eq!(kept[0]["method"], "INVITE");
    assert_eq!(kept[1]["status_code"], 200);
}
