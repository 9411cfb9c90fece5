//! Sans-IO HEP (Homer Encapsulation Protocol, a.k.a. EEP) for vcontap: decoding of HEP v3
//! and the legacy v1/v2 binary header, the TCP stream framer, and a small v3 encoder.
//!
//! HEP is how SIP proxies and capture agents (Kamailio/OpenSIPS `siptrace`/`proto_hep`,
//! FreeSWITCH, Asterisk `res_hep`, heplify, sngrep `-H`) mirror the packets they see to a
//! collector. This crate turns one HEP message into a [`HepMessage`] (addresses, timestamp,
//! protocol type, capture agent id and name, payload) and never opens a socket or reads the
//! clock: the listener in `vcontap-pipeline` owns the sockets and arrival time.
//!
//! - [`decode`] / [`decode_with`]: one UDP datagram or one framed TCP message. Unknown chunk
//!   ids and vendor chunks are skipped; every length is bounded by both the header and the
//!   bytes at hand; a bad input is a [`HepError`] with a stable [`HepError::reason`] name for
//!   counters. Compressed payloads (chunk 0x0010: gzip, zlib or raw deflate) and whole-message
//!   gzip (heplify `payload_zip`) are inflated with an output cap ([`Limits`]).
//! - [`TcpFramer`]: splits a TCP byte stream into HEP3 messages with a bounded buffer.
//! - [`encode_v3`]: writes a [`HepMessage`] as HEP3 (tests, and anyone who sends HEP).
//!
//! Depends on `vcontap-wire` for its bounds-checked integer readers and on `flate2` (pure-Rust
//! `miniz_oxide` backend, already used by the sinks) for inflating.

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
#![deny(missing_docs)]

mod decode;
mod encode;
mod framer;

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

pub use decode::{decode, decode_with, Limits, DEFAULT_MAX_INFLATED};
pub use encode::{encode_v3, EncodeError};
pub use framer::{TcpFramer, MAX_BUFFERED};

/// The 4-byte id that starts every HEP3 message.
pub const HEP3_MAGIC: [u8; 4] = *b"HEP3";
/// Bytes in the HEP3 header: the id and the u16 total length.
pub const HEP3_HEADER: usize = 6;
/// Bytes in a chunk header: vendor, type and length, all u16.
pub const CHUNK_HEADER: usize = 6;
/// Largest HEP3 message (the total length is a u16).
pub const MAX_MESSAGE: usize = 65535;
/// Seconds between the NTP epoch (1900) and the Unix epoch: some senders (FreeSWITCH on
/// Windows) put NTP seconds into the timestamp chunk; HOMER subtracts this, so do we.
pub const NTP_UNIX_OFFSET: u32 = 2_208_988_800;

/// Generic (vendor 0) chunk type ids of HEP3 (spec REV 37).
pub mod chunk {
    /// u8 IP family (2 = IPv4, 10 = IPv6).
    pub const IP_FAMILY: u16 = 0x0001;
    /// u8 IP protocol (17 UDP, 6 TCP, 132 SCTP).
    pub const IP_PROTO: u16 = 0x0002;
    /// IPv4 source address.
    pub const IPV4_SRC: u16 = 0x0003;
    /// IPv4 destination address.
    pub const IPV4_DST: u16 = 0x0004;
    /// IPv6 source address.
    pub const IPV6_SRC: u16 = 0x0005;
    /// IPv6 destination address.
    pub const IPV6_DST: u16 = 0x0006;
    /// u16 source port.
    pub const SRC_PORT: u16 = 0x0007;
    /// u16 destination port.
    pub const DST_PORT: u16 = 0x0008;
    /// u32 timestamp, seconds since 1970.
    pub const TS_SECS: u16 = 0x0009;
    /// u32 microseconds added to the seconds.
    pub const TS_MICROS: u16 = 0x000a;
    /// u8 protocol type ([`ProtoType`](crate::ProtoType)).
    pub const PROTO_TYPE: u16 = 0x000b;
    /// u32 capture agent id.
    pub const CAPTURE_ID: u16 = 0x000c;
    /// u16 keep-alive timer (seconds).
    pub const KEEPALIVE: u16 = 0x000d;
    /// Authentication key (plain text).
    pub const AUTH_KEY: u16 = 0x000e;
    /// Captured payload.
    pub const PAYLOAD: u16 = 0x000f;
    /// Compressed payload (gzip, zlib or raw deflate).
    pub const COMPRESSED_PAYLOAD: u16 = 0x0010;
    /// Correlation id (the Call-ID for RTCP and logs).
    pub const CORRELATION_ID: u16 = 0x0011;
    /// u16 VLAN id.
    pub const VLAN: u16 = 0x0012;
    /// Capture agent name ("node name").
    pub const NODE_NAME: u16 = 0x0013;
}

