//! Framing of protocol messages (tag byte + big-endian length) without
//! decoding them: the pumps forward most messages as raw bytes and only ask
//! for whole frames of the few tags they inspect.

use super::ProtocolError;

/// What the scanner found at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// A message passed through unchanged starts the buffer: forward its
    /// first `n` bytes (the rest follow as [`Step::Pass`]).
    Begin {
        /// The message type byte.
        tag: u8,
        /// Bytes of it in the buffer, at most its length.
        n: usize,
    },
    /// Forward this many more bytes of the message being passed.
    Pass(usize),
    /// A whole inspected message of `len` bytes (tag included) starts the buffer.
    Whole {
        /// The message type byte.
        tag: u8,
        /// Length in bytes, tag byte included.
        len: usize,
    },
    /// More bytes are needed; `at_least` is the buffer size that would help.
    NeedMore {
        /// Bytes the buffer should hold before scanning again.
        at_least: usize,
    },
}

/// Splits a byte stream into messages, passing uninspected ones through in
/// pieces so that a large row or COPY chunk is never buffered whole.
#[derive(Debug)]
pub struct Scanner {
    passthrough_left: usize,
    max_len: usize,
}

/// Size of a message header: tag byte plus 4-byte length.
pub const HEADER_LEN: usize = 5;

impl Scanner {
    /// A scanner refusing messages longer than `max_len` bytes.
    pub fn new(max_len: usize) -> Self {
        Scanner {
            passthrough_left: 0,
            max_len,
        }
    }

    /// True when the scanner is between messages.
    pub fn at_boundary(&self) -> bool {
        self.passthrough_left == 0
    }

    /// Looks at the start of `buf`; `inspect(tag)` says whether a message of
    /// that type must be delivered whole.
    pub fn step(
        &mut self,
        buf: &[u8],
        inspect: impl Fn(u8) -> bool,
    ) -> Result<Step, ProtocolError> {
        if self.passthrough_left > 0 {
            if buf.is_empty() {
                return Ok(Step::NeedMore { at_least: 1 });
            }
            let n = self.passthrough_left.min(buf.len());
            self.passthrough_left -= n;
            return Ok(Step::Pass(n));
        }
        if buf.len() < HEADER_LEN {
            return Ok(Step::NeedMore {
                at_least: HEADER_LEN,
            });
        }
        let tag = buf[0];
        let len = message_len(tag, &buf[1..HEADER_LEN], self.max_len)?;
        if inspect(tag) {
            return Ok(if buf.len() >= len {
                Step::Whole { tag, len }
            } else {
                Step::NeedMore { at_least: len }
            });
        }
        let n = len.min(buf.len());
        self.passthrough_left = len - n;
        Ok(Step::Begin { tag, n })
    }
}

/// Total message length (tag included) from the 4 length bytes, checked.
fn message_len(tag: u8, len_bytes: &[u8], max_len: usize) -> Result<usize, ProtocolError> {
    let declared = i32::from_be_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]);
    if declared < 4 {
        return Err(ProtocolError::BadLength {
            tag,
            length: i64::from(declared),
        });
    }
    let len = declared as usize + 1;
    if len > max_len {
        return Err(ProtocolError::TooLong { tag, len, max_len });
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn inspected_messages_come_whole() {
        let m = msg(b'Q', b"select 1\0");
        let mut s = Scanner::new(1 << 20);
        assert_eq!(
            s.step(&m[..7], |t| t == b'Q').unwrap(),
            Step::NeedMore { at_least: m.len() }
        );
        assert_eq!(
            s.step(&m, |t| t == b'Q').unwrap(),
            Step::Whole {
                tag: b'Q',
                len: m.len()
            }
        );
    }

    #[test]
    fn other_messages_pass_in_pieces() {
        let m = msg(b'd', &[7u8; 100]);
        let mut s = Scanner::new(1 << 20);
        assert_eq!(
            s.step(&m[..40], |_| false).unwrap(),
            Step::Begin { tag: b'd', n: 40 }
        );
        assert!(!s.at_boundary());
        assert_eq!(
            s.step(&m[40..], |_| false).unwrap(),
            Step::Pass(m.len() - 40)
        );
        assert!(s.at_boundary());
    }

    #[test]
    fn bad_and_huge_lengths_are_errors() {
        let mut s = Scanner::new(1000);
        let bad = [b'Q', 0, 0, 0, 3];
        assert!(matches!(
            s.step(&bad, |_| true),
            Err(ProtocolError::BadLength { .. })
        ));
        let negative = [b'Q', 0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            s.step(&negative, |_| true),
            Err(ProtocolError::BadLength { .. })
        ));
        let huge = msg(b'd', &[0u8; 2000]);
        assert!(matches!(
            s.step(&huge, |_| false),
            Err(ProtocolError::TooLong { .. })
        ));
    }
}
