//! A client's prepared statements under transaction pooling.
//!
//! The client's statement names never reach PostgreSQL: each statement is
//! prepared on whichever backend connection runs it, under a name of
//! pgveil's own (see `backend::memory`), and identical statements of all
//! clients of a login role share it. A Bind or Describe of a statement the
//! connection lacks is preceded by a Parse pgveil sends itself.

use std::collections::HashMap;
use std::sync::Arc;

pub use crate::backend::memory::Body;
use crate::protocol::frame::HEADER_LEN;
use crate::protocol::messages::split_cstr;

/// The statements one client has prepared, by its names.
#[derive(Debug, Default)]
pub struct ClientStatements {
    named: HashMap<String, Arc<Body>>,
    unnamed: Option<Arc<Body>>,
}

impl ClientStatements {
    /// The client parsed `body` as statement `name` ("" = unnamed).
    pub fn define(&mut self, name: &str, body: Arc<Body>) {
        match name {
            "" => self.unnamed = Some(body),
            _ => {
                self.named.insert(name.to_owned(), body);
            }
        }
    }

    /// The client closed statement `name` (or its Parse was refused).
    pub fn close(&mut self, name: &str) {
        match name {
            "" => self.unnamed = None,
            _ => {
                self.named.remove(name);
            }
        }
    }

    /// The statement the client calls `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Body>> {
        match name {
            "" => self.unnamed.as_ref(),
            _ => self.named.get(name),
        }
    }
}

/// A Bind message split around its statement name.
pub struct BindParts<'a> {
    /// The portal name.
    pub portal: &'a [u8],
    /// The statement name.
    pub statement: &'a str,
    /// Everything after the statement name (formats, values, result formats).
    pub rest: &'a [u8],
}

/// Splits a whole Bind message; None if it is malformed (PostgreSQL will
/// say so when it gets it).
pub fn split_bind(frame: &[u8]) -> Option<BindParts<'_>> {
    let (portal, rest) = split_cstr(frame.get(HEADER_LEN..)?)?;
    let (statement, rest) = split_cstr(rest)?;
    Some(BindParts {
        portal,
        statement: std::str::from_utf8(statement).ok()?,
        rest,
    })
}

/// A Describe or Close message: its kind (`S` statement, `P` portal) and name.
pub fn split_target(frame: &[u8]) -> Option<(u8, &str)> {
    let (&kind, rest) = frame.get(HEADER_LEN..)?.split_first()?;
    let (name, _) = split_cstr(rest)?;
    Some((kind, std::str::from_utf8(name).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = bytes::BytesMut::new();
        crate::protocol::messages::encode_raw(tag, &[body], &mut out);
        out.to_vec()
    }

    #[test]
    fn bind_and_describe_are_split_around_names() {
        let bind = frame(b'B', b"p1\0S_1\0\0\0\0\0\0\0");
        let parts = split_bind(&bind).expect("well formed");
        assert_eq!((parts.portal, parts.statement), (&b"p1"[..], "S_1"));
        assert_eq!(parts.rest, b"\0\0\0\0\0\0");
        assert!(split_bind(&frame(b'B', b"p1")).is_none());
        assert_eq!(split_target(&frame(b'D', b"Sabc\0")), Some((b'S', "abc")));
        assert_eq!(split_target(&frame(b'C', b"P\0")), Some((b'P', "")));
    }

    #[test]
    fn unnamed_and_named_statements_are_kept_apart() {
        let mut s = ClientStatements::default();
        let body = Arc::new(Body {
            sql: "select 1".into(),
            types: vec![],
        });
        s.define("", body.clone());
        s.define("a", body.clone());
        s.close("");
        assert!(s.get("").is_none());
        assert_eq!(s.get("a"), Some(&body));
    }
}
