//! Where recording segments go: the [`MediaStore`] abstraction, the local-files store, and
//! the per-shard [`MediaWriter`] (a writer thread and a hasher thread) that keeps file I/O
//! and SHA-512 off the engine thread.
//!
//! The engine streams decoded PCM ([`vcontap_engine::Output::Audio`]) and never buffers a
//! whole recording; a store receives it in three steps, each on the thread that suits it:
//!
//! 1. [`MediaStore::open`] and [`SegmentWriter::write`] on the writer thread (sequential
//!    appends, buffered);
//! 2. [`SegmentWriter::finish`] on the writer thread (close the file, patch the header);
//! 3. [`FinishedSegment::complete`] on the hasher thread: hash the exact bytes for
//!    `content_hash` and, for a remote store, upload (object storage arrives with the
//!    stores issue and plugs in here).
//!
//! Bounded queues (see the crate docs for the table): shard → writer [`MEDIA_QUEUE`]
//! messages (**block**, while the shard keeps collecting answers so nothing deadlocks);
//! writer → hasher [`MEDIA_QUEUE`] finished segments (**block**: the hasher never waits on
//! anything); hasher → shard: one answer per closed segment (never blocks: bounded by the
//! open segments, one per recorded call).
//!
//! `hound` writes the WAV header with placeholder sizes and patches them on finalize, so
//! the hash is taken by reading the closed file back from the page cache.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use sha2::{Digest, Sha512};
use vcontap_engine::{SegmentId, StoredSegment};

use crate::PipelineError;

/// Media messages queued from a shard to its writer thread.
pub const MEDIA_QUEUE: usize = 1024;

/// What a store needs to know to start a segment.
#[derive(Debug, Clone)]
pub struct SegmentMeta {
    /// The segment.
    pub segment: SegmentId,
    /// The call's vCon uuid.
    pub uuid: Arc<str>,
    /// 0, 1, 2… within the call.
    pub index: u32,
    /// Sample rate.
    pub rate: u32,
    /// 2 (caller left, callee right) or 1.
    pub channels: u16,
}

/// A place recordings are written to. One instance is shared by every shard's writer.
pub trait MediaStore: Send + Sync + 'static {
    /// Starts a segment.
    fn open(&self, meta: &SegmentMeta) -> std::io::Result<Box<dyn SegmentWriter>>;
}

/// An open segment: 16-bit PCM appended as the engine hands it out.
pub trait SegmentWriter: Send {
    /// Appends interleaved samples.
    fn write(&mut self, samples: &[i16]) -> std::io::Result<()>;
    /// Closes the segment; the result is completed on the hasher thread.
    fn finish(self: Box<Self>) -> std::io::Result<Box<dyn FinishedSegment>>;
}

/// A closed segment not yet hashed (or uploaded).
pub trait FinishedSegment: Send {
    /// Hashes (and, for remote stores, uploads) the segment; runs on the hasher thread.
    fn complete(self: Box<Self>) -> std::io::Result<StoredSegment>;
}

/// Recordings as WAV files in one directory: `<uuid>-NNN.wav`, with `file://` URLs or
/// `<base_url>/<file>`.
#[derive(Debug, Clone)]
pub struct LocalFiles {
    dir: PathBuf,
    base_url: Arc<str>,
}

impl LocalFiles {
    /// A store writing under `dir` (created if missing).
    pub fn new(dir: &Path, base_url: Option<&str>) -> Result<Self, PipelineError> {
        let io = |e| PipelineError::Io(dir.display().to_string(), e);
        std::fs::create_dir_all(dir).map_err(io)?;
        let abs = std::fs::canonicalize(dir).map_err(io)?;
        let base_url = match base_url {
            Some(b) => b.trim_end_matches('/').to_string(),
            None => format!("file://{}", abs.display()),
        };
        Ok(LocalFiles {
            dir: abs,
            base_url: base_url.into(),
        })
    }

