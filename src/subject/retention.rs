//! Retention: rows older than a table's `retention` rule are erased. On the
//! subject table each expired subject is erased by the `erase` rules (one
//! transaction and one destruction record per subject); on other tables
//! the expired rows are deleted (one destruction record per table).

use serde::Serialize;
use tokio_postgres::Client;

use crate::policy::{EraseRule, Policy, RetentionDef};
use crate::views::TypeCategory;

use super::erase::{self, Reason, TableErasure};
use super::private::{self, ident, transaction};
use super::schema::{Subjects, Table};
use super::{Action, ActionRecord, SubjectError};

/// Rows affected in one table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RetentionCount {
    /// The table.
    pub table: String,
    /// Deleted or anonymized.
    pub action: EraseRule,
    /// Rows (to be) affected.
    pub rows: u64,
}

/// What a retention run did, or would do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RetentionReport {
    /// Nothing was changed.
    pub dry_run: bool,
    /// Subjects (to be) erased.
    pub subjects: u64,
    /// Rows per table.
    pub tables: Vec<RetentionCount>,
    /// Records for the privacy log: one per erasure, or one summary of a
    /// dry run.
    pub records: Vec<ActionRecord>,
}

impl RetentionReport {
    fn add(&mut self, table: &str, action: EraseRule, rows: u64) {
        match self
            .tables
            .iter_mut()
            .find(|c| c.table == table && c.action == action)
        {
            Some(count) => count.rows += rows,
            None => self.tables.push(RetentionCount {
                table: table.to_string(),
                action,
                rows,
            }),
        }
    }
}

/// Applies every retention rule of the policy; with `dry_run` only counts.
pub async fn retention_run(
    client: &Client,
    policy: &Policy,
    dry_run: bool,
    actor: &str,
) -> Result<RetentionReport, SubjectError> {
    private::ensure(client, policy).await?;
    let subjects = Subjects::load(client, policy).await?;
    let mut report = RetentionReport {
        dry_run,
        subjects: 0,
        tables: Vec::new(),
        records: Vec::new(),
    };
    if let Some(subject) = subjects.subject_table() {
        if let Some(rule) = &subject.retention {
            expire_subjects(client, policy, &subjects, subject, rule, actor, &mut report).await?;
        }
    }
    for table in &subjects.tables {
        if let (Some(rule), false) = (&table.retention, table.name == subjects.table) {
            expire_rows(client, policy, &subjects, table, rule, actor, &mut report).await?;
        }
    }
    if dry_run {
        report.records.push(dry_run_record(&report, actor));
    }
    Ok(report)
}

/// The privacy-log record of a dry run: how much would be erased (it
/// touches no table, so it names none).
fn dry_run_record(report: &RetentionReport, actor: &str) -> ActionRecord {
    let rows: u64 = report.tables.iter().map(|t| t.rows).sum();
    ActionRecord {
        action: Action::Retention,
        customer_ref: None,
        purpose: None,
        columns: Vec::new(),
        actor: actor.to_string(),
        outcome: format!(
            "dry run: {} subjects and {rows} rows would be erased",
            report.subjects
        ),
    }
}

/// `column < now() - interval`, checked against the catalog.
fn expired(table: &Table, rule: &RetentionDef) -> Result<String, SubjectError> {
    let interval = rule.interval().ok_or_else(|| {
        SubjectError::Rule(format!(
            "tables.{}.retention: after = \"{}\" is not an age",
            table.name, rule.after
        ))
    })?;
    match table.column(&rule.column).map(|c| c.category) {
        Some(TypeCategory::Date | TypeCategory::Timestamp) => Ok(format!(
            "{} < now() - interval '{interval}'",
            ident(&rule.column)
        )),
        _ => Err(SubjectError::Rule(format!(
            "tables.{}.retention: {} is not a date or timestamp column of the table",
            table.name, rule.column
        ))),
    }
}

fn rule_text(table: &Table, rule: &RetentionDef) -> String {
    format!(
        "retention: {}.{} older than {}",
        table.name, rule.column, rule.after
    )
}

