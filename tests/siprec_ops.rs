//! The SIPREC server in operation, against real clients on loopback (issue 9, §6 of the
//! SIPREC design notes): SIPp (Debian `sip-tester`) as the SRC running the project's
//! scenarios in tests/siprec/ — pause/resume by re-INVITE, a metadata-only UPDATE, an
//! OPTIONS ping (under `vcontap run --config` with `[siprec]` beside a HEP listener), and
//! replays of real vendor offers from `$VCONTAP_SHARED/siprec` (read at run time, never
//! copied into the project); a rustls client for SIP over TLS (SIPp 3.6 has no TLS); a raw
//! TCP client for CANCEL before the answer (one write carries INVITE and CANCEL, so the
//! CANCEL is read before the server can answer: SIPp cannot time that); and the live API's
//! event stream of a SIPREC session read with `curl -N`. Every vCon passes
//! `validate-vcon`. Each test skips with a message when its client is missing.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::siprec::{answered_streams, free_port, send_tones, sigterm_server, sipp, sipp_ok};

/// An RTP range of its own for test `k` of this file (pid-derived: parallel runs and the
/// tests of tests/siprec.rs, which use 42000 and up, do not collide).
fn rtp_range(k: u16) -> String {
    let base = 20000 + (std::process::id() % 100) as u16 * 100 + k * 10;
    format!("{base}-{}", base + 9)
}

