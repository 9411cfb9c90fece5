//! `cargo bench --bench sinks`: finished vCons per second through the spool into each store,
//! and the latency from spool commit to the store's acknowledgement (docs/PERFORMANCE.md).
//!
//! Measured on the real disk (the target directory, ext4 here), never tmpfs: the spool's
//! group commit and the file sink's batch `syncfs` are what is being measured. Stores that
//! are not reachable on loopback are skipped with a message. `VCONTAP_BENCH_N` sets the
//! number of vCons per run (default 30,000 for files, a third of that for network stores).

use std::sync::Arc;
use std::time::{Duration, Instant};

use vcontap_engine::{EventKind, VconEvent};
use vcontap_sinks::{Delivery, DeliveryConfig, NamedSink, SinkSpec};
use vcontap_wire::Timestamp;

fn vcon(n: usize, size: usize) -> Arc<VconEvent> {
    let uuid = format!("019b0000-0000-8000-8000-{n:012}");
    let head = format!(
        r#"{{"vcon":"0.4.0","uuid":"{uuid}","created_at":"2026-11-29T12:00:00.000Z","parties":[{{"tel":"+15551000{:03}","role":"caller"}},{{"tel":"+15552000{:03}","role":"callee"}}],"dialog":[],"attachments":[{{"purpose":"pad","encoding":"none","body":""#,
        n % 1000,
        (n / 7) % 1000
    );
    let pad = size.saturating_sub(head.len() + 4);
    let json = format!("{head}{}\"}}]}}", "x".repeat(pad));
    Arc::new(VconEvent {
        uuid: uuid.into(),
        seq: 3,
        kind: EventKind::Finished,
        at: Timestamp(1_764_417_600_000_000_000),
        reason: None,
        vcon_json: json.into(),
    })
}

fn reachable(addr: &str) -> bool {
    std::net::TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(1)).is_ok()
}

struct Row {
    store: String,
    size: usize,
    n: usize,
    secs: f64,
    p50: f64,
    p99: f64,
}

/// Submits `n` vCons, all at once (`rate` = None: throughput) or paced at `rate` per second
/// (latency: what a store adds between a call's end and its arrival when it keeps up).
fn run(
    store: &str,
    url: &str,
    size: usize,
    n: usize,
    rate: Option<u32>,
    dir: &std::path::Path,
) -> Row {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let spool = dir.join(format!("spool-{store}-{size}"));
    let _ = std::fs::remove_dir_all(&spool);
    let spec = SinkSpec::parse(url).unwrap();
    let name = spec.name.clone();
    let built = {
        let _g = rt.enter();
        vcontap_sinks::spec::build(spec).unwrap()
    };
    let del = Delivery::start(
        DeliveryConfig::new(&spool),
        vec![NamedSink { name, built }],
        rt.handle().clone(),
    )
    .unwrap();
    let events: Vec<_> = (0..n).map(|i| vcon(i, size)).collect();
    let metrics = del.metrics().clone();
    let t = Instant::now();
    for (i, e) in events.iter().enumerate() {
        if let Some(r) = rate {
            let due = t + Duration::from_secs_f64(i as f64 / f64::from(r));
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        del.submit(e).unwrap();
    }
    let report = del.finish(Duration::from_secs(600));
    let secs = t.elapsed().as_secs_f64();
    let s = &report.sinks[0];
    assert_eq!(s.delivered as usize, n, "{store}: {report:?}");
    cleanup(store, url, &rt);
    let lat = &metrics.sinks[0].latency;
    Row {
        store: store.into(),
        size,
        n,
        secs,
        p50: lat.quantile(0.5).unwrap_or(0.0),
        p99: lat.quantile(0.99).unwrap_or(0.0),
    }
}

/// Removes what a run left in a shared store (the services are the machine's).
fn cleanup(store: &str, url: &str, rt: &tokio::runtime::Runtime) {
    let q = url::Url::parse(url).unwrap();
    let opt = |k: &str| {
        q.query_pairs()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.to_string())
    };
    match store {
        "postgres" => {
            let _ = std::process::Command::new("psql")
                .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-qc"])
                .arg(format!("DROP TABLE IF EXISTS {}", opt("table").unwrap()))
                .output();
        }
        "nats" => {
            let _ = rt.block_on(vcontap_sinks::nats::delete_stream(
                "nats://127.0.0.1:4222",
                &opt("stream").unwrap(),
            ));
        }
        "redis" => {
            let _ = std::process::Command::new("redis-cli")
                .arg("DEL")
                .arg(opt("sorted_set").unwrap())
                .output();
        }
        _ => {}
    }
}

