//! Zero-copy, lenient SIP and SDP parsing for vcontap's passive observer.
//!
//! # Why hand-written
//!
//! `rsip` 0.4 is stale and rejects compact header forms (`i:`, `f:`, `v:`...), which real
//! carriers send. A passive observer cannot ask for a retransmission, so it needs a parser
//! where a malformed header never loses the message (the "untyped first" idea of `rsip`,
//! taken further), that borrows from the capture buffer, and whose hot path only touches
//! the few headers the call engine needs (Call-ID, CSeq, From/To tags, Via branch,
//! Content-Type).
//!
//! Parsing is lazy: [`Message::parse`] splits the start line and the headers into
//! `(name, value)` slices once (one `Vec`, `memchr` scanning); typed accessors such as
//! [`Message::cseq`] or [`Message::from`] parse their header on demand.
//!
//! # Modules
//!
//! - `message`: [`Message`], [`Kind`], [`Method`], [`Header`], [`SipError`].
//! - `header`: value helpers: [`parse_name_addr`], [`parse_uri`], [`e164`], [`CSeq`],
//!   [`parse_via`], [`split_comma_list`], compact header names.
//! - `framing`: [`frame`] for SIP over TCP, [`looks_like_sip`] for UDP payloads.
//! - [`sdp`]: SDP offers/answers.
//! - [`multipart`]: multipart bodies (SIPREC, SIP-I).
//! - `builder`: [`ResponseBuilder`], responses to a parsed request (the SIPREC UAS).
//! - `dtmf`: [`dtmf_from_info`].
//!
//! This file also owns [`sdp_body`], the glue that finds the SDP of a message.

// Input is hostile (docs/CONTRIBUTING.md): no panicking shortcuts outside tests.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

mod builder;
mod dtmf;
mod framing;
mod header;
mod message;
pub mod multipart;
pub mod sdp;

pub use builder::{reason_phrase, ResponseBuilder};
pub use dtmf::{dtmf_from_info, InfoDtmf};
pub use framing::{frame, looks_like_sip, MAX_BODY_BYTES, MAX_HEADER_BYTES};
pub use header::{
    compact_form, e164, long_form, param, params, parse_cseq, parse_name_addr, parse_uri,
    parse_via, split_comma_list, CSeq, NameAddr, Uri, Via, E164_MAX_DIGITS, E164_MIN_DIGITS,
};
pub use message::{
    media_type, media_type_is, unfold, Header, Kind, Message, Method, SipError, MAX_HEADERS,
};

