//! The Redis sink against a real Redis at 127.0.0.1:6379 (override with
//! `VCONTAP_TEST_REDIS_URL`), which has no RedisJSON: the plain-string document path. The
//! RedisJSON path runs against `fakeredis[json,lua]`'s TCP server when python3 has it
//! (skipped with a message otherwise).
//!
//! Tests run in parallel on one database: every test uses random uuids, its own sorted
//! set, ingress list, stream and channel names, and deletes its keys at the end.
#![cfg(feature = "redis")]

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::redis::aio::MultiplexedConnection;
use bytes::Bytes;
use vcontap_engine::{EventKind, VconEvent};
use vcontap_sinks::redis::{list_uuids, stored_document, stored_uuids};
use vcontap_sinks::spec::build;
use vcontap_sinks::{Built, Outcome, Record, RecordId, SinkSpec};

fn base_url() -> String {
    std::env::var("VCONTAP_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into())
}

fn rand64() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.finish()
}

fn uuid() -> String {
    let (a, b) = (rand64(), rand64());
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        b >> 52,
        b & 0xffff_ffff_ffff
    )
}

/// A short random name for a test's own keys.
fn tag(what: &str) -> String {
    format!("vcontap-test:{what}:{:016x}", rand64())
}

fn vcon(u: &str, created: &str, tel: &str, extra: &str) -> String {
    format!(
        r#"{{"vcon":"0.4.0","uuid":"{u}","created_at":"{created}","parties":[{{"tel":"{tel}","name":"Alice {tel}"}},{{"mailto":"bob-{tel}@example.com","sip":"sip:1001@pbx"}}],"dialog":[],"extra":"{extra}"}}"#
    )
}

fn rec(id: u64, u: &str, json: String) -> Arc<Record> {
    Arc::new(Record {
        id: RecordId(id),
        uuid: u.into(),
        json: Bytes::from(json),
        spooled_unix_ms: 0,
    })
}

async fn redis_at(url: &str) -> MultiplexedConnection {
    let client = ::redis::Client::open(url).unwrap();
    match client.get_multiplexed_async_connection().await {
        Ok(c) => c,
        Err(e) => panic!(
            "Redis is not reachable at {url} ({e}). These tests need a real Redis: start \
             redis-server on 127.0.0.1:6379 or set VCONTAP_TEST_REDIS_URL."
        ),
    }
}

async fn redis() -> MultiplexedConnection {
    redis_at(&base_url()).await
}

async fn cmd<T: ::redis::FromRedisValue>(con: &mut MultiplexedConnection, args: &[&str]) -> T {
    let mut c = ::redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c.query_async(con).await.unwrap()
}

async fn cleanup(con: &mut MultiplexedConnection, keys: &[String]) {
    for k in keys {
        let _: i64 = cmd(con, &["DEL", k]).await;
    }
}

/// Every key a delivered record created.
fn keys_of(u: &str, tel: &str, lists: &[&str]) -> Vec<String> {
    let mut v = vec![
        format!("vcon:{u}"),
        format!("tel:{tel}"),
        format!("name:Alice {tel}"),
        format!("mailto:bob-{tel}@example.com"),
    ];
    for l in lists {
        v.push(format!("vcontap:pushed:{l}:{u}"));
    }
    v
}

fn built(url: &str) -> Built {
    build(SinkSpec::parse(url).unwrap()).unwrap_or_else(|e| panic!("{url}: {e}"))
}

fn tel() -> String {
    format!("+1555{:07}", rand64() % 10_000_000)
}

