//! HEP in, end to end over real loopback sockets: a synthesized capture's SIP and RTP are
//! wrapped into HEP3 (UDP, and TCP in another test), sent to a `HepListener`, fed to a `Tap`
//! with `handle_hep`, and the finished vCons must equal those of the same capture fed
//! as frames. sngrep (Debian `sngrep`), when installed, sends a capture as HEP too. Wrong
//! auth keys and malformed input are counted and the listener keeps working.

use std::borrow::Cow;
use std::io::Write;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use vcontap_engine::{EngineConfig, EventKind, RecordMode};
use vcontap_hep::{encode_v3, HepMessage, ProtoType};
use vcontap_pipeline::{
    Clock, HepConfig, HepListener, HepMeta, HepVia, LocalFiles, Tap, TapConfig,
};
use vcontap_synth::{generate, SipTransport, SynthConfig};
use vcontap_wire::{Decoder, DecoderConfig, PcapReader, Timestamp, Transport};

/// An owned copy of a decoded datagram.
#[derive(Clone, Debug)]
struct Owned {
    ts: Timestamp,
    src: SocketAddr,
    dst: SocketAddr,
    transport: Transport,
    payload: Vec<u8>,
}

fn synth(calls: u32, transport: SipTransport, seed: u64) -> Vec<u8> {
    let cfg = SynthConfig {
        calls,
        concurrent: calls,
        seconds: 2.0,
        seed,
        transport,
        failure_every: 3,
        ..SynthConfig::default()
    };
    let mut pcap = Vec::new();
    generate(&cfg, &mut pcap).unwrap();
    pcap
}

/// Frames of a pcap.
fn last_ts(pcap: &[u8]) -> Timestamp {
    frames(pcap).iter().map(|f| f.0).max().unwrap()
}

fn frames(pcap: &[u8]) -> Vec<(Timestamp, vcontap_wire::LinkType, Vec<u8>, u32)> {
    let mut r = PcapReader::new(pcap).unwrap();
    let mut out = Vec::new();
    while let Some(p) = r.next_packet().unwrap() {
        out.push((p.ts, p.link, p.data.to_vec(), p.orig_len));
    }
    out
}

/// The datagrams the wire decoder makes of a pcap (what a HEP agent would mirror).
fn datagrams(pcap: &[u8]) -> Vec<Owned> {
    let mut dec = Decoder::new(DecoderConfig {
        tcp_framer: Some(vcontap_sip::frame),
        ..DecoderConfig::default()
    });
    let mut out = Vec::new();
    for (ts, link, data, orig_len) in frames(pcap) {
        let pkt = vcontap_wire::RawPacket {
            ts,
            link,
            data: &data,
            orig_len,
        };
        dec.decode(&pkt, &mut |d| {
            out.push(Owned {
                ts: d.ts,
                src: d.src,
                dst: d.dst,
                transport: d.transport,
                payload: d.payload.to_vec(),
            })
        });
    }
    out
}

/// One datagram as HEP3 (heplify-like chunks: node name, capture id, VLAN 0).
fn to_hep(d: &Owned, key: Option<&[u8]>) -> Vec<u8> {
    let sip = vcontap_sip::looks_like_sip(&d.payload) || d.transport != Transport::Udp;
    let m = HepMessage {
        ip_proto: Some(match d.transport {
            Transport::Udp => 17,
            Transport::Tcp => 6,
            Transport::Sctp => 132,
        }),
        src_ip: Some(d.src.ip()),
        dst_ip: Some(d.dst.ip()),
        src_port: Some(d.src.port()),
        dst_port: Some(d.dst.port()),
        ts_secs: Some(u32::try_from(d.ts.secs()).unwrap()),
        ts_micros: Some(d.ts.subsec_nanos() / 1000),
        proto_type: Some(if sip { ProtoType::SIP } else { ProtoType::RTP }),
        capture_id: Some(4242),
        vlan: Some(0),
        node_name: Some(Cow::Borrowed(b"edge-7")),
        auth_key: key.map(Cow::Borrowed),
        payload: Some(Cow::Borrowed(&d.payload)),
        ..HepMessage::default()
    };
    let mut out = Vec::new();
    encode_v3(&m, &mut out).unwrap();
    out
}

type Finished = Arc<Mutex<Vec<Value>>>;

