//! Packet sources: where frames come from. Capture files now; AF_PACKET rings and HEP
//! listeners implement the same [`PacketSource`] later.
//!
//! A source hands out frames in bursts through a visitor, because the frames borrow the
//! source's buffer (a file reader's record buffer, a ring block) and a burst is the natural
//! unit of a ring. [`Poll::Idle`] tells a live driver to run timers and wait.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vcontap_wire::{PcapReader, RawPacket, Timestamp};

use crate::PipelineError;

/// Frames read per [`PacketSource::poll`] burst.
pub const BURST: usize = 256;

/// What a poll produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Poll {
    /// This many frames were handed to the visitor.
    Packets(usize),
    /// Nothing now; try again later (live sources).
    Idle,
    /// The source is exhausted.
    End,
}

/// A source of captured frames.
pub trait PacketSource {
    /// Hands up to `max` frames to `f`. An error from `f` stops the burst and is returned.
    /// Generic over `f` so the per-frame call inlines into the source's loop (the hottest
    /// loop of a replay).
    fn poll<F>(&mut self, max: usize, f: F) -> Result<Poll, PipelineError>
    where
        F: FnMut(&RawPacket<'_>) -> Result<(), PipelineError>;
}

/// Replay pacing of a file source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// As fast as possible.
    Max,
    /// Frames are handed out at their capture-time spacing.
    Realtime,
}

/// One capture file that could not be read at all, and why.
#[derive(Debug, Clone)]
pub struct Unreadable {
    /// The file.
    pub path: PathBuf,
    /// Why.
    pub reason: String,
}

/// pcap/pcapng files read one after the other. A file that is not a capture is skipped
/// (logged, listed in [`PcapFiles::unreadable`]); a file that ends with a damaged record
/// keeps what was read before it.
pub struct PcapFiles {
    paths: Vec<PathBuf>,
    next: usize,
    current: Option<(PathBuf, PcapReader<File>)>,
    pace: Pace,
    pace_anchor: Option<(Timestamp, Instant)>,
    unreadable: Vec<Unreadable>,
    opened: usize,
    truncated: usize,
}

impl PcapFiles {
    /// A source over `paths`, in order.
    pub fn new(paths: &[PathBuf], pace: Pace) -> Self {
        PcapFiles {
            paths: paths.to_vec(),
            next: 0,
            current: None,
            pace,
            pace_anchor: None,
            unreadable: Vec::new(),
            opened: 0,
            truncated: 0,
        }
    }

    /// Files that were not captures (or could not be opened).
    pub fn unreadable(&self) -> &[Unreadable] {
        &self.unreadable
    }

    /// Files opened as captures.
    pub fn opened(&self) -> usize {
        self.opened
    }

    /// Files that ended with an unreadable record.
    pub fn truncated(&self) -> usize {
        self.truncated
    }

    fn open_next(&mut self) -> bool {
        while let Some(path) = self.paths.get(self.next).cloned() {
            self.next += 1;
            // The reader is its own buffer: a BufReader would copy every byte twice.
            let reader = File::open(&path)
                .map_err(|e| e.to_string())
                .and_then(|f| PcapReader::new(f).map_err(|e| e.to_string()));
            match reader {
                Ok(r) => {
                    self.opened += 1;
                    self.current = Some((path, r));
                    return true;
                }
                Err(reason) => {
                    tracing::warn!(file = %path.display(), error = %reason, "Skipping a file that is not a capture.");
                    self.unreadable.push(Unreadable { path, reason });
                }
            }
        }
        false
    }
}

/// Sleeps until capture time `ts` is due on the wall clock (realtime pacing).
fn pace_wait(anchor: &mut Option<(Timestamp, Instant)>, ts: Timestamp) {
    {
        let (t0, w0) = *anchor.get_or_insert((ts, Instant::now()));
        let due =
            Duration::from_nanos(u64::try_from(ts.nanos().saturating_sub(t0.nanos())).unwrap_or(0));
        let el = w0.elapsed();
        if due > el {
            std::thread::sleep(due - el);
        }
    }
}

impl PacketSource for PcapFiles {
    fn poll<F>(&mut self, max: usize, mut f: F) -> Result<Poll, PipelineError>
    where
        F: FnMut(&RawPacket<'_>) -> Result<(), PipelineError>,
    {
        if self.current.is_none() && !self.open_next() {
            return Ok(Poll::End);
        }
        let mut n = 0;
        let mut ended = false;
        let pacing = self.pace == Pace::Realtime;
        while n < max {
            let Some((path, reader)) = self.current.as_mut() else {
                break;
            };
            match reader.next_packet() {
                Ok(Some(p)) => {
                    if pacing {
                        pace_wait(&mut self.pace_anchor, p.ts);
                    }
                    f(&p)?;
                    n += 1;
                }
                Ok(None) => {
                    ended = true;
                    break;
                }
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "Capture ends with an unreadable record.");
                    self.truncated += 1;
                    ended = true;
                    break;
                }
            }
        }
        if ended {
            self.current = None;
        }
        Ok(Poll::Packets(n))
    }
}

/// Whether `p` exists and is a regular file (for start-up checks with a clear message).
pub fn check_file(p: &Path) -> Result<(), PipelineError> {
    if p.is_file() {
        Ok(())
    } else {
        Err(PipelineError::Config(format!(
            "capture {} does not exist or is not a file",
            p.display()
        )))
    }
}
