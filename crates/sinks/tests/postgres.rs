//! The PostgreSQL sink against the real server on 127.0.0.1:5432 (user `postgres`, database
//! `test`, trust auth; CI starts it). Each test uses its own tables (dropped at the end), so
//! tests run in parallel. A server that is down fails the tests with a clear message.
#![cfg(feature = "postgres")]

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use serde_json::Value;
use tokio_postgres::{Client, NoTls};
use vcontap_engine::{EventKind, VconEvent};
use vcontap_sinks::postgres::stored_uuids;
use vcontap_sinks::record::RecordId;
use vcontap_sinks::{Built, Outcome, Record, SinkSpec};

const URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A fresh table name per test and run (parallel tests and repeated runs never collide).
fn unique(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("t_{tag}_{}_{nanos}", std::process::id())
}

async fn db() -> Client {
    let (client, conn) = tokio_postgres::connect(URL, NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!("PostgreSQL must run on 127.0.0.1:5432 (user postgres, db test, trust): {e}")
        });
    tokio::spawn(conn);
    client
}

async fn drop_tables(tables: &[&str]) {
    let c = db().await;
    for t in tables {
        c.batch_execute(&format!("DROP TABLE IF EXISTS \"{t}\""))
            .await
            .unwrap();
    }
}

fn build(query: &str) -> Built {
    vcontap_sinks::spec::build(SinkSpec::parse(&format!("{URL}?{query}")).unwrap())
        .unwrap_or_else(|e| panic!("{e}"))
}

fn uuid(n: u32) -> String {
    format!("018f0000-0000-8000-8000-{n:012x}")
}

