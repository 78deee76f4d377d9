//! The two pumps of a running session. Client → backend frames messages,
//! hands Query and Parse texts to the route's rewriter and forwards the rest
//! as bytes. Backend → client forwards bytes and looks only at
//! ReadyForQuery, ErrorResponse and ParameterStatus headers.
//!
//! A refused statement is not answered by the proxy out of band: it is
//! replaced by a statement that fails to parse on the backend with a marker
//! token, and that backend error is replaced by the refusal on the way back.
//! So the refusal arrives in order inside pipelines, skips to Sync as any
//! error does, and aborts an open transaction exactly like a real error.
//!
//! With a privacy log, the client pump also looks at Bind and Execute and
//! the backend pump at CommandComplete, EmptyQueryResponse, PortalSuspended
//! and ParseComplete, to tell the [`StatementLog`] which statement ran and
//! how it ended; without one they look at nothing more. With a required log
//! that cannot be written, Query, Parse and Execute are refused the same way.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

use super::audit::{Request, StatementLog};
use super::route::Route;
use super::SessionError;
use crate::audit::{rows_from_command_complete, AuditVerdict};
use crate::protocol::frame::{Scanner, Step, HEADER_LEN};
use crate::protocol::messages::{self, split_cstr, tag, PgError};
use crate::protocol::stream::{ReadHalf, WriteHalf};
use crate::protocol::ProtocolError;
use crate::rewrite::{Refusal, Verdict};

const READ_CHUNK: usize = 16 * 1024;
const MARKER: &[u8] = b"pgveil_refused_";
/// Client Bind and Execute, looked at only with a privacy log.
const BIND: u8 = b'B';
const EXECUTE: u8 = b'E';
/// Backend replies looked at only with a privacy log.
const PARSE_COMPLETE: u8 = b'1';
const EMPTY_QUERY: u8 = b'I';
const PORTAL_SUSPENDED: u8 = b's';

/// State both pumps of one session share.
pub struct Tracker {
    syncs_sent: AtomicU64,
    readies_seen: AtomicU64,
    nonce: u64,
    next_id: AtomicU64,
    refusals: Mutex<VecDeque<PendingRefusal>>,
}

struct PendingRefusal {
    id: u64,
    sync_seq: u64,
    error: PgError,
}

impl Default for Tracker {
    fn default() -> Self {
        Tracker {
            syncs_sent: AtomicU64::new(0),
            readies_seen: AtomicU64::new(0),
            nonce: rand::random(),
            next_id: AtomicU64::new(0),
            refusals: Mutex::new(VecDeque::new()),
        }
    }
}

impl Tracker {
    /// True when every Query/Sync sent has been answered with ReadyForQuery.
    pub fn caught_up(&self) -> bool {
        self.syncs_sent.load(Ordering::Acquire) == self.readies_seen.load(Ordering::Acquire)
    }

    /// Records a refusal and returns the marker statement that stands in
    /// for it on the backend.
    fn stand_in(&self, error: PgError) -> String {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let entry = PendingRefusal {
            id,
            sync_seq: self.syncs_sent.load(Ordering::Acquire),
            error,
        };
        self.refusals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(entry);
        format!("pgveil_refused_{:016x}_{id}", self.nonce)
    }

    fn sent_sync_point(&self) {
        self.syncs_sent.fetch_add(1, Ordering::AcqRel);
    }

    fn saw_ready(&self) {
        let seen = self.readies_seen.fetch_add(1, Ordering::AcqRel) + 1;
        let mut refusals = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
        while refusals.front().is_some_and(|r| r.sync_seq < seen) {
            refusals.pop_front();
        }
    }

