//! Per-call plans: who calls whom, when every step of the call happens, which codec and
//! tones are used and how the call ends.
//!
//! [`plan`] is pure and deterministic from the config's seed. The generator rebuilds the
//! detailed [`Timeline`] of each call from its plan, so what the plan promises (times,
//! addresses, digits) is exactly what ends up in the capture.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use vcontap_wire::Timestamp;

use crate::config::{
    dtmf_event, Codec, SipTransport, SynthConfig, ADDRESS_POOL, MAX_CALLS, MAX_CONCURRENT,
    MAX_DTMF_DIGITS, MAX_PTIME_MS, MAX_SECONDS, MIN_PTIME_MS,
};
use crate::rng::Rng;

/// SIP port both parties listen on.
pub const SIP_PORT: u16 = 5060;
/// First RTP port; each call takes the even port `RTP_BASE_PORT + 2 * (index % RTP_PORT_PAIRS)`.
pub const RTP_BASE_PORT: u16 = 20_000;
/// Number of distinct even RTP ports handed out before wrapping (20000..=59998).
pub const RTP_PORT_PAIRS: u32 = 20_000;
/// First ephemeral port the caller uses as TCP client (wraps within 49152..=65535).
pub const TCP_CLIENT_BASE_PORT: u16 = 49_152;
/// Domain used in SIP URIs and Call-IDs.
pub const DOMAIN: &str = "synth.example";
/// Peak amplitude of the synthesized tones (about -12 dBFS, far from G.711 clipping).
pub const TONE_AMPLITUDE: f64 = 8000.0;

/// Delay of 100 Trying after the INVITE.
const TRYING_MS: i64 = 10;
/// Delay of 180 Ringing after the INVITE.
const RINGING_MS: i64 = 50;
/// Delay of 183 Session Progress after the INVITE.
const EARLY_MS: i64 = 100;
/// Delay of 404 after the INVITE (a lookup, no ringing).
const NOT_FOUND_MS: i64 = 60;
/// Shortest ring time; each call adds a seeded 0..RING_SPREAD_MS.
const RING_MIN_MS: i64 = 1000;
/// Spread of ring times.
const RING_SPREAD_MS: u64 = 1000;
/// Delay of the ACK after a final response.
const ACK_MS: i64 = 10;
/// Delay from the ACK of the 200 to the first RTP packet.
const MEDIA_AFTER_ACK_MS: i64 = 5;
/// Delay of a response to an in-dialog request (BYE, INFO, re-INVITE, CANCEL).
pub(crate) const RESPONSE_MS: i64 = 10;
/// Delay of the 407 challenge after the first INVITE (its ACK follows after [`ACK_MS`]).
const AUTH_407_MS: i64 = 5;
/// Delay of the re-sent INVITE (with credentials) after the first INVITE.
const AUTH_RETRY_MS: i64 = 20;
/// TCP handshake: SYN-ACK and ACK offsets before the INVITE (the INVITE goes with the ACK).
pub(crate) const TCP_HANDSHAKE_US: i64 = 1000;
/// TCP teardown starts this long after the last SIP message.
pub(crate) const TCP_FIN_US: i64 = 1000;
/// Hold length.
const HOLD_MS: i64 = 1000;
/// Talk time needed before a call is put on hold (hold sits in the middle).
const HOLD_MIN_TALK_MS: i64 = 2000;
/// Talk time at which DTMF starts.
const DTMF_START_MS: u32 = 1000;
/// DTMF tone length.
const DTMF_ON_MS: u32 = 100;
/// DTMF digit cycle (tone plus 100 ms gap).
const DTMF_CYCLE_MS: u32 = 200;
/// RFC 4733 end packets sent per digit.
pub(crate) const DTMF_END_PACKETS: u32 = 3;

/// RNG stream of a call for its identity (names, Call-ID, SSRCs); separate streams keep
/// plan and generator draws independent of each other.
pub(crate) const STREAM_PLAN: u64 = 0;
/// RNG stream of a call for its ring time.
pub(crate) const STREAM_RING: u64 = 1;
/// RNG stream of a call for wire details (tags, branches, RTP/TCP initial numbers, jitter).
pub(crate) const STREAM_WIRE: u64 = 2;

