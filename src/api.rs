//! The daemon's HTTP endpoint (`--listen ADDR`): `/metrics` (Prometheus text), `/healthz`
//! (the capture loop is alive) and `/readyz` (sources are up and the spool has room), plus
//! the live subscribers API ([`crate::live_api`]) when a hub is wired in.
//!
//! axum on the sink runtime: the engines stay on their own threads; handlers only read
//! atomics.

use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use vcontap_engine::EventKind;
use vcontap_pipeline::TapCounters;
use vcontap_sinks::metrics::{Histogram, Metrics};

use crate::live_api::LiveApi;

/// Upper bounds (seconds) of the packet → event latency histogram: kernel timestamp of the
/// packet that changed a call to its event leaving the engine (events caused by timers
/// measure from the timer time; coalesced `updated` events are held back up to 200 ms by
/// design and show it).
static EVENT_LATENCY_BUCKETS: [f64; 14] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.25, 1.0, 5.0, 30.0,
];

/// The packet → event latency, one histogram per event kind (label `kind`): signalling
/// events (`created`, `updated`) leave as soon as the engine has seen the packet, while
/// `segment` and `finished` wait for the recording's file to be closed and hashed on the
/// media threads, so their latency says more about the media path than the engine.
pub struct EventLatency {
    by_kind: [Histogram; 4],
}

impl EventLatency {
    fn new() -> Self {
        EventLatency {
            by_kind: std::array::from_fn(|_| Histogram::new(&EVENT_LATENCY_BUCKETS)),
        }
    }

    fn render(&self, out: &mut String) {
        let name = "vcontap_event_latency_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} packet capture time to the event leaving the engine, by event kind\n# TYPE {name} histogram"
        );
        for (kind, h) in EVENT_KINDS.iter().zip(&self.by_kind) {
            h.render(name, &format!("kind=\"{}\"", kind.as_str()), out);
        }
    }
}

const EVENT_KINDS: [EventKind; 4] = [
    EventKind::Created,
    EventKind::Updated,
    EventKind::Segment,
    EventKind::Finished,
];

/// Records an event of `kind` caused at `at_ns` (Unix ns) and emitted now.
pub fn observe_event(h: &EventLatency, kind: EventKind, at_ns: i64) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64);
    let i = EVENT_KINDS.iter().position(|k| *k == kind).unwrap_or(0);
    if let Some(h) = h.by_kind.get(i) {
        h.observe_us(u64::try_from(now.saturating_sub(at_ns) / 1000).unwrap_or(0));
    }
}

/// A metrics writer for one part of the daemon (sources add theirs).
pub type Render = Box<dyn Fn(&mut String) + Send + Sync>;

/// What the endpoints read.
pub struct ApiState {
    /// The Tap's counters (set once the Tap exists).
    pub tap: Mutex<Option<Arc<TapCounters>>>,
    /// Delivery (spool and sinks).
    pub delivery: Arc<Metrics>,
    /// Sources are up.
    pub ready: AtomicBool,
    /// Unix ms of the capture loop's last turn.
    pub heartbeat_ms: AtomicU64,
    /// More metric families (sources, HEP).
    pub extra: Mutex<Vec<Render>>,
    /// Packet → event latency, by event kind.
    pub event_latency: EventLatency,
}

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A loop that has not turned for this long is not healthy.
const STALL: Duration = Duration::from_secs(10);

impl ApiState {
    /// Fresh state around the delivery metrics.
    pub fn new(delivery: Arc<Metrics>) -> Arc<Self> {
        Arc::new(ApiState {
            tap: Mutex::new(None),
            delivery,
            ready: AtomicBool::new(false),
            heartbeat_ms: AtomicU64::new(now_ms()),
            extra: Mutex::new(Vec::new()),
            event_latency: EventLatency::new(),
        })
    }

    /// The capture loop calls this every turn.
    pub fn beat(&self) {
        self.heartbeat_ms.store(now_ms(), Relaxed);
    }

    fn alive(&self) -> bool {
        now_ms().saturating_sub(self.heartbeat_ms.load(Relaxed)) < STALL.as_millis() as u64
    }

    fn spool_has_room(&self) -> bool {
        let s = &self.delivery.spool;
        let max = s.max_bytes.load(Relaxed);
        max == 0 || s.bytes.load(Relaxed) < max
    }

    /// Renders every metric family.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8192);
        if let Some(t) = self.tap.lock().ok().and_then(|g| g.clone()) {
            for (name, kind, help, v) in [
                (
                    "vcontap_packets_total",
                    "counter",
                    "packets handed to the pipeline",
                    t.packets.load(Relaxed),
                ),
                (
                    "vcontap_calls_created_total",
                    "counter",
                    "calls created",
                    t.calls_created.load(Relaxed),
                ),
                (
                    "vcontap_calls_finished_total",
                    "counter",
                    "calls finished",
                    t.calls_finished.load(Relaxed),
                ),
                (
                    "vcontap_calls_open",
                    "gauge",
                    "calls in progress",
                    t.open_calls(),
                ),
                (
                    "vcontap_events_total",
                    "counter",
                    "vCon events emitted",
                    t.events.load(Relaxed),
                ),
                (
                    "vcontap_shard_queue_dropped_packets_total",
                    "counter",
                    "packets dropped because a shard queue was full",
                    t.shard_queue.dropped_packets.load(Relaxed),
                ),
                (
                    "vcontap_shard_queue_full_total",
                    "counter",
                    "times a shard queue was found full",
                    t.shard_queue.full.load(Relaxed),
                ),
            ] {
                let _ = writeln!(
                    out,
                    "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
                );
            }
        }
        if let Ok(extra) = self.extra.lock() {
            for r in extra.iter() {
                r(&mut out);
            }
        }
        self.event_latency.render(&mut out);
        self.delivery.render_prometheus(&mut out);
        let _ = writeln!(
            out,
            "# HELP vcontap_up 1 when the capture loop is alive\n# TYPE vcontap_up gauge\nvcontap_up {}",
            u8::from(self.alive())
        );
        out
    }
}

