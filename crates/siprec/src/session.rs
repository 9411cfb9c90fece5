//! From recording-session actions to the engine's session API: parties and sides from the
//! metadata, one engine stream per accepted m-line, end reasons. Pure functions; the shell
//! calls them on [`Event::Opened`](crate::uas::Event::Opened),
//! [`Event::MetadataChanged`](crate::uas::Event::MetadataChanged) and
//! [`Event::Ended`](crate::uas::Event::Ended).
//!
//! Parties (issue 9, "vCon mapping"): `tel` only for a real E.164 number
//! (`vcontap_sip::e164`), the AoR as `sip` (a scheme-less AoR such as Sonus'
//! `2249888500@host` gets `sip:`; bare digits such as Metaswitch's `7602922411` are no
//! SIP URI and become the name when there is none), the metadata `<name>` as `name`.
//! Sides (left/right channel): the vendor calling hint, else the participant heard on the
//! first stream is the caller and the one on the second the callee, else document order.

use vcontap_engine::{FinishReason, Participant, PayloadFormat, SessionSpec, Side, StreamSpec};
use vcontap_sip::{e164, parse_uri};
use vcontap_vcon::Party;
use vcontap_wire::Timestamp;

use crate::metadata::{self, Metadata};
use crate::uas::{EndReason, Opened, StreamInfo};

/// A session to open, and where each m-line's packets go.
#[derive(Debug, Clone)]
pub struct SessionPlan {
    /// For `Engine::open_session`.
    pub spec: SessionSpec,
    /// `stream_index[m]`: the engine stream of m-line `m` (`None`: refused line).
    pub stream_index: Vec<Option<usize>>,
}

/// The vCon party of one metadata participant.
pub fn party(p: &metadata::Participant) -> Party {
    let mut party = Party::default();
    let name = p.name.clone();
    if let Some(aor) = p.aor.as_deref().map(str::trim).filter(|a| !a.is_empty()) {
        let has_scheme = aor.split_once(':').is_some_and(|(s, _)| {
            ["sip", "sips", "tel"]
                .iter()
                .any(|k| s.eq_ignore_ascii_case(k))
        });
        let with_scheme = if has_scheme {
            aor.to_owned()
        } else if aor.contains('@') {
            format!("sip:{aor}")
        } else {
            String::new()
        };
        if let Some(uri) = parse_uri(&with_scheme) {
            party.tel = e164(&uri);
            if uri.is_sip() {
                party.sip = Some(with_scheme.clone());
            }
        }
        if party.sip.is_none() && party.tel.is_none() && name.is_none() {
            // Bare digits or an unknown scheme: keep it readable, never invent a URI.
            party.name = Some(aor.to_owned());
        }
    }
    if name.is_some() {
        party.name = name;
    }
    party
}

/// Sides of every participant (see the module documentation).
pub fn sides(md: &Metadata, streams: &[StreamInfo]) -> Vec<Side> {
    let n = md.participants.len();
    let mut out: Vec<Option<Side>> = md
        .participants
        .iter()
        .map(|p| match p.calling {
            Some(true) => Some(Side::Caller),
            Some(false) => Some(Side::Callee),
            None => None,
        })
        .collect();
    if out.iter().all(Option::is_none) {
        let accepted: Vec<&StreamInfo> = streams.iter().filter(|s| s.port.is_some()).collect();
        if accepted.len() >= 2 {
            for (k, side) in [(0usize, Side::Caller), (1, Side::Callee)] {
                if let Some(s) = accepted.get(k) {
                    for &i in &s.senders {
                        if let Some(slot) = out.get_mut(i) {
                            slot.get_or_insert(side);
                        }
                    }
                }
            }
        }
    }
    // Whoever is still open: the first undecided is the caller when nobody is, the rest
    // callees.
    let mut caller_taken = out.contains(&Some(Side::Caller));
    (0..n)
        .map(|i| match out.get(i).copied().flatten() {
            Some(s) => s,
            None if !caller_taken => {
                caller_taken = true;
                Side::Caller
            }
            None => Side::Callee,
        })
        .collect()
}

