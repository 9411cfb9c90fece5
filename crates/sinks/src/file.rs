//! The `file` sink (the embedded default, what `--out DIR` means): finished vCons as
//! `DIR/YYYY/MM/DD/<uuid>.vcon.json` (the conserver's file-storage layout, dated by
//! `created_at` in UTC), optionally gzip-compressed (`.vcon.json.gz`).
//!
//! ```text
//! --sink file:///var/lib/vcontap/vcons            # plain JSON
//! --sink 'file:///var/lib/vcontap/vcons?gzip=true' # .vcon.json.gz
//! ```
//! Options: `gzip` (default false), `fsync` (default true: one `syncfs` per batch before
//! the spool is told the batch is delivered; `false` trades crash safety for speed on a
//! disk that is not the spool's).
//!
//! Writes run on tokio's blocking pool, never on an engine thread. Each file is written
//! under a temporary name and renamed, so readers never see half a file and a re-delivery
//! of the same uuid replaces the file (idempotent). Durability is one `syncfs` per batch,
//! not one `fsync` per file: on ext4 a per-file fsync costs a journal commit each (~1,700
//! files/s here), a batch sync lets thousands of files share one.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::record::Record;
use crate::sink::{BoxFuture, Built, Outcome, Sink, SinkError};
use crate::spec::{ConfigError, SinkSpec};

/// Settings of a file sink.
#[derive(Debug, Clone)]
pub struct FileConfig {
    /// Root directory.
    pub dir: PathBuf,
    /// Write `.vcon.json.gz`.
    pub gzip: bool,
    /// `syncfs` before acknowledging a batch.
    pub fsync: bool,
}

/// Builds a file sink from `file:///DIR?gzip=..&fsync=..`.
pub fn build(mut spec: SinkSpec) -> Result<Built, ConfigError> {
    let dir = spec.url.to_file_path().map_err(|()| ConfigError::Invalid {
        sink: spec.name.clone(),
        why: "a file sink needs an absolute local path (file:///dir)".into(),
    })?;
    let gzip = spec.options.take_bool("gzip", false)?;
    let fsync = spec.options.take_bool("fsync", true)?;
    spec.options.finish(&["gzip", "fsync"])?;
    let sink =
        FileSink::new(FileConfig { dir, gzip, fsync }).map_err(|e| ConfigError::Invalid {
            sink: spec.name.clone(),
            why: e.to_string(),
        })?;
    Ok(Built::durable(sink))
}

/// Writes finished vCons into a dated directory tree.
#[derive(Debug)]
pub struct FileSink {
    cfg: Arc<FileConfig>,
    /// Day directories known to exist (a create per file would double the metadata work).
    made: Arc<std::sync::Mutex<HashSet<PathBuf>>>,
}

impl FileSink {
    /// A sink writing under `cfg.dir` (created now, so a bad path fails at start-up).
    pub fn new(cfg: FileConfig) -> std::io::Result<Self> {
        std::fs::create_dir_all(&cfg.dir)?;
        Ok(FileSink {
            cfg: Arc::new(cfg),
            made: Arc::default(),
        })
    }

    /// Where a record goes, or why it cannot be stored (a permanent rejection).
    pub fn path_for(cfg: &FileConfig, rec: &Record) -> Result<PathBuf, String> {
        if !is_uuid(&rec.uuid) {
            return Err(format!(
                "uuid `{}` is not an RFC 4122 uuid; refusing it as a file name",
                rec.uuid.escape_debug()
            ));
        }
        let (y, m, d) = match rec.created_ymd() {
            Some(ymd) => ymd,
            None => {
                let head = rec
                    .head()
                    .map_err(|e| format!("not a vCon JSON object: {e}"))?;
                return Err(format!("created_at `{}` is not RFC 3339", head.created_at));
            }
        };
        let ext = if cfg.gzip {
            "vcon.json.gz"
        } else {
            "vcon.json"
        };
        Ok(cfg
            .dir
            .join(format!("{y:04}"))
            .join(format!("{m:02}"))
            .join(format!("{d:02}"))
            .join(format!("{}.{ext}", rec.uuid)))
    }
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

fn write_one(cfg: &FileConfig, path: &Path, json: &[u8]) -> std::io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    if cfg.gzip {
        let mut gz = flate2::write::GzEncoder::new(&mut f, flate2::Compression::fast());
        gz.write_all(json)?;
        gz.finish()?;
    } else {
        f.write_all(json)?;
    }
    drop(f);
    std::fs::rename(&tmp, path)
}

fn write_batch(
    cfg: &FileConfig,
    made: &std::sync::Mutex<HashSet<PathBuf>>,
    batch: &[Arc<Record>],
) -> Result<Vec<Outcome>, SinkError> {
    let out = write_files(cfg, made, batch)?;
    if cfg.fsync && out.contains(&Outcome::Delivered) {
        sync(cfg)?;
    }
    Ok(out)
}

