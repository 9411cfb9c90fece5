//! Recording policy (issue 9, "Consent and policy"): whether an answered recording session
//! is recorded. Pure decisions over what the SRC sent; the session is answered either way
//! (an SRC whose recording is refused may fail the call over or alarm, and RFC 7866 leaves
//! the decision to the SRS), only the media is not kept, and the vCon says why.
//!
//! - [`RecordPolicy::All`] (default): record every session, unless a participant is on the
//!   do-not-record list.
//! - [`RecordPolicy::Marked`]: record only when the SRC marks the session: `a=record:on` in
//!   its SDP or metadata (RFC 7866 §6.1, see [`Consent`]), or a configured header
//!   ([`Policy::marker_headers`]) or metadata element ([`Policy::marker_elements`]) is present.
//! - The do-not-record list ([`DoNotRecord`]) wins over both.
//!
//! Whom the list is matched against: every identity the SRC names for the recorded call:
//! the metadata participants' AoRs, the vendor calling/called numbers lifted from metadata
//! extensions, and the RS INVITE's From and To (several SRCs, e.g. CUBE, put the recorded
//! call's parties there). A match errs on the side of not recording.
//!
//! # Matching
//! Entries are one per line (`#` comments, blank lines ignored):
//! - a number (`+1 555 123-0001`, `tel:+15551230001`, `sip:+15551230001@host`): compared as
//!   digits (separators and `+` dropped). A number matches a participant number that is
//!   equal, or when the shorter has at least [`MIN_SUFFIX_DIGITS`] digits and ends the
//!   longer (a national `5551230001` against an E.164 `+15551230001`);
//! - a SIP URI or `user@host`: user and host compared case-insensitively (scheme, port and
//!   parameters ignored);
//! - a bare user name (`alice`): matches that user part at any host.
//!
//! Hand-written: a list of strings and three comparisons; no dependency fits better.

use std::collections::HashSet;

use vcontap_sip::{e164, parse_uri};

use crate::metadata::Metadata;

/// Shortest digit string matched as a suffix of a longer one (national vs E.164).
pub const MIN_SUFFIX_DIGITS: usize = 8;
/// Most entries read from a do-not-record list (more are an error, never a silent cut).
pub const MAX_DNR_ENTRIES: usize = 1_000_000;

/// Which sessions are recorded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RecordPolicy {
    /// Every session.
    #[default]
    All,
    /// Only sessions the SRC marks (`a=record:on`, a marker header or metadata element).
    Marked,
}

impl RecordPolicy {
    /// `all` / `marked`.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordPolicy::All => "all",
            RecordPolicy::Marked => "marked",
        }
    }

    /// Parses `all` / `marked` (case-insensitive).
    pub fn parse(s: &str) -> Option<RecordPolicy> {
        match s.trim().to_ascii_lowercase().as_str() {
            "all" => Some(RecordPolicy::All),
            "marked" => Some(RecordPolicy::Marked),
            _ => None,
        }
    }
}

/// Why a list could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// A line is neither a number nor a URI nor a user name.
    #[error("do-not-record line {0}: not a number, URI or user name")]
    BadEntry(usize),
    /// More than [`MAX_DNR_ENTRIES`] entries.
    #[error("do-not-record list longer than {MAX_DNR_ENTRIES} entries")]
    TooLong,
}

/// A do-not-record list, normalised for matching (see the module documentation).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DoNotRecord {
    /// Digit strings.
    numbers: HashSet<String>,
    /// Lower-case `user@host`.
    addresses: HashSet<String>,
    /// Lower-case user names matched at any host.
    users: HashSet<String>,
}

/// An identity to match: digits of a number, `user@host`, user part.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Identity {
    digits: Option<String>,
    address: Option<String>,
    user: Option<String>,
}

fn digits_of(s: &str) -> Option<String> {
    let s = s.trim();
    let ok = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '+' | '-' | ' ' | '.' | '(' | ')'));
    let d: String = s.chars().filter(char::is_ascii_digit).collect();
    (ok && !d.is_empty()).then_some(d)
}

