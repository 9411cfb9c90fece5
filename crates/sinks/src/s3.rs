//! S3-compatible object storage, twice over: the `s3://` [`Sink`] for finished vCons, and
//! [`S3Media`], a [`MediaStore`] that uploads recordings so the vCon's `dialog[].url` points
//! at the bucket.
//!
//! ```text
//! --sink 's3://BUCKET/PREFIX?endpoint=http://127.0.0.1:9000&region=us-east-1'
//!   PREFIX/YYYY/MM/DD/<uuid>.vcon.json   the vCon (created_at, UTC), application/vcon+json
//!   PREFIX/lookup/<uuid>.txt             with lookup=true: "YYYY/MM/DD" (the conserver's pointer)
//! --media-store 's3://BUCKET/PREFIX?...' (wired by the CLI, built by S3Media::from_spec)
//!   PREFIX/media/<uuid>-NNN.wav          each recording segment, audio/x-wav
//! ```
//!
//! The pointer's body is the date path, as the conserver's `storage.s3` writes it (its
//! `get()` joins it with `<uuid>.vcon`; vcon-server b9b0381), so with `extension=vcon` the
//! conserver can read what vcontap stored. See `docs/sinks/s3.md` for every option.
//!
//! **Writes are idempotent**: a PUT of the same key replaces the object, so a re-delivered
//! vCon (or an updated one) leaves exactly one object. When a batch holds several versions of
//! one uuid only the last (spool order) is written, so parallel PUTs can never let an older
//! version win.
//!
//! **Failures are transient.** Every error the store answers is `Err(SinkError)`, 4xx
//! included: for a PUT of a well-formed key, 401/403 (credentials, policy), 404 `NoSuchBucket`,
//! 400 (wrong region, signature) and 301 (endpoint) are about the configuration, identical
//! for every record, and dead-lettering would throw away every vCon while an operator fixes a
//! bucket policy. They are retried with backoff and open the breaker, the vCons stay in the
//! spool. What the store can never accept is refused before any request
//! ([`Outcome::Rejected`]): a uuid that is not an RFC 4122 uuid (it is a key component), a
//! body that is not a vCon JSON object, a `created_at` that is not RFC 3339.
//!
//! **Recordings** ([`S3Media`]) are first written by [`LocalFiles`] into a spill directory
//! (same WAV writer, same `content_hash` code, so both stores hash the exact same way), then
//! uploaded by [`FinishedSegment::complete`] on the pipeline's hasher thread, which is a plain
//! thread: the upload runs as a task on the tokio runtime handed to the constructor and the
//! hasher thread waits for it. The returned `url` is known before the `segment` event: a
//! public URL (`public_base_url` + key), a presigned GET URL (`presign_seconds`, at most 7
//! days as SigV4 allows), or `s3://BUCKET/KEY` (`presign_seconds=0`). Requests are retried a
//! few times with backoff (`retries`, default 3: about 4 s). If the upload still fails the
//! local file is kept and, by default (`on_failure=local`), the segment is stored with its
//! `file://` URL and the same `content_hash`, so the recording is never lost and can be
//! synced to the bucket later; `on_failure=fail` reports the segment failed instead (it is
//! then left out of the vCon; the local file is kept either way).
//!
//! Crates: `object_store` (the S3 client: SigV4, retries, multipart, presigning; far lighter
//! than the AWS SDK) with only `aws-base` + `ring`, because its `aws` feature forces
//! `aws-lc-rs` (a C build). It brings `reqwest`; we enable reqwest's rustls *without* a
//! provider and install rustls' `ring` provider as the process default (a no-op when one is
//! already installed), so HTTPS endpoints work with no C code. `futures-util` drives the
//! parallel PUTs of a batch.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{self, StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::signer::Signer;
use object_store::{
    Attribute, AttributeValue, Attributes, BackoffConfig, ClientOptions, ObjectStore,
    ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload, RetryConfig,
};
use vcontap_engine::StoredSegment;
use vcontap_pipeline::{FinishedSegment, LocalFiles, MediaStore, SegmentMeta, SegmentWriter};

use crate::record::Record;
use crate::sink::{BoxFuture, Built, Outcome, Sink, SinkError};
use crate::spec::{ConfigError, SinkSpec};

/// Media type of stored vCons.
pub const VCON_CONTENT_TYPE: &str = "application/vcon+json";

/// SigV4 presigned URLs live at most 7 days.
pub const MAX_PRESIGN_SECONDS: u64 = 7 * 24 * 3600;

/// Segments larger than this go up as multipart uploads (one PUT holds the whole file in
/// memory; 64 MiB is about 35 minutes of 8 kHz stereo).
pub const MULTIPART_THRESHOLD: u64 = 64 << 20;

