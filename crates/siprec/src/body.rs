//! The body of a SIPREC request: which bytes are the SDP offer, which are rs-metadata,
//! and whether a part we must understand is one we do not (RFC 3261 §20.11 `handling`).
//!
//! Never rewrites body bytes: parts are sub-slices of the message (bare-LF bodies under
//! CRLF headers are real, and a CRLF normaliser truncated AudioCodes bodies in another
//! SRS). Accepts any part order, extra parts, a single-part body (metadata-only UPDATE,
//! SDP-only re-INVITE), both `application/rs-metadata+xml` (RFC 9806) and
//! `application/rs-metadata` (RFC 7866 as published, still sent by Metaswitch, SEMS,
//! Intrado and Avaya SBCE).

use vcontap_sip::multipart;
use vcontap_sip::{media_type, media_type_is};

/// The media types we take as metadata.
pub const METADATA_TYPES: [&str; 2] = ["application/rs-metadata+xml", "application/rs-metadata"];

/// What our `Accept` header lists (OPTIONS and 415 answers).
pub const ACCEPT: &str = "application/sdp, application/rs-metadata+xml, application/rs-metadata";

/// True for `application/rs-metadata+xml` and `application/rs-metadata` (parameters ignored).
pub fn is_metadata_type(content_type: &str) -> bool {
    METADATA_TYPES
        .iter()
        .any(|t| media_type_is(content_type, t))
}

/// Why a body cannot be used at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    /// A multipart Content-Type whose body has no part we can find (answer 400).
    #[error("multipart body without parts")]
    BrokenMultipart,
    /// A part (or the whole body) of an unknown type that the sender marked as required
    /// (answer 415 with `Accept`).
    #[error("required body part of unsupported type {0}")]
    UnsupportedRequired(String),
}

/// The pieces of a request body that the recorder reads, borrowed from the message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RsBody<'a> {
    /// The SDP offer (first `application/sdp` part, or the whole body).
    pub sdp: Option<&'a [u8]>,
    /// The rs-metadata document (first metadata part, or the whole body).
    pub metadata: Option<&'a [u8]>,
}

/// Splits a request body. `content_type` is the message's full `Content-Type` value
/// (`None` when absent), `disposition` its `Content-Disposition`.
///
/// Unknown parts are skipped unless marked required: a part is required only when it
/// says `handling=required` explicitly. RFC 3261 makes `required` the default, but Cisco's
/// `application/gtd` and other extras routinely come without the parameter, and refusing
/// a recording for an extra part would be the strictness that causes outages.
pub fn split<'a>(
    content_type: Option<&str>,
    disposition: Option<&str>,
    body: &'a [u8],
) -> Result<RsBody<'a>, BodyError> {
    let mut out = RsBody::default();
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(out);
    }
    let Some(ct) = content_type else {
        // No Content-Type: sniff, never reject.
        let t = body.trim_ascii_start();
        if t.starts_with(b"v=0") {
            out.sdp = Some(body);
        } else if t.starts_with(b"<") {
            out.metadata = Some(body);
        }
        return Ok(out);
    };
    if media_type_is(ct, "application/sdp") {
        out.sdp = Some(body);
        return Ok(out);
    }
    if is_metadata_type(ct) {
        out.metadata = Some(body);
        return Ok(out);
    }
    let is_multipart = media_type(ct)
        .get(..10)
        .is_some_and(|p| p.eq_ignore_ascii_case("multipart/"));
    if !is_multipart {
        let required = disposition
            .map(multipart::Disposition::parse)
            .is_some_and(|d| !d.optional && has_explicit_handling(disposition));
        if required {
            return Err(BodyError::UnsupportedRequired(media_type(ct).to_owned()));
        }
        return Ok(out);
    }
    let parts = multipart::parts(ct, body);
    if parts.is_empty() {
        return Err(BodyError::BrokenMultipart);
    }
    for part in &parts {
        let pct = part.content_type.unwrap_or("");
        if media_type_is(pct, "application/sdp")
            || (part.content_type.is_none() && part.body.trim_ascii_start().starts_with(b"v=0"))
        {
            out.sdp = out.sdp.or(Some(part.body));
        } else if is_metadata_type(pct)
            || part
                .disposition()
                .is_some_and(|d| d.is("recording-session"))
        {
            // The disposition alone identifies metadata: BroadWorks has sent a mangled
            // Content-Type (`application/ +xml`) with `recording-session`.
            out.metadata = out.metadata.or(Some(part.body));
        } else if part.header("Content-Disposition").is_some_and(|d| {
            has_explicit_handling(Some(d)) && !multipart::Disposition::parse(d).optional
        }) {
            return Err(BodyError::UnsupportedRequired(media_type(pct).to_owned()));
        }
    }
    Ok(out)
}

