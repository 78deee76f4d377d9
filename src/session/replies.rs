//! The replies the attached backend connection owes, in order: one entry
//! per request sent to it, plus the answers pgveil gives itself.
//!
//! PostgreSQL answers requests strictly in order, so a queue is enough to
//! know what each backend message belongs to:
//! - whether to forward it, drop it (replies to pgveil's own requests:
//!   settings replayed on a pooled connection, statements prepared again)
//!   or replace it (the error of a refused statement's stand-in);
//! - when the connection is caught up (nothing owed), so that transaction
//!   pooling may hand it back;
//! - where to put answers pgveil gives itself ([`Expect::Synthetic`], e.g.
//!   ParseComplete for a statement the connection had already prepared),
//!   so that they reach the client in the order PostgreSQL would send them.
//!
//! After an error in the extended protocol PostgreSQL skips everything up
//! to the next Sync; the queue drops those entries too, and pgveil's own
//! answers among them are never sent. During COPY FROM, PostgreSQL ignores
//! Sync, and so does the queue.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::statements::Body;
use crate::protocol::frame::HEADER_LEN;
use crate::protocol::messages::PgError;

const MARKER: &[u8] = b"pgveil_refused_";

/// What a request makes the backend send back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// ParseComplete, BindComplete or CloseComplete.
    Complete,
    /// ParameterDescription, then RowDescription or NoData.
    Describe,
    /// RowDescription (passed on) or NoData (dropped): the Describe of the
    /// portal of a Query pgveil runs as a prepared statement.
    Rows,
    /// Rows or a COPY, then CommandComplete, EmptyQueryResponse or PortalSuspended.
    Execute,
    /// ReadyForQuery.
    Sync,
    /// Anything, up to and including ReadyForQuery.
    Query,
    /// Bytes pgveil sends the client itself when the entry reaches the front.
    Synthetic(Bytes),
    /// The client ended a COPY before the backend's CopyInResponse arrived.
    CopyEnd,
}

/// What to do when an entry ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Then {
    /// Nothing.
    Nothing,
    /// A Parse creating this statement on the connection: if it fails, the
    /// connection does not have the statement.
    Prepared(Arc<Body>),
    /// A Query of settings statements (these texts): if it succeeds and
    /// leaves no transaction open, the client's session carries them.
    Carry(Vec<String>),
}

/// One request awaiting its replies.
#[derive(Debug)]
pub struct Entry {
    /// What it makes the backend send.
    pub expect: Expect,
    /// pgveil's own request: its replies are dropped (errors of a Parse
    /// excepted, which stand for the client's Bind failing).
    pub internal: bool,
    /// A refused statement's stand-in: its error becomes this one.
    pub refusal: Option<PgError>,
    /// What its end means to the session.
    pub then: Then,
    failed: bool,
}

impl Entry {
    /// A client request.
    pub fn client(expect: Expect) -> Self {
        Entry {
            expect,
            internal: false,
            refusal: None,
            then: Then::Nothing,
            failed: false,
        }
    }

    /// One of pgveil's own requests.
    pub fn internal(expect: Expect) -> Self {
        Entry {
            internal: true,
            ..Entry::client(expect)
        }
    }

    /// With an action at its end.
    pub fn then(mut self, then: Then) -> Self {
        self.then = then;
        self
    }

    /// The stand-in of a refused statement.
    pub fn refused(expect: Expect, error: PgError) -> Self {
        Entry {
            refusal: Some(error),
            ..Entry::client(expect)
        }
    }
}

/// What to do with one backend message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send it to the client as it is.
    Forward,
    /// Drop it.
    Swallow,
    /// Send this error instead.
    Replace(PgError),
}

/// What the session must do after a backend message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// ReadyForQuery with this transaction status.
    Ready(u8),
    /// The connection does not have this statement after all.
    ForgetPrepared(Arc<Body>),
    /// The client's session now carries these settings statements.
    Carry(Vec<String>),
}

/// The queue of replies owed by the attached connection.
#[derive(Debug)]
pub struct Replies {
    entries: VecDeque<Entry>,
    in_copy_in: bool,
    nonce: u64,
    next_refusal: u64,
}

impl Default for Replies {
    fn default() -> Self {
        Replies {
            entries: VecDeque::new(),
            in_copy_in: false,
            nonce: rand::random(),
            next_refusal: 0,
        }
    }
}

