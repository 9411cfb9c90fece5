use super::*;

/// The test send side, unwrapped.
mod protect {
    use super::*;

    pub fn rtp(k: &Keyed, plain: &[u8], roc: u32) -> Vec<u8> {
        crate::protect::rtp(k, plain, roc).unwrap()
    }

    pub fn rtcp(k: &Keyed, plain: &[u8], index: u32, encrypt: bool) -> Vec<u8> {
        crate::protect::rtcp(k, plain, index, encrypt).unwrap()
    }
}

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn keystream(key: &str, salt: &str, blocks: usize) -> Vec<u8> {
    let aes = Aes::new(&hex(key)).unwrap();
    let mut iv = [0u8; 16];
    iv[..14].copy_from_slice(&hex(salt));
    let mut out = vec![0u8; blocks * 16];
    aes.apply_keystream(&iv, &mut out);
    out
}

/// RFC 3711 Appendix B.2: AES-CM keystream, first and last blocks of the segment.
#[test]
fn rfc3711_b2_aes_cm_keystream() {
    let ks = keystream(
        "2B7E151628AED2A6ABF7158809CF4F3C",
        "F0F1F2F3F4F5F6F7F8F9FAFBFCFD",
        0xff02,
    );
    assert_eq!(
        ks[..48],
        hex(
            "E03EAD0935C95E80E166B16DD92B4EB4 D23513162B02D0F72A43A2FE4A5F97AB
             41E95B3BB0A2E8DD477901E4FCA894C0"
        )[..]
    );
    assert_eq!(
        ks[0xfeff * 16..],
        hex(
            "EC8CDF7398607CB0F2D21675EA9EA1E4 362B7C3C6773516318A077D7FC5073AE
             6A2CC3787889374FBEB4C81B17BA6C44"
        )[..]
    );
}

/// RFC 3711 Appendix B.3: key derivation (kdr 0).
#[test]
fn rfc3711_b3_key_derivation() {
    let master = Aes::new(&hex("E1F97A0D3E018BE0D64FA32C06DE4139")).unwrap();
    let salt = hex("0EC675AD498AFEEBB6960B3AABE6");
    let mut k = [0u8; 16];
    derive(&master, &salt, LABEL_RTP_KEY, &mut k);
    assert_eq!(k[..], hex("C61E7A93744F39EE10734AFE3FF7A087")[..]);
    let mut s = [0u8; 14];
    derive(&master, &salt, LABEL_RTP_SALT, &mut s);
    assert_eq!(s[..], hex("30CBBC08863D8C85D49DB34A9AE1")[..]);
    let mut a = [0u8; 20];
    derive(&master, &salt, LABEL_RTP_AUTH, &mut a);
    assert_eq!(a[..], hex("CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4")[..]);
}

/// RFC 6188 §7.1 (AES-256-CM keystream) and §7.3 (its last blocks).
#[test]
fn rfc6188_aes_256_cm_keystream() {
    let ks = keystream(
        "57f82fe3613fd170a85ec93c40b1f0922ec4cb0dc025b58272147cc438944a98",
        "f0f1f2f3f4f5f6f7f8f9fafbfcfd",
        0xff02,
    );
    assert_eq!(
        ks[..48],
        hex(
            "92bdd28a93c3f52511c677d08b5515a4 9da71b2378a854f67050756ded165bac
             63c4868b7096d88421b563b8c94c9a31"
        )[..]
    );
    assert_eq!(
        ks[0xfeff * 16..],
        hex(
            "cea518c90fd91ced9cbb18c078a547113dbc4814f4da5f00a08772b63c6a046d
             6eb246913062a16891433e97dd01a57f"
        )[..]
    );
}

/// RFC 6188 §7.2: AES-256 key derivation.
#[test]
fn rfc6188_aes_256_key_derivation() {
    let master = Aes::new(&hex(
        "f0f04914b513f2763a1b1fa130f10e2998f6f6e43e4309d1e622a0e332b9f1b6",
    ))
    .unwrap();
    let salt = hex("3b04803de51ee7c96423ab5b78d2");
    let mut k = [0u8; 32];
    derive(&master, &salt, LABEL_RTP_KEY, &mut k);
    assert_eq!(
        k[..],
        hex("5ba1064e30ec51613cad926c5a28ef731ec7fb397f70a960653caf06554cd8c4")[..]
    );
    let mut s = [0u8; 14];
    derive(&master, &salt, LABEL_RTP_SALT, &mut s);
    assert_eq!(s[..], hex("fa31791685ca444a9e07c6c64e93")[..]);
    let mut a = [0u8; 20];
    derive(&master, &salt, LABEL_RTP_AUTH, &mut a);
    assert_eq!(a[..], hex("fd9c32d39ed5fbb5a9dc96b30818454d1313dc05")[..]);
}