#[tokio::test]
async fn conserver_layout_in_plain_mode() {
    let mut con = redis().await;
    let (zset, list) = (tag("vcons"), tag("ingress"));
    let url = format!("{}?sorted_set={zset}&ingress={list}", base_url());
    let mut b = built(&url);
    let sink = b.sink.as_mut().unwrap();
    let (u, t) = (uuid(), tel());
    let r = rec(1, &u, vcon(&u, "2026-11-29T20:30:15.750+01:00", &t, "x"));
    let out = sink.deliver(std::slice::from_ref(&r)).await.unwrap();
    assert_eq!(out, vec![Outcome::Delivered]);

    // The document is the exact spooled bytes, as a plain string, without a TTL.
    let doc: Vec<u8> = cmd(&mut con, &["GET", &format!("vcon:{u}")]).await;
    assert_eq!(doc, r.json.to_vec());
    let ttl: i64 = cmd(&mut con, &["TTL", &format!("vcon:{u}")]).await;
    assert_eq!(ttl, -1, "the conserver's links write without TTL");
    // Sorted-set member `vcon:<uuid>`, score created_at in whole seconds (UTC).
    let score: f64 = cmd(&mut con, &["ZSCORE", &zset, &format!("vcon:{u}")]).await;
    assert_eq!(score, 1_795_980_615.0);
    // Index sets hold the uuid and expire within index_ttl.
    for k in [
        format!("tel:{t}"),
        format!("name:Alice {t}"),
        format!("mailto:bob-{t}@example.com"),
    ] {
        let member: bool = cmd(&mut con, &["SISMEMBER", &k, &u]).await;
        assert!(member, "{k} lacks the uuid");
        let ttl: i64 = cmd(&mut con, &["TTL", &k]).await;
        assert!((86_000..=86_400).contains(&ttl), "{k} ttl {ttl}");
    }
    assert_eq!(
        list_uuids(&base_url(), &list).await.unwrap(),
        vec![u.clone()]
    );
    // The read-back helpers.
    assert_eq!(
        stored_uuids(&base_url(), &zset).await.unwrap(),
        vec![u.clone()]
    );
    assert_eq!(
        stored_document(&base_url(), &u).await.unwrap().unwrap(),
        r.json.to_vec()
    );
    sink.close().await;

    let mut keys = keys_of(&u, &t, &[&list]);
    keys.extend([zset, list]);
    cleanup(&mut con, &keys).await;
}

#[tokio::test]
async fn ingress_push_happens_once_across_redeliveries() {
    let mut con = redis().await;
    let (zset, a, b) = (tag("vcons"), tag("in-a"), tag("in-b"));
    let url = format!("{}?sorted_set={zset}&ingress={a},{b}", base_url());
    let mut built = built(&url);
    let sink = built.sink.as_mut().unwrap();
    let t = tel();
    let uuids: Vec<String> = (0..3).map(|_| uuid()).collect();
    let batch: Vec<_> = uuids
        .iter()
        .enumerate()
        .map(|(i, u)| rec(10 + i as u64, u, vcon(u, "2026-11-29T00:00:00Z", &t, "x")))
        .collect();
    for _ in 0..3 {
        let out = sink.deliver(&batch).await.unwrap();
        assert_eq!(out, vec![Outcome::Delivered; 3]);
    }
    // Each list holds each uuid exactly once, in spool order.
    for l in [&a, &b] {
        assert_eq!(list_uuids(&base_url(), l).await.unwrap(), uuids, "{l}");
    }
    // A fresh sink (e.g. after a restart) re-delivering the batch pushes nothing either.
    let mut again = build(SinkSpec::parse(&url).unwrap()).unwrap();
    again.sink.as_mut().unwrap().deliver(&batch).await.unwrap();
    assert_eq!(list_uuids(&base_url(), &a).await.unwrap(), uuids);
    // Markers carry the record id and a TTL (dedup_ttl, default 7 days).
    let m = format!("vcontap:pushed:{a}:{}", uuids[0]);
    let v: String = cmd(&mut con, &["GET", &m]).await;
    assert_eq!(v, "10");
    let ttl: i64 = cmd(&mut con, &["TTL", &m]).await;
    assert!((604_000..=604_800).contains(&ttl), "{ttl}");
    // The index set has the three uuids once each.
    let n: i64 = cmd(&mut con, &["SCARD", &format!("tel:{t}")]).await;
    assert_eq!(n, 3);

    let mut keys = vec![zset, a.clone(), b.clone()];
    for u in &uuids {
        keys.extend(keys_of(u, &t, &[&a, &b]));
    }
    cleanup(&mut con, &keys).await;
}

