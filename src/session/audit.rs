//! A session's side of the privacy log: remembers which statement each
//! backend reply belongs to and records one event per statement run,
//! prepared only, or refused.
//!
//! The relay reports Query, Parse, Bind, Execute and Sync in order as the
//! client sends them, and the replies that end them as the client gets them. Replies arrive in
//! the order of the requests, so a queue of pending requests is enough: an
//! ErrorResponse belongs to the first request still waiting for its reply,
//! and requests skipped after an error (up to Sync) are dropped unrecorded
//! at ReadyForQuery, because they did not run.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use crate::audit::{AuditEvent, AuditHandle, AuditUnavailable, AuditVerdict, SessionInfo};
use crate::protocol::frame::HEADER_LEN;
use crate::protocol::messages::split_cstr;

/// The privacy log of one session.
pub struct StatementLog {
    handle: AuditHandle,
    session: Arc<SessionInfo>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Prepared statement name ("" = unnamed) → its text and verdict.
    statements: HashMap<String, Prepared>,
    /// Portal name → the statement bound to it.
    portals: HashMap<String, Prepared>,
    /// Requests sent to the backend and not yet answered by ReadyForQuery.
    pending: VecDeque<Pending>,
}

#[derive(Clone)]
struct Prepared {
    sql: Arc<str>,
    verdict: AuditVerdict,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Query,
    Parse,
    Execute,
    Sync,
}

struct Pending {
    kind: Kind,
    /// Still waiting for the reply that ends it.
    open: bool,
    /// For a Parse: a Bind followed in its Sync segment.
    bound: bool,
    start: Instant,
    /// The event to record; None for refusals (already recorded) and Sync.
    event: Option<AuditEvent>,
    rows: Option<u64>,
    sqlstate: Option<String>,
}

impl Pending {
    fn ends_segment(&self) -> bool {
        matches!(self.kind, Kind::Query | Kind::Sync)
    }
}

/// What a client message that carries a statement is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// A simple-protocol Query (or a refused FunctionCall).
    Query,
    /// An extended-protocol Parse.
    Parse,
    /// An extended-protocol Execute.
    Execute,
}