    /// The refusal a backend ErrorResponse stands for, if it is a marker error.
    fn refusal_for(&self, frame: &[u8]) -> Option<PgError> {
        let at = frame.windows(MARKER.len()).position(|w| w == MARKER)? + MARKER.len();
        let token = &frame[at..];
        let nonce_hex = std::str::from_utf8(token.get(..16)?).ok()?;
        if u64::from_str_radix(nonce_hex, 16).ok()? != self.nonce || token.get(16) != Some(&b'_') {
            return None;
        }
        let digits: Vec<u8> = token[17..]
            .iter()
            .copied()
            .take_while(u8::is_ascii_digit)
            .collect();
        let id: u64 = std::str::from_utf8(&digits).ok()?.parse().ok()?;
        let mut refusals = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
        let index = refusals.iter().position(|r| r.id == id)?;
        refusals.remove(index).map(|r| r.error)
    }
}

/// How the client side of a session ended.
#[derive(Debug)]
pub enum ClientEnd {
    /// The client sent Terminate.
    Terminated,
    /// The client closed the connection.
    Closed,
}

/// How the backend side of a session ended.
#[derive(Debug, PartialEq, Eq)]
pub enum BackendEnd {
    /// The backend closed or failed; the client was told.
    BackendGone,
    /// Writing to the client failed.
    ClientGone,
    /// The session was ended with a FATAL error sent to the client.
    Fatal,
}

fn refusal_error(refusal: Refusal) -> PgError {
    let error = PgError::error(refusal.sqlstate, refusal.message);
    match refusal.hint {
        Some(hint) => error.with_hint(hint),
        None => error,
    }
}

/// What the client pump needs to decide on each statement.
pub struct Client<'a> {
    /// The session's route.
    pub route: &'a Route,
    /// The refusals in flight.
    pub tracker: &'a Tracker,
    /// The privacy log, if any.
    pub log: Option<&'a StatementLog>,
}

/// Forwards client messages to the backend until the client leaves.
pub async fn client_to_backend(
    client: &mut ReadHalf<'_>,
    backend: &mut WriteHalf<'_>,
    session: &Client<'_>,
    max_message_bytes: usize,
    idle_timeout: Option<Duration>,
) -> Result<ClientEnd, SessionError> {
    let tracker = session.tracker;
    let mut scanner = Scanner::new(max_message_bytes);
    let mut inbuf = BytesMut::with_capacity(READ_CHUNK);
    let mut out = BytesMut::with_capacity(READ_CHUNK);
    let logged = session.log.is_some();
    loop {
        let inspect = |t| {
            matches!(
                t,
                tag::QUERY | tag::PARSE | tag::SYNC | tag::FUNCTION_CALL | tag::TERMINATE
            ) || (logged && matches!(t, BIND | EXECUTE))
        };
        match scanner
            .step(&inbuf, inspect)
            .map_err(SessionError::from_client_protocol)?
        {
            Step::Pass(n) => {
                out.extend_from_slice(&inbuf[..n]);
                inbuf.advance(n);
            }
            Step::Whole { tag, len } => {
                let frame = inbuf.split_to(len);
                if tag == tag::TERMINATE {
                    backend.write_all(&out).await?;
                    return Ok(ClientEnd::Terminated);
                }
                forward_inspected(tag, &frame, session, &mut out)?;
            }
            Step::NeedMore { at_least } => {
                if !out.is_empty() {
                    backend.write_all(&out).await?;
                    out.clear();
                }
                inbuf.reserve(at_least.saturating_sub(inbuf.len()).max(READ_CHUNK));
                let idle = idle_timeout.filter(|_| tracker.caught_up() && scanner.at_boundary());
                if read_client(client, &mut inbuf, idle).await? == 0 {
                    return closed(&scanner);
                }
            }
        }
    }
}

/// The end of a client that closed its connection: clean between
/// messages; in the middle of one that was partly passed on, the backend
/// connection is left waiting for the rest and must not be pooled again.
fn closed(scanner: &Scanner) -> Result<ClientEnd, SessionError> {
    if scanner.at_boundary() {
        Ok(ClientEnd::Closed)
    } else {
        Err(SessionError::Silent(
            "client closed the connection in the middle of a message".into(),
        ))
    }
}

