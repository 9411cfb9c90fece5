//! The `redis` sink: finished vCons into the vCon conserver's Redis layout (so a conserver
//! picks them up as if its API had stored them), plus optional real-time events on a Redis
//! stream and/or a pub/sub channel.
//!
//! ```text
//! --sink 'redis://127.0.0.1:6379/0?ingress=default'
//! --sink 'rediss://user:pw@redis.example:6380/2?ingress=a,b&ttl=3600&events_stream=vcon-events'
//! ```
//!
//! Per record, one Lua script (`EVALSHA`, loaded once per connection) writes, atomically:
//!
//! | key | command | notes |
//! |---|---|---|
//! | `vcon:<uuid>` | `JSON.SET vcon:<uuid> $ <json>` with RedisJSON, else `SET … KEEPTTL` | the exact spooled bytes; `EXPIRE ttl` if the `ttl` option is set |
//! | `<sorted_set>` (`vcons`) | `ZADD <score> vcon:<uuid>` | score = `created_at` in whole epoch seconds |
//! | `tel:<tel>`, `mailto:<addr>`, `name:<name>` | `SADD <uuid>` + `EXPIRE index_ttl` | per party identifier |
//! | each `ingress` list | `RPUSH <uuid>` **once** | guarded by `vcontap:pushed:<list>:<uuid>` |
//!
//! A batch is one pipeline of those scripts. Redis runs each script as one unit, so a record
//! is either fully written or not at all (a *server-side* script error part-way is not
//! rolled back, but such a record is rejected and dead-lettered). Re-delivering a record
//! (at-least-once: a batch is retried whole after an error) rewrites the same values; the
//! ingress push alone is not naturally idempotent, so the script checks and sets a marker
//! key `vcontap:pushed:<list>:<uuid>` (value: the spool record id, TTL `dedup_ttl`) in the
//! same atomic step as the `RPUSH`: a retried batch collapses to one push per list. With
//! `repush_updates=true` a *newer* spool record of the same uuid (a higher record id) is
//! pushed again, so the conserver processes the updated vCon; by default a uuid is pushed
//! once per list within `dedup_ttl`.
//!
//! Document mode (`mode=auto`, the default) is detected once per connection: `JSON.TYPE` on
//! a key that does not exist answers nil with RedisJSON and "unknown command" without it.
//! The conserver reads vCons with `JSON.GET`, so it needs RedisJSON; plain `SET` keeps the
//! layout usable for other readers (and is what stock Redis can store). In JSON mode a
//! plain string left at `vcon:<uuid>` by an earlier plain write is replaced.
//!
//! The full design (options, layout, error table) is in `docs/sinks/redis.md`.
//!
//! Why these crates: `redis` 1.x (`tokio-comp`, no default features) for the RESP client
//! and its `MultiplexedConnection` (pipelines, response timeouts); `tokio-rustls-comp` adds
//! `rediss://` over rustls, and `rustls` is named here only to pin the `ring` provider (no
//! aws-lc). Reconnection is done by hand (drop the connection on an I/O error, reconnect
//! on the next call, one immediate reconnect when a cached connection turns out dead), so
//! the `connection-manager` feature (and its backoff crates) is not needed: the delivery
//! core owns retries and backoff.

use std::sync::Arc;
use std::time::Duration;

use ::redis::aio::MultiplexedConnection;
use ::redis::{AsyncConnectionConfig, Client, IntoConnectionInfo, RedisError, Value};
use serde::Deserialize;
use vcontap_engine::VconEvent;

use crate::record::{parse_rfc3339_ms, Record};
use crate::sink::{BoxFuture, Built, EventSink, Outcome, Sink, SinkError};
use crate::spec::{ConfigError, SinkSpec};

/// Options this sink knows (for the "unknown option" error).
const KNOWN: &[&str] = &[
    "ingress",
    "ttl",
    "sorted_set",
    "index",
    "index_ttl",
    "dedup_ttl",
    "repush_updates",
    "mode",
    "batch",
    "timeout_ms",
    "username",
    "password",
    "store",
    "events_stream",
    "events_maxlen",
    "events_channel",
];

/// Prefix of the ingress de-duplication markers (`vcontap:pushed:<list>:<uuid>`).
pub const PUSHED_PREFIX: &str = "vcontap:pushed:";

