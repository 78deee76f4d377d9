//! One session's relay: a single loop that moves messages between the
//! client and its backend connection in both directions.
//!
//! Client → backend: messages are framed; Query and Parse texts go to the
//! route's rewriter; everything else is forwarded as bytes (COPY data in
//! pieces, never buffered whole). Backend → client: bytes are forwarded;
//! only message tags are looked at, and whole messages only for the few
//! that end a request ([`Replies`]). Output is gathered per direction and
//! written when the input at hand is used up, so a burst of messages costs
//! one write, and both directions always progress (no deadlock when the
//! client sends while a large result comes back).
//!
//! A refused statement is not answered out of band: it is replaced by a
//! statement that fails to parse on the backend with a marker token, and
//! that backend error is replaced by the refusal on the way back. So the
//! refusal arrives in order inside pipelines, skips to Sync as any error
//! does, and aborts an open transaction exactly like a real error.
//!
//! Under transaction pooling the relay attaches a pooled connection when a
//! request needs one and hands it back when the connection is caught up
//! and outside a transaction. On attaching, it replays the client's
//! settings if the connection has others; prepared statements are kept
//! per connection under pgveil's names (`statements.rs`). A statement that
//! leaves state which cannot be carried over pins the session to its
//! connection (`rewrite::effects`).

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, Sleep};
use tokio_util::io::poll_read_buf;

use super::audit::{Request, StatementLog};
use super::cancel::CancelSlot;
use super::replies::{Action, Entry, Expect, Outcome, Replies, Then};
use super::route::Route;
use super::statements::{split_bind, split_target, Body, ClientStatements};
use super::SessionError;
use crate::admin::{SessionMetrics, StatementVerdict};
use crate::audit::{rows_from_command_complete, AuditVerdict};
use crate::backend::memory::Settings;
use crate::backend::{BackendConn, PooledConn, Pools};
use crate::config::PoolMode;
use crate::protocol::frame::{Scanner, Step, HEADER_LEN};
use crate::protocol::messages::{self, split_cstr, tag, PgError};
use crate::protocol::stream::Stream;
use crate::protocol::ProtocolError;
use crate::rewrite::effects::{self, Effect};
use crate::rewrite::params;
use crate::rewrite::{Refusal, Verdict};
use crate::shutdown::{admin_shutdown, Shutdown, Watch};

/// Read buffers start this large and grow with the messages.
const READ_CHUNK: usize = 8 * 1024;
/// Reading from one side pauses while this much output for the other side
/// waits to be written.
const HIGH_WATER: usize = 256 * 1024;

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The client sent Terminate.
    Terminated,
    /// The client closed the connection.
    Closed,
    /// Writing to the client failed.
    ClientGone,
    /// The backend connection failed or closed; the client was told.
    BackendGone,
    /// The session was ended with a FATAL error sent to the client.
    Fatal,
}

/// What a session needs beyond its streams.
pub struct Shared<'a> {
    /// The pools the session takes backend connections from.
    pub pools: &'a Pools,
    /// The session's route.
    pub route: &'a Route,
    /// The privacy log, if any.
    pub log: Option<&'a StatementLog>,
    /// The slot the session's cancel key points to.
    pub cancel: &'a CancelSlot,
    /// The session's share of the metrics.
    pub metrics: SessionMetrics,
    /// The server's graceful shutdown.
    pub shutdown: &'a Shutdown,
    /// The largest message a client may send.
    pub max_message_bytes: usize,
    /// Close the session after this long idle.
    pub idle_timeout: Option<Duration>,
}

/// One session's relay state.
pub struct Relay<'a> {
    cx: Shared<'a>,
    client: Stream,
    conn: Option<PooledConn>,
    settings: Arc<Settings>,
    statements: ClientStatements,
    replies: Replies,
    pinned: bool,
    forget_at_ready: bool,
    client_in: BytesMut,
    to_client: BytesMut,
    to_backend: BytesMut,
    client_scan: Scanner,
    backend_scan: Scanner,
    passing: Action,
    backend_fatal: bool,
    client_flush: bool,
    backend_flush: bool,
    shutdown: Watch,
    draining: bool,
}

enum Event {
    Client(usize),
    Backend(usize),
    ClientGone,
    BackendGone(String),
    Idle,
    Draining,
    Forced,
}

