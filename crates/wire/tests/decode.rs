//! Hand-built frames through the `Decoder`: every link type, VLAN/QinQ, PPPoE, MPLS,
//! tunnels (GRE, ERSPAN II/III, VXLAN, IP-in-IP, IPv6-in-IPv4), fragments, TCP, SCTP,
//! and malformed input.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use vcontap_wire::{
    Datagram, Decoder, DecoderConfig, Framing, LinkType, RawPacket, SkipReason, Timestamp,
    Transport, MAX_TUNNEL_DEPTH,
};

// ---------- frame builders ----------

const A4: [u8; 4] = [10, 0, 0, 1];
const B4: [u8; 4] = [10, 0, 0, 2];
const A6: [u8; 16] = [0x20, 0x01, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const B6: [u8; 16] = [0x20, 0x01, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

fn eth(et: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
    v.extend_from_slice(&et.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

fn vlan(tags: &[(u16, u16)], et: u16, payload: &[u8]) -> Vec<u8> {
    // tags: (tpid, vid), outermost first.
    let mut v = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
    for (i, (tpid, vid)) in tags.iter().enumerate() {
        if i == 0 {
            v.extend_from_slice(&tpid.to_be_bytes());
        }
        v.extend_from_slice(&vid.to_be_bytes());
        let next = tags.get(i + 1).map_or(et, |t| t.0);
        v.extend_from_slice(&next.to_be_bytes());
    }
    v.extend_from_slice(payload);
    v
}

fn ipv4_frag(src: [u8; 4], dst: [u8; 4], proto: u8, id: u16, fo: u16, payload: &[u8]) -> Vec<u8> {
    let total = (20 + payload.len()) as u16;
    let mut v = vec![0x45, 0];
    v.extend_from_slice(&total.to_be_bytes());
    v.extend_from_slice(&id.to_be_bytes());
    v.extend_from_slice(&fo.to_be_bytes());
    v.extend_from_slice(&[64, proto, 0, 0]);
    v.extend_from_slice(&src);
    v.extend_from_slice(&dst);
    v.extend_from_slice(payload);
    v
}

fn ipv4(proto: u8, payload: &[u8]) -> Vec<u8> {
    ipv4_frag(A4, B4, proto, 1, 0, payload)
}

fn ipv6_raw(nh: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0x60, 0, 0, 0];
    v.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    v.extend_from_slice(&[nh, 64]);
    v.extend_from_slice(&A6);
    v.extend_from_slice(&B6);
    v.extend_from_slice(payload);
    v
}

fn udp(sp: u16, dp: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&sp.to_be_bytes());
    v.extend_from_slice(&dp.to_be_bytes());
    v.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    v.extend_from_slice(&[0, 0]);
    v.extend_from_slice(payload);
    v
}

const FIN: u8 = 1;
const SYN: u8 = 2;
const RST: u8 = 4;
const ACK: u8 = 0x10;

fn tcp(sp: u16, dp: u16, seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&sp.to_be_bytes());
    v.extend_from_slice(&dp.to_be_bytes());
    v.extend_from_slice(&seq.to_be_bytes());
    v.extend_from_slice(&[0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    v.extend_from_slice(payload);
    v
}

fn sctp(sp: u16, dp: u16, chunks: &[Vec<u8>]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&sp.to_be_bytes());
    v.extend_from_slice(&dp.to_be_bytes());
    v.extend_from_slice(&[0; 8]);
    for c in chunks {
        v.extend_from_slice(c);
        while v.len() & 3 != 0 {
            v.push(0);
        }
    }
    v
}

fn data_chunk(flags: u8, tsn: u32, sid: u16, data: &[u8]) -> Vec<u8> {
    let mut c = vec![0, flags];
    c.extend_from_slice(&((16 + data.len()) as u16).to_be_bytes());
    c.extend_from_slice(&tsn.to_be_bytes());
    c.extend_from_slice(&sid.to_be_bytes());
    c.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    c.extend_from_slice(data);
    c
}

fn gre(flags: u16, proto: u16, opt_words: &[u32], payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&flags.to_be_bytes());
    v.extend_from_slice(&proto.to_be_bytes());
    for w in opt_words {
        v.extend_from_slice(&w.to_be_bytes());
    }
    v.extend_from_slice(payload);
    v
}

// ---------- decoding helpers ----------

#[derive(Debug, Clone, PartialEq)]
struct Out {
    transport: Transport,
    src: SocketAddr,
    dst: SocketAddr,
    vlan: Option<u16>,
    ts: Timestamp,
    payload: Vec<u8>,
}

fn lines(b: &[u8]) -> Framing {
    match b.first() {
        Some(b'#') => Framing::NotOurs,
        _ => match b.iter().position(|&c| c == b'\n') {
            Some(i) => Framing::Message(i + 1),
            None => Framing::Incomplete,
        },
    }
}

fn decoder() -> Decoder {
    Decoder::new(DecoderConfig {
        tcp_framer: Some(lines),
        ..DecoderConfig::default()
    })
}

fn run_at(dec: &mut Decoder, link: LinkType, frame: &[u8], ts: i64) -> Vec<Out> {
    let pkt = RawPacket {
        ts: Timestamp(ts),
        link,
        data: frame,
        orig_len: frame.len() as u32,
    };
    let mut v = Vec::new();
    dec.decode(&pkt, &mut |d: Datagram<'_>| {
        v.push(Out {
            transport: d.transport,
            src: d.src,
            dst: d.dst,
            vlan: d.vlan,
            ts: d.ts,
            payload: d.payload.to_vec(),
        })
    });
    v
}

