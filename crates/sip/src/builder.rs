//! Building SIP responses to a parsed request (RFC 3261 §8.2.6): the counterpart of
//! [`crate::Message::parse`] for a user-agent server such as the SIPREC recorder.
//!
//! Owns the header copying rules (every `Via` in order, `From`, `To` with our tag added,
//! `Call-ID`, `CSeq`, `Record-Route` for dialog-creating responses) and the framing
//! (`Content-Length` always written, computed from the body). It does not own transaction
//! or dialog state: the caller decides the code, the To-tag and the extra headers.
//!
//! Hand-written beside the parser for the same reason the parser is: the recorder answers
//! the messages our lenient parser accepted (compact header forms, folded headers), and a
//! response is a few `push_str`s. Values are unfolded and any stray CR/LF is dropped, so a
//! hostile request can never inject a header into our answer.

use crate::message::{unfold, Message};

/// A SIP response under construction. Headers come out in the order they were added;
/// [`ResponseBuilder::body`] or [`ResponseBuilder::finish`] appends `Content-Length` (and
/// `Content-Type`) and the body.
#[derive(Debug, Clone)]
pub struct ResponseBuilder {
    buf: String,
}

/// The standard reason phrase of a status code (RFC 3261 §21 and extensions), or
/// `"Unknown"`.
pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        100 => "Trying",
        180 => "Ringing",
        183 => "Session Progress",
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Request Entity Too Large",
        415 => "Unsupported Media Type",
        420 => "Bad Extension",
        422 => "Session Interval Too Small",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        491 => "Request Pending",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// Appends `value` with line folds turned into spaces and any other CR/LF removed.
fn push_clean(buf: &mut String, value: &str) {
    let v = unfold(value);
    buf.extend(v.chars().filter(|&c| c != '\r' && c != '\n'));
}

/// True when `name` is a header we may write: a non-empty RFC 3261 token.
fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(crate::message::is_token_byte)
}

impl ResponseBuilder {
    /// Starts a response to `req` with `code` and its standard reason phrase; see
    /// [`ResponseBuilder::with_reason`].
    pub fn new(req: &Message<'_>, code: u16, to_tag: Option<&str>) -> ResponseBuilder {
        Self::with_reason(req, code, reason_phrase(code), to_tag)
    }

    /// Starts a response to `req`: status line, every `Via` (in order, RFC 3261 §8.2.6.2),
    /// `Record-Route` (101-299 only: those can create a dialog, §12.1.1), `From`, `To`
    /// (with `;tag=to_tag` appended unless the request's To already carries a tag, and
    /// never on a 100), `Call-ID` and `CSeq`. Missing request headers are skipped: the
    /// caller has already decided the request deserves an answer.
    pub fn with_reason(
        req: &Message<'_>,
        code: u16,
        reason: &str,
        to_tag: Option<&str>,
    ) -> ResponseBuilder {
        let mut b = ResponseBuilder {
            buf: String::with_capacity(512),
        };
        b.buf.push_str("SIP/2.0 ");
        b.buf.push_str(&code.clamp(100, 699).to_string());
        b.buf.push(' ');
        push_clean(&mut b.buf, reason);
        b.buf.push_str("\r\n");
        for v in req.headers_named("Via") {
            b = b.header("Via", v);
        }
        if (101..300).contains(&code) {
            for v in req.headers_named("Record-Route") {
                b = b.header("Record-Route", v);
            }
        }
        if let Some(v) = req.header("From") {
            b = b.header("From", v);
        }
        if let Some(v) = req.header("To") {
            let has_tag = req.to().is_some_and(|t| t.tag.is_some());
            b.buf.push_str("To: ");
            push_clean(&mut b.buf, v);
            if let Some(tag) = to_tag.filter(|t| !has_tag && code > 100 && !t.is_empty()) {
                b.buf.push_str(";tag=");
                push_clean(&mut b.buf, tag);
            }
            b.buf.push_str("\r\n");
        }
        if let Some(v) = req.header("Call-ID") {
            b = b.header("Call-ID", v);
        }
        if let Some(v) = req.header("CSeq") {
            b = b.header("CSeq", v);
        }
        b
    }

    /// Adds a header. A name that is not a SIP token is ignored; the value is cleaned of
    /// line breaks.
    pub fn header(mut self, name: &str, value: &str) -> ResponseBuilder {
        if valid_name(name) {
            self.buf.push_str(name);
            self.buf.push_str(": ");
            push_clean(&mut self.buf, value);
            self.buf.push_str("\r\n");
        }
        self
    }