impl<'a> Relay<'a> {
    /// A relay for a started session: the client stream, the backend
    /// connection it started on (None under transaction pooling, which
    /// attaches one on demand) and the client's settings.
    pub fn new(
        cx: Shared<'a>,
        client: Stream,
        conn: Option<PooledConn>,
        settings: Arc<Settings>,
    ) -> Self {
        cx.cancel.set(conn.as_ref().map(|c| c.cancel_key.clone()));
        let max = cx.max_message_bytes;
        let shutdown = cx.shutdown.watch();
        Relay {
            cx,
            client,
            conn,
            settings,
            statements: ClientStatements::default(),
            replies: Replies::default(),
            pinned: false,
            forget_at_ready: false,
            client_in: BytesMut::new(),
            to_client: BytesMut::new(),
            to_backend: BytesMut::new(),
            client_scan: Scanner::new(max),
            backend_scan: Scanner::new(usize::MAX),
            passing: Action::Forward,
            backend_fatal: false,
            client_flush: false,
            backend_flush: false,
            shutdown,
            draining: false,
        }
    }

    fn transaction_pooling(&self) -> bool {
        self.cx.route.pool_mode == PoolMode::Transaction
    }

    /// Sends `greeting` (the end of startup), then relays until the session
    /// ends; returns how it ended and the backend connection still attached.
    pub async fn run(mut self, greeting: &[u8]) -> (End, Option<PooledConn>, bool) {
        self.to_client.extend_from_slice(greeting);
        let end = self.relay().await;
        self.finish(end).await
    }

    async fn relay(&mut self) -> End {
        loop {
            let event = self.next_event().await;
            let step = match event {
                Event::Client(0) => return End::Closed,
                Event::Client(_) => self.handle_client_input().await,
                Event::Backend(0) => Err(self.backend_lost("the server closed the connection")),
                Event::Backend(_) => self.handle_backend_input(),
                Event::BackendGone(why) => Err(self.backend_lost(&why)),
                Event::ClientGone => return End::ClientGone,
                Event::Idle => Err(SessionError::Client(PgError::fatal(
                    "57P05",
                    "terminating connection due to idle-session timeout",
                ))),
                Event::Draining => {
                    self.draining = true;
                    Ok(None)
                }
                Event::Forced => Err(self.shut_down()),
            };
            match step {
                Ok(None) if self.draining && self.idle() => return self.fail(self.shut_down()),
                Ok(None) => self.release_if_idle(),
                Ok(Some(end)) => return end,
                Err(e) => return self.fail(e),
            }
        }
    }

    /// The end of a session because pgveil is shutting down.
    fn shut_down(&self) -> SessionError {
        tracing::info!("ending the session: pgveil is shutting down");
        SessionError::Client(admin_shutdown())
    }

    /// Nothing is owed, nothing half-sent, no transaction open.
    fn idle(&self) -> bool {
        self.replies.caught_up()
            && self.client_scan.at_boundary()
            && self.conn.as_ref().is_none_or(|c| c.status == b'I')
    }

    /// Ends the session on an error: tells the client when there is
    /// something to tell (unless PostgreSQL already sent its FATAL).
    fn fail(&mut self, error: SessionError) -> End {
        let lost = matches!(error, SessionError::BackendLost(_));
        if lost && self.backend_fatal {
            return End::BackendGone;
        }
        let Some(e) = error.client_error() else {
            return End::ClientGone;
        };
        e.encode(&mut self.to_client);
        match lost {
            true => End::BackendGone,
            false => End::Fatal,
        }
    }

    fn backend_lost(&mut self, why: &str) -> SessionError {
        if let Some(conn) = self.conn.as_mut() {
            conn.broken = true;
        }
        SessionError::BackendLost(
            PgError::fatal(
                "08006",
                format!("pgveil lost its connection to the database server: {why}"),
            )
            .with_hint("reconnect; if this persists, check that PostgreSQL is running"),
        )
    }

    /// Flushes what is pending, hands back the backend connection state.
    async fn finish(mut self, end: End) -> (End, Option<PooledConn>, bool) {
        if !matches!(end, End::ClientGone) {
            let _ = self.client.write_all(&self.to_client).await;
            let _ = self.client.flush().await;
        }
        if end == End::Terminated {
            if let Some(conn) = self.conn.as_mut() {
                let _ = conn.stream.write_all(&self.to_backend).await;
            }
        }
        self.cx.cancel.set(None);
        // a client that left in the middle of a message passed on leaves the
        // backend waiting for the rest: that connection is not reusable
        let clean = matches!(end, End::Terminated | End::Closed)
            && self.replies.caught_up()
            && self.client_scan.at_boundary();
        (end, self.conn.take(), clean)
    }

    // ------------------------------------------------------------ events

    async fn next_event(&mut self) -> Event {
        let idle = self.idle_deadline().map(tokio::time::sleep_until);
        tokio::pin!(idle);
        poll_fn(|cx| {
            let sleep = idle.as_mut().as_pin_mut();
            self.poll_event(cx, sleep)
        })
        .await
    }

    /// When an idle session times out, if it is idle and has a limit.
    fn idle_deadline(&self) -> Option<Instant> {
        let limit = self.cx.idle_timeout?;
        let idle = self.replies.caught_up() && self.client_scan.at_boundary();
        idle.then(|| Instant::now() + limit)
    }