/// Part size of multipart uploads (S3's minimum is 5 MiB; one part is in memory at a time).
pub const PART_SIZE: usize = 16 << 20;

/// Default number of PUTs in flight per batch (S3 latency is per request, not per byte).
pub const DEFAULT_CONCURRENCY: u64 = 16;

/// Options every `s3://` URL understands (connection and credentials).
const CONN_OPTIONS: [&str; 9] = [
    "endpoint",
    "region",
    "path_style",
    "access_key",
    "secret_key",
    "session_token",
    "timeout_ms",
    "allow_http",
    "insecure_tls",
];

/// Options only the vCon sink understands.
const SINK_OPTIONS: [&str; 3] = ["lookup", "extension", "concurrency"];

/// Options only the media store understands.
const MEDIA_OPTIONS: [&str; 5] = [
    "public_base_url",
    "presign_seconds",
    "keep_local",
    "on_failure",
    "retries",
];

/// Where and how to reach the bucket (parsed from the URL and its options).
#[derive(Clone)]
struct Conn {
    name: String,
    bucket: String,
    /// Key prefix without leading or trailing `/` (may be empty).
    prefix: String,
    endpoint: Option<String>,
    region: String,
    path_style: bool,
    allow_http: bool,
    /// Accept any server certificate (self-signed lab servers only).
    insecure_tls: bool,
    access_key: String,
    secret_key: String,
    session_token: Option<String>,
    timeout: Duration,
}

impl std::fmt::Debug for Conn {
    // Never prints the keys.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("path_style", &self.path_style)
            .finish_non_exhaustive()
    }
}

fn invalid(spec: &SinkSpec, why: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        sink: spec.name.clone(),
        why: why.into(),
    }
}

fn bad_option(spec: &SinkSpec, option: &str, why: impl Into<String>) -> ConfigError {
    ConfigError::Option {
        sink: spec.name.clone(),
        option: option.into(),
        why: why.into(),
    }
}

fn pct_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// Takes the connection options (and URL parts) out of a spec.
fn parse_conn(spec: &mut SinkSpec) -> Result<Conn, ConfigError> {
    if spec.scheme() != "s3" {
        return Err(invalid(spec, "an S3 store needs an s3://BUCKET/PREFIX URL"));
    }
    let bucket = spec.url.host_str().unwrap_or_default().to_string();
    let bucket_ok = (3..=255).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'_'));
    if !bucket_ok {
        return Err(invalid(
            spec,
            format!(
                "bucket `{}` is not a bucket name (3 to 255 of a-z 0-9 . - _)",
                bucket.escape_debug()
            ),
        ));
    }
    if spec.url.port().is_some() {
        return Err(invalid(
            spec,
            "s3://BUCKET/PREFIX takes no port: give the server as ?endpoint=http://host:port",
        ));
    }
    let prefix = pct_decode(spec.url.path().trim_matches('/'));
    if !prefix.is_empty() && Path::parse(&prefix).is_err() {
        return Err(invalid(
            spec,
            format!(
                "prefix `{}` is not a valid object key prefix",
                prefix.escape_debug()
            ),
        ));
    }
    if prefix.len() > 512 {
        return Err(invalid(spec, "prefix is longer than 512 bytes"));
    }
    let user = pct_decode(spec.url.username());
    let pass = spec.url.password().map(pct_decode);
    let endpoint = spec.options.take("endpoint")?;
    if let Some(e) = &endpoint {
        match url::Url::parse(e) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {}
            _ => {
                return Err(bad_option(
                    spec,
                    "endpoint",
                    "must be an http:// or https:// URL such as http://127.0.0.1:9000",
                ))
            }
        }
    }
    let region = spec
        .options
        .take("region")?
        .or_else(|| std::env::var("AWS_REGION").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "us-east-1".to_string());
    let path_style = spec.options.take_bool("path_style", true)?;
    let plain = endpoint
        .as_deref()
        .is_some_and(|e| e.starts_with("http://"));
    let allow_http = spec.options.take_bool("allow_http", plain)?;
    let insecure_tls = spec.options.take_bool("insecure_tls", false)?;
    let access_key = match spec.options.take("access_key")? {
        Some(k) => Some(k),
        None if !user.is_empty() => Some(user),
        None => std::env::var("AWS_ACCESS_KEY_ID").ok(),
    };
    let secret_key = match spec.options.take("secret_key")? {
        Some(k) => Some(k),
        None if pass.is_some() => pass,
        None => std::env::var("AWS_SECRET_ACCESS_KEY").ok(),
    };
    let session_token = spec
        .options
        .take("session_token")?
        .or_else(|| std::env::var("AWS_SESSION_TOKEN").ok())
        .filter(|s| !s.is_empty());
    let (Some(access_key), Some(secret_key)) = (
        access_key.filter(|s| !s.is_empty()),
        secret_key.filter(|s| !s.is_empty()),
    ) else {
        return Err(invalid(
            spec,
            "needs credentials: options access_key and secret_key (`env:VAR` works), \
             or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment",
        ));
    };
    let timeout =
        Duration::from_millis(spec.options.take_u64("timeout_ms", 30_000, 100..=600_000)?);
    Ok(Conn {
        name: spec.name.clone(),
        bucket,
        prefix,
        endpoint,
        region,
        path_style,
        allow_http,
        insecure_tls,
        access_key,
        secret_key,
        session_token,
        timeout,
    })
}

