//! Conformance test: replays every capture of the shared corpus (`../shared/captures` or
//! `$VCONTAP_SHARED/captures`) through the real `vcontap replay` binary and compares the
//! result with the tshark 4.0.17 view stored beside each capture (`<name>.tshark.txt`, see
//! `CATALOG.md` there).
//!
//! Per capture it checks:
//!
//! - the process exits 0 within [`REPLAY_DEADLINE`] and prints no panic;
//! - one vCon per tshark `CALL` row (distinct Call-ID carrying an INVITE), the Call-IDs in
//!   dialogs/attachments/trace are tshark's, and the parties' `sip` URIs carry the From/To
//!   users tshark shows;
//! - every RTP stream of the vCon `analysis` (`schema: vcontap-rtp-quality`) against tshark's
//!   `-z rtp,streams` table with default prefs (RTP learned from SDP): same (src, dst, SSRC)
//!   set, same packet and loss counts, max delta within [`MAX_DELTA_TOLERANCE_MS`], max
//!   jitter within [`JITTER_TOLERANCE_MS`] (or [`JITTER_TOLERANCE_REL`]);
//! - the events stream (`seq`, `kind`, `at`, constant uuid, append-only arrays, last
//!   snapshot == the vCon file);
//! - the `recording` dialogs of a vCon never overlap in time;
//! - every vCon file and every event snapshot passes `../shared/tools/validate-vcon` (run once
//!   over all outputs, it is a Python tool with a second of start-up).
//!
//! The SIP trace and the RTP report are looked for both in `attachments`/`analysis` and in
//! the `vcontap` extension object (`sip_call_id`, `sip_message_trace`, `rtp_quality`), where
//! the engine keeps them for a call without any dialog they could point at.
//!
//! Where vcontap deliberately differs from tshark (or tshark is wrong) the difference is an
//! entry in [`EXCEPTIONS`] with its reason; an entry no capture needs any more fails as stale.
//! Engine bugs are *not* exceptions: they fail here until the engine is fixed. All failures of all captures are collected and reported at the
//! end, so one bad capture never hides another.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;

/// A replay of one (small) capture that takes longer than this is a stall: the biggest file
/// of the corpus (2.8 MB) replays in well under a second in a debug build.
const REPLAY_DEADLINE: Duration = Duration::from_secs(60);
/// How often the child process is polled while waiting for it.
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// Max inter-arrival delta: both tools measure the same capture timestamps, only the rounding
/// of the printed figure (µs in tshark, 1 µs in the vCon) differs.
const MAX_DELTA_TOLERANCE_MS: f64 = 1.0;
/// Max jitter: tshark computes RFC 3550 jitter in milliseconds of arrival time with its own
/// rounding; the engine in RTP clock units. Absolute tolerance...
const JITTER_TOLERANCE_MS: f64 = 0.5;
/// ...or relative tolerance, whichever is larger.
const JITTER_TOLERANCE_REL: f64 = 0.10;
/// Capture file extensions the corpus uses.
const CAPTURE_EXTENSIONS: [&str; 3] = ["pcap", "pcapng", "cap"];

// ---- expectations ------------------------------------------------------------------------

/// A documented, deliberate difference between vcontap and the tshark oracle.
struct Exception {
    /// Capture file name (with extension).
    capture: &'static str,
    what: Expect,
    /// Why vcontap differs (shown in the report when the exception is used).
    reason: &'static str,
}

/// What an [`Exception`] changes.
enum Expect {
    /// Not a capture vcontap reads: the replay must fail with a clear message.
    Unreadable,
    /// Number of vCon files expected instead of tshark's `CALL` row count. Only the vCons
    /// produced are checked against tshark's Call-IDs (not every tshark Call-ID needs one).
    Calls(usize),
    /// A stream in tshark's default-prefs table that does not belong to any SIP call, so it
    /// is in no vCon: `(src, dst, ssrc)`.
    TsharkStreamNotInCall(&'static str, &'static str, u32),
    /// A stream vcontap attaches to a call that tshark's default (SDP-learned) table lacks
    /// because no SDP announces its addresses: a relayed leg carrying the same SSRC, which the
    /// engine routes by its SSRC index. It is compared with tshark's heuristic-RTP table
    /// instead, where vcontap may have `missed` packets (those sent before the SSRC was known).
    RelayedLeg {
        src: &'static str,
        dst: &'static str,
        ssrc: u32,
        missed: u64,
    },
}

