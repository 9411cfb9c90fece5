//! The HEP listener: the I/O shell around the sans-IO `vcontap-hep` decoder. It owns a UDP
//! socket and a TCP listener (`--hep-listen ADDR`, HEP's usual port 9060), checks the optional
//! auth key, counts every message by outcome, and hands the SIP and RTP it carries to the
//! driver as owned [`HepDatagram`]s (a [`vcontap_wire::Datagram`] plus [`HepMeta`]: capture
//! agent id, node name, correlation id), which the driver feeds to [`crate::Tap::handle_hep`].
//!
//! # Threads and bounds
//!
//! The sockets are read on their own threads, not polled by the driver: a UDP socket must be
//! drained continuously (the kernel drops what its receive buffer cannot hold while the
//! engine is busy), and blocking reads wake on data with no polling delay.
//!
//! | thread | does | bound |
//! |---|---|---|
//! | `vcontap-hep-udp` | blocking `recv_from` (100 ms timeout to see shutdown), decode | one 64 KiB buffer |
//! | `vcontap-hep-accept` | accepts TCP connections | [`HepConfig::max_connections`]; beyond it a new connection is closed and counted |
//! | `vcontap-hep-tcp` (one per connection) | reads, frames ([`TcpFramer`]), decodes | framer ≤ 128 KiB; closed on a framing error (as heplify-server does) or after [`HepConfig::tcp_idle`] without data |
//! | → driver | one bounded queue of datagrams | [`HepConfig::queue`] datagrams and [`HepConfig::queue_bytes`] payload bytes; when full UDP datagrams are dropped and counted (`queue_dropped`), TCP readers wait (back-pressure to the sender) |
//!
//! # What becomes a datagram
//!
//! SIP (type 1, or no type chunk: sngrep `-L` treats everything as SIP) keeps the transport
//! HEP names (UDP, TCP or SCTP): the engine takes a TCP datagram as one complete SIP
//! message, which is what a HEP message carries. RTP (4) becomes a UDP datagram; RTCP (5) as
//! well when it is binary RTCP, while the spec's JSON RTCP is counted and skipped, as are logs
//! (100) and every other type. The timestamp is HEP's (repaired as HOMER does) or the arrival
//! time when the sender gave none.

use std::collections::HashMap;
use std::io::{ErrorKind, Read};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, SendTimeoutError, Sender};
use vcontap_hep::{HepError, Limits, ProtoType, TcpFramer};
use vcontap_wire::{Datagram, Timestamp, Transport};

use crate::clock::Clock;
use crate::tap::Tap;
use crate::PipelineError;

/// Default datagrams queued between the socket threads and the driver (~1 s of a busy HEP
/// feed of SIP and RTP at 64 k messages/s would need more: the byte bound protects memory).
pub const DEFAULT_QUEUE: usize = 65_536;
/// Default payload bytes queued: the queue never holds more than this whatever the sizes.
pub const DEFAULT_QUEUE_BYTES: usize = 64 << 20;
/// Default most concurrent TCP connections (one thread each).
pub const DEFAULT_MAX_CONNECTIONS: usize = 64;
/// Default idle time after which a TCP connection is closed (the sender reconnects).
pub const DEFAULT_TCP_IDLE: Duration = Duration::from_secs(300);
/// How often blocked socket threads look at the shutdown flag.
const STOP_CHECK: Duration = Duration::from_millis(100);
/// Distinct node names / correlation ids remembered per thread to share one `Arc<str>`.
const INTERN_MAX: usize = 256;

/// How a [`HepListener`] is set up.
#[derive(Debug, Clone)]
pub struct HepConfig {
    /// UDP address to bind (`None`: no UDP).
    pub udp: Option<SocketAddr>,
    /// TCP address to listen on (`None`: no TCP).
    pub tcp: Option<SocketAddr>,
    /// When set, messages must carry this key in chunk 0x000e (trailing NULs ignored);
    /// others are counted in `auth_failed` and dropped. Never logged.
    pub auth_key: Option<Vec<u8>>,
    /// Most concurrent TCP connections.
    pub max_connections: usize,
    /// Queue bound in datagrams.
    pub queue: usize,
    /// Queue bound in payload bytes.
    pub queue_bytes: usize,
    /// Idle TCP connections are closed after this.
    pub tcp_idle: Duration,
    /// Decoder limits (inflate cap).
    pub limits: Limits,
}

