//! Sans-IO SIPREC recording server (SRS, RFC 7866) core: vcontap answers recording
//! sessions that SBCs and PBXs (the SRCs) fork to it, and turns each into session actions
//! for the engine's session API.
//!
//! # Shape
//!
//! [`uas::Uas`] is a state machine in the quinn/str0m style: SIP datagrams, stream bytes,
//! timeouts and the shell's media bindings in; SIP messages to send, session actions
//! ([`uas::Event`]: media request, opened, streams changed, metadata changed, paused,
//! resumed, ended) and the next deadline out. It never reads a clock, opens a socket or
//! draws random numbers: ports, SRTP keys and the tag seed are inputs. The shell (tokio,
//! `src/siprec.rs`) owns the SIP and RTP sockets, binds an even RTP port per accepted
//! stream when asked ([`uas::Event::MediaRequest`]) *before* the 200 OK is built, decrypts
//! SRTP with [`answer::SrtpOffer::remote_key`], and maps the actions onto
//! `Engine::open_session` / `session_media` / `update_participants` / `pause_session` /
//! `resume_session` / `end_session`, plus `attach_session` and `add_session_stream` for
//! what [`content`] derives (attachments, streams a re-INVITE added, the recording policy's
//! verdict).
//!
//! Modules: [`body`] (which part is SDP, which is metadata), [`metadata`] (rs-metadata in
//! every dialect), [`mapping`] (which participants speak in which stream), [`answer`]
//! (what to accept and the SDP answer), [`uas`] (transactions, dialogs, timers in a
//! min-heap), [`session`] (the actions as engine session calls: parties, sides, streams,
//! finish reasons), [`content`] (attachments, correlation ids, streams added later),
//! [`policy`] (whether a session is recorded: all/marked, do-not-record list). Responses are built with `vcontap_sip::ResponseBuilder`.
//! `tests/engine.rs` drives the real engine with the UAS's actions to a validated vCon;
//! `benches/siprec.rs` measures metadata parsing and whole dialogs.
//!
//! # Why hand-written
//!
//! `rsipstack` (transactions, dialogs, transports) was the candidate SIP stack. It owns its
//! sockets and tasks (not sans-IO, so not testable in virtual time like the engine), has
//! very high release churn, and would bring a second SIP parser next to the lenient one
//! the capture path already fuzzes; the SIPREC quirks (bare-LF bodies, `CSeq: n INVITE`
//! on BYE, ACKs with foreign CSeqs) need that leniency. A recorder is a small UAS: it
//! never sends INVITEs, never forks, answers at once, and sends only BYE itself; the
//! transaction rules it needs (RFC 3261 §17.2, §13.3.1.4) fit in `uas.rs`.
//!
//! # Interop checklist (../shared/docs/siprec.md §6): where each item lives
//!
//! | # | Item | Here | Tests | Waits for the shell |
//! |---|---|---|---|---|
//! | 1 | UDP (large), TCP, TLS | [`uas::Uas::handle_datagram`], [`uas::Uas::handle_stream`] (framing, bounded) | `tcp_framing_split_and_non_sip_closed` | done in `src/siprec.rs` (UDP 64 KB reads, TCP) and `src/siprec/tls.rs` (rustls); `tests/siprec_ops.rs::sip_over_tls_records_a_session` |
//! | 2 | SIPREC detection by any sign | `uas::is_siprec` → [`uas::Opened::siprec`] | `every_vendor_dialog_is_answered` | - |
//! | 3 | `Require: siprec, 100rel, timer`; 420 otherwise | [`uas::SUPPORTED_TAGS`] | `happy_path_answer_events_and_bye`, `error_codes_per_checklist` | - |
//! | 4 | robust multipart, bytes never rewritten | `vcontap_sip::multipart`, [`body::split`] | `body::tests::*`, `vendor_tests::*` (CRLF + bare LF) | - |
//! | 5 | both metadata types, absent/late/partial | [`body::METADATA_TYPES`], [`uas::Event::MetadataChanged`] | `metadata_only_update_and_partial_merge` | - |
//! | 6 | RFC/draft/BroadWorks forms, raw extensions | [`metadata::parse`] | `vendor_tests::*`, `metadata::tests::*` | - |
//! | 7 | never reject for metadata | `handle_initial_invite` ignores metadata errors | `broadworks_mangled_body_is_survivable` | - |
//! | 8 | mapping fallback chain, mixed streams | [`mapping::map_streams`] | `vendor_tests::*` (every source) | - |
//! | 9 | SDP answer rules | [`answer::render`] | `answer::tests::*`, `every_vendor_dialog_is_answered` | - |
//! | 10 | SDES-SRTP answer, offerer's key, re-key, 488 | [`answer::plan`], [`answer::SrtpOffer`] | `plans_each_line_and_renders_a_conservative_answer`, `no_srtp_policy_refuses_savp_and_bad_keys_are_skipped`, `srtp_offer_answered_with_our_key_and_rekeyed_by_reinvite` | done: `crates/srtp` (hand-written RFC 3711/6188/7714 unprotect, vectors + libsrtp packets) applied per stream in `src/siprec/srtp.rs`, re-keyed on `StreamsChanged`; `tests/siprec_srtp.rs` (libsrtp-protected session, re-key by re-INVITE) |
//! | 11 | media bound before answering; even ports | [`uas::Event::MediaRequest`] → [`uas::Uas::media_ready`] | `ports_exhausted_is_503_and_no_session`, `shell_never_binding_media_gives_503_after_64_t1` | done in `src/siprec.rs` (even-port pool bound before the 200, RTP before ACK and from any port kept; `tests/siprec.rs`) |
//! | 12 | re-INVITE/UPDATE: full answer, same ports, pause/resume, refresh no-op; added streams recorded | `handle_offer_in_dialog`; [`content::SessionContent::added_streams`] → `Engine::add_session_stream` | `reinvite_pause_resume_keeps_ports_labels_and_version`, `reinvite_with_new_label_binds_only_the_new_stream`, `tests/siprec_policy.rs` | SIPp end to end: `tests/siprec_ops.rs` (pause/resume re-INVITE, metadata-only UPDATE), `tests/siprec_policy.rs` (stream added by re-INVITE); long-silence tolerance (engine) |
//! | 13 | partial with unknown ids: log | [`metadata::Metadata::apply`] → `unknown_ids` | `partial_patches_and_complete_replaces` | logging; `rs-metadata-request` not sent |
//! | 14 | OPTIONS/503 draining, CANCEL→487, BYE | `uas.rs`; SRS-initiated BYE: [`uas::Uas::terminate`] | `options_and_draining`, `cancel_before_answer_gives_487_and_releases`, `bye_ends_and_unknown_dialogs_get_481`, `policy_decline_and_local_terminate` | end to end in `tests/siprec_ops.rs` (OPTIONS via SIPp under `run --config`, CANCEL → 487 and no vCon); SRS-initiated RS not done |
//! | 15 | 488/415/403/503/491/500/481; recording policy | `uas.rs`; policy codes: [`uas::Uas::decline`]; recording rules (all/marked, do-not-record, answered but not recorded): [`policy`] | `error_codes_per_checklist`, re-INVITE tests, `policy_decline_and_local_terminate`, `policy::tests::*`, `content::tests::*`, `tests/siprec_policy.rs` | ACL (`--allow` / `[siprec] allow`), max sessions, `--record-policy`/`--do-not-record` in `src/siprec.rs` |
//! | 16 | correlation ids | [`metadata::Metadata::vendor_ids`], sessions' `sip_session_ids`, groups → `siprec-ids` attachment ([`content`]) | `vendor_tests::*`, `content::tests::open_attaches_invite_metadata_and_ids`, `tests/siprec_policy.rs` | - |
//! | 17 | raw INVITE/metadata kept | [`uas::Opened::invite`], `metadata_raw`, `MetadataChanged::raw` → `sip-invite` / `siprec-metadata` attachments ([`content`]) | `happy_path_answer_events_and_bye`, `content::tests::*`, `tests/siprec_policy.rs` | - |
//! | - | vCon parties (tel only for E.164), sides, streams | [`session`] | `session::tests::*`, `tests/engine.rs` | - |
//! | 18 | every shared file, LF/CRLF, SIPp loop | `vendor_tests.rs`, `uas_tests.rs` | all | `tests/siprec.rs` + `tests/siprec/*.xml` (two streams over UDP and TCP, SIGTERM BYE); `tests/siprec_ops.rs::sipp_replays_vendor_offers_end_to_end` (Oracle/Acme, Ribbon/Sonus, OpenSIPS, Cisco CUBE) |
//!
//! Not done in the core: SRS-initiated recording sessions and delayed-offer INVITEs (answered
//! `488`), `rs-metadata-request`, MKI and session parameters on `a=crypto` lines (such
//! lines are skipped; a stream with no other line is refused).

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

pub mod answer;
pub mod body;
pub mod content;
pub mod mapping;
pub mod metadata;
pub mod policy;
pub mod session;
pub mod uas;

#[cfg(test)]
mod testdata;
#[cfg(test)]
mod uas_tests;
#[cfg(test)]
mod vendor_tests;
