//! SRTP in the SIPREC shell: one `vcontap_srtp::Session` per accepted `RTP/SAVP` stream,
//! keyed with the offerer's `a=crypto` key ([`SrtpOffer::remote_key`]), re-keyed when a
//! re-INVITE changes it ([`Event::StreamsChanged`]), and applied to every packet on the
//! stream's RTP and RTCP ports before it reaches `SessionCall::Media`. The crypto and
//! its bounds (SSRC cap, replay window, index guess) live in the sans-IO `crates/srtp`;
//! this module only maps the core's stream descriptions onto it and counts outcomes for
//! `/metrics`.
//!
//! [`Event::StreamsChanged`]: vcontap_siprec::uas::Event::StreamsChanged

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use vcontap_siprec::answer::{SrtpOffer, SrtpSuite};
use vcontap_siprec::uas::StreamInfo;
use vcontap_srtp::{Error, Session, Suite};

/// Outcome counters, exported in `/metrics`.
#[derive(Default)]
pub(super) struct SrtpCounters {
    decrypted: AtomicU64,
    auth_failed: AtomicU64,
    replayed: AtomicU64,
    unknown_ssrc: AtomicU64,
    malformed: AtomicU64,
    evicted: AtomicU64,
}

impl SrtpCounters {
    pub(super) fn write_metrics(&self, out: &mut String) {
        for (name, help, c) in [
            (
                "decrypted",
                "SRTP/SRTCP packets authenticated and decrypted",
                &self.decrypted,
            ),
            (
                "auth_failures",
                "SRTP/SRTCP packets dropped: tag mismatch",
                &self.auth_failed,
            ),
            (
                "replayed",
                "SRTP/SRTCP packets dropped: duplicate or older than the window",
                &self.replayed,
            ),
            (
                "unknown_ssrc",
                "SRTP packets dropped: first packet of an SSRC that did not authenticate",
                &self.unknown_ssrc,
            ),
            (
                "malformed",
                "SRTP/SRTCP packets dropped: too short or not RTP",
                &self.malformed,
            ),
            (
                "ssrc_evicted",
                "SRTP SSRC contexts evicted (least recently used) past the per-stream cap",
                &self.evicted,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP vcontap_siprec_srtp_{name}_total {help}\n# TYPE vcontap_siprec_srtp_{name}_total counter\nvcontap_siprec_srtp_{name}_total {}",
                c.load(Ordering::Relaxed)
            );
        }
    }

