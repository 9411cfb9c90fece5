//! Stereo timeline mixer: places the decoded audio of two parties (channel 0 = caller =
//! left, channel 1 = callee = right) on a common arrival-time timeline and streams
//! interleaved stereo frames out.
//!
//! Owns: anchoring each channel's RTP timestamps to arrival time, a bounded per-channel
//! jitter buffer (a `VecDeque<i16>` whose index 0 is the shared `base` frame), simple
//! integer-ratio resampling, and releasing frames once they are older than the jitter
//! window. Gaps are silence. Memory per channel never exceeds jitter window +
//! [`MAX_AHEAD_MS`] of audio; everything else is dropped and counted.
//!
//! Placement: the first packet of a channel anchors `(arrival frame, rtp_ts)`; later
//! packets go at `anchor_frame + (ts - anchor_ts) * rate / clock_rate`, with the RTP
//! timestamp extended by summing wrapping i32 steps (so wrap-around is seamless and small
//! backwards steps place earlier). If that lands more than [`RESYNC_MS`] away from where
//! the arrival time says, or the anchor key (SSRC) or clock rate changes, the channel
//! re-anchors on arrival.

use std::collections::VecDeque;

/// A packet whose RTP-derived position is further than this from its arrival-derived
/// position re-anchors the channel: a timestamp jump, an unsignalled SSRC change or clock
/// drift. Large enough that normal network jitter never triggers it.
pub const RESYNC_MS: u32 = 1000;

/// How far beyond the release point (the jitter window) a channel may buffer audio. Must
/// exceed `RESYNC_MS` so anything placed within the resync tolerance of its arrival fits.
pub const MAX_AHEAD_MS: u32 = 2000;

/// Jitter windows are clamped to this, bounding the buffer of a misconfigured mixer.
pub const MAX_JITTER_WINDOW_MS: u32 = 10_000;

/// Output rates are clamped to 1..=this (the engine uses 8/16/48 kHz) so frame arithmetic
/// and buffer sizes stay bounded.
pub const MAX_RATE: u32 = 192_000;

/// A single release emits at most this much silence beyond the buffered audio; longer
/// stretches with no audio in either channel (hostile or broken capture timestamps) are
/// skipped and counted instead of materialising gigabytes of zeros.
pub const MAX_SILENCE_GAP_MS: u32 = 600_000;

const NANOS_PER_SEC: i64 = 1_000_000_000;

#[derive(Debug, Clone, Copy)]
struct Anchor {
    key: u32,
    clock_rate: u32,
    /// Output frame of the anchoring packet.
    frame: i64,
    /// Last RTP timestamp seen and its extended value (anchor packet = 0).
    last_ts: u32,
    last_ext: i64,
}

#[derive(Debug, Clone, Default)]
struct Channel {
    /// Samples for frames `base..base + buf.len()`.
    buf: VecDeque<i16>,
    anchor: Option<Anchor>,
    /// One past the last frame ever written.
    end_frame: i64,
}

/// Two-channel jitter-buffered timeline mixer producing interleaved L/R i16 frames.
#[derive(Debug, Clone)]
pub struct StereoMixer {
    rate: u32,
    start: i64,
    window_frames: i64,
    /// Buffer bound per channel: window + MAX_AHEAD_MS.
    cap_frames: i64,
    resync_frames: i64,
    max_gap_frames: i64,
    /// Next frame to release; index 0 of every channel buffer.
    base: i64,
    chans: [Channel; 2],
    /// Resampling scratch, reused so pushes don't allocate.
    scratch: Vec<i16>,
    frames_released: u64,
    late_dropped: u64,
    overflow_dropped: u64,
    frames_skipped: u64,
    resyncs: u64,
    closed: bool,
}

/// Frames at `rate` in `ns` nanoseconds (floor), without overflow for any input.
fn ns_to_frames(ns: i64, rate: u32) -> i64 {
    let r = i64::from(rate);
    ns.div_euclid(NANOS_PER_SEC)
        .saturating_mul(r)
        .saturating_add(ns.rem_euclid(NANOS_PER_SEC) * r / NANOS_PER_SEC)
}