/// Every deliberate difference from tshark, with its reason.
///
/// Captures that need no entry although one might expect it:
/// - `heplify_sip_tcp_fragmented.pcap`: SIP on TCP/6060, which tshark only dissects with
///   `-d tcp.port==6060,sip` (its oracle was made that way); vcontap detects SIP on any TCP
///   port, so both see the same 37 calls.
/// - `sngrep_tlssaved.pcap` (SIP over TLS without a key): tshark and vcontap both see 0 calls.
/// - `heplify_sip_sctp.pcap`: vcontap reads SIP from SCTP DATA chunks, like tshark.
/// - `heplify_sip_websocket.pcap`: tshark's 2 CALL rows are the plain SIP legs, which vcontap
///   sees too (the WebSocket frames themselves carry no INVITE of another Call-ID).
const EXCEPTIONS: &[Exception] = &[
    Exception {
        capture: "ws_c07_sip_r2_netmon.cap",
        what: Expect::Unreadable,
        reason: "Microsoft NetMon 2.x file format, not pcap/pcapng: a replay whose every \
                 input is unreadable exits non-zero and names the file",
    },
    Exception {
        capture: "heplify_rtp_rtcp_sip_udp.pcap",
        what: Expect::TsharkStreamNotInCall(
            "200.57.7.202:30000",
            "200.57.7.196:40362",
            0x0000_2E3D,
        ),
        reason: "tshark learned this address from the SDP of an MGCP message (a gateway leg, no \
                 SIP call); vcontap learns media only from SIP SDP",
    },
    Exception {
        capture: "heplify_rtp_rtcp_sip_udp.pcap",
        what: Expect::RelayedLeg {
            src: "200.57.7.199:4800",
            dst: "200.57.7.196:40378",
            ssrc: 0x58F3_3DEA,
            missed: 1,
        },
        reason: "relayed leg of the caller's stream (same SSRC) through 200.57.7.196; its first \
                 packet (t=8.528769) precedes the first packet of the SDP-announced leg \
                 (t=8.529324), so the SSRC is not known yet and that one packet stays an orphan",
    },
    Exception {
        capture: "heplify_rtp_rtcp_sip_udp.pcap",
        what: Expect::RelayedLeg {
            src: "200.57.7.196:40378",
            dst: "200.57.7.199:4800",
            ssrc: 0xD2BD_4E3E,
            missed: 0,
        },
        reason: "relayed leg of the callee's stream (same SSRC) through 200.57.7.196, attached \
                 by SSRC",
    },
    Exception {
        capture: "heplify_sip_ipv6_udp.pcap",
        what: Expect::Calls(2),
        reason: "its packet timestamps are garbage, years apart (the microseconds are equal, the \
                 seconds random): the INVITE's call times out long before its 200 OK, which then \
                 opens a second call joined mid-way (vcontap.joined_mid_call) with the same \
                 Call-ID",
    },
];

fn expected_calls(capture: &str) -> Option<(usize, &'static str)> {
    EXCEPTIONS.iter().find_map(|e| match e.what {
        Expect::Calls(n) if e.capture == capture => Some((n, e.reason)),
        _ => None,
    })
}

fn key_is(key: &StreamKey, src: &str, dst: &str, ssrc: u32) -> bool {
    src.parse().ok() == Some(key.src) && dst.parse().ok() == Some(key.dst) && ssrc == key.ssrc
}

fn stream_not_in_call(capture: &str, key: &StreamKey) -> Option<&'static str> {
    EXCEPTIONS.iter().find_map(|e| match e.what {
        Expect::TsharkStreamNotInCall(src, dst, ssrc)
            if e.capture == capture && key_is(key, src, dst, ssrc) =>
        {
            Some(e.reason)
        }
        _ => None,
    })
}

/// `(missed packets, reason)` when `key` is a documented relayed leg of `capture`.
fn relayed_leg(capture: &str, key: &StreamKey) -> Option<(u64, &'static str)> {
    EXCEPTIONS.iter().find_map(|e| match e.what {
        Expect::RelayedLeg {
            src,
            dst,
            ssrc,
            missed,
        } if e.capture == capture && key_is(key, src, dst, ssrc) => Some((missed, e.reason)),
        _ => None,
    })
}

// ---- tshark oracle -----------------------------------------------------------------------

/// One `CALL` row: `CALL <call-id> | <from users> -> <to users> | methods | codes`.
#[derive(Debug)]
struct TsharkCall {
    call_id: String,
    /// From users (tshark joins several values with `,`); empty when tshark shows none.
    from: Vec<String>,
    to: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct StreamKey {
    src: SocketAddr,
    dst: SocketAddr,
    ssrc: u32,
}

impl std::fmt::Display for StreamKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} -> {} ssrc 0x{:08X}", self.src, self.dst, self.ssrc)
    }
}

/// One row of `-z rtp,streams`.
#[derive(Debug, Clone)]
struct TsharkStream {
    key: StreamKey,
    payload: String,
    packets: u64,
    lost: i64,
    max_delta_ms: f64,
    mean_jitter_ms: f64,
    max_jitter_ms: f64,
}

