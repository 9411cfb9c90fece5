//! `vcontap spool list|retry|drop`: the operator's view of the delivery spool.
//!
//! - `list` reads without the lock (works while a daemon runs): per sink its cursor and
//!   what it still owes, then dead letters; `--records` lists each pending vCon.
//! - `retry` sends dead letters back to the sink that refused them (appended to the spool
//!   as new records owed to that sink only); `drop` gives up on pending records or dead
//!   letters. Both change the spool, so they take its lock: stop the daemon first.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use vcontap_sinks::spool::{sink_file_name, Spool, SpoolConfig};

#[derive(clap::Args, Debug)]
pub struct SpoolArgs {
    #[command(subcommand)]
    cmd: SpoolCmd,
    /// The spool directory (default as for `replay --spool`).
    #[arg(long, global = true, value_name = "DIR")]
    spool: Option<PathBuf>,
}

#[derive(clap::Subcommand, Debug)]
enum SpoolCmd {
    /// What the spool holds: per sink what it still owes, and the dead letters.
    List {
        /// Also list every pending vCon.
        #[arg(long)]
        records: bool,
    },
    /// Send dead letters back to the sink that refused them.
    Retry {
        /// Only this sink's dead letters.
        #[arg(long)]
        sink: Option<String>,
        /// Only these uuids (default: all).
        uuids: Vec<String>,
    },
    /// Give up on pending vCons (never delivered) or, with --dead, delete dead letters.
    Drop {
        /// Only for this sink (with no uuids: everything owed to it, e.g. a removed sink).
        #[arg(long)]
        sink: Option<String>,
        /// Delete dead letters instead of pending records.
        #[arg(long)]
        dead: bool,
        /// Every pending record (or dead letter).
        #[arg(long)]
        all: bool,
        /// These uuids.
        uuids: Vec<String>,
    },
}

struct DeadLetter {
    sink: String,
    uuid: String,
    reason: String,
    body: PathBuf,
    reason_file: PathBuf,
}

fn dead_letters(dir: &Path) -> Vec<DeadLetter> {
    let mut out = Vec::new();
    let Ok(sinks) = std::fs::read_dir(dir.join("dead")) else {
        return out;
    };
    for s in sinks.flatten() {
        let Ok(files) = std::fs::read_dir(s.path()) else {
            continue;
        };
        for f in files.flatten() {
            let p = f.path();
            let name = f.file_name().to_string_lossy().into_owned();
            let Some(uuid) = name.strip_suffix(".reason.json") else {
                continue;
            };
            let Ok(text) = std::fs::read_to_string(&p) else {
                continue;
            };
            let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            out.push(DeadLetter {
                sink: v["sink"].as_str().unwrap_or("?").to_string(),
                uuid: uuid.to_string(),
                reason: v["reason"].as_str().unwrap_or("").to_string(),
                body: s.path().join(format!("{uuid}.vcon.json")),
                reason_file: p,
            });
        }
    }
    out.sort_by(|a, b| (&a.sink, &a.uuid).cmp(&(&b.sink, &b.uuid)));
    out
}

pub fn run(a: SpoolArgs) -> Result<()> {
    let dir = a.spool.unwrap_or_else(crate::outputs::default_spool_dir);
    match a.cmd {
        SpoolCmd::List { records } => list(&dir, records),
        SpoolCmd::Retry { sink, uuids } => retry(&dir, sink.as_deref(), &uuids),
        SpoolCmd::Drop {
            sink,
            dead,
            all,
            uuids,
        } => {
            if !all && uuids.is_empty() && (dead || sink.is_none()) {
                bail!("say what to drop: uuids, --all, or --sink NAME");
            }
            if dead {
                drop_dead(&dir, sink.as_deref(), all, &uuids)
            } else {
                drop_pending(&dir, sink.as_deref(), all, &uuids)
            }
        }
    }
}

