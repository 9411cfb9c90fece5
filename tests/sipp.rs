//! SIPp (Debian `sip-tester`) placing and answering real calls between two network
//! namespaces the test makes, joined by a veth pair, while `vcontap capture` sniffs the
//! callee's end of the link: SIP from a real stack (its own Via/branch/tag/retransmission
//! behaviour, not the synthesizer's) and RTP played by SIPp from captures the test writes
//! (a 440 Hz tone from the caller, 1 kHz from the callee, G.711 µ-law, 20 ms packets). The
//! vCons must show the parties, the answer, the duration SIPp held the call for, both RTP
//! streams with their packets, a stereo recording with each tone on its own channel, and
//! pass validate-vcon. Skipped with a message when not root or when SIPp is not installed.
//! vcontap captures with `--frame-ring` (TPACKET_V2) here; tests/live.rs uses the default
//! block ring.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use vcontap_synth::{linear_to_ulaw, mac_for, udp_frame, write_rtp_header, Link, RtpHeader};
use vcontap_wire::{LinkType, PcapWriter, Resolution, Timestamp};

use common::netns::Veth;

const CALLER_IP: &str = "10.77.0.1";
const CALLEE_IP: &str = "10.77.0.2";
const CALLS: usize = 3;
/// How long the caller keeps each call up after the ACK (SIPp `pause`).
const HOLD_MS: u64 = 3000;

/// A pcap of `ms` milliseconds of a `freq` Hz tone as µ-law RTP, for SIPp's
/// `play_pcap_audio` (which replays the UDP payloads at their captured pace to the peer's
/// SDP address; the addresses written here are replaced).
fn tone_pcap(path: &Path, freq: f64, ms: u32, ssrc: u32) {
    let link = Link {
        src_mac: mac_for("192.0.2.1".parse().unwrap()),
        dst_mac: mac_for("192.0.2.2".parse().unwrap()),
        vlan: None,
        pcp: 0,
    };
    let src: SocketAddr = "192.0.2.1:4000".parse().unwrap();
    let dst: SocketAddr = "192.0.2.2:4000".parse().unwrap();
    let mut w = PcapWriter::new(
        std::fs::File::create(path).unwrap(),
        LinkType::ETHERNET,
        Resolution::Micros,
    )
    .unwrap();
    for i in 0..ms / 20 {
        let mut rtp = Vec::new();
        write_rtp_header(
            &mut rtp,
            &RtpHeader {
                marker: i == 0,
                payload_type: 0,
                seq: i as u16,
                timestamp: i * 160,
                ssrc,
            },
        );
        for n in 0..160 {
            let t = f64::from(i * 160 + n) / 8000.0;
            let s = (8000.0 * (2.0 * std::f64::consts::PI * freq * t).sin()) as i16;
            rtp.push(linear_to_ulaw(s));
        }
        let mut frame = Vec::new();
        udp_frame(&mut frame, &link, src, dst, &rtp, i as u16).unwrap();
        w.write_packet(
            Timestamp(1_700_000_000_000_000_000 + i64::from(i) * 20_000_000),
            &frame,
        )
        .unwrap();
    }
    w.flush().unwrap();
}

