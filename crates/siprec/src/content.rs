//! What a recording session's vCon keeps beyond parties and audio (issue 9, "vCon mapping"
//! and "Consent and policy"), as engine session attachments, and the recording policy's
//! verdict. Pure: the shell calls [`SessionContent::open`] on
//! [`Event::Opened`](crate::uas::Event::Opened), [`SessionContent::metadata_changed`] on
//! [`Event::MetadataChanged`](crate::uas::Event::MetadataChanged) and
//! [`SessionContent::added_streams`] on
//! [`Event::StreamsChanged`](crate::uas::Event::StreamsChanged), and forwards what they
//! return to the engine.
//!
//! # Attachments (spelling per ../shared/docs/vcon.md §5.1, §6, §8)
//!
//! | purpose | mediatype | encoding | what |
//! |---|---|---|---|
//! | `sip-invite` (sip-signaling extension) | `message/sip` | `none` (UTF-8) or `base64url` | the SIPREC INVITE as received, credential headers removed (the extension forbids them) |
//! | `siprec-metadata` | `application/rs-metadata+xml` | `none` or `base64url` | every rs-metadata document (INVITE, each re-INVITE/UPDATE), raw, `start` = when it arrived |
//! | `siprec-ids` | `application/json` | `json` | correlation ids, recording attributes and the policy verdict ([`IDS_PURPOSE`]) |
//!
//! The `siprec-ids` body links recording sessions of one conversation (a transfer or an
//! SRC failover makes several): `{recording_session: {call_id, session_id_header, siprec,
//! recording_id}, groups: [{group_id, associate_time}], sessions: [{session_id, group_id,
//! sip_session_ids, start_time, stop_time}], vendor_ids: [{name, value}], metadata:
//! {dialect, namespace, versions}, consent: {record: [{value, where}], recordpref: [...]},
//! recording: {recorded, policy, reason?, stopped_at?}}`. It is written at open and written
//! again (appended: vCon arrays are append-only) only when a metadata update changed it;
//! readers take the last one.
//!
//! Text bodies are kept as text when they are UTF-8 (SIP and XML are), else base64url:
//! the bytes are never rewritten (bare-LF bodies are real).

use base64::Engine as _;
use serde_json::{json, Value};
use vcontap_engine::{Attachment, AttachmentBody, Side, StreamSpec};
use vcontap_sip::Message;
use vcontap_wire::Timestamp;

use crate::body;
use crate::metadata::{Dialect, Metadata};
use crate::policy::{Consent, Decision, Facts, Policy, REASON_DNR};
use crate::session::{self, SessionPlan};
use crate::uas::{Opened, StreamInfo};

/// `purpose` of the raw INVITE.
pub const INVITE_PURPOSE: &str = "sip-invite";
/// `purpose` of each raw metadata document.
pub const METADATA_PURPOSE: &str = "siprec-metadata";
/// `purpose` of the correlation-ids document.
pub const IDS_PURPOSE: &str = "siprec-ids";

/// Headers never kept in the INVITE attachment (draft-howe-vcon-sip-signaling: no
/// credentials in attachments).
const CREDENTIAL_HEADERS: [&str; 4] = [
    "authorization",
    "proxy-authorization",
    "www-authenticate",
    "proxy-authenticate",
];
/// Most ids of each kind kept across metadata versions.
const MAX_IDS: usize = 64;

/// The vCon-side state of one recording session.
#[derive(Debug, Clone)]
pub struct SessionContent {
    call_id: String,
    session_id_header: Option<String>,
    siprec: bool,
    policy: &'static str,
    decision: Decision,
    /// When a later metadata version put the session under the do-not-record list.
    stopped_at: Option<Timestamp>,
    consent: Consent,
    versions: u32,
    recording_id: Option<String>,
    dialect: Option<Dialect>,
    namespace: Option<String>,
    groups: Vec<(String, Option<String>)>,
    sessions: Vec<Value>,
    vendor_ids: Vec<(String, String)>,
    /// The latest merged metadata (sides of streams added later).
    metadata: Option<Metadata>,
    /// The last `siprec-ids` body written.
    last_ids: Option<Value>,
}

