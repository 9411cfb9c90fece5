//! Synthesizer configuration: what traffic to produce, its validation and its limits.
//!
//! [`SynthConfig`] is plain data so the CLI can fill it from flags and tests from struct
//! literals with `..Default::default()`. Every bound the generator relies on is checked
//! in [`SynthConfig::validate`] and named as a `const` here.

use vcontap_wire::Timestamp;

/// Upper bound on `calls`: the summary keeps one [`crate::CallPlan`] per call (a few hundred
/// bytes each), so this caps that memory near a few hundred MiB.
pub const MAX_CALLS: u32 = 1_000_000;

/// Upper bound on `concurrent`: every active call gets its own caller/callee IP pair taken
/// from a pool of [`ADDRESS_POOL`] pairs, and active calls must never share addresses. Call
/// lengths vary (ring time, failures) up to about 4x the mean, so the target stays a
/// quarter of the pool.
pub const MAX_CONCURRENT: u32 = 16_000;

/// Number of distinct caller/callee address pairs (10.1.x.y / 10.2.x.y with x, y in 0..=253
/// shifted by one so neither octet is 0 or 255).
pub const ADDRESS_POOL: u32 = 254 * 254;

/// Upper bound on talk time per call (one day): keeps all timeline arithmetic far from
/// overflow and the capture inside the classic pcap 32-bit seconds field.
pub const MAX_SECONDS: f64 = 86_400.0;

/// Smallest packetization time accepted; below 10 ms the codecs' frames stop making sense.
pub const MIN_PTIME_MS: u32 = 10;

/// Largest packetization time accepted (RFC 3551 recommends at most 120 ms for G.711).
pub const MAX_PTIME_MS: u32 = 120;

/// Upper bound on the DTMF digit string; each digit takes 200 ms of talk time anyway.
pub const MAX_DTMF_DIGITS: usize = 64;

/// Upper bound on the number of codecs in the round-robin list.
pub const MAX_CODECS: usize = 16;

/// Capture time of the first packet by default: 2026-01-01T00:00:00Z.
pub const DEFAULT_START: Timestamp = Timestamp::from_parts(1_767_225_600, 0);

/// Audio codec carried by a call's RTP streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// G.711 µ-law, payload type 0, 8 kHz.
    Pcmu,
    /// G.711 A-law, payload type 8, 8 kHz.
    Pcma,
    /// G.722, payload type 9, 16 kHz audio on an 8 kHz RTP clock (RFC 3551 quirk).
    G722,
    /// Opus, payload type 111, 48 kHz (needs the `opus` feature).
    Opus,
}

impl Codec {
    /// Static (or conventional dynamic) RTP payload type.
    pub const fn payload_type(self) -> u8 {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
            Codec::G722 => 9,
            Codec::Opus => 111,
        }
    }
    /// RTP clock rate in Hz (what RTP timestamps count).
    pub const fn clock_rate(self) -> u32 {
        match self {
            Codec::Pcmu | Codec::Pcma | Codec::G722 => 8_000,
            Codec::Opus => 48_000,
        }
    }
    /// Audio sample rate in Hz fed to the encoder.
    pub const fn sample_rate(self) -> u32 {
        match self {
            Codec::Pcmu | Codec::Pcma => 8_000,
            Codec::G722 => 16_000,
            Codec::Opus => 48_000,
        }
    }
    /// SDP `a=rtpmap` encoding name and parameters (after the payload type).
    pub const fn rtpmap(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU/8000",
            Codec::Pcma => "PCMA/8000",
            Codec::G722 => "G722/8000",
            Codec::Opus => "opus/48000/2",
        }
    }
}

/// Transport that carries SIP signaling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SipTransport {
    /// One UDP datagram per SIP message.
    Udp,
    /// One TCP connection per call (handshake, segmented messages, FIN).
    Tcp,
}

