//! Where events go in `replay`: finished vCons become `<out>/<uuid>.vcon.json` (written to a
//! temporary name and renamed, so a reader never sees half a file), and with `--events` every
//! event is appended as one JSON line in emission order.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use vcontap_engine::{EventKind, VconEvent};

/// Writes vCon files and the optional events stream.
pub struct FileSink {
    dir: PathBuf,
    events: Option<BufWriter<File>>,
    /// vCon files written.
    pub vcons_written: u64,
    /// Events written to the stream.
    pub events_written: u64,
    /// Flush every event (live following with `tail -f` during `--pace realtime`).
    pub flush_each: bool,
}

impl FileSink {
    /// A sink writing into `dir` (created if missing) and, optionally, an events file.
    pub fn new(dir: &Path, events: Option<&Path>) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let events = match events {
            Some(p) => Some(BufWriter::new(
                File::create(p).with_context(|| format!("creating {}", p.display()))?,
            )),
            None => None,
        };
        Ok(FileSink {
            dir: dir.to_path_buf(),
            events,
            vcons_written: 0,
            events_written: 0,
            flush_each: false,
        })
    }

    /// Handles one event.
    pub fn handle(&mut self, ev: &Arc<VconEvent>) -> Result<()> {
        if let Some(w) = self.events.as_mut() {
            w.write_all(ev.to_json_line().as_bytes())?;
            w.write_all(b"\n")?;
            if self.flush_each {
                w.flush()?;
            }
            self.events_written += 1;
        }
        if ev.kind == EventKind::Finished {
            let name = format!("{}.vcon.json", ev.uuid);
            let tmp = self.dir.join(format!(".{name}.tmp"));
            std::fs::write(&tmp, ev.vcon_json.as_bytes())
                .with_context(|| format!("writing {}", tmp.display()))?;
            std::fs::rename(&tmp, self.dir.join(&name))?;
            self.vcons_written += 1;
        }
        Ok(())
    }

    /// Flushes the events stream.
    pub fn flush(&mut self) -> Result<()> {
        if let Some(w) = self.events.as_mut() {
            w.flush()?;
        }
        Ok(())
    }
}