    fn poll_event(&mut self, cx: &mut Context<'_>, idle: Option<Pin<&mut Sleep>>) -> Poll<Event> {
        if poll_drain(
            &mut self.client,
            &mut self.to_client,
            &mut self.client_flush,
            cx,
        )
        .is_err()
        {
            return Poll::Ready(Event::ClientGone);
        }
        if let Some(conn) = self.conn.as_mut() {
            if let Err(e) = poll_drain(
                &mut conn.stream,
                &mut self.to_backend,
                &mut self.backend_flush,
                cx,
            ) {
                return Poll::Ready(Event::BackendGone(e.to_string()));
            }
        }
        if self.to_backend.len() < HIGH_WATER {
            reserve_for_read(&mut self.client_in);
            match poll_read_buf(Pin::new(&mut self.client), cx, &mut self.client_in) {
                Poll::Ready(Ok(n)) => return Poll::Ready(Event::Client(n)),
                Poll::Ready(Err(_)) => return Poll::Ready(Event::ClientGone),
                Poll::Pending => {}
            }
        }
        if let Some(conn) = self
            .conn
            .as_mut()
            .filter(|_| self.to_client.len() < HIGH_WATER)
        {
            let conn: &mut BackendConn = conn;
            reserve_for_read(&mut conn.read_buf);
            match poll_read_buf(Pin::new(&mut conn.stream), cx, &mut conn.read_buf) {
                Poll::Ready(Ok(n)) => return Poll::Ready(Event::Backend(n)),
                Poll::Ready(Err(e)) => return Poll::Ready(Event::BackendGone(e.to_string())),
                Poll::Pending => {}
            }
        }
        if let Some(sleep) = idle {
            if sleep.poll(cx).is_ready() {
                return Poll::Ready(Event::Idle);
            }
        }
        if !self.draining {
            if self.shutdown.poll_draining(cx).is_ready() {
                return Poll::Ready(Event::Draining);
            }
        } else if self.shutdown.poll_forced(cx).is_ready() {
            return Poll::Ready(Event::Forced);
        }
        Poll::Pending
    }

    // ------------------------------------------------------------ client side

    /// Handles the complete client messages read so far.
    async fn handle_client_input(&mut self) -> Result<Option<End>, SessionError> {
        loop {
            let whole_bind = self.transaction_pooling() || self.cx.log.is_some();
            let step = self
                .client_scan
                .step(&self.client_in, |t| {
                    t != tag::COPY_DATA && (t != tag::BIND || whole_bind)
                })
                .map_err(SessionError::from_client_protocol)?;
            match step {
                Step::Begin { n, .. } | Step::Pass(n) => {
                    self.attach().await?;
                    self.to_backend.extend_from_slice(&self.client_in[..n]);
                    self.client_in.advance(n);
                }
                Step::Whole { tag, len } => {
                    let frame = self.client_in.split_to(len);
                    if tag == tag::TERMINATE {
                        return Ok(Some(End::Terminated));
                    }
                    self.client_message(tag, &frame).await?;
                }
                Step::NeedMore { .. } => return Ok(None),
            }
        }
    }

    async fn client_message(&mut self, tag: u8, frame: &[u8]) -> Result<(), SessionError> {
        match tag {
            tag::QUERY => self.query(frame).await?,
            tag::PARSE => self.parse(frame).await?,
            tag::BIND => self.bind(frame).await?,
            tag::DESCRIBE => self.describe(frame).await?,
            tag::CLOSE => self.close(frame).await?,
            tag::EXECUTE => self.execute(frame).await?,
            tag::SYNC => self.sync(frame).await?,
            // nothing owed: nothing to flush
            tag::FLUSH if self.replies.caught_up() => {}
            tag::FLUSH => self.forward(frame).await?,
            tag::FUNCTION_CALL => self.function_call().await?,
            tag::COPY_DONE | tag::COPY_FAIL => {
                self.forward(frame).await?;
                self.replies.client_copy_end();
            }
            other => return Err(unknown_message(other)),
        }
        // pgveil's own answers go out as soon as nothing is owed before them
        self.deliver_synthetic();
        Ok(())
    }

    async fn forward(&mut self, frame: &[u8]) -> Result<(), SessionError> {
        self.attach().await?;
        self.to_backend.extend_from_slice(frame);
        Ok(())
    }

