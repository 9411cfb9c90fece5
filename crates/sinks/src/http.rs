//! The HTTP sinks: the vcon-dev **conserver**'s ingest API (`conserver+http(s)://`) and
//! signed **webhooks** (`webhook+http(s)://`). Both POST the spooled bytes of each finished
//! vCon unchanged (so a receiver's hash or HMAC covers exactly what vcontap fsynced) and
//! classify the answer (docs/sinks/http.md has the table):
//!
//! - 2xx: delivered.
//! - 400/410/413/415/422 and other 4xx: the receiver refused this vCon for good:
//!   [`Outcome::Rejected`] with the status and a short excerpt of the answer.
//! - 401/403 (credentials), 404 (wrong path), 3xx (redirects are not followed): the *sink*
//!   is misconfigured, not the vCon: a transient `Err` with a message that says what to fix,
//!   so nothing is dead-lettered while the operator corrects the config.
//! - 408/409/425/429, 5xx, connection errors and timeouts: transient `Err`.
//!
//! ```text
//! --sink 'conserver+http://127.0.0.1:8000/api?ingress=default&token=env:CONSERVER_TOKEN'
//!   POST http://127.0.0.1:8000/api/vcon?ingress_lists=default
//!        x-conserver-api-token: …   Content-Type: application/vcon+json
//! --sink 'webhook+https://hooks.example.com/vcon?secret=env:HOOK_SECRET'
//!   POST https://hooks.example.com/vcon
//!        Idempotency-Key: <uuid>   X-Hub-Signature-256: sha256=<hex>   X-Vcontap-Timestamp: <s>
//! ```
//!
//! Optional real-time paths ([`EventSink`]): `interim=true` on a conserver sink POSTs the
//! `updated`/`segment` snapshots *without* ingress lists (store and index only, last writer
//! wins; the finished vCon goes through the durable path), `events=true` on a webhook POSTs
//! every event line with `Idempotency-Key: <uuid>:<seq>` and `X-Vcontap-Event: <kind>`.
//!
//! Crates: `reqwest` (hyper, HTTP/1.1, connection pool; one client per sink, shared by its
//! event path) with `rustls` on the `ring` provider, configured here rather than installed
//! process-wide (no aws-lc, no C toolchain beyond ring's, no global state other sinks could
//! fight over) and `rustls-platform-verifier` for the system's CA roots; `hmac` + `sha2` +
//! `hex` for the GitHub-style signature. A batch is sent as POSTs on up to `concurrency`
//! connections, never two of one uuid at once nor out of order, so per-uuid order holds.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use sha2::Sha256;
use url::Url;
use vcontap_engine::{EventKind, VconEvent};

use crate::record::Record;
use crate::sink::{BoxFuture, Built, EventSink, Outcome, Sink, SinkError};
use crate::spec::{ConfigError, Options, SinkSpec};

/// The media type of a vCon (the conserver accepts it as JSON).
pub const VCON_CONTENT_TYPE: &str = "application/vcon+json";
/// The conserver's default API-token header (`CONSERVER_HEADER_NAME` changes it there).
pub const DEFAULT_TOKEN_HEADER: &str = "x-conserver-api-token";
/// Webhook header carrying `sha256=<hex HMAC-SHA256(secret, body)>`.
pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";
/// Webhook header carrying the Unix time (seconds) the request was sent.
pub const TIMESTAMP_HEADER: &str = "x-vcontap-timestamp";
/// Webhook event header carrying the event kind (`created`, `updated`, `segment`, `finished`).
pub const EVENT_HEADER: &str = "x-vcontap-event";
/// Idempotency header (the vCon uuid; `<uuid>:<seq>` for events).
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";

/// Headers the sink sets itself; `header=` options may not override them.
const RESERVED_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "transfer-encoding",
    "connection",
    "host",
    "te",
    "upgrade",
    IDEMPOTENCY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    EVENT_HEADER,
];

