//! The send side, for tests only: makes packets with any SSRC, sequence number, ROC and
//! SRTCP index from the same transforms, so that joins, wraps and replays can be tested.
//! The transforms themselves are pinned by the RFC and libsrtp vectors in `tests.rs`.

use super::*;

pub fn rtp(k: &Keyed, plain: &[u8], roc: u32) -> Vec<u8> {
    let hlen = rtp_header_len(plain).unwrap();
    let ssrc = be32(plain, 8).unwrap();
    let seq = u16::from_be_bytes([plain[2], plain[3]]);
    let index = (u64::from(roc) << 16) | u64::from(seq);
    let mut p = plain.to_vec();
    match &k.rtp {
        Transform::Cm { aes, salt, auth } => {
            aes.apply_keystream(&cm_iv(salt, ssrc, index), &mut p[hlen..]);
            let mut ctx = hmac::Context::with_key(auth);
            ctx.update(&p);
            ctx.update(&roc.to_be_bytes());
            let tag = ctx.sign();
            p.extend_from_slice(&tag.as_ref()[..k.suite.rtp_tag_len()]);
        }
        Transform::Gcm { key, salt } => {
            let mut tail = [0u8; 6];
            tail.copy_from_slice(&index.to_be_bytes()[2..]);
            let (hdr, body) = p.split_at_mut(hlen);
            let tag = key
                .seal_in_place_separate_tag(gcm_iv(salt, ssrc, tail), aead::Aad::from(&*hdr), body)
                .unwrap();
            p.extend_from_slice(tag.as_ref());
        }
    }
    p
}

pub fn rtcp(k: &Keyed, plain: &[u8], index: u32, encrypt: bool) -> Vec<u8> {
    let ssrc = be32(plain, 4).unwrap();
    let word = (index & 0x7fff_ffff) | if encrypt { 0x8000_0000 } else { 0 };
    let mut p = plain.to_vec();
    match &k.rtcp {
        Transform::Cm { aes, salt, auth } => {
            if encrypt {
                aes.apply_keystream(&cm_iv(salt, ssrc, u64::from(index)), &mut p[8..]);
            }
            p.extend_from_slice(&word.to_be_bytes());
            let tag = hmac::sign(auth, &p);
            p.extend_from_slice(&tag.as_ref()[..SRTCP_CM_TAG]);
        }
        Transform::Gcm { key, salt } => {
            let mut tail = [0u8; 6];
            tail[2..].copy_from_slice(&index.to_be_bytes());
            let nonce = gcm_iv(salt, ssrc, tail);
            let split = if encrypt { 8 } else { p.len() };
            let (head, body) = p.split_at_mut(split);
            let mut aad = head.to_vec();
            aad.extend_from_slice(&word.to_be_bytes());
            let tag = key
                .seal_in_place_separate_tag(nonce, aead::Aad::from(&aad), body)
                .unwrap();
            p.extend_from_slice(tag.as_ref());
            p.extend_from_slice(&word.to_be_bytes());
        }
    }
    p
}