    async fn query(&mut self, frame: &[u8]) -> Result<(), SessionError> {
        let query = match messages::decode_query(frame) {
            Ok(query) => query,
            Err(e @ ProtocolError::InvalidUtf8) => {
                let sql = lossy_text(frame, 0);
                let error = PgError::error(e.sqlstate(), e.to_string());
                return self.refuse_query(&sql, error).await;
            }
            Err(e) => return Err(SessionError::from_client_protocol(e)),
        };
        let sql = query.query.as_str();
        let text = match self.decide(sql) {
            Verdict::Refused(r) => return self.refuse_query(sql, refusal_error(r)).await,
            Verdict::Forward => {
                self.log(|l| l.query(sql, AuditVerdict::Forwarded));
                None
            }
            Verdict::Rewritten(new) => {
                self.log(|l| l.query(sql, AuditVerdict::Rewritten));
                Some(new)
            }
        };
        let outside = self.outside_transaction();
        self.attach().await?;
        let then = self.query_effect(sql, outside);
        let prepared = self
            .cx
            .route
            .auto_prepare
            .then(|| params::parameterize(text.as_deref().unwrap_or(sql)))
            .flatten();
        match (prepared, &text) {
            (Some(statement), _) if self.conn.is_some() => self.run_prepared(statement, then),
            (_, Some(new)) => self.send_query(|out| messages::encode_query(new, out), then),
            (_, None) => self.send_query(|out| out.extend_from_slice(frame), then),
        }
        self.cx.metrics.request_sent();
        Ok(())
    }

    fn send_query(&mut self, encode: impl FnOnce(&mut BytesMut), then: Then) {
        encode(&mut self.to_backend);
        self.forget_unnamed();
        self.replies.push(Entry::client(Expect::Query).then(then));
    }

    /// Runs a simple-protocol Query as Bind, Describe and Execute of a
    /// statement pgveil prepares on the connection (once), then Sync: the
    /// client gets the replies a Query would give (pgveil drops
    /// ParseComplete, BindComplete and NoData).
    fn run_prepared(&mut self, statement: params::Parameterized, then: Then) {
        let body = Arc::new(Body {
            sql: statement.sql,
            types: statement.types,
        });
        let name = self.prepared_statement(body).unwrap_or_default();
        messages::encode_bind_text(&name, &statement.values, &mut self.to_backend);
        self.replies.push(Entry::internal(Expect::Complete));
        messages::encode_raw(tag::DESCRIBE, &[b"P\0"], &mut self.to_backend);
        self.replies.push(Entry::client(Expect::Rows));
        messages::encode_raw(
            tag::EXECUTE,
            &[b"\0", &0i32.to_be_bytes()],
            &mut self.to_backend,
        );
        self.replies.push(Entry::client(Expect::Execute));
        messages::encode_raw(tag::SYNC, &[], &mut self.to_backend);
        self.replies.push(Entry::client(Expect::Sync).then(then));
    }

    /// The backend name of `body` on the attached connection, sending the
    /// Parse that prepares it there first if needed.
    fn prepared_statement(&mut self, body: Arc<Body>) -> Option<String> {
        let conn = self.conn.as_mut()?;
        if let Some(name) = conn.memory.prepared_name(&body) {
            return Some(name);
        }
        let name = conn.memory.prepare(body.clone());
        messages::encode_parse(
            Some(name.clone()),
            &body.sql,
            body.types.clone(),
            &mut self.to_backend,
        );
        self.replies
            .push(Entry::internal(Expect::Complete).then(Then::Prepared(body)));
        self.evict_prepared();
        Some(name)
    }

    /// Under transaction pooling: what a simple Query leaves behind; sent
    /// `outside` a transaction, its settings are carried.
    fn query_effect(&mut self, sql: &str, outside: bool) -> Then {
        if !self.transaction_pooling() {
            self.note_reset(sql);
            return Then::Nothing;
        }
        let classified = effects::classify(sql);
        match classified.effect {
            Effect::None => Then::Nothing,
            Effect::Reset => {
                self.forget_at_ready = true;
                Then::Nothing
            }
            Effect::Settings if outside => Then::Carry(
                classified
                    .settings
                    .into_iter()
                    .map(|r| sql[r].to_owned())
                    .collect(),
            ),
            Effect::Settings | Effect::Pin => {
                self.pin();
                Then::Nothing
            }
        }
    }

    /// In session mode: a statement that drops prepared statements
    /// (`DISCARD`, `DEALLOCATE`) drops those pgveil prepared too.
    fn note_reset(&mut self, sql: &str) {
        if self.cx.route.auto_prepare
            && effects::may_reset(sql)
            && effects::classify(sql).effect == Effect::Reset
        {
            self.forget_at_ready = true;
        }
    }

    /// Whether nothing is in flight and no transaction is open (under
    /// transaction pooling a session without a connection has none).
    fn outside_transaction(&self) -> bool {
        self.replies.caught_up() && self.conn.as_ref().is_none_or(|c| c.status == b'I')
    }

    fn pin(&mut self) {
        if !self.pinned {
            tracing::debug!(user = %self.cx.route.user, "session pinned to its backend connection");
        }
        self.pinned = true;
    }