/// The identities an AoR, URI or bare string names.
fn identity(s: &str) -> Option<Identity> {
    let s = s.trim();
    // A name-addr's URI (`<sip:…>`).
    let s = match s.strip_prefix('<') {
        Some(inner) => inner.split('>').next().unwrap_or(inner).trim(),
        None => s,
    };
    if s.is_empty() {
        return None;
    }
    if let Some(d) = digits_of(s) {
        return Some(Identity {
            digits: Some(d),
            ..Identity::default()
        });
    }
    let with_scheme = match s.split_once(':') {
        Some((scheme, _))
            if ["sip", "sips", "tel"]
                .iter()
                .any(|k| scheme.eq_ignore_ascii_case(k)) =>
        {
            s.to_owned()
        }
        _ if s.contains('@') => format!("sip:{s}"),
        _ => {
            // A bare user name.
            let ok = s
                .chars()
                .all(|c| !c.is_whitespace() && !matches!(c, '<' | '>' | '"' | ';' | ':'));
            return ok.then(|| Identity {
                user: Some(s.to_ascii_lowercase()),
                ..Identity::default()
            });
        }
    };
    let uri = parse_uri(&with_scheme)?;
    let number = e164(&uri).or_else(|| {
        if uri.scheme_is("tel") {
            Some(uri.host.to_owned())
        } else {
            uri.user
                .map(|u| u.split(';').next().unwrap_or(u).to_owned())
        }
    });
    let user = uri
        .user
        .map(|u| u.split(';').next().unwrap_or(u).to_ascii_lowercase());
    Some(Identity {
        digits: number.as_deref().and_then(digits_of),
        address: user
            .as_ref()
            .filter(|_| !uri.scheme_is("tel"))
            .map(|u| format!("{u}@{}", uri.host.to_ascii_lowercase())),
        user,
    })
}

impl DoNotRecord {
    /// Reads a list: one entry per line, `#` comments and blank lines ignored.
    pub fn parse(text: &str) -> Result<DoNotRecord, PolicyError> {
        let mut out = DoNotRecord::default();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            if out.len() >= MAX_DNR_ENTRIES {
                return Err(PolicyError::TooLong);
            }
            let id = identity(line).ok_or(PolicyError::BadEntry(n.saturating_add(1)))?;
            // The most specific form the entry has: a number, else an address, else a user.
            if let Some(d) = id.digits {
                out.numbers.insert(d);
            } else if let Some(a) = id.address {
                out.addresses.insert(a);
            } else if let Some(u) = id.user {
                out.users.insert(u);
            } else {
                return Err(PolicyError::BadEntry(n.saturating_add(1)));
            }
        }
        Ok(out)
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.numbers.len() + self.addresses.len() + self.users.len()
    }

    /// True when the list is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True when `who` (an AoR, URI or number as the SRC wrote it) is on the list.
    pub fn matches(&self, who: &str) -> bool {
        let Some(id) = identity(who) else {
            return false;
        };
        if let Some(d) = &id.digits {
            if self.numbers.contains(d) {
                return true;
            }
            // National against international form: the shorter ends the longer. Only
            // entries this long are compared, so the scan is over the (usually short) list.
            if d.len() >= MIN_SUFFIX_DIGITS
                && self.numbers.iter().any(|n| {
                    n.len() >= MIN_SUFFIX_DIGITS
                        && (n.ends_with(d.as_str()) || d.ends_with(n.as_str()))
                })
            {
                return true;
            }
        }
        if id
            .address
            .as_ref()
            .is_some_and(|a| self.addresses.contains(a))
        {
            return true;
        }
        id.user.as_ref().is_some_and(|u| self.users.contains(u))
    }
}

/// The RFC 7866 §6.1 recording attributes the SRC sent: `a=record` and `a=recordpref`
/// values with where each was found (`sdp` for the session level, `sdp m=N` for a media
/// line, `metadata` for a metadata element of that name).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Consent {
    /// `a=record` values (`on`, `off`, `paused`) and where.
    pub record: Vec<(String, String)>,
    /// `a=recordpref` values (`on`, `off`, `pause`, `nopreference`) and where.
    pub recordpref: Vec<(String, String)>,
}

/// Most attribute values kept per kind (a hostile SDP repeating the line).
const MAX_CONSENT_VALUES: usize = 16;
/// Longest value kept.
const MAX_CONSENT_VALUE: usize = 64;

