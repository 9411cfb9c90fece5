//! SIPREC recording metadata (RFC 7865 `application/rs-metadata+xml`) in every dialect the
//! collected SRCs send, into one model: groups, communication sessions, participants,
//! streams and their associations, plus unknown extensions kept as raw XML.
//!
//! # Dialects (../shared/docs/siprec.md §2)
//! - RFC 7865: `<recording xmlns="urn:ietf:params:xml:ns:recording:1">`, `session_id=`,
//!   `participant_id=`, `stream_id=` attributes, `<participantstreamassoc>` send/recv.
//! - Draft (Oracle/Acme, Metaswitch): namespace without `:1`, `id=`/`session=`
//!   attributes, `<send>` inline in `<participant>`.
//! - BroadWorks/Webex: root `<recording_metadata xmlns="urn:ietf:params:xml:ns:siprec">`,
//!   `<aor>` instead of `<nameID aor=>`, `<send><id>…</id></send>`.
//!
//! Matching is by local name, case-insensitively (`dataMode`, `tns:datamode`), so any
//! namespace or prefix parses; the root namespace is recorded for the vCon, never checked.
//! A document that breaks half-way keeps what was read before the break
//! ([`Metadata::malformed`]): metadata imperfections never cost a recording (§6 item 7).
//!
//! # Why quick-xml
//! A pull parser over the borrowed body (no DOM, no serde): matching by local name and
//! keeping unknown subtrees as byte ranges of the input is direct, and it never expands
//! DTD entities (a `<!DOCTYPE>` is skipped, `&name;` of an undeclared entity stays
//! literal), so entity-expansion bombs are inert. Size, depth, element count and text
//! length are bounded here ([`MAX_METADATA_BYTES`], [`MAX_DEPTH`], [`MAX_OBJECTS`],
//! [`MAX_TEXT`]).

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

/// Largest document parsed. Real documents are 1-6 KB (a Webex conference ~6 KB).
pub const MAX_METADATA_BYTES: usize = 256 * 1024;
/// Deepest element nesting followed; deeper documents stop parsing there (malformed).
pub const MAX_DEPTH: usize = 32;
/// Most objects kept of each kind (groups, sessions, participants, streams, extensions,
/// vendor ids). Real documents have under 20 of each.
pub const MAX_OBJECTS: usize = 256;
/// Longest text content kept per element; longer text is cut (on a char boundary).
pub const MAX_TEXT: usize = 4096;

/// Why a metadata document was not parsed at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MetadataError {
    /// Larger than [`MAX_METADATA_BYTES`].
    #[error("metadata document larger than {MAX_METADATA_BYTES} bytes")]
    TooLarge,
    /// No root element could be read.
    #[error("metadata is not an XML document")]
    NotXml,
}

/// `<datamode>` (RFC 7865 §6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataMode {
    /// A full snapshot: replaces what we knew.
    Complete,
    /// A delta: patches objects by id.
    Partial,
}

/// Which generation of the format the document uses (from its root and attribute names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// RFC 7865 (`session_id=`, `participant_id=`...).
    Rfc7865,
    /// The pre-RFC draft (`id=`, `session=`, inline `<send>`): Oracle, Metaswitch.
    Draft,
    /// BroadWorks/Webex `recording_metadata`.
    BroadWorks,
}

/// Where a participant's stream list came from: the first two steps of the mapping
/// fallback chain (see [`crate::mapping`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendSource {
    /// `<participantstreamassoc>` (RFC 7865).
    Assoc,
    /// `<send>` inside `<participant>` (draft, BroadWorks).
    Inline,
}

/// An unknown element (extension data, vendor elements) kept verbatim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extension {
    /// Local name of the element that contained it (`recording`, `participant`...).
    pub parent: String,
    /// The id of the group, session, participant or stream it belongs to, if any (so a
    /// vendor's per-participant data such as `apkt:callingParty` stays attached).
    pub owner: Option<String>,
    /// Its own local name (`extensiondata`, `callData`, `netsapiensExtension`...).
    pub name: String,
    /// The element's raw XML, exactly as received.
    pub raw: String,
}

/// `<group>`: a communication-session group (CSG).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Group {
    /// `group_id` (or draft `id`).
    pub id: String,
    /// `<associate-time>` as written.
    pub associate_time: Option<String>,
}

