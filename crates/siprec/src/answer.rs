//! The SDP side of a recording session: what to accept from an offer (one codec per
//! stream, SDES-SRTP suite) and the answer text (§6 item 9 and 10).
//!
//! Two steps, so that the shell can bind sockets in between: [`plan`] decides per m-line
//! (accept with a codec, or refuse and why); the shell binds an even RTP port per
//! accepted stream and draws key material; [`render`] writes the answer: plain
//! `application/sdp`, same m-line count and order, `a=recvonly` (or `a=inactive` for an
//! inactive offer), every `a=label` echoed, port 0 for refused streams, our own `o=` line,
//! one codec per stream (plus `telephone-event` when offered, so DTMF stays decodable),
//! `a=rtpmap` for it, and one `a=crypto` with our own key on `RTP/SAVP` lines.
//!
//! No randomness or sockets here: ports and keys are inputs.

use std::fmt::Write as _;
use std::net::IpAddr;

use base64::Engine as _;
use vcontap_sip::sdp::{Direction, Media, Sdp};

/// Longest key material any supported suite needs (AES-256: 32-byte key + 14-byte salt).
pub const MAX_KEY_MATERIAL: usize = 46;

/// SDES crypto suites (RFC 4568, RFC 6188, RFC 7714) the recorder can decrypt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SrtpSuite {
    /// `AES_CM_128_HMAC_SHA1_80`
    AesCm128Sha1_80,
    /// `AES_CM_128_HMAC_SHA1_32`
    AesCm128Sha1_32,
    /// `AES_256_CM_HMAC_SHA1_80`
    AesCm256Sha1_80,
    /// `AES_256_CM_HMAC_SHA1_32`
    AesCm256Sha1_32,
    /// `AEAD_AES_128_GCM`
    AeadAes128Gcm,
    /// `AEAD_AES_256_GCM`
    AeadAes256Gcm,
}

impl SrtpSuite {
    /// Every suite, in our preference order.
    pub const ALL: [SrtpSuite; 6] = [
        SrtpSuite::AesCm128Sha1_80,
        SrtpSuite::AesCm128Sha1_32,
        SrtpSuite::AesCm256Sha1_80,
        SrtpSuite::AesCm256Sha1_32,
        SrtpSuite::AeadAes128Gcm,
        SrtpSuite::AeadAes256Gcm,
    ];

    /// The SDP name.
    pub fn name(self) -> &'static str {
        match self {
            SrtpSuite::AesCm128Sha1_80 => "AES_CM_128_HMAC_SHA1_80",
            SrtpSuite::AesCm128Sha1_32 => "AES_CM_128_HMAC_SHA1_32",
            SrtpSuite::AesCm256Sha1_80 => "AES_256_CM_HMAC_SHA1_80",
            SrtpSuite::AesCm256Sha1_32 => "AES_256_CM_HMAC_SHA1_32",
            SrtpSuite::AeadAes128Gcm => "AEAD_AES_128_GCM",
            SrtpSuite::AeadAes256Gcm => "AEAD_AES_256_GCM",
        }
    }

    /// Parses an SDP suite name (case-insensitive).
    pub fn from_name(s: &str) -> Option<SrtpSuite> {
        Self::ALL
            .into_iter()
            .find(|x| x.name().eq_ignore_ascii_case(s))
    }

    /// Master key plus master salt length in bytes (the decoded `inline:` key).
    pub fn key_material_len(self) -> usize {
        match self {
            SrtpSuite::AesCm128Sha1_80 | SrtpSuite::AesCm128Sha1_32 => 30,
            SrtpSuite::AesCm256Sha1_80 | SrtpSuite::AesCm256Sha1_32 => 46,
            SrtpSuite::AeadAes128Gcm => 28,
            SrtpSuite::AeadAes256Gcm => 44,
        }
    }
}