fn run(link: LinkType, frame: &[u8]) -> (Vec<Out>, Decoder) {
    let mut dec = decoder();
    let v = run_at(&mut dec, link, frame, 0);
    (v, dec)
}

fn sa4(ip: [u8; 4], p: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), p)
}

fn sa6(ip: [u8; 16], p: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), p)
}

fn one_udp(link: LinkType, frame: &[u8]) -> Out {
    let (v, dec) = run(link, frame);
    assert_eq!(
        v.len(),
        1,
        "skips: {:?}",
        dec.stats().nonzero_skips().collect::<Vec<_>>()
    );
    assert_eq!(v[0].transport, Transport::Udp);
    v.into_iter().next().unwrap()
}

// ---------- link layers ----------

#[test]
fn ethernet_ipv4_udp_with_padding() {
    let mut f = eth(0x0800, &ipv4(17, &udp(5060, 5061, b"hi")));
    f.extend_from_slice(&[0; 20]); // Ethernet padding beyond IP total length.
    let d = one_udp(LinkType::ETHERNET, &f);
    assert_eq!(d.payload, b"hi");
    assert_eq!(d.src, sa4(A4, 5060));
    assert_eq!(d.dst, sa4(B4, 5061));
    assert_eq!(d.vlan, None);
}

#[test]
fn ethernet_ipv6_udp() {
    let d = one_udp(
        LinkType::ETHERNET,
        &eth(0x86DD, &ipv6_raw(17, &udp(1, 2, b"six"))),
    );
    assert_eq!(d.payload, b"six");
    assert_eq!(d.src, sa6(A6, 1));
    assert_eq!(d.dst, sa6(B6, 2));
}

#[test]
fn ipv6_extension_headers() {
    // Hop-by-hop (8) -> routing (8) -> dest opts (8) -> UDP.
    let mut p = vec![43, 0, 0, 0, 0, 0, 0, 0];
    p.extend_from_slice(&[60, 0, 0, 0, 0, 0, 0, 0]);
    p.extend_from_slice(&[17, 0, 0, 0, 0, 0, 0, 0]);
    p.extend_from_slice(&udp(7, 8, b"ext"));
    let d = one_udp(LinkType::IPV6, &ipv6_raw(0, &p));
    assert_eq!(d.payload, b"ext");
}

#[test]
fn null_and_loop_link_types() {
    let ip4 = ipv4(17, &udp(1, 2, b"v4"));
    let ip6 = ipv6_raw(17, &udp(1, 2, b"v6"));
    for (link, af, ip) in [
        (LinkType::NULL, 2u32.to_le_bytes(), &ip4),
        (LinkType::NULL, 2u32.to_be_bytes(), &ip4),
        (LinkType::NULL, 30u32.to_le_bytes(), &ip6),
        (LinkType::NULL, 24u32.to_be_bytes(), &ip6),
        (LinkType::NULL, 10u32.to_le_bytes(), &ip6),
        (LinkType::NULL, 28u32.to_le_bytes(), &ip6),
        (LinkType::LOOP, 2u32.to_be_bytes(), &ip4),
        (LinkType::LOOP, 24u32.to_be_bytes(), &ip6),
    ] {
        let mut f = af.to_vec();
        f.extend_from_slice(ip);
        assert!(one_udp(link, &f).payload.starts_with(b"v"));
    }
    let mut f = 7u32.to_le_bytes().to_vec();
    f.extend_from_slice(&ip4);
    let (v, dec) = run(LinkType::NULL, &f);
    assert!(v.is_empty());
    assert_eq!(dec.stats().skipped(SkipReason::NonIpEthertype), 1);
}

#[test]
fn raw_ip_link_types() {
    let ip4 = ipv4(17, &udp(1, 2, b"raw4"));
    let ip6 = ipv6_raw(17, &udp(1, 2, b"raw6"));
    for link in [LinkType::RAW, LinkType::RAW_12, LinkType(14)] {
        assert_eq!(one_udp(link, &ip4).payload, b"raw4");
        assert_eq!(one_udp(link, &ip6).payload, b"raw6");
    }
    assert_eq!(one_udp(LinkType::IPV4, &ip4).payload, b"raw4");
    assert_eq!(one_udp(LinkType::IPV6, &ip6).payload, b"raw6");
    let (v, dec) = run(LinkType::IPV4, &ip6);
    assert!(v.is_empty());
    assert_eq!(dec.stats().skipped(SkipReason::BadIpv4Header), 1);
}

#[test]
fn linux_sll_and_sll2() {
    let ip = ipv4(17, &udp(1, 2, b"sll"));
    let mut sll = vec![0, 0, 0, 1, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0, 0x08, 0x00];
    sll.extend_from_slice(&ip);
    assert_eq!(one_udp(LinkType::LINUX_SLL, &sll).payload, b"sll");
    let mut sll2 = vec![
        0x08, 0x00, 0, 0, 0, 0, 0, 3, 0, 1, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0,
    ];
    sll2.extend_from_slice(&ip);
    assert_eq!(one_udp(LinkType::LINUX_SLL2, &sll2).payload, b"sll");
    let (v, dec) = run(LinkType(999), &ip);
    assert!(v.is_empty());
    assert_eq!(dec.stats().skipped(SkipReason::UnsupportedLinkType), 1);
}

