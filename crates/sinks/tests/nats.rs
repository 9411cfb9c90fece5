//! The NATS JetStream sink against a real nats-server with JetStream on 127.0.0.1:4222
//! (CI starts it). Each test uses its own stream and subjects (`vcontest.<random>.…`) and
//! deletes the stream afterwards, so tests run in parallel.

#![cfg(feature = "nats")]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use vcontap_engine::{EventKind, VconEvent};
use vcontap_sinks::nats::{self, stored_messages, stored_uuids};
use vcontap_sinks::{Built, Outcome, Record, RecordId, SinkSpec};

const NATS: &str = "nats://127.0.0.1:4222";

/// A fresh stream name and subject root, deleted again when dropped.
struct TestStream {
    stream: String,
    root: String,
}

impl TestStream {
    fn new() -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        assert!(
            std::net::TcpStream::connect_timeout(
                &"127.0.0.1:4222".parse().unwrap(),
                Duration::from_secs(2)
            )
            .is_ok(),
            "nats-server with JetStream is not running on 127.0.0.1:4222 (CI starts it: \
             `nats-server -a 127.0.0.1 -p 4222 -js`)"
        );
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let tag = format!(
            "t{}x{nanos:x}x{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        TestStream {
            stream: format!("VCONTEST_{tag}"),
            root: format!("vcontest.{tag}"),
        }
    }

    fn finished(&self) -> String {
        format!("{}.finished", self.root)
    }

    fn prefix(&self) -> String {
        format!("{}.events", self.root)
    }

    /// The sink URL for this stream (plus extra query options).
    fn url(&self, extra: &str) -> String {
        format!(
            "{NATS}?stream={}&subject={}&events_subject_prefix={}{extra}",
            self.stream,
            self.finished(),
            self.prefix()
        )
    }

    fn build(&self, extra: &str) -> Built {
        nats::build(SinkSpec::parse(&self.url(extra)).unwrap()).unwrap()
    }
}

impl Drop for TestStream {
    fn drop(&mut self) {
        let stream = self.stream.clone();
        // Runs on its own thread and runtime: Drop may run inside a test's runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let _ = rt.block_on(nats::delete_stream(NATS, &stream));
        })
        .join();
    }
}

fn uuid(i: u64) -> String {
    format!("018f0000-0000-8000-8000-{i:012x}")
}

fn rec(id: u64, uuid: &str, body: &str) -> Arc<Record> {
    Arc::new(Record {
        id: RecordId(id),
        uuid: uuid.into(),
        json: Bytes::from(format!(
            r#"{{"vcon":"0.4.0","uuid":"{uuid}","created_at":"2026-11-29T20:00:00Z","subject":"{body}","parties":[],"dialog":[]}}"#
        )),
        spooled_unix_ms: 0,
    })
}

