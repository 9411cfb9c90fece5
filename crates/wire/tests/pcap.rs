//! `PcapReader` on hand-built pcapng files (several interfaces, link types, resolutions,
//! sections, byte orders), and on truncated, oversized and garbage input.

use vcontap_wire::{
    CaptureFormat, Decoder, DecoderConfig, LinkType, PcapError, PcapReader, PcapWriter, Resolution,
    Timestamp, MAX_RECORD_BYTES,
};

struct Ng {
    be: bool,
    out: Vec<u8>,
}

impl Ng {
    fn u16(&self, v: u16) -> [u8; 2] {
        if self.be {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    }
    fn u32(&self, v: u32) -> [u8; 4] {
        if self.be {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    }
    fn block(&mut self, ty: u32, body: &[u8]) {
        let mut body = body.to_vec();
        while body.len() & 3 != 0 {
            body.push(0);
        }
        let len = (body.len() + 12) as u32;
        let (t, l) = (self.u32(ty), self.u32(len));
        self.out.extend_from_slice(&t);
        self.out.extend_from_slice(&l);
        self.out.extend_from_slice(&body);
        self.out.extend_from_slice(&l);
    }
    fn shb(&mut self) {
        let mut b = self.u32(0x1A2B_3C4D).to_vec();
        b.extend_from_slice(&self.u16(1));
        b.extend_from_slice(&self.u16(0));
        b.extend_from_slice(&[0xff; 8]);
        self.block(0x0A0D_0D0A, &b);
    }
    fn idb(&mut self, link: u16, tsresol: Option<u8>) {
        let mut b = self.u16(link).to_vec();
        b.extend_from_slice(&[0, 0]);
        b.extend_from_slice(&self.u32(0));
        if let Some(r) = tsresol {
            b.extend_from_slice(&self.u16(9));
            b.extend_from_slice(&self.u16(1));
            b.extend_from_slice(&[r, 0, 0, 0]);
            b.extend_from_slice(&[0, 0, 0, 0]);
        }
        self.block(1, &b);
    }
    fn epb(&mut self, iface: u32, units: u64, data: &[u8]) {
        let mut b = self.u32(iface).to_vec();
        b.extend_from_slice(&self.u32((units >> 32) as u32));
        b.extend_from_slice(&self.u32(units as u32));
        b.extend_from_slice(&self.u32(data.len() as u32));
        b.extend_from_slice(&self.u32(data.len() as u32 + 100));
        b.extend_from_slice(data);
        self.block(6, &b);
    }
    fn spb(&mut self, data: &[u8]) {
        let mut b = self.u32(data.len() as u32).to_vec();
        b.extend_from_slice(data);
        self.block(3, &b);
    }
}

fn udp_raw(payload: &[u8]) -> Vec<u8> {
    let mut v = vec![
        0x45,
        0,
        0,
        (28 + payload.len()) as u8,
        0,
        1,
        0,
        0,
        64,
        17,
        0,
        0,
    ];
    v.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
    v.extend_from_slice(&[0x13, 0xc4, 0x13, 0xc4, 0, (8 + payload.len()) as u8, 0, 0]);
    v.extend_from_slice(payload);
    v
}

fn two_interface_file(be: bool) -> Vec<u8> {
    let mut ng = Ng {
        be,
        out: Vec::new(),
    };
    ng.shb();
    ng.idb(1, None); // Ethernet, µs
    ng.idb(101, Some(9)); // raw IP, ns
    ng.idb(101, Some(0x80 | 10)); // raw IP, 2^-10 s
    let mut eth = vec![0; 12];
    eth.extend_from_slice(&[0x08, 0x00]);
    eth.extend_from_slice(&udp_raw(b"eth"));
    ng.epb(0, 1_500_000, &eth);
    ng.block(0x0BAD, b"unknown block type, skipped");
    ng.epb(1, 2_000_000_001, &udp_raw(b"raw"));
    ng.epb(2, 3 * 1024 + 512, &udp_raw(b"po2"));
    ng.spb(&eth);
    ng.epb(7, 0, b"unknown interface");
    ng.out
}

#[test]
fn pcapng_interfaces_link_types_resolutions() {
    for be in [false, true] {
        let file = two_interface_file(be);
        let mut r = PcapReader::new(&file[..]).unwrap();
        assert_eq!(r.format(), CaptureFormat::PcapNg);
        let mut dec = Decoder::new(DecoderConfig::default());
        let mut seen = Vec::new();
        while let Some(p) = r.next_packet().unwrap() {
            let (ts, link, len) = (p.ts, p.link, p.data.len());
            let mut payload = Vec::new();
            dec.decode(&p, &mut |d| payload = d.payload.to_vec());
            seen.push((ts, link, len, payload));
        }
        assert_eq!(r.skipped_records(), 1, "packet on an unknown interface");
        assert_eq!(r.link_type(), Some(LinkType::ETHERNET));
        let want = [
            (Timestamp(1_500_000_000), LinkType::ETHERNET, b"eth"),
            (Timestamp(2_000_000_001), LinkType::RAW, b"raw"),
            (Timestamp(3_500_000_000), LinkType::RAW, b"po2"),
            // SPB: interface 0's link type, the last timestamp seen.
            (Timestamp(3_500_000_000), LinkType::ETHERNET, b"eth"),
        ];
        assert_eq!(seen.len(), want.len());
        for (got, want) in seen.iter().zip(want) {
            assert_eq!((got.0, got.1), (want.0, want.1));
            // Data length is the captured length (45 / 31 bytes), not the padded one.
            let want_len = if want.1 == LinkType::ETHERNET { 45 } else { 31 };
            assert_eq!(got.2, want_len);
            assert_eq!(got.3, want.2);
        }
    }
}

#[test]
fn pcapng_several_sections_switch_byte_order() {
    let mut file = two_interface_file(false);
    let mut ng = Ng {
        be: true,
        out: Vec::new(),
    };
    ng.shb();
    ng.idb(228, Some(3)); // IPv4, ms
    ng.epb(0, 42, &udp_raw(b"s2"));
    // The old section's interface 1 no longer exists.
    ng.epb(1, 42, &udp_raw(b"gone"));
    file.extend_from_slice(&ng.out);
    let mut r = PcapReader::new(&file[..]).unwrap();
    let mut last = None;
    let mut n = 0;
    while let Some(p) = r.next_packet().unwrap() {
        n += 1;
        last = Some((p.ts, p.link, p.data.len()));
    }
    assert_eq!(n, 5);
    assert_eq!(last, Some((Timestamp(42_000_000), LinkType::IPV4, 30)));
    assert_eq!(r.skipped_records(), 2);
}

#[test]
fn pcapng_truncated_anywhere_is_clean() {
    let file = two_interface_file(false);
    for cut in 0..file.len() {
        let Ok(mut r) = PcapReader::new(&file[..cut]) else {
            continue;
        };
        let mut n = 0;
        loop {
            match r.next_packet() {
                Ok(Some(_)) => n += 1,
                Ok(None) => break,
                Err(PcapError::Truncated) => break,
                Err(e) => panic!("cut {cut}: unexpected {e}"),
            }
            assert!(n <= 4);
        }
    }
}

#[test]
fn pcapng_oversized_and_malformed_blocks() {
    let mut ng = Ng {
        be: false,
        out: Vec::new(),
    };
    ng.shb();
    ng.idb(1, None);
    let big = vec![0u8; MAX_RECORD_BYTES + 1000];
    ng.epb(0, 1, &big);
    ng.epb(0, 2, b"small");
    let mut r = PcapReader::new(&ng.out[..]).unwrap();
    let p = r.next_packet().unwrap().unwrap();
    assert_eq!(p.data, b"small");
    assert_eq!(r.skipped_records(), 1);
    assert!(r.next_packet().unwrap().is_none());

    // Block length not a multiple of 4, and below the minimum.
    for bad_len in [13u32, 4] {
        let mut ng = Ng {
            be: false,
            out: Vec::new(),
        };
        ng.shb();
        ng.out.extend_from_slice(&1u32.to_le_bytes());
        ng.out.extend_from_slice(&bad_len.to_le_bytes());
        ng.out.extend_from_slice(&[0; 16]);
        let mut r = PcapReader::new(&ng.out[..]).unwrap();
        assert!(matches!(r.next_packet(), Err(PcapError::Malformed(_))));
    }

    // EPB whose captured length exceeds its block.
    let mut ng = Ng {
        be: false,
        out: Vec::new(),
    };
    ng.shb();
    ng.idb(1, None);
    let mut b = vec![0u8; 12];
    b.extend_from_slice(&1000u32.to_le_bytes());
    b.extend_from_slice(&1000u32.to_le_bytes());
    b.extend_from_slice(&[0; 8]);
    ng.block(6, &b);
    let mut r = PcapReader::new(&ng.out[..]).unwrap();
    assert!(matches!(r.next_packet(), Err(PcapError::Malformed(_))));

    // A claimed multi-gigabyte block is not allocated: it is skipped and then truncated.
    let mut ng = Ng {
        be: false,
        out: Vec::new(),
    };
    ng.shb();
    ng.out.extend_from_slice(&6u32.to_le_bytes());
    ng.out.extend_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
    ng.out.extend_from_slice(&[0; 64]);
    let mut r = PcapReader::new(&ng.out[..]).unwrap();
    assert!(matches!(r.next_packet(), Err(PcapError::Truncated)));
}

#[test]
fn garbage_input() {
    // A NetMon 2.x header, random bytes, a pcapng SHB with a bad byte-order magic.
    let netmon = b"GMBU\x00\x02\x01\x00\xd5\x07\x07\x00\x00\x00\x11\x00";
    assert!(matches!(
        PcapReader::new(&netmon[..]),
        Err(PcapError::UnknownFormat)
    ));
    let mut x: u32 = 12345;
    let noise: Vec<u8> = (0..4096)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (x >> 16) as u8
        })
        .collect();
    assert!(matches!(
        PcapReader::new(&noise[..]),
        Err(PcapError::UnknownFormat)
    ));
    let bad_shb = [0x0A, 0x0D, 0x0D, 0x0A, 28, 0, 0, 0, 1, 2, 3, 4];
    assert!(matches!(
        PcapReader::new(&bad_shb[..]),
        Err(PcapError::UnknownFormat)
    ));
    // Classic header followed by noise: ends in an error, never a panic or a huge allocation.
    let mut w = PcapWriter::new(Vec::new(), LinkType::ETHERNET, Resolution::Micros).unwrap();
    w.write_packet(Timestamp(0), b"ok").unwrap();
    let mut file = w.into_inner().unwrap();
    file.extend_from_slice(&noise);
    let mut r = PcapReader::new(&file[..]).unwrap();
    assert_eq!(r.next_packet().unwrap().unwrap().data, b"ok");
    let mut guard = 0;
    loop {
        match r.next_packet() {
            Ok(Some(_)) => guard += 1,
            Ok(None) => break,
            Err(e) => {
                assert!(matches!(
                    e,
                    PcapError::Truncated | PcapError::RecordTooLarge(_)
                ));
                break;
            }
        }
        assert!(guard < 4096);
    }
}

