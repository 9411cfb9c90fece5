//! How a call ends: timeouts and lingering, the finish reason, the SIP → disposition
//! mapping, and the final snapshot (incomplete dialog, SIP trace, RTP quality report).

use serde_json::{json, Value};
use vcontap_vcon::{format_time, Attachment};
use vcontap_wire::Timestamp;

use super::*;

impl Call {
    /// Whether the call should end at `now` without further input.
    /// The ways a call can end without further input, in priority order: (since, wait in
    /// ms, reason). [`Call::due`] and the timer deadline ([`Call::next_deadline`]) both read
    /// this one list, so a new way to end can never be missed by the timer.
    pub(super) fn end_timers(
        &self,
        cfg: &EngineConfig,
    ) -> [Option<(Timestamp, i64, FinishReason)>; 5] {
        let idle = if self.state >= State::Answered {
            cfg.idle_timeout_ms
        } else {
            cfg.ringing_timeout_ms
        };
        [
            self.bye_at.map(|b| (b, cfg.linger_ms, FinishReason::Bye)),
            self.failed
                .map(|(t, code)| (t, cfg.linger_ms, FinishReason::Failure(code))),
            self.cancel_at
                .map(|c| (c, cfg.linger_ms, FinishReason::Cancel)),
            self.sip
                .challenge
                .map(|(t, code)| (t, cfg.auth_wait_ms, FinishReason::Failure(code))),
            Some((self.last_activity(), idle, FinishReason::Timeout)),
        ]
    }

    /// Whether the call should end at `now` without further input.
    pub(crate) fn due(&self, now: Timestamp, cfg: &EngineConfig) -> Option<FinishReason> {
        if self.finish_reason.is_some() {
            return None;
        }
        let since = |t: Timestamp| now.nanos().saturating_sub(t.nanos()) / 1_000_000;
        self.end_timers(cfg)
            .into_iter()
            .flatten()
            .find(|(t, wait, _)| since(*t) >= *wait)
            .map(|(_, _, r)| r)
    }

    pub(crate) fn finish(&mut self, reason: FinishReason, now: Timestamp) {
        if self.finish_reason.is_some() {
            return;
        }
        // A failure final response is the outcome, whatever ends its linger (a stray BYE's
        // 200, the end of the input, eviction).
        // A BYE still waiting for its answer when the input ends (or the call is evicted)
        // ended the call as the linger would have.
        let reason = match (self.failed, reason) {
            (Some((_, 487)), _) => FinishReason::Cancel,
            (Some((_, code)), _) => FinishReason::Failure(code),
            (None, FinishReason::EndOfInput | FinishReason::Evicted | FinishReason::Timeout)
                if self.bye_at.is_some() =>
            {
                FinishReason::Bye
            }
            (None, r) => r,
        };
        if let FinishReason::Failure(code) = reason {
            self.final_code.get_or_insert(code);
        }
        if reason == FinishReason::Bye {
            // Recorded now that the BYE succeeded (or went unanswered past the linger).
            if let Some(b) = self.bye_at {
                self.add_history(b, self.sip.bye_side, PartyEvent::Drop, None);
            }
        }
        self.finish_reason = Some(reason);
        self.finish_at = Some(now);
        self.state = State::Finishing;
        // A call that ended by itself ends at its last signalling; a timeout at last activity.
        let end = match reason {
            FinishReason::Bye => self.bye_at.unwrap_or(now),
            FinishReason::Failure(_) | FinishReason::Cancel if self.failed.is_some() => {
                self.failed.map_or(now, |(t, _)| t)
            }
            // A CANCEL whose 487 was never seen: the call ended with the CANCEL.
            FinishReason::Cancel => self.cancel_at.unwrap_or(now),
            // A challenge nobody answered: the call ended with the 401/407.
            FinishReason::Failure(_) if self.sip.challenge.is_some() => {
                self.sip.challenge.map_or(now, |(t, _)| t)
            }
            FinishReason::Timeout | FinishReason::EndOfInput | FinishReason::Evicted => {
                self.last_activity()
            }
            _ => now,
        };
        self.end_at = Some(end);
        // The recording ends with the call, not with whatever input noticed the end (a
        // timeout, the end of the input): the mixer releases up to its last placed sample at
        // least, so nothing heard is cut and nothing after the end is padded.
        let cut = match reason {
            // Nothing ended it: the recording stops at the last media packet, not at the
            // timeout moment or the end of the input.
            FinishReason::Timeout | FinishReason::EndOfInput | FinishReason::Evicted => {
                self.last_rtp.map_or(end, |r| r.min(end))
            }
            _ => end,
        };
        self.cut_segment(cut.min(now));
        self.try_finalize(now);
    }

