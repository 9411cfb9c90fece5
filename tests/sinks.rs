//! Durable delivery end to end, through the real binary and real stores (Redis, PostgreSQL
//! and NATS on loopback; `.ci/run` starts them): a store that goes away in the middle of a
//! 200-call replay and comes back later, and `kill -9` of vcontap with vCons in the spool.
//! In every case each vCon must arrive exactly once in the store's own view.
//!
//! A store "goes away" behind a TCP proxy the test controls ([`Cut`]): the listener closes
//! (new connections are refused) and every open connection is reset, exactly what a store
//! restart looks like to a client, without stopping the machine's shared services.
//! The outage lasts `VCONTAP_FAULT_SECS` seconds (default 60, as the issue asks).

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vcontap_synth::SynthConfig;

const CALLS: u32 = 200;

fn outage() -> Duration {
    Duration::from_secs(
        std::env::var("VCONTAP_FAULT_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(60),
    )
}

/// A TCP proxy in front of a real store that the test can cut and restore.
struct Cut {
    port: u16,
    upstream: SocketAddr,
    up: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
}

impl Cut {
    fn new(upstream: &str) -> Self {
        let upstream: SocketAddr = upstream.parse().unwrap();
        // Reserve a port, then release it: the proxy binds it while "up".
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let c = Cut {
            port,
            upstream,
            up: Arc::new(AtomicBool::new(false)),
            conns: Arc::default(),
            stop: Arc::new(AtomicBool::new(false)),
        };
        c.restore();
        c
    }

    /// Starts accepting again (a store that came back).
    fn restore(&self) {
        if self.up.swap(true, Ordering::SeqCst) {
            return;
        }
        let l = loop {
            match TcpListener::bind(("127.0.0.1", self.port)) {
                Ok(l) => break l,
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        l.set_nonblocking(true).unwrap();
        let (up, conns, upstream, stop) = (
            self.up.clone(),
            self.conns.clone(),
            self.upstream,
            self.stop.clone(),
        );
        std::thread::spawn(move || {
            while up.load(Ordering::SeqCst) && !stop.load(Ordering::SeqCst) {
                match l.accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        let Ok(server) = TcpStream::connect(upstream) else {
                            continue;
                        };
                        let mut g = conns.lock().unwrap();
                        g.push(client.try_clone().unwrap());
                        g.push(server.try_clone().unwrap());
                        drop(g);
                        pump(client.try_clone().unwrap(), server.try_clone().unwrap());
                        pump(server, client);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
            // Dropping `l` closes the port: new connections are refused.
        });
    }

    /// The store goes away: refuse new connections and reset the open ones.
    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for Cut {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.cut();
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16384];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Both);
    });
}

fn reachable(addr: &str) -> bool {
    TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(2)).is_ok()
}

/// A 200-call capture about 12 s long (so `--pace realtime` replays it over 12 s).
fn capture(dir: &Path) -> PathBuf {
    let pcap = dir.join("calls.pcap");
    let cfg = SynthConfig {
        calls: CALLS,
        concurrent: 40,
        seconds: 2.0,
        ..SynthConfig::default()
    };
    vcontap_synth::generate(&cfg, std::fs::File::create(&pcap).unwrap()).unwrap();
    pcap
}

