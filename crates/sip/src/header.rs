//! Typed views over single SIP header values: header-name matching (long and compact
//! forms), comma lists, parameters, name-addr (`From`/`To`/`Contact`...), URIs (`sip:`,
//! `sips:`, `tel:`), E.164 normalisation, `CSeq` and `Via`.
//!
//! Everything here borrows from the input and never allocates, except [`e164`] (which
//! builds the normalised number) and display names that contain escapes.

use std::borrow::Cow;

use crate::message::Method;

/// Compact header forms: RFC 3261 §7.3.3 (i m e l c f s k t v), RFC 3515 (r), RFC 3892 (b),
/// RFC 6665 (o u), RFC 3841 (a j d), RFC 4028 (x), RFC 8224 (y), RFC 4474 (n).
const COMPACT_FORMS: &[(&str, u8)] = &[
    ("Call-ID", b'i'),
    ("Contact", b'm'),
    ("Content-Encoding", b'e'),
    ("Content-Length", b'l'),
    ("Content-Type", b'c'),
    ("From", b'f'),
    ("Subject", b's'),
    ("Supported", b'k'),
    ("To", b't'),
    ("Via", b'v'),
    ("Refer-To", b'r'),
    ("Referred-By", b'b'),
    ("Event", b'o'),
    ("Allow-Events", b'u'),
    ("Accept-Contact", b'a'),
    ("Reject-Contact", b'j'),
    ("Request-Disposition", b'd'),
    ("Session-Expires", b'x'),
    ("Identity", b'y'),
    ("Identity-Info", b'n'),
];

/// Returns the compact letter of a long header name (case-insensitive), if it has one.
pub fn compact_form(long: &str) -> Option<char> {
    COMPACT_FORMS
        .iter()
        .find(|(l, _)| l.eq_ignore_ascii_case(long))
        .map(|&(_, c)| char::from(c))
}

/// Returns the long header name of a compact letter (case-insensitive), if it is one.
pub fn long_form(compact: &str) -> Option<&'static str> {
    let &[c] = compact.as_bytes() else {
        return None;
    };
    let c = c.to_ascii_lowercase();
    COMPACT_FORMS
        .iter()
        .find(|&&(_, k)| k == c)
        .map(|&(l, _)| l)
}

/// Matches header names against one wanted name, in long or compact form.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NameMatcher<'n> {
    name: &'n str,
    /// The other spelling of `name` (compact for a long name, long for a compact one).
    alt: Option<&'static str>,
}

impl<'n> NameMatcher<'n> {
    pub(crate) fn new(name: &'n str) -> Self {
        let alt = if name.len() == 1 {
            long_form(name)
        } else {
            COMPACT_FORMS
                .iter()
                .find(|(l, _)| l.eq_ignore_ascii_case(name))
                .and_then(|&(_, c)| COMPACT_STRS.get(usize::from(c.wrapping_sub(b'a'))))
                .copied()
        };
        NameMatcher { name, alt }
    }

    pub(crate) fn matches(&self, candidate: &str) -> bool {
        candidate.eq_ignore_ascii_case(self.name)
            || self.alt.is_some_and(|a| candidate.eq_ignore_ascii_case(a))
    }
}

/// One-letter strings indexed by `letter - 'a'`, so compact names can be `&'static str`.
const COMPACT_STRS: [&str; 26] = [
    "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n", "o", "p", "q", "r", "s",
    "t", "u", "v", "w", "x", "y", "z",
];

/// Splits a comma-separated header value (`Via`, `Contact`, `Allow`...) into trimmed,
/// non-empty items. Commas inside double quotes (with `\` escapes) and inside `<...>`
/// do not split, so `"Doe, John" <sip:j@x>, <sip:k@y>` yields two items.
pub fn split_comma_list(s: &str) -> impl Iterator<Item = &str> + '_ {
    let mut rest = s;
    std::iter::from_fn(move || loop {
        if rest.is_empty() {
            return None;
        }
        let end = find_unquoted(rest, b',').unwrap_or(rest.len());
        let item = rest.get(..end).unwrap_or("").trim();
        rest = rest.get(end.saturating_add(1)..).unwrap_or("");
        if !item.is_empty() {
            return Some(item);
        }
    })
}

