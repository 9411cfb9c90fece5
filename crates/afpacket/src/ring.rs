//! One capture ring: an AF_PACKET socket with a TPACKET_V3 receive ring, walked block by
//! block in safe code over the slices [`crate::sys`] hands out — or, with
//! [`Layout::Frames`], a TPACKET_V2 ring handed over frame by frame. Owns the per-frame work:
//! header checks, the link type (Ethernet, raw IP, or a built SLL2 header for `any`), VLAN
//! tag restore, snap length, the user-space [`Filter`], and the counters of [`RingStats`].

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use vcontap_wire::{LinkType, RawPacket, Timestamp};

use crate::filter::Filter;
use crate::sys::{self, KernelStats, MappedRing, RingGeometry};
use crate::CaptureError;

/// `tp_status`: a VLAN tag was stripped into `tp_vlan_tci`.
const TP_STATUS_VLAN_VALID: u32 = 0x10;
/// `tp_status`: `tp_vlan_tpid` is valid.
const TP_STATUS_VLAN_TPID_VALID: u32 = 0x40;
/// Size of `struct tpacket3_hdr`, after which `struct sockaddr_ll` starts (TPACKET_ALIGN).
const HDR_LEN: usize = 48;
/// Size of `struct tpacket2_hdr` (TPACKET_ALIGN), after which `struct sockaddr_ll` starts.
const HDR2_LEN: usize = 32;
/// Bytes of a V2 frame before the link-layer header of an Ethernet frame: the kernel puts
/// the network header at `TPACKET_ALIGN(TPACKET2_HDRLEN + 16)` = 80 and the MAC header
/// 14 bytes before it; 80 leaves room for any link header up to 16 bytes.
pub const FRAME_OVERHEAD: u32 = 80;
/// `PACKET_FANOUT_HASH`.
const FANOUT_HASH: u16 = 0;
/// `PACKET_FANOUT_FLAG_DEFRAG`: reassemble IP fragments before hashing, so every fragment
/// of a datagram reaches the same ring.
const FANOUT_FLAG_DEFRAG: u16 = 0x8000;
/// Length of the SLL2 header built for frames of the `any` device.
pub const SLL2_LEN: usize = 20;

/// Fanout membership of a ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fanout {
    /// Group id, shared by the rings that split one interface's traffic (per network
    /// namespace: pick one no other process on the host uses, e.g. derived from the pid).
    pub group: u16,
    /// `PACKET_FANOUT_FLAG_DEFRAG` (default on): fragments of one datagram go to one ring.
    pub defrag: bool,
}

/// How the kernel hands captured frames to user space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Layout {
    /// TPACKET_V3: variable-length frames packed into blocks; a block is handed over when
    /// full or after the block timeout. Fewest wake-ups and no frame-size limit: the
    /// throughput choice, and the default. Latency on a lightly loaded link is up to the
    /// block timeout.
    #[default]
    Blocks,
    /// TPACKET_V2: fixed-size frame slots, each handed over as soon as the kernel wrote it
    /// (sub-millisecond latency). A frame longer than the slot (`frame_size` −
    /// [`FRAME_OVERHEAD`]) is cut and counted as `truncated`, so GRO/LRO should be off on
    /// the tapped interface (TCP segments merged by GRO can be 64 KB).
    Frames,
}

/// How to open a [`Ring`].
#[derive(Debug, Clone)]
pub struct RingConfig {
    /// Interface name, or `any` for every interface (cooked SLL2 frames).
    pub interface: String,
    /// Network namespace to open the socket in (a path such as `/run/netns/NAME`); `None`
    /// = the process's own. Only the opening thread enters it, the socket stays there.
    pub netns: Option<PathBuf>,
    /// Bytes per block (a multiple of the page size; a power of two advised).
    pub block_size: u32,
    /// Blocks in the ring. Memory per ring = `block_size × block_count`.
    pub block_count: u32,
    /// `tp_frame_size`: only checked by the kernel with [`Layout::Blocks`] (frames are
    /// packed); with [`Layout::Frames`] the slot size, a multiple of 16.
    pub frame_size: u32,
    /// Blocks (TPACKET_V3) or frames (TPACKET_V2).
    pub layout: Layout,
    /// Block retire timeout (`tp_retire_blk_tov`), ms: a partly filled block is handed to
    /// user space after this long, which bounds the latency on a quiet link.
    pub block_timeout_ms: u32,
    /// Bytes kept per frame (applied by the kernel with a one-instruction BPF program).
    pub snaplen: u32,
    /// Promiscuous mode (`PACKET_MR_PROMISC` membership; not for `any`).
    pub promiscuous: bool,
    /// Join this fanout group (hash mode).
    pub fanout: Option<Fanout>,
    /// User-space filter applied before a frame is handed out.
    pub filter: Filter,
    /// A BPF expression run by the kernel before the ring (needs the `pcap` feature; see
    /// [`crate::bpf`]).
    pub bpf: Option<String>,
}

