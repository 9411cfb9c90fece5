//! The streaming generator: merges every active call's packets in global time order and
//! writes them as a pcap.
//!
//! Each call is a lazy [`CallGen`] that knows only its next packet (a short SIP script plus
//! two RTP streams). A binary heap keyed by (next packet time, call index) holds only the
//! active calls, and calls are activated when their first packet comes due, so memory is
//! O(concurrent) and output timestamps never go backwards.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io::{BufWriter, Write};
use std::net::SocketAddr;

use vcontap_sip::Method;
use vcontap_wire::{LinkType, PcapWriteError, PcapWriter, Resolution, Timestamp};

use crate::codec::CodecError;
use crate::config::{dtmf_event, ConfigError, SipTransport, SynthConfig};
use crate::packet::{mac_for, tcp_flags, tcp_frame, udp_frame, Link, PacketError, TcpFields};
use crate::rng::Rng;
use crate::rtp::{RtpStream, StreamSpec};
use crate::scenario::{
    clamp_ptime, plan, CallPlan, DtmfGrid, Outcome, Timeline, RESPONSE_MS, STREAM_WIRE,
};
use crate::sip::{Body, Dialog, Direction, SipMsg, ToTag};

/// Largest TCP payload per segment; longer SIP messages are split.
pub const TCP_MSS: usize = 1400;
/// Receive window advertised on every TCP segment.
pub const TCP_WINDOW: u16 = 64_240;
/// Output buffer size: large writes keep syscalls rare when `out` is a file.
pub const OUT_BUFFER: usize = 1 << 20;
/// 802.1Q priority of RTP frames (voice).
const PCP_RTP: u8 = 5;
/// 802.1Q priority of SIP frames (signaling).
const PCP_SIP: u8 = 3;
/// Delay of the 200 to a re-INVITE.
const REINVITE_OK_MS: i64 = 20;
/// Delay of the ACK of a re-INVITE's 200.
const REINVITE_ACK_MS: i64 = 30;
/// TCP SYN-ACK delay after the SYN, and FIN-ACK / last ACK spacing, in microseconds.
const TCP_STEP_US: i64 = 500;

/// What [`generate`] produced.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthSummary {
    /// The plan of every call, in call order.
    pub calls: Vec<CallPlan>,
    /// Frames written.
    pub packets: u64,
    /// Bytes of all frames (without pcap record headers).
    pub bytes: u64,
    /// RTP packets (voice and telephone-event).
    pub rtp_packets: u64,
    /// SIP messages (a message split into several TCP segments counts once).
    pub sip_messages: u64,
    /// Capture time of the first frame.
    pub first: Timestamp,
    /// Capture time of the last frame.
    pub last: Timestamp,
}

/// Why generation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SynthError {
    /// The configuration is out of range.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Writing the capture failed.
    #[error(transparent)]
    Pcap(#[from] PcapWriteError),
    /// A voice encoder failed.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// A frame could not be built.
    #[error(transparent)]
    Packet(#[from] PacketError),
}

/// One step of a call's signaling: a SIP message or a TCP control segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Sip(SipMsg),
    Syn,
    SynAck,
    HandshakeAck,
    Fin,
    FinAck,
    LastAck,
}

/// Next sequence numbers of the call's TCP connection.
#[derive(Debug, Clone, Copy)]
struct TcpState {
    caller_next: u32,
    callee_next: u32,
}

/// Shared output state.
struct Output<W: Write> {
    pcap: PcapWriter<W>,
    frame: Vec<u8>,
    rtp: Vec<u8>,
    text: String,
    body: String,
    ip_id: u16,
    packets: u64,
    bytes: u64,
    rtp_packets: u64,
    sip_messages: u64,
    first: Option<Timestamp>,
    last: Timestamp,
}

