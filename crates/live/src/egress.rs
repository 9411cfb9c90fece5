//! Conserver egress lists (`GET /vcon/egress`): bounded lists of finished uuids a
//! conserver follower pops newest first, each optionally backed by a journal file so a
//! restart does not lose the uuids nobody pulled yet.
//!
//! # Journal
//!
//! One append-only text file per list, `DIR/<list>.journal`, one record per line:
//! `+<uuid>` (pushed) or `-<uuid>` (popped, i.e. consumed). Loading replays the records
//! through the same bounded list (so the overflow policy applies as it did live), then
//! rewrites the file with only what is left (`+` lines), via a temporary file, `fsync` and
//! `rename`. Appends are one `write(2)` per push or pop batch, made before the uuids are
//! handed out; the file is compacted the same way whenever it holds more than twice the
//! live entries plus [`COMPACT_SLACK`] lines, so its size stays bounded by the list bound.
//!
//! Hand-written because it is ~200 lines over `std::fs`: a database (sled, redb) would be a
//! large dependency for a list of short strings.
//!
//! # Durability (fsync policy)
//!
//! Records reach the kernel at once, so a process crash or restart loses nothing: a uuid
//! pushed before the restart and not popped is offered after it, exactly once. `fdatasync`
//! runs on [`EgressList::sync`] (the daemon calls it every second while records are
//! pending), at compaction and when the list is dropped: a power loss can lose the last
//! second of records, which means a popped uuid offered again or a pushed one missing (the
//! file sink and the other sinks still have every vCon).
//!
//! # Damage
//!
//! A line that is not a record (corruption, a write cut short by a crash) is skipped and
//! counted ([`LoadReport::bad_records`]); a longer-than-possible line is skipped without
//! being buffered. Start-up goes on with what was readable.
//!
//! # Overflow
//!
//! At most `max` uuids per list: a push beyond drops the **oldest** uuid (counted), the one
//! a newest-first follower would reach last.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Lines a journal may hold beyond twice the live entries before it is compacted.
pub const COMPACT_SLACK: usize = 4096;

/// Longest record line accepted (a uuid is 36 bytes; room for other id shapes).
const MAX_LINE: usize = 256;

/// Longest list name (it becomes a file name).
const MAX_NAME: usize = 128;

/// A journal could not be opened, read or rewritten.
#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    /// The list name cannot be a file name.
    #[error("egress list name {0:?}: use 1 to 128 of A-Z a-z 0-9 _ - . (not starting with .)")]
    BadName(String),
    /// File system error on the journal.
    #[error("egress journal {path}: {source}")]
    Io {
        /// The journal or its directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// Whether `name` can name a journal file (`[A-Za-z0-9_.-]`, 1 to 128, no leading dot).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// What loading a journal found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LoadReport {
    /// Uuids waiting in the list after the replay.
    pub recovered: usize,
    /// Lines skipped because they were not records (damage, a cut-short write).
    pub bad_records: u64,
    /// Uuids the replay dropped because the list was full (the overflow policy).
    pub dropped: u64,
}

struct Journal {
    path: PathBuf,
    file: File,
    lines: usize,
    /// Records written since the last `fdatasync`.
    dirty: bool,
}

