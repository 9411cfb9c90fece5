//! The conserver and webhook sinks against a fake HTTP/1.1 server on loopback
//! (`http_support`): exact request shape, signatures checked independently, status
//! classification, ordering, reconnects, real-time paths and configuration errors.

#![cfg(feature = "http")]

mod http_support;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_support::{dead_port, FakeServer, Reply};
use sha2::{Digest, Sha256};
use vcontap_engine::{EventKind, VconEvent};
use vcontap_sinks::record::RecordId;
use vcontap_sinks::spec::build;
use vcontap_sinks::{Built, Outcome, Record, SinkSpec};

const U1: &str = "018f0000-0000-8000-8000-000000000001";
const U2: &str = "018f0000-0000-8000-8000-000000000002";

fn rec(id: u64, uuid: &str, tag: &str) -> Arc<Record> {
    Arc::new(Record {
        id: RecordId(id),
        uuid: uuid.into(),
        json: Bytes::from(format!(
            r#"{{"vcon":"0.4.0","uuid":"{uuid}","created_at":"2026-11-29T12:00:00.000Z","subject":"{tag}","parties":[{{"tel":"+15551234567"}},{{"name":"Bob \u00e9"}}],"dialog":[]}}"#
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
        vcon_json: format!(
            r#"{{"vcon":"0.4.0","uuid":"{uuid}","created_at":"2026-11-29T12:00:00.000Z","subject":"seq {seq}","parties":[],"dialog":[]}}"#
        )
        .into(),
    })
}

fn built(url: &str, extra: &[(&str, &str)]) -> Built {
    let mut spec = SinkSpec::parse(url).unwrap();
    for (k, v) in extra {
        spec.options.push(k, v);
    }
    match build(spec) {
        Ok(b) => b,
        Err(e) => panic!("build {url}: {e}"),
    }
}

fn config_error(url: &str, extra: &[(&str, &str)]) -> String {
    let mut spec = SinkSpec::parse(url).unwrap();
    for (k, v) in extra {
        spec.options.push(k, v);
    }
    match build(spec) {
        Ok(_) => panic!("{url} {extra:?} should not build"),
        Err(e) => e.to_string(),
    }
}

/// HMAC-SHA256 written out from RFC 2104 (independent of the sink's `hmac` crate).
fn hmac_sha256_hex(key: &[u8], msg: &[u8]) -> String {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    let inner = Sha256::new()
        .chain_update(&ipad)
        .chain_update(msg)
        .finalize();
    let outer = Sha256::new()
        .chain_update(&opad)
        .chain_update(inner)
        .finalize();
    outer.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn hand_written_hmac_matches_rfc4231() {
    // RFC 4231 test cases 2 and 6 (a key longer than the block).
    assert_eq!(
        hmac_sha256_hex(b"Jefe", b"what do ya want for nothing?"),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
    assert_eq!(
        hmac_sha256_hex(
            &[0xaa; 131],
            b"Test Using Larger Than Block-Size Key - Hash Key First"
        ),
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
    );
}

#[tokio::test]
async fn conserver_posts_exact_url_token_type_and_bytes() {
    let srv = FakeServer::start(vec![]).await;
    let url = format!(
        "conserver+http://{}/api?ingress=default&ingress=audit&token=T0k3n",
        srv.addr()
    );
    let mut b = built(&url, &[]);
    assert!(b.events.is_none(), "no interim path unless asked");
    let sink = b.sink.as_mut().unwrap();
    let batch = vec![rec(1, U1, "a"), rec(2, U2, "b")];
    let out = sink.deliver(&batch).await.unwrap();
    assert_eq!(out, vec![Outcome::Delivered, Outcome::Delivered]);
    let reqs = srv.requests();
    assert_eq!(reqs.len(), 2);
    for r in &reqs {
        assert_eq!(r.method, "POST");
        assert_eq!(
            r.target,
            "/api/vcon?ingress_lists=default&ingress_lists=audit"
        );
        assert_eq!(r.header("x-conserver-api-token"), Some("T0k3n"));
        assert_eq!(r.header("content-type"), Some("application/vcon+json"));
        assert!(r.header("x-hub-signature-256").is_none());
    }
    let mut bodies: Vec<&[u8]> = reqs.iter().map(|r| &r.body[..]).collect();
    bodies.sort();
    let mut want: Vec<&[u8]> = batch.iter().map(|r| &r.json[..]).collect();
    want.sort();
    assert_eq!(bodies, want, "bodies are the spooled bytes, unchanged");
}

#[tokio::test]
async fn conserver_comma_lists_split_custom_token_header_and_vcon_path() {
    let srv = FakeServer::start(vec![]).await;
    // `ingress=a,b` is two lists (two parameters, never one comma-joined value); a URL that
    // already ends in /vcon is used as is; an ingress name is percent-encoded.
    let url = format!("conserver+http://{}/api/vcon/?ingress=a,b", srv.addr());
    let mut b = built(
        &url,
        &[
            ("ingress", "x y&z"),
            ("token", "abc"),
            ("token_header", "X-Api-Key"),
        ],
    );
    let out = b
        .sink
        .as_mut()
        .unwrap()
        .deliver(&[rec(1, U1, "a")])
        .await
        .unwrap();
    assert_eq!(out, vec![Outcome::Delivered]);
    let r = &srv.requests()[0];
    assert_eq!(r.path(), "/api/vcon");
    assert_eq!(r.query_all("ingress_lists"), vec!["a", "b", "x y&z"]);
    assert!(!r.query().unwrap().contains("%2C"), "{}", r.target);
    assert_eq!(r.header("x-api-key"), Some("abc"));
    assert!(r.header("x-conserver-api-token").is_none());

    // No ingress list: no query at all (store and index only); no token: no header.
    let mut b = built(&format!("conserver+http://{}", srv.addr()), &[]);
    b.sink
        .as_mut()
        .unwrap()
        .deliver(&[rec(2, U2, "b")])
        .await
        .unwrap();
    let r = srv.requests().pop().unwrap();
    assert_eq!(r.target, "/vcon");
    assert!(r.header("x-conserver-api-token").is_none());
}

#[tokio::test]
async fn success_codes_and_validation_rejection_in_order() {
    let srv = FakeServer::start(vec![
        Reply::status(201),
        Reply::status(200),
        Reply::status(204),
        Reply::status(422).body(
            r#"{"detail":[{"type":"string_pattern_mismatch","loc":["body","parties",0,"tel"],"msg":"String should match pattern","input":"1001"}]}"#,
        ),
        Reply::status(202),
    ])
    .await;
    let url = format!(
        "conserver+http://{}/api?ingress=default&concurrency=1",
        srv.addr()
    );
    let mut b = built(&url, &[]);
    let batch: Vec<_> = (0..5)
        .map(|i| rec(i, &format!("018f0000-0000-8000-8000-00000000000{i}"), "x"))
        .collect();
    let out = b.sink.as_mut().unwrap().deliver(&batch).await.unwrap();
    assert_eq!(out.len(), 5);
    assert_eq!(
        out[..3],
        [Outcome::Delivered, Outcome::Delivered, Outcome::Delivered]
    );
    match &out[3] {
        Outcome::Rejected(why) => {
            assert!(why.contains("422"), "{why}");
            assert!(why.contains("parties.0.tel"), "{why}");
            assert!(
                !why.contains("1001"),
                "the rejected input is not echoed: {why}"
            );
        }
        o => panic!("422 must be a rejection, got {o:?}"),
    }
    assert_eq!(out[4], Outcome::Delivered);
    // Sent once each, in spool order: a rejection is not retried by the sink.
    let reqs = srv.requests();
    assert_eq!(reqs.len(), 5);
    for (r, want) in reqs.iter().zip(&batch) {
        assert_eq!(r.body, &want.json[..]);
    }
}

#[tokio::test]
async fn a_single_422_is_sent_exactly_once() {
    let srv = FakeServer::start(vec![Reply::status(422).body(r#"{"detail":"bad vcon"}"#)]).await;
    let mut b = built(&format!("conserver+http://{}/api", srv.addr()), &[]);
    let out = b
        .sink
        .as_mut()
        .unwrap()
        .deliver(&[rec(1, U1, "a")])
        .await
        .unwrap();
    assert_eq!(
        out,
        vec![Outcome::Rejected(
            "HTTP 422 Unprocessable Entity: bad vcon".into()
        )]
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(srv.requests().len(), 1);
}

#[tokio::test]
async fn transient_statuses_are_errors_with_useful_messages() {
    let cases: &[(u16, &[&str])] = &[
        (500, &["500"]),
        (503, &["503", "Service Unavailable"]),
        (502, &["502"]),
        (408, &["408"]),
        (409, &["409"]),
        (425, &["425"]),
        (429, &["429"]),
        (401, &["401", "token"]),
        (403, &["403", "token", "x-conserver-api-token", "retried"]),
        (404, &["404", "/api/vcon", "URL"]),
        (301, &["301", "redirect", "http://elsewhere/api/vcon"]),
    ];
    let srv = FakeServer::start(
        cases
            .iter()
            .map(|(s, _)| {
                let r = Reply::status(*s).body(r#"{"detail":"Invalid API Key"}"#);
                if *s == 301 {
                    r.header("location", "http://elsewhere/api/vcon")
                } else {
                    r
                }
            })
            .collect(),
    )
    .await;
    let url = format!(
        "conserver+http://{}/api?ingress=default&token=WRONG",
        srv.addr()
    );
    let mut b = built(&url, &[]);
    let sink = b.sink.as_mut().unwrap();
    for (status, words) in cases {
        let e = sink
            .deliver(&[rec(1, U1, "a")])
            .await
            .expect_err(&format!("HTTP {status} must be transient"))
            .to_string();
        for w in *words {
            assert!(e.contains(w), "HTTP {status}: `{w}` missing in: {e}");
        }
        assert!(
            !e.contains("WRONG"),
            "the token never appears in messages: {e}"
        );
    }
    assert_eq!(srv.requests().len(), cases.len());
}

#[tokio::test]
async fn a_transient_failure_fails_the_whole_batch() {
    let srv = FakeServer::start(vec![Reply::status(201), Reply::status(500)]).await;
    let url = format!("conserver+http://{}/api?concurrency=1", srv.addr());
    let mut b = built(&url, &[]);
    let batch = vec![rec(1, U1, "a"), rec(2, U2, "b"), rec(3, U1, "c")];
    let e = b.sink.as_mut().unwrap().deliver(&batch).await.unwrap_err();
    assert!(e.to_string().contains("500"), "{e}");
    // The third record was not attempted after the failure.
    assert_eq!(srv.requests().len(), 2);
    // The retry (whole batch) succeeds and re-sends the first record: at-least-once.
    let out = b.sink.as_mut().unwrap().deliver(&batch).await.unwrap();
    assert_eq!(out, vec![Outcome::Delivered; 3]);
    assert_eq!(srv.requests().len(), 5);
}

#[tokio::test]
async fn connection_refused_and_timeout_are_errors() {
    // Building does no network I/O: a sink to a dead port builds fine.
    let url = format!("conserver+http://127.0.0.1:{}/api", dead_port());
    let mut b = built(&url, &[]);
    let e = b
        .sink
        .as_mut()
        .unwrap()
        .deliver(&[rec(1, U1, "a")])
        .await
        .unwrap_err();
    assert!(e.to_string().contains("cannot connect"), "{e}");

    let srv = FakeServer::start(vec![Reply::status(201).delay(Duration::from_secs(3))]).await;
    let url = format!("webhook+http://{}/hook?timeout_ms=200", srv.addr());
    let mut b = built(&url, &[]);
    let t0 = Instant::now();
    let e = b
        .sink
        .as_mut()
        .unwrap()
        .deliver(&[rec(1, U1, "a")])
        .await
        .unwrap_err();
    assert!(e.to_string().contains("timed out"), "{e}");
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
}

#[tokio::test]
async fn webhook_is_signed_over_the_exact_bytes_with_idempotency_and_headers() {
    let srv = FakeServer::start(vec![]).await;
    std::env::set_var("VCONTAP_TEST_WEBHOOK_AUTH", "Bearer from-env");
    let url = format!(
        "webhook+http://{}/hooks/vcon?secret=s3cr3t&header=X-Tenant:acme",
        srv.addr()
    );
    let mut b = built(
        &url,
        &[
            ("header", "Authorization: env:VCONTAP_TEST_WEBHOOK_AUTH"),
            ("header", "X-Tag: one"),
            ("header", "X-Tag: two"),
        ],
    );
    assert!(b.events.is_none());
    let sink = b.sink.as_mut().unwrap();
    let batch = vec![rec(1, U1, "a"), rec(2, U2, "b")];
    assert_eq!(
        sink.deliver(&batch).await.unwrap(),
        vec![Outcome::Delivered; 2]
    );
    // Re-delivery of one uuid (what a retry does): sent again with the same key; dropping
    // the duplicate is the receiver's job.
    assert_eq!(
        sink.deliver(&batch[..1]).await.unwrap(),
        vec![Outcome::Delivered]
    );
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let reqs = srv.requests();
    assert_eq!(reqs.len(), 3);
    for r in &reqs {
        assert_eq!(r.method, "POST");
        assert_eq!(r.target, "/hooks/vcon");
        assert_eq!(r.header("content-type"), Some("application/vcon+json"));
        let sig = r.header("x-hub-signature-256").expect("signed");
        assert_eq!(
            sig,
            format!("sha256={}", hmac_sha256_hex(b"s3cr3t", &r.body))
        );
        let ts: u64 = r.header("x-vcontap-timestamp").unwrap().parse().unwrap();
        assert!(ts.abs_diff(now) <= 5, "timestamp {ts} vs now {now}");
        assert_eq!(r.header("x-tenant"), Some("acme"));
        assert_eq!(r.header("authorization"), Some("Bearer from-env"));
        assert_eq!(r.header_all("x-tag"), vec!["one", "two"]);
        assert!(r.header("x-vcontap-event").is_none());
        let key = r.header("idempotency-key").unwrap();
        let want = batch
            .iter()
            .find(|x| &*x.uuid == key)
            .expect("key is a uuid");
        assert_eq!(r.body, &want.json[..], "body is the exact spooled bytes");
    }
    let keys: Vec<_> = reqs
        .iter()
        .map(|r| r.header("idempotency-key").unwrap())
        .collect();
    assert_eq!(keys.iter().filter(|k| **k == U1).count(), 2);
    // Keep-alive: the three requests did not need three connections each time.
    assert!(reqs.iter().map(|r| r.conn).max().unwrap() <= 2, "{reqs:?}");
}

#[tokio::test]
async fn webhook_without_secret_is_unsigned_and_odd_uuids_are_rejected_locally() {
    let srv = FakeServer::start(vec![]).await;
    let mut b = built(&format!("webhook+http://{}/", srv.addr()), &[]);
    let mut odd = (*rec(2, U2, "b")).clone();
    odd.uuid = "bad\nuuid".into();
    let out = b
        .sink
        .as_mut()
        .unwrap()
        .deliver(&[rec(1, U1, "a"), Arc::new(odd)])
        .await
        .unwrap();
    assert_eq!(out[0], Outcome::Delivered);
    assert!(
        matches!(&out[1], Outcome::Rejected(w) if w.contains("Idempotency-Key")),
        "{out:?}"
    );
    let reqs = srv.requests();
    assert_eq!(reqs.len(), 1);
    assert!(reqs[0].header("x-hub-signature-256").is_none());
    assert!(reqs[0].header("x-vcontap-timestamp").is_some());
}

#[tokio::test]
async fn url_credentials_become_basic_auth_and_stay_out_of_the_name() {
    let srv = FakeServer::start(vec![]).await;
    let spec = SinkSpec::parse(&format!("webhook+http://user:pw@{}/h", srv.addr())).unwrap();
    assert!(!spec.name.contains("pw"), "{}", spec.name);
    let mut b = build(spec).unwrap();
    b.sink
        .as_mut()
        .unwrap()
        .deliver(&[rec(1, U1, "a")])
        .await
        .unwrap();
    // base64("user:pw")
    assert_eq!(
        srv.requests()[0].header("authorization"),
        Some("Basic dXNlcjpwdw==")
    );
}

#[tokio::test]
async fn webhook_events_post_every_event_line() {
    let srv = FakeServer::start(vec![]).await;
    let url = format!("webhook+http://{}/events?events=true&secret=k", srv.addr());
    let mut b = built(&url, &[]);
    let ev = b.events.as_mut().expect("events=true gives an event sink");
    let batch = vec![
        event(U1, 1, EventKind::Created),
        event(U1, 2, EventKind::Updated),
        event(U1, 3, EventKind::Segment),
        event(U1, 4, EventKind::Finished),
    ];
    ev.publish(&batch).await.unwrap();
    let reqs = srv.requests();
    assert_eq!(reqs.len(), 4);
    for (r, e) in reqs.iter().zip(&batch) {
        assert_eq!(r.target, "/events");
        assert_eq!(
            r.header("idempotency-key"),
            Some(&*format!("{U1}:{}", e.seq))
        );
        assert_eq!(r.header("x-vcontap-event"), Some(e.kind.as_str()));
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.body, e.to_json_line().as_bytes());
        assert_eq!(
            r.header("x-hub-signature-256"),
            Some(&*format!("sha256={}", hmac_sha256_hex(b"k", &r.body)))
        );
    }
    // A refused event is dropped (best-effort), a 5xx is an error.
    srv.push_replies([Reply::status(400), Reply::status(503)]);
    ev.publish(&batch[..1]).await.unwrap();
    assert!(ev.publish(&batch[..1]).await.is_err());
}

#[tokio::test]
async fn conserver_interim_snapshots_skip_finished_and_ingress_lists() {
    let srv = FakeServer::start(vec![]).await;
    let url = format!(
        "conserver+http://{}/api?ingress=default&interim=true&token=T",
        srv.addr()
    );
    let mut b = built(&url, &[]);
    let batch = vec![
        event(U1, 1, EventKind::Created),
        event(U1, 2, EventKind::Updated),
        event(U1, 3, EventKind::Segment),
        event(U1, 4, EventKind::Finished),
    ];
    b.events
        .as_mut()
        .expect("interim=true")
        .publish(&batch)
        .await
        .unwrap();
    let reqs = srv.requests();
    assert_eq!(reqs.len(), 2, "only updated and segment: {reqs:?}");
    for (r, e) in reqs.iter().zip([&batch[1], &batch[2]]) {
        assert_eq!(
            r.target, "/api/vcon",
            "no ingress_lists on interim snapshots"
        );
        assert_eq!(r.body, e.vcon_json.as_bytes());
        assert_eq!(r.header("x-conserver-api-token"), Some("T"));
        assert_eq!(r.header("content-type"), Some("application/vcon+json"));
    }
    // The durable path still names the ingress list.
    b.sink
        .as_mut()
        .unwrap()
        .deliver(&[rec(1, U1, "final")])
        .await
        .unwrap();
    assert_eq!(srv.requests()[2].target, "/api/vcon?ingress_lists=default");
}

#[tokio::test]
async fn per_uuid_order_holds_with_concurrency() {
    // The first request of each uuid is slow, so with 4 in flight a later record of the same
    // uuid would overtake it if the sink did not keep them apart.
    let srv = FakeServer::start_with(vec![], |r| {
        let body = String::from_utf8_lossy(&r.body);
        if body.contains("\"subject\":\"0\"") {
            Reply::status(201).delay(Duration::from_millis(300))
        } else {
            Reply::status(201)
        }
    })
    .await;
    let url = format!("conserver+http://{}/api?concurrency=4", srv.addr());
    let mut b = built(&url, &[]);
    let uuids = [U1, U1, U2, "u3", U1, "u4", U2, "u5", "u6", "u7"];
    let mut seen = std::collections::HashMap::<&str, u32>::new();
    let batch: Vec<_> = uuids
        .iter()
        .enumerate()
        .map(|(i, u)| {
            let n = seen.entry(u).or_default();
            let r = rec(i as u64, u, &n.to_string());
            *n += 1;
            r
        })
        .collect();
    let t0 = Instant::now();
    let out = b.sink.as_mut().unwrap().deliver(&batch).await.unwrap();
    assert_eq!(out, vec![Outcome::Delivered; batch.len()]);
    let reqs = srv.requests();
    assert_eq!(reqs.len(), batch.len());
    for u in [U1, U2] {
        let got: Vec<&[u8]> = reqs
            .iter()
            .filter(|r| String::from_utf8_lossy(&r.body).contains(u))
            .map(|r| &r.body[..])
            .collect();
        let want: Vec<&[u8]> = batch
            .iter()
            .filter(|r| &*r.uuid == u)
            .map(|r| &r.json[..])
            .collect();
        assert_eq!(got, want, "order of {u}");
    }
    // Concurrency helped: the seven slow first records overlapped (about 3 × 0.3 s; one at
    // a time would take at least 7 × 0.3 s).
    assert!(
        t0.elapsed() < Duration::from_millis(1800),
        "{:?}",
        t0.elapsed()
    );
}

#[tokio::test]
async fn reconnects_after_the_server_closes_the_connection() {
    let srv = FakeServer::start(vec![Reply::status(201).close(), Reply::status(201).close()]).await;
    let mut b = built(
        &format!("webhook+http://{}/h?concurrency=1", srv.addr()),
        &[],
    );
    let sink = b.sink.as_mut().unwrap();
    for i in 0..4 {
        let out = sink.deliver(&[rec(i, U1, "a")]).await.unwrap();
        assert_eq!(out, vec![Outcome::Delivered]);
    }
    let conns: Vec<u64> = srv.requests().iter().map(|r| r.conn).collect();
    assert_eq!(conns.len(), 4);
    assert_eq!(conns[0], 1);
    assert!(conns[1] > 1 && conns[2] > conns[1], "{conns:?}");
    assert_eq!(
        conns[3], conns[2],
        "kept alive once the server allows it: {conns:?}"
    );
}

#[test]
fn configuration_errors_are_clear() {
    let c = "conserver+http://127.0.0.1:8000/api";
    let w = "webhook+https://hooks.example.com/x";
    for (url, extra, words) in [
        (c, vec![("secret", "x")], vec!["`secret`", "unknown option"]),
        (c, vec![("bogus", "1")], vec!["`bogus`", "unknown option"]),
        (
            w,
            vec![("ingress", "a")],
            vec!["`ingress`", "unknown option"],
        ),
        (
            w,
            vec![("header", "NoColon")],
            vec!["`header`", "Name:Value"],
        ),
        (
            w,
            vec![("header", "Bad Name: v")],
            vec!["`header`", "header name"],
        ),
        (
            w,
            vec![("header", "X-A: a\u{1}b")],
            vec!["`header`", "value"],
        ),
        (
            w,
            vec![("header", "Content-Type: text/plain")],
            vec!["`header`", "overridden"],
        ),
        (
            w,
            vec![("header", "Idempotency-Key: 1")],
            vec!["`header`", "overridden"],
        ),
        (w, vec![("secret", "")], vec!["`secret`", "empty"]),
        (
            c,
            vec![("token_header", "bad header")],
            vec!["`token_header`"],
        ),
        (c, vec![("token", "a\nb")], vec!["`token`"]),
        (c, vec![("timeout_ms", "0")], vec!["`timeout_ms`"]),
        (c, vec![("concurrency", "0")], vec!["`concurrency`"]),
        (c, vec![("interim", "maybe")], vec!["`interim`"]),
        (c, vec![("ca_file", "/x.pem")], vec!["ca_file", "https"]),
        (
            "conserver+https://127.0.0.1:8000/api",
            vec![("ca_file", "/nonexistent/ca.pem")],
            vec!["ca_file", "/nonexistent/ca.pem"],
        ),
    ] {
        let e = config_error(url, &extra);
        for word in &words {
            assert!(
                e.contains(word),
                "{url} {extra:?}: `{word}` missing in: {e}"
            );
        }
    }
    // The registry only dispatches http(s) targets; the builder checks on its own too.
    let spec = SinkSpec::parse("conserver+ftp://127.0.0.1/api").unwrap();
    let e = vcontap_sinks::http::build_conserver(spec)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("http or https"), "{e}");
}

#[test]
fn https_sinks_build_without_network() {
    // Uses the system CA bundle (rustls-platform-verifier) with the ring provider; no
    // connection is made at build time.
    let b = built(
        "conserver+https://conserver.invalid:8443/api?ingress=default&interim=true",
        &[],
    );
    assert!(b.sink.is_some() && b.events.is_some());
    let b = built("webhook+https://hooks.invalid/x?events=1", &[]);
    assert!(b.sink.is_some() && b.events.is_some());
}

/// Throughput: 2,000 vCons of ~8 KB through a conserver sink to the fake server on
/// loopback, batches of `max_batch`. `cargo test -p vcontap-sinks --test http -- --ignored
/// --nocapture throughput`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn throughput_2000_vcons_of_8kb() {
    for concurrency in [1, 4] {
        let srv = FakeServer::start(vec![]).await;
        let url = format!(
            "conserver+http://{}/api?ingress=default&token=T&concurrency={concurrency}",
            srv.addr()
        );
        let mut b = built(&url, &[]);
        let sink = b.sink.as_mut().unwrap();
        let pad = "x".repeat(8000);
        let recs: Vec<Arc<Record>> = (0..2000u64)
            .map(|i| {
                let uuid = format!("018f0000-0000-8000-8000-{i:012}");
                Arc::new(Record {
                    id: RecordId(i),
                    uuid: uuid.as_str().into(),
                    json: Bytes::from(format!(
                        r#"{{"vcon":"0.4.0","uuid":"{uuid}","created_at":"2026-11-29T12:00:00Z","parties":[],"dialog":[],"attachments":[{{"purpose":"pad","body":"{pad}"}}]}}"#
                    )),
                    spooled_unix_ms: 0,
                })
            })
            .collect();
        let t0 = Instant::now();
        for chunk in recs.chunks(sink.max_batch()) {
            let out = sink.deliver(chunk).await.unwrap();
            assert!(out.iter().all(|o| *o == Outcome::Delivered));
        }
        let dt = t0.elapsed();
        assert_eq!(srv.requests().len(), 2000);
        println!(
            "http sink, concurrency {concurrency}: 2000 vCons of {} bytes in {:.3} s = {:.0} vCons/s",
            recs[0].json.len(),
            dt.as_secs_f64(),
            2000.0 / dt.as_secs_f64()
        );
    }
}

#[tokio::test]
async fn fetch_vcon_reads_the_store_view() {
    let srv = FakeServer::start(vec![
        Reply::status(200).body(r#"{"uuid":"x"}"#),
        Reply::status(404),
        Reply::status(403),
    ])
    .await;
    let base = format!("http://{}/api/", srv.addr());
    let got = vcontap_sinks::http::fetch_vcon(&base, Some("T"), U1)
        .await
        .unwrap();
    assert_eq!(got.as_deref(), Some(&br#"{"uuid":"x"}"#[..]));
    assert!(vcontap_sinks::http::fetch_vcon(&base, None, U2)
        .await
        .unwrap()
        .is_none());
    assert!(vcontap_sinks::http::fetch_vcon(&base, None, U2)
        .await
        .is_err());
    let reqs = srv.requests();
    assert_eq!(reqs[0].method, "GET");
    assert_eq!(reqs[0].target, format!("/api/vcon/{U1}"));
    assert_eq!(reqs[0].header("x-conserver-api-token"), Some("T"));
}
