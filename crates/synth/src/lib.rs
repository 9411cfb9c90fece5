//! vcontap's own traffic synthesizer: classic pcap files with realistic SIP (UDP or TCP)
//! and RTP calls, for round-trip tests, benchmarks and load-testing capture pipelines.
//!
//! Sans-IO apart from the `std::io::Write` the caller hands in: no clock, no files, no
//! threads. Everything is deterministic from [`SynthConfig::seed`].
//!
//! ```
//! use vcontap_synth::{generate, SynthConfig};
//! let cfg = SynthConfig { calls: 2, concurrent: 2, seconds: 1.0, ..Default::default() };
//! let mut pcap = Vec::new();
//! let summary = generate(&cfg, &mut pcap).unwrap();
//! assert_eq!(summary.calls.len(), 2);
//! assert_eq!(summary.rtp_packets, 2 * 2 * 50);
//! ```
//!
//! Modules: [`config`](SynthConfig) (what to produce), `scenario` (per-call plans and
//! timelines), `sip` (message text), `rtp` (RTP / RFC 4733 packets and streams), `codec`
//! (tones, G.711), `packet` (Ethernet/VLAN/IP/UDP/TCP frames) and `generate` (the time-ordered merge,
//! written with [`vcontap_wire::PcapWriter`]).

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
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod codec;
mod config;
mod generate;
mod packet;
mod rng;
mod rtp;
mod scenario;
mod sip;

pub use codec::{linear_to_alaw, linear_to_ulaw, CodecError, MAX_TONE_TABLE};
pub use config::{
    dtmf_event, Codec, ConfigError, SipTransport, SynthConfig, ADDRESS_POOL, DEFAULT_START,
    MAX_CALLS, MAX_CODECS, MAX_CONCURRENT, MAX_DTMF_DIGITS, MAX_PTIME_MS, MAX_SECONDS,
    MIN_PTIME_MS,
};
pub use generate::{generate, SynthError, SynthSummary, OUT_BUFFER, TCP_MSS, TCP_WINDOW};
pub use packet::{
    internet_checksum, mac_for, tcp_flags, tcp_frame, udp_frame, Link, PacketError, TcpFields,
    MAX_IP_PAYLOAD, TTL,
};
pub use rtp::{
    write_dtmf_event, write_rtp_header, RtpHeader, DTMF_VOLUME, MAX_JITTER_US, TELEPHONE_EVENT_PT,
};
pub use scenario::{
    plan, CallPlan, Outcome, PartyPlan, DOMAIN, RTP_BASE_PORT, RTP_PORT_PAIRS, SIP_PORT,
    TCP_CLIENT_BASE_PORT, TONE_AMPLITUDE,
};
pub use sip::{reason, USER_AGENT};
