//! The media side of a call: RTCP summaries, RTP streams and their statistics, RFC 4733
//! DTMF, the primary stream per side, decoding and the recording segments (open, stream
//! audio out, cut, and the `recording` dialog once the driver stored the file).

use vcontap_media::{
    codec_kind, new_decoder, parse_dtmf_event, parse_rtcp, parse_rtp, CodecKind, DtmfEdge,
    RtcpPacket, SeqOutcome, StereoMixer,
};
use vcontap_sip::sdp;
use vcontap_vcon::{format_time, Dialog};
use vcontap_wire::{Datagram, Timestamp};

use super::*;

impl Call {
    /// RTCP from either side: SR counts per sending SSRC and the latest report block about
    /// each SSRC (what the *receiver* says about a stream, next to what the tap measured).
    pub(crate) fn handle_rtcp(&mut self, _sender: Side, d: &Datagram<'_>) {
        let Ok(pkts) = parse_rtcp(d.payload) else {
            return;
        };
        for p in pkts {
            let blocks = match &p {
                RtcpPacket::SenderReport(sr) => {
                    if let Some(e) = self.rtcp_entry(sr.ssrc) {
                        e.sender_reports += 1;
                    }
                    &sr.reports
                }
                RtcpPacket::ReceiverReport(rr) => &rr.reports,
                _ => continue,
            };
            for b in blocks {
                if let Some(e) = self.rtcp_entry(b.ssrc) {
                    e.reported = Some(*b);
                    e.reports += 1;
                }
            }
        }
    }

    fn rtcp_entry(&mut self, ssrc: u32) -> Option<&mut RtcpSummary> {
        let i = match self.rtcp.iter().position(|r| r.ssrc == ssrc) {
            Some(i) => i,
            None if self.rtcp.len() < MAX_RTCP_SSRCS => {
                self.rtcp.push(RtcpSummary {
                    ssrc,
                    sender_reports: 0,
                    reported: None,
                    reports: 0,
                });
                self.rtcp.len() - 1
            }
            None => return None,
        };
        self.rtcp.get_mut(i)
    }

    /// Resolves a payload type to (kind, clock rate, label). Payload types are those the
    /// *receiver* announced; fall back to the sender's SDP, then the RFC 3551 static table.
    /// `video` looks the payload type up among the video m-lines' formats instead.
    pub(super) fn resolve_codec(&self, sender: Side, pt: u8, video: bool) -> Codec {
        let recv = pick(&self.legs, sender.other());
        let send = pick(&self.legs, sender);
        fn lookup(leg: &Leg, pt: u8, video: bool) -> Option<(&str, u32)> {
            if video {
                leg.video_codec(pt)
            } else {
                leg.codec(pt)
            }
        }
        let (name, clock) = match lookup(recv, pt, video).or_else(|| lookup(send, pt, video)) {
            Some((n, r)) => (n.to_string(), r),
            None => match sdp::static_payload_type(pt) {
                Some((n, r, _)) => (n.to_string(), r),
                None => (format!("PT{pt}"), 0),
            },
        };
        Codec {
            pt,
            gen: self.legs_gen,
            kind: codec_kind(&name),
            clock,
            label: codec_label(&name, clock).into(),
            noted_in: None,
            encrypted_noted: false,
        }
    }

    /// Handles one RTP packet of a video m-line: statistics and codecs for the RTP report,
    /// nothing decoded or recorded. Returns the SSRC when it is new to the call.
    // Indexing is in bounds: `idx` comes from `position`/`push` on `streams` in this call
    // and streams are never removed while the call lives.
    #[allow(clippy::indexing_slicing)]
    pub(crate) fn handle_video_rtp(
        &mut self,
        sender: Side,
        d: &Datagram<'_>,
        now: Timestamp,
        stats: &mut EngineStats,
    ) -> Option<u32> {
        let p = parse_rtp(d.payload).ok()?;
        if self.finish_reason.is_some() {
            return None;
        }
        self.last_rtp = Some(now);
        let idx = match self
            .streams
            .iter()
            .position(|s| s.ssrc == p.ssrc && s.video && s.src == d.src && s.dst == d.dst)
        {
            Some(i) => i,
            None => {
                if self.streams.len() >= self.max_streams {
                    stats.streams_dropped += 1;
                    return None;
                }
                self.streams
                    .push(Stream::new(sender, true, p.ssrc, d.src, d.dst));
                self.streams.len() - 1
            }
        };
        let new = (idx + 1 == self.streams.len() && self.streams[idx].stats.packets() == 0)
            .then_some(p.ssrc);
        if !self.streams[idx].pts.contains(&p.pt) && self.streams[idx].pts.len() < 16 {
            let c = self.resolve_codec(sender, p.pt, true);
            let stream = &mut self.streams[idx];
            stream.pts.push(p.pt);
            stream.codecs.push(c.label.to_string());
            stream.kinds.push(c.kind);
            if c.clock != 0 {
                stream.stats.set_clock_rate(c.clock);
            }
        }
        self.streams[idx].stats.update_marked(
            p.seq,
            p.ts,
            now.nanos(),
            p.payload.len(),
            p.marker,
            false,
        );
        new
    }

