//! Sans-IO SRTP/SRTCP *unprotect* (authenticate + decrypt) for a passive recorder keyed by
//! SDES (`a=crypto`, RFC 4568): AES_CM_128/256 with HMAC-SHA1-80/32 (RFC 3711, RFC 6188)
//! and AEAD_AES_128/256_GCM (RFC 7714). No sockets, no clock: packets in, plaintext out.
//!
//! # Why hand-written
//!
//! The only maintained Rust SRTP crate is `rtc-srtp` 0.21 (webrtc-rs). Measured in this
//! workspace (2 shared cores, dev profile): it brings a 115-package tree of its own and
//! adds 17 packages to our `Cargo.lock` (`rtc-{srtp,crypto,rtp,rtcp,shared}`, `aes`, `ctr`,
//! `ccm`, `aead`, `cipher`, `inout`, `md-5`, `nix`, `memoffset`, `cfg_aliases`,
//! `substring`, a second `rand_core`), 7.1 s to build them. It is also a WebRTC endpoint's
//! context: it has no index guess for a receiver that joins mid-call. This layer needs
//! `aes` 0.8 (adds `aes`, `cipher`, `inout`: 3 packages, 1.3 s) for AES-CM; HMAC-SHA1
//! from `hmac` + `sha1`, AES-GCM from `ring` and the tag comparison from `subtle`, all
//! already in the tree (sinks, axum, rustls). Side by side, RustCrypto's HMAC-SHA1 took
//! 0.74 µs per 20 ms G.711 packet and `ring`'s 1.34 µs, hence the mix. Unprotect rate
//! (release, one core of the shared dev machine, `tests::throughput`): 1.4 M packets/s
//! for AES_CM_128_HMAC_SHA1_80, 2.0 M for AES-256-CM, 7 M for AES-GCM. RFC 3711's receive side is a few hundred lines; the test vectors below (RFC 3711
//! B.2/B.3, RFC 6188 §7, RFC 7714 §16) and packets protected by libsrtp pin it down.
//!
//! # What a recorder needs (and how it is bounded)
//!
//! * One [`Session`] per recorded stream (per m-line and master key), one context per SSRC
//!   inside it, at most [`MAX_SSRCS`]. A context is only created by a packet that
//!   *authenticates*, so stray or hostile traffic cannot take a slot; when the slots are
//!   full, the least recently used context is evicted (policy: follow SSRC changes, since
//!   SBCs change SSRC on transfers; an evicted sender that comes back re-joins by the
//!   index guess below).
//! * Joining mid-call: the rollover counter (ROC) of a sender is unknown to a recorder that
//!   sees its first packet with any sequence number. The first packet of an SSRC is tried
//!   with ROC 0..[`ROC_GUESSES`] and the one that authenticates wins (a 2^-32 forgery chance
//!   per guess for the 32-bit tag); afterwards the index is estimated as RFC 3711 §3.3.1,
//!   and when that guess does not authenticate, one rollover either side is tried (a
//!   sender that lost more than half the sequence space would otherwise be lost for good).
//!   An SSRC whose first packets keep failing every guess gets only ROC 0 tried, with all
//!   guesses every 16th packet ([`STRIKES`]), so forged floods stay cheap.
//! * Replay: a 128-packet window per SSRC (RTP index and SRTCP index). A retransmitted
//!   duplicate is an [`Error::Replay`], dropped and counted, never fatal.
//! * Re-keying ([`Session::rekey`]): the old key is kept until the new one has authenticated
//!   [`REKEY_GRACE`] packets, so packets in flight across a re-INVITE are not lost (RTP and
//!   RTCP come through different sockets, so an old-key sender report can arrive after the
//!   first new-key RTP packet).
//! * Every failure is a counted `Err`, never a panic; packets are decrypted in place.

// Input is hostile (docs/CONTRIBUTING.md): no panicking shortcuts outside tests.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

use aes::cipher::{BlockEncrypt, KeyInit};
use hmac::Mac;
use ring::aead;
use subtle::ConstantTimeEq;

type HmacSha1 = hmac::Hmac<sha1::Sha1>;

