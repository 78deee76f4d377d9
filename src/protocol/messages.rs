//! Building the messages pgveil itself sends (authentication, errors,
//! session start) and decoding the only two client messages it reads:
//! Query and Parse. Everything else travels as raw bytes.

use bytes::{BufMut, BytesMut};
use pgwire::error::ErrorInfo;
use pgwire::messages::extendedquery::Parse;
use pgwire::messages::response::{ErrorResponse, ReadyForQuery, TransactionStatus};
use pgwire::messages::simplequery::Query;
use pgwire::messages::startup::{Authentication, BackendKeyData, ParameterStatus, SecretKey};
use pgwire::messages::{DecodeContext, Message, ProtocolVersion};

use super::ProtocolError;

/// Message type bytes the proxy cares about.
pub mod tag {
    /// Query (simple protocol).
    pub const QUERY: u8 = b'Q';
    /// Parse (extended protocol).
    pub const PARSE: u8 = b'P';
    /// Sync (extended protocol).
    pub const SYNC: u8 = b'S';
    /// FunctionCall (fast-path).
    pub const FUNCTION_CALL: u8 = b'F';
    /// Terminate.
    pub const TERMINATE: u8 = b'X';
    /// ReadyForQuery (backend).
    pub const READY_FOR_QUERY: u8 = b'Z';
    /// Bind (frontend).
    pub const BIND: u8 = b'B';
    /// Describe (frontend).
    pub const DESCRIBE: u8 = b'D';
    /// Close (frontend).
    pub const CLOSE: u8 = b'C';
    /// Execute (frontend).
    pub const EXECUTE: u8 = b'E';
    /// Flush (frontend).
    pub const FLUSH: u8 = b'H';
    /// CopyData (both directions).
    pub const COPY_DATA: u8 = b'd';
    /// CopyDone (both directions).
    pub const COPY_DONE: u8 = b'c';
    /// CopyFail (frontend).
    pub const COPY_FAIL: u8 = b'f';
    /// ErrorResponse (backend).
    pub const ERROR_RESPONSE: u8 = b'E';
    /// ParameterStatus (backend).
    pub const PARAMETER_STATUS: u8 = b'S';
    /// CommandComplete (backend).
    pub const COMMAND_COMPLETE: u8 = b'C';
    /// CopyInResponse (backend).
    pub const COPY_IN_RESPONSE: u8 = b'G';
    /// CopyOutResponse (backend).
    pub const COPY_OUT_RESPONSE: u8 = b'H';
    /// CopyBothResponse (backend).
    pub const COPY_BOTH_RESPONSE: u8 = b'W';
}

/// Severity of an error pgveil reports itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The statement failed; the session goes on.
    Error,
    /// The session ends.
    Fatal,
}

/// An error pgveil reports to a client, with its SQLSTATE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgError {
    /// ERROR or FATAL.
    pub severity: Severity,
    /// Five-character SQLSTATE.
    pub code: String,
    /// Primary message.
    pub message: String,
    /// Optional detail.
    pub detail: Option<String>,
    /// What to do about it.
    pub hint: Option<String>,
}

impl PgError {
    /// An ERROR with the given SQLSTATE and message.
    pub fn error(code: &str, message: impl Into<String>) -> Self {
        PgError {
            severity: Severity::Error,
            code: code.to_owned(),
            message: message.into(),
            detail: None,
            hint: None,
        }
    }

    /// A FATAL error with the given SQLSTATE and message.
    pub fn fatal(code: &str, message: impl Into<String>) -> Self {
        PgError {
            severity: Severity::Fatal,
            ..PgError::error(code, message)
        }
    }

    /// Adds a hint.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Adds a detail line.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Appends the ErrorResponse message to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        let severity = match self.severity {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
        };
        let mut info = ErrorInfo::new(severity.to_owned(), self.code.clone(), self.message.clone());
        info.severity_nonlocalized = Some(severity.to_owned());
        info.detail.clone_from(&self.detail);
        info.hint.clone_from(&self.hint);
        encode_infallible(&ErrorResponse::from(info), out);
    }
}

/// pgwire's encoders only fail on values out of the protocol's range, which
/// the proxy never builds; such a failure would be a bug, so it is logged.
fn encode_infallible<M: Message>(message: &M, out: &mut BytesMut) {
    if let Err(e) = message.encode(out) {
        tracing::error!(error = %e, "failed to encode a protocol message");
    }
}

/// Appends AuthenticationSASL offering SCRAM-SHA-256.
pub fn auth_sasl(out: &mut BytesMut) {
    encode_infallible(&Authentication::SASL(vec!["SCRAM-SHA-256".to_owned()]), out);
}