    /// Handles one RTP packet from `sender`. Returns the SSRC when it is new to the call.
    ///
    /// This is the hot path (≈95% of all packets): no allocation unless the payload type,
    /// the SDP or the stream changes.
    // Indexing is in bounds: `idx` comes from `position`/`push` on `streams` in this call
    // and streams are never removed while the call lives; per-side pairs are indexed by
    // `Side` (discriminant 0 or 1).
    #[allow(clippy::indexing_slicing)]
    pub(crate) fn handle_rtp(
        &mut self,
        sender: Side,
        d: &Datagram<'_>,
        now: Timestamp,
        stats: &mut EngineStats,
    ) -> Option<u32> {
        let p = match parse_rtp(d.payload) {
            Ok(p) => p,
            Err(_) => {
                // ZRTP (RFC 6189) shares the media ports: version 0 and the "ZRTP" cookie.
                // After its handshake the media is SRTP.
                if d.payload.get(4..8) == Some(b"ZRTP".as_slice()) && self.finish_reason.is_none() {
                    self.mark_encrypted("ZRTP", now);
                }
                return None;
            }
        };
        if self.finish_reason.is_some() {
            return None;
        }
        self.last_rtp = Some(now);
        let mut new_ssrc = None;
        // A stream is an SSRC on one address pair (as tshark counts them): a relayed call
        // shows the same SSRC on both legs, which must not be merged into one set of counters.
        let hit =
            |s: &Stream| s.ssrc == p.ssrc && s.sender == sender && s.src == d.src && s.dst == d.dst;
        // Most packets belong to the stream this sender used last.
        let last = *pick(&self.last_stream, sender);
        let found = match self.streams.get(last) {
            Some(s) if hit(s) => Some(last),
            _ => self.streams.iter().position(hit),
        };
        let idx = match found {
            Some(i) => i,
            None => {
                if self.streams.len() >= self.max_streams {
                    stats.streams_dropped += 1;
                    return None;
                }
                self.streams
                    .push(Stream::new(sender, false, p.ssrc, d.src, d.dst));
                new_ssrc = Some(p.ssrc);
                self.streams.len() - 1
            }
        };
        if idx != last {
            self.note_ssrc_change(idx, now);
        }
        *pick_mut(&mut self.last_stream, sender) = idx;
        let cached = self.streams[idx]
            .codec
            .as_ref()
            .is_some_and(|c| c.pt == p.pt && c.gen == self.legs_gen);
        if !cached {
            if self.is_stray(p.pt) {
                // A payload type inside a known stream that no SDP offered (a sender's
                // stray packet, a probe): it takes its sequence number, but it is neither
                // decoded nor a codec change that would cut the recording.
                stats.rtp_stray_payload_type += 1;
                let stream = &mut self.streams[idx];
                stream.stray_pts += 1;
                stream
                    .stats
                    .update_event(p.seq, p.ts, now.nanos(), p.payload.len(), p.marker);
                return new_ssrc;
            }
            let c = self.resolve_codec(sender, p.pt, false);
            let stream = &mut self.streams[idx];
            if !stream.pts.contains(&p.pt) && stream.pts.len() < 16 {
                stream.pts.push(p.pt);
                stream.codecs.push(c.label.to_string());
                stream.kinds.push(c.kind);
            }
            stream.codec = Some(c);
        }
        let stream = &mut self.streams[idx];
        let (kind, clock) = match &stream.codec {
            Some(c) => (c.kind, c.clock),
            None => return new_ssrc,
        };
        if kind == CodecKind::TelephoneEvent {
            let ev = parse_dtmf_event(p.payload);
            // The final packet of an event is sent three times (RFC 4733 §2.5.1.4); senders
            // that repeat its sequence number too are retransmitting, not duplicating.
            if ev.is_some_and(|e| e.end) {
                if stream.last_event_end == Some((p.seq, p.ts)) {
                    return new_ssrc;
                }
                stream.last_event_end = Some((p.seq, p.ts));
            }
            // RFC 4733 events share the stream's sequence space but are no jitter samples.
            let outcome =
                stream
                    .stats
                    .update_event(p.seq, p.ts, now.nanos(), p.payload.len(), p.marker);
            if outcome == SeqOutcome::Duplicate {
                return new_ssrc;
            }
            if let Some(ev) = ev {
                let mut edges = std::mem::take(&mut self.edges);
                edges.clear();
                self.streams[idx].dtmf.push(p.ts, &ev, &mut edges);
                // Past the history cap edges are only counted: no snapshot for nothing new.
                let mut any = false;
                for e in &edges {
                    any |= match *e {
                        DtmfEdge::Down(c) => {
                            self.add_history(now, sender, PartyEvent::Keydown, Some(c))
                        }
                        DtmfEdge::Up { digit, .. } => {
                            self.add_history(now, sender, PartyEvent::Keyup, Some(digit))
                        }
                    };
                }
                self.edges = edges;
                if any {
                    self.emit(EventKind::Updated, now);
                }
            }
            return new_ssrc;
        }
        if clock != 0 && kind != CodecKind::ComfortNoise {
            stream.stats.set_clock_rate(clock);
        }
        let cn = kind == CodecKind::ComfortNoise;
        let outcome =
            stream
                .stats
                .update_marked(p.seq, p.ts, now.nanos(), p.payload.len(), p.marker, cn);
        // Audio after a BYE is not part of the call (a refused BYE resumes the recording).
        if self.record == RecordMode::None
            || self.state < State::Answered
            || self.bye_at.is_some()
            || outcome == SeqOutcome::Duplicate
            || kind == CodecKind::ComfortNoise
        {
            return new_ssrc;
        }
        if let Some(how) = self.encrypted {
            // Named once per stream and codec, not per packet.
            if let Some(c) = self.streams[idx].codec.as_mut() {
                if !c.encrypted_noted {
                    c.encrypted_noted = true;
                    let label = format!("{} ({how})", c.label);
                    if !self.undecodable.contains(&label) && self.undecodable.len() < 8 {
                        self.undecodable.push(label);
                    }
                }
            }
            return new_ssrc;
        }
        // One stream per side feeds the recording: a tap on an SBC/B2BUA sees the same audio
        // on both legs (often with the same SSRC), and mixing both would make the channel
        // jump between two timelines. The primary changes when the sender changes SSRC on
        // the same addresses, when the new stream fits the latest SDP better (a re-INVITE
        // moved the media; see `sdp_fit`) or when it has been silent for PRIMARY_TAKEOVER_MS.
        let side = sender as usize;
        match self.primary[side] {
            Some(p) if p == idx => {}
            Some(p) => {
                let ps = self.streams.get(p);
                let same_leg = ps.is_some_and(|ps| ps.src == d.src && ps.dst == d.dst);
                let moved = ps.is_some_and(|ps| {
                    self.sdp_fit(sender, d.src, d.dst) > self.sdp_fit(sender, ps.src, ps.dst)
                });
                let silent = self.primary_last[side].is_none_or(|t| {
                    now.nanos().saturating_sub(t.nanos()) > PRIMARY_TAKEOVER_MS * 1_000_000
                });
                if !(same_leg || moved || silent) {
                    return new_ssrc;
                }
                self.primary[side] = Some(idx);
            }
            None => self.primary[side] = Some(idx),
        }
        self.primary_last[side] = Some(now);
        let stream = &mut self.streams[idx];
        // Decoder (re)selection; a stream's codec change cuts the segment once this side
        // has audio in it with another codec (both sides switching cut once, not twice).
        let prev = stream.decoder.as_ref().map(|(k, _)| *k);
        if prev != Some(kind) {
            let changed = prev.is_some()
                && self
                    .segment
                    .as_ref()
                    .and_then(|s| s.kinds.get(side).copied().flatten())
                    .is_some_and(|k| k != kind);
            let stream = &mut self.streams[idx];
            match new_decoder(kind) {
                Some(dec) => {
                    stream.decoder = Some((kind, dec));
                    if changed {
                        self.cut_segment(now);
                    }
                }
                None => {
                    // Switching to a codec we cannot decode is a codec change too: close the
                    // segment rather than pad it with silence for this side.
                    if prev.is_some() {
                        stream.decoder = None;
                    }
                    if changed {
                        self.cut_segment(now);
                    }
                    let label = self.streams[idx]
                        .codec
                        .as_ref()
                        .map(|c| c.label.to_string())
                        .unwrap_or_default();
                    if !self.undecodable.contains(&label) && self.undecodable.len() < 8 {
                        self.undecodable.push(label);
                    }
                    return new_ssrc;
                }
            }
        }
        let stream = &mut self.streams[idx];
        let Some((_, dec)) = stream.decoder.as_mut() else {
            return new_ssrc;
        };
        stream.pcm.clear();
        let pcm_rate = dec.sample_rate();
        if dec.decode(p.payload, &mut stream.pcm).is_err() {
            stream.decode_errors += 1;
            stats.decode_errors += 1;
            return new_ssrc;
        }
        // Open a segment on the first decodable audio after answer; a faster codec than the
        // open segment's rate starts a new segment.
        if self.segment.as_ref().is_some_and(|s| s.rate < pcm_rate) {
            self.cut_segment(now);
        }
        if self.segment.is_none() {
            self.open_segment(now, pcm_rate.max(8000));
        }
        let stream = &mut self.streams[idx];
        let Some(seg) = self.segment.as_mut() else {
            return new_ssrc;
        };
        // Note the codec on the segment once per (stream, codec, segment), not per packet.
        if let Some(c) = stream.codec.as_mut() {
            if c.noted_in != Some(seg.id) {
                c.noted_in = Some(seg.id);
                if !seg.codecs.iter().any(|l| **l == *c.label) && seg.codecs.len() < 8 {
                    seg.codecs.push(c.label.to_string());
                }
            }
        }
        if let Some(k) = seg.kinds.get_mut(side) {
            *k = Some(kind);
        }
        let stream = &self.streams[idx];
        seg.mixer.push(
            sender as usize,
            p.ssrc,
            now.nanos(),
            p.ts,
            clock.max(1),
            &stream.pcm,
            pcm_rate,
        );
        self.drain_audio(now, false);
        if self.segment_seconds > 0 {
            if let Some(seg) = &self.segment {
                if now.nanos().saturating_sub(seg.start.nanos())
                    >= self.segment_seconds as i64 * 1_000_000_000
                {
                    self.cut_segment(now);
                }
            }
        }
        new_ssrc
    }

