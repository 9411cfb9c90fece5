//! The recording server's SIP user-agent server: transactions, dialogs and the session
//! actions they produce, sans-IO.
//!
//! # Contract (quinn/str0m style)
//! Inputs: [`Uas::handle_datagram`] (one UDP payload), [`Uas::handle_stream`] (bytes of a
//! TCP/TLS connection, framed here), [`Uas::handle_timeout`], [`Uas::media_ready`] (the
//! shell's answer to [`Event::MediaRequest`]), [`Uas::terminate`], [`Uas::set_draining`].
//! Outputs: [`Uas::poll_transmit`] (SIP messages to send), [`Uas::poll_event`] (session
//! actions), [`Uas::poll_timeout`] (next deadline). After every input, drain
//! `poll_transmit` and `poll_event`, then wait until `poll_timeout` (or the next input).
//! The core never reads a clock, opens a socket or draws random numbers: time, ports, SRTP
//! keys and the tag seed are inputs.
//!
//! # What it answers (../shared/docs/siprec.md §1.5, §6)
//! - INVITE: `100 Trying` at once; `420` (+`Unsupported`) for unknown `Require` tags
//!   (`siprec`, `100rel`, `timer` are fine); `400` for a broken request or multipart;
//!   `415` (+`Accept`) for a required body part we cannot read; `488` when no stream is
//!   acceptable (codec, SRTP); `422` for a too short `Session-Expires`; `503` +
//!   `Retry-After` over `max_sessions` or when draining; `482` for a second initial INVITE
//!   with a known Call-ID. Otherwise [`Event::MediaRequest`]; once the shell has bound the
//!   ports, `200 OK` with a plain `application/sdp` answer, retransmitted over UDP with
//!   T1..T2 backoff until the ACK; no ACK within 64·T1 ends the session with a BYE.
//! - Request retransmissions get the same last response; ACKs of non-2xx finals are
//!   absorbed; a non-2xx final over UDP is retransmitted until its ACK (timer G/H).
//! - re-INVITE and UPDATE: full SDP answer every time (same labels and ports for known
//!   streams, new bindings only for new labels), metadata merged (complete replaces,
//!   partial patches), `a=inactive`/`c=0.0.0.0` pause and `sendonly` resume, session-timer
//!   refreshes answered with the unchanged answer (same `o=` version). An offer while
//!   another is pending: `491` (UPDATE) or `500` + `Retry-After` (re-INVITE).
//! - CANCEL → `200` and `487` to the INVITE; BYE → `200` and [`Event::Ended`]; OPTIONS →
//!   `200` with `Allow`/`Accept`/`Supported` (`503` when draining); an in-dialog request
//!   for an unknown dialog → `481`; other methods `405` with `Allow`.
//!
//! # Bounds
//! Sessions: [`Config::max_sessions`]. Server transactions: [`MAX_TRANSACTIONS`] (new
//! requests beyond it get a stateless `503`). Stream buffers per connection:
//! `MAX_HEADER_BYTES + MAX_BODY_BYTES` of `vcontap_sip`, a connection that is not SIP is
//! closed ([`Transmit::close`]). Outputs are queues drained by the shell after every
//! input; one input adds at most a few entries.
//!
//! Deadlines are found by scanning sessions and transactions (both bounded), which is
//! cheap next to the SIP parsing an input costs, and keeps every timer next to its state.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;

use vcontap_sip::{sdp, split_comma_list, Message, Method, ResponseBuilder};
use vcontap_wire::{Framing, Timestamp};

use crate::answer::{self, Bound, Format, MediaPolicy, OwnOrigin, SrtpOffer, StreamPlan};
use crate::body::{self, BodyError};
use crate::mapping::{map_streams, MapSource};
use crate::metadata::{self, Metadata};

type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Most live server transactions (RFC 3261 §17.2). A transaction lives 64·T1 (32 s)
/// after its final response; 16 Ki covers hundreds of requests per second.
pub const MAX_TRANSACTIONS: usize = 16 * 1024;
/// Smallest `Session-Expires` accepted (RFC 4028 §5 recommends 90 s as Min-SE).
pub const MIN_SESSION_EXPIRES: u32 = 90;
/// Option tags we accept in `Require`: a recorder never sends reliable provisional
/// responses or refreshes, so `100rel` and `timer` cost nothing to accept.
pub const SUPPORTED_TAGS: [&str; 3] = ["siprec", "100rel", "timer"];
/// Methods we answer (`Allow`).
pub const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE, INFO";

/// A session handle (one recording session = one SIP dialog).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RsId(pub u64);

/// SIP transport of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// UDP (retransmissions are ours to do).
    Udp,
    /// TCP.
    Tcp,
    /// TLS over TCP.
    Tls,
}

impl Transport {
    fn reliable(self) -> bool {
        !matches!(self, Transport::Udp)
    }

    fn via_name(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
    }
}

/// Where a message came from, and so where its answers go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Peer {
    /// Transport.
    pub transport: Transport,
    /// Remote address (the source of the datagram or connection).
    pub addr: SocketAddr,
    /// The shell's connection id for TCP/TLS (0 for UDP).
    pub conn: u64,
}

/// A message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Destination.
    pub to: Peer,
    /// Bytes of one SIP message (empty with `close`).
    pub bytes: Vec<u8>,
    /// Close the connection `to.conn` (it is not speaking SIP).
    pub close: bool,
}

/// Configuration (validated by the shell).
#[derive(Debug, Clone)]
pub struct Config {
    /// Most concurrent recording sessions; more get `503` + `Retry-After`.
    pub max_sessions: usize,
    /// `Retry-After` seconds in 503 and 500 answers.
    pub retry_after_secs: u32,
    /// Codecs and SRTP suites we accept.
    pub media: MediaPolicy,
    /// Our media address (SDP `c=`/`o=`).
    pub media_address: std::net::IpAddr,
    /// Our `Contact` value, e.g. `<sip:srs@192.0.2.10:5060>`.
    pub contact: String,
    /// Host (and port) for the `Via` of requests we send (BYE).
    pub via_host: String,
    /// RFC 3261 T1 in milliseconds (500).
    pub t1_ms: i64,
    /// RFC 3261 T2 in milliseconds (4000).
    pub t2_ms: i64,
    /// Seed for our tags, branches and SDP session ids: drawn randomly by the shell, so
    /// that two runs do not reuse dialog identifiers.
    pub seed: u64,
}

impl Config {
    /// Defaults for everything but addresses and the seed.
    pub fn new(
        media_address: std::net::IpAddr,
        contact: String,
        via_host: String,
        seed: u64,
    ) -> Config {
        Config {
            max_sessions: 1000,
            retry_after_secs: 5,
            media: MediaPolicy::default(),
            media_address,
            contact,
            via_host,
            t1_ms: 500,
            t2_ms: 4000,
            seed,
        }
    }
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The SRC sent BYE.
    Bye,
    /// The SRC cancelled the INVITE before we answered.
    Cancelled,
    /// No ACK for our 200 within 64·T1 (we sent BYE).
    AckTimeout,
    /// The session timer expired without a refresh (we sent BYE).
    SessionExpired,
    /// [`Uas::terminate`] (we sent BYE).
    Local,
    /// The shell could not bind media, or no stream was acceptable (`503`/`488`).
    Rejected,
}