/// The engine participants of a metadata state (at least one: a recording without
/// metadata gets one unnamed party per side, so both channels have an owner).
pub fn participants(md: Option<&Metadata>, streams: &[StreamInfo]) -> Vec<Participant> {
    let from_md: Vec<Participant> = match md {
        Some(md) => {
            let sides = sides(md, streams);
            md.participants
                .iter()
                .zip(sides)
                .map(|(p, side)| {
                    let mut party = party(p);
                    party.role = Some(role(side).into());
                    Participant { party, side }
                })
                .collect()
        }
        None => Vec::new(),
    };
    if !from_md.is_empty() {
        return from_md;
    }
    let accepted = streams.iter().filter(|s| s.port.is_some()).count();
    let mut out = vec![Participant {
        party: Party {
            role: Some("caller".into()),
            ..Party::default()
        },
        side: Side::Caller,
    }];
    if accepted > 1 {
        out.push(Participant {
            party: Party {
                role: Some("callee".into()),
                ..Party::default()
            },
            side: Side::Callee,
        });
    }
    out
}

fn role(side: Side) -> &'static str {
    match side {
        Side::Caller => "caller",
        Side::Callee => "callee",
    }
}

/// What `Engine::open_session` needs for an answered recording session.
pub fn plan(opened: &Opened) -> SessionPlan {
    let participants = participants(opened.metadata.as_ref(), &opened.streams);
    let side_of = |i: usize| participants.get(i).map(|p| p.side);
    let mut streams = Vec::new();
    let mut stream_index = Vec::with_capacity(opened.streams.len());
    for s in &opened.streams {
        if s.port.is_none() {
            stream_index.push(None);
            continue;
        }
        let k = streams.len();
        let side = s
            .senders
            .first()
            .and_then(|&i| side_of(i))
            .unwrap_or(if k % 2 == 0 {
                Side::Caller
            } else {
                Side::Callee
            });
        streams.push(StreamSpec {
            label: s.label.clone().unwrap_or_else(|| s.index.to_string()),
            side,
            formats: s
                .formats
                .iter()
                .map(|f| PayloadFormat {
                    pt: f.pt,
                    encoding: f.encoding.clone(),
                    clock_rate: f.clock_rate,
                    channels: f.channels,
                })
                .collect(),
        });
        stream_index.push(Some(k));
    }
    SessionPlan {
        spec: SessionSpec {
            key: opened.call_id.clone(),
            participants,
            streams,
            subject: None,
            at: opened.at,
            // Filled by `content::SessionContent::open` (the shell calls it after `plan`).
            attachments: Vec::new(),
            not_recorded: None,
        },
        stream_index,
    }
}

/// The engine's finish reason for a session end.
pub fn finish_reason(reason: EndReason) -> FinishReason {
    match reason {
        EndReason::Bye => FinishReason::Bye,
        EndReason::Cancelled => FinishReason::Cancel,
        EndReason::AckTimeout => FinishReason::Failure(408),
        EndReason::SessionExpired => FinishReason::Timeout,
        EndReason::Local => FinishReason::Shutdown,
        EndReason::Rejected => FinishReason::Failure(503),
    }
}

/// The time to give the engine for an action: never before the session opened.
pub fn at(opened_at: Timestamp, at: Timestamp) -> Timestamp {
    opened_at.max(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(aor: Option<&str>, name: Option<&str>) -> metadata::Participant {
        metadata::Participant {
            aor: aor.map(str::to_owned),
            name: name.map(str::to_owned),
            ..Default::default()
        }
    }

    #[test]
    fn parties_tel_only_for_e164_and_no_invented_uris() {
        let x = party(&p(Some("sip:+15551230001@x.example"), Some("Alice")));
        assert_eq!(x.tel.as_deref(), Some("+15551230001"));
        assert_eq!(x.sip.as_deref(), Some("sip:+15551230001@x.example"));
        assert_eq!(x.name.as_deref(), Some("Alice"));
        let x = party(&p(Some("2249888500@172.16.198.55"), None));
        assert_eq!(x.sip.as_deref(), Some("sip:2249888500@172.16.198.55"));
        assert_eq!(x.tel, None, "not a global number");
        let x = party(&p(Some("7602922411"), None));
        assert_eq!(
            (x.sip, x.tel, x.name.as_deref()),
            (None, None, Some("7602922411"))
        );
        let x = party(&p(Some("tel:+442071234567"), None));
        assert_eq!((x.tel.as_deref(), x.sip), (Some("+442071234567"), None));
        assert_eq!(party(&p(None, None)), Party::default());
    }
}