/// How much of an error answer is read for the rejection reason.
const EXCERPT_READ: usize = 4096;
/// How long a rejection reason may get (characters).
const EXCERPT_CHARS: usize = 240;
/// Success bodies up to this size are read to the end so the connection can be reused.
const DRAIN_LIMIT: usize = 1 << 20;

const CONSERVER_OPTIONS: &[&str] = &[
    "ingress",
    "token",
    "token_header",
    "timeout_ms",
    "concurrency",
    "interim",
    "ca_file",
];
const WEBHOOK_OPTIONS: &[&str] = &[
    "secret",
    "header",
    "timeout_ms",
    "concurrency",
    "events",
    "ca_file",
];

/// Which receiver a sink talks to (only changes how misconfiguration is explained).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavor {
    Conserver,
    Webhook,
}

/// Everything one sink's requests share: the client (connection pool), fixed headers,
/// the signing secret and error-message context.
#[derive(Debug)]
struct Endpoint {
    client: reqwest::Client,
    flavor: Flavor,
    /// The sink's name (credential-free), for messages.
    label: String,
    /// Headers on every request (token or `header=` options).
    headers: HeaderMap,
    /// The conserver token header's name (for messages).
    token_header: String,
    /// HMAC key for `X-Hub-Signature-256`.
    secret: Option<Vec<u8>>,
    /// Most requests in flight at once.
    concurrency: usize,
}

/// One request to make.
struct Post {
    /// Ordering key: two posts with the same key are never in flight together.
    key: Arc<str>,
    body: Bytes,
    headers: HeaderMap,
}

/// What one POST came to.
#[derive(Debug)]
enum Verdict {
    Delivered,
    Rejected(String),
    Transient(String),
}

/// The durable sink of both flavors: finished vCons POSTed to one URL.
#[derive(Debug)]
pub struct HttpSink {
    ep: Arc<Endpoint>,
    url: Url,
    idempotency: bool,
}

/// The real-time path of both flavors (`interim=true` / `events=true`).
#[derive(Debug)]
pub struct HttpEventSink {
    ep: Arc<Endpoint>,
    url: Url,
    /// Conserver interim snapshots (vCon bodies, `updated`/`segment` only) or webhook event
    /// lines (every kind).
    mode: EventMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EventMode {
    ConserverInterim,
    WebhookEvents,
}

/// Builds a conserver ingest sink from `conserver+http(s)://HOST:PORT/PATH`.
///
/// Records go to `http(s)://HOST:PORT/PATH/vcon` (or to `PATH` itself if it already ends in
/// `/vcon`) with one `ingress_lists` query parameter per `ingress` option.
pub fn build_conserver(mut spec: SinkSpec) -> Result<Built, ConfigError> {
    let sink = spec.name.clone();
    let invalid = |why: String| ConfigError::Invalid {
        sink: sink.clone(),
        why,
    };
    let (mut base, https) = inner_url(&spec.url, "conserver+").map_err(&invalid)?;
    let trimmed = base.path().trim_end_matches('/').to_string();
    if trimmed.ends_with("/vcon") {
        base.set_path(&trimmed);
    } else {
        base.set_path(&format!("{trimmed}/vcon"));
    }
    let ingress = spec.options.take_all("ingress");
    let token = spec.options.take("token")?;
    let token_header = spec
        .options
        .take("token_header")?
        .unwrap_or_else(|| DEFAULT_TOKEN_HEADER.to_string());
    let common = common_options(&mut spec.options)?;
    let interim = spec.options.take_bool("interim", false)?;
    spec.options.finish(CONSERVER_OPTIONS)?;

    let mut headers = HeaderMap::new();
    let name =
        HeaderName::from_bytes(token_header.as_bytes()).map_err(|_| ConfigError::Option {
            sink: sink.clone(),
            option: "token_header".into(),
            why: format!("`{token_header}` is not a valid HTTP header name"),
        })?;
    if let Some(token) = token {
        let mut v = HeaderValue::from_str(&token).map_err(|_| ConfigError::Option {
            sink: sink.clone(),
            option: "token".into(),
            why: "not usable as an HTTP header value (control characters or non-ASCII)".into(),
        })?;
        v.set_sensitive(true);
        headers.insert(name.clone(), v);
    }
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(VCON_CONTENT_TYPE));
    let client = make_client(https, &common).map_err(&invalid)?;
    let ep = Arc::new(Endpoint {
        client,
        flavor: Flavor::Conserver,
        label: spec.name.clone(),
        headers,
        token_header: name.as_str().to_string(),
        secret: None,
        concurrency: common.concurrency,
    });
    let mut url = base.clone();
    if !ingress.is_empty() {
        let mut q = url.query_pairs_mut();
        for list in &ingress {
            q.append_pair("ingress_lists", list);
        }
    }
    let events: Option<Box<dyn EventSink>> = interim.then(|| {
        Box::new(HttpEventSink {
            ep: ep.clone(),
            url: base,
            mode: EventMode::ConserverInterim,
        }) as Box<dyn EventSink>
    });
    Ok(Built {
        sink: Some(Box::new(HttpSink {
            ep,
            url,
            idempotency: false,
        })),
        events,
    })
}

