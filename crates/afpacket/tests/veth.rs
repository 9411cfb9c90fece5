//! Live capture on real kernel traffic: every test makes two network namespaces joined by a
//! veth pair (deleted by a guard, also on failure), writes frames into one end with an
//! AF_PACKET send socket opened inside the first namespace, and captures on the other end
//! with rings opened inside the second. Needs root (CAP_NET_ADMIN for `ip`, CAP_SYS_ADMIN
//! for setns, CAP_NET_RAW for the sockets); without it each test says so and returns.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use vcontap_afpacket::{Capture, Filter, Injector, Layout, RingConfig};
use vcontap_engine::{EngineConfig, EventKind, RecordMode};
use vcontap_pipeline::{PacketSource, Poll, Tap, TapConfig};
use vcontap_wire::{LinkType, PcapReader, RawPacket, Timestamp};

const SRC_MAC: [u8; 6] = [0x02, 0x76, 0x63, 0, 0, 1];
const DST_MAC: [u8; 6] = [0x02, 0x76, 0x63, 0, 0, 2];

static SEQ: AtomicU32 = AtomicU32::new(0);

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Two namespaces and a veth pair between them; deleted on drop.
struct Veth {
    ns_a: String,
    ns_b: String,
    if_a: String,
    if_b: String,
}

impl Veth {
    /// `None` (with a message) when this machine does not let us make namespaces.
    fn new() -> Option<Veth> {
        let id = format!(
            "{}{}",
            std::process::id() % 100_000,
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let v = Veth {
            ns_a: format!("vct-{id}-a"),
            ns_b: format!("vct-{id}-b"),
            if_a: format!("vca{id}"),
            if_b: format!("vcb{id}"),
        };
        if let Err(e) = ip(&["netns", "add", &v.ns_a]) {
            eprintln!("SKIP: cannot create a network namespace (root needed): {e}");
            return None;
        }
        ip(&["netns", "add", &v.ns_b]).unwrap();
        for ns in [&v.ns_a, &v.ns_b] {
            // No IPv6 router solicitations or MLD reports on the link: only our frames.
            let ok = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    ns,
                    "sysctl",
                    "-qw",
                    "net.ipv6.conf.all.disable_ipv6=1",
                    "net.ipv6.conf.default.disable_ipv6=1",
                ])
                .status()
                .unwrap()
                .success();
            assert!(ok, "sysctl in {ns}");
        }
        ip(&[
            "link", "add", &v.if_a, "netns", &v.ns_a, "type", "veth", "peer", "name", &v.if_b,
            "netns", &v.ns_b,
        ])
        .unwrap();
        ip(&["-n", &v.ns_a, "link", "set", &v.if_a, "up"]).unwrap();
        ip(&["-n", &v.ns_b, "link", "set", &v.if_b, "up"]).unwrap();
        Some(v)
    }

    fn path(ns: &str) -> PathBuf {
        PathBuf::from(format!("/run/netns/{ns}"))
    }

    /// A ring configuration on the capture end (small ring, short block timeout).
    fn ring(&self) -> RingConfig {
        let mut c = RingConfig::new(&self.if_b);
        c.netns = Some(Self::path(&self.ns_b));
        c.block_size = 1 << 20;
        c.block_count = 8;
        c.block_timeout_ms = 10;
        c
    }

    fn injector(&self) -> Injector {
        Injector::open(&self.if_a, Some(Self::path(&self.ns_a))).unwrap()
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth end inside it, and with it the pair.
        let _ = ip(&["netns", "del", &self.ns_a]);
        let _ = ip(&["netns", "del", &self.ns_b]);
    }
}

/// Ethernet (optionally tagged, outer TPID first) / IPv4 / UDP frame carrying `seq`.
fn frame(
    tags: &[(u16, u16)],
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    seq: u32,
    pad: usize,
) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&DST_MAC);
    f.extend_from_slice(&SRC_MAC);
    for (tpid, tci) in tags {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&tci.to_be_bytes());
    }
    let payload_len = 4 + pad;
    let total = (20 + 8 + payload_len) as u16;
    f.extend_from_slice(&[0x08, 0x00, 0x45, 0]);
    f.extend_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&((8 + payload_len) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(&seq.to_be_bytes());
    f.extend((0..pad).map(|i| (i as u8) ^ (seq as u8)));
    f
}

fn send_all(inj: &Injector, frames: &[Vec<u8>]) {
    for f in frames {
        while !inj.send(f).unwrap() {
            std::thread::sleep(Duration::from_micros(100));
        }
    }
}

struct Got {
    ts: Timestamp,
    link: LinkType,
    data: Vec<u8>,
    orig_len: u32,
}