/// What to synthesize. Start from [`SynthConfig::default`] and override fields.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthConfig {
    /// Number of calls in the capture.
    pub calls: u32,
    /// Target number of simultaneously active calls (start times are staggered for it).
    pub concurrent: u32,
    /// Talk time per answered call, in seconds.
    pub seconds: f64,
    /// Seed for every random choice; equal configs give byte-identical captures.
    pub seed: u64,
    /// Capture time of the first packet (truncated to whole microseconds, the pcap
    /// resolution, so planned times equal captured times).
    pub start: Timestamp,
    /// Codecs assigned round-robin per call.
    pub codecs: Vec<Codec>,
    /// RTP packetization time in milliseconds.
    pub ptime_ms: u32,
    /// Digits the caller sends mid-call (from 1 s of talk time on), e.g. `"1234#"`.
    pub dtmf: Option<String>,
    /// Send the digits as SIP INFO (`application/dtmf-relay`) instead of RFC 4733 events.
    pub sip_info_dtmf: bool,
    /// Every Nth call fails (0 = none), cycling Busy, NoAnswer, Rejected, NotFound.
    pub failure_every: u32,
    /// Answered calls go on hold for 1 s in the middle of the talk time.
    pub hold: bool,
    /// SIP transport.
    pub transport: SipTransport,
    /// 802.1Q VLAN id on every frame.
    pub vlan: Option<u16>,
    /// Use IPv6 (fd00::/8 unique local) addresses instead of IPv4.
    pub ipv6: bool,
    /// The first INVITE gets 407 and is re-sent with credentials.
    pub auth_challenge: bool,
    /// Answered calls get a 183 Session Progress with SDP before the 200.
    pub early_media: bool,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            calls: 10,
            concurrent: 5,
            seconds: 5.0,
            seed: 1,
            start: DEFAULT_START,
            codecs: vec![Codec::Pcmu],
            ptime_ms: 20,
            dtmf: None,
            sip_info_dtmf: false,
            failure_every: 0,
            hold: false,
            transport: SipTransport::Udp,
            vlan: None,
            ipv6: false,
            auth_challenge: false,
            early_media: false,
        }
    }
}

/// Why a [`SynthConfig`] cannot be generated.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `calls` is 0 or above [`MAX_CALLS`].
    #[error("calls must be in 1..={MAX_CALLS}, got {0}")]
    Calls(u32),
    /// `concurrent` is 0 or above [`MAX_CONCURRENT`].
    #[error("concurrent must be in 1..={MAX_CONCURRENT}, got {0}")]
    Concurrent(u32),
    /// `seconds` is negative, not finite or above [`MAX_SECONDS`].
    #[error("seconds must be a finite number in 0..={MAX_SECONDS}, got {0}")]
    Seconds(f64),
    /// `ptime_ms` is outside the supported range or not a multiple of 10 ms.
    #[error("ptime must be a multiple of 10 in {MIN_PTIME_MS}..={MAX_PTIME_MS} ms, got {0}")]
    Ptime(u32),
    /// The codec list is empty or too long.
    #[error("codec list must hold 1..={MAX_CODECS} codecs, got {0}")]
    Codecs(usize),
    /// The codec cannot be encoded in this build.
    #[error("codec {0:?} is not available in this build")]
    CodecUnavailable(Codec),
    /// Opus frames are 20 ms here; other ptimes are refused.
    #[error("opus needs ptime 20 ms, got {0}")]
    OpusPtime(u32),
    /// A DTMF digit is not one of `0-9 * # A-D`.
    #[error("invalid DTMF digit {0:?}")]
    DtmfDigit(char),
    /// Too many DTMF digits.
    #[error("at most {MAX_DTMF_DIGITS} DTMF digits, got {0}")]
    DtmfTooLong(usize),
    /// VLAN id outside 1..=4094.
    #[error("VLAN id must be in 1..=4094, got {0}")]
    Vlan(u16),
    /// The capture would start before 1970 or end after the pcap 32-bit seconds range.
    #[error("capture time range does not fit a classic pcap file")]
    TimeRange,
}