fn gcm_keyed(suite: Suite, key: &str, salt: &str) -> Keyed {
    let mut s = [0u8; 12];
    s.copy_from_slice(&hex(salt));
    Keyed {
        suite,
        rtp: Transform::gcm(&hex(key), s).unwrap(),
        rtcp: Transform::gcm(&hex(key), s).unwrap(),
        ssrcs: Vec::new(),
    }
}

const RFC7714_RTP: &str = "8040f17b8041f8d35501a0b2 47616c6c696120657374206f6d6e697320646976697361
                           20696e207061727465732074726573";

/// RFC 7714 §16.1.1: AEAD_AES_128_GCM, SRTP, session key and salt given directly.
#[test]
fn rfc7714_aes_128_gcm_rtp() {
    let k = gcm_keyed(
        Suite::AeadAes128Gcm,
        "000102030405060708090a0b0c0d0e0f",
        "517569642070726f2071756f",
    );
    let mut p = hex(
        "8040f17b8041f8d35501a0b2 f24de3a3fb34de6cacba861c9d7e4bcabe633bd50d294e6f42a5f47a
         51c7d19b36de3adf8833 899d7f27beb16a9152cf765ee4390cce",
    );
    assert_eq!(protect::rtp(&k, &hex(RFC7714_RTP), 0), p, "protect side");
    let RtpOutcome::Ok(n, st) = k.unprotect_rtp(&mut p, 1, &mut Vec::new(), ROC_GUESSES) else {
        panic!("RFC 7714 vector did not unprotect");
    };
    assert_eq!(p[..n], hex(RFC7714_RTP)[..]);
    assert_eq!(st.rtp.unwrap().window.top, 0xf17b);
}

const LIBSRTP_RTP: &str =
    "80001234decafbadcafebabe000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const LIBSRTP_RTCP: &str =
    "81c80006cafebabe000102030405060708090a0b0c0d0e0f1011121381c90001cafebabe";

fn material(len: usize) -> Vec<u8> {
    (1..=len as u8).collect()
}

/// Packets protected by libsrtp 2 (through the `pylibsrtp` bindings) with master key
/// material 01 02 03..., an independent implementation of the whole KDF + transform.
#[test]
fn libsrtp_packets_unprotect() {
    let cases = [
        (
            Suite::AesCm128HmacSha1_80,
            "80001234decafbadcafebabef006539a694c852a29a19f9c5359e0c2506478514ac3280bb2acbaa5aff8dcc0fa934e65bb5308810ca6",
            "81c80006cafebabea85a0b5b3178bbfa3990190d8f7c76dec32d24ea5e5386292c73032c800000015849eefba1958e6bb9d6",
        ),
        (
            Suite::AesCm128HmacSha1_32,
            "80001234decafbadcafebabef006539a694c852a29a19f9c5359e0c2506478514ac3280bb2acbaa5aff8dcc0fa934e65",
            "81c80006cafebabea85a0b5b3178bbfa3990190d8f7c76dec32d24ea5e5386292c73032c800000015849eefba1958e6bb9d6",
        ),
        (
            Suite::AeadAes128Gcm,
            "80001234decafbadcafebabe8d204fc62be6d9fdf31a34a5a5de00ee039f1e49b09a75b8ef16391bc5fe3d2fe9dfd813e937dc073e5519598790ee8a",
            "81c80006cafebabe70d6ca1cdc9589f3b811ae674dcde02c03cb990ac77c70b3f70cc57943777a78a6f5365d163b157aa1412e7f80000001",
        ),
        (
            Suite::AeadAes256Gcm,
            "80001234decafbadcafebabec1e5eeec8809779f607a79404e395abc0e0208e5328f1baac1625c4d5251d81ea4cd9a53d520d964b2ef00686ec11fc5",
            "81c80006cafebabe2e5248a31db55796bb9ee0519ee154981db743586c8c6e7be3f435d9425197e6a79edcac6c4c920bbacc1e1980000001",
        ),
    ];
    for (suite, rtp, rtcp) in cases {
        let mut s = Session::new(suite, &material(suite.key_material_len())).unwrap();
        let mut p = hex(rtp);
        let n = s.unprotect_rtp(&mut p).unwrap();
        assert_eq!(p[..n], hex(LIBSRTP_RTP)[..], "{suite:?} RTP");
        let mut p = hex(rtcp);
        let n = s.unprotect_rtcp(&mut p).unwrap();
        assert_eq!(p[..n], hex(LIBSRTP_RTCP)[..], "{suite:?} RTCP");
        assert_eq!(
            s.stats(),
            Stats {
                rtp: 1,
                rtcp: 1,
                ..Stats::default()
            }
        );
        // The same packets again are replays, not errors that end anything.
        let mut p = hex(rtp);
        assert_eq!(s.unprotect_rtp(&mut p), Err(Error::Replay));
        let mut p = hex(rtcp);
        assert_eq!(s.unprotect_rtcp(&mut p), Err(Error::Replay));
        assert_eq!(s.stats().replayed, 2);
    }
}