/// Appends AuthenticationSASLContinue.
pub fn auth_sasl_continue(data: &[u8], out: &mut BytesMut) {
    encode_infallible(&Authentication::SASLContinue(data.to_vec().into()), out);
}

/// Appends AuthenticationSASLFinal.
pub fn auth_sasl_final(data: &[u8], out: &mut BytesMut) {
    encode_infallible(&Authentication::SASLFinal(data.to_vec().into()), out);
}

/// Appends AuthenticationOk.
pub fn auth_ok(out: &mut BytesMut) {
    encode_infallible(&Authentication::Ok, out);
}

/// Appends ParameterStatus.
pub fn parameter_status(name: &str, value: &str, out: &mut BytesMut) {
    encode_infallible(
        &ParameterStatus::new(name.to_owned(), value.to_owned()),
        out,
    );
}

/// Appends BackendKeyData with the proxy's own cancel key.
pub fn backend_key_data(pid: i32, secret: i32, out: &mut BytesMut) {
    encode_infallible(&BackendKeyData::new(pid, SecretKey::I32(secret)), out);
}

/// Appends ReadyForQuery in the idle state.
pub fn ready_for_query_idle(out: &mut BytesMut) {
    encode_infallible(&ReadyForQuery::new(TransactionStatus::Idle), out);
}

/// Appends a Bind of statement `statement` to the unnamed portal, with
/// `values` as text parameters (at most 32,767) and text results.
pub fn encode_bind_text(statement: &str, values: &[String], out: &mut BytesMut) {
    let values = &values[..values.len().min(i16::MAX as usize)];
    let len =
        4 + 1 + statement.len() + 1 + 2 + 2 + 2 + values.iter().map(|v| 4 + v.len()).sum::<usize>();
    out.reserve(len + 1);
    out.put_u8(tag::BIND);
    out.put_i32(i32::try_from(len).unwrap_or(i32::MAX));
    out.put_u8(0);
    out.put_slice(statement.as_bytes());
    out.put_u8(0);
    out.put_i16(0);
    out.put_i16(values.len() as i16);
    for value in values {
        out.put_i32(i32::try_from(value.len()).unwrap_or(i32::MAX));
        out.put_slice(value.as_bytes());
    }
    out.put_i16(0);
}

/// Appends a message built from the pieces of its body; the proxy uses it
/// to rename statements in Bind, Describe and Close messages.
pub fn encode_raw(tag: u8, body: &[&[u8]], out: &mut BytesMut) {
    let len: usize = body.iter().map(|part| part.len()).sum();
    out.reserve(len + 5);
    out.put_u8(tag);
    out.put_i32((len + 4) as i32);
    for part in body {
        out.put_slice(part);
    }
}

/// Appends ParseComplete.
pub fn parse_complete(out: &mut BytesMut) {
    encode_raw(b'1', &[], out);
}

/// Appends CloseComplete.
pub fn close_complete(out: &mut BytesMut) {
    encode_raw(b'3', &[], out);
}

/// Appends ReadyForQuery with a transaction status byte (`I`, `T` or `E`).
pub fn ready_for_query(status: u8, out: &mut BytesMut) {
    encode_raw(b'Z', &[&[status]], out);
}

/// Appends NegotiateProtocolVersion: the newest minor version pgveil speaks
/// (3.0) and the protocol options it did not recognise.
pub fn negotiate_protocol_version(unrecognized: &[String], out: &mut BytesMut) {
    out.put_u8(b'v');
    let len = 4 + 4 + 4 + unrecognized.iter().map(|o| o.len() + 1).sum::<usize>();
    out.put_i32(len as i32);
    out.put_i32(0);
    out.put_i32(unrecognized.len() as i32);
    for option in unrecognized {
        out.put_slice(option.as_bytes());
        out.put_u8(0);
    }
}

/// Splits a NUL-terminated string off the front of `bytes`.
pub fn split_cstr(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let nul = bytes.iter().position(|&b| b == 0)?;
    Some((&bytes[..nul], &bytes[nul + 1..]))
}

fn decode_context() -> DecodeContext {
    let mut ctx = DecodeContext::new(ProtocolVersion::PROTOCOL3_0);
    ctx.awaiting_frontend_ssl = false;
    ctx.awaiting_frontend_startup = false;
    ctx
}

/// Checks that a message body holds exactly one NUL-terminated UTF-8 string.
fn check_query_body(body: &[u8]) -> Result<(), ProtocolError> {
    match split_cstr(body) {
        Some((text, [])) => check_utf8(text),
        _ => Err(ProtocolError::Malformed("Query")),
    }
}

