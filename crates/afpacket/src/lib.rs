//! Live capture for vcontap on Linux: AF_PACKET sockets with memory-mapped TPACKET_V3
//! receive rings (or TPACKET_V2 frame rings when latency matters more than throughput,
//! [`Layout::Frames`]), PACKET_FANOUT (hash) so several rings share one interface, VLAN tags put
//! back into the frames the kernel stripped them from, the `any` device as cooked SLL2,
//! user-space filters (ports, networks, VLANs) and the kernel's drop counters.
//!
//! ```text
//!  Capture ──poll(max, f)──▶ Ring ─┬─ sys: socket, PACKET_RX_RING, mmap, poll(2)   (unsafe, one module)
//!  (PacketSource)            Ring ─┤   walk user-owned blocks → VLAN restore / SLL2 → Filter
//!                            …     └─▶ vcontap_wire::RawPacket (kernel timestamp, link type)
//! ```
//!
//! [`Capture`] implements [`vcontap_pipeline::PacketSource`]: `poll` never blocks; it
//! returns `Poll::Idle` when no ring has a block ready, and the driver then either sleeps
//! (as `vcontap_pipeline::run` does) or calls [`Capture::wait`], which sleeps in poll(2) on
//! every ring until traffic arrives or the timeout passes.
//!
//! Pure Rust over `libc` (no libpcap): every `unsafe` block lives in the private `sys`
//! module; the rest of the crate is safe code. [`Injector`] sends frames on an interface
//! (tests, benches, a traffic generator). See docs/capture.md.

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

pub mod bpf;
pub mod filter;
pub mod ring;
mod sys;

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::time::Duration;

use vcontap_pipeline::{PacketSource, PipelineError, Poll};
use vcontap_wire::RawPacket;

pub use filter::{Filter, FilterError};
pub use ring::{Fanout, Layout, Ring, RingConfig, RingStats};

/// Why capture could not start or continue.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// Bad configuration.
    #[error("capture: {0}")]
    Config(String),
    /// The interface does not exist (in the namespace the socket is opened in).
    #[error("capture: interface `{0}`: {1}")]
    Interface(String, #[source] std::io::Error),
    /// The network namespace could not be entered.
    #[error("capture: network namespace `{0}`: {1}")]
    Namespace(String, #[source] std::io::Error),
    /// A system call failed (EPERM: CAP_NET_RAW is missing).
    #[error("capture: {0}: {1}")]
    Os(&'static str, #[source] std::io::Error),
}

impl From<CaptureError> for PipelineError {
    fn from(e: CaptureError) -> Self {
        PipelineError::Config(e.to_string())
    }
}

/// Several rings (interfaces and/or fanout members) polled in turn.
#[derive(Debug)]
pub struct Capture {
    rings: Vec<Ring>,
    next: usize,
}

impl Capture {
    /// Opens one ring per configuration. Fails on the first that cannot be opened.
    pub fn open(cfgs: &[RingConfig]) -> Result<Capture, CaptureError> {
        if cfgs.is_empty() {
            return Err(CaptureError::Config("no interface to capture on".into()));
        }
        let rings = cfgs.iter().map(Ring::open).collect::<Result<Vec<_>, _>>()?;
        Ok(Capture { rings, next: 0 })
    }

    /// `count` rings on one interface joined in fanout group `group` (hash of the flow,
    /// IP fragments reassembled for the hash): each frame reaches exactly one of them.
    pub fn fanout(base: &RingConfig, count: usize, group: u16) -> Result<Capture, CaptureError> {
        let mut cfg = base.clone();
        cfg.fanout = Some(Fanout {
            group,
            defrag: true,
        });
        Capture::open(&vec![cfg; count.max(1)])
    }

    /// Builds a capture from rings opened elsewhere.
    pub fn from_rings(rings: Vec<Ring>) -> Capture {
        Capture { rings, next: 0 }
    }

    /// The rings.
    pub fn rings(&self) -> &[Ring] {
        &self.rings
    }

    /// Splits the capture into its rings (one per worker thread, each a `Capture` again).
    pub fn into_rings(self) -> Vec<Ring> {
        self.rings
    }

    /// Reads and accumulates every ring's counters (see [`Ring::stats`]).
    pub fn stats(&mut self) -> Result<Vec<RingStats>, CaptureError> {
        self.rings.iter_mut().map(Ring::stats).collect()
    }

    /// Sleeps until some ring has a block ready or `timeout` passes (poll(2) on all rings;
    /// returns at once when a block is already waiting). `Ok(true)` when something is ready.
    pub fn wait(&self, timeout: Duration) -> Result<bool, CaptureError> {
        if self.rings.iter().any(Ring::ready) {
            return Ok(true);
        }
        let fds: Vec<RawFd> = self.rings.iter().map(Ring::raw_fd).collect();
        let n = sys::poll_in(&fds, timeout).map_err(|e| CaptureError::Os("poll", e))?;
        Ok(n > 0 || self.rings.iter().any(Ring::ready))
    }
}

impl PacketSource for Capture {
    /// Hands up to `max` frames from the rings, starting with the ring after the one that
    /// went first last time (so a busy ring cannot starve the others). Never blocks:
    /// `Poll::Idle` when no block is ready. A live capture never returns `Poll::End`.
    fn poll<F>(&mut self, max: usize, mut f: F) -> Result<Poll, PipelineError>
    where
        F: FnMut(&RawPacket<'_>) -> Result<(), PipelineError>,
    {
        let count = self.rings.len();
        let mut n = 0;
        for k in 0..count {
            if n >= max {
                break;
            }
            let i = (self.next + k) % count;
            if let Some(r) = self.rings.get_mut(i) {
                n += r.poll(max - n, &mut f)?;
            }
        }
        self.next = (self.next + 1) % count.max(1);
        Ok(if n == 0 { Poll::Idle } else { Poll::Packets(n) })
    }
}

/// A raw AF_PACKET send socket bound to one interface: writes complete link-layer frames.
#[derive(Debug)]
pub struct Injector {
    fd: OwnedFd,
}

impl Injector {
    /// Opens a sender on `interface`, inside network namespace `netns` when given.
    pub fn open(interface: &str, netns: Option<PathBuf>) -> Result<Injector, CaptureError> {
        let iface = interface.to_string();
        let open = move || -> Result<Injector, CaptureError> {
            let idx =
                sys::ifindex(&iface).map_err(|e| CaptureError::Interface(iface.clone(), e))?;
            let fd = sys::packet_socket(false).map_err(|e| CaptureError::Os("socket", e))?;
            // Protocol 0 in bind: this socket sends and never receives.
            sys::bind(&fd, idx, false).map_err(|e| CaptureError::Os("bind", e))?;
            Ok(Injector { fd })
        };
        match netns {
            None => open(),
            Some(ns) => std::thread::spawn(move || {
                sys::enter_netns(&ns)
                    .map_err(|e| CaptureError::Namespace(ns.display().to_string(), e))?;
                open()
            })
            .join()
            .map_err(|_| CaptureError::Config("namespace thread panicked".into()))?,
        }
    }

    /// Sends one frame. `Ok(false)` when the kernel had no buffer (retry later).
    pub fn send(&self, frame: &[u8]) -> Result<bool, CaptureError> {
        sys::send(&self.fd, frame).map_err(|e| CaptureError::Os("send", e))
    }

    /// The socket.
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