impl<W: Write> Output<W> {
    fn write_frame(&mut self, at: Timestamp) -> Result<(), SynthError> {
        self.pcap.write_packet(at, &self.frame)?;
        self.packets += 1;
        self.bytes += self.frame.len() as u64;
        self.first.get_or_insert(at);
        self.last = at;
        Ok(())
    }

    fn next_ip_id(&mut self) -> u16 {
        self.ip_id = self.ip_id.wrapping_add(1);
        self.ip_id
    }
}

/// One active call.
#[derive(Debug)]
struct CallGen {
    index: usize,
    script: VecDeque<(Timestamp, Step)>,
    caller: Option<RtpStream>,
    callee: Option<RtpStream>,
    dialog: Dialog,
    tcp: Option<TcpState>,
    vlan: Option<u16>,
}

fn ms(t: Timestamp, v: i64) -> Timestamp {
    Timestamp(t.0.saturating_add(v.saturating_mul(1_000_000)))
}

fn us(t: Timestamp, v: i64) -> Timestamp {
    Timestamp(t.0.saturating_add(v.saturating_mul(1_000)))
}

/// Builds the call's signaling script, sorted by time.
fn script(
    cfg: &SynthConfig,
    p: &CallPlan,
    tl: &Timeline,
    rng: &mut Rng,
) -> VecDeque<(Timestamp, Step)> {
    let mut s: Vec<(Timestamp, Step)> = Vec::with_capacity(24);
    let req = |method, cseq, branch, to_tag, body, in_dialog| {
        Step::Sip(SipMsg::Request {
            method,
            cseq,
            branch,
            to_tag,
            body,
            in_dialog,
            credentials: false,
        })
    };
    let resp = |code, method, cseq, branch, to_tag, body| {
        Step::Sip(SipMsg::Response {
            code,
            method,
            cseq,
            branch,
            to_tag,
            body,
        })
    };
    let offer = |dir, version| Body::Sdp {
        callee: false,
        dir,
        version,
    };
    let answer = |dir, version| Body::Sdp {
        callee: true,
        dir,
        version,
    };
    if let Some(syn) = tl.syn_at {
        s.push((syn, Step::Syn));
        s.push((us(syn, TCP_STEP_US), Step::SynAck));
        s.push((tl.invite_at, Step::HandshakeAck));
    }
    let mut cseq = 1u32;
    let mut branch = rng.next_u64();
    s.push((
        tl.invite_at,
        req(
            Method::Invite,
            cseq,
            branch,
            ToTag::None,
            offer(Direction::SendRecv, 1),
            false,
        ),
    ));
    if let Some((challenge, ack, retry)) = tl.auth {
        s.push((
            challenge,
            resp(407, Method::Invite, cseq, branch, ToTag::Auth, Body::None),
        ));
        s.push((
            ack,
            req(Method::Ack, cseq, branch, ToTag::Auth, Body::None, false),
        ));
        cseq += 1;
        branch = rng.next_u64();
        s.push((
            retry,
            Step::Sip(SipMsg::Request {
                method: Method::Invite,
                cseq,
                branch,
                to_tag: ToTag::None,
                body: offer(Direction::SendRecv, 1),
                in_dialog: false,
                credentials: true,
            }),
        ));
    }
    s.push((
        tl.trying_at,
        resp(100, Method::Invite, cseq, branch, ToTag::None, Body::None),
    ));
    if let Some(t) = tl.ringing_at {
        s.push((
            t,
            resp(180, Method::Invite, cseq, branch, ToTag::Dialog, Body::None),
        ));
    }
    if let Some(t) = tl.early_at {
        s.push((
            t,
            resp(
                183,
                Method::Invite,
                cseq,
                branch,
                ToTag::Dialog,
                answer(Direction::SendRecv, 1),
            ),
        ));
    }
    match p.outcome {
        Outcome::Answered => {
            s.push((
                tl.final_at,
                resp(
                    200,
                    Method::Invite,
                    cseq,
                    branch,
                    ToTag::Dialog,
                    answer(Direction::SendRecv, 1),
                ),
            ));
            s.push((
                tl.ack_at,
                req(
                    Method::Ack,
                    cseq,
                    rng.next_u64(),
                    ToTag::Dialog,
                    Body::None,
                    true,
                ),
            ));
            // Mid-call transactions, in time order so CSeq grows with time.
            let mut mid: Vec<(Timestamp, Option<char>, Direction, u32)> = Vec::new();
            if cfg.sip_info_dtmf {
                if let Some(start) = tl.media_start {
                    let grid = DtmfGrid::new(cfg.ptime_ms);
                    let ptime = i64::from(clamp_ptime(cfg.ptime_ms));
                    for (d, digit) in p.dtmf.chars().enumerate() {
                        let slot = grid.digit_slot(d as u32);
                        mid.push((
                            ms(start, i64::from(slot) * ptime),
                            Some(digit),
                            Direction::SendRecv,
                            0,
                        ));
                    }
                }
            }
            if let Some((hold, resume)) = tl.hold {
                mid.push((hold, None, Direction::SendOnly, 2));
                mid.push((resume, None, Direction::SendRecv, 3));
            }
            mid.sort_by_key(|m| m.0);
            for (at, digit, dir, version) in mid {
                cseq += 1;
                let b = rng.next_u64();
                if let Some(digit) = digit {
                    s.push((
                        at,
                        req(
                            Method::Info,
                            cseq,
                            b,
                            ToTag::Dialog,
                            Body::DtmfRelay(digit),
                            true,
                        ),
                    ));
                    s.push((
                        ms(at, RESPONSE_MS),
                        resp(200, Method::Info, cseq, b, ToTag::Dialog, Body::None),
                    ));
                } else {
                    let their = if dir == Direction::SendOnly {
                        Direction::RecvOnly
                    } else {
                        Direction::SendRecv
                    };
                    s.push((
                        at,
                        req(
                            Method::Invite,
                            cseq,
                            b,
                            ToTag::Dialog,
                            offer(dir, version),
                            true,
                        ),
                    ));
                    s.push((
                        ms(at, REINVITE_OK_MS),
                        resp(
                            200,
                            Method::Invite,
                            cseq,
                            b,
                            ToTag::Dialog,
                            answer(their, version),
                        ),
                    ));
                    s.push((
                        ms(at, REINVITE_ACK_MS),
                        req(
                            Method::Ack,
                            cseq,
                            rng.next_u64(),
                            ToTag::Dialog,
                            Body::None,
                            true,
                        ),
                    ));
                }
            }
            if let Some(bye) = tl.bye_at {
                cseq += 1;
                let b = rng.next_u64();
                s.push((
                    bye,
                    req(Method::Bye, cseq, b, ToTag::Dialog, Body::None, true),
                ));
                s.push((
                    tl.end_at,
                    resp(200, Method::Bye, cseq, b, ToTag::Dialog, Body::None),
                ));
            }
        }
        Outcome::NoAnswer => {
            let cancel = tl.cancel_at.unwrap_or(tl.final_at);
            s.push((
                cancel,
                req(Method::Cancel, cseq, branch, ToTag::None, Body::None, false),
            ));
            s.push((
                ms(cancel, RESPONSE_MS),
                resp(200, Method::Cancel, cseq, branch, ToTag::Dialog, Body::None),
            ));
            s.push((
                tl.final_at,
                resp(487, Method::Invite, cseq, branch, ToTag::Dialog, Body::None),
            ));
            s.push((
                tl.ack_at,
                req(Method::Ack, cseq, branch, ToTag::Dialog, Body::None, false),
            ));
        }
        Outcome::Busy | Outcome::Rejected | Outcome::NotFound => {
            s.push((
                tl.final_at,
                resp(
                    p.outcome.status(),
                    Method::Invite,
                    cseq,
                    branch,
                    ToTag::Dialog,
                    Body::None,
                ),
            ));
            s.push((
                tl.ack_at,
                req(Method::Ack, cseq, branch, ToTag::Dialog, Body::None, false),
            ));
        }
    }
    if let Some(fin) = tl.fin_at {
        s.push((fin, Step::Fin));
        s.push((us(fin, TCP_STEP_US), Step::FinAck));
        s.push((us(fin, 2 * TCP_STEP_US), Step::LastAck));
    }
    // Stable: equal times keep script order (handshake ACK before the INVITE).
    s.sort_by_key(|e| e.0);
    s.into()
}

