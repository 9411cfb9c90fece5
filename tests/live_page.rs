//! The live calls page in a real headless browser: `vcontap replay --pace realtime
//! --listen` of a project capture, Debian's `chromium` driven through `chromedriver`
//! (WebDriver over HTTP/JSON, spoken by the few functions below rather than a client
//! crate), assertions on the page's DOM as calls appear, change and end, recordings played
//! from the daemon's `/media/` (vCon urls pointing at it with `--media-base-url`), the
//! SIP ladder of a finished call, and a screenshot saved under the target directory.
//!
//! Skips with a message when `chromium` or `chromedriver` is not installed
//! (`apt-get install chromium chromium-driver`).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|f| f.is_file())
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP/1.1 request; the JSON body of the answer.
fn http(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    // chromedriver keeps connections open whatever the request says: read the head, then
    // Content-Length bytes (or chunks up to the last one).
    let mut raw = Vec::new();
    let mut buf = [0u8; 16384];
    let end = loop {
        if let Some(e) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break e;
        }
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "connection closed before the response head");
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let mut rest = raw[end + 4..].to_vec();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse::<usize>().unwrap());
    let chunked = head.contains("transfer-encoding: chunked");
    loop {
        let done = match length {
            Some(n) => rest.len() >= n,
            None if chunked => rest.windows(5).any(|w| w == b"0\r\n\r\n"),
            None => false,
        };
        if done {
            break;
        }
        let n = s.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        rest.extend_from_slice(&buf[..n]);
    }
    if chunked {
        rest = dechunk(&rest);
    }
    (status, rest)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(nl) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let n = usize::from_str_radix(String::from_utf8_lossy(&b[..nl]).trim(), 16).unwrap_or(0);
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[nl + 2..nl + 2 + n]);
        b = &b[nl + 2 + n + 2..];
    }
}

/// A WebDriver session (W3C protocol) on a chromedriver.
struct Driver {
    addr: SocketAddr,
    session: String,
}

impl Driver {
    fn cmd(&self, method: &str, what: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{what}", self.session);
        let (st, b) = http(self.addr, method, &path, body.as_ref());
        let v: Value = serde_json::from_slice(&b).unwrap_or(Value::Null);
        assert_eq!(st, 200, "{method} {what}: {v}");
        v["value"].clone()
    }