/// Builds a webhook sink from `webhook+http(s)://HOST[:PORT]/PATH` (the target is the URL
/// without the `webhook+` prefix; its query string holds the options, not the target's).
pub fn build_webhook(mut spec: SinkSpec) -> Result<Built, ConfigError> {
    let sink = spec.name.clone();
    let invalid = |why: String| ConfigError::Invalid {
        sink: sink.clone(),
        why,
    };
    let (url, https) = inner_url(&spec.url, "webhook+").map_err(&invalid)?;
    let secret = spec.options.take("secret")?;
    if secret.as_deref() == Some("") {
        return Err(ConfigError::Option {
            sink,
            option: "secret".into(),
            why: "empty (leave it out to send unsigned requests)".into(),
        });
    }
    let extra = spec.options.take_all("header");
    let common = common_options(&mut spec.options)?;
    let events = spec.options.take_bool("events", false)?;
    spec.options.finish(WEBHOOK_OPTIONS)?;

    let mut headers = HeaderMap::new();
    for h in &extra {
        let (name, value) = parse_header_option(h).map_err(|why| ConfigError::Option {
            sink: sink.clone(),
            option: "header".into(),
            why,
        })?;
        headers.append(name, value);
    }
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(VCON_CONTENT_TYPE));
    let client = make_client(https, &common).map_err(&invalid)?;
    let ep = Arc::new(Endpoint {
        client,
        flavor: Flavor::Webhook,
        label: spec.name.clone(),
        headers,
        token_header: String::new(),
        secret: secret.map(String::into_bytes),
        concurrency: common.concurrency,
    });
    let events: Option<Box<dyn EventSink>> = events.then(|| {
        Box::new(HttpEventSink {
            ep: ep.clone(),
            url: url.clone(),
            mode: EventMode::WebhookEvents,
        }) as Box<dyn EventSink>
    });
    Ok(Built {
        sink: Some(Box::new(HttpSink {
            ep,
            url,
            idempotency: true,
        })),
        events,
    })
}

/// Options both flavors take.
struct Common {
    timeout: Duration,
    concurrency: usize,
    ca_file: Option<String>,
}

fn common_options(o: &mut Options) -> Result<Common, ConfigError> {
    let timeout_ms = o.take_u64("timeout_ms", 10_000, 1..=3_600_000)?;
    let concurrency = o.take_u64("concurrency", 4, 1..=64)?;
    let ca_file = o.take("ca_file")?;
    Ok(Common {
        timeout: Duration::from_millis(timeout_ms),
        concurrency: usize::try_from(concurrency).unwrap_or(4),
        ca_file,
    })
}