impl HepConfig {
    /// UDP and TCP on the same address (`--hep-listen ADDR`), defaults otherwise.
    pub fn new(addr: SocketAddr) -> Self {
        HepConfig {
            udp: Some(addr),
            tcp: Some(addr),
            auth_key: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            queue: DEFAULT_QUEUE,
            queue_bytes: DEFAULT_QUEUE_BYTES,
            tcp_idle: DEFAULT_TCP_IDLE,
            limits: Limits::default(),
        }
    }
}

/// How a HEP message reached vcontap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HepVia {
    /// A UDP datagram.
    Udp,
    /// A message framed from a TCP connection.
    Tcp,
}

/// What HEP says about a datagram beyond the datagram itself: kept so the vCon can name the
/// capture agent that saw the packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HepMeta {
    /// HEP version (1, 2 or 3).
    pub version: u8,
    /// Protocol type (chunk 0x000b; 1 when absent).
    pub proto_type: u8,
    /// Capture agent id (chunk 0x000c). sngrep sends its id 16-bit swapped (2002 arrives
    /// as 131203072); it is kept as received.
    pub capture_id: Option<u32>,
    /// Capture agent name (chunk 0x0013), lossy UTF-8.
    pub node_name: Option<Arc<str>>,
    /// Correlation id (chunk 0x0011), lossy UTF-8.
    pub correlation_id: Option<Arc<str>>,
    /// The HEP sender (the agent's socket address).
    pub peer: SocketAddr,
    /// UDP or TCP.
    pub via: HepVia,
    /// The timestamp is the arrival time (the sender gave none, or zero).
    pub arrival_time: bool,
}

/// One datagram taken out of HEP, with owned payload.
#[derive(Debug, Clone)]
pub struct HepDatagram {
    /// Capture time (HEP's, or arrival).
    pub ts: Timestamp,
    /// Source address of the captured packet.
    pub src: SocketAddr,
    /// Destination address of the captured packet.
    pub dst: SocketAddr,
    /// Transport of the captured packet.
    pub transport: Transport,
    /// VLAN (chunk 0x0012; 0 means untagged and becomes `None`).
    pub vlan: Option<u16>,
    /// The captured payload.
    pub payload: Vec<u8>,
    /// What HEP said about it.
    pub meta: HepMeta,
}

impl HepDatagram {
    /// The datagram view the engine takes.
    pub fn datagram(&self) -> Datagram<'_> {
        Datagram {
            ts: self.ts,
            src: self.src,
            dst: self.dst,
            transport: self.transport,
            vlan: self.vlan,
            payload: &self.payload,
        }
    }
}

/// Counters of a [`HepListener`], shared with its threads.
#[derive(Debug)]
pub struct HepCounters {
    /// UDP datagrams and TCP messages received.
    pub received: AtomicU64,
    /// Bytes of them.
    pub bytes: AtomicU64,
    /// Messages that decoded.
    pub decoded: AtomicU64,
    /// Decoded messages by protocol type (index = type).
    pub by_type: [AtomicU64; 256],
    /// Rejected messages by [`HepError::index`].
    pub malformed: [AtomicU64; HepError::ALL.len()],
    /// Wrong or missing auth key.
    pub auth_failed: AtomicU64,
    /// Protocol types vcontap does not use (not SIP, RTP, RTCP or log).
    pub unsupported_type: AtomicU64,
    /// RTCP sent as JSON (type 5 with a JSON body): skipped.
    pub rtcp_json: AtomicU64,
    /// Log messages (type 100): skipped.
    pub logs: AtomicU64,
    /// Messages without a payload (keep-alives).
    pub no_payload: AtomicU64,
    /// Timestamps repaired (NTP epoch, µs ≥ 10⁶).
    pub ts_repaired: AtomicU64,
    /// Messages stamped with the arrival time (no or zero timestamp).
    pub ts_arrival: AtomicU64,
    /// Datagrams with a missing address (forwarded with the unspecified address).
    pub address_missing: AtomicU64,
    /// Datagrams handed to the queue.
    pub forwarded: AtomicU64,
    /// Datagrams dropped because the queue was full (UDP).
    pub queue_dropped: AtomicU64,
    /// UDP receive errors.
    pub udp_errors: AtomicU64,
    /// TCP connections accepted.
    pub tcp_accepted: AtomicU64,
    /// TCP connections refused (over `max_connections`).
    pub tcp_refused: AtomicU64,
    /// TCP connections closed because framing broke.
    pub tcp_bad_framing: AtomicU64,
    /// TCP connections closed for idleness.
    pub tcp_idle_closed: AtomicU64,
    /// TCP connections open now.
    pub tcp_open: AtomicUsize,
}

