//! The spool: a write-ahead log of finished vCons between the engine and the durable sinks.
//! A vCon is appended and fsynced here before any sink sees it, and its bytes leave the disk
//! only when every durable sink it is owed to has delivered (or dead-lettered) it. After a
//! crash or `kill -9`, the next start re-delivers whatever was not acknowledged.
//!
//! Layout of the spool directory (one process at a time: `LOCK` holds an exclusive lock):
//!
//! ```text
//! LOCK                                  pid of the owner, flock'ed
//! seg-<first id, 20 digits>.log         append-only segments (roll at `segment_bytes`)
//! cursors/<sink>.cursor                 per sink: "<next id it needs>\n<sink name>\n"
//! dropped                               ids dropped by `vcontap spool drop` (one per line)
//! dead/<sink>/<uuid>.vcon.json          dead letters, and <uuid>.reason.json beside each
//! ```
//!
//! A segment starts with a *sinks* frame naming the durable sinks its records are owed to
//! (the sinks configured when it was opened; a process start always opens a new segment),
//! then *vCon* frames. Every frame is `len u32 | crc32 u32 | kind u8 | id u64 | payload`
//! (little endian, CRC over kind, id and payload), so a torn tail from a crash is found and
//! cut off at start-up: it was never fsynced, so no sink ever saw it.
//!
//! Why a log and not a file per vCon: a file create costs tens to hundreds of microseconds
//! of kernel time on ext4 and each fsync a journal commit, so one file per vCon cannot
//! reach thousands of vCons per second; a log takes a whole batch with one write and one
//! `fdatasync` (group commit).
//!
//! Sinks read in id order and acknowledge by moving their *cursor* (every id below it is
//! done), so acknowledgement state is one small file per sink, written after each batch.
//! Cursor files are replaced atomically but not fsynced: losing a cursor update after a
//! crash only re-delivers, and every sink writes idempotently by uuid.

use std::collections::{BTreeSet, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use crate::record::{Record, RecordId};

const FRAME_HEADER: usize = 4 + 4 + 1 + 8;
const KIND_SINKS: u8 = 1;
const KIND_VCON: u8 = 2;
/// Largest frame accepted when reading (a vCon with inline media can be large, but a
/// length beyond this is corruption, not data).
pub const MAX_FRAME: usize = 256 << 20;

/// Spool errors.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// File system error on a path.
    #[error("spool {0}: {1}")]
    Io(String, #[source] std::io::Error),
    /// Another process owns the spool.
    #[error("spool {dir} is in use by another vcontap process ({owner}); stop it or give another --spool DIR")]
    Locked {
        /// The spool directory.
        dir: String,
        /// What the lock file says about its owner.
        owner: String,
    },
    /// A record is larger than [`MAX_FRAME`].
    #[error("vCon {0} is too large for the spool ({1} bytes)")]
    TooLarge(String, usize),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |e| SpoolError::Io(path.display().to_string(), e)
}

/// Spool settings.
#[derive(Debug, Clone)]
pub struct SpoolConfig {
    /// The directory.
    pub dir: PathBuf,
    /// Roll to a new segment file beyond this size.
    pub segment_bytes: u64,
    /// Alarm (and apply the full-policy) when the segments exceed this many bytes.
    pub max_bytes: u64,
}

impl SpoolConfig {
    /// Defaults: 64 MiB segments, 4 GiB bound.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        SpoolConfig {
            dir: dir.into(),
            segment_bytes: 64 << 20,
            max_bytes: 4 << 30,
        }
    }
}

/// One segment file.
#[derive(Debug)]
struct Segment {
    first: u64,
    path: PathBuf,
    file: Arc<File>,
    /// Durable sinks its records are owed to.
    sinks: Vec<String>,
    /// `(id, offset of the frame, frame length)` of each vCon frame, in id order.
    records: Vec<(u64, u64, u32)>,
    bytes: u64,
}