/// Most SSRC contexts per [`Session`] (the least recently used is evicted beyond it).
pub const MAX_SSRCS: usize = 8;
/// Rollover counters tried for the first packet of an SSRC (0..this): at 50 packets/s one
/// ROC step is ~22 minutes, so 16 covers a join up to ~5.8 hours into a sender's stream.
pub const ROC_GUESSES: u32 = 16;
/// Replay window, in packets.
pub const REPLAY_WINDOW: u64 = 128;
/// After this many first packets of one unknown SSRC failed every ROC guess, only ROC 0
/// is tried, except on every [`FULL_GUESS_EVERY`]th packet: a flood of forged packets
/// costs ~2 tag checks each instead of [`ROC_GUESSES`], and a real sender (say one whose
/// key arrived late in a re-INVITE) still joins within that many packets.
pub const STRIKES: u32 = 4;
/// See [`STRIKES`].
pub const FULL_GUESS_EVERY: u32 = 16;
/// Packets the new key must authenticate after [`Session::rekey`] before the old key is
/// forgotten (~2.5 s of two 50 packet/s senders).
pub const REKEY_GRACE: u32 = 256;

/// SDES crypto suites this layer can unprotect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Suite {
    /// `AES_CM_128_HMAC_SHA1_80` (RFC 3711)
    AesCm128HmacSha1_80,
    /// `AES_CM_128_HMAC_SHA1_32` (RFC 3711; SRTCP keeps the 80-bit tag, RFC 4568 §6.2)
    AesCm128HmacSha1_32,
    /// `AES_256_CM_HMAC_SHA1_80` (RFC 6188)
    AesCm256HmacSha1_80,
    /// `AES_256_CM_HMAC_SHA1_32` (RFC 6188)
    AesCm256HmacSha1_32,
    /// `AEAD_AES_128_GCM` (RFC 7714)
    AeadAes128Gcm,
    /// `AEAD_AES_256_GCM` (RFC 7714)
    AeadAes256Gcm,
}

impl Suite {
    /// Master key length in bytes.
    pub fn key_len(self) -> usize {
        match self {
            Suite::AesCm128HmacSha1_80 | Suite::AesCm128HmacSha1_32 | Suite::AeadAes128Gcm => 16,
            _ => 32,
        }
    }

    /// Master salt length in bytes (112 bits for AES-CM, 96 for GCM).
    pub fn salt_len(self) -> usize {
        if self.is_gcm() {
            12
        } else {
            14
        }
    }

    /// Key plus salt: the decoded SDES `inline:` value.
    pub fn key_material_len(self) -> usize {
        self.key_len() + self.salt_len()
    }

    fn is_gcm(self) -> bool {
        matches!(self, Suite::AeadAes128Gcm | Suite::AeadAes256Gcm)
    }

    fn rtp_tag_len(self) -> usize {
        match self {
            Suite::AesCm128HmacSha1_80 | Suite::AesCm256HmacSha1_80 => 10,
            Suite::AesCm128HmacSha1_32 | Suite::AesCm256HmacSha1_32 => 4,
            Suite::AeadAes128Gcm | Suite::AeadAes256Gcm => GCM_TAG,
        }
    }
}

/// Why a packet was not unprotected (every one is counted in [`Stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The master key material does not have the suite's length.
    #[error("SRTP key material is {got} bytes, the suite needs {want}")]
    KeyLength {
        /// Given.
        got: usize,
        /// Needed.
        want: usize,
    },
    /// Shorter than a header plus the tag, or a header that runs past the end.
    #[error("SRTP packet too short")]
    Malformed,
    /// The tag does not match (wrong key, corruption, forgery).
    #[error("SRTP authentication failed")]
    Auth,
    /// Already received, or older than the replay window.
    #[error("SRTP packet replayed or too old")]
    Replay,
    /// The first packet of an SSRC that authenticates under no ROC guess.
    #[error("SRTP packet of an unknown SSRC did not authenticate")]
    UnknownSsrc,
}

/// Counters of one [`Session`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// RTP packets unprotected.
    pub rtp: u64,
    /// RTCP packets unprotected.
    pub rtcp: u64,
    /// [`Error::Auth`].
    pub auth_failed: u64,
    /// [`Error::Replay`].
    pub replayed: u64,
    /// [`Error::UnknownSsrc`].
    pub unknown_ssrc: u64,
    /// [`Error::Malformed`].
    pub malformed: u64,
    /// Contexts evicted because [`MAX_SSRCS`] were in use.
    pub evicted: u64,
}

impl Stats {
    fn count(&mut self, e: Error) {
        let c = match e {
            Error::Auth => &mut self.auth_failed,
            Error::Replay => &mut self.replayed,
            Error::UnknownSsrc => &mut self.unknown_ssrc,
            Error::Malformed | Error::KeyLength { .. } => &mut self.malformed,
        };
        *c = c.saturating_add(1);
    }
}

