//! `vcontap siprec`: the SIPREC recording server's shell (issue 9). It owns what the
//! sans-IO core (`vcontap_siprec::uas::Uas`) must not: the SIP sockets (UDP and TCP), the
//! RTP/RTCP port pool, the clock and the signals, and maps the core's session actions onto
//! the Tap's session API (`Tap::open_session` / `Tap::session`), so recorded sessions reach
//! the same events, media store, sinks and live API as sniffed calls.
//!
//! # Threads and queues
//!
//! One loop thread (this function's caller) owns the UAS, the Tap and the port pool; every
//! socket reader hands what it read to it through one bounded queue ([`INPUT_QUEUE`]):
//!
//! | reader | how | when the queue is full |
//! |---|---|---|
//! | SIP over UDP | a std thread, blocking `recv_from` (64 KB: fragmented INVITEs) | drop the datagram, counted (the SRC retransmits) |
//! | SIP over TCP | a std thread per connection (at most [`MAX_TCP_CONNECTIONS`]) | block: the connection's bytes are a stream, and TCP pushes back on the SRC |
//! | RTP/RTCP | a tokio task per socket on the output runtime (hundreds of sockets) | drop the packet, counted (`loss` in the vCon's RTP report) |
//!
//! Std threads for SIP keep the blocking TCP writes (small responses, a write timeout) out
//! of the runtime; RTP sockets are many, so they are tasks. Replies are written by the loop
//! thread itself (UDP `send_to`, TCP `write_all` with [`TCP_WRITE_TIMEOUT`]).
//!
//! # Media
//!
//! For each accepted stream the loop binds an even RTP port and the RTCP port above it from
//! `--rtp-ports` *before* it tells the core the media is ready (so the 200 OK never names a
//! port nobody listens on, and RTP before the ACK is kept). Packets are accepted from any
//! source address and port. SRTP is not decrypted yet, so the core is told to refuse
//! `RTP/SAVP` lines (a session with only such lines gets `488`).
//!
//! SIGTERM/SIGINT: the core stops accepting (503), every session is ended with a BYE
//! (vCon end reason `shutdown`), and the Tap finishes and the sinks drain as in `capture`.
//!
//! # vCon content and recording policy
//!
//! `vcontap_siprec::content::SessionContent` decides (with the `--record-policy` /
//! `--do-not-record` policy, [`policy::PolicyArgs`]) whether a session is recorded and what
//! it attaches (INVITE, every metadata version, correlation ids); the loop forwards its
//! output: attachments at open and on metadata updates, streams a re-INVITE added
//! (`SessionCall::AddStream`), and a late do-not-record match as a pause that no resume
//! lifts. A session not recorded is answered like any other; the engine drops its packets.

mod policy;

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use vcontap_engine::{EngineConfig, FinishReason, RecordMode};
use vcontap_pipeline::{
    Clock, LocalFiles, PipelineError, SessionCall, SessionHandle, Tap, TapConfig,
};
use vcontap_sinks::WhenFull;
use vcontap_siprec::answer::{Bound, MAX_KEY_MATERIAL};
use vcontap_siprec::content::SessionContent;
use vcontap_siprec::session::{self, SessionPlan};
use vcontap_siprec::uas::{Config, Event, Peer, RsId, Transport, Uas};
use vcontap_wire::{Datagram, Timestamp};

use crate::api::ApiState;
use crate::outputs::{OutputArgs, Outputs};
use crate::RecordArg;

/// Messages queued from the socket readers to the loop thread.
pub const INPUT_QUEUE: usize = 16 * 1024;
/// Most simultaneous SIP TCP connections (SRCs keep a few persistent ones).
pub const MAX_TCP_CONNECTIONS: usize = 256;
/// A TCP write that cannot complete in this time closes the connection.
const TCP_WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest the loop waits for input before it looks at its timers and the stop flag.
const IDLE_WAIT: Duration = Duration::from_millis(20);
/// After SIGTERM, how long the BYEs get to be answered before the sessions are finished.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// After SIGTERM, how long the loop keeps serving SIP even when every session has ended.
const SHUTDOWN_LINGER: Duration = Duration::from_millis(300);

