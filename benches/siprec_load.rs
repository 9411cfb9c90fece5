//! SIPREC load (issue 9): concurrent recording sessions from SIPp, two G.711 streams each,
//! `--record stereo`, on one `vcontap siprec` (one shard: one core for the engine). SIPp
//! 3.6.1 is the SRC: benches/siprec/src-load.xml (the two-labelled-stream INVITE of
//! tests/siprec/src-two-streams.xml, RFC 7865 metadata, ACK, hold, BYE) with
//! `play_pcap_audio` of a two-flow PCMU pcap this bench writes (a 440 Hz tone to port 6000
//! and 1 kHz to 6002, 20 ms packets): SIPp sends the first flow to the first answered port
//! and keeps the +2 offset for the second, which is vcontap's second port on a fresh pool,
//! so BOTH streams carry RTP (docs/siprec.md "SIPp facts"). Each step runs its own server
//! (fresh port pool, output and counters). `play_pcap_audio` needs CAP_NET_RAW (root).
//!
//! Per step: sessions answered (SIPp's successful calls) and the most open at once
//! (`vcontap_siprec_sessions_open`, sampled), RTP packets sent (pcap packets × answered
//! sessions) against received (`vcontap_siprec_rtp_packets_total`), dropped at the input
//! queue (`vcontap_siprec_input_dropped_total`: SIP or RTP the loop had no room for) and by
//! the kernel (host-wide `Udp: RcvbufErrors`), for unknown ports (late packets of an ended
//! session), port bind failures, vCons written and complete (both streams have packets, end
//! reason `bye`, a recording), vcontap's CPU (utime+stime of `/proc/PID/stat`) over the
//! wall time from SIPp's start to the last vCon as % of one core, its busiest thread's share
//! (`/proc/PID/task`: is one thread the limit?) and how long it waited runnable for a CPU
//! (`schedstat`: was it starved?), peak RSS (`VmHWM`) and SIPp's own CPU seconds. A sample
//! of each step's vCons goes through `validate-vcon` (`$VCONTAP_SHARED/tools/validate-vcon`
//! or `../shared/tools/validate-vcon`) when present.
//! Figures and method: docs/PERFORMANCE.md "SIPREC sessions".
//!
//! ```text
//! cargo bench --bench siprec_load                                  # 250,500,750,1000
//! VCONTAP_SIPREC_SESSIONS=500 VCONTAP_SIPREC_HOLD=8 cargo bench --bench siprec_load
//! ```
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `VCONTAP_SIPREC_SESSIONS` | `250,500,750,1000` | sessions per step (SIPp `-m` and `-l`) |
//! | `VCONTAP_SIPREC_HOLD` | `6` | seconds each session is held after the ACK (raised per step to sessions ÷ rate + 1 so all of a step's sessions are up at once) |
//! | `VCONTAP_SIPREC_RATE` | `100` | new sessions per second (SIPp `-r`) |
//! | `VCONTAP_SIPREC_SAMPLE` | `20` | vCons per step given to `validate-vcon` |
//! | `VCONTAP_SIPREC_ARGS` | empty | extra `vcontap siprec` options, e.g. `--shards 2` |
//! | `VCONTAP_SIPREC_NICE` | `0:0` | `V:S`: run vcontap under `nice -n V` and SIPp under `nice -n S` (e.g. `-10:10`: SIPp's threads and other work yield to vcontap, as on a host of its own) |
//! | `VCONTAP_SIPREC_PIN` | `none` | `V:S`: `taskset` vcontap (all its threads) to CPU list `V` and SIPp to `S`, e.g. `0:1` |
//!
//! SIPp runs on the same host. Its `play_pcap_audio` is a thread per stream waking every
//! 20 ms, so 1,000 sessions are 2,000 threads: on 2 cores they crowd vcontap's loop thread
//! off the CPU (load average 40+) and its input queue (16 Ki messages, about 160 ms of
//! 1,000 sessions' RTP) overflows while vcontap is mostly idle: watch `top%` (the busiest
//! vcontap thread) against `qdrop`. Pinning gives vcontap a core of its own only on a
//! machine nothing else uses (on a shared one it pins vcontap beside the other work).
//! The load average is printed with each step: the figures are a floor. The audio
//! is 1 s shorter than the hold, so its last packets leave before the BYE.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use vcontap_synth::{linear_to_ulaw, mac_for, udp_frame, write_rtp_header, Link, RtpHeader};
use vcontap_wire::{LinkType, PcapWriter, Resolution, Timestamp};

