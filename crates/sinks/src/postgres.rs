//! The `postgres` sink: finished vCons upserted into the conserver's `vcons` table
//! (`storage.postgres` layout, so tools reading the conserver's table read ours), and
//! optionally every real-time event into an append-only events table.
//!
//! ```text
//! --sink postgres://postgres@127.0.0.1/test
//! --sink 'postgresql://vcontap@db.example:5432/vcons?table=vcons&events_table=vcon_events&pool=4&sslmode=verify-full'
//! ```
//!
//! The URL (query removed) is parsed by `tokio_postgres::Config`; the query parameters are
//! vcontap's options, not libpq's: `table` (default `vcons`), `events_table` (none),
//! `pool` (connections, 1–16, default 2), `batch` (records per statement, 1–1000, default
//! 64), `password` (`env:VAR` keeps it out of the URL), `sslmode`
//! (`disable`|`prefer`|`require`|`verify-ca`|`verify-full`, default `disable`; libpq's
//! meanings), `sslrootcert` (PEM file of trusted CAs for the `verify-*` modes, else the
//! system store), `connect_timeout` (s, default 10), `timeout` (s per delivery, default 60),
//! `application_name` (default `vcontap`).
//!
//! Schema (created if missing on first connection, columns named as the conserver's):
//! `id uuid PRIMARY KEY, vcon text NOT NULL, uuid uuid NOT NULL, created_at timestamptz NOT
//! NULL, updated_at timestamptz NULL, subject text NULL, vcon_json jsonb NULL`. The
//! conserver declares `timestamp` (without time zone) and hands Postgres the vCon's
//! `created_at` string, whose offset Postgres then silently drops: a row's instant depends
//! on the writer's offset. `timestamptz` stores the instant; it reads back as the same wall
//! clock in a UTC session, compares correctly with `now()`, and a table the conserver
//! created first still works (each session runs in UTC, so the assignment cast to
//! `timestamp` stores UTC wall-clock time, as the conserver does for `Z` timestamps).
//! `updated_at` is the vCon's `updated_at`, else the time of the write (the conserver always
//! writes its save time).
//!
//! Writes: one `INSERT … VALUES (…),(…) ON CONFLICT (id) DO UPDATE` per batch, sent with
//! `query_typed` (parse, bind and execute in **one round trip**, no prepare). `ON CONFLICT`
//! cannot touch a row twice in one statement, so a batch is first reduced to the last
//! record of each uuid (spool order: the later one is the newer). A batch of ≥ 32 distinct
//! uuids is split over the pool's free connections (≥ 16 rows each, one statement each, in
//! parallel; every uuid is in exactly one chunk, so chunks cannot conflict). The vCon goes as text and
//! is cast to `jsonb` by Postgres, so the stored document is the record's bytes parsed once
//! (never re-serialized here). What Rust can check (uuid syntax, UTF-8, JSON object,
//! RFC 3339 `created_at`) is `Rejected` before any I/O; when Postgres refuses the batch for
//! its *data* (SQLSTATE class 22 data exception, 23 integrity, 54 limits — e.g. `\u0000`,
//! which `jsonb` cannot hold), the rows are replayed one by one, in spool order without the
//! reduction, to reject exactly the bad ones while the others land. Anything else
//! (connection, authentication, missing table, shutdown) is a transient `SinkError` and the
//! connection is discarded.
//!
//! Events (`events_table=NAME`): `(uuid uuid, seq bigint, kind text, at timestamptz, vcon
//! jsonb)`, primary key `(uuid, seq)`, `ON CONFLICT DO NOTHING`, one multi-row statement
//! per publish; rows Postgres refuses for their data are skipped with a warning.
//!
//! Why these crates: `tokio-postgres` is the pure-Rust async client (binary protocol,
//! pipelining, `query_typed`). The pool is hand-written (≈50 lines: a semaphore for the
//! `pool` bound and a stack of idle clients, closed clients skipped, failed ones dropped)
//! rather than `deadpool-postgres`: the sink and its event publisher are the only users,
//! a delivery checks out connections for one statement each (extra ones only if free right
//! now, so events never wait behind a big batch), and our reconnect rule ("drop on any
//! error, connect lazily") is all the recycling needed — deadpool's runtime, config and
//! recycling layers would add crates without adding behaviour. `futures-util` (already
//! under `tokio-postgres`) joins the parallel chunks. TLS is `rustls` with the
//! `ring` provider (no aws-lc) through `tokio-postgres-rustls` (which also does SCRAM
//! channel binding); `rustls-native-certs` reads the system CA store for `verify-*`.
//! Builders do no network I/O: the first `deliver`/`publish` connects.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use futures_util::future::join_all;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::config::SslMode;
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use tokio_postgres::{Client, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;
use vcontap_engine::VconEvent;

use crate::record::{parse_rfc3339_ms, Record};
use crate::sink::{BoxFuture, Built, EventSink, Outcome, Sink, SinkError};
use crate::spec::{ConfigError, SinkSpec};

/// A batch is split over several connections only in chunks of at least this many rows
/// (below that, a statement's fixed cost outweighs the parallelism).
const MIN_CHUNK: usize = 16;

/// The options this sink knows.
const KNOWN: &[&str] = &[
    "table",
    "events_table",
    "pool",
    "batch",
    "password",
    "sslmode",
    "sslrootcert",
    "connect_timeout",
    "timeout",
    "application_name",
];

/// Builds a PostgreSQL sink (and, with `events_table`, an event publisher sharing its pool)
/// from `postgres://user[:pw]@host[:port]/db?options`. No network I/O.
pub fn build(mut spec: SinkSpec) -> Result<Built, ConfigError> {
    let sink = spec.name.clone();
    let invalid = |why: String| ConfigError::Invalid {
        sink: sink.clone(),
        why,
    };
    let opt = |option: &str, why: String| ConfigError::Option {
        sink: sink.clone(),
        option: option.to_string(),
        why,
    };
    let o = &mut spec.options;
    let table = o.take("table")?.unwrap_or_else(|| "vcons".to_string());
    let table = quote_ident(&table).map_err(|why| opt("table", why))?;
    let events_table = match o.take("events_table")? {
        Some(t) => Some(quote_ident(&t).map_err(|why| opt("events_table", why))?),
        None => None,
    };
    if events_table.as_deref() == Some(table.as_str()) {
        return Err(opt("events_table", "must differ from `table`".to_string()));
    }
    let pool_size = o.take_u64("pool", 2, 1..=16)?;
    let batch = o.take_u64("batch", 64, 1..=1000)?;
    let password = o.take("password")?;
    let sslmode = o.take("sslmode")?.unwrap_or_else(|| "disable".to_string());
    let sslrootcert = o.take("sslrootcert")?;
    let connect_timeout = o.take_u64("connect_timeout", 10, 1..=300)?;
    let timeout = o.take_u64("timeout", 60, 1..=3600)?;
    let app = o
        .take("application_name")?
        .unwrap_or_else(|| "vcontap".to_string());
    spec.options.finish(KNOWN)?;

    let mut pg = tokio_postgres::Config::from_str(spec.url.as_str())
        .map_err(|e| invalid(format!("not a PostgreSQL URL: {e}")))?;
    if pg.get_hosts().is_empty() {
        return Err(invalid("the URL names no host".to_string()));
    }
    if let Some(pw) = password {
        pg.password(pw);
    }
    if app.len() > 63 || app.chars().any(|c| c.is_control()) {
        return Err(opt(
            "application_name",
            "at most 63 printable characters".to_string(),
        ));
    }
    pg.application_name(app);
    pg.connect_timeout(Duration::from_secs(connect_timeout));
    let tls = match sslmode.as_str() {
        "disable" => {
            if sslrootcert.is_some() {
                return Err(opt(
                    "sslrootcert",
                    "needs sslmode=verify-ca or verify-full".to_string(),
                ));
            }
            pg.ssl_mode(SslMode::Disable);
            None
        }
        "prefer" | "require" | "verify-ca" | "verify-full" => {
            pg.ssl_mode(if sslmode == "prefer" {
                SslMode::Prefer
            } else {
                SslMode::Require
            });
            let cfg = tls::client_config(&sslmode, sslrootcert.as_deref())
                .map_err(|why| opt("sslrootcert", why))?;
            Some(MakeRustlsConnect::new(cfg))
        }
        other => {
            return Err(opt(
                "sslmode",
                format!("`{other}` is not one of disable, prefer, require, verify-ca, verify-full"),
            ));
        }
    };

    let pool = Arc::new(Pool {
        name: sink,
        pg,
        tls,
        schema_sql: schema_sql(&table, events_table.as_deref()),
        schema_ready: AtomicBool::new(false),
        idle: Mutex::new(Vec::new()),
        permits: Arc::new(Semaphore::new(pool_size as usize)),
    });
    let timeout = Duration::from_secs(timeout);
    let events = events_table.map(|t| {
        Box::new(PgEvents {
            pool: pool.clone(),
            table: t,
            timeout,
        }) as Box<dyn EventSink>
    });
    Ok(Built {
        sink: Some(Box::new(PgSink {
            pool,
            pool_size: pool_size as usize,
            table,
            batch: batch as usize,
            timeout,
        })),
        events,
    })
}

/// Checks a table name (`name` or `schema.name`: lowercase letters, digits and `_`, not
/// starting with a digit, at most 63 bytes each) and returns it double-quoted for SQL.
fn quote_ident(s: &str) -> Result<String, String> {
    let parts: Vec<&str> = s.split('.').collect();
    if parts.len() > 2 {
        return Err(format!("`{s}`: at most one `.` (schema.table)"));
    }
    let mut out = Vec::with_capacity(parts.len());
    for p in parts {
        let ok = !p.is_empty()
            && p.len() <= 63
            && p.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && p.bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_');
        if !ok {
            return Err(format!(
                "`{}` is not a plain SQL identifier (lowercase letters, digits, `_`; \
                 not starting with a digit; at most 63 characters)",
                s.escape_debug()
            ));
        }
        out.push(format!("\"{p}\""));
    }
    Ok(out.join("."))
}

/// The statements run once per pool (again after a "table missing" error).
fn schema_sql(table: &str, events: Option<&str>) -> String {
    let mut s = format!(
        "CREATE TABLE IF NOT EXISTS {table} (\
         id uuid PRIMARY KEY, vcon text NOT NULL, uuid uuid NOT NULL, \
         created_at timestamptz NOT NULL, updated_at timestamptz NULL, \
         subject text NULL, vcon_json jsonb NULL);"
    );
    if let Some(e) = events {
        s.push_str(&format!(
            "CREATE TABLE IF NOT EXISTS {e} (\
             uuid uuid NOT NULL, seq bigint NOT NULL, kind text NOT NULL, \
             at timestamptz NOT NULL, vcon jsonb NOT NULL, PRIMARY KEY (uuid, seq));"
        ));
    }
    s
}

/// A small connection pool shared by the sink and its event publisher.
struct Pool {
    /// Sink name (no credentials), for logs.
    name: String,
    pg: tokio_postgres::Config,
    tls: Option<MakeRustlsConnect>,
    schema_sql: String,
    schema_ready: AtomicBool,
    idle: Mutex<Vec<Client>>,
    permits: Arc<Semaphore>,
}

/// A checked-out connection: returned with [`Pool::put`] after success, dropped (closed)
/// otherwise.
struct Conn {
    client: Client,
    _permit: OwnedSemaphorePermit,
}

impl Pool {
    /// A connection (waits while all `pool` connections are in use).
    async fn get(&self) -> Result<Conn, SinkError> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| SinkError::new("postgres pool closed"))?;
        self.with_permit(permit).await
    }

    /// Another connection if one is free now (never waits for the event publisher).
    async fn try_get(&self) -> Option<Result<Conn, SinkError>> {
        let permit = self.permits.clone().try_acquire_owned().ok()?;
        Some(self.with_permit(permit).await)
    }

    async fn with_permit(&self, permit: OwnedSemaphorePermit) -> Result<Conn, SinkError> {
        let idle = loop {
            let c = self
                .idle
                .lock()
                .map_err(|_| SinkError::new("postgres pool poisoned"))?
                .pop();
            match c {
                Some(c) if c.is_closed() => continue,
                other => break other,
            }
        };
        let client = match idle {
            Some(c) => c,
            None => self.connect().await?,
        };
        if !self.schema_ready.load(Ordering::Acquire) {
            client
                .batch_execute(&self.schema_sql)
                .await
                .map_err(|e| SinkError::new(format!("creating tables: {}", describe(&e))))?;
            self.schema_ready.store(true, Ordering::Release);
        }
        Ok(Conn {
            client,
            _permit: permit,
        })
    }

    async fn connect(&self) -> Result<Client, SinkError> {
        let fail = |e: tokio_postgres::Error| {
            SinkError::new(format!("connecting to {}: {}", self.name, describe(&e)))
        };
        let client = match &self.tls {
            None => {
                let (client, conn) = self.pg.connect(NoTls).await.map_err(fail)?;
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!("postgres connection ended: {e}");
                    }
                });
                client
            }
            Some(tls) => {
                let (client, conn) = self.pg.connect(tls.clone()).await.map_err(fail)?;
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!("postgres connection ended: {e}");
                    }
                });
                client
            }
        };
        client
            .batch_execute("SET TIME ZONE 'UTC'")
            .await
            .map_err(fail)?;
        tracing::debug!(sink = %self.name, "postgres connected");
        Ok(client)
    }

    fn put(&self, conn: Conn) {
        if conn.client.is_closed() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(conn.client);
        }
    }

    /// Turns a statement error into a transient error (and notes a vanished table).
    fn transient(&self, what: &str, e: &tokio_postgres::Error) -> SinkError {
        if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) {
            self.schema_ready.store(false, Ordering::Release);
        }
        SinkError::new(format!("{what}: {}", describe(e)))
    }
}