/// `<session>`: a communication session (the recorded call).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CsSession {
    /// `session_id` (or draft `id`).
    pub id: String,
    /// `<group-ref>` (or BroadWorks `group=`).
    pub group_ref: Option<String>,
    /// `<sipSessionID>` values (RFC 7989 Session-ID, `local;remote=...`).
    pub sip_session_ids: Vec<String>,
    /// `<start-time>` or `<associate-time>` as written.
    pub start_time: Option<String>,
    /// `<stop-time>` or `<disassociate-time>` as written.
    pub stop_time: Option<String>,
}

/// `<participant>`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Participant {
    /// `participant_id` (or draft `id`).
    pub id: String,
    /// `<nameID aor=>` or BroadWorks `<aor>` as written (may lack a scheme).
    pub aor: Option<String>,
    /// `<name>` (trimmed; empty names dropped).
    pub name: Option<String>,
    /// Stream ids this participant's voice is in.
    pub send: Vec<String>,
    /// Stream ids this participant hears.
    pub recv: Vec<String>,
    /// Where `send` came from.
    pub send_source: Option<SendSource>,
    /// Vendor hint: is this the calling party? (Oracle `apkt:callingParty`, Intrado
    /// `<role>calling</role>`.)
    pub calling: Option<bool>,
    /// Associate time (participant or participantsessionassoc) as written.
    pub associate_time: Option<String>,
    /// Disassociate time as written: the participant left.
    pub disassociate_time: Option<String>,
}

/// `<stream>`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stream {
    /// `stream_id` (or draft `id`); may be empty (Avaya SBCE).
    pub id: String,
    /// `session_id` (or draft `session`).
    pub session: Option<String>,
    /// `<label>`: the join key to the SDP `a=label`.
    pub label: Option<String>,
    /// `<mode>` (`separate`/`mixed`, draft).
    pub mode: Option<String>,
}

/// One parsed metadata document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    /// Format generation.
    pub dialect: Dialect,
    /// The root element's namespace URI, as declared.
    pub namespace: Option<String>,
    /// `<datamode>`; `None` when absent (treat as complete).
    pub datamode: Option<DataMode>,
    /// Root or BroadWorks `<recording id=>`.
    pub recording_id: Option<String>,
    /// Groups.
    pub groups: Vec<Group>,
    /// Communication sessions.
    pub sessions: Vec<CsSession>,
    /// Participants, in document order.
    pub participants: Vec<Participant>,
    /// Streams, in document order.
    pub streams: Vec<Stream>,
    /// Unknown elements, raw.
    pub extensions: Vec<Extension>,
    /// Vendor correlation ids found inside extensions: `(element local name, value)`,
    /// e.g. `("ucid", …)`, `("extTrackingID", …)`, `("gcid", …)`, `("groupSeq", …)`.
    pub vendor_ids: Vec<(String, String)>,
    /// The document broke (XML error, too deep) after what was kept.
    pub malformed: bool,
}

/// Extension leaf elements whose text is a correlation id worth lifting out.
const VENDOR_ID_NAMES: [&str; 7] = [
    "ucid",
    "exttrackingid",
    "gcid",
    "callid",
    "groupseq",
    "callingpartynumber",
    "calledpartynumber",
];

impl Metadata {
    /// True when the document is a partial update (`<datamode>partial`).
    pub fn is_partial(&self) -> bool {
        self.datamode == Some(DataMode::Partial)
    }

    /// The participant with `id`.
    pub fn participant(&self, id: &str) -> Option<&Participant> {
        self.participants.iter().find(|p| p.id == id)
    }

    /// The stream with `label`.
    pub fn stream_by_label(&self, label: &str) -> Option<&Stream> {
        self.streams
            .iter()
            .find(|s| s.label.as_deref() == Some(label))
    }

