//! Live API benchmark: latency from the engine handing an event to the hub
//! (`Hub::publish`, what the Tap's event handler calls) to an SSE or WebSocket subscriber on
//! loopback, with 1,000 concurrent calls and 100 subscribers; events/s delivered to 100
//! subscribers; server CPU per subscriber.
//!
//! Two latencies are measured for every (event, subscriber) pair:
//! - **added by the API**: publish → the last byte of that event's frame accepted by the
//!   kernel on that subscriber's socket. The server's accepted sockets are wrapped
//!   ([`TimedIo`]) and every write is walked as HTTP/1.1 chunked (SSE) or WebSocket framing,
//!   so the instant is taken on the server thread right after the `write`/`writev` returns.
//!   This is the API's own cost (hub, subscription, axum/hyper or tungstenite, the syscall),
//!   and what the target is about; on loopback the kernel hands the bytes to the
//!   peer's socket inside that same syscall.
//! - **at the client**: publish → the client task reading the frame. On one 2-core VM this
//!   also holds the 100 clients' own scheduling (they share the cores with the server);
//!   their threads run under SCHED_IDLE (`VCONTAP_BENCH_CLIENT_SCHED`) so that they stand in
//!   for subscribers on other hosts instead of taking the server's CPU.
//!
//! Run with `cargo bench --bench live_api`. The server is the CLI's own code: the real
//! `src/live_api.rs` routes served by `src/shards.rs` (per-core runtimes, a relay each, as
//! `api::serve` starts them; `src/tls.rs` is compiled in because they name it); clients run
//! on their own runtime so their CPU is not counted as the server's (threads are told apart
//! by name in /proc).
//!
//! Phases (results and their reading: docs/PERFORMANCE.md):
//! 1. `latency-sse` / `latency-ws` (and `-200`): 1,000 calls created, then `updated` events
//!    round-robin over them at a steady 2,000 (200) events/s for 5 s; both latencies above
//!    (p50/p99/p99.9/max), server CPU per subscriber. `raw-sse` (and `-200`): the same load
//!    on the floor server ([`raw_server`]), to tell the API's own latency from the machine's.
//! 2. `throughput-sse`: the publisher emits as fast as it can; events/s delivered to 100
//!    subscribers, and how many they lost (gaps) when they could not keep up.
//! 3. `publish`: cost of `Hub::publish` alone (no subscriber, 100 subscribers).
//!
//! Knobs: `VCONTAP_BENCH_ONLY` = `latency` | `throughput` | `publish`, or one latency
//! phase (`raw-sse-200`, `latency-sse-200`, `latency-ws-200`, `raw-sse`, `latency-sse`,
//! `latency-ws`); `VCONTAP_BENCH_DEBUG`: per sampled event, how many subscribers each server
//! thread wrote to and when (first/last, µs after publish);
//! `VCONTAP_BENCH_SERVER=multi`: serve with one 2-worker multi-threaded runtime (the design
//! before per-core shards), for comparison;
//! `VCONTAP_BENCH_CLIENT_SCHED` = `idle` (default: the client threads under SCHED_IDLE) |
//! a nice level (`10`) | `0` (clients at the server's priority).

#![allow(dead_code, unused_imports)]

#[path = "../src/live_api.rs"]
mod live_api;
#[path = "../src/shards.rs"]
mod shards;
#[path = "../src/tls.rs"]
mod tls;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::AsyncReadExt;
use tokio::io::AsyncWriteExt;
use vcontap_engine::{EventKind, VconEvent};
use vcontap_live::{Hub, HubConfig};
use vcontap_wire::Timestamp;

const CALLS: usize = 1000;
const SUBSCRIBERS: usize = 100;

/// A realistic mid-call snapshot (~1.3 KB, like the demo capture's `updated` events).
fn snapshot(call: usize, seq: u64) -> String {
    serde_json::json!({
        "vcon": "0.4.0",
        "uuid": format!("c{call:04}"),
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:01Z",
        "extensions": ["sip-signaling", "vcontap"],
        "parties": [
            {"tel": format!("+1555010{call:04}"), "sip": format!("sip:+1555010{call:04}@synth.example;user=phone"),
             "name": "Niaj Miller", "validation": "none", "role": "caller", "sip_display_name": "Niaj Miller",
             "sip_user_agent": "vcontap-synth/0.1.0"},
            {"tel": format!("+1555200{call:04}"), "sip": format!("sip:+1555200{call:04}@synth.example;user=phone"),
             "name": "Niaj Smith", "validation": "none", "role": "callee", "sip_display_name": "Niaj Smith"}
        ],
        "vcontap": {
            "answered_at": "2026-01-01T00:00:01.838Z", "invite_at": "2026-01-01T00:00:00Z",
            "sip_call_id": format!("ba3b85a8aa36f368714acba4-{call:08}@synth.example"),
            "state": if seq.is_multiple_of(2) { "answered" } else { "held" },
            "party_history": (0..seq.min(8)).map(|i| serde_json::json!({
                "button": "1", "event": "keydown", "party": 0, "time": format!("2026-01-01T00:00:0{i}.854Z")
            })).collect::<Vec<_>>(),
        }
    })
    .to_string()
}