/// What a metadata update means for the session.
#[derive(Debug, Clone, Default)]
pub struct Update {
    /// Attachments to hand to the engine (`Engine::attach_session`).
    pub attachments: Vec<Attachment>,
    /// `Some(reason)` when the session must stop recording from now on (a participant of
    /// the new metadata is on the do-not-record list): pause it for good.
    pub stop: Option<&'static str>,
}

/// Text when UTF-8, else base64url (bytes untouched either way).
fn raw_body(bytes: &[u8]) -> AttachmentBody {
    match std::str::from_utf8(bytes) {
        Ok(t) => AttachmentBody::Text(t.to_owned()),
        Err(_) => AttachmentBody::Base64Url(
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes),
        ),
    }
}

/// Bytes up to and including the last header line's end of line: the first blank line,
/// CRLF or bare LF, whichever comes first (a body may hold the other kind).
pub fn head_len(msg: &[u8]) -> usize {
    let crlf = msg
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p.saturating_add(2));
    let lf = msg
        .windows(2)
        .position(|w| w == b"\n\n")
        .map(|p| p.saturating_add(1));
    match (crlf, lf) {
        (Some(a), Some(b)) => a.min(b),
        (a, b) => a.or(b).unwrap_or(msg.len()),
    }
}

/// The INVITE without credential header lines (and their continuation lines); the rest,
/// body included, byte for byte.
fn without_credentials(invite: &[u8]) -> Vec<u8> {
    let head_end = head_len(invite);
    let (head, rest) = invite.split_at(head_end.min(invite.len()));
    let mut out = Vec::with_capacity(invite.len());
    let mut dropping = false;
    for line in head.split_inclusive(|b| *b == b'\n') {
        let continuation = line.first().is_some_and(|b| *b == b' ' || *b == b'\t');
        if !continuation {
            let name = line
                .split(|b| *b == b':')
                .next()
                .map(|n| String::from_utf8_lossy(n).trim().to_ascii_lowercase())
                .unwrap_or_default();
            dropping = line.contains(&b':') && CREDENTIAL_HEADERS.contains(&name.as_str());
        }
        if !dropping {
            out.extend_from_slice(line);
        }
    }
    out.extend_from_slice(rest);
    out
}

fn dialect_name(d: Dialect) -> &'static str {
    match d {
        Dialect::Rfc7865 => "rfc7865",
        Dialect::Draft => "draft",
        Dialect::BroadWorks => "broadworks",
    }
}

fn metadata_attachment(raw: &[u8], at: Timestamp) -> Attachment {
    Attachment {
        purpose: METADATA_PURPOSE.into(),
        at,
        mediatype: "application/rs-metadata+xml".into(),
        body: raw_body(raw),
        extension: None,
    }
}

impl SessionContent {
    /// A session just answered: the policy's verdict (set on the plan's
    /// `spec.not_recorded`) and the attachments known at open (set on `spec.attachments`).
    pub fn open(opened: &Opened, policy: &Policy, plan: &mut SessionPlan) -> SessionContent {
        let msg = Message::parse(&opened.invite).ok();
        let mut consent = Consent::default();
        if let Some(m) = &msg {
            if let Ok(parts) = body::split(
                m.header("Content-Type"),
                m.header("Content-Disposition"),
                m.body(),
            ) {
                if let Some(sdp) = parts.sdp {
                    consent.add_sdp(sdp, "sdp");
                }
            }
        }
        if let Some(raw) = &opened.metadata_raw {
            consent.add_metadata(raw);
        }
        let header_names: Vec<&str> = msg
            .as_ref()
            .map(|m| m.headers().iter().map(|h| h.name).collect())
            .unwrap_or_default();
        let from_to: Vec<&str> = msg
            .as_ref()
            .map(|m| {
                [m.from(), m.to()]
                    .into_iter()
                    .flatten()
                    .map(|n| n.uri)
                    .collect()
            })
            .unwrap_or_default();
        let raws: Vec<&[u8]> = opened.metadata_raw.as_deref().into_iter().collect();
        let decision = policy.decide(&Facts {
            consent: &consent,
            metadata: opened.metadata.as_ref(),
            metadata_raw: &raws,
            header_names: &header_names,
            from_to: &from_to,
        });
        let mut c = SessionContent {
            call_id: opened.call_id.clone(),
            session_id_header: msg
                .as_ref()
                .and_then(|m| m.header("Session-ID"))
                .map(|s| s.trim().to_owned()),
            siprec: opened.siprec,
            policy: policy.mode.as_str(),
            decision,
            stopped_at: None,
            consent,
            versions: 0,
            recording_id: None,
            dialect: None,
            namespace: None,
            groups: Vec::new(),
            sessions: Vec::new(),
            vendor_ids: Vec::new(),
            metadata: None,
            last_ids: None,
        };
        let mut attachments = vec![Attachment {
            purpose: INVITE_PURPOSE.into(),
            at: opened.at,
            mediatype: "message/sip".into(),
            body: raw_body(&without_credentials(&opened.invite)),
            extension: Some(vcontap_vcon::EXT_SIP_SIGNALING),
        }];
        if let Some(raw) = &opened.metadata_raw {
            c.versions = 1;
            attachments.push(metadata_attachment(raw, opened.at));
        }
        if let Some(md) = &opened.metadata {
            c.merge_ids(md);
            c.metadata = Some(md.clone());
        }
        attachments.extend(c.ids_attachment(opened.at));
        plan.spec.not_recorded = c.decision.reason().map(str::to_owned);
        plan.spec.attachments = attachments;
        c
    }

