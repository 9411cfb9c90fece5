//! SDP (RFC 8866) as far as a passive recorder needs it: origin, connection addresses,
//! media lines with their payload types, codecs (`rtpmap` plus the RFC 3551 static table),
//! `fmtp`, direction, `rtcp`/`rtcp-mux`, SDES `crypto`, `label` (SIPREC) and `ptime`.
//!
//! Lenient and bounded: unknown or malformed lines are skipped, lines that are not UTF-8
//! are skipped, and every list has a named upper bound.

use std::net::IpAddr;

/// Most `m=` sections kept; further media sections (and their attributes) are ignored.
/// SIPREC offers carry 2-4 streams, conference UAs rarely more than a dozen.
pub const MAX_MEDIA: usize = 32;
/// Most payload types kept per `m=` line, and most `rtpmap`/`fmtp` entries per section.
/// RTP has 128 payload types; real offers list under 20.
pub const MAX_FORMATS: usize = 64;
/// Most `a=` lines processed in one SDP; the rest are ignored (bounds work on hostile input).
pub const MAX_ATTRS: usize = 256;
/// Most `a=crypto` lines kept per media section (real offers carry 1-4 suites).
pub const MAX_CRYPTO: usize = 16;

/// Errors of [`parse`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SdpError {
    /// The body is empty or only whitespace.
    #[error("empty SDP")]
    Empty,
    /// The first line is not `v=`.
    #[error("not an SDP body (no leading v= line)")]
    NotSdp,
}

/// Media direction attribute (RFC 3264 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// `a=sendrecv` (the default).
    SendRecv,
    /// `a=sendonly`
    SendOnly,
    /// `a=recvonly`
    RecvOnly,
    /// `a=inactive`
    Inactive,
}

impl Direction {
    /// The attribute name.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// True when the SDP's owner sends media.
    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    /// True when the SDP's owner receives media.
    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }

    /// Parses a direction attribute name (case-insensitive).
    pub fn from_attr(s: &str) -> Option<Direction> {
        [
            Direction::SendRecv,
            Direction::SendOnly,
            Direction::RecvOnly,
            Direction::Inactive,
        ]
        .into_iter()
        .find(|d| s.eq_ignore_ascii_case(d.as_str()))
    }

    /// The direction the other side takes in its answer (RFC 3264 §6.1).
    pub fn reversed(self) -> Direction {
        match self {
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            d => d,
        }
    }
}

/// The `o=` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin<'a> {
    /// Username (`-` when none).
    pub username: &'a str,
    /// Session id.
    pub session_id: &'a str,
    /// Session version (changes with every new offer).
    pub version: &'a str,
    /// Unicast address of the originator as written.
    pub address: &'a str,
}

/// An `a=rtpmap` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpMap<'a> {
    /// Payload type.
    pub pt: u8,
    /// Encoding name as written (`PCMU`, `opus`, `telephone-event`...).
    pub encoding: &'a str,
    /// Clock rate in Hz.
    pub clock_rate: u32,
    /// Channels (1 when not given).
    pub channels: u8,
}

/// One `m=` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media<'a> {
    /// Media type: `audio`, `video`, `image`, `application`...
    pub kind: &'a str,
    /// Transport port (0 = stream removed/rejected).
    pub port: u16,
    /// Number of ports (`m=audio 49170/2`), 1 when not given.
    pub port_count: u16,
    /// Transport protocol (`RTP/AVP`, `RTP/SAVP`, `UDP/TLS/RTP/SAVPF`, `udptl`...).
    pub proto: &'a str,
    /// Numeric payload types in offer order (non-numeric formats such as `t38` skipped).
    pub formats: Vec<u8>,
    /// Media-level `c=` address.
    pub connection: Option<IpAddr>,
    /// Media-level direction attribute.
    pub direction: Option<Direction>,
    /// `a=rtpmap` entries.
    pub rtpmaps: Vec<RtpMap<'a>>,
    /// `a=fmtp` entries: payload type and raw parameters.
    pub fmtps: Vec<(u8, &'a str)>,
    /// `a=rtcp` port and optional address (RFC 3605).
    pub rtcp: Option<(u16, Option<IpAddr>)>,
    /// `a=rtcp-mux` present (RFC 5761).
    pub rtcp_mux: bool,
    /// Raw `a=crypto` values (RFC 4568).
    pub crypto: Vec<&'a str>,
    /// `a=label` (RFC 4574; SIPREC stream labels).
    pub label: Option<&'a str>,
    /// `a=ptime` in milliseconds.
    pub ptime: Option<u32>,
}