/// Byte index of the first `needle` outside quotes and angle brackets.
fn find_unquoted(s: &str, needle: u8) -> Option<usize> {
    let mut in_quotes = false;
    let mut escaped = false;
    let mut angle = false;
    for (i, &b) in s.as_bytes().iter().enumerate() {
        if in_quotes {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_quotes = false;
            }
            continue;
        }
        match b {
            b'"' => in_quotes = true,
            b'<' => angle = true,
            b'>' => angle = false,
            _ if b == needle && !angle => return Some(i),
            _ => {}
        }
    }
    None
}

/// Iterates `;`-separated parameters as `(name, value)`; a flag parameter has value `""`.
/// Quoted values may contain `;`. Leading `;` and surrounding whitespace are ignored.
pub fn params(s: &str) -> impl Iterator<Item = (&str, &str)> + '_ {
    let mut rest = s;
    std::iter::from_fn(move || loop {
        if rest.is_empty() {
            return None;
        }
        let end = find_unquoted(rest, b';').unwrap_or(rest.len());
        let item = rest.get(..end).unwrap_or("").trim();
        rest = rest.get(end.saturating_add(1)..).unwrap_or("");
        if item.is_empty() {
            continue;
        }
        return Some(match item.split_once('=') {
            Some((n, v)) => (n.trim(), v.trim()),
            None => (item, ""),
        });
    })
}

/// First parameter called `name` (case-insensitive) in a `;`-separated list.
pub fn param<'a>(s: &'a str, name: &str) -> Option<&'a str> {
    params(s)
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

/// A parsed `CSeq` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CSeq<'a> {
    /// Sequence number.
    pub seq: u32,
    /// Method of the transaction.
    pub method: Method<'a>,
}

/// Parses a `CSeq` value such as `102 INVITE`.
pub fn parse_cseq(s: &str) -> Option<CSeq<'_>> {
    let mut it = s.split_ascii_whitespace();
    let seq = it.next()?.parse().ok()?;
    let method = Method::parse(it.next()?);
    Some(CSeq { seq, method })
}

/// A name-addr or addr-spec header value (`From`, `To`, `Contact`, `Refer-To`...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr<'a> {
    /// Display name: unquoted, unescaped and trimmed; `None` when absent or empty.
    pub display: Option<Cow<'a, str>>,
    /// The URI: inside `<>`, or for a bare addr-spec everything up to the first `;`.
    pub uri: &'a str,
    /// The `tag` header parameter, when present and non-empty.
    pub tag: Option<&'a str>,
    /// Header parameters after the URI, without the leading `;` (e.g. `tag=ab;expires=60`).
    pub params: &'a str,
}

impl<'a> NameAddr<'a> {
    /// A header parameter by name (case-insensitive); flag parameters give `""`.
    pub fn param(&self, name: &str) -> Option<&'a str> {
        param(self.params, name)
    }

    /// The URI parsed with [`parse_uri`].
    pub fn parsed_uri(&self) -> Option<Uri<'a>> {
        parse_uri(self.uri)
    }
}

/// Parses a name-addr (`"Bob" <sip:bob@x>;tag=1`, `Bob <sip:bob@x>`) or a bare addr-spec
/// (`sip:bob@x;tag=1`, where the parameters belong to the header, RFC 3261 §20).
/// Returns `None` for an unterminated quote or `<` without `>`, or an empty URI.
pub fn parse_name_addr(s: &str) -> Option<NameAddr<'_>> {
    let s = s.trim();
    let (display, after_display) = if let Some(rest) = s.strip_prefix('"') {
        let (raw, has_escape, end) = scan_quoted(rest)?;
        let display = if has_escape {
            Cow::Owned(unescape(raw))
        } else {
            Cow::Borrowed(raw)
        };
        (Some(display), rest.get(end..)?.trim_start())
    } else if let Some(lt) = s.find('<') {
        let d = s.get(..lt)?.trim();
        (Some(Cow::Borrowed(d)), s.get(lt..)?)
    } else {
        (None, s)
    };
    let display = display.and_then(|d| match d {
        Cow::Borrowed(b) if b.trim().is_empty() => None,
        Cow::Borrowed(b) => Some(Cow::Borrowed(b.trim())),
        Cow::Owned(o) if o.trim().is_empty() => None,
        Cow::Owned(o) => Some(Cow::Owned(o.trim().to_owned())),
    });
    let (uri, params) = if let Some(rest) = after_display.strip_prefix('<') {
        let gt = rest.find('>')?;
        (rest.get(..gt)?.trim(), rest.get(gt.saturating_add(1)..)?)
    } else {
        // After a quoted display name a `<` is required; tolerate its absence leniently.
        match after_display.find(';') {
            Some(i) => (after_display.get(..i)?.trim(), after_display.get(i..)?),
            None => (after_display.trim(), ""),
        }
    };
    if uri.is_empty() {
        return None;
    }
    let params = params.trim().trim_start_matches(';').trim_start();
    let tag = param(params, "tag").filter(|t| !t.is_empty());
    Some(NameAddr {
        display,
        uri,
        tag,
        params,
    })
}