fn vcon(u: &str, created: &str, subject: &str) -> String {
    format!(
        r#"{{"vcon":"0.4.0","uuid":"{u}","created_at":"{created}","subject":"{subject}","parties":[{{"tel":"+15551001000","name":"Alice"}},{{"sip":"sip:1001@pbx.example"}}],"dialog":[{{"type":"recording","start":"{created}","parties":[0,1],"duration":12.5}}],"attachments":[],"analysis":[],"extensions":["sip-signaling"]}}"#
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

async fn count(c: &Client, table: &str) -> i64 {
    c.query_one(&format!("SELECT count(*) FROM \"{table}\""), &[])
        .await
        .unwrap()
        .get(0)
}

async fn stored_json(c: &Client, table: &str, u: &str) -> Value {
    let row = c
        .query_one(
            &format!("SELECT vcon_json::text FROM \"{table}\" WHERE id = $1::text::uuid"),
            &[&u],
        )
        .await
        .unwrap();
    serde_json::from_str(row.get::<_, &str>(0)).unwrap()
}

#[tokio::test]
async fn upsert_keeps_one_row_per_uuid_and_the_later_record_wins() {
    let t = unique("upsert");
    let mut built = build(&format!("table={t}"));
    let sink = built.sink.as_mut().unwrap();
    assert!(built.events.is_none());
    let u = uuid(1);
    let v1 = rec(1, &u, vcon(&u, "2026-11-29T10:00:00.000Z", "first"));
    for _ in 0..3 {
        let out = sink.deliver(std::slice::from_ref(&v1)).await.unwrap();
        assert_eq!(out, vec![Outcome::Delivered]);
    }
    let c = db().await;
    assert_eq!(count(&c, &t).await, 1);
    assert_eq!(stored_json(&c, &t, &u).await["subject"], "first");

    // A later record for the same uuid replaces the row (a new delivery)...
    let v2 = rec(2, &u, vcon(&u, "2026-11-29T10:00:00.000Z", "second"));
    assert_eq!(
        sink.deliver(std::slice::from_ref(&v2)).await.unwrap(),
        vec![Outcome::Delivered]
    );
    assert_eq!(stored_json(&c, &t, &u).await["subject"], "second");
    // ...and within one batch (ON CONFLICT cannot touch a row twice: the batch is reduced
    // to the last record per uuid), with another uuid in between.
    let w = uuid(2);
    let batch = vec![
        rec(3, &u, vcon(&u, "2026-11-29T10:00:00.000Z", "third")),
        rec(4, &w, vcon(&w, "2026-11-29T11:00:00.000Z", "other")),
        rec(5, &u, vcon(&u, "2026-11-29T10:00:00.000Z", "fourth")),
    ];
    assert_eq!(
        sink.deliver(&batch).await.unwrap(),
        vec![Outcome::Delivered; 3]
    );
    assert_eq!(count(&c, &t).await, 2);
    assert_eq!(stored_json(&c, &t, &u).await["subject"], "fourth");
    assert_eq!(stored_json(&c, &t, &w).await["subject"], "other");
    assert_eq!(
        stored_uuids(URL, &t).await.unwrap(),
        vec![u.clone(), w.clone()]
    );
    sink.close().await;
    drop_tables(&[&t]).await;
}

#[tokio::test]
async fn a_large_batch_is_split_over_the_pool_and_still_later_wins() {
    let t = unique("split");
    let app = unique("splitapp");
    let mut built = build(&format!(
        "table={t}&pool=4&batch=500&application_name={app}"
    ));
    let sink = built.sink.as_mut().unwrap();
    // 100 uuids twice (v1 then v2) plus one bad record in the middle.
    let mut batch = Vec::new();
    for v in ["v1", "v2"] {
        for i in 0..100 {
            let u = uuid(1000 + i);
            batch.push(rec(
                batch.len() as u64,
                &u,
                vcon(&u, "2026-11-29T10:00:00Z", v),
            ));
        }
    }
    let bad = uuid(2000);
    batch.insert(
        150,
        rec(999, &bad, vcon(&bad, "2026-11-29T10:00:00Z", "\\u0000")),
    );
    let out = sink.deliver(&batch).await.unwrap();
    assert_eq!(out.len(), 201);
    for (i, o) in out.iter().enumerate() {
        if i == 150 {
            assert!(
                matches!(o, Outcome::Rejected(r) if r.contains("SQLSTATE 22")),
                "{o:?}"
            );
        } else {
            assert_eq!(*o, Outcome::Delivered, "record {i}");
        }
    }
    let c = db().await;
    let v2: i64 = c
        .query_one(
            &format!("SELECT count(*) FROM \"{t}\" WHERE vcon_json->>'subject' = 'v2'"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!((count(&c, &t).await, v2), (100, 100));
    // The same batch without the bad record: one statement per connection, 4 in parallel.
    batch.remove(150);
    assert_eq!(
        sink.deliver(&batch).await.unwrap(),
        vec![Outcome::Delivered; 200]
    );
    let conns: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
            &[&app],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(conns, 4, "pool=4 and a 200-row batch use 4 connections");
    drop_tables(&[&t]).await;
}

#[tokio::test]
async fn columns_carry_the_conserver_names_and_the_record_values() {
    let t = unique("cols");
    let mut built = build(&format!("table={t}"));
    let sink = built.sink.as_mut().unwrap();
    let u = uuid(7);
    // created_at with an offset and microseconds; updated_at present on the second uuid.
    let json = vcon(&u, "2026-11-29T12:34:56.789123+02:00", "Sales call");
    let u2 = uuid(8);
    let json2 = format!(
        r#"{{"vcon":"0.4.0","uuid":"{u2}","created_at":"2026-01-02T03:04:05Z","updated_at":"2026-01-02T03:09:05.5Z","parties":[],"dialog":[]}}"#
    );
    let out = sink
        .deliver(&[rec(1, &u, json.clone()), rec(2, &u2, json2.clone())])
        .await
        .unwrap();
    assert_eq!(out, vec![Outcome::Delivered; 2]);

    let c = db().await;
    let cols = c
        .query(
            "SELECT column_name::text, data_type::text, is_nullable::text \
             FROM information_schema.columns WHERE table_name = $1 ORDER BY ordinal_position",
            &[&t],
        )
        .await
        .unwrap();
    let cols: Vec<(String, String, String)> = cols
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let want = [
        ("id", "uuid", "NO"),
        ("vcon", "text", "NO"),
        ("uuid", "uuid", "NO"),
        ("created_at", "timestamp with time zone", "NO"),
        ("updated_at", "timestamp with time zone", "YES"),
        ("subject", "text", "YES"),
        ("vcon_json", "jsonb", "YES"),
    ];
    assert_eq!(
        cols,
        want.iter()
            .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
            .collect::<Vec<_>>()
    );
    let pk: String = c
        .query_one(
            "SELECT a.attname::text FROM pg_index i JOIN pg_attribute a \
             ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
             WHERE i.indrelid = $1::text::regclass AND i.indisprimary",
            &[&format!("\"{t}\"")],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(pk, "id");

    let row = c
        .query_one(
            &format!(
                "SELECT id::text, vcon, uuid::text, \
                 (extract(epoch from created_at) * 1000000)::bigint, subject, \
                 (extract(epoch from updated_at) * 1000)::bigint, vcon_json::text \
                 FROM \"{t}\" WHERE id = $1::text::uuid"
            ),
            &[&u],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), u);
    assert_eq!(row.get::<_, String>(1), "0.4.0");
    assert_eq!(row.get::<_, String>(2), u);
    // 12:34:56.789123+02:00 = 10:34:56.789123Z, to the microsecond.
    let created_us =
        (vcontap_sinks::record::parse_rfc3339_ms("2026-11-29T10:34:56Z").unwrap()) * 1000 + 789_123;
    assert_eq!(row.get::<_, i64>(3), created_us);
    assert_eq!(row.get::<_, String>(4), "Sales call");
    // No updated_at in the vCon: the write time (within the last minute).
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let upd = row.get::<_, i64>(5);
    assert!(
        (now_ms - upd).abs() < 60_000,
        "updated_at {upd} vs now {now_ms}"
    );
    // vcon_json is the record's JSON, semantically (jsonb normalizes key order/space).
    let stored: Value = serde_json::from_str(row.get::<_, &str>(6)).unwrap();
    assert_eq!(stored, serde_json::from_str::<Value>(&json).unwrap());

    let row = c
        .query_one(
            &format!(
                "SELECT subject, (extract(epoch from updated_at) * 1000)::bigint, \
                 (extract(epoch from created_at) * 1000)::bigint FROM \"{t}\" WHERE id = $1::text::uuid"
            ),
            &[&u2],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, Option<String>>(0), None);
    assert_eq!(
        Some(row.get::<_, i64>(1)),
        vcontap_sinks::record::parse_rfc3339_ms("2026-01-02T03:09:05.5Z")
    );
    assert_eq!(
        Some(row.get::<_, i64>(2)),
        vcontap_sinks::record::parse_rfc3339_ms("2026-01-02T03:04:05Z")
    );
    assert_eq!(
        stored_json(&c, &t, &u2).await,
        serde_json::from_str::<Value>(&json2).unwrap()
    );
    drop_tables(&[&t]).await;
}

fn event(u: &str, seq: u64, kind: EventKind, at_ns: i64, subject: &str) -> Arc<VconEvent> {
    let mut ev = VconEvent {
        uuid: u.into(),
        seq,
        kind,
        at: Default::default(),
        reason: None,
        vcon_json: vcon(u, "2026-11-29T10:00:00Z", subject).into(),
    };
    ev.at.0 = at_ns;
    Arc::new(ev)
}

#[tokio::test]
async fn events_rows_are_unique_by_uuid_and_seq_and_idempotent() {
    let t = unique("ev_vcons");
    let e = unique("ev_events");
    let mut built = build(&format!("table={t}&events_table={e}&pool=3"));
    let events = built
        .events
        .as_mut()
        .expect("events_table gives an event sink");
    let u = uuid(10);
    let w = uuid(11);
    let at = 1_764_410_400_123_456_789i64; // 2025-11-29T10:00:00.123456789Z
    let batch = vec![
        event(&u, 1, EventKind::Created, at, "a"),
        event(&u, 2, EventKind::Updated, at + 1_000_000_000, "b"),
        event(&w, 1, EventKind::Created, at, "c"),
        event(&u, 2, EventKind::Updated, at, "duplicate in the same batch"),
        event("not-a-uuid", 1, EventKind::Created, at, "skipped"),
    ];
    events.publish(&batch).await.unwrap();
    // The same batch again (a retry) and a finished event.
    events.publish(&batch).await.unwrap();
    events
        .publish(&[event(&u, 3, EventKind::Finished, at + 5_000_000_000, "z")])
        .await
        .unwrap();

    let c = db().await;
    let rows = c
        .query(
            &format!(
                "SELECT uuid::text, seq, kind, (extract(epoch from at) * 1000000)::bigint, \
                 vcon->>'subject' FROM \"{e}\" ORDER BY uuid, seq"
            ),
            &[],
        )
        .await
        .unwrap();
    let got: Vec<(String, i64, String, i64, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    let us = at / 1000;
    assert_eq!(
        got,
        vec![
            (u.clone(), 1, "created".into(), us, "a".into()),
            (u.clone(), 2, "updated".into(), us + 1_000_000, "b".into()),
            (u.clone(), 3, "finished".into(), us + 5_000_000, "z".into()),
            (w.clone(), 1, "created".into(), us, "c".into()),
        ]
    );
    // The event's whole snapshot is stored as jsonb.
    let snap: String = c
        .query_one(
            &format!("SELECT vcon::text FROM \"{e}\" WHERE uuid = $1::text::uuid AND seq = 3"),
            &[&u],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        serde_json::from_str::<Value>(&snap).unwrap(),
        serde_json::from_str::<Value>(&vcon(&u, "2026-11-29T10:00:00Z", "z")).unwrap()
    );
    // The durable sink shares the pool and the schema step.
    let sink = built.sink.as_mut().unwrap();
    let v = rec(1, &u, vcon(&u, "2026-11-29T10:00:00Z", "final"));
    assert_eq!(sink.deliver(&[v]).await.unwrap(), vec![Outcome::Delivered]);
    assert_eq!(count(&c, &t).await, 1);
    drop_tables(&[&t, &e]).await;
}

#[tokio::test]
async fn a_dead_port_is_a_transient_error_and_build_does_no_io() {
    // Port 1 on loopback: connection refused. Building must still succeed (no I/O).
    let mut built = vcontap_sinks::spec::build(
        SinkSpec::parse("postgresql://postgres@127.0.0.1:1/test?connect_timeout=2").unwrap(),
    )
    .unwrap();
    let sink = built.sink.as_mut().unwrap();
    let u = uuid(20);
    let err = sink
        .deliver(&[rec(1, &u, vcon(&u, "2026-11-29T10:00:00Z", "x"))])
        .await
        .unwrap_err();
    assert!(err.0.contains("connecting"), "{err}");
    // A batch of only rejected records needs no connection.
    let out = sink
        .deliver(&[rec(2, "nope", vcon("nope", "2026-11-29T10:00:00Z", "x"))])
        .await
        .unwrap();
    assert!(matches!(&out[0], Outcome::Rejected(r) if r.contains("uuid")));
}

#[tokio::test]
async fn bad_data_is_rejected_for_that_record_only_while_the_others_land() {
    let t = unique("bad");
    let mut built = build(&format!("table={t}"));
    let sink = built.sink.as_mut().unwrap();
    let (a, b, n, y, z) = (uuid(30), uuid(31), uuid(32), uuid(33), uuid(34));
    let batch = vec![
        rec(1, &a, vcon(&a, "2026-11-29T10:00:00Z", "a1")),
        // Rust-side rejections (no database round trip).
        rec(
            2,
            "018f0000-zzzz-8000-8000-000000000000",
            vcon(&a, "2026-11-29T10:00:00Z", "x"),
        ),
        rec(3, &y, vcon(&y, "yesterday", "x")),
        rec(4, &y, "[1,2,3]".to_string()),
        rec(5, &y, "{\"uuid\": \"".to_string()),
        // Postgres-side rejections: jsonb cannot hold \u0000; year 0 is out of range.
        rec(
            6,
            &n,
            vcon(&n, "2026-11-29T10:00:00Z", "nul \\u0000 inside"),
        ),
        rec(7, &z, vcon(&z, "0000-01-01T00:00:00Z", "year zero")),
        rec(8, &b, vcon(&b, "2026-11-29T10:00:00Z", "b1")),
        // A later good version of a, and a later *bad* version of b: b1 must stay.
        rec(9, &a, vcon(&a, "2026-11-29T10:00:00Z", "a2")),
        rec(10, &b, vcon(&b, "2026-11-29T10:00:00Z", "b2 \\u0000")),
    ];
    let out = sink.deliver(&batch).await.unwrap();
    let rejected = |i: usize, what: &str| {
        assert!(
            matches!(&out[i], Outcome::Rejected(r) if r.contains(what)),
            "record {i}: {:?} should be rejected with `{what}`",
            out[i]
        )
    };
    assert_eq!(out[0], Outcome::Delivered);
    rejected(1, "not an RFC 4122 uuid");
    rejected(2, "not RFC 3339");
    rejected(3, "not a vCon JSON object");
    rejected(4, "not a vCon JSON object");
    rejected(5, "SQLSTATE 22");
    rejected(6, "SQLSTATE 22");
    assert_eq!(out[7], Outcome::Delivered);
    assert_eq!(out[8], Outcome::Delivered);
    rejected(9, "SQLSTATE 22");
    assert_eq!(out.len(), batch.len());

    let c = db().await;
    assert_eq!(
        stored_uuids(URL, &t).await.unwrap(),
        vec![a.clone(), b.clone()]
    );
    assert_eq!(stored_json(&c, &t, &a).await["subject"], "a2");
    assert_eq!(stored_json(&c, &t, &b).await["subject"], "b1");
    // The connection survived the data errors: a clean batch still lands.
    let out = sink
        .deliver(&[rec(11, &y, vcon(&y, "2026-11-29T10:00:00Z", "y"))])
        .await
        .unwrap();
    assert_eq!(out, vec![Outcome::Delivered]);
    assert_eq!(count(&c, &t).await, 3);
    drop_tables(&[&t]).await;
}

#[tokio::test]
async fn reconnects_after_the_server_drops_the_connection_and_recreates_a_dropped_table() {
    let t = unique("reconn");
    let app = unique("app");
    let mut built = build(&format!("table={t}&application_name={app}"));
    let sink = built.sink.as_mut().unwrap();
    let u = uuid(40);
    let r = rec(1, &u, vcon(&u, "2026-11-29T10:00:00Z", "x"));
    assert_eq!(
        sink.deliver(std::slice::from_ref(&r)).await.unwrap(),
        vec![Outcome::Delivered]
    );
    let c = db().await;
    let killed: i64 = c
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
            &[&app],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(killed, 1, "the sink keeps one idle connection");
    // The next attempt may see the dead connection (Err, as the core then retries); the one
    // after must reconnect and land.
    let mut ok = false;
    for _ in 0..2 {
        if sink.deliver(std::slice::from_ref(&r)).await.is_ok() {
            ok = true;
            break;
        }
    }
    assert!(ok, "no reconnect after the server closed the connection");

    // Someone drops the table: one transient error, then it is created again.
    c.batch_execute(&format!("DROP TABLE \"{t}\""))
        .await
        .unwrap();
    let first = sink.deliver(std::slice::from_ref(&r)).await;
    assert!(
        first.as_ref().is_err_and(|e| e.0.contains("42P01")),
        "{first:?}"
    );
    assert_eq!(
        sink.deliver(std::slice::from_ref(&r)).await.unwrap(),
        vec![Outcome::Delivered]
    );
    assert_eq!(count(&c, &t).await, 1);
    drop_tables(&[&t]).await;
}

#[tokio::test]
async fn into_a_table_the_conserver_created() {
    // The conserver's own DDL (timestamp without time zone): the sink writes into it.
    let t = unique("consrv");
    let c = db().await;
    c.batch_execute(&format!(
        "SET TIME ZONE 'America/New_York'; CREATE TABLE \"{t}\" (id uuid PRIMARY KEY, vcon text NOT NULL, \
         uuid uuid NOT NULL, created_at timestamp NOT NULL, updated_at timestamp NULL, \
         subject text NULL, vcon_json jsonb NULL)"
    ))
    .await
    .unwrap();
    let mut built = build(&format!("table={t}"));
    let sink = built.sink.as_mut().unwrap();
    let u = uuid(50);
    let out = sink
        .deliver(&[rec(1, &u, vcon(&u, "2026-11-29T12:00:00+02:00", "x"))])
        .await
        .unwrap();
    assert_eq!(out, vec![Outcome::Delivered]);
    // Stored as UTC wall-clock time, whatever the server's default time zone.
    let s: String = c
        .query_one(
            &format!("SELECT created_at::text FROM \"{t}\" WHERE id = $1::text::uuid"),
            &[&u],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(s, "2026-11-29 10:00:00");
    drop_tables(&[&t]).await;
}

#[tokio::test]
async fn tls_require_encrypts_and_verify_full_checks_the_certificate() {
    let c = db().await;
    let ssl: String = c.query_one("SHOW ssl", &[]).await.unwrap().get(0);
    assert_eq!(
        ssl, "on",
        "this test needs the local PostgreSQL with ssl = on (Debian's default, snakeoil cert)"
    );
    let t = unique("tls");
    let app = unique("tlsapp");
    let mut built = build(&format!("table={t}&sslmode=require&application_name={app}"));
    let sink = built.sink.as_mut().unwrap();
    let u = uuid(60);
    let r = rec(1, &u, vcon(&u, "2026-11-29T10:00:00Z", "x"));
    assert_eq!(
        sink.deliver(std::slice::from_ref(&r)).await.unwrap(),
        vec![Outcome::Delivered]
    );
    let encrypted: bool = c
        .query_one(
            "SELECT bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.application_name = $1",
            &[&app],
        )
        .await
        .unwrap()
        .get(0);
    assert!(encrypted, "the sink's connection is not TLS");

    // verify-full against the system CAs: the self-signed server certificate is refused.
    let mut built = build(&format!("table={t}&sslmode=verify-full"));
    let sink = built.sink.as_mut().unwrap();
    let err = sink.deliver(std::slice::from_ref(&r)).await.unwrap_err();
    assert!(err.0.contains("connecting"), "{err}");
    drop_tables(&[&t]).await;
}

#[test]
fn bad_options_are_config_errors() {
    let err =
        |q: &str| match vcontap_sinks::spec::build(SinkSpec::parse(&format!("{URL}?{q}")).unwrap())
        {
            Ok(_) => panic!("`{q}` should be refused"),
            Err(e) => e.to_string(),
        };
    for bad in [
        "table=vcons;drop",
        "table=Vcons",
        "table=1abc",
        "table=a.b.c",
        "table=\"x\"",
        "table=",
        "events_table=bad-name",
    ] {
        let e = err(bad);
        assert!(
            e.contains("not a plain SQL identifier") || e.contains("at most one"),
            "{bad}: {e}"
        );
    }
    assert!(err("table=x&events_table=x").contains("must differ"));
    assert!(err("pool=17").contains("pool"));
    assert!(err("pool=0").contains("pool"));
    assert!(err("sslmode=allow").contains("sslmode"));
    assert!(err("sslrootcert=/etc/hostname").contains("verify-ca"));
    assert!(err("sslmode=verify-ca&sslrootcert=/nonexistent.pem").contains("/nonexistent.pem"));
    assert!(err("tabel=vcons").contains("unknown option"));
    // Scheme variants and schema-qualified names are fine.
    for ok in [
        "postgresql://u:secret@db.example:6543/vcons?table=vcontap.vcons&events_table=vcontap.events",
        "postgres://postgres@127.0.0.1/test?sslmode=verify-full",
        "postgres://postgres@127.0.0.1/test?sslmode=prefer&pool=16&batch=1000&password=env:HOME",
    ] {
        let b = vcontap_sinks::spec::build(SinkSpec::parse(ok).unwrap()).unwrap_or_else(|e| panic!("{ok}: {e}"));
        assert!(b.sink.is_some());
    }
    let b =
        vcontap_sinks::spec::build(SinkSpec::parse(&format!("{URL}?batch=7")).unwrap()).unwrap();
    assert_eq!(b.sink.unwrap().max_batch(), 7);
}

/// `[PG_BENCH_BATCH=n] [PG_BENCH_POOL=n] cargo test -p vcontap-sinks --test postgres -- --ignored --nocapture throughput`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "throughput measurement"]
async fn throughput_2000_records_of_8kb() {
    let t = unique("bench");
    // PG_BENCH_BATCH / PG_BENCH_POOL override the sink's defaults (64 records, 2 connections).
    let batch = std::env::var("PG_BENCH_BATCH").unwrap_or_else(|_| "64".into());
    let pool = std::env::var("PG_BENCH_POOL").unwrap_or_else(|_| "2".into());
    let mut built = build(&format!("table={t}&batch={batch}&pool={pool}"));
    let sink = built.sink.as_mut().unwrap();
    let filler = "x".repeat(7900);
    let records: Vec<Arc<Record>> = (0..2000u32)
        .map(|i| {
            let u = uuid(100_000 + i);
            let json = format!(
                r#"{{"vcon":"0.4.0","uuid":"{u}","created_at":"2026-11-29T10:00:00.000Z","parties":[{{"tel":"+15551001000"}},{{"tel":"+15551001001"}}],"dialog":[{{"type":"recording","start":"2026-11-29T10:00:00.000Z","parties":[0,1],"duration":30.0}}],"attachments":[{{"purpose":"sip-message-trace","encoding":"none","body":"{filler}"}}]}}"#
            );
            rec(u64::from(i), &u, json)
        })
        .collect();
    let bytes: usize = records.iter().map(|r| r.json.len()).sum();
    let n = sink.max_batch();
    // Warm up the connection and schema outside the timing.
    sink.deliver(&records[..1]).await.unwrap();
    let start = Instant::now();
    for chunk in records.chunks(n) {
        let out = sink.deliver(chunk).await.unwrap();
        assert!(out.iter().all(|o| *o == Outcome::Delivered));
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "postgres sink: {} records ({} KB each, batches of {n}, pool {pool}) in {secs:.3} s = {:.0} vCons/s, {:.1} MB/s",
        records.len(),
        bytes / records.len() / 1024,
        records.len() as f64 / secs,
        bytes as f64 / secs / 1e6
    );
    assert_eq!(stored_uuids(URL, &t).await.unwrap().len(), 2000);
    drop_tables(&[&t]).await;
}