    pub(super) fn disposition(&self) -> Option<&'static str> {
        if let Some(a) = self.answer_at {
            // 200 OK then BYE before any media at all: the callee hung up at once.
            // Only when nothing else happened in the dialog: a signalling-only capture of a
            // real conversation (no RTP captured, but re-INVITEs, DTMF, a slower BYE) must not
            // be called incomplete because *our* capture lacks media.
            let quick = self
                .end_at
                .is_some_and(|e| e.nanos().saturating_sub(a.nanos()) < 2_000_000_000);
            let bye = self.finish_reason == Some(FinishReason::Bye);
            let quiet = self
                .history
                .iter()
                .all(|(_, h)| h.event == PartyEvent::Drop)
                && self.transfers == 0;
            return (bye && quick && quiet && self.streams.is_empty()).then_some("hung-up");
        }
        match (self.final_code, self.finish_reason) {
            (Some(486 | 600), _) => Some("busy"),
            (Some(408 | 480 | 487), _) => Some("no-answer"),
            (Some(503), _) => Some("congestion"),
            (Some(c), _) if (300..400).contains(&c) => None,
            (Some(c), _) if c >= 400 => Some("failed"),
            (None, Some(FinishReason::Cancel)) => Some("no-answer"),
            _ => None,
        }
    }

    pub(super) fn try_finalize(&mut self, now: Timestamp) {
        if self.finish_reason.is_none() || !self.pending.is_empty() || self.done {
            return;
        }
        let end = self.end_at.unwrap_or(now);
        if let Some(disp) = self.disposition() {
            let mut d = self.sip_dialog(DialogType::Incomplete, self.invite_at);
            d.duration = Some(
                (end.nanos().saturating_sub(self.invite_at.nanos()).max(0) as f64 / 1e9 * 1000.0)
                    .round()
                    / 1000.0,
            );
            d.parties = Some(self.side_party.to_vec());
            d.disposition = Some(disp.to_string());
            // Events not covered by a recording stay on this dialog.
            d.party_history = self
                .history
                .get(self.history_assigned..)
                .unwrap_or_default()
                .iter()
                .map(|(_, h)| h.clone())
                .collect();
            self.history_assigned = self.history.len();
            self.vcon.dialog.push(d);
        }
        let recordings: Vec<u32> = self
            .vcon
            .dialog
            .iter()
            .enumerate()
            .filter(|(_, d)| d.kind == DialogType::Recording)
            .map(|(i, _)| i as u32)
            .collect();
        if recordings.is_empty() && (self.answer_at.is_some() || self.sip.joined) {
            // One shape for every answered call without recorded audio: no `recording`
            // dialog (a content-less one fails ingest), the trace and RTP report in this
            // object, and why there is no audio.
            self.extra.push((
                "no_recording",
                Json::Tree(json!(self.no_recording_reason())),
            ));
        }
        if !self.sip.trace.is_empty() {
            let trace = std::mem::take(&mut self.sip.trace);
            let body =
                crate::build::render_trace_body(&self.call_id, &trace, self.sip.trace_dropped);
            if let Some(body) = body {
                match self
                    .vcon
                    .dialog
                    .iter()
                    .position(|d| d.kind != DialogType::Transfer)
                {
                    Some(first) => self.vcon.attachments.push(Attachment {
                        purpose: Some("sip-message-trace".into()),
                        start: format_time(self.invite_at.nanos()),
                        party: 0,
                        dialog: first as u32,
                        mediatype: Some("application/json".into()),
                        encoding: Some("json".into()),
                        body: Some(body),
                    }),
                    // An answered call without recordings (`--record none`, undecodable
                    // codecs, signalling-only captures) has no dialog an attachment or
                    // analysis could point at (the schema requires attachment `dialog`, the
                    // vcon library requires analysis `dialog`, and a content-less
                    // `recording` fails ingest), so the trace stays in the `vcontap`
                    // extension object instead of being lost.
                    None => self.extra.push(("sip_message_trace", body)),
                }
            }
        }
        if !self.streams.is_empty() {
            let report = self.quality_report();
            if recordings.is_empty() {
                self.extra.push(("rtp_quality", report));
            } else {
                self.vcon.analysis.push(vcontap_vcon::Analysis {
                    kind: "report".into(),
                    dialog: Some(recordings),
                    vendor: "vcontap".into(),
                    product: Some(concat!("vcontap ", env!("CARGO_PKG_VERSION")).into()),
                    schema: Some("vcontap-rtp-quality".into()),
                    mediatype: Some("application/json".into()),
                    encoding: Some("json".into()),
                    body: Some(report),
                });
            }
        }
        self.done = true;
        // The finishing input's time, not the time the last segment store came back: the
        // final snapshot does not depend on how fast the driver writes media.
        let at = self.finish_at.unwrap_or(now).max(end);
        self.emit(EventKind::Finished, at);
    }

    /// Why an answered call has no recording, first cause first.
    fn no_recording_reason(&self) -> &'static str {
        if self.is_not_recorded() {
            "policy"
        } else if self.record == RecordMode::None {
            "record-none"
        } else if self.encrypted.is_some() {
            "encrypted"
        } else if !self
            .streams
            .iter()
            .any(|s| !s.video && s.stats.packets() > 0)
        {
            "no-rtp"
        } else if !self.undecodable.is_empty() {
            "undecodable-codec"
        } else if self.segments_failed > 0 {
            "store-failed"
        } else {
            // RTP arrived but none of it was decodable audio after the answer (comfort
            // noise or DTMF only, decode errors, media only before the answer).
            "no-audio"
        }
    }

    /// The `vcontap-rtp-quality` report (`{"streams": [...]}`), written straight to text.
    pub(super) fn quality_report(&self) -> Json {
        #[derive(serde::Serialize)]
        struct Report<'a> {
            streams: Vec<report::StreamReport<'a>>,
        }
        let r = Report {
            streams: self.streams.iter().map(|s| self.stream_report(s)).collect(),
        };
        match serde_json::value::to_raw_value(&r) {
            Ok(t) => Json::Text(t),
            Err(_) => Json::Tree(Value::Null),
        }
    }

    fn stream_report<'a>(&'a self, s: &'a Stream) -> report::StreamReport<'a> {
        let st = &s.stats;
        let expected = st.expected();
        let lost = st.lost();
        let loss_pct = if expected > 0 {
            (lost.max(0) as f64 * 100.0 / expected as f64 * 100.0).round() / 100.0
        } else {
            0.0
        };
        let round = |x: f64| (x * 1000.0).round() / 1000.0;
        let clock = s.codec.as_ref().map_or(0, |c| c.clock);
        let rtcp = self
            .rtcp
            .iter()
            .find(|r| r.ssrc == s.ssrc)
            .map(|r| report::Rtcp {
                sender_reports: r.sender_reports,
                // RFC 3550 §6.4.1: fraction lost is /256, jitter is in timestamp units.
                reported_by_receiver: r.reported.map(|b| report::Reported {
                    reports: r.reports,
                    fraction_lost_percent: round(f64::from(b.fraction_lost) * 100.0 / 256.0),
                    cumulative_lost: b.cumulative_lost,
                    highest_seq: b.highest_seq,
                    jitter_ms: (clock > 0)
                        .then(|| round(f64::from(b.jitter) * 1000.0 / f64::from(clock))),
                }),
            });
        report::StreamReport {
            bytes: st.bytes(),
            codecs: &s.codecs,
            decode_errors: s.decode_errors,
            direction: format!("{}->{}", side_name(s.sender), side_name(s.sender.other())),
            dst: s.dst.to_string(),
            duplicates: st.duplicates(),
            expected,
            first: st.first_arrival().map(format_time),
            jitter_ms: round(st.jitter_ms()),
            last: st.last_arrival().map(format_time),
            loss_percent: loss_pct,
            lost,
            max_delta_ms: round(st.max_delta_ms()),
            max_jitter_ms: round(st.max_jitter_ms()),
            media: if s.video { "video" } else { "audio" },
            packets: st.packets(),
            party: *pick(&self.side_party, s.sender),
            quality_estimate: quality_estimate(s, loss_pct, st.jitter_ms()),
            reordered: st.reordered(),
            rtcp,
            seq_cycles: st.seq_cycles(),
            src: s.src.to_string(),
            ssrc: format!("0x{:08X}", s.ssrc),
            ssrc_changes: s.ssrc_changes,
            stray_payload_type_packets: (s.stray_pts > 0).then_some(s.stray_pts),
        }
    }
}