impl Conn {
    /// The client (no I/O: object_store connects on the first request).
    fn client(&self, retry: RetryConfig) -> Result<AmazonS3, ConfigError> {
        // reqwest is built with rustls but no provider: use ring (pure Rust + asm, no C
        // build). Err means a provider is already installed, which is just as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let opts = ClientOptions::new()
            .with_allow_http(self.allow_http)
            .with_allow_invalid_certificates(self.insecure_tls)
            .with_timeout(self.timeout)
            .with_connect_timeout(Duration::from_secs(5));
        let mut b = AmazonS3Builder::new()
            .with_bucket_name(&self.bucket)
            .with_region(&self.region)
            .with_access_key_id(&self.access_key)
            .with_secret_access_key(&self.secret_key)
            .with_virtual_hosted_style_request(!self.path_style)
            .with_client_options(opts)
            .with_retry(retry);
        if let Some(e) = &self.endpoint {
            b = b.with_endpoint(e.trim_end_matches('/'));
        }
        if let Some(t) = &self.session_token {
            b = b.with_token(t);
        }
        b.build().map_err(|e| ConfigError::Invalid {
            sink: self.name.clone(),
            why: format!("S3 client: {e}"),
        })
    }

    /// `PREFIX/rest` (or `rest` with no prefix).
    fn key(&self, rest: &str) -> String {
        if self.prefix.is_empty() {
            rest.to_string()
        } else {
            format!("{}/{rest}", self.prefix)
        }
    }
}

/// The sink's retry policy: one quick retry (a pooled connection the server closed), no
/// more; the delivery core owns backoff.
fn sink_retry() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(200),
            base: 2.0,
        },
        max_retries: 1,
        retry_timeout: Duration::from_secs(10),
    }
}

/// What the vCon sink writes, besides the connection.
#[derive(Debug, Clone)]
struct SinkCfg {
    conn: Conn,
    lookup: bool,
    /// `vcon.json` (default) or `vcon` (the conserver's own extension).
    extension: String,
    concurrency: usize,
}

/// Builds the `s3://BUCKET/PREFIX` sink. No network I/O.
pub fn build(mut spec: SinkSpec) -> Result<Built, ConfigError> {
    let conn = parse_conn(&mut spec)?;
    let lookup = spec.options.take_bool("lookup", false)?;
    let extension = spec
        .options
        .take("extension")?
        .unwrap_or_else(|| "vcon.json".into());
    if !matches!(extension.as_str(), "vcon.json" | "vcon" | "json") {
        return Err(bad_option(
            &spec,
            "extension",
            format!("`{extension}`: choose vcon.json (default), vcon (the conserver's) or json"),
        ));
    }
    let concurrency = spec
        .options
        .take_u64("concurrency", DEFAULT_CONCURRENCY, 1..=256)? as usize;
    spec.options
        .finish(&[CONN_OPTIONS.as_slice(), SINK_OPTIONS.as_slice()].concat())?;
    let store = conn.client(sink_retry())?;
    Ok(Built::durable(S3Sink {
        cfg: Arc::new(SinkCfg {
            conn,
            lookup,
            extension,
            concurrency,
        }),
        store: Arc::new(store),
    }))
}

/// Writes finished vCons as objects, dated by `created_at`.
pub struct S3Sink {
    cfg: Arc<SinkCfg>,
    store: Arc<AmazonS3>,
}

impl std::fmt::Debug for S3Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Sink").field("cfg", &self.cfg).finish()
    }
}

/// The keys one record is written under.
struct Planned {
    index: usize,
    uuid: Arc<str>,
    key: Path,
    /// `YYYY/MM/DD` (the lookup pointer's content).
    date: String,
}