fn event(uuid: &str, seq: u64, kind: EventKind) -> Arc<VconEvent> {
    Arc::new(VconEvent {
        uuid: uuid.into(),
        seq,
        kind,
        at: Default::default(),
        reason: None,
        vcon_json: format!(r#"{{"vcon":"0.4.0","uuid":"{uuid}","n":{seq}}}"#).into(),
    })
}

async fn js() -> async_nats::jetstream::Context {
    async_nats::jetstream::new(async_nats::connect(NATS).await.unwrap())
}

#[tokio::test]
async fn finished_vcons_are_stored_in_order_with_exact_bytes_and_headers() {
    let t = TestStream::new();
    let mut built = t.build("");
    let sink = built.sink.as_mut().unwrap();
    let batch: Vec<_> = (1..=20).map(|i| rec(i, &uuid(i), "call")).collect();
    let out = sink.deliver(&batch).await.unwrap();
    assert_eq!(out, vec![Outcome::Delivered; 20]);

    let msgs = stored_messages(NATS, &t.stream, &t.finished())
        .await
        .unwrap();
    assert_eq!(msgs.len(), 20);
    for (m, r) in msgs.iter().zip(&batch) {
        assert_eq!(m.subject, t.finished());
        assert_eq!(m.payload, r.json, "payload must be the spooled bytes");
        assert_eq!(m.header("Vcon-Uuid"), Some(&*r.uuid));
        assert_eq!(
            m.header("Nats-Msg-Id").map(String::from),
            Some(nats::finished_msg_id(&r.uuid, &r.json))
        );
    }
    assert!(msgs.windows(2).all(|w| w[0].sequence < w[1].sequence));

    // The stream was created with exactly the configured subjects, on disk.
    let mut st = js().await.get_stream(&t.stream).await.unwrap();
    let info = st.info().await.unwrap();
    assert_eq!(
        info.config.subjects,
        vec![t.finished(), format!("{}.>", t.prefix())]
    );
    assert_eq!(
        info.config.storage,
        async_nats::jetstream::stream::StorageType::File
    );
    assert_eq!(info.config.duplicate_window, Duration::from_secs(120));
}

#[tokio::test]
async fn redelivered_batch_is_stored_once_but_an_update_is_kept() {
    let t = TestStream::new();
    let mut built = t.build("&events=false&duplicate_window_s=600");
    let sink = built.sink.as_mut().unwrap();
    let batch: Vec<_> = (1..=10).map(|i| rec(i, &uuid(i), "call")).collect();
    assert_eq!(
        sink.deliver(&batch).await.unwrap(),
        vec![Outcome::Delivered; 10]
    );
    // The core retries a whole batch after an Err: same records, same bytes.
    assert_eq!(
        sink.deliver(&batch).await.unwrap(),
        vec![Outcome::Delivered; 10]
    );
    // A later version of uuid 3 (different bytes) is a new message, not a duplicate.
    let update = rec(11, &uuid(3), "call, updated");
    assert_eq!(
        sink.deliver(std::slice::from_ref(&update)).await.unwrap(),
        vec![Outcome::Delivered]
    );
    let uuids = stored_uuids(NATS, &t.stream, &t.finished()).await.unwrap();
    let mut want: Vec<String> = (1..=10).map(uuid).collect();
    want.push(uuid(3));
    assert_eq!(uuids, want);
    let msgs = stored_messages(NATS, &t.stream, &t.finished())
        .await
        .unwrap();
    assert_eq!(msgs.last().unwrap().payload, update.json);

    let info = js()
        .await
        .get_stream(&t.stream)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .clone();
    assert_eq!(info.config.subjects, vec![t.finished()], "events=false");
    assert_eq!(info.config.duplicate_window, Duration::from_secs(600));
    sink.close().await;
}

#[tokio::test]
async fn events_go_to_prefix_uuid_in_seq_order() {
    let t = TestStream::new();
    let mut built = t.build("");
    let events = built.events.as_mut().expect("events=true by default");
    let (a, b) = (uuid(1), uuid(2));
    let kinds = [
        EventKind::Created,
        EventKind::Updated,
        EventKind::Segment,
        EventKind::Finished,
    ];
    let mut batch = Vec::new();
    for (i, k) in kinds.iter().enumerate() {
        batch.push(event(&a, i as u64 + 1, *k));
        batch.push(event(&b, i as u64 + 1, *k));
    }
    // A uuid that cannot be a subject token is skipped, not an error.
    batch.push(event("bad.uuid", 1, EventKind::Created));
    events.publish(&batch[..5]).await.unwrap();
    events.publish(&batch[5..]).await.unwrap();
    // Published again (the core never does, but a crash could): collapsed by msg id.
    events.publish(&batch[..2]).await.unwrap();

    for u in [&a, &b] {
        let msgs = stored_messages(NATS, &t.stream, &format!("{}.{u}", t.prefix()))
            .await
            .unwrap();
        let seqs: Vec<_> = msgs.iter().map(|m| m.header("Vcon-Seq").unwrap()).collect();
        assert_eq!(seqs, ["1", "2", "3", "4"], "{u}");
        for (m, k) in msgs.iter().zip(kinds) {
            assert_eq!(m.header("Vcon-Event-Kind"), Some(k.as_str()));
            assert_eq!(m.header("Vcon-Uuid"), Some(u.as_str()));
            let seq = m.header("Vcon-Seq").unwrap();
            assert_eq!(m.header("Nats-Msg-Id"), Some(format!("{u}:{seq}").as_str()));
            let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
            assert_eq!(v["uuid"], u.as_str());
            assert_eq!(v["kind"], k.as_str());
            assert_eq!(v["vcon"]["n"].to_string(), seq);
        }
    }
    let all = stored_messages(NATS, &t.stream, &format!("{}.>", t.prefix()))
        .await
        .unwrap();
    assert_eq!(all.len(), 8, "bad uuid skipped, re-publish collapsed");
    // Finished vCons and events share the stream but not the subject.
    assert!(stored_uuids(NATS, &t.stream, &t.finished())
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn dead_port_and_silent_server_are_errors_within_the_timeout() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free.local_addr().unwrap().port();
    drop(free);
    let mut built =
        nats::build(SinkSpec::parse(&format!("nats://127.0.0.1:{port}?timeout_ms=500")).unwrap())
            .unwrap();
    let sink = built.sink.as_mut().unwrap();
    let batch = vec![rec(1, &uuid(1), "x")];
    let t0 = Instant::now();
    let e = sink.deliver(&batch).await.unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    assert!(e.to_string().contains("connecting"), "{e}");
    // Refused again on the next attempt (no hang, no stale state).
    assert!(sink.deliver(&batch).await.is_err());

    // A server that accepts TCP but never speaks NATS.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = silent.accept().await {
            conns.push(c);
        }
    });
    let mut built =
        nats::build(SinkSpec::parse(&format!("nats://127.0.0.1:{port}?timeout_ms=500")).unwrap())
            .unwrap();
    let t0 = Instant::now();
    let e = built
        .sink
        .as_mut()
        .unwrap()
        .deliver(&batch)
        .await
        .unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    assert!(e.to_string().contains("connecting"), "{e}");
    let e = built
        .events
        .as_mut()
        .unwrap()
        .publish(&[event(&uuid(1), 1, EventKind::Created)])
        .await;
    assert!(e.is_err());
    hold.abort();
}