#[tokio::test]
async fn later_record_of_a_uuid_wins() {
    let mut con = redis().await;
    let (zset, list, list2) = (tag("vcons"), tag("in"), tag("in-repush"));
    let url = format!("{}?sorted_set={zset}&ingress={list}", base_url());
    let mut b = built(&url);
    let sink = b.sink.as_mut().unwrap();
    let (u, t) = (uuid(), tel());
    let first = rec(1, &u, vcon(&u, "2026-11-29T00:00:00Z", &t, "first"));
    let second = rec(2, &u, vcon(&u, "2026-11-29T00:00:00Z", &t, "second"));
    // In one batch, spool order: the later one is what stays.
    let out = sink
        .deliver(&[first.clone(), second.clone()])
        .await
        .unwrap();
    assert_eq!(out, vec![Outcome::Delivered; 2]);
    let doc = stored_document(&base_url(), &u).await.unwrap().unwrap();
    assert_eq!(doc, second.json.to_vec());
    // Across batches too, and a replay of the whole history ends the same.
    sink.deliver(std::slice::from_ref(&first)).await.unwrap();
    sink.deliver(std::slice::from_ref(&second)).await.unwrap();
    assert_eq!(
        stored_document(&base_url(), &u).await.unwrap().unwrap(),
        second.json.to_vec()
    );
    // Default: one push per uuid and list.
    assert_eq!(
        list_uuids(&base_url(), &list).await.unwrap(),
        vec![u.clone()]
    );
    // repush_updates: a newer record is pushed again, a replay of it is not.
    let url2 = format!(
        "{}?sorted_set={zset}&ingress={list2}&repush_updates=true",
        base_url()
    );
    let mut b2 = built(&url2);
    let s2 = b2.sink.as_mut().unwrap();
    s2.deliver(&[first.clone(), second.clone()]).await.unwrap();
    s2.deliver(&[first.clone(), second.clone()]).await.unwrap();
    assert_eq!(
        list_uuids(&base_url(), &list2).await.unwrap(),
        vec![u.clone(), u.clone()]
    );
    assert_eq!(
        stored_uuids(&base_url(), &zset).await.unwrap(),
        vec![u.clone()]
    );

    let mut keys = keys_of(&u, &t, &[&list, &list2]);
    keys.extend([zset, list, list2]);
    cleanup(&mut con, &keys).await;
}