/// Where a record goes (`PREFIX/YYYY/MM/DD/<uuid>.<ext>`, and its `YYYY/MM/DD`), or why it
/// can never be stored.
fn plan(cfg: &SinkCfg, rec: &Record) -> Result<(Path, String), String> {
    if !is_uuid(&rec.uuid) {
        return Err(format!(
            "uuid `{}` is not an RFC 4122 uuid; refusing it as an object key",
            rec.uuid.escape_debug()
        ));
    }
    let head = rec
        .head()
        .map_err(|e| format!("not a vCon JSON object: {e}"))?;
    let (y, m, d) = head.created_ymd().ok_or_else(|| {
        format!(
            "created_at `{}` is not RFC 3339",
            head.created_at.escape_debug()
        )
    })?;
    let date = format!("{y:04}/{m:02}/{d:02}");
    let key = cfg
        .conn
        .key(&format!("{date}/{}.{}", rec.uuid, cfg.extension));
    let key = Path::parse(&key).map_err(|e| format!("object key `{key}`: {e}"))?;
    Ok((key, date))
}

/// `8-4-4-4-12` hex digits.
pub fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

fn content_type(content_type: &'static str) -> Attributes {
    let mut attributes = Attributes::new();
    attributes.insert(Attribute::ContentType, AttributeValue::from(content_type));
    attributes
}

fn put_opts(ct: &'static str) -> PutOptions {
    PutOptions::from(content_type(ct))
}

fn store_err(what: &str, key: &Path, e: object_store::Error) -> SinkError {
    SinkError::new(format!("S3 {what} {key}: {e}"))
}

async fn put_vcon(
    store: Arc<AmazonS3>,
    cfg: Arc<SinkCfg>,
    p: Planned,
    body: Bytes,
) -> Result<(), SinkError> {
    store
        .put_opts(&p.key, PutPayload::from(body), put_opts(VCON_CONTENT_TYPE))
        .await
        .map_err(|e| store_err("PUT", &p.key, e))?;
    if cfg.lookup {
        // After the vCon: a pointer never names an object that is not there yet.
        let lk = Path::parse(cfg.conn.key(&format!("lookup/{}.txt", p.uuid)))
            .map_err(|e| SinkError::new(format!("lookup key: {e}")))?;
        store
            .put_opts(
                &lk,
                PutPayload::from(Bytes::from(p.date.clone())),
                put_opts("text/plain"),
            )
            .await
            .map_err(|e| store_err("PUT", &lk, e))?;
    }
    Ok(())
}

impl Sink for S3Sink {
    fn max_batch(&self) -> usize {
        128
    }

    fn deliver<'a>(
        &'a mut self,
        batch: &'a [Arc<Record>],
    ) -> BoxFuture<'a, Result<Vec<Outcome>, SinkError>> {
        Box::pin(async move {
            let cfg = self.cfg.as_ref();
            let mut out = vec![Outcome::Delivered; batch.len()];
            let mut planned: Vec<Planned> = Vec::with_capacity(batch.len());
            // The last storable version of each uuid in the batch (spool order): earlier
            // ones are superseded, and writing them in parallel could let one win.
            let mut last: HashMap<&str, usize> = HashMap::new();
            for (index, rec) in batch.iter().enumerate() {
                match plan(cfg, rec) {
                    Ok((key, date)) => {
                        last.insert(&rec.uuid, planned.len());
                        planned.push(Planned {
                            index,
                            uuid: rec.uuid.clone(),
                            key,
                            date,
                        });
                    }
                    Err(why) => {
                        if let Some(o) = out.get_mut(index) {
                            *o = Outcome::Rejected(why);
                        }
                    }
                }
            }
            let mut jobs = Vec::with_capacity(last.len());
            for (i, p) in planned.into_iter().enumerate() {
                let Some(rec) = batch.get(p.index) else {
                    continue;
                };
                if last.get(&*rec.uuid) == Some(&i) {
                    let body = rec.json.clone();
                    jobs.push(put_vcon(self.store.clone(), self.cfg.clone(), p, body));
                }
            }
            let started = std::time::Instant::now();
            let n: usize = stream::iter(jobs)
                .buffer_unordered(cfg.concurrency)
                .try_fold(0usize, |n, ()| async move { Ok(n + 1) })
                .await?;
            tracing::debug!(
                objects = n,
                records = batch.len(),
                ms = started.elapsed().as_millis() as u64,
                "S3 batch written."
            );
            Ok(out)
        })
    }
}

/// A read-only view of what an `s3://` sink stored, for tests and tools (the same URL and
/// options as the sink; media options are accepted and ignored).
pub struct S3View {
    conn: Conn,
    store: AmazonS3,
}

impl std::fmt::Debug for S3View {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3View").field("conn", &self.conn).finish()
    }
}