    /// The policy's verdict at open.
    pub fn decision(&self) -> &Decision {
        &self.decision
    }

    /// True while media should reach the engine (recorded and not stopped later).
    pub fn recording(&self) -> bool {
        self.decision == Decision::Record && self.stopped_at.is_none()
    }

    /// A metadata document arrived in a re-INVITE or UPDATE (`merged`: the state after
    /// it). A do-not-record participant appearing now stops the recording from `at`.
    pub fn metadata_changed(
        &mut self,
        raw: &[u8],
        merged: &Metadata,
        at: Timestamp,
        policy: &Policy,
    ) -> Update {
        let mut out = Update::default();
        self.versions = self.versions.saturating_add(1);
        out.attachments.push(metadata_attachment(raw, at));
        self.consent.add_metadata(raw);
        self.merge_ids(merged);
        self.metadata = Some(merged.clone());
        if self.recording()
            && policy.on_do_not_record_list(&Facts {
                metadata: Some(merged),
                ..Facts::default()
            })
        {
            self.stopped_at = Some(at);
            out.stop = Some(REASON_DNR);
        }
        out.attachments.extend(self.ids_attachment(at));
        out
    }

    /// Streams a re-INVITE added (a new label, or an m-line refused before and accepted
    /// now): their engine specs, in the order `Engine::add_session_stream` must get them;
    /// `plan.stream_index` already points their m-lines at the indices they will get.
    pub fn added_streams(&self, plan: &mut SessionPlan, streams: &[StreamInfo]) -> Vec<StreamSpec> {
        let participants = session::participants(self.metadata.as_ref(), streams);
        let mut out = Vec::new();
        for s in streams {
            if s.port.is_none() {
                continue;
            }
            let known = plan.stream_index.get(s.index).copied().flatten().is_some();
            if known {
                continue;
            }
            let k = plan.spec.streams.len().saturating_add(out.len());
            let side = s
                .senders
                .first()
                .and_then(|&i| participants.get(i))
                .map(|p| p.side)
                .unwrap_or(if k % 2 == 0 {
                    Side::Caller
                } else {
                    Side::Callee
                });
            let spec = StreamSpec {
                label: s.label.clone().unwrap_or_else(|| s.index.to_string()),
                side,
                formats: s
                    .formats
                    .iter()
                    .map(|f| vcontap_engine::PayloadFormat {
                        pt: f.pt,
                        encoding: f.encoding.clone(),
                        clock_rate: f.clock_rate,
                        channels: f.channels,
                    })
                    .collect(),
            };
            if plan.stream_index.len() <= s.index {
                plan.stream_index.resize(s.index.saturating_add(1), None);
            }
            if let Some(slot) = plan.stream_index.get_mut(s.index) {
                *slot = Some(k);
            }
            out.push(spec);
        }
        plan.spec.streams.extend(out.iter().cloned());
        out
    }