impl RingConfig {
    /// Defaults for `interface`: 2 MiB × 16 blocks (32 MiB), 20 ms block timeout, snap
    /// length 65535, promiscuous, no fanout, no filter.
    pub fn new(interface: &str) -> Self {
        RingConfig {
            interface: interface.to_string(),
            netns: None,
            block_size: 2 << 20,
            block_count: 16,
            frame_size: 2048,
            layout: Layout::Blocks,
            block_timeout_ms: 20,
            snaplen: 65535,
            promiscuous: true,
            fanout: None,
            filter: Filter::default(),
            bpf: None,
        }
    }
}

/// Counters of one ring, totals since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RingStats {
    /// Frames the kernel offered this socket (`tp_packets`, which includes `tp_drops`).
    pub kernel_packets: u64,
    /// Frames the kernel dropped because the ring was full (`tp_drops`).
    pub kernel_drops: u64,
    /// Times the ring was found full (`tp_freeze_q_cnt`).
    pub freezes: u64,
    /// Frames handed out.
    pub frames: u64,
    /// Bytes handed out.
    pub bytes: u64,
    /// Frames the user-space filter refused.
    pub filtered: u64,
    /// Frames whose stripped VLAN tag was put back.
    pub vlan_restored: u64,
    /// Frames cut by the snap length (`tp_snaplen < tp_len`).
    pub truncated: u64,
    /// Frames of a link type the ring cannot name (skipped).
    pub unsupported_link: u64,
    /// Blocks with inconsistent headers (handed back unread).
    pub bad_blocks: u64,
    /// Slots (blocks, or frames with [`Layout::Frames`]) handed to user space and not yet
    /// read (ring occupancy, at the last read).
    pub blocks_waiting: u32,
    /// Slots in the ring (blocks, or frames with [`Layout::Frames`]).
    pub blocks: u32,
}

/// Where the walk is inside a user-owned block.
#[derive(Debug, Clone, Copy)]
struct Cursor {
    remaining: u32,
    offset: usize,
}

/// One AF_PACKET TPACKET_V3 receive ring.
pub struct Ring {
    // Field order = drop order: unmap before closing the socket.
    map: MappedRing,
    fd: OwnedFd,
    any: bool,
    layout: Layout,
    next_block: usize,
    cursor: Option<Cursor>,
    scratch: Vec<u8>,
    filter: Filter,
    snaplen: usize,
    stats: RingStats,
    interface: String,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("interface", &self.interface)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Ring {
    /// Opens the ring: socket, TPACKET_V3, snap length, ring, mmap, bind, promiscuous
    /// mode, fanout — in that order, so nothing arrives before the ring exists. Needs
    /// CAP_NET_RAW (and CAP_SYS_ADMIN for `netns`).
    pub fn open(cfg: &RingConfig) -> Result<Ring, CaptureError> {
        check(cfg)?;
        match &cfg.netns {
            None => Self::open_here(cfg),
            Some(ns) => {
                let cfg2 = cfg.clone();
                let ns = ns.clone();
                std::thread::Builder::new()
                    .name("netns-open".into())
                    .spawn(move || {
                        sys::enter_netns(&ns)
                            .map_err(|e| CaptureError::Namespace(ns.display().to_string(), e))?;
                        Self::open_here(&cfg2)
                    })
                    .map_err(|e| CaptureError::Os("spawn", e))?
                    .join()
                    .map_err(|_| CaptureError::Config("namespace thread panicked".into()))?
            }
        }
    }

