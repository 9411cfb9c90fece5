//! Test-only pcap reader and frame decoder, written independently of the synthesizer's
//! builders so the tests check the bytes, not the builder against itself.

#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};

/// One pcap record.
#[derive(Debug, Clone)]
pub struct Record {
    pub ts_ns: i64,
    pub data: Vec<u8>,
}

/// Parses a little-endian microsecond classic pcap; panics (test failure) on malformed input.
pub fn read_pcap(bytes: &[u8]) -> Vec<Record> {
    assert!(bytes.len() >= 24, "short global header");
    assert_eq!(&bytes[0..4], &[0xD4, 0xC3, 0xB2, 0xA1], "magic");
    assert_eq!(u16::from_le_bytes([bytes[4], bytes[5]]), 2);
    assert_eq!(u16::from_le_bytes([bytes[6], bytes[7]]), 4);
    assert_eq!(
        u32::from_le_bytes(bytes[20..24].try_into().unwrap()),
        1,
        "ethernet"
    );
    let mut off = 24;
    let mut out = Vec::new();
    while off < bytes.len() {
        assert!(off + 16 <= bytes.len(), "truncated record header");
        let u = |o: usize| u32::from_le_bytes(bytes[off + o..off + o + 4].try_into().unwrap());
        let (secs, usec, incl, orig) = (u(0), u(4), u(8) as usize, u(12) as usize);
        assert!(usec < 1_000_000);
        assert_eq!(incl, orig, "no truncation");
        assert!(off + 16 + incl <= bytes.len(), "truncated record");
        out.push(Record {
            ts_ns: i64::from(secs) * 1_000_000_000 + i64::from(usec) * 1000,
            data: bytes[off + 16..off + 16 + incl].to_vec(),
        });
        off += 16 + incl;
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpInfo {
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
}

/// One decoded frame.
#[derive(Debug, Clone)]
pub struct Frame {
    pub ts_ns: i64,
    pub vlan: Option<u16>,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub tcp: Option<TcpInfo>,
    pub payload: Vec<u8>,
}

fn sum16(data: &[u8], mut acc: u64) -> u64 {
    for c in data.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from(c[0]) << 8
        };
        acc += u64::from(w);
    }
    acc
}

fn fold(mut acc: u64) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xFFFF) + (acc >> 16);
    }
    !(acc as u16)
}

/// Decodes Ethernet / 802.1Q / IPv4|IPv6 / UDP|TCP and verifies every checksum.
pub fn decode(rec: &Record) -> Frame {
    let d = &rec.data;
    let mut off = 12;
    let mut ethertype = u16::from_be_bytes([d[off], d[off + 1]]);
    let mut vlan = None;
    if ethertype == 0x8100 {
        vlan = Some(u16::from_be_bytes([d[off + 2], d[off + 3]]) & 0x0FFF);
        off += 4;
        ethertype = u16::from_be_bytes([d[off], d[off + 1]]);
    }
    off += 2;
    let (src_ip, dst_ip, proto, l4): (IpAddr, IpAddr, u8, &[u8]) = match ethertype {
        0x0800 => {
            let ip = &d[off..];
            assert_eq!(ip[0], 0x45);
            assert_eq!(fold(sum16(&ip[..20], 0)), 0, "IPv4 header checksum");
            let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
            assert_eq!(total, ip.len(), "IPv4 total length");
            let s: [u8; 4] = ip[12..16].try_into().unwrap();
            let t: [u8; 4] = ip[16..20].try_into().unwrap();
            (s.into(), t.into(), ip[9], &ip[20..])
        }
        0x86DD => {
            let ip = &d[off..];
            assert_eq!(ip[0] >> 4, 6);
            let plen = u16::from_be_bytes([ip[4], ip[5]]) as usize;
            assert_eq!(plen + 40, ip.len(), "IPv6 payload length");
            let s: [u8; 16] = ip[8..24].try_into().unwrap();
            let t: [u8; 16] = ip[24..40].try_into().unwrap();
            (s.into(), t.into(), ip[6], &ip[40..])
        }
        other => panic!("unexpected ethertype {other:#x}"),
    };
    let mut pseudo = 0;
    for ip in [src_ip, dst_ip] {
        pseudo = match ip {
            IpAddr::V4(v) => sum16(&v.octets(), pseudo),
            IpAddr::V6(v) => sum16(&v.octets(), pseudo),
        };
    }
    pseudo += u64::from(proto) + l4.len() as u64;
    assert_eq!(fold(sum16(l4, pseudo)), 0, "L4 checksum (proto {proto})");
    let sp = u16::from_be_bytes([l4[0], l4[1]]);
    let dp = u16::from_be_bytes([l4[2], l4[3]]);
    let (tcp, payload) = match proto {
        17 => {
            assert_ne!(
                u16::from_be_bytes([l4[6], l4[7]]),
                0,
                "UDP checksum present"
            );
            assert_eq!(u16::from_be_bytes([l4[4], l4[5]]) as usize, l4.len());
            (None, l4[8..].to_vec())
        }
        6 => {
            let hl = usize::from(l4[12] >> 4) * 4;
            let info = TcpInfo {
                seq: u32::from_be_bytes(l4[4..8].try_into().unwrap()),
                ack: u32::from_be_bytes(l4[8..12].try_into().unwrap()),
                flags: l4[13],
            };
            (Some(info), l4[hl..].to_vec())
        }
        other => panic!("unexpected protocol {other}"),
    };
    Frame {
        ts_ns: rec.ts_ns,
        vlan,
        src: SocketAddr::new(src_ip, sp),
        dst: SocketAddr::new(dst_ip, dp),
        tcp,
        payload,
    }
}