/// Waits until `vcontap` listens for SIP over TCP on `port`.
fn wait_listening(child: &mut Child, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(st)) = child.try_wait() {
            let mut err = String::new();
            child.stderr.take().unwrap().read_to_string(&mut err).ok();
            panic!("vcontap exited ({st}): {err}");
        }
        assert!(Instant::now() < deadline, "vcontap did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A server killed if the test ends early (a failed assertion), so none outlives its test.
struct Running(Option<Child>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `vcontap siprec` on 127.0.0.1:`sip_port` with `extra` flags, once it listens.
fn start_server(out: &Path, sip_port: u16, range: &str, extra: &[&str]) -> Running {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vcontap"))
        .args(["siprec", "--listen"])
        .arg(format!("127.0.0.1:{sip_port}"))
        .args([
            "--rtp-ports",
            range,
            "--host",
            "siprec.test.vcontap.example",
        ])
        .arg("--out")
        .arg(out)
        .arg("--spool")
        .arg(common::spool_for(out))
        .args(extra)
        .stderr(Stdio::piped())
        .spawn()
        .expect("start vcontap siprec");
    wait_listening(&mut child, sip_port);
    Running(Some(child))
}

/// SIPp running `scenario` (a path) once against the server, tracing messages.
fn start_sipp(sipp: &Path, scenario: &Path, sip_port: u16, transport: &str, trace: &Path) -> Child {
    Command::new(sipp)
        .arg(format!("127.0.0.1:{sip_port}"))
        .arg("-sf")
        .arg(scenario)
        .args(["-m", "1", "-i", "127.0.0.1", "-p", "0"])
        .args(["-timeout", "30", "-t", transport])
        .args(["-trace_msg", "-message_file"])
        .arg(trace)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sipp")
}

fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/siprec")
        .join(name)
}

/// SIGTERM; the server must exit 0 without a panic. Returns its stderr.
fn stop_server(mut running: Running) -> String {
    sigterm_server(running.0.take().unwrap())
}

/// The trace once it holds `n` received `200 OK`s carrying SDP; returns the `n`th.
fn nth_answer(trace: &Path, n: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Ok(s) = std::fs::read_to_string(trace) {
            let answers: Vec<&str> = s
                .split("SIP/2.0 200 OK")
                .skip(1)
                .map(|m| m.split("\n\n---").next().unwrap_or(m))
                .filter(|m| m.contains("m=audio"))
                .collect();
            if answers.len() >= n {
                return answers[n - 1].to_owned();
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("no 200 OK number {n} with SDP in {}", trace.display());
}

fn recordings(v: &Value) -> Vec<&Value> {
    v["dialog"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["type"] == "recording")
        .collect()
}

/// Seconds of audible signal (either channel) in a recording's WAV.
fn audible_seconds(rec: &Value) -> f64 {
    let wav = common::check_media_hash(rec);
    let (left, right, rate) = common::read_stereo(&wav);
    let loud = |x: &f64| x.abs() > 200.0;
    let n = left
        .iter()
        .zip(&right)
        .filter(|(l, r)| loud(l) || loud(r))
        .count();
    n as f64 / f64::from(rate)
}

#[test]
fn sipp_pause_and_resume_by_reinvite_cut_the_recording() {
    let Some(sipp) = sipp() else { return };
    let dir = common::tmpdir("siprec-ops-pause");
    let out = dir.join("out");
    let sip_port = free_port();
    let vcontap = start_server(&out, sip_port, &rtp_range(0), &[]);
    let trace = dir.join("sipp-messages.log");
    let src = start_sipp(
        &sipp,
        &scenario("src-pause-resume.xml"),
        sip_port,
        "u1",
        &trace,
    );

    let first = answered_streams(&nth_answer(&trace, 1));
    let ports: Vec<u16> = first.iter().map(|s| s.0).collect();
    send_tones(&ports, 0x5100, 0, 50);
    // The pause: the answer is still a full SDP answer, same labels and ports.
    let paused = answered_streams(&nth_answer(&trace, 2));
    assert_eq!(
        paused, first,
        "same labels and ports in the re-INVITE answer"
    );
    let resumed = answered_streams(&nth_answer(&trace, 3));
    assert_eq!(resumed, first);
    send_tones(&ports, 0x5100, 200, 50);
    sipp_ok(src);
    std::thread::sleep(Duration::from_millis(300));
    let err = stop_server(vcontap);

    let vcons = common::vcons(&out);
    assert_eq!(vcons.len(), 1, "{err}");
    let v = &vcons[0];
    assert_eq!(v["vcontap"]["end_reason"], "bye", "{v}");
    // The pause is a segment boundary: one recording before it, one after.
    let recs = recordings(v);
    assert_eq!(recs.len(), 2, "two segments around the pause: {v}");
    let t = |r: &Value| common::vcon_time_ms(r["start"].as_str().unwrap()).unwrap();
    let (d0, d1) = (
        recs[0]["duration"].as_f64().unwrap(),
        recs[1]["duration"].as_f64().unwrap(),
    );
    // The first segment ends at the pause (~1.5 s after the answer), the second starts
    // at the resume, 1 s later, and runs to the BYE (~1.5 s).
    let gap = (t(recs[1]) - t(recs[0])) as f64 / 1000.0 - d0;
    assert!(
        (0.7..=1.6).contains(&gap),
        "paused {gap} s between segments: {v}"
    );
    assert!((1.0..=2.2).contains(&d0), "first segment {d0} s");
    assert!((1.0..=2.2).contains(&d1), "second segment {d1} s");
    // And it is listed: one pause, from the end of the first segment to the second's start.
    let pauses = v["vcontap"]["recording_pauses"].as_array().unwrap();
    assert_eq!(pauses.len(), 1, "{v}");
    let (p0, p1) = (
        common::vcon_time_ms(pauses[0]["start"].as_str().unwrap()).unwrap(),
        common::vcon_time_ms(pauses[0]["end"].as_str().unwrap()).unwrap(),
    );
    assert!(
        (p1 - p0 - (gap * 1000.0) as i64).abs() <= 50,
        "pause {p0}..{p1}, gap {gap}: {v}"
    );
    assert!(
        (p1 - t(recs[1])).abs() <= 50,
        "the second segment starts at the resume"
    );
    for r in &recs {
        let a = audible_seconds(r);
        assert!(
            (0.9..=1.1).contains(&a),
            "1 s of audio in each segment: {a}"
        );
    }
    common::validate(&[&out]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sipp_metadata_only_update_changes_the_participants() {
    let Some(sipp) = sipp() else { return };
    let dir = common::tmpdir("siprec-ops-update");
    let out = dir.join("out");
    let sip_port = free_port();
    let vcontap = start_server(&out, sip_port, &rtp_range(1), &[]);
    let trace = dir.join("sipp-messages.log");
    let src = start_sipp(
        &sipp,
        &scenario("src-update-metadata.xml"),
        sip_port,
        "t1",
        &trace,
    );
    let ports: Vec<u16> = answered_streams(&nth_answer(&trace, 1))
        .iter()
        .map(|s| s.0)
        .collect();
    send_tones(&ports, 0x5100, 0, 40);
    sipp_ok(src);
    std::thread::sleep(Duration::from_millis(300));
    let err = stop_server(vcontap);
    let log = std::fs::read_to_string(&trace).unwrap();
    let upd = log.split("CSeq: 2 UPDATE").count();
    assert!(upd >= 3, "UPDATE sent and answered: {log}");

    let vcons = common::vcons(&out);
    assert_eq!(vcons.len(), 1, "{err}");
    let v = &vcons[0];
    let parties = v["parties"].as_array().unwrap();
    let sips: Vec<&str> = parties.iter().filter_map(|p| p["sip"].as_str()).collect();
    assert_eq!(parties[0]["tel"], "+14155550142", "{v}");
    assert!(
        sips.contains(&"sip:agent-7@contact-center.example"),
        "the first agent stays a party: {v}"
    );
    let nine = parties
        .iter()
        .find(|p| p["sip"] == "sip:agent-9@contact-center.example")
        .unwrap_or_else(|| panic!("the UPDATE's new participant is a party: {v}"));
    assert_eq!(nine["name"], "Agent Nine");
    assert_eq!(
        recordings(v).len(),
        1,
        "metadata does not cut the recording: {v}"
    );
    common::validate(&[&out]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `vcontap run --config` with `[siprec]` beside `[hep]` and `[api]`: one daemon, one
/// output side; an SBC's OPTIONS keep-alive gets 200 with Allow/Accept/Supported, and
/// `/metrics` carries both inputs' families.
#[test]
fn run_config_with_siprec_and_hep_answers_options_pings() {
    let Some(sipp) = sipp() else { return };
    let dir = common::tmpdir("siprec-ops-run");
    let out = dir.join("out");
    let (sip_port, hep_port, api_port) = (free_port(), free_port(), free_port());
    let cfg = dir.join("vcontap.toml");
    std::fs::write(
        &cfg,
        format!(
            "[hep]\nlisten = \"127.0.0.1:{hep_port}\"\n\n\
             [siprec]\nlisten = \"127.0.0.1:{sip_port}\"\nrtp_ports = \"{}\"\n\
             allow = [\"127.0.0.0/8\"]\nmax_sessions = 10\n\n\
             [api]\nlisten = \"127.0.0.1:{api_port}\"\n\n\
             [output]\ndir = \"{}\"\n\n[delivery]\nspool = \"{}\"\n",
            rtp_range(2),
            out.display(),
            common::spool_for(&out).display()
        ),
    )
    .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_vcontap"))
        .arg("validate")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut child = Command::new(env!("CARGO_BIN_EXE_vcontap"))
        .args(["run", "--config"])
        .arg(&cfg)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_listening(&mut child, sip_port);
    let vcontap = Running(Some(child));
    let trace = dir.join("sipp-messages.log");
    sipp_ok(start_sipp(
        &sipp,
        &scenario("src-options.xml"),
        sip_port,
        "u1",
        &trace,
    ));
    let log = std::fs::read_to_string(&trace).unwrap();
    let ok = &log[log.find("SIP/2.0 200 OK").expect("a 200 to OPTIONS")..];
    for h in ["Allow:", "Accept:", "Supported:"] {
        let line = ok.lines().find(|l| l.starts_with(h));
        assert!(line.is_some(), "{h} in the 200: {ok}");
    }
    let allow = ok.lines().find(|l| l.starts_with("Allow:")).unwrap();
    for m in ["INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "UPDATE"] {
        assert!(allow.contains(m), "{allow}");
    }
    let accept = ok.lines().find(|l| l.starts_with("Accept:")).unwrap();
    assert!(accept.contains("application/sdp") && accept.contains("application/rs-metadata+xml"));
    let metrics = Command::new("curl")
        .args(["-sS", &format!("http://127.0.0.1:{api_port}/metrics")])
        .output();
    if let Ok(m) = metrics {
        let m = String::from_utf8_lossy(&m.stdout);
        assert!(m.contains("vcontap_siprec_sessions_open 0"), "{m}");
        assert!(
            m.contains("vcontap_hep_"),
            "both inputs on one /metrics: {m}"
        );
    }
    stop_server(vcontap);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Reads one SIP message (headers and Content-Length body) from a stream.
fn read_sip(r: &mut impl Read, buf: &mut Vec<u8>) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(h) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..h]).to_string();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    (k.eq_ignore_ascii_case("content-length") || k.eq_ignore_ascii_case("l"))
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            if buf.len() >= h + 4 + len {
                let msg: Vec<u8> = buf.drain(..h + 4 + len).collect();
                return String::from_utf8(msg).unwrap();
            }
        }
        assert!(Instant::now() < deadline, "no complete SIP message");
        let mut chunk = [0u8; 4096];
        let n = r.read(&mut chunk).unwrap();
        assert!(n > 0, "connection closed");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A SIPREC INVITE with one labelled PCMU stream and RFC 7865 metadata.
fn invite(transport: &str, local: &str, server: &str, call_id: &str, extra: &str) -> String {
    let sdp = "v=0\r\no=src 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
               m=audio 9000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=label:1\r\na=sendonly\r\n";
    let meta = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n\
        <recording xmlns=\"urn:ietf:params:xml:ns:recording:1\"><datamode>complete</datamode>\
        <session session_id=\"c2Vzcy10bHM=\"/>\
        <participant participant_id=\"cGEtdGxz\"><nameID aor=\"sip:+13125550177@tls.example\">\
        <name>Tls Caller</name></nameID></participant>\
        <stream stream_id=\"c3QtdGxz\" session_id=\"c2Vzcy10bHM=\"><label>1</label></stream>\
        <participantstreamassoc participant_id=\"cGEtdGxz\"><send>c3QtdGxz</send></participantstreamassoc>\
        </recording>\r\n";
    let body = format!(
        "--b1\r\nContent-Type: application/sdp\r\n\r\n{sdp}\r\n--b1\r\n\
         Content-Type: application/rs-metadata+xml\r\nContent-Disposition: recording-session\r\n\r\n\
         {meta}--b1--\r\n"
    );
    format!(
        "INVITE sip:srs@{server};transport={t} SIP/2.0\r\n\
         Via: SIP/2.0/{transport} {local};branch=z9hG4bK-{call_id}-1\r\n\
         From: <sip:src@{local}>;tag=src-{call_id}\r\nTo: <sip:srs@{server}>\r\n\
         Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:src@{local};transport={t}>;+sip.src\r\n\
         Max-Forwards: 70\r\nRequire: siprec\r\n{extra}\
         Content-Type: multipart/mixed;boundary=b1\r\nContent-Length: {}\r\n\r\n{body}",
        body.len(),
        t = transport.to_ascii_lowercase(),
    )
}

/// An in-dialog request (ACK, BYE) after `answer`.
fn in_dialog(
    method: &str,
    cseq: u32,
    transport: &str,
    local: &str,
    server: &str,
    call_id: &str,
    answer: &str,
) -> String {
    let to = answer
        .lines()
        .find(|l| l.starts_with("To:") || l.starts_with("t:"))
        .unwrap()
        .split_once(':')
        .unwrap()
        .1
        .trim()
        .to_owned();
    format!(
        "{method} sip:srs@{server} SIP/2.0\r\nVia: SIP/2.0/{transport} {local};branch=z9hG4bK-{call_id}-{cseq}{method}\r\n\
         From: <sip:src@{local}>;tag=src-{call_id}\r\nTo: {to}\r\nCall-ID: {call_id}\r\n\
         CSeq: {cseq} {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
}

/// SIP over TLS with a rustls client: INVITE (multipart, metadata) → 200 OK with the SDP
/// answer, RTP over UDP to the answered port, ACK, BYE → a vCon with the party and audio.
#[test]
fn sip_over_tls_records_a_session() {
    let dir = common::tmpdir("siprec-ops-tls");
    let out = dir.join("out");
    let (cert, key) = (dir.join("sip.crt"), dir.join("sip.key"));
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=vcontap-sip-test"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        // An end-entity certificate (webpki refuses a CA certificate as a server's).
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output();
    if !made.as_ref().is_ok_and(|o| o.status.success()) {
        eprintln!("skipped: openssl could not make a test certificate");
        return;
    }
    let (sip_port, tls_port) = (free_port(), free_port());
    let tls_addr = format!("127.0.0.1:{tls_port}");
    let vcontap = start_server(
        &out,
        sip_port,
        &rtp_range(3),
        &[
            "--tls-listen",
            &tls_addr,
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ],
    );

    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(&cert).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(cfg), name).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let tcp = loop {
        match TcpStream::connect(&tls_addr) {
            Ok(t) => break t,
            Err(e) => assert!(Instant::now() < deadline, "TLS listener: {e}"),
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let local = tcp.local_addr().unwrap().to_string();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let call_id = format!("tls-{}", std::process::id());
    tls.write_all(invite("TLS", &local, &tls_addr, &call_id, "").as_bytes())
        .unwrap();
    let mut buf = Vec::new();
    let answer = loop {
        let m = read_sip(&mut tls, &mut buf);
        if !m.starts_with("SIP/2.0 100") {
            break m;
        }
    };
    assert!(answer.starts_with("SIP/2.0 200 OK"), "{answer}");
    assert!(answer.contains("Content-Type: application/sdp"), "{answer}");
    assert!(
        answer.contains("a=recvonly") && answer.contains("a=label:1"),
        "{answer}"
    );
    let streams = answered_streams(&answer);
    assert_eq!(streams.len(), 1, "{answer}");
    tls.write_all(in_dialog("ACK", 1, "TLS", &local, &tls_addr, &call_id, &answer).as_bytes())
        .unwrap();
    send_tones(&[streams[0].0], 0x5100, 0, 50);
    tls.write_all(in_dialog("BYE", 2, "TLS", &local, &tls_addr, &call_id, &answer).as_bytes())
        .unwrap();
    let bye_ok = read_sip(&mut tls, &mut buf);
    assert!(
        bye_ok.starts_with("SIP/2.0 200") && bye_ok.contains("CSeq: 2 BYE"),
        "{bye_ok}"
    );
    std::thread::sleep(Duration::from_millis(300));
    let err = stop_server(vcontap);

    let vcons = common::vcons(&out);
    assert_eq!(vcons.len(), 1, "{err}");
    let v = &vcons[0];
    assert_eq!(v["parties"][0]["tel"], "+13125550177", "{v}");
    assert_eq!(v["parties"][0]["name"], "Tls Caller");
    assert_eq!(v["vcontap"]["end_reason"], "bye", "{v}");
    let recs = recordings(v);
    assert_eq!(recs.len(), 1, "{v}");
    let a = audible_seconds(recs[0]);
    assert!((0.9..=1.1).contains(&a), "1 s of audio: {a}");
    common::validate(&[&out]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// CANCEL before the answer (an SRS invited at ringing, the call abandoned): 200 to the
/// CANCEL, 487 to the INVITE, and nothing recorded (§6: discard).
#[test]
fn cancel_before_the_answer_gets_487_and_no_vcon() {
    let dir = common::tmpdir("siprec-ops-cancel");
    let out = dir.join("out");
    let sip_port = free_port();
    let vcontap = start_server(&out, sip_port, &rtp_range(4), &[]);
    let server = format!("127.0.0.1:{sip_port}");
    let mut tcp = TcpStream::connect(&server).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let local = tcp.local_addr().unwrap().to_string();
    let call_id = format!("cancel-{}", std::process::id());
    let inv = invite("TCP", &local, &server, &call_id, "");
    // CANCEL: same Request-URI, Via branch, From, To, Call-ID and CSeq number as the INVITE.
    let head = inv.split("\r\n\r\n").next().unwrap();
    let pick = |h: &str| head.lines().find(|l| l.starts_with(h)).unwrap().to_owned();
    let cancel = format!(
        "{}\r\n{}\r\n{}\r\n{}\r\n{}\r\nCSeq: 1 CANCEL\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        head.lines().next().unwrap().replace("INVITE ", "CANCEL "),
        pick("Via:"),
        pick("From:"),
        pick("To:"),
        pick("Call-ID:")
    );
    // One write: the server reads the CANCEL with the INVITE, before it can answer.
    tcp.write_all(format!("{inv}{cancel}").as_bytes()).unwrap();
    let mut buf = Vec::new();
    let (mut cancel_ok, mut terminated) = (None, None);
    while cancel_ok.is_none() || terminated.is_none() {
        let m = read_sip(&mut tcp, &mut buf);
        let first = m.lines().next().unwrap().to_owned();
        if m.contains("CSeq: 1 CANCEL") {
            cancel_ok = Some(first);
        } else if !first.starts_with("SIP/2.0 100") {
            assert!(m.contains("CSeq: 1 INVITE"), "{m}");
            terminated = Some(m);
        }
    }
    assert_eq!(cancel_ok.unwrap(), "SIP/2.0 200 OK");
    let t = terminated.unwrap();
    assert!(t.starts_with("SIP/2.0 487"), "487 to the INVITE: {t}");
    // The ACK for the 487 (same branch: a non-2xx final response).
    let to = t.lines().find(|l| l.starts_with("To:")).unwrap();
    tcp.write_all(
        format!(
            "ACK sip:srs@{server};transport=tcp SIP/2.0\r\n{}\r\n{}\r\n{to}\r\n{}\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            pick("Via:"),
            pick("From:"),
            pick("Call-ID:")
        )
        .as_bytes(),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let err = stop_server(vcontap);
    assert!(
        common::vcon_files(&out).is_empty(),
        "a cancelled offer is discarded: {err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The live API of `vcontap siprec` (`--api-listen`, as `capture --listen`): a SIPREC
/// session's events over Server-Sent Events, `created` to `finished`, the same as the
/// events file, ending with the vCon on disk.
#[test]
fn live_api_streams_a_siprec_session_over_sse() {
    let Some(sipp) = sipp() else { return };
    if Command::new("curl").arg("--version").output().is_err() {
        eprintln!("skipped: curl not found");
        return;
    }
    let dir = common::tmpdir("siprec-ops-sse");
    let out = dir.join("out");
    let (sip_port, api_port) = (free_port(), free_port());
    let events = dir.join("events.jsonl");
    let vcontap = start_server(
        &out,
        sip_port,
        &rtp_range(5),
        &[
            "--api-listen",
            &format!("127.0.0.1:{api_port}"),
            "--events",
            events.to_str().unwrap(),
        ],
    );
    let sse = Command::new("curl")
        .args(["-sSN", "--max-time", "60"])
        .arg(format!("http://127.0.0.1:{api_port}/v1/events"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Subscribed before the session starts (the hub counts it).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = Command::new("curl")
            .args(["-sS", &format!("http://127.0.0.1:{api_port}/metrics")])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&m.stdout).contains("vcontap_api_subscribers 1") {
            break;
        }
        assert!(Instant::now() < deadline, "the SSE client never subscribed");
        std::thread::sleep(Duration::from_millis(50));
    }
    let trace = dir.join("sipp-messages.log");
    let src = start_sipp(
        &sipp,
        &scenario("src-two-streams.xml"),
        sip_port,
        "u1",
        &trace,
    );
    let ports: Vec<u16> = answered_streams(&nth_answer(&trace, 1))
        .iter()
        .map(|s| s.0)
        .collect();
    send_tones(&ports, 0x5100, 0, 25);
    // While the session is up it is a call in progress.
    let calls = Command::new("curl")
        .args(["-sS", &format!("http://127.0.0.1:{api_port}/v1/calls")])
        .output()
        .unwrap();
    let calls: Value = serde_json::from_slice(&calls.stdout).unwrap();
    assert_eq!(calls["calls"].as_array().map_or(0, Vec::len), 1, "{calls}");
    sipp_ok(src);
    std::thread::sleep(Duration::from_millis(300));
    let err = stop_server(vcontap);
    let o = sse.wait_with_output().unwrap();
    let text = String::from_utf8(o.stdout).unwrap();
    let frames: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let kinds: Vec<&str> = frames.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"created"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"finished"), "{kinds:?}");
    common::check_events(&frames);
    let file: Vec<Value> = std::fs::read_to_string(&events)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(frames, file, "the SSE stream is the events file");
    let vcons = common::vcons(&out);
    assert_eq!(vcons.len(), 1, "{err}");
    assert_eq!(frames.last().unwrap()["uuid"], vcons[0]["uuid"]);
    assert_eq!(
        frames.last().unwrap()["vcon"]["parties"],
        vcons[0]["parties"]
    );
    common::validate(&[&out]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Vendor offers replayed by SIPp end to end: each body from `$VCONTAP_SHARED/siprec`
/// (the `# SOURCE:` line stripped), expected participants (a user part of each `aor`).
const VENDORS: &[(&str, &[&str])] = &[
    ("oracle-acme-1.txt", &["9000", "1002"]),
    ("ribbon-sonus-1.txt", &["2249888500", "2249888012"]),
    ("opensips-1.txt", &["0771121212", "0760516936"]),
    ("cisco-cube-1.txt", &["7301", "7300"]),
];

#[test]
fn sipp_replays_vendor_offers_end_to_end() {
    let Some(sipp) = sipp() else { return };
    let Some(shared) = common::shared() else {
        eprintln!("skipped: no shared reference folder (set VCONTAP_SHARED)");
        return;
    };
    let template = std::fs::read_to_string(scenario("src-vendor-replay.xml")).unwrap();
    let dir = common::tmpdir("siprec-ops-vendors");
    let out = dir.join("out");
    let sip_port = free_port();
    let vcontap = start_server(&out, sip_port, &rtp_range(6), &[]);
    let mut expected = Vec::new();
    for (file, users) in VENDORS {
        let path = shared.join("siprec").join(file);
        let Ok(text) = std::fs::read_to_string(&path) else {
            eprintln!("skipped {file}: not in {}", shared.display());
            continue;
        };
        let body: String = text
            .lines()
            .filter(|l| !l.starts_with("# SOURCE:"))
            .skip_while(|l| l.trim().is_empty())
            .collect::<Vec<_>>()
            .join("\n");
        let boundary = body
            .lines()
            .find_map(|l| l.trim().strip_prefix("--"))
            .unwrap()
            .trim_end_matches("--")
            .to_owned();
        let xml = template
            .replace("@BOUNDARY@", &boundary)
            .replace("@BODY@", body.trim_end());
        let sf = dir.join(format!("{file}.xml"));
        std::fs::write(&sf, xml).unwrap();
        let trace = dir.join(format!("{file}.log"));
        let src = start_sipp(&sipp, &sf, sip_port, "t1", &trace);
        let answer = nth_answer(&trace, 1);
        let streams = answered_streams(&answer);
        let offered = body
            .lines()
            .filter(|l| l.trim_start().starts_with("m=audio"))
            .count();
        assert_eq!(
            streams.len(),
            offered,
            "{file}: every m-line answered: {answer}"
        );
        let labels: Vec<String> = body
            .lines()
            .filter_map(|l| l.trim().strip_prefix("a=label:"))
            .map(str::to_owned)
            .collect();
        let got: Vec<String> = streams.iter().map(|s| s.1.clone()).collect();
        assert_eq!(got, labels, "{file}: labels echoed in order");
        assert_eq!(
            answer.matches("a=recvonly").count(),
            offered,
            "{file}: {answer}"
        );
        let ports: Vec<u16> = streams.iter().map(|s| s.0).filter(|p| *p != 0).collect();
        send_tones(&ports, 0x5100, 0, 50);
        sipp_ok(src);
        expected.push((*file, *users));
    }
    std::thread::sleep(Duration::from_millis(300));
    let err = stop_server(vcontap);
    let vcons = common::vcons(&out);
    assert_eq!(
        vcons.len(),
        expected.len(),
        "one vCon per replayed offer: {err}"
    );
    for (file, users) in &expected {
        let v = vcons
            .iter()
            .find(|v| users.iter().all(|u| v["parties"].to_string().contains(u)))
            .unwrap_or_else(|| panic!("{file}: no vCon names {users:?}"));
        assert_eq!(
            v["parties"].as_array().unwrap().len(),
            users.len(),
            "{file}: {v}"
        );
        assert_eq!(v["vcontap"]["end_reason"], "bye", "{file}");
        let recs = recordings(v);
        assert_eq!(
            recs.len(),
            1,
            "{file}: one stereo recording of both streams: {v}"
        );
        let a = audible_seconds(recs[0]);
        assert!((0.9..=1.1).contains(&a), "{file}: 1 s of audio: {a}");
        let rec_parties = recs[0]["parties"].as_array().unwrap();
        assert_eq!(
            rec_parties.len(),
            2,
            "{file}: both streams' parties: {}",
            recs[0]
        );
    }
    common::validate(&[&out]);
    let _ = std::fs::remove_dir_all(&dir);
}