/// How a call ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// 200 OK, talk, BYE.
    Answered,
    /// 486 Busy Here after ringing.
    Busy,
    /// The caller gives up ringing: CANCEL, then 487 Request Terminated.
    NoAnswer,
    /// 603 Decline after ringing.
    Rejected,
    /// 404 Not Found without ringing.
    NotFound,
}

impl Outcome {
    /// Final SIP status of the INVITE.
    pub const fn status(self) -> u16 {
        match self {
            Outcome::Answered => 200,
            Outcome::Busy => 486,
            Outcome::NoAnswer => 487,
            Outcome::Rejected => 603,
            Outcome::NotFound => 404,
        }
    }
}

/// One side of a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartyPlan {
    /// E.164 number, e.g. `+15550100007`.
    pub number: String,
    /// Display name used in From/To/P-Asserted-Identity.
    pub display: String,
    /// Address-of-record, e.g. `sip:+15550100007@synth.example;user=phone`.
    pub uri: String,
}

/// Everything the capture will contain about one call.
#[derive(Debug, Clone, PartialEq)]
pub struct CallPlan {
    /// 0-based call number.
    pub index: u32,
    /// SIP Call-ID (unique per call).
    pub call_id: String,
    /// Calling party.
    pub caller: PartyPlan,
    /// Called party.
    pub callee: PartyPlan,
    /// Codec of both RTP streams.
    pub codec: Codec,
    /// How the call ends.
    pub outcome: Outcome,
    /// Capture time of the (first) INVITE.
    pub invite_at: Timestamp,
    /// Capture time of the 200 OK to the INVITE (answered calls only).
    pub answer_at: Option<Timestamp>,
    /// Capture time of the last SIP message (200 to BYE, or the ACK of the failure).
    pub end_at: Timestamp,
    /// Media time per direction actually sent (voice slots × ptime), 0 when unanswered.
    pub talk_seconds: f64,
    /// DTMF digits actually sent (those that fit in the talk time).
    pub dtmf: String,
    /// Frequency of the caller's tone.
    pub caller_tone_hz: f64,
    /// Frequency of the callee's tone.
    pub callee_tone_hz: f64,
    /// Caller RTP address (from its SDP).
    pub caller_rtp: SocketAddr,
    /// Callee RTP address (from its SDP).
    pub callee_rtp: SocketAddr,
    /// Caller SIP address (source of its requests; the TCP client port with TCP).
    pub caller_sip: SocketAddr,
    /// Callee SIP address.
    pub callee_sip: SocketAddr,
    /// SSRC of the caller's stream.
    pub caller_ssrc: u32,
    /// SSRC of the callee's stream.
    pub callee_ssrc: u32,
    /// (hold re-INVITE time, resume re-INVITE time) when the call goes on hold.
    pub hold: Option<(Timestamp, Timestamp)>,
}

/// When each step of a call happens (all absolute capture times).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Timeline {
    /// TCP SYN (first packet of the call) when SIP runs over TCP.
    pub syn_at: Option<Timestamp>,
    /// First INVITE.
    pub invite_at: Timestamp,
    /// (407, ACK of 407, re-sent INVITE) when challenged.
    pub auth: Option<(Timestamp, Timestamp, Timestamp)>,
    /// 100 Trying.
    pub trying_at: Timestamp,
    /// 180 Ringing (not for NotFound).
    pub ringing_at: Option<Timestamp>,
    /// 183 with SDP (answered calls with early media).
    pub early_at: Option<Timestamp>,
    /// CANCEL (NoAnswer only).
    pub cancel_at: Option<Timestamp>,
    /// Final response to the INVITE.
    pub final_at: Timestamp,
    /// ACK of the final response.
    pub ack_at: Timestamp,
    /// First RTP slot time (answered calls).
    pub media_start: Option<Timestamp>,
    /// Voice slots per direction.
    pub slots: u32,
    /// Hold and resume re-INVITE times.
    pub hold: Option<(Timestamp, Timestamp)>,
    /// BYE (answered calls).
    pub bye_at: Option<Timestamp>,
    /// Last SIP message.
    pub end_at: Timestamp,
    /// TCP FIN from the caller.
    pub fin_at: Option<Timestamp>,
}

