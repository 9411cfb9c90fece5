//! Shared helpers for the integration tests: locating `../shared`, running the real binary,
//! reading its outputs, validating every vCon with `validate-vcon` and the Rust-side checks.

#![allow(dead_code)]

pub mod netns;
pub mod siprec;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// The shared reference folder, or `None` (with a printed skip message) when absent.
pub fn shared() -> Option<PathBuf> {
    let p = std::env::var_os("VCONTAP_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"));
    if p.is_dir() {
        Some(p)
    } else {
        eprintln!(
            "skipped: shared test data not found (set VCONTAP_SHARED or place it at ../shared)"
        );
        None
    }
}

/// A fresh, empty directory for one test.
pub fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vcontap-test-{}-{}", name, std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs `vcontap replay` with `args` into `out`, with events; panics with stderr on failure.
pub fn replay(captures: &[&Path], out: &Path, extra: &[&str]) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vcontap"));
    cmd.arg("replay");
    for c in captures {
        cmd.arg(c);
    }
    cmd.arg("--out")
        .arg(out)
        .arg("--events")
        .arg(out.join("events.jsonl"));
    cmd.args(["--quiet", "--host", "test.vcontap.example"]);
    cmd.arg("--spool").arg(spool_for(out));
    cmd.args(extra);
    let o = cmd.output().expect("run vcontap");
    let stderr = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(o.status.success(), "vcontap replay failed: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

/// The spool a test's replay into `out` uses: beside it, never shared between tests.
pub fn spool_for(out: &Path) -> PathBuf {
    out.with_extension("spool")
}

/// Every `*.vcon.json` the file sink wrote under `out` (`YYYY/MM/DD/<uuid>.vcon.json`),
/// sorted; `media/` and `snapshots/` are not vCon output.
pub fn vcon_files(out: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, acc: &mut Vec<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if p.is_dir() {
                if name != "media" && name != "snapshots" {
                    walk(&p, acc);
                }
            } else if name.ends_with(".vcon.json") {
                acc.push(p);
            }
        }
    }
    let mut acc = Vec::new();
    walk(out, &mut acc);
    acc.sort();
    acc
}

/// All finished vCons in `out`, parsed.
pub fn vcons(out: &Path) -> Vec<Value> {
    let mut v: Vec<(String, Value)> = vcon_files(out)
        .into_iter()
        .map(|p| {
            (
                p.to_string_lossy().to_string(),
                serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap(),
            )
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    for (path, vcon) in &v {
        if let Some(e) = recording_overlap(vcon) {
            panic!("{path}: {e}");
        }
    }
    v.into_iter().map(|x| x.1).collect()
}

/// Milliseconds since the epoch of a vCon time (`2026-01-01T00:00:01.234Z`, the engine's
/// own format: UTC, optional milliseconds).
pub fn vcon_time_ms(t: &str) -> Option<i64> {
    let (date, time) = t.strip_suffix('Z')?.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut h = hms.splitn(3, ':').map(|x| x.parse::<i64>().ok());
    let (hh, mm, ss) = (h.next()??, h.next()??, h.next()??);
    let ms: i64 = format!("{frac:0<3}").get(..3)?.parse().ok()?;
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + hh) * 60 + mm) * 60_000 + ss * 1000 + ms)
}

/// A description of the first overlap between two `recording` dialogs of a vCon, if any:
/// each must end (start + duration, as written) no later than the next one starts. Exact:
/// the engine starts a segment that follows another on a whole millisecond.
pub fn recording_overlap(v: &Value) -> Option<String> {
    let mut spans: Vec<(i64, i64)> = v["dialog"]
        .as_array()?
        .iter()
        .filter(|d| d["type"] == "recording")
        .filter_map(|d| {
            let start = vcon_time_ms(d["start"].as_str()?)?;
            let dur = (d["duration"].as_f64()? * 1000.0).round() as i64;
            Some((start, start + dur))
        })
        .collect();
    spans.sort();
    spans.windows(2).find(|w| w[0].1 > w[1].0).map(|w| {
        format!(
            "recording [{}, {}] ms overlaps the next one starting at {} ms",
            w[0].0, w[0].1, w[1].0
        )
    })
}