/// One egress list: newest-first pops, a bound with drop-oldest, an optional journal.
pub struct EgressList {
    name: String,
    max: usize,
    items: VecDeque<Arc<str>>,
    journal: Option<Journal>,
    /// Journal writes that failed (the list goes on in memory).
    pub write_errors: u64,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> EgressError + '_ {
    move |source| EgressError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl EgressList {
    /// A list kept in memory only.
    pub fn in_memory(name: &str, max: usize) -> Self {
        EgressList {
            name: name.to_string(),
            max: max.max(1),
            items: VecDeque::new(),
            journal: None,
            write_errors: 0,
        }
    }

    /// A list backed by `dir/<name>.journal`: replays and compacts the file if it exists
    /// (damaged lines are skipped and counted), creates it otherwise.
    pub fn open(dir: &Path, name: &str, max: usize) -> Result<(Self, LoadReport), EgressError> {
        if !valid_name(name) {
            return Err(EgressError::BadName(name.to_string()));
        }
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let path = dir.join(format!("{name}.journal"));
        let mut list = EgressList::in_memory(name, max);
        let mut report = LoadReport::default();
        match File::open(&path) {
            Ok(f) => list.replay(f, &mut report).map_err(io_err(&path))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&path)(e)),
        }
        report.recovered = list.items.len();
        list.journal = Some(rewrite(&path, &list.items)?);
        Ok((list, report))
    }

    /// Replays journal records from `r`, line by line, never buffering more than
    /// [`MAX_LINE`] bytes of one line.
    fn replay(&mut self, mut r: impl Read, report: &mut LoadReport) -> std::io::Result<()> {
        let mut buf = vec![0u8; 64 * 1024];
        let mut line: Vec<u8> = Vec::with_capacity(MAX_LINE);
        let mut overlong = false;
        loop {
            let n = match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            for &b in buf.get(..n).unwrap_or_default() {
                if b == b'\n' {
                    if overlong || !self.apply(&line, report) {
                        report.bad_records += 1;
                    }
                    line.clear();
                    overlong = false;
                } else if line.len() < MAX_LINE {
                    line.push(b);
                } else {
                    overlong = true;
                }
            }
        }
        // A last line without its newline: a write cut short.
        if !line.is_empty() || overlong {
            report.bad_records += 1;
        }
        Ok(())
    }

    /// Applies one record; false when the line is not one.
    fn apply(&mut self, line: &[u8], report: &mut LoadReport) -> bool {
        let Ok(text) = std::str::from_utf8(line) else {
            return false;
        };
        let (op, id) = match (text.strip_prefix('+'), text.strip_prefix('-')) {
            (Some(id), _) => ('+', id),
            (_, Some(id)) => ('-', id),
            _ => return false,
        };
        if id.is_empty()
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return false;
        }
        if op == '+' {
            if self.push_mem(id.into()) {
                report.dropped += 1;
            }
        } else if self.items.back().is_some_and(|b| &**b == id) {
            self.items.pop_back();
        } else if let Some(i) = self.items.iter().rposition(|u| &**u == id) {
            self.items.remove(i);
        }
        true
    }

    /// Pushes in memory; true when the oldest uuid was dropped to make room.
    fn push_mem(&mut self, uuid: Arc<str>) -> bool {
        self.items.push_back(uuid);
        if self.items.len() > self.max {
            self.items.pop_front();
            return true;
        }
        false
    }

    /// The list's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Uuids waiting.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether no uuid is waiting.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Where the journal is, if the list has one.
    pub fn journal_path(&self) -> Option<&Path> {
        self.journal.as_ref().map(|j| j.path.as_path())
    }

    /// Adds a finished uuid (journaled first); true when the oldest was dropped.
    pub fn push(&mut self, uuid: Arc<str>) -> bool {
        let mut rec = Vec::with_capacity(uuid.len() + 2);
        rec.push(b'+');
        rec.extend_from_slice(uuid.as_bytes());
        rec.push(b'\n');
        self.append(&rec, 1);
        self.push_mem(uuid)
    }

    /// Pops up to `limit` uuids, newest first (the conserver's `RPOP`); the pops are
    /// journaled before they are returned.
    pub fn pop(&mut self, limit: usize) -> Vec<Arc<str>> {
        let mut out = Vec::with_capacity(limit.min(self.items.len()));
        while out.len() < limit {
            match self.items.pop_back() {
                Some(u) => out.push(u),
                None => break,
            }
        }
        if !out.is_empty() {
            let mut rec = Vec::with_capacity(out.len() * 38);
            for u in &out {
                rec.push(b'-');
                rec.extend_from_slice(u.as_bytes());
                rec.push(b'\n');
            }
            self.append(&rec, out.len());
        }
        out
    }

    fn append(&mut self, rec: &[u8], lines: usize) {
        let Some(j) = self.journal.as_mut() else {
            return;
        };
        if j.file.write_all(rec).is_err() {
            self.write_errors += 1;
            return;
        }
        j.dirty = true;
        j.lines += lines;
        if j.lines > self.items.len().saturating_mul(2) + COMPACT_SLACK {
            self.compact();
        }
    }

    /// Rewrites the journal with only the waiting uuids.
    fn compact(&mut self) {
        let Some(path) = self.journal.as_ref().map(|j| j.path.clone()) else {
            return;
        };
        match rewrite(&path, &self.items) {
            Ok(j) => self.journal = Some(j),
            Err(_) => self.write_errors += 1,
        }
    }

    /// `fdatasync`s the journal if records were written since the last call.
    pub fn sync(&mut self) {
        if let Some(j) = self.journal.as_mut().filter(|j| j.dirty) {
            if j.file.sync_data().is_ok() {
                j.dirty = false;
            } else {
                self.write_errors += 1;
            }
        }
    }
}