fn plain_rtp(ssrc: u32, seq: u16) -> Vec<u8> {
    let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 160, 0, 0, 0, 0];
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[8..12].copy_from_slice(&ssrc.to_be_bytes());
    p.extend((0..160).map(|i| (i as u8) ^ (seq as u8)));
    p
}

fn plain_rtcp(ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 201, 0, 1, 0, 0, 0, 0];
    p[4..8].copy_from_slice(&ssrc.to_be_bytes());
    p
}

const ALL: [Suite; 6] = [
    Suite::AesCm128HmacSha1_80,
    Suite::AesCm128HmacSha1_32,
    Suite::AesCm256HmacSha1_80,
    Suite::AesCm256HmacSha1_32,
    Suite::AeadAes128Gcm,
    Suite::AeadAes256Gcm,
];

fn sender(suite: Suite, fill: u8) -> (Keyed, Vec<u8>) {
    let m: Vec<u8> = (0..suite.key_material_len())
        .map(|i| fill.wrapping_add(i as u8))
        .collect();
    (Keyed::new(suite, &m).unwrap(), m)
}

#[test]
fn joins_mid_call_with_any_roc_and_follows_the_wrap() {
    for suite in ALL {
        let (tx, m) = sender(suite, 9);
        let mut rx = Session::new(suite, &m).unwrap();
        // First packet seen: ROC 3, sequence 65534 (22 minutes x 3 into the stream).
        for (roc, seq) in [
            (3u32, 65534u16),
            (3, 65535),
            (4, 0),
            (4, 1),
            (3, 65533),
            (4, 2),
        ] {
            let plain = plain_rtp(0x1111, seq);
            let mut p = protect::rtp(&tx, &plain, roc);
            let n = rx
                .unprotect_rtp(&mut p)
                .unwrap_or_else(|e| panic!("{suite:?} roc {roc} seq {seq}: {e}"));
            assert_eq!(p[..n], plain[..]);
        }
        assert_eq!(
            rx.current.ssrcs[0].rtp.unwrap().window.top,
            (4 << 16) | 2,
            "{suite:?}"
        );
        // A sender further in than the guesses cover is not taken.
        let mut p = protect::rtp(&tx, &plain_rtp(0x2222, 7), ROC_GUESSES);
        assert_eq!(rx.unprotect_rtp(&mut p), Err(Error::UnknownSsrc));
        assert_eq!(rx.stats().unknown_ssrc, 1);
        assert_eq!(rx.stats().rtp, 6);
    }
}

#[test]
fn replays_and_stale_packets_are_dropped_and_counted() {
    for suite in ALL {
        let (tx, m) = sender(suite, 1);
        let mut rx = Session::new(suite, &m).unwrap();
        let first = protect::rtp(&tx, &plain_rtp(5, 1000), 0);
        rx.unprotect_rtp(&mut first.clone()).unwrap();
        assert_eq!(rx.unprotect_rtp(&mut first.clone()), Err(Error::Replay));
        // Reordered but inside the window: fine, once.
        rx.unprotect_rtp(&mut protect::rtp(&tx, &plain_rtp(5, 1200), 0))
            .unwrap();
        let late = protect::rtp(&tx, &plain_rtp(5, 1100), 0);
        rx.unprotect_rtp(&mut late.clone()).unwrap();
        assert_eq!(rx.unprotect_rtp(&mut late.clone()), Err(Error::Replay));
        // Older than the window.
        let stale = protect::rtp(&tx, &plain_rtp(5, 1001), 0);
        assert_eq!(rx.unprotect_rtp(&mut stale.clone()), Err(Error::Replay));
        // SRTCP index window.
        let c = protect::rtcp(&tx, &plain_rtcp(5), 7, true);
        rx.unprotect_rtcp(&mut c.clone()).unwrap();
        assert_eq!(rx.unprotect_rtcp(&mut c.clone()), Err(Error::Replay));
        assert_eq!(rx.stats().replayed, 4, "{suite:?}");
        assert_eq!((rx.stats().rtp, rx.stats().rtcp), (3, 1));
    }
}

