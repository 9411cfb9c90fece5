//! `vcontap capture` end to end on real traffic: two network namespaces that the test makes,
//! joined by a veth pair; a synthesized capture is injected frame by frame (at its own
//! pace) into one end and vcontap captures on the other end inside its namespace. Then
//! SIGTERM mid-call: the answered call that ended is complete, the one still in progress is
//! finished with reason `shutdown`, both are written, and vcontap exits 0. Also `vcontap
//! validate`. Skipped with a message where network namespaces cannot be made (not root).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vcontap_afpacket::Injector;
use vcontap_synth::SynthConfig;
use vcontap_wire::PcapReader;

use common::netns::Veth;

/// Two answered calls one after the other, 3 s of talk each.
fn capture(dir: &Path) -> PathBuf {
    let pcap = dir.join("calls.pcap");
    let cfg = SynthConfig {
        calls: 2,
        concurrent: 1,
        seconds: 3.0,
        ..SynthConfig::default()
    };
    vcontap_synth::generate(&cfg, std::fs::File::create(&pcap).unwrap()).unwrap();
    pcap
}

/// Sends the capture's frames until `stop_after` of capture time, paced as captured.
/// Returns the number of frames sent.
fn inject(v: &Veth, pcap: &Path, stop_after: Duration) -> usize {
    let inj = Injector::open(
        &v.if_send,
        Some(PathBuf::from(format!("/run/netns/{}", v.ns_send))),
    )
    .unwrap();
    let mut r = PcapReader::new(std::fs::File::open(pcap).unwrap()).unwrap();
    let start = Instant::now();
    let mut first = None;
    let mut sent = 0;
    while let Some(p) = r.next_packet().unwrap() {
        let t0 = *first.get_or_insert(p.ts.nanos());
        let offset = Duration::from_nanos((p.ts.nanos() - t0) as u64);
        if offset > stop_after {
            break;
        }
        if let Some(w) = offset.checked_sub(start.elapsed()) {
            std::thread::sleep(w);
        }
        assert!(inj.send(p.data).unwrap(), "frame not sent");
        sent += 1;
    }
    sent
}

fn curl_in(ns: &str, url: &str) -> Option<String> {
    let o = Command::new("ip")
        .args(["netns", "exec", ns, "curl", "-fsS", url])
        .output()
        .ok()?;
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).to_string())
}

