//! The `nats` sink: finished vCons (and, by default, every real-time event) published to a
//! NATS JetStream stream, so several vcontap agents can feed one processing cluster whose
//! workers consume the stream at their own pace.
//!
//! ```text
//! --sink nats://127.0.0.1:4222
//! --sink 'nats://user:pw@nats.example:4222?stream=VCON&subject=vcon.finished&events=false'
//! --sink 'nats+tls://nats.example:4222?token=env:NATS_TOKEN&tls_ca=/etc/vcontap/nats-ca.pem'
//! ```
//!
//! - **Finished vCons** go to `subject` (default `vcon.finished`), one message each: payload =
//!   the spooled bytes ([`Record::json`], never re-serialized), headers `Nats-Msg-Id:
//!   <uuid>:<crc32 of the bytes>` and `Vcon-Uuid: <uuid>`. A batch is published whole, then
//!   every PubAck is awaited before `deliver` returns `Ok`, so the spool releases a record
//!   only once the stream has stored it. A missing ack (timeout) is an `Err`: the batch is
//!   retried, and JetStream's duplicate window (default 2 minutes) collapses the re-sent
//!   messages because they carry the same `Nats-Msg-Id`. The id includes a digest of the
//!   bytes so that a later *update* of the same uuid is stored rather than swallowed as a
//!   duplicate; identical bytes always give the identical id.
//! - **Events** (`events=true`, the default) go to `<events_subject_prefix>.<uuid>` (default
//!   prefix `vcon.events`) with `Nats-Msg-Id: <uuid>:<seq>`, `Vcon-Uuid`, `Vcon-Seq` and
//!   `Vcon-Event-Kind`; payload = [`VconEvent::to_json_line`]. Acks are awaited per batch,
//!   so a batch is stored in order before the next is sent.
//! - **Stream**: `stream` (default `VCON`), created on first connect if missing
//!   (`create_stream=true`, file storage, subjects `subject` and `<prefix>.>`, duplicate
//!   window `duplicate_window_s`). If it exists but its subjects do not cover ours, the sink
//!   fails with a clear error (it never edits a stream someone else may own).
//!
//! No network I/O in [`build`]: the client connects on the first delivery, with a connect
//! timeout so a refused or silent server is an `Err`, not a hang. After that async-nats
//! reconnects by itself; publishes made while it is away time out and are retried by the
//! delivery core.
//!
//! Crates: `async-nats` (the official pure-Rust client, JetStream API built in) with
//! `default-features = false` and only `jetstream` + `ring`, so rustls runs on *ring* and the
//! tree has no aws-lc; the TLS config is built here with the ring provider installed
//! explicitly, so another crate enabling aws-lc in rustls cannot make it ambiguous.
//! `rustls-native-certs` (already a dependency of async-nats) supplies the system roots.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, context::PublishErrorKind, ErrorCode};
use async_nats::{HeaderMap, ServerAddr};
use bytes::Bytes;
use tokio::sync::Mutex;
use vcontap_engine::VconEvent;

use crate::record::Record;
use crate::sink::{BoxFuture, Built, EventSink, Outcome, Sink, SinkError};
use crate::spec::{ConfigError, SinkSpec};

/// Options this sink knows (anything else is a start-up error).
const KNOWN: &[&str] = &[
    "subject",
    "events_subject_prefix",
    "events",
    "stream",
    "create_stream",
    "duplicate_window_s",
    "token",
    "tls_ca",
    "timeout_ms",
];

/// Header carrying the vCon uuid (consumers dedupe by it).
pub const HEADER_UUID: &str = "Vcon-Uuid";
/// Header carrying an event's per-call sequence number.
pub const HEADER_SEQ: &str = "Vcon-Seq";
/// Header carrying an event's kind (`created`, `updated`, `segment`, `finished`).
pub const HEADER_KIND: &str = "Vcon-Event-Kind";
/// JetStream's de-duplication header.
pub const HEADER_MSG_ID: &str = "Nats-Msg-Id";