/// One `syncfs` of the file system holding the directory.
fn sync(cfg: &FileConfig) -> Result<(), SinkError> {
    let dir = std::fs::File::open(&cfg.dir)
        .map_err(|e| SinkError::new(format!("opening {}: {e}", cfg.dir.display())))?;
    rustix::fs::syncfs(&dir)
        .map_err(|e| SinkError::new(format!("syncfs {}: {e}", cfg.dir.display())))
}

fn write_files(
    cfg: &FileConfig,
    made: &std::sync::Mutex<HashSet<PathBuf>>,
    batch: &[Arc<Record>],
) -> Result<Vec<Outcome>, SinkError> {
    let mut out = Vec::with_capacity(batch.len());
    for rec in batch {
        let path = match FileSink::path_for(cfg, rec) {
            Ok(p) => p,
            Err(why) => {
                out.push(Outcome::Rejected(why));
                continue;
            }
        };
        if let Some(parent) = path.parent() {
            let mut made = made
                .lock()
                .map_err(|_| SinkError::new("file sink state poisoned"))?;
            if !made.contains(parent) {
                std::fs::create_dir_all(parent)
                    .map_err(|e| SinkError::new(format!("creating {}: {e}", parent.display())))?;
                made.insert(parent.to_path_buf());
            }
        }
        // A write error (disk full, permissions) is transient: it is retried with backoff
        // and the vCon stays in the spool meanwhile.
        write_one(cfg, &path, &rec.json)
            .map_err(|e| SinkError::new(format!("writing {}: {e}", path.display())))?;
        out.push(Outcome::Delivered);
    }
    Ok(out)
}

impl Sink for FileSink {
    fn max_batch(&self) -> usize {
        512
    }

    fn deliver<'a>(
        &'a mut self,
        batch: &'a [Arc<Record>],
    ) -> BoxFuture<'a, Result<Vec<Outcome>, SinkError>> {
        let cfg = self.cfg.clone();
        let made = self.made.clone();
        let batch: Vec<Arc<Record>> = batch.to_vec();
        Box::pin(async move {
            // One thread per sink: files of a day share a directory, and two writers there
            // only spin on the directory's lock (measured: no gain, more CPU).
            tokio::task::spawn_blocking(move || write_batch(&cfg, &made, &batch))
                .await
                .map_err(|e| SinkError::new(format!("file writer task: {e}")))?
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::RecordId;
    use bytes::Bytes;

    fn rec(id: u64, uuid: &str, created: &str) -> Arc<Record> {
        Arc::new(Record {
            id: RecordId(id),
            uuid: uuid.into(),
            json: Bytes::from(format!(
                r#"{{"vcon":"0.4.0","uuid":"{uuid}","created_at":"{created}","parties":[],"dialog":[]}}"#
            )),
            spooled_unix_ms: 0,
        })
    }

    #[tokio::test]
    async fn dated_layout_gzip_idempotent_and_rejections() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}?gzip=true", dir.path().display());
        let mut built = build(SinkSpec::parse(&url).unwrap()).unwrap();
        let sink = built.sink.as_mut().unwrap();
        let u = "018f0000-0000-8000-8000-000000000001";
        let batch = vec![
            rec(1, u, "2026-11-29T23:59:59.999Z"),
            rec(2, "../../etc/passwd", "2026-11-29T00:00:00Z"),
            rec(3, "018f0000-0000-8000-8000-000000000002", "yesterday"),
            rec(4, u, "2026-11-29T23:59:59.999Z"),
        ];
        let out = sink.deliver(&batch).await.unwrap();
        assert_eq!(out[0], Outcome::Delivered);
        assert!(matches!(&out[1], Outcome::Rejected(r) if r.contains("not an RFC 4122 uuid")));
        assert!(matches!(&out[2], Outcome::Rejected(r) if r.contains("not RFC 3339")));
        assert_eq!(out[3], Outcome::Delivered);
        let path = dir.path().join(format!("2026/11/29/{u}.vcon.json.gz"));
        let gz = std::fs::read(&path).unwrap();
        let mut s = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gz[..]), &mut s).unwrap();
        assert_eq!(s.as_bytes(), &batch[3].json[..]);
        // Exactly one file (the re-delivery replaced it) and no temporaries left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path().join("2026/11/29"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn relative_or_remote_paths_are_config_errors() {
        assert!(build(SinkSpec::parse("file://host/dir").unwrap()).is_err());
        assert!(build(SinkSpec::parse("file:///tmp/x?compress=1").unwrap()).is_err());
    }
}