    async fn refuse_query(&mut self, sql: &str, error: PgError) -> Result<(), SessionError> {
        self.attach().await?;
        let stand_in = self.refuse(Request::Query, None, sql, &error);
        messages::encode_query(&stand_in, &mut self.to_backend);
        self.forget_unnamed();
        self.replies.push(Entry::refused(Expect::Query, error));
        self.cx.metrics.request_sent();
        Ok(())
    }

    async fn function_call(&mut self) -> Result<(), SessionError> {
        let error = PgError::error(
            "0A000",
            "fast-path function calls are not supported by pgveil",
        )
        .with_hint("call the function in a SELECT statement instead");
        self.refuse_query("-- fast-path function call", error).await
    }

    async fn parse(&mut self, frame: &[u8]) -> Result<(), SessionError> {
        let parse = match messages::decode_parse(frame) {
            Ok(parse) => parse,
            Err(e @ ProtocolError::InvalidUtf8) => {
                let sql = lossy_text(frame, 1);
                let error = PgError::error(e.sqlstate(), e.to_string());
                return self.refuse_parse("", &sql, error).await;
            }
            Err(e) => return Err(SessionError::from_client_protocol(e)),
        };
        let name = parse.name.as_deref().unwrap_or("");
        let sql = parse.query.as_str();
        let (text, verdict) = match self.decide(sql) {
            Verdict::Refused(r) => return self.refuse_parse(name, sql, refusal_error(r)).await,
            Verdict::Forward => (None, AuditVerdict::Forwarded),
            Verdict::Rewritten(new) => (Some(new), AuditVerdict::Rewritten),
        };
        self.log(|l| l.parse(name, sql, verdict));
        self.attach().await?;
        if !self.transaction_pooling() {
            self.note_reset(sql);
            match &text {
                Some(new) => {
                    messages::encode_parse(parse.name, new, parse.type_oids, &mut self.to_backend)
                }
                None => self.to_backend.extend_from_slice(frame),
            }
            self.replies.push(Entry::client(Expect::Complete));
            return Ok(());
        }
        match effects::classify(sql).effect {
            Effect::None => {}
            Effect::Reset => self.forget_at_ready = true,
            // settings and session state through the extended protocol are
            // not carried: the session keeps this connection
            Effect::Settings | Effect::Pin => self.pin(),
        }
        let body = Arc::new(Body {
            sql: text.unwrap_or_else(|| sql.to_owned()),
            types: parse.type_oids,
        });
        self.statements.define(name, body.clone());
        self.prepare_as(name, body);
        Ok(())
    }