/// A batch encoded and placed in the active segment, not yet written ([`Spool::stage`]).
#[derive(Debug)]
pub struct Staged {
    seg_first: u64,
    file: Arc<File>,
    path: PathBuf,
    offset: u64,
    buf: Vec<u8>,
    index: Vec<(u64, u64, u32)>,
    next_id: u64,
    records: Vec<Arc<Record>>,
}

impl Staged {
    /// Writes the batch and waits for `fdatasync`: call without holding the spool's lock,
    /// so readers keep reading while the disk syncs.
    pub fn write(&self) -> Result<(), SpoolError> {
        self.file
            .write_all_at(&self.buf, self.offset)
            .and_then(|()| self.file.sync_data())
            .map_err(io(&self.path))
    }

    /// Bytes in the batch.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// No bytes.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

/// A record waiting in the spool, as `vcontap spool list` shows it.
#[derive(Debug, Clone)]
pub struct PendingRecord {
    /// Spool id.
    pub id: RecordId,
    /// vCon uuid.
    pub uuid: String,
    /// Size of the vCon.
    pub bytes: usize,
    /// When it was spooled (Unix ms).
    pub spooled_unix_ms: u64,
    /// Sinks that still owe it.
    pub owed_to: Vec<String>,
}

/// The spool (see the module docs). Owned by one writer; readers share it behind a mutex.
#[derive(Debug)]
pub struct Spool {
    cfg: SpoolConfig,
    _lock: Option<File>,
    readonly: bool,
    segments: Vec<Segment>,
    /// The segment appends go to (opened lazily so a run without vCons adds no file).
    active: Option<usize>,
    /// Sinks of segments opened by this process.
    sinks: Vec<String>,
    cursors: HashMap<String, u64>,
    dropped: BTreeSet<u64>,
    next_id: u64,
    total_bytes: u64,
    /// Frames cut off at open (torn tails).
    pub truncated_frames: u64,
}

/// File-name form of a sink name: readable, safe, and unique (a short hash of the name).
pub fn sink_file_name(name: &str) -> String {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .take(60)
        .collect();
    format!("{safe}-{:08x}", crc32fast::hash(name.as_bytes()))
}

fn encode_frame(buf: &mut Vec<u8>, kind: u8, id: u64, payload: &[&[u8]]) {
    let len: usize = payload.iter().map(|p| p.len()).sum();
    let mut h = crc32fast::Hasher::new();
    h.update(&[kind]);
    h.update(&id.to_le_bytes());
    for p in payload {
        h.update(p);
    }
    buf.extend_from_slice(&(len as u32).to_le_bytes());
    buf.extend_from_slice(&h.finalize().to_le_bytes());
    buf.push(kind);
    buf.extend_from_slice(&id.to_le_bytes());
    for p in payload {
        buf.extend_from_slice(p);
    }
}

/// A decoded frame header.
struct Frame {
    kind: u8,
    id: u64,
    len: usize,
    crc: u32,
}

fn parse_header(h: &[u8; FRAME_HEADER]) -> Frame {
    let [l0, l1, l2, l3, c0, c1, c2, c3, kind, i0, i1, i2, i3, i4, i5, i6, i7] = *h;
    Frame {
        len: u32::from_le_bytes([l0, l1, l2, l3]) as usize,
        crc: u32::from_le_bytes([c0, c1, c2, c3]),
        kind,
        id: u64::from_le_bytes([i0, i1, i2, i3, i4, i5, i6, i7]),
    }
}

fn frame_crc(kind: u8, id: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&[kind]);
    h.update(&id.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// vCon frame payload: `uuid_len u8 | uuid | spooled_unix_ms u64 | json`.
fn vcon_payload_head(uuid: &str, spooled_unix_ms: u64) -> Vec<u8> {
    let u = uuid.as_bytes();
    let n = u.len().min(255);
    let mut v = Vec::with_capacity(1 + n + 8);
    v.push(n as u8);
    v.extend_from_slice(u.get(..n).unwrap_or(u));
    v.extend_from_slice(&spooled_unix_ms.to_le_bytes());
    v
}

fn decode_vcon(id: u64, payload: Vec<u8>) -> Option<Record> {
    let n = usize::from(*payload.first()?);
    let uuid = std::str::from_utf8(payload.get(1..1 + n)?).ok()?;
    let ts: [u8; 8] = payload.get(1 + n..9 + n)?.try_into().ok()?;
    let uuid: Arc<str> = uuid.into();
    let mut json = Bytes::from(payload);
    let json = json.split_off(9 + n);
    Some(Record {
        id: RecordId(id),
        uuid,
        json,
        spooled_unix_ms: u64::from_le_bytes(ts),
    })
}

/// Reads frames of a segment file; stops at the first torn or corrupt frame and returns its
/// offset (where the file must be cut).
/// What [`scan`] found in a segment file.
struct Scanned {
    sinks: Vec<String>,
    records: Vec<(u64, u64, u32)>,
    /// Length of the intact prefix.
    good_len: u64,
    /// Torn or corrupt frames found (0 or 1: scanning stops at the first).
    bad: u64,
}

fn scan(file: &File, path: &Path) -> Result<Scanned, SpoolError> {
    let mut sinks = Vec::new();
    let mut records = Vec::new();
    let mut data = Vec::new();
    let mut r = std::io::BufReader::new(file);
    r.read_to_end(&mut data).map_err(io(path))?;
    let mut off = 0usize;
    let mut bad = 0u64;
    while let Some(h) = data.get(off..off + FRAME_HEADER) {
        let mut hb = [0u8; FRAME_HEADER];
        hb.copy_from_slice(h);
        let f = parse_header(&hb);
        let Some(payload) = data.get(off + FRAME_HEADER..off + FRAME_HEADER + f.len) else {
            bad += 1;
            break;
        };
        if f.len > MAX_FRAME || frame_crc(f.kind, f.id, payload) != f.crc {
            bad += 1;
            break;
        }
        match f.kind {
            KIND_SINKS => sinks = serde_json::from_slice(payload).unwrap_or_default(),
            KIND_VCON => records.push((f.id, off as u64, (FRAME_HEADER + f.len) as u32)),
            _ => {}
        }
        off += FRAME_HEADER + f.len;
    }
    if off < data.len() && bad == 0 {
        bad = 1; // a partial header
    }
    Ok(Scanned {
        sinks,
        records,
        good_len: off as u64,
        bad,
    })
}

impl Spool {
    /// Opens (or creates) the spool for a process whose durable sinks are `sinks`: takes the
    /// lock, scans the segments (cutting torn tails), loads cursors and drops.
    pub fn open(cfg: SpoolConfig, sinks: Vec<String>) -> Result<Self, SpoolError> {
        Self::open_inner(cfg, sinks, false)
    }

    /// Reads a spool without taking its lock or changing anything (for `vcontap spool
    /// list` while a daemon owns it). Torn tails are skipped, not cut.
    pub fn inspect(dir: &Path) -> Result<Self, SpoolError> {
        if !dir.is_dir() {
            return Err(SpoolError::Io(
                dir.display().to_string(),
                std::io::Error::new(std::io::ErrorKind::NotFound, "no spool here"),
            ));
        }
        Self::open_inner(SpoolConfig::new(dir), Vec::new(), true)
    }

    fn open_inner(
        cfg: SpoolConfig,
        sinks: Vec<String>,
        readonly: bool,
    ) -> Result<Self, SpoolError> {
        let dir = cfg.dir.clone();
        if readonly {
            return Self::load(cfg, sinks, None);
        }
        std::fs::create_dir_all(dir.join("cursors")).map_err(io(&dir))?;
        let lock_path = dir.join("LOCK");
        let mut lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        if lock.try_lock().is_err() {
            let mut owner = String::new();
            let _ = lock.read_to_string(&mut owner);
            return Err(SpoolError::Locked {
                dir: dir.display().to_string(),
                owner: format!("pid {}", owner.trim()),
            });
        }
        lock.set_len(0).map_err(io(&lock_path))?;
        let _ = lock.write_all(std::process::id().to_string().as_bytes());
        Self::load(cfg, sinks, Some(lock))
    }

    fn load(cfg: SpoolConfig, sinks: Vec<String>, lock: Option<File>) -> Result<Self, SpoolError> {
        let dir = cfg.dir.clone();
        let readonly = lock.is_none();

        let mut names: Vec<(u64, PathBuf)> = std::fs::read_dir(&dir)
            .map_err(io(&dir))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                let id = n.strip_prefix("seg-")?.strip_suffix(".log")?.parse().ok()?;
                Some((id, e.path()))
            })
            .collect();
        names.sort();
        let mut segments = Vec::new();
        let mut truncated = 0;
        let mut next_id = 1u64;
        let mut total = 0u64;
        for (first, path) in names {
            let file = OpenOptions::new()
                .read(true)
                .write(!readonly)
                .open(&path)
                .map_err(io(&path))?;
            let Scanned {
                sinks: seg_sinks,
                records,
                good_len,
                bad,
            } = scan(&file, &path)?;
            if bad > 0 && !readonly {
                tracing::warn!(segment = %path.display(), at = good_len, "spool: cutting a torn or corrupt tail (never acknowledged)");
                file.set_len(good_len).map_err(io(&path))?;
                file.sync_all().map_err(io(&path))?;
                truncated += bad;
            }
            if let Some((last, _, _)) = records.last() {
                next_id = next_id.max(last + 1);
            }
            next_id = next_id.max(first);
            total += good_len;
            segments.push(Segment {
                first,
                path,
                file: Arc::new(file),
                sinks: seg_sinks,
                records,
                bytes: good_len,
            });
        }
        let mut cursors = HashMap::new();
        if let Ok(rd) = std::fs::read_dir(dir.join("cursors")) {
            for e in rd.flatten() {
                let Ok(text) = std::fs::read_to_string(e.path()) else {
                    continue;
                };
                let mut lines = text.lines();
                let (Some(id), Some(name)) = (lines.next(), lines.next()) else {
                    continue; // an empty or torn cursor: that sink re-delivers from the start
                };
                if let Ok(id) = id.trim().parse::<u64>() {
                    if id != u64::MAX {
                        next_id = next_id.max(id);
                    }
                    cursors.insert(name.to_string(), id);
                }
            }
        }
        let dropped = std::fs::read_to_string(dir.join("dropped"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        let mut spool = Spool {
            cfg,
            _lock: lock,
            readonly,
            segments,
            active: None,
            sinks,
            cursors,
            dropped,
            next_id,
            total_bytes: total,
            truncated_frames: truncated,
        };
        if !readonly {
            spool.collect_garbage();
        }
        Ok(spool)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.cfg.dir
    }

    /// Bytes of segment files on disk.
    pub fn bytes(&self) -> u64 {
        self.total_bytes
    }

    /// The configured bound.
    pub fn max_bytes(&self) -> u64 {
        self.cfg.max_bytes
    }

    /// The id the next appended record gets (records below it are committed).
    pub fn head(&self) -> RecordId {
        RecordId(self.next_id)
    }

    /// Where `sink` stands (records below are done for it).
    pub fn cursor(&self, sink: &str) -> RecordId {
        RecordId(self.cursors.get(sink).copied().unwrap_or(0))
    }

    fn open_segment(&mut self) -> Result<usize, SpoolError> {
        if self.readonly {
            return Err(SpoolError::Io(
                self.cfg.dir.display().to_string(),
                std::io::Error::new(std::io::ErrorKind::PermissionDenied, "opened read-only"),
            ));
        }
        let first = self.next_id;
        let path = self.cfg.dir.join(format!("seg-{first:020}.log"));
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io(&path))?;
        let mut buf = Vec::new();
        let sinks = serde_json::to_vec(&self.sinks).unwrap_or_default();
        encode_frame(&mut buf, KIND_SINKS, 0, &[&sinks]);
        file.write_all_at(&buf, 0).map_err(io(&path))?;
        file.sync_all().map_err(io(&path))?;
        // The new directory entry must be durable before records in it are acknowledged.
        File::open(&self.cfg.dir)
            .and_then(|d| d.sync_all())
            .map_err(io(&self.cfg.dir))?;
        self.total_bytes += buf.len() as u64;
        self.segments.push(Segment {
            first,
            path,
            file: Arc::new(file),
            sinks: self.sinks.clone(),
            records: Vec::new(),
            bytes: buf.len() as u64,
        });
        let i = self.segments.len() - 1;
        self.active = Some(i);
        Ok(i)
    }

    /// Appends a batch of vCons `(uuid, json)` with one write and one `fdatasync` (group
    /// commit). Returns the committed records, in order. (Stage, write, commit in one call;
    /// the delivery writer does the write outside the spool's lock.)
    pub fn append(
        &mut self,
        batch: &[(Arc<str>, Bytes)],
        now_unix_ms: u64,
    ) -> Result<Vec<Arc<Record>>, SpoolError> {
        let staged = self.stage(batch, now_unix_ms)?;
        staged.write()?;
        Ok(self.commit(staged))
    }

    /// Encodes a batch and places it at the end of the active segment (rolling to a new one
    /// if needed) without writing it. One writer only: a staged batch must be written and
    /// committed (or dropped) before the next is staged. Readers never see a staged batch.
    pub fn stage(
        &mut self,
        batch: &[(Arc<str>, Bytes)],
        now_unix_ms: u64,
    ) -> Result<Staged, SpoolError> {
        let seg_i = match self.active {
            Some(i)
                if self
                    .segments
                    .get(i)
                    .is_some_and(|s| s.bytes < self.cfg.segment_bytes) =>
            {
                i
            }
            _ => self.open_segment()?,
        };
        let Some(seg) = self.segments.get(seg_i) else {
            return Err(SpoolError::Io(
                self.cfg.dir.display().to_string(),
                std::io::Error::other("active segment vanished"),
            ));
        };
        let mut buf = Vec::with_capacity(batch.iter().map(|(_, j)| j.len() + 64).sum());
        let mut records = Vec::with_capacity(batch.len());
        let mut index = Vec::with_capacity(batch.len());
        let mut id = self.next_id;
        for (uuid, json) in batch {
            if json.len() > MAX_FRAME - 300 {
                return Err(SpoolError::TooLarge(uuid.to_string(), json.len()));
            }
            let head = vcon_payload_head(uuid, now_unix_ms);
            let start = buf.len();
            encode_frame(&mut buf, KIND_VCON, id, &[&head, json]);
            index.push((id, seg.bytes + start as u64, (buf.len() - start) as u32));
            records.push(Arc::new(Record {
                id: RecordId(id),
                uuid: uuid.clone(),
                json: json.clone(),
                spooled_unix_ms: now_unix_ms,
            }));
            id += 1;
        }
        Ok(Staged {
            seg_first: seg.first,
            file: seg.file.clone(),
            path: seg.path.clone(),
            offset: seg.bytes,
            buf,
            index,
            next_id: id,
            records,
        })
    }

    /// Makes a written batch visible to readers. Returns its records.
    pub fn commit(&mut self, st: Staged) -> Vec<Arc<Record>> {
        if let Some(seg) = self.segments.iter_mut().find(|s| s.first == st.seg_first) {
            seg.bytes = st.offset + st.buf.len() as u64;
            seg.records.extend(st.index);
        }
        self.total_bytes += st.buf.len() as u64;
        self.next_id = st.next_id;
        st.records
    }

    /// Reads up to `max` records owed to `sink` with id ≥ `from` (skipping records of
    /// segments that do not owe it, and dropped ones). Returns the records and the id to
    /// continue from (past everything skipped).
    pub fn read_for(
        &self,
        sink: &str,
        from: RecordId,
        max: usize,
    ) -> Result<(Vec<Arc<Record>>, RecordId), SpoolError> {
        let mut out = Vec::new();
        // Records below the oldest segment are gone (delivered everywhere); with no segment
        // at all, everything below the head is.
        let mut next = from
            .0
            .max(self.segments.first().map_or(self.next_id, |s| s.first));
        for (i, seg) in self.segments.iter().enumerate() {
            let end = self.segments.get(i + 1).map_or(self.next_id, |s| s.first);
            if end <= next {
                continue;
            }
            if !seg.sinks.iter().any(|s| s == sink) {
                next = end;
                continue;
            }
            let start = seg.records.partition_point(|(id, _, _)| *id < next);
            for &(id, off, len) in seg.records.get(start..).unwrap_or(&[]) {
                if out.len() >= max {
                    return Ok((out, RecordId(next)));
                }
                next = id + 1;
                if self.dropped.contains(&id) {
                    continue;
                }
                let mut frame = vec![0u8; len as usize];
                seg.file
                    .read_exact_at(&mut frame, off)
                    .map_err(io(&seg.path))?;
                let payload = frame.split_off(FRAME_HEADER.min(frame.len()));
                match decode_vcon(id, payload) {
                    Some(r) => out.push(Arc::new(r)),
                    None => tracing::warn!(id, "spool: undecodable vCon frame skipped"),
                }
            }
            next = end;
        }
        Ok((out, RecordId(next)))
    }

    /// Moves `sink`'s cursor to `to` (everything below is done for it), persists it, and
    /// deletes segments no sink needs any more.
    pub fn advance(&mut self, sink: &str, to: RecordId) -> Result<(), SpoolError> {
        let cur = self.cursors.entry(sink.to_string()).or_insert(0);
        if to.0 <= *cur {
            return Ok(());
        }
        *cur = to.0;
        self.write_cursor(sink, to.0)?;
        self.collect_garbage();
        Ok(())
    }

    fn write_cursor(&self, sink: &str, id: u64) -> Result<(), SpoolError> {
        let dir = self.cfg.dir.join("cursors");
        let name = sink_file_name(sink);
        let tmp = dir.join(format!(".{name}.tmp"));
        let path = dir.join(format!("{name}.cursor"));
        std::fs::write(&tmp, format!("{id}\n{sink}\n")).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))
    }

    /// Deletes every segment (except the active one) whose records are done for all the
    /// sinks it is owed to.
    fn collect_garbage(&mut self) {
        let mut i = 0;
        while i < self.segments.len() {
            let end = self.segments.get(i + 1).map_or(self.next_id, |s| s.first);
            let Some(seg) = self.segments.get(i) else {
                break;
            };
            let active = self.active == Some(i);
            let is_last = i + 1 == self.segments.len();
            let done = seg
                .sinks
                .iter()
                .all(|s| self.cursors.get(s).copied().unwrap_or(0) >= end);
            if done && !active && !is_last {
                let seg = self.segments.remove(i);
                if let Err(e) = std::fs::remove_file(&seg.path) {
                    tracing::warn!(segment = %seg.path.display(), error = %e, "spool: cannot delete a delivered segment");
                }
                self.total_bytes = self.total_bytes.saturating_sub(seg.bytes);
                if let Some(a) = self.active.as_mut() {
                    if *a > i {
                        *a -= 1;
                    }
                }
            } else {
                i += 1;
            }
        }
        // Drop marks below the oldest segment can never match again.
        let lo = self.segments.first().map_or(self.next_id, |s| s.first);
        self.dropped.retain(|d| *d >= lo);
    }

    /// Every record still owed to some sink (for `vcontap spool list`).
    pub fn pending(&self) -> Result<Vec<PendingRecord>, SpoolError> {
        let mut out = Vec::new();
        for seg in &self.segments {
            for &(id, off, len) in &seg.records {
                if self.dropped.contains(&id) {
                    continue;
                }
                let owed: Vec<String> = seg
                    .sinks
                    .iter()
                    .filter(|s| self.cursors.get(*s).copied().unwrap_or(0) <= id)
                    .cloned()
                    .collect();
                if owed.is_empty() {
                    continue;
                }
                let mut frame = vec![0u8; len as usize];
                seg.file
                    .read_exact_at(&mut frame, off)
                    .map_err(io(&seg.path))?;
                let payload = frame.split_off(FRAME_HEADER.min(frame.len()));
                if let Some(r) = decode_vcon(id, payload) {
                    out.push(PendingRecord {
                        id: r.id,
                        uuid: r.uuid.to_string(),
                        bytes: r.json.len(),
                        spooled_unix_ms: r.spooled_unix_ms,
                        owed_to: owed,
                    });
                }
            }
        }
        Ok(out)
    }

    /// Every sink any segment on disk owes records to, with its cursor.
    pub fn sinks_on_disk(&self) -> Vec<(String, RecordId)> {
        let mut v: Vec<String> = self
            .segments
            .iter()
            .flat_map(|s| s.sinks.iter().cloned())
            .collect();
        v.sort();
        v.dedup();
        v.into_iter()
            .map(|n| {
                let c = self.cursor(&n);
                (n, c)
            })
            .collect()
    }

    /// Number of segment files.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Sinks named by segments on disk that are not among this process's sinks (records
    /// owed to them wait until they are configured again or dropped).
    pub fn stale_sinks(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .segments
            .iter()
            .flat_map(|s| s.sinks.iter())
            .filter(|s| !self.sinks.contains(s))
            .cloned()
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// Makes later appends go to a new segment owed to `sinks` (`vcontap spool retry` sends a
    /// dead letter back to the one sink that refused it).
    pub fn set_sinks(&mut self, sinks: Vec<String>) {
        self.sinks = sinks;
        self.active = None;
    }

    /// Drops pending records (by id) for every sink: they will never be delivered.
    pub fn drop_records(&mut self, ids: &[RecordId]) -> Result<(), SpoolError> {
        let path = self.cfg.dir.join("dropped");
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        let mut s = String::new();
        for id in ids {
            s.push_str(&format!("{}\n", id.0));
            self.dropped.insert(id.0);
        }
        f.write_all(s.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(io(&path))
    }

    /// Gives up on everything owed to `sink` (e.g. a sink removed from the configuration).
    pub fn forget_sink(&mut self, sink: &str) -> Result<(), SpoolError> {
        self.cursors.insert(sink.to_string(), u64::MAX);
        self.write_cursor(sink, u64::MAX)?;
        self.collect_garbage();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vc(n: u32) -> (Arc<str>, Bytes) {
        let u = format!("018f0000-0000-8000-8000-{n:012}");
        let j = format!(r#"{{"uuid":"{u}","n":{n}}}"#);
        (u.into(), Bytes::from(j))
    }

    fn cfg(dir: &Path) -> SpoolConfig {
        SpoolConfig {
            dir: dir.to_path_buf(),
            segment_bytes: 400,
            max_bytes: 1 << 30,
        }
    }

    #[test]
    fn append_read_advance_and_reopen() {
        let d = tempfile::tempdir().unwrap();
        let sinks = vec!["a".to_string(), "b".to_string()];
        let mut s = Spool::open(cfg(d.path()), sinks.clone()).unwrap();
        let recs = s.append(&[vc(1), vc(2), vc(3)], 7).unwrap();
        assert_eq!(recs.iter().map(|r| r.id.0).collect::<Vec<_>>(), [1, 2, 3]);
        s.append(&[vc(4), vc(5)], 8).unwrap();
        s.append(&[vc(6)], 9).unwrap();
        assert!(s.segments.len() >= 2, "segments roll at 400 bytes");
        let (got, next) = s.read_for("a", RecordId(0), 4).unwrap();
        assert_eq!(got.len(), 4);
        assert_eq!(got[3].json, vc(4).1);
        assert_eq!(got[0].spooled_unix_ms, 7);
        s.advance("a", next).unwrap();
        s.advance("b", RecordId(3)).unwrap();
        drop(s);
        // Reopen: cursors and records survive; records below both cursors are gone from
        // `pending`, and the next id continues.
        let mut s = Spool::open(cfg(d.path()), sinks).unwrap();
        assert_eq!(s.cursor("a"), next);
        let p = s.pending().unwrap();
        assert_eq!(p.first().unwrap().id, RecordId(3));
        assert_eq!(p.first().unwrap().owed_to, vec!["b".to_string()]);
        assert_eq!(s.append(&[vc(7)], 10).unwrap()[0].id, RecordId(7));
        let (got, _) = s.read_for("a", s.cursor("a"), 100).unwrap();
        assert_eq!(got.iter().map(|r| r.id.0).collect::<Vec<_>>(), [5, 6, 7]);
        // Everything delivered: all segments but the newest are deleted.
        s.advance("a", RecordId(8)).unwrap();
        s.advance("b", RecordId(8)).unwrap();
        assert_eq!(s.segments.len(), 1);
        assert!(s.pending().unwrap().is_empty());
    }

    #[test]
    fn torn_tail_is_cut_and_never_read() {
        let d = tempfile::tempdir().unwrap();
        let sinks = vec!["a".to_string()];
        let mut s = Spool::open(cfg(d.path()), sinks.clone()).unwrap();
        s.append(&[vc(1), vc(2)], 1).unwrap();
        let path = s.segments[0].path.clone();
        drop(s);
        // A crash in the middle of the next write: half a frame, then garbage.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[40, 0, 0, 0, 1, 2, 3, 4, 2, 3]).unwrap();
        drop(f);
        let mut s = Spool::open(cfg(d.path()), sinks.clone()).unwrap();
        assert_eq!(s.truncated_frames, 1);
        let (got, _) = s.read_for("a", RecordId(0), 10).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(s.append(&[vc(3)], 1).unwrap()[0].id, RecordId(3));
        // A flipped byte inside a committed frame is caught by the CRC.
        drop(s);
        let mut bytes = std::fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n - 3] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let s = Spool::open(cfg(d.path()), sinks).unwrap();
        assert_eq!(s.truncated_frames, 1);
        assert_eq!(s.read_for("a", RecordId(0), 10).unwrap().0.len(), 2);
    }

    #[test]
    fn lock_sink_sets_and_drops() {
        let d = tempfile::tempdir().unwrap();
        let mut s = Spool::open(cfg(d.path()), vec!["old".into()]).unwrap();
        s.append(&[vc(1)], 1).unwrap();
        let e = Spool::open(cfg(d.path()), vec![]).unwrap_err().to_string();
        assert!(e.contains("in use by another vcontap"), "{e}");
        drop(s);
        // A new run with other sinks: the old record is still owed to "old" only.
        let mut s = Spool::open(cfg(d.path()), vec!["new".into()]).unwrap();
        assert_eq!(s.stale_sinks(), vec!["old".to_string()]);
        s.append(&[vc(2)], 1).unwrap();
        let (got, _) = s.read_for("new", RecordId(0), 10).unwrap();
        assert_eq!(got.iter().map(|r| r.id.0).collect::<Vec<_>>(), [2]);
        s.drop_records(&[RecordId(2)]).unwrap();
        assert!(s.read_for("new", RecordId(0), 10).unwrap().0.is_empty());
        s.forget_sink("old").unwrap();
        assert!(s.pending().unwrap().is_empty());
    }

    #[test]
    fn an_empty_spool_reads_up_to_its_head() {
        let d = tempfile::tempdir().unwrap();
        let s = Spool::open(cfg(d.path()), vec!["a".into()]).unwrap();
        let (got, next) = s.read_for("a", RecordId(0), 10).unwrap();
        assert!(got.is_empty());
        assert_eq!(
            next,
            s.head(),
            "a reader must be able to catch up with nothing spooled"
        );
    }

    #[test]
    fn sink_file_names_are_safe_and_distinct() {
        let a = sink_file_name("redis://127.0.0.1:6379/0");
        let b = sink_file_name("redis://127.0.0.1:6379/1");
        assert_ne!(a, b);
        assert!(!a.contains('/') && !a.contains(':'), "{a}");
        assert!(sink_file_name(&"x".repeat(500)).len() < 80);
    }
}