fn event(call: usize, seq: u64, at_ns: i64) -> VconEvent {
    VconEvent {
        uuid: format!("c{call:04}").into(),
        seq,
        kind: if seq == 1 {
            EventKind::Created
        } else {
            EventKind::Updated
        },
        at: Timestamp(at_ns),
        reason: None,
        vcon_json: snapshot(call, seq).into(),
    }
}

/// CPU seconds (user + system) of this process's threads whose name starts with `prefix`.
fn thread_cpu(prefix: &str) -> f64 {
    let tick = 100.0; // USER_HZ on Linux
    let mut total = 0u64;
    if let Ok(rd) = std::fs::read_dir("/proc/self/task") {
        for t in rd.flatten() {
            let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            if !comm.starts_with(prefix) {
                continue;
            }
            let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
            // Fields after the ")" of comm: state is 3rd; utime 14th, stime 15th overall.
            if let Some(rest) = stat.rsplit_once(')').map(|x| x.1) {
                let f: Vec<&str> = rest.split_whitespace().collect();
                let u: u64 = f.get(11).and_then(|x| x.parse().ok()).unwrap_or(0);
                let s: u64 = f.get(12).and_then(|x| x.parse().ok()).unwrap_or(0);
                total += u + s;
            }
        }
    }
    total as f64 / tick
}

/// Per-event publish instants, indexed by `(seq - 1) * CALLS + call`.
struct Clock0 {
    start: Instant,
    sent: Vec<AtomicU64>,
}

impl Clock0 {
    fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }
    fn index(id: &str) -> Option<usize> {
        let (u, s) = id.split_once(':')?;
        let call: usize = u.strip_prefix('c')?.parse().ok()?;
        let seq: usize = s.parse().ok()?;
        Some((seq - 1) * CALLS + call)
    }
}

/// Where the server's write taps put their instants: `at[conn * total + k]` = ns (since
/// [`Clock0::start`]) when event `k`'s frame was fully accepted by subscriber `conn`'s
/// socket; 0 = not seen.
struct Written {
    total: usize,
    at: Vec<AtomicU64>,
    /// Which server thread wrote it (debug: `VCONTAP_BENCH_DEBUG`).
    by: Vec<std::sync::atomic::AtomicU8>,
    next_conn: AtomicUsize,
}

impl Written {
    fn new(total: usize) -> Written {
        Written {
            total,
            at: (0..total * SUBSCRIBERS)
                .map(|_| AtomicU64::new(0))
                .collect(),
            by: (0..total * SUBSCRIBERS)
                .map(|_| std::sync::atomic::AtomicU8::new(0))
                .collect(),
            next_conn: AtomicUsize::new(0),
        }
    }
}

static NEXT_WORKER: AtomicUsize = AtomicUsize::new(1);
thread_local! {
    static WORKER: u8 = NEXT_WORKER.fetch_add(1, Relaxed) as u8;
}

/// What the write tap is in the middle of, on one connection's outgoing bytes.
enum Walk {
    /// The HTTP response head (until `\r\n\r\n`).
    Head(Vec<u8>),
    /// SSE body, HTTP/1.1 chunked: the hex size line.
    ChunkSize(u64),
    /// Chunk data: bytes left, and the first bytes of it (the frame's `id: …` line).
    ChunkData(u64, Vec<u8>),
    /// The CRLF after a chunk's data: bytes left.
    ChunkEnd(u8),
    /// WebSocket: a frame header being read.
    WsHead(Vec<u8>),
    /// WebSocket payload: bytes left, and its first bytes (`{"uuid":"c…","seq":…`).
    WsData(u64, Vec<u8>),
    /// Anything else (a plain response): stop looking.
    Done,
}

const PREFIX: usize = 32;

/// The event index of a frame from the first bytes of its SSE frame or WebSocket text.
fn frame_index(prefix: &[u8]) -> Option<usize> {
    let s = std::str::from_utf8(prefix).ok().or_else(|| {
        // A prefix cut inside a UTF-8 sequence: use the valid part.
        let e = std::str::from_utf8(prefix).err()?.valid_up_to();
        std::str::from_utf8(&prefix[..e]).ok()
    })?;
    if let Some(rest) = s.strip_prefix("id: ") {
        return Clock0::index(rest.split('\n').next()?);
    }
    // {"uuid":"c0001","seq":N,
    let rest = s.strip_prefix("{\"uuid\":\"")?;
    let (uuid, rest) = rest.split_once('"')?;
    let seq = rest.strip_prefix(",\"seq\":")?.split(',').next()?;
    Clock0::index(&format!("{uuid}:{seq}"))
}