fn tap(record: RecordMode, media_dir: Option<&std::path::Path>) -> (Tap, Finished) {
    let mut cfg = TapConfig::replay(EngineConfig {
        record,
        host: "hep.test".into(),
        ..EngineConfig::default()
    });
    if let Some(dir) = media_dir {
        cfg.media = Some(Arc::new(LocalFiles::new(dir, None).unwrap()));
    }
    let done: Finished = Arc::new(Mutex::new(Vec::new()));
    let d = done.clone();
    let tap = Tap::new(
        cfg,
        Box::new(move |e| {
            if e.kind == EventKind::Finished {
                d.lock()
                    .unwrap()
                    .push(serde_json::from_str(&e.vcon_json).unwrap());
            }
            Ok(())
        }),
    )
    .unwrap();
    (tap, done)
}

fn tmpdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("vcontap-hep-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The vCons of a pcap fed as frames.
fn replay_frames(pcap: &[u8], record: RecordMode, name: &str) -> Vec<Value> {
    let dir = tmpdir(&format!("{name}-frames"));
    let (mut tap, done) = tap(record, Some(&dir));
    let mut clock = Clock::capture();
    for (ts, link, data, orig_len) in frames(pcap) {
        let pkt = vcontap_wire::RawPacket {
            ts,
            link,
            data: &data,
            orig_len,
        };
        let now = clock.on_packet(ts);
        tap.handle_packet(&pkt, now).unwrap();
    }
    tap.finish(clock.now()).unwrap();
    let v = done.lock().unwrap().clone();
    v
}

/// Receives `n` datagrams from the listener (or what came within `limit`), feeds them to a
/// Tap on the capture clock, returns the vCons and the metadata seen.
fn replay_hep(
    l: &mut HepListener,
    n: usize,
    record: RecordMode,
    name: &str,
    limit: Duration,
    end: Timestamp,
) -> (Vec<Value>, Vec<HepMeta>) {
    let dir = tmpdir(&format!("{name}-hep"));
    let (mut tap, done) = tap(record, Some(&dir));
    let mut clock = Clock::capture();
    let mut metas = Vec::new();
    let deadline = Instant::now() + limit;
    let mut got = 0;
    while got < n && Instant::now() < deadline {
        if !l.wait(Duration::from_millis(50)) {
            continue;
        }
        got += l
            .poll(usize::MAX, |d, m| {
                metas.push(m.clone());
                let now = clock.on_packet(d.ts);
                tap.handle_hep(d, m, now)
            })
            .unwrap();
    }
    // The input ends where the capture ends (a frame replay also sees TCP ACKs/FINs that
    // carry no datagram and so never reach HEP).
    tap.finish(clock.now().max(end)).unwrap();
    let v = done.lock().unwrap().clone();
    (v, metas)
}

/// A vCon without what legitimately differs between two runs: recording file URLs, and the
/// HEP agents (`vcontap.hep`, checked by [`hep_agents`]) which frames do not have.
fn comparable(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(o) = v["vcontap"].as_object_mut() {
        o.remove("hep");
    }
    if let Some(ds) = v["dialog"].as_array_mut() {
        for d in ds {
            if let Some(o) = d.as_object_mut() {
                o.remove("url");
            }
        }
    }
    v
}

/// `vcontap.hep` of a vCon: (capture id, node name, packets) per agent, the HEP packet
/// count and whose clock stamped them.
fn hep_agents(v: &Value) -> (Vec<(Value, Value, u64)>, u64, String) {
    let h = &v["vcontap"]["hep"];
    let agents = h["agents"]
        .as_array()
        .unwrap_or_else(|| panic!("no vcontap.hep in {}", v["uuid"]))
        .iter()
        .map(|a| {
            (
                a["capture_id"].clone(),
                a["node_name"].clone(),
                a["packets"].as_u64().unwrap(),
            )
        })
        .collect();
    (
        agents,
        h["packets"].as_u64().unwrap(),
        h["timestamps"].as_str().unwrap().to_string(),
    )
}

fn by_uuid(vs: &[Value]) -> std::collections::BTreeMap<String, Value> {
    vs.iter()
        .map(|v| (v["uuid"].as_str().unwrap().to_string(), comparable(v)))
        .collect()
}

/// Sends datagrams over UDP, pacing so the listener's socket buffer never overflows.
fn send_udp(to: SocketAddr, msgs: &[Vec<u8>], l: &HepListener) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let base = l.stats().received;
    for (i, m) in msgs.iter().enumerate() {
        s.send_to(m, to).unwrap();
        if i % 64 == 63 {
            let t = Instant::now();
            while l.stats().received + 16 < base + i as u64 && t.elapsed() < Duration::from_secs(5)
            {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    }
}

fn listener(key: Option<&[u8]>) -> HepListener {
    let mut cfg = HepConfig::new("127.0.0.1:0".parse().unwrap());
    cfg.auth_key = key.map(<[u8]>::to_vec);
    HepListener::bind(cfg).unwrap()
}

fn dialog_summary(v: &Value) -> Vec<(String, Value, Value)> {
    v["dialog"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|d| {
            (
                d["type"].as_str().unwrap_or("").to_string(),
                d["duration"].clone(),
                d["disposition"].clone(),
            )
        })
        .collect()
}

#[test]
fn hep_over_udp_gives_the_same_vcons_as_frames() {
    let pcap = synth(6, SipTransport::Udp, 7);
    let reference = replay_frames(&pcap, RecordMode::Stereo, "udp");
    assert_eq!(reference.len(), 6);
    let ds = datagrams(&pcap);
    let msgs: Vec<Vec<u8>> = ds.iter().map(|d| to_hep(d, None)).collect();
    let mut l = listener(None);
    let to = l.udp_addr().unwrap();
    let sender = std::thread::scope(|sc| {
        let h = sc.spawn(|| send_udp(to, &msgs, &l));
        h.join().unwrap();
        let t = Instant::now();
        while l.stats().received < msgs.len() as u64 && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(5));
        }
        l.stats()
    });
    assert_eq!(sender.received, msgs.len() as u64, "{sender:?}");
    let (hep, metas) = replay_hep(
        &mut l,
        ds.len(),
        RecordMode::Stereo,
        "udp",
        Duration::from_secs(20),
        last_ts(&pcap),
    );
    let stats = l.shutdown();
    assert_eq!(stats.decoded, msgs.len() as u64, "{stats:?}");
    assert_eq!(stats.forwarded, msgs.len() as u64, "{stats:?}");
    assert_eq!(stats.malformed_total(), 0);
    assert!(
        stats.of_type("sip") > 0 && stats.of_type("rtp") > 0,
        "{stats:?}"
    );
    assert_eq!(
        stats.of_type("sip") + stats.of_type("rtp"),
        msgs.len() as u64
    );
    // Metadata is kept per datagram.
    assert_eq!(metas.len(), ds.len());
    assert!(metas.iter().all(|m| m.capture_id == Some(4242)
        && m.node_name.as_deref() == Some("edge-7")
        && m.via == HepVia::Udp
        && !m.arrival_time
        && m.version == 3));
    // The same calls, byte for byte apart from recording URLs: uuids, parties, dialogs
    // with durations and content hashes, outcomes, RTP quality, SIP trace.
    assert_eq!(hep.len(), reference.len());
    let (a, b) = (by_uuid(&reference), by_uuid(&hep));
    for (uuid, v) in &a {
        let w = b
            .get(uuid)
            .unwrap_or_else(|| panic!("{uuid} missing from HEP"));
        assert_eq!(dialog_summary(v), dialog_summary(w), "{uuid}");
        assert_eq!(v["parties"], w["parties"], "{uuid}");
        assert_eq!(v, w, "{uuid}");
    }
    // Every call names the one agent that sent all its packets, on the agent's clock.
    for v in &hep {
        let (agents, packets, clock) = hep_agents(v);
        assert_eq!(
            agents,
            vec![(Value::from(4242), Value::from("edge-7"), packets)],
            "{}",
            v["uuid"]
        );
        assert!(packets >= 3, "{packets}");
        assert_eq!(clock, "agent");
    }
    // Some answered with recordings, some failed.
    let recorded = hep
        .iter()
        .filter(|v| dialog_summary(v).iter().any(|d| d.0 == "recording"))
        .count();
    let failed = hep
        .iter()
        .filter(|v| dialog_summary(v).iter().any(|d| d.0 == "incomplete"))
        .count();
    assert!(recorded >= 3 && failed >= 1, "{recorded} {failed}");
    validate(&hep, "udp");
}