    fn open_here(cfg: &RingConfig) -> Result<Ring, CaptureError> {
        let any = cfg.interface == "any";
        // Compiled before any socket exists: a bad expression is a configuration error.
        let bpf = match &cfg.bpf {
            Some(expr) => Some(
                crate::bpf::compile(expr, any, cfg.snaplen)
                    .map_err(|e| CaptureError::Config(e.to_string()))?,
            ),
            None => None,
        };
        let ifindex = if any {
            0
        } else {
            sys::ifindex(&cfg.interface)
                .map_err(|e| CaptureError::Interface(cfg.interface.clone(), e))?
        };
        let os = |op: &'static str| move |e| CaptureError::Os(op, e);
        let fd = sys::packet_socket(any).map_err(os("socket"))?;
        let frames = cfg.layout == Layout::Frames;
        sys::set_tpacket_version(&fd, frames).map_err(os("PACKET_VERSION"))?;
        match &bpf {
            None => sys::set_snaplen(&fd, cfg.snaplen).map_err(os("SO_ATTACH_FILTER"))?,
            Some(prog) => sys::attach_filter(&fd, prog).map_err(os("SO_ATTACH_FILTER"))?,
        }
        let map = MappedRing::new(
            &fd,
            RingGeometry {
                block_size: cfg.block_size,
                block_count: cfg.block_count,
                frame_size: cfg.frame_size,
                block_timeout_ms: cfg.block_timeout_ms,
                frames,
            },
        )
        .map_err(os("PACKET_RX_RING"))?;
        sys::bind(&fd, ifindex, true).map_err(os("bind"))?;
        if cfg.promiscuous && !any {
            sys::add_promisc(&fd, ifindex).map_err(os("PACKET_ADD_MEMBERSHIP"))?;
        }
        if let Some(f) = cfg.fanout {
            let flags = FANOUT_HASH | if f.defrag { FANOUT_FLAG_DEFRAG } else { 0 };
            sys::join_fanout(&fd, f.group, flags).map_err(os("PACKET_FANOUT"))?;
        }
        tracing::debug!(
            interface = %cfg.interface,
            mib = (u64::from(cfg.block_size) * u64::from(cfg.block_count)) >> 20,
            fanout = ?cfg.fanout,
            "capture ring open"
        );
        Ok(Ring {
            stats: RingStats {
                blocks: u32::try_from(map.slot_count()).unwrap_or(u32::MAX),
                ..RingStats::default()
            },
            map,
            fd,
            any,
            layout: cfg.layout,
            next_block: 0,
            cursor: None,
            scratch: Vec::with_capacity(
                usize::try_from(cfg.snaplen).unwrap_or(65535) + SLL2_LEN + 4,
            ),
            filter: cfg.filter.clone(),
            snaplen: usize::try_from(cfg.snaplen).unwrap_or(usize::MAX),
            interface: cfg.interface.clone(),
        })
    }

    /// The interface this ring captures on.
    pub fn interface(&self) -> &str {
        &self.interface
    }

    /// The socket, for poll(2).
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Whether a block is ready to be read now.
    pub fn ready(&self) -> bool {
        self.cursor.is_some() || self.map.is_user(self.next_block)
    }

    /// Reads the kernel counters (which resets them in the kernel), adds them to the
    /// totals, counts the blocks waiting, and returns the totals.
    pub fn stats(&mut self) -> Result<RingStats, CaptureError> {
        let k: KernelStats =
            sys::read_stats(&self.fd).map_err(|e| CaptureError::Os("PACKET_STATISTICS", e))?;
        self.stats.kernel_packets += u64::from(k.packets);
        self.stats.kernel_drops += u64::from(k.drops);
        self.stats.freezes += u64::from(k.freezes);
        let waiting = (0..self.map.slot_count())
            .filter(|&i| self.map.is_user(i))
            .count();
        self.stats.blocks_waiting = u32::try_from(waiting).unwrap_or(u32::MAX);
        Ok(self.stats)
    }