impl Consent {
    /// Reads `a=record:` / `a=recordpref:` lines of an SDP body (any line ending).
    pub fn add_sdp(&mut self, sdp: &[u8], origin: &str) {
        let text = String::from_utf8_lossy(sdp);
        let mut m: Option<usize> = None;
        for line in text.lines() {
            let line = line.trim();
            if line.starts_with("m=") {
                m = Some(m.map_or(0, |i| i.saturating_add(1)));
                continue;
            }
            let place = match m {
                None => origin.to_owned(),
                Some(i) => format!("{origin} m={i}"),
            };
            if let Some(v) = line.strip_prefix("a=recordpref:") {
                push(&mut self.recordpref, v, place);
            } else if let Some(v) = line.strip_prefix("a=record:") {
                push(&mut self.record, v, place);
            }
        }
    }

    /// Reads metadata elements named `record` / `recordpref` (vendor extensions; RFC 7865
    /// defines none, so this is where an SRC passing the CS attributes on would put them).
    pub fn add_metadata(&mut self, raw: &[u8]) {
        let text = String::from_utf8_lossy(raw);
        for (name, list) in [
            ("recordpref", &mut self.recordpref),
            ("record", &mut self.record),
        ] {
            for v in element_texts(&text, name) {
                push(list, &v, "metadata".into());
            }
        }
    }

    /// True when the SRC says the session is being recorded (`a=record:on` anywhere).
    pub fn marked_on(&self) -> bool {
        self.record
            .iter()
            .any(|(v, _)| v.eq_ignore_ascii_case("on"))
    }

    /// True when nothing was found.
    pub fn is_empty(&self) -> bool {
        self.record.is_empty() && self.recordpref.is_empty()
    }
}

fn push(list: &mut Vec<(String, String)>, v: &str, place: String) {
    let v = v.trim();
    if v.is_empty() || list.len() >= MAX_CONSENT_VALUES {
        return;
    }
    let mut end = v.len().min(MAX_CONSENT_VALUE);
    while !v.is_char_boundary(end) {
        end -= 1;
    }
    let entry = (v.get(..end).unwrap_or("").to_owned(), place);
    if !list.contains(&entry) {
        list.push(entry);
    }
}

/// Each tag of `xml` in order: its name as written (`ns:name`; empty for a closing tag) and
/// the text right after its `<`. A scan, not a parse: metadata was parsed (bounded) already;
/// this only looks for markers.
fn tags(xml: &str) -> impl Iterator<Item = (&str, &str)> {
    let mut rest = xml;
    std::iter::from_fn(move || {
        let lt = rest.find('<')?;
        rest = rest.get(lt.saturating_add(1)..).unwrap_or("");
        let tag_end = rest
            .find(|c: char| c == '>' || c == '/' || c.is_whitespace())
            .unwrap_or(rest.len());
        Some((rest.get(..tag_end).unwrap_or(""), rest))
    })
}

/// Whether a tag name (`ns:name`) has local name `name`, ignoring case.
fn is_local(tag: &str, name: &str) -> bool {
    !tag.is_empty()
        && tag
            .rsplit(':')
            .next()
            .unwrap_or(tag)
            .eq_ignore_ascii_case(name)
}

/// Texts of elements with local name `name` (any prefix): `<name>text</…>`.
fn element_texts(xml: &str, name: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (tag, rest) in tags(xml) {
        if !is_local(tag, name) {
            continue;
        }
        let Some(gt) = rest.find('>') else { break };
        if rest.get(..gt).is_some_and(|t| t.ends_with('/')) {
            continue;
        }
        let body = rest.get(gt.saturating_add(1)..).unwrap_or("");
        let text = body.split('<').next().unwrap_or("").trim();
        if !text.is_empty() && out.len() < MAX_CONSENT_VALUES {
            out.push(text.to_owned());
        }
    }
    out
}

/// True when the metadata document has an element with local name `name` (any prefix).
fn has_element(xml: &str, name: &str) -> bool {
    tags(xml).any(|(tag, _)| is_local(tag, name))
}

/// The recording policy (`vcontap siprec --record-policy … --do-not-record FILE`).
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Which sessions are recorded.
    pub mode: RecordPolicy,
    /// [`RecordPolicy::Marked`]: an INVITE carrying any of these headers is marked.
    pub marker_headers: Vec<String>,
    /// [`RecordPolicy::Marked`]: metadata with an element of any of these local names is
    /// marked.
    pub marker_elements: Vec<String>,
    /// Never record sessions with these participants.
    pub do_not_record: DoNotRecord,
}