    /// Prepares a client's statement on the attached connection: the
    /// unnamed one as it is, a named one under pgveil's name unless the
    /// connection already has it (then pgveil answers ParseComplete).
    fn prepare_as(&mut self, name: &str, body: Arc<Body>) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        if name.is_empty() {
            messages::encode_parse(None, &body.sql, body.types.clone(), &mut self.to_backend);
            conn.memory.unnamed = Some(body);
            self.replies.push(Entry::client(Expect::Complete));
            return;
        }
        if conn.memory.prepared_name(&body).is_some() {
            let mut done = BytesMut::new();
            messages::parse_complete(&mut done);
            self.replies
                .push(Entry::client(Expect::Synthetic(done.freeze())));
            return;
        }
        let server = conn.memory.prepare(body.clone());
        messages::encode_parse(
            Some(server),
            &body.sql,
            body.types.clone(),
            &mut self.to_backend,
        );
        self.replies
            .push(Entry::client(Expect::Complete).then(Then::Prepared(body)));
        self.evict_prepared();
    }

    /// Closes the least recently used statement when a connection keeps too many.
    fn evict_prepared(&mut self) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        if let Some(name) = conn.memory.evict() {
            messages::encode_raw(b'C', &[b"S", name.as_bytes(), b"\0"], &mut self.to_backend);
            self.replies.push(Entry::internal(Expect::Complete));
        }
    }

    async fn refuse_parse(
        &mut self,
        name: &str,
        sql: &str,
        error: PgError,
    ) -> Result<(), SessionError> {
        self.attach().await?;
        let stand_in = self.refuse(Request::Parse, Some(name), sql, &error);
        let target = match self.transaction_pooling() {
            true => {
                self.statements.close(name);
                self.forget_unnamed();
                None
            }
            false => Some(name.to_owned()).filter(|n| !n.is_empty()),
        };
        messages::encode_parse(target, &stand_in, Vec::new(), &mut self.to_backend);
        self.replies.push(Entry::refused(Expect::Complete, error));
        Ok(())
    }

    async fn bind(&mut self, frame: &[u8]) -> Result<(), SessionError> {
        self.log(|l| l.bind(frame));
        if !self.transaction_pooling() {
            self.forward(frame).await?;
            self.replies.push(Entry::client(Expect::Complete));
            return Ok(());
        }
        let Some(parts) = split_bind(frame) else {
            return self.forward_expecting(frame, Expect::Complete).await;
        };
        self.attach().await?;
        match self.backend_statement(parts.statement) {
            Some(server) => {
                messages::encode_raw(
                    tag::BIND,
                    &[parts.portal, b"\0", server.as_bytes(), b"\0", parts.rest],
                    &mut self.to_backend,
                );
                self.replies.push(Entry::client(Expect::Complete));
            }
            None => {
                let (stand_in, error) = self.missing_statement(parts.statement);
                messages::encode_raw(
                    tag::BIND,
                    &[parts.portal, b"\0", stand_in.as_bytes(), b"\0", parts.rest],
                    &mut self.to_backend,
                );
                self.replies.push(Entry::refused(Expect::Complete, error));
            }
        }
        Ok(())
    }

    async fn describe(&mut self, frame: &[u8]) -> Result<(), SessionError> {
        let statement = match split_target(frame) {
            Some((b'S', name)) if self.transaction_pooling() => name,
            _ => return self.forward_expecting(frame, Expect::Describe).await,
        };
        self.attach().await?;
        let (name, entry) = match self.backend_statement(statement) {
            Some(server) => (server, Entry::client(Expect::Describe)),
            None => {
                let (stand_in, error) = self.missing_statement(statement);
                (stand_in, Entry::refused(Expect::Describe, error))
            }
        };
        messages::encode_raw(
            tag::DESCRIBE,
            &[b"S", name.as_bytes(), b"\0"],
            &mut self.to_backend,
        );
        self.replies.push(entry);
        Ok(())
    }

    async fn close(&mut self, frame: &[u8]) -> Result<(), SessionError> {
        match split_target(frame) {
            Some((b'S', name)) if self.transaction_pooling() => {
                self.statements.close(name);
                let mut done = BytesMut::new();
                messages::close_complete(&mut done);
                self.replies
                    .push(Entry::client(Expect::Synthetic(done.freeze())));
                Ok(())
            }
            _ => self.forward_expecting(frame, Expect::Complete).await,
        }
    }

    async fn execute(&mut self, frame: &[u8]) -> Result<(), SessionError> {
        self.attach().await?;
        let Some(log) = self.cx.log else {
            self.to_backend.extend_from_slice(frame);
            self.replies.push(Entry::client(Expect::Execute));
            return Ok(());
        };
        match unadmitted(Some(log)) {
            Some(r) => {
                // the portal must not run: a Parse of a stand-in takes its place
                let sql = log.portal_statement(frame);
                let error = refusal_error(r);
                let stand_in = self.refuse(Request::Execute, None, &sql, &error);
                messages::encode_parse(
                    Some("pgveil_refused".into()),
                    &stand_in,
                    Vec::new(),
                    &mut self.to_backend,
                );
                self.replies.push(Entry::refused(Expect::Complete, error));
            }
            None => {
                log.execute(frame);
                self.to_backend.extend_from_slice(frame);
                self.replies.push(Entry::client(Expect::Execute));
            }
        }
        Ok(())
    }

    async fn sync(&mut self, frame: &[u8]) -> Result<(), SessionError> {
        self.log(|l| l.sync());
        if self.conn.is_none() {
            // nothing is owed and no transaction is open: answer it here
            let mut ready = BytesMut::new();
            messages::ready_for_query(b'I', &mut ready);
            self.replies
                .push(Entry::client(Expect::Synthetic(ready.freeze())));
            self.cx.metrics.request_sent();
            return Ok(());
        }
        self.forward(frame).await?;
        if self.replies.client_sync() {
            self.cx.metrics.request_sent();
        }
        Ok(())
    }

    async fn forward_expecting(
        &mut self,
        frame: &[u8],
        expect: Expect,
    ) -> Result<(), SessionError> {
        self.forward(frame).await?;
        self.replies.push(Entry::client(expect));
        Ok(())
    }

    /// The backend name of a client's statement on the attached
    /// connection, preparing it there first if needed.
    fn backend_statement(&mut self, client_name: &str) -> Option<String> {
        let body = self.statements.get(client_name)?.clone();
        let conn = self.conn.as_mut()?;
        if client_name.is_empty() {
            if conn.memory.unnamed.as_ref() != Some(&body) {
                messages::encode_parse(None, &body.sql, body.types.clone(), &mut self.to_backend);
                conn.memory.unnamed = Some(body);
                self.replies.push(Entry::internal(Expect::Complete));
            }
            return Some(String::new());
        }
        self.prepared_statement(body)
    }

    /// A stand-in name for a statement the client never prepared, and the
    /// error PostgreSQL would give.
    fn missing_statement(&mut self, client_name: &str) -> (String, PgError) {
        let error = PgError::error(
            "26000",
            format!("prepared statement \"{client_name}\" does not exist"),
        );
        (self.replies.stand_in(), error)
    }

    fn forget_unnamed(&mut self) {
        if let Some(conn) = self.conn.as_mut() {
            conn.memory.unnamed = None;
        }
    }

    /// The verdict on one statement text: the route's, or a refusal when a
    /// required privacy log cannot take its record.
    fn decide(&self, sql: &str) -> Verdict {
        let verdict = match unadmitted(self.cx.log) {
            Some(refusal) => Verdict::Refused(refusal),
            None => self.cx.route.rewrite(sql),
        };
        match &verdict {
            Verdict::Forward => self.cx.metrics.statement(StatementVerdict::Forwarded),
            Verdict::Rewritten(_) => self.cx.metrics.statement(StatementVerdict::Rewritten),
            Verdict::Refused(_) => {} // counted by `refuse`
        }
        verdict
    }

    /// Logs a refusal and returns the stand-in statement to send instead.
    fn refuse(
        &mut self,
        request: Request,
        name: Option<&str>,
        sql: &str,
        error: &PgError,
    ) -> String {
        self.cx.metrics.statement(StatementVerdict::Refused);
        tracing::info!(sqlstate = %error.code, reason = %error.message, "statement refused");
        if let Some(log) = self.cx.log {
            log.refused(request, name, sql, &error.message, &error.code);
        }
        self.replies.stand_in()
    }

    fn log(&self, f: impl FnOnce(&StatementLog)) {
        if let Some(log) = self.cx.log {
            f(log);
        }
    }

    // ------------------------------------------------------------ backend side

    /// Handles the backend messages read so far.
    fn handle_backend_input(&mut self) -> Result<Option<End>, SessionError> {
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Ok(None);
            };
            let step = self
                .backend_scan
                .step(&conn.read_buf, |t| !matches!(t, b'D' | b'd' | b'A' | b'N'))
                .map_err(|e| self.backend_lost(&e.to_string()))?;
            let Some(conn) = self.conn.as_mut() else {
                return Ok(None);
            };
            match step {
                Step::Begin { tag, n } => {
                    self.passing = self.replies.passed(tag);
                    pass_bytes(&mut conn.read_buf, n, &self.passing, &mut self.to_client);
                }
                Step::Pass(n) => {
                    pass_bytes(&mut conn.read_buf, n, &self.passing, &mut self.to_client)
                }
                Step::Whole { tag, len } => {
                    let frame = conn.read_buf.split_to(len);
                    self.backend_message(tag, &frame);
                    if self.backend_fatal {
                        // PostgreSQL ends the connection after a FATAL error
                        if let Some(conn) = self.conn.as_mut() {
                            conn.broken = true;
                        }
                        return Ok(Some(End::BackendGone));
                    }
                }
                Step::NeedMore { .. } => return Ok(None),
            }
        }
    }

    fn backend_message(&mut self, tag: u8, frame: &[u8]) {
        match tag {
            tag::ERROR_RESPONSE => self.backend_fatal = is_fatal(frame),
            tag::PARAMETER_STATUS => self.remember_parameter(frame),
            _ => {}
        }
        let mut outcomes = Vec::new();
        match self.replies.on_message(tag, frame, &mut outcomes) {
            Action::Forward => {
                self.to_client.extend_from_slice(frame);
                delivered(&self.cx.metrics, self.cx.log, tag, frame);
            }
            Action::Replace(error) => {
                let at = self.to_client.len();
                error.encode(&mut self.to_client);
                delivered(&self.cx.metrics, self.cx.log, tag, &self.to_client[at..]);
            }
            Action::Swallow => {}
        }
        for outcome in outcomes {
            self.apply(outcome);
        }
        self.deliver_synthetic();
    }

    fn apply(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Ready(status) => {
                let forget = std::mem::take(&mut self.forget_at_ready);
                if let Some(conn) = self.conn.as_mut() {
                    conn.status = status;
                    if forget {
                        conn.memory.forget_all();
                    }
                }
            }
            Outcome::ForgetPrepared(body) => {
                if let Some(conn) = self.conn.as_mut() {
                    conn.memory.forget(&body);
                }
            }
            Outcome::Carry(statements) => {
                self.settings = Arc::new(self.settings.carrying(statements));
                // replayed in full on the next attach: a RESET here also
                // undid startup settings applied with set_config
                if let Some(conn) = self.conn.as_mut() {
                    conn.memory.settings = None;
                }
            }
        }
    }

    fn remember_parameter(&mut self, frame: &[u8]) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let Some((name, rest)) = frame.get(HEADER_LEN..).and_then(split_cstr) else {
            return;
        };
        if let Some((value, _)) = split_cstr(rest) {
            conn.params.insert(
                String::from_utf8_lossy(name).into_owned(),
                String::from_utf8_lossy(value).into_owned(),
            );
        }
    }

    /// Sends pgveil's own answers that have reached the front of the queue.
    fn deliver_synthetic(&mut self) {
        let (metrics, log) = (&self.cx.metrics, self.cx.log);
        self.replies.drain_synthetic(&mut self.to_client, |bytes| {
            delivered(metrics, log, bytes[0], bytes)
        });
    }

    // ------------------------------------------------------------ attach / release

    /// Attaches a backend connection if none is: takes one from the pool
    /// and, if it has other settings, replays the client's first.
    async fn attach(&mut self) -> Result<(), SessionError> {
        if self.conn.is_some() {
            return Ok(());
        }
        let mut conn = self.cx.pools.get(&self.cx.route.login).await?;
        if !conn.memory.has_settings(&self.settings) {
            messages::encode_query(&self.settings.apply_sql(), &mut self.to_backend);
            self.replies.push(Entry::internal(Expect::Query));
            conn.memory.settings = Some(self.settings.clone());
            conn.memory.unnamed = None;
        }
        self.cx.cancel.set(Some(conn.cancel_key.clone()));
        self.conn = Some(conn);
        Ok(())
    }

    /// Under transaction pooling, hands the connection back once it owes
    /// nothing, no transaction is open and the session is not pinned.
    fn release_if_idle(&mut self) {
        if !self.transaction_pooling() || self.pinned {
            return;
        }
        let Some(conn) = self.conn.as_ref() else {
            return;
        };
        let idle = conn.status == b'I'
            && conn.read_buf.is_empty()
            && self.replies.caught_up()
            && self.to_backend.is_empty()
            && self.client_scan.at_boundary()
            && self.backend_scan.at_boundary();
        if idle {
            self.cx.cancel.set(None);
            self.conn = None;
        }
    }
}

