//! Structural checks the WG schema and the Python `vcon` library do not perform
//! (shared digest §12.2): uuid syntax and version, `content_hash` format, index ranges,
//! `incomplete` ⇒ `disposition`, recordings carry `url` + `content_hash` + `mediatype`,
//! `tel` in the conserver's accepted form, explicit `Z` offsets, URL schemes.
//!
//! Tests run this on every vCon they produce, next to `validate-vcon`.

use crate::{DialogType, PartyEvent, Vcon, VCON_VERSION};

/// The first rule a vCon breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CheckError {
    /// `vcon` is not `0.4.0`.
    #[error("vcon version is {0:?}, expected 0.4.0")]
    Version(String),
    /// `uuid` is not a canonical version-8 UUID.
    #[error("uuid {0:?} is not a canonical UUIDv8")]
    Uuid(String),
    /// A date is not RFC 3339 UTC with `Z`.
    #[error("{field}: {value:?} is not an RFC 3339 UTC date")]
    Date {
        /// Where.
        field: String,
        /// What.
        value: String,
    },
    /// An index points outside its array.
    #[error("{0}: index out of range")]
    Index(String),
    /// A dialog breaks a per-type rule.
    #[error("dialog[{0}]: {1}")]
    Dialog(usize, &'static str),
    /// A `tel` the conserver would reject.
    #[error("parties[{0}].tel {1:?} is not +E.164")]
    Tel(usize, String),
    /// A malformed `content_hash`.
    #[error("{0}: content_hash is not sha512-<86 base64url chars>")]
    Hash(String),
}

fn is_uuid_v8(u: &str) -> bool {
    let b = u.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_digit() || (b'a'..=b'f').contains(c),
        })
        && b.get(14) == Some(&b'8')
        && matches!(b.get(19), Some(b'8' | b'9' | b'a' | b'b'))
}

fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    (b.len() == 20 || b.len() == 24)
        && b.last() == Some(&b'Z')
        && b.get(10) == Some(&b'T')
        && b.get(..10).is_some_and(|day| {
            day.iter().enumerate().all(|(i, c)| {
                if i == 4 || i == 7 {
                    *c == b'-'
                } else {
                    c.is_ascii_digit()
                }
            })
        })
}

fn is_hash(h: &str) -> bool {
    h.strip_prefix("sha512-").is_some_and(|d| {
        d.len() == 86
            && d.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
    })
}

fn is_tel(t: &str) -> bool {
    t.len() >= 6 && t.starts_with('+') && t[1..].bytes().all(|c| c.is_ascii_digit())
}

