//! The live subscribers hub: what the real-time API (SSE, WebSocket, conserver pull) serves,
//! fed synchronously from the Tap's event handler.
//!
//! ```text
//!  engine event ─▶ Hub::publish (one lock, no per-subscriber work)
//!                   ├─ serialize once: SSE frame `id: <uuid>:<seq>\ndata: {event}\n\n`
//!                   │   (the JSON is a zero-copy slice of it), JSON Patch once if any
//!                   │   delta subscriber exists
//!                   ├─ live snapshot per call (removed at `finished`)
//!                   ├─ recent events ring (count + bytes bound; `Last-Event-ID` resume)
//!                   ├─ finished vCons cache (count + bytes bound) and egress lists
//!                   │   (journaled to a file per list with [`Hub::open`]: `egress.rs`)
//!                   └─ tokio broadcast (bounded, drop-oldest) ─▶ Subscription::next
//!                         (filter, delta choice, `gap` on `Lagged(n)`)
//! ```
//!
//! Why `tokio::sync::broadcast`: it is exactly the policy the issue asks for — one bounded
//! ring shared by every subscriber, `send` never blocks or allocates per receiver, a
//! receiver that falls more than the capacity behind loses its *oldest* events and is told
//! how many (`Lagged(n)`), which [`Subscription`] turns into an explicit `gap` event.
//!
//! Time is an input: durations are measured against the latest event time seen (the
//! capture clock), never the wall clock. No sockets, no tasks: the HTTP shell lives in the
//! binary. The only file I/O is the egress lists' journals (`egress.rs`), written under the
//! hub's lock by the publisher and the pulling handler; the binary drives their `fdatasync`.

// Input is hostile (docs/CONTRIBUTING.md): no panicking shortcuts outside tests.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod egress;
pub mod patch;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::broadcast;
use vcontap_engine::{EventKind, VconEvent};

/// Bounds and options of a [`Hub`].
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Events a subscriber may fall behind before it loses the oldest (and gets a `gap`).
    pub channel: usize,
    /// Recent events kept for `Last-Event-ID` resume (count bound)…
    pub recent_events: usize,
    /// …and byte bound.
    pub recent_bytes: usize,
    /// Finished vCons kept for `GET /v1/vcons/{uuid}` (count bound)…
    pub finished_vcons: usize,
    /// …and byte bound.
    pub finished_bytes: usize,
    /// With `delta`, a full snapshot at least every this many events of a call.
    pub full_every: u32,
    /// Most concurrent subscribers (beyond: [`HubError::TooManySubscribers`]).
    pub max_subscribers: usize,
    /// Conserver egress lists: every finished uuid is pushed onto each.
    pub egress_lists: Vec<String>,
    /// Most uuids per egress list; beyond, the oldest is dropped (counted).
    pub egress_max: usize,
    /// Where [`Hub::open`] keeps one journal per egress list (`<list>.journal`), so uuids
    /// not pulled survive a restart. `None`: in memory only.
    pub egress_dir: Option<std::path::PathBuf>,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            channel: 4096,
            recent_events: 10_000,
            recent_bytes: 64 << 20,
            finished_vcons: 1000,
            finished_bytes: 256 << 20,
            full_every: 16,
            max_subscribers: 256,
            egress_lists: Vec::new(),
            egress_max: 100_000,
            egress_dir: None,
        }
    }
}

/// What can go wrong when subscribing or asking.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HubError {
    /// `max_subscribers` reached.
    #[error("too many subscribers (limit {0})")]
    TooManySubscribers(usize),
    /// A filter parameter is malformed or too large.
    #[error("bad filter: {0}")]
    BadFilter(String),
}

/// One event, serialized once and shared by every subscriber and buffer.
#[derive(Debug)]
pub struct Published {
    /// Position in the hub's stream (1, 2, 3… over all calls).
    pub n: u64,
    /// `<uuid>:<seq>`, the SSE `id:`.
    pub id: Arc<str>,
    /// The call's uuid.
    pub uuid: Arc<str>,
    /// Per-call sequence number.
    pub seq: u64,
    /// What changed.
    pub kind: EventKind,
    /// Capture time, Unix ns.
    pub at_ns: i64,
    /// The full event (`{"uuid","seq","kind","at","vcon"}`), as SSE frame and JSON.
    pub full: Frame,
    /// The same event as a JSON Patch against the call's previous event (`delta` mode),
    /// when computed and smaller than the full one.
    pub delta: Option<Frame>,
    /// Lowercased tel/sip/mailto/name of every party, `\n`-joined (the `party` filter).
    pub parties: Box<str>,
    /// `vcontap.state` of the snapshot.
    pub state: Option<Box<str>>,
}

