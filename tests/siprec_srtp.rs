//! `vcontap siprec` with SDES-SRTP end to end, against an independent SRTP implementation:
//! libsrtp 2 through the PyPI `pylibsrtp` bindings (`pip install pylibsrtp`), driven by a
//! small Python script this test writes. The SRC here is the test itself (SIP over UDP;
//! SIPp 3.6.1 has no SRTP): a multipart SIPREC INVITE with two `RTP/SAVP` streams, one
//! offering `AES_CM_128_HMAC_SHA1_80`, the other `AEAD_AES_128_GCM` (then
//! `AES_CM_128_HMAC_SHA1_32` as a fallback line), then 2 s of PCMU protected by libsrtp:
//! a 440 Hz tone on the caller's stream, 1000 Hz on the agent's, with an SRTCP sender
//! report per stream, a sequence number wrap (ROC 0 → 1) and one retransmitted duplicate.
//! Halfway a re-INVITE changes both keys (`a=crypto` with new `inline:` keys) and the rest
//! is protected under the new keys. Then BYE.
//!
//! Checks: the answer (one `a=crypto` per line, offered tag and suite, *our* key), the
//! `/metrics` SRTP counters (every packet decrypted, no authentication failure, no
//! unknown SSRC, the duplicate counted as a replay), and the vCon (participants, one
//! stereo recording with each tone on its channel, `validate-vcon`). Skipped with a
//! message when `python3` or its `pylibsrtp` module is missing.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::siprec::{free_port, sigterm_server};

/// libsrtp as the SRC's SRTP stack: reads `[kind u8][len u16][packet]` records (kind 0 =
/// RTP, 1 = RTCP) and writes them back protected.
const PROTECT_PY: &str = r#"
import struct, sys
from pylibsrtp import Policy, Session
profiles = {
    "AES_CM_128_HMAC_SHA1_80": Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    "AES_CM_128_HMAC_SHA1_32": Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
    "AEAD_AES_128_GCM": Policy.SRTP_PROFILE_AEAD_AES_128_GCM,
    "AEAD_AES_256_GCM": Policy.SRTP_PROFILE_AEAD_AES_256_GCM,
}
suite, key, src, dst = sys.argv[1], bytes.fromhex(sys.argv[2]), sys.argv[3], sys.argv[4]
s = Session(Policy(key=key, ssrc_type=Policy.SSRC_ANY_OUTBOUND, srtp_profile=profiles[suite]))
data, out, i = open(src, "rb").read(), bytearray(), 0
while i < len(data):
    kind = data[i]
    (n,) = struct.unpack("!H", data[i + 1:i + 3])
    pkt = data[i + 3:i + 3 + n]
    i += 3 + n
    p = s.protect_rtcp(pkt) if kind == 1 else s.protect(pkt)
    out += bytes([kind]) + struct.pack("!H", len(p)) + p
open(dst, "wb").write(out)
"#;

fn pylibsrtp() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import pylibsrtp"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("skipped: python3 with pylibsrtp not found (pip install pylibsrtp)");
    }
    ok
}

/// Packets protected by libsrtp, in order. `(is_rtcp, plaintext)` in.
fn protect(dir: &Path, suite: &str, key: &[u8], packets: &[(bool, Vec<u8>)]) -> Vec<Vec<u8>> {
    let script = dir.join("protect.py");
    std::fs::write(&script, PROTECT_PY).unwrap();
    let (src, dst) = (dir.join("plain.bin"), dir.join("protected.bin"));
    let mut buf = Vec::new();
    for (rtcp, p) in packets {
        buf.push(u8::from(*rtcp));
        buf.extend_from_slice(&(p.len() as u16).to_be_bytes());
        buf.extend_from_slice(p);
    }
    std::fs::write(&src, buf).unwrap();
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    let o = Command::new("python3")
        .arg(&script)
        .args([suite, &hex])
        .arg(&src)
        .arg(&dst)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "libsrtp protect: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let data = std::fs::read(&dst).unwrap();
    let mut out = Vec::new();
    let mut i = 0;
    while i < data.len() {
        let n = usize::from(u16::from_be_bytes([data[i + 1], data[i + 2]]));
        out.push(data[i + 3..i + 3 + n].to_vec());
        i += 3 + n;
    }
    assert_eq!(out.len(), packets.len());
    out
}