/// Polls `cap` until `want` frames matched `keep` or `limit` passed.
fn collect(
    cap: &mut Capture,
    want: usize,
    limit: Duration,
    keep: impl Fn(&RawPacket<'_>) -> bool,
) -> Vec<Got> {
    let mut got = Vec::new();
    let deadline = Instant::now() + limit;
    while got.len() < want && Instant::now() < deadline {
        let r = cap
            .poll(256, |p| {
                if keep(p) {
                    got.push(Got {
                        ts: p.ts,
                        link: p.link,
                        data: p.data.to_vec(),
                        orig_len: p.orig_len,
                    });
                }
                Ok(())
            })
            .unwrap();
        if r == Poll::Idle {
            cap.wait(Duration::from_millis(50)).unwrap();
        }
    }
    got
}

fn ours(p: &RawPacket<'_>) -> bool {
    p.data.get(6..12) == Some(&SRC_MAC[..])
}

fn seq_of(eth_frame: &[u8], l2: usize) -> u32 {
    let off = l2 + 20 + 8;
    u32::from_be_bytes(eth_frame[off..off + 4].try_into().unwrap())
}

#[test]
fn frames_arrive_intact_with_kernel_timestamps_and_stats() {
    let Some(v) = Veth::new() else { return };
    let mut cap = Capture::open(&[v.ring()]).unwrap();
    let inj = v.injector();
    let frames: Vec<Vec<u8>> = (0..1000u32)
        .map(|i| {
            frame(
                &[],
                [10, 77, 0, 1],
                [10, 77, 0, 2],
                40000,
                5060,
                i,
                (i as usize * 37) % 1400,
            )
        })
        .collect();
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    send_all(&inj, &frames);
    let got = collect(&mut cap, frames.len(), Duration::from_secs(10), ours);
    assert_eq!(got.len(), frames.len(), "every frame captured");
    for (i, (g, f)) in got.iter().zip(&frames).enumerate() {
        assert_eq!(g.link, LinkType::ETHERNET);
        assert_eq!(&g.data, f, "frame {i} bytes");
        assert_eq!(g.orig_len as usize, f.len());
        assert!(
            g.ts.nanos() >= before - 1_000_000_000,
            "kernel timestamp is now-ish"
        );
        assert!(g.ts.nanos() < before + 60_000_000_000);
    }
    for w in got.windows(2) {
        assert!(w[1].ts >= w[0].ts, "timestamps never go back");
    }
    assert!(
        got.last().unwrap().ts > got.first().unwrap().ts,
        "timestamps increase"
    );
    let st = cap.stats().unwrap();
    assert_eq!(st.len(), 1);
    assert!(
        st[0].kernel_packets >= 1000,
        "tp_packets counts the frames: {st:?}"
    );
    assert_eq!(st[0].kernel_drops, 0);
    assert_eq!(
        st[0].frames, st[0].kernel_packets,
        "every offered frame was handed out: {st:?}"
    );
    assert_eq!(st[0].blocks, 8);
    // Counters accumulate across reads (the kernel resets its own on every read).
    let again = cap.stats().unwrap();
    assert_eq!(again[0].kernel_packets, st[0].kernel_packets);
}

#[test]
fn vlan_tags_stripped_by_the_kernel_are_restored() {
    let Some(v) = Veth::new() else { return };
    let mut cap = Capture::open(&[v.ring()]).unwrap();
    let inj = v.injector();
    let mut frames = Vec::new();
    for i in 0..50u32 {
        // 802.1Q, priority 5, VLAN 100.
        frames.push(frame(
            &[(0x8100, (5 << 13) | 100)],
            [10, 77, 0, 1],
            [10, 77, 0, 2],
            5060,
            5060,
            i,
            100,
        ));
        // QinQ: outer 802.1ad 200 (stripped, TPID kept), inner 802.1Q 300 (left in place).
        frames.push(frame(
            &[(0x88a8, 200), (0x8100, 300)],
            [10, 77, 0, 1],
            [10, 77, 0, 2],
            5060,
            5060,
            1000 + i,
            100,
        ));
        frames.push(frame(
            &[],
            [10, 77, 0, 1],
            [10, 77, 0, 2],
            5060,
            5060,
            2000 + i,
            100,
        ));
    }
    send_all(&inj, &frames);
    let got = collect(&mut cap, frames.len(), Duration::from_secs(10), ours);
    assert_eq!(got.len(), frames.len());
    for (g, f) in got.iter().zip(&frames) {
        assert_eq!(&g.data, f, "tag restored byte for byte");
        assert_eq!(g.orig_len as usize, f.len());
    }
    let st = cap.stats().unwrap();
    assert_eq!(st[0].vlan_restored, 100, "{st:?}");
    // The filter sees the restored tags.
    let mut cfg = v.ring();
    cfg.filter = Filter::parse("vlan 100 or vlan 300").unwrap();
    let mut cap = Capture::open(&[cfg]).unwrap();
    send_all(&inj, &frames);
    let got = collect(&mut cap, 100, Duration::from_secs(10), ours);
    assert_eq!(got.len(), 100);
    std::thread::sleep(Duration::from_millis(50));
    let _ = collect(&mut cap, 1, Duration::from_millis(100), ours);
    assert_eq!(
        cap.stats().unwrap()[0].filtered,
        50,
        "the untagged third is filtered out"
    );
}

#[test]
fn any_device_gives_sll2_with_the_vlan_tag() {
    let Some(v) = Veth::new() else { return };
    let mut cfg = v.ring();
    cfg.interface = "any".into();
    cfg.promiscuous = false;
    let mut cap = Capture::open(&[cfg]).unwrap();
    let inj = v.injector();
    let frames = vec![
        frame(&[], [10, 77, 0, 1], [10, 77, 0, 2], 5060, 5060, 1, 10),
        frame(
            &[(0x8100, 42)],
            [10, 77, 0, 1],
            [10, 77, 0, 2],
            5060,
            5060,
            2,
            10,
        ),
    ];
    send_all(&inj, &frames);
    // SLL2 address field holds the source MAC (halen 6) at offset 12.
    let got = collect(&mut cap, 2, Duration::from_secs(10), |p| {
        p.data.get(12..18) == Some(&SRC_MAC[..])
    });
    assert_eq!(got.len(), 2);
    for (g, f) in got.iter().zip(&frames) {
        assert_eq!(g.link, LinkType::LINUX_SLL2);
        assert_ne!(&g.data[4..8], &[0, 0, 0, 0], "ifindex filled");
        assert_eq!(&g.data[8..10], &[0, 1], "ARPHRD_ETHER");
        assert_eq!(g.data[11], 6, "halen");
        // Protocol (or TPID) then everything after the MACs.
        assert_eq!(&g.data[0..2], &f[12..14]);
        assert_eq!(&g.data[20..], &f[14..]);
    }
    // The wire decoder reads the restored tag.
    assert_eq!(&got[1].data[20..22], &42u16.to_be_bytes());
}

/// `Layout::Frames` (TPACKET_V2): each frame is handed over on its own, long before the
/// block timeout (set to 1 s here, which a V3 ring would wait out for a lone frame), with
/// the same bytes, VLAN restore and stats as the block ring; a frame longer than the slot
/// is cut and counted, and the `any` device still gets SLL2.
#[test]
fn frame_ring_hands_over_each_frame_at_once() {
    let Some(v) = Veth::new() else { return };
    let mut cfg = v.ring();
    cfg.layout = Layout::Frames;
    cfg.block_size = 64 << 10;
    cfg.block_count = 16;
    cfg.frame_size = 1024;
    cfg.block_timeout_ms = 1000;
    let mut cap = Capture::open(&[cfg.clone()]).unwrap();
    let st = cap.stats().unwrap()[0];
    assert_eq!(st.blocks, 16 * 64, "slots are frames: {st:?}");
    let inj = v.injector();

    // A lone frame is ready at once, not after the 1 s block timeout.
    let lone = frame(&[], [10, 77, 0, 1], [10, 77, 0, 2], 40000, 5060, 0, 100);
    let sent = Instant::now();
    send_all(&inj, std::slice::from_ref(&lone));
    let got = collect(&mut cap, 1, Duration::from_millis(500), ours);
    assert_eq!(got.len(), 1, "handed over before the block timeout");
    assert!(sent.elapsed() < Duration::from_millis(900));
    assert_eq!(got[0].data, lone);

    // Sizes up to the slot, VLAN tags restored, one frame cut at the slot size.
    let frames: Vec<Vec<u8>> = (1..400u32)
        .map(|i| {
            let tags: &[(u16, u16)] = if i % 3 == 0 { &[(0x8100, 100)] } else { &[] };
            frame(
                tags,
                [10, 77, 0, 1],
                [10, 77, 0, 2],
                40000,
                5060,
                i,
                (i as usize * 37) % 1400,
            )
        })
        .collect();
    send_all(&inj, &frames);
    let got = collect(&mut cap, frames.len(), Duration::from_secs(10), ours);
    assert_eq!(got.len(), frames.len());
    // A frame longer than what the slot holds after the V2 header (at most
    // FRAME_OVERHEAD bytes of it; the kernel aligns the network header) is cut to the
    // same length as every other cut frame; a stripped tag takes no room in the slot.
    let room = got
        .iter()
        .zip(&frames)
        .enumerate()
        .filter(|(_, (g, f))| g.data.len() < f.len())
        .map(|(i, (g, _))| g.data.len() - if i % 3 == 2 { 4 } else { 0 })
        .min()
        .expect("some frame was cut");
    assert!(room >= 1024 - 80, "the slot holds {room} bytes");
    let mut cut = 0;
    for (i, (g, f)) in got.iter().zip(&frames).enumerate() {
        assert_eq!(g.link, LinkType::ETHERNET);
        assert_eq!(g.orig_len as usize, f.len());
        let tag = if i % 3 == 2 { 4 } else { 0 };
        if f.len() - tag <= room {
            assert_eq!(&g.data, f, "frame {i} bytes");
        } else {
            cut += 1;
            assert_eq!(g.data.len(), room + tag, "frame {i} cut at the slot");
            assert_eq!(&g.data[..], &f[..g.data.len()], "cut frame is a prefix");
        }
    }
    assert!(cut > 50, "{cut} frames longer than the slot");
    for w in got.windows(2) {
        assert!(w[1].ts >= w[0].ts, "timestamps never go back");
    }
    let st = cap.stats().unwrap()[0];
    assert_eq!(st.kernel_drops, 0, "{st:?}");
    assert_eq!(st.vlan_restored, 133, "{st:?}");
    assert_eq!(st.truncated, cut, "{st:?}");
    assert_eq!(st.blocks_waiting, 0, "{st:?}");

    // The `any` device: SLL2 built from the V2 frame's sockaddr_ll.
    let mut any = cfg;
    any.interface = "any".into();
    any.promiscuous = false;
    let mut cap = Capture::open(&[any]).unwrap();
    let tagged = frame(
        &[(0x8100, 42)],
        [10, 77, 0, 1],
        [10, 77, 0, 2],
        5060,
        5060,
        7,
        10,
    );
    send_all(&inj, std::slice::from_ref(&tagged));
    let got = collect(&mut cap, 1, Duration::from_secs(10), |p| {
        p.data.get(12..18) == Some(&SRC_MAC[..])
    });
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].link, LinkType::LINUX_SLL2);
    assert_eq!(&got[0].data[20..22], &42u16.to_be_bytes());
    assert_eq!(&got[0].data[24..], &tagged[18..]);

    // Too small a slot for the V2 header is a configuration error.
    let mut bad = v.ring();
    bad.layout = Layout::Frames;
    bad.frame_size = 128;
    assert!(Capture::open(&[bad]).is_err());
}