/// Bytes for each transport: the SSE frame and the JSON it carries (a slice of the frame).
#[derive(Debug, Clone)]
pub struct Frame {
    /// `id: …\ndata: …\n\n` (or `event: gap\ndata: …\n\n`).
    pub sse: Bytes,
    /// The compact JSON (WebSocket text message).
    pub json: Bytes,
}

impl Frame {
    fn new(event: Option<&str>, id: Option<&str>, json: &str) -> Frame {
        let mut s = String::with_capacity(json.len() + 80);
        if let Some(e) = event {
            s.push_str("event: ");
            s.push_str(e);
            s.push('\n');
        }
        if let Some(id) = id {
            s.push_str("id: ");
            s.push_str(id);
            s.push('\n');
        }
        s.push_str("data: ");
        let start = s.len();
        // Compact serde JSON never holds a raw line break (they are escaped in strings),
        // so one `data:` line carries the whole event.
        s.push_str(json);
        let end = s.len();
        s.push_str("\n\n");
        let sse = Bytes::from(s);
        let json = sse.slice(start..end);
        Frame { sse, json }
    }

    fn bytes(&self) -> usize {
        self.sse.len()
    }
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct HubStats {
    /// Events published.
    pub events: AtomicU64,
    /// Subscribers connected now.
    pub subscribers: AtomicUsize,
    /// Subscribers that asked for `delta`.
    pub delta_subscribers: AtomicUsize,
    /// Gaps reported to slow subscribers.
    pub gaps: AtomicU64,
    /// Events slow subscribers lost in total.
    pub lost: AtomicU64,
    /// Uuids dropped from full egress lists.
    pub egress_dropped: AtomicU64,
    /// Uuids reloaded from egress journals at start-up.
    pub egress_recovered: AtomicU64,
    /// Damaged egress journal lines skipped at start-up.
    pub egress_bad_records: AtomicU64,
    /// Egress journal writes or syncs that failed (the lists go on in memory).
    pub egress_write_errors: AtomicU64,
    /// Subscriptions refused (limit).
    pub refused: AtomicU64,
}

struct LiveCall {
    last: Arc<Published>,
    vcon: Arc<str>,
    /// Parsed previous snapshot, kept only while delta subscribers exist.
    value: Option<Value>,
    since_full: u32,
    created_ns: i64,
}

struct Inner {
    tx: Option<broadcast::Sender<Arc<Published>>>,
    live: HashMap<Arc<str>, LiveCall>,
    recent: VecDeque<Arc<Published>>,
    recent_bytes: usize,
    finished: HashMap<Arc<str>, Arc<str>>,
    finished_order: VecDeque<Arc<str>>,
    finished_bytes: usize,
    egress: Vec<egress::EgressList>,
    latest_ns: i64,
    /// `n` of the last published event.
    last_n: u64,
}

/// The hub. Share it as `Arc<Hub>`: the event handler publishes, HTTP handlers read and
/// subscribe.
pub struct Hub {
    cfg: HubConfig,
    inner: Mutex<Inner>,
    /// Counters.
    pub stats: HubStats,
}

/// Per egress list, what loading its journal found ([`Hub::open`]).
pub type EgressReports = Vec<(String, egress::LoadReport)>;

/// Largest channel capacity accepted (tokio's bound is `usize::MAX / 2`; this keeps the
/// ring's memory sane).
const MAX_CHANNEL: usize = 1 << 20;

impl Hub {
    /// A hub with `cfg` (zero bounds are raised to 1), egress lists in memory only
    /// (`egress_dir` is not used: see [`Hub::open`]).
    pub fn new(cfg: HubConfig) -> Arc<Hub> {
        let egress = cfg
            .egress_lists
            .iter()
            .map(|n| egress::EgressList::in_memory(n, cfg.egress_max))
            .collect();
        Self::with_egress(cfg, egress)
    }