#[test]
fn vlan_and_qinq_record_outermost_id() {
    let ip = ipv4(17, &udp(1, 2, b"vlan"));
    let d = one_udp(LinkType::ETHERNET, &vlan(&[(0x8100, 42)], 0x0800, &ip));
    assert_eq!(d.vlan, Some(42));
    let d = one_udp(
        LinkType::ETHERNET,
        &vlan(&[(0x88A8, 100), (0x8100, 7)], 0x0800, &ip),
    );
    assert_eq!(d.vlan, Some(100));
    assert_eq!(d.payload, b"vlan");
    let d = one_udp(
        LinkType::ETHERNET,
        &vlan(&[(0x9100, 0x2005), (0x8100, 9)], 0x0800, &ip),
    );
    assert_eq!(d.vlan, Some(5), "PCP bits are masked off");
    // Too many tags.
    let tags: Vec<_> = (0..12).map(|i| (0x8100u16, i + 1)).collect();
    let (v, dec) = run(LinkType::ETHERNET, &vlan(&tags, 0x0800, &ip));
    assert!(v.is_empty());
    assert_eq!(dec.stats().skipped(SkipReason::BadLinkHeader), 1);
}

#[test]
fn pppoe_session() {
    for (proto, ip) in [
        (0x0021u16, ipv4(17, &udp(1, 2, b"ppp4"))),
        (0x0057, ipv6_raw(17, &udp(1, 2, b"ppp6"))),
    ] {
        let mut p = vec![0x11, 0x00, 0x12, 0x34];
        p.extend_from_slice(&((ip.len() + 2) as u16).to_be_bytes());
        p.extend_from_slice(&proto.to_be_bytes());
        p.extend_from_slice(&ip);
        p.extend_from_slice(&[0; 6]); // padding beyond the PPPoE length
        let d = one_udp(LinkType::ETHERNET, &eth(0x8864, &p));
        assert!(d.payload.starts_with(b"ppp"));
    }
    // LCP is not IP.
    let (v, _) = run(
        LinkType::ETHERNET,
        &eth(0x8864, &[0x11, 0, 0, 1, 0, 2, 0xc0, 0x21]),
    );
    assert!(v.is_empty());
}

#[test]
fn mpls_label_stack() {
    let ip = ipv4(17, &udp(1, 2, b"mpls"));
    let mut p = Vec::new();
    p.extend_from_slice(&0x0001_4040u32.to_be_bytes()); // label 20, not bottom
    p.extend_from_slice(&0x0001_5140u32.to_be_bytes()); // label 21, bottom of stack
    p.extend_from_slice(&ip);
    assert_eq!(
        one_udp(LinkType::ETHERNET, &eth(0x8847, &p)).payload,
        b"mpls"
    );
    // Ethernet pseudowire with a zero control word.
    let mut pw = 0x0001_5140u32.to_be_bytes().to_vec();
    pw.extend_from_slice(&[0, 0, 0, 0]);
    pw.extend_from_slice(&vlan(&[(0x8100, 3)], 0x0800, &ip));
    let d = one_udp(LinkType::ETHERNET, &eth(0x8848, &pw));
    assert_eq!(d.vlan, Some(3));
}

// ---------- tunnels ----------

#[test]
fn gre_variants() {
    let inner = ipv4_frag(
        [192, 168, 0, 1],
        [192, 168, 0, 2],
        17,
        9,
        0,
        &udp(1, 5060, b"gre"),
    );
    // Plain GRE carrying IPv4.
    let f = eth(0x0800, &ipv4(47, &gre(0, 0x0800, &[], &inner)));
    let d = one_udp(LinkType::ETHERNET, &f);
    assert_eq!(d.src, sa4([192, 168, 0, 1], 1));
    // Checksum + key + sequence, transparent Ethernet bridging.
    let f = eth(
        0x0800,
        &ipv4(
            47,
            &gre(
                0xB000,
                0x6558,
                &[0, 77, 1],
                &vlan(&[(0x8100, 11)], 0x0800, &inner),
            ),
        ),
    );
    let d = one_udp(LinkType::ETHERNET, &f);
    assert_eq!(d.vlan, Some(11));
    // GRE carrying IPv6, over IPv6.
    let inner6 = ipv6_raw(17, &udp(3, 4, b"gre6"));
    let f = eth(0x86DD, &ipv6_raw(47, &gre(0x2000, 0x86DD, &[5], &inner6)));
    assert_eq!(one_udp(LinkType::ETHERNET, &f).payload, b"gre6");
    // Version 1 (PPTP) is not supported.
    let (v, dec) = run(
        LinkType::IPV4,
        &ipv4(47, &gre(0x3001, 0x880B, &[0, 0], &inner)),
    );
    assert!(v.is_empty());
    assert_eq!(dec.stats().skipped(SkipReason::BadTunnel), 1);
}