/// True when a packet on an RTP/RTCP port is RTCP (RFC 5761 §4: packet types 192..=223
/// in the second byte), so that rtcp-mux works too.
pub fn is_rtcp(packet: &[u8]) -> bool {
    matches!(packet.get(1), Some(192..=223))
}

const GCM_TAG: usize = 16;
/// SRTCP tag of the AES-CM suites (80 bits even for the `_32` suites).
const SRTCP_CM_TAG: usize = 10;
const SRTCP_WORD: usize = 4;
/// KDF labels (RFC 3711 §4.3.1).
const LABEL_RTP_KEY: u8 = 0;
const LABEL_RTP_AUTH: u8 = 1;
const LABEL_RTP_SALT: u8 = 2;
const LABEL_RTCP_KEY: u8 = 3;
const LABEL_RTCP_AUTH: u8 = 4;
const LABEL_RTCP_SALT: u8 = 5;
/// Blocks of keystream made per AES call (lets `aes` pipeline them).
const BATCH: usize = 16;

enum Aes {
    A128(Box<aes::Aes128>),
    A256(Box<aes::Aes256>),
}

impl Aes {
    fn new(key: &[u8]) -> Option<Aes> {
        match key.len() {
            16 => aes::Aes128::new_from_slice(key)
                .ok()
                .map(|a| Aes::A128(Box::new(a))),
            32 => aes::Aes256::new_from_slice(key)
                .ok()
                .map(|a| Aes::A256(Box::new(a))),
            _ => None,
        }
    }

    fn encrypt(&self, blocks: &mut [aes::Block]) {
        match self {
            Aes::A128(a) => a.encrypt_blocks(blocks),
            Aes::A256(a) => a.encrypt_blocks(blocks),
        }
    }

    /// XORs `data` with the AES-CM keystream of `iv` (RFC 3711 §4.1.1: block `j` is
    /// AES(iv + j); the low 16 bits of `iv` are zero, so `iv + j` sets them to `j`).
    fn apply_keystream(&self, iv: &[u8; 16], data: &mut [u8]) {
        let mut blocks = [aes::Block::default(); BATCH];
        let mut counter: u16 = 0;
        for chunk in data.chunks_mut(16 * BATCH) {
            let n = chunk.len().div_ceil(16);
            for b in blocks.iter_mut().take(n) {
                b.copy_from_slice(iv);
                let [hi, lo] = counter.to_be_bytes();
                if let Some([x, y]) = b.get_mut(14..16) {
                    *x ^= hi;
                    *y ^= lo;
                }
                counter = counter.wrapping_add(1);
            }
            let batch = blocks.get_mut(..n).unwrap_or_default();
            self.encrypt(batch);
            for (d, k) in chunk.iter_mut().zip(batch.iter().flat_map(|b| b.iter())) {
                *d ^= k;
            }
        }
    }
}

/// The AES-CM PRF of RFC 3711 §4.3.3 with a key derivation rate of 0 (SDES lines with a
/// KDR are not answered): `out` = keystream of AES(master, (salt ^ label<<48) << 16).
fn derive(master: &Aes, salt: &[u8], label: u8, out: &mut [u8]) {
    let mut iv = [0u8; 16];
    // A 96-bit GCM master salt is the high part of the 112-bit value (RFC 7714 §11).
    for (d, s) in iv.iter_mut().zip(salt.iter().take(14)) {
        *d = *s;
    }
    if let Some(x) = iv.get_mut(7) {
        *x ^= label;
    }
    out.fill(0);
    master.apply_keystream(&iv, out);
}

/// One direction's session keys (SRTP or SRTCP).
enum Transform {
    Cm {
        aes: Aes,
        salt: [u8; 14],
        /// Keyed once; cloned per packet (the inner/outer pad state is then not redone).
        auth: Box<HmacSha1>,
    },
    Gcm {
        key: Box<aead::LessSafeKey>,
        salt: [u8; 12],
    },
}

impl Transform {
    fn derive(suite: Suite, master: &Aes, salt: &[u8], rtcp: bool) -> Option<Transform> {
        let (lk, la, ls) = if rtcp {
            (LABEL_RTCP_KEY, LABEL_RTCP_AUTH, LABEL_RTCP_SALT)
        } else {
            (LABEL_RTP_KEY, LABEL_RTP_AUTH, LABEL_RTP_SALT)
        };
        let mut key = [0u8; 32];
        let key = key.get_mut(..suite.key_len())?;
        derive(master, salt, lk, key);
        if suite.is_gcm() {
            let mut s = [0u8; 12];
            derive(master, salt, ls, &mut s);
            Transform::gcm(key, s)
        } else {
            let mut s = [0u8; 14];
            derive(master, salt, ls, &mut s);
            let mut a = [0u8; 20];
            derive(master, salt, la, &mut a);
            Transform::cm(key, s, &a)
        }
    }