impl Replies {
    /// True when the connection owes nothing and no COPY is in progress.
    pub fn caught_up(&self) -> bool {
        self.entries.is_empty() && !self.in_copy_in
    }

    /// Adds a request sent (or an answer of pgveil's own) at the end.
    pub fn push(&mut self, entry: Entry) {
        self.entries.push_back(entry);
    }

    /// A statement text that fails to parse on the backend with an error
    /// naming this session's marker; used in place of a refused statement.
    pub fn stand_in(&mut self) -> String {
        self.next_refusal += 1;
        format!(
            "{}{:016x}_{}",
            "pgveil_refused_", self.nonce, self.next_refusal
        )
    }

    /// A Sync from the client: whether it is owed a ReadyForQuery (not
    /// during COPY FROM, when PostgreSQL ignores it).
    pub fn client_sync(&mut self) -> bool {
        if self.in_copy_in {
            return false;
        }
        self.push(Entry::client(Expect::Sync));
        true
    }

    /// A CopyDone or CopyFail from the client.
    pub fn client_copy_end(&mut self) {
        if self.in_copy_in {
            self.in_copy_in = false;
        } else {
            self.push(Entry::client(Expect::CopyEnd));
        }
    }

    /// Appends pgveil's own answers that are now at the front.
    pub fn drain_synthetic(&mut self, out: &mut BytesMut, mut sent: impl FnMut(&[u8])) {
        loop {
            match self.entries.front().map(|e| &e.expect) {
                Some(Expect::Synthetic(bytes)) => {
                    out.extend_from_slice(bytes);
                    sent(bytes);
                }
                Some(Expect::CopyEnd) => {}
                _ => return,
            }
            self.entries.pop_front();
        }
    }

    /// What to do with a backend message passed through in pieces (rows,
    /// COPY data, notices): dropped while it answers pgveil's own Query.
    pub fn passed(&self, tag: u8) -> Action {
        match self.entries.front() {
            Some(e) if e.internal && e.expect == Expect::Query && tag != b'A' => Action::Swallow,
            _ => Action::Forward,
        }
    }

    /// What to do with a whole backend message, and what it means.
    pub fn on_message(&mut self, tag: u8, frame: &[u8], outcomes: &mut Vec<Outcome>) -> Action {
        let Some(front) = self.entries.front() else {
            return Action::Forward;
        };
        let internal = front.internal;
        let quiet = |internal: bool| match internal {
            true => Action::Swallow,
            false => Action::Forward,
        };
        match (tag, &front.expect) {
            (b'E', _) => self.on_error(frame, outcomes),
            (b'Z', _) => self.on_ready(frame, outcomes),
            (b'T', Expect::Rows) => {
                self.entries.pop_front();
                Action::Forward
            }
            (b'n', Expect::Rows) => {
                self.entries.pop_front();
                Action::Swallow
            }
            (b'1' | b'2' | b'3', Expect::Complete)
            | (b'T' | b'n', Expect::Describe)
            | (b'C' | b'I' | b's', Expect::Execute) => {
                self.entries.pop_front();
                quiet(internal)
            }
            (b'G', _) => {
                self.copy_in_started();
                quiet(internal)
            }
            (b'S' | b'N', _) => quiet(internal && front.expect == Expect::Query),
            _ => quiet(internal && front.expect == Expect::Query),
        }
    }

    fn on_ready(&mut self, frame: &[u8], outcomes: &mut Vec<Outcome>) -> Action {
        let status = frame.get(HEADER_LEN).copied().unwrap_or(b'I');
        outcomes.push(Outcome::Ready(status));
        let Some(entry) = self.entries.pop_front() else {
            return Action::Forward;
        };
        if let Then::Carry(texts) = entry.then {
            if !entry.failed && status == b'I' {
                outcomes.push(Outcome::Carry(texts));
            }
        }
        match entry.internal {
            true => Action::Swallow,
            false => Action::Forward,
        }
    }

