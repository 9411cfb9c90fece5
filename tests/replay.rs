//! End-to-end tests of `vcontap replay` on the project's own captures: the golden vCons of
//! `captures/demo.pcap`, and synthesizer round trips where every party, outcome, duration,
//! DTMF digit and per-channel tone planned by `vcontap-synth` must come back exactly.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::Value;
use vcontap_synth::{CallPlan, Codec, Outcome, SipTransport, SynthConfig};

fn synth(name: &str, cfg: &SynthConfig) -> (PathBuf, Vec<CallPlan>) {
    let dir = common::tmpdir(name);
    let pcap = dir.join("in.pcap");
    let f = std::fs::File::create(&pcap).unwrap();
    let s = vcontap_synth::generate(cfg, f).unwrap();
    (pcap, s.calls)
}

fn by_call_id(vcons: &[Value]) -> HashMap<String, Value> {
    let mut m = HashMap::new();
    for v in vcons {
        let cid = v["vcontap"]["sip_call_id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        m.insert(cid, v.clone());
    }
    m
}

fn history(v: &Value, event: &str) -> Vec<String> {
    v["vcontap"]["party_history"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|h| h["event"] == event)
        .map(|h| h["button"].as_str().unwrap_or("").to_string())
        .collect()
}

/// Checks one finished vCon against the plan of its call.
fn check_call(plan: &CallPlan, v: &Value, stereo: bool) {
    let ctx = format!("call {} ({:?})", plan.index, plan.outcome);
    assert_eq!(
        v["parties"][0]["tel"],
        plan.caller.number.as_str(),
        "{ctx}: caller tel"
    );
    assert_eq!(
        v["parties"][1]["tel"],
        plan.callee.number.as_str(),
        "{ctx}: callee tel"
    );
    assert_eq!(
        v["parties"][0]["name"],
        plan.caller.display.as_str(),
        "{ctx}: caller name"
    );
    assert_eq!(v["parties"][0]["validation"], "none");
    assert_eq!(v["parties"][0]["role"], "caller");
    assert_eq!(v["parties"][1]["role"], "callee");
    let dialogs = v["dialog"].as_array().cloned().unwrap_or_default();
    let expect_disp = match plan.outcome {
        Outcome::Answered => None,
        Outcome::Busy => Some("busy"),
        Outcome::NoAnswer => Some("no-answer"),
        Outcome::Rejected | Outcome::NotFound => Some("failed"),
    };
    match expect_disp {
        Some(disp) => {
            assert_eq!(dialogs.len(), 1, "{ctx}: one incomplete dialog");
            assert_eq!(dialogs[0]["type"], "incomplete");
            assert_eq!(dialogs[0]["disposition"], disp, "{ctx}");
            assert_eq!(dialogs[0]["sip_call_id"], plan.call_id.as_str());
            assert!(dialogs[0].get("url").is_none());
            assert_eq!(v["vcontap"]["state"], "finished");
        }
        None => {
            assert!(v["vcontap"]["answered_at"].is_string(), "{ctx}: answered");
            assert_eq!(v["vcontap"]["end_reason"], "bye", "{ctx}");
            let recs: Vec<&Value> = dialogs
                .iter()
                .filter(|d| d["type"] == "recording")
                .collect();
            if stereo {
                let expected_segments = if plan.hold.is_some() { 3 } else { 1 };
                assert_eq!(
                    recs.len(),
                    expected_segments,
                    "{ctx}: segments (hold cuts twice)"
                );
                let total: f64 = recs.iter().map(|d| d["duration"].as_f64().unwrap()).sum();
                assert!(
                    (total - plan.talk_seconds).abs() < 0.25,
                    "{ctx}: recorded {total} s of {} s talk",
                    plan.talk_seconds
                );
                // The first segment carries the caller's and callee's tones on the right channels.
                let path = common::check_media_hash(recs[0]);
                let (l, r, rate) = common::read_stereo(&path);
                let rate = rate as f64;
                let cl = common::tone_share(&l, rate, plan.caller_tone_hz);
                let cr = common::tone_share(&r, rate, plan.callee_tone_hz);
                let cross = common::tone_share(&l, rate, plan.callee_tone_hz);
                assert!(cl > 0.5, "{ctx}: caller tone on left: {cl}");
                assert!(cr > 0.5, "{ctx}: callee tone on right: {cr}");
                assert!(cross < 0.05, "{ctx}: callee tone leaked left: {cross}");
                for d in &recs {
                    common::check_media_hash(d);
                    assert_eq!(d["parties"], serde_json::json!([0, 1]));
                    assert_eq!(d["mediatype"], "audio/x-wav");
                    assert_eq!(d["sip_call_id"], plan.call_id.as_str());
                }
                if plan.hold.is_some() {
                    let h: Vec<&str> = recs[0]["party_history"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .filter_map(|x| x["event"].as_str())
                        .collect();
                    assert!(h.contains(&"hold"), "{ctx}: hold ends segment 0: {h:?}");
                }
            } else {
                assert!(recs.is_empty(), "{ctx}: no recording with --record none");
            }
            if plan.hold.is_some() {
                assert_eq!(history(v, "hold").len(), 1, "{ctx}: one hold");
                assert_eq!(history(v, "unhold").len(), 1, "{ctx}: one unhold");
            }
            let digits: String = history(v, "keydown").concat();
            assert_eq!(digits, plan.dtmf, "{ctx}: DTMF keydown digits");
            let ups: String = history(v, "keyup").concat();
            assert_eq!(ups, plan.dtmf, "{ctx}: DTMF keyup digits");
            // RTP quality analysis: two streams, nothing lost.
            let streams = match v["analysis"].as_array() {
                Some(a) => a
                    .iter()
                    .find(|x| x["schema"] == "vcontap-rtp-quality")
                    .expect("rtp quality")["body"]["streams"]
                    .clone(),
                None => v["vcontap"]["rtp_quality"]["streams"].clone(),
            };
            let streams = streams.as_array().cloned().expect("rtp quality streams");
            assert_eq!(streams.len(), 2, "{ctx}: two RTP streams");
            for s in streams {
                assert_eq!(s["lost"], 0, "{ctx}: loss");
                assert_eq!(s["duplicates"], 0);
            }
        }
    }
    let trace = v["attachments"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["purpose"] == "sip-message-trace"))
        .or_else(|| {
            dialogs
                .is_empty()
                .then(|| &v["vcontap"]["sip_message_trace"])
                .filter(|t| t.is_object())
        })
        .expect("sip trace attachment (or in the vcontap object when there is no dialog)");
    let trace_body = if trace["body"].is_object() {
        &trace["body"]
    } else {
        trace
    };
    assert_eq!(trace_body["call_id"], plan.call_id.as_str());
    let text = trace.to_string();
    assert!(
        !text.contains("Proxy-Authorization"),
        "{ctx}: credentials in trace"
    );
}

fn run_roundtrip(name: &str, cfg: SynthConfig, extra: &[&str]) {
    let (pcap, plans) = synth(name, &cfg);
    let out = pcap.parent().unwrap().join("out");
    common::replay(&[&pcap], &out, extra);
    let vcons = common::vcons(&out);
    assert_eq!(vcons.len(), plans.len(), "one vCon per call");
    let map = by_call_id(&vcons);
    let stereo = !extra.contains(&"none");
    for p in &plans {
        let v = map
            .get(&p.call_id)
            .unwrap_or_else(|| panic!("no vCon for {}", p.call_id));
        let parsed: vcontap_vcon::Vcon = serde_json::from_value(v.clone()).unwrap();
        vcontap_vcon::check(&parsed).unwrap();
        check_call(p, v, stereo);
    }
    let evs = common::events(&out);
    common::check_events(&evs);
    let snaps = out.join("snapshots");
    common::dump_snapshots(&evs, &snaps);
    common::validate(&[&out, &snaps]);
}

#[test]
fn roundtrip_udp_g711_g722_dtmf_hold_failures() {
    let cfg = SynthConfig {
        calls: 8,
        concurrent: 4,
        seconds: 4.0,
        codecs: vec![Codec::Pcmu, Codec::Pcma, Codec::G722],
        dtmf: Some("159#".into()),
        failure_every: 2,
        hold: true,
        seed: 11,
        ..SynthConfig::default()
    };
    run_roundtrip("udp", cfg, &[]);
}

#[test]
fn roundtrip_tcp_vlan_ipv6_auth() {
    let cfg = SynthConfig {
        calls: 6,
        concurrent: 3,
        seconds: 3.0,
        dtmf: Some("42".into()),
        failure_every: 3,
        transport: SipTransport::Tcp,
        vlan: Some(120),
        ipv6: true,
        auth_challenge: true,
        seed: 5,
        ..SynthConfig::default()
    };
    run_roundtrip("tcp", cfg, &[]);
}

#[test]
fn roundtrip_sip_info_dtmf_record_none() {
    let cfg = SynthConfig {
        calls: 4,
        concurrent: 2,
        seconds: 3.0,
        dtmf: Some("7*".into()),
        sip_info_dtmf: true,
        hold: true,
        seed: 3,
        ..SynthConfig::default()
    };
    run_roundtrip("info", cfg, &["--record", "none"]);
}

/// The shipped Opus capture (made with libopus by `vcontap synth`, see captures/README.md)
/// decodes in the default build: the pure-Rust decoder records both tones, no undecodable
/// codec is named.
#[test]
fn opus_capture_records_in_the_default_build() {
    let cfg = SynthConfig {
        calls: 2,
        concurrent: 1,
        seconds: 3.0,
        codecs: vec![Codec::Opus],
        seed: 9,
        ..SynthConfig::default()
    };
    let plans = vcontap_synth::plan(&cfg);
    let pcap = Path::new(env!("CARGO_MANIFEST_DIR")).join("captures/opus.pcap");
    let out = common::tmpdir("opus-default").join("out");
    common::replay(&[&pcap], &out, &[]);
    let vcons = common::vcons(&out);
    assert_eq!(vcons.len(), plans.len(), "one vCon per call");
    let map = by_call_id(&vcons);
    for p in &plans {
        let v = map
            .get(&p.call_id)
            .unwrap_or_else(|| panic!("no vCon for {}", p.call_id));
        assert!(
            v["vcontap"]["undecodable_codecs"].is_null(),
            "Opus is decodable in every build: {}",
            v["vcontap"]
        );
        check_call(p, v, true);
    }
    common::validate(&[&out]);
}

#[cfg(feature = "opus")]
#[test]
fn roundtrip_opus() {
    let cfg = SynthConfig {
        calls: 2,
        concurrent: 1,
        seconds: 3.0,
        codecs: vec![Codec::Opus],
        seed: 9,
        ..SynthConfig::default()
    };
    run_roundtrip("opus", cfg, &[]);
}

#[test]
fn periodic_segments_cover_the_call() {
    let cfg = SynthConfig {
        calls: 1,
        concurrent: 1,
        seconds: 7.0,
        seed: 2,
        ..SynthConfig::default()
    };
    let (pcap, plans) = synth("segments", &cfg);
    let out = pcap.parent().unwrap().join("out");
    common::replay(
        &[&pcap],
        &out,
        &[
            "--segment-seconds",
            "2",
            "--media-base-url",
            "https://media.example/rec/",
        ],
    );
    let v = &common::vcons(&out)[0];
    let recs: Vec<&Value> = v["dialog"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["type"] == "recording")
        .collect();
    assert_eq!(recs.len(), 4, "7 s in 2 s segments");
    for d in &recs {
        let url = d["url"].as_str().unwrap();
        let file = d["filename"].as_str().unwrap();
        assert_eq!(
            url,
            format!("https://media.example/rec/{file}"),
            "base URL + file name"
        );
        let bytes = std::fs::read(out.join("media").join(file)).unwrap();
        assert_eq!(
            d["content_hash"],
            vcontap_vcon::content_hash(&bytes).as_str()
        );
    }
    let total: f64 = recs.iter().map(|d| d["duration"].as_f64().unwrap()).sum();
    assert!(
        (total - plans[0].talk_seconds).abs() < 0.25,
        "segments add up: {total}"
    );
    for w in recs.windows(2) {
        assert!(
            w[0]["start"].as_str() < w[1]["start"].as_str(),
            "segments in time order"
        );
    }
    let evs = common::events(&out);
    let seg_events = evs.iter().filter(|e| e["kind"] == "segment").count();
    assert_eq!(seg_events, 4, "one segment event per segment");
    common::check_events(&evs);
}

#[test]
fn shards_give_the_same_vcons_as_one_engine() {
    let cfg = SynthConfig {
        calls: 12,
        concurrent: 6,
        seconds: 2.0,
        failure_every: 4,
        dtmf: Some("3".into()),
        seed: 21,
        ..SynthConfig::default()
    };
    let (pcap, _) = synth("shards", &cfg);
    let dir = pcap.parent().unwrap();
    let one = dir.join("one");
    let two = dir.join("two");
    common::replay(&[&pcap], &one, &[]);
    common::replay(&[&pcap], &two, &["--shards", "2"]);
    let norm = |out: &Path| -> Vec<(String, Vec<String>, Vec<String>)> {
        let mut v: Vec<_> = common::vcons(out)
            .iter()
            .map(|v| {
                let kinds = v["dialog"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d["type"].to_string())
                    .collect();
                let hashes = v["dialog"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d["content_hash"].to_string())
                    .collect();
                (v["dialog"][0]["sip_call_id"].to_string(), kinds, hashes)
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(norm(&one), norm(&two), "sharding changes nothing but uuids");
    common::check_events(&common::events(&two));
}

/// Golden tests: the vCons of every capture in `captures/`, with machine-specific paths
/// normalized, against `tests/golden/<name>.vcon.jsonl`.
/// Regenerate with `VCONTAP_BLESS=1 cargo test --test replay golden`.
#[test]
fn golden_project_captures() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut caps: Vec<PathBuf> = std::fs::read_dir(root.join("captures"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "pcap"))
        .collect();
    caps.sort();
    assert!(caps.len() >= 2, "project captures present");
    for cap in caps {
        let name = cap.file_stem().unwrap().to_string_lossy().to_string();
        let out = common::tmpdir(&format!("golden-{name}"));
        common::replay(&[&cap], &out, &[]);
        let prefix = format!(
            "file://{}",
            std::fs::canonicalize(out.join("media")).unwrap().display()
        );
        let mut lines: Vec<String> = common::vcons(&out)
            .iter()
            .map(|v| {
                serde_json::to_string(v)
                    .unwrap()
                    .replace(&prefix, "file://<out>/media")
            })
            .collect();
        lines.sort();
        let got = lines.join("\n") + "\n";
        let golden = root.join(format!("tests/golden/{name}.vcon.jsonl"));
        if std::env::var_os("VCONTAP_BLESS").is_some() {
            std::fs::write(&golden, &got).unwrap();
        }
        let want = std::fs::read_to_string(&golden)
            .expect("golden file (run with VCONTAP_BLESS=1 to create)");
        assert_eq!(got, want, "{name} output differs from {}", golden.display());
        let evs = common::events(&out);
        common::check_events(&evs);
        common::dump_snapshots(&evs, &out.join("snapshots"));
        common::validate(&[&out, &out.join("snapshots")]);
    }
}

#[test]
fn bad_input_is_a_clear_error_not_a_crash() {
    let dir = common::tmpdir("bad");
    let junk = dir.join("junk.pcap");
    std::fs::write(&junk, b"this is not a capture file at all").unwrap();
    // A replay whose every input is unreadable fails with a clear message and no output.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_vcontap"))
        .args(["replay", "--quiet", "--out"])
        .arg(dir.join("out"))
        .arg("--spool")
        .arg(dir.join("out.spool"))
        .arg(&junk)
        .output()
        .unwrap();
    assert!(!o.status.success(), "all inputs unreadable must fail");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("no input could be read as a capture"), "{err}");
    assert!(err.contains("junk.pcap"), "names the file: {err}");
    assert!(common::vcons(&dir.join("out")).is_empty());
    // Beside a real capture, a non-capture file is skipped with a warning and named in the
    // summary; the run succeeds.
    let (good, _) = synth(
        "bad-mixed",
        &SynthConfig {
            calls: 1,
            concurrent: 1,
            seconds: 1.0,
            ..SynthConfig::default()
        },
    );
    let stderr = common::replay(&[&junk, &good], &dir.join("mixed"), &[]);
    assert!(stderr.contains("not a capture"), "{stderr}");
    assert_eq!(common::vcons(&dir.join("mixed")).len(), 1);
    // A missing file and a bad option are start-up errors.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_vcontap"))
        .args(["replay", "/nonexistent.pcap", "--out"])
        .arg(dir.join("o2"))
        .arg("--spool")
        .arg(dir.join("o2.spool"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("does not exist"));
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_vcontap"))
        .args(["replay", "--shards", "0", "--out"])
        .arg(dir.join("o3"))
        .arg("--spool")
        .arg(dir.join("o3.spool"))
        .arg(&junk)
        .output()
        .unwrap();
    assert!(!o.status.success());
    // A truncated capture: the calls that were complete still come out.
    let (pcap, _) = synth(
        "trunc",
        &SynthConfig {
            calls: 2,
            concurrent: 1,
            seconds: 2.0,
            ..SynthConfig::default()
        },
    );
    let bytes = std::fs::read(&pcap).unwrap();
    let cut = dir.join("cut.pcap");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3 + 7]).unwrap();
    common::replay(&[&cut], &dir.join("o4"), &[]);
    let v = common::vcons(&dir.join("o4"));
    assert_eq!(v.len(), 2, "both calls finish (one at end of input)");
    common::validate(&[&dir.join("o4")]);
}

#[test]
fn mono_mixes_both_directions_into_one_channel() {
    let cfg = SynthConfig {
        calls: 1,
        concurrent: 1,
        seconds: 2.0,
        seed: 4,
        ..SynthConfig::default()
    };
    let (pcap, plans) = synth("mono", &cfg);
    let out = pcap.parent().unwrap().join("out");
    common::replay(&[&pcap], &out, &["--record", "mono"]);
    let v = &common::vcons(&out)[0];
    let d = &v["dialog"][0];
    assert_eq!(d["type"], "recording");
    let path = common::check_media_hash(d);
    let mut r = hound::WavReader::open(&path).unwrap();
    assert_eq!(r.spec().channels, 1);
    let x: Vec<f64> = r.samples::<i16>().map(|s| s.unwrap() as f64).collect();
    let rate = r.spec().sample_rate as f64;
    let a = common::tone_share(&x, rate, plans[0].caller_tone_hz);
    let b = common::tone_share(&x, rate, plans[0].callee_tone_hz);
    assert!(a > 0.25 && b > 0.25, "both tones in the mix: {a} {b}");
    common::validate(&[&out]);
}

#[test]
fn realtime_pace_follows_capture_time() {
    let cfg = SynthConfig {
        calls: 1,
        concurrent: 1,
        seconds: 1.0,
        seed: 8,
        ..SynthConfig::default()
    };
    let (pcap, plans) = synth("pace", &cfg);
    let span = (plans[0].end_at.nanos() - plans[0].invite_at.nanos()) as f64 / 1e9;
    let out = pcap.parent().unwrap().join("out");
    let t = std::time::Instant::now();
    common::replay(&[&pcap], &out, &["--pace", "realtime"]);
    let took = t.elapsed().as_secs_f64();
    assert!(
        took >= span * 0.95,
        "realtime replay took {took} s for {span} s of capture"
    );
    assert_eq!(common::vcons(&out).len(), 1);
}
