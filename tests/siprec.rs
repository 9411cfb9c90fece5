//! `vcontap siprec` against a real SRC: SIPp (Debian `sip-tester`) runs the project's own
//! scenario (tests/siprec/src-two-streams.xml) on loopback, over UDP and over TCP: a
//! multipart SIPREC INVITE with
//! two labelled streams and RFC 7865 metadata, ACK, BYE. While the dialog is up the test
//! reads the 200 OK from SIPp's message trace, checks the answer (plain SDP, `recvonly`,
//! both labels echoed, even RTP ports from the range) and sends 2 s of PCMU to the
//! answered ports: a 440 Hz tone for the caller's stream, 1000 Hz for the agent's. The
//! vCon must name the metadata participants, hold one stereo recording of about 2 s with
//! each tone on its own channel, end with `bye`, and pass `validate-vcon`. Skipped with a
//! message when `sipp` is not installed.

mod common;

use std::net::{TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::siprec::{
    answered_streams, free_port, pcmu, send_tones, sigterm_server, sipp, sipp_ok,
};

/// The 200 OK to the INVITE in SIPp's message trace, once it is there.
fn answer_from_trace(path: &Path, deadline: Instant, labels: usize) -> String {
    while Instant::now() < deadline {
        if let Ok(s) = std::fs::read_to_string(path) {
            if let Some(i) = s.find("SIP/2.0 200 OK") {
                let msg = &s[i..];
                // The body ends with the last SDP line before the next trace entry.
                if msg.contains("m=audio") && msg.matches("a=label:").count() >= labels {
                    let end = msg.find("\n\n---").unwrap_or(msg.len());
                    return msg[..end].to_owned();
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("no 200 OK with SDP in {}", path.display());
}

/// `vcontap siprec` on 127.0.0.1:`sip_port`, once it listens.
fn start_server(out: &Path, sip_port: u16, range: &str, shards: &str) -> Child {
    let vcontap = Command::new(env!("CARGO_BIN_EXE_vcontap"))
        .args(["siprec", "--listen"])
        .arg(format!("127.0.0.1:{sip_port}"))
        .args([
            "--rtp-ports",
            range,
            "--host",
            "siprec.test.vcontap.example",
        ])
        .args(["--shards", shards])
        .arg("--out")
        .arg(out)
        .arg("--spool")
        .arg(common::spool_for(out))
        .stderr(Stdio::piped())
        .spawn()
        .expect("start vcontap siprec");
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", sip_port)).is_err() {
        assert!(Instant::now() < deadline, "vcontap siprec did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    vcontap
}

/// SIPp running `scenario` (tests/siprec/) once against the server, tracing messages.
fn start_sipp(sipp: &Path, scenario: &str, sip_port: u16, transport: &str, trace: &Path) -> Child {
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/siprec")
        .join(scenario);
    Command::new(sipp)
        .arg(format!("127.0.0.1:{sip_port}"))
        .arg("-sf")
        .arg(&scenario)
        .args([
            "-m",
            "1",
            "-i",
            "127.0.0.1",
            "-p",
            "0",
            "-timeout",
            "30",
            "-t",
            transport,
        ])
        .args(["-trace_msg", "-message_file"])
        .arg(trace)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sipp")
}

#[test]
fn sipp_src_over_udp_two_labelled_streams_to_a_vcon() {
    two_streams("udp", "u1", "1");
}

#[test]
fn sipp_src_over_tcp_two_labelled_streams_to_a_vcon_on_two_shards() {
    // Threaded shards too: the session runs on a shard thread.
    two_streams("tcp", "t1", "2");
}

fn two_streams(name: &str, transport: &str, shards: &str) {
    let Some(sipp) = sipp() else { return };
    let dir = common::tmpdir(&format!("siprec-sipp-{name}"));
    let out = dir.join("out");
    let sip_port = free_port();
    // A range of its own per run (pid-derived), so parallel runs do not collide.
    let base =
        42000 + (std::process::id() % 200) as u16 * 40 + if transport == "t1" { 20 } else { 0 };
    let range = format!("{base}-{}", base + 19);
    let vcontap = start_server(&out, sip_port, &range, shards);

    let trace = dir.join("sipp-messages.log");
    let src = start_sipp(&sipp, "src-two-streams.xml", sip_port, transport, &trace);

    let answer = answer_from_trace(&trace, Instant::now() + Duration::from_secs(15), 2);
    assert!(
        answer.contains("Content-Type: application/sdp"),
        "plain SDP answer: {answer}"
    );
    assert_eq!(answer.matches("a=recvonly").count(), 2, "{answer}");
    let streams = answered_streams(&answer);
    assert_eq!(
        streams.iter().map(|s| s.1.as_str()).collect::<Vec<_>>(),
        ["caller-leg", "callee-leg"],
        "labels echoed in order: {answer}"
    );
    for (port, _) in &streams {
        assert!(
            port % 2 == 0 && *port >= base && *port < base + 20,
            "{answer}"
        );
    }

    // 2 s of audio on both streams, paced like a real SRC.
    let ports: Vec<u16> = streams.iter().map(|s| s.0).collect();
    send_tones(&ports, 0x5100, 0, 100);

    sipp_ok(src);

    // The BYE ended the session; SIGTERM then stops the server and drains the sinks.
    std::thread::sleep(Duration::from_millis(500));
    let err = sigterm_server(vcontap);

    let vcons = common::vcons(&out);
    assert_eq!(vcons.len(), 1, "one vCon for one recording session: {err}");
    let v: &Value = &vcons[0];
    let parties = v["parties"].as_array().unwrap();
    assert_eq!(parties.len(), 2, "{v}");
    assert_eq!(parties[0]["tel"], "+14155550142");
    assert_eq!(parties[0]["name"], "Grace Caller");
    assert_eq!(parties[1]["sip"], "sip:agent-7@contact-center.example");
    assert_eq!(parties[1]["name"], "Agent Seven");
    assert!(parties[1].get("tel").is_none(), "not an E.164 number");
    assert_eq!(v["vcontap"]["end_reason"], "bye", "{v}");

    let recs: Vec<&Value> = v["dialog"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["type"] == "recording")
        .collect();
    assert_eq!(recs.len(), 1, "{v}");
    // The recording spans the session (answer to BYE), the audio the 2 s we sent.
    let d = recs[0]["duration"].as_f64().unwrap();
    let span = (common::vcon_time_ms(v["vcontap"]["ended_at"].as_str().unwrap()).unwrap()
        - common::vcon_time_ms(recs[0]["start"].as_str().unwrap()).unwrap()) as f64
        / 1000.0;
    assert!(
        d >= 2.0 && d <= span + 0.1,
        "recording {d} s, session {span} s"
    );
    let wav = common::check_media_hash(recs[0]);
    let (left, right, rate) = common::read_stereo(&wav);
    let (first, last) = common::siprec::audible_span(&left, &right);
    let audible = (last - first) as f64 / f64::from(rate);
    assert!((1.9..=2.2).contains(&audible), "2 s of audio: {audible}");
    let (left, right) = (&left[first..=last], &right[first..=last]);
    let rate = f64::from(rate);
    let (l440, l1k) = common::siprec::tone_shares(left, rate);
    let (r440, r1k) = common::siprec::tone_shares(right, rate);
    assert!(l440 > 0.5 && l1k < 0.05, "caller's tone left: {l440} {l1k}");
    assert!(r1k > 0.5 && r440 < 0.05, "agent's tone right: {r1k} {r440}");

    common::validate(&[&out]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// SIGTERM while a session is up: the recorder sends BYE (the SRC answers it), the vCon is
/// finished with reason `shutdown` and still holds the audio received so far. Also covers
/// metadata before SDP in the multipart and a single mono-labelled PCMA stream.
#[test]
fn sigterm_ends_open_sessions_with_bye_and_reason_shutdown() {
    let Some(sipp) = sipp() else { return };
    let dir = common::tmpdir("siprec-sipp-sigterm");
    let out = dir.join("out");
    let sip_port = free_port();
    let base = 50000 + (std::process::id() % 200) as u16 * 20;
    let vcontap = start_server(&out, sip_port, &format!("{base}-{}", base + 19), "1");
    let trace = dir.join("sipp-messages.log");
    let src = start_sipp(&sipp, "src-until-bye.xml", sip_port, "u1", &trace);
    let answer = answer_from_trace(&trace, Instant::now() + Duration::from_secs(15), 1);
    let streams = answered_streams(&answer);
    assert_eq!(streams.len(), 1, "{answer}");
    assert_eq!(streams[0].1, "7");
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    for seq in 0..50u16 {
        let mut p = pcmu(seq, 0x77, 440.0);
        p[1] = 8; // PCMA payload type; the payload bytes are any A-law noise
        tx.send_to(&p, ("127.0.0.1", streams[0].0)).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    let err = sigterm_server(vcontap);
    sipp_ok(src);
    let vcons = common::vcons(&out);
    assert_eq!(vcons.len(), 1, "{err}");
    let v = &vcons[0];
    assert_eq!(v["vcontap"]["end_reason"], "shutdown", "{v}");
    assert_eq!(v["parties"][0]["tel"], "+442079460018");
    let recs = v["dialog"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["type"] == "recording")
        .count();
    assert_eq!(recs, 1, "{v}");
    common::validate(&[&out]);
    let _ = std::fs::remove_dir_all(&dir);
}