#[test]
fn erspan_type_1_2_3() {
    let inner = eth(0x0800, &ipv4(17, &udp(5060, 5060, b"mirrored")));
    // Type II: GRE with sequence number, 8-byte ERSPAN header.
    let mut e2 = vec![0x10, 0x00, 0x00, 0x01, 0, 0, 0, 0];
    e2.extend_from_slice(&inner);
    let f = eth(0x0800, &ipv4(47, &gre(0x1000, 0x88BE, &[1], &e2)));
    assert_eq!(one_udp(LinkType::ETHERNET, &f).payload, b"mirrored");
    // Type I: no sequence number, no ERSPAN header.
    let f = eth(0x0800, &ipv4(47, &gre(0, 0x88BE, &[], &inner)));
    assert_eq!(one_udp(LinkType::ETHERNET, &f).payload, b"mirrored");
    // Type III without and with the platform subheader.
    for o_bit in [false, true] {
        let mut e3 = vec![0x20, 0x00, 0x00, 0x01, 1, 2, 3, 4, 0, 0, 0, u8::from(o_bit)];
        if o_bit {
            e3.extend_from_slice(&[9; 8]);
        }
        e3.extend_from_slice(&inner);
        let f = eth(0x0800, &ipv4(47, &gre(0x1000, 0x22EB, &[1], &e3)));
        let d = one_udp(LinkType::ETHERNET, &f);
        assert_eq!(d.payload, b"mirrored");
        assert_eq!(d.dst.port(), 5060);
    }
}

#[test]
fn vxlan() {
    let inner = vlan(&[(0x8100, 200)], 0x0800, &ipv4(17, &udp(1, 2, b"overlay")));
    let mut vx = vec![0x08, 0, 0, 0, 0, 0, 1, 0];
    vx.extend_from_slice(&inner);
    let f = eth(0x0800, &ipv4(17, &udp(40000, 4789, &vx)));
    let d = one_udp(LinkType::ETHERNET, &f);
    assert_eq!(d.payload, b"overlay");
    assert_eq!(d.vlan, Some(200));
    // Without the I flag it is just UDP to port 4789.
    vx[0] = 0;
    let f = eth(0x0800, &ipv4(17, &udp(40000, 4789, &vx)));
    assert_eq!(one_udp(LinkType::ETHERNET, &f).dst.port(), 4789);
}

#[test]
fn ip_in_ip_all_combinations() {
    let in4 = ipv4_frag(
        [172, 16, 0, 1],
        [172, 16, 0, 2],
        17,
        3,
        0,
        &udp(1, 2, b"44"),
    );
    let in6 = ipv6_raw(17, &udp(1, 2, b"66"));
    assert_eq!(
        one_udp(LinkType::IPV4, &ipv4(4, &in4)).src.ip(),
        Ipv4Addr::new(172, 16, 0, 1)
    );
    assert_eq!(one_udp(LinkType::IPV4, &ipv4(41, &in6)).payload, b"66");
    assert_eq!(one_udp(LinkType::IPV6, &ipv6_raw(4, &in4)).payload, b"44");
    assert_eq!(one_udp(LinkType::IPV6, &ipv6_raw(41, &in6)).payload, b"66");
}

#[test]
fn tunnel_depth_is_bounded() {
    let mut f = ipv4(17, &udp(1, 2, b"deep"));
    for _ in 0..MAX_TUNNEL_DEPTH {
        f = ipv4(4, &f);
    }
    assert_eq!(one_udp(LinkType::IPV4, &f).payload, b"deep");
    let f = ipv4(4, &f);
    let (v, dec) = run(LinkType::IPV4, &f);
    assert!(v.is_empty());
    assert_eq!(dec.stats().skipped(SkipReason::TunnelDepthExceeded), 1);
}

// ---------- fragments ----------

#[test]
fn ipv4_fragments_out_of_order_and_duplicated() {
    let payload: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
    let dgram = udp(5060, 5060, &payload);
    let pieces: Vec<(u16, &[u8])> = dgram
        .chunks(1480)
        .enumerate()
        .map(|(i, c)| (i as u16, c))
        .collect();
    let n = pieces.len() as u16;
    let frame = |i: u16, c: &[u8]| {
        let fo = (i * 185) | if i + 1 < n { 0x2000 } else { 0 };
        eth(0x0800, &ipv4_frag(A4, B4, 17, 0x4242, fo, c))
    };
    let mut dec = decoder();
    let mut got = Vec::new();
    for &i in &[2u16, 0, 0, 2] {
        got.extend(run_at(
            &mut dec,
            LinkType::ETHERNET,
            &frame(i, pieces[i as usize].1),
            10,
        ));
    }
    assert!(got.is_empty());
    assert_eq!(dec.fragment_buffers(), 1);
    got.extend(run_at(
        &mut dec,
        LinkType::ETHERNET,
        &frame(1, pieces[1].1),
        20,
    ));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].payload, payload);
    assert_eq!(got[0].ts, Timestamp(20));
    assert_eq!(dec.fragment_buffers(), 0);
    assert_eq!(dec.stats().fragments_reassembled, 1);
    // A late duplicate starts a new buffer that later times out.
    run_at(&mut dec, LinkType::ETHERNET, &frame(0, pieces[0].1), 30);
    dec.handle_timeout(Timestamp(10_000_000_000));
    assert_eq!(dec.fragment_buffers(), 0);
    assert_eq!(dec.stats().skipped(SkipReason::FragmentTimeout), 1);
}