fn main() {
    let n_files: usize = std::env::var("VCONTAP_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30_000);
    let n_net = (n_files / 3).max(1);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/vcontap-bench/sinks");
    std::fs::create_dir_all(&root).unwrap();
    let tag = std::process::id();
    let mut rows = Vec::new();
    let stores = |tag: String, size: usize| -> Vec<(&'static str, String)> {
        let mut v = Vec::new();
        if reachable("127.0.0.1:6379") {
            v.push((
                "redis",
                format!(
                    "redis://127.0.0.1:6379/0?sorted_set=bench_{tag}_{size}&index=false&ttl=120"
                ),
            ));
        } else {
            eprintln!("skipped redis: not reachable on 127.0.0.1:6379");
        }
        if reachable("127.0.0.1:5432") {
            v.push((
                "postgres",
                format!(
                    "postgres://postgres@127.0.0.1/test?table=bench_{tag}_{size}&sslmode=disable"
                ),
            ));
        } else {
            eprintln!("skipped postgres: not reachable on 127.0.0.1:5432");
        }
        if reachable("127.0.0.1:4222") {
            v.push(("nats", format!("nats://127.0.0.1:4222?stream=BENCH_{tag}_{size}&subject=vcbench.{tag}.{size}.finished&events=false")));
        } else {
            eprintln!("skipped nats: not reachable on 127.0.0.1:4222");
        }
        v
    };
    // Earlier runs' files are removed first and the new ones only at the end: ext4 slows
    // down creating inodes right after mass deletion (`recently_deleted`), which would
    // measure the bench's own clean-up.
    for size in [1_000, 10_000, 50_000] {
        let _ = std::fs::remove_dir_all(root.join(format!("files-{size}")));
    }
    std::thread::sleep(Duration::from_secs(2));
    for size in [1_000, 10_000, 50_000] {
        let out = root.join(format!("files-{size}"));
        // VCONTAP_BENCH_FILE_OPTS (e.g. `fsync=false`) is appended to the file sink's URL.
        let opts = std::env::var("VCONTAP_BENCH_FILE_OPTS").unwrap_or_default();
        let url = format!("file://{}?{opts}", out.display());
        rows.push(run(
            "file",
            url.trim_end_matches('?'),
            size,
            n_files,
            None,
            &root,
        ));
        if std::env::var_os("VCONTAP_BENCH_FILES_ONLY").is_some() {
            continue;
        }
        for (store, url) in stores(tag.to_string(), size) {
            rows.push(run(store, &url, size, n_net, None, &root));
        }
    }
    print_rows("Throughput (all vCons submitted at once)", &rows);
    if std::env::var_os("VCONTAP_BENCH_FILES_ONLY").is_some() {
        return;
    }
    // Added latency at a rate every store keeps up with: 500 vCons/s of 10 KB for 6 s.
    let mut lat = Vec::new();
    let out = root.join("files-paced");
    let _ = std::fs::remove_dir_all(&out);
    lat.push(run(
        "file",
        &format!("file://{}", out.display()),
        10_000,
        3000,
        Some(500),
        &root,
    ));
    let _ = std::fs::remove_dir_all(&out);
    for (store, url) in stores(format!("{tag}p"), 10_000) {
        lat.push(run(store, &url, 10_000, 3000, Some(500), &root));
    }
    print_rows(
        "Latency, spool commit to store acknowledgement (500 vCons/s of 10 KB)",
        &lat,
    );
}

fn print_rows(title: &str, rows: &[Row]) {
    println!("\n{title}\n");
    println!("| store | vCon size | vCons | seconds | vCons/s | MB/s | latency p50 | p99 |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {} KB | {} | {:.2} | {:.0} | {:.1} | ≤{} ms | ≤{} ms |",
            r.store,
            r.size / 1000,
            r.n,
            r.secs,
            r.n as f64 / r.secs,
            (r.n * r.size) as f64 / r.secs / 1e6,
            r.p50 * 1000.0,
            r.p99 * 1000.0
        );
    }
}