/// The caller: INVITE with SDP (PCMU), ACK, plays its tone, hangs up after [`HOLD_MS`].
fn uac_xml(audio: &Path) -> String {
    format!(
        r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="vcontap uac">
  <send retrans="500">
    <![CDATA[
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Alice" <sip:alice@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: sip:alice@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=alice 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000
    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="200" rtd="true"/>
  <send>
    <![CDATA[
      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Alice" <sip:alice@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Contact: sip:alice@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
  <nop>
    <action>
      <exec play_pcap_audio="{audio}"/>
    </action>
  </nop>
  <pause milliseconds="{HOLD_MS}"/>
  <send retrans="500">
    <![CDATA[
      BYE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Alice" <sip:alice@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Contact: sip:alice@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
  <recv response="200" crlf="true"/>
</scenario>
"#,
        audio = audio.display()
    )
}

/// The callee: rings, answers with SDP, plays its tone after the ACK, answers the BYE.
fn uas_xml(audio: &Path) -> String {
    format!(
        r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="vcontap uas">
  <recv request="INVITE" crlf="true"/>
  <send>
    <![CDATA[
      SIP/2.0 180 Ringing
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:bob@[local_ip]:[local_port]>
      Content-Length: 0
    ]]>
  </send>
  <send retrans="500">
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:bob@[local_ip]:[local_port]>
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=bob 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000
    ]]>
  </send>
  <recv request="ACK" crlf="true"/>
  <nop>
    <action>
      <exec play_pcap_audio="{audio}"/>
    </action>
  </nop>
  <recv request="BYE"/>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:bob@[local_ip]:[local_port]>
      Content-Length: 0
    ]]>
  </send>
</scenario>
"#,
        audio = audio.display()
    )
}

fn sipp_installed() -> bool {
    Command::new("sipp")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Waits until `n` vCon files are in `out` (or `limit` passed).
fn wait_for_vcons(out: &Path, n: usize, limit: Duration) {
    let t = Instant::now();
    while t.elapsed() < limit {
        if out.is_dir() && common::vcon_files(out).len() >= n {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn sipp_calls_between_namespaces_become_vcons() {
    if !sipp_installed() {
        eprintln!("skipped: sipp is not installed (Debian package sip-tester)");
        return;
    }
    let Some(v) = Veth::new() else { return };
    v.address(&format!("{CALLER_IP}/24"), &format!("{CALLEE_IP}/24"));
    let dir = common::tmpdir("sipp");
    let (caller_audio, callee_audio) = (dir.join("caller.pcap"), dir.join("callee.pcap"));
    // The caller talks for 2.5 s of its 3 s, the callee for 2 s: all audio ends before BYE.
    tone_pcap(&caller_audio, 440.0, 2500, 0x1111_1111);
    tone_pcap(&callee_audio, 1000.0, 2000, 0x2222_2222);
    let (uac, uas): (PathBuf, PathBuf) = (dir.join("uac.xml"), dir.join("uas.xml"));
    std::fs::write(&uac, uac_xml(&caller_audio)).unwrap();
    std::fs::write(&uas, uas_xml(&callee_audio)).unwrap();

    // vcontap sniffs the callee's end, inside the callee's namespace.
    let out = dir.join("out");
    let vcontap = Veth::exec(&v.ns_cap, env!("CARGO_BIN_EXE_vcontap"))
        .args([
            "capture",
            "--interface",
            &v.if_cap,
            "--ring-mib",
            "8",
            // The frame ring (TPACKET_V2): tests/live.rs covers the default block ring.
            "--frame-ring",
            "--record",
            "stereo",
            "--host",
            "sipp.vcontap.example",
        ])
        .arg("--out")
        .arg(&out)
        .arg("--spool")
        .arg(common::spool_for(&out))
        .env("VCONTAP_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut server = Veth::exec(&v.ns_cap, "sipp")
        .args(["-sf"])
        .arg(&uas)
        .args([
            "-i", CALLEE_IP, "-p", "5060", "-mi", CALLEE_IP, "-mp", "7000",
        ])
        .args(["-bg", "-nostdin", "-trace_err"])
        .current_dir(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Capture and server up (AF_PACKET ring, sockets) before the first INVITE.
    std::thread::sleep(Duration::from_millis(1500));
    // One call at a time (SIPp plays every call's audio from one media port).
    let client = Veth::exec(&v.ns_send, "sipp")
        .arg(format!("{CALLEE_IP}:5060"))
        .args(["-sf"])
        .arg(&uac)
        .args(["-s", "bob", "-i", CALLER_IP, "-p", "5060", "-mi", CALLER_IP])
        .args([
            "-mp",
            "6000",
            "-m",
            &CALLS.to_string(),
            "-l",
            "1",
            "-r",
            "1",
        ])
        .args(["-nostdin", "-trace_err", "-timeout", "60s"])
        .current_dir(&dir)
        .output()
        .unwrap();
    let _ = server.kill();
    let _ = server.wait();
    // `-bg` forks: stop the background UAS, which lives in the namespace being deleted.
    let _ = Command::new("ip")
        .args(["netns", "pids", &v.ns_cap])
        .output()
        .map(|o| {
            for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                if pid != vcontap.id().to_string() {
                    let _ = Command::new("kill").arg(pid).status();
                }
            }
        });
    assert!(
        client.status.success(),
        "sipp uac failed: {}\n{}",
        String::from_utf8_lossy(&client.stdout),
        String::from_utf8_lossy(&client.stderr)
    );
    wait_for_vcons(&out, CALLS, Duration::from_secs(20));
    assert!(Command::new("kill")
        .args(["-TERM", &vcontap.id().to_string()])
        .status()
        .unwrap()
        .success());
    let o = vcontap.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "exit 0 after SIGTERM: {err}");

    let vcons = common::vcons(&out);
    assert_eq!(vcons.len(), CALLS, "{err}");
    for x in &vcons {
        check_call(x);
    }
    common::validate(&[&out]);
}

/// One SIPp call's vCon: parties, answered, ended by BYE after about [`HOLD_MS`], both RTP
/// streams with their packets, and a stereo recording with each side's tone on its channel.
fn check_call(x: &Value) {
    let id = &x["uuid"];
    let parties = x["parties"].as_array().unwrap();
    assert_eq!(parties.len(), 2, "{id}");
    let sip = |p: &Value| p["sip"].as_str().unwrap_or_default().to_string();
    assert!(
        sip(&parties[0]).starts_with("sip:alice@"),
        "{id}: {parties:?}"
    );
    assert!(
        sip(&parties[1]).starts_with("sip:bob@"),
        "{id}: {parties:?}"
    );
    let live = &x["vcontap"];
    assert_eq!(live["end_reason"], "bye", "{id}: {live}");
    let answered = common::vcon_time_ms(live["answered_at"].as_str().unwrap()).unwrap();
    let ended = common::vcon_time_ms(live["ended_at"].as_str().unwrap()).unwrap();
    let held = ended - answered;
    assert!(
        (HOLD_MS as i64 - 200..HOLD_MS as i64 + 1500).contains(&held),
        "{id}: answered for {held} ms, SIPp held the call {HOLD_MS} ms"
    );
    // Both directions measured, with their packets (125 and 100 sent).
    let report = x["analysis"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["schema"] == "vcontap-rtp-quality")
        .unwrap_or_else(|| panic!("{id}: no RTP report"));
    let streams = report["body"]["streams"].as_array().unwrap();
    let packets = |dir: &str| -> u64 {
        streams
            .iter()
            .filter(|s| s["direction"] == dir)
            .map(|s| s["packets"].as_u64().unwrap())
            .sum()
    };
    assert_eq!(packets("caller->callee"), 125, "{id}: {streams:?}");
    assert_eq!(packets("callee->caller"), 100, "{id}: {streams:?}");
    // A stereo recording: the caller's 440 Hz left, the callee's 1 kHz right.
    let recs: Vec<&Value> = x["dialog"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["type"] == "recording")
        .collect();
    assert!(!recs.is_empty(), "{id}: no recording");
    let total: f64 = recs.iter().map(|d| d["duration"].as_f64().unwrap()).sum();
    assert!((2.3..=3.6).contains(&total), "{id}: {total} s recorded");
    let wav = common::check_media_hash(recs[0]);
    let (l, r, rate) = common::read_stereo(&wav);
    let rate = f64::from(rate);
    assert!(common::tone_share(&l, rate, 440.0) > 0.5, "{id}: left");
    assert!(common::tone_share(&r, rate, 1000.0) > 0.5, "{id}: right");
}
