//! The [`Decoder`]: configuration, per-frame entry point and the shared decoding context.
//!
//! Layer parsing lives in `link.rs` (link types, VLAN, PPPoE, MPLS), `ip.rs` (IPv4/IPv6,
//! UDP, TCP, GRE/ERSPAN, VXLAN, IP-in-IP) and `sctp.rs`; state lives in `frag.rs` and
//! `tcp.rs`. The stateless path (Ethernet -> IPv4 -> UDP) only slices the frame: no
//! allocation, no hashing.

use crate::frag::{FragLimits, FragTable};
use crate::sctp::SctpTable;
use crate::stats::{DecodeStats, SkipReason};
use crate::tcp::{TcpLimits, TcpTable};
use crate::{Datagram, Framer, RawPacket, Timestamp};

/// Most nested encapsulations (GRE, ERSPAN, VXLAN, IP-in-IP, MPLS pseudowire) we follow.
/// Real deployments use one or two; the bound stops hostile recursion.
pub const MAX_TUNNEL_DEPTH: u8 = 4;

/// Decoder limits and the TCP framer.
#[derive(Debug, Clone, Copy)]
pub struct DecoderConfig {
    /// Splits TCP streams into messages; `None` ignores TCP payloads entirely.
    pub tcp_framer: Option<Framer>,
    /// Most datagrams being reassembled at once; the oldest is evicted beyond this.
    pub max_frag_buffers: usize,
    /// Largest reassembled IP payload accepted (IPv4 cannot exceed 65515 bytes).
    pub max_frag_bytes_per_datagram: usize,
    /// Partial datagrams older than this (capture time) are dropped.
    pub frag_timeout_ms: u64,
    /// Most TCP directions tracked at once; the oldest is evicted beyond this.
    pub max_tcp_flows: usize,
    /// Most bytes buffered per TCP direction (in-order buffer, and held out-of-order data).
    pub max_tcp_buffer_bytes: usize,
    /// TCP directions without segments for this long (capture time) are freed.
    pub tcp_idle_timeout_ms: u64,
    /// Most out-of-order segments held per TCP direction before the gap is skipped.
    pub max_tcp_out_of_order_segments: usize,
}

/// Default [`DecoderConfig::max_frag_buffers`]: far above the handful of datagrams a
/// SIP tap has in flight, small enough that a fragment flood costs at most ~64 MiB.
pub const DEFAULT_MAX_FRAG_BUFFERS: usize = 1024;
/// Default [`DecoderConfig::max_frag_bytes_per_datagram`]: the IP maximum.
pub const DEFAULT_MAX_FRAG_BYTES: usize = 65_535;
/// Default [`DecoderConfig::frag_timeout_ms`]: fragments of one datagram arrive within
/// milliseconds; hosts give up after 30-60 s, a tap can be much stricter.
pub const DEFAULT_FRAG_TIMEOUT_MS: u64 = 5_000;
/// Default [`DecoderConfig::max_tcp_flows`]: a busy SIP trunk side, with headroom.
pub const DEFAULT_MAX_TCP_FLOWS: usize = 65_536;
/// Default [`DecoderConfig::max_tcp_buffer_bytes`]: larger than any sane SIP message.
pub const DEFAULT_MAX_TCP_BUFFER_BYTES: usize = 256 * 1024;
/// Default [`DecoderConfig::tcp_idle_timeout_ms`]: SIP over TCP connections idle for
/// minutes between transactions, but five minutes of silence means the state is stale.
pub const DEFAULT_TCP_IDLE_TIMEOUT_MS: u64 = 300_000;
/// Default [`DecoderConfig::max_tcp_out_of_order_segments`]: a full window of reordering.
pub const DEFAULT_MAX_TCP_OUT_OF_ORDER_SEGMENTS: usize = 64;