#[test]
fn capture_on_a_veth_and_sigterm_mid_call() {
    let Some(v) = Veth::new() else { return };
    let dir = common::tmpdir("live-capture");
    let pcap = capture(&dir);
    let out = dir.join("out");
    let port = 19_000 + (std::process::id() % 1000) as u16;
    let child = Command::new("ip")
        .args(["netns", "exec", &v.ns_cap])
        .arg(env!("CARGO_BIN_EXE_vcontap"))
        .args([
            "capture",
            "--interface",
            &v.if_cap,
            "--ring-mib",
            "8",
            "--host",
            "live.vcontap.example",
        ])
        .arg("--out")
        .arg(&out)
        .arg("--spool")
        .arg(common::spool_for(&out))
        .arg("--events")
        .arg(dir.join("events.jsonl"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("VCONTAP_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    // Ready when /readyz answers (or give it 5 s where curl is not installed).
    let t = Instant::now();
    let mut have_curl = true;
    loop {
        match curl_in(&v.ns_cap, &format!("http://127.0.0.1:{port}/readyz")) {
            Some(s) if s.starts_with("ready") => break,
            _ if t.elapsed() > Duration::from_secs(20) => {
                have_curl = false;
                break;
            }
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    // The first call (invite … bye) and half of the second one's talk.
    let sent = inject(&v, &pcap, Duration::from_millis(7_500));
    assert!(sent > 300, "{sent} frames");
    if have_curl {
        // The first call is written once its BYE transaction has lingered out; the second
        // one is still talking.
        let t = Instant::now();
        let m = loop {
            let m = curl_in(&v.ns_cap, &format!("http://127.0.0.1:{port}/metrics")).unwrap();
            if m.contains("vcontap_calls_finished_total 1") || t.elapsed() > Duration::from_secs(15)
            {
                break m;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        assert!(!m.contains("vcontap_packets_total 0\n"), "{m}");
        assert!(
            !m.contains("vcontap_event_latency_seconds_count{kind=\"created\"} 0\n"),
            "{m}"
        );
        assert!(
            m.contains("vcontap_calls_open 1"),
            "the second call is in progress:\n{m}"
        );
        assert!(m.contains("vcontap_ring_drops_total{ring="), "{m}");
        assert!(m.contains("vcontap_spool_records_total 1"), "{m}");
    } else {
        eprintln!("note: curl not installed: /metrics not checked");
    }
    // SIGTERM to vcontap (the child of `ip netns exec`, which execs it: same pid).
    assert!(Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "exit 0 after SIGTERM: {err}");
    let vcons = common::vcons(&out);
    assert_eq!(vcons.len(), 2, "{err}");
    let mut reasons: Vec<&str> = vcons
        .iter()
        .map(|x| x["vcontap"]["end_reason"].as_str().unwrap())
        .collect();
    reasons.sort();
    assert_eq!(reasons, ["bye", "shutdown"], "{err}");
    for x in &vcons {
        assert!(
            x["dialog"]
                .as_array()
                .unwrap()
                .iter()
                .any(|d| d["type"] == "recording"),
            "{x}"
        );
    }
    common::check_events(&common::events(&dir));
    common::validate(&[&out]);
}

#[test]
fn validate_names_the_bad_field() {
    let dir = common::tmpdir("validate");
    let good = Path::new(env!("CARGO_MANIFEST_DIR")).join("vcontap.example.toml");
    let text = std::fs::read_to_string(&good)
        .unwrap()
        .replace("interfaces = [\"eth1\"]", "interfaces = [\"lo\"]")
        .replace(
            "/var/lib/vcontap/vcons",
            dir.join("vcons").to_str().unwrap(),
        );
    let ok = dir.join("ok.toml");
    std::fs::write(&ok, &text).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_vcontap"))
        .arg("validate")
        .arg(&ok)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for (from, to, field) in [
        ("ring_mib = 64", "ring_mib = 0", "capture.ring_mib"),
        ("record = \"stereo\"", "record = \"loud\"", "engine.record"),
        (
            "listen = \"127.0.0.1:9100\"",
            "listen = \"localhost\"",
            "api.listen",
        ),
        (
            "interfaces = [\"lo\"]",
            "interfaces = [\"nosuchif0\"]",
            "capture.interfaces",
        ),
        ("rings = 1", "ringz = 1", "ringz"),
        (
            "ring_layout = \"blocks\"",
            "ring_layout = \"bursts\"",
            "capture.ring_layout",
        ),
        (
            "frame_size = 2048",
            "frame_size = 2047",
            "capture.frame_size",
        ),
        (
            "ingress = [\"default\"]",
            "ingres = [\"default\"]",
            "ingres",
        ),
    ] {
        let bad = dir.join("bad.toml");
        assert!(text.contains(from), "{from}");
        std::fs::write(&bad, text.replace(from, to)).unwrap();
        let o = Command::new(env!("CARGO_BIN_EXE_vcontap"))
            .arg("validate")
            .arg(&bad)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{to} must be refused");
        assert!(err.contains(field), "{to}: the error names {field}: {err}");
    }
}

#[test]
fn hep_from_sngrep_gives_the_calls_of_a_replay() {
    if Command::new("sngrep").arg("-V").output().is_err() {
        eprintln!("skipped: sngrep is not installed (Debian package sngrep)");
        return;
    }
    let dir = common::tmpdir("live-hep");
    let pcap = dir.join("calls.pcap");
    let cfg = SynthConfig {
        calls: 4,
        concurrent: 2,
        seconds: 1.0,
        failure_every: 3,
        ..SynthConfig::default()
    };
    vcontap_synth::generate(&cfg, std::fs::File::create(&pcap).unwrap()).unwrap();
    // The reference: the same capture replayed (SIP only matters: sngrep sends no RTP).
    let want_out = dir.join("replay");
    common::replay(&[&pcap], &want_out, &["--record", "none"]);
    let want = common::vcons(&want_out);
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = dir.join("hep");
    let child = Command::new(env!("CARGO_BIN_EXE_vcontap"))
        .args([
            "capture",
            "--hep-listen",
            &format!("127.0.0.1:{port}"),
            "--record",
            "none",
            "--host",
            "test.vcontap.example",
        ])
        .arg("--out")
        .arg(&out)
        .arg("--spool")
        .arg(common::spool_for(&out))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let s = Command::new("sngrep")
        .args(["-N", "-q", "-F", "-I"])
        .arg(&pcap)
        .args(["-H", &format!("udp:127.0.0.1:{port}")])
        .output()
        .unwrap();
    assert!(
        s.status.success(),
        "sngrep: {}",
        String::from_utf8_lossy(&s.stderr)
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert!(Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let got = common::vcons(&out);
    let key = |v: &serde_json::Value| {
        (
            v["uuid"].as_str().unwrap().to_string(),
            v["parties"].clone(),
            v["vcontap"]["sip_call_id"].clone(),
        )
    };
    let mut a: Vec<_> = got.iter().map(key).collect();
    let mut b: Vec<_> = want.iter().map(key).collect();
    a.sort_by(|x, y| x.0.cmp(&y.0));
    b.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(a, b, "{err}");
    // Each vCon names the agent (sngrep's id 2002, as sngrep writes it: 16-bit swapped)
    // and says the times are the agent's.
    for v in &got {
        let h = &v["vcontap"]["hep"];
        let agents = h["agents"].as_array().unwrap();
        assert_eq!(agents.len(), 1, "{h}");
        assert_eq!(agents[0]["capture_id"], 2002u32 << 16, "{h}");
        assert_eq!(agents[0]["packets"], h["packets"], "{h}");
        assert!(h["packets"].as_u64().unwrap() >= 2, "{h}");
        assert_eq!(h["timestamps"], "agent", "{h}");
    }
    common::validate(&[&out]);
}

/// With the `pcap` feature, `capture.filter` is a BPF expression compiled by libpcap:
/// `validate` accepts what only libpcap understands and names the field when libpcap refuses.
#[cfg(feature = "pcap")]
#[test]
fn validate_compiles_bpf_filters_with_the_pcap_feature() {
    let dir = common::tmpdir("validate-bpf");
    let good = Path::new(env!("CARGO_MANIFEST_DIR")).join("vcontap.example.toml");
    let text = std::fs::read_to_string(good)
        .unwrap()
        .replace("interfaces = [\"eth1\"]", "interfaces = [\"lo\"]")
        .replace(
            "/var/lib/vcontap/vcons",
            dir.join("vcons").to_str().unwrap(),
        );
    let from = "# filter = \"port 5060 or portrange 10000-20000\"";
    assert!(text.contains(from));
    for (filter, ok) in [
        (
            "udp port 5060 and udp[8:4] != 0 and not ether broadcast",
            true,
        ),
        ("udp port", false),
    ] {
        let f = dir.join("f.toml");
        std::fs::write(&f, text.replace(from, &format!("filter = \"{filter}\""))).unwrap();
        let o = Command::new(env!("CARGO_BIN_EXE_vcontap"))
            .arg("validate")
            .arg(&f)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.success(), ok, "{filter}: {err}");
        if !ok {
            assert!(err.contains("capture.filter"), "{err}");
        }
    }
}
