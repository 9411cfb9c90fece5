//! vcontap-media: sans-IO media handling for passive SIP/RTP capture.
//!
//! Owns everything between "these bytes arrived at this time" and "these are the numbers
//! and PCM samples of the call": RTP/RTCP parsing ([`parse_rtp`], [`parse_rtcp`]), RFC 3550
//! reception statistics ([`StreamStats`]), RFC 4733 DTMF ([`DtmfDetector`]), audio
//! decoding ([`new_decoder`]) and the two-party stereo timeline ([`StereoMixer`]).
//!
//! No I/O, no clocks, no threads: callers pass arrival times as i64 nanoseconds since the
//! Unix epoch. All parsers take hostile input without panicking and every buffer is
//! bounded by a named constant.

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

pub mod codec;
pub mod dtmf;
pub mod mixer;
pub mod rtcp;
pub mod rtp;
pub mod stats;

pub use codec::{
    alaw_to_linear, codec_kind, decoder_sample_rate, linear_to_alaw, linear_to_ulaw, new_decoder,
    rtp_clock_rate, ulaw_to_linear, AudioDecoder, CodecError, CodecKind, G722Decoder, G722Encoder,
    OpusDecoder, G722_SAMPLE_RATE, OPUS_SAMPLE_RATE,
};
#[cfg(feature = "opus")]
pub use codec::{LibopusDecoder, OpusEncoder};
pub use dtmf::{event_char, parse_dtmf_event, DtmfDetector, DtmfEdge, DtmfEvent};
pub use mixer::{StereoMixer, MAX_AHEAD_MS, MAX_JITTER_WINDOW_MS, MAX_SILENCE_GAP_MS, RESYNC_MS};
pub use rtcp::{
    parse_rtcp, ReceiverReport, ReportBlock, RtcpError, RtcpPacket, SenderReport,
    MAX_REPORT_BLOCKS, MAX_RTCP_PACKETS,
};
pub use rtp::{
    is_muxed_rtcp, is_rtp_payload_type, looks_like_rtcp, looks_like_rtp, looks_like_stun,
    parse_rtp, plausible_rtp, RtpError, RtpPacket, RTP_HEADER_LEN, STUN_MAGIC_COOKIE,
};
pub use stats::{SeqOutcome, StreamStats, MAX_DROPOUT, MAX_MISORDER};