/// An error's SQLSTATE and message (the server's message for database errors).
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => match e.source() {
            Some(src) => format!("{e}: {src}"),
            None => e.to_string(),
        },
    }
}

/// True when Postgres refused a statement because of the values in it (SQLSTATE class 22
/// data exception, 23 integrity constraint, 54 program limit): retrying cannot help.
fn is_data_error(e: &tokio_postgres::Error) -> bool {
    e.code().is_some_and(|c| {
        let c = c.code();
        c.starts_with("22") || c.starts_with("23") || c.starts_with("54")
    })
}

/// One vcons row, borrowed from its record.
struct Row<'a> {
    /// Index in the batch.
    at: usize,
    id: &'a str,
    vcon: String,
    created_at: String,
    updated_at: Option<String>,
    subject: Option<String>,
    json: &'a str,
}

/// Checks what can be checked without the database; the reason is a permanent rejection.
fn row(at: usize, rec: &Record) -> Result<Row<'_>, String> {
    if !is_uuid(&rec.uuid) {
        return Err(format!(
            "uuid `{}` is not an RFC 4122 uuid",
            shown(&rec.uuid)
        ));
    }
    let json = std::str::from_utf8(&rec.json).map_err(|e| format!("vCon is not UTF-8: {e}"))?;
    let head = rec
        .head()
        .map_err(|e| format!("not a vCon JSON object: {e}"))?;
    if parse_rfc3339_ms(&head.created_at).is_none() {
        return Err(format!(
            "created_at `{}` is not RFC 3339",
            shown(&head.created_at)
        ));
    }
    // A malformed updated_at is not worth losing the vCon for: the write time is used.
    let updated_at = head.updated_at.filter(|u| parse_rfc3339_ms(u).is_some());
    Ok(Row {
        at,
        id: &rec.uuid,
        vcon: head.vcon,
        created_at: head.created_at,
        updated_at,
        subject: head.subject,
        json,
    })
}