/// A parsed SDP body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sdp<'a> {
    /// `o=` line.
    pub origin: Option<Origin<'a>>,
    /// `s=` line.
    pub session_name: Option<&'a str>,
    /// Session-level `c=` address.
    pub connection: Option<IpAddr>,
    /// Session-level direction attribute.
    pub direction: Option<Direction>,
    /// Media sections (at most [`MAX_MEDIA`]).
    pub media: Vec<Media<'a>>,
}

/// The RFC 3551 static payload types: `(encoding, clock rate, channels)`. Video types
/// report 1 channel (channels do not apply).
pub fn static_payload_type(pt: u8) -> Option<(&'static str, u32, u8)> {
    Some(match pt {
        0 => ("PCMU", 8000, 1),
        3 => ("GSM", 8000, 1),
        4 => ("G723", 8000, 1),
        5 => ("DVI4", 8000, 1),
        6 => ("DVI4", 16000, 1),
        7 => ("LPC", 8000, 1),
        8 => ("PCMA", 8000, 1),
        9 => ("G722", 8000, 1),
        10 => ("L16", 44100, 2),
        11 => ("L16", 44100, 1),
        12 => ("QCELP", 8000, 1),
        13 => ("CN", 8000, 1),
        14 => ("MPA", 90000, 1),
        15 => ("G728", 8000, 1),
        16 => ("DVI4", 11025, 1),
        17 => ("DVI4", 22050, 1),
        18 => ("G729", 8000, 1),
        25 => ("CelB", 90000, 1),
        26 => ("JPEG", 90000, 1),
        28 => ("nv", 90000, 1),
        31 => ("H261", 90000, 1),
        32 => ("MPV", 90000, 1),
        33 => ("MP2T", 90000, 1),
        34 => ("H263", 90000, 1),
        _ => return None,
    })
}

impl<'a> Media<'a> {
    /// Media-level `c=` address, else the session-level one.
    pub fn connection_or(&self, sdp: &Sdp<'_>) -> Option<IpAddr> {
        self.connection.or(sdp.connection)
    }

    /// Media-level direction, else session-level, else `SendRecv`.
    pub fn direction_or(&self, sdp: &Sdp<'_>) -> Direction {
        self.direction
            .or(sdp.direction)
            .unwrap_or(Direction::SendRecv)
    }

    /// Codec of a payload type: the `rtpmap`, else the static table.
    pub fn codec(&self, pt: u8) -> Option<(&'a str, u32, u8)> {
        self.rtpmaps
            .iter()
            .find(|r| r.pt == pt)
            .map(|r| (r.encoding, r.clock_rate, r.channels))
            .or_else(|| static_payload_type(pt))
    }

    /// The `fmtp` parameters of a payload type.
    pub fn fmtp(&self, pt: u8) -> Option<&'a str> {
        self.fmtps.iter().find(|(p, _)| *p == pt).map(|&(_, f)| f)
    }

    /// True when this stream is put on hold: direction `sendonly`/`inactive`, or the
    /// RFC 2543 style `c=0.0.0.0` (or `::`). Port 0 means removed, not held.
    pub fn is_held(&self, sdp: &Sdp<'_>) -> bool {
        if self.port == 0 {
            return false;
        }
        matches!(
            self.direction_or(sdp),
            Direction::SendOnly | Direction::Inactive
        ) || self
            .connection_or(sdp)
            .is_some_and(|ip| ip.is_unspecified())
    }

    /// True when the port is 0 (stream rejected or removed, RFC 3264 §8.2).
    pub fn is_removed(&self) -> bool {
        self.port == 0
    }
}

