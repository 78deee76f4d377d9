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

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

use super::route::Route;
use super::SessionError;
use crate::protocol::frame::{Scanner, Step, HEADER_LEN};
use crate::protocol::messages::{self, split_cstr, tag, PgError};
use crate::protocol::stream::{ReadHalf, WriteHalf};
use crate::protocol::ProtocolError;
use crate::rewrite::{Refusal, Verdict};

const READ_CHUNK: usize = 16 * 1024;
const MARKER: &[u8] = b"pgveil_refused_";

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

/// Forwards client messages to the backend until the client leaves.
pub async fn client_to_backend(
    client: &mut ReadHalf<'_>,
    backend: &mut WriteHalf<'_>,
    route: &Route,
    tracker: &Tracker,
    max_message_bytes: usize,
    idle_timeout: Option<Duration>,
) -> Result<ClientEnd, SessionError> {
    let mut scanner = Scanner::new(max_message_bytes);
    let mut inbuf = BytesMut::with_capacity(READ_CHUNK);
    let mut out = BytesMut::with_capacity(READ_CHUNK);
    loop {
        let inspect = |t| {
            matches!(
                t,
                tag::QUERY | tag::PARSE | tag::SYNC | tag::FUNCTION_CALL | tag::TERMINATE
            )
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
                forward_inspected(tag, &frame, route, tracker, &mut out)?;
            }
            Step::NeedMore { at_least } => {
                if !out.is_empty() {
                    backend.write_all(&out).await?;
                    out.clear();
                }
                inbuf.reserve(at_least.saturating_sub(inbuf.len()).max(READ_CHUNK));
                let idle = idle_timeout.filter(|_| tracker.caught_up() && scanner.at_boundary());
                if read_client(client, &mut inbuf, idle).await? == 0 {
                    return Ok(ClientEnd::Closed);
                }
            }
        }
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

/// Handles one whole Query, Parse, Sync or FunctionCall message.
fn forward_inspected(
    tag: u8,
    frame: &[u8],
    route: &Route,
    tracker: &Tracker,
    out: &mut BytesMut,
) -> Result<(), SessionError> {
    match tag {
        tag::QUERY => {
            match messages::decode_query(frame) {
                Ok(query) => match route.rewrite(&query.query) {
                    Verdict::Forward => out.extend_from_slice(frame),
                    Verdict::Rewritten(sql) => messages::encode_query(&sql, out),
                    Verdict::Refused(r) => {
                        messages::encode_query(&tracker.stand_in(refusal_error(r)), out)
                    }
                },
                Err(e @ ProtocolError::InvalidUtf8) => messages::encode_query(
                    &tracker.stand_in(PgError::error(e.sqlstate(), e.to_string())),
                    out,
                ),
                Err(e) => return Err(SessionError::from_client_protocol(e)),
            }
            tracker.sent_sync_point();
        }
        tag::PARSE => match messages::decode_parse(frame) {
            Ok(parse) => match route.rewrite(&parse.query) {
                Verdict::Forward => out.extend_from_slice(frame),
                Verdict::Rewritten(sql) => {
                    messages::encode_parse(parse.name, &sql, parse.type_oids, out)
                }
                Verdict::Refused(r) => messages::encode_parse(
                    parse.name,
                    &tracker.stand_in(refusal_error(r)),
                    Vec::new(),
                    out,
                ),
            },
            Err(e @ ProtocolError::InvalidUtf8) => {
                let stand_in = tracker.stand_in(PgError::error(e.sqlstate(), e.to_string()));
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
            messages::encode_query(&tracker.stand_in(error), out);
            tracker.sent_sync_point();
        }
        _ => {
            out.extend_from_slice(frame);
            tracker.sent_sync_point();
        }
    }
    Ok(())
}

/// Forwards backend messages to the client until either side goes away or
/// `fatal` asks to end the session with an error.
pub async fn backend_to_client(
    backend: &mut ReadHalf<'_>,
    client: &mut WriteHalf<'_>,
    tracker: &Tracker,
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
            )
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