    fn on_error(&mut self, frame: &[u8], outcomes: &mut Vec<Outcome>) -> Action {
        let marked = self.carries_marker(frame);
        let Some(front) = self.entries.front_mut() else {
            return Action::Forward;
        };
        let action = match (&front.refusal, front.internal) {
            (Some(refusal), _) if marked => Action::Replace(refusal.clone()),
            (_, true) if front.expect == Expect::Query => Action::Swallow,
            _ => Action::Forward,
        };
        self.in_copy_in = false;
        match front.expect {
            Expect::Query | Expect::Sync => front.failed = true,
            _ => self.skip_to_sync(outcomes),
        }
        action
    }

    /// Drops the failed request and those PostgreSQL skips up to Sync.
    fn skip_to_sync(&mut self, outcomes: &mut Vec<Outcome>) {
        while let Some(entry) = self.entries.front() {
            if matches!(entry.expect, Expect::Sync | Expect::Query) {
                return;
            }
            if let Some(Entry {
                then: Then::Prepared(body),
                ..
            }) = self.entries.pop_front()
            {
                outcomes.push(Outcome::ForgetPrepared(body));
            }
        }
    }

    /// CopyInResponse: Syncs the client sent before ending the COPY are
    /// ignored by PostgreSQL.
    fn copy_in_started(&mut self) {
        let mut i = 1;
        while i < self.entries.len() {
            match self.entries[i].expect {
                Expect::Sync => {
                    self.entries.remove(i);
                }
                Expect::CopyEnd => {
                    self.entries.remove(i);
                    return;
                }
                _ => i += 1,
            }
        }
        self.in_copy_in = true;
    }

    fn carries_marker(&self, frame: &[u8]) -> bool {
        let Some(at) = frame.windows(MARKER.len()).position(|w| w == MARKER) else {
            return false;
        };
        let token = &frame[at + MARKER.len()..];
        let nonce = token
            .get(..16)
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u64::from_str_radix(hex, 16).ok());
        nonce == Some(self.nonce)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::messages;

