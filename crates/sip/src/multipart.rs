//! MIME multipart bodies (RFC 2046 §5.1) as carried by SIP: SIPREC offers (SDP plus
//! `application/rs-metadata+xml`, RFC 7866), SIP-I/SIP-T (SDP plus ISUP), and friends.
//!
//! Zero-copy and bounded: parts borrow from the body, at most [`MAX_PARTS`] are returned
//! and nesting is followed at most [`MAX_NESTING`] levels deep.

use memchr::{memchr, memmem};

use crate::header::param;
use crate::message::media_type_is;

/// Most parts returned from one multipart body. SIPREC uses 2, SIP-I 2-3.
pub const MAX_PARTS: usize = 16;

/// Longest boundary accepted. RFC 2046 allows 70 characters; some gateways exceed that.
pub const MAX_BOUNDARY_LEN: usize = 200;

/// How many multipart levels [`find`] descends (nested `multipart/mixed` in SIP is rare).
pub const MAX_NESTING: usize = 2;

/// One body part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part<'a> {
    /// The part's full `Content-Type` value (with parameters), trimmed.
    pub content_type: Option<&'a str>,
    /// The raw part header section (empty when absent or not UTF-8).
    pub headers: &'a str,
    /// The part body, without the line break that precedes the next delimiter.
    pub body: &'a [u8],
}

impl<'a> Part<'a> {
    /// A part header by name (case-insensitive), first occurrence, trimmed.
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers.lines().find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    /// The part's `Content-Disposition` (RFC 3261 §20.11), parsed.
    pub fn disposition(&self) -> Option<Disposition<'a>> {
        self.header("Content-Disposition").map(Disposition::parse)
    }
}

/// A `Content-Disposition` value: `session;handling=required`, `recording-session`...
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Disposition<'a> {
    /// The disposition type as written (`session`, `render`, `recording-session`...).
    pub kind: &'a str,
    /// `handling=optional` was given. RFC 3261 §20.11: the default is `required`, so a
    /// part without the parameter must be understood.
    pub optional: bool,
}

impl<'a> Disposition<'a> {
    /// Parses a `Content-Disposition` value (lenient: spaces around `;` and `=`).
    pub fn parse(value: &'a str) -> Disposition<'a> {
        let (kind, params) = value.split_once(';').unwrap_or((value, ""));
        Disposition {
            kind: kind.trim(),
            optional: param(params, "handling")
                .is_some_and(|h| h.trim_matches('"').eq_ignore_ascii_case("optional")),
        }
    }

    /// True when the type is `kind` (case-insensitive).
    pub fn is(&self, kind: &str) -> bool {
        self.kind.eq_ignore_ascii_case(kind)
    }
}

/// The `boundary` parameter of a `Content-Type` value, unquoted.
pub fn boundary(content_type_header: &str) -> Option<&str> {
    let (_, params) = content_type_header.split_once(';')?;
    let b = param(params, "boundary")?;
    let b = b
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(b);
    (!b.is_empty() && b.len() <= MAX_BOUNDARY_LEN).then_some(b)
}

/// The boundary used by the first `--` line of a body, for bodies whose Content-Type
/// lost its `boundary` parameter.
fn infer_boundary(body: &[u8]) -> Option<&[u8]> {
    body.split(|&b| b == b'\n')
        .take(MAX_PARTS)
        .find_map(|line| line.strip_prefix(b"--"))
        .map(<[u8]>::trim_ascii_end)
        .filter(|b| !b.is_empty() && b.len() <= MAX_BOUNDARY_LEN)
}

/// Splits a multipart body into its parts. The boundary comes from `content_type_header`
/// (quoted or not) or, when that has none, from the first `--` line of the body. Preamble
/// and epilogue are ignored; a missing close delimiter (truncated body) keeps the last part.
///
/// When the declared boundary splits nothing (a gateway that rewrote one but not the
/// other), the boundary of the first `--` line is tried before giving up.
pub fn parts<'a>(content_type_header: &str, body: &'a [u8]) -> Vec<Part<'a>> {
    let inferred = infer_boundary(body);
    match boundary(content_type_header) {
        Some(b) => {
            let out = parts_with(b.as_bytes(), body);
            match inferred {
                Some(i) if out.is_empty() && !i.starts_with(b.as_bytes()) => parts_with(i, body),
                _ => out,
            }
        }
        None => inferred.map(|b| parts_with(b, body)).unwrap_or_default(),
    }
}