/// `conserver+https://h/p` → (`https://h/p`, true).
fn inner_url(url: &Url, prefix: &str) -> Result<(Url, bool), String> {
    let inner = url
        .as_str()
        .strip_prefix(prefix)
        .ok_or_else(|| format!("expected a `{prefix}http(s)://` URL"))?;
    let mut u = Url::parse(inner).map_err(|e| format!("bad target URL: {e}"))?;
    let https = match u.scheme() {
        "http" => false,
        "https" => true,
        s => return Err(format!("`{prefix}{s}`: the target must be http or https")),
    };
    if u.host_str().is_none_or(str::is_empty) {
        return Err("the target URL has no host".into());
    }
    u.set_query(None);
    u.set_fragment(None);
    Ok((u, https))
}

/// Parses a `header=Name:Value` option (`Value` may be `env:VAR`).
fn parse_header_option(h: &str) -> Result<(HeaderName, HeaderValue), String> {
    let (name, value) = h.split_once(':').ok_or_else(|| {
        format!(
            "`{h}` is not `Name:Value` (several headers are separate `header` options; \
             a comma also separates them)"
        )
    })?;
    let name = name.trim();
    let value = value.trim();
    let hn = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("`{name}` is not a valid HTTP header name"))?;
    if RESERVED_HEADERS.contains(&hn.as_str()) || hn.as_str().starts_with("x-vcontap-") {
        return Err(format!(
            "`{name}` is set by the sink itself and cannot be overridden"
        ));
    }
    let value = match value.strip_prefix("env:") {
        Some(var) => std::env::var(var)
            .map_err(|_| format!("header `{name}`: environment variable {var} is not set"))?,
        None => value.to_string(),
    };
    let mut hv = HeaderValue::from_str(&value).map_err(|_| {
        format!("header `{name}`: value is not a valid HTTP header value (control characters?)")
    })?;
    if hn == reqwest::header::AUTHORIZATION || hn.as_str().contains("token") {
        hv.set_sensitive(true);
    }
    Ok((hn, hv))
}

/// One client per sink: rustls on ring, configured here (not process-wide), HTTP/1.1, no
/// redirects (a POST that is redirected is a misconfiguration to report, not to follow).
fn make_client(https: bool, c: &Common) -> Result<reqwest::Client, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let mut tls = if https {
        let extra = match &c.ca_file {
            Some(path) => read_ca_file(path)?,
            None => Vec::new(),
        };
        let verifier = if extra.is_empty() {
            rustls_platform_verifier::Verifier::new(provider)
        } else {
            rustls_platform_verifier::Verifier::new_with_extra_roots(extra, provider)
        }
        .map_err(|e| {
            format!("TLS setup: {e} (install the system CA bundle, or give `ca_file=PEM`)")
        })?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth()
    } else {
        if c.ca_file.is_some() {
            return Err("option `ca_file` needs an https target".into());
        }
        builder
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth()
    };
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .http1_only()
        .timeout(c.timeout)
        .connect_timeout(c.timeout.min(Duration::from_secs(10)))
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(Duration::from_secs(50))
        .pool_max_idle_per_host(c.concurrency)
        .tcp_nodelay(true)
        .user_agent(concat!("vcontap/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("HTTP client: {}", error_chain(&e)))
}

fn read_ca_file(path: &str) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    let certs: Vec<_> = rustls::pki_types::CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("ca_file {path}: {e}"))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("ca_file {path}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("ca_file {path}: no PEM certificate in it"));
    }
    Ok(certs)
}

