//! The SIPREC recording server's shell (issue 9): `vcontap siprec`, and `[siprec]` of
//! `vcontap run`. It owns what the sans-IO core (`vcontap_siprec::uas::Uas`) must not: the
//! SIP sockets (UDP, TCP and TLS), the RTP/RTCP port pool, and maps the core's session
//! actions onto the Tap's session API (`Tap::open_session` / `Tap::session`), so recorded
//! sessions reach the same events, media store, sinks and live API as sniffed calls.
//!
//! # One daemon, one Tap
//!
//! The server is a [`LiveSource`] of the daemon loop in `live.rs`, beside the AF_PACKET
//! rings and the HEP listener: `vcontap siprec` is that daemon with this one input, and
//! `vcontap run` with a `[siprec]` table adds it to whatever capture/HEP inputs the file
//! configures. So there is ONE output side (the Tap, the events file, the live API hub,
//! sinks and spool, `/metrics`) whatever the inputs. The other design, a second loop thread
//! driving the same Tap, would need the Tap behind a lock (it is `&mut` and single-owner by
//! design) and a second copy of the output wiring; a source is a poll and a few counters.
//! The loop's clock is cloned into the shell, so RTP stamps and timers agree with the Tap.
//! SIGTERM: the loop calls [`LiveSource::begin_shutdown`] (the core stops accepting with
//! 503 and every session is ended with a BYE, vCon end reason `shutdown`) and keeps polling
//! until [`LiveSource::settled`] (BYEs answered, or [`SHUTDOWN_GRACE`]), then the Tap
//! finishes and the sinks drain as in `capture`.
//!
//! # Threads and queues
//!
//! The loop thread owns the UAS and the port pool; every socket reader hands what it read
//! to it through one bounded queue ([`INPUT_QUEUE`]), drained by [`LiveSource::poll`]:
//!
//! | reader | how | when the queue is full |
//! |---|---|---|
//! | SIP over UDP | a std thread, blocking `recv_from` (64 KB: fragmented INVITEs) | drop the datagram, counted (the SRC retransmits) |
//! | SIP over TCP | a std thread per connection (at most [`MAX_TCP_CONNECTIONS`]) | block: the connection's bytes are a stream, and TCP pushes back on the SRC |
//! | SIP over TLS | a tokio task per connection (rustls, [`tls`]) | wait (retry every ms): a stream, as TCP |
//! | RTP/RTCP | a tokio task per socket on the output runtime (hundreds of sockets) | drop the packet, counted (`loss` in the vCon's RTP report) |
//!
//! Std threads for plain SIP keep the blocking TCP writes (small responses, a write
//! timeout) out of the runtime; RTP sockets are many, so they are tasks, and TLS
//! connections are tasks because a rustls stream cannot be read and written from two
//! threads without a lock. Replies are written by the loop thread itself (UDP `send_to`,
//! TCP `write_all` with [`TCP_WRITE_TIMEOUT`]; TLS through a bounded per-connection queue
//! to the connection's writer task, which closes the connection when it is full). TLS
//! framing is TCP's: the core's `handle_stream` reassembles messages by Content-Length.
//!
//! # Media
//!
//! For each accepted stream the loop binds an even RTP port and the RTCP port above it from
//! `--rtp-ports` *before* it tells the core the media is ready (so the 200 OK never names a
//! port nobody listens on, and RTP before the ACK is kept). Packets are accepted from any
//! source address and port. `RTP/SAVP` streams (SDES) are decrypted with the offerer's key
//! before they reach the Tap ([`srtp`]: one context per stream, re-keyed by re-INVITE).
//!
//! # vCon content and recording policy
//!
//! `vcontap_siprec::content::SessionContent` decides (with the `--record-policy` /
//! `--do-not-record` policy, [`policy::PolicyArgs`]) whether a session is recorded and what
//! it attaches (INVITE, every metadata version, correlation ids); the loop forwards its
//! output: attachments at open and on metadata updates, streams a re-INVITE added
//! (`SessionCall::AddStream`), and a late do-not-record match as a pause that no resume
//! lifts. A session not recorded is answered like any other; the engine drops its packets.

