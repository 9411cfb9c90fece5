//! Every system call of the crate, and the only module allowed to use `unsafe`: the
//! AF_PACKET socket (options, bind, fanout, statistics), the memory-mapped receive ring in
//! either layout — TPACKET_V3 blocks or TPACKET_V2 fixed frames — as *slots* (acquire/release
//! access to a slot's status word, the slot's bytes as a slice),
//! poll(2) over several sockets, a raw send socket, and entering a network namespace.
//!
//! Built directly on `libc` (pure Rust bindings, no C build): the crates that wrap
//! AF_PACKET are either not mmap'ed or dormant (see ../shared/docs/live.md §2.9). The
//! kernel structures are declared here with `#[repr(C)]` rather than taken from `libc`,
//! whose Linux UAPI module moved between 0.2 releases (`TPACKET_V3` is an enum variant
//! there); their layout is fixed ABI (include/uapi/linux/if_packet.h).
//!
//! Everything above this module is safe code: frames are parsed from the `&[u8]` a block
//! returns, with bounds-checked reads.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// `SOL_PACKET` option numbers and constants (include/uapi/linux/if_packet.h).
const SOL_PACKET: libc::c_int = 263;
const PACKET_ADD_MEMBERSHIP: libc::c_int = 1;
const PACKET_RX_RING: libc::c_int = 5;
const PACKET_STATISTICS: libc::c_int = 6;
const PACKET_VERSION: libc::c_int = 10;
const PACKET_FANOUT: libc::c_int = 18;
const TPACKET_V2: libc::c_int = 1;
const TPACKET_V3: libc::c_int = 2;
const PACKET_MR_PROMISC: u16 = 1;
/// `ETH_P_ALL`: every protocol.
const ETH_P_ALL: u16 = 0x0003;
/// A block owned by user space.
pub(crate) const TP_STATUS_USER: u32 = 1;
/// Hands a block back.
const TP_STATUS_KERNEL: u32 = 0;
/// Offset of `hdr.bh1.block_status` in `tpacket_block_desc` (V3 slots = blocks).
const BLOCK_STATUS_OFFSET: usize = 8;
/// Offset of `tp_status` in `tpacket2_hdr` (V2 slots = frames).
const FRAME_STATUS_OFFSET: usize = 0;
/// BPF: `ret #k`.
const BPF_RET_K: u16 = 0x06;

/// `struct tpacket_req3`.
#[repr(C)]
struct TpacketReq3 {
    tp_block_size: u32,
    tp_block_nr: u32,
    tp_frame_size: u32,
    tp_frame_nr: u32,
    tp_retire_blk_tov: u32,
    tp_sizeof_priv: u32,
    tp_feature_req_word: u32,
}

/// `struct tpacket_req` (TPACKET_V2).
#[repr(C)]
struct TpacketReq {
    tp_block_size: u32,
    tp_block_nr: u32,
    tp_frame_size: u32,
    tp_frame_nr: u32,
}

/// `struct tpacket_stats_v3` (a V2 socket fills the first two words only).
#[repr(C)]
#[derive(Default)]
struct TpacketStatsV3 {
    tp_packets: u32,
    tp_drops: u32,
    tp_freeze_q_cnt: u32,
}

/// `struct packet_mreq`.
#[repr(C)]
struct PacketMreq {
    mr_ifindex: libc::c_int,
    mr_type: u16,
    mr_alen: u16,
    mr_address: [u8; 8],
}

/// `struct sock_filter` / `struct sock_fprog`.
#[repr(C)]
struct SockFilter {
    code: u16,
    jt: u8,
    jf: u8,
    k: u32,
}
#[repr(C)]
struct SockFprog {
    len: u16,
    filter: *const SockFilter,
}

/// Ring geometry as handed to `PACKET_RX_RING`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RingGeometry {
    pub block_size: u32,
    pub block_count: u32,
    pub frame_size: u32,
    pub block_timeout_ms: u32,
    /// TPACKET_V2 (fixed frames, each handed over on its own) instead of V3 blocks.
    pub frames: bool,
}

/// Kernel counters of one `PACKET_STATISTICS` read (they reset on every read).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct KernelStats {
    pub packets: u32,
    pub drops: u32,
    pub freezes: u32,
}

fn last_error(op: &'static str) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("{op}: {e}"))
}

fn cvt(op: &'static str, rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(last_error(op))
    } else {
        Ok(rc)
    }
}