async fn read_client(
    client: &mut ReadHalf<'_>,
    buf: &mut BytesMut,
    idle: Option<Duration>,
) -> Result<usize, SessionError> {
    let Some(limit) = idle else {
        return Ok(client.read_buf(buf).await?);
    };
    match tokio::time::timeout(limit, client.read_buf(buf)).await {
        Ok(n) => Ok(n?),
        Err(_) => Err(SessionError::Client(PgError::fatal(
            "57P05",
            "terminating connection due to idle-session timeout",
        ))),
    }
}

/// Handles one whole Query, Parse, Sync, FunctionCall, Bind or Execute message.
fn forward_inspected(
    tag: u8,
    frame: &[u8],
    session: &Client<'_>,
    out: &mut BytesMut,
) -> Result<(), SessionError> {
    let Client { tracker, log, .. } = *session;
    match tag {
        tag::QUERY => {
            match messages::decode_query(frame) {
                Ok(query) => {
                    let sql = query.query.as_str();
                    match decide(session, sql) {
                        Verdict::Forward => {
                            out.extend_from_slice(frame);
                            log.inspect(|l| l.query(sql, AuditVerdict::Forwarded));
                        }
                        Verdict::Rewritten(new) => {
                            messages::encode_query(&new, out);
                            log.inspect(|l| l.query(sql, AuditVerdict::Rewritten));
                        }
                        Verdict::Refused(r) => {
                            let stand_in =
                                refuse(session, Request::Query, None, sql, refusal_error(r));
                            messages::encode_query(&stand_in, out);
                        }
                    }
                }
                Err(e @ ProtocolError::InvalidUtf8) => {
                    let sql = lossy_text(frame, 0);
                    let error = PgError::error(e.sqlstate(), e.to_string());
                    messages::encode_query(&refuse(session, Request::Query, None, &sql, error), out)
                }
                Err(e) => return Err(SessionError::from_client_protocol(e)),
            }
            tracker.sent_sync_point();
        }
        tag::PARSE => match messages::decode_parse(frame) {
            Ok(parse) => {
                let name = parse.name.as_deref().unwrap_or("");
                let sql = parse.query.as_str();
                match decide(session, sql) {
                    Verdict::Forward => {
                        out.extend_from_slice(frame);
                        log.inspect(|l| l.parse(name, sql, AuditVerdict::Forwarded));
                    }
                    Verdict::Rewritten(new) => {
                        log.inspect(|l| l.parse(name, sql, AuditVerdict::Rewritten));
                        messages::encode_parse(parse.name, &new, parse.type_oids, out)
                    }
                    Verdict::Refused(r) => {
                        let error = refusal_error(r);
                        let stand_in = refuse(session, Request::Parse, Some(name), sql, error);
                        messages::encode_parse(parse.name, &stand_in, Vec::new(), out)
                    }
                }
            }
            Err(e @ ProtocolError::InvalidUtf8) => {
                let sql = lossy_text(frame, 1);
                let error = PgError::error(e.sqlstate(), e.to_string());
                let stand_in = refuse(session, Request::Parse, Some(""), &sql, error);
                messages::encode_parse(None, &stand_in, Vec::new(), out)
            }
            Err(e) => return Err(SessionError::from_client_protocol(e)),
        },
        tag::FUNCTION_CALL => {
            let error = PgError::error(
                "0A000",
                "fast-path function calls are not supported by pgveil",
            )
            .with_hint("call the function in a SELECT statement instead");
            let stand_in = refuse(
                session,
                Request::Query,
                None,
                "-- fast-path function call",
                error,
            );
            messages::encode_query(&stand_in, out);
            tracker.sent_sync_point();
        }
        BIND => {
            log.inspect(|l| l.bind(frame));
            out.extend_from_slice(frame);
        }
        EXECUTE => forward_execute(frame, session, out),
        _ => {
            log.inspect(|l| l.sync());
            out.extend_from_slice(frame);
            tracker.sent_sync_point();
        }
    }
    Ok(())
}