    /// Applies a newer document: a complete one replaces this state, a partial one
    /// patches objects by id (fields it sets win, new objects are added, send/recv lists
    /// given replace the old ones). Returns the ids of objects the partial referenced but
    /// we did not know (§6 item 13: log them, or ask for a snapshot).
    pub fn apply(&mut self, newer: Metadata) -> Vec<String> {
        if !newer.is_partial() {
            *self = newer;
            return Vec::new();
        }
        let mut unknown = Vec::new();
        for p in newer.participants {
            let full = self.participants.len() >= MAX_OBJECTS;
            match self.participants.iter_mut().find(|o| o.id == p.id) {
                Some(o) => {
                    o.aor = p.aor.or(o.aor.take());
                    o.name = p.name.or(o.name.take());
                    if p.send_source.is_some() {
                        o.send = p.send;
                        o.recv = p.recv;
                        o.send_source = p.send_source;
                    }
                    o.calling = p.calling.or(o.calling);
                    o.associate_time = p.associate_time.or(o.associate_time.take());
                    o.disassociate_time = p.disassociate_time.or(o.disassociate_time.take());
                }
                None if !full => {
                    // A partial may introduce a participant with only its association.
                    if p.aor.is_none() && p.name.is_none() {
                        unknown.push(p.id.clone());
                    }
                    self.participants.push(p);
                }
                None => {}
            }
        }
        for s in newer.streams {
            let full = self.streams.len() >= MAX_OBJECTS;
            match self.streams.iter_mut().find(|o| o.id == s.id) {
                Some(o) => {
                    o.label = s.label.or(o.label.take());
                    o.mode = s.mode.or(o.mode.take());
                    o.session = s.session.or(o.session.take());
                }
                None if !full => self.streams.push(s),
                None => {}
            }
        }
        for s in newer.sessions {
            let full = self.sessions.len() >= MAX_OBJECTS;
            match self.sessions.iter_mut().find(|o| o.id == s.id) {
                Some(o) => {
                    o.group_ref = s.group_ref.or(o.group_ref.take());
                    o.start_time = s.start_time.or(o.start_time.take());
                    o.stop_time = s.stop_time.or(o.stop_time.take());
                    for id in s.sip_session_ids {
                        if !o.sip_session_ids.contains(&id) {
                            o.sip_session_ids.push(id);
                        }
                    }
                }
                None if !full => self.sessions.push(s),
                None => {}
            }
        }
        for g in newer.groups {
            if !self.groups.iter().any(|o| o.id == g.id) && self.groups.len() < MAX_OBJECTS {
                self.groups.push(g);
            }
        }
        for e in newer.extensions {
            if self.extensions.len() < MAX_OBJECTS {
                self.extensions.push(e);
            }
        }
        for v in newer.vendor_ids {
            if !self.vendor_ids.contains(&v) && self.vendor_ids.len() < MAX_OBJECTS {
                self.vendor_ids.push(v);
            }
        }
        self.malformed |= newer.malformed;
        unknown
    }
}

/// What the element being read is, for routing its children and text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ctx {
    Root,
    BwRecording,
    Group(usize),
    Session(usize),
    Participant(usize),
    NameId(usize),
    Send(usize),
    Recv(usize),
    Stream(usize),
    StreamAssoc(usize),
    SessionAssoc(Option<usize>),
    RecordingAssoc(Option<usize>),
    /// A known leaf (text goes to its parent on End).
    Leaf,
    /// Inside a kept-raw extension subtree.
    Extension,
}

struct Frame {
    name: String,
    ctx: Ctx,
}

/// Parses one metadata document. Never fails on content: only on size or when there is
/// no root element at all.
pub fn parse(doc: &[u8]) -> Result<Metadata, MetadataError> {
    if doc.len() > MAX_METADATA_BYTES {
        return Err(MetadataError::TooLarge);
    }
    let mut p = Parser {
        doc,
        md: Metadata {
            dialect: Dialect::Rfc7865,
            namespace: None,
            datamode: None,
            recording_id: None,
            groups: Vec::new(),
            sessions: Vec::new(),
            participants: Vec::new(),
            streams: Vec::new(),
            extensions: Vec::new(),
            vendor_ids: Vec::new(),
            malformed: false,
        },
        stack: Vec::new(),
        text: String::new(),
        ext_start: 0,
        ext_depth: 0,
        saw_root: false,
        draft_attrs: false,
    };
    p.run();
    if !p.saw_root {
        return Err(MetadataError::NotXml);
    }
    if p.md.dialect == Dialect::Rfc7865 && p.draft_attrs {
        p.md.dialect = Dialect::Draft;
    }
    Ok(p.md)
}

struct Parser<'a> {
    doc: &'a [u8],
    md: Metadata,
    stack: Vec<Frame>,
    text: String,
    ext_start: usize,
    ext_depth: usize,
    saw_root: bool,
    draft_attrs: bool,
}