/// Checks `v` against the rules above.
pub fn check(v: &Vcon) -> Result<(), CheckError> {
    if v.vcon != VCON_VERSION {
        return Err(CheckError::Version(v.vcon.clone()));
    }
    if !is_uuid_v8(&v.uuid) {
        return Err(CheckError::Uuid(v.uuid.clone()));
    }
    let date = |field: &str, value: &str| {
        if is_date(value) {
            Ok(())
        } else {
            Err(CheckError::Date {
                field: field.to_string(),
                value: value.to_string(),
            })
        }
    };
    date("created_at", &v.created_at)?;
    if let Some(u) = &v.updated_at {
        date("updated_at", u)?;
    }
    let np = v.parties.len() as u32;
    let nd = v.dialog.len() as u32;
    for (i, p) in v.parties.iter().enumerate() {
        if let Some(t) = &p.tel {
            if !is_tel(t) {
                return Err(CheckError::Tel(i, t.clone()));
            }
        }
    }
    for (i, d) in v.dialog.iter().enumerate() {
        date(&format!("dialog[{i}].start"), &d.start)?;
        if d.parties.iter().flatten().any(|p| *p >= np) || d.originator.is_some_and(|o| o >= np) {
            return Err(CheckError::Index(format!("dialog[{i}].parties")));
        }
        for (j, h) in d.party_history.iter().enumerate() {
            date(&format!("dialog[{i}].party_history[{j}].time"), &h.time)?;
            if h.party >= np {
                return Err(CheckError::Index(format!("dialog[{i}].party_history[{j}]")));
            }
            if matches!(h.event, PartyEvent::Keydown | PartyEvent::Keyup) && h.button.is_none() {
                return Err(CheckError::Dialog(i, "key event without button"));
            }
        }
        if d.duration.is_some_and(|x| x.is_nan() || x < 0.0) {
            return Err(CheckError::Dialog(i, "negative duration"));
        }
        match d.kind {
            DialogType::Recording => {
                let (Some(url), Some(h)) = (&d.url, &d.content_hash) else {
                    return Err(CheckError::Dialog(
                        i,
                        "recording without url + content_hash",
                    ));
                };
                if !url.contains("://") {
                    return Err(CheckError::Dialog(i, "url without scheme"));
                }
                if !is_hash(h) {
                    return Err(CheckError::Hash(format!("dialog[{i}]")));
                }
                if d.mediatype.is_none() {
                    return Err(CheckError::Dialog(i, "recording without mediatype"));
                }
                if d.disposition.is_some() {
                    return Err(CheckError::Dialog(i, "disposition on a recording"));
                }
            }
            DialogType::Incomplete => {
                const OK: [&str; 6] = [
                    "no-answer",
                    "congestion",
                    "failed",
                    "busy",
                    "hung-up",
                    "voicemail-no-message",
                ];
                if !d.disposition.as_deref().is_some_and(|x| OK.contains(&x)) {
                    return Err(CheckError::Dialog(
                        i,
                        "incomplete without a valid disposition",
                    ));
                }
                if d.url.is_some() {
                    return Err(CheckError::Dialog(i, "incomplete with content"));
                }
            }
            DialogType::Transfer => {
                if d.parties.is_some() || d.url.is_some() || d.mediatype.is_some() {
                    return Err(CheckError::Dialog(i, "transfer with content or parties"));
                }
                for x in [d.transferee, d.transferor, d.transfer_target]
                    .into_iter()
                    .flatten()
                {
                    if x >= np {
                        return Err(CheckError::Index(format!("dialog[{i}].transfer")));
                    }
                }
                if d.original.iter().flatten().any(|x| *x >= nd) {
                    return Err(CheckError::Index(format!("dialog[{i}].original")));
                }
            }
            DialogType::Text => {}
            _ => return Err(CheckError::Dialog(i, "unknown dialog type")),
        }
    }
    for (i, a) in v.attachments.iter().enumerate() {
        date(&format!("attachments[{i}].start"), &a.start)?;
        if a.party >= np || a.dialog >= nd {
            return Err(CheckError::Index(format!("attachments[{i}]")));
        }
    }
    for (i, a) in v.analysis.iter().enumerate() {
        if a.dialog.iter().flatten().any(|x| *x >= nd) {
            return Err(CheckError::Index(format!("analysis[{i}].dialog")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{content_hash, Dialog, Party};

    fn base() -> Vcon {
        let mut v = Vcon::new(
            crate::uuid_v8(1_700_000_000_000, 1, 42),
            crate::format_time(1_700_000_000_000_000_000),
        );
        v.parties = vec![
            Party {
                tel: Some("+15551234567".into()),
                ..Default::default()
            },
            Party::default(),
        ];
        v
    }

    #[test]
    fn accepts_a_good_recording() {
        let mut v = base();
        v.dialog.push(Dialog {
            kind: DialogType::Recording,
            start: v.created_at.clone(),
            duration: Some(1.5),
            parties: Some(vec![0, 1]),
            mediatype: Some("audio/x-wav".into()),
            url: Some("file:///tmp/x.wav".into()),
            content_hash: Some(content_hash(b"abc")),
            ..Default::default()
        });
        assert_eq!(check(&v), Ok(()));
    }

    #[test]
    fn rejects_common_mistakes() {
        let mut v = base();
        v.parties[0].tel = Some("tel:+1555".into());
        assert!(matches!(check(&v), Err(CheckError::Tel(0, _))));
        let mut v = base();
        v.dialog.push(Dialog {
            kind: DialogType::Incomplete,
            start: v.created_at.clone(),
            ..Default::default()
        });
        assert!(matches!(check(&v), Err(CheckError::Dialog(0, _))));
        let mut v = base();
        v.dialog.push(Dialog {
            kind: DialogType::Recording,
            start: v.created_at.clone(),
            parties: Some(vec![0, 2]),
            ..Default::default()
        });
        assert!(matches!(check(&v), Err(CheckError::Index(_))));
        let mut v = base();
        v.uuid = "01234567-89ab-4def-8123-456789abcdef".into();
        assert!(matches!(check(&v), Err(CheckError::Uuid(_))));
        let mut v = base();
        v.created_at = "2026-10-15 14:30".into();
        assert!(matches!(check(&v), Err(CheckError::Date { .. })));
        assert!(!is_hash("sha512-deadbeef"));
        assert!(is_hash(&content_hash(b"")));
    }
}