#[test]
fn classic_big_endian_file_streams_large_input() {
    // Many records through a small-chunk reader: the reader must refill correctly.
    struct Trickle<'a>(&'a [u8]);
    impl std::io::Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(7).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }
    let mut file = Vec::new();
    file.extend_from_slice(&0xA1B2_3C4Du32.to_be_bytes());
    file.extend_from_slice(&[
        0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 228,
    ]);
    for i in 0..3000u32 {
        let data = udp_raw(format!("{i:05}").as_bytes());
        file.extend_from_slice(&i.to_be_bytes());
        file.extend_from_slice(&7u32.to_be_bytes());
        file.extend_from_slice(&(data.len() as u32).to_be_bytes());
        file.extend_from_slice(&(data.len() as u32).to_be_bytes());
        file.extend_from_slice(&data);
    }
    let mut r = PcapReader::new(Trickle(&file)).unwrap();
    assert_eq!(r.link_type(), Some(LinkType::IPV4));
    let mut dec = Decoder::new(DecoderConfig::default());
    let mut n = 0u32;
    while let Some(p) = r.next_packet().unwrap() {
        assert_eq!(p.ts, Timestamp::from_parts(i64::from(n), 7));
        let mut got = Vec::new();
        dec.decode(&p, &mut |d| got = d.payload.to_vec());
        assert_eq!(got, format!("{n:05}").as_bytes());
        n += 1;
    }
    assert_eq!(n, 3000);
}