/// Settings of a NATS JetStream sink (what [`build`] parsed).
#[derive(Clone)]
pub struct NatsConfig {
    /// The server, `nats://host:port` or `tls://host:port` (no credentials).
    pub server: String,
    /// TLS required (`nats+tls://`).
    pub tls: bool,
    /// Extra CA certificates (PEM) trusted for TLS; system roots when empty.
    pub tls_ca: Vec<async_nats::rustls::pki_types::CertificateDer<'static>>,
    /// `user:password` from the URL.
    pub user_password: Option<(String, String)>,
    /// Token authentication.
    pub token: Option<String>,
    /// Subject of finished vCons.
    pub subject: String,
    /// Events go to `<prefix>.<uuid>`.
    pub events_prefix: String,
    /// Publish events too.
    pub events: bool,
    /// Stream name.
    pub stream: String,
    /// Create the stream when missing.
    pub create_stream: bool,
    /// Duplicate window of a stream this sink creates.
    pub duplicate_window: Duration,
    /// Connect, API and ack timeout.
    pub timeout: Duration,
}

impl std::fmt::Debug for NatsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Credentials are never printed.
        f.debug_struct("NatsConfig")
            .field("server", &self.server)
            .field("tls", &self.tls)
            .field("subject", &self.subject)
            .field("events_prefix", &self.events_prefix)
            .field("events", &self.events)
            .field("stream", &self.stream)
            .field("create_stream", &self.create_stream)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Builds a NATS JetStream sink from `nats://[user:pw@]HOST[:PORT]` or `nats+tls://…`.
pub fn build(mut spec: SinkSpec) -> Result<Built, ConfigError> {
    let cfg = parse(&mut spec)?;
    let shared = Arc::new(Shared {
        cfg,
        conn: Mutex::new(None),
    });
    let events: Option<Box<dyn EventSink>> = if shared.cfg.events {
        Some(Box::new(NatsEventSink {
            shared: shared.clone(),
        }))
    } else {
        None
    };
    Ok(Built {
        sink: Some(Box::new(NatsSink { shared })),
        events,
    })
}

fn parse(spec: &mut SinkSpec) -> Result<NatsConfig, ConfigError> {
    let name = spec.name.clone();
    let invalid = |why: String| ConfigError::Invalid {
        sink: name.clone(),
        why,
    };
    let bad = |option: &str, why: String| ConfigError::Option {
        sink: name.clone(),
        option: option.to_string(),
        why,
    };
    let tls = match spec.scheme() {
        "nats" => false,
        "nats+tls" => true,
        other => return Err(invalid(format!("not a NATS URL (scheme `{other}`)"))),
    };
    let host = spec
        .url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| invalid("a NATS URL needs a host: nats://HOST:PORT".into()))?
        .to_string();
    if !matches!(spec.url.path(), "" | "/") {
        return Err(invalid(format!(
            "a NATS URL has no path (got `{}`); use the `subject` and `stream` options",
            spec.url.path()
        )));
    }
    let port = spec.url.port().unwrap_or(4222);
    let server = format!("{}://{host}:{port}", if tls { "tls" } else { "nats" });
    let user_password = if spec.url.username().is_empty() {
        None
    } else {
        let dec = |s: &str| {
            url::form_urlencoded::parse(format!("x={s}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        Some((
            dec(spec.url.username()),
            dec(spec.url.password().unwrap_or("")),
        ))
    };
    let o = &mut spec.options;
    let subject = o.take("subject")?.unwrap_or_else(|| "vcon.finished".into());
    check_subject(&subject).map_err(|why| bad("subject", why))?;
    let events_prefix = o
        .take("events_subject_prefix")?
        .unwrap_or_else(|| "vcon.events".into());
    check_subject(&events_prefix).map_err(|why| bad("events_subject_prefix", why))?;
    let events = o.take_bool("events", true)?;
    if events && filter_covers(&format!("{events_prefix}.>"), &subject) {
        return Err(bad(
            "subject",
            format!("`{subject}` lies under the events prefix `{events_prefix}`; pick subjects that do not overlap"),
        ));
    }
    let stream = o.take("stream")?.unwrap_or_else(|| "VCON".into());
    if stream.is_empty()
        || stream.len() > 255
        || !stream
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
    {
        return Err(bad(
            "stream",
            format!("`{stream}` is not a stream name (letters, digits, `-`, `_`)"),
        ));
    }
    let create_stream = o.take_bool("create_stream", true)?;
    let duplicate_window =
        Duration::from_secs(o.take_u64("duplicate_window_s", 120, 1..=604_800)?);
    let token = o.take("token")?;
    if token.is_some() && user_password.is_some() {
        return Err(bad(
            "token",
            "give either `token` or user:password in the URL, not both".into(),
        ));
    }
    let tls_ca = match o.take("tls_ca")? {
        None => Vec::new(),
        Some(_) if !tls => {
            return Err(bad("tls_ca", "only meaningful with nats+tls://".into()));
        }
        Some(path) => load_ca(&path).map_err(|why| bad("tls_ca", why))?,
    };
    let timeout = Duration::from_millis(o.take_u64("timeout_ms", 5000, 100..=600_000)?);
    std::mem::take(o).finish(KNOWN)?;
    Ok(NatsConfig {
        server,
        tls,
        tls_ca,
        user_password,
        token,
        subject,
        events_prefix,
        events,
        stream,
        create_stream,
        duplicate_window,
        timeout,
    })
}

