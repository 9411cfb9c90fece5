//! SIP over stream transports (TCP, reassembled TLS-free streams): message framing with
//! `Content-Length` (RFC 3261 §18.3), and the cheap "is this SIP?" probe for UDP payloads.
//!
//! Both are deliberately strict about the start line so that TLS records, HTTP and other
//! traffic on port 5060 are rejected quickly instead of being buffered.

use memchr::memchr;
use vcontap_wire::Framing;

use crate::message::is_token_byte;

/// Most bytes of a header section (start line included) before a stream is declared not
/// SIP. Real SIP headers stay well under 8 KiB; 64 KiB leaves room for huge SIPREC or
/// IMS messages while bounding what is buffered per stream.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Largest `Content-Length` accepted on a stream. SIP bodies (SDP, multipart SIPREC
/// metadata, ISUP) are a few KiB; anything bigger is either not SIP or not worth buffering.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Longest method token accepted by the start-line probes (longest real method: SUBSCRIBE).
const MAX_METHOD_LEN: usize = 32;

/// Longest URI scheme accepted by the start-line probes.
const MAX_SCHEME_LEN: usize = 16;

/// Digits accepted in a stream `Content-Length` (1 MiB needs 7; more is surely bogus).
const MAX_CONTENT_LENGTH_DIGITS: usize = 10;

/// Verdict on a (possibly partial) start line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    Yes,
    No,
    /// Consistent with SIP so far; more bytes are needed.
    Maybe,
}