    fn cm(key: &[u8], salt: [u8; 14], auth: &[u8]) -> Option<Transform> {
        Some(Transform::Cm {
            aes: Aes::new(key)?,
            salt,
            auth: Box::new(<HmacSha1 as Mac>::new_from_slice(auth).ok()?),
        })
    }

    fn gcm(key: &[u8], salt: [u8; 12]) -> Option<Transform> {
        let alg = match key.len() {
            16 => &aead::AES_128_GCM,
            32 => &aead::AES_256_GCM,
            _ => return None,
        };
        let key = aead::UnboundKey::new(alg, key).ok()?;
        Some(Transform::Gcm {
            key: Box::new(aead::LessSafeKey::new(key)),
            salt,
        })
    }
}

/// AES-CM IV (RFC 3711 §4.1.1): (salt << 16) ^ (SSRC << 64) ^ (index << 16).
fn cm_iv(salt: &[u8; 14], ssrc: u32, index: u64) -> [u8; 16] {
    let mut iv = [0u8; 16];
    for (d, s) in iv.iter_mut().zip(salt) {
        *d = *s;
    }
    for (d, s) in iv.iter_mut().skip(4).zip(ssrc.to_be_bytes()) {
        *d ^= s;
    }
    // The 48-bit index goes to bytes 8..14.
    for (d, s) in iv
        .iter_mut()
        .skip(8)
        .zip(index.to_be_bytes().iter().skip(2))
    {
        *d ^= s;
    }
    iv
}

/// GCM IV (RFC 7714 §8.1 and §9.1): (00 00 || SSRC || `tail` 6 bytes) ^ salt.
fn gcm_iv(salt: &[u8; 12], ssrc: u32, tail: [u8; 6]) -> aead::Nonce {
    let mut iv = [0u8; 12];
    for (d, s) in iv
        .iter_mut()
        .skip(2)
        .zip(ssrc.to_be_bytes().into_iter().chain(tail))
    {
        *d = s;
    }
    for (d, s) in iv.iter_mut().zip(salt) {
        *d ^= s;
    }
    aead::Nonce::assume_unique_for_key(iv)
}

fn hmac_ok(key: &HmacSha1, parts: &[&[u8]], tag: &[u8]) -> bool {
    let mut m = key.clone();
    for p in parts {
        m.update(p);
    }
    let full = m.finalize().into_bytes();
    let ours = full.get(..tag.len()).unwrap_or_default();
    !tag.is_empty() && bool::from(ours.ct_eq(tag))
}

/// Received-index bookkeeping: the highest index and a bitmap of the ones below it.
#[derive(Debug, Clone, Copy, Default)]
struct Window {
    top: u64,
    bits: u128,
}

impl Window {
    fn at(index: u64) -> Window {
        Window {
            top: index,
            bits: 1,
        }
    }

    /// Already received (inside the window, bit set).
    fn duplicate(&self, index: u64) -> bool {
        index <= self.top
            && self.top - index < REPLAY_WINDOW
            && self.bits & (1u128 << (self.top - index)) != 0
    }

    fn check(&self, index: u64) -> Result<(), Error> {
        if index > self.top {
            return Ok(());
        }
        let back = self.top - index;
        if back >= REPLAY_WINDOW || self.bits & (1u128 << back) != 0 {
            return Err(Error::Replay);
        }
        Ok(())
    }