/// The whole per-record write, run atomically by Redis.
///
/// KEYS: 1 document, 2 sorted set, then `ni` index sets, `ng` ingress lists, `ng` markers.
/// ARGV: 1 json, 2 mode (`json`|`plain`), 3 ttl (0 = leave), 4 score, 5 sorted-set member,
/// 6 uuid, 7 index ttl (0 = none), 8 ni, 9 ng, 10 record id, 11 marker ttl,
/// 12 repush (`1`|`0`). Returns the number of lists pushed to.
const SCRIPT: &str = r"
local doc = KEYS[1]
if ARGV[2] == 'json' then
  local r = redis.pcall('JSON.SET', doc, '$', ARGV[1])
  if type(r) == 'table' and r.err then
    if string.find(r.err, 'WRONGTYPE', 1, true) then
      -- A plain string left by a writer without RedisJSON: replace it.
      redis.call('DEL', doc)
      redis.call('JSON.SET', doc, '$', ARGV[1])
    else
      return redis.error_reply(r.err)
    end
  end
else
  redis.call('SET', doc, ARGV[1], 'KEEPTTL')
end
local ttl = tonumber(ARGV[3])
if ttl > 0 then redis.call('EXPIRE', doc, ttl) end
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[5])
local ni = tonumber(ARGV[8])
local ng = tonumber(ARGV[9])
local ittl = tonumber(ARGV[7])
for i = 1, ni do
  local k = KEYS[2 + i]
  redis.call('SADD', k, ARGV[6])
  if ittl > 0 then redis.call('EXPIRE', k, ittl) end
end
local id = tonumber(ARGV[10])
local pushed = 0
for j = 1, ng do
  local list = KEYS[2 + ni + j]
  local marker = KEYS[2 + ni + ng + j]
  local prev = redis.call('GET', marker)
  local push = false
  if not prev then
    push = true
  elseif ARGV[12] == '1' then
    local p = tonumber(prev)
    push = (p == nil) or (p < id)
  end
  if push then
    redis.call('SET', marker, ARGV[10], 'EX', ARGV[11])
    redis.call('RPUSH', list, ARGV[6])
    pushed = pushed + 1
  end
end
return pushed
";

/// How the document at `vcon:<uuid>` is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocMode {
    /// Probe for RedisJSON once per connection and use it when present.
    Auto,
    /// Always `JSON.SET` (a server without RedisJSON is a transient error, not a rejection).
    Json,
    /// Always a plain string `SET`.
    Plain,
}

/// Settings of a Redis sink (parsed from the URL's options).
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `ingress`: lists the uuid is pushed onto (once each).
    pub ingress: Vec<String>,
    /// `ttl`: seconds on `vcon:<uuid>`; `None` leaves the key's TTL as it is.
    pub ttl: Option<u64>,
    /// `sorted_set`: the conserver's `VCON_SORTED_SET_NAME`.
    pub sorted_set: String,
    /// `index`: write the `tel:`/`mailto:`/`name:` sets.
    pub index: bool,
    /// `index_ttl`: seconds on each index set (0 = none).
    pub index_ttl: u64,
    /// `dedup_ttl`: seconds an ingress push marker lives.
    pub dedup_ttl: u64,
    /// `repush_updates`: a newer record of a uuid is pushed again.
    pub repush_updates: bool,
    /// `mode`: document mode.
    pub mode: DocMode,
    /// `batch`: records per `deliver`.
    pub batch: usize,
    /// `timeout_ms`: connect and response timeout.
    pub timeout: Duration,
    /// `store`: build the durable sink (false: events only).
    pub store: bool,
    /// `events_stream`: stream name for `XADD`.
    pub events_stream: Option<String>,
    /// `events_maxlen`: approximate stream cap.
    pub events_maxlen: u64,
    /// `events_channel`: pub/sub channel.
    pub events_channel: Option<String>,
}