fn parts_with<'a>(b: &[u8], body: &'a [u8]) -> Vec<Part<'a>> {
    let mut out = Vec::new();
    let mut delim = Vec::with_capacity(b.len().saturating_add(2));
    delim.extend_from_slice(b"--");
    delim.extend_from_slice(b);

    let is_delimiter = |pos: usize| -> bool {
        let line_start = pos == 0 || body.get(pos.wrapping_sub(1)) == Some(&b'\n');
        let after = body
            .get(pos.saturating_add(delim.len())..)
            .unwrap_or_default();
        let line = match memchr(b'\n', after) {
            Some(i) => after.get(..i).unwrap_or_default(),
            None => after,
        };
        // Only "--" or transport padding may follow, so "--b" does not match "--bb".
        line_start && (line.starts_with(b"--") || line.iter().all(u8::is_ascii_whitespace))
    };
    let mut finder = memmem::find_iter(body, &delim).filter(|&p| is_delimiter(p));
    let Some(mut cur) = finder.next() else {
        return out;
    };
    while out.len() < MAX_PARTS {
        let after = cur.saturating_add(delim.len());
        if body.get(after..).is_some_and(|a| a.starts_with(b"--")) {
            break;
        }
        let content_start = match body.get(after..).and_then(|a| memchr(b'\n', a)) {
            Some(i) => after.saturating_add(i).saturating_add(1),
            None => body.len(),
        };
        let next = finder.next();
        let content_end = match next {
            Some(n) => {
                let mut e = n;
                if e > 0 && body.get(e - 1) == Some(&b'\n') {
                    e -= 1;
                    if e > 0 && body.get(e - 1) == Some(&b'\r') {
                        e -= 1;
                    }
                }
                e.max(content_start)
            }
            None => body.len(),
        };
        out.push(split_part(
            body.get(content_start..content_end).unwrap_or_default(),
        ));
        match next {
            Some(n) => cur = n,
            None => break,
        }
    }
    out
}

/// Splits one part into header section and body at the first blank line. A part that
/// starts with a blank line has no headers; one with no blank line is all headers.
fn split_part(p: &[u8]) -> Part<'_> {
    let (head, body) = if let Some(rest) = p.strip_prefix(b"\r\n").or_else(|| p.strip_prefix(b"\n"))
    {
        (&[][..], rest)
    } else {
        let mut split = None;
        let mut from = 0usize;
        while let Some(i) = p.get(from..).and_then(|s| memchr(b'\n', s)) {
            let nl = from.saturating_add(i);
            match (p.get(nl.saturating_add(1)), p.get(nl.saturating_add(2))) {
                (Some(b'\n'), _) => {
                    split = Some((nl.saturating_add(1), nl.saturating_add(2)));
                    break;
                }
                (Some(b'\r'), Some(b'\n')) => {
                    split = Some((nl.saturating_add(1), nl.saturating_add(3)));
                    break;
                }
                _ => from = nl.saturating_add(1),
            }
        }
        match split {
            Some((h, b)) => (
                p.get(..h).unwrap_or_default(),
                p.get(b..).unwrap_or_default(),
            ),
            None => (p, &[][..]),
        }
    };
    let headers = std::str::from_utf8(head).unwrap_or("").trim_end();
    let mut part = Part {
        content_type: None,
        headers,
        body,
    };
    part.content_type = part
        .header("Content-Type")
        .or_else(|| part.header("c"))
        .filter(|c| !c.is_empty());
    part
}

/// The body of the first part whose media type is `media_type` (case-insensitive),
/// descending into nested multiparts up to [`MAX_NESTING`] levels.
pub fn find<'a>(content_type_header: &str, body: &'a [u8], media_type: &str) -> Option<&'a [u8]> {
    find_depth(content_type_header, body, media_type, 0)
}