    fn count(&self, e: Error) {
        let c = match e {
            Error::Auth => &self.auth_failed,
            Error::Replay => &self.replayed,
            Error::UnknownSsrc => &self.unknown_ssrc,
            Error::Malformed | Error::KeyLength { .. } => &self.malformed,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// The decrypt state of one stream.
pub(super) struct Decrypt {
    session: Session,
    /// The offer it was built from, to see a re-key.
    offer: SrtpOffer,
    evicted: u64,
}

fn suite(s: SrtpSuite) -> Suite {
    match s {
        SrtpSuite::AesCm128Sha1_80 => Suite::AesCm128HmacSha1_80,
        SrtpSuite::AesCm128Sha1_32 => Suite::AesCm128HmacSha1_32,
        SrtpSuite::AesCm256Sha1_80 => Suite::AesCm256HmacSha1_80,
        SrtpSuite::AesCm256Sha1_32 => Suite::AesCm256HmacSha1_32,
        SrtpSuite::AeadAes128Gcm => Suite::AeadAes128Gcm,
        SrtpSuite::AeadAes256Gcm => Suite::AeadAes256Gcm,
    }
}

/// Brings the per-m-line decrypt states in line with the negotiated streams: new SRTP
/// streams get a session, a changed key re-keys (the old key still decrypts packets in
/// flight), a stream no longer on `RTP/SAVP` drops its state.
pub(super) fn update(slots: &mut Vec<Option<Decrypt>>, streams: &[StreamInfo]) {
    if slots.len() < streams.len() {
        slots.resize_with(streams.len(), || None);
    }
    for (slot, s) in slots.iter_mut().zip(streams) {
        let Some(offer) = &s.srtp else {
            *slot = None;
            continue;
        };
        match slot {
            Some(d) if d.offer == *offer => {}
            Some(d) => match d.session.rekey(suite(offer.suite), &offer.remote_key) {
                Ok(()) => {
                    tracing::info!(stream = s.index, "SRTP re-keyed by the SRC");
                    d.offer = offer.clone();
                }
                Err(e) => tracing::warn!(stream = s.index, error = %e, "SRTP re-key refused"),
            },
            None => match Session::new(suite(offer.suite), &offer.remote_key) {
                Ok(session) => {
                    *slot = Some(Decrypt {
                        session,
                        offer: offer.clone(),
                        evicted: 0,
                    });
                }
                // The core only accepts keys of the suite's length, so this is a bug
                // there; the stream's packets are then dropped as unknown.
                Err(e) => tracing::warn!(stream = s.index, error = %e, "SRTP key refused"),
            },
        }
    }
}

/// Unprotects `bytes` in place when the stream is SRTP; false when the packet must be
/// dropped (counted). Plain RTP streams (`None`) pass through.
pub(super) fn unprotect(
    slot: Option<&mut Decrypt>,
    bytes: &mut Vec<u8>,
    counters: &SrtpCounters,
) -> bool {
    let Some(d) = slot else {
        return true;
    };
    let r = if vcontap_srtp::is_rtcp(bytes) {
        d.session.unprotect_rtcp(bytes)
    } else {
        d.session.unprotect_rtp(bytes)
    };
    let evicted = d.session.stats().evicted;
    if evicted > d.evicted {
        counters
            .evicted
            .fetch_add(evicted - d.evicted, Ordering::Relaxed);
        d.evicted = evicted;
    }
    match r {
        Ok(n) => {
            bytes.truncate(n);
            counters.decrypted.fetch_add(1, Ordering::Relaxed);
            true
        }
        Err(e) => {
            counters.count(e);
            tracing::debug!(error = %e, "SRTP packet dropped");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vcontap_siprec::mapping::MapSource;

    fn stream(index: usize, srtp: Option<SrtpOffer>) -> StreamInfo {
        StreamInfo {
            index,
            label: None,
            port: Some(40000),
            formats: Vec::new(),
            srtp,
            senders: Vec::new(),
            source: MapSource::Unmapped,
            paused: false,
        }
    }

    fn offer(fill: u8) -> SrtpOffer {
        SrtpOffer {
            tag: 1,
            suite: SrtpSuite::AesCm128Sha1_80,
            remote_key: vec![fill; 30],
        }
    }

    fn rtp(seq: u16) -> Vec<u8> {
        let mut p = vec![0x80, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&[0xd5; 160]);
        p
    }

    #[test]
    fn streams_get_sessions_rekeys_and_counted_drops() {
        let mut slots = Vec::new();
        update(&mut slots, &[stream(0, None), stream(1, Some(offer(1)))]);
        assert!(slots[0].is_none() && slots[1].is_some());
        let c = SrtpCounters::default();
        // Plain stream: untouched.
        let mut p = rtp(1);
        assert!(unprotect(slots[0].as_mut(), &mut p, &c));
        assert_eq!(p, rtp(1));
        // SRTP stream: a packet made under the offerer's key decrypts and loses its tag.
        let sender = Session::new(Suite::AesCm128HmacSha1_80, &[1; 30]).unwrap();
        let mut p = sender.protect_rtp(&rtp(2), 0).unwrap();
        assert!(unprotect(slots[1].as_mut(), &mut p, &c));
        assert_eq!(p, rtp(2));
        // Plain RTP on an SRTP stream, and a replay: dropped and counted.
        let mut p = rtp(3);
        assert!(!unprotect(slots[1].as_mut(), &mut p, &c));
        let mut p = sender.protect_rtp(&rtp(2), 0).unwrap();
        assert!(!unprotect(slots[1].as_mut(), &mut p, &c));
        // Re-key by re-INVITE: new key works, the same offer again changes nothing.
        update(&mut slots, &[stream(0, None), stream(1, Some(offer(2)))]);
        update(&mut slots, &[stream(0, None), stream(1, Some(offer(2)))]);
        let rekeyed = Session::new(Suite::AesCm128HmacSha1_80, &[2; 30]).unwrap();
        let mut p = rekeyed.protect_rtp(&rtp(4), 0).unwrap();
        assert!(unprotect(slots[1].as_mut(), &mut p, &c));
        assert_eq!(p, rtp(4));
        let mut m = String::new();
        c.write_metrics(&mut m);
        assert!(m.contains("vcontap_siprec_srtp_decrypted_total 2\n"), "{m}");
        assert!(
            m.contains("vcontap_siprec_srtp_auth_failures_total 1\n"),
            "{m}"
        );
        assert!(m.contains("vcontap_siprec_srtp_replayed_total 1\n"), "{m}");
        // SAVP → AVP drops the state.
        update(&mut slots, &[stream(0, None), stream(1, None)]);
        assert!(slots[1].is_none());
    }
}