    /// Hands up to `max` frames that pass the filter to `f`, walking user-owned blocks and
    /// handing each back once read. Returns the number handed out; 0 when no block is ready.
    /// An error from `f` stops the walk (the frame counts as read) and is returned.
    pub fn poll<E, F>(&mut self, max: usize, f: F) -> Result<usize, E>
    where
        F: FnMut(&RawPacket<'_>) -> Result<(), E>,
    {
        match self.layout {
            Layout::Blocks => self.poll_blocks(max, f),
            Layout::Frames => self.poll_frames(max, f),
        }
    }

    /// TPACKET_V2: each user-owned frame slot in ring order, handed back right after use.
    fn poll_frames<E, F>(&mut self, max: usize, mut f: F) -> Result<usize, E>
    where
        F: FnMut(&RawPacket<'_>) -> Result<(), E>,
    {
        let mut n = 0;
        while n < max {
            let i = self.next_block;
            let Some(slot) = self.map.user_slot(i) else {
                break;
            };
            let result = match frame_header_v2(slot) {
                None => {
                    self.stats.bad_blocks += 1;
                    Ok(())
                }
                Some(h) => match accept(
                    slot,
                    &h,
                    0,
                    self.any,
                    self.snaplen,
                    &mut self.scratch,
                    &self.filter,
                    &mut self.stats,
                ) {
                    Some(pkt) => {
                        n += 1;
                        f(&pkt)
                    }
                    None => Ok(()),
                },
            };
            self.map.release(i);
            self.next_block = (i + 1) % self.map.slot_count().max(1);
            result?;
        }
        Ok(n)
    }

    /// TPACKET_V3: walk the frames of each user-owned block, handing the block back once
    /// its last frame was read.
    fn poll_blocks<E, F>(&mut self, max: usize, mut f: F) -> Result<usize, E>
    where
        F: FnMut(&RawPacket<'_>) -> Result<(), E>,
    {
        let mut n = 0;
        while n < max {
            let Some(block) = self.map.user_slot(self.next_block) else {
                break;
            };
            let cur = match self.cursor {
                Some(c) => c,
                None => match block_header(block) {
                    Some(c) => c,
                    None => {
                        self.stats.bad_blocks += 1;
                        self.finish_block();
                        continue;
                    }
                },
            };
            if cur.remaining == 0 {
                self.finish_block();
                continue;
            }
            let Some(h) = frame_header(block, cur.offset) else {
                self.stats.bad_blocks += 1;
                self.finish_block();
                continue;
            };
            let next = Cursor {
                remaining: cur.remaining - 1,
                offset: cur.offset.saturating_add(h.next_offset),
            };
            if next.remaining > 0 && h.next_offset == 0 {
                // Would loop on the same frame: the block is inconsistent.
                self.stats.bad_blocks += 1;
                self.finish_block();
                continue;
            }
            self.cursor = Some(next);
            let Some(pkt) = accept(
                block,
                &h,
                cur.offset,
                self.any,
                self.snaplen,
                &mut self.scratch,
                &self.filter,
                &mut self.stats,
            ) else {
                continue;
            };
            n += 1;
            f(&pkt)?;
        }
        Ok(n)
    }

    fn finish_block(&mut self) {
        self.map.release(self.next_block);
        self.cursor = None;
        self.next_block = (self.next_block + 1) % self.map.slot_count().max(1);
    }
}

/// The frame at `at` of a slot as handed out, or `None` when it is skipped (bad header,
/// unsupported link, refused by the filter — each counted).
#[allow(clippy::too_many_arguments)] // disjoint borrows of the ring's fields
fn accept<'a>(
    slot: &'a [u8],
    h: &FrameHeader,
    at: usize,
    any: bool,
    snaplen: usize,
    scratch: &'a mut Vec<u8>,
    filter: &Filter,
    stats: &mut RingStats,
) -> Option<RawPacket<'a>> {
    let (link, data) = build(slot, h, at, any, snaplen, scratch, stats)?;
    if !filter.matches(link, data) {
        stats.filtered += 1;
        return None;
    }
    let orig_len = h
        .len
        .saturating_add(u32::try_from(data.len().saturating_sub(h.snap)).unwrap_or(0));
    if h.snap < usize::try_from(h.len).unwrap_or(usize::MAX) {
        stats.truncated += 1;
    }
    stats.frames += 1;
    stats.bytes += data.len() as u64;
    Some(RawPacket {
        ts: Timestamp::from_parts(i64::from(h.sec), h.nsec),
        link,
        data,
        orig_len,
    })
}

fn check(cfg: &RingConfig) -> Result<(), CaptureError> {
    let bad = |m: String| Err(CaptureError::Config(m));
    if cfg.interface.is_empty() || cfg.interface.len() > 15 {
        return bad(format!(
            "interface name `{}` must have 1 to 15 bytes",
            cfg.interface
        ));
    }
    if cfg.block_size < 4096 || !cfg.block_size.is_multiple_of(4096) {
        return bad(format!(
            "block size {} is not a multiple of 4096",
            cfg.block_size
        ));
    }
    if cfg.block_count == 0 {
        return bad("block count must be at least 1".into());
    }
    if cfg.frame_size < 64 || !cfg.frame_size.is_multiple_of(16) || cfg.frame_size > cfg.block_size
    {
        return bad(format!(
            "frame size {} must be a multiple of 16, 64..=block size",
            cfg.frame_size
        ));
    }
    if cfg.layout == Layout::Frames && cfg.frame_size < FRAME_OVERHEAD + 64 {
        return bad(format!(
            "frame size {} leaves less than 64 bytes per frame (the V2 header takes {FRAME_OVERHEAD})",
            cfg.frame_size
        ));
    }
    if cfg.snaplen < 64 {
        return bad(format!("snap length {} is below 64", cfg.snaplen));
    }
    if cfg.promiscuous && cfg.interface == "any" {
        return bad("promiscuous mode is not possible on `any`: list the interfaces".into());
    }
    Ok(())
}

fn ne32(d: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(d.get(at..at + 4)?.try_into().ok()?))
}
fn ne16(d: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(d.get(at..at + 2)?.try_into().ok()?))
}