/// Writes as much of `buf` as the stream takes now, then flushes it.
fn poll_drain(
    stream: &mut Stream,
    buf: &mut BytesMut,
    needs_flush: &mut bool,
    cx: &mut Context<'_>,
) -> std::io::Result<()> {
    while !buf.is_empty() {
        match Pin::new(&mut *stream).poll_write(cx, buf) {
            Poll::Ready(Ok(0)) => return Err(std::io::ErrorKind::WriteZero.into()),
            Poll::Ready(Ok(n)) => {
                buf.advance(n);
                *needs_flush = true;
            }
            Poll::Ready(Err(e)) => return Err(e),
            Poll::Pending => return Ok(()),
        }
    }
    if *needs_flush {
        match Pin::new(&mut *stream).poll_flush(cx) {
            Poll::Ready(Ok(())) => *needs_flush = false,
            Poll::Ready(Err(e)) => return Err(e),
            Poll::Pending => {}
        }
    }
    Ok(())
}

fn reserve_for_read(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < READ_CHUNK / 4 {
        buf.reserve(READ_CHUNK);
    }
}

fn pass_bytes(from: &mut BytesMut, n: usize, action: &Action, to: &mut BytesMut) {
    if *action == Action::Forward {
        to.extend_from_slice(&from[..n]);
    }
    from.advance(n);
}