/// Reads PEM certificates (at start-up, so a bad path is a configuration error).
fn load_ca(
    path: &str,
) -> Result<Vec<async_nats::rustls::pki_types::CertificateDer<'static>>, String> {
    use async_nats::rustls::pki_types::{pem::PemObject, CertificateDer};
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("reading `{path}`: {e}"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("reading `{path}`: {e}"))?;
    if certs.is_empty() {
        return Err(format!("`{path}` holds no PEM certificate"));
    }
    Ok(certs)
}

/// A literal subject: dot-separated non-empty tokens of visible ASCII, no wildcards.
fn check_subject(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 200
        && s.split('.').all(|t| {
            !t.is_empty()
                && t.bytes()
                    .all(|c| c.is_ascii_graphic() && c != b'*' && c != b'>')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a NATS subject (dot-separated tokens, no spaces or wildcards)",
            s.escape_debug()
        ))
    }
}

/// Whether the stream subject `filter` (may hold `*` and `>`) covers every subject `subject`
/// (may itself end in `>`) can name.
pub fn filter_covers(filter: &str, subject: &str) -> bool {
    let mut f = filter.split('.');
    let mut s = subject.split('.');
    loop {
        match (f.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(t)) if t != ">" => {}
            (Some(a), Some(b)) if a == b && a != "*" => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Whether a uuid can go into a header value (and, for events, a subject token).
fn uuid_ok(uuid: &str, as_token: bool) -> bool {
    !uuid.is_empty()
        && uuid.len() <= 128
        && uuid
            .bytes()
            .all(|c| c.is_ascii_graphic() && !(as_token && matches!(c, b'.' | b'*' | b'>')))
}

/// The connection, shared by the durable sink and the event sink of one spec.
struct Shared {
    cfg: NatsConfig,
    conn: Mutex<Option<Conn>>,
}

#[derive(Clone)]
struct Conn {
    client: async_nats::Client,
    js: jetstream::Context,
    /// The stream was checked (or created) on this connection.
    stream_ready: bool,
}

impl Shared {
    /// The connection, connecting (and preparing the stream) first when needed.
    async fn conn(&self) -> Result<Conn, SinkError> {
        let mut guard = self.conn.lock().await;
        let mut conn = match guard.as_ref() {
            Some(c) => c.clone(),
            None => {
                let client = connect(&self.cfg).await?;
                let js = jetstream::ContextBuilder::new()
                    .timeout(self.cfg.timeout)
                    .max_ack_inflight(4096)
                    .backpressure_on_inflight(true)
                    .build(client.clone());
                let c = Conn {
                    client,
                    js,
                    stream_ready: false,
                };
                *guard = Some(c.clone());
                c
            }
        };
        if !conn.stream_ready && self.cfg.create_stream {
            ensure_stream(&self.cfg, &conn.js).await?;
            conn.stream_ready = true;
            if let Some(c) = guard.as_mut() {
                c.stream_ready = true;
            }
        }
        Ok(conn)
    }

    /// After a failed attempt, check the stream again next time (it may have been deleted).
    async fn failed(&self) {
        if let Some(c) = self.conn.lock().await.as_mut() {
            c.stream_ready = false;
        }
    }
}

/// The ring-backed rustls config (explicit provider: never ambiguous, never aws-lc).
fn tls_config(cfg: &NatsConfig) -> Result<async_nats::rustls::ClientConfig, SinkError> {
    use async_nats::rustls;
    let mut roots = rustls::RootCertStore::empty();
    if cfg.tls_ca.is_empty() {
        let native = rustls_native_certs::load_native_certs();
        for e in &native.errors {
            tracing::debug!(error = %e, "nats sink: a system certificate could not be loaded");
        }
        roots.add_parsable_certificates(native.certs);
    } else {
        roots.add_parsable_certificates(cfg.tls_ca.iter().cloned());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SinkError::new(format!("nats sink: TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

async fn connect(cfg: &NatsConfig) -> Result<async_nats::Client, SinkError> {
    let mut opts = async_nats::ConnectOptions::new()
        .name("vcontap")
        .connection_timeout(cfg.timeout)
        .request_timeout(Some(cfg.timeout))
        .event_callback(|ev| async move {
            match ev {
                async_nats::Event::Disconnected => tracing::warn!("nats sink: disconnected"),
                async_nats::Event::Connected => tracing::info!("nats sink: (re)connected"),
                other => tracing::debug!(event = %other, "nats sink: client event"),
            }
        });
    if let Some((u, p)) = &cfg.user_password {
        opts = opts.user_and_password(u.clone(), p.clone());
    }
    if let Some(t) = &cfg.token {
        opts = opts.token(t.clone());
    }
    if cfg.tls {
        opts = opts.require_tls(true).tls_client_config(tls_config(cfg)?);
    }
    let addr: ServerAddr = cfg
        .server
        .parse()
        .map_err(|e| SinkError::new(format!("nats sink: server address {}: {e}", cfg.server)))?;
    // async-nats bounds each attempt by connection_timeout; the outer bound also covers
    // the TLS handshake and the INFO/CONNECT exchange.
    match tokio::time::timeout(cfg.timeout + Duration::from_secs(1), opts.connect(addr)).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(SinkError::new(format!(
            "nats sink: connecting to {}: {e}",
            cfg.server
        ))),
        Err(_) => Err(SinkError::new(format!(
            "nats sink: connecting to {}: timed out after {:?}",
            cfg.server, cfg.timeout
        ))),
    }
}

/// The subjects the stream must cover.
fn wanted_subjects(cfg: &NatsConfig) -> Vec<String> {
    let mut v = vec![cfg.subject.clone()];
    if cfg.events {
        v.push(format!("{}.>", cfg.events_prefix));
    }
    v
}

/// Creates the stream if missing; errors clearly if it exists without our subjects.
async fn ensure_stream(cfg: &NatsConfig, js: &jetstream::Context) -> Result<(), SinkError> {
    let wanted = wanted_subjects(cfg);
    let existing = match js.get_stream(&cfg.stream).await {
        Ok(mut s) => Some(s.info().await.map(|i| i.config.subjects.clone())),
        Err(e) if is_not_found(&e) => None,
        Err(e) => {
            return Err(SinkError::new(format!(
                "nats sink: looking up stream {}: {e}",
                cfg.stream
            )))
        }
    };
    let subjects = match existing {
        Some(r) => {
            r.map_err(|e| SinkError::new(format!("nats sink: stream {} info: {e}", cfg.stream)))?
        }
        None => {
            let sc = jetstream::stream::Config {
                name: cfg.stream.clone(),
                subjects: wanted.clone(),
                storage: jetstream::stream::StorageType::File,
                duplicate_window: cfg.duplicate_window,
                description: Some("vCons from vcontap (finished and events)".into()),
                ..Default::default()
            };
            match js.create_stream(sc).await {
                Ok(s) => {
                    tracing::info!(stream = %cfg.stream, subjects = ?wanted, "nats sink: created stream");
                    s.cached_info().config.subjects.clone()
                }
                // Another agent may have created it just now: look again.
                Err(first) => match js.get_stream(&cfg.stream).await {
                    Ok(mut s) => {
                        s.info()
                            .await
                            .map(|i| i.config.subjects.clone())
                            .map_err(|e| {
                                SinkError::new(format!(
                                    "nats sink: stream {} info: {e}",
                                    cfg.stream
                                ))
                            })?
                    }
                    Err(_) => {
                        return Err(SinkError::new(format!(
                            "nats sink: creating stream {} for {wanted:?}: {first}",
                            cfg.stream
                        )))
                    }
                },
            }
        }
    };
    let missing: Vec<&String> = wanted
        .iter()
        .filter(|w| !subjects.iter().any(|f| filter_covers(f, w)))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        tracing::error!(stream = %cfg.stream, have = ?subjects, missing = ?missing,
            "nats sink: the stream does not cover the configured subjects");
        Err(SinkError::new(format!(
            "nats sink: stream {} exists with subjects {subjects:?}, which do not cover {missing:?}; \
             add them (`nats stream edit {} --subjects ...`) or point `stream`/`subject` elsewhere",
            cfg.stream, cfg.stream
        )))
    }
}

fn is_not_found(e: &jetstream::context::GetStreamError) -> bool {
    matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(j)
        if j.error_code() == ErrorCode::STREAM_NOT_FOUND)
}

/// Whether a failed publish/ack is a permanent refusal of that one message.
fn permanent(e: &jetstream::context::PublishError) -> bool {
    if e.kind() == PublishErrorKind::MaxPayloadExceeded {
        return true;
    }
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<jetstream::Error>())
        .is_some_and(|j| j.error_code() == ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM)
}

/// The de-duplication id of a finished vCon: uuid plus a digest of the exact bytes, so a
/// re-delivery collapses and an update does not.
pub fn finished_msg_id(uuid: &str, json: &[u8]) -> String {
    format!("{uuid}:{:08x}", crc32fast::hash(json))
}

/// Publishes finished vCons to JetStream.
pub struct NatsSink {
    shared: Arc<Shared>,
}

impl NatsSink {
    async fn deliver_batch(&self, batch: &[Arc<Record>]) -> Result<Vec<Outcome>, SinkError> {
        let conn = self.shared.conn().await?;
        let max_payload = conn.client.server_info().max_payload;
        let mut out: Vec<Outcome> = Vec::with_capacity(batch.len());
        let mut pending = Vec::with_capacity(batch.len());
        for (i, rec) in batch.iter().enumerate() {
            if !uuid_ok(&rec.uuid, false) {
                out.push(Outcome::Rejected(format!(
                    "uuid `{}` cannot be a NATS header value",
                    rec.uuid.escape_debug()
                )));
                continue;
            }
            // (payload plus headers just over the limit is caught by async-nats as
            // MaxPayloadExceeded, which `permanent` also maps to a rejection)
            if max_payload > 0 && rec.json.len() > max_payload {
                out.push(Outcome::Rejected(format!(
                    "vCon is {} bytes, over the server's max_payload of {max_payload}",
                    rec.json.len()
                )));
                continue;
            }
            let mut h = HeaderMap::new();
            h.insert(HEADER_MSG_ID, finished_msg_id(&rec.uuid, &rec.json));
            h.insert(HEADER_UUID, &*rec.uuid);
            match conn
                .js
                .publish_with_headers(self.shared.cfg.subject.clone(), h, rec.json.clone())
                .await
            {
                Ok(ack) => {
                    out.push(Outcome::Delivered);
                    pending.push((i, ack));
                }
                Err(e) if permanent(&e) => out.push(Outcome::Rejected(format!("nats: {e}"))),
                Err(e) => {
                    return Err(SinkError::new(format!("nats sink: publish: {e}")));
                }
            }
        }
        let mut dups = 0usize;
        for (i, ack) in pending {
            match ack.await {
                Ok(a) => dups += usize::from(a.duplicate),
                Err(e) if permanent(&e) => {
                    if let Some(o) = out.get_mut(i) {
                        *o = Outcome::Rejected(format!("nats: {e}"));
                    }
                }
                Err(e) => {
                    return Err(SinkError::new(format!(
                        "nats sink: no ack from stream {}: {e}",
                        self.shared.cfg.stream
                    )))
                }
            }
        }
        if dups > 0 {
            tracing::debug!(dups, "nats sink: stream dropped duplicate re-deliveries");
        }
        Ok(out)
    }
}

impl Sink for NatsSink {
    fn max_batch(&self) -> usize {
        256
    }

    fn deliver<'a>(
        &'a mut self,
        batch: &'a [Arc<Record>],
    ) -> BoxFuture<'a, Result<Vec<Outcome>, SinkError>> {
        Box::pin(async move {
            let r = self.deliver_batch(batch).await;
            if r.is_err() {
                self.shared.failed().await;
            }
            r
        })
    }

    fn close(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let conn = self.shared.conn.lock().await.take();
            if let Some(c) = conn {
                let _ = tokio::time::timeout(self.shared.cfg.timeout, c.client.flush()).await;
            }
        })
    }
}