async fn metrics(State(s): State<Arc<ApiState>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.render(),
    )
}

async fn healthz(State(s): State<Arc<ApiState>>) -> impl IntoResponse {
    if s.alive() {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "capture loop stalled\n")
    }
}

async fn readyz(State(s): State<Arc<ApiState>>) -> impl IntoResponse {
    if !s.ready.load(Relaxed) {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n")
    } else if !s.spool_has_room() {
        (StatusCode::SERVICE_UNAVAILABLE, "spool full\n")
    } else if !s.alive() {
        (StatusCode::SERVICE_UNAVAILABLE, "capture loop stalled\n")
    } else {
        (StatusCode::OK, "ready\n")
    }
}

/// Largest request body any route accepts (every route is a GET).
const MAX_BODY: usize = 64 * 1024;

/// The router: the daemon endpoints, the live API when `live` is given, and
/// [`extra_routes`].
pub fn router(state: Arc<ApiState>, live: Option<Arc<LiveApi>>) -> Router {
    let mut r = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state.clone());
    if let Some(live) = live {
        r = r
            .merge(crate::live_api::routes(live.clone()))
            .merge(extra_routes(&state, &live));
    }
    r.layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
}

/// Mount point for more routes on the same server (the live calls page, `/media/…`, the
/// audio WebSocket): empty until those modules are wired in.
pub fn extra_routes(_state: &Arc<ApiState>, _live: &Arc<LiveApi>) -> Router {
    crate::web::routes(crate::web::WebSlots::global())
}

/// The hub's metric families.
fn hub_metrics(hub: Arc<vcontap_live::Hub>) -> Render {
    Box::new(move |out: &mut String| {
        let s = &hub.stats;
        for (name, kind, help, v) in [
            (
                "vcontap_api_subscribers",
                "gauge",
                "event subscribers connected",
                s.subscribers.load(Relaxed) as u64,
            ),
            (
                "vcontap_api_events_total",
                "counter",
                "events published to the live API",
                s.events.load(Relaxed),
            ),
            (
                "vcontap_api_gaps_total",
                "counter",
                "gap events sent to slow subscribers",
                s.gaps.load(Relaxed),
            ),
            (
                "vcontap_api_lost_events_total",
                "counter",
                "events slow subscribers lost",
                s.lost.load(Relaxed),
            ),
            (
                "vcontap_api_refused_subscribers_total",
                "counter",
                "subscriptions refused at the limit",
                s.refused.load(Relaxed),
            ),
            (
                "vcontap_api_egress_dropped_total",
                "counter",
                "uuids dropped from full egress lists",
                s.egress_dropped.load(Relaxed),
            ),
            (
                "vcontap_api_egress_recovered_total",
                "counter",
                "uuids reloaded from egress list journals at start-up",
                s.egress_recovered.load(Relaxed),
            ),
            (
                "vcontap_api_egress_bad_records_total",
                "counter",
                "damaged egress journal lines skipped at start-up",
                s.egress_bad_records.load(Relaxed),
            ),
            (
                "vcontap_api_egress_write_errors_total",
                "counter",
                "egress journal writes or syncs that failed (lists go on in memory)",
                s.egress_write_errors.load(Relaxed),
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        }
    })
}

/// Binds `addr` now (a bad address or a port in use is a start-up error) and serves on
/// `rt` until `stop` resolves.
pub fn serve(
    rt: &tokio::runtime::Handle,
    addr: std::net::SocketAddr,
    state: Arc<ApiState>,
    live: Option<Arc<LiveApi>>,
    tls: Option<Arc<rustls::ServerConfig>>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<std::net::SocketAddr> {
    let listener = rt.block_on(tokio::net::TcpListener::bind(addr))?;
    let local = listener.local_addr()?;
    if let (Some(l), Ok(mut extra)) = (&live, state.extra.lock()) {
        extra.push(hub_metrics(l.hub.clone()));
    }
    if let Some(l) = live
        .as_ref()
        .filter(|l| !l.hub.config().egress_lists.is_empty())
    {
        // The egress journals' fsync policy: at most a second of records unsynced.
        let hub = l.hub.clone();
        let mut stop = stop.clone();
        rt.spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        let h = hub.clone();
                        let _ = tokio::task::spawn_blocking(move || h.sync_egress()).await;
                    }
                    r = stop.changed() => {
                        if r.is_err() || *stop.borrow() {
                            break;
                        }
                    }
                }
            }
        });
    }
    // Each shard relays the hub's events to its own subscribers.
    let on_start = live
        .clone()
        .map(|l| -> crate::shards::OnStart { Arc::new(move || l.start_relay()) });
    let app = router(state, live);
    // Connections are spread over per-core runtimes (why: `shards.rs`), TLS or not.
    crate::shards::serve(
        rt,
        listener,
        tls,
        app,
        crate::shards::Options {
            on_start,
            ..crate::shards::Options::default()
        },
        stop,
    )?;
    Ok(local)
}