/// Scans a quoted string body (after the opening quote). Returns the raw content, whether
/// it holds escapes, and the index just past the closing quote.
fn scan_quoted(s: &str) -> Option<(&str, bool, usize)> {
    let mut escaped = false;
    let mut has_escape = false;
    for (i, &b) in s.as_bytes().iter().enumerate() {
        if escaped {
            escaped = false;
        } else if b == b'\\' {
            escaped = true;
            has_escape = true;
        } else if b == b'"' {
            return Some((s.get(..i)?, has_escape, i.saturating_add(1)));
        }
    }
    None
}

/// Removes quoted-pair backslashes (`\"` -> `"`, `\\` -> `\`).
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut escaped = false;
    for c in s.chars() {
        if escaped || c != '\\' {
            out.push(c);
            escaped = false;
        } else {
            escaped = true;
        }
    }
    out
}

/// A parsed URI. Only the parts vcontap needs are split out; everything borrows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Uri<'a> {
    /// Scheme as written (`sip`, `sips`, `tel`, ...); compare case-insensitively
    /// (see [`Uri::scheme_is`]).
    pub scheme: &'a str,
    /// User part without password (may carry user parameters such as `;phone-context=`);
    /// `None` when absent or empty. Always `None` for `tel:`.
    pub user: Option<&'a str>,
    /// Host without IPv6 brackets; for `tel:` the number.
    pub host: &'a str,
    /// Port when present and valid.
    pub port: Option<u16>,
    /// URI parameters without the leading `;` (e.g. `user=phone;transport=tcp`).
    pub params: &'a str,
    /// URI headers after `?`, without the `?`.
    pub headers: &'a str,
}

impl<'a> Uri<'a> {
    /// A URI parameter by name (case-insensitive), e.g. `user` -> `phone`; flags give `""`.
    pub fn param(&self, name: &str) -> Option<&'a str> {
        param(self.params, name)
    }

    /// Case-insensitive scheme comparison.
    pub fn scheme_is(&self, scheme: &str) -> bool {
        self.scheme.eq_ignore_ascii_case(scheme)
    }

    /// True for `sip:` and `sips:`.
    pub fn is_sip(&self) -> bool {
        self.scheme_is("sip") || self.scheme_is("sips")
    }
}

/// Parses a URI (`sip:user:pw@host:port;params?headers`, `tel:+1-555;params`, or any
/// `scheme:...` treated like SIP). Surrounding `<>` are tolerated. Returns `None` without
/// a valid scheme or with an empty host.
pub fn parse_uri(s: &str) -> Option<Uri<'_>> {
    let mut s = s.trim();
    if let Some(inner) = s.strip_prefix('<') {
        s = inner.split('>').next().unwrap_or(inner).trim();
    }
    let colon = s.find(':')?;
    let scheme = s.get(..colon)?;
    let mut sb = scheme.bytes();
    if !sb.next().is_some_and(|b| b.is_ascii_alphabetic())
        || !sb.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
    {
        return None;
    }
    let rest = s.get(colon.saturating_add(1)..)?;
    if scheme.eq_ignore_ascii_case("tel") {
        let (number, params) = rest.split_once(';').unwrap_or((rest, ""));
        let number = number.trim();
        if number.is_empty() {
            return None;
        }
        return Some(Uri {
            scheme,
            user: None,
            host: number,
            port: None,
            params,
            headers: "",
        });
    }
    let (before_q, headers) = rest.split_once('?').unwrap_or((rest, ""));
    let (user, hostpart) = match before_q.find('@') {
        Some(at) => {
            let userinfo = before_q.get(..at)?;
            let user = userinfo.split(':').next().unwrap_or("");
            (
                Some(user).filter(|u| !u.is_empty()),
                before_q.get(at.saturating_add(1)..)?,
            )
        }
        None => (None, before_q),
    };
    let (hostport, params) = hostpart.split_once(';').unwrap_or((hostpart, ""));
    let hostport = hostport.trim();
    let (host, port) = split_host_port(hostport)?;
    Some(Uri {
        scheme,
        user,
        host,
        port,
        params,
        headers,
    })
}