/// One negotiated stream, as the engine needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamInfo {
    /// m-line index.
    pub index: usize,
    /// `a=label`.
    pub label: Option<String>,
    /// Our RTP port (`None`: refused, port 0 in the answer).
    pub port: Option<u16>,
    /// Payload formats accepted (codec, then telephone-event).
    pub formats: Vec<Format>,
    /// SRTP parameters (decrypt with `remote_key`).
    pub srtp: Option<SrtpOffer>,
    /// Indices into the metadata participants whose voice is in it.
    pub senders: Vec<usize>,
    /// How `senders` was decided.
    pub source: MapSource,
    /// The SRC paused this stream.
    pub paused: bool,
}

/// A new recording session, answered (its media is bound, the 200 OK is on its way).
#[derive(Debug, Clone)]
pub struct Opened {
    /// Handle.
    pub rs: RsId,
    /// The RS Call-ID (the engine's session key).
    pub call_id: String,
    /// True when the INVITE identified itself as SIPREC (Require/Supported `siprec`, a
    /// src Contact, or a metadata part); false for a plain INVITE recorded anyway.
    pub siprec: bool,
    /// The raw INVITE (compliance evidence, §6 item 17).
    pub invite: Vec<u8>,
    /// Metadata from the INVITE (none: late or never).
    pub metadata: Option<Metadata>,
    /// The raw metadata part, kept even when it did not parse (too large, not XML).
    pub metadata_raw: Option<Vec<u8>>,
    /// The streams.
    pub streams: Vec<StreamInfo>,
    /// Every accepted stream is paused.
    pub paused: bool,
    /// Who sent it.
    pub peer: Peer,
    /// When.
    pub at: Timestamp,
}

/// Session actions for the shell (and through it, the engine).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// Bind an even RTP port (and RTCP + 1) for every accepted plan whose `existing` is
    /// `None`, draw SRTP key material for each, then call [`Uas::media_ready`].
    MediaRequest {
        /// Session.
        rs: RsId,
        /// The decisions per m-line.
        plans: Vec<StreamPlan>,
        /// Bindings we already hold for these m-lines (same label): reuse them.
        existing: Vec<Option<Bound>>,
    },
    /// A session was answered.
    Opened(Box<Opened>),
    /// A re-INVITE/UPDATE changed the streams (ports, codecs, keys, new labels).
    StreamsChanged {
        /// Session.
        rs: RsId,
        /// All streams, as now negotiated.
        streams: Vec<StreamInfo>,
        /// When.
        at: Timestamp,
    },
    /// New metadata (merged state) arrived in a re-INVITE or UPDATE.
    MetadataChanged {
        /// Session.
        rs: RsId,
        /// The merged metadata.
        metadata: Box<Metadata>,
        /// The raw document of this update.
        raw: Vec<u8>,
        /// The streams with their senders recomputed from the merged metadata.
        streams: Vec<StreamInfo>,
        /// Ids a partial update referenced that we did not know (§6 item 13: logged).
        unknown_ids: Vec<String>,
        /// When.
        at: Timestamp,
    },
    /// The SRC paused recording (all streams inactive or on `c=0.0.0.0`).
    Paused {
        /// Session.
        rs: RsId,
        /// When.
        at: Timestamp,
    },
    /// The SRC resumed recording.
    Resumed {
        /// Session.
        rs: RsId,
        /// When.
        at: Timestamp,
    },
    /// The session is over: release its ports. Follows every `MediaRequest`.
    Ended {
        /// Session.
        rs: RsId,
        /// Why.
        reason: EndReason,
        /// When.
        at: Timestamp,
    },
}

/// Counters for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UasStats {
    /// Messages that did not parse (dropped).
    pub malformed: u64,
    /// Requests answered from a transaction (retransmissions).
    pub retransmissions: u64,
    /// Responses we retransmitted on a timer.
    pub timer_retransmits: u64,
    /// Responses by class: 1xx..6xx (index 0..=5).
    pub responses: [u64; 6],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// INVITE received, waiting for media binding.
    Early,
    /// 200 sent, waiting for the ACK.
    WaitAck,
    /// ACKed.
    Confirmed,
}

#[derive(Debug, Clone)]
struct PendingOffer {
    txn: String,
    method_invite: bool,
    plans: Vec<StreamPlan>,
    /// The metadata part: parsed (when it parses) and raw (always, §6 item 17).
    metadata: Option<(Option<Metadata>, Vec<u8>)>,
    /// The raw request (the initial INVITE is handed over in `Opened`).
    request: Vec<u8>,
    session_expires: Option<u32>,
    timer_supported: bool,
}

#[derive(Debug, Clone)]
struct Stream {
    plan: StreamPlan,
    bound: Option<Bound>,
}

#[derive(Debug, Clone)]
struct ClientBye {
    bytes: Vec<u8>,
    branch: String,
    next: Option<Timestamp>,
    interval: i64,
    give_up: Timestamp,
}

#[derive(Debug, Clone)]
struct Rs {
    call_id: String,
    local_tag: String,
    remote_tag: Option<String>,
    peer: Peer,
    remote_target: String,
    from_header: String,
    to_header: String,
    route_set: Vec<String>,
    phase: Phase,
    opened: bool,
    siprec: bool,
    remote_cseq: u32,
    local_cseq: u32,
    invite_cseq: u32,
    pending: Option<PendingOffer>,
    streams: Vec<Stream>,
    answer: String,
    answer_version: u64,
    session_id: u64,
    ok_response: Option<Vec<u8>>,
    ok_next: Option<Timestamp>,
    ok_interval: i64,
    ack_deadline: Option<Timestamp>,
    metadata: Option<Metadata>,
    paused: bool,
    session_expires: Option<u32>,
    /// RFC 4028 negotiated (the SRC supports `timer`): only then does it expire.
    timer: bool,
    expires_at: Option<Timestamp>,
    bye: Option<ClientBye>,
    ended: bool,
    /// The deadline queued in the timer heap for this session.
    armed: Option<Timestamp>,
}

/// What a timer-heap entry refers to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKey {
    Txn(String),
    Rs(RsId),
}

#[derive(Debug, Clone)]
struct ServerTxn {
    peer: Peer,
    last: Vec<u8>,
    final_code: Option<u16>,
    rs: Option<RsId>,
    /// Timer G (non-2xx final to INVITE over UDP).
    next: Option<Timestamp>,
    interval: i64,
    /// Timer H/J: drop the transaction.
    expire: Option<Timestamp>,
    acked: bool,
    /// The deadline queued in the timer heap for this transaction.
    armed: Option<Timestamp>,
}

/// The user-agent server. See the module documentation for the call contract.
#[derive(Debug)]
pub struct Uas {
    cfg: Config,
    rss: Map<RsId, Rs>,
    by_call_id: Map<String, RsId>,
    txns: Map<String, ServerTxn>,
    streams: Map<u64, Vec<u8>>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    timers: BinaryHeap<Reverse<(Timestamp, TimerKey)>>,
    live: usize,
    next_id: u64,
    draining: bool,
    now: Timestamp,
    stats: UasStats,
}

