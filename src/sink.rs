//! The `--events FILE` stream: every engine event appended as one JSON line in emission
//! order (flushed after each event with `--pace realtime`, so `tail -f` follows calls).
//! Finished vCons go through the delivery core (`crate::outputs`), not here.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use vcontap_engine::VconEvent;

/// Writes the events stream.
pub struct EventsFile {
    w: BufWriter<File>,
    /// Events written.
    pub written: u64,
    /// Flush every event.
    pub flush_each: bool,
}

impl EventsFile {
    /// Creates (truncates) the file.
    pub fn create(p: &Path) -> Result<Self> {
        Ok(EventsFile {
            w: BufWriter::new(
                File::create(p).with_context(|| format!("creating {}", p.display()))?,
            ),
            written: 0,
            flush_each: false,
        })
    }

    /// Appends one event.
    pub fn write(&mut self, ev: &Arc<VconEvent>) -> Result<()> {
        self.w.write_all(ev.to_json_line().as_bytes())?;
        self.w.write_all(b"\n")?;
        if self.flush_each {
            self.w.flush()?;
        }
        self.written += 1;
        Ok(())
    }

    /// Flushes.
    pub fn flush(&mut self) -> Result<()> {
        Ok(self.w.flush()?)
    }
}