fn ms_to_frames(ms: u32, rate: u32) -> i64 {
    i64::from(ms) * i64::from(rate) / 1000
}

/// Resamples `pcm` from `from` Hz to `to` Hz into `out` (cleared first). Integer ratios
/// use linear interpolation (up) or block averaging (down); other ratios use fractional
/// linear interpolation. Good enough for speech recordings; not a studio resampler.
fn resample(pcm: &[i16], from: u32, to: u32, out: &mut Vec<i16>) {
    out.clear();
    if from == 0 || to == 0 || pcm.is_empty() {
        return;
    }
    if to.is_multiple_of(from) {
        let k = (to / from) as usize;
        out.reserve(pcm.len() * k);
        let k32 = k as i32;
        let next = pcm.iter().skip(1).chain(pcm.last());
        for (&a, &b) in pcm.iter().zip(next) {
            let (a, d) = (i32::from(a), i32::from(b) - i32::from(a));
            out.extend((0..k32).map(|j| (a + d * j / k32) as i16));
        }
    } else if from.is_multiple_of(to) {
        let k = (from / to) as usize;
        out.reserve(pcm.len() / k);
        out.extend(
            pcm.chunks_exact(k)
                .map(|c| (c.iter().map(|&s| i64::from(s)).sum::<i64>() / k as i64) as i16),
        );
    } else {
        let n = (pcm.len() as u64 * u64::from(to) / u64::from(from)) as usize;
        out.reserve(n);
        let (from, to) = (u64::from(from), u64::from(to));
        out.extend((0..n as u64).map(|i| {
            let src = i * from;
            let idx = (src / to) as usize;
            let frac = (src % to) as i64;
            let a = i64::from(pcm.get(idx).copied().unwrap_or(0));
            let b = i64::from(pcm.get(idx + 1).copied().unwrap_or(a as i16));
            (a + (b - a) * frac / to as i64) as i16
        }));
    }
}

/// Copies `src` into `buf[off..off + src.len()]` (the range must exist).
fn copy_into(buf: &mut VecDeque<i16>, off: usize, src: &[i16]) {
    let (a, b) = buf.as_mut_slices();
    let in_a = a.len().saturating_sub(off).min(src.len());
    let (src_a, src_b) = src.split_at(in_a);
    if let Some(dst) = a.get_mut(off..off + in_a) {
        dst.copy_from_slice(src_a);
    }
    let b_off = off.saturating_sub(a.len());
    if let Some(dst) = b.get_mut(b_off..b_off + src_b.len()) {
        dst.copy_from_slice(src_b);
    }
}

impl StereoMixer {
    /// `rate`: output sample rate (8000, 16000 or 48000). `start`: arrival time (ns) of
    /// output frame 0. `jitter_window_ms`: how long samples stay editable before they are
    /// released (late packets inside the window are placed correctly; later ones are
    /// dropped and counted).
    pub fn new(rate: u32, start: i64, jitter_window_ms: u32) -> Self {
        let rate = rate.clamp(1, MAX_RATE);
        let window_frames = ms_to_frames(jitter_window_ms.min(MAX_JITTER_WINDOW_MS), rate);
        Self {
            rate,
            start,
            window_frames,
            cap_frames: window_frames + ms_to_frames(MAX_AHEAD_MS, rate),
            resync_frames: ms_to_frames(RESYNC_MS, rate),
            max_gap_frames: ms_to_frames(MAX_SILENCE_GAP_MS, rate),
            base: 0,
            chans: [Channel::default(), Channel::default()],
            scratch: Vec::new(),
            frames_released: 0,
            late_dropped: 0,
            overflow_dropped: 0,
            frames_skipped: 0,
            resyncs: 0,
            closed: false,
        }
    }

    fn frame_at(&self, t: i64) -> i64 {
        ns_to_frames(t.saturating_sub(self.start), self.rate)
    }