/// An E-model (ITU-T G.107) listening-quality estimate from what the tap measured, for the
/// codecs whose impairment factors G.113 publishes (G.711: Ie 0, Bpl 25.1 with packet-loss
/// concealment). One-way network delay is not observable from one tap, so only the jitter
/// buffer's share (2 × jitter + 10 ms) enters the delay impairment: the figure is an upper
/// bound and says so in `method`. Other codecs get none rather than a made-up number.
fn quality_estimate(s: &Stream, loss_pct: f64, jitter_ms: f64) -> Option<report::Quality> {
    // Comfort noise and DTMF share the stream; the voice codec decides.
    let g711 = s
        .kinds
        .iter()
        .any(|k| matches!(k, CodecKind::Pcmu | CodecKind::Pcma));
    let others = s.kinds.iter().any(|k| {
        !matches!(
            k,
            CodecKind::Pcmu | CodecKind::Pcma | CodecKind::ComfortNoise | CodecKind::TelephoneEvent
        )
    });
    let (ie, bpl) = match (g711, others) {
        (true, false) => (0.0, 25.1),
        _ => return None,
    };
    if s.stats.packets() == 0 {
        return None;
    }
    let delay = 2.0 * jitter_ms + 10.0;
    let id = if delay < 160.0 {
        delay / 40.0
    } else {
        (delay - 120.0) / 10.0
    };
    let ie_eff = ie + (95.0 - ie) * loss_pct / (loss_pct + bpl);
    let r = (93.2 - id - ie_eff).clamp(0.0, 100.0);
    let mos = if r <= 0.0 {
        1.0
    } else if r >= 100.0 {
        4.5
    } else {
        1.0 + 0.035 * r + 7e-6 * r * (r - 60.0) * (100.0 - r)
    };
    let round2 = |x: f64| (x * 100.0).round() / 100.0;
    Some(report::Quality {
        method: "E-model (ITU-T G.107) from tap-measured loss and jitter; network delay unknown (jitter buffer only), so an upper bound",
        mos_cq: round2(mos),
        r_factor: round2(r),
    })
}