/// `sha256=<lowercase hex HMAC-SHA256(secret, body)>`: the `X-Hub-Signature-256` value
/// (GitHub's convention, as the vcon-siprec-adapter sends it).
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mut mac) => {
            mac.update(body);
            format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
        }
        Err(_) => String::new(),
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The error and its causes on one line (reqwest's own message omits the cause), without
/// the URL (it may carry credentials).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

impl Endpoint {
    /// Sends one POST and classifies the answer.
    async fn send(&self, url: Url, post: Post) -> Verdict {
        let mut req = self
            .client
            .post(url)
            .headers(self.headers.clone())
            .headers(post.headers);
        if self.flavor == Flavor::Webhook {
            if let Some(secret) = &self.secret {
                req = req.header(SIGNATURE_HEADER, signature(secret, &post.body));
            }
            req = req.header(TIMESTAMP_HEADER, unix_now());
        }
        let mut resp = match req.body(post.body).send().await {
            Ok(r) => r,
            Err(e) => {
                let what = if e.is_timeout() {
                    "timed out"
                } else if e.is_connect() {
                    "cannot connect"
                } else {
                    "request failed"
                };
                return Verdict::Transient(format!(
                    "{}: {what}: {}",
                    self.label,
                    error_chain(&e.without_url())
                ));
            }
        };
        let status = resp.status();
        if status.is_success() {
            // Read the answer (the conserver echoes the document) so the connection goes
            // back to the pool; a failure here still means the POST was accepted.
            let mut read = 0usize;
            while let Ok(Some(chunk)) = resp.chunk().await {
                read += chunk.len();
                if read > DRAIN_LIMIT {
                    break;
                }
            }
            return Verdict::Delivered;
        }
        let location = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let mut body = Vec::new();
        while body.len() < EXCERPT_READ {
            match resp.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                _ => break,
            }
        }
        self.classify(status.as_u16(), &excerpt(&body), location.as_deref())
    }

    fn classify(&self, status: u16, excerpt: &str, location: Option<&str>) -> Verdict {
        let label = &self.label;
        let what = reason_phrase(status);
        let detail = if excerpt.is_empty() {
            String::new()
        } else {
            format!(": {excerpt}")
        };
        let keep = "records stay in the spool and are retried until it is fixed";
        match status {
            200..=299 => Verdict::Delivered,
            300..=399 => Verdict::Transient(format!(
                "{label}: HTTP {status} redirect{}: redirects are not followed; point the \
                 sink at the final URL ({keep})",
                location.map(|l| format!(" to {l}")).unwrap_or_default()
            )),
            401 | 403 => Verdict::Transient(match self.flavor {
                Flavor::Conserver => format!(
                    "{label}: HTTP {status} {what}: the conserver refused the API token (option \
                     `token`, sent as header `{}`){detail}; fix the token ({keep})",
                    self.token_header
                ),
                Flavor::Webhook => format!(
                    "{label}: HTTP {status} {what}: the receiver refused our credentials (check \
                     the token or signing `secret` and `header` options){detail} ({keep})"
                ),
            }),
            404 => Verdict::Transient(match self.flavor {
                Flavor::Conserver => format!(
                    "{label}: HTTP 404: no ingest endpoint at this path (the conserver's is \
                     `<API_ROOT_PATH>/vcon`, usually `/api/vcon`: use `conserver+http://HOST:PORT/api`); \
                     fix the sink URL ({keep})"
                ),
                Flavor::Webhook => format!(
                    "{label}: HTTP 404: nothing receives webhooks at this path; fix the sink URL ({keep})"
                ),
            }),
            408 | 409 | 425 | 429 | 500..=599 => Verdict::Transient(format!(
                "{label}: HTTP {status} {what}{detail}"
            )),
            400..=499 => Verdict::Rejected(format!("HTTP {status} {what}{detail}")),
            _ => Verdict::Transient(format!("{label}: unexpected HTTP status {status}{detail}")),
        }
    }
}

fn reason_phrase(status: u16) -> &'static str {
    reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("")
}