/// Checks a start line (without its line break). `complete` tells whether the whole line
/// is present; when it is not, a consistent prefix gives `Maybe`.
fn probe_start_line(line: &[u8], complete: bool) -> Probe {
    const RESP: &[u8] = b"SIP/2.0 ";
    let n = line.len().min(RESP.len());
    if line
        .get(..n)
        .zip(RESP.get(..n))
        .is_some_and(|(a, b)| a.eq_ignore_ascii_case(b))
    {
        if n < RESP.len() {
            return if complete { Probe::No } else { Probe::Maybe };
        }
        let code = line.get(RESP.len()..).unwrap_or_default();
        for i in 0..3 {
            match code.get(i) {
                Some(b) if b.is_ascii_digit() => {}
                Some(_) => return Probe::No,
                None => return if complete { Probe::No } else { Probe::Maybe },
            }
        }
        return match code.get(3) {
            None | Some(b' ' | b'\t' | b'\r') => Probe::Yes,
            Some(_) => Probe::No,
        };
    }
    // Request line: token SP scheme ":" ... SP "SIP/2.0".
    let mlen = line.iter().take_while(|&&b| is_token_byte(b)).count();
    if mlen > MAX_METHOD_LEN {
        return Probe::No;
    }
    match line.get(mlen) {
        None => return if complete { Probe::No } else { Probe::Maybe },
        Some(b' ') if mlen > 0 => {}
        Some(_) => return Probe::No,
    }
    let after = line.get(mlen.saturating_add(1)..).unwrap_or_default();
    let slen = after
        .iter()
        .take_while(|&&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
        .count();
    if slen > MAX_SCHEME_LEN {
        return Probe::No;
    }
    match after.get(slen) {
        None => return if complete { Probe::No } else { Probe::Maybe },
        Some(b':') if slen > 0 && after.first().is_some_and(u8::is_ascii_alphabetic) => {}
        Some(_) => return Probe::No,
    }
    if !complete {
        return Probe::Maybe;
    }
    let mut end = line;
    while let Some((last, init)) = end.split_last() {
        if last.is_ascii_whitespace() {
            end = init;
        } else {
            break;
        }
    }
    const VER: &[u8] = b" SIP/2.0";
    let ok = end.len() >= VER.len()
        && end
            .get(end.len().saturating_sub(VER.len())..)
            .is_some_and(|t| t.eq_ignore_ascii_case(VER));
    if ok {
        Probe::Yes
    } else {
        Probe::No
    }
}

/// Cheap probe for a UDP payload: does it start with a SIP status line (`SIP/2.0 NNN`) or
/// a request line (`TOKEN SP scheme: ... SP SIP/2.0`)? Leading CR/LF are tolerated.
/// Costs a few byte compares and one `memchr` for the line end.
pub fn looks_like_sip(payload: &[u8]) -> bool {
    let start = payload
        .iter()
        .take(4)
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count();
    let p = payload.get(start..).unwrap_or_default();
    // Reject the common non-SIP first bytes (RTP 0x80, TLS 0x16, STUN 0x00/0x01) at once.
    if !p.first().is_some_and(u8::is_ascii_alphabetic) {
        return false;
    }
    let window = p.get(..p.len().min(MAX_HEADER_BYTES)).unwrap_or(p);
    let line = match memchr(b'\n', window) {
        Some(i) => window.get(..i).unwrap_or_default(),
        None => window,
    };
    probe_start_line(line, true) == Probe::Yes
}

/// Frames SIP messages on a reassembled stream (for [`vcontap_wire::Framer`]).
///
/// - Leading CR/LF (RFC 5626 keep-alives) -> `Skip(n)`.
/// - The start line must be a SIP request or status line, else `NotOurs` (TLS, HTTP...).
/// - The header section must end with a blank line (CRLFCRLF or LFLF) within
///   [`MAX_HEADER_BYTES`], else `NotOurs`.
/// - Length = header section + `Content-Length` (compact `l` too; absent means 0 on a
///   stream, RFC 3261 §18.3); an unparsable or larger than [`MAX_BODY_BYTES`] length gives
///   `NotOurs` because the stream cannot be resynchronised.
///
/// Each call rescans the buffered header bytes; the header bound keeps that linear per
/// message in practice.
pub fn frame(buf: &[u8]) -> Framing {
    let ka = buf
        .iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count();
    if ka > 0 {
        return Framing::Skip(ka);
    }
    if buf.is_empty() {
        return Framing::Incomplete;
    }
    let window = buf.get(..buf.len().min(MAX_HEADER_BYTES)).unwrap_or(buf);
    let Some(first_nl) = memchr(b'\n', window) else {
        // The start line ends with a line feed: nothing changes before one arrives.
        return match probe_start_line(window, false) {
            Probe::No => Framing::NotOurs,
            _ if window.len() >= MAX_HEADER_BYTES => Framing::NotOurs,
            _ => Framing::NeedLine,
        };
    };
    let line = window.get(..first_nl).unwrap_or_default();
    if probe_start_line(line, true) != Probe::Yes {
        return Framing::NotOurs;
    }
    // Find the blank line: '\n' followed by '\n' or "\r\n".
    let mut head_end = None;
    let mut cursor = first_nl;
    loop {
        match (
            window.get(cursor.saturating_add(1)),
            window.get(cursor.saturating_add(2)),
        ) {
            (Some(b'\n'), _) => {
                head_end = Some(cursor.saturating_add(2));
                break;
            }
            (Some(b'\r'), Some(b'\n')) => {
                head_end = Some(cursor.saturating_add(3));
                break;
            }
            _ => {}
        }
        let from = cursor.saturating_add(1);
        match window.get(from..).and_then(|w| memchr(b'\n', w)) {
            Some(i) => cursor = from.saturating_add(i),
            None => break,
        }
    }
    let Some(head_end) = head_end else {
        // The header section ends with a line feed too.
        return if window.len() >= MAX_HEADER_BYTES {
            Framing::NotOurs
        } else {
            Framing::NeedLine
        };
    };
    let head = window
        .get(first_nl.saturating_add(1)..head_end)
        .unwrap_or_default();
    let body_len = match content_length(head) {
        Ok(n) => n,
        Err(()) => return Framing::NotOurs,
    };
    if body_len > MAX_BODY_BYTES {
        return Framing::NotOurs;
    }
    let total = head_end.saturating_add(body_len);
    if buf.len() < total {
        // The body's length is known: wait for all of it without rescanning the headers.
        Framing::NeedBytes(total)
    } else {
        Framing::Message(total)
    }
}

/// The first `Content-Length` / `l` of a header section; 0 when absent; `Err` when it is
/// not a plain decimal number.
fn content_length(head: &[u8]) -> Result<usize, ()> {
    for line in head.split(|&b| b == b'\n') {
        if matches!(line.first(), Some(b' ' | b'\t') | None) {
            continue;
        }
        let Some(colon) = memchr(b':', line) else {
            continue;
        };
        let name = line.get(..colon).unwrap_or_default().trim_ascii();
        if !(name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l")) {
            continue;
        }
        let value = line
            .get(colon.saturating_add(1)..)
            .unwrap_or_default()
            .trim_ascii();
        if value.is_empty()
            || value.len() > MAX_CONTENT_LENGTH_DIGITS
            || !value.iter().all(u8::is_ascii_digit)
        {
            return Err(());
        }
        let mut n: usize = 0;
        for &d in value {
            n = n
                .checked_mul(10)
                .and_then(|n| n.checked_add(usize::from(d.wrapping_sub(b'0'))))
                .ok_or(())?;
        }
        return Ok(n);
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const M1: &[u8] = b"INVITE sip:b@x SIP/2.0\r\nCall-ID: 1\r\nContent-Length: 5\r\n\r\nhello";
    const M2: &[u8] = b"SIP/2.0 200 OK\r\nl:3\r\n\r\nabc";
    const M3: &[u8] = b"ACK sip:b@x SIP/2.0\nCall-ID: 3\n\n";

    #[test]
    fn several_messages_in_one_buffer() {
        let mut buf = Vec::new();
        buf.extend_from_slice(M1);
        buf.extend_from_slice(b"\r\n\r\n");
        buf.extend_from_slice(M2);
        buf.extend_from_slice(M3);
        let mut rest = &buf[..];
        let mut got = Vec::new();
        loop {
            match frame(rest) {
                Framing::Message(n) => {
                    got.push(&rest[..n]);
                    rest = &rest[n..];
                }
                Framing::Skip(n) => {
                    assert_eq!(n, 4);
                    rest = &rest[n..];
                }
                Framing::Incomplete | Framing::NeedBytes(_) | Framing::NeedLine => break,
                Framing::NotOurs => panic!("not ours"),
            }
        }
        assert_eq!(got, vec![M1, M2, M3]);
        assert!(rest.is_empty());
    }

    #[test]
    fn split_message_is_incomplete_until_whole() {
        for n in 0..M1.len() {
            assert!(frame(&M1[..n]).is_incomplete(), "cut at {n}");
        }
        assert_eq!(frame(M1), Framing::Message(M1.len()));
    }

    #[test]
    fn keepalives_are_skipped() {
        assert_eq!(frame(b"\r\n\r\n"), Framing::Skip(4));
        assert_eq!(frame(b"\r\nINVITE"), Framing::Skip(2));
        assert!(frame(b"").is_incomplete());
    }

    #[test]
    fn non_sip_streams_are_rejected() {
        assert_eq!(
            frame(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"),
            Framing::NotOurs
        );
        assert_eq!(frame(b"\x16"), Framing::NotOurs);
        assert_eq!(
            frame(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
            Framing::NotOurs
        );
        assert_eq!(frame(b"GET / HT"), Framing::NotOurs);
        assert_eq!(frame(b"HTTP/1.1 200 OK\r\n\r\n"), Framing::NotOurs);
        assert_eq!(frame(b"OPTIONS sip:x HTTP/1.1\r\n\r\n"), Framing::NotOurs);
        assert_eq!(frame(b"SIP/2.0 2x0 OK\r\n\r\n"), Framing::NotOurs);
        // Plausible prefixes wait for more.
        assert!(frame(b"SI").is_incomplete());
        assert!(frame(b"SIP/2.0 2").is_incomplete());
        assert!(frame(b"INVITE sip:a@b SIP/2.").is_incomplete());
    }

    #[test]
    fn content_length_limits() {
        let big = format!(
            "INVITE sip:b@x SIP/2.0\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY_BYTES + 1
        );
        assert_eq!(frame(big.as_bytes()), Framing::NotOurs);
        assert_eq!(
            frame(b"INVITE sip:b@x SIP/2.0\r\nContent-Length: 99999999999999999999\r\n\r\n"),
            Framing::NotOurs
        );
        assert_eq!(
            frame(b"INVITE sip:b@x SIP/2.0\r\nContent-Length: -1\r\n\r\n"),
            Framing::NotOurs
        );
        let ok = b"BYE sip:b@x SIP/2.0\r\nX: y\r\n\r\nTRAILING";
        assert_eq!(frame(ok), Framing::Message(ok.len() - 8));
    }

    #[test]
    fn header_section_is_bounded() {
        let mut buf = b"INVITE sip:b@x SIP/2.0\r\n".to_vec();
        while buf.len() < MAX_HEADER_BYTES + 10 {
            buf.extend_from_slice(b"X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        assert_eq!(frame(&buf), Framing::NotOurs);
        assert_eq!(frame(&vec![b'A'; MAX_HEADER_BYTES + 1]), Framing::NotOurs);
    }

    #[test]
    fn udp_probe() {
        assert!(looks_like_sip(M1));
        assert!(looks_like_sip(M2));
        assert!(looks_like_sip(b"SIP/2.0 100 Trying"));
        assert!(looks_like_sip(b"MESSAGE tel:+15551234567 SIP/2.0\r\n"));
        assert!(looks_like_sip(b"INVITE urn:service:sos SIP/2.0\r\n"));
        assert!(looks_like_sip(b"\r\nBYE sips:a@b SIP/2.0\r\n"));
        assert!(!looks_like_sip(b""));
        assert!(!looks_like_sip(b"\r\n\r\n"));
        assert!(!looks_like_sip(&[0x80, 0x00, 0x01, 0x02]));
        assert!(!looks_like_sip(b"GET / HTTP/1.1\r\n"));
        assert!(!looks_like_sip(b"INVITE sip:a@b SIP/3.0\r\n"));
        assert!(!looks_like_sip(b"SIP/2.0 abc"));
        assert!(!looks_like_sip(b"hello world"));
    }

    #[test]
    fn garbage_never_panics() {
        const ALPHABET: &[u8] = b"SIP/2.0 \r\n:l0123456789INVITE sip:";
        let mut x: u32 = 12345;
        for len in 0..300 {
            let v: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    ALPHABET[(x as usize) % ALPHABET.len()]
                })
                .collect();
            if let Framing::Message(n) | Framing::Skip(n) = frame(&v) {
                assert!(n > 0 && n <= v.len());
            }
            let _ = looks_like_sip(&v);
        }
    }
}