#[tokio::test]
async fn existing_stream_without_our_subjects_is_a_clear_error_and_left_alone() {
    let t = TestStream::new();
    let other = format!("{}.other", t.root);
    js().await
        .create_stream(async_nats::jetstream::stream::Config {
            name: t.stream.clone(),
            subjects: vec![other.clone()],
            ..Default::default()
        })
        .await
        .unwrap();
    let mut built = t.build("");
    let e = built
        .sink
        .as_mut()
        .unwrap()
        .deliver(&[rec(1, &uuid(1), "x")])
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("do not cover") && e.contains(&t.finished()),
        "{e}"
    );
    let mut st = js().await.get_stream(&t.stream).await.unwrap();
    assert_eq!(st.info().await.unwrap().config.subjects, vec![other]);

    // A stream whose wildcard covers both subjects is accepted as it is.
    let t2 = TestStream::new();
    js().await
        .create_stream(async_nats::jetstream::stream::Config {
            name: t2.stream.clone(),
            subjects: vec![format!("{}.>", t2.root)],
            ..Default::default()
        })
        .await
        .unwrap();
    let mut built = t2.build("");
    let out = built
        .sink
        .as_mut()
        .unwrap()
        .deliver(&[rec(1, &uuid(1), "x")])
        .await
        .unwrap();
    assert_eq!(out, vec![Outcome::Delivered]);
    built
        .events
        .as_mut()
        .unwrap()
        .publish(&[event(&uuid(1), 1, EventKind::Created)])
        .await
        .unwrap();
    let mut st = js().await.get_stream(&t2.stream).await.unwrap();
    let info = st.info().await.unwrap();
    assert_eq!(info.config.subjects, vec![format!("{}.>", t2.root)]);
    assert_eq!(info.state.messages, 2);
}