/// Returns the SDP of a message body: the body itself when Content-Type is
/// `application/sdp`, the `application/sdp` part of a multipart body (SIPREC, SIP-I),
/// else `None`. A body without any Content-Type that starts with `v=0` is taken as SDP
/// too (some UAs omit the header). Empty bodies give `None`.
pub fn sdp_body<'a>(msg: &Message<'a>) -> Option<&'a [u8]> {
    let body = msg.body();
    if body.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    let Some(ct) = msg.header("Content-Type") else {
        return body.trim_ascii_start().starts_with(b"v=0").then_some(body);
    };
    if media_type_is(ct, "application/sdp") {
        return Some(body);
    }
    if media_type(ct)
        .get(..10)
        .is_some_and(|p| p.eq_ignore_ascii_case("multipart/"))
    {
        return multipart::find(ct, body, "application/sdp").filter(|b| !b.is_empty());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn shared_dir() -> Option<PathBuf> {
        let dir = std::env::var_os("VCONTAP_SHARED")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared"))
            });
        dir.join("siprec").is_dir().then_some(dir)
    }

    /// Reads a SIPREC sample without its `# SOURCE:` line.
    fn sample(dir: &std::path::Path, name: &str) -> Option<String> {
        let text = std::fs::read_to_string(dir.join("siprec").join(name)).ok()?;
        let (first, rest) = text.split_once('\n')?;
        assert!(first.starts_with("# SOURCE:"), "{name}: no SOURCE line");
        Some(rest.to_owned())
    }

    #[test]
    fn sdp_body_variants() {
        let m =
            Message::parse(b"INVITE sip:a@b SIP/2.0\r\nc: application/sdp\r\n\r\nv=0\r\n").unwrap();
        assert_eq!(sdp_body(&m), Some(&b"v=0\r\n"[..]));
        let m = Message::parse(b"INVITE sip:a@b SIP/2.0\r\n\r\nv=0\r\n").unwrap();
        assert_eq!(sdp_body(&m), Some(&b"v=0\r\n"[..]));
        let m = Message::parse(b"INVITE sip:a@b SIP/2.0\r\n\r\nhello").unwrap();
        assert_eq!(sdp_body(&m), None);
        let m = Message::parse(
            b"INFO sip:a@b SIP/2.0\r\nContent-Type: application/dtmf-relay\r\n\r\nSignal=1",
        )
        .unwrap();
        assert_eq!(sdp_body(&m), None);
        let m = Message::parse(b"INVITE sip:a@b SIP/2.0\r\nContent-Type: application/sdp\r\n\r\n")
            .unwrap();
        assert_eq!(sdp_body(&m), None);
        let raw = b"INVITE sip:a@b SIP/2.0\r\nContent-Type: multipart/mixed;boundary=\"x y\"\r\n\r\n--x y\r\nContent-Type: application/isup; version=itu-t92+\r\n\r\n\x01\x02\r\n--x y\r\nContent-Type: application/sdp\r\n\r\nv=0\r\nm=audio 5 RTP/AVP 0\r\n--x y--\r\n";
        let m = Message::parse(raw).unwrap();
        let sdp = sdp_body(&m).unwrap();
        assert_eq!(sdp::parse(sdp).unwrap().media[0].port, 5);
    }

    #[test]
    fn siprec_body_samples() {
        let Some(dir) = shared_dir() else {
            println!("skipped: shared test data not found (set VCONTAP_SHARED)");
            return;
        };
        let mut checked = 0;
        for name in [
            "avaya-sbce-1.txt",
            "broadworks-1.txt",
            "cisco-cube-1.txt",
            "opensips-1.txt",
            "opensips-2.txt",
            "opensips-3.txt",
            "oracle-acme-1.txt",
            "oracle-acme-2.txt",
            "ribbon-sonus-1.txt",
            "sems-1.txt",
        ] {
            let Some(body) = sample(&dir, name) else {
                println!("skipped: {name} missing");
                continue;
            };
            // Body-only samples: the boundary is inferred from the first delimiter line.
            let ps = multipart::parts("multipart/mixed", body.as_bytes());
            assert!(ps.len() >= 2, "{name}: {} parts", ps.len());
            // Metadata part (one sample labels it oddly: "application/ +xml").
            assert!(
                ps.iter().any(|p| p
                    .content_type
                    .is_some_and(|c| !media_type_is(c, "application/sdp"))
                    && memchr::memmem::find(p.body, b"recording").is_some()),
                "{name}: no metadata part"
            );
            let sdp_bytes = multipart::find("multipart/mixed", body.as_bytes(), "application/sdp")
                .unwrap_or_else(|| panic!("{name}: no SDP"));
            let s = sdp::parse(sdp_bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(!s.media.is_empty(), "{name}: no media");
            for m in &s.media {
                assert!(m.port > 0, "{name}");
                // opensips-* carry no c= at all; broadworks-1 has it anonymised to X.X.X.X.
                let has_c = memchr::memmem::find(sdp_bytes, b"\nc=").is_some();
                if has_c && name != "broadworks-1.txt" {
                    assert!(m.connection_or(&s).is_some(), "{name}: no c=");
                }
                assert!(!m.formats.is_empty(), "{name}");
                assert!(m.formats.iter().any(|&pt| m.codec(pt).is_some()), "{name}");
            }
            checked += 1;
        }
        assert!(checked > 0);

        let Some(cube) = sample(&dir, "cisco-cube-1.txt") else {
            return;
        };
        let s = sdp::parse(
            multipart::find("multipart/mixed", cube.as_bytes(), "application/sdp").unwrap(),
        )
        .unwrap();
        assert_eq!(s.media.len(), 2);
        assert_eq!(s.media[0].label, Some("1"));
        assert_eq!(s.media[1].label, Some("2"));
        assert_eq!(s.media[0].port, 10292);
        assert_eq!(s.media[0].direction_or(&s), sdp::Direction::SendOnly);
        assert_eq!(s.media[0].ptime, Some(20));
    }

    #[test]
    fn siprec_full_invite_sample() {
        let Some(dir) = shared_dir() else {
            println!("skipped: shared test data not found (set VCONTAP_SHARED)");
            return;
        };
        let Some(text) = sample(&dir, "intrado-asterisk-1.txt") else {
            println!("skipped: intrado-asterisk-1.txt missing");
            return;
        };
        let m = Message::parse(text.as_bytes()).unwrap();
        assert_eq!(m.method(), Some(Method::Invite));
        assert_eq!(
            m.call_id(),
            Some("6c953981285cde0446619ca30087d35a@10.106.2.10:5060")
        );
        assert_eq!(m.from().unwrap().display.as_deref(), Some("NOCALLERID"));
        assert_eq!(m.from().unwrap().tag, Some("as13e1f4e1"));
        assert_eq!(m.top_via_branch(), Some("z9hG4bK34781885"));
        assert_eq!(m.content_type(), Some("multipart/mixed"));
        assert_eq!(m.headers_named("Accept").count(), 2);
        let s = sdp::parse(sdp_body(&m).unwrap()).unwrap();
        assert_eq!(s.media[0].port, 11854);
        assert_eq!(s.media[0].label, Some("1"));
        assert_eq!(s.media[0].codec(101), Some(("telephone-event", 8000, 1)));
        // With CRLF line endings (as on the wire) the result is the same.
        let crlf = text.replace('\n', "\r\n");
        let m2 = Message::parse(crlf.as_bytes()).unwrap();
        let s2 = sdp::parse(sdp_body(&m2).unwrap()).unwrap();
        assert_eq!(s2.media.len(), s.media.len());
        assert_eq!(s2.media[0].label, Some("1"));
        assert!(looks_like_sip(crlf.as_bytes()));
        // Framing the CRLF version: Content-Length 1862 is the CRLF body size upstream.
        match frame(crlf.as_bytes()) {
            vcontap_wire::Framing::Message(n) => assert!(n <= crlf.len()),
            f if f.is_incomplete() => {}
            other => panic!("unexpected {other:?}"),
        }
        // Truncation at every offset never panics.
        for n in 0..crlf.len() {
            if let Ok(m) = Message::parse(&crlf.as_bytes()[..n]) {
                if let Some(b) = sdp_body(&m) {
                    let _ = sdp::parse(b);
                }
            }
            let _ = frame(&crlf.as_bytes()[..n]);
        }
    }
}