impl Drop for EgressList {
    fn drop(&mut self) {
        self.sync();
    }
}

/// Writes `items` as a fresh journal (temporary file, fsync, rename, directory fsync) and
/// opens it for appending.
fn rewrite(path: &Path, items: &VecDeque<Arc<str>>) -> Result<Journal, EgressError> {
    let tmp = path.with_extension("journal.tmp");
    let mut text = Vec::with_capacity(items.len() * 38);
    for u in items {
        text.push(b'+');
        text.extend_from_slice(u.as_bytes());
        text.push(b'\n');
    }
    let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
    f.write_all(&text).map_err(io_err(&tmp))?;
    f.sync_data().map_err(io_err(&tmp))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io_err(path))?;
    if let Some(dir) = path.parent() {
        // The rename is durable once the directory is.
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    let file = OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(io_err(path))?;
    Ok(Journal {
        path: path.to_path_buf(),
        file,
        lines: items.len(),
        dirty: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("vcontap-egress-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn ids(v: &[Arc<str>]) -> Vec<&str> {
        v.iter().map(|u| &**u).collect()
    }

    #[test]
    fn a_reopened_list_offers_what_was_not_popped_exactly_once() {
        let d = dir("reopen");
        let (mut l, r) = EgressList::open(&d, "out", 100).unwrap();
        assert_eq!(r, LoadReport::default());
        for u in ["u1", "u2", "u3", "u4"] {
            l.push(u.into());
        }
        assert_eq!(ids(&l.pop(1)), ["u4"]);
        drop(l);
        let (mut l, r) = EgressList::open(&d, "out", 100).unwrap();
        assert_eq!(r.recovered, 3);
        assert_eq!(r.bad_records, 0);
        assert_eq!(ids(&l.pop(10)), ["u3", "u2", "u1"]);
        drop(l);
        let (mut l, r) = EgressList::open(&d, "out", 100).unwrap();
        assert_eq!(r.recovered, 0);
        assert!(l.pop(10).is_empty());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn damaged_lines_and_a_cut_short_tail_are_skipped_and_counted() {
        let d = dir("damaged");
        std::fs::create_dir_all(&d).unwrap();
        let mut text = b"+a1\n+a2\n\x00\xffgarbage\n+a3\n-a2\n".to_vec();
        text.extend(std::iter::repeat_n(b'x', 10_000));
        text.extend(b"\n+a4\n+a5-cut");
        std::fs::write(d.join("out.journal"), &text).unwrap();
        let (mut l, r) = EgressList::open(&d, "out", 100).unwrap();
        assert_eq!(r.bad_records, 3, "garbage, overlong, cut-short tail");
        assert_eq!(r.recovered, 3);
        assert_eq!(ids(&l.pop(10)), ["a4", "a3", "a1"]);
        // The rewritten journal is clean.
        drop(l);
        let (_, r) = EgressList::open(&d, "out", 100).unwrap();
        assert_eq!(r, LoadReport::default());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn the_bound_drops_the_oldest_and_the_file_stays_small() {
        let d = dir("bound");
        let (mut l, _) = EgressList::open(&d, "out", 3).unwrap();
        let dropped = (0..5).filter(|i| l.push(format!("b{i}").into())).count();
        assert_eq!(dropped, 2, "b0 and b1 made room");
        assert_eq!(ids(&l.pop(1)), ["b4"]);
        // Churn far past the compaction threshold: the file holds about the live entries.
        for i in 0..(3 * COMPACT_SLACK) {
            assert!(!l.push(format!("c{i}").into()));
            assert_eq!(l.pop(1).len(), 1);
        }
        let size = std::fs::metadata(d.join("out.journal")).unwrap().len();
        assert!(
            size < (2 * 3 + COMPACT_SLACK as u64 + 2) * 8,
            "{size} bytes"
        );
        drop(l);
        let (mut l, r) = EgressList::open(&d, "out", 3).unwrap();
        assert_eq!((r.recovered, r.bad_records), (2, 0));
        assert_eq!(ids(&l.pop(5)), ["b3", "b2"]);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn names_must_be_file_names() {
        assert!(valid_name("vcontap_out"));
        assert!(valid_name("tap-out.v1"));
        for bad in ["", ".hidden", "a/b", "../x", "a b", &"x".repeat(129)] {
            assert!(!valid_name(bad), "{bad:?}");
            assert!(matches!(
                EgressList::open(&dir("names"), bad, 10),
                Err(EgressError::BadName(_))
            ));
        }
    }
}