    fn message(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    fn ready(status: u8) -> Vec<u8> {
        message(b'Z', &[status])
    }

    fn error(text: &str) -> Vec<u8> {
        let mut out = BytesMut::new();
        PgError::error("42601", text).encode(&mut out);
        out.to_vec()
    }

    fn feed(r: &mut Replies, frame: &[u8]) -> (Action, Vec<Outcome>) {
        let mut outcomes = Vec::new();
        let action = r.on_message(frame[0], frame, &mut outcomes);
        (action, outcomes)
    }

    fn body(sql: &str) -> Arc<Body> {
        Arc::new(Body {
            sql: sql.into(),
            types: vec![],
        })
    }

    #[test]
    fn extended_round_trip_then_caught_up() {
        let mut r = Replies::default();
        for e in [Expect::Complete, Expect::Complete, Expect::Execute] {
            r.push(Entry::client(e));
        }
        assert!(r.client_sync());
        for tag in [b'1', b'2', b'D', b'C'] {
            assert_eq!(feed(&mut r, &message(tag, b"x\0")).0, Action::Forward);
        }
        assert!(!r.caught_up());
        assert_eq!(
            feed(&mut r, &ready(b'I')),
            (Action::Forward, vec![Outcome::Ready(b'I')])
        );
        assert!(r.caught_up());
    }

    #[test]
    fn internal_replies_are_swallowed_and_synthetic_ones_sent_in_order() {
        let mut r = Replies::default();
        r.push(Entry::internal(Expect::Query));
        r.push(Entry::internal(Expect::Complete));
        r.push(Entry::client(Expect::Complete));
        let mut parse_complete = BytesMut::new();
        parse_complete.extend_from_slice(&message(b'3', b""));
        r.push(Entry::client(Expect::Synthetic(parse_complete.freeze())));
        r.client_sync();
        for tag in [b'T', b'D', b'C', b'S'] {
            assert_eq!(r.passed(tag), Action::Swallow);
            assert_eq!(feed(&mut r, &message(tag, b"x\0")).0, Action::Swallow);
        }
        assert_eq!(feed(&mut r, &ready(b'I')).0, Action::Swallow);
        assert_eq!(feed(&mut r, &message(b'1', b"")).0, Action::Swallow);
        assert_eq!(feed(&mut r, &message(b'2', b"")).0, Action::Forward);
        let mut out = BytesMut::new();
        let mut sent = 0;
        r.drain_synthetic(&mut out, |_| sent += 1);
        assert_eq!((&out[..], sent), (&message(b'3', b"")[..], 1));
        assert_eq!(feed(&mut r, &ready(b'I')).0, Action::Forward);
        assert!(r.caught_up());
    }

    #[test]
    fn an_error_skips_to_sync_dropping_synthetic_answers() {
        let mut r = Replies::default();
        r.push(Entry::client(Expect::Complete)); // Bind that fails
        r.push(Entry::internal(Expect::Complete).then(Then::Prepared(body("select 1"))));
        r.push(Entry::client(Expect::Synthetic(Bytes::from_static(
            b"never",
        ))));
        r.push(Entry::client(Expect::Execute));
        r.client_sync();
        let (action, outcomes) = feed(&mut r, &error("boom"));
        assert_eq!(action, Action::Forward);
        assert_eq!(outcomes, vec![Outcome::ForgetPrepared(body("select 1"))]);
        let mut out = BytesMut::new();
        r.drain_synthetic(&mut out, |_| {});
        assert!(out.is_empty());
        assert_eq!(feed(&mut r, &ready(b'I')).0, Action::Forward);
        assert!(r.caught_up());
    }

    #[test]
    fn a_stand_in_error_becomes_the_refusal() {
        let mut r = Replies::default();
        let stand_in = r.stand_in();
        let refusal = PgError::error("42501", "pgveil: no");
        r.push(Entry::refused(Expect::Query, refusal.clone()));
        let backend_error = error(&format!("syntax error at or near \"{stand_in}\""));
        assert_eq!(feed(&mut r, &backend_error).0, Action::Replace(refusal));
        // another session's marker is not ours
        let mut other = Replies::default();
        other.push(Entry::refused(Expect::Query, PgError::error("42501", "x")));
        assert_eq!(feed(&mut other, &backend_error).0, Action::Forward);
    }

    #[test]
    fn settings_are_carried_only_when_the_query_succeeds_outside_a_transaction() {
        let carry = || Entry::client(Expect::Query).then(Then::Carry(vec!["set a = 1".into()]));
        let mut r = Replies::default();
        r.push(carry());
        let (_, outcomes) = feed(&mut r, &ready(b'I'));
        assert_eq!(
            outcomes,
            vec![
                Outcome::Ready(b'I'),
                Outcome::Carry(vec!["set a = 1".into()])
            ]
        );
        r.push(carry());
        feed(&mut r, &error("bad"));
        assert_eq!(feed(&mut r, &ready(b'I')).1, vec![Outcome::Ready(b'I')]);
        r.push(carry());
        assert_eq!(feed(&mut r, &ready(b'T')).1, vec![Outcome::Ready(b'T')]);
    }

    #[test]
    fn syncs_during_copy_in_are_not_owed_a_reply() {
        // psycopg: Parse, Bind, Describe, Execute, Sync; CopyData...; CopyDone; Sync
        let mut r = Replies::default();
        for e in [
            Expect::Complete,
            Expect::Complete,
            Expect::Describe,
            Expect::Execute,
        ] {
            r.push(Entry::client(e));
        }
        r.client_sync();
        for tag in [b'1', b'2', b'n'] {
            feed(&mut r, &message(tag, b""));
        }
        feed(&mut r, &message(b'G', b"\0\0\0"));
        assert!(!r.client_sync(), "ignored during COPY FROM");
        r.client_copy_end();
        assert!(r.client_sync());
        feed(&mut r, &message(b'C', b"COPY 3\0"));
        assert_eq!(feed(&mut r, &ready(b'I')).1, vec![Outcome::Ready(b'I')]);
        assert!(r.caught_up());
    }

    #[test]
    fn copy_ended_before_copy_in_response_arrives() {
        let mut r = Replies::default();
        r.push(Entry::client(Expect::Execute));
        r.client_sync();
        r.client_copy_end();
        r.client_sync();
        feed(&mut r, &message(b'G', b"\0\0\0"));
        feed(&mut r, &message(b'C', b"COPY 1\0"));
        feed(&mut r, &ready(b'I'));
        assert!(r.caught_up());
    }

    #[test]
    fn a_parse_complete_frame_is_what_messages_build() {
        let mut out = BytesMut::new();
        messages::parse_complete(&mut out);
        assert_eq!(&out[..], &message(b'1', b"")[..]);
    }
}