#[derive(Debug, Default)]
struct Oracle {
    calls: Vec<TsharkCall>,
    /// `-z rtp,streams` with default prefs (RTP learned from SDP).
    streams: Vec<TsharkStream>,
    /// `-z rtp,streams -o rtp.heuristic_rtp:TRUE`.
    heuristic: Vec<TsharkStream>,
}

fn parse_oracle(text: &str) -> Result<Oracle, String> {
    let mut o = Oracle::default();
    // Which stream table the lines belong to: 1 default prefs, 2 heuristic, 0 none.
    let mut table = 0;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("CALL ") {
            let cols: Vec<&str> = rest.split(" | ").collect();
            let (Some(id), Some(users)) = (cols.first(), cols.get(1)) else {
                return Err(format!("bad CALL row: {line}"));
            };
            let (from, to) = users
                .split_once("->")
                .ok_or_else(|| format!("bad CALL users: {line}"))?;
            let list = |s: &str| -> Vec<String> {
                s.split(',')
                    .map(str::trim)
                    .filter(|u| !u.is_empty())
                    .map(str::to_string)
                    .collect()
            };
            o.calls.push(TsharkCall {
                call_id: id.trim().to_string(),
                from: list(from),
                to: list(to),
            });
            continue;
        }
        if line.starts_with("## ") {
            table = if line.starts_with("## tshark -q -z rtp,streams   (default prefs") {
                1
            } else if line.starts_with("## tshark -q -z rtp,streams -o rtp.heuristic_rtp:TRUE") {
                2
            } else {
                0
            };
            continue;
        }
        if table != 0
            && !line.trim().is_empty()
            && !line.starts_with('=')
            && !line.contains("Start time")
        {
            let row = parse_stream_row(line)?;
            if table == 1 {
                o.streams.push(row);
            } else {
                o.heuristic.push(row);
            }
        }
    }
    Ok(o)
}

/// `start end srcip srcport dstip dstport ssrc payload… pkts lost (pct%) minΔ meanΔ maxΔ minJ
/// meanJ maxJ [X]`; the payload column may contain spaces ("g711A, CN", "Exp. from Xerox PARC").
fn parse_stream_row(line: &str) -> Result<TsharkStream, String> {
    let t: Vec<&str> = line.split_whitespace().collect();
    let bad = || format!("bad rtp,streams row: {line}");
    let pct = t
        .iter()
        .position(|s| s.starts_with('(') && s.ends_with("%)"))
        .ok_or_else(bad)?;
    if pct < 9 || t.len() < pct + 7 {
        return Err(bad());
    }
    let addr = |ip: &str, port: &str| -> Result<SocketAddr, String> {
        let ip: IpAddr = ip.parse().map_err(|_| bad())?;
        Ok(SocketAddr::new(ip, port.parse().map_err(|_| bad())?))
    };
    let num = |s: &str| -> Result<f64, String> { s.parse().map_err(|_| bad()) };
    let ssrc = u32::from_str_radix(t[6].trim_start_matches("0x"), 16).map_err(|_| bad())?;
    Ok(TsharkStream {
        key: StreamKey {
            src: addr(t[2], t[3])?,
            dst: addr(t[4], t[5])?,
            ssrc,
        },
        payload: t[7..pct - 2].join(" "),
        packets: t[pct - 2].parse().map_err(|_| bad())?,
        lost: t[pct - 1].parse().map_err(|_| bad())?,
        max_delta_ms: num(t[pct + 3])?,
        mean_jitter_ms: num(t[pct + 5])?,
        max_jitter_ms: num(t[pct + 6])?,
    })
}

// ---- helpers -----------------------------------------------------------------------------

fn shared_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("VCONTAP_SHARED") {
        Some(s) => PathBuf::from(s),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"),
    };
    dir.join("captures").is_dir().then_some(dir)
}

fn unique_temp_dir() -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    std::env::temp_dir().join(format!(
        "vcontap-conformance-{}-{nanos}",
        std::process::id()
    ))
}

/// `2005-07-04T09:41:25.961Z` → comparable (seconds part, nanoseconds). Only the `Z` form
/// the engine writes is accepted.
fn parse_time(s: &str) -> Option<(String, u32)> {
    let s = s.strip_suffix('Z')?;
    let (secs, frac) = s.split_once('.').unwrap_or((s, "0"));
    if secs.len() != 19
        || frac.is_empty()
        || frac.len() > 9
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let nanos: u32 = format!("{frac:0<9}").parse().ok()?;
    Some((secs.to_string(), nanos))
}

fn sip_user(uri: &str) -> Option<&str> {
    let rest = uri.split_once(':').map_or(uri, |(_, r)| r);
    let user = rest.split_once('@')?.0;
    Some(user.split(';').next().unwrap_or(user))
}