/// A hostile value in a rejection reason: escaped and cut to 64 characters.
fn shown(s: &str) -> String {
    let cut: String = s.chars().take(64).collect();
    let more = if cut.len() < s.len() { "…" } else { "" };
    format!("{}{more}", cut.escape_debug())
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// `INSERT … VALUES` for `n` rows with upsert on `id`.
fn upsert_sql(table: &str, n: usize) -> String {
    let mut s = String::with_capacity(220 + n * 110);
    s.push_str("INSERT INTO ");
    s.push_str(table);
    s.push_str(" (id, vcon, uuid, created_at, updated_at, subject, vcon_json) VALUES ");
    for i in 0..n {
        let b = i * 6;
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!(
            "(${a}::uuid, ${b2}, ${a}::uuid, ${c}::timestamptz, \
             COALESCE(${d}::timestamptz, now()), ${e}, ${f}::jsonb)",
            a = b + 1,
            b2 = b + 2,
            c = b + 3,
            d = b + 4,
            e = b + 5,
            f = b + 6
        ));
    }
    s.push_str(
        " ON CONFLICT (id) DO UPDATE SET vcon = EXCLUDED.vcon, uuid = EXCLUDED.uuid, \
         created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at, \
         subject = EXCLUDED.subject, vcon_json = EXCLUDED.vcon_json",
    );
    s
}

