//! The daemon's web side that is not the JSON API: the live calls page (`GET /`, assets
//! embedded in the binary), recordings (`GET /media/{file}`, see [`media`]) and the live
//! audio WebSocket (`GET /v1/calls/{uuid}/audio`, see [`crate::audio_ws`]).
//!
//! The page is plain HTML/CSS/JS under `src/web/` compiled in with `include_str!`: no CDN,
//! no build step, nothing read from disk at run time. It drives itself from the API's
//! `GET /v1/events` SSE stream and `GET /v1/vcons/{uuid}` (docs/live-page.md).
//!
//! `/media/` and the audio socket check the API's tokens themselves (the same three
//! carriers as `live_api`), failing closed until the driver set them; the page's own
//! files hold no data and are served to anyone who can reach the port. The routes read
//! their configuration from [`WebSlots`], filled in by the drivers after the server
//! started, so `api::serve` mounts them with one line.

pub mod media;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use vcontap_pipeline::AudioTee;

const INDEX_HTML: &str = include_str!("web/index.html");
const APP_JS: &str = include_str!("web/app.js");
const APP_CSS: &str = include_str!("web/app.css");

/// What the web routes serve from, filled in late: the HTTP server starts before the
/// Tap (and so the media store and the audio tee) exists, so the routes hold these slots
/// and answer 404 until they are set.
#[derive(Clone, Default)]
pub struct WebSlots(Arc<Slots>);

#[derive(Default)]
struct Slots {
    media_dir: OnceLock<PathBuf>,
    audio: OnceLock<Arc<AudioTee>>,
    /// The API tokens; until set, recordings and audio are refused (fail closed).
    tokens: OnceLock<Vec<Vec<u8>>>,
}

/// The token a request may carry in its query (`?access_token=`), for clients that cannot
/// set headers: `<audio src>`, the browser's WebSocket.
#[derive(serde::Deserialize, Default)]
pub struct TokenQuery {
    access_token: Option<String>,
}

impl WebSlots {
    /// The daemon's slots (one daemon per process), so `api::serve` mounts the routes
    /// with one line and the drivers fill them in without threading a value through it.
    pub fn global() -> WebSlots {
        static G: OnceLock<WebSlots> = OnceLock::new();
        G.get_or_init(WebSlots::default).clone()
    }

    /// Serves the local media store's directory under `/media/`.
    pub fn set_media_dir(&self, dir: PathBuf) {
        let _ = self.0.media_dir.set(dir);
    }

    /// Serves live audio from this tee.
    pub fn set_audio(&self, tee: Arc<AudioTee>) {
        let _ = self.0.audio.set(tee);
    }

    /// The API's tokens (none: the API is loopback only, see `ApiSettings::check`). Set
    /// before the server starts; `/media/` and the audio socket refuse everything until.
    pub fn set_tokens(&self, tokens: &[String]) {
        let _ = self
            .0
            .tokens
            .set(tokens.iter().map(|t| t.as_bytes().to_vec()).collect());
    }

    /// Checks a request's credentials as the rest of the API does: `Authorization: Bearer`,
    /// `x-conserver-api-token` or `?access_token=`; 401 without, 403 with a wrong one.
    #[allow(clippy::result_large_err)]
    pub(crate) fn authorize(&self, h: &HeaderMap, q: &TokenQuery) -> Result<(), Response> {
        let Some(tokens) = self.0.tokens.get() else {
            return Err((StatusCode::SERVICE_UNAVAILABLE, "starting\n").into_response());
        };
        if tokens.is_empty() {
            return Ok(());
        }
        let given = h
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .or_else(|| h.get("x-conserver-api-token").and_then(|v| v.to_str().ok()))
            .or(q.access_token.as_deref());
        let Some(given) = given else {
            return Err((
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "missing API token\n",
            )
                .into_response());
        };
        // Every token is compared in full, so timing says nothing about which matched.
        let mut ok = false;
        for t in tokens {
            ok |= ct_eq(t, given.trim().as_bytes());
        }
        if ok {
            Ok(())
        } else {
            Err((StatusCode::FORBIDDEN, "bad API token\n").into_response())
        }
    }

    pub(crate) fn media_dir(&self) -> Option<&PathBuf> {
        self.0.media_dir.get()
    }

    pub(crate) fn audio(&self) -> Option<&Arc<AudioTee>> {
        self.0.audio.get()
    }
}

/// The page, its assets, `/media/{file}` and `/v1/calls/{uuid}/audio`, ready to be merged
/// into the API router (they carry their own state).
pub fn routes(slots: WebSlots) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/assets/app.js", get(app_js))
        .route("/assets/app.css", get(app_css))
        .route("/media/{*file}", get(media::serve))
        .route("/v1/calls/{uuid}/audio", get(crate::audio_ws::handler))
        .with_state(slots)
}