/// The verdict on one statement text: the route's, or a refusal when a
/// required privacy log cannot take its record.
fn decide(session: &Client<'_>, sql: &str) -> Verdict {
    match unadmitted(session.log) {
        Some(refusal) => Verdict::Refused(refusal),
        None => session.route.rewrite(sql),
    }
}

/// The refusal of every statement while a required privacy log cannot be
/// written; None when statements may run.
fn unadmitted(log: Option<&StatementLog>) -> Option<Refusal> {
    let e = log?.admit().err()?;
    Some(Refusal {
        sqlstate: e.sqlstate(),
        message: format!("pgveil refuses the statement: the privacy log cannot be written ({e})"),
        hint: Some("retry later; the administrator must repair the privacy log".into()),
    })
}

/// Logs a refusal and returns the stand-in statement to send instead.
fn refuse(
    session: &Client<'_>,
    request: Request,
    name: Option<&str>,
    sql: &str,
    error: PgError,
) -> String {
    if let Some(log) = session.log {
        log.refused(request, name, sql, &error.message, &error.code);
    }
    session.tracker.stand_in(error)
}

/// Forwards an Execute; with a required privacy log that cannot be written,
/// sends instead a Parse of a stand-in under a name of its own, so the
/// portal does not run and the refusal takes the Execute's place.
fn forward_execute(frame: &[u8], session: &Client<'_>, out: &mut BytesMut) {
    let Some(log) = session.log else {
        out.extend_from_slice(frame);
        return;
    };
    match unadmitted(Some(log)) {
        Some(r) => {
            let sql = log.portal_statement(frame);
            let stand_in = refuse(session, Request::Execute, None, &sql, refusal_error(r));
            messages::encode_parse(Some("pgveil_refused".into()), &stand_in, Vec::new(), out)
        }
        None => {
            log.execute(frame);
            out.extend_from_slice(frame);
        }
    }
}

/// The `skip`-th NUL-terminated string of a message body, lossily decoded
/// (for logging a text that is not valid UTF-8).
fn lossy_text(frame: &[u8], skip: usize) -> String {
    let mut rest = frame.get(HEADER_LEN..).unwrap_or_default();
    for _ in 0..skip {
        rest = split_cstr(rest).map_or(&[][..], |(_, r)| r);
    }
    let text = split_cstr(rest).map_or(rest, |(t, _)| t);
    String::from_utf8_lossy(text).into_owned()
}