impl S3View {
    /// Opens the view of `s3://BUCKET/PREFIX?options` (no I/O).
    pub fn from_url(url: &str) -> Result<Self, ConfigError> {
        let mut spec = SinkSpec::parse(url)?;
        let conn = parse_conn(&mut spec)?;
        // Accept (and ignore) the sink's and the media store's own options.
        for k in SINK_OPTIONS.iter().chain(MEDIA_OPTIONS.iter()) {
            let _ = spec.options.take_all(k);
        }
        spec.options.finish(
            &[
                CONN_OPTIONS.as_slice(),
                SINK_OPTIONS.as_slice(),
                MEDIA_OPTIONS.as_slice(),
            ]
            .concat(),
        )?;
        let store = conn.client(sink_retry())?;
        Ok(S3View { conn, store })
    }

    /// How many key segments the prefix has.
    fn prefix_depth(&self) -> usize {
        match self.conn.prefix.as_str() {
            "" => 0,
            p => p.split('/').count(),
        }
    }

    /// Every key under `PREFIX/sub` (all of `PREFIX` when `sub` is empty), sorted.
    pub async fn keys(&self, sub: &str) -> Result<Vec<String>, SinkError> {
        let base = self.conn.key(sub.trim_matches('/'));
        let prefix = if base.is_empty() {
            None
        } else {
            Some(Path::parse(&base).map_err(|e| SinkError::new(format!("prefix {base}: {e}")))?)
        };
        let mut keys: Vec<String> = self
            .store
            .list(prefix.as_ref())
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await
            .map_err(|e| SinkError::new(format!("S3 LIST {base}: {e}")))?;
        keys.sort();
        Ok(keys)
    }