#[test]
fn bad_tags_and_wrong_keys_fail_authentication() {
    for suite in ALL {
        let (tx, m) = sender(suite, 1);
        let (other, _) = sender(suite, 77);
        let mut rx = Session::new(suite, &m).unwrap();
        rx.unprotect_rtp(&mut protect::rtp(&tx, &plain_rtp(5, 1), 0))
            .unwrap();
        let good = protect::rtp(&tx, &plain_rtp(5, 2), 0);
        for at in [0, 5, 12, good.len() - 1] {
            let mut bad = good.clone();
            bad[at] ^= 0x40;
            let r = rx.unprotect_rtp(&mut bad);
            assert!(
                matches!(r, Err(Error::Auth | Error::Malformed)),
                "{suite:?} flip at {at}: {r:?}"
            );
        }
        // The untouched packet still passes: failures do not advance the window.
        rx.unprotect_rtp(&mut good.clone()).unwrap();
        // Another key: an unknown SSRC never gets a context, a known one fails.
        let mut p = protect::rtp(&other, &plain_rtp(6, 1), 0);
        assert_eq!(rx.unprotect_rtp(&mut p), Err(Error::UnknownSsrc));
        let mut p = protect::rtp(&other, &plain_rtp(5, 3), 0);
        assert_eq!(rx.unprotect_rtp(&mut p), Err(Error::Auth));
        let mut p = protect::rtcp(&other, &plain_rtcp(5), 1, true);
        assert_eq!(rx.unprotect_rtcp(&mut p), Err(Error::Auth));
        assert_eq!(rx.current.ssrcs.len(), 1);
        assert!(rx.stats().auth_failed >= 3, "{suite:?}");
    }
}

#[test]
fn short_and_malformed_packets_never_panic() {
    for suite in ALL {
        let (tx, m) = sender(suite, 3);
        let mut rx = Session::new(suite, &m).unwrap();
        let good = protect::rtp(&tx, &plain_rtp(9, 9), 0);
        let goodc = protect::rtcp(&tx, &plain_rtcp(9), 1, true);
        for n in 0..good.len() {
            assert!(rx.unprotect_rtp(&mut good[..n].to_vec()).is_err());
        }
        for n in 0..goodc.len() {
            assert!(rx.unprotect_rtcp(&mut goodc[..n].to_vec()).is_err());
        }
        // Version 0, a CSRC count and an extension that run past the end.
        for hdr in [
            [0x00u8, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9],
            [0x8f, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9],
            [0x90, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9],
        ] {
            let mut p = hdr.to_vec();
            p.extend_from_slice(&[0xff; 20]);
            assert_eq!(rx.unprotect_rtp(&mut p), Err(Error::Malformed));
        }
        assert!(rx.stats().malformed > 0);
        assert_eq!(rx.stats().rtp + rx.stats().rtcp, 0);
    }
    assert_eq!(
        Session::new(Suite::AesCm128HmacSha1_80, &[0; 29]).unwrap_err(),
        Error::KeyLength { got: 29, want: 30 }
    );
}

#[test]
fn header_extensions_and_csrcs_stay_in_the_clear() {
    for suite in ALL {
        let (tx, m) = sender(suite, 3);
        let mut rx = Session::new(suite, &m).unwrap();
        // CC=1, X=1 with one extension word.
        let mut plain = vec![
            0x91, 0, 0, 5, 0, 0, 0, 1, 0, 0, 0, 7, 0, 0, 0, 8, 0xbe, 0xde, 0, 1,
        ];
        plain.extend_from_slice(&[1, 2, 3, 4]);
        plain.extend_from_slice(&[0x55; 33]);
        let mut p = protect::rtp(&tx, &plain, 0);
        assert_eq!(p[..24], plain[..24]);
        let n = rx.unprotect_rtp(&mut p).unwrap();
        assert_eq!(p[..n], plain[..]);
    }
}