/// What the SRC said about a session, for [`Policy::decide`].
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    /// The recording attributes found.
    pub consent: &'a Consent,
    /// The merged metadata, if any.
    pub metadata: Option<&'a Metadata>,
    /// Raw metadata documents (every version so far).
    pub metadata_raw: &'a [&'a [u8]],
    /// Names of the INVITE's headers.
    pub header_names: &'a [&'a str],
    /// The INVITE's From and To URIs.
    pub from_to: &'a [&'a str],
}

static NO_CONSENT: Consent = Consent {
    record: Vec::new(),
    recordpref: Vec::new(),
};

impl Default for Facts<'_> {
    fn default() -> Self {
        Facts {
            consent: &NO_CONSENT,
            metadata: None,
            metadata_raw: &[],
            header_names: &[],
            from_to: &[],
        }
    }
}

/// The verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Record.
    Record,
    /// Answer, but do not record; the reason goes into the vCon.
    Skip(&'static str),
}

/// The reasons [`Decision::Skip`] gives.
pub const REASON_DNR: &str = "do-not-record list";
/// See [`REASON_DNR`].
pub const REASON_UNMARKED: &str = "not marked for recording (record policy: marked)";

impl Decision {
    /// `Some(reason)` when not recorded.
    pub fn reason(&self) -> Option<&'static str> {
        match self {
            Decision::Record => None,
            Decision::Skip(r) => Some(r),
        }
    }
}

impl Policy {
    /// Decides; the do-not-record list first, then the mode.
    pub fn decide(&self, f: &Facts<'_>) -> Decision {
        if self.on_do_not_record_list(f) {
            return Decision::Skip(REASON_DNR);
        }
        match self.mode {
            RecordPolicy::All => Decision::Record,
            RecordPolicy::Marked if self.marked(f) => Decision::Record,
            RecordPolicy::Marked => Decision::Skip(REASON_UNMARKED),
        }
    }

    /// True when any identity the SRC named is on the list.
    pub fn on_do_not_record_list(&self, f: &Facts<'_>) -> bool {
        if self.do_not_record.is_empty() {
            return false;
        }
        let dnr = &self.do_not_record;
        let md_hit = f.metadata.is_some_and(|md| {
            md.participants
                .iter()
                .filter_map(|p| p.aor.as_deref())
                .any(|a| dnr.matches(a))
                || md.vendor_ids.iter().any(|(k, v)| {
                    (k.eq_ignore_ascii_case("callingpartynumber")
                        || k.eq_ignore_ascii_case("calledpartynumber"))
                        && dnr.matches(v)
                })
        });
        md_hit || f.from_to.iter().any(|u| dnr.matches(u))
    }