/// `vcontap siprec` options.
#[derive(clap::Args, Debug)]
pub struct SiprecArgs {
    /// SIP address (UDP and TCP), e.g. 0.0.0.0:5060.
    #[arg(long, value_name = "ADDR")]
    pub listen: SocketAddr,
    /// RTP port range `A-B` (even RTP ports, RTCP on the odd port above each).
    #[arg(long, value_name = "A-B", default_value = "40000-49999")]
    pub rtp_ports: String,
    /// Our address in SDP answers (default: the listen address, which must then not be
    /// a wildcard).
    #[arg(long, value_name = "IP")]
    pub media_address: Option<IpAddr>,
    /// Accept SIP only from these networks (repeatable, `10.0.0.0/8`, `2001:db8::/32`,
    /// or a single address); others are dropped unanswered (UDP) or disconnected (TCP).
    /// Default: every source.
    #[arg(long = "allow", value_name = "NET")]
    pub allow: Vec<String>,
    /// Most concurrent recording sessions (more get 503 + Retry-After).
    #[arg(long, default_value_t = 1000)]
    pub max_sessions: usize,
    /// Serve /metrics, /healthz and /readyz here.
    #[arg(long, value_name = "ADDR")]
    pub listen_api: Option<SocketAddr>,
    /// Output directory (file sink `YYYY/MM/DD/<uuid>.vcon.json` and `media/`).
    #[arg(long, default_value = "out")]
    pub out: PathBuf,
    /// Audio recording mode.
    #[arg(long, value_enum, default_value_t = RecordArg::Stereo)]
    pub record: RecordArg,
    /// Engine shards (threads); sessions are spread over them.
    #[arg(long, default_value_t = 1)]
    pub shards: usize,
    /// Host name hashed into vCon uuids.
    #[arg(long)]
    pub host: Option<String>,
    /// Public base URL for recordings.
    #[arg(long)]
    pub media_base_url: Option<String>,
    #[command(flatten)]
    pub outputs: OutputArgs,
    #[command(flatten)]
    pub policy: policy::PolicyArgs,
}

/// An allowed source network. Hand-written: a prefix match is a few lines, not a
/// dependency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Net {
    addr: IpAddr,
    len: u8,
}

impl Net {
    fn parse(s: &str) -> Result<Net> {
        let (a, l) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .trim()
            .parse()
            .with_context(|| format!("--allow {s}: not an address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match l {
            Some(l) => l
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|l| *l <= max)
                .with_context(|| format!("--allow {s}: bad prefix length"))?,
            None => max,
        };
        Ok(Net { addr, len })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4 peer on a dual-stack socket arrives as ::ffff:a.b.c.d.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let (a, b, bits) = match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => {
                (u128::from(u32::from(n)), u128::from(u32::from(i)), 32u32)
            }
            (IpAddr::V6(n), IpAddr::V6(i)) => (u128::from(n), u128::from(i), 128),
            _ => return false,
        };
        let shift = bits - u32::from(self.len);
        shift >= bits || (a >> shift) == (b >> shift)
    }
}

/// True when `ip` may talk SIP to us (no list: everyone).
fn allowed(acl: &[Net], ip: IpAddr) -> bool {
    acl.is_empty() || acl.iter().any(|n| n.contains(ip))
}

/// What the readers hand to the loop.
enum Input {
    /// A SIP datagram or a chunk of a SIP TCP stream.
    Sip(Peer, Vec<u8>),
    /// A TCP connection ended.
    Closed(u64),
    /// A packet on one of our RTP/RTCP ports.
    Rtp {
        local: u16,
        from: SocketAddr,
        at: Instant,
        bytes: Vec<u8>,
    },
}

/// Even RTP ports of the range, handed out oldest-released first (a port just released
/// is reused last, so late packets of an ended session do not land in a new one).
struct PortPool {
    free: VecDeque<u16>,
}

impl PortPool {
    fn parse(range: &str) -> Result<PortPool> {
        let (a, b) = range
            .split_once('-')
            .context("--rtp-ports takes A-B, e.g. 40000-49999")?;
        let (a, b): (u16, u16) = (
            a.trim().parse().context("--rtp-ports start")?,
            b.trim().parse().context("--rtp-ports end")?,
        );
        let first = a.saturating_add(a % 2);
        let free: VecDeque<u16> = (first..b).step_by(2).filter(|p| *p < b).collect();
        if free.is_empty() {
            bail!("--rtp-ports {range} holds no even RTP port with its RTCP port");
        }
        Ok(PortPool { free })
    }
}

/// One bound RTP/RTCP pair; dropping it stops both readers (and so closes the sockets).
struct PortPair {
    port: u16,
    tasks: [tokio::task::AbortHandle; 2],
}