fn local(e: &BytesStart<'_>) -> String {
    String::from_utf8_lossy(e.local_name().as_ref()).into_owned()
}

/// First attribute whose local name matches one of `names` (case-insensitive), unescaped.
fn attr(e: &BytesStart<'_>, names: &[&str]) -> Option<String> {
    for name in names {
        for a in e.attributes().with_checks(false).flatten() {
            if a.key
                .local_name()
                .as_ref()
                .eq_ignore_ascii_case(name.as_bytes())
            {
                let v = a
                    .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                    .map(|v| v.into_owned())
                    .unwrap_or_else(|_| String::from_utf8_lossy(&a.value).into_owned());
                return Some(v.trim().to_owned());
            }
        }
    }
    None
}

fn push_bounded<T>(v: &mut Vec<T>, item: T) -> Option<usize> {
    (v.len() < MAX_OBJECTS).then(|| {
        v.push(item);
        v.len().saturating_sub(1)
    })
}

fn non_empty(s: &str) -> Option<String> {
    let t = s.trim();
    (!t.is_empty()).then(|| t.to_owned())
}

impl Parser<'_> {
    fn run(&mut self) {
        let mut reader = Reader::from_reader(self.doc);
        loop {
            let before = usize::try_from(reader.buffer_position()).unwrap_or(usize::MAX);
            let ev = match reader.read_event() {
                Ok(ev) => ev,
                Err(_) => {
                    self.md.malformed = true;
                    return;
                }
            };
            let after = usize::try_from(reader.buffer_position()).unwrap_or(usize::MAX);
            match ev {
                Event::Start(e) => {
                    if self.stack.len() >= MAX_DEPTH {
                        self.md.malformed = true;
                        return;
                    }
                    self.open(&e, before);
                }
                Event::Empty(e) => {
                    self.open(&e, before);
                    self.close(after);
                }
                Event::End(_) => {
                    if self.stack.is_empty() {
                        self.md.malformed = true;
                        return;
                    }
                    self.close(after);
                    if self.stack.is_empty() {
                        return;
                    }
                }
                Event::Text(t) => match t.decode() {
                    Ok(s) => self.push_text(&s),
                    Err(_) => self.push_text(&String::from_utf8_lossy(&t)),
                },
                Event::CData(t) => self.push_text(&String::from_utf8_lossy(&t)),
                Event::GeneralRef(r) => {
                    let name = String::from_utf8_lossy(&r).into_owned();
                    let s = match name.as_str() {
                        "amp" => "&".to_owned(),
                        "lt" => "<".to_owned(),
                        "gt" => ">".to_owned(),
                        "quot" => "\"".to_owned(),
                        "apos" => "'".to_owned(),
                        _ => match r.resolve_char_ref() {
                            Ok(Some(c)) => c.to_string(),
                            // Undeclared/DTD entities are never expanded.
                            _ => format!("&{name};"),
                        },
                    };
                    self.push_text(&s);
                }
                Event::Eof => {
                    if !self.stack.is_empty() {
                        self.md.malformed = true;
                    }
                    return;
                }
                Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {}
            }
        }
    }

    fn push_text(&mut self, s: &str) {
        if self.text.len() >= MAX_TEXT {
            return;
        }
        let room = MAX_TEXT.saturating_sub(self.text.len());
        let mut end = s.len().min(room);
        while !s.is_char_boundary(end) {
            end = end.saturating_sub(1);
        }
        self.text.push_str(s.get(..end).unwrap_or(""));
    }

    fn parent_ctx(&self) -> Option<Ctx> {
        self.stack.last().map(|f| f.ctx)
    }

    fn open(&mut self, e: &BytesStart<'_>, before: usize) {
        self.text.clear();
        let name = local(e);
        let lname = name.to_ascii_lowercase();
        let Some(parent) = self.parent_ctx() else {
            // The root element.
            self.saw_root = true;
            if lname == "recording_metadata" {
                self.md.dialect = Dialect::BroadWorks;
            }
            self.md.namespace = self.root_namespace(e);
            self.md.recording_id = attr(e, &["id", "recording_id"]);
            self.stack.push(Frame {
                name,
                ctx: Ctx::Root,
            });
            return;
        };
        let ctx = match (parent, lname.as_str()) {
            (Ctx::Extension, _) => Ctx::Extension,
            (Ctx::Root, "datamode") => Ctx::Leaf,
            (Ctx::Root, "recording") => {
                if let Some(id) = attr(e, &["id"]) {
                    self.md.recording_id.get_or_insert(id);
                }
                Ctx::BwRecording
            }
            (Ctx::BwRecording, "requestor" | "type") => Ctx::Leaf,
            (Ctx::Root, "group") => {
                let id = self.id_attr(e, "group_id");
                match push_bounded(
                    &mut self.md.groups,
                    Group {
                        id,
                        associate_time: None,
                    },
                ) {
                    Some(i) => Ctx::Group(i),
                    None => Ctx::Extension,
                }
            }
            (Ctx::Group(_), "associate-time" | "initiator") => Ctx::Leaf,
            (Ctx::Root, "session") => {
                let id = self.id_attr(e, "session_id");
                let group_ref = attr(e, &["group"]);
                match push_bounded(
                    &mut self.md.sessions,
                    CsSession {
                        id,
                        group_ref,
                        ..CsSession::default()
                    },
                ) {
                    Some(i) => Ctx::Session(i),
                    None => Ctx::Extension,
                }
            }
            (
                Ctx::Session(_),
                "sipsessionid" | "group-ref" | "start-time" | "stop-time" | "associate-time"
                | "disassociate-time",
            ) => Ctx::Leaf,
            (Ctx::Root, "participant") => {
                let id = self.id_attr(e, "participant_id");
                match self.participant_index(&id) {
                    Some(i) => Ctx::Participant(i),
                    None => Ctx::Extension,
                }
            }
            (Ctx::Participant(i), "nameid") => {
                if let (Some(p), Some(aor)) = (self.md.participants.get_mut(i), attr(e, &["aor"])) {
                    p.aor = non_empty(&aor);
                }
                Ctx::NameId(i)
            }
            (Ctx::NameId(_), "name") => Ctx::Leaf,
            (
                Ctx::Participant(_),
                "aor" | "name" | "role" | "associate-time" | "disassociate-time",
            ) => Ctx::Leaf,
            (Ctx::Participant(i), "send") => {
                self.start_send(i, SendSource::Inline);
                Ctx::Send(i)
            }
            (Ctx::Participant(i), "recv") => Ctx::Recv(i),
            (Ctx::StreamAssoc(i), "send") => {
                self.start_send(i, SendSource::Assoc);
                Ctx::Send(i)
            }
            (Ctx::StreamAssoc(i), "recv") => Ctx::Recv(i),
            (Ctx::Send(_) | Ctx::Recv(_), "id") => Ctx::Leaf,
            (Ctx::Root, "stream") => {
                let id = self.id_attr(e, "stream_id");
                let session = attr(e, &["session_id", "session"]);
                match push_bounded(
                    &mut self.md.streams,
                    Stream {
                        id,
                        session,
                        ..Stream::default()
                    },
                ) {
                    Some(i) => Ctx::Stream(i),
                    None => Ctx::Extension,
                }
            }
            (Ctx::Stream(_), "label" | "mode" | "associate-time" | "disassociate-time") => {
                Ctx::Leaf
            }
            (Ctx::Root, "participantstreamassoc") => {
                let id = self.id_attr(e, "participant_id");
                match self.participant_index(&id) {
                    Some(i) => Ctx::StreamAssoc(i),
                    None => Ctx::Extension,
                }
            }
            (Ctx::Root, "participantsessionassoc") => {
                let id = self.id_attr(e, "participant_id");
                Ctx::SessionAssoc(self.participant_index(&id))
            }
            (Ctx::Root, "sessionrecordingassoc") => {
                let id = self.id_attr(e, "session_id");
                Ctx::RecordingAssoc(self.md.sessions.iter().position(|s| s.id == id))
            }
            (
                Ctx::SessionAssoc(_) | Ctx::RecordingAssoc(_),
                "associate-time" | "disassociate-time",
            ) => Ctx::Leaf,
            _ => {
                self.ext_start = before;
                self.ext_depth = self.stack.len();
                Ctx::Extension
            }
        };
        self.stack.push(Frame { name, ctx });
    }

    fn close(&mut self, after: usize) {
        let Some(frame) = self.stack.pop() else {
            return;
        };
        let text = std::mem::take(&mut self.text);
        let parent = self.parent_ctx();
        match frame.ctx {
            Ctx::Extension => {
                self.extension_leaf(&frame.name, &text, parent);
                if self.stack.len() == self.ext_depth {
                    let raw = self
                        .doc
                        .get(self.ext_start..after)
                        .map(|b| String::from_utf8_lossy(b).into_owned())
                        .unwrap_or_default();
                    let parent_name = self.stack.last().map(|f| f.name.clone());
                    let owner = self.owner_id();
                    if self.md.extensions.len() < MAX_OBJECTS {
                        self.md.extensions.push(Extension {
                            parent: parent_name.unwrap_or_default(),
                            owner,
                            name: frame.name,
                            raw,
                        });
                    }
                }
            }
            Ctx::Leaf => self.leaf(&frame.name.to_ascii_lowercase(), &text, parent),
            // `<send>id</send>`; BroadWorks nests `<id>` instead (handled as a leaf).
            Ctx::Send(i) => push_id(self.md.participants.get_mut(i), non_empty(&text), true),
            Ctx::Recv(i) => push_id(self.md.participants.get_mut(i), non_empty(&text), false),
            _ => {}
        }
    }

    /// Text of a known leaf element, stored into its parent object.
    fn leaf(&mut self, name: &str, text: &str, parent: Option<Ctx>) {
        let t = non_empty(text);
        let md = &mut self.md;
        match (parent, name) {
            (Some(Ctx::Root), "datamode") => {
                md.datamode = match text.trim().to_ascii_lowercase().as_str() {
                    "complete" => Some(DataMode::Complete),
                    "partial" => Some(DataMode::Partial),
                    _ => None,
                }
            }
            (Some(Ctx::Group(i)), "associate-time") => {
                if let Some(g) = md.groups.get_mut(i) {
                    g.associate_time = t;
                }
            }
            (Some(Ctx::Session(i)), _) => {
                let Some(s) = md.sessions.get_mut(i) else {
                    return;
                };
                match name {
                    "sipsessionid" => {
                        if let Some(t) = t {
                            if s.sip_session_ids.len() < MAX_OBJECTS {
                                s.sip_session_ids.push(t);
                            }
                        }
                    }
                    "group-ref" => s.group_ref = t.or(s.group_ref.take()),
                    "start-time" | "associate-time" => {
                        s.start_time = s.start_time.take().or(t);
                    }
                    _ => s.stop_time = s.stop_time.take().or(t),
                }
            }
            (Some(Ctx::RecordingAssoc(Some(i))), _) => {
                if let Some(s) = md.sessions.get_mut(i) {
                    if name == "associate-time" {
                        s.start_time = s.start_time.take().or(t);
                    } else {
                        s.stop_time = s.stop_time.take().or(t);
                    }
                }
            }
            (Some(Ctx::NameId(i)), "name") => {
                if let Some(p) = md.participants.get_mut(i) {
                    p.name = t;
                }
            }
            (Some(Ctx::Participant(i) | Ctx::SessionAssoc(Some(i))), _) => {
                let Some(p) = md.participants.get_mut(i) else {
                    return;
                };
                match name {
                    "aor" => p.aor = t.or(p.aor.take()),
                    "name" => p.name = t.or(p.name.take()),
                    "role" => {
                        let r = text.trim().to_ascii_lowercase();
                        if r.starts_with("calling") || r == "caller" {
                            p.calling = Some(true);
                        } else if r.starts_with("called") || r == "callee" {
                            p.calling = Some(false);
                        }
                    }
                    "associate-time" => p.associate_time = p.associate_time.take().or(t),
                    "disassociate-time" => p.disassociate_time = t,
                    _ => {}
                }
            }
            (Some(Ctx::Send(i)), "id") => push_id(md.participants.get_mut(i), t, true),
            (Some(Ctx::Recv(i)), "id") => push_id(md.participants.get_mut(i), t, false),
            (Some(Ctx::Stream(i)), _) => {
                if let Some(s) = md.streams.get_mut(i) {
                    match name {
                        "label" => s.label = t,
                        "mode" => s.mode = t,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }

    /// The id of the nearest enclosing object.
    fn owner_id(&self) -> Option<String> {
        self.stack.iter().rev().find_map(|f| match f.ctx {
            Ctx::Group(i) => self.md.groups.get(i).map(|g| g.id.clone()),
            Ctx::Session(i) => self.md.sessions.get(i).map(|x| x.id.clone()),
            Ctx::Participant(i) | Ctx::StreamAssoc(i) | Ctx::NameId(i) => {
                self.md.participants.get(i).map(|p| p.id.clone())
            }
            Ctx::Stream(i) => self.md.streams.get(i).map(|x| x.id.clone()),
            _ => None,
        })
    }

    fn start_send(&mut self, i: usize, source: SendSource) {
        if let Some(p) = self.md.participants.get_mut(i) {
            // A document states the full list once per source; the assoc form wins over
            // the inline one when a document has both.
            if p.send_source != Some(source) && p.send_source != Some(SendSource::Assoc) {
                p.send.clear();
                p.send_source = Some(source);
            }
        }
    }

    fn extension_leaf(&mut self, name: &str, text: &str, parent: Option<Ctx>) {
        let lname = name.to_ascii_lowercase();
        // Oracle `apkt:callingParty` inside the participant's extensiondata.
        if lname == "callingparty" {
            let idx = self.stack.iter().rev().find_map(|f| match f.ctx {
                Ctx::Participant(i) => Some(i),
                _ => None,
            });
            if let Some(p) = idx.and_then(|i| self.md.participants.get_mut(i)) {
                p.calling = match text.trim() {
                    t if t.eq_ignore_ascii_case("true") => Some(true),
                    t if t.eq_ignore_ascii_case("false") => Some(false),
                    _ => p.calling,
                };
            }
        }
        let _ = parent;
        if VENDOR_ID_NAMES.contains(&lname.as_str()) {
            if let Some(v) = non_empty(text) {
                let item = (name.to_owned(), v);
                if !self.md.vendor_ids.contains(&item) && self.md.vendor_ids.len() < MAX_OBJECTS {
                    self.md.vendor_ids.push(item);
                }
            }
        }
        // BroadWorks `<callType><termCall>…` names the direction by element.
        if lname == "origcall" || lname == "termcall" {
            let item = ("callType".to_owned(), name.to_owned());
            if !self.md.vendor_ids.contains(&item) && self.md.vendor_ids.len() < MAX_OBJECTS {
                self.md.vendor_ids.push(item);
            }
        }
    }

    /// The id attribute: the RFC name, else draft `id` (noted for the dialect).
    fn id_attr(&mut self, e: &BytesStart<'_>, rfc: &str) -> String {
        if let Some(v) = attr(e, &[rfc]) {
            return v;
        }
        match attr(e, &["id"]) {
            Some(v) => {
                self.draft_attrs = true;
                v
            }
            None => String::new(),
        }
    }

    /// Finds or creates the participant `id` (associations may precede the participant).
    fn participant_index(&mut self, id: &str) -> Option<usize> {
        if let Some(i) = self.md.participants.iter().position(|p| p.id == id) {
            return Some(i);
        }
        push_bounded(
            &mut self.md.participants,
            Participant {
                id: id.to_owned(),
                ..Participant::default()
            },
        )
    }

    fn root_namespace(&self, e: &BytesStart<'_>) -> Option<String> {
        let prefix = e.name().prefix().map(|p| p.as_ref().to_vec());
        for a in e.attributes().with_checks(false).flatten() {
            let key = a.key.as_ref();
            let matches = match &prefix {
                Some(p) => key.strip_prefix(b"xmlns:") == Some(p.as_slice()),
                None => key == b"xmlns",
            };
            if matches {
                return Some(String::from_utf8_lossy(&a.value).into_owned());
            }
        }
        None
    }
}

fn push_id(p: Option<&mut Participant>, id: Option<String>, send: bool) {
    let (Some(p), Some(id)) = (p, id) else {
        return;
    };
    let list = if send { &mut p.send } else { &mut p.recv };
    if !list.contains(&id) && list.len() < MAX_OBJECTS {
        list.push(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entity_expansion_is_inert() {
        let doc = br#"<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>
<recording xmlns="urn:ietf:params:xml:ns:recording:1"><participant participant_id="p1">
<nameID aor="sip:a@b"><name>&lol2;&amp;&#65;</name></nameID></participant></recording>"#;
        let md = parse(doc).unwrap();
        assert_eq!(md.participants[0].name.as_deref(), Some("&lol2;&A"));
        assert!(!md.malformed);
    }

    #[test]
    fn size_depth_and_garbage_guards() {
        let big = format!("<recording>{}</recording>", " ".repeat(MAX_METADATA_BYTES));
        assert_eq!(parse(big.as_bytes()), Err(MetadataError::TooLarge));
        assert_eq!(parse(b"not xml"), Err(MetadataError::NotXml));
        assert_eq!(parse(b""), Err(MetadataError::NotXml));
        let deep = format!(
            "<recording><participant participant_id='p'>{}",
            "<x>".repeat(MAX_DEPTH * 4)
        );
        let md = parse(deep.as_bytes()).unwrap();
        assert!(md.malformed);
        assert_eq!(md.participants.len(), 1);
        // Broken half-way: what came before is kept.
        let md = parse(b"<recording><participant id='a'><aor>sip:x@y</aor></participant><stream")
            .unwrap();
        assert!(md.malformed);
        assert_eq!(md.participants[0].aor.as_deref(), Some("sip:x@y"));
        let many = format!(
            "<recording>{}</recording>",
            "<participant participant_id='x'/>".repeat(10)
        ) + &(0..MAX_OBJECTS * 2)
            .map(|i| format!("<stream stream_id='{i}'/>"))
            .collect::<String>();
        let md = parse(many.as_bytes()).unwrap();
        assert_eq!(md.participants.len(), 1, "same id, one participant");
        let many: String = (0..MAX_OBJECTS * 2)
            .map(|i| format!("<stream stream_id='{i}'/>"))
            .collect();
        let md = parse(format!("<recording>{many}</recording>").as_bytes()).unwrap();
        assert_eq!(md.streams.len(), MAX_OBJECTS);
        let long = format!(
            "<recording><participant participant_id='p'><aor>{}</aor></participant></recording>",
            "é".repeat(MAX_TEXT)
        );
        let md = parse(long.as_bytes()).unwrap();
        assert!(md.participants[0].aor.as_ref().unwrap().len() <= MAX_TEXT);
    }

    #[test]
    fn truncations_never_panic() {
        let doc = br#"<recording xmlns='urn:ietf:params:xml:ns:recording:1'><datamode>partial</datamode><participant participant_id="p"><nameID aor="sip:a@b"><name>A</name></nameID></participant><participantstreamassoc participant_id="p"><send>s1</send><recv>s2</recv></participantstreamassoc><stream stream_id="s1"><label>1</label></stream><extensiondata><v:x xmlns:v="urn:v"><v:ucid>U</v:ucid></v:x></extensiondata></recording>"#;
        let full = parse(doc).unwrap();
        assert_eq!(full.vendor_ids, [("ucid".to_owned(), "U".to_owned())]);
        assert!(full.is_partial());
        for n in 0..doc.len() {
            let _ = parse(&doc[..n]);
        }
    }

    #[test]
    fn partial_patches_and_complete_replaces() {
        let mut state = parse(b"<recording><datamode>complete</datamode><participant participant_id='a'><nameID aor='sip:a@x'/></participant><stream stream_id='s1'><label>1</label></stream></recording>").unwrap();
        let partial = parse(b"<recording><datamode>partial</datamode><participant participant_id='b'><nameID aor='sip:b@x'/></participant><participantstreamassoc participant_id='a'><send>s1</send></participantstreamassoc><participantstreamassoc participant_id='ghost'><send>s1</send></participantstreamassoc><participantsessionassoc participant_id='a'><disassociate-time>2024-01-01T00:00:00</disassociate-time></participantsessionassoc></recording>").unwrap();
        let unknown = state.apply(partial);
        assert_eq!(unknown, ["ghost"]);
        assert_eq!(state.participants.len(), 3);
        let a = state.participant("a").unwrap();
        assert_eq!(a.aor.as_deref(), Some("sip:a@x"));
        assert_eq!(a.send, ["s1"]);
        assert_eq!(a.disassociate_time.as_deref(), Some("2024-01-01T00:00:00"));
        let complete = parse(b"<recording><participant participant_id='z'/></recording>").unwrap();
        assert!(state.apply(complete).is_empty());
        assert_eq!(state.participants.len(), 1);
    }
}