impl Timeline {
    /// Builds the timeline of call `index` whose first packet is at `origin`.
    pub(crate) fn build(
        cfg: &SynthConfig,
        index: u32,
        outcome: Outcome,
        origin: Timestamp,
    ) -> Self {
        let ms = |t: Timestamp, v: i64| Timestamp(t.0.saturating_add(v.saturating_mul(1_000_000)));
        let us = |t: Timestamp, v: i64| Timestamp(t.0.saturating_add(v.saturating_mul(1_000)));
        let tcp = cfg.transport == SipTransport::Tcp;
        let syn_at = tcp.then_some(origin);
        let invite_at = if tcp {
            us(origin, TCP_HANDSHAKE_US)
        } else {
            origin
        };
        let auth = cfg.auth_challenge.then(|| {
            (
                ms(invite_at, AUTH_407_MS),
                ms(invite_at, AUTH_407_MS + ACK_MS),
                ms(invite_at, AUTH_RETRY_MS),
            )
        });
        let inv = auth.map_or(invite_at, |a| a.2);
        let ring_ms = RING_MIN_MS
            + i64::try_from(Rng::for_call(cfg.seed, index, STREAM_RING).below(RING_SPREAD_MS))
                .unwrap_or(0);
        let trying_at = ms(inv, TRYING_MS);
        let ringing_at = (outcome != Outcome::NotFound).then(|| ms(inv, RINGING_MS));
        let early_at = (outcome == Outcome::Answered && cfg.early_media).then(|| ms(inv, EARLY_MS));
        let ptime = i64::from(clamp_ptime(cfg.ptime_ms));
        let mut tl = Timeline {
            syn_at,
            invite_at,
            auth,
            trying_at,
            ringing_at,
            early_at,
            cancel_at: None,
            final_at: ms(inv, ring_ms),
            ack_at: ms(inv, ring_ms + ACK_MS),
            media_start: None,
            slots: 0,
            hold: None,
            bye_at: None,
            end_at: ms(inv, ring_ms + ACK_MS),
            fin_at: None,
        };
        match outcome {
            Outcome::Answered => {
                let media_start = ms(tl.ack_at, MEDIA_AFTER_ACK_MS);
                let slots = voice_slots(cfg.seconds, clamp_ptime(cfg.ptime_ms));
                let talk_ms = i64::from(slots).saturating_mul(ptime);
                tl.media_start = Some(media_start);
                tl.slots = slots;
                if cfg.hold && talk_ms >= HOLD_MIN_TALK_MS {
                    let h0 = ms(media_start, talk_ms / 2 - HOLD_MS / 2);
                    tl.hold = Some((h0, ms(h0, HOLD_MS)));
                }
                let bye = ms(media_start, talk_ms);
                tl.bye_at = Some(bye);
                tl.end_at = ms(bye, RESPONSE_MS);
            }
            Outcome::NoAnswer => {
                tl.cancel_at = Some(ms(inv, ring_ms));
                // 200 to CANCEL, then 487 to the INVITE, then ACK.
                tl.final_at = ms(inv, ring_ms + RESPONSE_MS + 5);
                tl.ack_at = ms(tl.final_at, ACK_MS);
                tl.end_at = tl.ack_at;
            }
            Outcome::NotFound => {
                tl.final_at = ms(inv, NOT_FOUND_MS);
                tl.ack_at = ms(tl.final_at, ACK_MS);
                tl.end_at = tl.ack_at;
            }
            Outcome::Busy | Outcome::Rejected => {}
        }
        if tcp {
            tl.fin_at = Some(us(tl.end_at, TCP_FIN_US));
        }
        tl
    }

    /// Time of the last packet of the call (TCP teardown included).
    pub(crate) fn last_packet(&self) -> Timestamp {
        match self.fin_at {
            // FIN, FIN-ACK, ACK spaced by half a millisecond.
            Some(fin) => Timestamp(fin.0.saturating_add(1_000_000)),
            None => self.end_at,
        }
    }

    /// Time of the first packet of the call.
    pub(crate) fn first_packet(&self) -> Timestamp {
        self.syn_at.unwrap_or(self.invite_at)
    }
}

/// Where the DTMF digits sit on the caller's voice-slot grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DtmfGrid {
    /// Slot of the first digit's first event packet.
    pub first_slot: u32,
    /// Slots between the starts of consecutive digits.
    pub period: u32,
    /// Slots carrying the growing-duration event packets of one digit.
    pub on_slots: u32,
}