/// SIP from one agent, RTP from another whose messages carried no timestamp, through a
/// Tap with two engine shards (agents are registered with every shard before the batch
/// that names them): each answered call names both agents and says its clocks were mixed.
#[test]
fn calls_name_every_agent_and_whose_clock_through_shards() {
    let pcap = synth(4, SipTransport::Udp, 21);
    let dir = tmpdir("agents");
    let mut cfg = TapConfig::replay(EngineConfig {
        record: RecordMode::None,
        host: "hep.test".into(),
        ..EngineConfig::default()
    });
    cfg.shards = 2;
    cfg.media = Some(Arc::new(LocalFiles::new(&dir, None).unwrap()));
    let done: Finished = Arc::new(Mutex::new(Vec::new()));
    let d = done.clone();
    let mut tap = Tap::new(
        cfg,
        Box::new(move |e| {
            if e.kind == EventKind::Finished {
                d.lock()
                    .unwrap()
                    .push(serde_json::from_str(&e.vcon_json).unwrap());
            }
            Ok(())
        }),
    )
    .unwrap();
    let meta = |capture_id: u32, node: &str, arrival_time: bool| HepMeta {
        version: 3,
        proto_type: 1,
        capture_id: Some(capture_id),
        node_name: Some(Arc::from(node)),
        correlation_id: None,
        peer: "127.0.0.1:9".parse().unwrap(),
        via: HepVia::Udp,
        arrival_time,
    };
    let (sip_agent, rtp_agent) = (meta(11, "sbc-1", false), meta(22, "media-1", true));
    let mut clock = Clock::capture();
    let (mut sip, mut rtp) = (0, 0);
    for o in datagrams(&pcap) {
        let d = vcontap_wire::Datagram {
            ts: o.ts,
            src: o.src,
            dst: o.dst,
            transport: o.transport,
            vlan: None,
            payload: &o.payload,
        };
        let now = clock.on_packet(o.ts);
        if vcontap_sip::looks_like_sip(&o.payload) {
            sip += 1;
            tap.handle_hep(&d, &sip_agent, now).unwrap();
        } else {
            rtp += 1;
            tap.handle_hep(&d, &rtp_agent, now).unwrap();
        }
    }
    assert!(sip > 0 && rtp > 0);
    assert_eq!(tap.agents_overflow(), 0);
    tap.finish(clock.now()).unwrap();
    let vcons = done.lock().unwrap().clone();
    assert_eq!(vcons.len(), 4);
    let mut answered = 0;
    for v in &vcons {
        let (agents, packets, clocks) = hep_agents(v);
        let names: Vec<_> = agents.iter().map(|a| (a.0.clone(), a.1.clone())).collect();
        let total: u64 = agents.iter().map(|a| a.2).sum();
        assert_eq!(total, packets, "{}", v["uuid"]);
        if v["vcontap"]["answered_at"].is_string() {
            answered += 1;
            assert_eq!(
                names,
                vec![
                    (Value::from(11), Value::from("sbc-1")),
                    (Value::from(22), Value::from("media-1"))
                ]
            );
            assert_eq!(clocks, "mixed");
        } else {
            assert_eq!(names[0], (Value::from(11), Value::from("sbc-1")));
        }
    }
    assert!(answered >= 2, "{answered}");
    validate(&vcons, "agents");
}