fn replay(pcap: &Path, out: &Path, pace: &str, sink: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_vcontap"))
        .arg("replay")
        .arg(pcap)
        .arg("--out")
        .arg(out)
        .arg("--spool")
        .arg(common::spool_for(out))
        .args([
            "--record", "none", "--quiet", "--pace", pace, "--sink", sink,
        ])
        .env("VCONTAP_LOG", "vcontap_sinks=info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn finish(child: Child) -> String {
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(o.status.success(), "vcontap failed: {err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

fn unique(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{tag}_{}_{nanos}", std::process::id())
}

/// Every uuid the file sink wrote (the run's ground truth).
fn file_uuids(out: &Path) -> Vec<String> {
    let mut v: Vec<String> = common::vcon_files(out)
        .iter()
        .map(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .trim_end_matches(".vcon.json")
                .to_string()
        })
        .collect();
    v.sort();
    v
}

fn exactly_once(store: &[String], want: &[String], what: &str) {
    let mut s = store.to_vec();
    s.sort();
    let mut d = s.clone();
    d.dedup();
    assert_eq!(d.len(), s.len(), "{what}: duplicates in the store");
    assert_eq!(
        s, want,
        "{what}: the store's view differs from the calls replayed"
    );
}

/// Runs a realtime replay into `sink`, cuts the store after 3 s for [`outage`], restores
/// it, and returns the file sink's uuids once vcontap has drained.
fn replay_through_an_outage(name: &str, cut: &Cut, sink: &str) -> Vec<String> {
    let dir = common::tmpdir(name);
    let pcap = capture(&dir);
    let out = dir.join("out");
    let child = replay(&pcap, &out, "realtime", sink);
    std::thread::sleep(Duration::from_secs(3));
    cut.cut();
    std::thread::sleep(outage());
    cut.restore();
    let err = finish(child);
    assert!(
        err.contains("circuit open"),
        "the outage was noticed: {err}"
    );
    assert!(!err.contains("LEFT IN THE SPOOL"), "{err}");
    let files = file_uuids(&out);
    assert_eq!(files.len(), CALLS as usize, "{err}");
    common::validate(&[&out]);
    files
}

#[test]
fn redis_outage_mid_replay_loses_and_duplicates_nothing() {
    if !reachable("127.0.0.1:6379") {
        panic!("Redis is not running on 127.0.0.1:6379 (.ci/run starts it)");
    }
    let cut = Cut::new("127.0.0.1:6379");
    let (set, list) = (unique("vcontap_e2e_set"), unique("vcontap_e2e_list"));
    let sink = format!(
        "redis://127.0.0.1:{}/0?sorted_set={set}&ingress={list}",
        cut.port
    );
    let want = replay_through_an_outage("e2e-redis", &cut, &sink);
    let rt = rt();
    let url = "redis://127.0.0.1:6379/0";
    let stored = rt
        .block_on(vcontap_sinks::redis::stored_uuids(url, &set))
        .unwrap();
    exactly_once(&stored, &want, "redis sorted set");
    let pushed = rt
        .block_on(vcontap_sinks::redis::list_uuids(url, &list))
        .unwrap();
    exactly_once(&pushed, &want, "redis ingress list");
}

#[test]
fn postgres_outage_mid_replay_loses_and_duplicates_nothing() {
    if !reachable("127.0.0.1:5432") {
        panic!("PostgreSQL is not running on 127.0.0.1:5432 (.ci/run starts it)");
    }
    let cut = Cut::new("127.0.0.1:5432");
    let table = unique("vcontap_e2e");
    let sink = format!(
        "postgres://postgres@127.0.0.1:{}/test?table={table}",
        cut.port
    );
    let want = replay_through_an_outage("e2e-postgres", &cut, &sink);
    let stored = rt()
        .block_on(vcontap_sinks::postgres::stored_uuids(
            "postgres://postgres@127.0.0.1:5432/test",
            &table,
        ))
        .unwrap();
    exactly_once(&stored, &want, "postgres table");
    let _ = Command::new("psql")
        .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-c"])
        .arg(format!("DROP TABLE IF EXISTS {table}"))
        .output();
}

#[test]
fn nats_outage_mid_replay_loses_and_duplicates_nothing() {
    if !reachable("127.0.0.1:4222") {
        panic!("NATS is not running on 127.0.0.1:4222 (.ci/run starts it)");
    }
    let cut = Cut::new("127.0.0.1:4222");
    let tag = unique("e2e");
    let stream = tag.to_uppercase();
    let subject = format!("vcontest.{tag}.finished");
    let sink = format!(
        "nats://127.0.0.1:{}?stream={stream}&subject={subject}&events_subject_prefix=vcontest.{tag}.events",
        cut.port
    );
    let want = replay_through_an_outage("e2e-nats", &cut, &sink);
    let rt = rt();
    let url = "nats://127.0.0.1:4222";
    let stored = rt
        .block_on(vcontap_sinks::nats::stored_uuids(url, &stream, &subject))
        .unwrap();
    let _ = rt.block_on(vcontap_sinks::nats::delete_stream(url, &stream));
    exactly_once(&stored, &want, "nats stream");
}

#[test]
fn kill_9_then_restart_redelivers_exactly_once() {
    if !reachable("127.0.0.1:6379") {
        panic!("Redis is not running on 127.0.0.1:6379 (.ci/run starts it)");
    }
    let dir = common::tmpdir("e2e-kill");
    let pcap = capture(&dir);
    let out = dir.join("out");
    let cut = Cut::new("127.0.0.1:6379");
    let (set, list) = (unique("vcontap_kill_set"), unique("vcontap_kill_list"));
    let sink = format!(
        "redis://127.0.0.1:{}/0?sorted_set={set}&ingress={list}",
        cut.port
    );
    // Run 1: Redis is unreachable, so finished vCons pile up in the spool; kill -9 mid-replay.
    cut.cut();
    let mut child = replay(&pcap, &out, "realtime", &sink);
    std::thread::sleep(Duration::from_secs(7));
    child.kill().unwrap(); // SIGKILL
    let _ = child.wait();
    let listing = Command::new(env!("CARGO_BIN_EXE_vcontap"))
        .args(["spool", "list", "--spool"])
        .arg(common::spool_for(&out))
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout).to_string();
    let pending: usize = listing
        .lines()
        .filter(|l| l.contains("sink redis://"))
        .filter_map(|l| {
            l.split(", ")
                .nth(1)?
                .split(' ')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .sum();
    assert!(
        pending > 0,
        "vCons were waiting in the spool when vcontap died: {listing}"
    );
    // Run 2: Redis is back; the restart delivers what the spool held, then the whole capture
    // again (same uuids): the store must hold each vCon once.
    cut.restore();
    let err = finish(replay(&pcap, &out, "max", &sink));
    let want = file_uuids(&out);
    assert_eq!(want.len(), CALLS as usize, "{err}");
    let rt = rt();
    let url = "redis://127.0.0.1:6379/0";
    let stored = rt
        .block_on(vcontap_sinks::redis::stored_uuids(url, &set))
        .unwrap();
    exactly_once(&stored, &want, "redis sorted set after kill -9");
    let pushed = rt
        .block_on(vcontap_sinks::redis::list_uuids(url, &list))
        .unwrap();
    exactly_once(&pushed, &want, "redis ingress list after kill -9");
}

/// moto's S3 server on a free port (killed on drop), or None when it is not installed.
struct Moto(Child, u16);

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn moto() -> Option<Moto> {
    let ok = Command::new("python3")
        .args(["-c", "import moto.server, flask"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!(
            "skipped: python3 with moto's server is not installed (pip install 'moto[server]')"
        );
        return None;
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("python3")
        .args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let m = Moto(child, port);
    let t = std::time::Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(t.elapsed() < Duration::from_secs(30), "moto did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    // moto takes an unsigned bucket creation.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "PUT /rec HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    assert!(resp.starts_with("HTTP/1.1 200"), "create bucket: {resp}");
    Some(m)
}

#[test]
fn recordings_and_vcons_in_object_storage() {
    let Some(m) = moto() else { return };
    let dir = common::tmpdir("e2e-s3");
    let out = dir.join("out");
    let creds = format!(
        "endpoint=http://127.0.0.1:{}&region=us-east-1&access_key=test&secret_key=test",
        m.1
    );
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let o = Command::new(env!("CARGO_BIN_EXE_vcontap"))
        .arg("replay")
        .arg(root.join("captures/demo.pcap"))
        .arg("--out")
        .arg(&out)
        .arg("--spool")
        .arg(common::spool_for(&out))
        .arg("--quiet")
        .arg("--media-store")
        .arg(format!(
            "s3://rec/media-test?{creds}&public_base_url=https://media.example.net/rec"
        ))
        .arg("--sink")
        .arg(format!("s3://rec/vcons?{creds}"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let vcons = common::vcons(&out);
    assert_eq!(vcons.len(), 4, "{err}");
    let mut recordings = 0;
    for v in &vcons {
        for d in v["dialog"].as_array().unwrap() {
            if d["type"] != "recording" {
                continue;
            }
            recordings += 1;
            let url = d["url"].as_str().unwrap();
            assert!(
                url.starts_with("https://media.example.net/rec/media-test/media/"),
                "recording url points at the object: {url}"
            );
            assert!(d["content_hash"].as_str().unwrap().starts_with("sha512-"));
        }
    }
    assert!(recordings > 0);
    // Nothing was left in the spill directory, and the bucket holds the vCons.
    let spill = std::fs::read_dir(out.join("media-spill")).map_or(0, |d| d.count());
    assert_eq!(spill, 0, "uploaded recordings leave no local copy");
    let stored = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(vcontap_sinks::s3::stored_uuids(&format!(
            "s3://rec/vcons?{creds}"
        )))
        .unwrap();
    let mut want: Vec<String> = vcons
        .iter()
        .map(|v| v["uuid"].as_str().unwrap().to_string())
        .collect();
    want.sort();
    exactly_once(&stored, &want, "s3 bucket");
    common::validate(&[&out]);
}

fn vcontap(args: &[&str], spool: &Path) -> (bool, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_vcontap"))
        .args(args)
        .arg("--spool")
        .arg(spool)
        .output()
        .unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).to_string(),
        String::from_utf8_lossy(&o.stderr).to_string(),
    )
}

#[test]
fn spool_commands_list_drop_and_retry() {
    let dir = common::tmpdir("spool-cli");
    let out = dir.join("out");
    let spool = common::spool_for(&out);
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("captures/demo.pcap");
    let demo = demo.to_str().unwrap();
    let dead_sink = "redis://127.0.0.1:1/0";
    // A store that never answers: the run ends with its vCons left in the spool.
    let (ok, _, err) = vcontap(
        &[
            "replay",
            demo,
            "--out",
            out.to_str().unwrap(),
            "--quiet",
            "--record",
            "none",
            "--sink",
            dead_sink,
            "--drain-timeout",
            "1",
        ],
        &spool,
    );
    assert!(ok, "{err}");
    assert!(err.contains("4 LEFT IN THE SPOOL"), "{err}");
    let (ok, list, _) = vcontap(&["spool", "list", "--records"], &spool);
    assert!(ok);
    assert!(
        list.contains(&format!("sink {dead_sink}: cursor 1, 4 vCon(s) pending")),
        "{list}"
    );
    assert!(list.contains("owed to redis://127.0.0.1:1/0"), "{list}");
    // Give up on that store: nothing is owed any more.
    let (ok, msg, err) = vcontap(&["spool", "drop", "--sink", dead_sink], &spool);
    assert!(ok, "{err}");
    assert!(msg.contains("dropped"), "{msg}");
    let (_, list, _) = vcontap(&["spool", "list"], &spool);
    assert!(!list.contains("4 vCon(s) pending"), "{list}");
    // A dead letter (as the delivery core writes one when a store refuses a vCon) goes back
    // to its sink with `retry` and is delivered on the next run.
    let file_sink = format!("file://{}", std::fs::canonicalize(&out).unwrap().display());
    let uuid = "019b0000-0000-8000-8000-00000000d1ed";
    let json = format!(
        r#"{{"vcon":"0.4.0","uuid":"{uuid}","created_at":"2026-11-29T10:00:00Z","parties":[],"dialog":[]}}"#
    );
    let rec = vcontap_sinks::Record {
        id: vcontap_sinks::RecordId(3),
        uuid: uuid.into(),
        json: bytes::Bytes::from(json.clone()),
        spooled_unix_ms: 0,
    };
    vcontap_sinks::delivery::dead_letter(&spool.join("dead"), &file_sink, &rec, "test refusal")
        .unwrap();
    let (_, list, _) = vcontap(&["spool", "list"], &spool);
    assert!(
        list.contains("dead letters: 1") && list.contains("test refusal"),
        "{list}"
    );
    let (ok, msg, err) = vcontap(&["spool", "retry"], &spool);
    assert!(ok, "{err}");
    assert!(msg.contains("1 dead letter(s) queued again"), "{msg}");
    let (_, list, _) = vcontap(&["spool", "list"], &spool);
    assert!(list.contains("dead letters: 0"), "{list}");
    let (ok, _, err) = vcontap(
        &[
            "replay",
            demo,
            "--out",
            out.to_str().unwrap(),
            "--quiet",
            "--record",
            "none",
        ],
        &spool,
    );
    assert!(ok, "{err}");
    let f = out.join(format!("2026/11/29/{uuid}.vcon.json"));
    assert_eq!(std::fs::read_to_string(&f).unwrap(), json);
    // Changing commands need the spool's lock; a bad request is an error, not a no-op.
    let (ok, _, err) = vcontap(&["spool", "drop"], &spool);
    assert!(!ok && err.contains("say what to drop"), "{err}");
}
