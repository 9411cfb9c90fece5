//! What the sinks deliver: a [`Record`] (one finished vCon as it sits in the spool, exact
//! bytes) and [`VconHead`], the handful of fields stores index by (uuid, `created_at`,
//! subject, party identifiers), parsed on demand from those bytes.
//!
//! Sinks never re-serialize the vCon: every store gets the bytes that were fsynced into the
//! spool (after the transform stage), so a webhook's HMAC, a file's hash and the spool's
//! CRC all cover the same bytes.

use std::sync::Arc;

use bytes::Bytes;
use serde::Deserialize;
use vcontap_vcon::civil_from_days;

/// Position of a record in the spool: strictly increasing, never reused (survives restarts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct RecordId(pub u64);

impl std::fmt::Display for RecordId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One finished vCon, durable in the spool before any sink sees it.
#[derive(Debug, Clone)]
pub struct Record {
    /// Spool position (delivery order).
    pub id: RecordId,
    /// The vCon's uuid: the idempotency key every sink writes by.
    pub uuid: Arc<str>,
    /// The vCon as compact JSON, exactly as spooled.
    pub json: Bytes,
    /// Wall-clock time the record was committed to the spool (Unix ms), for the delivery
    /// latency metric.
    pub spooled_unix_ms: u64,
}

impl Record {
    /// `created_at` as `(year, month, day)` in UTC without parsing the whole document when
    /// possible ([`top_level_str`]; a vCon's `created_at` sits in its first bytes), else
    /// through [`Record::head`].
    pub fn created_ymd(&self) -> Option<(i64, u32, u32)> {
        match top_level_str(&self.json, "created_at") {
            Some(t) => {
                let ms = parse_rfc3339_ms(t)?;
                Some(civil_from_days(ms.div_euclid(86_400_000)))
            }
            None => self.head().ok()?.created_ymd(),
        }
    }

    /// Parses the fields stores index by.
    pub fn head(&self) -> Result<VconHead, serde_json::Error> {
        serde_json::from_slice(&self.json)
    }
}

/// The indexed fields of a vCon (everything else is ignored while parsing).
#[derive(Debug, Clone, Deserialize)]
pub struct VconHead {
    /// `uuid`.
    pub uuid: String,
    /// `vcon` (syntax version).
    #[serde(default)]
    pub vcon: String,
    /// `created_at`, RFC 3339.
    pub created_at: String,
    /// `updated_at`, RFC 3339, if present.
    #[serde(default)]
    pub updated_at: Option<String>,
    /// `subject`, if present.
    #[serde(default)]
    pub subject: Option<String>,
    /// `parties[]` identifiers.
    #[serde(default)]
    pub parties: Vec<PartyHead>,
}

/// A party's identifiers, as the conserver indexes them (`tel:`, `mailto:`, `name:` sets).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PartyHead {
    /// `tel` (bare E.164 or digits).
    #[serde(default)]
    pub tel: Option<String>,
    /// `mailto`.
    #[serde(default)]
    pub mailto: Option<String>,
    /// `name`.
    #[serde(default)]
    pub name: Option<String>,
    /// `sip` URI.
    #[serde(default)]
    pub sip: Option<String>,
}

impl VconHead {
    /// `created_at` as milliseconds since the Unix epoch (`None` if it is not RFC 3339).
    pub fn created_unix_ms(&self) -> Option<i64> {
        parse_rfc3339_ms(&self.created_at)
    }

    /// `(year, month, day)` of `created_at` in UTC, for dated layouts (`YYYY/MM/DD`).
    pub fn created_ymd(&self) -> Option<(i64, u32, u32)> {
        let ms = self.created_unix_ms()?;
        Some(civil_from_days(ms.div_euclid(86_400_000)))
    }
}