fn arr<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// The SIP message traces of a vCon: the body of an attachment with `purpose:
/// sip-message-trace`, or `vcontap.sip_message_trace` (a call without any dialog has nothing
/// an attachment could point at, so the engine keeps the trace in its extension object).
fn traces_of(v: &Value) -> impl Iterator<Item = &Value> {
    let att = arr(v, "attachments")
        .iter()
        .filter(|a| a.get("purpose").and_then(Value::as_str) == Some("sip-message-trace"))
        .filter_map(|a| a.get("body"));
    att.chain(v.pointer("/vcontap/sip_message_trace"))
}

/// Every `sip_call_id` in dialogs, `call_id` of the SIP traces and `Call-ID` header of the
/// traced messages.
fn call_ids_of(v: &Value) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    if let Some(id) = v.pointer("/vcontap/sip_call_id").and_then(Value::as_str) {
        ids.insert(id.to_string());
    }
    for d in arr(v, "dialog") {
        if let Some(id) = d.get("sip_call_id").and_then(Value::as_str) {
            ids.insert(id.to_string());
        }
    }
    for body in traces_of(v) {
        if let Some(id) = body.get("call_id").and_then(Value::as_str) {
            ids.insert(id.to_string());
        }
        for m in arr(body, "messages") {
            for h in arr(m, "headers") {
                // Trace headers are `[name, value]` pairs.
                let name = h.get(0).and_then(Value::as_str).unwrap_or("");
                if name.eq_ignore_ascii_case("call-id") || name == "i" {
                    if let Some(id) = h.get(1).and_then(Value::as_str) {
                        ids.insert(id.trim().to_string());
                    }
                }
            }
        }
    }
    ids
}

/// Identity headers from which the engine may take a party instead of From/To.
const IDENTITY_HEADERS: [&str; 3] = [
    "p-asserted-identity",
    "p-preferred-identity",
    "remote-party-id",
];

/// Whether a traced message carries an identity header naming `user`.
fn asserted_by_trace(v: &Value, user: &str) -> bool {
    if user.is_empty() {
        return false;
    }
    let needle = format!(":{user}@");
    traces_of(v)
        .flat_map(|body| arr(body, "messages"))
        .flat_map(|m| arr(m, "headers"))
        .any(|h| {
            let name = h.get(0).and_then(Value::as_str).unwrap_or("");
            IDENTITY_HEADERS
                .iter()
                .any(|n| name.eq_ignore_ascii_case(n))
                && h.get(1)
                    .and_then(Value::as_str)
                    .is_some_and(|val| val.contains(&needle))
        })
}

/// The per-stream RTP analysis of a vCon: `analysis[]` with `schema: vcontap-rtp-quality`, or
/// `vcontap.rtp_quality` when the call has no recording dialog the analysis could point at.
fn streams_of(v: &Value, failures: &mut Vec<String>, uuid: &str) -> Vec<(StreamKey, Value)> {
    let mut out = Vec::new();
    let bodies = arr(v, "analysis")
        .iter()
        .filter(|a| a.get("schema").and_then(Value::as_str) == Some("vcontap-rtp-quality"))
        .filter_map(|a| a.get("body"))
        .chain(v.pointer("/vcontap/rtp_quality"));
    for body in bodies {
        for s in arr(body, "streams") {
            let src = s
                .get("src")
                .and_then(Value::as_str)
                .and_then(|x| x.parse().ok());
            let dst = s
                .get("dst")
                .and_then(Value::as_str)
                .and_then(|x| x.parse().ok());
            let ssrc = s
                .get("ssrc")
                .and_then(Value::as_str)
                .and_then(|x| u32::from_str_radix(x.trim_start_matches("0x"), 16).ok());
            match (src, dst, ssrc) {
                (Some(src), Some(dst), Some(ssrc)) => {
                    out.push((StreamKey { src, dst, ssrc }, s.clone()))
                }
                _ => failures.push(format!(
                    "vCon {uuid}: analysis stream without parsable src/dst/ssrc: {s}"
                )),
            }
        }
    }
    out
}

/// Runs `vcontap replay` with a deadline. Returns the stderr text on exit 0.
fn run_replay(capture: &Path, out: &Path) -> Result<String, String> {
    let stderr_path = out.join("replay.stderr");
    let stderr_file = fs::File::create(&stderr_path)
        .map_err(|e| format!("creating {}: {e}", stderr_path.display()))?;
    let events = out.join("events.jsonl");
    let mut child = Command::new(env!("CARGO_BIN_EXE_vcontap"))
        .arg("replay")
        .arg(capture)
        .arg("--out")
        .arg(out)
        .arg("--events")
        .arg(&events)
        .arg("--spool")
        .arg(common::spool_for(out))
        .arg("--quiet")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(stderr_file))
        .spawn()
        .map_err(|e| format!("spawning vcontap: {e}"))?;
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if start.elapsed() > REPLAY_DEADLINE => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "stalled: no exit after {REPLAY_DEADLINE:?}, killed"
                ));
            }
            Ok(None) => std::thread::sleep(POLL_INTERVAL),
            Err(e) => return Err(format!("waiting for vcontap: {e}")),
        }
    };
    let stderr = fs::read_to_string(&stderr_path).unwrap_or_default();
    if stderr.contains("panicked at") || stderr.contains("RUST_BACKTRACE") {
        return Err(format!("panic: {}", stderr.trim()));
    }
    if !status.success() {
        return Err(format!("exit status {status}: {}", stderr.trim()));
    }
    Ok(stderr)
}