/// Builds a Redis sink from `redis://[user:pw@]HOST:PORT/DB?…` or `rediss://…` (TLS).
/// No network I/O: the connection is made on the first delivery.
pub fn build(mut spec: SinkSpec) -> Result<Built, ConfigError> {
    let name = spec.name.clone();
    let invalid = |why: String| ConfigError::Invalid {
        sink: name.clone(),
        why,
    };
    let opt = |option: &str, why: String| ConfigError::Option {
        sink: name.clone(),
        option: option.to_string(),
        why,
    };
    let o = &mut spec.options;
    let ingress = o.take_all("ingress");
    let ttl = match o.take_u64("ttl", 0, 0..=u64::from(u32::MAX))? {
        0 => None,
        n => Some(n),
    };
    let sorted_set = o.take("sorted_set")?.unwrap_or_else(|| "vcons".into());
    let index = o.take_bool("index", true)?;
    let index_ttl = o.take_u64("index_ttl", 86_400, 0..=u64::from(u32::MAX))?;
    let dedup_ttl = o.take_u64("dedup_ttl", 604_800, 1..=u64::from(u32::MAX))?;
    let repush_updates = o.take_bool("repush_updates", false)?;
    let mode = match o.take("mode")?.as_deref() {
        None | Some("auto") => DocMode::Auto,
        Some("json") => DocMode::Json,
        Some("plain") => DocMode::Plain,
        Some(v) => {
            return Err(opt(
                "mode",
                format!("`{v}` is not one of auto, json, plain"),
            ))
        }
    };
    let batch = o.take_u64("batch", 256, 1..=10_000)?;
    let timeout_ms = o.take_u64("timeout_ms", 10_000, 100..=600_000)?;
    let username = o.take("username")?;
    let password = o.take("password")?;
    let store = o.take_bool("store", true)?;
    let events_stream = o.take("events_stream")?;
    let events_maxlen = o.take_u64("events_maxlen", 100_000, 1..=u64::MAX)?;
    let events_channel = o.take("events_channel")?;
    spec.options.finish(KNOWN)?;

    for (option, v) in [("sorted_set", Some(&sorted_set))]
        .into_iter()
        .chain([
            ("events_stream", events_stream.as_ref()),
            ("events_channel", events_channel.as_ref()),
        ])
        .chain(ingress.iter().map(|l| ("ingress", Some(l))))
    {
        if v.is_some_and(|v| v.is_empty()) {
            return Err(opt(option, "must not be empty".into()));
        }
    }
    if !store && events_stream.is_none() && events_channel.is_none() {
        return Err(invalid(
            "store=false needs events_stream or events_channel (nothing to write)".into(),
        ));
    }

    if spec.url.host_str().is_none_or(str::is_empty) {
        return Err(invalid(
            "a redis URL needs a host (redis://HOST:PORT/DB)".into(),
        ));
    }
    let path = spec.url.path().trim_matches('/');
    if !path.is_empty() && path.parse::<u16>().is_err() {
        return Err(invalid(format!(
            "the URL path must be a database number (redis://HOST:PORT/0), not `/{path}`"
        )));
    }
    let mut info = spec
        .url
        .as_str()
        .into_connection_info()
        .map_err(|e| invalid(format!("not a usable redis URL: {e}")))?;
    if username.is_some() || password.is_some() {
        let mut r = info.redis_settings().clone();
        if let Some(u) = username {
            r = r.set_username(u);
        }
        if let Some(p) = password {
            r = r.set_password(p);
        }
        info = info.set_redis_settings(r);
    }
    let client = Client::open(info).map_err(|e| invalid(format!("redis client: {e}")))?;

    let cfg = Arc::new(RedisConfig {
        ingress,
        ttl,
        sorted_set,
        index,
        index_ttl,
        dedup_ttl,
        repush_updates,
        mode,
        batch: usize::try_from(batch).unwrap_or(256),
        timeout: Duration::from_millis(timeout_ms),
        store,
        events_stream,
        events_maxlen,
        events_channel,
    });
    let sink: Option<Box<dyn Sink>> = if cfg.store {
        Some(Box::new(RedisSink {
            name: name.clone(),
            link: Link::new(client.clone(), cfg.timeout),
            cfg: cfg.clone(),
            sha: None,
            json: None,
            logged_mode: None,
        }))
    } else {
        None
    };
    let events: Option<Box<dyn EventSink>> =
        if cfg.events_stream.is_some() || cfg.events_channel.is_some() {
            Some(Box::new(RedisEvents {
                link: Link::new(client, cfg.timeout),
                cfg,
            }))
        } else {
            None
        };
    Ok(Built { sink, events })
}