/// `tpacket_block_desc`: number of packets and offset of the first.
fn block_header(b: &[u8]) -> Option<Cursor> {
    let num = ne32(b, 12)?;
    let first = usize::try_from(ne32(b, 16)?).ok()?;
    Some(Cursor {
        remaining: num,
        offset: first,
    })
}

/// The fields of `tpacket3_hdr` + `sockaddr_ll` a frame needs.
struct FrameHeader {
    next_offset: usize,
    sec: u32,
    nsec: u32,
    snap: usize,
    len: u32,
    status: u32,
    mac: usize,
    vlan_tci: u16,
    vlan_tpid: u16,
    protocol: [u8; 2],
    ifindex: u32,
    hatype: u16,
    pkttype: u8,
    halen: u8,
    addr: [u8; 8],
}

fn frame_header(b: &[u8], at: usize) -> Option<FrameHeader> {
    let h = b.get(at..at.checked_add(HDR_LEN + 20)?)?;
    let sll = h.get(HDR_LEN..)?;
    Some(FrameHeader {
        next_offset: usize::try_from(ne32(h, 0)?).ok()?,
        sec: ne32(h, 4)?,
        nsec: ne32(h, 8)?,
        snap: usize::try_from(ne32(h, 12)?).ok()?,
        len: ne32(h, 16)?,
        status: ne32(h, 20)?,
        mac: usize::from(ne16(h, 24)?),
        vlan_tci: u16::try_from(ne32(h, 32)? & 0xffff).ok()?,
        vlan_tpid: ne16(h, 36)?,
        protocol: sll.get(2..4)?.try_into().ok()?,
        ifindex: ne32(sll, 4)?,
        hatype: ne16(sll, 8)?,
        pkttype: *sll.get(10)?,
        halen: *sll.get(11)?,
        addr: sll.get(12..20)?.try_into().ok()?,
    })
}