#[test]
fn ipv6_fragments_out_of_order_and_duplicated() {
    let payload: Vec<u8> = (0..2500u32).map(|i| (i % 253) as u8).collect();
    let dgram = udp(6363, 6363, &payload);
    let chunks: Vec<&[u8]> = dgram.chunks(1232).collect();
    let frame = |i: usize| {
        let off = (i * 1232) as u16;
        let more = u16::from(i + 1 < chunks.len());
        let mut p = vec![17, 0];
        p.extend_from_slice(&(off | more).to_be_bytes());
        p.extend_from_slice(&0xdead_beefu32.to_be_bytes());
        p.extend_from_slice(chunks[i]);
        eth(0x86DD, &ipv6_raw(44, &p))
    };
    let mut dec = decoder();
    let mut got = Vec::new();
    for i in [2usize, 1, 1, 2, 0] {
        got.extend(run_at(&mut dec, LinkType::ETHERNET, &frame(i), 0));
    }
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].payload, payload);
    assert_eq!(got[0].src, sa6(A6, 6363));
}

#[test]
fn fragment_table_eviction() {
    let mut dec = Decoder::new(DecoderConfig {
        max_frag_buffers: 4,
        ..DecoderConfig::default()
    });
    for id in 0..10u16 {
        run_at(
            &mut dec,
            LinkType::IPV4,
            &ipv4_frag(A4, B4, 17, id, 0x2000, &[0; 8]),
            0,
        );
    }
    assert_eq!(dec.fragment_buffers(), 4);
    assert_eq!(dec.stats().skipped(SkipReason::FragmentEvicted), 6);
}

#[test]
fn fragments_never_reassembled_are_counted_by_reason() {
    let mut dec = decoder();
    // IPv6: a reassembled payload that starts with another fragment header.
    let inner_frag = [17u8, 0, 0, 1, 0, 0, 0, 7, 1, 2, 3, 4, 5, 6, 7, 8];
    let mut outer = vec![44, 0, 0, 0];
    outer.extend_from_slice(&0x0102_0304u32.to_be_bytes());
    outer.extend_from_slice(&inner_frag);
    assert!(run_at(&mut dec, LinkType::IPV6, &ipv6_raw(44, &outer), 0).is_empty());
    assert_eq!(dec.stats().skipped(SkipReason::FragmentNested), 1);
    // IPv4: two "last fragments" of one datagram ending at different offsets.
    run_at(
        &mut dec,
        LinkType::IPV4,
        &ipv4_frag(A4, B4, 17, 9, 1, &[0; 16]),
        0,
    );
    run_at(
        &mut dec,
        LinkType::IPV4,
        &ipv4_frag(A4, B4, 17, 9, 2, &[0; 16]),
        0,
    );
    assert_eq!(dec.stats().skipped(SkipReason::FragmentInconsistent), 1);
    // The input ends with a datagram still missing its first fragment: a timeout at the
    // end of the input gives it up as timed out.
    run_at(
        &mut dec,
        LinkType::IPV4,
        &ipv4_frag(A4, B4, 17, 10, 1, &[0; 16]),
        0,
    );
    assert_eq!(dec.fragment_buffers(), 1);
    dec.handle_timeout(Timestamp(i64::MAX));
    assert_eq!(dec.fragment_buffers(), 0);
    assert_eq!(dec.stats().skipped(SkipReason::FragmentTimeout), 1);
    assert_eq!(dec.stats().skipped_total(), 3);
    assert_eq!(dec.stats().datagrams, 0);
}

// ---------- TCP ----------

fn tcp_frame(seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    eth(
        0x0800,
        &ipv4(6, &tcp(40000, 5060, seq, flags | ACK, payload)),
    )
}

fn tcp_feed(dec: &mut Decoder, segs: &[(u32, u8, &[u8])]) -> Vec<String> {
    let mut got = Vec::new();
    for (i, (seq, flags, p)) in segs.iter().enumerate() {
        for o in run_at(
            dec,
            LinkType::ETHERNET,
            &tcp_frame(*seq, *flags, p),
            i as i64,
        ) {
            assert_eq!(o.transport, Transport::Tcp);
            assert_eq!(o.src, sa4(A4, 40000));
            assert_eq!(o.ts, Timestamp(i as i64));
            got.push(String::from_utf8(o.payload).unwrap());
        }
    }
    got
}

#[test]
fn tcp_several_messages_in_one_segment() {
    let mut dec = decoder();
    let got = tcp_feed(
        &mut dec,
        &[
            (100, SYN, b""),
            (101, 0, b"one\ntwo\nthr"),
            (112, 0, b"ee\n"),
        ],
    );
    assert_eq!(got, ["one\n", "two\n", "three\n"]);
}

#[test]
fn tcp_message_across_many_segments_and_out_of_order() {
    let mut dec = decoder();
    let got = tcp_feed(
        &mut dec,
        &[
            (1, 0, b"he"),
            (5, 0, b"o wo"),
            (3, 0, b"ll"),
            (12, 0, b"\n"),
            (9, 0, b"rld"),
            (13, 0, b"x\n"),
        ],
    );
    assert_eq!(got, ["hello world\n", "x\n"]);
    // Emission ts is that of the packet that completed the message (the 5th, index 4).
    let mut dec = decoder();
    let segs: [(u32, u8, &[u8]); 3] = [(1, 0, b"ab"), (4, 0, b"\n"), (3, 0, b"c")];
    let mut ts = Vec::new();
    for (i, (seq, fl, p)) in segs.iter().enumerate() {
        for o in run_at(
            &mut dec,
            LinkType::ETHERNET,
            &tcp_frame(*seq, *fl, p),
            i as i64 * 7,
        ) {
            ts.push(o.ts);
        }
    }
    assert_eq!(ts, [Timestamp(14)]);
}