/// Installs rustls' ring provider for the process (idempotent; a no-op if another
/// provider is already installed). Without it, a build that also enables aws-lc
/// somewhere would not know which provider to use for `rediss://`.
fn ensure_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A lazily made connection that is dropped after an I/O error.
struct Link {
    client: Client,
    timeout: Duration,
    live: Option<MultiplexedConnection>,
}

impl Link {
    fn new(client: Client, timeout: Duration) -> Self {
        Link {
            client,
            timeout,
            live: None,
        }
    }

    /// The cached connection, or a new one. The bool is true when it is new.
    async fn get(&mut self) -> Result<(MultiplexedConnection, bool), SinkError> {
        if let Some(c) = &self.live {
            return Ok((c.clone(), false));
        }
        ensure_crypto_provider();
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        let c = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| SinkError::new(format!("redis: connecting: {e}")))?;
        self.live = Some(c.clone());
        Ok((c, true))
    }

    fn reset(&mut self) {
        self.live = None;
    }
}

/// True when the server answered (an error reply) rather than the connection failing.
fn is_reply(e: &RedisError) -> bool {
    e.code().is_some()
}

/// Error replies that say "not now" (memory, loading, failover, auth/ACL being fixed,
/// module missing) rather than "never": the batch is retried, never dead-lettered.
fn is_transient_reply(e: &RedisError) -> bool {
    const CODES: &[&str] = &[
        "OOM",
        "BUSY",
        "LOADING",
        "READONLY",
        "MASTERDOWN",
        "TRYAGAIN",
        "CLUSTERDOWN",
        "NOREPLICAS",
        "MISCONF",
        "EXECABORT",
        "MOVED",
        "ASK",
        "CROSSSLOT",
        "NOAUTH",
        "WRONGPASS",
        "NOPERM",
        "NOSCRIPT",
    ];
    let code = e.code().unwrap_or("");
    if CODES.contains(&code) {
        return true;
    }
    // Before Redis 7 an error inside a script is `ERR Error running script … <CODE> …`,
    // and a module that went away shows as an unknown command.
    let text = e.to_string();
    is_unknown_command(&text) || CODES.iter().any(|c| text.contains(&format!(": {c} ")))
}

fn is_unknown_command(text: &str) -> bool {
    text.to_ascii_lowercase().contains("unknown command")
}

/// One record made ready for the script.
struct Prepared {
    keys: Vec<String>,
    score: i64,
    member: String,
    uuid: String,
    ni: usize,
}

/// The fields the sink reads, parsed leniently: `parties` may hold anything (only string
/// `tel`/`mailto`/`name` values of object entries are indexed).
#[derive(Deserialize)]
struct Head {
    uuid: String,
    created_at: String,
    #[serde(default)]
    parties: serde_json::Value,
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// Checks a record and computes its keys, or says why Redis (and the conserver) can never
/// take it.
fn prepare(cfg: &RedisConfig, rec: &Record) -> Result<Prepared, String> {
    let first = rec.json.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Err("not a JSON object".into());
    }
    let head: Head = serde_json::from_slice(&rec.json)
        .map_err(|e| format!("not a vCon JSON object with string uuid and created_at: {e}"))?;
    if !is_uuid(&head.uuid) {
        return Err(format!(
            "uuid `{}` is not an RFC 4122 uuid",
            head.uuid.escape_debug()
        ));
    }
    if head.uuid != *rec.uuid {
        return Err(format!(
            "the document's uuid {} differs from the record's {}",
            head.uuid, rec.uuid
        ));
    }
    let ms = parse_rfc3339_ms(&head.created_at).ok_or_else(|| {
        format!(
            "created_at `{}` is not RFC 3339",
            head.created_at.escape_debug()
        )
    })?;
    // Whole seconds, truncated like the conserver's `int(created_at.timestamp())`.
    let score = ms / 1000;
    let uuid = head.uuid;
    let mut keys = vec![format!("vcon:{uuid}"), cfg.sorted_set.clone()];
    if cfg.index {
        if let Some(parties) = head.parties.as_array() {
            for p in parties {
                for field in ["tel", "mailto", "name"] {
                    if let Some(v) = p.get(field).and_then(|v| v.as_str()) {
                        if v.is_empty() {
                            continue;
                        }
                        let k = format!("{field}:{v}");
                        if !keys.get(2..).is_some_and(|ks| ks.contains(&k)) {
                            keys.push(k);
                        }
                    }
                }
            }
        }
    }
    let ni = keys.len() - 2;
    for list in &cfg.ingress {
        keys.push(list.clone());
    }
    for list in &cfg.ingress {
        keys.push(format!("{PUSHED_PREFIX}{list}:{uuid}"));
    }
    Ok(Prepared {
        keys,
        score,
        member: format!("vcon:{uuid}"),
        uuid,
        ni,
    })
}