/// Takes the part of `b` that belongs to a payload of `left` more bytes, keeping its first
/// [`PREFIX`] bytes; true when the payload is complete (then its event, if any, is `done`).
fn payload(
    left: &mut u64,
    prefix: &mut Vec<u8>,
    b: &mut &[u8],
    done: &mut impl FnMut(usize),
) -> bool {
    let take = (*left).min(b.len() as u64) as usize;
    let want = PREFIX.saturating_sub(prefix.len()).min(take);
    prefix.extend_from_slice(&b[..want]);
    *b = &b[take..];
    *left -= take as u64;
    if *left > 0 {
        return false;
    }
    if let Some(k) = frame_index(prefix) {
        done(k);
    }
    true
}

impl Walk {
    /// Feeds bytes the kernel accepted; calls `done(k)` for every event frame they complete.
    fn feed(&mut self, mut b: &[u8], done: &mut impl FnMut(usize)) {
        while !b.is_empty() {
            match self {
                Walk::Head(h) => {
                    let take = b.len().min(8192 - h.len().min(8192));
                    h.extend_from_slice(&b[..take]);
                    b = &b[take..];
                    if let Some(end) = find(h, b"\r\n\r\n") {
                        let rest = h.split_off(end + 4);
                        let next = if h.starts_with(b"HTTP/1.1 101") {
                            Walk::WsHead(Vec::new())
                        } else if find(&h.to_ascii_lowercase(), b"transfer-encoding: chunked")
                            .is_some()
                        {
                            Walk::ChunkSize(0)
                        } else {
                            Walk::Done
                        };
                        *self = next;
                        self.feed(&rest, done);
                    } else if h.len() >= 8192 {
                        *self = Walk::Done;
                    }
                }
                Walk::ChunkSize(n) => {
                    let c = b[0];
                    b = &b[1..];
                    match c {
                        b'0'..=b'9' => *n = *n * 16 + u64::from(c - b'0'),
                        b'a'..=b'f' => *n = *n * 16 + u64::from(c - b'a' + 10),
                        b'A'..=b'F' => *n = *n * 16 + u64::from(c - b'A' + 10),
                        b'\n' => *self = Walk::ChunkData(*n, Vec::new()),
                        _ => {}
                    }
                }
                Walk::ChunkData(left, prefix) => {
                    if payload(left, prefix, &mut b, done) {
                        *self = Walk::ChunkEnd(2);
                    }
                }
                Walk::ChunkEnd(left) => {
                    b = &b[1..];
                    *left -= 1;
                    if *left == 0 {
                        *self = Walk::ChunkSize(0);
                    }
                }
                Walk::WsHead(h) => {
                    h.push(b[0]);
                    b = &b[1..];
                    // Server frames are unmasked: 2 bytes, +2 (126) or +8 (127) of length.
                    let need = match h.get(1).map(|l| l & 0x7f) {
                        None => continue,
                        Some(126) => 4,
                        Some(127) => 10,
                        Some(_) => 2,
                    };
                    if h.len() == need {
                        let len = match h[1] & 0x7f {
                            126 => u64::from(u16::from_be_bytes([h[2], h[3]])),
                            127 => u64::from_be_bytes(h[2..10].try_into().unwrap()),
                            l => u64::from(l),
                        };
                        *self = if len == 0 {
                            Walk::WsHead(Vec::new())
                        } else {
                            Walk::WsData(len, Vec::new())
                        };
                    }
                }
                Walk::WsData(left, prefix) => {
                    if payload(left, prefix, &mut b, done) {
                        *self = Walk::WsHead(Vec::new());
                    }
                }
                Walk::Done => return,
            }
        }
    }
}

/// An accepted socket whose writes are timed: after each `write`/`writev` returns, the
/// accepted bytes are walked and every event frame they complete is stamped.
struct TimedIo {
    tcp: Box<dyn shards::Conn>,
    conn: usize,
    clock: Arc<Clock0>,
    written: Arc<Written>,
    walk: Walk,
}