/// The recorder's media capabilities (from configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaPolicy {
    /// Encoding names we can record (`PCMU`, `PCMA`, `G722`, `opus`...). The first one
    /// in the *offer's* order that is listed here is chosen (RFC 3264 §6.1: the
    /// offerer's preference).
    pub codecs: Vec<String>,
    /// SRTP suites we can decrypt; empty = no SRTP (a `RTP/SAVP` line is refused).
    pub srtp_suites: Vec<SrtpSuite>,
}

impl Default for MediaPolicy {
    fn default() -> Self {
        MediaPolicy {
            codecs: ["PCMU", "PCMA", "G722", "opus"]
                .into_iter()
                .map(str::to_owned)
                .collect(),
            srtp_suites: SrtpSuite::ALL.to_vec(),
        }
    }
}

/// One payload format of a planned stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    /// Payload type.
    pub pt: u8,
    /// Encoding name as offered.
    pub encoding: String,
    /// Clock rate.
    pub clock_rate: u32,
    /// Channels.
    pub channels: u8,
    /// The offer's `a=fmtp` for it.
    pub fmtp: Option<String>,
}

/// The SRTP parameters of an accepted `RTP/SAVP` stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrtpOffer {
    /// The offered crypto tag we answer.
    pub tag: u32,
    /// The suite.
    pub suite: SrtpSuite,
    /// The offerer's master key || salt, decoded: decrypts what the SRC sends.
    pub remote_key: Vec<u8>,
}

/// Why a stream was refused (port 0 in the answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not `audio`, or a transport we do not record (DTLS-SRTP, udptl...).
    Unsupported,
    /// No offered codec is one we record.
    NoCodec,
    /// `RTP/SAVP` without a crypto line we can use.
    NoCrypto,
    /// The offer itself disabled it (port 0).
    Disabled,
}

/// The decision for one m-line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamPlan {
    /// `a=label` (echoed in the answer).
    pub label: Option<String>,
    /// Media type as offered (`audio`...).
    pub kind: String,
    /// Transport as offered (`RTP/AVP`, `RTP/SAVP`...).
    pub proto: String,
    /// The offer's formats (for a refused line's answer).
    pub offered_formats: Vec<u8>,
    /// `Ok` with the chosen codec (and `telephone-event` when offered) or the refusal.
    pub decision: Result<Vec<Format>, Refusal>,
    /// SRTP, for an accepted `RTP/SAVP` stream.
    pub srtp: Option<SrtpOffer>,
    /// The offer's direction.
    pub direction: Direction,
    /// The offer pauses this stream: `a=inactive`/`a=recvonly` or `c=0.0.0.0`.
    pub paused: bool,
    /// Where the SRC sends from (offer `c=` and port), informational: RTP is accepted
    /// from any source (§6 item 11).
    pub remote: Option<(IpAddr, u16)>,
}

impl StreamPlan {
    /// True when the stream is accepted.
    pub fn accepted(&self) -> bool {
        self.decision.is_ok()
    }
}

/// Decides every m-line of an offer.
pub fn plan(offer: &Sdp<'_>, policy: &MediaPolicy) -> Vec<StreamPlan> {
    offer
        .media
        .iter()
        .map(|m| plan_one(offer, m, policy))
        .collect()
}

