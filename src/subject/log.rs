//! Data-subject requests in the privacy log: every action (and every
//! failed request) becomes one record of the same hash-chained log the
//! proxy writes, as `[audit]` in pgveil.toml configures it.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;

use crate::audit::{
    self, Access, AuditConfig, AuditError, AuditEvent, AuditHandle, AuditVerdict, ColumnAccess,
    SessionInfo, SubjectAction, TableAccess,
};
use crate::policy::Policy;

use super::request::Done;
use super::{Action, ActionRecord, SubjectError};

/// How long [`SubjectLog::finish`] waits for its records to be written.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// `application_name` of the records of command-line requests.
const APPLICATION: &str = "pgveil subject";

/// The privacy log of one command-line run (nothing when `[audit]` is not
/// configured).
pub struct SubjectLog {
    handle: Option<AuditHandle>,
    session_id: String,
    actor: String,
}

impl SubjectLog {
    /// Opens the log `config` describes, with `pool` for its table sink.
    /// Fails when a configured sink cannot be opened, so that no request
    /// runs without its record.
    pub async fn open(
        config: Option<AuditConfig>,
        pool: Option<Pool>,
        actor: &str,
    ) -> Result<SubjectLog, AuditError> {
        let handle = match config {
            Some(config) => Some(audit::start(config, pool).await?.0),
            None => None,
        };
        Ok(SubjectLog {
            handle,
            session_id: audit::new_session_id(),
            actor: actor.to_owned(),
        })
    }

    /// Records what `result` did (or why the request of `action` failed)
    /// and waits until every record is written.
    pub async fn finish(
        self,
        policy: &Policy,
        action: Action,
        purpose: Option<&str>,
        result: &Result<Done, SubjectError>,
    ) -> Result<(), AuditError> {
        let Some(handle) = &self.handle else {
            return Ok(());
        };
        let events: Vec<AuditEvent> = match result {
            Ok(done) => done
                .records
                .iter()
                .map(|r| self.event(policy, r, AuditVerdict::Forwarded))
                .collect(),
            Err(e) => vec![self.failure(action, purpose, e)],
        };
        for event in events {
            handle.record_waiting(event).await?;
        }
        tokio::time::timeout(WRITE_TIMEOUT, handle.shutdown())
            .await
            .map_err(|_| {
                AuditError::Config(format!(
                    "the records were not written within {} s",
                    WRITE_TIMEOUT.as_secs()
                ))
            })?
    }

    fn session(&self, purpose: Option<&str>) -> Arc<SessionInfo> {
        Arc::new(SessionInfo {
            session_id: self.session_id.clone(),
            user: self.actor.clone(),
            purpose: purpose.map(str::to_owned),
            application_name: Some(APPLICATION.to_owned()),
            ..SessionInfo::default()
        })
    }

    fn event(&self, policy: &Policy, record: &ActionRecord, verdict: AuditVerdict) -> AuditEvent {
        let action = SubjectAction {
            action: action_name(record.action),
            subject_ref: record.customer_ref.clone(),
            outcome: record.outcome.clone(),
        };
        let session = self.session(record.purpose.as_deref());
        AuditEvent::subject(session, action, tables(policy, record), verdict)
    }

    fn failure(&self, action: Action, purpose: Option<&str>, error: &SubjectError) -> AuditEvent {
        let action = SubjectAction {
            action: action_name(action),
            subject_ref: None,
            outcome: "failed".to_owned(),
        };
        let verdict = AuditVerdict::Refused(error.log_reason());
        AuditEvent::subject(self.session(purpose), action, Vec::new(), verdict)
    }
}

/// The snake_case name of an action, as in the JSON output.
fn action_name(action: Action) -> String {
    match serde_json::to_value(action) {
        Ok(serde_json::Value::String(name)) => name,
        _ => format!("{action:?}"),
    }
}

/// The tables (and columns) an action concerned, with their classification.
fn tables(policy: &Policy, record: &ActionRecord) -> Vec<TableAccess> {
    let access = match record.action {
        Action::Export | Action::ReviewList | Action::Correct | Action::Reject => Access::Read,
        _ => Access::Write,
    };
    match record.action {
        Action::Correct | Action::Approve | Action::Reject => record
            .columns
            .iter()
            .filter_map(|target| target.split_once('.'))
            .map(|(table, column)| named_columns(policy, table, &[column], access))
            .collect(),
        Action::OptOut | Action::OptIn => consent_target(policy, record.purpose.as_deref())
            .map(|(table, column)| named_columns(policy, &table, &[&column], access))
            .into_iter()
            .collect(),
        _ => record
            .columns
            .iter()
            .map(|table| whole_table(policy, table, access))
            .collect(),
    }
}

/// `table` with the policy's classification of `columns`.
fn named_columns(policy: &Policy, table: &str, columns: &[&str], access: Access) -> TableAccess {
    let columns: Vec<ColumnAccess> = columns
        .iter()
        .map(|column| ColumnAccess {
            column: (*column).to_owned(),
            classification: policy
                .column_def(table, column)
                .map(|(_, def, _)| def.class.name().to_owned()),
        })
        .collect();
    let classes: BTreeSet<String> = columns
        .iter()
        .map(|c| {
            c.classification
                .clone()
                .unwrap_or_else(|| "unclassified".into())
        })
        .collect();
    TableAccess {
        table: qualified(policy, table),
        access,
        classification: joined(classes),
        columns,
    }
}

/// A whole table: every class the policy gives its columns.
fn whole_table(policy: &Policy, table: &str, access: Access) -> TableAccess {
    let classes: BTreeSet<String> = policy
        .tables()
        .get(table)
        .map(|t| {
            t.get()
                .columns
                .values()
                .map(|c| c.0.class.name().to_owned())
                .collect()
        })
        .unwrap_or_default();
    TableAccess {
        table: qualified(policy, table),
        access,
        classification: joined(classes),
        columns: Vec::new(),
    }
}

fn joined(classes: BTreeSet<String>) -> Option<String> {
    (!classes.is_empty()).then(|| classes.into_iter().collect::<Vec<_>>().join(", "))
}

/// `schema.table` for a policy table; names that are already qualified
/// (pgveil's private tables) stay as they are.
fn qualified(policy: &Policy, table: &str) -> String {
    if table.contains('.') {
        table.to_owned()
    } else {
        format!("{}.{table}", policy.settings().base_schema)
    }
}

/// Where a purpose's consent is written: its column, or the granted
/// column of the consents table.
fn consent_target(policy: &Policy, purpose: Option<&str>) -> Option<(String, String)> {
    let column = purpose
        .and_then(|p| policy.purpose(p))
        .and_then(|p| p.column);
    match column {
        Some(column) => column
            .split_once('.')
            .map(|(t, c)| (t.to_owned(), c.to_owned())),
        None => policy
            .consent()
            .map(|c| (c.table.clone(), c.granted_column.clone())),
    }
}