/// The value of a top-level string member `key` of a JSON object, found by a minimal scan
/// that stops at the member (no allocation, no full parse: a finished vCon can be tens of
/// KB and only its first members are needed). `None` when the document is not an object,
/// the member is absent, not a string, or holds escapes (callers then parse in full).
pub fn top_level_str<'a>(json: &'a [u8], key: &str) -> Option<&'a str> {
    let mut depth = 0u32;
    let mut i = 0usize;
    // Whether the string that just ended was a key at depth 1 equal to `key`.
    let mut matched = false;
    while let Some(&c) = json.get(i) {
        match c {
            b'"' => {
                let start = i + 1;
                let mut j = start;
                let mut escaped = false;
                loop {
                    match json.get(j)? {
                        b'\\' => {
                            escaped = true;
                            j += 2;
                        }
                        b'"' => break,
                        _ => j += 1,
                    }
                }
                let text = json.get(start..j)?;
                if matched {
                    return if escaped {
                        None
                    } else {
                        std::str::from_utf8(text).ok()
                    };
                }
                // A key is a string at depth 1 followed by ':'.
                let mut k = j + 1;
                while json.get(k).is_some_and(u8::is_ascii_whitespace) {
                    k += 1;
                }
                if depth == 1 && json.get(k) == Some(&b':') && !escaped && text == key.as_bytes() {
                    k += 1;
                    while json.get(k).is_some_and(u8::is_ascii_whitespace) {
                        k += 1;
                    }
                    if json.get(k) != Some(&b'"') {
                        return None;
                    }
                    matched = true;
                    i = k;
                    continue;
                }
                i = j + 1;
            }
            b'{' | b'[' => {
                depth += 1;
                i += 1;
            }
            b'}' | b']' => {
                depth = depth.checked_sub(1)?;
                i += 1;
            }
            _ => i += 1,
        }
    }
    None
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)` to Unix milliseconds.
///
/// Written by hand (as `vcontap_vcon::time` formats by hand): the stores need one parser of
/// the timestamps vcontap itself writes, and `chrono` is not worth its build time for it.
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(r)?;
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    if b.len() < 20 || b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
        return None;
    }
    if !matches!(b.get(10), Some(b'T' | b't' | b' ')) || b.get(13) != Some(&b':') {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut ms = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return None;
        }
        let frac = b.get(start..i)?;
        for k in 0..3 {
            ms = ms * 10 + frac.get(k).map_or(0, |c| i64::from(c - b'0'));
        }
    }
    let offset_min = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && b.get(i + 3) == Some(&b':') => {
            let v = num(i + 1..i + 3)? * 60 + num(i + 4..i + 6)?;
            if *sign == b'+' {
                v
            } else {
                -v
            }
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo as u32, d as u32);
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset_min * 60;
    Some(secs * 1000 + ms)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_vcontap_writes_and_offsets() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_ms("2025-10-15T14:28:01.907Z"),
            Some(1_760_538_481_907)
        );
        assert_eq!(
            parse_rfc3339_ms("2025-10-15T16:28:01.907123+02:00"),
            Some(1_760_538_481_907)
        );
        assert_eq!(
            parse_rfc3339_ms("2000-02-29T00:00:00Z"),
            Some(951_782_400_000)
        );
        assert_eq!(parse_rfc3339_ms("1969-12-31T23:59:59Z"), Some(-1000));
    }

    #[test]
    fn rejects_malformed() {
        for s in [
            "",
            "2025-10-15",
            "2025-13-15T14:28:01Z",
            "2025-10-15T14:28:01",
            "2025-10-15T14:28:01.Z",
            "2025-10-15T14:28:01Zjunk",
            "2025-10-15T14:28:01+0200",
            "２０２５-10-15T14:28:01Z",
            "2025-1a-15T14:28:01Z",
        ] {
            assert_eq!(parse_rfc3339_ms(s), None, "{s}");
        }
    }

    #[test]
    fn top_level_members_are_found_and_nested_ones_ignored() {
        let j = br#"{"vcon":"0.4.0","parties":[{"created_at":"1999-01-01T00:00:00Z"}],"x":{"created_at":"1998-01-01T00:00:00Z"},"note":"\"created_at\":\"1997\"","created_at" : "2026-11-29T10:00:00Z"}"#;
        assert_eq!(top_level_str(j, "created_at"), Some("2026-11-29T10:00:00Z"));
        assert_eq!(top_level_str(j, "vcon"), Some("0.4.0"));
        assert_eq!(top_level_str(j, "missing"), None);
        assert_eq!(top_level_str(br#"{"created_at":3}"#, "created_at"), None);
        assert_eq!(
            top_level_str(br#"{"created_at":"a\"b"}"#, "created_at"),
            None
        );
        assert_eq!(top_level_str(br#"["created_at","x"]"#, "created_at"), None);
        for cut in 0..j.len() {
            let _ = top_level_str(&j[..cut], "created_at");
        }
        assert_eq!(top_level_str(b"}}}}", "created_at"), None);
    }

    #[test]
    fn head_dates() {
        let r = Record {
            id: RecordId(1),
            uuid: "u".into(),
            json: Bytes::from_static(
                br#"{"vcon":"0.4.0","uuid":"u","created_at":"2026-01-01T00:00:00.5Z","parties":[{"tel":"+15551234567"},{"name":"Bob"}],"dialog":[]}"#,
            ),
            spooled_unix_ms: 0,
        };
        let h = r.head().unwrap();
        assert_eq!(h.created_ymd(), Some((2026, 1, 1)));
        assert_eq!(r.created_ymd(), Some((2026, 1, 1)));
        assert_eq!(h.created_unix_ms(), Some(1_767_225_600_500));
        assert_eq!(h.parties.len(), 2);
        assert_eq!(h.parties[0].tel.as_deref(), Some("+15551234567"));
    }
}