    /// The absolute directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

type Wav = hound::WavWriter<BufWriter<File>>;

fn hound_io(e: hound::Error) -> std::io::Error {
    match e {
        hound::Error::IoError(e) => e,
        other => std::io::Error::other(other.to_string()),
    }
}

impl MediaStore for LocalFiles {
    fn open(&self, m: &SegmentMeta) -> std::io::Result<Box<dyn SegmentWriter>> {
        let filename = format!("{}-{:03}.wav", m.uuid, m.index);
        let path = self.dir.join(&filename);
        let spec = hound::WavSpec {
            channels: m.channels,
            sample_rate: m.rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let f = File::create(&path)?;
        // One buffer per open segment (one per recorded call): 32 KiB = 1 s of 8 kHz
        // stereo, so each audio chunk from the engine is about one write.
        let w = hound::WavWriter::new(BufWriter::with_capacity(32 * 1024, f), spec)
            .map_err(hound_io)?;
        Ok(Box::new(LocalSegment {
            wav: w,
            path,
            url: format!("{}/{}", self.base_url, filename),
            filename,
        }))
    }
}

struct LocalSegment {
    wav: Wav,
    path: PathBuf,
    url: String,
    filename: String,
}

impl SegmentWriter for LocalSegment {
    fn write(&mut self, samples: &[i16]) -> std::io::Result<()> {
        let n = u32::try_from(samples.len()).unwrap_or(u32::MAX);
        let mut w = self.wav.get_i16_writer(n);
        for s in samples.iter().take(n as usize) {
            w.write_sample(*s);
        }
        w.flush().map_err(hound_io)
    }

    fn finish(self: Box<Self>) -> std::io::Result<Box<dyn FinishedSegment>> {
        let LocalSegment {
            wav,
            path,
            url,
            filename,
        } = *self;
        wav.finalize().map_err(hound_io)?;
        Ok(Box::new(LocalFinished {
            path,
            url,
            filename,
        }))
    }
}

struct LocalFinished {
    path: PathBuf,
    url: String,
    filename: String,
}

impl FinishedSegment for LocalFinished {
    fn complete(self: Box<Self>) -> std::io::Result<StoredSegment> {
        let mut f = File::open(&self.path)?;
        let mut h = Sha512::new();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(buf.get(..n).unwrap_or_default());
        }
        Ok(StoredSegment {
            url: self.url,
            content_hash: vcontap_vcon::content_hash_from_digest(&h.finalize()),
            filename: self.filename,
            mediatype: "audio/x-wav".into(),
        })
    }
}

/// Work for a shard's media writer thread.
pub(crate) enum MediaMsg {
    Open(SegmentMeta),
    Audio {
        segment: SegmentId,
        samples: Vec<i16>,
    },
    Close {
        segment: SegmentId,
    },
}

/// A finished segment (or why it failed) on its way to the hasher.
type ToHash = (SegmentId, Result<Box<dyn FinishedSegment>, String>);

/// A store's answer: where the closed segment is, or why it could not be stored.
pub(crate) type Stored = (SegmentId, Result<StoredSegment, String>);

/// What a writer did, reported when it stops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MediaTotals {
    /// Segments finished.
    pub segments: u64,
    /// Bytes of PCM written.
    pub audio_bytes: u64,
    /// Segments that failed (open, write, close or hash).
    pub failed: u64,
}

impl MediaTotals {
    /// Adds another writer's totals.
    pub fn merge(&mut self, o: &MediaTotals) {
        self.segments += o.segments;
        self.audio_bytes += o.audio_bytes;
        self.failed += o.failed;
    }
}

/// The writer and hasher threads of one shard.
pub(crate) struct MediaWriter {
    tx: Option<Sender<MediaMsg>>,
    pub(crate) answers: Receiver<Stored>,
    writer: Option<JoinHandle<MediaTotals>>,
}