/// Publishes real-time events to `<prefix>.<uuid>`.
pub struct NatsEventSink {
    shared: Arc<Shared>,
}

impl NatsEventSink {
    async fn publish_batch(&self, batch: &[Arc<VconEvent>]) -> Result<(), SinkError> {
        let conn = self.shared.conn().await?;
        let max_payload = conn.client.server_info().max_payload;
        let mut pending = Vec::with_capacity(batch.len());
        let mut skipped = 0usize;
        for ev in batch {
            if !uuid_ok(&ev.uuid, true) {
                skipped += 1;
                continue;
            }
            let line = ev.to_json_line();
            if max_payload > 0 && line.len() > max_payload {
                skipped += 1;
                continue;
            }
            let mut h = HeaderMap::new();
            h.insert(HEADER_MSG_ID, format!("{}:{}", ev.uuid, ev.seq));
            h.insert(HEADER_UUID, &*ev.uuid);
            h.insert(HEADER_SEQ, ev.seq.to_string());
            h.insert(HEADER_KIND, ev.kind.as_str());
            let subject = format!("{}.{}", self.shared.cfg.events_prefix, ev.uuid);
            match conn
                .js
                .publish_with_headers(subject, h, Bytes::from(line))
                .await
            {
                Ok(ack) => pending.push(ack),
                Err(e) if permanent(&e) => skipped += 1,
                Err(e) => return Err(SinkError::new(format!("nats sink: publish event: {e}"))),
            }
        }
        for ack in pending {
            match ack.await {
                Ok(_) => {}
                Err(e) if permanent(&e) => skipped += 1,
                Err(e) => {
                    return Err(SinkError::new(format!(
                        "nats sink: no ack for an event from stream {}: {e}",
                        self.shared.cfg.stream
                    )))
                }
            }
        }
        if skipped > 0 {
            tracing::warn!(
                skipped,
                "nats sink: events not publishable (uuid not a subject token, or too large)"
            );
        }
        Ok(())
    }
}