    /// A hub whose egress lists are journaled in `cfg.egress_dir` (in memory without one):
    /// each journal is replayed, damaged lines skipped and counted
    /// ([`HubStats::egress_bad_records`]), and compacted. Returns the load report of each
    /// list too, for the caller to log. Fails only when a journal cannot be opened or
    /// written (a bad list name, an unwritable directory).
    pub fn open(cfg: HubConfig) -> Result<(Arc<Hub>, EgressReports), egress::EgressError> {
        let Some(dir) = cfg.egress_dir.clone() else {
            return Ok((Self::new(cfg), Vec::new()));
        };
        let mut lists = Vec::new();
        let mut reports = Vec::new();
        for n in &cfg.egress_lists {
            let (l, r) = egress::EgressList::open(&dir, n, cfg.egress_max)?;
            lists.push(l);
            reports.push((n.clone(), r));
        }
        let hub = Self::with_egress(cfg, lists);
        for (_, r) in &reports {
            hub.stats
                .egress_recovered
                .fetch_add(r.recovered as u64, Relaxed);
            hub.stats
                .egress_bad_records
                .fetch_add(r.bad_records, Relaxed);
            hub.stats.egress_dropped.fetch_add(r.dropped, Relaxed);
        }
        Ok((hub, reports))
    }