pub fn ulaw_to_linear(u: u8) -> i16 {
    let u = !u;
    let t = ((i32::from(u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4);
    (if u & 0x80 != 0 { 0x84 - t } else { t - 0x84 }) as i16
}

pub fn alaw_to_linear(a: u8) -> i16 {
    let a = a ^ 0x55;
    let mut t = i32::from(a & 0x0F) << 4;
    let seg = (a & 0x70) >> 4;
    match seg {
        0 => t += 8,
        1 => t += 0x108,
        _ => t = (t + 0x108) << (seg - 1),
    }
    (if a & 0x80 != 0 { t } else { -t }) as i16
}

/// Goertzel power of `freq` in `samples`.
pub fn goertzel(samples: &[i16], rate: f64, freq: f64) -> f64 {
    let w = std::f64::consts::TAU * freq / rate;
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in samples {
        let s0 = f64::from(x) + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    s1 * s1 + s2 * s2 - coeff * s1 * s2
}

/// The strongest frequency among 50 Hz steps in 100..=3900 Hz.
pub fn dominant(samples: &[i16], rate: f64) -> f64 {
    (2..=78)
        .map(|k| f64::from(k) * 50.0)
        .max_by(|a, b| goertzel(samples, rate, *a).total_cmp(&goertzel(samples, rate, *b)))
        .unwrap()
}

/// SIP start lines (first line of each SIP payload), in capture order, for one Call-ID.
pub fn sip_lines(frames: &[Frame], call_id: &str) -> Vec<String> {
    frames
        .iter()
        .filter(|f| is_sip(&f.payload))
        .filter_map(|f| {
            let text = String::from_utf8_lossy(&f.payload).into_owned();
            text.contains(&format!("Call-ID: {call_id}\r\n"))
                .then(|| text.split("\r\n").next().unwrap_or("").to_string())
        })
        .collect()
}

pub fn is_sip(p: &[u8]) -> bool {
    let line_end = p.windows(2).position(|w| w == b"\r\n").unwrap_or(0);
    let line = &p[..line_end];
    line.starts_with(b"SIP/2.0 ") || line.ends_with(b" SIP/2.0")
}

/// Is this UDP payload RTP (version 2, not SIP)?
pub fn is_rtp(p: &[u8]) -> bool {
    p.len() >= 12 && p[0] == 0x80 && !is_sip(p)
}