/// Writes finished vCons in the conserver's layout.
pub struct RedisSink {
    /// The sink's name (log field).
    name: String,
    cfg: Arc<RedisConfig>,
    link: Link,
    /// SHA1 of [`SCRIPT`] as loaded on the current connection.
    sha: Option<String>,
    /// RedisJSON in use on the current connection (`None`: not probed yet).
    json: Option<bool>,
    /// The mode last logged at info (logged again only if it changes).
    logged_mode: Option<bool>,
}

impl RedisSink {
    /// Loads the script and settles the document mode on a (new) connection.
    async fn setup(&mut self, con: &mut MultiplexedConnection) -> Result<(), RedisError> {
        if self.json.is_none() {
            let (json, why) = match self.cfg.mode {
                DocMode::Plain => (false, "mode=plain".to_string()),
                DocMode::Auto | DocMode::Json => {
                    let probe: Result<Value, RedisError> = ::redis::cmd("JSON.TYPE")
                        .arg("vcontap:probe:redisjson")
                        .query_async(con)
                        .await;
                    match probe {
                        Ok(_) => (true, "the server has RedisJSON (JSON.TYPE answered)".into()),
                        Err(e) if is_reply(&e) => {
                            if self.cfg.mode == DocMode::Json {
                                return Err(RedisError::from((
                                    ::redis::ErrorKind::Client,
                                    "mode=json but the server has no RedisJSON",
                                    e.to_string(),
                                )));
                            }
                            (
                                false,
                                format!("no RedisJSON on the server (JSON.TYPE: {e})"),
                            )
                        }
                        Err(e) => return Err(e),
                    }
                }
            };
            if self.logged_mode != Some(json) {
                tracing::info!(
                    sink = %self.name,
                    mode = if json { "JSON.SET" } else { "SET" },
                    "redis sink: writing vcon:<uuid> documents with {}: {why}",
                    if json { "JSON.SET (RedisJSON)" } else { "plain SET strings" }
                );
                self.logged_mode = Some(json);
            }
            self.json = Some(json);
        }
        if self.sha.is_none() {
            let sha: String = ::redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(SCRIPT)
                .query_async(con)
                .await?;
            self.sha = Some(sha);
        }
        Ok(())
    }

    /// One attempt: pipeline the scripts of `ready` and read one reply per record.
    async fn attempt(
        &mut self,
        ready: &[(usize, Prepared)],
        batch: &[Arc<Record>],
    ) -> Result<Vec<Result<Value, RedisError>>, RedisError> {
        let (mut con, _) = self
            .link
            .get()
            .await
            .map_err(|e| RedisError::from((::redis::ErrorKind::Io, "connect", e.0)))?;
        self.setup(&mut con).await?;
        let sha = self.sha.clone().unwrap_or_default();
        let mode = if self.json == Some(true) {
            "json"
        } else {
            "plain"
        };
        let ttl = self.cfg.ttl.unwrap_or(0).to_string();
        let index_ttl = self.cfg.index_ttl.to_string();
        let dedup_ttl = self.cfg.dedup_ttl.to_string();
        let repush = if self.cfg.repush_updates { "1" } else { "0" };
        let ng = self.cfg.ingress.len().to_string();
        let mut pipe = ::redis::pipe();
        pipe.ignore_errors();
        for (i, p) in ready {
            let Some(rec) = batch.get(*i) else { continue };
            let c = pipe.cmd("EVALSHA").arg(&sha).arg(p.keys.len());
            for k in &p.keys {
                c.arg(k);
            }
            c.arg(rec.json.as_ref())
                .arg(mode)
                .arg(&ttl)
                .arg(p.score)
                .arg(&p.member)
                .arg(&p.uuid)
                .arg(&index_ttl)
                .arg(p.ni)
                .arg(&ng)
                .arg(rec.id.0)
                .arg(&dedup_ttl)
                .arg(repush);
        }
        pipe.query_async(&mut con).await
    }

