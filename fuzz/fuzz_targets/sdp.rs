#![no_main]
//! Fuzzes the SDP parser and every `Media` method.

use vcontap_sip::sdp;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(s) = sdp::parse(data) else {
        return;
    };
    assert!(s.media.len() <= sdp::MAX_MEDIA);
    if let Some(d) = s.direction {
        let _ = (d.as_str(), d.sends(), d.receives(), d.reversed());
    }
    for m in &s.media {
        assert!(m.formats.len() <= sdp::MAX_FORMATS);
        let _ = (m.connection_or(&s), m.is_held(&s), m.is_removed());
        let d = m.direction_or(&s);
        let _ = (d.as_str(), d.sends(), d.receives());
        for pt in 0..=127u8 {
            let _ = (m.codec(pt), m.fmtp(pt), sdp::static_payload_type(pt));
        }
        let _ = (&m.rtcp, m.rtcp_mux, &m.crypto, m.label, m.ptime);
    }
});