    /// Places PCM (at `pcm_rate`, resampled to the output rate if different) for `channel`
    /// (0 or 1; others are ignored), from a packet that arrived at `arrival` with RTP
    /// timestamp `rtp_ts` in a `clock_rate` Hz clock. `anchor_key` (e.g. the SSRC)
    /// changing re-anchors the channel. Overlapping samples overwrite earlier ones.
    /// Ignored after [`finish`](Self::finish), or when `pcm_rate` is 0. A `clock_rate` of
    /// 0 places every packet by its arrival time.
    // The engine's call site passes exactly these per-packet facts; a struct would add a
    // copy per packet on the hot path for no clarity gain.
    #[allow(clippy::too_many_arguments)]
    pub fn push(
        &mut self,
        channel: usize,
        anchor_key: u32,
        arrival: i64,
        rtp_ts: u32,
        clock_rate: u32,
        pcm: &[i16],
        pcm_rate: u32,
    ) {
        if self.closed || pcm.is_empty() || pcm_rate == 0 || channel >= self.chans.len() {
            return;
        }
        let arr_frame = self.frame_at(arrival);
        let rate = i64::from(self.rate);
        let Some(ch) = self.chans.get_mut(channel) else {
            return;
        };

        let placed = match ch.anchor.as_mut() {
            Some(a) if a.key == anchor_key && a.clock_rate == clock_rate && clock_rate != 0 => {
                let ext = a
                    .last_ext
                    .saturating_add(i64::from(rtp_ts.wrapping_sub(a.last_ts) as i32));
                a.last_ts = rtp_ts;
                a.last_ext = ext;
                let pos = a
                    .frame
                    .saturating_add(ext.saturating_mul(rate).div_euclid(i64::from(clock_rate)));
                (pos.saturating_sub(arr_frame).saturating_abs() <= self.resync_frames)
                    .then_some(pos)
            }
            _ => None,
        };
        let pos = match placed {
            Some(pos) => pos,
            None => {
                if ch.anchor.is_some() {
                    self.resyncs += 1;
                }
                ch.anchor = Some(Anchor {
                    key: anchor_key,
                    clock_rate,
                    frame: arr_frame,
                    last_ts: rtp_ts,
                    last_ext: 0,
                });
                arr_frame
            }
        };

        // Bound the input so resampling work and scratch size never exceed the buffer.
        let max_in = (self.cap_frames as u64)
            .saturating_mul(u64::from(pcm_rate))
            .checked_div(u64::from(self.rate))
            .unwrap_or(0)
            .saturating_add(2);
        let pcm = pcm.get(..pcm.len().min(max_in as usize)).unwrap_or(pcm);
        let samples: &[i16] = if pcm_rate == self.rate {
            pcm
        } else {
            resample(pcm, pcm_rate, self.rate, &mut self.scratch);
            &self.scratch
        };

        // Clip against the release point (late) and the buffer bound (too far ahead).
        let mut src = samples;
        let mut first = pos;
        if first < self.base {
            let skip = self.base.saturating_sub(first);
            self.late_dropped += 1;
            if skip >= src.len() as i64 {
                return;
            }
            src = src.get(skip as usize..).unwrap_or(&[]);
            first = self.base;
        }
        let off = first - self.base;
        let room = self.cap_frames - off;
        if room <= 0 {
            self.overflow_dropped += 1;
            return;
        }
        if src.len() as i64 > room {
            src = src.get(..room as usize).unwrap_or(&[]);
            self.overflow_dropped += 1;
        }
        let off = off as usize;
        let end = off + src.len();
        if ch.buf.len() < end {
            ch.buf.resize(end, 0);
        }
        copy_into(&mut ch.buf, off, src);
        ch.end_frame = ch.end_frame.max(first + src.len() as i64);
    }

    /// Releases all frames older than `now - jitter_window` as interleaved L/R i16 (gaps
    /// are zeros = silence), appending to `out`. Returns frames released.
    pub fn drain(&mut self, now: i64, out: &mut Vec<i16>) -> usize {
        if self.closed {
            return 0;
        }
        let target = self.frame_at(now).saturating_sub(self.window_frames);
        self.release_to(target, out)
    }

