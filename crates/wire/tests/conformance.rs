//! Runs every capture in the shared corpus through `PcapReader` + `Decoder` and checks
//! frame counts against the tshark/capinfos oracle plus a few per-file expectations.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;

use vcontap_wire::{
    Datagram, Decoder, DecoderConfig, Framing, PcapError, PcapReader, SkipReason, Transport,
};

fn shared_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("VCONTAP_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared")));
    let caps = dir.join("captures");
    caps.is_dir().then_some(caps)
}

/// Accepts text lines that start with an ASCII letter; anything else is foreign.
fn text_lines(b: &[u8]) -> Framing {
    match b.first() {
        Some(c) if c.is_ascii_alphabetic() => match b.iter().position(|&c| c == b'\n') {
            Some(i) => Framing::Message(i + 1),
            None => Framing::Incomplete,
        },
        Some(b'\r' | b'\n') => Framing::Skip(1),
        _ => Framing::NotOurs,
    }
}

#[derive(Debug, Clone)]
struct Got {
    transport: Transport,
    src_port: u16,
    dst_port: u16,
    len: usize,
    vlan: Option<u16>,
}

struct Run {
    frames: u64,
    datagrams: Vec<Got>,
    skips: BTreeMap<&'static str, u64>,
}

fn run(path: &std::path::Path, framer: bool) -> Result<Run, PcapError> {
    let mut rd = PcapReader::new(BufReader::new(File::open(path)?))?;
    let mut dec = Decoder::new(DecoderConfig {
        tcp_framer: framer.then_some(text_lines as fn(&[u8]) -> Framing),
        ..DecoderConfig::default()
    });
    let mut datagrams = Vec::new();
    let mut frames = 0;
    while let Some(p) = rd.next_packet()? {
        frames += 1;
        let ts = p.ts;
        dec.decode(&p, &mut |d: Datagram<'_>| {
            datagrams.push(Got {
                transport: d.transport,
                src_port: d.src.port(),
                dst_port: d.dst.port(),
                len: d.payload.len(),
                vlan: d.vlan,
            })
        });
        dec.handle_timeout(ts);
    }
    let skips = dec
        .stats()
        .nonzero_skips()
        .map(|(r, n)| (r.as_str(), n))
        .collect();
    assert_eq!(dec.stats().frames, frames);
    assert_eq!(dec.stats().datagrams, datagrams.len() as u64);
    Ok(Run {
        frames,
        datagrams,
        skips,
    })
}

/// capinfos' packet count as an inclusive range: it prints exact counts below 10000 and
/// abbreviates larger ones ("11 k" means 11000..=11999).
fn expected_packets(oracle: &std::path::Path) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(oracle).ok()?;
    let v = text
        .lines()
        .find_map(|l| l.strip_prefix("Number of packets:"))?
        .trim();
    let (num, scale) = match v.split_once(' ') {
        Some((n, "k")) => (n, 1_000),
        Some((n, "M")) => (n, 1_000_000),
        _ => (v, 1),
    };
    let n: u64 = num.parse().ok()?;
    Some((n * scale, n * scale + scale - 1))
}

#[test]
fn every_shared_capture() {
    let Some(dir) = shared_dir() else {
        println!("skipped: shared test data not found (set VCONTAP_SHARED)");
        return;
    };
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("pcap" | "pcapng" | "cap")
            )
        })
        .collect();
    files.sort();
    assert!(
        files.len() >= 50,
        "expected the shared corpus, found {} files",
        files.len()
    );
    let mut runs = BTreeMap::new();
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let oracle = path.with_extension("tshark.txt");
        let res = run(path, true);
        if name.ends_with(".cap") {
            assert!(
                matches!(res, Err(PcapError::UnknownFormat)),
                "{name}: {:?}",
                res.err()
            );
            continue;
        }
        let r = res.unwrap_or_else(|e| panic!("{name}: {e}"));
        // Also without a TCP framer: must not panic either.
        let r2 = run(path, false).unwrap();
        assert_eq!(r2.frames, r.frames);
        assert!(r2.datagrams.iter().all(|d| d.transport != Transport::Tcp));
        let want = expected_packets(&oracle).unwrap_or_else(|| panic!("{name}: no oracle"));
        assert!(
            (want.0..=want.1).contains(&r.frames),
            "{name}: {} frames, want {want:?}",
            r.frames
        );
        println!(
            "{name}: frames={} datagrams={} skips={:?}",
            r.frames,
            r.datagrams.len(),
            r.skips
        );
        runs.insert(name, r);
    }

    // IPv6 fragments: one reassembled UDP datagram of ~5.4 kB on port 6363.
    let r = &runs["heplify_ipv6_udp_fragmented.pcap"];
    let big: Vec<_> = r.datagrams.iter().filter(|d| d.len > 4000).collect();
    assert_eq!(big.len(), 1, "{:?}", r.datagrams);
    assert_eq!(big[0].transport, Transport::Udp);
    assert!(
        big[0].src_port == 6363 || big[0].dst_port == 6363,
        "{:?}",
        big[0]
    );

    // IP-in-IP carrying SIP over TCP.
    let r = &runs["sngrep_ipip.pcap"];
    assert!(
        r.datagrams.iter().any(|d| d.transport == Transport::Tcp),
        "{:?}",
        r.datagrams
    );

    // ERSPAN-mirrored SIP over UDP.
    let r = &runs["heplify_erspan_sip_udp.pcapng"];
    let sip = r.datagrams.iter().filter(|d| d.dst_port == 5060).count();
    assert!(sip > 10, "only {sip} datagrams to 5060: {:?}", r.skips);

    // SIP over SCTP on Linux SLL.
    let r = &runs["heplify_sip_sctp.pcap"];
    let sctp: Vec<_> = r
        .datagrams
        .iter()
        .filter(|d| d.transport == Transport::Sctp)
        .collect();
    assert_eq!(sctp.len(), 4, "{:?}", r.skips);
    // The INVITE spans two DATA chunks (B, then E) and is reassembled.
    assert!(sctp[0].len > 1500, "{:?}", sctp[0]);

    // VLAN-tagged RTP.
    let r = &runs["ndpi_rtp.pcapng"];
    assert!(r.datagrams.iter().any(|d| d.vlan.is_some()));

    // PPPoE and NULL/loopback link types yield UDP.
    for f in [
        "ws_dtmf_sipinfo.pcap",
        "ws_h263_over_rtp.pcap",
        "heplify_ipip0.pcap",
    ] {
        assert!(
            runs[f]
                .datagrams
                .iter()
                .any(|d| d.transport == Transport::Udp),
            "{f}"
        );
    }

    // Large SIP body over many TCP segments (NULL link) becomes TCP messages.
    let r = &runs["suri_sip_body_large.pcap"];
    assert!(r.datagrams.iter().any(|d| d.transport == Transport::Tcp));

    // sngrep IPv6 fragments: reassembled SIP datagrams bigger than one fragment.
    let r = &runs["sngrep_ipv6frag.pcap"];
    assert!(r.datagrams.iter().any(|d| d.len > 1500), "{:?}", r.skips);
    for why in [
        SkipReason::FragmentTooLarge,
        SkipReason::FragmentInconsistent,
        SkipReason::FragmentTooManyHoles,
        SkipReason::FragmentNested,
    ] {
        assert_eq!(r.skips.get(why.as_str()), None, "{why}");
    }
}