fn plan_one(offer: &Sdp<'_>, m: &Media<'_>, policy: &MediaPolicy) -> StreamPlan {
    let direction = m.direction_or(offer);
    let conn = m.connection_or(offer);
    let mut p = StreamPlan {
        label: m.label.map(str::to_owned),
        kind: m.kind.to_owned(),
        proto: m.proto.to_owned(),
        offered_formats: m.formats.clone(),
        decision: Err(Refusal::Unsupported),
        srtp: None,
        direction,
        paused: matches!(direction, Direction::Inactive | Direction::RecvOnly)
            || conn.is_some_and(|ip| ip.is_unspecified()),
        remote: conn.map(|ip| (ip, m.port)),
    };
    if m.port == 0 {
        p.decision = Err(Refusal::Disabled);
        return p;
    }
    let proto = m.proto.to_ascii_uppercase();
    let srtp = match proto.as_str() {
        "RTP/AVP" | "RTP/AVPF" => false,
        "RTP/SAVP" | "RTP/SAVPF" => true,
        _ => return p,
    };
    if !m.kind.eq_ignore_ascii_case("audio") {
        return p;
    }
    if srtp {
        match choose_crypto(&m.crypto, policy) {
            Some(c) => p.srtp = Some(c),
            None => {
                p.decision = Err(Refusal::NoCrypto);
                return p;
            }
        }
    }
    let format = |pt: u8| {
        m.codec(pt).map(|(enc, rate, ch)| Format {
            pt,
            encoding: enc.to_owned(),
            clock_rate: rate,
            channels: ch,
            fmtp: m.fmtp(pt).map(str::to_owned),
        })
    };
    let chosen = m.formats.iter().copied().find_map(|pt| {
        format(pt).filter(|f| {
            policy
                .codecs
                .iter()
                .any(|c| c.eq_ignore_ascii_case(&f.encoding))
        })
    });
    let Some(chosen) = chosen else {
        p.decision = Err(Refusal::NoCodec);
        return p;
    };
    let mut formats = vec![chosen];
    // telephone-event at the codec's clock rate (a 48 kHz one goes with opus).
    let rate = formats.first().map(|f| f.clock_rate).unwrap_or(8000);
    if let Some(te) = m.formats.iter().copied().find_map(|pt| {
        format(pt)
            .filter(|f| f.encoding.eq_ignore_ascii_case("telephone-event") && f.clock_rate == rate)
    }) {
        formats.push(te);
    }
    p.decision = Ok(formats);
    p
}

fn choose_crypto(lines: &[&str], policy: &MediaPolicy) -> Option<SrtpOffer> {
    for line in lines {
        let mut it = line.split_ascii_whitespace();
        let (Some(tag), Some(suite), Some(params)) = (it.next(), it.next(), it.next()) else {
            continue;
        };
        let (Ok(tag), Some(suite)) = (tag.parse::<u32>(), SrtpSuite::from_name(suite)) else {
            continue;
        };
        if !policy.srtp_suites.contains(&suite) {
            continue;
        }
        // Session parameters after the key params (UNENCRYPTED_SRTP, KDR...) change the
        // transform; we only take plain lines.
        if it.next().is_some() {
            continue;
        }
        // First key only: `inline:<key>[|lifetime][|MKI:len]`, several keys separated
        // by `;`. An MKI would need per-packet key selection: not supported.
        let Some(inline) = params
            .split(';')
            .next()
            .and_then(|k| k.strip_prefix("inline:"))
        else {
            continue;
        };
        let mut fields = inline.split('|');
        let key = fields.next().unwrap_or("");
        if fields.any(|f| f.contains(':')) {
            continue;
        }
        let Ok(remote_key) = base64::engine::general_purpose::STANDARD.decode(key) else {
            continue;
        };
        if remote_key.len() != suite.key_material_len() {
            continue;
        }
        return Some(SrtpOffer {
            tag,
            suite,
            remote_key,
        });
    }
    None
}

/// Our `o=` line values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnOrigin {
    /// Session id (stable for the dialog).
    pub session_id: u64,
    /// Version: bumped by the caller whenever the answer changes.
    pub version: u64,
    /// Our media address (also the `c=` line).
    pub address: IpAddr,
}

/// What the shell bound for one accepted stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bound {
    /// The (even) RTP port; RTCP is port + 1.
    pub port: u16,
    /// Our key material for `a=crypto` (only the suite's length is used).
    pub key: [u8; MAX_KEY_MATERIAL],
}