/// Splits `host[:port]` / `[v6][:port]`; an invalid port reads as `None`. Empty host -> None.
fn split_host_port(hp: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if let Some(rest) = hp.strip_prefix('[') {
        let close = rest.find(']')?;
        let host = rest.get(..close)?;
        let after = rest.get(close.saturating_add(1)..)?;
        (host, after.strip_prefix(':').and_then(|p| p.parse().ok()))
    } else {
        match hp.split_once(':') {
            // More than one ':' is an unbracketed IPv6 literal: no port then.
            Some((h, p)) if !p.contains(':') => (h, p.parse().ok()),
            Some(_) => (hp, None),
            None => (hp, None),
        }
    };
    if host.is_empty() {
        None
    } else {
        Some((host, port))
    }
}

/// Fewest digits accepted as a global E.164 number (shorter are extensions/short codes).
pub const E164_MIN_DIGITS: usize = 7;
/// Most digits of an E.164 number (ITU-T E.164 §6).
pub const E164_MAX_DIGITS: usize = 15;

/// E.164 normalisation for the vCon `tel` field.
///
/// Returns `Some("+<digits>")` only for a global number: the `tel:` number or the SIP user
/// part (user parameters after `;` dropped) starts with `+` (or `%2B`) followed by
/// 7..=15 digits, with the visual separators `-` `.` `(` `)` removed. `user=phone` does
/// not make a local number global, so extensions like `1001` or `0123` give `None`.
pub fn e164(uri: &Uri<'_>) -> Option<String> {
    let raw = if uri.scheme_is("tel") {
        uri.host
    } else if uri.is_sip() {
        uri.user?
    } else {
        return None;
    };
    let raw = raw.split(';').next().unwrap_or("").trim();
    let digits = raw
        .strip_prefix('+')
        .or_else(|| raw.strip_prefix("%2B"))
        .or_else(|| raw.strip_prefix("%2b"))?;
    let mut out = String::with_capacity(E164_MAX_DIGITS.saturating_add(1));
    out.push('+');
    let mut count = 0usize;
    for c in digits.chars() {
        match c {
            '0'..='9' => {
                count = count.saturating_add(1);
                if count > E164_MAX_DIGITS {
                    return None;
                }
                out.push(c);
            }
            '-' | '.' | '(' | ')' => {}
            _ => return None,
        }
    }
    (count >= E164_MIN_DIGITS).then_some(out)
}

/// One `Via` entry (one item of a possibly comma-separated `Via` value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Via<'a> {
    /// Transport as written (`UDP`, `TCP`, `TLS`, `WS`...).
    pub transport: &'a str,
    /// Sent-by host without IPv6 brackets.
    pub host: &'a str,
    /// Sent-by port when present and valid.
    pub port: Option<u16>,
    /// Parameters without the leading `;`.
    pub params: &'a str,
}

impl<'a> Via<'a> {
    /// A parameter by name (case-insensitive).
    pub fn param(&self, name: &str) -> Option<&'a str> {
        param(self.params, name)
    }

    /// The `branch` parameter.
    pub fn branch(&self) -> Option<&'a str> {
        self.param("branch").filter(|b| !b.is_empty())
    }
}

