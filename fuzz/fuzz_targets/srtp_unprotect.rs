//! Fuzzes SRTP/SRTCP unprotect: raw datagrams (hostile or garbage) and mutations of valid
//! packets protected under the session's own key (so the decrypt, index-guess, replay and
//! SSRC-cap paths run, not only the tag check), with re-keys in between. Nothing here may
//! panic, and a valid packet must come back as its plaintext.
#![no_main]

use vcontap_srtp::{Session, Suite};

const SUITES: [Suite; 6] = [
    Suite::AesCm128HmacSha1_80,
    Suite::AesCm128HmacSha1_32,
    Suite::AesCm256HmacSha1_80,
    Suite::AesCm256HmacSha1_32,
    Suite::AeadAes128Gcm,
    Suite::AeadAes256Gcm,
];

fn key(suite: Suite, seed: u8) -> Vec<u8> {
    (0..suite.key_material_len())
        .map(|i| seed.wrapping_mul(31).wrapping_add(i as u8))
        .collect()
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&first, mut rest)) = data.split_first() else {
        return;
    };
    let suite = SUITES[usize::from(first) % SUITES.len()];
    let Ok(mut s) = Session::new(suite, &key(suite, first)) else {
        return;
    };
    // Ops: [op][len][len bytes]. op % 6: 0 raw RTP, 1 raw RTCP, 2 valid RTP (maybe
    // mutated), 3 valid RTCP (maybe mutated), 4 re-key, 5 valid RTP replayed.
    while let Some((&op, tail)) = rest.split_first() {
        let Some((&len, tail)) = tail.split_first() else {
            break;
        };
        let (body, tail) = tail.split_at(usize::from(len).min(tail.len()));
        rest = tail;
        match op % 6 {
            0 => {
                let _ = s.unprotect_rtp(&mut body.to_vec());
            }
            1 => {
                let _ = s.unprotect_rtcp(&mut body.to_vec());
            }
            2 | 5 => {
                // The body is the plaintext after a fixed v2 header byte; the op's high
                // bits pick a ROC and an optional one-byte mutation.
                let mut plain = vec![0x80];
                plain.extend_from_slice(body);
                let roc = u32::from(op >> 3);
                let Some(p) = s.protect_rtp(&plain, roc) else {
                    continue;
                };
                let mut q = p.clone();
                let mutate = op & 0x04 != 0 && !q.is_empty();
                if mutate {
                    let at = usize::from(len) % q.len();
                    q[at] ^= 0x01 | op;
                }
                let accepted = s.unprotect_rtp(&mut q);
                if let (Ok(n), false) = (accepted, mutate) {
                    assert_eq!(&q[..n], &plain[..], "a valid packet must decrypt");
                    if op % 6 == 5 {
                        assert!(
                            s.unprotect_rtp(&mut p.clone()).is_err(),
                            "a replay is refused"
                        );
                    }
                }
            }
            3 => {
                let mut plain = vec![0x80, 200];
                plain.extend_from_slice(body);
                let index = u32::from(len) << (op >> 4);
                let Some(p) = s.protect_rtcp(&plain, index, op & 0x08 == 0) else {
                    continue;
                };
                let mut q = p.clone();
                let mutate = op & 0x04 != 0 && !q.is_empty();
                if mutate {
                    let at = usize::from(len) % q.len();
                    q[at] ^= 0x01 | op;
                }
                if let Ok(n) = s.unprotect_rtcp(&mut q) {
                    if !mutate {
                        assert_eq!(&q[..n], &plain[..], "a valid SRTCP packet must decrypt");
                    }
                }
            }
            _ => {
                let suite = SUITES[usize::from(len) % SUITES.len()];
                let _ = s.rekey(suite, &key(suite, len));
            }
        }
    }
    let st = s.stats();
    let _ = (st.rtp, st.auth_failed, vcontap_srtp::is_rtcp(data));
});