/// Parses an SDP body. The first non-blank line must be `v=`; everything else is lenient.
pub fn parse(body: &[u8]) -> Result<Sdp<'_>, SdpError> {
    let mut sdp = Sdp {
        origin: None,
        session_name: None,
        connection: None,
        direction: None,
        media: Vec::new(),
    };
    let mut seen_first = false;
    let mut attrs = 0usize;
    // Set while inside an m= section we dropped (over MAX_MEDIA or malformed).
    let mut skipping_media = false;
    for raw_line in body.split(|&b| b == b'\n') {
        let Ok(line) = std::str::from_utf8(raw_line) else {
            continue;
        };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let (ty, value) = match line.as_bytes() {
            [t, b'=', ..] => (*t, line.get(2..).unwrap_or("").trim()),
            _ => {
                if !seen_first {
                    return Err(SdpError::NotSdp);
                }
                continue;
            }
        };
        if !seen_first {
            if ty != b'v' {
                return Err(SdpError::NotSdp);
            }
            seen_first = true;
            continue;
        }
        if ty == b'm' {
            skipping_media = true;
            if sdp.media.len() < MAX_MEDIA {
                if let Some(m) = parse_m_line(value) {
                    sdp.media.push(m);
                    skipping_media = false;
                }
            }
            continue;
        }
        let in_media = !sdp.media.is_empty() || skipping_media;
        if skipping_media {
            continue;
        }
        match ty {
            b'o' if !in_media => sdp.origin = parse_origin(value),
            b's' if !in_media => sdp.session_name = Some(value),
            b'c' => {
                let addr = parse_connection(value);
                match sdp.media.last_mut() {
                    Some(m) => m.connection = addr,
                    None => sdp.connection = addr,
                }
            }
            b'a' => {
                attrs = attrs.saturating_add(1);
                if attrs > MAX_ATTRS {
                    continue;
                }
                let (name, val) = value.split_once(':').unwrap_or((value, ""));
                let name = name.trim();
                let val = val.trim();
                match sdp.media.last_mut() {
                    Some(m) => apply_media_attr(m, name, val),
                    None => {
                        if let Some(d) = Direction::from_attr(name) {
                            sdp.direction = Some(d);
                        }
                    }
                }
            }
            _ => {}
        }
    }
    if !seen_first {
        return Err(SdpError::Empty);
    }
    Ok(sdp)
}

fn parse_origin(v: &str) -> Option<Origin<'_>> {
    let mut it = v.split_ascii_whitespace();
    let username = it.next()?;
    let session_id = it.next()?;
    let version = it.next()?;
    let _nettype = it.next()?;
    let _addrtype = it.next()?;
    let address = it.next()?;
    Some(Origin {
        username,
        session_id,
        version,
        address,
    })
}

/// `IN IP4 192.0.2.1[/ttl[/n]]` -> address; FQDNs and garbage give `None`.
fn parse_connection(v: &str) -> Option<IpAddr> {
    let mut it = v.split_ascii_whitespace();
    let _nettype = it.next()?;
    let _addrtype = it.next()?;
    let addr = it.next()?;
    addr.split('/').next()?.parse().ok()
}

fn parse_m_line(v: &str) -> Option<Media<'_>> {
    let mut it = v.split_ascii_whitespace();
    let kind = it.next()?;
    let port_field = it.next()?;
    let proto = it.next()?;
    let (port, port_count) = match port_field.split_once('/') {
        Some((p, c)) => (p.parse().ok()?, c.parse().unwrap_or(1)),
        None => (port_field.parse().ok()?, 1),
    };
    let formats = it
        .filter_map(|f| f.parse::<u8>().ok())
        .filter(|&pt| pt <= 127)
        .take(MAX_FORMATS)
        .collect();
    Some(Media {
        kind,
        port,
        port_count,
        proto,
        formats,
        connection: None,
        direction: None,
        rtpmaps: Vec::new(),
        fmtps: Vec::new(),
        rtcp: None,
        rtcp_mux: false,
        crypto: Vec::new(),
        label: None,
        ptime: None,
    })
}