fn setsockopt<T>(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    val: &T,
    op: &'static str,
) -> io::Result<()> {
    let len = libc::socklen_t::try_from(std::mem::size_of::<T>())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, op))?;
    // SAFETY: `val` is a live, properly aligned `T` for the duration of the call and `len`
    // is its exact size; the kernel only reads `len` bytes from it.
    let rc = unsafe { libc::setsockopt(fd, level, name, (val as *const T).cast(), len) };
    cvt(op, rc).map(|_| ())
}

/// Opens an `AF_PACKET` socket (`SOCK_RAW` or `SOCK_DGRAM`) with protocol 0, so it receives
/// nothing until [`bind`] names the protocol: the ring is ready before traffic arrives.
pub(crate) fn packet_socket(dgram: bool) -> io::Result<OwnedFd> {
    let ty = if dgram {
        libc::SOCK_DGRAM
    } else {
        libc::SOCK_RAW
    };
    // SAFETY: plain system call with constant arguments; no pointers.
    let fd = unsafe { libc::socket(libc::AF_PACKET, ty | libc::SOCK_CLOEXEC, 0) };
    let fd = cvt("socket(AF_PACKET)", fd)?;
    // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The index of interface `name` in the calling thread's network namespace.
pub(crate) fn ifindex(name: &str) -> io::Result<u32> {
    let c = CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface name holds a NUL"))?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        Err(last_error("if_nametoindex"))
    } else {
        Ok(idx)
    }
}

/// `PACKET_VERSION`: TPACKET_V2 when `frames`, else TPACKET_V3.
pub(crate) fn set_tpacket_version(fd: &OwnedFd, frames: bool) -> io::Result<()> {
    setsockopt(
        fd.as_raw_fd(),
        SOL_PACKET,
        PACKET_VERSION,
        if frames { &TPACKET_V2 } else { &TPACKET_V3 },
        "PACKET_VERSION",
    )
}

/// Attaches the one-instruction classic BPF program `ret #snaplen`: the kernel copies at
/// most `snaplen` bytes of each frame into the ring (this is how libpcap applies a snap
/// length to a TPACKET_V3 ring, whose frame size does not cut packets).
pub(crate) fn set_snaplen(fd: &OwnedFd, snaplen: u32) -> io::Result<()> {
    let prog = [SockFilter {
        code: BPF_RET_K,
        jt: 0,
        jf: 0,
        k: snaplen,
    }];
    let fprog = SockFprog {
        len: 1,
        filter: prog.as_ptr(),
    };
    // `prog` outlives the setsockopt inside (the kernel copies the program).
    setsockopt(
        fd.as_raw_fd(),
        libc::SOL_SOCKET,
        libc::SO_ATTACH_FILTER,
        &fprog,
        "SO_ATTACH_FILTER",
    )
}

/// Attaches a classic BPF program (compiled by libpcap, see `bpf.rs`); the kernel checks
/// it (`sk_chk_filter`) and refuses an invalid one with EINVAL.
pub(crate) fn attach_filter(fd: &OwnedFd, insns: &[crate::bpf::Insn]) -> io::Result<()> {
    let prog: Vec<SockFilter> = insns
        .iter()
        .map(|i| SockFilter {
            code: i.code,
            jt: i.jt,
            jf: i.jf,
            k: i.k,
        })
        .collect();
    let len =
        u16::try_from(prog.len()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let fprog = SockFprog {
        len,
        filter: prog.as_ptr(),
    };
    // `prog` outlives the setsockopt inside (the kernel copies the program).
    setsockopt(
        fd.as_raw_fd(),
        libc::SOL_SOCKET,
        libc::SO_ATTACH_FILTER,
        &fprog,
        "SO_ATTACH_FILTER",
    )
}

/// Binds to `ifindex` (0 = every interface), receiving every protocol when `receive`,
/// none otherwise (a send-only socket).
pub(crate) fn bind(fd: &OwnedFd, ifindex: u32, receive: bool) -> io::Result<()> {
    // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = if receive { ETH_P_ALL.to_be() } else { 0 };
    sll.sll_ifindex = i32::try_from(ifindex)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "ifindex"))?;
    let len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    // SAFETY: `sll` is a valid sockaddr_ll and `len` its size.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            len,
        )
    };
    cvt("bind(AF_PACKET)", rc).map(|_| ())
}