#[test]
fn hep_over_tcp_gives_the_same_vcons_as_frames() {
    // SIP over TCP in the capture: HEP says proto 6 and the engine gets whole messages.
    let pcap = synth(4, SipTransport::Tcp, 11);
    let reference = replay_frames(&pcap, RecordMode::None, "tcp");
    assert_eq!(reference.len(), 4);
    let ds = datagrams(&pcap);
    assert!(ds.iter().any(|d| d.transport == Transport::Tcp));
    let stream: Vec<u8> = ds.iter().flat_map(|d| to_hep(d, None)).collect();
    let mut l = listener(None);
    let mut c = TcpStream::connect(l.tcp_addr().unwrap()).unwrap();
    // Odd write sizes: messages straddle reads.
    for piece in stream.chunks(1777) {
        c.write_all(piece).unwrap();
    }
    c.flush().unwrap();
    let (hep, metas) = replay_hep(
        &mut l,
        ds.len(),
        RecordMode::None,
        "tcp",
        Duration::from_secs(20),
        last_ts(&pcap),
    );
    drop(c);
    let stats = l.shutdown();
    assert_eq!(stats.forwarded, ds.len() as u64, "{stats:?}");
    assert_eq!(stats.tcp_accepted, 1);
    assert!(metas.iter().all(|m| m.via == HepVia::Tcp));
    let (a, b) = (by_uuid(&reference), by_uuid(&hep));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (uuid, v) in &a {
        let w = &b[uuid];
        for k in v.as_object().unwrap().keys() {
            assert_eq!(v[k], w[k], "{uuid} {k}");
        }
    }
}

