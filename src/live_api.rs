//! The live subscribers API on the `--listen` server: `GET /v1/calls`, `GET /v1/vcons/{uuid}`,
//! `GET /v1/events` (Server-Sent Events, or WebSocket on upgrade) and the conserver pull pair `GET /vcon/egress`,
//! `GET /vcon/{uuid}`; bearer-token (or `x-conserver-api-token`) auth. Everything it serves
//! comes from the [`vcontap_live::Hub`] the Tap's event handler feeds; this module is the
//! thin HTTP shell (axum handlers, the keep-alive timer, file look-ups).

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use axum::body::Body;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use serde::Deserialize;
use vcontap_live::{Filter, Hub, HubConfig, HubError, RelayHandle, SubscribeOptions};

/// API options shared by `replay`, `capture` (and `[api]` of `run`).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ApiArgs {
    /// Serve the HTTP API here (/metrics, /healthz, /readyz, /v1/…, /vcon/…). Without an
    /// API token only a loopback address is accepted. (`vcontap siprec`, whose `--listen`
    /// is its SIP address, takes the same as `--api-listen`.)
    #[arg(long, visible_alias = "api-listen", value_name = "ADDR")]
    pub listen: Option<std::net::SocketAddr>,
    #[command(flatten)]
    pub opts: ApiOptions,
}

/// The API options other than its address, shared by every command that serves the API
/// (`vcontap siprec` names the address `--api-listen`, its `--listen` being SIP's).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ApiOptions {
    /// File of API tokens, one per line (`#` comments): clients send `Authorization:
    /// Bearer TOKEN` or `x-conserver-api-token: TOKEN`.
    #[arg(long, value_name = "FILE")]
    pub api_token_file: Option<PathBuf>,
    /// Conserver egress list served at /vcon/egress (repeatable): every finished uuid is
    /// pushed onto each.
    #[arg(long = "egress-list", value_name = "NAME")]
    pub egress_lists: Vec<String>,
    /// Most concurrent event subscribers (beyond: 503).
    #[arg(long, value_name = "N")]
    pub max_subscribers: Option<usize>,
    /// Events a subscriber may fall behind before it loses the oldest and gets a `gap`
    /// (default 4096).
    #[arg(long, value_name = "N")]
    pub subscriber_queue: Option<usize>,
    /// Serve HTTPS with this PEM certificate chain (with --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

/// What the API needs at run time (from flags or `[api]`).
#[derive(Debug, Clone, Default)]
pub struct ApiSettings {
    pub listen: Option<std::net::SocketAddr>,
    /// Accepted tokens (resolved: no `env:` left).
    pub tokens: Vec<String>,
    pub hub: HubConfig,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

/// Reads a token file: one token per line, blank lines and `#` comments skipped.
pub fn read_token_file(p: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
    let tokens: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect();
    if tokens.is_empty() {
        bail!("{}: no token in the file", p.display());
    }
    Ok(tokens)
}

impl ApiSettings {
    /// From the command line.
    pub fn from_args(a: &ApiArgs) -> Result<Self> {
        Self::from_options(a.listen, &a.opts)
    }

    /// From the command line, the address given separately (`vcontap siprec`).
    pub fn from_options(listen: Option<std::net::SocketAddr>, a: &ApiOptions) -> Result<Self> {
        let mut hub = HubConfig {
            egress_lists: a.egress_lists.clone(),
            ..HubConfig::default()
        };
        if let Some(n) = a.max_subscribers {
            hub.max_subscribers = n;
        }
        if let Some(n) = a.subscriber_queue {
            hub.channel = n;
        }
        let tokens = match &a.api_token_file {
            Some(p) => read_token_file(p).context("--api-token-file")?,
            None => Vec::new(),
        };
        Ok(ApiSettings {
            listen,
            tokens,
            hub,
            tls_cert: a.tls_cert.clone(),
            tls_key: a.tls_key.clone(),
        })
    }