fn refusal_error(refusal: Refusal) -> PgError {
    let error = PgError::error(refusal.sqlstate, refusal.message);
    match refusal.hint {
        Some(hint) => error.with_hint(hint),
        None => error,
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

/// Tells the metrics and the privacy log about one reply delivered to the
/// client.
fn delivered(metrics: &SessionMetrics, log: Option<&StatementLog>, tag: u8, frame: &[u8]) {
    if tag == tag::READY_FOR_QUERY {
        metrics.ready();
    }
    let Some(log) = log else {
        return;
    };
    match tag {
        tag::READY_FOR_QUERY => log.ready(),
        tag::ERROR_RESPONSE => {
            let code = messages::error_code(frame).and_then(|c| std::str::from_utf8(c).ok());
            log.error(code);
        }
        tag::COMMAND_COMPLETE => log.command_complete(rows_from_command_complete(frame)),
        b'I' | b's' => log.execute_ended(),
        b'1' => log.parse_complete(),
        _ => {}
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

/// A message type no client may send after startup (PostgreSQL's words).
fn unknown_message(tag: u8) -> SessionError {
    SessionError::Client(PgError::fatal(
        "08P01",
        format!("invalid frontend message type {tag}"),
    ))
}

fn is_fatal(frame: &[u8]) -> bool {
    matches!(
        messages::error_field(frame, b'V'),
        Some(b"FATAL" | b"PANIC")
    )
}