/// A short, single-line reason from an error answer. FastAPI's validation errors
/// (`{"detail":[{"loc":[..],"msg":..,"input":..}]}`) become `loc: msg` pairs without the
/// rejected input (it may be a phone number); anything else is cut to a few hundred chars.
fn excerpt(body: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        match v.get("detail") {
            Some(serde_json::Value::String(s)) => return clip(s),
            Some(serde_json::Value::Array(items)) => {
                let parts: Vec<String> = items
                    .iter()
                    .take(3)
                    .map(|it| {
                        let loc = it
                            .get("loc")
                            .and_then(|l| l.as_array())
                            .map(|l| {
                                l.iter()
                                    .map(|p| match p {
                                        serde_json::Value::String(s) => s.clone(),
                                        other => other.to_string(),
                                    })
                                    .collect::<Vec<_>>()
                                    .join(".")
                            })
                            .unwrap_or_default();
                        let msg = it.get("msg").and_then(|m| m.as_str()).unwrap_or("invalid");
                        if loc.is_empty() {
                            msg.to_string()
                        } else {
                            format!("{loc}: {msg}")
                        }
                    })
                    .collect();
                if !parts.is_empty() {
                    let more = items.len().saturating_sub(3);
                    let tail = if more > 0 {
                        format!(" (+{more} more)")
                    } else {
                        String::new()
                    };
                    return clip(&format!("{}{tail}", parts.join("; ")));
                }
            }
            _ => {}
        }
    }
    clip(&String::from_utf8_lossy(body))
}

/// One line, control characters replaced, at most [`EXCERPT_CHARS`] characters.
fn clip(s: &str) -> String {
    let mut out = String::new();
    let mut n = 0;
    let mut last_space = true;
    for c in s.chars() {
        let c = if c.is_control() || c.is_whitespace() {
            ' '
        } else {
            c
        };
        if c == ' ' && last_space {
            continue;
        }
        last_space = c == ' ';
        if n == EXCERPT_CHARS {
            out.push('…');
            break;
        }
        out.push(c);
        n += 1;
    }
    out.trim_end().to_string()
}

/// Sends `posts` with up to `ep.concurrency` in flight, in order, never two posts of one key
/// at once (and never a post before an earlier one of its key has been answered), so
/// per-uuid order holds. After a transient failure nothing new is started; the requests in
/// flight finish and the first failure (in batch order) is returned.
async fn post_all(
    ep: &Arc<Endpoint>,
    url: &Url,
    posts: Vec<Post>,
) -> Result<Vec<Verdict>, SinkError> {
    let n = posts.len();
    let mut out: Vec<Option<Verdict>> = std::iter::repeat_with(|| None).take(n).collect();
    let mut pending: VecDeque<(usize, Post)> = posts.into_iter().enumerate().collect();
    let mut busy: HashSet<Arc<str>> = HashSet::new();
    let mut set = tokio::task::JoinSet::new();
    let mut failed: Option<(usize, String)> = None;
    loop {
        if failed.is_none() && !pending.is_empty() {
            // Start every post whose key is neither in flight nor behind an earlier post.
            let mut blocked = busy.clone();
            let mut rest = VecDeque::with_capacity(pending.len());
            while let Some((i, p)) = pending.pop_front() {
                if set.len() < ep.concurrency && !blocked.contains(&p.key) {
                    busy.insert(p.key.clone());
                    blocked.insert(p.key.clone());
                    let (ep, url) = (ep.clone(), url.clone());
                    set.spawn(async move {
                        let key = p.key.clone();
                        (i, key, ep.send(url, p).await)
                    });
                } else {
                    blocked.insert(p.key.clone());
                    rest.push_back((i, p));
                }
            }
            pending = rest;
        }
        let Some(done) = set.join_next().await else {
            break;
        };
        let (i, key, v) =
            done.map_err(|e| SinkError::new(format!("{}: HTTP task: {e}", ep.label)))?;
        busy.remove(&key);
        if let Verdict::Transient(why) = &v {
            if failed.as_ref().is_none_or(|(j, _)| i < *j) {
                failed = Some((i, why.clone()));
            }
        }
        if let Some(slot) = out.get_mut(i) {
            *slot = Some(v);
        }
    }
    if let Some((_, why)) = failed {
        return Err(SinkError::new(why));
    }
    Ok(out
        .into_iter()
        .map(|v| v.unwrap_or_else(|| Verdict::Transient("not sent".into())))
        .collect())
}

fn header_value(s: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(s).ok()
}

impl Sink for HttpSink {
    fn max_batch(&self) -> usize {
        64
    }