    fn js(&self, script: &str) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
    }

    fn wait(&self, what: &str, timeout: Duration, script: &str) -> Value {
        let t0 = Instant::now();
        loop {
            let v = self.js(script);
            if !v.is_null() && v != Value::Bool(false) {
                return v;
            }
            assert!(t0.elapsed() < timeout, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Standard base64 (for the screenshot), decoded by hand: 12 lines instead of a crate.
fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let clean: Vec<u8> = s
        .bytes()
        .filter(|c| *c != b'=' && !c.is_ascii_whitespace())
        .collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for ch in clean.chunks(4) {
        let n = ch
            .iter()
            .enumerate()
            .fold(0u32, |a, (i, &c)| a | u32::from(val(c)) << (18 - 6 * i));
        out.extend_from_slice(&n.to_be_bytes()[1..ch.len()]);
    }
    out
}

impl Drop for Driver {
    /// Ends the session (and so the browser) even when an assertion failed; never panics.
    fn drop(&mut self) {
        if let Ok(mut s) = TcpStream::connect(self.addr) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            let _ = write!(
                s,
                "DELETE /session/{} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\n\r\n",
                self.session, self.addr
            );
            let _ = s.read(&mut [0u8; 1024]);
        }
    }
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The page's view of the calls: live rows (uuid → state, duration, marks), finished rows.
const SNAPSHOT_JS: &str = r#"
const rows = (sel) => [...document.querySelectorAll(sel + ' tbody tr')].map(r => ({
  uuid: r.dataset.uuid, state: r.dataset.state,
  duration: (r.querySelector('.duration') || {}).textContent,
  marks: (r.querySelector('.marks') || {textContent: ''}).textContent,
  audio: r.querySelectorAll('audio').length,
  cells: [...r.cells].map(c => c.textContent),
}));
return {conn: document.getElementById('conn').textContent, live: rows('#live'), finished: rows('#finished')};
"#;

#[test]
fn live_page_in_a_headless_browser() {
    live_page("open", None);
}

/// The same with an API token: the page takes it from its URL fragment and adds it to its
/// own requests (event stream, vCon fetches, recordings).
#[test]
fn live_page_with_an_api_token() {
    live_page("token", Some("live-page-test-token-0123456789"));
}

impl Driver {
    /// Saves a screenshot as `target/tmp/NAME.png` and prints where.
    fn screenshot(&self, name: &str) -> PathBuf {
        let png = base64_decode(self.cmd("GET", "/screenshot", None).as_str().unwrap());
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
        let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}.png"));
        std::fs::write(&shot, &png).unwrap();
        eprintln!("screenshot: {}", shot.display());
        shot
    }
}

fn live_page(name: &str, token: Option<&str>) {
    let (Some(chromium), Some(chromedriver)) = (which("chromium"), which("chromedriver")) else {
        eprintln!(
            "skipped: chromium and chromedriver not installed (apt-get install chromium chromium-driver)"
        );
        return;
    };
    let dir = common::tmpdir(&format!("live-page-{name}"));
    let out = dir.join("out");
    let profile = dir.join("chrome-profile");

    // chromedriver first, so the browser is ready before the replay starts.
    let wd_port = free_port();
    let _wd = Kill(
        Command::new(&chromedriver)
            .arg(format!("--port={wd_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver"),
    );
    let wd: SocketAddr = format!("127.0.0.1:{wd_port}").parse().unwrap();
    let t0 = Instant::now();
    while TcpStream::connect(wd).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "chromedriver did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (st, b) = http(
        wd,
        "POST",
        "/session",
        Some(&json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1400,1000", "--autoplay-policy=no-user-gesture-required",
                         format!("--user-data-dir={}", profile.display())]
            }
        }}})),
    );
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(st, 200, "new session: {v}");
    let driver = Driver {
        addr: wd,
        session: v["value"]["sessionId"].as_str().unwrap().to_string(),
    };

    // The daemon: realtime replay of demo.pcap (4 calls over ~8 s: 3 answered with DTMF
    // and a hold, 1 busy), waiting for the page's event stream before it starts.
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let capture = Path::new(env!("CARGO_MANIFEST_DIR")).join("captures/demo.pcap");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vcontap"));
    cmd.arg("replay");
    if let Some(t) = token {
        let f = dir.join("tokens");
        std::fs::write(&f, format!("# test\n{t}\n")).unwrap();
        cmd.arg("--api-token-file").arg(f);
    }
    let mut vcontap = Kill(
        cmd.arg(&capture)
            .args(["--pace", "realtime", "--record", "stereo", "--quiet"])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--media-base-url", &format!("{base}/media")])
            .args(["--wait-subscribers", "1", "--linger", "60"])
            .args(["--host", "test.vcontap.example"])
            .arg("--out")
            .arg(&out)
            .arg("--spool")
            .arg(common::spool_for(&out))
            .stderr(Stdio::piped())
            .spawn()
            .expect("start vcontap"),
    );
    let api: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let t0 = Instant::now();
    while TcpStream::connect(api).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "vcontap did not listen"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let page = match token {
        Some(t) => format!("{base}/#access_token={t}"),
        None => format!("{base}/"),
    };
    driver.cmd("POST", "/url", Some(json!({"url": page})));

    // Watch the page while the calls happen.
    let mut states: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut durations: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut marks = BTreeSet::new();
    // The quality cell of live rows: the engine's "quality so far" (`replay --pace
    // realtime` has it on), so a call shows MOS before it ends.
    let mut live_quality = BTreeSet::new();
    let mut max_live = 0;
    let mut connected = false;
    let mut listened: Option<String> = None;
    let t0 = Instant::now();
    let last = loop {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "calls did not end on the page"
        );
        let snap = driver.js(SNAPSHOT_JS);
        connected |= snap["conn"] == "live";
        let live = snap["live"].as_array().unwrap();
        if live.len() >= 2 && max_live < 2 {
            driver.screenshot(&format!("live-page-{name}-in-progress"));
        }
        max_live = max_live.max(live.len());
        if listened.is_none() {
            // Listen to the first answered call live (the detail view's button).
            if let Some(r) = live.iter().find(|r| r["state"] == "answered") {
                let u = r["uuid"].as_str().unwrap().to_string();
                // The call may have ended since the snapshot: then try the next one.
                let clicked = driver.js(&format!(
                    r#"const td = document.querySelector('#live tr[data-uuid="{u}"] td');
                       if (!td) return false; td.click(); return true;"#
                ));
                if clicked != Value::Bool(true) {
                    continue;
                }
                driver.wait(
                    "the Listen live button",
                    Duration::from_secs(5),
                    "const b = document.getElementById('listen-btn'); if (!b) return false; b.click(); return true;",
                );
                listened = Some(u);
            }
        }
        for r in live {
            let u = r["uuid"].as_str().unwrap().to_string();
            states
                .entry(u.clone())
                .or_default()
                .insert(r["state"].as_str().unwrap().into());
            durations
                .entry(u)
                .or_default()
                .insert(r["duration"].as_str().unwrap().into());
            let m = r["marks"].as_str().unwrap();
            if !m.is_empty() {
                marks.insert(m.to_string());
            }
            live_quality.insert(r["cells"][5].as_str().unwrap().to_string());
        }
        if live.is_empty() && snap["finished"].as_array().unwrap().len() == 4 {
            break snap;
        }
        std::thread::sleep(Duration::from_millis(150));
    };
    assert!(connected, "the page's event stream connected");
    assert!(
        max_live >= 2,
        "demo.pcap has 2 concurrent calls: {max_live}"
    );
    assert_eq!(states.len(), 4, "every call was shown live: {states:?}");
    let all_states: BTreeSet<&String> = states.values().flatten().collect();
    for s in ["answered", "held"] {
        assert!(
            all_states.iter().any(|x| *x == s),
            "state {s} shown: {all_states:?}"
        );
    }
    assert!(
        durations
            .values()
            .any(|d| d.iter().filter(|x| *x != "—").count() >= 2),
        "durations tick: {durations:?}"
    );
    assert!(
        marks.iter().any(|m| m.contains("DTMF 1")),
        "DTMF marks: {marks:?}"
    );
    assert!(
        marks.iter().any(|m| m.contains("hold")),
        "hold marks: {marks:?}"
    );
    assert!(
        live_quality.iter().any(|q| q.starts_with("MOS ")),
        "quality so far shown on live rows: {live_quality:?}"
    );

    // The live audio played in the page: 20 ms frames of the call's stereo PCM, then the end.
    assert!(listened.is_some(), "an answered call was listened to");
    let heard = driver.wait(
        "the end of the live audio",
        Duration::from_secs(10),
        r#"const l = document.getElementById('listen');
           return /call ended/.test(l.textContent) ? {...l.dataset, text: l.textContent} : false;"#,
    );
    let frames: u64 = heard["frames"].as_str().unwrap().parse().unwrap();
    assert!(frames >= 25, "at least 0.5 s of audio heard live: {heard}");
    assert_eq!(heard["channels"], "2", "{heard}");
    let rate: u32 = heard["rate"].as_str().unwrap().parse().unwrap();
    assert!(rate == 8000 || rate == 16000, "{heard}");
    driver.js("document.getElementById('detail-close').click(); return null;");

    // Finished: 3 answered with recordings playable from the daemon, 1 busy.
    let finished = last["finished"].as_array().unwrap();
    let with_audio = finished
        .iter()
        .filter(|r| r["audio"].as_u64().unwrap() > 0)
        .count();
    assert_eq!(with_audio, 3, "{finished:?}");
    assert!(finished
        .iter()
        .any(|r| r["cells"][3].as_str().unwrap().contains("busy")));
    let audio = driver.wait(
        "a recording to load through /media/",
        Duration::from_secs(20),
        r#"const a = document.querySelector('#finished audio');
           if (!a) return false;
           if (a.readyState < 1) { a.load(); return false; }
           return {src: a.currentSrc, duration: a.duration};"#,
    );
    assert!(
        audio["src"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{base}/media/")),
        "{audio}"
    );
    let secs = audio["duration"].as_f64().unwrap();
    assert!(secs > 0.5 && secs < 2.0, "a 1 s segment: {secs}");

    // Filter by the busy call's callee number.
    let busy = finished
        .iter()
        .find(|r| r["cells"][3].as_str().unwrap().contains("busy"))
        .unwrap();
    let busy_uuid = busy["uuid"].as_str().unwrap();
    driver.js(&format!(
        r#"const f = document.getElementById('f-party');
           f.value = '{}'; f.dispatchEvent(new Event('input')); return null;"#,
        busy["cells"][2]
            .as_str()
            .unwrap()
            .chars()
            .filter(|c| c.is_ascii_digit() || *c == '+')
            .collect::<String>()
    ));
    let rows = driver.wait(
        "the party filter",
        Duration::from_secs(5),
        r#"const r = [...document.querySelectorAll('#finished tbody tr')].map(r => r.dataset.uuid);
           return r.length === 1 ? r : false;"#,
    );
    assert_eq!(rows, json!([busy_uuid]));
    driver.js(
        r#"const f = document.getElementById('f-party'); f.value = ''; f.dispatchEvent(new Event('input')); return null;"#,
    );

    // Detail of an answered call: the SIP ladder from its trace.
    let answered = finished
        .iter()
        .find(|r| r["audio"].as_u64().unwrap() > 0)
        .unwrap();
    // (Rows are re-rendered on the next animation frame after the filter changed.)
    driver.wait(
        "the finished row to click",
        Duration::from_secs(5),
        &format!(
            r#"const td = document.querySelector('#finished tr[data-uuid="{}"] td');
               if (!td) return false; td.click(); return true;"#,
            answered["uuid"].as_str().unwrap()
        ),
    );
    let labels = driver.wait(
        "the SIP ladder",
        Duration::from_secs(10),
        r#"const l = [...document.querySelectorAll('#detail:not([hidden]) .ladder [data-label]')].map(e => e.dataset.label);
           return l.length ? l : false;"#,
    );
    let labels: Vec<&str> = labels
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    for want in ["INVITE", "180 Ringing", "200 OK", "ACK", "BYE"] {
        assert!(labels.contains(&want), "{want} in the ladder: {labels:?}");
    }
    let hosts = driver.js(
        "return [...document.querySelectorAll('#detail .ladder .host')].map(e => e.textContent);",
    );
    assert!(hosts.as_array().unwrap().len() >= 2, "{hosts}");

    // The screenshot (detail open over the finished calls).
    driver.screenshot(&format!("live-page-{name}-detail"));
    if token.is_some() {
        // Outside the browser, without the token: refused.
        let file = audio["src"]
            .as_str()
            .unwrap()
            .split("/media/")
            .nth(1)
            .unwrap();
        let file = file.split('?').next().unwrap();
        assert_eq!(http(api, "GET", &format!("/media/{file}"), None).0, 401);
    }

    drop(driver);
    let _ = vcontap.0.kill();
    let _ = vcontap.0.wait();
    let mut err = String::new();
    if let Some(mut e) = vcontap.0.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    assert!(!err.contains("panicked"), "{err}");
    // The vCons the daemon wrote (their urls point at its /media/) are valid.
    let files = common::vcon_files(&out);
    assert_eq!(files.len(), 4);
    let paths: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    common::validate(&paths);
}