    /// Releases everything up to `end` (arrival time, ns; at least up to the last placed
    /// sample) and closes the mixer. Returns frames released.
    pub fn finish(&mut self, end: i64, out: &mut Vec<i16>) -> usize {
        if self.closed {
            return 0;
        }
        let last = self.chans.iter().map(|c| c.end_frame).max().unwrap_or(0);
        let target = self.frame_at(end).max(last);
        let n = self.release_to(target, out);
        self.closed = true;
        n
    }

    fn release_to(&mut self, target: i64, out: &mut Vec<i16>) -> usize {
        if target <= self.base {
            return 0;
        }
        let mut n = target.saturating_sub(self.base);
        let buffered = self.chans.iter().map(|c| c.buf.len()).max().unwrap_or(0) as i64;
        let limit = buffered + self.max_gap_frames;
        if n > limit {
            self.frames_skipped = self.frames_skipped.saturating_add((n - limit) as u64);
            n = limit;
        }
        let n = n as usize;
        // Interleave with plain slice loops over the deques' two halves: the iterator
        // chain this replaces was a quarter of all CPU time when recording.
        let start = out.len();
        out.resize(start + n * 2, 0);
        let dst = out.get_mut(start..).unwrap_or_default();
        for (ch, c) in self.chans.iter_mut().enumerate() {
            let k = c.buf.len().min(n);
            let (a, b) = c.buf.as_slices();
            let a = a.get(..k).unwrap_or(a);
            let b = b.get(..k - a.len()).unwrap_or(b);
            let Some((head, tail)) = dst.split_at_mut_checked(a.len() * 2) else {
                continue;
            };
            for (frame, s) in head.chunks_exact_mut(2).zip(a) {
                if let Some(d) = frame.get_mut(ch) {
                    *d = *s;
                }
            }
            for (frame, s) in tail.chunks_exact_mut(2).zip(b) {
                if let Some(d) = frame.get_mut(ch) {
                    *d = *s;
                }
            }
            c.buf.drain(..k);
        }
        self.base = target;
        self.frames_released += n as u64;
        n
    }