#[test]
fn fanout_delivers_each_frame_exactly_once() {
    let Some(v) = Veth::new() else { return };
    let group = (std::process::id() as u16) ^ 0x5a5a;
    let mut cap = Capture::fanout(&v.ring(), 2, group).unwrap();
    let inj = v.injector();
    let frames: Vec<Vec<u8>> = (0..2000u32)
        .map(|i| {
            frame(
                &[],
                [10, 77, (i % 7) as u8, 1],
                [10, 77, 0, 2],
                20000 + (i % 64) as u16,
                5060,
                i,
                20,
            )
        })
        .collect();
    send_all(&inj, &frames);
    assert_eq!(cap.rings().len(), 2);
    let got = collect(&mut cap, frames.len(), Duration::from_secs(10), ours);
    std::thread::sleep(Duration::from_millis(50));
    let extra = collect(&mut cap, 1, Duration::from_millis(100), ours);
    assert!(extra.is_empty(), "no duplicates after the last frame");
    let seqs: Vec<u32> = got.iter().map(|g| seq_of(&g.data, 14)).collect();
    let unique: BTreeSet<u32> = seqs.iter().copied().collect();
    assert_eq!(seqs.len(), 2000);
    assert_eq!(unique.len(), 2000, "each frame exactly once");
    let st = cap.stats().unwrap();
    assert_eq!(st[0].frames + st[1].frames, 2000, "{st:?}");
    assert!(
        st[0].frames > 0 && st[1].frames > 0,
        "both rings got flows: {st:?}"
    );
    // One flow (same addresses and ports) always lands on the same ring: split the rings
    // and resend flow by flow.
    let mut rings: Vec<Capture> = cap
        .into_rings()
        .into_iter()
        .map(|r| Capture::from_rings(vec![r]))
        .collect();
    for flow in 0..8u32 {
        let burst: Vec<Vec<u8>> = (0..20u32)
            .map(|i| {
                frame(
                    &[],
                    [10, 77, 0, 1],
                    [10, 77, 0, 2],
                    30000 + flow as u16,
                    5060,
                    i,
                    20,
                )
            })
            .collect();
        send_all(&inj, &burst);
        std::thread::sleep(Duration::from_millis(30));
        let counts: Vec<usize> = rings
            .iter_mut()
            .map(|c| collect(c, 20, Duration::from_millis(300), ours).len())
            .collect();
        assert!(
            counts == [20, 0] || counts == [0, 20],
            "flow {flow} split: {counts:?}"
        );
    }
}