/// The pcap's name next to the scenario copy (the scenario names it relatively).
const PCAP: &str = "siprec-load.pcap";
/// RTP ports one session takes from the pool: two streams, RTP + RTCP each.
const PORTS_PER_SESSION: u32 = 4;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is taken from the command line.
    let Some(sipp) = find_sipp() else { return };
    let steps: Vec<u32> = env_or("VCONTAP_SIPREC_SESSIONS", "250,500,750,1000")
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .filter(|n| *n > 0)
        .collect();
    let hold: u32 = env_or("VCONTAP_SIPREC_HOLD", "6")
        .parse()
        .unwrap_or(6)
        .max(2);
    let rate: u32 = env_or("VCONTAP_SIPREC_RATE", "100")
        .parse()
        .unwrap_or(100)
        .max(1);
    let sample: usize = env_or("VCONTAP_SIPREC_SAMPLE", "20").parse().unwrap_or(20);
    let pin = pinning(&env_or("VCONTAP_SIPREC_PIN", "none"));
    let nice = env_or("VCONTAP_SIPREC_NICE", "0:0");
    let (vcontap_nice, sipp_nice): (i32, i32) = nice
        .split_once(':')
        .and_then(|(v, s)| Some((v.trim().parse().ok()?, s.trim().parse().ok()?)))
        .unwrap_or_else(|| {
            eprintln!("VCONTAP_SIPREC_NICE={nice:?}: takes V:S, e.g. -10:10; using 0:0");
            (0, 0)
        });
    let pinned = match &pin {
        Some((v, s)) => format!("vcontap on CPU {v}, SIPp on CPU {s}"),
        None => "not pinned".into(),
    };
    let pinned = format!("{pinned}, nice vcontap {vcontap_nice} SIPp {sipp_nice}");
    println!(
        "\nSIPREC load: SIPp {rate}/s, two PCMU streams per session, --record stereo, one shard, {pinned}; {}",
        uptime()
    );
    println!(
        "{:>8} {:>5} {:>8} {:>6} {:>9} {:>9} {:>6} {:>6} {:>6} {:>5} {:>6} {:>8} {:>7} {:>6} {:>6} {:>7} {:>6} {:>7}",
        "sessions",
        "hold",
        "answered",
        "peak",
        "RTP sent",
        "RTP recv",
        "qdrop",
        "kdrop",
        "unknwn",
        "bindf",
        "vCons",
        "complete",
        "CPU s",
        "wall s",
        "core%",
        "RSS MiB",
        "top%",
        "SIPp s"
    );
    for &n in &steps {
        // All of a step's sessions overlap: the last starts at n/rate s, the first ends at hold.
        let hold = hold.max(n.div_ceil(rate) + 1);
        let nice = (vcontap_nice, sipp_nice);
        let r = run(&sipp, n, hold, rate, sample, pin.as_ref(), nice);
        println!(
            "{:>8} {:>5} {:>8} {:>6} {:>9} {:>9} {:>6} {:>6} {:>6} {:>5} {:>6} {:>8} {:>7.1} {:>6.1} {:>6.1} {:>7.0} {:>6.1} {:>7.1}   load {}",
            n,
            hold,
            r.answered,
            r.peak_open,
            r.rtp_sent,
            r.rtp_received,
            r.input_dropped,
            r.kernel_drops,
            r.rtp_unknown,
            r.bind_failures,
            r.vcons,
            r.complete,
            r.cpu_secs,
            r.wall_secs,
            100.0 * r.cpu_secs / r.wall_secs.max(1e-9),
            r.rss_hwm_kib as f64 / 1024.0,
            100.0 * r.top_thread.1 / r.wall_secs.max(1e-9),
            r.sipp_cpu_secs,
            loadavg()
        );
        if !r.top_thread.0.is_empty() {
            println!(
                "         busiest vcontap thread: {}, {:.1} s on CPU, {:.1} s runnable but waiting for one",
                r.top_thread.0, r.top_thread.1, r.top_thread.2
            );
        }
        for note in &r.notes {
            println!("         {note}");
        }
    }
}

/// `VCONTAP_SIPREC_PIN` as `(vcontap CPUs, SIPp CPUs)`; `None` for `none`, a bad value, or
/// no `taskset` (with a message).
fn pinning(spec: &str) -> Option<(String, String)> {
    if spec == "none" {
        return None;
    }
    let Some((v, s)) = spec.split_once(':') else {
        eprintln!("VCONTAP_SIPREC_PIN={spec:?}: takes V:S (CPU lists) or none; not pinning");
        return None;
    };
    if Command::new("taskset").arg("-V").output().is_err() {
        eprintln!("taskset (util-linux) not found: not pinning");
        return None;
    }
    Some((v.to_string(), s.to_string()))
}