    fn merge_ids(&mut self, md: &Metadata) {
        if md.recording_id.is_some() {
            self.recording_id.clone_from(&md.recording_id);
        }
        self.dialect = Some(md.dialect);
        if md.namespace.is_some() {
            self.namespace.clone_from(&md.namespace);
        }
        for g in &md.groups {
            if self.groups.len() < MAX_IDS && !self.groups.iter().any(|(id, _)| *id == g.id) {
                self.groups.push((g.id.clone(), g.associate_time.clone()));
            }
        }
        for s in &md.sessions {
            let v = json!({
                "session_id": s.id,
                "group_id": s.group_ref,
                "sip_session_ids": s.sip_session_ids,
                "start_time": s.start_time,
                "stop_time": s.stop_time,
            });
            let pos = self
                .sessions
                .iter()
                .position(|x| x.get("session_id").and_then(Value::as_str) == Some(s.id.as_str()));
            let full = self.sessions.len() >= MAX_IDS;
            match pos.and_then(|i| self.sessions.get_mut(i)) {
                // A later version (stop time, more Session-IDs) replaces the entry.
                Some(x) => *x = v,
                None if !full => self.sessions.push(v),
                None => {}
            }
        }
        for (k, v) in &md.vendor_ids {
            if self.vendor_ids.len() < MAX_IDS
                && !self.vendor_ids.iter().any(|(a, b)| a == k && b == v)
            {
                self.vendor_ids.push((k.clone(), v.clone()));
            }
        }
    }

    /// The ids document as it stands.
    pub fn ids(&self) -> Value {
        let place = |l: &[(String, String)]| -> Vec<Value> {
            l.iter()
                .map(|(v, w)| json!({"value": v, "where": w}))
                .collect()
        };
        let mut recording = json!({
            "recorded": self.decision == Decision::Record,
            "policy": self.policy,
        });
        if let (Some(r), Some(m)) = (self.decision.reason(), recording.as_object_mut()) {
            m.insert("reason".into(), r.into());
        }
        if let (Some(t), Some(m)) = (self.stopped_at, recording.as_object_mut()) {
            m.insert(
                "stopped_at".into(),
                vcontap_vcon::format_time(t.nanos()).into(),
            );
            m.insert("reason".into(), REASON_DNR.into());
        }
        json!({
            "recording_session": {
                "call_id": self.call_id,
                "session_id_header": self.session_id_header,
                "siprec": self.siprec,
                "recording_id": self.recording_id,
            },
            "groups": self.groups.iter().map(|(id, t)| json!({"group_id": id, "associate_time": t})).collect::<Vec<_>>(),
            "sessions": self.sessions,
            "vendor_ids": self.vendor_ids.iter().map(|(k, v)| json!({"name": k, "value": v})).collect::<Vec<_>>(),
            "metadata": {
                "dialect": self.dialect.map(dialect_name),
                "namespace": self.namespace,
                "versions": self.versions,
            },
            "consent": {
                "record": place(&self.consent.record),
                "recordpref": place(&self.consent.recordpref),
            },
            "recording": recording,
        })
    }