    /// Refuses a non-loopback address without a token (start-up error).
    pub fn check(&self) -> Result<()> {
        if let Some(a) = self.listen {
            if !a.ip().is_loopback() && self.tokens.is_empty() {
                bail!(
                    "--listen {a}: not a loopback address and no API token is configured; \
                     give --api-token-file FILE (or [api] tokens / token_file), or listen on \
                     127.0.0.1"
                );
            }
        }
        for t in &self.tokens {
            if t.len() < 16 {
                bail!("API tokens must be at least 16 characters");
            }
        }
        for n in &self.hub.egress_lists {
            if !vcontap_live::egress::valid_name(n) {
                bail!(
                    "egress list {n:?}: names become journal file names; use 1 to 128 of \
                     A-Z a-z 0-9 _ - . (not starting with .)"
                );
            }
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            bail!("TLS needs both a certificate and a key (--tls-cert, --tls-key)");
        }
        Ok(())
    }

    /// The TLS server configuration, when a certificate and key are configured.
    pub fn tls(&self) -> Result<Option<Arc<rustls::ServerConfig>>> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(c), Some(k)) => Ok(Some(crate::tls::server_config(c, k)?)),
            _ => Ok(None),
        }
    }
}

/// Where the egress list journals live under the output directory.
pub const EGRESS_DIR: &str = "egress";

/// The hub of a `--listen` server: egress lists journaled in `OUT/egress/<list>.journal`
/// (reloaded here; damaged lines are skipped, counted in
/// `vcontap_api_egress_bad_records_total` and logged).
pub fn open_hub(s: &ApiSettings, out: &Path) -> Result<Arc<Hub>> {
    let mut cfg = s.hub.clone();
    if !cfg.egress_lists.is_empty() {
        cfg.egress_dir = Some(out.join(EGRESS_DIR));
    }
    let (hub, reports) = Hub::open(cfg).context("opening the egress lists")?;
    for (list, r) in reports {
        if r.bad_records > 0 {
            tracing::warn!(
                list,
                bad_records = r.bad_records,
                recovered = r.recovered,
                "egress journal was damaged: unreadable lines skipped"
            );
        } else if r.recovered > 0 {
            tracing::info!(list, recovered = r.recovered, "egress list reloaded");
        }
    }
    Ok(hub)
}

/// State of the live routes.
pub struct LiveApi {
    pub hub: Arc<Hub>,
    tokens: Vec<Vec<u8>>,
    /// The file sink's directory (`YYYY/MM/DD/<uuid>.vcon.json`), for finished vCons that
    /// left the recent cache.
    out_dir: Option<PathBuf>,
    keep_alive: Duration,
}

/// Idle SSE streams get a comment this often (proxies close silent connections).
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Most uuids one `/vcon/egress` call pops.
const MAX_EGRESS_LIMIT: usize = 1000;

thread_local! {
    /// This thread's relay of the hub's events, when it is an API shard
    /// ([`LiveApi::start_relay`]); keyed by the hub it relays.
    static RELAY: std::cell::RefCell<Option<(Arc<Hub>, RelayHandle)>> =
        const { std::cell::RefCell::new(None) };
}

impl LiveApi {
    /// Run on each API shard's thread inside its runtime (`shards::Options::on_start`):
    /// starts the relay that wakes this thread's subscribers, so that an event costs the
    /// publisher one wake per shard, not one per subscriber (`vcontap_live::Relay`).
    pub fn start_relay(&self) {
        let (relay, handle) = self.hub.relay();
        tokio::spawn(relay.run());
        RELAY.with(|r| *r.borrow_mut() = Some((self.hub.clone(), handle)));
    }

    /// The relay of this thread for this API's hub, if any.
    fn relay_here(&self) -> Option<RelayHandle> {
        RELAY.with(|r| {
            r.borrow()
                .as_ref()
                .filter(|(hub, _)| Arc::ptr_eq(hub, &self.hub))
                .map(|(_, h)| h.clone())
        })
    }

    pub fn new(hub: Arc<Hub>, tokens: &[String], out_dir: Option<PathBuf>) -> Arc<Self> {
        Arc::new(LiveApi {
            hub,
            tokens: tokens.iter().map(|t| t.as_bytes().to_vec()).collect(),
            out_dir,
            keep_alive: KEEP_ALIVE,
        })
    }