#[test]
fn tcp_retransmission_and_overlap() {
    let mut dec = decoder();
    let got = tcp_feed(
        &mut dec,
        &[
            (10, 0, b"abc"),
            (10, 0, b"abc"),
            (11, 0, b"bcd\n"),
            (10, 0, b"abcd\nef\n"),
            (17, 0, b"\n"),
        ],
    );
    assert_eq!(got, ["abcd\n", "ef\n"]);
}

#[test]
fn tcp_sequence_wraparound() {
    let mut dec = decoder();
    let isn = u32::MAX - 5;
    let got = tcp_feed(
        &mut dec,
        &[
            (isn, SYN, b""),
            (isn.wrapping_add(5), 0, b"xyz\n"), // out of order across the wrap
            (isn.wrapping_add(1), 0, b"wrap"),
        ],
    );
    assert_eq!(got, ["wrapxyz\n"]);
}

#[test]
fn tcp_gap_is_skipped() {
    let mut dec = Decoder::new(DecoderConfig {
        tcp_framer: Some(lines),
        max_tcp_out_of_order_segments: 3,
        ..DecoderConfig::default()
    });
    // Bytes 5..10 never arrive.
    let mut segs: Vec<(u32, u8, &[u8])> = vec![(0, 0, b"lost ")];
    for i in 0..5u32 {
        segs.push((10 + i * 4, 0, b"ok!\n"));
    }
    let got = tcp_feed(&mut dec, &segs);
    assert_eq!(got, ["ok!\n"; 5]);
    assert_eq!(dec.stats().skipped(SkipReason::TcpGapSkipped), 1);
}

#[test]
fn tcp_not_ours_fin_rst_and_no_framer() {
    let mut dec = decoder();
    // With the SYN seen, the first bytes that are not ours end the flow at once (a flow
    // joined mid-stream would first look for a message start; see tcp.rs resync).
    assert!(tcp_feed(
        &mut dec,
        &[(0, SYN, b""), (1, 0, b"# binary"), (9, 0, b"more\n")]
    )
    .is_empty());
    assert_eq!(dec.stats().skipped(SkipReason::TcpNotOurs), 1);
    assert_eq!(dec.tcp_flows(), 1);
    tcp_feed(&mut dec, &[(14, FIN, b"")]);
    assert_eq!(dec.tcp_flows(), 0);
    tcp_feed(&mut dec, &[(1, 0, b"partial")]);
    assert_eq!(dec.tcp_flows(), 1);
    tcp_feed(&mut dec, &[(8, RST, b"")]);
    assert_eq!(dec.tcp_flows(), 0);
    // Data on a FIN segment is still delivered.
    assert_eq!(tcp_feed(&mut dec, &[(1, FIN, b"bye\n")]), ["bye\n"]);
    // No framer: TCP ignored, no state.
    let mut dec = Decoder::new(DecoderConfig::default());
    let v = run_at(&mut dec, LinkType::ETHERNET, &tcp_frame(1, 0, b"x\n"), 0);
    assert!(v.is_empty());
    assert_eq!(dec.tcp_flows(), 0);
}

#[test]
fn tcp_buffer_overflow_counts() {
    let mut dec = Decoder::new(DecoderConfig {
        tcp_framer: Some(lines),
        max_tcp_buffer_bytes: 1000,
        ..DecoderConfig::default()
    });
    let chunk = [b'a'; 400];
    let segs: Vec<(u32, u8, &[u8])> = (0..4u32).map(|i| (i * 400, 0, &chunk[..])).collect();
    assert!(tcp_feed(&mut dec, &segs).is_empty());
    assert!(dec.stats().skipped(SkipReason::TcpBufferOverflow) >= 1);
    // After the overflow the flow resynchronises on the next line.
    // (The buffer was cleared at the third segment, so 800 bytes of 'a' remain.)
    let got = tcp_feed(&mut dec, &[(1600, 0, b"\nnext\n")]);
    assert_eq!(got, ["a".repeat(800) + "\n", "next\n".to_string()]);
}

// ---------- SCTP ----------