/// The protocol type of chunk 0x000b: what the payload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ProtoType(pub u8);

impl ProtoType {
    /// SIP.
    pub const SIP: ProtoType = ProtoType(1);
    /// RTP.
    pub const RTP: ProtoType = ProtoType(4);
    /// RTCP, as JSON in the spec (some agents send binary RTCP).
    pub const RTCP: ProtoType = ProtoType(5);
    /// SIP as JSON.
    pub const SIP_JSON: ProtoType = ProtoType(0x32);
    /// Log lines (Kamailio `hlog()`, heplify's syslog path).
    pub const LOG: ProtoType = ProtoType(100);

    /// A stable lower-case name for counters.
    pub fn name(self) -> &'static str {
        match self.0 {
            1 => "sip",
            2 => "xmpp",
            3 => "sdp",
            4 => "rtp",
            5 => "rtcp",
            6 => "mgcp",
            7 => "megaco",
            0x22 => "mos_report",
            0x32 => "sip_json",
            0x35 => "dns",
            0x38 => "diameter",
            100 => "log",
            _ => "other",
        }
    }
}

/// Which HEP version a message came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Version {
    /// Legacy header without a timestamp.
    V1,
    /// Legacy header with a (little-endian) timestamp and a u16 capture id.
    V2,
    /// Chunked HEP3.
    #[default]
    V3,
}

impl Version {
    /// 1, 2 or 3.
    pub fn number(self) -> u8 {
        match self {
            Version::V1 => 1,
            Version::V2 => 2,
            Version::V3 => 3,
        }
    }
}

/// Why a HEP message was rejected. [`HepError::reason`] names each one for counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HepError {
    /// Fewer bytes than any header.
    #[error("message too short")]
    TooShort,
    /// Neither `HEP3`, version byte 1 or 2, nor gzip.
    #[error("unknown HEP version or magic")]
    UnknownVersion,
    /// The HEP3 total length is below the 6-byte header.
    #[error("HEP3 length below the header")]
    BadLength,
    /// The HEP3 total length claims more bytes than were received.
    #[error("HEP3 length beyond the bytes received")]
    LengthBeyondPacket,
    /// 1 to 5 bytes left after the last chunk: not even a chunk header.
    #[error("truncated chunk header")]
    TruncatedChunk,
    /// A chunk length below its own 6-byte header (zero-length chunks included).
    #[error("chunk length below the chunk header")]
    BadChunkLength,
    /// A chunk length beyond the end of the message.
    #[error("chunk length beyond the message")]
    ChunkBeyondPacket,
    /// A chunk vcontap uses has a value of the wrong size (e.g. a 3-byte IPv4 address).
    #[error("chunk {0:#06x} has a value of the wrong size")]
    BadChunkValue(u16),
    /// A legacy v1/v2 header with an IP family other than 2 or 10.
    #[error("legacy header with an unknown IP family")]
    BadFamily,
    /// A legacy v1/v2 header cut short.
    #[error("truncated legacy header")]
    TruncatedLegacy,
    /// Compressed bytes that do not inflate (gzip, zlib and raw deflate all failed).
    #[error("compressed data does not inflate")]
    BadCompression,
    /// Compressed bytes that inflate beyond [`Limits::max_inflated`] (a decompression bomb).
    #[error("compressed data inflates beyond the cap")]
    InflateTooLarge,
    /// A gzipped datagram whose content is gzip again.
    #[error("nested compression")]
    NestedCompression,
    /// The TCP framer's buffer would exceed [`MAX_BUFFERED`] (the caller did not drain it).
    #[error("TCP framer buffer full")]
    BufferFull,
}

