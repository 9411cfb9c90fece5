//! Live API benchmark: latency from the engine handing an event to the hub
//! (`Hub::publish`, what the Tap's event handler calls) to an SSE or WebSocket client on
//! loopback receiving it, with 1,000 concurrent calls and 100 subscribers; events/s
//! delivered to 100 subscribers; server CPU per subscriber.
//!
//! Run with `cargo bench --bench live_api`. The server is the CLI's own code: the real
//! `src/live_api.rs` (and `src/tls.rs`, which it names) compiled into this bench, on a
//! 2-worker tokio runtime like the daemon's; clients run on their own runtime so their CPU
//! is not counted as the server's (threads are told apart by name in /proc).
//!
//! Phases (results and their reading: docs/PERFORMANCE.md):
//! 1. `latency-sse` / `latency-ws`: 1,000 calls created, then `updated` events round-robin
//!    over them at a steady 2,000 events/s for 5 s; each of 100 subscribers records
//!    receive time − publish time of every event (p50/p99/max), server CPU per subscriber.
//! 2. `throughput-sse`: the publisher emits as fast as it can; events/s delivered to 100
//!    subscribers, and how many they lost (gaps) when they could not keep up.
//! 3. `publish`: cost of `Hub::publish` alone (no subscriber, 100 subscribers).
//!
//! Knobs: `VCONTAP_BENCH_ONLY` = `latency` | `throughput` | `publish`.

#![allow(dead_code, unused_imports)]

#[path = "../src/live_api.rs"]
mod live_api;
#[path = "../src/tls.rs"]
mod tls;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

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

struct Server {
    hub: Arc<Hub>,
    port: u16,
    _rt: tokio::runtime::Runtime,
}

fn server(cfg: HubConfig) -> Server {
    let hub = Hub::new(cfg);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("api-server")
        .enable_all()
        .build()
        .unwrap();
    let app = live_api::routes(live_api::LiveApi::new(hub.clone(), &[], None));
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    rt.spawn(async move { axum::serve(listener, app).await });
    Server { hub, port, _rt: rt }
}

fn client_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("api-client")
        .enable_all()
        .build()
        .unwrap()
}

#[derive(Default)]
struct ClientResult {
    lat_ns: Vec<u64>,
    events: u64,
    gaps: u64,
}

/// An SSE client on a raw socket: finds each `id:` line and records its latency.
async fn sse_client(port: u16, clock: Arc<Clock0>, until: u64) -> ClientResult {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.set_nodelay(true).unwrap();
    s.write_all(b"GET /v1/events HTTP/1.1\r\nHost: bench\r\n\r\n")
        .await
        .unwrap();
    let mut r = ClientResult::default();
    let mut buf = vec![0u8; 1 << 16];
    let mut carry: Vec<u8> = Vec::new();
    loop {
        let n = s.read(&mut buf).await.unwrap();
        if n == 0 {
            return r;
        }
        let now = clock.now();
        carry.extend_from_slice(&buf[..n]);
        let mut consumed = 0;
        while let Some(p) = find(&carry[consumed..], b"\n\n") {
            let frame = &carry[consumed..consumed + p];
            if frame.windows(11).any(|w| w == b"event: gap\n") {
                r.gaps += 1;
            }
            if let Some(i) = find(frame, b"id: ") {
                let rest = &frame[i + 4..];
                let end = find(rest, b"\n").unwrap_or(rest.len());
                let id = std::str::from_utf8(&rest[..end]).unwrap();
                if let Some(k) = Clock0::index(id) {
                    if k >= CALLS {
                        let sent = clock.sent[k].load(Relaxed);
                        r.lat_ns.push(now.saturating_sub(sent));
                    }
                    r.events += 1;
                    if k as u64 + 1 >= until {
                        return r;
                    }
                }
            }
            consumed += p + 2;
        }
        carry.drain(..consumed);
    }
}

async fn ws_client(port: u16, clock: Arc<Clock0>, until: u64) -> ClientResult {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/v1/events"))
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

fn pct(v: &mut [u64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_unstable();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i] as f64 / 1000.0
}

/// Publishes 1,000 `created`, then `updated` round-robin at `rate` events/s (0: flat out)
/// until `total` events; returns the seconds it took.
fn publish(hub: &Hub, clock: &Clock0, total: usize, rate: f64) -> f64 {
    let start = Instant::now();
    // Build the events first: the engine's serialization is not the API's cost.
    let evs: Vec<VconEvent> = (0..total)
        .map(|k| event(k % CALLS, (k / CALLS) as u64 + 1, k as i64))
        .collect();
    let t0 = Instant::now();
    for (k, e) in evs.iter().enumerate() {
        if rate > 0.0 && k >= CALLS {
            let due = t0 + Duration::from_secs_f64((k - CALLS) as f64 / rate);
            while Instant::now() < due {
                std::hint::spin_loop();
                if due.saturating_duration_since(Instant::now()) > Duration::from_micros(200) {
                    std::thread::sleep(Duration::from_micros(100));
                }
            }
        }
        clock.sent[k].store(clock.now(), Relaxed);
        hub.publish(e);
    }
    let _ = start;
    t0.elapsed().as_secs_f64()
}

fn run_phase(name: &str, ws: bool, rate: f64, total: usize, channel: usize) {
    let srv = server(HubConfig {
        channel,
        max_subscribers: SUBSCRIBERS + 10,
        ..HubConfig::default()
    });
    let clock = Arc::new(Clock0 {
        start: Instant::now(),
        sent: (0..total).map(|_| AtomicU64::new(0)).collect(),
    });
    let crt = client_runtime();
    let mut handles = Vec::new();
    for _ in 0..SUBSCRIBERS {
        let c = clock.clone();
        let port = srv.port;
        handles.push(if ws {
            crt.spawn(ws_client(port, c, total as u64))
        } else {
            crt.spawn(sse_client(port, c, total as u64))
        });
    }
    while srv.hub.stats.subscribers.load(Relaxed) < SUBSCRIBERS {
        std::thread::sleep(Duration::from_millis(5));
    }
    let cpu0 = thread_cpu("api-server");
    let secs = publish(&srv.hub, &clock, total, rate);
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
    let wall = clock.start.elapsed().as_secs_f64();
    let cpu = thread_cpu("api-server") - cpu0;
    let mut lat: Vec<u64> = results.iter().flat_map(|r| r.lat_ns.clone()).collect();
    let delivered: u64 = results.iter().map(|r| r.events).sum();
    let gaps: u64 = results.iter().map(|r| r.gaps).sum();
    let lost = srv.hub.stats.lost.load(Relaxed);
    let published = total as f64 - CALLS as f64;
    println!(
        "{name:<16} {SUBSCRIBERS} subs, {CALLS} calls: publish {:.0} ev/s for {secs:.2} s; \
         latency p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs ({} samples); delivered {delivered} \
         events ({:.0}/s), gaps {gaps}, lost {lost}; server CPU {cpu:.2} s = {:.3} ms per \
         subscriber per 1,000 events",
        published / secs,
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
    let on = |p: &str| only.is_empty() || only == p;
    if on("publish") {
        publish_cost();
    }
    if on("latency") {
        // 2,000 events/s for 5 s over 1,000 calls.
        run_phase("latency-sse", false, 2000.0, CALLS + 10_000, 4096);
        run_phase("latency-ws", true, 2000.0, CALLS + 10_000, 4096);
    }
    if on("throughput") {
        run_phase("throughput-sse", false, 0.0, CALLS + 50_000, 4096);
    }
}
