//! What the data path hands to the audit log: one event per statement,
//! refused statement or failed login.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// The facts of one client session that every one of its records repeats.
/// Built once per session and shared by its events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionInfo {
    /// Identifies the session across its records (see [`new_session_id`]).
    pub session_id: String,
    /// The proxy user (for a failed login: the user name tried).
    pub user: String,
    /// The role of the user's view set.
    pub role: Option<String>,
    /// The view set the session reads through.
    pub view_set: Option<String>,
    /// The declared purpose, if any.
    pub purpose: Option<String>,
    /// The client's address.
    pub client_addr: Option<SocketAddr>,
    /// The client's `application_name` startup parameter.
    pub application_name: Option<String>,
}

/// A fresh random session id: 16 lowercase hex digits.
pub fn new_session_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// What an event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A statement (Query or Parse text), run or refused.
    Statement,
    /// A failed login.
    LoginFailed,
    /// A data-subject request (`pgveil subject ...`, `pgveil retention run`).
    Subject,
}

/// What a data-subject request did, as the privacy log records it. It
/// names the subject only by its keyed reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectAction {
    /// The request, e.g. `export`, `opt_out`, `erase`.
    pub action: String,
    /// Keyed reference of the data subject, when the request is about one.
    pub subject_ref: Option<String>,
    /// What happened, in a few words.
    pub outcome: String,
}

/// What the proxy did with the statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditVerdict {
    /// Sent to PostgreSQL unchanged.
    Forwarded,
    /// Sent to PostgreSQL with tables mapped to the view set.
    Rewritten,
    /// Not sent (or, for a login, not admitted); the reason shown to the user.
    Refused(String),
}

/// How a statement used a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    /// Only read.
    Read,
    /// Only written (INSERT, UPDATE, DELETE, MERGE, COPY FROM, TRUNCATE target).
    Write,
    /// Both.
    ReadWrite,
}

impl Access {
    /// The access of a table used in both ways.
    pub fn merge(self, other: Access) -> Access {
        if self == other {
            self
        } else {
            Access::ReadWrite
        }
    }
}

/// One column a statement read or wrote, with its classification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnAccess {
    /// Column name.
    pub column: String,
    /// Its classification in the policy, e.g. `personal`.
    pub classification: Option<String>,
}

/// One protected table a statement touched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableAccess {
    /// Schema-qualified base table, e.g. `public.customers`.
    pub table: String,
    /// Read, written or both.
    pub access: Access,
    /// Summary of the table's classification, e.g. `personal: email, phone`.
    pub classification: Option<String>,
    /// The columns used, when the caller knows them (empty otherwise).
    pub columns: Vec<ColumnAccess>,
}

/// One audit event. The SQL text is held raw and normalized by the writer,
/// off the data path; literal values never reach a sink.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    /// The session's facts.
    pub session: Arc<SessionInfo>,
    /// Statement or failed login.
    pub kind: EventKind,
    /// When the statement arrived (or the login failed).
    pub time: SystemTime,
    /// The statement text as the client sent it.
    pub sql: Option<String>,
    /// Tables known to the caller; the writer adds protected tables it finds
    /// by name in `sql`.
    pub tables: Vec<TableAccess>,
    /// What the proxy did.
    pub verdict: AuditVerdict,
    /// Rows returned or affected (see [`crate::audit::rows_from_command_tag`]).
    pub rows: Option<u64>,
    /// From arrival to completion.
    pub duration: Option<Duration>,
    /// SQLSTATE of the error the client received, if any.
    pub sqlstate: Option<String>,
    /// The data-subject request, for [`EventKind::Subject`].
    pub subject: Option<SubjectAction>,
}

impl AuditEvent {
    /// A statement that arrived now with this verdict.
    pub fn statement(
        session: Arc<SessionInfo>,
        sql: impl Into<String>,
        verdict: AuditVerdict,
    ) -> Self {
        AuditEvent {
            session,
            kind: EventKind::Statement,
            time: SystemTime::now(),
            sql: Some(sql.into()),
            tables: Vec::new(),
            verdict,
            rows: None,
            duration: None,
            sqlstate: None,
            subject: None,
        }
    }

    /// A data-subject request done now, touching `tables`; `verdict` is
    /// [`AuditVerdict::Refused`] with the error when it failed.
    pub fn subject(
        session: Arc<SessionInfo>,
        action: SubjectAction,
        tables: Vec<TableAccess>,
        verdict: AuditVerdict,
    ) -> Self {
        AuditEvent {
            session,
            kind: EventKind::Subject,
            time: SystemTime::now(),
            sql: None,
            tables,
            verdict,
            rows: None,
            duration: None,
            sqlstate: None,
            subject: Some(action),
        }
    }

    /// A login that failed now, with the reason and SQLSTATE sent to the client.
    pub fn login_failed(
        session: Arc<SessionInfo>,
        reason: impl Into<String>,
        sqlstate: &str,
    ) -> Self {
        AuditEvent {
            session,
            kind: EventKind::LoginFailed,
            time: SystemTime::now(),
            sql: None,
            tables: Vec::new(),
            verdict: AuditVerdict::Refused(reason.into()),
            rows: None,
            duration: None,
            sqlstate: Some(sqlstate.to_string()),
            subject: None,
        }
    }

    /// Sets the arrival time.
    pub fn at(mut self, time: SystemTime) -> Self {
        self.time = time;
        self
    }

    /// Sets the rows returned or affected.
    pub fn with_rows(mut self, rows: Option<u64>) -> Self {
        self.rows = rows;
        self
    }

    /// Sets the duration.
    pub fn with_duration(mut self, duration: Duration) -> Self {
        self.duration = Some(duration);
        self
    }

    /// Sets the SQLSTATE of the error the client received.
    pub fn with_sqlstate(mut self, sqlstate: impl Into<String>) -> Self {
        self.sqlstate = Some(sqlstate.into());
        self
    }

    /// Sets the tables (and columns) the caller knows were touched.
    pub fn with_tables(mut self, tables: Vec<TableAccess>) -> Self {
        self.tables = tables;
        self
    }
}