impl EventSink for NatsEventSink {
    fn max_batch(&self) -> usize {
        256
    }

    fn publish<'a>(
        &'a mut self,
        batch: &'a [Arc<VconEvent>],
    ) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            let r = self.publish_batch(batch).await;
            if r.is_err() {
                self.shared.failed().await;
            }
            r
        })
    }
}

/// One message read back from a stream (for tests and tools).
#[derive(Debug, Clone)]
pub struct StoredMessage {
    /// The subject it was published on.
    pub subject: String,
    /// Stream sequence.
    pub sequence: u64,
    /// Headers (`name`, `value`), first value of each.
    pub headers: Vec<(String, String)>,
    /// Payload bytes.
    pub payload: Bytes,
}

impl StoredMessage {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Errors of the read-back helpers.
#[derive(Debug, thiserror::Error)]
#[error("nats read-back: {0}")]
pub struct ReadBackError(pub String);

fn rb(e: impl std::fmt::Display) -> ReadBackError {
    ReadBackError(e.to_string())
}

/// The connection settings of a sink URL for the read-back helpers: `token`, `tls_ca` and
/// `timeout_ms` are used, every other option is ignored.
fn readback_cfg(url: &str) -> Result<NatsConfig, ReadBackError> {
    let mut given = SinkSpec::parse(url).map_err(rb)?;
    let mut spec = SinkSpec::parse(given.url.as_str()).map_err(rb)?;
    for key in ["token", "tls_ca", "timeout_ms"] {
        if let Some(v) = given.options.take(key).map_err(rb)? {
            spec.options.push(key, &v);
        }
    }
    parse(&mut spec).map_err(rb)
}

/// Reads every message of `stream` whose subject matches `filter` (wildcards allowed), in
/// stream order, through an ephemeral ordered consumer. `url` is a sink URL
/// (`nats://[user:pw@]host:port`, options ignored except `token`).
pub async fn stored_messages(
    url: &str,
    stream: &str,
    filter: &str,
) -> Result<Vec<StoredMessage>, ReadBackError> {
    use futures_util::StreamExt as _;
    let cfg = readback_cfg(url)?;
    let client = connect(&cfg).await.map_err(rb)?;
    let js = jetstream::ContextBuilder::new()
        .timeout(cfg.timeout)
        .build(client.clone());
    let mut st = js.get_stream(stream).await.map_err(rb)?;
    let info = st.info().await.map_err(rb)?;
    if info.state.messages == 0 {
        return Ok(Vec::new());
    }
    let consumer = st
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            filter_subject: filter.to_string(),
            ..Default::default()
        })
        .await
        .map_err(rb)?;
    let mut msgs = consumer.messages().await.map_err(rb)?;
    let mut out = Vec::new();
    loop {
        // No message within the wait: nothing (more) matches the filter.
        let next = match tokio::time::timeout(Duration::from_secs(2), msgs.next()).await {
            Err(_) | Ok(None) => break,
            Ok(Some(m)) => m.map_err(rb)?,
        };
        let (sequence, pending) = match next.info() {
            Ok(i) => (i.stream_sequence, i.pending),
            Err(e) => return Err(rb(e)),
        };
        let headers = next
            .headers
            .as_ref()
            .map(|h| {
                h.iter()
                    .filter_map(|(k, v)| v.first().map(|v| (k.to_string(), v.as_str().to_string())))
                    .collect()
            })
            .unwrap_or_default();
        out.push(StoredMessage {
            subject: next.subject.to_string(),
            sequence,
            headers,
            payload: next.payload.clone(),
        });
        if pending == 0 {
            break;
        }
    }
    drop(msgs);
    let _ = client.flush().await;
    Ok(out)
}