#[test]
fn unencrypted_srtcp_is_authenticated_only() {
    for suite in ALL {
        let (tx, m) = sender(suite, 3);
        let mut rx = Session::new(suite, &m).unwrap();
        let mut plain = plain_rtcp(0xabc);
        plain.extend_from_slice(&[0x81, 202, 0, 2, 0, 0, 0x0a, 0xbc, 1, 2, 3, 4]);
        let mut p = protect::rtcp(&tx, &plain, 41, false);
        assert_eq!(p[..plain.len()], plain[..]);
        let n = rx.unprotect_rtcp(&mut p).unwrap();
        assert_eq!(p[..n], plain[..]);
        let mut p = protect::rtcp(&tx, &plain, 42, true);
        assert_ne!(p[8..plain.len()], plain[8..]);
        let n = rx.unprotect_rtcp(&mut p).unwrap();
        assert_eq!(p[..n], plain[..], "{suite:?}");
    }
}

#[test]
fn ssrc_contexts_are_capped_least_recently_used_first() {
    let suite = Suite::AesCm128HmacSha1_80;
    let (tx, m) = sender(suite, 3);
    let mut rx = Session::new(suite, &m).unwrap();
    for ssrc in 0..MAX_SSRCS as u32 {
        rx.unprotect_rtp(&mut protect::rtp(&tx, &plain_rtp(ssrc, 10), 0))
            .unwrap();
    }
    // SSRC 0 is used again, so SSRC 1 is the oldest when a ninth sender appears.
    rx.unprotect_rtp(&mut protect::rtp(&tx, &plain_rtp(0, 11), 0))
        .unwrap();
    rx.unprotect_rtp(&mut protect::rtp(&tx, &plain_rtp(100, 1), 0))
        .unwrap();
    assert_eq!(rx.current.ssrcs.len(), MAX_SSRCS);
    assert_eq!(rx.stats().evicted, 1);
    assert!(rx.current.find(1).is_none() && rx.current.find(0).is_some());
    // The evicted sender re-joins.
    rx.unprotect_rtp(&mut protect::rtp(&tx, &plain_rtp(1, 12), 0))
        .unwrap();
    assert_eq!(rx.stats().rtp, MAX_SSRCS as u64 + 3);
}

#[test]
fn rekey_keeps_the_old_key_until_the_new_one_is_used() {
    for suite in ALL {
        let (old, m1) = sender(suite, 3);
        let (new, m2) = sender(suite, 100);
        let mut rx = Session::new(suite, &m1).unwrap();
        rx.unprotect_rtp(&mut protect::rtp(&old, &plain_rtp(1, 10), 0))
            .unwrap();
        rx.rekey(suite, &m2).unwrap();
        // In flight under the old key, RTP and RTCP.
        let plain = plain_rtp(1, 11);
        let mut p = protect::rtp(&old, &plain, 0);
        let n = rx.unprotect_rtp(&mut p).unwrap();
        assert_eq!(p[..n], plain[..], "{suite:?}");
        rx.unprotect_rtcp(&mut protect::rtcp(&old, &plain_rtcp(1), 3, true))
            .unwrap();
        // The new key (the sender may restart its ROC and keep its sequence).
        rx.unprotect_rtp(&mut protect::rtp(&new, &plain_rtp(1, 12), 0))
            .unwrap();
        // An old-key sender report that lost the race against the new key's first RTP.
        rx.unprotect_rtcp(&mut protect::rtcp(&old, &plain_rtcp(1), 4, true))
            .unwrap();
        // The old key is forgotten once the new one has carried the grace packets.
        for seq in 13..12 + REKEY_GRACE as u16 {
            rx.unprotect_rtp(&mut protect::rtp(&new, &plain_rtp(1, seq), 0))
                .unwrap();
        }
        assert!(rx.previous.is_none());
        let mut p = protect::rtp(&old, &plain_rtp(1, 2000), 0);
        assert_eq!(rx.unprotect_rtp(&mut p), Err(Error::Auth));
        assert_eq!(rx.stats().rtp, 2 + u64::from(REKEY_GRACE));
        assert_eq!(rx.stats().auth_failed, 1);
    }
}

#[test]
fn rtcp_is_told_from_rtp_by_packet_type() {
    assert!(is_rtcp(&plain_rtcp(1)));
    assert!(is_rtcp(&[0x81, 200]));
    assert!(!is_rtcp(&plain_rtp(1, 1)));
    assert!(!is_rtcp(&[0x80, 0xe0]), "PT 96 with the marker bit");
    assert!(!is_rtcp(&[]));
}