    async fn deliver_batch(&mut self, batch: &[Arc<Record>]) -> Result<Vec<Outcome>, SinkError> {
        let mut out: Vec<Outcome> = Vec::with_capacity(batch.len());
        let mut ready: Vec<(usize, Prepared)> = Vec::with_capacity(batch.len());
        for (i, rec) in batch.iter().enumerate() {
            match prepare(&self.cfg, rec) {
                Ok(p) => {
                    ready.push((i, p));
                    out.push(Outcome::Delivered);
                }
                Err(why) => out.push(Outcome::Rejected(why)),
            }
        }
        if ready.is_empty() {
            return Ok(out);
        }
        // At most one immediate retry: after a cached connection turned out dead, or after
        // the server lost the script (SCRIPT FLUSH, restart): both are idempotent replays.
        let mut retried = false;
        loop {
            let had_connection = self.link.live.is_some();
            let replies = match self.attempt(&ready, batch).await {
                Ok(r) => r,
                Err(e) => {
                    let reply = is_reply(&e);
                    self.forget(reply);
                    if !reply && had_connection && !retried {
                        retried = true;
                        tracing::debug!("redis sink: connection lost ({e}); reconnecting once");
                        continue;
                    }
                    return Err(SinkError::new(format!("redis: {e}")));
                }
            };
            if replies.len() != ready.len() {
                self.forget(false);
                return Err(SinkError::new(format!(
                    "redis: {} replies for {} scripts",
                    replies.len(),
                    ready.len()
                )));
            }
            let mut noscript = false;
            for ((i, _), reply) in ready.iter().zip(replies) {
                let Err(e) = reply else { continue };
                if e.code() == Some("NOSCRIPT") {
                    noscript = true;
                } else if is_transient_reply(&e) {
                    // Re-probe the module too if a command vanished.
                    if is_unknown_command(&e.to_string()) {
                        self.json = None;
                    }
                    return Err(SinkError::new(format!("redis: {e}")));
                } else if let Some(o) = out.get_mut(*i) {
                    *o = Outcome::Rejected(format!("redis refused the write: {e}"));
                }
            }
            if noscript {
                self.sha = None;
                if !retried {
                    retried = true;
                    continue;
                }
                return Err(SinkError::new("redis: script cache lost twice in a row"));
            }
            return Ok(out);
        }
    }

    /// Drops per-connection state (and the connection unless the server merely replied
    /// with an error).
    fn forget(&mut self, keep_connection: bool) {
        if !keep_connection {
            self.link.reset();
            self.sha = None;
            self.json = None;
        }
    }
}

impl Sink for RedisSink {
    fn max_batch(&self) -> usize {
        self.cfg.batch
    }

    fn deliver<'a>(
        &'a mut self,
        batch: &'a [Arc<Record>],
    ) -> BoxFuture<'a, Result<Vec<Outcome>, SinkError>> {
        Box::pin(self.deliver_batch(batch))
    }

    fn close(&mut self) -> BoxFuture<'_, ()> {
        self.link.reset();
        Box::pin(async {})
    }
}

/// Publishes real-time events to a stream (`XADD … MAXLEN ~ n`) and/or a channel.
pub struct RedisEvents {
    cfg: Arc<RedisConfig>,
    link: Link,
}

