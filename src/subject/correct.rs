//! Corrections: a change to a subject's personal data is filed as pending
//! in the private `corrections` table and applied only when someone other
//! than the requester approves it, and only if the value did not change in
//! the meantime.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;
use tokio_postgres::{Client, Row};

use crate::policy::Policy;

use super::private::{self, ident, transaction};
use super::schema::{Column, Subjects, Table};
use super::{Action, ActionRecord, Outcome, SubjectError};

/// One requested change: `table.column` gets `value` (`None`: NULL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// The table.
    pub table: String,
    /// The column.
    pub column: String,
    /// The new value in PostgreSQL's text form; `None` for NULL.
    pub value: Option<String>,
}

/// An assignment that is not `table.column=value`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("\"{0}\" is not table.column=value")]
pub struct BadAssignment(String);

impl FromStr for Assignment {
    type Err = BadAssignment;

    /// Parses `table.column=value` (the value may be empty or contain `=`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadAssignment(s.to_string());
        let (target, value) = s.split_once('=').ok_or_else(bad)?;
        let (table, column) = target.trim().split_once('.').ok_or_else(bad)?;
        if table.is_empty() || column.is_empty() {
            return Err(bad());
        }
        Ok(Assignment {
            table: table.to_string(),
            column: column.to_string(),
            value: Some(value.to_string()),
        })
    }
}

impl fmt::Display for Assignment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.table, self.column)
    }
}

/// A correction request and its review.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Correction {
    /// Its id.
    pub id: i64,
    /// The subject key.
    pub customer: String,
    /// The table.
    pub table: String,
    /// The column.
    pub column: String,
    /// The value when the request was filed (text form).
    pub old_value: Option<String>,
    /// The requested value (text form).
    pub new_value: Option<String>,
    /// Who asked.
    pub requested_by: String,
    /// When (text form of a timestamptz).
    pub requested_at: String,
    /// `pending`, `approved` or `rejected`.
    pub status: String,
    /// Who reviewed it.
    pub reviewed_by: Option<String>,
    /// When it was reviewed.
    pub reviewed_at: Option<String>,
    /// Why it was rejected.
    pub reason: Option<String>,
}

const FIELDS: &str = "id, customer, table_name, column_name, old_value, new_value, requested_by, \
    requested_at::text, status, reviewed_by, reviewed_at::text, reason";

impl Correction {
    fn from_row(row: &Row) -> Correction {
        Correction {
            id: row.get(0),
            customer: row.get(1),
            table: row.get(2),
            column: row.get(3),
            old_value: row.get(4),
            new_value: row.get(5),
            requested_by: row.get(6),
            requested_at: row.get(7),
            status: row.get(8),
            reviewed_by: row.get(9),
            reviewed_at: row.get(10),
            reason: row.get(11),
        }
    }
}

