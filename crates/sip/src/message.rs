//! The SIP message: start line, the raw header list and the body, parsed lazily.
//!
//! [`Message::parse`] does one pass over the header section, splitting it into
//! `(name, value)` slices of the input; typed accessors ([`Message::cseq`],
//! [`Message::from`]...) parse their header on demand. It is lenient the way a passive
//! observer must be: LF-only line endings, leading CRLFs, folded headers and a header that
//! is not UTF-8 or has no colon never cost the rest of the message.

use memchr::memchr;

use crate::header::{
    param, parse_cseq, parse_name_addr, parse_via, split_comma_list, CSeq, NameAddr, NameMatcher,
    Via,
};

/// Most headers kept per message. Real messages carry 10-40; the bound keeps a hostile
/// message from growing the header `Vec` without limit. Further headers are ignored and
/// [`Message::headers_truncated`] is set.
pub const MAX_HEADERS: usize = 256;

/// Headers reserved up front: a typical INVITE fits, so parsing allocates once.
const INITIAL_HEADERS: usize = 16;

/// Errors of [`Message::parse`]. Only the start line can make a message unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SipError {
    /// The buffer is empty or holds only line breaks.
    #[error("empty SIP message")]
    Empty,
    /// The start line is neither a request line nor a status line.
    #[error("malformed SIP start line")]
    BadStartLine,
    /// The start line is not valid UTF-8.
    #[error("SIP start line is not UTF-8")]
    NotUtf8StartLine,
}

/// A SIP method. Methods are case-sensitive (RFC 3261 §7.1): `invite` is `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method<'a> {
    /// INVITE
    Invite,
    /// ACK
    Ack,
    /// BYE
    Bye,
    /// CANCEL
    Cancel,
    /// UPDATE (RFC 3311)
    Update,
    /// PRACK (RFC 3262)
    Prack,
    /// INFO (RFC 6086)
    Info,
    /// REFER (RFC 3515)
    Refer,
    /// NOTIFY (RFC 6665)
    Notify,
    /// OPTIONS
    Options,
    /// REGISTER
    Register,
    /// SUBSCRIBE (RFC 6665)
    Subscribe,
    /// MESSAGE (RFC 3428)
    Message,
    /// PUBLISH (RFC 3903)
    Publish,
    /// Any other extension method, as written.
    Other(&'a str),
}

impl<'a> Method<'a> {
    /// The method name as it appears on the wire (borrowed from the message, not from
    /// this value, so it outlives a temporary `Method`).
    pub fn as_str(&self) -> &'a str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Update => "UPDATE",
            Method::Prack => "PRACK",
            Method::Info => "INFO",
            Method::Refer => "REFER",
            Method::Notify => "NOTIFY",
            Method::Options => "OPTIONS",
            Method::Register => "REGISTER",
            Method::Subscribe => "SUBSCRIBE",
            Method::Message => "MESSAGE",
            Method::Publish => "PUBLISH",
            Method::Other(s) => s,
        }
    }

    /// Parses a method token (trimmed, case-sensitive).
    pub fn parse(s: &'a str) -> Method<'a> {
        let s = s.trim();
        match s {
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "UPDATE" => Method::Update,
            "PRACK" => Method::Prack,
            "INFO" => Method::Info,
            "REFER" => Method::Refer,
            "NOTIFY" => Method::Notify,
            "OPTIONS" => Method::Options,
            "REGISTER" => Method::Register,
            "SUBSCRIBE" => Method::Subscribe,
            "MESSAGE" => Method::Message,
            "PUBLISH" => Method::Publish,
            other => Method::Other(other),
        }
    }
}

impl std::fmt::Display for Method<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the start line says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind<'a> {
    /// A request line: `METHOD Request-URI SIP/2.0`.
    Request {
        /// Request method.
        method: Method<'a>,
        /// Request-URI as written.
        uri: &'a str,
    },
    /// A status line: `SIP/2.0 code reason`.
    Response {
        /// Status code (100..=699).
        code: u16,
        /// Reason phrase (may be empty).
        reason: &'a str,
    },
}

/// One raw header line, borrowed from the message.
///
/// A folded header (continuation lines starting with SP or HTAB, RFC 3261 §7.3.1) keeps
/// its continuation lines: `value` then spans the raw bytes including the embedded
/// `CRLF WSP`, which RFC 3261 defines as equivalent to a single SP. Typed accessors treat
/// it as whitespace; use [`unfold`] before showing such a value to people.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    /// Header name as written (long or compact form), trimmed.
    pub name: &'a str,
    /// Header value, trimmed.
    pub value: &'a str,
}

