//! `--shards N` gives the same vCons as one shard: every public capture in
//! `../shared/captures` is replayed with `--shards 1` and `--shards 4` and the results are
//! compared call by call — uuids, parties, streams (SSRC, direction, packets), recording
//! segments (parties, duration), end reason. Skips with a message when the captures are absent.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

/// What must not depend on the shard count, per vCon uuid.
fn digest(out: &Path) -> BTreeMap<String, Value> {
    let mut m = BTreeMap::new();
    for v in common::vcons(out) {
        let mut streams: Vec<Value> = v["analysis"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter(|a| a["schema"] == "vcontap-rtp-quality")
            .flat_map(|a| a["body"]["streams"].as_array().cloned().unwrap_or_default())
            .chain(
                v["vcontap"]["rtp_quality"]["streams"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default(),
            )
            .map(|s| json!([s["ssrc"], s["src"], s["dst"], s["packets"]]))
            .collect();
        streams.sort_by_key(|s| s.to_string());
        let recordings: Vec<Value> = v["dialog"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter(|d| d["type"] == "recording")
            .map(|d| json!([d["parties"], d["start"], d["duration"]]))
            .collect();
        let uuid = v["uuid"].as_str().unwrap_or_default().to_string();
        m.insert(
            uuid,
            json!({
                "parties": v["parties"],
                "streams": streams,
                "recordings": recordings,
                "end": v["vcontap"]["end_reason"],
                "dialogs": v["dialog"].as_array().map_or(0, |d| d.len()),
            }),
        );
    }
    m
}

fn replay(capture: &Path, out: &Path, shards: &str) -> bool {
    let o = Command::new(env!("CARGO_BIN_EXE_vcontap"))
        .arg("replay")
        .arg(capture)
        .arg("--out")
        .arg(out)
        .arg("--spool")
        .arg(out.with_extension("spool"))
        .args([
            "--quiet",
            "--host",
            "shards.vcontap.example",
            "--shards",
            shards,
        ])
        .output()
        .expect("run vcontap");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("panicked"), "{}: {err}", capture.display());
    o.status.success()
}

#[test]
fn four_shards_give_the_same_vcons_as_one_on_every_public_capture() {
    let Some(shared) = common::shared() else {
        return;
    };
    let dir = shared.join("captures");
    let mut captures: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    captures.retain(|p| {
        let n = p.to_string_lossy();
        n.ends_with(".pcap") || n.ends_with(".pcapng") || n.ends_with(".cap")
    });
    captures.sort();
    if captures.is_empty() {
        eprintln!("skipped: no captures in {}", dir.display());
        return;
    }
    let root = common::tmpdir("shards");
    let mut diffs = Vec::new();
    let mut calls = 0;
    for (i, c) in captures.iter().enumerate() {
        let (one, four) = (root.join(format!("{i}-1")), root.join(format!("{i}-4")));
        let ok1 = replay(c, &one, "1");
        let ok4 = replay(c, &four, "4");
        let name = c.file_name().unwrap().to_string_lossy().to_string();
        if ok1 != ok4 {
            diffs.push(format!(
                "{name}: exit status differs (1 shard ok={ok1}, 4 shards ok={ok4})"
            ));
            continue;
        }
        if !ok1 {
            continue;
        }
        let (a, b) = (digest(&one), digest(&four));
        calls += a.len();
        if a != b {
            let only1: Vec<_> = a.keys().filter(|k| !b.contains_key(*k)).collect();
            let only4: Vec<_> = b.keys().filter(|k| !a.contains_key(*k)).collect();
            let mut what = format!("{name}: {} vs {} vCons", a.len(), b.len());
            if !only1.is_empty() || !only4.is_empty() {
                what += &format!("; only with 1 shard {only1:?}, only with 4 {only4:?}");
            }
            for (k, v) in &a {
                if let Some(w) = b.get(k) {
                    if v != w {
                        what += &format!("\n    {k}:\n      1: {v}\n      4: {w}");
                    }
                }
            }
            diffs.push(what);
        }
    }
    println!(
        "{} captures, {calls} vCons compared between 1 and 4 shards",
        captures.len()
    );
    assert!(diffs.is_empty(), "shards disagree:\n{}", diffs.join("\n"));
    let _ = std::fs::remove_dir_all(&root);
}