    fn with_egress(mut cfg: HubConfig, egress: Vec<egress::EgressList>) -> Arc<Hub> {
        cfg.channel = cfg.channel.clamp(1, MAX_CHANNEL);
        cfg.full_every = cfg.full_every.max(1);
        let (tx, _) = broadcast::channel(cfg.channel);
        Arc::new(Hub {
            cfg,
            inner: Mutex::new(Inner {
                tx: Some(tx),
                live: HashMap::new(),
                recent: VecDeque::new(),
                recent_bytes: 0,
                finished: HashMap::new(),
                finished_order: VecDeque::new(),
                finished_bytes: 0,
                egress,
                latest_ns: 0,
                last_n: 0,
            }),
            stats: HubStats::default(),
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &HubConfig {
        &self.cfg
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that
        // matters more than losing the API, so a poisoned lock is taken over.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes one event (the Tap's event handler calls this, in emission order per call).
    /// Never blocks on a subscriber; its cost does not grow with subscribers.
    pub fn publish(&self, e: &VconEvent) {
        let id: Arc<str> = format!("{}:{}", e.uuid, e.seq).into();
        let full = Frame::new(None, Some(&id), &e.to_json_line());
        let want_delta = self.stats.delta_subscribers.load(Relaxed) > 0;
        let value: Option<Value> = if want_delta {
            serde_json::from_str(&e.vcon_json).ok()
        } else {
            None
        };
        let (parties, state) = match &value {
            Some(v) => meta_from_value(v),
            None => meta_from_text(&e.vcon_json),
        };
        let mut g = self.lock();
        let inner = &mut *g;
        inner.latest_ns = inner.latest_ns.max(e.at.nanos());
        let mut delta = None;
        let mut since_full = 0;
        let prev = inner
            .live
            .get(&e.uuid)
            .filter(|c| c.since_full + 1 < self.cfg.full_every)
            .and_then(|c| c.value.as_ref().map(|v| (v, c.since_full)));
        if let (Some(new), Some(prev)) = (&value, prev) {
            let mut ops = Vec::new();
            patch::diff(prev.0, new, &mut ops);
            let body = json!({
                "uuid": &*e.uuid,
                "seq": e.seq,
                "kind": e.kind.as_str(),
                "at": vcontap_vcon::format_time(e.at.nanos()),
                "patch": ops,
            })
            .to_string();
            if body.len() < full.json.len() {
                delta = Some(Frame::new(None, Some(&id), &body));
                since_full = prev.1 + 1;
            }
        }
        inner.last_n += 1;
        let p = Arc::new(Published {
            n: inner.last_n,
            id,
            uuid: e.uuid.clone(),
            seq: e.seq,
            kind: e.kind,
            at_ns: e.at.nanos(),
            full,
            delta,
            parties,
            state,
        });
        if e.kind == EventKind::Finished {
            inner.live.remove(&e.uuid);
            self.remember_finished(inner, &e.uuid, &e.vcon_json);
        } else {
            let created_ns = inner
                .live
                .get(&e.uuid)
                .map_or(e.at.nanos(), |c| c.created_ns);
            inner.live.insert(
                e.uuid.clone(),
                LiveCall {
                    last: p.clone(),
                    vcon: e.vcon_json.clone(),
                    value,
                    since_full,
                    created_ns,
                },
            );
        }
        inner.recent_bytes += p.full.bytes() + p.delta.as_ref().map_or(0, Frame::bytes);
        inner.recent.push_back(p.clone());
        while inner.recent.len() > self.cfg.recent_events.max(1)
            || (inner.recent_bytes > self.cfg.recent_bytes && inner.recent.len() > 1)
        {
            if let Some(old) = inner.recent.pop_front() {
                inner.recent_bytes = inner
                    .recent_bytes
                    .saturating_sub(old.full.bytes() + old.delta.as_ref().map_or(0, Frame::bytes));
            }
        }
        self.stats.events.fetch_add(1, Relaxed);
        if let Some(tx) = &inner.tx {
            // No receivers is not an error: nobody is listening.
            let _ = tx.send(p);
        }
    }

    fn remember_finished(&self, inner: &mut Inner, uuid: &Arc<str>, vcon: &Arc<str>) {
        if let Some(old) = inner.finished.insert(uuid.clone(), vcon.clone()) {
            inner.finished_bytes = inner.finished_bytes.saturating_sub(old.len());
        } else {
            inner.finished_order.push_back(uuid.clone());
        }
        inner.finished_bytes += vcon.len();
        while inner.finished_order.len() > self.cfg.finished_vcons
            || (inner.finished_bytes > self.cfg.finished_bytes && !inner.finished_order.is_empty())
        {
            if let Some(u) = inner.finished_order.pop_front() {
                if let Some(v) = inner.finished.remove(&u) {
                    inner.finished_bytes = inner.finished_bytes.saturating_sub(v.len());
                }
            }
        }
        for list in inner.egress.iter_mut() {
            let errors = list.write_errors;
            if list.push(uuid.clone()) {
                self.stats.egress_dropped.fetch_add(1, Relaxed);
            }
            self.note_write_errors(list, errors);
        }
    }

    /// Ends every subscription once it has drained what was already sent (the source is
    /// done); later publishes are kept in the buffers but reach no subscriber.
    pub fn close(&self) {
        let mut g = self.lock();
        g.tx = None;
        for list in g.egress.iter_mut() {
            let errors = list.write_errors;
            list.sync();
            self.note_write_errors(list, errors);
        }
    }

    /// `fdatasync`s the egress journals that were written since the last call (the daemon
    /// calls it every second; see `egress.rs` for the durability this gives).
    pub fn sync_egress(&self) {
        let mut g = self.lock();
        for list in g.egress.iter_mut() {
            let errors = list.write_errors;
            list.sync();
            self.note_write_errors(list, errors);
        }
    }

    fn note_write_errors(&self, list: &egress::EgressList, before: u64) {
        let n = list.write_errors.saturating_sub(before);
        if n > 0 {
            self.stats.egress_write_errors.fetch_add(n, Relaxed);
        }
    }

    /// The current snapshot of a live call, or the final vCon of a recently finished one.
    pub fn vcon(&self, uuid: &str) -> Option<Arc<str>> {
        let g = self.lock();
        g.live
            .get(uuid)
            .map(|c| c.vcon.clone())
            .or_else(|| g.finished.get(uuid).cloned())
    }

    /// Pops up to `limit` uuids from egress list `name`, newest first (the conserver's
    /// `RPOP`); `None` when no such list is configured.
    pub fn egress_pop(&self, name: &str, limit: usize) -> Option<Vec<Arc<str>>> {
        let mut g = self.lock();
        let list = g.egress.iter_mut().find(|l| l.name() == name)?;
        let errors = list.write_errors;
        let out = list.pop(limit);
        self.note_write_errors(list, errors);
        Some(out)
    }

    /// Calls in progress matching `f`, oldest first, as `GET /v1/calls` rows.
    pub fn calls(&self, f: &Filter) -> Vec<Value> {
        let (mut rows, latest) = {
            let g = self.lock();
            let rows: Vec<(Arc<Published>, Arc<str>, i64)> = g
                .live
                .values()
                .filter(|c| f.matches_call(&c.last))
                .map(|c| (c.last.clone(), c.vcon.clone(), c.created_ns))
                .collect();
            (rows, g.latest_ns)
        };
        // Parsing happens outside the lock: the publisher is never held up by a reader.
        rows.sort_by(|a, b| a.2.cmp(&b.2).then_with(|| a.0.uuid.cmp(&b.0.uuid)));
        rows.iter()
            .map(|(p, vcon, created)| call_summary(p, vcon, *created, latest))
            .collect()
    }

    /// Subscribes: the returned [`Subscription`] first yields the current snapshot of every
    /// matching live call (or, with a `last_event_id` still in the recent buffer, the events
    /// after it), then live events.
    pub fn subscribe(self: &Arc<Self>, opts: SubscribeOptions) -> Result<Subscription, HubError> {
        self.subscribe_inner(opts, None)
    }

    /// As [`Hub::subscribe`], but the live events come through `relay` (a re-broadcast on
    /// the subscriber's own thread, see [`Relay`]) instead of straight from the hub.
    pub fn subscribe_via(
        self: &Arc<Self>,
        relay: &RelayHandle,
        opts: SubscribeOptions,
    ) -> Result<Subscription, HubError> {
        self.subscribe_inner(opts, Some(relay))
    }

    /// A [`Relay`] of this hub's events and the handle to subscribe through it.
    pub fn relay(self: &Arc<Self>) -> (Relay, RelayHandle) {
        let (tx, _) = broadcast::channel(self.cfg.channel.clamp(1, MAX_CHANNEL));
        let rx = self.lock().tx.as_ref().map(broadcast::Sender::subscribe);
        // A hub already closed: the relay ends at once and so do its subscribers.
        let handle = RelayHandle {
            tx: Arc::new(Mutex::new(rx.is_some().then(|| tx.clone()))),
        };
        (
            Relay {
                rx,
                tx,
                handle: handle.clone(),
            },
            handle,
        )
    }

    fn subscribe_inner(
        self: &Arc<Self>,
        opts: SubscribeOptions,
        relay: Option<&RelayHandle>,
    ) -> Result<Subscription, HubError> {
        let n = self.stats.subscribers.fetch_add(1, Relaxed);
        if n >= self.cfg.max_subscribers {
            self.stats.subscribers.fetch_sub(1, Relaxed);
            self.stats.refused.fetch_add(1, Relaxed);
            return Err(HubError::TooManySubscribers(self.cfg.max_subscribers));
        }
        if opts.delta {
            self.stats.delta_subscribers.fetch_add(1, Relaxed);
        }
        let mut sub = Subscription {
            hub: self.clone(),
            rx: None,
            filter: opts.filter,
            delta: opts.delta,
            sent: HashMap::new(),
            pending: VecDeque::new(),
            last_n: 0,
            lost: 0,
            lagged: 0,
        };
        let g = self.lock();
        // Under the hub's lock: every event after `last_n` (set below) reaches `rx`, since
        // the hub sends (and so the relay forwards) only events published after this.
        sub.rx = match relay {
            None => g.tx.as_ref().map(broadcast::Sender::subscribe),
            Some(r) => r.subscribe(),
        };
        let resume_at = opts
            .last_event_id
            .as_deref()
            .and_then(|id| g.recent.iter().position(|p| &*p.id == id));
        match resume_at {
            Some(i) => {
                for p in g.recent.iter().skip(i + 1) {
                    sub.offer(p);
                }
            }
            None => {
                if let Some(id) = &opts.last_event_id {
                    let body = json!({"kind": "resync", "last_event_id": id}).to_string();
                    sub.pending
                        .push_back(Frame::new(Some("resync"), None, &body));
                }
                let mut calls: Vec<&LiveCall> = g.live.values().collect();
                calls.sort_by(|a, b| {
                    a.created_ns
                        .cmp(&b.created_ns)
                        .then_with(|| a.last.uuid.cmp(&b.last.uuid))
                });
                for c in calls {
                    sub.offer(&c.last);
                }
            }
        }
        sub.last_n = g.last_n;
        drop(g);
        Ok(sub)
    }

    /// Uuids of the events strictly between stream positions `after` and `before` (what a
    /// lagging subscriber lost), `None` when some already left the recent buffer.
    fn lost_between(&self, after: u64, before: u64) -> Option<Vec<Arc<str>>> {
        let g = self.lock();
        let first = g.recent.front()?.n;
        if first > after.saturating_add(1) {
            return None;
        }
        let mut uuids: Vec<Arc<str>> = Vec::new();
        for p in g.recent.iter().skip_while(|p| p.n <= after) {
            if p.n >= before {
                break;
            }
            if !uuids.contains(&p.uuid) && uuids.len() < MAX_GAP_CALLS {
                uuids.push(p.uuid.clone());
            }
        }
        Some(uuids)
    }
}

/// Most uuids named in one `gap` event.
const MAX_GAP_CALLS: usize = 1000;

fn party_text<'a>(fields: impl Iterator<Item = Option<&'a str>>, out: &mut String) {
    for f in fields.flatten() {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&f.to_lowercase());
    }
}

fn meta_from_value(v: &Value) -> (Box<str>, Option<Box<str>>) {
    let mut s = String::new();
    if let Some(ps) = v.get("parties").and_then(Value::as_array) {
        for p in ps {
            party_text(
                ["tel", "sip", "mailto", "name"]
                    .iter()
                    .map(|k| p.get(*k).and_then(Value::as_str)),
                &mut s,
            );
        }
    }
    let state = v
        .get("vcontap")
        .and_then(|x| x.get("state"))
        .and_then(Value::as_str)
        .map(Into::into);
    (s.into(), state)
}

#[derive(Deserialize)]
struct MetaDoc {
    #[serde(default)]
    parties: Vec<PartyMeta>,
    #[serde(default)]
    vcontap: Option<ExtMeta>,
}

#[derive(Deserialize)]
struct PartyMeta {
    tel: Option<String>,
    sip: Option<String>,
    mailto: Option<String>,
    name: Option<String>,
}

#[derive(Deserialize)]
struct ExtMeta {
    state: Option<String>,
}

/// The filter fields only, without building the whole document.
fn meta_from_text(vcon: &str) -> (Box<str>, Option<Box<str>>) {
    let Ok(d) = serde_json::from_str::<MetaDoc>(vcon) else {
        return ("".into(), None);
    };
    let mut s = String::new();
    for p in &d.parties {
        party_text(
            [&p.tel, &p.sip, &p.mailto, &p.name]
                .into_iter()
                .map(Option::as_deref),
            &mut s,
        );
    }
    (s.into(), d.vcontap.and_then(|x| x.state).map(Into::into))
}

fn kind_from_str(s: &str) -> Option<EventKind> {
    Some(match s {
        "created" => EventKind::Created,
        "updated" => EventKind::Updated,
        "segment" => EventKind::Segment,
        "finished" => EventKind::Finished,
        _ => return None,
    })
}

/// Which events a subscriber wants (every set empty: all).
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Exact call uuids.
    pub uuids: Vec<String>,
    /// Case-insensitive substring of any party's tel, sip, mailto or name.
    pub party: Option<String>,
    /// `vcontap.state` values (`calling`, `ringing`, `answered`, `held`, `finished`…).
    pub states: Vec<String>,
    /// Event kinds.
    pub kinds: Vec<EventKind>,
}

/// Most values in one comma-separated filter parameter, and longest value.
const MAX_FILTER_VALUES: usize = 100;
const MAX_FILTER_LEN: usize = 256;

fn split_list(name: &str, v: Option<&str>) -> Result<Vec<String>, HubError> {
    let Some(v) = v.filter(|v| !v.is_empty()) else {
        return Ok(Vec::new());
    };
    let items: Vec<String> = v.split(',').map(|s| s.trim().to_string()).collect();
    if items.len() > MAX_FILTER_VALUES || items.iter().any(|s| s.len() > MAX_FILTER_LEN) {
        return Err(HubError::BadFilter(format!(
            "{name}: at most {MAX_FILTER_VALUES} values of {MAX_FILTER_LEN} bytes"
        )));
    }
    Ok(items)
}

impl Filter {
    /// From query parameters (`uuid`, `state`, `kind` comma-separated; `party` one string).
    pub fn parse(
        uuid: Option<&str>,
        party: Option<&str>,
        state: Option<&str>,
        kind: Option<&str>,
    ) -> Result<Filter, HubError> {
        let party = party.filter(|p| !p.is_empty()).map(str::to_lowercase);
        if party.as_ref().is_some_and(|p| p.len() > MAX_FILTER_LEN) {
            return Err(HubError::BadFilter(format!(
                "party: at most {MAX_FILTER_LEN} bytes"
            )));
        }
        let mut kinds = Vec::new();
        for k in split_list("kind", kind)? {
            kinds.push(kind_from_str(&k).ok_or_else(|| {
                HubError::BadFilter(format!(
                    "kind {k:?}: one of created, updated, segment, finished"
                ))
            })?);
        }
        Ok(Filter {
            uuids: split_list("uuid", uuid)?,
            party,
            states: split_list("state", state)?,
            kinds,
        })
    }

