//! Sans-IO capture decoding for vcontap.
//!
//! This crate owns everything between raw capture bytes and transport payloads:
//! capture containers (pcap, pcapng), link layers, tunnels, IPv4/IPv6 with fragment
//! reassembly, UDP, TCP stream reassembly and SCTP DATA chunks. It never opens files
//! or sockets and never reads the clock: callers feed bytes and timestamps.
//!
//! Entry points:
//! - [`PcapReader`]: streaming reader over any `std::io::Read` (classic pcap in both byte
//!   orders with µs/ns resolution, and pcapng with several interfaces).
//! - [`Decoder`]: turns one captured frame into zero or more [`Datagram`]s, keeping the
//!   (bounded) state for IP fragments and TCP streams.

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

use std::net::SocketAddr;

pub mod bytes;
mod decoder;
mod frag;
mod ip;
mod link;
mod pcap;
mod sctp;
mod stats;
mod tcp;
mod writer;

pub use decoder::{
    Decoder, DecoderConfig, DEFAULT_FRAG_TIMEOUT_MS, DEFAULT_MAX_FRAG_BUFFERS,
    DEFAULT_MAX_FRAG_BYTES, DEFAULT_MAX_TCP_BUFFER_BYTES, DEFAULT_MAX_TCP_FLOWS,
    DEFAULT_MAX_TCP_OUT_OF_ORDER_SEGMENTS, DEFAULT_TCP_IDLE_TIMEOUT_MS, MAX_TUNNEL_DEPTH,
};
pub use pcap::{CaptureFormat, PcapError, PcapReader, MAX_RECORD_BYTES};
pub use stats::{DecodeStats, SkipReason};
pub use tcp::{SIP_TLS_PORT, TCP_GAP_TIMEOUT_NS};
pub use writer::{PcapWriteError, PcapWriter, Resolution, MAGIC_MICROS, MAGIC_NANOS, SNAPLEN};

/// A capture timestamp: nanoseconds since the Unix epoch.
///
/// Time is always an input in vcontap; this is the only clock the engine sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// Nanoseconds since the Unix epoch.
    pub const fn nanos(self) -> i64 {
        self.0
    }
    /// Builds a timestamp from seconds and nanoseconds.
    pub const fn from_parts(secs: i64, nanos: u32) -> Self {
        Timestamp(
            secs.saturating_mul(1_000_000_000)
                .saturating_add(nanos as i64),
        )
    }
    /// Whole seconds part.
    pub const fn secs(self) -> i64 {
        self.0.div_euclid(1_000_000_000)
    }
    /// Sub-second nanoseconds part.
    pub const fn subsec_nanos(self) -> u32 {
        self.0.rem_euclid(1_000_000_000) as u32
    }
    /// `self + ms` milliseconds.
    /// Saturates instead of overflowing: capture timestamps are input, and a hostile
    /// pcapng can claim any 64-bit time.
    pub const fn add_millis(self, ms: i64) -> Self {
        Timestamp(self.0.saturating_add(ms.saturating_mul(1_000_000)))
    }
}

/// Link-layer type of a captured frame (pcap `LINKTYPE_*` numbering).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LinkType(pub u32);

impl LinkType {
    /// BSD loopback / NULL (4-byte host-order address family).
    pub const NULL: LinkType = LinkType(0);
    /// Ethernet II.
    pub const ETHERNET: LinkType = LinkType(1);
    /// Raw IP (v4 or v6 by version nibble), DLT 12 on some BSDs.
    pub const RAW_12: LinkType = LinkType(12);
    /// Raw IP, OpenBSD loop (DLT_LOOP, network-order AF).
    pub const LOOP: LinkType = LinkType(108);
    /// Raw IP (LINKTYPE_RAW = 101).
    pub const RAW: LinkType = LinkType(101);
    /// Linux cooked capture v1.
    pub const LINUX_SLL: LinkType = LinkType(113);
    /// Raw IPv4.
    pub const IPV4: LinkType = LinkType(228);
    /// Raw IPv6.
    pub const IPV6: LinkType = LinkType(229);
    /// Linux cooked capture v2.
    pub const LINUX_SLL2: LinkType = LinkType(276);
}

/// One captured frame, borrowed from the reader's buffer.
#[derive(Debug, Clone, Copy)]
pub struct RawPacket<'a> {
    /// Capture time.
    pub ts: Timestamp,
    /// Link type of `data`.
    pub link: LinkType,
    /// Captured bytes (may be shorter than `orig_len` when the snap length cut it).
    pub data: &'a [u8],
    /// Length of the frame on the wire.
    pub orig_len: u32,
}

/// Transport protocol of a [`Datagram`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// One UDP datagram (after IP reassembly).
    Udp,
    /// One complete application message cut from a reassembled TCP stream by the
    /// stream's framer (see [`Framer`]).
    Tcp,
    /// The user data of one SCTP DATA chunk.
    Sctp,
}

/// A transport payload with its addresses, the unit handed to the engine.
#[derive(Debug, Clone, Copy)]
pub struct Datagram<'a> {
    /// Capture time of the frame that completed this payload.
    pub ts: Timestamp,
    /// Source address and port.
    pub src: SocketAddr,
    /// Destination address and port.
    pub dst: SocketAddr,
    /// Transport protocol.
    pub transport: Transport,
    /// Outermost 802.1Q VLAN id, if any.
    pub vlan: Option<u16>,
    /// Payload bytes.
    pub payload: &'a [u8],
}

/// What a stream framer says about the bytes buffered for one TCP direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// The first `n` bytes are one complete message.
    Message(usize),
    /// The first `n` bytes are noise to skip (e.g. CRLF keep-alives).
    Skip(usize),
    /// More bytes are needed (call again whenever new bytes arrive).
    Incomplete,
    /// More bytes are needed, and nothing can change before the buffer holds at least this
    /// many bytes (e.g. a body of known length): the stream does not call the framer again
    /// until then, so a large message arriving in many segments costs O(1) per segment.
    NeedBytes(usize),
    /// More bytes are needed, and nothing can change before a line feed arrives (e.g. a
    /// text header section): the stream calls the framer again only when new bytes contain
    /// `\n`, so a hostile peer trickling bytes cannot make it rescan the buffer each time.
    NeedLine,
    /// This stream does not carry the application protocol: stop tracking it.
    NotOurs,
}

impl Framing {
    /// Whether the framer asks for more bytes (any of the three "incomplete" answers).
    pub fn is_incomplete(self) -> bool {
        matches!(
            self,
            Framing::Incomplete | Framing::NeedBytes(_) | Framing::NeedLine
        )
    }
}

/// Splits a reassembled TCP byte stream into application messages.
///
/// The SIP crate provides the SIP implementation (Content-Length framing); the wire crate
/// stays protocol-agnostic.
pub type Framer = fn(&[u8]) -> Framing;
