//! The live API end to end: the real binary replays a project capture with `--listen`, and
//! real clients (SSE over reqwest, WebSocket over tokio-tungstenite, `curl -N`, a raw TCP
//! client that never reads, a conserver-like follower loop) check what they get against the
//! `--events` file the same run wrote.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::Value;

const TOKEN: &str = "test-token-0123456789abcdef";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn demo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("captures/demo.pcap")
}

/// Starts `vcontap replay` into `out` (events in `out/events.jsonl`, stderr in `out.log`).
fn spawn_replay(capture: &Path, out: &Path, extra: &[&str]) -> Child {
    let log = std::fs::File::create(out.with_extension("log")).unwrap();
    Command::new(env!("CARGO_BIN_EXE_vcontap"))
        .arg("replay")
        .arg(capture)
        .arg("--out")
        .arg(out)
        .arg("--events")
        .arg(out.join("events.jsonl"))
        .args([
            "--quiet",
            "--host",
            "test.vcontap.example",
            "--record",
            "none",
        ])
        .arg("--spool")
        .arg(common::spool_for(out))
        .args(extra)
        .stderr(log)
        .spawn()
        .unwrap()
}

fn wait_exit(mut child: Child, out: &Path) {
    let st = child.wait().unwrap();
    let log = std::fs::read_to_string(out.with_extension("log")).unwrap_or_default();
    assert!(st.success(), "replay failed: {log}");
    assert!(!log.contains("panicked"), "{log}");
}

/// Waits until the server answers `/healthz`.
async fn wait_up(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "the API never came up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One parsed SSE frame.
#[derive(Debug, Clone)]
struct SseFrame {
    event: Option<String>,
    id: Option<String>,
    data: String,
}

fn parse_frames(buf: &mut String, out: &mut Vec<SseFrame>) {
    while let Some(end) = buf.find("\n\n") {
        let block: String = buf.drain(..end + 2).collect();
        let (mut event, mut id, mut data) = (None, None, Vec::new());
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("event: ") {
                event = Some(v.to_string());
            } else if let Some(v) = line.strip_prefix("id: ") {
                id = Some(v.to_string());
            } else if let Some(v) = line.strip_prefix("data: ") {
                data.push(v.to_string());
            }
        }
        if !data.is_empty() {
            out.push(SseFrame {
                event,
                id,
                data: data.join("\n"),
            });
        }
    }
}

/// Reads an SSE stream to its end.
async fn sse_collect(url: String) -> Vec<SseFrame> {
    let mut r = reqwest::get(&url).await.unwrap();
    assert_eq!(r.status(), 200, "{url}");
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let (mut buf, mut out) = (String::new(), Vec::new());
    while let Some(chunk) = r.chunk().await.unwrap() {
        buf.push_str(std::str::from_utf8(&chunk).unwrap());
        parse_frames(&mut buf, &mut out);
    }
    out
}

/// Reads a WebSocket event stream to its close frame.
async fn ws_collect(url: String) -> Vec<String> {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let mut out = Vec::new();
    while let Some(m) = ws.next().await {
        match m.unwrap() {
            tokio_tungstenite::tungstenite::Message::Text(t) => out.push(t.to_string()),
            tokio_tungstenite::tungstenite::Message::Close(_) => break,
            _ => {}
        }
    }
    let _ = ws.close(None).await;
    out
}