impl Drop for PortPair {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// One recording session as the loop knows it.
struct Rs {
    /// The Tap's session and the m-line → engine stream map, once answered.
    opened: Option<(SessionHandle, SessionPlan, Timestamp)>,
    /// Bindings per m-line.
    pairs: Vec<Option<PortPair>>,
    /// Attachments and recording policy state, once answered.
    content: Option<SessionContent>,
}

/// Counters for logs and `/metrics`.
#[derive(Default)]
struct Counters {
    input_dropped: AtomicU64,
    acl_refused: AtomicU64,
    rtp_packets: AtomicU64,
    rtp_unknown: AtomicU64,
    sessions_opened: AtomicU64,
    sessions_open: AtomicU64,
    bind_failures: AtomicU64,
    tcp_connections: AtomicUsize,
}

struct Shell {
    uas: Uas,
    /// Which sessions are recorded.
    policy: vcontap_siprec::policy::Policy,
    tap: Tap,
    clock: Clock,
    /// Instant ↔ timer time, for stamping packets with when they were read.
    started: Instant,
    epoch: Timestamp,
    pool: PortPool,
    bind_ip: IpAddr,
    media_ip: IpAddr,
    sessions: HashMap<RsId, Rs>,
    /// Local RTP or RTCP port → (session, m-line).
    ports: HashMap<u16, (RsId, usize)>,
    udp: UdpSocket,
    tcp: Arc<Mutex<HashMap<u64, TcpStream>>>,
    input: SyncSender<Input>,
    rt: tokio::runtime::Handle,
    counters: Arc<Counters>,
    keys: std::collections::hash_map::RandomState,
}

impl Shell {
    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    fn stamp(&self, at: Instant) -> Timestamp {
        let el = at.saturating_duration_since(self.started).as_nanos();
        Timestamp(
            self.epoch
                .nanos()
                .saturating_add(i64::try_from(el).unwrap_or(i64::MAX)),
        )
    }

    /// Sends what the core wants sent and acts on its events, until both are empty.
    fn drain(&mut self) -> Result<(), PipelineError> {
        loop {
            let mut any = false;
            while let Some(t) = self.uas.poll_transmit() {
                any = true;
                self.transmit(t);
            }
            while let Some(e) = self.uas.poll_event() {
                any = true;
                self.act(e)?;
            }
            if !any {
                return Ok(());
            }
        }
    }

    fn transmit(&mut self, t: vcontap_siprec::uas::Transmit) {
        match t.to.transport {
            Transport::Udp => {
                if let Err(e) = self.udp.send_to(&t.bytes, t.to.addr) {
                    tracing::warn!(error = %e, "Cannot send a SIP datagram.");
                }
            }
            Transport::Tcp | Transport::Tls => {
                let Ok(mut conns) = self.tcp.lock() else {
                    return;
                };
                let failed = match conns.get_mut(&t.to.conn) {
                    Some(s) if !t.close => s.write_all(&t.bytes).is_err(),
                    Some(_) => true,
                    None => false,
                };
                if failed {
                    if let Some(s) = conns.remove(&t.to.conn) {
                        let _ = s.shutdown(std::net::Shutdown::Both);
                    }
                }
            }
        }
    }

    /// Binds an even RTP port and the RTCP port above it; `None` when the range is used up.
    fn bind_pair(&mut self, rs: RsId, m: usize) -> Option<PortPair> {
        for _ in 0..self.pool.free.len() {
            let port = self.pool.free.pop_front()?;
            let bound = (
                UdpSocket::bind((self.bind_ip, port)),
                UdpSocket::bind((self.bind_ip, port.wrapping_add(1))),
            );
            let (Ok(rtp), Ok(rtcp)) = bound else {
                // In use by someone else: try it again later.
                self.counters.bind_failures.fetch_add(1, Ordering::Relaxed);
                self.pool.free.push_back(port);
                continue;
            };
            let tasks = [
                self.spawn_reader(rtp, port),
                self.spawn_reader(rtcp, port.wrapping_add(1)),
            ];
            let [Some(a), Some(b)] = tasks else {
                // Half started: stop the half that did (its socket closes with it).
                for t in tasks.iter().flatten() {
                    t.abort();
                }
                self.pool.free.push_back(port);
                continue;
            };
            self.ports.insert(port, (rs, m));
            self.ports.insert(port.wrapping_add(1), (rs, m));
            return Some(PortPair {
                port,
                tasks: [a, b],
            });
        }
        None
    }