/// Replaces line folds (`CRLF`/`LF` followed by whitespace) in a header value with one
/// space. Borrows when there is nothing to unfold.
pub fn unfold(value: &str) -> std::borrow::Cow<'_, str> {
    if !value.contains('\n') {
        return std::borrow::Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len());
    for (i, line) in value.split('\n').enumerate() {
        let line = line.trim_end_matches('\r');
        if i == 0 {
            out.push_str(line);
        } else {
            out.push(' ');
            out.push_str(line.trim_start());
        }
    }
    std::borrow::Cow::Owned(out)
}

/// A parsed SIP message borrowing from its input buffer.
#[derive(Debug, Clone)]
pub struct Message<'a> {
    raw: &'a [u8],
    kind: Kind<'a>,
    headers: Vec<Header<'a>>,
    body: &'a [u8],
    headers_truncated: bool,
    skipped_headers: usize,
    complete_head: bool,
}

impl<'a> Message<'a> {
    /// Parses one SIP message (one UDP payload, or one message cut by [`crate::frame`]).
    ///
    /// Lenient: leading CR/LF are skipped; LF-only endings are accepted; a header line that
    /// is not UTF-8 or has no colon is skipped (counted in [`Message::skipped_headers`]);
    /// folded headers are joined (see [`Header`]). The body is everything after the blank
    /// line, cut to `Content-Length` when that is present and smaller (UDP padding), left
    /// as is when absent or larger (truncated capture). A message without a blank line has
    /// an empty body and [`Message::has_complete_head`] false.
    pub fn parse(buf: &'a [u8]) -> Result<Message<'a>, SipError> {
        let start = buf
            .iter()
            .position(|&b| b != b'\r' && b != b'\n')
            .ok_or(SipError::Empty)?;
        let rest = buf.get(start..).unwrap_or_default();
        let (line, mut pos) = match memchr(b'\n', rest) {
            Some(i) => (
                rest.get(..i).unwrap_or_default(),
                start.saturating_add(i).saturating_add(1),
            ),
            None => (rest, buf.len()),
        };
        let line = std::str::from_utf8(trim_cr(line)).map_err(|_| SipError::NotUtf8StartLine)?;
        let kind = parse_start_line(line)?;

        let mut headers: Vec<Header<'a>> = Vec::with_capacity(INITIAL_HEADERS);
        let mut headers_truncated = false;
        let mut skipped_headers = 0usize;
        let mut body_start = None;
        // Offset of the value of the last kept header, while a continuation may extend it.
        let mut foldable: Option<usize> = None;
        while pos < buf.len() {
            let tail = buf.get(pos..).unwrap_or_default();
            let (line_end, next) = match memchr(b'\n', tail) {
                Some(i) => (
                    pos.saturating_add(i),
                    pos.saturating_add(i).saturating_add(1),
                ),
                None => (buf.len(), buf.len()),
            };
            let line = trim_cr(buf.get(pos..line_end).unwrap_or_default());
            let line_end = pos.saturating_add(line.len());
            if line.is_empty() {
                body_start = Some(next);
                break;
            }
            if matches!(line.first(), Some(b' ' | b'\t')) {
                if let Some(vstart) = foldable {
                    match buf
                        .get(vstart..line_end)
                        .and_then(|v| std::str::from_utf8(v).ok())
                    {
                        Some(v) => {
                            if let Some(h) = headers.last_mut() {
                                h.value = v.trim();
                            }
                        }
                        None => foldable = None,
                    }
                }
                pos = next;
                continue;
            }
            foldable = None;
            pos = next;
            let Some(colon) = memchr(b':', line) else {
                skipped_headers = skipped_headers.saturating_add(1);
                continue;
            };
            let Ok(text) = std::str::from_utf8(line) else {
                skipped_headers = skipped_headers.saturating_add(1);
                continue;
            };
            let name = text.get(..colon).unwrap_or("").trim_end();
            let raw_value = text.get(colon.saturating_add(1)..).unwrap_or("");
            let value = raw_value.trim();
            if name.is_empty() || !name.bytes().all(is_token_byte) {
                skipped_headers = skipped_headers.saturating_add(1);
                continue;
            }
            if headers.len() >= MAX_HEADERS {
                headers_truncated = true;
                continue;
            }
            let lead = raw_value.len().saturating_sub(raw_value.trim_start().len());
            foldable = Some(
                line_end
                    .saturating_sub(raw_value.len())
                    .saturating_add(lead),
            );
            headers.push(Header { name, value });
        }

        let mut msg = Message {
            raw: buf,
            kind,
            headers,
            body: &[],
            headers_truncated,
            skipped_headers,
            complete_head: body_start.is_some(),
        };
        if let Some(bs) = body_start {
            let mut body = buf.get(bs..).unwrap_or_default();
            if let Some(cl) = msg
                .header("Content-Length")
                .and_then(|v| v.trim().parse::<usize>().ok())
            {
                if cl < body.len() {
                    body = body.get(..cl).unwrap_or_default();
                }
            }
            msg.body = body;
        }
        Ok(msg)
    }

    /// The start line.
    pub fn kind(&self) -> Kind<'a> {
        self.kind
    }