    /// How well a stream of `side` fits the latest SDP: +1 when it is sent to the address
    /// the receiver announced last, +1 when it comes from the one the sender announced last
    /// (symmetric RTP). Taking over only for a strictly better fit never flip-flops between
    /// the two legs of a relay, which fit equally (each matches one end).
    fn sdp_fit(&self, side: Side, src: SocketAddr, dst: SocketAddr) -> u8 {
        let announced = |s: Side| *pick(&self.sip.media_to, s);
        u8::from(announced(side.other()) == Some(dst)) + u8::from(announced(side) == Some(src))
    }

    /// Whether `pt` is a payload type that no SDP of the call offered, in any of its offers
    /// and answers so far (a sender still on the previous SDP's codec after a re-INVITE is
    /// not stray). Without any SDP (media found through the SSRC fallback before an answer)
    /// nothing is stray: the RFC 3551 static table decides.
    fn is_stray(&mut self, pt: u8) -> bool {
        if self.offered_gen != Some(self.legs_gen) {
            // The legs keep only each side's latest SDP: fold it in whenever it changed.
            self.offered_gen = Some(self.legs_gen);
            for (p, ..) in self.legs.iter().flat_map(|l| l.codecs.iter()) {
                self.offered_pts |= 1u128 << (p & 0x7f);
            }
        }
        self.offered_pts != 0 && self.offered_pts & (1u128 << (pt & 0x7f)) == 0
    }