/// Applies an RFC 6902 patch (add/remove/replace, what the server emits).
fn apply_patch(doc: &mut Value, patch: &[Value]) {
    for op in patch {
        let path = op["path"].as_str().unwrap();
        let toks: Vec<String> = path
            .split('/')
            .skip(1)
            .map(|t| t.replace("~1", "/").replace("~0", "~"))
            .collect();
        let Some((last, parents)) = toks.split_last() else {
            *doc = op["value"].clone();
            continue;
        };
        let mut cur = &mut *doc;
        for t in parents {
            cur = match cur {
                Value::Object(m) => m.get_mut(t).unwrap(),
                Value::Array(a) => &mut a[t.parse::<usize>().unwrap()],
                _ => panic!("bad path {path}"),
            };
        }
        match (op["op"].as_str().unwrap(), cur) {
            ("add" | "replace", Value::Object(m)) => {
                m.insert(last.clone(), op["value"].clone());
            }
            ("remove", Value::Object(m)) => {
                m.remove(last).unwrap();
            }
            ("add", Value::Array(a)) if last == "-" => a.push(op["value"].clone()),
            ("add", Value::Array(a)) => a.insert(last.parse().unwrap(), op["value"].clone()),
            ("replace", Value::Array(a)) => a[last.parse::<usize>().unwrap()] = op["value"].clone(),
            ("remove", Value::Array(a)) => {
                a.remove(last.parse().unwrap());
            }
            (o, _) => panic!("unsupported op {o}"),
        }
    }
}