    fn accept(&mut self, index: u64) {
        if index > self.top {
            let shift = index - self.top;
            self.bits = if shift >= 128 { 0 } else { self.bits << shift };
            self.bits |= 1;
            self.top = index;
        } else if let Some(bit) = 1u128.checked_shl((self.top - index) as u32) {
            self.bits |= bit;
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct RtpState {
    /// ROC of the highest index (`window.top >> 16`); `s_l` is its low 16 bits.
    window: Window,
}

impl RtpState {
    /// RFC 3711 §3.3.1 / Appendix A: the ROC of `seq` (-1 when it would lie before
    /// index 0).
    fn estimate(&self, seq: u16) -> i64 {
        let roc = (self.window.top >> 16) as i64;
        let s_l = (self.window.top & 0xffff) as i64;
        let seq_i = i64::from(seq);
        if s_l < 32768 {
            if seq_i - s_l > 32768 {
                roc - 1
            } else {
                roc
            }
        } else if s_l - 32768 > seq_i {
            roc + 1
        } else {
            roc
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct SsrcState {
    ssrc: u32,
    rtp: Option<RtpState>,
    rtcp: Option<Window>,
    /// LRU stamp.
    used: u64,
}

/// One key's worth of state: the transforms and the SSRC contexts under them.
struct Keyed {
    suite: Suite,
    rtp: Transform,
    rtcp: Transform,
    ssrcs: Vec<SsrcState>,
}

impl Keyed {
    fn new(suite: Suite, material: &[u8]) -> Result<Keyed, Error> {
        let want = suite.key_material_len();
        let bad = Error::KeyLength {
            got: material.len(),
            want,
        };
        if material.len() != want {
            return Err(bad);
        }
        let (key, salt) = material.split_at(suite.key_len());
        let master = Aes::new(key).ok_or(bad)?;
        Ok(Keyed {
            suite,
            rtp: Transform::derive(suite, &master, salt, false).ok_or(bad)?,
            rtcp: Transform::derive(suite, &master, salt, true).ok_or(bad)?,
            ssrcs: Vec::new(),
        })
    }
}

/// RTP header length (fixed part, CSRCs, extension), checked against the packet.
fn rtp_header_len(p: &[u8]) -> Result<usize, Error> {
    let b0 = *p.first().ok_or(Error::Malformed)?;
    if b0 >> 6 != 2 || p.len() < 12 {
        return Err(Error::Malformed);
    }
    let mut len = 12 + 4 * usize::from(b0 & 0x0f);
    if b0 & 0x10 != 0 {
        let Some(&[a, b]) = p.get(len + 2..len + 4) else {
            return Err(Error::Malformed);
        };
        len += 4 + 4 * usize::from(u16::from_be_bytes([a, b]));
    }
    if len > p.len() {
        return Err(Error::Malformed);
    }
    Ok(len)
}

fn be32(p: &[u8], at: usize) -> Result<u32, Error> {
    let Some(&[a, b, c, d]) = p.get(at..at + 4) else {
        return Err(Error::Malformed);
    };
    Ok(u32::from_be_bytes([a, b, c, d]))
}

/// What unprotecting one RTP packet under one key found.
enum RtpOutcome {
    /// Plaintext length; the SSRC context to store.
    Ok(usize, SsrcState),
    Err(Error),
}

impl Keyed {
    fn find(&self, ssrc: u32) -> Option<usize> {
        self.ssrcs.iter().position(|s| s.ssrc == ssrc)
    }

    /// Authenticates (and for GCM decrypts) `p` as the RTP packet with `index`; for AES-CM
    /// the caller decrypts after the index is chosen.
    fn rtp_auth(&self, p: &mut [u8], hlen: usize, ssrc: u32, index: u64) -> bool {
        let tag_len = self.suite.rtp_tag_len();
        let body_end = p.len() - tag_len;
        match &self.rtp {
            Transform::Cm { auth, .. } => {
                let roc = ((index >> 16) as u32).to_be_bytes();
                let (data, tag) = p.split_at(body_end);
                hmac_ok(auth, &[data, &roc], tag)
            }
            Transform::Gcm { key, salt } => {
                let mut tail = [0u8; 6];
                for (d, s) in tail.iter_mut().zip(index.to_be_bytes().iter().skip(2)) {
                    *d = *s;
                }
                let nonce = gcm_iv(salt, ssrc, tail);
                let (hdr, body) = p.split_at_mut(hlen);
                key.open_in_place(nonce, aead::Aad::from(&*hdr), body)
                    .is_ok()
            }
        }
    }

    fn rtp_decrypt(&self, p: &mut [u8], hlen: usize, ssrc: u32, index: u64) -> usize {
        let end = p.len() - self.suite.rtp_tag_len();
        if let Transform::Cm { aes, salt, .. } = &self.rtp {
            let iv = cm_iv(salt, ssrc, index);
            if let Some(body) = p.get_mut(hlen..end) {
                aes.apply_keystream(&iv, body);
            }
        }
        end
    }

    /// Tries `index`; for GCM (which may overwrite the buffer on failure) the packet is
    /// restored from `scratch` after a failed attempt.
    fn try_rtp(&self, p: &mut [u8], hlen: usize, ssrc: u32, index: u64, scratch: &[u8]) -> bool {
        if self.rtp_auth(p, hlen, ssrc, index) {
            return true;
        }
        if self.suite.is_gcm() && scratch.len() == p.len() {
            p.copy_from_slice(scratch);
        }
        false
    }

    fn unprotect_rtp(
        &self,
        p: &mut [u8],
        stamp: u64,
        scratch: &mut Vec<u8>,
        guesses: u32,
    ) -> RtpOutcome {
        let hlen = match rtp_header_len(p) {
            Ok(h) => h,
            Err(e) => return RtpOutcome::Err(e),
        };
        let gcm = self.suite.is_gcm();
        if p.len() < hlen + self.suite.rtp_tag_len() {
            return RtpOutcome::Err(Error::Malformed);
        }
        let (Ok(ssrc), Some(&[s0, s1])) = (be32(p, 8), p.get(2..4)) else {
            return RtpOutcome::Err(Error::Malformed);
        };
        let seq = u16::from_be_bytes([s0, s1]);
        let known = self.find(ssrc).and_then(|i| self.ssrcs.get(i)).copied();
        let mut state = known.unwrap_or(SsrcState {
            ssrc,
            rtp: None,
            rtcp: None,
            used: stamp,
        });
        state.used = stamp;
        scratch.clear();
        if gcm {
            scratch.extend_from_slice(p);
        }
        let index = match state.rtp {
            Some(r) => {
                // RFC 3711's guess first, then one rollover either side: a sender that
                // skipped more than half the sequence space (a long loss) is otherwise
                // lost for good. Never for a duplicate, and the error is the first guess's.
                let v = r.estimate(seq);
                let mut err = Error::Auth;
                let mut found = None;
                for (k, roc) in [v, v + 1, v - 1].into_iter().enumerate() {
                    let Some(index) = u32::try_from(roc)
                        .ok()
                        .map(|roc| (u64::from(roc) << 16) | u64::from(seq))
                    else {
                        if k == 0 {
                            err = Error::Replay;
                        }
                        continue;
                    };
                    if r.window.check(index).is_err() {
                        if k == 0 {
                            if r.window.duplicate(index) {
                                return RtpOutcome::Err(Error::Replay);
                            }
                            err = Error::Replay;
                        }
                        continue;
                    }
                    if self.try_rtp(p, hlen, ssrc, index, scratch) {
                        found = Some(index);
                        break;
                    }
                }
                let Some(index) = found else {
                    return RtpOutcome::Err(err);
                };
                index
            }
            None => {
                // Join: guess the ROC; the one that authenticates wins.
                let found = (0..guesses)
                    .map(|roc| (u64::from(roc) << 16) | u64::from(seq))
                    .find(|&index| self.try_rtp(p, hlen, ssrc, index, scratch));
                let Some(index) = found else {
                    return RtpOutcome::Err(Error::UnknownSsrc);
                };
                index
            }
        };
        let mut r = state.rtp.unwrap_or(RtpState {
            window: Window::at(index),
        });
        r.window.accept(index);
        state.rtp = Some(r);
        RtpOutcome::Ok(self.rtp_decrypt(p, hlen, ssrc, index), state)
    }

    /// SRTCP: returns the plaintext length and the updated context.
    fn unprotect_rtcp(&self, p: &mut [u8], stamp: u64) -> Result<(usize, SsrcState), Error> {
        let gcm = self.suite.is_gcm();
        let tag_len = if gcm { GCM_TAG } else { SRTCP_CM_TAG };
        if p.len() < 8 + SRTCP_WORD + tag_len || p.first().is_none_or(|b| b >> 6 != 2) {
            return Err(Error::Malformed);
        }
        let ssrc = be32(p, 4)?;
        // AES-CM: header | payload | E+index | tag. GCM: header | payload+tag | E+index.
        let word_at = if gcm {
            p.len() - SRTCP_WORD
        } else {
            p.len() - tag_len - SRTCP_WORD
        };
        let word = be32(p, word_at)?;
        let encrypted = word & 0x8000_0000 != 0;
        let index = u64::from(word & 0x7fff_ffff);
        let mut state = self
            .find(ssrc)
            .and_then(|i| self.ssrcs.get(i))
            .copied()
            .unwrap_or(SsrcState {
                ssrc,
                rtp: None,
                rtcp: None,
                used: stamp,
            });
        state.used = stamp;
        if let Some(w) = &state.rtcp {
            w.check(index)?;
        }
        let plain_len = match &self.rtcp {
            Transform::Cm { aes, salt, auth } => {
                let (data, tag) = p.split_at(p.len() - tag_len);
                if !hmac_ok(auth, &[data], tag) {
                    return Err(Error::Auth);
                }
                if encrypted {
                    let iv = cm_iv(salt, ssrc, index);
                    if let Some(body) = p.get_mut(8..word_at) {
                        aes.apply_keystream(&iv, body);
                    }
                }
                word_at
            }
            Transform::Gcm { key, salt } => {
                let mut tail = [0u8; 6];
                for (d, s) in tail.iter_mut().skip(2).zip((index as u32).to_be_bytes()) {
                    *d = s;
                }
                let nonce = gcm_iv(salt, ssrc, tail);
                let word_bytes = word.to_be_bytes();
                let tag_at = word_at - GCM_TAG;
                // Encrypted: AAD = header || word. Not: AAD = the whole packet || word and
                // only the tag is "ciphertext" (RFC 7714 §9.2, §9.3).
                let aad_end = if encrypted { 8 } else { tag_at };
                let (head, rest) = p.split_at_mut(aad_end);
                let mut aad = Vec::with_capacity(aad_end + SRTCP_WORD);
                aad.extend_from_slice(head);
                aad.extend_from_slice(&word_bytes);
                let in_out = rest.get_mut(..word_at - aad_end).ok_or(Error::Malformed)?;
                key.open_in_place(nonce, aead::Aad::from(&aad), in_out)
                    .map_err(|_| Error::Auth)?;
                tag_at
            }
        };
        let mut w = state.rtcp.unwrap_or(Window::at(index));
        w.accept(index);
        state.rtcp = Some(w);
        Ok((plain_len, state))
    }

    /// Stores a context, evicting the least recently used one when full; true on eviction.
    fn store(&mut self, state: SsrcState) -> bool {
        if let Some(i) = self.find(state.ssrc) {
            if let Some(s) = self.ssrcs.get_mut(i) {
                *s = state;
            }
            return false;
        }
        if self.ssrcs.len() < MAX_SSRCS {
            self.ssrcs.push(state);
            return false;
        }
        if let Some(old) = self.ssrcs.iter_mut().min_by_key(|s| s.used) {
            *old = state;
        }
        true
    }
}

/// Unprotects the SRTP and SRTCP of one recorded stream (one SDES master key at a time).
pub struct Session {
    current: Keyed,
    /// The key before the last [`Session::rekey`], for [`REKEY_GRACE`] packets of the new.
    previous: Option<Keyed>,
    /// Packets authenticated under `current` since the re-key.
    since_rekey: u32,
    stats: Stats,
    stamp: u64,
    /// A copy of the packet for GCM retries (kept to avoid an allocation per packet).
    scratch: Vec<u8>,
    /// Unknown SSRCs whose first packets failed: (SSRC, failures in a row), at most
    /// [`MAX_SSRCS`] (see [`STRIKES`]).
    strikes: Vec<(u32, u32)>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("Session")
            .field("suite", &self.current.suite)
            .field("ssrcs", &self.current.ssrcs.len())
            .field("stats", &self.stats)
            .finish()
    }
}

impl Session {
    /// A session from the offerer's master key || master salt (the decoded `inline:`).
    pub fn new(suite: Suite, key_material: &[u8]) -> Result<Session, Error> {
        Ok(Session {
            current: Keyed::new(suite, key_material)?,
            previous: None,
            since_rekey: 0,
            stats: Stats::default(),
            stamp: 0,
            scratch: Vec::new(),
            strikes: Vec::new(),
        })
    }

    /// The suite of the current key.
    pub fn suite(&self) -> Suite {
        self.current.suite
    }

    /// Counters so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Switches to a new master key (a re-INVITE changed `a=crypto`). Packets that still
    /// authenticate under the old key are accepted until the new one has authenticated
    /// [`REKEY_GRACE`] packets.
    pub fn rekey(&mut self, suite: Suite, key_material: &[u8]) -> Result<(), Error> {
        let next = Keyed::new(suite, key_material)?;
        self.previous = Some(std::mem::replace(&mut self.current, next));
        self.since_rekey = 0;
        Ok(())
    }

    /// A packet authenticated under the current key.
    fn current_ok(&mut self) {
        if self.previous.is_some() {
            self.since_rekey = self.since_rekey.saturating_add(1);
            if self.since_rekey >= REKEY_GRACE {
                self.previous = None;
            }
        }
    }

    fn tick(&mut self) -> u64 {
        self.stamp = self.stamp.wrapping_add(1);
        self.stamp
    }

    /// Authenticates and decrypts an SRTP packet in place; returns the length of the
    /// plaintext RTP packet at the start of `packet` (the tag is cut off).
    pub fn unprotect_rtp(&mut self, packet: &mut [u8]) -> Result<usize, Error> {
        let stamp = self.tick();
        // A GCM failure may leave the buffer overwritten: keep the original for the old key.
        let backup = match &self.previous {
            Some(_) if self.current.suite.is_gcm() => Some(packet.to_vec()),
            _ => None,
        };
        let ssrc = be32(packet, 8).unwrap_or(0);
        let strike = self.strikes.iter().position(|s| s.0 == ssrc);
        let failed = strike.and_then(|i| self.strikes.get(i)).map_or(0, |s| s.1);
        let guesses = if failed < STRIKES || failed % FULL_GUESS_EVERY == 0 {
            ROC_GUESSES
        } else {
            1
        };
        let first = match self
            .current
            .unprotect_rtp(packet, stamp, &mut self.scratch, guesses)
        {
            RtpOutcome::Ok(n, st) => {
                self.current_ok();
                self.forgive(strike);
                return Ok(self.stored(n, st, false));
            }
            RtpOutcome::Err(e) => e,
        };
        if let (Some(prev), Error::Auth | Error::UnknownSsrc) = (&self.previous, first) {
            if let Some(b) = &backup {
                packet.copy_from_slice(b);
            }
            if let RtpOutcome::Ok(n, st) =
                prev.unprotect_rtp(packet, stamp, &mut self.scratch, guesses)
            {
                self.forgive(strike);
                return Ok(self.stored(n, st, true));
            }
        }
        if first == Error::UnknownSsrc {
            let full = self.strikes.len() >= MAX_SSRCS;
            match strike.and_then(|i| self.strikes.get_mut(i)) {
                Some(s) => s.1 = s.1.saturating_add(1),
                None if !full => self.strikes.push((ssrc, 1)),
                // Full: the slot of the SSRC that failed least.
                None => {
                    if let Some(s) = self.strikes.iter_mut().min_by_key(|s| s.1) {
                        *s = (ssrc, 1);
                    }
                }
            }
        }
        self.stats.count(first);
        Err(first)
    }

    fn forgive(&mut self, strike: Option<usize>) {
        if let Some(i) = strike {
            if i < self.strikes.len() {
                self.strikes.swap_remove(i);
            }
        }
    }

    /// Authenticates and decrypts an SRTCP packet in place; returns the length of the
    /// plaintext compound RTCP packet (index word, MKI and tag cut off).
    pub fn unprotect_rtcp(&mut self, packet: &mut [u8]) -> Result<usize, Error> {
        let stamp = self.tick();
        let backup = match &self.previous {
            Some(_) if self.current.suite.is_gcm() => Some(packet.to_vec()),
            _ => None,
        };
        let first = match self.current.unprotect_rtcp(packet, stamp) {
            Ok((n, st)) => {
                self.current_ok();
                self.stats.rtcp = self.stats.rtcp.saturating_add(1);
                if self.current.store(st) {
                    self.stats.evicted = self.stats.evicted.saturating_add(1);
                }
                return Ok(n);
            }
            Err(e) => e,
        };
        if let (Some(prev), Error::Auth) = (&mut self.previous, first) {
            if let Some(b) = &backup {
                packet.copy_from_slice(b);
            }
            if let Ok((n, st)) = prev.unprotect_rtcp(packet, stamp) {
                if prev.store(st) {
                    self.stats.evicted = self.stats.evicted.saturating_add(1);
                }
                self.stats.rtcp = self.stats.rtcp.saturating_add(1);
                return Ok(n);
            }
        }
        self.stats.count(first);
        Err(first)
    }

    fn stored(&mut self, n: usize, st: SsrcState, previous: bool) -> usize {
        let keyed = match (&mut self.previous, previous) {
            (Some(p), true) => p,
            _ => &mut self.current,
        };
        if keyed.store(st) {
            self.stats.evicted = self.stats.evicted.saturating_add(1);
        }
        self.stats.rtp = self.stats.rtp.saturating_add(1);
        n
    }
}

/// The protect side, for tests and the fuzz target (the mirror of the receive path), so
/// that packets with any sequence number and ROC can be made. Independent checks come from
/// the RFC vectors and the libsrtp-made packets in the tests.
#[cfg(any(test, feature = "_test_protect"))]
mod protect;

#[cfg(test)]
mod tests;