async fn upsert(
    client: &Client,
    table: &str,
    rows: &[&Row<'_>],
) -> Result<u64, tokio_postgres::Error> {
    let mut params: Vec<(&(dyn ToSql + Sync), Type)> = Vec::with_capacity(rows.len() * 6);
    for r in rows {
        params.push((&r.id, Type::TEXT));
        params.push((&r.vcon, Type::TEXT));
        params.push((&r.created_at, Type::TEXT));
        params.push((&r.updated_at, Type::TEXT));
        params.push((&r.subject, Type::TEXT));
        params.push((&r.json, Type::TEXT));
    }
    client
        .execute_typed(&upsert_sql(table, rows.len()), &params)
        .await
}

/// Upserts finished vCons into the `vcons` table.
pub struct PgSink {
    pool: Arc<Pool>,
    pool_size: usize,
    table: String,
    batch: usize,
    timeout: Duration,
}

impl PgSink {
    async fn write(&self, batch: &[Arc<Record>]) -> Result<Vec<Outcome>, SinkError> {
        let mut outcomes = vec![Outcome::Delivered; batch.len()];
        let mut rows = Vec::with_capacity(batch.len());
        for ((i, rec), out) in batch.iter().enumerate().zip(outcomes.iter_mut()) {
            match row(i, rec) {
                Ok(r) => rows.push(r),
                Err(why) => *out = Outcome::Rejected(why),
            }
        }
        if rows.is_empty() {
            return Ok(outcomes);
        }
        // The last record of each uuid (ON CONFLICT cannot update a row twice).
        let mut last: HashMap<&str, usize> = HashMap::with_capacity(rows.len());
        for (k, r) in rows.iter().enumerate() {
            last.insert(r.id, k);
        }
        let unique: Vec<&Row<'_>> = rows
            .iter()
            .enumerate()
            .filter(|(k, r)| last.get(r.id) == Some(k))
            .map(|(_, r)| r)
            .collect();
        // Large batches are split over the free pooled connections (one statement each,
        // in parallel); every uuid is in one chunk only, so chunks are independent.
        let wanted = self.pool_size.min(unique.len().div_ceil(MIN_CHUNK)).max(1);
        let mut conns = vec![self.pool.get().await?];
        while conns.len() < wanted {
            match self.pool.try_get().await {
                Some(Ok(c)) => conns.push(c),
                Some(Err(e)) => {
                    tracing::debug!(sink = %self.pool.name, "extra connection: {e}");
                    break;
                }
                None => break,
            }
        }
        let size = unique.len().div_ceil(conns.len()).max(1);
        let results = join_all(
            conns
                .iter()
                .zip(unique.chunks(size))
                .map(|(c, rows)| upsert(&c.client, &self.table, rows)),
        )
        .await;
        let mut data_error = None;
        for r in results {
            match r {
                Ok(_) => {}
                Err(e) if is_data_error(&e) => data_error = Some(e),
                // Reconnect after errors: every connection of this attempt is dropped.
                Err(e) => return Err(self.pool.transient("upserting vCons", &e)),
            }
        }
        let mut conns = conns.into_iter();
        let Some(conn) = conns.next() else {
            return Err(SinkError::new("postgres pool gave no connection"));
        };
        conns.for_each(|c| self.pool.put(c));
        match data_error {
            None => {
                self.pool.put(conn);
                return Ok(outcomes);
            }
            Some(e) => tracing::debug!(
                sink = %self.pool.name,
                "batch refused for its data ({}); writing rows one by one",
                describe(&e)
            ),
        }
        // Find the culprits: every row alone, in spool order (a later version of a uuid
        // still replaces an earlier one; a refused later version leaves the earlier one).
        for r in &rows {
            match upsert(&conn.client, &self.table, &[r]).await {
                Ok(_) => {}
                Err(e) if is_data_error(&e) => {
                    if let Some(out) = outcomes.get_mut(r.at) {
                        *out = Outcome::Rejected(format!("postgres refused it: {}", describe(&e)));
                    }
                }
                Err(e) => return Err(self.pool.transient("upserting vCons", &e)),
            }
        }
        self.pool.put(conn);
        Ok(outcomes)
    }
}

impl Sink for PgSink {
    fn max_batch(&self) -> usize {
        self.batch
    }

    fn deliver<'a>(
        &'a mut self,
        batch: &'a [Arc<Record>],
    ) -> BoxFuture<'a, Result<Vec<Outcome>, SinkError>> {
        Box::pin(async move {
            match tokio::time::timeout(self.timeout, self.write(batch)).await {
                Ok(r) => r,
                Err(_) => Err(SinkError::new(format!(
                    "postgres delivery took longer than {} s",
                    self.timeout.as_secs()
                ))),
            }
        })
    }

    fn close(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Ok(mut idle) = self.pool.idle.lock() {
                idle.clear();
            }
        })
    }
}