fn has_explicit_handling(disposition: Option<&str>) -> bool {
    disposition
        .and_then(|d| d.split_once(';'))
        .and_then(|(_, p)| vcontap_sip::param(p, "handling"))
        .is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CT: &str = "multipart/mixed;boundary=b1";

    fn body(nl: &str, meta_first: bool) -> String {
        let sdp =
            format!("--b1{nl}Content-Type: application/sdp{nl}{nl}v=0{nl}m=audio 1 RTP/AVP 0{nl}");
        let meta = format!(
            "--b1{nl}Content-Type: application/rs-metadata{nl}Content-Disposition: recording-session{nl}{nl}<recording/>{nl}"
        );
        let extra = format!("--b1{nl}Content-Type: application/gtd{nl}Content-Disposition: signal;handling=optional{nl}{nl}IAM,{nl}");
        if meta_first {
            format!("{meta}{extra}{sdp}--b1--{nl}")
        } else {
            format!("{sdp}{meta}{extra}--b1--{nl}")
        }
    }

    #[test]
    fn any_order_both_line_endings_bytes_untouched() {
        for nl in ["\r\n", "\n"] {
            for first in [false, true] {
                let b = body(nl, first);
                let r = split(Some(CT), None, b.as_bytes()).unwrap();
                assert_eq!(
                    r.sdp.unwrap(),
                    format!("v=0{nl}m=audio 1 RTP/AVP 0").as_bytes()
                );
                assert_eq!(r.metadata.unwrap(), b"<recording/>");
                // Sub-slices of the input: nothing was copied or normalised.
                let range = b.as_bytes().as_ptr_range();
                assert!(range.contains(&r.sdp.unwrap().as_ptr()));
            }
        }
    }

    #[test]
    fn single_part_bodies_and_sniffing() {
        let r = split(Some("application/rs-metadata"), None, b"<x/>").unwrap();
        assert_eq!(r.metadata, Some(&b"<x/>"[..]));
        let r = split(Some("Application/SDP"), None, b"v=0\r\n").unwrap();
        assert_eq!(r.sdp, Some(&b"v=0\r\n"[..]));
        let r = split(None, None, b"  <recording/>").unwrap();
        assert!(r.metadata.is_some());
        assert_eq!(
            split(Some("text/plain"), None, b"hi").unwrap(),
            RsBody::default()
        );
        assert_eq!(split(Some(CT), None, b"\r\n").unwrap(), RsBody::default());
    }

    #[test]
    fn required_unknown_is_415_and_broken_multipart_is_400() {
        assert_eq!(
            split(Some("text/plain"), Some("render;handling=required"), b"hi"),
            Err(BodyError::UnsupportedRequired("text/plain".into()))
        );
        let b = "--b1\r\nContent-Type: application/isup\r\nContent-Disposition: signal; handling=required\r\n\r\nx\r\n--b1--";
        assert!(matches!(
            split(Some(CT), None, b.as_bytes()),
            Err(BodyError::UnsupportedRequired(_))
        ));
        assert_eq!(
            split(Some(CT), None, b"no delimiter at all"),
            Err(BodyError::BrokenMultipart)
        );
    }

    #[test]
    fn mangled_type_found_by_disposition_and_mismatched_boundary() {
        let b = "--real\nContent-Type:application/ +xml\nContent-Disposition:recording-session\n\n<r/>\n--real\nContent-Type: application/sdp\n\nv=0\n--real--";
        let r = split(
            Some("multipart/mixed;boundary=declared"),
            None,
            b.as_bytes(),
        )
        .unwrap();
        assert_eq!(r.metadata, Some(&b"<r/>"[..]));
        assert_eq!(r.sdp, Some(&b"v=0"[..]));
    }

    #[test]
    fn truncated_and_garbage_never_panic() {
        let b = body("\r\n", false);
        for n in 0..b.len() {
            let _ = split(Some(CT), None, &b.as_bytes()[..n]);
            let _ = split(None, None, &b.as_bytes()[n..]);
        }
    }
}