async fn expire_subjects(
    client: &Client,
    policy: &Policy,
    subjects: &Subjects,
    subject: &Table,
    rule: &RetentionDef,
    actor: &str,
    report: &mut RetentionReport,
) -> Result<(), SubjectError> {
    let rules = erase::rules(subjects)?;
    let key = ident(subject.link.as_deref().unwrap_or_default());
    let sql = format!(
        "SELECT {key}::text FROM {} WHERE {} AND {key}::text NOT IN \
         (SELECT key FROM {}.anonymized_subjects) ORDER BY 1",
        subjects.qualified(subject),
        expired(subject, rule)?,
        private::schema(policy)
    );
    let keys: Vec<String> = client
        .query(&sql, &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    report.subjects = keys.len() as u64;
    if report.dry_run {
        for (table, action) in &rules {
            let link = ident(table.link.as_deref().unwrap_or_default());
            let sql = format!(
                "SELECT count(*) FROM {} WHERE {link}::text = ANY ($1::text[])",
                subjects.qualified(table)
            );
            let n: i64 = client.query_one(&sql, &[&keys]).await?.get(0);
            report.add(&table.name, *action, n as u64);
        }
        let sql = format!(
            "SELECT count(*) FROM {}.corrections WHERE customer = ANY ($1::text[])",
            private::schema(policy)
        );
        let n: i64 = client.query_one(&sql, &[&keys]).await?.get(0);
        report.add(&corrections_table(policy), EraseRule::Delete, n as u64);
        return Ok(());
    }
    let reason = Reason {
        trigger: "retention",
        rule: format!("{}; {}", rule_text(subject, rule), erase::describe(&rules)),
        actor,
    };
    for key in &keys {
        let done = transaction(
            client,
            erase::erase_one(client, policy, subjects, key, &reason),
        )
        .await?;
        for t in &done.tables {
            report.add(&t.table, t.action, t.rows);
        }
        report.records.push(ActionRecord {
            action: Action::Retention,
            customer_ref: Some(done.customer_ref.clone()),
            purpose: None,
            columns: done.tables.iter().map(|t| t.table.clone()).collect(),
            actor: actor.to_string(),
            outcome: format!(
                "{}: erased; destruction record {}",
                rule_text(subject, rule),
                done.log_id
            ),
        });
    }
    Ok(())
}

fn corrections_table(policy: &Policy) -> String {
    format!("{}.corrections", policy.settings().private_schema)
}

async fn expire_rows(
    client: &Client,
    policy: &Policy,
    subjects: &Subjects,
    table: &Table,
    rule: &RetentionDef,
    actor: &str,
    report: &mut RetentionReport,
) -> Result<(), SubjectError> {
    if table.erase != Some(EraseRule::Delete) {
        return Err(SubjectError::Rule(format!(
            "tables.{}: expired rows of a table other than the subject table can only be deleted; set erase = \"delete\"",
            table.name
        )));
    }
    let condition = expired(table, rule)?;
    let qualified = subjects.qualified(table);
    if report.dry_run {
        let sql = format!("SELECT count(*) FROM {qualified} WHERE {condition}");
        let n: i64 = client.query_one(&sql, &[]).await?.get(0);
        report.add(&table.name, EraseRule::Delete, n as u64);
        return Ok(());
    }
    let reason = Reason {
        trigger: "retention",
        rule: rule_text(table, rule),
        actor,
    };
    let (rows, log_id) = transaction(client, async {
        let sql = format!("DELETE FROM {qualified} WHERE {condition}");
        let rows = client.execute(&sql, &[]).await?;
        let tables = [TableErasure {
            table: table.name.clone(),
            action: EraseRule::Delete,
            rows,
        }];
        let log_id = erase::log(client, policy, None, &tables, &reason).await?;
        Ok((rows, log_id))
    })
    .await?;
    report.add(&table.name, EraseRule::Delete, rows);
    report.records.push(ActionRecord {
        action: Action::Retention,
        customer_ref: None,
        purpose: None,
        columns: vec![table.name.clone()],
        actor: actor.to_string(),
        outcome: format!(
            "{}: {rows} rows deleted; destruction record {log_id}",
            rule_text(table, rule)
        ),
    });
    Ok(())
}
