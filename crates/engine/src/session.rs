//! The session API: calls that a non-sniffed source opens and drives itself. A SIPREC
//! recording server receives a call's participants (metadata) and its labelled RTP streams
//! on its own sockets; the recording client is not a party and there can be two or more
//! streams. The source opens a session with its participants and streams, feeds each
//! stream's packets, updates participants, pauses/resumes, and ends it with a reason. The
//! engine answers with the same events, segments and vCon shape as for a sniffed call
//! (minus the SIP dialog fields and message trace, which belong to sniffed dialogs).
//!
//! Sessions live in the same call table as sniffed calls (their `key` is indexed like a
//! Call-ID, so it must be unique among open calls) and obey the same limits and timeouts.
//!
//! Beyond media, a source hands in what the vCon should keep about the session:
//! - **attachments** ([`Attachment`], at open in [`SessionSpec::attachments`] and later with
//!   [`Engine::attach_session`]): SIPREC keeps the INVITE, every metadata version and its
//!   correlation ids. An attachment's `dialog` must name a dialog, and a session's first
//!   `recording` dialog exists only once its first segment is stored, so attachments wait
//!   in the `vcontap.attachments` member (same shape, no `dialog`) until a dialog exists,
//!   then move to the top-level `attachments` for good, pointing at the first dialog. A
//!   session that never records keeps them in `vcontap.attachments` (as the sniffed path
//!   keeps its SIP trace in `vcontap` when there is no dialog). At most
//!   [`MAX_SESSION_ATTACHMENTS`] and [`MAX_SESSION_ATTACHMENT_BYTES`] body bytes per
//!   session; the rest are counted in `vcontap.attachments_dropped`, never an error.
//! - **streams added later** ([`Engine::add_session_stream`], e.g. a SIPREC re-INVITE with a
//!   new label): the new stream gets the next index and records on its side's channel like
//!   the declared ones: the stereo recording has one channel per side, a side's channel
//!   follows the stream carrying audio (a silent stream yields to the other after 500 ms,
//!   as for media moved by a sniffed re-INVITE), so no segment is cut and no channel is
//!   added; `vcontap.streams_added` lists it.
//! - **not recorded** ([`SessionSpec::not_recorded`]): a recording policy decided not to
//!   record; packets are dropped unread and the vCon says why in `vcontap.recording`.

use vcontap_vcon::Party;
use vcontap_wire::{Datagram, Timestamp};

use crate::call::{Call, FinishReason};
use crate::{CallHandle, Engine, MediaDir};

/// Which recording channel (and which side of the conversation) a participant or stream
/// belongs to: caller left, callee right.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The calling side (left channel).
    Caller,
    /// The called side (right channel).
    Callee,
}

impl Side {
    /// 0 for the caller, 1 for the callee.
    pub fn index(self) -> u8 {
        match self {
            Side::Caller => 0,
            Side::Callee => 1,
        }
    }

    /// The other side.
    pub fn other(self) -> Side {
        match self {
            Side::Caller => Side::Callee,
            Side::Callee => Side::Caller,
        }
    }
}

/// A person in a session, and the side they speak on.
#[derive(Debug, Clone)]
pub struct Participant {
    /// The vCon party (tel/sip/name/role…).
    pub party: Party,
    /// The side (channel) their audio is recorded on.
    pub side: Side,
}

/// One payload format a stream may carry (from the SDP the source negotiated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadFormat {
    /// RTP payload type.
    pub pt: u8,
    /// Encoding name (`PCMU`, `opus`, `telephone-event`…).
    pub encoding: String,
    /// Clock rate.
    pub clock_rate: u32,
    /// Audio channels.
    pub channels: u8,
}

/// One declared media stream of a session.
#[derive(Debug, Clone)]
pub struct StreamSpec {
    /// The source's label (SIPREC `a=label`), for its own bookkeeping and logs.
    pub label: String,
    /// The side whose audio it carries.
    pub side: Side,
    /// Its payload formats.
    pub formats: Vec<PayloadFormat>,
}

/// Most attachments one session keeps (SIPREC: the INVITE, the ids and a few dozen
/// metadata versions); later ones are counted, not kept.
pub const MAX_SESSION_ATTACHMENTS: usize = 64;
/// Most attachment body bytes one session keeps (real SIPREC INVITEs and metadata are a few
/// KB each; the cap bounds a re-INVITE flood's memory per call).
pub const MAX_SESSION_ATTACHMENT_BYTES: usize = 1024 * 1024;
/// Most streams one session declares over its life (at open and added later).
pub const MAX_SESSION_STREAMS: usize = 32;