    /// `Ok` when no token is configured (loopback only, see [`ApiSettings::check`]) or the
    /// request carries a configured one; 401 without credentials, 403 with a wrong one.
    #[allow(clippy::result_large_err)]
    fn authorize(&self, h: &HeaderMap, query_token: Option<&str>) -> Result<(), Response> {
        if self.tokens.is_empty() {
            return Ok(());
        }
        let bearer = h
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let conserver = h.get("x-conserver-api-token").and_then(|v| v.to_str().ok());
        let Some(given) = bearer.or(conserver).or(query_token) else {
            return Err((
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "missing API token\n",
            )
                .into_response());
        };
        // Every configured token is compared (no early exit) so timing does not say which
        // one, or how much of one, matched.
        let mut ok = false;
        for t in &self.tokens {
            ok |= ct_eq(t, given.trim().as_bytes());
        }
        if ok {
            Ok(())
        } else {
            Err((StatusCode::FORBIDDEN, "bad API token\n").into_response())
        }
    }
}

/// Constant-time equality: the time depends only on the lengths. Hand-written (8 lines)
/// rather than a crate for one comparison.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0xff);
    }
    std::hint::black_box(diff) == 0
}

/// The routes, to merge into the `--listen` router.
pub fn routes(api: Arc<LiveApi>) -> Router {
    Router::new()
        .route("/v1/calls", get(calls))
        .route("/v1/vcons/{uuid}", get(vcon))
        .route("/v1/events", get(events))
        .route("/vcon/egress", get(egress))
        .route("/vcon/{uuid}", get(vcon))
        .with_state(api)
}

#[derive(Deserialize, Default)]
struct FilterQuery {
    uuid: Option<String>,
    party: Option<String>,
    state: Option<String>,
    kind: Option<String>,
    delta: Option<String>,
    access_token: Option<String>,
    last_event_id: Option<String>,
}

impl FilterQuery {
    #[allow(clippy::result_large_err)]
    fn filter(&self) -> Result<Filter, Response> {
        Filter::parse(
            self.uuid.as_deref(),
            self.party.as_deref(),
            self.state.as_deref(),
            self.kind.as_deref(),
        )
        .map_err(|e| (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response())
    }
}

fn json_response(body: impl Into<Body>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body.into()).into_response()
}

async fn calls(
    State(api): State<Arc<LiveApi>>,
    h: HeaderMap,
    Query(q): Query<FilterQuery>,
) -> Response {
    if let Err(r) = api.authorize(&h, q.access_token.as_deref()) {
        return r;
    }
    let f = match q.filter() {
        Ok(f) => f,
        Err(r) => return r,
    };
    let rows = api.hub.calls(&f);
    json_response(serde_json::json!({ "calls": rows }).to_string())
}

/// A vCon uuid as the engine makes them: 36 characters of hex and dashes (also what keeps
/// a path built from it inside the output directory).
fn valid_uuid(u: &str) -> bool {
    u.len() == 36 && u.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

async fn vcon(
    State(api): State<Arc<LiveApi>>,
    h: HeaderMap,
    UrlPath(uuid): UrlPath<String>,
    Query(q): Query<FilterQuery>,
) -> Response {
    if let Err(r) = api.authorize(&h, q.access_token.as_deref()) {
        return r;
    }
    if let Some(v) = api.hub.vcon(&uuid) {
        return json_response(v.to_string());
    }
    if valid_uuid(&uuid) {
        if let Some(dir) = api.out_dir.clone() {
            let u = uuid.clone();
            let found = tokio::task::spawn_blocking(move || find_in_out_dir(&dir, &u))
                .await
                .ok()
                .flatten();
            if let Some(body) = found {
                return json_response(body);
            }
        }
    }
    (StatusCode::NOT_FOUND, "no such vCon\n").into_response()
}

/// Most date directories looked through when a uuid's date does not find its file.
const MAX_SCAN_DIRS: usize = 5000;

/// `OUT/YYYY/MM/DD/<uuid>.vcon.json`: the date the uuid carries first (its first 48 bits
/// are the INVITE's Unix ms, which is `created_at`), then a bounded scan.
fn find_in_out_dir(dir: &Path, uuid: &str) -> Option<Vec<u8>> {
    let name = format!("{uuid}.vcon.json");
    let hex: String = uuid.chars().filter(|c| *c != '-').take(12).collect();
    if let Ok(ms) = i64::from_str_radix(&hex, 16) {
        let (y, m, d) = vcontap_vcon::civil_from_days(ms.div_euclid(86_400_000));
        let p = dir.join(format!("{y:04}/{m:02}/{d:02}")).join(&name);
        if let Ok(b) = std::fs::read(&p) {
            return Some(b);
        }
    }
    let mut seen = 0;
    let sub = |p: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(p)
            .map(|r| {
                r.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.is_dir())
                    .collect()
            })
            .unwrap_or_default()
    };
    for y in sub(dir) {
        for m in sub(&y) {
            for d in sub(&m) {
                seen += 1;
                if seen > MAX_SCAN_DIRS {
                    return None;
                }
                if let Ok(b) = std::fs::read(d.join(&name)) {
                    return Some(b);
                }
            }
        }
    }
    None
}