    fn spawn_reader(&self, sock: UdpSocket, local: u16) -> Option<tokio::task::AbortHandle> {
        sock.set_nonblocking(true).ok()?;
        let tx = self.input.clone();
        let counters = self.counters.clone();
        let task = self.rt.spawn(async move {
            let Ok(sock) = tokio::net::UdpSocket::from_std(sock) else {
                return;
            };
            let mut buf = vec![0u8; 2048];
            while let Ok((n, from)) = sock.recv_from(&mut buf).await {
                let bytes = buf.get(..n).unwrap_or(&[]).to_vec();
                let msg = Input::Rtp {
                    local,
                    from,
                    at: Instant::now(),
                    bytes,
                };
                if tx.try_send(msg).is_err() {
                    counters.input_dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        Some(task.abort_handle())
    }

    fn release(&mut self, rs: &mut Rs) {
        for p in rs.pairs.drain(..).flatten() {
            self.ports.remove(&p.port);
            self.ports.remove(&p.port.wrapping_add(1));
            self.pool.free.push_back(p.port);
        }
    }

    fn key(&self) -> [u8; MAX_KEY_MATERIAL] {
        // Our `a=crypto` key is never used to decrypt anything (we only receive), but it
        // must not be predictable: std's per-process random hasher keys are enough.
        let mut k = [0u8; MAX_KEY_MATERIAL];
        for (i, chunk) in k.chunks_mut(8).enumerate() {
            let mut h = self.keys.build_hasher();
            h.write_usize(i);
            let v = h.finish().to_le_bytes();
            for (d, s) in chunk.iter_mut().zip(v) {
                *d = s;
            }
        }
        k
    }

    fn act(&mut self, e: Event) -> Result<(), PipelineError> {
        let now = self.now();
        match e {
            Event::MediaRequest {
                rs,
                plans,
                existing,
            } => {
                let mut state = self.sessions.remove(&rs).unwrap_or(Rs {
                    opened: None,
                    pairs: Vec::new(),
                    content: None,
                });
                state.pairs.resize_with(plans.len(), || None);
                let mut bound = Vec::with_capacity(plans.len());
                for (m, plan) in plans.iter().enumerate() {
                    let b = match existing.get(m).copied().flatten() {
                        Some(b) => Some(b),
                        None if plan.accepted() => {
                            let pair = self.bind_pair(rs, m);
                            let b = pair.as_ref().map(|p| Bound {
                                port: p.port,
                                key: self.key(),
                            });
                            if let Some(slot) = state.pairs.get_mut(m) {
                                *slot = pair;
                            }
                            b
                        }
                        None => None,
                    };
                    bound.push(b);
                }
                self.sessions.insert(rs, state);
                if !self.uas.media_ready(now, rs, bound) {
                    if let Some(mut s) = self.sessions.remove(&rs) {
                        self.release(&mut s);
                    }
                }
            }
            Event::Opened(o) => {
                let mut plan = session::plan(&o);
                let content = SessionContent::open(&o, &self.policy, &mut plan);
                tracing::info!(
                    streams = plan.spec.streams.len(),
                    parties = plan.spec.participants.len(),
                    siprec = o.siprec,
                    recorded = content.recording(),
                    "recording session opened"
                );
                let at = o.at;
                match self.tap.open_session(plan.spec.clone(), now) {
                    Ok(h) => {
                        self.counters
                            .sessions_opened
                            .fetch_add(1, Ordering::Relaxed);
                        self.counters.sessions_open.fetch_add(1, Ordering::Relaxed);
                        if o.paused {
                            self.tap.session(h, SessionCall::Pause(at), now)?;
                        }
                        if let Some(s) = self.sessions.get_mut(&o.rs) {
                            s.opened = Some((h, plan, at));
                            s.content = Some(content);
                        }
                    }
                    Err(PipelineError::Session(e)) => {
                        tracing::warn!(error = %e, "The engine refused a recording session; ending it.");
                        self.uas.terminate(now, o.rs);
                    }
                    Err(e) => return Err(e),
                }
            }
            Event::MetadataChanged {
                rs,
                metadata,
                raw,
                streams,
                unknown_ids,
                at,
            } => {
                if !unknown_ids.is_empty() {
                    tracing::info!(
                        unknown = unknown_ids.len(),
                        "partial metadata referenced unknown ids"
                    );
                }
                if let Some((h, _, t0)) = self.sessions.get(&rs).and_then(|s| s.opened.as_ref()) {
                    let participants = session::participants(Some(&metadata), &streams);
                    let (h, at) = (*h, session::at(*t0, at));
                    self.session_call(h, SessionCall::Participants { participants, at }, now)?;
                    let policy = &self.policy;
                    let update = self
                        .sessions
                        .get_mut(&rs)
                        .and_then(|s| s.content.as_mut())
                        .map(|c| c.metadata_changed(&raw, &metadata, at, policy))
                        .unwrap_or_default();
                    for a in update.attachments {
                        self.session_call(h, SessionCall::Attach(a), now)?;
                    }
                    if let Some(reason) = update.stop {
                        tracing::info!(reason, "recording stopped by the recording policy");
                        self.session_call(h, SessionCall::Pause(at), now)?;
                    }
                }
            }
            Event::Paused { rs, at } | Event::Resumed { rs, at } => {
                let pause = matches!(e, Event::Paused { .. });
                let stopped = self
                    .sessions
                    .get(&rs)
                    .and_then(|s| s.content.as_ref())
                    .is_some_and(|c| !c.recording());
                if stopped && !pause {
                    // A session the policy stopped stays paused whatever the SRC does.
                    return Ok(());
                }
                if let Some((h, _, t0)) = self.sessions.get(&rs).and_then(|s| s.opened.as_ref()) {
                    let (h, at) = (*h, session::at(*t0, at));
                    let call = if pause {
                        SessionCall::Pause(at)
                    } else {
                        SessionCall::Resume(at)
                    };
                    self.session_call(h, call, now)?;
                }
            }
            Event::StreamsChanged { rs, streams, at } => {
                // Known labels keep their ports (the core reuses the bindings); a stream
                // new in a re-INVITE got a port and becomes a new engine stream.
                let added = self.sessions.get_mut(&rs).and_then(|s| {
                    let (h, plan, t0) = s.opened.as_mut()?;
                    let specs = s.content.as_ref()?.added_streams(plan, &streams);
                    Some((*h, session::at(*t0, at), specs))
                });
                if let Some((h, at, specs)) = added {
                    if !specs.is_empty() {
                        tracing::info!(new = specs.len(), "a re-INVITE added streams");
                    }
                    for stream in specs {
                        self.session_call(h, SessionCall::AddStream { stream, at }, now)?;
                    }
                }
            }
            Event::Ended { rs, reason, at } => {
                if let Some(mut s) = self.sessions.remove(&rs) {
                    if let Some((h, _, t0)) = s.opened.take() {
                        let at = session::at(t0, at);
                        self.session_call(
                            h,
                            SessionCall::End(session::finish_reason(reason), at),
                            now,
                        )?;
                        self.counters.sessions_open.fetch_sub(1, Ordering::Relaxed);
                    }
                    self.release(&mut s);
                }
                tracing::info!(reason = ?reason, "recording session ended");
            }
            _ => {}
        }
        Ok(())
    }

    /// A session call whose refusal by the engine is logged, not fatal.
    fn session_call(
        &mut self,
        h: SessionHandle,
        call: SessionCall<'_>,
        now: Timestamp,
    ) -> Result<(), PipelineError> {
        match self.tap.session(h, call, now) {
            Err(PipelineError::Session(e)) => {
                tracing::debug!(error = %e, "session call refused");
                Ok(())
            }
            r => r,
        }
    }

    fn rtp(&mut self, local: u16, from: SocketAddr, at: Instant, bytes: &[u8]) -> Result<()> {
        self.counters.rtp_packets.fetch_add(1, Ordering::Relaxed);
        let target = self.ports.get(&local).and_then(|(rs, m)| {
            let (h, plan, _) = self.sessions.get(rs)?.opened.as_ref()?;
            Some((*h, (*plan.stream_index.get(*m)?)?))
        });
        let Some((h, stream)) = target else {
            // Before the session opened (cannot happen: media_ready opens it at once) or
            // on a stream the engine does not know.
            self.counters.rtp_unknown.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        };
        let datagram = Datagram {
            ts: self.stamp(at),
            src: from,
            dst: SocketAddr::new(self.media_ip, local),
            transport: vcontap_wire::Transport::Udp,
            vlan: None,
            payload: bytes,
        };
        let now = self.now();
        self.session_call(h, SessionCall::Media { stream, datagram }, now)?;
        Ok(())
    }

    fn input(&mut self, msg: Input) -> Result<()> {
        match msg {
            Input::Sip(peer, bytes) => {
                let now = self.now();
                match peer.transport {
                    Transport::Udp => self.uas.handle_datagram(now, peer, &bytes),
                    _ => self.uas.handle_stream(now, peer, &bytes),
                }
                self.drain()?;
            }
            Input::Closed(conn) => {
                if let Ok(mut c) = self.tcp.lock() {
                    c.remove(&conn);
                }
                self.uas.connection_closed(conn);
                self.drain()?;
            }
            Input::Rtp {
                local,
                from,
                at,
                bytes,
            } => self.rtp(local, from, at, &bytes)?,
        }
        Ok(())
    }

    fn timers(&mut self) -> Result<()> {
        let now = self.now();
        if self.uas.poll_timeout().is_some_and(|t| t <= now) {
            self.uas.handle_timeout(now);
            self.drain()?;
        }
        if now >= self.tap.poll_timeout() {
            self.tap.handle_timeout(now)?;
        }
        Ok(())
    }

    /// How long the loop may wait for input.
    fn wait(&self) -> Duration {
        let now = self.now().nanos();
        let next = self
            .uas
            .poll_timeout()
            .map_or(i64::MAX, |t| t.nanos())
            .min(self.tap.poll_timeout().nanos());
        let ns = u64::try_from(next.saturating_sub(now)).unwrap_or(0);
        Duration::from_nanos(ns).min(IDLE_WAIT)
    }
}

fn spawn_udp_reader(
    sock: UdpSocket,
    tx: SyncSender<Input>,
    counters: Arc<Counters>,
    acl: Arc<Vec<Net>>,
) -> Result<()> {
    std::thread::Builder::new()
        .name("siprec-udp".into())
        .spawn(move || {
            // 64 KB: metadata makes INVITEs of several KB, fragmented over UDP.
            let mut buf = vec![0u8; 65535];
            loop {
                match sock.recv_from(&mut buf) {
                    Ok((_, from)) if !allowed(&acl, from.ip()) => {
                        counters.acl_refused.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok((n, from)) => {
                        let peer = Peer {
                            transport: Transport::Udp,
                            addr: from,
                            conn: 0,
                        };
                        let bytes = buf.get(..n).unwrap_or(&[]).to_vec();
                        match tx.try_send(Input::Sip(peer, bytes)) {
                            Ok(()) => {}
                            Err(TrySendError::Full(_)) => {
                                counters.input_dropped.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(TrySendError::Disconnected(_)) => return,
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "SIP UDP receive failed");
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
            }
        })
        .context("SIP UDP thread")?;
    Ok(())
}

fn spawn_tcp_acceptor(
    listener: TcpListener,
    tx: SyncSender<Input>,
    conns: Arc<Mutex<HashMap<u64, TcpStream>>>,
    counters: Arc<Counters>,
    acl: Arc<Vec<Net>>,
) -> Result<()> {
    std::thread::Builder::new()
        .name("siprec-tcp".into())
        .spawn(move || {
            let mut next = 1u64;
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                if counters.tcp_connections.load(Ordering::Relaxed) >= MAX_TCP_CONNECTIONS {
                    tracing::warn!("too many SIP TCP connections; refusing one");
                    continue;
                }
                let Ok(addr) = stream.peer_addr() else {
                    continue;
                };
                if !allowed(&acl, addr.ip()) {
                    counters.acl_refused.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let Ok(writer) = stream.try_clone() else {
                    continue;
                };
                let _ = writer.set_write_timeout(Some(TCP_WRITE_TIMEOUT));
                let conn = next;
                next += 1;
                if let Ok(mut c) = conns.lock() {
                    c.insert(conn, writer);
                }
                counters.tcp_connections.fetch_add(1, Ordering::Relaxed);
                let (tx, c) = (tx.clone(), counters.clone());
                let spawned = std::thread::Builder::new()
                    .name(format!("siprec-tcp-{conn}"))
                    .spawn(move || {
                        let mut stream = stream;
                        let peer = Peer {
                            transport: Transport::Tcp,
                            addr,
                            conn,
                        };
                        let mut buf = vec![0u8; 16 * 1024];
                        while let Ok(n) = stream.read(&mut buf) {
                            if n == 0 {
                                break;
                            }
                            let bytes = buf.get(..n).unwrap_or(&[]).to_vec();
                            // Block: a stream cannot lose bytes; TCP pushes back on the SRC.
                            if tx.send(Input::Sip(peer, bytes)).is_err() {
                                break;
                            }
                        }
                        let _ = tx.send(Input::Closed(conn));
                        c.tcp_connections.fetch_sub(1, Ordering::Relaxed);
                    });
                if spawned.is_err() {
                    counters.tcp_connections.fetch_sub(1, Ordering::Relaxed);
                }
            }
        })
        .context("SIP TCP thread")?;
    Ok(())
}

/// Runs the recording server until SIGTERM/SIGINT.
pub fn run(a: SiprecArgs) -> Result<()> {
    if a.shards == 0 || a.shards > vcontap_pipeline::tap::MAX_SHARDS {
        bail!(
            "--shards must be between 1 and {}",
            vcontap_pipeline::tap::MAX_SHARDS
        );
    }
    let pool = PortPool::parse(&a.rtp_ports)?;
    let record_policy = a.policy.load()?;
    let acl = Arc::new(
        a.allow
            .iter()
            .map(|n| Net::parse(n))
            .collect::<Result<Vec<Net>>>()?,
    );
    let media_ip = match a.media_address {
        Some(ip) => ip,
        None if !a.listen.ip().is_unspecified() => a.listen.ip(),
        None => bail!(
            "--listen {} is a wildcard: give --media-address IP (the address SRCs send RTP to)",
            a.listen
        ),
    };
    let outputs = Outputs::start(Some(&a.out), &a.outputs, WhenFull::DropNewest)?;
    let rt = outputs.runtime_handle();
    let api = ApiState::new(outputs.delivery.metrics().clone());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    if let Some(addr) = a.listen_api {
        // Metrics and health only for now: the live subscribers API (hub, tokens, TLS) is
        // not wired into the SIPREC server yet.
        if !addr.ip().is_loopback() {
            bail!(
                "--listen-api {addr}: only a loopback address (the endpoint has no authentication)"
            );
        }
        let local = crate::api::serve(&rt, addr, api.clone(), None, None, stop_rx.clone())
            .with_context(|| format!("--listen-api {addr}"))?;
        tracing::info!(%local, "serving /metrics, /healthz, /readyz");
    }
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        rt.spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                tracing::error!("cannot install signal handlers");
                return;
            };
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: stopping"),
                _ = int.recv() => tracing::info!("SIGINT: stopping"),
            }
            stop.store(true, Ordering::SeqCst);
        });
    }

    // The Tap: as in `capture`, finished vCons go to the delivery core.
    let engine = EngineConfig {
        record: match a.record {
            RecordArg::None => RecordMode::None,
            RecordArg::Stereo => RecordMode::Stereo,
            RecordArg::Mono => RecordMode::Mono,
        },
        host: a.host.clone().unwrap_or_else(crate::replay::host_name),
        ..EngineConfig::default()
    };
    let mut cfg = TapConfig::live(engine);
    cfg.shards = a.shards;
    if a.record != RecordArg::None {
        cfg.media = match outputs.media_store(&a.outputs, &a.out.join("media-spill"))? {
            Some(m) => Some(m),
            None => Some(Arc::new(LocalFiles::new(
                &a.out.join("media"),
                a.media_base_url.as_deref(),
            )?)),
        };
    }
    let delivery = outputs.delivery.handle();
    let latency = api.clone();
    let tap = Tap::new(
        cfg,
        Box::new(move |e| {
            crate::api::observe_event(&latency.event_latency, e.at.nanos());
            delivery
                .submit(e)
                .map_err(|err| PipelineError::Handler(err.to_string()))
        }),
    )?;
    *api.tap
        .lock()
        .map_err(|_| anyhow::anyhow!("api state poisoned"))? = Some(tap.counters());

    // Sockets: bound now, so a port in use is a start-up error.
    let udp = UdpSocket::bind(a.listen).with_context(|| format!("--listen {} (UDP)", a.listen))?;
    let tcp =
        TcpListener::bind(a.listen).with_context(|| format!("--listen {} (TCP)", a.listen))?;
    let local = udp.local_addr()?;
    let (tx, rx): (SyncSender<Input>, Receiver<Input>) = sync_channel(INPUT_QUEUE);
    let counters = Arc::new(Counters::default());
    let conns = Arc::new(Mutex::new(HashMap::new()));
    spawn_udp_reader(udp.try_clone()?, tx.clone(), counters.clone(), acl.clone())?;
    spawn_tcp_acceptor(tcp, tx.clone(), conns.clone(), counters.clone(), acl)?;
    let keys = std::collections::hash_map::RandomState::new();
    let seed = keys.hash_one(std::process::id());
    let host = if local.ip().is_unspecified() {
        SocketAddr::new(media_ip, local.port())
    } else {
        local
    };
    let mut ucfg = Config::new(
        media_ip,
        format!("<sip:srs@{host}>"),
        host.to_string(),
        seed,
    );
    ucfg.max_sessions = a.max_sessions;
    // No SRTP decryption yet: refuse RTP/SAVP lines rather than record noise.
    ucfg.media.srtp_suites.clear();
    let clock = Clock::monotonic();
    let epoch = clock.now();
    let mut sh = Shell {
        uas: Uas::new(ucfg),
        policy: record_policy,
        tap,
        clock,
        started: Instant::now(),
        epoch,
        pool,
        bind_ip: a.listen.ip(),
        media_ip,
        sessions: HashMap::new(),
        ports: HashMap::new(),
        udp,
        tcp: conns,
        input: tx,
        rt: rt.clone(),
        counters: counters.clone(),
        keys,
    };
    {
        let c = counters.clone();
        if let Ok(mut extra) = api.extra.lock() {
            extra.push(Box::new(move |out: &mut String| {
                use std::fmt::Write as _;
                let _ = writeln!(out, "# TYPE vcontap_siprec_sessions_opened_total counter\nvcontap_siprec_sessions_opened_total {}", c.sessions_opened.load(Ordering::Relaxed));
                let _ = writeln!(out, "# TYPE vcontap_siprec_sessions_open gauge\nvcontap_siprec_sessions_open {}", c.sessions_open.load(Ordering::Relaxed));
                let _ = writeln!(out, "# TYPE vcontap_siprec_rtp_packets_total counter\nvcontap_siprec_rtp_packets_total {}", c.rtp_packets.load(Ordering::Relaxed));
                let _ = writeln!(out, "# TYPE vcontap_siprec_rtp_unknown_total counter\nvcontap_siprec_rtp_unknown_total {}", c.rtp_unknown.load(Ordering::Relaxed));
                let _ = writeln!(out, "# TYPE vcontap_siprec_port_bind_failures_total counter\nvcontap_siprec_port_bind_failures_total {}", c.bind_failures.load(Ordering::Relaxed));
                let _ = writeln!(out, "# TYPE vcontap_siprec_acl_refused_total counter\nvcontap_siprec_acl_refused_total {}", c.acl_refused.load(Ordering::Relaxed));
                let _ = writeln!(out, "# TYPE vcontap_siprec_input_dropped_total counter\nvcontap_siprec_input_dropped_total {}", c.input_dropped.load(Ordering::Relaxed));
            }));
        }
    }
    api.ready.store(true, Ordering::SeqCst);
    tracing::info!(sip = %local, media = %media_ip, "SIPREC recording server listening");
    eprintln!("vcontap siprec: listening on {local} (UDP, TCP)");

    let mut shutdown_at: Option<Instant> = None;
    loop {
        if stop.load(Ordering::Relaxed) && shutdown_at.is_none() {
            shutdown_at = Some(Instant::now());
            sh.uas.set_draining(true);
            let now = sh.now();
            let open: Vec<RsId> = sh.sessions.keys().copied().collect();
            for rs in open {
                sh.uas.terminate(now, rs);
            }
            sh.drain()?;
        }
        if let Some(t) = shutdown_at {
            // A moment for the SRCs' answers to our BYEs (and their retransmissions).
            let settled = sh.sessions.is_empty() && t.elapsed() >= SHUTDOWN_LINGER;
            if settled || t.elapsed() >= SHUTDOWN_GRACE {
                break;
            }
        }
        match rx.recv_timeout(sh.wait()) {
            Ok(msg) => {
                sh.input(msg)?;
                // A burst: whatever else is queued, without re-checking timers per item.
                for msg in rx.try_iter().take(256) {
                    sh.input(msg)?;
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                sh.tap.flush()?;
                sh.tap.publish_counters();
            }
            Err(RecvTimeoutError::Disconnected) => break,
        }
        sh.timers()?;
        api.beat();
    }
    api.ready.store(false, Ordering::SeqCst);
    let now = sh.now();
    let dropped = counters.input_dropped.load(Ordering::Relaxed);
    let Shell { tap, sessions, .. } = sh;
    drop(sessions);
    let totals = tap.finish_because(now, FinishReason::Shutdown)?;
    let spool_dir = outputs.spool_dir.clone();
    let report = outputs.finish();
    stop_tx.send_replace(true);
    eprintln!(
        "vcontap siprec stopped: {} sessions, {} RTP packets ({} dropped at the input queue), {} calls",
        counters.sessions_opened.load(Ordering::Relaxed),
        counters.rtp_packets.load(Ordering::Relaxed),
        dropped,
        totals.engine.calls
    );
    crate::outputs::print_report(&report, &spool_dir);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acl_networks_parse_and_match() {
        let acl: Vec<Net> = ["10.0.0.0/8", "192.0.2.7", "2001:db8::/32", "0.0.0.0/0"]
            .iter()
            .map(|s| Net::parse(s).unwrap())
            .collect();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(acl[0].contains(ip("10.200.1.1")));
        assert!(!acl[0].contains(ip("11.0.0.1")));
        assert!(acl[0].contains(ip("::ffff:10.1.2.3")), "v4-mapped peer");
        assert!(acl[1].contains(ip("192.0.2.7")));
        assert!(!acl[1].contains(ip("192.0.2.8")));
        assert!(acl[2].contains(ip("2001:db8:1::5")));
        assert!(!acl[2].contains(ip("2001:db9::5")));
        assert!(!acl[2].contains(ip("10.0.0.1")), "families never match");
        assert!(acl[3].contains(ip("203.0.113.9")), "/0 is everyone");
        assert!(allowed(&[], ip("203.0.113.9")));
        assert!(!allowed(&acl[..2], ip("203.0.113.9")));
        for bad in ["10.0.0.0/33", "2001:db8::/129", "nope", "10.0.0.0/x", ""] {
            assert!(Net::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rtp_port_ranges_give_even_pairs_inside_the_range() {
        let p = PortPool::parse("40001-40006").unwrap();
        assert_eq!(p.free, [40002, 40004]);
        let p = PortPool::parse("40000-40001").unwrap();
        assert_eq!(p.free, [40000]);
        assert!(PortPool::parse("40000-40000").is_err(), "no room for RTCP");
        assert!(PortPool::parse("65535-65535").is_err());
        assert!(PortPool::parse("40000").is_err());
        assert!(PortPool::parse("b-a").is_err());
    }
}
