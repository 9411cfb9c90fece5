//! RFC 4733 telephone-event payloads and a per-stream digit edge detector.
//!
//! Owns: decoding the 4-byte event payload and turning the redundant packet train of an
//! event (many updates sharing one RTP timestamp, usually three end packets) into one
//! key-down and one key-up edge per digit.

use vcontap_wire::bytes::array_at;

/// A decoded RFC 4733 §2.3 event payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DtmfEvent {
    /// Event code (0-15 are DTMF digits).
    pub event: u8,
    /// End bit: the event is over.
    pub end: bool,
    /// Volume in -dBm0 (0..=63).
    pub volume: u8,
    /// Duration so far, in RTP timestamp units.
    pub duration: u16,
}

/// Parses a telephone-event payload; `None` when shorter than 4 bytes. Extra bytes
/// (redundant blocks appended by some senders) are ignored.
pub fn parse_dtmf_event(payload: &[u8]) -> Option<DtmfEvent> {
    let [event, flags, d0, d1] = array_at(payload, 0)?;
    Some(DtmfEvent {
        event,
        end: flags & 0x80 != 0,
        volume: flags & 0x3f,
        duration: u16::from_be_bytes([d0, d1]),
    })
}

/// The character for a DTMF event code: 0-9, 10 `*`, 11 `#`, 12-15 `A`-`D`.
pub fn event_char(event: u8) -> Option<char> {
    match event {
        0..=9 => Some(char::from(b'0' + event)),
        10 => Some('*'),
        11 => Some('#'),
        12..=15 => Some(char::from(b'A' + event - 12)),
        _ => None,
    }
}

/// A key edge produced by [`DtmfDetector`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtmfEdge {
    /// A digit started.
    Down(char),
    /// A digit ended after `duration` RTP timestamp units.
    Up {
        /// The digit.
        digit: char,
        /// Duration from the end packet, or the last update seen if the end was lost.
        duration: u32,
    },
}

#[derive(Debug, Clone, Copy)]
struct Current {
    ts: u32,
    event: u8,
    ended: bool,
    duration: u16,
}

/// Turns a stream's telephone-event packets into digit edges. One per RTP stream.
#[derive(Debug, Clone, Default)]
pub struct DtmfDetector {
    current: Option<Current>,
    /// The event before `current`, so a straggling retransmission of it (arriving after
    /// the next event began) is recognised and ignored rather than seen as a new press.
    previous: Option<(u32, u8)>,
}

impl DtmfDetector {
    /// A detector with no event in progress.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one event packet with its RTP timestamp; appends resulting edges to `out`.
    /// Event codes outside 0-15 are tracked (so their retransmissions are ignored) but
    /// produce no edges.
    pub fn push(&mut self, rtp_ts: u32, ev: &DtmfEvent, out: &mut Vec<DtmfEdge>) {
        if let Some(cur) = self.current.as_mut() {
            if cur.ts == rtp_ts && cur.event == ev.event {
                cur.duration = cur.duration.max(ev.duration);
                if ev.end && !cur.ended {
                    cur.ended = true;
                    if let Some(digit) = event_char(cur.event) {
                        out.push(DtmfEdge::Up {
                            digit,
                            duration: u32::from(ev.duration),
                        });
                    }
                }
                return;
            }
        }
        if self.previous == Some((rtp_ts, ev.event)) {
            return;
        }
        if let Some(prev) = self.current.take() {
            if !prev.ended {
                if let Some(digit) = event_char(prev.event) {
                    out.push(DtmfEdge::Up {
                        digit,
                        duration: u32::from(prev.duration),
                    });
                }
            }
            self.previous = Some((prev.ts, prev.event));
        }
        if let Some(digit) = event_char(ev.event) {
            out.push(DtmfEdge::Down(digit));
            if ev.end {
                out.push(DtmfEdge::Up {
                    digit,
                    duration: u32::from(ev.duration),
                });
            }
        }
        self.current = Some(Current {
            ts: rtp_ts,
            event: ev.event,
            ended: ev.end,
            duration: ev.duration,
        });
    }