fn find_depth<'a>(ct: &str, body: &'a [u8], media_type: &str, depth: usize) -> Option<&'a [u8]> {
    for part in parts(ct, body) {
        let Some(pct) = part.content_type else {
            continue;
        };
        if media_type_is(pct, media_type) {
            return Some(part.body);
        }
        if depth < MAX_NESTING
            && crate::message::media_type(pct)
                .get(..10)
                .is_some_and(|p| p.eq_ignore_ascii_case("multipart/"))
        {
            if let Some(b) = find_depth(pct, part.body, media_type, depth.saturating_add(1)) {
                return Some(b);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const SIPREC: &str = "--boundary1\r\n\
Content-Type: application/sdp\r\n\
\r\n\
v=0\r\n\
m=audio 1000 RTP/AVP 0\r\n\
a=label:1\r\n\
m=audio 1002 RTP/AVP 0\r\n\
a=label:2\r\n\
\r\n\
--boundary1\r\n\
Content-Type: application/rs-metadata+xml\r\n\
Content-Disposition: recording-session\r\n\
\r\n\
<?xml version=\"1.0\"?><recording xmlns='urn:ietf:params:xml:ns:recording:1'/>\r\n\
--boundary1--\r\n";

    #[test]
    fn siprec_parts() {
        let ps = parts("multipart/mixed;boundary=boundary1", SIPREC.as_bytes());
        assert_eq!(ps.len(), 2);
        assert_eq!(ps[0].content_type, Some("application/sdp"));
        assert!(ps[0].body.starts_with(b"v=0\r\n"));
        assert!(ps[0].body.ends_with(b"a=label:2\r\n"));
        assert_eq!(ps[1].content_type, Some("application/rs-metadata+xml"));
        assert_eq!(
            ps[1].header("content-disposition"),
            Some("recording-session")
        );
        assert!(ps[1].body.ends_with(b"/>"));
        // Quoted boundary and inferred boundary give the same split.
        assert_eq!(
            parts("multipart/mixed; boundary=\"boundary1\"", SIPREC.as_bytes()),
            ps
        );
        assert_eq!(parts("multipart/mixed", SIPREC.as_bytes()), ps);
        assert_eq!(
            find(
                "multipart/mixed;boundary=boundary1",
                SIPREC.as_bytes(),
                "APPLICATION/SDP"
            ),
            Some(ps[0].body)
        );
        assert_eq!(
            find(
                "multipart/mixed;boundary=boundary1",
                SIPREC.as_bytes(),
                "application/isup"
            ),
            None
        );
    }

    #[test]
    fn lf_only_preamble_and_similar_boundaries() {
        let body = b"preamble\n--ab\nContent-Type: text/plain\n\nnot --abc here\n--abc\nx\n--ab\n\nheaderless\n--ab--\nepilogue";
        let ps = parts("multipart/mixed;boundary=ab", body);
        assert_eq!(ps.len(), 2);
        assert_eq!(ps[0].body, b"not --abc here\n--abc\nx");
        assert_eq!(ps[1].content_type, None);
        assert_eq!(ps[1].headers, "");
        assert_eq!(ps[1].body, b"headerless");
    }

    #[test]
    fn nested_and_truncated() {
        let body = b"--outer\r\nContent-Type: multipart/alternative; boundary=inner\r\n\r\n--inner\r\nContent-Type: application/sdp\r\n\r\nv=0\r\n--inner--\r\n--outer--";
        assert_eq!(
            find("multipart/mixed;boundary=outer", body, "application/sdp"),
            Some(&b"v=0"[..])
        );
        for n in 0..=body.len() {
            let cut = &body[..n];
            for p in parts("multipart/mixed;boundary=outer", cut) {
                assert!(p.body.len() <= cut.len());
            }
            let _ = find("multipart/mixed;boundary=outer", cut, "application/sdp");
        }
        // Truncated: no close delimiter, last part kept.
        let ps = parts(
            "multipart/mixed;boundary=x",
            b"--x\r\nContent-Type: a/b\r\n\r\npartial",
        );
        assert_eq!(ps.len(), 1);
        assert_eq!(ps[0].body, b"partial");
    }

    #[test]
    fn degenerate_inputs() {
        assert!(parts("application/sdp", b"v=0").is_empty());
        assert!(parts("multipart/mixed;boundary=zz", b"no delimiters").is_empty());
        assert!(parts("multipart/mixed;boundary=zz", b"").is_empty());
        assert!(parts("multipart/mixed;boundary=zz", b"--zz--").is_empty());
        assert_eq!(boundary("multipart/mixed;boundary=\"\""), None);
        let long = format!(
            "multipart/mixed;boundary={}",
            "a".repeat(MAX_BOUNDARY_LEN + 1)
        );
        assert_eq!(boundary(&long), None);
        let many = "--b\r\n\r\nx\r\n".repeat(MAX_PARTS * 3);
        assert_eq!(
            parts("multipart/mixed;boundary=b", many.as_bytes()).len(),
            MAX_PARTS
        );
        // Part without a blank line is all headers.
        // A declared boundary that matches nothing falls back to the body's own.
        let ps = parts("m/m;boundary=other", b"--b\nContent-Type: a/b\n\nx\n--b--");
        assert_eq!(ps.len(), 1);
        assert_eq!(ps[0].body, b"x");
        let d = Disposition::parse("session ; handling = \"optional\"");
        assert!(d.is("SESSION") && d.optional);
        assert!(!Disposition::parse("recording-session").optional);
        let ps = parts("m/m;boundary=b", b"--b\r\nContent-Type: a/b\r\n--b--");
        assert_eq!(ps[0].content_type, Some("a/b"));
        assert!(ps[0].body.is_empty());
    }
}