/// A capture time as Postgres' binary `timestamptz` (microseconds since 2000-01-01 UTC).
#[derive(Debug)]
struct PgTime(i64);

/// 2000-01-01T00:00:00Z in Unix microseconds.
const PG_EPOCH_UNIX_US: i64 = 946_684_800_000_000;

impl PgTime {
    fn from_unix_nanos(ns: i64) -> Self {
        PgTime(ns.div_euclid(1000).saturating_sub(PG_EPOCH_UNIX_US))
    }
}

impl ToSql for PgTime {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        out.put_i64(self.0);
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::TIMESTAMPTZ
    }

    to_sql_checked!();
}

/// One events row.
struct EventRow<'a> {
    uuid: &'a str,
    seq: i64,
    kind: &'a str,
    at: PgTime,
    vcon: &'a str,
}

fn events_sql(table: &str, n: usize) -> String {
    let mut s = format!("INSERT INTO {table} (uuid, seq, kind, at, vcon) VALUES ");
    for i in 0..n {
        let b = i * 5;
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!(
            "(${}::uuid, ${}, ${}, ${}, ${}::jsonb)",
            b + 1,
            b + 2,
            b + 3,
            b + 4,
            b + 5
        ));
    }
    s.push_str(" ON CONFLICT (uuid, seq) DO NOTHING");
    s
}