    /// Closes a digit still held down (stream ended without its end packet).
    pub fn flush(&mut self, out: &mut Vec<DtmfEdge>) {
        if let Some(cur) = self.current.as_mut() {
            if !cur.ended {
                cur.ended = true;
                if let Some(digit) = event_char(cur.event) {
                    out.push(DtmfEdge::Up {
                        digit,
                        duration: u32::from(cur.duration),
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(event: u8, end: bool, duration: u16) -> DtmfEvent {
        DtmfEvent {
            event,
            end,
            volume: 10,
            duration,
        }
    }

    #[test]
    fn parse() {
        assert_eq!(
            parse_dtmf_event(&[5, 0x8a, 0x03, 0x20]),
            Some(ev(5, true, 800))
        );
        assert_eq!(
            parse_dtmf_event(&[11, 0x0a, 0, 160, 99]),
            Some(ev(11, false, 160))
        );
        assert_eq!(parse_dtmf_event(&[1, 2, 3]), None);
        assert_eq!(parse_dtmf_event(&[]), None);
        assert_eq!(parse_dtmf_event(&[0, 0x7f, 0, 0]).unwrap().volume, 63);
    }

    #[test]
    fn chars() {
        let s: String = (0..16).filter_map(event_char).collect();
        assert_eq!(s, "0123456789*#ABCD");
        assert_eq!(event_char(16), None);
        assert_eq!(event_char(255), None);
    }

    #[test]
    fn retransmitted_end_packets() {
        let mut d = DtmfDetector::new();
        let mut out = Vec::new();
        for dur in [160, 320, 480] {
            d.push(1000, &ev(1, false, dur), &mut out);
        }
        for _ in 0..3 {
            d.push(1000, &ev(1, true, 640), &mut out);
        }
        assert_eq!(
            out,
            vec![
                DtmfEdge::Down('1'),
                DtmfEdge::Up {
                    digit: '1',
                    duration: 640
                }
            ]
        );
        // A straggling retransmission after the next digit started is ignored.
        out.clear();
        d.push(3000, &ev(2, false, 160), &mut out);
        d.push(1000, &ev(1, true, 640), &mut out);
        assert_eq!(out, vec![DtmfEdge::Down('2')]);
    }

    #[test]
    fn missing_end() {
        let mut d = DtmfDetector::new();
        let mut out = Vec::new();
        d.push(1000, &ev(10, false, 160), &mut out);
        d.push(1000, &ev(10, false, 320), &mut out);
        d.push(2000, &ev(11, false, 160), &mut out);
        assert_eq!(
            out,
            vec![
                DtmfEdge::Down('*'),
                DtmfEdge::Up {
                    digit: '*',
                    duration: 320
                },
                DtmfEdge::Down('#')
            ]
        );
        out.clear();
        d.flush(&mut out);
        d.flush(&mut out);
        assert_eq!(
            out,
            vec![DtmfEdge::Up {
                digit: '#',
                duration: 160
            }]
        );
    }

    #[test]
    fn back_to_back_same_digit_and_single_packet() {
        let mut d = DtmfDetector::new();
        let mut out = Vec::new();
        d.push(1000, &ev(5, false, 160), &mut out);
        d.push(1000, &ev(5, true, 400), &mut out);
        d.push(1800, &ev(5, false, 160), &mut out);
        d.push(1800, &ev(5, true, 400), &mut out);
        d.push(1800, &ev(5, true, 400), &mut out);
        // One packet that is both first and end.
        d.push(2600, &ev(12, true, 400), &mut out);
        assert_eq!(
            out,
            vec![
                DtmfEdge::Down('5'),
                DtmfEdge::Up {
                    digit: '5',
                    duration: 400
                },
                DtmfEdge::Down('5'),
                DtmfEdge::Up {
                    digit: '5',
                    duration: 400
                },
                DtmfEdge::Down('A'),
                DtmfEdge::Up {
                    digit: 'A',
                    duration: 400
                }
            ]
        );
    }

    #[test]
    fn same_timestamp_new_event_code() {
        let mut d = DtmfDetector::new();
        let mut out = Vec::new();
        d.push(500, &ev(3, false, 160), &mut out);
        d.push(500, &ev(4, false, 160), &mut out);
        assert_eq!(
            out,
            vec![
                DtmfEdge::Down('3'),
                DtmfEdge::Up {
                    digit: '3',
                    duration: 160
                },
                DtmfEdge::Down('4')
            ]
        );
        // Non-digit events produce nothing.
        out.clear();
        d.push(900, &ev(16, true, 10), &mut out);
        assert_eq!(
            out,
            vec![DtmfEdge::Up {
                digit: '4',
                duration: 160
            }]
        );
    }
}
