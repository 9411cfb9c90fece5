//! The send side, for tests and the fuzz target only (feature `_test_protect`): makes
//! packets with any SSRC, sequence number, ROC and SRTCP index from the same transforms,
//! so that joins, wraps, replays and mutations of *valid* packets can be exercised. The
//! transforms themselves are pinned by the RFC and libsrtp vectors in `tests.rs`.

use super::*;

pub(crate) fn rtp(k: &Keyed, plain: &[u8], roc: u32) -> Option<Vec<u8>> {
    let hlen = rtp_header_len(plain).ok()?;
    let ssrc = be32(plain, 8).ok()?;
    let &[s0, s1] = plain.get(2..4)? else {
        return None;
    };
    let index = (u64::from(roc) << 16) | u64::from(u16::from_be_bytes([s0, s1]));
    let mut p = plain.to_vec();
    match &k.rtp {
        Transform::Cm { aes, salt, auth } => {
            aes.apply_keystream(&cm_iv(salt, ssrc, index), p.get_mut(hlen..)?);
            let mut m = (**auth).clone();
            m.update(&p);
            m.update(&roc.to_be_bytes());
            let tag = m.finalize().into_bytes();
            p.extend_from_slice(tag.get(..k.suite.rtp_tag_len())?);
        }
        Transform::Gcm { key, salt } => {
            let mut tail = [0u8; 6];
            for (d, s) in tail.iter_mut().zip(index.to_be_bytes().iter().skip(2)) {
                *d = *s;
            }
            let (hdr, body) = p.split_at_mut(hlen);
            let tag = key
                .seal_in_place_separate_tag(gcm_iv(salt, ssrc, tail), aead::Aad::from(&*hdr), body)
                .ok()?;
            p.extend_from_slice(tag.as_ref());
        }
    }
    Some(p)
}

pub(crate) fn rtcp(k: &Keyed, plain: &[u8], index: u32, encrypt: bool) -> Option<Vec<u8>> {
    let ssrc = be32(plain, 4).ok()?;
    let index = index & 0x7fff_ffff;
    let word = index | if encrypt { 0x8000_0000 } else { 0 };
    let mut p = plain.to_vec();
    match &k.rtcp {
        Transform::Cm { aes, salt, auth } => {
            if encrypt {
                aes.apply_keystream(&cm_iv(salt, ssrc, u64::from(index)), p.get_mut(8..)?);
            }
            p.extend_from_slice(&word.to_be_bytes());
            let mut m = (**auth).clone();
            m.update(&p);
            let tag = m.finalize().into_bytes();
            p.extend_from_slice(tag.get(..SRTCP_CM_TAG)?);
        }
        Transform::Gcm { key, salt } => {
            let mut tail = [0u8; 6];
            for (d, s) in tail.iter_mut().skip(2).zip(index.to_be_bytes()) {
                *d = s;
            }
            let nonce = gcm_iv(salt, ssrc, tail);
            let split = if encrypt { 8 } else { p.len() };
            let (head, body) = p.split_at_mut(split);
            let mut aad = head.to_vec();
            aad.extend_from_slice(&word.to_be_bytes());
            let tag = key
                .seal_in_place_separate_tag(nonce, aead::Aad::from(&aad), body)
                .ok()?;
            p.extend_from_slice(tag.as_ref());
            p.extend_from_slice(&word.to_be_bytes());
        }
    }
    Some(p)
}

impl Session {
    /// Protects an RTP packet under the current key with `roc` (tests and fuzzing only).
    #[doc(hidden)]
    pub fn protect_rtp(&self, plain: &[u8], roc: u32) -> Option<Vec<u8>> {
        rtp(&self.current, plain, roc)
    }

    /// Protects an RTCP packet under the current key (tests and fuzzing only).
    #[doc(hidden)]
    pub fn protect_rtcp(&self, plain: &[u8], index: u32, encrypt: bool) -> Option<Vec<u8>> {
        rtcp(&self.current, plain, index, encrypt)
    }
}