impl SynthConfig {
    /// Checks every field against the generator's limits.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.calls == 0 || self.calls > MAX_CALLS {
            return Err(ConfigError::Calls(self.calls));
        }
        if self.concurrent == 0 || self.concurrent > MAX_CONCURRENT {
            return Err(ConfigError::Concurrent(self.concurrent));
        }
        if !self.seconds.is_finite() || !(0.0..=MAX_SECONDS).contains(&self.seconds) {
            return Err(ConfigError::Seconds(self.seconds));
        }
        if !(MIN_PTIME_MS..=MAX_PTIME_MS).contains(&self.ptime_ms)
            || self.ptime_ms.checked_rem(10) != Some(0)
        {
            return Err(ConfigError::Ptime(self.ptime_ms));
        }
        if self.codecs.is_empty() || self.codecs.len() > MAX_CODECS {
            return Err(ConfigError::Codecs(self.codecs.len()));
        }
        for &codec in &self.codecs {
            if codec == Codec::Opus {
                if !cfg!(feature = "opus") {
                    return Err(ConfigError::CodecUnavailable(codec));
                }
                if self.ptime_ms != 20 {
                    return Err(ConfigError::OpusPtime(self.ptime_ms));
                }
            }
        }
        if let Some(digits) = &self.dtmf {
            let count = digits.chars().count();
            if count > MAX_DTMF_DIGITS {
                return Err(ConfigError::DtmfTooLong(count));
            }
            if let Some(bad) = digits.chars().find(|&c| dtmf_event(c).is_none()) {
                return Err(ConfigError::DtmfDigit(bad));
            }
        }
        if let Some(vlan) = self.vlan {
            if vlan == 0 || vlan > 4094 {
                return Err(ConfigError::Vlan(vlan));
            }
        }
        if self.start.0 < 0 {
            return Err(ConfigError::TimeRange);
        }
        Ok(())
    }
}

/// RFC 4733 event code of a DTMF digit (`0-9`, `*` = 10, `#` = 11, `A-D` = 12..=15).
pub fn dtmf_event(digit: char) -> Option<u8> {
    match digit {
        '0'..='9' => u8::try_from(u32::from(digit) - u32::from('0')).ok(),
        '*' => Some(10),
        '#' => Some(11),
        'A'..='D' => u8::try_from(u32::from(digit) - u32::from('A') + 12).ok(),
        'a'..='d' => u8::try_from(u32::from(digit) - u32::from('a') + 12).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        assert_eq!(SynthConfig::default().validate(), Ok(()));
        assert_eq!(DEFAULT_START.secs(), 1_767_225_600);
    }

    #[test]
    fn rejects_out_of_range_fields() {
        let base = SynthConfig::default();
        let cases = [
            SynthConfig {
                calls: 0,
                ..base.clone()
            },
            SynthConfig {
                calls: MAX_CALLS + 1,
                ..base.clone()
            },
            SynthConfig {
                concurrent: 0,
                ..base.clone()
            },
            SynthConfig {
                seconds: f64::NAN,
                ..base.clone()
            },
            SynthConfig {
                seconds: -1.0,
                ..base.clone()
            },
            SynthConfig {
                seconds: 1e12,
                ..base.clone()
            },
            SynthConfig {
                ptime_ms: 25,
                ..base.clone()
            },
            SynthConfig {
                ptime_ms: 0,
                ..base.clone()
            },
            SynthConfig {
                codecs: vec![],
                ..base.clone()
            },
            SynthConfig {
                dtmf: Some("12x".into()),
                ..base.clone()
            },
            SynthConfig {
                dtmf: Some("1".repeat(MAX_DTMF_DIGITS + 1)),
                ..base.clone()
            },
            SynthConfig {
                vlan: Some(4095),
                ..base.clone()
            },
            SynthConfig {
                start: Timestamp(-1),
                ..base.clone()
            },
        ];
        for cfg in cases {
            assert!(cfg.validate().is_err(), "{cfg:?} should be rejected");
        }
    }

    #[test]
    fn opus_needs_feature_and_20ms() {
        let cfg = SynthConfig {
            codecs: vec![Codec::Opus],
            ..Default::default()
        };
        assert_eq!(cfg.validate().is_ok(), cfg!(feature = "opus"));
        let cfg = SynthConfig {
            codecs: vec![Codec::Opus],
            ptime_ms: 30,
            ..Default::default()
        };
        assert!(cfg.validate().is_err());
    }

    #[test]
    fn dtmf_event_codes() {
        assert_eq!(dtmf_event('0'), Some(0));
        assert_eq!(dtmf_event('9'), Some(9));
        assert_eq!(dtmf_event('*'), Some(10));
        assert_eq!(dtmf_event('#'), Some(11));
        assert_eq!(dtmf_event('A'), Some(12));
        assert_eq!(dtmf_event('d'), Some(15));
        assert_eq!(dtmf_event('e'), None);
    }
}