impl StatementLog {
    /// The log of a session described by `session`.
    pub fn new(handle: AuditHandle, session: Arc<SessionInfo>) -> Self {
        StatementLog {
            handle,
            session,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a statement may run now (see [`AuditHandle::admit`]).
    pub fn admit(&self) -> Result<(), AuditUnavailable> {
        self.handle.admit()
    }

    /// A Query forwarded with `verdict`; recorded at its ReadyForQuery.
    pub fn query(&self, sql: &str, verdict: AuditVerdict) {
        let event = AuditEvent::statement(self.session.clone(), sql, verdict);
        self.state().push(Kind::Query, Some(event));
    }

    /// A Parse of statement `name` forwarded with `verdict`.
    pub fn parse(&self, name: &str, sql: &str, verdict: AuditVerdict) {
        let prepared = Prepared {
            sql: sql.into(),
            verdict: verdict.clone(),
        };
        let event = AuditEvent::statement(self.session.clone(), sql, verdict);
        let mut state = self.state();
        state.statements.insert(name.to_owned(), prepared);
        state.push(Kind::Parse, Some(event));
    }

    /// A statement refused with `reason` and `sqlstate`: recorded now; its
    /// stand-in's error is absorbed when it comes back. A refused Parse
    /// leaves no prepared statement `name`.
    pub fn refused(
        &self,
        request: Request,
        name: Option<&str>,
        sql: &str,
        reason: &str,
        sqlstate: &str,
    ) {
        let event = AuditEvent::statement(
            self.session.clone(),
            sql,
            AuditVerdict::Refused(reason.to_owned()),
        )
        .with_sqlstate(sqlstate);
        // With `required = true` a refusal that cannot be logged is still a refusal.
        let _ = self.handle.record(event);
        let mut state = self.state();
        if let Some(name) = name.filter(|_| request == Request::Parse) {
            state.statements.remove(name);
        }
        let kind = match request {
            Request::Query => Kind::Query,
            Request::Parse => Kind::Parse,
            Request::Execute => Kind::Execute,
        };
        state.push(kind, None);
    }

    /// A Bind: maps its portal to the statement it names and marks the
    /// Parses of the current segment as executed rather than only prepared.
    pub fn bind(&self, frame: &[u8]) {
        let Some((portal, rest)) = frame.get(HEADER_LEN..).and_then(split_cstr) else {
            return;
        };
        let Some((statement, _)) = split_cstr(rest) else {
            return;
        };
        let statement = String::from_utf8_lossy(statement);
        let portal = String::from_utf8_lossy(portal).into_owned();
        let mut state = self.state();
        let prepared = state
            .statements
            .get(statement.as_ref())
            .cloned()
            .unwrap_or_else(|| unknown_statement(&statement));
        state.portals.insert(portal, prepared);
        for pending in state.pending.iter_mut().rev() {
            if pending.ends_segment() {
                break;
            }
            pending.bound = true;
        }
    }

    /// The statement text bound to the portal an Execute `frame` names.
    pub fn portal_statement(&self, frame: &[u8]) -> String {
        let portal = portal_name(frame);
        let state = self.state();
        match state.portals.get(portal.as_ref()) {
            Some(prepared) => prepared.sql.to_string(),
            None => unknown_statement(&portal).sql.to_string(),
        }
    }

    /// An Execute of the portal named in `frame`.
    pub fn execute(&self, frame: &[u8]) {
        let portal = portal_name(frame);
        let mut state = self.state();
        let prepared = state
            .portals
            .get(portal.as_ref())
            .cloned()
            .unwrap_or_else(|| unknown_statement(&portal));
        let event = AuditEvent::statement(
            self.session.clone(),
            prepared.sql.as_ref(),
            prepared.verdict,
        );
        state.push(Kind::Execute, Some(event));
    }

    /// A Sync: the end of an extended-protocol segment.
    pub fn sync(&self) {
        self.state().push(Kind::Sync, None);
    }

    /// A ParseComplete.
    pub fn parse_complete(&self) {
        if let Some(p) = self.state().first_open(Kind::Parse) {
            p.open = false;
        }
    }

    /// A CommandComplete: adds to a Query's rows, or ends an Execute.
    pub fn command_complete(&self, rows: Option<u64>) {
        let finished = {
            let mut state = self.state();
            let Some(p) = state.first_open_of(&[Kind::Query, Kind::Execute]) else {
                return;
            };
            if let Some(n) = rows {
                p.rows = Some(p.rows.unwrap_or(0) + n);
            }
            (p.kind == Kind::Execute).then(|| p.finish())
        };
        self.emit(finished.flatten());
    }

    /// An EmptyQueryResponse or PortalSuspended: ends an Execute.
    pub fn execute_ended(&self) {
        let finished = self
            .state()
            .first_open_of(&[Kind::Query, Kind::Execute])
            .filter(|p| p.kind == Kind::Execute)
            .and_then(Pending::finish);
        self.emit(finished);
    }

    /// An ErrorResponse with `sqlstate`: ends a Parse or Execute; a Query
    /// keeps the first one.
    pub fn error(&self, sqlstate: Option<&str>) {
        let finished = {
            let mut state = self.state();
            let Some(p) = state.first_open_of(&[Kind::Query, Kind::Parse, Kind::Execute]) else {
                return;
            };
            if p.sqlstate.is_none() {
                p.sqlstate = sqlstate.map(str::to_owned);
            }
            (p.kind != Kind::Query).then(|| p.finish())
        };
        self.emit(finished.flatten());
    }

    /// A ReadyForQuery: records the segment's Query or its prepared-only
    /// Parses, and forgets the requests skipped after an error.
    pub fn ready(&self) {
        let mut finished = Vec::new();
        {
            let mut state = self.state();
            while let Some(mut p) = state.pending.pop_front() {
                let keep = match p.kind {
                    Kind::Query => true,
                    Kind::Parse => !p.open && !p.bound,
                    Kind::Execute | Kind::Sync => false,
                };
                let ends = p.ends_segment();
                if keep {
                    finished.extend(p.finish());
                }
                if ends {
                    break;
                }
            }
        }
        for event in finished {
            self.emit(Some(event));
        }
    }

    fn emit(&self, event: Option<AuditEvent>) {
        if let Some(event) = event {
            // Statements that ran are recorded even when the log fails;
            // `required` refuses the next ones through `admit`.
            let _ = self.handle.record(event);
        }
    }
}

impl State {
    fn push(&mut self, kind: Kind, event: Option<AuditEvent>) {
        self.pending.push_back(Pending {
            kind,
            open: kind != Kind::Sync,
            bound: false,
            start: Instant::now(),
            event,
            rows: None,
            sqlstate: None,
        });
    }

    fn first_open(&mut self, kind: Kind) -> Option<&mut Pending> {
        self.first_open_of(&[kind])
    }

    /// The first request of the backend's current segment still waiting
    /// for its reply, if it is one of `kinds`.
    fn first_open_of(&mut self, kinds: &[Kind]) -> Option<&mut Pending> {
        for p in self.pending.iter_mut() {
            if p.open {
                return kinds.contains(&p.kind).then_some(p);
            }
            if p.ends_segment() {
                return None;
            }
        }
        None
    }
}

impl Pending {
    /// Closes the request and hands out its event, completed.
    fn finish(&mut self) -> Option<AuditEvent> {
        self.open = false;
        let event = self.event.take()?;
        let event = event
            .with_rows(self.rows)
            .with_duration(self.start.elapsed());
        Some(match self.sqlstate.take() {
            Some(code) => event.with_sqlstate(code),
            None => event,
        })
    }
}

/// The portal named by an Execute message.
fn portal_name(frame: &[u8]) -> std::borrow::Cow<'_, str> {
    frame
        .get(HEADER_LEN..)
        .and_then(split_cstr)
        .map(|(name, _)| String::from_utf8_lossy(name))
        .unwrap_or_default()
}

/// A statement the log did not see prepared (e.g. by SQL `PREPARE`).
fn unknown_statement(name: &str) -> Prepared {
    Prepared {
        sql: format!("EXECUTE \"{}\"", name.replace('"', "\"\"")).into(),
        verdict: AuditVerdict::Forwarded,
    }
}