fn base64(b: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for k in 0..4 {
            if k <= c.len() {
                s.push(A[((n >> (18 - 6 * k)) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// Key material of `len` bytes, different per `seed` and per run.
fn key(seed: u8, len: usize) -> Vec<u8> {
    let pid = std::process::id();
    (0..len)
        .map(|i| (i as u8).wrapping_mul(37) ^ seed.wrapping_mul(101) ^ (pid as u8))
        .collect()
}

/// One 20 ms PCMU packet number `n` of a `freq` tone, with sequence number `seq`.
fn pcmu(n: u32, seq: u16, ssrc: u32, freq: f64) -> Vec<u8> {
    let mut p = vec![0x80, 0];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(n * 160).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    for i in 0..160u32 {
        let t = f64::from(n * 160 + i);
        let s = (8000.0 * (2.0 * std::f64::consts::PI * freq * t / 8000.0).sin()) as i16;
        p.push(vcontap_media::linear_to_ulaw(s));
    }
    p
}

/// An RTCP sender report (28 bytes) from `ssrc`.
fn sender_report(ssrc: u32, packets: u32) -> Vec<u8> {
    let mut p = vec![0x80, 200, 0, 6];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[0xe9, 0x5a, 0, 0, 0, 0, 0, 0]);
    p.extend_from_slice(&(packets * 160).to_be_bytes());
    p.extend_from_slice(&packets.to_be_bytes());
    p.extend_from_slice(&(packets * 160).to_be_bytes());
    p
}

struct Sip {
    sock: UdpSocket,
    server: SocketAddr,
    call_id: String,
    to_tag: Option<String>,
    branch: u32,
}

impl Sip {
    fn local(&self) -> SocketAddr {
        self.sock.local_addr().unwrap()
    }

    fn send(&mut self, method: &str, cseq: u32, extra: &str, body: &str, ctype: &str) {
        self.branch += 1;
        let local = self.local();
        let to_tag = self
            .to_tag
            .as_ref()
            .map(|t| format!(";tag={t}"))
            .unwrap_or_default();
        let ctype = if body.is_empty() {
            String::new()
        } else {
            format!("Content-Type: {ctype}\r\n")
        };
        let msg = format!(
            "{method} sip:srs@{server} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};branch=z9hG4bK-srtp-{b}\r\n\
             From: <sip:recorder-client@{local}>;tag=src1\r\n\
             To: <sip:srs@{server}>{to_tag}\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} {method}\r\n\
             Contact: <sip:recorder-client@{local}>;+sip.src\r\n\
             Max-Forwards: 70\r\n\
             {extra}{ctype}Content-Length: {len}\r\n\r\n{body}",
            server = self.server,
            b = self.branch,
            call_id = self.call_id,
            len = body.len(),
        );
        self.sock.send_to(msg.as_bytes(), self.server).unwrap();
    }

    /// The final response to `cseq method` (provisional ones and retransmissions skipped).
    fn response(&mut self, cseq: u32, method: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut buf = vec![0u8; 65536];
        while Instant::now() < deadline {
            let Ok(n) = self.sock.recv(&mut buf) else {
                continue;
            };
            let msg = String::from_utf8_lossy(&buf[..n]).to_string();
            let Some(code) = msg
                .strip_prefix("SIP/2.0 ")
                .and_then(|r| r.get(..3))
                .and_then(|c| c.parse::<u16>().ok())
            else {
                continue;
            };
            if code < 200 || !msg.contains(&format!("CSeq: {cseq} {method}")) {
                continue;
            }
            assert_eq!(code, 200, "{msg}");
            if self.to_tag.is_none() {
                let to = msg.lines().find(|l| l.starts_with("To:")).unwrap();
                self.to_tag = Some(to.split(";tag=").nth(1).unwrap().trim().to_owned());
            }
            return msg;
        }
        panic!("no final response to {cseq} {method}");
    }
}

/// The SDP offer: two sendonly `RTP/SAVP` PCMU streams with the given crypto lines.
fn offer_sdp(version: u32, caller: &str, callee: &str) -> String {
    format!(
        "v=0\r\no=recorder-client 4711 {version} IN IP4 127.0.0.1\r\ns=recording\r\n\
         c=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio 7000 RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\n{caller}a=label:caller-leg\r\na=sendonly\r\n\
         m=audio 7002 RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\n{callee}a=label:callee-leg\r\na=sendonly\r\n"
    )
}

const METADATA: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<recording xmlns="urn:ietf:params:xml:ns:recording:1">
<datamode>complete</datamode>
<session session_id="U2Vzc2lvbi1zcnRw"><start-time>2026-01-01T10:00:00Z</start-time></session>
<participant participant_id="UGFydHktQ2FsbGVy">
<nameID aor="sip:+14155550142@carrier.example"><name xml:lang="en">Grace Caller</name></nameID>
</participant>
<participant participant_id="UGFydHktQWdlbnQ=">
<nameID aor="sip:agent-7@contact-center.example"><name xml:lang="en">Agent Seven</name></nameID>
</participant>
<stream stream_id="U3RyZWFtLWNhbGxlcg==" session_id="U2Vzc2lvbi1zcnRw"><label>caller-leg</label></stream>
<stream stream_id="U3RyZWFtLWFnZW50" session_id="U2Vzc2lvbi1zcnRw"><label>callee-leg</label></stream>
<participantstreamassoc participant_id="UGFydHktQ2FsbGVy"><send>U3RyZWFtLWNhbGxlcg==</send></participantstreamassoc>
<participantstreamassoc participant_id="UGFydHktQWdlbnQ="><send>U3RyZWFtLWFnZW50</send></participantstreamassoc>
</recording>
"#;

/// `(port, crypto line)` of each answered `m=audio`.
fn answered(answer: &str) -> Vec<(u16, String)> {
    let mut out: Vec<(u16, String)> = Vec::new();
    for line in answer.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("m=audio ") {
            out.push((
                rest.split(' ').next().unwrap().parse().unwrap(),
                String::new(),
            ));
        } else if let Some(c) = line.strip_prefix("a=crypto:") {
            let last = out.last_mut().unwrap();
            assert!(last.1.is_empty(), "one a=crypto per m-line: {answer}");
            last.1 = c.to_owned();
        }
    }
    out
}

fn metrics(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn counter(m: &str, name: &str) -> u64 {
    m.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics:\n{m}"))
}

#[test]
fn srtp_session_from_libsrtp_rekeyed_by_reinvite_to_a_vcon() {
    if !pylibsrtp() {
        return;
    }
    let dir = common::tmpdir("siprec-srtp");
    let out = dir.join("out");
    let (sip_port, api_port) = (free_port(), free_port());
    let base = 46000 + (std::process::id() % 200) as u16 * 20;
    let mut vcontap = Command::new(env!("CARGO_BIN_EXE_vcontap"))
        .args(["siprec", "--listen"])
        .arg(format!("127.0.0.1:{sip_port}"))
        .arg("--rtp-ports")
        .arg(format!("{base}-{}", base + 19))
        .args(["--host", "siprec.test.vcontap.example", "--listen-api"])
        .arg(format!("127.0.0.1:{api_port}"))
        .arg("--out")
        .arg(&out)
        .arg("--spool")
        .arg(common::spool_for(&out))
        .stderr(Stdio::piped())
        .spawn()
        .expect("start vcontap siprec");
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", sip_port)).is_err()
        || TcpStream::connect(("127.0.0.1", api_port)).is_err()
    {
        if Instant::now() > deadline || vcontap.try_wait().unwrap().is_some() {
            let _ = vcontap.kill();
            panic!("vcontap siprec did not listen");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let api: SocketAddr = ([127, 0, 0, 1], api_port).into();

    // The SRC's keys: first offer, then the re-INVITE's.
    let suites = ["AES_CM_128_HMAC_SHA1_80", "AEAD_AES_128_GCM"];
    let lens = [30, 28];
    let keys: Vec<Vec<Vec<u8>>> = (0..2u8)
        .map(|epoch| {
            (0..2)
                .map(|s| key(epoch * 2 + s as u8 + 1, lens[s]))
                .collect()
        })
        .collect();
    let crypto = |epoch: usize, s: usize| {
        let mut l = format!(
            "a=crypto:1 {} inline:{}\r\n",
            suites[s],
            base64(&keys[epoch][s])
        );
        if s == 1 {
            // A second choice the recorder must not take (the first acceptable line wins).
            l += &format!(
                "a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:{}\r\n",
                base64(&key(99, 30))
            );
        }
        l
    };

    // Media: 100 packets per stream; sequence numbers start near the top so they wrap
    // (ROC 0 -> 1) in the first half; packets 50.. are sent after the re-key.
    let ssrcs = [0x5a11_0001u32, 0x5a11_0002];
    let freqs = [440.0, 1000.0];
    let seq0: u16 = 65506;
    let mut protected = [Vec::new(), Vec::new()];
    let mut reports = [Vec::new(), Vec::new()];
    for s in 0..2 {
        for (epoch, range) in [(0usize, 0u32..50), (1, 50..100)] {
            let mut plain: Vec<(bool, Vec<u8>)> = range
                .clone()
                .map(|n| {
                    let seq = seq0.wrapping_add(n as u16);
                    (false, pcmu(n, seq, ssrcs[s], freqs[s]))
                })
                .collect();
            plain.push((true, sender_report(ssrcs[s], range.end)));
            let mut p = protect(&dir, suites[s], &keys[epoch][s], &plain);
            reports[s].push(p.pop().unwrap());
            protected[s].extend(p);
        }
    }

    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut sip = Sip {
        sock,
        server: ([127, 0, 0, 1], sip_port).into(),
        call_id: format!("srtp-{}@127.0.0.1", std::process::id()),
        to_tag: None,
        branch: 0,
    };
    let body = format!(
        "--b1\r\nContent-Type: application/sdp\r\n\r\n{}\r\n--b1\r\n\
         Content-Type: application/rs-metadata+xml\r\nContent-Disposition: recording-session\r\n\r\n\
         {METADATA}\r\n--b1--\r\n",
        offer_sdp(1, &crypto(0, 0), &crypto(0, 1))
    );
    sip.send(
        "INVITE",
        1,
        "Require: siprec\r\n",
        &body,
        "multipart/mixed;boundary=b1",
    );
    let answer = sip.response(1, "INVITE");
    sip.send("ACK", 1, "", "", "");
    let streams = answered(&answer);
    assert_eq!(streams.len(), 2, "{answer}");
    assert!(answer.contains("RTP/SAVP"), "{answer}");
    for (s, (port, c)) in streams.iter().enumerate() {
        assert!(
            *port >= base && *port < base + 20 && port % 2 == 0,
            "{answer}"
        );
        let prefix = format!("1 {} inline:", suites[s]);
        assert!(c.starts_with(&prefix), "offered tag and suite: {answer}");
        let ours = c[prefix.len()..].split('|').next().unwrap();
        assert_ne!(ours, base64(&keys[0][s]), "our own key, not the SRC's");
    }

    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let start = Instant::now();
    let send_half = |epoch: usize, from: usize| {
        let (caller, callee) = (
            &protected[0][from..from + 50],
            &protected[1][from..from + 50],
        );
        for (i, (a, b)) in caller.iter().zip(callee).enumerate() {
            let n = from + i;
            tx.send_to(a, ("127.0.0.1", streams[0].0)).unwrap();
            tx.send_to(b, ("127.0.0.1", streams[1].0)).unwrap();
            if n == 10 {
                // A retransmitted duplicate: dropped as a replay, not an error.
                tx.send_to(a, ("127.0.0.1", streams[0].0)).unwrap();
            }
            let next = start + Duration::from_millis(20 * (n as u64 + 1));
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
        for (s, (port, _)) in streams.iter().enumerate() {
            tx.send_to(&reports[s][epoch], ("127.0.0.1", port + 1))
                .unwrap();
        }
    };
    send_half(0, 0);

    // Re-INVITE: same streams, new keys from the SRC (plain SDP, no metadata).
    sip.send(
        "INVITE",
        2,
        "",
        &offer_sdp(2, &crypto(1, 0), &crypto(1, 1)),
        "application/sdp",
    );
    let reanswer = sip.response(2, "INVITE");
    sip.send("ACK", 2, "", "", "");
    let restreams = answered(&reanswer);
    assert_eq!(
        restreams.iter().map(|s| s.0).collect::<Vec<_>>(),
        streams.iter().map(|s| s.0).collect::<Vec<_>>(),
        "same ports after the re-INVITE: {reanswer}"
    );
    send_half(1, 50);

    std::thread::sleep(Duration::from_millis(300));
    let m = metrics(api);
    sip.send("BYE", 3, "", "", "");
    sip.response(3, "BYE");
    std::thread::sleep(Duration::from_millis(300));
    let err = sigterm_server(vcontap);

    // 200 RTP + 4 SRTCP packets, the duplicate refused as a replay, nothing forged.
    assert_eq!(
        counter(&m, "vcontap_siprec_srtp_decrypted_total"),
        204,
        "{m}"
    );
    assert_eq!(
        counter(&m, "vcontap_siprec_srtp_auth_failures_total"),
        0,
        "{m}"
    );
    assert_eq!(
        counter(&m, "vcontap_siprec_srtp_unknown_ssrc_total"),
        0,
        "{m}"
    );
    assert_eq!(counter(&m, "vcontap_siprec_srtp_replayed_total"), 1, "{m}");
    assert_eq!(counter(&m, "vcontap_siprec_srtp_malformed_total"), 0, "{m}");
    assert_eq!(counter(&m, "vcontap_siprec_rtp_unknown_total"), 0, "{m}");

    let vcons = common::vcons(&out);
    assert_eq!(vcons.len(), 1, "one vCon: {err}");
    let v: &Value = &vcons[0];
    let parties = v["parties"].as_array().unwrap();
    assert_eq!(parties.len(), 2, "{v}");
    assert_eq!(parties[0]["tel"], "+14155550142");
    assert_eq!(parties[1]["name"], "Agent Seven");
    assert_eq!(v["vcontap"]["end_reason"], "bye", "{v}");
    let recs: Vec<&Value> = v["dialog"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["type"] == "recording")
        .collect();
    assert_eq!(recs.len(), 1, "{v}");
    let wav = common::check_media_hash(recs[0]);
    let (left, right, rate) = common::read_stereo(&wav);
    let (first, last) = common::siprec::audible_span(&left, &right);
    let audible = (last - first) as f64 / f64::from(rate);
    // 2 s of audio plus the re-INVITE round trip in the middle.
    assert!((1.9..=2.6).contains(&audible), "2 s of audio: {audible}");
    let (left, right) = (&left[first..=last], &right[first..=last]);
    let rate = f64::from(rate);
    let (l440, l1k) = common::siprec::tone_shares(left, rate);
    let (r440, r1k) = common::siprec::tone_shares(right, rate);
    assert!(l440 > 0.5 && l1k < 0.05, "caller's tone left: {l440} {l1k}");
    assert!(r1k > 0.5 && r440 < 0.05, "agent's tone right: {r1k} {r440}");
    // Both halves decrypted: the tone is there before and after the re-key.
    let mid = left.len() / 2;
    for half in [&left[..mid], &left[mid..]] {
        assert!(common::tone_share(half, rate, 440.0) > 0.5);
    }
    for half in [&right[..mid], &right[mid..]] {
        assert!(common::tone_share(half, rate, 1000.0) > 0.5);
    }

    common::validate(&[&out]);
    let _ = std::fs::remove_dir_all(&dir);
}