/// The body of an [`Attachment`], with the vCon `encoding` it is written with.
#[derive(Debug, Clone, PartialEq)]
pub enum AttachmentBody {
    /// Text kept as is (`encoding: "none"`), e.g. a SIP message or an XML document.
    Text(String),
    /// Bytes already in unpadded base64url (`encoding: "base64url"`).
    Base64Url(String),
    /// A JSON value (`encoding: "json"`).
    Json(serde_json::Value),
}

impl AttachmentBody {
    /// The vCon `encoding` value.
    pub fn encoding(&self) -> &'static str {
        match self {
            AttachmentBody::Text(_) => "none",
            AttachmentBody::Base64Url(_) => "base64url",
            AttachmentBody::Json(_) => "json",
        }
    }

    /// Bytes it costs against [`MAX_SESSION_ATTACHMENT_BYTES`] (JSON: its compact text).
    pub fn len(&self) -> usize {
        match self {
            AttachmentBody::Text(t) | AttachmentBody::Base64Url(t) => t.len(),
            AttachmentBody::Json(v) => serde_json::to_string(v).map_or(0, |t| t.len()),
        }
    }

    /// True for an empty text body.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A vCon attachment of a session (see the module documentation for where it appears).
#[derive(Debug, Clone, PartialEq)]
pub struct Attachment {
    /// vCon `purpose` (e.g. `sip-invite`).
    pub purpose: String,
    /// When it was exchanged (its `start`).
    pub at: Timestamp,
    /// vCon `mediatype`.
    pub mediatype: String,
    /// Body and encoding.
    pub body: AttachmentBody,
    /// The vCon extension that defines `purpose`, listed in the vCon's `extensions`
    /// (`sip-signaling` for `sip-invite`); `None` for free-text purposes.
    pub extension: Option<&'static str>,
}

/// Everything needed to open a session.
#[derive(Debug, Clone)]
pub struct SessionSpec {
    /// A key unique among open calls (SIPREC: the recording session's Call-ID); with the
    /// host and `at` it determines the vCon uuid, so a re-opened identical session gets the
    /// same uuid.
    pub key: String,
    /// The participants, in party order.
    pub participants: Vec<Participant>,
    /// The streams; packets are fed per index into this list.
    pub streams: Vec<StreamSpec>,
    /// vCon `subject`.
    pub subject: Option<String>,
    /// When the session started (capture/receive time).
    pub at: Timestamp,
    /// Attachments known at open (more with [`Engine::attach_session`]).
    pub attachments: Vec<Attachment>,
    /// `Some(reason)`: the session is not recorded (a recording policy said so): packets are
    /// dropped unread and the vCon carries `vcontap.recording: {recorded: false, reason}`.
    pub not_recorded: Option<String>,
}

/// A handle to an open session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionId {
    slot: u32,
    gen: u32,
}

/// Why a session call was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// The call table is full of calls that cannot be evicted.
    #[error("the call table is full")]
    TableFull,
    /// Another open call already uses this key.
    #[error("a call with this key is already open")]
    DuplicateKey,
    /// The session ended (or never existed).
    #[error("no such session")]
    UnknownSession,
    /// The stream index is not one the session declared.
    #[error("no such stream in this session")]
    UnknownStream,
    /// A session needs at least one participant.
    #[error("a session needs at least one participant")]
    NoParticipants,
    /// The session already declares [`MAX_SESSION_STREAMS`] streams.
    #[error("the session has too many streams")]
    TooManyStreams,
}

impl Engine {
    /// Opens a session call; emits `created`. Drain [`Engine::poll_output`] afterwards.
    pub fn open_session(&mut self, spec: SessionSpec) -> Result<SessionId, SessionError> {
        if spec.participants.is_empty() {
            return Err(SessionError::NoParticipants);
        }
        if self.by_call_id.contains_key(spec.key.as_str()) {
            return Err(SessionError::DuplicateKey);
        }
        if spec.at > self.now {
            self.now = spec.at;
        }
        let cfg = self.cfg.clone();
        let h = self
            .alloc_call(
                &spec.key,
                spec.at,
                |uuid, seg_base| Call::new_session(uuid, &spec, &cfg, seg_base),
                "",
            )
            .ok_or(SessionError::TableFull)?;
        self.stats.sessions += 1;
        self.collect(h);
        Ok(SessionId {
            slot: h.0,
            gen: self.gen(h),
        })
    }