// ---- per-capture checks ------------------------------------------------------------------

struct CaptureReport {
    failures: Vec<String>,
    notes: Vec<String>,
}

fn check_capture(capture: &Path, oracle: &Oracle, out: &Path) -> CaptureReport {
    let name = capture
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_string();
    let mut r = CaptureReport {
        failures: Vec::new(),
        notes: Vec::new(),
    };
    let f = &mut r.failures;
    let unreadable = EXCEPTIONS
        .iter()
        .find(|e| e.capture == name && matches!(e.what, Expect::Unreadable));
    match (run_replay(capture, out), unreadable) {
        (Err(e), Some(ex)) if e.contains("no input could be read as a capture") => {
            r.notes.push(format!("{name}: {}", ex.reason));
            return r;
        }
        (Ok(_), Some(_)) => {
            f.push("an unreadable file must make the replay fail".into());
            return r;
        }
        (Err(e), _) => {
            f.push(e);
            return r;
        }
        (Ok(stderr), None) => {
            // SIP over TLS cannot be decoded without keys: the summary must say so.
            if name == "sngrep_tlssaved.pcap" && !stderr.contains("TLS SIP flows seen, not decoded")
            {
                f.push(format!("the summary does not name the TLS flows: {stderr}"));
            }
        }
    }

    // vCon files.
    let mut vcons: BTreeMap<String, Value> = BTreeMap::new();
    for p in common::vcon_files(out) {
        let Some(file) = p.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(uuid) = file.strip_suffix(".vcon.json") else {
            continue;
        };
        match fs::read_to_string(&p)
            .map_err(|e| e.to_string())
            .and_then(|s| serde_json::from_str::<Value>(&s).map_err(|e| e.to_string()))
        {
            Ok(v) => {
                if v.get("uuid").and_then(Value::as_str) != Some(uuid) {
                    f.push(format!("{file}: uuid member differs from the file name"));
                }
                if let Some(e) = common::recording_overlap(&v) {
                    f.push(format!("{file}: {e}"));
                }
                vcons.insert(uuid.to_string(), v);
            }
            Err(e) => f.push(format!("{file}: not JSON: {e}")),
        }
    }

    // Call count.
    let tshark_ids: BTreeSet<&str> = oracle.calls.iter().map(|c| c.call_id.as_str()).collect();
    let (want, exception) = match expected_calls(&name) {
        Some((n, why)) => {
            r.notes.push(format!(
                "expect {n} vCon(s), tshark shows {}: {why}",
                tshark_ids.len()
            ));
            (n, true)
        }
        None => (tshark_ids.len(), false),
    };
    if vcons.len() != want {
        let ours: Vec<String> = vcons.values().flat_map(call_ids_of).collect();
        f.push(format!(
            "{} vCon file(s), expected {want} (tshark CALL rows: {:?}; our Call-IDs: {ours:?})",
            vcons.len(),
            tshark_ids
        ));
    }

    // Call-IDs and parties.
    let mut covered: BTreeSet<String> = BTreeSet::new();
    for (uuid, v) in &vcons {
        let ids = call_ids_of(v);
        if ids.is_empty() {
            f.push(format!("vCon {uuid}: no sip_call_id in dialogs or trace"));
        }
        if ids.len() > 1 {
            f.push(format!("vCon {uuid}: several Call-IDs {ids:?}"));
        }
        for id in &ids {
            if !tshark_ids.contains(id.as_str()) {
                f.push(format!("vCon {uuid}: Call-ID {id} is not a tshark CALL"));
            } else {
                // A call joined mid-way may repeat a Call-ID only where an exception on the
                // vCon count explains it.
                let joined_again = exception && v["vcontap"]["joined_mid_call"] == true;
                let first = covered.insert(id.clone());
                if !(first || joined_again) {
                    f.push(format!(
                        "vCon {uuid}: Call-ID {id} is in more than one vCon"
                    ));
                }
            }
            let Some(tc) = oracle.calls.iter().find(|c| &c.call_id == id) else {
                continue;
            };
            let parties = arr(v, "parties");
            for (idx, users, what) in [(0usize, &tc.from, "From"), (1, &tc.to, "To")] {
                if users.is_empty() {
                    continue;
                }
                let uri = parties
                    .get(idx)
                    .and_then(|p| p.get("sip"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let user = sip_user(uri).unwrap_or("");
                // The engine takes the caller from P-Asserted-Identity / Remote-Party-ID
                // and completes the callee from the answer's identity (README), so a user
                // asserted by such a header in the trace is as good as tshark's From/To.
                if !users.iter().any(|u| u == user) && !asserted_by_trace(v, user) {
                    f.push(format!("vCon {uuid}: parties[{idx}].sip {uri:?} lacks tshark's {what} user {users:?}"));
                }
            }
        }
    }
    if !exception {
        for id in &tshark_ids {
            if !covered.contains(*id) {
                f.push(format!("tshark CALL {id} has no vCon"));
            }
        }
    }

    // RTP streams.
    let mut ours: BTreeMap<StreamKey, (String, Value)> = BTreeMap::new();
    for (uuid, v) in &vcons {
        for (key, s) in streams_of(v, f, uuid) {
            if ours.insert(key, (uuid.clone(), s)).is_some() {
                f.push(format!("stream {key} reported twice"));
            }
        }
    }
    for ts in &oracle.streams {
        let Some((uuid, s)) = ours.remove(&ts.key) else {
            match stream_not_in_call(&name, &ts.key) {
                Some(why) => r
                    .notes
                    .push(format!("tshark stream {} not in a call: {why}", ts.key)),
                None => f.push(format!(
                    "tshark stream {} ({}, {} pkts) missing from the vCons",
                    ts.key, ts.payload, ts.packets
                )),
            }
            continue;
        };
        compare_stream(&format!("vCon {uuid} stream {}", ts.key), ts, &s, 0, f);
    }
    for (key, (uuid, s)) in ours {
        let heur = oracle.heuristic.iter().find(|h| h.key == key);
        match (relayed_leg(&name, &key), heur) {
            (Some((missed, why)), Some(ts)) => {
                r.notes.push(format!(
                    "stream {key} compared with tshark's heuristic table: {why}"
                ));
                compare_stream(
                    &format!("vCon {uuid} relayed stream {key}"),
                    ts,
                    &s,
                    missed,
                    f,
                );
            }
            (Some(_), None) => f.push(format!(
                "vCon {uuid}: relayed stream {key} is not in tshark's heuristic table either"
            )),
            (None, _) => f.push(format!(
                "vCon {uuid}: stream {key} ({} pkts) is not in tshark's SDP-learned streams{}",
                s.get("packets").and_then(Value::as_u64).unwrap_or(0),
                if heur.is_some() {
                    " (tshark's heuristic table has it)"
                } else {
                    ""
                }
            )),
        }
    }

    check_events(out, &vcons, f);
    r
}

/// Compares one vCon stream report with a tshark row; `missed` packets at the start of the
/// stream are allowed to be absent from the vCon.
fn compare_stream(pre: &str, ts: &TsharkStream, s: &Value, missed: u64, f: &mut Vec<String>) {
    let get_u = |k: &str| s.get(k).and_then(Value::as_u64);
    let get_i = |k: &str| s.get(k).and_then(Value::as_i64);
    let get_f = |k: &str| s.get(k).and_then(Value::as_f64);
    match get_u("packets") {
        Some(p) if p <= ts.packets && ts.packets - p <= missed => {}
        p => f.push(format!(
            "{pre}: packets {p:?}, tshark {} ({})",
            ts.packets, ts.payload
        )),
    }
    if get_i("lost") != Some(ts.lost) {
        f.push(format!(
            "{pre}: lost {:?}, tshark {}",
            get_i("lost"),
            ts.lost
        ));
    }
    match get_f("max_delta_ms") {
        Some(d) if (d - ts.max_delta_ms).abs() <= MAX_DELTA_TOLERANCE_MS => {}
        d => f.push(format!(
            "{pre}: max_delta_ms {d:?}, tshark {}",
            ts.max_delta_ms
        )),
    }
    let tol = JITTER_TOLERANCE_MS.max(ts.max_jitter_ms * JITTER_TOLERANCE_REL);
    match (get_f("max_jitter_ms"), get_f("jitter_ms")) {
        (Some(max), Some(cur)) => {
            if (max - ts.max_jitter_ms).abs() > tol {
                f.push(format!(
                    "{pre}: max_jitter_ms {max}, tshark {} (mean {})",
                    ts.max_jitter_ms, ts.mean_jitter_ms
                ));
            }
            if cur > max + 1e-9 {
                f.push(format!("{pre}: jitter_ms {cur} above max_jitter_ms {max}"));
            }
        }
        other => f.push(format!("{pre}: jitter figures missing: {other:?}")),
    }
}

/// Checks `events.jsonl` and writes each snapshot to `<out>/snapshots/NNNN.vcon.json`.
fn check_events(out: &Path, vcons: &BTreeMap<String, Value>, f: &mut Vec<String>) {
    let text = match fs::read_to_string(out.join("events.jsonl")) {
        Ok(t) => t,
        Err(e) => {
            f.push(format!("events.jsonl: {e}"));
            return;
        }
    };
    let snaps = out.join("snapshots");
    if let Err(e) = fs::create_dir_all(&snaps) {
        f.push(format!("creating {}: {e}", snaps.display()));
        return;
    }
    struct PerUuid {
        seq: u64,
        at: (String, u32),
        last_kind: String,
        finished: usize,
        last: Value,
    }
    let mut by_uuid: BTreeMap<String, PerUuid> = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let n = n + 1;
        let ev: Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) => {
                f.push(format!("events line {n}: not JSON: {e}"));
                continue;
            }
        };
        let (Some(uuid), Some(seq), Some(kind), Some(at), Some(vcon)) = (
            ev.get("uuid").and_then(Value::as_str),
            ev.get("seq").and_then(Value::as_u64),
            ev.get("kind").and_then(Value::as_str),
            ev.get("at").and_then(Value::as_str),
            ev.get("vcon"),
        ) else {
            f.push(format!("events line {n}: missing uuid/seq/kind/at/vcon"));
            continue;
        };
        let snap_path = snaps.join(format!("{n:04}.vcon.json"));
        if let Err(e) = fs::write(&snap_path, vcon.to_string()) {
            f.push(format!("writing {}: {e}", snap_path.display()));
        }
        if vcon.get("uuid").and_then(Value::as_str) != Some(uuid) {
            f.push(format!(
                "events line {n}: snapshot uuid differs from the event uuid {uuid}"
            ));
        }
        if !["created", "updated", "segment", "finished"].contains(&kind) {
            f.push(format!("events line {n}: unknown kind {kind:?}"));
        }
        let Some(at) = parse_time(at) else {
            f.push(format!("events line {n}: bad `at` {at:?}"));
            continue;
        };
        match by_uuid.get_mut(uuid) {
            None => {
                if seq != 1 {
                    f.push(format!(
                        "events line {n}: first event of {uuid} has seq {seq}"
                    ));
                }
                if kind != "created" {
                    f.push(format!(
                        "events line {n}: first event of {uuid} is {kind:?}"
                    ));
                }
                by_uuid.insert(
                    uuid.to_string(),
                    PerUuid {
                        seq,
                        at,
                        last_kind: kind.to_string(),
                        finished: usize::from(kind == "finished"),
                        last: vcon.clone(),
                    },
                );
            }
            Some(p) => {
                if seq != p.seq + 1 {
                    f.push(format!("events line {n}: {uuid} seq {seq} after {}", p.seq));
                }
                if kind == "created" {
                    f.push(format!("events line {n}: second `created` for {uuid}"));
                }
                if p.finished > 0 {
                    f.push(format!(
                        "events line {n}: {uuid} has a {kind:?} event after `finished`"
                    ));
                }
                if at < p.at {
                    f.push(format!("events line {n}: {uuid} `at` goes back in time"));
                }
                for key in ["dialog", "attachments", "analysis"] {
                    let (old, new) = (arr(&p.last, key), arr(vcon, key));
                    if new.len() < old.len() || new[..old.len()] != *old {
                        f.push(format!("events line {n}: {uuid} `{key}` is not an append of the previous snapshot"));
                    }
                }
                p.seq = seq;
                p.at = at;
                p.last_kind = kind.to_string();
                p.finished += usize::from(kind == "finished");
                p.last = vcon.clone();
            }
        }
    }
    for (uuid, p) in &by_uuid {
        if p.finished != 1 || p.last_kind != "finished" {
            f.push(format!(
                "events: {uuid} has {} `finished` event(s), last kind {:?}",
                p.finished, p.last_kind
            ));
        }
        match vcons.get(uuid) {
            Some(v) if *v == p.last => {}
            Some(_) => f.push(format!(
                "events: last snapshot of {uuid} differs from its vCon file"
            )),
            None => f.push(format!("events: {uuid} has no vCon file")),
        }
    }
    for uuid in vcons.keys() {
        if !by_uuid.contains_key(uuid) {
            f.push(format!("vCon {uuid} has no events"));
        }
    }
}

