//! One record line of the log: the event, normalized, with its link in
//! the hash chain. Field order is fixed; the line is compact JSON.

use std::time::SystemTime;

use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::catalog::TableCatalog;
use super::chain::Link;
use super::event::{AuditEvent, AuditVerdict, EventKind, TableAccess};
use super::normalize::{analyse, Normalized};

#[derive(Serialize)]
struct Record<'a> {
    seq: u64,
    prev_hash: &'a str,
    time: String,
    event: &'static str,
    session_id: &'a str,
    user: &'a str,
    role: Option<&'a str>,
    view_set: Option<&'a str>,
    purpose: Option<&'a str>,
    client_addr: Option<String>,
    application_name: Option<&'a str>,
    statement: Option<String>,
    tables: Vec<TableAccess>,
    verdict: &'static str,
    reason: Option<&'a str>,
    rows: Option<u64>,
    duration_us: Option<u64>,
    sqlstate: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    action: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject_ref: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    outcome: Option<&'a str>,
}

/// The record line of `event` following `prev` (no trailing newline).
pub fn render(event: &AuditEvent, catalog: &TableCatalog, prev: &Link) -> String {
    let s = &*event.session;
    let normalized = event
        .sql
        .as_deref()
        .map(|sql| analyse(sql, catalog, s.view_set.as_deref()));
    let (statement, tables) = match normalized {
        Some(Normalized { text, tables }) => (Some(text), merge_tables(&event.tables, tables)),
        None => (None, event.tables.clone()),
    };
    let (verdict, reason) = verdict(event);
    let subject = event.subject.as_ref();
    let record = Record {
        seq: prev.seq + 1,
        prev_hash: &prev.hash,
        time: rfc3339(event.time),
        event: match event.kind {
            EventKind::Statement => "statement",
            EventKind::LoginFailed => "login",
            EventKind::Subject => "subject",
        },
        session_id: &s.session_id,
        user: &s.user,
        role: s.role.as_deref(),
        view_set: s.view_set.as_deref(),
        purpose: s.purpose.as_deref(),
        client_addr: s.client_addr.map(|a| a.to_string()),
        application_name: s.application_name.as_deref(),
        statement,
        tables,
        verdict,
        reason,
        rows: event.rows,
        duration_us: event
            .duration
            .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
        sqlstate: event.sqlstate.as_deref(),
        action: subject.map(|a| a.action.as_str()),
        subject_ref: subject.and_then(|a| a.subject_ref.as_deref()),
        outcome: subject.map(|a| a.outcome.as_str()),
    };
    // Serializing this struct of strings and numbers cannot fail.
    serde_json::to_string(&record).unwrap_or_default()
}

/// The record's verdict and reason: `forwarded`, `rewritten` or `refused`
/// for statements, `login_failed` for logins, `done` or `failed` for
/// data-subject requests.
fn verdict(event: &AuditEvent) -> (&'static str, Option<&str>) {
    let reason = match &event.verdict {
        AuditVerdict::Refused(r) => Some(r.as_str()),
        _ => None,
    };
    let name = match (event.kind, &event.verdict) {
        (EventKind::LoginFailed, _) => "login_failed",
        (EventKind::Subject, AuditVerdict::Refused(_)) => "failed",
        (EventKind::Subject, _) => "done",
        (_, AuditVerdict::Forwarded) => "forwarded",
        (_, AuditVerdict::Rewritten) => "rewritten",
        (_, AuditVerdict::Refused(_)) => "refused",
    };
    (name, reason)
}

/// The caller's tables first (they may list columns), then the ones found
/// by name that the caller did not list.
fn merge_tables(known: &[TableAccess], found: Vec<TableAccess>) -> Vec<TableAccess> {
    let mut tables = known.to_vec();
    for t in found {
        if !tables.iter().any(|k| k.table == t.table) {
            tables.push(t);
        }
    }
    tables
}

fn rfc3339(time: SystemTime) -> String {
    OffsetDateTime::from(time)
        .format(&Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::audit::event::SessionInfo;

    #[test]
    fn records_carry_the_link_and_no_literals() {
        let session = Arc::new(SessionInfo {
            session_id: "s1".into(),
            user: "alice".into(),
            client_addr: Some("127.0.0.1:5000".parse().unwrap()),
            ..SessionInfo::default()
        });
        let event = AuditEvent::statement(session, "select 'x@y.z'", AuditVerdict::Rewritten)
            .with_rows(Some(1));
        let line = render(&event, &TableCatalog::default(), &Link::genesis());
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["seq"], 1);
        assert_eq!(v["prev_hash"], crate::audit::chain::GENESIS);
        assert_eq!(v["statement"], "select ?");
        assert_eq!(v["verdict"], "rewritten");
        assert_eq!(v["client_addr"], "127.0.0.1:5000");
        assert_eq!(v["rows"], 1);
        assert!(v["time"].as_str().unwrap().ends_with('Z'));
        assert!(!line.contains("x@y.z"));
        assert!(
            v.get("action").is_none(),
            "statement records have no action"
        );
    }

    #[test]
    fn subject_records_carry_the_action() {
        let session = Arc::new(SessionInfo {
            session_id: "cli".into(),
            user: "olivia".into(),
            ..SessionInfo::default()
        });
        let action = crate::audit::SubjectAction {
            action: "erase".into(),
            subject_ref: Some("ab12".into()),
            outcome: "erased; destruction record 7".into(),
        };
        let done = AuditEvent::subject(
            session.clone(),
            action.clone(),
            Vec::new(),
            AuditVerdict::Forwarded,
        );
        let v: serde_json::Value =
            serde_json::from_str(&render(&done, &TableCatalog::default(), &Link::genesis()))
                .unwrap();
        assert_eq!(v["event"], "subject");
        assert_eq!(v["verdict"], "done");
        assert_eq!(v["action"], "erase");
        assert_eq!(v["subject_ref"], "ab12");
        assert_eq!(v["outcome"], "erased; destruction record 7");
        let failed = AuditEvent::subject(
            session,
            action,
            Vec::new(),
            AuditVerdict::Refused("no such subject".into()),
        );
        let v: serde_json::Value =
            serde_json::from_str(&render(&failed, &TableCatalog::default(), &Link::genesis()))
                .unwrap();
        assert_eq!(v["verdict"], "failed");
        assert_eq!(v["reason"], "no such subject");
    }
}