impl Default for HepCounters {
    fn default() -> Self {
        HepCounters {
            received: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            decoded: AtomicU64::new(0),
            by_type: std::array::from_fn(|_| AtomicU64::new(0)),
            malformed: std::array::from_fn(|_| AtomicU64::new(0)),
            auth_failed: AtomicU64::new(0),
            unsupported_type: AtomicU64::new(0),
            rtcp_json: AtomicU64::new(0),
            logs: AtomicU64::new(0),
            no_payload: AtomicU64::new(0),
            ts_repaired: AtomicU64::new(0),
            ts_arrival: AtomicU64::new(0),
            address_missing: AtomicU64::new(0),
            forwarded: AtomicU64::new(0),
            queue_dropped: AtomicU64::new(0),
            udp_errors: AtomicU64::new(0),
            tcp_accepted: AtomicU64::new(0),
            tcp_refused: AtomicU64::new(0),
            tcp_bad_framing: AtomicU64::new(0),
            tcp_idle_closed: AtomicU64::new(0),
            tcp_open: AtomicUsize::new(0),
        }
    }
}

fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// A snapshot of [`HepCounters`] (metrics, summaries, tests).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HepStats {
    /// UDP datagrams and TCP messages received.
    pub received: u64,
    /// Bytes received.
    pub bytes: u64,
    /// Messages that decoded.
    pub decoded: u64,
    /// Decoded messages per protocol type name ([`ProtoType::name`]; `other` sums the rest).
    pub by_type: Vec<(&'static str, u64)>,
    /// Rejected messages per [`HepError::reason`] (non-zero ones).
    pub malformed: Vec<(&'static str, u64)>,
    /// Wrong or missing auth key.
    pub auth_failed: u64,
    /// Types vcontap does not use.
    pub unsupported_type: u64,
    /// JSON RTCP skipped.
    pub rtcp_json: u64,
    /// Logs skipped.
    pub logs: u64,
    /// Keep-alives and other messages without payload.
    pub no_payload: u64,
    /// Timestamps repaired.
    pub ts_repaired: u64,
    /// Arrival time used.
    pub ts_arrival: u64,
    /// Datagrams with a missing address.
    pub address_missing: u64,
    /// Datagrams queued for the driver.
    pub forwarded: u64,
    /// Datagrams dropped on a full queue.
    pub queue_dropped: u64,
    /// UDP receive errors.
    pub udp_errors: u64,
    /// TCP connections accepted.
    pub tcp_accepted: u64,
    /// TCP connections refused.
    pub tcp_refused: u64,
    /// TCP connections closed on a framing error.
    pub tcp_bad_framing: u64,
    /// TCP connections closed when idle.
    pub tcp_idle_closed: u64,
    /// TCP connections open.
    pub tcp_open: usize,
}

impl HepStats {
    /// Malformed messages in total.
    pub fn malformed_total(&self) -> u64 {
        self.malformed.iter().map(|(_, n)| n).sum()
    }

    /// Malformed messages of one reason.
    pub fn malformed_by(&self, reason: &str) -> u64 {
        self.malformed
            .iter()
            .filter(|(r, _)| *r == reason)
            .map(|(_, n)| n)
            .sum()
    }

    /// Decoded messages of one type name.
    pub fn of_type(&self, name: &str) -> u64 {
        self.by_type
            .iter()
            .filter(|(r, _)| *r == name)
            .map(|(_, n)| n)
            .sum()
    }
}

impl HepCounters {
    /// A snapshot.
    pub fn snapshot(&self) -> HepStats {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut by_type: Vec<(&'static str, u64)> = Vec::new();
        for (t, c) in self.by_type.iter().enumerate() {
            let n = l(c);
            if n == 0 {
                continue;
            }
            let name = ProtoType(u8::try_from(t).unwrap_or(0)).name();
            match by_type.iter_mut().find(|(k, _)| *k == name) {
                Some((_, v)) => *v += n,
                None => by_type.push((name, n)),
            }
        }
        let malformed = HepError::ALL
            .iter()
            .zip(self.malformed.iter())
            .filter(|(_, c)| l(c) > 0)
            .map(|(e, c)| (e.reason(), l(c)))
            .collect();
        HepStats {
            received: l(&self.received),
            bytes: l(&self.bytes),
            decoded: l(&self.decoded),
            by_type,
            malformed,
            auth_failed: l(&self.auth_failed),
            unsupported_type: l(&self.unsupported_type),
            rtcp_json: l(&self.rtcp_json),
            logs: l(&self.logs),
            no_payload: l(&self.no_payload),
            ts_repaired: l(&self.ts_repaired),
            ts_arrival: l(&self.ts_arrival),
            address_missing: l(&self.address_missing),
            forwarded: l(&self.forwarded),
            queue_dropped: l(&self.queue_dropped),
            udp_errors: l(&self.udp_errors),
            tcp_accepted: l(&self.tcp_accepted),
            tcp_refused: l(&self.tcp_refused),
            tcp_bad_framing: l(&self.tcp_bad_framing),
            tcp_idle_closed: l(&self.tcp_idle_closed),
            tcp_open: self.tcp_open.load(Ordering::Relaxed),
        }
    }
}

/// What every socket thread shares.
struct Shared {
    cfg: HepConfig,
    counters: Arc<HepCounters>,
    stop: AtomicBool,
    tx: Sender<HepDatagram>,
    /// Payload bytes in the queue now.
    queued_bytes: AtomicUsize,
}

/// Binds the sockets, runs the socket threads, and hands datagrams to the driver. Dropping
/// it stops the threads (within ~100 ms) and joins them.
pub struct HepListener {
    shared: Arc<Shared>,
    rx: Receiver<HepDatagram>,
    /// A datagram taken by [`HepListener::wait`] and not yet handed out.
    pending: Option<HepDatagram>,
    udp_addr: Option<SocketAddr>,
    tcp_addr: Option<SocketAddr>,
    threads: Vec<JoinHandle<()>>,
}

impl HepListener {
    /// Binds the configured sockets and starts their threads.
    pub fn bind(cfg: HepConfig) -> Result<HepListener, PipelineError> {
        if cfg.udp.is_none() && cfg.tcp.is_none() {
            return Err(PipelineError::Config(
                "HEP listener: neither UDP nor TCP address".into(),
            ));
        }
        let udp = match cfg.udp {
            Some(a) => {
                let s =
                    UdpSocket::bind(a).map_err(|e| PipelineError::Io(format!("HEP UDP {a}"), e))?;
                s.set_read_timeout(Some(STOP_CHECK))
                    .map_err(|e| PipelineError::Io(format!("HEP UDP {a}"), e))?;
                Some(s)
            }
            None => None,
        };
        let tcp = match cfg.tcp {
            Some(a) => {
                let l = TcpListener::bind(a)
                    .map_err(|e| PipelineError::Io(format!("HEP TCP {a}"), e))?;
                l.set_nonblocking(true)
                    .map_err(|e| PipelineError::Io(format!("HEP TCP {a}"), e))?;
                Some(l)
            }
            None => None,
        };
        let udp_addr = udp.as_ref().and_then(|s| s.local_addr().ok());
        let tcp_addr = tcp.as_ref().and_then(|s| s.local_addr().ok());
        let (tx, rx) = bounded(cfg.queue.max(1));
        let shared = Arc::new(Shared {
            cfg,
            counters: Arc::new(HepCounters::default()),
            stop: AtomicBool::new(false),
            tx,
            queued_bytes: AtomicUsize::new(0),
        });
        let mut listener = HepListener {
            shared: shared.clone(),
            rx,
            pending: None,
            udp_addr,
            tcp_addr,
            threads: Vec::new(),
        };
        if let Some(s) = udp {
            let sh = shared.clone();
            listener.threads.push(
                std::thread::Builder::new()
                    .name("vcontap-hep-udp".into())
                    .spawn(move || udp_loop(&sh, &s))
                    .map_err(PipelineError::Thread)?,
            );
        }
        if let Some(l) = tcp {
            let sh = shared;
            listener.threads.push(
                std::thread::Builder::new()
                    .name("vcontap-hep-accept".into())
                    .spawn(move || accept_loop(&sh, &l))
                    .map_err(PipelineError::Thread)?,
            );
        }
        tracing::info!(udp = ?udp_addr, tcp = ?tcp_addr, "HEP listener started");
        Ok(listener)
    }

    /// The bound UDP address (useful with port 0).
    pub fn udp_addr(&self) -> Option<SocketAddr> {
        self.udp_addr
    }

    /// The bound TCP address.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    /// Live counters (shared).
    pub fn counters(&self) -> Arc<HepCounters> {
        self.shared.counters.clone()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> HepStats {
        self.shared.counters.snapshot()
    }

    fn taken(&self, d: HepDatagram) -> HepDatagram {
        self.shared
            .queued_bytes
            .fetch_sub(d.payload.len(), Ordering::Relaxed);
        d
    }

    /// The next datagram if one is queued; never blocks.
    pub fn try_recv(&mut self) -> Option<HepDatagram> {
        if let Some(d) = self.pending.take() {
            return Some(d);
        }
        self.rx.try_recv().ok().map(|d| self.taken(d))
    }

    /// Waits up to `timeout` for a datagram; `true` when one is ready for the next
    /// [`HepListener::try_recv`] or [`HepListener::poll`].
    pub fn wait(&mut self, timeout: Duration) -> bool {
        if self.pending.is_some() {
            return true;
        }
        match self.rx.recv_timeout(timeout) {
            Ok(d) => {
                self.pending = Some(self.taken(d));
                true
            }
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => false,
        }
    }

    /// Hands up to `max` queued datagrams to `f` without blocking; returns how many. An
    /// error from `f` stops and is returned (the datagram is consumed).
    pub fn poll<E>(
        &mut self,
        max: usize,
        mut f: impl FnMut(&Datagram<'_>, &HepMeta) -> Result<(), E>,
    ) -> Result<usize, E> {
        let mut n = 0;
        while n < max {
            let Some(d) = self.try_recv() else { break };
            n += 1;
            f(&d.datagram(), &d.meta)?;
        }
        Ok(n)
    }

    /// Feeds up to `max` queued datagrams to `tap` with the timer time of `clock`.
    pub fn feed(
        &mut self,
        tap: &mut Tap,
        clock: &Clock,
        max: usize,
    ) -> Result<usize, PipelineError> {
        self.poll(max, |d, m| tap.handle_hep(d, m, clock.now()))
    }

    /// Stops the threads and waits for them.
    pub fn shutdown(mut self) -> HepStats {
        self.stop_threads();
        self.stats()
    }

    fn stop_threads(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for HepListener {
    fn drop(&mut self) {
        self.stop_threads();
    }
}

/// Shares one `Arc<str>` per distinct node name / correlation id seen by a thread.
#[derive(Default)]
struct Interner(HashMap<Vec<u8>, Arc<str>>);

impl Interner {
    fn get(&mut self, b: &[u8]) -> Arc<str> {
        if let Some(s) = self.0.get(b) {
            return s.clone();
        }
        if self.0.len() >= INTERN_MAX {
            self.0.clear();
        }
        let s: Arc<str> = Arc::from(String::from_utf8_lossy(b).as_ref());
        self.0.insert(b.to_vec(), s.clone());
        s
    }
}

fn arrival() -> Timestamp {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| Timestamp(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)))
        .unwrap_or_default()
}

fn trim_nuls(mut b: &[u8]) -> &[u8] {
    while let [rest @ .., 0] = b {
        b = rest;
    }
    b
}

/// Constant-time comparison (the key is a secret; its length is not).
fn same_key(got: &[u8], want: &[u8]) -> bool {
    let (got, want) = (trim_nuls(got), trim_nuls(want));
    got.len() == want.len() && got.iter().zip(want).fold(0u8, |a, (x, y)| a | (x ^ y)) == 0
}

/// Whether a payload is binary RTCP (version 2, packet type 200–207) rather than JSON.
fn binary_rtcp(p: &[u8]) -> bool {
    matches!(p, [b0, b1, ..] if b0 >> 6 == 2 && (200..=207).contains(b1))
}

/// The outcome of one message: a datagram for the driver, or nothing (already counted).
fn to_datagram(
    sh: &Shared,
    interner: &mut Interner,
    bytes: &[u8],
    peer: SocketAddr,
    via: HepVia,
) -> Option<HepDatagram> {
    let c = &*sh.counters;
    inc(&c.received);
    c.bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
    let m = match vcontap_hep::decode_with(bytes, &sh.cfg.limits) {
        Ok(m) => m,
        Err(e) => {
            if let Some(x) = c.malformed.get(e.index()) {
                inc(x);
            }
            tracing::debug!(%peer, reason = e.reason(), "malformed HEP");
            return None;
        }
    };
    inc(&c.decoded);
    if let Some(want) = &sh.cfg.auth_key {
        if !m.auth_key.as_deref().is_some_and(|k| same_key(k, want)) {
            inc(&c.auth_failed);
            tracing::debug!(%peer, "HEP auth key mismatch");
            return None;
        }
    }
    let ptype = m.proto_type.unwrap_or(ProtoType::SIP);
    if let Some(x) = c.by_type.get(usize::from(ptype.0)) {
        inc(x);
    }
    let payload = m.payload_bytes();
    if payload.is_empty() {
        inc(&c.no_payload);
        return None;
    }
    let transport = match ptype {
        ProtoType::SIP => match m.ip_proto {
            Some(6) => Transport::Tcp,
            Some(132) => Transport::Sctp,
            _ => Transport::Udp,
        },
        ProtoType::RTP => Transport::Udp,
        ProtoType::RTCP if binary_rtcp(payload) => Transport::Udp,
        ProtoType::RTCP => {
            inc(&c.rtcp_json);
            return None;
        }
        ProtoType::LOG => {
            inc(&c.logs);
            return None;
        }
        _ => {
            inc(&c.unsupported_type);
            return None;
        }
    };
    let (ts, arrival_time) = match m.timestamp() {
        Some(t) => {
            if t.repaired {
                inc(&c.ts_repaired);
            }
            (
                Timestamp::from_parts(t.secs, t.micros.saturating_mul(1000)),
                false,
            )
        }
        None => {
            inc(&c.ts_arrival);
            (arrival(), true)
        }
    };
    let (src, dst, complete) = m.socket_addrs();
    if !complete {
        inc(&c.address_missing);
    }
    Some(HepDatagram {
        ts,
        src,
        dst,
        transport,
        vlan: m.vlan.filter(|v| *v != 0),
        payload: payload.to_vec(),
        meta: HepMeta {
            version: m.version.number(),
            proto_type: ptype.0,
            capture_id: m.capture_id,
            node_name: m.node_name.as_deref().map(|n| interner.get(n)),
            correlation_id: m.correlation_id.as_deref().map(|n| interner.get(n)),
            peer,
            via,
            arrival_time,
        },
    })
}

/// Queues a datagram: UDP drops on a full queue, TCP waits (until shutdown).
fn enqueue(sh: &Shared, d: HepDatagram, via: HepVia) {
    let c = &*sh.counters;
    let len = d.payload.len();
    loop {
        let before = sh.queued_bytes.fetch_add(len, Ordering::Relaxed);
        if before.saturating_add(len) <= sh.cfg.queue_bytes {
            break;
        }
        sh.queued_bytes.fetch_sub(len, Ordering::Relaxed);
        if via == HepVia::Udp || sh.stop.load(Ordering::Relaxed) {
            inc(&c.queue_dropped);
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    // Counted before the send: the driver may see the datagram before this thread runs on.
    inc(&c.forwarded);
    let mut d = d;
    loop {
        let r = match via {
            HepVia::Udp => sh.tx.try_send(d).map_err(|e| e.into_inner()),
            HepVia::Tcp => match sh.tx.send_timeout(d, STOP_CHECK) {
                Ok(()) => Ok(()),
                Err(SendTimeoutError::Timeout(x)) if !sh.stop.load(Ordering::Relaxed) => {
                    d = x;
                    continue;
                }
                Err(SendTimeoutError::Timeout(x) | SendTimeoutError::Disconnected(x)) => Err(x),
            },
        };
        if r.is_err() {
            c.forwarded.fetch_sub(1, Ordering::Relaxed);
            sh.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            inc(&c.queue_dropped);
        }
        return;
    }
}

fn udp_loop(sh: &Shared, sock: &UdpSocket) {
    let mut buf = vec![0u8; 65_536];
    let mut interner = Interner::default();
    while !sh.stop.load(Ordering::Relaxed) {
        match sock.recv_from(&mut buf) {
            Ok((n, peer)) => {
                let bytes = buf.get(..n).unwrap_or(&[]);
                if let Some(d) = to_datagram(sh, &mut interner, bytes, peer, HepVia::Udp) {
                    enqueue(sh, d, HepVia::Udp);
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => {
                inc(&sh.counters.udp_errors);
                tracing::debug!(error = %e, "HEP UDP receive");
            }
        }
    }
}

fn accept_loop(sh: &Arc<Shared>, l: &TcpListener) {
    let mut conns: Vec<JoinHandle<()>> = Vec::new();
    while !sh.stop.load(Ordering::Relaxed) {
        conns.retain(|t| !t.is_finished());
        match l.accept() {
            Ok((stream, peer)) => {
                if sh.counters.tcp_open.load(Ordering::Relaxed) >= sh.cfg.max_connections {
                    inc(&sh.counters.tcp_refused);
                    tracing::warn!(%peer, "HEP TCP connection refused: too many connections");
                    drop(stream);
                    continue;
                }
                inc(&sh.counters.tcp_accepted);
                sh.counters.tcp_open.fetch_add(1, Ordering::Relaxed);
                let s2 = sh.clone();
                let spawned = std::thread::Builder::new()
                    .name("vcontap-hep-tcp".into())
                    .spawn(move || {
                        tcp_conn(&s2, stream, peer);
                        s2.counters.tcp_open.fetch_sub(1, Ordering::Relaxed);
                    });
                match spawned {
                    Ok(t) => conns.push(t),
                    Err(e) => {
                        sh.counters.tcp_open.fetch_sub(1, Ordering::Relaxed);
                        tracing::warn!(error = %e, "HEP TCP: cannot start a thread");
                    }
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => {
                tracing::debug!(error = %e, "HEP TCP accept");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    for t in conns {
        let _ = t.join();
    }
}

fn tcp_conn(sh: &Shared, mut stream: TcpStream, peer: SocketAddr) {
    if stream.set_nonblocking(false).is_err() || stream.set_read_timeout(Some(STOP_CHECK)).is_err()
    {
        return;
    }
    tracing::debug!(%peer, "HEP TCP connection");
    let mut framer = TcpFramer::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut interner = Interner::default();
    let mut last_data = Instant::now();
    while !sh.stop.load(Ordering::Relaxed) {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                last_data = Instant::now();
                let fed = framer.push(buf.get(..n).unwrap_or(&[]));
                let mut broken = fed.err();
                while broken.is_none() {
                    match framer.next_message() {
                        Ok(Some(msg)) => {
                            if let Some(d) = to_datagram(sh, &mut interner, msg, peer, HepVia::Tcp)
                            {
                                enqueue(sh, d, HepVia::Tcp);
                            }
                        }
                        Ok(None) => break,
                        Err(e) => broken = Some(e),
                    }
                }
                if let Some(e) = broken {
                    let c = &*sh.counters;
                    inc(&c.received);
                    if let Some(x) = c.malformed.get(e.index()) {
                        inc(x);
                    }
                    inc(&c.tcp_bad_framing);
                    tracing::info!(%peer, reason = e.reason(), "HEP TCP framing broken: closing");
                    return;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if last_data.elapsed() >= sh.cfg.tcp_idle {
                    inc(&sh.counters.tcp_idle_closed);
                    return;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_comparison() {
        assert!(same_key(b"secret", b"secret"));
        assert!(same_key(b"secret\0", b"secret"));
        assert!(!same_key(b"secreT", b"secret"));
        assert!(!same_key(b"secret2", b"secret"));
        assert!(!same_key(b"", b"secret"));
    }

    #[test]
    fn rtcp_sniffing() {
        assert!(binary_rtcp(&[0x80, 200, 0, 6]));
        assert!(!binary_rtcp(b"{\"type\":200}"));
    }
}