impl DtmfGrid {
    /// Grid for a packetization time (in ms).
    pub(crate) fn new(ptime_ms: u32) -> Self {
        let p = clamp_ptime(ptime_ms);
        let on_slots = DTMF_ON_MS.div_ceil(p).max(1);
        DtmfGrid {
            first_slot: DTMF_START_MS.div_ceil(p),
            period: DTMF_CYCLE_MS
                .div_ceil(p)
                .max(on_slots + DTMF_END_PACKETS + 1),
            on_slots,
        }
    }

    /// How many of `wanted` digits fit into `slots` voice slots.
    pub(crate) fn fitting(&self, slots: u32, wanted: usize) -> usize {
        let avail = slots.saturating_sub(self.first_slot) / self.period.max(1);
        wanted.min(usize::try_from(avail).unwrap_or(usize::MAX))
    }

    /// First slot of digit `d`.
    pub(crate) fn digit_slot(&self, d: u32) -> u32 {
        self.first_slot
            .saturating_add(d.saturating_mul(self.period))
    }
}

/// `ptime_ms` forced into the supported range so planning never divides by zero.
pub(crate) fn clamp_ptime(ptime_ms: u32) -> u32 {
    ptime_ms.clamp(MIN_PTIME_MS, MAX_PTIME_MS)
}

/// Voice slots for `seconds` of talk at `ptime_ms`.
pub(crate) fn voice_slots(seconds: f64, ptime_ms: u32) -> u32 {
    let secs = if seconds.is_finite() {
        seconds.clamp(0.0, MAX_SECONDS)
    } else {
        0.0
    };
    // Bounded by MAX_SECONDS * 100 slots, so the cast cannot saturate meaningfully.
    (secs * 1000.0 / f64::from(clamp_ptime(ptime_ms))).round() as u32
}

/// Outcome of call `index` under the config's failure cycle.
pub(crate) fn outcome_for(cfg: &SynthConfig, index: u32) -> Outcome {
    const CYCLE: [Outcome; 4] = [
        Outcome::Busy,
        Outcome::NoAnswer,
        Outcome::Rejected,
        Outcome::NotFound,
    ];
    let n = cfg.failure_every;
    let k = index.saturating_add(1);
    if k.checked_rem(n).is_none_or(|r| r != 0) {
        Outcome::Answered
    } else {
        let turn = (k / n - 1) % CYCLE.len() as u32;
        CYCLE
            .get(turn as usize)
            .copied()
            .unwrap_or(Outcome::Answered)
    }
}

/// Caller and callee IP addresses for call `index`.
pub(crate) fn addresses(index: u32, ipv6: bool) -> (IpAddr, IpAddr) {
    let slot = index % ADDRESS_POOL;
    let (x, y) = ((slot / 254) as u8, (slot % 254 + 1) as u8);
    if ipv6 {
        let (x, y) = (u16::from(x), u16::from(y));
        (
            IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 1, 0, 0, x, y)),
            IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 2, 0, 0, x, y)),
        )
    } else {
        (
            IpAddr::V4(Ipv4Addr::new(10, 1, x, y)),
            IpAddr::V4(Ipv4Addr::new(10, 2, x, y)),
        )
    }
}

const FIRST_NAMES: [&str; 16] = [
    "Alice", "Bob", "Carol", "Dave", "Erin", "Frank", "Grace", "Heidi", "Ivan", "Judy", "Mallory",
    "Niaj", "Olivia", "Peggy", "Rupert", "Sybil",
];
const LAST_NAMES: [&str; 12] = [
    "Smith", "Jones", "Garcia", "Miller", "Davis", "Lopez", "Wilson", "Moore", "Clark", "Lewis",
    "Young", "King",
];

fn party(rng: &mut Rng, number: String) -> PartyPlan {
    let first = FIRST_NAMES
        .get(rng.below(FIRST_NAMES.len() as u64) as usize)
        .copied()
        .unwrap_or_default();
    let last = LAST_NAMES
        .get(rng.below(LAST_NAMES.len() as u64) as usize)
        .copied()
        .unwrap_or_default();
    let uri = format!("sip:{number}@{DOMAIN};user=phone");
    PartyPlan {
        number,
        display: format!("{first} {last}"),
        uri,
    }
}