impl HepError {
    /// Every error, in [`HepError::index`] order (for counter arrays).
    pub const ALL: [HepError; 14] = [
        HepError::TooShort,
        HepError::UnknownVersion,
        HepError::BadLength,
        HepError::LengthBeyondPacket,
        HepError::TruncatedChunk,
        HepError::BadChunkLength,
        HepError::ChunkBeyondPacket,
        HepError::BadChunkValue(0),
        HepError::BadFamily,
        HepError::TruncatedLegacy,
        HepError::BadCompression,
        HepError::InflateTooLarge,
        HepError::NestedCompression,
        HepError::BufferFull,
    ];

    /// A stable snake_case name (a metrics label).
    pub fn reason(self) -> &'static str {
        match self {
            HepError::TooShort => "too_short",
            HepError::UnknownVersion => "unknown_version",
            HepError::BadLength => "bad_length",
            HepError::LengthBeyondPacket => "length_beyond_packet",
            HepError::TruncatedChunk => "truncated_chunk",
            HepError::BadChunkLength => "bad_chunk_length",
            HepError::ChunkBeyondPacket => "chunk_beyond_packet",
            HepError::BadChunkValue(_) => "bad_chunk_value",
            HepError::BadFamily => "bad_family",
            HepError::TruncatedLegacy => "truncated_legacy",
            HepError::BadCompression => "bad_compression",
            HepError::InflateTooLarge => "inflate_too_large",
            HepError::NestedCompression => "nested_compression",
            HepError::BufferFull => "buffer_full",
        }
    }

    /// Position in [`HepError::ALL`].
    pub fn index(self) -> usize {
        match self {
            HepError::TooShort => 0,
            HepError::UnknownVersion => 1,
            HepError::BadLength => 2,
            HepError::LengthBeyondPacket => 3,
            HepError::TruncatedChunk => 4,
            HepError::BadChunkLength => 5,
            HepError::ChunkBeyondPacket => 6,
            HepError::BadChunkValue(_) => 7,
            HepError::BadFamily => 8,
            HepError::TruncatedLegacy => 9,
            HepError::BadCompression => 10,
            HepError::InflateTooLarge => 11,
            HepError::NestedCompression => 12,
            HepError::BufferFull => 13,
        }
    }
}

/// A HEP message's timestamp after the repairs HOMER applies (see [`HepMessage::timestamp`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HepTime {
    /// Seconds since the Unix epoch.
    pub secs: i64,
    /// Microseconds, always below 1 000 000.
    pub micros: u32,
    /// The sender's value was repaired (NTP epoch, microseconds ≥ 10⁶).
    pub repaired: bool,
}

/// One decoded HEP message. Byte fields borrow the input, except what had to be inflated.
/// Every field is optional: senders leave out different chunks (see docs/hep.md).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HepMessage<'a> {
    /// The version it came in.
    pub version: Version,
    /// The whole datagram was gzip (heplify `payload_zip`).
    pub gzipped: bool,
    /// IP family as sent (2 or 10; not trusted: the address chunks decide).
    pub family: Option<u8>,
    /// IP protocol (17 UDP, 6 TCP, 132 SCTP).
    pub ip_proto: Option<u8>,
    /// Source address.
    pub src_ip: Option<IpAddr>,
    /// Destination address.
    pub dst_ip: Option<IpAddr>,
    /// Source port.
    pub src_port: Option<u16>,
    /// Destination port.
    pub dst_port: Option<u16>,
    /// Timestamp seconds as sent.
    pub ts_secs: Option<u32>,
    /// Timestamp microseconds as sent.
    pub ts_micros: Option<u32>,
    /// Protocol type (v1/v2: always SIP).
    pub proto_type: Option<ProtoType>,
    /// Capture agent id (u16 in v2, u32 in v3).
    pub capture_id: Option<u32>,
    /// Keep-alive timer (seconds).
    pub keepalive: Option<u16>,
    /// Authentication key (plain text).
    pub auth_key: Option<Cow<'a, [u8]>>,
    /// The payload (inflated when it came compressed).
    pub payload: Option<Cow<'a, [u8]>>,
    /// The payload came in chunk 0x0010 and was inflated.
    pub payload_compressed: bool,
    /// Correlation id (chunk 0x0011).
    pub correlation_id: Option<Cow<'a, [u8]>>,
    /// VLAN id (chunk 0x0012).
    pub vlan: Option<u16>,
    /// Capture agent name (chunk 0x0013).
    pub node_name: Option<Cow<'a, [u8]>>,
    /// Chunks skipped: other vendors' and generic ids vcontap does not use.
    pub skipped_chunks: u16,
}