/// `tpacket2_hdr` + `sockaddr_ll` at the start of a V2 frame slot.
fn frame_header_v2(b: &[u8]) -> Option<FrameHeader> {
    let h = b.get(..HDR2_LEN + 20)?;
    let sll = h.get(HDR2_LEN..)?;
    Some(FrameHeader {
        next_offset: 0,
        status: ne32(h, 0)?,
        len: ne32(h, 4)?,
        snap: usize::try_from(ne32(h, 8)?).ok()?,
        mac: usize::from(ne16(h, 12)?),
        sec: ne32(h, 16)?,
        nsec: ne32(h, 20)?,
        vlan_tci: ne16(h, 24)?,
        vlan_tpid: ne16(h, 26)?,
        protocol: sll.get(2..4)?.try_into().ok()?,
        ifindex: ne32(sll, 4)?,
        hatype: ne16(sll, 8)?,
        pkttype: *sll.get(10)?,
        halen: *sll.get(11)?,
        addr: sll.get(12..20)?.try_into().ok()?,
    })
}

/// ARPHRD types whose frames start with an Ethernet header, and those that carry bare IP.
fn link_of(hatype: u16) -> Option<LinkType> {
    match hatype {
        1 | 772 => Some(LinkType::ETHERNET), // ARPHRD_ETHER, ARPHRD_LOOPBACK
        // ARPHRD_NONE, _RAWIP, _TUNNEL, _TUNNEL6, _SIT, _IPGRE, _IP6GRE
        65534 | 519 | 768 | 769 | 776 | 778 | 823 => Some(LinkType::RAW),
        _ => None,
    }
}

/// The frame as handed out: straight from the block, or copied into `scratch` when a VLAN
/// tag must be restored or an SLL2 header built. `None` = skipped (counted).
fn build<'a>(
    block: &'a [u8],
    h: &FrameHeader,
    at: usize,
    any: bool,
    snaplen: usize,
    scratch: &'a mut Vec<u8>,
    stats: &mut RingStats,
) -> Option<(LinkType, &'a [u8])> {
    let start = at.checked_add(h.mac)?;
    let Some(raw) = start
        .checked_add(h.snap)
        .and_then(|end| block.get(start..end))
    else {
        stats.bad_blocks += 1;
        return None;
    };
    let raw = raw.get(..snaplen.min(raw.len())).unwrap_or(raw);
    // libpcap's rule: a tag is present when the flag says so or the TCI is non-zero (old
    // kernels never set the flag).
    let tagged = h.status & TP_STATUS_VLAN_VALID != 0 || h.vlan_tci != 0;
    let tpid = if h.status & TP_STATUS_VLAN_TPID_VALID != 0 && h.vlan_tpid != 0 {
        h.vlan_tpid
    } else {
        0x8100
    };
    if any {
        // SOCK_DGRAM: `raw` starts at the network header; build SLL2 from sockaddr_ll.
        scratch.clear();
        if tagged {
            scratch.extend_from_slice(&tpid.to_be_bytes());
        } else {
            scratch.extend_from_slice(&h.protocol);
        }
        scratch.extend_from_slice(&[0, 0]);
        scratch.extend_from_slice(&h.ifindex.to_be_bytes());
        scratch.extend_from_slice(&h.hatype.to_be_bytes());
        scratch.push(h.pkttype);
        scratch.push(h.halen);
        scratch.extend_from_slice(&h.addr);
        if tagged {
            scratch.extend_from_slice(&h.vlan_tci.to_be_bytes());
            scratch.extend_from_slice(&h.protocol);
            stats.vlan_restored += 1;
        }
        scratch.extend_from_slice(raw);
        return Some((LinkType::LINUX_SLL2, scratch.as_slice()));
    }
    let Some(link) = link_of(h.hatype) else {
        stats.unsupported_link += 1;
        return None;
    };
    if tagged && link == LinkType::ETHERNET {
        if let (Some(macs), Some(rest)) = (raw.get(..12), raw.get(12..)) {
            scratch.clear();
            scratch.extend_from_slice(macs);
            scratch.extend_from_slice(&tpid.to_be_bytes());
            scratch.extend_from_slice(&h.vlan_tci.to_be_bytes());
            scratch.extend_from_slice(rest);
            stats.vlan_restored += 1;
            return Some((link, scratch.as_slice()));
        }
    }
    Some((link, raw))
}