impl TimedIo {
    fn note(&mut self, slices: &[std::io::IoSlice<'_>], mut n: usize) {
        if self.conn >= SUBSCRIBERS || matches!(self.walk, Walk::Done) {
            return;
        }
        let now = self.clock.now();
        let (w, base) = (&self.written, self.conn * self.written.total);
        let mut done = |k: usize| {
            if let Some(slot) = w.at.get(base + k).filter(|_| k < w.total) {
                if slot.compare_exchange(0, now, Relaxed, Relaxed).is_ok() {
                    WORKER.with(|id| w.by[base + k].store(*id, Relaxed));
                }
            }
        };
        for s in slices {
            if n == 0 {
                break;
            }
            let take = n.min(s.len());
            self.walk.feed(&s[..take], &mut done);
            n -= take;
        }
    }
}

impl tokio::io::AsyncRead for TimedIo {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for TimedIo {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.tcp).poll_write(cx, buf);
        if let std::task::Poll::Ready(Ok(n)) = r {
            self.note(&[std::io::IoSlice::new(buf)], n);
        }
        r
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs);
        if let std::task::Poll::Ready(Ok(n)) = r {
            self.note(bufs, n);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

struct Server {
    hub: Arc<Hub>,
    port: u16,
    _rt: tokio::runtime::Runtime,
    _stop: tokio::sync::watch::Sender<bool>,
}

/// The API as the daemon serves it (`api::serve` → `shards::serve`), with every accepted
/// connection wrapped in a [`TimedIo`].
fn server(cfg: HubConfig, clock: Arc<Clock0>, written: Arc<Written>) -> Server {
    let hub = Hub::new(cfg);
    // The acceptor's runtime (the daemon's sink runtime); the shards are threads of their own.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("api-accept")
        .enable_all()
        .build()
        .unwrap();
    let live = live_api::LiveApi::new(hub.clone(), &[], None);
    let on_start: shards::OnStart = {
        let l = live.clone();
        Arc::new(move || l.start_relay())
    };
    let app = live_api::routes(live);
    let tcp = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = tcp.local_addr().unwrap().port();
    let tap: shards::Tap = Arc::new(move |c| {
        let conn = written.next_conn.fetch_add(1, Relaxed);
        Box::new(TimedIo {
            tcp: c,
            conn,
            clock: clock.clone(),
            written: written.clone(),
            walk: Walk::Head(Vec::new()),
        })
    });
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    if std::env::var("VCONTAP_BENCH_SERVER").as_deref() == Ok("multi") {
        // The previous design, for comparison: one 2-worker multi-threaded runtime serving
        // every connection (plain `axum::serve`), subscribers woken straight by the hub.
        let multi = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("api-server")
            .enable_all()
            .build()
            .unwrap();
        let app = live_api::routes(live_api::LiveApi::new(hub.clone(), &[], None));
        let tcp = multi.block_on(async move {
            tokio::net::TcpListener::from_std(tcp.into_std().unwrap()).unwrap()
        });
        multi.spawn(async move { axum::serve(Tapped { tcp, tap }, app).await });
        drop(rt);
        return Server {
            hub,
            port,
            _rt: multi,
            _stop: stop_tx,
        };
    }
    let opts = shards::Options {
        name: "api-server".into(),
        tap: Some(tap),
        on_start: Some(on_start),
        ..shards::Options::default()
    };
    shards::serve(rt.handle(), tcp, None, app, opts, stop).unwrap();
    Server {
        hub,
        port,
        _rt: rt,
        _stop: stop_tx,
    }
}

/// A listener whose connections go through a [`shards::Tap`] (the `multi` comparison).
struct Tapped {
    tcp: tokio::net::TcpListener,
    tap: shards::Tap,
}

impl axum::serve::Listener for Tapped {
    type Io = Box<dyn shards::Conn>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            if let Ok((tcp, addr)) = self.tcp.accept().await {
                let _ = tcp.set_nodelay(true);
                return ((self.tap)(Box::new(tcp)), addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

fn client_runtime() -> tokio::runtime::Runtime {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("api-client")
        .enable_all()
        .build()
        .unwrap();
    // Subscribers stand for clients on other hosts: they must not take the server's CPU.
    // `idle` (default): SCHED_IDLE, they run when the server threads do not need a core;
    // `N`: nice N; `0`: the server's own priority. Applied per thread (Linux tids).
    let how = std::env::var("VCONTAP_BENCH_CLIENT_SCHED").unwrap_or_else(|_| "idle".into());
    let args: Vec<String> = match how.as_str() {
        "0" | "" => Vec::new(),
        "idle" => vec!["chrt".into(), "-i".into(), "-p".into(), "0".into()],
        n => vec!["renice".into(), "-n".into(), n.into(), "-p".into()],
    };
    if let Some((cmd, args)) = args.split_first() {
        for t in std::fs::read_dir("/proc/self/task")
            .into_iter()
            .flatten()
            .flatten()
        {
            let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            if comm.starts_with("api-client") {
                let ok = std::process::Command::new(cmd)
                    .args(args)
                    .arg(t.file_name())
                    .stdout(std::process::Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                assert!(ok, "{cmd} {args:?} on a client thread failed");
            }
        }
    }
    rt
}

#[derive(Default)]
struct ClientResult {
    lat_ns: Vec<u64>,
    events: u64,
    gaps: u64,
}

/// An SSE stream's frames as they arrive: finds each `id:` line and records its latency.
#[derive(Default)]
struct SseReader {
    carry: Vec<u8>,
}

impl SseReader {
    /// Takes bytes read at `now`; true once event `until - 1` was seen.
    fn feed(
        &mut self,
        b: &[u8],
        now: u64,
        clock: &Clock0,
        until: u64,
        r: &mut ClientResult,
    ) -> bool {
        self.carry.extend_from_slice(b);
        let carry = &self.carry;
        let mut consumed = 0;
        let mut done = false;
        while let Some(p) = find2(&carry[consumed..]) {
            let frame = &carry[consumed..consumed + p];
            consumed += p + 2;
            if frame[..frame.len().min(24)]
                .windows(10)
                .any(|w| w == b"event: gap")
            {
                r.gaps += 1;
            }
            // Frames are `id: …\ndata: …`, possibly after a chunk-size line.
            let start = frame
                .iter()
                .position(|&c| c == b'i')
                .filter(|&i| frame[i..].starts_with(b"id: "));
            if let Some(i) = start {
                let rest = &frame[i + 4..];
                let end = rest.iter().position(|&c| c == b'\n').unwrap_or(rest.len());
                let id = std::str::from_utf8(&rest[..end]).unwrap();
                if let Some(k) = Clock0::index(id) {
                    if k >= CALLS {
                        let sent = clock.sent[k].load(Relaxed);
                        r.lat_ns.push(now.saturating_sub(sent));
                    }
                    r.events += 1;
                    if k as u64 + 1 >= until {
                        done = true;
                        break;
                    }
                }
            }
        }
        self.carry.drain(..consumed);
        done
    }
}

const SSE_REQUEST: &[u8] = b"GET /v1/events HTTP/1.1\r\nHost: bench\r\n\r\n";

/// An SSE client on a raw socket, one tokio task: woken by the kernel for every write.
async fn sse_client(port: u16, clock: Arc<Clock0>, until: u64) -> ClientResult {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.set_nodelay(true).unwrap();
    s.write_all(SSE_REQUEST).await.unwrap();
    let mut r = ClientResult::default();
    let mut buf = vec![0u8; 1 << 16];
    let mut reader = SseReader::default();
    loop {
        let n = s.read(&mut buf).await.unwrap();
        if n == 0 || reader.feed(&buf[..n], clock.now(), &clock, until, &mut r) {
            return r;
        }
    }
}

async fn ws_client(port: u16, clock: Arc<Clock0>, until: u64) -> ClientResult {
    // A 16 KiB read buffer: tungstenite zero-fills the whole buffer (128 KiB by default)
    // before every read, which would make the clients, not the server, the bottleneck.
    let cfg = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(16 << 10);
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(
        format!("ws://127.0.0.1:{port}/v1/events"),
        Some(cfg),
        false,
    )
    .await
    .unwrap();
    let mut r = ClientResult::default();
    while let Some(Ok(m)) = ws.next().await {
        let now = clock.now();
        if let tokio_tungstenite::tungstenite::Message::Text(t) = m {
            let t = t.as_str();
            if t.starts_with("{\"kind\":\"gap\"") {
                r.gaps += 1;
                continue;
            }
            // {"uuid":"c0001","seq":N,...
            let uuid = &t[9..14];
            let seq_start = 22;
            let seq_end = t[seq_start..].find(',').unwrap() + seq_start;
            let id = format!("{uuid}:{}", &t[seq_start..seq_end]);
            if let Some(k) = Clock0::index(&id) {
                if k >= CALLS {
                    r.lat_ns
                        .push(now.saturating_sub(clock.sent[k].load(Relaxed)));
                }
                r.events += 1;
                if k as u64 + 1 >= until {
                    return r;
                }
            }
        }
    }
    r
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

/// Position of the next blank line (`\n\n`), scanning for `\n` only.
fn find2(h: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = h[from..].iter().position(|&c| c == b'\n') {
        let at = from + i;
        if h.get(at + 1) == Some(&b'\n') {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

fn pct(v: &mut [u64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_unstable();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i] as f64 / 1000.0
}

/// Publishes 1,000 `created` (flat out) and waits until every subscriber's socket took
/// them, then `updated` round-robin at `rate` events/s (0: flat out) until `total` events;
/// returns the seconds the timed part took.
/// Also returns the server threads' CPU seconds at the start of the timed part.
fn publish(
    send: &dyn Fn(usize, &VconEvent),
    clock: &Clock0,
    written: &Written,
    total: usize,
    rate: f64,
) -> (f64, f64) {
    // Build the events first: the engine's serialization is not the API's cost.
    let evs: Vec<VconEvent> = (0..total)
        .map(|k| event(k % CALLS, (k / CALLS) as u64 + 1, k as i64))
        .collect();
    for (k, e) in evs.iter().enumerate().take(CALLS) {
        clock.sent[k].store(clock.now(), Relaxed);
        send(k, e);
    }
    // The 1,000 calls exist before the measurement starts: the first timed events must
    // not queue behind 100,000 deliveries of the set-up burst.
    let settle = Instant::now() + Duration::from_secs(10);
    while Instant::now() < settle
        && (0..SUBSCRIBERS).any(|c| written.at[c * total + CALLS - 1].load(Relaxed) == 0)
    {
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(Duration::from_millis(50));
    let cpu0 = thread_cpu("api-server");
    let t0 = Instant::now();
    for (k, e) in evs.iter().enumerate().skip(CALLS) {
        if rate > 0.0 {
            // Sleep, not spin: a spinning publisher would take one of the two cores
            // from the server. Latency is measured from the actual publish instant.
            let due = t0 + Duration::from_secs_f64((k - CALLS) as f64 / rate);
            let wait = due.saturating_duration_since(Instant::now());
            if !wait.is_zero() {
                std::thread::sleep(wait);
            }
        }
        clock.sent[k].store(clock.now(), Relaxed);
        send(k, e);
    }
    (cpu0, t0.elapsed().as_secs_f64())
}

/// The floor under any fan-out on this machine: the same 100 SSE subscribers served by the
/// least a server can do — two plain threads (as many as the API's workers), each owning
/// half the sockets, woken by a channel per event and writing the same chunked SSE bytes
/// (`writev` of size line, frame, CRLF, as hyper does) to each of its sockets in turn. No
/// hub, no subscription, no HTTP stack, no async runtime: what is left is the kernel's
/// loopback TCP send (which on loopback also runs the peer's receive path) and one thread
/// wake-up. The API's latency minus this is what the API itself adds.
struct RawServer {
    port: u16,
    accepted: Arc<AtomicUsize>,
    to_writers: Arc<Mutex<Vec<ToWriter>>>,
}

const RAW_WRITERS: usize = 2;

/// An event (index, SSE frame) for one raw writer thread.
type ToWriter = std::sync::mpsc::SyncSender<(usize, Bytes)>;

fn raw_server(clock: Arc<Clock0>, written: Arc<Written>) -> RawServer {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let to_writers = Arc::new(Mutex::new(Vec::new()));
    let (acc, tw) = (accepted.clone(), to_writers.clone());
    std::thread::spawn(move || {
        let mut groups: Vec<Vec<(usize, std::net::TcpStream)>> =
            (0..RAW_WRITERS).map(|_| Vec::new()).collect();
        for conn in 0..SUBSCRIBERS {
            let (mut s, _) = l.accept().unwrap();
            s.set_nodelay(true).unwrap();
            let mut head = Vec::new();
            let mut b = [0u8; 1024];
            while find(&head, b"\r\n\r\n").is_none() {
                let n = s.read(&mut b).unwrap();
                assert!(n > 0, "client closed before its request");
                head.extend_from_slice(&b[..n]);
            }
            s.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
                  transfer-encoding: chunked\r\n\r\n",
            )
            .unwrap();
            groups[conn % RAW_WRITERS].push((conn, s));
        }
        let mut senders = Vec::new();
        for (i, mut socks) in groups.into_iter().enumerate() {
            let (tx, rx) = std::sync::mpsc::sync_channel::<(usize, Bytes)>(4096);
            senders.push(tx);
            let (clock, written) = (clock.clone(), written.clone());
            std::thread::Builder::new()
                .name(format!("api-server-raw{i}"))
                .spawn(move || {
                    while let Ok((k, frame)) = rx.recv() {
                        let size = format!("{:X}\r\n", frame.len());
                        for (conn, s) in socks.iter_mut() {
                            let iov = [
                                std::io::IoSlice::new(size.as_bytes()),
                                std::io::IoSlice::new(&frame),
                                std::io::IoSlice::new(b"\r\n"),
                            ];
                            let total = size.len() + frame.len() + 2;
                            let n = s.write_vectored(&iov).unwrap_or(total);
                            if n < total {
                                // Rare partial write: send the rest plainly.
                                let mut all = Vec::with_capacity(total);
                                all.extend_from_slice(size.as_bytes());
                                all.extend_from_slice(&frame);
                                all.extend_from_slice(b"\r\n");
                                let _ = s.write_all(&all[n..]);
                            }
                            written.at[*conn * written.total + k].store(clock.now(), Relaxed);
                        }
                    }
                })
                .unwrap();
        }
        *tw.lock().unwrap() = senders;
        acc.store(SUBSCRIBERS, Relaxed);
    });
    RawServer {
        port,
        accepted,
        to_writers,
    }
}

/// The SSE frame the hub builds for `e` (`id: <uuid>:<seq>\ndata: <event>\n\n`).
fn raw_frame(e: &VconEvent) -> Bytes {
    Bytes::from(format!(
        "id: {}:{}\ndata: {}\n\n",
        e.uuid,
        e.seq,
        e.to_json_line()
    ))
}

/// How the 100 subscribers are run.
#[derive(Clone, Copy, PartialEq)]
enum Clients {
    /// Raw-socket SSE clients, a tokio task each (woken per write).
    Sse,
    /// tokio-tungstenite WebSocket clients, a task each.
    Ws,
}

/// Puts the calling thread under the client scheduling policy (see [`client_runtime`]).
fn deprioritize_this_thread() {
    if let Ok(me) = std::fs::read_link("/proc/thread-self") {
        if let Some(tid) = me.file_name() {
            let _ = std::process::Command::new("chrt")
                .args(["-i", "-p", "0"])
                .arg(tid)
                .status();
        }
    }
}

fn run_phase(name: &str, clients: Clients, rate: f64, total: usize, channel: usize) {
    let clock = Arc::new(Clock0 {
        start: Instant::now(),
        sent: (0..total).map(|_| AtomicU64::new(0)).collect(),
    });
    let written = Arc::new(Written::new(total));
    // `raw-…` phases: the baseline server instead of the API.
    let raw = name.starts_with("raw-");
    let (srv, rsrv) = if raw {
        (None, Some(raw_server(clock.clone(), written.clone())))
    } else {
        let srv = server(
            HubConfig {
                channel,
                max_subscribers: SUBSCRIBERS + 10,
                ..HubConfig::default()
            },
            clock.clone(),
            written.clone(),
        );
        (Some(srv), None)
    };
    let port = srv
        .as_ref()
        .map_or_else(|| rsrv.as_ref().unwrap().port, |s| s.port);
    let crt = client_runtime();
    let mut handles = Vec::new();
    {
        for _ in 0..SUBSCRIBERS {
            let c = clock.clone();
            handles.push(if clients == Clients::Ws {
                crt.spawn(ws_client(port, c, total as u64))
            } else {
                crt.spawn(sse_client(port, c, total as u64))
            });
        }
    }
    let connected = || match (&srv, &rsrv) {
        (Some(s), _) => s.hub.stats.subscribers.load(Relaxed),
        (None, Some(r)) => r.accepted.load(Relaxed),
        _ => 0,
    };
    while connected() < SUBSCRIBERS {
        std::thread::sleep(Duration::from_millis(5));
    }
    let (cpu0, secs) = match (&srv, &rsrv) {
        (Some(s), _) => publish(&|_, e| s.hub.publish(e), &clock, &written, total, rate),
        (None, Some(r)) => {
            let tx = r.to_writers.lock().unwrap().clone();
            publish(
                &|k, e| {
                    let f = raw_frame(e);
                    for t in &tx {
                        let _ = t.send((k, f.clone()));
                    }
                },
                &clock,
                &written,
                total,
                rate,
            )
        }
        _ => unreachable!(),
    };
    let results: Vec<ClientResult> = crt.block_on(async {
        let mut v = Vec::new();
        for h in handles {
            match tokio::time::timeout(Duration::from_secs(60), h).await {
                Ok(Ok(r)) => v.push(r),
                _ => v.push(ClientResult::default()),
            }
        }
        v
    });
    if std::env::var_os("VCONTAP_BENCH_DEBUG").is_some() {
        // Events whose slowest subscriber waited more than 2 ms: when, and how many subs.
        for k in CALLS..total {
            let sent = clock.sent[k].load(Relaxed);
            let lats: Vec<u64> = (0..SUBSCRIBERS)
                .map(|c| written.at[c * total + k].load(Relaxed).saturating_sub(sent))
                .collect();
            let worst = lats.iter().max().copied().unwrap_or(0);
            if k % 97 == 0 {
                let mut l = lats.clone();
                l.sort_unstable();
                // Per server thread: deliveries, first and last (µs after publish).
                let mut per = std::collections::BTreeMap::new();
                for (c, &l) in lats.iter().enumerate() {
                    let e = per
                        .entry(written.by[c * total + k].load(Relaxed))
                        .or_insert((0, u64::MAX, 0));
                    e.0 += 1;
                    e.1 = e.1.min(l / 1000);
                    e.2 = e.2.max(l / 1000);
                }
                eprintln!(
                    "  k={k}: sorted µs {:?} by thread {per:?}",
                    l.iter().step_by(10).map(|x| x / 1000).collect::<Vec<_>>()
                );
            }
            if worst > 2_000_000 {
                let slow = lats.iter().filter(|&&l| l > 2_000_000).count();
                eprintln!(
                    "  k={k} at {:.3} s: worst {:.1} ms, {slow} subs > 2 ms, best {:.1} ms",
                    sent as f64 / 1e9,
                    worst as f64 / 1e6,
                    *lats.iter().min().unwrap() as f64 / 1e6
                );
            }
        }
    }
    let wall = clock.start.elapsed().as_secs_f64();
    let cpu = thread_cpu("api-server") - cpu0;
    let mut lat: Vec<u64> = results.iter().flat_map(|r| r.lat_ns.clone()).collect();
    // Added by the API: publish → frame accepted by the subscriber's socket.
    let mut api: Vec<u64> = Vec::with_capacity(SUBSCRIBERS * (total - CALLS));
    let mut unseen = 0u64;
    for conn in 0..SUBSCRIBERS {
        for k in CALLS..total {
            match written.at[conn * total + k].load(Relaxed) {
                0 => unseen += 1,
                w => api.push(w.saturating_sub(clock.sent[k].load(Relaxed))),
            }
        }
    }
    let delivered: u64 = results.iter().map(|r| r.events).sum();
    let gaps: u64 = results.iter().map(|r| r.gaps).sum();
    let lost = srv.as_ref().map_or(0, |s| s.hub.stats.lost.load(Relaxed));
    let published = total as f64 - CALLS as f64;
    println!(
        "{name:<16} {SUBSCRIBERS} subs, {CALLS} calls: publish {:.0} ev/s for {secs:.2} s; \
         added by the API p50 {:.0} µs, p99 {:.0} µs, p99.9 {:.0} µs, max {:.0} µs ({} samples, \
         {unseen} not written); at the client p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs ({} samples); \
         delivered {delivered} events ({:.0}/s), gaps {gaps}, lost {lost}; server CPU {cpu:.2} s = \
         {:.3} ms per subscriber per 1,000 events",
        published / secs,
        pct(&mut api, 0.5),
        pct(&mut api, 0.99),
        pct(&mut api, 0.999),
        pct(&mut api, 1.0),
        api.len(),
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99),
        pct(&mut lat, 1.0),
        lat.len(),
        delivered as f64 / secs.max(1e-9),
        cpu * 1000.0 / SUBSCRIBERS as f64 / (published / 1000.0),
    );
    let _ = wall;
}

fn publish_cost() {
    for (subs, delta) in [(0usize, false), (SUBSCRIBERS, false), (SUBSCRIBERS, true)] {
        let hub = Hub::new(HubConfig {
            channel: 1 << 16,
            max_subscribers: SUBSCRIBERS + 10,
            ..HubConfig::default()
        });
        let _subs: Vec<_> = (0..subs)
            .map(|_| {
                hub.subscribe(vcontap_live::SubscribeOptions {
                    delta,
                    ..Default::default()
                })
                .unwrap()
            })
            .collect();
        let total = 50 * CALLS;
        let evs: Vec<VconEvent> = (0..total)
            .map(|k| event(k % CALLS, (k / CALLS) as u64 + 1, k as i64))
            .collect();
        let t0 = Instant::now();
        for e in &evs {
            hub.publish(e);
        }
        let ns = t0.elapsed().as_nanos() as f64 / total as f64;
        println!(
            "publish          {subs:>3} subscribers{}: {ns:.0} ns per event (Hub::publish on the event thread)",
            if delta { " (delta)" } else { "" }
        );
    }
}

fn main() {
    // `cargo bench` passes --bench; accept and ignore arguments.
    let only = std::env::var("VCONTAP_BENCH_ONLY").unwrap_or_default();
    // 200 events/s (1,000 calls with an event every 5 s each) and 2,000 events/s, 5 s;
    // `raw-…` is the baseline server (see [`raw_server`]) under the same load.
    let latency = [
        ("raw-sse-200", Clients::Sse, 200.0, 1_000),
        ("latency-sse-200", Clients::Sse, 200.0, 1_000),
        ("latency-ws-200", Clients::Ws, 200.0, 1_000),
        ("raw-sse", Clients::Sse, 2000.0, 10_000),
        ("latency-sse", Clients::Sse, 2000.0, 10_000),
        ("latency-ws", Clients::Ws, 2000.0, 10_000),
    ];
    // A group (`latency`) or one latency phase by name (`raw-sse-200`).
    let one = latency.iter().any(|p| p.0 == only);
    let on = |g: &str| only.is_empty() || only == g || (g == "latency" && one);
    if on("publish") {
        publish_cost();
    }
    if on("latency") {
        for (name, clients, rate, n) in latency {
            if !one || only == name {
                run_phase(name, clients, rate, CALLS + n, 4096);
            }
        }
    }
    if on("throughput") {
        run_phase("throughput-sse", Clients::Sse, 0.0, CALLS + 50_000, 4096);
    }
}