#[derive(Deserialize)]
struct EgressQuery {
    egress_list: String,
    limit: Option<usize>,
}

async fn egress(
    State(api): State<Arc<LiveApi>>,
    h: HeaderMap,
    Query(q): Query<EgressQuery>,
) -> Response {
    if let Err(r) = api.authorize(&h, None) {
        return r;
    }
    let limit = q.limit.unwrap_or(1).min(MAX_EGRESS_LIMIT);
    match api.hub.egress_pop(&q.egress_list, limit) {
        Some(uuids) => {
            let v: Vec<&str> = uuids.iter().map(|u| &**u).collect();
            json_response(serde_json::to_string(&v).unwrap_or_else(|_| "[]".into()))
        }
        None => (
            StatusCode::NOT_FOUND,
            format!("no egress list {:?} configured\n", q.egress_list),
        )
            .into_response(),
    }
}

async fn events(
    State(api): State<Arc<LiveApi>>,
    h: HeaderMap,
    Query(q): Query<FilterQuery>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if let Err(r) = api.authorize(&h, q.access_token.as_deref()) {
        return r;
    }
    let filter = match q.filter() {
        Ok(f) => f,
        Err(r) => return r,
    };
    let delta = match q.delta.as_deref() {
        None | Some("") | Some("none") => false,
        Some("json-patch") => true,
        Some(o) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("delta={o:?}: only json-patch\n"),
            )
                .into_response()
        }
    };
    let last_event_id = h
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(String::from)
        .or(q.last_event_id.clone())
        .filter(|s| !s.is_empty() && s.len() <= 200);
    let opts = SubscribeOptions {
        filter,
        delta,
        last_event_id,
    };
    let sub = match api.relay_here() {
        Some(relay) => api.hub.subscribe_via(&relay, opts),
        None => api.hub.subscribe(opts),
    };
    let sub = match sub {
        Ok(s) => s,
        Err(e @ HubError::TooManySubscribers(_)) => {
            return (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response()
        }
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    let period = api.keep_alive;
    let wants_ws = h
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if wants_ws {
        return match ws {
            Ok(ws) => ws
                .max_message_size(MAX_WS_IN)
                // tungstenite zero-fills `read_buffer_size` bytes before every read
                // attempt, and the send loop polls `recv` once per event: at the default
                // 128 KiB that memset was half the server's CPU per WebSocket event.
                .read_buffer_size(MAX_WS_IN)
                .max_write_buffer_size(MAX_WS_WRITE_BUFFER)
                .on_upgrade(move |socket| websocket(socket, sub, period)),
            Err(rejection) => rejection.into_response(),
        };
    }
    let mut ka = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ka.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stream = futures_util::stream::unfold((sub, ka), |(mut sub, mut ka)| async move {
        let item = tokio::select! {
            biased;
            f = sub.next() => f.map(|f| f.sse),
            _ = ka.tick() => Some(Bytes::from_static(b": keep-alive\n\n")),
        };
        item.map(|b| (Ok::<_, Infallible>(b), (sub, ka)))
    });
    let mut r = Response::new(Body::from_stream(stream));
    let hd = r.headers_mut();
    hd.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    hd.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    hd.insert("x-accel-buffering", HeaderValue::from_static("no"));
    r
}

/// Largest message a WebSocket client may send (it has nothing to say).
const MAX_WS_IN: usize = 4096;
/// Bytes buffered for a WebSocket client before `send` waits on the socket (meanwhile the
/// subscription falls behind in the hub and gets a `gap`).
const MAX_WS_WRITE_BUFFER: usize = 4 << 20;

/// The WebSocket transport: one text message per event (the same JSON as SSE `data:`),
/// pings as keep-alive, client messages ignored, a close frame when the source ends.
async fn websocket(mut socket: WebSocket, mut sub: vcontap_live::Subscription, period: Duration) {
    use futures_util::SinkExt;
    let mut ka = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ka.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let out = tokio::select! {
            biased;
            f = sub.next() => match f {
                Some(f) => match text(f) {
                    Some(m) => m,
                    None => continue,
                },
                None => {
                    let _ = socket.send(Message::Close(None)).await;
                    return;
                }
            },
            m = socket.recv() => match m {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => continue,
            },
            _ = ka.tick() => Message::Ping(Bytes::new()),
        };
        // Events already queued go out with this one in a single flush (one write when the
        // socket takes them), as hyper does for SSE; at most WS_BATCH per flush.
        if socket.feed(out).await.is_err() {
            return;
        }
        for _ in 1..WS_BATCH {
            let Some(m) = sub.try_next().and_then(text) else {
                break;
            };
            if socket.feed(m).await.is_err() {
                return;
            }
        }
        if socket.flush().await.is_err() {
            return;
        }
    }
}