/// Forwards backend messages to the client until either side goes away or
/// `fatal` asks to end the session with an error.
pub async fn backend_to_client(
    backend: &mut ReadHalf<'_>,
    client: &mut WriteHalf<'_>,
    tracker: &Tracker,
    log: Option<&StatementLog>,
    status: &mut u8,
    params: &mut BTreeMap<String, String>,
    mut fatal: oneshot::Receiver<PgError>,
) -> BackendEnd {
    let mut scanner = Scanner::new(usize::MAX);
    let mut inbuf = BytesMut::with_capacity(READ_CHUNK);
    let mut out = BytesMut::with_capacity(READ_CHUNK);
    let mut ended_with_fatal = false;
    loop {
        let inspect = |t| {
            matches!(
                t,
                tag::READY_FOR_QUERY | tag::ERROR_RESPONSE | tag::PARAMETER_STATUS
            ) || (log.is_some()
                && matches!(
                    t,
                    tag::COMMAND_COMPLETE | EMPTY_QUERY | PORTAL_SUSPENDED | PARSE_COMPLETE
                ))
        };
        let step = match scanner.step(&inbuf, inspect) {
            Ok(step) => step,
            Err(e) => {
                end_with(client, &mut out, backend_lost(&e.to_string())).await;
                return BackendEnd::BackendGone;
            }
        };
        match step {
            Step::Pass(n) => {
                out.extend_from_slice(&inbuf[..n]);
                inbuf.advance(n);
            }
            Step::Whole { tag, len } => {
                let frame = inbuf.split_to(len);
                ended_with_fatal = tag == tag::ERROR_RESPONSE && is_fatal(&frame);
                if let Some(log) = log {
                    note_reply(log, tag, &frame);
                }
                deliver_inspected(tag, &frame, tracker, status, params, &mut out);
            }
            Step::NeedMore { at_least } => {
                if !out.is_empty() {
                    if client.write_all(&out).await.is_err() {
                        return BackendEnd::ClientGone;
                    }
                    out.clear();
                }
                inbuf.reserve(at_least.saturating_sub(inbuf.len()).max(READ_CHUNK));
                tokio::select! {
                    read = backend.read_buf(&mut inbuf) => {
                        if matches!(read, Ok(0) | Err(_)) {
                            if !ended_with_fatal {
                                end_with(client, &mut out, backend_lost("the server closed the connection")).await;
                            }
                            return BackendEnd::BackendGone;
                        }
                    }
                    Ok(error) = &mut fatal => {
                        return if end_with(client, &mut out, error).await {
                            BackendEnd::Fatal
                        } else {
                            BackendEnd::ClientGone
                        };
                    }
                }
            }
        }
    }
}

fn deliver_inspected(
    tag: u8,
    frame: &[u8],
    tracker: &Tracker,
    status: &mut u8,
    params: &mut BTreeMap<String, String>,
    out: &mut BytesMut,
) {
    match tag {
        tag::READY_FOR_QUERY => {
            *status = frame.get(HEADER_LEN).copied().unwrap_or(b'I');
            tracker.saw_ready();
            out.extend_from_slice(frame);
        }
        tag::ERROR_RESPONSE => match tracker.refusal_for(frame) {
            Some(error) => error.encode(out),
            None => out.extend_from_slice(frame),
        },
        _ => {
            if let Some((name, rest)) = split_cstr(&frame[HEADER_LEN..]) {
                if let Some((value, _)) = split_cstr(rest) {
                    params.insert(
                        String::from_utf8_lossy(name).into_owned(),
                        String::from_utf8_lossy(value).into_owned(),
                    );
                }
            }
            out.extend_from_slice(frame);
        }
    }
}

/// Tells the privacy log about one backend reply.
fn note_reply(log: &StatementLog, tag: u8, frame: &[u8]) {
    match tag {
        tag::READY_FOR_QUERY => log.ready(),
        tag::ERROR_RESPONSE => {
            let code = messages::error_code(frame).and_then(|c| std::str::from_utf8(c).ok());
            log.error(code);
        }
        tag::COMMAND_COMPLETE => log.command_complete(rows_from_command_complete(frame)),
        EMPTY_QUERY | PORTAL_SUSPENDED => log.execute_ended(),
        PARSE_COMPLETE => log.parse_complete(),
        _ => {}
    }
}

fn backend_lost(why: &str) -> PgError {
    PgError::fatal(
        "08006",
        format!("pgveil lost its connection to the database server: {why}"),
    )
    .with_hint("reconnect; if this persists, check that PostgreSQL is running")
}

fn is_fatal(frame: &[u8]) -> bool {
    matches!(
        messages::error_field(frame, b'V'),
        Some(b"FATAL" | b"PANIC")
    )
}

/// Flushes what is pending, then sends a FATAL error to the client;
/// true when the client got it.
async fn end_with(client: &mut WriteHalf<'_>, out: &mut BytesMut, error: PgError) -> bool {
    error.encode(out);
    let delivered = client.write_all(out).await.is_ok();
    let _ = client.flush().await;
    delivered
}