async fn insert_events(
    client: &Client,
    table: &str,
    rows: &[EventRow<'_>],
) -> Result<u64, tokio_postgres::Error> {
    let mut params: Vec<(&(dyn ToSql + Sync), Type)> = Vec::with_capacity(rows.len() * 5);
    for r in rows {
        params.push((&r.uuid, Type::TEXT));
        params.push((&r.seq, Type::INT8));
        params.push((&r.kind, Type::TEXT));
        params.push((&r.at, Type::TIMESTAMPTZ));
        params.push((&r.vcon, Type::TEXT));
    }
    client
        .execute_typed(&events_sql(table, rows.len()), &params)
        .await
}

/// Appends real-time events to the events table (idempotent by `(uuid, seq)`).
pub struct PgEvents {
    pool: Arc<Pool>,
    table: String,
    timeout: Duration,
}

impl PgEvents {
    async fn write(&self, batch: &[Arc<VconEvent>]) -> Result<(), SinkError> {
        let mut rows = Vec::with_capacity(batch.len());
        for ev in batch {
            let seq = i64::try_from(ev.seq).ok();
            match seq {
                Some(seq) if is_uuid(&ev.uuid) => rows.push(EventRow {
                    uuid: &ev.uuid,
                    seq,
                    kind: ev.kind.as_str(),
                    at: PgTime::from_unix_nanos(ev.at.nanos()),
                    vcon: &ev.vcon_json,
                }),
                _ => tracing::warn!(sink = %self.pool.name, "event skipped: bad uuid or seq"),
            }
        }
        if rows.is_empty() {
            return Ok(());
        }
        let conn = self.pool.get().await?;
        match insert_events(&conn.client, &self.table, &rows).await {
            Ok(_) => {
                self.pool.put(conn);
                return Ok(());
            }
            Err(e) if is_data_error(&e) => {}
            Err(e) => return Err(self.pool.transient("inserting events", &e)),
        }
        for r in &rows {
            match insert_events(&conn.client, &self.table, std::slice::from_ref(r)).await {
                Ok(_) => {}
                Err(e) if is_data_error(&e) => tracing::warn!(
                    sink = %self.pool.name,
                    seq = r.seq,
                    "event refused by postgres: {}",
                    describe(&e)
                ),
                Err(e) => return Err(self.pool.transient("inserting events", &e)),
            }
        }
        self.pool.put(conn);
        Ok(())
    }
}

impl EventSink for PgEvents {
    fn publish<'a>(
        &'a mut self,
        batch: &'a [Arc<VconEvent>],
    ) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            match tokio::time::timeout(self.timeout, self.write(batch)).await {
                Ok(r) => r,
                Err(_) => Err(SinkError::new(format!(
                    "postgres event insert took longer than {} s",
                    self.timeout.as_secs()
                ))),
            }
        })
    }
}