    /// Counts an SSRC change on stream `idx`'s address pair: the pair's most recent packet
    /// before this one came from another SSRC. Per stream, so a relayed second leg or an
    /// announcement from elsewhere is no change. Only on the slow path (stream switch).
    fn note_ssrc_change(&mut self, idx: usize, now: Timestamp) {
        let Some(cur) = self.streams.get(idx) else {
            return;
        };
        let own_last = cur.stats.last_arrival().unwrap_or(i64::MIN);
        let previous = self
            .streams
            .iter()
            .enumerate()
            .filter(|(i, s)| *i != idx && !s.video && s.src == cur.src && s.dst == cur.dst)
            .filter_map(|(_, s)| s.stats.last_arrival().map(|t| (t, s.ssrc)))
            .max_by_key(|(t, _)| *t);
        if let Some((t, ssrc)) = previous {
            if t > own_last && t <= now.nanos() && ssrc != cur.ssrc {
                if let Some(s) = self.streams.get_mut(idx) {
                    s.ssrc_changes += 1;
                }
            }
        }
    }

    pub(super) fn open_segment(&mut self, now: Timestamp, rate: u32) {
        // The previous segment may hold audio placed a little past its cut (the last
        // packet's samples, RTP timestamps running ahead of arrival): start after it, on a
        // whole millisecond, so the written start (truncated to the millisecond) never
        // reads as earlier than the previous segment's written end either.
        let now = self
            .seg_end
            .map_or(now, |e| Timestamp(ceil_ms(now.max(e).nanos())));
        let id = SegmentId(self.seg_base + self.seg_index as u64);
        let index = self.seg_index;
        self.seg_index += 1;
        let channels = if self.record == RecordMode::Mono {
            1
        } else {
            2
        };
        self.outputs.push(Output::SegmentOpened {
            segment: id,
            uuid: self.uuid.clone(),
            index,
            rate,
            channels,
        });
        self.segment = Some(Segment {
            id,
            start: now,
            rate,
            mixer: StereoMixer::new(rate, now.nanos(), self.jitter_window_ms),
            codecs: Vec::new(),
            last_drain: now,
            frames: 0,
            kinds: [None; 2],
        });
    }