/// Puts an audio tee in front of the driver's media store (when recording is on) and
/// registers it, and `local_dir` when the local store writes there, with
/// [`WebSlots::global`]. Returns the tee for the event handler ([`AudioTee::on_event`]).
pub fn tap_media(
    media: &mut Option<Arc<dyn vcontap_pipeline::MediaStore>>,
    local_dir: &std::path::Path,
) -> Option<Arc<AudioTee>> {
    let slots = WebSlots::global();
    if let Ok(d) = std::fs::canonicalize(local_dir) {
        slots.set_media_dir(d);
    }
    let tee = AudioTee::wrap(media.take()?);
    *media = Some(tee.clone());
    slots.set_audio(tee.clone());
    Some(tee)
}

/// Constant-time equality (time depends on the lengths only), as `live_api` does it.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0xff);
    }
    std::hint::black_box(diff) == 0
}

fn asset(ct: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, ct),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
}

async fn index() -> impl IntoResponse {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

async fn app_js() -> impl IntoResponse {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn app_css() -> impl IntoResponse {
    asset("text/css; charset=utf-8", APP_CSS)
}

/// Test helpers: the web routes on a loopback port, and a bare HTTP/1.1 client that sends
/// exactly the bytes it is given (so request targets like `/media/../x` reach the server
/// unnormalized).
#[cfg(test)]
pub(crate) mod testing {
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpStream};

    use super::{routes, WebSlots};

    /// Serves `routes(slots)` on 127.0.0.1 from a runtime kept alive by the caller (with no
    /// API token unless the slots already have some).
    pub fn server(slots: WebSlots) -> (tokio::runtime::Runtime, SocketAddr) {
        slots.set_tokens(&[]);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let l = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = l.local_addr().unwrap();
        rt.spawn(async move { axum::serve(l, routes(slots)).await });
        (rt, addr)
    }

    /// Status, headers (lower-case names) and body of one request.
    pub fn get(
        addr: SocketAddr,
        target: &str,
        extra: &str,
    ) -> (u16, Vec<(String, String)>, Vec<u8>) {
        let mut s = TcpStream::connect(addr).unwrap();
        write!(
            s,
            "GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{extra}\r\n"
        )
        .unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).unwrap();
        let end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = String::from_utf8_lossy(&raw[..end]).to_string();
        let body = raw[end + 4..].to_vec();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        (status, headers, body)
    }

    /// A header's value.
    pub fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
        h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{get, header, server};
    use super::*;

    #[test]
    fn page_and_assets_are_embedded() {
        let (_rt, addr) = server(WebSlots::default());
        let (st, h, body) = get(addr, "/", "");
        assert_eq!(st, 200);
        assert!(header(&h, "content-type").unwrap().starts_with("text/html"));
        let html = String::from_utf8(body).unwrap();
        assert!(html.contains("assets/app.js") && html.contains("id=\"live\""));
        let (st, h, js) = get(addr, "/assets/app.js", "");
        assert_eq!(st, 200);
        assert!(header(&h, "content-type")
            .unwrap()
            .starts_with("text/javascript"));
        assert!(String::from_utf8(js).unwrap().contains("EventSource"));
        assert_eq!(get(addr, "/assets/app.css", "").0, 200);
        // No media directory and no tee configured: 404s, not errors.
        assert_eq!(get(addr, "/media/x.wav", "").0, 404);
        assert_eq!(
            get(addr, "/v1/calls/abc/audio", "").0,
            400,
            "not a WebSocket upgrade"
        );
    }

    #[test]
    fn recordings_and_audio_need_the_api_token() {
        let dir = std::env::temp_dir().join(format!("vcontap-web-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a.wav"), b"RIFF").unwrap();
        let slots = WebSlots::default();
        slots.set_media_dir(dir);
        // Before the tokens are known (the server started early): refused.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let l = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = l.local_addr().unwrap();
        let app = routes(slots.clone());
        rt.spawn(async move { axum::serve(l, app).await });
        assert_eq!(get(addr, "/media/a.wav", "").0, 503);
        assert_eq!(get(addr, "/", "").0, 200, "the page holds nothing secret");

        slots.set_tokens(&["0123456789abcdef-token".into()]);
        let bearer = |t: &str| format!("Authorization: Bearer {t}\r\n");
        assert_eq!(get(addr, "/media/a.wav", "").0, 401);
        assert_eq!(get(addr, "/media/a.wav", &bearer("nope")).0, 403);
        let (st, _, body) = get(addr, "/media/a.wav", &bearer("0123456789abcdef-token"));
        assert_eq!((st, body.as_slice()), (200, &b"RIFF"[..]));
        assert_eq!(
            get(
                addr,
                "/media/a.wav?access_token=0123456789abcdef-tokenX",
                ""
            )
            .0,
            403
        );
        assert_eq!(
            get(addr, "/media/a.wav?access_token=0123456789abcdef-token", "").0,
            200
        );
        assert_eq!(
            get(
                addr,
                "/media/a.wav",
                "x-conserver-api-token: 0123456789abcdef-token\r\n"
            )
            .0,
            200
        );
        let ws = "Upgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                  Sec-WebSocket-Version: 13\r\n";
        assert_eq!(get(addr, "/v1/calls/x/audio", ws).0, 401);
        assert!(ct_eq(b"abc", b"abc") && !ct_eq(b"abc", b"abd") && !ct_eq(b"abc", b"ab"));
    }
}