/// Parses one Via entry such as `SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1;rport`.
/// Whitespace around the `/` separators is tolerated (RFC 3261 allows LWS there).
pub fn parse_via(s: &str) -> Option<Via<'_>> {
    let s = s.trim();
    // protocol-name "/" version "/" transport, then LWS, then sent-by.
    let slash1 = s.find('/')?;
    let after1 = s.get(slash1.saturating_add(1)..)?;
    let slash2 = after1.find('/')?;
    let after2 = after1.get(slash2.saturating_add(1)..)?.trim_start();
    let tend = after2
        .find(|c: char| c.is_ascii_whitespace())
        .unwrap_or(after2.len());
    let transport = after2.get(..tend)?;
    let sent = after2.get(tend..)?.trim_start();
    let (hostport, params) = sent.split_once(';').unwrap_or((sent, ""));
    let (host, port) = split_host_port(hostport.trim())?;
    if transport.is_empty() {
        return None;
    }
    Some(Via {
        transport,
        host,
        port,
        params,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_table_round_trips() {
        assert_eq!(compact_form("call-id"), Some('i'));
        assert_eq!(compact_form("Session-Expires"), Some('x'));
        assert_eq!(compact_form("X-Foo"), None);
        assert_eq!(long_form("I"), Some("Call-ID"));
        assert_eq!(long_form("y"), Some("Identity"));
        assert_eq!(long_form("n"), Some("Identity-Info"));
        assert_eq!(long_form("q"), None);
        assert_eq!(long_form("ab"), None);
        let m = NameMatcher::new("Content-Length");
        assert!(m.matches("l") && m.matches("L") && m.matches("content-length"));
        assert!(!m.matches("c"));
        let m = NameMatcher::new("t");
        assert!(m.matches("To") && m.matches("t") && !m.matches("f"));
        let m = NameMatcher::new("X-Custom");
        assert!(m.matches("x-custom") && !m.matches("x"));
    }

    #[test]
    fn comma_list_respects_quotes_and_brackets() {
        let v: Vec<_> =
            split_comma_list(r#""Doe, \"J\"" <sip:j@x;a=1,2>, <sip:k@y> ,, sip:z@w"#).collect();
        assert_eq!(
            v,
            vec![r#""Doe, \"J\"" <sip:j@x;a=1,2>"#, "<sip:k@y>", "sip:z@w"]
        );
        assert_eq!(split_comma_list("").count(), 0);
        assert_eq!(split_comma_list(" , ").count(), 0);
        // Unterminated quote swallows the rest, no panic.
        assert_eq!(split_comma_list("\"a, b").count(), 1);
    }

    #[test]
    fn params_and_flags() {
        let p = ";tag=abc ; lr;Expires=60;x=\"a;b\"";
        assert_eq!(param(p, "TAG"), Some("abc"));
        assert_eq!(param(p, "lr"), Some(""));
        assert_eq!(param(p, "expires"), Some("60"));
        assert_eq!(param(p, "x"), Some("\"a;b\""));
        assert_eq!(param(p, "nope"), None);
    }

    #[test]
    fn cseq_parses() {
        let c = parse_cseq(" 102  INVITE ").unwrap();
        assert_eq!(c.seq, 102);
        assert_eq!(c.method, Method::Invite);
        assert_eq!(parse_cseq("1 FOO").unwrap().method, Method::Other("FOO"));
        assert!(parse_cseq("x INVITE").is_none());
        assert!(parse_cseq("99999999999 INVITE").is_none());
        assert!(parse_cseq("7").is_none());
    }

    #[test]
    fn name_addr_forms() {
        let n = parse_name_addr(r#""Doe, \"Johnny\" \\ Jr" <sip:j@x.com>;tag=9fx;foo"#).unwrap();
        assert_eq!(n.display.as_deref(), Some(r#"Doe, "Johnny" \ Jr"#));
        assert_eq!(n.uri, "sip:j@x.com");
        assert_eq!(n.tag, Some("9fx"));
        assert_eq!(n.params, "tag=9fx;foo");
        assert_eq!(n.param("foo"), Some(""));

        let n = parse_name_addr("\"Alice\"<sip:a@b>").unwrap();
        assert!(matches!(n.display, Some(Cow::Borrowed("Alice"))));
        assert_eq!(n.tag, None);

        let n = parse_name_addr("  Bob Smith  <sips:bob@[2001:db8::1]:5061> ").unwrap();
        assert_eq!(n.display.as_deref(), Some("Bob Smith"));
        assert_eq!(n.uri, "sips:bob@[2001:db8::1]:5061");

        let n = parse_name_addr("sip:bare@host;tag=t1").unwrap();
        assert_eq!(n.display, None);
        assert_eq!(n.uri, "sip:bare@host");
        assert_eq!(n.tag, Some("t1"));

        let n = parse_name_addr("\"\" <tel:+15551234567>;tag=").unwrap();
        assert_eq!(n.display, None);
        assert_eq!(n.tag, None);
        let n = parse_name_addr("<sip:a@b>").unwrap();
        assert_eq!(n.display, None);
        assert_eq!(n.params, "");

        assert!(parse_name_addr("\"unterminated <sip:a@b>").is_none());
        assert!(parse_name_addr("Bob <sip:a@b").is_none());
        assert!(parse_name_addr("").is_none());
        assert!(parse_name_addr("<>").is_none());
    }

    #[test]
    fn uri_forms() {
        let u = parse_uri("sip:alice:secret@example.com:5070;transport=tcp;lr?subject=hi").unwrap();
        assert_eq!(u.scheme, "sip");
        assert_eq!(u.user, Some("alice"));
        assert_eq!(u.host, "example.com");
        assert_eq!(u.port, Some(5070));
        assert_eq!(u.params, "transport=tcp;lr");
        assert_eq!(u.param("TRANSPORT"), Some("tcp"));
        assert_eq!(u.param("lr"), Some(""));
        assert_eq!(u.headers, "subject=hi");

        let u = parse_uri("<SIP:+1-212-555-0100;phone-context=x@gw.example;user=phone>").unwrap();
        assert!(u.is_sip());
        assert_eq!(u.user, Some("+1-212-555-0100;phone-context=x"));
        assert_eq!(u.param("user"), Some("phone"));

        let u = parse_uri("tel:+1-212-555-0100;ext=12").unwrap();
        assert_eq!(u.host, "+1-212-555-0100");
        assert_eq!(u.user, None);
        assert_eq!(u.param("ext"), Some("12"));

        let u = parse_uri("sip:[2001:db8::5]:5060").unwrap();
        assert_eq!(u.host, "2001:db8::5");
        assert_eq!(u.port, Some(5060));
        assert_eq!(u.user, None);
        let u = parse_uri("sip:h:notaport").unwrap();
        assert_eq!((u.host, u.port), ("h", None));
        let u = parse_uri("urn:service:sos").unwrap();
        assert_eq!(u.scheme, "urn");

        assert!(parse_uri("nocolon").is_none());
        assert!(parse_uri("1sip:a@b").is_none());
        assert!(parse_uri("sip:").is_none());
        assert!(parse_uri("sip:user@").is_none());
        assert!(parse_uri("tel:").is_none());
        assert!(parse_uri("sip:[::1").is_none());
    }

    #[test]
    fn e164_cases() {
        let e = |s: &str| e164(&parse_uri(s).unwrap());
        assert_eq!(e("tel:+1-212-555-0100").as_deref(), Some("+12125550100"));
        assert_eq!(
            e("sip:+44(20)7946.0000@gw;user=phone").as_deref(),
            Some("+442079460000")
        );
        assert_eq!(e("sip:+4930123456@x").as_deref(), Some("+4930123456"));
        assert_eq!(e("sip:%2B4930123456@x").as_deref(), Some("+4930123456"));
        assert_eq!(
            e("sip:+15551234567;npdi@x;user=phone").as_deref(),
            Some("+15551234567")
        );
        assert_eq!(e("sip:1001@pbx"), None);
        assert_eq!(e("sip:0123@pbx;user=phone"), None);
        assert_eq!(e("sip:015551234567@pbx;user=phone"), None);
        assert_eq!(e("tel:7042;phone-context=example.com"), None);
        assert_eq!(e("sip:+123456@x"), None); // too short
        assert_eq!(e("sip:+1234567890123456@x"), None); // too long
        assert_eq!(e("sip:+1555abc4567@x"), None);
        assert_eq!(e("sip:host.only"), None);
        assert_eq!(e("urn:+15551234567"), None);
    }

    #[test]
    fn via_entries() {
        let v = parse_via("SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK776;rport").unwrap();
        assert_eq!(v.transport, "UDP");
        assert_eq!(v.host, "10.0.0.1");
        assert_eq!(v.port, Some(5060));
        assert_eq!(v.branch(), Some("z9hG4bK776"));
        assert_eq!(v.param("rport"), Some(""));
        let v = parse_via("SIP / 2.0 / TLS [2001:db8::1];branch=x").unwrap();
        assert_eq!(v.transport, "TLS");
        assert_eq!(v.host, "2001:db8::1");
        assert_eq!(v.port, None);
        assert!(parse_via("garbage").is_none());
        assert!(parse_via("SIP/2.0/UDP").is_none());
        assert!(parse_via("SIP/2.0/UDP ;branch=1").is_none());
    }
}