    fn deliver<'a>(
        &'a mut self,
        batch: &'a [Arc<Record>],
    ) -> BoxFuture<'a, Result<Vec<Outcome>, SinkError>> {
        Box::pin(async move {
            // Records that cannot even be sent are rejected up front, the rest are posted.
            let mut pre: Vec<Option<Outcome>> = Vec::with_capacity(batch.len());
            let mut posts = Vec::with_capacity(batch.len());
            for rec in batch {
                let mut headers = HeaderMap::new();
                if self.idempotency {
                    match header_value(&rec.uuid) {
                        Some(v) => {
                            headers.insert(IDEMPOTENCY_HEADER, v);
                        }
                        None => {
                            pre.push(Some(Outcome::Rejected(format!(
                                "uuid `{}` is not usable as an Idempotency-Key header",
                                rec.uuid.escape_debug()
                            ))));
                            continue;
                        }
                    }
                }
                pre.push(None);
                posts.push(Post {
                    key: rec.uuid.clone(),
                    body: rec.json.clone(),
                    headers,
                });
            }
            let verdicts = post_all(&self.ep, &self.url, posts).await?;
            let mut verdicts = verdicts.into_iter();
            let mut out = Vec::with_capacity(batch.len());
            for p in pre {
                out.push(match p {
                    Some(o) => o,
                    None => match verdicts.next() {
                        Some(Verdict::Delivered) => Outcome::Delivered,
                        Some(Verdict::Rejected(why)) => Outcome::Rejected(why),
                        Some(Verdict::Transient(why)) => return Err(SinkError::new(why)),
                        None => return Err(SinkError::new("HTTP sink: outcome missing")),
                    },
                });
            }
            Ok(out)
        })
    }
}

impl EventSink for HttpEventSink {
    fn publish<'a>(
        &'a mut self,
        batch: &'a [Arc<VconEvent>],
    ) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            let mut posts = Vec::new();
            for ev in batch {
                match self.mode {
                    EventMode::ConserverInterim => {
                        // The finished vCon travels the durable path (with ingress lists);
                        // `created` has no dialog yet and is superseded within a second.
                        if !matches!(ev.kind, EventKind::Updated | EventKind::Segment) {
                            continue;
                        }
                        posts.push(Post {
                            key: ev.uuid.clone(),
                            body: Bytes::copy_from_slice(ev.vcon_json.as_bytes()),
                            headers: HeaderMap::new(),
                        });
                    }
                    EventMode::WebhookEvents => {
                        let Some(key) = header_value(&format!("{}:{}", ev.uuid, ev.seq)) else {
                            tracing::debug!(sink = %self.ep.label, "event with an unusable uuid skipped");
                            continue;
                        };
                        let mut headers = HeaderMap::new();
                        headers.insert(IDEMPOTENCY_HEADER, key);
                        headers.insert(EVENT_HEADER, HeaderValue::from_static(ev.kind.as_str()));
                        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                        posts.push(Post {
                            key: ev.uuid.clone(),
                            body: Bytes::from(ev.to_json_line()),
                            headers,
                        });
                    }
                }
            }
            if posts.is_empty() {
                return Ok(());
            }
            for v in post_all(&self.ep, &self.url, posts).await? {
                if let Verdict::Rejected(why) = v {
                    // Events are best-effort: a refused snapshot is dropped (the finished
                    // vCon is still delivered durably).
                    tracing::debug!(sink = %self.ep.label, %why, "event refused");
                }
            }
            Ok(())
        })
    }
}