    pub(super) fn push_audio(&mut self, id: SegmentId, mut buf: Vec<i16>) {
        if buf.is_empty() {
            return;
        }
        if self.record == RecordMode::Mono {
            let mono: Vec<i16> = buf
                .chunks_exact(2)
                .map(|f| match f {
                    [l, r] => l.saturating_add(*r),
                    _ => 0,
                })
                .collect();
            buf = mono;
        }
        self.outputs.push(Output::Audio {
            segment: id,
            samples: buf,
        });
    }

    pub(super) fn drain_audio(&mut self, now: Timestamp, force: bool) {
        let chunk = self.audio_chunk_ms as i64 * 1_000_000;
        let Some(seg) = self.segment.as_mut() else {
            return;
        };
        if !force && now.nanos().saturating_sub(seg.last_drain.nanos()) < chunk {
            return;
        }
        seg.last_drain = now;
        let mut buf = Vec::new();
        seg.frames += seg.mixer.drain(now.nanos(), &mut buf) as u64;
        let id = seg.id;
        self.push_audio(id, buf);
    }

    /// Closes the open segment (if any) at `now`.
    pub(super) fn cut_segment(&mut self, now: Timestamp) {
        let Some(mut seg) = self.segment.take() else {
            return;
        };
        let mut buf = Vec::new();
        seg.frames += seg.mixer.finish(now.nanos(), &mut buf) as u64;
        self.push_audio(seg.id, buf);
        self.outputs.push(Output::SegmentClosed { segment: seg.id });
        self.closed.push(seg.id);
        let duration = seg.frames as f64 / seg.rate.max(1) as f64;
        let nanos = (seg.frames as i64)
            .saturating_mul(1_000_000_000)
            .checked_div(i64::from(seg.rate))
            .unwrap_or(0);
        self.seg_end = Some(Timestamp(seg.start.nanos().saturating_add(nanos)));
        self.pending.push_back(Pending {
            parties: self.side_party,
            closed_at: now,
            id: seg.id,
            start: seg.start,
            duration,
            codecs: seg.codecs,
        });
    }