impl CallGen {
    fn new(cfg: &SynthConfig, index: usize, p: &CallPlan) -> Result<Self, SynthError> {
        let tl = Timeline::build(cfg, p.index, p.outcome, first_packet(cfg, p));
        let mut rng = Rng::for_call(cfg.seed, p.index, STREAM_WIRE);
        let ptime_ms = clamp_ptime(cfg.ptime_ms);
        let dialog = Dialog::new(&mut rng, cfg.transport, ptime_ms);
        let script = script(cfg, p, &tl, &mut rng);
        let tcp = (cfg.transport == SipTransport::Tcp).then(|| TcpState {
            caller_next: rng.next_u32(),
            callee_next: rng.next_u32(),
        });
        let grid = DtmfGrid::new(ptime_ms);
        let (mut caller, mut callee) = (None, None);
        if let Some(start) = tl.media_start {
            let dtmf = if cfg.sip_info_dtmf {
                Vec::new()
            } else {
                p.dtmf
                    .chars()
                    .enumerate()
                    .filter_map(|(d, c)| Some((grid.digit_slot(d as u32), dtmf_event(c)?)))
                    .collect()
            };
            let base = StreamSpec {
                codec: p.codec,
                tone_hz: p.caller_tone_hz,
                ssrc: p.caller_ssrc,
                start,
                slots: tl.slots,
                ptime_ms,
                dtmf,
                grid,
                pause: None,
            };
            let callee_spec = StreamSpec {
                tone_hz: p.callee_tone_hz,
                ssrc: p.callee_ssrc,
                dtmf: Vec::new(),
                // The callee stops sending once it has answered the hold (recvonly) and
                // starts again once it has answered the resume.
                pause: tl
                    .hold
                    .map(|(h, r)| (ms(h, REINVITE_OK_MS), ms(r, REINVITE_OK_MS))),
                ..base.clone()
            };
            caller = Some(RtpStream::new(base, &mut rng)?);
            callee = Some(RtpStream::new(callee_spec, &mut rng)?);
        }
        Ok(CallGen {
            index,
            script,
            caller,
            callee,
            dialog,
            tcp,
            vlan: cfg.vlan,
        })
    }