/// Promiscuous mode through a packet-socket membership (reference-counted by the kernel,
/// dropped when the socket closes: nothing to undo on exit).
pub(crate) fn add_promisc(fd: &OwnedFd, ifindex: u32) -> io::Result<()> {
    let mreq = PacketMreq {
        mr_ifindex: i32::try_from(ifindex)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "ifindex"))?,
        mr_type: PACKET_MR_PROMISC,
        mr_alen: 0,
        mr_address: [0; 8],
    };
    setsockopt(
        fd.as_raw_fd(),
        SOL_PACKET,
        PACKET_ADD_MEMBERSHIP,
        &mreq,
        "PACKET_ADD_MEMBERSHIP",
    )
}

/// Joins fanout group `group` with mode and flags `type_flags` (`PACKET_FANOUT_*`).
pub(crate) fn join_fanout(fd: &OwnedFd, group: u16, type_flags: u16) -> io::Result<()> {
    let arg: libc::c_int = libc::c_int::from(group) | (libc::c_int::from(type_flags) << 16);
    setsockopt(
        fd.as_raw_fd(),
        SOL_PACKET,
        PACKET_FANOUT,
        &arg,
        "PACKET_FANOUT",
    )
}

/// Reads (and thereby resets) the socket's `PACKET_STATISTICS`.
pub(crate) fn read_stats(fd: &OwnedFd) -> io::Result<KernelStats> {
    let mut st = TpacketStatsV3::default();
    let mut len = std::mem::size_of::<TpacketStatsV3>() as libc::socklen_t;
    // SAFETY: `st` is a writable TpacketStatsV3 and `len` holds its size; the kernel writes
    // at most `len` bytes and updates `len`.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            SOL_PACKET,
            PACKET_STATISTICS,
            (&mut st as *mut TpacketStatsV3).cast(),
            &mut len,
        )
    };
    cvt("getsockopt(PACKET_STATISTICS)", rc)?;
    Ok(KernelStats {
        packets: st.tp_packets,
        drops: st.tp_drops,
        freezes: st.tp_freeze_q_cnt,
    })
}

/// poll(2) for input on `fds`; returns how many are ready (0 on timeout or `EINTR`).
pub(crate) fn poll_in(fds: &[RawFd], timeout: Duration) -> io::Result<usize> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN | libc::POLLERR,
            revents: 0,
        })
        .collect();
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: `pfds` is a valid, writable array of `pfds.len()` pollfd structures.
    let rc = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(0);
        }
        return Err(last_error("poll"));
    }
    Ok(usize::try_from(rc).unwrap_or(0))
}

/// Sends one frame on a socket bound to an interface. `Ok(false)` when the kernel had no
/// buffer for it (`ENOBUFS`/`EAGAIN`): the caller may retry.
pub(crate) fn send(fd: &OwnedFd, frame: &[u8]) -> io::Result<bool> {
    // SAFETY: `frame` is a valid readable buffer of `frame.len()` bytes.
    let rc = unsafe { libc::send(fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENOBUFS) | Some(libc::EAGAIN) => Ok(false),
            _ => Err(last_error("send(AF_PACKET)")),
        };
    }
    Ok(true)
}

/// Moves the calling thread into the network namespace at `path` (e.g. `/run/netns/NAME`).
/// Only this thread changes namespace; sockets it creates stay in that namespace for life.
pub(crate) fn enter_netns(path: &Path) -> io::Result<()> {
    let f = File::open(path)?;
    // SAFETY: `f` is an open namespace file descriptor for the duration of the call.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    cvt("setns(CLONE_NEWNET)", rc).map(|_| ())
}

/// A receive ring mapped into this process, seen as `slot_count` slots that user space and
/// the kernel hand each other through a status word: V3 blocks (status in the block
/// descriptor) or V2 frames (status in `tpacket2_hdr`; frames never straddle blocks).
pub(crate) struct MappedRing {
    base: NonNull<u8>,
    len: usize,
    block_size: usize,
    slot_size: usize,
    slots_per_block: usize,
    slot_count: usize,
    status_offset: usize,
}

// SAFETY: the mapping is plain shared memory owned by this value; nothing in it is tied
// to the creating thread, and `&self` methods only read (atomically for the status word).
unsafe impl Send for MappedRing {}

