//! RTP (RFC 3550) and RFC 4733 telephone-event packet builders, and the per-direction
//! stream state that emits one packet per packetization slot, lazily.
//!
//! A stream owns its sequence number, timestamp origin, SSRC, DTMF schedule and hold pause,
//! and only ever knows its next packet, so memory stays O(active streams).

use vcontap_wire::Timestamp;

use crate::codec::{CodecError, VoiceEncoder};
use crate::config::Codec;
use crate::rng::Rng;
use crate::scenario::{DtmfGrid, DTMF_END_PACKETS};

/// Dynamic payload type used for telephone-event.
pub const TELEPHONE_EVENT_PT: u8 = 101;
/// Volume field of the DTMF events (-10 dBm0).
pub const DTMF_VOLUME: u8 = 10;
/// Largest arrival jitter added to RTP packets, in microseconds (kept below the smallest
/// ptime so a stream's packets never reorder).
pub const MAX_JITTER_US: u64 = 2000;

/// Fixed RTP header fields of one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader {
    /// Marker bit.
    pub marker: bool,
    /// Payload type (7 bits).
    pub payload_type: u8,
    /// Sequence number.
    pub seq: u16,
    /// RTP timestamp.
    pub timestamp: u32,
    /// Synchronization source.
    pub ssrc: u32,
}

/// Appends a 12-byte RTP header (version 2, no padding, extension or CSRCs).
pub fn write_rtp_header(out: &mut Vec<u8>, h: &RtpHeader) {
    out.push(0x80);
    out.push((u8::from(h.marker) << 7) | (h.payload_type & 0x7F));
    out.extend_from_slice(&h.seq.to_be_bytes());
    out.extend_from_slice(&h.timestamp.to_be_bytes());
    out.extend_from_slice(&h.ssrc.to_be_bytes());
}

/// Appends an RFC 4733 event payload: event code, E bit, volume, duration.
pub fn write_dtmf_event(out: &mut Vec<u8>, event: u8, end: bool, volume: u8, duration: u16) {
    out.push(event);
    out.push((u8::from(end) << 7) | (volume & 0x3F));
    out.extend_from_slice(&duration.to_be_bytes());
}

/// Static description of one RTP direction.
#[derive(Debug, Clone)]
pub(crate) struct StreamSpec {
    /// Codec of the voice packets.
    pub codec: Codec,
    /// Tone frequency.
    pub tone_hz: f64,
    /// SSRC.
    pub ssrc: u32,
    /// Nominal time of slot 0.
    pub start: Timestamp,
    /// Number of slots.
    pub slots: u32,
    /// Packetization time in ms.
    pub ptime_ms: u32,
    /// (first slot, event code) of each DTMF digit, ascending.
    pub dtmf: Vec<(u32, u8)>,
    /// DTMF slot layout.
    pub grid: DtmfGrid,
    /// Slots whose nominal time falls in `[from, to)` are not sent (held stream).
    pub pause: Option<(Timestamp, Timestamp)>,
}

/// One RTP direction being generated.
#[derive(Debug)]
pub(crate) struct RtpStream {
    spec: StreamSpec,
    encoder: VoiceEncoder,
    /// RTP timestamp units per slot.
    clock_per_slot: u32,
    /// Audio samples per slot at the encoder rate.
    audio_per_slot: usize,
    seq: u16,
    ts0: u32,
    marker: bool,
    next_slot: u32,
    next_at: Option<Timestamp>,
    dtmf_idx: usize,
    jitter: Rng,
}

impl RtpStream {
    /// A stream with random initial sequence number and timestamp drawn from `rng`.
    pub(crate) fn new(spec: StreamSpec, rng: &mut Rng) -> Result<Self, CodecError> {
        let encoder = VoiceEncoder::new(spec.codec, spec.tone_hz)?;
        let clock_per_slot = spec.codec.clock_rate() / 1000 * spec.ptime_ms;
        let audio_per_slot = (spec.codec.sample_rate() / 1000 * spec.ptime_ms) as usize;
        // RFC 3550: initial sequence number and timestamp are random.
        let seq = (rng.next_u32() >> 16) as u16;
        let ts0 = rng.next_u32();
        let jitter = Rng::new(rng.next_u64());
        let mut s = RtpStream {
            spec,
            encoder,
            clock_per_slot,
            audio_per_slot,
            seq,
            ts0,
            marker: true,
            next_slot: 0,
            next_at: None,
            dtmf_idx: 0,
            jitter,
        };
        s.seek();
        Ok(s)
    }