fn branch_key(msg: &Message<'_>, method: &str) -> Option<String> {
    let call_id = msg.call_id()?;
    let cseq = msg.cseq()?;
    let from_tag = msg.from().and_then(|f| f.tag).unwrap_or("");
    // RFC 3261 §17.2.3: the magic-cookie branch identifies the transaction; older
    // peers fall back to Call-ID, CSeq and From tag.
    Some(
        match msg.top_via_branch().filter(|b| b.starts_with("z9hG4bK")) {
            Some(b) => format!("{b}\u{1}{method}"),
            None => format!("{call_id}\u{1}{}\u{1}{from_tag}\u{1}{method}", cseq.seq),
        },
    )
}

fn option_tags<'a>(msg: &'a Message<'a>, header: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    msg.headers_named(header)
        .flat_map(split_comma_list)
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Whether an INVITE announces itself as SIPREC (§6 item 2: any one sign suffices).
fn is_siprec(msg: &Message<'_>, has_metadata: bool) -> bool {
    let tag = option_tags(msg, "Require")
        .chain(option_tags(msg, "Supported"))
        .any(|t| t.eq_ignore_ascii_case("siprec"));
    // `;+sip.src`, `;src`, or inside the URI (`;transport=tcp;+sip.src>`).
    let contact = msg.headers_named("Contact").any(|c| {
        c.split([';', '>']).skip(1).any(|p| {
            let p = p.trim();
            p.eq_ignore_ascii_case("+sip.src") || p.eq_ignore_ascii_case("src")
        })
    });
    tag || contact || has_metadata
}

fn session_expires(msg: &Message<'_>) -> Option<u32> {
    let v = msg.header("Session-Expires").or_else(|| msg.header("x"))?;
    v.split(';').next()?.trim().parse().ok()
}

impl Uas {
    /// A server with no sessions.
    pub fn new(cfg: Config) -> Uas {
        let rs = foldhash::fast::RandomState::default;
        Uas {
            cfg,
            rss: HashMap::with_hasher(rs()),
            by_call_id: HashMap::with_hasher(rs()),
            txns: HashMap::with_hasher(rs()),
            streams: HashMap::with_hasher(rs()),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            timers: BinaryHeap::new(),
            live: 0,
            next_id: 1,
            draining: false,
            now: Timestamp(0),
            stats: UasStats::default(),
        }
    }

    // ==== inputs ====

    /// Stops accepting new sessions (`503` to INVITE and OPTIONS); live sessions go on.
    pub fn set_draining(&mut self, draining: bool) {
        self.draining = draining;
    }

    /// Number of live sessions (answered or being answered).
    pub fn sessions(&self) -> usize {
        self.live
    }

    /// Counters.
    pub fn stats(&self) -> UasStats {
        self.stats
    }

    /// One UDP datagram (one SIP message).
    pub fn handle_datagram(&mut self, now: Timestamp, from: Peer, bytes: &[u8]) {
        self.tick(now);
        self.handle_message(from, bytes);
    }

    /// Bytes received on a TCP/TLS connection; complete messages are handled, the rest
    /// is buffered (bounded).
    pub fn handle_stream(&mut self, now: Timestamp, from: Peer, bytes: &[u8]) {
        self.tick(now);
        let mut buf = self.streams.remove(&from.conn).unwrap_or_default();
        buf.extend_from_slice(bytes);
        loop {
            match vcontap_sip::frame(&buf) {
                Framing::Message(n) => {
                    let msg: Vec<u8> = buf.drain(..n.min(buf.len())).collect();
                    self.handle_message(from, &msg);
                }
                Framing::Skip(n) => {
                    buf.drain(..n.min(buf.len()));
                }
                Framing::Incomplete | Framing::NeedBytes(_) | Framing::NeedLine => {
                    if !buf.is_empty() {
                        self.streams.insert(from.conn, buf);
                    }
                    return;
                }
                _ => {
                    self.stats.malformed += 1;
                    self.transmits.push_back(Transmit {
                        to: from,
                        bytes: Vec::new(),
                        close: true,
                    });
                    return;
                }
            }
        }
    }

    /// A TCP/TLS connection closed: forget its partial message.
    pub fn connection_closed(&mut self, conn: u64) {
        self.streams.remove(&conn);
    }

    /// The shell's answer to [`Event::MediaRequest`]: `bound[i]` for m-line `i` (`None`
    /// = could not bind or not accepted). Sends the answer. Returns false when the
    /// bindings were not used (the request was withdrawn by CANCEL or BYE meanwhile, or
    /// nothing could be bound): the shell releases what it bound that is not in use.
    #[must_use = "bindings that were not used must be released"]
    pub fn media_ready(&mut self, now: Timestamp, rs: RsId, bound: Vec<Option<Bound>>) -> bool {
        self.tick(now);
        let Some(r) = self.rss.get_mut(&rs) else {
            return false;
        };
        if r.ended {
            return false;
        }
        let Some(p) = r.pending.take() else {
            return false;
        };
        let any_bound = p
            .plans
            .iter()
            .zip(bound.iter().chain(std::iter::repeat(&None)))
            .any(|(pl, b)| pl.accepted() && b.is_some());
        if !any_bound {
            // Ports exhausted: a resource problem, retryable.
            let retry = self.cfg.retry_after_secs.to_string();
            self.final_for_txn(&p.txn, &p.request, 503, &[("Retry-After", &retry)], None);
            if !self.rss.get(&rs).is_some_and(|r| r.opened) {
                self.end(rs, EndReason::Rejected, false);
            }
            return false;
        }
        let Some(r) = self.rss.get_mut(&rs) else {
            return false;
        };
        let streams: Vec<Stream> = p
            .plans
            .into_iter()
            .enumerate()
            .map(|(i, plan)| Stream {
                bound: bound.get(i).copied().flatten().filter(|_| plan.accepted()),
                plan,
            })
            .collect();
        let plans: Vec<StreamPlan> = streams.iter().map(|s| s.plan.clone()).collect();
        let binds: Vec<Option<Bound>> = streams.iter().map(|s| s.bound).collect();
        // Same o= version while the answer does not change (session refreshes).
        let probe = answer::render(
            &plans,
            &binds,
            &OwnOrigin {
                session_id: r.session_id,
                version: r.answer_version,
                address: self.cfg.media_address,
            },
        );
        if probe != r.answer {
            if !r.answer.is_empty() {
                r.answer_version = r.answer_version.saturating_add(1);
            }
            r.answer = answer::render(
                &plans,
                &binds,
                &OwnOrigin {
                    session_id: r.session_id,
                    version: r.answer_version,
                    address: self.cfg.media_address,
                },
            );
        }
        let streams_changed = r.opened
            && (r.streams.len() != streams.len()
                || r.streams.iter().zip(&streams).any(|(a, b)| {
                    a.bound.map(|x| x.port) != b.bound.map(|x| x.port)
                        || a.plan.decision != b.plan.decision
                        || a.plan.srtp != b.plan.srtp
                }));
        r.streams = streams;
        if let Some(se) = p.session_expires {
            r.session_expires = Some(se);
        }
        let paused = all_paused(&r.streams);
        let was_paused = r.paused;
        r.paused = paused;
        let answer_body = r.answer.clone().into_bytes();
        let mut extra: Vec<(&str, String)> = vec![
            ("Contact", self.cfg.contact.clone()),
            ("Allow", ALLOW.to_owned()),
            ("Supported", "siprec, timer".to_owned()),
        ];
        if let Some(se) = r.session_expires {
            // The SRC refreshes (we never send requests but BYE); without its support
            // for timers nobody would, so the session then never expires.
            if p.timer_supported {
                r.timer = true;
                extra.push(("Require", "timer".to_owned()));
                extra.push(("Session-Expires", format!("{se};refresher=uac")));
            }
            if r.timer {
                r.expires_at = Some(now.add_millis(i64::from(se).saturating_mul(1000)));
            }
        }
        let metadata_event = p.metadata;
        let was_opened = r.opened;
        let is_invite = p.method_invite;
        let txn = p.txn;
        let request = p.request;
        let extra_ref: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let sent = self.final_for_txn(&txn, &request, 200, &extra_ref, Some(&answer_body));
        let cfg_t1 = self.cfg.t1_ms;
        let Some(r) = self.rss.get_mut(&rs) else {
            return false;
        };
        if is_invite {
            r.phase = Phase::WaitAck;
            r.ok_response = sent;
            r.ok_interval = cfg_t1;
            r.ok_next = (!r.peer.transport.reliable()).then(|| now.add_millis(cfg_t1));
            r.ack_deadline = Some(now.add_millis(cfg_t1.saturating_mul(64)));
        }
        self.arm(TimerKey::Rs(rs));
        let Some(r) = self.rss.get_mut(&rs) else {
            return false;
        };
        if !was_opened {
            r.opened = true;
            let (metadata, metadata_raw) = match metadata_event {
                Some((m, raw)) => (m, Some(raw)),
                None => (None, None),
            };
            r.metadata = metadata.clone();
            let streams = stream_infos(r);
            self.events.push_back(Event::Opened(Box::new(Opened {
                rs,
                call_id: r.call_id.clone(),
                siprec: r.siprec,
                invite: request,
                metadata,
                metadata_raw,
                streams,
                paused,
                peer: r.peer,
                at: now,
            })));
            return true;
        }
        if streams_changed {
            let streams = stream_infos(r);
            self.events.push_back(Event::StreamsChanged {
                rs,
                streams,
                at: now,
            });
        }
        // An update whose document does not parse changes nothing (its bytes are in the
        // request the shell may keep).
        if let Some((Some(m), raw)) = metadata_event {
            self.merge_metadata(rs, m, raw);
        }
        if paused != was_paused {
            self.events.push_back(if paused {
                Event::Paused { rs, at: now }
            } else {
                Event::Resumed { rs, at: now }
            });
        }
        true
    }

