//! The `s3://` sink and the S3 media store against a real S3-compatible server: moto's
//! server (`pip install 'moto[server]'`), started per test on a free loopback port.
//! Skipped with a printed notice only when python3 or moto is not installed.
#![cfg(feature = "s3")]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use vcontap_engine::SegmentId;
use vcontap_pipeline::{MediaStore, SegmentMeta};
use vcontap_sinks::s3::{stored_uuids, S3Media, S3View};
use vcontap_sinks::spec::build;
use vcontap_sinks::{Outcome, Record, RecordId, SinkSpec};

/// A moto server process, killed on drop.
struct Moto {
    child: Child,
    endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts moto, or returns None (with a notice) when python3/moto are not installed.
fn moto() -> Option<Moto> {
    moto_with(false)
}

/// Starts moto, over HTTPS (an ad-hoc self-signed certificate) when `tls`.
fn moto_with(tls: bool) -> Option<Moto> {
    let probe = Command::new("python3")
        .args(["-c", "import moto.server, flask"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !matches!(probe, Ok(s) if s.success()) {
        println!("SKIP: python3 with moto's server is not installed (pip install 'moto[server]')");
        eprintln!("SKIP: python3 with moto's server is not installed (pip install 'moto[server]')");
        return None;
    }
    let port = free_port();
    let port_s = port.to_string();
    let mut args = vec!["-m", "moto.server", "-H", "127.0.0.1", "-p", &port_s];
    if tls {
        args.push("--ssl");
    }
    let child = Command::new("python3")
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting moto");
    let m = Moto {
        child,
        endpoint: format!("{}://127.0.0.1:{port}", if tls { "https" } else { "http" }),
    };
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "moto did not listen on {port} within 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(m)
}

fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// Creates a bucket (moto accepts an unsigned PUT).
async fn make_bucket(m: &Moto, bucket: &str) {
    let r = http()
        .put(format!("{}/{bucket}", m.endpoint))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "create bucket: {}", r.status());
}

fn url(m: &Moto, bucket: &str, prefix: &str, extra: &str) -> String {
    format!(
        "s3://{bucket}/{prefix}?endpoint={}&region=us-east-1&access_key=test&secret_key=test{extra}",
        m.endpoint
    )
}

fn rec(id: u64, uuid: &str, created: &str, pad: usize) -> Arc<Record> {
    Arc::new(Record {
        id: RecordId(id),
        uuid: uuid.into(),
        json: Bytes::from(format!(
            r#"{{"vcon":"0.4.0","uuid":"{uuid}","created_at":"{created}","parties":[],"dialog":[],"subject":"{}"}}"#,
            "x".repeat(pad)
        )),
        spooled_unix_ms: 0,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vcons_dated_keys_overwrite_and_lookup_pointer() {
    let Some(m) = moto() else { return };
    make_bucket(&m, "vcons").await;
    let u = url(&m, "vcons", "tap/one", "&lookup=true");
    let sink_url = u.as_str();
    let mut built = build(SinkSpec::parse(sink_url).unwrap()).unwrap();
    let sink = built.sink.as_mut().unwrap();
    let a = "018f0000-0000-8000-8000-00000000000a";
    let b = "018f0000-0000-8000-8000-00000000000b";
    let batch = vec![
        rec(1, a, "2026-11-29T23:59:59.999Z", 0),
        rec(2, b, "2026-11-29T23:30:00-02:00", 0), // UTC day: 2026-11-30
        rec(3, "../../etc/passwd", "2026-11-29T00:00:00Z", 0),
        rec(4, a, "2026-11-29T23:59:59.999Z", 5), // a later version of `a`
        rec(5, "018f0000-0000-8000-8000-00000000000c", "yesterday", 0),
    ];
    let out = sink.deliver(&batch).await.unwrap();
    assert_eq!(out.len(), 5);
    assert_eq!(out[0], Outcome::Delivered);
    assert_eq!(out[1], Outcome::Delivered);
    assert!(matches!(&out[2], Outcome::Rejected(r) if r.contains("not an RFC 4122 uuid")));
    assert_eq!(out[3], Outcome::Delivered);
    assert!(matches!(&out[4], Outcome::Rejected(r) if r.contains("not RFC 3339")));
    // Re-delivery (at-least-once) overwrites: still one object per uuid.
    let out = sink.deliver(&batch[3..4]).await.unwrap();
    assert_eq!(out, vec![Outcome::Delivered]);

    let view = S3View::from_url(sink_url).unwrap();
    let ka = format!("tap/one/2026/11/29/{a}.vcon.json");
    let kb = format!("tap/one/2026/11/30/{b}.vcon.json");
    let mut want = vec![
        ka.clone(),
        kb.clone(),
        format!("tap/one/lookup/{a}.txt"),
        format!("tap/one/lookup/{b}.txt"),
    ];
    want.sort();
    assert_eq!(view.keys("").await.unwrap(), want);
    // The exact spooled bytes of the last version, with the vCon media type.
    assert_eq!(view.get(&ka).await.unwrap(), batch[3].json);
    assert_eq!(view.get(&kb).await.unwrap(), batch[1].json);
    assert_eq!(
        view.content_type(&ka).await.unwrap().as_deref(),
        Some("application/vcon+json")
    );
    // The conserver's pointer: the date path its `get` joins with the uuid.
    assert_eq!(
        &view.get(&format!("tap/one/lookup/{a}.txt")).await.unwrap()[..],
        b"2026/11/29"
    );
    assert_eq!(
        &view.get(&format!("tap/one/lookup/{b}.txt")).await.unwrap()[..],
        b"2026/11/30"
    );
    assert_eq!(
        stored_uuids(sink_url).await.unwrap(),
        vec![a.to_string(), b.to_string()]
    );
    assert_eq!(view.get_vcon(b).await.unwrap(), Some(batch[1].json.clone()));
    assert_eq!(
        view.get_vcon("018f0000-0000-8000-8000-0000000000ff")
            .await
            .unwrap(),
        None
    );

    // Without lookup and with the conserver's `.vcon` extension, at the bucket root.
    let root = url(&m, "vcons", "", "&extension=vcon");
    let mut built = build(SinkSpec::parse(&root).unwrap()).unwrap();
    let out = built
        .sink
        .as_mut()
        .unwrap()
        .deliver(&batch[1..2])
        .await
        .unwrap();
    assert_eq!(out, vec![Outcome::Delivered]);
    let keys = S3View::from_url(&root).unwrap().keys("2026").await.unwrap();
    assert_eq!(keys, vec![format!("2026/11/30/{b}.vcon")]);
}

/// HTTPS goes through rustls with the ring provider (no aws-lc): a self-signed server is
/// refused (a certificate error, not a panic for a missing provider), and accepted with
/// `insecure_tls=true`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_endpoint_through_rustls_ring() {
    let Some(m) = moto_with(true) else { return };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let lax_http = reqwest::Client::builder()
        .tls_danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    // The port opens before the ad-hoc certificate is ready: retry until TLS answers.
    let t = Instant::now();
    loop {
        match lax_http
            .put(format!("{}/tls-bucket", m.endpoint))
            .send()
            .await
        {
            Ok(r) => {
                assert!(r.status().is_success(), "create bucket: {}", r.status());
                break;
            }
            Err(e) => assert!(t.elapsed() < Duration::from_secs(30), "moto --ssl: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let batch = vec![rec(
        1,
        "018f0000-0000-8000-8000-0000000000cc",
        "2026-01-02T03:04:05Z",
        0,
    )];
    let strict = url(&m, "tls-bucket", "t", "");
    let mut built = build(SinkSpec::parse(&strict).unwrap()).unwrap();
    let err = built
        .sink
        .as_mut()
        .unwrap()
        .deliver(&batch)
        .await
        .unwrap_err();
    assert!(err.0.contains("PUT t/2026/01/02/"), "{err}");
    let lax = url(&m, "tls-bucket", "t", "&insecure_tls=true");
    let mut built = build(SinkSpec::parse(&lax).unwrap()).unwrap();
    let out = built.sink.as_mut().unwrap().deliver(&batch).await.unwrap();
    assert_eq!(out, vec![Outcome::Delivered]);
    assert_eq!(
        stored_uuids(&lax).await.unwrap(),
        vec!["018f0000-0000-8000-8000-0000000000cc".to_string()]
    );
}

fn wav_samples(frames: usize) -> Vec<i16> {
    (0..frames * 2)
        .map(|i| ((i as f64 * 0.05).sin() * 8000.0) as i16)
        .collect()
}

/// Writes one segment through the store (on this plain thread, as the pipeline's writer
/// and hasher threads do) and completes it.
fn record_segment(
    store: &dyn MediaStore,
    uuid: &str,
    index: u32,
    samples: &[i16],
) -> std::io::Result<vcontap_engine::StoredSegment> {
    let meta = SegmentMeta {
        segment: SegmentId(u64::from(index) + 1),
        uuid: uuid.into(),
        index,
        rate: 8000,
        channels: 2,
    };
    let mut w = store.open(&meta)?;
    for chunk in samples.chunks(1600) {
        w.write(chunk)?;
    }
    w.finish()?.complete()
}

#[test]
fn media_upload_presigned_public_and_multipart() {
    let Some(m) = moto() else { return };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(make_bucket(&m, "media"));
    let spill = tempfile::tempdir().unwrap();
    let uuid = "018f0000-0000-8000-8000-0000000000aa";

    // Presigned URL (the default), local copy removed after the upload.
    let s = S3Media::from_url(
        &url(&m, "media", "rec", "&presign_seconds=3600"),
        spill.path(),
        rt.handle().clone(),
    )
    .unwrap();
    let samples = wav_samples(8000 * 3);
    let st = record_segment(&s, uuid, 0, &samples).unwrap();
    assert_eq!(st.filename, format!("{uuid}-000.wav"));
    assert_eq!(st.mediatype, "audio/x-wav");
    assert!(
        st.url
            .starts_with(&format!("{}/media/rec/media/{uuid}-000.wav?", m.endpoint)),
        "{}",
        st.url
    );
    assert!(st.url.contains("X-Amz-Signature=") && st.url.contains("X-Amz-Expires=3600"));
    assert!(
        !spill.path().join(&st.filename).exists(),
        "spill file removed"
    );
    let body = rt.block_on(async {
        let r = http().get(&st.url).send().await.unwrap();
        assert!(r.status().is_success(), "GET presigned: {}", r.status());
        r.bytes().await.unwrap()
    });
    assert_eq!(body.len(), 44 + samples.len() * 2);
    assert_eq!(&body[..4], b"RIFF");
    assert_eq!(vcontap_vcon::content_hash(&body), st.content_hash);
    let view = S3View::from_url(&url(&m, "media", "rec", "")).unwrap();
    let key = format!("rec/media/{uuid}-000.wav");
    assert_eq!(
        rt.block_on(view.content_type(&key)).unwrap().as_deref(),
        Some("audio/x-wav")
    );

    // Public base URL, keeping the local copy.
    let s = S3Media::from_url(
        &url(
            &m,
            "media",
            "rec",
            "&public_base_url=https://cdn.example/r/&keep_local=true",
        ),
        spill.path(),
        rt.handle().clone(),
    )
    .unwrap();
    let st = record_segment(&s, uuid, 1, &samples[..800]).unwrap();
    assert_eq!(
        st.url,
        format!("https://cdn.example/r/rec/media/{uuid}-001.wav")
    );
    let local = std::fs::read(spill.path().join(&st.filename)).unwrap();
    let remote = rt
        .block_on(view.get(&format!("rec/media/{uuid}-001.wav")))
        .unwrap();
    assert_eq!(&remote[..], &local[..]);
    assert_eq!(vcontap_vcon::content_hash(&remote), st.content_hash);

    // A multipart upload (threshold lowered): 11 MiB in 5 MiB parts.
    let s = S3Media::from_url(
        &url(&m, "media", "rec", "&presign_seconds=0"),
        spill.path(),
        rt.handle().clone(),
    )
    .unwrap()
    .with_multipart(1 << 20, 5 << 20);
    let big = wav_samples(11 * (1 << 20) / 4);
    let st = record_segment(&s, uuid, 2, &big).unwrap();
    assert_eq!(st.url, format!("s3://media/rec/media/{uuid}-002.wav"));
    let remote = rt
        .block_on(view.get(&format!("rec/media/{uuid}-002.wav")))
        .unwrap();
    assert_eq!(remote.len(), 44 + big.len() * 2);
    assert_eq!(vcontap_vcon::content_hash(&remote), st.content_hash);
    assert_eq!(
        rt.block_on(view.keys("media")).unwrap(),
        (0..3)
            .map(|i| format!("rec/media/{uuid}-{i:03}.wav"))
            .collect::<Vec<_>>()
    );
}

#[test]
fn dead_endpoint_is_a_transient_error_and_media_falls_back() {
    // Nothing listens on this port: no moto needed.
    let port = free_port();
    let dead = format!(
        "s3://bkt/p?endpoint=http://127.0.0.1:{port}&access_key=k&secret_key=s&timeout_ms=2000"
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut built = build(SinkSpec::parse(&dead).unwrap()).unwrap();
    let batch = vec![rec(
        1,
        "018f0000-0000-8000-8000-000000000001",
        "2026-01-01T00:00:00Z",
        0,
    )];
    let t = Instant::now();
    let err = rt
        .block_on(built.sink.as_mut().unwrap().deliver(&batch))
        .unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert!(err.0.contains("PUT p/2026/01/01/"), "{err}");
    assert!(rt.block_on(stored_uuids(&dead)).is_err());

    let spill = tempfile::tempdir().unwrap();
    let uuid = "018f0000-0000-8000-8000-0000000000bb";
    // Default: keep the local file and point the vCon at it, same hash.
    let s = S3Media::from_url(
        &format!("{dead}&retries=1"),
        spill.path(),
        rt.handle().clone(),
    )
    .unwrap();
    let st = record_segment(&s, uuid, 0, &wav_samples(800)).unwrap();
    let path = spill.path().canonicalize().unwrap().join(&st.filename);
    assert_eq!(st.url, format!("file://{}", path.display()));
    let local = std::fs::read(&path).unwrap();
    assert_eq!(vcontap_vcon::content_hash(&local), st.content_hash);
    // on_failure=fail: the segment fails (left out of the vCon), the file stays.
    let s = S3Media::from_url(
        &format!("{dead}&retries=0&on_failure=fail"),
        spill.path(),
        rt.handle().clone(),
    )
    .unwrap();
    let err = record_segment(&s, uuid, 1, &wav_samples(800)).unwrap_err();
    assert!(err.to_string().contains("kept at"), "{err}");
    assert!(spill.path().join(format!("{uuid}-001.wav")).exists());
}

#[test]
fn config_errors_without_io() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let base = "s3://b1b/p?access_key=k&secret_key=s";
    for (opt, needle) in [
        ("&presign_seconds=604801", "presign_seconds"),
        ("&on_failure=retry", "on_failure"),
        ("&public_base_url=ftp://x", "public_base_url"),
        ("&lookup=true", "lookup"), // a sink option, not a media one
    ] {
        let e = S3Media::from_url(&format!("{base}{opt}"), dir.path(), rt.handle().clone())
            .unwrap_err()
            .to_string();
        assert!(e.contains(needle), "{opt}: {e}");
    }
    let e = build(SinkSpec::parse(&format!("{base}&presign_seconds=1")).unwrap())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("presign_seconds") && e.contains("lookup"), "{e}");
}

/// Throughput: 2000 vCons of ~8 KB, in batches of `max_batch`. Run with
/// `cargo test -p vcontap-sinks --test s3 -- --ignored --nocapture throughput`
/// (`VCONTAP_S3_BENCH_OPTS=&concurrency=4` appends sink options).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn throughput_2000_vcons_of_8k() {
    let Some(m) = moto() else { return };
    make_bucket(&m, "bench").await;
    let u = url(
        &m,
        "bench",
        "tp",
        &std::env::var("VCONTAP_S3_BENCH_OPTS").unwrap_or_default(),
    );
    let mut built = build(SinkSpec::parse(&u).unwrap()).unwrap();
    let sink = built.sink.as_mut().unwrap();
    let recs: Vec<Arc<Record>> = (0..2000u64)
        .map(|i| {
            rec(
                i,
                &format!("018f0000-0000-8000-8000-{i:012x}"),
                "2026-11-29T12:00:00Z",
                8000,
            )
        })
        .collect();
    let t = Instant::now();
    for chunk in recs.chunks(sink.max_batch()) {
        let out = sink.deliver(chunk).await.unwrap();
        assert!(out.iter().all(|o| *o == Outcome::Delivered));
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "s3 sink (moto): 2000 vCons of {} B in {secs:.2} s = {:.0} vCons/s",
        recs[0].json.len(),
        2000.0 / secs
    );
    assert_eq!(stored_uuids(&u).await.unwrap().len(), 2000);
}
