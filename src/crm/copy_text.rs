//! Rows in PostgreSQL's COPY text format: fields separated by tabs, rows
//! ended by newlines, `\N` for NULL, and backslash escapes for backslash,
//! tab, newline and carriage return inside values.

use std::fmt::Write as _;

use bytes::{BufMut, BytesMut};

use super::calendar::{Date, Timestamp};

/// A value that can be written as one COPY text field.
pub(crate) trait CopyField {
    /// Appends the encoded field (without separators) to `buf`.
    fn encode(&self, buf: &mut BytesMut);
}

impl CopyField for str {
    fn encode(&self, buf: &mut BytesMut) {
        let needs_escape = |b: &u8| matches!(b, b'\\' | b'\t' | b'\n' | b'\r');
        if !self.as_bytes().iter().any(needs_escape) {
            buf.put_slice(self.as_bytes());
            return;
        }
        for &b in self.as_bytes() {
            match b {
                b'\\' => buf.put_slice(b"\\\\"),
                b'\t' => buf.put_slice(b"\\t"),
                b'\n' => buf.put_slice(b"\\n"),
                b'\r' => buf.put_slice(b"\\r"),
                _ => buf.put_u8(b),
            }
        }
    }
}

impl CopyField for String {
    fn encode(&self, buf: &mut BytesMut) {
        self.as_str().encode(buf);
    }
}

impl<T: CopyField + ?Sized> CopyField for &T {
    fn encode(&self, buf: &mut BytesMut) {
        (**self).encode(buf);
    }
}

impl<T: CopyField> CopyField for Option<T> {
    fn encode(&self, buf: &mut BytesMut) {
        match self {
            Some(value) => value.encode(buf),
            None => buf.put_slice(b"\\N"),
        }
    }
}

impl CopyField for bool {
    fn encode(&self, buf: &mut BytesMut) {
        buf.put_u8(if *self { b't' } else { b'f' });
    }
}

/// Writes a value whose `Display` form never needs escaping.
macro_rules! plain_display_field {
    ($($ty:ty),*) => {$(
        impl CopyField for $ty {
            fn encode(&self, buf: &mut BytesMut) {
                // Writing to a BytesMut cannot fail.
                let _ = write!(buf, "{self}");
            }
        }
    )*};
}
plain_display_field!(u32, u64, Date, Timestamp);

/// An amount of money in cents, written as `numeric` with two decimals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cents(pub(crate) u64);

impl CopyField for Cents {
    fn encode(&self, buf: &mut BytesMut) {
        let _ = write!(buf, "{}.{:02}", self.0 / 100, self.0 % 100);
    }
}

/// A buffer of whole rows in COPY text format.
#[derive(Debug, Default)]
pub(crate) struct RowBuf {
    buf: BytesMut,
    at_row_start: bool,
}

impl RowBuf {
    /// An empty buffer with room for `capacity` bytes.
    pub(crate) fn with_capacity(capacity: usize) -> RowBuf {
        RowBuf {
            buf: BytesMut::with_capacity(capacity),
            at_row_start: true,
        }
    }

    /// Appends one field to the current row.
    pub(crate) fn field(&mut self, value: impl CopyField) -> &mut Self {
        if !self.at_row_start {
            self.buf.put_u8(b'\t');
        }
        self.at_row_start = false;
        value.encode(&mut self.buf);
        self
    }

    /// Ends the current row.
    pub(crate) fn end_row(&mut self) {
        self.buf.put_u8(b'\n');
        self.at_row_start = true;
    }

    /// Bytes buffered so far.
    pub(crate) fn len(&self) -> usize {
        self.buf.len()
    }

    /// Takes the buffered rows, leaving the buffer empty.
    pub(crate) fn take(&mut self) -> bytes::Bytes {
        self.buf.split().freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(build: impl FnOnce(&mut RowBuf)) -> String {
        let mut rows = RowBuf::with_capacity(64);
        build(&mut rows);
        rows.end_row();
        String::from_utf8(rows.take().to_vec()).unwrap()
    }

    #[test]
    fn escapes_special_characters_and_nulls() {
        let line = row(|r| {
            r.field("a\tb\\c\nd\re")
                .field(None::<&str>)
                .field(Some("Žirmūnų g. 12"))
                .field(true)
                .field(Cents(1_234_505))
                .field(7u32);
        });
        assert_eq!(
            line,
            "a\\tb\\\\c\\nd\\re\t\\N\tŽirmūnų g. 12\tt\t12345.05\t7\n"
        );
    }

    #[test]
    fn take_empties_the_buffer_between_rows() {
        let mut rows = RowBuf::with_capacity(8);
        rows.field("x");
        rows.end_row();
        assert_eq!(&rows.take()[..], b"x\n");
        assert_eq!(rows.len(), 0);
        rows.field("y").field("z");
        rows.end_row();
        assert_eq!(&rows.take()[..], b"y\tz\n");
    }
}