    /// A `siprec-ids` attachment when the document changed since the last one.
    fn ids_attachment(&mut self, at: Timestamp) -> Option<Attachment> {
        let mut ids = self.ids();
        // `versions` alone changing is no reason for a new copy.
        let comparable = |v: &Value| {
            let mut v = v.clone();
            if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
                m.remove("versions");
            }
            v
        };
        if self
            .last_ids
            .as_ref()
            .is_some_and(|l| comparable(l) == comparable(&ids))
        {
            return None;
        }
        self.last_ids = Some(ids.clone());
        if let Some(m) = ids.as_object_mut() {
            m.insert(
                "written_at".into(),
                vcontap_vcon::format_time(at.nanos()).into(),
            );
        }
        Some(Attachment {
            purpose: IDS_PURPOSE.into(),
            at,
            mediatype: "application/json".into(),
            body: AttachmentBody::Json(ids),
            extension: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{DoNotRecord, RecordPolicy, REASON_UNMARKED};
    use crate::uas::{Peer, RsId, Transport};

    const T: i64 = 1_767_225_600_000_000_000;

    fn invite(sdp_extra: &str, md: &str) -> Vec<u8> {
        let sdp = format!("v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n{sdp_extra}m=audio 5000 RTP/AVP 0\r\na=label:1\r\n");
        let body = format!("--b\r\nContent-Type: application/sdp\r\n\r\n{sdp}\r\n--b\r\nContent-Type: application/rs-metadata+xml\r\nContent-Disposition: recording-session\r\n\r\n{md}\r\n--b--\r\n");
        format!("INVITE sip:srs@10.0.0.9 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1\r\nFrom: <sip:+15551230001@sbc.example>;tag=a\r\nTo: <sip:srs@10.0.0.9>\r\nCall-ID: rs-1\r\nCSeq: 1 INVITE\r\nAuthorization: Digest secret\r\n  continued-secret\r\nSession-ID: ab30317f1a784dc48ff824d0d3715d86\r\nRequire: siprec\r\nContent-Type: multipart/mixed;boundary=b\r\nContent-Length: {}\r\n\r\n{body}", body.len()).into_bytes()
    }

    const MD: &str = r#"<recording xmlns="urn:ietf:params:xml:ns:recording:1"><datamode>complete</datamode><group group_id="g1"><associate-time>2026-01-01T00:00:00Z</associate-time></group><session session_id="s1"><group-ref>g1</group-ref><sipSessionID>ab30317f1a784dc48ff824d0d3715d86;remote=47755a9de7794ba387653f2099600ef2</sipSessionID></session><participant participant_id="p1"><nameID aor="sip:+15551230001@a.example"/></participant><participant participant_id="p2"><nameID aor="sip:2001@pbx.example"/></participant><stream stream_id="st1" session_id="s1"><label>1</label></stream><extensiondata><apkt:ucid xmlns:apkt="http://acmepacket.com/siprec/extensiondata">00FA080018A5E1</apkt:ucid></extensiondata></recording>"#;

    fn opened(sdp_extra: &str) -> Opened {
        let raw = invite(sdp_extra, MD);
        Opened {
            rs: RsId(1),
            call_id: "rs-1".into(),
            siprec: true,
            metadata: crate::metadata::parse(MD.as_bytes()).ok(),
            metadata_raw: Some(MD.as_bytes().to_vec()),
            invite: raw,
            streams: Vec::new(),
            paused: false,
            peer: Peer {
                transport: Transport::Udp,
                addr: "10.0.0.1:5060".parse().unwrap(),
                conn: 0,
            },
            at: Timestamp(T),
        }
    }

    #[test]
    fn open_attaches_invite_metadata_and_ids() {
        let o = opened("a=record:on\r\n");
        let mut plan = session::plan(&o);
        let c = SessionContent::open(&o, &Policy::default(), &mut plan);
        assert!(c.recording());
        assert_eq!(plan.spec.not_recorded, None);
        let a = &plan.spec.attachments;
        let purposes: Vec<&str> = a.iter().map(|a| a.purpose.as_str()).collect();
        assert_eq!(purposes, [INVITE_PURPOSE, METADATA_PURPOSE, IDS_PURPOSE]);
        let AttachmentBody::Text(inv) = &a[0].body else {
            panic!("INVITE is UTF-8 text")
        };
        assert!(inv.starts_with("INVITE sip:srs@10.0.0.9"));
        assert!(
            !inv.contains("Authorization") && !inv.contains("secret"),
            "{inv}"
        );
        assert!(inv.contains("Session-ID: ab30"), "other headers kept");
        assert!(inv.ends_with("--b--\r\n"), "body kept byte for byte");
        assert_eq!(a[0].extension, Some(vcontap_vcon::EXT_SIP_SIGNALING));
        assert_eq!(a[1].body, AttachmentBody::Text(MD.into()));
        let AttachmentBody::Json(ids) = &a[2].body else {
            panic!("ids are JSON")
        };
        assert_eq!(ids["recording_session"]["call_id"], "rs-1");
        assert_eq!(
            ids["recording_session"]["session_id_header"],
            "ab30317f1a784dc48ff824d0d3715d86"
        );
        assert_eq!(ids["groups"][0]["group_id"], "g1");
        assert_eq!(ids["sessions"][0]["session_id"], "s1");
        assert_eq!(ids["sessions"][0]["group_id"], "g1");
        assert_eq!(
            ids["sessions"][0]["sip_session_ids"][0],
            "ab30317f1a784dc48ff824d0d3715d86;remote=47755a9de7794ba387653f2099600ef2"
        );
        assert_eq!(ids["vendor_ids"][0]["name"], "ucid");
        assert_eq!(ids["vendor_ids"][0]["value"], "00FA080018A5E1");
        assert_eq!(ids["metadata"]["dialect"], "rfc7865");
        assert_eq!(ids["consent"]["record"][0]["value"], "on");
        assert_eq!(ids["recording"], json!({"recorded": true, "policy": "all"}));
    }

    #[test]
    fn policy_verdicts_reach_the_plan_and_the_ids() {
        let o = opened("");
        let marked = Policy {
            mode: RecordPolicy::Marked,
            ..Policy::default()
        };
        let mut plan = session::plan(&o);
        let c = SessionContent::open(&o, &marked, &mut plan);
        assert!(!c.recording());
        assert_eq!(plan.spec.not_recorded.as_deref(), Some(REASON_UNMARKED));
        let o = opened("a=record:on\r\n");
        let mut plan = session::plan(&o);
        assert!(SessionContent::open(&o, &marked, &mut plan).recording());
        let dnr = Policy {
            do_not_record: DoNotRecord::parse("sip:2001@pbx.example\n").unwrap(),
            ..Policy::default()
        };
        let mut plan = session::plan(&o);
        let c = SessionContent::open(&o, &dnr, &mut plan);
        assert_eq!(plan.spec.not_recorded.as_deref(), Some(REASON_DNR));
        assert_eq!(
            c.ids()["recording"],
            json!({"recorded": false, "policy": "all", "reason": REASON_DNR})
        );
    }

    #[test]
    fn metadata_versions_are_attached_and_late_do_not_record_stops() {
        let o = opened("");
        let policy = Policy {
            do_not_record: DoNotRecord::parse("+15559990000\n").unwrap(),
            ..Policy::default()
        };
        let mut plan = session::plan(&o);
        let mut c = SessionContent::open(&o, &policy, &mut plan);
        assert!(c.recording());
        // Same ids: the metadata is attached, the ids document is not repeated.
        let md = crate::metadata::parse(MD.as_bytes()).unwrap();
        let u = c.metadata_changed(MD.as_bytes(), &md, Timestamp(T + 1_000_000_000), &policy);
        assert_eq!(u.attachments.len(), 1);
        assert_eq!(u.attachments[0].purpose, METADATA_PURPOSE);
        assert_eq!(u.attachments[0].at, Timestamp(T + 1_000_000_000));
        assert_eq!(u.stop, None);
        // A participant on the list joins: recording stops, new ids say so.
        let late = MD.replace("sip:2001@pbx.example", "tel:+15559990000");
        let md = crate::metadata::parse(late.as_bytes()).unwrap();
        let u = c.metadata_changed(late.as_bytes(), &md, Timestamp(T + 2_000_000_000), &policy);
        assert_eq!(u.stop, Some(REASON_DNR));
        assert!(!c.recording());
        let purposes: Vec<&str> = u.attachments.iter().map(|a| a.purpose.as_str()).collect();
        assert_eq!(purposes, [METADATA_PURPOSE, IDS_PURPOSE]);
        let AttachmentBody::Json(ids) = &u.attachments[1].body else {
            panic!()
        };
        assert_eq!(ids["recording"]["reason"], REASON_DNR);
        assert_eq!(ids["metadata"]["versions"], 3);
        assert!(ids["recording"]["stopped_at"].is_string());
    }

    #[test]
    fn non_utf8_bodies_are_base64url_and_credentials_only_in_the_head() {
        assert_eq!(
            raw_body(b"\xff\x00a"),
            AttachmentBody::Base64Url("_wBh".into())
        );
        let m =
            b"INVITE x SIP/2.0\nProxy-Authorization: y\nVia: z\n\nAuthorization: in body\r\n\r\nx";
        assert_eq!(
            without_credentials(m),
            b"INVITE x SIP/2.0\nVia: z\n\nAuthorization: in body\r\n\r\nx"
        );
    }
}