/// The store's view, for end-to-end tests and operators: every `id` in `table` (each at
/// most once: it is the primary key), sorted. `url` is a plain PostgreSQL URL without
/// TLS (`postgres://postgres@127.0.0.1/test`; a query string is ignored).
pub async fn stored_uuids(url: &str, table: &str) -> Result<Vec<String>, SinkError> {
    let table = quote_ident(table).map_err(SinkError::new)?;
    let url = url.split('?').next().unwrap_or(url);
    let cfg = tokio_postgres::Config::from_str(url)
        .map_err(|e| SinkError::new(format!("not a PostgreSQL URL: {e}")))?;
    let (client, conn) = cfg
        .connect(NoTls)
        .await
        .map_err(|e| SinkError::new(format!("connecting: {}", describe(&e))))?;
    let task = tokio::spawn(conn);
    let rows = client
        .query(&format!("SELECT id::text FROM {table} ORDER BY id"), &[])
        .await
        .map_err(|e| SinkError::new(describe(&e)))?;
    drop(client);
    let _ = task.await;
    rows.iter()
        .map(|r| {
            r.try_get::<_, String>(0)
                .map_err(|e| SinkError::new(e.to_string()))
        })
        .collect()
}

/// rustls client configurations for the `sslmode` values (ring provider).
mod tls {
    use std::sync::Arc;

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::client::WebPkiServerVerifier;
    use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{
        CertificateError, ClientConfig, DigitallySignedStruct, Error, RootCertStore,
        SignatureScheme,
    };

    /// A client configuration for `mode` (`prefer`/`require`: encrypted, certificate not
    /// checked, as libpq; `verify-ca`: chain checked; `verify-full`: chain and host name).
    pub(super) fn client_config(
        mode: &str,
        rootcert: Option<&str>,
    ) -> Result<ClientConfig, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup: {e}"))?;
        let verify = matches!(mode, "verify-ca" | "verify-full");
        if rootcert.is_some() && !verify {
            return Err("needs sslmode=verify-ca or verify-full".to_string());
        }
        if !verify {
            let v = NoCheck(provider);
            return Ok(builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(v))
                .with_no_client_auth());
        }
        let mut roots = RootCertStore::empty();
        match rootcert {
            Some(path) => {
                let certs = CertificateDer::pem_file_iter(path)
                    .map_err(|e| format!("reading {path}: {e}"))?;
                for c in certs {
                    let c = c.map_err(|e| format!("reading {path}: {e}"))?;
                    roots
                        .add(c)
                        .map_err(|e| format!("{path}: unusable CA certificate: {e}"))?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                let _ = roots.add_parsable_certificates(found.certs);
            }
        }
        if roots.is_empty() {
            return Err("no trusted CA certificates (give sslrootcert=FILE.pem)".to_string());
        }
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| format!("TLS setup: {e}"))?;
        let cfg = if mode == "verify-ca" {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ChainOnly(webpki)))
                .with_no_client_auth()
        } else {
            builder.with_webpki_verifier(webpki).with_no_client_auth()
        };
        Ok(cfg)
    }

    /// `require`: any certificate (libpq's meaning), but the handshake signatures are
    /// still checked so the session keys belong to whoever holds that certificate.
    #[derive(Debug)]
    struct NoCheck(Arc<CryptoProvider>);

    impl ServerCertVerifier for NoCheck {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }

    /// `verify-ca`: the chain must lead to a trusted CA; the host name is not compared.
    #[derive(Debug)]
    struct ChainOnly(Arc<WebPkiServerVerifier>);

    impl ServerCertVerifier for ChainOnly {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            intermediates: &[CertificateDer<'_>],
            server_name: &ServerName<'_>,
            ocsp: &[u8],
            now: UnixTime,
        ) -> Result<ServerCertVerified, Error> {
            match self
                .0
                .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
            {
                Err(Error::InvalidCertificate(
                    CertificateError::NotValidForName
                    | CertificateError::NotValidForNameContext { .. },
                )) => Ok(ServerCertVerified::assertion()),
                other => other,
            }
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            self.0.verify_tls12_signature(message, cert, dss)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            self.0.verify_tls13_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.supported_verify_schemes()
        }
    }
}
