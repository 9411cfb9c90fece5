//! `vcontap siprec`'s vCon content and recording policy against a real SRC (SIPp, Debian
//! `sip-tester`, on loopback; skipped with a message when `sipp` is not installed):
//!
//! - a session marked for recording (`a=record:on`, server run with `--record-policy
//!   marked`) opens with one stream; a re-INVITE adds a second labelled stream and a second
//!   metadata version (tests/siprec_policy/src-reinvite-adds-stream.xml). The vCon must hold
//!   the INVITE, both metadata versions and the correlation ids as attachments, record the
//!   added stream on its own channel, and list it in `vcontap.streams_added`;
//! - a session whose caller is on the `--do-not-record` list
//!   (tests/siprec/src-two-streams.xml) is still answered (200 OK with both streams), nothing
//!   is recorded although RTP arrives, and the vCon says why;
//! - a participant on the list who joins through a metadata-only UPDATE
//!   (tests/siprec_policy/src-update-adds-do-not-record.xml) stops the recording there for
//!   good (a pause to the end), and the last `siprec-ids` says when and why.
//!
//! Every vCon passes `validate-vcon`.

mod common;

use std::net::{TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::siprec::{
    answered_streams, free_port, pcmu, send_tones, sigterm_server, sipp, sipp_ok,
};

/// The `n`-th (0-based) 200 OK with SDP in SIPp's message trace, if it is there yet.
fn find_answer(path: &Path, n: usize) -> Option<String> {
    let s = std::fs::read_to_string(path).ok()?;
    let answers: Vec<&str> = s
        .match_indices("SIP/2.0 200 OK")
        .map(|(i, _)| {
            let m = &s[i..];
            &m[..m.find("\n\n---").unwrap_or(m.len())]
        })
        .filter(|m| m.contains("m=audio"))
        .collect();
    answers
        .get(n)
        .filter(|m| m.contains("a=label:"))
        .map(|m| (*m).to_owned())
}

/// [`find_answer`], waiting until `deadline`.
fn nth_answer(path: &Path, n: usize, deadline: Instant) -> Option<String> {
    loop {
        if let Some(a) = find_answer(path, n) {
            return Some(a);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The server process; killed if the test fails before [`stop_server`] (so a failed run
/// leaves nothing listening).
struct Server(Option<Child>);

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `vcontap siprec` on 127.0.0.1:`sip_port` with `extra` options, once it listens.
fn start_server(out: &Path, sip_port: u16, range: &str, extra: &[&str]) -> Server {
    let vcontap = Command::new(env!("CARGO_BIN_EXE_vcontap"))
        .args(["siprec", "--listen"])
        .arg(format!("127.0.0.1:{sip_port}"))
        .args([
            "--rtp-ports",
            range,
            "--host",
            "policy.test.vcontap.example",
        ])
        .args(extra)
        .arg("--out")
        .arg(out)
        .arg("--spool")
        .arg(common::spool_for(out))
        .stderr(Stdio::piped())
        .spawn()
        .expect("start vcontap siprec");
    let server = Server(Some(vcontap));
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", sip_port)).is_err() {
        assert!(Instant::now() < deadline, "vcontap siprec did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    server
}

/// SIPp running `scenario` once over UDP against the server, tracing messages.
fn start_sipp(sipp: &Path, scenario: &Path, sip_port: u16, trace: &Path) -> Child {
    Command::new(sipp)
        .arg(format!("127.0.0.1:{sip_port}"))
        .arg("-sf")
        .arg(scenario)
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
            "u1",
        ])
        .args(["-trace_msg", "-message_file"])
        .arg(trace)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sipp")
}

/// SIGTERM; the server must exit 0 without a panic. Returns its stderr.
fn stop_server(mut server: Server) -> String {
    sigterm_server(server.0.take().expect("server running"))
}

/// The attachments of `purpose`, wherever the engine put them (top level once a dialog
/// exists, else `vcontap.attachments`).
fn attachments<'a>(v: &'a Value, purpose: &str) -> Vec<&'a Value> {
    let top = v["attachments"].as_array().into_iter().flatten();
    let held = v["vcontap"]["attachments"].as_array().into_iter().flatten();
    top.chain(held)
        .filter(|a| a["purpose"] == purpose)
        .collect()
}

/// An RTP port range of this test's own (pid-derived), so parallel runs do not collide.
fn port_range(slot: u16) -> (u16, String) {
    let base = 52000 + (std::process::id() % 100) as u16 * 60 + slot * 20;
    (base, format!("{base}-{}", base + 19))
}

#[test]
fn marked_session_keeps_invite_metadata_ids_and_records_a_stream_added_by_reinvite() {
    let Some(sipp) = sipp() else { return };
    let dir = common::tmpdir("siprec-policy-added");
    let out = dir.join("out");
    let sip_port = free_port();
    let (_, range) = port_range(0);
    // Two shards: attachments and the added stream travel to a shard thread.
    let vcontap = start_server(
        &out,
        sip_port,
        &range,
        &["--record-policy", "marked", "--shards", "2"],
    );
    let trace = dir.join("sipp-messages.log");
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/siprec_policy/src-reinvite-adds-stream.xml");
    let src = start_sipp(&sipp, &scenario, sip_port, &trace);

    let first = nth_answer(&trace, 0, Instant::now() + Duration::from_secs(15))
        .expect("a 200 OK to the INVITE");
    let one = answered_streams(&first);
    assert_eq!(one.len(), 1, "{first}");
    assert_eq!(one[0].1, "caller-leg");

    // The caller's tone from now on; the agent's once the re-INVITE is answered.
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let start = Instant::now();
    let mut added: Option<u16> = None;
    let mut agent_seq = 0u16;
    for seq in 0..220u16 {
        tx.send_to(&pcmu(seq, 0x6100, 440.0), ("127.0.0.1", one[0].0))
            .unwrap();
        if added.is_none() && seq % 5 == 0 {
            if let Some(a) = find_answer(&trace, 1) {
                let two = answered_streams(&a);
                assert_eq!(two.len(), 2, "{a}");
                assert_eq!(two[0], one[0], "the known stream keeps its port: {a}");
                assert_eq!(two[1].1, "callee-leg");
                added = Some(two[1].0);
            }
        }
        if let Some(port) = added {
            if agent_seq < 100 {
                tx.send_to(&pcmu(agent_seq, 0x6200, 1000.0), ("127.0.0.1", port))
                    .unwrap();
                agent_seq += 1;
            }
        }
        let next = start + Duration::from_millis(20 * (u64::from(seq) + 1));
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    assert!(
        added.is_some(),
        "the re-INVITE was answered with two streams"
    );
    sipp_ok(src);
    std::thread::sleep(Duration::from_millis(500));
    let err = stop_server(vcontap);

    let vcons = common::vcons(&out);
    assert_eq!(vcons.len(), 1, "one vCon for one recording session: {err}");
    let v = &vcons[0];
    assert_eq!(v["vcontap"]["end_reason"], "bye", "{v}");
    assert!(v["vcontap"].get("recording").is_none(), "recorded: {v}");
    assert!(
        v["extensions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "sip-signaling"),
        "sip-invite is a sip-signaling purpose: {v}"
    );

    // Attachments: at the top level (there is a recording to point at).
    assert!(v["vcontap"].get("attachments").is_none(), "all placed: {v}");
    let invite = attachments(v, "sip-invite");
    assert_eq!(invite.len(), 1, "{v}");
    assert_eq!(invite[0]["mediatype"], "message/sip");
    assert_eq!(invite[0]["encoding"], "none");
    let body = invite[0]["body"].as_str().unwrap();
    assert!(body.starts_with("INVITE sip:srs@127.0.0.1"), "{body}");
    assert!(
        body.contains("a=record:on") && body.contains("<recording"),
        "{body}"
    );
    let md = attachments(v, "siprec-metadata");
    assert_eq!(md.len(), 2, "initial and re-INVITE metadata: {v}");
    for m in &md {
        assert_eq!(m["mediatype"], "application/rs-metadata+xml");
        assert_eq!(m["encoding"], "none");
        assert!(m["body"].as_str().unwrap().contains("<recording"));
    }
    assert!(md[1]["body"].as_str().unwrap().contains("callee-leg"));
    assert!(!md[0]["body"].as_str().unwrap().contains("callee-leg"));
    assert!(
        common::vcon_time_ms(md[1]["start"].as_str().unwrap()).unwrap()
            >= common::vcon_time_ms(md[0]["start"].as_str().unwrap()).unwrap() + 1000,
        "each version at its own time"
    );
    // The ids changed (a new UCID), so a second document was written; the last is complete.
    let ids = attachments(v, "siprec-ids");
    assert_eq!(ids.len(), 2, "{v}");
    let last = &ids[1]["body"];
    assert_eq!(ids[1]["encoding"], "json");
    assert_eq!(
        last["recording_session"]["call_id"],
        v["vcontap"]["sip_call_id"]
    );
    assert_eq!(last["groups"][0]["group_id"], "R3JvdXAtcG9saWN5LTE=");
    assert_eq!(
        last["sessions"][0]["session_id"],
        "U2Vzc2lvbi1wb2xpY3ktMQ=="
    );
    assert_eq!(
        last["sessions"][0]["sip_session_ids"][0],
        "00112233445566778899aabbccddeeff;remote=ffeeddccbbaa99887766554433221100"
    );
    let ucids: Vec<&str> = last["vendor_ids"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["name"] == "ucid")
        .map(|x| x["value"].as_str().unwrap())
        .collect();
    assert_eq!(ucids, ["00FA080018A5E11", "00FA080018A5E12"], "{last}");
    assert_eq!(last["consent"]["record"][0]["value"], "on");
    assert_eq!(last["consent"]["recordpref"][0]["value"], "on");
    assert_eq!(last["recording"]["recorded"], true);
    assert_eq!(last["recording"]["policy"], "marked");
    assert_eq!(last["metadata"]["versions"], 2);

    // The added stream: listed, and recorded on the agent's (right) channel.
    let added = v["vcontap"]["streams_added"]
        .as_array()
        .expect("streams_added");
    assert_eq!(added.len(), 1, "{v}");
    assert_eq!(added[0]["label"], "callee-leg");
    assert_eq!(added[0]["side"], "callee");
    let recs: Vec<&Value> = v["dialog"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["type"] == "recording")
        .collect();
    assert!(!recs.is_empty(), "{v}");
    let wav = common::check_media_hash(recs[recs.len() - 1]);
    let (left, right, rate) = common::read_stereo(&wav);
    let rate = f64::from(rate);
    let loud = |x: &f64| x.abs() > 200.0;
    let r0 = right
        .iter()
        .position(loud)
        .expect("agent audio on the right");
    let r1 = right.iter().rposition(loud).unwrap();
    let agent = (r1 - r0) as f64 / rate;
    assert!((1.8..=2.2).contains(&agent), "2 s of agent audio: {agent}");
    let l0 = left
        .iter()
        .position(loud)
        .expect("caller audio on the left");
    assert!(
        l0 < r0,
        "the caller was recorded before the stream was added"
    );
    assert!(common::tone_share(&right[r0..=r1], rate, 1000.0) > 0.5);
    assert!(common::tone_share(&right[r0..=r1], rate, 440.0) < 0.05);
    assert!(common::tone_share(&left[l0..], rate, 440.0) > 0.5);

    common::validate(&[&out]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn do_not_record_session_is_answered_and_the_vcon_says_why() {
    let Some(sipp) = sipp() else { return };
    let dir = common::tmpdir("siprec-policy-dnr");
    let out = dir.join("out");
    std::fs::create_dir_all(&dir).unwrap();
    let list = dir.join("do-not-record.txt");
    // The caller of tests/siprec/src-two-streams.xml, written as a person would.
    std::fs::write(
        &list,
        "# opt-outs\n+1 415-555-0142\nsip:someone@else.example\n",
    )
    .unwrap();
    let sip_port = free_port();
    let (_, range) = port_range(1);
    let vcontap = start_server(
        &out,
        sip_port,
        &range,
        &["--do-not-record", list.to_str().unwrap()],
    );
    let trace = dir.join("sipp-messages.log");
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/siprec/src-two-streams.xml");
    let src = start_sipp(&sipp, &scenario, sip_port, &trace);
    let answer = nth_answer(&trace, 0, Instant::now() + Duration::from_secs(15))
        .expect("the session is answered");
    let streams = answered_streams(&answer);
    assert_eq!(streams.len(), 2, "both streams answered: {answer}");
    assert!(streams.iter().all(|(p, _)| *p != 0), "{answer}");
    // The SRC sends media anyway; none of it may be kept.
    let ports: Vec<u16> = streams.iter().map(|s| s.0).collect();
    send_tones(&ports, 0x7100, 0, 100);
    sipp_ok(src);
    std::thread::sleep(Duration::from_millis(500));
    let err = stop_server(vcontap);

    let vcons = common::vcons(&out);
    assert_eq!(vcons.len(), 1, "{err}");
    let v = &vcons[0];
    assert_eq!(v["vcontap"]["end_reason"], "bye", "{v}");
    assert_eq!(
        v["vcontap"]["recording"],
        serde_json::json!({"recorded": false, "reason": "do-not-record list"}),
        "{v}"
    );
    assert_eq!(v["vcontap"]["no_recording"], "policy");
    assert!(
        v["dialog"]
            .as_array()
            .is_none_or(|d| d.iter().all(|d| d["type"] != "recording")),
        "nothing recorded: {v}"
    );
    assert!(
        walk_files(&out.join("media")).is_empty(),
        "no media file written"
    );
    assert_eq!(
        v["parties"][0]["tel"], "+14155550142",
        "parties still named"
    );
    // No dialog to point at: the attachments are held in `vcontap.attachments`.
    assert_eq!(attachments(v, "sip-invite").len(), 1, "{v}");
    assert_eq!(attachments(v, "siprec-metadata").len(), 1, "{v}");
    let ids = attachments(v, "siprec-ids");
    assert_eq!(ids.len(), 1, "{v}");
    assert_eq!(
        ids[0]["body"]["recording"],
        serde_json::json!({"recorded": false, "policy": "all", "reason": "do-not-record list"})
    );
    assert!(v.get("attachments").is_none(), "{v}");

    common::validate(&[&out]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every file below `dir`.
fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn a_do_not_record_participant_in_later_metadata_stops_the_recording() {
    let Some(sipp) = sipp() else { return };
    let dir = common::tmpdir("siprec-policy-late");
    let out = dir.join("out");
    let list = dir.join("do-not-record.txt");
    std::fs::write(&list, "sip:Supervisor-3@contact-center.example\n").unwrap();
    let sip_port = free_port();
    let (_, range) = port_range(2);
    let vcontap = start_server(
        &out,
        sip_port,
        &range,
        &["--do-not-record", list.to_str().unwrap()],
    );
    let trace = dir.join("sipp-messages.log");
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/siprec_policy/src-update-adds-do-not-record.xml");
    let src = start_sipp(&sipp, &scenario, sip_port, &trace);
    let answer = nth_answer(&trace, 0, Instant::now() + Duration::from_secs(15))
        .expect("the session is answered");
    let streams = answered_streams(&answer);
    assert_eq!(streams.len(), 2, "{answer}");
    // 3 s on both streams: the UPDATE comes half-way.
    let ports: Vec<u16> = streams.iter().map(|s| s.0).collect();
    send_tones(&ports, 0x8100, 0, 150);
    sipp_ok(src);
    std::thread::sleep(Duration::from_millis(500));
    let err = stop_server(vcontap);

    let vcons = common::vcons(&out);
    assert_eq!(vcons.len(), 1, "{err}");
    let v = &vcons[0];
    assert_eq!(v["vcontap"]["end_reason"], "bye", "{v}");
    assert_eq!(
        v["parties"].as_array().unwrap().len(),
        3,
        "the supervisor joined: {v}"
    );
    // Recorded until the UPDATE, paused from then to the end.
    let pauses = v["vcontap"]["recording_pauses"]
        .as_array()
        .expect("a pause");
    assert_eq!(pauses.len(), 1, "{v}");
    assert_eq!(pauses[0]["end"], v["vcontap"]["ended_at"], "never resumed");
    let md = attachments(v, "siprec-metadata");
    assert_eq!(md.len(), 2, "{v}");
    assert_eq!(
        pauses[0]["start"], md[1]["start"],
        "stopped when the metadata came"
    );
    let recorded: f64 = v["dialog"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["type"] == "recording")
        .map(|d| d["duration"].as_f64().unwrap())
        .sum();
    assert!(
        (1.0..=2.0).contains(&recorded),
        "about the 1.5 s before the UPDATE: {recorded}"
    );
    let ids = attachments(v, "siprec-ids");
    let last = &ids.last().unwrap()["body"]["recording"];
    assert_eq!(last["reason"], "do-not-record list", "{last}");
    assert_eq!(last["stopped_at"], md[1]["start"]);
    common::validate(&[&out]);
    let _ = std::fs::remove_dir_all(&dir);
}
