//! The vCon data model as vcontap writes it (draft-ietf-vcon-vcon-core-03, syntax `0.4.0`,
//! plus the -04 tightenings: every dialog names its `type` and `start`).
//!
//! This crate owns the serde types ([`Vcon`], [`Party`], [`Dialog`], [`Attachment`],
//! [`Analysis`], [`PartyHistory`]), the UUIDv8 layout ([`uuid_v8`]), RFC 3339 date formatting
//! ([`format_time`]), `content_hash` ([`content_hash`]) and the structural checks that neither
//! the WG schema nor the Python library performs ([`check`]). It knows nothing about SIP or
//! packets; the engine fills it in. Kept separate so sinks and outside consumers can depend on
//! the model alone.
//!
//! Shapes follow what real receivers accept (see `docs/vcon.md` §10 in the shared folder):
//! flat integer `parties` on dialogs, `tel` without the `tel:` prefix, `mediatype` always set,
//! no `group`/`redacted` placeholders, and `recording` dialogs only with `url` + `content_hash`.

// Input is hostile (docs/CONTRIBUTING.md): no panicking shortcuts outside tests.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

mod check;
mod json;
mod time;
mod uuid;

pub use check::{check, CheckError};
pub use json::Json;
pub use time::{civil_from_days, format_time, write_time};
pub use uuid::{host_hash, uuid_v8, CallUuids, RECENT_UUIDS};

use serde::{Deserialize, Serialize};

/// The syntax version written in every vCon.
pub const VCON_VERSION: &str = "0.4.0";

/// Extension token of draft-howe-vcon-sip-signaling (`sip_call_id`, tags, `sip_cseq`).
pub const EXT_SIP_SIGNALING: &str = "sip-signaling";
/// vcontap's own compatible extension: the top-level `vcontap` object with the live call state.
pub const EXT_VCONTAP: &str = "vcontap";

/// A content hash over exact bytes: `sha512-<base64url without padding>`.
pub fn content_hash(bytes: &[u8]) -> String {
    use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
    use sha2::{Digest, Sha512};
    format!("sha512-{}", URL_SAFE_NO_PAD.encode(Sha512::digest(bytes)))
}

/// Formats a finished SHA-512 digest as a vCon content hash.
pub fn content_hash_from_digest(digest: &[u8]) -> String {
    use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
    format!("sha512-{}", URL_SAFE_NO_PAD.encode(digest))
}

/// The unsigned form of a vCon.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Vcon {
    /// Always [`VCON_VERSION`].
    pub vcon: String,
    /// UUIDv8 (see [`uuid_v8`]); stable for the whole call.
    pub uuid: String,
    /// When this vCon was created (first INVITE seen); never changes.
    pub created_at: String,
    /// Last change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    /// Free-text subject (SIP `Subject`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Extensions used.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub extensions: Vec<String>,
    /// Participants.
    #[serde(default)]
    pub parties: Vec<Party>,
    /// Dialog objects, append-only.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub dialog: Vec<Dialog>,
    /// Analysis objects, append-only.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub analysis: Vec<Analysis>,
    /// Attachments, append-only.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub attachments: Vec<Attachment>,
    /// vcontap's live-state extension object (listed as [`EXT_VCONTAP`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vcontap: Option<Json>,
}

/// A participant.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Party {
    /// Global E.164 number, `+` and digits, no `tel:` prefix.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tel: Option<String>,
    /// SIP URI with scheme.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sip: Option<String>,
    /// STIR PASSporT (compact JWS) from the `Identity` header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stir: Option<String>,
    /// Display name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// How `name` was validated; `"none"` for SIP display names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validation: Option<String>,
    /// `caller` or `callee` (free text, as the conserver checklist suggests).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// sip-signaling: the raw display name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sip_display_name: Option<String>,
    /// sip-signaling: User-Agent / Server of this party.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sip_user_agent: Option<String>,
}

/// One entry of a dialog's `party_history`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PartyHistory {
    /// Index into the top-level parties.
    pub party: u32,
    /// When it happened.
    pub time: String,
    /// `join`, `drop`, `hold`, `unhold`, `mute`, `unmute`, `keydown`, `keyup`.
    pub event: PartyEvent,
    /// DTMF digit for key events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub button: Option<String>,
}

/// Declares a string-valued vCon enumeration: known values as variants, anything else kept
/// verbatim in `Other` (documents from other producers must round-trip).
macro_rules! string_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident => $s:literal),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(from = "String", into = "String")]
        pub enum $name {
            $($(#[$vm])* $v,)*
            /// A value this crate does not name.
            Other(String),
        }
        impl Default for $name {
            fn default() -> Self {
                $name::Other(String::new())
            }
        }
        impl $name {
            /// The wire string.
            pub fn as_str(&self) -> &str {
                match self { $($name::$v => $s,)* $name::Other(s) => s }
            }
        }
        impl From<String> for $name {
            fn from(s: String) -> Self {
                match s.as_str() { $($s => $name::$v,)* _ => $name::Other(s) }
            }
        }
        impl From<$name> for String {
            fn from(v: $name) -> String {
                match v { $name::Other(s) => s, other => other.as_str().to_string() }
            }
        }
    };
}