impl MappedRing {
    /// Sets `PACKET_RX_RING` on `fd` and maps it.
    pub(crate) fn new(fd: &OwnedFd, g: RingGeometry) -> io::Result<Self> {
        let frames_per_block = g.block_size / g.frame_size.max(1);
        let frame_nr = frames_per_block.saturating_mul(g.block_count);
        if g.frames {
            let req = TpacketReq {
                tp_block_size: g.block_size,
                tp_block_nr: g.block_count,
                tp_frame_size: g.frame_size,
                tp_frame_nr: frame_nr,
            };
            setsockopt(
                fd.as_raw_fd(),
                SOL_PACKET,
                PACKET_RX_RING,
                &req,
                "PACKET_RX_RING",
            )?;
        } else {
            let req = TpacketReq3 {
                tp_block_size: g.block_size,
                tp_block_nr: g.block_count,
                tp_frame_size: g.frame_size,
                tp_frame_nr: frame_nr,
                tp_retire_blk_tov: g.block_timeout_ms,
                tp_sizeof_priv: 0,
                tp_feature_req_word: 0,
            };
            setsockopt(
                fd.as_raw_fd(),
                SOL_PACKET,
                PACKET_RX_RING,
                &req,
                "PACKET_RX_RING",
            )?;
        }
        let block_size =
            usize::try_from(g.block_size).map_err(|_| io::Error::other("block size"))?;
        let block_count =
            usize::try_from(g.block_count).map_err(|_| io::Error::other("block count"))?;
        let frame_size =
            usize::try_from(g.frame_size).map_err(|_| io::Error::other("frame size"))?;
        let (slot_size, slots_per_block, status_offset) = if g.frames {
            (
                frame_size,
                usize::try_from(frames_per_block).map_err(|_| io::Error::other("frames"))?,
                FRAME_STATUS_OFFSET,
            )
        } else {
            (block_size, 1, BLOCK_STATUS_OFFSET)
        };
        if slots_per_block == 0 || slot_size == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "frame size larger than the block",
            ));
        }
        let len = block_size
            .checked_mul(block_count)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "ring size overflows"))?;
        // SAFETY: a fresh shared mapping of the socket's ring (`len` bytes, as configured
        // just above); the kernel validates the length against the ring.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(last_error("mmap(PACKET_RX_RING)"));
        }
        let base =
            NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned NULL"))?;
        Ok(MappedRing {
            base,
            len,
            block_size,
            slot_size,
            slots_per_block,
            slot_count: slots_per_block.saturating_mul(block_count),
            status_offset,
        })
    }

    /// Number of slots (V3: blocks, V2: frames).
    pub(crate) fn slot_count(&self) -> usize {
        self.slot_count
    }

    /// Byte offset of slot `i` (`i < slot_count`, so it lies inside the mapping).
    fn slot_offset(&self, i: usize) -> usize {
        (i / self.slots_per_block) * self.block_size + (i % self.slots_per_block) * self.slot_size
    }

    fn status_word(&self, i: usize) -> Option<&AtomicU32> {
        if i >= self.slot_count {
            return None;
        }
        // SAFETY: `i < slot_count`, so the slot (and its status word, at offset 0 or 8 of
        // a slot at least 64 bytes long) is inside the mapping; blocks start on page
        // boundaries and frame sizes are multiples of 16 (checked by the ring), so the
        // word is 4-byte aligned; it is shared with the kernel, hence only accessed
        // atomically.
        Some(unsafe {
            &*self
                .base
                .as_ptr()
                .add(self.slot_offset(i) + self.status_offset)
                .cast::<AtomicU32>()
        })
    }

    /// Whether slot `i` is owned by user space (acquire: the kernel's writes to the slot
    /// happen-before this load observes `TP_STATUS_USER`).
    pub(crate) fn is_user(&self, i: usize) -> bool {
        self.status_word(i)
            .is_some_and(|w| w.load(Ordering::Acquire) & TP_STATUS_USER != 0)
    }

    /// The bytes of slot `i` if it is owned by user space.
    pub(crate) fn user_slot(&self, i: usize) -> Option<&[u8]> {
        if !self.is_user(i) {
            return None;
        }
        // SAFETY: `is_user` checked `i < slot_count` and that the kernel handed the slot
        // over (acquire); slots lie inside the mapping and do not overlap; the kernel does
        // not write to a user-owned slot until `release`, which takes `&mut self`, so no
        // slice from `&self` can outlive the hand-back.
        Some(unsafe {
            std::slice::from_raw_parts(self.base.as_ptr().add(self.slot_offset(i)), self.slot_size)
        })
    }

    /// Hands slot `i` back to the kernel (release: our reads happen-before its reuse).
    pub(crate) fn release(&mut self, i: usize) {
        if let Some(w) = self.status_word(i) {
            w.store(TP_STATUS_KERNEL, Ordering::Release);
        }
    }
}

impl Drop for MappedRing {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` are exactly the mapping made in `new`, unmapped once here.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.len);
        }
    }
}