/// `program`, run through `taskset -c CPUS` when pinned (taskset execs it: same pid).
fn command(program: impl AsRef<std::ffi::OsStr>, cpus: Option<&str>) -> Command {
    match cpus {
        Some(c) => {
            let mut cmd = Command::new("taskset");
            cmd.args(["-c", c]).arg(program);
            cmd
        }
        None => Command::new(program),
    }
}

/// `cmd` under `nice -n N` when `n` is not 0 (nice execs it: same pid).
fn niced(cmd: Command, n: i32) -> Command {
    if n == 0 {
        return cmd;
    }
    let mut nice = Command::new("nice");
    nice.args(["-n", &n.to_string()])
        .arg(cmd.get_program())
        .args(cmd.get_args());
    nice
}

fn find_sipp() -> Option<PathBuf> {
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

fn uptime() -> String {
    Command::new("uptime")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_default()
}

/// What one step measured.
#[derive(Debug, Default)]
struct StepResult {
    answered: u64,
    peak_open: u64,
    rtp_sent: u64,
    rtp_received: u64,
    input_dropped: u64,
    rtp_unknown: u64,
    bind_failures: u64,
    vcons: usize,
    complete: usize,
    cpu_secs: f64,
    wall_secs: f64,
    rss_hwm_kib: u64,
    /// vcontap's busiest thread over the step: name, CPU and run-queue wait seconds.
    top_thread: (String, f64, f64),
    sipp_cpu_secs: f64,
    /// The kernel's UDP receive-buffer drops (host-wide `Udp: RcvbufErrors`) over the step.
    kernel_drops: u64,
    notes: Vec<String>,
}

/// A child process killed (and reaped) when dropped, so a failing step leaves nothing behind.
struct Guard(Child);

impl Guard {
    fn id(&self) -> u32 {
        self.0.id()
    }

    /// SIGTERM, then up to `grace` for a clean exit, then SIGKILL. True on a clean exit.
    fn stop(&mut self, grace: Duration) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let t = Instant::now();
        while t.elapsed() < grace {
            if let Ok(Some(st)) = self.0.try_wait() {
                return st.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
        false
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A free local port for UDP and TCP (the SIP listener takes both).
fn free_port() -> u16 {
    loop {
        let u = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP port");
        let p = u.local_addr().expect("local address").port();
        if TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}

/// A run's own RTP range below the usual ephemeral ports (32768+), varied by pid.
fn rtp_range(sessions: u32) -> (u16, u16) {
    let size = sessions * PORTS_PER_SESSION + 200;
    let room = 32_000u32.saturating_sub(10_000 + size).max(2);
    let base = 10_000 + (std::process::id() % room) / 2 * 2;
    (base as u16, (base + size - 1).min(65_535) as u16)
}

fn bench_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "vcontap-siprec-bench-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("bench dir");
    d
}

/// Two flows of `ms` milliseconds of PCMU, to ports 6000 (440 Hz) and 6002 (1 kHz), 20 ms
/// packets; SIPp replays the payloads at the captured pace. Returns packets per flow.
fn write_pcap(path: &Path, ms: u32) -> u64 {
    let link = Link {
        src_mac: mac_for("192.0.2.1".parse().expect("ip")),
        dst_mac: mac_for("192.0.2.2".parse().expect("ip")),
        vlan: None,
        pcp: 0,
    };
    let flows: [(SocketAddr, SocketAddr, f64, u32); 2] = [
        (
            "192.0.2.1:4000".parse().expect("addr"),
            "192.0.2.2:6000".parse().expect("addr"),
            440.0,
            0x5100,
        ),
        (
            "192.0.2.1:4002".parse().expect("addr"),
            "192.0.2.2:6002".parse().expect("addr"),
            1000.0,
            0x5101,
        ),
    ];
    let mut w = PcapWriter::new(
        std::fs::File::create(path).expect("create pcap"),
        LinkType::ETHERNET,
        Resolution::Micros,
    )
    .expect("pcap header");
    let packets = ms / 20;
    for i in 0..packets {
        for (k, (src, dst, freq, ssrc)) in flows.iter().enumerate() {
            let mut rtp = Vec::new();
            write_rtp_header(
                &mut rtp,
                &RtpHeader {
                    marker: i == 0,
                    payload_type: 0,
                    seq: i as u16,
                    timestamp: i * 160,
                    ssrc: *ssrc,
                },
            );
            for n in 0..160 {
                let t = f64::from(i * 160 + n) / 8000.0;
                let s = (8000.0 * (2.0 * std::f64::consts::PI * freq * t).sin()) as i16;
                rtp.push(linear_to_ulaw(s));
            }
            let mut frame = Vec::new();
            udp_frame(
                &mut frame,
                &link,
                *src,
                *dst,
                &rtp,
                (2 * i + k as u32) as u16,
            )
            .expect("udp frame");
            // The second flow 100 µs after the first: both in order, at the 20 ms pace.
            let at = 1_700_000_000_000_000_000 + i64::from(i) * 20_000_000 + k as i64 * 100_000;
            w.write_packet(Timestamp(at), &frame).expect("pcap packet");
        }
    }
    w.flush().expect("pcap flush");
    u64::from(packets)
}

/// One HTTP/1.0 GET on loopback; the body, or `None`.
fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(2),
    )
    .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let (head, body) = resp.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200")
        .then(|| body.to_string())
        .or_else(|| head.starts_with("HTTP/1.0 200").then(|| body.to_string()))
}

/// The value of the un-labelled series `name` in a `/metrics` text (summed over label sets).
fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// utime + stime of `pid` in seconds.
fn cpu_secs(pid: u32, ticks: f64) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_or(0.0, |stat| cpu_secs_of(&stat, ticks))
}

/// utime + stime of a `/proc/…/stat` line, in seconds.
fn cpu_secs_of(stat: &str, ticks: f64) -> f64 {
    // Fields after the `(comm)`, which may hold spaces: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map_or("", |x| x.1);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (get(11) + get(12)) / ticks
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// `((tid, name), (CPU seconds, run-queue wait seconds))` of one thread.
type ThreadTimes = ((u32, String), (f64, f64));

/// CPU seconds and seconds spent runnable but waiting for a CPU (`schedstat`'s run delay)
/// of each thread of `pid`, by `(tid, name)`.
fn thread_cpu(pid: u32, ticks: f64) -> Vec<ThreadTimes> {
    let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| {
            let tid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let name = stat.split_once('(')?.1.rsplit_once(')')?.0.to_string();
            let wait = std::fs::read_to_string(e.path().join("schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().nth(1)?.parse::<f64>().ok())
                .map_or(0.0, |ns| ns / 1e9);
            Some(((tid, name), (cpu_secs_of(&stat, ticks), wait)))
        })
        .collect()
}

/// The thread that used the most CPU between two [`thread_cpu`] snapshots: its name, CPU
/// seconds and run-queue wait seconds.
fn busiest(before: &[ThreadTimes], after: &[ThreadTimes]) -> (String, f64, f64) {
    after
        .iter()
        .map(|(k, (cpu, wait))| {
            let (c0, w0) = before
                .iter()
                .find(|(b, _)| b == k)
                .map_or((0.0, 0.0), |x| x.1);
            (k.1.clone(), cpu - c0, wait - w0)
        })
        .fold(
            (String::new(), 0.0, 0.0),
            |a, b| if b.1 > a.1 { b } else { a },
        )
}

/// `Udp: RcvbufErrors` of /proc/net/snmp (host-wide: datagrams a full socket buffer dropped).
fn udp_rcvbuf_errors() -> u64 {
    let Ok(snmp) = std::fs::read_to_string("/proc/net/snmp") else {
        return 0;
    };
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp: "));
    let (Some(head), Some(vals)) = (udp.next(), udp.next()) else {
        return 0;
    };
    head.split_whitespace()
        .position(|c| c == "RcvbufErrors")
        .and_then(|i| vals.split_whitespace().nth(i))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Every `*.vcon.json` under `out` (`media/` holds recordings, not vCons).
fn vcon_files(out: &Path) -> Vec<PathBuf> {
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

/// Packets of each RTP stream in the vCon's quality report (an analysis entry, or the
/// `vcontap` extension).
fn stream_packets(v: &Value) -> Vec<u64> {
    let streams = v["analysis"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["schema"] == "vcontap-rtp-quality"))
        .map(|x| &x["body"]["streams"])
        .unwrap_or(&v["vcontap"]["rtp_quality"]["streams"]);
    streams
        .as_array()
        .map(|s| {
            s.iter()
                .map(|x| x["packets"].as_u64().unwrap_or(0))
                .collect()
        })
        .unwrap_or_default()
}

/// Complete: two streams with packets, ended by BYE, a recording in the dialog.
fn complete(v: &Value) -> bool {
    let packets = stream_packets(v);
    let recording = v["dialog"]
        .as_array()
        .is_some_and(|d| d.iter().any(|x| x["type"] == "recording"));
    packets.len() == 2
        && packets.iter().all(|p| *p > 0)
        && v["vcontap"]["end_reason"] == "bye"
        && recording
}

/// `validate-vcon` over `files`; `None` when the tool is absent, else its verdict.
fn validate(files: &[PathBuf]) -> Option<Result<(), String>> {
    let shared = std::env::var_os("VCONTAP_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"));
    let tool = shared.join("tools/validate-vcon");
    if !tool.exists() || files.is_empty() {
        return None;
    }
    let o = Command::new(&tool)
        .arg("--quiet")
        .args(files)
        .output()
        .ok()?;
    Some(if o.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ))
    })
}