#[test]
fn filters_drop_what_they_should_and_count_it() {
    let Some(v) = Veth::new() else { return };
    let mut cfg = v.ring();
    cfg.filter = Filter::parse("port 5060 or portrange 10000-10010 or net 10.99.0.0/16").unwrap();
    let mut cap = Capture::open(&[cfg]).unwrap();
    let inj = v.injector();
    let cases: [(bool, [u8; 4], u16, u16); 6] = [
        (true, [10, 77, 0, 1], 40000, 5060),
        (true, [10, 77, 0, 1], 5060, 40000),
        (true, [10, 77, 0, 1], 40000, 10005),
        (true, [10, 99, 3, 4], 1, 2),
        (false, [10, 77, 0, 1], 40000, 10011),
        (false, [10, 98, 0, 1], 1, 2),
    ];
    let mut frames = Vec::new();
    for round in 0..20u32 {
        for (k, (_, src, sp, dp)) in cases.iter().enumerate() {
            frames.push(frame(
                &[],
                *src,
                [10, 77, 0, 2],
                *sp,
                *dp,
                round * 10 + k as u32,
                30,
            ));
        }
    }
    send_all(&inj, &frames);
    let got = collect(&mut cap, 80, Duration::from_secs(10), ours);
    std::thread::sleep(Duration::from_millis(50));
    let extra = collect(&mut cap, 1, Duration::from_millis(100), ours);
    assert!(extra.is_empty());
    assert_eq!(got.len(), 80);
    for g in &got {
        let k = seq_of(&g.data, 14) % 10;
        assert!(cases[k as usize].0, "case {k} should have been filtered");
    }
    let st = cap.stats().unwrap();
    assert_eq!(st[0].filtered, 40, "{st:?}");
    assert_eq!(st[0].frames, 80);
}