impl HepMessage<'_> {
    /// Detaches the message from the input bytes.
    pub fn into_owned(self) -> HepMessage<'static> {
        let own = |c: Option<Cow<'_, [u8]>>| c.map(|c| Cow::Owned(c.into_owned()));
        HepMessage {
            auth_key: own(self.auth_key),
            payload: own(self.payload),
            correlation_id: own(self.correlation_id),
            node_name: own(self.node_name),
            version: self.version,
            gzipped: self.gzipped,
            family: self.family,
            ip_proto: self.ip_proto,
            src_ip: self.src_ip,
            dst_ip: self.dst_ip,
            src_port: self.src_port,
            dst_port: self.dst_port,
            ts_secs: self.ts_secs,
            ts_micros: self.ts_micros,
            proto_type: self.proto_type,
            capture_id: self.capture_id,
            keepalive: self.keepalive,
            payload_compressed: self.payload_compressed,
            vlan: self.vlan,
            skipped_chunks: self.skipped_chunks,
        }
    }

    /// The payload bytes (empty when there is none).
    pub fn payload_bytes(&self) -> &[u8] {
        self.payload.as_deref().unwrap_or(&[])
    }

    /// The sender's timestamp, repaired as HOMER does: NTP-epoch seconds (≥ 2 208 988 800)
    /// are moved to the Unix epoch, microseconds ≥ 10⁶ are clamped. `None` when absent or
    /// zero: the receiver then uses the arrival time (v1 never has one).
    pub fn timestamp(&self) -> Option<HepTime> {
        let secs = self.ts_secs.filter(|s| *s != 0)?;
        let mut repaired = false;
        let secs = if secs >= NTP_UNIX_OFFSET {
            repaired = true;
            secs - NTP_UNIX_OFFSET
        } else {
            secs
        };
        let mut micros = self.ts_micros.unwrap_or(0);
        if micros >= 1_000_000 {
            repaired = true;
            micros = 999_999;
        }
        Some(HepTime {
            secs: i64::from(secs),
            micros,
            repaired,
        })
    }

    /// Source and destination socket addresses. The address chunks decide the family (the
    /// family byte is unreliable); an IPv4 peer of an IPv6 one is mapped to `::ffff:a.b.c.d`;
    /// a missing address is the unspecified address of the other's family and a missing port
    /// is 0. The flag is `false` when either address was missing.
    pub fn socket_addrs(&self) -> (SocketAddr, SocketAddr, bool) {
        let complete = self.src_ip.is_some() && self.dst_ip.is_some();
        let unspecified = |other: Option<IpAddr>| match other {
            Some(IpAddr::V6(_)) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        };
        let mut src = self.src_ip.unwrap_or_else(|| unspecified(self.dst_ip));
        let mut dst = self.dst_ip.unwrap_or_else(|| unspecified(self.src_ip));
        match (src, dst) {
            (IpAddr::V4(a), IpAddr::V6(_)) => src = IpAddr::V6(a.to_ipv6_mapped()),
            (IpAddr::V6(_), IpAddr::V4(b)) => dst = IpAddr::V6(b.to_ipv6_mapped()),
            _ => {}
        }
        (
            SocketAddr::new(src, self.src_port.unwrap_or(0)),
            SocketAddr::new(dst, self.dst_port.unwrap_or(0)),
            complete,
        )
    }
}