fn events_lines(out: &Path) -> Vec<String> {
    std::fs::read_to_string(out.join("events.jsonl"))
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

fn runtime() -> tokio::runtime::Runtime {
    // reqwest is built without a default crypto provider (the sinks pick ring).
    let _ = rustls::crypto::ring::default_provider().install_default();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Writes each vCon to `dir` and runs validate-vcon over them.
fn validate_all(vcons: &[Value], dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for (i, v) in vcons.iter().enumerate() {
        std::fs::write(
            dir.join(format!("{i:03}.vcon.json")),
            serde_json::to_vec(v).unwrap(),
        )
        .unwrap();
    }
    common::validate(&[dir]);
}

#[test]
fn sse_ws_curl_and_delta_subscribers_see_the_events_file_live() {
    let out = common::tmpdir("live-api-stream");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    // 4 subscribers before the first packet (SSE, SSE delta, WebSocket, curl); a fifth
    // joins mid-call.
    let child = spawn_replay(
        &demo(),
        &out,
        &[
            "--pace",
            "realtime",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--wait-subscribers",
            "4",
            "--linger",
            "3",
        ],
    );
    let rt = runtime();
    let (full, delta, ws, joiner, curl, fetched, calls_mid) = rt.block_on(async {
        wait_up(port).await;
        let full = tokio::spawn(sse_collect(format!("{base}/v1/events")));
        let delta = tokio::spawn(sse_collect(format!("{base}/v1/events?delta=json-patch")));
        let ws = tokio::spawn(ws_collect(format!("ws://127.0.0.1:{port}/v1/events")));
        let curl_url = format!("{base}/v1/events");
        let curl = tokio::task::spawn_blocking(move || {
            Command::new("curl")
                .args(["-sN", "--max-time", "120", &curl_url])
                .stdout(Stdio::piped())
                .output()
                .map(|o| String::from_utf8(o.stdout).unwrap())
        });
        // Mid-call join: once a call has gone past `created`, subscribe.
        let calls_mid = loop {
            let v: Value = reqwest::get(format!("{base}/v1/calls"))
                .await
                .unwrap()
                .text()
                .await
                .map(|t| serde_json::from_str(&t).unwrap())
                .unwrap();
            if v["calls"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["seq"].as_u64().unwrap() >= 2)
            {
                break v;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let joiner = sse_collect(format!("{base}/v1/events")).await;
        let full = full.await.unwrap();
        // The streams ended (replay done); during --linger finished vCons stay readable.
        let mut fetched = Vec::new();
        for f in &full {
            let e: Value = serde_json::from_str(&f.data).unwrap();
            if e["kind"] == "finished" {
                let r = reqwest::get(format!("{base}/v1/vcons/{}", e["uuid"].as_str().unwrap()))
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                fetched.push((
                    e["vcon"].clone(),
                    serde_json::from_str::<Value>(&r.text().await.unwrap()).unwrap(),
                ));
            }
        }
        let missing = reqwest::get(format!(
            "{base}/v1/vcons/00000000-0000-8000-8000-000000000000"
        ))
        .await
        .unwrap();
        assert_eq!(missing.status(), 404);
        (
            full,
            delta.await.unwrap(),
            ws.await.unwrap(),
            joiner,
            curl.await.unwrap(),
            fetched,
            calls_mid,
        )
    });
    wait_exit(child, &out);
    let lines = events_lines(&out);
    assert!(lines.len() >= 20, "{} events", lines.len());
    let parsed: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    common::check_events(&parsed);

    // SSE: exactly the events file, in order, `id:` = uuid:seq.
    let data: Vec<&str> = full.iter().map(|f| f.data.as_str()).collect();
    assert_eq!(data, lines);
    for (f, e) in full.iter().zip(&parsed) {
        assert_eq!(
            f.id.as_deref().unwrap(),
            format!("{}:{}", e["uuid"].as_str().unwrap(), e["seq"])
        );
        assert!(f.event.is_none());
    }
    // WebSocket: the same JSON, one text message each.
    assert_eq!(ws, lines);
    // curl -N: the same `data:` lines.
    if let Ok(curl) = curl {
        let mut buf = curl;
        let mut frames = Vec::new();
        parse_frames(&mut buf, &mut frames);
        let d: Vec<&str> = frames.iter().map(|f| f.data.as_str()).collect();
        assert_eq!(d, lines);
    } else {
        eprintln!("skipped the curl client: curl not found");
    }

    // Deltas: patches applied client-side reproduce every snapshot.
    assert_eq!(delta.len(), lines.len());
    let mut docs: HashMap<String, Value> = HashMap::new();
    let mut patches = 0;
    for (f, e) in delta.iter().zip(&parsed) {
        let d: Value = serde_json::from_str(&f.data).unwrap();
        let uuid = d["uuid"].as_str().unwrap().to_string();
        assert_eq!(
            (&d["uuid"], &d["seq"], &d["kind"]),
            (&e["uuid"], &e["seq"], &e["kind"])
        );
        if let Some(p) = d.get("patch") {
            apply_patch(docs.get_mut(&uuid).unwrap(), p.as_array().unwrap());
            patches += 1;
        } else {
            docs.insert(uuid.clone(), d["vcon"].clone());
        }
        assert_eq!(
            docs[&uuid],
            e["vcon"],
            "snapshot {}",
            f.id.as_deref().unwrap()
        );
    }
    assert!(patches > 0, "no event was sent as a patch");

    // Mid-call join: first the current snapshot of every live call (the calls it had seen
    // past `created` start at their latest seq), then live events in order to `finished`.
    let mid_uuids: Vec<&str> = calls_mid["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["uuid"].as_str().unwrap())
        .collect();
    let mut first_seen: HashMap<String, u64> = HashMap::new();
    let mut last_kind: HashMap<String, String> = HashMap::new();
    for f in &joiner {
        assert!(
            lines.contains(&f.data),
            "joiner got an event not in the file"
        );
        let e: Value = serde_json::from_str(&f.data).unwrap();
        let uuid = e["uuid"].as_str().unwrap().to_string();
        let seq = e["seq"].as_u64().unwrap();
        if let Some(prev) = first_seen.get(&uuid) {
            assert!(seq > *prev);
        }
        first_seen.entry(uuid.clone()).or_insert(seq);
        last_kind.insert(uuid, e["kind"].as_str().unwrap().to_string());
    }
    for u in &mid_uuids {
        assert!(first_seen.contains_key(*u), "joiner missed live call {u}");
    }
    assert!(first_seen.values().any(|s| *s >= 2), "no snapshot at join");
    assert!(last_kind.values().all(|k| k == "finished"));

    // GET /v1/vcons/{uuid}: the final vCon, valid.
    assert_eq!(fetched.len(), 4);
    for (want, got) in &fetched {
        assert_eq!(want, got);
    }
    let got: Vec<Value> = fetched.into_iter().map(|(_, g)| g).collect();
    validate_all(&got, &out.with_extension("fetched"));
}

#[test]
fn auth_refusals_and_the_loopback_only_default() {
    let out = common::tmpdir("live-api-auth");
    // No token: a non-loopback address is a start-up error.
    let o = Command::new(env!("CARGO_BIN_EXE_vcontap"))
        .arg("replay")
        .arg(demo())
        .arg("--out")
        .arg(&out)
        .args(["--quiet", "--record", "none", "--listen", "0.0.0.0:0"])
        .arg("--spool")
        .arg(common::spool_for(&out))
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("not a loopback address"), "{err}");

    let tokens = out.with_extension("tokens");
    std::fs::write(&tokens, format!("# api tokens\n{TOKEN}\n")).unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let child = spawn_replay(
        &demo(),
        &out,
        &[
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--api-token-file",
            tokens.to_str().unwrap(),
            "--wait-subscribers",
            "1",
        ],
    );
    let rt = runtime();
    rt.block_on(async {
        wait_up(port).await;
        let c = reqwest::Client::new();
        let get = |path: &str, h: Option<(&str, String)>| {
            let mut r = c.get(format!("{base}{path}"));
            if let Some((k, v)) = h {
                r = r.header(k, v);
            }
            r.send()
        };
        for path in [
            "/v1/calls",
            "/v1/events",
            "/v1/vcons/x",
            "/vcon/egress?egress_list=a",
        ] {
            let r = get(path, None).await.unwrap();
            assert_eq!(r.status(), 401, "{path}");
            assert_eq!(r.headers()["www-authenticate"], "Bearer");
            let r = get(
                path,
                Some(("authorization", "Bearer wrong-token-0123456789".into())),
            )
            .await
            .unwrap();
            assert_eq!(r.status(), 403, "{path}");
            let r = get(path, Some(("x-conserver-api-token", TOKEN[1..].into())))
                .await
                .unwrap();
            assert_eq!(r.status(), 403, "{path}");
        }
        let r = get(
            "/v1/calls",
            Some(("authorization", format!("Bearer {TOKEN}"))),
        )
        .await
        .unwrap();
        assert_eq!(r.status(), 200);
        let r = get("/v1/calls", Some(("x-conserver-api-token", TOKEN.into())))
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        // Probes and metrics stay open.
        assert_eq!(get("/metrics", None).await.unwrap().status(), 200);
        // Refused requests never became subscribers: the replay is still waiting.
        assert!(!out.join("events.jsonl").exists() || events_lines(&out).is_empty());
        let evs = sse_collect(format!("{base}/v1/events?access_token={TOKEN}")).await;
        assert!(evs.len() >= 20);
    });
    wait_exit(child, &out);
}

#[test]
fn a_conserver_follower_pulls_every_finished_vcon() {
    let out = common::tmpdir("live-api-follower");
    let tokens = out.with_extension("tokens");
    std::fs::write(&tokens, format!("{TOKEN}\n")).unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut child = spawn_replay(
        &demo(),
        &out,
        &[
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--api-token-file",
            tokens.to_str().unwrap(),
            "--egress-list",
            "tap_out",
            "--linger",
            "60",
        ],
    );
    let rt = runtime();
    let ingress = rt.block_on(async {
        wait_up(port).await;
        let c = reqwest::Client::new();
        let unknown = c
            .get(format!("{base}/vcon/egress?egress_list=nope&limit=5"))
            .header("x-conserver-api-token", TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(unknown.status(), 404);
        // The conserver's follower: every pulling_interval, pop up to `limit` uuids from the
        // egress list, fetch each vCon, push it onto the follower ingress list.
        let mut ingress: Vec<Value> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while ingress.len() < 4 {
            assert!(Instant::now() < deadline, "follower got {}", ingress.len());
            let uuids: Vec<String> = c
                .get(format!("{base}/vcon/egress?egress_list=tap_out&limit=3"))
                .header("x-conserver-api-token", TOKEN)
                .send()
                .await
                .unwrap()
                .error_for_status()
                .unwrap()
                .text()
                .await
                .map(|t| serde_json::from_str(&t).unwrap())
                .unwrap();
            assert!(uuids.len() <= 3);
            for u in uuids {
                let v: Value = c
                    .get(format!("{base}/vcon/{u}"))
                    .header("x-conserver-api-token", TOKEN)
                    .send()
                    .await
                    .unwrap()
                    .error_for_status()
                    .unwrap()
                    .text()
                    .await
                    .map(|t| serde_json::from_str(&t).unwrap())
                    .unwrap();
                assert_eq!(v["uuid"], u.as_str());
                ingress.push(v);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Popped means gone.
        let rest: Vec<String> = c
            .get(format!("{base}/vcon/egress?egress_list=tap_out&limit=10"))
            .header("x-conserver-api-token", TOKEN)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .map(|t| serde_json::from_str(&t).unwrap())
            .unwrap();
        assert!(rest.is_empty());
        ingress
    });
    // Lingering on purpose (60 s): the follower is done, stop the replay we started.
    child.kill().unwrap();
    let _ = child.wait();
    let finals: HashMap<String, Value> = events_lines(&out)
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["kind"] == "finished")
        .map(|e| (e["uuid"].as_str().unwrap().to_string(), e["vcon"].clone()))
        .collect();
    assert_eq!(finals.len(), 4);
    assert_eq!(ingress.len(), 4);
    for v in &ingress {
        assert_eq!(&finals[v["uuid"].as_str().unwrap()], v);
    }
    validate_all(&ingress, &out.with_extension("pulled"));
}

#[test]
fn a_stalled_subscriber_gets_a_gap_and_does_not_hold_up_the_replay() {
    let out = common::tmpdir("live-api-stall");
    let pcap = out.with_extension("pcap");
    let o = Command::new(env!("CARGO_BIN_EXE_vcontap"))
        .args([
            "synth",
            "--calls",
            "600",
            "--concurrent",
            "150",
            "--seconds",
            "1",
        ])
        .args(["--hold", "--dtmf", "123", "--seed", "5", "--out"])
        .arg(&pcap)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let port = free_port();
    let child = spawn_replay(
        &pcap,
        &out,
        &[
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--wait-subscribers",
            "1",
            "--subscriber-queue",
            "64",
            "--linger",
            "60",
        ],
    );
    let rt = runtime();
    rt.block_on(wait_up(port));
    // Subscribes and never reads while the replay runs.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET /v1/events HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    // The whole capture goes through although nobody reads the stream.
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let n = std::fs::read_to_string(out.join("events.jsonl"))
            .map(|t| {
                t.lines()
                    .filter(|l| l.contains("\"kind\":\"finished\""))
                    .count()
            })
            .unwrap_or(0);
        if n == 600 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replay stuck at {n} finished calls"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Now read: early events, a `gap` saying what was lost, then the end of the stream.
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    while !got.ends_with(b"\r\n0\r\n\r\n") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "connection closed early");
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    let gap_at = text.find("event: gap\ndata: ").expect("no gap event");
    let gap_line = text[gap_at..].lines().nth(1).unwrap();
    let gap: Value = serde_json::from_str(gap_line.strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(gap["kind"], "gap");
    assert!(gap["lost"].as_u64().unwrap() > 0);
    assert!(text[gap_at..].contains("\"kind\":\"finished\""));
    let metrics = rt.block_on(async {
        reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    let gaps: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("vcontap_api_gaps_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(gaps >= 1);
    let mut child = child;
    child.kill().unwrap();
    let _ = child.wait();
    let _ = std::fs::remove_file(&pcap);
}

#[test]
fn tls_serves_the_event_stream_over_https() {
    let out = common::tmpdir("live-api-tls");
    let (cert, key) = (out.with_extension("crt"), out.with_extension("key"));
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=vcontap-test"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output();
    if !made.as_ref().is_ok_and(|o| o.status.success()) {
        eprintln!("skipped: openssl could not make a test certificate");
        return;
    }
    let port = free_port();
    let child = spawn_replay(
        &demo(),
        &out,
        &[
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
            "--wait-subscribers",
            "1",
        ],
    );
    let url = format!("https://127.0.0.1:{port}/v1/events");
    let deadline = Instant::now() + Duration::from_secs(60);
    let o = loop {
        let o = Command::new("curl")
            .args(["-sSN", "--max-time", "120", "--cacert"])
            .arg(&cert)
            .arg(&url)
            .output();
        let Ok(o) = o else {
            eprintln!("skipped: curl not found");
            let mut child = child;
            child.kill().unwrap();
            let _ = child.wait();
            return;
        };
        // Connection refused until the server is up.
        if o.status.success() || Instant::now() > deadline {
            break o;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    wait_exit(child, &out);
    let mut buf = String::from_utf8(o.stdout).unwrap();
    let mut frames = Vec::new();
    parse_frames(&mut buf, &mut frames);
    let d: Vec<&str> = frames.iter().map(|f| f.data.as_str()).collect();
    assert_eq!(d, events_lines(&out));
}

/// A conserver follower's pull: pops up to `limit` uuids from `list`.
async fn egress_pull(c: &reqwest::Client, base: &str, list: &str, limit: usize) -> Vec<String> {
    c.get(format!(
        "{base}/vcon/egress?egress_list={list}&limit={limit}"
    ))
    .header("x-conserver-api-token", TOKEN)
    .send()
    .await
    .unwrap()
    .error_for_status()
    .unwrap()
    .text()
    .await
    .map(|t| serde_json::from_str(&t).unwrap())
    .unwrap()
}

/// Pulls until `want` uuids arrived (60 s at most), then checks the list is empty.
async fn egress_drain(base: &str, want: usize) -> Vec<String> {
    let c = reqwest::Client::new();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.len() < want {
        assert!(Instant::now() < deadline, "follower got {got:?}");
        got.extend(egress_pull(&c, base, "tap_out", 3).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        egress_pull(&c, base, "tap_out", 100).await,
        Vec::<String>::new()
    );
    got
}

async fn metric(base: &str, name: &str) -> u64 {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
        .parse()
        .unwrap()
}

fn finished_uuids(out: &Path) -> Vec<String> {
    let mut v: Vec<String> = events_lines(out)
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["kind"] == "finished")
        .map(|e| e["uuid"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn egress_lists_survive_restarts_and_deliver_each_uuid_exactly_once() {
    let out = common::tmpdir("live-api-egress-restart");
    let tokens = out.with_extension("tokens");
    std::fs::write(&tokens, format!("{TOKEN}\n")).unwrap();
    let caps = Path::new(env!("CARGO_MANIFEST_DIR")).join("captures");
    let run = |capture: &str, port: u16, linger: &str| {
        spawn_replay(
            &caps.join(capture),
            &out,
            &[
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--api-token-file",
                tokens.to_str().unwrap(),
                "--egress-list",
                "tap_out",
                "--linger",
                linger,
            ],
        )
    };
    // Run 1 finishes 4 calls and exits before any follower pulled.
    wait_exit(run("demo.pcap", free_port(), "0"), &out);
    let first = finished_uuids(&out);
    assert_eq!(first.len(), 4);
    // The journal then loses its tail mid-write and gains garbage: start-up goes on.
    let journal = out.join("egress/tap_out.journal");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&journal)
        .unwrap();
    f.write_all(b"\x00\xffnot a record\n+019b76da-a800-cut")
        .unwrap();
    drop(f);

    // Run 2 (after the restart) offers run 1's uuids and its own, each once.
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let child = run("tcp-vlan-ipv6.pcap", port, "60");
    let rt = runtime();
    let (pulled, bad, recovered) = rt.block_on(async {
        wait_up(port).await;
        let pulled = egress_drain(&base, 8).await;
        (
            pulled,
            metric(&base, "vcontap_api_egress_bad_records_total").await,
            metric(&base, "vcontap_api_egress_recovered_total").await,
        )
    });
    kill(child);
    assert_eq!((bad, recovered), (2, 4));
    let log = std::fs::read_to_string(out.with_extension("log")).unwrap();
    assert!(log.contains("egress journal was damaged"), "{log}");
    let second = finished_uuids(&out);
    assert_eq!(second.len(), 4);
    let mut want: Vec<String> = first.iter().chain(&second).cloned().collect();
    want.sort();
    let mut got = pulled.clone();
    got.sort();
    assert_eq!(got, want, "every uuid of both runs, none twice");

    // Run 3 (killed run 2 had popped everything): only its own uuids come back.
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let child = run("opus.pcap", port, "60");
    let pulled = rt.block_on(async {
        wait_up(port).await;
        let pulled = egress_drain(&base, 2).await;
        assert_eq!(metric(&base, "vcontap_api_egress_recovered_total").await, 0);
        pulled
    });
    kill(child);
    let mut got = pulled;
    got.sort();
    assert_eq!(got, finished_uuids(&out));
}

fn kill(mut child: Child) {
    child.kill().unwrap();
    let _ = child.wait();
}

#[test]
fn live_snapshots_and_calls_carry_quality_so_far_before_finished() {
    let out = common::tmpdir("live-api-quality");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let child = spawn_replay(
        &demo(),
        &out,
        &[
            "--pace",
            "realtime",
            "--quality-interval",
            "1",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--wait-subscribers",
            "1",
        ],
    );
    let rt = runtime();
    let (frames, row) = rt.block_on(async {
        wait_up(port).await;
        let sse = tokio::spawn(sse_collect(format!("{base}/v1/events")));
        // Mid-call, `GET /v1/calls` shows a live call's streams and quality so far.
        let deadline = Instant::now() + Duration::from_secs(60);
        let row = loop {
            assert!(Instant::now() < deadline, "no live call showed quality");
            let v: Value = reqwest::get(format!("{base}/v1/calls"))
                .await
                .unwrap()
                .text()
                .await
                .map(|t| serde_json::from_str(&t).unwrap())
                .unwrap();
            let hit = v["calls"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["quality"]["streams"][0]["packets"].as_u64() > Some(0))
                .cloned();
            if let Some(c) = hit {
                break c;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        (sse.await.unwrap(), row)
    });
    wait_exit(child, &out);
    assert_eq!(row["streams"], 2, "{row}");
    assert_ne!(row["state"], "finished");
    assert!(
        row["quality"]["streams"][0]["jitter_ms"].is_number(),
        "{row}"
    );

    // The stream is the events file, and every answered call's quality showed (and moved)
    // in live snapshots before its `finished`.
    let lines = events_lines(&out);
    let data: Vec<&str> = frames.iter().map(|f| f.data.as_str()).collect();
    assert_eq!(data, lines.iter().map(String::as_str).collect::<Vec<_>>());
    let mut by_call: HashMap<String, Vec<(String, Option<u64>)>> = HashMap::new();
    for l in &lines {
        let e: Value = serde_json::from_str(l).unwrap();
        let packets = e["vcon"]["vcontap"]["rtp_quality"]["streams"]
            .as_array()
            .map(|s| s.iter().map(|x| x["packets"].as_u64().unwrap()).sum());
        by_call
            .entry(e["uuid"].as_str().unwrap().into())
            .or_default()
            .push((e["kind"].as_str().unwrap().into(), packets));
    }
    let mut answered = 0;
    for (uuid, evs) in &by_call {
        let (last, before) = evs.split_last().unwrap();
        assert_eq!(last.0, "finished", "{uuid}");
        let live: Vec<u64> = before.iter().filter_map(|(_, p)| *p).collect();
        if live.is_empty() {
            continue; // the busy call: no media
        }
        answered += 1;
        assert!(live.len() >= 2, "{uuid}: {evs:?}");
        assert!(live.windows(2).all(|w| w[1] >= w[0]), "{uuid}: {evs:?}");
        assert!(live.last() > live.first(), "quality moved: {uuid}: {evs:?}");
    }
    assert_eq!(answered, 3, "{by_call:?}");
    let finals: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["kind"] == "finished")
        .map(|e| e["vcon"].clone())
        .collect();
    validate_all(&finals, &out.with_extension("finals"));
}