    /// Declines a session the shell was asked to bind media for (policy: ACL, recording
    /// rules): answers the pending INVITE with `code` (403, 480 or 486 let the SRC fail
    /// over; anything outside 400..=699 is sent as 403) and ends it.
    pub fn decline(&mut self, now: Timestamp, rs: RsId, code: u16) {
        self.tick(now);
        let code = if (400..700).contains(&code) {
            code
        } else {
            403
        };
        let Some(p) = self.rss.get_mut(&rs).and_then(|r| r.pending.take()) else {
            return;
        };
        let retry = self.cfg.retry_after_secs.to_string();
        let extra: &[(&str, &str)] = if code == 503 {
            &[("Retry-After", retry.as_str())]
        } else {
            &[]
        };
        self.final_for_txn(&p.txn, &p.request, code, extra, None);
        if !self.rss.get(&rs).is_some_and(|r| r.opened) {
            self.end(rs, EndReason::Rejected, false);
        }
    }

    /// Ends a session from our side (policy, disk full): BYE to the SRC.
    pub fn terminate(&mut self, now: Timestamp, rs: RsId) {
        self.tick(now);
        if self.rss.get(&rs).is_some_and(|r| !r.ended) {
            self.end(rs, EndReason::Local, true);
        }
    }

    /// Runs the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        self.tick(now);
        while let Some(Reverse((t, key))) = self.timers.peek() {
            if *t > now {
                break;
            }
            let key = key.clone();
            self.timers.pop();
            match key {
                TimerKey::Txn(k) => self.txn_timer(&k, now),
                TimerKey::Rs(id) => self.rs_timer(id, now),
            }
        }
    }

    /// Timer G retransmissions and H/J expiry of one transaction.
    fn txn_timer(&mut self, key: &str, now: Timestamp) {
        let t2 = self.cfg.t2_ms;
        let Some(t) = self.txns.get_mut(key) else {
            return;
        };
        t.armed = None;
        if let Some(n) = t.next.filter(|n| *n <= now) {
            if t.acked {
                t.next = None;
            } else {
                self.transmits.push_back(Transmit {
                    to: t.peer,
                    bytes: t.last.clone(),
                    close: false,
                });
                self.stats.timer_retransmits += 1;
                t.interval = t.interval.saturating_mul(2).min(t2);
                t.next = Some(n.add_millis(t.interval));
            }
        }
        if t.expire.is_some_and(|e| e <= now) {
            self.txns.remove(key);
            return;
        }
        self.arm(TimerKey::Txn(key.to_owned()));
    }

    /// 2xx retransmission, ACK/media deadline, session timer and our BYE of one session.
    fn rs_timer(&mut self, id: RsId, now: Timestamp) {
        let t2 = self.cfg.t2_ms;
        let mut end_with = None;
        let mut drop_rs = false;
        let mut media_late = None;
        let Some(r) = self.rss.get_mut(&id) else {
            return;
        };
        r.armed = None;
        if let (Some(n), Some(ok)) = (r.ok_next.filter(|n| *n <= now), &r.ok_response) {
            self.transmits.push_back(Transmit {
                to: r.peer,
                bytes: ok.clone(),
                close: false,
            });
            self.stats.timer_retransmits += 1;
            r.ok_interval = r.ok_interval.saturating_mul(2).min(t2);
            r.ok_next = Some(n.add_millis(r.ok_interval));
        }
        let due = !r.ended && r.ack_deadline.is_some_and(|d| d <= now);
        if due && r.phase == Phase::WaitAck {
            end_with = Some(EndReason::AckTimeout);
        }
        if due && r.phase == Phase::Early {
            media_late = r.pending.take();
        }
        if !r.ended && r.expires_at.is_some_and(|d| d <= now) {
            end_with = Some(EndReason::SessionExpired);
        }
        if let Some(b) = &mut r.bye {
            if let Some(n) = b.next.filter(|n| *n <= now) {
                self.transmits.push_back(Transmit {
                    to: r.peer,
                    bytes: b.bytes.clone(),
                    close: false,
                });
                b.interval = b.interval.saturating_mul(2).min(t2);
                b.next = Some(n.add_millis(b.interval));
            }
            if b.give_up <= now {
                drop_rs = true;
            }
        }
        if r.ended && r.bye.is_none() {
            drop_rs = true;
        }
        if let Some(p) = media_late {
            // The shell never bound media: a resource problem, retryable.
            let retry = self.cfg.retry_after_secs.to_string();
            self.final_for_txn(&p.txn, &p.request, 503, &[("Retry-After", &retry)], None);
            self.end(id, EndReason::Rejected, false);
        } else if let Some(reason) = end_with {
            self.end(id, reason, true);
        } else if drop_rs {
            self.forget(id);
            return;
        }
        self.arm(TimerKey::Rs(id));
    }

    /// Schedules the earliest deadline of a transaction or session. At most one live
    /// heap entry per item: a later deadline than the one scheduled is found when the
    /// earlier entry fires (then re-armed), so refreshes never grow the heap.
    fn arm(&mut self, key: TimerKey) {
        let now = self.now;
        let (deadline, armed) = match &key {
            TimerKey::Txn(k) => match self.txns.get_mut(k) {
                Some(t) => ([t.next, t.expire].into_iter().flatten().min(), &mut t.armed),
                None => return,
            },
            TimerKey::Rs(id) => match self.rss.get_mut(id) {
                Some(r) => {
                    let live = !r.ended;
                    let d = [
                        r.ok_next,
                        r.ack_deadline
                            .filter(|_| live && r.phase != Phase::Confirmed),
                        r.expires_at.filter(|_| live),
                        r.bye.as_ref().and_then(|b| b.next),
                        r.bye.as_ref().map(|b| b.give_up),
                        // Ended without a BYE in flight: dropped at the next tick.
                        (r.ended && r.bye.is_none()).then_some(now),
                    ]
                    .into_iter()
                    .flatten()
                    .min();
                    (d, &mut r.armed)
                }
                None => return,
            },
        };
        let Some(d) = deadline else {
            return;
        };
        if armed.is_some_and(|a| a <= d) {
            return;
        }
        *armed = Some(d);
        self.timers.push(Reverse((d, key)));
    }

    // ==== outputs ====

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next session action.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The earliest deadline at which [`Uas::handle_timeout`] has work (it may find
    /// nothing due when a deadline moved later; that costs one heap pop).
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.timers.peek().map(|Reverse((t, _))| *t)
    }

    // ==== internals ====

    fn tick(&mut self, now: Timestamp) {
        if now > self.now {
            self.now = now;
        }
    }

    fn respond(
        &mut self,
        to: Peer,
        msg: &Message<'_>,
        code: u16,
        tag: Option<&str>,
        extra: &[(&str, &str)],
        body: Option<(&str, &[u8])>,
    ) -> Vec<u8> {
        let mut b = ResponseBuilder::new(msg, code, tag).header("Server", "vcontap");
        for (k, v) in extra {
            b = b.header(k, v);
        }
        let bytes = match body {
            Some((ct, body)) => b.body(ct, body),
            None => b.finish(),
        };
        if let Some(c) = self
            .stats
            .responses
            .get_mut(usize::from(code / 100).saturating_sub(1))
        {
            *c += 1;
        }
        self.transmits.push_back(Transmit {
            to,
            bytes: bytes.clone(),
            close: false,
        });
        bytes
    }

    fn handle_message(&mut self, from: Peer, bytes: &[u8]) {
        let Ok(msg) = Message::parse(bytes) else {
            self.stats.malformed += 1;
            return;
        };
        if !msg.is_request() {
            self.handle_response(&msg);
            return;
        }
        let Some(method) = msg.method() else {
            return;
        };
        // Without Via we cannot answer at all; without the rest the request is broken.
        if msg.header("Via").is_none() {
            self.stats.malformed += 1;
            return;
        }
        // The CSeq method is not compared with the request line: SRC traces carry
        // `CSeq: n INVITE` on ACK and BYE, and the request line is what we act on.
        if msg.call_id().is_none()
            || msg.from().is_none()
            || msg.to().is_none()
            || msg.cseq().is_none()
        {
            if method != Method::Ack {
                self.respond(from, &msg, 400, None, &[], None);
            }
            return;
        }
        let key = branch_key(
            &msg,
            if method == Method::Ack {
                "INVITE"
            } else {
                method.as_str()
            },
        );
        // Retransmission, or the ACK of a non-2xx final.
        if let Some(key) = &key {
            if let Some(t) = self.txns.get_mut(key) {
                if method == Method::Ack {
                    // The ACK of a non-2xx final ends its retransmissions. An ACK of a
                    // 2xx that reuses the INVITE branch (RFC 2543 peers) confirms the
                    // dialog below.
                    if t.final_code.is_some_and(|c| c >= 300) {
                        t.acked = true;
                        t.next = None;
                        return;
                    }
                } else {
                    self.stats.retransmissions += 1;
                    // An UPDATE waiting for media has no response yet: nothing to resend.
                    if !t.last.is_empty() {
                        let (again, peer) = (t.last.clone(), t.peer);
                        self.transmits.push_back(Transmit {
                            to: peer,
                            bytes: again,
                            close: false,
                        });
                    }
                    return;
                }
            }
        }
        let Some(key) = key else {
            return;
        };
        match method {
            Method::Ack => self.handle_ack(&msg),
            Method::Cancel => self.handle_cancel(from, &msg),
            Method::Options => {
                self.handle_options(from, &msg, &key);
            }
            Method::Invite if msg.to().and_then(|t| t.tag).is_none() => {
                self.handle_initial_invite(from, &msg, key)
            }
            Method::Invite | Method::Update => self.handle_offer_in_dialog(from, &msg, key, method),
            Method::Bye => self.handle_bye(from, &msg, key),
            Method::Info => {
                if self.dialog_of(&msg).is_some() {
                    self.answer_nontxn(from, &msg, key, 200, &[]);
                } else {
                    self.answer_nontxn(from, &msg, key, 481, &[]);
                }
            }
            Method::Prack => self.answer_nontxn(from, &msg, key, 481, &[]),
            _ => self.answer_nontxn(from, &msg, key, 405, &[("Allow", ALLOW)]),
        }
    }

    /// Answers a non-INVITE request with a final response and keeps the transaction for
    /// retransmissions.
    fn answer_nontxn(
        &mut self,
        from: Peer,
        msg: &Message<'_>,
        key: String,
        code: u16,
        extra: &[(&str, &str)],
    ) {
        let tag = self
            .dialog_of(msg)
            .and_then(|id| self.rss.get(&id))
            .map(|r| r.local_tag.clone());
        let bytes = self.respond(from, msg, code, tag.as_deref(), extra, None);
        self.store_txn(key, from, false, bytes, Some(code), None);
    }

    fn store_txn(
        &mut self,
        key: String,
        peer: Peer,
        invite: bool,
        last: Vec<u8>,
        final_code: Option<u16>,
        rs: Option<RsId>,
    ) {
        if self.txns.len() >= MAX_TRANSACTIONS && !self.txns.contains_key(&key) {
            return;
        }
        let expire = final_code.map(|_| self.now.add_millis(self.cfg.t1_ms.saturating_mul(64)));
        let t1 = self.cfg.t1_ms;
        let g = match final_code {
            Some(c) if invite && c >= 300 && !peer.transport.reliable() => {
                Some(self.now.add_millis(t1))
            }
            _ => None,
        };
        self.txns.insert(
            key.clone(),
            ServerTxn {
                peer,
                last,
                final_code,
                rs,
                next: g,
                interval: t1,
                expire,
                acked: false,
                armed: None,
            },
        );
        self.arm(TimerKey::Txn(key));
    }

    /// Sends the final response of a stored INVITE/UPDATE transaction (`req` is its
    /// request); returns the bytes.
    fn final_for_txn(
        &mut self,
        key: &str,
        req: &[u8],
        code: u16,
        extra: &[(&str, &str)],
        sdp_body: Option<&[u8]>,
    ) -> Option<Vec<u8>> {
        let t = self.txns.get(key)?;
        let peer = t.peer;
        let rs = t.rs;
        let msg = Message::parse(req).ok()?;
        let tag = rs
            .and_then(|id| self.rss.get(&id))
            .map(|r| r.local_tag.clone());
        let bytes = self.respond(
            peer,
            &msg,
            code,
            tag.as_deref(),
            extra,
            sdp_body.map(|b| ("application/sdp", b)),
        );
        let invite = msg.method() == Some(Method::Invite);
        // A 2xx to INVITE is retransmitted by the dialog (until the ACK), not by the
        // transaction; the transaction still answers request retransmissions.
        self.store_txn(key.to_owned(), peer, invite, bytes.clone(), Some(code), rs);
        if invite && code < 300 {
            if let Some(t) = self.txns.get_mut(key) {
                t.next = None;
            }
        }
        Some(bytes)
    }

    fn handle_response(&mut self, msg: &Message<'_>) {
        // Only our BYEs get responses: any final one completes them.
        let Some(code) = msg.status() else {
            return;
        };
        if code < 200 {
            return;
        }
        let Some(branch) = msg.top_via_branch() else {
            return;
        };
        let Some(id) = msg.call_id().and_then(|c| self.by_call_id.get(c)).copied() else {
            return;
        };
        if let Some(r) = self.rss.get_mut(&id) {
            if r.bye.as_ref().is_some_and(|b| b.branch == branch) {
                r.bye = None;
            }
        }
    }

    /// The session an in-dialog request belongs to: Call-ID and our To tag must match.
    fn dialog_of(&self, msg: &Message<'_>) -> Option<RsId> {
        let id = *self.by_call_id.get(msg.call_id()?)?;
        let r = self.rss.get(&id)?;
        let from_ok = match (&r.remote_tag, msg.from().and_then(|f| f.tag)) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        };
        // A missing To tag is tolerated when Call-ID and From tag match (a BYE in the
        // BroadWorks traces): one Call-ID is one recording session here.
        let to_ok = match msg.to()?.tag {
            Some(t) => t == r.local_tag,
            None => r.remote_tag.is_some() && from_ok,
        };
        (to_ok && from_ok && !r.ended).then_some(id)
    }

    fn handle_ack(&mut self, msg: &Message<'_>) {
        let Some(id) = self.dialog_of(msg) else {
            return; // An ACK is never answered.
        };
        // Lenient on the CSeq: only one 2xx can be outstanding per dialog (we refuse
        // overlapping re-INVITEs), and SRCs have been seen sending ACKs with a CSeq of
        // their own (BroadWorks in the MiaRec traces). Holding the 200 for that would
        // end in a BYE after 32 s.
        if let Some(r) = self.rss.get_mut(&id) {
            if r.phase == Phase::WaitAck {
                r.phase = Phase::Confirmed;
                r.ok_next = None;
                r.ok_response = None;
                r.ack_deadline = None;
            }
        }
    }

    fn handle_cancel(&mut self, from: Peer, msg: &Message<'_>) {
        let Some(invite_key) = branch_key(msg, "INVITE") else {
            return;
        };
        let own_key = branch_key(msg, "CANCEL").unwrap_or_default();
        let Some(t) = self.txns.get(&invite_key) else {
            self.answer_nontxn(from, msg, own_key, 481, &[]);
            return;
        };
        let (rs, done) = (t.rs, t.final_code.is_some());
        let tag = rs
            .and_then(|id| self.rss.get(&id))
            .map(|r| r.local_tag.clone());
        let ok = self.respond(from, msg, 200, tag.as_deref(), &[], None);
        self.store_txn(own_key, from, false, ok, Some(200), None);
        if done {
            return;
        }
        // 487 to the INVITE, rebuilt from the request kept with the pending offer.
        let Some(id) = rs else {
            return;
        };
        let (pending, opened) = match self.rss.get_mut(&id) {
            Some(r) => (r.pending.take(), r.opened),
            None => return,
        };
        if let Some(p) = pending {
            self.final_for_txn(&invite_key, &p.request, 487, &[], None);
        }
        // A cancelled re-INVITE leaves the session as it was (RFC 3261 §9.2).
        if !opened {
            self.end(id, EndReason::Cancelled, false);
        }
    }

    fn handle_options(&mut self, from: Peer, msg: &Message<'_>, key: &str) {
        let retry = self.cfg.retry_after_secs.to_string();
        let code = if self.draining { 503 } else { 200 };
        let mut extra = vec![
            ("Allow", ALLOW),
            ("Accept", body::ACCEPT),
            ("Supported", "siprec, timer"),
        ];
        if self.draining {
            extra.push(("Retry-After", retry.as_str()));
        }
        let tag = format!("{:x}o", self.cfg.seed);
        let bytes = self.respond(from, msg, code, Some(&tag), &extra, None);
        self.store_txn(key.to_owned(), from, false, bytes, Some(code), None);
    }

    /// Rejects an INVITE statelessly-but-remembered (retransmissions get the same answer,
    /// the ACK is absorbed by the transaction).
    fn reject_invite(
        &mut self,
        from: Peer,
        msg: &Message<'_>,
        key: String,
        code: u16,
        extra: &[(&str, &str)],
    ) {
        let tag = format!("{:x}r", self.cfg.seed);
        let bytes = self.respond(from, msg, code, Some(&tag), extra, None);
        self.store_txn(key, from, true, bytes, Some(code), None);
    }

    fn handle_initial_invite(&mut self, from: Peer, msg: &Message<'_>, key: String) {
        let retry = self.cfg.retry_after_secs.to_string();
        let unsupported: Vec<&str> = option_tags(msg, "Require")
            .filter(|t| !SUPPORTED_TAGS.iter().any(|s| t.eq_ignore_ascii_case(s)))
            .collect();
        if !unsupported.is_empty() {
            let list = unsupported.join(", ");
            self.reject_invite(from, msg, key, 420, &[("Unsupported", &list)]);
            return;
        }
        if self.draining
            || self.sessions() >= self.cfg.max_sessions
            || self.txns.len() >= MAX_TRANSACTIONS
        {
            self.reject_invite(from, msg, key, 503, &[("Retry-After", &retry)]);
            return;
        }
        let Some(call_id) = msg.call_id() else {
            return;
        };
        if self.by_call_id.contains_key(call_id) {
            // A second initial INVITE for a live Call-ID (merged/forked request).
            self.reject_invite(from, msg, key, 482, &[]);
            return;
        }
        let parts = match body::split(
            msg.header("Content-Type"),
            msg.header("Content-Disposition"),
            msg.body(),
        ) {
            Ok(p) => p,
            Err(BodyError::BrokenMultipart) => {
                self.reject_invite(from, msg, key, 400, &[]);
                return;
            }
            Err(BodyError::UnsupportedRequired(_)) => {
                self.reject_invite(from, msg, key, 415, &[("Accept", body::ACCEPT)]);
                return;
            }
        };
        let Some(offer) = parts.sdp.and_then(|s| sdp::parse(s).ok()) else {
            // No (usable) offer: SRS-initiated/delayed-offer recording is not supported.
            self.reject_invite(from, msg, key, 488, &[("Accept", body::ACCEPT)]);
            return;
        };
        let se = session_expires(msg);
        if se.is_some_and(|s| s < MIN_SESSION_EXPIRES) {
            let min = MIN_SESSION_EXPIRES.to_string();
            self.reject_invite(from, msg, key, 422, &[("Min-SE", &min)]);
            return;
        }
        let plans = answer::plan(&offer, &self.cfg.media);
        if !plans.iter().any(StreamPlan::accepted) {
            self.reject_invite(from, msg, key, 488, &[]);
            return;
        }
        // Never reject for metadata (§6 item 7): a broken document is just not used.
        let md = parts
            .metadata
            .map(|raw| (metadata::parse(raw).ok(), raw.to_vec()));
        let siprec = is_siprec(msg, parts.metadata.is_some());
        let timer_supported = option_tags(msg, "Supported")
            .chain(option_tags(msg, "Require"))
            .any(|t| t.eq_ignore_ascii_case("timer"));

        let id = RsId(self.next_id);
        self.next_id = self.next_id.saturating_add(1);
        let seed = self.cfg.seed;
        let local_tag = format!("{seed:x}-{:x}", id.0);
        let remote_target = msg
            .header("Contact")
            .and_then(vcontap_sip::parse_name_addr)
            .map(|c| c.uri.to_owned())
            .or_else(|| msg.from().map(|f| f.uri.to_owned()))
            .unwrap_or_default();
        let mut to_header = msg.header("To").unwrap_or("").to_owned();
        to_header.push_str(";tag=");
        to_header.push_str(&local_tag);
        let rs = Rs {
            call_id: call_id.to_owned(),
            local_tag,
            remote_tag: msg.from().and_then(|f| f.tag).map(str::to_owned),
            peer: from,
            remote_target,
            from_header: msg.header("From").unwrap_or("").to_owned(),
            to_header,
            route_set: msg
                .headers_named("Record-Route")
                .map(str::to_owned)
                .collect(),
            phase: Phase::Early,
            opened: false,
            siprec,
            remote_cseq: msg.cseq().map(|c| c.seq).unwrap_or(0),
            local_cseq: 0,
            invite_cseq: msg.cseq().map(|c| c.seq).unwrap_or(0),
            pending: None,
            streams: Vec::new(),
            answer: String::new(),
            answer_version: 1,
            session_id: seed ^ id.0.rotate_left(32),
            ok_response: None,
            ok_next: None,
            ok_interval: self.cfg.t1_ms,
            // While Early: the deadline for the shell's `media_ready`.
            ack_deadline: Some(self.now.add_millis(self.cfg.t1_ms.saturating_mul(64))),
            metadata: None,
            paused: false,
            session_expires: None,
            timer: false,
            expires_at: None,
            bye: None,
            ended: false,
            armed: None,
        };
        let trying = self.respond(from, msg, 100, None, &[], None);
        self.store_txn(key.clone(), from, true, trying, None, Some(id));
        self.by_call_id.insert(call_id.to_owned(), id);
        let pending = PendingOffer {
            txn: key,
            method_invite: true,
            plans: plans.clone(),
            metadata: md,
            request: msg.raw().to_vec(),
            session_expires: se,
            timer_supported,
        };
        let mut rs = rs;
        rs.pending = Some(pending);
        self.rss.insert(id, rs);
        self.live = self.live.saturating_add(1);
        self.arm(TimerKey::Rs(id));
        self.events.push_back(Event::MediaRequest {
            rs: id,
            existing: vec![None; plans.len()],
            plans,
        });
    }

    fn handle_offer_in_dialog(
        &mut self,
        from: Peer,
        msg: &Message<'_>,
        key: String,
        method: Method<'_>,
    ) {
        let Some(id) = self.dialog_of(msg) else {
            if method == Method::Invite {
                self.reject_invite(from, msg, key, 481, &[]);
            } else {
                self.answer_nontxn(from, msg, key, 481, &[]);
            }
            return;
        };
        let invite = method == Method::Invite;
        let retry = self.cfg.retry_after_secs.to_string();
        let (busy, last_cseq) = match self.rss.get(&id) {
            Some(r) => (
                r.pending.is_some() || (invite && r.phase == Phase::WaitAck),
                r.remote_cseq,
            ),
            None => return,
        };
        let cseq = msg.cseq().map(|c| c.seq).unwrap_or(0);
        let tag = self.rss.get(&id).map(|r| r.local_tag.clone());
        let reject = |uas: &mut Uas, code: u16, extra: &[(&str, &str)]| {
            let bytes = uas.respond(from, msg, code, tag.as_deref(), extra, None);
            uas.store_txn(key.clone(), from, invite, bytes, Some(code), Some(id));
        };
        if cseq <= last_cseq {
            reject(self, 500, &[("Retry-After", &retry)]);
            return;
        }
        if let Some(r) = self.rss.get_mut(&id) {
            r.remote_cseq = cseq;
        }
        if busy {
            if invite {
                reject(self, 500, &[("Retry-After", &retry)]);
            } else {
                reject(self, 491, &[]);
            }
            return;
        }
        let parts = match body::split(
            msg.header("Content-Type"),
            msg.header("Content-Disposition"),
            msg.body(),
        ) {
            Ok(p) => p,
            Err(BodyError::BrokenMultipart) => return reject(self, 400, &[]),
            Err(BodyError::UnsupportedRequired(_)) => {
                return reject(self, 415, &[("Accept", body::ACCEPT)])
            }
        };
        let se = session_expires(msg);
        if se.is_some_and(|s| s < MIN_SESSION_EXPIRES) {
            let min = MIN_SESSION_EXPIRES.to_string();
            return reject(self, 422, &[("Min-SE", &min)]);
        }
        let md = parts
            .metadata
            .map(|raw| (metadata::parse(raw).ok(), raw.to_vec()));
        let timer_supported = option_tags(msg, "Supported")
            .chain(option_tags(msg, "Require"))
            .any(|t| t.eq_ignore_ascii_case("timer"));
        let offer = parts.sdp.and_then(|s| sdp::parse(s).ok());
        if parts.sdp.is_some() && offer.is_none() {
            return reject(self, 488, &[]);
        }
        // Any refresh resets the session timer.
        let now = self.now;
        if let Some(r) = self.rss.get_mut(&id) {
            if let Some(se) = se.or(r.session_expires).filter(|_| r.timer) {
                r.session_expires = Some(se);
                r.expires_at = Some(now.add_millis(i64::from(se).saturating_mul(1000)));
            }
        }
        self.arm(TimerKey::Rs(id));
        let Some(offer) = offer else {
            // No offer. UPDATE: a plain 200 (metadata-only UPDATE). re-INVITE: our 200
            // must carry an offer: our current answer, recvonly (the ACK's answer is
            // not needed by a recorder).
            let Some(r) = self.rss.get(&id) else {
                return;
            };
            let body = (invite && !r.answer.is_empty()).then(|| r.answer.clone().into_bytes());
            let extra = [
                ("Contact", self.cfg.contact.clone()),
                ("Allow", ALLOW.to_owned()),
            ];
            let extra: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let bytes = self.respond(
                from,
                msg,
                200,
                tag.as_deref(),
                &extra,
                body.as_deref().map(|b| ("application/sdp", b)),
            );
            self.store_txn(key, from, invite, bytes.clone(), Some(200), Some(id));
            if invite {
                self.start_ok_retransmit(id, bytes, cseq);
            }
            if let Some((Some(m), raw)) = md {
                self.merge_metadata(id, m, raw);
            }
            return;
        };
        let plans = answer::plan(&offer, &self.cfg.media);
        if !plans.iter().any(StreamPlan::accepted) {
            // The session stays as it was (RFC 3261 §14.2).
            return reject(self, 488, &[]);
        }
        let Some(r) = self.rss.get_mut(&id) else {
            return;
        };
        // Known streams keep their binding: by label, else by position when neither side
        // has labels.
        let existing: Vec<Option<Bound>> = plans
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let found = match &p.label {
                    Some(l) => r.streams.iter().find(|s| s.plan.label.as_ref() == Some(l)),
                    None => r.streams.get(i).filter(|s| s.plan.label.is_none()),
                };
                found.and_then(|s| s.bound).filter(|_| p.accepted())
            })
            .collect();
        let all_known = plans
            .iter()
            .zip(&existing)
            .all(|(p, e)| !p.accepted() || e.is_some());
        r.pending = Some(PendingOffer {
            txn: key.clone(),
            method_invite: invite,
            plans: plans.clone(),
            metadata: md,
            request: msg.raw().to_vec(),
            session_expires: se,
            timer_supported,
        });
        if invite {
            let t = self.respond(from, msg, 100, None, &[], None);
            self.store_txn(key, from, true, t, None, Some(id));
        } else {
            // The UPDATE's transaction, to answer once media is ready.
            self.store_txn(key, from, false, Vec::new(), None, Some(id));
        }
        if let Some(r) = self.rss.get_mut(&id) {
            if invite {
                r.invite_cseq = cseq;
            }
        }
        if all_known {
            // Keys of SRTP streams stay ours too: `existing` carries them.
            let _ = self.media_ready(now, id, existing);
        } else {
            self.events.push_back(Event::MediaRequest {
                rs: id,
                plans,
                existing,
            });
        }
    }

    fn start_ok_retransmit(&mut self, id: RsId, ok: Vec<u8>, cseq: u32) {
        let now = self.now;
        let t1 = self.cfg.t1_ms;
        if let Some(r) = self.rss.get_mut(&id) {
            r.phase = Phase::WaitAck;
            r.invite_cseq = cseq;
            r.ok_next = (!r.peer.transport.reliable()).then(|| now.add_millis(t1));
            r.ok_interval = t1;
            r.ok_response = Some(ok);
            r.ack_deadline = Some(now.add_millis(t1.saturating_mul(64)));
        }
        self.arm(TimerKey::Rs(id));
    }

    fn handle_bye(&mut self, from: Peer, msg: &Message<'_>, key: String) {
        let Some(id) = self.dialog_of(msg) else {
            self.answer_nontxn(from, msg, key, 481, &[]);
            return;
        };
        self.answer_nontxn(from, msg, key, 200, &[]);
        // A pending re-INVITE/UPDATE dies with the dialog (RFC 3261 §15.1.2: 487).
        let pending = self.rss.get_mut(&id).and_then(|r| r.pending.take());
        if let Some(p) = pending {
            self.final_for_txn(&p.txn, &p.request, 487, &[], None);
        }
        self.end(id, EndReason::Bye, false);
    }

    fn merge_metadata(&mut self, id: RsId, m: Metadata, raw: Vec<u8>) {
        let now = self.now;
        let Some(r) = self.rss.get_mut(&id) else {
            return;
        };
        let unknown_ids = match &mut r.metadata {
            Some(state) => state.apply(m),
            None => {
                r.metadata = Some(m);
                Vec::new()
            }
        };
        let Some(state) = r.metadata.clone() else {
            return;
        };
        let streams = stream_infos(r);
        self.events.push_back(Event::MetadataChanged {
            rs: id,
            metadata: Box::new(state),
            raw,
            streams,
            unknown_ids,
            at: now,
        });
    }

    /// Ends a session: emits `Ended` (if the shell knows it) and, when `bye`, sends BYE.
    fn end(&mut self, id: RsId, reason: EndReason, bye: bool) {
        let now = self.now;
        let Some(r) = self.rss.get_mut(&id) else {
            return;
        };
        if r.ended {
            return;
        }
        r.ended = true;
        self.live = self.live.saturating_sub(1);
        r.ok_next = None;
        r.ok_response = None;
        r.expires_at = None;
        r.pending = None;
        self.events.push_back(Event::Ended {
            rs: id,
            reason,
            at: now,
        });
        if bye && r.phase != Phase::Early {
            r.local_cseq = r.local_cseq.saturating_add(1).max(1);
            let branch = format!("z9hG4bK{:x}b{:x}", self.cfg.seed, id.0);
            let mut m = String::with_capacity(512);
            m.push_str("BYE ");
            m.push_str(&clean(&r.remote_target));
            m.push_str(" SIP/2.0\r\nVia: SIP/2.0/");
            m.push_str(r.peer.transport.via_name());
            m.push(' ');
            m.push_str(&clean(&self.cfg.via_host));
            m.push_str(";branch=");
            m.push_str(&branch);
            m.push_str(";rport\r\nMax-Forwards: 70\r\n");
            for route in &r.route_set {
                m.push_str("Route: ");
                m.push_str(&clean(route));
                m.push_str("\r\n");
            }
            m.push_str("From: ");
            m.push_str(&clean(&r.to_header));
            m.push_str("\r\nTo: ");
            m.push_str(&clean(&r.from_header));
            m.push_str("\r\nCall-ID: ");
            m.push_str(&clean(&r.call_id));
            m.push_str(&format!("\r\nCSeq: {} BYE\r\n", r.local_cseq));
            m.push_str("Server: vcontap\r\nContent-Length: 0\r\n\r\n");
            let bytes = m.into_bytes();
            self.transmits.push_back(Transmit {
                to: r.peer,
                bytes: bytes.clone(),
                close: false,
            });
            let t1 = self.cfg.t1_ms;
            r.bye = Some(ClientBye {
                bytes,
                branch,
                next: (!r.peer.transport.reliable()).then(|| now.add_millis(t1)),
                interval: t1,
                give_up: now.add_millis(t1.saturating_mul(64)),
            });
        }
        self.arm(TimerKey::Rs(id));
    }

    /// Drops an ended session's state (its transactions expire on their own).
    fn forget(&mut self, id: RsId) {
        if let Some(r) = self.rss.remove(&id) {
            if self.by_call_id.get(&r.call_id) == Some(&id) {
                self.by_call_id.remove(&r.call_id);
            }
        }
    }
}

/// Drops CR/LF from header text we copy into a request.
fn clean(s: &str) -> String {
    vcontap_sip::unfold(s)
        .chars()
        .filter(|&c| c != '\r' && c != '\n')
        .collect()
}

fn all_paused(streams: &[Stream]) -> bool {
    let mut accepted = streams.iter().filter(|s| s.bound.is_some()).peekable();
    accepted.peek().is_some() && accepted.all(|s| s.plan.paused)
}

fn stream_infos(r: &Rs) -> Vec<StreamInfo> {
    let labels: Vec<Option<&str>> = r.streams.iter().map(|s| s.plan.label.as_deref()).collect();
    let maps = map_streams(r.metadata.as_ref(), &labels);
    r.streams
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let m = maps.get(i);
            StreamInfo {
                index: i,
                label: s.plan.label.clone(),
                port: s.bound.map(|b| b.port),
                formats: s.plan.decision.clone().unwrap_or_default(),
                srtp: s.plan.srtp.clone(),
                senders: m.map(|m| m.senders.clone()).unwrap_or_default(),
                source: m.map(|m| m.source).unwrap_or(MapSource::Unmapped),
                paused: s.plan.paused,
            }
        })
        .collect()
}