impl MediaWriter {
    pub(crate) fn spawn(
        store: Arc<dyn MediaStore>,
        shard: usize,
    ) -> Result<MediaWriter, PipelineError> {
        let (tx, rx) = bounded::<MediaMsg>(MEDIA_QUEUE);
        // Unbounded in type only: exactly one answer per Close, and closes in flight are
        // bounded by the open segments (one per recorded call).
        let (ans_tx, answers) = crossbeam_channel::unbounded::<Stored>();
        let (hash_tx, hash_rx) = bounded::<ToHash>(MEDIA_QUEUE);
        let hasher = std::thread::Builder::new()
            .name(format!("vcontap-hash-{shard}"))
            .spawn(move || {
                let mut failed = 0u64;
                for (segment, fin) in hash_rx {
                    let res = fin.and_then(|f| f.complete().map_err(|e| e.to_string()));
                    failed += u64::from(res.is_err());
                    if ans_tx.send((segment, res)).is_err() {
                        break;
                    }
                }
                failed
            })
            .map_err(PipelineError::Thread)?;
        let writer = std::thread::Builder::new()
            .name(format!("vcontap-media-{shard}"))
            .spawn(move || writer_loop(store.as_ref(), rx, hash_tx, hasher))
            .map_err(PipelineError::Thread)?;
        Ok(MediaWriter {
            tx: Some(tx),
            answers,
            writer: Some(writer),
        })
    }

    /// Non-blocking send; gives the message back when the queue is full.
    pub(crate) fn try_send(&self, m: MediaMsg) -> Result<(), Option<MediaMsg>> {
        match self.tx.as_ref() {
            None => Err(None),
            Some(tx) => match tx.try_send(m) {
                Ok(()) => Ok(()),
                Err(TrySendError::Full(m)) => Err(Some(m)),
                Err(TrySendError::Disconnected(_)) => Err(None),
            },
        }
    }

    /// Stops both threads and returns what they did.
    pub(crate) fn close(&mut self) -> MediaTotals {
        self.tx = None;
        match self.writer.take() {
            Some(w) => w.join().unwrap_or_default(),
            None => MediaTotals::default(),
        }
    }
}

impl MediaWriter {
    /// Stops feeding the threads without waiting for them (a store that hangs).
    pub(crate) fn abandon(&mut self) -> MediaTotals {
        self.tx = None;
        drop(self.writer.take());
        MediaTotals::default()
    }
}

impl Drop for MediaWriter {
    fn drop(&mut self) {
        self.close();
    }
}

fn writer_loop(
    store: &dyn MediaStore,
    rx: Receiver<MediaMsg>,
    hash_tx: Sender<ToHash>,
    hasher: JoinHandle<u64>,
) -> MediaTotals {
    let mut open: HashMap<SegmentId, Result<Box<dyn SegmentWriter>, String>> = HashMap::new();
    let mut t = MediaTotals::default();
    for m in rx {
        match m {
            MediaMsg::Open(meta) => {
                let w = store.open(&meta).map_err(|e| {
                    tracing::warn!(error = %e, "Cannot open a recording segment.");
                    e.to_string()
                });
                open.insert(meta.segment, w);
            }
            MediaMsg::Audio { segment, samples } => {
                if let Some(slot) = open.get_mut(&segment) {
                    if let Ok(w) = slot {
                        match w.write(&samples) {
                            Ok(()) => t.audio_bytes += samples.len() as u64 * 2,
                            Err(e) => {
                                tracing::warn!(error = %e, "Cannot write a recording segment.");
                                *slot = Err(e.to_string());
                            }
                        }
                    }
                }
            }
            MediaMsg::Close { segment } => {
                let res = match open.remove(&segment) {
                    Some(Ok(w)) => w.finish().map_err(|e| e.to_string()),
                    Some(Err(e)) => Err(e),
                    None => Err("closing a segment that was never opened".to_string()),
                };
                t.segments += u64::from(res.is_ok());
                if hash_tx.send((segment, res)).is_err() {
                    break;
                }
            }
        }
    }
    drop(hash_tx);
    t.failed += hasher.join().unwrap_or(0);
    t
}