impl Default for DecoderConfig {
    fn default() -> Self {
        DecoderConfig {
            tcp_framer: None,
            max_frag_buffers: DEFAULT_MAX_FRAG_BUFFERS,
            max_frag_bytes_per_datagram: DEFAULT_MAX_FRAG_BYTES,
            frag_timeout_ms: DEFAULT_FRAG_TIMEOUT_MS,
            max_tcp_flows: DEFAULT_MAX_TCP_FLOWS,
            max_tcp_buffer_bytes: DEFAULT_MAX_TCP_BUFFER_BYTES,
            tcp_idle_timeout_ms: DEFAULT_TCP_IDLE_TIMEOUT_MS,
            max_tcp_out_of_order_segments: DEFAULT_MAX_TCP_OUT_OF_ORDER_SEGMENTS,
        }
    }
}

fn ms_to_ns(ms: u64) -> i64 {
    i64::try_from(ms)
        .unwrap_or(i64::MAX)
        .saturating_mul(1_000_000)
}

/// Per-frame decoding context passed down the layers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ctx {
    pub ts: Timestamp,
    pub vlan: Option<u16>,
    pub depth: u8,
}

/// Turns captured frames into [`Datagram`]s, keeping bounded fragment and TCP state.
#[derive(Debug)]
pub struct Decoder {
    pub(crate) cfg: DecoderConfig,
    pub(crate) stats: DecodeStats,
    pub(crate) frags: FragTable,
    pub(crate) tcp: TcpTable,
    pub(crate) sctp: SctpTable,
}

impl Decoder {
    /// Creates a decoder with the given limits.
    pub fn new(cfg: DecoderConfig) -> Self {
        Decoder {
            cfg,
            stats: DecodeStats::default(),
            frags: FragTable::new(FragLimits {
                max_buffers: cfg.max_frag_buffers,
                max_bytes: cfg.max_frag_bytes_per_datagram,
                timeout_ns: ms_to_ns(cfg.frag_timeout_ms),
            }),
            tcp: TcpTable::new(TcpLimits {
                max_flows: cfg.max_tcp_flows,
                max_buffer: cfg.max_tcp_buffer_bytes,
                max_held: cfg.max_tcp_out_of_order_segments,
                idle_ns: ms_to_ns(cfg.tcp_idle_timeout_ms),
            }),
            sctp: SctpTable::new(),
        }
    }

    /// The configuration this decoder was built with.
    pub fn config(&self) -> &DecoderConfig {
        &self.cfg
    }

    /// Decodes one frame, calling `out` once per datagram found (zero or more times).
    pub fn decode(&mut self, pkt: &RawPacket<'_>, out: &mut dyn FnMut(Datagram<'_>)) {
        self.stats.frames += 1;
        self.stats.bytes = self.stats.bytes.wrapping_add(pkt.data.len() as u64);
        let ctx = Ctx {
            ts: pkt.ts,
            vlan: None,
            depth: 0,
        };
        self.link(ctx, pkt.link, pkt.data, out);
    }

    /// Expires fragment buffers and idle TCP flows as of capture time `now`.
    ///
    /// Cheap to call often: tables are swept at most once per second of capture time.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        self.frags.handle_timeout(now, &mut self.stats);
        self.tcp.handle_timeout(now, &mut self.stats);
        let frag_timeout = ms_to_ns(self.cfg.frag_timeout_ms);
        self.sctp.handle_timeout(now, frag_timeout, &mut self.stats);
    }

    /// Counters so far.
    pub fn stats(&self) -> &DecodeStats {
        &self.stats
    }

    /// Datagrams currently being reassembled.
    pub fn fragment_buffers(&self) -> usize {
        self.frags.len()
    }

    /// TCP directions currently tracked.
    pub fn tcp_flows(&self) -> usize {
        self.tcp.len()
    }

    pub(crate) fn skip(&mut self, r: SkipReason) {
        self.stats.skip(r);
    }

    /// Context one tunnel level deeper, or `None` (counted) past [`MAX_TUNNEL_DEPTH`].
    pub(crate) fn deeper(&mut self, ctx: Ctx) -> Option<Ctx> {
        if ctx.depth >= MAX_TUNNEL_DEPTH {
            self.skip(SkipReason::TunnelDepthExceeded);
            return None;
        }
        Some(Ctx {
            depth: ctx.depth + 1,
            ..ctx
        })
    }
}