    fn session(&self, id: SessionId) -> Result<CallHandle, SessionError> {
        let h = CallHandle(id.slot);
        if self.gen(h) != id.gen || self.call_ref(h).is_none() {
            return Err(SessionError::UnknownSession);
        }
        Ok(h)
    }

    /// Feeds one packet (RTP or RTCP, told apart by payload type as RFC 5761 does) of
    /// declared stream `stream`.
    pub fn session_media(
        &mut self,
        id: SessionId,
        stream: usize,
        d: &Datagram<'_>,
    ) -> Result<(), SessionError> {
        let h = self.session(id)?;
        if d.ts > self.now {
            self.now = d.ts;
        }
        self.stats.datagrams += 1;
        let call = self.call_ref(h).ok_or(SessionError::UnknownSession)?;
        let sender = call
            .session_stream_side(stream)
            .ok_or(SessionError::UnknownStream)?;
        if call.is_not_recorded() {
            self.stats.session_packets_not_recorded += 1;
            return Ok(());
        }
        if call.is_paused() {
            self.stats.session_packets_paused += 1;
            return Ok(());
        }
        let rtcp = vcontap_media::looks_like_rtcp(d.payload);
        self.handle_media(
            h,
            MediaDir {
                sender,
                rtcp,
                video: false,
            },
            d,
        );
        Ok(())
    }

    /// Replaces the participant list (new people are appended as parties; a side whose
    /// speaker changed records `drop`/`join`); emits `updated` when something changed.
    pub fn update_participants(
        &mut self,
        id: SessionId,
        participants: &[Participant],
        at: Timestamp,
    ) -> Result<(), SessionError> {
        let h = self.session(id)?;
        if let Some(c) = self.call_mut(h) {
            c.session_participants(participants, at);
        }
        self.collect(h);
        Ok(())
    }

    /// Adds an attachment to the session's vCon; emits `updated`. Over the per-session caps
    /// ([`MAX_SESSION_ATTACHMENTS`], [`MAX_SESSION_ATTACHMENT_BYTES`]) it is counted in
    /// `vcontap.attachments_dropped` and the engine's `session_attachments_dropped`, not
    /// refused.
    pub fn attach_session(
        &mut self,
        id: SessionId,
        attachment: Attachment,
    ) -> Result<(), SessionError> {
        let h = self.session(id)?;
        if attachment.at > self.now {
            self.now = attachment.at;
        }
        let kept = match self.call_mut(h) {
            Some(c) => c.session_attach(attachment),
            None => return Err(SessionError::UnknownSession),
        };
        if !kept {
            self.stats.session_attachments_dropped += 1;
        }
        self.collect(h);
        Ok(())
    }

    /// Declares one more stream (a re-INVITE added a label); returns its index for
    /// [`Engine::session_media`], which is always the number of streams declared before
    /// it. Its formats join the session's payload types (a payload type already declared
    /// keeps its first meaning). Emits `updated`.
    pub fn add_session_stream(
        &mut self,
        id: SessionId,
        stream: StreamSpec,
        at: Timestamp,
    ) -> Result<usize, SessionError> {
        let h = self.session(id)?;
        if at > self.now {
            self.now = at;
        }
        let r = match self.call_mut(h) {
            Some(c) => c
                .session_add_stream(&stream, at)
                .ok_or(SessionError::TooManyStreams),
            None => Err(SessionError::UnknownSession),
        };
        self.collect(h);
        r
    }

    /// Pauses the recording (segment cut, packets ignored until resumed); emits `updated`.
    pub fn pause_session(&mut self, id: SessionId, at: Timestamp) -> Result<(), SessionError> {
        let h = self.session(id)?;
        if let Some(c) = self.call_mut(h) {
            c.session_pause(at);
        }
        self.collect(h);
        Ok(())
    }

    /// Resumes a paused recording; emits `updated`.
    pub fn resume_session(&mut self, id: SessionId, at: Timestamp) -> Result<(), SessionError> {
        let h = self.session(id)?;
        if let Some(c) = self.call_mut(h) {
            c.session_resume(at);
        }
        self.collect(h);
        Ok(())
    }

    /// Ends a session with `reason`; `finished` follows once its segments are stored.
    pub fn end_session(
        &mut self,
        id: SessionId,
        reason: FinishReason,
        at: Timestamp,
    ) -> Result<(), SessionError> {
        let h = self.session(id)?;
        if at > self.now {
            self.now = at;
        }
        if let Some(c) = self.call_mut(h) {
            c.session_end(reason, at);
        }
        self.collect(h);
        Ok(())
    }
}