/// Writes the answer. `bound[i]` is the binding of m-line `i` (`None` = refused, also
/// for an accepted plan the shell could not bind).
pub fn render(plans: &[StreamPlan], bound: &[Option<Bound>], origin: &OwnOrigin) -> String {
    let ip = match origin.address {
        IpAddr::V4(_) => "IP4",
        IpAddr::V6(_) => "IP6",
    };
    let mut s = String::with_capacity(256);
    let _ = write!(
        s,
        "v=0\r\no=vcontap {} {} IN {ip} {}\r\ns=vcontap\r\nc=IN {ip} {}\r\nt=0 0\r\n",
        origin.session_id, origin.version, origin.address, origin.address
    );
    for (i, p) in plans.iter().enumerate() {
        let b = bound.get(i).copied().flatten();
        match (&p.decision, b) {
            (Ok(formats), Some(b)) => {
                let pts: Vec<String> = formats.iter().map(|f| f.pt.to_string()).collect();
                let _ = write!(
                    s,
                    "m={} {} {} {}\r\n",
                    p.kind,
                    b.port,
                    p.proto,
                    pts.join(" ")
                );
                for f in formats {
                    let _ = write!(s, "a=rtpmap:{} {}/{}", f.pt, f.encoding, f.clock_rate);
                    if f.channels > 1 {
                        let _ = write!(s, "/{}", f.channels);
                    }
                    s.push_str("\r\n");
                    if let Some(fmtp) = &f.fmtp {
                        let _ = write!(s, "a=fmtp:{} {}\r\n", f.pt, clean(fmtp));
                    }
                }
                if let Some(c) = &p.srtp {
                    let key = b.key.get(..c.suite.key_material_len()).unwrap_or(&b.key);
                    let _ = write!(
                        s,
                        "a=crypto:{} {} inline:{}\r\n",
                        c.tag,
                        c.suite.name(),
                        base64::engine::general_purpose::STANDARD.encode(key)
                    );
                }
                let dir = if p.direction == Direction::Inactive {
                    "inactive"
                } else {
                    "recvonly"
                };
                let _ = write!(s, "a={dir}\r\n");
            }
            _ => {
                let fmt = p
                    .offered_formats
                    .first()
                    .map(u8::to_string)
                    .unwrap_or_else(|| "0".to_owned());
                let _ = write!(s, "m={} 0 {} {fmt}\r\n", p.kind, p.proto);
            }
        }
        if let Some(l) = &p.label {
            let _ = write!(s, "a=label:{}\r\n", clean(l));
        }
    }
    s
}