/// `--filter` with the `pcap` feature: a full BPF expression compiled by libpcap and run by
/// the kernel. Refused frames never reach the ring (the kernel does not count them either),
/// and the snap length still applies to the ones accepted.
#[cfg(feature = "pcap")]
#[test]
fn bpf_expressions_filter_in_the_kernel() {
    let Some(v) = Veth::new() else { return };
    let mut cfg = v.ring();
    cfg.bpf = Some(
        "udp and (port 5060 or portrange 10000-10010) and not src host 10.98.0.1 \
         and udp[8:4] != 12"
            .into(),
    );
    cfg.snaplen = 100;
    let mut cap = Capture::open(&[cfg]).unwrap();
    let inj = v.injector();
    let cases: [(bool, [u8; 4], u16, u16); 6] = [
        (true, [10, 77, 0, 1], 40000, 5060),
        (true, [10, 77, 0, 1], 5060, 40000),
        (true, [10, 77, 0, 1], 40000, 10005),
        (false, [10, 98, 0, 1], 40000, 5060),
        (false, [10, 77, 0, 1], 40000, 10011),
        (false, [10, 77, 0, 1], 1, 2),
    ];
    let mut frames = Vec::new();
    for round in 0..20u32 {
        for (k, (_, src, sp, dp)) in cases.iter().enumerate() {
            frames.push(frame(
                &[],
                *src,
                [10, 77, 0, 2],
                *sp,
                *dp,
                round * 10 + k as u32,
                100,
            ));
        }
    }
    // Seq 12 (round 1, case 2) passes the ports but not the payload test.
    send_all(&inj, &frames);
    let want = frames
        .iter()
        .filter(|f| {
            let seq = seq_of(f, 14);
            cases[(seq % 10) as usize].0 && seq != 12
        })
        .count();
    let got = collect(&mut cap, want, Duration::from_secs(10), |_| true);
    std::thread::sleep(Duration::from_millis(50));
    let extra = collect(&mut cap, 1, Duration::from_millis(100), |_| true);
    assert!(extra.is_empty(), "nothing else passes the kernel filter");
    assert_eq!(got.len(), want);
    for g in &got {
        let seq = seq_of(&g.data, 14);
        assert!(
            cases[(seq % 10) as usize].0 && seq != 12,
            "seq {seq} passed"
        );
        assert_eq!(g.data.len(), 100, "the snap length still applies");
        assert_eq!(g.orig_len, 14 + 20 + 8 + 4 + 100);
    }
    let st = cap.stats().unwrap();
    assert_eq!(st[0].kernel_packets, want as u64, "{st:?}");
    assert_eq!(st[0].filtered, 0, "no user-space filtering: {st:?}");
}

/// Without a compiler a BPF expression is refused when the ring opens, with the reason.
#[cfg(not(feature = "pcap"))]
#[test]
fn bpf_expressions_need_the_pcap_feature() {
    let mut cfg = RingConfig::new("lo");
    cfg.bpf = Some("udp port 5060".into());
    let e = Capture::open(&[cfg]).unwrap_err().to_string();
    assert!(e.contains("`pcap` feature"), "{e}");
}

