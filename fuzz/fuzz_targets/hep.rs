//! Fuzzes the HEP decoder (v1/v2/v3, compressed payloads, gzipped datagrams) and the TCP
//! framer: the input is decoded as one datagram, then fed to a framer in pieces whose sizes
//! come from the input. Every decoded message is re-encoded and must decode to the same
//! fields. Nothing here may panic, allocate without bound or loop forever.
#![no_main]

use vcontap_hep::{decode, decode_with, encode_v3, Limits, TcpFramer, MAX_BUFFERED};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // A small cap keeps bombs cheap and exercises the cap path.
    let small = Limits { max_inflated: 4096 };
    if let Ok(m) = decode_with(data, &small) {
        assert!(m.payload_bytes().len() <= 65_535);
        let _ = m.timestamp();
        let _ = m.socket_addrs();
        let mut out = Vec::new();
        if encode_v3(&m, &mut out).is_ok() {
            let again = decode(&out).expect("an encoded message decodes");
            assert_eq!(again.payload_bytes(), m.payload_bytes());
            assert_eq!(again.capture_id, m.capture_id);
            assert_eq!(again.src_ip, m.src_ip);
            assert_eq!(again.dst_port, m.dst_port);
        }
    }
    let _ = decode(data);

    // Stream: the first byte picks the piece size.
    let Some((&step, rest)) = data.split_first() else {
        return;
    };
    let step = usize::from(step).max(1);
    let mut f = TcpFramer::new();
    'stream: for piece in rest.chunks(step) {
        if f.push(piece).is_err() {
            break;
        }
        loop {
            match f.next_message() {
                Ok(Some(msg)) => {
                    assert!(msg.len() >= 6 && msg.starts_with(b"HEP3"));
                    let _ = decode_with(msg, &small);
                }
                Ok(None) => break,
                Err(_) => break 'stream,
            }
        }
        assert!(f.buffered() <= MAX_BUFFERED);
    }
});