#[test]
fn wrong_or_missing_auth_key_is_dropped_and_counted() {
    let pcap = synth(1, SipTransport::Udp, 3);
    let ds = datagrams(&pcap);
    let d = ds.first().unwrap();
    let mut l = listener(Some(b"s3cret"));
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = l.udp_addr().unwrap();
    s.send_to(&to_hep(d, Some(b"wrong")), to).unwrap();
    s.send_to(&to_hep(d, None), to).unwrap();
    s.send_to(&to_hep(d, Some(b"s3cre")), to).unwrap();
    s.send_to(&to_hep(d, Some(b"s3cret")), to).unwrap();
    assert!(l.wait(Duration::from_secs(5)));
    let got = l.try_recv().unwrap();
    assert_eq!(got.payload, d.payload);
    // TCP is checked the same way.
    let mut c = TcpStream::connect(l.tcp_addr().unwrap()).unwrap();
    c.write_all(&to_hep(d, Some(b"nope"))).unwrap();
    c.write_all(&to_hep(d, Some(b"s3cret"))).unwrap();
    assert!(l.wait(Duration::from_secs(5)));
    assert_eq!(l.try_recv().unwrap().meta.via, HepVia::Tcp);
    let st = l.stats();
    assert_eq!(st.auth_failed, 4, "{st:?}");
    assert_eq!(st.forwarded, 2, "{st:?}");
    assert!(l.try_recv().is_none());
}

#[test]
fn malformed_hep_is_counted_and_the_listener_keeps_working() {
    let pcap = synth(1, SipTransport::Udp, 5);
    let ds = datagrams(&pcap);
    let good = to_hep(ds.first().unwrap(), None);
    let mut l = listener(None);
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = l.udp_addr().unwrap();
    let mut cut = good.clone();
    cut.truncate(good.len() - 3);
    let mut zero_chunk = good.clone();
    zero_chunk[10..12].copy_from_slice(&[0, 0]); // first chunk's length
    let mut huge = good.clone();
    huge[4..6].copy_from_slice(&[0xff, 0xff]);
    let bad: Vec<(&[u8], &str)> = vec![
        (b"\x00", "too_short"),
        (b"GET / HTTP/1.1\r\n\r\n", "unknown_version"),
        (&cut, "length_beyond_packet"),
        (&huge, "length_beyond_packet"),
        (&zero_chunk, "bad_chunk_length"),
        (b"\x1f\x8b\x08\x00garbage", "bad_compression"),
        (b"HEP3\x00\x03", "bad_length"),
        (b"\x02\x10\x07\x11", "bad_family"),
    ];
    for (b, _) in &bad {
        s.send_to(b, to).unwrap();
    }
    // A keep-alive (no payload), a log line and JSON RTCP: counted, not forwarded.
    let mut ka = Vec::new();
    encode_v3(
        &HepMessage {
            keepalive: Some(30),
            ..HepMessage::default()
        },
        &mut ka,
    )
    .unwrap();
    s.send_to(&ka, to).unwrap();
    for (t, body) in [
        (100u8, &b"log line"[..]),
        (5, &b"{\"type\":200}"[..]),
        (0x22, b"{}"),
    ] {
        let mut m = Vec::new();
        encode_v3(
            &HepMessage {
                proto_type: Some(ProtoType(t)),
                correlation_id: Some(Cow::Borrowed(b"call@x")),
                payload: Some(Cow::Borrowed(body)),
                ..HepMessage::default()
            },
            &mut m,
        )
        .unwrap();
        s.send_to(&m, to).unwrap();
    }
    s.send_to(&good, to).unwrap();
    assert!(l.wait(Duration::from_secs(5)));
    let got = l.try_recv().unwrap();
    assert_eq!(got.payload, ds[0].payload);
    let st = l.stats();
    for (_, reason) in &bad {
        assert!(st.malformed_by(reason) >= 1, "{reason}: {st:?}");
    }
    assert_eq!(st.malformed_total(), bad.len() as u64, "{st:?}");
    assert_eq!(st.no_payload, 1);
    assert_eq!(st.logs, 1);
    assert_eq!(st.rtcp_json, 1);
    assert_eq!(st.unsupported_type, 1);
    assert_eq!(st.forwarded, 1);
    // TCP: garbage closes that connection (counted); a new connection works.
    let mut c = TcpStream::connect(l.tcp_addr().unwrap()).unwrap();
    c.write_all(&good).unwrap();
    c.write_all(b"HEP2 not hep at all").unwrap();
    assert!(l.wait(Duration::from_secs(5)));
    assert!(l.try_recv().is_some());
    let t = Instant::now();
    while l.stats().tcp_bad_framing == 0 && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(l.stats().tcp_bad_framing, 1);
    let mut c2 = TcpStream::connect(l.tcp_addr().unwrap()).unwrap();
    c2.write_all(&good).unwrap();
    assert!(l.wait(Duration::from_secs(5)));
    assert!(l.try_recv().is_some());
    drop(c);
    let st = l.shutdown();
    assert_eq!(st.forwarded, 3, "{st:?}");
    assert_eq!(st.tcp_accepted, 2);
}