#[tokio::test]
async fn bad_records_are_rejected_and_the_rest_delivered() {
    let mut con = redis().await;
    let zset = tag("vcons");
    let mut b = built(&format!("{}?sorted_set={zset}", base_url()));
    let sink = b.sink.as_mut().unwrap();
    let (u, t) = (uuid(), tel());
    let good = rec(1, &u, vcon(&u, "2026-11-29T00:00:00Z", &t, "x"));
    let batch = vec![
        rec(2, "x", "[]".into()),
        good.clone(),
        rec(
            3,
            &u,
            format!(r#"{{"uuid":"{u}","created_at":"yesterday"}}"#),
        ),
        rec(
            4,
            "../etc",
            r#"{"uuid":"../etc","created_at":"2026-11-29T00:00:00Z"}"#.into(),
        ),
        rec(5, &u, r#"{"uuid":null}"#.into()),
        rec(6, &u, "\u{0}\u{1}garbage".into()),
    ];
    let out = sink.deliver(&batch).await.unwrap();
    assert_eq!(out.len(), 6);
    assert_eq!(out[1], Outcome::Delivered);
    for (i, o) in out.iter().enumerate() {
        if i != 1 {
            assert!(matches!(o, Outcome::Rejected(_)), "{i}: {o:?}");
        }
    }
    // A record Redis itself refuses (the index key holds another type) is rejected, the
    // others of the batch still land.
    let (u2, t2) = (uuid(), tel());
    let _: () = cmd(&mut con, &["SET", &format!("tel:{t2}"), "not a set"]).await;
    let clash = rec(7, &u2, vcon(&u2, "2026-11-29T00:00:00Z", &t2, "x"));
    let out = sink.deliver(&[clash, good]).await.unwrap();
    assert!(
        matches!(&out[0], Outcome::Rejected(r) if r.contains("WRONGTYPE")),
        "{out:?}"
    );
    assert_eq!(out[1], Outcome::Delivered);

    let mut keys = keys_of(&u, &t, &[]);
    keys.extend(keys_of(&u2, &t2, &[]));
    keys.push(zset);
    cleanup(&mut con, &keys).await;
}

#[tokio::test]
async fn ttl_option_and_no_index() {
    let mut con = redis().await;
    let zset = tag("vcons");
    let mut b = built(&format!(
        "{}?sorted_set={zset}&ttl=120&index=false",
        base_url()
    ));
    let sink = b.sink.as_mut().unwrap();
    let (u, t) = (uuid(), tel());
    sink.deliver(&[rec(1, &u, vcon(&u, "2026-11-29T00:00:00Z", &t, "x"))])
        .await
        .unwrap();
    let ttl: i64 = cmd(&mut con, &["TTL", &format!("vcon:{u}")]).await;
    assert!((100..=120).contains(&ttl), "{ttl}");
    let exists: i64 = cmd(&mut con, &["EXISTS", &format!("tel:{t}")]).await;
    assert_eq!(exists, 0);
    cleanup(&mut con, &[format!("vcon:{u}"), zset]).await;
}

/// A port nothing listens on.
fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test]
async fn dead_port_is_a_transient_error() {
    let port = dead_port();
    // Building does no I/O, so vcontap starts while the store is down.
    let mut b = built(&format!(
        "redis://127.0.0.1:{port}/0?ingress=x&events_stream=s&timeout_ms=1000"
    ));
    let u = uuid();
    let r = rec(1, &u, vcon(&u, "2026-11-29T00:00:00Z", "+15550000000", "x"));
    let t0 = Instant::now();
    let e = b.sink.as_mut().unwrap().deliver(&[r]).await.unwrap_err();
    assert!(e.0.contains("connecting"), "{e}");
    assert!(t0.elapsed() < Duration::from_secs(5));
    let ev = event(&u, 1, EventKind::Created, "{}");
    assert!(b.events.as_mut().unwrap().publish(&[ev]).await.is_err());
}

/// A TCP proxy in front of Redis (127.0.0.1:6379) that the test can cut, to kill the
/// sink's connection without touching other tests' connections. Plain threads: the
/// crate's tokio has no `io-util`.
struct Proxy {
    port: u16,
    stop: Arc<std::sync::atomic::AtomicBool>,
    conns: Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
    thread: std::thread::JoinHandle<()>,
}

fn proxy(port: u16) -> Proxy {
    use std::net::{TcpListener, TcpStream};
    use std::sync::atomic::Ordering;
    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let conns: Arc<std::sync::Mutex<Vec<TcpStream>>> = Arc::default();
    let (stop2, conns2) = (stop.clone(), conns.clone());
    let thread = std::thread::spawn(move || {
        while !stop2.load(Ordering::SeqCst) {
            match listener.accept() {
                Ok((down, _)) => {
                    down.set_nonblocking(false).unwrap();
                    let up = TcpStream::connect("127.0.0.1:6379").unwrap();
                    let mut c = conns2.lock().unwrap();
                    c.push(down.try_clone().unwrap());
                    c.push(up.try_clone().unwrap());
                    for (mut a, mut b) in [
                        (down.try_clone().unwrap(), up.try_clone().unwrap()),
                        (up, down),
                    ] {
                        std::thread::spawn(move || {
                            let _ = std::io::copy(&mut a, &mut b);
                            let _ = b.shutdown(std::net::Shutdown::Both);
                        });
                    }
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    Proxy {
        port,
        stop,
        conns,
        thread,
    }
}

impl Proxy {
    /// Closes the listener and every proxied connection; returns the port to reuse.
    async fn cut(self) -> u16 {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = self.thread.join();
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.port
    }
}

#[tokio::test]
async fn starts_while_down_and_reconnects_after_a_cut() {
    let mut con = redis().await;
    let zset = tag("vcons");
    let list = tag("in");
    let port = dead_port();
    let mut b = built(&format!(
        "redis://127.0.0.1:{port}/0?sorted_set={zset}&ingress={list}&timeout_ms=2000"
    ));
    let sink = b.sink.as_mut().unwrap();
    let t = tel();
    let us: Vec<String> = (0..3).map(|_| uuid()).collect();
    let r = |i: usize| {
        rec(
            i as u64 + 1,
            &us[i],
            vcon(&us[i], "2026-11-29T00:00:00Z", &t, "x"),
        )
    };
    // Down: transient error.
    assert!(sink.deliver(&[r(0)]).await.is_err());
    // Up: delivered.
    let p = proxy(port);
    assert_eq!(
        sink.deliver(&[r(0)]).await.unwrap(),
        vec![Outcome::Delivered]
    );
    // The connection is cut and the proxy comes back: one immediate reconnect inside
    // deliver, no error surfaces.
    let port = p.cut().await;
    let p = proxy(port);
    assert_eq!(
        sink.deliver(&[r(1)]).await.unwrap(),
        vec![Outcome::Delivered]
    );
    // Cut and stay down: error; back up: delivered.
    let port = p.cut().await;
    assert!(sink.deliver(&[r(2)]).await.is_err());
    let p = proxy(port);
    assert_eq!(
        sink.deliver(&[r(2)]).await.unwrap(),
        vec![Outcome::Delivered]
    );
    p.cut().await;
    assert_eq!(list_uuids(&base_url(), &list).await.unwrap(), us);

    let mut keys = vec![zset, list.clone()];
    for u in &us {
        keys.extend(keys_of(u, &t, &[&list]));
    }
    cleanup(&mut con, &keys).await;
}

fn event(u: &str, seq: u64, kind: EventKind, json: &str) -> Arc<VconEvent> {
    Arc::new(VconEvent {
        uuid: u.into(),
        seq,
        kind,
        at: Default::default(),
        reason: None,
        vcon_json: json.into(),
    })
}

fn events_for(u: &str) -> Vec<Arc<VconEvent>> {
    [
        EventKind::Created,
        EventKind::Updated,
        EventKind::Segment,
        EventKind::Finished,
    ]
    .into_iter()
    .enumerate()
    .map(|(i, k)| {
        event(
            u,
            i as u64 + 1,
            k,
            &format!(r#"{{"uuid":"{u}","step":{i}}}"#),
        )
    })
    .collect()
}

#[tokio::test]
async fn events_go_to_a_capped_stream_in_order() {
    let mut con = redis().await;
    let stream = tag("events");
    let mut b = built(&format!(
        "{}?store=false&events_stream={stream}&events_maxlen=1000",
        base_url()
    ));
    assert!(b.sink.is_none());
    let ev = b.events.as_mut().unwrap();
    let (u1, u2) = (uuid(), uuid());
    let (e1, e2) = (events_for(&u1), events_for(&u2));
    // Interleaved calls, as the engine emits them.
    ev.publish(&[e1[0].clone(), e2[0].clone(), e1[1].clone()])
        .await
        .unwrap();
    ev.publish(&[
        e2[1].clone(),
        e1[2].clone(),
        e1[3].clone(),
        e2[2].clone(),
        e2[3].clone(),
    ])
    .await
    .unwrap();
    let entries: Vec<(String, Vec<(String, String)>)> =
        cmd(&mut con, &["XRANGE", &stream, "-", "+"]).await;
    assert_eq!(entries.len(), 8);
    let mut seen: Vec<(String, u64, String, String)> = Vec::new();
    for (_id, fields) in &entries {
        let get = |k: &str| fields.iter().find(|(f, _)| f == k).unwrap().1.clone();
        assert_eq!(
            fields.iter().map(|(f, _)| f.as_str()).collect::<Vec<_>>(),
            ["uuid", "seq", "kind", "vcon"]
        );
        seen.push((
            get("uuid"),
            get("seq").parse().unwrap(),
            get("kind"),
            get("vcon"),
        ));
    }
    for (u, evs) in [(&u1, &e1), (&u2, &e2)] {
        let mine: Vec<_> = seen.iter().filter(|s| &s.0 == u).collect();
        assert_eq!(mine.iter().map(|s| s.1).collect::<Vec<_>>(), [1, 2, 3, 4]);
        assert_eq!(
            mine.iter().map(|s| s.2.as_str()).collect::<Vec<_>>(),
            ["created", "updated", "segment", "finished"]
        );
        for (s, e) in mine.iter().zip(evs.iter()) {
            assert_eq!(s.3, &*e.vcon_json);
        }
    }
    // MAXLEN ~ keeps the stream bounded.
    let mut b = built(&format!(
        "{}?store=false&events_stream={stream}&events_maxlen=10",
        base_url()
    ));
    let ev = b.events.as_mut().unwrap();
    for round in 0..10 {
        let batch: Vec<_> = (0..100)
            .map(|i| event(&u1, round * 100 + i, EventKind::Updated, "{}"))
            .collect();
        ev.publish(&batch).await.unwrap();
    }
    let len: i64 = cmd(&mut con, &["XLEN", &stream]).await;
    assert!(len < 300, "stream not trimmed: {len}");
    cleanup(&mut con, &[stream]).await;
}

#[tokio::test]
async fn events_reach_pubsub_subscribers() {
    let channel = tag("channel");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let client = ::redis::Client::open(format!("{}?protocol=resp3", base_url())).unwrap();
    let config = ::redis::AsyncConnectionConfig::new().set_push_sender(tx);
    let mut sub = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .expect("Redis at 127.0.0.1:6379 (RESP3) is needed for this test");
    sub.subscribe(&channel).await.unwrap();

    let mut b = built(&format!(
        "{}?store=false&events_channel={channel}",
        base_url()
    ));
    let ev = b.events.as_mut().unwrap();
    let u = uuid();
    let evs = events_for(&u);
    ev.publish(&evs).await.unwrap();
    let mut got: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while got.len() < 4 && Instant::now() < deadline {
        let Ok(Some(push)) = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await else {
            break;
        };
        if push.kind == ::redis::PushKind::Message {
            if let Some(::redis::Value::BulkString(b)) = push.data.get(1) {
                got.push(String::from_utf8(b.clone()).unwrap());
            }
        }
    }
    let want: Vec<String> = evs.iter().map(|e| e.to_json_line()).collect();
    assert_eq!(got, want);
    let line: serde_json::Value = serde_json::from_str(&got[3]).unwrap();
    assert_eq!(line["kind"], "finished");
    assert_eq!(line["seq"], 4);
    assert_eq!(line["vcon"]["step"], 3);
}

/// `fakeredis[json,lua]`'s TCP server on a free port, stopped when dropped (its stdin
/// closes). `None` (the test is skipped) when python3 or the package is missing.
struct FakeRedis {
    child: std::process::Child,
    port: u16,
}

impl Drop for FakeRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const FAKEREDIS: &str = r#"
import sys, threading
from fakeredis import TcpFakeServer
srv = TcpFakeServer(("127.0.0.1", int(sys.argv[1])), server_type="redis")
threading.Thread(target=srv.serve_forever, daemon=True).start()
print("ready", flush=True)
sys.stdin.read()
"#;

fn fakeredis() -> Option<FakeRedis> {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let probe = Command::new("python3")
        .args(["-c", "import fakeredis, lupa, jsonpath_ng"])
        .output();
    match probe {
        Ok(o) if o.status.success() => {}
        _ => {
            eprintln!(
                "SKIPPED: the RedisJSON path needs python3 with `pip install 'fakeredis[json,lua]'`"
            );
            return None;
        }
    }
    let port = dead_port();
    let mut child = Command::new("python3")
        .args(["-c", FAKEREDIS, &port.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .ok()?;
    let mut line = String::new();
    let out = child.stdout.take()?;
    std::io::BufReader::new(out).read_line(&mut line).ok()?;
    let fr = FakeRedis { child, port };
    assert_eq!(line.trim(), "ready", "fakeredis did not start");
    Some(fr)
}

#[tokio::test]
async fn json_mode_with_redisjson() {
    let Some(fr) = fakeredis() else { return };
    let url = format!("redis://127.0.0.1:{}/0", fr.port);
    let mut con = redis_at(&url).await;
    let (u, t) = (uuid(), tel());
    let mut b = built(&format!("{url}?ingress=default"));
    let sink = b.sink.as_mut().unwrap();
    let r1 = rec(1, &u, vcon(&u, "2026-11-29T00:00:00Z", &t, "first"));
    let r2 = rec(2, &u, vcon(&u, "2026-11-29T00:00:00Z", &t, "second"));
    for _ in 0..2 {
        let out = sink.deliver(&[r1.clone(), r2.clone()]).await.unwrap();
        assert_eq!(out, vec![Outcome::Delivered; 2]);
    }
    // Stored as a RedisJSON document (a plain GET is a type error), equal to the record.
    let plain: Result<Vec<u8>, _> = ::redis::cmd("GET")
        .arg(format!("vcon:{u}"))
        .query_async(&mut con)
        .await;
    assert!(plain.is_err(), "expected a JSON document, got a string");
    let doc: String = cmd(&mut con, &["JSON.GET", &format!("vcon:{u}"), "$"]).await;
    let doc: serde_json::Value = serde_json::from_str(&doc).unwrap();
    let want: serde_json::Value = serde_json::from_slice(&r2.json).unwrap();
    assert_eq!(doc[0], want);
    let back = stored_document(&url, &u).await.unwrap().unwrap();
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&back).unwrap(),
        want
    );
    assert_eq!(stored_uuids(&url, "vcons").await.unwrap(), vec![u.clone()]);
    assert_eq!(list_uuids(&url, "default").await.unwrap(), vec![u.clone()]);
    let member: bool = cmd(&mut con, &["SISMEMBER", &format!("tel:{t}"), &u]).await;
    assert!(member);

    // mode=plain on a RedisJSON server writes strings.
    let u2 = uuid();
    let mut b = built(&format!("{url}?mode=plain"));
    let r3 = rec(3, &u2, vcon(&u2, "2026-11-29T00:00:00Z", &t, "x"));
    b.sink
        .as_mut()
        .unwrap()
        .deliver(std::slice::from_ref(&r3))
        .await
        .unwrap();
    // (fakeredis answers GET with a simple string, hence String rather than bytes.)
    let doc: String = cmd(&mut con, &["GET", &format!("vcon:{u2}")]).await;
    assert_eq!(doc.as_bytes(), &r3.json[..]);
    assert_eq!(
        stored_document(&url, &u2).await.unwrap().unwrap(),
        r3.json.to_vec()
    );
    // Auto mode (RedisJSON) replaces that string with a JSON document.
    let mut b = built(&url);
    let out = b
        .sink
        .as_mut()
        .unwrap()
        .deliver(std::slice::from_ref(&r3))
        .await
        .unwrap();
    assert_eq!(out, vec![Outcome::Delivered]);
    let doc: String = cmd(&mut con, &["JSON.GET", &format!("vcon:{u2}"), "$"]).await;
    let doc: serde_json::Value = serde_json::from_str(&doc).unwrap();
    assert_eq!(
        doc[0],
        serde_json::from_slice::<serde_json::Value>(&r3.json).unwrap()
    );
}

#[tokio::test]
async fn mode_json_without_redisjson_is_transient() {
    let zset = tag("vcons");
    let mut b = built(&format!("{}?sorted_set={zset}&mode=json", base_url()));
    let u = uuid();
    let r = rec(1, &u, vcon(&u, "2026-11-29T00:00:00Z", "+15550000000", "x"));
    let e = b.sink.as_mut().unwrap().deliver(&[r]).await.unwrap_err();
    assert!(e.0.contains("RedisJSON"), "{e}");
    let mut con = redis().await;
    let n: i64 = cmd(&mut con, &["EXISTS", &format!("vcon:{u}"), &zset]).await;
    assert_eq!(n, 0, "nothing written");
}

/// Throughput: N=2000 records of ~8 KB, in batches of max_batch, through the plain path.
/// `cargo test -p vcontap-sinks --test redis -- --ignored --nocapture throughput`
#[tokio::test]
#[ignore]
async fn throughput() {
    let mut con = redis().await;
    let (zset, list) = (tag("vcons"), tag("in"));
    let mut b = built(&format!("{}?sorted_set={zset}&ingress={list}", base_url()));
    let sink = b.sink.as_mut().unwrap();
    let pad = "x".repeat(7_800);
    let t = tel();
    let recs: Vec<_> = (0..2000)
        .map(|i| {
            let u = uuid();
            rec(i + 1, &u, vcon(&u, "2026-11-29T00:00:00Z", &t, &pad))
        })
        .collect();
    let n = sink.max_batch();
    let t0 = Instant::now();
    for chunk in recs.chunks(n) {
        let out = sink.deliver(chunk).await.unwrap();
        assert!(out.iter().all(|o| *o == Outcome::Delivered));
    }
    let dt = t0.elapsed();
    println!(
        "redis sink: {} records of {} B in batches of {n}: {:.0} vCons/s ({:.1} MB/s)",
        recs.len(),
        recs[0].json.len(),
        recs.len() as f64 / dt.as_secs_f64(),
        (recs.len() * recs[0].json.len()) as f64 / dt.as_secs_f64() / 1e6
    );
    assert_eq!(list_uuids(&base_url(), &list).await.unwrap().len(), 2000);
    let mut keys = vec![zset, list.clone()];
    for r in &recs {
        keys.extend(keys_of(&r.uuid, &t, &[&list]));
    }
    cleanup(&mut con, &keys).await;
}

#[tokio::test]
async fn script_cache_flush_is_recovered() {
    let mut con = redis().await;
    let (zset, list) = (tag("vcons"), tag("in"));
    let mut b = built(&format!("{}?sorted_set={zset}&ingress={list}", base_url()));
    let sink = b.sink.as_mut().unwrap();
    let t = tel();
    let (u1, u2) = (uuid(), uuid());
    let r1 = rec(1, &u1, vcon(&u1, "2026-11-29T00:00:00Z", &t, "x"));
    let r2 = rec(2, &u2, vcon(&u2, "2026-11-29T00:00:00Z", &t, "x"));
    sink.deliver(std::slice::from_ref(&r1)).await.unwrap();
    // A server restart or SCRIPT FLUSH loses the script: NOSCRIPT, reload, replay.
    // (Other tests running now recover the same way.)
    let _: () = cmd(&mut con, &["SCRIPT", "FLUSH"]).await;
    let out = sink.deliver(&[r1, r2]).await.unwrap();
    assert_eq!(out, vec![Outcome::Delivered; 2]);
    assert_eq!(
        list_uuids(&base_url(), &list).await.unwrap(),
        vec![u1.clone(), u2.clone()]
    );
    let mut keys = vec![zset, list.clone()];
    keys.extend(keys_of(&u1, &t, &[&list]));
    keys.extend(keys_of(&u2, &t, &[&list]));
    cleanup(&mut con, &keys).await;
}

#[tokio::test]
async fn rediss_speaks_tls() {
    // The test Redis is plain TCP: a TLS handshake against it fails cleanly (transient),
    // which proves the rustls/ring client is wired in without panicking.
    let addr = base_url()
        .trim_start_matches("redis://")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let mut b = built(&format!("rediss://{addr}/0?timeout_ms=2000"));
    let u = uuid();
    let r = rec(1, &u, vcon(&u, "2026-11-29T00:00:00Z", "+15550000000", "x"));
    let e = b.sink.as_mut().unwrap().deliver(&[r]).await.unwrap_err();
    assert!(e.0.contains("connecting"), "{e}");
}