#[test]
fn sctp_data_chunks() {
    let sack = vec![3, 0, 0, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let p = sctp(
        5060,
        5060,
        &[
            sack.clone(),
            data_chunk(3, 1, 0, b"one"),
            data_chunk(3, 2, 1, b"second"),
        ],
    );
    let (v, _) = run(LinkType::IPV4, &ipv4(132, &p));
    let payloads: Vec<_> = v.iter().map(|o| o.payload.clone()).collect();
    assert_eq!(payloads, [b"one".to_vec(), b"second".to_vec()]);
    assert!(v.iter().all(|o| o.transport == Transport::Sctp));
    let (v, dec) = run(LinkType::IPV4, &ipv4(132, &sctp(1, 2, &[sack])));
    assert!(v.is_empty());
    assert_eq!(dec.stats().skipped(SkipReason::SctpNonData), 1);
    // Bad chunk length.
    let (v, dec) = run(LinkType::IPV4, &ipv4(132, &sctp(1, 2, &[vec![0, 3, 0, 2]])));
    assert!(v.is_empty());
    assert_eq!(dec.stats().skipped(SkipReason::BadSctp), 1);
}

#[test]
fn sctp_fragmented_message_reassembled() {
    let mut dec = decoder();
    let f1 = ipv4(132, &sctp(5060, 5060, &[data_chunk(2, 10, 0, b"INVITE ")]));
    let f2 = ipv4(132, &sctp(5060, 5060, &[data_chunk(0, 11, 0, b"sip:a ")]));
    let f3 = ipv4(132, &sctp(5060, 5060, &[data_chunk(1, 12, 0, b"SIP/2.0")]));
    assert!(run_at(&mut dec, LinkType::IPV4, &f1, 0).is_empty());
    assert!(run_at(&mut dec, LinkType::IPV4, &f2, 0).is_empty());
    assert!(run_at(&mut dec, LinkType::IPV4, &f2, 0).is_empty()); // retransmission
    let v = run_at(&mut dec, LinkType::IPV4, &f3, 5);
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].payload, b"INVITE sip:a SIP/2.0");
    // An end fragment without its beginning is counted.
    assert!(run_at(&mut dec, LinkType::IPV4, &f3, 6).is_empty());
    assert_eq!(dec.stats().skipped(SkipReason::SctpFragmented), 1);
}

// ---------- malformed input ----------

#[test]
fn every_truncation_of_every_frame_is_safe() {
    let inner = eth(0x0800, &ipv4(17, &udp(5060, 5060, b"payload")));
    let mut e3 = vec![0x20, 0, 0, 1, 1, 2, 3, 4, 0, 0, 0, 1];
    e3.extend_from_slice(&[0; 8]);
    e3.extend_from_slice(&inner);
    let mut vx = vec![0x08, 0, 0, 0, 0, 0, 1, 0];
    vx.extend_from_slice(&inner);
    let frames = [
        eth(0x0800, &ipv4(47, &gre(0x1000, 0x22EB, &[1], &e3))),
        eth(0x0800, &ipv4(17, &udp(1, 4789, &vx))),
        vlan(
            &[(0x88A8, 1), (0x8100, 2)],
            0x86DD,
            &ipv6_raw(6, &tcp(1, 2, 3, 0, b"a\n")),
        ),
        eth(
            0x0800,
            &ipv4(132, &sctp(1, 2, &[data_chunk(3, 1, 0, b"x")])),
        ),
        eth(
            0x86DD,
            &ipv6_raw(44, &[17, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0]),
        ),
    ];
    let mut dec = decoder();
    for f in &frames {
        for cut in 0..=f.len() {
            for link in [
                LinkType::ETHERNET,
                LinkType::LINUX_SLL,
                LinkType::NULL,
                LinkType::RAW,
            ] {
                run_at(&mut dec, link, &f[..cut], 0);
                run_at(&mut dec, link, &f[cut..], 0);
            }
        }
    }
    assert!(dec.stats().skipped(SkipReason::Truncated) > 100);
}

#[test]
fn lying_length_fields() {
    // IPv4 total length larger than captured: truncated, not read out of bounds.
    let mut ip = ipv4(17, &udp(1, 2, b"abc"));
    ip[2..4].copy_from_slice(&9000u16.to_be_bytes());
    let (v, dec) = run(LinkType::IPV4, &ip);
    assert!(v.is_empty());
    assert_eq!(dec.stats().skipped(SkipReason::Truncated), 1);
    // UDP length below 8 / above the IP payload.
    let mut ip = ipv4(17, &udp(1, 2, b"abc"));
    ip[24..26].copy_from_slice(&3u16.to_be_bytes());
    assert_eq!(
        run(LinkType::IPV4, &ip)
            .1
            .stats()
            .skipped(SkipReason::BadUdp),
        1
    );
    ip[24..26].copy_from_slice(&60000u16.to_be_bytes());
    assert_eq!(
        run(LinkType::IPV4, &ip)
            .1
            .stats()
            .skipped(SkipReason::Truncated),
        1
    );
    // UDP length shorter than the payload trims it.
    ip[24..26].copy_from_slice(&10u16.to_be_bytes());
    assert_eq!(one_udp(LinkType::IPV4, &ip).payload, b"ab");
    // IHL below 5, TCP data offset below 5.
    let mut ip = ipv4(17, &udp(1, 2, b"abc"));
    ip[0] = 0x44;
    assert_eq!(
        run(LinkType::IPV4, &ip)
            .1
            .stats()
            .skipped(SkipReason::BadIpv4Header),
        1
    );
    let mut ip = ipv4(6, &tcp(1, 2, 3, 0, b"x"));
    ip[32] = 0x20;
    assert_eq!(
        run(LinkType::IPV4, &ip)
            .1
            .stats()
            .skipped(SkipReason::BadTcp),
        1
    );
    // Fragment offset beyond the 64 KiB cap.
    let f = ipv4_frag(A4, B4, 17, 1, 0x1FFF, &[0; 100]);
    assert_eq!(
        run(LinkType::IPV4, &f)
            .1
            .stats()
            .skipped(SkipReason::FragmentTooLarge),
        1
    );
}

