//! [`TcpFramer`]: cuts a TCP byte stream into HEP3 messages.
//!
//! HEP over TCP (and TLS) has no framing of its own: messages are concatenated, and a reader
//! takes the 6-byte header, checks `HEP3`, then reads `length − 6` more. A stream that breaks
//! this cannot be resynchronised safely (a payload may contain `HEP3`), so on a bad header
//! the framer fails for good and the listener closes the connection, as heplify-server does.

use crate::{HepError, HEP3_HEADER, HEP3_MAGIC, MAX_MESSAGE};
use vcontap_wire::bytes::{array_at, be16};

/// Most bytes a [`TcpFramer`] holds: one incomplete maximal message plus one read of up to
/// 64 KiB. A caller that drains [`TcpFramer::next_message`] after each push never reaches it.
pub const MAX_BUFFERED: usize = MAX_MESSAGE + 64 * 1024;

/// Splits a HEP3 byte stream into messages; sans-IO (the caller reads the socket).
#[derive(Debug, Default)]
pub struct TcpFramer {
    buf: Vec<u8>,
    /// Start of the first unconsumed byte in `buf`.
    start: usize,
    /// The stream broke framing: every later call returns this.
    failed: Option<HepError>,
}

impl TcpFramer {
    /// An empty framer.
    pub fn new() -> Self {
        TcpFramer::default()
    }

    /// Bytes buffered and not yet returned as messages.
    pub fn buffered(&self) -> usize {
        self.buf.len().saturating_sub(self.start)
    }

    /// Appends bytes read from the stream. Fails with [`HepError::BufferFull`] when the
    /// buffer would exceed [`MAX_BUFFERED`] (nothing is appended then).
    pub fn push(&mut self, data: &[u8]) -> Result<(), HepError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        if self.start > 0 {
            // Consumed messages leave the buffer here, at most once per push: the bytes moved
            // are below one message, so the cost stays linear in the stream.
            self.buf.drain(..self.start);
            self.start = 0;
        }
        if self.buf.len().saturating_add(data.len()) > MAX_BUFFERED {
            self.failed = Some(HepError::BufferFull);
            return Err(HepError::BufferFull);
        }
        self.buf.extend_from_slice(data);
        Ok(())
    }

    /// The next complete message, `None` when more bytes are needed. A header that is not
    /// `HEP3` ([`HepError::UnknownVersion`]) or a length below 6 ([`HepError::BadLength`])
    /// fails the stream: close the connection.
    pub fn next_message(&mut self) -> Result<Option<&[u8]>, HepError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        let pending = self.buf.get(self.start..).unwrap_or(&[]);
        // Check the magic as soon as its bytes are there: garbage fails early.
        let seen = pending.len().min(4);
        if pending.get(..seen) != HEP3_MAGIC.get(..seen) {
            self.failed = Some(HepError::UnknownVersion);
            return Err(HepError::UnknownVersion);
        }
        if array_at::<4>(pending, 0).is_none() {
            return Ok(None);
        }
        let Some(len) = be16(pending, 4) else {
            return Ok(None);
        };
        let len = usize::from(len);
        if len < HEP3_HEADER {
            self.failed = Some(HepError::BadLength);
            return Err(HepError::BadLength);
        }
        if pending.len() < len {
            return Ok(None);
        }
        let from = self.start;
        self.start += len;
        Ok(self.buf.get(from..from + len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{decode, encode_v3, HepMessage};
    use std::borrow::Cow;

    fn msg(n: usize) -> Vec<u8> {
        let m = HepMessage {
            payload: Some(Cow::Owned(vec![b'a' + (n % 26) as u8; n])),
            ..HepMessage::default()
        };
        let mut out = Vec::new();
        encode_v3(&m, &mut out).unwrap();
        out
    }

    #[test]
    fn splits_any_chunking() {
        let sizes = [1, 100, 0, 65000, 3, 1400];
        let stream: Vec<u8> = sizes.iter().flat_map(|&n| msg(n)).collect();
        for step in [1, 5, 6, 7, 1000, 65536] {
            let mut f = TcpFramer::new();
            let mut got = Vec::new();
            for piece in stream.chunks(step) {
                f.push(piece).unwrap();
                while let Some(m) = f.next_message().unwrap() {
                    got.push(decode(m).unwrap().payload_bytes().len());
                }
            }
            assert_eq!(got, sizes, "step {step}");
            assert_eq!(f.buffered(), 0);
        }
    }

    #[test]
    fn bad_headers_fail_the_stream() {
        let mut f = TcpFramer::new();
        f.push(b"HEP2").unwrap();
        assert_eq!(f.next_message(), Err(HepError::UnknownVersion));
        assert_eq!(f.push(&msg(3)), Err(HepError::UnknownVersion));
        // Garbage is refused from its first byte.
        let mut f = TcpFramer::new();
        f.push(b"G").unwrap();
        assert_eq!(f.next_message(), Err(HepError::UnknownVersion));
        let mut f = TcpFramer::new();
        f.push(b"HEP3\x00\x05").unwrap();
        assert_eq!(f.next_message(), Err(HepError::BadLength));
        // A valid message then garbage: the message comes out, then the error.
        let mut f = TcpFramer::new();
        let mut s = msg(10);
        s.extend_from_slice(b"GET / HTTP/1.1\r\n");
        f.push(&s).unwrap();
        assert!(f.next_message().unwrap().is_some());
        assert_eq!(f.next_message(), Err(HepError::UnknownVersion));
    }

    #[test]
    fn buffer_is_bounded() {
        let mut f = TcpFramer::new();
        // A header claiming 65535 bytes, then never drained pushes.
        f.push(b"HEP3\xff\xff").unwrap();
        assert_eq!(f.next_message(), Ok(None));
        let chunk = vec![0u8; 60_000];
        f.push(&chunk).unwrap();
        f.push(&chunk).unwrap();
        assert_eq!(f.push(&chunk), Err(HepError::BufferFull));
        assert!(f.buffered() <= MAX_BUFFERED);
    }
}
