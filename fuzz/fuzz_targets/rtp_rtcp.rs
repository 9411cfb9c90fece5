//! Fuzzes the media parsers and decoders: RTP/RTCP parsing, RFC 4733 events through the
//! DTMF detector, every available audio decoder on the RTP payload, stream statistics
//! and the stereo mixer. Nothing here may panic on any input.
#![no_main]

use vcontap_media::{
    new_decoder, parse_dtmf_event, parse_rtcp, parse_rtp, CodecKind, DtmfDetector, StereoMixer,
    StreamStats,
};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = vcontap_media::looks_like_rtp(data);
    let _ = vcontap_media::looks_like_rtcp(data);
    let _ = vcontap_media::looks_like_stun(data);
    let _ = vcontap_media::is_muxed_rtcp(data);
    let _ = vcontap_media::plausible_rtp(data);
    let _ = parse_rtcp(data);

    // Treat the input as a train of length-prefixed datagrams for the stateful parts.
    let mut stats = StreamStats::new(8000);
    let mut dtmf = DtmfDetector::new();
    let mut edges = Vec::new();
    let mut mixer = StereoMixer::new(16_000, 0, 60);
    let mut pcm = Vec::new();
    let mut out = Vec::new();
    let mut decoders: Vec<_> = [
        CodecKind::Pcmu,
        CodecKind::Pcma,
        CodecKind::G722,
        CodecKind::Opus,
    ]
    .into_iter()
    .filter_map(new_decoder)
    .collect();

    let mut rest = data;
    let mut now: i64 = 0;
    while let Some((&len, tail)) = rest.split_first() {
        let (pkt, tail) = tail.split_at(usize::from(len).min(tail.len()));
        rest = tail;
        now = now.wrapping_add(i64::from(len) * 1_000_000);
        let _ = parse_rtcp(pkt);
        if let Some(ev) = parse_dtmf_event(pkt) {
            dtmf.push(u32::from(len), &ev, &mut edges);
        }
        let Ok(rtp) = parse_rtp(pkt) else { continue };
        stats.update(rtp.seq, rtp.ts, now, rtp.payload.len());
        if rtp.pt == 101 {
            stats.update_event(rtp.seq, rtp.ts, now, rtp.payload.len(), rtp.marker);
            if let Some(ev) = parse_dtmf_event(rtp.payload) {
                dtmf.push(rtp.ts, &ev, &mut edges);
            }
        }
        let d = usize::from(rtp.pt) % decoders.len().max(1);
        if let Some(dec) = decoders.get_mut(d) {
            pcm.clear();
            if dec.decode(rtp.payload, &mut pcm).is_ok() {
                let rate = dec.sample_rate();
                let ch = usize::from(rtp.marker);
                mixer.push(ch, rtp.ssrc, now, rtp.ts, 8000, &pcm, rate);
            }
        }
        mixer.drain(now, &mut out);
        out.clear();
    }
    mixer.finish(now, &mut out);
    let _ = (stats.lost(), stats.jitter_ms(), edges.len());
});