#[test]
fn a_full_ring_drops_and_counts_and_occupancy_shows_it() {
    let Some(v) = Veth::new() else { return };
    let mut cfg = v.ring();
    cfg.block_size = 64 << 10;
    cfg.block_count = 4;
    let mut cap = Capture::open(&[cfg]).unwrap();
    let inj = v.injector();
    // ~5000 × 242 bytes ≈ 1.2 MB into a 256 KiB ring nobody reads.
    let frames: Vec<Vec<u8>> = (0..5000u32)
        .map(|i| frame(&[], [10, 77, 0, 1], [10, 77, 0, 2], 40000, 5060, i, 160))
        .collect();
    send_all(&inj, &frames);
    std::thread::sleep(Duration::from_millis(100));
    let st = cap.stats().unwrap()[0];
    assert_eq!(
        st.blocks_waiting, 4,
        "every block waits for user space: {st:?}"
    );
    assert!(st.kernel_drops > 0, "{st:?}");
    assert!(st.freezes > 0, "{st:?}");
    assert_eq!(
        st.kernel_packets, 5000,
        "tp_packets includes the drops: {st:?}"
    );
    let got = collect(&mut cap, 5000, Duration::from_millis(500), ours);
    let st = cap.stats().unwrap()[0];
    assert_eq!(
        got.len() as u64 + st.kernel_drops,
        5000,
        "read + dropped = sent: {st:?}"
    );
    assert_eq!(st.blocks_waiting, 0);
    // What was kept is in order and intact.
    let seqs: Vec<u32> = got.iter().map(|g| seq_of(&g.data, 14)).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn snap_length_cuts_frames_in_the_kernel() {
    let Some(v) = Veth::new() else { return };
    let mut cfg = v.ring();
    cfg.snaplen = 100;
    let mut cap = Capture::open(&[cfg]).unwrap();
    let inj = v.injector();
    let frames: Vec<Vec<u8>> = (0..20u32)
        .map(|i| {
            frame(
                &[(0x8100, 7)],
                [10, 77, 0, 1],
                [10, 77, 0, 2],
                5060,
                5060,
                i,
                50 * i as usize,
            )
        })
        .collect();
    send_all(&inj, &frames);
    let got = collect(&mut cap, 20, Duration::from_secs(10), ours);
    assert_eq!(got.len(), 20);
    for (g, f) in got.iter().zip(&frames) {
        // 100 bytes of the untagged frame, then the restored tag: 104 at most.
        let keep = f.len().min(104);
        assert_eq!(&g.data[..], &f[..keep]);
        assert_eq!(g.orig_len as usize, f.len(), "orig_len is the wire length");
    }
    let cut = frames.iter().filter(|f| f.len() > 104).count() as u64;
    assert_eq!(cap.stats().unwrap()[0].truncated, cut);
}

/// Frames of a synthesized call, read back from the pcap the synthesizer wrote.
fn synth_call() -> Vec<(Timestamp, Vec<u8>)> {
    let cfg = vcontap_synth::SynthConfig {
        calls: 1,
        concurrent: 1,
        seconds: 2.0,
        seed: 7,
        ..Default::default()
    };
    let mut pcap = Vec::new();
    vcontap_synth::generate(&cfg, &mut pcap).unwrap();
    let mut r = PcapReader::new(&pcap[..]).unwrap();
    let mut out = Vec::new();
    while let Some(p) = r.next_packet().unwrap() {
        assert_eq!(p.link, LinkType::ETHERNET);
        out.push((p.ts, p.data.to_vec()));
    }
    out
}

type Done = Arc<Mutex<Vec<Value>>>;

fn tap() -> (Tap, Done) {
    let done: Done = Arc::new(Mutex::new(Vec::new()));
    let d = done.clone();
    let engine = EngineConfig {
        record: RecordMode::None,
        host: "tap.test".into(),
        ..EngineConfig::default()
    };
    let tap = Tap::new(
        TapConfig::replay(engine),
        Box::new(move |e| {
            if e.kind == EventKind::Finished {
                d.lock()
                    .unwrap()
                    .push(serde_json::from_str(&e.vcon_json).unwrap());
            }
            Ok(())
        }),
    )
    .unwrap();
    (tap, done)
}

fn run_tap(frames: &[(Timestamp, Vec<u8>)]) -> Vec<Value> {
    let (mut tap, done) = tap();
    let mut last = Timestamp(0);
    for (ts, f) in frames {
        last = last.max(*ts);
        let p = RawPacket {
            ts: *ts,
            link: LinkType::ETHERNET,
            data: f,
            orig_len: f.len() as u32,
        };
        tap.handle_packet(&p, last).unwrap();
    }
    tap.finish(last).unwrap();
    let v = done.lock().unwrap().clone();
    v
}

/// Seconds since the epoch of an RFC 3339 UTC time (`YYYY-MM-DDTHH:MM:SS[.f]Z`).
fn secs(t: &Value) -> f64 {
    let s = t.as_str().unwrap();
    let (y, m, d) = (
        s[0..4].parse::<i64>().unwrap(),
        s[5..7].parse::<i64>().unwrap(),
        s[8..10].parse::<i64>().unwrap(),
    );
    let (y2, m2) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let days = 365 * y2 + y2 / 4 - y2 / 100 + y2 / 400 + (153 * m2 + 2) / 5 + d;
    let tod: f64 = s[11..13].parse::<f64>().unwrap() * 3600.0
        + s[14..16].parse::<f64>().unwrap() * 60.0
        + s[17..s.len() - 1].parse::<f64>().unwrap();
    days as f64 * 86400.0 + tod
}

/// What must survive the trip through a veth and a ring: per Call-ID the parties, the
/// outcome, the call's duration (to 50 ms) and every RTP stream with its packet count.
/// Parties, end reason, duration (s), streams (SSRC, packets).
type Digest = (Value, Value, f64, Vec<(String, u64)>);

fn digest(vcons: &[Value]) -> BTreeMap<String, Digest> {
    vcons
        .iter()
        .map(|v| {
            let live = &v["vcontap"];
            let dur = secs(&live["ended_at"]) - secs(&live["answered_at"]);
            let mut streams: Vec<(String, u64)> = v["analysis"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .flat_map(|a| a["body"]["streams"].as_array().cloned().unwrap_or_default())
                .chain(
                    live["rtp_quality"]["streams"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default(),
                )
                .map(|s| {
                    (
                        s["ssrc"].as_str().unwrap_or("").to_string(),
                        s["packets"].as_u64().unwrap_or(0),
                    )
                })
                .collect();
            streams.sort();
            (
                live["sip_call_id"].as_str().unwrap().to_string(),
                (
                    v["parties"].clone(),
                    live["end_reason"].clone(),
                    dur,
                    streams,
                ),
            )
        })
        .collect()
}

#[test]
fn synthesized_call_through_veth_gives_the_same_vcon_as_the_file() {
    let Some(v) = Veth::new() else { return };
    let frames = synth_call();
    let mut cap = Capture::open(&[v.ring()]).unwrap();
    let inj = v.injector();
    // Paced at the capture's own spacing so the kernel timestamps keep the call's timing.
    let first = frames[0].0;
    let start = Instant::now();
    let sender = {
        let frames = frames.clone();
        std::thread::spawn(move || {
            for (ts, f) in &frames {
                let at = Duration::from_nanos((ts.nanos() - first.nanos()) as u64);
                if let Some(d) = at.checked_sub(start.elapsed()) {
                    std::thread::sleep(d);
                }
                send_all(&inj, std::slice::from_ref(f));
            }
        })
    };
    let wanted: BTreeSet<Vec<u8>> = frames.iter().map(|(_, f)| f.clone()).collect();
    let got = collect(&mut cap, frames.len(), Duration::from_secs(30), |p| {
        wanted.contains(p.data)
    });
    sender.join().unwrap();
    assert_eq!(got.len(), frames.len(), "every frame of the call captured");
    let live: Vec<(Timestamp, Vec<u8>)> = got.into_iter().map(|g| (g.ts, g.data)).collect();
    let from_file = digest(&run_tap(&frames));
    let from_wire = digest(&run_tap(&live));
    assert_eq!(from_file.len(), 1);
    assert_eq!(from_wire.len(), 1);
    let (f, w) = (
        from_file.values().next().unwrap(),
        from_wire.values().next().unwrap(),
    );
    assert_eq!(
        from_file.keys().collect::<Vec<_>>(),
        from_wire.keys().collect::<Vec<_>>()
    );
    assert_eq!(f.0, w.0, "parties");
    assert_eq!(f.1, w.1, "end reason");
    assert!(!f.3.is_empty(), "the call has RTP streams");
    assert_eq!(f.3, w.3, "streams and packet counts");
    assert!(
        (f.2 - w.2).abs() < 0.05,
        "duration {} (file) vs {} (live)",
        f.2,
        w.2
    );
    assert!(f.2 > 1.5, "answered call of ~2 s: {}", f.2);
}

/// The real driver loop (`vcontap_pipeline::run`) on a live capture: it polls, sleeps while
/// idle, and stops when `tick` says so; the call sent through the veth is in the vCon with
/// the same streams as from the file.
#[test]
fn pipeline_run_drives_a_live_capture() {
    let Some(v) = Veth::new() else { return };
    let frames = synth_call();
    let mut cap = Capture::open(&[v.ring()]).unwrap();
    let inj = v.injector();
    let done: Done = Arc::new(Mutex::new(Vec::new()));
    let d = done.clone();
    let engine = EngineConfig {
        record: RecordMode::None,
        host: "tap.test".into(),
        ..EngineConfig::default()
    };
    let tap = Tap::new(
        TapConfig::live(engine),
        Box::new(move |e| {
            if e.kind == EventKind::Finished {
                d.lock()
                    .unwrap()
                    .push(serde_json::from_str(&e.vcon_json).unwrap());
            }
            Ok(())
        }),
    )
    .unwrap();
    let raw: Vec<Vec<u8>> = frames.iter().map(|(_, f)| f.clone()).collect();
    let sender = std::thread::spawn(move || send_all(&inj, &raw));
    let start = Instant::now();
    let totals = vcontap_pipeline::run(
        &mut cap,
        tap,
        vcontap_pipeline::Clock::monotonic(),
        &mut |_| start.elapsed() < Duration::from_secs(2),
    )
    .unwrap();
    sender.join().unwrap();
    assert_eq!(totals.packets, frames.len() as u64, "{totals:?}");
    let live = digest(&done.lock().unwrap());
    let file = digest(&run_tap(&frames));
    assert_eq!(live.len(), 1);
    assert_eq!(
        live.keys().collect::<Vec<_>>(),
        file.keys().collect::<Vec<_>>()
    );
    let (l, f) = (live.values().next().unwrap(), file.values().next().unwrap());
    assert_eq!(l.0, f.0, "parties");
    assert_eq!(l.3, f.3, "streams and packet counts");
}

/// `cargo test -p vcontap-afpacket --release -- --ignored --nocapture throughput`: blasts
/// 64-byte-payload frames from a raw socket in one namespace for 3 s and counts what one
/// ring receives and what the kernel dropped.
#[test]
#[ignore]
fn throughput_one_ring() {
    let Some(v) = Veth::new() else { return };
    for (block_mib, senders) in [(1u32, 1), (4, 1), (4, 2)] {
        let mut cfg = v.ring();
        cfg.block_size = block_mib << 20;
        cfg.block_count = 16;
        let mut cap = Capture::open(&[cfg]).unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let threads: Vec<_> = (0..senders)
            .map(|_| {
                let inj = v.injector();
                let frame = frame(&[], [10, 77, 0, 1], [10, 77, 0, 2], 40000, 5060, 0, 160);
                let s2 = stop.clone();
                std::thread::spawn(move || {
                    let (mut sent, mut full) = (0u64, 0u64);
                    while !s2.load(Ordering::Relaxed) {
                        if inj.send(&frame).unwrap() {
                            sent += 1;
                        } else {
                            full += 1;
                        }
                    }
                    (sent, full)
                })
            })
            .collect();
        let t0 = Instant::now();
        let mut got = 0u64;
        while t0.elapsed() < Duration::from_secs(3) {
            match cap.poll(4096, |_| Ok(())).unwrap() {
                Poll::Packets(n) => got += n as u64,
                _ => {
                    cap.wait(Duration::from_millis(20)).unwrap();
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
        let (mut sent, mut full) = (0, 0);
        for t in threads {
            let (s, f) = t.join().unwrap();
            sent += s;
            full += f;
        }
        let t1 = Instant::now();
        while t1.elapsed() < Duration::from_millis(200) {
            if let Poll::Packets(n) = cap.poll(4096, |_| Ok(())).unwrap() {
                got += n as u64;
            } else {
                cap.wait(Duration::from_millis(20)).unwrap();
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        let st = cap.stats().unwrap();
        eprintln!(
            "ring {block_mib} MiB x 16, {senders} sender(s): sent {sent} ({full} ENOBUFS) in {secs:.2} s, received {got} = {:.0} frames/s, tp_packets {}, tp_drops {}, freezes {}",
            got as f64 / secs,
            st[0].kernel_packets,
            st[0].kernel_drops,
            st[0].freezes
        );
        assert!(got > 0);
    }
}

/// Capability probe (run by hand, see docs/capture.md): opens a promiscuous ring on
/// `$VCT_IF` in the current namespace and checks the interface turned promiscuous, e.g.
/// `ip netns exec NS capsh --drop=cap_net_admin,cap_sys_admin -- -c 'VCT_IF=eth0 veth-… --ignored --exact promiscuous_needs_only_cap_net_raw'`.
#[test]
#[ignore]
fn promiscuous_needs_only_cap_net_raw() {
    let Ok(iface) = std::env::var("VCT_IF") else {
        eprintln!("SKIP: set VCT_IF");
        return;
    };
    let flags = || {
        let s = std::fs::read_to_string(format!("/sys/class/net/{iface}/flags")).unwrap();
        u32::from_str_radix(s.trim().trim_start_matches("0x"), 16).unwrap()
    };
    assert_eq!(flags() & 0x100, 0, "not promiscuous before");
    let cap = Capture::open(&[RingConfig::new(&iface)]).unwrap();
    assert_ne!(flags() & 0x100, 0, "IFF_PROMISC while the ring is open");
    drop(cap);
    assert_eq!(flags() & 0x100, 0, "membership dropped with the socket");
}