pub mod policy;

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use vcontap_pipeline::{Clock, PipelineError, SessionCall, SessionHandle, Tap};
use vcontap_siprec::answer::{Bound, MAX_KEY_MATERIAL};
use vcontap_siprec::content::SessionContent;
use vcontap_siprec::session::{self, SessionPlan};
use vcontap_siprec::uas::{Config, Event, Peer, RsId, Transport, Uas};
use vcontap_wire::{Datagram, Timestamp};

use crate::live::LiveSource;
use crate::outputs::OutputArgs;
use crate::RecordArg;

mod srtp;
mod tls;

/// `--rtp-ports` / `rtp_ports` when not given.
pub const DEFAULT_RTP_PORTS: &str = "40000-49999";
/// `--max-sessions` / `max_sessions` when not given.
pub const DEFAULT_MAX_SESSIONS: usize = 1000;
/// Messages queued from the socket readers to the loop thread.
pub const INPUT_QUEUE: usize = 16 * 1024;
/// Most simultaneous SIP TCP connections (SRCs keep a few persistent ones).
pub const MAX_TCP_CONNECTIONS: usize = 256;
/// A TCP write that cannot complete in this time closes the connection.
const TCP_WRITE_TIMEOUT: Duration = Duration::from_secs(2);
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
    #[arg(long, value_name = "A-B", default_value = DEFAULT_RTP_PORTS)]
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
    #[arg(long, default_value_t = DEFAULT_MAX_SESSIONS)]
    pub max_sessions: usize,
    /// SIP over TLS on this address (with --cert and --key).
    #[arg(long, value_name = "ADDR", requires_all = ["cert", "key"])]
    pub tls_listen: Option<SocketAddr>,
    /// PEM certificate chain of the SIP TLS listener.
    #[arg(long, value_name = "FILE", requires = "tls_listen")]
    pub cert: Option<PathBuf>,
    /// PEM private key of --cert.
    #[arg(long, value_name = "FILE", requires = "tls_listen")]
    pub key: Option<PathBuf>,
    /// Serve the HTTP API here, as `capture --listen` does: /metrics, /healthz, /readyz,
    /// the live API (/v1/calls, /v1/events, /v1/vcons, audio), /media and the live page.
    /// Without an API token only a loopback address is accepted.
    #[arg(long, visible_alias = "listen-api", value_name = "ADDR")]
    pub api_listen: Option<SocketAddr>,
    #[command(flatten)]
    pub api: crate::live_api::ApiOptions,
    /// Append every event as a JSON line to this file (flushed per event).
    #[arg(long)]
    pub events: Option<PathBuf>,
    /// Cut recordings every N seconds (0: only at pause/resume and codec changes).
    #[arg(long, default_value_t = 0)]
    pub segment_seconds: u32,
    /// Refresh each live call's quality so far (an `updated` event) at most every N
    /// seconds; 0 turns it off. Default 10.
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u32).range(0..=3600))]
    pub quality_interval: Option<u32>,
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
            .with_context(|| format!("{s:?}: not an address or network"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match l {
            Some(l) => l
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|l| *l <= max)
                .with_context(|| format!("{s:?}: bad prefix length"))?,
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
            .with_context(|| format!("{range:?}: takes A-B, e.g. 40000-49999"))?;
        let (a, b): (u16, u16) = (
            a.trim()
                .parse()
                .with_context(|| format!("{range:?}: bad start port"))?,
            b.trim()
                .parse()
                .with_context(|| format!("{range:?}: bad end port"))?,
        );
        let first = a.saturating_add(a % 2);
        let free: VecDeque<u16> = (first..b).step_by(2).filter(|p| *p < b).collect();
        if free.is_empty() {
            bail!("{range:?} holds no even RTP port with its RTCP port above it");
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
    /// SRTP decrypt state per m-line (`None`: plain RTP).
    srtp: Vec<Option<srtp::Decrypt>>,
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
    srtp: srtp::SrtpCounters,
}

pub(crate) struct Shell {
    uas: Uas,
    /// Which sessions are recorded.
    policy: vcontap_siprec::policy::Policy,
    /// A clone of the live loop's clock, so packet stamps and timers agree with the Tap's.
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
    /// Writers of the SIP-over-TLS connections (see [`tls`]).
    tls: tls::Writers,
    input: SyncSender<Input>,
    rx: Receiver<Input>,
    /// An input [`LiveSource::wait`] received, handled first by the next poll.
    pending: Option<Input>,
    /// The SIP addresses, for the status line.
    local: SocketAddr,
    tls_local: Option<SocketAddr>,
    /// Since SIGTERM: when the BYEs went out.
    shutdown_at: Option<Instant>,
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
    fn drain(&mut self, tap: &mut Tap) -> Result<(), PipelineError> {
        loop {
            let mut any = false;
            while let Some(t) = self.uas.poll_transmit() {
                any = true;
                self.transmit(t);
            }
            while let Some(e) = self.uas.poll_event() {
                any = true;
                self.act(tap, e)?;
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
            Transport::Tls => self.tls.send(t.to.conn, t.bytes, t.close),
            Transport::Tcp => {
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

    fn act(&mut self, tap: &mut Tap, e: Event) -> Result<(), PipelineError> {
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
                    srtp: Vec::new(),
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
                match tap.open_session(plan.spec.clone(), now) {
                    Ok(h) => {
                        self.counters
                            .sessions_opened
                            .fetch_add(1, Ordering::Relaxed);
                        self.counters.sessions_open.fetch_add(1, Ordering::Relaxed);
                        if o.paused {
                            tap.session(h, SessionCall::Pause(at), now)?;
                        }
                        if let Some(s) = self.sessions.get_mut(&o.rs) {
                            s.opened = Some((h, plan, at));
                            srtp::update(&mut s.srtp, &o.streams);
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
                    self.session_call(tap, h, SessionCall::Participants { participants, at }, now)?;
                    let policy = &self.policy;
                    let update = self
                        .sessions
                        .get_mut(&rs)
                        .and_then(|s| s.content.as_mut())
                        .map(|c| c.metadata_changed(&raw, &metadata, at, policy))
                        .unwrap_or_default();
                    for a in update.attachments {
                        self.session_call(tap, h, SessionCall::Attach(a), now)?;
                    }
                    if let Some(reason) = update.stop {
                        tracing::info!(reason, "recording stopped by the recording policy");
                        self.session_call(tap, h, SessionCall::Pause(at), now)?;
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
                    self.session_call(tap, h, call, now)?;
                }
            }
            Event::StreamsChanged { rs, streams, at } => {
                // A re-INVITE may carry a new `a=crypto` key.
                if let Some(s) = self.sessions.get_mut(&rs) {
                    srtp::update(&mut s.srtp, &streams);
                }
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
                        self.session_call(tap, h, SessionCall::AddStream { stream, at }, now)?;
                    }
                }
            }
            Event::Ended { rs, reason, at } => {
                if let Some(mut s) = self.sessions.remove(&rs) {
                    if let Some((h, _, t0)) = s.opened.take() {
                        let at = session::at(t0, at);
                        self.session_call(
                            tap,
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
        tap: &mut Tap,
        h: SessionHandle,
        call: SessionCall<'_>,
        now: Timestamp,
    ) -> Result<(), PipelineError> {
        match tap.session(h, call, now) {
            Err(PipelineError::Session(e)) => {
                tracing::debug!(error = %e, "session call refused");
                Ok(())
            }
            r => r,
        }
    }

    fn rtp(
        &mut self,
        tap: &mut Tap,
        local: u16,
        from: SocketAddr,
        at: Instant,
        mut bytes: Vec<u8>,
    ) -> Result<(), PipelineError> {
        self.counters.rtp_packets.fetch_add(1, Ordering::Relaxed);
        let target = self.ports.get(&local).and_then(|(rs, m)| {
            let s = self.sessions.get_mut(rs)?;
            let (h, plan, _) = s.opened.as_ref()?;
            Some((
                *h,
                (*plan.stream_index.get(*m)?)?,
                s.srtp.get_mut(*m)?.as_mut(),
            ))
        });
        let Some((h, stream, decrypt)) = target else {
            // Before the session opened (cannot happen: media_ready opens it at once) or
            // on a stream the engine does not know.
            self.counters.rtp_unknown.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        };
        if !srtp::unprotect(decrypt, &mut bytes, &self.counters.srtp) {
            return Ok(());
        }
        let datagram = Datagram {
            ts: self.stamp(at),
            src: from,
            dst: SocketAddr::new(self.media_ip, local),
            transport: vcontap_wire::Transport::Udp,
            vlan: None,
            payload: &bytes,
        };
        let now = self.now();
        self.session_call(tap, h, SessionCall::Media { stream, datagram }, now)?;
        Ok(())
    }

    fn input(&mut self, tap: &mut Tap, msg: Input) -> Result<(), PipelineError> {
        match msg {
            Input::Sip(peer, bytes) => {
                let now = self.now();
                match peer.transport {
                    Transport::Udp => self.uas.handle_datagram(now, peer, &bytes),
                    _ => self.uas.handle_stream(now, peer, &bytes),
                }
                self.drain(tap)?;
            }
            Input::Closed(conn) => {
                if let Ok(mut c) = self.tcp.lock() {
                    c.remove(&conn);
                }
                self.tls.remove(conn);
                self.uas.connection_closed(conn);
                self.drain(tap)?;
            }
            Input::Rtp {
                local,
                from,
                at,
                bytes,
            } => self.rtp(tap, local, from, at, bytes)?,
        }
        Ok(())
    }

    /// The core's timers (retransmissions, timeouts); the live loop runs the Tap's.
    fn timers(&mut self, tap: &mut Tap) -> Result<(), PipelineError> {
        let now = self.now();
        if self.uas.poll_timeout().is_some_and(|t| t <= now) {
            self.uas.handle_timeout(now);
            self.drain(tap)?;
        }
        Ok(())
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
    next_conn: Arc<AtomicU64>,
) -> Result<()> {
    std::thread::Builder::new()
        .name("siprec-tcp".into())
        .spawn(move || {
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
                let conn = next_conn.fetch_add(1, Ordering::Relaxed);
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

/// The SIPREC server's settings (from `vcontap siprec` or `[siprec]` of `vcontap run`).
#[derive(Debug, Clone)]
pub struct SiprecSettings {
    /// SIP over UDP and TCP.
    pub listen: SocketAddr,
    /// SIP over TLS, with its certificate chain and key (PEM).
    pub tls_listen: Option<SocketAddr>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub rtp_ports: String,
    pub media_address: Option<IpAddr>,
    pub allow: Vec<String>,
    pub max_sessions: usize,
    /// Which sessions are recorded (`--record-policy`, `--do-not-record`, markers).
    pub policy: policy::PolicyArgs,
}

/// What is wrong with the settings, with the name of the field (`what` maps a field name
/// to how the user spelled it: a flag or a config key).
pub fn check(s: &SiprecSettings, what: impl Fn(&str) -> String) -> Result<()> {
    PortPool::parse(&s.rtp_ports).with_context(|| what("rtp_ports"))?;
    for n in &s.allow {
        Net::parse(n).with_context(|| what("allow"))?;
    }
    media_ip(s).with_context(|| what("media_address"))?;
    s.policy.load().with_context(|| what("do_not_record"))?;
    if s.max_sessions == 0 {
        bail!("{}: must be at least 1", what("max_sessions"));
    }
    match (&s.tls_listen, &s.tls_cert, &s.tls_key) {
        (None, None, None) | (Some(_), Some(_), Some(_)) => {}
        (Some(_), _, _) => bail!(
            "{}: SIP over TLS needs {} and {}",
            what("tls_listen"),
            what("tls_cert"),
            what("tls_key")
        ),
        (None, _, _) => bail!(
            "{} / {}: given without {}",
            what("tls_cert"),
            what("tls_key"),
            what("tls_listen")
        ),
    }
    Ok(())
}

/// Our address in SDP answers.
fn media_ip(s: &SiprecSettings) -> Result<IpAddr> {
    match s.media_address {
        Some(ip) if ip.is_unspecified() => {
            bail!("{ip} is a wildcard, not an address to send RTP to")
        }
        Some(ip) => Ok(ip),
        None if !s.listen.ip().is_unspecified() => Ok(s.listen.ip()),
        None => bail!(
            "the SIP address {} is a wildcard: give the address SRCs send RTP to",
            s.listen
        ),
    }
}

/// Binds the SIP sockets (a port in use is a start-up error) and starts their readers;
/// the RTP readers run as tasks on `rt`. `clock` must be the live loop's.
pub fn open(s: &SiprecSettings, rt: tokio::runtime::Handle, clock: Clock) -> Result<Shell> {
    check(s, |f| match f {
        "tls_cert" => "--cert".to_owned(),
        "tls_key" => "--key".to_owned(),
        f => format!("--{}", f.replace('_', "-")),
    })?;
    let pool = PortPool::parse(&s.rtp_ports)?;
    let record_policy = s.policy.load()?;
    let acl = Arc::new(
        s.allow
            .iter()
            .map(|n| Net::parse(n))
            .collect::<Result<Vec<Net>>>()?,
    );
    let media_ip = media_ip(s)?;
    let udp = UdpSocket::bind(s.listen).with_context(|| format!("SIP {} (UDP)", s.listen))?;
    let tcp = TcpListener::bind(s.listen).with_context(|| format!("SIP {} (TCP)", s.listen))?;
    let local = udp.local_addr()?;
    let (tx, rx): (SyncSender<Input>, Receiver<Input>) = sync_channel(INPUT_QUEUE);
    let counters = Arc::new(Counters::default());
    let conns = Arc::new(Mutex::new(HashMap::new()));
    // One id space for TCP and TLS connections: the core knows a connection by its id.
    let next_conn = Arc::new(AtomicU64::new(1));
    let tls_writers = tls::Writers::default();
    let tls_local = match (&s.tls_listen, &s.tls_cert, &s.tls_key) {
        (Some(addr), Some(cert), Some(key)) => Some(tls::listen(
            &rt,
            *addr,
            cert,
            key,
            tls::Shared {
                tx: tx.clone(),
                writers: tls_writers.clone(),
                counters: counters.clone(),
                acl: acl.clone(),
                next_conn: next_conn.clone(),
            },
        )?),
        _ => None,
    };
    spawn_udp_reader(udp.try_clone()?, tx.clone(), counters.clone(), acl.clone())?;
    spawn_tcp_acceptor(
        tcp,
        tx.clone(),
        conns.clone(),
        counters.clone(),
        acl,
        next_conn,
    )?;
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
    ucfg.max_sessions = s.max_sessions;
    let epoch = clock.now();
    tracing::info!(sip = %local, media = %media_ip, "SIPREC recording server listening");
    match tls_local {
        Some(t) => eprintln!("vcontap siprec: listening on {local} (UDP, TCP), {t} (TLS)"),
        None => eprintln!("vcontap siprec: listening on {local} (UDP, TCP)"),
    }
    Ok(Shell {
        uas: Uas::new(ucfg),
        policy: record_policy,
        clock,
        started: Instant::now(),
        epoch,
        pool,
        bind_ip: s.listen.ip(),
        media_ip,
        sessions: HashMap::new(),
        ports: HashMap::new(),
        udp,
        tcp: conns,
        tls: tls_writers,
        input: tx,
        rx,
        pending: None,
        local,
        tls_local,
        shutdown_at: None,
        rt,
        counters,
        keys,
    })
}

impl LiveSource for Shell {
    fn poll(
        &mut self,
        tap: &mut Tap,
        _clock: &mut Clock,
        max: usize,
    ) -> Result<usize, PipelineError> {
        let mut n = 0;
        while n < max {
            let msg = match self.pending.take() {
                Some(m) => m,
                None => match self.rx.try_recv() {
                    Ok(m) => m,
                    Err(_) => break,
                },
            };
            self.input(tap, msg)?;
            n += 1;
        }
        self.timers(tap)?;
        Ok(n)
    }

    fn wait(&mut self, timeout: Duration) {
        // Alone in the loop, sleep on the input queue (woken by the first SIP message or
        // RTP packet), but not past the SIP core's next timer (retransmissions, timeouts).
        if self.pending.is_some() {
            return;
        }
        let timeout = match self.uas.poll_timeout() {
            Some(t) => {
                let ns = t.nanos().saturating_sub(self.now().nanos());
                timeout.min(Duration::from_nanos(u64::try_from(ns).unwrap_or(0)))
            }
            None => timeout,
        };
        let start = Instant::now();
        match self.rx.recv_timeout(timeout) {
            Ok(m) => self.pending = Some(m),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                std::thread::sleep(timeout.saturating_sub(start.elapsed()));
            }
        }
    }

    fn begin_shutdown(&mut self, tap: &mut Tap, _clock: &mut Clock) -> Result<(), PipelineError> {
        // New sessions get 503; every open one is ended with a BYE (end reason `shutdown`).
        self.shutdown_at = Some(Instant::now());
        self.uas.set_draining(true);
        let now = self.now();
        let open: Vec<RsId> = self.sessions.keys().copied().collect();
        for rs in open {
            self.uas.terminate(now, rs);
        }
        self.drain(tap)
    }

    fn settled(&self) -> bool {
        // A moment for the SRCs' answers to our BYEs (and their retransmissions).
        self.shutdown_at.is_none_or(|t| {
            (self.sessions.is_empty() && t.elapsed() >= SHUTDOWN_LINGER)
                || t.elapsed() >= SHUTDOWN_GRACE
        })
    }

    fn metrics(&self) -> crate::api::Render {
        let c = self.counters.clone();
        Box::new(move |out: &mut String| {
            use std::fmt::Write as _;
            let _ = writeln!(out, "# TYPE vcontap_siprec_sessions_opened_total counter\nvcontap_siprec_sessions_opened_total {}", c.sessions_opened.load(Ordering::Relaxed));
            let _ = writeln!(
                out,
                "# TYPE vcontap_siprec_sessions_open gauge\nvcontap_siprec_sessions_open {}",
                c.sessions_open.load(Ordering::Relaxed)
            );
            let _ = writeln!(out, "# TYPE vcontap_siprec_rtp_packets_total counter\nvcontap_siprec_rtp_packets_total {}", c.rtp_packets.load(Ordering::Relaxed));
            let _ = writeln!(out, "# TYPE vcontap_siprec_rtp_unknown_total counter\nvcontap_siprec_rtp_unknown_total {}", c.rtp_unknown.load(Ordering::Relaxed));
            let _ = writeln!(out, "# TYPE vcontap_siprec_port_bind_failures_total counter\nvcontap_siprec_port_bind_failures_total {}", c.bind_failures.load(Ordering::Relaxed));
            let _ = writeln!(out, "# TYPE vcontap_siprec_acl_refused_total counter\nvcontap_siprec_acl_refused_total {}", c.acl_refused.load(Ordering::Relaxed));
            let _ = writeln!(out, "# TYPE vcontap_siprec_input_dropped_total counter\nvcontap_siprec_input_dropped_total {}", c.input_dropped.load(Ordering::Relaxed));
            c.srtp.write_metrics(out);
        })
    }

    fn status(&self) -> String {
        let tls = self
            .tls_local
            .map(|t| format!(", {t} TLS"))
            .unwrap_or_default();
        format!(
            "SIPREC {} UDP/TCP{tls}: {} sessions open",
            self.local,
            self.counters.sessions_open.load(Ordering::Relaxed)
        )
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        let c = &self.counters;
        eprintln!(
            "vcontap siprec stopped: {} sessions, {} RTP packets ({} dropped at the input queue)",
            c.sessions_opened.load(Ordering::Relaxed),
            c.rtp_packets.load(Ordering::Relaxed),
            c.input_dropped.load(Ordering::Relaxed),
        );
    }
}

/// `vcontap siprec`: the daemon of `capture`/`run` with the SIPREC server as its one input.
pub fn run(a: SiprecArgs) -> Result<()> {
    let api = crate::live_api::ApiSettings::from_options(a.api_listen, &a.api)?;
    if api.tokens.is_empty() {
        if let Some(addr) = api.listen.filter(|l| !l.ip().is_loopback()) {
            bail!(
                "--api-listen {addr}: not a loopback address and no API token is configured; \
                 give --api-token-file FILE, or listen on 127.0.0.1"
            );
        }
    }
    crate::live::run(crate::live::LiveSettings {
        interfaces: Vec::new(),
        filter: None,
        rings: 1,
        ring_mib: 64,
        block_kib: crate::live::DEFAULT_BLOCK_KIB,
        block_timeout_ms: crate::live::DEFAULT_BLOCK_TIMEOUT_MS,
        frame_ring: false,
        frame_size: crate::live::DEFAULT_FRAME_SIZE,
        snaplen: 65535,
        promiscuous: false,
        hep_listen: None,
        hep_auth_key: None,
        api,
        out: a.out,
        events: a.events,
        record: a.record,
        segment_seconds: a.segment_seconds,
        quality_interval_s: a.quality_interval,
        shards: a.shards,
        host: a.host,
        media_base_url: a.media_base_url,
        outputs: a.outputs,
        siprec: Some(SiprecSettings {
            listen: a.listen,
            tls_listen: a.tls_listen,
            tls_cert: a.cert,
            tls_key: a.key,
            rtp_ports: a.rtp_ports,
            media_address: a.media_address,
            allow: a.allow,
            max_sessions: a.max_sessions,
            policy: a.policy,
        }),
    })
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
