//! Helpers shared by the SIPREC integration tests (tests/siprec*.rs): finding SIPp, a free
//! SIP port, reading the answered streams out of an SDP answer, and G.711 tone packets.

use std::net::UdpSocket;
use std::path::PathBuf;

/// The `sipp` binary on PATH, or `None` (and a skip message) when SIPp is not installed.
pub fn sipp() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("sipp"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        eprintln!("skipped: sipp not found (apt-get install sip-tester)");
    }
    found
}

/// A free local port (UDP and TCP) for the SIP listener.
pub fn free_port() -> u16 {
    loop {
        let u = UdpSocket::bind("127.0.0.1:0").unwrap();
        let p = u.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}

/// `(port, label)` of each `m=audio` line, in order.
pub fn answered_streams(answer: &str) -> Vec<(u16, String)> {
    let mut out: Vec<(u16, String)> = Vec::new();
    for line in answer.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("m=audio ") {
            let port = rest.split(' ').next().unwrap().parse().unwrap();
            out.push((port, String::new()));
        } else if let Some(l) = line.strip_prefix("a=label:") {
            out.last_mut().unwrap().1 = l.to_owned();
        }
    }
    out
}

/// One 20 ms PCMU packet of a `freq` tone.
pub fn pcmu(seq: u16, ssrc: u32, freq: f64) -> Vec<u8> {
    let mut p = vec![0x80, 0];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    for i in 0..160u32 {
        let n = f64::from(u32::from(seq) * 160 + i);
        let s = (8000.0 * (2.0 * std::f64::consts::PI * freq * n / 8000.0).sin()) as i16;
        p.push(vcontap_media::linear_to_ulaw(s));
    }
    p
}

/// First and last sample index that is loud on either channel of a stereo recording.
pub fn audible_span(left: &[f64], right: &[f64]) -> (usize, usize) {
    let loud = |x: &f64| x.abs() > 200.0;
    let first = left
        .iter()
        .position(loud)
        .unwrap()
        .min(right.iter().position(loud).unwrap());
    let last = left
        .iter()
        .rposition(loud)
        .unwrap()
        .max(right.iter().rposition(loud).unwrap());
    (first, last)
}

/// Shares of the test tones in one channel: `(440 Hz, 1 kHz)`.
pub fn tone_shares(channel: &[f64], rate: f64) -> (f64, f64) {
    (
        super::tone_share(channel, rate, 440.0),
        super::tone_share(channel, rate, 1000.0),
    )
}

/// Waits for a SIPp run and asserts its scenario passed (its stderr in the message).
pub fn sipp_ok(mut src: std::process::Child) {
    use std::io::Read;
    let st = src.wait().unwrap();
    let mut err = String::new();
    src.stderr.take().unwrap().read_to_string(&mut err).ok();
    assert!(st.success(), "sipp scenario failed ({st}): {err}");
}

/// SIGTERM to the server; it must exit 0 without a panic. Returns its stderr.
pub fn sigterm_server(mut vcontap: std::process::Child) -> String {
    use std::io::Read;
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &vcontap.id().to_string()])
        .status()
        .unwrap()
        .success());
    let st = vcontap.wait().unwrap();
    let mut err = String::new();
    vcontap.stderr.take().unwrap().read_to_string(&mut err).ok();
    assert!(st.success(), "vcontap siprec exit: {err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

/// `packets` × 20 ms of PCMU to every port, paced like a real SRC: 440 Hz to the first,
/// 1 kHz to the second, 700 Hz to the third…; SSRC `ssrc_base + i` for port `i`, RTP
/// sequence numbers from `first_seq`.
pub fn send_tones(ports: &[u16], ssrc_base: u32, first_seq: u16, packets: u16) {
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let start = std::time::Instant::now();
    for k in 0..packets {
        let seq = first_seq.wrapping_add(k);
        for (i, port) in ports.iter().enumerate() {
            let freq = [440.0, 1000.0, 700.0][i % 3];
            tx.send_to(&pcmu(seq, ssrc_base + i as u32, freq), ("127.0.0.1", *port))
                .unwrap();
        }
        let next = start + std::time::Duration::from_millis(20 * (u64::from(k) + 1));
        std::thread::sleep(next.saturating_duration_since(std::time::Instant::now()));
    }
}