/// The `Vcon-Uuid` of every message on `subject` in `stream`, in stream order, duplicates
/// included (so a count per uuid shows whether a re-delivery was stored twice).
pub async fn stored_uuids(
    url: &str,
    stream: &str,
    subject: &str,
) -> Result<Vec<String>, ReadBackError> {
    Ok(stored_messages(url, stream, subject)
        .await?
        .into_iter()
        .filter_map(|m| m.header(HEADER_UUID).map(String::from))
        .collect())
}

/// Deletes a stream (test clean-up); `Ok(false)` if it did not exist.
pub async fn delete_stream(url: &str, stream: &str) -> Result<bool, ReadBackError> {
    let cfg = readback_cfg(url)?;
    let client = connect(&cfg).await.map_err(rb)?;
    let js = jetstream::ContextBuilder::new()
        .timeout(cfg.timeout)
        .build(client);
    match js.delete_stream(stream).await {
        Ok(s) => Ok(s.success),
        Err(e) => match e.kind() {
            jetstream::context::DeleteStreamErrorKind::JetStream(j)
                if j.error_code() == ErrorCode::STREAM_NOT_FOUND =>
            {
                Ok(false)
            }
            _ => Err(rb(e)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(url: &str) -> Result<NatsConfig, ConfigError> {
        parse(&mut SinkSpec::parse(url).unwrap())
    }

    #[test]
    fn options_and_defaults() {
        let c = cfg("nats://127.0.0.1").unwrap();
        assert_eq!(c.server, "nats://127.0.0.1:4222");
        assert_eq!(c.subject, "vcon.finished");
        assert_eq!(c.events_prefix, "vcon.events");
        assert!(c.events && c.create_stream);
        assert_eq!(c.stream, "VCON");
        assert_eq!(c.timeout, Duration::from_secs(5));
        assert_eq!(wanted_subjects(&c), vec!["vcon.finished", "vcon.events.>"]);
        let c = cfg("nats://u%40x:p%3Aw@h:4333?events=false&stream=S_1&timeout_ms=250").unwrap();
        assert_eq!(c.server, "nats://h:4333");
        assert_eq!(c.user_password, Some(("u@x".into(), "p:w".into())));
        assert_eq!(wanted_subjects(&c), vec!["vcon.finished"]);
        assert!(build(SinkSpec::parse("nats://h?events=false").unwrap())
            .unwrap()
            .events
            .is_none());
        assert!(build(SinkSpec::parse("nats://h").unwrap())
            .unwrap()
            .events
            .is_some());
        assert_eq!(cfg("nats+tls://h:1").unwrap().server, "tls://h:1");
    }

    #[test]
    fn bad_options_are_config_errors() {
        for (url, needle) in [
            ("nats://h?subject=a..b", "subject"),
            ("nats://h?subject=a.*", "subject"),
            ("nats://h?subject=vcon.events.x", "overlap"),
            ("nats://h?stream=a.b", "stream"),
            ("nats://h?timeout_ms=1", "timeout_ms"),
            ("nats://u:p@h?token=t", "token"),
            ("nats://h?tls_ca=/x.pem", "nats+tls"),
            ("nats+tls://h?tls_ca=/nonexistent/ca.pem", "tls_ca"),
            ("nats://h/some/path", "path"),
            ("nats://h?creds=x", "unknown option"),
        ] {
            let e = match cfg(url) {
                Ok(_) => panic!("{url} accepted"),
                Err(e) => e.to_string(),
            };
            assert!(e.contains(needle), "{url}: {e}");
        }
    }

    #[test]
    fn subject_coverage() {
        assert!(filter_covers("vcon.finished", "vcon.finished"));
        assert!(filter_covers("vcon.*", "vcon.finished"));
        assert!(filter_covers(">", "vcon.events.>"));
        assert!(filter_covers("vcon.>", "vcon.events.>"));
        assert!(filter_covers("vcon.events.>", "vcon.events.>"));
        assert!(!filter_covers("vcon.events.*", "vcon.events.>"));
        assert!(!filter_covers("vcon.finished", "vcon.finished.x"));
        assert!(!filter_covers("vcon.finished.x", "vcon.finished"));
        assert!(!filter_covers("vcon.*", "vcon.events.>"));
    }

    #[test]
    fn msg_ids_and_uuid_checks() {
        let a = finished_msg_id("u", b"{}");
        assert_eq!(a, finished_msg_id("u", b"{}"));
        assert_ne!(a, finished_msg_id("u", b"{ }"));
        assert!(a.starts_with("u:"));
        assert!(uuid_ok("018f0000-0000-8000-8000-000000000001", true));
        assert!(!uuid_ok("a b", false));
        assert!(!uuid_ok("x\r\nNats-Msg-Id: y", false));
        assert!(uuid_ok("a.b", false) && !uuid_ok("a.b", true));
        assert!(!uuid_ok("", false));
    }
}