impl RedisEvents {
    async fn publish_batch(&mut self, batch: &[Arc<VconEvent>]) -> Result<(), SinkError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut pipe = ::redis::pipe();
        for ev in batch {
            if let Some(stream) = &self.cfg.events_stream {
                pipe.cmd("XADD")
                    .arg(stream)
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(self.cfg.events_maxlen)
                    .arg("*")
                    .arg("uuid")
                    .arg(&*ev.uuid)
                    .arg("seq")
                    .arg(ev.seq)
                    .arg("kind")
                    .arg(ev.kind.as_str())
                    .arg("vcon")
                    .arg(&*ev.vcon_json)
                    .ignore();
            }
            if let Some(channel) = &self.cfg.events_channel {
                pipe.cmd("PUBLISH")
                    .arg(channel)
                    .arg(ev.to_json_line())
                    .ignore();
            }
        }
        let mut retried = false;
        loop {
            let (mut con, fresh) = self.link.get().await?;
            match pipe.query_async::<()>(&mut con).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    if !is_reply(&e) {
                        self.link.reset();
                        if !fresh && !retried {
                            retried = true;
                            continue;
                        }
                    }
                    return Err(SinkError::new(format!("redis events: {e}")));
                }
            }
        }
    }
}

impl EventSink for RedisEvents {
    fn publish<'a>(
        &'a mut self,
        batch: &'a [Arc<VconEvent>],
    ) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(self.publish_batch(batch))
    }
}

/// Errors of the read-back helpers.
#[derive(Debug, thiserror::Error)]
#[error("redis read-back: {0}")]
pub struct ReadError(String);

async fn connect(url: &str) -> Result<MultiplexedConnection, ReadError> {
    ensure_crypto_provider();
    let client = Client::open(url).map_err(|e| ReadError(e.to_string()))?;
    client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| ReadError(e.to_string()))
}

/// The store's view for end-to-end tests: the uuids in a sorted set (oldest first by
/// `created_at`), with the `vcon:` prefix removed. `url` is a plain `redis://` URL
/// without options.
pub async fn stored_uuids(url: &str, sorted_set: &str) -> Result<Vec<String>, ReadError> {
    let mut con = connect(url).await?;
    let members: Vec<String> = ::redis::cmd("ZRANGE")
        .arg(sorted_set)
        .arg(0)
        .arg(-1)
        .query_async(&mut con)
        .await
        .map_err(|e| ReadError(e.to_string()))?;
    Ok(members
        .into_iter()
        .map(|m| m.strip_prefix("vcon:").map(String::from).unwrap_or(m))
        .collect())
}

/// The document stored at `vcon:<uuid>`: the exact bytes in plain mode, RedisJSON's
/// serialization in JSON mode; `None` if the key does not exist.
pub async fn stored_document(url: &str, uuid: &str) -> Result<Option<Vec<u8>>, ReadError> {
    let mut con = connect(url).await?;
    let key = format!("vcon:{uuid}");
    let plain: Result<Value, RedisError> =
        ::redis::cmd("GET").arg(&key).query_async(&mut con).await;
    match plain {
        Ok(Value::Nil) => Ok(None),
        Ok(Value::BulkString(b)) => Ok(Some(b)),
        Ok(Value::SimpleString(s)) => Ok(Some(s.into_bytes())),
        Ok(other) => Err(ReadError(format!("GET {key}: unexpected reply {other:?}"))),
        // (Redis says `WRONGTYPE …`; fakeredis says `ERR WRONGTYPE …`.)
        Err(e) if e.to_string().contains("WRONGTYPE") => {
            let doc: Option<String> = ::redis::cmd("JSON.GET")
                .arg(&key)
                .arg("$")
                .query_async(&mut con)
                .await
                .map_err(|e| ReadError(e.to_string()))?;
            let Some(doc) = doc else { return Ok(None) };
            // `JSON.GET key $` wraps the root in an array.
            let v: serde_json::Value =
                serde_json::from_str(&doc).map_err(|e| ReadError(e.to_string()))?;
            let root = v.get(0).cloned().unwrap_or(v);
            serde_json::to_vec(&root)
                .map(Some)
                .map_err(|e| ReadError(e.to_string()))
        }
        Err(e) => Err(ReadError(e.to_string())),
    }
}