fn apply_media_attr<'a>(m: &mut Media<'a>, name: &'a str, val: &'a str) {
    if let Some(d) = Direction::from_attr(name) {
        m.direction = Some(d);
        return;
    }
    // Lowercase into a stack buffer: no allocation per attribute. Every attribute we
    // read has a short name, so longer names are simply ignored.
    let mut buf = [0u8; 16];
    let Some(lower) = buf.get_mut(..name.len()) else {
        return;
    };
    lower.copy_from_slice(name.as_bytes());
    lower.make_ascii_lowercase();
    match &*lower {
        b"rtpmap" => {
            if m.rtpmaps.len() >= MAX_FORMATS {
                return;
            }
            if let Some(r) = parse_rtpmap(val) {
                m.rtpmaps.push(r);
            }
        }
        b"fmtp" => {
            if m.fmtps.len() >= MAX_FORMATS {
                return;
            }
            let (pt, params) = val
                .split_once(|c: char| c.is_ascii_whitespace())
                .unwrap_or((val, ""));
            if let Ok(pt) = pt.parse::<u8>() {
                m.fmtps.push((pt, params.trim()));
            }
        }
        b"rtcp" => {
            let mut it = val.split_ascii_whitespace();
            if let Some(port) = it.next().and_then(|p| p.parse().ok()) {
                let addr = match (it.next(), it.next(), it.next()) {
                    (Some(_), Some(_), Some(a)) => a.split('/').next().and_then(|a| a.parse().ok()),
                    _ => None,
                };
                m.rtcp = Some((port, addr));
            }
        }
        b"rtcp-mux" => m.rtcp_mux = true,
        b"crypto" if m.crypto.len() < MAX_CRYPTO && !val.is_empty() => m.crypto.push(val),
        b"label" => m.label = Some(val).filter(|l| !l.is_empty()),
        b"ptime" => {
            m.ptime = val.split('.').next().and_then(|p| p.trim().parse().ok());
        }
        _ => {}
    }
}

