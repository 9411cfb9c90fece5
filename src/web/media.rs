//! `GET /media/{file}`: the recordings of the local media store (`LocalFiles`, flat
//! `<uuid>-NNN.wav` files), so vCon `url`s can point at the daemon (`media_base_url` =
//! `http://ADDR/media`), with single HTTP range requests (RFC 9110 §14) so `<audio>`
//! elements can seek.
//!
//! Hand-written rather than tower-http's `ServeDir`: its `fs` feature would bring
//! `mime_guess`, `http-range-header`, `tokio-util` and tokio's `fs` for a directory of one
//! file type and a flat name space; here a name is accepted only if it is a plain file name
//! of `[A-Za-z0-9._-]` not starting with a dot, so no traversal (`..`, `/`, `\`, encoded or
//! not) can name anything outside the directory, and symlinks leaving it are refused too.
//! Bodies are streamed in 64 KiB chunks read on the blocking pool: a recording is never
//! held in memory.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// Bytes read per chunk of a streamed body.
const CHUNK: usize = 64 * 1024;
/// Longest file name served.
const MAX_NAME: usize = 255;

/// What a `Range` header asks of a body of `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeReq {
    /// No (usable) range: the whole body, 200.
    Full,
    /// Bytes `start..=end`, 206.
    Part { start: u64, end: u64 },
    /// Nothing of the body is in the range: 416.
    Unsatisfiable,
}

/// Parses a `Range` header value for a body of `len` bytes. Only one `bytes` range is
/// honoured; several ranges, other units or malformed values get the whole body (RFC 9110
/// lets a server ignore `Range`).
pub fn parse_range(v: &str, len: u64) -> RangeReq {
    let Some(spec) = v.trim().strip_prefix("bytes=") else {
        return RangeReq::Full;
    };
    if spec.contains(',') {
        return RangeReq::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeReq::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    let num = |s: &str| -> Option<u64> {
        if s.is_empty() || s.len() > 19 || !s.bytes().all(|c| c.is_ascii_digit()) {
            None
        } else {
            s.parse().ok()
        }
    };
    match (a.is_empty(), b.is_empty()) {
        // `bytes=-N`: the last N bytes.
        (true, false) => match num(b) {
            Some(0) => RangeReq::Unsatisfiable,
            Some(n) if len > 0 => RangeReq::Part {
                start: len.saturating_sub(n),
                end: len - 1,
            },
            Some(_) => RangeReq::Unsatisfiable,
            None => RangeReq::Full,
        },
        // `bytes=S-`: from S to the end.
        (false, true) => match num(a) {
            Some(s) if s < len => RangeReq::Part {
                start: s,
                end: len - 1,
            },
            Some(_) => RangeReq::Unsatisfiable,
            None => RangeReq::Full,
        },
        (false, false) => match (num(a), num(b)) {
            (Some(s), Some(e)) if s <= e => {
                if s >= len {
                    RangeReq::Unsatisfiable
                } else {
                    RangeReq::Part {
                        start: s,
                        end: e.min(len - 1),
                    }
                }
            }
            _ => RangeReq::Full,
        },
        (true, true) => RangeReq::Full,
    }
}

/// A file name the media directory may serve: one plain component, nothing hidden.
pub fn safe_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()) {
        Some(e) if e == "wav" => "audio/wav",
        Some(e) if e == "mp3" => "audio/mpeg",
        Some(e) if e == "ogg" || e == "opus" => "audio/ogg",
        _ => "application/octet-stream",
    }
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "no such recording\n").into_response()
}

/// Opens `dir/name` if it is a regular file inside `dir` (after resolving symlinks).
fn open_inside(dir: &Path, name: &str) -> Option<(std::fs::File, u64, std::time::SystemTime)> {
    let path = dir.join(name);
    let real = std::fs::canonicalize(&path).ok()?;
    let root = std::fs::canonicalize(dir).ok()?;
    if real.parent()? != root {
        return None;
    }
    let f = std::fs::File::open(&real).ok()?;
    let meta = f.metadata().ok()?;
    if !meta.is_file() {
        return None;
    }
    let modified = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
    Some((f, meta.len(), modified))
}