/// The uuids on a list (an ingress list), head first.
pub async fn list_uuids(url: &str, list: &str) -> Result<Vec<String>, ReadError> {
    let mut con = connect(url).await?;
    ::redis::cmd("LRANGE")
        .arg(list)
        .arg(0)
        .arg(-1)
        .query_async(&mut con)
        .await
        .map_err(|e| ReadError(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::RecordId;
    use bytes::Bytes;

    fn cfg(ingress: &[&str]) -> RedisConfig {
        RedisConfig {
            ingress: ingress.iter().map(|s| s.to_string()).collect(),
            ttl: None,
            sorted_set: "vcons".into(),
            index: true,
            index_ttl: 86_400,
            dedup_ttl: 60,
            repush_updates: false,
            mode: DocMode::Auto,
            batch: 10,
            timeout: Duration::from_secs(1),
            store: true,
            events_stream: None,
            events_maxlen: 10,
            events_channel: None,
        }
    }

    fn rec(uuid: &str, json: &str) -> Record {
        Record {
            id: RecordId(7),
            uuid: uuid.into(),
            json: Bytes::from(json.to_string()),
            spooled_unix_ms: 0,
        }
    }

    const U: &str = "018f0000-0000-8000-8000-0000000000aa";

    #[test]
    fn keys_and_score() {
        let j = format!(
            r#"{{"uuid":"{U}","created_at":"2026-01-01T00:00:00.900Z","parties":[{{"tel":"+15551234567","name":"Bob"}},{{"mailto":"a@b"}},null,7,{{"tel":123}},{{"name":"Bob"}},{{"tel":""}}]}}"#
        );
        let p = prepare(&cfg(&["in"]), &rec(U, &j)).unwrap();
        assert_eq!(p.score, 1_767_225_600);
        assert_eq!(p.member, format!("vcon:{U}"));
        assert_eq!(
            p.keys,
            vec![
                format!("vcon:{U}"),
                "vcons".into(),
                "tel:+15551234567".into(),
                "name:Bob".into(),
                "mailto:a@b".into(),
                "in".into(),
                format!("vcontap:pushed:in:{U}"),
            ]
        );
        assert_eq!(p.ni, 3);
    }

    #[test]
    fn rejections() {
        let c = cfg(&[]);
        let cases = [
            (U, "[1,2]".to_string(), "not a JSON object"),
            (
                U,
                format!(r#"["{U}","2026-01-01T00:00:00Z"]"#),
                "not a JSON object",
            ),
            (U, r#"{"uuid":1,"created_at":"x"}"#.into(), "string uuid"),
            (U, format!(r#"{{"uuid":"{U}"}}"#), "created_at"),
            (
                "x",
                r#"{"uuid":"x","created_at":"2026-01-01T00:00:00Z"}"#.into(),
                "RFC 4122",
            ),
            (
                U,
                format!(r#"{{"uuid":"{U}","created_at":"soon"}}"#),
                "RFC 3339",
            ),
            (
                "018f0000-0000-8000-8000-0000000000bb",
                format!(r#"{{"uuid":"{U}","created_at":"2026-01-01T00:00:00Z"}}"#),
                "differs",
            ),
            (U, "{".into(), "string uuid"),
        ];
        for (u, j, want) in cases {
            let e = prepare(&c, &rec(u, &j)).err().unwrap();
            assert!(e.contains(want), "{j}: {e}");
        }
    }

    #[test]
    fn options() {
        let b =
            build(SinkSpec::parse("redis://127.0.0.1:6379/0?ingress=a,b&ttl=5").unwrap()).unwrap();
        assert!(b.sink.is_some() && b.events.is_none());
        let b = build(
            SinkSpec::parse("redis://127.0.0.1:6379/0?store=false&events_channel=c").unwrap(),
        )
        .unwrap();
        assert!(b.sink.is_none() && b.events.is_some());
        for bad in [
            "redis://127.0.0.1:6379/0?ingres=a",
            "redis://127.0.0.1:6379/0?mode=xml",
            "redis://127.0.0.1:6379/db",
            "redis://127.0.0.1:6379/0?store=false",
            "redis://127.0.0.1:6379/0?sorted_set=",
            "redis://127.0.0.1:6379/0?batch=0",
            "redis://127.0.0.1:6379/0?password=env:VCONTAP_TEST_UNSET_REDIS_PW",
        ] {
            assert!(build(SinkSpec::parse(bad).unwrap()).is_err(), "{bad}");
        }
        assert!(build(SinkSpec::parse("rediss://h.example:6380/1?password=x").unwrap()).is_ok());
    }
}