    /// Capture time of the next packet, `None` when the stream is over.
    pub(crate) fn peek(&self) -> Option<Timestamp> {
        self.next_at
    }

    fn slot_time(&self, slot: u32) -> Timestamp {
        let offset = i64::from(slot).saturating_mul(i64::from(self.spec.ptime_ms) * 1_000_000);
        Timestamp(self.spec.start.0.saturating_add(offset))
    }

    /// Finds the next slot to send from `next_slot` on (skipping the pause) and draws its jitter.
    fn seek(&mut self) {
        while self.next_slot < self.spec.slots {
            let t = self.slot_time(self.next_slot);
            match self.spec.pause {
                Some((from, to)) if t >= from && t < to => {
                    self.marker = true; // First packet after the pause starts a talkspurt.
                    self.next_slot += 1;
                }
                _ => {
                    let j = i64::try_from(self.jitter.below(MAX_JITTER_US)).unwrap_or(0) * 1000;
                    self.next_at = Some(Timestamp(t.0.saturating_add(j)));
                    return;
                }
            }
        }
        self.next_at = None;
    }

    /// Writes the next packet's RTP bytes into `out` (cleared first) and advances. Returns
    /// its capture time, or `None` when the stream is over.
    pub(crate) fn emit(&mut self, out: &mut Vec<u8>) -> Result<Option<Timestamp>, CodecError> {
        let Some(at) = self.next_at else {
            return Ok(None);
        };
        out.clear();
        let slot = self.next_slot;
        let grid = self.spec.grid;
        let per_digit = grid.on_slots + DTMF_END_PACKETS;
        while let Some(&(first, _)) = self.spec.dtmf.get(self.dtmf_idx) {
            if slot >= first.saturating_add(per_digit) {
                self.dtmf_idx += 1;
            } else {
                break;
            }
        }
        let event = self
            .spec
            .dtmf
            .get(self.dtmf_idx)
            .copied()
            .filter(|&(first, _)| slot >= first);
        let clock = self.clock_per_slot;
        if let Some((first, code)) = event {
            let j = slot - first;
            let (end, slots_on) = if j < grid.on_slots {
                (false, j + 1)
            } else {
                (true, grid.on_slots)
            };
            let duration = u16::try_from(slots_on.saturating_mul(clock)).unwrap_or(u16::MAX);
            let header = RtpHeader {
                marker: j == 0,
                payload_type: TELEPHONE_EVENT_PT,
                seq: self.seq,
                timestamp: self.ts0.wrapping_add(first.wrapping_mul(clock)),
                ssrc: self.spec.ssrc,
            };
            write_rtp_header(out, &header);
            write_dtmf_event(out, code, end, DTMF_VOLUME, duration);
        } else {
            let header = RtpHeader {
                marker: self.marker,
                payload_type: self.spec.codec.payload_type(),
                seq: self.seq,
                timestamp: self.ts0.wrapping_add(slot.wrapping_mul(clock)),
                ssrc: self.spec.ssrc,
            };
            write_rtp_header(out, &header);
            let pos = u64::from(slot) * self.audio_per_slot as u64;
            self.encoder.encode(pos, self.audio_per_slot, out)?;
            self.marker = false;
        }
        self.seq = self.seq.wrapping_add(1);
        self.next_slot += 1;
        self.seek();
        Ok(Some(at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dtmf: Vec<(u32, u8)>, pause: Option<(Timestamp, Timestamp)>) -> StreamSpec {
        StreamSpec {
            codec: Codec::Pcmu,
            tone_hz: 450.0,
            ssrc: 0x1234_5678,
            start: Timestamp(1_000_000_000),
            slots: 100,
            ptime_ms: 20,
            dtmf,
            grid: DtmfGrid::new(20),
            pause,
        }
    }

    fn drain(mut s: RtpStream) -> Vec<(Timestamp, Vec<u8>)> {
        let mut v = Vec::new();
        let mut buf = Vec::new();
        while let Some(t) = s.emit(&mut buf).unwrap() {
            v.push((t, buf.clone()));
        }
        v
    }

    #[test]
    fn voice_stream_layout() {
        let pkts = drain(RtpStream::new(spec(vec![], None), &mut Rng::new(1)).unwrap());
        assert_eq!(pkts.len(), 100);
        assert_eq!(pkts[0].1.len(), 12 + 160);
        assert_eq!(pkts[0].1[1], 0x80, "marker on first packet, PT 0");
        assert_eq!(pkts[1].1[1], 0x00);
        for w in pkts.windows(2) {
            assert!(w[0].0 < w[1].0);
            let s0 = u16::from_be_bytes([w[0].1[2], w[0].1[3]]);
            let s1 = u16::from_be_bytes([w[1].1[2], w[1].1[3]]);
            assert_eq!(s1, s0.wrapping_add(1));
            let t0 = u32::from_be_bytes(w[0].1[4..8].try_into().unwrap());
            let t1 = u32::from_be_bytes(w[1].1[4..8].try_into().unwrap());
            assert_eq!(t1.wrapping_sub(t0), 160);
            let gap = w[1].0 .0 - w[0].0 .0;
            assert!((18_000_000..=22_000_000).contains(&gap), "gap {gap}");
        }
    }

    #[test]
    fn dtmf_replaces_voice_slots() {
        let pkts =
            drain(RtpStream::new(spec(vec![(50, 5), (60, 11)], None), &mut Rng::new(2)).unwrap());
        assert_eq!(pkts.len(), 100);
        let events: Vec<&Vec<u8>> = pkts
            .iter()
            .map(|p| &p.1)
            .filter(|p| p[1] & 0x7F == 101)
            .collect();
        assert_eq!(events.len(), 16);
        let first = events[0];
        assert_eq!(first[1], 0x80 | 101, "marker on the first event packet");
        assert_eq!(&first[12..16], &[5, 10, 0, 160]);
        let ts_first = &first[4..8];
        for e in &events[..8] {
            assert_eq!(&e[4..8], ts_first, "one RTP timestamp per event");
        }
        let ends: Vec<_> = events[..8].iter().filter(|e| e[13] & 0x80 != 0).collect();
        assert_eq!(ends.len(), 3);
        assert!(ends
            .iter()
            .all(|e| u16::from_be_bytes([e[14], e[15]]) == 800));
        assert_eq!(events[8][12], 11);
        // Voice slot 50's timestamp is the event's timestamp.
        let voice49 = u32::from_be_bytes(pkts[49].1[4..8].try_into().unwrap());
        let ev = u32::from_be_bytes(first[4..8].try_into().unwrap());
        assert_eq!(ev.wrapping_sub(voice49), 160);
    }

    #[test]
    fn pause_skips_and_marks() {
        let from = Timestamp(1_000_000_000 + 20 * 20_000_000);
        let to = Timestamp(1_000_000_000 + 40 * 20_000_000);
        let pkts = drain(RtpStream::new(spec(vec![], Some((from, to))), &mut Rng::new(3)).unwrap());
        assert_eq!(pkts.len(), 80);
        assert_eq!(pkts[20].1[1] & 0x80, 0x80, "marker after resume");
        let s19 = u16::from_be_bytes([pkts[19].1[2], pkts[19].1[3]]);
        let s20 = u16::from_be_bytes([pkts[20].1[2], pkts[20].1[3]]);
        assert_eq!(
            s20,
            s19.wrapping_add(1),
            "sequence continues across the pause"
        );
    }

    #[test]
    fn builders() {
        let mut out = Vec::new();
        let h = RtpHeader {
            marker: true,
            payload_type: 0xFF,
            seq: 0xABCD,
            timestamp: 1,
            ssrc: 2,
        };
        write_rtp_header(&mut out, &h);
        assert_eq!(out, [0x80, 0xFF, 0xAB, 0xCD, 0, 0, 0, 1, 0, 0, 0, 2]);
        out.clear();
        write_dtmf_event(&mut out, 11, true, 0xFF, 0x1234);
        assert_eq!(out, [11, 0xBF, 0x12, 0x34]);
    }
}