    /// True for requests.
    pub fn is_request(&self) -> bool {
        matches!(self.kind, Kind::Request { .. })
    }

    /// The request method; for a response, the method of its `CSeq`.
    pub fn method(&self) -> Option<Method<'a>> {
        match self.kind {
            Kind::Request { method, .. } => Some(method),
            Kind::Response { .. } => self.cseq().map(|c| c.method),
        }
    }

    /// The status code of a response.
    pub fn status(&self) -> Option<u16> {
        match self.kind {
            Kind::Response { code, .. } => Some(code),
            Kind::Request { .. } => None,
        }
    }

    /// The Request-URI of a request.
    pub fn request_uri(&self) -> Option<&'a str> {
        match self.kind {
            Kind::Request { uri, .. } => Some(uri),
            Kind::Response { .. } => None,
        }
    }

    /// All kept headers in order.
    pub fn headers(&self) -> &[Header<'a>] {
        &self.headers
    }

    /// True when more than [`MAX_HEADERS`] headers were present (the rest were ignored).
    pub fn headers_truncated(&self) -> bool {
        self.headers_truncated
    }

    /// Number of header lines skipped as malformed (no colon, bad name, not UTF-8).
    pub fn skipped_headers(&self) -> usize {
        self.skipped_headers
    }

    /// True when the header section ended with a blank line (false for a cut message).
    pub fn has_complete_head(&self) -> bool {
        self.complete_head
    }

    /// The first value of a header, case-insensitive, matching long and compact forms
    /// (`header("Call-ID")` also finds `i:`, `header("i")` also finds `Call-ID:`).
    pub fn header(&self, name: &str) -> Option<&'a str> {
        let m = NameMatcher::new(name);
        self.headers
            .iter()
            .find(|h| m.matches(h.name))
            .map(|h| h.value)
    }

    /// Every value of a header (long and compact forms) in order. A comma-separated line
    /// is one value: split it with [`split_comma_list`].
    pub fn headers_named<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'a str> + 's {
        let m = NameMatcher::new(name);
        self.headers
            .iter()
            .filter(move |h| m.matches(h.name))
            .map(|h| h.value)
    }

    /// `Call-ID`, trimmed.
    pub fn call_id(&self) -> Option<&'a str> {
        self.header("Call-ID")
            .map(str::trim)
            .filter(|s| !s.is_empty())
    }

    /// `CSeq`, parsed.
    pub fn cseq(&self) -> Option<CSeq<'a>> {
        self.header("CSeq").and_then(parse_cseq)
    }

    /// `From`, parsed.
    pub fn from(&self) -> Option<NameAddr<'a>> {
        self.header("From").and_then(parse_name_addr)
    }

    /// `To`, parsed.
    pub fn to(&self) -> Option<NameAddr<'a>> {
        self.header("To").and_then(parse_name_addr)
    }

    /// The media type of `Content-Type` without parameters (e.g. `application/sdp`);
    /// compare it case-insensitively (see [`media_type_is`]).
    pub fn content_type(&self) -> Option<&'a str> {
        self.header("Content-Type")
            .map(media_type)
            .filter(|s| !s.is_empty())
    }

    /// Every `Via` entry, top first (several lines and comma-separated entries).
    pub fn vias(&self) -> impl Iterator<Item = Via<'a>> + '_ {
        self.headers_named("Via")
            .flat_map(split_comma_list)
            .filter_map(parse_via)
    }

    /// The `branch` parameter of the topmost `Via`.
    pub fn top_via_branch(&self) -> Option<&'a str> {
        let top = split_comma_list(self.header("Via")?).next()?;
        match parse_via(top) {
            Some(v) => v.branch(),
            // Lenient: a Via we cannot split may still carry a branch parameter.
            None => top
                .split_once(';')
                .and_then(|(_, p)| param(p, "branch"))
                .filter(|b| !b.is_empty()),
        }
    }

    /// The body (see [`Message::parse`] for how it is cut).
    pub fn body(&self) -> &'a [u8] {
        self.body
    }

    /// The whole input buffer given to [`Message::parse`].
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }
}