/// Runs `validate-vcon --quiet` once over everything; returns failures keyed by capture.
fn validate_all(
    tool: &Path,
    root: &Path,
    report: &mut BTreeMap<String, Vec<String>>,
) -> Result<(), String> {
    let output = Command::new(tool)
        .arg("--quiet")
        .arg(root)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running {}: {e}", tool.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    match output.status.code() {
        Some(0) => Ok(()),
        Some(1) => {
            let prefix = format!("{}/", root.display());
            for line in stdout.lines().filter(|l| l.starts_with("FAIL")) {
                let rest = line.trim_start_matches("FAIL").trim_start();
                let rel = rest.strip_prefix(&prefix).unwrap_or(rest);
                let (capture, detail) = rel.split_once('/').unwrap_or(("?", rel));
                report
                    .entry(capture.to_string())
                    .or_default()
                    .push(format!("validate-vcon: {detail}"));
            }
            Ok(())
        }
        Some(3) => Err(format!(
            "validate-vcon: environment problem (exit 3): {}",
            stderr.trim()
        )),
        code => Err(format!(
            "validate-vcon exit {code:?}: {}\n{}",
            stdout.trim(),
            stderr.trim()
        )),
    }
}

#[test]
fn conformance_with_tshark() {
    let Some(shared) = shared_dir() else {
        println!("skipped: shared test data not found (set VCONTAP_SHARED)");
        return;
    };
    let captures_dir = shared.join("captures");
    let mut captures: Vec<PathBuf> = fs::read_dir(&captures_dir)
        .expect("reading the captures directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| CAPTURE_EXTENSIONS.contains(&e))
        })
        .collect();
    captures.sort();
    assert!(
        !captures.is_empty(),
        "no captures in {}",
        captures_dir.display()
    );

    let root = unique_temp_dir();
    fs::create_dir_all(&root).expect("creating the temp dir");
    let mut report: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut notes: Vec<String> = Vec::new();
    for capture in &captures {
        let name = capture
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let oracle_path = capture.with_extension("tshark.txt");
        let oracle = match fs::read_to_string(&oracle_path)
            .map_err(|e| e.to_string())
            .and_then(|t| parse_oracle(&t))
        {
            Ok(o) => o,
            Err(e) => {
                report
                    .entry(name)
                    .or_default()
                    .push(format!("oracle {}: {e}", oracle_path.display()));
                continue;
            }
        };
        let out = root.join(&name);
        if let Err(e) = fs::create_dir_all(&out) {
            report
                .entry(name)
                .or_default()
                .push(format!("creating {}: {e}", out.display()));
            continue;
        }
        let r = check_capture(capture, &oracle, &out);
        notes.extend(r.notes.into_iter().map(|n| format!("{name}: {n}")));
        if !r.failures.is_empty() {
            report.entry(name).or_default().extend(r.failures);
        }
    }

    // An exception nothing needed any more (the engine now agrees with tshark) is stale: drop
    // it so the table only documents real differences.
    for e in EXCEPTIONS {
        let present = captures
            .iter()
            .any(|c| c.file_name().and_then(|n| n.to_str()) == Some(e.capture));
        if present
            && !notes
                .iter()
                .any(|n| n.starts_with(e.capture) && n.ends_with(e.reason))
        {
            report
                .entry(e.capture.to_string())
                .or_default()
                .push(format!("stale exception (no longer needed): {}", e.reason));
        }
    }

    let tool = shared.join("tools/validate-vcon");
    if tool.is_file() {
        if let Err(e) = validate_all(&tool, &root, &mut report) {
            report.entry("(validator)".into()).or_default().push(e);
        }
    } else {
        println!(
            "validate-vcon not found at {}: vCon validation skipped",
            tool.display()
        );
    }

    println!(
        "conformance: {} captures, outputs in {}",
        captures.len(),
        root.display()
    );
    for n in &notes {
        println!("  exception used: {n}");
    }
    if report.is_empty() {
        let _ = fs::remove_dir_all(&root);
        return;
    }
    let mut msg = String::new();
    let total: usize = report.values().map(Vec::len).sum();
    let _ = writeln!(
        msg,
        "{total} conformance failure(s) in {} capture(s):",
        report.len()
    );
    for (capture, fails) in &report {
        let _ = writeln!(msg, "\n{capture}:");
        for f in fails {
            let _ = writeln!(msg, "  - {f}");
        }
    }
    let _ = writeln!(msg, "\n(outputs kept in {})", root.display());
    panic!("{msg}");
}

/// The overlap check reads vCon times right, and finds an overlap.
#[test]
fn recording_overlap_check() {
    assert_eq!(
        common::vcon_time_ms("2026-01-01T00:00:00Z"),
        Some(1_767_225_600_000)
    );
    assert_eq!(
        common::vcon_time_ms("2024-02-29T23:59:59.5Z"),
        Some(1_709_251_199_500)
    );
    assert_eq!(common::vcon_time_ms("1970-01-01T00:00:00.001Z"), Some(1));
    let rec = |start: &str, duration: f64| serde_json::json!({"type": "recording", "start": start, "duration": duration});
    let v = serde_json::json!({"dialog": [rec("2026-01-01T00:00:01Z", 1.0), rec("2026-01-01T00:00:02Z", 1.0)]});
    assert_eq!(common::recording_overlap(&v), None);
    let v = serde_json::json!({"dialog": [rec("2026-01-01T00:00:01Z", 1.001), rec("2026-01-01T00:00:02Z", 1.0)]});
    assert!(common::recording_overlap(&v).is_some());
}