    /// The uuids of the stored vCons (`PREFIX/YYYY/MM/DD/<uuid>.<ext>`, the pointers and
    /// media excluded), sorted; a uuid appears once per object (twice only if two versions
    /// carried different `created_at` days).
    pub async fn stored_uuids(&self) -> Result<Vec<String>, SinkError> {
        let skip = self.prefix_depth();
        let mut out: Vec<String> = self
            .keys("")
            .await?
            .iter()
            .filter_map(|k| {
                let parts: Vec<&str> = k.split('/').skip(skip).collect();
                let [y, m, d, file] = parts.as_slice() else {
                    return None;
                };
                let dated = y.len() == 4 && m.len() == 2 && d.len() == 2;
                let uuid = file.split('.').next().unwrap_or_default();
                let vcon = [".vcon.json", ".vcon", ".json"]
                    .iter()
                    .any(|ext| file.len() == 36 + ext.len() && file.ends_with(ext));
                (dated && vcon && is_uuid(uuid)).then(|| uuid.to_string())
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// The bytes of the object at the full key `key`.
    pub async fn get(&self, key: &str) -> Result<Bytes, SinkError> {
        let p = Path::parse(key).map_err(|e| SinkError::new(format!("key {key}: {e}")))?;
        let r = self
            .store
            .get(&p)
            .await
            .map_err(|e| store_err("GET", &p, e))?;
        r.bytes().await.map_err(|e| store_err("GET", &p, e))
    }

    /// The stored vCon of `uuid`, found through any dated key (None if absent).
    pub async fn get_vcon(&self, uuid: &str) -> Result<Option<Bytes>, SinkError> {
        let keys = self.keys("").await?;
        let skip = self.prefix_depth();
        let hit = keys.iter().find(|k| {
            let parts: Vec<&str> = k.split('/').skip(skip).collect();
            parts.len() == 4
                && parts
                    .last()
                    .is_some_and(|f| f.split('.').next() == Some(uuid))
        });
        match hit {
            Some(k) => self.get(k).await.map(Some),
            None => Ok(None),
        }
    }

    /// The `(key, content-type)` of an object (metadata only).
    pub async fn content_type(&self, key: &str) -> Result<Option<String>, SinkError> {
        let p = Path::parse(key).map_err(|e| SinkError::new(format!("key {key}: {e}")))?;
        let r = self
            .store
            .get(&p)
            .await
            .map_err(|e| store_err("GET", &p, e))?;
        Ok(r.attributes
            .get(&Attribute::ContentType)
            .map(|v| v.as_ref().to_string()))
    }
}

/// The uuids of the vCons an `s3://` sink with this URL stored (one entry per object),
/// for end-to-end tests: `stored_uuids("s3://b/p?endpoint=http://127.0.0.1:9000&…")`.
pub async fn stored_uuids(url: &str) -> Result<Vec<String>, SinkError> {
    let view = S3View::from_url(url).map_err(|e| SinkError::new(e.to_string()))?;
    view.stored_uuids().await
}

// ---------------------------------------------------------------------------------------
// Recordings

/// What a segment's `url` is.
#[derive(Debug, Clone)]
enum UrlMode {
    /// `public_base_url/KEY`.
    Public(String),
    /// A presigned GET URL valid this long.
    Presign(Duration),
    /// `s3://BUCKET/KEY`.
    S3Uri,
}

/// What to do when an upload failed after its retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnFailure {
    /// Keep the local file and store the segment with its `file://` URL.
    Local,
    /// Report the segment failed (left out of the vCon); the local file is kept.
    Fail,
}

struct MediaInner {
    conn: Conn,
    store: Arc<AmazonS3>,
    spill: PathBuf,
    url: UrlMode,
    keep_local: bool,
    on_failure: OnFailure,
    handle: tokio::runtime::Handle,
    multipart_threshold: u64,
    part_size: usize,
}

/// Recordings in S3-compatible storage: WAV segments written to a local spill directory
/// (by [`LocalFiles`]), uploaded to `PREFIX/media/<uuid>-NNN.wav` when they close.
///
/// ```no_run
/// # fn f(rt: &tokio::runtime::Runtime) -> Result<(), vcontap_sinks::ConfigError> {
/// use vcontap_sinks::{s3::S3Media, SinkSpec};
/// let spec = SinkSpec::parse("s3://rec/vcontap?endpoint=http://127.0.0.1:9000&presign_seconds=86400")?;
/// let media = S3Media::from_spec(spec, "/var/spool/vcontap/media".as_ref(), rt.handle().clone())?;
/// // Arc::new(media) as Arc<dyn vcontap_pipeline::MediaStore>
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct S3Media {
    local: LocalFiles,
    inner: Arc<MediaInner>,
}

impl std::fmt::Debug for S3Media {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Media")
            .field("conn", &self.inner.conn)
            .field("spill", &self.inner.spill)
            .field("url", &self.inner.url)
            .finish_non_exhaustive()
    }
}

impl S3Media {
    /// A media store from `s3://BUCKET/PREFIX?options` (see the module docs), spilling into
    /// `spill_dir` (created now), uploading on `handle`'s runtime. No network I/O.
    pub fn from_spec(
        mut spec: SinkSpec,
        spill_dir: &FsPath,
        handle: tokio::runtime::Handle,
    ) -> Result<Self, ConfigError> {
        let conn = parse_conn(&mut spec)?;
        let public = spec.options.take("public_base_url")?;
        let presign = spec.options.take_u64(
            "presign_seconds",
            MAX_PRESIGN_SECONDS,
            0..=MAX_PRESIGN_SECONDS,
        )?;
        let keep_local = spec.options.take_bool("keep_local", false)?;
        let on_failure = match spec.options.take("on_failure")?.as_deref() {
            None | Some("local") => OnFailure::Local,
            Some("fail") => OnFailure::Fail,
            Some(v) => {
                return Err(bad_option(
                    &spec,
                    "on_failure",
                    format!("`{v}`: choose local (default) or fail"),
                ))
            }
        };
        let retries = spec.options.take_u64("retries", 3, 0..=10)? as usize;
        let url = match public {
            Some(b) => match url::Url::parse(&b) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => {
                    UrlMode::Public(b.trim_end_matches('/').to_string())
                }
                _ => {
                    return Err(bad_option(
                        &spec,
                        "public_base_url",
                        "must be an http:// or https:// URL",
                    ))
                }
            },
            None if presign == 0 => UrlMode::S3Uri,
            None => UrlMode::Presign(Duration::from_secs(presign)),
        };
        let name = spec.name.clone();
        spec.options
            .finish(&[CONN_OPTIONS.as_slice(), MEDIA_OPTIONS.as_slice()].concat())?;
        // Bounded retries with backoff on the hasher thread: 0.5 + 1 + 2 s for 3 retries.
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(500),
                max_backoff: Duration::from_secs(4),
                base: 2.0,
            },
            max_retries: retries,
            retry_timeout: Duration::from_secs(60),
        };
        let store = conn.client(retry)?;
        let local = LocalFiles::new(spill_dir, None).map_err(|e| ConfigError::Invalid {
            sink: name,
            why: format!("spill directory: {e}"),
        })?;
        Ok(S3Media {
            inner: Arc::new(MediaInner {
                conn,
                store: Arc::new(store),
                spill: local.dir().to_path_buf(),
                url,
                keep_local,
                on_failure,
                handle,
                multipart_threshold: MULTIPART_THRESHOLD,
                part_size: PART_SIZE,
            }),
            local,
        })
    }

    /// [`S3Media::from_spec`] from a URL string.
    pub fn from_url(
        url: &str,
        spill_dir: &FsPath,
        handle: tokio::runtime::Handle,
    ) -> Result<Self, ConfigError> {
        Self::from_spec(SinkSpec::parse(url)?, spill_dir, handle)
    }

    /// Segments larger than `threshold` bytes go up as multipart uploads of `part_size`
    /// bytes (defaults 64 MiB and 16 MiB; S3 wants parts of at least 5 MiB).
    pub fn with_multipart(mut self, threshold: u64, part_size: usize) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.multipart_threshold = threshold;
            inner.part_size = part_size.max(5 << 20);
        }
        self
    }

    /// The spill directory (absolute).
    pub fn spill_dir(&self) -> &FsPath {
        &self.inner.spill
    }

    /// The object key of a segment file name (`PREFIX/media/<file>`).
    pub fn key_for(&self, filename: &str) -> String {
        self.inner.conn.key(&format!("media/{filename}"))
    }
}