    /// Finishes with `Content-Type`, the correct `Content-Length` and `body` (sent as is).
    pub fn body(mut self, content_type: &str, body: &[u8]) -> Vec<u8> {
        self = self.header("Content-Type", content_type);
        self.end(body)
    }

    /// Finishes without a body (`Content-Length: 0`).
    pub fn finish(self) -> Vec<u8> {
        self.end(&[])
    }

    fn end(mut self, body: &[u8]) -> Vec<u8> {
        self.buf.push_str("Content-Length: ");
        self.buf.push_str(&body.len().to_string());
        self.buf.push_str("\r\n\r\n");
        let mut out = self.buf.into_bytes();
        out.extend_from_slice(body);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &str = "INVITE sip:srs@10.0.0.2 SIP/2.0\r\n\
v: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1\r\n\
Via: SIP/2.0/UDP 10.0.0.9;branch=z9hG4bK0, SIP/2.0/TCP 10.0.0.8;branch=z9hG4bKx\r\n\
Record-Route: <sip:10.0.0.1;lr>\r\n\
f: \"Src\" <sip:src@10.0.0.1>;tag=abc\r\n\
t: <sip:srs@10.0.0.2>\r\n\
i: call-1@10.0.0.1\r\n\
CSeq: 7 INVITE\r\n\
Subject: a\r\n folded\r\n\
Content-Length: 0\r\n\r\n";

    #[test]
    fn copies_dialog_headers_and_adds_tag() {
        let req = Message::parse(INVITE.as_bytes()).unwrap();
        let out = ResponseBuilder::new(&req, 200, Some("srs1"))
            .header("Contact", "<sip:srs@10.0.0.2>")
            .body("application/sdp", b"v=0\n");
        let resp = Message::parse(&out).unwrap();
        assert_eq!(resp.status(), Some(200));
        let vias: Vec<_> = resp
            .vias()
            .map(|v| v.branch().unwrap().to_owned())
            .collect();
        assert_eq!(vias, ["z9hG4bK1", "z9hG4bK0", "z9hG4bKx"]);
        assert_eq!(resp.header("Record-Route"), Some("<sip:10.0.0.1;lr>"));
        assert_eq!(resp.from().unwrap().tag, Some("abc"));
        assert_eq!(resp.to().unwrap().tag, Some("srs1"));
        assert_eq!(resp.call_id(), Some("call-1@10.0.0.1"));
        assert_eq!(resp.cseq().unwrap().seq, 7);
        assert_eq!(resp.header("Content-Length"), Some("4"));
        assert_eq!(resp.body(), b"v=0\n");
        assert!(out.ends_with(b"\r\n\r\nv=0\n"));
    }

    #[test]
    fn no_tag_on_100_or_when_present_and_no_rr_on_final_errors() {
        let req = Message::parse(INVITE.as_bytes()).unwrap();
        let t = ResponseBuilder::new(&req, 100, Some("x")).finish();
        let t = Message::parse(&t).unwrap();
        assert_eq!(t.to().unwrap().tag, None);
        assert_eq!(t.header("Content-Length"), Some("0"));
        let e = Message::parse(&ResponseBuilder::new(&req, 486, Some("x")).finish())
            .unwrap()
            .header("Record-Route")
            .map(str::to_owned);
        assert_eq!(e, None);
        let tagged = INVITE.replace("t: <sip:srs@10.0.0.2>", "t: <sip:srs@10.0.0.2>;tag=old");
        let req = Message::parse(tagged.as_bytes()).unwrap();
        let r = ResponseBuilder::new(&req, 200, Some("new")).finish();
        assert_eq!(Message::parse(&r).unwrap().to().unwrap().tag, Some("old"));
    }

    #[test]
    fn hostile_values_cannot_inject_headers() {
        let req = Message::parse(INVITE.as_bytes()).unwrap();
        let out = ResponseBuilder::with_reason(&req, 999, "Bad\r\nX-Evil: 1", Some("t\r\nX: y"))
            .header("Bad Name", "v")
            .header("Subject", "a\r\nX-Evil: 2")
            .finish();
        let resp = Message::parse(&out).unwrap();
        assert_eq!(resp.status(), Some(699));
        assert_eq!(resp.header("X-Evil"), None);
        assert_eq!(resp.header("X"), None);
        assert_eq!(resp.header("Bad Name"), None);
        assert_eq!(resp.header("Subject"), Some("a X-Evil: 2"));
        assert_eq!(reason_phrase(487), "Request Terminated");
    }

    #[test]
    fn minimal_request_still_answers() {
        let req = Message::parse(b"OPTIONS sip:x SIP/2.0\r\n\r\n").unwrap();
        let out = ResponseBuilder::new(&req, 200, Some("t")).finish();
        assert_eq!(out, b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n");
    }
}