string_enum!(
    /// A dialog's `type`.
    DialogType {
        /// Recorded media (`url`/`body` + `content_hash`).
        Recording => "recording",
        /// A call attempt that never connected (`disposition`).
        Incomplete => "incomplete",
        /// A transfer (`transferor`, `transferee`, `transfer_target`).
        Transfer => "transfer",
        /// Text (chat, SMS).
        Text => "text",
    }
);

string_enum!(
    /// A `party_history` event.
    PartyEvent {
        /// The party joined.
        Join => "join",
        /// The party left.
        Drop => "drop",
        /// Put on hold.
        Hold => "hold",
        /// Taken off hold.
        Unhold => "unhold",
        /// Muted.
        Mute => "mute",
        /// Unmuted.
        Unmute => "unmute",
        /// A DTMF key went down (`button`).
        Keydown => "keydown",
        /// A DTMF key went up (`button`).
        Keyup => "keyup",
    }
);

/// A dialog object.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Dialog {
    /// `recording`, `incomplete`, `transfer`, `text`.
    #[serde(rename = "type")]
    pub kind: DialogType,
    /// Start of the segment.
    pub start: String,
    /// Seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration: Option<f64>,
    /// Flat party indices; for a stereo recording, channel order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parties: Option<Vec<u32>>,
    /// Index of the originator when it is not `parties[0]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub originator: Option<u32>,
    /// Media type of the content.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mediatype: Option<String>,
    /// File name of the content.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    /// External content URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Hash of the external content.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_hash: Option<String>,
    /// For `incomplete` dialogs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disposition: Option<String>,
    /// Events during this dialog.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub party_history: Vec<PartyHistory>,
    /// Platform (`sip`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub application: Option<String>,
    /// RFC 7989 Session-ID pair (an object since vCon 0.4.0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<SessionId>,
    /// Transfer roles (type `transfer` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transferee: Option<u32>,
    /// Transfer roles (type `transfer` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transferor: Option<u32>,
    /// Transfer roles (type `transfer` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transfer_target: Option<u32>,
    /// Transfer: the transferee<->transferor dialogs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original: Option<Vec<u32>>,
    /// sip-signaling: the full Call-ID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sip_call_id: Option<String>,
    /// sip-signaling: From tag.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sip_from_tag: Option<String>,
    /// sip-signaling: To tag (absent if never established).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sip_to_tag: Option<String>,
    /// sip-signaling: CSeq number of the INVITE.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sip_cseq: Option<u32>,
    /// vcontap: codec(s) carried in this recording segment (e.g. `PCMU/8000`).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub codecs: Vec<String>,
}

/// An RFC 7989 Session-ID pair: 32 lowercase hex characters each; the nil UUID
/// (`00000000000000000000000000000000`) for a side that has none.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SessionId {
    /// The caller's (offerer's) UUID.
    pub local: String,
    /// The callee's UUID.
    pub remote: String,
}

/// An attachment.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Attachment {
    /// e.g. `sip-message-trace`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
    /// When it was exchanged.
    pub start: String,
    /// Party that distributed it.
    pub party: u32,
    /// Related dialog.
    pub dialog: u32,
    /// Media type of the body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mediatype: Option<String>,
    /// `json`, `none`, `base64url`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
    /// Inline body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<Json>,
}

/// An analysis entry.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Analysis {
    /// `report`, `transcript`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// Dialog(s) it is derived from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dialog: Option<Vec<u32>>,
    /// Producer.
    pub vendor: String,
    /// Product name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub product: Option<String>,
    /// Token naming the body format.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// Media type of the body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mediatype: Option<String>,
    /// `json`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
    /// Inline body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<Json>,
}

impl Vcon {
    /// A new, empty vCon with the mandatory members set.
    pub fn new(uuid: String, created_at: String) -> Self {
        Vcon {
            vcon: VCON_VERSION.to_string(),
            uuid,
            updated_at: Some(created_at.clone()),
            created_at,
            ..Default::default()
        }
    }

    /// Adds an extension token once.
    pub fn add_extension(&mut self, name: &str) {
        if !self.extensions.iter().any(|e| e == name) {
            self.extensions.push(name.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_strings_round_trip_known_and_unknown_values() {
        let d: Vec<DialogType> =
            serde_json::from_str(r#"["recording","transfer","video"]"#).unwrap();
        assert_eq!(d[0], DialogType::Recording);
        assert_eq!(d[1], DialogType::Transfer);
        assert_eq!(d[2], DialogType::Other("video".into()));
        assert_eq!(
            serde_json::to_string(&d).unwrap(),
            r#"["recording","transfer","video"]"#
        );
        let e: PartyEvent = serde_json::from_str(r#""keydown""#).unwrap();
        assert_eq!(e, PartyEvent::Keydown);
        assert_eq!(e.as_str(), "keydown");
    }
}