#[test]
fn a_long_loss_past_half_the_sequence_space_is_followed() {
    for suite in ALL {
        let (tx, m) = sender(suite, 5);
        let mut rx = Session::new(suite, &m).unwrap();
        // ROC 0, seq 100; then 40 000 packets lost: seq 40100 is still ROC 0, though the
        // RFC's guess (ROC - 1) says it lies before the stream began.
        for (roc, seq) in [(0u32, 100u16), (0, 40100), (1, 10), (1, 60000), (2, 30000)] {
            let plain = plain_rtp(3, seq);
            let mut p = protect::rtp(&tx, &plain, roc);
            let n = rx
                .unprotect_rtp(&mut p)
                .unwrap_or_else(|e| panic!("{suite:?} roc {roc} seq {seq}: {e}"));
            assert_eq!(p[..n], plain[..]);
        }
        // A duplicate stays a replay; a packet far behind the window is never taken twice
        // (the extra guesses do not reach behind the window).
        let mut p = protect::rtp(&tx, &plain_rtp(3, 30000), 2);
        assert_eq!(rx.unprotect_rtp(&mut p), Err(Error::Replay));
        assert_eq!(rx.stats().auth_failed, 0);
        let mut p = protect::rtp(&tx, &plain_rtp(3, 60000), 1);
        assert!(rx.unprotect_rtp(&mut p).is_err());
        assert_eq!(rx.stats().rtp, 5);
    }
}

/// Unprotect rate of 20 ms G.711 packets (172 + tag bytes) per suite. Run with
/// `cargo test -p vcontap-srtp --release -- --ignored --nocapture throughput`.
#[test]
#[ignore = "a measurement, not a check"]
fn throughput() {
    const N: u32 = 200_000;
    for suite in ALL {
        let (tx, m) = sender(suite, 5);
        let mut rx = Session::new(suite, &m).unwrap();
        let packets: Vec<Vec<u8>> = (0..1024u32)
            .map(|i| protect::rtp(&tx, &plain_rtp(7, i as u16), 0))
            .collect();
        let mut buf = Vec::with_capacity(256);
        let t = std::time::Instant::now();
        for i in 0..N {
            // A fresh context per batch of 1024 (the replay window would refuse a second
            // pass); the first packet of each batch also pays the join.
            if i % 1024 == 0 {
                rx = Session::new(suite, &m).unwrap();
            }
            buf.clear();
            buf.extend_from_slice(&packets[(i % 1024) as usize]);
            rx.unprotect_rtp(&mut buf).unwrap();
        }
        let s = t.elapsed().as_secs_f64();
        eprintln!(
            "{suite:?}: {:.0} packets/s ({:.2} us/packet)",
            f64::from(N) / s,
            s * 1e6 / f64::from(N)
        );
    }
}

#[test]
fn forged_first_packets_cost_less_but_a_real_sender_still_joins() {
    for suite in [Suite::AesCm128HmacSha1_80, Suite::AeadAes128Gcm] {
        let (tx, m) = sender(suite, 5);
        let (forger, _) = sender(suite, 66);
        let mut rx = Session::new(suite, &m).unwrap();
        for seq in 0..40u16 {
            let mut p = protect::rtp(&forger, &plain_rtp(9, seq), 0);
            assert_eq!(rx.unprotect_rtp(&mut p), Err(Error::UnknownSsrc));
        }
        assert_eq!(rx.strikes, [(9, 40)]);
        // The real sender on that SSRC, 3 rollovers in: ROC 0 alone does not find it, the
        // next full guess (every 16th failure) does.
        let mut joined = None;
        for k in 0..FULL_GUESS_EVERY as u16 {
            let plain = plain_rtp(9, 1000 + k);
            let mut p = protect::rtp(&tx, &plain, 3);
            if let Ok(n) = rx.unprotect_rtp(&mut p) {
                assert_eq!(p[..n], plain[..]);
                joined = Some(k);
                break;
            }
        }
        assert!(joined.is_some(), "{suite:?}");
        assert!(rx.strikes.is_empty());
        // Other SSRCs are not affected.
        let mut p = protect::rtp(&tx, &plain_rtp(10, 5), 7);
        assert!(rx.unprotect_rtp(&mut p).is_ok());
    }
}
