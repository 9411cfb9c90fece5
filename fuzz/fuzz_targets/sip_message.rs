#![no_main]
//! Fuzzes SIP message parsing, every accessor, stream framing, multipart splitting and
//! the SDP found in the body.

use vcontap_sip::{
    dtmf_from_info, e164, frame, looks_like_sip, multipart, parse_name_addr, parse_uri, parse_via,
    sdp, sdp_body, split_comma_list, Kind, Message,
};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = looks_like_sip(data);
    // Frame the buffer as a TCP stream would, checking the framer's contract.
    let mut rest = data;
    for _ in 0..64 {
        match frame(rest) {
            vcontap_wire::Framing::Message(n) | vcontap_wire::Framing::Skip(n) => {
                assert!(n > 0 && n <= rest.len());
                rest = &rest[n..];
            }
            _ => break,
        }
    }
    let Ok(m) = Message::parse(data) else {
        return;
    };
    let _ = (
        m.kind(),
        m.is_request(),
        m.method(),
        m.status(),
        m.request_uri(),
    );
    let _ = (m.call_id(), m.cseq(), m.content_type(), m.top_via_branch());
    let _ = (
        m.headers_truncated(),
        m.skipped_headers(),
        m.has_complete_head(),
    );
    assert!(m.headers().len() <= vcontap_sip::MAX_HEADERS);
    assert!(m.body().len() <= m.raw().len());
    for na in [m.from(), m.to()].into_iter().flatten() {
        if let Some(u) = parse_uri(na.uri) {
            let _ = (e164(&u), u.param("user"));
        }
        let _ = na.param("tag");
    }
    if let Kind::Request { uri, .. } = m.kind() {
        if let Some(u) = parse_uri(uri) {
            let _ = e164(&u);
        }
    }
    for v in m.headers_named("Contact").chain(m.headers_named("Via")) {
        for item in split_comma_list(v) {
            let _ = parse_name_addr(item);
            let _ = parse_via(item);
        }
    }
    let _ = m.vias().count();
    for h in m.headers() {
        let _ = vcontap_sip::unfold(h.value);
    }
    if let Some(ct) = m.header("Content-Type") {
        for p in multipart::parts(ct, m.body()) {
            let _ = (p.content_type, p.header("Content-Disposition"));
        }
        let _ = dtmf_from_info(ct, m.body());
    }
    if let Some(body) = sdp_body(&m) {
        if let Ok(s) = sdp::parse(body) {
            for media in &s.media {
                let _ = (
                    media.connection_or(&s),
                    media.direction_or(&s),
                    media.is_held(&s),
                );
                for &pt in &media.formats {
                    let _ = (media.codec(pt), media.fmtp(pt));
                }
            }
        }
    }
});
