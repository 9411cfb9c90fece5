//! DTMF carried in SIP INFO bodies: `application/dtmf-relay` (Cisco/most PBXs:
//! `Signal=5` / `Duration=160`) and `application/dtmf` (a bare digit or RFC 4733 event code).

use crate::message::media_type_is;

/// Longest INFO body examined; DTMF bodies are a few dozen bytes.
const MAX_DTMF_BODY: usize = 1024;

/// One DTMF digit from an INFO request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InfoDtmf {
    /// `0`-`9`, `*`, `#`, `A`-`D`.
    pub digit: char,
    /// Tone duration in milliseconds, when given.
    pub duration_ms: Option<u32>,
}

/// Extracts a DTMF digit from an INFO body, given its `Content-Type` (parameters allowed).
pub fn dtmf_from_info(content_type: &str, body: &[u8]) -> Option<InfoDtmf> {
    let body = body.get(..body.len().min(MAX_DTMF_BODY))?;
    let text = std::str::from_utf8(body).ok()?;
    if media_type_is(content_type, "application/dtmf-relay") {
        let mut digit = None;
        let mut duration_ms = None;
        for line in text.lines() {
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            let (k, v) = (k.trim(), v.trim());
            if k.eq_ignore_ascii_case("signal") && digit.is_none() {
                digit = signal_digit(v);
            } else if k.eq_ignore_ascii_case("duration") && duration_ms.is_none() {
                duration_ms = v.parse().ok();
            }
        }
        return digit.map(|digit| InfoDtmf { digit, duration_ms });
    }
    if media_type_is(content_type, "application/dtmf") {
        return signal_digit(text.trim()).map(|digit| InfoDtmf {
            digit,
            duration_ms: None,
        });
    }
    None
}

/// A signal as a digit: a single DTMF character, or an RFC 4733 event code 0-15.
fn signal_digit(s: &str) -> Option<char> {
    let mut chars = s.chars();
    if let (Some(c), None) = (chars.next(), chars.next()) {
        let c = c.to_ascii_uppercase();
        if c.is_ascii_digit() || matches!(c, '*' | '#' | 'A'..='D') {
            return Some(c);
        }
        return None;
    }
    match s.parse::<u8>().ok()? {
        10 => Some('*'),
        11 => Some('#'),
        12 => Some('A'),
        13 => Some('B'),
        14 => Some('C'),
        15 => Some('D'),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtmf_relay() {
        let d = dtmf_from_info("application/dtmf-relay", b"Signal=5\r\nDuration=160\r\n").unwrap();
        assert_eq!(
            d,
            InfoDtmf {
                digit: '5',
                duration_ms: Some(160)
            }
        );
        let d = dtmf_from_info(
            "Application/DTMF-Relay; charset=x",
            b"signal = #\nduration= 250",
        )
        .unwrap();
        assert_eq!((d.digit, d.duration_ms), ('#', Some(250)));
        assert_eq!(
            dtmf_from_info("application/dtmf-relay", b"Signal=10")
                .unwrap()
                .digit,
            '*'
        );
        assert_eq!(
            dtmf_from_info("application/dtmf-relay", b"Signal=11")
                .unwrap()
                .digit,
            '#'
        );
        assert_eq!(
            dtmf_from_info("application/dtmf-relay", b"Signal=d")
                .unwrap()
                .digit,
            'D'
        );
        let d = dtmf_from_info("application/dtmf-relay", b"Signal=*\r\nDuration=x").unwrap();
        assert_eq!((d.digit, d.duration_ms), ('*', None));
        assert_eq!(
            dtmf_from_info("application/dtmf-relay", b"Duration=160"),
            None
        );
        assert_eq!(dtmf_from_info("application/dtmf-relay", b"Signal=E"), None);
        assert_eq!(dtmf_from_info("application/dtmf-relay", b"Signal=16"), None);
        assert_eq!(
            dtmf_from_info("application/dtmf-relay", b"Signal=\xff"),
            None
        );
    }

    #[test]
    fn dtmf_plain() {
        assert_eq!(
            dtmf_from_info("application/dtmf", b"5\r\n").unwrap().digit,
            '5'
        );
        assert_eq!(
            dtmf_from_info("application/dtmf", b"11").unwrap().digit,
            '#'
        );
        assert_eq!(
            dtmf_from_info("application/dtmf", b"").map(|d| d.digit),
            None
        );
        assert_eq!(dtmf_from_info("application/dtmf", b"55"), None);
        assert_eq!(dtmf_from_info("application/sdp", b"5"), None);
    }
}