#[test]
fn stats_count_frames_bytes_datagrams() {
    let mut dec = decoder();
    let f = eth(0x0800, &ipv4(17, &udp(1, 2, b"abc")));
    run_at(&mut dec, LinkType::ETHERNET, &f, 0);
    run_at(&mut dec, LinkType::ETHERNET, &eth(0x0806, &[0; 28]), 0);
    let s = dec.stats();
    assert_eq!((s.frames, s.datagrams), (2, 1));
    assert_eq!(s.bytes, (f.len() + 42) as u64);
    assert_eq!(s.skipped(SkipReason::NonIpEthertype), 1);
}

// ---------- TLS ----------

/// A TLS 1.2 record carrying a ClientHello (no extensions). Its random contains a line
/// feed, so the `lines` framer would emit a message if these bytes reached it.
fn client_hello() -> Vec<u8> {
    let mut hello = vec![3, 3];
    hello.extend((0..32u8).map(|i| if i == 5 { b'\n' } else { i }));
    hello.push(0); // session id
    hello.extend_from_slice(&[0, 4, 0x13, 0x01, 0xc0, 0x2f]); // cipher suites
    hello.extend_from_slice(&[1, 0]); // compression: null
    hello.extend_from_slice(&[0, 0]); // extensions
    let mut hs = vec![1]; // ClientHello
    hs.extend_from_slice(&(hello.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&hello);
    let mut rec = vec![0x16, 3, 1];
    rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    rec.extend_from_slice(&hs);
    rec
}

/// One TCP segment from `src` to `dst` (A4/B4 with the given ports).
fn tcp_between(client_to_server: bool, cp: u16, sp: u16, seq: u32, flags: u8, p: &[u8]) -> Vec<u8> {
    let seg = if client_to_server {
        ipv4_frag(A4, B4, 6, 0, 0, &tcp(cp, sp, seq, flags | ACK, p))
    } else {
        ipv4_frag(B4, A4, 6, 0, 0, &tcp(sp, cp, seq, flags | ACK, p))
    };
    eth(0x0800, &seg)
}

#[test]
fn tls_handshake_on_a_sip_port_is_counted_not_framed() {
    let mut dec = decoder();
    let hello = client_hello();
    let server_hello = [0x16, 3, 3, 0, 4, 2, 0, 0, 0];
    let app = [0x17, 3, 3, 0, 3, b'a', b'\n', b'b'];
    let segs: [(bool, u32, u8, &[u8]); 7] = [
        (true, 100, SYN, b""),
        (false, 900, SYN, b""),
        (true, 101, 0, &hello),
        (false, 901, 0, &server_hello),
        (true, 101 + hello.len() as u32, 0, &app),
        (false, 910, 0, &app),
        (true, 109 + hello.len() as u32, FIN, b""),
    ];
    let mut got = Vec::new();
    for (i, (c2s, seq, flags, p)) in segs.iter().enumerate() {
        let f = tcp_between(*c2s, 40000, 5060, *seq, *flags, p);
        got.extend(run_at(&mut dec, LinkType::ETHERNET, &f, i as i64));
    }
    assert!(got.is_empty(), "TLS bytes reached the framer: {got:?}");
    let st = dec.stats();
    assert_eq!(st.tls_flows(), 1, "one connection, two directions");
    assert_eq!(st.skipped(SkipReason::TlsFlow), 1);
    let bytes = hello.len() + server_hello.len() + 2 * app.len();
    assert_eq!(st.tls_bytes, bytes as u64);
    assert_eq!(st.skipped(SkipReason::TcpNotOurs), 0);
    assert!(st
        .nonzero_skips()
        .any(|(r, n)| r.as_str() == "tls_flow" && n == 1));
    // A plain-text connection next to it is still framed.
    let f = tcp_between(true, 40001, 5060, 7, 0, b"OPTIONS\n");
    let v = run_at(&mut dec, LinkType::ETHERNET, &f, 9);
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].payload, b"OPTIONS\n");
    assert_eq!(dec.stats().tls_flows(), 1);
}

#[test]
fn any_flow_on_port_5061_is_tls_even_mid_stream() {
    let mut dec = decoder();
    // The capture starts after the handshake; even bytes that look like text lines are
    // not decoded on the SIP-over-TLS port.
    for (i, cp) in [50000u16, 50001].into_iter().enumerate() {
        for (j, c2s) in [true, false, true].into_iter().enumerate() {
            let f = tcp_between(
                c2s,
                cp,
                vcontap_wire::SIP_TLS_PORT,
                1 + j as u32 * 8,
                0,
                b"INVITE\n",
            );
            assert!(run_at(&mut dec, LinkType::ETHERNET, &f, (i * 3 + j) as i64).is_empty());
        }
    }
    assert_eq!(dec.stats().tls_flows(), 2);
    assert_eq!(dec.stats().tls_bytes, 6 * 7);
    assert_eq!(dec.stats().datagrams, 0);
    // A reset ends the flow's state.
    let before = dec.tcp_flows();
    let f = tcp_between(true, 50000, 5061, 30, RST, b"");
    run_at(&mut dec, LinkType::ETHERNET, &f, 10);
    assert_eq!(dec.tcp_flows(), before - 1);
}