/// SIPp's successful and failed calls from the last line of its `-trace_stat` CSV.
fn sipp_calls(stat: &Path) -> (u64, u64) {
    let Ok(text) = std::fs::read_to_string(stat) else {
        return (0, 0);
    };
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let Some(head) = lines.next() else {
        return (0, 0);
    };
    let Some(last) = lines.next_back() else {
        return (0, 0);
    };
    let cols: Vec<&str> = head.split(';').collect();
    let vals: Vec<&str> = last.split(';').collect();
    let col = |name: &str| {
        cols.iter()
            .position(|c| *c == name)
            .and_then(|i| vals.get(i))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    (col("SuccessfulCall(C)"), col("FailedCall(C)"))
}

/// One step: a fresh server, `sessions` SIPREC sessions held `hold` s at `rate`/s.
fn run(
    sipp: &Path,
    sessions: u32,
    hold: u32,
    rate: u32,
    sample: usize,
    pin: Option<&(String, String)>,
    (vcontap_nice, sipp_nice): (i32, i32),
) -> StepResult {
    let mut r = StepResult::default();
    let dir = bench_dir(&sessions.to_string());
    let out = dir.join("out");
    let packets_per_stream = write_pcap(&dir.join(PCAP), (hold - 1) * 1000);
    let scenario = dir.join("src-load.xml");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/siprec/src-load.xml"),
        &scenario,
    )
    .expect("copy the scenario");

    let sip_port = free_port();
    let api_port = free_port();
    let (lo, hi) = rtp_range(sessions);
    let log = std::fs::File::create(dir.join("vcontap.log")).expect("log file");
    let mut server = Guard(
        niced(
            command(env!("CARGO_BIN_EXE_vcontap"), pin.map(|p| p.0.as_str())),
            vcontap_nice,
        )
        .args(["siprec", "--listen", &format!("127.0.0.1:{sip_port}")])
        .args(["--rtp-ports", &format!("{lo}-{hi}")])
        .args(["--listen-api", &format!("127.0.0.1:{api_port}")])
        .args(["--record", "stereo", "--host", "bench.vcontap.example"])
        .args(["--max-sessions", &(sessions + 100).to_string()])
        .args(env_or("VCONTAP_SIPREC_ARGS", "").split_whitespace())
        .arg("--out")
        .arg(&out)
        .arg("--spool")
        .arg(dir.join("spool"))
        .env("VCONTAP_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start vcontap siprec"),
    );
    let t = Instant::now();
    while !http_get(api_port, "/readyz").is_some_and(|s| s.starts_with("ready")) {
        if t.elapsed() > Duration::from_secs(30) {
            r.notes.push(format!(
                "vcontap siprec not ready after 30 s (log: {})",
                dir.join("vcontap.log").display()
            ));
            return r;
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    // The most sessions open at once, sampled every 100 ms while SIPp runs.
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Some(m) = http_get(api_port, "/metrics") {
                    peak.fetch_max(
                        metric(&m, "vcontap_siprec_sessions_open"),
                        Ordering::Relaxed,
                    );
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };

    let ticks = clock_ticks();
    let cpu0 = cpu_secs(server.id(), ticks);
    let threads0 = thread_cpu(server.id(), ticks);
    let kdrops0 = udp_rcvbuf_errors();
    let t0 = Instant::now();
    let stat = dir.join("sipp-stat.csv");
    // SIPp's own bound: ramp-up + hold + a minute; the guard kills it past that anyway.
    let limit = sessions.div_ceil(rate) + hold + 60;
    let mut src = Guard(
        niced(command(sipp, pin.map(|p| p.1.as_str())), sipp_nice)
            .arg(format!("127.0.0.1:{sip_port}"))
            .arg("-sf")
            .arg(&scenario)
            .args([
                "-i",
                "127.0.0.1",
                "-mi",
                "127.0.0.1",
                "-t",
                "u1",
                "-nostdin",
            ])
            .args(["-r", &rate.to_string()])
            .args(["-m", &sessions.to_string(), "-l", &sessions.to_string()])
            .args(["-d", &(hold * 1000).to_string()])
            .args(["-timeout", &format!("{limit}s"), "-timeout_error"])
            .args(["-trace_stat", "-fd", "1", "-stf"])
            .arg(&stat)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("sipp.err")).expect("sipp log"))
            .spawn()
            .expect("start sipp"),
    );
    let deadline = Instant::now() + Duration::from_secs(u64::from(limit) + 10);
    loop {
        // SIPp's own CPU, read while it runs (a reaped process has no /proc entry).
        let c = cpu_secs(src.id(), ticks);
        if c > 0.0 {
            r.sipp_cpu_secs = c;
        }
        match src.0.try_wait() {
            Ok(Some(st)) => {
                if !st.success() {
                    r.notes.push(format!(
                        "sipp: {st} (see {})",
                        dir.join("sipp.err").display()
                    ));
                }
                break;
            }
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            _ => {
                r.notes.push("sipp did not finish in time: killed".into());
                break;
            }
        }
    }
    drop(src);
    (r.answered, _) = sipp_calls(&stat);
    let failed = sipp_calls(&stat).1;
    if failed > 0 {
        r.notes.push(format!("sipp: {failed} calls failed"));
    }

    // Every answered session's vCon, or 60 s (the BYE ends the session; the file sink writes).
    let t = Instant::now();
    let mut files = vcon_files(&out);
    while (files.len() as u64) < r.answered && t.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(200));
        files = vcon_files(&out);
    }
    r.wall_secs = t0.elapsed().as_secs_f64();
    r.cpu_secs = cpu_secs(server.id(), ticks) - cpu0;
    r.rss_hwm_kib = status_kib(server.id(), "VmHWM:");
    r.top_thread = busiest(&threads0, &thread_cpu(server.id(), ticks));
    r.kernel_drops = udp_rcvbuf_errors().saturating_sub(kdrops0);
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    r.peak_open = peak.load(Ordering::Relaxed);
    let m = http_get(api_port, "/metrics").unwrap_or_default();
    r.rtp_received = metric(&m, "vcontap_siprec_rtp_packets_total");
    r.input_dropped = metric(&m, "vcontap_siprec_input_dropped_total");
    r.rtp_unknown = metric(&m, "vcontap_siprec_rtp_unknown_total");
    r.bind_failures = metric(&m, "vcontap_siprec_port_bind_failures_total");
    r.rtp_sent = r.answered * 2 * packets_per_stream;
    if !server.stop(Duration::from_secs(60)) {
        r.notes
            .push("vcontap siprec did not exit cleanly on SIGTERM".into());
    }

    // The shutdown may have finished sessions still open: count what is there now.
    let files = vcon_files(&out);
    r.vcons = files.len();
    let mut in_vcons = 0u64;
    for f in &files {
        let Some(v) = std::fs::read(f)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        else {
            r.notes.push(format!("unreadable vCon {}", f.display()));
            continue;
        };
        in_vcons += stream_packets(&v).iter().sum::<u64>();
        if complete(&v) {
            r.complete += 1;
        }
    }
    if in_vcons != r.rtp_received {
        r.notes.push(format!(
            "RTP packets in the vCons' quality reports: {in_vcons}"
        ));
    }
    let step = files.len().div_ceil(sample.max(1)).max(1);
    let picked: Vec<PathBuf> = files.iter().step_by(step).cloned().collect();
    match validate(&picked) {
        None => r
            .notes
            .push("validate-vcon not found (set VCONTAP_SHARED): vCons not validated".into()),
        Some(Ok(())) => r.notes.push(format!(
            "validate-vcon: {} sampled vCons pass",
            picked.len()
        )),
        Some(Err(e)) => r.notes.push(format!("validate-vcon FAILED: {e}")),
    }
    let clean = r.notes.iter().all(|n| n.starts_with("validate-vcon:"));
    if clean {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        r.notes.push(format!("kept {}", dir.display()));
    }
    r
}
