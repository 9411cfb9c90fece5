//! The daemon's web side that is not the JSON API: the live calls page (`GET /`, assets
//! embedded in the binary), recordings (`GET /media/{file}`, see [`media`]) and the live
//! audio WebSocket (`GET /v1/calls/{uuid}/audio`, see [`crate::audio_ws`]).
//!
//! The page is plain HTML/CSS/JS under `src/web/` compiled in with `include_str!`: no CDN,
//! no build step, nothing read from disk at run time. It drives itself from the API's
//! `GET /v1/events` SSE stream and `GET /v1/vcons/{uuid}` (docs/live-page.md).

pub mod media;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use axum::http::header;
use axum::response::IntoResponse;
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

    /// Serves `routes(slots)` on 127.0.0.1 from a runtime kept alive by the caller.
    pub fn server(slots: WebSlots) -> (tokio::runtime::Runtime, SocketAddr) {
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
}