/// The handler: `dir` is the media directory.
pub async fn serve(
    State(slots): State<super::WebSlots>,
    UrlPath(name): UrlPath<String>,
    Query(q): Query<super::TokenQuery>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = slots.authorize(&headers, &q) {
        return r;
    }
    let Some(dir) = slots.media_dir().cloned() else {
        return not_found();
    };
    if !safe_name(&name) {
        return not_found();
    }
    let opened = {
        let name = name.clone();
        tokio::task::spawn_blocking(move || open_inside(&dir, &name)).await
    };
    let Ok(Some((file, len, modified))) = opened else {
        return not_found();
    };
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map_or(RangeReq::Full, |v| parse_range(v, len));
    let (status, start, end) = match range {
        RangeReq::Full => (StatusCode::OK, 0, len),
        RangeReq::Part { start, end } => (StatusCode::PARTIAL_CONTENT, start, end + 1),
        RangeReq::Unsatisfiable => {
            let mut r = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return r;
        }
    };
    let mut r = Response::new(body(file, start, end - start));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(&name)),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
    if let Ok(v) = HeaderValue::from_str(&httpdate(modified)) {
        h.insert(header::LAST_MODIFIED, v);
    }
    if status == StatusCode::PARTIAL_CONTENT {
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{len}", end - 1)) {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    r
}

/// `len` bytes of `file` from `start`, read in chunks on the blocking pool.
fn body(file: std::fs::File, start: u64, len: u64) -> Body {
    struct St {
        file: Option<std::fs::File>,
        pos: u64,
        left: u64,
    }
    let st = St {
        file: Some(file),
        pos: start,
        left: len,
    };
    let stream = futures_util::stream::unfold(st, |mut st| async move {
        if st.left == 0 {
            return None;
        }
        let mut file = st.file.take()?;
        let (pos, want) = (st.pos, st.left.min(CHUNK as u64) as usize);
        let read = tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; want];
            let r = file
                .seek(SeekFrom::Start(pos))
                .and_then(|_| file.read(&mut buf));
            (file, buf, r)
        })
        .await;
        match read {
            Ok((file, mut buf, Ok(n))) if n > 0 => {
                buf.truncate(n);
                st.file = Some(file);
                st.pos += n as u64;
                st.left -= n as u64;
                Some((Ok::<_, std::io::Error>(bytes::Bytes::from(buf)), st))
            }
            // The file shrank or failed: end the body (the client sees it short).
            Ok((_, _, Ok(_))) => None,
            Ok((_, _, Err(e))) => Some((Err(e), st)),
            Err(e) => Some((Err(std::io::Error::other(e.to_string())), st)),
        }
    });
    Body::from_stream(stream)
}