/// The media type of a `Content-Type` value: everything before `;`, trimmed.
pub fn media_type(content_type: &str) -> &str {
    content_type.split(';').next().unwrap_or("").trim()
}

/// True when the media type of `content_type` equals `wanted` (case-insensitive).
pub fn media_type_is(content_type: &str, wanted: &str) -> bool {
    media_type(content_type).eq_ignore_ascii_case(wanted)
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// RFC 3261 token characters.
pub(crate) fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
        )
}

fn parse_start_line(line: &str) -> Result<Kind<'_>, SipError> {
    let line = line.trim();
    if line
        .get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case("SIP/"))
    {
        let (_version, rest) = line.split_once(' ').ok_or(SipError::BadStartLine)?;
        let rest = rest.trim_start();
        let code_str = rest.get(..3).ok_or(SipError::BadStartLine)?;
        if !code_str.bytes().all(|b| b.is_ascii_digit()) {
            return Err(SipError::BadStartLine);
        }
        let code: u16 = code_str.parse().map_err(|_| SipError::BadStartLine)?;
        if !(100..=699).contains(&code) {
            return Err(SipError::BadStartLine);
        }
        let after = rest.get(3..).unwrap_or("");
        if !after.is_empty() && !after.starts_with([' ', '\t']) {
            return Err(SipError::BadStartLine);
        }
        return Ok(Kind::Response {
            code,
            reason: after.trim(),
        });
    }
    let (method, rest) = line.split_once(' ').ok_or(SipError::BadStartLine)?;
    let (uri, version) = rest.rsplit_once(' ').ok_or(SipError::BadStartLine)?;
    let uri = uri.trim();
    if method.is_empty()
        || !method.bytes().all(is_token_byte)
        || uri.is_empty()
        || !version
            .get(..4)
            .is_some_and(|p| p.eq_ignore_ascii_case("SIP/"))
    {
        return Err(SipError::BadStartLine);
    }
    Ok(Kind::Request {
        method: Method::parse(method),
        uri,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const INVITE: &str = "INVITE sip:bob@biloxi.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds, SIP/2.0/UDP proxy.example;branch=z9hG4bKp2\r\n\
Via: SIP/2.0/TCP edge.example:5061;branch=z9hG4bKedge\r\n\
Max-Forwards: 70\r\n\
To: Bob <sip:bob@biloxi.example.com>\r\n\
From: \"Alice \\\"A\\\", Liddell\" <sip:alice@atlanta.example.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.atlanta.example.com \r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:alice@pc33.atlanta.example.com>\r\n\
Subject: first line\r\n\x20second line\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 10\r\n\
\r\n\
v=0\r\no=x\r\nPADDING";

    #[test]
    fn parses_request() {
        let m = Message::parse(INVITE.as_bytes()).unwrap();
        assert!(m.is_request());
        assert_eq!(
            m.kind(),
            Kind::Request {
                method: Method::Invite,
                uri: "sip:bob@biloxi.example.com"
            }
        );
        assert_eq!(m.method(), Some(Method::Invite));
        assert_eq!(m.status(), None);
        assert_eq!(m.request_uri(), Some("sip:bob@biloxi.example.com"));
        assert_eq!(m.call_id(), Some("a84b4c76e66710@pc33.atlanta.example.com"));
        let c = m.cseq().unwrap();
        assert_eq!((c.seq, c.method), (314159, Method::Invite));
        let f = m.from().unwrap();
        assert_eq!(f.display.as_deref(), Some("Alice \"A\", Liddell"));
        assert_eq!(f.tag, Some("1928301774"));
        let t = m.to().unwrap();
        assert_eq!(t.display.as_deref(), Some("Bob"));
        assert_eq!(t.tag, None);
        assert_eq!(m.content_type(), Some("application/sdp"));
        assert_eq!(m.top_via_branch(), Some("z9hG4bK776asdhds"));
        let vias: Vec<_> = m.vias().map(|v| v.branch().unwrap()).collect();
        assert_eq!(vias, ["z9hG4bK776asdhds", "z9hG4bKp2", "z9hG4bKedge"]);
        assert_eq!(m.headers_named("via").count(), 2);
        assert_eq!(m.body(), b"v=0\r\no=x\r\n");
        assert_eq!(m.raw(), INVITE.as_bytes());
        assert!(m.has_complete_head());
        assert!(!m.headers_truncated());
        assert_eq!(m.skipped_headers(), 0);
        // Folded header keeps its continuation.
        let subj = m.header("subject").unwrap();
        assert_eq!(subj, "first line\r\n second line");
        assert_eq!(unfold(subj), "first line second line");
        assert_eq!(m.header("Max-Forwards"), Some("70"));
        assert_eq!(m.header("X-Missing"), None);
    }

    #[test]
    fn compact_forms_and_lf_only() {
        let raw = "\r\n\r\nSIP/2.0 180 Ringing\n\
v: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKc\n\
f: <sip:a@x>;tag=ft\n\
t: \"B\" <sip:b@y>;tag=tt\n\
i: cid-123\n\
CSeq: 5 INVITE\n\
m: <sip:b@10.0.0.2>\n\
c: Application/SDP ; charset=x\n\
k: timer\n\
s: hi\n\
x: 1800;refresher=uac\n\
l: 4\n\
\n\
v=0\nXX";
        let m = Message::parse(raw.as_bytes()).unwrap();
        assert_eq!(
            m.kind(),
            Kind::Response {
                code: 180,
                reason: "Ringing"
            }
        );
        assert!(!m.is_request());
        assert_eq!(m.status(), Some(180));
        assert_eq!(m.method(), Some(Method::Invite));
        assert_eq!(m.call_id(), Some("cid-123"));
        assert_eq!(m.from().unwrap().tag, Some("ft"));
        assert_eq!(m.to().unwrap().display.as_deref(), Some("B"));
        assert_eq!(m.top_via_branch(), Some("z9hG4bKc"));
        assert_eq!(m.header("Contact"), Some("<sip:b@10.0.0.2>"));
        assert_eq!(m.content_type(), Some("Application/SDP"));
        assert!(media_type_is(m.header("c").unwrap(), "application/sdp"));
        assert_eq!(m.header("Supported"), Some("timer"));
        assert_eq!(m.header("Subject"), Some("hi"));
        assert_eq!(m.header("Session-Expires"), Some("1800;refresher=uac"));
        assert_eq!(m.header("Content-Length"), Some("4"));
        assert_eq!(m.header("i"), Some("cid-123"));
        assert_eq!(m.body(), b"v=0\n");
    }

    #[test]
    fn multiple_same_name_headers() {
        let raw = "NOTIFY sip:a@b SIP/2.0\r\nContact: <sip:1@a>, \"x,y\" <sip:2@a>\r\nm: <sip:3@a>\r\nCONTACT: <sip:4@a>\r\n\r\n";
        let m = Message::parse(raw.as_bytes()).unwrap();
        let all: Vec<_> = m.headers_named("Contact").collect();
        assert_eq!(all.len(), 3);
        let items: Vec<_> = all.iter().flat_map(|v| split_comma_list(v)).collect();
        assert_eq!(
            items,
            ["<sip:1@a>", "\"x,y\" <sip:2@a>", "<sip:3@a>", "<sip:4@a>"]
        );
        assert_eq!(m.headers_named("m").count(), 3);
        assert_eq!(m.method(), Some(Method::Notify));
        assert_eq!(m.body(), b"");
    }

    #[test]
    fn body_without_content_length_and_larger_content_length() {
        let m = Message::parse(b"BYE sip:a@b SIP/2.0\r\nCall-ID: x\r\n\r\nabc").unwrap();
        assert_eq!(m.body(), b"abc");
        let m = Message::parse(b"BYE sip:a@b SIP/2.0\r\nContent-Length: 99\r\n\r\nabc").unwrap();
        assert_eq!(m.body(), b"abc");
        let m = Message::parse(b"BYE sip:a@b SIP/2.0\r\nContent-Length: zz\r\n\r\nabc").unwrap();
        assert_eq!(m.body(), b"abc");
        let m = Message::parse(b"BYE sip:a@b SIP/2.0\r\nContent-Length: 0\r\n\r\nabc").unwrap();
        assert_eq!(m.body(), b"");
    }

    #[test]
    fn bad_headers_are_skipped_not_fatal() {
        let mut raw = b"OPTIONS sip:a@b SIP/2.0\r\nX-Bad: \xff\xfe\r\nno colon here\r\n: empty name\r\nBad Name: v\r\nCall-ID: keep\r\n \xff continuation bad\r\nTo: <sip:t@b>\r\n\r\n".to_vec();
        let m = Message::parse(&raw).unwrap();
        assert_eq!(m.skipped_headers(), 4);
        assert_eq!(m.call_id(), Some("keep"));
        assert_eq!(m.to().unwrap().uri, "sip:t@b");
        // Invalid UTF-8 in the start line is an error.
        raw[0] = 0xff;
        assert_eq!(
            Message::parse(&raw).unwrap_err(),
            SipError::NotUtf8StartLine
        );
    }

    #[test]
    fn too_many_headers_are_bounded() {
        let mut raw = String::from("MESSAGE sip:a@b SIP/2.0\r\n");
        for i in 0..(MAX_HEADERS + 50) {
            raw.push_str(&format!("X-H{i}: {i}\r\n"));
        }
        raw.push_str("Call-ID: late\r\n\r\nbody");
        let m = Message::parse(raw.as_bytes()).unwrap();
        assert_eq!(m.headers().len(), MAX_HEADERS);
        assert!(m.headers_truncated());
        assert_eq!(m.call_id(), None);
        assert_eq!(m.body(), b"body");
        assert_eq!(m.method(), Some(Method::Message));
    }

    #[test]
    fn start_line_errors() {
        assert_eq!(Message::parse(b"").unwrap_err(), SipError::Empty);
        assert_eq!(Message::parse(b"\r\n\r\n").unwrap_err(), SipError::Empty);
        for bad in [
            &b"HTTP/1.1 200 OK\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\n\r\n",
            b"SIP/2.0 20 OK\r\n",
            b"SIP/2.0 2000 OK\r\n",
            b"SIP/2.0 999 Nope\r\n",
            b"SIP/2.0\r\n",
            b"INVITE\r\n",
            b"INVITE sip:a@b\r\n",
            b"INV@TE sip:a@b SIP/2.0\r\n",
            b"\x16\x03\x01\x02\x00\x01",
        ] {
            assert_eq!(
                Message::parse(bad).unwrap_err(),
                SipError::BadStartLine,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let m = Message::parse(b"SIP/2.0 200\r\n").unwrap();
        assert_eq!(
            m.kind(),
            Kind::Response {
                code: 200,
                reason: ""
            }
        );
        assert!(!m.has_complete_head());
        assert_eq!(m.method(), None);
        let m = Message::parse(b"invite sip:a@b sip/2.0").unwrap();
        assert_eq!(m.method(), Some(Method::Other("invite")));
    }

    #[test]
    fn methods_round_trip() {
        for s in [
            "INVITE",
            "ACK",
            "BYE",
            "CANCEL",
            "UPDATE",
            "PRACK",
            "INFO",
            "REFER",
            "NOTIFY",
            "OPTIONS",
            "REGISTER",
            "SUBSCRIBE",
            "MESSAGE",
            "PUBLISH",
            "FOO",
        ] {
            let m = Method::parse(s);
            assert_eq!(m.as_str(), s);
            assert_eq!(m.to_string(), s);
        }
        assert_eq!(Method::parse("FOO"), Method::Other("FOO"));
        assert_eq!(Method::parse(" BYE "), Method::Bye);
    }

    #[test]
    fn truncation_at_every_offset_never_panics() {
        let raw = INVITE.as_bytes();
        for n in 0..=raw.len() {
            let cut = raw.get(..n).unwrap();
            if let Ok(m) = Message::parse(cut) {
                let _ = (m.call_id(), m.cseq(), m.from(), m.to(), m.content_type());
                let _ = (m.top_via_branch(), m.vias().count(), m.method());
                assert!(m.body().len() <= cut.len());
            }
        }
    }

    #[test]
    fn unfold_variants() {
        assert_eq!(unfold("a"), "a");
        assert_eq!(unfold("a\n\tb\r\n  c"), "a b c");
    }
}
