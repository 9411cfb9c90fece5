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