impl MediaStore for S3Media {
    fn open(&self, meta: &SegmentMeta) -> std::io::Result<Box<dyn SegmentWriter>> {
        Ok(Box::new(S3Segment {
            local: self.local.open(meta)?,
            inner: self.inner.clone(),
        }))
    }
}

struct S3Segment {
    local: Box<dyn SegmentWriter>,
    inner: Arc<MediaInner>,
}

impl SegmentWriter for S3Segment {
    fn write(&mut self, samples: &[i16]) -> std::io::Result<()> {
        self.local.write(samples)
    }

    fn finish(self: Box<Self>) -> std::io::Result<Box<dyn FinishedSegment>> {
        Ok(Box::new(S3Finished {
            local: self.local.finish()?,
            inner: self.inner,
        }))
    }
}

struct S3Finished {
    local: Box<dyn FinishedSegment>,
    inner: Arc<MediaInner>,
}

impl FinishedSegment for S3Finished {
    fn complete(self: Box<Self>) -> std::io::Result<StoredSegment> {
        // Hash exactly as the local store does (same code, same bytes).
        let stored = self.local.complete()?;
        let inner = self.inner;
        let path = inner.spill.join(&stored.filename);
        let key = inner.conn.key(&format!("media/{}", stored.filename));
        let started = std::time::Instant::now();
        match inner.upload(&path, &key) {
            Ok(url) => {
                tracing::debug!(
                    key = %key,
                    ms = started.elapsed().as_millis() as u64,
                    "Recording segment uploaded."
                );
                if !inner.keep_local {
                    if let Err(e) = std::fs::remove_file(&path) {
                        tracing::warn!(error = %e, file = %path.display(), "Cannot remove an uploaded recording from the spill directory.");
                    }
                }
                Ok(StoredSegment { url, ..stored })
            }
            Err(e) => match inner.on_failure {
                OnFailure::Local => {
                    tracing::warn!(error = %e, file = %path.display(), "Cannot upload a recording segment; the vCon points at the local file.");
                    Ok(stored)
                }
                OnFailure::Fail => Err(std::io::Error::other(format!(
                    "uploading {} to S3 (kept at {}): {e}",
                    stored.filename,
                    path.display()
                ))),
            },
        }
    }
}