/// Most events written to a WebSocket per flush.
const WS_BATCH: usize = 64;

/// A hub frame as a WebSocket text message (hub frames are built from `String`s: valid
/// UTF-8, checked without copying).
fn text(f: vcontap_live::Frame) -> Option<Message> {
    Utf8Bytes::try_from(f.json).ok().map(Message::Text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_compare() {
        assert!(ct_eq(b"abcdefghijklmnop", b"abcdefghijklmnop"));
        assert!(!ct_eq(b"abcdefghijklmnop", b"abcdefghijklmnoq"));
        assert!(!ct_eq(b"abcdefghijklmnop", b"abcdefghijklmno"));
        assert!(!ct_eq(b"", b"\xff"));
        assert!(ct_eq(b"", b""));
    }

    #[test]
    fn finished_vcons_are_found_in_the_output_layout() {
        let dir = std::env::temp_dir().join(format!("vcontap-outdir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        // 0x019b76daa800 ms = 2026-01-01T00:00:00Z: found by the uuid's date.
        let u1 = "019b76da-a800-895e-829f-2737e1fe9678";
        std::fs::create_dir_all(dir.join("2026/01/01")).unwrap();
        std::fs::write(dir.join(format!("2026/01/01/{u1}.vcon.json")), "{\"a\":1}").unwrap();
        assert_eq!(find_in_out_dir(&dir, u1).unwrap(), b"{\"a\":1}");
        // Filed under another date: found by the scan.
        let u2 = "019b76da-a800-895e-829f-2737e1fe0000";
        std::fs::create_dir_all(dir.join("2025/12/31")).unwrap();
        std::fs::write(dir.join(format!("2025/12/31/{u2}.vcon.json")), "{}").unwrap();
        assert_eq!(find_in_out_dir(&dir, u2).unwrap(), b"{}");
        assert!(find_in_out_dir(&dir, "019b76da-a800-895e-829f-2737e1fe1111").is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn no_token_means_loopback_only() {
        let mut s = ApiSettings {
            listen: Some("0.0.0.0:9100".parse().unwrap()),
            ..Default::default()
        };
        let e = s.check().unwrap_err().to_string();
        assert!(e.contains("not a loopback address"), "{e}");
        s.listen = Some("[::1]:9100".parse().unwrap());
        s.check().unwrap();
        s.listen = Some("0.0.0.0:9100".parse().unwrap());
        s.tokens = vec!["short".into()];
        assert!(s.check().is_err());
        s.tokens = vec!["0123456789abcdef0123".into()];
        s.check().unwrap();
        s.tls_cert = Some("c.pem".into());
        assert!(s.check().is_err());
    }

    #[test]
    fn uuid_check_keeps_paths_inside_the_output_dir() {
        assert!(valid_uuid("019b76da-a800-895e-829f-2737e1fe9678"));
        assert!(!valid_uuid("../../../../etc/passwd/aaaaaaaaaaaaaaaaaa"));
        assert!(!valid_uuid("019b76da-a800-895e-829f-2737e1fe967"));
    }
}