    /// Time of the call's next packet.
    fn next_time(&self) -> Option<Timestamp> {
        [
            self.script.front().map(|e| e.0),
            self.caller.as_ref().and_then(RtpStream::peek),
            self.callee.as_ref().and_then(RtpStream::peek),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn link(&self, from_caller: bool, p: &CallPlan, pcp: u8) -> Link {
        let (a, b) = (mac_for(p.caller_sip.ip()), mac_for(p.callee_sip.ip()));
        let (src_mac, dst_mac) = if from_caller { (a, b) } else { (b, a) };
        Link {
            src_mac,
            dst_mac,
            vlan: self.vlan,
            pcp,
        }
    }

    /// Writes the call's next packet(s): one RTP packet, one SIP message (several segments
    /// over TCP) or one TCP control segment.
    fn emit<W: Write>(&mut self, p: &CallPlan, out: &mut Output<W>) -> Result<(), SynthError> {
        let sip_t = self.script.front().map(|e| e.0);
        let caller_t = self.caller.as_ref().and_then(RtpStream::peek);
        let callee_t = self.callee.as_ref().and_then(RtpStream::peek);
        // Signaling first on ties, then the caller's stream.
        let sip_first = sip_t
            .is_some_and(|s| caller_t.is_none_or(|c| s <= c) && callee_t.is_none_or(|c| s <= c));
        if sip_first {
            if let Some((at, step)) = self.script.pop_front() {
                self.emit_step(at, step, p, out)?;
            }
            return Ok(());
        }
        let use_caller = match (caller_t, callee_t) {
            (Some(c), Some(d)) => c <= d,
            (Some(_), None) => true,
            _ => false,
        };
        let (stream, src, dst) = if use_caller {
            (self.caller.as_mut(), p.caller_rtp, p.callee_rtp)
        } else {
            (self.callee.as_mut(), p.callee_rtp, p.caller_rtp)
        };
        let Some(stream) = stream else { return Ok(()) };
        let Some(at) = stream.emit(&mut out.rtp)? else {
            return Ok(());
        };
        let link = self.link(use_caller, p, PCP_RTP);
        out.frame.clear();
        let id = out.next_ip_id();
        udp_frame(&mut out.frame, &link, src, dst, &out.rtp, id)?;
        out.write_frame(at)?;
        out.rtp_packets += 1;
        Ok(())
    }

    fn emit_step<W: Write>(
        &mut self,
        at: Timestamp,
        step: Step,
        p: &CallPlan,
        out: &mut Output<W>,
    ) -> Result<(), SynthError> {
        use tcp_flags::{ACK, FIN, PSH, SYN};
        let (from_caller, flags) = match step {
            Step::Sip(msg) => (msg.sent_by_caller(), PSH | ACK),
            Step::Syn => (true, SYN),
            Step::SynAck => (false, SYN | ACK),
            Step::HandshakeAck => (true, ACK),
            Step::Fin => (true, FIN | ACK),
            Step::FinAck => (false, FIN | ACK),
            Step::LastAck => (true, ACK),
        };
        let (src, dst) = if from_caller {
            (p.caller_sip, p.callee_sip)
        } else {
            (p.callee_sip, p.caller_sip)
        };
        let link = self.link(from_caller, p, PCP_SIP);
        if let Step::Sip(msg) = step {
            self.dialog.render(p, &msg, &mut out.text, &mut out.body);
            out.sip_messages += 1;
        } else {
            out.text.clear();
        }
        let Some(tcp) = self.tcp.as_mut() else {
            out.frame.clear();
            let id = out.next_ip_id();
            udp_frame(&mut out.frame, &link, src, dst, out.text.as_bytes(), id)?;
            return out.write_frame(at);
        };
        let text = std::mem::take(&mut out.text);
        let result = write_tcp(
            out,
            &link,
            (src, dst),
            tcp,
            from_caller,
            flags,
            text.as_bytes(),
            at,
        );
        out.text = text;
        result
    }
}

/// Writes `payload` as one or more TCP segments (at most [`TCP_MSS`] bytes each, at least
/// one segment even when empty) and advances the sender's sequence number.
#[allow(clippy::too_many_arguments)] // One call site; a struct would only rename the list.
fn write_tcp<W: Write>(
    out: &mut Output<W>,
    link: &Link,
    (src, dst): (SocketAddr, SocketAddr),
    tcp: &mut TcpState,
    from_caller: bool,
    flags: u8,
    payload: &[u8],
    at: Timestamp,
) -> Result<(), SynthError> {
    use tcp_flags::{ACK, FIN, SYN};
    let mut offset = 0usize;
    loop {
        let end = offset.saturating_add(TCP_MSS).min(payload.len());
        let chunk = payload.get(offset..end).unwrap_or(&[]);
        let (seq, ack) = if from_caller {
            (tcp.caller_next, tcp.callee_next)
        } else {
            (tcp.callee_next, tcp.caller_next)
        };
        // The initial SYN acknowledges nothing.
        let fields = TcpFields {
            seq,
            ack: if flags & ACK != 0 { ack } else { 0 },
            flags,
            window: TCP_WINDOW,
        };
        out.frame.clear();
        let id = out.next_ip_id();
        tcp_frame(&mut out.frame, link, src, dst, &fields, chunk, id)?;
        out.write_frame(at)?;
        // SYN and FIN each take one sequence number.
        let used = (chunk.len() as u32).wrapping_add(u32::from(flags & (SYN | FIN) != 0));
        let next = if from_caller {
            &mut tcp.caller_next
        } else {
            &mut tcp.callee_next
        };
        *next = next.wrapping_add(used);
        offset = end;
        if offset >= payload.len() {
            return Ok(());
        }
    }
}

/// Capture time of a call's first packet (its TCP SYN, or its INVITE).
fn first_packet(cfg: &SynthConfig, p: &CallPlan) -> Timestamp {
    match cfg.transport {
        SipTransport::Udp => p.invite_at,
        SipTransport::Tcp => us(p.invite_at, -crate::scenario::TCP_HANDSHAKE_US),
    }
}

/// Generates the capture described by `cfg` into `out` (classic pcap, Ethernet, µs).
///
/// Packets are written in non-decreasing time order while memory stays proportional to the
/// number of simultaneously active calls. `out` is buffered internally.
pub fn generate<W: Write>(cfg: &SynthConfig, out: W) -> Result<SynthSummary, SynthError> {
    cfg.validate()?;
    let calls = plan(cfg);
    // The whole capture must fit the pcap 32-bit seconds field.
    let latest = calls.iter().map(|c| c.end_at).max().unwrap_or(cfg.start);
    if u32::try_from(ms(latest, 1000).secs()).is_err() {
        return Err(ConfigError::TimeRange.into());
    }
    let pcap = PcapWriter::new(
        BufWriter::with_capacity(OUT_BUFFER, out),
        LinkType::ETHERNET,
        Resolution::Micros,
    )?;
    let mut o = Output {
        pcap,
        frame: Vec::with_capacity(2048),
        rtp: Vec::with_capacity(2048),
        text: String::with_capacity(2048),
        body: String::with_capacity(1024),
        ip_id: 0,
        packets: 0,
        bytes: 0,
        rtp_packets: 0,
        sip_messages: 0,
        first: None,
        last: Timestamp(0),
    };
    let mut heap: BinaryHeap<Reverse<(Timestamp, usize, usize)>> = BinaryHeap::new();
    let mut slots: Vec<Option<CallGen>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut pending = 0usize;
    loop {
        let due = calls.get(pending).map(|p| first_packet(cfg, p));
        let top = heap.peek().map(|Reverse(e)| e.0);
        if let Some(due) = due.filter(|&d| top.is_none_or(|t| d <= t)) {
            if let Some(p) = calls.get(pending) {
                let gen = CallGen::new(cfg, pending, p)?;
                let slot = free.pop().unwrap_or(slots.len());
                if slot == slots.len() {
                    slots.push(None);
                }
                heap.push(Reverse((gen.next_time().unwrap_or(due), pending, slot)));
                if let Some(s) = slots.get_mut(slot) {
                    *s = Some(gen);
                }
            }
            pending += 1;
            continue;
        }
        let Some(Reverse((_, index, slot))) = heap.pop() else {
            break;
        };
        let Some(Some(gen)) = slots.get_mut(slot) else {
            continue;
        };
        if let Some(p) = calls.get(gen.index) {
            gen.emit(p, &mut o)?;
        }
        match gen.next_time() {
            Some(t) => heap.push(Reverse((t, index, slot))),
            None => {
                if let Some(s) = slots.get_mut(slot) {
                    *s = None;
                }
                free.push(slot);
            }
        }
    }
    o.pcap.into_inner()?.flush().map_err(PcapWriteError::from)?;
    Ok(SynthSummary {
        packets: o.packets,
        bytes: o.bytes,
        rtp_packets: o.rtp_packets,
        sip_messages: o.sip_messages,
        first: o.first.unwrap_or(cfg.start),
        last: o.last,
        calls,
    })
}