impl MediaInner {
    /// Runs `fut` on the runtime and waits for it on this (plain) thread. `spawn` + a std
    /// channel works on any runtime flavour and never panics, unlike `Handle::block_on`
    /// inside a runtime.
    fn run<T: Send + 'static>(
        &self,
        fut: impl std::future::Future<Output = Result<T, String>> + Send + 'static,
    ) -> Result<T, String> {
        // Waiting on the only thread of a current-thread runtime would never wake up.
        if let Ok(h) = tokio::runtime::Handle::try_current() {
            if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread {
                return Err(
                    "S3Media cannot upload from inside a current-thread tokio runtime \
                     (complete() runs on the pipeline's hasher thread)"
                        .into(),
                );
            }
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv()
            .map_err(|_| "the tokio runtime stopped during the upload".to_string())?
    }

    /// Uploads the closed file and returns the URL the vCon gets.
    fn upload(&self, file: &FsPath, key: &str) -> Result<String, String> {
        let p = Path::parse(key).map_err(|e| format!("object key {key}: {e}"))?;
        let size = std::fs::metadata(file)
            .map_err(|e| format!("{}: {e}", file.display()))?
            .len();
        let store = self.store.clone();
        if size <= self.multipart_threshold {
            let body = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
            let (s, p2) = (store.clone(), p.clone());
            self.run(async move {
                s.put_opts(&p2, PutPayload::from(body), put_opts("audio/x-wav"))
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })?;
        } else {
            self.upload_multipart(file, &p)?;
        }
        match &self.url {
            UrlMode::Public(base) => Ok(format!("{base}/{key}")),
            UrlMode::S3Uri => Ok(format!("s3://{}/{key}", self.conn.bucket)),
            UrlMode::Presign(ttl) => {
                let ttl = *ttl;
                self.run(async move {
                    store
                        .signed_url(reqwest::Method::GET, &p, ttl)
                        .await
                        .map(|u| u.to_string())
                        .map_err(|e| format!("presigning: {e}"))
                })
            }
        }
    }

    /// A multipart upload: parts read here (the hasher thread), sent on the runtime.
    fn upload_multipart(&self, file: &FsPath, p: &Path) -> Result<(), String> {
        let (s, p2) = (self.store.clone(), p.clone());
        let mut up = self.run(async move {
            s.put_multipart_opts(&p2, PutMultipartOptions::from(content_type("audio/x-wav")))
                .await
                .map_err(|e| e.to_string())
        })?;
        let mut f = std::fs::File::open(file).map_err(|e| format!("{}: {e}", file.display()))?;
        let res = (|| -> Result<(), String> {
            loop {
                let mut buf = Vec::with_capacity(self.part_size);
                (&mut f)
                    .take(self.part_size as u64)
                    .read_to_end(&mut buf)
                    .map_err(|e| format!("{}: {e}", file.display()))?;
                if buf.is_empty() {
                    return Ok(());
                }
                let part = up.put_part(PutPayload::from(buf));
                self.run(async move { part.await.map_err(|e| e.to_string()) })?;
            }
        })();
        let (up, res) = self.run(async move {
            let r = match res {
                Ok(()) => up.complete().await.map(|_| ()).map_err(|e| e.to_string()),
                Err(e) => Err(e),
            };
            Ok((up, r))
        })?;
        if res.is_err() {
            let mut up = up;
            let _ = self.run(async move { up.abort().await.map_err(|e| e.to_string()) });
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::RecordId;

    fn spec(url: &str) -> SinkSpec {
        SinkSpec::parse(url).unwrap()
    }

    #[test]
    fn options_and_credentials() {
        let ok = "s3://bucket/a/b?endpoint=http://127.0.0.1:9000&access_key=K&secret_key=S";
        assert!(build(spec(ok)).is_ok());
        let mut s = spec(ok);
        let c = parse_conn(&mut s).unwrap();
        assert_eq!((c.bucket.as_str(), c.prefix.as_str()), ("bucket", "a/b"));
        assert!(c.allow_http && c.path_style);
        assert_eq!(
            c.region,
            std::env::var("AWS_REGION").unwrap_or("us-east-1".into())
        );
        assert!(!format!("{c:?}").contains("\"S\""));
        // Credentials in the URL's user info.
        let mut s = spec("s3://K:S@bucket/?endpoint=https://s3.example");
        let c = parse_conn(&mut s).unwrap();
        assert_eq!((c.access_key.as_str(), c.secret_key.as_str()), ("K", "S"));
        assert!(!c.allow_http && c.prefix.is_empty());
        assert_eq!(c.key("x"), "x");
        for bad in [
            "s3://bucket/p?endpoint=ftp://h&access_key=K&secret_key=S",
            "s3://b/p?access_key=K&secret_key=S",
            "s3://bucket:9000/p?access_key=K&secret_key=S",
            "s3://bucket/p?access_key=K&secret_key=S&lookups=true",
            "s3://bucket/p?access_key=K&secret_key=S&extension=xml",
            "s3://bucket/a//b?access_key=K&secret_key=S",
            "s3://bucket/p?access_key=K&secret_key=env:VCONTAP_TEST_UNSET_S3",
        ] {
            assert!(build(spec(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_and_rejections() {
        let mut s = spec("s3://bucket/pre/fix?access_key=K&secret_key=S");
        let cfg = SinkCfg {
            conn: parse_conn(&mut s).unwrap(),
            lookup: true,
            extension: "vcon.json".into(),
            concurrency: 1,
        };
        let rec = |uuid: &str, created: &str| Record {
            id: RecordId(1),
            uuid: uuid.into(),
            json: Bytes::from(format!(
                r#"{{"vcon":"0.4.0","uuid":"{uuid}","created_at":"{created}"}}"#
            )),
            spooled_unix_ms: 0,
        };
        let u = "018f0000-0000-8000-8000-00000000000a";
        let (k, d) = plan(&cfg, &rec(u, "2026-11-29T23:30:00-02:00")).unwrap();
        assert_eq!(k.as_ref(), format!("pre/fix/2026/11/30/{u}.vcon.json"));
        assert_eq!(d, "2026/11/30");
        assert!(plan(&cfg, &rec("../x", "2026-11-29T00:00:00Z")).is_err());
        assert!(plan(&cfg, &rec(u, "soon")).is_err());
        let mut junk = rec(u, "x");
        junk.json = Bytes::from_static(b"[1,2");
        assert!(plan(&cfg, &junk).unwrap_err().contains("not a vCon"));
    }
}