    /// Periodic work: hands out buffered audio even when packets pause (hold).
    ///
    /// Silence is released as time passes only while the call is known to go on (a side
    /// holds): after the last packet, silence may be the end of the call, and a recording
    /// never runs past the call's end. A pause that turns out to be mid-call is filled in
    /// when media resumes, or, past [`SILENCE_CUT_MS`], the segment is closed at its last
    /// packet and the resumed media opens a new one.
    pub(crate) fn tick(&mut self, now: Timestamp) {
        let held = self.held.iter().any(|h| *h);
        if let (false, Some(last), true) = (held, self.last_rtp, self.segment.is_some()) {
            if now.nanos().saturating_sub(last.nanos()) >= SILENCE_CUT_MS * 1_000_000 {
                self.cut_segment(last);
                return;
            }
        }
        let to = if held {
            now
        } else {
            self.last_rtp.map_or(now, |r| r.min(now))
        };
        let to = self.bye_at.map_or(to, |b| b.min(to));
        self.drain_audio(to, false);
    }

    pub(crate) fn segment_stored(
        &mut self,
        id: SegmentId,
        stored: Option<StoredSegment>,
        now: Timestamp,
    ) {
        let Some(pos) = self.pending.iter().position(|p| p.id == id) else {
            return;
        };
        let Some(p) = self.pending.remove(pos) else {
            return;
        };
        if stored.is_none() {
            self.segments_failed = self.segments_failed.saturating_add(1);
        }
        if let Some(st) = stored {
            // Events up to the cut belong to the closing segment (a hold lands on the one it ends).
            let mut hist = Vec::new();
            while self.history_assigned < self.history.len()
                && self
                    .history
                    .get(self.history_assigned)
                    .is_some_and(|(t, _)| *t <= p.closed_at)
            {
                if let Some((_, h)) = self.history.get(self.history_assigned) {
                    hist.push(h.clone());
                }
                self.history_assigned += 1;
            }
            let mut dlg = self.sip_dialog(DialogType::Recording, p.start);
            dlg.duration = Some((p.duration * 1000.0).round() / 1000.0);
            dlg.parties = Some(p.parties.to_vec());
            dlg.mediatype = Some(st.mediatype);
            dlg.filename = Some(st.filename);
            dlg.url = Some(st.url);
            dlg.content_hash = Some(st.content_hash);
            dlg.party_history = hist;
            dlg.codecs = p.codecs;
            self.vcon.dialog.push(dlg);
            // At the cut, not when the driver's store came back (deterministic).
            self.emit(EventKind::Segment, p.closed_at);
        }
        self.try_finalize(now);
    }

    pub(super) fn sip_dialog(&self, kind: DialogType, start: Timestamp) -> Dialog {
        if !self.sniffed {
            // A session opened through the API: no sniffed SIP dialog to name.
            return Dialog {
                kind,
                start: format_time(start.nanos()),
                ..Default::default()
            };
        }
        Dialog {
            kind,
            start: format_time(start.nanos()),
            application: Some("sip".into()),
            sip_call_id: Some(self.call_id.clone()),
            sip_from_tag: self.sip.caller_tag.clone(),
            sip_to_tag: self.sip.to_tag.clone(),
            sip_cseq: Some(self.sip.invite_cseq),
            session_id: self.session_id(),
            ..Default::default()
        }
    }

    /// The RFC 7989 Session-ID pair, when either side sent one.
    pub(super) fn session_id(&self) -> Option<vcontap_vcon::SessionId> {
        const NIL: &str = "00000000000000000000000000000000";
        let [a, b] = &self.sip.session_uuids;
        (a.is_some() || b.is_some()).then(|| vcontap_vcon::SessionId {
            local: a.clone().unwrap_or_else(|| NIL.into()),
            remote: b.clone().unwrap_or_else(|| NIL.into()),
        })
    }
}

/// `ns` rounded up to a whole millisecond.
fn ceil_ms(ns: i64) -> i64 {
    match ns.rem_euclid(1_000_000) {
        0 => ns,
        r => ns.saturating_add(1_000_000 - r),
    }
}