/// `97 opus/48000/2` -> RtpMap.
fn parse_rtpmap(v: &str) -> Option<RtpMap<'_>> {
    let (pt, rest) = v.split_once(|c: char| c.is_ascii_whitespace())?;
    let pt: u8 = pt.parse().ok().filter(|&p| p <= 127)?;
    let mut parts = rest.trim().split('/');
    let encoding = parts.next()?.trim();
    if encoding.is_empty() {
        return None;
    }
    let clock_rate = parts.next()?.trim().parse().ok()?;
    let channels = match parts.next() {
        Some(c) => c.trim().parse().ok()?,
        None => 1,
    };
    Some(RtpMap {
        pt,
        encoding,
        clock_rate,
        channels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const OFFER: &str = "v=0\r\n\
o=alice 2890844526 2890844527 IN IP4 host.atlanta.example.com\r\n\
s=Talk\r\n\
c=IN IP4 192.0.2.1\r\n\
t=0 0\r\n\
a=sendrecv\r\n\
m=audio 49170 RTP/AVP 0 8 97 101\r\n\
a=rtpmap:97 opus/48000/2\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=ptime:20\r\n\
a=rtcp:49171\r\n\
m=video 51372/2 RTP/SAVP 31 96\r\n\
c=IN IP6 2001:db8::2\r\n\
a=recvonly\r\n\
a=rtcp:53020 IN IP6 2001:db8::3\r\n\
a=rtcp-mux\r\n\
a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:32\r\n\
a=label:2\r\n\
m=image 0 udptl t38\r\n";

    #[test]
    fn parses_offer() {
        let s = parse(OFFER.as_bytes()).unwrap();
        let o = s.origin.unwrap();
        assert_eq!(o.username, "alice");
        assert_eq!(o.session_id, "2890844526");
        assert_eq!(o.version, "2890844527");
        assert_eq!(o.address, "host.atlanta.example.com");
        assert_eq!(s.session_name, Some("Talk"));
        assert_eq!(s.connection, Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))));
        assert_eq!(s.direction, Some(Direction::SendRecv));
        assert_eq!(s.media.len(), 3);

        let a = &s.media[0];
        assert_eq!(
            (a.kind, a.port, a.port_count, a.proto),
            ("audio", 49170, 1, "RTP/AVP")
        );
        assert_eq!(a.formats, vec![0, 8, 97, 101]);
        assert_eq!(a.connection, None);
        assert_eq!(a.connection_or(&s), s.connection);
        assert_eq!(a.direction_or(&s), Direction::SendRecv);
        assert_eq!(a.codec(97), Some(("opus", 48000, 2)));
        assert_eq!(a.codec(0), Some(("PCMU", 8000, 1)));
        assert_eq!(a.codec(8), Some(("PCMA", 8000, 1)));
        assert_eq!(a.codec(101), Some(("telephone-event", 8000, 1)));
        assert_eq!(a.codec(99), None);
        assert_eq!(a.fmtps, vec![(101, "0-16")]);
        assert_eq!(a.fmtp(101), Some("0-16"));
        assert_eq!(a.ptime, Some(20));
        assert_eq!(a.rtcp, Some((49171, None)));
        assert!(!a.rtcp_mux);
        assert!(!a.is_held(&s));

        let v = &s.media[1];
        assert_eq!((v.port, v.port_count, v.proto), (51372, 2, "RTP/SAVP"));
        assert_eq!(
            v.connection_or(&s),
            Some(IpAddr::V6("2001:db8::2".parse::<Ipv6Addr>().unwrap()))
        );
        assert_eq!(v.direction_or(&s), Direction::RecvOnly);
        assert_eq!(v.rtcp, Some((53020, Some("2001:db8::3".parse().unwrap()))));
        assert!(v.rtcp_mux);
        assert_eq!(v.crypto.len(), 1);
        assert!(v.crypto[0].starts_with("1 AES_CM_128_HMAC_SHA1_80 inline:"));
        assert_eq!(v.label, Some("2"));
        assert_eq!(v.codec(31), Some(("H261", 90000, 1)));
        assert!(!v.is_held(&s));

        let t = &s.media[2];
        assert_eq!((t.kind, t.port, t.proto), ("image", 0, "udptl"));
        assert!(t.formats.is_empty());
        assert!(t.is_removed());
        assert!(!t.is_held(&s));
    }

    #[test]
    fn hold_variants() {
        let held = |sdp: &str| {
            let s = parse(sdp.as_bytes()).unwrap();
            s.media[0].is_held(&s)
        };
        assert!(held(
            "v=0\nc=IN IP4 10.0.0.1\nm=audio 4000 RTP/AVP 0\na=sendonly\n"
        ));
        assert!(held(
            "v=0\nc=IN IP4 10.0.0.1\nm=audio 4000 RTP/AVP 0\na=inactive\n"
        ));
        assert!(held(
            "v=0\nc=IN IP4 10.0.0.1\na=sendonly\nm=audio 4000 RTP/AVP 0\n"
        ));
        assert!(held("v=0\nc=IN IP4 0.0.0.0\nm=audio 4000 RTP/AVP 0\n"));
        assert!(held(
            "v=0\nc=IN IP4 10.0.0.1\nm=audio 4000 RTP/AVP 0\nc=IN IP4 0.0.0.0\n"
        ));
        assert!(held("v=0\nm=audio 4000 RTP/AVP 0\nc=IN IP6 ::\n"));
        assert!(!held(
            "v=0\nc=IN IP4 10.0.0.1\nm=audio 4000 RTP/AVP 0\na=recvonly\n"
        ));
        assert!(!held(
            "v=0\nc=IN IP4 10.0.0.1\na=sendonly\nm=audio 4000 RTP/AVP 0\na=sendrecv\n"
        ));
        assert!(!held("v=0\nc=IN IP4 0.0.0.0\nm=audio 0 RTP/AVP 0\n"));
    }

    #[test]
    fn direction_helpers() {
        assert!(Direction::SendRecv.sends() && Direction::SendRecv.receives());
        assert!(Direction::SendOnly.sends() && !Direction::SendOnly.receives());
        assert!(!Direction::RecvOnly.sends() && Direction::RecvOnly.receives());
        assert!(!Direction::Inactive.sends() && !Direction::Inactive.receives());
        assert_eq!(Direction::SendOnly.as_str(), "sendonly");
        assert_eq!(Direction::from_attr("INACTIVE"), Some(Direction::Inactive));
        assert_eq!(Direction::from_attr("foo"), None);
        assert_eq!(Direction::SendOnly.reversed(), Direction::RecvOnly);
        assert_eq!(Direction::Inactive.reversed(), Direction::Inactive);
    }

    #[test]
    fn static_table() {
        assert_eq!(static_payload_type(9), Some(("G722", 8000, 1)));
        assert_eq!(static_payload_type(10), Some(("L16", 44100, 2)));
        assert_eq!(static_payload_type(18), Some(("G729", 8000, 1)));
        assert_eq!(static_payload_type(34), Some(("H263", 90000, 1)));
        assert_eq!(static_payload_type(1), None);
        assert_eq!(static_payload_type(96), None);
    }

    #[test]
    fn malformed_and_lenient() {
        assert_eq!(parse(b"").unwrap_err(), SdpError::Empty);
        assert_eq!(parse(b" \r\n\r\n").unwrap_err(), SdpError::Empty);
        assert_eq!(parse(b"hello").unwrap_err(), SdpError::NotSdp);
        assert_eq!(parse(b"o=x 1 1 IN IP4 a\n").unwrap_err(), SdpError::NotSdp);
        let s = parse(
            b"\r\nv=0\nc=IN IP4 example.com\no=short\n\xff\xfe=bad\ngarbage line\n\
m=audio notaport RTP/AVP 0\na=rtpmap:0 PCMU/8000\na=sendonly\n\
m=audio 5004 RTP/AVP 0 t38 300 -1 8\na=rtpmap:x PCMU/8000\na=rtpmap:9 G722\n\
a=rtpmap:96 opus/48000/x\na=rtcp:abc\na=ptime:20.5\na=fmtp:zz 1\na=label:\n",
        )
        .unwrap();
        assert_eq!(s.connection, None);
        assert_eq!(s.origin, None);
        // Attributes of the dropped m= line do not leak into the session.
        assert_eq!(s.direction, None);
        assert_eq!(s.media.len(), 1);
        let m = &s.media[0];
        assert_eq!(m.formats, vec![0, 8]);
        assert!(m.rtpmaps.is_empty());
        assert_eq!(m.rtcp, None);
        assert_eq!(m.ptime, Some(20));
        assert!(m.fmtps.is_empty());
        assert_eq!(m.label, None);
    }

    #[test]
    fn bounds_hold() {
        let mut s = String::from("v=0\n");
        for i in 0..(MAX_MEDIA + 5) {
            s.push_str(&format!("m=audio {} RTP/AVP", 1000 + i));
            for pt in 0..200 {
                s.push_str(&format!(" {pt}"));
            }
            s.push('\n');
            for _ in 0..20 {
                s.push_str("a=rtpmap:96 x/8000\n");
            }
        }
        let p = parse(s.as_bytes()).unwrap();
        assert_eq!(p.media.len(), MAX_MEDIA);
        assert!(p.media.iter().all(|m| m.formats.len() <= MAX_FORMATS));
        assert_eq!(p.media[0].formats.len(), MAX_FORMATS);
        let attrs: usize = p.media.iter().map(|m| m.rtpmaps.len()).sum();
        assert_eq!(attrs, MAX_ATTRS);
        let crypto = "v=0\nm=audio 1 RTP/SAVP 0\n".to_owned() + &"a=crypto:1 x\n".repeat(40);
        assert_eq!(
            parse(crypto.as_bytes()).unwrap().media[0].crypto.len(),
            MAX_CRYPTO
        );
    }

    #[test]
    fn truncation_never_panics() {
        let b = OFFER.as_bytes();
        for n in 0..=b.len() {
            if let Ok(s) = parse(&b[..n]) {
                for m in &s.media {
                    let _ = (m.connection_or(&s), m.direction_or(&s), m.is_held(&s));
                    let _ = m.codec(0);
                }
            }
        }
    }
}