/// An HTTP date (RFC 9110 §5.6.7, IMF-fixdate).
fn httpdate(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = vcontap_vcon::civil_from_days(days);
    // 1970-01-01 was a Thursday.
    let wd = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"]
        .get(days.rem_euclid(7) as usize)
        .copied()
        .unwrap_or("Thu");
    let mon = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .get((m as usize).saturating_sub(1))
    .copied()
    .unwrap_or("Jan");
    format!(
        "{wd}, {d:02} {mon} {y} {:02}:{:02}:{:02} GMT",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        use RangeReq::*;
        assert_eq!(parse_range("bytes=0-99", 1000), Part { start: 0, end: 99 });
        assert_eq!(
            parse_range("bytes=900-", 1000),
            Part {
                start: 900,
                end: 999
            }
        );
        assert_eq!(
            parse_range("bytes=-100", 1000),
            Part {
                start: 900,
                end: 999
            }
        );
        assert_eq!(
            parse_range("bytes=-5000", 1000),
            Part { start: 0, end: 999 }
        );
        assert_eq!(
            parse_range("bytes=990-5000", 1000),
            Part {
                start: 990,
                end: 999
            }
        );
        assert_eq!(parse_range("bytes=1000-", 1000), Unsatisfiable);
        assert_eq!(parse_range("bytes=1000-1001", 1000), Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 1000), Unsatisfiable);
        assert_eq!(parse_range("bytes=0-", 0), Unsatisfiable);
        // Ignored (whole body): other units, several ranges, garbage, reversed.
        for v in [
            "items=0-1",
            "bytes=0-1,5-6",
            "bytes=a-b",
            "bytes=5-1",
            "bytes=-",
            "bytes=",
            "bytes=99999999999999999999999-",
            "bytes=+1-2",
            "",
            "bytes=0-1-2",
        ] {
            assert_eq!(parse_range(v, 1000), Full, "{v}");
        }
    }

    /// Hostile headers: many random strings over the grammar's alphabet; never a panic,
    /// and a partial answer always lies inside the body.
    #[test]
    fn random_ranges_stay_in_bounds() {
        let alphabet = b"bytes=-,0123456789 9-";
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..100_000 {
            let n = (next() % 24) as usize;
            let mut v = String::from(if next() % 2 == 0 { "bytes=" } else { "" });
            for _ in 0..n {
                v.push(char::from(
                    alphabet[(next() % alphabet.len() as u64) as usize],
                ));
            }
            let len = next() % 2000;
            match parse_range(&v, len) {
                RangeReq::Part { start, end } => {
                    assert!(start <= end && end < len, "{v:?} {len}: {start}-{end}")
                }
                RangeReq::Full | RangeReq::Unsatisfiable => {}
            }
        }
    }

    #[test]
    fn names() {
        assert!(safe_name("019b76da-a800-895e-829f-2737e1fe9678-000.wav"));
        for bad in [
            "",
            ".",
            "..",
            "../x.wav",
            "a/b.wav",
            "a\\b.wav",
            ".hidden",
            "x.wav\0",
            "x%2e.wav",
            "é.wav",
            &"a".repeat(256),
        ] {
            assert!(!safe_name(bad), "{bad:?}");
        }
    }

    /// A media directory with one recording, and a secret beside it.
    fn media_dir(name: &str) -> (std::path::PathBuf, Vec<u8>) {
        let root = std::env::temp_dir().join(format!("vcontap-web-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let dir = root.join("media");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(root.join("secret.txt"), b"TOP SECRET").unwrap();
        // Bigger than one streamed chunk, with a pattern so offsets are checked.
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(dir.join("019b-000.wav"), &data).unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(root.join("secret.txt"), dir.join("link.wav")).unwrap();
        (dir, data)
    }

    #[test]
    fn serves_files_whole_and_by_range() {
        use crate::web::testing::{get, header, server};
        let (dir, data) = media_dir("range");
        let slots = crate::web::WebSlots::default();
        slots.set_media_dir(dir);
        let (_rt, addr) = server(slots);

        let (st, h, body) = get(addr, "/media/019b-000.wav", "");
        assert_eq!(st, 200);
        assert_eq!(body, data);
        assert_eq!(header(&h, "content-type"), Some("audio/wav"));
        assert_eq!(header(&h, "accept-ranges"), Some("bytes"));
        assert_eq!(header(&h, "content-length"), Some("200000"));
        assert!(header(&h, "last-modified").unwrap().ends_with(" GMT"));

        let (st, h, body) = get(addr, "/media/019b-000.wav", "Range: bytes=100-199\r\n");
        assert_eq!(st, 206);
        assert_eq!(body, &data[100..200]);
        assert_eq!(header(&h, "content-range"), Some("bytes 100-199/200000"));

        // Open-ended, across chunk boundaries, and a suffix.
        let (st, _, body) = get(addr, "/media/019b-000.wav", "Range: bytes=65000-\r\n");
        assert_eq!(st, 206);
        assert_eq!(body, &data[65000..]);
        let (st, h, body) = get(addr, "/media/019b-000.wav", "Range: bytes=-10\r\n");
        assert_eq!((st, body.as_slice()), (206, &data[199_990..]));
        assert_eq!(
            header(&h, "content-range"),
            Some("bytes 199990-199999/200000")
        );

        let (st, h, _) = get(addr, "/media/019b-000.wav", "Range: bytes=300000-\r\n");
        assert_eq!(st, 416);
        assert_eq!(header(&h, "content-range"), Some("bytes */200000"));
        // Several ranges: the whole file (allowed by RFC 9110).
        let (st, _, body) = get(addr, "/media/019b-000.wav", "Range: bytes=0-1,5-6\r\n");
        assert_eq!((st, body.len()), (200, data.len()));
        assert_eq!(get(addr, "/media/nope.wav", "").0, 404);
    }

    #[test]
    fn path_traversal_is_refused() {
        use crate::web::testing::{get, server};
        let (dir, _) = media_dir("traversal");
        let slots = crate::web::WebSlots::default();
        slots.set_media_dir(dir);
        let (_rt, addr) = server(slots);
        for target in [
            "/media/../secret.txt",
            "/media/..%2fsecret.txt",
            "/media/%2e%2e%2fsecret.txt",
            "/media/%2E%2E/secret.txt",
            "/media/..%5csecret.txt",
            "/media/./../secret.txt",
            "/media//etc/passwd",
            "/media/%2fetc%2fpasswd",
            "/media/..",
            "/media/.",
            "/media/",
            "/media/link.wav",
            "/media/019b-000.wav%00.txt",
            "/media/019b-000.wav/..",
        ] {
            let (st, _, body) = get(addr, target, "");
            assert_ne!(st, 200, "{target}");
            assert_ne!(st, 206, "{target}");
            let body = String::from_utf8_lossy(&body);
            assert!(!body.contains("TOP SECRET"), "{target}");
            assert!(!body.contains("root:"), "{target}");
        }
    }

    #[test]
    fn http_dates() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(784_111_777);
        assert_eq!(httpdate(t), "Sun, 06 Nov 1994 08:49:37 GMT");
    }
}