/// Plans every call of `cfg`, deterministically from its seed.
///
/// Out-of-range fields are clamped (see [`SynthConfig::validate`] for the limits), so this
/// never panics; [`crate::generate`] refuses invalid configs instead.
pub fn plan(cfg: &SynthConfig) -> Vec<CallPlan> {
    let calls = cfg.calls.min(MAX_CALLS);
    let concurrent = cfg.concurrent.clamp(1, MAX_CONCURRENT);
    let outcomes: Vec<Outcome> = (0..calls).map(|i| outcome_for(cfg, i)).collect();
    // Stagger starts by mean call length / concurrent so about `concurrent` calls overlap.
    let total: i128 = outcomes
        .iter()
        .enumerate()
        .map(|(i, &o)| {
            let tl = Timeline::build(cfg, i as u32, o, Timestamp(0));
            i128::from(tl.last_packet().0 - tl.first_packet().0)
        })
        .sum();
    let mean = total / i128::from(calls.max(1));
    let interval = i64::try_from(mean / i128::from(concurrent)).unwrap_or(i64::MAX);
    // Whole microseconds so every planned time survives the pcap's µs resolution.
    let interval = interval - interval % 1000;
    let start = Timestamp(cfg.start.0 - cfg.start.0.rem_euclid(1000));
    let grid = DtmfGrid::new(cfg.ptime_ms);
    let digits: Vec<char> = cfg
        .dtmf
        .as_deref()
        .unwrap_or("")
        .chars()
        .filter(|&c| dtmf_event(c).is_some())
        .take(MAX_DTMF_DIGITS)
        .collect();
    let codecs = if cfg.codecs.is_empty() {
        &[Codec::Pcmu][..]
    } else {
        &cfg.codecs[..]
    };

    outcomes
        .iter()
        .enumerate()
        .map(|(i, &outcome)| {
            let index = i as u32;
            let origin = Timestamp(
                start
                    .0
                    .saturating_add(interval.saturating_mul(i64::from(index))),
            );
            let tl = Timeline::build(cfg, index, outcome, origin);
            let mut rng = Rng::for_call(cfg.seed, index, STREAM_PLAN);
            let caller = party(&mut rng, format!("+1555{:07}", 100_000 + index));
            let callee = party(&mut rng, format!("+1555{:07}", 2_000_000 + index));
            let call_id = format!("{}-{index:08x}@{DOMAIN}", rng.hex(12));
            let caller_ssrc = rng.next_u32() | 1;
            let callee_ssrc = (rng.next_u32() & !1) | 2;
            let (caller_ip, callee_ip) = addresses(index, cfg.ipv6);
            let rtp_port = RTP_BASE_PORT + 2 * (index % RTP_PORT_PAIRS) as u16;
            let caller_sip_port = match cfg.transport {
                SipTransport::Udp => SIP_PORT,
                SipTransport::Tcp => TCP_CLIENT_BASE_PORT + (index % 16_384) as u16,
            };
            let step = f64::from(index % 8) * 50.0;
            let ptime = clamp_ptime(cfg.ptime_ms);
            let dtmf: String = if outcome == Outcome::Answered {
                digits
                    .iter()
                    .take(grid.fitting(tl.slots, digits.len()))
                    .collect()
            } else {
                String::new()
            };
            CallPlan {
                index,
                call_id,
                caller,
                callee,
                codec: codecs.get(i % codecs.len()).copied().unwrap_or(Codec::Pcmu),
                outcome,
                invite_at: tl.invite_at,
                answer_at: (outcome == Outcome::Answered).then_some(tl.final_at),
                end_at: tl.end_at,
                talk_seconds: f64::from(tl.slots) * f64::from(ptime) / 1000.0,
                dtmf,
                caller_tone_hz: 400.0 + step,
                callee_tone_hz: 1000.0 + step,
                caller_rtp: SocketAddr::new(caller_ip, rtp_port),
                callee_rtp: SocketAddr::new(callee_ip, rtp_port),
                caller_sip: SocketAddr::new(caller_ip, caller_sip_port),
                callee_sip: SocketAddr::new(callee_ip, SIP_PORT),
                caller_ssrc,
                callee_ssrc,
                hold: tl.hold,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_from_seed() {
        let cfg = SynthConfig {
            calls: 50,
            failure_every: 3,
            ..Default::default()
        };
        assert_eq!(plan(&cfg), plan(&cfg));
        let other = plan(&SynthConfig {
            seed: 2,
            ..cfg.clone()
        });
        assert_ne!(plan(&cfg)[0].call_id, other[0].call_id);
        // Same index, same addresses regardless of seed.
        assert_eq!(plan(&cfg)[3].caller_rtp, other[3].caller_rtp);
    }

    #[test]
    fn unique_identities() {
        let plans = plan(&SynthConfig {
            calls: 300,
            concurrent: 50,
            ..Default::default()
        });
        let ids: std::collections::HashSet<_> = plans.iter().map(|p| &p.call_id).collect();
        assert_eq!(ids.len(), 300);
        let addrs: std::collections::HashSet<_> = plans.iter().map(|p| p.caller_sip).collect();
        assert_eq!(addrs.len(), 300);
        for p in &plans {
            assert!(p.caller.number.starts_with("+1555") && p.caller.number.len() == 12);
            assert!(p.callee.uri.ends_with("@synth.example;user=phone"));
            assert_ne!(p.caller_ssrc, p.callee_ssrc);
            assert_eq!(p.caller_rtp.port() % 2, 0);
        }
        assert_eq!(plans[0].invite_at, crate::config::DEFAULT_START);
    }

    #[test]
    fn failure_cycle() {
        let cfg = SynthConfig {
            calls: 12,
            failure_every: 2,
            ..Default::default()
        };
        let outcomes: Vec<Outcome> = plan(&cfg).iter().map(|p| p.outcome).collect();
        assert_eq!(
            outcomes,
            [
                Outcome::Answered,
                Outcome::Busy,
                Outcome::Answered,
                Outcome::NoAnswer,
                Outcome::Answered,
                Outcome::Rejected,
                Outcome::Answered,
                Outcome::NotFound,
                Outcome::Answered,
                Outcome::Busy,
                Outcome::Answered,
                Outcome::NoAnswer,
            ]
        );
        for p in plan(&cfg) {
            assert_eq!(p.answer_at.is_some(), p.outcome == Outcome::Answered);
            assert!(p.end_at > p.invite_at);
        }
    }

    #[test]
    fn concurrency_near_target() {
        for (calls, concurrent) in [(400, 50), (2000, 500), (30, 100)] {
            let cfg = SynthConfig {
                calls,
                concurrent,
                seconds: 10.0,
                ..Default::default()
            };
            let plans = plan(&cfg);
            let mut edges: Vec<(i64, i32)> = plans
                .iter()
                .flat_map(|p| [(p.invite_at.0, 1), (p.end_at.0, -1)])
                .collect();
            edges.sort();
            let (mut cur, mut max) = (0, 0);
            for (_, d) in edges {
                cur += d;
                max = max.max(cur);
            }
            let expect = concurrent.min(calls) as i32;
            assert!(
                (max - expect).abs() <= expect / 10 + 1,
                "calls {calls} concurrent {concurrent}: max active {max}"
            );
        }
    }

    #[test]
    fn dtmf_fits_talk_time() {
        let cfg = SynthConfig {
            calls: 1,
            seconds: 1.5,
            dtmf: Some("123456789".into()),
            ..Default::default()
        };
        // 1.5 s talk = 75 slots; digits start at slot 50 with 10-slot periods: 2 fit.
        assert_eq!(plan(&cfg)[0].dtmf, "12");
        let grid = DtmfGrid::new(20);
        assert_eq!(
            grid,
            DtmfGrid {
                first_slot: 50,
                period: 10,
                on_slots: 5
            }
        );
        let grid = DtmfGrid::new(30);
        assert!(grid.period > grid.on_slots + DTMF_END_PACKETS);
    }

    #[test]
    fn hold_in_the_middle() {
        let cfg = SynthConfig {
            calls: 1,
            seconds: 6.0,
            hold: true,
            ..Default::default()
        };
        let p = &plan(&cfg)[0];
        let (h0, h1) = p.hold.expect("hold planned");
        assert_eq!(h1.0 - h0.0, 1_000_000_000);
        assert!(h0 > p.answer_at.expect("answered") && h1 < p.end_at);
        let short = SynthConfig {
            seconds: 1.0,
            ..cfg
        };
        assert_eq!(plan(&short)[0].hold, None);
    }

    #[test]
    fn clamps_hostile_config() {
        let cfg = SynthConfig {
            calls: 3,
            concurrent: 0,
            seconds: f64::INFINITY,
            ptime_ms: 0,
            codecs: vec![],
            start: Timestamp(i64::MAX - 5),
            ..Default::default()
        };
        let plans = plan(&cfg);
        assert_eq!(plans.len(), 3);
        assert_eq!(plans[0].talk_seconds, 0.0);
    }
}