fn list(dir: &Path, records: bool) -> Result<()> {
    let s = Spool::inspect(dir)?;
    let pending = s.pending()?;
    println!(
        "spool {}: {} segment file(s), {:.1} MB, next id {}",
        dir.display(),
        s.segment_count(),
        s.bytes() as f64 / 1e6,
        s.head()
    );
    let mut owed: BTreeMap<&str, usize> = BTreeMap::new();
    for p in &pending {
        for o in &p.owed_to {
            *owed.entry(o.as_str()).or_default() += 1;
        }
    }
    for (name, cursor) in s.sinks_on_disk() {
        println!(
            "  sink {name}: cursor {cursor}, {} vCon(s) pending",
            owed.get(name.as_str()).copied().unwrap_or(0)
        );
    }
    if records {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        for p in &pending {
            println!(
                "  {:>8} {} {:>8} B  {:>7.1} s old  owed to {}",
                p.id,
                p.uuid,
                p.bytes,
                now.saturating_sub(p.spooled_unix_ms) as f64 / 1000.0,
                p.owed_to.join(", ")
            );
        }
    }
    let dead = dead_letters(dir);
    println!("dead letters: {}", dead.len());
    for d in &dead {
        println!("  {} {}: {}", d.sink, d.uuid, d.reason);
    }
    Ok(())
}

fn retry(dir: &Path, sink: Option<&str>, uuids: &[String]) -> Result<()> {
    let mut spool = Spool::open(SpoolConfig::new(dir), Vec::new())?;
    let chosen: Vec<DeadLetter> = dead_letters(dir)
        .into_iter()
        .filter(|d| sink.is_none_or(|s| s == d.sink))
        .filter(|d| uuids.is_empty() || uuids.contains(&d.uuid))
        .filter(|d| !d.sink.starts_with('_'))
        .collect();
    let mut by_sink: BTreeMap<String, Vec<DeadLetter>> = BTreeMap::new();
    for d in chosen {
        by_sink.entry(d.sink.clone()).or_default().push(d);
    }
    let mut n = 0;
    for (s, letters) in by_sink {
        spool.set_sinks(vec![s.clone()]);
        let mut batch = Vec::new();
        for d in &letters {
            let json =
                std::fs::read(&d.body).with_context(|| format!("reading {}", d.body.display()))?;
            batch.push((Arc::<str>::from(d.uuid.as_str()), Bytes::from(json)));
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        spool.append(&batch, now)?;
        for d in &letters {
            let _ = std::fs::remove_file(&d.body);
            let _ = std::fs::remove_file(&d.reason_file);
        }
        println!("{} dead letter(s) queued again for {s}", letters.len());
        n += letters.len();
    }
    if n == 0 {
        println!("no dead letters matched");
    } else {
        println!("they are delivered when vcontap next runs with that sink configured");
    }
    Ok(())
}

fn drop_dead(dir: &Path, sink: Option<&str>, all: bool, uuids: &[String]) -> Result<()> {
    let _lock = Spool::open(SpoolConfig::new(dir), Vec::new())?;
    let mut n = 0;
    for d in dead_letters(dir) {
        if sink.is_some_and(|s| s != d.sink) || !(all || uuids.contains(&d.uuid)) {
            continue;
        }
        std::fs::remove_file(&d.body).ok();
        std::fs::remove_file(&d.reason_file).ok();
        n += 1;
    }
    println!("{n} dead letter(s) deleted");
    Ok(())
}

fn drop_pending(dir: &Path, sink: Option<&str>, all: bool, uuids: &[String]) -> Result<()> {
    let mut spool = Spool::open(SpoolConfig::new(dir), Vec::new())?;
    if let (Some(s), true) = (sink, uuids.is_empty()) {
        let known = spool.sinks_on_disk().iter().any(|(n, _)| n == s);
        if !known {
            bail!(
                "no segment owes anything to sink `{s}` (cursor file {}.cursor)",
                sink_file_name(s)
            );
        }
        spool.forget_sink(s)?;
        println!("everything owed to {s} dropped");
        return Ok(());
    }
    let ids: Vec<_> = spool
        .pending()?
        .into_iter()
        .filter(|p| all || uuids.contains(&p.uuid))
        .map(|p| p.id)
        .collect();
    spool.drop_records(&ids)?;
    println!("{} pending vCon(s) dropped", ids.len());
    Ok(())
}