/// Checks a Parse body: name, query, parameter type count and OIDs.
fn check_parse_body(body: &[u8]) -> Result<(), ProtocolError> {
    let malformed = ProtocolError::Malformed("Parse");
    let (name, rest) = split_cstr(body).ok_or(malformed.clone())?;
    check_utf8(name)?;
    let (query, rest) = split_cstr(rest).ok_or(malformed.clone())?;
    check_utf8(query)?;
    let (count, oids) = rest.split_at_checked(2).ok_or(malformed.clone())?;
    let count = usize::from(u16::from_be_bytes([count[0], count[1]]));
    if oids.len() != count * 4 {
        return Err(malformed);
    }
    Ok(())
}

fn check_utf8(text: &[u8]) -> Result<(), ProtocolError> {
    std::str::from_utf8(text)
        .map(|_| ())
        .map_err(|_| ProtocolError::InvalidUtf8)
}

/// Decodes a whole Query message (tag included) after checking its shape,
/// so that malformed input is an error, never a panic or a lossy string.
pub fn decode_query(frame: &[u8]) -> Result<Query, ProtocolError> {
    check_query_body(&frame[super::frame::HEADER_LEN..])?;
    let mut buf = BytesMut::from(frame);
    Query::decode(&mut buf, &decode_context())
        .map_err(|_| ProtocolError::Malformed("Query"))?
        .ok_or(ProtocolError::Malformed("Query"))
}

/// Decodes a whole Parse message (tag included) after checking its shape.
pub fn decode_parse(frame: &[u8]) -> Result<Parse, ProtocolError> {
    check_parse_body(&frame[super::frame::HEADER_LEN..])?;
    let mut buf = BytesMut::from(frame);
    Parse::decode(&mut buf, &decode_context())
        .map_err(|_| ProtocolError::Malformed("Parse"))?
        .ok_or(ProtocolError::Malformed("Parse"))
}

/// Appends a Query message with this text.
pub fn encode_query(sql: &str, out: &mut BytesMut) {
    encode_infallible(&Query::new(sql.to_owned()), out);
}

/// Appends a Parse message with this statement name, text and parameter types.
pub fn encode_parse(name: Option<String>, sql: &str, type_oids: Vec<u32>, out: &mut BytesMut) {
    encode_infallible(&Parse::new(name, sql.to_owned(), type_oids), out);
}

/// The SQLSTATE (`C` field) of a raw ErrorResponse or NoticeResponse frame.
pub fn error_code(frame: &[u8]) -> Option<&[u8]> {
    error_field(frame, b'C')
}

/// A field of a raw ErrorResponse or NoticeResponse frame (tag included).
pub fn error_field(frame: &[u8], field: u8) -> Option<&[u8]> {
    let mut rest = frame.get(super::frame::HEADER_LEN..)?;
    while let Some((&code, tail)) = rest.split_first() {
        if code == 0 {
            return None;
        }
        let (value, next) = split_cstr(tail)?;
        if code == field {
            return Some(value);
        }
        rest = next;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn query_round_trips() {
        let mut out = BytesMut::new();
        encode_query("select 'é'", &mut out);
        assert_eq!(decode_query(&out).unwrap().query, "select 'é'");
    }

    #[test]
    fn parse_round_trips() {
        let mut out = BytesMut::new();
        encode_parse(Some("s1".into()), "select $1", vec![23], &mut out);
        let p = decode_parse(&out).unwrap();
        assert_eq!(
            (p.name.as_deref(), p.query.as_str(), p.type_oids),
            (Some("s1"), "select $1", vec![23])
        );
    }

    #[test]
    fn malformed_messages_are_errors_not_panics() {
        assert!(decode_query(&frame(b'Q', b"select 1")).is_err());
        assert!(decode_query(&frame(b'Q', b"a\0b\0")).is_err());
        assert!(matches!(
            decode_query(&frame(b'Q', b"select '\xff'\0")),
            Err(ProtocolError::InvalidUtf8)
        ));
        assert!(decode_parse(&frame(b'P', b"\0select 1\0")).is_err());
        assert!(decode_parse(&frame(b'P', b"\0select 1\0\0\x01")).is_err());
        assert!(decode_parse(&frame(b'P', b"\0select 1\0\0\x01\0\0\0\x17")).is_ok());
    }

    #[test]
    fn error_fields_are_read_from_raw_frames() {
        let mut out = BytesMut::new();
        PgError::error("42501", "no")
            .with_hint("ask")
            .encode(&mut out);
        assert_eq!(error_code(&out), Some(&b"42501"[..]));
        assert_eq!(error_field(&out, b'V'), Some(&b"ERROR"[..]));
        assert_eq!(error_field(&out, b'H'), Some(&b"ask"[..]));
        assert_eq!(error_field(&out, b'D'), None);
    }
}