/// What other agents send: HEPv2 (Kamailio's little-endian, padded time block), a gzipped
/// datagram (heplify `payload_zip`), a zlib payload chunk (captagent), binary RTCP, a v3
/// message without timestamp (arrival time), all through the listener.
#[test]
fn legacy_and_compressed_hep_through_the_listener() {
    use flate2::write::{GzEncoder, ZlibEncoder};
    use flate2::Compression;
    let sip = b"OPTIONS sip:probe@example.com SIP/2.0\r\nCall-ID: opt-1\r\nCSeq: 1 OPTIONS\r\n\r\n";
    let mut v2 = vec![2u8, 16, 2, 17];
    v2.extend_from_slice(&5060u16.to_be_bytes());
    v2.extend_from_slice(&5070u16.to_be_bytes());
    v2.extend_from_slice(&[192, 0, 2, 1, 192, 0, 2, 2]);
    v2.extend_from_slice(&1_767_225_600u32.to_le_bytes());
    v2.extend_from_slice(&250_000u32.to_le_bytes());
    v2.extend_from_slice(&7u16.to_le_bytes());
    v2.extend_from_slice(&[0, 0]);
    v2.extend_from_slice(sip);

    let base = HepMessage {
        ip_proto: Some(17),
        src_ip: Some("198.51.100.1".parse().unwrap()),
        dst_ip: Some("198.51.100.2".parse().unwrap()),
        src_port: Some(30000),
        dst_port: Some(40000),
        ts_secs: Some(1_767_225_601),
        ts_micros: Some(5),
        ..HepMessage::default()
    };
    let enc = |m: &HepMessage| {
        let mut o = Vec::new();
        encode_v3(m, &mut o).unwrap();
        o
    };
    let plain = enc(&HepMessage {
        proto_type: Some(ProtoType::SIP),
        payload: Some(Cow::Borrowed(sip)),
        ..base.clone()
    });
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(&plain).unwrap();
    let gzipped = gz.finish().unwrap();
    let mut z = ZlibEncoder::new(Vec::new(), Compression::default());
    z.write_all(sip).unwrap();
    let mut zchunk = enc(&HepMessage {
        proto_type: Some(ProtoType::SIP),
        ..base.clone()
    });
    let zbody = z.finish().unwrap();
    zchunk.extend_from_slice(&[0, 0, 0, 0x10]);
    zchunk.extend_from_slice(&u16::try_from(zbody.len() + 6).unwrap().to_be_bytes());
    zchunk.extend_from_slice(&zbody);
    let total = u16::try_from(zchunk.len()).unwrap().to_be_bytes();
    zchunk[4..6].copy_from_slice(&total);
    let rtcp_sr = [
        0x80u8, 200, 0, 6, 1, 2, 3, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    let rtcp = enc(&HepMessage {
        proto_type: Some(ProtoType::RTCP),
        payload: Some(Cow::Borrowed(&rtcp_sr)),
        ..base.clone()
    });
    let no_ts = enc(&HepMessage {
        proto_type: Some(ProtoType::SIP),
        payload: Some(Cow::Borrowed(sip)),
        ts_secs: None,
        ts_micros: None,
        ..base.clone()
    });

    let mut l = listener(None);
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = l.udp_addr().unwrap();
    for m in [&v2, &gzipped, &zchunk, &rtcp, &no_ts] {
        s.send_to(m, to).unwrap();
    }
    let mut got = Vec::new();
    let t = Instant::now();
    while got.len() < 5 && t.elapsed() < Duration::from_secs(5) {
        if l.wait(Duration::from_millis(50)) {
            got.push(l.try_recv().unwrap());
        }
    }
    assert_eq!(got.len(), 5, "{:?}", l.stats());
    let (v2d, gzd, zd, rtcpd, nots) = (&got[0], &got[1], &got[2], &got[3], &got[4]);
    assert_eq!(v2d.meta.version, 2);
    assert_eq!(v2d.meta.capture_id, Some(7));
    assert_eq!(v2d.ts, Timestamp::from_parts(1_767_225_600, 250_000_000));
    assert_eq!(v2d.src, "192.0.2.1:5060".parse().unwrap());
    assert_eq!(v2d.dst, "192.0.2.2:5070".parse().unwrap());
    assert_eq!(v2d.payload, sip);
    for d in [gzd, zd] {
        assert_eq!(d.payload, sip);
        assert_eq!(d.ts, Timestamp::from_parts(1_767_225_601, 5_000));
        assert_eq!(d.transport, Transport::Udp);
    }
    assert_eq!(rtcpd.payload, rtcp_sr);
    assert_eq!(rtcpd.meta.proto_type, 5);
    assert!(nots.meta.arrival_time);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((nots.ts.secs() - now).abs() < 60);
    let st = l.shutdown();
    assert_eq!(st.ts_arrival, 1);
    assert_eq!(st.forwarded, 5);
    assert_eq!(st.malformed_total(), 0);
}

#[test]
fn sngrep_sends_a_capture_as_hep() {
    let Ok(out) = std::process::Command::new("sngrep")
        .arg("--version")
        .output()
    else {
        eprintln!("skipped: sngrep is not installed (Debian package `sngrep`)");
        return;
    };
    assert!(out.status.success());
    let pcap = synth(5, SipTransport::Udp, 13);
    let reference = replay_frames(&pcap, RecordMode::None, "sngrep");
    let dir = tmpdir("sngrep-pcap");
    let file = dir.join("calls.pcap");
    std::fs::write(&file, &pcap).unwrap();
    let sip_messages = datagrams(&pcap)
        .iter()
        .filter(|d| vcontap_sip::looks_like_sip(&d.payload))
        .count();
    let mut l = listener(None);
    let to = l.udp_addr().unwrap();
    // -N: no interface, -q: quiet, -F: ignore any sngreprc, -I: read the file, -H: send HEP.
    let status = std::process::Command::new("sngrep")
        .args(["-N", "-q", "-F", "-I"])
        .arg(&file)
        .arg("-H")
        .arg(format!("udp:{to}"))
        .stdin(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let (hep, metas) = replay_hep(
        &mut l,
        sip_messages,
        RecordMode::None,
        "sngrep",
        Duration::from_secs(10),
        last_ts(&pcap),
    );
    let st = l.shutdown();
    assert_eq!(st.forwarded, sip_messages as u64, "{st:?}");
    assert_eq!(
        st.of_type("sip"),
        sip_messages as u64,
        "sngrep sends SIP only"
    );
    // sngrep's default capture id 2002, written 16-bit swapped into the u32.
    assert!(
        metas.iter().all(|m| m.capture_id == Some(2002 << 16)),
        "{:?}",
        metas.first()
    );
    // The same calls (uuids, parties, outcomes); sngrep sends no RTP, so no media.
    assert_eq!(hep.len(), reference.len());
    let (a, b) = (by_uuid(&reference), by_uuid(&hep));
    for (uuid, v) in &a {
        let w = b
            .get(uuid)
            .unwrap_or_else(|| panic!("{uuid} missing from sngrep's HEP"));
        assert_eq!(v["parties"], w["parties"], "{uuid}");
        assert_eq!(
            v["vcontap"]["final_status"], w["vcontap"]["final_status"],
            "{uuid}"
        );
        assert_eq!(
            v["vcontap"]["end_reason"], w["vcontap"]["end_reason"],
            "{uuid}"
        );
        let incomplete = |x: &Value| {
            dialog_summary(x)
                .into_iter()
                .filter(|d| d.0 == "incomplete")
                .collect::<Vec<_>>()
        };
        assert_eq!(incomplete(v), incomplete(w), "{uuid}");
        // The agent is named as sngrep wrote its id; its SIP carried sngrep's capture time.
        let raw = hep.iter().find(|x| x["uuid"] == w["uuid"]).unwrap();
        let (agents, packets, clock) = hep_agents(raw);
        assert_eq!(
            agents,
            vec![(Value::from(2002u32 << 16), Value::Null, packets)]
        );
        assert!(packets >= 2, "{uuid} {packets}");
        assert_eq!(clock, "agent");
        // No RTP arrived: no stream in the quality report.
        let streams = w["vcontap"]["rtp_quality"]["streams"]
            .as_array()
            .map_or(0, Vec::len);
        assert_eq!(streams, 0, "{uuid}");
    }
    validate(&hep, "sngrep");
}

/// Decode throughput of the sans-IO decoder and the listener's over loopback UDP.
/// `cargo test -p vcontap-pipeline --release --test hep -- --ignored --nocapture throughput`
#[test]
#[ignore]
fn throughput() {
    let pcap = synth(50, SipTransport::Udp, 17);
    let ds = datagrams(&pcap);
    let msgs: Vec<Vec<u8>> = ds.iter().map(|d| to_hep(d, None)).collect();
    let t = Instant::now();
    let mut n = 0u64;
    let mut bytes = 0usize;
    while t.elapsed() < Duration::from_secs(2) {
        for m in &msgs {
            let d = vcontap_hep::decode(m).unwrap();
            bytes += d.payload_bytes().len();
            n += 1;
        }
    }
    let s = t.elapsed().as_secs_f64();
    eprintln!(
        "decode: {} messages/s ({} payload MB/s, {} msgs of avg {} bytes)",
        (n as f64 / s) as u64,
        (bytes as f64 / s / 1e6) as u64,
        msgs.len(),
        msgs.iter().map(Vec::len).sum::<usize>() / msgs.len()
    );
    // Listener: a sender thread blasts RTP-sized HEP; count what the driver receives.
    let mut l = listener(None);
    let to = l.udp_addr().unwrap();
    let total = 400_000usize;
    let sender = std::thread::spawn(move || {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        let t = Instant::now();
        for i in 0..total {
            let _ = s.send_to(&msgs[i % msgs.len()], to);
        }
        t.elapsed()
    });
    let t = Instant::now();
    let mut got = 0usize;
    let mut idle = 0;
    while idle < 20 {
        if l.wait(Duration::from_millis(50)) {
            idle = 0;
            got += l.poll(usize::MAX, |_, _| Ok::<(), ()>(())).unwrap();
        } else {
            idle += 1;
        }
    }
    let el = t.elapsed().as_secs_f64() - 1.0; // minus the idle tail
    let sent_in = sender.join().unwrap();
    let st = l.shutdown();
    eprintln!(
        "listener: sent {total} in {:.2}s ({} /s), received {} ({} /s), forwarded {}, queue drops {}, kernel/other loss {}",
        sent_in.as_secs_f64(),
        (total as f64 / sent_in.as_secs_f64()) as u64,
        st.received,
        (got as f64 / el) as u64,
        st.forwarded,
        st.queue_dropped,
        total as u64 - st.received
    );
    assert!(got > 0);
}

/// Every vCon through the shared schema validator (skipped with a message when absent).
fn validate(vcons: &[Value], name: &str) {
    let shared = std::env::var_os("VCONTAP_SHARED")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared")
        });
    let tool = shared.join("tools/validate-vcon");
    if !tool.exists() {
        eprintln!("skipped: validate-vcon not found (set VCONTAP_SHARED)");
        return;
    }
    let dir = tmpdir(&format!("{name}-validate"));
    for v in vcons {
        let file = format!("{}.vcon.json", v["uuid"].as_str().unwrap());
        std::fs::write(dir.join(file), serde_json::to_vec(v).unwrap()).unwrap();
    }
    let o = std::process::Command::new(&tool)
        .arg("--quiet")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "validate-vcon: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}