/// Reads a vCon back from a conserver (`GET {base}/vcon/{uuid}`): "the store's view" for
/// end-to-end tests and `vcontap` diagnostics. `base` is the API root
/// (`http://127.0.0.1:8000/api`); `None` when the conserver has no such vCon (404).
pub async fn fetch_vcon(
    base: &str,
    token: Option<&str>,
    uuid: &str,
) -> Result<Option<Bytes>, SinkError> {
    let mut url = Url::parse(base).map_err(|e| SinkError::new(format!("{base}: {e}")))?;
    let https = url.scheme() == "https";
    let path = format!("{}/vcon/{uuid}", url.path().trim_end_matches('/'));
    url.set_path(&path);
    let client = make_client(
        https,
        &Common {
            timeout: Duration::from_secs(10),
            concurrency: 1,
            ca_file: None,
        },
    )
    .map_err(SinkError::new)?;
    let mut req = client.get(url);
    if let Some(t) = token {
        req = req.header(DEFAULT_TOKEN_HEADER, t);
    }
    let resp = req
        .send()
        .await
        .map_err(|e| SinkError::new(error_chain(&e.without_url())))?;
    match resp.status().as_u16() {
        404 => Ok(None),
        200 => resp
            .bytes()
            .await
            .map(Some)
            .map_err(|e| SinkError::new(error_chain(&e.without_url()))),
        s => Err(SinkError::new(format!("GET vcon: HTTP {s}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(flavor: Flavor) -> Endpoint {
        Endpoint {
            client: make_client(
                false,
                &Common {
                    timeout: Duration::from_secs(1),
                    concurrency: 1,
                    ca_file: None,
                },
            )
            .unwrap(),
            flavor,
            label: "s".into(),
            headers: HeaderMap::new(),
            token_header: DEFAULT_TOKEN_HEADER.into(),
            secret: None,
            concurrency: 1,
        }
    }

    #[test]
    fn classification_table() {
        let c = ep(Flavor::Conserver);
        for s in [200, 201, 202, 204] {
            assert!(matches!(c.classify(s, "", None), Verdict::Delivered), "{s}");
        }
        for s in [400, 405, 410, 413, 415, 422, 451] {
            assert!(
                matches!(c.classify(s, "x", None), Verdict::Rejected(_)),
                "{s}"
            );
        }
        for s in [
            301, 302, 307, 401, 403, 404, 408, 409, 425, 429, 500, 502, 503, 504, 100, 600,
        ] {
            assert!(
                matches!(c.classify(s, "", None), Verdict::Transient(_)),
                "{s}"
            );
        }
        let Verdict::Transient(m) = c.classify(403, "Invalid API Key", None) else {
            panic!()
        };
        assert!(
            m.contains("token") && m.contains(DEFAULT_TOKEN_HEADER),
            "{m}"
        );
        let Verdict::Transient(m) = c.classify(308, "", Some("https://x/api/vcon")) else {
            panic!()
        };
        assert!(m.contains("https://x/api/vcon"), "{m}");
    }

    #[test]
    fn fastapi_detail_is_summarised_without_the_input() {
        let body = br#"{"detail":[{"type":"string_pattern_mismatch","loc":["body","parties",0,"tel"],"msg":"String should match pattern","input":"1001"}]}"#;
        let e = excerpt(body);
        assert_eq!(e, "body.parties.0.tel: String should match pattern");
        assert_eq!(
            excerpt(br#"{"detail":"Invalid API Key"}"#),
            "Invalid API Key"
        );
        let long = "a\n\tb ".repeat(500);
        let e = excerpt(long.as_bytes());
        assert!(
            e.chars().count() <= EXCERPT_CHARS + 1 && !e.contains('\n'),
            "{e}"
        );
        assert_eq!(excerpt(&[0xff, 0xfe, b'x']), "\u{fffd}\u{fffd}x");
    }

    #[test]
    fn signature_matches_rfc4231_case_2() {
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn header_options() {
        assert!(parse_header_option("X-Tenant: acme").is_ok());
        assert!(parse_header_option("X-Tenant").is_err());
        assert!(parse_header_option("X Bad: v").is_err());
        assert!(parse_header_option("Content-Type: text/plain").is_err());
        assert!(parse_header_option("X-A: a\u{7}b").is_err());
        assert!(parse_header_option("X-A: env:VCONTAP_TEST_SURELY_UNSET_VAR").is_err());
    }
}