    /// Frames released so far (excluding skipped silence).
    pub fn frames_released(&self) -> u64 {
        self.frames_released
    }
    /// Packets that arrived (wholly or partly) behind the release point: their late
    /// samples were dropped.
    pub fn late_dropped(&self) -> u64 {
        self.late_dropped
    }
    /// Times a channel re-anchored after its first packet (timestamp jump, SSRC or clock
    /// change, drift beyond [`RESYNC_MS`]).
    pub fn resyncs(&self) -> u64 {
        self.resyncs
    }
    /// Output sample rate.
    pub fn rate(&self) -> u32 {
        self.rate
    }
    /// Packets (wholly or partly) dropped because they lay beyond the buffer bound, i.e.
    /// `drain` was not called for longer than [`MAX_AHEAD_MS`].
    pub fn overflow_dropped(&self) -> u64 {
        self.overflow_dropped
    }
    /// Silent frames skipped rather than released (gaps over [`MAX_SILENCE_GAP_MS`]).
    pub fn frames_skipped(&self) -> u64 {
        self.frames_skipped
    }
    /// Frames currently buffered for `channel` (0 for an unknown channel).
    pub fn buffered_frames(&self, channel: usize) -> usize {
        self.chans.get(channel).map_or(0, |c| c.buf.len())
    }
    /// Upper bound of [`buffered_frames`](Self::buffered_frames): jitter window +
    /// [`MAX_AHEAD_MS`].
    pub fn capacity_frames(&self) -> usize {
        self.cap_frames as usize
    }
    #[cfg(test)]
    fn allocated_frames(&self, channel: usize) -> usize {
        self.chans.get(channel).map_or(0, |c| c.buf.capacity())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::test_util::{dominant_freq, goertzel, rms, tone};

    const MS: i64 = 1_000_000;
    const T0: i64 = 1_700_000_000 * 1_000 * MS;

    fn split(st: &[i16]) -> (Vec<i16>, Vec<i16>) {
        (
            st.iter().step_by(2).copied().collect(),
            st.iter().skip(1).step_by(2).copied().collect(),
        )
    }

    #[test]
    fn tones_land_in_their_channels() {
        let mut m = StereoMixer::new(8000, T0, 100);
        let a = tone(440.0, 8000, 8000, 8000.0);
        let b = tone(1000.0, 8000, 8000, 8000.0);
        let mut out = Vec::new();
        for (i, (ca, cb)) in a.chunks(160).zip(b.chunks(160)).enumerate() {
            let t = T0 + i as i64 * 20 * MS;
            m.push(0, 1, t + 3 * MS, 5000 + i as u32 * 160, 8000, ca, 8000);
            m.push(1, 2, t + 7 * MS, 90 + i as u32 * 160, 8000, cb, 8000);
            m.drain(t, &mut out);
        }
        m.finish(T0 + 1000 * MS, &mut out);
        let (l, r) = split(&out);
        assert_eq!(l.len() as u64, m.frames_released());
        assert!((dominant_freq(&l[100..7900], 8000) - 440.0).abs() < 5.0);
        assert!((dominant_freq(&r[100..7900], 8000) - 1000.0).abs() < 5.0);
        assert!(goertzel(&l, 8000, 440.0) > 100.0 * goertzel(&l, 8000, 1000.0));
        assert!(goertzel(&r, 8000, 1000.0) > 100.0 * goertzel(&r, 8000, 440.0));
        // Channel 0 starts 3 ms (24 frames) in, channel 1 at 7 ms (56 frames).
        assert!(l[..24].iter().all(|&s| s == 0) && r[..56].iter().all(|&s| s == 0));
        assert_eq!(
            l[24..].iter().take(160).copied().collect::<Vec<_>>(),
            a[..160].to_vec()
        );
        assert_eq!((m.late_dropped(), m.resyncs()), (0, 0));
    }

    #[test]
    fn gap_is_silence_of_the_right_length() {
        let mut m = StereoMixer::new(8000, T0, 60);
        let pkt = [1000i16; 160];
        let mut out = Vec::new();
        for i in (0..20u32).filter(|i| !(8..13).contains(i)) {
            let t = T0 + i64::from(i) * 20 * MS;
            m.push(0, 7, t, i * 160, 8000, &pkt, 8000);
            m.drain(t, &mut out);
        }
        m.finish(0, &mut out);
        let (l, r) = split(&out);
        assert_eq!(l.len(), 20 * 160);
        assert!(l[..8 * 160].iter().all(|&s| s == 1000));
        assert!(l[8 * 160..13 * 160].iter().all(|&s| s == 0));
        assert!(l[13 * 160..].iter().all(|&s| s == 1000));
        assert!(r.iter().all(|&s| s == 0));
    }

    fn run_order(order: &[u32]) -> Vec<i16> {
        let mut m = StereoMixer::new(8000, T0, 100);
        let mut out = Vec::new();
        for (k, &i) in order.iter().enumerate() {
            let t = T0 + k as i64 * 20 * MS;
            let pcm = [(i as i16 + 1) * 100; 160];
            m.push(1, 3, t, 320 + i * 160, 8000, &pcm, 8000);
            m.drain(t, &mut out);
        }
        assert_eq!(m.late_dropped(), 0);
        m.finish(0, &mut out);
        out
    }

    #[test]
    fn reordered_packets_are_placed_correctly() {
        let in_order = run_order(&[0, 1, 2, 3, 4, 5]);
        let shuffled = run_order(&[0, 2, 1, 3, 5, 4]);
        let (_, r) = split(&in_order);
        // The anchor is packet 0; later ones sit by timestamp.
        assert_eq!(r.len(), 6 * 160);
        assert!(r
            .chunks(160)
            .enumerate()
            .all(|(i, c)| c.iter().all(|&s| s == (i as i16 + 1) * 100)));
        assert_eq!(in_order, shuffled);
    }

    #[test]
    fn late_packet_beyond_window_is_dropped() {
        let mut m = StereoMixer::new(8000, T0, 60);
        let mut out = Vec::new();
        for i in 0..20u32 {
            let t = T0 + i64::from(i) * 20 * MS;
            m.push(0, 1, t, i * 160, 8000, &[500; 160], 8000);
            m.drain(t, &mut out);
        }
        let before = out.len();
        // Packet 5 again (100 ms of media old) arriving now: far behind the 60 ms window.
        m.push(0, 1, T0 + 400 * MS, 5 * 160, 8000, &[-1; 160], 8000);
        assert_eq!(m.late_dropped(), 1);
        // A packet only 40 ms late is still inside the window and overwrites in place.
        m.push(0, 1, T0 + 400 * MS, 17 * 160, 8000, &[-2; 160], 8000);
        assert_eq!(m.late_dropped(), 1);
        m.finish(0, &mut out);
        let (l, _) = split(&out);
        assert!(!l.contains(&-1));
        assert_eq!(l.iter().filter(|&&s| s == -2).count(), 160);
        assert_eq!(&l[17 * 160..18 * 160], &[-2; 160][..]);
        assert!(before > 0);
    }

    #[test]
    fn narrowband_into_wideband_mixer() {
        let mut m = StereoMixer::new(16_000, T0, 80);
        let src = tone(500.0, 8000, 8000, 6000.0);
        let mut out = Vec::new();
        for (i, c) in src.chunks(160).enumerate() {
            let t = T0 + i as i64 * 20 * MS;
            m.push(0, 1, t, i as u32 * 160, 8000, c, 8000);
            m.drain(t, &mut out);
        }
        m.finish(0, &mut out);
        let (l, _) = split(&out);
        assert_eq!(l.len(), 16_000);
        assert!((dominant_freq(&l, 16_000) - 500.0).abs() < 5.0);
        assert!((rms(&l) / rms(&src) - 1.0).abs() < 0.05);
        // G.722 style: 8 kHz RTP clock, 16 kHz PCM, 16 kHz output.
        let mut m = StereoMixer::new(16_000, T0, 80);
        m.push(1, 1, T0, 0, 8000, &[9; 320], 16_000);
        m.push(1, 1, T0 + 20 * MS, 160, 8000, &[9; 320], 16_000);
        out.clear();
        assert_eq!(m.finish(0, &mut out), 640);
        assert!(split(&out).1.iter().all(|&s| s == 9));
        // And 48 kHz down to 16 kHz.
        let mut m = StereoMixer::new(16_000, T0, 80);
        m.push(0, 1, T0, 0, 48_000, &[300; 960], 48_000);
        out.clear();
        assert_eq!(m.finish(0, &mut out), 320);
    }

    #[test]
    fn timestamp_jump_reanchors_on_arrival() {
        let mut m = StereoMixer::new(8000, T0, 60);
        let mut out = Vec::new();
        for i in 0..10u32 {
            let ts = if i < 5 { i * 160 } else { 3_000_000 + i * 160 };
            let t = T0 + i64::from(i) * 20 * MS;
            m.push(0, 1, t, ts, 8000, &[700; 160], 8000);
            m.drain(t, &mut out);
        }
        assert_eq!(m.resyncs(), 1);
        m.finish(0, &mut out);
        let (l, _) = split(&out);
        assert_eq!(l.len(), 1600);
        assert!(l.iter().all(|&s| s == 700));
        // A new SSRC re-anchors too, even with a plausible timestamp.
        m = StereoMixer::new(8000, T0, 60);
        m.push(0, 1, T0, 0, 8000, &[1; 160], 8000);
        m.push(0, 2, T0 + 20 * MS, 160, 8000, &[1; 160], 8000);
        assert_eq!(m.resyncs(), 1);
        // Timestamp wrap-around is seamless.
        m = StereoMixer::new(8000, T0, 60);
        m.push(0, 1, T0, u32::MAX - 159, 8000, &[1; 160], 8000);
        m.push(0, 1, T0 + 20 * MS, 0, 8000, &[2; 160], 8000);
        out.clear();
        m.finish(0, &mut out);
        assert_eq!(m.resyncs(), 0);
        assert_eq!(out.len(), 640);
    }

    #[test]
    fn memory_stays_bounded_for_ten_minutes() {
        let mut m = StereoMixer::new(8000, T0, 200);
        let mut out = Vec::new();
        let mut released = 0;
        let mut max_buf = 0;
        for i in 0..30_000u32 {
            // Jittery arrivals (0-39 ms late) and a drain every packet.
            let t = T0 + i64::from(i) * 20 * MS + i64::from(i * 7919 % 40) * MS;
            m.push(0, 1, t, i * 160, 8000, &[1; 160], 8000);
            m.push(1, 2, t, i * 160, 8000, &[2; 160], 8000);
            released += m.drain(t, &mut out);
            max_buf = max_buf.max(m.buffered_frames(0)).max(m.buffered_frames(1));
            out.clear();
        }
        assert!(max_buf <= 8000 * 300 / 1000, "buffered {max_buf}");
        assert!(m.allocated_frames(0) < 2 * m.capacity_frames());
        assert_eq!(m.late_dropped(), 0);
        released += m.finish(0, &mut out);
        assert_eq!(released, 30_000 * 160);

        // A caller that never drains: the buffer stops at its bound and drops the rest.
        let mut m = StereoMixer::new(8000, T0, 200);
        for i in 0..30_000u32 {
            m.push(
                0,
                1,
                T0 + i64::from(i) * 20 * MS,
                i * 160,
                8000,
                &[1; 160],
                8000,
            );
        }
        assert_eq!(m.buffered_frames(0), m.capacity_frames());
        assert!(m.allocated_frames(0) < 2 * m.capacity_frames());
        assert!(m.overflow_dropped() > 29_000);
    }

    #[test]
    fn hostile_inputs() {
        let mut m = StereoMixer::new(0, i64::MAX, u32::MAX);
        let mut out = Vec::new();
        m.push(2, 0, 0, 0, 8000, &[1; 10], 8000);
        m.push(0, 0, i64::MIN, 0, 0, &[1; 10], 8000);
        m.push(0, 0, i64::MAX, u32::MAX, u32::MAX, &[1; 10], 1);
        m.push(1, 0, 0, 0, 8000, &[1; 10], 0);
        m.push(1, 0, 5, 7, 3, &vec![1; 100_000], u32::MAX);
        m.drain(i64::MIN, &mut out);
        m.drain(i64::MAX, &mut out);
        assert!(out.len() <= 2 * (MAX_SILENCE_GAP_MS as usize + 100_000));

        let mut m = StereoMixer::new(48_000, 0, 100);
        out.clear();
        m.push(0, 1, 0, 0, 48_000, &[5; 960], 48_000);
        let n = m.drain(i64::MAX, &mut out);
        assert_eq!(n, 960 + 48 * MAX_SILENCE_GAP_MS as usize);
        assert!(m.frames_skipped() > 0);
        // finish also releases the jitter window that drain held back.
        assert_eq!(m.finish(i64::MAX, &mut Vec::new()), 4800);
        // Closed: pushes and drains are ignored.
        m.push(0, 1, 0, 0, 48_000, &[5; 960], 48_000);
        assert_eq!(m.drain(i64::MAX, &mut out), 0);
        assert_eq!(m.rate(), 48_000);
    }

    #[test]
    fn resample_shapes() {
        let mut o = Vec::new();
        resample(&[0, 100], 8000, 16_000, &mut o);
        assert_eq!(o, vec![0, 50, 100, 100]);
        resample(&[10, 20, 30, 40, 50, 60], 48_000, 16_000, &mut o);
        assert_eq!(o, vec![20, 50]);
        resample(&[0, 300, 600], 12_000, 8000, &mut o);
        assert_eq!(o, vec![0, 450]);
        resample(&[1], 0, 8000, &mut o);
        assert!(o.is_empty());
    }
}