#[tokio::test]
async fn missing_stream_without_create_is_an_error_then_recovers() {
    let t = TestStream::new();
    let mut built = t.build("&create_stream=false&timeout_ms=1000");
    let sink = built.sink.as_mut().unwrap();
    let batch = vec![rec(1, &uuid(1), "x")];
    let e = sink.deliver(&batch).await.unwrap_err().to_string();
    assert!(e.contains("ack"), "{e}");
    // The operator creates it; the retry goes through on the same connection.
    js().await
        .create_stream(async_nats::jetstream::stream::Config {
            name: t.stream.clone(),
            subjects: vec![t.finished()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        sink.deliver(&batch).await.unwrap(),
        vec![Outcome::Delivered]
    );
    assert_eq!(
        stored_uuids(NATS, &t.stream, &t.finished()).await.unwrap(),
        vec![uuid(1)]
    );
}

#[tokio::test]
async fn stream_max_message_size_refusal_is_a_rejection() {
    let t = TestStream::new();
    js().await
        .create_stream(async_nats::jetstream::stream::Config {
            name: t.stream.clone(),
            subjects: vec![t.finished()],
            max_message_size: 4096,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut built = t.build("&events=false");
    let sink = built.sink.as_mut().unwrap();
    let batch = vec![
        rec(1, &uuid(1), "small"),
        rec(2, &uuid(2), &"y".repeat(8000)),
        rec(3, &uuid(3), "small"),
    ];
    let out = sink.deliver(&batch).await.unwrap();
    assert_eq!(out[0], Outcome::Delivered);
    assert!(
        matches!(&out[1], Outcome::Rejected(r) if r.contains("maximum")),
        "{out:?}"
    );
    assert_eq!(out[2], Outcome::Delivered);
    assert_eq!(
        stored_uuids(NATS, &t.stream, &t.finished()).await.unwrap(),
        vec![uuid(1), uuid(3)]
    );
}

#[tokio::test]
async fn hostile_records_are_rejected_and_the_rest_delivered() {
    let t = TestStream::new();
    let mut built = t.build("&events=false");
    let sink = built.sink.as_mut().unwrap();
    let huge = Arc::new(Record {
        id: RecordId(2),
        uuid: uuid(2).into(),
        json: Bytes::from(vec![b' '; 2 * 1024 * 1024]),
        spooled_unix_ms: 0,
    });
    let batch = vec![
        rec(1, &uuid(1), "ok"),
        huge,
        rec(3, "evil\r\nNats-Msg-Id: x", "crlf"),
        rec(4, "", "empty"),
        rec(5, &uuid(5), "ok"),
    ];
    let out = sink.deliver(&batch).await.unwrap();
    assert_eq!(out[0], Outcome::Delivered);
    assert!(
        matches!(&out[1], Outcome::Rejected(r) if r.contains("max_payload")),
        "{out:?}"
    );
    assert!(
        matches!(&out[2], Outcome::Rejected(r) if r.contains("header")),
        "{out:?}"
    );
    assert!(matches!(&out[3], Outcome::Rejected(_)), "{out:?}");
    assert_eq!(out[4], Outcome::Delivered);
    assert_eq!(
        stored_uuids(NATS, &t.stream, &t.finished()).await.unwrap(),
        vec![uuid(1), uuid(5)]
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A private nats-server with JetStream (store under `dir`), for tests that stop it.
struct NatsServer(std::process::Child);

impl NatsServer {
    async fn start(port: u16, dir: &std::path::Path, extra: &[&str]) -> Self {
        let mut server = NatsServer(
            std::process::Command::new("nats-server")
                .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
                .arg(dir.join("js"))
                .args(extra)
                .current_dir(dir)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("nats-server binary (installed with the NATS service CI starts)"),
        );
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server.stop();
        panic!("nats-server on port {port} did not start");
    }

    fn stop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The server goes away after the first connect and comes back: deliveries meanwhile are
/// errors within the timeout (not hangs), and async-nats reconnects by itself.
#[tokio::test]
async fn server_restart_errors_then_reconnects() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut server = NatsServer::start(port, dir.path(), &[]).await;
    let url = format!("nats://127.0.0.1:{port}?stream=RESTART&subject=r.finished&events_subject_prefix=r.events&timeout_ms=700");
    let mut built = nats::build(SinkSpec::parse(&url).unwrap()).unwrap();
    let sink = built.sink.as_mut().unwrap();
    let a = vec![rec(1, &uuid(1), "before")];
    assert_eq!(sink.deliver(&a).await.unwrap(), vec![Outcome::Delivered]);
    server.stop();
    let b = vec![rec(2, &uuid(2), "during"), rec(3, &uuid(3), "during")];
    let t0 = Instant::now();
    assert!(sink.deliver(&b).await.is_err());
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    let _server = NatsServer::start(port, dir.path(), &[]).await;
    // The core retries with backoff; a few attempts while the client reconnects.
    let mut ok = None;
    for _ in 0..20 {
        match sink.deliver(&b).await {
            Ok(out) => {
                ok = Some(out);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
    assert_eq!(
        ok.expect("delivered after the restart"),
        vec![Outcome::Delivered; 2]
    );
    let plain = format!("nats://127.0.0.1:{port}");
    // Messages buffered while disconnected may also have been flushed on reconnect:
    // the duplicate window keeps one copy of each.
    assert_eq!(
        stored_uuids(&plain, "RESTART", "r.finished").await.unwrap(),
        vec![uuid(1), uuid(2), uuid(3)]
    );
}

/// TLS with the ring provider against a nats-server started here with a test CA.
#[tokio::test]
async fn tls_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sh = |args: &str| {
        let st = std::process::Command::new("sh")
            .arg("-c")
            .arg(args)
            .current_dir(d)
            .output()
            .expect("sh");
        assert!(
            st.status.success(),
            "{args}: {}",
            String::from_utf8_lossy(&st.stderr)
        );
    };
    sh(
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout ca.key -out ca.pem -days 1 -subj /CN=vcontap-test-ca 2>/dev/null",
    );
    sh(
        "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout srv.key -out srv.csr -subj /CN=localhost 2>/dev/null",
    );
    sh("printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\nbasicConstraints=CA:FALSE\\n' > ext.cnf && \
        openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out srv.pem \
        -days 1 -extfile ext.cnf 2>/dev/null");
    let port = free_port();
    let mut server = NatsServer::start(
        port,
        d,
        &["--tls", "--tlscert", "srv.pem", "--tlskey", "srv.key"],
    )
    .await;
    let url = format!(
        "nats+tls://127.0.0.1:{port}?stream=TLSTEST&subject=tls.finished&events=false&tls_ca={}",
        d.join("ca.pem").display()
    );
    let mut built = nats::build(SinkSpec::parse(&url).unwrap()).unwrap();
    let r = built
        .sink
        .as_mut()
        .unwrap()
        .deliver(&[rec(1, &uuid(1), "tls")])
        .await;
    // Without the CA the handshake is refused.
    let plain = format!(
        "nats+tls://127.0.0.1:{port}?stream=TLSTEST&subject=tls.finished&events=false&timeout_ms=1000"
    );
    let mut untrusted = nats::build(SinkSpec::parse(&plain).unwrap()).unwrap();
    let r2 = untrusted
        .sink
        .as_mut()
        .unwrap()
        .deliver(&[rec(1, &uuid(1), "tls")])
        .await;
    server.stop();
    assert_eq!(r.unwrap(), vec![Outcome::Delivered]);
    assert!(r2.is_err());
}

/// Throughput: 2000 vCons of ~8 KB through the sink in batches of `max_batch`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: cargo test -p vcontap-sinks --test nats -- --ignored --nocapture"]
async fn throughput_2000_vcons_of_8k() {
    let t = TestStream::new();
    let mut built = t.build("&events=false");
    let sink = built.sink.as_mut().unwrap();
    let pad = "x".repeat(8 * 1024 - 150);
    let recs: Vec<_> = (1..=2000).map(|i| rec(i, &uuid(i), &pad)).collect();
    // Connect and create the stream outside the timing.
    sink.deliver(&recs[..1]).await.unwrap();
    let t0 = Instant::now();
    for chunk in recs[1..].chunks(sink.max_batch()) {
        let out = sink.deliver(chunk).await.unwrap();
        assert!(out.iter().all(|o| *o == Outcome::Delivered));
    }
    let dt = t0.elapsed();
    let n = recs.len() - 1;
    println!(
        "nats sink: {n} vCons of {} bytes in {dt:?}: {:.0} vCons/s ({:.1} MB/s), batch {}",
        recs[1].json.len(),
        n as f64 / dt.as_secs_f64(),
        (n * recs[1].json.len()) as f64 / dt.as_secs_f64() / 1e6,
        sink.max_batch()
    );
    let uuids = stored_uuids(NATS, &t.stream, &t.finished()).await.unwrap();
    assert_eq!(uuids.len(), 2000);
}