/// Drops CR/LF from text copied from the offer.
fn clean(s: &str) -> String {
    s.chars().filter(|&c| c != '\r' && c != '\n').collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use vcontap_sip::sdp;

    const OFFER: &str = "v=0\r\no=SRC 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
m=audio 4000 RTP/AVP 18 8 0 101\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=label:a\r\na=sendonly\r\n\
m=video 4002 RTP/AVP 96\r\na=label:v\r\na=sendonly\r\n\
m=audio 4004 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4\r\n\
a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj\r\na=label:s\r\na=inactive\r\n\
m=audio 4006 RTP/AVP 18\r\na=label:g729\r\n\
m=audio 0 RTP/AVP 0\r\na=label:off\r\n";

    #[test]
    fn plans_each_line_and_renders_a_conservative_answer() {
        let offer = sdp::parse(OFFER.as_bytes()).unwrap();
        let plans = plan(&offer, &MediaPolicy::default());
        assert_eq!(plans.len(), 5);
        let f = plans[0].decision.as_ref().unwrap();
        assert_eq!(
            (f[0].pt, f[0].encoding.as_str()),
            (8, "PCMA"),
            "offer order, first we record"
        );
        assert_eq!((f[1].pt, f[1].fmtp.as_deref()), (101, Some("0-15")));
        assert_eq!(plans[1].decision, Err(Refusal::Unsupported));
        // The MKI line is skipped, the plain _32 one taken.
        let c = plans[2].srtp.as_ref().unwrap();
        assert_eq!((c.tag, c.suite), (2, SrtpSuite::AesCm128Sha1_32));
        assert_eq!(c.remote_key.len(), 30);
        assert!(plans[2].paused);
        assert_eq!(plans[3].decision, Err(Refusal::NoCodec));
        assert_eq!(plans[4].decision, Err(Refusal::Disabled));

        let key = [7u8; MAX_KEY_MATERIAL];
        let bound = [
            Some(Bound { port: 40000, key }),
            None,
            Some(Bound { port: 40002, key }),
            None,
            None,
        ];
        let origin = OwnOrigin {
            session_id: 99,
            version: 1,
            address: "192.0.2.9".parse().unwrap(),
        };
        let text = render(&plans, &bound, &origin);
        let ans = sdp::parse(text.as_bytes()).unwrap();
        assert_eq!(ans.origin.unwrap().username, "vcontap");
        assert_eq!(ans.origin.unwrap().address, "192.0.2.9");
        assert_eq!(ans.media.len(), 5, "same m-line count");
        let labels: Vec<_> = ans.media.iter().map(|m| m.label.unwrap()).collect();
        assert_eq!(
            labels,
            ["a", "v", "s", "g729", "off"],
            "every label echoed, in order"
        );
        let ports: Vec<_> = ans.media.iter().map(|m| m.port).collect();
        assert_eq!(ports, [40000, 0, 40002, 0, 0]);
        assert_eq!(ans.media[0].formats, [8, 101]);
        assert_eq!(ans.media[0].direction, Some(Direction::RecvOnly));
        assert_eq!(ans.media[2].direction, Some(Direction::Inactive));
        assert_eq!(ans.media[2].proto, "RTP/SAVP");
        assert_eq!(ans.media[1].kind, "video");
        let crypto = ans.media[2].crypto[0];
        assert!(crypto.starts_with("2 AES_CM_128_HMAC_SHA1_32 inline:"));
        let ours = crypto.rsplit(':').next().unwrap();
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(ours)
                .unwrap(),
            [7u8; 30]
        );
        assert!(!text.contains("sendonly") && !text.contains("sendrecv"));
    }

    #[test]
    fn no_srtp_policy_refuses_savp_and_bad_keys_are_skipped() {
        let offer = sdp::parse(OFFER.as_bytes()).unwrap();
        let policy = MediaPolicy {
            srtp_suites: Vec::new(),
            ..MediaPolicy::default()
        };
        assert_eq!(plan(&offer, &policy)[2].decision, Err(Refusal::NoCrypto));
        let bad = "v=0\r\nm=audio 1 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:c2hvcnQ=\r\na=crypto:x AES_CM_128_HMAC_SHA1_80 inline:!!\r\na=crypto:3 F8_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n";
        let offer = sdp::parse(bad.as_bytes()).unwrap();
        assert_eq!(
            plan(&offer, &MediaPolicy::default())[0].decision,
            Err(Refusal::NoCrypto)
        );
    }

    #[test]
    fn hold_by_zero_address_and_opus_with_its_events() {
        let o = "v=0\r\nc=IN IP4 0.0.0.0\r\nm=audio 5 RTP/AVP 111 101 107 0\r\na=rtpmap:111 opus/48000/2\r\na=rtpmap:101 telephone-event/8000\r\na=rtpmap:107 telephone-event/48000\r\n";
        let offer = sdp::parse(o.as_bytes()).unwrap();
        let p = &plan(&offer, &MediaPolicy::default())[0];
        assert!(p.paused);
        let f = p.decision.as_ref().unwrap();
        assert_eq!((f[0].pt, f[0].channels, f[1].pt), (111, 2, 107));
        let text = render(
            std::slice::from_ref(p),
            &[Some(Bound {
                port: 7000,
                key: [0; MAX_KEY_MATERIAL],
            })],
            &OwnOrigin {
                session_id: 1,
                version: 1,
                address: "::1".parse().unwrap(),
            },
        );
        assert!(text.contains("a=rtpmap:111 opus/48000/2\r\n"));
        assert!(text.contains("c=IN IP6 ::1\r\n"));
        assert!(!text.contains("a=label"), "nothing to echo without a label");
    }
}