/// The events stream.
pub fn events(out: &Path) -> Vec<Value> {
    std::fs::read_to_string(out.join("events.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Checks the event-stream invariants: per uuid `seq` 1,2,3…, `created` first, exactly one
/// `finished` last, non-decreasing `at`, constant uuid, append-only arrays, and every
/// snapshot passes the Rust-side structural checks.
pub fn check_events(evs: &[Value]) {
    use std::collections::HashMap;
    let mut last: HashMap<String, (u64, String, String, Value)> = HashMap::new();
    for e in evs {
        let uuid = e["uuid"].as_str().unwrap().to_string();
        let seq = e["seq"].as_u64().unwrap();
        let kind = e["kind"].as_str().unwrap().to_string();
        let at = e["at"].as_str().unwrap().to_string();
        let v = e["vcon"].clone();
        assert_eq!(v["uuid"], e["uuid"], "snapshot uuid");
        let parsed: vcontap_vcon::Vcon = serde_json::from_value(v.clone()).unwrap();
        vcontap_vcon::check(&parsed).unwrap_or_else(|err| panic!("event {seq} of {uuid}: {err}"));
        match last.get(&uuid) {
            None => {
                assert_eq!(seq, 1, "{uuid} starts at seq 1");
                assert_eq!(kind, "created", "{uuid} starts with created");
            }
            Some((pseq, pkind, pat, pv)) => {
                assert_eq!(seq, pseq + 1, "{uuid} seq increments");
                assert_ne!(pkind, "finished", "{uuid}: event after finished");
                assert!(at >= *pat, "{uuid}: at goes backwards");
                for arr in ["dialog", "attachments", "analysis", "parties"] {
                    let a = pv[arr].as_array().cloned().unwrap_or_default();
                    let b = v[arr].as_array().cloned().unwrap_or_default();
                    assert!(a.len() <= b.len(), "{uuid}: {arr} shrank");
                    if arr == "dialog" {
                        for (x, y) in a.iter().zip(&b) {
                            assert_eq!(x["type"], y["type"], "{uuid}: dialog retyped");
                            assert_eq!(x["start"], y["start"], "{uuid}: dialog moved");
                        }
                    }
                }
            }
        }
        last.insert(uuid, (seq, kind, at, v));
    }
    for (uuid, (_, kind, _, _)) in last {
        assert_eq!(kind, "finished", "{uuid} never finished");
    }
}

/// Writes every event snapshot to `dir` as `NNNN.vcon.json` (for validate-vcon).
pub fn dump_snapshots(evs: &[Value], dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for (i, e) in evs.iter().enumerate() {
        std::fs::write(
            dir.join(format!("{i:05}.vcon.json")),
            serde_json::to_vec(&e["vcon"]).unwrap(),
        )
        .unwrap();
    }
}

/// Runs `../shared/tools/validate-vcon` over `paths`; skips (with a message) when absent.
pub fn validate(paths: &[&Path]) {
    let Some(shared) = shared() else { return };
    let tool = shared.join("tools/validate-vcon");
    if !tool.exists() {
        eprintln!("skipped: validate-vcon not found in {}", shared.display());
        return;
    }
    let o = Command::new(&tool)
        .arg("--quiet")
        .args(paths)
        .output()
        .expect("run validate-vcon");
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    match o.status.code() {
        Some(0) => {}
        Some(2) if out.contains("no *.vcon.json") || err.contains("no *.vcon.json") => {}
        Some(3) => panic!("validate-vcon environment problem (exit 3): {err}"),
        c => panic!("validate-vcon failed ({c:?}):\n{out}\n{err}"),
    }
}

/// Recomputes the sha512 content hash of a recording's `file://` URL and compares.
pub fn check_media_hash(dialog: &Value) -> PathBuf {
    let url = dialog["url"].as_str().unwrap();
    let path = PathBuf::from(url.strip_prefix("file://").expect("file:// url"));
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(
        dialog["content_hash"].as_str().unwrap(),
        vcontap_vcon::content_hash(&bytes),
        "hash of {url}"
    );
    path
}

/// Goertzel power of `freq` in `x` normalized by signal energy (1.0 = pure tone).
pub fn tone_share(x: &[f64], rate: f64, freq: f64) -> f64 {
    if x.is_empty() {
        return 0.0;
    }
    let w = 2.0 * std::f64::consts::PI * freq / rate;
    let c = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0, 0.0);
    for &v in x {
        let s = v + c * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    let p = s1 * s1 + s2 * s2 - c * s1 * s2;
    let e: f64 = x.iter().map(|v| v * v).sum();
    if e == 0.0 {
        0.0
    } else {
        2.0 * p / (e * x.len() as f64)
    }
}

/// Left and right channels of a 16-bit stereo WAV, and its rate.
pub fn read_stereo(path: &Path) -> (Vec<f64>, Vec<f64>, u32) {
    let mut r = hound::WavReader::open(path).unwrap();
    let spec = r.spec();
    assert_eq!(spec.channels, 2);
    assert_eq!(spec.bits_per_sample, 16);
    let s: Vec<i16> = r.samples::<i16>().map(|x| x.unwrap()).collect();
    let l = s.iter().step_by(2).map(|v| *v as f64).collect();
    let rr = s.iter().skip(1).step_by(2).map(|v| *v as f64).collect();
    (l, rr, spec.sample_rate)
}