    fn marked(&self, f: &Facts<'_>) -> bool {
        if f.consent.marked_on() {
            return true;
        }
        let header = f.header_names.iter().any(|h| {
            self.marker_headers
                .iter()
                .any(|m| m.trim().eq_ignore_ascii_case(h.trim()))
        });
        let element = self.marker_elements.iter().any(|name| {
            f.metadata_raw
                .iter()
                .any(|raw| has_element(&String::from_utf8_lossy(raw), name.trim()))
        });
        header || element
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn do_not_record_matches_numbers_uris_and_users() {
        let dnr = DoNotRecord::parse(
            "# opt-outs\n+1 (555) 123-0001\n\ntel:+442071234567\nsip:Alice@Example.COM;transport=tcp\nbob # any host\n",
        )
        .unwrap();
        assert_eq!(dnr.len(), 4);
        assert!(dnr.matches("sip:+15551230001@sbc.example"));
        assert!(dnr.matches("tel:+1-555-123-0001"));
        assert!(
            dnr.matches("sip:5551230001@10.0.0.1"),
            "national form of the E.164 entry"
        );
        assert!(dnr.matches("5551230001"), "bare digits AoR (Metaswitch)");
        assert!(
            !dnr.matches("sip:1230001@pbx"),
            "7 digits are too short to match a suffix"
        );
        assert!(dnr.matches("sip:+442071234567@x"));
        assert!(dnr.matches("alice@example.com"), "scheme-less AoR (Sonus)");
        assert!(dnr.matches("sips:ALICE@example.com:5061"));
        assert!(!dnr.matches("sip:alice@other.example"));
        assert!(dnr.matches("sip:bob@anywhere.example"));
        assert!(!dnr.matches("sip:bobby@anywhere.example"));
        assert!(!dnr.matches(""));
        assert!(!dnr.matches("sip:+15559999999@x"));
        assert!(DoNotRecord::parse("<sip:x>\n").is_err());
        assert!(DoNotRecord::parse("a b\n").is_err());
    }

    #[test]
    fn consent_attributes_from_sdp_and_metadata() {
        let sdp = b"v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\na=record:on\r\nm=audio 5000 RTP/AVP 0\r\na=recordpref:off\r\nm=audio 5002 RTP/AVP 0\r\na=record:paused\r\n";
        let mut c = Consent::default();
        c.add_sdp(sdp, "sdp");
        assert_eq!(
            c.record,
            [
                ("on".into(), "sdp".into()),
                ("paused".into(), "sdp m=1".into())
            ]
        );
        assert_eq!(c.recordpref, [("off".into(), "sdp m=0".into())]);
        assert!(c.marked_on());
        let mut c = Consent::default();
        c.add_metadata(b"<recording><x:record>off</x:record><recordpref>nopreference</recordpref><record/></recording>");
        assert_eq!(c.record, [("off".into(), "metadata".into())]);
        assert_eq!(c.recordpref, [("nopreference".into(), "metadata".into())]);
        assert!(!c.marked_on());
    }

    #[test]
    fn decisions_all_marked_and_do_not_record() {
        let md = crate::metadata::parse(
            br#"<recording xmlns="urn:ietf:params:xml:ns:recording:1"><participant participant_id="p1"><nameID aor="sip:+15551230001@a.example"/></participant><extensiondata><acme:recordMe xmlns:acme="urn:acme">1</acme:recordMe></extensiondata></recording>"#,
        )
        .unwrap();
        let raw: &[&[u8]] = &[br#"<recording><extensiondata><acme:recordMe>1</acme:recordMe></extensiondata></recording>"#];
        let none = Consent::default();
        let mut on = Consent::default();
        on.add_sdp(b"v=0\r\na=record:on\r\n", "sdp");
        let facts = |c| Facts {
            consent: c,
            metadata: Some(&md),
            ..Facts::default()
        };
        let all = Policy::default();
        assert_eq!(all.decide(&facts(&none)), Decision::Record);
        let marked = Policy {
            mode: RecordPolicy::Marked,
            ..Policy::default()
        };
        assert_eq!(
            marked.decide(&facts(&none)),
            Decision::Skip(REASON_UNMARKED)
        );
        assert_eq!(marked.decide(&facts(&on)), Decision::Record);
        let by_header = Policy {
            marker_headers: vec!["X-Record".into()],
            ..marked.clone()
        };
        let headers: &[&str] = &["Via", "x-record"];
        let f = Facts {
            header_names: headers,
            ..facts(&none)
        };
        assert_eq!(by_header.decide(&f), Decision::Record);
        let by_element = Policy {
            marker_elements: vec!["recordMe".into()],
            ..marked.clone()
        };
        let f = Facts {
            metadata_raw: raw,
            ..facts(&none)
        };
        assert_eq!(by_element.decide(&f), Decision::Record);
        assert_eq!(
            by_element.decide(&facts(&none)),
            Decision::Skip(REASON_UNMARKED)
        );
        // The list wins over a mark, and From/To are matched too.
        let dnr = Policy {
            do_not_record: DoNotRecord::parse("+15551230001\n").unwrap(),
            ..Policy::default()
        };
        assert_eq!(dnr.decide(&facts(&on)), Decision::Skip(REASON_DNR));
        let other = Policy {
            do_not_record: DoNotRecord::parse("sip:carol@b.example\n").unwrap(),
            ..Policy::default()
        };
        assert_eq!(other.decide(&facts(&none)), Decision::Record);
        let ft: &[&str] = &["<sip:Carol@b.example>"];
        let f = Facts {
            from_to: ft,
            ..facts(&none)
        };
        assert_eq!(other.decide(&f), Decision::Skip(REASON_DNR));
        assert_eq!(RecordPolicy::parse("Marked"), Some(RecordPolicy::Marked));
        assert_eq!(RecordPolicy::parse("some"), None);
    }
}