    /// Whether the call this event belongs to matches (uuid, party, state).
    fn matches_call(&self, p: &Published) -> bool {
        (self.uuids.is_empty() || self.uuids.iter().any(|u| **u == *p.uuid))
            && self.party.as_deref().is_none_or(|q| p.parties.contains(q))
            && (self.states.is_empty()
                || p.state
                    .as_deref()
                    .is_some_and(|s| self.states.iter().any(|x| x == s)))
    }

    /// Whether a subscriber with this filter gets event `p`.
    pub fn matches(&self, p: &Published) -> bool {
        (self.kinds.is_empty() || self.kinds.contains(&p.kind)) && self.matches_call(p)
    }
}

/// How to subscribe.
#[derive(Debug, Clone, Default)]
pub struct SubscribeOptions {
    /// Which events.
    pub filter: Filter,
    /// JSON Patch deltas instead of full snapshots where possible.
    pub delta: bool,
    /// Resume after this event id (`Last-Event-ID`).
    pub last_event_id: Option<String>,
}

/// A re-broadcast of the hub's events on one thread (an API shard): the publisher wakes
/// one task per relay instead of every subscriber's task, and each relay wakes its own
/// subscribers from their thread. Why: with a runtime per shard, each wake from outside
/// the runtime is a syscall on the publisher's thread (the engine's); 100 subscribers
/// would cost it 100 of them per event. A relay that falls behind the hub just skips
/// ahead: its subscribers see the jump in stream positions and send a `gap`.
pub struct Relay {
    rx: Option<broadcast::Receiver<Arc<Published>>>,
    tx: broadcast::Sender<Arc<Published>>,
    handle: RelayHandle,
}

/// Where subscribers of a [`Relay`] subscribe ([`Hub::subscribe_via`]).
#[derive(Clone)]
pub struct RelayHandle {
    /// `None` once the relay ended (its subscribers are told the stream is closed).
    tx: Arc<Mutex<Option<broadcast::Sender<Arc<Published>>>>>,
}

impl RelayHandle {
    fn subscribe(&self) -> Option<broadcast::Receiver<Arc<Published>>> {
        self.tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(broadcast::Sender::subscribe)
    }
}

impl Relay {
    /// Forwards until the hub closes. Run it on the thread its subscribers live on.
    pub async fn run(mut self) {
        if let Some(rx) = self.rx.as_mut() {
            loop {
                match rx.recv().await {
                    // No receivers is not an error: nobody on this thread is listening.
                    Ok(p) => {
                        let _ = self.tx.send(p);
                    }
                    // Subscribers notice the skipped positions themselves.
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        }
        // Closing: no new subscriber can join; those here get `Closed` once drained.
        *self.handle.tx.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// One subscriber's view of the hub. Dropping it releases its slot.
pub struct Subscription {
    hub: Arc<Hub>,
    rx: Option<broadcast::Receiver<Arc<Published>>>,
    filter: Filter,
    delta: bool,
    /// Last seq sent per call (delta mode): a patch is sent only on top of it.
    sent: HashMap<Arc<str>, u64>,
    pending: VecDeque<Frame>,
    /// Stream position of the last event received (or the hub's at subscribe time).
    last_n: u64,
    /// Events lost before the next one sent (reported in its `gap`).
    lost: u64,
    /// Events the channel said were dropped and no later event has accounted for yet.
    lagged: u64,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.stats.subscribers.fetch_sub(1, Relaxed);
        if self.delta {
            self.hub.stats.delta_subscribers.fetch_sub(1, Relaxed);
        }
    }
}

impl Subscription {
    fn offer(&mut self, p: &Arc<Published>) {
        if !self.filter.matches(p) {
            if self.delta {
                // The patch chain of this call is broken for this subscriber.
                self.sent.remove(&p.uuid);
            }
            return;
        }
        if !self.delta {
            self.pending.push_back(p.full.clone());
            return;
        }
        let frame = match (&p.delta, self.sent.get(&p.uuid)) {
            (Some(d), Some(&s)) if s.checked_add(1) == Some(p.seq) => d.clone(),
            _ => p.full.clone(),
        };
        if p.kind == EventKind::Finished {
            self.sent.remove(&p.uuid);
        } else {
            self.sent.insert(p.uuid.clone(), p.seq);
        }
        self.pending.push_back(frame);
    }

    fn gap(&mut self, next: &Published) {
        let lost = std::mem::take(&mut self.lost);
        let calls = self.hub.lost_between(self.last_n, next.n);
        let body = json!({
            "kind": "gap",
            "lost": lost,
            "before": &*next.id,
            "calls": calls.map(|c| c.iter().map(|u| u.to_string()).collect::<Vec<_>>()),
        })
        .to_string();
        self.pending.push_back(Frame::new(Some("gap"), None, &body));
        // Every call's next event is sent in full.
        self.sent.clear();
    }

    /// Takes event `p` from the channel: skips it if the subscriber already had it, queues
    /// a `gap` if positions were skipped, then queues its frame (if the filter wants it).
    fn take(&mut self, p: &Arc<Published>) {
        // Already in what this subscriber got at subscribe time (a relay may still be
        // forwarding older events).
        if p.n <= self.last_n {
            return;
        }
        // Positions skipped: this subscriber (or its relay) fell behind and lost the
        // oldest events. Counted here, not from `Lagged`, so that a relay's loss and the
        // subscriber's own are told the same way.
        let missed = p.n - self.last_n - 1;
        if missed > 0 {
            self.lost = self.lost.saturating_add(missed);
            self.lagged = 0;
            self.hub.stats.gaps.fetch_add(1, Relaxed);
            self.hub.stats.lost.fetch_add(missed, Relaxed);
            self.gap(p);
        }
        self.offer(p);
        self.last_n = p.n;
    }

    /// The next frame if one is ready now, without waiting: lets a transport write several
    /// queued events with one flush. `None` says nothing is ready (or the stream ended:
    /// [`Subscription::next`] tells which).
    pub fn try_next(&mut self) -> Option<Frame> {
        loop {
            if let Some(f) = self.pending.pop_front() {
                return Some(f);
            }
            match self.rx.as_mut()?.try_recv() {
                Ok(p) => self.take(&p),
                Err(broadcast::error::TryRecvError::Lagged(n)) => {
                    self.lagged = self.lagged.saturating_add(n);
                }
                Err(_) => return None,
            }
        }
    }

    /// The next frame for this subscriber; `None` once the hub is closed and everything
    /// was delivered. Cancel-safe (select it against a keep-alive timer).
    pub async fn next(&mut self) -> Option<Frame> {
        loop {
            if let Some(f) = self.pending.pop_front() {
                return Some(f);
            }
            let rx = self.rx.as_mut()?;
            match rx.recv().await {
                Ok(p) => self.take(&p),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    // Only a hint, for a stream that closes before the next event.
                    self.lagged = self.lagged.saturating_add(n);
                }
                Err(broadcast::error::RecvError::Closed) => {
                    self.rx = None;
                    if self.lagged > 0 {
                        let lost = std::mem::take(&mut self.lagged);
                        self.hub.stats.gaps.fetch_add(1, Relaxed);
                        self.hub.stats.lost.fetch_add(lost, Relaxed);
                        let body = json!({"kind": "gap", "lost": lost}).to_string();
                        return Some(Frame::new(Some("gap"), None, &body));
                    }
                }
            }
        }
    }
}

/// One `GET /v1/calls` row from a live snapshot; `now_ns` is the latest event time.
pub fn call_summary(p: &Published, vcon: &str, created_ns: i64, now_ns: i64) -> Value {
    let v: Value = serde_json::from_str(vcon).unwrap_or(Value::Null);
    let ext = v.get("vcontap");
    let field = |k: &str| ext.and_then(|e| e.get(k)).cloned().unwrap_or(Value::Null);
    let dialogs = v.get("dialog").and_then(Value::as_array);
    let recordings = dialogs.map_or(0, |d| {
        d.iter()
            .filter(|x| x.get("type").and_then(Value::as_str) == Some("recording"))
            .count()
    });
    // Quality so far: the RTP report the snapshot carries (`vcontap.rtp_quality` in live
    // snapshots when the engine's quality refresh is on; none with it off).
    let quality = ext
        .and_then(|e| e.get("rtp_quality"))
        .cloned()
        .or_else(|| {
            v.get("analysis")
                .and_then(Value::as_array)
                .and_then(|a| {
                    a.iter().find(|x| {
                        x.get("schema").and_then(Value::as_str) == Some("vcontap-rtp-quality")
                    })
                })
                .and_then(|x| x.get("body").cloned())
        })
        .unwrap_or(Value::Null);
    let duration_s = (now_ns.saturating_sub(created_ns)).max(0) as f64 / 1e9;
    json!({
        "uuid": &*p.uuid,
        "seq": p.seq,
        "state": p.state.as_deref(),
        "parties": v.get("parties").cloned().unwrap_or(Value::Null),
        "started": field("invite_at"),
        "answered": field("answered_at"),
        "duration_s": (duration_s * 1000.0).round() / 1000.0,
        "updated_at": v.get("updated_at").cloned().unwrap_or(Value::Null),
        "recordings": recordings,
        "streams": quality
            .get("streams")
            .and_then(Value::as_array)
            .map_or(0, Vec::len),
        "quality": quality,
    })
}

#[cfg(test)]
mod tests;