/// Files `changes` to subject `customer_id`'s data for review. Each column
/// must be classified identity, personal or sensitive, must not be the
/// subject key, must be in a table holding exactly one row for the subject,
/// and the value must fit the column's type. Nothing is changed yet.
pub async fn correct(
    client: &Client,
    policy: &Policy,
    customer_id: &str,
    changes: &[Assignment],
    requested_by: &str,
) -> Result<Outcome<Vec<Correction>>, SubjectError> {
    private::ensure(client, policy).await?;
    let subjects = Subjects::load(client, policy).await?;
    let p = private::schema(policy);
    let (customer_id, filed) = transaction(client, async {
        let customer_id = subjects.require(client, customer_id, true).await?;
        let mut filed = Vec::new();
        for change in changes {
            let (table, column) = target(&subjects, &change.table, &change.column)?;
            let old = current_value(client, &subjects, table, column, &customer_id, false).await?;
            check_value(client, column, change).await?;
            let sql = format!(
                "INSERT INTO {p}.corrections (customer, table_name, column_name, old_value, \
                 new_value, requested_by) VALUES ($1, $2, $3, $4, $5, $6) RETURNING {FIELDS}"
            );
            let row = client
                .query_one(
                    &sql,
                    &[
                        &customer_id,
                        &table.name,
                        &column.name,
                        &old,
                        &change.value,
                        &requested_by,
                    ],
                )
                .await?;
            filed.push(Correction::from_row(&row));
        }
        Ok((customer_id, filed))
    })
    .await?;
    let record = ActionRecord {
        action: Action::Correct,
        customer_ref: Some(private::customer_ref(client, policy, &customer_id).await?),
        purpose: None,
        columns: changes.iter().map(ToString::to_string).collect(),
        actor: requested_by.to_string(),
        outcome: format!(
            "filed for review: {}",
            filed
                .iter()
                .map(|c| c.id.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    Ok(Outcome {
        value: filed,
        record,
    })
}

/// The pending corrections, oldest first, as `reviewer` sees them.
pub async fn review_list(
    client: &Client,
    policy: &Policy,
    reviewer: &str,
) -> Result<Outcome<Vec<Correction>>, SubjectError> {
    private::ensure(client, policy).await?;
    let sql = format!(
        "SELECT {FIELDS} FROM {}.corrections WHERE status = 'pending' ORDER BY id",
        private::schema(policy)
    );
    let value: Vec<Correction> = client
        .query(&sql, &[])
        .await?
        .iter()
        .map(Correction::from_row)
        .collect();
    let record = ActionRecord {
        action: Action::ReviewList,
        customer_ref: None,
        purpose: None,
        columns: vec![format!("{}.corrections", policy.settings().private_schema)],
        actor: reviewer.to_string(),
        outcome: format!("{} pending corrections listed", value.len()),
    };
    Ok(Outcome { value, record })
}

/// Every correction request about one subject (for its export).
pub(super) async fn for_customer(
    client: &Client,
    policy: &Policy,
    customer_id: &str,
) -> Result<Vec<Correction>, SubjectError> {
    let sql = format!(
        "SELECT {FIELDS} FROM {}.corrections WHERE customer = $1 ORDER BY id",
        private::schema(policy)
    );
    Ok(client
        .query(&sql, &[&customer_id])
        .await?
        .iter()
        .map(Correction::from_row)
        .collect())
}

/// Approves correction `id` and applies it, in one transaction. Refused if
/// `reviewer` asked for it, if it is not pending, or if the value is no
/// longer the one it had when the correction was filed.
pub async fn approve(
    client: &Client,
    policy: &Policy,
    id: i64,
    reviewer: &str,
) -> Result<Outcome<Correction>, SubjectError> {
    private::ensure(client, policy).await?;
    let subjects = Subjects::load(client, policy).await?;
    let done = transaction(client, async {
        let c = pending(client, policy, id, reviewer).await?;
        let (table, column) = target(&subjects, &c.table, &c.column)?;
        let now = current_value(client, &subjects, table, column, &c.customer, true).await?;
        if now != c.old_value {
            return Err(SubjectError::Stale(id));
        }
        let sql = format!(
            "UPDATE {} SET {} = {} WHERE {}",
            subjects.qualified(table),
            ident(&column.name),
            column.param(2),
            subjects.link_condition(table, 1)?
        );
        client.execute(&sql, &[&c.customer, &c.new_value]).await?;
        review(client, policy, id, "approved", reviewer, None).await
    })
    .await?;
    record(client, policy, Action::Approve, done, reviewer, "applied").await
}

/// Rejects correction `id`; the data is left unchanged.
pub async fn reject(
    client: &Client,
    policy: &Policy,
    id: i64,
    reviewer: &str,
    reason: &str,
) -> Result<Outcome<Correction>, SubjectError> {
    private::ensure(client, policy).await?;
    let done = transaction(client, async {
        pending(client, policy, id, reviewer).await?;
        review(client, policy, id, "rejected", reviewer, Some(reason)).await
    })
    .await?;
    record(client, policy, Action::Reject, done, reviewer, "rejected").await
}

async fn record(
    client: &Client,
    policy: &Policy,
    action: Action,
    c: Correction,
    actor: &str,
    outcome: &str,
) -> Result<Outcome<Correction>, SubjectError> {
    let record = ActionRecord {
        action,
        customer_ref: Some(private::customer_ref(client, policy, &c.customer).await?),
        purpose: None,
        columns: vec![format!("{}.{}", c.table, c.column)],
        actor: actor.to_string(),
        outcome: format!("correction {} {outcome}", c.id),
    };
    Ok(Outcome { value: c, record })
}

/// Locks correction `id` and checks it can be reviewed by `reviewer`.
async fn pending(
    client: &Client,
    policy: &Policy,
    id: i64,
    reviewer: &str,
) -> Result<Correction, SubjectError> {
    let sql = format!(
        "SELECT {FIELDS} FROM {}.corrections WHERE id = $1 FOR UPDATE",
        private::schema(policy)
    );
    let row = client
        .query_opt(&sql, &[&id])
        .await?
        .ok_or(SubjectError::NoCorrection(id))?;
    let c = Correction::from_row(&row);
    if c.status != "pending" {
        return Err(SubjectError::NotPending {
            id,
            status: c.status,
        });
    }
    if c.requested_by == reviewer {
        return Err(SubjectError::SameReviewer(id));
    }
    Ok(c)
}

async fn review(
    client: &Client,
    policy: &Policy,
    id: i64,
    status: &str,
    reviewer: &str,
    reason: Option<&str>,
) -> Result<Correction, SubjectError> {
    let sql = format!(
        "UPDATE {}.corrections SET status = $2, reviewed_by = $3, reviewed_at = now(), \
         reason = $4 WHERE id = $1 RETURNING {FIELDS}",
        private::schema(policy)
    );
    let row = client
        .query_one(&sql, &[&id, &status, &reviewer, &reason])
        .await?;
    Ok(Correction::from_row(&row))
}

/// The table and column a correction may change.
fn target<'a>(
    subjects: &'a Subjects,
    table: &str,
    column: &str,
) -> Result<(&'a Table, &'a Column), SubjectError> {
    let refuse = |reason: &str| SubjectError::Column {
        table: table.to_string(),
        column: column.to_string(),
        reason: reason.to_string(),
    };
    let t = subjects
        .table(table)
        .filter(|t| t.link.is_some())
        .ok_or_else(|| refuse("not a policy table holding data about the subject"))?;
    let c = t.column(column).ok_or_else(|| refuse("no such column"))?;
    if c.class.is_none() {
        return Err(refuse("the column is not classified in the policy"));
    }
    if !c.is_personal() {
        return Err(refuse("not personal data (classified non_personal)"));
    }
    if t.link.as_deref() == Some(column) {
        return Err(refuse("the subject key cannot be corrected"));
    }
    Ok((t, c))
}

/// The column's value (text form) in the subject's only row of `table`.
async fn current_value(
    client: &Client,
    subjects: &Subjects,
    table: &Table,
    column: &Column,
    customer_id: &str,
    lock: bool,
) -> Result<Option<String>, SubjectError> {
    let sql = format!(
        "SELECT {}::text FROM {} WHERE {}{}",
        ident(&column.name),
        subjects.qualified(table),
        subjects.link_condition(table, 1)?,
        if lock { " FOR UPDATE" } else { "" }
    );
    let rows = client.query(&sql, &[&customer_id]).await?;
    match rows.as_slice() {
        [row] => Ok(row.get(0)),
        _ => Err(SubjectError::Column {
            table: table.name.clone(),
            column: column.name.clone(),
            reason: format!(
                "the subject has {} rows in this table; only a single row can be corrected",
                rows.len()
            ),
        }),
    }
}

/// Fails unless the new value fits the column's type.
async fn check_value(
    client: &Client,
    column: &Column,
    change: &Assignment,
) -> Result<(), SubjectError> {
    if change.value.is_none() && column.not_null {
        return Err(SubjectError::Column {
            table: change.table.clone(),
            column: change.column.clone(),
            reason: "the column does not allow NULL".into(),
        });
    }
    let sql = format!("SELECT {}", column.param(1));
    client
        .query_one(&sql, &[&change.value])
        .await
        .map(|_| ())
        .map_err(|e| SubjectError::Column {
            table: change.table.clone(),
            column: change.column.clone(),
            reason: format!(
                "the value does not fit the column: {}",
                crate::views::db_message(&e)
            ),
        })
}
