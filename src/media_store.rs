//! Writes recording segments to disk as the engine streams PCM: one WAV per segment under
//! `<out>/media/`, finalized and hashed when the engine closes the segment.
//!
//! `hound` writes the header with placeholder sizes and patches them on finalize, so the
//! SHA-512 for `content_hash` is taken by reading the closed file back (from the page
//! cache). Hashing is the most expensive step of recording (SHA-512 runs at ~760 MB/s here),
//! so [`Closed::hash`] runs on a thread of its own, separate from the writer.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Read};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sha2::{Digest, Sha512};
use vcontap_engine::{SegmentId, StoredSegment};

type Wav = hound::WavWriter<BufWriter<File>>;

/// Open segment files of one engine shard.
pub struct MediaStore {
    dir: PathBuf,
    base_url: String,
    open: HashMap<SegmentId, (Wav, PathBuf, String)>,
    /// Segments written.
    pub written: u64,
    /// Bytes of audio written.
    pub bytes: u64,
}

impl MediaStore {
    /// A store writing under `dir`; URLs are `base_url/<file>` or `file://<abs path>`.
    pub fn new(dir: &Path, base_url: Option<&str>) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let abs = std::fs::canonicalize(dir)?;
        let base_url = match base_url {
            Some(b) => b.trim_end_matches('/').to_string(),
            None => format!("file://{}", abs.display()),
        };
        Ok(MediaStore {
            dir: abs,
            base_url,
            open: HashMap::new(),
            written: 0,
            bytes: 0,
        })
    }

    /// Starts a segment file.
    pub fn open(
        &mut self,
        seg: SegmentId,
        uuid: &str,
        index: u32,
        rate: u32,
        channels: u16,
    ) -> Result<()> {
        let filename = format!("{uuid}-{index:03}.wav");
        let path = self.dir.join(&filename);
        let spec = hound::WavSpec {
            channels,
            sample_rate: rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let f = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        // One buffer per open segment (one per recorded call): 32 KiB = 1 s of 8 kHz stereo,
        // so each audio chunk from the engine is about one write.
        let w = hound::WavWriter::new(BufWriter::with_capacity(32 * 1024, f), spec)?;
        self.open.insert(seg, (w, path, filename));
        Ok(())
    }

    /// Appends interleaved samples.
    pub fn write(&mut self, seg: SegmentId, samples: &[i16]) -> Result<()> {
        if let Some((w, _, _)) = self.open.get_mut(&seg) {
            let mut i16w = w.get_i16_writer(samples.len() as u32);
            for s in samples {
                i16w.write_sample(*s);
            }
            i16w.flush()?;
            self.bytes += samples.len() as u64 * 2;
        }
        Ok(())
    }

    /// Finalizes a segment file: the returned [`Closed`] is hashed (possibly on another
    /// thread) to become the engine's [`StoredSegment`].
    pub fn finalize(&mut self, seg: SegmentId) -> Result<Closed> {
        let (w, path, filename) = self
            .open
            .remove(&seg)
            .context("closing a segment that is not open")?;
        w.finalize()?;
        self.written += 1;
        Ok(Closed {
            path,
            url: format!("{}/{}", self.base_url, filename),
            filename,
        })
    }
}

/// A finalized segment file, not hashed yet.
pub struct Closed {
    path: PathBuf,
    url: String,
    filename: String,
}

impl Closed {
    /// Reads the closed file back and hashes it (SHA-512 over the exact bytes).
    pub fn hash(self) -> Result<StoredSegment> {
        let mut f =
            File::open(&self.path).with_context(|| format!("reading {}", self.path.display()))?;
        let mut h = Sha512::new();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        Ok(StoredSegment {
            url: self.url,
            content_hash: vcontap_vcon::content_hash_from_digest(&h.finalize()),
            filename: self.filename,
            mediatype: "audio/x-wav".into(),
        })
    }
}
